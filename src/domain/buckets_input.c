/*
 * buckets_input.c - validation of build-bucket requests: bucket names,
 * UTF-8, parameters_json and its changes, tags, result details, cursors
 * and enum filters, and fresh lease keys.  Pure functions, no Redis: the
 * checks that depend on a build run inside the scripts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/json.h"
#include "core/log.h"
#include "domain/buckets_int.h"

#define MOD "buckets"

bool bk_bucket_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > BK_BUCKET_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

/* Strings stored in Redis and sent back must be UTF-8 (proto3 strings). */
char *bk_check_utf8v(const char *field, char *const *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!utf8_valid(v[i], strlen(v[i])))
			return xasprintf("%s[%zu]: not valid UTF-8", field, i);
	return NULL;
}

char *bk_check_utf8(const char *field, const char *s)
{
	return utf8_valid(s, strlen(s)) ? NULL : xasprintf("%s: not valid UTF-8", field);
}

char *bk_bad_bucket(const char *field, const char *name)
{
	return xasprintf(
		"%s: \"%.120s\" is not a valid bucket name (want [a-z0-9][a-z0-9._-]{0,99})", field,
		name);
}

void bk_params_free(struct bk_params *p)
{
	free(p->builder_name);
	for (size_t i = 0; i < p->n_changes; i++) {
		free(p->change_ids[i]);
		free(p->change_revs[i]);
	}
	free(p->change_ids);
	free(p->change_revs);
	memset(p, 0, sizeof *p);
}

/* Field f of change object c must be a string when present; *err names it. */
static bool opt_string(const struct json *c, const char *f, const char *where, char **err)
{
	const struct json *v = json_get(c, f);
	if (!v || v->type == JSON_STRING)
		return true;
	*err = xasprintf("%s.%s: must be a string, not %s", where, f, json_type_name(v->type));
	return false;
}

static int check_change(const struct json *c, size_t i, char **err)
{
	char where[200];
	const struct json *id = json_get(c, "id");
	if (id && id->type == JSON_STRING)
		snprintf(where, sizeof where, "parameters_json.changes[%zu] (id \"%.100s\")", i,
			 id->str);
	else
		snprintf(where, sizeof where, "parameters_json.changes[%zu]", i);
	if (c->type != JSON_OBJECT) {
		*err = xasprintf("%s: must be an object, not %s", where, json_type_name(c->type));
		return -EINVAL;
	}
	static const char *const strs[] = {"id", "revision", "message", "branch", "url", "project"};
	for (size_t k = 0; k < ARRAY_LEN(strs); k++)
		if (!opt_string(c, strs[k], where, err))
			return -EINVAL;
	const struct json *author = json_get(c, "author");
	if (!author) {
		*err = xasprintf("%s.author: required (an object with a string email)", where);
		return -EINVAL;
	}
	if (author->type != JSON_OBJECT) {
		*err = xasprintf("%s.author: must be an object, not %s", where,
				 json_type_name(author->type));
		return -EINVAL;
	}
	const struct json *email = json_get(author, "email");
	if (!email) {
		*err = xasprintf("%s.author.email: required", where);
		return -EINVAL;
	}
	if (email->type != JSON_STRING) {
		*err = xasprintf("%s.author.email: must be a string, not %s", where,
				 json_type_name(email->type));
		return -EINVAL;
	}
	const struct json *ts = json_get(c, "create_ts");
	if (ts && (ts->type != JSON_NUMBER || !ts->is_int || ts->i < 0)) {
		*err = xasprintf("%s.create_ts: must be a non-negative integer (microseconds since "
				 "the epoch)",
				 where);
		return -EINVAL;
	}
	const struct json *files = json_get(c, "files");
	if (files) {
		if (files->type != JSON_ARRAY) {
			*err = xasprintf("%s.files: must be a list, not %s", where,
					 json_type_name(files->type));
			return -EINVAL;
		}
		for (size_t k = 0; k < files->n; k++) {
			const struct json *f = files->items[k];
			const struct json *path = json_get(f, "path");
			if (f->type != JSON_OBJECT) {
				*err = xasprintf(
					"%s.files[%zu]: must be an object with a string path, "
					"not %s",
					where, k, json_type_name(f->type));
				return -EINVAL;
			}
			if (!path || path->type != JSON_STRING) {
				*err = xasprintf("%s.files[%zu].path: %s", where, k,
						 path ? "must be a string" : "required");
				return -EINVAL;
			}
		}
	}
	return 0;
}

int bk_params_parse(const char *text, struct bk_params *out, char **err)
{
	char jerr[160];
	memset(out, 0, sizeof *out);
	if (!text || !*text) {
		*err = xasprintf("parameters_json: required (a JSON object with a string "
				 "builder_name)");
		return -EINVAL;
	}
	struct json *j = json_parse(text, strlen(text), jerr, sizeof jerr);
	if (!j) {
		*err = xasprintf("parameters_json: invalid JSON: %s", jerr);
		return -EINVAL;
	}
	int rc = -EINVAL;
	if (j->type != JSON_OBJECT) {
		*err = xasprintf("parameters_json: must be a JSON object, not %s",
				 json_type_name(j->type));
		goto out;
	}
	const struct json *bn = json_get(j, "builder_name");
	if (!bn || bn->type != JSON_STRING || bn->len == 0 || strlen(bn->str) != bn->len) {
		*err = xasprintf("parameters_json.builder_name: %s",
				 !bn			   ? "required"
				 : bn->type != JSON_STRING ? "must be a string"
				 : bn->len == 0		   ? "must not be empty"
							   : "must not contain NUL");
		goto out;
	}
	const struct json *props = json_get(j, "properties");
	if (props && props->type != JSON_OBJECT) {
		*err = xasprintf("parameters_json.properties: must be an object, not %s",
				 json_type_name(props->type));
		goto out;
	}
	if (json_get(props, "buildbucket")) {
		*err = xasprintf("parameters_json.properties.buildbucket: reserved; the server "
				 "sets it");
		goto out;
	}
	const struct json *ch = json_get(j, "changes");
	if (ch && ch->type != JSON_ARRAY) {
		*err = xasprintf("parameters_json.changes: must be a list, not %s",
				 json_type_name(ch->type));
		goto out;
	}
	for (size_t i = 0; ch && i < ch->n; i++)
		if (check_change(ch->items[i], i, err) < 0)
			goto out;
	out->builder_name = xstrdup(bn->str);
	for (size_t i = 0; ch && i < ch->n; i++) {
		const struct json *id = json_get(ch->items[i], "id");
		const struct json *rev = json_get(ch->items[i], "revision");
		if (!id || id->len == 0)
			continue;
		out->change_ids = xrealloc(out->change_ids, (out->n_changes + 1) * sizeof(char *));
		out->change_revs =
			xrealloc(out->change_revs, (out->n_changes + 1) * sizeof(char *));
		out->change_ids[out->n_changes] = xstrdup(id->str);
		out->change_revs[out->n_changes] = xstrdup(rev ? rev->str : "");
		out->n_changes++;
	}
	rc = 0;
out:
	json_free(j);
	return rc;
}

void bk_strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_builder_tag(const char *t)
{
	return strncmp(t, "builder:", 8) == 0;
}

int bk_tags_normalize(char *const *tags, size_t n, const char *builder, char ***out, size_t *nout,
		      char **err)
{
	for (size_t i = 0; i < n; i++) {
		if (!strchr(tags[i], ':')) {
			*err = xasprintf("tags[%zu]: \"%.200s\" is not key:value (no ':')", i,
					 tags[i]);
			return -EINVAL;
		}
		if (is_builder_tag(tags[i]) && strcmp(tags[i] + 8, builder) != 0) {
			*err = xasprintf("tags[%zu]: \"%.200s\" disagrees with parameters_json."
					 "builder_name \"%.200s\"",
					 i, tags[i], builder);
			return -EINVAL;
		}
	}
	char **v = xcalloc(n + 1, sizeof *v);
	for (size_t i = 0; i < n; i++)
		v[i] = xstrdup(tags[i]);
	v[n] = xasprintf("builder:%s", builder);
	qsort(v, n + 1, sizeof *v, cmp_str);
	size_t k = 0;
	for (size_t i = 0; i <= n; i++) {
		if (k && strcmp(v[k - 1], v[i]) == 0)
			free(v[i]);
		else
			v[k++] = v[i];
	}
	*out = v;
	*nout = k;
	return 0;
}

int bk_new_tags_check(char *const *tags, size_t n, char **err)
{
	for (size_t i = 0; i < n; i++) {
		if (!strchr(tags[i], ':')) {
			*err = xasprintf("new_tags[%zu]: \"%.200s\" is not key:value (no ':')", i,
					 tags[i]);
			return -EINVAL;
		}
		if (is_builder_tag(tags[i])) {
			*err = xasprintf("new_tags[%zu]: \"%.200s\": builder tags cannot be added",
					 i, tags[i]);
			return -EINVAL;
		}
	}
	return 0;
}

int64_t bk_lease_key_new(void)
{
	uint64_t v = 0;
	while (v == 0) {
		if (getrandom(&v, sizeof v, 0) != sizeof v) {
			LOGE(MOD, "getrandom: %s", strerror(errno));
			abort();
		}
		v &= (1ULL << 53) - 1;
	}
	return (int64_t)v;
}

/* result_details_json, when given, must be a JSON object. */
char *bk_check_details(const char *s)
{
	char jerr[160];
	if (!*s)
		return NULL;
	struct json *j = json_parse(s, strlen(s), jerr, sizeof jerr);
	char *err = !j ? xasprintf("result_details_json: invalid JSON: %s", jerr)
		    : j->type != JSON_OBJECT
			    ? xasprintf("result_details_json: must be a JSON object, not %s",
					json_type_name(j->type))
			    : NULL;
	json_free(j);
	return err;
}

/* "" or 19 digits (an id). */
bool bk_cursor_ok(const char *c)
{
	size_t n = strlen(c);
	return n == 0 || (n == 19 && strspn(c, "0123456789") == n);
}

/* Validate and de-duplicate bucket names into *out (pointers into req).
 * At most BK_MAX_BUCKETS names per request, which also bounds the
 * quadratic de-duplication below. */
char *bk_check_buckets(char *const *b, size_t n, const char ***out, size_t *nout)
{
	if (n > BK_MAX_BUCKETS)
		return xasprintf("buckets: %zu names; at most %d per request", n, BK_MAX_BUCKETS);
	const char **v = xcalloc(n + 1, sizeof *v);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (!bk_bucket_name_ok(b[i])) {
			char field[32];
			snprintf(field, sizeof field, "buckets[%zu]", i);
			free(v);
			return bk_bad_bucket(field, b[i]);
		}
		bool dup = false;
		for (size_t j = 0; j < k && !dup; j++)
			dup = strcmp(v[j], b[i]) == 0;
		if (!dup)
			v[k++] = b[i];
	}
	*out = v;
	*nout = k;
	return NULL;
}

char *bk_enum_filter(const char *field, const char *(*name)(int), int v, const char **out)
{
	*out = "";
	if (v == 0)
		return NULL;
	if (!(*out = name(v)))
		return xasprintf("%s: unknown value %d", field, v);
	return NULL;
}
