/*
 * worker_sup.h - reactord's supervisor of local reactor-worker processes
 * (the `workers:` config section).  It starts workers.local workers once
 * the listeners are up and Redis answers, pointed at reactord's own
 * first listener (a unix socket when one is configured), restarts a
 * worker that dies with exponential backoff, and stops them on shutdown.  Workers get
 * PR_SET_PDEATHSIG(SIGTERM), so a SIGKILLed reactord leaves none behind.
 * Reaping: a SIGCHLD event of its own (libevent 2.x keeps a list of
 * events per signal, so redisproc.c's SIGCHLD event still fires) that
 * waits only for the worker pids, never wait(-1).
 */
#ifndef REACTOR_WORKER_SUP_H
#define REACTOR_WORKER_SUP_H

#include "core/util.h"

struct event_base;
struct cfg;

/* Prepare cfg->workers_local workers (none: returns 0 at once); they
 * start with worker_sup_run.  The target
 * is taken from server_bound(), so call it after server_start().
 * Returns 0, or -1 with *err (malloc'd) when the binary cannot be found
 * or the SIGCHLD event cannot be registered. */
int worker_sup_start(struct event_base *base, const struct cfg *cfg, char **err) WARN_UNUSED;

/* Spawn the workers worker_sup_start prepared: main calls it once Redis
 * answers and the listeners serve, so a worker's first call finds a
 * server that can answer it.  Later calls (Redis back after an outage)
 * do nothing. */
void worker_sup_run(void);

/* Drain: SIGTERM every worker and restart none from now on. */
void worker_sup_stop(void);

/* Exit: stop (if not yet), wait up to 2 s for the workers, SIGKILL the
 * rest, reap them all, free everything.  Blocks; safe to call when
 * worker_sup_start never ran. */
void worker_sup_shutdown(void);

#endif
