/*
 * check_client.c - the gRPC client (client.c) against in-process server
 * ends built from the same layers, through a bufferevent pair: the call
 * layer with the test's own methods (round trips, statuses from trailers),
 * and a bare h2 server that misbehaves on purpose (resets, HTTP errors
 * without grpc-status, a vanished connection).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "core/cfg.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/call.h"
#include "rpc/client.h"
#include "rpc/grpc.h"
#include "transport/h2.h"
#include "check_run.h"

static struct event_base *base;
static struct cfg *cfg;
static struct bufferevent *pair[2];
static struct rc_client *cl;
static struct h2_conn *server;

static const struct h2_settings st = {
	.max_concurrent_streams = 100,
	.max_header_list_size = 16384,
	.conn_window = 1 << 20,
	.stream_window = 1 << 20,
	.idle_timeout_us = 0,
	.max_output_buffer = 1 << 20,
};

/* ---- the call-layer server's methods ------------------------------------ */

/* Check: HealthCheckRequest{service} -> SERVING for "up", else NOT_FOUND
 * with a message that needs percent-encoding. */
static void check(struct call *c, const ProtobufCMessage *msg)
{
	const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
	if (strcmp(req->service, "up") != 0) {
		call_finish(c, GRPC_NOT_FOUND, "no service \"%s\": 100%% gone, caf\xc3\xa9",
			    req->service);
		return;
	}
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	call_reply(c, &resp.base);
}

/* Two: a server stream of two messages, then ABORTED in the trailers. */
static void two(struct call *c, const ProtobufCMessage *msg)
{
	(void)msg;
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	call_send(c, &resp.base);
	resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	call_send(c, &resp.base);
	call_finish(c, GRPC_ABORTED, "stopped after two");
}

static const struct rpc_method methods[] = {
	{
		.path = "/t.T/Check",
		.kind = RPC_UNARY,
		.req = &grpc__health__v1__health_check_request__descriptor,
		.resp = &grpc__health__v1__health_check_response__descriptor,
		.on_message = check,
	},
	{
		.path = "/t.T/Two",
		.kind = RPC_SERVER_STREAM,
		.req = &grpc__health__v1__health_check_request__descriptor,
		.resp = &grpc__health__v1__health_check_response__descriptor,
		.on_message = two,
	},
};

static const struct rpc_method *lookup(const char *path)
{
	for (size_t i = 0; i < ARRAY_LEN(methods); i++)
		if (strcmp(methods[i].path, path) == 0)
			return &methods[i];
	return NULL;
}

/* ---- a bare h2 server that misbehaves ----------------------------------- */

enum raw_mode { RAW_RESET_REFUSED, RAW_RESET_CANCEL, RAW_HTTP_503, RAW_NO_STATUS };
static enum raw_mode raw_mode;
static char raw_timeout[32], raw_path[64], raw_te[16];

static void raw_headers(struct h2_stream *s, bool trailers)
{
	if (trailers)
		return;
	const char *v;
	snprintf(raw_path, sizeof(raw_path), "%s", (v = h2_stream_header(s, ":path")) ? v : "");
	snprintf(raw_te, sizeof(raw_te), "%s", (v = h2_stream_header(s, "te")) ? v : "");
	snprintf(raw_timeout, sizeof(raw_timeout), "%s",
		 (v = h2_stream_header(s, "grpc-timeout")) ? v : "");
	struct h2_hdr h503[] = {h2_hdr_make(":status", "503")};
	struct h2_hdr h200[] = {h2_hdr_make(":status", "200"),
				h2_hdr_make("content-type", "application/grpc")};
	switch (raw_mode) {
	case RAW_RESET_REFUSED: h2_stream_reset(s, H2_REFUSED_STREAM); break;
	case RAW_RESET_CANCEL: h2_stream_reset(s, H2_CANCEL); break;
	case RAW_HTTP_503: h2_stream_respond(s, h503, 1, true); break;
	case RAW_NO_STATUS: h2_stream_respond(s, h200, 2, true); break;
	}
}

static void raw_close(struct h2_stream *s, uint32_t error)
{
	(void)s;
	(void)error;
}

static const struct h2_stream_ops raw_ops = {
	.on_headers = raw_headers,
	.on_close = raw_close,
};

static void raw_accept(struct h2_stream *s, void *arg)
{
	(void)arg;
	h2_stream_set_ops(s, &raw_ops, NULL);
}

/* ---- fixtures ----------------------------------------------------------- */

static void common_setup(h2_accept_stream_fn on_stream)
{
	char *err = NULL;
	base = event_base_new();
	ck_assert_int_eq(cfg_load_string("test.conf", "log:\n  level: warn\n", &cfg, &err), 0);
	call_set_base(base);
	call_configure(cfg);
	call_set_lookup(lookup);
	call_set_metadata_decoder(NULL);
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	server = h2_conn_server(pair[0], &st, "mem", on_stream, NULL, NULL);
	cl = rc_client_from_bev(base, pair[1], "mem");
}

static void setup_call(void)
{
	common_setup(call_accept);
}

static void setup_raw(void)
{
	common_setup(raw_accept);
}

static void teardown(void)
{
	if (cl)
		rc_client_free(cl);
	cl = NULL;
	for (int i = 0; i < 10; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_uint_eq(call_active_count(), 0);
	event_base_free(base);
	cfg_free(cfg);
}

static int check_unary(const char *service, int *status, char **msg)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	ProtobufCMessage *out = NULL;
	int code = rc_unary(cl, "/t.T/Check", &req.base,
			    &grpc__health__v1__health_check_response__descriptor, &out, msg, 0);
	if (code == GRPC_OK) {
		ck_assert_ptr_nonnull(out);
		*status = ((Grpc__Health__V1__HealthCheckResponse *)out)->status;
		protobuf_c_message_free_unpacked(out, NULL);
	}
	return code;
}

struct result {
	int done; /* an int for check_loop_until */
	int code;
	char msg[256];
	int nmsgs;
	int statuses[4];
};

static void on_msg(struct rc_call *k, const uint8_t *m, size_t len, void *arg)
{
	(void)k;
	struct result *r = arg;
	Grpc__Health__V1__HealthCheckResponse *resp =
		grpc__health__v1__health_check_response__unpack(NULL, len, m);
	ck_assert_ptr_nonnull(resp);
	if (r->nmsgs < 4)
		r->statuses[r->nmsgs] = resp->status;
	r->nmsgs++;
	grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
}

static void on_done(struct rc_call *k, int code, const char *msg, void *arg)
{
	(void)k;
	struct result *r = arg;
	ck_assert_int_eq(r->done, 0); /* once */
	r->done = 1;
	r->code = code;
	snprintf(r->msg, sizeof(r->msg), "%s", msg);
}

/* Start a call with an empty request and a timeout, and wait for it. */
static struct result call_and_wait(const char *path, int64_t timeout_us)
{
	struct result r = {0};
	struct rc_call *k = rc_call_start(cl, path, timeout_us, NULL, 0, on_msg, on_done, &r);
	ck_assert_ptr_nonnull(k);
	ck_assert_int_eq(rc_call_send(k, (const uint8_t *)"", 0), 0);
	rc_call_close_send(k);
	ck_assert_msg(check_loop_until(base, &r.done, 1, 5000000), "timed out");
	return r;
}

/* ---- tests against the call layer ---------------------------------------- */

START_TEST(test_unary_round_trip)
{
	int status = -1;
	char *msg = NULL;
	ck_assert_int_eq(check_unary("up", &status, &msg), GRPC_OK);
	ck_assert_int_eq(status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
	ck_assert_str_eq(msg, "");
	free(msg);
	/* Again on the same connection. */
	ck_assert_int_eq(check_unary("up", &status, NULL), GRPC_OK);
	ck_assert(rc_client_alive(cl));
}
END_TEST

START_TEST(test_status_from_trailers)
{
	/* Trailers-Only: the status and the percent-decoded message. */
	int status;
	char *msg = NULL;
	ck_assert_int_eq(check_unary("down", &status, &msg), GRPC_NOT_FOUND);
	ck_assert_str_eq(msg, "no service \"down\": 100% gone, caf\xc3\xa9");
	free(msg);

	/* Messages, then the status in real trailers. */
	struct result r = call_and_wait("/t.T/Two", 0);
	ck_assert_int_eq(r.nmsgs, 2);
	ck_assert_int_eq(r.statuses[0],
			 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
	ck_assert_int_eq(r.statuses[1],
			 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
	ck_assert_int_eq(r.code, GRPC_ABORTED);
	ck_assert_str_eq(r.msg, "stopped after two");

	/* An unknown method: the server's UNIMPLEMENTED reaches the caller. */
	r = call_and_wait("/t.T/Nope", 0);
	ck_assert_int_eq(r.code, GRPC_UNIMPLEMENTED);
	ck_assert_ptr_nonnull(strstr(r.msg, "/t.T/Nope"));
}
END_TEST

START_TEST(test_connection_gone)
{
	int status;
	ck_assert_int_eq(check_unary("up", &status, NULL), GRPC_OK);
	/* The server end hangs up: EOF on the client's side of the pair
	 * (freeing a pair end alone does not tell its partner). */
	bufferevent_flush(pair[0], EV_WRITE, BEV_FINISHED);
	h2_conn_close(server, "test kills the server end");
	for (int i = 0; i < 10 && rc_client_alive(cl); i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert(!rc_client_alive(cl));
	char *msg = NULL;
	ck_assert_int_eq(check_unary("up", &status, &msg), GRPC_UNAVAILABLE);
	ck_assert_str_eq(msg, "connection is closed");
	free(msg);
}
END_TEST

/* rc_client_release frees a live client once its connection is gone, from
 * the loop, and a dead one at once; a call open at release time ends with
 * CANCELLED first (ASan checks the frees). */
static void release_done(struct rc_call *k, int code, const char *msg, void *arg)
{
	(void)k;
	(void)msg;
	*(int *)arg = code;
}

START_TEST(test_release_live_client)
{
	int code = -1;
	struct rc_call *k =
		rc_call_start(cl, "/test.T/Hang", 0, NULL, 0, NULL, release_done, &code);
	ck_assert_ptr_nonnull(k);
	rc_client_release(cl);
	cl = NULL;
	for (int i = 0; i < 10 && code < 0; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(code, GRPC_CANCELLED);
}
END_TEST

START_TEST(test_release_dead_client)
{
	bufferevent_flush(pair[0], EV_WRITE, BEV_FINISHED);
	h2_conn_close(server, "test kills the server end");
	for (int i = 0; i < 10 && rc_client_alive(cl); i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert(!rc_client_alive(cl));
	rc_client_release(cl);
	cl = NULL;
}
END_TEST

/* ---- tests against the misbehaving server --------------------------------- */

START_TEST(test_request_headers)
{
	raw_mode = RAW_RESET_CANCEL;
	call_and_wait("/t.T/Check", 2500000);
	ck_assert_str_eq(raw_path, "/t.T/Check");
	ck_assert_str_eq(raw_te, "trailers");
	ck_assert_str_eq(raw_timeout, "2500000u");
}
END_TEST

START_TEST(test_server_resets)
{
	raw_mode = RAW_RESET_REFUSED;
	struct result r = call_and_wait("/t.T/Check", 0);
	ck_assert_int_eq(r.code, GRPC_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(r.msg, "stream closed"));
	ck_assert_int_eq(r.nmsgs, 0);

	raw_mode = RAW_RESET_CANCEL;
	r = call_and_wait("/t.T/Check", 0);
	ck_assert_int_eq(r.code, GRPC_CANCELLED);
	ck_assert(rc_client_alive(cl)); /* a reset ends the stream only */
}
END_TEST

START_TEST(test_http_status_without_grpc_status)
{
	raw_mode = RAW_HTTP_503;
	struct result r = call_and_wait("/t.T/Check", 0);
	ck_assert_int_eq(r.code, GRPC_UNAVAILABLE);
	ck_assert_str_eq(r.msg, "HTTP status 503 without grpc-status");

	raw_mode = RAW_NO_STATUS;
	r = call_and_wait("/t.T/Check", 0);
	ck_assert_int_eq(r.code, GRPC_UNAVAILABLE);
	ck_assert_str_eq(r.msg, "stream closed without grpc-status");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("client");
	TCase *tc = tcase_create("call");
	tcase_add_checked_fixture(tc, setup_call, teardown);
	tcase_add_test(tc, test_unary_round_trip);
	tcase_add_test(tc, test_status_from_trailers);
	tcase_add_test(tc, test_connection_gone);
	tcase_add_test(tc, test_release_live_client);
	tcase_add_test(tc, test_release_dead_client);
	suite_add_tcase(s, tc);
	TCase *raw = tcase_create("raw");
	tcase_add_checked_fixture(raw, setup_raw, teardown);
	tcase_add_test(raw, test_request_headers);
	tcase_add_test(raw, test_server_resets);
	tcase_add_test(raw, test_http_status_without_grpc_status);
	suite_add_tcase(s, raw);
	return check_run(s);
}
