/*
 * ac.h - the action cache: entries in Redis (one hash per action, schema in
 * state/keys.c and reactor-redis(7)), and the rule that a result is stored
 * or served only while every blob it references (output files, output
 * directories' Tree blobs and the files listed in them, stdout/stderr) is
 * in the instance's CAS.  Used by the ActionCache service (svc_ac.c), by
 * Execute (a cache hit ends the operation at once) and by Bots (results
 * that bots report are cached).
 *
 * Checking a result can mean reading and parsing large Tree blobs; that
 * work proceeds in slices across loop passes (bounded in time per pass),
 * reads each distinct Tree once per request, and refuses Trees over
 * AC_TREE_MAX.  A successful check is remembered in memory (keyed by entry,
 * valid while the result bytes are unchanged, the store has evicted
 * nothing since, and for at most a minute), so hot entries skip the walk.
 *
 * Errors follow core/err.h; the async contract there holds for every
 * function taking a callback.  Nothing here knows gRPC.
 */
#ifndef REACTOR_AC_H
#define REACTOR_AC_H

#include <stddef.h>
#include <stdint.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "core/util.h"

struct blob_store;
struct digest;
struct event_base;

/* The largest Tree blob the check reads and parses.  Trees travel by
 * ByteStream, so they are not bound by the message size limits; this is
 * 4x the default max-recv-message-size (16 MiB), and what the server
 * accepted before the check was sliced. */
#define AC_TREE_MAX (64LL << 20)

/* The outcome of ac_get / ac_put, valid during the callback only.
 *   rc 0               result/len: the serialized ActionResult
 *   -ENOENT            no entry (msg NULL), or the entry was malformed or
 *                      incomplete and has been dropped (msg says why)
 *   -EINVAL            (ac_put) the result is malformed; msg names the
 *                      field, e.g. "output_files[1] (\"a\"): digest: ..."
 *   ERR_TOO_LARGE      (ac_put) a Tree is over AC_TREE_MAX; msg as -EINVAL
 *   ERR_PRECONDITION   (ac_put) blobs are missing from CAS: missing/nmissing
 *                      (sorted, no duplicates); msg names the first one
 *   -EIO               reading CAS failed; msg says what
 *   ERR_STORE_FAILED   Redis went away before answering
 *   ERR_STORE_REPLY    Redis answered an error (msg: its text)
 *   -ECANCELED         ac_shutdown ran first */
struct ac_res {
	int rc;
	const char *msg;
	const uint8_t *result;
	size_t len;
	const struct digest *missing;
	size_t nmissing;
};
typedef void (*ac_cb)(void *arg, const struct ac_res *r);

/* How long an entry lives after it was stored or last hit, unless
 * ac_configure says otherwise (reactor.conf: action-cache.retention). */
#define AC_RETENTION_DEFAULT (7LL * 86400 * 1000000)

/* Set the retention (us; <= 0: the default).  Applies from the next write
 * or hit of each entry; call at start and on every reload. */
void ac_configure(int64_t retention_us);

/* Register the scripts (before store_start) and remember the loop the
 * sliced checks run on.  Returns 0, or store_script_register's error
 * (ERR_PRECONDITION when the store is already started). */
int ac_init(struct event_base *base) WARN_UNUSED;

/* Cancel checks in progress (their callbacks run with -ECANCELED) and free
 * the check cache.  Call before the blob stores close; idempotent. */
void ac_shutdown(void);

/* Read the entry of `action` in `instance`, whose CAS is `cas` (which must
 * stay open until the callback; NULL: the caller checks completeness
 * itself, as a sharded CAS does), check it is complete, count the hit (and
 * extend the entry's life to the retention again), and call cb once.  A malformed or incomplete
 * entry is dropped (only if it still holds the bytes that were checked) before cb runs with
 * -ENOENT. Returns 0, or ERR_STORE_DOWN (cb not called). */
int ac_get(const char *instance, struct blob_store *cas, const struct digest *action, ac_cb cb,
	   void *arg) WARN_UNUSED;

/* Check r (copied; the caller may free it on return) against `cas` (NULL:
 * the caller checked it), then
 * store it as the entry of `action` in `instance` (one HSET of the result
 * and its readable fields, expiring after the retention), and call cb once (cb may be NULL:
 * failures are then logged).  Returns 0, or ERR_STORE_DOWN when Redis is down now (cb not called).
 */
int ac_put(const char *instance, struct blob_store *cas, const struct digest *action,
	   const Build__Bazel__Remote__Execution__V2__ActionResult *r, ac_cb cb,
	   void *arg) WARN_UNUSED;

/* Delete the entry of `action` only if its `result` field still equals
 * result/len (a fresh update racing with the drop survives).  cb (may be
 * NULL) gets rc 0 and *dropped = 1 or 0.  Returns 0 or ERR_STORE_DOWN.
 * ac_get drops an unusable entry this way; it is public so check_ac can
 * drive the compare-and-delete race (a newer result survives) directly. */
typedef void (*ac_drop_cb)(void *arg, int rc, int dropped);
int ac_drop_if(const char *instance, const struct digest *action, const uint8_t *result, size_t len,
	       ac_drop_cb cb, void *arg) WARN_UNUSED;

#endif
