/*
 * check_call.c - the server-side call layer (call.c) on its own: no
 * services, no dispatch table.  The test injects its own method lookup and
 * metadata decoder, and talks to a server h2_conn through a bufferevent
 * pair with a bare h2 client stream, so it sees exactly the header blocks
 * and DATA the call layer produced (Trailers-Only included).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "core/cfg.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/call.h"
#include "rpc/grpc.h"
#include "transport/h2.h"
#include "check_run.h"

static struct event_base *base;
static struct cfg *cfg;
static struct bufferevent *pair[2];
static struct h2_conn *client;

static const struct h2_settings st = {
	.max_concurrent_streams = 100,
	.max_header_list_size = 16384,
	.conn_window = 1 << 20,
	.stream_window = 1 << 20,
	.idle_timeout_us = 0,
	.max_output_buffer = 1 << 20,
};

/* ---- the test's methods ------------------------------------------------ */

static int n_lookups;
static char last_lookup[256];
static int n_cancels;
static struct call *hanging;

/* Echo: HealthCheckRequest{service: "x"} -> HealthCheckResponse{SERVING}. */
static void echo(struct call *c, const ProtobufCMessage *msg)
{
	const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	if (strcmp(req->service, "x") != 0) {
		call_finish(c, GRPC_NOT_FOUND, "no service \"%s\"", req->service);
		return;
	}
	resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	call_reply(c, &resp.base);
}

/* Big: answers with a ReadResponse of 4 KiB, over max-send-message-size. */
static void big(struct call *c, const ProtobufCMessage *msg)
{
	(void)msg;
	static uint8_t data[4096];
	Google__Bytestream__ReadResponse resp = GOOGLE__BYTESTREAM__READ_RESPONSE__INIT;
	resp.data.data = data;
	resp.data.len = sizeof(data);
	call_reply(c, &resp.base);
}

/* Hang: a server-streaming call that sends its headers and never ends. */
static void hang(struct call *c, const ProtobufCMessage *msg)
{
	(void)msg;
	hanging = c;
	call_send_headers(c);
}

static void hang_cancel(struct call *c)
{
	ck_assert_ptr_eq(c, hanging);
	n_cancels++;
}

static const struct rpc_method methods[] = {
	{
		.path = "/t.T/Big",
		.kind = RPC_UNARY,
		.req = &grpc__health__v1__health_check_request__descriptor,
		.resp = &google__bytestream__read_response__descriptor,
		.on_message = big,
	},
	{
		.path = "/t.T/Echo",
		.kind = RPC_UNARY,
		.req = &grpc__health__v1__health_check_request__descriptor,
		.resp = &grpc__health__v1__health_check_response__descriptor,
		.on_message = echo,
	},
	{
		.path = "/t.T/Hang",
		.kind = RPC_SERVER_STREAM,
		.req = &grpc__health__v1__health_check_request__descriptor,
		.resp = &grpc__health__v1__health_check_response__descriptor,
		.on_message = hang,
		.on_cancel = hang_cancel,
	},
	{
		.path = "/t.T/Later", /* a row without a handler */
		.kind = RPC_UNARY,
	},
};

static const struct rpc_method *lookup(const char *path)
{
	n_lookups++;
	snprintf(last_lookup, sizeof(last_lookup), "%s", path);
	for (size_t i = 0; i < ARRAY_LEN(methods); i++)
		if (strcmp(methods[i].path, path) == 0)
			return &methods[i];
	return NULL;
}

static int n_decodes;
static char seen_md[64];
static size_t seen_md_len;

static void decoder(const struct call *c, struct call_log_fields *out)
{
	n_decodes++;
	ck_assert_ptr_null(out->invocation_id);
	size_t len = 0;
	const char *v = call_metadata(c, "x-inv-bin", &len);
	if (!v)
		return;
	ck_assert_uint_lt(len, sizeof(seen_md));
	memcpy(seen_md, v, len);
	seen_md_len = len;
	out->invocation_id = xasprintf("inv-%.*s", (int)len, v);
}

/* ---- a bare client stream ---------------------------------------------- */

struct resp {
	int blocks;	  /* header blocks received */
	int end_at_block; /* the block that carried END_STREAM (0: none) */
	char status[8];	  /* :status of the first block */
	char grpc_status[8], grpc_message[256];
	int grpc_status_block; /* the block grpc-status came in */
	struct evbuffer *data;
	int closed; /* an int for check_loop_until */
	uint32_t error;
};

static void r_headers(struct h2_stream *s, bool trailers)
{
	(void)trailers;
	struct resp *r = h2_stream_user(s);
	r->blocks++;
	const char *v = h2_stream_header(s, ":status");
	if (v && r->blocks == 1)
		snprintf(r->status, sizeof(r->status), "%s", v);
	v = h2_stream_header(s, "grpc-status");
	if (v) {
		snprintf(r->grpc_status, sizeof(r->grpc_status), "%s", v);
		r->grpc_status_block = r->blocks;
		const char *m = h2_stream_header(s, "grpc-message");
		char *d = m ? grpc_percent_decode(m) : NULL;
		snprintf(r->grpc_message, sizeof(r->grpc_message), "%s", d ? d : "");
		free(d);
	}
}

static void r_data(struct h2_stream *s, const uint8_t *data, size_t len)
{
	struct resp *r = h2_stream_user(s);
	evbuffer_add(r->data, data, len);
}

static void r_end(struct h2_stream *s)
{
	struct resp *r = h2_stream_user(s);
	r->end_at_block = r->blocks;
}

static void r_close(struct h2_stream *s, uint32_t error)
{
	struct resp *r = h2_stream_user(s);
	r->closed = 1;
	r->error = error;
}

static const struct h2_stream_ops resp_ops = {
	.on_headers = r_headers,
	.on_data = r_data,
	.on_end = r_end,
	.on_close = r_close,
};

/* Open a stream for path with extra headers, send body, end. */
static struct h2_stream *request(struct resp *r, const char *path, const struct h2_hdr *extra,
				 size_t nextra, const void *body, size_t len)
{
	struct h2_hdr h[16] = {
		h2_hdr_make(":method", "POST"),
		h2_hdr_make(":scheme", "http"),
		h2_hdr_make(":path", path),
		h2_hdr_make(":authority", "mem"),
		h2_hdr_make("content-type", "application/grpc"),
		h2_hdr_make("te", "trailers"),
	};
	size_t n = 6;
	for (size_t i = 0; i < nextra; i++)
		h[n++] = extra[i];
	memset(r, 0, sizeof(*r));
	r->data = evbuffer_new();
	struct h2_stream *s = h2_stream_open(client, h, n, &resp_ops, r);
	ck_assert_ptr_nonnull(s);
	if (len)
		ck_assert_int_eq(h2_stream_write(s, body, len), 0);
	ck_assert_int_eq(h2_stream_end(s, NULL, 0), 0);
	return s;
}

static void wait_closed(struct resp *r)
{
	ck_assert_msg(check_loop_until(base, &r->closed, 1, 5000000),
		      "timed out waiting for the response");
}

/* A framed HealthCheckRequest{service: svc}. */
static size_t health_req(uint8_t *buf, size_t cap, const char *svc)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)svc;
	size_t n = protobuf_c_message_get_packed_size(&req.base);
	ck_assert_uint_le(n + 5, cap);
	grpc_prefix(buf, false, (uint32_t)n);
	protobuf_c_message_pack(&req.base, buf + 5);
	return n + 5;
}

/* ---- fixture ----------------------------------------------------------- */

static void setup(void)
{
	char *err = NULL;
	base = event_base_new();
	ck_assert_int_eq(cfg_load_string("test.conf",
					 "grpc:\n  max-recv-message-size: 1KiB\n"
					 "  max-send-message-size: 1KiB\n"
					 "log:\n  access-log: true\n",
					 &cfg, &err),
			 0);
	call_set_base(base);
	call_configure(cfg);
	call_set_lookup(lookup);
	call_set_metadata_decoder(decoder);
	n_lookups = n_cancels = n_decodes = 0;
	hanging = NULL;
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	h2_conn_server(pair[0], &st, "mem", call_accept, NULL, NULL);
	client = h2_conn_client(pair[1], &st, "mem", NULL, NULL);
}

static void teardown(void)
{
	h2_conn_close(client, "test over");
	for (int i = 0; i < 10; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_uint_eq(call_active_count(), 0);
	event_base_free(base);
	cfg_free(cfg);
}

/* ---- tests ------------------------------------------------------------- */

START_TEST(test_unary_ok)
{
	uint8_t buf[64];
	size_t n = health_req(buf, sizeof(buf), "x");
	struct resp r;
	request(&r, "/t.T/Echo", NULL, 0, buf, n);
	wait_closed(&r);
	ck_assert_uint_eq(r.error, 0);
	/* Headers, one message, then trailers with grpc-status 0. */
	ck_assert_int_eq(r.blocks, 2);
	ck_assert_str_eq(r.status, "200");
	ck_assert_str_eq(r.grpc_status, "0");
	ck_assert_int_eq(r.grpc_status_block, 2);
	ck_assert_int_eq(r.end_at_block, 2);
	size_t len = evbuffer_get_length(r.data);
	ck_assert_uint_ge(len, 5);
	uint8_t *d = evbuffer_pullup(r.data, -1);
	ck_assert_uint_eq(d[0], 0);
	ck_assert_uint_eq((uint32_t)d[1] << 24 | d[2] << 16 | d[3] << 8 | d[4], len - 5);
	Grpc__Health__V1__HealthCheckResponse *resp =
		grpc__health__v1__health_check_response__unpack(NULL, len - 5, d + 5);
	ck_assert_ptr_nonnull(resp);
	ck_assert_int_eq(resp->status,
			 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
	grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
	evbuffer_free(r.data);
	/* The injected lookup found the method. */
	ck_assert_int_eq(n_lookups, 1);
	ck_assert_str_eq(last_lookup, "/t.T/Echo");
}
END_TEST

START_TEST(test_handler_error_is_trailers_only)
{
	uint8_t buf[64];
	size_t n = health_req(buf, sizeof(buf), "nope");
	struct resp r;
	request(&r, "/t.T/Echo", NULL, 0, buf, n);
	wait_closed(&r);
	/* No message went out: one HEADERS block with END_STREAM carries
	 * :status, content-type and the status; no DATA. */
	ck_assert_int_eq(r.blocks, 1);
	ck_assert_int_eq(r.end_at_block, 1);
	ck_assert_str_eq(r.status, "200");
	ck_assert_str_eq(r.grpc_status, "5");
	ck_assert_str_eq(r.grpc_message, "no service \"nope\"");
	ck_assert_uint_eq(evbuffer_get_length(r.data), 0);
	evbuffer_free(r.data);
}
END_TEST

START_TEST(test_unknown_method)
{
	struct resp r;
	request(&r, "/no.Such/Method", NULL, 0, "\0\0\0\0\0", 5);
	wait_closed(&r);
	ck_assert_str_eq(r.grpc_status, "12"); /* UNIMPLEMENTED */
	ck_assert_ptr_nonnull(strstr(r.grpc_message, "/no.Such/Method"));
	ck_assert_int_eq(r.blocks, 1); /* Trailers-Only */
	ck_assert_int_eq(n_lookups, 1);
	ck_assert_str_eq(last_lookup, "/no.Such/Method");
	evbuffer_free(r.data);

	/* A row without a handler is UNIMPLEMENTED too, naming the method. */
	request(&r, "/t.T/Later", NULL, 0, "\0\0\0\0\0", 5);
	wait_closed(&r);
	ck_assert_str_eq(r.grpc_status, "12");
	ck_assert_ptr_nonnull(strstr(r.grpc_message, "/t.T/Later"));
	evbuffer_free(r.data);

	/* Without an injected lookup every method is unknown. */
	call_set_lookup(NULL);
	uint8_t buf[64];
	size_t n = health_req(buf, sizeof(buf), "x");
	request(&r, "/t.T/Echo", NULL, 0, buf, n);
	wait_closed(&r);
	ck_assert_str_eq(r.grpc_status, "12");
	ck_assert_int_eq(n_lookups, 2);
	evbuffer_free(r.data);
}
END_TEST

START_TEST(test_deadline)
{
	uint8_t buf[64];
	size_t n = health_req(buf, sizeof(buf), "x");
	struct resp r;
	struct h2_hdr to[] = {h2_hdr_make("grpc-timeout", "50m")};
	request(&r, "/t.T/Hang", to, 1, buf, n);
	wait_closed(&r);
	/* Headers went out first, so the status comes in trailers. */
	ck_assert_int_eq(r.blocks, 2);
	ck_assert_str_eq(r.grpc_status, "4"); /* DEADLINE_EXCEEDED */
	ck_assert_ptr_nonnull(strstr(r.grpc_message, "deadline exceeded after"));
	/* The handler heard about it, once. */
	ck_assert_int_eq(n_cancels, 1);
	evbuffer_free(r.data);

	struct h2_hdr zero[] = {h2_hdr_make("grpc-timeout", "0m")};
	request(&r, "/t.T/Hang", zero, 1, buf, n);
	wait_closed(&r);
	ck_assert_str_eq(r.grpc_status, "4");
	ck_assert_ptr_nonnull(strstr(r.grpc_message, "before the call started"));
	ck_assert_int_eq(n_cancels, 1); /* never reached the handler */
	evbuffer_free(r.data);

	struct h2_hdr bad[] = {h2_hdr_make("grpc-timeout", "soon")};
	request(&r, "/t.T/Hang", bad, 1, buf, n);
	wait_closed(&r);
	ck_assert_str_eq(r.grpc_status, "3"); /* INVALID_ARGUMENT */
	ck_assert_ptr_nonnull(strstr(r.grpc_message, "grpc-timeout"));
	evbuffer_free(r.data);
}
END_TEST

START_TEST(test_client_reset_cancels)
{
	uint8_t buf[64];
	size_t n = health_req(buf, sizeof(buf), "x");
	struct resp r;
	struct h2_stream *s = request(&r, "/t.T/Hang", NULL, 0, buf, n);
	ck_assert(check_loop_until(base, &r.blocks, 1, 5000000));
	ck_assert_uint_eq(call_active_count(), 1);
	h2_stream_reset(s, H2_CANCEL);
	wait_closed(&r);
	ck_assert_int_eq(n_cancels, 1);
	for (int i = 0; i < 5; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_uint_eq(call_active_count(), 0);
	evbuffer_free(r.data);
}
END_TEST

START_TEST(test_oversized)
{
	/* A request over max-recv-message-size (1 KiB). */
	char svc[1500];
	memset(svc, 'a', sizeof(svc) - 1);
	svc[sizeof(svc) - 1] = '\0';
	uint8_t buf[1600];
	size_t n = health_req(buf, sizeof(buf), svc);
	struct resp r;
	request(&r, "/t.T/Echo", NULL, 0, buf, n);
	wait_closed(&r);
	ck_assert_str_eq(r.grpc_status, "8"); /* RESOURCE_EXHAUSTED */
	ck_assert_ptr_nonnull(strstr(r.grpc_message, "larger than max"));
	evbuffer_free(r.data);

	/* A response over max-send-message-size (1 KiB): nothing is sent but
	 * the status. */
	n = health_req(buf, sizeof(buf), "x");
	request(&r, "/t.T/Big", NULL, 0, buf, n);
	wait_closed(&r);
	ck_assert_str_eq(r.grpc_status, "8");
	ck_assert_ptr_nonnull(strstr(r.grpc_message, "max-send-message-size"));
	ck_assert_int_eq(r.blocks, 1);
	ck_assert_uint_eq(evbuffer_get_length(r.data), 0);
	evbuffer_free(r.data);
}
END_TEST

START_TEST(test_metadata_hook_and_access_log)
{
	/* Capture stderr: the access log goes there. */
	char path[] = "/tmp/check_call.XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);

	uint8_t buf[64];
	size_t n = health_req(buf, sizeof(buf), "x");
	struct resp r;
	/* "abc" base64: the hook sees -bin metadata decoded. */
	struct h2_hdr md[] = {h2_hdr_make("x-inv-bin", "YWJj")};
	request(&r, "/t.T/Echo", md, 1, buf, n);
	wait_closed(&r);
	evbuffer_free(r.data);

	dup2(saved, STDERR_FILENO);
	close(saved);
	ck_assert_str_eq(r.grpc_status, "0");
	ck_assert_int_eq(n_decodes, 1);
	ck_assert_uint_eq(seen_md_len, 3);
	ck_assert_int_eq(memcmp(seen_md, "abc", 3), 0);

	char log[4096] = "";
	ssize_t got = pread(fd, log, sizeof(log) - 1, 0);
	close(fd);
	unlink(path);
	ck_assert_int_gt(got, 0);
	log[got] = '\0';
	/* One access line naming the connection and stream, the method, the
	 * status and what the hook decoded. */
	const char *line = strstr(log, " access peer=mem conn=");
	ck_assert_msg(line != NULL, "no access line in: %s", log);
	ck_assert_ptr_nonnull(strstr(line, " stream=1 method=/t.T/Echo grpc-status=0 "));
	ck_assert_ptr_nonnull(strstr(line, " invocation=inv-abc"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("call");
	TCase *tc = tcase_create("call");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_unary_ok);
	tcase_add_test(tc, test_handler_error_is_trailers_only);
	tcase_add_test(tc, test_unknown_method);
	tcase_add_test(tc, test_deadline);
	tcase_add_test(tc, test_client_reset_cancels);
	tcase_add_test(tc, test_oversized);
	tcase_add_test(tc, test_metadata_hook_and_access_log);
	suite_add_tcase(s, tc);
	return check_run(s);
}
