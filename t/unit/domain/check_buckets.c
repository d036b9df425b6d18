/*
 * check_buckets.c - unit tests for build buckets: input validation (bucket
 * names, tags, parameters_json and its changes), lease keys, and every
 * status transition of src/buckets.c run for real against a redis-server
 * through the store, with the invariants checked in Redis after each step
 * (the JSON parser has its own check_json.c).
 *
 * The Redis tests share one TCase whose unchecked fixture (in the runner
 * process) makes a temp dir and starts a redis-server on a unix socket in
 * it, and kills it and removes the dir in teardown whatever happened in the
 * forked tests; the server also dies with the runner (PR_SET_PDEATHSIG).
 * Each test flushes the database, connects the store and drives the event
 * loop until its callbacks ran; nothing sleeps for readiness.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "domain/buckets.h"
#include "state/keys.h"
#include "core/cfg.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "state/store.h"
#include "check_run.h"
#define CHECK_REDIS_NAME "check_buckets"
#include "check_redis.h"

/* Every key the tests name, spelled out: the namespace they set, then the
 * buckets hash tag (state/buckets_keys.h). */
#define NS     "test:"
#define BB     NS "{bb}:"
#define R(x)   REACTOR__BUCKETS__V1__ERROR_REASON__##x
#define ST(x)  REACTOR__BUCKETS__V1__STATUS__##x
#define RES(x) REACTOR__BUCKETS__V1__RESULT__##x
#define FR(x)  REACTOR__BUCKETS__V1__FAILURE_REASON__##x
#define CR(x)  REACTOR__BUCKETS__V1__CANCELATION_REASON__##x

static struct event_base *g_base;
static struct cfg *g_cfg;
static redisContext *g_sync; /* plain connection for checks */
static int g_up;

/* ---- runner-side fixture: one redis-server for the Redis TCase ---- */

/* ---- test-side fixture ---- */

static void on_state(bool up, void *arg)
{
	(void)arg;
	if (up)
		g_up++;
}

/* Run the loop until *v >= min or timeout; true when reached. */
static bool run_until(const int *v, int min, int64_t us)
{
	return check_loop_until(g_base, v, min, us);
}

static void setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_WARN);
	g_sync = sync_conn(5000000);
	ck_assert_msg(g_sync, "no redis-server on %s", g_sock);
	freeReplyObject(redisCommand(g_sync, "FLUSHALL"));
	g_base = event_base_new();
	g_cfg = calloc(1, sizeof *g_cfg);
	g_cfg->redis_embedded = false;
	g_cfg->redis_address = g_sock;
	g_cfg->redis_connect_timeout_us = 1000000;
	g_cfg->redis_reconnect_max_us = 200000;
	struct bk_config bc = {.op_ttl_us = 60LL * 1000000, .build_timeout_us = 2LL * 86400 * 1000000};
	bk_configure(&bc);
	keys_set_ns(NS);
	ck_assert_int_eq(bk_init(g_base), 0);
	g_up = 0;
	store_on_state(on_state, NULL);
	char *err = NULL;
	ck_assert_msg(store_start(g_base, g_cfg, &err) == 0, "store_start: %s", err);
	ck_assert_msg(run_until(&g_up, 1, 5000000), "store never came up");
}

/* Every key in Redis is under the namespace and the buckets tag: SCAN the
 * whole keyspace (after each Redis test, whatever it did). */
static void check_namespace(void)
{
	char cursor[32] = "0";
	size_t n = 0;
	do {
		redisReply *r = redisCommand(g_sync, "SCAN %s COUNT 1000", cursor);
		ck_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
		snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
		for (size_t i = 0; i < r->element[1]->elements; i++, n++) {
			const char *k = r->element[1]->element[i]->str;
			ck_assert_msg(strncmp(k, BB, strlen(BB)) == 0,
				      "key \"%s\" is outside the namespace " BB, k);
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	(void)n;
}

static void teardown(void)
{
	check_namespace();
	store_stop();
	event_base_free(g_base);
	free(g_cfg);
	redisFree(g_sync);
}

/* ---- operation helpers ---- */

struct got {
	int done, code, reason;
	char *msg;
	BkBuild *b;
};

static void on_res(struct bk_res *r, void *arg)
{
	struct got *g = arg;
	g->done++;
	g->code = r->err;
	g->reason = r->reason;
	g->msg = r->message ? strdup(r->message) : NULL;
	g->b = r->build;
	r->build = NULL;
}

static struct got *wait_got(struct got *g)
{
	ck_assert_msg(run_until(&g->done, 1, 10000000), "no answer");
	ck_assert_int_eq(g->done, 1);
	return g;
}

/* An ErrorReason's proto name, for failure messages. */
static const char *reason_name(int v)
{
	const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(
		&reactor__buckets__v1__error_reason__descriptor, v);
	return e ? e->name : "?";
}

/* The build of a successful answer (caller frees). */
static BkBuild *ok_build(struct got *g)
{
	ck_assert_msg(g->code == 0 && g->reason == 0, "code %d reason %s: %s", g->code,
		      reason_name(g->reason), g->msg ? g->msg : "");
	ck_assert_ptr_nonnull(g->b);
	ck_assert_int_gt(g->b->utcnow_ts, 0);
	free(g->msg);
	return g->b;
}
#define OK(call)                                                                                   \
	({                                                                                         \
		struct got g_ = {0};                                                               \
		ck_assert_int_eq((call), 0);                                                       \
		ok_build(wait_got(&g_));                                                           \
	})

static void expect_err(struct got *g, int reason, const char *substr)
{
	ck_assert_msg(g->code == 0, "code %d: %s", g->code, g->msg ? g->msg : "");
	ck_assert_msg(g->reason == reason, "reason %s, want %s: %s", reason_name(g->reason),
		      reason_name(reason), g->msg ? g->msg : "");
	ck_assert_ptr_null(g->b);
	ck_assert_ptr_nonnull(g->msg);
	ck_assert_msg(strstr(g->msg, substr), "message \"%s\" lacks \"%s\"", g->msg, substr);
	free(g->msg);
}
#define ERR(call, reason, substr)                                                                  \
	do {                                                                                       \
		struct got g_ = {0};                                                               \
		ck_assert_int_eq((call), 0);                                                       \
		expect_err(wait_got(&g_), reason, substr);                                         \
	} while (0)

static const char *params(const char *builder)
{
	static char buf[256];
	snprintf(buf, sizeof buf, "{\"builder_name\":\"%s\"}", builder);
	return buf;
}

static void put_req(Reactor__Buckets__V1__PutRequest *req, const char *bucket, const char *p)
{
	reactor__buckets__v1__put_request__init(req);
	req->bucket = (char *)bucket;
	req->parameters_json = (char *)p;
}

static int put(struct got *g, const char *bucket, const char *builder, int64_t exp)
{
	Reactor__Buckets__V1__PutRequest req;
	put_req(&req, bucket, params(builder));
	req.lease_expiration_ts = exp;
	return bk_put(&req, "tester", on_res, g);
}

static int lease(struct got *g, int64_t id, int64_t exp, const char *leasee)
{
	Reactor__Buckets__V1__LeaseRequest req = REACTOR__BUCKETS__V1__LEASE_REQUEST__INIT;
	req.id = id;
	req.lease_expiration_ts = exp;
	req.leasee = (char *)leasee;
	return bk_lease(&req, on_res, g);
}

static int start(struct got *g, int64_t id, int64_t key, const char *url)
{
	Reactor__Buckets__V1__StartRequest req = REACTOR__BUCKETS__V1__START_REQUEST__INIT;
	req.id = id;
	req.lease_key = key;
	req.url = (char *)url;
	return bk_start(&req, on_res, g);
}

static int heartbeat(struct got *g, int64_t id, int64_t key, int64_t exp)
{
	Reactor__Buckets__V1__HeartbeatRequest req = REACTOR__BUCKETS__V1__HEARTBEAT_REQUEST__INIT;
	req.id = id;
	req.lease_key = key;
	req.lease_expiration_ts = exp;
	return bk_heartbeat(&req, on_res, g);
}

static int succeed(struct got *g, int64_t id, int64_t key, const char *details, const char *url,
		   const char *tag)
{
	Reactor__Buckets__V1__SucceedRequest req = REACTOR__BUCKETS__V1__SUCCEED_REQUEST__INIT;
	char *tags[1] = {(char *)tag};
	req.id = id;
	req.lease_key = key;
	req.result_details_json = (char *)details;
	req.url = (char *)url;
	req.n_new_tags = tag ? 1 : 0;
	req.new_tags = tags;
	return bk_succeed(&req, on_res, g);
}

static int failb(struct got *g, int64_t id, int64_t key, int fr, const char *details)
{
	Reactor__Buckets__V1__FailRequest req = REACTOR__BUCKETS__V1__FAIL_REQUEST__INIT;
	req.id = id;
	req.lease_key = key;
	req.failure_reason = fr;
	req.result_details_json = (char *)details;
	return bk_fail(&req, on_res, g);
}

static int retry(struct got *g, int64_t id, const char *opid, int64_t exp)
{
	Reactor__Buckets__V1__RetryRequest req = REACTOR__BUCKETS__V1__RETRY_REQUEST__INIT;
	req.id = id;
	req.client_operation_id = (char *)opid;
	req.lease_expiration_ts = exp;
	return bk_retry(&req, "tester", on_res, g);
}

struct glist {
	int done, code, reason;
	char *msg, *cursor;
	int64_t ids[1100];
	int statuses[1100];
	size_t n;
};

static void on_list(struct bk_list *r, void *arg)
{
	struct glist *g = arg;
	g->done++;
	g->code = r->err;
	g->reason = r->reason;
	g->msg = r->message ? strdup(r->message) : NULL;
	g->cursor = strdup(r->next_cursor ? r->next_cursor : "");
	g->n = r->n;
	for (size_t i = 0; i < r->n && i < 1100; i++) {
		g->ids[i] = r->builds[i]->id;
		g->statuses[i] = r->builds[i]->status;
	}
}

static void peek(struct glist *g, char **buckets, size_t nb, int max, const char *cursor)
{
	Reactor__Buckets__V1__PeekRequest req = REACTOR__BUCKETS__V1__PEEK_REQUEST__INIT;
	req.buckets = buckets;
	req.n_buckets = nb;
	req.max_builds = max;
	req.start_cursor = (char *)(cursor ? cursor : "");
	memset(g, 0, sizeof *g);
	ck_assert_int_eq(bk_peek(&req, on_list, g), 0);
	ck_assert(run_until(&g->done, 1, 10000000));
}

static void search(struct glist *g, Reactor__Buckets__V1__SearchRequest *req)
{
	memset(g, 0, sizeof *g);
	ck_assert_int_eq(bk_search(req, on_list, g), 0);
	ck_assert(run_until(&g->done, 1, 10000000));
}

static void glist_free(struct glist *g)
{
	free(g->msg);
	free(g->cursor);
}

/* ---- invariants, read straight from Redis ---- */

static redisReply *sync_cmd(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(g_sync, fmt, ap);
	va_end(ap);
	ck_assert_ptr_nonnull(r);
	return r;
}

static bool member(const char *key, int64_t id)
{
	redisReply *r = sync_cmd("ZSCORE %s %" PRId64, key, id);
	bool in = r->type == REDIS_REPLY_STRING;
	freeReplyObject(r);
	return in;
}

static char *field(int64_t id, const char *f)
{
	redisReply *r = sync_cmd("HGET " BB "build:%" PRId64 " %s", id, f);
	char *s = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
	freeReplyObject(r);
	return s;
}

static bool has(int64_t id, const char *f)
{
	char *s = field(id, f);
	free(s);
	return s != NULL;
}

static bool field_is(int64_t id, const char *f, const char *want)
{
	char *s = field(id, f);
	bool eq = s && strcmp(s, want) == 0;
	free(s);
	return eq;
}

/* Everything the model promises about one build, and its index entries. */
static void check_inv(int64_t id)
{
	char *status = field(id, "status"), *bucket = field(id, "bucket");
	char *result = field(id, "result");
	ck_assert_msg(status && bucket, "build %" PRId64 " missing", id);
	bool completed = strcmp(status, "COMPLETED") == 0;
	bool leased = has(id, "lease_key");
	ck_assert_msg(completed == (result != NULL), "result set <=> COMPLETED (%s)", status);
	ck_assert(has(id, "failure_reason") == (result && strcmp(result, "FAILURE") == 0));
	ck_assert(has(id, "cancelation_reason") == (result && strcmp(result, "CANCELED") == 0));
	ck_assert(has(id, "completed_ts") == completed);
	if (completed)
		ck_assert_msg(!leased && !has(id, "lease_expiration_ts") && !has(id, "leasee"),
			      "a completed build is never leased");
	if (strcmp(status, "STARTED") == 0)
		ck_assert_msg(leased, "a STARTED build is leased");
	ck_assert(leased == has(id, "lease_expiration_ts"));
	char *lk = field(id, "lease_key");
	ck_assert(!lk || strcmp(lk, "0") != 0);
	free(lk);
	ck_assert(member(BB "leased", id) == leased);
	if (leased) {
		char *exp = field(id, "lease_expiration_ts");
		redisReply *r = sync_cmd("ZSCORE " BB "leased %" PRId64, id);
		ck_assert_int_eq(strtoll(r->str, NULL, 10), strtoll(exp, NULL, 10));
		freeReplyObject(r);
		free(exp);
	}
	char key[256];
	static const char *const sts[] = {"SCHEDULED", "STARTED", "COMPLETED"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(key, sizeof key, BB "bucket:%s:%s", bucket, sts[i]);
		ck_assert_msg(member(key, id) == (strcmp(status, sts[i]) == 0), "in %s", key);
	}
	snprintf(key, sizeof key, BB "bucket:%s:peek", bucket);
	ck_assert(member(key, id) == (strcmp(status, "SCHEDULED") == 0 && !leased));
	char *c = field(id, "created_ts"), *s = field(id, "status_changed_ts"),
	     *u = field(id, "updated_ts");
	ck_assert(strtoll(c, NULL, 10) <= strtoll(s, NULL, 10));
	ck_assert(strtoll(s, NULL, 10) <= strtoll(u, NULL, 10));
	ck_assert_int_eq(strtoll(c, NULL, 10), id / 1000);
	free(c), free(s), free(u);
	free(status), free(bucket), free(result);
}

/* ---- pure tests: validation ---- */

START_TEST(test_bucket_names)
{
	static const char *const good[] = {"a", "0", "master.tryserver.chromium.linux", "a-b_c.d",
					   "x9"};
	static const char *const bad[] = {"",	 "A",	"-a",  ".a", "_a",
					  "a b", "a/b", "a:b", "ä",  "a*"};
	for (size_t i = 0; i < ARRAY_LEN(good); i++)
		ck_assert_msg(bk_bucket_name_ok(good[i]), "%s", good[i]);
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		ck_assert_msg(!bk_bucket_name_ok(bad[i]), "%s", bad[i]);
	char n[128];
	memset(n, 'a', 101);
	n[101] = '\0';
	ck_assert(!bk_bucket_name_ok(n));
	n[100] = '\0';
	ck_assert(bk_bucket_name_ok(n));
}
END_TEST

START_TEST(test_tags)
{
	char *in[] = {"z:1", "a:2", "z:1", "builder:linux"};
	char **out, *err = NULL;
	size_t n;
	ck_assert_int_eq(bk_tags_normalize(in, 4, "linux", &out, &n, &err), 0);
	ck_assert_int_eq(n, 3);
	ck_assert_str_eq(out[0], "a:2");
	ck_assert_str_eq(out[1], "builder:linux");
	ck_assert_str_eq(out[2], "z:1");
	bk_strv_free(out, n);
	/* Builder tag added when absent. */
	ck_assert_int_eq(bk_tags_normalize(NULL, 0, "mac", &out, &n, &err), 0);
	ck_assert_int_eq(n, 1);
	ck_assert_str_eq(out[0], "builder:mac");
	bk_strv_free(out, n);

	char *nocolon[] = {"a:1", "oops"};
	ck_assert_int_eq(bk_tags_normalize(nocolon, 2, "x", &out, &n, &err), -EINVAL);
	ck_assert_msg(strstr(err, "tags[1]") && strstr(err, "oops"), "%s", err);
	free(err);
	char *disagree[] = {"builder:mac"};
	ck_assert_int_eq(bk_tags_normalize(disagree, 1, "linux", &out, &n, &err), -EINVAL);
	ck_assert_msg(strstr(err, "tags[0]") && strstr(err, "builder_name"), "%s", err);
	free(err);

	char *nt_ok[] = {"bot:1", "a:"};
	ck_assert_int_eq(bk_new_tags_check(nt_ok, 2, &err), 0);
	char *nt_bad[] = {"bot:1", "builder:x"};
	ck_assert_int_eq(bk_new_tags_check(nt_bad, 2, &err), -EINVAL);
	ck_assert_msg(strstr(err, "new_tags[1]"), "%s", err);
	free(err);
	char *nt_bad2[] = {"nocolon"};
	ck_assert_int_eq(bk_new_tags_check(nt_bad2, 1, &err), -EINVAL);
	ck_assert_msg(strstr(err, "new_tags[0]"), "%s", err);
	free(err);
}
END_TEST

static const struct {
	const char *json, *want; /* want NULL: valid */
} param_cases[] = {
	{"{\"builder_name\":\"b\"}", NULL},
	{"{\"builder_name\":\"b\",\"properties\":{\"a\":1},\"changes\":[]}", NULL},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"1\",\"revision\":\"r\",\"author\":"
	 "{\"email\":\"e@x\"},\"create_ts\":1500000000000000,\"files\":[{\"path\":\"a.c\"}],"
	 "\"message\":\"m\",\"branch\":\"main\",\"url\":\"u\",\"project\":\"p\"}],"
	 "\"other\":[1]}",
	 NULL},
	{"", "parameters_json: required"},
	{"[]", "parameters_json: must be a JSON object"},
	{"{\"builder_name\":\"b\",}", "parameters_json: invalid JSON: at byte"},
	{"{}", "parameters_json.builder_name: required"},
	{"{\"builder_name\":1}", "parameters_json.builder_name: must be a string"},
	{"{\"builder_name\":\"\"}", "parameters_json.builder_name: must not be empty"},
	{"{\"builder_name\":\"b\",\"properties\":[]}",
	 "parameters_json.properties: must be an object"},
	{"{\"builder_name\":\"b\",\"properties\":{\"buildbucket\":{}}}",
	 "parameters_json.properties.buildbucket: reserved"},
	{"{\"builder_name\":\"b\",\"changes\":{}}", "parameters_json.changes: must be a list"},
	{"{\"builder_name\":\"b\",\"changes\":[1]}",
	 "parameters_json.changes[0]: must be an object"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c7\"}]}",
	 "parameters_json.changes[0] (id \"c7\").author: required"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c7\",\"author\":{}}]}",
	 "parameters_json.changes[0] (id \"c7\").author.email: required"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c7\",\"author\":{\"email\":5}}]}",
	 "(id \"c7\").author.email: must be a string"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c7\",\"author\":\"x\"}]}",
	 "(id \"c7\").author: must be an object"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":7,\"author\":{\"email\":\"e\"}}]}",
	 "parameters_json.changes[0].id: must be a string"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"author\":{\"email\":\"e\"}},{\"id\":\"c8\","
	 "\"revision\":1,\"author\":{\"email\":\"e\"}}]}",
	 "parameters_json.changes[1] (id \"c8\").revision: must be a string"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c\",\"author\":{\"email\":\"e\"},"
	 "\"create_ts\":1.5}]}",
	 "(id \"c\").create_ts: must be a non-negative integer"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c\",\"author\":{\"email\":\"e\"},"
	 "\"create_ts\":\"1\"}]}",
	 "(id \"c\").create_ts: must be a non-negative integer"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c\",\"author\":{\"email\":\"e\"},"
	 "\"files\":\"a\"}]}",
	 "(id \"c\").files: must be a list"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c\",\"author\":{\"email\":\"e\"},"
	 "\"files\":[\"a\"]}]}",
	 "(id \"c\").files[0]: must be an object"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c\",\"author\":{\"email\":\"e\"},"
	 "\"files\":[{}]}]}",
	 "(id \"c\").files[0].path: required"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c\",\"author\":{\"email\":\"e\"},"
	 "\"files\":[{\"path\":3}]}]}",
	 "(id \"c\").files[0].path: must be a string"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c\",\"author\":{\"email\":\"e\"},"
	 "\"message\":[]}]}",
	 "(id \"c\").message: must be a string"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c\",\"author\":{\"email\":\"e\"},"
	 "\"branch\":null}]}",
	 "(id \"c\").branch: must be a string"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c\",\"author\":{\"email\":\"e\"},"
	 "\"url\":1}]}",
	 "(id \"c\").url: must be a string"},
	{"{\"builder_name\":\"b\",\"changes\":[{\"id\":\"c\",\"author\":{\"email\":\"e\"},"
	 "\"project\":{}}]}",
	 "(id \"c\").project: must be a string"},
};

START_TEST(test_params)
{
	struct bk_params p;
	char *err = NULL;
	int rc = bk_params_parse(param_cases[_i].json, &p, &err);
	if (!param_cases[_i].want) {
		ck_assert_msg(rc == 0, "%s: %s", param_cases[_i].json, err);
		ck_assert_str_eq(p.builder_name, "b");
		bk_params_free(&p);
		return;
	}
	ck_assert_msg(rc == -EINVAL, "accepted %s", param_cases[_i].json);
	ck_assert_msg(strstr(err, param_cases[_i].want), "%s: got \"%s\", want \"%s\"",
		      param_cases[_i].json, err, param_cases[_i].want);
	free(err);
}
END_TEST

START_TEST(test_params_changes)
{
	struct bk_params p;
	char *err = NULL;
	const char *j = "{\"builder_name\":\"b\",\"changes\":[{\"id\":\"1:x\",\"revision\":\"r1\","
			"\"author\":{\"email\":\"e\"}},{\"author\":{\"email\":\"e\"}},"
			"{\"id\":\"2\",\"author\":{\"email\":\"e\"}}]}";
	ck_assert_int_eq(bk_params_parse(j, &p, &err), 0);
	ck_assert_int_eq(p.n_changes, 2);
	ck_assert_str_eq(p.change_ids[0], "1:x");
	ck_assert_str_eq(p.change_revs[0], "r1");
	ck_assert_str_eq(p.change_ids[1], "2");
	ck_assert_str_eq(p.change_revs[1], "");
	bk_params_free(&p);
}
END_TEST

START_TEST(test_lease_keys)
{
	int64_t prev = 0;
	for (int i = 0; i < 1000; i++) {
		int64_t k = bk_lease_key_new();
		ck_assert_int_gt(k, 0);
		ck_assert_int_lt(k, 1LL << 53);
		ck_assert_int_ne(k, prev);
		prev = k;
	}
}
END_TEST

START_TEST(test_down_is_unavailable)
{
	/* The store is not started: operations that need Redis fail at once
	 * with ERR_STORE_DOWN and never call back; input errors are still
	 * answered, from the loop, after the call returned. */
	struct event_base *base = event_base_new();
	ck_assert_int_eq(bk_init(base), 0);
	struct got g = {0};
	ck_assert_int_eq(put(&g, "b", "x", 0), ERR_STORE_DOWN);
	ck_assert_int_eq(bk_get(5, on_res, &g), ERR_STORE_DOWN);
	ck_assert_int_eq(bk_cancel(5, on_res, &g), ERR_STORE_DOWN);
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(g.done, 0);
	/* Input errors come first, and after the call returned. */
	ck_assert_int_eq(put(&g, "BAD", "x", 0), 0);
	ck_assert_int_eq(g.done, 0);
	ck_assert(check_loop_until(base, &g.done, 1, 5000000));
	ck_assert_int_eq(g.code, 0);
	ck_assert_int_eq(g.reason, R(INVALID_INPUT));
	free(g.msg);
	memset(&g, 0, sizeof g);
	ck_assert_int_eq(bk_get(0, on_res, &g), 0);
	ck_assert_int_eq(g.done, 0);
	ck_assert(check_loop_until(base, &g.done, 1, 5000000));
	ck_assert_int_eq(g.reason, R(BUILD_NOT_FOUND));
	free(g.msg);
	event_base_free(base);
}
END_TEST

/* ---- Redis tests ---- */

START_TEST(test_lifecycle_success)
{
	int64_t t0 = now_us();
	BkBuild *b = OK(put(&g_, "ci", "linux", 0));
	int64_t id = b->id;
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(b->status, ST(SCHEDULED));
	ck_assert_int_eq(b->lease_key, 0);
	ck_assert_str_eq(b->bucket, "ci");
	ck_assert_str_eq(b->created_by, "tester");
	ck_assert_int_eq(b->n_tags, 1);
	ck_assert_str_eq(b->tags[0], "builder:linux");
	ck_assert_int_ge(b->created_ts, t0 - 1000000);
	ck_assert_int_eq(b->created_ts, b->updated_ts);
	ck_assert_int_eq(b->created_ts, b->status_changed_ts);
	bk_build_free(b);
	check_inv(id);

	b = OK(lease(&g_, id, 0, "master-1"));
	int64_t key = b->lease_key;
	ck_assert_int_gt(key, 0);
	ck_assert_str_eq(b->leasee, "master-1");
	/* 0 means one minute from now. */
	ck_assert_int_ge(b->lease_expiration_ts, b->utcnow_ts + 59000000);
	ck_assert_int_le(b->lease_expiration_ts, b->utcnow_ts + 61000000);
	ck_assert_int_eq(b->status, ST(SCHEDULED));
	bk_build_free(b);
	check_inv(id);

	b = OK(start(&g_, id, key, "http://ci/1"));
	ck_assert_int_eq(b->status, ST(STARTED));
	ck_assert_int_eq(b->lease_key, 0); /* only Put/Retry/Lease carry it */
	ck_assert_str_eq(b->url, "http://ci/1");
	int64_t started = b->started_ts;
	ck_assert_int_gt(started, 0);
	ck_assert_int_eq(b->status_changed_ts, started);
	bk_build_free(b);
	check_inv(id);
	/* Idempotent; an empty url keeps the url. */
	b = OK(start(&g_, id, key, ""));
	ck_assert_int_eq(b->status, ST(STARTED));
	ck_assert_int_eq(b->started_ts, started);
	ck_assert_str_eq(b->url, "http://ci/1");
	bk_build_free(b);

	int64_t exp = now_us() + 3600LL * 1000000;
	b = OK(heartbeat(&g_, id, key, exp));
	ck_assert_int_eq(b->lease_expiration_ts, exp);
	bk_build_free(b);
	check_inv(id);

	b = OK(succeed(&g_, id, key, "{\"properties\":{}}", "", "bot_id:b1"));
	ck_assert_int_eq(b->status, ST(COMPLETED));
	ck_assert_int_eq(b->result, RES(SUCCESS));
	ck_assert_int_eq(b->lease_expiration_ts, 0);
	ck_assert_str_eq(b->leasee, "");
	ck_assert_str_eq(b->url, "http://ci/1");
	ck_assert_str_eq(b->result_details_json, "{\"properties\":{}}");
	ck_assert_int_gt(b->completed_ts, 0);
	ck_assert_int_eq(b->n_tags, 2);
	ck_assert_str_eq(b->tags[0], "bot_id:b1");
	ck_assert_str_eq(b->tags[1], "builder:linux");
	int64_t upd = b->updated_ts;
	bk_build_free(b);
	check_inv(id);
	ck_assert(member(BB "tag:bot_id:b1", id));

	/* The same call again: returned unchanged, new_tags ignored. */
	b = OK(succeed(&g_, id, key, "{\"properties\":{}}", "", "other:tag"));
	ck_assert_int_eq(b->updated_ts, upd);
	ck_assert_int_eq(b->n_tags, 2);
	bk_build_free(b);
	b = OK(succeed(&g_, id, 0, "{\"properties\":{}}", "http://ci/1", NULL));
	bk_build_free(b);
	/* Anything else on the completed build. */
	ERR(succeed(&g_, id, key, "{\"x\":1}", "", NULL), R(BUILD_IS_COMPLETED), "completed");
	ERR(succeed(&g_, id, key, "{\"properties\":{}}", "http://other", NULL),
	    R(BUILD_IS_COMPLETED), "completed");
	ERR(failb(&g_, id, key, 0, "{\"properties\":{}}"), R(BUILD_IS_COMPLETED), "completed");
	ERR(start(&g_, id, key, ""), R(BUILD_IS_COMPLETED), "completed");
	ERR(heartbeat(&g_, id, key, exp), R(BUILD_IS_COMPLETED), "completed");
	ERR(bk_cancel(id, on_res, &g_), R(BUILD_IS_COMPLETED), "completed");
	ERR(bk_reset(id, on_res, &g_), R(BUILD_IS_COMPLETED), "completed");
	ERR(lease(&g_, id, 0, ""), R(CANNOT_LEASE_BUILD), "COMPLETED");
	check_inv(id);

	b = OK(bk_get(id, on_res, &g_));
	ck_assert_int_eq(b->status, ST(COMPLETED));
	ck_assert_int_eq(b->lease_key, 0);
	ck_assert_int_eq(b->started_ts, started);
	bk_build_free(b);
	ERR(bk_get(id + 1, on_res, &g_), R(BUILD_NOT_FOUND), "not found");
	ERR(bk_get(0, on_res, &g_), R(BUILD_NOT_FOUND), "not found");
}
END_TEST

START_TEST(test_fail_and_reasons)
{
	BkBuild *b = OK(put(&g_, "ci", "x", 0));
	int64_t id = b->id;
	bk_build_free(b);
	b = OK(lease(&g_, id, 0, ""));
	int64_t key = b->lease_key;
	ck_assert_str_eq(b->leasee, "");
	bk_build_free(b);
	/* Fail straight from a leased SCHEDULED build; default reason. */
	b = OK(failb(&g_, id, key, 0, ""));
	ck_assert_int_eq(b->status, ST(COMPLETED));
	ck_assert_int_eq(b->result, RES(FAILURE));
	ck_assert_int_eq(b->failure_reason, FR(BUILD_FAILURE));
	ck_assert_int_eq(b->started_ts, 0);
	bk_build_free(b);
	check_inv(id);
	b = OK(failb(&g_, id, key, FR(BUILD_FAILURE), ""));
	bk_build_free(b);
	ERR(failb(&g_, id, key, FR(INFRA_FAILURE), ""), R(BUILD_IS_COMPLETED), "completed");
	ERR(succeed(&g_, id, key, "", "", NULL), R(BUILD_IS_COMPLETED), "completed");

	b = OK(put(&g_, "ci", "x", 0));
	id = b->id;
	bk_build_free(b);
	b = OK(lease(&g_, id, 0, ""));
	key = b->lease_key;
	bk_build_free(b);
	b = OK(start(&g_, id, key, "u"));
	bk_build_free(b);
	/* Bad input on a live lease: nothing changes. */
	ERR(failb(&g_, id, key, 99, ""), R(INVALID_INPUT), "failure_reason");
	ERR(failb(&g_, id, key, FR(INFRA_FAILURE), "[1]"), R(INVALID_INPUT),
	    "result_details_json: must be a JSON object");
	ERR(failb(&g_, id, key, FR(INFRA_FAILURE), "{"), R(INVALID_INPUT),
	    "result_details_json: invalid JSON");
	check_inv(id);
	ck_assert(field_is(id, "status", "STARTED"));
	b = OK(failb(&g_, id, key, FR(INFRA_FAILURE), "{\"e\":1}"));
	ck_assert_int_eq(b->failure_reason, FR(INFRA_FAILURE));
	ck_assert_int_gt(b->started_ts, 0);
	bk_build_free(b);
	check_inv(id);
}
END_TEST

START_TEST(test_cancel_and_reset)
{
	BkBuild *b = OK(put(&g_, "ci", "x", 0));
	int64_t id = b->id;
	bk_build_free(b);
	/* Reset of an unleased SCHEDULED build returns it unchanged. */
	b = OK(bk_reset(id, on_res, &g_));
	ck_assert_int_eq(b->updated_ts, b->created_ts);
	bk_build_free(b);
	b = OK(lease(&g_, id, 0, "m"));
	int64_t key = b->lease_key;
	bk_build_free(b);
	b = OK(start(&g_, id, key, "http://u"));
	bk_build_free(b);
	b = OK(bk_reset(id, on_res, &g_));
	ck_assert_int_eq(b->status, ST(SCHEDULED));
	ck_assert_str_eq(b->url, "");
	ck_assert_int_eq(b->lease_expiration_ts, 0);
	ck_assert_str_eq(b->leasee, "");
	ck_assert_int_eq(b->started_ts, 0);
	ck_assert_int_eq(b->status_changed_ts, b->updated_ts);
	bk_build_free(b);
	check_inv(id);
	ERR(start(&g_, id, key, ""), R(LEASE_EXPIRED), "incorrect");
	/* A new lease gets a new key; reset of a leased SCHEDULED build. */
	b = OK(lease(&g_, id, 0, ""));
	ck_assert_int_ne(b->lease_key, key);
	key = b->lease_key;
	bk_build_free(b);
	b = OK(bk_reset(id, on_res, &g_));
	ck_assert_int_eq(b->status, ST(SCHEDULED));
	bk_build_free(b);
	check_inv(id);

	b = OK(lease(&g_, id, 0, ""));
	key = b->lease_key;
	bk_build_free(b);
	b = OK(start(&g_, id, key, ""));
	bk_build_free(b);
	b = OK(bk_cancel(id, on_res, &g_));
	ck_assert_int_eq(b->status, ST(COMPLETED));
	ck_assert_int_eq(b->result, RES(CANCELED));
	ck_assert_int_eq(b->cancelation_reason, CR(CANCELED_EXPLICITLY));
	ck_assert_int_eq(b->lease_expiration_ts, 0);
	int64_t upd = b->updated_ts;
	bk_build_free(b);
	check_inv(id);
	/* Cancelling a cancelled build returns it. */
	b = OK(bk_cancel(id, on_res, &g_));
	ck_assert_int_eq(b->updated_ts, upd);
	bk_build_free(b);
	ERR(succeed(&g_, id, key, "", "", NULL), R(BUILD_IS_COMPLETED), "completed");
	ERR(bk_cancel(424242, on_res, &g_), R(BUILD_NOT_FOUND), "424242");
	ERR(bk_reset(424242, on_res, &g_), R(BUILD_NOT_FOUND), "424242");
}
END_TEST

START_TEST(test_key_check_order)
{
	int64_t far = now_us() + 600LL * 1000000;
	/* Unknown id first, whatever the key. */
	ERR(start(&g_, 77, 0, ""), R(BUILD_NOT_FOUND), "77");
	ERR(heartbeat(&g_, 77, 0, 0), R(BUILD_NOT_FOUND), "77");
	ERR(succeed(&g_, 77, 0, "", "", "builder:x"), R(BUILD_NOT_FOUND), "77");
	ERR(failb(&g_, 77, 0, 0, "{"), R(BUILD_NOT_FOUND), "77");

	BkBuild *b = OK(put(&g_, "ci", "x", 0));
	int64_t id = b->id;
	bk_build_free(b);
	/* Not leased: key missing, then not current. */
	ERR(start(&g_, id, 0, ""), R(INVALID_INPUT), "lease_key is required");
	ERR(start(&g_, id, 5, ""), R(LEASE_EXPIRED), "incorrect");
	ERR(heartbeat(&g_, id, 5, far), R(LEASE_EXPIRED), "incorrect");
	ERR(succeed(&g_, id, 5, "", "", NULL), R(LEASE_EXPIRED), "incorrect");
	b = OK(lease(&g_, id, 0, ""));
	int64_t key = b->lease_key;
	bk_build_free(b);
	ERR(start(&g_, id, 0, ""), R(INVALID_INPUT), "lease_key is required");
	ERR(start(&g_, id, key + 1, ""), R(LEASE_EXPIRED), "incorrect");
	ERR(heartbeat(&g_, id, 0, far), R(INVALID_INPUT), "lease_key is required");
	ERR(heartbeat(&g_, id, key ^ 1, far), R(LEASE_EXPIRED), "incorrect");
	ERR(failb(&g_, id, 0, 0, ""), R(INVALID_INPUT), "lease_key is required");
	ERR(succeed(&g_, id, key + 1, "", "", "builder:x"), R(LEASE_EXPIRED), "incorrect");
	/* Then the input of the call itself. */
	ERR(succeed(&g_, id, key, "", "", "builder:x"), R(INVALID_INPUT), "new_tags[0]");
	ERR(succeed(&g_, id, key, "", "", "nocolon"), R(INVALID_INPUT), "new_tags[0]");
	ERR(heartbeat(&g_, id, key, 0), R(INVALID_INPUT), "lease_expiration_ts is required");
	ERR(heartbeat(&g_, id, key, now_us() - 1000000), R(INVALID_INPUT), "in the past");
	ERR(heartbeat(&g_, id, key, now_us() + 3LL * 3600 * 1000000), R(INVALID_INPUT), "2 hours");
	check_inv(id);
	ck_assert(field_is(id, "status", "SCHEDULED"));
	/* Completed comes before the key. */
	b = OK(bk_cancel(id, on_res, &g_));
	bk_build_free(b);
	ERR(start(&g_, id, 0, ""), R(BUILD_IS_COMPLETED), "completed");
	ERR(heartbeat(&g_, id, 0, 0), R(BUILD_IS_COMPLETED), "completed");
	ERR(succeed(&g_, id, 0, "", "", NULL), R(BUILD_IS_COMPLETED), "completed");
}
END_TEST

START_TEST(test_lease_rules)
{
	int64_t now = now_us();
	BkBuild *b = OK(put(&g_, "ci", "x", 0));
	int64_t id = b->id;
	bk_build_free(b);
	ERR(lease(&g_, id, now - 1000000, ""), R(INVALID_INPUT), "in the past");
	ERR(lease(&g_, id, now + 2LL * 3600 * 1000000 + 60000000, ""), R(INVALID_INPUT), "2 hours");
	ERR(lease(&g_, 999, 0, ""), R(BUILD_NOT_FOUND), "999");
	check_inv(id);
	ck_assert(!has(id, "lease_key"));
	int64_t exp = now + 7000LL * 1000000;
	b = OK(lease(&g_, id, exp, "m1"));
	ck_assert_int_eq(b->lease_expiration_ts, exp);
	int64_t key = b->lease_key;
	bk_build_free(b);
	ERR(lease(&g_, id, 0, "m2"), R(CANNOT_LEASE_BUILD), "already leased");
	b = OK(start(&g_, id, key, ""));
	bk_build_free(b);
	ERR(lease(&g_, id, 0, "m2"), R(CANNOT_LEASE_BUILD), "already leased");
	ck_assert(field_is(id, "leasee", "m1"));
	check_inv(id);

	/* Put may create the build leased. */
	Reactor__Buckets__V1__PutRequest req;
	put_req(&req, "ci", params("x"));
	req.lease_expiration_ts = now + 120LL * 1000000;
	req.leasee = "m3";
	struct got g = {0};
	ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
	b = ok_build(wait_got(&g));
	ck_assert_int_gt(b->lease_key, 0);
	ck_assert_str_eq(b->leasee, "m3");
	ck_assert_int_eq(b->lease_expiration_ts, req.lease_expiration_ts);
	int64_t id2 = b->id;
	key = b->lease_key;
	bk_build_free(b);
	check_inv(id2);
	b = OK(start(&g_, id2, key, ""));
	bk_build_free(b);
	req.lease_expiration_ts = now - 5;
	memset(&g, 0, sizeof g);
	ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
	expect_err(wait_got(&g), R(INVALID_INPUT), "in the past");
}
END_TEST

START_TEST(test_many_tags_and_utf8)
{
	/* More script arguments than fit the inline argument array. */
	char *tags[200], buf[200][16];
	for (int i = 0; i < 200; i++) {
		snprintf(buf[i], sizeof buf[i], "t%03d:v", 199 - i);
		tags[i] = buf[i];
	}
	Reactor__Buckets__V1__PutRequest req;
	put_req(&req, "ci", params("x"));
	req.tags = tags;
	req.n_tags = 200;
	struct got g = {0};
	/* Tags per build are capped (buckets.max-tags): one over is refused,
	 * naming the limit; at the limit the build is made. */
	struct bk_config bc = {60LL * 1000000, 2LL * 86400 * 1000000, 0, 200};
	bk_configure(&bc);
	ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
	expect_err(wait_got(&g), R(INVALID_INPUT),
		   "201 tags (with builder:NAME), over the limit of 200 per build (config "
		   "buckets.max-tags)");
	bc.max_tags = 201;
	bk_configure(&bc);
	memset(&g, 0, sizeof g);
	ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
	BkBuild *b = ok_build(wait_got(&g));
	ck_assert_int_eq(b->n_tags, 201);
	ck_assert_str_eq(b->tags[0], "builder:x");
	ck_assert_str_eq(b->tags[1], "t000:v");
	ck_assert_str_eq(b->tags[200], "t199:v");
	int64_t id = b->id;
	bk_build_free(b);
	ck_assert(member(BB "tag:t123:v", id));
	check_inv(id);
	/* Strings that go back to clients must be UTF-8. */
	char *bad[] = {"ok:1", "k:\xff"};
	req.tags = bad;
	req.n_tags = 2;
	memset(&g, 0, sizeof g);
	ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
	expect_err(wait_got(&g), R(INVALID_INPUT), "tags[1]: not valid UTF-8");
	req.n_tags = 0;
	req.leasee = "\xc3(";
	memset(&g, 0, sizeof g);
	ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
	expect_err(wait_got(&g), R(INVALID_INPUT), "leasee: not valid UTF-8");
	ERR(lease(&g_, id, 0, "\xed\xa0\x80"), R(INVALID_INPUT), "leasee");
	b = OK(lease(&g_, id, 0, "caf\xc3\xa9"));
	int64_t key = b->lease_key;
	ck_assert_str_eq(b->leasee, "caf\xc3\xa9");
	bk_build_free(b);
	ERR(start(&g_, id, key, "\x80"), R(INVALID_INPUT), "url");
	ERR(succeed(&g_, id, key, "", "\x80", NULL), R(INVALID_INPUT), "url");
	ERR(succeed(&g_, id, key, "", "", "a:\x80"), R(INVALID_INPUT), "new_tags[0]");
	check_inv(id);
}
END_TEST

static void count_cb(int err, long n, void *arg)
{
	long *p = arg;
	ck_assert_int_eq(err, 0);
	p[0] = n;
	p[1]++;
}

static long sweep(bool timeout)
{
	long res[2] = {0, 0};
	if (timeout)
		ck_assert_int_eq(bk_timeout_pass(1000, count_cb, res), 0);
	else
		ck_assert_int_eq(bk_expire_pass(1000, count_cb, res), 0);
	for (int64_t end = mono_us() + 5000000; res[1] == 0 && mono_us() < end;)
		event_base_loop(g_base, EVLOOP_ONCE);
	ck_assert_int_eq(res[1], 1);
	return res[0];
}

START_TEST(test_expiry)
{
	BkBuild *b = OK(put(&g_, "ci", "x", 0));
	int64_t id = b->id;
	bk_build_free(b);
	b = OK(lease(&g_, id, now_us() + 200000, "m"));
	int64_t key = b->lease_key;
	bk_build_free(b);
	b = OK(start(&g_, id, key, "http://u"));
	bk_build_free(b);
	usleep(300000);
	/* Expired, but no pass yet: the right key still works. */
	b = OK(heartbeat(&g_, id, key, now_us() + 200000));
	bk_build_free(b);
	ck_assert_int_eq(sweep(false), 0);
	ck_assert(field_is(id, "status", "STARTED"));
	usleep(300000);
	ck_assert_int_eq(sweep(false), 1);
	check_inv(id);
	b = OK(bk_get(id, on_res, &g_));
	ck_assert_int_eq(b->status, ST(SCHEDULED));
	ck_assert_int_eq(b->lease_expiration_ts, 0);
	ck_assert_str_eq(b->url, "");
	ck_assert_str_eq(b->leasee, "");
	ck_assert_int_eq(b->started_ts, 0);
	bk_build_free(b);
	ERR(heartbeat(&g_, id, key, now_us() + 60000000), R(LEASE_EXPIRED), "incorrect");
	ERR(start(&g_, id, key, ""), R(LEASE_EXPIRED), "incorrect");
	/* Peekable again; another lease gets a new key. */
	char *bk[] = {"ci"};
	struct glist l;
	peek(&l, bk, 1, 0, NULL);
	ck_assert_int_eq(l.n, 1);
	ck_assert_int_eq(l.ids[0], id);
	glist_free(&l);
	b = OK(lease(&g_, id, 0, "m2"));
	ck_assert_int_ne(b->lease_key, key);
	bk_build_free(b);
	check_inv(id);
	ck_assert_int_eq(sweep(false), 0);
}
END_TEST

START_TEST(test_build_timeout)
{
	struct bk_config bc = {.op_ttl_us = 60LL * 1000000, .build_timeout_us = 300000};
	bk_configure(&bc);
	BkBuild *b = OK(put(&g_, "ci", "x", 0));
	int64_t a = b->id;
	bk_build_free(b);
	b = OK(put(&g_, "ci", "x", now_us() + 60000000));
	int64_t leased = b->id, key = b->lease_key;
	bk_build_free(b);
	b = OK(start(&g_, leased, key, ""));
	bk_build_free(b);
	b = OK(put(&g_, "other", "x", 0));
	int64_t other = b->id;
	bk_build_free(b);
	b = OK(put(&g_, "ci", "x", 0));
	int64_t done = b->id;
	bk_build_free(b);
	b = OK(bk_cancel(done, on_res, &g_));
	bk_build_free(b);
	ck_assert_int_eq(sweep(true), 0);
	usleep(400000);
	b = OK(put(&g_, "ci", "x", 0));
	int64_t young = b->id;
	bk_build_free(b);
	ck_assert_int_eq(sweep(true), 3);
	ck_assert_int_eq(sweep(true), 0);
	int64_t ids[] = {a, leased, other};
	for (size_t i = 0; i < 3; i++) {
		b = OK(bk_get(ids[i], on_res, &g_));
		ck_assert_int_eq(b->status, ST(COMPLETED));
		ck_assert_int_eq(b->result, RES(CANCELED));
		ck_assert_int_eq(b->cancelation_reason, CR(TIMEOUT));
		ck_assert_int_eq(b->lease_expiration_ts, 0);
		bk_build_free(b);
		check_inv(ids[i]);
	}
	ck_assert(field_is(done, "cancelation_reason", "CANCELED_EXPLICITLY"));
	ck_assert(field_is(young, "status", "SCHEDULED"));
	check_inv(young);
}
END_TEST

START_TEST(test_ids)
{
	int64_t prev = 0, prev_ts = 0;
	for (int i = 0; i < 300; i++) {
		BkBuild *b = OK(put(&g_, i % 2 ? "a" : "b", "x", 0));
		char s[32];
		snprintf(s, sizeof s, "%" PRId64, b->id);
		ck_assert_int_eq(strlen(s), 19);
		ck_assert_int_gt(b->id, prev);
		ck_assert_int_ge(b->created_ts, prev_ts);
		ck_assert_int_eq(b->created_ts, b->id / 1000);
		prev = b->id;
		prev_ts = b->created_ts;
		bk_build_free(b);
	}
	/* Ids keep increasing even if the recorded clock is ahead of TIME. */
	redisReply *r =
		sync_cmd("HSET " BB "idgen us %" PRId64 " seq 5", now_us() + 10LL * 1000000);
	freeReplyObject(r);
	BkBuild *b = OK(put(&g_, "a", "x", 0));
	ck_assert_int_gt(b->id, prev);
	ck_assert_int_eq(b->id % 1000, 6);
	bk_build_free(b);
}
END_TEST

START_TEST(test_client_operation_id)
{
	Reactor__Buckets__V1__PutRequest req;
	put_req(&req, "ci", params("x"));
	req.client_operation_id = "op-1";
	req.lease_expiration_ts = now_us() + 60000000;
	struct got g = {0};
	ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
	BkBuild *b = ok_build(wait_got(&g));
	int64_t id = b->id, key = b->lease_key;
	ck_assert_int_gt(key, 0);
	bk_build_free(b);
	/* Whatever else the repeat says, even invalid input. */
	const char *variants[] = {"{\"builder_name\":\"y\"}", "not json"};
	for (size_t i = 0; i < 2; i++) {
		req.parameters_json = (char *)variants[i];
		req.lease_expiration_ts = 0;
		memset(&g, 0, sizeof g);
		ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
		b = ok_build(wait_got(&g));
		ck_assert_int_eq(b->id, id);
		ck_assert_int_eq(b->lease_key, key);
		bk_build_free(b);
	}
	/* Scope is the bucket. */
	req.bucket = "other";
	req.parameters_json = (char *)params("x");
	memset(&g, 0, sizeof g);
	ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
	b = ok_build(wait_got(&g));
	ck_assert_int_ne(b->id, id);
	ck_assert_int_eq(b->lease_key, 0);
	bk_build_free(b);
	/* A fresh id with invalid input is an error, and writes nothing. */
	req.client_operation_id = "op-2";
	req.parameters_json = "{}";
	memset(&g, 0, sizeof g);
	ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
	expect_err(wait_got(&g), R(INVALID_INPUT), "builder_name");
	redisReply *r = sync_cmd("EXISTS " BB "op:other:op-2");
	ck_assert_int_eq(r->integer, 0);
	freeReplyObject(r);
	r = sync_cmd("PTTL " BB "op:ci:op-1");
	ck_assert_int_gt(r->integer, 50000);
	ck_assert_int_le(r->integer, 60000);
	freeReplyObject(r);

	/* Retry shares the space: scope is the original's bucket. */
	b = OK(bk_cancel(id, on_res, &g_));
	bk_build_free(b);
	b = OK(retry(&g_, id, "op-r", 0));
	int64_t rid = b->id;
	ck_assert_int_eq(b->retry_of, id);
	bk_build_free(b);
	b = OK(retry(&g_, id, "op-r", now_us() + 60000000));
	ck_assert_int_eq(b->id, rid);
	ck_assert_int_eq(b->lease_key, 0);
	bk_build_free(b);
	b = OK(retry(&g_, id, "op-1", 0));
	ck_assert_int_eq(b->id, id);
	bk_build_free(b);
}
END_TEST

START_TEST(test_retry)
{
	const char *p = "{\"builder_name\":\"x\",\"changes\":[{\"id\":\"1:2\",\"revision\":\"ab%\","
			"\"author\":{\"email\":\"e\"}}]}";
	Reactor__Buckets__V1__PutRequest req;
	char *tags[] = {"buildset:bs1", "k:v"};
	put_req(&req, "ci", p);
	req.tags = tags;
	req.n_tags = 2;
	struct got g = {0};
	ck_assert_int_eq(bk_put(&req, "tester", on_res, &g), 0);
	BkBuild *b = ok_build(wait_got(&g));
	int64_t id = b->id;
	ck_assert_int_eq(b->n_tags, 3);
	bk_build_free(b);
	ck_assert(member(BB "change:1%3A2:ab%25", id));
	ERR(retry(&g_, id, "", 0), R(INVALID_BUILD_STATE), "completed");
	ERR(retry(&g_, 5, "", 0), R(BUILD_NOT_FOUND), "5");
	b = OK(lease(&g_, id, 0, ""));
	int64_t key = b->lease_key;
	bk_build_free(b);
	ERR(retry(&g_, id, "", 0), R(INVALID_BUILD_STATE), "SCHEDULED");
	b = OK(failb(&g_, id, key, FR(INFRA_FAILURE), ""));
	bk_build_free(b);
	ERR(retry(&g_, id, "", now_us() - 1), R(INVALID_INPUT), "in the past");
	b = OK(retry(&g_, id, "", now_us() + 60000000));
	ck_assert_int_gt(b->id, id);
	ck_assert_int_eq(b->retry_of, id);
	ck_assert_int_gt(b->lease_key, 0);
	ck_assert_str_eq(b->bucket, "ci");
	ck_assert_str_eq(b->parameters_json, p);
	ck_assert_int_eq(b->n_tags, 3);
	ck_assert_str_eq(b->tags[0], "builder:x");
	ck_assert_str_eq(b->tags[1], "buildset:bs1");
	ck_assert_str_eq(b->tags[2], "k:v");
	ck_assert_int_eq(b->status, ST(SCHEDULED));
	int64_t rid = b->id;
	bk_build_free(b);
	check_inv(rid);
	ck_assert(member(BB "change:1%3A2:ab%25", rid));
	ck_assert(member(BB "tag:buildset:bs1", rid));
}
END_TEST

START_TEST(test_retry_keeps_put_tags)
{
	BkBuild *b = OK(put(&g_, "ci", "x", now_us() + 60000000));
	int64_t id = b->id, key = b->lease_key;
	bk_build_free(b);
	b = OK(succeed(&g_, id, key, "", "", "bot:7"));
	ck_assert_int_eq(b->n_tags, 2);
	bk_build_free(b);
	b = OK(retry(&g_, id, "", 0));
	ck_assert_int_eq(b->n_tags, 1);
	ck_assert_str_eq(b->tags[0], "builder:x");
	ck_assert_int_eq(b->lease_key, 0);
	bk_build_free(b);
}
END_TEST

START_TEST(test_peek)
{
	int64_t ids[30];
	const char *bk[] = {"a", "b", "c"};
	for (int i = 0; i < 30; i++) {
		BkBuild *b = OK(put(&g_, bk[i % 3], "x", 0));
		ids[i] = b->id;
		bk_build_free(b);
	}
	/* Lease every 4th; complete one. */
	for (int i = 0; i < 30; i += 4) {
		BkBuild *b = OK(lease(&g_, ids[i], 0, ""));
		bk_build_free(b);
	}
	BkBuild *b = OK(bk_cancel(ids[1], on_res, &g_));
	bk_build_free(b);
	char *want_b[] = {"a", "b", "a"}; /* duplicates ignored */
	int64_t expect[30];
	size_t ne = 0;
	for (int i = 0; i < 30; i++)
		if (i % 3 != 2 && i % 4 != 0 && i != 1)
			expect[ne++] = ids[i];
	struct glist l;
	char *cursor = NULL;
	size_t got = 0;
	for (int page = 0; page < 10; page++) {
		peek(&l, want_b, 3, 4, cursor);
		ck_assert_int_eq(l.code, 0);
		ck_assert_int_eq(l.reason, 0);
		for (size_t i = 0; i < l.n; i++) {
			ck_assert_int_lt(got, ne);
			ck_assert_int_eq(l.ids[i], expect[got]);
			ck_assert_int_eq(l.statuses[i], ST(SCHEDULED));
			got++;
		}
		free(cursor);
		cursor = strdup(l.cursor);
		glist_free(&l);
		if (!*cursor)
			break;
		ck_assert_int_eq(l.n, 4);
	}
	free(cursor);
	ck_assert_int_eq(got, ne);
	/* Defaults and caps. */
	peek(&l, want_b, 2, 0, NULL);
	ck_assert_int_eq(l.n, 10);
	ck_assert_str_ne(l.cursor, "");
	glist_free(&l);
	peek(&l, want_b, 2, 1000, NULL);
	ck_assert_int_eq(l.n, ne);
	ck_assert_str_eq(l.cursor, "");
	glist_free(&l);
	/* Errors. */
	peek(&l, NULL, 0, 0, NULL);
	ck_assert_int_eq(l.reason, R(INVALID_INPUT));
	ck_assert(strstr(l.msg, "buckets"));
	glist_free(&l);
	char *badb[] = {"a", "B!"};
	peek(&l, badb, 2, 0, NULL);
	ck_assert_int_eq(l.reason, R(INVALID_INPUT));
	ck_assert(strstr(l.msg, "buckets[1]"));
	glist_free(&l);
	peek(&l, want_b, 1, 0, "xyz");
	ck_assert_int_eq(l.reason, R(INVALID_INPUT));
	ck_assert(strstr(l.msg, "start_cursor"));
	glist_free(&l);
	char *none[] = {"nobody"};
	peek(&l, none, 1, 0, NULL);
	ck_assert_int_eq(l.reason, 0);
	ck_assert_int_eq(l.n, 0);
	glist_free(&l);
}
END_TEST

START_TEST(test_search)
{
	int64_t ids[12];
	for (int i = 0; i < 12; i++) {
		Reactor__Buckets__V1__PutRequest req;
		char tag[32], *tags[2] = {tag, "all:1"};
		snprintf(tag, sizeof tag, "mod:%d", i % 3);
		put_req(&req, i < 6 ? "s1" : "s2", params(i % 2 ? "odd" : "even"));
		req.tags = tags;
		req.n_tags = 2;
		struct got g = {0};
		ck_assert_int_eq(bk_put(&req, i == 11 ? "someone" : "tester", on_res, &g), 0);
		BkBuild *b = ok_build(wait_got(&g));
		ids[i] = b->id;
		bk_build_free(b);
	}
	/* 0 succeeds, 1 fails (infra), 2 cancelled, 3 leased+started. */
	BkBuild *b = OK(lease(&g_, ids[0], 0, ""));
	int64_t k0 = b->lease_key;
	bk_build_free(b);
	b = OK(succeed(&g_, ids[0], k0, "", "", NULL));
	bk_build_free(b);
	b = OK(lease(&g_, ids[1], 0, ""));
	int64_t k1 = b->lease_key;
	bk_build_free(b);
	b = OK(failb(&g_, ids[1], k1, FR(INFRA_FAILURE), ""));
	bk_build_free(b);
	b = OK(bk_cancel(ids[2], on_res, &g_));
	bk_build_free(b);
	b = OK(lease(&g_, ids[3], 0, ""));
	int64_t k3 = b->lease_key;
	bk_build_free(b);
	b = OK(start(&g_, ids[3], k3, ""));
	bk_build_free(b);
	b = OK(retry(&g_, ids[0], "", 0));
	int64_t rid = b->id;
	bk_build_free(b);

	Reactor__Buckets__V1__SearchRequest req = REACTOR__BUCKETS__V1__SEARCH_REQUEST__INIT;
	struct glist l;
	/* Everything, newest first. */
	search(&l, &req);
	ck_assert_int_eq(l.n, 13);
	ck_assert_int_eq(l.ids[0], rid);
	for (size_t i = 1; i < l.n; i++)
		ck_assert_int_eq(l.ids[i], ids[12 - i]);
	glist_free(&l);

	char *s1[] = {"s1"}, *t_mod0[] = {"mod:0"}, *t_both[] = {"mod:1", "builder:odd"};
#define CASE(setup, ...)                                                                           \
	do {                                                                                       \
		Reactor__Buckets__V1__SearchRequest r_ =                                           \
			REACTOR__BUCKETS__V1__SEARCH_REQUEST__INIT;                                \
		setup;                                                                             \
		int64_t w_[] = {__VA_ARGS__};                                                      \
		search(&l, &r_);                                                                   \
		ck_assert_msg(l.code == 0 && l.reason == 0, "%s", l.msg);                          \
		ck_assert_msg(l.n == ARRAY_LEN(w_) - 1, #setup ": %zu results", l.n);              \
		for (size_t i_ = 0; i_ < l.n; i_++)                                                \
			ck_assert_int_eq(l.ids[i_], w_[i_ + 1]);                                   \
		glist_free(&l);                                                                    \
	} while (0)
	CASE((r_.buckets = s1, r_.n_buckets = 1), 0, rid, ids[5], ids[4], ids[3], ids[2], ids[1],
	     ids[0]);
	CASE((r_.status = ST(COMPLETED)), 0, ids[2], ids[1], ids[0]);
	CASE((r_.status = ST(STARTED)), 0, ids[3]);
	CASE((r_.result = RES(FAILURE)), 0, ids[1]);
	CASE((r_.failure_reason = FR(INFRA_FAILURE)), 0, ids[1]);
	CASE((r_.cancelation_reason = CR(CANCELED_EXPLICITLY)), 0, ids[2]);
	CASE((r_.created_by = "someone"), 0, ids[11]);
	CASE((r_.retry_of = ids[0]), 0, rid);
	CASE((r_.tags = t_mod0, r_.n_tags = 1), 0, rid, ids[9], ids[6], ids[3], ids[0]);
	CASE((r_.tags = t_mod0, r_.n_tags = 1, r_.buckets = s1, r_.n_buckets = 1), 0, rid, ids[3],
	     ids[0]);
	CASE((r_.tags = t_both, r_.n_tags = 2), 0, ids[7], ids[1]);
	CASE((r_.tags = t_mod0, r_.n_tags = 1, r_.status = ST(SCHEDULED)), 0, rid, ids[9], ids[6]);
	CASE((r_.buckets = s1, r_.n_buckets = 1, r_.status = ST(SCHEDULED)), 0, rid, ids[5],
	     ids[4]);

	/* Paging without duplicates or gaps. */
	char *cursor = strdup("");
	size_t seen = 0;
	for (int page = 0; page < 10; page++) {
		Reactor__Buckets__V1__SearchRequest r = REACTOR__BUCKETS__V1__SEARCH_REQUEST__INIT;
		r.max_builds = 5;
		r.start_cursor = cursor;
		search(&l, &r);
		for (size_t i = 0; i < l.n; i++, seen++)
			ck_assert_int_eq(l.ids[i], seen == 0 ? rid : ids[12 - seen]);
		free(cursor);
		cursor = strdup(l.cursor);
		glist_free(&l);
		if (!*cursor)
			break;
	}
	free(cursor);
	ck_assert_int_eq(seen, 13);

	/* Errors. */
	char *badtag[] = {"nocolon"}, *badb[] = {"Bad"};
	Reactor__Buckets__V1__SearchRequest e = REACTOR__BUCKETS__V1__SEARCH_REQUEST__INIT;
	e.tags = badtag;
	e.n_tags = 1;
	search(&l, &e);
	ck_assert_int_eq(l.reason, R(INVALID_INPUT));
	ck_assert(strstr(l.msg, "tags[0]"));
	glist_free(&l);
	e = (Reactor__Buckets__V1__SearchRequest)REACTOR__BUCKETS__V1__SEARCH_REQUEST__INIT;
	e.buckets = badb;
	e.n_buckets = 1;
	search(&l, &e);
	ck_assert_int_eq(l.reason, R(INVALID_INPUT));
	glist_free(&l);
	e = (Reactor__Buckets__V1__SearchRequest)REACTOR__BUCKETS__V1__SEARCH_REQUEST__INIT;
	e.status = 42;
	search(&l, &e);
	ck_assert_int_eq(l.reason, R(INVALID_INPUT));
	ck_assert(strstr(l.msg, "status"));
	glist_free(&l);
}
END_TEST

struct events {
	int n;
	char last[8][512];
};

static void on_event(const char *channel, const char *msg, size_t len, void *arg)
{
	struct events *ev = arg;
	(void)channel;
	if (ev->n < 8)
		snprintf(ev->last[ev->n], sizeof ev->last[0], "%.*s", (int)len, msg);
	ev->n++;
}

START_TEST(test_events)
{
	/* A fresh store run so the subscription exists from the start. */
	store_stop();
	struct events ev = {0}, probe = {0};
	store_subscribe(BB "events:ev", on_event, &ev);
	store_subscribe(BB "probe", on_event, &probe);
	char *err = NULL;
	g_up = 0;
	store_on_state(on_state, NULL);
	ck_assert(store_start(g_base, g_cfg, &err) == 0);
	ck_assert(run_until(&g_up, 1, 5000000));
	for (int64_t end = mono_us() + 5000000; probe.n == 0 && mono_us() < end;) {
		if (store_command(NULL, NULL, "PUBLISH %s x", BB "probe") < 0)
			ck_abort_msg("publish failed");
		run_until(&probe.n, 1, 50000);
	}
	ck_assert_int_gt(probe.n, 0);
	BkBuild *b = OK(put(&g_, "ev", "x", 0));
	int64_t id = b->id;
	bk_build_free(b);
	b = OK(lease(&g_, id, 0, ""));
	int64_t key = b->lease_key;
	bk_build_free(b);
	b = OK(start(&g_, id, key, ""));
	bk_build_free(b);
	b = OK(succeed(&g_, id, key, "", "", NULL));
	bk_build_free(b);
	ck_assert(run_until(&ev.n, 4, 5000000));
	const char *want[] = {"\"event\":\"PUT\"", "\"event\":\"LEASE\"", "\"event\":\"START\"",
			      "\"event\":\"SUCCEED\""};
	char idq[40];
	snprintf(idq, sizeof idq, "\"build_id\":\"%" PRId64 "\"", id);
	for (int i = 0; i < 4; i++) {
		ck_assert_msg(strstr(ev.last[i], want[i]), "%s", ev.last[i]);
		ck_assert_msg(strstr(ev.last[i], idq), "%s", ev.last[i]);
		char e2[512];
		struct json *j = json_parse(ev.last[i], strlen(ev.last[i]), e2, sizeof e2);
		ck_assert_msg(j, "payload is not JSON: %s", e2);
		ck_assert(json_get(j, "updated_ts")->is_int);
		json_free(j);
	}
}
END_TEST

static void add_redis(Suite *s, TCase *tc, const char *name, const TTest *t)
{
	(void)s, (void)name;
	tcase_add_test(tc, t);
}

int main(void)
{
	Suite *s = suite_create("buckets");
	TCase *pure = tcase_create("pure");
	tcase_add_test(pure, test_bucket_names);
	tcase_add_test(pure, test_tags);
	tcase_add_loop_test(pure, test_params, 0, (int)ARRAY_LEN(param_cases));
	tcase_add_test(pure, test_params_changes);
	tcase_add_test(pure, test_lease_keys);
	tcase_add_test(pure, test_down_is_unavailable);
	suite_add_tcase(s, pure);

	TCase *tc = tcase_create("redis");
	tcase_add_unchecked_fixture(tc, redis_setup, redis_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	add_redis(s, tc, "lifecycle", test_lifecycle_success);
	add_redis(s, tc, "fail", test_fail_and_reasons);
	add_redis(s, tc, "cancel_reset", test_cancel_and_reset);
	add_redis(s, tc, "key_order", test_key_check_order);
	add_redis(s, tc, "lease", test_lease_rules);
	add_redis(s, tc, "expiry", test_expiry);
	add_redis(s, tc, "timeout", test_build_timeout);
	add_redis(s, tc, "ids", test_ids);
	add_redis(s, tc, "many_tags_utf8", test_many_tags_and_utf8);
	add_redis(s, tc, "opid", test_client_operation_id);
	add_redis(s, tc, "retry", test_retry);
	add_redis(s, tc, "retry_tags", test_retry_keeps_put_tags);
	add_redis(s, tc, "peek", test_peek);
	add_redis(s, tc, "search", test_search);
	add_redis(s, tc, "events", test_events);
	suite_add_tcase(s, tc);

	return check_run(s);
}
