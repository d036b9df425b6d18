/*
 * arena.c - the bump allocator of core/arena.h and its chunk cache.  Owns
 * the process-wide cache of free chunks (one LIFO list per size class, so
 * the chunk reused is the one most recently touched).  Under
 * AddressSanitizer free room and cached chunks are poisoned, so a read of
 * request memory after its arena was reset is reported as it would be
 * after free().
 */
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ASAN 1
#endif
#endif
#ifdef ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct arena_chunk {
	struct arena_chunk *next;
	size_t size; /* bytes malloc'd, header included */
};

#define HDR	 ((sizeof(struct arena_chunk) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1))
#define NCLASS	 8 /* ARENA_CHUNK << 0 .. << 7 */
#define BIG_OVER (ARENA_CHUNK_MAX / 4)
_Static_assert((ARENA_CHUNK << (NCLASS - 1)) == ARENA_CHUNK_MAX, "size classes");

static struct arena_chunk *cache[NCLASS];
static size_t cached;

static uint8_t *data_of(struct arena_chunk *c)
{
	return (uint8_t *)c + HDR;
}

static int class_of(size_t size)
{
	int k = 0;
	while ((size_t)ARENA_CHUNK << k < size)
		k++;
	return k;
}

void arena_init(struct arena *a)
{
	memset(a, 0, sizeof(*a));
}

/* A chunk of class k: from the cache, else malloc'd. */
static struct arena_chunk *chunk_get(int k)
{
	struct arena_chunk *c = cache[k];
	if (c) {
		cache[k] = c->next;
		cached -= c->size;
		return c;
	}
	size_t size = (size_t)ARENA_CHUNK << k;
	c = xmalloc(size);
	c->size = size;
	POISON(data_of(c), size - HDR);
	return c;
}

static void chunk_put(struct arena_chunk *c)
{
	int k = class_of(c->size);
	if (cached + c->size > ARENA_CACHE_BYTES) {
		UNPOISON(data_of(c), c->size - HDR);
		free(c);
		return;
	}
	c->next = cache[k];
	cache[k] = c;
	cached += c->size;
	/* The header stays readable: LeakSanitizer follows the cache's
	 * links only through unpoisoned memory. */
	POISON(data_of(c), c->size - HDR);
}

static void *alloc_slow(struct arena *a, size_t n)
{
	if (n > BIG_OVER) {
		/* Its own chunk: a big bytes field must not waste (or pin in
		 * the cache) a whole class of its size. */
		struct arena_chunk *c = xmalloc(HDR + n);
		c->size = HDR + n;
		c->next = a->big;
		a->big = c;
		a->used += n;
		return data_of(c);
	}
	/* Each new chunk at least doubles the last one: a call that needs
	 * 100 KiB takes four chunks, not a dozen. */
	size_t want = HDR + n;
	if (a->chunks && a->chunks->size * 2 > want)
		want = a->chunks->size * 2;
	if (want > ARENA_CHUNK_MAX)
		want = ARENA_CHUNK_MAX;
	struct arena_chunk *c = chunk_get(class_of(want));
	c->next = a->chunks;
	a->chunks = c;
	a->p = data_of(c);
	a->end = (uint8_t *)c + c->size;
	void *r = a->p;
	a->p += n;
	a->used += n;
	UNPOISON(r, n);
	return r;
}

void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (n == 0)
		n = ARENA_ALIGN;
	if ((size_t)(a->end - a->p) >= n) {
		void *r = a->p;
		a->p += n;
		a->used += n;
		UNPOISON(r, n);
		return r;
	}
	return alloc_slow(a, n);
}

char *arena_strndup(struct arena *a, const char *s, size_t len)
{
	char *r = arena_alloc(a, len + 1);
	memcpy(r, s, len);
	r[len] = '\0';
	return r;
}

void arena_reset(struct arena *a)
{
	while (a->chunks) {
		struct arena_chunk *c = a->chunks;
		a->chunks = c->next;
		chunk_put(c);
	}
	while (a->big) {
		struct arena_chunk *c = a->big;
		a->big = c->next;
		free(c);
	}
	a->p = a->end = NULL;
	a->used = 0;
}

void arena_free(struct arena *a)
{
	arena_reset(a);
}

size_t arena_cached_bytes(void)
{
	return cached;
}

void arena_cache_drain(void)
{
	for (int k = 0; k < NCLASS; k++) {
		while (cache[k]) {
			struct arena_chunk *c = cache[k];
			UNPOISON(c, c->size);
			cache[k] = c->next;
			free(c);
		}
	}
	cached = 0;
}
