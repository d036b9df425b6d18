/*
 * master.c - the build master's outer loop (master.h): the clients of the
 * Buckets service and the executor, the poll timer, the WatchBuilds
 * streams that wake it, Peek and Lease up to the lease limit, the
 * HeartbeatBatch timer, and shutdown.  Owns the held-build list; one
 * build's run is master_build.c.
 */
#include "domain/master.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "domain/master_int.h"

#define BK_PFX	       "/reactor.buckets.v1.Buckets/"
#define CALL_TIMEOUT   (30LL * 1000000)
#define WATCH_RETRY_US (1000000LL)
#define DRAIN_MAX_US   (3LL * 1000000)

struct mwatch {
	struct rc_call *call;
	struct event *retry_ev;
	bool live;
};

static struct {
	struct event_base *base;
	const struct cfg_master *cfg;
	bool running, draining;
	char *name;
	char *bk_target, *ex_target;
	bool bk_self, ex_self; /* the endpoint is this reactord (no server/executor set) */
	struct rc_client *bk, *ex;
	struct event *poll_ev, *hb_ev, *wake_ev, *drain_ev;
	bool peeking, repeek, hb_inflight;
	struct list held;
	int nheld;
	struct mwatch watch;
	int resets_pending;
	void (*drain_done)(void *);
	void *drain_arg;
} m = {.held = LIST_INIT(m.held)};

static const char *const mb_state_names[] = {"LEASING", "STARTING", "RUNNING", "REPORTING", "DONE"};

const char *mb_state_name(enum mb_state s)
{
	return (unsigned)s < ARRAY_LEN(mb_state_names) ? mb_state_names[s] : "?";
}

void mb_set_state(struct mbuild *b, enum mb_state to)
{
	/* Forward only, except DONE from anywhere. */
	assert(to == MB_DONE || to >= b->state);
	LOGD(MMOD, "build %" PRId64 ": from %s to %s", b->id, mb_state_name(b->state),
	     mb_state_name(to));
	b->state = to;
}

/* ---- clients ------------------------------------------------------------------- */

/* master.tls and master.token-file (not reloadable: borrowed from m.cfg).
 * master.tls is for the configured server/executor; this reactord itself
 * is reached over a unix socket or plaintext loopback when it has one
 * (server_self_target), and then without TLS. */
static struct rc_client_opts client_opts(const char *target, bool self)
{
	const struct cfg_master *c = m.cfg;
	struct rc_client_opts o = {.token_file = c->token_file};
	if (!self || !strncmp(target, "grpcs://", 8))
		o.tls = (struct rc_tls){.ca = c->tls_ca,
					.cert = c->tls_cert,
					.key = c->tls_key,
					.server_name = c->tls_server_name};
	return o;
}

/* Refuse at start what every connect would fail on: unreadable TLS or
 * token files, TLS settings for a unix socket endpoint. */
static int check_clients(char **err)
{
	const char *targets[] = {m.bk_target, m.ex_target};
	const bool self[] = {m.bk_self, m.ex_self};
	char *why = NULL;
	for (size_t i = 0; i < ARRAY_LEN(targets) && !why; i++) {
		struct rc_client_opts o = client_opts(targets[i], self[i]);
		struct rc_target t;
		if (rc_client_opts_check(&o, &why) == 0 &&
		    rc_target_parse(targets[i], rc_client_opts_tls(&o), &t, &why) == 0)
			rc_target_free(&t);
	}
	if (!why)
		return 0;
	*err = xasprintf("master: %s", why);
	free(why);
	return -1;
}

static struct rc_client *client(struct rc_client **slot, const char *target, bool self)
{
	if (*slot && rc_client_alive(*slot))
		return *slot;
	if (*slot) {
		rc_client_release(*slot);
		*slot = NULL;
	}
	if (m.draining)
		return NULL;
	char *err = NULL;
	struct rc_client_opts o = client_opts(target, self);
	*slot = rc_client_connect_opts(m.base, target, &o, &err);
	if (!*slot) {
		LOGE(MMOD, "cannot connect to %s: %s", target, err);
		free(err);
	}
	return *slot;
}

struct rc_client *master_bk(void)
{
	return client(&m.bk, m.bk_target, m.bk_self);
}

struct rc_client *master_ex(void)
{
	if (strcmp(m.ex_target, m.bk_target) == 0)
		return master_bk();
	return client(&m.ex, m.ex_target, m.ex_self);
}

const char *master_instance(void)
{
	return m.cfg->executor_instance ? m.cfg->executor_instance : "";
}

const char *master_name(void)
{
	return m.name;
}

const struct cfg_master *master_cfg(void)
{
	return m.cfg;
}

/* ---- held builds ------------------------------------------------------------------ */

void mb_ref(struct mbuild *b)
{
	b->refs++;
}

void mb_unref(struct mbuild *b)
{
	assert(b->refs > 0);
	if (--b->refs > 0)
		return;
	assert(b->gone && !list_linked(&b->link));
	mb_free_run(b);
	free(b->op_name);
	free(b->bucket);
	free(b->params_json);
	free(b->builder_name);
	free(b);
}

static void wake_soon(void);

void mb_release(struct mbuild *b, const char *why)
{
	if (b->gone)
		return;
	bool was_full = m.cfg && m.nheld >= m.cfg->max_lease_count;
	LOGD(MMOD, "build %" PRId64 ": released (%s)", b->id, why);
	b->gone = true;
	if (!b->keep_state)
		mstate_drop(b);
	mb_cancel_exec(b);
	mb_set_state(b, MB_DONE);
	list_del(&b->link);
	m.nheld--;
	if (was_full || m.repeek)
		wake_soon();
	mb_unref(b);
}

static struct mbuild *held_find(int64_t id)
{
	struct list *pos;
	list_for_each (pos, &m.held) {
		struct mbuild *b = container_of(pos, struct mbuild, link);
		if (b->id == id)
			return b;
	}
	return NULL;
}

bool master_running(void)
{
	return m.running;
}

int master_nheld(void)
{
	return m.nheld;
}

/* ---- leasing --------------------------------------------------------------------- */

static void lease_done(int code, const char *msg, ProtobufCMessage *resp, void *arg)
{
	struct mbuild *b = arg;
	if (b->gone) {
		mb_unref(b);
		return;
	}
	const BKM(BuildResponse) *r = (const void *)resp;
	if (code != RPC_OK) {
		LOGW(MMOD, "build %" PRId64 ": Lease failed: %s", b->id, msg);
		mb_release(b, "lease call failed");
	} else if (r->error) {
		if (r->error->reason == BKE(ERROR_REASON__CANNOT_LEASE_BUILD))
			LOGD(MMOD, "build %" PRId64 ": leased by someone else", b->id);
		else
			LOGW(MMOD, "build %" PRId64 ": Lease: %s", b->id, r->error->message);
		mb_release(b, "not leased");
	} else if (!r->build || !r->build->lease_key) {
		LOGW(MMOD, "build %" PRId64 ": Lease answered without a lease key", b->id);
		mb_release(b, "no lease key");
	} else if (m.draining) {
		/* Leased as we stopped: hand it back at once. */
		b->lease_key = r->build->lease_key;
		mb_release(b, "master stopping");
	} else {
		b->lease_key = r->build->lease_key;
		LOGI(MMOD, "build %" PRId64 " (%s, builder %s): leased", b->id, b->bucket,
		     b->builder_name);
		const struct cfg_builder *bl = cfg_builder_find(m.cfg, b->builder_name);
		if (!bl) {
			/* The builder went away in a reload between Peek and Lease:
			 * leave the build for a master that has it. */
			mb_release(b, "builder no longer configured");
		} else {
			mstate_hold(b);
			mstate_changes(b, bl);
		}
	}
	mb_unref(b);
}

/* The builder_name of parameters_json, or NULL. */
static char *builder_of(const char *params)
{
	char e[128];
	struct json *j = json_parse(params, strlen(params), e, sizeof(e));
	if (!j)
		return NULL;
	const struct json *n = json_get(j, "builder_name");
	char *out = n && n->type == JSON_STRING ? xstrdup(n->str) : NULL;
	json_free(j);
	return out;
}

static void lease_one(const BKM(Build) * bb)
{
	if (held_find(bb->id))
		return;
	char *bname = builder_of(bb->parameters_json);
	if (!bname || !cfg_builder_find(m.cfg, bname)) {
		LOGD(MMOD, "build %" PRId64 ": builder %s is not ours", bb->id,
		     bname ? bname : "(none)");
		free(bname);
		return;
	}
	struct mbuild *b = xcalloc(1, sizeof(*b));
	b->refs = 1;
	b->id = bb->id;
	b->bucket = xstrdup(bb->bucket);
	b->params_json = xstrdup(bb->parameters_json);
	b->builder_name = bname;
	b->state = MB_LEASING;
	list_add_tail(&m.held, &b->link);
	m.nheld++;
	BKM(LeaseRequest) req = BKE(LEASE_REQUEST__INIT);
	req.id = b->id;
	req.lease_expiration_ts = now_us() + m.cfg->lease_duration_us;
	req.leasee = m.name;
	mb_ref(b);
	if (rc_unary_start(master_bk(), BK_PFX "Lease", &req.base,
			   &reactor__buckets__v1__build_response__descriptor, CALL_TIMEOUT,
			   lease_done, b) != 0) {
		mb_unref(b);
		mb_release(b, "no connection");
	}
}

static int free_slots(void)
{
	int n = m.cfg->max_lease_count - m.nheld;
	return n > 0 ? n : 0;
}

static void peek_page(const char *cursor);

static void peek_done(int code, const char *msg, ProtobufCMessage *resp, void *arg)
{
	(void)arg;
	if (code != RPC_OK) {
		LOGW(MMOD, "Peek failed: %s", msg);
		m.peeking = false;
		return;
	}
	const BKM(SearchResponse) *r = (const void *)resp;
	if (r->error) {
		LOGW(MMOD, "Peek: %s", r->error->message);
		m.peeking = false;
		return;
	}
	if (m.draining) {
		m.peeking = false;
		return;
	}
	for (size_t i = 0; i < r->n_builds && free_slots() > 0; i++)
		lease_one(r->builds[i]);
	if (free_slots() > 0 && r->next_cursor && *r->next_cursor) {
		peek_page(r->next_cursor);
		return;
	}
	m.peeking = false;
	if (m.repeek && free_slots() > 0)
		wake_soon();
}

static void peek_page(const char *cursor)
{
	BKM(PeekRequest) req = BKE(PEEK_REQUEST__INIT);
	req.buckets = m.cfg->buckets;
	req.n_buckets = (size_t)m.cfg->n_buckets;
	int want = 3 * free_slots();
	req.max_builds = want > 100 ? 100 : want;
	req.start_cursor = (char *)(cursor ? cursor : "");
	m.peeking = true;
	m.repeek = false;
	if (rc_unary_start(master_bk(), BK_PFX "Peek", &req.base,
			   &reactor__buckets__v1__search_response__descriptor, CALL_TIMEOUT,
			   peek_done, NULL) != 0) {
		LOGD(MMOD, "Peek: no connection to %s yet", m.bk_target);
		m.peeking = false;
	}
}

static void peek(void)
{
	if (!m.running || m.draining || free_slots() == 0 || mstate_resuming())
		return;
	if (m.peeking) {
		m.repeek = true;
		return;
	}
	peek_page(NULL);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	peek();
}

/* Peek on the next loop pass (several wake-ups in one pass make one Peek). */
static void wake_soon(void)
{
	m.repeek = true;
	if (m.wake_ev && !m.draining)
		event_active(m.wake_ev, EV_TIMEOUT, 0);
}

static void arm(struct event *ev, int64_t us)
{
	struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
	event_add(ev, &tv);
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	peek();
	arm(m.poll_ev, m.cfg->poll_interval_us);
}

/* ---- heartbeats -------------------------------------------------------------------- */

static void hb_done(int code, const char *msg, ProtobufCMessage *resp, void *arg)
{
	(void)arg;
	m.hb_inflight = false;
	if (code != RPC_OK) {
		/* The leases run on; the next beat may get through. */
		LOGW(MMOD, "HeartbeatBatch failed: %s", msg);
		return;
	}
	const BKM(HeartbeatBatchResponse) *r = (const void *)resp;
	if (r->error) {
		LOGW(MMOD, "HeartbeatBatch: %s", r->error->message);
		return;
	}
	for (size_t i = 0; i < r->n_results; i++) {
		const BKM(HeartbeatResult) *hr = r->results[i];
		if (!hr->error)
			continue;
		struct mbuild *b = held_find(hr->build_id);
		if (!b || b->state == MB_LEASING)
			continue;
		LOGW(MMOD, "build %" PRId64 ": lease lost (%s); stopping it", b->id,
		     hr->error->message);
		mb_release(b, "lease lost");
	}
}

static void heartbeat(void)
{
	if (m.hb_inflight || m.draining)
		return;
	int n = 0;
	struct list *pos;
	list_for_each (pos, &m.held)
		n++;
	if (n == 0)
		return;
	BKM(HeartbeatRequest) *hs = xcalloc((size_t)n, sizeof(*hs));
	BKM(HeartbeatRequest) **hp = xcalloc((size_t)n, sizeof(*hp));
	size_t k = 0;
	int64_t exp = now_us() + m.cfg->lease_duration_us;
	list_for_each (pos, &m.held) {
		struct mbuild *b = container_of(pos, struct mbuild, link);
		if (b->state == MB_LEASING || !b->lease_key)
			continue;
		reactor__buckets__v1__heartbeat_request__init(&hs[k]);
		hs[k].id = b->id;
		hs[k].lease_key = b->lease_key;
		hs[k].lease_expiration_ts = exp;
		hp[k] = &hs[k];
		k++;
	}
	if (k > 0) {
		BKM(HeartbeatBatchRequest) req = BKE(HEARTBEAT_BATCH_REQUEST__INIT);
		req.heartbeats = hp;
		req.n_heartbeats = k;
		if (rc_unary_start(master_bk(), BK_PFX "HeartbeatBatch", &req.base,
				   &reactor__buckets__v1__heartbeat_batch_response__descriptor,
				   CALL_TIMEOUT, hb_done, NULL) == 0)
			m.hb_inflight = true;
		else
			LOGW(MMOD, "HeartbeatBatch: no connection to %s", m.bk_target);
	}
	free(hs);
	free(hp);
}

static void hb_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	heartbeat();
	arm(m.hb_ev, m.cfg->heartbeat_interval_us);
}

/* ---- build events ------------------------------------------------------------------- */

static void watch_start(void);

static void watch_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	(void)arg;
	BKM(Build) *b = reactor__buckets__v1__build__unpack(NULL, len, msg);
	if (!b)
		return;
	if (!m.watch.live) {
		/* The stream is up: builds put while it was not are peeked now. */
		m.watch.live = true;
	}
	/* Put, retried, reset or expired: SCHEDULED without a lease.  A build
	 * completing elsewhere frees nothing of ours. */
	if (b->status == BKE(STATUS__SCHEDULED) && b->lease_expiration_ts == 0)
		wake_soon();
	reactor__buckets__v1__build__free_unpacked(b, NULL);
}

/* The stream's headers: the Buckets service sends them once its events
 * reach the stream.  A build put between our last peek and now woke
 * nobody: peek again. */
static void watch_live(struct rc_call *k, void *arg)
{
	(void)k;
	(void)arg;
	m.watch.live = true;
	wake_soon();
}

static void watch_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	(void)arg;
	m.watch.call = NULL;
	m.watch.live = false;
	if (m.draining || !m.running)
		return;
	LOGD(MMOD, "WatchBuilds ended (%d: %s); again in 1s", code, message);
	arm(m.watch.retry_ev, WATCH_RETRY_US);
}

static void watch_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	watch_start();
}

static void watch_start(void)
{
	if (m.draining)
		return;
	struct rc_client *c = master_bk();
	BKM(WatchBuildsRequest) req = BKE(WATCH_BUILDS_REQUEST__INIT);
	req.buckets = m.cfg->buckets;
	req.n_buckets = (size_t)m.cfg->n_buckets;
	struct rc_call *k =
		c ? rc_call_start(c, BK_PFX "WatchBuilds", 0, NULL, 0, watch_msg, watch_done, NULL)
		  : NULL;
	if (!k) {
		arm(m.watch.retry_ev, WATCH_RETRY_US);
		return;
	}
	size_t n = protobuf_c_message_get_packed_size(&req.base);
	uint8_t *buf = xmalloc(n ? n : 1);
	protobuf_c_message_pack(&req.base, buf);
	rc_call_on_headers(k, watch_live);
	rc_call_send(k, buf, n);
	free(buf);
	rc_call_close_send(k);
	m.watch.call = k;
	/* Whatever was put before the stream came up. */
	wake_soon();
}

/* ---- start, reload, stop ------------------------------------------------------------- */

int master_start(struct event_base *base, const struct cfg_master *mc, const char *self,
		 const char *self_target, char **err)
{
	assert(!m.running && mc);
	m.base = base;
	m.cfg = mc;
	if (mc->name) {
		m.name = xstrdup(mc->name);
	} else {
		char host[256] = "localhost";
		gethostname(host, sizeof(host) - 1);
		host[sizeof(host) - 1] = '\0';
		m.name = xasprintf("%s:%s", host, self ? self : ""); /* as cfg.c names it */
	}
	if (!self_target)
		self_target = self ? self : "";
	m.bk_target = xstrdup(mc->server ? mc->server : self_target);
	m.ex_target = xstrdup(mc->executor ? mc->executor : self_target);
	m.bk_self = !mc->server;
	m.ex_self = !mc->executor;
	bool no_end = !*m.bk_target || !*m.ex_target;
	if (no_end || check_clients(err) != 0) {
		if (no_end)
			*err = xstrdup(
				"master: no endpoint for the Buckets service or the executor");
		free(m.name);
		free(m.bk_target);
		free(m.ex_target);
		m.name = m.bk_target = m.ex_target = NULL;
		return -1;
	}
	m.poll_ev = evtimer_new(base, poll_cb, NULL);
	m.hb_ev = evtimer_new(base, hb_cb, NULL);
	m.wake_ev = event_new(base, -1, 0, wake_cb, NULL);
	m.watch.retry_ev = evtimer_new(base, watch_retry_cb, NULL);
	m.running = true;
	arm(m.poll_ev, mc->poll_interval_us);
	arm(m.hb_ev, mc->heartbeat_interval_us);
	watch_start();
	mstate_resume(base);
	LOGI(MMOD,
	     "master %s of %d bucket(s) (%d builder(s), up to %d lease(s)); buckets at %s, "
	     "executor at %s",
	     m.name, mc->n_buckets, mc->n_builders, mc->max_lease_count, m.bk_target, m.ex_target);
	return 0;
}

void master_configure(const struct cfg_master *mc)
{
	if (!m.running)
		return;
	if (!mc) {
		LOGW(MMOD, "reload: the master: section is gone; the master stops at the next "
			   "restart");
		return;
	}
	m.cfg = mc;
	arm(m.poll_ev, mc->poll_interval_us);
	arm(m.hb_ev, mc->heartbeat_interval_us);
	wake_soon();
}

static void drain_finish(void)
{
	if (m.bk)
		rc_client_close(m.bk);
	if (m.ex)
		rc_client_close(m.ex);
	if (m.drain_ev)
		event_del(m.drain_ev);
	void (*done)(void *) = m.drain_done;
	m.drain_done = NULL;
	if (done)
		done(m.drain_arg);
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (m.resets_pending)
		LOGW(MMOD, "%d Reset(s) unanswered at shutdown; their leases will expire",
		     m.resets_pending);
	drain_finish();
}

static void reset_done(int code, const char *msg, ProtobufCMessage *resp, void *arg)
{
	int64_t id = (int64_t)(intptr_t)arg;
	const BKM(BuildResponse) *r = (const void *)resp;
	if (code != RPC_OK)
		LOGW(MMOD, "build %" PRId64 ": Reset failed: %s", id, msg);
	else if (r->error)
		LOGW(MMOD, "build %" PRId64 ": Reset: %s", id, r->error->message);
	else
		LOGI(MMOD, "build %" PRId64 ": reset for another master", id);
	if (--m.resets_pending == 0 && m.drain_done)
		drain_finish();
}

void master_drain(void (*done)(void *arg), void *arg)
{
	m.drain_done = done;
	m.drain_arg = arg;
	if (!m.drain_ev)
		m.drain_ev = event_new(m.base, -1, 0, drain_cb, NULL);
	if (m.draining) {
		event_active(m.drain_ev, EV_TIMEOUT, 0);
		return;
	}
	/* Resets go out before draining: the connection is still ours. */
	struct rc_client *bk = master_bk();
	m.draining = true;
	event_del(m.poll_ev);
	event_del(m.hb_ev);
	event_del(m.wake_ev);
	event_del(m.watch.retry_ev);
	if (m.watch.call)
		rc_call_cancel(m.watch.call);
	int n = 0;
	while (!list_empty(&m.held)) {
		struct mbuild *b = container_of(list_first(&m.held), struct mbuild, link);
		bool reset = m.cfg->on_shutdown_reset && b->lease_key && b->state < MB_REPORTING;
		int64_t id = b->id;
		n++;
		b->keep_state = !reset; /* abandoned: a restart resumes it */
		mb_release(b, "master stopping");
		if (!reset)
			continue;
		BKM(ResetRequest) req = BKE(RESET_REQUEST__INIT);
		req.id = id;
		if (rc_unary_start(bk, BK_PFX "Reset", &req.base,
				   &reactor__buckets__v1__build_response__descriptor, CALL_TIMEOUT,
				   reset_done, (void *)(intptr_t)id) == 0)
			m.resets_pending++;
	}
	LOGI(MMOD, "stopping: %d build(s) %s", n,
	     m.cfg->on_shutdown_reset ? "reset" : "abandoned to their lease expiry");
	if (m.resets_pending)
		arm(m.drain_ev, DRAIN_MAX_US);
	else
		event_active(m.drain_ev, EV_TIMEOUT, 0);
}

void master_free(void)
{
	if (!m.base)
		return;
	m.draining = true;
	while (!list_empty(&m.held)) {
		struct mbuild *b = container_of(list_first(&m.held), struct mbuild, link);
		b->keep_state = true; /* for the next start */
		mb_release(b, "exit");
	}
	mstate_free();
	if (m.bk)
		rc_client_free(m.bk);
	if (m.ex)
		rc_client_free(m.ex);
	struct event *evs[] = {m.poll_ev, m.hb_ev, m.wake_ev, m.drain_ev, m.watch.retry_ev};
	for (size_t i = 0; i < ARRAY_LEN(evs); i++)
		if (evs[i])
			event_free(evs[i]);
	free(m.name);
	free(m.bk_target);
	free(m.ex_target);
	assert(m.nheld == 0);
	memset(&m, 0, sizeof(m));
	list_init(&m.held);
}

/* ---- for master_state.c ------------------------------------------------------------ */

void mb_adopt(struct mbuild *b)
{
	list_add_tail(&m.held, &b->link);
	m.nheld++;
}

void master_heartbeat_now(void)
{
	heartbeat();
}

void master_wake(void)
{
	wake_soon();
}

bool master_draining(void)
{
	return m.draining;
}
