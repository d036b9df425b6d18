/*
 * ctl_ops.c - reactorctl's op, ac, bot and queue commands: operations
 * through google.longrunning.Operations and Execution.WaitExecution, action
 * cache entries through ActionCache, bots and queues through reactord's
 * read-only Admin service (reactor.admin.v1, which also lists anyone's
 * operations with their bot and times).  Also the streaming-call and
 * blob-printing helpers ctl_build.c shares (ctl_ops.h).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "cmd/reactorctl/ctl.h"
#include "cmd/reactorctl/ctl_ops.h"
#include "core/util.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "google/longrunning/operations.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "proto/pb.h"
#include "rpc/grpc.h"

#define OPS  "/google.longrunning.Operations/"
#define EXEC "/build.bazel.remote.execution.v2.Execution/"
#define AC   "/build.bazel.remote.execution.v2.ActionCache/"
#define ADMN "/reactor.admin.v1.Admin/"

/* ---- shared helpers ------------------------------------------------------ */

struct stream {
	ctl_stream_msg on_msg;
	void *arg;
	bool done, stopped;
	int code;
	char *msg;
};

static void stream_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	struct stream *s = arg;
	if (s->stopped)
		return;
	if (!s->on_msg(msg, len, s->arg)) {
		s->stopped = true;
		rc_call_cancel(k);
	}
}

static void stream_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct stream *s = arg;
	s->done = true;
	s->code = code;
	s->msg = xstrdup(message ? message : "");
}

int ctl_stream(struct ctl *c, const char *path, const ProtobufCMessage *req, int64_t timeout_us,
	       ctl_stream_msg on_msg, void *arg)
{
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	struct stream s = {.on_msg = on_msg, .arg = arg};
	size_t n = protobuf_c_message_get_packed_size(req);
	uint8_t *pb = xmalloc(n ? n : 1);
	protobuf_c_message_pack(req, pb);
	struct rc_call *k =
		rc_call_start(cl, path, timeout_us, NULL, 0, stream_msg, stream_done, &s);
	int rv;
	if (!k) {
		rv = ctl_status(c, GRPC_UNAVAILABLE, "connection is closed");
	} else {
		rc_call_send(k, pb, n);
		rc_call_close_send(k);
		while (!s.done)
			event_base_loop(c->base, EVLOOP_ONCE);
		rv = s.stopped ? CTL_OK : ctl_status(c, s.code, s.msg);
	}
	free(s.msg);
	free(pb);
	return rv;
}

struct cat {
	FILE *f;
	int64_t got;
	bool bad, io;
};

static bool cat_msg(const uint8_t *msg, size_t len, void *arg)
{
	struct cat *k = arg;
	Google__Bytestream__ReadResponse *r =
		google__bytestream__read_response__unpack(NULL, len, msg);
	if (!r) {
		k->bad = true;
		return false;
	}
	if (r->data.len && fwrite(r->data.data, 1, r->data.len, k->f) != r->data.len)
		k->io = true;
	k->got += (int64_t)r->data.len;
	google__bytestream__read_response__free_unpacked(r, NULL);
	return !k->io;
}

int ctl_cat_blob(struct ctl *c, const char *digest, FILE *f)
{
	const char *slash = strchr(digest, '/');
	char *end;
	long long size = slash ? strtoll(slash + 1, &end, 10) : -1;
	if (!slash || slash == digest || *end || size < 0)
		return ctl_err(CTL_FAIL, "bad digest \"%s\": want HASH/SIZE", digest);
	if (size == 0)
		return CTL_OK;
	char *name = c->instance && *c->instance ? xasprintf("%s/blobs/%s", c->instance, digest)
						 : xasprintf("blobs/%s", digest);
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	req.resource_name = name;
	struct cat k = {.f = f};
	int rv = ctl_stream(c, "/google.bytestream.ByteStream/Read", &req.base,
			    c->timeout_set ? c->timeout_us : 0, cat_msg, &k);
	free(name);
	fflush(f);
	if (rv != CTL_OK)
		return rv;
	if (k.bad)
		return ctl_err(CTL_FAIL, "malformed ReadResponse");
	if (k.io)
		return ctl_err(CTL_FAIL, "stdout: write failed");
	if (k.got != size)
		return ctl_err(CTL_FAIL, "blob %s: got %" PRId64 " bytes", digest, k.got);
	return CTL_OK;
}

const char *ctl_ops_ago(int64_t us)
{
	static char bufs[8][32];
	static int i;
	char *b = bufs[i++ % 8];
	return ctl_reltime(b, 32, us);
}

/* Bytes one element of a repeated field takes in its array. */
static size_t elem_size(const ProtobufCFieldDescriptor *f)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE: return 8;
	case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
	case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
	default: return 4; /* int32, uint32, enum, float */
	}
}

static void json_field_value(struct ctl_json *j, const ProtobufCFieldDescriptor *f, const void *p)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING: ctl_json_str(j, *(char *const *)p); break;
	case PROTOBUF_C_TYPE_BOOL: ctl_json_bool(j, *(const protobuf_c_boolean *)p); break;
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32: ctl_json_int(j, *(const int32_t *)p); break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32: ctl_json_int(j, *(const uint32_t *)p); break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: ctl_json_int(j, *(const int64_t *)p); break;
	case PROTOBUF_C_TYPE_ENUM: {
		int v = *(const int *)p;
		const ProtobufCEnumValue *e =
			protobuf_c_enum_descriptor_get_value(f->descriptor, v);
		if (e)
			ctl_json_str(j, e->name);
		else
			ctl_json_int(j, v);
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m = *(const ProtobufCMessage *const *)p;
		if (m)
			ctl_json_msg(j, m);
		else
			ctl_json_null(j);
		break;
	}
	default: /* bytes, float, double: none of the admin messages has one */
		ctl_json_null(j);
		break;
	}
}

void ctl_json_msg(struct ctl_json *j, const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	ctl_json_obj(j);
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		ctl_json_key(j, f->name);
		if (f->label != PROTOBUF_C_LABEL_REPEATED) {
			json_field_value(j, f, base + f->offset);
			continue;
		}
		size_t n = *(const size_t *)(base + f->quantifier_offset);
		const char *arr = *(const char *const *)(base + f->offset);
		ctl_json_arr(j);
		for (size_t k = 0; k < n; k++)
			json_field_value(j, f, arr + k * elem_size(f));
		ctl_json_end(j);
	}
	ctl_json_end(j);
}

/* A response as --json prints it: its fields, one document. */
static void json_print_msg(const ProtobufCMessage *m)
{
	struct ctl_json *j = ctl_json_new();
	ctl_json_msg(j, m);
	ctl_json_print(j);
}

/* "HASH/SIZE"; "" for none in --json (dig_json), "-" in tables. */
static const char *dig_json(char *buf, size_t n, const PbDigest *d)
{
	if (!d || !d->hash)
		buf[0] = '\0';
	else
		snprintf(buf, n, "%s/%" PRId64, d->hash, d->size_bytes);
	return buf;
}

static const char *digest_str(char *buf, size_t n, const PbDigest *d)
{
	if (!d || !d->hash)
		snprintf(buf, n, "-");
	else
		snprintf(buf, n, "%s/%" PRId64, d->hash, d->size_bytes);
	return buf;
}

/* Long options without a short form. */
enum { OPT_STAGE = 1000, OPT_LIMIT };

/* ---- operations ------------------------------------------------------------ */

static const char *stage_name(int v)
{
	const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(
		&build__bazel__remote__execution__v2__execution_stage__value__descriptor, v);
	return e ? e->name : "UNKNOWN";
}

/* What an Operation says, unpacked. */
struct opinfo {
	Build__Bazel__Remote__Execution__V2__ExecuteOperationMetadata *md;
	Build__Bazel__Remote__Execution__V2__ExecuteResponse *resp;
};

static void opinfo_read(struct opinfo *oi, const Google__Longrunning__Operation *op)
{
	memset(oi, 0, sizeof(*oi));
	if (op->metadata)
		oi->md = build__bazel__remote__execution__v2__execute_operation_metadata__unpack(
			NULL, op->metadata->value.len, op->metadata->value.data);
	if (op->result_case == GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE && op->response)
		oi->resp = build__bazel__remote__execution__v2__execute_response__unpack(
			NULL, op->response->value.len, op->response->value.data);
}

static void opinfo_free(struct opinfo *oi)
{
	if (oi->md)
		protobuf_c_message_free_unpacked(&oi->md->base, NULL);
	if (oi->resp)
		protobuf_c_message_free_unpacked(&oi->resp->base, NULL);
}

/* True when the operation finished with a non-OK status or a non-zero
 * exit code (or was cancelled). */
static bool op_failed(const Google__Longrunning__Operation *op, const struct opinfo *oi)
{
	if (!op->done)
		return false;
	if (op->result_case == GOOGLE__LONGRUNNING__OPERATION__RESULT_ERROR)
		return true;
	if (!oi->resp)
		return true;
	if (oi->resp->status && oi->resp->status->code != 0)
		return true;
	return oi->resp->result && oi->resp->result->exit_code != 0;
}

static void op_print(struct ctl *c, const Google__Longrunning__Operation *op)
{
	struct opinfo oi;
	opinfo_read(&oi, op);
	char ad[160], od[160], ed[160];
	const Build__Bazel__Remote__Execution__V2__ActionResult *ar =
		oi.resp ? oi.resp->result : NULL;
	const char *stage = oi.md ? stage_name(oi.md->stage) : (op->done ? "COMPLETED" : "UNKNOWN");
	int code = oi.resp && oi.resp->status ? oi.resp->status->code : 0;
	const char *msg = oi.resp && oi.resp->status && oi.resp->status->message
				  ? oi.resp->status->message
				  : "";
	const char *worker = ar && ar->execution_metadata && ar->execution_metadata->worker
				     ? ar->execution_metadata->worker
				     : "";
	if (c->json) {
		struct ctl_json *j = ctl_json_new();
		ctl_json_obj(j);
		ctl_json_kstr(j, "name", op->name);
		ctl_json_kstr(j, "stage", stage);
		ctl_json_kbool(j, "done", op->done);
		ctl_json_kstr(j, "action_digest",
			      dig_json(ad, sizeof ad, oi.md ? oi.md->action_digest : NULL));
		if (op->done) {
			ctl_json_kint(j, "status_code", code);
			ctl_json_kstr(j, "status_message", msg);
			ctl_json_kbool(j, "cached", oi.resp && oi.resp->cached_result);
			if (ar) {
				ctl_json_kint(j, "exit_code", ar->exit_code);
				ctl_json_kstr(j, "stdout_digest",
					      dig_json(od, sizeof od, ar->stdout_digest));
				ctl_json_kstr(j, "stderr_digest",
					      dig_json(ed, sizeof ed, ar->stderr_digest));
				ctl_json_kstr(j, "worker", worker);
			}
		}
		ctl_json_end(j);
		ctl_json_print(j);
	} else {
		bool bad = op_failed(op, &oi);
		printf("name:    %s\n", op->name);
		printf("stage:   %s%s%s\n",
		       ctl_col(c, !op->done ? CTL_YELLOW
				  : bad	    ? CTL_RED
					    : CTL_GREEN),
		       stage, ctl_col(c, CTL_RESET));
		printf("action:  %s\n",
		       digest_str(ad, sizeof ad, oi.md ? oi.md->action_digest : NULL));
		if (op->done) {
			printf("status:  %s%s%s\n", grpc_code_name(code), *msg ? ": " : "", msg);
			if (oi.resp && oi.resp->cached_result)
				printf("cached:  yes\n");
			if (ar) {
				printf("exit:    %d\n", ar->exit_code);
				printf("stdout:  %s\n",
				       digest_str(od, sizeof od, ar->stdout_digest));
				printf("stderr:  %s\n",
				       digest_str(ed, sizeof ed, ar->stderr_digest));
				if (*worker)
					printf("worker:  %s\n", worker);
			}
		}
	}
	opinfo_free(&oi);
}

static int cmd_op_get(struct ctl *c, int argc, char **argv)
{
	if (argc != 2)
		return ctl_usage(c);
	Google__Longrunning__GetOperationRequest req =
		GOOGLE__LONGRUNNING__GET_OPERATION_REQUEST__INIT;
	req.name = argv[1];
	ProtobufCMessage *out;
	int rv = ctl_unary(c, OPS "GetOperation", &req.base,
			   &google__longrunning__operation__descriptor, &out);
	if (rv != CTL_OK)
		return rv;
	op_print(c, (const void *)out);
	protobuf_c_message_free_unpacked(out, NULL);
	return CTL_OK;
}

static int cmd_op_cancel(struct ctl *c, int argc, char **argv)
{
	if (argc != 2)
		return ctl_usage(c);
	Google__Longrunning__CancelOperationRequest req =
		GOOGLE__LONGRUNNING__CANCEL_OPERATION_REQUEST__INIT;
	req.name = argv[1];
	ProtobufCMessage *out;
	int rv = ctl_unary(c, OPS "CancelOperation", &req.base,
			   &google__protobuf__empty__descriptor, &out);
	if (rv != CTL_OK)
		return rv;
	protobuf_c_message_free_unpacked(out, NULL);
	if (c->json) {
		struct ctl_json *j = ctl_json_new();
		ctl_json_obj(j);
		ctl_json_kstr(j, "name", argv[1]);
		ctl_json_kbool(j, "cancelled", true);
		ctl_json_end(j);
		ctl_json_print(j);
	} else {
		printf("cancelled %s\n", argv[1]);
	}
	return CTL_OK;
}

struct waitst {
	struct ctl *c;
	Google__Longrunning__Operation *last;
	int last_stage;
	bool bad;
};

static bool wait_msg(const uint8_t *msg, size_t len, void *arg)
{
	struct waitst *w = arg;
	Google__Longrunning__Operation *op = google__longrunning__operation__unpack(NULL, len, msg);
	if (!op) {
		w->bad = true;
		return false;
	}
	struct opinfo oi;
	opinfo_read(&oi, op);
	int st = oi.md ? (int)oi.md->stage : -1;
	if (st != w->last_stage && !w->c->json)
		fprintf(stderr, "%s%s%s\n", ctl_col(w->c, CTL_DIM), stage_name(st),
			ctl_col(w->c, CTL_RESET));
	w->last_stage = st;
	opinfo_free(&oi);
	if (w->last)
		protobuf_c_message_free_unpacked(&w->last->base, NULL);
	w->last = op;
	return !op->done;
}

static int cmd_op_wait(struct ctl *c, int argc, char **argv)
{
	if (argc != 2)
		return ctl_usage(c);
	Build__Bazel__Remote__Execution__V2__WaitExecutionRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__WAIT_EXECUTION_REQUEST__INIT;
	req.name = argv[1];
	struct waitst w = {.c = c, .last_stage = -2};
	int rv = ctl_stream(c, EXEC "WaitExecution", &req.base, c->timeout_set ? c->timeout_us : 0,
			    wait_msg, &w);
	if (rv == CTL_OK && w.bad)
		rv = ctl_err(CTL_FAIL, "malformed Operation from the server");
	if (rv == CTL_OK && (!w.last || !w.last->done))
		rv = ctl_err(CTL_FAIL, "the stream ended before the operation finished");
	if (rv == CTL_OK) {
		op_print(c, w.last);
		struct opinfo oi;
		opinfo_read(&oi, w.last);
		if (op_failed(w.last, &oi))
			rv = CTL_FAIL;
		opinfo_free(&oi);
	}
	if (w.last)
		protobuf_c_message_free_unpacked(&w.last->base, NULL);
	return rv;
}

static const struct option ls_opts[] = {
	{"stage", required_argument, NULL, OPT_STAGE},
	{"limit", required_argument, NULL, OPT_LIMIT},
	{0},
};

/* One row of `op ls`, from either source: the Admin service's operation,
 * or (the fallback) a google.longrunning Operation, which has no owner,
 * bot or times (empty strings and zeros then).  Strings borrowed. */
struct op_row {
	const char *name, *stage, *action, *owner, *bot_id, *status_message;
	int64_t created_us, queued_us, started_us, completed_us;
	bool cached, has_exit;
	int status_code, exit_code;
};

static void op_rows_print(struct ctl *c, const struct op_row *rows, size_t n, bool truncated)
{
	if (c->json) {
		struct ctl_json *j = ctl_json_new();
		ctl_json_obj(j);
		ctl_json_key(j, "operations");
		ctl_json_arr(j);
		for (size_t k = 0; k < n; k++) {
			const struct op_row *op = &rows[k];
			ctl_json_obj(j);
			ctl_json_kstr(j, "name", op->name);
			ctl_json_kstr(j, "stage", op->stage);
			ctl_json_kstr(j, "action_digest", op->action);
			ctl_json_kstr(j, "owner", op->owner);
			ctl_json_kstr(j, "bot_id", op->bot_id);
			ctl_json_kint(j, "created_us", op->created_us);
			ctl_json_kint(j, "queued_us", op->queued_us);
			ctl_json_kint(j, "started_us", op->started_us);
			ctl_json_kint(j, "completed_us", op->completed_us);
			ctl_json_kbool(j, "cached", op->cached);
			ctl_json_kint(j, "status_code", op->status_code);
			ctl_json_kstr(j, "status_message", op->status_message);
			ctl_json_key(j, "exit_code");
			if (op->has_exit)
				ctl_json_int(j, op->exit_code);
			else
				ctl_json_null(j);
			ctl_json_end(j);
		}
		ctl_json_end(j);
		ctl_json_kbool(j, "truncated", truncated);
		ctl_json_end(j);
		ctl_json_print(j);
		return;
	}
	struct ctl_table *t =
		ctl_table_new(c, 6, "NAME", "STAGE", "CREATED", "BOT", "EXIT", "STATUS");
	for (size_t k = 0; k < n; k++) {
		const struct op_row *op = &rows[k];
		char ex[16];
		snprintf(ex, sizeof ex, "%d", op->exit_code);
		const char *status =
			!strcmp(op->stage, "COMPLETED")
				? (op->status_code == 0 ? (op->cached ? "OK (cached)" : "OK")
							: grpc_code_name(op->status_code))
				: "";
		ctl_table_row(t, op->name, op->stage, ctl_ops_ago(op->created_us),
			      *op->bot_id ? op->bot_id : NULL, op->has_exit ? ex : NULL,
			      *status ? status : NULL);
	}
	ctl_table_print(t, stdout);
	if (truncated)
		printf("(more not shown: --limit)\n");
}

/* The Admin service's listing (anyone's operations, newest first). */
static int op_ls_admin(struct ctl *c, const Reactor__Admin__V1__ListOperationsResponse *r)
{
	struct op_row *rows = xcalloc(r->n_operations ? r->n_operations : 1, sizeof(*rows));
	for (size_t k = 0; k < r->n_operations; k++) {
		const PbAdmOperation *op = r->operations[k];
		rows[k] = (struct op_row){
			.name = op->name,
			.stage = op->stage,
			.action = op->action_digest,
			.owner = op->owner,
			.bot_id = op->bot_id,
			.status_message = op->status_message,
			.created_us = op->created_us,
			.queued_us = op->queued_us,
			.started_us = op->started_us,
			.completed_us = op->completed_us,
			.cached = op->cached,
			.has_exit = op->has_exit_code,
			.status_code = op->status_code,
			.exit_code = op->exit_code,
		};
	}
	op_rows_print(c, rows, r->n_operations, r->truncated);
	free(rows);
	return CTL_OK;
}

/* Pages read at most by the fallback (of the server's default size). */
#define OP_LS_MAX_PAGES 100

/* The fallback for callers without ops-admin: google.longrunning
 * ListOperations, which lists the caller's own operations oldest first in
 * pages; the last `limit` are kept and shown newest first. */
static int op_ls_own(struct ctl *c, const char *stage, int limit)
{
	if (limit <= 0)
		limit = 50;
	Google__Longrunning__Operation **keep = xcalloc((size_t)limit, sizeof(*keep));
	size_t nkeep = 0, seen = 0;
	char *filter = *stage ? xasprintf("stage=%s", stage) : xstrdup("");
	char *token = xstrdup("");
	int rv = CTL_OK, pages = 0;
	do {
		Google__Longrunning__ListOperationsRequest req =
			GOOGLE__LONGRUNNING__LIST_OPERATIONS_REQUEST__INIT;
		req.name = (char *)c->instance;
		req.filter = filter;
		req.page_token = token;
		ProtobufCMessage *out;
		rv = ctl_unary(c, OPS "ListOperations", &req.base,
			       &google__longrunning__list_operations_response__descriptor, &out);
		if (rv != CTL_OK)
			break;
		Google__Longrunning__ListOperationsResponse *r = (void *)out;
		for (size_t i = 0; i < r->n_operations; i++, seen++) {
			/* A ring of the newest `limit`; the response keeps no
			 * pointer to what it hands over. */
			size_t slot = seen % (size_t)limit;
			if (keep[slot])
				protobuf_c_message_free_unpacked(&keep[slot]->base, NULL);
			keep[slot] = r->operations[i];
			r->operations[i] = NULL;
		}
		nkeep = seen < (size_t)limit ? seen : (size_t)limit;
		r->n_operations = 0;
		free(token);
		token = xstrdup(r->next_page_token ? r->next_page_token : "");
		protobuf_c_message_free_unpacked(out, NULL);
	} while (*token && ++pages < OP_LS_MAX_PAGES);
	bool truncated = seen > nkeep || *token;
	struct op_row *rows = xcalloc(nkeep ? nkeep : 1, sizeof(*rows));
	struct opinfo *info = xcalloc(nkeep ? nkeep : 1, sizeof(*info));
	char(*ad)[160] = xcalloc(nkeep ? nkeep : 1, sizeof(*ad));
	for (size_t k = 0; rv == CTL_OK && k < nkeep; k++) {
		const Google__Longrunning__Operation *op = keep[(seen - 1 - k) % (size_t)limit];
		struct opinfo *oi = &info[k];
		opinfo_read(oi, op);
		const PbActionResult *ar = oi->resp ? oi->resp->result : NULL;
		const Google__Rpc__Status *st = oi->resp ? oi->resp->status : NULL;
		rows[k] = (struct op_row){
			.name = op->name,
			.stage = oi->md ? stage_name(oi->md->stage)
					: (op->done ? "COMPLETED" : "UNKNOWN"),
			.action = dig_json(ad[k], sizeof ad[k],
					   oi->md ? oi->md->action_digest : NULL),
			.owner = "",
			.bot_id = ar && ar->execution_metadata && ar->execution_metadata->worker
					  ? ar->execution_metadata->worker
					  : "",
			.status_message = st && st->message ? st->message : "",
			.cached = oi->resp && oi->resp->cached_result,
			.has_exit = ar != NULL,
			.status_code = st ? st->code : 0,
			.exit_code = ar ? ar->exit_code : 0,
		};
	}
	if (rv == CTL_OK)
		op_rows_print(c, rows, nkeep, truncated);
	for (size_t k = 0; k < nkeep; k++)
		opinfo_free(&info[k]);
	for (size_t k = 0; k < (size_t)limit; k++)
		if (keep[k])
			protobuf_c_message_free_unpacked(&keep[k]->base, NULL);
	free(ad);
	free(info);
	free(rows);
	free(keep);
	free(token);
	free(filter);
	return rv;
}

static int cmd_op_ls(struct ctl *c, int argc, char **argv)
{
	const char *stage = "";
	int limit = 0, o;
	while ((o = getopt_long(argc, argv, "", ls_opts, NULL)) != -1) {
		if (o == OPT_STAGE)
			stage = optarg;
		else if (o == OPT_LIMIT)
			limit = atoi(optarg);
		else
			return ctl_usage(c);
	}
	if (optind != argc || limit < 0)
		return ctl_usage(c);
	Reactor__Admin__V1__ListOperationsRequest req = ADM(LIST_OPERATIONS_REQUEST__INIT);
	req.instance_name = (char *)c->instance;
	/* Stage names are upper case on the wire; accept "queued" too. */
	char st[32];
	size_t i;
	for (i = 0; stage[i] && i + 1 < sizeof st; i++)
		st[i] = (char)(stage[i] >= 'a' && stage[i] <= 'z' ? stage[i] - 32 : stage[i]);
	st[i] = '\0';
	req.stage = st;
	req.limit = limit;
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	ProtobufCMessage *out = NULL;
	char *msg = NULL;
	int code = rc_unary(cl, ADMN "ListOperations", &req.base,
			    &reactor__admin__v1__list_operations_response__descriptor, &out, &msg,
			    c->timeout_us);
	int rv;
	if (code == GRPC_PERMISSION_DENIED) {
		/* Not an ops-admin: one's own operations, through the public API. */
		ctl_info(c,
			 "Admin ListOperations: PERMISSION_DENIED: %s; listing your own "
			 "operations through google.longrunning.Operations instead",
			 msg && *msg ? msg : "(no message)");
		c->answered = true;
		rv = op_ls_own(c, st, limit);
	} else {
		rv = ctl_status(c, code, msg);
		if (rv == CTL_OK)
			rv = op_ls_admin(c, (const void *)out);
	}
	if (out)
		protobuf_c_message_free_unpacked(out, NULL);
	free(msg);
	return rv;
}

/* ---- action cache -------------------------------------------------------- */

static int cmd_ac_get(struct ctl *c, int argc, char **argv)
{
	if (argc != 2)
		return ctl_usage(c);
	const char *slash = strchr(argv[1], '/');
	char *end = NULL;
	long long size = slash ? strtoll(slash + 1, &end, 10) : -1;
	if (!slash || slash == argv[1] || *end || size < 0) {
		ctl_err(CTL_USAGE, "bad digest \"%s\": want HASH/SIZE", argv[1]);
		return ctl_usage(c);
	}
	char *hash = xstrndup(argv[1], (size_t)(slash - argv[1]));
	PbDigest d = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
	d.hash = hash;
	d.size_bytes = size;
	Build__Bazel__Remote__Execution__V2__GetActionResultRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_ACTION_RESULT_REQUEST__INIT;
	req.instance_name = (char *)c->instance;
	req.action_digest = &d;
	ProtobufCMessage *out;
	int rv = ctl_unary(c, AC "GetActionResult", &req.base,
			   &build__bazel__remote__execution__v2__action_result__descriptor, &out);
	free(hash);
	if (rv != CTL_OK)
		return rv;
	const PbActionResult *ar = (const void *)out;
	char od[160], ed[160];
	const char *worker = ar->execution_metadata && ar->execution_metadata->worker
				     ? ar->execution_metadata->worker
				     : "";
	if (c->json) {
		struct ctl_json *j = ctl_json_new();
		ctl_json_obj(j);
		ctl_json_kstr(j, "action_digest", argv[1]);
		ctl_json_kint(j, "exit_code", ar->exit_code);
		ctl_json_kstr(j, "stdout_digest", dig_json(od, sizeof od, ar->stdout_digest));
		ctl_json_kstr(j, "stderr_digest", dig_json(ed, sizeof ed, ar->stderr_digest));
		ctl_json_kstr(j, "worker", worker);
		ctl_json_key(j, "output_files");
		ctl_json_arr(j);
		for (size_t i = 0; i < ar->n_output_files; i++) {
			ctl_json_obj(j);
			ctl_json_kstr(j, "path", ar->output_files[i]->path);
			ctl_json_kstr(j, "digest",
				      dig_json(od, sizeof od, ar->output_files[i]->digest));
			ctl_json_kbool(j, "is_executable", ar->output_files[i]->is_executable);
			ctl_json_end(j);
		}
		ctl_json_end(j);
		ctl_json_key(j, "output_directories");
		ctl_json_arr(j);
		for (size_t i = 0; i < ar->n_output_directories; i++) {
			ctl_json_obj(j);
			ctl_json_kstr(j, "path", ar->output_directories[i]->path);
			ctl_json_kstr(
				j, "tree_digest",
				dig_json(od, sizeof od, ar->output_directories[i]->tree_digest));
			ctl_json_end(j);
		}
		ctl_json_end(j);
		ctl_json_end(j);
		ctl_json_print(j);
	} else {
		printf("exit:    %d\n", ar->exit_code);
		printf("stdout:  %s\n", digest_str(od, sizeof od, ar->stdout_digest));
		printf("stderr:  %s\n", digest_str(ed, sizeof ed, ar->stderr_digest));
		if (*worker)
			printf("worker:  %s\n", worker);
		if (ar->n_output_files || ar->n_output_directories) {
			struct ctl_table *t = ctl_table_new(c, 3, "OUTPUT", "KIND", "DIGEST");
			for (size_t i = 0; i < ar->n_output_files; i++)
				ctl_table_row(
					t, ar->output_files[i]->path, "file",
					digest_str(od, sizeof od, ar->output_files[i]->digest));
			for (size_t i = 0; i < ar->n_output_directories; i++)
				ctl_table_row(t, ar->output_directories[i]->path, "tree",
					      digest_str(od, sizeof od,
							 ar->output_directories[i]->tree_digest));
			ctl_table_print(t, stdout);
		}
	}
	protobuf_c_message_free_unpacked(out, NULL);
	return CTL_OK;
}

/* ---- bots and queues ----------------------------------------------------- */

static int cmd_bot_ls(struct ctl *c, int argc, char **argv)
{
	int limit = 0, o;
	while ((o = getopt_long(argc, argv, "", ls_opts + 1, NULL)) != -1) {
		if (o == OPT_LIMIT)
			limit = atoi(optarg);
		else
			return ctl_usage(c);
	}
	if (optind != argc || limit < 0)
		return ctl_usage(c);
	Reactor__Admin__V1__ListBotsRequest req = ADM(LIST_BOTS_REQUEST__INIT);
	req.instance_name = (char *)c->instance;
	req.limit = limit;
	ProtobufCMessage *out;
	int rv = ctl_unary(c, ADMN "ListBots", &req.base,
			   &reactor__admin__v1__list_bots_response__descriptor, &out);
	if (rv != CTL_OK)
		return rv;
	const Reactor__Admin__V1__ListBotsResponse *r = (const void *)out;
	if (c->json) {
		json_print_msg(out);
	} else {
		struct ctl_table *t = ctl_table_new(c, 6, "BOT", "STATE", "LEASE", "OPERATION",
						    "LAST SEEN", "PROPERTIES");
		for (size_t i = 0; i < r->n_bots; i++) {
			const PbAdmBot *b = r->bots[i];
			ctl_table_row(t, b->bot_id, b->state, b->busy ? b->lease_state : "idle",
				      b->n_lease_operations ? b->lease_operations[0] : NULL,
				      ctl_ops_ago(b->last_seen_us), b->properties);
		}
		ctl_table_print(t, stdout);
		if (r->truncated)
			printf("(%" PRId64 " sessions, %zu shown: --limit)\n", r->total, r->n_bots);
	}
	protobuf_c_message_free_unpacked(out, NULL);
	return CTL_OK;
}

static int cmd_queue_ls(struct ctl *c, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return ctl_usage(c);
	Reactor__Admin__V1__ListQueuesRequest req = ADM(LIST_QUEUES_REQUEST__INIT);
	req.instance_name = (char *)c->instance;
	ProtobufCMessage *out;
	int rv = ctl_unary(c, ADMN "ListQueues", &req.base,
			   &reactor__admin__v1__list_queues_response__descriptor, &out);
	if (rv != CTL_OK)
		return rv;
	const Reactor__Admin__V1__ListQueuesResponse *r = (const void *)out;
	if (c->json) {
		json_print_msg(out);
	} else {
		struct ctl_table *t =
			ctl_table_new(c, 5, "PLATFORM", "QUEUED", "OLDEST", "BOTS", "BUSY");
		for (size_t i = 0; i < r->n_queues; i++) {
			const PbAdmQueue *q = r->queues[i];
			char n[24], b[24], bb[24];
			snprintf(n, sizeof n, "%" PRId64, q->queued);
			snprintf(b, sizeof b, "%" PRId64, q->bots);
			snprintf(bb, sizeof bb, "%" PRId64, q->bots_busy);
			ctl_table_row(t, *q->platform ? q->platform : "(none)", n,
				      ctl_ops_ago(q->oldest_queued_us), b, bb);
		}
		ctl_table_print(t, stdout);
	}
	protobuf_c_message_free_unpacked(out, NULL);
	return CTL_OK;
}

const struct ctl_cmd ctl_cmds_ops[] = {
	{"op ls", "[--stage S] [--limit N]", "list the instance's operations, newest first",
	 "Lists anyone's operations of the instance (-i), newest first, with their\n"
	 "stage, age, the bot that runs or ran them, the exit code and status.\n"
	 "--stage: only QUEUED, EXECUTING, COMPLETED (or CACHE_CHECK); --limit: at\n"
	 "most N rows (default 50, at most 500).  Reads the Admin service, which\n"
	 "needs the ops-admin role when auth is on; without it (PERMISSION_DENIED)\n"
	 "the listing falls back to google.longrunning ListOperations: your own\n"
	 "operations, without owner or times (-v says so on stderr).\n"
	 "\n"
	 "example:\n"
	 "  reactorctl op ls --stage EXECUTING\n",
	 cmd_op_ls},
	{"op get", "NAME", "show one operation",
	 "GetOperation: stage, action digest and, once done, the status, exit code,\n"
	 "stdout/stderr digests and worker.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl op get 3f0c9a4e-6d1b-4f7e-9a52-0c1d2e3f4a5b\n",
	 cmd_op_get},
	{"op wait", "NAME", "wait for an operation to finish",
	 "Follows the operation (WaitExecution), printing each stage change on\n"
	 "stderr, then prints it as op get does.  Exit 0 when it finished with\n"
	 "status OK and exit code 0, 1 when it failed (a non-OK status, a non-zero\n"
	 "exit code, or it was cancelled).\n"
	 "\n"
	 "example:\n"
	 "  reactorctl op wait 3f0c9a4e-6d1b-4f7e-9a52-0c1d2e3f4a5b && echo passed\n",
	 cmd_op_wait},
	{"op cancel", "NAME", "cancel an operation",
	 "CancelOperation: the operation ends CANCELLED; its job stops once no\n"
	 "other operation waits on it.  A finished operation is left as it is.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl op cancel 3f0c9a4e-6d1b-4f7e-9a52-0c1d2e3f4a5b\n",
	 cmd_op_cancel},
	{"ac get", "HASH/SIZE", "show the action cache entry of an action",
	 "GetActionResult for the action digest: exit code, stdout/stderr digests,\n"
	 "worker and outputs.  Exit 1 (NOT_FOUND) when the action is not cached.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl ac get "
	 "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef/142\n",
	 cmd_ac_get},
	{"bot ls", "[--limit N]", "list the bots connected to the instance",
	 "The live bot sessions of the instance, most recently seen first: bot id,\n"
	 "state (OK, UNHEALTHY...), the lease it holds (PENDING, ACTIVE or idle) and\n"
	 "its operation, when it last called, its properties.  Needs ops-admin\n"
	 "when auth is on.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl bot ls\n",
	 cmd_bot_ls},
	{"queue ls", "", "list the queues with waiting actions",
	 "Per platform with queued actions: how many wait, how long the oldest has\n"
	 "waited, and how many connected bots match it (and how many of them are\n"
	 "busy).  Needs ops-admin when auth is on.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl queue ls --json\n",
	 cmd_queue_ls},
	{0},
};
