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
#include "reactor/admin/v1/admin.pb-c.h"
#include "reactor/buckets/v1/buckets.pb-c.h"
#include "services/auth.h"
#include "services/resname.h"
#include "services/svc.h"

/* ---- method-level authorization -------------------------------------------
 *
 * Each row's .authorize names the role the method needs, checked with the
 * first request message before the handler runs (rpc/call.c), against the
 * instance or bucket the request names:
 *
 *   CAS FindMissingBlobs, BatchReadBlobs, GetTree, ByteStream Read   cas-read
 *   CAS BatchUpdateBlobs, ByteStream Write, QueryWriteStatus         cas-write
 *   ActionCache Get / Update                             ac-read / ac-write
 *   Execute                                                          execute
 *   ListOperations (name = the instance)                execute or ops-admin
 *   Bots (parent, or the instance part of the session name)          bot
 *   Buckets Put, PutBatch (each build's bucket)                      put
 *   Buckets Peek, Search, WatchBuilds (each bucket named)            read
 *   Capabilities, Health                                             anyone
 *
 * What the dispatch cannot see is left to the handlers and the domain
 * (the `owner` work): requests that name an object by id rather than the
 * instance or bucket it lives in.  For those the dispatch only requires
 * the role on at least one instance/bucket, a coarse gate that keeps
 * callers without it out of the domain entirely:
 *
 *   WaitExecution, Get/Wait/Cancel/DeleteOperation  execute or ops-admin
 *     (owner: the operation's instance, and its creator unless ops-admin)
 *   Buckets Get, WatchBuilds without buckets, Search without buckets read
 *   Buckets Lease, Start, Heartbeat(Batch), Succeed, Fail, Reset     lease
 *   Buckets Cancel, CancelBatch, Retry                               put
 *     (owner: the build's bucket; Cancel by its creator or an admin, and
 *      Reset also by an admin)
 *   A malformed ByteStream resource name: the role on any instance; the
 *     handler answers INVALID_ARGUMENT.
 */

/* The string field `name` of m ("" when absent or not a string). */
static const char *str_field(const ProtobufCMessage *m, const char *name)
{
	const ProtobufCFieldDescriptor *f =
		protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
	if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
		return "";
	const char *v;
	memcpy(&v, (const char *)m + f->offset, sizeof v);
	return v ? v : "";
}

static bool need(struct call *c, const char *instance, enum auth_role r)
{
	if (auth_has(c, instance, r))
		return true;
	auth_deny(c, instance, r, NULL);
	return false;
}

static bool need_any(struct call *c, enum auth_role r)
{
	if (auth_has_any(c, r))
		return true;
	auth_deny_any(c, r, NULL);
	return false;
}

static bool need_bucket(struct call *c, const char *bucket, enum auth_bucket_role r)
{
	if (auth_bucket_has(c, bucket, r))
		return true;
	auth_bucket_deny(c, bucket, r, NULL);
	return false;
}

static bool need_bucket_any(struct call *c, enum auth_bucket_role r)
{
	if (auth_bucket_has_any(c, r))
		return true;
	auth_bucket_deny_any(c, r, NULL);
	return false;
}

/* One function per (request field, role): the table stays one line per
 * method. */
#define BY_FIELD(fn, field, role)                                                                  \
	static bool fn(struct call *c, const ProtobufCMessage *m)                                  \
	{                                                                                          \
		return need(c, str_field(m, field), role);                                         \
	}
BY_FIELD(az_cas_read, "instance_name", ROLE_CAS_READ)
BY_FIELD(az_cas_write, "instance_name", ROLE_CAS_WRITE)
BY_FIELD(az_ac_read, "instance_name", ROLE_AC_READ)
BY_FIELD(az_ac_write, "instance_name", ROLE_AC_WRITE)
BY_FIELD(az_execute, "instance_name", ROLE_EXECUTE)
BY_FIELD(az_bot_create, "parent", ROLE_BOT)
/* The Admin service's reads: ops-admin on the instance; GetSummary spans
 * them all, so ops-admin on at least one. */
BY_FIELD(az_admin, "instance_name", ROLE_OPS_ADMIN)
static bool az_admin_any(struct call *c, const ProtobufCMessage *m)
{
	(void)m;
	return need_any(c, ROLE_OPS_ADMIN);
}

/* Operations by name, WaitExecution: execute somewhere, or ops-admin
 * somewhere (an operator who sees and cancels others' operations need
 * not run actions); the handlers check the operation's own instance. */
static bool az_ops_any(struct call *c, const ProtobufCMessage *m)
{
	(void)m;
	if (auth_has_any(c, ROLE_OPS_ADMIN))
		return true;
	return need_any(c, ROLE_EXECUTE);
}

/* ListOperations names the instance: execute or ops-admin there. */
static bool az_list_ops(struct call *c, const ProtobufCMessage *m)
{
	const char *inst = str_field(m, "name");
	if (auth_has(c, inst, ROLE_OPS_ADMIN))
		return true;
	return need(c, inst, ROLE_EXECUTE);
}

/* A bot session name is "{instance}/{uuid}" or "{uuid}". */
static bool az_bot_session(struct call *c, const ProtobufCMessage *m)
{
	const char *name = str_field(m, "name");
	const char *slash = strrchr(name, '/');
	char *inst = xstrndup(name, slash ? (size_t)(slash - name) : 0);
	bool ok = need(c, inst, ROLE_BOT);
	free(inst);
	return ok;
}

static bool by_resource(struct call *c, const ProtobufCMessage *m, bool upload, enum auth_role r)
{
	struct resname rn;
	char *err = NULL;
	if (resname_parse(str_field(m, "resource_name"), upload, &rn, &err) != 0) {
		free(err);
		return need_any(c, r);
	}
	bool ok = need(c, rn.instance, r);
	resname_free(&rn);
	return ok;
}

static bool az_bs_read(struct call *c, const ProtobufCMessage *m)
{
	return by_resource(c, m, false, ROLE_CAS_READ);
}

static bool az_bs_write(struct call *c, const ProtobufCMessage *m)
{
	return by_resource(c, m, true, ROLE_CAS_WRITE);
}

static bool az_put(struct call *c, const ProtobufCMessage *m)
{
	return need_bucket(c, ((const Reactor__Buckets__V1__PutRequest *)m)->bucket, BROLE_PUT);
}

static bool az_put_batch(struct call *c, const ProtobufCMessage *m)
{
	const Reactor__Buckets__V1__PutBatchRequest *req = (const void *)m;
	for (size_t i = 0; i < req->n_builds; i++)
		if (req->builds[i] && !need_bucket(c, req->builds[i]->bucket, BROLE_PUT))
			return false;
	return true;
}

/* read on every bucket named, or on some bucket when none is. */
static bool read_buckets(struct call *c, char **buckets, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!need_bucket(c, buckets[i], BROLE_READ))
			return false;
	return n || need_bucket_any(c, BROLE_READ);
}

static bool az_peek(struct call *c, const ProtobufCMessage *m)
{
	const Reactor__Buckets__V1__PeekRequest *req = (const void *)m;
	return read_buckets(c, req->buckets, req->n_buckets);
}

static bool az_search(struct call *c, const ProtobufCMessage *m)
{
	const Reactor__Buckets__V1__SearchRequest *req = (const void *)m;
	return read_buckets(c, req->buckets, req->n_buckets);
}

static bool az_watch(struct call *c, const ProtobufCMessage *m)
{
	const Reactor__Buckets__V1__WatchBuildsRequest *req = (const void *)m;
	return read_buckets(c, req->buckets, req->n_buckets);
}

#define ANY_BUCKET(fn, role)                                                                       \
	static bool fn(struct call *c, const ProtobufCMessage *m)                                  \
	{                                                                                          \
		(void)m;                                                                           \
		return need_bucket_any(c, role);                                                   \
	}
ANY_BUCKET(az_read_any, BROLE_READ)
ANY_BUCKET(az_lease_any, BROLE_LEASE)
ANY_BUCKET(az_put_any, BROLE_PUT)

/* Cancel: the creator (who needed put) or an admin. */
static bool az_cancel(struct call *c, const ProtobufCMessage *m)
{
	(void)m;
	return auth_bucket_has_any(c, BROLE_ADMIN) || need_bucket_any(c, BROLE_PUT);
}

/* Reset: the master holding the lease, or an admin. */
static bool az_reset(struct call *c, const ProtobufCMessage *m)
{
	(void)m;
	return auth_bucket_has_any(c, BROLE_ADMIN) || need_bucket_any(c, BROLE_LEASE);
}


/* One whole method path per line, for grep. */
/* clang-format off */
static const struct rpc_method table[] = {
	{
		.path = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult",
		.kind = RPC_UNARY,
		.req = &build__bazel__remote__execution__v2__get_action_result_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__action_result__descriptor,
		.on_message = svc_ac_get,
		.authorize = az_ac_read,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult",
		.kind = RPC_UNARY,
		.req = &build__bazel__remote__execution__v2__update_action_result_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__action_result__descriptor,
		.on_message = svc_ac_update,
		.authorize = az_ac_write,
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
		.authorize = az_cas_read,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
		.kind = RPC_UNARY,
		.req = &build__bazel__remote__execution__v2__batch_update_blobs_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
		.on_message = svc_cas_batch_update,
		.on_cancel = svc_cas_batch_update_cancel,
		.authorize = az_cas_write,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
		.kind = RPC_UNARY,
		.req = &build__bazel__remote__execution__v2__find_missing_blobs_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
		.on_message = svc_cas_find_missing,
		.decode = svc_cas_find_missing_decode,
		.on_cancel = svc_cas_find_missing_cancel,
		.authorize = az_cas_read,
	},
	{
		.path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree",
		.kind = RPC_SERVER_STREAM,
		.req = &build__bazel__remote__execution__v2__get_tree_request__descriptor,
		.resp = &build__bazel__remote__execution__v2__get_tree_response__descriptor,
		.on_message = svc_cas_get_tree,
		.on_cancel = svc_cas_get_tree_cancel,
		.on_writable = svc_cas_get_tree_writable,
		.authorize = az_cas_read,
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
		.authorize = az_execute,
	},
	{
		.path = "/build.bazel.remote.execution.v2.Execution/WaitExecution",
		.kind = RPC_SERVER_STREAM,
		.req = &build__bazel__remote__execution__v2__wait_execution_request__descriptor,
		.resp = &google__longrunning__operation__descriptor,
		.on_message = svc_exec_wait,
		.on_cancel = svc_exec_cancel,
		.on_writable = svc_exec_writable,
		.authorize = az_ops_any,
	},
	{
		.path = "/google.bytestream.ByteStream/QueryWriteStatus",
		.kind = RPC_UNARY,
		.req = &google__bytestream__query_write_status_request__descriptor,
		.resp = &google__bytestream__query_write_status_response__descriptor,
		.on_message = svc_bs_query,
		.authorize = az_bs_write,
	},
	{
		.path = "/google.bytestream.ByteStream/Read",
		.kind = RPC_SERVER_STREAM,
		.req = &google__bytestream__read_request__descriptor,
		.resp = &google__bytestream__read_response__descriptor,
		.on_message = svc_bs_read,
		.on_cancel = svc_bs_read_cancel,
		.on_writable = svc_bs_read_writable,
		.authorize = az_bs_read,
	},
	{
		.path = "/google.bytestream.ByteStream/Write",
		.kind = RPC_CLIENT_STREAM,
		.req = &google__bytestream__write_request__descriptor,
		.resp = &google__bytestream__write_response__descriptor,
		.on_message = svc_bs_write,
		.decode = svc_bs_write_decode,
		.on_half_close = svc_bs_write_end,
		.on_cancel = svc_bs_write_cancel,
		.authorize = az_bs_write,
	},
	{
		.path = "/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession",
		.kind = RPC_UNARY,
		.req = &google__devtools__remoteworkers__v1test2__create_bot_session_request__descriptor,
		.resp = &google__devtools__remoteworkers__v1test2__bot_session__descriptor,
		.on_message = svc_bots_create,
		.on_cancel = svc_bots_cancel,
		.authorize = az_bot_create,
	},
	{
		.path = "/google.devtools.remoteworkers.v1test2.Bots/PostBotEventTemp",
		.kind = RPC_UNARY,
		.req = &google__devtools__remoteworkers__v1test2__post_bot_event_temp_request__descriptor,
		.resp = &google__protobuf__empty__descriptor,
		.on_message = svc_bots_post_event,
		.authorize = az_bot_session,
	},
	{
		.path = "/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession",
		.kind = RPC_UNARY,
		.req = &google__devtools__remoteworkers__v1test2__update_bot_session_request__descriptor,
		.resp = &google__devtools__remoteworkers__v1test2__bot_session__descriptor,
		.on_message = svc_bots_update,
		.on_cancel = svc_bots_cancel,
		.authorize = az_bot_session,
	},
	{
		.path = "/google.longrunning.Operations/CancelOperation",
		.kind = RPC_UNARY,
		.req = &google__longrunning__cancel_operation_request__descriptor,
		.resp = &google__protobuf__empty__descriptor,
		.on_message = svc_ops_cancel,
		.authorize = az_ops_any,
	},
	{
		.path = "/google.longrunning.Operations/DeleteOperation",
		.kind = RPC_UNARY,
		.req = &google__longrunning__delete_operation_request__descriptor,
		.resp = &google__protobuf__empty__descriptor,
		.on_message = svc_ops_delete,
		.authorize = az_ops_any,
	},
	{
		.path = "/google.longrunning.Operations/GetOperation",
		.kind = RPC_UNARY,
		.req = &google__longrunning__get_operation_request__descriptor,
		.resp = &google__longrunning__operation__descriptor,
		.on_message = svc_ops_get,
		.authorize = az_ops_any,
	},
	{
		.path = "/google.longrunning.Operations/ListOperations",
		.kind = RPC_UNARY,
		.req = &google__longrunning__list_operations_request__descriptor,
		.resp = &google__longrunning__list_operations_response__descriptor,
		.on_message = svc_ops_list,
		.authorize = az_list_ops,
	},
	{
		.path = "/google.longrunning.Operations/WaitOperation",
		.kind = RPC_UNARY,
		.req = &google__longrunning__wait_operation_request__descriptor,
		.resp = &google__longrunning__operation__descriptor,
		.on_message = svc_ops_wait,
		.on_cancel = svc_exec_cancel,
		.authorize = az_ops_any,
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
		.path = "/reactor.admin.v1.Admin/GetSummary",
		.kind = RPC_UNARY,
		.req = &reactor__admin__v1__get_summary_request__descriptor,
		.resp = &reactor__admin__v1__summary__descriptor,
		.on_message = svc_admin_summary,
		.authorize = az_admin_any,
	},
	{
		.path = "/reactor.admin.v1.Admin/ListBots",
		.kind = RPC_UNARY,
		.req = &reactor__admin__v1__list_bots_request__descriptor,
		.resp = &reactor__admin__v1__list_bots_response__descriptor,
		.on_message = svc_admin_list_bots,
		.authorize = az_admin,
	},
	{
		.path = "/reactor.admin.v1.Admin/ListOperations",
		.kind = RPC_UNARY,
		.req = &reactor__admin__v1__list_operations_request__descriptor,
		.resp = &reactor__admin__v1__list_operations_response__descriptor,
		.on_message = svc_admin_list_operations,
		.authorize = az_admin,
	},
	{
		.path = "/reactor.admin.v1.Admin/ListQueues",
		.kind = RPC_UNARY,
		.req = &reactor__admin__v1__list_queues_request__descriptor,
		.resp = &reactor__admin__v1__list_queues_response__descriptor,
		.on_message = svc_admin_list_queues,
		.authorize = az_admin,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Cancel",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__cancel_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_cancel,
		.authorize = az_cancel,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/CancelBatch",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__cancel_batch_request__descriptor,
		.resp = &reactor__buckets__v1__cancel_batch_response__descriptor,
		.on_message = svc_buckets_cancel_batch,
		.authorize = az_cancel,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Fail",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__fail_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_fail,
		.authorize = az_lease_any,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Get",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__get_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_get,
		.authorize = az_read_any,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Heartbeat",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__heartbeat_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_heartbeat,
		.authorize = az_lease_any,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/HeartbeatBatch",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__heartbeat_batch_request__descriptor,
		.resp = &reactor__buckets__v1__heartbeat_batch_response__descriptor,
		.on_message = svc_buckets_heartbeat_batch,
		.authorize = az_lease_any,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Lease",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__lease_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_lease,
		.authorize = az_lease_any,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Peek",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__peek_request__descriptor,
		.resp = &reactor__buckets__v1__search_response__descriptor,
		.on_message = svc_buckets_peek,
		.authorize = az_peek,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Put",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__put_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_put,
		.authorize = az_put,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/PutBatch",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__put_batch_request__descriptor,
		.resp = &reactor__buckets__v1__put_batch_response__descriptor,
		.on_message = svc_buckets_put_batch,
		.authorize = az_put_batch,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Reset",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__reset_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_reset,
		.authorize = az_reset,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Retry",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__retry_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_retry,
		.authorize = az_put_any,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Search",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__search_request__descriptor,
		.resp = &reactor__buckets__v1__search_response__descriptor,
		.on_message = svc_buckets_search,
		.authorize = az_search,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Start",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__start_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_start,
		.authorize = az_lease_any,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/Succeed",
		.kind = RPC_UNARY,
		.req = &reactor__buckets__v1__succeed_request__descriptor,
		.resp = &reactor__buckets__v1__build_response__descriptor,
		.on_message = svc_buckets_succeed,
		.authorize = az_lease_any,
	},
	{
		.path = "/reactor.buckets.v1.Buckets/WatchBuilds",
		.kind = RPC_SERVER_STREAM,
		.req = &reactor__buckets__v1__watch_builds_request__descriptor,
		.resp = &reactor__buckets__v1__build__descriptor,
		.on_message = svc_buckets_watch,
		.on_cancel = svc_buckets_watch_cancel,
		.on_writable = svc_buckets_watch_writable,
		.authorize = az_watch,
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
