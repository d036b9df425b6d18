/*
 * json.c - strict JSON parser (see json.h).  A recursive-descent parser
 * over a byte range that builds a tree of struct json; every error names
 * the byte offset where the input stopped making sense.  Recursion is
 * bounded by JSON_MAX_DEPTH, so hostile input cannot exhaust the stack.
 */
#include "core/json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
	const unsigned char *p, *start, *end;
	char *err;
	size_t errlen;
	bool failed;
};

static void perr(struct parser *ps, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void perr(struct parser *ps, const char *fmt, ...)
{
	if (ps->failed)
		return;
	ps->failed = true;
	if (!ps->errlen)
		return;
	int n = snprintf(ps->err, ps->errlen, "at byte %zu: ", (size_t)(ps->p - ps->start));
	if (n < 0 || (size_t)n >= ps->errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

const char *json_type_name(enum json_type t)
{
	static const char *const names[] = {"null",   "boolean", "number",
					    "string", "array",	 "object"};
	return t <= JSON_OBJECT ? names[t] : "?";
}

void json_free(struct json *j)
{
	if (!j)
		return;
	for (size_t i = 0; i < j->n; i++) {
		json_free(j->items[i]);
		if (j->keys)
			free(j->keys[i]);
	}
	free(j->items);
	free(j->keys);
	free(j->str);
	free(j);
}

const struct json *json_get(const struct json *j, const char *key)
{
	if (!j || j->type != JSON_OBJECT)
		return NULL;
	for (size_t i = 0; i < j->n; i++)
		if (strcmp(j->keys[i], key) == 0)
			return j->items[i];
	return NULL;
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end &&
	       (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static bool literal(struct parser *ps, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
		return false;
	ps->p += n;
	return true;
}

struct sbuf {
	char *s;
	size_t n, cap;
};

static void sb_put(struct sbuf *b, const void *data, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		b->cap = (b->n + n + 1) * 2;
		b->s = xrealloc(b->s, b->cap);
	}
	memcpy(b->s + b->n, data, n);
	b->n += n;
	b->s[b->n] = '\0';
}

static void sb_utf8(struct sbuf *b, unsigned cp)
{
	unsigned char u[4];
	size_t n;
	if (cp < 0x80)
		u[0] = (unsigned char)cp, n = 1;
	else if (cp < 0x800)
		u[0] = (unsigned char)(0xc0 | cp >> 6), u[1] = (unsigned char)(0x80 | (cp & 0x3f)),
		n = 2;
	else if (cp < 0x10000)
		u[0] = (unsigned char)(0xe0 | cp >> 12),
		u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)),
		u[2] = (unsigned char)(0x80 | (cp & 0x3f)), n = 3;
	else
		u[0] = (unsigned char)(0xf0 | cp >> 18),
		u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f)),
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)),
		u[3] = (unsigned char)(0x80 | (cp & 0x3f)), n = 4;
	sb_put(b, u, n);
}

static int hex4(struct parser *ps, unsigned *out)
{
	unsigned v = 0;
	if (ps->end - ps->p < 4) {
		perr(ps, "truncated \\u escape");
		return -1;
	}
	for (int i = 0; i < 4; i++) {
		unsigned c = ps->p[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else {
			perr(ps, "bad hex digit in \\u escape");
			return -1;
		}
		v = v << 4 | d;
	}
	ps->p += 4;
	*out = v;
	return 0;
}

/* At the opening quote.  On success *out is malloc'd and NUL-terminated. */
static int parse_string(struct parser *ps, char **out, size_t *outlen)
{
	struct sbuf b = {0};
	ps->p++;
	sb_put(&b, "", 0);
	for (;;) {
		if (ps->p >= ps->end) {
			perr(ps, "unterminated string");
			goto fail;
		}
		unsigned c = *ps->p;
		if (c == '"') {
			ps->p++;
			break;
		}
		if (c < 0x20) {
			perr(ps, "control character 0x%02x in a string (escape it)", c);
			goto fail;
		}
		if (c != '\\') {
			const unsigned char *run = ps->p;
			while (ps->p < ps->end && *ps->p != '"' && *ps->p != '\\' &&
			       *ps->p >= 0x20) {
				size_t n = utf8_seq_len(ps->p, ps->end);
				if (!n) {
					perr(ps, "invalid UTF-8");
					goto fail;
				}
				ps->p += n;
			}
			sb_put(&b, run, (size_t)(ps->p - run));
			continue;
		}
		ps->p++;
		if (ps->p >= ps->end) {
			perr(ps, "unterminated string");
			goto fail;
		}
		c = *ps->p++;
		switch (c) {
		case '"': sb_put(&b, "\"", 1); break;
		case '\\': sb_put(&b, "\\", 1); break;
		case '/': sb_put(&b, "/", 1); break;
		case 'b': sb_put(&b, "\b", 1); break;
		case 'f': sb_put(&b, "\f", 1); break;
		case 'n': sb_put(&b, "\n", 1); break;
		case 'r': sb_put(&b, "\r", 1); break;
		case 't': sb_put(&b, "\t", 1); break;
		case 'u': {
			unsigned cp, lo;
			if (hex4(ps, &cp) < 0)
				goto fail;
			if (cp >= 0xdc00 && cp <= 0xdfff) {
				perr(ps, "lone low surrogate \\u%04x", cp);
				goto fail;
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
					perr(ps, "high surrogate \\u%04x without a low one", cp);
					goto fail;
				}
				ps->p += 2;
				if (hex4(ps, &lo) < 0)
					goto fail;
				if (lo < 0xdc00 || lo > 0xdfff) {
					perr(ps, "high surrogate \\u%04x without a low one", cp);
					goto fail;
				}
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			sb_utf8(&b, cp);
			break;
		}
		default:
			ps->p--;
			perr(ps, "invalid escape \\%c", c >= 0x20 && c < 0x7f ? (char)c : '?');
			goto fail;
		}
	}
	*out = b.s;
	*outlen = b.n;
	return 0;
fail:
	free(b.s);
	return -1;
}

static int parse_number(struct parser *ps, struct json *j)
{
	const unsigned char *s = ps->p;
	bool integral = true;
	if (ps->p < ps->end && *ps->p == '-')
		ps->p++;
	if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
		perr(ps, "expected a digit");
		return -1;
	}
	if (*ps->p == '0') {
		ps->p++;
		if (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
			perr(ps, "leading zero in a number");
			return -1;
		}
	} else {
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	}
	if (ps->p < ps->end && *ps->p == '.') {
		integral = false;
		ps->p++;
		if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
			perr(ps, "expected a digit after '.'");
			return -1;
		}
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	}
	if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
		integral = false;
		ps->p++;
		if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
			ps->p++;
		if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
			perr(ps, "expected a digit in the exponent");
			return -1;
		}
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	}
	char buf[64];
	size_t n = (size_t)(ps->p - s);
	char *text = n < sizeof buf ? buf : xmalloc(n + 1);
	memcpy(text, s, n);
	text[n] = '\0';
	j->type = JSON_NUMBER;
	j->num = strtod(text, NULL);
	if (integral) {
		errno = 0;
		long long v = strtoll(text, NULL, 10);
		if (errno == 0) {
			j->is_int = true;
			j->i = v;
		}
	}
	if (text != buf)
		free(text);
	if (!isfinite(j->num)) {
		perr(ps, "number out of range");
		return -1;
	}
	return 0;
}

static struct json *parse_value(struct parser *ps, int depth);

static void add_item(struct json *j, struct json *v, char *key)
{
	j->items = xrealloc(j->items, (j->n + 1) * sizeof *j->items);
	if (j->type == JSON_OBJECT)
		j->keys = xrealloc(j->keys, (j->n + 1) * sizeof *j->keys);
	j->items[j->n] = v;
	if (j->type == JSON_OBJECT)
		j->keys[j->n] = key;
	j->n++;
}

static int parse_container(struct parser *ps, struct json *j, int depth)
{
	bool obj = *ps->p == '{';
	char close = obj ? '}' : ']';
	j->type = obj ? JSON_OBJECT : JSON_ARRAY;
	if (depth >= JSON_MAX_DEPTH) {
		perr(ps, "nested deeper than %d levels", JSON_MAX_DEPTH);
		return -1;
	}
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		return 0;
	}
	for (;;) {
		char *key = NULL;
		skip_ws(ps);
		if (obj) {
			size_t klen;
			if (ps->p >= ps->end || *ps->p != '"') {
				perr(ps, "expected a string (object key)");
				return -1;
			}
			const unsigned char *kpos = ps->p;
			if (parse_string(ps, &key, &klen) < 0)
				return -1;
			if (strlen(key) != klen || json_get(j, key)) {
				const unsigned char *here = ps->p;
				ps->p = kpos;
				perr(ps,
				     strlen(key) != klen ? "object key contains NUL"
							 : "duplicate object key \"%s\"",
				     key);
				ps->p = here;
				free(key);
				return -1;
			}
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != ':') {
				perr(ps, "expected ':' after an object key");
				free(key);
				return -1;
			}
			ps->p++;
		}
		struct json *v = parse_value(ps, depth + 1);
		if (!v) {
			free(key);
			return -1;
		}
		add_item(j, v, key);
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			skip_ws(ps);
			if (ps->p < ps->end && *ps->p == close) {
				perr(ps, "trailing comma");
				return -1;
			}
			continue;
		}
		if (ps->p < ps->end && *ps->p == close) {
			ps->p++;
			return 0;
		}
		perr(ps, "expected ',' or '%c'", close);
		return -1;
	}
}

static struct json *parse_value(struct parser *ps, int depth)
{
	skip_ws(ps);
	if (ps->p >= ps->end) {
		perr(ps, "unexpected end of input");
		return NULL;
	}
	struct json *j = xcalloc(1, sizeof *j);
	int rc = 0;
	switch (*ps->p) {
	case '{':
	case '[': rc = parse_container(ps, j, depth); break;
	case '"':
		j->type = JSON_STRING;
		rc = parse_string(ps, &j->str, &j->len);
		break;
	case 't':
	case 'f':
	case 'n':
		if (literal(ps, "true"))
			j->type = JSON_BOOL, j->b = true;
		else if (literal(ps, "false"))
			j->type = JSON_BOOL;
		else if (literal(ps, "null"))
			j->type = JSON_NULL;
		else
			perr(ps, "unexpected character"), rc = -1;
		break;
	default:
		if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
			rc = parse_number(ps, j);
		else {
			perr(ps, "unexpected %s",
			     *ps->p >= 0x20 && *ps->p < 0x7f ? "character" : "byte");
			rc = -1;
		}
	}
	if (rc < 0) {
		json_free(j);
		return NULL;
	}
	return j;
}

struct json *json_parse(const char *text, size_t len, char *err, size_t errlen)
{
	struct parser ps = {(const unsigned char *)text,
			    (const unsigned char *)text,
			    (const unsigned char *)text + len,
			    err,
			    errlen,
			    false};
	if (errlen)
		err[0] = '\0';
	struct json *j = parse_value(&ps, 0);
	if (!j)
		return NULL;
	skip_ws(&ps);
	if (ps.p != ps.end) {
		perr(&ps, "unexpected content after the JSON value");
		json_free(j);
		return NULL;
	}
	return j;
}

void json_quote(char **buf, size_t *n, const char *s, size_t len)
{
	struct sbuf b = {*buf, *n, *buf ? *n + 1 : 0};
	sb_put(&b, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];
		if (c == '"' || c == '\\') {
			esc[0] = '\\', esc[1] = (char)c;
			sb_put(&b, esc, 2);
		} else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof esc, "\\u%04x", c);
			sb_put(&b, esc, 6);
		} else {
			sb_put(&b, &s[i], 1);
		}
	}
	sb_put(&b, "\"", 1);
	*buf = b.s;
	*n = b.n;
}
