/*
 * status_int.h - what the status page's files share (status.c: routes,
 * assets, headers, /events; status_api.c: the JSON answers).  Not for
 * other modules.
 */
#ifndef REACTOR_STATUS_INT_H
#define REACTOR_STATUS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct evhttp_request;
struct cfg;

#define SMOD "status"

/* The config in force (NULL before status_init). */
const struct cfg *status_cfg(void);
/* mono_us() at status_init, for the uptime. */
int64_t status_started_mono(void);

/* Reply with body (code 200...) and the page's security headers
 * (Content-Security-Policy, nosniff, no-store, no framing). */
void status_send(struct evhttp_request *req, int code, const char *ctype, const void *body,
		 size_t len);
/* The same for a JSON error {"error": msg}. */
void status_send_error(struct evhttp_request *req, int code, const char *msg);
/* The same with an evbuffer's contents (drained). */
void status_send_buf(struct evhttp_request *req, int code, const char *ctype, struct evbuffer *b);

/* JSON writing.  Strings go through core/json.h's json_quote, after
 * invalid UTF-8 became U+FFFD and with '<', '>' and '&' written as \u
 * escapes, so no answer holds markup even if a browser were to sniff it. */
void sj_strn(struct evbuffer *b, const char *s, size_t len);
void sj_str(struct evbuffer *b, const char *s); /* NULL writes null */
/* ,"key": (comma unless first) */
void sj_key(struct evbuffer *b, bool first, const char *key);

/* /api/... (path is what follows "/api/"). */
void status_api(struct evhttp_request *req, const char *path);
/* Cancel what status_api started (the requests are then answered 503). */
void status_api_shutdown(void);

/* Decode a %-escaped path segment into out (outlen bytes); false when it
 * is empty, too long, holds a '/', a NUL or a byte outside [A-Za-z0-9._-]
 * after decoding (what operation names and ids are made of). */
bool status_segment(const char *in, char *out, size_t outlen);
/* The same, with '/' allowed between parts that are neither empty nor
 * dots only (operation names: "operations/UUID", "INST/operations/UUID"). */
bool status_name(const char *in, bool slashes, char *out, size_t outlen);

#endif
