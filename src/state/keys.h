/*
 * keys.h - the names of the Redis keys and channels of the scheduler and
 * the action cache (keys.c holds the schema comment, man/reactor-redis.7
 * what each field means; the buckets name theirs in buckets_keys.h).
 * Every name starts with the namespace (redis.prefix).  Functions return
 * malloc'd strings; callers free them.
 */
#ifndef REACTOR_KEYS_H
#define REACTOR_KEYS_H

#include <stdint.h>

struct digest;

/* The namespace every key and channel name starts with (one prefix per
 * deployment, so reactord can share a Redis with other applications).
 * Set once at start, before any script runs (it is not reloadable).
 * keys_set_ns copies `ns`; keys_ns never returns NULL ("" until set). */
void keys_set_ns(const char *ns);
const char *keys_ns(void);

/* Action cache entry: a hash.  {ns}ac:{instance}:{hash}-{size} */
char *keys_ac(const char *instance, const struct digest *action);

/* Remote execution (domain/sched*.c).  The Lua scripts build the names
 * of keys they find at run time from the same suffixes (see
 * src/state/lua/sched_prelude.lua); keys.c lists the fields. */
char *keys_job(const char *job);      /* {ns}job:{job} hash */
char *keys_job_ops(const char *job);  /* {ns}job:{job}:ops set */
char *keys_op(const char *op);	      /* {ns}op:{operation} hash */
char *keys_ops(const char *instance); /* {ns}ops:{instance} zset */
char *keys_action_job(const char *instance, const struct digest *action);
char *keys_queue(const char *instance, const char *platform);
char *keys_platforms(const char *instance); /* {ns}platforms:{instance} set */
char *keys_bot(const char *session);	    /* {ns}bot:{session} hash */
char *keys_bots(const char *instance);	    /* {ns}bots:{instance} zset */
char *keys_botid(const char *instance, const char *bot_id);
char *keys_botprops(const char *instance); /* {ns}botprops:{instance} hash */
char *keys_botseen(const char *instance);  /* {ns}botseen:{instance} hash */
char *keys_opstats(const char *instance);  /* {ns}opstats:{instance} hash */
/* {ns}sched:{name}: the keys "seq", "deadlines", "retire" and the
 * channels "job", "queue". */
char *keys_sched(const char *name);

/* The build master (domain/master_state.c; keys.c lists the fields).
 * {ns}master:{name}              set of the build ids it holds
 * {ns}master:{name}:build:{id}   hash, one held build
 * {ns}mstep:{id}:{n}             hash, step n of build id (0-based)
 * {ns}mchange:{id}:{revision}    hash, a change as first recorded
 *                                (id and revision escaped as in bkeys_change) */
char *keys_master(const char *name);
char *keys_master_build(const char *name, int64_t id);
char *keys_mstep(int64_t id, int n);
char *keys_mchange(const char *id, const char *revision);

#endif
