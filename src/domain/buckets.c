/*
 * buckets.c - the build-bucket domain (see buckets.h): request validation
 * (bucket names, tags, parameters_json and its changes), one EVALSHA per
 * operation, and the conversion of script replies and build hashes into
 * reactor.buckets.v1.Build messages.  It owns no state besides the tunables:
 * everything lives in Redis, under the keys of buckets_keys.h.
 *
 * Checks that depend on the build (unknown id, completed, lease key) run
 * inside the scripts, in the order the API promises; input errors found
 * here that must come after them are handed to the script as a "late
 * error" it reports once the build checks pass.
 */
#include "domain/buckets.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <hiredis/hiredis.h>

#include "state/buckets_keys.h"
#include "rpc/grpc.h"
#include "core/json.h"
#include "core/log.h"

#define MOD  "buckets"
#define R(x) REACTOR__BUCKETS__V1__ERROR_REASON__##x

static struct bk_config conf = {60LL * 1000000, 2LL * 86400 * 1000000};

void bk_configure(const struct bk_config *c)
{
	conf = *c;
}

/* ---- enum names ---------------------------------------------------------- */

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
const char *bk_reason_name(int v)
{
	return enum_name(&reactor__buckets__v1__error_reason__descriptor, v);
}

/* ---- validation ------------------------------------------------------------ */

bool bk_bucket_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > BK_BUCKET_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

/* Strings stored in Redis and sent back must be UTF-8 (proto3 strings). */
static char *check_utf8v(const char *field, char *const *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!json_utf8_ok(v[i], strlen(v[i])))
			return xasprintf("%s[%zu]: not valid UTF-8", field, i);
	return NULL;
}

static char *check_utf8(const char *field, const char *s)
{
	return json_utf8_ok(s, strlen(s)) ? NULL : xasprintf("%s: not valid UTF-8", field);
}

static char *bad_bucket(const char *field, const char *name)
{
	return xasprintf(
		"%s: \"%.120s\" is not a valid bucket name (want [a-z0-9][a-z0-9._-]{0,99})", field,
		name);
}

void bk_params_free(struct bk_params *p)
{
	free(p->builder_name);
	for (size_t i = 0; i < p->n_changes; i++) {
		free(p->change_ids[i]);
		free(p->change_revs[i]);
	}
	free(p->change_ids);
	free(p->change_revs);
	memset(p, 0, sizeof *p);
}

/* Field f of change object c must be a string when present; *err names it. */
static bool opt_string(const struct json *c, const char *f, const char *where, char **err)
{
	const struct json *v = json_get(c, f);
	if (!v || v->type == JSON_STRING)
		return true;
	*err = xasprintf("%s.%s: must be a string, not %s", where, f, json_type_name(v->type));
	return false;
}

static int check_change(const struct json *c, size_t i, char **err)
{
	char where[200];
	const struct json *id = json_get(c, "id");
	if (id && id->type == JSON_STRING)
		snprintf(where, sizeof where, "parameters_json.changes[%zu] (id \"%.100s\")", i,
			 id->str);
	else
		snprintf(where, sizeof where, "parameters_json.changes[%zu]", i);
	if (c->type != JSON_OBJECT) {
		*err = xasprintf("%s: must be an object, not %s", where, json_type_name(c->type));
		return -1;
	}
	static const char *const strs[] = {"id", "revision", "message", "branch", "url", "project"};
	for (size_t k = 0; k < ARRAY_LEN(strs); k++)
		if (!opt_string(c, strs[k], where, err))
			return -1;
	const struct json *author = json_get(c, "author");
	if (!author) {
		*err = xasprintf("%s.author: required (an object with a string email)", where);
		return -1;
	}
	if (author->type != JSON_OBJECT) {
		*err = xasprintf("%s.author: must be an object, not %s", where,
				 json_type_name(author->type));
		return -1;
	}
	const struct json *email = json_get(author, "email");
	if (!email) {
		*err = xasprintf("%s.author.email: required", where);
		return -1;
	}
	if (email->type != JSON_STRING) {
		*err = xasprintf("%s.author.email: must be a string, not %s", where,
				 json_type_name(email->type));
		return -1;
	}
	const struct json *ts = json_get(c, "create_ts");
	if (ts && (ts->type != JSON_NUMBER || !ts->is_int || ts->i < 0)) {
		*err = xasprintf("%s.create_ts: must be a non-negative integer (microseconds since "
				 "the epoch)",
				 where);
		return -1;
	}
	const struct json *files = json_get(c, "files");
	if (files) {
		if (files->type != JSON_ARRAY) {
			*err = xasprintf("%s.files: must be a list, not %s", where,
					 json_type_name(files->type));
			return -1;
		}
		for (size_t k = 0; k < files->n; k++) {
			const struct json *f = files->items[k];
			const struct json *path = json_get(f, "path");
			if (f->type != JSON_OBJECT) {
				*err = xasprintf(
					"%s.files[%zu]: must be an object with a string path, "
					"not %s",
					where, k, json_type_name(f->type));
				return -1;
			}
			if (!path || path->type != JSON_STRING) {
				*err = xasprintf("%s.files[%zu].path: %s", where, k,
						 path ? "must be a string" : "required");
				return -1;
			}
		}
	}
	return 0;
}

int bk_params_parse(const char *text, struct bk_params *out, char **err)
{
	char jerr[160];
	memset(out, 0, sizeof *out);
	if (!text || !*text) {
		*err = xasprintf("parameters_json: required (a JSON object with a string "
				 "builder_name)");
		return -1;
	}
	struct json *j = json_parse(text, strlen(text), jerr, sizeof jerr);
	if (!j) {
		*err = xasprintf("parameters_json: invalid JSON: %s", jerr);
		return -1;
	}
	int rc = -1;
	if (j->type != JSON_OBJECT) {
		*err = xasprintf("parameters_json: must be a JSON object, not %s",
				 json_type_name(j->type));
		goto out;
	}
	const struct json *bn = json_get(j, "builder_name");
	if (!bn || bn->type != JSON_STRING || bn->len == 0 || strlen(bn->str) != bn->len) {
		*err = xasprintf("parameters_json.builder_name: %s",
				 !bn			   ? "required"
				 : bn->type != JSON_STRING ? "must be a string"
				 : bn->len == 0		   ? "must not be empty"
							   : "must not contain NUL");
		goto out;
	}
	const struct json *props = json_get(j, "properties");
	if (props && props->type != JSON_OBJECT) {
		*err = xasprintf("parameters_json.properties: must be an object, not %s",
				 json_type_name(props->type));
		goto out;
	}
	if (json_get(props, "buildbucket")) {
		*err = xasprintf("parameters_json.properties.buildbucket: reserved; the server "
				 "sets it");
		goto out;
	}
	const struct json *ch = json_get(j, "changes");
	if (ch && ch->type != JSON_ARRAY) {
		*err = xasprintf("parameters_json.changes: must be a list, not %s",
				 json_type_name(ch->type));
		goto out;
	}
	for (size_t i = 0; ch && i < ch->n; i++)
		if (check_change(ch->items[i], i, err) < 0)
			goto out;
	out->builder_name = xstrdup(bn->str);
	for (size_t i = 0; ch && i < ch->n; i++) {
		const struct json *id = json_get(ch->items[i], "id");
		const struct json *rev = json_get(ch->items[i], "revision");
		if (!id || id->len == 0)
			continue;
		out->change_ids = xrealloc(out->change_ids, (out->n_changes + 1) * sizeof(char *));
		out->change_revs =
			xrealloc(out->change_revs, (out->n_changes + 1) * sizeof(char *));
		out->change_ids[out->n_changes] = xstrdup(id->str);
		out->change_revs[out->n_changes] = xstrdup(rev ? rev->str : "");
		out->n_changes++;
	}
	rc = 0;
out:
	json_free(j);
	return rc;
}

void bk_strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_builder_tag(const char *t)
{
	return strncmp(t, "builder:", 8) == 0;
}

int bk_tags_normalize(char *const *tags, size_t n, const char *builder, char ***out, size_t *nout,
		      char **err)
{
	for (size_t i = 0; i < n; i++) {
		if (!strchr(tags[i], ':')) {
			*err = xasprintf("tags[%zu]: \"%.200s\" is not key:value (no ':')", i,
					 tags[i]);
			return -1;
		}
		if (is_builder_tag(tags[i]) && strcmp(tags[i] + 8, builder) != 0) {
			*err = xasprintf("tags[%zu]: \"%.200s\" disagrees with parameters_json."
					 "builder_name \"%.200s\"",
					 i, tags[i], builder);
			return -1;
		}
	}
	char **v = xcalloc(n + 1, sizeof *v);
	for (size_t i = 0; i < n; i++)
		v[i] = xstrdup(tags[i]);
	v[n] = xasprintf("builder:%s", builder);
	qsort(v, n + 1, sizeof *v, cmp_str);
	size_t k = 0;
	for (size_t i = 0; i <= n; i++) {
		if (k && strcmp(v[k - 1], v[i]) == 0)
			free(v[i]);
		else
			v[k++] = v[i];
	}
	*out = v;
	*nout = k;
	return 0;
}

int bk_new_tags_check(char *const *tags, size_t n, char **err)
{
	for (size_t i = 0; i < n; i++) {
		if (!strchr(tags[i], ':')) {
			*err = xasprintf("new_tags[%zu]: \"%.200s\" is not key:value (no ':')", i,
					 tags[i]);
			return -1;
		}
		if (is_builder_tag(tags[i])) {
			*err = xasprintf("new_tags[%zu]: \"%.200s\": builder tags cannot be added",
					 i, tags[i]);
			return -1;
		}
	}
	return 0;
}

int64_t bk_lease_key_new(void)
{
	uint64_t v = 0;
	while (v == 0) {
		if (getrandom(&v, sizeof v, 0) != sizeof v) {
			LOGE(MOD, "getrandom: %s", strerror(errno));
			abort();
		}
		v &= (1ULL << 53) - 1;
	}
	return (int64_t)v;
}

/* ---- builds from Redis replies ------------------------------------------- */

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

static int64_t num(const redisReply *v)
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
			b->lease_expiration_ts = num(v);
		else if (IS("url"))
			sfree(b->url), b->url = pstr(v->str, v->len);
		else if (IS("created_ts"))
			b->created_ts = num(v);
		else if (IS("updated_ts"))
			b->updated_ts = num(v);
		else if (IS("completed_ts"))
			b->completed_ts = num(v);
		else if (IS("created_by"))
			sfree(b->created_by), b->created_by = pstr(v->str, v->len);
		else if (IS("status_changed_ts"))
			b->status_changed_ts = num(v);
		else if (IS("retry_of"))
			b->retry_of = num(v);
		else if (IS("started_ts"))
			b->started_ts = num(v);
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
	return bk_build_from_hash(num(pair->element[0]), pair->element[1]);
}

/* ---- script plumbing -------------------------------------------------------- */

enum op_kind { OP_BUILD, OP_LIST, OP_COUNT, OP_GET };

struct op {
	enum op_kind kind;
	bk_cb cb;
	bk_list_cb lcb;
	void (*ncb)(long n, void *arg);
	void *arg;
	const char *what; /* for logs */
	int64_t get_id;	  /* OP_GET */
	int late_reason;  /* Put in "check" mode: the input error to report */
	char *late_msg;	  /* when client_operation_id was not seen */
};

/* Script arguments: pointers into the request or into `owned`. */
struct args {
	const char *v[64];
	size_t len[64];
	char *owned[16];
	int n, nowned;
	const char **xv; /* grown past 64 for long tag lists */
	size_t *xlen;
	int cap;
};

static void push(struct args *a, const char *s)
{
	if (a->n >= 64 && a->n >= a->cap) {
		int cap = a->cap ? a->cap * 2 : 128;
		const char **v = xcalloc((size_t)cap, sizeof *v);
		size_t *len = xcalloc((size_t)cap, sizeof *len);
		memcpy(v, a->xv ? a->xv : a->v, (size_t)a->n * sizeof *v);
		memcpy(len, a->xlen ? a->xlen : a->len, (size_t)a->n * sizeof *len);
		free(a->xv);
		free(a->xlen);
		a->xv = v, a->xlen = len, a->cap = cap;
	}
	const char **v = a->xv ? a->xv : a->v;
	size_t *len = a->xlen ? a->xlen : a->len;
	v[a->n] = s ? s : "";
	len[a->n] = strlen(v[a->n]);
	a->n++;
}

static void push_i64(struct args *a, int64_t x)
{
	if (a->nowned == (int)ARRAY_LEN(a->owned))
		abort();
	char *s = xasprintf("%" PRId64, x);
	a->owned[a->nowned++] = s;
	push(a, s);
}

static void args_free(struct args *a)
{
	for (int i = 0; i < a->nowned; i++)
		free(a->owned[i]);
	free(a->xv);
	free(a->xlen);
}

static struct op *op_new(enum op_kind kind, const char *what, void *arg)
{
	struct op *o = xcalloc(1, sizeof *o);
	o->kind = kind;
	o->what = what;
	o->arg = arg;
	return o;
}

static void finish_build(struct op *o, int code, int reason, char *msg, BkBuild *b)
{
	struct bk_res r = {code, reason, msg, b};
	o->cb(&r, o->arg);
	free(r.message);
	bk_build_free(r.build);
	free(o->late_msg);
	free(o);
}

static void finish_list(struct op *o, int code, int reason, char *msg)
{
	struct bk_list r = {code, reason, msg, NULL, 0, NULL};
	o->lcb(&r, o->arg);
	free(r.message);
	free(o);
}

/* Report a failure of any kind of op (the message is taken over). */
static void fail_op(struct op *o, int code, int reason, char *msg)
{
	switch (o->kind) {
	case OP_BUILD:
	case OP_GET: finish_build(o, code, reason, msg, NULL); break;
	case OP_LIST: finish_list(o, code, reason, msg); break;
	case OP_COUNT:
		free(msg);
		o->ncb(-1, o->arg);
		free(o);
		break;
	}
}

static void input_error(struct op *o, char *msg)
{
	fail_op(o, GRPC_OK, R(INVALID_INPUT), msg);
}

static bool is_str(const redisReply *r, const char *s)
{
	return r->type == REDIS_REPLY_STRING && strcmp(r->str, s) == 0;
}

/* Common checks; returns true when the reply is usable (and else has
 * finished the op). */
static bool reply_ok(struct op *o, const redisReply *r)
{
	if (!r) {
		fail_op(o, GRPC_UNAVAILABLE, 0, xstrdup("Redis connection lost"));
		return false;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		LOGE(MOD, "%s: Redis error: %s", o->what, r->str);
		fail_op(o, GRPC_INTERNAL, 0, xasprintf("Redis error in %s: %s", o->what, r->str));
		return false;
	}
	return true;
}

static void bad_reply(struct op *o)
{
	LOGE(MOD, "%s: unexpected reply from Redis", o->what);
	fail_op(o, GRPC_INTERNAL, 0, xasprintf("unexpected reply from Redis to %s", o->what));
}

/* {"ERR", reason, message}: in-band error. */
static bool script_err(struct op *o, const redisReply *r)
{
	if (r->elements != 3 || !is_str(r->element[0], "ERR") ||
	    r->element[1]->type != REDIS_REPLY_STRING || r->element[2]->type != REDIS_REPLY_STRING)
		return false;
	int reason =
		enum_value(&reactor__buckets__v1__error_reason__descriptor, r->element[1]->str);
	fail_op(o, GRPC_OK, reason ? reason : R(INVALID_INPUT),
		xstrndup(r->element[2]->str, r->element[2]->len));
	return true;
}

static void build_reply(redisReply *r, void *arg)
{
	struct op *o = arg;
	if (!reply_ok(o, r))
		return;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
		bad_reply(o);
		return;
	}
	if (script_err(o, r))
		return;
	if (r->elements == 1 && is_str(r->element[0], "MISS")) {
		char *m = o->late_msg;
		o->late_msg = NULL;
		fail_op(o, GRPC_OK, o->late_reason, m);
		return;
	}
	BkBuild *b;
	if (r->elements != 4 || !is_str(r->element[0], "OK") ||
	    r->element[1]->type != REDIS_REPLY_STRING ||
	    r->element[2]->type != REDIS_REPLY_STRING ||
	    !(b = bk_build_from_reply(r->element[3]))) {
		bad_reply(o);
		return;
	}
	b->utcnow_ts = num(r->element[1]);
	b->lease_key = num(r->element[2]);
	LOGD(MOD, "%s: build %" PRId64 " now %s%s%s%s", o->what, b->id, bk_status_name(b->status),
	     b->lease_expiration_ts ? ", leased" : "", b->result ? " " : "",
	     b->result ? bk_result_name(b->result) : "");
	finish_build(o, GRPC_OK, 0, NULL, b);
}

static void list_reply(redisReply *r, void *arg)
{
	struct op *o = arg;
	if (!reply_ok(o, r))
		return;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		bad_reply(o);
		return;
	}
	struct bk_list l = {GRPC_OK, 0, NULL, NULL, 0, NULL};
	l.builds = xcalloc(r->elements, sizeof *l.builds);
	for (size_t i = 1; i < r->elements; i++) {
		BkBuild *b = bk_build_from_reply(r->element[i]);
		if (b)
			l.builds[l.n++] = b;
	}
	int64_t now = now_us();
	for (size_t i = 0; i < l.n; i++)
		l.builds[i]->utcnow_ts = now;
	l.next_cursor = xstrndup(r->element[0]->str, r->element[0]->len);
	o->lcb(&l, o->arg);
	for (size_t i = 0; i < l.n; i++)
		bk_build_free(l.builds[i]);
	free(l.builds);
	free(l.next_cursor);
	free(l.message);
	free(o);
}

static void count_reply(redisReply *r, void *arg)
{
	struct op *o = arg;
	long n = -1;
	if (r && r->type == REDIS_REPLY_INTEGER)
		n = (long)r->integer;
	else if (r && r->type == REDIS_REPLY_ERROR)
		LOGE(MOD, "%s: Redis error: %s", o->what, r->str);
	o->ncb(n, o->arg);
	free(o);
}

static void run(struct op *o, int script, struct args *a)
{
	static const store_cb cbs[] = {
		[OP_BUILD] = build_reply,
		[OP_LIST] = list_reply,
		[OP_COUNT] = count_reply,
	};
	int rc = store_evalsha(bk_scripts[script], cbs[o->kind], o, 0, a->n, a->xv ? a->xv : a->v,
			       a->xlen ? a->xlen : a->len);
	args_free(a);
	if (rc < 0)
		fail_op(o, GRPC_UNAVAILABLE, 0, xstrdup("Redis is down"));
}

static struct op *build_op(const char *what, bk_cb cb, void *arg)
{
	struct op *o = op_new(OP_BUILD, what, arg);
	o->cb = cb;
	return o;
}

static bool id_known(struct op *o, int64_t id)
{
	if (id > 0)
		return true;
	fail_op(o, GRPC_OK, R(BUILD_NOT_FOUND), xasprintf("build %" PRId64 " not found", id));
	return false;
}

/* ---- operations --------------------------------------------------------------- */

void bk_put(const Reactor__Buckets__V1__PutRequest *req, const char *created_by, bk_cb cb,
	    void *arg)
{
	struct op *o = build_op("Put", cb, arg);
	struct bk_params p = {0};
	char *err = NULL, **tags = NULL, *tjson = NULL;
	size_t ntags = 0, tlen = 0;
	struct args a = {0};

	if (!bk_bucket_name_ok(req->bucket)) {
		input_error(o, bad_bucket("bucket", req->bucket));
		return;
	}
	if ((err = check_utf8("client_operation_id", req->client_operation_id))) {
		input_error(o, err);
		return;
	}
	if ((err = check_utf8v("tags", req->tags, req->n_tags)) ||
	    (err = check_utf8("leasee", req->leasee)) ||
	    bk_params_parse(req->parameters_json, &p, &err) < 0 ||
	    bk_tags_normalize(req->tags, req->n_tags, p.builder_name, &tags, &ntags, &err) < 0) {
		bk_params_free(&p);
		if (!*req->client_operation_id) {
			input_error(o, err);
			return;
		}
		/* A repeat returns the first build whatever else it says. */
		o->late_reason = R(INVALID_INPUT);
		o->late_msg = err;
		push(&a, req->bucket);
		for (int i = 0; i < 3; i++)
			push(&a, "");
		push(&a, req->client_operation_id);
		for (int i = 0; i < 4; i++)
			push(&a, "0");
		push(&a, "check");
		run(o, BK_S_PUT, &a);
		return;
	}
	tjson = xstrdup("[");
	tlen = 1;
	for (size_t i = 0; i < ntags; i++) {
		if (i)
			tjson = xrealloc(tjson, tlen + 2), tjson[tlen++] = ',', tjson[tlen] = '\0';
		json_quote(&tjson, &tlen, tags[i], strlen(tags[i]));
	}
	tjson = xrealloc(tjson, tlen + 2);
	tjson[tlen++] = ']';
	tjson[tlen] = '\0';

	push(&a, req->bucket);
	push(&a, tjson);
	push(&a, req->parameters_json);
	push(&a, created_by);
	push(&a, req->client_operation_id);
	push_i64(&a, req->lease_expiration_ts);
	push(&a, req->leasee);
	push_i64(&a, bk_lease_key_new());
	push_i64(&a, (conf.op_ttl_us + 999) / 1000);
	push(&a, "put");
	push_i64(&a, (int64_t)ntags);
	for (size_t i = 0; i < ntags; i++)
		push(&a, tags[i]);
	push_i64(&a, (int64_t)p.n_changes);
	for (size_t i = 0; i < p.n_changes; i++) {
		push(&a, p.change_ids[i]);
		push(&a, p.change_revs[i]);
	}
	run(o, BK_S_PUT, &a);
	bk_strv_free(tags, ntags);
	bk_params_free(&p);
	free(tjson);
}

void bk_retry(const Reactor__Buckets__V1__RetryRequest *req, const char *created_by, bk_cb cb,
	      void *arg)
{
	struct op *o = build_op("Retry", cb, arg);
	struct args a = {0};
	char *err;
	if (!id_known(o, req->id))
		return;
	if ((err = check_utf8("client_operation_id", req->client_operation_id)) ||
	    (err = check_utf8("leasee", req->leasee))) {
		input_error(o, err);
		return;
	}
	push_i64(&a, req->id);
	push(&a, req->client_operation_id);
	push_i64(&a, req->lease_expiration_ts);
	push(&a, req->leasee);
	push_i64(&a, bk_lease_key_new());
	push(&a, created_by);
	push_i64(&a, (conf.op_ttl_us + 999) / 1000);
	run(o, BK_S_RETRY, &a);
}

static void get_reply(redisReply *r, void *arg)
{
	struct op *o = arg;
	if (!reply_ok(o, r))
		return;
	if (r->type != REDIS_REPLY_ARRAY) {
		bad_reply(o);
		return;
	}
	BkBuild *b = bk_build_from_hash(o->get_id, r);
	if (!b) {
		fail_op(o, GRPC_OK, R(BUILD_NOT_FOUND),
			xasprintf("build %" PRId64 " not found", o->get_id));
		return;
	}
	b->utcnow_ts = now_us();
	finish_build(o, GRPC_OK, 0, NULL, b);
}

void bk_get(int64_t id, bk_cb cb, void *arg)
{
	struct op *o = build_op("Get", cb, arg);
	o->kind = OP_GET;
	o->get_id = id;
	if (!id_known(o, id))
		return;
	if (store_command(get_reply, o, "HGETALL " BK_BUILD "%" PRId64, id) < 0)
		fail_op(o, GRPC_UNAVAILABLE, 0, xstrdup("Redis is down"));
}

void bk_lease(const Reactor__Buckets__V1__LeaseRequest *req, bk_cb cb, void *arg)
{
	struct op *o = build_op("Lease", cb, arg);
	struct args a = {0};
	char *err;
	if (!id_known(o, req->id))
		return;
	if ((err = check_utf8("leasee", req->leasee))) {
		input_error(o, err);
		return;
	}
	push_i64(&a, req->id);
	push_i64(&a, req->lease_expiration_ts);
	push(&a, req->leasee);
	push_i64(&a, bk_lease_key_new());
	run(o, BK_S_LEASE, &a);
}

static void by_id(const char *what, int script, int64_t id, bk_cb cb, void *arg)
{
	struct op *o = build_op(what, cb, arg);
	struct args a = {0};
	if (!id_known(o, id))
		return;
	push_i64(&a, id);
	run(o, script, &a);
}

void bk_reset(int64_t id, bk_cb cb, void *arg)
{
	by_id("Reset", BK_S_RESET, id, cb, arg);
}

void bk_cancel(int64_t id, bk_cb cb, void *arg)
{
	by_id("Cancel", BK_S_CANCEL, id, cb, arg);
}

void bk_start(const Reactor__Buckets__V1__StartRequest *req, bk_cb cb, void *arg)
{
	struct op *o = build_op("Start", cb, arg);
	struct args a = {0};
	char *err;
	if (!id_known(o, req->id))
		return;
	if ((err = check_utf8("url", req->url))) {
		input_error(o, err);
		return;
	}
	push_i64(&a, req->id);
	push_i64(&a, req->lease_key);
	push(&a, req->url);
	run(o, BK_S_START, &a);
}

void bk_heartbeat(const Reactor__Buckets__V1__HeartbeatRequest *req, bk_cb cb, void *arg)
{
	struct op *o = build_op("Heartbeat", cb, arg);
	struct args a = {0};
	if (!id_known(o, req->id))
		return;
	push_i64(&a, req->id);
	push_i64(&a, req->lease_key);
	push_i64(&a, req->lease_expiration_ts);
	run(o, BK_S_HEARTBEAT, &a);
}

/* result_details_json, when given, must be a JSON object. */
static char *check_details(const char *s)
{
	char jerr[160];
	if (!*s)
		return NULL;
	struct json *j = json_parse(s, strlen(s), jerr, sizeof jerr);
	char *err = !j ? xasprintf("result_details_json: invalid JSON: %s", jerr)
		    : j->type != JSON_OBJECT
			    ? xasprintf("result_details_json: must be a JSON object, not %s",
					json_type_name(j->type))
			    : NULL;
	json_free(j);
	return err;
}

static void complete(const char *what, int64_t id, int64_t key, const char *result, int fr,
		     const char *details, const char *url, char *const *new_tags, size_t n_new,
		     bk_cb cb, void *arg)
{
	struct op *o = build_op(what, cb, arg);
	struct args a = {0};
	char *err = NULL;
	if (!id_known(o, id))
		return;
	const char *frname = fr ? bk_failure_name(fr) : "";
	if (!frname) {
		frname = "";
		err = xasprintf("failure_reason: unknown value %d", fr);
	} else if (!(err = check_utf8("url", url)) &&
		   !(err = check_utf8v("new_tags", new_tags, n_new)) &&
		   bk_new_tags_check(new_tags, n_new, &err) == 0) {
		err = check_details(details);
	}
	push_i64(&a, id);
	push_i64(&a, key);
	push(&a, result);
	push(&a, frname);
	push(&a, details);
	push(&a, url);
	/* Reported after the build checks (an idempotent repeat ignores it). */
	push(&a, err ? err : "");
	push_i64(&a, (int64_t)n_new);
	for (size_t i = 0; i < n_new; i++)
		push(&a, new_tags[i]);
	run(o, BK_S_COMPLETE, &a);
	free(err);
}

void bk_succeed(const Reactor__Buckets__V1__SucceedRequest *req, bk_cb cb, void *arg)
{
	complete("Succeed", req->id, req->lease_key, "SUCCESS", 0, req->result_details_json,
		 req->url, req->new_tags, req->n_new_tags, cb, arg);
}

void bk_fail(const Reactor__Buckets__V1__FailRequest *req, bk_cb cb, void *arg)
{
	int fr = req->failure_reason ? (int)req->failure_reason
				     : REACTOR__BUCKETS__V1__FAILURE_REASON__BUILD_FAILURE;
	complete("Fail", req->id, req->lease_key, "FAILURE", fr, req->result_details_json, req->url,
		 req->new_tags, req->n_new_tags, cb, arg);
}

/* "" or 19 digits (an id). */
static bool cursor_ok(const char *c)
{
	size_t n = strlen(c);
	return n == 0 || (n == 19 && strspn(c, "0123456789") == n);
}

/* Validate and de-duplicate bucket names into *out (pointers into req). */
static char *check_buckets(char *const *b, size_t n, const char ***out, size_t *nout)
{
	const char **v = xcalloc(n + 1, sizeof *v);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (!bk_bucket_name_ok(b[i])) {
			char field[32];
			snprintf(field, sizeof field, "buckets[%zu]", i);
			free(v);
			return bad_bucket(field, b[i]);
		}
		bool dup = false;
		for (size_t j = 0; j < k && !dup; j++)
			dup = strcmp(v[j], b[i]) == 0;
		if (!dup)
			v[k++] = b[i];
	}
	*out = v;
	*nout = k;
	return NULL;
}

void bk_peek(const Reactor__Buckets__V1__PeekRequest *req, bk_list_cb cb, void *arg)
{
	struct op *o = op_new(OP_LIST, "Peek", arg);
	o->lcb = cb;
	const char **b;
	size_t nb;
	char *err;
	if (req->n_buckets == 0) {
		input_error(o, xstrdup("buckets: at least one bucket is required"));
		return;
	}
	if ((err = check_buckets(req->buckets, req->n_buckets, &b, &nb))) {
		input_error(o, err);
		return;
	}
	if (!cursor_ok(req->start_cursor)) {
		free(b);
		input_error(o, xstrdup("start_cursor: not a cursor this server returned"));
		return;
	}
	int max = req->max_builds <= 0		  ? BK_PEEK_DEFAULT
		  : req->max_builds > BK_PEEK_MAX ? BK_PEEK_MAX
						  : req->max_builds;
	struct args a = {0};
	push_i64(&a, max);
	push(&a, req->start_cursor);
	for (size_t i = 0; i < nb; i++)
		push(&a, b[i]);
	free(b);
	run(o, BK_S_PEEK, &a);
}

static char *enum_filter(const char *field, const char *(*name)(int), int v, const char **out)
{
	*out = "";
	if (v == 0)
		return NULL;
	if (!(*out = name(v)))
		return xasprintf("%s: unknown value %d", field, v);
	return NULL;
}

void bk_search(const Reactor__Buckets__V1__SearchRequest *req, bk_list_cb cb, void *arg)
{
	struct op *o = op_new(OP_LIST, "Search", arg);
	o->lcb = cb;
	const char **b = NULL, *st, *res, *fr, *cr;
	size_t nb = 0;
	char *err;
	if ((err = check_buckets(req->buckets, req->n_buckets, &b, &nb)) ||
	    (err = enum_filter("status", bk_status_name, req->status, &st)) ||
	    (err = enum_filter("result", bk_result_name, req->result, &res)) ||
	    (err = enum_filter("failure_reason", bk_failure_name, req->failure_reason, &fr)) ||
	    (err = enum_filter("cancelation_reason", bk_cancel_name, req->cancelation_reason,
			       &cr))) {
		free(b);
		input_error(o, err);
		return;
	}
	if ((err = check_utf8v("tags", req->tags, req->n_tags)) ||
	    (err = check_utf8("created_by", req->created_by))) {
		free(b);
		input_error(o, err);
		return;
	}
	for (size_t i = 0; i < req->n_tags; i++) {
		if (!strchr(req->tags[i], ':')) {
			free(b);
			input_error(o, xasprintf("tags[%zu]: \"%.200s\" is not key:value (no ':')",
						 i, req->tags[i]));
			return;
		}
	}
	if (req->retry_of < 0 || !cursor_ok(req->start_cursor)) {
		free(b);
		input_error(o,
			    xstrdup(req->retry_of < 0
					    ? "retry_of: must not be negative"
					    : "start_cursor: not a cursor this server returned"));
		return;
	}
	int max = req->max_builds <= 0		    ? BK_SEARCH_DEFAULT
		  : req->max_builds > BK_SEARCH_MAX ? BK_SEARCH_MAX
						    : req->max_builds;
	struct args a = {0};
	push_i64(&a, max);
	push(&a, req->start_cursor);
	push(&a, st);
	push(&a, res);
	push(&a, fr);
	push(&a, cr);
	push(&a, req->created_by);
	push_i64(&a, req->retry_of);
	push_i64(&a, (int64_t)nb);
	for (size_t i = 0; i < nb; i++)
		push(&a, b[i]);
	push_i64(&a, (int64_t)req->n_tags);
	for (size_t i = 0; i < req->n_tags; i++)
		push(&a, req->tags[i]);
	free(b);
	run(o, BK_S_SEARCH, &a);
}

static void pass(const char *what, int script, int64_t timeout, int limit,
		 void (*cb)(long n, void *arg), void *arg)
{
	struct op *o = op_new(OP_COUNT, what, arg);
	o->ncb = cb;
	struct args a = {0};
	if (timeout >= 0)
		push_i64(&a, timeout);
	push_i64(&a, limit);
	run(o, script, &a);
}

void bk_expire_pass(int limit, void (*cb)(long n, void *arg), void *arg)
{
	pass("lease expiry", BK_S_EXPIRE, -1, limit, cb, arg);
}

void bk_timeout_pass(int limit, void (*cb)(long n, void *arg), void *arg)
{
	pass("build timeout", BK_S_TIMEOUT, conf.build_timeout_us, limit, cb, arg);
}
