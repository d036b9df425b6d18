/*
 * err.h - the one error convention and the one async contract of the
 * layers below the services (core, state, domain).
 *
 * Errors.  A function that can fail returns 0 (or a count, where its header
 * says so) on success and a negative code on failure: a negated errno value
 * where errno has the meaning, or one of the ERR_* codes below where it has
 * none.  A human-readable detail, when there is one, comes back through an
 * optional `char **msg` (malloc'd, the caller frees it; never set on
 * success).  Nothing below the services knows gRPC: the services turn a
 * code into a gRPC status in one place, svc_status() / svc_fail() in
 * src/services/svc.h, which also owns the standard texts ("Redis is
 * unavailable", ...).  The meanings, and the status each maps to:
 *
 *   -ENOENT      the thing named does not exist          NOT_FOUND
 *   -EEXIST      it exists already                       ALREADY_EXISTS
 *   -EINVAL      the request is malformed                INVALID_ARGUMENT
 *   -EPERM       the caller may not do it                PERMISSION_DENIED
 *   -ECANCELED   cancelled                               CANCELLED
 *   -ETIMEDOUT   a deadline passed                       DEADLINE_EXCEEDED
 *   -ENOSPC, -ENOMEM, -EMFILE, -EDQUOT
 *                a resource limit was reached            RESOURCE_EXHAUSTED
 *   -ERANGE      a position past the end                 OUT_OF_RANGE
 *   -ENOSYS      not implemented here                    UNIMPLEMENTED
 *   -EIO         local I/O failed                        INTERNAL
 *   ERR_STORE_DOWN     Redis is not connected            UNAVAILABLE
 *   ERR_STORE_FAILED   Redis failed or the connection
 *                      dropped before the reply          UNAVAILABLE
 *   ERR_STORE_FULL     Redis refused a write: it is at
 *                      its maxmemory (an "OOM" reply)     RESOURCE_EXHAUSTED
 *   ERR_STORE_BUSY     too many commands already wait
 *                      for Redis (redis.max-pending)      UNAVAILABLE
 *   ERR_STORE_REPLY    Redis answered something the
 *                      caller cannot use (script bug)     INTERNAL
 *   ERR_PRECONDITION   the state does not allow it        FAILED_PRECONDITION
 *   ERR_TOO_LARGE      an input is over a size limit      INVALID_ARGUMENT
 *   ERR_ABORTED        lost a race; the caller may retry  ABORTED
 *   ERR_DATA_LOSS      stored data is corrupt             DATA_LOSS
 *   anything else                                        INTERNAL
 *
 * Async calls.  A function that takes a callback either returns 0 and
 * then calls the callback exactly once, always after it has returned
 * (from a later event: a Redis reply, a timer, a zero-delay event), or
 * returns a negative code and never calls it.  So a caller may set up
 * state after the call and before its callback runs, and never sees a
 * callback re-enter it.  Data handed to a callback belongs to the callee
 * and is valid during the callback only, unless its header says otherwise.
 */
#ifndef REACTOR_ERR_H
#define REACTOR_ERR_H

enum {
	ERR_BASE = -10000,
	ERR_STORE_DOWN = ERR_BASE - 1,
	ERR_STORE_FAILED = ERR_BASE - 2,
	ERR_STORE_REPLY = ERR_BASE - 3,
	ERR_PRECONDITION = ERR_BASE - 4,
	ERR_TOO_LARGE = ERR_BASE - 5,
	ERR_ABORTED = ERR_BASE - 6,
	ERR_DATA_LOSS = ERR_BASE - 7,
	ERR_STORE_FULL = ERR_BASE - 8,
	ERR_STORE_BUSY = ERR_BASE - 9,
};

/* A short name for a code, for logs: "ENOENT", "ERR_STORE_DOWN", "0". */
const char *err_name(int err);

/* True for the codes that mean Redis could not do it now (down, dropped,
 * out of memory, overloaded: a retry later may succeed). */
static inline int err_is_store(int err)
{
	return err == ERR_STORE_DOWN || err == ERR_STORE_FAILED || err == ERR_STORE_FULL ||
	       err == ERR_STORE_BUSY;
}

#endif
