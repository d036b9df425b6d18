/*
 * ac.h - the action cache as seen from inside the server (the scheduler's
 * Execute lookup and the storing of results bots report).  Implemented in
 * svc_ac.c next to the ActionCache service, with the same rule: a result
 * is served or stored only while every blob it references is in the
 * instance's CAS.
 */
#ifndef REACTOR_AC_H
#define REACTOR_AC_H

#include <stddef.h>
#include <stdint.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"

struct inst;
struct digest;

/* rc 0: a complete entry; result/len is the serialized ActionResult
 * (valid during the callback only).  -ENOENT: no entry, or it was
 * malformed or incomplete (then it is dropped, as GetActionResult does).
 * -EIO: Redis failed or went away before answering. */
typedef void (*ac_lookup_cb)(void *arg, int rc, const uint8_t *result, size_t len);

/* Look up the entry of `action` in instance `in`.  Returns 0 when the
 * lookup is under way (cb runs exactly once, later), -1 when Redis is
 * down (cb is not called). */
int ac_lookup(struct inst *in, const struct digest *action, ac_lookup_cb cb, void *arg);

/* Store r as the result of `action` (no reply awaited; writes on the one
 * command connection are ordered, so a later lookup sees it).  Returns 0
 * when queued; -ENOENT when r references blobs missing from CAS, -EINVAL
 * when r is malformed (both with *err set, malloc'd, if err != NULL);
 * -EIO when Redis is down. */
int ac_store(struct inst *in, const struct digest *action,
	     const Build__Bazel__Remote__Execution__V2__ActionResult *r, char **err);

#endif
