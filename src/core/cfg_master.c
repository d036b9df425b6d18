/*
 * cfg_master.c - the master: section of reactor.conf (issue 10): its key
 * tables (master, builders, properties, steps), their validators and the
 * default leasee name.  Parsed by the engine (cfg_engine.c) through
 * cfg_master_ops, which cfg.c's top-level table points to.
 */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/cfg.h"
#include "core/cfg_int.h"
#include "core/json.h"
#include "core/util.h"

/* ---- master: (issue 10) --------------------------------------------------- */

/* Builder, property and step names end up in Redis keys, build records,
 * log lines and environment variable names: one word of
 * [A-Za-z0-9_.-]. */
static char *check_ident(char *s)
{
	if (!*s)
		return xasprintf("must not be empty");
	if (strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
	    strlen(s))
		return xasprintf("\"%s\" may only contain letters, digits, \"_\", \".\" and \"-\"",
				 s);
	return NULL;
}

/* The same rule as the Buckets service (bk_bucket_name_ok in
 * src/domain/buckets_input.c): [a-z0-9][a-z0-9._-]{0,99}.  Repeated here
 * because core may not include the domain; a bucket the service would
 * refuse is caught at load time instead of on every peek. */
#define BUCKET_NAME_MAX 100
static bool bucket_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > BUCKET_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

static int bucket_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n))
		return fail(x, n, path, "expected a bucket name");
	if (!bucket_name_ok(n->str))
		return fail(
			x, n, path,
			"\"%.120s\" is not a valid bucket name (want [a-z0-9][a-z0-9._-]{0,99})",
			n->str);
	*(char **)elem = xstrdup(n->str);
	return 0;
}

/* Elements named twice: the second one's node (its "name" member when the
 * elements are mappings) gets the error. */
static int strlist_unique(struct ctx *x, const struct node *seq, const char *path,
			  const void *elems, int n, const char *what)
{
	char *const *s = elems;
	for (int i = 1; i < n; i++)
		for (int j = 0; j < i; j++)
			if (!strcmp(s[i], s[j])) {
				char *p = xasprintf("%s[%d]", path, i);
				fail(x, seq->kids[i], p, "duplicate %s \"%s\" (also %s[%d])", what,
				     s[i], path, j);
				free(p);
				return -1;
			}
	return 0;
}

static int buckets_check(struct ctx *x, const struct node *seq, const char *path, const void *elems,
			 int n)
{
	return strlist_unique(x, seq, path, elems, n, "bucket");
}

static const struct list_ops bucket_ops = {
	.elem_size = sizeof(char *),
	.parse = bucket_parse,
	.set_default = cfg_strlist_default,
	.check = buckets_check,
	.equal = cfg_strlist_equal,
	.free = cfg_strlist_free,
};

/* A gRPC endpoint the master dials with rc_client_connect_opts: host:port,
 * [v6]:port or unix:/path ("grpc://" or "http://" in front, Bazel's
 * spellings, are dropped), or grpcs://host:port (kept: TLS; "https://" is
 * written so too). */
static char *check_endpoint(char *s)
{
	char *host;
	int port;
	bool tls = false;

	if (!strncmp(s, "grpc://", 7))
		memmove(s, s + 7, strlen(s + 7) + 1);
	else if (!strncmp(s, "http://", 7))
		memmove(s, s + 7, strlen(s + 7) + 1);
	else if (!strncmp(s, "https://", 8))
		memcpy(s, "grpcs://", 8);
	if (!strncmp(s, "grpcs://", 8)) {
		tls = true;
		s += 8;
	}
	if (!strncmp(s, "unix:", 5) && tls)
		return xasprintf("TLS over a unix socket is not supported: write unix:PATH");
	if (!strncmp(s, "unix:", 5))
		return s[5] == '/' ? NULL
				   : xasprintf("unix: needs an absolute socket path, like "
					       "unix:/run/reactord.sock");
	char *msg = cfg_split_hostport(s, 1, &host, &port);
	if (!msg)
		free(host);
	return msg;
}

/* argv: strings, "" included (sh -c ''), but argv[0] names a program. */
static int arg_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n))
		return fail(x, n, path, "expected a string (quote \"\" for an empty argument)");
	*(char **)elem = xstrdup(n->str);
	return 0;
}

static int argv_check(struct ctx *x, const struct node *seq, const char *path, const void *elems,
		      int n)
{
	if (!**(char *const *)elems) {
		char *p = xasprintf("%s[0]", path);
		fail(x, seq->kids[0], p, "the program name must not be empty");
		free(p);
		return -1;
	}
	return 0;
}

static const struct list_ops argv_ops = {
	.elem_size = sizeof(char *),
	.parse = arg_parse,
	.set_default = cfg_strlist_default,
	.check = argv_check,
	.equal = cfg_strlist_equal,
	.free = cfg_strlist_free,
};

/* env: and platform: mappings, kept as "KEY=VALUE" like workers.properties.
 * A key with "=" could not be split back. */
static int keyval_parse(struct ctx *x, const struct node *key, const struct node *val,
			const char *path, void *elem)
{
	if (!key->str[0])
		return fail(x, key, path, "names must not be empty");
	if (strchr(key->str, '='))
		return fail(x, key, path, "names must not contain \"=\"");
	if (val->kind != N_SCALAR || cfg_node_is_null(val))
		return fail(x, val, path, "expected a string (quote \"\" for an empty value)");
	*(char **)elem = xasprintf("%s=%s", key->str, val->str);
	return 0;
}

static const struct list_ops keyval_ops = {
	.elem_size = sizeof(char *),
	.equal = cfg_strlist_equal,
	.free = cfg_strlist_free,
	.parse_kv = keyval_parse,
	.may_be_empty = true,
};

/* outputs: REAPI output paths, relative to the action's (the build's)
 * working directory, normalized: no leading "/", no empty, "." or ".."
 * component, so a step can never write outside its workspace. */
static int output_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n) || !n->str[0])
		return fail(x, n, path, "expected a relative path");
	const char *s = n->str;
	if (s[0] == '/')
		return fail(x, n, path, "\"%s\" must be relative to the workspace", s);
	for (const char *c = s;;) {
		size_t len = strcspn(c, "/");
		if (len == 0)
			return fail(x, n, path, "\"%s\" has an empty component", s);
		if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
			return fail(x, n, path, "\"%s\" must not contain \".\" or \"..\"", s);
		if (!c[len])
			break;
		c += len + 1;
	}
	*(char **)elem = xstrdup(s);
	return 0;
}

static int outputs_check(struct ctx *x, const struct node *seq, const char *path, const void *elems,
			 int n)
{
	return strlist_unique(x, seq, path, elems, n, "output");
}

static const struct list_ops output_ops = {
	.elem_size = sizeof(char *),
	.parse = output_parse,
	.set_default = cfg_strlist_default,
	.check = outputs_check,
	.equal = cfg_strlist_equal,
	.free = cfg_strlist_free,
	.may_be_empty = true,
};

#define FS(field)                                                                                  \
	.off = offsetof(struct cfg_step, field), .size = sizeof(((struct cfg_step *)0)->field)
#define LS(field, count) FS(field), .count_off = offsetof(struct cfg_step, count)
static const struct key step_keys[] = {
	{"name", K_STRING, FS(name), .check = check_ident, .required = true},
	{"argv", K_LIST, LS(argv, argc), .list = &argv_ops, .required = true},
	{"env", K_LIST, LS(env, n_env), .list = &keyval_ops},
	/* 0: the executor's default (its instance's max-execution-timeout). */
	{"timeout", K_DURATION, FS(timeout_us), .def = 0, .min = 0, .max = 7 * US_D},
	{"platform", K_LIST, LS(platform, n_platform), .list = &keyval_ops},
	{"outputs", K_LIST, LS(outputs, n_outputs), .list = &output_ops},
	{"cache", K_BOOL, FS(cache), .def = true},
};
static const struct keytab step_tab = {step_keys, ARRAY_LEN(step_keys)};

static int step_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	const struct node *where[ARRAY_LEN(step_keys)] = {0};
	return cfg_parse_obj(x, &step_tab, elem, n, path, where);
}

/* Step names name the step records of a build: unique per builder. */
static int steps_check(struct ctx *x, const struct node *seq, const char *path, const void *elems,
		       int n)
{
	const struct cfg_step *st = elems;
	for (int i = 1; i < n; i++) {
		for (int j = 0; j < i; j++) {
			if (strcmp(st[i].name, st[j].name))
				continue;
			char *p = xasprintf("%s[%d].name", path, i);
			fail(x, cfg_node_get(seq->kids[i], "name"), p,
			     "duplicate step name \"%s\" (also %s[%d])", st[i].name, path, j);
			free(p);
			return -1;
		}
	}
	return 0;
}

static bool step_equal(const void *a, const void *b)
{
	return cfg_tab_equal(&step_tab, a, b);
}

static void step_free(void *elem)
{
	cfg_free_fields(&step_tab, elem);
}

static const struct list_ops step_ops = {
	.elem_size = sizeof(struct cfg_step),
	.parse = step_parse,
	.check = steps_check,
	.equal = step_equal,
	.free = step_free,
};

/* Index is enum cfg_prop_type. */
static const char *const prop_type_names[] = {"string", "int", "bool", "number", NULL};

#define FP(field)                                                                                  \
	.off = offsetof(struct cfg_builder_prop, field),                                           \
	.size = sizeof(((struct cfg_builder_prop *)0)->field)
/* "default" is read as text into def_json and then turned into JSON of
 * the property's type by prop_parse. */
static const struct key prop_keys[] = {
	{"type", K_ENUM, FP(type), .names = prop_type_names, .required = true},
	{"default", K_STRING, FP(def_json)},
};
static const struct keytab prop_tab = {prop_keys, ARRAY_LEN(prop_keys)};

/* The default's text as a JSON value of type t, or NULL when it is not
 * one.  YAML quoting is not looked at: "3" and 3 are both the int 3. */
static char *prop_default_json(int t, const char *s)
{
	char *out = NULL;
	size_t n = 0;
	bool b;

	if (t == CFG_PROP_STRING) {
		json_quote(&out, &n, s, strlen(s));
		return out;
	}
	if (t == CFG_PROP_BOOL)
		return cfg_parse_bool(s, &b) ? NULL : xstrdup(b ? "true" : "false");
	char err[64];
	struct json *j = json_parse(s, strlen(s), err, sizeof err);
	bool ok = j && j->type == JSON_NUMBER && (t == CFG_PROP_NUMBER || j->is_int);
	json_free(j);
	return ok ? xstrdup(s) : NULL;
}

static int prop_parse(struct ctx *x, const struct node *key, const struct node *val,
		      const char *path, void *elem)
{
	static const char *const like[] = {"", " (like 3 or -1)", " (true or false)",
					   " (like 1.5 or 3)"};
	struct cfg_builder_prop *p = elem;
	const struct node *where[ARRAY_LEN(prop_keys)] = {0};

	p->name = xstrdup(key->str);
	char *msg = check_ident(p->name);
	if (msg) {
		fail(x, key, path, "%s", msg);
		free(msg);
		return -1;
	}
	if (val->kind != N_MAP)
		return fail(x, val, path, "expected a mapping like {type: string}");
	if (cfg_parse_obj(x, &prop_tab, p, val, path, where))
		return -1;
	const struct node *def = where[1];
	if (def && cfg_node_is_null(def)) {
		char *dp = xasprintf("%s.default", path);
		fail(x, def, dp, "needs a value (leave default out to make the property required)");
		free(dp);
		return -1;
	}
	p->required = !p->def_json;
	if (p->def_json) {
		char *json = prop_default_json(p->type, p->def_json);
		if (!json) {
			char *dp = xasprintf("%s.default", path);
			fail(x, def, dp, "\"%s\" is not of type %s%s", p->def_json,
			     prop_type_names[p->type], like[p->type]);
			free(dp);
			return -1;
		}
		free(p->def_json);
		p->def_json = json;
	}
	return 0;
}

static bool prop_equal(const void *a, const void *b)
{
	const struct cfg_builder_prop *pa = a, *pb = b;
	return !strcmp(pa->name, pb->name) && pa->type == pb->type &&
	       cfg_streq_null(pa->def_json, pb->def_json);
}

static void prop_free(void *elem)
{
	struct cfg_builder_prop *p = elem;
	free(p->name);
	free(p->def_json);
}

static const struct list_ops prop_ops = {
	.elem_size = sizeof(struct cfg_builder_prop),
	.equal = prop_equal,
	.free = prop_free,
	.parse_kv = prop_parse,
	.may_be_empty = true,
};

#define FB(field)                                                                                  \
	.off = offsetof(struct cfg_builder, field), .size = sizeof(((struct cfg_builder *)0)->field)
static const struct key builder_keys[] = {
	{"properties", K_LIST, FB(props), .count_off = offsetof(struct cfg_builder, n_props),
	 .list = &prop_ops},
	{"steps", K_LIST, FB(steps), .count_off = offsetof(struct cfg_builder, n_steps),
	 .list = &step_ops, .required = true},
};
static const struct keytab builder_tab = {builder_keys, ARRAY_LEN(builder_keys)};

static int builder_parse(struct ctx *x, const struct node *key, const struct node *val,
			 const char *path, void *elem)
{
	struct cfg_builder *b = elem;
	const struct node *where[ARRAY_LEN(builder_keys)] = {0};

	b->name = xstrdup(key->str);
	char *msg = check_ident(b->name);
	if (msg) {
		fail(x, key, path, "%s", msg);
		free(msg);
		return -1;
	}
	if (val->kind != N_MAP)
		return fail(x, val, path, "expected a mapping with steps:");
	return cfg_parse_obj(x, &builder_tab, b, val, path, where);
}

static bool builder_equal(const void *a, const void *b)
{
	return !strcmp(((const struct cfg_builder *)a)->name,
		       ((const struct cfg_builder *)b)->name) &&
	       cfg_tab_equal(&builder_tab, a, b);
}

static void builder_free(void *elem)
{
	free(((struct cfg_builder *)elem)->name);
	cfg_free_fields(&builder_tab, elem);
}

static const struct list_ops builder_ops = {
	.elem_size = sizeof(struct cfg_builder),
	.equal = builder_equal,
	.free = builder_free,
	.parse_kv = builder_parse,
};

/* Index is the value of cfg_master.on_shutdown_reset. */
static const char *const shutdown_names[] = {"abandon", "reset", NULL};

#define FM(field)                                                                                  \
	.off = offsetof(struct cfg_master, field), .size = sizeof(((struct cfg_master *)0)->field)
#define LM(field, count) FM(field), .count_off = offsetof(struct cfg_master, count)
/* Order is the order cfg_diff_static reports in. */
static const struct key master_keys[] = {
	/* Default (host name + first listener) filled in by master_finish. */
	{"name", K_STRING, FM(name), .check = cfg_check_key_prefix},
	{"buckets", K_LIST, LM(buckets, n_buckets), .list = &bucket_ops, .required = true},
	{"server", K_STRING, FM(server), .check = check_endpoint},
	{"executor", K_STRING, FM(executor), .check = check_endpoint},
	{"executor-instance", K_STRING, FM(executor_instance), .def_str = "",
	 .check = cfg_check_instance_name},
	{"max-lease-count", K_INT, FM(max_lease_count), .def = 10, .min = 1, .max = 10000,
	 .reload = true},
	{"poll-interval", K_DURATION, FM(poll_interval_us), .def = 10 * US_S, .min = 100 * US_MS,
	 .max = US_H, .reload = true},
	{"heartbeat-interval", K_DURATION, FM(heartbeat_interval_us), .def = 60 * US_S,
	 .min = 100 * US_MS, .max = US_H, .reload = true},
	/* Five heartbeats: a master survives a few minutes of trouble with the
	 * Buckets service, and a dead one's builds move within 5 minutes. */
	{"lease-duration", K_DURATION, FM(lease_duration_us), .def = 5 * US_M, .min = 200 * US_MS,
	 .max = US_D, .reload = true},
	{"on-shutdown", K_ENUM, FM(on_shutdown_reset), .def = 0, .names = shutdown_names},
	{"builders", K_LIST, LM(builders, n_builders), .list = &builder_ops, .required = true,
	 .reload = true},
	/* The master's client credentials (issue 12); files read at start. */
	{"tls", K_SECTION, .off = 0},
	{"tls.ca", K_STRING, FM(tls_ca), .check = cfg_check_nonempty},
	{"tls.cert", K_STRING, FM(tls_cert), .check = cfg_check_nonempty},
	{"tls.key", K_STRING, FM(tls_key), .check = cfg_check_nonempty},
	{"tls.server-name", K_STRING, FM(tls_server_name), .check = cfg_check_nonempty},
	{"token-file", K_STRING, FM(token_file), .check = cfg_check_nonempty},
};
static const struct keytab master_tab = {master_keys, ARRAY_LEN(master_keys)};

/* A lease must outlive one lost heartbeat. */
static int master_check(struct ctx *x, void *obj, const struct node *n, const char *path,
			const struct node *const *where)
{
	const struct cfg_master *m = obj;
#define WHERE(key) where[cfg_find_key(&master_tab, key) - master_keys]
	if (!m->tls_cert != !m->tls_key) {
		const char *has = m->tls_cert ? "tls.cert" : "tls.key";
		char *p = xasprintf("%s.%s", path, has);
		fail(x, WHERE(has), p, "a client certificate needs both tls.cert and tls.key");
		free(p);
		return -1;
	}
	/* TLS settings with an endpoint that says plaintext. */
	bool tls = m->tls_ca || m->tls_cert || m->tls_server_name;
	static const char *const ends[] = {"server", "executor"};
	for (size_t i = 0; tls && i < ARRAY_LEN(ends); i++) {
		const struct node *e = WHERE(ends[i]);
		if (!e || e->kind != N_SCALAR)
			continue;
		const char *t = e->str;
		if (!strncmp(t, "grpc://", 7) || !strncmp(t, "http://", 7))
			t += 7;
		if (t == e->str && strncmp(t, "unix:", 5) != 0)
			continue; /* no scheme: the tls keys make it TLS */
		char *p = xasprintf("%s.%s", path, ends[i]);
		fail(x, e, p,
		     "\"%s\" is plaintext but tls keys are set: write grpcs://HOST:PORT (TLS "
		     "over a unix socket is not supported)",
		     e->str);
		free(p);
		return -1;
	}
#undef WHERE
	const struct node *lease = where[cfg_find_key(&master_tab, "lease-duration") - master_keys];
	const struct node *hb =
		where[cfg_find_key(&master_tab, "heartbeat-interval") - master_keys];
	char l[32], h[32];

	if (m->heartbeat_interval_us <= INT64_MAX / 2 &&
	    m->lease_duration_us >= 2 * m->heartbeat_interval_us)
		return 0;
	cfg_fmt_bound(K_DURATION, m->lease_duration_us, l, sizeof l);
	cfg_fmt_bound(K_DURATION, m->heartbeat_interval_us, h, sizeof h);
	char *p = xasprintf("%s.%s", path, lease ? "lease-duration" : "heartbeat-interval");
	fail(x, lease ? lease : hb, p,
	     "lease-duration (%s) must be at least twice heartbeat-interval (%s), so one lost "
	     "heartbeat does not lose the lease",
	     l, h);
	free(p);
	return -1;
}

const struct obj_ops cfg_master_ops = {&master_tab, sizeof(struct cfg_master), master_check};

/* The default leasee: "HOST:" + the first listener as written, e.g.
 * "ci7:127.0.0.1:50051", "ci7:[::1]:50051" or "ci7:unix:/run/r.sock"
 * (not used for port 0, which only the bound socket knows). */
char *cfg_master_default_name(const struct cfg *c)
{
	char host[256];
	const struct cfg_listen *l = &c->listen[0];

	if (gethostname(host, sizeof host) != 0 || !host[0])
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	if (l->kind == CFG_LISTEN_UNIX)
		return xasprintf("%s:unix:%s", host, l->path);
	if (strchr(l->host, ':'))
		return xasprintf("%s:[%s]:%d", host, l->host, l->port);
	return xasprintf("%s:%s:%d", host, l->host, l->port);
}

/* Index is the value of cfg.log_json. */

const struct cfg_builder *cfg_builder_find(const struct cfg_master *m, const char *name)
{
	for (int i = 0; m && i < m->n_builders; i++)
		if (!strcmp(m->builders[i].name, name))
			return &m->builders[i];
	return NULL;
}
