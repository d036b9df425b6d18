/*
 * worker.c - reactor-worker: a bot of the Remote Workers API.  It opens a
 * bot session on reactord (CreateBotSession, properties on the first
 * device), long-polls UpdateBotSession for a lease, and for each lease
 * marks it ACTIVE, runs the action (worker_run.c: stage inputs from the
 * CAS, execute, upload outputs), heartbeats the ACTIVE lease while the
 * command runs (a CANCELLED answer kills it), and reports it COMPLETED
 * with an Any(ActionResult) and a google.rpc.Status.  It reconnects with
 * backoff when reactord is unreachable and opens a new session when its
 * session is gone.  One lease at a time, as the server hands out; run
 * several workers for several slots.  The event loop exists only for
 * the client: everything here is synchronous.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "proto/pb.h"
#include "rpc/client.h"
#include "config.h"
#include "google/rpc/status.pb-c.h"
#include "rpc/grpc.h"
#include "core/log.h"
#include "core/util.h"
#include "cmd/worker/worker_cas.h"
#include "cmd/worker/worker_run.h"
#include "cmd/worker/sandbox.h"

#define MOD	       "worker"
#define BOTS	       "/google.devtools.remoteworkers.v1test2.Bots/"
#define URL_DIGEST     "type.googleapis.com/build.bazel.remote.execution.v2.Digest"
#define URL_RESULT     "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult"
#define POLL_US	       (60 * 1000000LL) /* long-poll deadline of an idle update */
#define CALL_US	       (30 * 1000000LL) /* deadline of a non-polling call */
#define BACKOFF_MIN_US 100000LL
#define BACKOFF_MAX_US (5 * 1000000LL)

static struct {
	struct event_base *base;
	const char *target, *instance, *workdir;
	char *name;
	char **keys, **vals; /* advertised properties */
	size_t nprops;
	struct rc_client *cl;
	struct wcas cas;
	char *session;
	int64_t keepalive_us; /* from the server's expire_time */
	int64_t backoff_us;
	struct sandbox sb;
} w;

static volatile sig_atomic_t stopping;

/* SIGTERM/SIGINT: the running command goes first (its own process group
 * would outlive us), then we leave; the server requeues the lease when
 * our session expires or our successor opens a new one. */
static void on_term(int sig)
{
	(void)sig;
	stopping = 1;
	wrun_kill_running();
	_exit(0);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: reactor-worker -s TARGET [-i INSTANCE] [-n NAME] [-d WORKDIR]\n"
		   "                      [-p KEY=VALUE]... [-S bwrap|none] [-B BWRAP]\n"
		   "                      [-u USER] [-v | -q] [-V] [-h]\n"
		   "  -s TARGET    reactord address: HOST:PORT, [V6]:PORT or unix:PATH\n"
		   "  -i INSTANCE  REAPI instance name (default \"\")\n"
		   "  -n NAME      bot id (default HOSTNAME-PID)\n"
		   "  -d WORKDIR   scratch directory for actions (default /tmp/reactor-worker)\n"
		   "  -p KEY=VALUE platform property to advertise (repeatable; default\n"
		   "               OSFamily=linux and ISA=x86-64; network=on lets actions\n"
		   "               that ask for network=on use the host's network)\n"
		   "  -S MODE      --sandbox: bwrap (default; isolate each action with\n"
		   "               bubblewrap) or none (run actions unisolated)\n"
		   "  -B PATH      --bwrap: the bwrap binary (default: bwrap in PATH)\n"
		   "  -u USER      --run-as: USER, UID or UID:GID actions run as when the\n"
		   "               worker runs as root (default nobody)\n"
		   "  -v / -q      more / less logging\n"
		   "  -V           --version: print the version and exit\n"
		   "  -h           --help: this help\n");
	fprintf(f, "%s", RC_CLIENT_USAGE);
}

/* ---- connection and session ------------------------------------------------------ */

/* Drop the connection; the session lives on in reactord (until it
 * expires), so a reconnect within bot-session-keepalive keeps the lease. */
static void disconnect(void)
{
	if (w.cl) {
		rc_client_free(w.cl);
		w.cl = NULL;
	}
}

static void nap_us(int64_t us)
{
	struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void backoff(void)
{
	nap_us(w.backoff_us);
	w.backoff_us = w.backoff_us * 2 > BACKOFF_MAX_US ? BACKOFF_MAX_US : w.backoff_us * 2;
}

/* TLS and token flags (--tls-ca, --token-file...); the token file is
 * read again at each reconnect. */
static struct rc_client_opts w_copts;

static int connect_server(void)
{
	char *err = NULL;
	w.cl = rc_client_connect_opts(w.base, w.target, &w_copts, &err);
	if (!w.cl) {
		LOGE(MOD, "%s", err);
		free(err);
		exit(2);
	}
	if (wcas_init(&w.cas, w.base, w.cl, w.instance, &err) != 0) {
		LOGW(MOD, "%s: %s", w.target, err);
		free(err);
		disconnect();
		return -1;
	}
	LOGI(MOD, "connected to %s (CAS batch limit %lld bytes)", w.target,
	     (long long)w.cas.max_batch);
	return 0;
}

static void fill_session(PbBotSession *s, Google__Devtools__Remoteworkers__V1test2__Worker *wk,
			 Google__Devtools__Remoteworkers__V1test2__Device *dev,
			 Google__Devtools__Remoteworkers__V1test2__Device__Property *pv,
			 Google__Devtools__Remoteworkers__V1test2__Device__Property **pp)
{
	for (size_t i = 0; i < w.nprops; i++) {
		google__devtools__remoteworkers__v1test2__device__property__init(&pv[i]);
		pv[i].key = w.keys[i];
		pv[i].value = w.vals[i];
		pp[i] = &pv[i];
	}
	google__devtools__remoteworkers__v1test2__device__init(dev);
	dev->handle = (char *)"cpu";
	dev->n_properties = w.nprops;
	dev->properties = pp;
	google__devtools__remoteworkers__v1test2__worker__init(wk);
	wk->n_devices = 1; /* the caller points wk->devices at dev */
	google__devtools__remoteworkers__v1test2__bot_session__init(s);
	s->name = w.session ? w.session : (char *)"";
	s->bot_id = w.name;
	s->status = RW(BOT_STATUS__OK);
	s->worker = wk;
}

static void note_expiry(const PbBotSession *s)
{
	if (!s->expire_time)
		return;
	int64_t e = s->expire_time->seconds * 1000000LL + s->expire_time->nanos / 1000;
	int64_t left = e - now_us();
	if (left > 0)
		w.keepalive_us = left;
}

/* One Bots call with our session and `report` (NULL = no lease).
 * Returns the gRPC code; on OK *out is the new session state. */
static int bots_call(bool create, PbLease *report, int64_t timeout_us, PbBotSession **out)
{
	Google__Devtools__Remoteworkers__V1test2__Device__Property *pv =
		xcalloc(w.nprops + 1, sizeof(*pv));
	Google__Devtools__Remoteworkers__V1test2__Device__Property **pp =
		xcalloc(w.nprops + 1, sizeof(*pp));
	Google__Devtools__Remoteworkers__V1test2__Worker wk;
	Google__Devtools__Remoteworkers__V1test2__Device dev, *devp = &dev;
	PbBotSession s;
	fill_session(&s, &wk, &dev, pv, pp);
	wk.devices = &devp;
	if (report) {
		s.n_leases = 1;
		s.leases = &report;
	}
	ProtobufCMessage *resp = NULL;
	char *msg = NULL;
	int code;
	if (create) {
		Google__Devtools__Remoteworkers__V1test2__CreateBotSessionRequest req =
			RW(CREATE_BOT_SESSION_REQUEST__INIT);
		req.parent = (char *)w.instance;
		req.bot_session = &s;
		code = rc_unary(w.cl, BOTS "CreateBotSession", &req.base,
				&google__devtools__remoteworkers__v1test2__bot_session__descriptor,
				&resp, &msg, timeout_us);
	} else {
		Google__Devtools__Remoteworkers__V1test2__UpdateBotSessionRequest req =
			RW(UPDATE_BOT_SESSION_REQUEST__INIT);
		req.name = w.session;
		req.bot_session = &s;
		code = rc_unary(w.cl, BOTS "UpdateBotSession", &req.base,
				&google__devtools__remoteworkers__v1test2__bot_session__descriptor,
				&resp, &msg, timeout_us);
	}
	free(pv);
	free(pp);
	if (code == GRPC_OK) {
		*out = (PbBotSession *)resp;
		note_expiry(*out);
		w.backoff_us = BACKOFF_MIN_US;
	} else if (code == GRPC_DEADLINE_EXCEEDED && !create && !report) {
		/* An idle long poll that outlived its deadline: just poll again. */
	} else {
		/* UNAVAILABLE on a live connection: reactord is up but its Redis
		 * is not (yet); keep the connection and back off. */
		log_msg(code == GRPC_UNAVAILABLE && rc_client_alive(w.cl) ? LOG_INFO : LOG_WARN,
			MOD, "%s: status %d: %s", create ? "CreateBotSession" : "UpdateBotSession",
			code, msg ? msg : "");
		if (code == GRPC_NOT_FOUND || code == GRPC_INVALID_ARGUMENT ||
		    code == GRPC_FAILED_PRECONDITION) {
			free(w.session);
			w.session = NULL; /* open a new one */
		} else if (!rc_client_alive(w.cl)) {
			disconnect();
		}
	}
	free(msg);
	return code;
}

/* ---- leases ----------------------------------------------------------------------- */

struct lease_ctx {
	const PbLease *lease;
	bool lost;
};

static void lease_report(PbLease *l, const PbLease *from, int state)
{
	google__devtools__remoteworkers__v1test2__lease__init(l);
	l->id = from->id;
	l->payload = from->payload;
	l->state = state;
}

/* Report the lease ACTIVE; false when it is cancelled or gone. */
static bool heartbeat(void *arg)
{
	struct lease_ctx *lc = arg;
	if (lc->lost)
		return false;
	if (!w.cl && connect_server() != 0)
		return true; /* keep running; the next beat tries again */
	if (!w.session) {
		lc->lost = true;
		return false;
	}
	PbLease l;
	lease_report(&l, lc->lease, RW(LEASE_STATE__ACTIVE));
	PbBotSession *s = NULL;
	int code = bots_call(false, &l, CALL_US, &s);
	if (code != GRPC_OK) {
		/* A transient error keeps the command running; a lost session
		 * means the lease was requeued elsewhere. */
		if (!w.session)
			lc->lost = true;
		return !lc->lost;
	}
	bool ok = false;
	for (size_t i = 0; i < s->n_leases; i++)
		if (s->leases[i]->id && !strcmp(s->leases[i]->id, lc->lease->id) &&
		    s->leases[i]->state == RW(LEASE_STATE__ACTIVE))
			ok = true;
	protobuf_c_message_free_unpacked(&s->base, NULL);
	if (!ok) {
		LOGI(MOD, "lease %s was cancelled by the server", lc->lease->id);
		lc->lost = true;
	}
	return ok;
}

static int64_t beat_interval(void)
{
	int64_t b = w.keepalive_us / 3;
	if (b > 10 * 1000000LL)
		b = 10 * 1000000LL;
	if (b < 200000)
		b = 200000;
	return b;
}

/* Fetch and unpack the Action and its Command.  Returns a gRPC code. */
static int load_action(const struct digest *ad, PbAction **a, PbCommand **c, char **msg)
{
	uint8_t *buf;
	size_t len;
	char *err = NULL;
	int rc = wcas_read_many(&w.cas, ad, 1, &buf, &len, &err);
	if (rc != 0) {
		*msg = rc == WCAS_MISSING ? xasprintf("missing Action: %s", err)
					  : xasprintf("cannot read the Action: %s", err);
		free(err);
		return rc == WCAS_MISSING ? GRPC_FAILED_PRECONDITION : GRPC_UNAVAILABLE;
	}
	*a = build__bazel__remote__execution__v2__action__unpack(NULL, len, buf);
	free(buf);
	struct digest cd;
	if (!*a || !(*a)->command_digest ||
	    digest_parse((*a)->command_digest->hash, (*a)->command_digest->size_bytes, &cd, NULL)) {
		*msg = xstrdup("the Action is not valid or has no command_digest");
		return GRPC_INVALID_ARGUMENT;
	}
	rc = wcas_read_many(&w.cas, &cd, 1, &buf, &len, &err);
	if (rc != 0) {
		*msg = rc == WCAS_MISSING ? xasprintf("missing Command: %s", err)
					  : xasprintf("cannot read the Command: %s", err);
		free(err);
		return rc == WCAS_MISSING ? GRPC_FAILED_PRECONDITION : GRPC_UNAVAILABLE;
	}
	*c = build__bazel__remote__execution__v2__command__unpack(NULL, len, buf);
	free(buf);
	if (!*c) {
		*msg = xstrdup("the Command is not a valid Command message");
		return GRPC_INVALID_ARGUMENT;
	}
	return GRPC_OK;
}

/* Run a PENDING lease; returns the server's answer to our report (may
 * carry the next lease) or NULL. */
static PbBotSession *run_lease(const PbLease *lease)
{
	int64_t queued = now_us();
	struct lease_ctx lc = {.lease = lease};
	LOGI(MOD, "lease %s", lease->id);
	/* ACTIVE first: the operation shows EXECUTING, and a cancel that
	 * raced the assignment shows up here. */
	if (!heartbeat(&lc))
		return NULL;

	struct wrun_out out = {.code = GRPC_OK};
	PbAction *a = NULL;
	PbCommand *c = NULL;
	PbDigest *pd = NULL;
	struct digest ad;
	if (!lease->payload || !lease->payload->type_url ||
	    !str_endswith(lease->payload->type_url, "/build.bazel.remote.execution.v2.Digest") ||
	    !(pd = build__bazel__remote__execution__v2__digest__unpack(
		      NULL, lease->payload->value.len, lease->payload->value.data)) ||
	    digest_parse(pd->hash, pd->size_bytes, &ad, NULL)) {
		out.code = GRPC_INVALID_ARGUMENT;
		out.message = xstrdup("the lease payload is not an Any(Digest) of an Action");
	} else {
		out.code = load_action(&ad, &a, &c, &out.message);
	}
	if (out.code == GRPC_OK) {
		char *dir = xasprintf("%s/%s/action", w.workdir, w.name);
		int64_t t = 0;
		if (a->timeout)
			t = a->timeout->seconds * 1000000LL + a->timeout->nanos / 1000;
		struct wrun_req r = {
			.cas = &w.cas,
			.dir = dir,
			.worker = w.name,
			.action = a,
			.command = c,
			.timeout_us = t,
			.heartbeat_us = beat_interval(),
			.beat = heartbeat,
			.beat_arg = &lc,
			.queued_us = queued,
			.sandbox = &w.sb,
		};
		wrun_action(&r, &out);
		free(dir);
	}
	if (pd)
		protobuf_c_message_free_unpacked(&pd->base, NULL);
	if (a)
		protobuf_c_message_free_unpacked(&a->base, NULL);
	if (c)
		protobuf_c_message_free_unpacked(&c->base, NULL);
	LOGI(MOD, "lease %s: status %d%s%s", lease->id, out.code, out.message ? ": " : "",
	     out.message ? out.message : "");
	PbBotSession *resp = NULL;
	if (lc.lost || out.code == GRPC_CANCELLED) {
		wrun_out_free(&out);
		return NULL;
	}
	/* Report; a dropped connection is retried on a new one. */
	PbLease l;
	lease_report(&l, lease, RW(LEASE_STATE__COMPLETED));
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	st.code = out.code;
	st.message = out.message ? out.message : (char *)"";
	l.status = &st;
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
	if (out.result) {
		any.type_url = (char *)URL_RESULT;
		any.value.data = out.result;
		any.value.len = out.result_len;
		l.result = &any;
	}
	for (int tries = 0; tries < 20 && !stopping; tries++) {
		if (!w.cl && connect_server() != 0) {
			backoff();
			continue;
		}
		if (!w.session)
			break; /* the session is gone and the lease with it */
		int code = bots_call(false, &l, CALL_US, &resp);
		if (code == GRPC_OK)
			break;
		resp = NULL;
		if (code != GRPC_UNAVAILABLE && code != GRPC_DEADLINE_EXCEEDED && w.session)
			break;
		backoff();
	}
	wrun_out_free(&out);
	return resp;
}

/* ---- main loop -------------------------------------------------------------------- */

static void serve(void)
{
	w.backoff_us = BACKOFF_MIN_US;
	PbBotSession *s = NULL;
	while (!stopping) {
		if (!w.cl && connect_server() != 0) {
			backoff();
			continue;
		}
		if (!s) {
			int code = w.session ? bots_call(false, NULL, POLL_US, &s)
					     : bots_call(true, NULL, CALL_US, &s);
			if (code != GRPC_OK) {
				s = NULL;
				if (code != GRPC_DEADLINE_EXCEEDED)
					backoff();
				continue;
			}
			if (!w.session) {
				w.session = xstrdup(s->name);
				LOGI(MOD, "bot %s: session %s", w.name, w.session);
			}
		}
		const PbLease *pending = NULL;
		for (size_t i = 0; i < s->n_leases; i++)
			if (s->leases[i]->state == RW(LEASE_STATE__PENDING) && s->leases[i]->id)
				pending = s->leases[i];
		PbBotSession *next = pending ? run_lease(pending) : NULL;
		protobuf_c_message_free_unpacked(&s->base, NULL);
		s = next;
	}
	if (s)
		protobuf_c_message_free_unpacked(&s->base, NULL);
}

static void add_prop(const char *kv)
{
	const char *eq = strchr(kv, '=');
	w.keys = xrealloc(w.keys, (w.nprops + 1) * sizeof(*w.keys));
	w.vals = xrealloc(w.vals, (w.nprops + 1) * sizeof(*w.vals));
	w.keys[w.nprops] = xstrndup(kv, (size_t)(eq - kv));
	w.vals[w.nprops++] = xstrdup(eq + 1);
}

int main(int argc, char **argv)
{
	int opt, verbosity = 0;
	w.instance = "";
	w.workdir = "/tmp/reactor-worker";
	w.keepalive_us = 60 * 1000000LL;
	const char *name = NULL, *sandbox = NULL, *bwrap = NULL, *run_as = NULL;
	static const struct option longs[] = {
		{"sandbox", required_argument, NULL, 'S'},
		{"bwrap", required_argument, NULL, 'B'},
		{"run-as", required_argument, NULL, 'u'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		RC_CLIENT_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	while ((opt = getopt_long(argc, argv, "s:i:n:d:p:S:B:u:vqVh", longs, NULL)) != -1) {
		if (rc_client_opt(&w_copts, opt, optarg))
			continue;
		switch (opt) {
		case 's': w.target = optarg; break;
		case 'i': w.instance = optarg; break;
		case 'n': name = optarg; break;
		case 'd': w.workdir = optarg; break;
		case 'S': sandbox = optarg; break;
		case 'B': bwrap = optarg; break;
		case 'u': run_as = optarg; break;
		case 'p':
			if (!strchr(optarg, '=') || optarg[0] == '=') {
				fprintf(stderr, "reactor-worker: -p %s: want KEY=VALUE\n", optarg);
				return 2;
			}
			add_prop(optarg);
			break;
		case 'v': verbosity++; break;
		case 'q': verbosity--; break;
		case 'V': printf("reactor-worker %s\n", PACKAGE_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!w.target || optind != argc) {
		usage(stderr);
		return 2;
	}
	rc_client_opts_env(&w_copts);
	int lvl = LOG_INFO + verbosity;
	log_set_level(lvl < LOG_ERROR ? LOG_ERROR : lvl > LOG_DEBUG ? LOG_DEBUG : lvl);
	if (!w.nprops) {
		add_prop("OSFamily=linux");
		add_prop("ISA=x86-64");
	}
	if (name) {
		w.name = xstrdup(name);
	} else {
		char host[HOST_NAME_MAX + 1] = "localhost";
		gethostname(host, sizeof host - 1);
		w.name = xasprintf("%s-%d", host, (int)getpid());
	}
	if (!*w.name || strchr(w.name, '/') || !strcmp(w.name, ".") || !strcmp(w.name, "..")) {
		fprintf(stderr,
			"reactor-worker: -n %s: the name is also a directory under "
			"WORKDIR: no '/', not empty\n",
			w.name);
		return 2;
	}
	bool net = false;
	for (size_t i = 0; i < w.nprops; i++)
		net |= !strcmp(w.keys[i], "network") && !strcmp(w.vals[i], "on");
	char *err = NULL;
	if (sandbox_init(&w.sb, sandbox, bwrap, run_as, net, &err) != 0) {
		fprintf(stderr, "reactor-worker: refusing to start: %s\n", err);
		free(err);
		return 2;
	}
	/* What bwrap leaves behind (its pid namespace's first process)
	 * becomes our child, so the end of an action can wait for it. */
	if (w.sb.mode == SANDBOX_BWRAP && prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
		fprintf(stderr, "reactor-worker: PR_SET_CHILD_SUBREAPER: %s\n", strerror(errno));
		return 1;
	}
	if (mkdir(w.workdir, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "reactor-worker: cannot create %s: %s\n", w.workdir,
			strerror(errno));
		return 1;
	}
	/* Absolute: the exec root is bound into the sandbox at its path. */
	char *wd = realpath(w.workdir, NULL);
	if (!wd) {
		fprintf(stderr, "reactor-worker: %s: %s\n", w.workdir, strerror(errno));
		return 1;
	}
	char *mine = xasprintf("%s/%s", wd, w.name);
	free(wd);
	/* A predecessor with our name may have left an action behind. */
	wrun_rmtree(mine);
	if (mkdir(mine, 0755) != 0) {
		fprintf(stderr, "reactor-worker: cannot create %s: %s\n", mine, strerror(errno));
		free(mine);
		return 1;
	}
	/* Refuse to run actions unisolated because the sandbox is broken. */
	if (sandbox_probe(&w.sb, mine, &err) != 0) {
		fprintf(stderr, "reactor-worker: refusing to start: %s (work dir %s)\n", err, mine);
		free(err);
		wrun_rmtree(mine);
		free(mine);
		return 1;
	}

	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {0};
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	w.base = event_base_new();
	if (!w.base) {
		fprintf(stderr, "reactor-worker: cannot create the event loop\n");
		return 1;
	}
	LOGI(MOD, "reactor-worker %s: bot %s, server %s, instance \"%s\", work dir %s",
	     PACKAGE_VERSION, w.name, w.target, w.instance, mine);
	char *how = sandbox_describe(&w.sb);
	LOGI(MOD, "%s", how);
	free(how);
	serve();
	disconnect();
	free(w.session);
	wrun_rmtree(mine);
	free(mine);
	event_base_free(w.base);
	for (size_t i = 0; i < w.nprops; i++) {
		free(w.keys[i]);
		free(w.vals[i]);
	}
	free(w.keys);
	free(w.vals);
	free(w.name);
	sandbox_free(&w.sb);
	return 0;
}
