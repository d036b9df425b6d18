/*
 * client.h - reactord's gRPC client: the same HTTP/2 layer as the server,
 * with a client session.  Used by reactorctl, the tests and (later) the
 * worker.  Asynchronous calls on a libevent base, plus a synchronous unary
 * helper that runs the loop until the reply arrives.
 */
#ifndef REACTOR_CLIENT_H
#define REACTOR_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "transport/h2.h"

struct event_base;
struct bufferevent;
struct rc_client;
struct rc_call;

/* Connect to "host:port", "[v6]:port", "unix:/path" (an optional grpc://
 * prefix is accepted).  Returns NULL with *err (malloc'd) on a bad target;
 * a refused connection shows up as UNAVAILABLE on the first call. */
struct rc_client *rc_client_connect(struct event_base *base, const char *target, char **err);
/* Run the client over an already connected bufferevent (ownership passes);
 * the tests use a bufferevent pair to drive the server in memory. */
struct rc_client *rc_client_from_bev(struct event_base *base, struct bufferevent *bev,
				     const char *name);
/* Give c up without running the loop (safe inside a callback): its
 * connection closes (calls still open end with CANCELLED) and c is freed
 * once the connection is gone; c may not be used after this. */
void rc_client_release(struct rc_client *c);
/* Close the connection; calls still open end with CANCELLED. */
void rc_client_free(struct rc_client *c);
/* Start closing without running the loop (safe inside a callback on it):
 * calls still open end with CANCELLED; rc_client_free() later. */
void rc_client_close(struct rc_client *c);
/* False once the connection has closed or failed. */
bool rc_client_alive(const struct rc_client *c);

typedef void (*rc_msg_cb)(struct rc_call *call, const uint8_t *msg, size_t len, void *arg);
/* Called once per call, last; the call is freed when it returns. */
typedef void (*rc_done_cb)(struct rc_call *call, int code, const char *message, void *arg);

/* Start a call.  md: extra request headers (lowercase names; -bin values
 * must already be base64).  timeout_us 0 = none. */
struct rc_call *rc_call_start(struct rc_client *c, const char *path, int64_t timeout_us,
			      const struct h2_hdr *md, size_t nmd, rc_msg_cb on_msg,
			      rc_done_cb on_done, void *arg);
/* Call cb(call, arg) once when the response headers arrive (not for a
 * trailers-only answer): a server stream that sends its headers when it
 * is set up, like WatchBuilds, tells the caller so.  Set it right after
 * rc_call_start(). */
void rc_call_on_headers(struct rc_call *call, void (*cb)(struct rc_call *call, void *arg));
/* Send one framed message / raw bytes; close our side. */
int rc_call_send(struct rc_call *call, const uint8_t *msg, size_t len);
int rc_call_send_raw(struct rc_call *call, const void *data, size_t len);
int rc_call_close_send(struct rc_call *call);
/* Reset the stream (the server sees a cancellation). */
void rc_call_cancel(struct rc_call *call);

/* Synchronous unary call: returns the gRPC status code.  On OK *resp is
 * the unpacked response (free with protobuf_c_message_free_unpacked and
 * NULL allocator).  *msg gets the status message (malloc'd) if msg != NULL. */
int rc_unary(struct rc_client *c, const char *path, const ProtobufCMessage *req,
	     const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, char **msg,
	     int64_t timeout_us);

#endif
