/*
 * sched_bots.c - the Bots side of the scheduler (see sched.h): bot
 * sessions created and updated, leases assigned and returned, and the
 * queue sizes bots and Capabilities read.  Each call is a typed wrapper
 * around one Lua transition run through sched_run() (sched_int.h); the
 * replies are parsed here so services never see a redisReply.
 */
#include "domain/sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "core/err.h"
#include "core/log.h"
#include "domain/sched_int.h"
#include "google/devtools/remoteworkers/v1test2/bots.pb-c.h"
#include "state/keys.h"

#define MOD SCHED_MOD

/* ---- lease states ----------------------------------------------------------- */

static int lease_state_parse(const char *s)
{
	if (!strcmp(s, "PENDING"))
		return LEASE(PENDING);
	if (!strcmp(s, "ACTIVE"))
		return LEASE(ACTIVE);
	if (!strcmp(s, "COMPLETED"))
		return LEASE(COMPLETED);
	if (!strcmp(s, "CANCELLED"))
		return LEASE(CANCELLED);
	return LEASE(LEASE_STATE_UNSPECIFIED);
}

static const char *lease_state_str(int st)
{
	switch (st) {
	case LEASE(PENDING): return "PENDING";
	case LEASE(ACTIVE): return "ACTIVE";
	case LEASE(COMPLETED): return "COMPLETED";
	case LEASE(CANCELLED): return "CANCELLED";
	default: return "";
	}
}

/* ---- sessions and leases ------------------------------------------------------ */

static void bot_reply_common(redisReply *r, struct sched_req *q, int kind)
{
	sched_bot_cb cb = (sched_bot_cb)q->fn;
	struct sched_bot_result res = {0};
	const char *what = kind == S_BOT_CREATE	  ? "creating a bot session"
			   : kind == S_BOT_UPDATE ? "updating a bot session"
						  : "assigning work";
	res.rc = sched_reply_array_err(r, 1, what);
	if (res.rc != 0) {
		cb(q->arg, &res);
		sched_req_free(q);
		return;
	}
	const char *tag = sched_el_str(r, 0, NULL);
	if (kind != S_ASSIGN && r->elements == 1 && !strcmp(tag, "DENIED")) {
		res.rc = -EACCES;
	} else if (kind == S_BOT_CREATE) {
		res.closed = (char *)tag;
		if (r->elements >= 3 &&
		    sched_parse_action(sched_el_str(r, 2, NULL), &res.lease.action)) {
			res.lease.id = (char *)sched_el_str(r, 1, NULL);
			res.lease.state = LEASE(PENDING);
		}
	} else if (!strcmp(tag, "NOSESSION")) {
		res.rc = -ENOENT;
	} else if (!strcmp(tag, "BOTID")) {
		res.rc = -EPERM;
		res.stored_bot_id = (char *)sched_el_str(r, 1, NULL);
	} else if (kind == S_ASSIGN) {
		if (r->elements >= 3 &&
		    sched_parse_action(sched_el_str(r, 2, NULL), &res.lease.action)) {
			res.lease.id = (char *)sched_el_str(r, 1, NULL);
			res.lease.state = LEASE(PENDING);
		}
	} else if (r->elements >= 8) {
		const char *id = sched_el_str(r, 1, NULL);
		if (*id) {
			res.lease.id = (char *)id;
			res.lease.state = lease_state_parse(sched_el_str(r, 2, NULL));
			/* A cancelled lease may name a job already gone. */
			if (!sched_parse_action(sched_el_str(r, 3, NULL), &res.lease.action))
				res.lease.action = digest_empty;
		}
		const char *dj = sched_el_str(r, 4, NULL);
		if (*dj && sched_parse_action(sched_el_str(r, 5, NULL), &res.done_action)) {
			res.done_job = (char *)dj;
			res.done_do_not_cache = !strcmp(sched_el_str(r, 6, NULL), "1");
		}
		res.instance = (char *)sched_el_str(r, 7, NULL);
	} else {
		LOGE(MOD, "%s: unexpected reply from Redis (%zu elements)", what, r->elements);
		res.rc = ERR_STORE_REPLY;
	}
	cb(q->arg, &res);
	sched_req_free(q);
}

static void bot_create_reply(redisReply *r, void *arg)
{
	bot_reply_common(r, arg, S_BOT_CREATE);
}

static void bot_update_reply(redisReply *r, void *arg)
{
	bot_reply_common(r, arg, S_BOT_UPDATE);
}

static void assign_reply(redisReply *r, void *arg)
{
	bot_reply_common(r, arg, S_ASSIGN);
}

int sched_bot_create(const struct sched_bot_create_req *b, sched_bot_cb cb, void *arg)
{
	char now[24], exp[24], st[16];
	char *keys[] = {keys_bot(b->session), keys_botid(b->instance, b->bot_id),
			keys_bots(b->instance), keys_botprops(b->instance)};
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	snprintf(exp, sizeof exp, "%lld", (long long)b->expire_us);
	snprintf(st, sizeof st, "%d", b->status);
	const char *args[] = {b->session,
			      b->instance,
			      b->bot_id,
			      b->props,
			      now,
			      exp,
			      st,
			      b->assign ? "1" : "0",
			      b->owner ? b->owner : ""};
	int rc = sched_run(S_BOT_CREATE, bot_create_reply, sched_req_new((void (*)(void))cb, arg),
			   (const char *const *)keys, (int)ARRAY_LEN(keys), args, NULL,
			   (int)ARRAY_LEN(args));
	for (size_t i = 0; i < ARRAY_LEN(keys); i++)
		free(keys[i]);
	return rc;
}

int sched_bot_update(const struct sched_bot_update_req *b, sched_bot_cb cb, void *arg)
{
	char now[24], exp[24], st[16], code[16];
	char *sk = keys_bot(b->session);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	snprintf(exp, sizeof exp, "%lld", (long long)b->expire_us);
	snprintf(st, sizeof st, "%d", b->status);
	snprintf(code, sizeof code, "%d", b->code);
	const char *keys[] = {sk};
	const char *args[] = {b->session,
			      b->bot_id,
			      now,
			      exp,
			      st,
			      b->lease_id ? b->lease_id : "",
			      b->lease_id ? lease_state_str(b->lease_state) : "",
			      code,
			      b->message ? b->message : "",
			      b->result ? (const char *)b->result : "",
			      b->assign ? "1" : "0",
			      b->owner ? b->owner : ""};
	size_t lens[ARRAY_LEN(args)];
	for (size_t i = 0; i < ARRAY_LEN(args); i++)
		lens[i] = i == 9 ? (b->result ? b->result_len : 0) : strlen(args[i]);
	int rc = sched_run(S_BOT_UPDATE, bot_update_reply, sched_req_new((void (*)(void))cb, arg),
			   keys, 1, args, lens, (int)ARRAY_LEN(args));
	free(sk);
	return rc;
}

int sched_assign(const char *session, sched_bot_cb cb, void *arg)
{
	char now[24];
	char *sk = keys_bot(session);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	const char *keys[] = {sk};
	const char *args[] = {session, now};
	int rc = sched_run(S_ASSIGN, assign_reply, sched_req_new((void (*)(void))cb, arg), keys, 1,
			   args, NULL, 2);
	free(sk);
	return rc;
}

static void unassign_reply(redisReply *r, void *arg)
{
	(void)arg;
	(void)sched_reply_err(r, "returning an undelivered lease");
}

int sched_unassign(const char *session, const char *job)
{
	char now[24];
	char *sk = keys_bot(session), *jk = keys_job(job);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	const char *keys[] = {sk, jk};
	const char *args[] = {session, job, now};
	int rc = sched_run(S_UNASSIGN, unassign_reply, NULL, keys, 2, args, NULL, 3);
	free(sk);
	free(jk);
	return rc;
}

static void queued_reply(redisReply *r, void *arg)
{
	struct sched_req *q = arg;
	sched_queued_cb cb = (sched_queued_cb)q->fn;
	int rc = sched_reply_array_err(r, 0, "reading the queues");
	if (rc == 0 && r->elements % 2)
		rc = ERR_STORE_REPLY;
	if (rc != 0) {
		cb(q->arg, rc, NULL, NULL, 0);
	} else {
		size_t n = r->elements / 2;
		char **keys = xcalloc(n ? n : 1, sizeof(*keys));
		int64_t *counts = xcalloc(n ? n : 1, sizeof(*counts));
		for (size_t i = 0; i < n; i++) {
			keys[i] = (char *)sched_el_str(r, 2 * i, NULL);
			counts[i] = sched_el_int(r, 2 * i + 1);
		}
		cb(q->arg, 0, keys, counts, n);
		free(keys);
		free(counts);
	}
	sched_req_free(q);
}

int sched_queued(const char *const *instances, size_t n, sched_queued_cb cb, void *arg)
{
	char **keys = xcalloc(n ? n : 1, sizeof(*keys));
	for (size_t i = 0; i < n; i++)
		keys[i] = keys_platforms(instances[i]);
	int rc = sched_run(S_QUEUED, queued_reply, sched_req_new((void (*)(void))cb, arg),
			   (const char *const *)keys, (int)n, instances, NULL, (int)n);
	sched_free_strv(keys, n);
	return rc;
}
