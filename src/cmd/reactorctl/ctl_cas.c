/*
 * ctl_cas.c - reactorctl's caps, health and cas commands: the server's
 * capabilities, grpc.health.v1 Check, and the CAS transfers (ByteStream
 * Write/Read streamed in bounded chunks and verified by SHA-256,
 * FindMissingBlobs).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "proto/pb.h"
#include "rpc/client.h"
#include "core/digest.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "rpc/grpc.h"
#include "grpc/health/v1/health.pb-c.h"
#include "core/log.h"
#include "core/util.h"
#include "cmd/reactorctl/ctl.h"
#include "cmd/reactorctl/ctl_cas.h"
#include "domain/dirtree.h"
#include <dirent.h>
#include <getopt.h>
#include <limits.h>

#define CAS_FIND "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"
#define CAPS_GET "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities"

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v)
{
	const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(d, v);
	return e ? e->name : "?";
}

/* GetCapabilities: CTL_OK with *caps, or the exit code. */
static int get_caps(struct ctl *c, Build__Bazel__Remote__Execution__V2__ServerCapabilities **caps)
{
	Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_CAPABILITIES_REQUEST__INIT;
	req.instance_name = (char *)c->instance;
	ProtobufCMessage *out;
	int rv = ctl_unary(c, CAPS_GET, &req.base,
			   &build__bazel__remote__execution__v2__server_capabilities__descriptor,
			   &out);
	*caps = (void *)out;
	return rv;
}

static void caps_json(const Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps)
{
	struct ctl_json *j = ctl_json_new();
	ctl_json_obj(j);
	char v[32];
	if (caps->low_api_version) {
		snprintf(v, sizeof(v), "%d.%d", caps->low_api_version->major,
			 caps->low_api_version->minor);
		ctl_json_kstr(j, "low_api_version", v);
	}
	if (caps->high_api_version) {
		snprintf(v, sizeof(v), "%d.%d", caps->high_api_version->major,
			 caps->high_api_version->minor);
		ctl_json_kstr(j, "high_api_version", v);
	}
	const Build__Bazel__Remote__Execution__V2__CacheCapabilities *cc = caps->cache_capabilities;
	if (cc) {
		ctl_json_key(j, "cache");
		ctl_json_obj(j);
		ctl_json_key(j, "digest_functions");
		ctl_json_arr(j);
		for (size_t i = 0; i < cc->n_digest_functions; i++)
			ctl_json_str(
				j,
				enum_name(
					&build__bazel__remote__execution__v2__digest_function__value__descriptor,
					cc->digest_functions[i]));
		ctl_json_end(j);
		ctl_json_kint(j, "max_batch_total_size_bytes", cc->max_batch_total_size_bytes);
		ctl_json_kbool(j, "action_cache_update_enabled",
			       cc->action_cache_update_capabilities &&
				       cc->action_cache_update_capabilities->update_enabled);
		ctl_json_kstr(
			j, "symlink_absolute_path_strategy",
			enum_name(
				&build__bazel__remote__execution__v2__symlink_absolute_path_strategy__value__descriptor,
				cc->symlink_absolute_path_strategy));
		ctl_json_end(j);
	}
	if (caps->execution_capabilities) {
		ctl_json_key(j, "execution");
		ctl_json_obj(j);
		ctl_json_kbool(j, "exec_enabled", caps->execution_capabilities->exec_enabled);
		ctl_json_kstr(
			j, "digest_function",
			enum_name(
				&build__bazel__remote__execution__v2__digest_function__value__descriptor,
				caps->execution_capabilities->digest_function));
		ctl_json_end(j);
	}
	ctl_json_end(j);
	ctl_json_print(j);
}

static int cmd_caps(struct ctl *c, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return ctl_usage(c);
	Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps;
	int rv = get_caps(c, &caps);
	if (rv != CTL_OK)
		return rv;
	if (c->json) {
		caps_json(caps);
		protobuf_c_message_free_unpacked(&caps->base, NULL);
		return CTL_OK;
	}
	if (caps->low_api_version && caps->high_api_version)
		printf("api: %d.%d .. %d.%d\n", caps->low_api_version->major,
		       caps->low_api_version->minor, caps->high_api_version->major,
		       caps->high_api_version->minor);
	const Build__Bazel__Remote__Execution__V2__CacheCapabilities *cc = caps->cache_capabilities;
	if (cc) {
		printf("cache.digest_functions:");
		for (size_t i = 0; i < cc->n_digest_functions; i++)
			printf(" %s",
			       enum_name(
				       &build__bazel__remote__execution__v2__digest_function__value__descriptor,
				       cc->digest_functions[i]));
		char b[16];
		printf("\ncache.max_batch_total_size_bytes: %lld (%s)\n",
		       (long long)cc->max_batch_total_size_bytes,
		       ctl_bytes(b, sizeof(b), cc->max_batch_total_size_bytes));
		printf("cache.action_cache_update_enabled: %s\n",
		       cc->action_cache_update_capabilities &&
				       cc->action_cache_update_capabilities->update_enabled
			       ? "true"
			       : "false");
		printf("cache.symlink_absolute_path_strategy: %s\n",
		       enum_name(
			       &build__bazel__remote__execution__v2__symlink_absolute_path_strategy__value__descriptor,
			       cc->symlink_absolute_path_strategy));
	}
	if (caps->execution_capabilities)
		printf("execution.exec_enabled: %s\n",
		       caps->execution_capabilities->exec_enabled ? "true" : "false");
	protobuf_c_message_free_unpacked(&caps->base, NULL);
	return CTL_OK;
}

static int cmd_health(struct ctl *c, int argc, char **argv)
{
	if (argc > 2)
		return ctl_usage(c);
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = argc == 2 ? argv[1] : "";
	ProtobufCMessage *out;
	int rv = ctl_unary(c, "/grpc.health.v1.Health/Check", &req.base,
			   &grpc__health__v1__health_check_response__descriptor, &out);
	if (rv != CTL_OK)
		return rv;
	const Grpc__Health__V1__HealthCheckResponse *r = (const void *)out;
	const char *name = enum_name(
		&grpc__health__v1__health_check_response__serving_status__descriptor, r->status);
	bool ok = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	if (c->json) {
		struct ctl_json *j = ctl_json_new();
		ctl_json_obj(j);
		ctl_json_kstr(j, "service", req.service);
		ctl_json_kstr(j, "status", name);
		ctl_json_end(j);
		ctl_json_print(j);
	} else {
		printf("%s%s%s\n", ctl_col(c, ok ? CTL_GREEN : CTL_RED), name,
		       ctl_col(c, CTL_RESET));
	}
	protobuf_c_message_free_unpacked(out, NULL);
	return ok ? CTL_OK : CTL_FAIL;
}

static int old_missing(struct ctl *c, struct rc_client *cl, const char *instance, char **args,
		       int nargs, int64_t to)
{
	size_t n = 0, cap = 16;
	char **list = xmalloc(cap * sizeof(*list));
	char *line = NULL;
	size_t linecap = 0;
	for (int i = 0;; i++) {
		const char *arg;
		if (nargs > 0) {
			if (i >= nargs)
				break;
			arg = args[i];
		} else {
			ssize_t len = getline(&line, &linecap, stdin);
			if (len < 0)
				break;
			while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
					   line[len - 1] == ' '))
				line[--len] = '\0';
			if (len == 0)
				continue;
			arg = line;
		}
		if (n == cap)
			list = xrealloc(list, (cap *= 2) * sizeof(*list));
		list[n++] = xstrdup(arg);
	}
	free(line);
	PbDigest *ds = xcalloc(n ? n : 1, sizeof(*ds));
	PbDigest **dp = xcalloc(n ? n : 1, sizeof(*dp));
	int rv = 2;
	for (size_t i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__digest__init(&ds[i]);
		if (cas_parse_digest_arg(list[i], &ds[i].hash, &ds[i].size_bytes) != 0) {
			fprintf(stderr, "reactorctl: bad digest \"%s\": want HASH/SIZE\n", list[i]);
			goto out;
		}
		dp[i] = &ds[i];
	}
	Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
	req.instance_name = (char *)instance;
	req.n_blob_digests = n;
	req.blob_digests = dp;
	ProtobufCMessage *out = NULL;
	char *msg = NULL;
	int code = rc_unary(
		cl, CAS_FIND, &req.base,
		&build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor, &out,
		&msg, to);
	if (code != GRPC_OK) {
		rv = ctl_status(c, code, msg);
	} else {
		const Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse *r =
			(const void *)out;
		for (size_t i = 0; i < r->n_missing_blob_digests; i++)
			printf("%s/%" PRId64 "\n", r->missing_blob_digests[i]->hash,
			       r->missing_blob_digests[i]->size_bytes);
		protobuf_c_message_free_unpacked(out, NULL);
		rv = 0;
	}
	free(msg);
out:
	for (size_t i = 0; i < n; i++) {
		free(ds[i].hash == protobuf_c_empty_string ? NULL : ds[i].hash);
		free(list[i]);
	}
	free(ds);
	free(dp);
	free(list);
	return rv;
}

static int hash_fd(int fd, struct digest *d)
{
	struct hasher *h = hasher_new();
	uint8_t buf[65536];
	ssize_t r;
	while ((r = read(fd, buf, sizeof(buf))) > 0)
		hasher_update(h, buf, (size_t)r);
	if (r == 0)
		hasher_final(h, d);
	hasher_free(h);
	return r == 0 ? 0 : -1;
}

/* ---- trees ------------------------------------------------------------- */

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The Directory of the directory dir (path for messages): its blobs added
 * to s, its digest in *out. */
static int tree_dir(struct ctl *c, const char *dir, struct cas_blobs *s, struct digest *out)
{
	DIR *dp = opendir(dir);
	if (!dp)
		return ctl_err(CTL_FAIL, "%s: %s", dir, strerror(errno));
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(dp))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (n == cap)
			names = xrealloc(names, (cap = cap ? cap * 2 : 16) * sizeof(*names));
		names[n++] = xstrdup(e->d_name);
	}
	closedir(dp);
	if (n) /* an empty directory has no array: qsort(NULL) is undefined */
		qsort(names, n, sizeof(*names), name_cmp);
	PbDirectory d = REV2(DIRECTORY__INIT);
	PbFileNode *fn = xcalloc(n ? n : 1, sizeof(*fn));
	PbFileNode **fp = xcalloc(n ? n : 1, sizeof(*fp));
	PbDirectoryNode *dn = xcalloc(n ? n : 1, sizeof(*dn));
	PbDirectoryNode **dpp = xcalloc(n ? n : 1, sizeof(*dpp));
	PbSymlinkNode *sn = xcalloc(n ? n : 1, sizeof(*sn));
	PbSymlinkNode **sp = xcalloc(n ? n : 1, sizeof(*sp));
	PbDigest *pd = xcalloc(n ? n : 1, sizeof(*pd));
	struct digest *dg = xcalloc(n ? n : 1, sizeof(*dg));
	char **targets = xcalloc(n ? n : 1, sizeof(*targets));
	int rv = CTL_OK;
	for (size_t i = 0; i < n && rv == CTL_OK; i++) {
		char *p = xasprintf("%s/%s", dir, names[i]);
		struct stat st;
		build__bazel__remote__execution__v2__digest__init(&pd[i]);
		if (lstat(p, &st) != 0) {
			rv = ctl_err(CTL_FAIL, "%s: %s", p, strerror(errno));
		} else if (S_ISREG(st.st_mode)) {
			int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
			struct hasher *h = fd >= 0 ? hasher_new() : NULL;
			uint8_t buf[65536];
			ssize_t r = 0;
			while (h && (r = read(fd, buf, sizeof(buf))) > 0)
				hasher_update(h, buf, (size_t)r);
			if (fd < 0 || r < 0) {
				rv = ctl_err(CTL_FAIL, "%s: %s", p, strerror(errno));
			} else {
				hasher_final(h, &dg[i]);
				cas_blobs_file(s, p, &dg[i]);
				build__bazel__remote__execution__v2__file_node__init(
					&fn[d.n_files]);
				fn[d.n_files].name = names[i];
				pd[i].hash = dg[i].hex;
				pd[i].size_bytes = dg[i].size;
				fn[d.n_files].digest = &pd[i];
				fn[d.n_files].is_executable = (st.st_mode & 0111) != 0;
				fp[d.n_files] = &fn[d.n_files];
				d.n_files++;
			}
			if (h)
				hasher_free(h);
			if (fd >= 0)
				close(fd);
		} else if (S_ISDIR(st.st_mode)) {
			rv = tree_dir(c, p, s, &dg[i]);
			if (rv == CTL_OK) {
				build__bazel__remote__execution__v2__directory_node__init(
					&dn[d.n_directories]);
				dn[d.n_directories].name = names[i];
				pd[i].hash = dg[i].hex;
				pd[i].size_bytes = dg[i].size;
				dn[d.n_directories].digest = &pd[i];
				dpp[d.n_directories] = &dn[d.n_directories];
				d.n_directories++;
			}
		} else if (S_ISLNK(st.st_mode)) {
			char t[PATH_MAX];
			ssize_t l = readlink(p, t, sizeof(t) - 1);
			if (l < 0) {
				rv = ctl_err(CTL_FAIL, "%s: %s", p, strerror(errno));
			} else {
				targets[i] = xstrndup(t, (size_t)l);
				build__bazel__remote__execution__v2__symlink_node__init(
					&sn[d.n_symlinks]);
				sn[d.n_symlinks].name = names[i];
				sn[d.n_symlinks].target = targets[i];
				sp[d.n_symlinks] = &sn[d.n_symlinks];
				d.n_symlinks++;
			}
		} else {
			ctl_err(0, "%s: skipped: not a file, directory or symlink", p);
		}
		free(p);
	}
	if (rv == CTL_OK) {
		d.files = fp;
		d.directories = dpp;
		d.symlinks = sp;
		size_t len = build__bazel__remote__execution__v2__directory__get_packed_size(&d);
		uint8_t *buf = xmalloc(len ? len : 1);
		build__bazel__remote__execution__v2__directory__pack(&d, buf);
		cas_blobs_mem(s, buf, len, out);
	}
	for (size_t i = 0; i < n; i++) {
		free(names[i]);
		free(targets[i]);
	}
	free(names);
	free(targets);
	free(fn);
	free(fp);
	free(dn);
	free(dpp);
	free(sn);
	free(sp);
	free(pd);
	free(dg);
	return rv;
}

int cas_tree_build(struct ctl *c, const char *path, struct cas_blobs *s, struct digest *root)
{
	return tree_dir(c, path, s, root);
}

/* Where a tree's Directory messages come from. */
struct tree_src {
	PbDirectory **children; /* a Tree's, or NULL: the CAS */
	struct digest *dg;	/* their digests */
	size_t n;
	unsigned flags; /* dirtree_check flags */
};

/* The Directory d names (digest pd), unpacked and checked. */
static int tree_fetch(struct ctl *c, struct tree_src *src, const PbDigest *pd, const char *rel,
		      PbDirectory **out)
{
	*out = NULL;
	struct digest d;
	char *err = NULL;
	if (!pd || digest_parse(pd->hash, pd->size_bytes, &d, &err) != 0) {
		free(err);
		return ctl_err(CTL_FAIL, "tree: \"%s\": bad digest", rel);
	}
	if (src->children) {
		for (size_t i = 0; i < src->n; i++)
			if (digest_eq(&src->dg[i], &d)) {
				*out = src->children[i];
				return CTL_OK;
			}
		return ctl_err(CTL_FAIL, "tree: \"%s\": Directory %s/%" PRId64 " not in the Tree",
			       rel, d.hex, d.size);
	}
	uint8_t *buf;
	size_t len;
	int rv = cas_read_mem(c, &d, &buf, &len);
	if (rv != CTL_OK)
		return rv;
	if (dirtree_check(buf, len, rel, src->flags, &err) != 0) {
		rv = ctl_err(CTL_FAIL, "%s", err);
		free(err);
	} else {
		*out = build__bazel__remote__execution__v2__directory__unpack(NULL, len, buf);
	}
	free(buf);
	return rv;
}

/* Make Directory d's contents in dir (which exists). */
static int tree_make(struct ctl *c, struct tree_src *src, const PbDirectory *d, const char *dir,
		     const char *rel)
{
	int rv = CTL_OK;
	for (size_t i = 0; i < d->n_files && rv == CTL_OK; i++) {
		const PbFileNode *f = d->files[i];
		struct digest fd;
		char *err = NULL;
		char *p = xasprintf("%s/%s", dir, f->name);
		if (!f->digest ||
		    digest_parse(f->digest->hash, f->digest->size_bytes, &fd, &err) != 0) {
			rv = ctl_err(CTL_FAIL, "tree: %s: bad digest", p);
			free(err);
		} else {
			rv = cas_get_to_path(c, &fd, p, f->is_executable, fd.size > (8 << 20));
		}
		free(p);
	}
	for (size_t i = 0; i < d->n_directories && rv == CTL_OK; i++) {
		const PbDirectoryNode *dn = d->directories[i];
		char *p = xasprintf("%s/%s", dir, dn->name);
		char *r = *rel ? xasprintf("%s/%s", rel, dn->name) : xstrdup(dn->name);
		PbDirectory *sub = NULL;
		if (mkdir(p, 0777) != 0)
			rv = ctl_err(CTL_FAIL, "%s: %s", p, strerror(errno));
		else
			rv = tree_fetch(c, src, dn->digest, r, &sub);
		if (rv == CTL_OK)
			rv = tree_make(c, src, sub, p, r);
		if (sub && !src->children)
			protobuf_c_message_free_unpacked(&sub->base, NULL);
		free(p);
		free(r);
	}
	for (size_t i = 0; i < d->n_symlinks && rv == CTL_OK; i++) {
		char *p = xasprintf("%s/%s", dir, d->symlinks[i]->name);
		if (symlink(d->symlinks[i]->target, p) != 0)
			rv = ctl_err(CTL_FAIL, "%s: %s", p, strerror(errno));
		free(p);
	}
	return rv;
}

/* rm -r of a temporary tree we made (no symlink followed). */
static void rm_tree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		DIR *dp = opendir(path);
		struct dirent *e;
		while (dp && (e = readdir(dp))) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			char *p = xasprintf("%s/%s", path, e->d_name);
			rm_tree(p);
			free(p);
		}
		if (dp)
			closedir(dp);
		rmdir(path);
	} else {
		unlink(path);
	}
}

int cas_tree_get(struct ctl *c, const PbDirectory *root, PbDirectory **children, size_t n,
		 const char *path)
{
	struct stat st;
	if (lstat(path, &st) == 0)
		return ctl_err(CTL_FAIL, "%s: already exists", path);
	struct tree_src src = {.children = children, .n = n, .flags = DIRTREE_ABSOLUTE_SYMLINKS};
	if (children) {
		src.dg = xcalloc(n ? n : 1, sizeof(*src.dg));
		for (size_t i = 0; i < n; i++) {
			size_t len =
				build__bazel__remote__execution__v2__directory__get_packed_size(
					children[i]);
			uint8_t *buf = xmalloc(len ? len : 1);
			build__bazel__remote__execution__v2__directory__pack(children[i], buf);
			digest_of(buf, len, &src.dg[i]);
			free(buf);
		}
	}
	const char *slash = strrchr(path, '/');
	char *tmp = slash ? xasprintf("%.*s/.%s.reactorctl-XXXXXX", (int)(slash - path), path,
				      slash + 1)
			  : xasprintf(".%s.reactorctl-XXXXXX", path);
	int rv;
	if (!mkdtemp(tmp)) {
		rv = ctl_err(CTL_FAIL, "%s: %s", path, strerror(errno));
	} else {
		rv = tree_make(c, &src, root, tmp, "");
		mode_t um = umask(0);
		umask(um);
		if (rv == CTL_OK && chmod(tmp, 0777 & ~um) != 0)
			rv = ctl_err(CTL_FAIL, "%s: %s", path, strerror(errno));
		if (rv == CTL_OK && rename(tmp, path) != 0)
			rv = ctl_err(CTL_FAIL, "%s: %s", path, strerror(errno));
		if (rv != CTL_OK)
			rm_tree(tmp);
	}
	free(tmp);
	free(src.dg);
	return rv;
}

/* ---- cas put / get / has -------------------------------------------------- */

static int cmd_cas_put(struct ctl *c, int argc, char **argv)
{
	int opt;
	while ((opt = getopt(argc, argv, "")) != -1)
		return ctl_usage(c);
	if (optind >= argc)
		return ctl_usage(c);
	int n = argc - optind;
	char **paths = argv + optind;
	struct cas_blobs s = {0};
	struct digest *roots = xcalloc((size_t)n, sizeof(*roots));
	bool *isdir = xcalloc((size_t)n, sizeof(*isdir));
	int rv = CTL_OK;
	for (int i = 0; i < n && rv == CTL_OK; i++) {
		struct stat st;
		if (stat(paths[i], &st) != 0) {
			rv = ctl_err(CTL_FAIL, "%s: %s", paths[i], strerror(errno));
		} else if (S_ISDIR(st.st_mode)) {
			isdir[i] = true;
			rv = cas_tree_build(c, paths[i], &s, &roots[i]);
		} else if (S_ISREG(st.st_mode)) {
			int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
			if (fd < 0 || hash_fd(fd, &roots[i]) != 0)
				rv = ctl_err(CTL_FAIL, "%s: %s", paths[i], strerror(errno));
			else
				cas_blobs_file(&s, paths[i], &roots[i]);
			if (fd >= 0)
				close(fd);
		} else {
			rv = ctl_err(CTL_FAIL, "%s: not a regular file or directory", paths[i]);
		}
	}
	int64_t sent = 0, bytes = 0;
	if (rv == CTL_OK)
		rv = cas_blobs_upload(c, &s, &sent, &bytes);
	if (rv == CTL_OK) {
		char b[16];
		ctl_info(c, "%zu blobs, %" PRId64 " missing uploaded (%s)", s.n, sent,
			 ctl_bytes(b, sizeof(b), bytes));
		struct ctl_json *j = c->json ? ctl_json_new() : NULL;
		if (j) {
			ctl_json_obj(j);
			ctl_json_key(j, "items");
			ctl_json_arr(j);
		}
		for (int i = 0; i < n; i++) {
			char ds[DIGEST_HEX_LEN + 32];
			snprintf(ds, sizeof(ds), "%s/%" PRId64, roots[i].hex, roots[i].size);
			if (j) {
				ctl_json_obj(j);
				ctl_json_kstr(j, "path", paths[i]);
				ctl_json_kstr(j, "digest", ds);
				ctl_json_kstr(j, "type", isdir[i] ? "directory" : "file");
				ctl_json_end(j);
			} else if (n == 1) {
				printf("%s\n", ds);
			} else {
				printf("%s  %s\n", ds, paths[i]);
			}
		}
		if (j) {
			ctl_json_end(j);
			ctl_json_kint(j, "blobs", (int64_t)s.n);
			ctl_json_kint(j, "uploaded_blobs", sent);
			ctl_json_kint(j, "uploaded_bytes", bytes);
			ctl_json_end(j);
			ctl_json_print(j);
		}
	}
	cas_blobs_free(&s);
	free(roots);
	free(isdir);
	return rv;
}

/* A blob that is a Directory: it parses, passes the tree rules, is not
 * empty and packs back to the same bytes (so a file is never mistaken
 * for one by accident). */
static PbDirectory *as_directory(const uint8_t *buf, size_t len)
{
	if (len == 0 || dirtree_check(buf, len, "", DIRTREE_ABSOLUTE_SYMLINKS, NULL) != 0)
		return NULL;
	PbDirectory *d = build__bazel__remote__execution__v2__directory__unpack(NULL, len, buf);
	if (!d)
		return NULL;
	size_t n = build__bazel__remote__execution__v2__directory__get_packed_size(d);
	uint8_t *again = xmalloc(n ? n : 1);
	build__bazel__remote__execution__v2__directory__pack(d, again);
	bool same = n == len && memcmp(again, buf, n) == 0 &&
		    d->n_files + d->n_directories + d->n_symlinks > 0;
	free(again);
	if (!same) {
		protobuf_c_message_free_unpacked(&d->base, NULL);
		return NULL;
	}
	return d;
}

enum { OPT_TREE = 0x3000, OPT_FILE };

static int cmd_cas_get(struct ctl *c, int argc, char **argv)
{
	static const struct option longs[] = {
		{"output", required_argument, NULL, 'o'},
		{"tree", no_argument, NULL, OPT_TREE},
		{"file", no_argument, NULL, OPT_FILE},
		{NULL, 0, NULL, 0},
	};
	const char *out = NULL;
	int mode = 0, opt;
	while ((opt = getopt_long(argc, argv, "o:", longs, NULL)) != -1) {
		switch (opt) {
		case 'o': out = optarg; break;
		case OPT_TREE:
		case OPT_FILE: mode = opt; break;
		default: return ctl_usage(c);
		}
	}
	if (optind + 1 != argc)
		return ctl_usage(c);
	struct digest d;
	if (cas_parse_digest(argv[optind], &d) != 0)
		return CTL_USAGE;
	bool to_stdout = !out || strcmp(out, "-") == 0;
	PbDirectory *dir = NULL;
	/* Small blobs are looked at: a Directory becomes a tree. */
	if (mode == OPT_TREE || (mode == 0 && d.size > 0 && d.size <= (1 << 20))) {
		uint8_t *buf;
		size_t len;
		int rv = cas_read_mem(c, &d, &buf, &len);
		if (rv != CTL_OK)
			return rv;
		dir = as_directory(buf, len);
		if (!dir && mode == OPT_TREE) {
			free(buf);
			return ctl_err(CTL_FAIL, "%s/%" PRId64 " is not a Directory", d.hex,
				       d.size);
		}
		if (!dir && to_stdout) {
			size_t off = 0;
			while (off < len) {
				ssize_t w = write(STDOUT_FILENO, buf + off, len - off);
				if (w < 0 && errno == EINTR)
					continue;
				if (w < 0) {
					free(buf);
					return ctl_err(CTL_FAIL, "stdout: %s", strerror(errno));
				}
				off += (size_t)w;
			}
			free(buf);
			return CTL_OK;
		}
		free(buf);
	}
	int rv;
	if (dir) {
		if (to_stdout) {
			protobuf_c_message_free_unpacked(&dir->base, NULL);
			return ctl_err(CTL_USAGE, "%s/%" PRId64 " is a Directory: give -o PATH",
				       d.hex, d.size);
		}
		rv = cas_tree_get(c, dir, NULL, 0, out);
		protobuf_c_message_free_unpacked(&dir->base, NULL);
	} else if (to_stdout) {
		rv = cas_read_fd(c, d.hex, d.size, STDOUT_FILENO, "stdout", true);
	} else {
		rv = cas_get_to_path(c, &d, out, false, true);
	}
	if (rv == CTL_OK && out && !to_stdout)
		ctl_info(c, "%s: %s", out, dir ? "tree" : "file");
	return rv;
}

static int cmd_cas_has(struct ctl *c, int argc, char **argv)
{
	if (argc < 2)
		return ctl_usage(c);
	size_t n = (size_t)argc - 1;
	struct digest *d = xcalloc(n, sizeof(*d));
	bool *missing = xcalloc(n, sizeof(*missing));
	int rv = CTL_OK;
	for (size_t i = 0; i < n && rv == CTL_OK; i++)
		if (cas_parse_digest(argv[i + 1], &d[i]) != 0)
			rv = CTL_USAGE;
	if (rv == CTL_OK)
		rv = cas_find_missing(c, d, n, missing);
	if (rv == CTL_OK) {
		struct ctl_json *j = c->json ? ctl_json_new() : NULL;
		if (j) {
			ctl_json_obj(j);
			ctl_json_key(j, "missing");
			ctl_json_arr(j);
		}
		for (size_t i = 0; i < n; i++) {
			if (!missing[i])
				continue;
			rv = CTL_FAIL;
			char s[DIGEST_HEX_LEN + 32];
			snprintf(s, sizeof(s), "%s/%" PRId64, d[i].hex, d[i].size);
			if (j)
				ctl_json_str(j, s);
			else
				printf("%smissing%s %s\n", ctl_col(c, CTL_RED),
				       ctl_col(c, CTL_RESET), s);
		}
		if (j) {
			ctl_json_end(j);
			ctl_json_key(j, "present");
			ctl_json_arr(j);
			for (size_t i = 0; i < n; i++)
				if (!missing[i]) {
					char s[DIGEST_HEX_LEN + 32];
					snprintf(s, sizeof(s), "%s/%" PRId64, d[i].hex, d[i].size);
					ctl_json_str(j, s);
				}
			ctl_json_end(j);
			ctl_json_end(j);
			ctl_json_print(j);
		}
	}
	free(d);
	free(missing);
	return rv;
}

/* The flat commands of earlier versions, kept as hidden aliases. */
static int cmd_upload(struct ctl *c, int argc, char **argv)
{
	if (argc != 2 && argc != 3)
		return ctl_usage(c);
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	(void)cl;
	char *out = NULL;
	int rv = cas_write_file(c, argv[1], argc == 3 ? argv[2] : NULL, &out);
	if (rv == CTL_OK)
		printf("%s\n", out);
	free(out);
	return rv;
}

static int cmd_download(struct ctl *c, int argc, char **argv)
{
	if (argc != 2 && argc != 3)
		return ctl_usage(c);
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	(void)cl;
	struct digest d;
	if (cas_parse_digest(argv[1], &d) != 0)
		return CTL_USAGE;
	if (argc == 2 || strcmp(argv[2], "-") == 0)
		return cas_read_fd(c, d.hex, d.size, STDOUT_FILENO, "stdout", true);
	return cas_get_to_path(c, &d, argv[2], false, true);
}

static int cmd_missing(struct ctl *c, int argc, char **argv)
{
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	return old_missing(c, cl, c->instance, argv + 1, argc - 1, c->timeout_us);
}

const struct ctl_cmd ctl_cmds_cas[] = {
	{"cas put", "FILE|DIR...", "store files and directory trees in the CAS",
	 "Hashes each FILE, or builds the REAPI Directory tree of each DIR (names\n"
	 "sorted, executables flagged, symlinks kept as symlinks), asks the server\n"
	 "which blobs it is missing (FindMissingBlobs) and uploads only those: small\n"
	 "ones batched (BatchUpdateBlobs, within the server's batch limit), big ones\n"
	 "streamed (ByteStream Write, with a progress bar on a terminal).  Prints\n"
	 "the digest of each argument, HASH/SIZE (a directory's is its root\n"
	 "Directory); with several arguments, the path after it.\n"
	 "\n"
	 "example:\n"
	 "  d=$(reactorctl cas put src/)\n",
	 cmd_cas_put},
	{"cas get", "[--tree|--file] [-o PATH] HASH/SIZE", "fetch a blob or a whole tree",
	 "Reads a blob, verifies it against its digest and writes it to PATH, or to\n"
	 "standard output without -o.  A blob that is a Directory (or any with\n"
	 "--tree) is materialized as a directory tree at PATH, which must not\n"
	 "exist.  Everything is written under a temporary name beside PATH and\n"
	 "renamed only once verified: an interrupted download leaves nothing at\n"
	 "PATH.  --file: never treat the blob as a Directory.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl cas get -o out.tar 3a1f...e9/10240\n",
	 cmd_cas_get},
	{"cas has", "HASH/SIZE...", "which blobs the CAS holds; exit 1 when any is missing",
	 "FindMissingBlobs: prints \"missing HASH/SIZE\" for each one the server lacks\n"
	 "and exits 1 if there is any, 0 when it has them all.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl cas has \"$d\" || echo incomplete\n",
	 cmd_cas_has},
	{"caps", "", "print the server's REAPI capabilities",
	 "GetCapabilities of the instance (-i): API versions, digest functions, the\n"
	 "batch size limit, whether the action cache takes updates and whether\n"
	 "remote execution is enabled.  With --json, one object.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl -s unix:/var/lib/reactord/grpc.sock caps\n",
	 cmd_caps},
	{"capabilities", "", NULL, NULL, cmd_caps},
	{"health", "[SERVICE]", "grpc.health.v1 Check; exit 0 only when SERVING",
	 "Asks the server's health service about SERVICE (default: the server as a\n"
	 "whole) and prints the answer: SERVING, NOT_SERVING...  Exit 0 only when\n"
	 "SERVING, 1 otherwise (NOT_FOUND for a service the server does not have).\n"
	 "\n"
	 "example:\n"
	 "  reactorctl health build.bazel.remote.execution.v2.Execution\n",
	 cmd_health},
	{"upload", "FILE [HASH/SIZE]", NULL, NULL, cmd_upload},
	{"download", "HASH/SIZE [OUT]", NULL, NULL, cmd_download},
	{"missing", "[HASH/SIZE...]", NULL, NULL, cmd_missing},
	{0},
};
