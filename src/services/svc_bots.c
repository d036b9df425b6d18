/*
 * svc_bots.c - google.devtools.remoteworkers.v1test2.Bots: the workers'
 * side of remote execution.  CreateBotSession opens a session (closing
 * the bot id's previous one and requeueing its lease); UpdateBotSession
 * reports the state of the session's one lease (PENDING -> ACTIVE ->
 * COMPLETED, or CANCELLED) and, when the bot is idle, hands it the best
 * queued job its properties match, long-polling for one up to the call's
 * deadline minus a margin; PostBotEventTemp is logged.
 *
 * A lease's payload is an Any packing the Action's Digest and its id is
 * the job name; a completed lease carries an Any packing the ActionResult
 * and a google.rpc.Status.  Each response sets expire_time to now +
 * scheduler.bot-session-keepalive: the sweep closes sessions that miss it
 * and requeues their lease.
 *
 * Ownership (issue 12; domain/sched.h): both calls need the bot role on
 * the session's instance, and a bot id is bound to the identity that
 * opened its session: another identity cannot open a session for that
 * bot id, update (or close) the session, or report on its lease -
 * PERMISSION_DENIED.  So a result reaches the action cache (the
 * completion path below) only through a session of an identity with
 * bot.
 *
 * One struct bot per UpdateBotSession in flight, reference counted like
 * svc_exec.c's streams: the call holds one reference until it ends and
 * each Redis request one more.  A long-polling call sits on the watch
 * layer's bot list and leaves it when its client goes away.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "domain/ac.h"
#include "core/cfg.h"
#include "core/err.h"
#include "core/list.h"
#include "google/devtools/remoteworkers/v1test2/bots.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "services/auth.h"
#include "services/cas_remote.h"
#include "services/inst.h"
#include "core/log.h"
#include "services/reapi.h"
#include "domain/sched.h"
#include "services/svc.h"
#include "domain/sched_watch.h"
#include "proto/pb.h"

#define MOD	   "bots"
#define URL_DIGEST "type.googleapis.com/build.bazel.remote.execution.v2.Digest"
#define URL_RESULT "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult"
/* Answer a long poll this long before the client's deadline (the
 * reference implementation's NETWORK_TIMEOUT); shorter deadlines get
 * half their time. */
#define POLL_MARGIN_US 5000000LL
#define POLL_MIN_US    50000LL

struct bot {
	struct call *c;
	int refs;
	char *session, *bot_id, *instance, *props, *version;
	int status;
	uint8_t *worker; /* the request's Worker, packed, echoed back */
	size_t worker_len;
	PbActionResult *result; /* a completed lease's result, until stored */
	bool assign;		/* the bot may take work */
	int64_t poll_us;	/* how long an idle call may wait */
	uint64_t qseq;
	struct sched_watch_bot wb;
	struct event *timer;
	bool waiting;
	struct list link; /* on bg.live while the call is live */
};

static struct {
	struct event_base *base;
	struct list live; /* struct bot.link */
} bg = {.live = LIST_INIT(bg.live)};

/* Live: the call is still ours to answer (bot_end has not run). */
static bool bot_live(const struct bot *b)
{
	return list_linked(&b->link);
}

static void bot_ref(struct bot *b)
{
	b->refs++;
}

static void bot_unref(struct bot *b)
{
	if (--b->refs > 0)
		return;
	if (b->timer)
		event_free(b->timer);
	if (b->result)
		build__bazel__remote__execution__v2__action_result__free_unpacked(
			b->result, &call_pb_allocator);
	call_unref(b->c);
	free(b->session);
	free(b->bot_id);
	free(b->instance);
	free(b->props);
	free(b->version);
	free(b->worker);
	free(b);
}

static void bot_end(struct bot *b)
{
	if (!bot_live(b))
		return;
	list_del(&b->link);
	sched_watch_bot_remove(&b->wb);
	if (b->timer)
		event_del(b->timer);
	call_set_data(b->c, NULL);
	bot_unref(b);
}

/* Send the session (with `lease` when it has an id) and end the call. */
static void reply(struct bot *b, const struct sched_lease *lease)
{
	PbBotSession s = RW(BOT_SESSION__INIT);
	s.name = b->session;
	s.bot_id = b->bot_id;
	s.status = b->status;
	s.version = b->version ? b->version : (char *)"";
	Google__Devtools__Remoteworkers__V1test2__Worker *w = NULL;
	if (b->worker)
		w = google__devtools__remoteworkers__v1test2__worker__unpack(
			&call_pb_allocator, b->worker_len, b->worker);
	s.worker = w;
	Google__Protobuf__Timestamp exp = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	int64_t e = now_us() + svc_config()->sched_bot_keepalive_us;
	exp.seconds = e / 1000000;
	exp.nanos = (int32_t)(e % 1000000) * 1000;
	s.expire_time = &exp;

	PbLease l = RW(LEASE__INIT), *lp = &l;
	Google__Protobuf__Any payload = GOOGLE__PROTOBUF__ANY__INIT;
	uint8_t dbuf[128];
	if (lease && lease->id) {
		l.id = lease->id;
		l.state = lease->state;
		if (!digest_is_empty(&lease->action)) {
			PbDigest d;
			reapi_pb_digest(&d, &lease->action);
			size_t n = protobuf_c_message_get_packed_size(&d.base);
			if (n <= sizeof dbuf) {
				protobuf_c_message_pack(&d.base, dbuf);
				payload.type_url = (char *)URL_DIGEST;
				payload.value.data = dbuf;
				payload.value.len = n;
				l.payload = &payload;
			}
		}
		s.n_leases = 1;
		s.leases = &lp;
	}
	call_reply(b->c, &s.base);
	if (w)
		google__devtools__remoteworkers__v1test2__worker__free_unpacked(w,
										&call_pb_allocator);
	bot_end(b);
}

static void finish_rc(struct bot *b, const struct sched_bot_result *r)
{
	if (r->rc == -ENOENT)
		call_finish(b->c, GRPC_NOT_FOUND,
			    "bot session %s does not exist (expired, closed, or replaced by a "
			    "newer session of the bot): create a new one",
			    b->session);
	else if (r->rc == -EACCES)
		call_finish(b->c, GRPC_PERMISSION_DENIED,
			    "%s may not use bot %s (session %s): the bot id is bound to the "
			    "identity that opened its session",
			    auth_identity(b->c), b->bot_id, b->session);
	else if (r->rc == -EPERM)
		call_finish(b->c, GRPC_INVALID_ARGUMENT,
			    "bot session %s belongs to bot \"%s\", not \"%s\"; the session was "
			    "closed",
			    b->session, r->stored_bot_id ? r->stored_bot_id : "?", b->bot_id);
	else
		svc_fail(b->c, r->rc, "cannot use bot session %s", b->session);
	bot_end(b);
}

/* ---- long poll ------------------------------------------------------------- */

static void try_assign(struct bot *b);

static void poll_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct bot *b = arg;
	if (!bot_live(b))
		return;
	if (b->wb.busy) {
		/* An assign is in flight; its reply answers. */
		b->waiting = false;
		return;
	}
	reply(b, NULL);
}

static void assign_reply(void *arg, const struct sched_bot_result *r)
{
	struct bot *b = arg;
	b->wb.busy = false;
	if (!bot_live(b) || call_done(b->c)) {
		/* Nobody will hear of this lease: give it back. */
		if (r->rc == 0 && r->lease.id && sched_unassign(b->session, r->lease.id) != 0)
			LOGW(MOD,
			     "lease %s of session %s not returned: Redis is unavailable; it is "
			     "requeued when the session expires",
			     r->lease.id, b->session);
		bot_unref(b);
		return;
	}
	if (r->rc != 0 && !err_is_store(r->rc) && r->rc != ERR_STORE_REPLY) {
		/* The session is gone; Redis trouble keeps the poll waiting. */
		finish_rc(b, r);
	} else if (r->rc == 0 && r->lease.id) {
		LOGI(MOD, "session %s (bot %s): lease %s", b->session, b->bot_id, r->lease.id);
		reply(b, &r->lease);
	} else if (!b->waiting) {
		reply(b, NULL); /* the poll ended while we asked */
	} else if (!sched_watch_bot_listed(&b->wb)) {
		sched_watch_bot_add(&b->wb);
	}
	bot_unref(b);
}

static void try_assign(struct bot *b)
{
	b->wb.busy = true;
	bot_ref(b);
	if (sched_assign(b->session, assign_reply, b) != 0) {
		b->wb.busy = false;
		bot_unref(b);
	}
}

static void on_wake(struct sched_watch_bot *wb)
{
	struct bot *b = container_of(wb, struct bot, wb);
	if (bot_live(b) && !b->wb.busy)
		try_assign(b);
}

static void long_poll(struct bot *b)
{
	if (b->poll_us < POLL_MIN_US || !b->assign) {
		reply(b, NULL);
		return;
	}
	b->waiting = true;
	b->wb.instance = b->instance;
	b->wb.props = b->props;
	b->wb.on_wake = on_wake;
	b->timer = evtimer_new(bg.base, poll_timeout, b);
	struct timeval tv = {b->poll_us / 1000000, b->poll_us % 1000000};
	evtimer_add(b->timer, &tv);
	sched_watch_bot_add(&b->wb);
	/* Work announced between our script and now would be missed. */
	if (sched_watch_queue_seq() != b->qseq)
		try_assign(b);
}

/* ---- requests ------------------------------------------------------------- */

static void session_reply(void *arg, const struct sched_bot_result *r)
{
	struct bot *b = arg;
	if (!bot_live(b) || call_done(b->c)) {
		if (r->rc == 0 && r->lease.id && r->lease.state == RW(LEASE_STATE__PENDING) &&
		    sched_unassign(b->session, r->lease.id) != 0)
			LOGW(MOD, "lease %s of session %s not returned: Redis is unavailable",
			     r->lease.id, b->session);
		bot_unref(b);
		return;
	}
	if (r->rc != 0) {
		finish_rc(b, r);
		bot_unref(b);
		return;
	}
	if (r->closed && *r->closed)
		LOGI(MOD, "bot %s opened session %s; closed its previous session %s", b->bot_id,
		     b->session, r->closed);
	if (r->done_job) {
		/* Cache the result: exit code 0, OK status, cacheable action. */
		struct inst *in = inst_find(b->instance);
		if (b->result && in && !r->done_do_not_cache && b->result->exit_code == 0) {
			int rc = in->cas_remote ? cas_remote_ac_put(in, &r->done_action, b->result, NULL, NULL)
						 : ac_put(in->name, in->cas, &r->done_action, b->result, NULL, NULL);
			if (rc != 0)
				LOGW(MOD, "result of job %s not cached: %s", r->done_job,
				     err_name(rc));
		}
		LOGI(MOD, "session %s (bot %s) completed job %s", b->session, b->bot_id,
		     r->done_job);
	}
	if (r->lease.id) {
		if (r->lease.state == RW(LEASE_STATE__PENDING))
			LOGI(MOD, "session %s (bot %s): lease %s", b->session, b->bot_id,
			     r->lease.id);
		reply(b, &r->lease);
	} else {
		long_poll(b);
	}
	bot_unref(b);
}

static struct bot *bot_new(struct call *c)
{
	struct bot *b = xcalloc(1, sizeof(*b));
	b->c = c;
	call_ref(c);
	b->refs = 1;
	call_set_data(c, b);
	list_add_head(&bg.live, &b->link);
	return b;
}

static void keep_worker(struct bot *b, const PbBotSession *s)
{
	b->status = s->status;
	b->version = xstrdup(s->version ? s->version : "");
	if (s->worker) {
		b->worker_len = protobuf_c_message_get_packed_size(&s->worker->base);
		b->worker = xmalloc(b->worker_len ? b->worker_len : 1);
		protobuf_c_message_pack(&s->worker->base, b->worker);
	}
	b->assign = s->status == RW(BOT_STATUS__OK) ||
		    s->status == RW(BOT_STATUS__BOT_STATUS_UNSPECIFIED);
}

/* How long an idle UpdateBotSession may wait for work. */
static int64_t poll_budget(struct call *c)
{
	int64_t rem = call_remaining_us(c);
	int64_t cap = svc_config()->sched_long_poll_us;
	int64_t w = rem >= 2 * POLL_MARGIN_US ? rem - POLL_MARGIN_US : rem / 2;
	return w > cap ? cap : w;
}

void svc_bots_create(struct call *c, const ProtobufCMessage *msg)
{
	const Google__Devtools__Remoteworkers__V1test2__CreateBotSessionRequest *req =
		(const void *)msg;
	struct inst *in = inst_lookup(c, req->parent);
	if (!in || !svc_exec_enabled(c, in))
		return;
	if (!auth_has(c, in->name, ROLE_BOT)) {
		auth_deny(c, in->name, ROLE_BOT, NULL);
		return;
	}
	const PbBotSession *s = req->bot_session;
	if (!s || !s->bot_id || !*s->bot_id) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "bot_session.bot_id is required");
		return;
	}
	if (strlen(s->bot_id) > 200) {
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "bot_session.bot_id is longer than 200 bytes");
		return;
	}
	struct bot *b = bot_new(c);
	char *uuid = uuid4();
	b->session = *in->name ? xasprintf("%s/%s", in->name, uuid) : xstrdup(uuid);
	free(uuid);
	b->bot_id = xstrdup(s->bot_id);
	b->instance = xstrdup(in->name);
	b->props = sched_bot_props(s->worker, inst_cfg(in));
	keep_worker(b, s);
	struct sched_bot_create_req r = {
		.session = b->session,
		.instance = b->instance,
		.bot_id = b->bot_id,
		.props = b->props,
		.status = b->status,
		.expire_us = now_us() + svc_config()->sched_bot_keepalive_us,
		.assign = b->assign,
		.owner = auth_identity(c),
	};
	LOGI(MOD, CALL_FMT ": bot %s opens session %s (properties \"%s\")", CALL_ARGS(c), b->bot_id,
	     b->session, b->props);
	b->poll_us = 0; /* creation never waits */
	bot_ref(b);
	int rc = sched_bot_create(&r, session_reply, b);
	if (rc != 0) {
		bot_unref(b);
		svc_fail(c, rc, "cannot open a bot session");
		bot_end(b);
	}
}

/* The instance of a session name "{instance}/{uuid}" or "{uuid}". */
static struct inst *session_inst(const char *name)
{
	const char *slash = strrchr(name, '/');
	if (!slash)
		return inst_find("");
	char *pfx = xstrndup(name, (size_t)(slash - name));
	struct inst *in = inst_find(pfx);
	free(pfx);
	return in;
}

/* The lease the bot reports on: its first lease not CANCELLED, else the
 * first one. */
static const PbLease *reported_lease(const PbBotSession *s)
{
	for (size_t i = 0; i < s->n_leases; i++)
		if (s->leases[i] && s->leases[i]->state != RW(LEASE_STATE__CANCELLED))
			return s->leases[i];
	return s->n_leases ? s->leases[0] : NULL;
}

void svc_bots_update(struct call *c, const ProtobufCMessage *msg)
{
	const Google__Devtools__Remoteworkers__V1test2__UpdateBotSessionRequest *req =
		(const void *)msg;
	const PbBotSession *s = req->bot_session;
	if (!req->name || !*req->name || strlen(req->name) > 300) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "name (the bot session) is required");
		return;
	}
	if (!s) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "bot_session is required");
		return;
	}
	if (s->name && *s->name && strcmp(s->name, req->name) != 0) {
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "name \"%.200s\" does not match bot_session.name \"%.200s\"", req->name,
			    s->name);
		return;
	}
	if (!s->bot_id || !*s->bot_id) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "bot_session.bot_id is required");
		return;
	}
	struct inst *in = session_inst(req->name);
	if (!in) {
		call_finish(c, GRPC_NOT_FOUND,
			    "bot session %.200s does not exist: create a new "
			    "one",
			    req->name);
		return;
	}
	if (!svc_exec_enabled(c, in))
		return;
	if (!auth_has(c, in->name, ROLE_BOT)) {
		auth_deny(c, in->name, ROLE_BOT, NULL);
		return;
	}

	struct sched_bot_update_req r = {
		.session = req->name, .bot_id = s->bot_id, .owner = auth_identity(c)};
	const PbLease *l = reported_lease(s);
	char *msgbuf = NULL;
	PbActionResult *result = NULL;
	if (l && l->id && *l->id) {
		r.lease_id = l->id;
		r.lease_state = l->state;
		if (l->state == RW(LEASE_STATE__COMPLETED)) {
			r.code = l->status ? l->status->code : GRPC_OK;
			r.message = l->status && l->status->message ? l->status->message : "";
			if (l->result && l->result->type_url &&
			    str_endswith(l->result->type_url,
					 "/build.bazel.remote.execution.v2.ActionResult")) {
				result = build__bazel__remote__execution__v2__action_result__unpack(
					&call_pb_allocator, l->result->value.len,
					l->result->value.data);
				const char *bad =
					result ? call_bad_string_field(result->base.descriptor,
								       l->result->value.data,
								       l->result->value.len)
					       : NULL;
				if (bad) {
					/* Never store what clients could not parse. */
					build__bazel__remote__execution__v2__action_result__free_unpacked(
						result, &call_pb_allocator);
					result = NULL;
					r.code = GRPC_INTERNAL;
					r.message = msgbuf = xasprintf(
						"bot %s reported an ActionResult whose %s is not "
						"valid UTF-8",
						s->bot_id, bad);
				} else if (!result) {
					r.code = GRPC_INTERNAL;
					r.message = msgbuf = xasprintf(
						"bot %s reported a result that is not a valid "
						"ActionResult",
						s->bot_id);
				} else {
					r.result = l->result->value.data;
					r.result_len = l->result->value.len;
				}
			} else if (l->result) {
				r.code = GRPC_INTERNAL;
				r.message = msgbuf = xasprintf(
					"bot %s reported a result of type \"%.100s\", not an "
					"ActionResult",
					s->bot_id, l->result->type_url ? l->result->type_url : "");
			}
		}
	}
	struct bot *b = bot_new(c);
	b->session = xstrdup(req->name);
	b->bot_id = xstrdup(s->bot_id);
	b->instance = xstrdup(in->name);
	b->props = sched_bot_props(s->worker, inst_cfg(in));
	b->result = result;
	keep_worker(b, s);
	b->poll_us = poll_budget(c);
	b->qseq = sched_watch_queue_seq();
	r.status = b->status;
	r.assign = b->assign;
	/* Cover the long poll, then the keep-alive after our answer. */
	r.expire_us =
		now_us() + (b->poll_us > 0 ? b->poll_us : 0) + svc_config()->sched_bot_keepalive_us;
	bot_ref(b);
	int rc = sched_bot_update(&r, session_reply, b);
	if (rc != 0) {
		bot_unref(b);
		svc_fail(c, rc, "cannot update the bot session");
		bot_end(b);
	}
	free(msgbuf);
}

void svc_bots_cancel(struct call *c)
{
	struct bot *b = call_data(c);
	if (b)
		bot_end(b);
}

void svc_bots_post_event(struct call *c, const ProtobufCMessage *msg)
{
	const Google__Devtools__Remoteworkers__V1test2__PostBotEventTempRequest *req =
		(const void *)msg;
	int lvl = req->type == RW(POST_BOT_EVENT_TEMP_REQUEST__TYPE__ERROR) ? LOG_WARN : LOG_INFO;
	log_msg(lvl, MOD, CALL_FMT ": event from bot session %.200s: %.1000s", CALL_ARGS(c),
		req->name, req->msg);
	Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
	call_reply(c, &e.base);
}

void svc_bots_drain(void)
{
	struct list *pos, *tmp;
	list_for_each_safe (pos, tmp, &bg.live) {
		struct bot *b = container_of(pos, struct bot, link);
		if (b->waiting && !b->wb.busy)
			reply(b, NULL);
		else
			b->waiting = false;
	}
}

void svc_bots_init(struct event_base *base)
{
	bg.base = base;
}
