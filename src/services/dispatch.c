/*
 * dispatch.c - the RPC dispatch table.  One static array, sorted by method
 * path (strcmp order, checked at start-up and in the unit tests), searched
 * with bsearch.  Entries without a handler are methods of the protocols we
 * serve whose issue has not landed yet: the call layer answers them
 * UNIMPLEMENTED, naming the method.
 */
#include "services/dispatch.h"

#include <stdlib.h>
#include <string.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "google/devtools/remoteworkers/v1test2/bots.pb-c.h"
#include "google/longrunning/operations.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "reactor/buckets/v1/buckets.pb-c.h"
#include "services/svc.h"

static const struct rpc_method table[] = {
	{"/build.bazel.remote.execution.v2.ActionCache/GetActionResult", RPC_UNARY,
	 &build__bazel__remote__execution__v2__get_action_result_request__descriptor,
	 &build__bazel__remote__execution__v2__action_result__descriptor, svc_ac_get, NULL, NULL,
	 NULL},
	{"/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult", RPC_UNARY,
	 &build__bazel__remote__execution__v2__update_action_result_request__descriptor,
	 &build__bazel__remote__execution__v2__action_result__descriptor, svc_ac_update, NULL, NULL,
	 NULL},
	{"/build.bazel.remote.execution.v2.Capabilities/GetCapabilities", RPC_UNARY,
	 &build__bazel__remote__execution__v2__get_capabilities_request__descriptor,
	 &build__bazel__remote__execution__v2__server_capabilities__descriptor,
	 svc_capabilities_get, NULL, NULL, NULL},
	{"/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs", RPC_UNARY,
	 &build__bazel__remote__execution__v2__batch_read_blobs_request__descriptor,
	 &build__bazel__remote__execution__v2__batch_read_blobs_response__descriptor,
	 svc_cas_batch_read, NULL, NULL, NULL},
	{"/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs", RPC_UNARY,
	 &build__bazel__remote__execution__v2__batch_update_blobs_request__descriptor,
	 &build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
	 svc_cas_batch_update, NULL, svc_cas_batch_update_cancel, NULL},
	{"/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs", RPC_UNARY,
	 &build__bazel__remote__execution__v2__find_missing_blobs_request__descriptor,
	 &build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
	 svc_cas_find_missing, NULL, NULL, NULL},
	{"/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree", RPC_SERVER_STREAM,
	 &build__bazel__remote__execution__v2__get_tree_request__descriptor,
	 &build__bazel__remote__execution__v2__get_tree_response__descriptor, svc_cas_get_tree,
	 NULL, NULL, NULL},
	{"/build.bazel.remote.execution.v2.ContentAddressableStorage/SpliceBlob", RPC_UNARY, NULL,
	 NULL, NULL, NULL, NULL, NULL},
	{"/build.bazel.remote.execution.v2.ContentAddressableStorage/SplitBlob", RPC_UNARY, NULL,
	 NULL, NULL, NULL, NULL, NULL},
	{"/build.bazel.remote.execution.v2.Execution/Execute", RPC_SERVER_STREAM,
	 &build__bazel__remote__execution__v2__execute_request__descriptor,
	 &google__longrunning__operation__descriptor, svc_exec_execute, NULL, svc_exec_cancel,
	 NULL},
	{"/build.bazel.remote.execution.v2.Execution/WaitExecution", RPC_SERVER_STREAM,
	 &build__bazel__remote__execution__v2__wait_execution_request__descriptor,
	 &google__longrunning__operation__descriptor, svc_exec_wait, NULL, svc_exec_cancel, NULL},
	{"/google.bytestream.ByteStream/QueryWriteStatus", RPC_UNARY,
	 &google__bytestream__query_write_status_request__descriptor,
	 &google__bytestream__query_write_status_response__descriptor, svc_bs_query, NULL, NULL,
	 NULL},
	{"/google.bytestream.ByteStream/Read", RPC_SERVER_STREAM,
	 &google__bytestream__read_request__descriptor,
	 &google__bytestream__read_response__descriptor, svc_bs_read, NULL, svc_bs_read_cancel,
	 svc_bs_read_writable},
	{"/google.bytestream.ByteStream/Write", RPC_CLIENT_STREAM,
	 &google__bytestream__write_request__descriptor,
	 &google__bytestream__write_response__descriptor, svc_bs_write, svc_bs_write_end,
	 svc_bs_write_cancel, NULL},
	{"/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession", RPC_UNARY,
	 &google__devtools__remoteworkers__v1test2__create_bot_session_request__descriptor,
	 &google__devtools__remoteworkers__v1test2__bot_session__descriptor, svc_bots_create, NULL,
	 svc_bots_cancel, NULL},
	{"/google.devtools.remoteworkers.v1test2.Bots/PostBotEventTemp", RPC_UNARY,
	 &google__devtools__remoteworkers__v1test2__post_bot_event_temp_request__descriptor,
	 &google__protobuf__empty__descriptor, svc_bots_post_event, NULL, NULL, NULL},
	{"/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession", RPC_UNARY,
	 &google__devtools__remoteworkers__v1test2__update_bot_session_request__descriptor,
	 &google__devtools__remoteworkers__v1test2__bot_session__descriptor, svc_bots_update, NULL,
	 svc_bots_cancel, NULL},
	{"/google.longrunning.Operations/CancelOperation", RPC_UNARY,
	 &google__longrunning__cancel_operation_request__descriptor,
	 &google__protobuf__empty__descriptor, svc_ops_cancel, NULL, NULL, NULL},
	{"/google.longrunning.Operations/DeleteOperation", RPC_UNARY,
	 &google__longrunning__delete_operation_request__descriptor,
	 &google__protobuf__empty__descriptor, svc_ops_delete, NULL, NULL, NULL},
	{"/google.longrunning.Operations/GetOperation", RPC_UNARY,
	 &google__longrunning__get_operation_request__descriptor,
	 &google__longrunning__operation__descriptor, svc_ops_get, NULL, NULL, NULL},
	{"/google.longrunning.Operations/ListOperations", RPC_UNARY,
	 &google__longrunning__list_operations_request__descriptor,
	 &google__longrunning__list_operations_response__descriptor, svc_ops_list, NULL, NULL,
	 NULL},
	{"/google.longrunning.Operations/WaitOperation", RPC_UNARY,
	 &google__longrunning__wait_operation_request__descriptor,
	 &google__longrunning__operation__descriptor, svc_ops_wait, NULL, svc_exec_cancel, NULL},
	{"/grpc.health.v1.Health/Check", RPC_UNARY,
	 &grpc__health__v1__health_check_request__descriptor,
	 &grpc__health__v1__health_check_response__descriptor, svc_health_check, NULL, NULL, NULL},
	{"/grpc.health.v1.Health/List", RPC_UNARY,
	 &grpc__health__v1__health_list_request__descriptor,
	 &grpc__health__v1__health_list_response__descriptor, svc_health_list, NULL, NULL, NULL},
	{"/grpc.health.v1.Health/Watch", RPC_SERVER_STREAM,
	 &grpc__health__v1__health_check_request__descriptor,
	 &grpc__health__v1__health_check_response__descriptor, svc_health_watch, NULL,
	 svc_health_watch_cancel, NULL},
	{"/reactor.buckets.v1.Buckets/Cancel", RPC_UNARY,
	 &reactor__buckets__v1__cancel_request__descriptor,
	 &reactor__buckets__v1__build_response__descriptor, svc_buckets_cancel, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/CancelBatch", RPC_UNARY,
	 &reactor__buckets__v1__cancel_batch_request__descriptor,
	 &reactor__buckets__v1__cancel_batch_response__descriptor, svc_buckets_cancel_batch, NULL,
	 NULL, NULL},
	{"/reactor.buckets.v1.Buckets/Fail", RPC_UNARY,
	 &reactor__buckets__v1__fail_request__descriptor,
	 &reactor__buckets__v1__build_response__descriptor, svc_buckets_fail, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/Get", RPC_UNARY,
	 &reactor__buckets__v1__get_request__descriptor,
	 &reactor__buckets__v1__build_response__descriptor, svc_buckets_get, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/Heartbeat", RPC_UNARY,
	 &reactor__buckets__v1__heartbeat_request__descriptor,
	 &reactor__buckets__v1__build_response__descriptor, svc_buckets_heartbeat, NULL, NULL,
	 NULL},
	{"/reactor.buckets.v1.Buckets/HeartbeatBatch", RPC_UNARY,
	 &reactor__buckets__v1__heartbeat_batch_request__descriptor,
	 &reactor__buckets__v1__heartbeat_batch_response__descriptor, svc_buckets_heartbeat_batch,
	 NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/Lease", RPC_UNARY,
	 &reactor__buckets__v1__lease_request__descriptor,
	 &reactor__buckets__v1__build_response__descriptor, svc_buckets_lease, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/Peek", RPC_UNARY,
	 &reactor__buckets__v1__peek_request__descriptor,
	 &reactor__buckets__v1__search_response__descriptor, svc_buckets_peek, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/Put", RPC_UNARY,
	 &reactor__buckets__v1__put_request__descriptor,
	 &reactor__buckets__v1__build_response__descriptor, svc_buckets_put, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/PutBatch", RPC_UNARY,
	 &reactor__buckets__v1__put_batch_request__descriptor,
	 &reactor__buckets__v1__put_batch_response__descriptor, svc_buckets_put_batch, NULL, NULL,
	 NULL},
	{"/reactor.buckets.v1.Buckets/Reset", RPC_UNARY,
	 &reactor__buckets__v1__reset_request__descriptor,
	 &reactor__buckets__v1__build_response__descriptor, svc_buckets_reset, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/Retry", RPC_UNARY,
	 &reactor__buckets__v1__retry_request__descriptor,
	 &reactor__buckets__v1__build_response__descriptor, svc_buckets_retry, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/Search", RPC_UNARY,
	 &reactor__buckets__v1__search_request__descriptor,
	 &reactor__buckets__v1__search_response__descriptor, svc_buckets_search, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/Start", RPC_UNARY,
	 &reactor__buckets__v1__start_request__descriptor,
	 &reactor__buckets__v1__build_response__descriptor, svc_buckets_start, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/Succeed", RPC_UNARY,
	 &reactor__buckets__v1__succeed_request__descriptor,
	 &reactor__buckets__v1__build_response__descriptor, svc_buckets_succeed, NULL, NULL, NULL},
	{"/reactor.buckets.v1.Buckets/WatchBuilds", RPC_SERVER_STREAM,
	 &reactor__buckets__v1__watch_builds_request__descriptor,
	 &reactor__buckets__v1__build__descriptor, svc_buckets_watch, NULL,
	 svc_buckets_watch_cancel, NULL},
};

static int cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct rpc_method *)elem)->path);
}

const struct rpc_method *dispatch_find(const char *path)
{
	return bsearch(path, table, ARRAY_LEN(table), sizeof(table[0]), cmp);
}

#define REQMETA_HEADER "build.bazel.remote.execution.v2.requestmetadata-bin"

void dispatch_decode_metadata(const struct call *c, struct call_log_fields *out)
{
	size_t len;
	const char *rm = call_metadata(c, REQMETA_HEADER, &len);
	if (!rm)
		return;
	Build__Bazel__Remote__Execution__V2__RequestMetadata *meta =
		build__bazel__remote__execution__v2__request_metadata__unpack(
			&call_pb_allocator, len, (const uint8_t *)rm);
	if (!meta)
		return;
	if (meta->tool_invocation_id && *meta->tool_invocation_id)
		out->invocation_id = xstrdup(meta->tool_invocation_id);
	build__bazel__remote__execution__v2__request_metadata__free_unpacked(meta,
									     &call_pb_allocator);
}

int dispatch_check(void)
{
	for (size_t i = 1; i < ARRAY_LEN(table); i++)
		if (strcmp(table[i - 1].path, table[i].path) >= 0)
			return -1;
	return 0;
}

const char *const *dispatch_services(size_t *n)
{
	static const char *names[ARRAY_LEN(table)];
	static size_t count;
	if (!count) {
		for (size_t i = 0; i < ARRAY_LEN(table); i++) {
			const char *p = table[i].path + 1;
			const char *slash = strchr(p, '/');
			size_t len = (size_t)(slash - p);
			if (count && strlen(names[count - 1]) == len &&
			    strncmp(names[count - 1], p, len) == 0)
				continue;
			names[count++] = xstrndup(p, len);
		}
	}
	*n = count;
	return names;
}
