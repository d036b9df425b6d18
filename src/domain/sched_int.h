/*
 * sched_int.h - what the scheduler's files share and nobody else sees:
 * the script ids, the per-request context and the reply readers of
 * sched.c, used by sched_bots.c (the Bots side: sessions, leases,
 * assignment, queue sizes).
 */
#ifndef REACTOR_SCHED_INT_H
#define REACTOR_SCHED_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/digest.h"
#include "core/util.h"
#include "proto/pb.h"
#include "state/store.h"

struct redisReply;

#define SCHED_MOD "sched"

/* The scripts, by index into sched.c's table of src/state/lua/ names. */
enum {
	S_ENQUEUE,
	S_CACHED,
	S_VIEW,
	S_CANCEL,
	S_DELETE,
	S_LIST,
	S_BOT_CREATE,
	S_BOT_UPDATE,
	S_ASSIGN,
	S_UNASSIGN,
	S_QUEUED,
	S_SWEEP,
	S_COUNT
};

/* One request in flight: the caller's callback and its argument. */
struct sched_req {
	void (*fn)(void);
	void *arg;
	char *extra; /* owned copy some replies need */
};
struct sched_req *sched_req_new(void (*fn)(void), void *arg);
void sched_req_free(struct sched_req *q);

/* Run script s with its own keys and arguments (lens: NULL for
 * NUL-terminated arguments), adding what the prelude expects.  The reply
 * goes to cb with q as its argument (q may be NULL).  Returns 0, or
 * store_evalsha's error (ERR_STORE_DOWN) with q freed and cb never
 * called. */
int sched_run(int s, store_cb cb, struct sched_req *q, const char *const *keys, int nkeys,
	      const char *const *args, const size_t *lens, int nargs) WARN_UNUSED;

/* Element i of an array reply as a string ("" for nil or out of range;
 * an integer is formatted into a static buffer, valid until the next
 * call); *len set when len is not NULL. */
const char *sched_el_str(const struct redisReply *r, size_t i, size_t *len);
/* Element i as an integer (0 when missing or not a number). */
int64_t sched_el_int(const struct redisReply *r, size_t i);
/* "hash/size" to a digest; false when malformed. */
bool sched_parse_action(const char *s, struct digest *d);
/* 0 for a usable reply; ERR_STORE_FAILED when the connection dropped
 * before it came (r NULL), ERR_STORE_REPLY for an error reply (logged). */
int sched_reply_err(const struct redisReply *r, const char *what);
/* sched_reply_err, and also ERR_STORE_REPLY when r is not an array of at
 * least `min` elements. */
int sched_reply_array_err(const struct redisReply *r, size_t min, const char *what);
/* Free n strings and the array. */
void sched_free_strv(char **v, size_t n);

#endif
