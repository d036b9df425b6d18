/*
 * cfg_yaml.c - the config loader's front end: libyaml's event stream into a
 * small tree of nodes that remember their line and column, and the one
 * error the loader reports, as "file:line:col: key.path: what is wrong"
 * (reader errors, which libyaml gives as a byte offset, are turned into a
 * position too).  Aliases and more than one document are refused; nesting
 * is bounded.
 */
#include "core/cfg_int.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* A config file is a handful of sections; anything deeper is a mistake or
 * an attack on the recursive tree builder. */
#define MAX_DEPTH 32

/* ---- YAML node tree ------------------------------------------------------ */

void cfg_node_free(struct node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n_kids; i++)
		cfg_node_free(n->kids[i]);
	free(n->kids);
	free(n->str);
	free(n);
}

bool cfg_node_is_null(const struct node *n)
{
	return n->kind == N_SCALAR && n->plain &&
	       (!n->str[0] || !strcmp(n->str, "~") || !strcmp(n->str, "null") ||
		!strcmp(n->str, "Null") || !strcmp(n->str, "NULL"));
}

const struct node *cfg_node_get(const struct node *n, const char *key)
{
	for (size_t i = 0; n->kind == N_MAP && i + 1 < n->n_kids; i += 2)
		if (n->kids[i]->kind == N_SCALAR && !strcmp(n->kids[i]->str, key))
			return n->kids[i + 1];
	return NULL;
}

/* ---- errors -------------------------------------------------------------- */

int cfg_fail_at(struct ctx *x, int line, int col, const char *path, const char *fmt, ...)
{
	va_list ap;
	if (x->err)
		return -1;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	assert(n >= 0);
	char *msg = xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(msg, (size_t)n + 1, fmt, ap);
	va_end(ap);
	x->err = xasprintf("%s:%d:%d: %s%s%s", x->file, line, col, path ? path : "",
			   path ? ": " : "", msg);
	free(msg);
	return -1;
}

/* ---- libyaml events to nodes --------------------------------------------- */

/* Next event, or -1 with libyaml's own description of the syntax error. */
static int next_event(struct ctx *x, yaml_parser_t *p, yaml_event_t *ev)
{
	if (yaml_parser_parse(p, ev))
		return 0;
	if (p->error == YAML_MEMORY_ERROR) {
		fprintf(stderr, "reactord: out of memory parsing %s\n", x->file);
		abort();
	}
	int line = (int)p->problem_mark.line + 1;
	int col = (int)p->problem_mark.column + 1;
	if (p->error == YAML_READER_ERROR) {
		/* Encoding errors come with a byte offset, not a mark. */
		line = col = 1;
		for (size_t i = 0; i < p->problem_offset && i < x->len; i++, col++)
			if (x->text[i] == '\n')
				line++, col = 0;
	}
	const char *problem = p->problem ? p->problem : "YAML syntax error";
	if (p->error == YAML_READER_ERROR && p->problem_value >= 0)
		return cfg_fail_at(x, line, col, NULL, "%s (byte 0x%02x)", problem,
				   p->problem_value);
	if (p->context)
		return cfg_fail_at(x, line, col, NULL, "%s (%s at %d:%d)", problem, p->context,
				   (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
	return cfg_fail_at(x, line, col, NULL, "%s", problem);
}

/* Build the node that begins with *ev (already read), consuming events up to
 * its end.  *ev is always deleted.  On error *out may hold a partial node,
 * which the caller frees. */
static int build(struct ctx *x, yaml_parser_t *p, yaml_event_t *ev, int depth, struct node **out)
{
	int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
	yaml_event_type_t type = ev->type;

	*out = NULL;
	if (type == YAML_ALIAS_EVENT) {
		yaml_event_delete(ev);
		return cfg_fail_at(x, line, col, NULL, "YAML aliases are not supported");
	}
	assert(type == YAML_SCALAR_EVENT || type == YAML_MAPPING_START_EVENT ||
	       type == YAML_SEQUENCE_START_EVENT);
	struct node *n = xcalloc(1, sizeof *n);
	n->line = line;
	n->col = col;
	*out = n;
	if (type == YAML_SCALAR_EVENT) {
		n->kind = N_SCALAR;
		n->str = xstrndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
		n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		yaml_event_delete(ev);
		return 0;
	}
	n->kind = type == YAML_MAPPING_START_EVENT ? N_MAP : N_SEQ;
	yaml_event_delete(ev);
	if (depth >= MAX_DEPTH)
		return cfg_fail_at(x, line, col, NULL, "nested deeper than %d levels", MAX_DEPTH);
	for (;;) {
		yaml_event_t e;
		struct node *kid;
		if (next_event(x, p, &e))
			return -1;
		if (e.type == YAML_MAPPING_END_EVENT || e.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&e);
			return 0;
		}
		int r = build(x, p, &e, depth + 1, &kid);
		if (kid) {
			n->kids = xrealloc(n->kids, (n->n_kids + 1) * sizeof *n->kids);
			n->kids[n->n_kids++] = kid;
		}
		if (r)
			return -1;
	}
}

int cfg_read_tree(struct ctx *x, struct node **root)
{
	yaml_parser_t p;
	yaml_event_t ev;
	int r = -1;

	*root = NULL;
	if (!yaml_parser_initialize(&p))
		abort();
	yaml_parser_set_input_string(&p, (const unsigned char *)x->text, x->len);
	if (next_event(x, &p, &ev)) /* STREAM-START */
		goto out;
	yaml_event_delete(&ev);
	if (next_event(x, &p, &ev))
		goto out;
	if (ev.type == YAML_DOCUMENT_START_EVENT) {
		yaml_event_delete(&ev);
		if (next_event(x, &p, &ev) || build(x, &p, &ev, 0, root) ||
		    next_event(x, &p, &ev)) /* DOCUMENT-END */
			goto out;
		yaml_event_delete(&ev);
		if (next_event(x, &p, &ev))
			goto out;
		if (ev.type == YAML_DOCUMENT_START_EVENT) {
			cfg_fail_at(x, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
				    NULL, "only one YAML document is allowed");
			yaml_event_delete(&ev);
			goto out;
		}
	}
	yaml_event_delete(&ev); /* STREAM-END */
	r = 0;
out:
	yaml_parser_delete(&p);
	return r;
}
