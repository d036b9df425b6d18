/*
 * dispatch.c - the RPC dispatch table.  One static array of rows with
 * designated initializers (a row names only what it has), sorted by method
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

/* One whole method path per line, for grep. */
/* clang-format off */
static const struct rpc_method table[] = {
	{
		.path = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult",
		.kind = RPC_UNARY,
		.req = &build__bazel__remote__execution__v2__get_action_result_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__action_result__descriptor,
		.on_message = svc_ac_get,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult",
		.kind = RPC_UNARY,
		.req = &build__bazel__remote__execution__v2__update_action_result_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__action_result__descriptor,
		.on_message = svc_ac_update,
	},
	{
		.path = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
		.kind = RPC_UNARY,
		.req = &build__bazel__remote__execution__v2__get_capabilities_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__server_capabilities__descriptor,
		.on_message = svc_capabilities_get,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs",
		.kind = RPC_UNARY,
		.req = &build__bazel__remote__execution__v2__batch_read_blobs_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__batch_read_blobs_response__descriptor,
		.on_message = svc_cas_batch_read,
		.on_cancel = svc_cas_batch_read_cancel,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
		.kind = RPC_UNARY,
		.req = &build__bazel__remote__execution__v2__batch_update_blobs_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
		.on_message = svc_cas_batch_update,
		.on_cancel = svc_cas_batch_update_cancel,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
		.kind = RPC_UNARY,
		.req = &build__bazel__remote__execution__v2__find_missing_blobs_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
		.on_message = svc_cas_find_missing,
		.on_cancel = svc_cas_find_missing_cancel,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree",
		.kind = RPC_SERVER_STREAM,
		.req = &build__bazel__remote__execution__v2__get_tree_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__get_tree_response__descriptor,
		.on_message = svc_cas_get_tree,
		.on_cancel = svc_cas_get_tree_cancel,
		.on_writable = svc_cas_get_tree_writable,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/SpliceBlob",
		.kind = RPC_UNARY,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/SplitBlob",
		.kind = RPC_UNARY,
	},
	{
		.path = "/build.bazel.remote.execution.v2.Execution/Execute",
		.kind = RPC_SERVER_STREAM,
		.req = &build__bazel__remote__execution__v2__execute_request__descriptor,
		.resp = &google__longrunning__operation__descriptor,
		.on_message = svc_exec_execute,
		.on_cancel = svc_exec_cancel,
		.on_writable = svc_exec_writable,
	},
	{
		.path = "/build.bazel.remote.execution.v2.Execution/WaitExecution",
		.kind = RPC_SERVER_STREAM,
		.req = &build__bazel__remote__execution__v2__wait_execution_request__descriptor,
		.resp = &google__longrunning__operation__descriptor,
		.on_message = svc_exec_wait,
		.on_cancel = svc_exec_cancel,
		.on_writable = svc_exec_writable,
	},
	{
		.path = "/google.bytestream.ByteStream/QueryWriteStatus",
		.kind = RPC_UNARY,
		.req = &google__bytestream__query_write_status_request__descriptor,
		.resp = &google__bytestream__query_write_status_response__descriptor,
		.on_message = svc_bs_query,
	},
	{
		.path = "/google.bytestream.ByteStream/Read",
		.kind = RPC_SERVER_STREAM,
		.req = &google__bytestream__read_request__descriptor,
		.resp = &google__bytestream__read_response__descriptor,
		.on_message = svc_bs_read,
		.on_cancel = svc_bs_read_cancel,
		.on_writable = svc_bs_read_writable,
	},
	{
		.path = "/google.bytestream.ByteStream/Write",
		.kind = RPC_CLIENT_STREAM,
		.req = &google__bytestream__write_request__descriptor,
		.resp = &google__bytestream__write_response__descriptor,
		.on_message = svc_bs_write,
		.on_half_close = svc_bs_write_end,
		.on_cancel = svc_bs_write_cancel,
	},
	{
		.path = "/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession",
		.kind = RPC_UNARY,
		.req = &google__devtools__remoteworkers__v1test2__create_bot_session_request__descriptor,
		.resp = &google__devtools__remoteworkers__v1test2__bot_session__descriptor,
		.on_message = svc_bots_create,
		.on_cancel = svc_bots_cancel,
	},
	{
		.path = "/google.devtools.remoteworkers.v1test2.Bots/PostBotEventTemp",
		.kind = RPC_UNARY,
		.req = &google__devtools__remoteworkers__v1test2__post_bot_event_temp_request__descriptor,
		.resp = &google__protobuf__empty__descriptor,
		.on_message = svc_bots_post_event,
	},
	{
		.path = "/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession",
		.kind = RPC_UNARY,
		.req = &google__devtools__remoteworkers__v1test2__update_bot_session_request__descriptor,
		.resp = &google__devtools__remoteworkers__v1test2__bot_session__descriptor,
		.on_message = svc_bots_update,
		.on_cancel = svc_bots_cancel,
	},
	{
		.path = "/google.longrunning.Operations/CancelOperation",
		.kind = RPC_UNARY,
		.req = &google__longrunning__cancel_operation_request__descriptor,
		.resp = &google__protobuf__empty__descriptor,
		.on_message = svc_ops_cancel,
	},
	{
		.path = "/google.longrunning.Operations/DeleteOperation",
		.kind = RPC_UNARY,
		.req = &google__longrunning__delete_operation_request__descriptor,
		.resp = &google__protobuf__empty__descriptor,
		.on_message = svc_ops_delete,
	},
	{
		.path = "/google.longrunning.Operations/GetOperation",
		.kind = RPC_UNARY,
		.req = &google__longrunning__get_operation_request__descriptor,
		.resp = &google__longrunning__operation__descriptor,
		.on_message = svc_ops_get,
	},
	{
		.path = "/google.longrunning.Operations/ListOperations",
		.kind = RPC_UNARY,
		.req = &google__longrunning__list_operations_request__descriptor,
		.resp = &google__longrunning__list_operations_response__descriptor,
		.on_message = svc_ops_list,
	},
	{
		.path = "/google.longrunning.Operations/WaitOperation",
		.kind = RPC_UNARY,
		.req = &google__longrunning__wait_operation_request__descriptor,
		.resp = &google__longrunning__operation__descriptor,
		.on_message = svc_ops_wait,
		.on_cancel = svc_exec_cancel,
	},
	{
		.path = "/grpc.health.v1.Health/Check",
		.kind = RPC_UNARY,
		.req = &grpc__health__v1__health_check_request__descriptor,
		.resp = &grpc__health__v1__health_check_response__descriptor,
		.on_message = svc_health_check,
	},
	{
		.path = "/grpc.health.v1.Health/List",
		.kind = RPC_UNARY,
		.req = &grpc__health__v1__health_list_request__descriptor,
		.resp = &grpc__health__v1__health_list_response__descriptor,
		.on_message = svc_health_list,
	},
	{
		.path = "/grpc.health.v1.Health/Watch",
		.kind = RPC_SERVER_STREAM,
		.req = &grpc__health__v1__health_check_request__descriptor,
		.resp = &grpc__health__v1__health_check_response__descriptor,
		.on_message = svc_health_watch,
		.on_cancel = svc_health_watch_cancel,
		.on_writable = svc_health_watch_writable,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Cancel",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__cancel_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_cancel,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/CancelBatch",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__cancel_batch_request__descriptor,
		.resp = &reactor__buckets__v1__cancel_batch_response__descriptor,
		.on_message = svc_buckets_cancel_batch,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Fail",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__fail_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_fail,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Get",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__get_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_get,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Heartbeat",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__heartbeat_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_heartbeat,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/HeartbeatBatch",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__heartbeat_batch_request__descriptor,
		.resp = &reactor__buckets__v1__heartbeat_batch_response__descriptor,
		.on_message = svc_buckets_heartbeat_batch,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Lease",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__lease_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_lease,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Peek",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__peek_request__descriptor,
		.resp = &reactor__buckets__v1__search_response__descriptor,
		.on_message = svc_buckets_peek,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Put",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__put_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_put,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/PutBatch",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__put_batch_request__descriptor,
		.resp = &reactor__buckets__v1__put_batch_response__descriptor,
		.on_message = svc_buckets_put_batch,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Reset",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__reset_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_reset,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Retry",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__retry_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_retry,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Search",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__search_request__descriptor,
		.resp = &reactor__buckets__v1__search_response__descriptor,
		.on_message = svc_buckets_search,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Start",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__start_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_start,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Succeed",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__succeed_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_succeed,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/WatchBuilds",
		.kind = RPC_SERVER_STREAM,
		.req = &reactor__buckets__v1__watch_builds_request__descriptor,
		.resp = &reactor__buckets__v1__build__descriptor,
		.on_message = svc_buckets_watch,
		.on_cancel = svc_buckets_watch_cancel,
		.on_writable = svc_buckets_watch_writable,
	},
};
/* clang-format on */

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
