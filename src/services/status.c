/*
 * status.c - the status page's routes on the http: listener: the page
 * itself (one HTML document for /, /operations/NAME and /builds/ID; its
 * script reads the path), its script and style (embedded at build time
 * from src/services/status/ by contrib/build/asset2c.sh), the security
 * headers every answer carries, and /events: server-sent events telling
 * open pages what changed.  /events is fed by the same Redis channels the
 * scheduler (job changes) and the buckets (build events) publish on; the
 * changes seen in one loop pass go out together, at most
 * STATUS_MAX_EVENT_CLIENTS streams are open, and a client that lets more
 * than STATUS_MAX_EVENT_BACKLOG bytes pile up unsent is dropped.  The JSON
 * answers live in status_api.c.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/cfg.h"
#include "core/json.h"
#include "core/list.h"
#include "core/log.h"
#include "core/util.h"
#include "domain/master.h"
#include "services/status.h"
#include "services/status_int.h"
#include "state/buckets_keys.h"
#include "state/keys.h"
#include "state/store.h"
#include "transport/http.h"

/* The embedded files (gen/status_assets.c, contrib/build/asset2c.sh). */
struct status_asset {
	const char *name; /* file name: "page.html", "status.js"... */
	const char *data;
	size_t len;
};
extern const struct status_asset status_assets[];
extern const size_t status_nassets;

/* At most this many changes are named per loop pass; past it the pass
 * says "refresh" (everything may have changed). */
#define MAX_PENDING 32

struct sse_client {
	struct list link;
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
};

static struct {
	struct event_base *base;
	const struct cfg *cfg;
	int64_t started;
	bool inited;
	struct list clients;
	int nclients;
	struct event *flush_ev;
	/* Changes seen this loop pass: "op\0job" / "build\0{json}" lines. */
	struct evbuffer *pending;
	int npending;
	bool overflow;
	unsigned long dropped; /* slow clients dropped */
} st = {.clients = LIST_INIT(st.clients)};

const struct cfg *status_cfg(void)
{
	return st.cfg;
}

int64_t status_started_mono(void)
{
	return st.started;
}

/* ---- replies ------------------------------------------------------------------ */

static void security_headers(struct evhttp_request *req)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Security-Policy",
			  "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
			  "form-action 'none'");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	/* http_reply and http_set_headers add nosniff and no-store. */
}

void status_send(struct evhttp_request *req, int code, const char *ctype, const void *body,
		 size_t len)
{
	security_headers(req);
	http_reply(req, code, ctype, body, len);
}

void status_send_buf(struct evhttp_request *req, int code, const char *ctype, struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	const void *p = evbuffer_pullup(b, -1);
	status_send(req, code, ctype, p ? p : "", n);
	evbuffer_drain(b, n);
}

void status_send_error(struct evhttp_request *req, int code, const char *msg)
{
	struct evbuffer *b = evbuffer_new();
	if (!b)
		abort();
	evbuffer_add_printf(b, "{\"error\":");
	sj_str(b, msg);
	evbuffer_add_printf(b, "}\n");
	status_send_buf(req, code, "application/json", b);
	evbuffer_free(b);
}

/* ---- JSON --------------------------------------------------------------------- */

void sj_strn(struct evbuffer *b, const char *s, size_t len)
{
	/* Valid UTF-8 first: a browser decoding the answer must not guess. */
	char *clean = NULL;
	if (!utf8_valid(s, len)) {
		clean = xmalloc(len * 3 + 1);
		size_t o = 0;
		const unsigned char *p = (const unsigned char *)s, *end = p + len;
		while (p < end) {
			size_t k = utf8_seq_len(p, end);
			if (k == 0) {
				memcpy(clean + o, "\xef\xbf\xbd", 3);
				o += 3, p++;
			} else {
				memcpy(clean + o, p, k);
				o += k, p += k;
			}
		}
		s = clean, len = o;
	}
	char *q = NULL;
	size_t qn = 0;
	json_quote(&q, &qn, s, len);
	/* json_quote leaves these as they are; no answer holds markup. */
	for (size_t i = 0, from = 0; i <= qn; i++) {
		const char *esc = NULL;
		if (i < qn)
			esc = q[i] == '<'   ? "\\u003c"
			      : q[i] == '>' ? "\\u003e"
			      : q[i] == '&' ? "\\u0026"
					    : NULL;
		if (esc || i == qn) {
			evbuffer_add(b, q + from, i - from);
			if (esc)
				evbuffer_add(b, esc, 6);
			from = i + 1;
		}
	}
	free(q);
	free(clean);
}

void sj_str(struct evbuffer *b, const char *s)
{
	if (!s)
		evbuffer_add(b, "null", 4);
	else
		sj_strn(b, s, strlen(s));
}

void sj_key(struct evbuffer *b, bool first, const char *key)
{
	if (!first)
		evbuffer_add(b, ",", 1);
	sj_str(b, key);
	evbuffer_add(b, ":", 1);
}

bool status_segment(const char *in, char *out, size_t outlen)
{
	return status_name(in, false, out, outlen);
}

bool status_name(const char *in, bool slashes, char *out, size_t outlen)
{
	size_t o = 0;
	for (const char *p = in; *p; p++) {
		int c = (unsigned char)*p;
		if (c == '%') {
			int v = 0;
			for (int k = 1; k <= 2; k++) {
				int h = (unsigned char)p[k];
				if (h >= '0' && h <= '9')
					v = v * 16 + h - '0';
				else if ((h | 0x20) >= 'a' && (h | 0x20) <= 'f')
					v = v * 16 + (h | 0x20) - 'a' + 10;
				else
					return false;
			}
			c = v;
			p += 2;
		}
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || (c == '/' && slashes)))
			return false;
		/* No empty part ("a//b", "/a"). */
		if (c == '/' && (o == 0 || out[o - 1] == '/'))
			return false;
		if (o + 1 >= outlen)
			return false;
		out[o++] = (char)c;
	}
	if (o == 0 || out[o - 1] == '/')
		return false;
	out[o] = '\0';
	/* No dot-only part either. */
	for (const char *q = out; q; q = strchr(q, '/')) {
		q += *q == '/';
		size_t n = strcspn(q, "/");
		if (strspn(q, ".") == n)
			return false;
	}
	return true;
}

/* ---- the page and its files --------------------------------------------------- */

static const struct status_asset *asset(const char *name)
{
	for (size_t i = 0; i < status_nassets; i++)
		if (strcmp(status_assets[i].name, name) == 0)
			return &status_assets[i];
	return NULL;
}

/* A path that is no page: the listener's own plain "not found" (what
 * http.c answers where no route matches), with this page's headers. */
static void not_found(struct evhttp_request *req)
{
	static const char msg[] = "not found\n";
	status_send(req, HTTP_NOTFOUND, "text/plain; charset=utf-8", msg, sizeof msg - 1);
}

static const char *asset_type(const char *name)
{
	if (str_endswith(name, ".html"))
		return "text/html; charset=utf-8";
	if (str_endswith(name, ".js"))
		return "text/javascript; charset=utf-8";
	if (str_endswith(name, ".css"))
		return "text/css; charset=utf-8";
	return "application/octet-stream";
}

static void send_asset(struct evhttp_request *req, const char *name)
{
	const struct status_asset *a = asset(name);
	if (!a) {
		status_send_error(req, HTTP_NOTFOUND, "no such file");
		return;
	}
	status_send(req, HTTP_OK, asset_type(name), a->data, a->len);
}

static bool get_only(struct evhttp_request *req)
{
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD)
		return true;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
	status_send_error(req, 405, "the status page is read-only: GET and HEAD only");
	return false;
}

/* "/", "/status.js", "/status.css", "/operations/NAME", "/builds/ID". */
static void on_page(struct evhttp_request *req, const char *path, void *arg)
{
	(void)arg;
	if (!get_only(req))
		return;
	char seg[256];
	if (strcmp(path, "/favicon.ico") == 0)
		status_send(req, HTTP_NOCONTENT, "image/x-icon", "", 0);
	else if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0)
		send_asset(req, "page.html");
	else if (strcmp(path, "/status.js") == 0 || strcmp(path, "/status.css") == 0)
		send_asset(req, path + 1);
	else if (strncmp(path, "/operations/", 12) == 0 &&
		 status_name(path + 12, true, seg, sizeof seg))
		send_asset(req, "page.html");
	else if (strncmp(path, "/builds/", 8) == 0 && status_segment(path + 8, seg, sizeof seg) &&
		 strspn(seg, "0123456789") == strlen(seg))
		send_asset(req, "page.html");
	else
		not_found(req);
}

static void on_api(struct evhttp_request *req, const char *path, void *arg)
{
	(void)arg;
	if (!get_only(req))
		return;
	status_api(req, path + strlen("/api/"));
}

/* ---- /events ------------------------------------------------------------------ */

static void client_free(struct sse_client *c)
{
	list_del(&c->link);
	st.nclients--;
	free(c);
}

static void on_client_close(struct evhttp_connection *evcon, void *arg)
{
	struct sse_client *c = arg;
	(void)evcon;
	LOGD(SMOD, "events client gone");
	struct evhttp_request *req = c->req;
	client_free(c);
	/* The request was detached from its connection: ending it frees it. */
	evhttp_send_reply_end(req);
}

/* Close c at once (a slow client, or shutdown). */
static void client_drop(struct sse_client *c)
{
	struct evhttp_connection *evcon = c->evcon;
	evhttp_connection_set_closecb(evcon, NULL, NULL);
	client_free(c);
	evhttp_connection_free(evcon);
}

static size_t client_backlog(const struct sse_client *c)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
	return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

static void client_send(struct sse_client *c, const void *data, size_t len)
{
	if (client_backlog(c) + len > STATUS_MAX_EVENT_BACKLOG) {
		LOGI(SMOD, "events client dropped: %zu bytes unsent (limit %d)", client_backlog(c),
		     STATUS_MAX_EVENT_BACKLOG);
		st.dropped++;
		client_drop(c);
		return;
	}
	struct evbuffer *b = evbuffer_new();
	if (!b)
		abort();
	evbuffer_add(b, data, len);
	evhttp_send_reply_chunk(c->req, b);
	evbuffer_free(b);
}

static void on_events(struct evhttp_request *req, const char *path, void *arg)
{
	(void)arg;
	if (!get_only(req))
		return;
	if (strcmp(path, "/events") != 0) {
		not_found(req);
		return;
	}
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		/* No stream to hold open for a HEAD: the headers only. */
		status_send(req, HTTP_OK, "text/event-stream; charset=utf-8", "", 0);
		return;
	}
	if (!st.inited) {
		status_send_error(req, HTTP_SERVUNAVAIL, "reactord is shutting down");
		return;
	}
	if (st.nclients >= STATUS_MAX_EVENT_CLIENTS) {
		char *m = xasprintf("too many pages following /events (limit %d)",
				    STATUS_MAX_EVENT_CLIENTS);
		status_send_error(req, HTTP_SERVUNAVAIL, m);
		free(m);
		return;
	}
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	if (!evcon) {
		status_send_error(req, HTTP_INTERNAL, "no connection");
		return;
	}
	struct sse_client *c = xcalloc(1, sizeof(*c));
	c->req = req;
	c->evcon = evcon;
	list_add_tail(&st.clients, &c->link);
	st.nclients++;
	security_headers(req);
	http_set_headers(req, "text/event-stream; charset=utf-8");
	http_hold_open(req);
	evhttp_send_reply_start(req, HTTP_OK, "OK");
	evhttp_connection_set_closecb(evcon, on_client_close, c);
	static const char hello[] = "retry: 2000\nevent: hello\ndata: {}\n\n";
	client_send(c, hello, sizeof hello - 1);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	struct evbuffer *out = evbuffer_new();
	if (!out)
		abort();
	if (st.overflow)
		evbuffer_add_printf(out, "event: refresh\ndata: {}\n\n");
	else
		evbuffer_add_buffer(out, st.pending);
	evbuffer_drain(st.pending, evbuffer_get_length(st.pending));
	st.npending = 0;
	st.overflow = false;
	size_t n = evbuffer_get_length(out);
	const void *p = evbuffer_pullup(out, -1);
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &st.clients) {
		client_send(container_of(i, struct sse_client, link), p, n);
	}
	evbuffer_free(out);
}

/* Queue one change for the next flush. */
static void pending_add(const char *event, struct evbuffer *data)
{
	if (!st.overflow && st.npending < MAX_PENDING) {
		evbuffer_add_printf(st.pending, "event: %s\ndata: ", event);
		evbuffer_add_buffer(st.pending, data);
		evbuffer_add(st.pending, "\n\n", 2);
		st.npending++;
	} else {
		st.overflow = true;
	}
	event_active(st.flush_ev, 0, 0);
}

static void on_job_msg(const char *channel, const char *msg, size_t len, void *arg)
{
	(void)channel, (void)arg;
	if (list_empty(&st.clients) || len == 0 || len > 256)
		return;
	struct evbuffer *d = evbuffer_new();
	if (!d)
		abort();
	evbuffer_add(d, "{\"job\":", 7);
	sj_strn(d, msg, len);
	evbuffer_add(d, "}", 1);
	pending_add("op", d);
	evbuffer_free(d);
}

static void on_build_msg(const char *channel, const char *msg, size_t len, void *arg)
{
	(void)channel, (void)arg;
	if (list_empty(&st.clients))
		return;
	struct json *j = json_parse(msg, len, NULL, 0);
	const struct json *id = json_get(j, "build_id"), *bucket = json_get(j, "bucket");
	if (id && id->type == JSON_STRING && bucket && bucket->type == JSON_STRING) {
		struct evbuffer *d = evbuffer_new();
		if (!d)
			abort();
		evbuffer_add(d, "{\"id\":", 6);
		sj_strn(d, id->str, id->len);
		evbuffer_add(d, ",\"bucket\":", 10);
		sj_strn(d, bucket->str, bucket->len);
		evbuffer_add(d, "}", 1);
		pending_add("build", d);
		evbuffer_free(d);
	}
	json_free(j);
}

/* ---- the URL the master reports -------------------------------------------------- */

/* This page's /builds/ID: status-url when set, else the first TCP http:
 * listener; NULL (the master's reactor:// default) when there is neither,
 * or when the master's builds live in another reactord's buckets (this
 * page would not find them). */
static char *build_url(int64_t id)
{
	const struct cfg *c = st.cfg;
	if (!c)
		return NULL;
	if (c->status_url)
		return xasprintf("%s/builds/%" PRId64, c->status_url, id);
	if (c->master && c->master->server)
		return NULL;
	for (size_t i = 0; i < http_nbound(); i++) {
		const char *a = http_bound(i);
		if (strncmp(a, "unix:", 5) != 0)
			return xasprintf("http://%s/builds/%" PRId64, a, id);
	}
	return NULL;
}

/* ---- API ---------------------------------------------------------------------- */

void status_init(struct event_base *base, const struct cfg *cfg)
{
	assert(!st.inited);
	st.base = base;
	st.cfg = cfg;
	st.started = mono_us();
	st.pending = evbuffer_new();
	st.flush_ev = event_new(base, -1, 0, flush_cb, NULL);
	if (!st.pending || !st.flush_ev)
		abort();
	master_set_url_fn(build_url);
	http_route("/", on_page, NULL);
	http_route("/api/", on_api, NULL);
	http_route("/events", on_events, NULL);
	char *job = keys_sched("job"), *pat = bkeys_events_pattern();
	store_subscribe(job, on_job_msg, NULL);
	store_subscribe(pat, on_build_msg, NULL);
	free(job);
	free(pat);
	st.inited = true;
}

void status_configure(const struct cfg *cfg)
{
	st.cfg = cfg;
}

void status_shutdown(void)
{
	if (!st.inited)
		return;
	while (!list_empty(&st.clients))
		client_drop(container_of(list_first(&st.clients), struct sse_client, link));
	status_api_shutdown();
	master_set_url_fn(NULL);
	event_free(st.flush_ev);
	evbuffer_free(st.pending);
	st.flush_ev = NULL;
	st.pending = NULL;
	st.inited = false;
}
