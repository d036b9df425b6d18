/*
 * svc_admin.c - reactor.admin.v1.Admin: the read-only operator view
 * (ListBots, ListQueues, ListOperations, GetSummary) over domain/inspect.h,
 * for reactorctl's bot ls / queue ls / op ls and any other tool.  The
 * dispatch table checks the role (ops-admin on the request's instance;
 * GetSummary: on at least one); here each call looks its instance up,
 * runs one inspect query and copies the rows into the reply.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "domain/inspect.h"
#include "domain/sched.h"
#include "proto/pb.h"
#include "rpc/call.h"
#include "services/inst.h"
#include "services/svc.h"

/* The call a query answers: the reference keeps it alive until then. */
static struct call *hold(struct call *c)
{
	call_ref(c);
	return c;
}

/* False (and the reference dropped) when the call ended or rc failed. */
static bool answerable(struct call *c, int rc, const char *what)
{
	if (call_done(c)) {
		call_unref(c);
		return false;
	}
	if (rc != 0) {
		svc_fail(c, rc, what);
		call_unref(c);
		return false;
	}
	return true;
}

/* Answer a call whose query could not start (rc from inspect_*). */
static void not_started(struct call *c, int rc, const char *what)
{
	if (rc != 0) {
		svc_fail(c, rc, what);
		call_unref(c);
	}
}

/* False (the call answered INVALID_ARGUMENT) for a negative limit. */
static bool limit_ok(struct call *c, int32_t limit)
{
	if (limit >= 0)
		return true;
	call_finish(c, GRPC_INVALID_ARGUMENT, "limit %d is negative", limit);
	return false;
}

/* n zeroed reply messages (at least one) into msgs, and ptrs, the array
 * of pointers to them a repeated field takes; the caller frees both. */
#define MSGS_NEW(msgs, ptrs, n)                                                                    \
	do {                                                                                       \
		size_t n_ = (n) ? (n) : 1;                                                         \
		(msgs) = xcalloc(n_, sizeof(*(msgs)));                                             \
		(ptrs) = xcalloc(n_, sizeof(*(ptrs)));                                             \
		for (size_t i_ = 0; i_ < (n); i_++)                                                \
			(ptrs)[i_] = &(msgs)[i_];                                                  \
	} while (0)

/* ---- ListBots ------------------------------------------------------------ */

static void bots_done(void *arg, int rc, struct inspect_bots *r)
{
	struct call *c = arg;
	if (!answerable(c, rc, "cannot list the bots"))
		return;
	PbAdmBot **ptrs, *bots;
	MSGS_NEW(bots, ptrs, r->n);
	for (size_t i = 0; i < r->n; i++) {
		const struct inspect_bot *b = &r->bots[i];
		PbAdmBot *m = &bots[i];
		reactor__admin__v1__bot__init(m);
		m->session = b->session;
		m->bot_id = b->bot_id;
		m->owner = b->owner;
		m->state = (char *)inspect_bot_state_name(b->state);
		m->properties = b->props;
		m->busy = b->busy;
		m->lease_job = b->lease_job;
		m->lease_state = b->lease_state;
		m->lease_action_digest = b->lease_action;
		m->n_lease_operations = b->n_lease_ops;
		m->lease_operations = b->lease_ops;
		m->created_us = b->created_us;
		m->last_seen_us = b->last_seen_us;
		m->expire_us = b->expire_us;
	}
	Reactor__Admin__V1__ListBotsResponse resp = ADM(LIST_BOTS_RESPONSE__INIT);
	resp.n_bots = r->n;
	resp.bots = ptrs;
	resp.total = (int64_t)r->total;
	resp.truncated = r->truncated;
	call_reply(c, &resp.base);
	free(ptrs);
	free(bots);
	call_unref(c);
}

void svc_admin_list_bots(struct call *c, const ProtobufCMessage *msg)
{
	const Reactor__Admin__V1__ListBotsRequest *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	if (!in)
		return;
	if (limit_ok(c, req->limit))
		not_started(c, inspect_bots(in->name, req->limit, bots_done, hold(c)),
			    "cannot list the bots");
}

/* ---- ListQueues ---------------------------------------------------------- */

static void queues_done(void *arg, int rc, struct inspect_queues *r)
{
	struct call *c = arg;
	if (!answerable(c, rc, "cannot list the queues"))
		return;
	PbAdmQueue **ptrs, *qs;
	MSGS_NEW(qs, ptrs, r->n);
	for (size_t i = 0; i < r->n; i++) {
		const struct inspect_queue *q = &r->queues[i];
		reactor__admin__v1__queue__init(&qs[i]);
		qs[i].platform = q->platform;
		qs[i].queued = q->queued;
		qs[i].oldest_queued_us = q->oldest_us;
		qs[i].bots = q->bots;
		qs[i].bots_busy = q->bots_busy;
	}
	Reactor__Admin__V1__ListQueuesResponse resp = ADM(LIST_QUEUES_RESPONSE__INIT);
	resp.n_queues = r->n;
	resp.queues = ptrs;
	resp.truncated = r->truncated;
	call_reply(c, &resp.base);
	free(ptrs);
	free(qs);
	call_unref(c);
}

void svc_admin_list_queues(struct call *c, const ProtobufCMessage *msg)
{
	const Reactor__Admin__V1__ListQueuesRequest *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	if (!in)
		return;
	not_started(c, inspect_queues(in->name, queues_done, hold(c)), "cannot list the queues");
}

/* ---- ListOperations ------------------------------------------------------ */

static void ops_done(void *arg, int rc, struct inspect_ops *r)
{
	struct call *c = arg;
	if (!answerable(c, rc, "cannot list the operations"))
		return;
	PbAdmOperation **ptrs, *os;
	MSGS_NEW(os, ptrs, r->n);
	for (size_t i = 0; i < r->n; i++) {
		const struct inspect_op *o = &r->ops[i];
		PbAdmOperation *m = &os[i];
		reactor__admin__v1__operation__init(m);
		m->name = o->name;
		m->stage = (char *)sched_stage_name(o->stage);
		m->action_digest = o->action;
		m->job = o->job;
		m->owner = o->owner;
		m->bot_id = o->bot_id;
		m->session = o->session;
		m->created_us = o->created_us;
		m->queued_us = o->queued_us;
		m->started_us = o->started_us;
		m->completed_us = o->completed_us;
		m->cached = o->cached;
		m->status_code = o->status;
		m->status_message = o->message;
		m->has_exit_code = o->has_exit;
		m->exit_code = o->exit_code;
	}
	Reactor__Admin__V1__ListOperationsResponse resp = ADM(LIST_OPERATIONS_RESPONSE__INIT);
	resp.n_operations = r->n;
	resp.operations = ptrs;
	resp.truncated = r->truncated;
	call_reply(c, &resp.base);
	free(ptrs);
	free(os);
	call_unref(c);
}

void svc_admin_list_operations(struct call *c, const ProtobufCMessage *msg)
{
	const Reactor__Admin__V1__ListOperationsRequest *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	if (!in)
		return;
	int stage = 0;
	if (req->stage && *req->stage) {
		stage = sched_stage_parse(req->stage);
		if (stage <= 0) {
			call_finish(c, GRPC_INVALID_ARGUMENT,
				    "unknown stage \"%.40s\": use CACHE_CHECK, QUEUED, EXECUTING "
				    "or COMPLETED (or \"\" for any)",
				    req->stage);
			return;
		}
	}
	if (limit_ok(c, req->limit))
		not_started(c, inspect_operations(in->name, stage, req->limit, ops_done, hold(c)),
			    "cannot list the operations");
}

/* ---- GetSummary ---------------------------------------------------------- */

static void summary_done(void *arg, int rc, struct inspect_summary *r)
{
	struct call *c = arg;
	if (!answerable(c, rc, "cannot read the counters"))
		return;
	Reactor__Admin__V1__InstanceSummary **isp, *is;
	MSGS_NEW(is, isp, r->n_instances);
	Reactor__Admin__V1__QueueDepth **qdp, *qd;
	MSGS_NEW(qd, qdp, r->n_depth);
	Reactor__Admin__V1__BucketSummary **bsp, *bs;
	MSGS_NEW(bs, bsp, r->n_buckets);
	for (size_t i = 0; i < r->n_instances; i++) {
		reactor__admin__v1__instance_summary__init(&is[i]);
		is[i].instance_name = r->instances[i].instance;
		is[i].operations = r->instances[i].ops;
		is[i].queued = r->instances[i].queued;
		is[i].bots = r->instances[i].bots;
		is[i].bots_busy = r->instances[i].bots_busy;
		is[i].operations_queued = r->instances[i].ops_queued;
		is[i].operations_executing = r->instances[i].ops_executing;
		is[i].operations_completed_ok = r->instances[i].ops_ok;
		is[i].operations_completed_failed = r->instances[i].ops_failed;
		is[i].operations_completed_cancelled = r->instances[i].ops_cancelled;
	}
	for (size_t i = 0; i < r->n_depth; i++) {
		reactor__admin__v1__queue_depth__init(&qd[i]);
		qd[i].instance_name = r->depth[i].instance;
		qd[i].platform = r->depth[i].platform;
		qd[i].queued = r->depth[i].queued;
	}
	for (size_t i = 0; i < r->n_buckets; i++) {
		reactor__admin__v1__bucket_summary__init(&bs[i]);
		bs[i].bucket = r->buckets[i].bucket;
		bs[i].scheduled = r->buckets[i].scheduled;
		bs[i].started = r->buckets[i].started;
		bs[i].completed = r->buckets[i].completed;
	}
	PbAdmSummary resp = ADM(SUMMARY__INIT);
	resp.n_instances = r->n_instances;
	resp.instances = isp;
	resp.n_queue_depth = r->n_depth;
	resp.queue_depth = qdp;
	resp.jobs_executing = r->jobs_executing;
	resp.n_buckets = r->n_buckets;
	resp.buckets = bsp;
	resp.builds_leased = r->builds_leased;
	resp.master = r->master;
	resp.master_leases = r->master_leases;
	resp.truncated = r->truncated;
	call_reply(c, &resp.base);
	free(is);
	free(isp);
	free(qd);
	free(qdp);
	free(bs);
	free(bsp);
	call_unref(c);
}

void svc_admin_summary(struct call *c, const ProtobufCMessage *msg)
{
	(void)msg;
	not_started(c, inspect_summary(summary_done, hold(c)), "cannot read the counters");
}
