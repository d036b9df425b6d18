/*
 * cfg.c - loads reactor.conf.  libyaml's event stream is turned into a small
 * tree of nodes that remember their line and column (cfg_yaml.c; scalar
 * parsing is in cfg_value.c; the engine that walks a key table is
 * cfg_engine.c; the master: section's tables are cfg_master.c), and one
 * static table of
 * keys (cfg_keys) then drives everything else: type checks, bounds, defaults,
 * freeing, and the list of non-reloadable keys SIGHUP must refuse to change.
 * Adding a key means adding a field to struct cfg and one row to the table.
 * The loader either builds a whole struct cfg or returns a single error of
 * the form "file:line:col: key.path: what is wrong"; it never logs and keeps
 * no global state, so reloads can build a new config next to the live one.
 */
#include "core/cfg.h"
#include "core/cfg_int.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/json.h"
#include "core/log.h"
#include "core/util.h"

/* String validators: return NULL or a malloc'd complaint.  They may rewrite
 * the value in place, but only to make it shorter. */

char *cfg_check_nonempty(char *s)
{
	return *s ? NULL : xasprintf("must not be empty");
}

/* redis.prefix starts every key and channel name: keep it one printable
 * word, so redis-cli patterns and logs show it as written. */
char *cfg_check_key_prefix(char *s)
{
	if (!*s)
		return xasprintf("must not be empty");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p <= ' ' || *p == 0x7f)
			return xasprintf("must not contain spaces or control characters");
	return NULL;
}

/* The redis module only knows "host:port" and "/absolute/path", so the
 * friendlier "unix:/path" spelling is normalised here. */
static char *check_redis_address(char *s)
{
	char *host;
	int port;

	if (!strncmp(s, "unix:", 5)) {
		if (s[5] != '/')
			return xasprintf(
				"unix: needs an absolute socket path, like unix:/run/redis.sock");
		memmove(s, s + 5, strlen(s + 5) + 1);
	}
	if (s[0] == '/')
		return s[1] ? NULL : xasprintf("needs a socket path after \"/\"");
	char *msg = cfg_split_hostport(s, 1, &host, &port);
	if (!msg)
		free(host);
	return msg;
}

/* REAPI resource names are "{instance}/blobs/...", "{instance}/uploads/..."
 * and so on, so a name containing one of these segments would make those
 * names ambiguous. */
char *cfg_check_instance_name(char *s)
{
	static const char *const reserved[] = {
		"blobs",      "uploads",      "actions",	  "actionResults",
		"operations", "capabilities", "compressed-blobs",
	};
	size_t len = strlen(s);

	if (len == 0)
		return NULL;
	if (s[0] == '/' || s[len - 1] == '/')
		return xasprintf("instance name \"%s\" must not start or end with \"/\"", s);
	for (const char *seg = s; seg <= s + len;) {
		size_t sl = strcspn(seg, "/");
		if (sl == 0)
			return xasprintf("instance name \"%s\" has an empty segment", s);
		for (size_t i = 0; i < ARRAY_LEN(reserved); i++)
			if (sl == strlen(reserved[i]) && !memcmp(seg, reserved[i], sl))
				return xasprintf(
					"instance name \"%s\" uses the reserved segment \"%s\"", s,
					reserved[i]);
		seg += sl + 1;
	}
	return NULL;
}

/* ---- listen: entries ------------------------------------------------------
 * A string ("127.0.0.1:50051", "unix:/path") or a mapping with address:,
 * tls:, insecure: and services:, parsed by its own key table. */

/* The services a listener may be limited to: short name, full name. */
static const struct {
	const char *short_name, *full;
} services[] = {
	{"capabilities", "build.bazel.remote.execution.v2.Capabilities"},
	{"cas", "build.bazel.remote.execution.v2.ContentAddressableStorage"},
	{"ac", "build.bazel.remote.execution.v2.ActionCache"},
	{"execution", "build.bazel.remote.execution.v2.Execution"},
	{"bytestream", "google.bytestream.ByteStream"},
	{"operations", "google.longrunning.Operations"},
	{"bots", "google.devtools.remoteworkers.v1test2.Bots"},
	{"health", "grpc.health.v1.Health"},
	{"buckets", "reactor.buckets.v1.Buckets"},
};

const char *cfg_service_name(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(services); i++)
		if (!strcmp(name, services[i].short_name) || !strcmp(name, services[i].full))
			return services[i].full;
	return NULL;
}

static int service_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	const char *full = n->kind == N_SCALAR ? cfg_service_name(n->str) : NULL;
	if (!full) {
		char list[256] = "";
		for (size_t i = 0; i < ARRAY_LEN(services); i++)
			snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
				 i ? ", " : "", services[i].short_name);
		return fail(x, n, path, "unknown service; expected one of %s (or a full name)",
			    list);
	}
	*(char **)elem = xstrdup(full);
	return 0;
}

static int services_check(struct ctx *x, const struct node *seq, const char *path,
			  const void *elems, int n)
{
	char *const *s = elems;
	for (int i = 1; i < n; i++)
		for (int j = 0; j < i; j++)
			if (!strcmp(s[i], s[j])) {
				char *p = xasprintf("%s[%d]", path, i);
				fail(x, seq->kids[i], p, "%s is listed twice", s[i]);
				free(p);
				return -1;
			}
	return 0;
}

static const struct list_ops service_ops = {
	.elem_size = sizeof(char *),
	.parse = service_parse,
	.check = services_check,
	.equal = cfg_strlist_equal,
	.free = cfg_strlist_free,
};

/* Index is enum cfg_client_auth. */
static const char *const client_auth_names[] = {"none", "optional", "require", NULL};

#define FT(field) .off = offsetof(struct cfg_tls, field), .size = sizeof(((struct cfg_tls *)0)->field)
static const struct key tls_keys[] = {
	{"cert", K_STRING, FT(cert), .check = cfg_check_nonempty, .required = true},
	{"key", K_STRING, FT(key), .check = cfg_check_nonempty, .required = true},
	{"client-ca", K_STRING, FT(client_ca), .check = cfg_check_nonempty},
	{"client-auth", K_ENUM, FT(client_auth), .def = CFG_CLIENT_AUTH_NONE,
	 .names = client_auth_names},
};
static const struct keytab tls_tab = {tls_keys, ARRAY_LEN(tls_keys)};

/* Asking for client certificates needs the CA that vouches for them. */
static int tls_check(struct ctx *x, void *obj, const struct node *n, const char *path,
		     const struct node *const *where)
{
	const struct cfg_tls *t = obj;
	const struct node *ca = where[cfg_find_key(&tls_tab, "client-ca") - tls_keys];
	const struct node *auth = where[cfg_find_key(&tls_tab, "client-auth") - tls_keys];
	if (t->client_auth != CFG_CLIENT_AUTH_NONE && !t->client_ca) {
		char *p = xasprintf("%s.client-auth", path);
		fail(x, auth ? auth : n, p, "%s needs client-ca (the CA client certificates chain to)",
		     client_auth_names[t->client_auth]);
		free(p);
		return -1;
	}
	if (t->client_auth == CFG_CLIENT_AUTH_NONE && t->client_ca) {
		char *p = xasprintf("%s.client-ca", path);
		fail(x, ca, p, "is unused with client-auth: none (set optional or require)");
		free(p);
		return -1;
	}
	return 0;
}

static const struct obj_ops tls_ops = {&tls_tab, sizeof(struct cfg_tls), tls_check};

#define FL(field)                                                                                  \
	.off = offsetof(struct cfg_listen, field), .size = sizeof(((struct cfg_listen *)0)->field)
static const struct key listen_keys[] = {
	{"address", K_STRING, FL(address), .check = cfg_check_nonempty, .required = true},
	{"tls", K_OBJECT, FL(tls), .obj = &tls_ops},
	{"insecure", K_BOOL, FL(insecure), .def = false},
	{"services", K_LIST, FL(services), .count_off = offsetof(struct cfg_listen, n_services),
	 .list = &service_ops},
};
static const struct keytab listen_tab = {listen_keys, ARRAY_LEN(listen_keys)};

static int listen_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	struct cfg_listen *l = elem;
	const struct node *where[ARRAY_LEN(listen_keys)] = {0};
	const struct node *at = n;
	const char *addr;

	if (n->kind == N_MAP) {
		if (cfg_parse_obj(x, &listen_tab, l, n, path, where))
			return -1;
		addr = l->address;
		at = where[0];
	} else if (n->kind == N_SCALAR && !cfg_node_is_null(n)) {
		addr = n->str;
	} else {
		return fail(x, n, path,
			    "expected an address like 127.0.0.1:50051, [::1]:50051 or unix:/path, "
			    "or a mapping {address: ..., tls: {...}}");
	}
	char *msg = cfg_parse_listen(addr, elem);
	if (!msg)
		return 0;
	char *p = n->kind == N_MAP ? xasprintf("%s.address", path) : xstrdup(path);
	fail(x, at, p, "%s", msg);
	free(p);
	free(msg);
	return -1;
}

static void listen_default(void *elem, const char *def)
{
	char *msg = cfg_parse_listen(def, elem);
	assert(!msg);
	(void)msg;
}

/* What needs a restart: the address, TLS on or off, insecure and the
 * services.  The TLS files and client-auth are read again on SIGHUP. */
static bool listen_equal(const void *a, const void *b)
{
	const struct cfg_listen *la = a, *lb = b;
	if (la->n_services != lb->n_services)
		return false;
	for (int i = 0; i < la->n_services; i++)
		if (strcmp(la->services[i], lb->services[i]))
			return false;
	return la->kind == lb->kind && la->port == lb->port && cfg_streq_null(la->host, lb->host) &&
	       cfg_streq_null(la->path, lb->path) && !la->tls == !lb->tls &&
	       la->insecure == lb->insecure;
}

static void listen_free(void *elem)
{
	struct cfg_listen *l = elem;
	cfg_free_fields(&listen_tab, l);
	free(l->host);
	free(l->path);
}

/* ---- http: entries --------------------------------------------------------
 * Like listen: entries ("127.0.0.1:50080", "unix:/path", or a mapping with
 * address: and insecure:), without TLS or services: the status page and
 * /metrics are plain HTTP/1.1. */

#define FH(field)                                                                                  \
	.off = offsetof(struct cfg_listen, field), .size = sizeof(((struct cfg_listen *)0)->field)
static const struct key http_keys[] = {
	{"address", K_STRING, FH(address), .check = cfg_check_nonempty, .required = true},
	{"insecure", K_BOOL, FH(insecure), .def = false},
};
static const struct keytab http_tab = {http_keys, ARRAY_LEN(http_keys)};

static int http_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	struct cfg_listen *l = elem;
	const struct node *where[ARRAY_LEN(http_keys)] = {0};
	const struct node *at = n;
	const char *addr;

	if (n->kind == N_MAP) {
		if (cfg_parse_obj(x, &http_tab, l, n, path, where))
			return -1;
		addr = l->address;
		at = where[0];
	} else if (n->kind == N_SCALAR && !cfg_node_is_null(n)) {
		addr = n->str;
	} else {
		return fail(x, n, path,
			    "expected an address like 127.0.0.1:50080, [::1]:50080 or unix:/path, "
			    "or a mapping {address: ..., insecure: true}");
	}
	char *msg = cfg_parse_listen(addr, elem);
	if (!msg)
		return 0;
	char *p = n->kind == N_MAP ? xasprintf("%s.address", path) : xstrdup(path);
	fail(x, at, p, "%s", msg);
	free(p);
	free(msg);
	return -1;
}

static void http_free(void *elem)
{
	struct cfg_listen *l = elem;
	cfg_free_fields(&http_tab, l);
	free(l->host);
	free(l->path);
}

static const struct list_ops http_ops = {
	.elem_size = sizeof(struct cfg_listen),
	.parse = http_parse,
	.equal = listen_equal,
	.free = http_free,
	.may_be_empty = true,
};

/* Index is enum cfg_storage. */
static const char *const storage_names[] = {"disk", "memory", "remote", "sharded", NULL};
/* Index is enum cfg_sandbox. */
static const char *const sandbox_names[] = {"bwrap", "none", NULL};

/* A list of non-empty strings (platform property names). */
static const struct list_ops strlist_ops = {
	.elem_size = sizeof(char *),
	.parse = cfg_strlist_parse,
	.set_default = cfg_strlist_default,
	.equal = cfg_strlist_equal,
	.free = cfg_strlist_free,
};

/* A list of "KEY=VALUE" strings (the platform properties of local workers). */
static int proplist_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n) || !strchr(n->str, '=') || n->str[0] == '=')
		return fail(x, n, path, "expected KEY=VALUE, like OSFamily=linux");
	*(char **)elem = xstrdup(n->str);
	return 0;
}

static const struct list_ops proplist_ops = {
	.elem_size = sizeof(char *),
	.parse = proplist_parse,
	.set_default = cfg_strlist_default,
	.equal = cfg_strlist_equal,
	.free = cfg_strlist_free,
};

#define FI(field)                                                                                  \
	.off = offsetof(struct cfg_instance, field),                                               \
	.size = sizeof(((struct cfg_instance *)0)->field)
static const struct key inst_keys[] = {
	{"name", K_STRING, FI(name), .def_str = "", .check = cfg_check_instance_name},
	{"storage", K_ENUM, FI(storage), .def = CFG_STORAGE_DISK, .names = storage_names},
	/* 0 = unbounded (disk) / 1 GiB (memory, see cfg_instance_storage_max). */
	{"storage-max-size", K_SIZE, FI(storage_max_size), .def = 0, .min = 0, .max = 1LL << 50},
	{"allow-updates", K_BOOL, FI(allow_updates), .def = true, .reload = true},
	{"verify-reads", K_BOOL, FI(verify_reads), .def = false},
	{"storage-fsync", K_BOOL, FI(storage_fsync), .def = false},
	/* Disk: small blobs packed in segments (blob_pack.h). */
	{"storage-small-blob-size", K_SIZE, FI(small_blob_size), .def = 64 * KIB, .min = 0,
	 .max = MIB},
	{"storage-segment-size", K_SIZE, FI(segment_size), .def = 64 * MIB, .min = 64 * KIB,
	 .max = 4 * GIB},
	{"storage-compact-live-percent", K_INT, FI(compact_live_percent), .def = 50, .min = 0,
	 .max = 100},
	/* Under gRPC's common 4 MiB receive limit with room for the envelope. */
	{"max-batch-size", K_SIZE, FI(max_batch_size), .def = 4 * MIB - 64 * KIB, .min = KIB,
	 .max = GIB},
	/* Remote execution (src/sched.c). */
	{"execution", K_BOOL, FI(execution), .def = false, .reload = true},
	{"max-execution-timeout", K_DURATION, FI(max_execution_timeout_us), .def = US_H,
	 .min = US_S, .max = 7 * US_D, .reload = true},
	{"no-worker-timeout", K_DURATION, FI(no_worker_timeout_us), .def = 10 * US_M,
	 .min = 100 * US_MS, .max = 7 * US_D, .reload = true},
	{"max-attempts", K_INT, FI(max_attempts), .def = 5, .min = 1, .max = 100, .reload = true},
	{"operation-retention", K_DURATION, FI(operation_retention_us), .def = 10 * US_M,
	 .min = US_S, .max = 30 * US_D, .reload = true},
	{"cancel-orphaned-jobs", K_BOOL, FI(cancel_orphaned_jobs), .def = false, .reload = true},
	/* A comma in def_str makes several default elements. */
	{"platform-properties", K_LIST, FI(platform_properties),
	 .count_off = offsetof(struct cfg_instance, n_platform_properties), .list = &strlist_ops,
	 .def_str = "OSFamily,ISA", .reload = true},
	/* storage: remote | sharded (cfg_shard.c, src/services/cas_remote.c). */
	{"shards", K_LIST, FI(shards), .count_off = offsetof(struct cfg_instance, n_shards),
	 .list = &cfg_shard_ops},
	{"shard-self", K_STRING, FI(shard_self), .check = cfg_check_nonempty},
	{"cache-size", K_SIZE, FI(cache_size), .def = 0, .min = 0, .max = 1LL << 40},
};
static const struct keytab inst_tab = {inst_keys, ARRAY_LEN(inst_keys)};

static int instance_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	const struct node *where[ARRAY_LEN(inst_keys)] = {0};

	if (n->kind != N_MAP)
		return fail(x, n, path, "expected a mapping like {name: \"\"}");
	char *outer = xasprintf("%s.", path);
	int r = cfg_parse_map(x, &inst_tab, elem, n, "", outer, where);
	free(outer);
	if (r == 0)
		cfg_apply_defaults(&inst_tab, elem, where);
	if (r == 0)
		r = cfg_shards_check(x, elem, n, path);
	return r;
}

static void instance_default(void *elem, const char *def)
{
	const struct node *where[ARRAY_LEN(inst_keys)] = {0};
	cfg_apply_defaults(&inst_tab, elem, where);
	free(((struct cfg_instance *)elem)->name);
	((struct cfg_instance *)elem)->name = xstrdup(def);
}

/* Names must be unique: clients pick the instance by name. */
static int instances_check(struct ctx *x, const struct node *seq, const char *path,
			   const void *elems, int n)
{
	const struct cfg_instance *in = elems;
	for (int i = 1; i < n; i++) {
		for (int j = 0; j < i; j++) {
			if (strcmp(in[i].name, in[j].name))
				continue;
			const struct node *at = cfg_node_get(seq->kids[i], "name");
			char *p = xasprintf("%s[%d].name", path, i);
			fail(x, at ? at : seq->kids[i], p,
			     "duplicate instance name \"%s\" (also %s[%d])", in[i].name, path, j);
			free(p);
			return -1;
		}
	}
	return 0;
}

static bool instance_equal(const void *a, const void *b)
{
	return !strcmp(((const struct cfg_instance *)a)->name,
		       ((const struct cfg_instance *)b)->name);
}

static void instance_free(void *elem)
{
	cfg_free_fields(&inst_tab, elem);
}

static const struct list_ops listen_ops = {
	.elem_size = sizeof(struct cfg_listen),
	.parse = listen_parse,
	.set_default = listen_default,
	.equal = listen_equal,
	.free = listen_free,
};
static const struct list_ops instance_ops = {
	.elem_size = sizeof(struct cfg_instance),
	.parse = instance_parse,
	.set_default = instance_default,
	.check = instances_check,
	.equal = instance_equal,
	.free = instance_free,
};

static const char *const format_names[] = {"text", "json", NULL};

#define F(field) .off = offsetof(struct cfg, field), .size = sizeof(((struct cfg *)0)->field)
/* Sections hold no value; designated so -Wextra sees every field set. */
#define SECTION(name)                                                                              \
	{                                                                                          \
		name, K_SECTION, .off = 0                                                          \
	}
#define LIST(field, count) F(field), .count_off = offsetof(struct cfg, count)

/* status-url: an absolute http(s) URL, nothing a page could misread;
 * a trailing '/' is dropped (the master appends /builds/ID). */
static char *check_status_url(char *s)
{
	size_t n = strlen(s);
	bool ok = (strncmp(s, "http://", 7) == 0 && n > 7) || (strncmp(s, "https://", 8) == 0 && n > 8);
	for (const unsigned char *p = (const unsigned char *)s; *p && ok; p++)
		ok = *p > ' ' && *p < 0x7f && !strchr("\"<>\\^`{|}", *p);
	if (!ok)
		return xasprintf("must be an http:// or https:// URL (printable, no spaces or quotes)");
	while (n > 0 && s[n - 1] == '/')
		s[--n] = '\0';
	return NULL;
}

/* Every key of reactor.conf.  Order is the order cfg_diff_static reports in;
 * a section row must precede its keys.  conf/reactor.conf and
 * man/reactor.conf.5 document the same rows. */
static const struct key cfg_keys[] = {
	{"listen", K_LIST, LIST(listen, n_listen), .list = &listen_ops,
	 .def_str = "127.0.0.1:50051"},
	{"ready-file", K_STRING, F(ready_file), .check = cfg_check_nonempty},
	/* The status page and /metrics; none unless configured. */
	{"http", K_LIST, LIST(http, n_http), .list = &http_ops},
	/* The status page's address as people reach it (status.c), for the
	 * build URLs the master reports; none: the first http: listener. */
	{"status-url", K_STRING, F(status_url), .check = check_status_url, .reload = true},
	{"state-dir", K_STRING, F(state_dir), .def_str = "state", .check = cfg_check_nonempty},

	SECTION("log"),
	{"log.level", K_ENUM, F(log_level), .def = LOG_INFO, .names = log_level_names,
	 .reload = true},
	{"log.format", K_ENUM, F(log_json), .def = 0, .names = format_names, .reload = true},
	{"log.access-log", K_BOOL, F(access_log), .def = false, .reload = true},

	SECTION("redis"),
	{"redis.embedded", K_BOOL, F(redis_embedded), .def = true},
	{"redis.server", K_STRING, F(redis_server), .def_str = "redis-server",
	 .check = cfg_check_nonempty},
	{"redis.address", K_STRING, F(redis_address), .check = check_redis_address},
	{"redis.password", K_STRING, F(redis_password), .check = cfg_check_nonempty},
	{"redis.database", K_INT, F(redis_db), .def = 0, .min = 0, .max = 15},
	{"redis.prefix", K_STRING, F(redis_prefix),
	 .def_str = "reactor:", .check = cfg_check_key_prefix},
	{"redis.connect-timeout", K_DURATION, F(redis_connect_timeout_us), .def = 2 * US_S,
	 .min = 10 * US_MS, .max = US_H},
	{"redis.reconnect-max", K_DURATION, F(redis_reconnect_max_us), .def = 5 * US_S,
	 .min = 10 * US_MS, .max = US_H},
	{"redis.maxmemory", K_SIZE, F(redis_maxmemory), .def = GIB, .min = MIB, .max = 1024 * GIB},
	{"redis.command-timeout", K_DURATION, F(redis_command_timeout_us), .def = 5 * US_S,
	 .min = 10 * US_MS, .max = US_H},
	{"redis.max-pending", K_INT, F(redis_max_pending), .def = 100000, .min = 1,
	 .max = 10000000},

	SECTION("http2"),
	{"http2.max-concurrent-streams", K_INT, F(h2_max_concurrent_streams), .def = 1000, .min = 1,
	 .max = 1000000, .reload = true},
	{"http2.max-header-list-size", K_SIZE, F(h2_max_header_list_size), .def = 16 * KIB,
	 .min = KIB, .max = 16 * MIB},
	/* nghttp2 windows are int32 on the wire: keep them well under 2^31. */
	{"http2.connection-window", K_SIZE, F(h2_conn_window), .def = 16 * MIB, .min = 64 * KIB,
	 .max = GIB},
	{"http2.stream-window", K_SIZE, F(h2_stream_window), .def = 4 * MIB, .min = 64 * KIB,
	 .max = GIB},
	{"http2.idle-timeout", K_DURATION, F(h2_idle_timeout_us), .def = 5 * US_M, .min = 0,
	 .max = 7 * US_D},
	{"http2.max-output-buffer", K_SIZE, F(h2_max_output_buffer), .def = 4 * MIB,
	 .min = 64 * KIB, .max = GIB},

	SECTION("grpc"),
	{"grpc.max-recv-message-size", K_SIZE, F(grpc_max_recv_message_size), .def = 16 * MIB,
	 .min = KIB, .max = GIB, .reload = true},
	{"grpc.max-send-message-size", K_SIZE, F(grpc_max_send_message_size), .def = 16 * MIB,
	 .min = KIB, .max = GIB},
	{"grpc.max-call-duration", K_DURATION, F(grpc_max_call_duration_us), .def = US_H,
	 .min = US_S, .max = 7 * US_D, .reload = true},

	SECTION("limits"),
	{"limits.max-buffered-per-stream", K_SIZE, F(limits_max_buffered_stream), .def = 0,
	 .min = 0, .max = GIB + 5, .reload = true},
	{"limits.max-buffered-per-connection", K_SIZE, F(limits_max_buffered_conn),
	 .def = 64 * MIB, .min = 64 * KIB, .max = 16 * GIB, .reload = true},
	{"limits.max-buffered-total", K_SIZE, F(limits_max_buffered_total), .def = 512 * MIB,
	 .min = 64 * KIB, .max = 1024 * GIB, .reload = true},
	{"limits.max-connections", K_INT, F(limits_max_connections), .def = 4096, .min = 1,
	 .max = 1000000, .reload = true},
	{"limits.max-connections-per-address", K_INT, F(limits_max_conns_per_addr), .def = 256,
	 .min = 0, .max = 1000000, .reload = true},
	{"limits.half-close-timeout", K_DURATION, F(limits_half_close_timeout_us),
	 .def = 5 * US_M, .min = 0, .max = 7 * US_D, .reload = true},
	{"limits.request-idle-timeout", K_DURATION, F(limits_request_idle_timeout_us),
	 .def = 5 * US_M, .min = 0, .max = 7 * US_D, .reload = true},

	{"shutdown-grace", K_DURATION, F(shutdown_grace_us), .def = 10 * US_S, .min = 0,
	 .max = US_H, .reload = true},

	SECTION("scheduler"),
	{"scheduler.bot-session-keepalive", K_DURATION, F(sched_bot_keepalive_us), .def = 60 * US_S,
	 .min = US_S, .max = US_D, .reload = true},
	{"scheduler.long-poll", K_DURATION, F(sched_long_poll_us), .def = 60 * US_S, .min = 0,
	 .max = US_H, .reload = true},
	{"scheduler.safety-net-interval", K_DURATION, F(sched_safety_net_us), .def = 5 * US_S,
	 .min = 10 * US_MS, .max = US_H, .reload = true},
	{"scheduler.keepalive-interval", K_DURATION, F(sched_keepalive_us), .def = 30 * US_S,
	 .min = 10 * US_MS, .max = US_H, .reload = true},
	{"scheduler.sweep-interval", K_DURATION, F(sched_sweep_us), .def = US_S, .min = 10 * US_MS,
	 .max = US_H, .reload = true},
	/* Fail fast (issue 13): how long after start an Execute for a platform
	 * no bot offers still waits (bots of before a restart reconnecting). */
	{"scheduler.start-grace", K_DURATION, F(sched_start_grace_us), .def = 60 * US_S, .min = 0,
	 .max = US_D, .reload = true},

	SECTION("buckets"),
	{"buckets.expiry-interval", K_DURATION, F(buckets_expiry_interval_us), .def = 10 * US_S,
	 .min = 10 * US_MS, .max = 10 * US_S, .reload = true},
	{"buckets.build-timeout", K_DURATION, F(buckets_build_timeout_us), .def = 2 * US_D,
	 .min = US_S, .max = 365 * US_D, .reload = true},
	{"buckets.timeout-check-interval", K_DURATION, F(buckets_timeout_check_interval_us),
	 .def = US_M, .min = 10 * US_MS, .max = US_H, .reload = true},
	{"buckets.client-operation-ttl", K_DURATION, F(buckets_op_ttl_us), .def = 60 * US_S,
	 .min = US_S, .max = US_D, .reload = true},

	/* What clients grow in Redis: retention and caps (all reloadable). */
	SECTION("action-cache"),
	{"action-cache.retention", K_DURATION, F(ac_retention_us), .def = 7 * US_D, .min = US_S,
	 .max = 3650 * US_D, .reload = true},
	{"buckets.retention", K_DURATION, F(buckets_retention_us), .def = 30 * US_D, .min = US_S,
	 .max = 3650 * US_D, .reload = true},
	{"buckets.max-tags", K_INT, F(buckets_max_tags), .def = 64, .min = 1, .max = 10000,
	 .reload = true},
	{"scheduler.max-platforms", K_INT, F(sched_max_platforms), .def = 1000, .min = 1,
	 .max = 1000000, .reload = true},

	SECTION("workers"),
	{"workers.local", K_INT, F(workers_local), .def = 0, .min = 0, .max = 256},
	{"workers.binary", K_STRING, F(workers_binary), .check = cfg_check_nonempty},
	{"workers.work-dir", K_STRING, F(workers_work_dir), .check = cfg_check_nonempty},
	{"workers.properties", K_LIST, LIST(workers_properties, n_workers_properties),
	 .list = &proplist_ops, .def_str = "OSFamily=linux,ISA=x86-64"},
	{"workers.sandbox", K_ENUM, F(workers_sandbox), .def = CFG_SANDBOX_BWRAP,
	 .names = sandbox_names},
	{"workers.bwrap", K_STRING, F(workers_bwrap), .check = cfg_check_nonempty},
	{"workers.run-as", K_STRING, F(workers_run_as), .check = cfg_check_nonempty},

	/* Server streams and partial uploads (bounded memory and descriptors). */
	{"buckets.watch-max-ids", K_INT, F(buckets_watch_max_ids), .def = 1000, .min = 1,
	 .max = 1000000, .reload = true},
	{"buckets.watch-max-queued", K_INT, F(buckets_watch_max_queued), .def = 1000, .min = 1,
	 .max = 1000000, .reload = true},
	SECTION("uploads"),
	{"uploads.max-open", K_INT, F(uploads_max_open), .def = 1024, .min = 1, .max = 1000000,
	 .reload = true},
	{"uploads.max-per-connection", K_INT, F(uploads_max_per_conn), .def = 64, .min = 1,
	 .max = 1000000, .reload = true},
	{"uploads.abandon-timeout", K_DURATION, F(uploads_abandon_timeout_us), .def = 10 * US_M,
	 .min = 100 * US_MS, .max = 7 * US_D, .reload = true},

	{"instances", K_LIST, LIST(instances, n_instances), .list = &instance_ops, .def_str = ""},

	/* Absent: no master.  Adding or removing it needs a restart; within it
	 * master_keys say what SIGHUP may change. */
	{"master", K_OBJECT, F(master), .obj = &cfg_master_ops},

	/* Absent: no authentication, everyone has every role.  Present (even
	 * empty): identities and grants as cfg_auth.c parses them. */
	{"auth", K_OBJECT, F(auth), .obj = &cfg_auth_ops, .reload = true},
};
static const struct keytab cfg_tab = {cfg_keys, ARRAY_LEN(cfg_keys)};

static int check_cross(struct ctx *x, const struct cfg *c, const struct node *const *where)
{
	const struct node *emb = where[cfg_find_key(&cfg_tab, "redis.embedded") - cfg_keys];
	const struct node *addr = where[cfg_find_key(&cfg_tab, "redis.address") - cfg_keys];

	if (c->redis_embedded && c->redis_address)
		return fail(x, addr, "redis.address",
			    "cannot be used with an embedded redis (set redis.embedded: false)");
	if (!c->redis_embedded && !c->redis_address)
		return fail(x, emb, "redis.embedded",
			    "false needs redis.address (the external server to use)");
	return 0;
}

/* ---- public API ---------------------------------------------------------- */

static int load(const char *name, const char *text, size_t len, struct cfg **out, char **err)
{
	struct ctx x = {.file = name, .text = text, .len = len};
	const struct node *where[ARRAY_LEN(cfg_keys)] = {0};
	struct cfg *c = xcalloc(1, sizeof *c);
	struct node *root;

	c->file = xstrdup(name);
	int r = cfg_read_tree(&x, &root);
	if (r == 0 && root && !cfg_node_is_null(root)) {
		if (root->kind != N_MAP)
			r = fail(&x, root, NULL, "expected a mapping of keys at the top level");
		else
			r = cfg_parse_map(&x, &cfg_tab, c, root, "", "", where);
	}
	if (r == 0) {
		cfg_apply_defaults(&cfg_tab, c, where);
		r = check_cross(&x, c, where);
	}
	/* Port 0 is only known once bound: the engine names the master then. */
	if (r == 0 && c->master && !c->master->name &&
	    !(c->listen[0].kind == CFG_LISTEN_TCP && c->listen[0].port == 0))
		c->master->name = cfg_master_default_name(c);
	cfg_node_free(root);
	if (r) {
		cfg_free(c);
		*out = NULL;
		*err = x.err;
		return -1;
	}
	assert(!x.err);
	*out = c;
	*err = NULL;
	return 0;
}

int cfg_load_string(const char *name, const char *text, struct cfg **out, char **err)
{
	return load(name, text, strlen(text), out, err);
}

int cfg_load(const char *file, struct cfg **out, char **err)
{
	FILE *f = fopen(file, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	*out = NULL;
	if (!f) {
		*err = xasprintf("%s: cannot open: %s", file, strerror(errno));
		return -1;
	}
	do {
		if (cap - len < 4096)
			buf = xrealloc(buf, cap = 2 * cap + 8192);
		len += n = fread(buf + len, 1, cap - len - 1, f);
	} while (n > 0);
	if (ferror(f)) {
		*err = xasprintf("%s: cannot read: %s", file, strerror(errno));
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	buf[len] = '\0';
	int r = load(file, buf, len, out, err);
	free(buf);
	return r;
}

void cfg_free(struct cfg *c)
{
	if (!c)
		return;
	cfg_free_fields(&cfg_tab, c);
	free(c->file);
	free(c);
}

const struct cfg_instance *cfg_instance_find(const struct cfg *c, const char *name)
{
	for (int i = 0; i < c->n_instances; i++)
		if (!strcmp(c->instances[i].name, name))
			return &c->instances[i];
	return NULL;
}

/* Append to *out the keys of t (prefixed) that SIGHUP may not change and
 * that differ; within an object present on both sides, its own keys. */
static void diff_tab(const struct keytab *t, const void *a, const void *b, const char *prefix,
		     char **out)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct key *k = &t->keys[i];
		if (k->type == K_SECTION || k->reload || cfg_field_equal(k, a, b))
			continue;
		if (k->type == K_OBJECT) {
			void *oa, *ob;
			memcpy(&oa, (const char *)a + k->off, sizeof oa);
			memcpy(&ob, (const char *)b + k->off, sizeof ob);
			if (oa && ob) {
				char *p = xasprintf("%s%s.", prefix, k->name);
				diff_tab(k->obj->tab, oa, ob, p, out);
				free(p);
				continue;
			}
		}
		char *more = *out ? xasprintf("%s, %s%s", *out, prefix, k->name)
				  : xasprintf("%s%s", prefix, k->name);
		free(*out);
		*out = more;
	}
}

char *cfg_diff_static(const struct cfg *a, const struct cfg *b)
{
	char *out = NULL;
	diff_tab(&cfg_tab, a, b, "", &out);
	return out;
}

/* ---- reloadable keys (issue 13: reactord(8) lists them) ------------------ */

static void each_reloadable(const struct keytab *t, const char *prefix,
			    void (*fn)(const char *name, void *arg), void *arg)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct key *k = &t->keys[i];
		if (k->type == K_SECTION)
			continue;
		char *name = xasprintf("%s%s", prefix, k->name);
		if (k->reload) {
			fn(name, arg); /* a reloadable object: the whole section */
		} else if (k->type == K_OBJECT && k->obj && k->obj->tab) {
			char *p = xasprintf("%s.", name);
			each_reloadable(k->obj->tab, p, fn, arg);
			free(p);
		} else if (k->type == K_LIST && k->list == &instance_ops) {
			each_reloadable(&inst_tab, "instances[].", fn, arg);
		}
		free(name);
	}
}

void cfg_each_reloadable(void (*fn)(const char *name, void *arg), void *arg)
{
	each_reloadable(&cfg_tab, "", fn, arg);
}
