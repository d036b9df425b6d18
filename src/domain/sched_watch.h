/*
 * watch.h - who waits for what, and waking them: the pub/sub side of the
 * scheduler.  Two kinds of waiters, each on the one list keyed by what it
 * waits for:
 *
 *   - operation waiters (Execute / WaitExecution streams) keyed by job:
 *     a message on sched:job marks the job dirty; once per loop pass one
 *     script call reads every dirty job's waiting operations and hands
 *     each waiter its operation's view;
 *   - bot waiters (long-polling UpdateBotSession calls) keyed by
 *     instance: a message on sched:queue wakes one idle bot whose
 *     properties match the queue's platform.
 *
 * Pub/sub is lossy across disconnects, so a safety-net timer re-reads
 * every watched job (one script call) and asks which queues hold work
 * (one more) at scheduler.safety-net-interval, and right after Redis
 * comes back.  Nothing else reads Redis while everybody just waits.
 *
 * Waiters are embedded in their owner's struct; the owner must remove
 * one before freeing it.  Callbacks may remove or re-add their waiter.
 */
#ifndef REACTOR_WATCH_H
#define REACTOR_WATCH_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct sched_view;
struct watch_job;

struct watch_op {
	/* Set by the owner before watch_op_add. */
	const char *op; /* operation name (owner keeps it alive) */
	/* A fresh view of the operation; NULL when reading failed (the next
	 * safety-net pass retries). */
	void (*on_view)(struct watch_op *w, const struct sched_view *v);
	/* Private. */
	struct watch_job *job;
	struct watch_op *prev, *next;
};

struct watch_bot {
	/* Set by the owner before watch_bot_add. */
	const char *instance;
	const char *props; /* canonical properties */
	void (*on_wake)(struct watch_bot *b);
	/* The owner sets busy while its wake-up is being handled (an
	 * assign in flight): busy bots are skipped. */
	bool busy;
	/* Private. */
	bool on_list;
	struct watch_bot *prev, *next;
};

/* Subscribe (before store_start: subscriptions replay on reconnect) and
 * arm the safety net on base. */
void watch_init(struct event_base *base);
/* Teardown: every waiter must be gone (asserted). */
void watch_shutdown(void);

/* Counter of job messages received; pass the value read before issuing
 * the request that returned the job to watch_op_add, so a change
 * announced before the waiter existed is not missed. */
uint64_t watch_job_seq(void);
void watch_op_add(struct watch_op *w, const char *job, uint64_t since);
void watch_op_remove(struct watch_op *w);
/* Re-read a job's waiters now (batched with this loop pass). */
void watch_job_poke(const char *job);

/* Counter of queue messages received (same race rule as above). */
uint64_t watch_queue_seq(void);
void watch_bot_add(struct watch_bot *b);
void watch_bot_remove(struct watch_bot *b);

/* Counters for tests and stats. */
struct watch_stats {
	uint64_t job_msgs, queue_msgs, view_reads, safety_passes;
	uint64_t op_waiters, bot_waiters, jobs_watched;
};
void watch_get_stats(struct watch_stats *s);

#endif
