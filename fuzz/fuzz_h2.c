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
 * frame itself; the input is every frame after that, or (first byte 0x80
 * and up) a list of calls the harness frames (see "structured inputs").  Then the client side
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
#include <nghttp2/nghttp2.h>

#include "fuzz.h"
#include "core/cfg.h"
#include "core/log.h"
#include "google/protobuf/empty.pb-c.h"
#include "rpc/call.h"
#include "rpc/grpc.h"
#include "services/dispatch.h"
#include "services/inst.h"
#include "services/svc.h"
#include "transport/h2.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

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

/* ---- structured inputs ------------------------------------------------
 * Raw frames reach the handlers only through HPACK, which mutations rarely
 * keep valid.  An input whose first byte has the top bit set is instead a
 * list of calls the harness frames itself (HPACK by nghttp2's deflater):
 *
 *   0x80, then per call: METHOD FLAGS LEN-HI LEN-LO PAYLOAD[LEN]
 *
 * METHOD indexes methods[] (mod its size).  PAYLOAD is one request message
 * the harness prefixes with the gRPC length prefix, or with FLAG_RAW the
 * whole request body as is (several prefixed messages for client
 * streaming, or broken framing).  Each call is a new stream (1, 3, 5...);
 * DATA frames carry at most 7 bytes with FLAG_SPLIT.  A raw input (first
 * byte below 0x80: a frame header's length) is sent as is. */
enum {
	FLAG_RAW = 1,	  /* payload is the body, no prefix added */
	FLAG_OPEN = 2,	  /* no END_STREAM: the call stays open */
	FLAG_TIMEOUT = 4, /* a grpc-timeout, picked by the length's low bits */
	FLAG_REQMETA = 8, /* a valid requestmetadata-bin */
	FLAG_BADBIN = 16, /* a -bin header that is not base64 */
	FLAG_SPLIT = 32,  /* DATA frames of at most 7 bytes */
	FLAG_NOCTYPE = 64 /* no content-type (not gRPC) */
};

static const char *const methods[] = {
	"/grpc.health.v1.Health/Check",
	"/grpc.health.v1.Health/Watch",
	"/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
	"/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
	"/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
	"/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs",
	"/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree",
	"/google.bytestream.ByteStream/Read",
	"/google.bytestream.ByteStream/Write",
	"/google.bytestream.ByteStream/QueryWriteStatus",
	"/fuzz.Echo/Echo",
	"/build.bazel.remote.execution.v2.ContentAddressableStorage/SplitBlob",
	"/no.Such/Method",
};

static void frame_hdr(struct evbuffer *out, size_t len, uint8_t type, uint8_t flags, uint32_t id)
{
	uint8_t h[9] = {
		(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len,       type,	   flags,
		(uint8_t)(id >> 24),  (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id};
	evbuffer_add(out, h, sizeof(h));
}

static void add_call(struct evbuffer *out, nghttp2_hd_deflater *hd, uint32_t id, uint8_t m,
		     uint8_t flags, const uint8_t *p, size_t len)
{
	/* RequestMetadata{tool_invocation_id: "fuzz"}, base64. */
	static const char *const timeouts[] = {"1n", "50u", "1m", "99999999H"};
	nghttp2_nv nv[10];
	size_t n = 0;
#define NV(k, v)                                                                                   \
	nv[n++] = (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v),               \
			       NGHTTP2_NV_FLAG_NONE}
	NV(":method", "POST");
	NV(":scheme", "http");
	NV(":path", methods[m % (sizeof(methods) / sizeof(methods[0]))]);
	NV(":authority", "fuzz");
	if (!(flags & FLAG_NOCTYPE))
		NV("content-type", "application/grpc");
	NV("te", "trailers");
	if (flags & FLAG_TIMEOUT)
		NV("grpc-timeout", timeouts[len & 3]);
	if (flags & FLAG_REQMETA)
		NV("build.bazel.remote.execution.v2.requestmetadata-bin", "GgRmdXp6");
	if (flags & FLAG_BADBIN)
		NV("x-thing-bin", "!!!");
#undef NV
	uint8_t block[1024];
	ssize_t bl = nghttp2_hd_deflate_hd(hd, block, sizeof(block), nv, n);
	if (bl < 0)
		abort();
	bool end = !(flags & FLAG_OPEN);
	uint8_t prefix[5];
	size_t body = len + (flags & FLAG_RAW ? 0 : 5);
	frame_hdr(out, (size_t)bl, 0x1, 0x4 | (end && body == 0 ? 0x1 : 0), id);
	evbuffer_add(out, block, (size_t)bl);
	if (!(flags & FLAG_RAW)) {
		grpc_prefix(prefix, false, (uint32_t)len);
		frame_hdr(out, 5, 0x0, end && len == 0 ? 0x1 : 0, id);
		evbuffer_add(out, prefix, 5);
	}
	size_t max = flags & FLAG_SPLIT ? 7 : 16384;
	for (size_t off = 0; off < len;) {
		size_t k = len - off < max ? len - off : max;
		frame_hdr(out, k, 0x0, end && off + k == len ? 0x1 : 0, id);
		evbuffer_add(out, p + off, k);
		off += k;
	}
}

/* Frames for a structured input (see above) into out. */
static void build_calls(struct evbuffer *out, const uint8_t *data, size_t size)
{
	nghttp2_hd_deflater *hd;
	if (nghttp2_hd_deflate_new(&hd, 4096) != 0)
		abort();
	uint32_t id = 1;
	size_t off = 1;
	while (off + 4 <= size && id < 200) {
		uint8_t m = data[off], flags = data[off + 1];
		size_t len = (size_t)data[off + 2] << 8 | data[off + 3];
		off += 4;
		if (len > size - off)
			len = size - off;
		add_call(out, hd, id, m, flags, data + off, len);
		off += len;
		id += 2;
	}
	nghttp2_hd_deflate_del(hd);
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
	if (size > 0 && data[0] >= 0x80)
		build_calls(bufferevent_get_output(pair[1]), data, size);
	else
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
