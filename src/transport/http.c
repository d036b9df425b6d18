/*
 * http.c - the `http:` listeners: one evhttp on reactord's event loop,
 * bound to every configured address, a prefix routing table, and the
 * reply helpers every page uses.  It owns the evhttp, its listeners and
 * the count of open connections.
 *
 * Connection limit: evhttp (2.1) has none, and tells nobody when a
 * connection it accepted closes.  So this module makes each connection's
 * bufferevent (evhttp_set_bevcb) and keeps a reference to it: when evhttp
 * frees the connection, the bufferevent survives with its callbacks
 * cleared, which is the notice.  A sweep (at each accept, and every
 * second while connections are tracked) drops those references; an
 * input-buffer callback stops reading on a released one at once, so a
 * client cannot push data into it meanwhile.  At HTTP_MAX_CONNECTIONS the
 * listeners stop accepting (the kernel backlog holds the rest) until a
 * connection closes.  (A pass-through filter bufferevent with a
 * free-context callback would be simpler, but evhttp then drops replies
 * sent after the request callback returned.)
 */
#include "transport/http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "core/cfg.h"
#include "core/list.h"
#include "core/log.h"

#define HTTP_MAX_HEADERS (16 * 1024)
#define HTTP_MAX_BODY	 (4 * 1024)

struct route {
	char *prefix;
	size_t len;
	http_handler_fn fn;
	void *arg;
};

/* A connection's bufferevent, referenced until evhttp is done with it. */
struct hconn {
	struct bufferevent *bev;
	struct list link; /* on H.conns */
};

struct hlistener {
	struct evhttp_bound_socket *bs;
	char *addr;	 /* printable bound address */
	char *unix_path; /* to unlink at stop */
};

static struct {
	struct event_base *base;
	struct evhttp *http;
	struct hlistener *ls;
	size_t nls;
	struct route *routes;
	size_t nroutes;
	struct list conns; /* struct hconn.link */
	size_t nconns;
	struct event *sweep_ev; /* every second while conns is not empty */
	bool paused;		/* listeners disabled at the connection limit */
	bool stopping;		/* in http_stop: connections closing, listeners gone */
} H = {.conns = LIST_INIT(H.conns)};

/* ---- routes -------------------------------------------------------------- */

void http_route(const char *prefix, http_handler_fn fn, void *arg)
{
	for (size_t i = 0; i < H.nroutes; i++) {
		if (strcmp(H.routes[i].prefix, prefix))
			continue;
		if (fn) {
			H.routes[i].fn = fn;
			H.routes[i].arg = arg;
		} else {
			free(H.routes[i].prefix);
			H.routes[i] = H.routes[--H.nroutes];
		}
		return;
	}
	if (!fn)
		return;
	H.routes = xrealloc(H.routes, (H.nroutes + 1) * sizeof(*H.routes));
	H.routes[H.nroutes++] = (struct route){xstrdup(prefix), strlen(prefix), fn, arg};
}

static const struct route *route_find(const char *path)
{
	const struct route *best = NULL;
	for (size_t i = 0; i < H.nroutes; i++) {
		const struct route *r = &H.routes[i];
		if (!strncmp(path, r->prefix, r->len) && (!best || r->len > best->len))
			best = r;
	}
	return best;
}

/* ---- replies ------------------------------------------------------------- */

static const char *reason(int code)
{
	switch (code) {
	case 200: return "OK";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return code < 400 ? "OK" : code < 500 ? "Client Error" : "Server Error";
	}
}

void http_set_headers(struct evhttp_request *req, const char *content_type)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_remove_header(h, "Content-Type");
	evhttp_add_header(h, "Content-Type", content_type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
}

void http_reply(struct evhttp_request *req, int code, const char *content_type, const void *body,
		size_t len)
{
	struct evbuffer *b = evbuffer_new();
	if (!b)
		abort();
	if (len)
		evbuffer_add(b, body, len);
	http_set_headers(req, content_type);
	char cl[24];
	snprintf(cl, sizeof(cl), "%zu", len);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_remove_header(h, "Content-Length");
	evhttp_add_header(h, "Content-Length", cl);
	evhttp_send_reply(req, code, reason(code), b);
	evbuffer_free(b);
}

void http_reply_error(struct evhttp_request *req, int code, const char *msg)
{
	char *body = xasprintf("%s\n", msg);
	http_reply(req, code, "text/plain; charset=utf-8", body, strlen(body));
	free(body);
}

void http_hold_open(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	if (!evcon)
		return;
	struct timeval w = {HTTP_TIMEOUT_S, 0};
	bufferevent_set_timeouts(evhttp_connection_get_bufferevent(evcon), NULL, &w);
}

/* ---- requests and connections -------------------------------------------- */

static void request_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (!path || !*path)
		path = "/";
	LOGD("http", "%s %s",
	     cmd == EVHTTP_REQ_GET    ? "GET"
	     : cmd == EVHTTP_REQ_HEAD ? "HEAD"
				      : "-",
	     evhttp_request_get_uri(req));
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		http_reply_error(req, 405, "method not allowed: only GET and HEAD are served");
		return;
	}
	const struct route *r = route_find(path);
	if (!r) {
		http_reply_error(req, 404, "not found");
		return;
	}
	r->fn(req, path, r->arg);
}

static void listeners_enable(bool on)
{
	for (size_t i = 0; i < H.nls; i++) {
		struct evconnlistener *l = evhttp_bound_socket_get_listener(H.ls[i].bs);
		if (on)
			evconnlistener_enable(l);
		else
			evconnlistener_disable(l);
	}
}

/* evhttp clears every callback of a bufferevent it frees (a live
 * connection always has its error callback). */
static bool released(struct bufferevent *bev)
{
	bufferevent_event_cb ecb = NULL;
	bufferevent_getcb(bev, NULL, NULL, &ecb, NULL);
	return ecb == NULL;
}

/* Drop the references evhttp no longer shares; resume accepting below
 * the limit. */
static void sweep(void)
{
	struct list *pos, *tmp;
	list_for_each_safe (pos, tmp, &H.conns) {
		struct hconn *hc = container_of(pos, struct hconn, link);
		if (!released(hc->bev))
			continue;
		list_del(&hc->link);
		H.nconns--;
		bufferevent_decref(hc->bev); /* the last one: closes the socket */
		free(hc);
	}
	if (H.paused && !H.stopping && H.nconns < HTTP_MAX_CONNECTIONS) {
		H.paused = false;
		listeners_enable(true);
	}
	if (H.nconns == 0 && H.sweep_ev)
		event_del(H.sweep_ev);
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sweep();
}

/* Input arrived or was consumed: on a connection evhttp has let go, stop
 * reading (the sweep frees it). */
static void input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	(void)buf;
	(void)info;
	struct bufferevent *bev = arg;
	if (released(bev))
		bufferevent_disable(bev, EV_READ | EV_WRITE);
}

/* Called by evhttp for each accepted connection (before it has a socket:
 * evhttp sets the descriptor on what this returns). */
static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
	(void)arg;
	sweep();
	struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		return NULL;
	bufferevent_incref(bev);
	evbuffer_add_cb(bufferevent_get_input(bev), input_cb, bev);
	struct hconn *hc = xcalloc(1, sizeof(*hc));
	hc->bev = bev;
	list_add_tail(&H.conns, &hc->link);
	H.nconns++;
	struct timeval tv = {1, 0};
	if (!evtimer_pending(H.sweep_ev, NULL))
		evtimer_add(H.sweep_ev, &tv);
	if (H.nconns >= HTTP_MAX_CONNECTIONS && !H.paused) {
		H.paused = true;
		listeners_enable(false);
		LOGW("http", "%d connections open (the limit): not accepting until one closes",
		     HTTP_MAX_CONNECTIONS);
	}
	return bev;
}

size_t http_nconns(void)
{
	sweep();
	return H.nconns;
}

/* ---- listeners ----------------------------------------------------------- */

static void sa_name(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
	} else {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	}
}

static struct evconnlistener *bind_one(const struct cfg_listen *l, struct hlistener *hl, char **err)
{
	struct evconnlistener *ev;
	unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED;
	if (l->kind == CFG_LISTEN_UNIX) {
		struct sockaddr_un sun;
		if (strlen(l->path) >= sizeof(sun.sun_path)) {
			*err = xasprintf("unix:%s: socket path too long", l->path);
			return NULL;
		}
		struct stat st;
		if (lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(l->path);
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		strcpy(sun.sun_path, l->path);
		ev = evconnlistener_new_bind(H.base, NULL, NULL, flags, 128,
					     (struct sockaddr *)&sun, sizeof(sun));
		if (!ev) {
			*err = xasprintf("unix:%s: %s", l->path, strerror(errno));
			return NULL;
		}
		hl->addr = xasprintf("unix:%s", l->path);
		hl->unix_path = xstrdup(l->path);
		return ev;
	}
	struct addrinfo hints = {0}, *res;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	char port[16];
	snprintf(port, sizeof(port), "%d", l->port);
	int rv = getaddrinfo(l->host, port, &hints, &res);
	if (rv != 0) {
		*err = xasprintf("%s:%d: %s", l->host, l->port, gai_strerror(rv));
		return NULL;
	}
	ev = evconnlistener_new_bind(H.base, NULL, NULL, flags | LEV_OPT_REUSEABLE, 128,
				     res->ai_addr, (int)res->ai_addrlen);
	int e = errno;
	freeaddrinfo(res);
	if (!ev) {
		*err = xasprintf("%s:%d: cannot listen: %s", l->host, l->port, strerror(e));
		return NULL;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(evconnlistener_get_fd(ev), (struct sockaddr *)&ss, &sl);
	char name[96];
	sa_name((struct sockaddr *)&ss, name, sizeof(name));
	hl->addr = xstrdup(name);
	return ev;
}

int http_check(const struct cfg *cfg, char **err)
{
	for (int i = 0; i < cfg->n_http; i++) {
		const struct cfg_listen *l = &cfg->http[i];
		if (l->kind != CFG_LISTEN_TCP || l->insecure || host_is_loopback(l->host))
			continue;
		bool v6 = strchr(l->host, ':') != NULL;
		*err = xasprintf("http[%d] %s%s%s:%d is plaintext on a non-loopback address and "
				 "its pages show command lines and build parameters: refusing to "
				 "start (bind it to loopback, or set insecure: true on this entry)",
				 i, v6 ? "[" : "", l->host, v6 ? "]" : "", l->port);
		return -1;
	}
	return 0;
}

int http_start(struct event_base *base, const struct cfg *cfg, char **err)
{
	if (cfg->n_http == 0)
		return 0;
	if (http_check(cfg, err) != 0)
		return -1;
	H.base = base;
	H.stopping = false;
	H.http = evhttp_new(base);
	if (!H.http) {
		*err = xasprintf("http: cannot create the HTTP server");
		return -1;
	}
	evhttp_set_max_headers_size(H.http, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(H.http, HTTP_MAX_BODY);
	evhttp_set_timeout(H.http, HTTP_TIMEOUT_S);
	/* Every method reaches request_cb, which answers 405 (evhttp's own
	 * check would answer 501). */
	evhttp_set_allowed_methods(H.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
						   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
						   EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
						   EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_default_content_type(H.http, "text/plain; charset=utf-8");
	H.sweep_ev = event_new(base, -1, EV_PERSIST, sweep_cb, NULL);
	if (!H.sweep_ev)
		abort();
	evhttp_set_bevcb(H.http, bev_cb, NULL);
	evhttp_set_gencb(H.http, request_cb, NULL);
	H.ls = xcalloc((size_t)cfg->n_http, sizeof(*H.ls));
	for (int i = 0; i < cfg->n_http; i++) {
		struct hlistener *hl = &H.ls[H.nls];
		struct evconnlistener *ev = bind_one(&cfg->http[i], hl, err);
		if (!ev)
			return -1;
		hl->bs = evhttp_bind_listener(H.http, ev);
		if (!hl->bs) {
			evconnlistener_free(ev);
			*err = xasprintf("%s: cannot serve HTTP on it", hl->addr);
			free(hl->addr);
			free(hl->unix_path);
			memset(hl, 0, sizeof(*hl));
			return -1;
		}
		H.nls++;
		evconnlistener_enable(ev);
		LOGI("http", "http listening on %s", hl->addr);
	}
	return 0;
}

size_t http_nbound(void)
{
	return H.nls;
}

const char *http_bound(size_t i)
{
	return i < H.nls ? H.ls[i].addr : NULL;
}

void http_stop(void)
{
	H.stopping = true;
	if (H.http) {
		evhttp_free(H.http); /* listeners and connections */
		H.http = NULL;
	}
	sweep(); /* every connection is released now */
	assert(H.nconns == 0 && list_empty(&H.conns));
	if (H.sweep_ev) {
		event_free(H.sweep_ev);
		H.sweep_ev = NULL;
	}
	for (size_t i = 0; i < H.nls; i++) {
		if (H.ls[i].unix_path)
			unlink(H.ls[i].unix_path);
		free(H.ls[i].addr);
		free(H.ls[i].unix_path);
	}
	free(H.ls);
	H.ls = NULL;
	H.nls = 0;
	for (size_t i = 0; i < H.nroutes; i++)
		free(H.routes[i].prefix);
	free(H.routes);
	H.routes = NULL;
	H.nroutes = 0;
	H.paused = false;
}
