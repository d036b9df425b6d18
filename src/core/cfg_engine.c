/*
 * cfg_engine.c - the table-driven engine of the config loader: given a
 * key table (struct keytab, cfg_int.h) it parses a YAML mapping into a
 * struct, checks types and bounds, applies defaults, compares two structs
 * key by key (what SIGHUP may change) and frees them.  cfg.c and
 * cfg_master.c hold the tables; this file knows no key by name.
 */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/cfg.h"
#include "core/cfg_int.h"
#include "core/util.h"

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
const char *cfg_fmt_bound(enum ktype t, int64_t v, char *buf, size_t len)
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
		int r = cfg_parse_obj(x, o->tab, obj, v, path, where);
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
			    cfg_fmt_bound(k->type, k->min, lo, sizeof lo),
			    cfg_fmt_bound(k->type, k->max, hi, sizeof hi));
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

const struct key *cfg_find_key(const struct keytab *t, const char *name)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->keys[i].name, name))
			return &t->keys[i];
	return NULL;
}

/* Parse mapping `map` against the rows of t under `section` ("" for the top
 * of the table).  `outer` prefixes key paths in messages ("instances[1].").
 * where[i] is set to the value node of every key i seen. */
int cfg_parse_map(struct ctx *x, const struct keytab *t, void *base, const struct node *map,
		  const char *section, const char *outer, const struct node **where)
{
	for (size_t i = 0; i + 1 < map->n_kids; i += 2) {
		const struct node *kn = map->kids[i], *v = map->kids[i + 1];
		if (kn->kind != N_SCALAR)
			return fail(x, kn, NULL, "keys must be plain strings");
		char *name = *section ? xasprintf("%s.%s", section, kn->str) : xstrdup(kn->str);
		char *path = xasprintf("%s%s", outer, name);
		const struct key *k = cfg_find_key(t, name);
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
				r = v->kind == N_MAP
					    ? cfg_parse_map(x, t, base, v, name, outer, where)
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

void cfg_apply_defaults(const struct keytab *t, void *base, const struct node *const *where)
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

void cfg_free_fields(const struct keytab *t, void *base)
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
				cfg_free_fields(k->obj->tab, s);
			free(s);
		}
	}
}

/* Parse mapping n (a null scalar is an empty mapping) against table t into
 * obj, which the caller zeroed: keys, then the required ones, then
 * defaults.  `path` names obj in messages.  where (t->n entries, zeroed)
 * receives each key's value node. */
int cfg_parse_obj(struct ctx *x, const struct keytab *t, void *obj, const struct node *n,
		  const char *path, const struct node **where)
{
	if (n->kind != N_MAP && !cfg_node_is_null(n))
		return fail(x, n, path, "expected a mapping of keys");
	if (n->kind == N_MAP) {
		char *outer = xasprintf("%s.", path);
		int r = cfg_parse_map(x, t, obj, n, "", outer, where);
		free(outer);
		if (r)
			return -1;
	}
	for (size_t i = 0; i < t->n; i++)
		if (t->keys[i].required && !where[i])
			return fail(x, n, path, "missing required key \"%s\"", t->keys[i].name);
	cfg_apply_defaults(t, obj, where);
	return 0;
}

bool cfg_field_equal(const struct key *k, const void *a, const void *b)
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
		return sa == sb || (sa && sb && cfg_tab_equal(k->obj->tab, sa, sb));
	default: return load_int(fa, k->size) == load_int(fb, k->size);
	}
}

bool cfg_tab_equal(const struct keytab *t, const void *a, const void *b)
{
	for (size_t i = 0; i < t->n; i++)
		if (!cfg_field_equal(&t->keys[i], a, b))
			return false;
	return true;
}

/* Rules that tie keys together; checked once every key has its value. */

/* ---- lists of strings (shared by the tables) ---------------------------- */

int cfg_strlist_parse(struct ctx *x, const struct node *n, const char *path, void *elem)
{
	if (n->kind != N_SCALAR || cfg_node_is_null(n) || !n->str[0])
		return fail(x, n, path, "expected a non-empty string");
	*(char **)elem = xstrdup(n->str);
	return 0;
}

void cfg_strlist_default(void *elem, const char *def)
{
	*(char **)elem = xstrdup(def);
}

bool cfg_strlist_equal(const void *a, const void *b)
{
	return !strcmp(*(char *const *)a, *(char *const *)b);
}

void cfg_strlist_free(void *elem)
{
	free(*(char **)elem);
}
