/*
 * buckets_watch.h - build-bucket events and the sweeps: the domain side of
 * WatchBuilds and the two timers (lease expiry, build timeout).
 *
 * Watchers sit on one list, woken by the <ns>{bb}:events:* pattern
 * subscription; a matching event fetches the build once (concurrent events
 * for one build merge: a state is delivered once however many events
 * announced it) and hands its current state to every watcher that wants
 * it.  Whether the subscription is live is proven by a probe message
 * reactord publishes to itself; until then watchers wait (their owner has
 * not yet told the client the stream is open).
 */
#ifndef REACTOR_BUCKETS_WATCH_H
#define REACTOR_BUCKETS_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/list.h"
#include "domain/buckets.h"

struct event_base;

/* One watcher, owned (allocated and freed) by the caller. */
struct bk_watcher {
	char **buckets; /* owned by the watcher's owner */
	size_t nb;
	int64_t *ids;
	size_t nids;
	/* The subscription became live: events reach the watcher from now on.
	 * Called once, from a later event (never from bk_watch_add). */
	void (*on_live)(struct bk_watcher *w);
	/* A state of a build it wants (b belongs to the domain; valid during
	 * the call).  The callback may bk_watch_remove(w) (only w). */
	void (*on_build)(struct bk_watcher *w, const BkBuild *b);
	void *arg;
	/* private */
	bool live;
	struct list link;
};

/* Subscribe to the events, watch the store's state and create the sweep
 * timers; call after bk_init and before store_start. */
void bk_watch_init(struct event_base *base);
/* Sweep intervals (0 = off); applied at once when the timers exist. */
void bk_watch_configure(int64_t expire_us, int64_t timeout_check_us);

/* Add w.  Returns true when events already reach it (on_live will not be
 * called: the caller opens the stream itself), false when on_live will
 * come once the subscription proves live. */
bool bk_watch_add(struct bk_watcher *w);
/* Remove w (harmless when it is not added). */
void bk_watch_remove(struct bk_watcher *w);
/* Some watcher, or NULL (to drain them at shutdown). */
struct bk_watcher *bk_watch_any(void);

/* Free the timers and the fetch cache; every watcher must be removed
 * first (asserted).  Idempotent. */
void bk_watch_shutdown(void);

#endif
