/*
 * buckets_watch.c - build-bucket events, watchers and sweeps (see
 * buckets_watch.h).  Owns the watcher list, the cache of builds being
 * fetched for watchers (a core/map.h keyed by build id, its entries also on
 * a list for the idle sweep), the subscriber probe and the two sweep timers.
 */
#include "domain/buckets_watch.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/map.h"
#include "state/buckets_keys.h"
#include "state/store.h"

#define MOD	      "buckets"
#define SWEEP_LIMIT   1000
#define FETCH_IDLE_US (60LL * 1000000)

/* One build being fetched for watchers, or fetched lately: events whose
 * updated_ts is not newer than what was sent are dropped, so a state is
 * sent once however many events announced it. */
struct fent {
	struct map_node node; /* in bw.fetch by id */
	struct list link;     /* on bw.fents */
	int64_t id;
	int64_t sent_ts; /* updated_ts of the last state sent */
	int64_t want_ts; /* newest updated_ts announced */
	bool inflight;
	int64_t used_mono;
};

static struct {
	struct event *expire_ev, *timeout_ev;
	int64_t expire_us, timeout_check_us;
	bool expiring, timing_out;
	bool sub_live; /* the subscriber answered our probe */
	bool was_down; /* the command connection has been lost since start */
	bool shut;
	struct list watchers;
	size_t nwatchers;
	struct map fetch;
	struct list fents;
} bw = {.watchers = LIST_INIT(bw.watchers), .fents = LIST_INIT(bw.fents)};

/* ---- watchers ------------------------------------------------------------------ */

static bool watcher_wants(const struct bk_watcher *w, int64_t id, const char *bucket)
{
	for (size_t i = 0; i < w->nids; i++)
		if (w->ids[i] == id)
			return true;
	for (size_t i = 0; bucket && i < w->nb; i++)
		if (strcmp(w->buckets[i], bucket) == 0)
			return true;
	return false;
}

static void probe(void)
{
	char *ch = bkeys_probe();
	if (store_command(NULL, NULL, "PUBLISH %s %d", ch, (int)getpid()) < 0)
		LOGD(MOD, "cannot probe the event subscription now: Redis is down");
	free(ch);
}

bool bk_watch_add(struct bk_watcher *w)
{
	list_add_head(&bw.watchers, &w->link);
	bw.nwatchers++;
	w->live = bw.sub_live;
	if (!w->live)
		probe();
	return w->live;
}

void bk_watch_remove(struct bk_watcher *w)
{
	if (!list_linked(&w->link))
		return;
	list_del(&w->link);
	bw.nwatchers--;
}

struct bk_watcher *bk_watch_any(void)
{
	struct list *n = list_first(&bw.watchers);
	return n ? container_of(n, struct bk_watcher, link) : NULL;
}

static void go_live(void)
{
	struct list *n, *tmp;
	list_for_each_safe(n, tmp, &bw.watchers)
	{
		struct bk_watcher *w = container_of(n, struct bk_watcher, link);
		if (!w->live) {
			w->live = true;
			w->on_live(w);
		}
	}
}

/* ---- fetching builds for watchers --------------------------------------------- */

static bool fent_eq(const struct map_node *n, const void *key)
{
	return container_of(n, struct fent, node)->id == *(const int64_t *)key;
}

static struct fent *fent_find(int64_t id)
{
	struct map_node *n = map_find(&bw.fetch, map_hash_u64((uint64_t)id), fent_eq, &id);
	return n ? container_of(n, struct fent, node) : NULL;
}

static void fent_free(struct fent *e)
{
	map_remove(&bw.fetch, &e->node);
	list_del(&e->link);
	free(e);
}

static void fetch_reply(redisReply *r, void *arg);

static void fetch(struct fent *e)
{
	int64_t *arg = xmalloc(sizeof *arg);
	*arg = e->id;
	char *key = bkeys_build(e->id);
	int rc = store_command(fetch_reply, arg, "HGETALL %s", key);
	free(key);
	if (rc < 0) {
		free(arg);
		return; /* Redis down: the refetch on reconnect covers it */
	}
	e->inflight = true;
}

static void want(int64_t id, int64_t ts, bool force)
{
	struct fent *e = fent_find(id);
	if (!e) {
		e = xcalloc(1, sizeof *e);
		e->id = id;
		map_insert(&bw.fetch, &e->node, map_hash_u64((uint64_t)id));
		list_add_tail(&bw.fents, &e->link);
	}
	e->used_mono = mono_us();
	if (!force && ts <= e->sent_ts)
		return;
	if (ts > e->want_ts)
		e->want_ts = ts;
	if (force)
		e->want_ts = INT64_MAX;
	if (!e->inflight)
		fetch(e);
}

static void deliver(const BkBuild *b)
{
	struct list *n, *tmp;
	list_for_each_safe(n, tmp, &bw.watchers)
	{
		struct bk_watcher *w = container_of(n, struct bk_watcher, link);
		if (w->live && watcher_wants(w, b->id, b->bucket))
			w->on_build(w, b);
	}
}

/* The reply carries the build id, not the entry: the entry may be gone
 * (shutdown) when the reply comes. */
static void fetch_reply(redisReply *r, void *arg)
{
	int64_t id = *(int64_t *)arg;
	free(arg);
	struct fent *e = fent_find(id);
	if (!e || bw.shut)
		return;
	e->inflight = false;
	BkBuild *b = r && r->type == REDIS_REPLY_ARRAY ? bk_build_from_hash(id, r) : NULL;
	if (!b) {
		e->want_ts = 0;
		return;
	}
	if (b->updated_ts > e->sent_ts) {
		e->sent_ts = b->updated_ts;
		b->utcnow_ts = now_us();
		deliver(b);
	}
	/* An event newer than what we read arrived meanwhile. */
	if (e->want_ts > e->sent_ts && e->want_ts != INT64_MAX)
		fetch(e);
	else
		e->want_ts = e->sent_ts;
	bk_build_free(b);
}

/* Drop entries nobody asked about lately (all of them: at shutdown). */
static void fetch_gc(bool all)
{
	int64_t old = mono_us() - FETCH_IDLE_US;
	struct list *n, *tmp;
	list_for_each_safe(n, tmp, &bw.fents)
	{
		struct fent *e = container_of(n, struct fent, link);
		if (all || (!e->inflight && e->used_mono < old))
			fent_free(e);
	}
}

/* ---- events ---------------------------------------------------------------------- */

static void on_event(const char *channel, const char *msg, size_t len, void *arg)
{
	(void)arg;
	if (list_empty(&bw.watchers))
		return;
	struct json *j = json_parse(msg, len, NULL, 0);
	const struct json *id = json_get(j, "build_id"), *bucket = json_get(j, "bucket"),
			  *upd = json_get(j, "updated_ts");
	if (id && id->type == JSON_STRING && bucket && bucket->type == JSON_STRING && upd &&
	    upd->is_int) {
		int64_t bid = strtoll(id->str, NULL, 10);
		struct list *n;
		list_for_each(n, &bw.watchers)
		{
			struct bk_watcher *w = container_of(n, struct bk_watcher, link);
			if (w->live && watcher_wants(w, bid, bucket->str)) {
				want(bid, upd->i, false);
				break;
			}
		}
	} else {
		LOGW(MOD, "ignoring malformed event on %s: %.*s", channel,
		     (int)(len > 200 ? 200 : len), msg);
	}
	json_free(j);
}

static void on_probe(const char *channel, const char *msg, size_t len, void *arg)
{
	(void)channel, (void)msg, (void)len, (void)arg;
	if (!bw.sub_live)
		LOGD(MOD, "event subscription is live");
	bw.sub_live = true;
	go_live();
}

/* ---- sweeps ------------------------------------------------------------------------ */

static void expire_done(int err, long n, void *arg);
static void timeout_done(int err, long n, void *arg);

static void expire_run(void)
{
	bw.expiring = bk_expire_pass(SWEEP_LIMIT, expire_done, NULL) == 0;
}

static void expire_done(int err, long n, void *arg)
{
	(void)arg;
	bw.expiring = false;
	if (err < 0)
		LOGW(MOD, "lease expiry pass failed: %s", err_name(err));
	else if (n > 0)
		LOGD(MOD, "lease expiry pass looked at %ld lease(s)", n);
	if (n == SWEEP_LIMIT && !bw.shut)
		expire_run();
}

static void timeout_run(void)
{
	bw.timing_out = bk_timeout_pass(SWEEP_LIMIT, timeout_done, NULL) == 0;
}

static void timeout_done(int err, long n, void *arg)
{
	(void)arg;
	bw.timing_out = false;
	if (err < 0)
		LOGW(MOD, "build timeout pass failed: %s", err_name(err));
	else if (n > 0)
		LOGI(MOD, "build timeout pass looked at %ld build(s)", n);
	if (n == SWEEP_LIMIT && !bw.shut)
		timeout_run();
}

static void on_expire_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	if (!bw.expiring && store_up())
		expire_run();
	fetch_gc(false);
	/* Lossy pub/sub: keep probing until the subscriber answers. */
	if (!bw.sub_live && store_up())
		probe();
}

static void on_timeout_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	if (!bw.timing_out && store_up())
		timeout_run();
}

static void on_store_state(bool up, void *arg)
{
	(void)arg;
	if (!up) {
		bw.was_down = true;
		bw.sub_live = false;
		return;
	}
	probe();
	if (!bw.was_down)
		return;
	/* Events may have been lost while we were away: re-read the builds
	 * watched by id (bucket watchers only see changes from now on). */
	struct list *n;
	list_for_each(n, &bw.watchers)
	{
		struct bk_watcher *w = container_of(n, struct bk_watcher, link);
		for (size_t i = 0; i < w->nids; i++)
			want(w->ids[i], 0, true);
	}
	if (!bw.expiring)
		expire_run();
}

/* ---- life cycle ---------------------------------------------------------------------- */

static void arm(struct event *ev, int64_t us)
{
	struct timeval tv = {us / 1000000, us % 1000000};
	if (us > 0)
		evtimer_add(ev, &tv);
	else
		evtimer_del(ev);
}

void bk_watch_configure(int64_t expire_us, int64_t timeout_check_us)
{
	bw.expire_us = expire_us;
	bw.timeout_check_us = timeout_check_us;
	if (bw.expire_ev)
		arm(bw.expire_ev, bw.expire_us);
	if (bw.timeout_ev)
		arm(bw.timeout_ev, bw.timeout_check_us);
}

void bk_watch_init(struct event_base *base)
{
	bw.shut = false;
	bw.sub_live = bw.was_down = false;
	map_init(&bw.fetch);
	/* Pattern first: the probe's answer then proves both are live. */
	char *pat = bkeys_events_pattern(), *pr = bkeys_probe();
	store_subscribe(pat, on_event, NULL);
	store_subscribe(pr, on_probe, NULL);
	free(pat);
	free(pr);
	store_on_state(on_store_state, NULL);
	bw.expire_ev = event_new(base, -1, EV_PERSIST, on_expire_timer, NULL);
	bw.timeout_ev = event_new(base, -1, EV_PERSIST, on_timeout_timer, NULL);
	if (!bw.expire_ev || !bw.timeout_ev)
		abort();
	bk_watch_configure(bw.expire_us, bw.timeout_check_us);
}

void bk_watch_shutdown(void)
{
	bw.shut = true;
	assert(list_empty(&bw.watchers) && bw.nwatchers == 0);
	if (bw.expire_ev) {
		event_free(bw.expire_ev);
		bw.expire_ev = NULL;
	}
	if (bw.timeout_ev) {
		event_free(bw.timeout_ev);
		bw.timeout_ev = NULL;
	}
	fetch_gc(true);
	assert(map_count(&bw.fetch) == 0 && list_empty(&bw.fents));
	map_destroy(&bw.fetch);
}
