/*
 * map.h - the one hash map.  Intrusive and chained: an owner embeds a
 * `struct map_node` in each entry, sets nothing in it, and inserts it with
 * the key's hash; the map never allocates or frees nodes, only its bucket
 * arrays.  Growth doubles the bucket array and moves chains a few buckets
 * per operation (as Redis's dict does), so no insert pauses the loop to
 * rehash millions of entries.  The map stores hashes, not keys: lookups
 * walk the nodes whose hash matches and the caller compares its own key,
 * either with map_find and an equality callback (inlined where the callback
 * is a known static function) or with the map_first/map_next pair.
 *
 * Hashes: map_hash_str/map_hash_bytes are keyed with a per-process random
 * seed, so clients who choose keys cannot aim them at one chain.  Keys that
 * are already uniform (SHA-256 digests) may use their own bits.
 */
#ifndef REACTOR_MAP_H
#define REACTOR_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct map_node {
	struct map_node *next;
	uint64_t hash;
};

struct map {
	struct map_node **tab[2];
	size_t mask[2]; /* bucket count - 1, or 0 with tab == NULL */
	size_t count;
	ptrdiff_t rehash; /* next tab[0] bucket to move, -1 when idle */
};

void map_init(struct map *m);
/* Frees the bucket arrays; the map must be empty (asserted). */
void map_destroy(struct map *m);
/* Forget every node (without touching them) and free the bucket arrays:
 * teardown for owners that free their entries through their own lists. */
void map_clear(struct map *m);
static inline size_t map_count(const struct map *m)
{
	return m->count;
}

/* Insert n under `hash`.  The map allows equal keys; callers that want
 * uniqueness look the key up first. */
void map_insert(struct map *m, struct map_node *n, uint64_t hash);
/* Remove n, which must be in the map (asserted). */
void map_remove(struct map *m, struct map_node *n);

/* The first node with this hash (or NULL); map_next gives the following
 * nodes with the same hash.  Also advances an incremental rehash. */
struct map_node *map_first(struct map *m, uint64_t hash);
struct map_node *map_next(const struct map *m, const struct map_node *n);

/* The node whose key eq() accepts, or NULL. */
static inline struct map_node *map_find(struct map *m, uint64_t hash,
					bool (*eq)(const struct map_node *n, const void *key),
					const void *key)
{
	for (struct map_node *n = map_first(m, hash); n; n = map_next(m, n))
		if (eq(n, key))
			return n;
	return NULL;
}

/* Visit every node (order unspecified).  fn may not insert or remove; to
 * empty a map, collect the entries through the owner's own list. */
void map_foreach(const struct map *m, void (*fn)(struct map_node *n, void *arg), void *arg);

/* Seeded hashes of a NUL-terminated string / a byte range. */
uint64_t map_hash_bytes(const void *p, size_t len);
uint64_t map_hash_str(const char *s);
static inline uint64_t map_hash_u64(uint64_t v)
{
	/* splitmix64's finalizer: a bijection that spreads every bit. */
	v ^= v >> 30;
	v *= 0xbf58476d1ce4e5b9ULL;
	v ^= v >> 27;
	v *= 0x94d049bb133111ebULL;
	v ^= v >> 31;
	return v;
}

#endif
