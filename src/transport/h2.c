/*
 * h2.c - HTTP/2 connections over libevent bufferevents, driven by nghttp2:
 * the connection state machine, session set-up, input (the preface check,
 * nghttp2_session_mem_recv and its callbacks), stream lifecycle, idle
 * timeouts and teardown.  Output and backpressure live in h2_out.c.
 *
 * One struct h2_conn per TCP/unix connection, server or client side.
 * Streams and connections are explicit objects owned here; the layer above
 * (grpc server calls, client calls) attaches ops per stream.
 */
#include "transport/h2.h"
#include "transport/h2_int.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "transport/tls.h"

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof(PREFACE) - 1)

static const char NOT_H2_REPLY[] = "HTTP/1.1 400 Bad Request\r\n"
				   "Content-Type: text/plain\r\n"
				   "Connection: close\r\n"
				   "\r\n"
				   "This port speaks gRPC over HTTP/2 (h2c with prior knowledge).\n"
				   "Use a gRPC client, e.g. grpc://HOST:PORT in Bazel.\n";

static uint64_t next_conn_id = 1;

static const char *const conn_state_names[] = {"PREFACE", "OPEN", "GOAWAY", "DRAINING", "CLOSED"};

static const char *h2_conn_state_name(enum h2_conn_state st)
{
	return st <= H2_CONN_CLOSED ? conn_state_names[st] : "?";
}

/* The one place a connection changes state: asserts the transition is
 * legal and logs it. */
static void conn_set_state(struct h2_conn *c, enum h2_conn_state to)
{
	static const bool legal[5][5] = {
		/* to:          PREFACE OPEN   GOAWAY DRAINING CLOSED */
		/* PREFACE */ {false, true, false, true, true},
		/* OPEN */ {false, false, true, true, true},
		/* GOAWAY */ {false, false, false, true, true},
		/* DRAINING */ {false, false, false, false, true},
		/* CLOSED */ {false, false, false, false, false},
	};
	if (!legal[c->state][to]) {
		LOGE("h2", LOG_CONN " illegal transition from %s to %s", c->id,
		     h2_conn_state_name(c->state), h2_conn_state_name(to));
		abort();
	}
	LOGD("h2", LOG_CONN " from %s to %s", c->id, h2_conn_state_name(c->state),
	     h2_conn_state_name(to));
	c->state = to;
}

_Static_assert((int)H2_NO_ERROR == (int)NGHTTP2_NO_ERROR &&
		       (int)H2_INTERNAL_ERROR == (int)NGHTTP2_INTERNAL_ERROR &&
		       (int)H2_REFUSED_STREAM == (int)NGHTTP2_REFUSED_STREAM &&
		       (int)H2_CANCEL == (int)NGHTTP2_CANCEL,
	       "h2.h error codes match nghttp2's");

const char *h2_error_string(uint32_t error)
{
	return nghttp2_http2_strerror(error);
}

/* ---- headers ---------------------------------------------------------- */

static void hdrs_clear(struct h2_stream *s)
{
	/* name and value share one allocation (see hdrs_add). */
	for (size_t i = 0; i < s->nhdrs; i++)
		free(s->hdrs[i].name);
	s->nhdrs = 0;
	s->hdrbytes = 0;
	s->hdr_overflow = false;
}

static void hdrs_add(struct h2_stream *s, const uint8_t *name, size_t nl, const uint8_t *value,
		     size_t vl)
{
	/* RFC 9113's accounting: name + value + 32 per field. */
	s->hdrbytes += nl + vl + 32;
	if (s->hdrbytes > s->conn->st.max_header_list_size) {
		s->hdr_overflow = true;
		return;
	}
	if (s->nhdrs == s->caphdrs) {
		s->caphdrs = s->caphdrs ? s->caphdrs * 2 : 16;
		s->hdrs = xrealloc(s->hdrs, s->caphdrs * sizeof(*s->hdrs));
	}
	struct h2_hdr *h = &s->hdrs[s->nhdrs++];
	/* One allocation per field: this runs for every header of every
	 * request. */
	char *blk = xmalloc(nl + vl + 2);
	memcpy(blk, name, nl);
	blk[nl] = '\0';
	memcpy(blk + nl + 1, value, vl);
	blk[nl + 1 + vl] = '\0';
	h->name = blk;
	h->value = blk + nl + 1;
	h->namelen = nl;
	h->valuelen = vl;
}

/* ---- streams ---------------------------------------------------------- */

static void budget_forget(struct h2_stream *s);

static struct h2_stream *stream_new(struct h2_conn *c, int32_t id)
{
	struct h2_stream *s = xcalloc(1, sizeof(*s));
	s->conn = c;
	s->id = id;
	s->out = evbuffer_new();
	if (!s->out)
		abort();
	s->next = c->streams;
	if (c->streams)
		c->streams->prev = s;
	c->streams = s;
	c->nstreams++;
	metrics_std.streams++;
	if (c->idle_ev)
		event_del(c->idle_ev);
	return s;
}

static void wlist_remove(struct h2_conn *c, struct h2_stream *s)
{
	if (!s->on_wlist)
		return;
	for (struct h2_stream **pp = &c->wlist; *pp; pp = &(*pp)->wnext) {
		if (*pp == s) {
			*pp = s->wnext;
			break;
		}
	}
	s->on_wlist = false;
}

static void arm_idle(struct h2_conn *c)
{
	if (c->idle_ev && c->st.idle_timeout_us > 0 && c->nstreams == 0 &&
	    c->state != H2_CONN_CLOSED) {
		struct timeval tv = {c->st.idle_timeout_us / 1000000,
				     c->st.idle_timeout_us % 1000000};
		event_add(c->idle_ev, &tv);
	}
}

/* Tell the owner and free the stream. */
static void stream_close(struct h2_stream *s, uint32_t error)
{
	struct h2_conn *c = s->conn;
	if (s->ops && s->ops->on_close)
		s->ops->on_close(s, error);
	wlist_remove(c, s);
	if (s->prev)
		s->prev->next = s->next;
	else
		c->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	c->nstreams--;
	metrics_std.streams--;
	if (c->manual_flow)
		budget_forget(s);
	if (c->ng && s->id > 0)
		nghttp2_session_set_stream_user_data(c->ng, s->id, NULL);
	hdrs_clear(s);
	free(s->hdrs);
	for (size_t i = 0; i < s->ntrailers; i++) {
		free(s->trailers[i].name);
		free(s->trailers[i].value);
	}
	free(s->trailers);
	evbuffer_free(s->out);
	free(s);
	arm_idle(c);
}

/* ---- input budget ----------------------------------------------------------
 *
 * Server connections run nghttp2 without automatic WINDOW_UPDATE.  A
 * stream's window reopens only as the layer above releases bytes
 * (h2_stream_consume), so each stream holds at most its window.  The
 * connection window reopens on receipt while the connection and the
 * process are under their budgets; past them the bytes are "owed" and the
 * window stays shut until bytes are released, so a connection holds at most
 * its budget plus one connection window.  A message larger than the stream
 * window gets a grant (the stream window grows) when the budgets have room
 * for the rest of it, else the stream waits.  When a connection's window is
 * shut and the peer has none left, nothing on it can complete by waiting:
 * the stream holding the most bytes is ended (on_over_budget). */

#define DEFAULT_MAX_BUFFERED_CONN  ((size_t)64 << 20)
#define DEFAULT_MAX_BUFFERED_TOTAL ((size_t)512 << 20)

static struct {
	size_t max_total;
	size_t buffered, granted;
	struct list waiting; /* h2_conn.budget_link: owed > 0 or nwaiting > 0 */
	bool in_kick;
} budget = {DEFAULT_MAX_BUFFERED_TOTAL, 0, 0, LIST_INIT(budget.waiting), false};

void h2_set_max_buffered_total(size_t max)
{
	budget.max_total = max ? max : DEFAULT_MAX_BUFFERED_TOTAL;
}

size_t h2_buffered_total(void)
{
	return budget.buffered;
}

static bool conn_has_room(const struct h2_conn *c)
{
	return c->buffered < c->st.max_buffered_conn && budget.buffered < budget.max_total;
}

static void budget_wait(struct h2_conn *c)
{
	if (!list_linked(&c->budget_link))
		list_add_tail(&budget.waiting, &c->budget_link);
}

/* Try to grant the rest of s's message; true when it needs nothing more. */
static bool try_grant(struct h2_stream *s)
{
	struct h2_conn *c = s->conn;
	if (s->want_rx <= s->rx)
		return true;
	size_t need = (size_t)(s->want_rx - s->rx);
	int32_t avail = nghttp2_session_get_stream_local_window_size(c->ng, s->id);
	if (avail < 0)
		return true; /* the stream is gone from nghttp2 */
	if ((size_t)avail >= need)
		return true;
	if (c->buffered + c->granted + need > c->st.max_buffered_conn ||
	    budget.buffered + budget.granted + need > budget.max_total)
		return false;
	int32_t local = nghttp2_session_get_stream_effective_local_window_size(c->ng, s->id);
	size_t grow = need - (size_t)avail;
	if (local < 0 || (size_t)local + grow > NGHTTP2_MAX_WINDOW_SIZE)
		return true; /* can't grow further; the peer stays within its window */
	nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, s->id,
					      (int32_t)((size_t)local + grow));
	c->granted -= s->grant_left;
	budget.granted -= s->grant_left;
	s->grant_left = need;
	c->granted += need;
	budget.granted += need;
	LOGD("h2", LOG_STREAM " window grows by %zu for a message (%zu bytes to come)", c->id,
	     s->id, grow, need);
	h2_out_schedule(c);
	return true;
}

/* Reopen held windows and grant waiting streams while there is room. */
static void budget_kick(void)
{
	if (budget.in_kick || list_empty(&budget.waiting))
		return;
	budget.in_kick = true;
	struct list *pos, *tmp;
	list_for_each_safe(pos, tmp, &budget.waiting)
	{
		struct h2_conn *c = container_of(pos, struct h2_conn, budget_link);
		if (c->state == H2_CONN_CLOSED) {
			list_del(&c->budget_link);
			continue;
		}
		if (c->owed > 0 && conn_has_room(c)) {
			nghttp2_session_consume_connection(c->ng, c->owed);
			c->owed = 0;
			h2_out_schedule(c);
		}
		for (struct h2_stream *s = c->streams; s && c->nwaiting > 0; s = s->next) {
			if (s->want_rx && try_grant(s)) {
				s->want_rx = 0;
				c->nwaiting--;
			}
		}
		if (c->owed == 0 && c->nwaiting == 0)
			list_del(&c->budget_link);
	}
	budget.in_kick = false;
}

/* n bytes of s leave the budget (released by the layer above, or the
 * stream is gone). */
static void budget_release(struct h2_stream *s, size_t n, bool window)
{
	struct h2_conn *c = s->conn;
	if (n > s->unconsumed)
		n = s->unconsumed;
	if (n == 0)
		return;
	s->unconsumed -= n;
	c->buffered -= n;
	budget.buffered -= n;
	if (window && c->state != H2_CONN_CLOSED) {
		nghttp2_session_consume_stream(c->ng, s->id, n);
		h2_out_schedule(c);
	}
	budget_kick();
}

/* DATA payload for s arrived. */
static void budget_receive(struct h2_stream *s, size_t len)
{
	struct h2_conn *c = s->conn;
	s->rx += len;
	s->unconsumed += len;
	c->buffered += len;
	budget.buffered += len;
	size_t g = len < s->grant_left ? len : s->grant_left;
	s->grant_left -= g;
	c->granted -= g;
	budget.granted -= g;
	if (c->owed == 0 && conn_has_room(c)) {
		nghttp2_session_consume_connection(c->ng, len);
	} else {
		if (c->owed == 0)
			LOGD("h2", LOG_CONN " %zu request bytes buffered: connection window held",
			     c->id, c->buffered);
		c->owed += len;
		budget_wait(c);
	}
}

/* Drop a stream from the budget for good (it is being freed). */
static void budget_forget(struct h2_stream *s)
{
	struct h2_conn *c = s->conn;
	if (s->want_rx) {
		s->want_rx = 0;
		c->nwaiting--;
	}
	c->granted -= s->grant_left;
	budget.granted -= s->grant_left;
	s->grant_left = 0;
	budget_release(s, s->unconsumed, false);
	if (c->state != H2_CONN_CLOSED && c->manual_flow && c->owed == 0 && c->nwaiting == 0)
		list_del(&c->budget_link);
}

/* After a batch of input: when the connection window is held and the peer
 * has none left, no stream can finish a message by waiting; end the one
 * holding the most bytes. */
static void budget_check_stall(struct h2_conn *c)
{
	while (c->manual_flow && c->owed > 0 && c->state != H2_CONN_CLOSED &&
	       nghttp2_session_get_local_window_size(c->ng) <= 0) {
		struct h2_stream *big = NULL;
		for (struct h2_stream *s = c->streams; s; s = s->next)
			if (!s->discard && s->unconsumed > 0 &&
			    (!big || s->unconsumed > big->unconsumed))
				big = s;
		if (!big)
			return;
		char why[256];
		if (c->buffered >= c->st.max_buffered_conn)
			snprintf(why, sizeof(why),
				 "too many request bytes buffered on this connection, no message "
				 "complete (limit %zu, config limits.max-buffered-per-connection)",
				 c->st.max_buffered_conn);
		else
			snprintf(why, sizeof(why),
				 "too many request bytes buffered by the server, no message "
				 "complete (limit %zu, config limits.max-buffered-total)",
				 budget.max_total);
		LOGI("h2", LOG_STREAM " over budget with %zu bytes: %s", c->id, big->id,
		     big->unconsumed, why);
		big->discard = true;
		if (big->ops && big->ops->on_over_budget)
			big->ops->on_over_budget(big, why);
		else
			h2_stream_reset(big, NGHTTP2_ENHANCE_YOUR_CALM);
		budget_release(big, big->unconsumed, true);
	}
}

void h2_stream_consume(struct h2_stream *s, size_t n)
{
	if (s->conn->manual_flow)
		budget_release(s, n, true);
}

int h2_stream_want_window(struct h2_stream *s, size_t total, size_t remaining, char **err)
{
	struct h2_conn *c = s->conn;
	if (!c->manual_flow || s->discard || remaining == 0 || c->state == H2_CONN_CLOSED)
		return 0;
	if (total > c->st.max_buffered_stream) {
		*err = xasprintf(
			"request message of %zu bytes (with framing) is over the per-stream "
			"buffer (limit %zu, config limits.max-buffered-per-stream)",
			total, c->st.max_buffered_stream);
		return -1;
	}
	if (total > c->st.max_buffered_conn) {
		*err = xasprintf("request message of %zu bytes (with framing) is over the "
				 "per-connection buffer (limit %zu, config "
				 "limits.max-buffered-per-connection)",
				 total, c->st.max_buffered_conn);
		return -1;
	}
	if (total > budget.max_total) {
		*err = xasprintf("request message of %zu bytes (with framing) is over the server's "
				 "request buffer (limit %zu, config limits.max-buffered-total)",
				 total, budget.max_total);
		return -1;
	}
	uint64_t target = s->rx + remaining;
	if (s->want_rx == target)
		return 0; /* already waiting for this one */
	if (s->want_rx) {
		s->want_rx = 0;
		c->nwaiting--;
	}
	s->want_rx = target;
	if (try_grant(s)) {
		s->want_rx = 0;
		return 0;
	}
	LOGD("h2", LOG_STREAM " message of %zu bytes waits for request-buffer budget", c->id, s->id,
	     total);
	c->nwaiting++;
	budget_wait(c);
	return 0;
}

/* ---- nghttp2 callbacks -------------------------------------------------- */

static int begin_headers_cb(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
	struct h2_conn *c = ud;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	struct h2_stream *s = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	if (!s) {
		if (!c->server || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
			return 0;
		s = stream_new(c, frame->hd.stream_id);
		nghttp2_session_set_stream_user_data(ng, s->id, s);
		c->on_stream(s, c->arg);
	}
	hdrs_clear(s);
	return 0;
}

static int header_cb(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
		     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
	(void)flags;
	(void)ud;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	struct h2_stream *s = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	if (s)
		hdrs_add(s, name, nl, value, vl);
	return 0;
}

static int frame_recv_cb(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
	(void)ud;
	struct h2_stream *s = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
	if (!s)
		return 0;
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		s->blocks++;
		if (s->ops && s->ops->on_headers)
			s->ops->on_headers(s, s->blocks > 1);
		break;
	case NGHTTP2_DATA: break;
	default: return 0;
	}
	/* The owner may have reset the stream; it is still allocated until
	 * nghttp2 reports the close, so this access is safe. */
	if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && s->ops && s->ops->on_end)
		s->ops->on_end(s);
	return 0;
}

static int data_chunk_cb(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *ud)
{
	(void)flags;
	struct h2_conn *c = ud;
	struct h2_stream *s = nghttp2_session_get_stream_user_data(ng, id);
	if (c->manual_flow) {
		if (!s) {
			nghttp2_session_consume(ng, id, len);
			return 0;
		}
		budget_receive(s, len);
		if (s->discard) {
			budget_release(s, len, true);
			return 0;
		}
	}
	if (s && s->ops && s->ops->on_data)
		s->ops->on_data(s, data, len);
	return 0;
}

static int stream_close_cb(nghttp2_session *ng, int32_t id, uint32_t error, void *ud)
{
	(void)ud;
	struct h2_stream *s = nghttp2_session_get_stream_user_data(ng, id);
	if (s) {
		if (error)
			LOGD("h2", LOG_STREAM " closed: %s", s->conn->id, id,
			     nghttp2_http2_strerror(error));
		stream_close(s, error);
	}
	return 0;
}

/* A server stream whose response is complete while the client is still
 * sending (an early error, or ByteStream.Write finding the blob already
 * stored) is reset with NO_ERROR, as RFC 9113 section 8.1 allows, so the
 * client stops sending and the stream slot is freed. */
static int frame_send_cb(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
	struct h2_conn *c = ud;
	if (!c->server || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
	    (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA))
		return 0;
	int32_t id = frame->hd.stream_id;
	if (nghttp2_session_get_stream_remote_close(ng, id) == 0)
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
	return 0;
}

static int invalid_frame_cb(nghttp2_session *ng, const nghttp2_frame *frame, int err, void *ud)
{
	(void)ng;
	struct h2_conn *c = ud;
	LOGI("h2", LOG_STREAM ": invalid frame type %d: %s", c->id, frame->hd.stream_id,
	     frame->hd.type, nghttp2_strerror(err));
	return 0;
}

static int error_cb(nghttp2_session *ng, int code, const char *msg, size_t len, void *ud)
{
	(void)ng;
	(void)code;
	struct h2_conn *c = ud;
	LOGD("h2", LOG_CONN ": %.*s", c->id, (int)len, msg);
	return 0;
}

static nghttp2_session_callbacks *make_callbacks(void)
{
	nghttp2_session_callbacks *cb;
	if (nghttp2_session_callbacks_new(&cb) != 0)
		abort();
	nghttp2_session_callbacks_set_send_callback(cb, h2_out_send_cb);
	nghttp2_session_callbacks_set_send_data_callback(cb, h2_out_send_data_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, begin_headers_cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, header_cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, frame_recv_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, data_chunk_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, stream_close_cb);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, invalid_frame_cb);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, frame_send_cb);
	nghttp2_session_callbacks_set_error_callback2(cb, error_cb);
	return cb;
}

/* nghttp2 allocations go through our aborting allocator. */
static void *ng_malloc(size_t n, void *ud)
{
	(void)ud;
	return xmalloc(n);
}
static void ng_free(void *p, void *ud)
{
	(void)ud;
	free(p);
}
static void *ng_calloc(size_t n, size_t m, void *ud)
{
	(void)ud;
	return xcalloc(n, m);
}
static void *ng_realloc(void *p, size_t n, void *ud)
{
	(void)ud;
	return xrealloc(p, n);
}
static nghttp2_mem ng_mem = {NULL, ng_malloc, ng_free, ng_calloc, ng_realloc};

/* ---- connection I/O ------------------------------------------------------ */

static void conn_free_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct h2_conn *c = arg;
	while (c->streams)
		stream_close(c->streams, NGHTTP2_CANCEL);
	list_del(&c->budget_link);
	if (c->on_closed)
		c->on_closed(c, c->arg);
	nghttp2_session_del(c->ng);
	bufferevent_free(c->bev);
	event_free(c->flush_ev);
	if (c->idle_ev)
		event_free(c->idle_ev);
	event_free(c->free_ev);
	free(c->peer);
	free(c->tls_identity);
	free(c->close_reason);
	free(c);
}

void h2_conn_close(struct h2_conn *c, const char *reason)
{
	if (c->state == H2_CONN_CLOSED)
		return;
	conn_set_state(c, H2_CONN_CLOSED);
	LOGI("h2", LOG_CONN " closed: %s", c->id, reason);
	c->close_reason = xstrdup(reason);
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	event_del(c->flush_ev);
	if (c->idle_ev)
		event_del(c->idle_ev);
	event_active(c->free_ev, 0, 0);
}

static bool check_preface(struct h2_conn *c, struct evbuffer *in)
{
	size_t len = evbuffer_get_length(in);
	size_t n = len < PREFACE_LEN ? len : PREFACE_LEN;
	char buf[PREFACE_LEN];
	evbuffer_copyout(in, buf, n);
	if (memcmp(buf, PREFACE, n) != 0) {
		LOGI("h2",
		     LOG_CONN ": not an HTTP/2 client (no connection preface); "
			      "answering HTTP/1.1 400",
		     c->id);
		evbuffer_drain(in, len);
		bufferevent_write(c->bev, NOT_H2_REPLY, sizeof(NOT_H2_REPLY) - 1);
		bufferevent_disable(c->bev, EV_READ);
		conn_set_state(c, H2_CONN_DRAINING);
		return false;
	}
	if (n < PREFACE_LEN)
		return false;
	conn_set_state(c, H2_CONN_OPEN);
	return true;
}

/* Hand n input bytes to nghttp2; false when the connection is done with
 * input (protocol error: GOAWAY queued, draining). */
static bool feed(struct h2_conn *c, const uint8_t *data, size_t n, size_t *used)
{
	ssize_t rv = nghttp2_session_mem_recv(c->ng, data, n);
	if (rv < 0) {
		LOGI("h2", LOG_CONN ": protocol error: %s", c->id, nghttp2_strerror((int)rv));
		/* nghttp2 has queued a GOAWAY; send it, then close. */
		nghttp2_session_send(c->ng);
		conn_set_state(c, H2_CONN_DRAINING);
		bufferevent_disable(c->bev, EV_READ);
		evbuffer_drain(bufferevent_get_input(c->bev),
			       evbuffer_get_length(bufferevent_get_input(c->bev)));
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			h2_conn_close(c, "protocol error");
		return false;
	}
	*used = (size_t)rv;
	metrics_std.bytes_in += (uint64_t)rv;
	return true;
}

/* libevent 2.1 reads at most 4 KiB per read callback whatever the
 * bufferevent's max single read, so a bulk upload cost an epoll_wait, an
 * ioctl and a readv per 4 KiB: most of the server's time.  On a plain
 * socket the callback reads on by itself, in large recv(2)s straight into
 * nghttp2, up to DIRECT_READ_MAX bytes per callback, stopping at EAGAIN;
 * an EOF or error is left for the bufferevent to see on its next read.
 * TLS goes through libevent.  DIRECT_READ_MAX stays under a 1 MiB
 * WriteRequest so one callback completes at most one of them (hashed and
 * written while the loop waits), as with 4 KiB reads: the loop stall
 * stays what it was while the syscalls drop 64-fold. */
#define DIRECT_READ_BUF (256 * 1024)
#define DIRECT_READ_MAX (256 * 1024)

static void read_direct(struct h2_conn *c)
{
	/* One buffer for all connections; busy while a callback of a read runs
	 * (a client running a nested loop there reads through libevent). */
	static uint8_t *buf;
	static bool busy;
	evutil_socket_t fd = bufferevent_getfd(c->bev);
	if (c->tls || fd < 0 || busy)
		return;
	if (!buf)
		buf = xmalloc(DIRECT_READ_BUF);
	busy = true;
	/* read_paused: the peer does not read its responses (h2_out_flush) */
	for (size_t total = 0; total < DIRECT_READ_MAX && !c->read_paused &&
			       c->state != H2_CONN_CLOSED && c->state != H2_CONN_DRAINING;) {
		ssize_t n = recv(fd, buf, DIRECT_READ_BUF, 0);
		if (n <= 0)
			break; /* EAGAIN, EOF or error: libevent's next read handles it */
		total += (size_t)n;
		bool ok = true;
		for (size_t off = 0, used; ok && off < (size_t)n; off += used)
			ok = c->state != H2_CONN_CLOSED && feed(c, buf + off, (size_t)n - off, &used);
		if (!ok || (size_t)n < DIRECT_READ_BUF)
			break; /* done with input, or drained */
		/* window updates and replies out; sets read_paused */
		h2_out_flush(c);
	}
	busy = false;
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct h2_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	if (c->state == H2_CONN_CLOSED || c->state == H2_CONN_DRAINING) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	if (c->idle_ev && c->nstreams == 0)
		arm_idle(c);
	if (c->state == H2_CONN_PREFACE && !check_preface(c, in))
		return;
	while (evbuffer_get_length(in) > 0 && c->state != H2_CONN_CLOSED) {
		struct evbuffer_iovec v;
		size_t used;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		if (!feed(c, v.iov_base, v.iov_len, &used))
			return;
		evbuffer_drain(in, used);
	}
	if ((c->state == H2_CONN_OPEN || c->state == H2_CONN_GOAWAY) && !c->read_paused)
		read_direct(c);
	budget_check_stall(c);
	h2_out_flush(c);
}

/* A server's TLS handshake is done: HTTP/2 over TLS needs ALPN h2 (the
 * ALPN callback refused clients offering others; this catches those that
 * offered none), and the client certificate, verified, names the peer. */
static void tls_established(struct h2_conn *c)
{
	if (!tls_bev_alpn_h2(c->bev)) {
		h2_conn_close(c, "TLS client did not negotiate ALPN h2 (HTTP/2 over TLS needs it)");
		return;
	}
	c->tls_identity = tls_bev_peer_identity(c->bev);
	char *how = tls_bev_describe(c->bev);
	LOGI("h2", LOG_CONN " TLS %s from %s identity=%s", c->id, how, c->peer,
	     c->tls_identity ? c->tls_identity : "-");
	free(how);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct h2_conn *c = arg;
	if (what & BEV_EVENT_CONNECTED) {
		if (c->server)
			tls_established(c);
		else
			h2_out_flush(c);
		return;
	}
	/* A server names a TLS failure here; a client's owner (rpc/client.c)
	 * reads the OpenSSL errors itself, so they are left for it. */
	char *tls_err = (what & BEV_EVENT_ERROR) && c->server && tls_bev_is_tls(bev)
				? tls_bev_error(bev)
				: NULL;
	if (tls_err) {
		char *why = xasprintf("TLS: %s", tls_err);
		h2_conn_close(c, why);
		free(why);
		free(tls_err);
	} else if (what & BEV_EVENT_EOF)
		h2_conn_close(c, c->nstreams ? "peer closed with streams open" : "peer closed");
	else if (what & BEV_EVENT_ERROR)
		h2_conn_close(c, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	else if (what & BEV_EVENT_TIMEOUT)
		h2_conn_close(c, "socket timeout");
}

static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct h2_conn *c = arg;
	if (c->nstreams == 0) {
		LOGD("h2", LOG_CONN " idle timeout", c->id);
		if (c->state == H2_CONN_OPEN)
			h2_conn_goaway(c);
		h2_out_flush(c); /* sends the GOAWAY (a no-op in other states) */
		h2_conn_close(c, "idle timeout");
	}
}

static struct h2_conn *conn_new(struct bufferevent *bev, const struct h2_settings *st,
				const char *peer, bool server)
{
	struct h2_conn *c = xcalloc(1, sizeof(*c));
	struct event_base *base = bufferevent_get_base(bev);
	c->id = next_conn_id++;
	c->server = server;
	c->peer = xstrdup(peer ? peer : "-");
	c->bev = bev;
	c->tls = tls_bev_is_tls(bev);
	c->st = *st;
	if (c->st.max_output_buffer == 0)
		c->st.max_output_buffer = 4 << 20;
	if (c->st.max_buffered_conn == 0)
		c->st.max_buffered_conn = DEFAULT_MAX_BUFFERED_CONN;
	if (c->st.max_buffered_stream == 0)
		c->st.max_buffered_stream = SIZE_MAX;
	list_init(&c->budget_link);
	/* Server windows reopen as requests are consumed (see "input
	 * budget"); our client reads responses as they come. */
	c->manual_flow = server;
	c->flush_ev = event_new(base, -1, 0, h2_out_flush_ev_cb, c);
	c->free_ev = event_new(base, -1, 0, conn_free_cb, c);
	if (st->idle_timeout_us > 0)
		c->idle_ev = event_new(base, -1, 0, idle_cb, c);

	nghttp2_session_callbacks *cb = make_callbacks();
	nghttp2_option *opt;
	nghttp2_option_new(&opt);
	/* Bazel and grpc-java ping freely; nghttp2 answers PINGs itself and
	 * caps queued ACKs, so a ping flood can't grow memory. */
	nghttp2_option_set_max_outbound_ack(opt, 10000);
	if (server)
		nghttp2_option_set_no_auto_window_update(opt, 1);
	int rv = server ? nghttp2_session_server_new3(&c->ng, cb, c, opt, &ng_mem)
			: nghttp2_session_client_new3(&c->ng, cb, c, opt, &ng_mem);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	if (rv != 0)
		abort();

	nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, st->max_concurrent_streams},
		{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, st->stream_window},
		{NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, st->max_header_list_size},
	};
	nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, ARRAY_LEN(iv));
	if (st->conn_window > 65535)
		nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
						      (int32_t)st->conn_window);

	/* libevent reads 16 KiB per callback by default (and 4 KiB chains);
	 * bulk ByteStream traffic wants far fewer, larger syscalls. */
	bufferevent_set_max_single_read(bev, 1 << 20);
	bufferevent_set_max_single_write(bev, 1 << 20);
	bufferevent_setcb(bev, read_cb, h2_out_write_cb, event_cb, c);
	/* Wake the writer when half the output limit has drained. */
	bufferevent_setwatermark(bev, EV_WRITE, c->st.max_output_buffer / 2, 0);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	arm_idle(c);
	return c;
}

struct h2_conn *h2_conn_server(struct bufferevent *bev, const struct h2_settings *st,
			       const char *peer, h2_accept_stream_fn on_stream,
			       h2_conn_closed_fn on_closed, void *arg)
{
	struct h2_conn *c = conn_new(bev, st, peer, true);
	c->on_stream = on_stream;
	c->on_closed = on_closed;
	c->arg = arg;
	/* The one line that ties the connection id to the peer's address. */
	LOGI("h2", LOG_CONN " accepted from %s", c->id, c->peer);
	/* Our SETTINGS go out only once the client's preface checked out, so
	 * an HTTP/1 client gets a clean text reply. */
	return c;
}

struct h2_conn *h2_conn_client(struct bufferevent *bev, const struct h2_settings *st,
			       const char *peer, h2_conn_closed_fn on_closed, void *arg)
{
	struct h2_conn *c = conn_new(bev, st, peer, false);
	c->on_closed = on_closed;
	c->arg = arg;
	LOGD("h2", LOG_CONN " client of %s", c->id, c->peer);
	conn_set_state(c, H2_CONN_OPEN);
	h2_out_schedule(c);
	return c;
}

void h2_conn_goaway(struct h2_conn *c)
{
	if (c->state == H2_CONN_PREFACE) {
		/* Not an HTTP/2 peer yet: nothing to tell it. */
		h2_conn_close(c, "going away before the client's connection preface");
		return;
	}
	if (c->state != H2_CONN_OPEN)
		return;
	conn_set_state(c, H2_CONN_GOAWAY);
	int32_t last = c->server ? nghttp2_session_get_last_proc_stream_id(c->ng) : 0;
	nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
	h2_out_schedule(c);
}

uint64_t h2_conn_id(const struct h2_conn *c)
{
	return c->id;
}
const char *h2_conn_peer(const struct h2_conn *c)
{
	return c->peer;
}
bool h2_conn_alive(const struct h2_conn *c)
{
	return c->state == H2_CONN_PREFACE || c->state == H2_CONN_OPEN;
}
void h2_conn_set_listen(struct h2_conn *c, const struct cfg_listen *l)
{
	c->listen = l;
}
const struct cfg_listen *h2_conn_listen(const struct h2_conn *c)
{
	return c->listen;
}
const char *h2_conn_tls_identity(const struct h2_conn *c)
{
	return c->tls_identity;
}

const char *h2_conn_close_reason(const struct h2_conn *c)
{
	return c->close_reason;
}

/* ---- stream API ------------------------------------------------------------ */

struct h2_stream *h2_stream_open(struct h2_conn *c, const struct h2_hdr *hdrs, size_t n,
				 const struct h2_stream_ops *ops, void *user)
{
	if (c->state != H2_CONN_OPEN)
		return NULL;
	struct h2_stream *s = stream_new(c, 0);
	s->ops = ops;
	s->user = user;
	s->responded = true;
	nghttp2_nv *nv = h2_out_nv(hdrs, n);
	nghttp2_data_provider p = h2_out_provider(s);
	int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, &p, s);
	free(nv);
	if (id < 0) {
		s->ops = NULL;
		stream_close(s, NGHTTP2_INTERNAL_ERROR);
		return NULL;
	}
	s->id = id;
	h2_out_schedule(c);
	return s;
}

void h2_stream_set_ops(struct h2_stream *s, const struct h2_stream_ops *ops, void *user)
{
	s->ops = ops;
	s->user = user;
}

void *h2_stream_user(const struct h2_stream *s)
{
	return s->user;
}
int32_t h2_stream_id(const struct h2_stream *s)
{
	return s->id;
}
struct h2_conn *h2_stream_conn(const struct h2_stream *s)
{
	return s->conn;
}
bool h2_stream_headers_overflow(const struct h2_stream *s)
{
	return s->hdr_overflow;
}

const char *h2_stream_header(const struct h2_stream *s, const char *name)
{
	for (size_t i = 0; i < s->nhdrs; i++)
		if (strcmp(s->hdrs[i].name, name) == 0)
			return s->hdrs[i].value;
	return NULL;
}

const struct h2_hdr *h2_stream_headers(const struct h2_stream *s, size_t *n)
{
	*n = s->nhdrs;
	return s->hdrs;
}
