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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "core/cfg.h"
#include "core/list.h"
#include "core/map.h"
#include "transport/h2.h"
#include "transport/http.h"
#include "transport/tls.h"
#include "core/log.h"

struct listener {
	struct evconnlistener *ev;
	char *addr;	 /* printable bound address */
	char *unix_path; /* to unlink at stop */
	bool tcp;
	const struct cfg_listen *cl; /* its entry in the config we started with */
	SSL_CTX *tls;		     /* TLS listeners: for new connections; NULL else */
};

/* Connections from one client address (TCP; unix peers are not
 * counted per address). */
struct peer_count {
	struct map_node node; /* in srv.peers, keyed by addr */
	size_t n;
	char addr[INET6_ADDRSTRLEN];
};

struct sconn {
	struct h2_conn *h2;
	struct list link;      /* on srv.conns */
	struct peer_count *pc; /* NULL for unix peers */
};

/* Descriptors kept free for everything but client connections (Redis,
 * blob files, workers' pipes, the listeners). */
#define FD_HEADROOM 128

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
	/* limits.max-connections (after the RLIMIT_NOFILE cap) and
	 * limits.max-connections-per-address (0 = none) */
	size_t max_conns, max_per_addr;
	struct map peers; /* struct peer_count by address */
	int64_t refuse_logged_us;
	size_t refused;		 /* since the last log line */
	struct event *resume_ev; /* listeners paused after EMFILE */
	bool stopped;
} srv = {.conns = LIST_INIT(srv.conns)};

static void limits_from(const struct cfg *cfg)
{
	size_t max = (size_t)cfg->limits_max_connections;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		size_t cap = rl.rlim_cur > 2 * FD_HEADROOM ? (size_t)rl.rlim_cur - FD_HEADROOM
							   : (size_t)rl.rlim_cur / 2;
		if (max > cap) {
			LOGW("server",
			     "limits.max-connections %zu is more than the descriptor limit allows "
			     "(RLIMIT_NOFILE %llu less %d kept for other files): using %zu",
			     max, (unsigned long long)rl.rlim_cur, FD_HEADROOM, cap);
			max = cap;
		}
	}
	srv.max_conns = max;
	srv.max_per_addr = (size_t)cfg->limits_max_conns_per_addr;
	h2_set_max_buffered_total((size_t)cfg->limits_max_buffered_total);
}

static void settings_from(const struct cfg *cfg, struct h2_settings *st)
{
	st->max_concurrent_streams = cfg->h2_max_concurrent_streams;
	st->max_header_list_size = cfg->h2_max_header_list_size;
	st->conn_window = cfg->h2_conn_window;
	st->stream_window = cfg->h2_stream_window;
	st->idle_timeout_us = cfg->h2_idle_timeout_us;
	st->max_output_buffer = (size_t)cfg->h2_max_output_buffer;
	/* Default: one whole message of the largest size, with its prefix. */
	st->max_buffered_stream = cfg->limits_max_buffered_stream
					  ? (size_t)cfg->limits_max_buffered_stream
					  : (size_t)cfg->grpc_max_recv_message_size + 5;
	st->max_buffered_conn = (size_t)cfg->limits_max_buffered_conn;
}

void server_reconfigure(const struct cfg *cfg)
{
	settings_from(cfg, &srv.st);
	limits_from(cfg);
}

static bool peer_eq(const struct map_node *n, const void *key)
{
	return strcmp(container_of(n, struct peer_count, node)->addr, key) == 0;
}

/* The count of connections from addr, created at 0 when absent. */
static struct peer_count *peer_get(const char *addr)
{
	uint64_t h = map_hash_str(addr);
	struct map_node *n = map_find(&srv.peers, h, peer_eq, addr);
	if (n)
		return container_of(n, struct peer_count, node);
	struct peer_count *pc = xcalloc(1, sizeof(*pc));
	snprintf(pc->addr, sizeof(pc->addr), "%s", addr);
	map_insert(&srv.peers, &pc->node, h);
	return pc;
}

static void peer_put(struct peer_count *pc)
{
	if (pc && --pc->n == 0) {
		map_remove(&srv.peers, &pc->node);
		free(pc);
		if (srv.stopped && map_count(&srv.peers) == 0)
			map_destroy(&srv.peers);
	}
}

static void conn_closed(struct h2_conn *h, void *arg)
{
	(void)h;
	struct sconn *sc = arg;
	list_del(&sc->link);
	srv.nconns--;
	peer_put(sc->pc);
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

/* The client's address without the port; false for unix peers. */
static bool peer_host(const struct sockaddr *sa, char *buf, size_t len)
{
	if (sa->sa_family == AF_INET)
		return inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
				 buf, (socklen_t)len) != NULL;
	if (sa->sa_family == AF_INET6)
		return inet_ntop(AF_INET6,
				 &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
				 (socklen_t)len) != NULL;
	return false;
}

/* Over a connection limit: the socket is closed at once (a flood of
 * them costs one accept and one close each) and a line is logged at most
 * once a second. */
static void refuse(evutil_socket_t fd, const char *peer, const char *why)
{
	evutil_closesocket(fd);
	srv.refused++;
	int64_t now = mono_us();
	if (now - srv.refuse_logged_us >= 1000000) {
		LOGW("server", "refused %zu connection(s) in the last second, latest from %s: %s",
		     srv.refused, peer, why);
		srv.refuse_logged_us = now;
		srv.refused = 0;
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
	char peer[96], why[160];
	peer_name(sa, peer, sizeof(peer));
	if (srv.nconns >= srv.max_conns) {
		snprintf(why, sizeof(why),
			 "too many connections (limit %zu, config "
			 "limits.max-connections)",
			 srv.max_conns);
		refuse(fd, peer, why);
		return;
	}
	char host[INET6_ADDRSTRLEN];
	struct peer_count *pc = NULL;
	if (peer_host(sa, host, sizeof(host))) {
		pc = peer_get(host);
		if (srv.max_per_addr > 0 && pc->n >= srv.max_per_addr) {
			snprintf(why, sizeof(why),
				 "too many connections from %s (limit %zu, config "
				 "limits.max-connections-per-address)",
				 host, srv.max_per_addr);
			refuse(fd, peer, why);
			return;
		}
	}
	if (li->tcp) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	struct bufferevent *bev;
	if (li->tls) {
		bev = tls_accept_bev(srv.base, li->tls, fd); /* closes fd on failure */
		if (!bev)
			return;
	} else {
		bev = bufferevent_socket_new(srv.base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (!bev) {
			evutil_closesocket(fd);
			return;
		}
	}
	struct sconn *sc = xcalloc(1, sizeof(*sc));
	if (pc) {
		pc->n++;
		sc->pc = pc;
	}
	list_add_head(&srv.conns, &sc->link);
	srv.nconns++;
	sc->h2 = h2_conn_server(bev, &srv.st, peer, stream_opened, conn_closed, sc);
	h2_conn_set_listen(sc->h2, li->cl);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (srv.draining)
		return;
	for (size_t i = 0; i < srv.nls; i++)
		if (srv.ls[i].ev)
			evconnlistener_enable(srv.ls[i].ev);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	(void)l;
	struct listener *li = arg;
	int err = EVUTIL_SOCKET_ERROR();
	/* Out of descriptors (or memory): the pending connection stays in the
	 * backlog and the listener would be readable again at once, spinning
	 * the loop.  Pause accepting for a moment; closing connections frees
	 * descriptors meanwhile. */
	bool pause = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
	int64_t now = mono_us();
	if (!pause || now - srv.refuse_logged_us >= 1000000) {
		LOGW("server", "accept on %s: %s%s", li->addr, evutil_socket_error_to_string(err),
		     pause ? "; not accepting for 100ms" : "");
		if (pause)
			srv.refuse_logged_us = now;
	}
	if (!pause)
		return;
	for (size_t i = 0; i < srv.nls; i++)
		if (srv.ls[i].ev)
			evconnlistener_disable(srv.ls[i].ev);
	if (!srv.resume_ev)
		srv.resume_ev = evtimer_new(srv.base, resume_cb, NULL);
	struct timeval tv = {0, 100000};
	evtimer_add(srv.resume_ev, &tv);
}

/* The TLS settings of listener li in cfg: those of the entry with the
 * same address, else those it started with. */
static const struct cfg_tls *tls_conf(const struct listener *li, const struct cfg *cfg)
{
	const struct cfg_listen *a = li->cl;
	for (int i = 0; cfg && i < cfg->n_listen; i++) {
		const struct cfg_listen *b = &cfg->listen[i];
		if (b->tls && a->kind == b->kind && a->port == b->port &&
		    !strcmp(a->kind == CFG_LISTEN_UNIX ? a->path : a->host,
			    b->kind == CFG_LISTEN_UNIX ? b->path : b->host))
			return b->tls;
	}
	return a->tls;
}

static void log_tls(const struct listener *li, const struct cfg_tls *t, const char *what)
{
	static const char *const auth[] = {"none", "optional", "require"};
	char *d = tls_ctx_describe(li->tls);
	LOGI("server", "%s: %s %s; client-auth %s", li->addr, what, d, auth[t->client_auth]);
	free(d);
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
	map_init(&srv.peers);
	limits_from(cfg);
	srv.ls = xcalloc((size_t)cfg->n_listen, sizeof(*srv.ls));
	for (int i = 0; i < cfg->n_listen; i++) {
		const struct cfg_listen *l = &cfg->listen[i];
		struct listener *li = &srv.ls[srv.nls];
		int rv = l->kind == CFG_LISTEN_UNIX ? bind_unix(l->path, li, err)
						    : bind_tcp(l->host, l->port, li, err);
		if (rv != 0)
			return -1;
		li->cl = l;
		srv.nls++; /* from here on server_stop frees it */
		evconnlistener_set_error_cb(li->ev, accept_error_cb);
		if (l->tls) {
			char *e = NULL;
			li->tls = tls_ctx_new(l->tls, &e);
			if (!li->tls) {
				*err = xasprintf("%s: %s", li->addr, e);
				free(e);
				return -1;
			}
		}
		LOGI("server", "listening on %s", li->addr);
		if (li->tls)
			log_tls(li, l->tls, "serving TLS with");
	}
	return 0;
}

int server_reload_tls(const struct cfg *cfg)
{
	int failed = 0;
	for (size_t i = 0; i < srv.nls; i++) {
		struct listener *li = &srv.ls[i];
		if (!li->tls)
			continue;
		char *e = NULL;
		const struct cfg_tls *t = tls_conf(li, cfg);
		SSL_CTX *ctx = tls_ctx_new(t, &e);
		if (!ctx) {
			LOGE("server",
			     "%s: TLS reload failed, keeping the previous certificate: %s",
			     li->addr, e);
			free(e);
			failed = -1;
			continue;
		}
		/* Open connections hold their own reference to the old one. */
		tls_ctx_free(li->tls);
		li->tls = ctx;
		log_tls(li, t, "reloaded TLS:");
	}
	return failed;
}

int server_check_tls(const struct cfg *cfg, char **err)
{
	for (int i = 0; i < cfg->n_listen; i++) {
		const struct cfg_listen *l = &cfg->listen[i];
		if (!l->tls)
			continue;
		char *e = NULL;
		SSL_CTX *ctx = tls_ctx_new(l->tls, &e);
		if (!ctx) {
			*err = xasprintf("listen[%d]: %s", i, e);
			free(e);
			return -1;
		}
		tls_ctx_free(ctx);
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
/* Loopback spelling of a bound TCP address ("0.0.0.0:5" -> "127.0.0.1:5"). */
static char *loopback_of(const char *b)
{
	if (!strncmp(b, "0.0.0.0:", 8))
		return xasprintf("127.0.0.1:%s", b + 8);
	if (!strncmp(b, "[::]:", 5))
		return xasprintf("[::1]:%s", b + 5);
	return xstrdup(b);
}

char *server_self_target(void)
{
	/* Listeners serving every service: a unix socket first (no TLS, and
	 * its file permissions guard it), then plaintext TCP, then TLS. */
	for (int pass = 0; pass < 3; pass++)
		for (size_t i = 0; i < srv.nls; i++) {
			const struct listener *l = &srv.ls[i];
			if (l->cl && l->cl->n_services > 0)
				continue;
			if (pass == 0 && !l->tcp)
				return xstrdup(l->addr);
			if (pass == 1 && l->tcp && !l->tls)
				return loopback_of(l->addr);
			if (pass == 2 && l->tcp && l->tls) {
				char *b = loopback_of(l->addr);
				char *t = xasprintf("grpcs://%s", b);
				free(b);
				return t;
			}
		}
	return NULL;
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
	for (size_t i = 0; i < http_nbound(); i++)
		fprintf(f, "http://%s\n", http_bound(i));
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
	list_for_each_safe (pos, tmp, &srv.conns)
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
	list_for_each_safe (pos, tmp, &srv.conns) {
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
		if (srv.ls[i].tls)
			tls_ctx_free(srv.ls[i].tls);
	}
	free(srv.ls);
	srv.ls = NULL;
	srv.nls = 0;
	if (srv.resume_ev) {
		event_free(srv.resume_ev);
		srv.resume_ev = NULL;
	}
	/* Connections still closing drop their counts later (peer_put). */
	srv.stopped = true;
	if (map_count(&srv.peers) == 0)
		map_destroy(&srv.peers);
}
