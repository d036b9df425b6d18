/*
 * check_metrics.c - the metric registry alone (core/metrics.h), through
 * its rendered text: counters and gauges with and without labels, value
 * formatting, HELP and label-value escaping (backslash, quote, newline),
 * the cap on label combinations and the one "other" series past it,
 * histogram buckets rendered cumulatively with +Inf equal to _count,
 * metric_reset, registering a name twice, and a scrape whose async
 * collector answers later (done never runs inside metrics_scrape).
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/metrics.h"
#include "core/util.h"
#include "check_run.h"

static char *render(void)
{
	size_t len;
	char *t = metrics_render(&len);
	ck_assert_uint_eq(strlen(t), len);
	return t;
}

/* The text holds `line` as a whole line. */
static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; (p = strstr(p, line)); p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return true;
	return false;
}

#define ck_line(text, line)                                                                        \
	ck_assert_msg(has_line(text, line), "no line \"%s\" in:\n%s", line, text)

/* Lines that start with prefix. */
static int count_prefix(const char *text, const char *prefix)
{
	int n = 0;
	size_t len = strlen(prefix);
	for (const char *p = text; *p;) {
		if (!strncmp(p, prefix, len))
			n++;
		const char *nl = strchr(p, '\n');
		if (!nl)
			break;
		p = nl + 1;
	}
	return n;
}

static void teardown(void)
{
	metrics_free();
}

START_TEST(test_counter_gauge_render)
{
	struct metric *c =
		metric_new(METRIC_COUNTER, "reactor_t_total", "Things done.", "method,code");
	struct metric *g = metric_new(METRIC_GAUGE, "reactor_t_open", "Open things.", NULL);
	ck_assert_ptr_eq(metric_new(METRIC_COUNTER, "reactor_t_total", "again", "x"), c);
	metric_add(c, 1, "Get", "OK");
	metric_add(c, 2, "Get", "OK");
	metric_add(c, 1, "Put", NULL);
	metric_set(g, 7);
	metric_add(g, -2);
	char *t = render();
	/* Registration order, HELP then TYPE before the samples, series in
	 * creation order. */
	const char *want = "# HELP reactor_t_total Things done.\n"
			   "# TYPE reactor_t_total counter\n"
			   "reactor_t_total{method=\"Get\",code=\"OK\"} 3\n"
			   "reactor_t_total{method=\"Put\",code=\"\"} 1\n"
			   "# HELP reactor_t_open Open things.\n"
			   "# TYPE reactor_t_open gauge\n"
			   "reactor_t_open 5\n";
	ck_assert_str_eq(t, want);
	free(t);
}
END_TEST

START_TEST(test_values)
{
	struct metric *g = metric_new(METRIC_GAUGE, "reactor_v", "Values.", "k");
	metric_set(g, 0.25, "frac");
	metric_set(g, 1e15, "big");
	metric_set(g, -3, "neg");
	metric_set(g, INFINITY, "inf");
	metric_set(g, -INFINITY, "ninf");
	metric_set(g, NAN, "nan");
	char *t = render();
	ck_line(t, "reactor_v{k=\"frac\"} 0.25");
	ck_line(t, "reactor_v{k=\"big\"} 1000000000000000");
	ck_line(t, "reactor_v{k=\"neg\"} -3");
	ck_line(t, "reactor_v{k=\"inf\"} +Inf");
	ck_line(t, "reactor_v{k=\"ninf\"} -Inf");
	ck_line(t, "reactor_v{k=\"nan\"} NaN");
	free(t);
}
END_TEST

START_TEST(test_escaping)
{
	struct metric *g =
		metric_new(METRIC_GAUGE, "reactor_esc", "Back\\slash, \"quote\"\nnext.", "path");
	metric_set(g, 1, "a\"b\\c\nd");
	char *t = render();
	/* HELP escapes \ and newline only; a label value also ". */
	ck_line(t, "# HELP reactor_esc Back\\\\slash, \"quote\"\\nnext.");
	ck_line(t, "reactor_esc{path=\"a\\\"b\\\\c\\nd\"} 1");
	/* No raw newline inside a sample: every line is HELP, TYPE or a
	 * sample of this metric. */
	ck_assert_int_eq(count_prefix(t, "reactor_esc") + count_prefix(t, "# "), 3);
	free(t);
}
END_TEST

START_TEST(test_series_cap_other)
{
	struct metric *c = metric_new(METRIC_COUNTER, "reactor_cap_total", "Capped.", "a,b");
	for (int i = 0; i < METRICS_MAX_SERIES + 100; i++) {
		char v[16];
		snprintf(v, sizeof v, "m%d", i);
		metric_add(c, 1, v, "x");
	}
	/* Existing series keep counting past the cap. */
	metric_add(c, 5, "m0", "x");
	/* A label set too long for the key also lands in "other". */
	char *huge = xmalloc(2000);
	memset(huge, 'z', 1999);
	huge[1999] = '\0';
	metric_add(c, 1, huge, "x");
	free(huge);
	char *t = render();
	ck_assert_int_eq(count_prefix(t, "reactor_cap_total{"), METRICS_MAX_SERIES + 1);
	ck_line(t, "reactor_cap_total{a=\"m0\",b=\"x\"} 6");
	ck_line(t, "reactor_cap_total{a=\"m499\",b=\"x\"} 1");
	ck_assert(!strstr(t, "\"m500\""));
	ck_line(t, "reactor_cap_total{a=\"other\",b=\"other\"} 101");
	free(t);
	/* After a reset the combinations are free again. */
	metric_reset(c);
	metric_add(c, 1, "m600", "y");
	t = render();
	ck_assert_int_eq(count_prefix(t, "reactor_cap_total{"), 1);
	ck_line(t, "reactor_cap_total{a=\"m600\",b=\"y\"} 1");
	free(t);
}
END_TEST

START_TEST(test_histogram_cumulative)
{
	static const double b[] = {0.5, 1, 5};
	struct metric *h = metric_histogram("reactor_h_seconds", "Durations.", "m", b, 3);
	ck_assert_ptr_eq(metric_histogram("reactor_h_seconds", "x", NULL, b, 1), h);
	metric_observe(h, 0.25, "a");
	metric_observe(h, 0.5, "a"); /* a bound is inclusive (le) */
	metric_observe(h, 0.75, "a");
	metric_observe(h, 3, "a");
	metric_observe(h, 100, "a");
	metric_observe(h, 2, "b");
	char *t = render();
	ck_line(t, "# TYPE reactor_h_seconds histogram");
	ck_line(t, "reactor_h_seconds_bucket{m=\"a\",le=\"0.5\"} 2");
	ck_line(t, "reactor_h_seconds_bucket{m=\"a\",le=\"1\"} 3");
	ck_line(t, "reactor_h_seconds_bucket{m=\"a\",le=\"5\"} 4");
	ck_line(t, "reactor_h_seconds_bucket{m=\"a\",le=\"+Inf\"} 5");
	ck_line(t, "reactor_h_seconds_sum{m=\"a\"} 104.5");
	ck_line(t, "reactor_h_seconds_count{m=\"a\"} 5");
	ck_line(t, "reactor_h_seconds_bucket{m=\"b\",le=\"0.5\"} 0");
	ck_line(t, "reactor_h_seconds_bucket{m=\"b\",le=\"1\"} 0");
	ck_line(t, "reactor_h_seconds_bucket{m=\"b\",le=\"5\"} 1");
	ck_line(t, "reactor_h_seconds_bucket{m=\"b\",le=\"+Inf\"} 1");
	ck_line(t, "reactor_h_seconds_count{m=\"b\"} 1");
	free(t);
	/* Without labels, le is the only one. */
	struct metric *n = metric_histogram("reactor_h2_seconds", "Plain.", NULL, b, 3);
	metric_observe(n, 1);
	t = render();
	ck_line(t, "reactor_h2_seconds_bucket{le=\"1\"} 1");
	ck_line(t, "reactor_h2_seconds_sum 1");
	ck_line(t, "reactor_h2_seconds_count 1");
	free(t);
}
END_TEST

/* ---- a scrape with an async collector ---------------------------------- */

static struct {
	struct metric *g;
	struct metrics_pending *p;
	int syncs, done;
	bool in_scrape;
	char *text;
} S;

static void sync_collect(void *arg)
{
	(void)arg;
	S.syncs++;
	metric_set(S.g, 42, "sync");
}

static void async_collect(struct metrics_pending *p, void *arg)
{
	(void)arg;
	S.p = p; /* answered later, from the test */
}

static void scrape_done(const char *text, size_t len, void *arg)
{
	ck_assert_ptr_eq(arg, &S);
	ck_assert(!S.in_scrape);
	ck_assert_uint_eq(strlen(text), len);
	S.text = xstrdup(text);
	S.done++;
}

START_TEST(test_scrape_async)
{
	struct event_base *base = event_base_new();
	metrics_init(base, "1.2.3");
	memset(&S, 0, sizeof(S));
	S.g = metric_new(METRIC_GAUGE, "reactor_s", "Collected.", "from");
	metrics_collector(sync_collect, NULL);
	metrics_async_collector(async_collect, NULL);
	S.in_scrape = true;
	metrics_scrape(scrape_done, &S);
	S.in_scrape = false;
	ck_assert_int_eq(S.syncs, 1);
	ck_assert_ptr_nonnull(S.p);
	/* Nothing renders while the async collector is out. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(S.done, 0);
	metric_set(S.g, 7, "async");
	metrics_collect_done(S.p, false);
	ck_assert(check_loop_until(base, &S.done, 1, 5000000));
	ck_line(S.text, "reactor_s{from=\"sync\"} 42");
	ck_line(S.text, "reactor_s{from=\"async\"} 7");
	ck_line(S.text, "reactor_build_info{version=\"1.2.3\"} 1");
	ck_line(S.text, "reactor_scrape_errors 1");
	/* The label-less standard histograms exist before any observation. */
	ck_assert_int_eq(count_prefix(S.text, "reactor_event_loop_lag_seconds_count "), 1);
	ck_line(S.text, "reactor_redis_roundtrip_seconds_count 0");
	free(S.text);
	metrics_free();
	event_base_free(base);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, test_counter_gauge_render);
	tcase_add_test(tc, test_values);
	tcase_add_test(tc, test_escaping);
	tcase_add_test(tc, test_series_cap_other);
	tcase_add_test(tc, test_histogram_cumulative);
	tcase_add_test(tc, test_scrape_async);
	suite_add_tcase(s, tc);
	return check_run(s);
}
