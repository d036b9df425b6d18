/*
 * keys.h - every Redis key reactord writes is named here (see keys.c for
 * the schema comment and man/reactor-redis.7 for what each field means).
 * Functions return malloc'd strings; callers free them.
 */
#ifndef REACTOR_KEYS_H
#define REACTOR_KEYS_H

#include <stdint.h>

struct digest;

/* Action cache entry: a hash.  ac:{instance}:{hash}-{size} */
char *keys_ac(const char *instance, const struct digest *action);

#endif
