/*
 * auth.h - who is calling and what they may do (issue 12: trust).
 *
 * Every call has an identity: the subject of a verified client
 * certificate, the identity a bearer token or JWT maps to, or
 * "anonymous".  Roles are granted per instance (REAPI, Bots) and per
 * bucket (Buckets); the config decides which identity holds which.
 *
 * Handlers ask auth_has()/auth_bucket_has() where a decision depends on
 * the request (an instance name, a build's bucket, an owner), and
 * auth_deny() to answer PERMISSION_DENIED naming the role; the dispatch
 * checks the method-level role before a handler runs.
 */
#ifndef REACTOR_AUTH_H
#define REACTOR_AUTH_H

#include <stdbool.h>

struct call;

/* Instance roles. */
enum auth_role {
	ROLE_CAS_READ,
	ROLE_CAS_WRITE,
	ROLE_AC_READ,
	ROLE_AC_WRITE, /* UpdateActionResult */
	ROLE_EXECUTE,
	ROLE_BOT,	/* the Bots API */
	ROLE_OPS_ADMIN, /* see and cancel anyone's operations */
	ROLE_N
};

/* Bucket roles. */
enum auth_bucket_role {
	BROLE_READ,
	BROLE_PUT,
	BROLE_LEASE, /* masters: Lease/Start/Heartbeat/Succeed/Fail */
	BROLE_ADMIN, /* cancel/reset anyone's builds */
	BROLE_N
};

/* The config spelling of a role ("cas-read", ..., "admin"). */
const char *auth_role_name(enum auth_role r);
const char *auth_bucket_role_name(enum auth_bucket_role r);

/* The caller's identity: never NULL ("anonymous" without credentials). */
const char *auth_identity(const struct call *c);
bool auth_has(const struct call *c, const char *instance, enum auth_role r);
bool auth_bucket_has(const struct call *c, const char *bucket, enum auth_bucket_role r);
/* End the call with PERMISSION_DENIED: "<identity> lacks role <r> on
 * instance "<instance>"" (what = optional detail). */
void auth_deny(struct call *c, const char *instance, enum auth_role r, const char *what);
void auth_bucket_deny(struct call *c, const char *bucket, enum auth_bucket_role r,
		      const char *what);

/* For requests that name no instance or bucket (an operation or build
 * by id): does the caller hold the role on at least one?  The domain
 * then checks the one the object belongs to. */
bool auth_has_any(const struct call *c, enum auth_role r);
bool auth_bucket_has_any(const struct call *c, enum auth_bucket_role r);
/* PERMISSION_DENIED: "<identity> lacks role <r> on every instance". */
void auth_deny_any(struct call *c, enum auth_role r, const char *what);
void auth_bucket_deny_any(struct call *c, enum auth_bucket_role r, const char *what);

/* Setup (reactord's main) -------------------------------------------------- */

struct cfg;
struct call_log_fields;
/* Apply cfg->auth (NULL: auth off): loads the tokens file and JWT keys.
 * Called at start and on every reload (SIGHUP re-reads the files).
 * Returns 0, or -1 after logging why: the previous state stays, and at
 * start every call is refused (fail closed). */
int auth_configure(const struct cfg *cfg);
void auth_shutdown(void);
/* The call layer's authenticator (call_set_authenticator). */
int auth_authenticate(struct call *c, struct call_log_fields *out);

#endif
