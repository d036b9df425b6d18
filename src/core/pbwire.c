/*
 * pbwire.c - the protobuf wire-format reader of pbwire.h.
 */
#include "core/pbwire.h"

#include <string.h>

static int varint(struct pbw *r, uint64_t *out)
{
	return pb_varint_get(&r->p, r->end, out);
}

int pbw_next(struct pbw *r, struct pbw_field *f)
{
	if (r->p >= r->end)
		return 0;
	uint64_t tag;
	if (varint(r, &tag) < 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
		return -1;
	memset(f, 0, sizeof(*f));
	f->num = (uint32_t)(tag >> 3);
	f->wt = (int)(tag & 7);
	switch (f->wt) {
	case PBW_VARINT: return varint(r, &f->v) < 0 ? -1 : 1;
	case PBW_I64:
		if (r->end - r->p < 8)
			return -1;
		memcpy(&f->v, r->p, 8);
		r->p += 8;
		return 1;
	case PBW_I32:
		if (r->end - r->p < 4)
			return -1;
		memcpy(&f->v, r->p, 4);
		r->p += 4;
		return 1;
	case PBW_LEN: {
		uint64_t n;
		if (varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
			return -1;
		f->data = r->p;
		f->len = (size_t)n;
		r->p += n;
		return 1;
	}
	default: return -1;
	}
}
