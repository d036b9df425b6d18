/*
 * master_build.c - one build's run in the master (master_int.h): check
 * its parameters against the builder, Start it, run each step as a REAPI
 * action (input root = build.json + the workspace the earlier steps
 * produced, uploaded with FindMissingBlobs/BatchUpdateBlobs; Execute read
 * to its final Operation), carry outputs forward, and Succeed or Fail it
 * with result details.  Owns what it hangs on a struct mbuild: the
 * builder copy, the workspace, the step records and the Execute call.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "domain/master.h"
#include "domain/master_int.h"
#include "google/longrunning/operations.pb-c.h"

#define BK_PFX		       "/reactor.buckets.v1.Buckets/"
#define REAPI_PFX	       "/build.bazel.remote.execution.v2."
#define CALL_TIMEOUT	       (30LL * 1000000)
#define GRPC_DEADLINE_EXCEEDED 4
#define GRPC_CANCELLED	       1

static void report(struct mbuild *b, int reason, const char *error);
static void step_begin(struct mbuild *b);

/* ---- small JSON writer ------------------------------------------------------------ */

void mb_sb_add(struct sbuf *sb, const char *fmt, ...) PRINTF_LIKE(2, 3);
void mb_sb_add(struct sbuf *sb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *t = xvasprintf(fmt, ap);
	va_end(ap);
	size_t l = strlen(t);
	sb->s = xrealloc(sb->s, sb->n + l + 1);
	memcpy(sb->s + sb->n, t, l + 1);
	sb->n += l;
	free(t);
}

void mb_sb_str(struct sbuf *sb, const char *s, size_t len)
{
	json_quote(&sb->s, &sb->n, s, len);
}

void mb_sb_json(struct sbuf *sb, const struct json *j)
{
	switch (j->type) {
	case JSON_NULL: mb_sb_add(sb, "null"); break;
	case JSON_BOOL: mb_sb_add(sb, j->b ? "true" : "false"); break;
	case JSON_NUMBER:
		if (j->is_int)
			mb_sb_add(sb, "%" PRId64, j->i);
		else
			mb_sb_add(sb, "%.17g", j->num);
		break;
	case JSON_STRING: mb_sb_str(sb, j->str, j->len); break;
	case JSON_ARRAY:
	case JSON_OBJECT:
		mb_sb_add(sb, j->type == JSON_ARRAY ? "[" : "{");
		for (size_t i = 0; i < j->n; i++) {
			if (i)
				mb_sb_add(sb, ",");
			if (j->type == JSON_OBJECT) {
				mb_sb_str(sb, j->keys[i], strlen(j->keys[i]));
				mb_sb_add(sb, ":");
			}
			mb_sb_json(sb, j->items[i]);
		}
		mb_sb_add(sb, j->type == JSON_ARRAY ? "]" : "}");
		break;
	}
}

/* ---- the builder copy ------------------------------------------------------------- */

static char **dup_strv(char **v, int n)
{
	char **out = xcalloc((size_t)n + 1, sizeof(*out));
	for (int i = 0; i < n; i++)
		out[i] = xstrdup(v[i]);
	return out;
}

static void free_strv(char **v, int n)
{
	for (int i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

static struct mb_builder *builder_dup(const struct cfg_builder *c)
{
	struct mb_builder *b = xcalloc(1, sizeof(*b));
	b->name = xstrdup(c->name);
	b->n_steps = c->n_steps;
	b->steps = xcalloc((size_t)c->n_steps, sizeof(*b->steps));
	for (int i = 0; i < c->n_steps; i++) {
		const struct cfg_step *s = &c->steps[i];
		struct cfg_step *t = &b->steps[i];
		*t = *s;
		t->name = xstrdup(s->name);
		t->argv = dup_strv(s->argv, s->argc);
		t->env = dup_strv(s->env, s->n_env);
		t->platform = dup_strv(s->platform, s->n_platform);
		t->outputs = dup_strv(s->outputs, s->n_outputs);
	}
	return b;
}

static void builder_free(struct mb_builder *b)
{
	if (!b)
		return;
	for (int i = 0; i < b->n_steps; i++) {
		struct cfg_step *t = &b->steps[i];
		free(t->name);
		free_strv(t->argv, t->argc);
		free_strv(t->env, t->n_env);
		free_strv(t->platform, t->n_platform);
		free_strv(t->outputs, t->n_outputs);
	}
	free(b->steps);
	free(b->name);
	free(b);
}

void mb_free_run(struct mbuild *b)
{
	builder_free(b->bld);
	b->bld = NULL;
	for (int i = 0; i < b->nfiles; i++)
		free(b->files[i].path);
	free(b->files);
	b->files = NULL;
	b->nfiles = 0;
	for (int i = 0; i < b->nrecs; i++) {
		free(b->recs[i].name);
		free(b->recs[i].worker);
	}
	free(b->recs);
	b->recs = NULL;
	b->nrecs = 0;
	free(b->url);
	free(b->props_json);
	free(b->build_json);
	free(b->build_json_id);
	b->url = b->props_json = b->build_json = b->build_json_id = NULL;
	if (b->last_op)
		protobuf_c_message_free_unpacked(b->last_op, NULL);
	b->last_op = NULL;
}

void mb_cancel_exec(struct mbuild *b)
{
	if (b->exec_call) {
		struct rc_call *k = b->exec_call;
		b->exec_call = NULL;
		rc_call_cancel(k);
	}
}

/* ---- parameters ------------------------------------------------------------------- */

static const char *prop_type_name(int t)
{
	switch (t) {
	case CFG_PROP_STRING: return "string";
	case CFG_PROP_INT: return "integer";
	case CFG_PROP_BOOL: return "boolean";
	case CFG_PROP_NUMBER: return "number";
	default: return "?";
	}
}

static bool prop_fits(int t, const struct json *v)
{
	switch (t) {
	case CFG_PROP_STRING: return v->type == JSON_STRING;
	case CFG_PROP_INT: return v->type == JSON_NUMBER && v->is_int;
	case CFG_PROP_BOOL: return v->type == JSON_BOOL;
	case CFG_PROP_NUMBER: return v->type == JSON_NUMBER;
	default: return false;
	}
}

/* Fill b->props_json and b->build_json from the parameters, or return a
 * malloc'd message naming what does not fit the builder. */
static char *prepare(struct mbuild *b, const struct cfg_builder *bl)
{
	char e[160];
	struct json *p = json_parse(b->params_json, strlen(b->params_json), e, sizeof(e));
	if (!p || p->type != JSON_OBJECT) {
		json_free(p);
		return xasprintf("parameters_json is not a JSON object%s%s", p ? "" : ": ",
				 p ? "" : e);
	}
	const struct json *props = json_get(p, "properties");
	if (props && props->type != JSON_OBJECT) {
		json_free(p);
		return xstrdup("properties must be an object");
	}
	struct sbuf sb = {0};
	mb_sb_add(&sb, "{");
	int n = 0;
	char *err = NULL;
	for (int i = 0; i < bl->n_props && !err; i++) {
		const struct cfg_builder_prop *cp = &bl->props[i];
		const struct json *v = props ? json_get(props, cp->name) : NULL;
		if (!v) {
			if (cp->def_json) {
				mb_sb_add(&sb, "%s", n++ ? "," : "");
				mb_sb_str(&sb, cp->name, strlen(cp->name));
				mb_sb_add(&sb, ":%s", cp->def_json);
			} else if (cp->required) {
				err = xasprintf("property \"%s\" (%s) is required by builder %s",
						cp->name, prop_type_name(cp->type), bl->name);
			}
		} else if (!prop_fits(cp->type, v)) {
			err = xasprintf("property \"%s\" must be a %s, not a %s", cp->name,
					prop_type_name(cp->type),
					v->type == JSON_NUMBER ? "non-integer number"
							       : json_type_name(v->type));
		}
	}
	/* The build's own properties, in its order. */
	for (size_t i = 0; props && i < props->n && !err; i++) {
		mb_sb_add(&sb, "%s", n++ ? "," : "");
		mb_sb_str(&sb, props->keys[i], strlen(props->keys[i]));
		mb_sb_add(&sb, ":");
		mb_sb_json(&sb, props->items[i]);
	}
	mb_sb_add(&sb, "}");
	if (err) {
		free(sb.s);
		json_free(p);
		return err;
	}
	b->props_json = sb.s;
	/* Two forms: with the build id for steps with cache: false, without
	 * it for cacheable ones (an identical build must make identical
	 * actions). */
	for (int withid = 0; withid < 2; withid++) {
		struct sbuf bj = {0};
		mb_sb_add(&bj, "{\"bucket\":");
		mb_sb_str(&bj, b->bucket, strlen(b->bucket));
		mb_sb_add(&bj, ",\"builder\":");
		mb_sb_str(&bj, bl->name, strlen(bl->name));
		if (withid)
			mb_sb_add(&bj, ",\"build_id\":%" PRId64, b->id);
		mb_sb_add(&bj, ",\"properties\":%s,\"changes\":", b->props_json);
		const struct json *ch = json_get(p, "changes");
		if (ch)
			mb_sb_json(&bj, ch);
		else
			mb_sb_add(&bj, "[]");
		mb_sb_add(&bj, "}\n");
		if (withid)
			b->build_json_id = bj.s;
		else
			b->build_json = bj.s;
	}
	json_free(p);
	return NULL;
}

/* ---- Buckets calls ------------------------------------------------------------------- */

static void after_report(int code, const char *msg, ProtobufCMessage *resp, void *arg)
{
	struct mbuild *b = arg;
	const BKM(BuildResponse) *r = (const void *)resp;
	if (code != RPC_OK)
		LOGW(MMOD, "build %" PRId64 ": report failed: %s", b->id, msg);
	else if (r->error)
		LOGW(MMOD, "build %" PRId64 ": report: %s", b->id, r->error->message);
	else
		LOGI(MMOD, "build %" PRId64 ": completed (%s)", b->id,
		     r->build && r->build->result == BKE(RESULT__SUCCESS) ? "SUCCESS" : "FAILURE");
	mb_release(b, "reported");
	mb_unref(b);
}

static void start_done(int code, const char *msg, ProtobufCMessage *resp, void *arg)
{
	struct mbuild *b = arg;
	const BKM(BuildResponse) *r = (const void *)resp;
	if (b->gone) {
		/* nothing */
	} else if (code != RPC_OK) {
		/* Unknown whether it started: the lease expires if we do not go on. */
		LOGW(MMOD, "build %" PRId64 ": Start failed: %s", b->id, msg);
		mb_release(b, "start failed");
	} else if (r->error) {
		LOGW(MMOD, "build %" PRId64 ": Start: %s", b->id, r->error->message);
		mb_release(b, "start refused");
	} else {
		LOGI(MMOD, "build %" PRId64 ": started (%s)", b->id, b->url);
		mb_set_state(b, MB_RUNNING);
		step_begin(b);
	}
	mb_unref(b);
}

static master_url_fn url_fn;

void master_set_url_fn(master_url_fn fn)
{
	url_fn = fn;
}

/* The status page's /builds/ID when there is one, else reactor://. */
static char *build_url(int64_t id)
{
	char *u = url_fn ? url_fn(id) : NULL;
	return u ? u : xasprintf("reactor://%s/builds/%" PRId64, master_name(), id);
}

void mb_run(struct mbuild *b, const struct cfg_builder *bl)
{
	mb_set_state(b, MB_STARTING);
	b->bld = builder_dup(bl);
	b->url = build_url(b->id);
	char *bad = prepare(b, bl);
	if (bad) {
		LOGI(MMOD, "build %" PRId64 ": invalid: %s", b->id, bad);
		report(b, BKE(FAILURE_REASON__INVALID_BUILD_DEFINITION), bad);
		free(bad);
		return;
	}
	BKM(StartRequest) req = BKE(START_REQUEST__INIT);
	req.id = b->id;
	req.lease_key = b->lease_key;
	req.url = b->url;
	mb_ref(b);
	if (rc_unary_start(master_bk(), BK_PFX "Start", &req.base,
			   &reactor__buckets__v1__build_response__descriptor, CALL_TIMEOUT,
			   start_done, b) != 0) {
		mb_unref(b);
		mb_release(b, "no connection");
	}
}

static void result_details(struct mbuild *b, struct sbuf *sb, const char *error)
{
	mb_sb_add(sb, "{\"properties\":%s,\"steps\":[", b->props_json ? b->props_json : "{}");
	for (int i = 0; i < b->nrecs; i++) {
		const struct mb_steprec *r = &b->recs[i];
		mb_sb_add(sb, "%s{\"name\":", i ? "," : "");
		mb_sb_str(sb, r->name, strlen(r->name));
		mb_sb_add(sb,
			  ",\"status\":\"%s\",\"exit_code\":%d,\"duration_us\":%" PRId64
			  ",\"cached\":%s,\"action_digest\":\"%s\",\"stdout_digest\":\"%s\","
			  "\"stderr_digest\":\"%s\",\"worker\":",
			  r->status, r->exit_code, r->duration_us, r->cached ? "true" : "false",
			  r->action, r->out, r->err);
		mb_sb_str(sb, r->worker ? r->worker : "", r->worker ? strlen(r->worker) : 0);
		mb_sb_add(sb, "}");
	}
	mb_sb_add(sb, "]");
	if (error) {
		mb_sb_add(sb, ",\"error\":");
		mb_sb_str(sb, error, strlen(error));
	}
	mb_sb_add(sb, "}");
}

/* Succeed (reason 0) or Fail with reason; error goes into the details. */
static void report(struct mbuild *b, int reason, const char *error)
{
	if (b->gone)
		return;
	mb_set_state(b, MB_REPORTING);
	struct sbuf sb = {0};
	result_details(b, &sb, error);
	/* worker:NAME tags, one per distinct worker. */
	char **tags = xcalloc((size_t)b->nrecs + 1, sizeof(*tags));
	size_t nt = 0;
	for (int i = 0; i < b->nrecs; i++) {
		if (!b->recs[i].worker || !*b->recs[i].worker)
			continue;
		char *t = xasprintf("worker:%s", b->recs[i].worker);
		bool dup = false;
		for (size_t k = 0; k < nt; k++)
			dup = dup || strcmp(tags[k], t) == 0;
		if (dup)
			free(t);
		else
			tags[nt++] = t;
	}
	int rc;
	mb_ref(b);
	if (reason == 0) {
		BKM(SucceedRequest) req = BKE(SUCCEED_REQUEST__INIT);
		req.id = b->id;
		req.lease_key = b->lease_key;
		req.result_details_json = sb.s;
		req.url = b->url;
		req.new_tags = tags;
		req.n_new_tags = nt;
		rc = rc_unary_start(master_bk(), BK_PFX "Succeed", &req.base,
				    &reactor__buckets__v1__build_response__descriptor, CALL_TIMEOUT,
				    after_report, b);
	} else {
		BKM(FailRequest) req = BKE(FAIL_REQUEST__INIT);
		req.id = b->id;
		req.lease_key = b->lease_key;
		req.result_details_json = sb.s;
		req.url = b->url;
		req.failure_reason = reason;
		req.new_tags = tags;
		req.n_new_tags = nt;
		rc = rc_unary_start(master_bk(), BK_PFX "Fail", &req.base,
				    &reactor__buckets__v1__build_response__descriptor, CALL_TIMEOUT,
				    after_report, b);
	}
	if (rc != 0) {
		mb_unref(b);
		LOGW(MMOD,
		     "build %" PRId64 ": cannot report (no connection); the lease will expire",
		     b->id);
		mb_release(b, "no connection");
	}
	free_strv(tags, (int)nt);
	free(sb.s);
}

static void infra_fail(struct mbuild *b, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void infra_fail(struct mbuild *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *why = xvasprintf(fmt, ap);
	va_end(ap);
	LOGW(MMOD, "build %" PRId64 ": infrastructure failure: %s", b->id, why);
	report(b, BKE(FAILURE_REASON__INFRA_FAILURE), why);
	free(why);
}

/* ---- Execute ---------------------------------------------------------------------------- */

static void next_step(struct mbuild *b);

static void record(struct mbuild *b, const char *status, int exit_code, bool cached,
		   const PbActionResult *ar)
{
	b->recs = xrealloc(b->recs, (size_t)(b->nrecs + 1) * sizeof(*b->recs));
	struct mb_steprec *r = &b->recs[b->nrecs++];
	memset(r, 0, sizeof(*r));
	r->name = xstrdup(b->bld->steps[b->step].name);
	r->status = status;
	r->exit_code = exit_code;
	r->cached = cached;
	r->duration_us = mono_us() - b->step_start_mono;
	digest_str(&b->action_d, r->action, sizeof(r->action));
	if (ar && ar->stdout_digest)
		snprintf(r->out, sizeof(r->out), "%s/%" PRId64, ar->stdout_digest->hash,
			 ar->stdout_digest->size_bytes);
	if (ar && ar->stderr_digest)
		snprintf(r->err, sizeof(r->err), "%s/%" PRId64, ar->stderr_digest->hash,
			 ar->stderr_digest->size_bytes);
	if (ar && ar->execution_metadata && ar->execution_metadata->worker)
		r->worker = xstrdup(ar->execution_metadata->worker);
	mstate_step_end(b);
}

static void ws_put(struct mbuild *b, const char *path, const PbDigest *d, bool exec)
{
	struct digest dg;
	if (!d || digest_parse(d->hash, d->size_bytes, &dg, NULL) != 0)
		return;
	for (int i = 0; i < b->nfiles; i++) {
		if (strcmp(b->files[i].path, path) == 0) {
			b->files[i].d = dg;
			b->files[i].exec = exec;
			return;
		}
	}
	b->files = xrealloc(b->files, (size_t)(b->nfiles + 1) * sizeof(*b->files));
	b->files[b->nfiles++] = (struct mb_file){.path = xstrdup(path), .d = dg, .exec = exec};
}

/* Add Directory dir (of tree t) under prefix to the workspace. */
static void ws_tree(struct mbuild *b, const PbTree *t, const PbDirectory *dir, const char *prefix,
		    int depth)
{
	if (depth > 64)
		return;
	for (size_t i = 0; i < dir->n_files; i++) {
		char *p = xasprintf("%s/%s", prefix, dir->files[i]->name);
		ws_put(b, p, dir->files[i]->digest, dir->files[i]->is_executable);
		free(p);
	}
	for (size_t i = 0; i < dir->n_directories; i++) {
		const PbDirectoryNode *dn = dir->directories[i];
		if (!dn->digest)
			continue;
		for (size_t k = 0; k < t->n_children; k++) {
			size_t len = protobuf_c_message_get_packed_size(&t->children[k]->base);
			uint8_t *buf = xmalloc(len ? len : 1);
			protobuf_c_message_pack(&t->children[k]->base, buf);
			struct digest cd;
			digest_of(buf, len, &cd);
			free(buf);
			if (strcmp(cd.hex, dn->digest->hash) == 0) {
				char *p = xasprintf("%s/%s", prefix, dn->name);
				ws_tree(b, t, t->children[k], p, depth + 1);
				free(p);
				break;
			}
		}
	}
}

struct tree_read {
	struct mbuild *b;
	char **paths;  /* output directory path per requested tree */
	char **hashes; /* its tree digest's hash */
	size_t n;
};

static void tree_read_free(struct tree_read *tr)
{
	for (size_t i = 0; i < tr->n; i++) {
		free(tr->paths[i]);
		free(tr->hashes[i]);
	}
	free(tr->paths);
	free(tr->hashes);
	free(tr);
}

static void trees_done(int code, const char *msg, ProtobufCMessage *resp, void *arg)
{
	struct tree_read *tr = arg;
	struct mbuild *b = tr->b;
	if (!b->gone) {
		const Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse *r =
			(const void *)resp;
		char *bad = NULL;
		if (code != RPC_OK)
			bad = xasprintf("reading output trees: %s", msg);
		for (size_t i = 0; !bad && i < r->n_responses; i++) {
			const PbReadResp *rr = r->responses[i];
			if (rr->status && rr->status->code != 0) {
				bad = xasprintf("reading an output tree: %s", rr->status->message);
				break;
			}
			PbTree *t = build__bazel__remote__execution__v2__tree__unpack(
				NULL, rr->data.len, rr->data.data);
			if (!t || !t->root) {
				bad = xstrdup("an output tree does not parse");
				if (t)
					build__bazel__remote__execution__v2__tree__free_unpacked(
						t, NULL);
				break;
			}
			for (size_t k = 0; k < tr->n; k++)
				if (rr->digest && strcmp(rr->digest->hash, tr->hashes[k]) == 0)
					ws_tree(b, t, t->root, tr->paths[k], 0);
			build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);
		}
		if (bad) {
			infra_fail(b, "step %s: %s", b->bld->steps[b->step].name, bad);
			free(bad);
		} else {
			next_step(b);
		}
	}
	tree_read_free(tr);
	mb_unref(b);
}

/* Outputs of a successful step into the workspace, then the next step. */
static void take_outputs(struct mbuild *b, const PbActionResult *ar)
{
	for (size_t i = 0; i < ar->n_output_files; i++)
		ws_put(b, ar->output_files[i]->path, ar->output_files[i]->digest,
		       ar->output_files[i]->is_executable);
	if (ar->n_output_directories == 0) {
		next_step(b);
		return;
	}
	struct tree_read *tr = xcalloc(1, sizeof(*tr));
	tr->b = b;
	tr->paths = xcalloc(ar->n_output_directories, sizeof(char *));
	tr->hashes = xcalloc(ar->n_output_directories, sizeof(char *));
	PbDigest **dp = xcalloc(ar->n_output_directories, sizeof(*dp));
	for (size_t i = 0; i < ar->n_output_directories; i++) {
		const PbOutputDirectory *o = ar->output_directories[i];
		if (!o->tree_digest)
			continue;
		tr->paths[tr->n] = xstrdup(o->path);
		tr->hashes[tr->n] = xstrdup(o->tree_digest->hash);
		dp[tr->n++] = o->tree_digest;
	}
	PbBatchRead req = REV2(BATCH_READ_BLOBS_REQUEST__INIT);
	req.instance_name = (char *)master_instance();
	req.digests = dp;
	req.n_digests = tr->n;
	mb_ref(b);
	int rc = rc_unary_start(
		master_ex(), REAPI_PFX "ContentAddressableStorage/BatchReadBlobs", &req.base,
		&build__bazel__remote__execution__v2__batch_read_blobs_response__descriptor,
		CALL_TIMEOUT, trees_done, tr);
	free(dp);
	if (rc != 0) {
		tree_read_free(tr);
		mb_unref(b);
		infra_fail(b, "the executor is unreachable");
	}
}

static void exec_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct mbuild *b = arg;
	ProtobufCMessage *op = protobuf_c_message_unpack(
		&google__longrunning__operation__descriptor, NULL, len, msg);
	if (!op)
		return;
	if (b->last_op)
		protobuf_c_message_free_unpacked(b->last_op, NULL);
	b->last_op = op;
	const Google__Longrunning__Operation *o = (const void *)op;
	if (o->name && *o->name && (!b->op_name || strcmp(b->op_name, o->name) != 0))
		mstate_step_op(b, o->name);
}

static void exec_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct mbuild *b = arg;
	b->exec_call = NULL;
	ProtobufCMessage *opm = b->last_op;
	b->last_op = NULL;
	if (b->gone)
		goto out;
	const char *sname = b->bld->steps[b->step].name;
	const Google__Longrunning__Operation *op = (const void *)opm;
	if (code != RPC_OK) {
		record(b, "INFRA_FAILURE", -1, false, NULL);
		infra_fail(b, "step %s: Execute failed: %s", sname, message);
		goto out;
	}
	if (!op || !op->done ||
	    op->result_case != GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE || !op->response) {
		record(b, "INFRA_FAILURE", -1, false, NULL);
		infra_fail(b, "step %s: Execute ended without a final ExecuteResponse", sname);
		goto out;
	}
	Build__Bazel__Remote__Execution__V2__ExecuteResponse *er =
		build__bazel__remote__execution__v2__execute_response__unpack(
			NULL, op->response->value.len, op->response->value.data);
	if (!er) {
		record(b, "INFRA_FAILURE", -1, false, NULL);
		infra_fail(b, "step %s: the ExecuteResponse does not parse", sname);
		goto out;
	}
	const PbActionResult *ar = er->result;
	if (er->status && er->status->code == GRPC_DEADLINE_EXCEEDED) {
		record(b, "FAILURE", ar ? ar->exit_code : -1, false, ar);
		char *why = xasprintf("step %s timed out: %s", sname, er->status->message);
		LOGI(MMOD, "build %" PRId64 ": %s", b->id, why);
		report(b, BKE(FAILURE_REASON__BUILD_FAILURE), why);
		free(why);
	} else if ((er->status && er->status->code != 0) || !ar) {
		record(b, "INFRA_FAILURE", -1, false, ar);
		infra_fail(b, "step %s: %s", sname,
			   er->status && er->status->message && *er->status->message
				   ? er->status->message
				   : "no result");
	} else if (ar->exit_code != 0) {
		record(b, "FAILURE", ar->exit_code, er->cached_result, ar);
		char *why = xasprintf("step %s exited with code %d", sname, ar->exit_code);
		LOGI(MMOD, "build %" PRId64 ": %s", b->id, why);
		report(b, BKE(FAILURE_REASON__BUILD_FAILURE), why);
		free(why);
	} else {
		record(b, "SUCCESS", 0, er->cached_result, ar);
		LOGD(MMOD, "build %" PRId64 ": step %s done%s", b->id, sname,
		     er->cached_result ? " (cached)" : "");
		take_outputs(b, ar);
	}
	build__bazel__remote__execution__v2__execute_response__free_unpacked(er, NULL);
out:
	if (opm)
		protobuf_c_message_free_unpacked(opm, NULL);
	mb_unref(b);
}

static void execute(struct mbuild *b)
{
	const struct cfg_step *s = &b->bld->steps[b->step];
	Build__Bazel__Remote__Execution__V2__ExecuteRequest req = REV2(EXECUTE_REQUEST__INIT);
	req.instance_name = (char *)master_instance();
	req.skip_cache_lookup = !s->cache;
	PbDigest *ad = mb_pbd(&b->action_d);
	req.action_digest = ad;
	struct rc_client *c = master_ex();
	struct rc_call *k = c ? rc_call_start(c, REAPI_PFX "Execution/Execute", 0, NULL, 0,
					      exec_msg, exec_done, b)
			      : NULL;
	if (!k) {
		free(ad);
		infra_fail(b, "step %s: the executor is unreachable", s->name);
		return;
	}
	size_t len;
	uint8_t *buf = mb_pack(&req.base, &len);
	rc_call_send(k, buf, len);
	free(buf);
	free(ad);
	rc_call_close_send(k);
	mb_ref(b);
	b->exec_call = k;
}

static void update_done(int code, const char *msg, ProtobufCMessage *resp, void *arg)
{
	struct mstep *st = arg;
	struct mbuild *b = st->b;
	if (!b->gone) {
		const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse *r =
			(const void *)resp;
		const char *bad = code != RPC_OK ? msg : NULL;
		for (size_t i = 0; !bad && i < r->n_responses; i++)
			if (r->responses[i]->status && r->responses[i]->status->code != 0)
				bad = r->responses[i]->status->message;
		if (bad)
			infra_fail(b, "step %s: uploading its inputs: %s",
				   b->bld->steps[b->step].name, bad);
		else
			execute(b);
	}
	mb_step_free(st);
	mb_unref(b);
}

static void missing_done(int code, const char *msg, ProtobufCMessage *resp, void *arg)
{
	struct mstep *st = arg;
	struct mbuild *b = st->b;
	if (b->gone)
		goto out;
	if (code != RPC_OK) {
		infra_fail(b, "step %s: FindMissingBlobs: %s", b->bld->steps[b->step].name, msg);
		goto out;
	}
	const Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse *r = (const void *)resp;
	if (r->n_missing_blob_digests == 0) {
		execute(b);
		goto out;
	}
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request **reqs =
		xcalloc(r->n_missing_blob_digests, sizeof(*reqs));
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *rv =
		xcalloc(r->n_missing_blob_digests, sizeof(*rv));
	PbDigest **dv = xcalloc(r->n_missing_blob_digests, sizeof(*dv));
	size_t n = 0;
	for (size_t i = 0; i < r->n_missing_blob_digests; i++) {
		const PbDigest *md = r->missing_blob_digests[i];
		for (size_t k = 0; k < st->nblobs; k++) {
			if (strcmp(st->blobs[k].d.hex, md->hash) != 0)
				continue;
			build__bazel__remote__execution__v2__batch_update_blobs_request__request__init(
				&rv[n]);
			dv[n] = mb_pbd(&st->blobs[k].d);
			rv[n].digest = dv[n];
			rv[n].data.data = st->blobs[k].data;
			rv[n].data.len = st->blobs[k].len;
			reqs[n] = &rv[n];
			n++;
			break;
		}
	}
	PbBatchUpdate req = REV2(BATCH_UPDATE_BLOBS_REQUEST__INIT);
	req.instance_name = (char *)master_instance();
	req.requests = reqs;
	req.n_requests = n;
	mb_ref(b);
	int rc = rc_unary_start(
		master_ex(), REAPI_PFX "ContentAddressableStorage/BatchUpdateBlobs", &req.base,
		&build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
		CALL_TIMEOUT, update_done, st);
	for (size_t i = 0; i < n; i++)
		free(dv[i]);
	free(dv);
	free(rv);
	free(reqs);
	if (rc == 0) {
		mb_unref(b);
		return; /* st goes with update_done */
	}
	mb_unref(b);
	infra_fail(b, "step %s: the executor is unreachable", b->bld->steps[b->step].name);
out:
	mb_step_free(st);
	mb_unref(b);
}

static void step_begin(struct mbuild *b)
{
	const struct cfg_step *s = &b->bld->steps[b->step];
	LOGI(MMOD, "build %" PRId64 ": step %d/%d %s", b->id, b->step + 1, b->bld->n_steps,
	     s->name);
	b->step_start_mono = mono_us();
	struct mstep *st = xcalloc(1, sizeof(*st));
	st->b = b;
	mb_make_action(b, st);
	mstate_step_start(b);
	PbDigest **dv = xcalloc(st->nblobs + 1, sizeof(*dv));
	for (size_t i = 0; i < st->nblobs; i++)
		dv[i] = mb_pbd(&st->blobs[i].d);
	PbFindMissing req = REV2(FIND_MISSING_BLOBS_REQUEST__INIT);
	req.instance_name = (char *)master_instance();
	req.blob_digests = dv;
	req.n_blob_digests = st->nblobs;
	mb_ref(b);
	int rc = rc_unary_start(
		master_ex(), REAPI_PFX "ContentAddressableStorage/FindMissingBlobs", &req.base,
		&build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
		CALL_TIMEOUT, missing_done, st);
	for (size_t i = 0; i < st->nblobs; i++)
		free(dv[i]);
	free(dv);
	if (rc != 0) {
		mb_unref(b);
		mb_step_free(st);
		infra_fail(b, "step %s: the executor is unreachable", s->name);
	}
}

static void next_step(struct mbuild *b)
{
	if (b->gone)
		return;
	if (b->step + 1 >= b->bld->n_steps) {
		report(b, 0, NULL);
		return;
	}
	b->step++;
	step_begin(b);
}

/* ---- resuming after a restart --------------------------------------------------------- */

/* WaitExecution ended: a final Operation is the step's end as from
 * Execute; anything else (unknown or expired operation, the stream
 * failed) runs the step again -- cacheable steps are then answered by the
 * action cache, the others run once more. */
/* True when op ended CANCELLED: with cancel-orphaned-jobs on, the
 * executor cancels the operation a stopping master walked away from. */
static bool op_cancelled(const Google__Longrunning__Operation *op)
{
	if (op->result_case != GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE || !op->response)
		return false;
	Build__Bazel__Remote__Execution__V2__ExecuteResponse *er =
		build__bazel__remote__execution__v2__execute_response__unpack(
			NULL, op->response->value.len, op->response->value.data);
	bool c = er && er->status && er->status->code == GRPC_CANCELLED;
	if (er)
		build__bazel__remote__execution__v2__execute_response__free_unpacked(er, NULL);
	return c;
}

static void wait_done(struct rc_call *k, int code, const char *message, void *arg)
{
	struct mbuild *b = arg;
	const Google__Longrunning__Operation *op = (const void *)b->last_op;
	if (b->gone || (code == RPC_OK && op && op->done && !op_cancelled(op))) {
		exec_done(k, code, message, arg);
		return;
	}
	b->exec_call = NULL;
	LOGI(MMOD,
	     "build %" PRId64 ": step %s: operation %s cannot be resumed (%s); running it "
	     "again",
	     b->id, b->bld->steps[b->step].name, b->op_name ? b->op_name : "",
	     code != RPC_OK   ? message
	     : op && op->done ? "cancelled"
			      : "no final result");
	if (b->last_op)
		protobuf_c_message_free_unpacked(b->last_op, NULL);
	b->last_op = NULL;
	step_begin(b);
	mb_unref(b);
}

static void wait_exec(struct mbuild *b)
{
	Build__Bazel__Remote__Execution__V2__WaitExecutionRequest req =
		REV2(WAIT_EXECUTION_REQUEST__INIT);
	req.name = b->op_name;
	struct rc_client *c = master_ex();
	struct rc_call *k = c ? rc_call_start(c, REAPI_PFX "Execution/WaitExecution", 0, NULL, 0,
					      exec_msg, wait_done, b)
			      : NULL;
	if (!k) {
		infra_fail(b, "step %s: the executor is unreachable", b->bld->steps[b->step].name);
		return;
	}
	size_t len;
	uint8_t *buf = mb_pack(&req.base, &len);
	rc_call_send(k, buf, len);
	free(buf);
	rc_call_close_send(k);
	mb_ref(b);
	b->exec_call = k;
}

void mb_resume(struct mbuild *b, const struct cfg_builder *bl, bool started)
{
	if (!started) {
		mb_run(b, bl);
		return;
	}
	mb_set_state(b, MB_STARTING);
	b->bld = builder_dup(bl);
	b->url = build_url(b->id);
	char *bad = prepare(b, bl);
	if (bad) {
		LOGI(MMOD, "build %" PRId64 ": invalid: %s", b->id, bad);
		report(b, BKE(FAILURE_REASON__INVALID_BUILD_DEFINITION), bad);
		free(bad);
		return;
	}
	mb_set_state(b, MB_RUNNING);
	if (b->step < 0)
		b->step = 0;
	if (b->step >= b->bld->n_steps) {
		infra_fail(b, "resumed at step %d, but builder %s has %d step(s) now", b->step + 1,
			   b->bld->name, b->bld->n_steps);
		return;
	}
	if (b->op_name && *b->op_name)
		wait_exec(b);
	else
		step_begin(b);
}

void mb_json_text(char **s, size_t *n, const struct json *j)
{
	struct sbuf sb = {*s, *n};
	mb_sb_json(&sb, j);
	*s = sb.s;
	*n = sb.n;
}
