/*
 * store.c - reactord's two hiredis async connections to Redis (commands,
 * and a subscriber for pub/sub) on the server's event_base.  It owns their
 * connect/handshake/reconnect state machine, the registered Lua scripts
 * and their SHA1s, the subscription table that is replayed after every
 * reconnect, the state observers, and (through redisproc) the embedded
 * redis-server.  Callers never block and never see a half-ready
 * connection: "up" means connected, authenticated, database selected and
 * every script loaded.
 *
 * hiredis 0.14 rules this file relies on: a context must not be freed from
 * its connect or disconnect callback (hiredis frees it right after), while
 * redisAsyncFree from a reply callback is deferred until that callback
 * returns; every pending reply callback is called with a NULL reply when a
 * context goes away, before the disconnect callback.  Each context's
 * `data` points at its struct conn while it is current and is cleared
 * when we abandon it, so late callbacks can tell they are stale.
 *
 * Bounds.  Every command in flight on the command connection sits on one
 * FIFO list with the time it was sent; a watchdog timer abandons the
 * connection when the oldest has waited longer than redis.command-timeout
 * (hiredis 0.14 has no async command timeout), which answers every caller
 * with a NULL reply and reconnects; the subscriber, idle by design, has no
 * timeout but is recycled with it (a server that stalls one stalls both)
 * and has TCP keepalive.  At redis.max-pending commands in flight, new
 * ones fail at once with ERR_STORE_BUSY instead of queueing without end.
 */
#include "state/store.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "core/cfg.h"
#include "core/err.h"
#include "core/metrics.h"
#include "core/list.h"
#include "core/log.h"
#include "state/redisproc.h"

#define MOD			   "store"
#define MAX_OBSERVERS		   16
#define MAX_SCRIPTS		   256
#define BACKOFF_MIN_US		   100000LL
#define DEFAULT_CONNECT_TIMEOUT_US 2000000LL
#define DEFAULT_RECONNECT_MAX_US   5000000LL
#define DEFAULT_COMMAND_TIMEOUT_US 5000000LL
#define DEFAULT_MAX_PENDING	   100000
#define BUSY_LOG_US		   10000000LL /* at most one "too many pending" per 10 s */

/* Handshake replies are tagged with what they answer; scripts use their
 * index (>= 0). */
enum { HS_AUTH = -1, HS_SELECT = -2, HS_PING = -3 };

enum conn_state {
	CS_IDLE,       /* not started, or stopped */
	CS_WAIT,       /* backoff timer armed before the next attempt */
	CS_CONNECTING, /* connect(2) in progress, deadline armed */
	CS_HANDSHAKE,  /* AUTH/SELECT/PING/SCRIPT LOAD in flight, deadline armed */
	CS_UP,
};

static const char *const conn_state_names[] = {"idle", "wait", "connecting", "handshake", "up"};

/* Legal transitions, as a bit mask of target states per source state.
 * Any state may go to IDLE (store_stop). */
static const unsigned conn_next[] = {
	[CS_IDLE] = 1u << CS_CONNECTING,
	[CS_WAIT] = 1u << CS_CONNECTING,
	[CS_CONNECTING] = 1u << CS_HANDSHAKE | 1u << CS_WAIT,
	[CS_HANDSHAKE] = 1u << CS_UP | 1u << CS_WAIT,
	[CS_UP] = 1u << CS_WAIT,
};

struct conn {
	const char *name; /* "command" or "subscriber", for logs */
	bool is_sub;
	enum conn_state state;
	redisAsyncContext *ac; /* NULL unless CONNECTING, HANDSHAKE or UP */
	struct event *timer;   /* backoff wait, or connect+handshake deadline */
	int64_t backoff_us;
	int pending;	   /* handshake replies still expected */
	unsigned failures; /* failed attempts since the last up (log throttle) */
	bool ever_up;
	char why[160]; /* reason for a failure found in a callback */
};

struct script {
	char *name, *lua;
	char sha[41]; /* from SCRIPT LOAD; "" until the first load */
};

struct sub {
	char *channel; /* or pattern */
	bool pattern;
	store_msg_cb cb;
	void *arg;
};

/* A command in flight.  EVALSHA keeps its formatted command so a NOSCRIPT
 * reply can be answered by reloading the script and sending it again. */
struct req {
	store_cb cb;
	void *arg;
	int script; /* -1 for plain commands */
	bool retried;
	char *cmd;
	int len;
	struct list link; /* on st.inflight while its reply is awaited */
	int64_t sent_us;
};

/* Scripts are registered once per process and outlive store_stop.
 * Observers and subscriptions belong to one start..stop run.  Stats:
 * `reconnects` counts connection attempts after the first, on either
 * connection, so it grows while Redis is unreachable or flapping. */
static struct script scripts[MAX_SCRIPTS];
static int n_scripts;

static struct {
	bool started;
	struct event_base *base;
	bool embedded;
	char *unix_path; /* unix socket, or NULL for TCP */
	char *host;
	int port;
	char *addr; /* for logs */
	char *password;
	int db;
	int64_t connect_timeout_us, reconnect_max_us;
	int64_t command_timeout_us;
	int max_pending;
	struct list inflight; /* struct req, oldest first */
	int n_inflight;
	struct event *watchdog; /* fires when the oldest in flight is due */
	int64_t busy_logged_us;
	bool policy_warned;
	char last_error[160]; /* why the command connection is or was last down */
	struct conn cmd, sub;
	struct {
		store_state_cb cb;
		void *arg;
	} obs[MAX_OBSERVERS];
	int n_obs;
	struct sub *subs;
	int n_subs;
	struct store_stats stats;
} st = {
	.inflight = LIST_INIT(st.inflight),
	.cmd = {.name = "command"},
	.sub = {.name = "subscriber", .is_sub = true},
};

static struct conn *const both[] = {&st.cmd, &st.sub};

static void conn_start(struct conn *c);

static void set_state(struct conn *c, enum conn_state to)
{
	assert(to == CS_IDLE || (conn_next[c->state] & (1u << to)));
	LOGD(MOD, "%s connection from %s to %s", c->name, conn_state_names[c->state],
	     conn_state_names[to]);
	c->state = to;
}

static void arm(struct conn *c, int64_t us)
{
	struct timeval tv = {us / 1000000, us % 1000000};
	evtimer_add(c->timer, &tv);
}

static void notify(bool up)
{
	/* Copy: an observer may register another or stop the store. */
	int n = st.n_obs;
	for (int i = 0; i < n && st.started; i++)
		st.obs[i].cb(up, st.obs[i].arg);
}

/* Forget the current context and free it.  Safe from the loop and from
 * the context's own reply callbacks (hiredis defers the free), never from
 * its connect/disconnect callbacks. */
static void drop_ctx(struct conn *c)
{
	redisAsyncContext *ac = c->ac;
	c->ac = NULL;
	if (ac) {
		ac->data = NULL;
		redisAsyncFree(ac);
	}
}

/* The current attempt failed or the connection was lost; the context is
 * already gone or forgotten.  Schedule the next attempt.  `loud` marks
 * failures that retrying will not fix (bad password, broken script). */
static void conn_failed(struct conn *c, const char *why, bool loud)
{
	char dbuf[32];
	bool was_up = c->state == CS_UP;
	if (!c->is_sub)
		snprintf(st.last_error, sizeof st.last_error, "%s", why);
	c->failures++;
	set_state(c, CS_WAIT);
	arm(c, c->backoff_us);
	fmt_duration(c->backoff_us, dbuf, sizeof dbuf);
	if (was_up)
		LOGW(MOD, "%s connection to %s lost: %s; reconnecting in %s", c->name, st.addr, why,
		     dbuf);
	else if (c->failures == 1)
		log_msg(loud ? LOG_ERROR : LOG_WARN, MOD,
			"cannot connect %s connection to %s: %s; retrying in %s", c->name, st.addr,
			why, dbuf);
	else
		LOGD(MOD,
		     "cannot connect %s connection to %s: %s (attempt %u); "
		     "retrying in %s",
		     c->name, st.addr, why, c->failures, dbuf);
	c->backoff_us =
		c->backoff_us * 2 > st.reconnect_max_us ? st.reconnect_max_us : c->backoff_us * 2;
	/* Last: an observer may stop the store. */
	if (was_up && !c->is_sub)
		notify(false);
}

/* Give up on the current attempt from a reply callback or the loop. */
static void conn_abandon(struct conn *c, const char *why, bool loud)
{
	char buf[sizeof c->why];
	snprintf(buf, sizeof buf, "%s", why);
	drop_ctx(c);
	conn_failed(c, buf, loud);
}

static void sub_reply(redisAsyncContext *ac, void *r, void *priv);

static int issue_subscribe(struct conn *c, const struct sub *s)
{
	return redisAsyncCommand(c->ac, sub_reply, NULL,
				 s->pattern ? "PSUBSCRIBE %s" : "SUBSCRIBE %s",
				 s->channel) == REDIS_OK
		       ? 0
		       : -1;
}

/* True when an earlier entry already subscribed this channel/pattern. */
static bool sub_dup(int i)
{
	for (int j = 0; j < i; j++)
		if (st.subs[j].pattern == st.subs[i].pattern &&
		    strcmp(st.subs[j].channel, st.subs[i].channel) == 0)
			return true;
	return false;
}

static void policy_reply(redisReply *r, void *arg);

static void conn_up(struct conn *c)
{
	evtimer_del(c->timer);
	set_state(c, CS_UP);
	if (c->failures > 0 || c->ever_up)
		LOGI(MOD, "%s connection to %s up after %u failed attempt%s", c->name, st.addr,
		     c->failures, c->failures == 1 ? "" : "s");
	else
		LOGI(MOD, "%s connection to %s up", c->name, st.addr);
	c->ever_up = true;
	c->failures = 0;
	c->backoff_us = BACKOFF_MIN_US;
	if (c->is_sub) {
		/* Pub/sub is lossy across the gap; the watch layer's sweep
		 * re-reads what its waiters wait for. */
		for (int i = 0; i < st.n_subs; i++) {
			if (sub_dup(i))
				continue;
			if (issue_subscribe(c, &st.subs[i]) < 0) {
				conn_abandon(c, "cannot queue SUBSCRIBE", false);
				return;
			}
		}
		return;
	}
	st.last_error[0] = '\0';
	/* An external server may evict our keys; ours never does.  CONFIG
	 * may be renamed or denied by ACL: then we cannot tell, and say
	 * nothing. */
	if (!st.embedded && !st.policy_warned &&
	    store_command(policy_reply, NULL, "CONFIG GET maxmemory-policy") != 0)
		LOGD(MOD, "cannot queue CONFIG GET maxmemory-policy");
	notify(true);
}

static void policy_reply(redisReply *r, void *arg)
{
	(void)arg;
	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[1]->type != REDIS_REPLY_STRING) {
		LOGD(MOD, "cannot read maxmemory-policy of %s: %s", st.addr,
		     r && r->type == REDIS_REPLY_ERROR ? r->str : "no usable reply");
		return;
	}
	const char *policy = r->element[1]->str;
	if (strcmp(policy, "noeviction") == 0 || st.policy_warned)
		return;
	st.policy_warned = true;
	LOGW(MOD,
	     "Redis at %s has maxmemory-policy %s: when it fills up it evicts keys, and "
	     "evicted keys corrupt reactord's queues, operations and builds; set "
	     "maxmemory-policy noeviction (reactord then answers RESOURCE_EXHAUSTED when "
	     "Redis is full)",
	     st.addr, policy);
}

static void hs_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct conn *c = ac->data;
	redisReply *reply = r;
	intptr_t what = (intptr_t)priv;
	/* Stale context, or going away (the disconnect callback decides). */
	if (!c || c->ac != ac || c->state != CS_HANDSHAKE || !reply)
		return;
	char why[sizeof c->why];
	const char *cmd = what == HS_AUTH     ? "AUTH (check redis.password)"
			  : what == HS_SELECT ? "SELECT"
			  : what == HS_PING   ? "PING"
					      : "SCRIPT LOAD";
	const char *name = what >= 0 ? scripts[what].name : "";
	if (reply->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof why, "%s%s%s failed: %s", cmd, *name ? " " : "", name,
			 reply->str);
		/* LOADING is routine after a restart; the rest is a config or
		 * script bug that retrying will not fix. */
		conn_abandon(c, why, strncmp(reply->str, "LOADING", 7) != 0);
		return;
	}
	if (what >= 0) {
		if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
			snprintf(why, sizeof why, "%s %s: unexpected reply", cmd, name);
			conn_abandon(c, why, true);
			return;
		}
		memcpy(scripts[what].sha, reply->str, 40);
		scripts[what].sha[40] = '\0';
	}
	if (--c->pending == 0)
		conn_up(c);
}

/* Pipeline the whole handshake; the last reply makes the connection up. */
static int handshake(struct conn *c)
{
	redisAsyncContext *ac = c->ac;
	c->pending = 0;
	if (st.password) {
		if (redisAsyncCommand(ac, hs_reply, (void *)(intptr_t)HS_AUTH, "AUTH %s",
				      st.password) != REDIS_OK)
			return -1;
		c->pending++;
	}
	/* Pub/sub channels are global; only the command side needs SELECT. */
	if (!c->is_sub && st.db != 0) {
		if (redisAsyncCommand(ac, hs_reply, (void *)(intptr_t)HS_SELECT, "SELECT %d",
				      st.db) != REDIS_OK)
			return -1;
		c->pending++;
	}
	/* PING fails with LOADING while the server loads its AOF, so nobody
	 * sees "up" before the data is there. */
	if (redisAsyncCommand(ac, hs_reply, (void *)(intptr_t)HS_PING, "PING") != REDIS_OK)
		return -1;
	c->pending++;
	for (int i = 0; !c->is_sub && i < n_scripts; i++) {
		if (redisAsyncCommand(ac, hs_reply, (void *)(intptr_t)i, "SCRIPT LOAD %s",
				      scripts[i].lua) != REDIS_OK)
			return -1;
		c->pending++;
	}
	return 0;
}

/* TCP keepalive finds a peer that vanished (host down, partition) on a
 * connection that sends nothing, which is the subscriber's normal state:
 * about 15 s idle, then 3 probes 5 s apart.  Best effort. */
static void keepalive(int fd, const struct conn *c)
{
	int on = 1, idle = 15, intvl = 5, cnt = 3;
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) < 0)
		LOGD(MOD, "%s connection: cannot set TCP keepalive: %s", c->name, strerror(errno));
}

static void on_connect(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	struct conn *c = ac->data;
	if (!c)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context when we return. */
		char why[sizeof c->why];
		snprintf(why, sizeof why, "%s", ac->errstr ? ac->errstr : "connect failed");
		ac->data = NULL;
		c->ac = NULL;
		conn_failed(c, why, false);
		return;
	}
	set_state(c, CS_HANDSHAKE);
	if (!st.unix_path)
		keepalive(ac->c.fd, c);
	if (handshake(c) < 0) {
		/* Cannot free here; let the deadline timer abandon it now. */
		snprintf(c->why, sizeof c->why, "cannot queue handshake");
		event_active(c->timer, EV_TIMEOUT, 1);
	}
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	struct conn *c = ac->data;
	(void)status;
	if (!c)
		return;
	char why[sizeof c->why];
	snprintf(why, sizeof why, "%s",
		 ac->err && ac->errstr ? ac->errstr : "closed by the server");
	ac->data = NULL;
	c->ac = NULL;
	conn_failed(c, why, false);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd, (void)what;
	switch (c->state) {
	case CS_WAIT:
		st.stats.reconnects++;
		conn_start(c);
		break;
	case CS_CONNECTING:
	case CS_HANDSHAKE: {
		char why[sizeof c->why], dbuf[32];
		if (c->why[0])
			snprintf(why, sizeof why, "%s", c->why);
		else
			snprintf(why, sizeof why, "%s timed out after %s",
				 c->state == CS_CONNECTING ? "connect" : "handshake",
				 fmt_duration(st.connect_timeout_us, dbuf, sizeof dbuf));
		conn_abandon(c, why, false);
		break;
	}
	default: break;
	}
}

static void conn_start(struct conn *c)
{
	set_state(c, CS_CONNECTING);
	c->why[0] = '\0';
	redisAsyncContext *ac = st.unix_path ? redisAsyncConnectUnix(st.unix_path)
					     : redisAsyncConnect(st.host, st.port);
	if (!ac || ac->err) {
		char why[sizeof c->why];
		snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		conn_failed(c, why, false);
		return;
	}
	ac->data = c;
	c->ac = ac;
	if (redisLibeventAttach(ac, st.base) != REDIS_OK) {
		conn_abandon(c, "cannot attach to the event loop", true);
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* hiredis 0.14 has no async connect timeout: this deadline covers
	 * connect and handshake both. */
	arm(c, st.connect_timeout_us);
}

static void req_unlink(struct req *q)
{
	if (list_linked(&q->link)) {
		list_del(&q->link);
		st.n_inflight--;
	}
}

static void watchdog_arm(int64_t us)
{
	struct timeval tv = {us / 1000000, us % 1000000};
	evtimer_add(st.watchdog, &tv);
}

/* Put q at the tail of the in-flight list, sent now. */
static void req_track(struct req *q)
{
	req_unlink(q);
	q->sent_us = mono_us();
	list_add_tail(&st.inflight, &q->link);
	st.n_inflight++;
	if (!evtimer_pending(st.watchdog, NULL))
		watchdog_arm(st.command_timeout_us);
}

static struct req *oldest(void)
{
	struct list *l = list_first(&st.inflight);
	return l ? container_of(l, struct req, link) : NULL;
}

/* The oldest command has waited its full time: first read whatever has
 * arrived (our own loop may have been the slow one), then, if it is still
 * unanswered, give up on the connection: every waiting caller gets its
 * NULL reply, the store reconnects, and the subscriber, which cannot
 * time out on its own, is recycled too. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	struct req *q = oldest();
	if (!q || st.cmd.state != CS_UP || !st.cmd.ac)
		return;
	int64_t now = mono_us();
	if (now - q->sent_us >= st.command_timeout_us) {
		redisAsyncHandleRead(st.cmd.ac);
		/* A reply callback may have stopped the store. */
		if (!st.started)
			return;
		q = oldest();
		now = mono_us();
	}
	if (!q || st.cmd.state != CS_UP || !st.cmd.ac)
		return;
	if (now - q->sent_us < st.command_timeout_us) {
		watchdog_arm(q->sent_us + st.command_timeout_us - now);
		return;
	}
	char dbuf[32];
	snprintf(st.last_error, sizeof st.last_error,
		 "Redis did not answer within %s, config redis.command-timeout",
		 fmt_duration(st.command_timeout_us, dbuf, sizeof dbuf));
	LOGW(MOD, "%d command%s waiting for Redis at %s, the oldest for %s", st.n_inflight,
	     st.n_inflight == 1 ? "" : "s", st.addr,
	     fmt_duration(now - q->sent_us, dbuf, sizeof dbuf));
	conn_abandon(&st.cmd, st.last_error, false);
	if (st.started && st.sub.state == CS_UP)
		conn_abandon(&st.sub, "the command connection timed out", false);
}

static void req_free(struct req *q)
{
	if (q->cmd)
		redisFreeCommand(q->cmd);
	free(q);
}

static bool is_noscript(const redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

static void cmd_reply(redisAsyncContext *ac, void *r, void *priv);

/* SCRIPT FLUSH or a server restart without its AOF lost our scripts:
 * reload, then resend the same EVALSHA on the same connection (pipelined,
 * so it runs after the load). */
static int retry_noscript(redisAsyncContext *ac, struct req *q)
{
	struct script *s = &scripts[q->script];
	if (ac->data != &st.cmd || st.cmd.state != CS_UP)
		return -1;
	LOGW(MOD, "script %s is gone from the server (NOSCRIPT); loading it again", s->name);
	if (redisAsyncCommand(ac, NULL, NULL, "SCRIPT LOAD %s", s->lua) != REDIS_OK)
		return -1;
	if (redisAsyncFormattedCommand(ac, cmd_reply, q, q->cmd, (size_t)q->len) != REDIS_OK)
		return -1;
	req_track(q);
	q->retried = true;
	st.stats.commands += 2;
	return 0;
}

static void cmd_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct req *q = priv;
	redisReply *reply = r;
	if (reply) {
		st.stats.replies++;
		metrics_redis_rtt(mono_us() - q->sent_us);
		if (q->script >= 0 && !q->retried && is_noscript(reply) &&
		    retry_noscript(ac, q) == 0)
			return;
	}
	req_unlink(q);
	if (q->cb)
		q->cb(reply, q->arg);
	req_free(q);
}

static struct req *req_new(store_cb cb, void *arg)
{
	struct req *q = xcalloc(1, sizeof *q);
	q->cb = cb;
	q->arg = arg;
	q->script = -1;
	list_init(&q->link);
	return q;
}

/* Fails while the context is disconnecting (we are inside its NULL reply
 * callbacks) or on a bad format: the caller's cb is then never called.
 * Both count as Redis being down for the caller. */
static int queued(struct req *q, int rc)
{
	if (rc != REDIS_OK) {
		req_free(q);
		return ERR_STORE_DOWN;
	}
	st.stats.commands++;
	req_track(q);
	return 0;
}

/* At the cap, fail new commands at once: queueing them would only grow
 * memory and latency for callers that time out anyway. */
static int busy(void)
{
	int64_t now = mono_us();
	if (st.busy_logged_us == 0 || now - st.busy_logged_us >= BUSY_LOG_US) {
		st.busy_logged_us = now;
		LOGW(MOD,
		     "%d commands wait for Redis at %s (limit %d, config redis.max-pending); "
		     "failing new ones",
		     st.n_inflight, st.addr, st.max_pending);
	}
	return ERR_STORE_BUSY;
}

bool store_up(void)
{
	return st.started && st.cmd.state == CS_UP && st.cmd.ac != NULL;
}

int store_command(store_cb cb, void *arg, const char *fmt, ...)
{
	if (!store_up())
		return ERR_STORE_DOWN;
	if (st.n_inflight >= st.max_pending)
		return busy();
	struct req *q = req_new(cb, arg);
	va_list ap;
	va_start(ap, fmt);
	int rc = redisvAsyncCommand(st.cmd.ac, cmd_reply, q, fmt, ap);
	va_end(ap);
	return queued(q, rc);
}

int store_commandargv(store_cb cb, void *arg, int argc, const char **argv, const size_t *argvlen)
{
	if (argc <= 0)
		return -EINVAL;
	if (!store_up())
		return ERR_STORE_DOWN;
	if (st.n_inflight >= st.max_pending)
		return busy();
	struct req *q = req_new(cb, arg);
	return queued(q, redisAsyncCommandArgv(st.cmd.ac, cmd_reply, q, argc, argv, argvlen));
}

int store_script_register(const char *name, const char *lua)
{
	for (int i = 0; i < n_scripts; i++)
		if (strcmp(scripts[i].name, name) == 0 && strcmp(scripts[i].lua, lua) == 0)
			return i;
	/* A script added after start would be missing until the next
	 * reconnect; the contract says register first. */
	if (st.started || n_scripts == MAX_SCRIPTS) {
		LOGE(MOD, "cannot register script %s: %s", name,
		     st.started ? "store already started" : "too many scripts");
		return st.started ? ERR_PRECONDITION : -ENOSPC;
	}
	scripts[n_scripts].name = xstrdup(name);
	scripts[n_scripts].lua = xstrdup(lua);
	scripts[n_scripts].sha[0] = '\0';
	return n_scripts++;
}

/* args holds nkeys keys followed by nargs arguments; lens may be NULL for
 * NUL-terminated strings. */
int store_evalsha(int script, store_cb cb, void *arg, int nkeys, int nargs, const char **args,
		  const size_t *lens)
{
	if (script < 0 || script >= n_scripts || nkeys < 0 || nargs < 0)
		return -EINVAL;
	if (!store_up())
		return ERR_STORE_DOWN;
	if (st.n_inflight >= st.max_pending)
		return busy();
	int argc = 3 + nkeys + nargs;
	const char **argv = xcalloc((size_t)argc, sizeof *argv);
	size_t *argvlen = xcalloc((size_t)argc, sizeof *argvlen);
	char nk[16];
	snprintf(nk, sizeof nk, "%d", nkeys);
	argv[0] = "EVALSHA";
	argv[1] = scripts[script].sha;
	argv[2] = nk;
	for (int i = 0; i < 3; i++)
		argvlen[i] = strlen(argv[i]);
	for (int i = 0; i < nkeys + nargs; i++) {
		argv[3 + i] = args[i];
		argvlen[3 + i] = lens ? lens[i] : strlen(args[i]);
	}
	struct req *q = req_new(cb, arg);
	q->script = script;
	q->len = redisFormatCommandArgv(&q->cmd, argc, argv, argvlen);
	free(argv);
	free(argvlen);
	return queued(q, q->len < 0 ? REDIS_ERR
				    : redisAsyncFormattedCommand(st.cmd.ac, cmd_reply, q, q->cmd,
								 (size_t)q->len));
}

static void sub_dispatch(bool pattern, const char *key, const char *channel, const redisReply *msg)
{
	if (msg->type != REDIS_REPLY_STRING)
		return;
	/* By index: a callback may subscribe more (realloc) or stop us. */
	for (int i = 0; i < st.n_subs && st.started; i++) {
		struct sub *s = &st.subs[i];
		if (s->pattern == pattern && strcmp(s->channel, key) == 0)
			s->cb(channel, msg->str, msg->len, s->arg);
	}
}

static void sub_reply(redisAsyncContext *ac, void *r, void *priv)
{
	redisReply *reply = r;
	(void)priv;
	if (!reply || ac->data != &st.sub || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements < 3)
		return;
	redisReply **e = reply->element;
	if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING)
		return;
	/* sub_dispatch checks the message element's type. */
	if (strcmp(e[0]->str, "message") == 0 && reply->elements == 3)
		sub_dispatch(false, e[1]->str, e[1]->str, e[2]);
	else if (strcmp(e[0]->str, "pmessage") == 0 && reply->elements == 4 &&
		 e[2]->type == REDIS_REPLY_STRING)
		sub_dispatch(true, e[1]->str, e[2]->str, e[3]);
	else
		LOGD(MOD, "%s %s", e[0]->str, e[1]->str);
}

void store_subscribe(const char *channel, store_msg_cb cb, void *arg)
{
	st.subs = xrealloc(st.subs, (size_t)(st.n_subs + 1) * sizeof *st.subs);
	struct sub *s = &st.subs[st.n_subs++];
	s->channel = xstrdup(channel);
	s->pattern = strchr(channel, '*') != NULL;
	s->cb = cb;
	s->arg = arg;
	/* Otherwise conn_up issues it once the subscriber is connected. */
	if (st.started && st.sub.state == CS_UP && !sub_dup(st.n_subs - 1) &&
	    issue_subscribe(&st.sub, s) < 0)
		LOGW(MOD, "cannot queue SUBSCRIBE %s now; will retry on reconnect", channel);
}

void store_on_state(store_state_cb cb, void *arg)
{
	assert(st.n_obs < MAX_OBSERVERS);
	st.obs[st.n_obs].cb = cb;
	st.obs[st.n_obs].arg = arg;
	st.n_obs++;
}

/* Redis refuses writes past maxmemory with "OOM command not allowed ...";
 * a script's redis.call passes that on, as the whole error from Redis 7
 * and wrapped in "ERR Error running script ... -OOM ..." before. */
static bool is_oom(const redisReply *r)
{
	return r->str && (strncmp(r->str, "OOM", 3) == 0 || strstr(r->str, "-OOM ") ||
			  strstr(r->str, "OOM command not allowed"));
}

int store_reply_rc(const struct redisReply *r)
{
	if (!r)
		return ERR_STORE_FAILED;
	if (r->type != REDIS_REPLY_ERROR)
		return 0;
	return is_oom(r) ? ERR_STORE_FULL : ERR_STORE_REPLY;
}

const char *store_last_error(void)
{
	return st.started && st.last_error[0] ? st.last_error : NULL;
}

const char *store_embedded_socket(void)
{
	return st.embedded ? redisproc_socket() : NULL;
}

void store_get_stats(struct store_stats *s)
{
	*s = st.stats;
	s->embedded_restarts = redisproc_restarts();
}

/* "unix:/p", "/p" or "dir/p" is a unix socket; otherwise "host:port",
 * "[v6]:port" or "host" (port 6379). */
static int parse_address(const char *a, char **err)
{
	if (strncmp(a, "unix:", 5) == 0 || strchr(a, '/')) {
		st.unix_path = xstrdup(strncmp(a, "unix:", 5) == 0 ? a + 5 : a);
		st.addr = xasprintf("unix:%s", st.unix_path);
		if (st.unix_path[0])
			return 0;
		goto bad;
	}
	const char *colon = NULL, *host = a;
	size_t hlen = strlen(a);
	if (a[0] == '[') {
		const char *rb = strchr(a, ']');
		if (!rb || (rb[1] != '\0' && rb[1] != ':'))
			goto bad;
		host = a + 1;
		hlen = (size_t)(rb - a - 1);
		colon = rb[1] == ':' ? rb + 1 : NULL;
	} else if ((colon = strrchr(a, ':')) != NULL) {
		hlen = (size_t)(colon - a);
	}
	st.port = 6379;
	if (colon) {
		char *end;
		long p = strtol(colon + 1, &end, 10);
		if (*end || end == colon + 1 || p < 1 || p > 65535)
			goto bad;
		st.port = (int)p;
	}
	if (hlen == 0)
		goto bad;
	st.host = xstrndup(host, hlen);
	st.addr = xasprintf("%s:%d", st.host, st.port);
	return 0;
bad:
	*err = xasprintf("redis address \"%s\" is not host:port, [v6addr]:port, "
			 "unix:/path or /path",
			 a);
	return -1;
}

static void free_config(void)
{
	free(st.unix_path);
	free(st.host);
	free(st.addr);
	free(st.password);
	st.unix_path = st.host = st.addr = st.password = NULL;
}

int store_start(struct event_base *base, const struct cfg *cfg, char **err)
{
	if (st.started) {
		*err = xstrdup("store already started");
		return -1;
	}
	memset(&st.stats, 0, sizeof st.stats);
	st.base = base;
	st.embedded = cfg->redis_embedded;
	st.password =
		cfg->redis_password && *cfg->redis_password ? xstrdup(cfg->redis_password) : NULL;
	st.db = cfg->redis_db;
	st.connect_timeout_us = cfg->redis_connect_timeout_us > 0 ? cfg->redis_connect_timeout_us
								  : DEFAULT_CONNECT_TIMEOUT_US;
	st.reconnect_max_us = cfg->redis_reconnect_max_us > 0 ? cfg->redis_reconnect_max_us
							      : DEFAULT_RECONNECT_MAX_US;
	if (st.reconnect_max_us < BACKOFF_MIN_US)
		st.reconnect_max_us = BACKOFF_MIN_US;
	st.command_timeout_us = cfg->redis_command_timeout_us > 0 ? cfg->redis_command_timeout_us
								  : DEFAULT_COMMAND_TIMEOUT_US;
	st.max_pending = cfg->redis_max_pending > 0 ? cfg->redis_max_pending : DEFAULT_MAX_PENDING;
	st.busy_logged_us = 0;
	st.policy_warned = false;
	st.last_error[0] = '\0';
	if (st.embedded) {
		if (redisproc_start(base, cfg, err) < 0) {
			free_config();
			return -1;
		}
		st.unix_path = xstrdup(redisproc_socket());
		st.addr = xasprintf("unix:%s", st.unix_path);
	} else if (!cfg->redis_address || parse_address(cfg->redis_address, err) < 0) {
		if (!cfg->redis_address)
			*err = xstrdup("redis: no address given and embedded is off");
		free_config();
		return -1;
	}
	st.started = true;
	st.watchdog = evtimer_new(base, on_watchdog, NULL);
	if (!st.watchdog)
		abort();
	for (size_t i = 0; i < ARRAY_LEN(both); i++) {
		struct conn *c = both[i];
		c->backoff_us = BACKOFF_MIN_US;
		c->failures = 0;
		c->ever_up = false;
		c->timer = evtimer_new(base, on_timer, c);
		if (!c->timer)
			abort();
		conn_start(c);
	}
	return 0;
}

void store_stop(void)
{
	if (!st.started)
		return;
	/* First, so callbacks run by the frees below see the store down and
	 * cannot queue more commands. */
	st.started = false;
	for (size_t i = 0; i < ARRAY_LEN(both); i++) {
		struct conn *c = both[i];
		set_state(c, CS_IDLE);
		drop_ctx(c);
		event_free(c->timer);
		c->timer = NULL;
	}
	/* Commands still in flight get their NULL replies now, or right after
	 * the reply callback we may be in returns (hiredis defers that free);
	 * they leave st.inflight then. */
	event_free(st.watchdog);
	st.watchdog = NULL;
	if (st.embedded)
		redisproc_stop();
	for (int i = 0; i < st.n_subs; i++)
		free(st.subs[i].channel);
	free(st.subs);
	st.subs = NULL;
	st.n_subs = 0;
	st.n_obs = 0;
	free_config();
	assert(!st.cmd.ac && !st.sub.ac && !st.cmd.timer && !st.sub.timer);
}
