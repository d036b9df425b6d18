/*
 * fuzz_h2.c - libFuzzer target for the whole HTTP/2 + gRPC input path:
 * the bytes a client sends, fed in memory (a libevent bufferevent pair, as
 * t/unit/transport/check_h2.c does) into a server h2_conn whose streams go
 * through the real call layer (headers, metadata and its -bin base64,
 * grpc-timeout, message reassembly, protobuf decoding) to real handlers:
 * Health, Capabilities, the CAS and ByteStream of a memory instance (none
 * needs Redis), plus "/fuzz.Echo/..." (a bidi echo of google.protobuf.Empty
 * that sends back what it got, unknown fields included).  The other REAPI
 * methods, which need Redis, answer UNIMPLEMENTED here.
 *
 * The harness sends the client connection preface and an empty SETTINGS
 * frame itself; the input is every frame after that.  Then the client side
 * goes away; the server must notice, close the connection and finish every
 * call within a bounded number of loop passes (else: abort, a stuck call).
 * Each input gets fresh instances and ByteStream state (set up and torn
 * down as reactord's main does), so a crash reproduces alone.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "core/cfg.h"
#include "core/log.h"
#include "google/protobuf/empty.pb-c.h"
#include "rpc/call.h"
#include "services/dispatch.h"
#include "services/inst.h"
#include "services/svc.h"
#include "transport/h2.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static struct cfg *cfg;
static bool server_closed;
static size_t received; /* bytes the server sent to the client */

/* Small limits, so the fuzzer reaches them with small inputs. */
static const struct h2_settings st = {
	.max_concurrent_streams = 16,
	.max_header_list_size = 4096,
	.conn_window = 1 << 16,
	.stream_window = 1 << 14,
	.idle_timeout_us = 0,
	.max_output_buffer = 1 << 16,
};

static const char conf[] = "grpc:\n"
			   "  max-recv-message-size: 128KiB\n"
			   "  max-send-message-size: 16KiB\n"
			   "instances:\n"
			   "  - name: \"\"\n"
			   "    storage: memory\n"
			   "    storage-max-size: 1MiB\n"
			   "  - name: ro\n"
			   "    storage: memory\n"
			   "    allow-updates: false\n";

static void echo_message(struct call *c, const ProtobufCMessage *msg)
{
	call_send(c, msg);
}

static void echo_half_close(struct call *c)
{
	call_finish(c, GRPC_OK, NULL);
}

static const struct rpc_method echo = {
	.path = "/fuzz.Echo/Echo",
	.kind = RPC_BIDI,
	.req = &google__protobuf__empty__descriptor,
	.resp = &google__protobuf__empty__descriptor,
	.on_message = echo_message,
	.on_half_close = echo_half_close,
};

static const char *const served[] = {
	"/grpc.health.v1.Health/",
	"/build.bazel.remote.execution.v2.Capabilities/",
	"/build.bazel.remote.execution.v2.ContentAddressableStorage/",
	"/google.bytestream.ByteStream/",
};

static const struct rpc_method *lookup(const char *path)
{
	if (strncmp(path, "/fuzz.", 6) == 0)
		return &echo;
	for (size_t i = 0; i < sizeof(served) / sizeof(served[0]); i++)
		if (strncmp(path, served[i], strlen(served[i])) == 0)
			return dispatch_find(path);
	return NULL;
}

static void closed_cb(struct h2_conn *c, void *arg)
{
	(void)c;
	(void)arg;
	server_closed = true;
}

static void client_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	received += evbuffer_get_length(in);
	evbuffer_drain(in, evbuffer_get_length(in));
}

static void client_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	(void)arg;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* FUZZ_H2_VERBOSE=1: log every call (to see what an input does). */
	bool verbose = getenv("FUZZ_H2_VERBOSE") != NULL;
	log_set_level(verbose ? LOG_DEBUG : LOG_ERROR);
	char *err = NULL;
	base = event_base_new();
	if (!base || cfg_load_string("fuzz.conf", conf, &cfg, &err) != 0) {
		fprintf(stderr, "fuzz_h2: setup: %s\n", err ? err : "no event base");
		abort();
	}
	call_set_base(base);
	call_set_lookup(lookup);
	call_set_metadata_decoder(dispatch_decode_metadata);
	if (verbose)
		cfg->access_log = true;
	call_configure(cfg);
	svc_set_config(cfg);
	inst_configure(cfg);
	svc_health_set_serving(true);
	svc_cas_init(base);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
					 /* SETTINGS, empty */
					 "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
	char *err = NULL;
	if (inst_open_all(base, cfg, &err) != 0) {
		fprintf(stderr, "fuzz_h2: instances: %s\n", err);
		abort();
	}
	svc_bytestream_init(base);
	struct bufferevent *pair[2];
	if (bufferevent_pair_new(base, 0, pair) != 0)
		abort();
	server_closed = false;
	received = 0;
	h2_conn_server(pair[0], &st, "fuzz", call_accept, closed_cb, NULL);
	bufferevent_setcb(pair[1], client_read, NULL, client_event, NULL);
	bufferevent_enable(pair[1], EV_READ | EV_WRITE);
	bufferevent_write(pair[1], preface, sizeof(preface) - 1);
	bufferevent_write(pair[1], data, size);

	/* Run until the server is quiet: nothing more to the client for a few
	 * passes (handlers answer over several passes). */
	int quiet = 0;
	for (int pass = 0; pass < 10000 && !server_closed && quiet < 4; pass++) {
		size_t before = received;
		event_base_loop(base, EVLOOP_NONBLOCK);
		quiet = received == before ? quiet + 1 : 0;
	}
	/* The client goes away (EOF, as a socket's peer sees it): the server
	 * must close and finish every call. */
	bufferevent_flush(pair[1], EV_WRITE, BEV_FINISHED);
	bufferevent_free(pair[1]);
	int pass = 0;
	for (; pass < 10000 && (!server_closed || call_active_count() > 0); pass++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	if (!server_closed || call_active_count() > 0) {
		fprintf(stderr, "fuzz_h2: after EOF: connection %s, %zu active call(s)\n",
			server_closed ? "closed" : "still open", call_active_count());
		abort();
	}
	/* Let deferred frees run. */
	for (int i = 0; i < 4; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	/* Partial uploads outlive their stream (they are resumable): drop
	 * them as reactord does at exit, before their stores close. */
	svc_bytestream_shutdown();
	inst_close_all();
	return 0;
}
