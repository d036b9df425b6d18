/*
 * json.h - a small strict JSON (RFC 8259) parser into a tree, for the few
 * places reactord must validate client JSON (build parameters, result
 * details) and read JSON it wrote itself (tags in Redis, pub/sub payloads).
 * Strict means: UTF-8 only, no comments, no trailing commas, no leading
 * zeros, no NaN/Infinity, no lone surrogates, no duplicate object keys, no
 * trailing content, nesting at most JSON_MAX_DEPTH.  Nothing here touches
 * the event loop or allocates from anything but util.h's helpers.
 */
#ifndef REACTOR_JSON_H
#define REACTOR_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

#define JSON_MAX_DEPTH 64

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
	enum json_type type;
	bool b;		     /* BOOL */
	double num;	     /* NUMBER */
	bool is_int;	     /* NUMBER written without fraction or exponent that fits int64 */
	int64_t i;	     /* NUMBER when is_int */
	char *str;	     /* STRING: decoded, NUL-terminated (may also hold NULs) */
	size_t len;	     /* STRING: length in bytes */
	size_t n;	     /* ARRAY/OBJECT: number of items (members) */
	struct json **items; /* ARRAY/OBJECT: values, in document order */
	char **keys;	     /* OBJECT: member names (decoded, NUL-terminated) */
};

/* Parse text[0..len).  Returns the tree (free with json_free), or NULL with
 * a message like "at byte 12: expected ':' after an object key" written to
 * err (errlen bytes, always NUL-terminated). */
struct json *json_parse(const char *text, size_t len, char *err, size_t errlen);

void json_free(struct json *j);

/* Member `key` of an object, or NULL (also when j is not an object). */
const struct json *json_get(const struct json *j, const char *key);

/* "null", "boolean", "number", "string", "array", "object". */
const char *json_type_name(enum json_type t);

/* Append s[0..len) to *buf as a JSON string literal with quotes, escaping
 * what RFC 8259 requires (and DEL); *buf is a malloc'd string grown with
 * xrealloc, *n its length. */
void json_quote(char **buf, size_t *n, const char *s, size_t len);

#endif
