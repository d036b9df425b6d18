/*
 * reapi.h - small helpers the REAPI services share: turning a protobuf
 * Digest into a validated struct digest, checking the requested digest
 * function, and the one FAILED_PRECONDITION answer for blobs missing from
 * CAS (violations with the "blobs/{hash}/{size}" subject).
 */
#ifndef REACTOR_REAPI_H
#define REACTOR_REAPI_H

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/call.h"
#include "core/digest.h"
#include "proto/pb.h"


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

/* The serialized PreconditionFailure rides in the grpc-status-details-bin
 * trailer: at most this many bytes of violations (about 44), so the base64
 * trailer fits the 8 KiB metadata limit of common clients. */
#define REAPI_DETAILS_MAX 4096

/* Finish c with FAILED_PRECONDITION for the n blobs missing[] (n >= 1):
 * the details hold a google.rpc.PreconditionFailure with one violation per
 * blob, type "MISSING", subject "blobs/{hash}/{size}" and, when labels is
 * not NULL, the description "the {labels[i]} is not in CAS" (as many as
 * fit REAPI_DETAILS_MAX; the message counts them all).  The message is the
 * formatted prefix, then ": " and the first three blobs ("{label}
 * blobs/..." with labels), then ", ..." when there are more, and a note
 * when the details list only the first ones.  E.g.
 *   reapi_finish_missing(c, d, NULL, 2, "action result for %s references "
 *                        "2 blobs missing from CAS (upload them first)", ds)
 *   reapi_finish_missing(c, d, labels, 1, "missing from CAS (upload first)")
 *     -> "missing from CAS (upload first): Action blobs/<hash>/<size>" */
void reapi_finish_missing(struct call *c, const struct digest *missing, const char *const *labels,
			  size_t n, const char *fmt, ...) PRINTF_LIKE(5, 6);

#endif
