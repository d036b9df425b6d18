/*
 * master.h - the build master inside reactord (reactor-buckets(7),
 * MASTER): on the one event loop, a poll timer and the buckets' build
 * events (a WatchBuilds stream per master) make it peek its buckets, lease
 * builds of the builders it has up to max-lease-count, run each build's
 * steps as REAPI actions on the executor, heartbeat its leases in one
 * batch and report start, success or failure.  It speaks to the Buckets
 * service and the executor only through the project's gRPC client, so
 * both may be this reactord or another one.
 *
 * Its held builds (lease keys, the current step and its operation, the
 * step records) live in Redis (master_state.c); a restarted master
 * resumes those it still holds, and a lost master's leases expire.
 */
#ifndef REACTOR_MASTER_H
#define REACTOR_MASTER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/cfg.h"
#include "core/util.h"

struct event_base;

/* Register the master's Redis scripts (before store_start; harmless
 * when no master is configured).  Returns 0 or a negative error. */
int master_state_init(void) WARN_UNUSED;

/* Start the master of mc (not NULL).  self: this reactord's first bound
 * address (its default name); self_target: how to reach this reactord,
 * the default Buckets and executor endpoint (NULL: self).  The config must
 * stay valid until master_configure() gives a new one or master_free().
 * Returns 0, or -1 with *err (malloc'd) for a bad endpoint. */
int master_start(struct event_base *base, const struct cfg_master *mc, const char *self,
		 const char *self_target, char **err) WARN_UNUSED;

/* A reload: take builders, limits and intervals from mc (held leases and
 * running builds stay; a build keeps the builder it started with).  mc
 * NULL (the master: section was removed) is logged: that takes a
 * restart.  No-op when no master runs. */
void master_configure(const struct cfg_master *mc);

/* Stop taking leases and stop every build: with on-shutdown reset, Reset
 * them (so other masters take them at once), else abandon them to their
 * lease expiry.  done(arg) is called once, after this returns, when the
 * resets have been answered (or after a short deadline) and the master's
 * connections are closing.  Only while master_running(). */
void master_drain(void (*done)(void *arg), void *arg);

/* True between master_start() and master_free(). */
bool master_running(void);

/* Free everything (after the loop has stopped running). */
void master_free(void);

/* Builds held right now (tests and logs). */
int master_nheld(void);

/* How the master names a build in its Start report: fn returns a malloc'd
 * URL (the status page's /builds/ID) or NULL for the default
 * reactor://NAME/builds/ID.  Injected at start (services/status.c). */
typedef char *(*master_url_fn)(int64_t id);
void master_set_url_fn(master_url_fn fn);

/* The leasee name this master uses (valid while master_running()). */
const char *master_name(void);

#endif
