/*
 * watch.c - waiter lists and wake-ups for the scheduler (see watch.h).
 * Owns the table of watched jobs (name -> waiting operations), the dirty
 * list drained once per loop pass, a ring of recently announced jobs
 * nobody watched yet (closing the race between a script's reply and the
 * waiter's registration), the list of long-polling bots, and the
 * safety-net timer.
 *
 * Lifetimes: a job entry lives while it has waiters, a read in flight
 * (refs), a place on the dirty list or a slot in the recent ring; the
 * last of these to go frees it (job_maybe_free).
 */
#include "domain/sched_watch.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/cfg.h"
#include "state/keys.h"
#include "core/log.h"
#include "domain/sched.h"
#include "state/store.h"
#include "services/svc.h"

#define MOD "watch"
/* Recently announced jobs remembered without waiters. */
#define RING 4096
/* Operations read per script call. */
#define BATCH_OPS 1000

struct watch_job {
	char *name;
	struct watch_job *hnext;
	struct watch_op *waiters;
	size_t nwaiters;
	int refs; /* reads in flight */
	bool dirty, in_ring;
	struct watch_job *dnext;
	uint64_t last_seq; /* job_seq of the last message about it */
};

static struct {
	struct event_base *base;
	struct watch_job **tab;
	size_t mask, count; /* buckets - 1, entries */
	struct watch_job *dirty_head, *dirty_tail;
	struct event *flush_ev, *safety_ev;
	struct watch_job *ring[RING];
	size_t ring_pos;
	struct watch_bot *bots_head, *bots_tail;
	uint64_t job_seq, queue_seq;
	struct watch_stats st;
	bool inited;
} w;

/* ---- the job table -------------------------------------------------------- */

static size_t hash_str(const char *s)
{
	size_t h = 1469598103934665603ULL; /* FNV-1a 64 */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static struct watch_job *job_find(const char *name)
{
	if (!w.tab)
		return NULL;
	for (struct watch_job *j = w.tab[hash_str(name) & w.mask]; j; j = j->hnext)
		if (strcmp(j->name, name) == 0)
			return j;
	return NULL;
}

static void table_grow(void)
{
	size_t nb = w.tab ? (w.mask + 1) * 2 : 1024;
	struct watch_job **nt = xcalloc(nb, sizeof(*nt));
	for (size_t i = 0; w.tab && i <= w.mask; i++) {
		struct watch_job *j = w.tab[i];
		while (j) {
			struct watch_job *next = j->hnext;
			size_t b = hash_str(j->name) & (nb - 1);
			j->hnext = nt[b];
			nt[b] = j;
			j = next;
		}
	}
	free(w.tab);
	w.tab = nt;
	w.mask = nb - 1;
}

static struct watch_job *job_get(const char *name)
{
	struct watch_job *j = job_find(name);
	if (j)
		return j;
	if (!w.tab || w.count >= w.mask + 1)
		table_grow();
	j = xcalloc(1, sizeof(*j));
	j->name = xstrdup(name);
	size_t b = hash_str(name) & w.mask;
	j->hnext = w.tab[b];
	w.tab[b] = j;
	w.count++;
	return j;
}

static void job_maybe_free(struct watch_job *j)
{
	if (j->waiters || j->refs || j->dirty || j->in_ring)
		return;
	struct watch_job **pp = &w.tab[hash_str(j->name) & w.mask];
	while (*pp != j)
		pp = &(*pp)->hnext;
	*pp = j->hnext;
	w.count--;
	free(j->name);
	free(j);
}

static void ring_put(struct watch_job *j)
{
	if (j->in_ring)
		return;
	struct watch_job *old = w.ring[w.ring_pos];
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
	struct watch_job **jobs;
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
	/* The last read answered after watch_shutdown frees the table. */
	if (!w.inited && w.count == 0 && w.tab) {
		free(w.tab);
		w.tab = NULL;
		w.mask = 0;
	}
}

static void batch_reply(void *arg, int rc, struct sched_view *v, size_t n)
{
	struct batch *b = arg;
	for (size_t i = 0; i < b->njobs; i++) {
		struct watch_job *j = b->jobs[i];
		/* Waiters may leave (or join) from their callbacks: walk a
		 * snapshot of the list taken by reference counting the job
		 * and re-checking membership. */
		struct watch_op *op = j->waiters;
		while (op) {
			struct watch_op *next = op->next;
			const struct sched_view *found = NULL;
			for (size_t k = b->start[i]; rc == 0 && k < b->start[i + 1] && k < n; k++)
				if (strcmp(b->names[k], op->op) == 0) {
					found = &v[k];
					break;
				}
			if (found || rc != 0)
				op->on_view(op, found);
			op = next;
		}
	}
	batch_free(b);
}

static void flush(void)
{
	while (w.dirty_head) {
		struct batch *b = xcalloc(1, sizeof(*b));
		size_t capj = 16, capn = 64;
		b->jobs = xcalloc(capj, sizeof(*b->jobs));
		b->start = xcalloc(capj + 1, sizeof(*b->start));
		b->names = xcalloc(capn, sizeof(*b->names));
		while (w.dirty_head && b->nnames < BATCH_OPS) {
			struct watch_job *j = w.dirty_head;
			w.dirty_head = j->dnext;
			if (!w.dirty_head)
				w.dirty_tail = NULL;
			j->dirty = false;
			j->dnext = NULL;
			if (!j->waiters) {
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
			for (struct watch_op *op = j->waiters; op; op = op->next) {
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
		w.st.view_reads++;
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

static void mark_dirty(struct watch_job *j)
{
	if (j->dirty)
		return;
	j->dirty = true;
	if (w.dirty_tail)
		w.dirty_tail->dnext = j;
	else
		w.dirty_head = j;
	w.dirty_tail = j;
	/* Once per loop pass, after the messages of this read are all in. */
	if (w.flush_ev && !event_pending(w.flush_ev, EV_TIMEOUT, NULL))
		event_active(w.flush_ev, EV_TIMEOUT, 1);
}

static void mark_all_dirty(void)
{
	for (size_t i = 0; w.tab && i <= w.mask; i++)
		for (struct watch_job *j = w.tab[i]; j; j = j->hnext)
			if (j->waiters)
				mark_dirty(j);
}

/* ---- bots ----------------------------------------------------------------- */

static void bot_unlink(struct watch_bot *b)
{
	if (b->prev)
		b->prev->next = b->next;
	else
		w.bots_head = b->next;
	if (b->next)
		b->next->prev = b->prev;
	else
		w.bots_tail = b->prev;
	b->prev = b->next = NULL;
}

static void bot_link_tail(struct watch_bot *b)
{
	b->prev = w.bots_tail;
	b->next = NULL;
	if (w.bots_tail)
		w.bots_tail->next = b;
	else
		w.bots_head = b;
	w.bots_tail = b;
}

/* Wake up to `count` idle bots of `instance` that can run `platform`;
 * each woken bot moves to the tail, so work spreads round-robin. */
static void wake_bots(const char *instance, const char *platform, int64_t count)
{
	struct watch_bot *b = w.bots_head, *stop = w.bots_tail;
	while (b && count > 0) {
		struct watch_bot *next = b->next;
		bool last = b == stop;
		if (!b->busy && strcmp(b->instance, instance) == 0 &&
		    sched_platform_match(platform, b->props)) {
			bot_unlink(b);
			bot_link_tail(b);
			count--;
			b->on_wake(b);
		}
		if (last)
			break;
		b = next;
	}
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
	if (!w.bots_head)
		return;
	size_t n = 0, cap = 4;
	const char **insts = xcalloc(cap, sizeof(*insts));
	for (struct watch_bot *b = w.bots_head; b; b = b->next) {
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
	w.st.job_msgs++;
	struct watch_job *j = job_get(name);
	j->last_seq = w.job_seq;
	if (j->waiters)
		mark_dirty(j);
	else
		ring_put(j);
}

static void on_queue_msg(const char *channel, const char *msg, size_t len, void *arg)
{
	(void)channel, (void)arg;
	w.queue_seq++;
	w.st.queue_msgs++;
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
	const struct cfg *cfg = svc_config();
	int64_t us = cfg ? cfg->sched_safety_net_us : 5000000;
	struct timeval tv = {us / 1000000, us % 1000000};
	evtimer_add(w.safety_ev, &tv);
}

static void safety_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	safety_arm();
	if (!store_up())
		return;
	w.st.safety_passes++;
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

void watch_init(struct event_base *base)
{
	w.base = base;
	w.flush_ev = event_new(base, -1, 0, flush_cb, NULL);
	w.safety_ev = evtimer_new(base, safety_cb, NULL);
	if (!w.flush_ev || !w.safety_ev)
		abort();
	store_subscribe(KEYS_CH_JOB, on_job_msg, NULL);
	store_subscribe(KEYS_CH_QUEUE, on_queue_msg, NULL);
	store_on_state(on_store_state, NULL);
	w.inited = true;
	safety_arm();
}

void watch_shutdown(void)
{
	if (!w.inited)
		return;
	assert(!w.bots_head);
	event_free(w.flush_ev);
	event_free(w.safety_ev);
	w.flush_ev = w.safety_ev = NULL;
	/* Drain the dirty list and the ring; no waiter may remain. */
	while (w.dirty_head) {
		struct watch_job *j = w.dirty_head;
		w.dirty_head = j->dnext;
		j->dirty = false;
		assert(!j->waiters);
		job_maybe_free(j);
	}
	w.dirty_tail = NULL;
	for (size_t i = 0; i < RING; i++) {
		struct watch_job *j = w.ring[i];
		w.ring[i] = NULL;
		if (j) {
			j->in_ring = false;
			job_maybe_free(j);
		}
	}
	/* Reads still in flight hold refs; store_stop answers them (NULL)
	 * later, so only an empty table can go. */
	if (w.count == 0) {
		free(w.tab);
		w.tab = NULL;
		w.mask = 0;
	}
	w.inited = false;
}

uint64_t watch_job_seq(void)
{
	return w.job_seq;
}

uint64_t watch_queue_seq(void)
{
	return w.queue_seq;
}

void watch_op_add(struct watch_op *op, const char *job, uint64_t since)
{
	struct watch_job *j = job_get(job);
	op->job = j;
	op->prev = NULL;
	op->next = j->waiters;
	if (j->waiters)
		j->waiters->prev = op;
	j->waiters = op;
	j->nwaiters++;
	w.st.op_waiters++;
	if (j->nwaiters == 1)
		w.st.jobs_watched++;
	if (j->last_seq > since)
		mark_dirty(j);
}

void watch_op_remove(struct watch_op *op)
{
	struct watch_job *j = op->job;
	if (!j)
		return;
	if (op->prev)
		op->prev->next = op->next;
	else
		j->waiters = op->next;
	if (op->next)
		op->next->prev = op->prev;
	op->prev = op->next = NULL;
	op->job = NULL;
	j->nwaiters--;
	w.st.op_waiters--;
	if (!j->nwaiters)
		w.st.jobs_watched--;
	job_maybe_free(j);
}

void watch_job_poke(const char *job)
{
	struct watch_job *j = job_find(job);
	if (j && j->waiters)
		mark_dirty(j);
}

void watch_bot_add(struct watch_bot *b)
{
	assert(!b->on_list);
	b->on_list = true;
	bot_link_tail(b);
	w.st.bot_waiters++;
}

void watch_bot_remove(struct watch_bot *b)
{
	if (!b->on_list)
		return;
	b->on_list = false;
	bot_unlink(b);
	w.st.bot_waiters--;
}

void watch_get_stats(struct watch_stats *s)
{
	*s = w.st;
}
