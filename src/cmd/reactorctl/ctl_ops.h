/*
 * ctl_ops.h - what ctl_ops.c shares with ctl_build.c: a synchronous
 * server-streaming call (WaitExecution, WatchBuilds, ByteStream Read),
 * printing a CAS blob to stdout, and a protobuf message as JSON.
 */
#ifndef REACTOR_CTL_OPS_H
#define REACTOR_CTL_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "cmd/reactorctl/ctl.h"

/* Called per response message (raw bytes); return false to stop the call
 * (it is cancelled and ctl_stream returns CTL_OK). */
typedef bool (*ctl_stream_msg)(const uint8_t *msg, size_t len, void *arg);

/* Send req on `path` and run the loop until the stream ends: CTL_OK when
 * it ended OK or on_msg stopped it, else the exit code (error printed).
 * timeout_us 0: no deadline. */
int ctl_stream(struct ctl *c, const char *path, const ProtobufCMessage *req, int64_t timeout_us,
	       ctl_stream_msg on_msg, void *arg) WARN_UNUSED;

/* Write the blob "HASH/SIZE" of the instance to f (ByteStream Read);
 * checks the size.  Returns the exit code. */
int ctl_cat_blob(struct ctl *c, const char *digest, FILE *f) WARN_UNUSED;

/* Write message m as a JSON object: every field under its proto name,
 * proto3-style (scalars always present), enums by name, repeated fields as
 * arrays, sub-messages as objects (null when unset); bytes and floating
 * fields as null. */
void ctl_json_msg(struct ctl_json *j, const ProtobufCMessage *m);

/* "3m ago" for a time in µs (0: "-"), in one of eight static buffers
 * (valid for the next seven calls). */
const char *ctl_ops_ago(int64_t us);

#endif
