/*
 * buckets_build.c - reactor.buckets.v1.Build messages from Redis replies
 * (a script's {id, {field, value...}} or a plain HGETALL of a build hash),
 * and the enum names stored in Redis (the proto value names).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "core/json.h"
#include "core/log.h"
#include "domain/buckets_int.h"

#define MOD "buckets"

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v)
{
	const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
	return ev ? ev->name : NULL;
}

static int enum_value(const ProtobufCEnumDescriptor *d, const char *name)
{
	const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(d, name);
	return ev ? ev->value : 0;
}

const char *bk_status_name(int v)
{
	return enum_name(&reactor__buckets__v1__status__descriptor, v);
}
const char *bk_result_name(int v)
{
	return enum_name(&reactor__buckets__v1__result__descriptor, v);
}
const char *bk_failure_name(int v)
{
	return enum_name(&reactor__buckets__v1__failure_reason__descriptor, v);
}
const char *bk_cancel_name(int v)
{
	return enum_name(&reactor__buckets__v1__cancelation_reason__descriptor, v);
}

int bk_reason_value(const char *name)
{
	return enum_value(&reactor__buckets__v1__error_reason__descriptor, name);
}

static char *pstr(const char *s, size_t len)
{
	return len ? xstrndup(s, len) : (char *)protobuf_c_empty_string;
}

static void sfree(char *s)
{
	if (s && s != protobuf_c_empty_string)
		free(s);
}

void bk_build_free(BkBuild *b)
{
	if (!b)
		return;
	sfree(b->bucket);
	bk_strv_free(b->tags, b->n_tags);
	sfree(b->parameters_json);
	sfree(b->result_details_json);
	sfree(b->url);
	sfree(b->created_by);
	sfree(b->leasee);
	free(b);
}

int64_t bk_reply_num(const redisReply *v)
{
	char buf[32];
	size_t n = v->len < sizeof buf - 1 ? v->len : sizeof buf - 1;
	memcpy(buf, v->str, n);
	buf[n] = '\0';
	return strtoll(buf, NULL, 10);
}

static void set_tags(BkBuild *b, const redisReply *v)
{
	struct json *j = json_parse(v->str, v->len, NULL, 0);
	if (j && j->type == JSON_ARRAY) {
		b->tags = xcalloc(j->n ? j->n : 1, sizeof(char *));
		for (size_t i = 0; i < j->n; i++)
			if (j->items[i]->type == JSON_STRING)
				b->tags[b->n_tags++] = xstrdup(j->items[i]->str);
	} else {
		LOGW(MOD, "build %" PRId64 ": tags field is not a JSON array", b->id);
	}
	json_free(j);
}

BkBuild *bk_build_from_hash(int64_t id, const redisReply *arr)
{
	if (!arr || arr->type != REDIS_REPLY_ARRAY || arr->elements == 0 || arr->elements % 2)
		return NULL;
	BkBuild *b = xmalloc(sizeof *b);
	reactor__buckets__v1__build__init(b);
	b->id = id;
	for (size_t i = 0; i + 1 < arr->elements; i += 2) {
		const redisReply *k = arr->element[i], *v = arr->element[i + 1];
		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			continue;
		const char *f = k->str;
#define IS(name) (strcmp(f, name) == 0)
		if (IS("bucket"))
			sfree(b->bucket), b->bucket = pstr(v->str, v->len);
		else if (IS("tags"))
			set_tags(b, v);
		else if (IS("parameters_json"))
			sfree(b->parameters_json), b->parameters_json = pstr(v->str, v->len);
		else if (IS("status"))
			b->status = enum_value(&reactor__buckets__v1__status__descriptor, v->str);
		else if (IS("result"))
			b->result = enum_value(&reactor__buckets__v1__result__descriptor, v->str);
		else if (IS("result_details_json"))
			sfree(b->result_details_json),
				b->result_details_json = pstr(v->str, v->len);
		else if (IS("failure_reason"))
			b->failure_reason = enum_value(
				&reactor__buckets__v1__failure_reason__descriptor, v->str);
		else if (IS("cancelation_reason"))
			b->cancelation_reason = enum_value(
				&reactor__buckets__v1__cancelation_reason__descriptor, v->str);
		else if (IS("lease_expiration_ts"))
			b->lease_expiration_ts = bk_reply_num(v);
		else if (IS("url"))
			sfree(b->url), b->url = pstr(v->str, v->len);
		else if (IS("created_ts"))
			b->created_ts = bk_reply_num(v);
		else if (IS("updated_ts"))
			b->updated_ts = bk_reply_num(v);
		else if (IS("completed_ts"))
			b->completed_ts = bk_reply_num(v);
		else if (IS("created_by"))
			sfree(b->created_by), b->created_by = pstr(v->str, v->len);
		else if (IS("status_changed_ts"))
			b->status_changed_ts = bk_reply_num(v);
		else if (IS("retry_of"))
			b->retry_of = bk_reply_num(v);
		else if (IS("started_ts"))
			b->started_ts = bk_reply_num(v);
		else if (IS("leasee"))
			sfree(b->leasee), b->leasee = pstr(v->str, v->len);
#undef IS
	}
	return b;
}

BkBuild *bk_build_from_reply(const redisReply *pair)
{
	if (!pair || pair->type != REDIS_REPLY_ARRAY || pair->elements != 2 ||
	    pair->element[0]->type != REDIS_REPLY_STRING)
		return NULL;
	return bk_build_from_hash(bk_reply_num(pair->element[0]), pair->element[1]);
}
