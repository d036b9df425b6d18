/*
 * digest.c - SHA-256 digests: parsing and validating client digests,
 * hashing through OpenSSL EVP (one-shot and streaming), and the
 * incrementally-rehashed intrusive table keyed by digest.  Owns only the
 * process-wide EVP_MD handle, fetched once.
 */
#include "core/digest.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* Bucket arrays start here and double; each table operation moves this
 * many tab[0] buckets while a rehash is in progress.  Growth starts when
 * count reaches the bucket count, and the next growth needs as many more
 * inserts as there are buckets to move, so any step >= 1 finishes in time. */
/* How much of a bad hash string an error message quotes. */
#define ERR_QUOTE_MAX 72

const struct digest digest_empty = {
	.hash = {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4,
		 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b,
		 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55},
	.size = 0,
	.hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
};

/* OpenSSL 3 looks the algorithm up in its provider table on every
 * EVP_sha256()-based init unless given an explicitly fetched EVP_MD; with
 * many small blobs that lookup shows up next to the hashing itself. */
static const EVP_MD *sha256_md(void)
{
	static const EVP_MD *md;
	if (!md) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
		md = EVP_MD_fetch(NULL, "SHA256", NULL);
#endif
		if (!md)
			md = EVP_sha256();
		if (!md) {
			fprintf(stderr, "reactord: OpenSSL has no SHA-256\n");
			abort();
		}
	}
	return md;
}

/* Lowercase hex digit value + 1, 0 for anything else.  A table, not
 * range tests: random hex defeats the branch predictor, and the branchy
 * form cost ~1 us a digest, 10 ms for a 10,000-digest FindMissingBlobs. */
static const uint8_t hexval1[256] = {
	['0'] = 1,  ['1'] = 2,	['2'] = 3,  ['3'] = 4,	['4'] = 5,  ['5'] = 6,
	['6'] = 7,  ['7'] = 8,	['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12,
	['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
};

static void to_hex(const uint8_t *in, size_t n, char *out)
{
	static const char xd[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = xd[in[i] >> 4];
		out[2 * i + 1] = xd[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* The bad hash goes back to the client inside grpc-message, so keep it
 * short and printable. */
static char *quote_for_error(const char *s)
{
	size_t n = strlen(s);
	size_t take = n > ERR_QUOTE_MAX ? ERR_QUOTE_MAX : n;
	char *q = xmalloc(take + 4);
	for (size_t i = 0; i < take; i++) {
		unsigned char c = (unsigned char)s[i];
		q[i] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
	}
	strcpy(q + take, n > take ? "..." : "");
	return q;
}

int digest_parse(const char *hex, int64_t size, struct digest *out, char **err)
{
	if (!hex)
		hex = "";
	size_t n = strnlen(hex, DIGEST_HEX_LEN + 1);
	uint8_t hash[DIGEST_HASH_LEN];
	bool ok = n == DIGEST_HEX_LEN;
	if (ok) {
		unsigned bad = 0;
		for (size_t i = 0; i < DIGEST_HASH_LEN; i++) {
			unsigned hi = hexval1[(uint8_t)hex[2 * i]];
			unsigned lo = hexval1[(uint8_t)hex[2 * i + 1]];
			bad |= (hi == 0) | (lo == 0);
			hash[i] = (uint8_t)((hi - 1) << 4 | (lo - 1));
		}
		ok = !bad;
	}
	if (!ok) {
		if (err) {
			char *q = quote_for_error(hex);
			*err = xasprintf("invalid digest hash \"%s\": want 64 "
					 "lowercase hex characters",
					 q);
			free(q);
		}
		return -1;
	}
	if (size < 0) {
		if (err)
			*err = xasprintf("invalid digest size %" PRId64 " for %.64s: must be >= 0",
					 size, hex);
		return -1;
	}
	memcpy(out->hash, hash, DIGEST_HASH_LEN);
	memcpy(out->hex, hex, DIGEST_HEX_LEN);
	out->hex[DIGEST_HEX_LEN] = '\0';
	out->size = size;
	return 0;
}

void digest_from_hash(const uint8_t hash[DIGEST_HASH_LEN], int64_t size, struct digest *out)
{
	memmove(out->hash, hash, DIGEST_HASH_LEN);
	out->size = size;
	to_hex(out->hash, DIGEST_HASH_LEN, out->hex);
}

void digest_of(const void *data, size_t len, struct digest *out)
{
	uint8_t h[EVP_MAX_MD_SIZE];
	unsigned hl = 0;
	if (EVP_Digest(data, len, h, &hl, sha256_md(), NULL) != 1 || hl != DIGEST_HASH_LEN)
		abort(); /* cannot fail for an in-memory SHA-256 */
	digest_from_hash(h, (int64_t)len, out);
}

bool digest_is_empty(const struct digest *d)
{
	return digest_eq(d, &digest_empty);
}

bool digest_eq(const struct digest *a, const struct digest *b)
{
	return a->size == b->size && memcmp(a->hash, b->hash, DIGEST_HASH_LEN) == 0;
}

const char *digest_str(const struct digest *d, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%" PRId64, d->hex, d->size);
	return buf;
}

/* ---- streaming hasher ------------------------------------------------ */

struct hasher {
	EVP_MD_CTX *ctx;
	int64_t fed;
};

static void hasher_reset(struct hasher *h)
{
	if (EVP_DigestInit_ex(h->ctx, sha256_md(), NULL) != 1)
		abort();
	h->fed = 0;
}

struct hasher *hasher_new(void)
{
	struct hasher *h = xmalloc(sizeof(*h));
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx) {
		fprintf(stderr, "reactord: out of memory in EVP_MD_CTX_new\n");
		abort();
	}
	hasher_reset(h);
	return h;
}

void hasher_update(struct hasher *h, const void *data, size_t len)
{
	if (len == 0)
		return;
	if (EVP_DigestUpdate(h->ctx, data, len) != 1)
		abort();
	h->fed += (int64_t)len;
}

void hasher_final(struct hasher *h, struct digest *out)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned ml = 0;
	if (EVP_DigestFinal_ex(h->ctx, md, &ml) != 1 || ml != DIGEST_HASH_LEN)
		abort();
	digest_from_hash(md, h->fed, out);
	hasher_reset(h);
}

void hasher_free(struct hasher *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

/* ---- digest-keyed hash table ----------------------------------------- */

static inline uint64_t key_hash(const uint8_t *hash, int64_t size)
{
	uint64_t v;
	memcpy(&v, hash, sizeof(v));
	return v ^ ((uint64_t)size * 0x9e3779b97f4a7c15ULL);
}

void digest_map_init(struct digest_map *m)
{
	map_init(&m->map);
}

void digest_map_destroy(struct digest_map *m)
{
	map_destroy(&m->map);
}

struct digest_map_node *digest_map_find(struct digest_map *m, const struct digest *d)
{
	uint64_t h = key_hash(d->hash, d->size);
	for (struct map_node *e = map_first(&m->map, h); e; e = map_next(&m->map, e)) {
		struct digest_map_node *n = (struct digest_map_node *)e;
		if (n->size == d->size && memcmp(n->hash, d->hash, DIGEST_HASH_LEN) == 0)
			return n;
	}
	return NULL;
}

void digest_map_insert(struct digest_map *m, struct digest_map_node *n)
{
	map_insert(&m->map, &n->node, key_hash(n->hash, n->size));
}

void digest_map_remove(struct digest_map *m, struct digest_map_node *n)
{
	map_remove(&m->map, &n->node);
}

void digest_map_clear(struct digest_map *m)
{
	map_clear(&m->map);
}
