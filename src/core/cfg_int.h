/*
 * cfg_int.h - what the files of the config loader share (cfg.c: the key
 * table, the engine it drives and the API; cfg_yaml.c: libyaml into a
 * tree of nodes that keep line and column, and the errors that name
 * them; cfg_value.c: scalar and address parsing).  Private to
 * src/core/cfg*.c: everyone else includes cfg.h.
 */
#ifndef REACTOR_CFG_INT_H
#define REACTOR_CFG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/cfg.h"
#include "core/util.h"

/* ---- YAML node tree (cfg_yaml.c) ---------------------------------------- */

enum node_kind { N_SCALAR, N_MAP, N_SEQ };

struct node {
	enum node_kind kind;
	int line, col;	    /* 1-based position of the node's first character */
	char *str;	    /* N_SCALAR: the text */
	bool plain;	    /* N_SCALAR: unquoted, so "", "~" and "null" are null */
	struct node **kids; /* N_MAP: key, value, key, value...; N_SEQ: items */
	size_t n_kids;
};

struct ctx {
	const char *file;
	const char *text; /* the whole input: reader errors give only an offset */
	size_t len;
	char *err; /* first error; parsing stops there */
};

/* Parse the whole input x->text into *root (NULL for an empty stream).
 * 0, or -1 with x->err; *root may then hold a partial tree.  Free it with
 * cfg_node_free. */
int cfg_read_tree(struct ctx *x, struct node **root);
void cfg_node_free(struct node *n);
/* A plain scalar that YAML reads as null: "", "~", "null". */
bool cfg_node_is_null(const struct node *n);
/* The value stored under scalar key `key` in mapping n, or NULL. */
const struct node *cfg_node_get(const struct node *n, const char *key);

/* Record the first error, at line:col and about key `path` (NULL when it is
 * not about one key).  Always returns -1 so callers can `return fail(...)`. */
int cfg_fail_at(struct ctx *x, int line, int col, const char *path, const char *fmt, ...)
	PRINTF_LIKE(5, 6);
#define fail(x, n, path, ...) cfg_fail_at(x, (n)->line, (n)->col, path, __VA_ARGS__)

/* ---- scalars and addresses (cfg_value.c) -------------------------------- */

bool cfg_streq_null(const char *a, const char *b);
/* true/yes/on, false/no/off (any case): 0, or -1. */
int cfg_parse_bool(const char *s, bool *out);
/* A decimal integer (saturating): 0, or -1. */
int cfg_parse_int(const char *s, int64_t *out);
/* Sizes and durations must look like "12", "1.5" or "16MiB".  Returns 0
 * for a bad shape, -1 for an integer part too long to convert safely, 1
 * when it may be parsed. */
int cfg_number_shape(const char *s);
/* Optimal string alignment distance; 64 for long strings. */
int cfg_edit_distance(const char *a, const char *b);
/* "host:port" or "[v6addr]:port" with port in min_port..65535: NULL with
 * *host (caller frees) and *port, or a malloc'd complaint. */
char *cfg_split_hostport(const char *s, int min_port, char **host, int *port);
/* A listen address (host:port or unix:PATH) into *l: NULL or a malloc'd
 * complaint. */
char *cfg_parse_listen(const char *s, struct cfg_listen *l);

/* ---- the key table and its engine (cfg_engine.c) ------------------------ */

#define US_MS 1000LL
#define US_S  (1000 * US_MS)
#define US_M  (60 * US_S)
#define US_H  (60 * US_M)
#define US_D  (24 * US_H)
#define KIB   (1LL << 10)
#define MIB   (1LL << 20)
#define GIB   (1LL << 30)

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

/* Parse mapping `map` by table t into base (section: the dotted prefix for
 * messages; outer: the enclosing key); where[i] gets key i's value node. */
int cfg_parse_map(struct ctx *x, const struct keytab *t, void *base, const struct node *map,
		  const char *section, const char *outer, const struct node **where);
void cfg_apply_defaults(const struct keytab *t, void *base, const struct node *const *where);
void cfg_free_fields(const struct keytab *t, void *base);
int cfg_parse_obj(struct ctx *x, const struct keytab *t, void *obj, const struct node *n,
		  const char *path, const struct node **where);
bool cfg_field_equal(const struct key *k, const void *a, const void *b);
bool cfg_tab_equal(const struct keytab *t, const void *a, const void *b);
const char *cfg_fmt_bound(enum ktype t, int64_t v, char *buf, size_t len);
const struct key *cfg_find_key(const struct keytab *t, const char *name);
/* String validators shared by the tables (cfg.c): NULL or a complaint. */
char *cfg_check_nonempty(char *s);
char *cfg_check_key_prefix(char *s);
char *cfg_check_instance_name(char *s);

/* Lists of strings: the list_ops callbacks of a K_LIST of char *. */
int cfg_strlist_parse(struct ctx *x, const struct node *n, const char *path, void *elem);
void cfg_strlist_default(void *elem, const char *def);
bool cfg_strlist_equal(const void *a, const void *b);
void cfg_strlist_free(void *elem);

/* ---- auth: (cfg_auth.c) ------------------------------------------------ */

extern const struct obj_ops cfg_auth_ops;

/* ---- master: (cfg_master.c) -------------------------------------------- */

extern const struct obj_ops cfg_master_ops;
/* "HOST:" + the first listener as written (not for port 0). */
char *cfg_master_default_name(const struct cfg *c);

/* instances[].shards and the rules across storage:, shards: and
 * shard-self: (cfg_shard.c). */
extern const struct list_ops cfg_shard_ops;
int cfg_shards_check(struct ctx *x, struct cfg_instance *in, const struct node *n,
		     const char *path);

#endif
