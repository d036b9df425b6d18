/*
 * auth.c - identities and roles.
 *
 * Without an auth: section every caller is "anonymous" with every role
 * (the embedded default: `make run` on loopback needs no credentials).
 * With one, each call's identity is resolved once, when its headers
 * arrive (auth_authenticate, the call layer's authenticator hook):
 *
 *   1. an "authorization: Bearer <token>" header: a JWT (three base64url
 *      parts) verified against auth.jwt, else a token looked up by its
 *      SHA-256 in auth.tokens-file.  Invalid → UNAUTHENTICATED, saying
 *      what was expected and never quoting the token;
 *   2. else the verified client certificate's identity (call_tls_identity);
 *   3. else, on a unix-socket listener, auth.unix-identity when set (the
 *      socket's file permissions are the credential: supervised local
 *      workers use it);
 *   4. else "anonymous" (UNAUTHENTICATED when auth.require, except for the
 *      health service, which load balancers probe without credentials).
 *
 * The identity and the roles its credential carries (tokens-file line,
 * JWT roles claim: valid on every instance and bucket) are kept on the
 * call.  Role checks read the config in force at the time of the check,
 * so a SIGHUP that removes a grant takes effect for calls already open.
 * The roles an identity holds are the union of: its credential's roles,
 * auth.roles (everywhere), auth.instances.<name> / auth.buckets.<name>
 * (one instance / bucket, or "*" for every one); the grant identity "*"
 * matches every identity with valid credentials, never anonymous;
 * anonymous holds auth.anonymous plus grants naming "anonymous".
 */
#include "services/auth.h"
#include "services/auth_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/cfg.h"
#include "core/log.h"
#include "rpc/call.h"
#include "rpc/grpc.h"

#define MOD "auth"

static const char *const role_names[ROLE_N] = {
	[ROLE_CAS_READ] = "cas-read",	[ROLE_CAS_WRITE] = "cas-write", [ROLE_AC_READ] = "ac-read",
	[ROLE_AC_WRITE] = "ac-write",	[ROLE_EXECUTE] = "execute",	[ROLE_BOT] = "bot",
	[ROLE_OPS_ADMIN] = "ops-admin",
};
static const char *const brole_names[BROLE_N] = {
	[BROLE_READ] = "read",
	[BROLE_PUT] = "put",
	[BROLE_LEASE] = "lease",
	[BROLE_ADMIN] = "admin",
};

const char *auth_role_name(enum auth_role r)
{
	return (unsigned)r < ROLE_N ? role_names[r] : "?";
}

const char *auth_bucket_role_name(enum auth_bucket_role r)
{
	return (unsigned)r < BROLE_N ? brole_names[r] : "?";
}

bool auth_roles_add(struct auth_roles *r, const char *name)
{
	for (int i = 0; i < ROLE_N; i++)
		if (!strcmp(role_names[i], name)) {
			r->inst |= 1u << i;
			return true;
		}
	for (int i = 0; i < BROLE_N; i++)
		if (!strcmp(brole_names[i], name)) {
			r->bucket |= 1u << i;
			return true;
		}
	return false;
}

/* ---- the config in force ------------------------------------------------------ */

static struct {
	const struct cfg_auth *a; /* NULL: auth off */
	struct auth_creds cr;
	const struct cfg *applied;
} g;

int auth_configure(const struct cfg *cfg)
{
	if (cfg == g.applied)
		return 0;
	struct auth_creds cr = {0};
	char *err = NULL;
	if (cfg->auth && auth_creds_load(cfg->auth, &cr, &err) != 0) {
		LOGE(MOD, "%s; %s", err,
		     g.applied ? "keeping the previous tokens and keys (the new grants apply)"
			       : "refusing every call");
		free(err);
		if (!g.applied) {
			/* Fail closed: nobody holds any role (reactord exits). */
			static const struct cfg_auth none = {0};
			g.a = &none;
			return -1;
		}
		/* The previous config is freed after a reload: never keep
		 * pointers into it. */
		g.a = cfg->auth;
		g.applied = cfg;
		return -1;
	}
	auth_creds_free(&g.cr);
	g.cr = cr;
	g.a = cfg->auth;
	g.applied = cfg;
	if (g.a)
		LOGI(MOD, "authentication on: %zu token(s), %zu JWT key(s), %d anonymous role(s)%s",
		     g.cr.n_tokens, g.cr.n_keys, g.a->n_anonymous,
		     g.a->require ? ", credentials required" : "");
	return 0;
}

void auth_shutdown(void)
{
	auth_creds_free(&g.cr);
	memset(&g, 0, sizeof g);
}

/* ---- per call ---------------------------------------------------------------- */

struct auth_call {
	char *identity;
	struct auth_roles own; /* from the credential itself */
	bool anonymous;
};

static void auth_call_free(void *p)
{
	struct auth_call *ac = p;
	free(ac->identity);
	free(ac);
}

static const char *bearer(const char *hdr)
{
	if (strncasecmp(hdr, "Bearer ", 7) != 0)
		return NULL;
	hdr += 7;
	while (*hdr == ' ')
		hdr++;
	return *hdr ? hdr : NULL;
}

int auth_authenticate(struct call *c, struct call_log_fields *out)
{
	struct auth_call *ac = xcalloc(1, sizeof *ac);
	const char *hdr = g.a ? call_metadata(c, "authorization", NULL) : NULL;
	const char *tls = call_tls_identity(c);
	char *why = NULL;

	call_set_auth(c, ac, auth_call_free);
	if (hdr) {
		const char *tok = bearer(hdr);
		if (!tok)
			why = xasprintf(
				"malformed authorization header: expected \"Bearer <token>\"");
		else if (auth_looks_like_jwt(tok)
				 ? auth_check_jwt(g.a, &g.cr, tok, now_us() / 1000000,
						  &ac->identity, &ac->own, &why) != 0
				 : auth_check_token(&g.cr, tok, &ac->identity, &ac->own, &why) != 0)
			assert(why); /* why says what was expected */
	} else if (tls) {
		ac->identity = xstrdup(tls);
	} else if (g.a && g.a->unix_identity && !strcmp(call_peer(c), "unix")) {
		ac->identity = xstrdup(g.a->unix_identity);
	} else {
		ac->anonymous = true;
		ac->identity = xstrdup("anonymous");
		const struct rpc_method *m = call_method(c);
		if (g.a && g.a->require && !(m && !strncmp(m->path, "/grpc.health.v1.Health/", 23)))
			why = xasprintf(
				"credentials required: expected \"authorization: Bearer <token>\" "
				"(a token or a JWT) or a client certificate");
	}
	if (why) {
		free(ac->identity);
		ac->identity = NULL;
		call_finish(c, GRPC_UNAUTHENTICATED, "%s", why);
		free(why);
		return -1;
	}
	out->identity = xstrdup(ac->identity);
	return 0;
}

const char *auth_identity(const struct call *c)
{
	const struct auth_call *ac = call_auth(c);
	return ac && ac->identity ? ac->identity : "anonymous";
}

static bool is_anonymous(const struct auth_call *ac)
{
	return !ac || ac->anonymous;
}

/* Does one of the grants give the caller role `name`? */
static bool granted(const struct cfg_grant *gr, int n, const struct auth_call *ac, const char *name)
{
	const char *id = ac && ac->identity ? ac->identity : "anonymous";
	for (int i = 0; i < n; i++) {
		if (strcmp(gr[i].identity, id) && (strcmp(gr[i].identity, "*") || is_anonymous(ac)))
			continue;
		for (int j = 0; j < gr[i].n_roles; j++)
			if (!strcmp(gr[i].roles[j], name))
				return true;
	}
	return false;
}

/* Role `name` (bit `bit` of the credential's set `own`) for the caller on
 * the instance/bucket `where` of `scopes` (NULL: on any one). */
static bool holds(const struct auth_call *ac, unsigned own, unsigned bit, const char *name,
		  const struct cfg_scope *scopes, int n_scopes, const char *where)
{
	const struct cfg_auth *a = g.a;
	if (own & bit)
		return true;
	if (is_anonymous(ac))
		for (int i = 0; i < a->n_anonymous; i++)
			if (!strcmp(a->anonymous[i], name))
				return true;
	if (granted(a->roles, a->n_roles, ac, name))
		return true;
	for (int i = 0; i < n_scopes; i++)
		if ((!where || !strcmp(scopes[i].name, where) || !strcmp(scopes[i].name, "*")) &&
		    granted(scopes[i].grants, scopes[i].n_grants, ac, name))
			return true;
	return false;
}

static bool inst_has(const struct call *c, const char *instance, enum auth_role r)
{
	if (!g.a)
		return true;
	if ((unsigned)r >= ROLE_N)
		return false;
	const struct auth_call *ac = call_auth(c);
	return holds(ac, ac ? ac->own.inst : 0, 1u << r, role_names[r], g.a->instances,
		     g.a->n_instances, instance);
}

static bool bucket_has(const struct call *c, const char *bucket, enum auth_bucket_role r)
{
	if (!g.a)
		return true;
	if ((unsigned)r >= BROLE_N)
		return false;
	const struct auth_call *ac = call_auth(c);
	return holds(ac, ac ? ac->own.bucket : 0, 1u << r, brole_names[r], g.a->buckets,
		     g.a->n_buckets, bucket);
}

bool auth_has(const struct call *c, const char *instance, enum auth_role r)
{
	return inst_has(c, instance ? instance : "", r);
}

bool auth_has_any(const struct call *c, enum auth_role r)
{
	return inst_has(c, NULL, r);
}

bool auth_bucket_has(const struct call *c, const char *bucket, enum auth_bucket_role r)
{
	return bucket_has(c, bucket ? bucket : "", r);
}

bool auth_bucket_has_any(const struct call *c, enum auth_bucket_role r)
{
	return bucket_has(c, NULL, r);
}

void auth_deny(struct call *c, const char *instance, enum auth_role r, const char *what)
{
	call_finish(c, GRPC_PERMISSION_DENIED, "%s lacks role %s on instance \"%s\"%s%s",
		    auth_identity(c), auth_role_name(r), instance ? instance : "", what ? ": " : "",
		    what ? what : "");
}

void auth_bucket_deny(struct call *c, const char *bucket, enum auth_bucket_role r, const char *what)
{
	call_finish(c, GRPC_PERMISSION_DENIED, "%s lacks role %s on bucket \"%s\"%s%s",
		    auth_identity(c), auth_bucket_role_name(r), bucket ? bucket : "",
		    what ? ": " : "", what ? what : "");
}

void auth_deny_any(struct call *c, enum auth_role r, const char *what)
{
	call_finish(c, GRPC_PERMISSION_DENIED, "%s lacks role %s on every instance%s%s",
		    auth_identity(c), auth_role_name(r), what ? ": " : "", what ? what : "");
}

void auth_bucket_deny_any(struct call *c, enum auth_bucket_role r, const char *what)
{
	call_finish(c, GRPC_PERMISSION_DENIED, "%s lacks role %s on every bucket%s%s",
		    auth_identity(c), auth_bucket_role_name(r), what ? ": " : "", what ? what : "");
}
