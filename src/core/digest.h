/*
 * digest.h - REAPI content digests (SHA-256 hash + size): validation of
 * client-supplied digests, one-shot and streaming hashing through OpenSSL
 * EVP, and an intrusive hash table keyed by digest that the blob stores
 * use as their index.  No event loop, no I/O.
 */
#ifndef REACTOR_DIGEST_H
#define REACTOR_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/map.h"
#include "core/util.h"

#define DIGEST_HASH_LEN 32
#define DIGEST_HEX_LEN	64

/* A digest always carries both forms of the hash: `hash` for tables and
 * comparisons, `hex` (NUL-terminated, lowercase) for paths, keys and
 * messages.  Every function that fills a digest fills both. */
struct digest {
	uint8_t hash[DIGEST_HASH_LEN];
	int64_t size;
	char hex[DIGEST_HEX_LEN + 1];
};

/* SHA-256 of the empty string, size 0. */
extern const struct digest digest_empty;

/* Validate a client-supplied digest: `hex` must be exactly 64 lowercase
 * hex characters and size >= 0.  Returns 0 with *out filled, or -1 with
 * *err set to a malloc'd message a client can act on (caller frees), e.g.
 *   invalid digest hash "xyz": want 64 lowercase hex characters
 *   invalid digest size -1 for <hash>: must be >= 0
 * The offending hash is quoted truncated and with non-printable bytes
 * replaced, so the message is safe to send back.  hex may be NULL (treated
 * as ""); err may be NULL when the caller does not want the message. */
int digest_parse(const char *hex, int64_t size, struct digest *out, char **err) WARN_UNUSED;

/* The same check without a message, on len bytes that need no NUL (a
 * string field still in its wire form): 0 with *out filled, or -1 (*out
 * clobbered).  For the hot path; a caller that fails one asks
 * digest_parse for the message. */
int digest_parse_n(const char *hex, size_t len, int64_t size, struct digest *out) WARN_UNUSED;

/* Fill *out from a raw 32-byte hash and a size (hex computed). */
void digest_from_hash(const uint8_t hash[DIGEST_HASH_LEN], int64_t size, struct digest *out);

/* SHA-256 of data[0..len) with size = len. */
void digest_of(const void *data, size_t len, struct digest *out);

bool digest_is_empty(const struct digest *d);
/* Same hash bytes and same size. */
bool digest_eq(const struct digest *a, const struct digest *b);

/* "<hex>/<size>", the form REAPI resource names and our messages use.
 * Writes into buf (at least DIGEST_STR_LEN bytes) and returns it. */
#define DIGEST_STR_LEN (DIGEST_HEX_LEN + 1 + 20 + 1)
const char *digest_str(const struct digest *d, char *buf, size_t len);

/* ---- streaming hasher ------------------------------------------------ */

/* A running SHA-256 over data fed in pieces (an EVP_MD_CTX wrapper).
 * hasher_new never returns NULL (aborts on out-of-memory or if OpenSSL
 * cannot provide SHA-256, which is a broken installation).
 * hasher_final writes the digest of everything fed since creation or the
 * last final, with size = bytes fed, and resets the hasher for reuse. */
struct hasher;
struct hasher *hasher_new(void);
void hasher_update(struct hasher *h, const void *data, size_t len);
void hasher_final(struct hasher *h, struct digest *out);
void hasher_free(struct hasher *h);

/* ---- digest-keyed hash table ----------------------------------------- */

/* A digest-keyed view of the one hash map (core/map.h): callers embed a
 * digest_map_node in their own entry (set its hash and size before
 * inserting) and get back to the entry with container_of.  Keys are
 * SHA-256 outputs, so their first 8 bytes are already a uniform hash; a
 * client can choose lookup keys but cannot choose inserted ones (content
 * is verified first), so chains cannot be flooded. */
struct digest_map_node {
	struct map_node node;
	uint8_t hash[DIGEST_HASH_LEN];
	int64_t size;
};

struct digest_map {
	struct map map;
};

void digest_map_init(struct digest_map *m);
/* Frees the bucket arrays; the map must be empty (asserted). */
void digest_map_destroy(struct digest_map *m);
/* Returns the node with that hash and size, or NULL. */
struct digest_map_node *digest_map_find(struct digest_map *m, const struct digest *d);
/* Insert n (hash and size already set).  No node with the same key may
 * be present: callers look the key up first, so this does not (a second
 * lookup per insert would be pure cost). */
void digest_map_insert(struct digest_map *m, struct digest_map_node *n);
/* Remove n, which must be in the map (asserted). */
void digest_map_remove(struct digest_map *m, struct digest_map_node *n);
/* Forget every node (without touching them) and free the bucket arrays:
 * teardown for owners that free their entries through their own lists. */
void digest_map_clear(struct digest_map *m);
static inline size_t digest_map_count(const struct digest_map *m)
{
	return map_count(&m->map);
}

#endif
