/*
 * cfg.c - loads reactor.conf.  libyaml's event stream is turned into a small
 * tree of nodes that remember their line and column (cfg_yaml.c; scalar
 * parsing is in cfg_value.c), and one static table of
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

#define US_MS 1000LL
#define US_S  (1000 * US_MS)
#define US_M  (60 * US_S)
#define US_H  (60 * US_M)
#define US_D  (24 * US_H)
#define KIB   (1LL << 10)
#define MIB   (1LL << 20)
#define GIB   (1LL << 30)

/* String validators: return NULL or a malloc'd complaint.  They may rewrite
 * the value in place, but only to make it shorter. */

static char *check_nonempty(char *s)
{
	return *s ? NULL : xasprintf("must not be empty");
}

/* redis.prefix starts every key and channel name: keep it one printable
 * word, so redis-cli patterns and logs show it as written. */
static char *check_key_prefix(char *s)
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
static char *check_instance_name(char *s)
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

/* ---- the key table ------------------------------------------------------- */

/* K_OBJECT: a pointer to a malloc'd struct parsed by its own table (NULL
 * when the key is absent: master:). */
enum ktype { K_SECTION, K_BOOL, K_INT, K_SIZE, K_DURATION, K_STRING, K_ENUM, K_LIST, K_OBJECT };

/* How a K_LIST key parses, defaults, compares and frees its elements.
 * A list is written as a YAML sequence (parse), or, when parse_kv is set,
 * as a mapping NAME: VALUE whose entries become the elements (builders,
 * env); then the node handed to check is the mapping, and its values are
 * kids[2 * i + 1]. */
struct list_ops {
	size_t elem_size;
	int (*parse)(struct ctx *x, const struct node *n, const char *path, void *elem);
	void (*set_default)(void *elem, const char *def);
	/* Checks across elements (NULL for none); seq is the list's node. */
	int (*check)(struct ctx *x, const struct node *seq, const char *path, const void *elems,
		     int n);
	bool (*equal)(const void *a, const void *b);
	void (*free)(void *elem);
	int (*parse_kv)(struct ctx *x, const struct node *key, const struct node *val,
			const char *path, void *elem);
	bool may_be_empty; /* [] or {} is valid (an empty list) */
};

struct keytab;

/* How a K_OBJECT key's struct is parsed: its table, its size, and the
 * rules across its keys (NULL for none), given the value node of each key
 * of the table (where[i], NULL when absent) and the object's own node. */
struct obj_ops {
	const struct keytab *tab;
	size_t size;
	int (*check)(struct ctx *x, void *obj, const struct node *n, const char *path,
		     const struct node *const *where);
};

struct key {
	const char *name; /* dotted path relative to its table */
	enum ktype type;
	size_t off, size;	  /* the field; for K_LIST the array pointer */
	size_t count_off;	  /* K_LIST: the int element count */
	int64_t def, min, max;	  /* numeric kinds; K_ENUM: index into names */
	const char *def_str;	  /* K_STRING: NULL = unset; K_LIST: the one default element */
	bool reload;		  /* SIGHUP may change it */
	const char *const *names; /* K_ENUM: NULL-terminated; value = index */
	char *(*check)(char *s);  /* K_STRING: extra validation */
	const struct list_ops *list;
	bool required;		   /* no default: leaving it out is an error */
	const struct obj_ops *obj; /* K_OBJECT */
};

struct keytab {
	const struct key *keys;
	size_t n;
};

static int parse_map(struct ctx *x, const struct keytab *t, void *base, const struct node *map,
		     const char *section, const char *outer, const struct node **where);
static void apply_defaults(const struct keytab *t, void *base, const struct node *const *where);
static void free_fields(const struct keytab *t, void *base);

static int listen_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n))
		return fail(x, n, path,
			    "expected an address like 127.0.0.1:50051, [::1]:50051 or unix:/path");
	char *msg = cfg_parse_listen(n->str, elem);
	if (!msg)
		return 0;
	fail(x, n, path, "%s", msg);
	free(msg);
	return -1;
}

static void listen_default(void *elem, const char *def)
{
	char *msg = cfg_parse_listen(def, elem);
	assert(!msg);
	(void)msg;
}

static bool listen_equal(const void *a, const void *b)
{
	const struct cfg_listen *la = a, *lb = b;
	return la->kind == lb->kind && la->port == lb->port && cfg_streq_null(la->host, lb->host) &&
	       cfg_streq_null(la->path, lb->path);
}

static void listen_free(void *elem)
{
	struct cfg_listen *l = elem;
	free(l->host);
	free(l->path);
}

/* Index is enum cfg_storage. */
static const char *const storage_names[] = {"disk", "memory", NULL};

/* A list of non-empty strings (platform property names). */
static int strlist_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n) || !n->str[0])
		return fail(x, n, path, "expected a non-empty string");
	*(char **)elem = xstrdup(n->str);
	return 0;
}

static void strlist_default(void *elem, const char *def)
{
	*(char **)elem = xstrdup(def);
}

static bool strlist_equal(const void *a, const void *b)
{
	return !strcmp(*(char *const *)a, *(char *const *)b);
}

static void strlist_free(void *elem)
{
	free(*(char **)elem);
}

static const struct list_ops strlist_ops = {
	.elem_size = sizeof(char *),
	.parse = strlist_parse,
	.set_default = strlist_default,
	.equal = strlist_equal,
	.free = strlist_free,
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
	.set_default = strlist_default,
	.equal = strlist_equal,
	.free = strlist_free,
};

#define FI(field)                                                                                  \
	.off = offsetof(struct cfg_instance, field),                                               \
	.size = sizeof(((struct cfg_instance *)0)->field)
static const struct key inst_keys[] = {
	{"name", K_STRING, FI(name), .def_str = "", .check = check_instance_name},
	{"storage", K_ENUM, FI(storage), .def = CFG_STORAGE_DISK, .names = storage_names},
	/* 0 = unbounded (disk) / 1 GiB (memory, see cfg_instance_storage_max). */
	{"storage-max-size", K_SIZE, FI(storage_max_size), .def = 0, .min = 0, .max = 1LL << 50},
	{"allow-updates", K_BOOL, FI(allow_updates), .def = true, .reload = true},
	{"verify-reads", K_BOOL, FI(verify_reads), .def = false},
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
};
static const struct keytab inst_tab = {inst_keys, ARRAY_LEN(inst_keys)};

static int instance_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	const struct node *where[ARRAY_LEN(inst_keys)] = {0};

	if (n->kind != N_MAP)
		return fail(x, n, path, "expected a mapping like {name: \"\"}");
	char *outer = xasprintf("%s.", path);
	int r = parse_map(x, &inst_tab, elem, n, "", outer, where);
	free(outer);
	if (r == 0)
		apply_defaults(&inst_tab, elem, where);
	return r;
}

static void instance_default(void *elem, const char *def)
{
	const struct node *where[ARRAY_LEN(inst_keys)] = {0};
	apply_defaults(&inst_tab, elem, where);
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
	free_fields(&inst_tab, elem);
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

/* ---- master: (issue 10) --------------------------------------------------- */

static int parse_obj(struct ctx *x, const struct keytab *t, void *obj, const struct node *n,
		     const char *path, const struct node **where);
static bool tab_equal(const struct keytab *t, const void *a, const void *b);
static const char *fmt_bound(enum ktype t, int64_t v, char *buf, size_t len);
static const struct key *find_key(const struct keytab *t, const char *name);

/* Builder, property and step names end up in Redis keys, build records,
 * log lines and environment variable names: one word of
 * [A-Za-z0-9_.-]. */
static char *check_ident(char *s)
{
	if (!*s)
		return xasprintf("must not be empty");
	if (strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
	    strlen(s))
		return xasprintf("\"%s\" may only contain letters, digits, \"_\", \".\" and \"-\"",
				 s);
	return NULL;
}

/* The same rule as the Buckets service (bk_bucket_name_ok in
 * src/domain/buckets_input.c): [a-z0-9][a-z0-9._-]{0,99}.  Repeated here
 * because core may not include the domain; a bucket the service would
 * refuse is caught at load time instead of on every peek. */
#define BUCKET_NAME_MAX 100
static bool bucket_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > BUCKET_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

static int bucket_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n))
		return fail(x, n, path, "expected a bucket name");
	if (!bucket_name_ok(n->str))
		return fail(
			x, n, path,
			"\"%.120s\" is not a valid bucket name (want [a-z0-9][a-z0-9._-]{0,99})",
			n->str);
	*(char **)elem = xstrdup(n->str);
	return 0;
}

/* Elements named twice: the second one's node (its "name" member when the
 * elements are mappings) gets the error. */
static int strlist_unique(struct ctx *x, const struct node *seq, const char *path,
			  const void *elems, int n, const char *what)
{
	char *const *s = elems;
	for (int i = 1; i < n; i++)
		for (int j = 0; j < i; j++)
			if (!strcmp(s[i], s[j])) {
				char *p = xasprintf("%s[%d]", path, i);
				fail(x, seq->kids[i], p, "duplicate %s \"%s\" (also %s[%d])", what,
				     s[i], path, j);
				free(p);
				return -1;
			}
	return 0;
}

static int buckets_check(struct ctx *x, const struct node *seq, const char *path, const void *elems,
			 int n)
{
	return strlist_unique(x, seq, path, elems, n, "bucket");
}

static const struct list_ops bucket_ops = {
	.elem_size = sizeof(char *),
	.parse = bucket_parse,
	.set_default = strlist_default,
	.check = buckets_check,
	.equal = strlist_equal,
	.free = strlist_free,
};

/* A gRPC endpoint the master dials with rc_client_connect: host:port,
 * [v6]:port or unix:/path ("grpc://" in front, Bazel's spelling, is
 * dropped). */
static char *check_endpoint(char *s)
{
	char *host;
	int port;

	if (!strncmp(s, "grpc://", 7))
		memmove(s, s + 7, strlen(s + 7) + 1);
	if (!strncmp(s, "unix:", 5))
		return s[5] == '/' ? NULL
				   : xasprintf("unix: needs an absolute socket path, like "
					       "unix:/run/reactord.sock");
	char *msg = cfg_split_hostport(s, 1, &host, &port);
	if (!msg)
		free(host);
	return msg;
}

/* argv: strings, "" included (sh -c ''), but argv[0] names a program. */
static int arg_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n))
		return fail(x, n, path, "expected a string (quote \"\" for an empty argument)");
	*(char **)elem = xstrdup(n->str);
	return 0;
}

static int argv_check(struct ctx *x, const struct node *seq, const char *path, const void *elems,
		      int n)
{
	if (!**(char *const *)elems) {
		char *p = xasprintf("%s[0]", path);
		fail(x, seq->kids[0], p, "the program name must not be empty");
		free(p);
		return -1;
	}
	return 0;
}

static const struct list_ops argv_ops = {
	.elem_size = sizeof(char *),
	.parse = arg_parse,
	.set_default = strlist_default,
	.check = argv_check,
	.equal = strlist_equal,
	.free = strlist_free,
};

/* env: and platform: mappings, kept as "KEY=VALUE" like workers.properties.
 * A key with "=" could not be split back. */
static int keyval_parse(struct ctx *x, const struct node *key, const struct node *val,
			const char *path, void *elem)
{
	if (!key->str[0])
		return fail(x, key, path, "names must not be empty");
	if (strchr(key->str, '='))
		return fail(x, key, path, "names must not contain \"=\"");
	if (val->kind != N_SCALAR || cfg_node_is_null(val))
		return fail(x, val, path, "expected a string (quote \"\" for an empty value)");
	*(char **)elem = xasprintf("%s=%s", key->str, val->str);
	return 0;
}

static const struct list_ops keyval_ops = {
	.elem_size = sizeof(char *),
	.equal = strlist_equal,
	.free = strlist_free,
	.parse_kv = keyval_parse,
	.may_be_empty = true,
};

/* outputs: REAPI output paths, relative to the action's (the build's)
 * working directory, normalized: no leading "/", no empty, "." or ".."
 * component, so a step can never write outside its workspace. */
static int output_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n) || !n->str[0])
		return fail(x, n, path, "expected a relative path");
	const char *s = n->str;
	if (s[0] == '/')
		return fail(x, n, path, "\"%s\" must be relative to the workspace", s);
	for (const char *c = s;;) {
		size_t len = strcspn(c, "/");
		if (len == 0)
			return fail(x, n, path, "\"%s\" has an empty component", s);
		if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
			return fail(x, n, path, "\"%s\" must not contain \".\" or \"..\"", s);
		if (!c[len])
			break;
		c += len + 1;
	}
	*(char **)elem = xstrdup(s);
	return 0;
}

static int outputs_check(struct ctx *x, const struct node *seq, const char *path, const void *elems,
			 int n)
{
	return strlist_unique(x, seq, path, elems, n, "output");
}

static const struct list_ops output_ops = {
	.elem_size = sizeof(char *),
	.parse = output_parse,
	.set_default = strlist_default,
	.check = outputs_check,
	.equal = strlist_equal,
	.free = strlist_free,
	.may_be_empty = true,
};

#define FS(field)                                                                                  \
	.off = offsetof(struct cfg_step, field), .size = sizeof(((struct cfg_step *)0)->field)
#define LS(field, count) FS(field), .count_off = offsetof(struct cfg_step, count)
static const struct key step_keys[] = {
	{"name", K_STRING, FS(name), .check = check_ident, .required = true},
	{"argv", K_LIST, LS(argv, argc), .list = &argv_ops, .required = true},
	{"env", K_LIST, LS(env, n_env), .list = &keyval_ops},
	/* 0: the executor's default (its instance's max-execution-timeout). */
	{"timeout", K_DURATION, FS(timeout_us), .def = 0, .min = 0, .max = 7 * US_D},
	{"platform", K_LIST, LS(platform, n_platform), .list = &keyval_ops},
	{"outputs", K_LIST, LS(outputs, n_outputs), .list = &output_ops},
	{"cache", K_BOOL, FS(cache), .def = true},
};
static const struct keytab step_tab = {step_keys, ARRAY_LEN(step_keys)};

static int step_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	const struct node *where[ARRAY_LEN(step_keys)] = {0};
	return parse_obj(x, &step_tab, elem, n, path, where);
}

/* Step names name the step records of a build: unique per builder. */
static int steps_check(struct ctx *x, const struct node *seq, const char *path, const void *elems,
		       int n)
{
	const struct cfg_step *st = elems;
	for (int i = 1; i < n; i++) {
		for (int j = 0; j < i; j++) {
			if (strcmp(st[i].name, st[j].name))
				continue;
			char *p = xasprintf("%s[%d].name", path, i);
			fail(x, cfg_node_get(seq->kids[i], "name"), p,
			     "duplicate step name \"%s\" (also %s[%d])", st[i].name, path, j);
			free(p);
			return -1;
		}
	}
	return 0;
}

static bool step_equal(const void *a, const void *b)
{
	return tab_equal(&step_tab, a, b);
}

static void step_free(void *elem)
{
	free_fields(&step_tab, elem);
}

static const struct list_ops step_ops = {
	.elem_size = sizeof(struct cfg_step),
	.parse = step_parse,
	.check = steps_check,
	.equal = step_equal,
	.free = step_free,
};

/* Index is enum cfg_prop_type. */
static const char *const prop_type_names[] = {"string", "int", "bool", "number", NULL};

#define FP(field)                                                                                  \
	.off = offsetof(struct cfg_builder_prop, field),                                           \
	.size = sizeof(((struct cfg_builder_prop *)0)->field)
/* "default" is read as text into def_json and then turned into JSON of
 * the property's type by prop_parse. */
static const struct key prop_keys[] = {
	{"type", K_ENUM, FP(type), .names = prop_type_names, .required = true},
	{"default", K_STRING, FP(def_json)},
};
static const struct keytab prop_tab = {prop_keys, ARRAY_LEN(prop_keys)};

/* The default's text as a JSON value of type t, or NULL when it is not
 * one.  YAML quoting is not looked at: "3" and 3 are both the int 3. */
static char *prop_default_json(int t, const char *s)
{
	char *out = NULL;
	size_t n = 0;
	bool b;

	if (t == CFG_PROP_STRING) {
		json_quote(&out, &n, s, strlen(s));
		return out;
	}
	if (t == CFG_PROP_BOOL)
		return cfg_parse_bool(s, &b) ? NULL : xstrdup(b ? "true" : "false");
	char err[64];
	struct json *j = json_parse(s, strlen(s), err, sizeof err);
	bool ok = j && j->type == JSON_NUMBER && (t == CFG_PROP_NUMBER || j->is_int);
	json_free(j);
	return ok ? xstrdup(s) : NULL;
}

static int prop_parse(struct ctx *x, const struct node *key, const struct node *val,
		      const char *path, void *elem)
{
	static const char *const like[] = {"", " (like 3 or -1)", " (true or false)",
					   " (like 1.5 or 3)"};
	struct cfg_builder_prop *p = elem;
	const struct node *where[ARRAY_LEN(prop_keys)] = {0};

	p->name = xstrdup(key->str);
	char *msg = check_ident(p->name);
	if (msg) {
		fail(x, key, path, "%s", msg);
		free(msg);
		return -1;
	}
	if (val->kind != N_MAP)
		return fail(x, val, path, "expected a mapping like {type: string}");
	if (parse_obj(x, &prop_tab, p, val, path, where))
		return -1;
	const struct node *def = where[1];
	if (def && cfg_node_is_null(def)) {
		char *dp = xasprintf("%s.default", path);
		fail(x, def, dp, "needs a value (leave default out to make the property required)");
		free(dp);
		return -1;
	}
	p->required = !p->def_json;
	if (p->def_json) {
		char *json = prop_default_json(p->type, p->def_json);
		if (!json) {
			char *dp = xasprintf("%s.default", path);
			fail(x, def, dp, "\"%s\" is not of type %s%s", p->def_json,
			     prop_type_names[p->type], like[p->type]);
			free(dp);
			return -1;
		}
		free(p->def_json);
		p->def_json = json;
	}
	return 0;
}

static bool prop_equal(const void *a, const void *b)
{
	const struct cfg_builder_prop *pa = a, *pb = b;
	return !strcmp(pa->name, pb->name) && pa->type == pb->type &&
	       cfg_streq_null(pa->def_json, pb->def_json);
}

static void prop_free(void *elem)
{
	struct cfg_builder_prop *p = elem;
	free(p->name);
	free(p->def_json);
}

static const struct list_ops prop_ops = {
	.elem_size = sizeof(struct cfg_builder_prop),
	.equal = prop_equal,
	.free = prop_free,
	.parse_kv = prop_parse,
	.may_be_empty = true,
};

#define FB(field)                                                                                  \
	.off = offsetof(struct cfg_builder, field), .size = sizeof(((struct cfg_builder *)0)->field)
static const struct key builder_keys[] = {
	{"properties", K_LIST, FB(props), .count_off = offsetof(struct cfg_builder, n_props),
	 .list = &prop_ops},
	{"steps", K_LIST, FB(steps), .count_off = offsetof(struct cfg_builder, n_steps),
	 .list = &step_ops, .required = true},
};
static const struct keytab builder_tab = {builder_keys, ARRAY_LEN(builder_keys)};

static int builder_parse(struct ctx *x, const struct node *key, const struct node *val,
			 const char *path, void *elem)
{
	struct cfg_builder *b = elem;
	const struct node *where[ARRAY_LEN(builder_keys)] = {0};

	b->name = xstrdup(key->str);
	char *msg = check_ident(b->name);
	if (msg) {
		fail(x, key, path, "%s", msg);
		free(msg);
		return -1;
	}
	if (val->kind != N_MAP)
		return fail(x, val, path, "expected a mapping with steps:");
	return parse_obj(x, &builder_tab, b, val, path, where);
}

static bool builder_equal(const void *a, const void *b)
{
	return !strcmp(((const struct cfg_builder *)a)->name,
		       ((const struct cfg_builder *)b)->name) &&
	       tab_equal(&builder_tab, a, b);
}

static void builder_free(void *elem)
{
	free(((struct cfg_builder *)elem)->name);
	free_fields(&builder_tab, elem);
}

static const struct list_ops builder_ops = {
	.elem_size = sizeof(struct cfg_builder),
	.equal = builder_equal,
	.free = builder_free,
	.parse_kv = builder_parse,
};

/* Index is the value of cfg_master.on_shutdown_reset. */
static const char *const shutdown_names[] = {"abandon", "reset", NULL};

#define FM(field)                                                                                  \
	.off = offsetof(struct cfg_master, field), .size = sizeof(((struct cfg_master *)0)->field)
#define LM(field, count) FM(field), .count_off = offsetof(struct cfg_master, count)
/* Order is the order cfg_diff_static reports in. */
static const struct key master_keys[] = {
	/* Default (host name + first listener) filled in by master_finish. */
	{"name", K_STRING, FM(name), .check = check_key_prefix},
	{"buckets", K_LIST, LM(buckets, n_buckets), .list = &bucket_ops, .required = true},
	{"server", K_STRING, FM(server), .check = check_endpoint},
	{"executor", K_STRING, FM(executor), .check = check_endpoint},
	{"executor-instance", K_STRING, FM(executor_instance), .def_str = "",
	 .check = check_instance_name},
	{"max-lease-count", K_INT, FM(max_lease_count), .def = 10, .min = 1, .max = 10000,
	 .reload = true},
	{"poll-interval", K_DURATION, FM(poll_interval_us), .def = 10 * US_S, .min = 100 * US_MS,
	 .max = US_H, .reload = true},
	{"heartbeat-interval", K_DURATION, FM(heartbeat_interval_us), .def = 60 * US_S,
	 .min = 100 * US_MS, .max = US_H, .reload = true},
	/* Five heartbeats: a master survives a few minutes of trouble with the
	 * Buckets service, and a dead one's builds move within 5 minutes. */
	{"lease-duration", K_DURATION, FM(lease_duration_us), .def = 5 * US_M, .min = 200 * US_MS,
	 .max = US_D, .reload = true},
	{"on-shutdown", K_ENUM, FM(on_shutdown_reset), .def = 0, .names = shutdown_names},
	{"builders", K_LIST, LM(builders, n_builders), .list = &builder_ops, .required = true,
	 .reload = true},
};
static const struct keytab master_tab = {master_keys, ARRAY_LEN(master_keys)};

/* A lease must outlive one lost heartbeat. */
static int master_check(struct ctx *x, void *obj, const struct node *n, const char *path,
			const struct node *const *where)
{
	const struct cfg_master *m = obj;
	const struct node *lease = where[find_key(&master_tab, "lease-duration") - master_keys];
	const struct node *hb = where[find_key(&master_tab, "heartbeat-interval") - master_keys];
	char l[32], h[32];

	if (m->heartbeat_interval_us <= INT64_MAX / 2 &&
	    m->lease_duration_us >= 2 * m->heartbeat_interval_us)
		return 0;
	fmt_bound(K_DURATION, m->lease_duration_us, l, sizeof l);
	fmt_bound(K_DURATION, m->heartbeat_interval_us, h, sizeof h);
	char *p = xasprintf("%s.%s", path, lease ? "lease-duration" : "heartbeat-interval");
	fail(x, lease ? lease : hb, p,
	     "lease-duration (%s) must be at least twice heartbeat-interval (%s), so one lost "
	     "heartbeat does not lose the lease",
	     l, h);
	free(p);
	return -1;
}

static const struct obj_ops master_ops = {&master_tab, sizeof(struct cfg_master), master_check};

/* The default leasee: "HOST:" + the first listener as written, e.g.
 * "ci7:127.0.0.1:50051", "ci7:[::1]:50051" or "ci7:unix:/run/r.sock"
 * (not used for port 0, which only the bound socket knows). */
static char *master_default_name(const struct cfg *c)
{
	char host[256];
	const struct cfg_listen *l = &c->listen[0];

	if (gethostname(host, sizeof host) != 0 || !host[0])
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	if (l->kind == CFG_LISTEN_UNIX)
		return xasprintf("%s:unix:%s", host, l->path);
	if (strchr(l->host, ':'))
		return xasprintf("%s:[%s]:%d", host, l->host, l->port);
	return xasprintf("%s:%s:%d", host, l->host, l->port);
}

/* Index is the value of cfg.log_json. */
static const char *const format_names[] = {"text", "json", NULL};

#define F(field) .off = offsetof(struct cfg, field), .size = sizeof(((struct cfg *)0)->field)
/* Sections hold no value; designated so -Wextra sees every field set. */
#define SECTION(name)                                                                              \
	{                                                                                          \
		name, K_SECTION, .off = 0                                                          \
	}
#define LIST(field, count) F(field), .count_off = offsetof(struct cfg, count)

/* Every key of reactor.conf.  Order is the order cfg_diff_static reports in;
 * a section row must precede its keys.  conf/reactor.conf and
 * man/reactor.conf.5 document the same rows. */
static const struct key cfg_keys[] = {
	{"listen", K_LIST, LIST(listen, n_listen), .list = &listen_ops,
	 .def_str = "127.0.0.1:50051"},
	{"ready-file", K_STRING, F(ready_file), .check = check_nonempty},
	{"state-dir", K_STRING, F(state_dir), .def_str = "state", .check = check_nonempty},

	SECTION("log"),
	{"log.level", K_ENUM, F(log_level), .def = LOG_INFO, .names = log_level_names,
	 .reload = true},
	{"log.format", K_ENUM, F(log_json), .def = 0, .names = format_names, .reload = true},
	{"log.access-log", K_BOOL, F(access_log), .def = false, .reload = true},

	SECTION("redis"),
	{"redis.embedded", K_BOOL, F(redis_embedded), .def = true},
	{"redis.server", K_STRING, F(redis_server), .def_str = "redis-server",
	 .check = check_nonempty},
	{"redis.address", K_STRING, F(redis_address), .check = check_redis_address},
	{"redis.password", K_STRING, F(redis_password), .check = check_nonempty},
	{"redis.database", K_INT, F(redis_db), .def = 0, .min = 0, .max = 15},
	{"redis.prefix", K_STRING, F(redis_prefix),
	 .def_str = "reactor:", .check = check_key_prefix},
	{"redis.connect-timeout", K_DURATION, F(redis_connect_timeout_us), .def = 2 * US_S,
	 .min = 10 * US_MS, .max = US_H},
	{"redis.reconnect-max", K_DURATION, F(redis_reconnect_max_us), .def = 5 * US_S,
	 .min = 10 * US_MS, .max = US_H},

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

	SECTION("buckets"),
	{"buckets.expiry-interval", K_DURATION, F(buckets_expiry_interval_us), .def = 10 * US_S,
	 .min = 10 * US_MS, .max = 10 * US_S, .reload = true},
	{"buckets.build-timeout", K_DURATION, F(buckets_build_timeout_us), .def = 2 * US_D,
	 .min = US_S, .max = 365 * US_D, .reload = true},
	{"buckets.timeout-check-interval", K_DURATION, F(buckets_timeout_check_interval_us),
	 .def = US_M, .min = 10 * US_MS, .max = US_H, .reload = true},
	{"buckets.client-operation-ttl", K_DURATION, F(buckets_op_ttl_us), .def = 60 * US_S,
	 .min = US_S, .max = US_D, .reload = true},

	SECTION("workers"),
	{"workers.local", K_INT, F(workers_local), .def = 0, .min = 0, .max = 256},
	{"workers.binary", K_STRING, F(workers_binary), .check = check_nonempty},
	{"workers.work-dir", K_STRING, F(workers_work_dir), .check = check_nonempty},
	{"workers.properties", K_LIST, LIST(workers_properties, n_workers_properties),
	 .list = &proplist_ops, .def_str = "OSFamily=linux,ISA=x86-64"},

	{"instances", K_LIST, LIST(instances, n_instances), .list = &instance_ops, .def_str = ""},

	/* Absent: no master.  Adding or removing it needs a restart; within it
	 * master_keys say what SIGHUP may change. */
	{"master", K_OBJECT, F(master), .obj = &master_ops},
};
static const struct keytab cfg_tab = {cfg_keys, ARRAY_LEN(cfg_keys)};

/* ---- the table-driven engine --------------------------------------------- */

/* Numeric fields are bool, int/uint32_t or int64_t; the table records the
 * size and every 4-byte field holds a value in 0..INT32_MAX, where int and
 * uint32_t share a representation. */
static void store_int(void *field, size_t size, int64_t v)
{
	if (size == sizeof(bool)) {
		bool b = v != 0;
		memcpy(field, &b, sizeof b);
	} else if (size == sizeof(int32_t)) {
		assert(v >= 0 && v <= INT32_MAX);
		int32_t i = (int32_t)v;
		memcpy(field, &i, sizeof i);
	} else {
		assert(size == sizeof(int64_t));
		memcpy(field, &v, sizeof v);
	}
}

static int64_t load_int(const void *field, size_t size)
{
	bool b;
	int32_t i;
	int64_t v;
	if (size == sizeof(bool))
		return memcpy(&b, field, sizeof b), b;
	if (size == sizeof(int32_t))
		return memcpy(&i, field, sizeof i), i;
	return memcpy(&v, field, sizeof v), v;
}

static void *list_get(const struct key *k, const void *base, int *n)
{
	void *arr;
	memcpy(&arr, (const char *)base + k->off, sizeof arr);
	memcpy(n, (const char *)base + k->count_off, sizeof *n);
	return arr;
}

/* Bounds as people write them: "64KiB", "1h", "0s". */
static const char *fmt_bound(enum ktype t, int64_t v, char *buf, size_t len)
{
	static const struct {
		const char *unit;
		int64_t mult;
	} sizes[] = {{"GiB", GIB}, {"MiB", MIB}, {"KiB", KIB}},
	  durs[] = {{"d", US_D}, {"h", US_H}, {"m", US_M}, {"s", US_S}, {"ms", US_MS}};

	for (size_t i = 0; t == K_SIZE && v && i < ARRAY_LEN(sizes); i++)
		if (v % sizes[i].mult == 0)
			return snprintf(buf, len, "%lld%s", (long long)(v / sizes[i].mult),
					sizes[i].unit),
			       buf;
	for (size_t i = 0; t == K_DURATION && v && i < ARRAY_LEN(durs); i++)
		if (v % durs[i].mult == 0)
			return snprintf(buf, len, "%lld%s", (long long)(v / durs[i].mult),
					durs[i].unit),
			       buf;
	snprintf(buf, len, "%lld%s", (long long)v, t != K_DURATION ? "" : v ? "us" : "s");
	return buf;
}

static int parse_list(struct ctx *x, const struct key *k, void *base, const struct node *v,
		      const char *path)
{
	const struct list_ops *ops = k->list;
	bool keyed = ops->parse_kv != NULL;
	size_t step = keyed ? 2 : 1, count = v->n_kids / step;

	if (v->kind != (keyed ? N_MAP : N_SEQ))
		return fail(x, v, path, keyed ? "expected a mapping" : "expected a list");
	if (count == 0)
		return ops->may_be_empty ? 0 : fail(x, v, path, "needs at least one entry");
	/* Owned by the struct from here on, so cfg_free cleans up after an
	 * error in a later element. */
	char *arr = xcalloc(count, ops->elem_size);
	int n = (int)count;
	memcpy((char *)base + k->off, &arr, sizeof arr);
	memcpy((char *)base + k->count_off, &n, sizeof n);
	for (size_t i = 0; i < count; i++) {
		const struct node *kn = v->kids[i * step];
		char *p;
		int r;
		if (!keyed) {
			p = xasprintf("%s[%zu]", path, i);
			r = ops->parse(x, kn, p, arr + i * ops->elem_size);
		} else if (kn->kind != N_SCALAR) {
			p = NULL;
			r = fail(x, kn, path, "keys must be plain strings");
		} else {
			const struct node *first = NULL;
			p = xasprintf("%s.%s", path, kn->str);
			for (size_t j = 0; j < i && !first; j++)
				if (!strcmp(v->kids[2 * j]->str, kn->str))
					first = v->kids[2 * j];
			r = first ? fail(x, kn, p, "duplicate key (first at line %d)", first->line)
				  : ops->parse_kv(x, kn, v->kids[i * 2 + 1], p,
						  arr + i * ops->elem_size);
		}
		free(p);
		if (r)
			return -1;
	}
	return ops->check ? ops->check(x, v, path, arr, n) : 0;
}

/* Parse value node v for key k into base. */
static int parse_value(struct ctx *x, const struct key *k, void *base, const struct node *v,
		       const char *path)
{
	void *field = (char *)base + k->off;
	const char *s = v->kind == N_SCALAR ? v->str : NULL;
	int64_t n = 0;
	int shape;
	bool b;
	char lo[32], hi[32];

	switch (k->type) {
	case K_BOOL:
		if (!s || cfg_parse_bool(s, &b))
			return fail(x, v, path, "expected a boolean (true/false)");
		store_int(field, k->size, b);
		return 0;
	case K_INT:
		if (!s || cfg_parse_int(s, &n))
			return fail(x, v, path, "expected an integer");
		break;
	case K_SIZE:
		if (!s || !(shape = cfg_number_shape(s)) || (shape > 0 && parse_size(s, &n)))
			return fail(x, v, path, "expected a size like 4MiB");
		n = shape > 0 ? n : INT64_MAX;
		break;
	case K_DURATION:
		if (!s || !(shape = cfg_number_shape(s)) || (shape > 0 && parse_duration_us(s, &n)))
			return fail(x, v, path, "expected a duration like 10s or 1m");
		n = shape > 0 ? n : INT64_MAX;
		break;
	case K_ENUM: {
		char list[128] = "";
		for (int i = 0; s && k->names[i]; i++) {
			if (!strcmp(s, k->names[i])) {
				store_int(field, k->size, i);
				return 0;
			}
		}
		for (int i = 0; k->names[i]; i++)
			snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
				 i ? ", " : "", k->names[i]);
		return fail(x, v, path, "expected one of %s", list);
	}
	case K_STRING: {
		if (!s)
			return fail(x, v, path, "expected a string");
		if (cfg_node_is_null(v))
			return k->def_str ? fail(x, v, path, "needs a value") : 0;
		char *val = xstrdup(s), *msg = k->check ? k->check(val) : NULL;
		if (msg) {
			fail(x, v, path, "%s", msg);
			free(msg);
			free(val);
			return -1;
		}
		memcpy(field, &val, sizeof val);
		return 0;
	}
	case K_LIST: return parse_list(x, k, base, v, path);
	case K_OBJECT: {
		const struct obj_ops *o = k->obj;
		void *obj = xcalloc(1, o->size);
		const struct node **where = xcalloc(o->tab->n, sizeof *where);
		memcpy(field, &obj, sizeof obj); /* cfg_free frees it after an error */
		int r = parse_obj(x, o->tab, obj, v, path, where);
		if (r == 0 && o->check)
			r = o->check(x, obj, v, path, where);
		free(where);
		return r;
	}
	case K_SECTION: break;
	}
	assert(k->type == K_INT || k->type == K_SIZE || k->type == K_DURATION);
	if (n < k->min || n > k->max)
		return fail(x, v, path, "%s out of range %s..%s", s,
			    fmt_bound(k->type, k->min, lo, sizeof lo),
			    fmt_bound(k->type, k->max, hi, sizeof hi));
	store_int(field, k->size, n);
	return 0;
}

/* The closest sibling of an unknown key within edit distance 2, or NULL. */
static const char *suggest(const struct keytab *t, const char *section, const char *key)
{
	size_t sl = strlen(section);
	const char *best = NULL;
	int best_d = 3;

	for (size_t i = 0; i < t->n; i++) {
		const char *name = t->keys[i].name;
		if (sl && (strncmp(name, section, sl) || name[sl] != '.'))
			continue;
		const char *leaf = sl ? name + sl + 1 : name;
		if (strchr(leaf, '.'))
			continue;
		int d = cfg_edit_distance(key, leaf);
		if (d < best_d)
			best = leaf, best_d = d;
	}
	return best;
}

static const struct key *find_key(const struct keytab *t, const char *name)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->keys[i].name, name))
			return &t->keys[i];
	return NULL;
}

/* Parse mapping `map` against the rows of t under `section` ("" for the top
 * of the table).  `outer` prefixes key paths in messages ("instances[1].").
 * where[i] is set to the value node of every key i seen. */
static int parse_map(struct ctx *x, const struct keytab *t, void *base, const struct node *map,
		     const char *section, const char *outer, const struct node **where)
{
	for (size_t i = 0; i + 1 < map->n_kids; i += 2) {
		const struct node *kn = map->kids[i], *v = map->kids[i + 1];
		if (kn->kind != N_SCALAR)
			return fail(x, kn, NULL, "keys must be plain strings");
		char *name = *section ? xasprintf("%s.%s", section, kn->str) : xstrdup(kn->str);
		char *path = xasprintf("%s%s", outer, name);
		const struct key *k = find_key(t, name);
		const struct node *first = NULL;
		int r;

		for (size_t j = 0; j < i && !first; j += 2)
			if (map->kids[j]->kind == N_SCALAR && !strcmp(map->kids[j]->str, kn->str))
				first = map->kids[j];
		if (first) {
			r = fail(x, kn, path, "duplicate key (first at line %d)", first->line);
		} else if (!k) {
			const char *near = suggest(t, section, kn->str);
			r = near ? fail(x, kn, path, "unknown key (did you mean \"%s\"?)", near)
				 : fail(x, kn, path, "unknown key");
		} else if (k->type == K_SECTION) {
			where[k - t->keys] = v;
			/* "redis:" with every key commented out is an empty section. */
			if (v->kind != N_MAP && !cfg_node_is_null(v))
				r = fail(x, v, path, "expected a mapping of keys");
			else
				r = v->kind == N_MAP ? parse_map(x, t, base, v, name, outer, where)
						     : 0;
		} else {
			where[k - t->keys] = v;
			r = parse_value(x, k, base, v, path);
		}
		free(name);
		free(path);
		if (r)
			return -1;
	}
	return 0;
}

static void apply_defaults(const struct keytab *t, void *base, const struct node *const *where)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct key *k = &t->keys[i];
		void *field = (char *)base + k->off;
		if (where[i])
			continue;
		switch (k->type) {
		case K_SECTION:
		case K_OBJECT: break;
		case K_INT:
		case K_SIZE:
		case K_DURATION:
			assert(k->def >= k->min && k->def <= k->max);
			/* fall through */
		case K_BOOL:
		case K_ENUM: store_int(field, k->size, k->def); break;
		case K_STRING:
			if (k->def_str) {
				char *s = xstrdup(k->def_str);
				memcpy(field, &s, sizeof s);
			}
			break;
		case K_LIST: {
			/* def_str "a,b" gives the elements "a" and "b"; none: empty. */
			if (!k->def_str)
				break;
			int n = 1;
			for (const char *p = k->def_str; *p; p++)
				n += *p == ',';
			char *arr = xcalloc((size_t)n, k->list->elem_size);
			const char *d = k->def_str;
			for (int j = 0; j < n; j++) {
				size_t len = strcspn(d, ",");
				char *one = xstrndup(d, len);
				k->list->set_default(arr + (size_t)j * k->list->elem_size, one);
				free(one);
				d += len + (d[len] == ',');
			}
			memcpy(field, &arr, sizeof arr);
			memcpy((char *)base + k->count_off, &n, sizeof n);
			break;
		}
		}
	}
}

static void free_fields(const struct keytab *t, void *base)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct key *k = &t->keys[i];
		char *s;
		int n;
		if (k->type == K_STRING) {
			memcpy(&s, (char *)base + k->off, sizeof s);
			free(s);
		} else if (k->type == K_LIST) {
			char *arr = list_get(k, base, &n);
			for (int j = 0; arr && j < n; j++)
				k->list->free(arr + (size_t)j * k->list->elem_size);
			free(arr);
		} else if (k->type == K_OBJECT) {
			memcpy(&s, (char *)base + k->off, sizeof s);
			if (s)
				free_fields(k->obj->tab, s);
			free(s);
		}
	}
}

/* Parse mapping n (a null scalar is an empty mapping) against table t into
 * obj, which the caller zeroed: keys, then the required ones, then
 * defaults.  `path` names obj in messages.  where (t->n entries, zeroed)
 * receives each key's value node. */
static int parse_obj(struct ctx *x, const struct keytab *t, void *obj, const struct node *n,
		     const char *path, const struct node **where)
{
	if (n->kind != N_MAP && !cfg_node_is_null(n))
		return fail(x, n, path, "expected a mapping of keys");
	if (n->kind == N_MAP) {
		char *outer = xasprintf("%s.", path);
		int r = parse_map(x, t, obj, n, "", outer, where);
		free(outer);
		if (r)
			return -1;
	}
	for (size_t i = 0; i < t->n; i++)
		if (t->keys[i].required && !where[i])
			return fail(x, n, path, "missing required key \"%s\"", t->keys[i].name);
	apply_defaults(t, obj, where);
	return 0;
}

static bool field_equal(const struct key *k, const void *a, const void *b)
{
	const char *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;
	const char *sa, *sb;
	int na, nb;

	switch (k->type) {
	case K_SECTION: return true;
	case K_STRING:
		memcpy(&sa, fa, sizeof sa);
		memcpy(&sb, fb, sizeof sb);
		return cfg_streq_null(sa, sb);
	case K_LIST:
		sa = list_get(k, a, &na);
		sb = list_get(k, b, &nb);
		for (int i = 0; na == nb && i < na; i++)
			if (!k->list->equal(sa + (size_t)i * k->list->elem_size,
					    sb + (size_t)i * k->list->elem_size))
				return false;
		return na == nb;
	case K_OBJECT:
		memcpy(&sa, fa, sizeof sa);
		memcpy(&sb, fb, sizeof sb);
		return sa == sb || (sa && sb && tab_equal(k->obj->tab, sa, sb));
	default: return load_int(fa, k->size) == load_int(fb, k->size);
	}
}

static bool tab_equal(const struct keytab *t, const void *a, const void *b)
{
	for (size_t i = 0; i < t->n; i++)
		if (!field_equal(&t->keys[i], a, b))
			return false;
	return true;
}

/* Rules that tie keys together; checked once every key has its value. */
static int check_cross(struct ctx *x, const struct cfg *c, const struct node *const *where)
{
	const struct node *emb = where[find_key(&cfg_tab, "redis.embedded") - cfg_keys];
	const struct node *addr = where[find_key(&cfg_tab, "redis.address") - cfg_keys];

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
			r = parse_map(&x, &cfg_tab, c, root, "", "", where);
	}
	if (r == 0) {
		apply_defaults(&cfg_tab, c, where);
		r = check_cross(&x, c, where);
	}
	/* Port 0 is only known once bound: the engine names the master then. */
	if (r == 0 && c->master && !c->master->name &&
	    !(c->listen[0].kind == CFG_LISTEN_TCP && c->listen[0].port == 0))
		c->master->name = master_default_name(c);
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
	free_fields(&cfg_tab, c);
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
		if (k->type == K_SECTION || k->reload || field_equal(k, a, b))
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

const struct cfg_builder *cfg_builder_find(const struct cfg_master *m, const char *name)
{
	for (int i = 0; m && i < m->n_builders; i++)
		if (!strcmp(m->builders[i].name, name))
			return &m->builders[i];
	return NULL;
}
