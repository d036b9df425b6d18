/*
 * buckets_keys.c - build-bucket key and channel names (schema in
 * buckets_keys.h), all under keys_ns() and the {bb} hash tag.
 */
#include "state/buckets_keys.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "state/keys.h"

char *bkeys_base(void)
{
	return xasprintf("%s" BKEYS_TAG, keys_ns());
}

char *bkeys_build(int64_t id)
{
	return xasprintf("%s" BKEYS_TAG "build:%" PRId64, keys_ns(), id);
}

char *bkeys_bucket(const char *bucket, const char *set)
{
	return xasprintf("%s" BKEYS_TAG "bucket:%s:%s", keys_ns(), bucket, set);
}

char *bkeys_buckets(void)
{
	return xasprintf("%s" BKEYS_TAG "buckets", keys_ns());
}

char *bkeys_tag(const char *tag)
{
	return xasprintf("%s" BKEYS_TAG "tag:%s", keys_ns(), tag);
}

/* ':' and '%' as %3A and %25 (bk_lib.lua's esc()). */
static char *esc(const char *s)
{
	char *out = xmalloc(3 * strlen(s) + 1), *p = out;
	for (; *s; s++) {
		if (*s == ':' || *s == '%')
			p += sprintf(p, "%%%02X", (unsigned char)*s);
		else
			*p++ = *s;
	}
	*p = '\0';
	return out;
}

char *bkeys_escape(const char *s)
{
	return esc(s);
}

char *bkeys_change(const char *id, const char *revision)
{
	char *i = esc(id), *r = esc(revision);
	char *k = xasprintf("%s" BKEYS_TAG "change:%s:%s", keys_ns(), i, r);
	free(i);
	free(r);
	return k;
}

char *bkeys_leased(void)
{
	return xasprintf("%s" BKEYS_TAG "leased", keys_ns());
}

char *bkeys_done(void)
{
	return xasprintf("%s" BKEYS_TAG "done", keys_ns());
}

char *bkeys_idgen(void)
{
	return xasprintf("%s" BKEYS_TAG "idgen", keys_ns());
}

char *bkeys_op(const char *bucket, const char *client_operation_id)
{
	return xasprintf("%s" BKEYS_TAG "op:%s:%s", keys_ns(), bucket, client_operation_id);
}

char *bkeys_events_pattern(void)
{
	const char *ns = keys_ns();
	char *out = xmalloc(2 * strlen(ns) + sizeof BKEYS_TAG "events:*"), *p = out;
	for (; *ns; ns++) {
		if (strchr("*?[]\\", *ns))
			*p++ = '\\';
		*p++ = *ns;
	}
	strcpy(p, BKEYS_TAG "events:*");
	return out;
}

char *bkeys_probe(void)
{
	return xasprintf("%s" BKEYS_TAG "probe", keys_ns());
}
