/*
 * sched_watch.h - who waits for what, and waking them: the pub/sub side of
 * the scheduler.  Two kinds of waiters, each on the one list keyed by what
 * it waits for:
 *
 *   - operation waiters (Execute / WaitExecution streams) keyed by job:
 *     a message on {ns}sched:job marks the job dirty; once per loop pass
 *     one sched_view call reads every dirty job's waiting operations and
 *     hands each waiter its operation's view (wake-ups are batched);
 *   - bot waiters (long-polling UpdateBotSession calls) keyed by
 *     instance: a message on {ns}sched:queue wakes one idle bot whose
 *     properties match the queue's platform.
 *
 * Pub/sub is lossy across disconnects, so a safety-net timer re-reads
 * every watched job (one sched_view call) and asks which queues hold work
 * (one sched_queued call) every scheduler.safety-net-interval, and right
 * after Redis comes back: that interval bounds how long a lost message can
 * leave a waiter behind.  Nothing else reads Redis while everybody waits.
 * This module uses only sched.h's public API and the store's pub/sub.
 *
 * Waiters are embedded in their owner's struct, zeroed (or
 * sched_watch_*_init'ed) before first use; the owner must remove one before
 * freeing it.  Callbacks may remove, free or re-add their own waiter and
 * remove others: a waiter removed during a delivery is not called again.
 */
#ifndef REACTOR_SCHED_WATCH_H
#define REACTOR_SCHED_WATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "core/list.h"

struct event_base;
struct cfg;
struct sched_view;
struct sched_watch_job;

struct sched_watch_op {
	/* Set by the owner before sched_watch_op_add. */
	const char *op; /* operation name (owner keeps it alive) */
	/* A fresh view of the operation; NULL when reading failed (the next
	 * safety-net pass retries). */
	void (*on_view)(struct sched_watch_op *w, const struct sched_view *v);
	/* Private. */
	struct sched_watch_job *job;
	struct list link;
};

struct sched_watch_bot {
	/* Set by the owner before sched_watch_bot_add. */
	const char *instance;
	const char *props; /* canonical properties */
	void (*on_wake)(struct sched_watch_bot *b);
	/* The owner sets busy while its wake-up is being handled (an
	 * assign in flight): busy bots are skipped. */
	bool busy;
	/* Private. */
	struct list link;
};

/* The safety-net interval in force; called at start and on reload. */
void sched_watch_configure(const struct cfg *cfg);
/* Subscribe (before store_start, after keys_set_ns: subscriptions replay
 * on reconnect) and arm the safety net on base. */
void sched_watch_init(struct event_base *base);
/* Teardown: every waiter must be gone (asserted). */
void sched_watch_shutdown(void);

/* Counter of job messages received; pass the value read before issuing
 * the request that returned the job to sched_watch_op_add, so a change
 * announced before the waiter existed is not missed. */
uint64_t sched_watch_job_seq(void);
void sched_watch_op_add(struct sched_watch_op *w, const char *job, uint64_t since);
/* Harmless on a waiter not added. */
void sched_watch_op_remove(struct sched_watch_op *w);

/* Counter of queue messages received (same race rule as above). */
uint64_t sched_watch_queue_seq(void);
void sched_watch_bot_add(struct sched_watch_bot *b);
/* Harmless on a waiter not added. */
void sched_watch_bot_remove(struct sched_watch_bot *b);
/* True while b is on the bot list. */
bool sched_watch_bot_listed(const struct sched_watch_bot *b);

#endif
