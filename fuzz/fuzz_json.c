/*
 * fuzz_json.c - libFuzzer target for the strict JSON parser
 * (src/core/json.c).  A document either fails with a message or parses to a
 * tree that, written back out (with json_quote for strings and keys), parses
 * again to the same tree.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "core/json.h"
#include "core/util.h"

static void put(char **buf, size_t *n, const char *s)
{
	size_t l = strlen(s);
	*buf = xrealloc(*buf, *n + l + 1);
	memcpy(*buf + *n, s, l + 1);
	*n += l;
}

static void write_json(const struct json *j, char **buf, size_t *n)
{
	char num[64];
	switch (j->type) {
	case JSON_NULL: put(buf, n, "null"); break;
	case JSON_BOOL: put(buf, n, j->b ? "true" : "false"); break;
	case JSON_NUMBER:
		if (j->is_int)
			snprintf(num, sizeof(num), "%" PRId64, j->i);
		else
			snprintf(num, sizeof(num), "%.17g", j->num);
		/* %g may print an integer-looking value: keep it a double. */
		if (!j->is_int && !strpbrk(num, ".eE"))
			strcat(num, ".0");
		put(buf, n, num);
		break;
	case JSON_STRING: json_quote(buf, n, j->str, j->len); break;
	case JSON_ARRAY:
	case JSON_OBJECT:
		put(buf, n, j->type == JSON_ARRAY ? "[" : "{");
		for (size_t i = 0; i < j->n; i++) {
			if (i)
				put(buf, n, ",");
			if (j->type == JSON_OBJECT) {
				json_quote(buf, n, j->keys[i], strlen(j->keys[i]));
				put(buf, n, ":");
			}
			write_json(j->items[i], buf, n);
		}
		put(buf, n, j->type == JSON_ARRAY ? "]" : "}");
		break;
	}
}

static void same(const struct json *a, const struct json *b)
{
	CHECK(a->type == b->type);
	switch (a->type) {
	case JSON_NULL: break;
	case JSON_BOOL: CHECK(a->b == b->b); break;
	case JSON_NUMBER:
		CHECK(a->is_int == b->is_int);
		if (a->is_int)
			CHECK(a->i == b->i);
		else
			CHECK(a->num == b->num);
		break;
	case JSON_STRING:
		CHECK(a->len == b->len);
		CHECK(memcmp(a->str, b->str, a->len) == 0);
		CHECK(a->str[a->len] == '\0');
		break;
	case JSON_ARRAY:
	case JSON_OBJECT:
		CHECK(a->n == b->n);
		for (size_t i = 0; i < a->n; i++) {
			if (a->type == JSON_OBJECT) {
				CHECK(strcmp(a->keys[i], b->keys[i]) == 0);
				CHECK(json_get(b, a->keys[i]) == b->items[i]);
			}
			same(a->items[i], b->items[i]);
		}
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy so ASan sees any read past the end. */
	char *text = xmalloc(size ? size : 1);
	memcpy(text, data, size);
	char err[128];
	struct json *j = json_parse(text, size, err, sizeof(err));
	if (!j) {
		CHECK(err[0] != '\0');
		free(text);
		return 0;
	}
	CHECK(err[0] == '\0');
	char *out = NULL;
	size_t n = 0;
	put(&out, &n, "");
	write_json(j, &out, &n);
	struct json *again = json_parse(out, n, err, sizeof(err));
	if (!again)
		fprintf(stderr, "fuzz_json: rewritten \"%s\" fails: %s\n", out, err);
	CHECK(again != NULL);
	same(j, again);
	json_free(again);
	json_free(j);
	free(out);
	free(text);
	return 0;
}
