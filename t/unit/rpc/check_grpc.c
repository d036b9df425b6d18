/*
 * check_grpc.c - unit tests for grpc.c: grpc-timeout in every unit,
 * percent-encoding, message reassembly across arbitrary frame boundaries,
 * size limits and the compressed flag, and the status-details trailer.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/status.pb-c.h"
#include "rpc/grpc.h"
#include "core/util.h"
#include "check_run.h"

START_TEST(test_timeout_units)
{
	int64_t us;
	ck_assert_int_eq(grpc_timeout_parse("1H", &us), 0);
	ck_assert_int_eq(us, 3600000000LL);
	ck_assert_int_eq(grpc_timeout_parse("2M", &us), 0);
	ck_assert_int_eq(us, 120000000LL);
	ck_assert_int_eq(grpc_timeout_parse("3S", &us), 0);
	ck_assert_int_eq(us, 3000000);
	ck_assert_int_eq(grpc_timeout_parse("40m", &us), 0);
	ck_assert_int_eq(us, 40000);
	ck_assert_int_eq(grpc_timeout_parse("50u", &us), 0);
	ck_assert_int_eq(us, 50);
	ck_assert_int_eq(grpc_timeout_parse("1500n", &us), 0);
	ck_assert_int_eq(us, 2);
	ck_assert_int_eq(grpc_timeout_parse("99999999S", &us), 0);
	ck_assert_int_eq(grpc_timeout_parse("123456789S", &us), -1); /* 9 digits */
	ck_assert_int_eq(grpc_timeout_parse("S", &us), -1);
	ck_assert_int_eq(grpc_timeout_parse("10", &us), -1);
	ck_assert_int_eq(grpc_timeout_parse("10x", &us), -1);
	ck_assert_int_eq(grpc_timeout_parse("-1S", &us), -1);
	char buf[16];
	grpc_timeout_format(1500000, buf, sizeof(buf));
	ck_assert_int_eq(grpc_timeout_parse(buf, &us), 0);
	ck_assert_int_eq(us, 1500000);
	/* Beyond 99999999 hours the header says the most it can (fuzz_grpc). */
	grpc_timeout_format(INT64_MAX, buf, sizeof(buf));
	ck_assert_str_eq(buf, "99999999H");
}
END_TEST

START_TEST(test_percent)
{
	char *e = grpc_percent_encode("ok 100% \xc3\xa9\n");
	ck_assert_str_eq(e, "ok 100%25 %C3%A9%0A");
	char *d = grpc_percent_decode(e);
	ck_assert_str_eq(d, "ok 100% \xc3\xa9\n");
	free(e);
	free(d);
	d = grpc_percent_decode("bad %zz and %4");
	ck_assert_str_eq(d, "bad %zz and %4");
	free(d);
}
END_TEST

struct collected {
	int n;
	size_t lens[16];
	char data[16][64];
};

static int collect(void *arg, const uint8_t *msg, size_t len)
{
	struct collected *c = arg;
	c->lens[c->n] = len;
	memcpy(c->data[c->n], msg, len);
	c->n++;
	return 0;
}

static size_t frame(uint8_t *out, const char *msg)
{
	size_t n = strlen(msg);
	grpc_prefix(out, false, (uint32_t)n);
	memcpy(out + 5, msg, n);
	return n + 5;
}

START_TEST(test_reassembly_every_split)
{
	uint8_t wire[128];
	size_t len = frame(wire, "hello");
	len += frame(wire + len, "");
	len += frame(wire + len, "world!!");
	/* Feed the stream in chunks of every size 1..len. */
	for (size_t chunk = 1; chunk <= len; chunk++) {
		struct grpc_reader r;
		struct collected c = {0};
		grpc_reader_init(&r, 1024);
		for (size_t off = 0; off < len; off += chunk) {
			size_t n = len - off < chunk ? len - off : chunk;
			ck_assert_int_eq(grpc_reader_feed(&r, wire + off, n, collect, &c),
					 GRPC_READER_OK);
		}
		ck_assert_int_eq(c.n, 3);
		ck_assert_uint_eq(c.lens[0], 5);
		ck_assert(memcmp(c.data[0], "hello", 5) == 0);
		ck_assert_uint_eq(c.lens[1], 0);
		ck_assert_uint_eq(c.lens[2], 7);
		ck_assert(memcmp(c.data[2], "world!!", 7) == 0);
		ck_assert(!grpc_reader_partial(&r));
		grpc_reader_free(&r);
	}
}
END_TEST

START_TEST(test_reader_limits)
{
	struct grpc_reader r;
	struct collected c = {0};
	uint8_t hdr[5];
	grpc_reader_init(&r, 10);
	grpc_prefix(hdr, false, 11);
	ck_assert_int_eq(grpc_reader_feed(&r, hdr, 5, collect, &c), GRPC_READER_TOO_LARGE);
	ck_assert_uint_eq(r.last_len, 11);
	ck_assert_int_eq(c.n, 0);
	grpc_reader_free(&r);

	grpc_reader_init(&r, 10);
	grpc_prefix(hdr, true, 3);
	ck_assert_int_eq(grpc_reader_feed(&r, hdr, 5, collect, &c), GRPC_READER_COMPRESSED);
	grpc_reader_free(&r);

	grpc_reader_init(&r, 10);
	hdr[0] = 7;
	ck_assert_int_eq(grpc_reader_feed(&r, hdr, 5, collect, &c), GRPC_READER_BAD_FLAG);
	grpc_reader_free(&r);

	/* Truncated: a prefix promising more than arrives. */
	grpc_reader_init(&r, 100);
	grpc_prefix(hdr, false, 16);
	ck_assert_int_eq(grpc_reader_feed(&r, hdr, 5, collect, &c), GRPC_READER_OK);
	ck_assert_int_eq(grpc_reader_feed(&r, (const uint8_t *)"abc", 3, collect, &c),
			 GRPC_READER_OK);
	ck_assert(grpc_reader_partial(&r));
	ck_assert_int_eq(c.n, 0);
	grpc_reader_free(&r);
}
END_TEST

/* A prefix declaring 4 MiB allocates nothing; the buffer follows the
 * bytes that arrived (doubling) and never exceeds the declared length. */
static int count_big(void *arg, const uint8_t *msg, size_t len)
{
	(void)msg;
	*(size_t *)arg = len;
	return 0;
}

START_TEST(test_reader_grows_with_data)
{
	struct grpc_reader r;
	size_t got = 0, want = (4 << 20) + 3;
	uint8_t hdr[5];
	grpc_reader_init(&r, 16 << 20);
	grpc_prefix(hdr, false, (uint32_t)want);
	ck_assert_int_eq(grpc_reader_feed(&r, hdr, 5, count_big, &got), GRPC_READER_OK);
	ck_assert_uint_eq(r.cap, 0);
	ck_assert_uint_eq(grpc_reader_buffered(&r), 5);
	size_t len;
	ck_assert(grpc_reader_pending(&r, &len));
	ck_assert_uint_eq(len, want);
	static uint8_t chunk[100000];
	size_t fed = 0;
	while (fed < want) {
		size_t n = want - fed < sizeof(chunk) ? want - fed : sizeof(chunk);
		ck_assert_int_eq(grpc_reader_feed(&r, chunk, n, count_big, &got), GRPC_READER_OK);
		fed += n;
		if (fed < want) {
			ck_assert_uint_eq(grpc_reader_buffered(&r), 5 + fed);
			ck_assert_uint_le(r.cap, 2 * fed + 16384);
			ck_assert_uint_le(r.cap, want);
		}
	}
	ck_assert_uint_eq(got, want);
	ck_assert_uint_eq(grpc_reader_buffered(&r), 0);
	ck_assert(!grpc_reader_pending(&r, &len));
	grpc_reader_free(&r);
}
END_TEST

/* Messages split across payloads, each next one starting in the payload
 * that completes the previous (the reader reuses its buffer): every one
 * arrives whole and with its own bytes, and a payload ending between
 * messages leaves nothing allocated. */
struct msgs_seen {
	size_t n;
	int bad;
};

static int check_fill(void *arg, const uint8_t *msg, size_t len)
{
	struct msgs_seen *m = arg;
	for (size_t i = 0; i < len; i++)
		if (msg[i] != (uint8_t)(m->n * 7 + i % 251))
			m->bad++;
	m->n++;
	return 0;
}

START_TEST(test_reader_reuses_buffer)
{
	enum { N = 4 };
	size_t lens[N] = {300000, 200000, 400000, 100};
	size_t total = 0;
	for (int k = 0; k < N; k++)
		total += 5 + lens[k];
	uint8_t *wire = malloc(total), *p = wire;
	for (int k = 0; k < N; k++) {
		grpc_prefix(p, false, (uint32_t)lens[k]);
		p += 5;
		for (size_t i = 0; i < lens[k]; i++)
			*p++ = (uint8_t)(k * 7 + i % 251);
	}
	struct grpc_reader r;
	struct msgs_seen m = {0, 0};
	grpc_reader_init(&r, 1 << 20);
	for (size_t off = 0; off < total; off += 16384) {
		size_t n = total - off < 16384 ? total - off : 16384;
		ck_assert_int_eq(grpc_reader_feed(&r, wire + off, n, check_fill, &m),
				 GRPC_READER_OK);
		if (!grpc_reader_partial(&r))
			ck_assert_ptr_null(r.buf);
	}
	ck_assert_uint_eq(m.n, N);
	ck_assert_int_eq(m.bad, 0);
	ck_assert_ptr_null(r.buf);
	grpc_reader_free(&r);
	free(wire);
}
END_TEST

START_TEST(test_status_details)
{
	uint8_t payload[] = {1, 2, 3};
	struct grpc_any any = {"type.googleapis.com/google.rpc.PreconditionFailure", payload, 3};
	char *b64 = grpc_status_details_bin(9, "missing blobs", &any, 1);
	ck_assert_ptr_null(strchr(b64, '='));
	size_t n;
	uint8_t *raw = b64_decode(b64, strlen(b64), &n);
	ck_assert_ptr_nonnull(raw);
	Google__Rpc__Status *st = google__rpc__status__unpack(NULL, n, raw);
	ck_assert_ptr_nonnull(st);
	ck_assert_int_eq(st->code, 9);
	ck_assert_str_eq(st->message, "missing blobs");
	ck_assert_uint_eq(st->n_details, 1);
	ck_assert_str_eq(st->details[0]->type_url, any.type_url);
	ck_assert_uint_eq(st->details[0]->value.len, 3);
	google__rpc__status__free_unpacked(st, NULL);
	free(raw);
	free(b64);
}
END_TEST

START_TEST(test_code_names)
{
	ck_assert_str_eq(grpc_code_name(0), "OK");
	ck_assert_str_eq(grpc_code_name(8), "RESOURCE_EXHAUSTED");
	ck_assert_str_eq(grpc_code_name(16), "UNAUTHENTICATED");
	ck_assert_str_eq(grpc_code_name(17), "UNKNOWN_CODE");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("grpc");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_timeout_units);
	tcase_add_test(tc, test_percent);
	tcase_add_test(tc, test_reassembly_every_split);
	tcase_add_test(tc, test_reader_limits);
	tcase_add_test(tc, test_reader_reuses_buffer);
	tcase_add_test(tc, test_reader_grows_with_data);
	tcase_add_test(tc, test_status_details);
	tcase_add_test(tc, test_code_names);
	suite_add_tcase(s, tc);
	return check_run(s);
}
