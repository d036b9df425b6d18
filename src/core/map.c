/*
 * map.c - the chained hash map with incremental rehashing (see map.h).
 */
#include "core/map.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "core/util.h"

#define MAP_MIN_BUCKETS 64
#define MAP_REHASH_STEP 8 /* buckets moved per operation while growing */

void map_init(struct map *m)
{
	memset(m, 0, sizeof(*m));
	m->rehash = -1;
}

void map_destroy(struct map *m)
{
	assert(m->count == 0);
	free(m->tab[0]);
	free(m->tab[1]);
	map_init(m);
}

void map_clear(struct map *m)
{
	m->count = 0;
	map_destroy(m);
}

static void rehash_step(struct map *m, int buckets)
{
	if (m->rehash < 0)
		return;
	size_t n0 = m->mask[0] + 1;
	while (buckets-- > 0 && (size_t)m->rehash < n0) {
		struct map_node *e = m->tab[0][m->rehash];
		while (e) {
			struct map_node *next = e->next;
			size_t b = e->hash & m->mask[1];
			e->next = m->tab[1][b];
			m->tab[1][b] = e;
			e = next;
		}
		m->tab[0][m->rehash++] = NULL;
	}
	if ((size_t)m->rehash == n0) {
		free(m->tab[0]);
		m->tab[0] = m->tab[1];
		m->mask[0] = m->mask[1];
		m->tab[1] = NULL;
		m->mask[1] = 0;
		m->rehash = -1;
	}
}

/* The first node with `hash` in table t from chain start e on. */
static struct map_node *scan(struct map_node *e, uint64_t hash)
{
	while (e && e->hash != hash)
		e = e->next;
	return e;
}

struct map_node *map_first(struct map *m, uint64_t hash)
{
	if (!m->tab[0])
		return NULL;
	rehash_step(m, MAP_REHASH_STEP);
	struct map_node *e = scan(m->tab[0][hash & m->mask[0]], hash);
	if (!e && m->rehash >= 0)
		e = scan(m->tab[1][hash & m->mask[1]], hash);
	return e;
}

struct map_node *map_next(const struct map *m, const struct map_node *n)
{
	struct map_node *e = scan(n->next, n->hash);
	if (e)
		return e;
	/* Done with n's chain: if n sat in the old table during a rehash, the
	 * new table's chain for the same hash comes next. */
	if (m->rehash >= 0) {
		struct map_node *const *old = &m->tab[0][n->hash & m->mask[0]];
		for (const struct map_node *x = *old; x; x = x->next)
			if (x == n)
				return scan(m->tab[1][n->hash & m->mask[1]], n->hash);
	}
	return NULL;
}

void map_insert(struct map *m, struct map_node *n, uint64_t hash)
{
	if (!m->tab[0]) {
		m->tab[0] = xcalloc(MAP_MIN_BUCKETS, sizeof(*m->tab[0]));
		m->mask[0] = MAP_MIN_BUCKETS - 1;
	} else if (m->rehash < 0 && m->count >= m->mask[0] + 1) {
		size_t nb = (m->mask[0] + 1) * 2;
		m->tab[1] = xcalloc(nb, sizeof(*m->tab[1]));
		m->mask[1] = nb - 1;
		m->rehash = 0;
	}
	rehash_step(m, MAP_REHASH_STEP);
	int t = m->rehash >= 0 ? 1 : 0;
	size_t b = hash & m->mask[t];
	n->hash = hash;
	n->next = m->tab[t][b];
	m->tab[t][b] = n;
	m->count++;
}

static bool unlink_from(struct map_node **slot, struct map_node *n)
{
	for (; *slot; slot = &(*slot)->next) {
		if (*slot == n) {
			*slot = n->next;
			n->next = NULL;
			return true;
		}
	}
	return false;
}

void map_remove(struct map *m, struct map_node *n)
{
	bool found = m->tab[0] && unlink_from(&m->tab[0][n->hash & m->mask[0]], n);
	if (!found && m->rehash >= 0)
		found = unlink_from(&m->tab[1][n->hash & m->mask[1]], n);
	assert(found);
	(void)found;
	m->count--;
	rehash_step(m, MAP_REHASH_STEP);
}

void map_foreach(const struct map *m, void (*fn)(struct map_node *n, void *arg), void *arg)
{
	for (int t = 0; t < 2; t++) {
		if (!m->tab[t])
			continue;
		for (size_t b = 0; b <= m->mask[t]; b++)
			for (struct map_node *e = m->tab[t][b], *next; e; e = next) {
				next = e->next;
				fn(e, arg);
			}
	}
}

static uint64_t seed(void)
{
	static uint64_t s;
	static bool have;

	if (!have) {
		if (RAND_bytes((unsigned char *)&s, sizeof(s)) != 1)
			s = (uint64_t)mono_us() * 0x9e3779b97f4a7c15ULL;
		have = true;
	}
	return s;
}

uint64_t map_hash_bytes(const void *p, size_t len)
{
	/* FNV-1a over the bytes, started from the seed, then finalized so
	 * the low bits (the bucket index) depend on every input bit. */
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ULL ^ seed();

	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return map_hash_u64(h);
}

uint64_t map_hash_str(const char *s)
{
	return map_hash_bytes(s, strlen(s));
}
