/*
 * reactorctl.c - the command-line client for people.  Speaks gRPC to
 * reactord through the project's own client library.  Commands so far:
 * capabilities and health; later issues add CAS, execution and builds.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "client.h"
#include "grpc.h"
#include "grpc/health/v1/health.pb-c.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: reactorctl [-s TARGET] [-i INSTANCE] [-T TIMEOUT] COMMAND [ARGS]\n"
		"  -s TARGET    server: HOST:PORT or unix:PATH (default 127.0.0.1:50051,\n"
		"               or $REACTOR_SERVER)\n"
		"  -i INSTANCE  REAPI instance name (default \"\")\n"
		"  -T TIMEOUT   call deadline, e.g. 10s (default 30s)\n"
		"commands:\n"
		"  capabilities          print the server's REAPI capabilities\n"
		"  health [SERVICE]      grpc.health.v1 Check; exit 0 only when SERVING\n"
		"  call PATH             send an empty request to PATH, print the status\n");
}

static int fail(int code, const char *msg)
{
	fprintf(stderr, "reactorctl: %s: %s\n", grpc_code_name(code), msg ? msg : "");
	return code == GRPC_OK ? 0 : 1;
}

static int cmd_capabilities(struct rc_client *cl, const char *instance, int64_t to)
{
	Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_CAPABILITIES_REQUEST__INIT;
	req.instance_name = (char *)instance;
	ProtobufCMessage *out = NULL;
	char *msg = NULL;
	int code = rc_unary(cl, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
			    &req.base, &build__bazel__remote__execution__v2__server_capabilities__descriptor,
			    &out, &msg, to);
	if (code != GRPC_OK) {
		int rv = fail(code, msg);
		free(msg);
		return rv;
	}
	free(msg);
	const Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = (const void *)out;
	if (caps->low_api_version && caps->high_api_version)
		printf("api: %d.%d .. %d.%d\n", caps->low_api_version->major,
		       caps->low_api_version->minor, caps->high_api_version->major,
		       caps->high_api_version->minor);
	const Build__Bazel__Remote__Execution__V2__CacheCapabilities *cc = caps->cache_capabilities;
	if (cc) {
		printf("cache.digest_functions:");
		for (size_t i = 0; i < cc->n_digest_functions; i++) {
			const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
				&build__bazel__remote__execution__v2__digest_function__value__descriptor,
				cc->digest_functions[i]);
			printf(" %s", v ? v->name : "?");
		}
		printf("\ncache.max_batch_total_size_bytes: %lld\n",
		       (long long)cc->max_batch_total_size_bytes);
		printf("cache.action_cache_update_enabled: %s\n",
		       cc->action_cache_update_capabilities &&
				       cc->action_cache_update_capabilities->update_enabled
			       ? "true" : "false");
	}
	if (caps->execution_capabilities)
		printf("execution.exec_enabled: %s\n",
		       caps->execution_capabilities->exec_enabled ? "true" : "false");
	protobuf_c_message_free_unpacked(out, NULL);
	return 0;
}

static int cmd_health(struct rc_client *cl, const char *service, int64_t to)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	ProtobufCMessage *out = NULL;
	char *msg = NULL;
	int code = rc_unary(cl, "/grpc.health.v1.Health/Check", &req.base,
			    &grpc__health__v1__health_check_response__descriptor, &out, &msg, to);
	if (code != GRPC_OK) {
		int rv = fail(code, msg);
		free(msg);
		return rv;
	}
	free(msg);
	const Grpc__Health__V1__HealthCheckResponse *r = (const void *)out;
	const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
		&grpc__health__v1__health_check_response__serving_status__descriptor, r->status);
	printf("%s\n", v ? v->name : "?");
	int rv = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0 : 1;
	protobuf_c_message_free_unpacked(out, NULL);
	return rv;
}

struct raw_done {
	bool done;
	int code;
	char *msg;
};

static void raw_done_cb(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct raw_done *r = arg;
	r->done = true;
	r->code = code;
	r->msg = xstrdup(message);
}

static int cmd_call(struct rc_client *cl, struct event_base *base, const char *path, int64_t to)
{
	struct raw_done r = {0};
	struct rc_call *k = rc_call_start(cl, path, to, NULL, 0, NULL, raw_done_cb, &r);
	if (!k)
		return fail(GRPC_UNAVAILABLE, "connection closed");
	rc_call_send(k, (const uint8_t *)"", 0);
	rc_call_close_send(k);
	while (!r.done)
		event_base_loop(base, EVLOOP_ONCE);
	printf("%s: %s\n", grpc_code_name(r.code), r.msg);
	free(r.msg);
	return r.code == GRPC_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *target = getenv("REACTOR_SERVER");
	const char *instance = "";
	int64_t timeout = 30 * 1000000LL;
	int opt;
	if (!target)
		target = "127.0.0.1:50051";
	while ((opt = getopt(argc, argv, "s:i:T:h")) != -1) {
		switch (opt) {
		case 's': target = optarg; break;
		case 'i': instance = optarg; break;
		case 'T':
			if (parse_duration_us(optarg, &timeout) != 0) {
				fprintf(stderr, "reactorctl: bad timeout \"%s\"\n", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[optind];
	struct event_base *base = event_base_new();
	char *err = NULL;
	struct rc_client *cl = rc_client_connect(base, target, &err);
	if (!cl) {
		fprintf(stderr, "reactorctl: %s\n", err);
		free(err);
		event_base_free(base);
		return 2;
	}
	int rv;
	if (strcmp(cmd, "capabilities") == 0) {
		rv = cmd_capabilities(cl, instance, timeout);
	} else if (strcmp(cmd, "health") == 0) {
		rv = cmd_health(cl, optind + 1 < argc ? argv[optind + 1] : "", timeout);
	} else if (strcmp(cmd, "call") == 0 && optind + 1 < argc) {
		rv = cmd_call(cl, base, argv[optind + 1], timeout);
	} else {
		usage(stderr);
		rv = 2;
	}
	rc_client_free(cl);
	event_base_free(base);
	return rv;
}
