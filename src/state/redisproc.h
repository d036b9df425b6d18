/*
 * redisproc.h - the embedded redis-server that reactord spawns and
 * supervises when cfg->redis_embedded is set.  It lives under
 * <state_dir>/redis/ (redis.conf, redis.sock, redis.pid, redis.log, the AOF
 * directory and a lock file), listens only on that unix socket, holds at
 * most cfg->redis_maxmemory bytes (maxmemory-policy noeviction: past it,
 * writes fail with OOM and nothing is ever evicted), and dies
 * with reactord (PR_SET_PDEATHSIG).  While it runs, a SIGCHLD event on the
 * loop reaps it if it dies and respawns it with backoff; the store's
 * reconnect logic finds the new server on the same socket.
 *
 * Used only by store.c.  One embedded server per process.
 */
#ifndef REACTOR_REDISPROC_H
#define REACTOR_REDISPROC_H

#include <sys/types.h>

#include "core/util.h"

struct event_base;
struct cfg;

/* Create <state_dir>/redis (mode 0700), take its lock (a second reactord
 * on the same state dir fails here), shut down a redis-server left there
 * by an earlier run (found through redis.pid; SHUTDOWN so it flushes its
 * AOF, SIGKILL after 10 s), write redis.conf, spawn cfg->redis_server and
 * block until it answers PING (at most 10 s).  Then supervise it on `base`.
 * Returns 0, or -1 with *err set to a malloc'd message (caller frees) that
 * says what failed, e.g. the exit status of a server that died at startup
 * and the last line of its log.  cfg is not kept. */
int redisproc_start(struct event_base *base, const struct cfg *cfg, char **err) WARN_UNUSED;

/* Stop supervising, SHUTDOWN the server (SIGKILL if it has not exited
 * after 10 s), reap it and release the lock.  Blocks; call only at
 * shutdown.  Safe to call when not started. */
void redisproc_stop(void);

/* Unix socket path of the embedded server (owned by redisproc, valid until
 * redisproc_stop), or NULL when not started. */
const char *redisproc_socket(void);

/* Pid of the running server, or 0 while it is down (between a crash and
 * the respawn) or not started. */
pid_t redisproc_pid(void);

/* How many times the supervisor respawned a server that died. */
unsigned long redisproc_restarts(void);

#endif
