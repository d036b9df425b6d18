/*
 * tls.c - SSL contexts for TLS listeners and what the connections ask of
 * their TLS bufferevents (see tls.h).  Policy lives here in one place:
 * TLS 1.2 minimum, ALPN h2 (a client offering only other protocols gets a
 * no_application_protocol alert; h2.c closes one that offered none), no
 * renegotiation or compression, AEAD suites for TLS 1.2 (TLS 1.3 suites
 * are all AEAD), session tickets on, and client certificates verified
 * against client-ca by OpenSSL itself, so an expired or foreign
 * certificate fails the handshake even where client-auth is optional.
 */
#include "transport/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/util.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/cfg.h"

/* ECDHE for forward secrecy, AEAD only: what RFC 9113 section 9.2.2 lets
 * an HTTP/2 server negotiate over TLS 1.2. */
#define TLS12_CIPHERS                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* The OpenSSL error queue as one line ("a; b"), cleared; NULL if empty. */
static char *ssl_errors(void)
{
	char *out = NULL;
	unsigned long e;
	while ((e = ERR_get_error()) != 0) {
		char buf[256];
		ERR_error_string_n(e, buf, sizeof buf);
		char *more = out ? xasprintf("%s; %s", out, buf) : xstrdup(buf);
		free(out);
		out = more;
	}
	return out;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	for (unsigned int i = 0; i < inlen;) {
		unsigned int n = in[i];
		if (i + 1 + n > inlen)
			break;
		if (n == 2 && !memcmp(in + i + 1, "h2", 2)) {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + n;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol */
}

static int fail_file(char **err, const char *what, const char *file)
{
	char *e = ssl_errors();
	*err = xasprintf("%s %s: %s", what, file, e ? e : "unusable");
	free(e);
	return -1;
}

static int load_files(SSL_CTX *ctx, const struct cfg_tls *t, char **err)
{
	if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1)
		return fail_file(err, "tls.cert", t->cert);
	if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1)
		return fail_file(err, "tls.key", t->key);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return fail_file(err, "tls.key does not match tls.cert:", t->key);
	if (t->client_auth == CFG_CLIENT_AUTH_NONE)
		return 0;
	if (SSL_CTX_load_verify_locations(ctx, t->client_ca, NULL) != 1)
		return fail_file(err, "tls.client-ca", t->client_ca);
	STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->client_ca);
	if (!names)
		return fail_file(err, "tls.client-ca (no certificate names)", t->client_ca);
	SSL_CTX_set_client_CA_list(ctx, names);
	int mode = SSL_VERIFY_PEER;
	if (t->client_auth == CFG_CLIENT_AUTH_REQUIRE)
		mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	SSL_CTX_set_verify(ctx, mode, NULL);
	return 0;
}

SSL_CTX *tls_ctx_new(const struct cfg_tls *t, char **err)
{
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		char *e = ssl_errors();
		*err = xasprintf("cannot create an SSL context: %s", e ? e : "?");
		free(e);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	/* Resumed sessions keep their verified client certificate; OpenSSL
	 * refuses to resume under client verification without an id context. */
	static const unsigned char sid[] = "reactord";
	SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (load_files(ctx, t, err) != 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

void tls_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

static char *bio_string(BIO *b)
{
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *s = xstrndup(p, n > 0 ? (size_t)n : 0);
	BIO_free(b);
	return s;
}

char *tls_ctx_describe(SSL_CTX *ctx)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);
	if (!x)
		return xstrdup("no certificate");
	BIO *b = BIO_new(BIO_s_mem());
	BIO_puts(b, "subject ");
	X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
	BIO_puts(b, ", serial ");
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	BIO_puts(b, hex ? hex : "?");
	OPENSSL_free(hex);
	BN_free(bn);
	BIO_puts(b, ", expires ");
	ASN1_TIME_print(b, X509_get0_notAfter(x));
	return bio_string(b);
}

struct bufferevent *tls_accept_bev(struct event_base *base, SSL_CTX *ctx, int fd)
{
	SSL *ssl = SSL_new(ctx);
	if (!ssl) {
		ERR_clear_error();
		evutil_closesocket(fd);
		return NULL;
	}
	struct bufferevent *bev = bufferevent_openssl_socket_new(
		base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		SSL_free(ssl);
		evutil_closesocket(fd);
		return NULL;
	}
	/* gRPC clients mostly close without close_notify: that is an end of
	 * stream, not an error. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

bool tls_bev_is_tls(struct bufferevent *bev)
{
	return bufferevent_openssl_get_ssl(bev) != NULL;
}

char *tls_bev_describe(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	if (!ssl)
		return xstrdup("plaintext");
	return xasprintf("%s %s%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl),
			 SSL_session_reused(ssl) ? " resumed" : "");
}

bool tls_bev_alpn_h2(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	const unsigned char *p = NULL;
	unsigned int n = 0;
	if (ssl)
		SSL_get0_alpn_selected(ssl, &p, &n);
	return n == 2 && !memcmp(p, "h2", 2);
}

/* A name usable as an identity: printable ASCII or UTF-8, no controls,
 * no NUL inside (a certificate can hide one to fool string compares). */
static char *name_copy(const ASN1_STRING *s, bool to_utf8)
{
	unsigned char *u = NULL;
	int n;
	if (to_utf8) {
		n = ASN1_STRING_to_UTF8(&u, s);
		if (n < 0)
			return NULL;
	} else {
		n = ASN1_STRING_length(s);
	}
	const unsigned char *p = to_utf8 ? u : ASN1_STRING_get0_data(s);
	char *out = NULL;
	bool ok = n > 0 && n < 1024;
	for (int i = 0; ok && i < n; i++)
		ok = p[i] >= 0x20 && p[i] != 0x7f;
	if (ok)
		out = xstrndup((const char *)p, (size_t)n);
	OPENSSL_free(u);
	return out;
}

char *tls_bev_peer_identity(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	X509 *x = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
	if (!x || SSL_get_verify_result(ssl) != X509_V_OK)
		return NULL;
	char *id = NULL;
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	static const int order[] = {GEN_URI, GEN_DNS};
	for (size_t o = 0; !id && names && o < ARRAY_LEN(order); o++) {
		for (int i = 0; !id && i < sk_GENERAL_NAME_num(names); i++) {
			const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
			if (g->type == order[o])
				id = name_copy(g->type == GEN_URI ? g->d.uniformResourceIdentifier
								  : g->d.dNSName,
					       false);
		}
	}
	GENERAL_NAMES_free(names);
	if (id)
		return id;
	X509_NAME *subj = X509_get_subject_name(x);
	int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	if (i < 0)
		return NULL;
	return name_copy(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)), true);
}

char *tls_bev_error(struct bufferevent *bev)
{
	char *out = NULL;
	unsigned long e;
	while ((e = bufferevent_get_openssl_error(bev)) != 0) {
		const char *r = ERR_reason_error_string(e);
		if (!r)
			continue; /* a code without text adds nothing */
		char *more = out ? xasprintf("%s; %s", out, r) : xstrdup(r);
		free(out);
		out = more;
	}
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	if (v != X509_V_OK) {
		char *more =
			xasprintf("%s (client certificate: %s)", out ? out : "handshake failed",
				  X509_verify_cert_error_string(v));
		free(out);
		out = more;
	}
	ERR_clear_error();
	return out;
}
