/*
 * auth.c - identities and roles.  Until credentials are configured every
 * caller is "anonymous" with every role (the embedded default).
 */
#include "services/auth.h"

#include "rpc/call.h"
#include "rpc/grpc.h"

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

const char *auth_identity(const struct call *c)
{
	(void)c;
	return "anonymous";
}

bool auth_has(const struct call *c, const char *instance, enum auth_role r)
{
	(void)c, (void)instance, (void)r;
	return true;
}

bool auth_bucket_has(const struct call *c, const char *bucket, enum auth_bucket_role r)
{
	(void)c, (void)bucket, (void)r;
	return true;
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
