/*
 * reapi.h - small helpers the REAPI services share: turning a protobuf
 * Digest into a validated struct digest, checking the requested digest
 * function, and the "blobs/{hash}/{size}" subject used in errors.
 */
#ifndef REACTOR_REAPI_H
#define REACTOR_REAPI_H

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/call.h"
#include "core/digest.h"

typedef Build__Bazel__Remote__Execution__V2__Digest PbDigest;

/* Validate a protobuf Digest; on failure finish the call with
 * INVALID_ARGUMENT naming `what` and return -1. */
int reapi_digest(struct call *c, const PbDigest *pd, const char *what, struct digest *out);

/* Same without a call: 0, or -1 with *err (malloc'd). */
int reapi_digest_err(const PbDigest *pd, struct digest *out, char **err);

/* Requests may name a digest function; only SHA256 (or UNKNOWN = the
 * default) is served.  Finishes the call with INVALID_ARGUMENT otherwise. */
int reapi_digest_function(struct call *c, int value);

/* Fill a protobuf Digest that points into d (no allocation). */
void reapi_pb_digest(PbDigest *pd, const struct digest *d);

#endif
