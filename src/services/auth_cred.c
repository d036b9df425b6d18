/*
 * auth_cred.c - the credential sources of auth: a tokens file of SHA-256
 * hashes, and JWTs verified by libjwt against configured key files.
 *
 * Tokens file: one token per line, '#' starts a comment line:
 *
 *   # sha256(token)                                                   identity  roles...
 *   9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ci        execute
 *
 * The hash may carry a "sha256:" prefix; the roles (instance and/or
 * bucket roles) hold on every instance and bucket, on top of what the
 * config grants the identity.  `printf %s "$TOKEN" | sha256sum` makes the
 * hash.  Lookups hash the presented token and compare it with every line
 * in constant time (CRYPTO_memcmp, no early exit).
 *
 * JWT keys: a file holding a PEM public key ("-----BEGIN PUBLIC KEY-----",
 * RSA for RS*, EC for ES*) or else an HMAC secret for HS* (the file's
 * bytes, trailing newlines removed, at least 32 bytes).  A token is only
 * tried against keys of its algorithm's family, so an RSA public key can
 * never be used as an HMAC secret.  "alg": "none" is always refused.
 * libjwt checks the signature; the claims (exp, nbf, iss, aud, identity,
 * roles) are checked here, on the payload as core/json.h parses it.  A
 * token that verified is remembered by its SHA-256 with its claims (at
 * most AUTH_JWT_CACHE, forgotten all at once when full and on every
 * reload), so a client that sends the same JWT on each call pays for the
 * signature once; exp and nbf are still checked on every call.
 */
#include "services/auth.h"
#include "services/auth_int.h"

#include <ctype.h>
#include <errno.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cfg.h"
#include "core/json.h"

/* ---- files ------------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len, char **err)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		*err = xasprintf("%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	char *buf = NULL;
	size_t n = 0, cap = 0, got;
	do {
		if (cap - n < 4096)
			buf = xrealloc(buf, cap = 2 * cap + 8192);
		n += got = fread(buf + n, 1, cap - n - 1, f);
	} while (got > 0 && n < (16u << 20));
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		*err = xasprintf("%s: cannot read", path);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* An identity is one printable word without quotes. */
static bool identity_ok(const char *s)
{
	if (!*s || strlen(s) > 200)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p <= ' ' || *p == 0x7f || *p == '"')
			return false;
	return true;
}

static int parse_tokens(const char *file, char *text, struct auth_creds *cr, char **err)
{
	int lineno = 0;
	for (char *line = text, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		char *save = NULL;
		char *hash = strtok_r(line, " \t\r", &save);
		if (!hash || hash[0] == '#')
			continue;
		if (!strncmp(hash, "sha256:", 7))
			hash += 7;
		struct auth_token t = {0};
		bool ok = strlen(hash) == 64;
		for (int i = 0; ok && i < 32; i++) {
			int hi = hexval(hash[2 * i]), lo = hexval(hash[2 * i + 1]);
			ok = hi >= 0 && lo >= 0;
			t.hash[i] = (uint8_t)(hi << 4 | lo);
		}
		/* Never quote the line: it may hold a plain token by mistake. */
		if (!ok) {
			*err = xasprintf("%s:%d: expected a SHA-256 hash in hex (64 digits) first: "
					 "\"<sha256-hex> <identity> [role...]\"",
					 file, lineno);
			return -1;
		}
		char *id = strtok_r(NULL, " \t\r", &save);
		if (!id || !identity_ok(id)) {
			*err = xasprintf("%s:%d: expected an identity (one word) after the hash",
					 file, lineno);
			return -1;
		}
		if (!strcmp(id, "anonymous")) {
			*err = xasprintf(
				"%s:%d: the identity \"anonymous\" is reserved for callers "
				"without credentials",
				file, lineno);
			return -1;
		}
		for (char *r; (r = strtok_r(NULL, " \t\r", &save));) {
			if (!auth_roles_add(&t.roles, r)) {
				*err = xasprintf("%s:%d: unknown role \"%.40s\"", file, lineno, r);
				return -1;
			}
		}
		t.identity = xstrdup(id);
		cr->tokens = xrealloc(cr->tokens, (cr->n_tokens + 1) * sizeof *cr->tokens);
		cr->tokens[cr->n_tokens++] = t;
	}
	return 0;
}

static int load_key(const char *file, struct auth_key *k, char **err)
{
	size_t len;
	char *data = read_file(file, &len, err);
	if (!data)
		return -1;
	k->file = xstrdup(file);
	if (strstr(data, "-----BEGIN")) {
		BIO *bio = BIO_new_mem_buf(data, (int)len);
		EVP_PKEY *pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
		BIO_free(bio);
		int type = pk ? EVP_PKEY_base_id(pk) : 0;
		EVP_PKEY_free(pk);
		if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC) {
			free(data);
			*err = xasprintf("%s: not a PEM RSA or EC public key (\"-----BEGIN PUBLIC "
					 "KEY-----\"); an HMAC secret file must not be PEM",
					 file);
			return -1;
		}
		k->family = type == EVP_PKEY_RSA ? 'R' : 'E';
	} else {
		while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
			data[--len] = '\0';
		if (len < 32) {
			OPENSSL_cleanse(data, len);
			free(data);
			*err = xasprintf("%s: an HMAC secret must be at least 32 bytes", file);
			return -1;
		}
		k->family = 'H';
	}
	k->data = (unsigned char *)data;
	k->len = len;
	return 0;
}

int auth_creds_load(const struct cfg_auth *a, struct auth_creds *out, char **err)
{
	memset(out, 0, sizeof *out);
	map_init(&out->jwt_seen);
	if (a->tokens_file) {
		size_t len;
		char *text = read_file(a->tokens_file, &len, err);
		if (!text)
			return -1;
		out->have_tokens = true;
		int r = parse_tokens(a->tokens_file, text, out, err);
		OPENSSL_cleanse(text, len);
		free(text);
		if (r) {
			auth_creds_free(out);
			return -1;
		}
	}
	if (a->n_jwt_keys) {
		out->keys = xcalloc((size_t)a->n_jwt_keys, sizeof *out->keys);
		for (int i = 0; i < a->n_jwt_keys; i++) {
			if (load_key(a->jwt_keys[i], &out->keys[i], err) != 0) {
				auth_creds_free(out);
				return -1;
			}
			out->n_keys++;
		}
	}
	return 0;
}

static void jwt_seen_clear(struct auth_creds *cr)
{
	for (struct auth_jwt_seen *e = cr->jwt_all, *next; e; e = next) {
		next = e->next_all;
		free(e->identity);
		free(e);
	}
	cr->jwt_all = NULL;
	map_clear(&cr->jwt_seen);
}

void auth_creds_free(struct auth_creds *cr)
{
	jwt_seen_clear(cr);
	for (size_t i = 0; i < cr->n_tokens; i++)
		free(cr->tokens[i].identity);
	free(cr->tokens);
	for (size_t i = 0; i < cr->n_keys; i++) {
		if (cr->keys[i].data)
			OPENSSL_cleanse(cr->keys[i].data, cr->keys[i].len);
		free(cr->keys[i].data);
		free(cr->keys[i].file);
	}
	free(cr->keys);
	memset(cr, 0, sizeof *cr);
}

/* ---- bearer tokens ---------------------------------------------------------- */

int auth_check_token(const struct auth_creds *cr, const char *token, char **identity,
		     struct auth_roles *roles, char **why)
{
	uint8_t h[32];
	unsigned int hl = 0;
	if (!cr->have_tokens) {
		*why = xasprintf("bearer tokens are not accepted here (no auth.tokens-file); "
				 "expected a JWT or a client certificate");
		return -1;
	}
	if (!EVP_Digest(token, strlen(token), h, &hl, EVP_sha256(), NULL) || hl != 32) {
		*why = xasprintf("cannot hash the bearer token");
		return -1;
	}
	const struct auth_token *hit = NULL;
	for (size_t i = 0; i < cr->n_tokens; i++) {
		bool eq = CRYPTO_memcmp(h, cr->tokens[i].hash, 32) == 0;
		if (eq && !hit)
			hit = &cr->tokens[i];
	}
	OPENSSL_cleanse(h, sizeof h);
	if (!hit) {
		*why = xasprintf("unknown bearer token: expected a token listed (by its SHA-256) "
				 "in auth.tokens-file");
		return -1;
	}
	*identity = xstrdup(hit->identity);
	*roles = hit->roles;
	return 0;
}

/* ---- JWT -------------------------------------------------------------------- */

static bool b64url_char(int ch)
{
	return isalnum(ch) || ch == '-' || ch == '_';
}

bool auth_looks_like_jwt(const char *t)
{
	int dots = 0;
	size_t run = 0;
	for (const char *p = t;; p++) {
		if (*p == '.' || !*p) {
			/* The signature may be empty only for alg none, which we
			 * want to recognise (and refuse) as a JWT too. */
			if (run == 0 && !(dots == 2 && !*p))
				return false;
			if (!*p)
				return dots == 2;
			dots++;
			run = 0;
		} else if (!b64url_char((unsigned char)*p)) {
			return false;
		} else {
			run++;
		}
	}
}

/* Decode the base64url segment [s, s + len) as JSON. */
static struct json *segment_json(const char *s, size_t len)
{
	char *b = xmalloc(len + 4);
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		b[n++] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
	while (n % 4)
		b[n++] = '=';
	size_t outlen;
	uint8_t *raw = b64_decode(b, n, &outlen);
	free(b);
	if (!raw)
		return NULL;
	char e[128];
	struct json *j = json_parse((const char *)raw, outlen, e, sizeof e);
	free(raw);
	return j;
}

static bool alg_allowed(const struct cfg_auth *a, const char *alg)
{
	for (int i = 0; i < a->n_jwt_algorithms; i++)
		if (!strcmp(a->jwt_algorithms[i], alg))
			return true;
	return false;
}

static char *alg_list(const struct cfg_auth *a)
{
	char *s = xstrdup("");
	for (int i = 0; i < a->n_jwt_algorithms; i++) {
		char *t = xasprintf("%s%s%s", s, i ? ", " : "", a->jwt_algorithms[i]);
		free(s);
		s = t;
	}
	return s;
}

static bool num_claim(const struct json *claims, const char *name, int64_t *out)
{
	const struct json *v = json_get(claims, name);
	if (!v || v->type != JSON_NUMBER)
		return false;
	*out = v->is_int ? v->i : (int64_t)v->num;
	return true;
}

static bool aud_ok(const struct json *aud, const char *want)
{
	if (!aud)
		return false;
	if (aud->type == JSON_STRING)
		return !strcmp(aud->str, want);
	if (aud->type != JSON_ARRAY)
		return false;
	for (size_t i = 0; i < aud->n; i++)
		if (aud->items[i]->type == JSON_STRING && !strcmp(aud->items[i]->str, want))
			return true;
	return false;
}

/* exp and nbf against now, with the configured clock skew. */
static int check_times(const struct cfg_auth *a, int64_t exp, int64_t nbf, int64_t now, char **why)
{
	int64_t skew = a->jwt_clock_skew_us / 1000000;
	if (now > exp + skew) {
		*why = xasprintf("JWT expired %lld s ago", (long long)(now - exp));
		return -1;
	}
	if (nbf != INT64_MIN && now + skew < nbf) {
		*why = xasprintf("JWT is not valid before %lld s from now", (long long)(nbf - now));
		return -1;
	}
	return 0;
}

static int check_claims(const struct cfg_auth *a, const struct json *cl, int64_t now,
			char **identity, struct auth_roles *roles, int64_t *exp_out,
			int64_t *nbf_out, char **why)
{
	int64_t exp, nbf;
	if (!cl || cl->type != JSON_OBJECT) {
		*why = xasprintf("JWT payload is not a JSON object");
		return -1;
	}
	if (!num_claim(cl, "exp", &exp)) {
		*why = xasprintf(
			"JWT has no \"exp\" (expiry) claim: expected a token that expires");
		return -1;
	}
	if (!num_claim(cl, "nbf", &nbf))
		nbf = INT64_MIN;
	if (check_times(a, exp, nbf, now, why) != 0)
		return -1;
	*exp_out = exp;
	*nbf_out = nbf;
	if (a->jwt_issuer) {
		const struct json *iss = json_get(cl, "iss");
		if (!iss || iss->type != JSON_STRING || strcmp(iss->str, a->jwt_issuer)) {
			*why = xasprintf("JWT issuer is not the expected \"%s\"", a->jwt_issuer);
			return -1;
		}
	}
	if (a->jwt_audience && !aud_ok(json_get(cl, "aud"), a->jwt_audience)) {
		*why = xasprintf("JWT audience does not include the expected \"%s\"",
				 a->jwt_audience);
		return -1;
	}
	const struct json *id = json_get(cl, a->jwt_identity_claim);
	if (!id || id->type != JSON_STRING || !identity_ok(id->str) ||
	    !strcmp(id->str, "anonymous")) {
		*why = xasprintf("JWT claim \"%s\" must be the caller's identity (one word)",
				 a->jwt_identity_claim);
		return -1;
	}
	/* Roles: an array of names or one space-separated string; names that
	 * are not roles are ignored (an IdP's claim may carry others). */
	memset(roles, 0, sizeof *roles);
	const struct json *rl = json_get(cl, a->jwt_roles_claim);
	if (rl && rl->type == JSON_ARRAY) {
		for (size_t i = 0; i < rl->n; i++)
			if (rl->items[i]->type == JSON_STRING)
				(void)auth_roles_add(roles, rl->items[i]->str);
	} else if (rl && rl->type == JSON_STRING) {
		char *copy = xstrdup(rl->str), *save = NULL;
		for (char *r = strtok_r(copy, " ", &save); r; r = strtok_r(NULL, " ", &save))
			(void)auth_roles_add(roles, r);
		free(copy);
	}
	*identity = xstrdup(id->str);
	return 0;
}

static bool seen_eq(const struct map_node *n, const void *key)
{
	return CRYPTO_memcmp(container_of(n, struct auth_jwt_seen, node)->hash, key, 32) == 0;
}

int auth_check_jwt(const struct cfg_auth *a, struct auth_creds *cr, const char *token,
		   int64_t now_s, char **identity, struct auth_roles *roles, char **why)
{
	if (!cr->n_keys) {
		*why = xasprintf("JWTs are not accepted here (no auth.jwt.keys); expected a token "
				 "from auth.tokens-file or a client certificate");
		return -1;
	}
	uint8_t th[32];
	unsigned int hl = 0;
	if (!EVP_Digest(token, strlen(token), th, &hl, EVP_sha256(), NULL) || hl != 32) {
		*why = xasprintf("cannot hash the JWT");
		return -1;
	}
	uint64_t key;
	memcpy(&key, th, sizeof key);
	struct map_node *hit = map_find(&cr->jwt_seen, key, seen_eq, th);
	if (hit) {
		const struct auth_jwt_seen *e = container_of(hit, struct auth_jwt_seen, node);
		if (check_times(a, e->exp, e->nbf, now_s, why) != 0)
			return -1;
		*identity = xstrdup(e->identity);
		*roles = e->roles;
		return 0;
	}
	const char *dot = strchr(token, '.');
	struct json *head = segment_json(token, (size_t)(dot - token));
	const struct json *alg = head ? json_get(head, "alg") : NULL;
	if (!alg || alg->type != JSON_STRING) {
		json_free(head);
		*why = xasprintf("malformed JWT header: expected base64url JSON with \"alg\"");
		return -1;
	}
	char algname[16];
	snprintf(algname, sizeof algname, "%s", alg->str);
	json_free(head);
	if (!alg_allowed(a, algname)) {
		char *l = alg_list(a);
		*why = xasprintf("JWT algorithm \"%s\" is refused: expected one of %s", algname, l);
		free(l);
		return -1;
	}
	jwt_alg_t want = jwt_str_alg(algname);
	int family = algname[0];
	jwt_t *j = NULL;
	bool tried = false;
	for (size_t i = 0; i < cr->n_keys && !j; i++) {
		if (cr->keys[i].family != family)
			continue;
		tried = true;
		jwt_t *t = NULL;
		if (jwt_decode(&t, token, cr->keys[i].data, (int)cr->keys[i].len) == 0 && t &&
		    jwt_get_alg(t) == want && want != JWT_ALG_NONE)
			j = t;
		else if (t)
			jwt_free(t);
	}
	if (!j) {
		*why = tried ? xasprintf("JWT signature does not verify with the configured %s "
					 "keys",
					 family == 'H'	 ? "HMAC"
					 : family == 'R' ? "RSA"
							 : "EC")
			     : xasprintf("no configured key can verify %s JWTs", algname);
		return -1;
	}
	char *payload = jwt_get_grants_json(j, NULL);
	jwt_free(j);
	char e[128];
	struct json *cl = payload ? json_parse(payload, strlen(payload), e, sizeof e) : NULL;
	free(payload);
	int64_t exp = 0, nbf = 0;
	int r = check_claims(a, cl, now_s, identity, roles, &exp, &nbf, why);
	json_free(cl);
	if (r == 0) {
		if (map_count(&cr->jwt_seen) >= AUTH_JWT_CACHE)
			jwt_seen_clear(cr);
		struct auth_jwt_seen *ent = xcalloc(1, sizeof *ent);
		memcpy(ent->hash, th, 32);
		ent->identity = xstrdup(*identity);
		ent->roles = *roles;
		ent->exp = exp;
		ent->nbf = nbf;
		ent->next_all = cr->jwt_all;
		cr->jwt_all = ent;
		map_insert(&cr->jwt_seen, &ent->node, key);
	}
	return r;
}
