/*
 * call.c - server-side gRPC calls (see call.h).  Owns request header
 * validation, message reassembly and decoding, deadlines, response framing,
 * trailers (Trailers-Only for early errors) and the access log.  Handlers
 * are found through the lookup the services inject (call_set_lookup), and
 * metadata only they understand is decoded by their hook; this file knows
 * no service.
 */
#include "rpc/call.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/arena.h"
#include "core/cfg.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/pbwire.h"
#include "transport/h2.h"

struct md {
	char *key;
	char *val; /* decoded for -bin keys; NUL-terminated either way */
	size_t len;
};

struct call {
	uint64_t conn_id; /* LOG_STREAM's ids, kept after the stream is gone */
	int32_t stream_id;
	enum call_state state;
	int refs;
	struct h2_stream *stream; /* NULL once the stream is gone */
	const struct rpc_method *m;
	char *path;
	char *peer; /* the connection's address (the access log's peer=) */
	char *tls_identity; /* the verified client certificate's identity, or NULL */
	const struct cfg_listen *listen; /* the listener it came in on (services:) */
	struct grpc_reader rd;
	/* Request messages are decoded into the arena (one bump allocator,
	 * not a malloc per string and sub-message); it is reset when the
	 * handler returns without taking its message, else freed with the
	 * call.  pba is the protobuf-c view of it. */
	struct arena arena;
	ProtobufCAllocator pba;
	ProtobufCMessage *req; /* buffered request of a unary-request call */
	uint64_t nreq;
	bool taken;    /* the handler kept the request it is being handed */
	bool kept_any; /* a streaming handler kept one: no reset until the end */
	bool half_closed;
	bool headers_sent;
	bool hold_input; /* call_hold_input */
	struct event *deadline_ev;
	/* Request input limits: unary/server-streaming calls must half-close
	 * within half_close_us, streaming ones send a message every idle_us. */
	struct event *input_ev;
	uint64_t released; /* request bytes handed back to h2 (consumed) */
	size_t req_raw;	   /* wire bytes of c->req, held until it is handled */
	int64_t start_mono, deadline_mono;
	void *data;
	struct md *md;
	size_t nmd;
	struct call_log_fields logf;
	void *auth; /* call_set_auth */
	void (*auth_free)(void *);
	uint64_t bytes_in, bytes_out;
	struct call *prev, *next; /* active list */
	bool on_active;
};

static struct {
	size_t max_recv, max_send;
	int64_t max_call_us;
	bool access_log;
	struct event_base *base;
	int64_t half_close_us, idle_us;
} lim = {16 << 20, 16 << 20, 3600LL * 1000000, false, NULL, 300LL * 1000000, 300LL * 1000000};

static call_lookup_fn lookup;
static call_metadata_fn decode_metadata;
static call_auth_fn authenticate;

static struct call *active;
static size_t nactive;

static void *pb_alloc(void *ud, size_t n)
{
	(void)ud;
	return xmalloc(n);
}
static void pb_free(void *ud, void *p)
{
	(void)ud;
	free(p);
}
ProtobufCAllocator call_pb_allocator = {pb_alloc, pb_free, NULL};

static void *arena_pb_alloc(void *ud, size_t n)
{
	return arena_alloc(ud, n);
}
/* Arena memory goes all at once (call_release_arena / call_unref). */
static void arena_pb_free(void *ud, void *p)
{
	(void)ud;
	(void)p;
}

void *call_alloc(struct call *c, size_t n)
{
	return arena_alloc(&c->arena, n);
}

char *call_strndup(struct call *c, const char *s, size_t n)
{
	return arena_strndup(&c->arena, s, n);
}

/* The handler is done with the request it was handed (and did not take
 * it): everything in the arena goes, unless an earlier message of this
 * call was taken and still lives there. */
static void release_request(struct call *c)
{
	if (c->taken)
		c->kept_any = true;
	else if (!c->kept_any)
		arena_reset(&c->arena);
}

static const char *const state_names[] = {"HEADERS", "ACTIVE", "FINISHED", "CANCELLED"};

const char *call_state_name(enum call_state s)
{
	return s <= CALL_CANCELLED ? state_names[s] : "?";
}

void call_configure(const struct cfg *cfg)
{
	lim.max_recv = (size_t)cfg->grpc_max_recv_message_size;
	lim.max_send = (size_t)cfg->grpc_max_send_message_size;
	lim.max_call_us = cfg->grpc_max_call_duration_us;
	lim.access_log = cfg->access_log;
	lim.half_close_us = cfg->limits_half_close_timeout_us;
	lim.idle_us = cfg->limits_request_idle_timeout_us;
}

void call_set_base(struct event_base *base)
{
	lim.base = base;
}

void call_set_lookup(call_lookup_fn fn)
{
	lookup = fn;
}

void call_set_metadata_decoder(call_metadata_fn fn)
{
	decode_metadata = fn;
}

void call_set_authenticator(call_auth_fn fn)
{
	authenticate = fn;
}

void call_set_auth(struct call *c, void *p, void (*free_fn)(void *))
{
	if (c->auth && c->auth_free)
		c->auth_free(c->auth);
	c->auth = p;
	c->auth_free = free_fn;
}

void *call_auth(const struct call *c)
{
	return c->auth;
}

/* The method-level check before the handler sees its first message. */
static bool authorized(struct call *c, const ProtobufCMessage *msg)
{
	return !c->m->authorize || c->nreq > 1 || c->m->authorize(c, msg);
}

/* ---- state -------------------------------------------------------------- */

static void set_state(struct call *c, enum call_state to)
{
	static const bool legal[4][4] = {
		/* to:      HEADERS ACTIVE FINISHED CANCELLED */
		/* HEADERS */ {false, true, true, true},
		/* ACTIVE */ {false, false, true, true},
		/* FINISHED */ {false, false, false, false},
		/* CANCELLED */ {false, false, false, false},
	};
	if (!legal[c->state][to]) {
		LOGE("call", LOG_STREAM " illegal transition from %s to %s", c->conn_id,
		     c->stream_id, call_state_name(c->state), call_state_name(to));
		abort();
	}
	LOGD("call", LOG_STREAM " %s from %s to %s", c->conn_id, c->stream_id,
	     c->path ? c->path : "-", call_state_name(c->state), call_state_name(to));
	c->state = to;
	if ((to == CALL_FINISHED || to == CALL_CANCELLED) && c->on_active) {
		if (c->prev)
			c->prev->next = c->next;
		else
			active = c->next;
		if (c->next)
			c->next->prev = c->prev;
		c->on_active = false;
		nactive--;
		if (c->deadline_ev)
			event_del(c->deadline_ev);
		if (c->input_ev)
			event_del(c->input_ev);
	}
}

bool call_done(const struct call *c)
{
	return c->state >= CALL_FINISHED;
}
void call_set_data(struct call *c, void *data)
{
	c->data = data;
}
void *call_data(const struct call *c)
{
	return c->data;
}
const char *call_peer(const struct call *c)
{
	return c->peer;
}
const char *call_tls_identity(const struct call *c)
{
	return c->tls_identity;
}
uint64_t call_conn_id(const struct call *c)
{
	return c->conn_id;
}
int32_t call_stream_id(const struct call *c)
{
	return c->stream_id;
}
const struct rpc_method *call_method(const struct call *c)
{
	return c->m;
}
size_t call_active_count(void)
{
	return nactive;
}

size_t call_pending(const struct call *c)
{
	return c->stream ? h2_stream_pending(c->stream) : 0;
}

void call_want_writable(struct call *c)
{
	if (c->stream)
		h2_stream_want_writable(c->stream);
}

int64_t call_remaining_us(const struct call *c)
{
	if (!c->deadline_mono)
		return INT64_MAX;
	int64_t r = c->deadline_mono - mono_us();
	return r > 0 ? r : 0;
}

void call_ref(struct call *c)
{
	c->refs++;
}

void call_unref(struct call *c)
{
	if (--c->refs > 0)
		return;
	if (c->on_active) {
		LOGE("call", LOG_STREAM " freed while %s", c->conn_id, c->stream_id,
		     call_state_name(c->state));
		abort();
	}
	grpc_reader_free(&c->rd);
	c->req = NULL; /* in the arena */
	arena_free(&c->arena);
	if (c->deadline_ev)
		event_free(c->deadline_ev);
	if (c->input_ev)
		event_free(c->input_ev);
	for (size_t i = 0; i < c->nmd; i++) {
		free(c->md[i].key);
		free(c->md[i].val);
	}
	free(c->md);
	free(c->logf.invocation_id);
	free(c->logf.identity);
	if (c->auth && c->auth_free)
		c->auth_free(c->auth);
	free(c->path);
	free(c->peer);
	free(c->tls_identity);
	free(c);
}

const char *call_metadata(const struct call *c, const char *key, size_t *len)
{
	for (size_t i = 0; i < c->nmd; i++) {
		if (strcmp(c->md[i].key, key) == 0) {
			if (len)
				*len = c->md[i].len;
			return c->md[i].val;
		}
	}
	return NULL;
}

/* ---- request input budget ------------------------------------------------- */

/* Hand h2 back the request bytes the call no longer holds, reopening the
 * stream's flow-control window: all of them once the call is done, else
 * everything but the message being reassembled and a unary request not yet
 * handled (so a peer that never half-closes can't make us hold more than
 * its window). */
static void release_input(struct call *c)
{
	if (!c->stream || (c->hold_input && !call_done(c)))
		return;
	uint64_t held = call_done(c) ? 0 : grpc_reader_buffered(&c->rd) + c->req_raw;
	if (c->bytes_in > c->released + held) {
		size_t n = (size_t)(c->bytes_in - c->released - held);
		c->released += n;
		h2_stream_consume(c->stream, n);
	}
}

void call_hold_input(struct call *c, bool hold)
{
	c->hold_input = hold;
	if (!hold)
		release_input(c);
}

/* ---- responses ------------------------------------------------------------ */

static void access_log(struct call *c, int code)
{
	metrics_rpc_done(c->m ? c->path : NULL, grpc_code_name(code), mono_us() - c->start_mono);
	if (!lim.access_log)
		return;
	struct log_access a = {
		.peer = c->peer,
		.conn = c->conn_id,
		.stream = c->stream_id,
		.method = c->path,
		.status = code,
		.duration_ms = (double)(mono_us() - c->start_mono) / 1000.0,
		.bytes_in = c->bytes_in,
		.bytes_out = c->bytes_out,
		.invocation_id = c->logf.invocation_id,
		.identity = c->logf.identity,
	};
	log_access(&a);
}

static void send_headers(struct call *c)
{
	if (c->headers_sent || !c->stream)
		return;
	struct h2_hdr h[] = {
		h2_hdr_make(":status", "200"),
		h2_hdr_make("content-type", "application/grpc"),
		h2_hdr_make("grpc-accept-encoding", "identity"),
	};
	c->headers_sent = true;
	h2_stream_respond(c->stream, h, ARRAY_LEN(h), false);
}

int call_send(struct call *c, const ProtobufCMessage *msg)
{
	if (c->state != CALL_ACTIVE || !c->stream)
		return -1;
	size_t n = protobuf_c_message_get_packed_size(msg);
	if (n > lim.max_send || n > UINT32_MAX) {
		call_finish(c, GRPC_RESOURCE_EXHAUSTED,
			    "response message of %zu bytes exceeds max-send-message-size %zu", n,
			    lim.max_send);
		return -1;
	}
	send_headers(c);
	uint8_t *buf = xmalloc(n + 5);
	grpc_prefix(buf, false, (uint32_t)n);
	protobuf_c_message_pack(msg, buf + 5);
	c->bytes_out += n + 5;
	return h2_stream_write_owned(c->stream, buf, n + 5);
}

void call_send_headers(struct call *c)
{
	if (c->state == CALL_ACTIVE)
		send_headers(c);
}

void call_take_request(struct call *c)
{
	c->taken = true;
}

int call_send_owned(struct call *c, uint8_t *buf, size_t len)
{
	if (c->state != CALL_ACTIVE || !c->stream || len > lim.max_send || len > UINT32_MAX) {
		free(buf);
		if (c->state == CALL_ACTIVE && c->stream)
			call_finish(
				c, GRPC_RESOURCE_EXHAUSTED,
				"response message of %zu bytes exceeds max-send-message-size %zu",
				len, lim.max_send);
		return -1;
	}
	send_headers(c);
	grpc_prefix(buf, false, (uint32_t)len);
	c->bytes_out += len + 5;
	return h2_stream_write_owned(c->stream, buf, len + 5);
}

static void vfinish(struct call *c, int code, const struct grpc_any *details, size_t nd,
		    const char *extra_hdr, const char *fmt, va_list ap)
{
	if (call_done(c))
		return;
	char msg[1024] = "";
	if (fmt)
		vsnprintf(msg, sizeof(msg), fmt, ap);
	set_state(c, CALL_FINISHED);
	release_input(c);
	if (code != GRPC_OK)
		LOGI("call", LOG_STREAM " %s failed: %s: %s", c->conn_id, c->stream_id,
		     c->path ? c->path : "-", grpc_code_name(code), msg);
	access_log(c, code);
	if (!c->stream)
		return;

	char status[16];
	snprintf(status, sizeof(status), "%d", code);
	char *pmsg = msg[0] ? grpc_percent_encode(msg) : NULL;
	char *det = nd ? grpc_status_details_bin(code, msg, details, nd) : NULL;
	struct h2_hdr h[8];
	size_t n = 0;
	bool trailers_only = !c->headers_sent;
	if (trailers_only) {
		h[n++] = h2_hdr_make(":status", "200");
		h[n++] = h2_hdr_make("content-type", "application/grpc");
	}
	h[n++] = h2_hdr_make("grpc-status", status);
	if (pmsg)
		h[n++] = h2_hdr_make("grpc-message", pmsg);
	if (det)
		h[n++] = h2_hdr_make("grpc-status-details-bin", det);
	if (extra_hdr)
		h[n++] = h2_hdr_make("grpc-accept-encoding", extra_hdr);
	if (trailers_only) {
		c->headers_sent = true;
		h2_stream_respond(c->stream, h, n, true);
	} else {
		h2_stream_end(c->stream, h, n);
	}
	free(pmsg);
	free(det);
}

void call_finish(struct call *c, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfinish(c, code, NULL, 0, NULL, fmt, ap);
	va_end(ap);
}

void call_finish_details(struct call *c, int code, const struct grpc_any *details, size_t ndetails,
			 const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfinish(c, code, details, ndetails, NULL, fmt, ap);
	va_end(ap);
}

static void finish_hdr(struct call *c, int code, const char *hdr, const char *fmt, ...)
	PRINTF_LIKE(4, 5);
static void finish_hdr(struct call *c, int code, const char *hdr, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfinish(c, code, NULL, 0, hdr, fmt, ap);
	va_end(ap);
}

void call_reply(struct call *c, const ProtobufCMessage *msg)
{
	if (call_send(c, msg) == 0)
		call_finish(c, GRPC_OK, NULL);
}

/* An HTTP-level refusal (not a gRPC call at all). */
static void http_refuse(struct call *c, const char *http_status, int code, const char *msg)
{
	set_state(c, CALL_FINISHED);
	LOGI("call", LOG_STREAM " refused with HTTP %s: %s", c->conn_id, c->stream_id, http_status,
	     msg);
	char status[16];
	snprintf(status, sizeof(status), "%d", code);
	char *pmsg = grpc_percent_encode(msg);
	struct h2_hdr h[] = {
		h2_hdr_make(":status", http_status),
		h2_hdr_make("content-type", "application/grpc"),
		h2_hdr_make("grpc-status", status),
		h2_hdr_make("grpc-message", pmsg),
	};
	c->headers_sent = true;
	h2_stream_respond(c->stream, h, ARRAY_LEN(h), true);
	free(pmsg);
}

/* ---- cancellation and deadlines ------------------------------------------ */

static void cancel(struct call *c, const char *why)
{
	if (call_done(c))
		return;
	LOGI("call", LOG_STREAM " %s cancelled: %s", c->conn_id, c->stream_id,
	     c->path ? c->path : "-", why);
	bool was_active = c->state == CALL_ACTIVE;
	set_state(c, CALL_CANCELLED);
	release_input(c);
	access_log(c, GRPC_CANCELLED);
	if (was_active && c->m && c->m->on_cancel) {
		call_ref(c);
		c->m->on_cancel(c);
		call_unref(c);
	}
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct call *c = arg;
	if (call_done(c))
		return;
	call_ref(c);
	if (c->state == CALL_ACTIVE && c->m && c->m->on_cancel)
		c->m->on_cancel(c);
	char buf[32];
	call_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded after %s",
		    fmt_duration(mono_us() - c->start_mono, buf, sizeof(buf)));
	call_unref(c);
}

void call_cancel_all(int code, const char *msg)
{
	while (active) {
		struct call *c = active;
		call_ref(c);
		if (c->state == CALL_ACTIVE && c->m && c->m->on_cancel)
			c->m->on_cancel(c);
		call_finish(c, code, "%s", msg);
		call_unref(c);
	}
}

/* A request that stops coming: a unary (or server-streaming) call whose
 * client never half-closes, or a streaming call with no message for a
 * while, would hold its stream, buffer and handler state until the call
 * deadline (an hour by default). */
static void layer_fail(struct call *c, int code, const char *fmt, ...) PRINTF_LIKE(3, 4);

static bool single_request(const struct call *c)
{
	return c->m->kind == RPC_UNARY || c->m->kind == RPC_SERVER_STREAM;
}

static void input_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct call *c = arg;
	if (c->state != CALL_ACTIVE || c->half_closed)
		return;
	char buf[32];
	if (single_request(c))
		layer_fail(c, GRPC_DEADLINE_EXCEEDED,
			   "the client did not finish sending its request (half-close) within %s "
			   "(config limits.half-close-timeout)",
			   fmt_duration(lim.half_close_us, buf, sizeof(buf)));
	else
		layer_fail(c, GRPC_DEADLINE_EXCEEDED,
			   "no request message from the client for %s "
			   "(config limits.request-idle-timeout)",
			   fmt_duration(lim.idle_us, buf, sizeof(buf)));
}

/* (Re)start the input timer of an ACTIVE call still receiving: once for
 * single-request calls, after every message for streaming ones. */
static void arm_input_timer(struct call *c)
{
	int64_t us = single_request(c) ? lim.half_close_us : lim.idle_us;
	if (c->state != CALL_ACTIVE || c->half_closed || us <= 0)
		return;
	if (!c->input_ev)
		c->input_ev = event_new(lim.base, -1, 0, input_timeout_cb, c);
	struct timeval tv = {us / 1000000, us % 1000000};
	event_add(c->input_ev, &tv);
}

/* ---- request path ------------------------------------------------------------ */

static bool content_type_ok(const char *ct)
{
	static const char pfx[] = "application/grpc";
	if (!ct || strncmp(ct, pfx, sizeof(pfx) - 1) != 0)
		return false;
	char next = ct[sizeof(pfx) - 1];
	return next == '\0' || next == '+' || next == ';';
}

/* Collect application metadata; -bin values are base64-decoded.  Returns
 * the name of a header whose base64 is invalid, or NULL. */
static const char *collect_metadata(struct call *c)
{
	size_t n;
	const struct h2_hdr *h = h2_stream_headers(c->stream, &n);
	c->md = xcalloc(n ? n : 1, sizeof(*c->md));
	for (size_t i = 0; i < n; i++) {
		if (h[i].name[0] == ':')
			continue;
		struct md *m = &c->md[c->nmd];
		if (str_endswith(h[i].name, "-bin")) {
			size_t len;
			uint8_t *v = b64_decode(h[i].value, h[i].valuelen, &len);
			if (!v)
				return h[i].name;
			m->val = xrealloc(v, len + 1);
			m->val[len] = '\0';
			m->len = len;
		} else {
			m->val = xstrndup(h[i].value, h[i].valuelen);
			m->len = h[i].valuelen;
		}
		m->key = xstrdup(h[i].name);
		c->nmd++;
	}
	if (decode_metadata)
		decode_metadata(c, &c->logf);
	return NULL;
}

/* A listener with services: serves only those.  The service of path
 * "/pkg.Service/Method" when the listener does not serve it (malloc'd),
 * else NULL. */
static char *listener_refuses(const struct call *c)
{
	const struct cfg_listen *l = c->listen;
	if (!l || l->n_services == 0)
		return NULL;
	const char *p = c->path[0] == '/' ? c->path + 1 : c->path;
	const char *slash = strrchr(p, '/');
	size_t n = slash ? (size_t)(slash - p) : strlen(p);
	for (int i = 0; i < l->n_services; i++)
		if (strlen(l->services[i]) == n && !memcmp(l->services[i], p, n))
			return NULL;
	return xstrndup(p, n);
}

static void start_call(struct call *c)
{
	struct h2_stream *s = c->stream;
	if (h2_stream_headers_overflow(s)) {
		call_finish(c, GRPC_RESOURCE_EXHAUSTED,
			    "request headers exceed max-header-list-size");
		return;
	}
	const char *method = h2_stream_header(s, ":method");
	const char *path = h2_stream_header(s, ":path");
	c->path = xstrdup(path ? path : "");
	if (!method || strcmp(method, "POST") != 0) {
		http_refuse(c, "405", GRPC_UNIMPLEMENTED,
			    "gRPC requires the POST method; this port speaks gRPC only");
		return;
	}
	if (!content_type_ok(h2_stream_header(s, "content-type"))) {
		http_refuse(c, "415", GRPC_UNKNOWN,
			    "content-type must be application/grpc; this port speaks gRPC only");
		return;
	}
	char *svc = listener_refuses(c);
	if (svc) {
		call_finish(c, GRPC_PERMISSION_DENIED, "service %s is not served on this listener",
			    svc);
		free(svc);
		return;
	}
	c->m = lookup ? lookup(c->path) : NULL;
	if (!c->m) {
		call_finish(c, GRPC_UNIMPLEMENTED,
			    "unknown method %s: this server does not "
			    "implement it",
			    c->path);
		return;
	}
	if (!c->m->on_message) {
		call_finish(c, GRPC_UNIMPLEMENTED,
			    "method %s is not implemented by this "
			    "server yet",
			    c->path);
		return;
	}
	const char *bad = collect_metadata(c);
	if (bad) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "header %s is not valid base64", bad);
		return;
	}
	if (authenticate && authenticate(c, &c->logf) != 0)
		return;
	int64_t timeout = lim.max_call_us;
	const char *to = h2_stream_header(s, "grpc-timeout");
	if (to) {
		int64_t t;
		if (grpc_timeout_parse(to, &t) != 0) {
			call_finish(c, GRPC_INVALID_ARGUMENT, "malformed grpc-timeout \"%s\"", to);
			return;
		}
		if (t < timeout)
			timeout = t;
	}
	if (timeout <= 0) {
		/* A zero timeout has already expired. */
		call_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded before the call started");
		return;
	}
	{
		c->deadline_mono = c->start_mono + timeout;
		c->deadline_ev = event_new(lim.base, -1, 0, deadline_cb, c);
		struct timeval tv = {timeout / 1000000, timeout % 1000000};
		event_add(c->deadline_ev, &tv);
	}
	set_state(c, CALL_ACTIVE);
	arm_input_timer(c);
}

/* Tell an ACTIVE call's handler that the call layer is ending the call
 * (it may hold state for it: an upload, a waiter), as on a client reset. */
static void notify_handler_end(struct call *c)
{
	if (c->state == CALL_ACTIVE && c->m && c->m->on_cancel) {
		call_ref(c);
		c->m->on_cancel(c);
		call_unref(c);
	}
}

static void reader_error(struct call *c)
{
	const char *enc;
	notify_handler_end(c);
	switch (c->rd.err) {
	case GRPC_READER_TOO_LARGE:
		call_finish(c, GRPC_RESOURCE_EXHAUSTED,
			    "received message larger than max (%" PRIu32 " vs. %zu bytes)",
			    c->rd.last_len, lim.max_recv);
		break;
	case GRPC_READER_COMPRESSED:
		enc = call_metadata(c, "grpc-encoding", NULL);
		if (!enc || strcmp(enc, "identity") == 0)
			call_finish(c, GRPC_INTERNAL,
				    "compressed message without a grpc-encoding header");
		else
			finish_hdr(
				c, GRPC_UNIMPLEMENTED, "identity",
				"message compressed with \"%s\"; this server accepts identity only",
				enc);
		break;
	case GRPC_READER_BAD_FLAG:
		call_finish(c, GRPC_INTERNAL, "invalid gRPC message flag byte");
		break;
	default: break;
	}
}

/* proto3 strings must be UTF-8 (a client's parser rejects a reply that
 * echoes anything else), and protobuf-c hands them to handlers
 * NUL-terminated, so an embedded NUL would silently shorten one ("\0x"
 * would name the default instance "").  Walk the wire form once and refuse
 * both.  Only called on bytes that already unpacked cleanly, so the
 * framing is known to be sound. */
/* True when s[0..len) is NUL-free ASCII, 8 bytes at a time: digests,
 * names and paths nearly always are, and the byte-wise UTF-8 walk cost a
 * fifth of a 1,000-digest FindMissingBlobs.  False sends the string to
 * the full check. */
static bool ascii_nonul(const uint8_t *s, size_t len)
{
	const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	uint64_t acc = 0;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v;
		memcpy(&v, s + i, 8);
		/* high bit set, or a zero byte ((v - 1) & ~v sets its high bit) */
		acc |= v | ((v - ones) & ~v);
	}
	for (; i < len; i++)
		acc |= s[i] == 0 ? 0x80 : s[i];
	return (acc & highs) == 0;
}

/* Name of the first string field that is not NUL-free UTF-8, or NULL. */
static const char *bad_string_field(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
				    size_t len, int depth)
{
	struct pbw r;
	struct pbw_field fld;
	if (depth > 32)
		return NULL;
	pbw_init(&r, p, len);
	while (pbw_next(&r, &fld) == 1) {
		if (fld.wt != PBW_LEN)
			continue;
		const ProtobufCFieldDescriptor *f =
			protobuf_c_message_descriptor_get_field(desc, fld.num);
		if (!f)
			continue;
		if (f->type == PROTOBUF_C_TYPE_STRING && !ascii_nonul(fld.data, fld.len) &&
		    !utf8_valid((const char *)fld.data, fld.len))
			return f->name;
		if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
			const char *bad = bad_string_field(f->descriptor, fld.data, fld.len, depth + 1);
			if (bad)
				return bad;
		}
	}
	return NULL;
}

bool call_string_ok(const uint8_t *s, size_t len)
{
	return ascii_nonul(s, len) || utf8_valid((const char *)s, len);
}

const char *call_bad_string_field(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
				  size_t len)
{
	return bad_string_field(desc, data, len, 0);
}

/* The call layer ends an ACTIVE call on its own (bad message, framing):
 * the handler may hold state for it (an upload, a waiter), so it hears
 * about it first, exactly as on a client reset. */
static void layer_fail(struct call *c, int code, const char *fmt, ...)
{
	if (call_done(c))
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	call_ref(c);
	notify_handler_end(c);
	call_finish(c, code, "%s", msg);
	call_unref(c);
}

static int on_msg(void *arg, const uint8_t *data, size_t len)
{
	struct call *c = arg;
	if (c->state != CALL_ACTIVE)
		return 1;
	const char *bad = NULL;
	ProtobufCMessage *msg = c->m->decode
					? c->m->decode(c, data, len, &bad)
					: protobuf_c_message_unpack(c->m->req, &c->pba, len, data);
	if (!msg && !bad) {
		layer_fail(c, GRPC_INVALID_ARGUMENT, "request is not a valid %s message",
			   c->m->req->name);
		return 1;
	}
	if (!c->m->decode)
		bad = bad_string_field(c->m->req, data, len, 0);
	if (bad) {
		layer_fail(c, GRPC_INVALID_ARGUMENT,
			   "string field %s is not valid UTF-8 or contains a NUL byte", bad);
		return 1;
	}
	c->nreq++;
	if (c->m->kind == RPC_UNARY || c->m->kind == RPC_SERVER_STREAM) {
		if (c->req) {
			call_finish(c, GRPC_INTERNAL, "a second request message on a %s call",
				    c->m->kind == RPC_UNARY ? "unary" : "server-streaming");
			return 1;
		}
		c->req = msg;
		c->req_raw = len + 5;
		return 0;
	}
	arm_input_timer(c);
	c->taken = false;
	if (authorized(c, msg))
		c->m->on_message(c, msg);
	/* A hand-decoded streaming message may point into data (call.h). */
	assert(!(c->taken && c->m->decode));
	release_request(c);
	return call_done(c);
}

static void s_on_headers(struct h2_stream *s, bool trailers)
{
	struct call *c = h2_stream_user(s);
	if (!trailers && c->state == CALL_HEADERS)
		start_call(c);
}

static void s_on_data(struct h2_stream *s, const uint8_t *data, size_t len)
{
	struct call *c = h2_stream_user(s);
	c->bytes_in += len;
	if (c->state != CALL_ACTIVE) {
		release_input(c);
		return;
	}
	call_ref(c);
	if (grpc_reader_feed(&c->rd, data, len, on_msg, c) != GRPC_READER_OK &&
	    c->state == CALL_ACTIVE)
		reader_error(c);
	size_t mlen;
	if (c->state == CALL_ACTIVE && grpc_reader_pending(&c->rd, &mlen)) {
		/* A message in progress: its window must carry all of it. */
		size_t have = grpc_reader_buffered(&c->rd) - 5;
		char *err = NULL;
		if (h2_stream_want_window(s, mlen + 5, mlen - have, &err) != 0) {
			layer_fail(c, GRPC_RESOURCE_EXHAUSTED, "%s", err);
			free(err);
		}
	}
	release_input(c);
	call_unref(c);
}

static void s_on_end(struct h2_stream *s)
{
	struct call *c = h2_stream_user(s);
	c->half_closed = true;
	if (c->input_ev)
		event_del(c->input_ev);
	if (c->state != CALL_ACTIVE)
		return;
	if (grpc_reader_partial(&c->rd)) {
		layer_fail(c, GRPC_INTERNAL,
			   "request stream ended inside a message (truncated gRPC frame)");
		return;
	}
	call_ref(c);
	if (c->m->kind == RPC_UNARY || c->m->kind == RPC_SERVER_STREAM) {
		if (!c->req) {
			call_finish(c, GRPC_INTERNAL, "no request message on a %s call",
				    c->m->kind == RPC_UNARY ? "unary" : "server-streaming");
		} else {
			ProtobufCMessage *msg = c->req;
			c->req = NULL;
			c->req_raw = 0;
			release_input(c);
			c->taken = false;
			if (authorized(c, msg))
				c->m->on_message(c, msg);
			release_request(c);
		}
	} else if (c->m->on_half_close) {
		c->m->on_half_close(c);
	}
	call_unref(c);
}

static void s_on_writable(struct h2_stream *s)
{
	struct call *c = h2_stream_user(s);
	if (c->state == CALL_ACTIVE && c->m->on_writable) {
		call_ref(c);
		c->m->on_writable(c);
		call_unref(c);
	}
}

static void s_on_over_budget(struct h2_stream *s, const char *why)
{
	layer_fail(h2_stream_user(s), GRPC_RESOURCE_EXHAUSTED, "%s", why);
}

static void s_on_close(struct h2_stream *s, uint32_t error)
{
	struct call *c = h2_stream_user(s);
	if (!call_done(c))
		cancel(c, error ? h2_error_string(error) : "stream closed");
	c->stream = NULL;
	call_unref(c);
}

static const struct h2_stream_ops call_ops = {
	.on_headers = s_on_headers,
	.on_data = s_on_data,
	.on_end = s_on_end,
	.on_writable = s_on_writable,
	.on_close = s_on_close,
	.on_over_budget = s_on_over_budget,
};

void call_accept(struct h2_stream *s, void *arg)
{
	(void)arg;
	struct call *c = xcalloc(1, sizeof(*c));
	c->conn_id = h2_conn_id(h2_stream_conn(s));
	c->stream_id = h2_stream_id(s);
	c->refs = 1;
	c->stream = s;
	c->state = CALL_HEADERS;
	c->start_mono = mono_us();
	c->peer = xstrdup(h2_conn_peer(h2_stream_conn(s)));
	const char *id = h2_conn_tls_identity(h2_stream_conn(s));
	c->tls_identity = id ? xstrdup(id) : NULL;
	c->listen = h2_conn_listen(h2_stream_conn(s));
	grpc_reader_init(&c->rd, lim.max_recv);
	arena_init(&c->arena);
	c->pba = (ProtobufCAllocator){arena_pb_alloc, arena_pb_free, &c->arena};
	c->next = active;
	if (active)
		active->prev = c;
	active = c;
	c->on_active = true;
	nactive++;
	h2_stream_set_ops(s, &call_ops, c);
}
