/*
 * store.h - reactord's connection to Redis: one hiredis async command
 * connection and one subscriber connection on the server's event_base,
 * reconnect with capped exponential backoff, Lua scripts loaded with
 * SCRIPT LOAD (re-loaded after every reconnect, NOSCRIPT retried), and the
 * embedded redis-server that reactord spawns and supervises by default.
 *
 * Callers never block: a command issued while Redis is down fails at once
 * (store_command returns ERR_STORE_DOWN and the callback is NOT called) so
 * RPCs can answer UNAVAILABLE instead of hanging.  Nor do they wait without
 * end: a command unanswered after redis.command-timeout breaks the
 * connection (every waiting callback gets a NULL reply, and the store
 * reconnects), and with redis.max-pending commands in flight new ones fail
 * at once with ERR_STORE_BUSY.  Errors follow src/core/err.h.
 */
#ifndef REACTOR_STORE_H
#define REACTOR_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/util.h"

struct event_base;
struct redisReply;
struct cfg;

/* Reply callback.  `reply` is NULL when the connection dropped before the
 * reply came (the command may or may not have run).  The reply is owned by
 * hiredis and freed after the callback returns. */
typedef void (*store_cb)(struct redisReply *reply, void *arg);

/* Called on every transition of the command connection (up = connected and
 * scripts loaded; down = lost).  Registered callbacks run in order. */
typedef void (*store_state_cb)(bool up, void *arg);

/* Called for each message on a subscribed channel. */
typedef void (*store_msg_cb)(const char *channel, const char *msg, size_t len, void *arg);

/* Start: spawn the embedded redis-server when cfg->redis_embedded (blocks
 * until it answers PING, at most 10 s; an older embedded server left by a
 * killed reactord is shut down first), then begin connecting both contexts.
 * Returns 0, or -1 with *err set (malloc'd) when the embedded server cannot
 * be started.  External Redis being unreachable is NOT an error: the store
 * keeps retrying and reports state through store_on_state. */
int store_start(struct event_base *base, const struct cfg *cfg, char **err) WARN_UNUSED;

/* Disconnect both contexts and stop the embedded redis-server (SHUTDOWN,
 * then SIGTERM, then SIGKILL after a bounded wait; always reaped). */
void store_stop(void);

/* True when the command connection is up and scripts are loaded. */
bool store_up(void);

/* Register a state observer (at most 16). */
void store_on_state(store_state_cb cb, void *arg);

/* Issue a command.  Returns 0 when queued (cb will be called exactly once,
 * possibly with NULL), ERR_STORE_DOWN when Redis is down or the connection
 * is closing, ERR_STORE_BUSY when redis.max-pending commands already wait
 * for replies, -EINVAL for an empty argv (cb is not called on failure).
 * cb may be NULL to ignore the reply. */
int store_command(store_cb cb, void *arg, const char *fmt, ...) WARN_UNUSED;
int store_commandargv(store_cb cb, void *arg, int argc, const char **argv,
		      const size_t *argvlen) WARN_UNUSED;

/* Scripts: register before store_start; returns a small id (>= 0; the
 * same name and text give the same id), ERR_PRECONDITION after start,
 * -ENOSPC when the table is full.  Run with store_evalsha: 0 as for
 * store_command, -EINVAL for an unknown id or negative counts,
 * ERR_STORE_DOWN when Redis is down, ERR_STORE_BUSY as above.  `args` holds the nkeys key names
 * followed by nargs arguments (nkeys + nargs entries); lens may be NULL for
 * NUL-terminated strings.  NOSCRIPT is handled by reloading and retrying
 * once, so the caller sees exactly one reply. */
int store_script_register(const char *name, const char *lua) WARN_UNUSED;
int store_evalsha(int script, store_cb cb, void *arg, int nkeys, int nargs, const char **args,
		  const size_t *lens) WARN_UNUSED;

/* The code for a reply: 0 for anything but an error, ERR_STORE_FAILED for
 * NULL (the connection dropped or timed out first), ERR_STORE_FULL for an
 * "OOM" error (Redis is at its maxmemory and refuses writes; also from a
 * script whose redis.call hit it), ERR_STORE_REPLY for any other error. */
int store_reply_rc(const struct redisReply *r);

/* Why the command connection is down, or why it was last lost while it has
 * not come back up since: "Redis did not answer within 5s, config
 * redis.command-timeout", "Connection refused"...  NULL when up with no
 * failure since.  Owned by the store, valid until the loop runs again. */
const char *store_last_error(void);

/* Subscribe to a channel (or a pattern when it contains '*').
 * Subscriptions persist across reconnects (re-issued automatically). */
void store_subscribe(const char *channel, store_msg_cb cb, void *arg);

/* Path of the embedded server's unix socket (NULL when external). */
const char *store_embedded_socket(void);

/* Counters for tests and stats. */
struct store_stats {
	unsigned long commands, replies, reconnects, embedded_restarts;
};
void store_get_stats(struct store_stats *s);

#endif
