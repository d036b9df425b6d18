/*
 * call.h - one gRPC call on the server side, and the API service handlers
 * use.  The call layer validates request headers, reassembles and decodes
 * request messages (protobuf-c), enforces deadlines and size limits, and
 * encodes responses, trailers and rich error details.  Handlers may answer
 * at once or later (after a Redis reply or a pub/sub wake-up).
 *
 * Lifetime: the HTTP/2 stream holds one reference.  A handler that answers
 * asynchronously takes its own reference (call_ref) and drops it
 * (call_unref) when its callback has run; it checks call_done() first,
 * because the client may have gone away meanwhile.  After call_done() is
 * true, call_send/call_finish are harmless no-ops.
 */
#ifndef REACTOR_CALL_H
#define REACTOR_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "rpc/grpc.h"
#include "core/log.h"
#include "core/util.h"

struct call;
struct h2_stream;
struct cfg;

enum rpc_kind { RPC_UNARY, RPC_SERVER_STREAM, RPC_CLIENT_STREAM, RPC_BIDI };

enum call_state {
	CALL_HEADERS,  /* waiting for / checking request headers */
	CALL_ACTIVE,   /* dispatched to its handler */
	CALL_FINISHED, /* status sent (or queued) */
	CALL_CANCELLED /* client reset, connection lost, or shutdown */
};
const char *call_state_name(enum call_state s);

/* One entry of the dispatch table (see dispatch.c). */
struct rpc_method {
	const char *path;
	enum rpc_kind kind;
	const ProtobufCMessageDescriptor *req;
	const ProtobufCMessageDescriptor *resp;
	/* A decoded request message.  For unary and server-streaming calls it
	 * is called once, after the client half-closed.  The message lives in
	 * the call's arena, which is reset when the handler returns (unless it
	 * called call_take_request): nothing may point into it afterwards. */
	void (*on_message)(struct call *c, const ProtobufCMessage *msg);
	/* Client-/bidi-streaming: the client finished sending. */
	void (*on_half_close)(struct call *c);
	/* The call is over without the handler finishing it (client reset,
	 * deadline, shutdown): drop waits and timers.  Optional. */
	void (*on_cancel)(struct call *c);
	/* The response buffer drained below the low-water mark.  Optional. */
	void (*on_writable)(struct call *c);
	/* Method-level authorization, run with the first request message just
	 * before on_message gets it: true to go on, false when it finished the
	 * call (PERMISSION_DENIED).  Optional (NULL: anyone). */
	bool (*authorize)(struct call *c, const ProtobufCMessage *msg);
	/* A hand-written decoder for the hottest requests, used instead of
	 * protobuf-c's.  Returns a message allocated with call_alloc whose
	 * start is a `req` message (so authorize and on_message read it the
	 * usual way; the handler knows the rest of its layout), pointing
	 * nowhere into data (valid only during the call) -- except for
	 * client-/bidi-streaming methods, whose on_message runs before data
	 * goes away: there bytes fields may point into it, and the handler
	 * must never call_take_request (asserted).  It checks string
	 * fields as the call layer does (NUL-free UTF-8).  NULL when the bytes
	 * are no valid request: *bad_string names the string field at fault,
	 * or stays NULL for malformed wire bytes.  Optional. */
	ProtobufCMessage *(*decode)(struct call *c, const uint8_t *data, size_t len,
				    const char **bad_string);
};

/* Limits and switches taken from the config; call at start and on reload. */
void call_configure(const struct cfg *cfg);

/* Hooks the services inject at start (the call layer knows no service).
 *
 * The method lookup: the table row for a request path, or NULL for an
 * unknown method (answered UNIMPLEMENTED).  Without one every method is
 * unknown. */
typedef const struct rpc_method *(*call_lookup_fn)(const char *path);
void call_set_lookup(call_lookup_fn fn);

/* What the access log carries from request metadata the call layer does not
 * understand itself (the REAPI RequestMetadata header). */
struct call_log_fields {
	char *invocation_id; /* malloc'd; the call frees it; NULL when unknown */
	char *identity;	     /* malloc'd by the authenticator; NULL when none */
};
/* The metadata decoder: called once per call after its headers were
 * accepted, with the metadata readable through call_metadata(); it fills
 * `out` (zeroed before the call).  Optional. */
typedef void (*call_metadata_fn)(const struct call *c, struct call_log_fields *out);
void call_set_metadata_decoder(call_metadata_fn fn);

/* The authenticator: called once per call right after the metadata
 * decoder, before the method's handler sees anything; it resolves the
 * caller's identity (keeping what it needs with call_set_auth) and names it
 * in out->identity for the access log.  Returns 0, or -1 when it finished
 * the call (UNAUTHENTICATED).  Optional. */
typedef int (*call_auth_fn)(struct call *c, struct call_log_fields *out);
void call_set_authenticator(call_auth_fn fn);

/* Entry from the HTTP/2 layer (an h2_accept_stream_fn main hands to the
 * server): a client opened a stream. */
void call_accept(struct h2_stream *s, void *arg);

/* Handler API ------------------------------------------------------------- */

/* Inside on_message: keep the request message past the handler's return
 * (work that spans several loop passes).  It then lives in the call's
 * arena until the call is freed: the handler holds a call reference
 * (call_ref) while it uses it and never frees it itself (no
 * protobuf_c_message_free_unpacked: that would free() arena memory). */
void call_take_request(struct call *c);

/* n bytes (aligned for any type) from the call's arena, for what a
 * handler builds around its reply (arrays of pointers, response
 * sub-messages): gone with the request message, i.e. when the handler
 * returns unless it took the request, else when the call is freed.
 * Never NULL. */
void *call_alloc(struct call *c, size_t n);
/* A NUL-terminated copy of s[0..n) in the call's arena (same lifetime). */
char *call_strndup(struct call *c, const char *s, size_t n);

/* Queue one response message.  Returns 0, or -1 when the call is done. */
int call_send(struct call *c, const ProtobufCMessage *msg);
/* Queue one already-serialized message without copying: buf holds 5 free
 * bytes (for the gRPC prefix) followed by len bytes of message; the call
 * layer takes ownership of buf (malloc'd).  Returns 0 or -1. */
int call_send_owned(struct call *c, uint8_t *buf, size_t len);
/* Send the response headers now, before any message (a server-streaming
 * call tells its client "I am listening" this way).  No-op when they went
 * out already or the call is done. */
void call_send_headers(struct call *c);
/* Finish with a status; fmt may be NULL for no message. */
void call_finish(struct call *c, int code, const char *fmt, ...) PRINTF_LIKE(3, 4);
/* Finish with google.rpc.Status details in grpc-status-details-bin. */
void call_finish_details(struct call *c, int code, const struct grpc_any *details, size_t ndetails,
			 const char *fmt, ...) PRINTF_LIKE(5, 6);
/* Unary convenience: send msg and finish OK. */
void call_reply(struct call *c, const ProtobufCMessage *msg);

bool call_done(const struct call *c);
void call_ref(struct call *c);
void call_unref(struct call *c);
void call_set_data(struct call *c, void *data);
void *call_data(const struct call *c);
/* Response bytes queued and not yet sent. */
size_t call_pending(const struct call *c);
/* A handler that stopped producing while call_pending() > 0 asks for
 * on_writable once the queue drains (below the h2 low-water mark). */
void call_want_writable(struct call *c);
/* Hold the request's input (true): no more request bytes are handed back
 * to HTTP/2, so the client's flow-control window shuts once what it may
 * send arrived; false releases them again.  A handler that forwards a
 * stream elsewhere holds while its destination is slow. */
void call_hold_input(struct call *c, bool hold);
/* Request metadata value (lowercase key); -bin values are decoded, with
 * *len set.  NULL when absent. */
const char *call_metadata(const struct call *c, const char *key, size_t *len);
/* The authenticator's per-call state (freed with free_fn when the call
 * is freed); NULL until set. */
void call_set_auth(struct call *c, void *p, void (*free_fn)(void *));
void *call_auth(const struct call *c);
/* The caller's address ("127.0.0.1:5000", "[::1]:5000", "unix"). */
const char *call_peer(const struct call *c);
/* The identity of the caller's verified TLS client certificate: its first
 * URI subjectAltName, else its first DNS subjectAltName, else its subject
 * commonName.  NULL without one (plaintext, no certificate).  Valid for
 * the call's life. */
const char *call_tls_identity(const struct call *c);
/* The ids that name the call in logs (core/log.h's LOG_STREAM). */
uint64_t call_conn_id(const struct call *c);
int32_t call_stream_id(const struct call *c);
/* How every layer above names a call in a log line: its stream the way
 * transport and rpc do, then the peer, e.g.
 *   LOGI(MOD, CALL_FMT ": bot %s opens session", CALL_ARGS(c), id); */
#define CALL_FMT     LOG_STREAM " peer=%s"
#define CALL_ARGS(c) call_conn_id(c), call_stream_id(c), call_peer(c)
const struct rpc_method *call_method(const struct call *c);
/* Remaining time before the deadline in microseconds (INT64_MAX if none). */
int64_t call_remaining_us(const struct call *c);

/* Server-wide ---------------------------------------------------------- */

/* Number of calls not yet finished. */
size_t call_active_count(void);
/* Finish every active call with `code` (used after the shutdown grace). */
void call_cancel_all(int code, const char *msg);
/* Set the event base the call layer's timers run on. */
struct event_base;
void call_set_base(struct event_base *base);

/* For messages nested as bytes (google.protobuf.Any values): the name of
 * the first string field of `desc` in the serialized `data` that is not
 * NUL-free UTF-8, or NULL when all are.  Request messages are checked by
 * the call layer already. */
const char *call_bad_string_field(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
				  size_t len);

/* The UTF-8 check the call layer applies to string fields: true when
 * s[0..len) is NUL-free UTF-8 (for decode hooks). */
bool call_string_ok(const uint8_t *s, size_t len);

/* Protobuf-c allocator that aborts on out-of-memory. */
extern ProtobufCAllocator call_pb_allocator;

#endif
