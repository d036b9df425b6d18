/*
 * tls.h - server-side TLS for the listeners (OpenSSL 3 through libevent's
 * bufferevent_openssl).  A tls_ctx is one listener's SSL context built
 * from its listen[].tls config: TLS 1.2 at least, ALPN "h2" only, no
 * renegotiation, no compression, AEAD cipher suites, and the client
 * certificate policy (client-auth none / optional / require).  SIGHUP
 * builds a new context and swaps it in for new connections; connections
 * hold a reference to the one they were accepted with.
 */
#ifndef REACTOR_TLS_H
#define REACTOR_TLS_H

#include <stdbool.h>

#include "core/util.h"

struct bufferevent;
struct cfg_tls;
struct event_base;
struct ssl_ctx_st;

/* Build an SSL context from t: reads and checks the certificate chain,
 * the key (it must match) and the client CA.  Returns the context, or
 * NULL with *err (malloc'd, names the file and what is wrong). */
struct ssl_ctx_st *tls_ctx_new(const struct cfg_tls *t, char **err) WARN_UNUSED;
void tls_ctx_free(struct ssl_ctx_st *ctx);

/* A printable summary of the context's certificate: "subject CN=x,
 * serial 0A1B, expires 2026-01-01" (malloc'd). */
char *tls_ctx_describe(struct ssl_ctx_st *ctx);

/* An accepting TLS bufferevent on fd (closed with it), holding its own
 * reference to ctx; NULL on failure (fd closed). */
struct bufferevent *tls_accept_bev(struct event_base *base, struct ssl_ctx_st *ctx, int fd);

/* True when bev is a TLS bufferevent. */
bool tls_bev_is_tls(struct bufferevent *bev);

/* After the handshake: the negotiated protocol summary ("TLSv1.3
 * TLS_AES_128_GCM_SHA256"), malloc'd; whether ALPN chose "h2". */
char *tls_bev_describe(struct bufferevent *bev);
bool tls_bev_alpn_h2(struct bufferevent *bev);

/* The verified client certificate's identity, malloc'd, or NULL when the
 * client sent none (or it did not verify).  The identity is, in this
 * order: the first URI subjectAltName, the first DNS subjectAltName, the
 * subject's commonName. */
char *tls_bev_peer_identity(struct bufferevent *bev);

/* The OpenSSL errors queued for bev (a failed handshake), malloc'd, or
 * NULL when there are none; clears them. */
char *tls_bev_error(struct bufferevent *bev);

#endif
