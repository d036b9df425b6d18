/*
 * server.c - listeners (evconnlistener) and accepted connections.  Each
 * accepted socket becomes an h2_conn whose streams are handed to the
 * accept callback main injected (the call layer).  The server keeps the
 * list of live connections for draining.
 */
#include "transport/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "core/cfg.h"
#include "core/list.h"
#include "transport/h2.h"
#include "core/log.h"

struct listener {
	struct evconnlistener *ev;
	char *addr;	 /* printable bound address */
	char *unix_path; /* to unlink at stop */
	bool tcp;
};

struct sconn {
	struct h2_conn *h2;
	struct list link; /* on srv.conns */
};

static struct {
	struct event_base *base;
	struct listener *ls;
	size_t nls;
	struct h2_settings st;
	h2_accept_stream_fn on_stream;
	void *stream_arg;
	struct list conns; /* struct sconn.link */
	size_t nconns;
	bool draining;
	void (*on_idle)(void *);
	void *idle_arg;
} srv = {.conns = LIST_INIT(srv.conns)};

static void settings_from(const struct cfg *cfg, struct h2_settings *st)
{
	st->max_concurrent_streams = cfg->h2_max_concurrent_streams;
	st->max_header_list_size = cfg->h2_max_header_list_size;
	st->conn_window = cfg->h2_conn_window;
	st->stream_window = cfg->h2_stream_window;
	st->idle_timeout_us = cfg->h2_idle_timeout_us;
	st->max_output_buffer = (size_t)cfg->h2_max_output_buffer;
}

void server_reconfigure(const struct cfg *cfg)
{
	settings_from(cfg, &srv.st);
}

static void conn_closed(struct h2_conn *h, void *arg)
{
	(void)h;
	struct sconn *sc = arg;
	list_del(&sc->link);
	srv.nconns--;
	free(sc);
	if (srv.draining && srv.nconns == 0 && srv.on_idle) {
		void (*fn)(void *) = srv.on_idle;
		srv.on_idle = NULL;
		fn(srv.idle_arg);
	}
}

/* The h2 connection's arg is its sconn; the layer above gets its own. */
static void stream_opened(struct h2_stream *s, void *arg)
{
	(void)arg;
	srv.on_stream(s, srv.stream_arg);
}

static void peer_name(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, len, "unix");
	}
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
		      void *arg)
{
	(void)l;
	(void)salen;
	struct listener *li = arg;
	if (srv.draining) {
		evutil_closesocket(fd);
		return;
	}
	if (li->tcp) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	struct bufferevent *bev = bufferevent_socket_new(srv.base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		evutil_closesocket(fd);
		return;
	}
	char peer[96];
	peer_name(sa, peer, sizeof(peer));
	struct sconn *sc = xcalloc(1, sizeof(*sc));
	list_add_head(&srv.conns, &sc->link);
	srv.nconns++;
	sc->h2 = h2_conn_server(bev, &srv.st, peer, stream_opened, conn_closed, sc);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	(void)l;
	struct listener *li = arg;
	int err = EVUTIL_SOCKET_ERROR();
	/* EMFILE and friends: log and keep listening; libevent retries on
	 * the next readiness. */
	LOGW("server", "accept on %s: %s", li->addr, evutil_socket_error_to_string(err));
}

static int bind_unix(const char *path, struct listener *li, char **err)
{
	struct sockaddr_un sun;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		*err = xasprintf("unix:%s: socket path too long", path);
		return -1;
	}
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);
	li->ev = evconnlistener_new_bind(srv.base, accept_cb, li,
					 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024,
					 (struct sockaddr *)&sun, sizeof(sun));
	if (!li->ev) {
		*err = xasprintf("unix:%s: %s", path, strerror(errno));
		return -1;
	}
	li->addr = xasprintf("unix:%s", path);
	li->unix_path = xstrdup(path);
	return 0;
}

static int bind_tcp(const char *host, int port, struct listener *li, char **err)
{
	struct addrinfo hints = {0}, *res;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	char portbuf[16];
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	int rv = getaddrinfo(host, portbuf, &hints, &res);
	if (rv != 0) {
		*err = xasprintf("%s:%d: %s", host, port, gai_strerror(rv));
		return -1;
	}
	li->ev = evconnlistener_new_bind(srv.base, accept_cb, li,
					 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
						 LEV_OPT_CLOSE_ON_EXEC,
					 1024, res->ai_addr, (int)res->ai_addrlen);
	int e = errno;
	freeaddrinfo(res);
	if (!li->ev) {
		*err = xasprintf("%s:%d: cannot listen: %s", host, port, strerror(e));
		return -1;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(evconnlistener_get_fd(li->ev), (struct sockaddr *)&ss, &sl);
	char name[96];
	peer_name((struct sockaddr *)&ss, name, sizeof(name));
	li->addr = xstrdup(name);
	li->tcp = true;
	return 0;
}

int server_start(struct event_base *base, const struct cfg *cfg, h2_accept_stream_fn on_stream,
		 void *arg, char **err)
{
	srv.base = base;
	srv.on_stream = on_stream;
	srv.stream_arg = arg;
	settings_from(cfg, &srv.st);
	srv.ls = xcalloc((size_t)cfg->n_listen, sizeof(*srv.ls));
	for (int i = 0; i < cfg->n_listen; i++) {
		const struct cfg_listen *l = &cfg->listen[i];
		struct listener *li = &srv.ls[srv.nls];
		int rv = l->kind == CFG_LISTEN_UNIX ? bind_unix(l->path, li, err)
						    : bind_tcp(l->host, l->port, li, err);
		if (rv != 0)
			return -1;
		evconnlistener_set_error_cb(li->ev, accept_error_cb);
		srv.nls++;
		LOGI("server", "listening on %s", li->addr);
	}
	return 0;
}

size_t server_nbound(void)
{
	return srv.nls;
}
const char *server_bound(size_t i)
{
	return i < srv.nls ? srv.ls[i].addr : NULL;
}
size_t server_nconns(void)
{
	return srv.nconns;
}

int server_write_ready_file(const char *path)
{
	char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
	FILE *f = fopen(tmp, "w");
	if (!f) {
		free(tmp);
		return -1;
	}
	for (size_t i = 0; i < srv.nls; i++)
		fprintf(f, "%s\n", srv.ls[i].addr);
	int rv = fclose(f) == 0 && rename(tmp, path) == 0 ? 0 : -1;
	if (rv != 0)
		unlink(tmp);
	free(tmp);
	return rv;
}

static void stop_listeners(void)
{
	for (size_t i = 0; i < srv.nls; i++) {
		if (srv.ls[i].ev) {
			evconnlistener_free(srv.ls[i].ev);
			srv.ls[i].ev = NULL;
		}
		if (srv.ls[i].unix_path)
			unlink(srv.ls[i].unix_path);
	}
}

void server_drain(void (*on_idle)(void *arg), void *arg)
{
	srv.draining = true;
	stop_listeners();
	srv.on_idle = on_idle;
	srv.idle_arg = arg;
	struct list *pos, *tmp;
	list_for_each_safe(pos, tmp, &srv.conns)
		h2_conn_goaway(container_of(pos, struct sconn, link)->h2);
	if (srv.nconns == 0 && srv.on_idle) {
		srv.on_idle = NULL;
		on_idle(arg);
	}
}

void server_close_all(void)
{
	/* Safe: closing may free the connection's sconn at once. */
	struct list *pos, *tmp;
	list_for_each_safe(pos, tmp, &srv.conns)
	{
		struct sconn *sc = container_of(pos, struct sconn, link);
		h2_conn_close(sc->h2, "shutdown grace period over");
	}
}

void server_stop(void)
{
	stop_listeners();
	for (size_t i = 0; i < srv.nls; i++) {
		free(srv.ls[i].addr);
		free(srv.ls[i].unix_path);
	}
	free(srv.ls);
	srv.ls = NULL;
	srv.nls = 0;
}
