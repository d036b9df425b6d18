/*
 * svc_ac.c - build.bazel.remote.execution.v2.ActionCache: GetActionResult
 * and UpdateActionResult.  The cache itself (Redis entries, the rule that
 * a result is served or stored only while every blob it references is in
 * CAS, the sliced completeness check) is the domain's, src/domain/ac.c;
 * this file checks the requests, inlines stdout/stderr/output files into
 * GetActionResult answers, and turns the domain's outcomes into gRPC
 * statuses (svc_fail, and reapi_finish_missing for missing blobs).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cfg.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "domain/ac.h"
#include "domain/blob.h"
#include "services/inst.h"
#include "services/reapi.h"
#include "services/svc.h"
#include "proto/pb.h"

#define MOD "ac"


/* Inlining: each blob at most INLINE_BLOB_MAX, and the whole response
 * kept under INLINE_MSG_MAX (the default receive limit of gRPC clients,
 * Bazel's included) minus a margin for framing. */
#define INLINE_BLOB_MAX (1 << 20)
#define INLINE_MSG_MAX	(4 << 20)
#define INLINE_MARGIN	(16 << 10)

void svc_ac_shutdown(void)
{
	ac_shutdown();
}

/* ---- GetActionResult ---------------------------------------------------- */

struct get_ctx {
	struct call *c;
	char *instance;
	struct digest action;
	bool inline_stdout, inline_stderr;
	size_t n_inline;
	char **inline_paths; /* sorted copies */
};

static void get_free(struct get_ctx *g)
{
	free(g->instance);
	for (size_t i = 0; i < g->n_inline; i++)
		free(g->inline_paths[i]);
	free(g->inline_paths);
	free(g);
}

static int strp_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool wants_inline(const struct get_ctx *g, const char *path)
{
	return g->n_inline &&
	       bsearch(&path, g->inline_paths, g->n_inline, sizeof(char *), strp_cmp) != NULL;
}

/* Swapped-in bytes fields of an unpacked result: the original value is
 * put back (and ours freed) before the message is freed. */
struct swap {
	ProtobufCBinaryData *field;
	ProtobufCBinaryData saved;
	uint8_t *ours;
};

struct swaps {
	struct swap *v;
	size_t n, cap;
};

static void swap_set(struct swaps *s, ProtobufCBinaryData *field, uint8_t *data, size_t len)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 4;
		s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	s->v[s->n++] = (struct swap){field, *field, data};
	field->data = data;
	field->len = len;
}

static void swaps_undo(struct swaps *s)
{
	while (s->n) {
		struct swap *w = &s->v[--s->n];
		*w->field = w->saved;
		free(w->ours);
	}
	free(s->v);
}

/* Fill one inline field from CAS if it fits the budget. */
static void inline_blob(struct swaps *s, struct blob_store *cas, ProtobufCBinaryData *field,
			const PbDigest *pd, int64_t *budget)
{
	struct digest d;
	if (!pd || field->len || reapi_digest_err(pd, &d, NULL) != 0 || d.size == 0)
		return;
	if (d.size > INLINE_BLOB_MAX || d.size + 8 > *budget)
		return; /* the client downloads it instead, as REAPI allows */
	uint8_t *data = NULL;
	if (blob_get(cas, &d, &data) != 0)
		return;
	*budget -= d.size + 8;
	swap_set(s, field, data, (size_t)d.size);
}

/* Strip inlined bytes the client did not ask for (kept when they are the
 * only copy), then inline what it asked for within the limits. */
static void apply_inlining(const struct get_ctx *g, PbActionResult *r, struct blob_store *cas,
			   struct swaps *s)
{
	if (!g->inline_stdout && r->stdout_digest && r->stdout_raw.len)
		swap_set(s, &r->stdout_raw, NULL, 0);
	if (!g->inline_stderr && r->stderr_digest && r->stderr_raw.len)
		swap_set(s, &r->stderr_raw, NULL, 0);
	for (size_t i = 0; i < r->n_output_files; i++) {
		Build__Bazel__Remote__Execution__V2__OutputFile *f = r->output_files[i];
		if (f->contents.len && f->digest && !wants_inline(g, f->path))
			swap_set(s, &f->contents, NULL, 0);
	}
	int64_t budget = INLINE_MSG_MAX - INLINE_MARGIN -
			 (int64_t)protobuf_c_message_get_packed_size(&r->base);
	if (g->inline_stdout)
		inline_blob(s, cas, &r->stdout_raw, r->stdout_digest, &budget);
	if (g->inline_stderr)
		inline_blob(s, cas, &r->stderr_raw, r->stderr_digest, &budget);
	for (size_t i = 0; i < r->n_output_files && g->n_inline; i++) {
		Build__Bazel__Remote__Execution__V2__OutputFile *f = r->output_files[i];
		if (wants_inline(g, f->path))
			inline_blob(s, cas, &f->contents, f->digest, &budget);
	}
}

static void get_answer(struct get_ctx *g, const struct ac_res *res)
{
	struct call *c = g->c;
	char ds[DIGEST_STR_LEN];
	digest_str(&g->action, ds, sizeof(ds));
	if (res->rc == 0 || res->rc == -ENOENT)
		metrics_ac_lookup(g->instance, res->rc == 0);
	if (res->rc == -ENOENT && !res->msg) {
		call_finish(c, GRPC_NOT_FOUND,
			    "no action cache entry for action %s in instance \"%s\"", ds,
			    g->instance);
		return;
	}
	if (res->rc != 0) {
		svc_fail(c, res->rc, "%s", res->msg ? res->msg : "reading the action cache");
		return;
	}
	struct inst *in = inst_find(g->instance);
	if (!in) {
		call_finish(c, GRPC_UNAVAILABLE, "instance \"%s\" was removed", g->instance);
		return;
	}
	PbActionResult *r = build__bazel__remote__execution__v2__action_result__unpack(
		&call_pb_allocator, res->len, res->result);
	if (!r) {
		call_finish(c, GRPC_INTERNAL, "action cache entry for action %s does not re-parse",
			    ds);
		return;
	}
	struct swaps s = {0};
	apply_inlining(g, r, in->cas, &s);
	call_reply(c, &r->base);
	swaps_undo(&s);
	build__bazel__remote__execution__v2__action_result__free_unpacked(r, &call_pb_allocator);
}

static void get_done(void *arg, const struct ac_res *res)
{
	struct get_ctx *g = arg;
	if (!call_done(g->c))
		get_answer(g, res);
	call_unref(g->c);
	get_free(g);
}

void svc_ac_get(struct call *c, const ProtobufCMessage *msg)
{
	const Build__Bazel__Remote__Execution__V2__GetActionResultRequest *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	struct digest action;
	if (!in || reapi_digest_function(c, req->digest_function) != 0 ||
	    reapi_digest(c, req->action_digest, "action_digest", &action) != 0)
		return;
	struct get_ctx *g = xcalloc(1, sizeof(*g));
	g->c = c;
	g->instance = xstrdup(req->instance_name);
	g->action = action;
	g->inline_stdout = req->inline_stdout;
	g->inline_stderr = req->inline_stderr;
	if (req->n_inline_output_files) {
		g->n_inline = req->n_inline_output_files;
		g->inline_paths = xcalloc(g->n_inline, sizeof(char *));
		for (size_t i = 0; i < g->n_inline; i++)
			g->inline_paths[i] = xstrdup(req->inline_output_files[i]);
		qsort(g->inline_paths, g->n_inline, sizeof(char *), strp_cmp);
	}
	call_ref(c);
	int rc = ac_get(in->name, in->cas, &action, get_done, g);
	if (rc != 0) {
		svc_fail(c, rc, "cannot read the action cache");
		call_unref(c);
		get_free(g);
	}
}

/* ---- UpdateActionResult ------------------------------------------------- */

struct upd_ctx {
	struct call *c;
	struct digest action;
};

static void upd_answer(struct upd_ctx *u, const struct ac_res *res)
{
	struct call *c = u->c;
	char ds[DIGEST_STR_LEN];
	digest_str(&u->action, ds, sizeof(ds));
	switch (res->rc) {
	case 0: break;
	case -EINVAL:
	case ERR_TOO_LARGE: svc_fail(c, res->rc, "action_result.%s", res->msg); return;
	case ERR_PRECONDITION:
		reapi_finish_missing(c, res->missing, NULL, res->nmissing,
				     "action result for %s references %zu blob%s missing from CAS "
				     "(upload them first)",
				     ds, res->nmissing, res->nmissing == 1 ? "" : "s");
		return;
	default:
		svc_fail(c, res->rc, "%s", res->msg ? res->msg : "storing the action result");
		return;
	}
	PbActionResult *r = build__bazel__remote__execution__v2__action_result__unpack(
		&call_pb_allocator, res->len, res->result);
	if (r) {
		call_reply(c, &r->base);
		build__bazel__remote__execution__v2__action_result__free_unpacked(
			r, &call_pb_allocator);
	} else {
		call_finish(c, GRPC_INTERNAL, "stored action result does not re-parse");
	}
}

static void upd_done(void *arg, const struct ac_res *res)
{
	struct upd_ctx *u = arg;
	if (!call_done(u->c))
		upd_answer(u, res); /* else: stored all the same; nothing to answer */
	call_unref(u->c);
	free(u);
}

void svc_ac_update(struct call *c, const ProtobufCMessage *msg)
{
	const Build__Bazel__Remote__Execution__V2__UpdateActionResultRequest *req =
		(const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	if (!in)
		return;
	if (!inst_cfg(in)->allow_updates) {
		call_finish(c, GRPC_PERMISSION_DENIED,
			    "instance \"%s\" does not accept action cache updates "
			    "(allow-updates: false)",
			    req->instance_name);
		return;
	}
	struct digest action;
	if (reapi_digest_function(c, req->digest_function) != 0 ||
	    reapi_digest(c, req->action_digest, "action_digest", &action) != 0)
		return;
	if (!req->action_result) {
		char ds[DIGEST_STR_LEN];
		call_finish(c, GRPC_INVALID_ARGUMENT, "action_result is required (action %s)",
			    digest_str(&action, ds, sizeof(ds)));
		return;
	}
	struct upd_ctx *u = xcalloc(1, sizeof(*u));
	u->c = c;
	u->action = action;
	call_ref(c);
	int rc = ac_put(in->name, in->cas, &action, req->action_result, upd_done, u);
	if (rc != 0) {
		svc_fail(c, rc, "cannot store the action result");
		call_unref(c);
		free(u);
	}
}
