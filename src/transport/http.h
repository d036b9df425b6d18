/*
 * http.h - reactord's plain HTTP/1.1 listener (config `http:`) for people
 * and scrapers: the status page and /metrics.  Served by libevent's evhttp
 * on the one event loop, apart from the gRPC listeners.  The transport
 * knows nothing of pages: the layers above register handlers by path
 * prefix (main wires them).
 *
 * Limits (a client cannot grow memory): request headers 16 KiB, request
 * bodies 4 KiB (only GET and HEAD are served), HTTP_MAX_CONNECTIONS open
 * connections (beyond that the listeners pause until one closes), and a
 * 30 s timeout on reading a request and on writing a reply.  Long-lived
 * replies (server-sent events) call http_hold_open() so that a client that
 * only listens is not cut off by the read timeout.
 */
#ifndef REACTOR_HTTP_H
#define REACTOR_HTTP_H

#include <stddef.h>

#include "core/util.h"

struct event_base;
struct evhttp_request;
struct cfg;

#define HTTP_MAX_CONNECTIONS 64
#define HTTP_TIMEOUT_S	     30

/* A request handler.  path is the request's path as sent (percent-encoded,
 * without the query string; evhttp_request_get_evhttp_uri() has the rest).
 * The handler must answer: http_reply*, or evhttp_send_reply_start/chunk/
 * end for a stream (after http_hold_open).  Only GET and HEAD reach it;
 * for HEAD, evhttp drops the body it is given. */
typedef void (*http_handler_fn)(struct evhttp_request *req, const char *path, void *arg);

/* Route requests whose path starts with prefix to fn; the longest matching
 * prefix wins; "/" catches what nothing else does.  May be called before
 * or after http_start.  Registering a prefix again replaces its handler;
 * fn NULL removes it.  prefix is copied. */
void http_route(const char *prefix, http_handler_fn fn, void *arg);

/* Check the http: entries of cfg without binding: a plaintext TCP address
 * beyond loopback is refused unless the entry says insecure: true (the
 * pages show command lines and build parameters).  0, or -1 with *err
 * (malloc'd, names the entry). */
int http_check(const struct cfg *cfg, char **err) WARN_UNUSED;

/* Bind every http: address of cfg (none: nothing to do) and serve on
 * base.  Logs "http listening on ADDR" per listener.  0, or -1 with *err
 * (malloc'd); after a failure http_stop() cleans up. */
int http_start(struct event_base *base, const struct cfg *cfg, char **err) WARN_UNUSED;

/* Close the listeners and every open HTTP connection (evhttp_free: the
 * close callbacks of held-open connections run from here), and forget
 * the routes. */
void http_stop(void);

/* Bound addresses ("127.0.0.1:50080", "[::1]:43121", "unix:/path"); the
 * ready-file lists them as "http://ADDR" after the gRPC listeners. */
size_t http_nbound(void);
const char *http_bound(size_t i);

/* Reply helpers: body copied; sets Content-Type, Content-Length,
 * Cache-Control: no-store, X-Content-Type-Options: nosniff. */
void http_reply(struct evhttp_request *req, int code, const char *content_type, const void *body,
		size_t len);
/* A text/plain reply holding msg and a newline. */
void http_reply_error(struct evhttp_request *req, int code, const char *msg);

/* Set the headers http_reply sets (Cache-Control, nosniff, Content-Type)
 * on a reply the caller sends itself (evhttp_send_reply_start). */
void http_set_headers(struct evhttp_request *req, const char *content_type);

/* For a reply that stays open (server-sent events): no read timeout on
 * this connection from now on (the client sends nothing more), while a
 * client that stops reading is still dropped after HTTP_TIMEOUT_S with
 * output pending.  Call it before evhttp_send_reply_start; learn about
 * the client leaving with evhttp_connection_set_closecb on
 * evhttp_request_get_connection(req). */
void http_hold_open(struct evhttp_request *req);

/* Open HTTP connections (for /metrics). */
size_t http_nconns(void);

#endif
