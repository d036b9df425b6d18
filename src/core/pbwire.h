/*
 * pbwire.h - a bounds-checked reader of the protobuf wire format, for the
 * few places that need one or two fields of a large message without
 * decoding all of it (the child digests of a Directory, the platform of a
 * Command): walking tags and lengths costs a fraction of a protobuf-c
 * unpack, which allocates every string.  No allocation; the values point
 * into the caller's buffer.
 */
#ifndef REACTOR_PBWIRE_H
#define REACTOR_PBWIRE_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

enum { PBW_VARINT = 0, PBW_I64 = 1, PBW_LEN = 2, PBW_I32 = 5 };

struct pbw {
	const uint8_t *p, *end;
};

struct pbw_field {
	uint32_t num;
	int wt;		     /* PBW_* */
	uint64_t v;	     /* PBW_VARINT, PBW_I64, PBW_I32 */
	const uint8_t *data; /* PBW_LEN */
	size_t len;
};

static inline void pbw_init(struct pbw *r, const void *data, size_t len)
{
	r->p = data;
	r->end = r->p + len;
}

/* The next field into *f.  Returns 1, 0 at the end of the buffer, or -1
 * on malformed input (truncated varint or length, field number 0, group
 * or unknown wire type). */
int pbw_next(struct pbw *r, struct pbw_field *f) WARN_UNUSED;

#endif
