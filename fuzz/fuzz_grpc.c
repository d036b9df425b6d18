/*
 * fuzz_grpc.c - libFuzzer target for the gRPC wire helpers of src/rpc/grpc.c
 * and the base64 of -bin metadata (core/util.c): grpc-timeout parsing,
 * grpc-message percent-decoding, b64_decode, and message reassembly across
 * arbitrary DATA splits.  Besides "no crash, no leak" it checks round trips:
 * decode(encode(x)) == x for percent-encoding and base64, a formatted
 * timeout parses back, and the reader yields the same messages however the
 * bytes are split.
 *
 * Input: byte 0 picks the reader's size limit and chunk size; the rest is
 * the text/bytes every helper gets.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "core/util.h"
#include "rpc/grpc.h"

static void timeouts(const char *s)
{
	int64_t us = -1;
	if (grpc_timeout_parse(s, &us) == 0)
		CHECK(us >= 0);
	char buf[16];
	/* Any value we send must parse back, never above what was asked. */
	uint64_t bits = 0;
	for (size_t i = 0; s[i] && i < 8; i++)
		bits = bits << 8 | (unsigned char)s[i];
	int64_t want = (int64_t)(bits >> 1);
	grpc_timeout_format(want, buf, sizeof(buf));
	int64_t back = -1;
	CHECK(grpc_timeout_parse(buf, &back) == 0);
	CHECK(back <= want);
	if (want < 100000000LL)
		CHECK(back == want);
}

static void percent(const char *s)
{
	char *dec = grpc_percent_decode(s);
	CHECK(strlen(dec) <= strlen(s));
	char *enc = grpc_percent_encode(s);
	for (const char *p = enc; *p; p++)
		CHECK(*p >= 0x20 && *p <= 0x7e);
	char *back = grpc_percent_decode(enc);
	CHECK(strcmp(back, s) == 0);
	free(back);
	free(enc);
	free(dec);
}

static void base64(const uint8_t *data, size_t size)
{
	size_t n = 0;
	uint8_t *dec = b64_decode((const char *)data, size, &n);
	if (dec) {
		CHECK(n <= size);
		free(dec);
	}
	for (int pad = 0; pad < 2; pad++) {
		char *enc = b64_encode(data, size, pad);
		uint8_t *back = b64_decode(enc, strlen(enc), &n);
		CHECK(back != NULL);
		CHECK(n == size);
		CHECK(size == 0 || memcmp(back, data, size) == 0);
		free(back);
		free(enc);
	}
}

/* The messages one reader produced, concatenated with their lengths. */
struct sink {
	uint8_t *buf;
	size_t len;
	size_t count;
};

static int collect(void *arg, const uint8_t *msg, size_t len)
{
	struct sink *k = arg;
	k->buf = xrealloc(k->buf, k->len + len + sizeof(len) + 1);
	memcpy(k->buf + k->len, &len, sizeof(len));
	if (len)
		memcpy(k->buf + k->len + sizeof(len), msg, len);
	k->len += len + sizeof(len);
	k->count++;
	return 0;
}

static void reader(uint8_t sel, const uint8_t *data, size_t size)
{
	size_t max = (size_t)1 << (sel & 15); /* 1 B .. 32 KiB */
	size_t chunk = (size_t)(sel >> 4) + 1;
	struct grpc_reader whole, split;
	struct sink a = {0}, b = {0};
	grpc_reader_init(&whole, max);
	grpc_reader_init(&split, max);
	enum grpc_reader_err ea = grpc_reader_feed(&whole, data, size, collect, &a);
	enum grpc_reader_err eb = GRPC_READER_OK;
	for (size_t off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;
		eb = grpc_reader_feed(&split, data + off, n, collect, &b);
	}
	CHECK(ea == eb);
	CHECK(a.count == b.count);
	CHECK(a.len == b.len);
	CHECK(a.len == 0 || memcmp(a.buf, b.buf, a.len) == 0);
	CHECK(grpc_reader_partial(&whole) == grpc_reader_partial(&split));
	grpc_reader_free(&whole);
	grpc_reader_free(&split);
	free(a.buf);
	free(b.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	data++;
	size--;
	char *s = xmalloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	timeouts(s);
	percent(s);
	base64(data, size);
	reader(sel, data, size);
	free(s);
	return 0;
}
