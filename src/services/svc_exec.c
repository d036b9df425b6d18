/*
 * svc_exec.c - build.bazel.remote.execution.v2.Execution: Execute and
 * WaitExecution.  Execute validates the request against the instance's
 * CAS (Action, Command and input root present, else FAILED_PRECONDITION
 * with one MISSING violation per blob), looks the action up in the action
 * cache (a complete hit answers at once, cached_result set), and
 * otherwise queues it through the scheduler, which deduplicates it
 * against a job already in flight.  Both calls then stream the
 * operation's Operation messages: one per stage change, a keep-alive
 * copy on idle streams, and the final one with its ExecuteResponse.
 *
 * One struct exec per stream, reference counted: the stream holds one
 * reference until it ends (finished or cancelled) and every Redis request
 * in flight holds one, so a late reply never touches freed memory.  A
 * stream waits on exactly one watch list (its job's) and leaves it the
 * moment its client goes away.
 *
 * Ownership (domain/sched.h): Execute records the caller's identity as
 * the operation's owner (a deduplicated Execute owns its own operation
 * on the shared job); WaitExecution and WaitOperation answer only the
 * owner or an ops-admin of the operation's instance (svc_ops_may_see).
 *
 * Backpressure: a client that stops reading gets no more than
 * SVC_STREAM_HIWAT bytes queued.  Above that a stream holds only the
 * newest state, serialized (the client needs the latest Operation, not
 * every one in between), sends it from on_writable, and skips keep-alives.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "domain/ac.h"
#include "domain/blob.h"
#include "core/cfg.h"
#include "core/err.h"
#include "google/rpc/error_details.pb-c.h"
#include "services/auth.h"
#include "services/cas_remote.h"
#include "services/inst.h"
#include "core/log.h"
#include "core/pbwire.h"
#include "services/reapi.h"
#include "domain/sched.h"
#include "services/svc.h"
#include "domain/sched_watch.h"
#include "proto/pb.h"

#define MOD		 "exec"
#define PRECONDITION_URL "type.googleapis.com/google.rpc.PreconditionFailure"

struct exec {
	struct call *c;
	int refs;
	bool live;	/* the stream's own reference is still held */
	char *instance; /* Execute only */
	char *op;
	char *job;
	struct digest action;
	int priority;
	char *platform;
	int64_t timeout_us;
	bool do_not_cache;
	uint64_t seq;
	struct sched_watch_op w;
	int last_stage;
	int64_t last_version;
	int64_t last_send;
	struct event *ka;
	int64_t wait_us; /* WaitOperation: unary, answer by this long */
	uint8_t *held;	 /* newest state while the output is full */
	size_t held_len;
	bool held_final;	  /* held is the COMPLETED state */
	struct exec *prev, *next; /* live streams */
};

static struct {
	struct event_base *base;
	struct exec *live;
} ex_g;

static void ex_ref(struct exec *ex)
{
	ex->refs++;
}

static void ex_unref(struct exec *ex)
{
	if (--ex->refs > 0)
		return;
	if (ex->ka)
		event_free(ex->ka);
	call_unref(ex->c);
	free(ex->held);
	free(ex->instance);
	free(ex->op);
	free(ex->job);
	free(ex->platform);
	free(ex);
}

/* The stream is over (finished or cancelled): leave the watch list, stop
 * the keep-alive, drop the stream's reference. */
static void ex_end(struct exec *ex)
{
	if (!ex->live)
		return;
	ex->live = false;
	if (ex->prev)
		ex->prev->next = ex->next;
	else
		ex_g.live = ex->next;
	if (ex->next)
		ex->next->prev = ex->prev;
	sched_watch_op_remove(&ex->w);
	if (ex->ka)
		event_del(ex->ka);
	call_set_data(ex->c, NULL);
	ex_unref(ex);
}

static void ka_arm(struct exec *ex)
{
	const struct cfg *cfg = svc_config();
	int64_t us = ex->wait_us ? ex->wait_us : cfg->sched_keepalive_us;
	struct timeval tv = {us / 1000000, us % 1000000};
	evtimer_add(ex->ka, &tv);
}

/* Send the operation's state; finish the call when it is done. */
static void ex_send(struct exec *ex, const struct sched_view *v)
{
	/* WaitOperation answers once: when done, or at its timeout. */
	if (ex->wait_us && v->stage != SCHED_COMPLETED) {
		ex->last_stage = v->stage;
		ex->last_version = v->version;
		return;
	}
	ex->last_stage = v->stage;
	ex->last_version = v->version;
	ex->last_send = mono_us();
	if (call_pending(ex->c) >= SVC_STREAM_HIWAT) {
		/* The client is not reading: keep just this state. */
		free(ex->held);
		ex->held = svc_ops_pack(ex->op, v, &ex->held_len);
		ex->held_final = v->stage == SCHED_COMPLETED;
		call_want_writable(ex->c);
		return;
	}
	free(ex->held); /* older than v */
	ex->held = NULL;
	if (svc_ops_send(ex->c, ex->op, v) != 0) {
		ex_end(ex);
		return;
	}
	if (v->stage == SCHED_COMPLETED) {
		call_finish(ex->c, GRPC_OK, NULL);
		ex_end(ex);
	}
}

static void wait_timeout_view(void *arg, int rc, struct sched_view *v, size_t n)
{
	struct exec *ex = arg;
	if (ex->live && !call_done(ex->c)) {
		if (rc != 0) {
			svc_fail(ex->c, rc, "cannot read operation %s", ex->op);
		} else if (n != 1 || !v[0].exists) {
			call_finish(ex->c, GRPC_NOT_FOUND, "operation %s could not be read",
				    ex->op);
		} else if (svc_ops_send(ex->c, ex->op, &v[0]) == 0) {
			call_finish(ex->c, GRPC_OK, NULL);
		}
		ex_end(ex);
	}
	ex_unref(ex);
}

static void ka_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct exec *ex = arg;
	if (!ex->live || call_done(ex->c))
		return;
	if (ex->wait_us) {
		/* The wait is over: answer with the operation as it is now. */
		const char *names[] = {ex->op};
		ex_ref(ex);
		int rc = sched_view(names, 1, wait_timeout_view, ex);
		if (rc != 0) {
			ex_unref(ex);
			svc_fail(ex->c, rc, "cannot read the operation");
			ex_end(ex);
		}
		return;
	}
	const struct cfg *cfg = svc_config();
	int64_t idle = mono_us() - ex->last_send;
	/* No keep-alive into a full output: the client is not reading. */
	if (idle >= cfg->sched_keepalive_us - 1000 && !ex->held &&
	    call_pending(ex->c) < SVC_STREAM_HIWAT) {
		/* The same state again: proxies and clients see traffic. */
		struct sched_view v = {.exists = true,
				       .stage = ex->last_stage,
				       .action = ex->action,
				       .version = ex->last_version};
		ex_send(ex, &v);
		if (!ex->live)
			return;
	}
	ka_arm(ex);
}

static void on_view(struct sched_watch_op *w, const struct sched_view *v)
{
	struct exec *ex = (struct exec *)((char *)w - offsetof(struct exec, w));
	if (!v || !ex->live)
		return;
	if (call_done(ex->c)) {
		ex_end(ex);
		return;
	}
	if (!v->exists) {
		call_finish(ex->c, GRPC_NOT_FOUND, "operation %s was deleted", ex->op);
		ex_end(ex);
		return;
	}
	if (v->stage != ex->last_stage || v->stage == SCHED_COMPLETED)
		ex_send(ex, v);
}

static struct exec *ex_new(struct call *c, const char *op)
{
	struct exec *ex = xcalloc(1, sizeof(*ex));
	ex->c = c;
	call_ref(c);
	ex->refs = 1;
	ex->live = true;
	ex->op = xstrdup(op);
	ex->w.op = ex->op;
	ex->w.on_view = on_view;
	ex->ka = evtimer_new(ex_g.base, ka_cb, ex);
	ex->last_send = mono_us();
	call_set_data(c, ex);
	ex->next = ex_g.live;
	if (ex_g.live)
		ex_g.live->prev = ex;
	ex_g.live = ex;
	return ex;
}

/* Start streaming: the first message, then the watch list. */
static void ex_watch(struct exec *ex, const struct sched_view *v)
{
	ex_send(ex, v);
	if (!ex->live)
		return;
	sched_watch_op_add(&ex->w, ex->job, ex->seq);
	ka_arm(ex);
}

bool svc_exec_enabled(struct call *c, const struct inst *in)
{
	if (inst_cfg(in)->execution)
		return true;
	call_finish(c, GRPC_UNIMPLEMENTED,
		    "method %s: remote execution is not enabled on instance \"%s\" "
		    "(set execution: true on it)",
		    call_method(c)->path, in->name);
	return false;
}

/* ---- Execute -------------------------------------------------------------- */

static void cached_recorded(void *arg, int rc)
{
	char *op = arg;
	if (rc != 0)
		LOGW(MOD, "cache hit operation %s not recorded (Redis failed)", op);
	free(op);
}

static void enq_reply(void *arg, int rc, const char *job, int stage, int64_t version, bool joined)
{
	struct exec *ex = arg;
	if (!ex->live || call_done(ex->c)) {
		ex_unref(ex);
		return;
	}
	if (rc != 0) {
		svc_fail(ex->c, rc, "%s", job ? job : "cannot queue the action");
		ex_end(ex);
		ex_unref(ex);
		return;
	}
	ex->job = xstrdup(job);
	char ds[DIGEST_STR_LEN];
	LOGI(MOD, CALL_FMT ": action %s -> operation %s, %s job %s", CALL_ARGS(ex->c),
	     digest_str(&ex->action, ds, sizeof ds), ex->op, joined ? "joined" : "new", job);
	struct sched_view v = {
		.exists = true, .stage = stage, .action = ex->action, .version = version};
	ex_watch(ex, &v);
	ex_unref(ex);
}

static void enqueue(struct exec *ex)
{
	struct inst *in = inst_find(ex->instance);
	if (!in) {
		call_finish(ex->c, GRPC_UNAVAILABLE, "instance \"%s\" was removed", ex->instance);
		ex_end(ex);
		return;
	}
	const struct cfg_instance *ci = inst_cfg(in);
	struct sched_enqueue_req r = {
		.instance = ex->instance,
		.action = &ex->action,
		.op = ex->op,
		.priority = ex->priority,
		.platform = ex->platform,
		.timeout_us = ex->timeout_us,
		.do_not_cache = ex->do_not_cache,
		.max_attempts = ci->max_attempts,
		.retention_us = ci->operation_retention_us,
		.owner = auth_identity(ex->c),
	};
	ex->seq = sched_watch_job_seq();
	ex_ref(ex);
	int rc = sched_enqueue(&r, enq_reply, ex);
	if (rc != 0) {
		ex_unref(ex);
		svc_fail(ex->c, rc, "cannot queue the action");
		ex_end(ex);
	}
}

static void ac_reply(void *arg, const struct ac_res *res)
{
	struct exec *ex = arg;
	int rc = res->rc;
	const uint8_t *result = res->result;
	size_t len = res->len;
	if (!ex->live || call_done(ex->c)) {
		ex_unref(ex);
		return;
	}
	if (rc == 0) {
		struct inst *in = inst_find(ex->instance);
		int64_t ret = in ? inst_cfg(in)->operation_retention_us : 600000000;
		char *op = xstrdup(ex->op);
		if (sched_cached_op(ex->instance, ex->op, auth_identity(ex->c), &ex->action, result,
				    len, ret, cached_recorded, op) != 0)
			free(op);
		char ds[DIGEST_STR_LEN];
		LOGI(MOD, CALL_FMT ": action %s -> operation %s, action cache hit",
		     CALL_ARGS(ex->c), digest_str(&ex->action, ds, sizeof ds), ex->op);
		struct sched_view v = {.exists = true,
				       .stage = SCHED_COMPLETED,
				       .status = 0,
				       .message = (char *)"",
				       .result = (uint8_t *)result,
				       .result_len = len,
				       .cached = true,
				       .action = ex->action};
		ex_send(ex, &v);
	} else if (err_is_store(rc) || rc == ERR_STORE_REPLY || rc == -ECANCELED) {
		svc_fail(ex->c, rc, "cannot read the action cache");
		ex_end(ex);
	} else {
		/* No entry, or one the check refused (dropped): a miss. */
		enqueue(ex);
	}
	ex_unref(ex);
}

static int64_t duration_us(const Google__Protobuf__Duration *d)
{
	if (!d)
		return 0;
	if (d->seconds > 100LL * 365 * 86400 || d->seconds < 0 || d->nanos < 0)
		return -1;
	return d->seconds * 1000000 + d->nanos / 1000;
}

/* Blobs Execute parses are capped, and the cap is checked against the
 * digest before a byte is read, so one Execute costs at most one bounded
 * read (and, on the disk store, its hash check) plus a parse: a few ms.
 * An Action is two digests, a timeout and a platform: 1 MiB is ample.  A
 * Command's argument lists can be long; 4 MiB matches the default batch
 * limit (max-batch-size, just under 4 MiB), so any Command a client can
 * upload in one BatchUpdateBlobs is accepted, and it stays well under the
 * 16 MiB max-recv-message-size workers fetch it with.  Only its platform
 * (field 5) is decoded, by a wire scan (core/pbwire.h): unpacking a
 * 4 MiB argument list costs tens of ms of allocations Execute never uses. */
#define ACTION_MAX  (1 << 20)
#define COMMAND_MAX (4 << 20)

/* Read a blob Execute parses.  Returns 0 with *out (malloc'd), -ENOENT
 * when missing, or -1 when the call was finished (over the cap, I/O). */
static int read_parsed(struct call *c, struct inst *in, const struct digest *d, const char *kind,
		       int64_t cap, uint8_t **out)
{
	if (d->size > cap) {
		call_finish(
			c, GRPC_INVALID_ARGUMENT,
			"%s blobs/%s/%lld is %lld bytes, over the %lld MiB limit for a parsed %s",
			kind, d->hex, (long long)d->size, (long long)d->size,
			(long long)(cap >> 20), kind);
		return -1;
	}
	int rc = blob_get(in->cas, d, out);
	if (rc == 0 || rc == -ENOENT)
		return rc;
	call_finish(c, GRPC_INTERNAL, "reading %s blobs/%s/%lld from CAS: %s", kind, d->hex,
		    (long long)d->size, strerror(-rc));
	return -1;
}

/* The Command's platform (field 5, merged over repeats as protobuf does),
 * checking the wire format of the rest.  Returns 0 with *out (NULL when
 * absent; free with platform__free_unpacked) or -1 when malformed. */
static int command_platform(const uint8_t *buf, size_t len, PbPlatform **out)
{
	struct pbw r;
	struct pbw_field f;
	uint8_t *merged = NULL;
	size_t mlen = 0;
	int rc;
	*out = NULL;
	pbw_init(&r, buf, len);
	while ((rc = pbw_next(&r, &f)) > 0) {
		/* 1..8 are strings or messages, 9 an enum; others unknown. */
		if ((f.num >= 1 && f.num <= 8 && f.wt != PBW_LEN) ||
		    (f.num == 9 && f.wt != PBW_VARINT)) {
			rc = -1;
			break;
		}
		if (f.num == 5) {
			merged = xrealloc(merged, mlen + f.len + 1);
			memcpy(merged + mlen, f.data, f.len);
			mlen += f.len;
		}
	}
	if (rc == 0 && merged) {
		*out = build__bazel__remote__execution__v2__platform__unpack(&call_pb_allocator,
									     mlen, merged);
		if (!*out)
			rc = -1;
	}
	free(merged);
	return rc;
}

/* Check the Action's Command and input root are in CAS and take the
 * deprecated Command.platform.  Returns 0, or -1 when the call was
 * finished (missing blobs, bad Command). */
static int check_inputs(struct call *c, struct inst *in, const PbAction *a, PbPlatform **cplat)
{
	struct digest missing[2], cmd, root;
	const char *what[2];
	size_t nmiss = 0;
	if (reapi_digest(c, a->command_digest, "Action.command_digest", &cmd) != 0 ||
	    reapi_digest(c, a->input_root_digest, "Action.input_root_digest", &root) != 0)
		return -1;
	uint8_t *cbuf = NULL;
	int rc = read_parsed(c, in, &cmd, "Command", COMMAND_MAX, &cbuf);
	if (rc == 0) {
		rc = command_platform(cbuf, (size_t)cmd.size, cplat);
		free(cbuf);
		if (rc != 0) {
			call_finish(
				c, GRPC_INVALID_ARGUMENT,
				"Action.command_digest names a blob that is not a valid Command");
			return -1;
		}
	} else if (rc == -ENOENT) {
		missing[nmiss] = cmd;
		what[nmiss++] = "Command";
	} else {
		return -1;
	}
	if (!digest_is_empty(&root) && !blob_has(in->cas, &root)) {
		missing[nmiss] = root;
		what[nmiss++] = "input root Directory";
	}
	if (nmiss) {
		reapi_finish_missing(c, missing, what, nmiss, "missing from CAS (upload first)");
		return -1;
	}
	return 0;
}

/* Validate the Action's platform and timeout against the instance.
 * Returns 0 with *platform (malloc'd) and *timeout, or -1 when the call
 * was finished. */
static int check_limits(struct call *c, const struct cfg_instance *ci, const PbAction *a,
			const PbPlatform *cplat, char **platform, int64_t *timeout)
{
	/* Action.platform wins; Command.platform is the pre-2.2 place. */
	const PbPlatform *plat = a->platform;
	if ((!plat || !plat->n_properties) && cplat)
		plat = cplat;
	char *err = NULL;
	if (sched_platform(plat, ci, platform, &err) != 0) {
		call_finish(c, GRPC_FAILED_PRECONDITION, "%s", err);
		free(err);
		return -1;
	}
	int64_t t = duration_us(a->timeout);
	if (t < 0) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "Action.timeout is out of range");
		free(*platform);
		*platform = NULL;
		return -1;
	}
	if (t > ci->max_execution_timeout_us) {
		char b1[32], b2[32];
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "Action.timeout %s exceeds this instance's max-execution-timeout %s",
			    fmt_duration(t, b1, sizeof b1),
			    fmt_duration(ci->max_execution_timeout_us, b2, sizeof b2));
		free(*platform);
		*platform = NULL;
		return -1;
	}
	*timeout = t ? t : ci->max_execution_timeout_us;
	return 0;
}

/* Everything checked: open the operation's stream, then answer from the
 * action cache or queue the action.  Takes ownership of platform. */
static void start_exec(struct call *c, struct inst *in,
		       const Build__Bazel__Remote__Execution__V2__ExecuteRequest *req,
		       const struct digest *action, const PbAction *a, char *platform,
		       int64_t timeout)
{
	char *opname = sched_uuid();
	char *full = *in->name ? xasprintf("%s/operations/%s", in->name, opname)
			       : xasprintf("operations/%s", opname);
	free(opname);
	struct exec *ex = ex_new(c, full);
	free(full);
	ex->instance = xstrdup(in->name);
	ex->action = *action;
	ex->platform = platform;
	ex->timeout_us = timeout;
	ex->do_not_cache = a->do_not_cache;
	int prio = req->execution_policy ? req->execution_policy->priority : 0;
	ex->priority = prio < SCHED_PRIORITY_MIN   ? SCHED_PRIORITY_MIN
		       : prio > SCHED_PRIORITY_MAX ? SCHED_PRIORITY_MAX
						   : prio;
	ex->last_stage = SCHED_UNKNOWN;
	if (!req->skip_cache_lookup && !a->do_not_cache) {
		ex_ref(ex);
		int rc = in->cas_remote ? cas_remote_ac_get(in, action, ac_reply, ex)
				 : ac_get(in->name, in->cas, action, ac_reply, ex);
		if (rc != 0) {
			ex_unref(ex);
			svc_fail(c, rc, "cannot read the action cache");
			ex_end(ex);
		}
	} else {
		enqueue(ex);
	}
}

void svc_exec_execute(struct call *c, const ProtobufCMessage *msg)
{
	if (cas_remote_execute(c, msg, svc_exec_execute))
		return;
	const Build__Bazel__Remote__Execution__V2__ExecuteRequest *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	struct digest action;
	if (!in || !svc_exec_enabled(c, in) ||
	    reapi_digest_function(c, req->digest_function) != 0 ||
	    reapi_digest(c, req->action_digest, "action_digest", &action) != 0)
		return;

	/* The Action, its Command and its input root must be in CAS. */
	uint8_t *abuf = NULL;
	int rc = read_parsed(c, in, &action, "Action", ACTION_MAX, &abuf);
	if (rc == -ENOENT) {
		const char *what = "Action";
		reapi_finish_missing(c, &action, &what, 1, "missing from CAS (upload first)");
		return;
	}
	if (rc != 0)
		return;
	PbAction *a = build__bazel__remote__execution__v2__action__unpack(
		&call_pb_allocator, (size_t)action.size, abuf);
	free(abuf);
	if (!a) {
		char ds[DIGEST_STR_LEN];
		call_finish(c, GRPC_INVALID_ARGUMENT, "blob %s is not a valid Action",
			    digest_str(&action, ds, sizeof ds));
		return;
	}
	PbPlatform *cplat = NULL;
	char *platform = NULL;
	int64_t timeout = 0;
	if (check_inputs(c, in, a, &cplat) == 0 &&
	    check_limits(c, inst_cfg(in), a, cplat, &platform, &timeout) == 0)
		start_exec(c, in, req, &action, a, platform, timeout);
	if (cplat)
		build__bazel__remote__execution__v2__platform__free_unpacked(cplat,
									     &call_pb_allocator);
	build__bazel__remote__execution__v2__action__free_unpacked(a, &call_pb_allocator);
}

/* ---- WaitExecution -------------------------------------------------------- */

static void wait_view(void *arg, int rc, struct sched_view *v, size_t n)
{
	struct exec *ex = arg;
	if (!ex->live || call_done(ex->c)) {
		ex_unref(ex);
		return;
	}
	if (rc != 0 || n != 1) {
		svc_fail(ex->c, rc != 0 ? rc : ERR_STORE_REPLY, "cannot read the operation");
		ex_end(ex);
	} else if (!v[0].exists) {
		call_finish(ex->c, GRPC_NOT_FOUND,
			    "operation %s not found (unknown, deleted, or "
			    "past its retention): execute the action again",
			    ex->op);
		ex_end(ex);
	} else if (!svc_ops_may_see(ex->c, ex->op, &v[0])) {
		ex_end(ex);
	} else {
		ex->action = v[0].action;
		ex->job = xstrdup(v[0].job);
		if (v[0].stage == SCHED_COMPLETED || !*ex->job) {
			ex_send(ex, &v[0]);
			if (ex->live && ex->wait_us)
				ka_arm(ex);
		} else
			ex_watch(ex, &v[0]);
	}
	ex_unref(ex);
}

void svc_exec_wait(struct call *c, const ProtobufCMessage *msg)
{
	const Build__Bazel__Remote__Execution__V2__WaitExecutionRequest *req = (const void *)msg;
	if (!req->name || !*req->name || strlen(req->name) > 200) {
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "name must be an operation name "
			    "returned by Execute");
		return;
	}
	struct exec *ex = ex_new(c, req->name);
	ex->last_stage = SCHED_UNKNOWN;
	ex->seq = sched_watch_job_seq();
	const char *names[] = {ex->op};
	ex_ref(ex);
	int rc = sched_view(names, 1, wait_view, ex);
	if (rc != 0) {
		ex_unref(ex);
		svc_fail(c, rc, "cannot read the operation");
		ex_end(ex);
	}
}

/* google.longrunning.Operations.WaitOperation: the operation once it is
 * done, or as it stands when the wait (request timeout, call deadline, or
 * a minute) is over. */
void svc_ops_wait(struct call *c, const ProtobufCMessage *msg)
{
	const Google__Longrunning__WaitOperationRequest *req = (const void *)msg;
	if (!req->name || !*req->name || strlen(req->name) > 200) {
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "name must be an operation name returned by Execute");
		return;
	}
	int64_t wait = 60 * 1000000LL;
	if (req->timeout) {
		if (req->timeout->seconds < 0 || req->timeout->nanos < 0) {
			call_finish(c, GRPC_INVALID_ARGUMENT, "timeout must not be negative");
			return;
		}
		int64_t t = req->timeout->seconds > 86400 ? 86400 * 1000000LL
							  : req->timeout->seconds * 1000000LL +
								    req->timeout->nanos / 1000;
		if (t < wait)
			wait = t;
	}
	/* Answer a little before the caller's own deadline. */
	int64_t left = call_remaining_us(c);
	if (left != INT64_MAX && left - 50000 < wait)
		wait = left > 100000 ? left - 50000 : left / 2;
	struct exec *ex = ex_new(c, req->name);
	ex->wait_us = wait > 0 ? wait : 1;
	ex->last_stage = SCHED_UNKNOWN;
	ex->seq = sched_watch_job_seq();
	const char *names[] = {ex->op};
	ex_ref(ex);
	int rc = sched_view(names, 1, wait_view, ex);
	if (rc != 0) {
		ex_unref(ex);
		svc_fail(c, rc, "cannot read the operation");
		ex_end(ex);
	}
}

/* ---- both ----------------------------------------------------------------- */

static void orphan_cancelled(void *arg, int rc, const char *instance)
{
	(void)instance;
	char *op = arg;
	if (rc == 0)
		LOGI(MOD,
		     "operation %s cancelled: its last stream went away "
		     "(cancel-orphaned-jobs)",
		     op);
	free(op);
}

void svc_exec_cancel(struct call *c)
{
	struct exec *ex = call_data(c);
	if (!ex)
		return;
	if (ex->instance && ex->job && ex->last_stage != SCHED_COMPLETED) {
		struct inst *in = inst_find(ex->instance);
		if (in && inst_cfg(in)->cancel_orphaned_jobs) {
			char *op = xstrdup(ex->op);
			/* The stream of the Execute that created it: its owner's. */
			if (sched_cancel_op(op, NULL, orphan_cancelled, op) != 0)
				free(op);
		}
	}
	ex_end(ex);
}

void svc_exec_writable(struct call *c)
{
	struct exec *ex = call_data(c);
	if (!ex || !ex->live || !ex->held)
		return;
	if (call_pending(c) >= SVC_STREAM_HIWAT) {
		call_want_writable(c);
		return;
	}
	uint8_t *buf = ex->held;
	ex->held = NULL;
	ex->last_send = mono_us();
	if (call_send_owned(c, buf, ex->held_len) != 0) {
		ex_end(ex);
		return;
	}
	if (ex->held_final) {
		call_finish(c, GRPC_OK, NULL);
		ex_end(ex);
	}
}

void svc_exec_init(struct event_base *base)
{
	ex_g.base = base;
}

void svc_exec_drain(void)
{
	while (ex_g.live) {
		struct exec *ex = ex_g.live;
		call_finish(ex->c, GRPC_UNAVAILABLE,
			    "server shutting down: the operation goes "
			    "on; resume with WaitExecution");
		ex_end(ex);
	}
}
