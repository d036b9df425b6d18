/*
 * check_h2.c - the HTTP/2 + gRPC server layer driven in memory: a server
 * h2_conn and our client connected through a libevent bufferevent pair, no
 * sockets.  Covers unary calls, UNIMPLEMENTED, messages split into single
 * bytes, size limits, truncated and duplicate messages, deadlines, client
 * resets, and a non-HTTP/2 peer.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/call.h"
#include "core/cfg.h"
#include "rpc/client.h"
#include "grpc/health/v1/health.pb-c.h"
#include "transport/h2.h"
#include "services/dispatch.h"
#include "services/inst.h"
#include "services/svc.h"
#include "check_run.h"

static struct event_base *base;
static struct cfg *cfg;
static struct rc_client *cl;
static struct bufferevent *pair[2];
static bool timed_out;

static const struct h2_settings st = {
	.max_concurrent_streams = 100,
	.max_header_list_size = 16384,
	.conn_window = 1 << 20,
	.stream_window = 1 << 20,
	.idle_timeout_us = 0,
	.max_output_buffer = 1 << 20,
};

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	timed_out = true;
}

/* Run the loop until *flag is set (or 5 s pass, which fails the test). */
static void run_until(bool *flag)
{
	timed_out = false;
	struct event *t = evtimer_new(base, timeout_cb, NULL);
	struct timeval tv = {5, 0};
	event_add(t, &tv);
	while (!*flag && !timed_out)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	ck_assert_msg(*flag, "timed out waiting");
}

static bool server_closed;
static void server_closed_cb(struct h2_conn *c, void *arg)
{
	(void)c;
	(void)arg;
	server_closed = true;
}

static void setup_server(void)
{
	char *err = NULL;
	base = event_base_new();
	ck_assert_int_eq(cfg_load_string("test.conf",
					 "grpc:\n  max-recv-message-size: 1KiB\n"
					 "instances:\n  - name: \"\"\n    storage: memory\n",
					 &cfg, &err),
			 0);
	call_set_base(base);
	call_set_lookup(dispatch_find);
	call_set_metadata_decoder(dispatch_decode_metadata);
	call_configure(cfg);
	svc_set_config(cfg);
	inst_configure(cfg);
	ck_assert_int_eq(inst_open_all(base, cfg, &err), 0);
	svc_health_set_serving(false);
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	server_closed = false;
	h2_conn_server(pair[0], &st, "mem", call_accept, server_closed_cb, NULL);
}

static void setup(void)
{
	setup_server();
	cl = rc_client_from_bev(base, pair[1], "mem");
}

static void teardown(void)
{
	if (cl)
		rc_client_free(cl);
	cl = NULL;
	/* Let the server side see EOF and free itself. */
	for (int i = 0; i < 10; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_uint_eq(call_active_count(), 0);
	inst_close_all();
	event_base_free(base);
	cfg_free(cfg);
}

struct result {
	bool done;
	int code;
	char msg[512];
	int nmsgs;
	int last_status;
};

static void on_msg(struct rc_call *k, const uint8_t *m, size_t len, void *arg)
{
	(void)k;
	struct result *r = arg;
	r->nmsgs++;
	Grpc__Health__V1__HealthCheckResponse *resp =
		grpc__health__v1__health_check_response__unpack(NULL, len, m);
	if (resp) {
		r->last_status = resp->status;
		grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
	}
}

static void on_done(struct rc_call *k, int code, const char *msg, void *arg)
{
	(void)k;
	struct result *r = arg;
	r->done = true;
	r->code = code;
	snprintf(r->msg, sizeof(r->msg), "%s", msg);
}

static int health_check(const char *service, int *status)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	ProtobufCMessage *out = NULL;
	int code = rc_unary(cl, "/grpc.health.v1.Health/Check", &req.base,
			    &grpc__health__v1__health_check_response__descriptor, &out, NULL, 0);
	if (code == 0) {
		*status = ((Grpc__Health__V1__HealthCheckResponse *)out)->status;
		protobuf_c_message_free_unpacked(out, NULL);
	}
	return code;
}

START_TEST(test_unary_health)
{
	int status = -1;
	ck_assert_int_eq(health_check("", &status), GRPC_OK);
	ck_assert_int_eq(status,
			 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
	svc_health_set_serving(true);
	ck_assert_int_eq(health_check("grpc.health.v1.Health", &status), GRPC_OK);
	ck_assert_int_eq(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
	ck_assert_int_eq(health_check("no.such.Service", &status), GRPC_NOT_FOUND);
}
END_TEST

START_TEST(test_capabilities)
{
	Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_CAPABILITIES_REQUEST__INIT;
	ProtobufCMessage *out = NULL;
	char *msg = NULL;
	int code = rc_unary(cl, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
			    &req.base,
			    &build__bazel__remote__execution__v2__server_capabilities__descriptor,
			    &out, &msg, 0);
	ck_assert_int_eq(code, GRPC_OK);
	free(msg);
	Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = (void *)out;
	ck_assert_ptr_nonnull(caps->cache_capabilities);
	ck_assert_uint_eq(caps->cache_capabilities->n_digest_functions, 1);
	ck_assert_int_eq(caps->cache_capabilities->digest_functions[0],
			 BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256);
	/* The advertised batch size must fit the receive limit (1 KiB here
	 * is below the overhead, so it must not be larger than the limit). */
	ck_assert_int_lt(caps->cache_capabilities->max_batch_total_size_bytes, 1024);
	ck_assert_int_eq(caps->execution_capabilities->exec_enabled, 0);
	protobuf_c_message_free_unpacked(out, NULL);

	req.instance_name = "nope";
	code = rc_unary(cl, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
			&req.base,
			&build__bazel__remote__execution__v2__server_capabilities__descriptor, &out,
			&msg, 0);
	ck_assert_int_eq(code, GRPC_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(msg, "\"nope\""));
	free(msg);
}
END_TEST

static struct result raw_call(const char *path, const void *data, size_t len, bool bytewise,
			      int64_t timeout)
{
	struct result r = {0};
	struct rc_call *k = rc_call_start(cl, path, timeout, NULL, 0, on_msg, on_done, &r);
	ck_assert_ptr_nonnull(k);
	const uint8_t *p = data;
	if (bytewise) {
		for (size_t i = 0; i < len; i++) {
			rc_call_send_raw(k, p + i, 1);
			event_base_loop(base, EVLOOP_NONBLOCK);
		}
	} else if (len) {
		rc_call_send_raw(k, data, len);
	}
	rc_call_close_send(k);
	run_until(&r.done);
	return r;
}

START_TEST(test_unimplemented)
{
	struct result r = raw_call("/no.Such/Method", "\0\0\0\0\0", 5, false, 0);
	ck_assert_int_eq(r.code, GRPC_UNIMPLEMENTED);
	ck_assert_ptr_nonnull(strstr(r.msg, "/no.Such/Method"));
	r = raw_call("/build.bazel.remote.execution.v2.ContentAddressableStorage/SplitBlob",
		     "\0\0\0\0\0", 5, false, 0);
	ck_assert_int_eq(r.code, GRPC_UNIMPLEMENTED);
	ck_assert_ptr_nonnull(strstr(r.msg, "SplitBlob"));
}
END_TEST

START_TEST(test_bytewise_message)
{
	/* HealthCheckRequest{service:"grpc.health.v1.Health"} sent one byte
	 * per DATA frame. */
	static const char svc[] = "grpc.health.v1.Health";
	uint8_t wire[64];
	size_t n = sizeof(svc) - 1;
	grpc_prefix(wire, false, (uint32_t)(n + 2));
	wire[5] = 0x0a;
	wire[6] = (uint8_t)n;
	memcpy(wire + 7, svc, n);
	svc_health_set_serving(true);
	struct result r = raw_call("/grpc.health.v1.Health/Check", wire, n + 7, true, 0);
	ck_assert_int_eq(r.code, GRPC_OK);
	ck_assert_int_eq(r.nmsgs, 1);
	ck_assert_int_eq(r.last_status,
			 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
}
END_TEST

START_TEST(test_too_large)
{
	size_t n = 2000;
	uint8_t *wire = calloc(1, n + 5);
	grpc_prefix(wire, false, (uint32_t)n);
	struct result r = raw_call("/grpc.health.v1.Health/Check", wire, n + 5, false, 0);
	free(wire);
	ck_assert_int_eq(r.code, GRPC_RESOURCE_EXHAUSTED);
	ck_assert_ptr_nonnull(strstr(r.msg, "2000 vs. 1024"));
	/* The connection still serves. */
	int status;
	ck_assert_int_eq(health_check("", &status), GRPC_OK);
}
END_TEST

START_TEST(test_truncated_and_duplicate)
{
	uint8_t wire[16];
	grpc_prefix(wire, false, 16);
	memcpy(wire + 5, "abc", 3);
	struct result r = raw_call("/grpc.health.v1.Health/Check", wire, 8, false, 0);
	ck_assert_int_eq(r.code, GRPC_INTERNAL);
	ck_assert_ptr_nonnull(strstr(r.msg, "truncated"));

	r = raw_call("/grpc.health.v1.Health/Check", "\0\0\0", 3, false, 0);
	ck_assert_int_eq(r.code, GRPC_INTERNAL);

	r = raw_call("/grpc.health.v1.Health/Check", "", 0, false, 0);
	ck_assert_int_eq(r.code, GRPC_INTERNAL);
	ck_assert_ptr_nonnull(strstr(r.msg, "no request message"));

	r = raw_call("/grpc.health.v1.Health/Check", "\0\0\0\0\0\0\0\0\0\0", 10, false, 0);
	ck_assert_int_eq(r.code, GRPC_INTERNAL);
	ck_assert_ptr_nonnull(strstr(r.msg, "second request message"));

	/* Not a valid protobuf: field 1 (string) claims 100 bytes. */
	uint8_t bad[] = {0, 0, 0, 0, 2, 0x0a, 100};
	r = raw_call("/grpc.health.v1.Health/Check", bad, sizeof(bad), false, 0);
	ck_assert_int_eq(r.code, GRPC_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(r.msg, "HealthCheckRequest"));

	uint8_t comp[] = {1, 0, 0, 0, 0};
	r = raw_call("/grpc.health.v1.Health/Check", comp, sizeof(comp), false, 0);
	ck_assert_int_eq(r.code, GRPC_INTERNAL);
}
END_TEST

START_TEST(test_deadline)
{
	struct result r = {0};
	struct rc_call *k = rc_call_start(cl, "/grpc.health.v1.Health/Watch", 50000, NULL, 0,
					  on_msg, on_done, &r);
	rc_call_send(k, (const uint8_t *)"", 0);
	rc_call_close_send(k);
	run_until(&r.done);
	ck_assert_int_eq(r.code, GRPC_DEADLINE_EXCEEDED);
	ck_assert_int_eq(r.nmsgs, 1); /* the initial status arrived first */
	ck_assert_uint_eq(call_active_count(), 0);
}
END_TEST

START_TEST(test_watch_change_and_cancel)
{
	struct result r = {0};
	struct rc_call *k =
		rc_call_start(cl, "/grpc.health.v1.Health/Watch", 0, NULL, 0, on_msg, on_done, &r);
	rc_call_send(k, (const uint8_t *)"", 0);
	rc_call_close_send(k);
	while (r.nmsgs < 1 && !r.done)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_int_eq(r.last_status,
			 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
	svc_health_set_serving(true);
	while (r.nmsgs < 2 && !r.done)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_int_eq(r.last_status,
			 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
	ck_assert_uint_eq(call_active_count(), 1);
	rc_call_cancel(k);
	run_until(&r.done);
	ck_assert_int_eq(r.code, GRPC_CANCELLED);
	for (int i = 0; i < 5; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_uint_eq(call_active_count(), 0);
}
END_TEST

START_TEST(test_bad_metadata)
{
	struct h2_hdr md[] = {h2_hdr_make("x-thing-bin", "!!!!")};
	struct result r = {0};
	struct rc_call *k =
		rc_call_start(cl, "/grpc.health.v1.Health/Check", 0, md, 1, on_msg, on_done, &r);
	rc_call_send(k, (const uint8_t *)"", 0);
	rc_call_close_send(k);
	run_until(&r.done);
	ck_assert_int_eq(r.code, GRPC_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(r.msg, "x-thing-bin"));

	struct h2_hdr to[] = {h2_hdr_make("grpc-timeout", "soon")};
	memset(&r, 0, sizeof(r));
	k = rc_call_start(cl, "/grpc.health.v1.Health/Check", 0, to, 1, on_msg, on_done, &r);
	rc_call_send(k, (const uint8_t *)"", 0);
	rc_call_close_send(k);
	run_until(&r.done);
	ck_assert_int_eq(r.code, GRPC_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(r.msg, "grpc-timeout"));
}
END_TEST

static void read_all(struct bufferevent *bev, void *arg)
{
	struct evbuffer *acc = arg;
	evbuffer_add_buffer(acc, bufferevent_get_input(bev));
}

static void eof_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	(void)arg;
}

START_TEST(test_not_http2)
{
	struct evbuffer *acc = evbuffer_new();
	bufferevent_setcb(pair[1], read_all, NULL, eof_cb, acc);
	bufferevent_enable(pair[1], EV_READ | EV_WRITE);
	bufferevent_write(pair[1], "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
	run_until(&server_closed);
	for (int i = 0; i < 5; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	evbuffer_add_buffer(acc, bufferevent_get_input(pair[1]));
	size_t n = evbuffer_get_length(acc);
	char *text = calloc(1, n + 1);
	evbuffer_remove(acc, text, n);
	ck_assert_msg(strncmp(text, "HTTP/1.1 400", 12) == 0, "got: %s", text);
	ck_assert_ptr_nonnull(strstr(text, "gRPC"));
	free(text);
	evbuffer_free(acc);
	bufferevent_free(pair[1]);
}
END_TEST

START_TEST(test_garbage_after_preface)
{
	struct evbuffer *acc = evbuffer_new();
	bufferevent_setcb(pair[1], read_all, NULL, eof_cb, acc);
	bufferevent_enable(pair[1], EV_READ | EV_WRITE);
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	bufferevent_write(pair[1], preface, sizeof(preface) - 1);
	/* A frame header of an absurd length and unknown flags. */
	static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01, 0xff, 0x7f, 0xff,
				       0xff, 0xff, 1,	 2,    3,    4};
	bufferevent_write(pair[1], junk, sizeof(junk));
	run_until(&server_closed);
	for (int i = 0; i < 5; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	evbuffer_add_buffer(acc, bufferevent_get_input(pair[1]));
	/* The server's answer, frame by frame: its SETTINGS first, and a
	 * GOAWAY last that processed no stream and names the error (the
	 * client preface must go on with a SETTINGS frame: PROTOCOL_ERROR). */
	size_t n = evbuffer_get_length(acc);
	uint8_t *b = malloc(n ? n : 1);
	evbuffer_remove(acc, b, n);
	int nframes = 0, first_type = -1, goaways = 0, last_type = -1;
	uint32_t last_stream = 0xffffffff, error = 0xffffffff;
	size_t off = 0;
	while (off + 9 <= n) {
		uint32_t len = (uint32_t)b[off] << 16 | (uint32_t)b[off + 1] << 8 | b[off + 2];
		int type = b[off + 3];
		uint32_t sid = ((uint32_t)b[off + 5] << 24 | (uint32_t)b[off + 6] << 16 |
				(uint32_t)b[off + 7] << 8 | b[off + 8]) &
			       0x7fffffff;
		ck_assert_uint_le(off + 9 + len, n);
		const uint8_t *pl = b + off + 9;
		if (nframes++ == 0)
			first_type = type;
		last_type = type;
		if (type == 0x7) { /* GOAWAY */
			goaways++;
			ck_assert_uint_eq(sid, 0);
			ck_assert_uint_ge(len, 8);
			last_stream = ((uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 |
				       (uint32_t)pl[2] << 8 | pl[3]) &
				      0x7fffffff;
			error = (uint32_t)pl[4] << 24 | (uint32_t)pl[5] << 16 |
				(uint32_t)pl[6] << 8 | pl[7];
		}
		off += 9 + len;
	}
	ck_assert_uint_eq(off, n);	   /* whole frames only */
	ck_assert_int_eq(first_type, 0x4); /* SETTINGS */
	ck_assert_int_eq(goaways, 1);
	ck_assert_int_eq(last_type, 0x7); /* nothing after the GOAWAY */
	ck_assert_uint_eq(last_stream, 0);
	ck_assert_uint_eq(error, 0x1); /* PROTOCOL_ERROR */
	free(b);
	evbuffer_free(acc);
	bufferevent_free(pair[1]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("h2");
	TCase *tc = tcase_create("client");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_unary_health);
	tcase_add_test(tc, test_capabilities);
	tcase_add_test(tc, test_unimplemented);
	tcase_add_test(tc, test_bytewise_message);
	tcase_add_test(tc, test_too_large);
	tcase_add_test(tc, test_truncated_and_duplicate);
	tcase_add_test(tc, test_deadline);
	tcase_add_test(tc, test_watch_change_and_cancel);
	tcase_add_test(tc, test_bad_metadata);
	suite_add_tcase(s, tc);
	TCase *raw = tcase_create("raw");
	tcase_add_checked_fixture(raw, setup_server, teardown);
	tcase_add_test(raw, test_not_http2);
	tcase_add_test(raw, test_garbage_after_preface);
	suite_add_tcase(s, raw);
	return check_run(s);
}
