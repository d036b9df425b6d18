/*
 * dispatch.h - the RPC dispatch table: method path -> kind, message types,
 * handlers.  A static array sorted by path, searched with bsearch.
 */
#ifndef REACTOR_DISPATCH_H
#define REACTOR_DISPATCH_H

#include <stddef.h>

#include "rpc/call.h"

/* NULL for an unknown path. */
const struct rpc_method *dispatch_find(const char *path);

/* The call layer's metadata decoder (call_set_metadata_decoder): the
 * Bazel tool invocation id from the REAPI RequestMetadata header. */
void dispatch_decode_metadata(const struct call *c, struct call_log_fields *out);

/* Sorted, de-duplicated service names (for health checks). */
const char *const *dispatch_services(size_t *n);

/* Whether the table is sorted and unique (asserted at start-up). */
int dispatch_check(void);

#endif
