/*
 * buckets_int.h - what the buckets*.c files share and nobody else uses:
 * script ids, input checks that build messages, reply helpers.
 */
#ifndef REACTOR_BUCKETS_INT_H
#define REACTOR_BUCKETS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/buckets.h"

struct redisReply;

/* Scripts (buckets_scripts.c); ids from store_script_register. */
enum {
	BK_S_PUT,
	BK_S_RETRY,
	BK_S_LEASE,
	BK_S_START,
	BK_S_HEARTBEAT,
	BK_S_COMPLETE,
	BK_S_CANCEL,
	BK_S_RESET,
	BK_S_EXPIRE,
	BK_S_TIMEOUT,
	BK_S_PEEK,
	BK_S_SEARCH,
	BK_S_COUNT
};
extern int bk_scripts[BK_S_COUNT];
/* Register every script; 0, or store_script_register's error
 * (ERR_PRECONDITION: store already started). */
int bk_scripts_register(void) WARN_UNUSED;

/* Input checks (buckets_input.c): NULL when fine, else a malloc'd message
 * naming the field. */
char *bk_check_utf8(const char *field, const char *s);
char *bk_check_utf8v(const char *field, char *const *v, size_t n);
char *bk_bad_bucket(const char *field, const char *name);
char *bk_check_details(const char *s);
/* Validate and de-duplicate bucket names into *out (pointers into b). */
/* Most bucket names one Peek or Search may name. */
#define BK_MAX_BUCKETS 100
char *bk_check_buckets(char *const *b, size_t n, const char ***out, size_t *nout);
/* An optional enum filter: *out the name, "" for 0. */
char *bk_enum_filter(const char *field, const char *(*name)(int), int v, const char **out);
/* "" or 19 digits (an id). */
bool bk_cursor_ok(const char *c);

/* Reply helpers (buckets_build.c). */
int bk_reason_value(const char *name);
int64_t bk_reply_num(const struct redisReply *v);

#endif
