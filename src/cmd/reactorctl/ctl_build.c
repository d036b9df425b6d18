/*
 * ctl_build.c - reactorctl's build commands over the Buckets API
 * (reactor.buckets.v1, proto/reactor/buckets/v1/buckets.proto): put, get,
 * ls (Search), cancel, watch (WatchBuilds) and log (the steps the master
 * records in a build's result details, their stdout/stderr read from the
 * CAS).  The API answers domain errors in band (BuildResponse.error):
 * they print "REASON: message" and exit 1 like a failed call.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/reactorctl/ctl.h"
#include "cmd/reactorctl/ctl_ops.h"
#include "core/json.h"
#include "core/util.h"
#include "reactor/buckets/v1/buckets.pb-c.h"

#define BK "/reactor.buckets.v1.Buckets/"

typedef Reactor__Buckets__V1__Build Build;

static const char *ename(const ProtobufCEnumDescriptor *d, int v)
{
	const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(d, v);
	return e ? e->name : "?";
}
#define STATUS(v)  ename(&reactor__buckets__v1__status__descriptor, (v))
#define RESULT(v)  ename(&reactor__buckets__v1__result__descriptor, (v))
#define FAILURE(v) ename(&reactor__buckets__v1__failure_reason__descriptor, (v))
#define CANCEL(v)  ename(&reactor__buckets__v1__cancelation_reason__descriptor, (v))

/* An in-band error: print it, exit 1. */
static int bk_error(const Reactor__Buckets__V1__Error *e)
{
	return ctl_err(CTL_FAIL, "%s: %s",
		       ename(&reactor__buckets__v1__error_reason__descriptor, e->reason),
		       e->message ? e->message : "");
}

/* The builder from parameters_json (malloc'd; "" when none). */
static char *builder_of(const Build *b)
{
	char err[128];
	struct json *j = b->parameters_json
				 ? json_parse(b->parameters_json, strlen(b->parameters_json), err,
					      sizeof err)
				 : NULL;
	const struct json *n = json_get(j, "builder_name");
	char *s = xstrdup(n && n->type == JSON_STRING ? n->str : "");
	json_free(j);
	return s;
}

/* "SUCCESS", "FAILURE (BUILD_FAILURE)", "" while not completed. */
static const char *outcome(char *buf, size_t n, const Build *b)
{
	buf[0] = '\0';
	if (b->status != REACTOR__BUCKETS__V1__STATUS__COMPLETED)
		return buf;
	if (b->result == REACTOR__BUCKETS__V1__RESULT__FAILURE && b->failure_reason)
		snprintf(buf, n, "FAILURE (%s)", FAILURE(b->failure_reason));
	else if (b->result == REACTOR__BUCKETS__V1__RESULT__CANCELED && b->cancelation_reason)
		snprintf(buf, n, "CANCELED (%s)", CANCEL(b->cancelation_reason));
	else
		snprintf(buf, n, "%s", RESULT(b->result));
	return buf;
}

static void build_json(struct ctl_json *j, const Build *b)
{
	char *builder = builder_of(b);
	ctl_json_obj(j);
	/* Build ids pass 2^53: a string, so that jq and JavaScript keep
	 * every digit (as the proto3 JSON mapping writes int64). */
	char idbuf[24];
	snprintf(idbuf, sizeof(idbuf), "%" PRId64, b->id);
	ctl_json_kstr(j, "id", idbuf);
	ctl_json_kstr(j, "bucket", b->bucket);
	ctl_json_kstr(j, "builder", builder);
	ctl_json_kstr(j, "status", STATUS(b->status));
	ctl_json_key(j, "result");
	if (b->status == REACTOR__BUCKETS__V1__STATUS__COMPLETED)
		ctl_json_str(j, RESULT(b->result));
	else
		ctl_json_null(j);
	if (b->failure_reason)
		ctl_json_kstr(j, "failure_reason", FAILURE(b->failure_reason));
	if (b->cancelation_reason)
		ctl_json_kstr(j, "cancelation_reason", CANCEL(b->cancelation_reason));
	ctl_json_key(j, "tags");
	ctl_json_arr(j);
	for (size_t i = 0; i < b->n_tags; i++)
		ctl_json_str(j, b->tags[i]);
	ctl_json_end(j);
	ctl_json_kstr(j, "parameters_json", b->parameters_json);
	ctl_json_kstr(j, "result_details_json", b->result_details_json);
	ctl_json_kstr(j, "url", b->url);
	ctl_json_kstr(j, "created_by", b->created_by);
	ctl_json_kstr(j, "leasee", b->leasee);
	ctl_json_kint(j, "created_ts", b->created_ts);
	ctl_json_kint(j, "started_ts", b->started_ts);
	ctl_json_kint(j, "completed_ts", b->completed_ts);
	ctl_json_kint(j, "updated_ts", b->updated_ts);
	ctl_json_kint(j, "lease_expiration_ts", b->lease_expiration_ts);
	ctl_json_end(j);
	free(builder);
}

static void build_print(struct ctl *c, const Build *b)
{
	char *builder = builder_of(b);
	char out[64];
	outcome(out, sizeof out, b);
	bool ok = b->result == REACTOR__BUCKETS__V1__RESULT__SUCCESS;
	printf("id:        %" PRId64 "\n", b->id);
	printf("bucket:    %s\n", b->bucket);
	printf("builder:   %s\n", builder);
	printf("status:    %s\n", STATUS(b->status));
	if (*out)
		printf("result:    %s%s%s\n", ctl_col(c, ok ? CTL_GREEN : CTL_RED), out,
		       ctl_col(c, CTL_RESET));
	for (size_t i = 0; i < b->n_tags; i++)
		printf("tag:       %s\n", b->tags[i]);
	printf("params:    %s\n", b->parameters_json ? b->parameters_json : "");
	printf("created:   %s by %s\n", ctl_ops_ago(b->created_ts),
	       b->created_by && *b->created_by ? b->created_by : "-");
	if (b->started_ts)
		printf("started:   %s\n", ctl_ops_ago(b->started_ts));
	if (b->completed_ts)
		printf("completed: %s\n", ctl_ops_ago(b->completed_ts));
	if (b->leasee && *b->leasee)
		printf("leasee:    %s (lease ends %s)\n", b->leasee,
		       ctl_ops_ago(b->lease_expiration_ts));
	if (b->url && *b->url)
		printf("url:       %s\n", b->url);
	free(builder);
}

/* A BuildResponse: print the build (or the in-band error). */
static int build_answer(struct ctl *c, ProtobufCMessage *out, bool id_only)
{
	const Reactor__Buckets__V1__BuildResponse *r = (const void *)out;
	int rv = CTL_OK;
	if (r->error && r->error->reason) {
		rv = bk_error(r->error);
	} else if (!r->build) {
		rv = ctl_err(CTL_FAIL, "the server answered without a build");
	} else if (c->json) {
		struct ctl_json *j = ctl_json_new();
		build_json(j, r->build);
		ctl_json_print(j);
	} else if (id_only) {
		printf("%" PRId64 "\n", r->build->id);
	} else {
		build_print(c, r->build);
	}
	protobuf_c_message_free_unpacked(out, NULL);
	return rv;
}

static int parse_id(const char *s, int64_t *id)
{
	char *end;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || v <= 0)
		return ctl_err(CTL_USAGE, "bad build id \"%s\"", s);
	*id = v;
	return CTL_OK;
}

static int get_build(struct ctl *c, int64_t id, ProtobufCMessage **out)
{
	Reactor__Buckets__V1__GetRequest req = REACTOR__BUCKETS__V1__GET_REQUEST__INIT;
	req.id = id;
	return ctl_unary(c, BK "Get", &req.base, &reactor__buckets__v1__build_response__descriptor,
			 out);
}

/* ---- put ------------------------------------------------------------------- */

enum { O_BUCKET = 1000, O_BUILDER, O_PROP, O_CHANGE, O_TAG, O_STATUS, O_LIMIT };

static const struct option put_opts[] = {
	{"bucket", required_argument, NULL, O_BUCKET},
	{"builder", required_argument, NULL, O_BUILDER},
	{"prop", required_argument, NULL, O_PROP},
	{"change-json", required_argument, NULL, O_CHANGE},
	{"tag", required_argument, NULL, O_TAG},
	{0},
};

static char *read_file(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	char *b = xmalloc(cap);
	size_t got;
	while ((got = fread(b + n, 1, cap - n - 1, f)) > 0) {
		n += got;
		if (cap - n < 2)
			b = xrealloc(b, cap *= 2);
	}
	bool err = ferror(f);
	if (f != stdin)
		fclose(f);
	if (err) {
		free(b);
		return NULL;
	}
	b[n] = '\0';
	*len = n;
	return b;
}

static void sb_add(char **buf, size_t *n, const char *s)
{
	size_t l = strlen(s);
	*buf = xrealloc(*buf, *n + l + 1);
	memcpy(*buf + *n, s, l + 1);
	*n += l;
}

static int cmd_build_put(struct ctl *c, int argc, char **argv)
{
	const char *bucket = NULL, *builder = NULL, *change = NULL;
	char **props = xcalloc((size_t)argc + 1, sizeof(char *));
	char **tags = xcalloc((size_t)argc + 1, sizeof(char *));
	size_t nprops = 0, ntags = 0;
	int o, rv = CTL_OK;
	char *params = NULL, *chg = NULL;
	size_t pn = 0;
	while ((o = getopt_long(argc, argv, "", put_opts, NULL)) != -1) {
		switch (o) {
		case O_BUCKET: bucket = optarg; break;
		case O_BUILDER: builder = optarg; break;
		case O_PROP: props[nprops++] = optarg; break;
		case O_CHANGE: change = optarg; break;
		case O_TAG: tags[ntags++] = optarg; break;
		default: rv = ctl_usage(c); goto out;
		}
	}
	if (optind != argc || !bucket || !builder) {
		rv = ctl_usage(c);
		goto out;
	}
	sb_add(&params, &pn, "{\"builder_name\":");
	json_quote(&params, &pn, builder, strlen(builder));
	sb_add(&params, &pn, ",\"properties\":{");
	for (size_t i = 0; i < nprops; i++) {
		const char *eq = strchr(props[i], '=');
		if (!eq || eq == props[i]) {
			ctl_err(CTL_USAGE, "bad --prop \"%s\": want KEY=VALUE", props[i]);
			rv = ctl_usage(c);
			goto out;
		}
		if (i)
			sb_add(&params, &pn, ",");
		json_quote(&params, &pn, props[i], (size_t)(eq - props[i]));
		sb_add(&params, &pn, ":");
		/* A number, true, false or null stays one; anything else is a
		 * string (the builder's property types check it). */
		const char *v = eq + 1;
		char err[64];
		struct json *j = *v ? json_parse(v, strlen(v), err, sizeof err) : NULL;
		if (j && (j->type == JSON_NUMBER || j->type == JSON_BOOL || j->type == JSON_NULL))
			sb_add(&params, &pn, v);
		else
			json_quote(&params, &pn, v, strlen(v));
		json_free(j);
	}
	sb_add(&params, &pn, "}");
	if (change) {
		size_t len;
		chg = read_file(change, &len);
		if (!chg) {
			rv = ctl_err(CTL_FAIL, "%s: cannot read", change);
			goto out;
		}
		char err[128];
		struct json *j = json_parse(chg, len, err, sizeof err);
		if (!j || (j->type != JSON_OBJECT && j->type != JSON_ARRAY)) {
			rv = ctl_err(CTL_FAIL, "%s: %s", change,
				     j ? "want a change object or an array of them" : err);
			json_free(j);
			goto out;
		}
		sb_add(&params, &pn, ",\"changes\":");
		if (j->type == JSON_OBJECT)
			sb_add(&params, &pn, "[");
		sb_add(&params, &pn, chg);
		if (j->type == JSON_OBJECT)
			sb_add(&params, &pn, "]");
		json_free(j);
	}
	sb_add(&params, &pn, "}");

	Reactor__Buckets__V1__PutRequest req = REACTOR__BUCKETS__V1__PUT_REQUEST__INIT;
	req.bucket = (char *)bucket;
	req.parameters_json = params;
	req.n_tags = ntags;
	req.tags = tags;
	ProtobufCMessage *resp;
	rv = ctl_unary(c, BK "Put", &req.base, &reactor__buckets__v1__build_response__descriptor,
		       &resp);
	if (rv == CTL_OK)
		rv = build_answer(c, resp, true);
out:
	free(props);
	free(tags);
	free(params);
	free(chg);
	return rv;
}

/* ---- get, cancel ----------------------------------------------------------- */

static int cmd_build_get(struct ctl *c, int argc, char **argv)
{
	int64_t id;
	if (argc != 2)
		return ctl_usage(c);
	if (parse_id(argv[1], &id) != CTL_OK)
		return CTL_USAGE;
	ProtobufCMessage *out;
	int rv = get_build(c, id, &out);
	return rv == CTL_OK ? build_answer(c, out, false) : rv;
}

static int cmd_build_cancel(struct ctl *c, int argc, char **argv)
{
	int64_t id;
	if (argc != 2)
		return ctl_usage(c);
	if (parse_id(argv[1], &id) != CTL_OK)
		return CTL_USAGE;
	Reactor__Buckets__V1__CancelRequest req = REACTOR__BUCKETS__V1__CANCEL_REQUEST__INIT;
	req.id = id;
	ProtobufCMessage *out;
	int rv = ctl_unary(c, BK "Cancel", &req.base,
			   &reactor__buckets__v1__build_response__descriptor, &out);
	if (rv != CTL_OK)
		return rv;
	const Reactor__Buckets__V1__BuildResponse *r = (const void *)out;
	if (!c->json && !(r->error && r->error->reason) && r->build) {
		char o[64];
		printf("%" PRId64 " %s\n", r->build->id, outcome(o, sizeof o, r->build));
		protobuf_c_message_free_unpacked(out, NULL);
		return CTL_OK;
	}
	return build_answer(c, out, false);
}

/* ---- ls -------------------------------------------------------------------- */

static const struct option ls_opts[] = {
	{"bucket", required_argument, NULL, O_BUCKET},
	{"status", required_argument, NULL, O_STATUS},
	{"tag", required_argument, NULL, O_TAG},
	{"limit", required_argument, NULL, O_LIMIT},
	{0},
};

static void table_row(struct ctl_table *t, const Build *b)
{
	char id[24], o[64];
	char *builder = builder_of(b);
	snprintf(id, sizeof id, "%" PRId64, b->id);
	outcome(o, sizeof o, b);
	ctl_table_row(t, id, builder, STATUS(b->status), *o ? o : NULL, ctl_ops_ago(b->created_ts));
	free(builder);
}

static int cmd_build_ls(struct ctl *c, int argc, char **argv)
{
	const char *bucket = NULL, *status = NULL;
	char **tags = xcalloc((size_t)argc + 1, sizeof(char *));
	size_t ntags = 0;
	int limit = 0, o, rv;
	while ((o = getopt_long(argc, argv, "", ls_opts, NULL)) != -1) {
		switch (o) {
		case O_BUCKET: bucket = optarg; break;
		case O_STATUS: status = optarg; break;
		case O_TAG: tags[ntags++] = optarg; break;
		case O_LIMIT: limit = atoi(optarg); break;
		default: free(tags); return ctl_usage(c);
		}
	}
	if (optind != argc || !bucket || limit < 0) {
		free(tags);
		return ctl_usage(c);
	}
	Reactor__Buckets__V1__SearchRequest req = REACTOR__BUCKETS__V1__SEARCH_REQUEST__INIT;
	char *bk = (char *)bucket;
	req.n_buckets = 1;
	req.buckets = &bk;
	req.n_tags = ntags;
	req.tags = tags;
	req.max_builds = limit;
	if (status) {
		/* A status (SCHEDULED, STARTED, COMPLETED) or a result
		 * (SUCCESS, FAILURE, CANCELED), any case. */
		char up[32];
		size_t i;
		for (i = 0; status[i] && i + 1 < sizeof up; i++)
			up[i] = (char)(status[i] >= 'a' && status[i] <= 'z' ? status[i] - 32
									    : status[i]);
		up[i] = '\0';
		const ProtobufCEnumValue *s = protobuf_c_enum_descriptor_get_value_by_name(
			&reactor__buckets__v1__status__descriptor, up);
		const ProtobufCEnumValue *r = protobuf_c_enum_descriptor_get_value_by_name(
			&reactor__buckets__v1__result__descriptor, up);
		if (s && s->value)
			req.status = s->value;
		else if (r && r->value)
			req.result = r->value;
		else {
			free(tags);
			ctl_err(CTL_USAGE,
				"bad --status \"%s\": SCHEDULED, STARTED, COMPLETED, SUCCESS, "
				"FAILURE or CANCELED",
				status);
			return ctl_usage(c);
		}
	}
	ProtobufCMessage *out;
	rv = ctl_unary(c, BK "Search", &req.base,
		       &reactor__buckets__v1__search_response__descriptor, &out);
	free(tags);
	if (rv != CTL_OK)
		return rv;
	const Reactor__Buckets__V1__SearchResponse *r = (const void *)out;
	if (r->error && r->error->reason) {
		rv = bk_error(r->error);
	} else if (c->json) {
		struct ctl_json *j = ctl_json_new();
		ctl_json_obj(j);
		ctl_json_key(j, "builds");
		ctl_json_arr(j);
		for (size_t i = 0; i < r->n_builds; i++)
			build_json(j, r->builds[i]);
		ctl_json_end(j);
		ctl_json_kstr(j, "next_cursor", r->next_cursor ? r->next_cursor : "");
		ctl_json_end(j);
		ctl_json_print(j);
	} else {
		struct ctl_table *t =
			ctl_table_new(c, 5, "ID", "BUILDER", "STATUS", "RESULT", "CREATED");
		for (size_t i = 0; i < r->n_builds; i++)
			table_row(t, r->builds[i]);
		ctl_table_print(t, stdout);
		if (r->next_cursor && *r->next_cursor)
			printf("(more not shown: --limit)\n");
	}
	protobuf_c_message_free_unpacked(out, NULL);
	return rv;
}

/* ---- watch ----------------------------------------------------------------- */

struct watch {
	struct ctl *c;
	bool bad;
};

static bool watch_msg(const uint8_t *msg, size_t len, void *arg)
{
	struct watch *w = arg;
	Build *b = reactor__buckets__v1__build__unpack(NULL, len, msg);
	if (!b) {
		w->bad = true;
		return false;
	}
	if (w->c->json) {
		struct ctl_json *j = ctl_json_new();
		build_json(j, b);
		ctl_json_print(j);
	} else {
		char ts[32], o[64];
		time_t now = time(NULL);
		struct tm tm;
		localtime_r(&now, &tm);
		strftime(ts, sizeof ts, "%H:%M:%S", &tm);
		char *builder = builder_of(b);
		if (*outcome(o, sizeof o, b))
			printf("%s  %" PRId64 "  %s  %s  %s\n", ts, b->id, builder,
			       STATUS(b->status), o);
		else if (b->leasee && *b->leasee)
			printf("%s  %" PRId64 "  %s  %s  leased by %s\n", ts, b->id, builder,
			       STATUS(b->status), b->leasee);
		else
			printf("%s  %" PRId64 "  %s  %s\n", ts, b->id, builder, STATUS(b->status));
		free(builder);
	}
	fflush(stdout);
	reactor__buckets__v1__build__free_unpacked(b, NULL);
	return true;
}

static int cmd_build_watch(struct ctl *c, int argc, char **argv)
{
	char **buckets = xcalloc((size_t)argc + 1, sizeof(char *));
	size_t nb = 0;
	int o;
	static const struct option opts[] = {{"bucket", required_argument, NULL, O_BUCKET}, {0}};
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o != O_BUCKET) {
			free(buckets);
			return ctl_usage(c);
		}
		buckets[nb++] = optarg;
	}
	if (optind != argc || nb == 0) {
		free(buckets);
		return ctl_usage(c);
	}
	Reactor__Buckets__V1__WatchBuildsRequest req =
		REACTOR__BUCKETS__V1__WATCH_BUILDS_REQUEST__INIT;
	req.n_buckets = nb;
	req.buckets = buckets;
	struct watch w = {.c = c};
	int rv = ctl_stream(c, BK "WatchBuilds", &req.base, c->timeout_set ? c->timeout_us : 0,
			    watch_msg, &w);
	free(buckets);
	if (rv == CTL_OK && w.bad)
		rv = ctl_err(CTL_FAIL, "malformed Build from the server");
	return rv;
}

/* ---- log ------------------------------------------------------------------- */

static const char *jstr(const struct json *o, const char *k)
{
	const struct json *v = json_get(o, k);
	return v && v->type == JSON_STRING ? v->str : "";
}

static int64_t jint(const struct json *o, const char *k)
{
	const struct json *v = json_get(o, k);
	return v && v->type == JSON_NUMBER ? (v->is_int ? v->i : (int64_t)v->num) : 0;
}

static int cmd_build_log(struct ctl *c, int argc, char **argv)
{
	int64_t id;
	if (argc != 2 && argc != 3)
		return ctl_usage(c);
	if (parse_id(argv[1], &id) != CTL_OK)
		return CTL_USAGE;
	ProtobufCMessage *out;
	int rv = get_build(c, id, &out);
	if (rv != CTL_OK)
		return rv;
	const Reactor__Buckets__V1__BuildResponse *r = (const void *)out;
	if (r->error && r->error->reason) {
		rv = bk_error(r->error);
		protobuf_c_message_free_unpacked(out, NULL);
		return rv;
	}
	const char *details =
		r->build && r->build->result_details_json ? r->build->result_details_json : "";
	char err[128];
	struct json *d = *details ? json_parse(details, strlen(details), err, sizeof err) : NULL;
	const struct json *steps = json_get(d, "steps");
	if (!steps || steps->type != JSON_ARRAY) {
		rv = ctl_err(CTL_FAIL, "build %" PRId64 " has no recorded steps (status %s)", id,
			     r->build ? STATUS(r->build->status) : "?");
		goto done;
	}
	/* STEP: a name or a 1-based number. */
	long want = -1;
	if (argc == 3) {
		for (size_t i = 0; i < steps->n; i++) {
			char num[24];
			snprintf(num, sizeof num, "%zu", i + 1);
			if (!strcmp(jstr(steps->items[i], "name"), argv[2]) ||
			    !strcmp(num, argv[2]))
				want = (long)i;
		}
		if (want < 0) {
			rv = ctl_err(CTL_FAIL, "build %" PRId64 " has no step \"%s\"", id, argv[2]);
			goto done;
		}
	}
	if (c->json) {
		struct ctl_json *j = ctl_json_new();
		ctl_json_obj(j);
		char idbuf[24];
		snprintf(idbuf, sizeof(idbuf), "%" PRId64, id);
		ctl_json_kstr(j, "id", idbuf);
		ctl_json_key(j, "steps");
		ctl_json_arr(j);
		for (size_t i = 0; i < steps->n; i++) {
			if (want >= 0 && (long)i != want)
				continue;
			const struct json *s = steps->items[i];
			ctl_json_obj(j);
			ctl_json_kint(j, "index", (int64_t)i + 1);
			ctl_json_kstr(j, "name", jstr(s, "name"));
			ctl_json_kstr(j, "status", jstr(s, "status"));
			ctl_json_kint(j, "exit_code", jint(s, "exit_code"));
			ctl_json_kint(j, "duration_us", jint(s, "duration_us"));
			ctl_json_kstr(j, "stdout_digest", jstr(s, "stdout_digest"));
			ctl_json_kstr(j, "stderr_digest", jstr(s, "stderr_digest"));
			ctl_json_kstr(j, "worker", jstr(s, "worker"));
			ctl_json_end(j);
		}
		ctl_json_end(j);
		ctl_json_end(j);
		ctl_json_print(j);
		goto done;
	}
	for (size_t i = 0; i < steps->n && rv == CTL_OK; i++) {
		if (want >= 0 && (long)i != want)
			continue;
		const struct json *s = steps->items[i];
		const char *st = jstr(s, "status");
		char dur[32];
		ctl_duration(dur, sizeof dur, jint(s, "duration_us"));
		if (want < 0) {
			printf("%s== step %zu %s: %s, exit %" PRId64 ", %s ==%s\n",
			       ctl_col(c, CTL_BOLD), i + 1, jstr(s, "name"), st,
			       jint(s, "exit_code"), dur, ctl_col(c, CTL_RESET));
			fflush(stdout);
		}
		const char *od = jstr(s, "stdout_digest"), *ed = jstr(s, "stderr_digest");
		if (*od)
			rv = ctl_cat_blob(c, od, stdout);
		if (rv == CTL_OK && *ed) {
			/* stderr follows stdout on stdout for the whole log, and
			 * goes to stderr for one step (so 2>/dev/null works). */
			fflush(stdout);
			rv = ctl_cat_blob(c, ed, want >= 0 ? stderr : stdout);
		}
	}
done:
	json_free(d);
	protobuf_c_message_free_unpacked(out, NULL);
	return rv;
}

const struct ctl_cmd ctl_cmds_build[] = {
	{"build put",
	 "--bucket B --builder NAME [--prop K=V]... [--tag K:V]... [--change-json FILE]",
	 "schedule a build",
	 "Puts a build into bucket B for the master's builder NAME and prints its\n"
	 "id.  --prop sets a builder property (a number, true or false stays one,\n"
	 "anything else is a string); --change-json FILE adds the change(s) in FILE\n"
	 "(one object or an array; - reads stdin); --tag adds a KEY:VALUE tag.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl build put --bucket ci --builder hello --prop greeting=hi --prop times=3\n",
	 cmd_build_put},
	{"build get", "ID", "show one build",
	 "Status, result, builder, tags, parameters, times, lease and URL.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl build get 1733549823441000001\n",
	 cmd_build_get},
	{"build ls", "--bucket B [--status S] [--tag K:V]... [--limit N]",
	 "list the builds of a bucket",
	 "Builds of bucket B, newest first.  --status: SCHEDULED, STARTED,\n"
	 "COMPLETED, or a result (SUCCESS, FAILURE, CANCELED); --tag: only builds\n"
	 "with every given tag; --limit: at most N (default 100).\n"
	 "\n"
	 "example:\n"
	 "  reactorctl build ls --bucket ci --status failure --tag builder:hello\n",
	 cmd_build_ls},
	{"build cancel", "ID", "cancel a build",
	 "Completes the build as CANCELED (CANCELED_EXPLICITLY); a master running\n"
	 "it stops.  Exit 1 (BUILD_IS_COMPLETED) when it had already completed\n"
	 "otherwise.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl build cancel 1733549823441000001\n",
	 cmd_build_cancel},
	{"build watch", "--bucket B...", "follow the builds of buckets as they change",
	 "Prints one line per change of a build of the buckets (WatchBuilds) until\n"
	 "interrupted: time, id, builder, status (and lease holder), then the\n"
	 "result once completed.  With --json, one Build object per line.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl build watch --bucket ci\n",
	 cmd_build_watch},
	{"build log", "ID [STEP]", "print the output of a build's steps",
	 "Prints each recorded step's stdout and stderr, read from the CAS, under a\n"
	 "header line (name, status, exit code, duration).  With STEP (a name or a\n"
	 "1-based number) only that step: its stdout on stdout, its stderr on\n"
	 "stderr.  With --json, the steps and their log digests.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl build log 1733549823441000001 test\n",
	 cmd_build_log},
	{0},
};
