/*
 * h2_out.c - the output side of an HTTP/2 connection (h2_int.h): frames go
 * through nghttp2_session_send into the bufferevent's output buffer, with
 * DATA payloads moved (not copied) out of each stream's evbuffer through
 * NGHTTP2_DATA_FLAG_NO_COPY.  Backpressure: we stop handing frames to the
 * socket buffer above max_output_buffer, and stop reading the socket while
 * it is over that limit, so a slow reader can't make us buffer without
 * bound; streams hear on_writable once their own buffer drains below
 * H2_STREAM_LOWAT.  Also the stream write API (respond, write, end, reset).
 */
#include "transport/h2.h"
#include "transport/h2_int.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"

nghttp2_nv *h2_out_nv(const struct h2_hdr *h, size_t n)
{
	nghttp2_nv *nv = xcalloc(n ? n : 1, sizeof(*nv));
	for (size_t i = 0; i < n; i++) {
		nv[i].name = (uint8_t *)h[i].name;
		nv[i].namelen = h[i].namelen;
		nv[i].value = (uint8_t *)h[i].value;
		nv[i].valuelen = h[i].valuelen;
		nv[i].flags = NGHTTP2_NV_FLAG_NONE;
	}
	return nv;
}

static ssize_t data_read_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
			    uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	(void)ng;
	(void)id;
	(void)buf;
	struct h2_conn *c = ud;
	struct h2_stream *s = src->ptr;
	size_t avail = evbuffer_get_length(s->out);
	size_t n = avail < length ? avail : length;

	if (n == 0 && !s->end_pending) {
		s->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	if (n > 0)
		*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (n == avail && s->end_pending) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (s->ntrailers > 0) {
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			nghttp2_nv *nv = h2_out_nv(s->trailers, s->ntrailers);
			int rv = nghttp2_submit_trailer(c->ng, s->id, nv, s->ntrailers);
			free(nv);
			if (rv != 0)
				LOGW("h2", LOG_STREAM ": trailers: %s", c->id, s->id,
				     nghttp2_strerror(rv));
		}
		s->end_sent = true;
	}
	if (s->was_full && avail - n < H2_STREAM_LOWAT) {
		s->was_full = false;
		if (!s->on_wlist && s->ops && s->ops->on_writable) {
			s->on_wlist = true;
			s->wnext = c->wlist;
			c->wlist = s;
		}
	}
	return (ssize_t)n;
}

int h2_out_send_data_cb(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
			size_t length, nghttp2_data_source *src, void *ud)
{
	(void)ng;
	struct h2_conn *c = ud;
	struct h2_stream *s = src->ptr;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) >= c->st.max_output_buffer)
		return NGHTTP2_ERR_WOULDBLOCK;
	evbuffer_add(out, framehd, 9);
	if (frame->data.padlen > 0) {
		uint8_t pad = (uint8_t)(frame->data.padlen - 1);
		evbuffer_add(out, &pad, 1);
	}
	evbuffer_remove_buffer(s->out, out, length);
	metrics_std.bytes_out += 9 + length + frame->data.padlen;
	if (frame->data.padlen > 1) {
		static const uint8_t zeros[256];
		evbuffer_add(out, zeros, frame->data.padlen - 1);
	}
	return 0;
}

nghttp2_data_provider h2_out_provider(struct h2_stream *s)
{
	nghttp2_data_provider p;
	p.source.ptr = s;
	p.read_callback = data_read_cb;
	return p;
}

ssize_t h2_out_send_cb(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
	(void)ng;
	(void)flags;
	struct h2_conn *c = ud;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) >= c->st.max_output_buffer)
		return NGHTTP2_ERR_WOULDBLOCK;
	evbuffer_add(out, data, len);
	metrics_std.bytes_out += len;
	return (ssize_t)len;
}

static void conn_check_done(struct h2_conn *c)
{
	if (c->state == H2_CONN_CLOSED)
		return;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
	    evbuffer_get_length(out) == 0)
		h2_conn_close(c,
			      c->state == H2_CONN_GOAWAY ? "goaway complete" : "session finished");
}

static void notify_writable(struct h2_conn *c)
{
	while (c->wlist && c->state != H2_CONN_CLOSED) {
		struct h2_stream *s = c->wlist;
		c->wlist = s->wnext;
		s->on_wlist = false;
		if (s->ops && s->ops->on_writable)
			s->ops->on_writable(s);
	}
}

/* Bytes of output joined into one chain per flush on a TLS connection. */
#define TLS_JOIN (64 * 1024)

void h2_out_flush(struct h2_conn *c)
{
	/* Nothing goes out before the client's preface checked out (PREFACE),
	 * so an HTTP/1 client gets a clean text reply. */
	if ((c->state != H2_CONN_OPEN && c->state != H2_CONN_GOAWAY) || c->in_send)
		return;
	c->in_send = true;
	int rv = nghttp2_session_send(c->ng);
	c->in_send = false;
	if (rv != 0) {
		h2_conn_close(c, nghttp2_strerror(rv));
		return;
	}
	notify_writable(c);
	if (c->state == H2_CONN_CLOSED)
		return;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t n = evbuffer_get_length(out);
	/* Over TLS every chain of the output buffer becomes its own SSL_write,
	 * so its own record and write(2): frames of many small responses
	 * (headers, a referenced DATA payload, trailers) would each pay both.
	 * Joining the head of the buffer makes them one record run. */
	if (c->tls && n > 0)
		evbuffer_pullup(out, (ssize_t)(n < TLS_JOIN ? n : TLS_JOIN));
	if (n >= c->st.max_output_buffer) {
		if (!c->read_paused) {
			c->read_paused = true;
			bufferevent_disable(c->bev, EV_READ);
		}
	}
	conn_check_done(c);
}

void h2_out_flush_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	h2_out_flush(arg);
}

void h2_out_schedule(struct h2_conn *c)
{
	if (c->state != H2_CONN_CLOSED && !c->in_send)
		event_active(c->flush_ev, 0, 0);
}

void h2_out_write_cb(struct bufferevent *bev, void *arg)
{
	struct h2_conn *c = arg;
	if (c->state == H2_CONN_CLOSED)
		return;
	if (c->state == H2_CONN_DRAINING) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			h2_conn_close(c, "closed after error reply");
		return;
	}
	if (c->read_paused) {
		c->read_paused = false;
		bufferevent_enable(bev, EV_READ);
	}
	h2_out_flush(c);
}

static void stream_kick(struct h2_stream *s)
{
	if (s->deferred && s->id > 0) {
		s->deferred = false;
		nghttp2_session_resume_data(s->conn->ng, s->id);
	}
	h2_out_schedule(s->conn);
}

int h2_stream_respond(struct h2_stream *s, const struct h2_hdr *hdrs, size_t n, bool end_stream)
{
	if (s->responded || s->conn->state == H2_CONN_CLOSED)
		return -1;
	s->responded = true;
	nghttp2_nv *nv = h2_out_nv(hdrs, n);
	nghttp2_data_provider p = h2_out_provider(s);
	int rv = nghttp2_submit_response(s->conn->ng, s->id, nv, n, end_stream ? NULL : &p);
	free(nv);
	if (end_stream)
		s->end_sent = s->end_pending = true;
	h2_out_schedule(s->conn);
	return rv == 0 ? 0 : -1;
}

static void note_fill(struct h2_stream *s)
{
	if (evbuffer_get_length(s->out) >= H2_STREAM_LOWAT)
		s->was_full = true;
}

int h2_stream_write(struct h2_stream *s, const void *data, size_t len)
{
	if (s->end_pending || s->conn->state == H2_CONN_CLOSED)
		return -1;
	evbuffer_add(s->out, data, len);
	note_fill(s);
	stream_kick(s);
	return 0;
}

static void free_owned(const void *data, size_t len, void *arg)
{
	(void)len;
	(void)arg;
	free((void *)data);
}

int h2_stream_write_owned(struct h2_stream *s, void *data, size_t len)
{
	if (s->end_pending || s->conn->state == H2_CONN_CLOSED) {
		free(data);
		return -1;
	}
	evbuffer_add_reference(s->out, data, len, free_owned, NULL);
	note_fill(s);
	stream_kick(s);
	return 0;
}

size_t h2_stream_pending(const struct h2_stream *s)
{
	return evbuffer_get_length(s->out);
}

void h2_stream_want_writable(struct h2_stream *s)
{
	s->was_full = true;
}

int h2_stream_end(struct h2_stream *s, const struct h2_hdr *trailers, size_t n)
{
	if (s->end_pending || s->conn->state == H2_CONN_CLOSED)
		return -1;
	s->end_pending = true;
	if (n > 0) {
		s->trailers = xcalloc(n, sizeof(*s->trailers));
		for (size_t i = 0; i < n; i++) {
			s->trailers[i].name = xstrndup(trailers[i].name, trailers[i].namelen);
			s->trailers[i].value = xstrndup(trailers[i].value, trailers[i].valuelen);
			s->trailers[i].namelen = trailers[i].namelen;
			s->trailers[i].valuelen = trailers[i].valuelen;
		}
		s->ntrailers = n;
	}
	stream_kick(s);
	return 0;
}

void h2_stream_reset(struct h2_stream *s, uint32_t error)
{
	if (s->conn->state == H2_CONN_CLOSED || s->id <= 0)
		return;
	nghttp2_submit_rst_stream(s->conn->ng, NGHTTP2_FLAG_NONE, s->id, error);
	h2_out_schedule(s->conn);
}
