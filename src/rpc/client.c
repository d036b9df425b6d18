/*
 * client.c - gRPC client calls over an h2 client connection (client.h).
 * Response status comes from the trailers (or a Trailers-Only HEADERS);
 * a stream that closes without grpc-status gets a status derived from
 * the HTTP status or the reset, as gRPC's HTTP mapping specifies.
 *
 * TLS runs on libevent's OpenSSL bufferevent under the same h2 layer.  A
 * handshake that fails (or a server that refuses our certificate right
 * after it, as TLS 1.3 servers do) ends the open calls with UNAVAILABLE
 * and the reason OpenSSL gives, read off the bufferevent before it goes.
 * The bearer token lives only in the client (wiped when freed) and in the
 * HPACK-encoded request headers: no log line nor message carries it.
 */
#include "rpc/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "rpc/grpc.h"
#include "core/log.h"
#include "core/util.h"

struct rc_client {
	struct event_base *base;
	struct h2_conn *h2;
	struct bufferevent *bev; /* owned by h2; read for TLS errors */
	char *authority;
	char *peer;	  /* the target, for messages */
	char *auth_value; /* "Bearer TOKEN" or NULL; wiped when freed */
	bool tls;
	bool alpn_refused; /* the server picked no ALPN h2 */
	bool handshaken;   /* our side of the TLS handshake completed */
	bool answered;	   /* a response came: the server took us */
	char *tls_err;	   /* why the TLS connection failed, once known */
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
	void (*on_writable)(struct rc_call *call, void *arg);
	void *arg;
	int code; /* -1 until grpc-status seen */
	char *message;
	int http_status;
	bool done;
	struct rc_call *next;
};

/* ---- TLS ------------------------------------------------------------------ */

/* The reason of the newest OpenSSL error on this thread's queue (which is
 * emptied), or `dflt`. */
static const char *ssl_reason(const char *dflt)
{
	unsigned long e, last = 0;
	while ((e = ERR_get_error()) != 0)
		last = e;
	const char *r = last ? ERR_reason_error_string(last) : NULL;
	return r ? r : dflt;
}

/* OpenSSL's own errors for a missing file are vague: say why with errno. */
static bool file_readable(const char *what, const char *file, char **err)
{
	FILE *f = fopen(file, "r");
	if (!f) {
		*err = xasprintf("%s %s: %s", what, file, strerror(errno));
		return false;
	}
	fclose(f);
	return true;
}

/* Never prompt for a key's passphrase (a worker has no one to ask). */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return 0;
}

/* A client context for t: TLS 1.2 or later (1.2 with forward-secret AEAD
 * suites only, as HTTP/2 asks), peer verification against t->ca or the
 * system's store, ALPN h2, the client certificate if any. */
static SSL_CTX *tls_ctx_new(const struct rc_tls *t, char **err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		*err = xasprintf("cannot create a TLS context: %s", ssl_reason("out of memory"));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	static const unsigned char alpn[] = {2, 'h', '2'};
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn)); /* 0 is success */
	if (t->ca) {
		if (!file_readable("CA file", t->ca, err))
			goto fail;
		if (SSL_CTX_load_verify_locations(ctx, t->ca, NULL) != 1) {
			*err = xasprintf("CA file %s: %s", t->ca,
					 ssl_reason("no certificate in it"));
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		*err = xasprintf("cannot load the system's CA certificates: %s",
				 ssl_reason("unknown error"));
		goto fail;
	}
	if (!t->cert != !t->key) {
		*err = xasprintf(
			"a client certificate needs both a certificate file and its key file "
			"(got only the %s)",
			t->cert ? "certificate" : "key");
		goto fail;
	}
	if (t->cert) {
		if (!file_readable("client certificate", t->cert, err) ||
		    !file_readable("client key", t->key, err))
			goto fail;
		if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
			*err = xasprintf("client certificate %s: %s", t->cert,
					 ssl_reason("not a PEM certificate"));
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1) {
			if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
				goto mismatch;
			*err = xasprintf("client key %s: %s (an unencrypted PEM key is needed)",
					 t->key, ssl_reason("not a PEM key"));
			goto fail;
		}
		if (SSL_CTX_check_private_key(ctx) != 1) {
		mismatch:
			*err = xasprintf("client key %s does not belong to the certificate in %s",
					 t->key, t->cert);
			goto fail;
		}
	}
	return ctx;
fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

static bool is_ip_literal(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* HANDSHAKE_DONE: the server must have picked h2 (a TLS server that speaks
 * HTTP/1.1 only would answer our preface with garbage). */
static void tls_info_cb(const SSL *ssl, int where, int ret)
{
	(void)ret;
	struct rc_client *cl = SSL_get_app_data(ssl);
	if (!(where & SSL_CB_HANDSHAKE_DONE) || !cl || cl->alpn_refused)
		return;
	cl->handshaken = true;
	const unsigned char *p;
	unsigned int n;
	SSL_get0_alpn_selected(ssl, &p, &n);
	if (n == 2 && memcmp(p, "h2", 2) == 0)
		return;
	cl->alpn_refused = true;
	if (cl->h2)
		h2_conn_close(cl->h2, "the server did not agree to HTTP/2 (ALPN h2)");
}

/* A new SSL for one connection to host (or server_name), or NULL with
 * *err. */
static SSL *tls_new(const struct rc_tls *t, const char *host, char **err)
{
	const char *name = t->server_name ? t->server_name : host;
	if (!*name) {
		*err = xstrdup("the TLS server name is empty");
		return NULL;
	}
	SSL_CTX *ctx = tls_ctx_new(t, err);
	if (!ctx)
		return NULL;
	SSL *ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* ssl holds its own reference */
	if (!ssl) {
		*err = xasprintf("cannot create a TLS connection: %s", ssl_reason("out of memory"));
		return NULL;
	}
	X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
	X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	int ok;
	if (is_ip_literal(name)) {
		ok = X509_VERIFY_PARAM_set1_ip_asc(vp, name);
	} else {
		ok = X509_VERIFY_PARAM_set1_host(vp, name, 0) &&
		     SSL_set_tlsext_host_name(ssl, name); /* SNI: names only */
	}
	if (ok != 1) {
		ERR_clear_error();
		*err = xasprintf("\"%s\" cannot be used as a TLS server name", name);
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_info_callback(ssl, tls_info_cb);
	return ssl;
}

/* Why the TLS connection of cl failed, or NULL when TLS is not the reason
 * (a refused connection, a reset stream).  Kept once found: libevent hands
 * each queued OpenSSL error out once. */
static const char *tls_failure(struct rc_client *cl)
{
	if (cl->tls_err)
		return cl->tls_err;
	if (!cl->bev)
		return NULL;
	SSL *ssl = bufferevent_openssl_get_ssl(cl->bev);
	unsigned long e, last = 0;
	bool failed = false;
	/* Newest first; the oldest is SSL_get_error()'s code, not a queue
	 * entry: keep the newest real OpenSSL error. */
	while ((e = bufferevent_get_openssl_error(cl->bev)) != 0) {
		failed = true;
		if (!last && ERR_GET_LIB(e) != 0)
			last = e;
	}
	long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	if (cl->alpn_refused) {
		cl->tls_err = xasprintf("TLS connection to %s: the server did not agree to "
					"HTTP/2 (no ALPN h2): not a gRPC server?",
					cl->peer);
	} else if (vr != X509_V_OK) {
		cl->tls_err = xasprintf("TLS handshake with %s failed: the server's certificate "
					"was not accepted: %s%s",
					cl->peer, X509_verify_cert_error_string(vr),
					vr == X509_V_ERR_HOSTNAME_MISMATCH ||
							vr == X509_V_ERR_IP_ADDRESS_MISMATCH
						? " (see --tls-server-name / tls.server-name)"
						: "");
	} else if (last) {
		const char *r = ERR_reason_error_string(last);
		int why = ERR_GET_REASON(last);
		const char *hint = "";
		if (why == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED ||
		    why == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE)
			hint = " (does the server want a client certificate?)";
		else if (why == SSL_R_UNEXPECTED_EOF_WHILE_READING)
			hint = " (the server closed the connection: does it want a client "
			       "certificate, or not this one?)";
		else if (why == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
			 why == SSL_R_TLSV1_ALERT_UNKNOWN_CA ||
			 why == SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED)
			hint = " (the server refused our client certificate)";
		else if (why == SSL_R_WRONG_VERSION_NUMBER || why == SSL_R_PACKET_LENGTH_TOO_LONG)
			hint = " (is the server speaking plaintext?)";
		cl->tls_err = xasprintf("TLS connection to %s failed: %s%s", cl->peer,
					r ? r : "error", hint);
	} else if (failed && !cl->handshaken && ssl && BIO_number_read(SSL_get_rbio(ssl)) == 0) {
		cl->tls_err = xasprintf("cannot reach %s: the connection was refused or closed "
					"before the TLS handshake",
					cl->peer);
	} else if (failed && !cl->handshaken) {
		cl->tls_err = xasprintf("TLS handshake with %s failed: the connection was closed",
					cl->peer);
	} else if (failed && !cl->answered) {
		/* TLS 1.3: the server checks our certificate after our side of
		 * the handshake is done, and may just hang up. */
		cl->tls_err = xasprintf("TLS connection to %s failed: the server closed it right "
					"after the handshake (does it want a client certificate, "
					"or not this one?)",
					cl->peer);
	}
	return cl->tls_err;
}

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
	k->cl->answered = true;
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

/* The client's connection is closing for a reason of its own (a socket
 * error, the peer's EOF), not because this side closed it. */
static bool lost_connection(const struct rc_client *cl)
{
	const char *why = cl->h2 ? h2_conn_close_reason(cl->h2) : NULL;
	return why && strcmp(why, "client closed") != 0;
}

static void c_on_close(struct h2_stream *s, uint32_t error)
{
	struct rc_call *k = h2_stream_user(s);
	k->s = NULL;
	int code = k->code;
	const char *msg = k->message;
	char buf[128];
	const char *tls_why = code < 0 && k->cl->tls ? tls_failure(k->cl) : NULL;
	if (tls_why) {
		code = GRPC_UNAVAILABLE;
		msg = tls_why;
	} else if (code < 0) {
		if (k->http_status && k->http_status != 200) {
			code = http_to_grpc(k->http_status);
			snprintf(buf, sizeof(buf), "HTTP status %d without grpc-status",
				 k->http_status);
		} else if (error && lost_connection(k->cl)) {
			/* The connection went (or never came): UNAVAILABLE, as
			 * gRPC has it, with the transport's reason. */
			code = GRPC_UNAVAILABLE;
			snprintf(buf, sizeof(buf), "%s %s: %s",
				 k->cl->answered ? "lost the connection to" : "cannot connect to",
				 k->cl->peer ? k->cl->peer : "server", h2_conn_close_reason(k->cl->h2));
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

static void c_on_writable(struct h2_stream *s)
{
	struct rc_call *k = h2_stream_user(s);
	void (*cb)(struct rc_call *, void *) = k->on_writable;
	k->on_writable = NULL;
	if (cb)
		cb(k, k->arg);
}

static const struct h2_stream_ops client_ops = {
	.on_headers = c_on_headers,
	.on_data = c_on_data,
	.on_writable = c_on_writable,
	.on_close = c_on_close,
};

static void client_mem_free(struct rc_client *cl)
{
	if (cl->auth_value) {
		OPENSSL_cleanse(cl->auth_value, strlen(cl->auth_value));
		free(cl->auth_value);
	}
	free(cl->authority);
	free(cl->peer);
	free(cl->tls_err);
	free(cl);
}

static void conn_closed(struct h2_conn *h, void *arg)
{
	(void)h;
	struct rc_client *cl = arg;
	cl->closed = true;
	cl->h2 = NULL;
	/* The bufferevent (and its SSL) goes right after this. */
	if (cl->tls && cl->bev) {
		SSL *ssl = bufferevent_openssl_get_ssl(cl->bev);
		if (ssl)
			SSL_set_app_data(ssl, NULL);
	}
	cl->bev = NULL;
	/* The connection is being freed and calls nothing on cl after this. */
	if (cl->release)
		client_mem_free(cl);
}

/* ---- targets and options ---------------------------------------------------- */

void rc_target_free(struct rc_target *t)
{
	free(t->host);
	free(t->port);
	free(t->path);
	memset(t, 0, sizeof(*t));
}

int rc_target_parse(const char *target, bool want_tls, struct rc_target *t, char **err)
{
	static const struct {
		const char *prefix;
		int tls; /* 1 TLS, 0 plaintext */
	} schemes[] = {
		{"grpcs://", 1},
		{"https://", 1},
		{"grpc://", 0},
		{"http://", 0},
	};
	int scheme = -1; /* none */
	const char *rest = target;
	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < ARRAY_LEN(schemes); i++) {
		size_t n = strlen(schemes[i].prefix);
		if (strncasecmp(target, schemes[i].prefix, n) == 0) {
			scheme = schemes[i].tls;
			rest = target + n;
			break;
		}
	}
	if (strncmp(rest, "unix:", 5) == 0) {
		const char *path = rest + 5;
		if (scheme == 1 || want_tls) {
			*err = xasprintf(
				"%s: TLS over a unix socket is not supported (unix: targets "
				"are plaintext; leave the TLS settings out)",
				target);
			return -1;
		}
		if (!*path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			*err = xasprintf("bad unix socket path \"%s\"", path);
			return -1;
		}
		t->path = xstrdup(path);
		return 0;
	}
	if (scheme == 0 && want_tls) {
		*err = xasprintf("%s is a plaintext target but TLS settings were given: write "
				 "grpcs://%s for TLS",
				 target, rest);
		return -1;
	}
	t->tls = scheme == 1 || (scheme < 0 && want_tls);
	size_t n = strlen(rest);
	if (scheme >= 0 && n > 0 && rest[n - 1] == '/')
		n--; /* grpcs://host:port/ */
	char *s = xstrndup(rest, n), *host = s, *port = NULL;
	if (s[0] == '[') {
		char *rb = strchr(s, ']');
		if (!rb || (rb[1] && rb[1] != ':')) {
			*err = xasprintf("bad IPv6 target \"%s\" (want [ADDRESS]:PORT)", target);
			free(s);
			return -1;
		}
		*rb = '\0';
		host = s + 1;
		port = rb[1] ? rb + 2 : NULL;
	} else {
		char *colon = strrchr(s, ':');
		if (colon) {
			*colon = '\0';
			port = colon + 1;
		}
	}
	if (!port && scheme == 1)
		port = "443";
	char *end = NULL;
	long pn = port && *port ? strtol(port, &end, 10) : 0;
	if (!*host || !port || !*port || *end || pn < 1 || pn > 65535 ||
	    strspn(port, "0123456789") != strlen(port)) {
		*err = xasprintf("target \"%s\" needs HOST:PORT (port 1..65535), "
				 "grpcs://HOST[:PORT] or unix:PATH",
				 target);
		free(s);
		return -1;
	}
	t->host = xstrdup(host);
	t->port = xstrdup(port);
	free(s);
	return 0;
}

bool rc_client_opts_tls(const struct rc_client_opts *o)
{
	return o &&
	       (o->tls.enabled || o->tls.ca || o->tls.cert || o->tls.key || o->tls.server_name);
}

/* "Bearer TOKEN" from o, or NULL (no token) with *err NULL.  The token is
 * never put in *err. */
static int make_auth(const struct rc_client_opts *o, char **out, char **err)
{
	*out = NULL;
	if (!o || (!o->token && !o->token_file))
		return 0;
	char buf[8192 + 1];
	const char *src = o->token;
	size_t len;
	if (!src) {
		FILE *f = fopen(o->token_file, "r");
		if (!f) {
			*err = xasprintf("token file %s: %s", o->token_file, strerror(errno));
			return -1;
		}
		len = fread(buf, 1, sizeof(buf), f);
		bool bad = ferror(f);
		fclose(f);
		if (bad || len == sizeof(buf)) {
			OPENSSL_cleanse(buf, sizeof(buf));
			*err = xasprintf("token file %s: %s", o->token_file,
					 bad ? "cannot read it" : "longer than 8 KiB");
			return -1;
		}
		buf[len] = '\0';
		src = buf;
	}
	/* Surrounding blanks (a file's final newline) are not the token's. */
	while (*src == ' ' || *src == '\t' || *src == '\r' || *src == '\n')
		src++;
	len = strlen(src);
	while (len > 0 && strchr(" \t\r\n", src[len - 1]))
		len--;
	const char *what = o->token ? "the token" : o->token_file;
	const char *bad = NULL;
	if (len == 0)
		bad = "is empty";
	for (size_t i = 0; !bad && i < len; i++)
		if ((unsigned char)src[i] < 0x21 || (unsigned char)src[i] > 0x7e)
			bad = "holds a character a token can't have (one line of printable "
			      "ASCII, no spaces)";
	if (!bad)
		*out = xasprintf("Bearer %.*s", (int)len, src);
	if (src == buf)
		OPENSSL_cleanse(buf, sizeof(buf));
	if (bad) {
		*err = xasprintf("%s%s %s", o->token ? "" : "token file ", what, bad);
		return -1;
	}
	return 0;
}

int rc_client_opts_check(const struct rc_client_opts *o, char **err)
{
	char *auth = NULL;
	if (make_auth(o, &auth, err) != 0)
		return -1;
	if (auth) {
		OPENSSL_cleanse(auth, strlen(auth));
		free(auth);
	}
	if (!rc_client_opts_tls(o))
		return 0;
	if (o->tls.server_name && !*o->tls.server_name) {
		*err = xstrdup("the TLS server name is empty");
		return -1;
	}
	SSL_CTX *ctx = tls_ctx_new(&o->tls, err);
	if (!ctx)
		return -1;
	SSL_CTX_free(ctx);
	return 0;
}

bool rc_client_opt(struct rc_client_opts *o, int opt, const char *arg)
{
	switch (opt) {
	case RC_OPT_TLS: o->tls.enabled = true; return true;
	case RC_OPT_TLS_CA: o->tls.ca = arg; return true;
	case RC_OPT_TLS_CERT: o->tls.cert = arg; return true;
	case RC_OPT_TLS_KEY: o->tls.key = arg; return true;
	case RC_OPT_TLS_SERVER_NAME: o->tls.server_name = arg; return true;
	case RC_OPT_TOKEN_FILE: o->token_file = arg; return true;
	default: return false;
	}
}

void rc_client_opts_env(struct rc_client_opts *o)
{
	const char *f = getenv("REACTOR_TOKEN_FILE");
	if (!o->token && !o->token_file && f && *f)
		o->token_file = f;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
	return true;
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
	cl->peer = xstrdup(name);
	cl->h2 = h2_conn_client(bev, &client_settings, name, conn_closed, cl);
	return cl;
}

struct rc_client *rc_client_connect_opts(struct event_base *base, const char *target,
					 const struct rc_client_opts *o, char **err)
{
	struct rc_target t;
	if (rc_target_parse(target, rc_client_opts_tls(o), &t, err) != 0)
		return NULL;
	static const struct rc_tls no_tls;
	const struct rc_tls *tls = o ? &o->tls : &no_tls;
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof(ss));
	if (t.path) {
		struct sockaddr_un *sun = (void *)&ss;
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, t.path);
		sl = sizeof(*sun);
	} else {
		struct addrinfo hints = {0}, *res;
		hints.ai_socktype = SOCK_STREAM;
		int rv = getaddrinfo(t.host, t.port, &hints, &res);
		if (rv != 0) {
			*err = xasprintf("%s: %s", target, gai_strerror(rv));
			rc_target_free(&t);
			return NULL;
		}
		memcpy(&ss, res->ai_addr, res->ai_addrlen);
		sl = res->ai_addrlen;
		freeaddrinfo(res);
	}
	char *auth = NULL;
	if (make_auth(o, &auth, err) != 0) {
		rc_target_free(&t);
		return NULL;
	}
	SSL *ssl = NULL;
	if (t.tls && !(ssl = tls_new(tls, t.host, err))) {
		free(auth);
		rc_target_free(&t);
		return NULL;
	}
	struct rc_client *cl = xcalloc(1, sizeof(*cl));
	cl->base = base;
	cl->peer = xstrdup(target);
	cl->auth_value = auth;
	cl->tls = t.tls;
	if (t.path)
		cl->authority = xstrdup("localhost");
	else if (t.tls && tls->server_name)
		cl->authority = xstrdup(tls->server_name);
	else if (strchr(t.host, ':'))
		cl->authority = xasprintf("[%s]:%s", t.host, t.port);
	else
		cl->authority = xasprintf("%s:%s", t.host, t.port);
	if (auth && !t.tls && !is_loopback(&ss))
		LOGW("client", "%s: sending a bearer token without TLS", target);
	struct bufferevent *bev;
	if (ssl) {
		SSL_set_app_data(ssl, cl);
		/* CLOSE_ON_FREE also frees the SSL. */
		bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
						     BEV_OPT_CLOSE_ON_FREE);
		/* gRPC servers may close without close_notify: an EOF, not an
		 * error (truncation can't hurt: every message is length-framed
		 * and every call ends with trailers). */
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	} else {
		bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	cl->bev = bev;
	cl->h2 = h2_conn_client(bev, &client_settings, target, conn_closed, cl);
	if (bufferevent_socket_connect(bev, (struct sockaddr *)&ss, (int)sl) != 0) {
		h2_conn_close(cl->h2, "connect failed");
	} else if (ss.ss_family != AF_UNIX) {
		/* Small gRPC frames must not wait for Nagle. */
		int one = 1;
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	rc_target_free(&t);
	return cl;
}

struct rc_client *rc_client_connect(struct event_base *base, const char *target, char **err)
{
	return rc_client_connect_opts(base, target, NULL, err);
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
		client_mem_free(c);
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
	client_mem_free(c);
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
	h[n++] = h2_hdr_make(":scheme", c->tls ? "https" : "http");
	h[n++] = h2_hdr_make(":path", path);
	h[n++] = h2_hdr_make(":authority", c->authority);
	h[n++] = h2_hdr_make("content-type", "application/grpc");
	h[n++] = h2_hdr_make("te", "trailers");
	h[n++] = h2_hdr_make("user-agent", "reactor-client/0.1");
	if (c->auth_value)
		h[n++] = h2_hdr_make("authorization", c->auth_value);
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

size_t rc_call_pending(const struct rc_call *k)
{
	return k->s ? h2_stream_pending(k->s) : 0;
}

void rc_call_on_writable(struct rc_call *k, void (*cb)(struct rc_call *call, void *arg))
{
	k->on_writable = cb;
	if (k->s)
		h2_stream_want_writable(k->s);
}

/* One unary call in flight: the response kept (unpacked) until the end. */
struct unary {
	const ProtobufCMessageDescriptor *desc;
	ProtobufCMessage *resp;
	rc_unary_cb cb;
	void *arg;
	ProtobufCMessage **keep; /* rc_unary: takes the response instead of freeing it */
};

static void unary_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct unary *u = arg;
	if (u->resp)
		protobuf_c_message_free_unpacked(u->resp, NULL);
	u->resp = protobuf_c_message_unpack(u->desc, NULL, len, msg);
}

static void unary_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct unary *u = arg;
	if (code == GRPC_OK && !u->resp) {
		code = GRPC_INTERNAL;
		message = "OK status without a valid response message";
	}
	if (code != GRPC_OK && u->resp) {
		protobuf_c_message_free_unpacked(u->resp, NULL);
		u->resp = NULL;
	}
	u->cb(code, message, u->resp, u->arg);
	if (u->keep)
		*u->keep = u->resp;
	else if (u->resp)
		protobuf_c_message_free_unpacked(u->resp, NULL);
	free(u);
}

static int unary_start(struct rc_client *c, const char *path, const ProtobufCMessage *req,
		       const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_us,
		       rc_unary_cb cb, void *arg, ProtobufCMessage **keep)
{
	if (!c)
		return -1;
	struct unary *u = xcalloc(1, sizeof(*u));
	u->desc = resp_desc;
	u->cb = cb;
	u->arg = arg;
	u->keep = keep;
	struct rc_call *k = rc_call_start(c, path, timeout_us, NULL, 0, unary_msg, unary_done, u);
	if (!k) {
		free(u);
		return -1;
	}
	size_t n = protobuf_c_message_get_packed_size(req);
	uint8_t *buf = xmalloc(n ? n : 1);
	protobuf_c_message_pack(req, buf);
	rc_call_send(k, buf, n);
	free(buf);
	rc_call_close_send(k);
	return 0;
}

int rc_unary_start(struct rc_client *c, const char *path, const ProtobufCMessage *req,
		   const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_us, rc_unary_cb cb,
		   void *arg)
{
	return unary_start(c, path, req, resp_desc, timeout_us, cb, arg, NULL);
}

/* rc_unary's wait: the status, its message and (kept by unary_done) the
 * response. */
struct unary_wait {
	int code;
	char *msg;
	bool done;
};

static void unary_wait_cb(int code, const char *message, ProtobufCMessage *resp, void *arg)
{
	(void)resp;
	struct unary_wait *w = arg;
	w->code = code;
	w->msg = xstrdup(message ? message : "");
	w->done = true;
}

int rc_unary(struct rc_client *c, const char *path, const ProtobufCMessage *req,
	     const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, char **msg,
	     int64_t timeout_us)
{
	struct unary_wait w = {.code = -1};
	ProtobufCMessage *got = NULL;
	if (unary_start(c, path, req, resp_desc, timeout_us, unary_wait_cb, &w, &got) != 0) {
		if (msg)
			*msg = xstrdup("connection is closed");
		return GRPC_UNAVAILABLE;
	}
	while (!w.done)
		event_base_loop(c->base, EVLOOP_ONCE);
	*resp = got;
	if (msg)
		*msg = w.msg;
	else
		free(w.msg);
	return w.code;
}
