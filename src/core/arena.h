/*
 * arena.h - a bump allocator for memory that dies all at once: the decoded
 * request of one gRPC call and what its handler builds for the reply.
 * Allocation is a pointer bump inside a chunk; arena_reset gives every
 * chunk back at once.  Chunks come in power-of-two size classes from
 * ARENA_CHUNK up to ARENA_CHUNK_MAX and are kept in a small process-wide
 * cache (bounded by ARENA_CACHE_BYTES), so a steady stream of calls reuses
 * the same memory instead of going to malloc once per string and
 * sub-message.  A request bigger than a quarter of the largest class gets
 * a chunk of its own, freed on reset.
 *
 * Single-threaded: the chunk cache is not locked (reactord's loop thread
 * is the only user).  Allocation never fails (aborts on out-of-memory,
 * like xmalloc).
 */
#ifndef REACTOR_ARENA_H
#define REACTOR_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

#define ARENA_CHUNK	  (8 << 10) /* smallest chunk (bytes, header included) */
#define ARENA_CHUNK_MAX	  (1 << 20) /* largest cached chunk class */
#define ARENA_CACHE_BYTES (4 << 20) /* chunks kept for reuse, all arenas together */
#define ARENA_ALIGN	  16	    /* every allocation is aligned to this */

struct arena_chunk;

struct arena {
	struct arena_chunk *chunks; /* the current one first */
	uint8_t *p, *end;	    /* free room in the current chunk */
	struct arena_chunk *big;    /* dedicated chunks of single big allocations */
	size_t used;		    /* bytes handed out since the last reset */
};

/* An empty arena (no memory until the first allocation).  A zeroed struct
 * arena is also a valid empty arena. */
void arena_init(struct arena *a);

/* n bytes aligned to ARENA_ALIGN, valid until arena_reset/arena_free.
 * n == 0 returns a valid unique-enough pointer (never NULL). */
void *arena_alloc(struct arena *a, size_t n);

/* Copy of len bytes of s, NUL-terminated. */
char *arena_strndup(struct arena *a, const char *s, size_t len);

/* Release everything allocated so far: chunks go back to the cache (or to
 * malloc when the cache is full or they are dedicated big chunks).  The
 * arena stays usable. */
void arena_reset(struct arena *a);

/* The same as arena_reset: the arena holds nothing afterwards. */
void arena_free(struct arena *a);

/* Bytes handed out since the last reset (for tests and stats). */
static inline size_t arena_used(const struct arena *a)
{
	return a->used;
}

/* Bytes of chunks in the process-wide cache. */
size_t arena_cached_bytes(void);
/* Free the cache (at exit, so leak checkers see nothing). */
void arena_cache_drain(void);

#endif
