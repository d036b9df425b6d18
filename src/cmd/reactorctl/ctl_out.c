/*
 * ctl_out.c - reactorctl's output helpers (see ctl.h): colour only on a
 * terminal, byte sizes, relative times and durations, aligned tables, the
 * --json writer and the transfer progress bar.  Nothing here talks to
 * the server.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/reactorctl/ctl.h"
#include "core/json.h"

const char *ctl_col(const struct ctl *c, enum ctl_colour k)
{
	static const char *const seq[] = {
		[CTL_RESET] = "\033[0m", [CTL_BOLD] = "\033[1m",   [CTL_DIM] = "\033[2m",
		[CTL_RED] = "\033[31m",	 [CTL_GREEN] = "\033[32m", [CTL_YELLOW] = "\033[33m",
		[CTL_BLUE] = "\033[34m",
	};
	return c && c->colour ? seq[k] : "";
}

const char *ctl_bytes(char *buf, size_t len, int64_t n)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	if (n < 1024 && n > -1024) {
		snprintf(buf, len, "%" PRId64 " B", n);
		return buf;
	}
	double v = (double)n;
	size_t u = 0;
	while ((v >= 1024 || v <= -1024) && u + 1 < ARRAY_LEN(unit)) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, v < 10 && v > -10 ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return buf;
}

const char *ctl_duration(char *buf, size_t len, int64_t us)
{
	if (us < 0)
		us = -us;
	int64_t s = us / 1000000;
	if (s < 1)
		snprintf(buf, len, "%" PRId64 "ms", us / 1000);
	else if (s < 60)
		snprintf(buf, len, "%" PRId64 "s", s);
	else if (s < 3600)
		snprintf(buf, len, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%" PRId64 "h%02" PRId64 "m", s / 3600, s / 60 % 60);
	else
		snprintf(buf, len, "%" PRId64 "d%" PRId64 "h", s / 86400, s / 3600 % 24);
	return buf;
}

const char *ctl_reltime(char *buf, size_t len, int64_t when_us)
{
	if (when_us <= 0) {
		snprintf(buf, len, "-");
		return buf;
	}
	int64_t d = when_us - now_us();
	int64_t s = (d < 0 ? -d : d) / 1000000;
	if (s < 1) {
		snprintf(buf, len, "just now");
		return buf;
	}
	char t[24];
	if (s < 60)
		snprintf(t, sizeof(t), "%" PRId64 "s", s);
	else if (s < 3600)
		snprintf(t, sizeof(t), "%" PRId64 "m", s / 60);
	else if (s < 86400)
		snprintf(t, sizeof(t), "%" PRId64 "h", s / 3600);
	else
		snprintf(t, sizeof(t), "%" PRId64 "d", s / 86400);
	snprintf(buf, len, d < 0 ? "%s ago" : "in %s", t);
	return buf;
}

/* ---- tables ------------------------------------------------------------- */

struct ctl_table {
	const struct ctl *c;
	size_t ncols, nrows, cap;
	char **cells; /* nrows * ncols; row 0 is the header */
};

/* Width on a terminal: no escape sequences, no UTF-8 continuation bytes. */
static size_t vis_width(const char *s)
{
	size_t w = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == 033 && p[1] == '[') {
			p += 2;
			while (*p && !(*p >= 0x40 && *p <= 0x7e))
				p++;
			if (!*p)
				break;
			continue;
		}
		if ((*p & 0xc0) != 0x80)
			w++;
	}
	return w;
}

static void table_add(struct ctl_table *t, va_list ap)
{
	if (t->nrows == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 16;
		t->cells = xrealloc(t->cells, t->cap * t->ncols * sizeof(*t->cells));
	}
	for (size_t i = 0; i < t->ncols; i++) {
		const char *s = va_arg(ap, const char *);
		t->cells[t->nrows * t->ncols + i] = xstrdup(s ? s : "-");
	}
	t->nrows++;
}

struct ctl_table *ctl_table_new(const struct ctl *c, size_t ncols, ...)
{
	struct ctl_table *t = xcalloc(1, sizeof(*t));
	t->c = c;
	t->ncols = ncols;
	va_list ap;
	va_start(ap, ncols);
	table_add(t, ap);
	va_end(ap);
	return t;
}

void ctl_table_row(struct ctl_table *t, ...)
{
	va_list ap;
	va_start(ap, t);
	table_add(t, ap);
	va_end(ap);
}

void ctl_table_print(struct ctl_table *t, FILE *f)
{
	size_t *w = xcalloc(t->ncols, sizeof(*w));
	for (size_t r = 0; r < t->nrows; r++)
		for (size_t i = 0; i < t->ncols; i++) {
			size_t n = vis_width(t->cells[r * t->ncols + i]);
			if (n > w[i])
				w[i] = n;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		if (r == 0)
			fputs(ctl_col(t->c, CTL_BOLD), f);
		for (size_t i = 0; i < t->ncols; i++) {
			const char *s = t->cells[r * t->ncols + i];
			fputs(s, f);
			if (i + 1 < t->ncols)
				fprintf(f, "%*s", (int)(w[i] - vis_width(s) + 2), "");
		}
		if (r == 0)
			fputs(ctl_col(t->c, CTL_RESET), f);
		fputc('\n', f);
	}
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(w);
	free(t);
}

/* ---- JSON ----------------------------------------------------------------- */

#define JSON_DEPTH 64

struct ctl_json {
	char *buf;
	size_t n;
	int depth;
	bool first[JSON_DEPTH]; /* no value yet at this level */
	char kind[JSON_DEPTH];	/* '{' or '[' opened this level */
	bool after_key;
};

static void jput(struct ctl_json *j, const char *s, size_t n)
{
	j->buf = xrealloc(j->buf, j->n + n + 1);
	memcpy(j->buf + j->n, s, n);
	j->n += n;
	j->buf[j->n] = '\0';
}

/* Before a value: the comma, unless a key was just written. */
static void jsep(struct ctl_json *j)
{
	if (j->after_key) {
		j->after_key = false;
		return;
	}
	if (j->depth > 0) {
		if (!j->first[j->depth])
			jput(j, ",", 1);
		j->first[j->depth] = false;
	}
}

struct ctl_json *ctl_json_new(void)
{
	return xcalloc(1, sizeof(struct ctl_json));
}

static void jopen(struct ctl_json *j, const char *c)
{
	jsep(j);
	jput(j, c, 1);
	if (j->depth + 1 < JSON_DEPTH)
		j->depth++;
	j->first[j->depth] = true;
	j->kind[j->depth] = *c;
}

void ctl_json_obj(struct ctl_json *j)
{
	jopen(j, "{");
}

void ctl_json_arr(struct ctl_json *j)
{
	jopen(j, "[");
}

void ctl_json_end(struct ctl_json *j)
{
	jput(j, j->kind[j->depth] == '[' ? "]" : "}", 1);
	if (j->depth > 0)
		j->depth--;
}

void ctl_json_key(struct ctl_json *j, const char *k)
{
	jsep(j);
	json_quote(&j->buf, &j->n, k, strlen(k));
	jput(j, ":", 1);
	j->after_key = true;
}

void ctl_json_strn(struct ctl_json *j, const char *s, size_t n)
{
	jsep(j);
	json_quote(&j->buf, &j->n, s, n);
}

void ctl_json_str(struct ctl_json *j, const char *s)
{
	if (!s) {
		ctl_json_null(j);
		return;
	}
	ctl_json_strn(j, s, strlen(s));
}

void ctl_json_int(struct ctl_json *j, int64_t v)
{
	char b[32];
	int n = snprintf(b, sizeof(b), "%" PRId64, v);
	jsep(j);
	jput(j, b, (size_t)n);
}

void ctl_json_bool(struct ctl_json *j, bool v)
{
	jsep(j);
	jput(j, v ? "true" : "false", v ? 4 : 5);
}

void ctl_json_null(struct ctl_json *j)
{
	jsep(j);
	jput(j, "null", 4);
}

void ctl_json_kstr(struct ctl_json *j, const char *k, const char *s)
{
	ctl_json_key(j, k);
	ctl_json_str(j, s);
}

void ctl_json_kint(struct ctl_json *j, const char *k, int64_t v)
{
	ctl_json_key(j, k);
	ctl_json_int(j, v);
}

void ctl_json_kbool(struct ctl_json *j, const char *k, bool v)
{
	ctl_json_key(j, k);
	ctl_json_bool(j, v);
}

void ctl_json_print(struct ctl_json *j)
{
	if (j->buf)
		fwrite(j->buf, 1, j->n, stdout);
	fputc('\n', stdout);
	free(j->buf);
	free(j);
}

/* ---- progress ------------------------------------------------------------- */

#define PROGRESS_AFTER_US 1000000
#define PROGRESS_EVERY_US 200000

void ctl_progress_start(struct ctl_progress *p, const struct ctl *c, const char *label,
			int64_t total)
{
	memset(p, 0, sizeof(*p));
	p->c = c;
	p->label = label;
	p->total = total;
	p->start_us = p->last_us = mono_us();
}

static void progress_draw(struct ctl_progress *p, int64_t now)
{
	char done[16], tot[16], rate[16], eta[24] = "";
	double secs = (double)(now - p->start_us) / 1e6;
	int64_t bps = secs > 0 ? (int64_t)((double)p->done / secs) : 0;
	ctl_bytes(done, sizeof(done), p->done);
	ctl_bytes(rate, sizeof(rate), bps);
	char bar[24] = "";
	int pct = 0;
	if (p->total > 0) {
		pct = (int)(p->done * 100 / p->total);
		int fill = (int)(p->done * 20 / p->total);
		for (int i = 0; i < 20; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[20] = '\0';
		ctl_bytes(tot, sizeof(tot), p->total);
		if (bps > 0) {
			char d[16];
			snprintf(eta, sizeof(eta), " ETA %s",
				 ctl_duration(d, sizeof(d), (p->total - p->done) * 1000000 / bps));
		}
		fprintf(stderr, "\r\033[K%s [%s] %3d%% %s / %s  %s/s%s", p->label, bar, pct, done,
			tot, rate, eta);
	} else {
		fprintf(stderr, "\r\033[K%s %s  %s/s", p->label, done, rate);
	}
	fflush(stderr);
}

void ctl_progress_add(struct ctl_progress *p, int64_t n)
{
	p->done += n;
	if (!p->c || !p->c->tty_err || p->c->json)
		return;
	int64_t now = mono_us();
	if (!p->c->progress_now && now - p->start_us < PROGRESS_AFTER_US)
		return;
	if (p->shown && now - p->last_us < PROGRESS_EVERY_US)
		return;
	p->last_us = now;
	p->shown = true;
	progress_draw(p, now);
}

void ctl_progress_end(struct ctl_progress *p)
{
	if (!p->shown)
		return;
	progress_draw(p, mono_us());
	fputs("\r\033[K", stderr);
	fflush(stderr);
	p->shown = false;
}
