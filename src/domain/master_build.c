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
#include "domain/master_int.h"
#include "google/longrunning/operations.pb-c.h"

#define BK_PFX		       "/reactor.buckets.v1.Buckets/"
#define REAPI_PFX	       "/build.bazel.remote.execution.v2."
#define CALL_TIMEOUT	       (30LL * 1000000)
#define GRPC_DEADLINE_EXCEEDED 4
#define GRPC_CANCELLED	       1

/* A blob the master made for a step (directory, build.json, command,
 * action), uploaded unless the CAS has it. */
struct mblob {
	struct digest d;
	uint8_t *data;
	size_t len;
};

/* One step's uploads in flight. */
struct mstep {
	struct mbuild *b;
	struct mblob *blobs;
	size_t nblobs;
};

static void report(struct mbuild *b, int reason, const char *error);
static void step_begin(struct mbuild *b);

/* ---- small JSON writer ------------------------------------------------------------ */

struct sbuf {
	char *s;
	size_t n;
};

static void sb_add(struct sbuf *sb, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void sb_add(struct sbuf *sb, const char *fmt, ...)
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

static void sb_str(struct sbuf *sb, const char *s, size_t len)
{
	json_quote(&sb->s, &sb->n, s, len);
}

static void sb_json(struct sbuf *sb, const struct json *j)
{
	switch (j->type) {
	case JSON_NULL: sb_add(sb, "null"); break;
	case JSON_BOOL: sb_add(sb, j->b ? "true" : "false"); break;
	case JSON_NUMBER:
		if (j->is_int)
			sb_add(sb, "%" PRId64, j->i);
		else
			sb_add(sb, "%.17g", j->num);
		break;
	case JSON_STRING: sb_str(sb, j->str, j->len); break;
	case JSON_ARRAY:
	case JSON_OBJECT:
		sb_add(sb, j->type == JSON_ARRAY ? "[" : "{");
		for (size_t i = 0; i < j->n; i++) {
			if (i)
				sb_add(sb, ",");
			if (j->type == JSON_OBJECT) {
				sb_str(sb, j->keys[i], strlen(j->keys[i]));
				sb_add(sb, ":");
			}
			sb_json(sb, j->items[i]);
		}
		sb_add(sb, j->type == JSON_ARRAY ? "]" : "}");
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
	sb_add(&sb, "{");
	int n = 0;
	char *err = NULL;
	for (int i = 0; i < bl->n_props && !err; i++) {
		const struct cfg_builder_prop *cp = &bl->props[i];
		const struct json *v = props ? json_get(props, cp->name) : NULL;
		if (!v) {
			if (cp->def_json) {
				sb_add(&sb, "%s", n++ ? "," : "");
				sb_str(&sb, cp->name, strlen(cp->name));
				sb_add(&sb, ":%s", cp->def_json);
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
		sb_add(&sb, "%s", n++ ? "," : "");
		sb_str(&sb, props->keys[i], strlen(props->keys[i]));
		sb_add(&sb, ":");
		sb_json(&sb, props->items[i]);
	}
	sb_add(&sb, "}");
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
		sb_add(&bj, "{\"bucket\":");
		sb_str(&bj, b->bucket, strlen(b->bucket));
		sb_add(&bj, ",\"builder\":");
		sb_str(&bj, bl->name, strlen(bl->name));
		if (withid)
			sb_add(&bj, ",\"build_id\":%" PRId64, b->id);
		sb_add(&bj, ",\"properties\":%s,\"changes\":", b->props_json);
		const struct json *ch = json_get(p, "changes");
		if (ch)
			sb_json(&bj, ch);
		else
			sb_add(&bj, "[]");
		sb_add(&bj, "}\n");
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

void mb_run(struct mbuild *b, const struct cfg_builder *bl)
{
	mb_set_state(b, MB_STARTING);
	b->bld = builder_dup(bl);
	b->url = xasprintf("reactor://%s/builds/%" PRId64, master_name(), b->id);
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
	if (mrpc_unary(master_bk(), BK_PFX "Start", &req.base,
		       &reactor__buckets__v1__build_response__descriptor, CALL_TIMEOUT, start_done,
		       b) != 0) {
		mb_unref(b);
		mb_release(b, "no connection");
	}
}

static void result_details(struct mbuild *b, struct sbuf *sb, const char *error)
{
	sb_add(sb, "{\"properties\":%s,\"steps\":[", b->props_json ? b->props_json : "{}");
	for (int i = 0; i < b->nrecs; i++) {
		const struct mb_steprec *r = &b->recs[i];
		sb_add(sb, "%s{\"name\":", i ? "," : "");
		sb_str(sb, r->name, strlen(r->name));
		sb_add(sb,
		       ",\"status\":\"%s\",\"exit_code\":%d,\"duration_us\":%" PRId64
		       ",\"cached\":%s,\"action_digest\":\"%s\",\"stdout_digest\":\"%s\","
		       "\"stderr_digest\":\"%s\",\"worker\":",
		       r->status, r->exit_code, r->duration_us, r->cached ? "true" : "false",
		       r->action, r->out, r->err);
		sb_str(sb, r->worker ? r->worker : "", r->worker ? strlen(r->worker) : 0);
		sb_add(sb, "}");
	}
	sb_add(sb, "]");
	if (error) {
		sb_add(sb, ",\"error\":");
		sb_str(sb, error, strlen(error));
	}
	sb_add(sb, "}");
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
		rc = mrpc_unary(master_bk(), BK_PFX "Succeed", &req.base,
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
		rc = mrpc_unary(master_bk(), BK_PFX "Fail", &req.base,
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

/* ---- the step's input root and action ------------------------------------------------ */

static PbDigest *pbd(const struct digest *d)
{
	PbDigest *p = xmalloc(sizeof(*p));
	build__bazel__remote__execution__v2__digest__init(p);
	p->hash = (char *)d->hex;
	p->size_bytes = d->size;
	return p;
}

static void add_blob(struct mstep *st, uint8_t *data, size_t len, struct digest *out)
{
	digest_of(data, len, out);
	for (size_t i = 0; i < st->nblobs; i++) {
		if (digest_eq(&st->blobs[i].d, out)) {
			free(data);
			return;
		}
	}
	st->blobs = xrealloc(st->blobs, (st->nblobs + 1) * sizeof(*st->blobs));
	st->blobs[st->nblobs++] = (struct mblob){.d = *out, .data = data, .len = len};
}

static uint8_t *pack(const ProtobufCMessage *msg, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = xmalloc(*len ? *len : 1);
	protobuf_c_message_pack(msg, buf);
	return buf;
}

static int file_cmp(const void *a, const void *b)
{
	return strcmp(((const struct mb_file *)a)->path, ((const struct mb_file *)b)->path);
}

/* The Directory of files[lo, hi), all under prefix (length plen), packed
 * into st; its digest in *out. */
static void pack_dir(struct mstep *st, struct mb_file *files, int lo, int hi, size_t plen,
		     struct digest *out)
{
	PbDirectory dir = REV2(DIRECTORY__INIT);
	PbFileNode **fn = xcalloc((size_t)(hi - lo) + 1, sizeof(*fn));
	PbDirectoryNode **dn = xcalloc((size_t)(hi - lo) + 1, sizeof(*dn));
	struct digest *dd = xcalloc((size_t)(hi - lo) + 1, sizeof(*dd));
	char **names = xcalloc((size_t)(hi - lo) + 1, sizeof(*names));
	size_t nf = 0, nd = 0;
	for (int i = lo; i < hi;) {
		const char *rest = files[i].path + plen;
		const char *slash = strchr(rest, '/');
		if (!slash) {
			PbFileNode *f = xmalloc(sizeof(*f));
			build__bazel__remote__execution__v2__file_node__init(f);
			f->name = (char *)rest;
			f->digest = pbd(&files[i].d);
			f->is_executable = files[i].exec;
			fn[nf++] = f;
			i++;
			continue;
		}
		size_t nl = (size_t)(slash - rest);
		int j = i;
		while (j < hi && strncmp(files[j].path + plen, rest, nl + 1) == 0)
			j++;
		char *name = xstrndup(rest, nl);
		pack_dir(st, files, i, j, plen + nl + 1, &dd[nd]);
		PbDirectoryNode *d = xmalloc(sizeof(*d));
		build__bazel__remote__execution__v2__directory_node__init(d);
		d->name = name;
		names[nd] = name;
		d->digest = pbd(&dd[nd]);
		dn[nd++] = d;
		i = j;
	}
	dir.files = fn;
	dir.n_files = nf;
	dir.directories = dn;
	dir.n_directories = nd;
	size_t len;
	uint8_t *buf = pack(&dir.base, &len);
	add_blob(st, buf, len, out);
	for (size_t i = 0; i < nf; i++) {
		free(fn[i]->digest);
		free(fn[i]);
	}
	for (size_t i = 0; i < nd; i++) {
		free(dn[i]->digest);
		free(dn[i]);
		free(names[i]);
	}
	free(fn);
	free(dn);
	free(dd);
	free(names);
}

/* "PROP_" + name upper-cased, anything but [A-Za-z0-9] -> '_'. */
static char *env_name(const char *pfx, const char *name)
{
	char *s = xasprintf("%s%s", pfx, name);
	for (char *p = s + strlen(pfx); *p; p++)
		*p = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
	return s;
}

struct envv {
	char **names, **values;
	size_t n;
};

static void env_set(struct envv *e, char *name, char *value)
{
	for (size_t i = 0; i < e->n; i++) {
		if (strcmp(e->names[i], name) == 0) {
			free(e->names[i]);
			free(e->values[i]);
			e->names[i] = name;
			e->values[i] = value;
			return;
		}
	}
	e->names = xrealloc(e->names, (e->n + 1) * sizeof(char *));
	e->values = xrealloc(e->values, (e->n + 1) * sizeof(char *));
	e->names[e->n] = name;
	e->values[e->n++] = value;
}

/* A JSON value as an environment value: strings as they are, the rest
 * as JSON text. */
static char *env_value(const struct json *v)
{
	if (v->type == JSON_STRING)
		return xstrdup(v->str);
	struct sbuf sb = {0};
	sb_json(&sb, v);
	return sb.s;
}

static void build_env(struct mbuild *b, const struct cfg_step *s, struct envv *e)
{
	if (!s->cache)
		env_set(e, xstrdup("BUILD_ID"), xasprintf("%" PRId64, b->id));
	env_set(e, xstrdup("BUILD_BUCKET"), xstrdup(b->bucket));
	env_set(e, xstrdup("BUILDER_NAME"), xstrdup(b->bld->name));
	char er[8];
	struct json *p = json_parse(b->props_json, strlen(b->props_json), er, sizeof(er));
	for (size_t i = 0; p && i < p->n; i++)
		env_set(e, env_name("PROP_", p->keys[i]), env_value(p->items[i]));
	json_free(p);
	/* The first change's fields: CHANGE_ID, CHANGE_REVISION, ...,
	 * CHANGE_AUTHOR_EMAIL. */
	p = json_parse(b->params_json, strlen(b->params_json), er, sizeof(er));
	const struct json *ch = p ? json_get(p, "changes") : NULL;
	if (ch && ch->type == JSON_ARRAY && ch->n > 0 && ch->items[0]->type == JSON_OBJECT) {
		const struct json *c = ch->items[0];
		for (size_t i = 0; i < c->n; i++) {
			const struct json *v = c->items[i];
			if (v->type == JSON_OBJECT) {
				for (size_t k = 0; k < v->n; k++) {
					if (v->items[k]->type == JSON_OBJECT ||
					    v->items[k]->type == JSON_ARRAY)
						continue;
					char *pre = env_name("CHANGE_", c->keys[i]);
					char *pre2 = xasprintf("%s_", pre);
					env_set(e, env_name(pre2, v->keys[k]),
						env_value(v->items[k]));
					free(pre);
					free(pre2);
				}
			} else if (v->type != JSON_ARRAY) {
				env_set(e, env_name("CHANGE_", c->keys[i]), env_value(v));
			}
		}
	}
	json_free(p);
	for (int i = 0; i < s->n_env; i++) {
		const char *eq = strchr(s->env[i], '=');
		if (!eq)
			continue;
		env_set(e, xstrndup(s->env[i], (size_t)(eq - s->env[i])), xstrdup(eq + 1));
	}
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Command and Action of step b->step into st; the action digest in
 * b->action_d. */
static void make_action(struct mbuild *b, struct mstep *st)
{
	const struct cfg_step *s = &b->bld->steps[b->step];
	/* Input root: the workspace plus build.json. */
	int n = b->nfiles + 1;
	struct mb_file *files = xcalloc((size_t)n, sizeof(*files));
	int k = 0;
	for (int i = 0; i < b->nfiles; i++)
		if (strcmp(b->files[i].path, "build.json") != 0)
			files[k++] = b->files[i];
	const char *bj = s->cache ? b->build_json : b->build_json_id;
	struct digest bjd;
	add_blob(st, (uint8_t *)xstrdup(bj), strlen(bj), &bjd);
	files[k++] = (struct mb_file){.path = "build.json", .d = bjd};
	qsort(files, (size_t)k, sizeof(*files), file_cmp);
	struct digest root;
	pack_dir(st, files, 0, k, 0, &root);
	free(files);

	PbCommand cmd = REV2(COMMAND__INIT);
	cmd.arguments = s->argv;
	cmd.n_arguments = (size_t)s->argc;
	struct envv e = {0};
	build_env(b, s, &e);
	/* Sorted by name, as REAPI wants. */
	size_t *ord = xcalloc(e.n + 1, sizeof(*ord));
	for (size_t i = 0; i < e.n; i++)
		ord[i] = i;
	for (size_t i = 1; i < e.n; i++)
		for (size_t j = i; j > 0 && strcmp(e.names[ord[j - 1]], e.names[ord[j]]) > 0; j--) {
			size_t t = ord[j];
			ord[j] = ord[j - 1];
			ord[j - 1] = t;
		}
	Build__Bazel__Remote__Execution__V2__Command__EnvironmentVariable *ev =
		xcalloc(e.n + 1, sizeof(*ev));
	Build__Bazel__Remote__Execution__V2__Command__EnvironmentVariable **evp =
		xcalloc(e.n + 1, sizeof(*evp));
	for (size_t i = 0; i < e.n; i++) {
		build__bazel__remote__execution__v2__command__environment_variable__init(&ev[i]);
		ev[i].name = e.names[ord[i]];
		ev[i].value = e.values[ord[i]];
		evp[i] = &ev[i];
	}
	cmd.environment_variables = evp;
	cmd.n_environment_variables = e.n;
	char **outs = xcalloc((size_t)s->n_outputs + 1, sizeof(*outs));
	memcpy(outs, s->outputs, (size_t)s->n_outputs * sizeof(*outs));
	qsort(outs, (size_t)s->n_outputs, sizeof(*outs), str_cmp);
	cmd.output_paths = outs;
	cmd.n_output_paths = (size_t)s->n_outputs;
	size_t len;
	uint8_t *buf = pack(&cmd.base, &len);
	struct digest cmdd;
	add_blob(st, buf, len, &cmdd);
	free(outs);
	free(ev);
	free(evp);
	free(ord);
	for (size_t i = 0; i < e.n; i++) {
		free(e.names[i]);
		free(e.values[i]);
	}
	free(e.names);
	free(e.values);

	PbAction act = REV2(ACTION__INIT);
	act.command_digest = pbd(&cmdd);
	act.input_root_digest = pbd(&root);
	act.do_not_cache = !s->cache;
	Google__Protobuf__Duration to = GOOGLE__PROTOBUF__DURATION__INIT;
	if (s->timeout_us > 0) {
		to.seconds = s->timeout_us / 1000000;
		to.nanos = (int32_t)(s->timeout_us % 1000000) * 1000;
		act.timeout = &to;
	}
	PbPlatform plat = REV2(PLATFORM__INIT);
	PbPlatformProperty *pp = xcalloc((size_t)s->n_platform + 1, sizeof(*pp));
	PbPlatformProperty **ppp = xcalloc((size_t)s->n_platform + 1, sizeof(*ppp));
	char **pl = xcalloc((size_t)s->n_platform + 1, sizeof(*pl));
	memcpy(pl, s->platform, (size_t)s->n_platform * sizeof(*pl));
	qsort(pl, (size_t)s->n_platform, sizeof(*pl), str_cmp);
	size_t np = 0;
	for (int i = 0; i < s->n_platform; i++) {
		char *eq = strchr(pl[i], '=');
		if (!eq)
			continue;
		build__bazel__remote__execution__v2__platform__property__init(&pp[np]);
		pp[np].name = xstrndup(pl[i], (size_t)(eq - pl[i]));
		pp[np].value = eq + 1;
		ppp[np] = &pp[np];
		np++;
	}
	if (np) {
		plat.properties = ppp;
		plat.n_properties = np;
		act.platform = &plat;
	}
	buf = pack(&act.base, &len);
	add_blob(st, buf, len, &b->action_d);
	for (size_t i = 0; i < np; i++)
		free(pp[i].name);
	free(pp);
	free(ppp);
	free(pl);
	free(act.command_digest);
	free(act.input_root_digest);
}

static void mstep_free(struct mstep *st)
{
	for (size_t i = 0; i < st->nblobs; i++)
		free(st->blobs[i].data);
	free(st->blobs);
	free(st);
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
	int rc = mrpc_unary(
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
	PbDigest *ad = pbd(&b->action_d);
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
	uint8_t *buf = pack(&req.base, &len);
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
	mstep_free(st);
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
			dv[n] = pbd(&st->blobs[k].d);
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
	int rc = mrpc_unary(
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
	mstep_free(st);
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
	make_action(b, st);
	mstate_step_start(b);
	PbDigest **dv = xcalloc(st->nblobs + 1, sizeof(*dv));
	for (size_t i = 0; i < st->nblobs; i++)
		dv[i] = pbd(&st->blobs[i].d);
	PbFindMissing req = REV2(FIND_MISSING_BLOBS_REQUEST__INIT);
	req.instance_name = (char *)master_instance();
	req.blob_digests = dv;
	req.n_blob_digests = st->nblobs;
	mb_ref(b);
	int rc = mrpc_unary(
		master_ex(), REAPI_PFX "ContentAddressableStorage/FindMissingBlobs", &req.base,
		&build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
		CALL_TIMEOUT, missing_done, st);
	for (size_t i = 0; i < st->nblobs; i++)
		free(dv[i]);
	free(dv);
	if (rc != 0) {
		mb_unref(b);
		mstep_free(st);
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
	LOGI(MMOD, "build %" PRId64 ": step %s: operation %s cannot be resumed (%s); running it "
		   "again",
	     b->id, b->bld->steps[b->step].name, b->op_name ? b->op_name : "",
	     code != RPC_OK ? message
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
	uint8_t *buf = pack(&req.base, &len);
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
	b->url = xasprintf("reactor://%s/builds/%" PRId64, master_name(), b->id);
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
	sb_json(&sb, j);
	*s = sb.s;
	*n = sb.n;
}
