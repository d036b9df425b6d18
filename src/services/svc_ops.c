/*
 * svc_ops.c - google.longrunning.Operations over the scheduler's
 * operations (GetOperation, ListOperations, CancelOperation,
 * DeleteOperation), and the one function that turns an operation's view
 * into the Operation message every stream and reply carries: metadata is
 * an ExecuteOperationMetadata (stage, action digest); a finished
 * operation carries an ExecuteResponse (result, cached_result, status,
 * message).  Errors of the execution itself travel in
 * ExecuteResponse.status, never in Operation.error.
 *
 * Ownership (issue 12; domain/sched.h): a caller reads, waits on,
 * cancels, deletes and lists the operations it created, or anyone's with
 * ops-admin on the operation's instance.  Another identity's operation
 * answers PERMISSION_DENIED naming ops-admin, for reads too (Google API
 * convention: the caller lacks access; operation names are random UUIDs,
 * so saying one exists reveals nothing worth hiding) - NOT_FOUND stays
 * for names that do not exist.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "core/cfg.h"
#include "core/err.h"
#include "google/longrunning/operations.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "services/auth.h"
#include "services/inst.h"
#include "core/log.h"
#include "services/reapi.h"
#include "domain/sched.h"
#include "proto/pb.h"
#include "services/svc.h"

#define URL_META     "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata"
#define URL_RESP     "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse"
#define PAGE_DEFAULT 100
#define PAGE_MAX     1000

/* One Operation message and the buffers it points into. */
struct op_msg {
	Google__Longrunning__Operation op;
	Google__Protobuf__Any md, resp;
	uint8_t *md_buf, *resp_buf;
};

static void op_msg_build(struct op_msg *m, const char *name, const struct sched_view *v)
{
	memset(m, 0, sizeof(*m));
	google__longrunning__operation__init(&m->op);
	m->op.name = (char *)name;

	Build__Bazel__Remote__Execution__V2__ExecuteOperationMetadata md =
		REV2(EXECUTE_OPERATION_METADATA__INIT);
	PbDigest ad;
	reapi_pb_digest(&ad, &v->action);
	md.stage = (Build__Bazel__Remote__Execution__V2__ExecutionStage__Value)v->stage;
	md.action_digest = &ad;
	md.digest_function = REV2(DIGEST_FUNCTION__VALUE__SHA256);
	size_t n = protobuf_c_message_get_packed_size(&md.base);
	m->md_buf = xmalloc(n ? n : 1);
	protobuf_c_message_pack(&md.base, m->md_buf);
	google__protobuf__any__init(&m->md);
	m->md.type_url = (char *)URL_META;
	m->md.value.data = m->md_buf;
	m->md.value.len = n;
	m->op.metadata = &m->md;

	if (v->stage != SCHED_COMPLETED)
		return;
	m->op.done = true;
	Build__Bazel__Remote__Execution__V2__ExecuteResponse er = REV2(EXECUTE_RESPONSE__INIT);
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	st.code = v->status;
	st.message = v->message ? v->message : (char *)"";
	er.status = &st;
	er.cached_result = v->cached;
	if (v->status != 0)
		er.message = st.message;
	Build__Bazel__Remote__Execution__V2__ActionResult *r = NULL;
	if (v->result && v->result_len) {
		r = build__bazel__remote__execution__v2__action_result__unpack(
			&call_pb_allocator, v->result_len, v->result);
		if (!r)
			LOGW("ops", "operation %s: stored ActionResult does not parse", name);
		er.result = r;
	}
	n = protobuf_c_message_get_packed_size(&er.base);
	m->resp_buf = xmalloc(n ? n : 1);
	protobuf_c_message_pack(&er.base, m->resp_buf);
	if (r)
		build__bazel__remote__execution__v2__action_result__free_unpacked(
			r, &call_pb_allocator);
	google__protobuf__any__init(&m->resp);
	m->resp.type_url = (char *)URL_RESP;
	m->resp.value.data = m->resp_buf;
	m->resp.value.len = n;
	m->op.result_case = GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE;
	m->op.response = &m->resp;
}

static void op_msg_free(struct op_msg *m)
{
	free(m->md_buf);
	free(m->resp_buf);
}

int svc_ops_send(struct call *c, const char *name, const struct sched_view *v)
{
	struct op_msg m;
	op_msg_build(&m, name, v);
	int rc = call_send(c, &m.op.base);
	op_msg_free(&m);
	return rc;
}

uint8_t *svc_ops_pack(const char *name, const struct sched_view *v, size_t *len)
{
	struct op_msg m;
	op_msg_build(&m, name, v);
	size_t n = protobuf_c_message_get_packed_size(&m.op.base);
	uint8_t *buf = xmalloc(n + 5);
	protobuf_c_message_pack(&m.op.base, buf + 5);
	op_msg_free(&m);
	*len = n;
	return buf;
}

/* Operations are global names; the instance (for the execution switch)
 * is checked only where the request names one. */
static bool name_ok(struct call *c, const char *name)
{
	if (!name || !*name) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "name is required");
		return false;
	}
	if (strlen(name) > 200) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "operation name longer than 200 bytes");
		return false;
	}
	return true;
}

/* Finish c for a scheduler error (core/err.h) while `doing`; NOT_FOUND
 * names the operation. */
static void finish_err(struct call *c, int rc, const char *name, const char *doing)
{
	if (rc == -ENOENT)
		call_finish(c, GRPC_NOT_FOUND,
			    "operation %s not found (unknown, deleted, or past its retention)",
			    name);
	else
		svc_fail(c, rc, "cannot %s", doing);
}

/* ---- ownership ------------------------------------------------------------- */

bool svc_ops_may_see(struct call *c, const char *name, const struct sched_view *v)
{
	if (sched_op_owned(v, auth_identity(c)) || auth_has(c, v->instance, ROLE_OPS_ADMIN))
		return true;
	char *what = xasprintf("operation %s belongs to another identity", name);
	auth_deny(c, v->instance, ROLE_OPS_ADMIN, what);
	free(what);
	return false;
}

/* ---- GetOperation ------------------------------------------------------- */

struct one {
	struct call *c;
	char *name;
};

static struct one *one_new(struct call *c, const char *name)
{
	struct one *o = xcalloc(1, sizeof(*o));
	o->c = c;
	o->name = xstrdup(name);
	call_ref(c);
	return o;
}

static void one_free(struct one *o)
{
	call_unref(o->c);
	free(o->name);
	free(o);
}

static void get_reply(void *arg, int rc, struct sched_view *v, size_t n)
{
	struct one *o = arg;
	if (call_done(o->c)) {
	} else if (rc != 0) {
		finish_err(o->c, rc, o->name, "read the operation");
	} else if (n != 1 || !v[0].exists) {
		finish_err(o->c, -ENOENT, o->name, NULL);
	} else if (svc_ops_may_see(o->c, o->name, &v[0])) {
		struct op_msg m;
		op_msg_build(&m, o->name, &v[0]);
		call_reply(o->c, &m.op.base);
		op_msg_free(&m);
	}
	one_free(o);
}

void svc_ops_get(struct call *c, const ProtobufCMessage *msg)
{
	const Google__Longrunning__GetOperationRequest *req = (const void *)msg;
	if (!name_ok(c, req->name))
		return;
	struct one *o = one_new(c, req->name);
	const char *names[] = {o->name};
	int rc = sched_view(names, 1, get_reply, o);
	if (rc != 0) {
		finish_err(c, rc, o->name, "read the operation");
		one_free(o);
	}
}

/* ---- Cancel / Delete ------------------------------------------------------ */

/* Cancel and Delete first act as the caller's own; on another identity's
 * operation (-EACCES, with its instance) they go again as an ops-admin
 * when the caller is one there.  The owner never changes, so the second
 * run acts on what the first one saw. */
typedef int (*change_fn)(const char *op, const char *who, sched_change_cb cb, void *arg);

struct change {
	struct one o;
	change_fn fn;
	const char *doing;
};

static void change_reply(void *arg, int rc, const char *instance)
{
	struct change *ch = arg;
	struct one *o = &ch->o;
	if (call_done(o->c)) {
	} else if (rc == -EACCES) {
		if (auth_has(o->c, instance, ROLE_OPS_ADMIN)) {
			rc = ch->fn(o->name, NULL, change_reply, ch);
			if (rc == 0)
				return;
			finish_err(o->c, rc, o->name, ch->doing);
		} else {
			char *what = xasprintf("operation %s belongs to another identity", o->name);
			auth_deny(o->c, instance, ROLE_OPS_ADMIN, what);
			free(what);
		}
	} else if (rc != 0) {
		finish_err(o->c, rc, o->name, ch->doing);
	} else {
		Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
		call_reply(o->c, &e.base);
	}
	call_unref(o->c);
	free(o->name);
	free(ch);
}

static void change(struct call *c, const char *name, change_fn fn, const char *doing)
{
	struct change *ch = xcalloc(1, sizeof(*ch));
	ch->o.c = c;
	ch->o.name = xstrdup(name);
	ch->fn = fn;
	ch->doing = doing;
	call_ref(c);
	int rc = fn(ch->o.name, auth_identity(c), change_reply, ch);
	if (rc != 0) {
		finish_err(c, rc, name, doing);
		call_unref(c);
		free(ch->o.name);
		free(ch);
	}
}

void svc_ops_cancel(struct call *c, const ProtobufCMessage *msg)
{
	const Google__Longrunning__CancelOperationRequest *req = (const void *)msg;
	if (!name_ok(c, req->name))
		return;
	LOGI("ops", CALL_FMT ": CancelOperation %s", CALL_ARGS(c), req->name);
	change(c, req->name, sched_cancel_op, "cancel the operation");
}

void svc_ops_delete(struct call *c, const ProtobufCMessage *msg)
{
	const Google__Longrunning__DeleteOperationRequest *req = (const void *)msg;
	if (!name_ok(c, req->name))
		return;
	change(c, req->name, sched_delete_op, "delete the operation");
}

/* ---- ListOperations ----------------------------------------------------- */

struct list {
	struct call *c;
	char **names;
	size_t n;
	int64_t next;
};

static void list_free(struct list *l)
{
	call_unref(l->c);
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->names);
	free(l);
}

static void list_views(void *arg, int rc, struct sched_view *v, size_t n)
{
	struct list *l = arg;
	if (call_done(l->c)) {
		list_free(l);
		return;
	}
	if (rc != 0 || n != l->n) {
		svc_fail(l->c, rc != 0 ? rc : ERR_STORE_REPLY, "cannot read the operations");
		list_free(l);
		return;
	}
	struct op_msg *ms = xcalloc(n ? n : 1, sizeof(*ms));
	Google__Longrunning__Operation **ops = xcalloc(n ? n : 1, sizeof(*ops));
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (!v[i].exists)
			continue; /* removed between the two reads */
		op_msg_build(&ms[k], l->names[i], &v[i]);
		ops[k] = &ms[k].op;
		k++;
	}
	Google__Longrunning__ListOperationsResponse resp =
		GOOGLE__LONGRUNNING__LIST_OPERATIONS_RESPONSE__INIT;
	resp.n_operations = k;
	resp.operations = ops;
	char tok[24];
	if (l->next >= 0) {
		snprintf(tok, sizeof tok, "%lld", (long long)l->next);
		resp.next_page_token = tok;
	}
	call_reply(l->c, &resp.base);
	for (size_t i = 0; i < k; i++)
		op_msg_free(&ms[i]);
	free(ms);
	free(ops);
	list_free(l);
}

static void list_names(void *arg, int rc, char **names, size_t n, int64_t next)
{
	struct list *l = arg;
	if (call_done(l->c) || rc != 0) {
		if (!call_done(l->c))
			svc_fail(l->c, rc, "cannot list the operations");
		list_free(l);
		return;
	}
	l->n = n;
	l->next = next;
	l->names = xcalloc(n ? n : 1, sizeof(*l->names));
	for (size_t i = 0; i < n; i++)
		l->names[i] = xstrdup(names[i]);
	if (n == 0) {
		list_views(l, 0, NULL, 0);
		return;
	}
	rc = sched_view((const char *const *)l->names, n, list_views, l);
	if (rc != 0) {
		svc_fail(l->c, rc, "cannot read the operations");
		list_free(l);
	}
}

/* filter: "" or "stage=NAME" (spaces allowed around '='). */
static int parse_filter(const char *f, int *stage)
{
	*stage = 0;
	while (*f == ' ')
		f++;
	if (!*f)
		return 0;
	if (strncmp(f, "stage", 5) != 0)
		return -1;
	f += 5;
	while (*f == ' ')
		f++;
	if (*f++ != '=')
		return -1;
	while (*f == ' ')
		f++;
	char name[32];
	size_t len = strcspn(f, " ");
	if (len == 0 || len >= sizeof name)
		return -1;
	memcpy(name, f, len);
	name[len] = '\0';
	for (const char *t = f + len; *t; t++)
		if (*t != ' ')
			return -1;
	*stage = sched_stage_parse(name);
	return *stage > 0 ? 0 : -1;
}

void svc_ops_list(struct call *c, const ProtobufCMessage *msg)
{
	const Google__Longrunning__ListOperationsRequest *req = (const void *)msg;
	/* `name` is the collection: the instance name ("" is the default
	 * instance). */
	struct inst *in = inst_lookup(c, req->name);
	if (!in)
		return;
	int stage;
	if (parse_filter(req->filter, &stage) != 0) {
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "unsupported filter \"%.100s\": use \"\" or \"stage=QUEUED\" "
			    "(CACHE_CHECK, QUEUED, EXECUTING or COMPLETED)",
			    req->filter);
		return;
	}
	int size = req->page_size <= 0	       ? PAGE_DEFAULT
		   : req->page_size > PAGE_MAX ? PAGE_MAX
					       : req->page_size;
	int64_t offset = 0;
	if (req->page_token && *req->page_token) {
		char *end;
		offset = strtoll(req->page_token, &end, 10);
		if (*end || offset < 0) {
			call_finish(c, GRPC_INVALID_ARGUMENT, "invalid page_token \"%.40s\"",
				    req->page_token);
			return;
		}
	}
	struct list *l = xcalloc(1, sizeof(*l));
	l->c = c;
	call_ref(c);
	/* One's own operations; an ops-admin lists everyone's. */
	const char *owner = auth_has(c, in->name, ROLE_OPS_ADMIN) ? NULL : auth_identity(c);
	int rc = sched_list_ops(in->name, owner, offset, size, stage, list_names, l);
	if (rc != 0) {
		svc_fail(c, rc, "cannot list the operations");
		list_free(l);
	}
}
