/*
 * svc_capabilities.c - build.bazel.remote.execution.v2.Capabilities.
 * Advertises only what this server really does: SHA-256, the v2 API range
 * we implement, the batch limit that fits under max-recv-message-size, and
 * no compressors beyond identity.  Execution is advertised per instance
 * (execution: true), with the scheduler's priority range and the platform
 * properties the instance matches on.
 */
#include <stdlib.h>
#include <string.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "build/bazel/semver/semver.pb-c.h"
#include "core/cfg.h"
#include "services/inst.h"
#include "domain/sched.h"
#include "proto/pb.h"
#include "services/svc.h"

void svc_capabilities_get(struct call *c, const ProtobufCMessage *msg)
{
	const Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	if (!in)
		return;
	Build__Bazel__Remote__Execution__V2__DigestFunction__Value digests[] = {
		REV2(DIGEST_FUNCTION__VALUE__SHA256)};
	Build__Bazel__Remote__Execution__V2__ActionCacheUpdateCapabilities acu =
		REV2(ACTION_CACHE_UPDATE_CAPABILITIES__INIT);
	acu.update_enabled = inst_cfg(in)->allow_updates;
	Build__Bazel__Remote__Execution__V2__CacheCapabilities cache =
		REV2(CACHE_CAPABILITIES__INIT);
	cache.n_digest_functions = 1;
	cache.digest_functions = digests;
	cache.action_cache_update_capabilities = &acu;
	cache.max_batch_total_size_bytes = inst_max_batch(in);
	cache.symlink_absolute_path_strategy =
		REV2(SYMLINK_ABSOLUTE_PATH_STRATEGY__VALUE__DISALLOWED);

	Build__Bazel__Remote__Execution__V2__ExecutionCapabilities exec =
		REV2(EXECUTION_CAPABILITIES__INIT);
	exec.digest_function = REV2(DIGEST_FUNCTION__VALUE__SHA256);
	exec.n_digest_functions = 1;
	exec.digest_functions = digests;
	/* Execution: the priority range the scheduler clamps to and the
	 * platform properties the instance matches on. */
	const struct cfg_instance *ci = inst_cfg(in);
	exec.exec_enabled = ci->execution;
	Build__Bazel__Remote__Execution__V2__PriorityCapabilities prio =
		REV2(PRIORITY_CAPABILITIES__INIT);
	Build__Bazel__Remote__Execution__V2__PriorityCapabilities__PriorityRange
		range = REV2(PRIORITY_CAPABILITIES__PRIORITY_RANGE__INIT),
		*ranges[] = {&range};
	char *props[2 + 64];
	size_t nprops = 0;
	if (ci->execution) {
		range.min_priority = SCHED_PRIORITY_MIN;
		range.max_priority = SCHED_PRIORITY_MAX;
		prio.n_priorities = 1;
		prio.priorities = ranges;
		exec.execution_priority_capabilities = &prio;
		props[nprops++] = (char *)"OSFamily";
		props[nprops++] = (char *)"ISA";
		for (int i = 0; i < ci->n_platform_properties && nprops < ARRAY_LEN(props); i++)
			if (strcmp(ci->platform_properties[i], "OSFamily") &&
			    strcmp(ci->platform_properties[i], "ISA"))
				props[nprops++] = ci->platform_properties[i];
		exec.n_supported_node_properties = nprops;
		exec.supported_node_properties = props;
	}

	Build__Bazel__Semver__SemVer low = BUILD__BAZEL__SEMVER__SEM_VER__INIT;
	Build__Bazel__Semver__SemVer high = BUILD__BAZEL__SEMVER__SEM_VER__INIT;
	Build__Bazel__Semver__SemVer dep = BUILD__BAZEL__SEMVER__SEM_VER__INIT;
	low.major = high.major = dep.major = 2;
	high.minor = 3;

	Build__Bazel__Remote__Execution__V2__ServerCapabilities caps =
		REV2(SERVER_CAPABILITIES__INIT);
	caps.cache_capabilities = &cache;
	caps.execution_capabilities = &exec;
	caps.low_api_version = &low;
	caps.high_api_version = &high;
	caps.deprecated_api_version = &dep;
	call_reply(c, &caps.base);
}
