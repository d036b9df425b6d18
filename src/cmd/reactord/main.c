/*
 * main.c - reactord: option parsing, start-up order, signals (SIGTERM/SIGINT
 * drain, SIGHUP reload), and the one event loop everything runs on.
 *
 * Start-up: config -> state dir -> Redis (embedded server spawned and
 * answering) -> listeners -> ready-file, sd_notify READY=1 and the local
 * workers (these two wait for Redis to answer).  Shutdown: health NOT_SERVING,
 * stop accepting, GOAWAY, let calls finish for shutdown-grace, cancel the
 * rest, close Redis, stop the embedded redis-server, exit 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <protobuf-c/protobuf-c.h>
#include <yaml.h>

#include "rpc/call.h"
#include "core/cfg.h"
#include "config.h"
#include "services/auth.h"
#include "services/dispatch.h"
#include "services/inst.h"
#include "services/status.h"
#include "core/log.h"
#include "domain/ac.h"
#include "domain/inspect.h"
#include "domain/master.h"
#include "domain/sched.h"
#include "transport/server.h"
#include "transport/http.h"
#include "core/metrics.h"
#include "services/svc_metrics.h"
#include "state/keys.h"
#include "state/store.h"
#include "services/svc.h"
#include "domain/sched_watch.h"
#include "cmd/reactord/worker_sup.h"
#include "cmd/reactord/sdnotify.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif
/* The one default config path: where `make install` puts the example and
 * what contrib/reactord.service reads (reactord(8), FILES). */
#define DEFAULT_CONF SYSCONFDIR "/reactor/reactor.conf"

static struct {
	struct event_base *base;
	struct cfg *boot; /* the config we started with (listeners, redis) */
	struct cfg *live; /* the config in force for reloadable keys */
	const char *conf_path;
	int verbosity; /* -v / -q adjustments */
	bool draining;
	struct event *sigterm, *sigint, *sighup, *grace_ev, *force_ev, *ready_ev;
	bool ready;
	bool notified; /* sd_notify READY=1 sent */
	int workers;   /* --workers N over workers.local; -1: the file's */
	char *pid_file;
} d = {.workers = -1};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: reactord [-c FILE] [-t] [-w N] [-v | -q] [-V] [-h]\n"
		"  -c, --config FILE  configuration file (default %s)\n"
		"  -t, --test         check the configuration and exit (0 valid, 1 invalid)\n"
		"  -w, --workers N    start N local workers (0..256), overriding\n"
		"                     workers.local in the file\n"
		"  -v, --verbose      more logging (repeat for debug)\n"
		"  -q, --quiet        less logging (repeat for errors only)\n"
		"  -V, --version      print the version and linked library versions\n"
		"  -h, --help         this help\n",
		DEFAULT_CONF);
}

static void print_version(void)
{
	nghttp2_info *ng = nghttp2_version(0);
	printf("reactord %s\n", PACKAGE_VERSION);
	printf("libevent %s\n", event_get_version());
	printf("nghttp2 %s\n", ng->version_str);
	printf("protobuf-c %s\n", protobuf_c_version());
	printf("hiredis %d.%d.%d\n", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
	int maj, min, pat;
	yaml_get_version(&maj, &min, &pat);
	printf("libyaml %d.%d.%d\n", maj, min, pat);
	printf("openssl %s\n", OpenSSL_version(OPENSSL_VERSION));
}

static void apply_logging(const struct cfg *cfg)
{
	int lvl = cfg->log_level + d.verbosity;
	if (lvl < LOG_ERROR)
		lvl = LOG_ERROR;
	if (lvl > LOG_DEBUG)
		lvl = LOG_DEBUG;
	log_set_level((enum log_level)lvl);
	log_set_json(cfg->log_json);
}

static void apply_live(struct cfg *cfg)
{
	apply_logging(cfg);
	call_configure(cfg);
	(void)auth_configure(cfg);
	server_reconfigure(cfg);
	svc_set_config(cfg);
	svc_buckets_configure(cfg);
	inst_configure(cfg);
	sched_configure(cfg);
	ac_configure(cfg->ac_retention_us);
	sched_watch_configure(cfg);
	master_configure(cfg->master);
	status_configure(cfg);
	inspect_configure(cfg);
}

/* ---- shutdown ------------------------------------------------------------ */

static void finish_shutdown(void *arg)
{
	(void)arg;
	LOGI("main", "all connections closed; stopping");
	event_base_loopexit(d.base, NULL);
}

static void force_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	LOGW("main", "connections still open after cancelling calls; closing them");
	server_close_all();
}

static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	size_t n = call_active_count();
	if (n)
		LOGW("main", "shutdown grace over; cancelling %zu call(s) still running", n);
	call_cancel_all(GRPC_UNAVAILABLE, "server shutting down");
	struct timeval tv = {1, 0};
	event_add(d.force_ev, &tv);
}

static void drain_rest(void *arg);

static void start_drain(const char *why)
{
	if (d.draining) {
		LOGW("main", "%s again: closing everything now", why);
		call_cancel_all(GRPC_UNAVAILABLE, "server shutting down");
		server_close_all();
		return;
	}
	d.draining = true;
	(void)sdn_send("STOPPING=1\nSTATUS=%s: draining", why);
	LOGI("main", "%s: draining (%zu connection(s), %zu call(s) in flight)", why,
	     server_nconns(), call_active_count());
	/* The master hands its builds back first, while its connection (maybe
	 * to this reactord) still takes new calls. */
	if (master_running())
		master_drain(drain_rest, NULL);
	else
		drain_rest(NULL);
}

static void drain_rest(void *arg)
{
	(void)arg;
	svc_health_set_serving(false);
	svc_health_shutdown();
	status_shutdown();
	svc_buckets_shutdown();
	svc_exec_drain();
	svc_bots_drain();
	worker_sup_stop();
	int64_t g = d.live->shutdown_grace_us;
	struct timeval tv = {g / 1000000, g % 1000000};
	event_add(d.grace_ev, &tv);
	server_drain(finish_shutdown, NULL);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (sig == SIGHUP) {
		struct cfg *n = NULL;
		char *err = NULL;
		if (sdn_send("RELOADING=1\nMONOTONIC_USEC=%lld\nSTATUS=reloading %s",
			     (long long)mono_us(), d.conf_path) != 0)
			LOGW("main", "sd_notify: %s", strerror(errno));
		if (cfg_load(d.conf_path, &n, &err) != 0) {
			LOGE("main", "reload failed, keeping the running config: %s", err);
			(void)sdn_send("READY=1\nSTATUS=reload failed, running the previous "
				       "config: %.200s",
				       err);
			free(err);
			return;
		}
		if (d.workers >= 0)
			n->workers_local = d.workers; /* --workers holds over the file */
		char *stat = cfg_diff_static(d.boot, n);
		if (stat) {
			LOGW("main",
			     "reload: %s changed; these keys take effect only after a "
			     "restart",
			     stat);
			free(stat);
		}
		struct cfg *old = d.live;
		d.live = n;
		apply_live(n);
		/* Certificates and keys: new SSL contexts for new connections. */
		int tls = server_reload_tls(n);
		if (old != d.boot)
			cfg_free(old);
		LOGI("main", "reloaded %s%s", d.conf_path,
		     tls ? " (a TLS listener kept its previous certificate: see above)" : "");
		(void)sdn_send("READY=1\nSTATUS=serving (reloaded %s)", d.conf_path);
		return;
	}
	start_drain(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* "ready" (the log line and the ready-file) means serving: Redis is up,
 * or it stayed unreachable for the connect timeout, in which case we are
 * ready but NOT_SERVING until it comes. */
static void announce_ready(void)
{
	/* Only once, and only while the listeners are up: the store may come
	 * up during the cleanup loop of a failed start. */
	if (d.ready || !d.ready_ev)
		return;
	d.ready = true;
	event_del(d.ready_ev);
	if (d.boot->ready_file && server_write_ready_file(d.boot->ready_file) != 0)
		LOGE("main", "ready-file %s: %s", d.boot->ready_file, strerror(errno));
	LOGI("main", "ready%s", store_up() ? "" : " (Redis not reachable yet: NOT_SERVING)");
}

static void ready_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	announce_ready();
}

/* Redis answers and the listeners serve: what waited for both goes -
 * the local workers (their first call must find a server that can
 * answer it) and systemd's READY=1. */
static void serving(void)
{
	if (!d.ready_ev && !d.ready)
		return; /* not (or no longer) serving */
	announce_ready();
	if (d.draining)
		return;
	worker_sup_run();
	if (d.notified)
		return;
	d.notified = true;
	if (sdn_send("READY=1\nSTATUS=serving (config %s)", d.conf_path) != 0)
		LOGW("main", "sd_notify READY=1: %s", strerror(errno));
}

static void store_state(bool up, void *arg)
{
	(void)arg;
	if (!d.draining)
		svc_health_set_serving(up);
	if (up)
		serving();
}

/* ---- start-up -------------------------------------------------------------- */

static int write_pid_file(void)
{
	d.pid_file = xasprintf("%s/reactord.pid", d.boot->state_dir);
	FILE *f = fopen(d.pid_file, "w");
	if (!f)
		return -1;
	fprintf(f, "%d\n", (int)getpid());
	return fclose(f);
}

/* Options into d; -1 to go on, else the exit status (-h, -V, usage). */
static int parse_args(int argc, char **argv, bool *test_only)
{
	static const struct option longs[] = {
		{"config", required_argument, NULL, 'c'},  {"test", no_argument, NULL, 't'},
		{"workers", required_argument, NULL, 'w'}, {"verbose", no_argument, NULL, 'v'},
		{"quiet", no_argument, NULL, 'q'},	   {"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},	   {NULL, 0, NULL, 0},
	};
	int opt;
	char *end;
	d.conf_path = DEFAULT_CONF;
	while ((opt = getopt_long(argc, argv, "c:tw:vqVh", longs, NULL)) != -1) {
		switch (opt) {
		case 'c': d.conf_path = optarg; break;
		case 't': *test_only = true; break;
		case 'w': {
			errno = 0;
			long n = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || n < 0 || n > 256) {
				fprintf(stderr,
					"reactord: --workers %s: expected a number of local "
					"workers "
					"0..256\n",
					optarg);
				return 2;
			}
			d.workers = (int)n;
			break;
		}
		case 'v': d.verbosity++; break;
		case 'q': d.verbosity--; break;
		case 'V': print_version(); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	return -1;
}

/* Whether every caller on listener l must prove who it is: a TLS listener
 * with client-auth: require (the handshake needs a certificate from
 * client-ca), or an auth: section under which a caller without
 * credentials can do nothing (require: true, or anonymous holds no role).
 * Without an auth: section every caller holds every role. */
static bool listener_is_authenticated(const struct cfg *cfg, const struct cfg_listen *l)
{
	if (l->tls && l->tls->client_auth == CFG_CLIENT_AUTH_REQUIRE)
		return true;
	return cfg->auth && (cfg->auth->require || cfg->auth->n_anonymous == 0);
}

/* Safe defaults, for TCP listeners beyond loopback (unix sockets and
 * loopback addresses are always allowed): a plaintext one is refused
 * (credentials and build data would travel in clear), and so is a TLS one
 * nobody has to authenticate on, unless the entry says insecure: true.
 * 0, or -1 with the one line that names the listener on stderr. */
static int check_listeners(const struct cfg *cfg)
{
	for (int i = 0; i < cfg->n_listen; i++) {
		const struct cfg_listen *l = &cfg->listen[i];
		if (l->kind != CFG_LISTEN_TCP || l->insecure || host_is_loopback(l->host))
			continue;
		if (l->tls && listener_is_authenticated(cfg, l))
			continue;
		bool v6 = strchr(l->host, ':') != NULL;
		if (!l->tls)
			fprintf(stderr,
				"reactord: %s: listen[%d] %s%s%s:%d is plaintext and "
				"unauthenticated "
				"on a non-loopback address: refusing to start (use tls: with "
				"client-auth: require, or set insecure: true on this listener)\n",
				cfg->file, i, v6 ? "[" : "", l->host, v6 ? "]" : "", l->port);
		else
			fprintf(stderr,
				"reactord: %s: listen[%d] %s%s%s:%d is TLS but unauthenticated on "
				"a "
				"non-loopback address (no client-auth: require, and no auth: "
				"section "
				"that refuses callers without credentials): refusing to start (or "
				"set "
				"insecure: true on this listener)\n",
				cfg->file, i, v6 ? "[" : "", l->host, v6 ? "]" : "", l->port);
		return -1;
	}
	return 0;
}

/* Load the config (and with -t stop there); -1 to go on, else the exit
 * status. */
static int load_config(bool test_only)
{
	char *err = NULL;
	if (cfg_load(d.conf_path, &d.boot, &err) != 0) {
		fprintf(stderr, "reactord: %s\n", err);
		free(err);
		return 1;
	}
	if (d.workers >= 0)
		d.boot->workers_local = d.workers;
	if (check_listeners(d.boot) != 0) {
		cfg_free(d.boot);
		return 1;
	}
	if (http_check(d.boot, &err) != 0) {
		fprintf(stderr, "reactord: %s: %s\n", d.conf_path, err);
		free(err);
		cfg_free(d.boot);
		return 1;
	}
	if (server_check_tls(d.boot, &err) != 0) {
		fprintf(stderr, "reactord: %s: %s\n", d.conf_path, err);
		free(err);
		cfg_free(d.boot);
		return 1;
	}
	if (test_only) {
		printf("reactord: %s: configuration OK\n", d.conf_path);
		cfg_free(d.boot);
		return 0;
	}
	d.live = d.boot;
	return -1;
}

/* The event loop, and the layers wired to each other: the layers below
 * know nothing above them, so main injects what they call upward. */
static int init_loop(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (dispatch_check() != 0) {
		fprintf(stderr, "reactord: internal error: dispatch table not sorted\n");
		return -1;
	}
	d.base = event_base_new();
	if (!d.base) {
		fprintf(stderr, "reactord: cannot create the event loop\n");
		return -1;
	}
	metrics_init(d.base, PACKAGE_VERSION);
	call_set_base(d.base);
	call_set_lookup(dispatch_find);
	call_set_metadata_decoder(dispatch_decode_metadata);
	call_set_authenticator(auth_authenticate);
	if (auth_configure(d.live) != 0)
		return -1;
	apply_live(d.live);
	LOGI("main", "reactord %s starting (config %s)", PACKAGE_VERSION, d.conf_path);
	return 0;
}

static int start_state_dir(void)
{
	if (mkdir_p(d.boot->state_dir, 0755) != 0) {
		LOGE("main", "state-dir %s: %s", d.boot->state_dir, strerror(errno));
		return -1;
	}
	if (write_pid_file() != 0)
		LOGW("main", "cannot write %s: %s", d.pid_file, strerror(errno));
	return 0;
}

/* Redis and what registers scripts or subscriptions with it. */
static int start_store(void)
{
	char *err = NULL;
	store_on_state(store_state, NULL);
	keys_set_ns(d.boot->redis_prefix);
	if (svc_buckets_init(d.base) != 0) {
		LOGE("main", "buckets: cannot register the Redis scripts");
		return -1;
	}
	if (sched_init() != 0) {
		LOGE("main", "scheduler: cannot register the Redis scripts");
		return -1;
	}
	if (ac_init(d.base) != 0) {
		LOGE("main", "action cache: cannot register the Redis scripts");
		return -1;
	}
	if (master_state_init() != 0) {
		LOGE("main", "master: cannot register the Redis scripts");
		return -1;
	}
	if (inspect_init() != 0) {
		LOGE("main", "inspect: cannot register the Redis scripts");
		return -1;
	}
	sched_watch_init(d.base);
	status_init(d.base, d.boot);
	if (store_start(d.base, d.boot, &err) != 0) {
		LOGE("main", "redis: %s", err);
		free(err);
		return -1;
	}
	return 0;
}

/* Storage, the services, the listeners and the local workers; then the
 * ready timer (ready at the latest after the Redis connect timeout). */
static int start_serving(void)
{
	char *err = NULL;
	if (inst_open_all(d.base, d.boot, &err) != 0) {
		LOGE("main", "storage: %s", err);
		free(err);
		return -1;
	}
	svc_bytestream_init(d.base);
	svc_cas_init(d.base);
	svc_exec_init(d.base);
	svc_bots_init(d.base);
	sched_start(d.base);
	if (server_start(d.base, d.boot, call_accept, NULL, &err) != 0) {
		LOGE("main", "listen: %s", err);
		free(err);
		return -1;
	}
	svc_metrics_init(d.boot);
	if (http_start(d.base, d.boot, &err) != 0) {
		LOGE("main", "http: %s", err);
		free(err);
		return -1;
	}
	if (worker_sup_start(d.base, d.boot, &err) != 0) {
		LOGE("main", "%s", err);
		free(err);
		return -1;
	}
	if (d.boot->master && server_nbound() > 0) {
		char *self = server_self_target();
		int rc = master_start(d.base, d.live->master, server_bound(0), self, &err);
		free(self);
		if (rc != 0) {
			LOGE("main", "%s", err);
			free(err);
			return -1;
		}
	}
	d.ready_ev = evtimer_new(d.base, ready_timeout_cb, NULL);
	int64_t t = d.boot->redis_connect_timeout_us;
	struct timeval tv = {t / 1000000, t % 1000000};
	event_add(d.ready_ev, &tv);
	return 0;
}

static void start_signals(void)
{
	d.sigterm = evsignal_new(d.base, SIGTERM, signal_cb, NULL);
	d.sigint = evsignal_new(d.base, SIGINT, signal_cb, NULL);
	d.sighup = evsignal_new(d.base, SIGHUP, signal_cb, NULL);
	d.grace_ev = evtimer_new(d.base, grace_cb, NULL);
	d.force_ev = evtimer_new(d.base, force_cb, NULL);
	event_add(d.sigterm, NULL);
	event_add(d.sigint, NULL);
	event_add(d.sighup, NULL);
}

static void stop_signals(void)
{
	event_free(d.sigterm);
	event_free(d.sigint);
	event_free(d.sighup);
	event_free(d.grace_ev);
	event_free(d.force_ev);
}

/* Undo start_serving (also after it failed part way). */
static void stop_serving(void)
{
	if (d.ready_ev)
		event_free(d.ready_ev);
	d.ready_ev = NULL;
	master_free();
	worker_sup_shutdown();
	status_shutdown();
	svc_metrics_shutdown();
	http_stop();
	server_stop();
	/* Let closed connections free themselves before Redis goes. */
	event_base_loop(d.base, EVLOOP_NONBLOCK);
	svc_bytestream_shutdown();
	svc_ac_shutdown();
	inst_close_all();
}

/* Undo start_store (also after it failed part way), and the files. */
static void stop_store(void)
{
	svc_buckets_shutdown();
	sched_stop();
	sched_watch_shutdown();
	store_stop();
	if (d.boot->ready_file)
		unlink(d.boot->ready_file);
	if (d.pid_file)
		unlink(d.pid_file);
}

static void free_all(void)
{
	free(d.pid_file);
	metrics_free();
	sdn_free();
	event_base_free(d.base);
	if (d.live != d.boot)
		cfg_free(d.live);
	cfg_free(d.boot);
}

int main(int argc, char **argv)
{
	bool test_only = false;
	sdn_init();
	int rc = parse_args(argc, argv, &test_only);
	if (rc >= 0)
		return rc;
	rc = load_config(test_only);
	if (rc >= 0)
		return rc;
	if (init_loop() != 0)
		return 1;

	rc = 1;
	if (start_state_dir() != 0)
		goto out_base;
	if (start_store() != 0)
		goto out_store;
	if (start_serving() != 0)
		goto out_server;
	start_signals();
	if (store_up())
		serving();
	event_base_dispatch(d.base);
	rc = 0;
	stop_signals();
out_server:
	stop_serving();
out_store:
	stop_store();
out_base:
	free_all();
	LOGI("main", "exit %d", rc);
	return rc;
}
