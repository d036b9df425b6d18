/*
 * grpc.c - gRPC framing helpers (see grpc.h).  The status-details encoder
 * builds the google.rpc.Status bytes directly with protobuf-c's generated
 * code so the trailer always matches grpc-status.
 */
#include "rpc/grpc.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/status.pb-c.h"
#include "google/protobuf/any.pb-c.h"

static const char *const code_names[] = {
	"OK",
	"CANCELLED",
	"UNKNOWN",
	"INVALID_ARGUMENT",
	"DEADLINE_EXCEEDED",
	"NOT_FOUND",
	"ALREADY_EXISTS",
	"PERMISSION_DENIED",
	"RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION",
	"ABORTED",
	"OUT_OF_RANGE",
	"UNIMPLEMENTED",
	"INTERNAL",
	"UNAVAILABLE",
	"DATA_LOSS",
	"UNAUTHENTICATED",
};

const char *grpc_code_name(int code)
{
	if (code < 0 || (size_t)code >= ARRAY_LEN(code_names))
		return "UNKNOWN_CODE";
	return code_names[code];
}

int grpc_timeout_parse(const char *s, int64_t *us)
{
	size_t n = strlen(s);
	if (n < 2 || n > 9)
		return -1;
	int64_t v = 0;
	for (size_t i = 0; i + 1 < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	switch (s[n - 1]) {
	case 'H': *us = v * 3600 * 1000000LL; break;
	case 'M': *us = v * 60 * 1000000LL; break;
	case 'S': *us = v * 1000000LL; break;
	case 'm': *us = v * 1000LL; break;
	case 'u': *us = v; break;
	case 'n': *us = (v + 999) / 1000; break;
	default: return -1;
	}
	return 0;
}

void grpc_timeout_format(int64_t us, char *buf, size_t len)
{
	if (us < 0)
		us = 0;
	if (us < 100000000LL)
		snprintf(buf, len, "%lldu", (long long)us);
	else if (us / 1000 < 100000000LL)
		snprintf(buf, len, "%lldm", (long long)(us / 1000));
	else if (us / 1000000 < 100000000LL)
		snprintf(buf, len, "%lldS", (long long)(us / 1000000));
	else if (us / 3600000000LL < 100000000LL)
		snprintf(buf, len, "%lldH", (long long)(us / 3600000000LL));
	else /* the longest the header can say (8 digits) */
		snprintf(buf, len, "99999999H");
}

char *grpc_percent_encode(const char *msg)
{
	size_t n = strlen(msg);
	char *out = xmalloc(n * 3 + 1), *o = out;
	for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
		if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
			*o++ = (char)*p;
		} else {
			static const char hex[] = "0123456789ABCDEF";
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	*o = '\0';
	return out;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *grpc_percent_decode(const char *s)
{
	char *out = xmalloc(strlen(s) + 1), *o = out;
	while (*s) {
		int a, b;
		if (s[0] == '%' && (a = hexval((unsigned char)s[1])) >= 0 &&
		    (b = hexval((unsigned char)s[2])) >= 0) {
			*o++ = (char)(a << 4 | b);
			s += 3;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
	return out;
}

void grpc_prefix(uint8_t out[5], bool compressed, uint32_t len)
{
	out[0] = compressed ? 1 : 0;
	out[1] = (uint8_t)(len >> 24);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
}

void grpc_reader_init(struct grpc_reader *r, size_t max_len)
{
	memset(r, 0, sizeof(*r));
	r->max_len = max_len;
}

void grpc_reader_free(struct grpc_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = 0;
}

bool grpc_reader_partial(const struct grpc_reader *r)
{
	return r->hdr_have > 0;
}

size_t grpc_reader_buffered(const struct grpc_reader *r)
{
	return r->hdr_have + (r->hdr_have == 5 ? r->have : 0);
}

bool grpc_reader_pending(const struct grpc_reader *r, size_t *len)
{
	if (r->hdr_have < 5 || r->err != GRPC_READER_OK)
		return false;
	*len = r->need;
	return true;
}

/* Room for `want` bytes at r->buf: geometric growth, never past need, so
 * memory follows the bytes that arrived rather than the declared length. */
static void reader_reserve(struct grpc_reader *r, size_t want)
{
	if (want <= r->cap)
		return;
	size_t cap = r->cap ? r->cap : 16 * 1024;
	while (cap < want)
		cap *= 2;
	if (cap > r->need)
		cap = r->need;
	if (r->have == 0) { /* a reused buffer: its old bytes need no copy */
		free(r->buf);
		r->buf = xmalloc(cap);
	} else {
		r->buf = xrealloc(r->buf, cap);
	}
	r->cap = cap;
}

enum grpc_reader_err grpc_reader_feed(struct grpc_reader *r, const uint8_t *data, size_t len,
				      grpc_msg_fn fn, void *arg)
{
	while (len > 0 && r->err == GRPC_READER_OK) {
		if (r->hdr_have < 5) {
			size_t take = 5 - r->hdr_have;
			if (take > len)
				take = len;
			memcpy(r->hdr + r->hdr_have, data, take);
			r->hdr_have += take;
			data += take;
			len -= take;
			if (r->hdr_have < 5)
				break;
			uint32_t mlen = (uint32_t)r->hdr[1] << 24 | (uint32_t)r->hdr[2] << 16 |
					(uint32_t)r->hdr[3] << 8 | r->hdr[4];
			r->last_len = mlen;
			if (r->hdr[0] > 1) {
				r->err = GRPC_READER_BAD_FLAG;
				break;
			}
			if (r->hdr[0] == 1) {
				r->err = GRPC_READER_COMPRESSED;
				break;
			}
			if (mlen > r->max_len) {
				r->err = GRPC_READER_TOO_LARGE;
				break;
			}
			r->need = mlen;
			r->have = 0;
			if (mlen > 0 && len >= mlen) {
				/* Whole message in this chunk: no copy. */
				r->hdr_have = 0;
				r->messages++;
				if (fn(arg, data, mlen))
					r->err = GRPC_READER_STOPPED;
				data += mlen;
				len -= mlen;
				continue;
			}
		}
		size_t take = r->need - r->have;
		if (take > len)
			take = len;
		if (take) {
			reader_reserve(r, r->have + take);
			memcpy(r->buf + r->have, data, take);
		}
		r->have += take;
		data += take;
		len -= take;
		if (r->have == r->need) {
			r->hdr_have = 0;
			r->messages++;
			int stop = fn(arg, r->buf ? r->buf : (const uint8_t *)"", r->need);
			if (stop)
				r->err = GRPC_READER_STOPPED;
		}
	}
	/* A zero-length message may complete with no payload bytes left. */
	if (r->err == GRPC_READER_OK && r->hdr_have == 5 && r->need == 0 && r->have == 0) {
		r->hdr_have = 0;
		r->messages++;
		if (fn(arg, (const uint8_t *)"", 0))
			r->err = GRPC_READER_STOPPED;
	}
	/* A message that follows in the same payload reuses the buffer (a
	 * streaming upload's 1 MiB messages rarely end on a DATA frame's end:
	 * one allocation, not a doubling series of reallocs per message); a
	 * stream that stops between messages holds nothing. */
	if (r->hdr_have == 0 || r->err != GRPC_READER_OK)
		grpc_reader_free(r);
	return r->err;
}

char *grpc_status_details_bin(int code, const char *message, const struct grpc_any *details,
			      size_t ndetails)
{
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	st.code = code;
	st.message = (char *)(message ? message : "");
	Google__Protobuf__Any *anys = NULL;
	Google__Protobuf__Any **ptrs = NULL;
	if (ndetails) {
		anys = xcalloc(ndetails, sizeof(*anys));
		ptrs = xcalloc(ndetails, sizeof(*ptrs));
		for (size_t i = 0; i < ndetails; i++) {
			google__protobuf__any__init(&anys[i]);
			anys[i].type_url = (char *)details[i].type_url;
			anys[i].value.data = (uint8_t *)details[i].value;
			anys[i].value.len = details[i].len;
			ptrs[i] = &anys[i];
		}
		st.n_details = ndetails;
		st.details = ptrs;
	}
	size_t n = google__rpc__status__get_packed_size(&st);
	uint8_t *buf = xmalloc(n);
	google__rpc__status__pack(&st, buf);
	char *b64 = b64_encode(buf, n, false);
	free(buf);
	free(anys);
	free(ptrs);
	return b64;
}
