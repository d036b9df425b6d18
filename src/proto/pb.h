/*
 * pb.h - short names for the protobuf-c types and macros the services,
 * the domain and the programs use (the generated names carry the whole
 * package: Build__Bazel__Remote__Execution__V2__Digest).  Only typedefs
 * of generated types and prefixes of generated names live here, so
 * t/layers.sh lets src/proto/ include nothing but generated headers and
 * lets whoever may use those include this.  Define these names here only.
 */
#ifndef REACTOR_PROTO_PB_H
#define REACTOR_PROTO_PB_H

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "google/devtools/remoteworkers/v1test2/bots.pb-c.h"
#include "reactor/admin/v1/admin.pb-c.h"

/* Prefixes of the generated upper-case names, one per package:
 * REV2(DIGEST__INIT), RW(LEASE__INIT), LEASE(PENDING). */
#define REV2(x)	 BUILD__BAZEL__REMOTE__EXECUTION__V2__##x
#define RW(x)	 GOOGLE__DEVTOOLS__REMOTEWORKERS__V1TEST2__##x
#define LEASE(x) GOOGLE__DEVTOOLS__REMOTEWORKERS__V1TEST2__LEASE_STATE__##x

/* build.bazel.remote.execution.v2 */
typedef Build__Bazel__Remote__Execution__V2__Digest PbDigest;
typedef Build__Bazel__Remote__Execution__V2__Action PbAction;
typedef Build__Bazel__Remote__Execution__V2__Command PbCommand;
typedef Build__Bazel__Remote__Execution__V2__Platform PbPlatform;
typedef Build__Bazel__Remote__Execution__V2__Platform__Property PbPlatformProperty;
typedef Build__Bazel__Remote__Execution__V2__Directory PbDirectory;
typedef Build__Bazel__Remote__Execution__V2__FileNode PbFileNode;
typedef Build__Bazel__Remote__Execution__V2__DirectoryNode PbDirectoryNode;
typedef Build__Bazel__Remote__Execution__V2__SymlinkNode PbSymlinkNode;
typedef Build__Bazel__Remote__Execution__V2__Tree PbTree;
typedef Build__Bazel__Remote__Execution__V2__ActionResult PbActionResult;
typedef Build__Bazel__Remote__Execution__V2__OutputFile PbOutputFile;
typedef Build__Bazel__Remote__Execution__V2__OutputDirectory PbOutputDirectory;
typedef Build__Bazel__Remote__Execution__V2__OutputSymlink PbOutputSymlink;
typedef Build__Bazel__Remote__Execution__V2__ExecutedActionMetadata PbExecutedActionMetadata;
typedef Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest PbFindMissing;
typedef Build__Bazel__Remote__Execution__V2__BatchReadBlobsRequest PbBatchRead;
typedef Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response PbReadResp;
typedef Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest PbBatchUpdate;
typedef Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse__Response PbUpdateResp;

/* google.devtools.remoteworkers.v1test2 */
typedef Google__Devtools__Remoteworkers__V1test2__BotSession PbBotSession;
typedef Google__Devtools__Remoteworkers__V1test2__Lease PbLease;

/* reactor.admin.v1 (svc_admin.c, reactorctl) */
#define ADM(x) REACTOR__ADMIN__V1__##x
typedef Reactor__Admin__V1__Bot PbAdmBot;
typedef Reactor__Admin__V1__Queue PbAdmQueue;
typedef Reactor__Admin__V1__Operation PbAdmOperation;
typedef Reactor__Admin__V1__Summary PbAdmSummary;

#endif
