/*
 * status.h - the status page for people on reactord's http: listener: an
 * HTML page at / (with /operations/NAME and /builds/ID views), the JSON it
 * fetches under /api/, and /events, a server-sent-events stream that tells
 * open pages what changed (fed by the scheduler's and the buckets' pub/sub
 * channels, never by a timer).  Read-only: GET and HEAD only.  Every page
 * and answer carries Content-Security-Policy default-src 'self', so the
 * page's script and style are separate same-origin resources embedded in
 * the binary (src/services/status/, contrib/build/asset2c.sh) and nothing
 * inline runs; every value is JSON-escaped here and put in the DOM as text
 * by the script.  The http listener is loopback unless declared insecure
 * (transport/http.h): the page has no login of its own.
 */
#ifndef REACTOR_STATUS_H
#define REACTOR_STATUS_H

#include "core/util.h"

struct event_base;
struct cfg;

/* Limits: page clients following /events at once (more get 503), bytes
 * queued unsent to one of them before it is dropped, log bytes one
 * /api/logs answer carries, log bytes shown inline on an operation. */
#define STATUS_MAX_EVENT_CLIENTS 32 /* of the listener's HTTP_MAX_CONNECTIONS */
#define STATUS_MAX_EVENT_BACKLOG (64 * 1024)
#define STATUS_MAX_LOG_BYTES	 (1024 * 1024)
#define STATUS_MAX_INLINE_LOG	 (64 * 1024)
/* /api/status gathers in flight at once (more get 503). */
#define STATUS_MAX_GATHERS 16

/* Register the routes (before http_start) and subscribe to the channels
 * (before store_start, after keys_set_ns).  Call once. */
void status_init(struct event_base *base, const struct cfg *cfg);
/* A reload: the config in force (cfg stays valid until the next call). */
void status_configure(const struct cfg *cfg);
/* Close every /events stream and free what the module holds (before the
 * loop's base is freed).  Idempotent. */
void status_shutdown(void);

#endif
