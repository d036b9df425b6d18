/*
 * h2.h - the HTTP/2 transport: one nghttp2 session per connection on a
 * libevent bufferevent, for both ends (server sessions accepted by a
 * listener, client sessions used by our gRPC client).  This layer knows
 * streams, header blocks, DATA and flow control; it knows nothing about gRPC
 * or services.  The layer above attaches an ops table to each stream.
 *
 * Ownership: a connection owns its streams; a stream is freed right after
 * its on_close callback returns.  Connections are freed asynchronously
 * (after the current loop pass) so a callback never sees its caller vanish.
 */
#ifndef REACTOR_H2_H
#define REACTOR_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

struct bufferevent;
struct event_base;
struct h2_conn;
struct h2_stream;

/* HTTP/2 error codes (RFC 9113 section 7) the layers above use, so they
 * never include nghttp2 themselves. */
enum h2_error {
	H2_NO_ERROR = 0x0,
	H2_INTERNAL_ERROR = 0x2,
	H2_REFUSED_STREAM = 0x7,
	H2_CANCEL = 0x8,
};
/* Printable description of an HTTP/2 error code (static string). */
const char *h2_error_string(uint32_t error);

struct h2_hdr {
	char *name;
	char *value;
	size_t namelen, valuelen;
};

/* Per-stream callbacks of the layer above.  All optional but on_close. */
struct h2_stream_ops {
	/* A header block is complete.  `trailers` is true for a block that
	 * follows DATA or the first block (client side: a response).  The
	 * headers are readable with h2_stream_header()/h2_stream_headers(). */
	void (*on_headers)(struct h2_stream *s, bool trailers);
	void (*on_data)(struct h2_stream *s, const uint8_t *data, size_t len);
	/* The peer half-closed its side (END_STREAM). */
	void (*on_end)(struct h2_stream *s);
	/* The stream's output buffer drained below the low-water mark. */
	void (*on_writable)(struct h2_stream *s);
	/* The stream is gone (complete, reset by either side, or the
	 * connection died); `error` is the HTTP/2 error code, 0 when clean.
	 * The stream is freed when this returns. */
	void (*on_close)(struct h2_stream *s, uint32_t error);
	/* Server: the connection's request-buffer budget is spent and its
	 * flow-control window is closed, so no stream could finish a message
	 * by waiting; this stream holds the most buffered bytes and must end
	 * (`why` names the limit).  From here on its input is discarded (h2
	 * releases it).  Without this op the stream is reset. */
	void (*on_over_budget)(struct h2_stream *s, const char *why);
};

struct h2_settings {
	uint32_t max_concurrent_streams;
	uint32_t max_header_list_size;
	uint32_t conn_window;
	uint32_t stream_window;
	int64_t idle_timeout_us;  /* 0 = never */
	size_t max_output_buffer; /* stop reading above this much unsent output */
	/* Server connections: request bytes received and not yet released
	 * with h2_stream_consume.  Past max_buffered_conn (0 = 64 MiB) the
	 * connection window is no longer reopened; one stream's window grows
	 * for a large message only up to max_buffered_stream (0 = no limit
	 * of its own). */
	size_t max_buffered_stream;
	size_t max_buffered_conn;
};

/* Process-wide cap on request bytes buffered by all server connections
 * (0 = 512 MiB); past it no connection window is reopened. */
void h2_set_max_buffered_total(size_t max);
/* Request bytes all server connections hold now. */
size_t h2_buffered_total(void);

/* Server side: called when a peer opens a stream (before its headers are
 * parsed).  The callee must set ops with h2_stream_set_ops. */
typedef void (*h2_accept_stream_fn)(struct h2_stream *s, void *arg);
/* Called once when a connection is about to be freed. */
typedef void (*h2_conn_closed_fn)(struct h2_conn *c, void *arg);

/* Wrap an accepted socket's bufferevent (ownership passes to the conn).
 * `peer` is a printable address, copied. */
struct h2_conn *h2_conn_server(struct bufferevent *bev, const struct h2_settings *st,
			       const char *peer, h2_accept_stream_fn on_stream,
			       h2_conn_closed_fn on_closed, void *arg);

/* Wrap a connecting/connected client bufferevent (ownership passes). */
struct h2_conn *h2_conn_client(struct bufferevent *bev, const struct h2_settings *st,
			       const char *peer, h2_conn_closed_fn on_closed, void *arg);

/* Open a client stream with request headers.  With end_stream the request
 * has no body.  Returns NULL when the connection can't take a stream. */
struct h2_stream *h2_stream_open(struct h2_conn *c, const struct h2_hdr *hdrs, size_t n,
				 const struct h2_stream_ops *ops, void *user);

/* Graceful close: GOAWAY (last processed stream), finish open streams,
 * then close.  Idempotent. */
void h2_conn_goaway(struct h2_conn *c);
/* Close now (streams see on_close with an error).  Idempotent. */
void h2_conn_close(struct h2_conn *c, const char *reason);
/* The reason given to h2_conn_close (e.g. "Connection refused"), for the
 * streams' on_close callbacks; NULL while the connection is open. */
const char *h2_conn_close_reason(const struct h2_conn *c);
uint64_t h2_conn_id(const struct h2_conn *c);
const char *h2_conn_peer(const struct h2_conn *c);
bool h2_conn_alive(const struct h2_conn *c);
/* Server connections: the listen: entry they were accepted on (set by the
 * server; NULL for client connections).  It outlives the connection. */
struct cfg_listen;
void h2_conn_set_listen(struct h2_conn *c, const struct cfg_listen *l);
const struct cfg_listen *h2_conn_listen(const struct h2_conn *c);
/* The identity of the verified client certificate of a TLS connection
 * (first URI SAN, else first DNS SAN, else subject CN; see tls.h), or
 * NULL: plaintext, no certificate, or not verified.  Owned by the conn. */
const char *h2_conn_tls_identity(const struct h2_conn *c);

void h2_stream_set_ops(struct h2_stream *s, const struct h2_stream_ops *ops, void *user);
void *h2_stream_user(const struct h2_stream *s);
int32_t h2_stream_id(const struct h2_stream *s);
struct h2_conn *h2_stream_conn(const struct h2_stream *s);
/* Value of header `name` (lowercase) in the latest block, NULL if absent. */
const char *h2_stream_header(const struct h2_stream *s, const char *name);
const struct h2_hdr *h2_stream_headers(const struct h2_stream *s, size_t *n);
/* True when the latest header block exceeded max_header_list_size (its
 * fields were dropped). */
bool h2_stream_headers_overflow(const struct h2_stream *s);

/* Server: send response headers (once).  With end_stream this is a
 * headers-only response (gRPC Trailers-Only). */
int h2_stream_respond(struct h2_stream *s, const struct h2_hdr *hdrs, size_t n, bool end_stream);
/* Queue body bytes (copied). */
int h2_stream_write(struct h2_stream *s, const void *data, size_t len);
/* Queue a malloc'd buffer without copying; h2 frees it once sent. */
int h2_stream_write_owned(struct h2_stream *s, void *data, size_t len);
/* Bytes queued but not yet handed to nghttp2. */
size_t h2_stream_pending(const struct h2_stream *s);
/* Fire on_writable once the queued bytes drain below H2_STREAM_LOWAT even
 * if they never went above it (a producer that stops at a lower mark). */
void h2_stream_want_writable(struct h2_stream *s);
/* End our side: trailers (server) after the queued data, or END_STREAM
 * with no trailers when n == 0 (client request body end). */
int h2_stream_end(struct h2_stream *s, const struct h2_hdr *trailers, size_t n);
/* Reset with an HTTP/2 error code (e.g. H2_CANCEL). */
void h2_stream_reset(struct h2_stream *s, uint32_t error);

/* Server input flow control.  Request bytes count as buffered from the
 * DATA frame that carries them until the layer above releases them with
 * h2_stream_consume (typically when a whole message leaves its reassembly
 * buffer); only then does the stream's flow-control window reopen, so a
 * peer that never completes its messages is throttled.  Bytes of a stream
 * that is gone are released by h2.  No-op on client connections (they
 * reopen windows on receipt). */
void h2_stream_consume(struct h2_stream *s, size_t n);
/* The layer above has a message of `total` bytes (framing included) in
 * progress of which `remaining` bytes have not arrived.  When the stream's
 * window cannot carry them, grow it, within the per-connection and
 * process-wide budgets (or wait, the stream's sender blocked, until they
 * have room).  Returns 0, or -1 with *err (malloc'd, names the limit) when
 * the message can never fit: larger than max_buffered_stream, the
 * connection's or the process's budget. */
int h2_stream_want_window(struct h2_stream *s, size_t total, size_t remaining,
			  char **err) WARN_UNUSED;

/* Low-water mark below which on_writable fires. */
#define H2_STREAM_LOWAT (256 * 1024)

/* Helper to build a header entry from C strings (no copy). */
static inline struct h2_hdr h2_hdr_make(const char *name, const char *value)
{
	struct h2_hdr h = {(char *)name, (char *)value, __builtin_strlen(name),
			   __builtin_strlen(value)};
	return h;
}

#endif
