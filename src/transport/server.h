/*
 * server.h - listeners and the set of accepted HTTP/2 connections.
 * Binds every configured address (TCP v4/v6, unix), logs one parseable
 * "listening on ADDR" line per listener, and drains connections with GOAWAY
 * on shutdown.
 */
#ifndef REACTOR_SERVER_H
#define REACTOR_SERVER_H

#include <stddef.h>

#include "core/util.h"
#include "transport/h2.h"

struct event_base;
struct cfg;

/* Bind all listeners of cfg.  Every stream a client opens on an accepted
 * connection is handed to on_stream(stream, arg) (the layer above, injected
 * by main: the transport knows nothing of calls).  Returns 0, or -1 with
 * *err (malloc'd). */
int server_start(struct event_base *base, const struct cfg *cfg, h2_accept_stream_fn on_stream,
		 void *arg, char **err) WARN_UNUSED;

/* SIGHUP: build a new SSL context for every TLS listener (the certificate,
 * key and client CA files read again; the TLS settings of cfg's entry
 * with the same address, else those it started with) and use it for new
 * connections; open connections keep theirs.  A listener whose new files
 * do not load keeps its context, and an error is logged.  Returns 0, or
 * -1 when some listener kept its old context. */
int server_reload_tls(const struct cfg *cfg);

/* Check that every TLS listener of cfg can build its SSL context (files
 * readable, key matching the certificate): 0, or -1 with *err. */
int server_check_tls(const struct cfg *cfg, char **err) WARN_UNUSED;

/* Apply reloadable HTTP/2 settings to connections accepted from now on. */
void server_reconfigure(const struct cfg *cfg);

/* Bound addresses ("127.0.0.1:43121", "[::1]:5000", "unix:/path"). */
size_t server_nbound(void);
const char *server_bound(size_t i);
/* How a client of this process (its local workers, its master) reaches it:
 * a unix listener if any, else plaintext TCP, else TLS ("grpcs://..."),
 * wildcard addresses as loopback, skipping listeners limited to some
 * services.  NULL when none fits.  Malloc'd. */
char *server_self_target(void);

/* Write the bound addresses, one per line, to path (atomically). */
int server_write_ready_file(const char *path) WARN_UNUSED;

/* Stop accepting and send GOAWAY on every connection.  `on_idle` is called
 * (once) when the last connection has closed, possibly right away. */
void server_drain(void (*on_idle)(void *arg), void *arg);

/* Close every connection now (after the drain grace). */
void server_close_all(void);

size_t server_nconns(void);

/* Free listeners (and unlink unix sockets).  Connections must be gone. */
void server_stop(void);

#endif
