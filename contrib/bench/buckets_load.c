/*
 * buckets_load.c - load generator for contrib/bench/buckets.sh: whole build
 * lifecycles (Put -> Lease -> Start -> Succeed) against reactord's Buckets
 * service, through the project's own gRPC client on one event loop.
 *
 *   buckets_load TARGET CLIENTS DEPTH SECONDS [BUCKET]
 *
 * CLIENTS connections, each with DEPTH lifecycles in flight; every step is
 * sent when the previous one answered.  New lifecycles start until SECONDS
 * have passed; the ones in flight then finish.  Prints one line:
 *   lifecycles=N seconds=S per_sec=R errors=E p50_ms=X p99_ms=Y
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/client.h"
#include "rpc/grpc.h"
#include "reactor/buckets/v1/buckets.pb-c.h"
#include "core/util.h"

#define PFX "/reactor.buckets.v1.Buckets/"

struct life {
	struct rc_client *cl;
	int step; /* 0 put, 1 lease, 2 start, 3 succeed */
	int64_t id, key, t0;
	uint8_t *resp;
	size_t resp_len;
};

static struct {
	struct event_base *base;
	const char *bucket;
	int64_t end_mono;
	long done, errors, in_flight;
	int64_t *lat;
	size_t nlat, cap;
	bool stopping;
} g;

static const char params[] = "{\"builder_name\":\"linux-rel\",\"properties\":{\"revision\":"
			     "\"3f2a9c1d5e7b8a6c4d2e0f1a3b5c7d9e1f2a4b6c\",\"repository\":"
			     "\"https://example.org/src.git\",\"clobber\":false}}";

static void issue(struct life *l);

static void on_msg(struct rc_call *call, const uint8_t *msg, size_t len, void *arg)
{
	struct life *l = arg;
	(void)call;
	free(l->resp);
	l->resp = xmalloc(len ? len : 1);
	memcpy(l->resp, msg, len);
	l->resp_len = len;
}

static void finish_life(struct life *l, bool ok)
{
	if (ok) {
		g.done++;
		if (g.nlat == g.cap) {
			g.cap = g.cap ? g.cap * 2 : 4096;
			g.lat = xrealloc(g.lat, g.cap * sizeof *g.lat);
		}
		g.lat[g.nlat++] = mono_us() - l->t0;
	} else {
		g.errors++;
	}
	if (mono_us() < g.end_mono && rc_client_alive(l->cl)) {
		l->step = 0;
		issue(l);
		return;
	}
	free(l->resp);
	free(l);
	if (--g.in_flight == 0)
		event_base_loopbreak(g.base);
}

static void on_done(struct rc_call *call, int code, const char *message, void *arg)
{
	struct life *l = arg;
	(void)call;
	Reactor__Buckets__V1__BuildResponse *r = NULL;
	if (code == GRPC_OK && l->resp)
		r = reactor__buckets__v1__build_response__unpack(NULL, l->resp_len, l->resp);
	free(l->resp);
	l->resp = NULL;
	if (!r || !r->build) {
		if (g.errors < 5)
			fprintf(stderr, "buckets_load: step %d: %s %s\n", l->step,
				code == GRPC_OK ? "error" : grpc_code_name(code),
				r && r->error ? r->error->message
				: message     ? message
					      : "");
		if (r)
			reactor__buckets__v1__build_response__free_unpacked(r, NULL);
		finish_life(l, false);
		return;
	}
	if (l->step == 0)
		l->id = r->build->id;
	if (l->step == 1)
		l->key = r->build->lease_key;
	reactor__buckets__v1__build_response__free_unpacked(r, NULL);
	if (++l->step == 4) {
		finish_life(l, true);
		return;
	}
	issue(l);
}

static void send_msg(struct life *l, const char *method, const ProtobufCMessage *m)
{
	char path[96];
	snprintf(path, sizeof path, PFX "%s", method);
	struct rc_call *k = rc_call_start(l->cl, path, 30000000, NULL, 0, on_msg, on_done, l);
	if (!k) {
		g.errors++;
		if (--g.in_flight == 0)
			event_base_loopbreak(g.base);
		free(l);
		return;
	}
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = xmalloc(n ? n : 1);
	protobuf_c_message_pack(m, buf);
	rc_call_send(k, buf, n);
	free(buf);
	rc_call_close_send(k);
}

static void issue(struct life *l)
{
	static char *tags[] = {"buildset:bench", "user_agent:buckets_load"};
	switch (l->step) {
	case 0: {
		Reactor__Buckets__V1__PutRequest r = REACTOR__BUCKETS__V1__PUT_REQUEST__INIT;
		r.bucket = (char *)g.bucket;
		r.parameters_json = (char *)params;
		r.tags = tags;
		r.n_tags = 2;
		l->t0 = mono_us();
		send_msg(l, "Put", &r.base);
		break;
	}
	case 1: {
		Reactor__Buckets__V1__LeaseRequest r = REACTOR__BUCKETS__V1__LEASE_REQUEST__INIT;
		r.id = l->id;
		r.leasee = "bench";
		send_msg(l, "Lease", &r.base);
		break;
	}
	case 2: {
		Reactor__Buckets__V1__StartRequest r = REACTOR__BUCKETS__V1__START_REQUEST__INIT;
		r.id = l->id;
		r.lease_key = l->key;
		r.url = "http://ci.example.org/b/1";
		send_msg(l, "Start", &r.base);
		break;
	}
	default: {
		Reactor__Buckets__V1__SucceedRequest r =
			REACTOR__BUCKETS__V1__SUCCEED_REQUEST__INIT;
		r.id = l->id;
		r.lease_key = l->key;
		r.result_details_json = "{\"properties\":{\"got_revision\":\"3f2a9c1d\"}}";
		send_msg(l, "Succeed", &r.base);
		break;
	}
	}
}

/* rc_client_connect leaves Nagle on, which stalls small request frames
 * behind delayed ACKs: connect here with TCP_NODELAY ("host:port", IPv4). */
static struct rc_client *connect_nodelay(const char *target)
{
	char host[64];
	const char *colon = strrchr(target, ':');
	if (!colon || (size_t)(colon - target) >= sizeof host)
		return NULL;
	memcpy(host, target, (size_t)(colon - target));
	host[colon - target] = '\0';
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)atoi(colon + 1))};
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return NULL;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	evutil_make_socket_nonblocking(fd);
	struct bufferevent *bev = bufferevent_socket_new(g.base, fd, BEV_OPT_CLOSE_ON_FREE);
	return rc_client_from_bev(g.base, bev, target);
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: buckets_load TARGET CLIENTS DEPTH SECONDS [BUCKET]\n");
		return 2;
	}
	int clients = atoi(argv[2]), depth = atoi(argv[3]);
	double secs = atof(argv[4]);
	g.bucket = argc > 5 ? argv[5] : "bench";
	g.base = event_base_new();
	struct rc_client **cl = xcalloc((size_t)clients, sizeof *cl);
	for (int i = 0; i < clients; i++) {
		cl[i] = connect_nodelay(argv[1]);
		if (!cl[i]) {
			fprintf(stderr, "buckets_load: cannot connect to %s\n", argv[1]);
			return 1;
		}
	}
	int64_t t0 = mono_us();
	g.end_mono = t0 + (int64_t)(secs * 1e6);
	for (int i = 0; i < clients; i++) {
		for (int j = 0; j < depth; j++) {
			struct life *l = xcalloc(1, sizeof *l);
			l->cl = cl[i];
			g.in_flight++;
			issue(l);
		}
	}
	event_base_dispatch(g.base);
	double el = (double)(mono_us() - t0) / 1e6;
	qsort(g.lat, g.nlat, sizeof *g.lat, cmp64);
	double p50 = g.nlat ? (double)g.lat[g.nlat / 2] / 1000 : 0;
	double p99 = g.nlat ? (double)g.lat[g.nlat * 99 / 100] / 1000 : 0;
	printf("lifecycles=%ld seconds=%.2f per_sec=%.0f errors=%ld p50_ms=%.2f p99_ms=%.2f\n",
	       g.done, el, (double)g.done / el, g.errors, p50, p99);
	for (int i = 0; i < clients; i++)
		rc_client_free(cl[i]);
	free(cl);
	free(g.lat);
	event_base_free(g.base);
	return g.errors ? 1 : 0;
}
