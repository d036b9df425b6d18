/*
 * svc.c - what every service shares: the configuration in force (the
 * daemon swaps it on a successful SIGHUP reload; handlers read it per call
 * and never keep the pointer across an asynchronous wait), and the one
 * mapping from internal error codes (core/err.h) to gRPC statuses.
 */
#include "services/svc.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"
#include "core/util.h"
#include "rpc/grpc.h"

int svc_status(int err)
{
	switch (err) {
	case 0: return GRPC_OK;
	case -ENOENT: return GRPC_NOT_FOUND;
	case -EEXIST: return GRPC_ALREADY_EXISTS;
	case -EINVAL:
	case ERR_TOO_LARGE: return GRPC_INVALID_ARGUMENT;
	case -EPERM:
	case -EACCES: return GRPC_PERMISSION_DENIED;
	case -ECANCELED: return GRPC_CANCELLED;
	case -ETIMEDOUT: return GRPC_DEADLINE_EXCEEDED;
	case -ENOSPC:
	case -ENOMEM:
	case -EMFILE:
	case -EDQUOT: return GRPC_RESOURCE_EXHAUSTED;
	case -ERANGE: return GRPC_OUT_OF_RANGE;
	case -ENOSYS: return GRPC_UNIMPLEMENTED;
	case ERR_STORE_DOWN:
	case ERR_STORE_FAILED: return GRPC_UNAVAILABLE;
	case ERR_PRECONDITION: return GRPC_FAILED_PRECONDITION;
	case ERR_ABORTED: return GRPC_ABORTED;
	case ERR_DATA_LOSS: return GRPC_DATA_LOSS;
	default: return GRPC_INTERNAL;
	}
}

static const char *standard_text(int err)
{
	switch (err) {
	case ERR_STORE_DOWN: return "Redis is unavailable";
	case ERR_STORE_FAILED: return "Redis failed or the connection dropped";
	case ERR_STORE_REPLY: return "unexpected reply from Redis";
	case -ENOENT: return "not found";
	case -ENOSYS: return "not implemented";
	case -ECANCELED: return "cancelled";
	case -ETIMEDOUT: return "deadline exceeded";
	default: return "internal error";
	}
}

void svc_fail(struct call *c, int err, const char *fmt, ...)
{
	char *detail = NULL;
	const char *std = standard_text(err);

	if (fmt) {
		va_list ap;

		va_start(ap, fmt);
		detail = xvasprintf(fmt, ap);
		va_end(ap);
	}
	if (err_is_store(err) || err == ERR_STORE_REPLY)
		call_finish(c, svc_status(err), "%s%s%s", std, detail ? ": " : "",
			    detail ? detail : "");
	else
		call_finish(c, svc_status(err), "%s", detail ? detail : std);
	free(detail);
}

static const struct cfg *current;

void svc_set_config(const struct cfg *cfg)
{
	current = cfg;
}

const struct cfg *svc_config(void)
{
	return current;
}
