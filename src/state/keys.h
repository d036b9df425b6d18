/*
 * keys.h - every Redis key reactord writes is named here (see keys.c for
 * the schema comment and man/reactor-redis.7 for what each field means).
 * Functions return malloc'd strings; callers free them.
 */
#ifndef REACTOR_KEYS_H
#define REACTOR_KEYS_H

#include <stdint.h>

struct digest;

/* The namespace every key and channel name starts with (one prefix per
 * deployment, so reactord can share a Redis with other applications).
 * keys_set_ns copies `ns`; keys_ns never returns NULL. */
void keys_set_ns(const char *ns);
const char *keys_ns(void);

/* Action cache entry: a hash.  ac:{instance}:{hash}-{size} */
char *keys_ac(const char *instance, const struct digest *action);

/* Remote execution (src/sched*.c).  The Lua scripts build the same names
 * from these prefixes (sched_lua.c splices them in), so each is spelled
 * once.  See keys.c for the fields. */
#define KEYS_JOB       "job:"		 /* job:{job} hash; job:{job}:ops set */
#define KEYS_OP	       "op:"		 /* op:{operation} hash */
#define KEYS_OPS       "ops:"		 /* ops:{instance} zset of operations */
#define KEYS_ACTIONJOB "actionjob:"	 /* actionjob:{instance}:{hash}-{size} */
#define KEYS_QUEUE     "queue:"		 /* queue:{instance}:{platform} zset */
#define KEYS_PLATFORMS "platforms:"	 /* platforms:{instance} set */
#define KEYS_BOT       "bot:"		 /* bot:{session} hash */
#define KEYS_BOTS      "bots:"		 /* bots:{instance} zset by expiry */
#define KEYS_BOTID     "botid:"		 /* botid:{instance}:{bot_id} string */
#define KEYS_BOTPROPS  "botprops:"	 /* botprops:{instance} hash props -> sessions */
#define KEYS_SEQ       "sched:seq"	 /* arrival counter */
#define KEYS_DEADLINES "sched:deadlines" /* zset of assigned jobs by deadline */
#define KEYS_RETIRE    "sched:retire"	 /* zset of finished keys by removal time */
/* Pub/sub channels: the job name / "{instance}\n{platform}". */
#define KEYS_CH_JOB   "sched:job"
#define KEYS_CH_QUEUE "sched:queue"

char *keys_job(const char *job);
char *keys_op(const char *op);
char *keys_bot(const char *session);
char *keys_action_job(const char *instance, const struct digest *action);

#endif
