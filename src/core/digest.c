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
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

/* 8 hex characters at a time (SWAR): lowercase hex digits are 0x30..0x39
 * and 0x61..0x66, so with the high bits clear a byte's range tests are
 * additions that cannot carry into its neighbour.  Writes 4 bytes of hash;
 * false when any of the 8 is no lowercase hex digit.  Per character,
 * table lookups cost ~15% of a 1,000-digest FindMissingBlobs; branchy
 * range tests (random hex defeats the predictor) ~1 us a digest. */
#ifndef __SSE2__
static bool hex8(const char *in, uint8_t *out)
{
	const uint64_t h = 0x8080808080808080ULL, b = 0x0101010101010101ULL;
	uint64_t v;
	memcpy(&v, in, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	uint64_t ge0 = v + b * (0x80 - '0'), le9 = v + b * (0x7f - '9');
	uint64_t gea = v + b * (0x80 - 'a'), lef = v + b * (0x7f - 'f');
	uint64_t digit = ge0 & ~le9, af = gea & ~lef;
	if ((v & h) || ((digit | af) & h) != h)
		return false;
	/* value: low nibble, plus 9 for letters (bit 6 set) */
	uint64_t nib = (v & b * 0x0f) + ((v >> 6) & b) * 9;
	/* in[0] is the low byte of v and the high nibble of out[0]: pair
	 * the nibbles in the even bytes, then close the gaps. */
	uint64_t t = ((nib << 4) | (nib >> 8)) & 0x00ff00ff00ff00ffULL;
	t = (t | t >> 8) & 0x0000ffff0000ffffULL;
	t = (t | t >> 16) & 0xffffffffULL;
	out[0] = (uint8_t)t;
	out[1] = (uint8_t)(t >> 8);
	out[2] = (uint8_t)(t >> 16);
	out[3] = (uint8_t)(t >> 24);
	return true;
}
#endif

#ifdef __SSE2__
/* 16 characters at a time: the same tests and arithmetic in SSE2 lanes
 * (bytes >= 0x80 are negative as signed bytes and fail both ranges). */
static bool hex16(const char *in, uint8_t *out)
{
	__m128i v = _mm_loadu_si128((const __m128i *)(const void *)in);
	__m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
				      _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
	__m128i af = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('a' - 1)),
				   _mm_cmplt_epi8(v, _mm_set1_epi8('f' + 1)));
	if (_mm_movemask_epi8(_mm_or_si128(digit, af)) != 0xffff)
		return false;
	__m128i nib = _mm_add_epi8(_mm_and_si128(v, _mm_set1_epi8(0x0f)),
				   _mm_and_si128(af, _mm_set1_epi8(9)));
	/* 16-bit lanes hold (second << 8 | first): want first << 4 | second */
	__m128i pair = _mm_or_si128(_mm_and_si128(_mm_slli_epi16(nib, 4), _mm_set1_epi16(0xf0)),
				    _mm_srli_epi16(nib, 8));
	__m128i packed = _mm_packus_epi16(pair, pair);
	_mm_storel_epi64((__m128i *)(void *)out, packed);
	return true;
}
#endif

static bool hex_decode(const char *hex, uint8_t hash[DIGEST_HASH_LEN])
{
	bool ok = true;
#ifdef __SSE2__
	for (size_t i = 0; i < DIGEST_HEX_LEN; i += 16)
		ok &= hex16(hex + i, hash + i / 2);
#else
	for (size_t i = 0; i < DIGEST_HEX_LEN; i += 8)
		ok &= hex8(hex + i, hash + i / 2);
#endif
	return ok;
}

int digest_parse_n(const char *hex, size_t len, int64_t size, struct digest *out)
{
	if (len != DIGEST_HEX_LEN || size < 0 || !hex_decode(hex, out->hash))
		return -1;
	memcpy(out->hex, hex, DIGEST_HEX_LEN);
	out->hex[DIGEST_HEX_LEN] = '\0';
	out->size = size;
	return 0;
}

int digest_parse(const char *hex, int64_t size, struct digest *out, char **err)
{
	if (!hex)
		hex = "";
	size_t n = strnlen(hex, DIGEST_HEX_LEN + 1);
	uint8_t hash[DIGEST_HASH_LEN];
	bool ok = n == DIGEST_HEX_LEN && hex_decode(hex, hash);
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
