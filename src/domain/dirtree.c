/*
 * dirtree.c - input-tree and Command-path rules (dirtree.h).  The checks
 * run on the unpacked Directory, plus one walk of its bytes for NUL
 * bytes inside names and targets, which protobuf-c's C strings would cut
 * off silently (a name "a\0/../x" must not reach the disk as "a").
 */
#include "domain/dirtree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/digest.h"
#include "core/pbwire.h"

/* Directory fields, and the node fields that hold strings. */
enum { F_FILES = 1, F_DIRS = 2, F_LINKS = 3 };
enum { N_NAME = 1, N_TARGET = 2 };

static const char *const KIND[] = {
	[F_FILES] = "file", [F_DIRS] = "directory", [F_LINKS] = "symlink"};

static const char *const KINDS[] = {
	[F_FILES] = "files", [F_DIRS] = "directories", [F_LINKS] = "symlinks"};

/* "prefix/name", or name alone at the root. */
static char *join(const char *prefix, const char *name)
{
	return *prefix ? xasprintf("%s/%s", prefix, name) : xstrdup(name);
}

static int fail(char **msg, char *text)
{
	if (msg)
		*msg = text;
	else
		free(text);
	return -EINVAL;
}

/* NUL bytes in a name or a symlink target, found on the wire.  Returns 0,
 * 1 when one was found (*kind: the list it is in), or -1 when the bytes
 * are not a message at all. */
static int find_nul(const uint8_t *buf, size_t len, int *kind)
{
	struct pbw r, n;
	struct pbw_field f, g;
	int rc;
	pbw_init(&r, buf, len);
	while ((rc = pbw_next(&r, &f)) == 1) {
		if (f.num < F_FILES || f.num > F_LINKS || f.wt != PBW_LEN)
			continue;
		pbw_init(&n, f.data, f.len);
		int rn;
		while ((rn = pbw_next(&n, &g)) == 1)
			if (g.wt == PBW_LEN &&
			    (g.num == N_NAME || (f.num == F_LINKS && g.num == N_TARGET)) &&
			    memchr(g.data, 0, g.len)) {
				*kind = (int)f.num;
				return 1;
			}
		if (rn < 0)
			return -1;
	}
	return rc < 0 ? -1 : 0;
}

/* Why a name is not one path component, or NULL when it is. */
static const char *bad_name(const char *n)
{
	if (!n || !*n)
		return "is empty";
	if (!strcmp(n, ".") || !strcmp(n, ".."))
		return "is not allowed";
	if (strchr(n, '/'))
		return "contains \"/\"";
	return NULL;
}

static bool good_digest(const PbDigest *d)
{
	struct digest x;
	return d && d->hash && digest_parse(d->hash, d->size_bytes, &x, NULL) == 0;
}

static size_t depth_of(const char *path)
{
	size_t n = 0;
	for (const char *s = path; *s;) {
		size_t l = strcspn(s, "/");
		n += l > 0;
		s += l + (s[l] == '/');
	}
	return n;
}

/* Why a symlink target (of a link `depth` directories below the root)
 * is refused, or NULL. */
static const char *bad_target(const char *t, size_t depth, unsigned flags)
{
	if (!t || !*t)
		return "is empty";
	if (*t == '/')
		return flags & DIRTREE_ABSOLUTE_SYMLINKS
			       ? NULL
			       : "is absolute, and this server's symlink_absolute_path_strategy "
				 "is DISALLOWED";
	long d = (long)depth;
	for (const char *s = t; *s;) {
		size_t l = strcspn(s, "/");
		if (l == 2 && s[0] == '.' && s[1] == '.') {
			if (--d < 0)
				return "leads above the input root";
		} else if (l > 0 && !(l == 1 && s[0] == '.')) {
			d++;
		}
		s += l + (s[l] == '/');
	}
	return NULL;
}

/* The name of entry i of list `kind` of d. */
static const char *name_at(const PbDirectory *d, int kind, size_t i)
{
	switch (kind) {
	case F_FILES: return d->files[i]->name;
	case F_DIRS: return d->directories[i]->name;
	default: return d->symlinks[i]->name;
	}
}

static size_t count_of(const PbDirectory *d, int kind)
{
	return kind == F_FILES ? d->n_files : kind == F_DIRS ? d->n_directories : d->n_symlinks;
}

/* Names, order and digests of one list. */
static int check_list(const PbDirectory *d, int kind, const char *path, char **msg)
{
	size_t n = count_of(d, kind);
	for (size_t i = 0; i < n; i++) {
		const char *name = name_at(d, kind, i);
		const char *why = bad_name(name);
		if (why && (!name || !*name))
			return fail(msg, xasprintf("input tree: \"%s\": a %s has an empty name",
						   *path ? path : ".", KIND[kind]));
		if (why) {
			char *p = join(path, name);
			int rc = fail(msg, xasprintf("input tree: \"%s\": %s name \"%s\" %s", p,
						     KIND[kind], name, why));
			free(p);
			return rc;
		}
		int order = i > 0 ? strcmp(name_at(d, kind, i - 1), name) : -1;
		if (order >= 0) {
			char *p = join(path, name);
			int rc =
				fail(msg, order == 0 ? xasprintf("input tree: \"%s\": two %s have "
								 "this name",
								 p, KINDS[kind])
						     : xasprintf("input tree: \"%s\": %s are not "
								 "sorted by name (\"%s\" is listed "
								 "after \"%s\")",
								 p, KINDS[kind], name,
								 name_at(d, kind, i - 1)));
			free(p);
			return rc;
		}
		const PbDigest *dg = kind == F_FILES  ? d->files[i]->digest
				     : kind == F_DIRS ? d->directories[i]->digest
						      : NULL;
		if (kind != F_LINKS && !good_digest(dg)) {
			char *p = join(path, name);
			int rc = fail(msg,
				      xasprintf("input tree: \"%s\": the %s has no valid digest", p,
						KIND[kind]));
			free(p);
			return rc;
		}
	}
	return 0;
}

/* No name in two lists: a merge of the three sorted lists. */
static int check_unique(const PbDirectory *d, const char *path, char **msg)
{
	size_t at[4] = {0};
	for (;;) {
		int lo = 0;
		const char *lname = NULL;
		for (int k = F_FILES; k <= F_LINKS; k++) {
			if (at[k] == count_of(d, k))
				continue;
			const char *nm = name_at(d, k, at[k]);
			int c = lname ? strcmp(nm, lname) : -1;
			if (c == 0) {
				char *p = join(path, nm);
				int rc = fail(msg, xasprintf("input tree: \"%s\": the name is used "
							     "by both a %s and a %s",
							     p, KIND[lo], KIND[k]));
				free(p);
				return rc;
			}
			if (c < 0) {
				lo = k;
				lname = nm;
			}
		}
		if (!lname)
			return 0;
		at[lo]++;
	}
}

int dirtree_check_dir(const PbDirectory *d, const uint8_t *buf, size_t len, const char *path,
		      unsigned flags, char **msg)
{
	if (!path)
		path = "";
	int kind = 0;
	int nul = find_nul(buf, len, &kind);
	if (nul != 0)
		return fail(msg, nul < 0 ? xasprintf("input tree: \"%s\": not a valid Directory "
						     "message",
						     *path ? path : ".")
					 : xasprintf("input tree: \"%s\": a %s's name or target "
						     "contains a NUL byte",
						     *path ? path : ".", KIND[kind]));
	for (int k = F_FILES; k <= F_LINKS; k++) {
		int rc = check_list(d, k, path, msg);
		if (rc)
			return rc;
	}
	int rc = check_unique(d, path, msg);
	if (rc)
		return rc;
	size_t depth = depth_of(path);
	for (size_t i = 0; i < d->n_symlinks; i++) {
		const char *why = bad_target(d->symlinks[i]->target, depth, flags);
		if (why) {
			char *p = join(path, d->symlinks[i]->name);
			rc = fail(msg,
				  xasprintf("input tree: \"%s\": symlink target \"%s\" %s", p,
					    d->symlinks[i]->target ? d->symlinks[i]->target : "",
					    why));
			free(p);
			return rc;
		}
	}
	return 0;
}

int dirtree_check(const uint8_t *buf, size_t len, const char *path, unsigned flags, char **msg)
{
	if (!path)
		path = "";
	PbDirectory *d = build__bazel__remote__execution__v2__directory__unpack(NULL, len, buf);
	if (!d)
		return fail(msg, xasprintf("input tree: \"%s\": not a valid Directory message",
					   *path ? path : "."));
	int rc = dirtree_check_dir(d, buf, len, path, flags, msg);
	build__bazel__remote__execution__v2__directory__free_unpacked(d, NULL);
	return rc;
}

int dirtree_check_relpath(const char *field, const char *p, bool allow_empty, char **msg)
{
	if (!p || !*p)
		return allow_empty ? 0 : fail(msg, xasprintf("%s is empty", field));
	if (*p == '/')
		return fail(msg, xasprintf("%s \"%s\" is absolute: it must be relative", field, p));
	for (const char *s = p; *s;) {
		size_t l = strcspn(s, "/");
		if (l == 0 || (s[l] == '/' && !s[l + 1]))
			return fail(msg, xasprintf("%s \"%s\" has an empty component", field, p));
		if (l == 2 && s[0] == '.' && s[1] == '.')
			return fail(msg, xasprintf("%s \"%s\": \"..\" is not allowed", field, p));
		if (l == 1 && s[0] == '.')
			return fail(msg, xasprintf("%s \"%s\": \".\" is not allowed", field, p));
		s += l + (s[l] == '/');
	}
	return 0;
}
