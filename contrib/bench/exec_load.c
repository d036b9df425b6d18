/*
 * exec_load.c - load generator for contrib/bench/exec.sh: Execute ->
 * COMPLETED of trivial actions against reactord's scheduler, with fake
 * bots in the same process that complete every lease at once.  Everything
 * runs on one libevent loop through the project's own gRPC client, so the
 * generator costs a fraction of what reactord does and the figures are
 * reactord's, not the clients'.
 *
 *   exec_load [-m skip|miss|nocache] [-C CONNS] [-p PID] [-r PID] [-t TAG]
 *             TARGET CLIENTS BOTS ACTIONS
 *   exec_load -I -p PID [-C CONNS] TARGET ACTIONS      (idle streams)
 *
 * First ACTIONS distinct Actions (Command arguments differ, so neither the
 * action cache nor in-flight deduplication merges them; empty input root)
 * are uploaded with BatchUpdateBlobs.  Then BOTS bot sessions open
 * (CreateBotSession) and long-poll with UpdateBotSession; a bot given a
 * PENDING lease reports it COMPLETED in its very next UpdateBotSession
 * (the server accepts PENDING -> COMPLETED; the same call hands it the
 * next queued job).  Then CLIENTS Execute loops each run one action at a
 * time until all ACTIONS have completed.  Latency is Execute sent -> the
 * stream's end after the done Operation; each final Operation must carry
 * an ExecuteResponse with status OK, exit code 0 and one of our bots as
 * worker, and the bots must have completed exactly ACTIONS leases, or the
 * run fails.
 *
 *   -m skip     skip_cache_lookup on every Execute (default)
 *   -m miss     plain Execute: action-cache lookup (a miss), result stored
 *   -m nocache  Action.do_not_cache: no lookup, no dedup, nothing stored
 *   -C CONNS    Execute connections, clients spread over them (default:
 *               one per client); each bot always has its own connection
 *   -p PID      reactord: report its CPU time (utime+stime) over the run
 *   -r PID      redis-server: the same
 *   -t TAG      distinguishes this run's actions (default: pid and time)
 *   -I          memory per idle stream: no bots; ACTIONS Execute streams
 *               (over CONNS connections, default 1) stay open until each
 *               has had its QUEUED Operation; reports reactord's VmRSS
 *               growth per stream, then cancels them (the jobs stay queued)
 *
 * Prints one line of name=value pairs (times in ms, CPU in seconds).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/client.h"
#include "core/digest.h"
#include "google/devtools/remoteworkers/v1test2/bots.pb-c.h"
#include "google/longrunning/operations.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "rpc/grpc.h"
#include "core/log.h"
#include "proto/pb.h"
#include "services/reapi.h"
#include "core/util.h"

#define EXEC_PATH	  "/build.bazel.remote.execution.v2.Execution/Execute"
#define CAS_UPDATE	  "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs"
#define BOTS_PFX	  "/google.devtools.remoteworkers.v1test2.Bots/"
#define URL_RESULT	  "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult"
#define URL_EXEC_RESPONSE "/build.bazel.remote.execution.v2.ExecuteResponse"
#define BOT_PREFIX	  "bench-"
/* A bot's UpdateBotSession deadline: the server answers an idle poll
 * 5s before it, so 30s long-polls 25s. */
#define BOT_TIMEOUT_US	30000000LL
#define EXEC_TIMEOUT_US 120000000LL
#define UPLOAD_BATCH	1000
/* Bots are long-polling before the first Execute goes out. */
#define SETTLE_US 200000

struct bot {
	struct rc_client *cl;
	char id[64];
	char *session;	      /* the server's name for our session */
	char *lease;	      /* a lease to report COMPLETED next, or NULL */
	struct rc_call *call; /* the call in flight, NULL between calls */
	uint8_t *resp;
	size_t resp_len;
	long completed;
};

struct client {
	struct rc_client *cl;
	size_t action;
	int64_t t0;
	uint8_t *last; /* the last Operation received, packed */
	size_t last_len;
};

static struct {
	struct event_base *base;
	enum { MODE_SKIP, MODE_MISS, MODE_NOCACHE } mode;
	size_t nactions, next;
	struct digest *actions;
	struct bot *bots;
	int nbots, created;
	struct client *clients;
	int nclients, active;
	struct rc_client **conns;
	int nconns;
	int64_t *lat;
	size_t nlat;
	long errors, cancelled;
	bool stopping;
	int64_t t0, t1;
	int reactord, redis;
	long cpu0[2], cpu1[2];
	struct rusage ru0, ru1;
	bool idle;
	size_t queued;
	long rss0, rss1;
} g;

static void fail(const char *what, int code, const char *msg)
{
	fprintf(stderr, "exec_load: %s: %s%s%s\n", what, grpc_code_name(code), msg ? ": " : "",
		msg ? msg : "");
	exit(1);
}

/* utime + stime of a process in clock ticks, -1 when unreadable. */
static long cpu_ticks(int pid)
{
	if (pid <= 0)
		return -1;
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces: count fields after its ')'. */
	char *p = strrchr(buf, ')');
	unsigned long ut, st;
	if (!p ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (long)(ut + st);
}

/* VmRSS of a process in KiB, -1 when unreadable. */
static long rss_kib(int pid)
{
	char path[64], line[256];
	long kib = -1;
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void keep_msg(uint8_t **buf, size_t *blen, const uint8_t *msg, size_t len)
{
	free(*buf);
	*buf = xmalloc(len ? len : 1);
	memcpy(*buf, msg, len);
	*blen = len;
}

static struct rc_call *call(struct rc_client *cl, const char *path, int64_t timeout_us,
			    const ProtobufCMessage *m, rc_msg_cb on_msg, rc_done_cb on_done,
			    void *arg)
{
	struct rc_call *k = rc_call_start(cl, path, timeout_us, NULL, 0, on_msg, on_done, arg);
	if (!k)
		fail(path, GRPC_UNAVAILABLE, "connection is closed");
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = xmalloc(n ? n : 1);
	protobuf_c_message_pack(m, buf);
	rc_call_send(k, buf, n);
	free(buf);
	rc_call_close_send(k);
	return k;
}

/* ---- uploads --------------------------------------------------------------- */

static void pack_alloc(const ProtobufCMessage *m, uint8_t **out, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	*out = xmalloc(*len ? *len : 1);
	protobuf_c_message_pack(m, *out);
}

/* Build ACTIONS distinct Actions and put them (and their Commands) in CAS. */
static void upload(struct rc_client *cl, const char *tag)
{
	g.actions = xcalloc(g.nactions, sizeof *g.actions);
	size_t cap = 2 * UPLOAD_BATCH, n = 0;
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request
		*rq = xcalloc(cap, sizeof *rq),
		**rqp = xcalloc(cap, sizeof *rqp);
	PbDigest *pd = xcalloc(cap, sizeof *pd);
	struct digest *dd = xcalloc(cap, sizeof *dd);
	for (size_t i = 0; i < g.nactions; i++) {
		char num[24];
		snprintf(num, sizeof num, "%zu", i);
		char *args[] = {"true", "exec_load", (char *)tag, num};
		Build__Bazel__Remote__Execution__V2__Command cmd = REV2(COMMAND__INIT);
		cmd.n_arguments = 4;
		cmd.arguments = args;
		uint8_t *cbuf, *abuf;
		size_t clen, alen;
		pack_alloc(&cmd.base, &cbuf, &clen);
		struct digest cd;
		digest_of(cbuf, clen, &cd);
		PbDigest cpd, rpd;
		reapi_pb_digest(&cpd, &cd);
		reapi_pb_digest(&rpd, &digest_empty);
		Build__Bazel__Remote__Execution__V2__Action act = REV2(ACTION__INIT);
		act.command_digest = &cpd;
		act.input_root_digest = &rpd;
		act.do_not_cache = g.mode == MODE_NOCACHE;
		pack_alloc(&act.base, &abuf, &alen);
		digest_of(abuf, alen, &g.actions[i]);
		const uint8_t *bl[2] = {cbuf, abuf};
		size_t ln[2] = {clen, alen};
		for (int k = 0; k < 2; k++) {
			build__bazel__remote__execution__v2__batch_update_blobs_request__request__init(
				&rq[n]);
			dd[n] = k ? g.actions[i] : cd;
			reapi_pb_digest(&pd[n], &dd[n]);
			rq[n].digest = &pd[n];
			rq[n].data.data = (uint8_t *)bl[k];
			rq[n].data.len = ln[k];
			rqp[n] = &rq[n];
			n++;
		}
		if (n < cap && i + 1 < g.nactions)
			continue;
		Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest req =
			REV2(BATCH_UPDATE_BLOBS_REQUEST__INIT);
		req.n_requests = n;
		req.requests = rqp;
		ProtobufCMessage *resp = NULL;
		char *msg = NULL;
		int code = rc_unary(
			cl, CAS_UPDATE, &req.base,
			&build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
			&resp, &msg, 60000000);
		if (code != GRPC_OK)
			fail("BatchUpdateBlobs", code, msg);
		Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse *r = (void *)resp;
		for (size_t j = 0; j < r->n_responses; j++)
			if (r->responses[j]->status && r->responses[j]->status->code != 0)
				fail("BatchUpdateBlobs", r->responses[j]->status->code,
				     r->responses[j]->status->message);
		if (r->n_responses != n)
			fail("BatchUpdateBlobs", GRPC_INTERNAL, "wrong number of responses");
		protobuf_c_message_free_unpacked(resp, NULL);
		free(msg);
		for (size_t j = 0; j < n; j++)
			free(rq[j].data.data);
		n = 0;
	}
	free(rq);
	free(rqp);
	free(pd);
	free(dd);
}

/* ---- Execute clients ------------------------------------------------------- */

static void run_done(void);

/* True when the stream's last Operation is a successful completion by one
 * of our bots; otherwise says why on stderr (first few only). */
static bool check_final(const struct client *c, int code, const char *message)
{
	const char *why = NULL;
	Google__Longrunning__Operation *op = NULL;
	Build__Bazel__Remote__Execution__V2__ExecuteResponse *er = NULL;
	if (code != GRPC_OK) {
		why = message ? message : "call failed";
	} else if (!c->last ||
		   !(op = google__longrunning__operation__unpack(NULL, c->last_len, c->last))) {
		why = "no Operation";
	} else if (!op->done) {
		why = "stream ended before the operation was done";
	} else if (op->result_case != GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE ||
		   !op->response || !str_endswith(op->response->type_url, URL_EXEC_RESPONSE)) {
		why = op->result_case == GOOGLE__LONGRUNNING__OPERATION__RESULT_ERROR && op->error
			      ? op->error->message
			      : "done Operation without an ExecuteResponse";
	} else if (!(er = build__bazel__remote__execution__v2__execute_response__unpack(
			     NULL, op->response->value.len, op->response->value.data))) {
		why = "bad ExecuteResponse";
	} else if (er->status && er->status->code != 0) {
		why = er->status->message;
	} else if (!er->result || er->result->exit_code != 0 || er->cached_result) {
		why = "no result, a non-zero exit code, or a cached result";
	} else if (!er->result->execution_metadata ||
		   strncmp(er->result->execution_metadata->worker, BOT_PREFIX,
			   strlen(BOT_PREFIX)) != 0) {
		why = "the result does not come from one of our bots";
	}
	if (why && g.errors < 5)
		fprintf(stderr, "exec_load: action %zu: %s: %s\n", c->action, grpc_code_name(code),
			why);
	if (er)
		build__bazel__remote__execution__v2__execute_response__free_unpacked(er, NULL);
	if (op)
		google__longrunning__operation__free_unpacked(op, NULL);
	return why == NULL;
}

static void exec_next(struct client *c);

static void exec_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct client *c = arg;
	keep_msg(&c->last, &c->last_len, msg, len);
}

static void exec_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct client *c = arg;
	int64_t dt = mono_us() - c->t0;
	if (check_final(c, code, message))
		g.lat[g.nlat++] = dt;
	else
		g.errors++;
	free(c->last);
	c->last = NULL;
	if (!g.stopping)
		exec_next(c);
}

static void exec_next(struct client *c)
{
	if (g.next >= g.nactions) {
		if (--g.active == 0)
			run_done();
		return;
	}
	c->action = g.next++;
	PbDigest d;
	reapi_pb_digest(&d, &g.actions[c->action]);
	Build__Bazel__Remote__Execution__V2__ExecuteRequest req = REV2(EXECUTE_REQUEST__INIT);
	req.action_digest = &d;
	req.skip_cache_lookup = g.mode == MODE_SKIP;
	c->t0 = mono_us();
	call(c->cl, EXEC_PATH, EXEC_TIMEOUT_US, &req.base, exec_msg, exec_done, c);
}

static void start_clients(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	g.cpu0[0] = cpu_ticks(g.reactord);
	g.cpu0[1] = cpu_ticks(g.redis);
	getrusage(RUSAGE_SELF, &g.ru0);
	g.t0 = mono_us();
	g.active = g.nclients;
	for (int i = 0; i < g.nclients; i++)
		exec_next(&g.clients[i]);
}

/* Every action has completed: take the figures, stop the bots. */
static void run_done(void)
{
	g.t1 = mono_us();
	g.cpu1[0] = cpu_ticks(g.reactord);
	g.cpu1[1] = cpu_ticks(g.redis);
	getrusage(RUSAGE_SELF, &g.ru1);
	g.stopping = true;
	for (int i = 0; i < g.nbots; i++)
		if (g.bots[i].call)
			rc_call_cancel(g.bots[i].call);
	event_base_loopbreak(g.base);
}

/* ---- idle streams ---------------------------------------------------------- */

static void idle_measured(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	g.rss1 = rss_kib(g.reactord);
	g.stopping = true;
	event_base_loopbreak(g.base);
}

static void idle_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k, (void)msg, (void)len;
	struct client *c = arg;
	if (c->t0 || g.stopping)
		return;
	c->t0 = mono_us();
	if (++g.queued == g.nactions) {
		/* Let allocations made on the way settle before reading RSS. */
		struct timeval tv = {1, 0};
		event_base_once(g.base, -1, EV_TIMEOUT, idle_measured, NULL, &tv);
	}
}

static void idle_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct client *c = arg;
	c->last = NULL; /* marks the call as ended */
	if (!g.stopping)
		fail("idle Execute stream", code, message ? message : "ended early");
}

/* Open ACTIONS Execute streams that no bot will serve. */
static void run_idle(void)
{
	g.clients = xcalloc(g.nactions, sizeof *g.clients);
	g.rss0 = rss_kib(g.reactord);
	struct rc_call **calls = xcalloc(g.nactions, sizeof *calls);
	for (size_t i = 0; i < g.nactions; i++) {
		struct client *c = &g.clients[i];
		c->cl = g.conns[i % (size_t)g.nconns];
		c->action = i;
		c->last = (uint8_t *)c; /* non-NULL while the call is open */
		PbDigest d;
		reapi_pb_digest(&d, &g.actions[i]);
		Build__Bazel__Remote__Execution__V2__ExecuteRequest req =
			REV2(EXECUTE_REQUEST__INIT);
		req.action_digest = &d;
		req.skip_cache_lookup = true;
		calls[i] =
			call(c->cl, EXEC_PATH, EXEC_TIMEOUT_US, &req.base, idle_msg, idle_done, c);
	}
	event_base_dispatch(g.base);
	long grown = g.rss0 >= 0 && g.rss1 >= 0 ? g.rss1 - g.rss0 : -1;
	printf("idle_streams=%zu conns=%d rss0_kib=%ld rss1_kib=%ld per_stream_kib=%.2f\n",
	       g.nactions, g.nconns, g.rss0, g.rss1,
	       grown >= 0 ? (double)grown / (double)g.nactions : -1.0);
	fflush(stdout);
	for (size_t i = 0; i < g.nactions; i++)
		if (g.clients[i].last)
			rc_call_cancel(calls[i]);
	free(calls);
}

/* ---- bots ------------------------------------------------------------------ */

static void bot_done(struct rc_call *k, int code, const char *message, void *arg);

static void bot_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct bot *b = arg;
	keep_msg(&b->resp, &b->resp_len, msg, len);
}

/* The session as the bot reports it; with its lease COMPLETED if it has one. */
static void bot_update(struct bot *b)
{
	Google__Devtools__Remoteworkers__V1test2__Device__Property prop =
		RW(DEVICE__PROPERTY__INIT);
	prop.key = "OSFamily";
	prop.value = "linux";
	Google__Devtools__Remoteworkers__V1test2__Device__Property *props[] = {&prop};
	Google__Devtools__Remoteworkers__V1test2__Device dev = RW(DEVICE__INIT);
	dev.handle = "cpu";
	dev.n_properties = 1;
	dev.properties = props;
	Google__Devtools__Remoteworkers__V1test2__Device *devs[] = {&dev};
	Google__Devtools__Remoteworkers__V1test2__Worker w = RW(WORKER__INIT);
	w.n_devices = 1;
	w.devices = devs;
	PbBotSession s = RW(BOT_SESSION__INIT);
	s.bot_id = b->id;
	s.status = RW(BOT_STATUS__OK);
	s.worker = &w;

	Build__Bazel__Remote__Execution__V2__ExecutedActionMetadata md =
		REV2(EXECUTED_ACTION_METADATA__INIT);
	md.worker = b->id;
	PbActionResult res = REV2(ACTION_RESULT__INIT);
	res.execution_metadata = &md;
	uint8_t rbuf[256];
	size_t rlen = protobuf_c_message_get_packed_size(&res.base);
	if (rlen > sizeof rbuf)
		abort();
	protobuf_c_message_pack(&res.base, rbuf);
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
	any.type_url = URL_RESULT;
	any.value.data = rbuf;
	any.value.len = rlen;
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	PbLease l = RW(LEASE__INIT), *lp = &l;
	if (b->lease) {
		l.id = b->lease;
		l.state = RW(LEASE_STATE__COMPLETED);
		l.status = &st;
		l.result = &any;
		s.n_leases = 1;
		s.leases = &lp;
	}
	if (!b->session) {
		Google__Devtools__Remoteworkers__V1test2__CreateBotSessionRequest req =
			RW(CREATE_BOT_SESSION_REQUEST__INIT);
		req.bot_session = &s;
		b->call = call(b->cl, BOTS_PFX "CreateBotSession", BOT_TIMEOUT_US, &req.base,
			       bot_msg, bot_done, b);
		return;
	}
	s.name = b->session;
	Google__Devtools__Remoteworkers__V1test2__UpdateBotSessionRequest req =
		RW(UPDATE_BOT_SESSION_REQUEST__INIT);
	req.name = b->session;
	req.bot_session = &s;
	b->call = call(b->cl, BOTS_PFX "UpdateBotSession", BOT_TIMEOUT_US, &req.base, bot_msg,
		       bot_done, b);
}

static void bot_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct bot *b = arg;
	b->call = NULL;
	if (g.stopping)
		return;
	PbBotSession *s = NULL;
	if (code != GRPC_OK || !b->resp ||
	    !(s = google__devtools__remoteworkers__v1test2__bot_session__unpack(NULL, b->resp_len,
										b->resp)))
		fail(b->session ? "UpdateBotSession" : "CreateBotSession", code,
		     message ? message : "no BotSession");
	free(b->resp);
	b->resp = NULL;
	bool created = !b->session;
	if (created)
		b->session = xstrdup(s->name);
	/* The lease we reported is done with; take the next one, if any. */
	free(b->lease);
	b->lease = NULL;
	for (size_t i = 0; i < s->n_leases; i++) {
		PbLease *l = s->leases[i];
		if (l->state == RW(LEASE_STATE__PENDING) && !b->lease) {
			b->lease = xstrdup(l->id);
			b->completed++;
		} else if (l->state == RW(LEASE_STATE__CANCELLED)) {
			g.cancelled++;
		}
	}
	google__devtools__remoteworkers__v1test2__bot_session__free_unpacked(s, NULL);
	bot_update(b);
	if (created && ++g.created == g.nbots) {
		struct timeval tv = {0, SETTLE_US};
		event_base_once(g.base, -1, EV_TIMEOUT, start_clients, NULL, &tv);
	}
}

/* ---- main ------------------------------------------------------------------ */

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct_ms(double p)
{
	if (!g.nlat)
		return 0;
	size_t i = (size_t)((double)g.nlat * p);
	return (double)g.lat[i < g.nlat ? i : g.nlat - 1] / 1000;
}

static double tv_s(const struct timeval *a, const struct timeval *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_usec - a->tv_usec) / 1e6;
}

static struct rc_client *connect_or_die(const char *target)
{
	char *err = NULL;
	struct rc_client *c = rc_client_connect(g.base, target, &err);
	if (!c) {
		fprintf(stderr, "exec_load: %s\n", err);
		exit(2);
	}
	return c;
}

static void usage(void)
{
	fprintf(stderr, "usage: exec_load [-m skip|miss|nocache] [-C CONNS] [-p PID] [-r PID] "
			"[-t TAG] TARGET CLIENTS BOTS ACTIONS\n"
			"       exec_load -I -p PID [-C CONNS] [-t TAG] TARGET ACTIONS\n");
	exit(2);
}

int main(int argc, char **argv)
{
	char tagbuf[48];
	snprintf(tagbuf, sizeof tagbuf, "%d-%" PRId64, (int)getpid(), now_us());
	const char *tag = tagbuf;
	int opt;
	while ((opt = getopt(argc, argv, "m:C:Ip:r:t:")) != -1) {
		switch (opt) {
		case 'I': g.idle = true; break;
		case 'm':
			g.mode = strcmp(optarg, "skip") == 0	  ? MODE_SKIP
				 : strcmp(optarg, "miss") == 0	  ? MODE_MISS
				 : strcmp(optarg, "nocache") == 0 ? MODE_NOCACHE
								  : (usage(), MODE_SKIP);
			break;
		case 'C': g.nconns = atoi(optarg); break;
		case 'p': g.reactord = atoi(optarg); break;
		case 'r': g.redis = atoi(optarg); break;
		case 't': tag = optarg; break;
		default: usage();
		}
	}
	log_set_level(LOG_WARN); /* the client's per-connection info lines */
	g.base = event_base_new();
	const char *target = argv[optind];
	if (g.idle) {
		if (argc - optind != 2 || g.reactord <= 0 ||
		    (g.nactions = (size_t)atol(argv[optind + 1])) < 1)
			usage();
		if (g.nconns < 1)
			g.nconns = 1;
		g.conns = xcalloc((size_t)g.nconns, sizeof *g.conns);
		for (int i = 0; i < g.nconns; i++)
			g.conns[i] = connect_or_die(target);
		upload(g.conns[0], tag);
		run_idle();
		for (int i = 0; i < g.nconns; i++)
			rc_client_free(g.conns[i]);
		free(g.conns);
		free(g.clients);
		free(g.actions);
		event_base_free(g.base);
		return g.rss1 < 0;
	}
	if (argc - optind != 4)
		usage();
	g.nclients = atoi(argv[optind + 1]);
	g.nbots = atoi(argv[optind + 2]);
	g.nactions = (size_t)atol(argv[optind + 3]);
	if (g.nclients < 1 || g.nbots < 1 || g.nactions < 1)
		usage();
	if (g.nconns < 1 || g.nconns > g.nclients)
		g.nconns = g.nclients;

	g.conns = xcalloc((size_t)g.nconns, sizeof *g.conns);
	for (int i = 0; i < g.nconns; i++)
		g.conns[i] = connect_or_die(target);
	upload(g.conns[0], tag);

	g.lat = xcalloc(g.nactions, sizeof *g.lat);
	g.clients = xcalloc((size_t)g.nclients, sizeof *g.clients);
	for (int i = 0; i < g.nclients; i++)
		g.clients[i].cl = g.conns[i % g.nconns];
	g.bots = xcalloc((size_t)g.nbots, sizeof *g.bots);
	for (int i = 0; i < g.nbots; i++) {
		struct bot *b = &g.bots[i];
		snprintf(b->id, sizeof b->id, BOT_PREFIX "%.40s-%d", tag, i);
		b->cl = connect_or_die(target);
		bot_update(b);
	}
	event_base_dispatch(g.base);

	long leases = 0;
	for (int i = 0; i < g.nbots; i++)
		leases += g.bots[i].completed;
	if ((size_t)leases != g.nactions) {
		fprintf(stderr, "exec_load: the bots completed %ld leases for %zu actions\n",
			leases, g.nactions);
		g.errors++;
	}
	double secs = (double)(g.t1 - g.t0) / 1e6, tck = (double)sysconf(_SC_CLK_TCK);
	double rd_cpu =
		g.cpu0[0] >= 0 && g.cpu1[0] >= 0 ? (double)(g.cpu1[0] - g.cpu0[0]) / tck : -1;
	double rs_cpu =
		g.cpu0[1] >= 0 && g.cpu1[1] >= 0 ? (double)(g.cpu1[1] - g.cpu0[1]) / tck : -1;
	double lg_cpu =
		tv_s(&g.ru0.ru_utime, &g.ru1.ru_utime) + tv_s(&g.ru0.ru_stime, &g.ru1.ru_stime);
	qsort(g.lat, g.nlat, sizeof *g.lat, cmp64);
	printf("actions=%zu clients=%d conns=%d bots=%d seconds=%.3f per_sec=%.0f errors=%ld "
	       "leases=%ld cancelled=%ld p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f "
	       "reactord_cpu_s=%.2f redis_cpu_s=%.2f loadgen_cpu_s=%.2f per_reactord_core_s=%.0f\n",
	       g.nlat, g.nclients, g.nconns, g.nbots, secs, secs > 0 ? (double)g.nlat / secs : 0,
	       g.errors, leases, g.cancelled, pct_ms(0.5), pct_ms(0.9), pct_ms(0.99),
	       g.nlat ? (double)g.lat[g.nlat - 1] / 1000 : 0, rd_cpu, rs_cpu, lg_cpu,
	       rd_cpu > 0 ? (double)g.nlat / rd_cpu : 0);
	fflush(stdout);

	for (int i = 0; i < g.nbots; i++) {
		rc_client_free(g.bots[i].cl);
		free(g.bots[i].session);
		free(g.bots[i].lease);
		free(g.bots[i].resp);
	}
	for (int i = 0; i < g.nconns; i++)
		rc_client_free(g.conns[i]);
	free(g.conns);
	free(g.clients);
	free(g.bots);
	free(g.actions);
	free(g.lat);
	event_base_free(g.base);
	return g.errors ? 1 : 0;
}
