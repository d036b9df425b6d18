/*
 * cfg_auth.c - the auth: section of reactor.conf: where identities come
 * from (a tokens file, JWT keys, unix-socket callers) and which roles each
 * identity holds, everywhere (roles:), on one instance (instances:) or on
 * one bucket (buckets:).  Role names are checked here, so a typo fails
 * the load instead of silently granting nothing; src/services/auth.c
 * spells the same names.
 *
 *   auth:
 *     tokens-file: /etc/reactor/tokens
 *     jwt: {keys: [/etc/reactor/jwt.pem], issuer: https://sso, audience: reactord}
 *     anonymous: [cas-read, ac-read]
 *     roles: {ci: [cas-read, cas-write, ac-read, ac-write, execute]}
 *     instances: {"": {local-worker: [bot, cas-read, cas-write]}}
 *     buckets: {nightly: {release: [read, put]}}
 */
#include "core/cfg_int.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const char *const instance_roles[] = {
	"cas-read", "cas-write", "ac-read", "ac-write", "execute", "bot", "ops-admin",
};
static const char *const bucket_roles[] = {"read", "put", "lease", "admin"};

enum scope { SCOPE_ANY, SCOPE_INSTANCE, SCOPE_BUCKET };

static bool in(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(names[i], s))
			return true;
	return false;
}

static int role_parse_scoped(struct ctx *x, const struct node *n, const char *path, void *elem,
			     enum scope sc)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n) || !n->str[0])
		return fail(x, n, path, "expected a role name");
	bool inst = in(instance_roles, ARRAY_LEN(instance_roles), n->str);
	bool bucket = in(bucket_roles, ARRAY_LEN(bucket_roles), n->str);
	if (!inst && !bucket)
		return fail(x, n, path,
			    "unknown role \"%s\" (instance roles: cas-read, cas-write, ac-read, "
			    "ac-write, execute, bot, ops-admin; bucket roles: read, put, lease, "
			    "admin)",
			    n->str);
	if (sc == SCOPE_INSTANCE && !inst)
		return fail(x, n, path, "\"%s\" is a bucket role; grant it under auth.buckets",
			    n->str);
	if (sc == SCOPE_BUCKET && !bucket)
		return fail(
			x, n, path,
			"\"%s\" is an instance role; grant it under auth.instances or auth.roles",
			n->str);
	*(char **)elem = xstrdup(n->str);
	return 0;
}

static int role_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	return role_parse_scoped(x, n, path, elem, SCOPE_ANY);
}

static const struct list_ops role_ops = {
	.elem_size = sizeof(char *),
	.parse = role_parse,
	.set_default = cfg_strlist_default,
	.equal = cfg_strlist_equal,
	.free = cfg_strlist_free,
	.may_be_empty = true,
};

/* An identity is one word: it is printed in log lines and messages. */
static char *check_identity(char *s)
{
	if (!*s)
		return xasprintf("must not be empty");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p <= ' ' || *p == 0x7f || *p == '"')
			return xasprintf("must not contain spaces, quotes or control characters");
	return NULL;
}

/* identity: [role, ...] */
static int grant_parse_scoped(struct ctx *x, const struct node *key, const struct node *val,
			      const char *path, struct cfg_grant *g, enum scope sc)
{
	g->identity = xstrdup(key->str);
	char *msg = check_identity(g->identity);
	if (msg) {
		fail(x, key, path, "identity %s", msg);
		free(msg);
		return -1;
	}
	if (val->kind != N_SEQ)
		return fail(x, val, path, "expected a list of roles, like [cas-read, ac-read]");
	if (!val->n_kids)
		return 0;
	g->roles = xcalloc(val->n_kids, sizeof *g->roles);
	for (size_t i = 0; i < val->n_kids; i++) {
		char *p = xasprintf("%s[%zu]", path, i);
		int r = role_parse_scoped(x, val->kids[i], p, &g->roles[i], sc);
		free(p);
		if (r)
			return -1;
		g->n_roles++;
	}
	return 0;
}

static int grant_parse(struct ctx *x, const struct node *key, const struct node *val,
		       const char *path, void *elem)
{
	return grant_parse_scoped(x, key, val, path, elem, SCOPE_ANY);
}

static void grant_free(void *elem)
{
	struct cfg_grant *g = elem;
	free(g->identity);
	for (int i = 0; i < g->n_roles; i++)
		free(g->roles[i]);
	free(g->roles);
}

static bool grant_equal(const void *a, const void *b)
{
	const struct cfg_grant *ga = a, *gb = b;
	if (strcmp(ga->identity, gb->identity) || ga->n_roles != gb->n_roles)
		return false;
	for (int i = 0; i < ga->n_roles; i++)
		if (strcmp(ga->roles[i], gb->roles[i]))
			return false;
	return true;
}

static const struct list_ops grant_ops = {
	.elem_size = sizeof(struct cfg_grant),
	.equal = grant_equal,
	.free = grant_free,
	.parse_kv = grant_parse,
	.may_be_empty = true,
};

/* NAME: {identity: [role, ...], ...} */
static int scope_parse(struct ctx *x, const struct node *key, const struct node *val,
		       const char *path, struct cfg_scope *s, enum scope sc)
{
	s->name = xstrdup(key->str);
	if (val->kind != N_MAP)
		return fail(x, val, path, "expected a mapping of identity: [roles]");
	size_t n = val->n_kids / 2;
	if (!n)
		return 0;
	s->grants = xcalloc(n, sizeof *s->grants);
	for (size_t i = 0; i < n; i++) {
		const struct node *kn = val->kids[2 * i];
		if (kn->kind != N_SCALAR)
			return fail(x, kn, path, "keys must be plain strings");
		char *p = xasprintf("%s.%s", path, kn->str);
		s->n_grants++;
		int r = grant_parse_scoped(x, kn, val->kids[2 * i + 1], p, &s->grants[i], sc);
		free(p);
		if (r)
			return -1;
	}
	return 0;
}

static int inst_scope_parse(struct ctx *x, const struct node *key, const struct node *val,
			    const char *path, void *elem)
{
	if (strcmp(key->str, "*")) {
		char *copy = xstrdup(key->str);
		char *msg = cfg_check_instance_name(copy);
		free(copy);
		if (msg) {
			fail(x, key, path, "%s", msg);
			free(msg);
			return -1;
		}
	}
	return scope_parse(x, key, val, path, elem, SCOPE_INSTANCE);
}

static int bucket_scope_parse(struct ctx *x, const struct node *key, const struct node *val,
			      const char *path, void *elem)
{
	if (!key->str[0])
		return fail(x, key, path, "bucket names are not empty");
	return scope_parse(x, key, val, path, elem, SCOPE_BUCKET);
}

static void scope_free(void *elem)
{
	struct cfg_scope *s = elem;
	free(s->name);
	for (int i = 0; i < s->n_grants; i++)
		grant_free(&s->grants[i]);
	free(s->grants);
}

static bool scope_equal(const void *a, const void *b)
{
	const struct cfg_scope *sa = a, *sb = b;
	if (strcmp(sa->name, sb->name) || sa->n_grants != sb->n_grants)
		return false;
	for (int i = 0; i < sa->n_grants; i++)
		if (!grant_equal(&sa->grants[i], &sb->grants[i]))
			return false;
	return true;
}

static const struct list_ops inst_scope_ops = {
	.elem_size = sizeof(struct cfg_scope),
	.equal = scope_equal,
	.free = scope_free,
	.parse_kv = inst_scope_parse,
	.may_be_empty = true,
};

static const struct list_ops bucket_scope_ops = {
	.elem_size = sizeof(struct cfg_scope),
	.equal = scope_equal,
	.free = scope_free,
	.parse_kv = bucket_scope_parse,
	.may_be_empty = true,
};

/* Signature algorithms libjwt verifies; "none" is never one. */
static int alg_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	static const char *const algs[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
					   "RS512", "ES256", "ES384", "ES512"};
	if (n->kind != N_SCALAR || cfg_node_is_null(n) || !in(algs, ARRAY_LEN(algs), n->str))
		return fail(x, n, path,
			    "expected a signature algorithm: HS256, HS384, HS512, RS256, RS384, "
			    "RS512, ES256, ES384 or ES512");
	*(char **)elem = xstrdup(n->str);
	return 0;
}

static const struct list_ops alg_ops = {
	.elem_size = sizeof(char *),
	.parse = alg_parse,
	.set_default = cfg_strlist_default,
	.equal = cfg_strlist_equal,
	.free = cfg_strlist_free,
};

static const struct list_ops path_ops = {
	.elem_size = sizeof(char *),
	.parse = cfg_strlist_parse,
	.set_default = cfg_strlist_default,
	.equal = cfg_strlist_equal,
	.free = cfg_strlist_free,
};

#define FA(field)                                                                                  \
	.off = offsetof(struct cfg_auth, field), .size = sizeof(((struct cfg_auth *)0)->field)
#define LA(field, count) FA(field), .count_off = offsetof(struct cfg_auth, count)
#define ASECTION(name)                                                                             \
	{                                                                                          \
		name, K_SECTION, .off = 0                                                          \
	}
/* All of auth: is reloadable (SIGHUP also re-reads the tokens file and
 * the JWT keys). */
static const struct key auth_keys[] = {
	{"tokens-file", K_STRING, FA(tokens_file), .check = cfg_check_nonempty, .reload = true},
	{"unix-identity", K_STRING, FA(unix_identity), .check = check_identity, .reload = true},
	{"anonymous", K_LIST, LA(anonymous, n_anonymous), .list = &role_ops, .reload = true},
	{"require", K_BOOL, FA(require), .def = false, .reload = true},
	ASECTION("jwt"),
	{"jwt.keys", K_LIST, LA(jwt_keys, n_jwt_keys), .list = &path_ops, .reload = true},
	{"jwt.algorithms", K_LIST, LA(jwt_algorithms, n_jwt_algorithms), .list = &alg_ops,
	 .def_str = "HS256,RS256,ES256", .reload = true},
	{"jwt.issuer", K_STRING, FA(jwt_issuer), .check = cfg_check_nonempty, .reload = true},
	{"jwt.audience", K_STRING, FA(jwt_audience), .check = cfg_check_nonempty, .reload = true},
	{"jwt.identity-claim", K_STRING, FA(jwt_identity_claim), .def_str = "sub",
	 .check = cfg_check_nonempty, .reload = true},
	{"jwt.roles-claim", K_STRING, FA(jwt_roles_claim), .def_str = "roles",
	 .check = cfg_check_nonempty, .reload = true},
	{"jwt.clock-skew", K_DURATION, FA(jwt_clock_skew_us), .def = 30 * US_S, .min = 0,
	 .max = US_H, .reload = true},
	{"roles", K_LIST, LA(roles, n_roles), .list = &grant_ops, .reload = true},
	{"instances", K_LIST, LA(instances, n_instances), .list = &inst_scope_ops, .reload = true},
	{"buckets", K_LIST, LA(buckets, n_buckets), .list = &bucket_scope_ops, .reload = true},
};
static const struct keytab auth_tab = {auth_keys, ARRAY_LEN(auth_keys)};

const struct obj_ops cfg_auth_ops = {&auth_tab, sizeof(struct cfg_auth), NULL};
