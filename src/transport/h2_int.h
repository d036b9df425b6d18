/*
 * h2_int.h - what h2.c (connections, sessions, input, stream lifecycle) and
 * h2_out.c (output and backpressure) share: the connection and stream
 * structs and the output entry points.  Private to src/transport/; the
 * layers above see only h2.h.
 */
#ifndef REACTOR_H2_INT_H
#define REACTOR_H2_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/util.h>
#include <nghttp2/nghttp2.h>

#include "core/list.h"
#include "transport/h2.h"

struct bufferevent;
struct evbuffer;
struct event;

struct h2_stream {
	struct h2_conn *conn;
	int32_t id;
	const struct h2_stream_ops *ops;
	void *user;

	struct h2_hdr *hdrs;
	size_t nhdrs, caphdrs, hdrbytes;
	bool hdr_overflow;
	int blocks; /* header blocks seen */

	struct evbuffer *out;
	bool responded;	  /* server: response HEADERS submitted */
	bool deferred;	  /* data source returned DEFERRED */
	bool end_pending; /* h2_stream_end called */
	bool end_sent;
	bool was_full; /* pending crossed H2_STREAM_LOWAT */
	struct h2_hdr *trailers;
	size_t ntrailers;

	/* Input budget (server): bytes received, not yet released. */
	size_t unconsumed;
	uint64_t rx;	   /* DATA payload bytes received in all */
	uint64_t want_rx;  /* rx a waiting window grant must reach; 0 = none */
	size_t grant_left; /* granted bytes still to arrive (in c->granted) */
	bool discard;	   /* over budget: input released on arrival */

	struct h2_stream *prev, *next; /* conn->streams */
	struct h2_stream *wnext;       /* conn->writable list */
	bool on_wlist;
};

/* A connection's life.  Server connections start in PREFACE, client ones
 * in OPEN; every path ends in CLOSED, after which the connection is freed
 * at the end of the loop pass. */
enum h2_conn_state {
	H2_CONN_PREFACE,  /* server: checking the client's connection preface;
			   * nothing is sent before it checks out */
	H2_CONN_OPEN,	  /* the session runs */
	H2_CONN_GOAWAY,	  /* GOAWAY submitted: open streams finish, no new ones */
	H2_CONN_DRAINING, /* writing a last reply (HTTP/1 400, the GOAWAY of a
			   * protocol error), then CLOSED; input is dropped */
	H2_CONN_CLOSED,	  /* no more I/O; freed after this loop pass */
};

struct h2_conn {
	uint64_t id;
	bool server;
	char *peer;
	struct bufferevent *bev;
	nghttp2_session *ng;
	struct h2_settings st;

	struct h2_stream *streams;
	size_t nstreams;
	struct h2_stream *wlist;

	struct event *flush_ev, *idle_ev, *free_ev;
	h2_accept_stream_fn on_stream;
	h2_conn_closed_fn on_closed;
	void *arg;

	enum h2_conn_state state; /* change only with conn_set_state() */
	/* Not states: both can be true in OPEN and GOAWAY alike. */
	bool read_paused; /* output over max_output_buffer: not reading */
	bool in_send;	  /* inside nghttp2_session_send (no re-entry) */

	/* Input budget (server connections; see h2_stream_consume). */
	bool manual_flow;	 /* windows reopen as the layer above consumes */
	size_t buffered;	 /* sum of the streams' unconsumed bytes */
	size_t granted;		 /* sum of the streams' grant_left */
	size_t owed;		 /* received bytes whose connection window is held */
	size_t nwaiting;	 /* streams waiting for a window grant */
	struct list budget_link; /* on the waiting list while owed/nwaiting */

	/* Server connections: the listener's config (services:), and over
	 * TLS the verified client certificate's identity (NULL: none). */
	const struct cfg_listen *listen;
	char *tls_identity;
	char *close_reason; /* why h2_conn_close was called; NULL while open */
	bool tls; /* over TLS (output is joined into larger records) */
};

/* h2_out.c ------------------------------------------------------------ */

/* nghttp2 name/value pairs pointing into h (no copy); free() the array. */
nghttp2_nv *h2_out_nv(const struct h2_hdr *h, size_t n);
/* The data provider of a stream: DATA comes from its `out` buffer. */
nghttp2_data_provider h2_out_provider(struct h2_stream *s);
/* nghttp2 send callbacks: frames go to the bufferevent's output, up to
 * max_output_buffer (then WOULDBLOCK). */
ssize_t h2_out_send_cb(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud);
int h2_out_send_data_cb(nghttp2_session *ng, nghttp2_frame *frame, const uint8_t *framehd,
			size_t length, nghttp2_data_source *src, void *ud);
/* Hand what nghttp2 has queued to the socket now; pauses reading above
 * the output limit and closes a finished session.  No-op outside OPEN and
 * GOAWAY. */
void h2_out_flush(struct h2_conn *c);
/* h2_out_flush at the end of this loop pass (coalesces submissions). */
void h2_out_schedule(struct h2_conn *c);
void h2_out_flush_ev_cb(evutil_socket_t fd, short what, void *arg);
/* The bufferevent's write callback: output drained below the watermark. */
void h2_out_write_cb(struct bufferevent *bev, void *arg);

#endif
