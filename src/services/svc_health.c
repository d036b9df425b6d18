/*
 * svc_health.c - grpc.health.v1.Health: Check, List and Watch.  The server
 * is SERVING while its Redis command connection is up and it is not
 * draining; every service in the dispatch table (and "") shares that state.
 * Watch streams send the current state at once and then every change; a
 * stream whose client stops reading (SVC_STREAM_HIWAT bytes queued) skips
 * changes and sends the state as it then is from on_writable.
 */
#include <stdlib.h>
#include <string.h>

#include "services/dispatch.h"
#include "grpc/health/v1/health.pb-c.h"
#include "core/log.h"
#include "services/svc.h"

#define ST(x) GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__##x

struct watcher {
	struct call *call;
	char *service;
	int last; /* last status sent, -1 none */
	struct watcher *next;
};

static bool serving;
static struct watcher *watchers;

static bool known_service(const char *name)
{
	if (name[0] == '\0')
		return true;
	size_t n;
	const char *const *names = dispatch_services(&n);
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

static int status_of(const char *service)
{
	if (!known_service(service))
		return ST(SERVICE_UNKNOWN);
	return serving ? ST(SERVING) : ST(NOT_SERVING);
}

static void send_status(struct watcher *w)
{
	int st = status_of(w->service);
	if (st == w->last)
		return;
	if (call_pending(w->call) >= SVC_STREAM_HIWAT) {
		call_want_writable(w->call); /* sent from there, if still new */
		return;
	}
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	resp.status = st;
	w->last = st;
	call_send(w->call, &resp.base);
}

void svc_health_set_serving(bool on)
{
	if (on == serving)
		return;
	serving = on;
	LOGI("health", "now %s", on ? "SERVING" : "NOT_SERVING");
	for (struct watcher *w = watchers; w; w = w->next)
		send_status(w);
}

void svc_health_check(struct call *c, const ProtobufCMessage *msg)
{
	const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
	if (!known_service(req->service)) {
		call_finish(c, GRPC_NOT_FOUND, "unknown service \"%s\"", req->service);
		return;
	}
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	resp.status = status_of(req->service);
	call_reply(c, &resp.base);
}

void svc_health_list(struct call *c, const ProtobufCMessage *msg)
{
	(void)msg;
	size_t n;
	const char *const *names = dispatch_services(&n);
	Grpc__Health__V1__HealthListResponse resp = GRPC__HEALTH__V1__HEALTH_LIST_RESPONSE__INIT;
	Grpc__Health__V1__HealthListResponse__StatusesEntry *ents = xcalloc(n + 1, sizeof(*ents));
	Grpc__Health__V1__HealthListResponse__StatusesEntry **ptrs = xcalloc(n + 1, sizeof(*ptrs));
	Grpc__Health__V1__HealthCheckResponse *sts = xcalloc(n + 1, sizeof(*sts));
	for (size_t i = 0; i <= n; i++) {
		grpc__health__v1__health_list_response__statuses_entry__init(&ents[i]);
		grpc__health__v1__health_check_response__init(&sts[i]);
		ents[i].key = (char *)(i == n ? "" : names[i]);
		sts[i].status = status_of(ents[i].key);
		ents[i].value = &sts[i];
		ptrs[i] = &ents[i];
	}
	resp.n_statuses = n + 1;
	resp.statuses = ptrs;
	call_reply(c, &resp.base);
	free(ents);
	free(ptrs);
	free(sts);
}

void svc_health_watch(struct call *c, const ProtobufCMessage *msg)
{
	const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
	struct watcher *w = xcalloc(1, sizeof(*w));
	w->call = c;
	w->service = xstrdup(req->service);
	w->last = -1;
	w->next = watchers;
	watchers = w;
	call_ref(c);
	call_set_data(c, w);
	send_status(w);
}

static void drop_watcher(struct call *c)
{
	struct watcher *w = call_data(c);
	if (!w)
		return;
	for (struct watcher **pp = &watchers; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	call_set_data(c, NULL);
	free(w->service);
	free(w);
	call_unref(c);
}

void svc_health_watch_cancel(struct call *c)
{
	drop_watcher(c);
}

void svc_health_watch_writable(struct call *c)
{
	struct watcher *w = call_data(c);
	if (w)
		send_status(w);
}

void svc_health_shutdown(void)
{
	while (watchers) {
		struct call *c = watchers->call;
		call_ref(c);
		drop_watcher(c);
		call_finish(c, GRPC_UNAVAILABLE, "server shutting down");
		call_unref(c);
	}
}
