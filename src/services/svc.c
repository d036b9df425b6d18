/*
 * svc.c - what every service shares: the configuration in force (the
 * daemon swaps it on a successful SIGHUP reload; handlers read it per call
 * and never keep the pointer across an asynchronous wait), and the one
 * mapping from internal error codes (core/err.h) to gRPC statuses and
 * their standard texts.  The Redis texts name the limit in force and, when
 * the store knows it, why the connection went down.
 */
#include "services/svc.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/cfg.h"
#include "core/err.h"
#include "core/util.h"
#include "rpc/grpc.h"
#include "state/store.h"

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
	case -EDQUOT:
	case ERR_STORE_FULL: return GRPC_RESOURCE_EXHAUSTED;
	case -ERANGE: return GRPC_OUT_OF_RANGE;
	case -ENOSYS: return GRPC_UNIMPLEMENTED;
	case ERR_STORE_DOWN:
	case ERR_STORE_FAILED:
	case ERR_STORE_BUSY: return GRPC_UNAVAILABLE;
	case ERR_PRECONDITION: return GRPC_FAILED_PRECONDITION;
	case ERR_ABORTED: return GRPC_ABORTED;
	case ERR_DATA_LOSS: return GRPC_DATA_LOSS;
	default: return GRPC_INTERNAL;
	}
}

/* "1GiB", "512MiB", "1000B". */
static const char *fmt_bytes(long long n, char *buf, size_t len)
{
	static const struct {
		const char *unit;
		long long size;
	} units[] = {{"GiB", 1LL << 30}, {"MiB", 1LL << 20}, {"KiB", 1LL << 10}};
	for (size_t i = 0; i < ARRAY_LEN(units); i++) {
		if (n >= units[i].size && n % units[i].size == 0) {
			snprintf(buf, len, "%lld%s", n / units[i].size, units[i].unit);
			return buf;
		}
	}
	snprintf(buf, len, "%lldB", n);
	return buf;
}

/* The standard texts of the Redis codes, with the limit or the reason
 * filled in (malloc'd). */
static char *store_text(int err)
{
	const struct cfg *cfg = svc_config();
	const char *why = store_last_error();
	char buf[32];
	switch (err) {
	case ERR_STORE_FULL:
		if (cfg && cfg->redis_embedded)
			return xasprintf("Redis is out of memory (maxmemory %s, config "
					 "redis.maxmemory)",
					 fmt_bytes(cfg->redis_maxmemory, buf, sizeof buf));
		return xstrdup("Redis is out of memory (the maxmemory of the Redis server)");
	case ERR_STORE_BUSY:
		if (cfg)
			return xasprintf("too many commands wait for Redis (limit %d, config "
					 "redis.max-pending)",
					 cfg->redis_max_pending);
		return xstrdup("too many commands wait for Redis (config redis.max-pending)");
	case ERR_STORE_DOWN:
	case ERR_STORE_FAILED:
		return xasprintf("%s%s%s%s",
				 err == ERR_STORE_DOWN ? "Redis is unavailable"
						       : "Redis failed or the connection dropped",
				 why ? " (" : "", why ? why : "", why ? ")" : "");
	default: return xstrdup("unexpected reply from Redis");
	}
}

static const char *standard_text(int err)
{
	switch (err) {
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
	if (err_is_store(err) || err == ERR_STORE_REPLY) {
		char *st = store_text(err);
		call_finish(c, svc_status(err), "%s%s%s", st, detail ? ": " : "",
			    detail ? detail : "");
		free(st);
	} else
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
