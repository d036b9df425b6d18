/*
 * stall_probe.c - the prober of contrib/bench/stall.sh: calls
 * grpc.health.v1.Health/Check on a connection of its own, one call at a
 * time with a 2 ms pause between a reply and the next call, until SIGTERM;
 * then prints "worst_ms p99_ms calls" of the round trips.
 *
 *   stall_probe TARGET READY-FILE
 *
 * The READY-FILE is created after the first call has succeeded.  It runs on
 * the project's own gRPC client (one libevent loop, no threads) so that
 * what it measures is reactord's loop, not a Python runtime sharing a CPU
 * with the load: its own overhead per call is a few microseconds.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/log.h"
#include "core/util.h"
#include "rpc/client.h"
#include "rpc/grpc.h"

#define PROBE_GAP_US 2000
#define HEALTH_CHECK "/grpc.health.v1.Health/Check"

static struct {
	struct event_base *base;
	struct rc_client *cl;
	struct event *gap, *term;
	const char *ready;
	int64_t t0;
	int64_t *lat;
	size_t n, cap;
	bool stop;
} g;

static void probe_start(void);

static void on_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k, (void)msg, (void)len, (void)arg;
}

static void on_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k, (void)arg;
	int64_t dt = mono_us() - g.t0;
	if (code != GRPC_OK) {
		fprintf(stderr, "stall_probe: Health/Check: status %d: %s\n", code,
			message ? message : "");
		exit(1);
	}
	if (g.ready) {
		FILE *f = fopen(g.ready, "w");
		if (!f) {
			perror(g.ready);
			exit(1);
		}
		fclose(f);
		g.ready = NULL; /* the first call only warms the connection up */
	} else {
		if (g.n == g.cap)
			g.lat = xrealloc(g.lat,
					 (g.cap = g.cap ? g.cap * 2 : 4096) * sizeof(*g.lat));
		g.lat[g.n++] = dt;
	}
	if (g.stop) {
		event_base_loopbreak(g.base);
		return;
	}
	static const struct timeval gap = {0, PROBE_GAP_US};
	evtimer_add(g.gap, &gap);
}

static void probe_start(void)
{
	g.t0 = mono_us();
	struct rc_call *k =
		rc_call_start(g.cl, HEALTH_CHECK, 60 * 1000000LL, NULL, 0, on_msg, on_done, NULL);
	if (!k) {
		fprintf(stderr, "stall_probe: the connection is closed\n");
		exit(1);
	}
	/* HealthCheckRequest{service: ""} is the empty message. */
	rc_call_send(k, (const uint8_t *)"", 0);
	rc_call_close_send(k);
}

static void on_gap(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	if (g.stop)
		event_base_loopbreak(g.base);
	else
		probe_start();
}

static void on_term(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	g.stop = true; /* the call in flight finishes, then the loop ends */
	if (!evtimer_pending(g.gap, NULL))
		return;
	evtimer_del(g.gap);
	event_base_loopbreak(g.base);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: stall_probe TARGET READY-FILE\n");
		return 2;
	}
	log_set_level(LOG_WARN);
	g.base = event_base_new();
	char *err = NULL;
	g.cl = rc_client_connect(g.base, argv[1], &err);
	if (!g.cl) {
		fprintf(stderr, "stall_probe: %s\n", err);
		return 1;
	}
	g.ready = argv[2];
	g.gap = evtimer_new(g.base, on_gap, NULL);
	g.term = evsignal_new(g.base, SIGTERM, on_term, NULL);
	evsignal_add(g.term, NULL);
	probe_start();
	event_base_dispatch(g.base);
	if (g.n == 0) {
		printf("? ? 0\n");
		return 0;
	}
	qsort(g.lat, g.n, sizeof(*g.lat), cmp_i64);
	printf("%.1f %.1f %zu\n", g.lat[g.n - 1] / 1000.0, g.lat[(size_t)(g.n * 0.99)] / 1000.0,
	       g.n);
	return 0;
}
