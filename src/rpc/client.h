/*
 * client.h - reactord's gRPC client: the same HTTP/2 layer as the server,
 * with a client session, over TCP (plaintext or TLS: ALPN h2, TLS 1.2+,
 * the server's certificate checked against a CA file or the system's
 * store and against the server name, an optional client certificate) or a
 * unix socket, with an optional bearer token on every call.  Used by
 * reactorctl, reactor-worker, the master and the tests.  Asynchronous
 * calls on a libevent base, plus a synchronous unary helper that runs the
 * loop until the reply arrives.
 */
#ifndef REACTOR_CLIENT_H
#define REACTOR_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "core/util.h"
#include "transport/h2.h"

struct event_base;
struct bufferevent;
struct rc_client;
struct rc_call;

/* TLS settings of a client connection.  Strings are borrowed for the
 * duration of rc_client_connect_opts(): the files are read there. */
struct rc_tls {
	bool enabled;		 /* TLS for a target without a scheme (grpcs:// is always TLS) */
	const char *ca;		 /* PEM file of the CAs to trust; NULL: the system's store */
	const char *cert, *key;	 /* client certificate (chain) and its key, PEM: both or neither */
	const char *server_name; /* name the server's certificate must carry (also sent as
				    SNI); NULL: the target's host, a name or an IP address */
};

/* Everything a caller may say about how to reach a server. */
struct rc_client_opts {
	struct rc_tls tls;
	/* Sent as "authorization: Bearer TOKEN" on every call: token, or the
	 * first line of token_file, read at each connect (so a reconnect picks
	 * up a rotated token).  Never logged nor put in an error message. */
	const char *token;
	const char *token_file;
};

/* A target split up: how rc_client_connect_opts() reads it.
 *   grpcs://HOST:PORT, https://HOST:PORT   TLS
 *   grpc://HOST:PORT, http://HOST:PORT     plaintext (no TLS settings allowed)
 *   HOST:PORT, [V6]:PORT                   TLS when want_tls, else plaintext
 *   unix:/PATH (optionally after grpc://)  plaintext (no TLS settings allowed)
 * want_tls: the caller has TLS settings (see rc_client_opts_tls()). */
struct rc_target {
	bool tls;
	char *host; /* brackets dropped; NULL for a unix socket */
	char *port;
	char *path; /* unix socket; NULL for TCP */
};
int rc_target_parse(const char *target, bool want_tls, struct rc_target *t, char **err) WARN_UNUSED;
void rc_target_free(struct rc_target *t);
/* True when o asks for TLS (enabled or any TLS file or name set). */
bool rc_client_opts_tls(const struct rc_client_opts *o);

/* Connect to target (see struct rc_target) with o (NULL: plaintext unless
 * the target says grpcs://, no token).  Returns NULL with *err (malloc'd)
 * on a bad target or when a CA, certificate, key or token file can't be
 * used; a refused connection or a failed TLS handshake shows up on the
 * first call (UNAVAILABLE for TLS, naming the reason: untrusted
 * certificate, name mismatch, no ALPN h2, client certificate refused). */
struct rc_client *rc_client_connect_opts(struct event_base *base, const char *target,
					 const struct rc_client_opts *o, char **err);
/* rc_client_connect_opts(base, target, NULL, err). */
struct rc_client *rc_client_connect(struct event_base *base, const char *target, char **err);
/* Load o's files the way a connect would, to refuse a bad configuration
 * at start: 0, or -1 with *err (malloc'd). */
int rc_client_opts_check(const struct rc_client_opts *o, char **err) WARN_UNUSED;

/* Command-line flags every client program takes: put RC_CLIENT_LONGOPTS
 * in the getopt_long table, hand each option to rc_client_opt() (true when
 * it was one of these), print RC_CLIENT_USAGE in the help, and call
 * rc_client_opts_env() after parsing ($REACTOR_TOKEN_FILE). */
enum {
	RC_OPT_TLS = 0x1000,
	RC_OPT_TLS_CA,
	RC_OPT_TLS_CERT,
	RC_OPT_TLS_KEY,
	RC_OPT_TLS_SERVER_NAME,
	RC_OPT_TOKEN_FILE,
};
#define RC_CLIENT_LONGOPTS                                                                         \
	{"tls", no_argument, NULL, RC_OPT_TLS},                                                    \
		{"tls-ca", required_argument, NULL, RC_OPT_TLS_CA},                                \
		{"tls-cert", required_argument, NULL, RC_OPT_TLS_CERT},                            \
		{"tls-key", required_argument, NULL, RC_OPT_TLS_KEY},                              \
		{"tls-server-name", required_argument, NULL, RC_OPT_TLS_SERVER_NAME},              \
	{                                                                                          \
		"token-file", required_argument, NULL, RC_OPT_TOKEN_FILE                           \
	}
#define RC_CLIENT_USAGE                                                                            \
	"  TARGET with grpcs:// (or https://) or any --tls* flag: TLS\n"                           \
	"  --tls               TLS, trusting the system's CAs\n"                                   \
	"  --tls-ca FILE       TLS, trusting the CAs in FILE (PEM)\n"                              \
	"  --tls-cert FILE     client certificate (PEM) for servers that ask for one\n"            \
	"  --tls-key FILE      the client certificate's private key (PEM)\n"                       \
	"  --tls-server-name NAME\n"                                                               \
	"                      name the server's certificate must have (default: the\n"            \
	"                      target's host; use it when connecting by address)\n"                \
	"  --token-file FILE   send the token in FILE as \"authorization: Bearer\" on\n"           \
	"                      every call (default $REACTOR_TOKEN_FILE)\n"
bool rc_client_opt(struct rc_client_opts *o, int opt, const char *arg);
void rc_client_opts_env(struct rc_client_opts *o);
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
/* Request bytes queued on the call and not yet handed to HTTP/2 (the
 * server's flow control holds them back): a streaming sender stops above
 * its mark and asks rc_call_on_writable() for cb(call, arg) once the
 * queue drained below the h2 low-water mark. */
size_t rc_call_pending(const struct rc_call *call);
void rc_call_on_writable(struct rc_call *call, void (*cb)(struct rc_call *call, void *arg));

/* Asynchronous unary call: pack req and call cb(code, message, resp, arg)
 * once (resp unpacked with resp_desc; NULL unless code is OK, freed after
 * cb returns; an OK status without a valid message is INTERNAL).
 * Returns 0, or -1 when c is NULL or its connection is closed (cb is
 * never called then). */
typedef void (*rc_unary_cb)(int code, const char *message, ProtobufCMessage *resp, void *arg);
int rc_unary_start(struct rc_client *c, const char *path, const ProtobufCMessage *req,
		   const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_us, rc_unary_cb cb,
		   void *arg) WARN_UNUSED;

/* Synchronous unary call (rc_unary_start, run until it ends): returns the
 * gRPC status code.  On OK *resp is
 * the unpacked response (free with protobuf_c_message_free_unpacked and
 * NULL allocator).  *msg gets the status message (malloc'd) if msg != NULL. */
int rc_unary(struct rc_client *c, const char *path, const ProtobufCMessage *req,
	     const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, char **msg,
	     int64_t timeout_us);

#endif
