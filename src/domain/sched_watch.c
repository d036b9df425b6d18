/*
 * sched_watch.c - waiter lists and wake-ups for the scheduler (see
 * sched_watch.h).  Owns the map of watched jobs (name -> waiting
 * operations), the dirty list drained once per loop pass, a ring of
 * recently announced jobs nobody watched yet (closing the race between a
 * script's reply and the waiter's registration), the list of long-polling
 * bots, and the safety-net timer.
 *
 * Lifetimes: a job entry lives while it has waiters, a read in flight
 * (refs), a place on the dirty list or a slot in the recent ring; the
 * last of these to go frees it (job_maybe_free).  A delivery walks a list
 * with a cursor that removals advance (w.op_next, w.bot_next), so a
 * callback may remove or free any waiter, its own included.
 */
#include "domain/sched_watch.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/cfg.h"
#include "core/log.h"
#include "core/map.h"
#include "domain/sched.h"
#include "state/keys.h"
#include "state/store.h"

#define MOD "watch"
/* Recently announced jobs remembered without waiters. */
#define RING 4096
/* Operations read per sched_view call. */
#define BATCH_OPS 1000

struct sched_watch_job {
	char *name;
	struct map_node node;
	struct list waiters; /* of sched_watch_op.link, newest first */
	int refs;	     /* reads in flight */
	bool in_ring;
	struct list dirty; /* on w.dirty when linked */
	uint64_t last_seq; /* job_seq of the last message about it */
};

static struct {
	struct event_base *base;
	struct map jobs;
	struct list dirty;
	struct event *flush_ev, *safety_ev;
	struct sched_watch_job *ring[RING];
	size_t ring_pos;
	struct list bots;
	/* Delivery cursors: the next node a delivery visits. */
	struct list *op_next, *bot_next;
	uint64_t job_seq, queue_seq;
	int64_t safety_us;
	bool inited;
} w = {.jobs = {.rehash = -1},
       .dirty = LIST_INIT(w.dirty),
       .bots = LIST_INIT(w.bots),
       .safety_us = 5000000};

/* ---- the job map -------------------------------------------------------- */

static bool job_eq(const struct map_node *n, const void *key)
{
	return strcmp(container_of(n, struct sched_watch_job, node)->name, key) == 0;
}

static struct sched_watch_job *job_find(const char *name)
{
	struct map_node *n = map_find(&w.jobs, map_hash_str(name), job_eq, name);
	return n ? container_of(n, struct sched_watch_job, node) : NULL;
}

static struct sched_watch_job *job_get(const char *name)
{
	struct sched_watch_job *j = job_find(name);
	if (j)
		return j;
	j = xcalloc(1, sizeof(*j));
	j->name = xstrdup(name);
	list_init(&j->waiters);
	list_init(&j->dirty);
	map_insert(&w.jobs, &j->node, map_hash_str(name));
	return j;
}

static void job_maybe_free(struct sched_watch_job *j)
{
	if (!list_empty(&j->waiters) || j->refs || list_linked(&j->dirty) || j->in_ring)
		return;
	map_remove(&w.jobs, &j->node);
	free(j->name);
	free(j);
}

static void ring_put(struct sched_watch_job *j)
{
	if (j->in_ring)
		return;
	struct sched_watch_job *old = w.ring[w.ring_pos];
	w.ring[w.ring_pos] = j;
	w.ring_pos = (w.ring_pos + 1) % RING;
	j->in_ring = true;
	if (old) {
		old->in_ring = false;
		job_maybe_free(old);
	}
}

/* ---- reading dirty jobs ----------------------------------------------------- */

struct batch {
	struct sched_watch_job **jobs;
	size_t *start; /* jobs[i]'s operations are names[start[i]..start[i+1]) */
	size_t njobs;
	char **names;
	size_t nnames;
};

static void batch_free(struct batch *b)
{
	for (size_t i = 0; i < b->njobs; i++) {
		b->jobs[i]->refs--;
		job_maybe_free(b->jobs[i]);
	}
	for (size_t i = 0; i < b->nnames; i++)
		free(b->names[i]);
	free(b->names);
	free(b->jobs);
	free(b->start);
	free(b);
	/* The last read answered after sched_watch_shutdown frees the map. */
	if (!w.inited && map_count(&w.jobs) == 0)
		map_destroy(&w.jobs);
}

static void batch_reply(void *arg, int rc, struct sched_view *v, size_t n)
{
	struct batch *b = arg;
	for (size_t i = 0; i < b->njobs; i++) {
		struct sched_watch_job *j = b->jobs[i];
		/* Waiters may leave (or join, at the head) from their
		 * callbacks: removals advance the cursor. */
		for (struct list *p = j->waiters.next; p != &j->waiters; p = w.op_next) {
			struct sched_watch_op *op = container_of(p, struct sched_watch_op, link);
			w.op_next = p->next;
			const struct sched_view *found = NULL;
			for (size_t k = b->start[i]; rc == 0 && k < b->start[i + 1] && k < n; k++)
				if (strcmp(b->names[k], op->op) == 0) {
					found = &v[k];
					break;
				}
			if (found || rc != 0)
				op->on_view(op, found);
		}
		w.op_next = NULL;
	}
	batch_free(b);
}

static void flush(void)
{
	while (!list_empty(&w.dirty)) {
		struct batch *b = xcalloc(1, sizeof(*b));
		size_t capj = 16, capn = 64;
		b->jobs = xcalloc(capj, sizeof(*b->jobs));
		b->start = xcalloc(capj + 1, sizeof(*b->start));
		b->names = xcalloc(capn, sizeof(*b->names));
		while (!list_empty(&w.dirty) && b->nnames < BATCH_OPS) {
			struct sched_watch_job *j =
				container_of(list_first(&w.dirty), struct sched_watch_job, dirty);
			list_del(&j->dirty);
			if (list_empty(&j->waiters)) {
				job_maybe_free(j);
				continue;
			}
			if (b->njobs + 1 >= capj) {
				capj *= 2;
				b->jobs = xrealloc(b->jobs, capj * sizeof(*b->jobs));
				b->start = xrealloc(b->start, (capj + 1) * sizeof(*b->start));
			}
			b->start[b->njobs] = b->nnames;
			b->jobs[b->njobs++] = j;
			j->refs++;
			struct list *p;
			list_for_each(p, &j->waiters)
			{
				struct sched_watch_op *op =
					container_of(p, struct sched_watch_op, link);
				if (b->nnames == capn)
					b->names =
						xrealloc(b->names, (capn *= 2) * sizeof(*b->names));
				b->names[b->nnames++] = xstrdup(op->op);
			}
			b->start[b->njobs] = b->nnames;
		}
		if (!b->njobs) {
			batch_free(b);
			break;
		}
		if (sched_view((const char *const *)b->names, b->nnames, batch_reply, b) != 0) {
			/* Redis is down: the reconnect re-reads everything. */
			batch_free(b);
		}
	}
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	flush();
}

static void mark_dirty(struct sched_watch_job *j)
{
	if (list_linked(&j->dirty))
		return;
	list_add_tail(&w.dirty, &j->dirty);
	/* Once per loop pass, after the messages of this read are all in. */
	if (w.flush_ev && !event_pending(w.flush_ev, EV_TIMEOUT, NULL))
		event_active(w.flush_ev, EV_TIMEOUT, 1);
}

static void mark_one(struct map_node *n, void *arg)
{
	(void)arg;
	struct sched_watch_job *j = container_of(n, struct sched_watch_job, node);
	if (!list_empty(&j->waiters))
		mark_dirty(j);
}

static void mark_all_dirty(void)
{
	map_foreach(&w.jobs, mark_one, NULL);
}

/* ---- bots ----------------------------------------------------------------- */

/* Wake up to `count` idle bots of `instance` that can run `platform`;
 * each woken bot moves to the tail, so work spreads round-robin.  Each
 * bot listed when the wake-up began is visited at most once. */
static void wake_bots(const char *instance, const char *platform, int64_t count)
{
	struct list *stop = w.bots.prev;
	if (stop == &w.bots)
		return;
	bool last = false;
	for (struct list *p = w.bots.next; p != &w.bots && count > 0 && !last; p = w.bot_next) {
		struct sched_watch_bot *b = container_of(p, struct sched_watch_bot, link);
		w.bot_next = p->next;
		last = p == stop;
		if (!b->busy && strcmp(b->instance, instance) == 0 &&
		    sched_platform_match(platform, b->props)) {
			list_move_tail(&w.bots, &b->link);
			count--;
			b->on_wake(b);
		}
	}
	w.bot_next = NULL;
}

static void queued_reply(void *arg, int rc, char **keys, const int64_t *counts, size_t n)
{
	(void)arg;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		char *nl = strchr(keys[i], '\n');
		if (!nl)
			continue;
		*nl = '\0';
		wake_bots(keys[i], nl + 1, counts[i]);
	}
}

/* Which queues hold work, for the instances that have waiting bots. */
static void bots_safety_net(void)
{
	if (list_empty(&w.bots))
		return;
	size_t n = 0, cap = 4;
	const char **insts = xcalloc(cap, sizeof(*insts));
	struct list *p;
	list_for_each(p, &w.bots)
	{
		struct sched_watch_bot *b = container_of(p, struct sched_watch_bot, link);
		bool seen = false;
		for (size_t i = 0; i < n && !seen; i++)
			seen = strcmp(insts[i], b->instance) == 0;
		if (seen)
			continue;
		if (n == cap)
			insts = xrealloc(insts, (cap *= 2) * sizeof(*insts));
		insts[n++] = b->instance;
	}
	if (sched_queued(insts, n, queued_reply, NULL) != 0)
		LOGD(MOD, "safety net: Redis is down, bots keep waiting");
	free(insts);
}

/* ---- pub/sub and timers ------------------------------------------------------ */

static void on_job_msg(const char *channel, const char *msg, size_t len, void *arg)
{
	(void)channel, (void)arg;
	char name[256];
	if (len == 0 || len >= sizeof name)
		return;
	memcpy(name, msg, len);
	name[len] = '\0';
	w.job_seq++;
	struct sched_watch_job *j = job_get(name);
	j->last_seq = w.job_seq;
	if (!list_empty(&j->waiters))
		mark_dirty(j);
	else
		ring_put(j);
}

static void on_queue_msg(const char *channel, const char *msg, size_t len, void *arg)
{
	(void)channel, (void)arg;
	w.queue_seq++;
	char *s = xstrndup(msg, len);
	char *nl = strchr(s, '\n');
	if (nl) {
		*nl = '\0';
		wake_bots(s, nl + 1, 1);
	}
	free(s);
}

static void safety_arm(void)
{
	struct timeval tv = {w.safety_us / 1000000, w.safety_us % 1000000};
	evtimer_add(w.safety_ev, &tv);
}

static void safety_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	safety_arm();
	if (!store_up())
		return;
	mark_all_dirty();
	bots_safety_net();
}

static void on_store_state(bool up, void *arg)
{
	(void)arg;
	if (!up || !w.inited)
		return;
	/* Messages may have been lost while we were away. */
	mark_all_dirty();
	bots_safety_net();
}

/* ---- API -------------------------------------------------------------------- */

void sched_watch_configure(const struct cfg *cfg)
{
	w.safety_us = cfg->sched_safety_net_us;
	/* A shorter interval applies now, not after the old one ran out. */
	if (w.safety_ev)
		safety_arm();
}

void sched_watch_init(struct event_base *base)
{
	static bool subscribed;

	w.base = base;
	map_init(&w.jobs);
	w.flush_ev = event_new(base, -1, 0, flush_cb, NULL);
	w.safety_ev = evtimer_new(base, safety_cb, NULL);
	if (!w.flush_ev || !w.safety_ev)
		abort();
	/* The store keeps subscriptions for its lifetime (one per process). */
	if (!subscribed) {
		char *job = keys_sched("job"), *queue = keys_sched("queue");
		store_subscribe(job, on_job_msg, NULL);
		store_subscribe(queue, on_queue_msg, NULL);
		store_on_state(on_store_state, NULL);
		free(job);
		free(queue);
		subscribed = true;
	}
	w.inited = true;
	safety_arm();
}

void sched_watch_shutdown(void)
{
	if (!w.inited)
		return;
	assert(list_empty(&w.bots));
	event_free(w.flush_ev);
	event_free(w.safety_ev);
	w.flush_ev = w.safety_ev = NULL;
	/* Drain the dirty list and the ring; no waiter may remain. */
	while (!list_empty(&w.dirty)) {
		struct sched_watch_job *j =
			container_of(list_first(&w.dirty), struct sched_watch_job, dirty);
		list_del(&j->dirty);
		assert(list_empty(&j->waiters));
		job_maybe_free(j);
	}
	for (size_t i = 0; i < RING; i++) {
		struct sched_watch_job *j = w.ring[i];
		w.ring[i] = NULL;
		if (j) {
			j->in_ring = false;
			job_maybe_free(j);
		}
	}
	w.ring_pos = 0;
	/* Reads still in flight hold refs; store_stop answers them (NULL)
	 * later, so only an empty map can go now. */
	if (map_count(&w.jobs) == 0)
		map_destroy(&w.jobs);
	w.inited = false;
}

uint64_t sched_watch_job_seq(void)
{
	return w.job_seq;
}

uint64_t sched_watch_queue_seq(void)
{
	return w.queue_seq;
}

void sched_watch_op_add(struct sched_watch_op *op, const char *job, uint64_t since)
{
	assert(!op->job);
	struct sched_watch_job *j = job_get(job);
	op->job = j;
	list_add_head(&j->waiters, &op->link);
	if (j->last_seq > since)
		mark_dirty(j);
}

void sched_watch_op_remove(struct sched_watch_op *op)
{
	struct sched_watch_job *j = op->job;
	if (!j)
		return;
	if (w.op_next == &op->link)
		w.op_next = op->link.next;
	list_del(&op->link);
	op->job = NULL;
	job_maybe_free(j);
}

bool sched_watch_bot_listed(const struct sched_watch_bot *b)
{
	return b->link.next && list_linked(&b->link);
}

void sched_watch_bot_add(struct sched_watch_bot *b)
{
	assert(!sched_watch_bot_listed(b));
	list_add_tail(&w.bots, &b->link);
}

void sched_watch_bot_remove(struct sched_watch_bot *b)
{
	if (!sched_watch_bot_listed(b))
		return;
	if (w.bot_next == &b->link)
		w.bot_next = b->link.next;
	list_del(&b->link);
}
