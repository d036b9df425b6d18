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

#endif
