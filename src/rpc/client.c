/*
 * client.c - gRPC client calls over an h2 client connection (client.h).
 * Response status comes from the trailers (or a Trailers-Only HEADERS);
 * a stream that closes without grpc-status gets a status derived from
 * the HTTP status or the reset, as gRPC's HTTP mapping specifies.
 */
#include "rpc/client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "rpc/grpc.h"
#include "core/util.h"

struct rc_client {
	struct event_base *base;
	struct h2_conn *h2;
	char *authority;
	bool closed;
	bool release; /* free the client once its connection is gone */
	struct rc_call *calls;
};

struct rc_call {
	struct rc_client *cl;
	struct h2_stream *s;
	struct grpc_reader rd;
	rc_msg_cb on_msg;
	rc_done_cb on_done;
	void (*on_headers)(struct rc_call *call, void *arg);
	void *arg;
	int code; /* -1 until grpc-status seen */
	char *message;
	int http_status;
	bool done;
	struct rc_call *next;
};

static int http_to_grpc(int http)
{
	switch (http) {
	case 400: return GRPC_INTERNAL;
	case 401: return GRPC_UNAUTHENTICATED;
	case 403: return GRPC_PERMISSION_DENIED;
	case 404: return GRPC_UNIMPLEMENTED;
	case 429:
	case 502:
	case 503:
	case 504: return GRPC_UNAVAILABLE;
	default: return GRPC_UNKNOWN;
	}
}

static void keep_headers(struct rc_call *k, struct h2_stream *s)
{
	const char *st = h2_stream_header(s, ":status");
	if (st)
		k->http_status = atoi(st);
	const char *gs = h2_stream_header(s, "grpc-status");
	if (gs) {
		k->code = atoi(gs);
		const char *gm = h2_stream_header(s, "grpc-message");
		free(k->message);
		k->message = gm ? grpc_percent_decode(gm) : NULL;
	}
}

static void c_on_headers(struct h2_stream *s, bool trailers)
{
	struct rc_call *k = h2_stream_user(s);
	keep_headers(k, s);
	if (!trailers && k->code < 0 && k->on_headers) {
		void (*cb)(struct rc_call *, void *) = k->on_headers;
		k->on_headers = NULL;
		cb(k, k->arg);
	}
}

void rc_call_on_headers(struct rc_call *call, void (*cb)(struct rc_call *call, void *arg))
{
	call->on_headers = cb;
}

static int c_msg(void *arg, const uint8_t *msg, size_t len)
{
	struct rc_call *k = arg;
	if (k->on_msg)
		k->on_msg(k, msg, len, k->arg);
	return 0;
}

static void c_on_data(struct h2_stream *s, const uint8_t *data, size_t len)
{
	struct rc_call *k = h2_stream_user(s);
	if (grpc_reader_feed(&k->rd, data, len, c_msg, k) != GRPC_READER_OK && k->code < 0) {
		k->code = GRPC_INTERNAL;
		k->message = xstrdup("bad response framing");
		h2_stream_reset(s, H2_CANCEL);
	}
}

static void call_free(struct rc_call *k)
{
	struct rc_client *cl = k->cl;
	for (struct rc_call **pp = &cl->calls; *pp; pp = &(*pp)->next) {
		if (*pp == k) {
			*pp = k->next;
			break;
		}
	}
	grpc_reader_free(&k->rd);
	free(k->message);
	free(k);
}

static void c_on_close(struct h2_stream *s, uint32_t error)
{
	struct rc_call *k = h2_stream_user(s);
	k->s = NULL;
	int code = k->code;
	const char *msg = k->message;
	char buf[128];
	if (code < 0) {
		if (k->http_status && k->http_status != 200) {
			code = http_to_grpc(k->http_status);
			snprintf(buf, sizeof(buf), "HTTP status %d without grpc-status",
				 k->http_status);
		} else if (error) {
			code = error == H2_REFUSED_STREAM ? GRPC_UNAVAILABLE
			       : error == H2_CANCEL	  ? GRPC_CANCELLED
							  : GRPC_INTERNAL;
			snprintf(buf, sizeof(buf), "stream closed: %s", h2_error_string(error));
		} else {
			code = GRPC_UNAVAILABLE;
			snprintf(buf, sizeof(buf), "stream closed without grpc-status");
		}
		msg = buf;
	}
	k->done = true;
	if (k->on_done)
		k->on_done(k, code, msg ? msg : "", k->arg);
	call_free(k);
}

static const struct h2_stream_ops client_ops = {
	.on_headers = c_on_headers,
	.on_data = c_on_data,
	.on_close = c_on_close,
};

static void conn_closed(struct h2_conn *h, void *arg)
{
	(void)h;
	struct rc_client *cl = arg;
	cl->closed = true;
	cl->h2 = NULL;
	/* The connection is being freed and calls nothing on cl after this. */
	if (cl->release) {
		free(cl->authority);
		free(cl);
	}
}

static int make_addr(const char *target, struct sockaddr_storage *ss, socklen_t *sl,
		     char **authority, char **err)
{
	if (strncmp(target, "grpc://", 7) == 0)
		target += 7;
	if (strncmp(target, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (void *)ss;
		const char *path = target + 5;
		if (strlen(path) >= sizeof(sun->sun_path) || !*path) {
			*err = xasprintf("bad unix socket path \"%s\"", path);
			return -1;
		}
		memset(sun, 0, sizeof(*sun));
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, path);
		*sl = sizeof(*sun);
		*authority = xstrdup("localhost");
		return 0;
	}
	const char *colon = strrchr(target, ':');
	if (!colon) {
		*err = xasprintf("target \"%s\" needs HOST:PORT or unix:PATH", target);
		return -1;
	}
	char *host = xstrndup(target, (size_t)(colon - target));
	if (host[0] == '[') {
		size_t n = strlen(host);
		if (n < 2 || host[n - 1] != ']') {
			*err = xasprintf("bad IPv6 target \"%s\"", target);
			free(host);
			return -1;
		}
		memmove(host, host + 1, n - 2);
		host[n - 2] = '\0';
	}
	struct addrinfo hints = {0}, *res;
	hints.ai_socktype = SOCK_STREAM;
	int rv = getaddrinfo(host, colon + 1, &hints, &res);
	free(host);
	if (rv != 0) {
		*err = xasprintf("%s: %s", target, gai_strerror(rv));
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sl = res->ai_addrlen;
	freeaddrinfo(res);
	*authority = xstrdup(target);
	return 0;
}

static const struct h2_settings client_settings = {
	.max_concurrent_streams = 1000,
	.max_header_list_size = 64 * 1024,
	.conn_window = 64 << 20,
	.stream_window = 16 << 20,
	.idle_timeout_us = 0,
	.max_output_buffer = 8 << 20,
};

struct rc_client *rc_client_from_bev(struct event_base *base, struct bufferevent *bev,
				     const char *name)
{
	struct rc_client *cl = xcalloc(1, sizeof(*cl));
	cl->base = base;
	cl->authority = xstrdup(name);
	cl->h2 = h2_conn_client(bev, &client_settings, name, conn_closed, cl);
	return cl;
}

struct rc_client *rc_client_connect(struct event_base *base, const char *target, char **err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char *authority;
	if (make_addr(target, &ss, &sl, &authority, err) != 0)
		return NULL;
	struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	struct rc_client *cl = xcalloc(1, sizeof(*cl));
	cl->base = base;
	cl->authority = authority;
	cl->h2 = h2_conn_client(bev, &client_settings, target, conn_closed, cl);
	if (bufferevent_socket_connect(bev, (struct sockaddr *)&ss, (int)sl) != 0) {
		h2_conn_close(cl->h2, "connect failed");
	} else if (ss.ss_family != AF_UNIX) {
		/* Small gRPC frames must not wait for Nagle. */
		int one = 1;
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return cl;
}

bool rc_client_alive(const struct rc_client *c)
{
	return !c->closed && c->h2 && h2_conn_alive(c->h2);
}

void rc_client_close(struct rc_client *c)
{
	if (c->h2 && !c->closed)
		h2_conn_close(c->h2, "client closed");
}

void rc_client_release(struct rc_client *c)
{
	if (!c->h2) {
		free(c->authority);
		free(c);
		return;
	}
	c->release = true;
	rc_client_close(c);
}

void rc_client_free(struct rc_client *c)
{
	if (c->h2) {
		h2_conn_close(c->h2, "client closed");
		/* conn_free runs on the loop; run it now so no callback
		 * arrives for this client after it is gone. */
		while (c->h2)
			event_base_loop(c->base, EVLOOP_ONCE);
	}
	free(c->authority);
	free(c);
}

struct rc_call *rc_call_start(struct rc_client *c, const char *path, int64_t timeout_us,
			      const struct h2_hdr *md, size_t nmd, rc_msg_cb on_msg,
			      rc_done_cb on_done, void *arg)
{
	if (!c->h2 || c->closed)
		return NULL;
	struct h2_hdr h[32];
	size_t n = 0;
	char tbuf[32];
	h[n++] = h2_hdr_make(":method", "POST");
	h[n++] = h2_hdr_make(":scheme", "http");
	h[n++] = h2_hdr_make(":path", path);
	h[n++] = h2_hdr_make(":authority", c->authority);
	h[n++] = h2_hdr_make("content-type", "application/grpc");
	h[n++] = h2_hdr_make("te", "trailers");
	h[n++] = h2_hdr_make("user-agent", "reactor-client/0.1");
	if (timeout_us > 0) {
		grpc_timeout_format(timeout_us, tbuf, sizeof(tbuf));
		h[n++] = h2_hdr_make("grpc-timeout", tbuf);
	}
	for (size_t i = 0; i < nmd && n < ARRAY_LEN(h); i++)
		h[n++] = md[i];
	struct rc_call *k = xcalloc(1, sizeof(*k));
	k->cl = c;
	k->on_msg = on_msg;
	k->on_done = on_done;
	k->arg = arg;
	k->code = -1;
	grpc_reader_init(&k->rd, 1U << 31);
	k->s = h2_stream_open(c->h2, h, n, &client_ops, k);
	if (!k->s) {
		grpc_reader_free(&k->rd);
		free(k);
		return NULL;
	}
	k->next = c->calls;
	c->calls = k;
	return k;
}

int rc_call_send(struct rc_call *k, const uint8_t *msg, size_t len)
{
	if (!k->s)
		return -1;
	uint8_t *buf = xmalloc(len + 5);
	grpc_prefix(buf, false, (uint32_t)len);
	memcpy(buf + 5, msg, len);
	return h2_stream_write_owned(k->s, buf, len + 5);
}

int rc_call_send_raw(struct rc_call *k, const void *data, size_t len)
{
	return k->s ? h2_stream_write(k->s, data, len) : -1;
}

int rc_call_close_send(struct rc_call *k)
{
	return k->s ? h2_stream_end(k->s, NULL, 0) : -1;
}

void rc_call_cancel(struct rc_call *k)
{
	if (k->s)
		h2_stream_reset(k->s, H2_CANCEL);
}

struct unary_state {
	const ProtobufCMessageDescriptor *desc;
	ProtobufCMessage *resp;
	int code;
	char *msg;
	bool done;
};

static void u_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct unary_state *u = arg;
	if (u->resp)
		protobuf_c_message_free_unpacked(u->resp, NULL);
	u->resp = protobuf_c_message_unpack(u->desc, NULL, len, msg);
}

static void u_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct unary_state *u = arg;
	u->code = code;
	u->msg = xstrdup(message);
	u->done = true;
}

int rc_unary(struct rc_client *c, const char *path, const ProtobufCMessage *req,
	     const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, char **msg,
	     int64_t timeout_us)
{
	struct unary_state u = {.desc = resp_desc, .code = -1};
	struct rc_call *k = rc_call_start(c, path, timeout_us, NULL, 0, u_msg, u_done, &u);
	if (!k) {
		if (msg)
			*msg = xstrdup("connection is closed");
		return GRPC_UNAVAILABLE;
	}
	size_t n = protobuf_c_message_get_packed_size(req);
	uint8_t *buf = xmalloc(n ? n : 1);
	protobuf_c_message_pack(req, buf);
	rc_call_send(k, buf, n);
	free(buf);
	rc_call_close_send(k);
	while (!u.done)
		event_base_loop(c->base, EVLOOP_ONCE);
	if (u.code == GRPC_OK && !u.resp) {
		u.code = GRPC_INTERNAL;
		free(u.msg);
		u.msg = xstrdup("OK status without a valid response message");
	}
	if (u.code == GRPC_OK) {
		*resp = u.resp;
	} else if (u.resp) {
		protobuf_c_message_free_unpacked(u.resp, NULL);
	}
	if (msg)
		*msg = u.msg;
	else
		free(u.msg);
	return u.code;
}
