/* test_metrics.c -- common/metrics: exact exposition text, histogram
 * buckets, label bounds and escaping, registration rules, and exact sums
 * under concurrent updates. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "util.h"

static char *render(struct metrics *reg)
{
	struct strbuf sb = STRBUF_INIT;
	metrics_render(reg, &sb);
	return sb_detach(&sb);
}

/* Queue depth by state, computed at scrape time. */
static void collect_depth(void *ctx, struct metrics_emitter *emit)
{
	const int *depth = ctx;
	metrics_emit(emit, depth[0], "queued", NULL);
	metrics_emit(emit, depth[1], "running", NULL);
}

static void test_exact_text(void)
{
	struct metrics *reg = metrics_new();
	struct metric *enq = metrics_counter(reg, "jobrunner_runs_enqueued_total",
					     "Runs enqueued.", "job", NULL);
	struct metric *rec = metrics_counter(reg, "jobrunner_reclaims_total",
					     "Runs reclaimed from silent consumers.", NULL, NULL);
	struct metric *last = metrics_gauge(reg, "jobrunner_last_cycle_timestamp_seconds",
					    "When the last cycle finished.", NULL, NULL);
	struct metric *conn = metrics_counter(reg, "jobrunner_reconnects_total",
					      "Reconnects by backend.", "backend", "reason");
	static const double b[] = { 0.001, 0.005, 0.1 };
	struct metric *dur = metrics_histogram(reg, "jobrunner_run_duration_seconds",
					       "Run duration.", "job", NULL, b, 3);
	int depth[2] = { 7, 2 };
	struct metric *qd = metrics_callback(reg, METRIC_GAUGE, "jobrunner_queue_depth",
					     "Runs by state.", "state", NULL, collect_depth, depth);
	CHECK(enq && rec && last && conn && dur && qd);

	metrics_inc(metrics_with(enq, "noop", NULL));
	metrics_add(metrics_with(enq, "noop", NULL), 4);
	metrics_inc(metrics_with(enq, "meta_spend", NULL));
	metrics_set(metrics_with(last, NULL, NULL), 1764358895.123);
	metrics_inc(metrics_with(conn, "redis", "timeout"));
	struct metric_series *d = metrics_with(dur, "noop", NULL);
	metrics_observe_ms(d, 0.5);     /* <= 0.001 */
	metrics_observe_ms(d, 1);       /* exactly 0.001: le is inclusive */
	metrics_observe_ms(d, 5);       /* exactly 0.005 */
	metrics_observe_ms(d, 99.5);    /* <= 0.1 */
	metrics_observe_ms(d, 2500);    /* +Inf */

	char *text = render(reg);
	const char *want =
		"# HELP jobrunner_runs_enqueued_total Runs enqueued.\n"
		"# TYPE jobrunner_runs_enqueued_total counter\n"
		"jobrunner_runs_enqueued_total{job=\"noop\"} 5\n"
		"jobrunner_runs_enqueued_total{job=\"meta_spend\"} 1\n"
		"# HELP jobrunner_reclaims_total Runs reclaimed from silent consumers.\n"
		"# TYPE jobrunner_reclaims_total counter\n"
		"jobrunner_reclaims_total 0\n"
		"# HELP jobrunner_last_cycle_timestamp_seconds When the last cycle finished.\n"
		"# TYPE jobrunner_last_cycle_timestamp_seconds gauge\n"
		"jobrunner_last_cycle_timestamp_seconds 1764358895.123\n"
		"# HELP jobrunner_reconnects_total Reconnects by backend.\n"
		"# TYPE jobrunner_reconnects_total counter\n"
		"jobrunner_reconnects_total{backend=\"redis\",reason=\"timeout\"} 1\n"
		"# HELP jobrunner_run_duration_seconds Run duration.\n"
		"# TYPE jobrunner_run_duration_seconds histogram\n"
		"jobrunner_run_duration_seconds_bucket{job=\"noop\",le=\"0.001\"} 2\n"
		"jobrunner_run_duration_seconds_bucket{job=\"noop\",le=\"0.005\"} 3\n"
		"jobrunner_run_duration_seconds_bucket{job=\"noop\",le=\"0.1\"} 4\n"
		"jobrunner_run_duration_seconds_bucket{job=\"noop\",le=\"+Inf\"} 5\n"
		"jobrunner_run_duration_seconds_sum{job=\"noop\"} 2.606\n"
		"jobrunner_run_duration_seconds_count{job=\"noop\"} 5\n"
		"# HELP jobrunner_queue_depth Runs by state.\n"
		"# TYPE jobrunner_queue_depth gauge\n"
		"jobrunner_queue_depth{state=\"queued\"} 7\n"
		"jobrunner_queue_depth{state=\"running\"} 2\n";
	CHECK_STR(text, want);
	if (strcmp(text, want) != 0)
		fprintf(stderr, "--- got ---\n%s--- end ---\n", text);
	free(text);

	/* the callback is asked again on every scrape */
	depth[0] = 0;
	text = render(reg);
	CHECK(strstr(text, "jobrunner_queue_depth{state=\"queued\"} 0\n") != NULL);
	free(text);

	CHECK(metrics_value(metrics_with(enq, "noop", NULL)) == 5);
	CHECK(metrics_count(d) == 5);
	metrics_free(reg);
}

static void test_histogram_default_buckets(void)
{
	struct metrics *reg = metrics_new();
	struct metric *h = metrics_histogram(reg, "h_seconds", "h", NULL, NULL, NULL, 0);
	struct metric_series *s = metrics_with(h, NULL, NULL);
	/* one observation per default bucket bound, plus one past the last */
	const double ms[] = { 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
			      30000, 60000, 60001 };
	for (size_t i = 0; i < JR_ARRAY_LEN(ms); i++)
		metrics_observe_ms(s, ms[i]);
	metrics_observe_ms(s, -3);      /* counts as 0 */
	metrics_observe_ms(s, NAN);     /* counts as 0 */
	char *text = render(reg);
	const char *les[] = { "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
			      "1", "2.5", "5", "10", "30", "60" };
	for (size_t i = 0; i < JR_ARRAY_LEN(les); i++) {
		char line[128];
		/* cumulative: bucket i holds the two zeros and observations 0..i */
		snprintf(line, sizeof line, "h_seconds_bucket{le=\"%s\"} %zu\n", les[i], i + 3);
		CHECK(strstr(text, line) != NULL);
	}
	CHECK(strstr(text, "h_seconds_bucket{le=\"+Inf\"} 17\n") != NULL);
	CHECK(strstr(text, "h_seconds_count 17\n") != NULL);
	CHECK(strstr(text, "h_seconds_sum 169.442\n") != NULL);
	free(text);
	metrics_free(reg);
}

static void test_labels_escaped_and_bounded(void)
{
	struct metrics *reg = metrics_new();
	struct metric *c = metrics_counter(reg, "c_total", "Help with \\ and\nnewline \"q\".",
					   "job", NULL);
	metrics_inc(metrics_with(c, "a\"b\\c\nd", NULL));
	metrics_inc(metrics_with(c, NULL, NULL));             /* empty value */
	char *text = render(reg);
	CHECK_STR(text, "# HELP c_total Help with \\\\ and\\nnewline \"q\".\n"
			"# TYPE c_total counter\n"
			"c_total{job=\"a\\\"b\\\\c\\nd\"} 1\n"
			"c_total{job=\"\"} 1\n");
	free(text);

	/* long values are cut; the cut value is the same series */
	char longv[400];
	memset(longv, 'v', sizeof longv - 1);
	longv[sizeof longv - 1] = '\0';
	struct metric_series *s1 = metrics_with(c, longv, NULL);
	longv[200] = '\0';
	CHECK(metrics_with(c, longv, NULL) == s1);

	/* junk values: at most METRICS_MAX_SERIES series, the rest in _overflow */
	struct metric *g = metrics_counter(reg, "junk_total", "j", "k", NULL);
	for (int i = 0; i < 1000; i++) {
		char v[32];
		snprintf(v, sizeof v, "v%d", i);
		metrics_inc(metrics_with(g, v, NULL));
	}
	struct metric_series *ov = metrics_with(g, "another", NULL);
	CHECK(ov == metrics_with(g, "v999", NULL));
	CHECK(metrics_value(ov) == 1000 - METRICS_MAX_SERIES);
	CHECK(metrics_value(metrics_with(g, "v0", NULL)) == 1);
	text = render(reg);
	size_t lines = 0;
	for (const char *p = strstr(text, "junk_total{"); p; p = strstr(p + 1, "junk_total{"))
		lines++;
	CHECK(lines == METRICS_MAX_SERIES + 1);
	CHECK(strstr(text, "junk_total{k=\"_overflow\"} 936\n") != NULL);
	free(text);
	metrics_free(reg);
}

static void test_registration(void)
{
	struct metrics *reg = metrics_new();
	struct metric *a = metrics_counter(reg, "a_total", "a", "job", NULL);
	CHECK(a != NULL);
	CHECK(metrics_counter(reg, "a_total", "other help", "job", NULL) == a);
	CHECK(metrics_counter(reg, "a_total", "a", NULL, NULL) == NULL);
	CHECK(metrics_counter(reg, "a_total", "a", "job", "state") == NULL);
	CHECK(metrics_gauge(reg, "a_total", "a", "job", NULL) == NULL);
	CHECK(metrics_counter(reg, "9bad", "x", NULL, NULL) == NULL);
	CHECK(metrics_counter(reg, "bad-name", "x", NULL, NULL) == NULL);
	CHECK(metrics_counter(reg, "", "x", NULL, NULL) == NULL);
	CHECK(metrics_counter(reg, "ok:name_total", "x", NULL, NULL) != NULL);
	CHECK(metrics_counter(reg, "x_total", "x", "le", NULL) == NULL);
	CHECK(metrics_counter(reg, "x_total", "x", "a:b", NULL) == NULL);
	CHECK(metrics_counter(reg, "x_total", "x", "job", "job") == NULL);
	CHECK(metrics_counter(reg, "x_total", "x", NULL, "job") == NULL);
	static const double unsorted[] = { 0.1, 0.01 };
	static const double dup[] = { 0.0000001, 0.0000002 };   /* same microsecond */
	CHECK(metrics_histogram(reg, "h1", "h", NULL, NULL, unsorted, 2) == NULL);
	CHECK(metrics_histogram(reg, "h2", "h", NULL, NULL, dup, 2) == NULL);
	CHECK(metrics_callback(reg, METRIC_HISTOGRAM, "cb", "c", NULL, NULL,
			       collect_depth, NULL) == NULL);
	CHECK(metrics_callback(reg, METRIC_GAUGE, "cb", "c", NULL, NULL, NULL, NULL) == NULL);

	/* the wrong operation for a type does nothing; NULL does nothing */
	struct metric_series *s = metrics_with(a, "x", NULL);
	metrics_set(s, 42);
	metrics_observe_ms(s, 42);
	CHECK(metrics_value(s) == 0);
	metrics_inc(NULL);
	metrics_add(NULL, 1);
	metrics_set(NULL, 1);
	metrics_gauge_add(NULL, 1);
	metrics_observe_ms(NULL, 1);
	CHECK(metrics_with(NULL, "x", NULL) == NULL);

	/* gauges: set, add, inc, formatting */
	struct metric *g = metrics_gauge(reg, "g", "g", "k", NULL);
	struct metric_series *gs = metrics_with(g, "a", NULL);
	metrics_set(gs, 0.1);
	metrics_gauge_add(gs, 0.2);
	metrics_inc(gs);
	CHECK(fabs(metrics_value(gs) - 1.3) < 1e-12);
	metrics_set(metrics_with(g, "b", NULL), -2);
	metrics_set(metrics_with(g, "c", NULL), 1e20);
	metrics_set(metrics_with(g, "d", NULL), INFINITY);
	metrics_set(metrics_with(g, "e", NULL), NAN);
	metrics_set(metrics_with(g, "f", NULL), 0.1);
	char *text = render(reg);
	CHECK(strstr(text, "g{k=\"a\"} 1.3\n") != NULL);
	CHECK(strstr(text, "g{k=\"b\"} -2\n") != NULL);
	CHECK(strstr(text, "g{k=\"c\"} 1e+20\n") != NULL);
	CHECK(strstr(text, "g{k=\"d\"} +Inf\n") != NULL);
	CHECK(strstr(text, "g{k=\"e\"} NaN\n") != NULL);
	CHECK(strstr(text, "g{k=\"f\"} 0.1\n") != NULL);
	free(text);

	/* too many families */
	int made = 0;
	for (int i = 0; i < METRICS_MAX_FAMILIES + 10; i++) {
		char name[32];
		snprintf(name, sizeof name, "f%d", i);
		if (metrics_gauge(reg, name, "f", NULL, NULL))
			made++;
	}
	CHECK(made < METRICS_MAX_FAMILIES);
	metrics_free(reg);

	CHECK(metrics_default() != NULL);
	CHECK(metrics_default() == metrics_default());
}

/* ------------------------------------------------------------------ */
/* concurrency                                                         */
/* ------------------------------------------------------------------ */

#define NTHREADS 8
#define NOPS 100000

struct shared {
	struct metrics *reg;
	struct metric *counter;
	struct metric *gauge;
	struct metric *hist;
	struct metric *fresh;
	int idx;
};

static void *updater(void *arg)
{
	struct shared *sh = arg;
	struct metric_series *cached = metrics_with(sh->counter, "noop", NULL);
	struct metric_series *hs = metrics_with(sh->hist, NULL, NULL);
	for (int i = 0; i < NOPS; i++) {
		if (i & 1)
			metrics_inc(cached);
		else
			metrics_inc(metrics_with(sh->counter, "noop", NULL));
		metrics_gauge_add(metrics_with(sh->gauge, NULL, NULL), (i & 1) ? 2 : -1);
		metrics_observe_ms(hs, (double)(i % 100));
		/* every thread races to create the same 32 new series */
		char v[16];
		snprintf(v, sizeof v, "v%d", i % 32);
		metrics_inc(metrics_with(sh->fresh, v, NULL));
		if (i % 5000 == 0) {
			char *text = render(sh->reg);
			free(text);
		}
	}
	return NULL;
}

static void test_concurrent_updates(void)
{
	struct metrics *reg = metrics_new();
	struct shared base = {
		.reg = reg,
		.counter = metrics_counter(reg, "runs_total", "r", "job", NULL),
		.gauge = metrics_gauge(reg, "inflight", "i", NULL, NULL),
		.hist = metrics_histogram(reg, "lat_seconds", "l", NULL, NULL, NULL, 0),
		.fresh = metrics_counter(reg, "fresh_total", "f", "v", NULL),
	};
	pthread_t th[NTHREADS];
	struct shared sh[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		sh[i] = base;
		sh[i].idx = i;
		pthread_create(&th[i], NULL, updater, &sh[i]);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);

	CHECK(metrics_value(metrics_with(base.counter, "noop", NULL)) == (double)NTHREADS * NOPS);
	CHECK(metrics_value(metrics_with(base.gauge, NULL, NULL)) == (double)NTHREADS * NOPS / 2);
	struct metric_series *hs = metrics_with(base.hist, NULL, NULL);
	CHECK(metrics_count(hs) == (uint64_t)NTHREADS * NOPS);
	for (int v = 0; v < 32; v++) {
		char name[16];
		snprintf(name, sizeof name, "v%d", v);
		CHECK(metrics_value(metrics_with(base.fresh, name, NULL)) ==
		      (double)NTHREADS * NOPS / 32);
	}
	char *text = render(reg);
	size_t lines = 0;
	for (const char *p = strstr(text, "fresh_total{"); p; p = strstr(p + 1, "fresh_total{"))
		lines++;
	CHECK(lines == 32);             /* no duplicate series from the race */
	/* sum of 0..99 ms, NOPS/100 times per thread: 4950 ms * 1000 * 8 */
	CHECK(strstr(text, "lat_seconds_sum 39600\n") != NULL);
	char want[64];
	snprintf(want, sizeof want, "lat_seconds_count %d\n", NTHREADS * NOPS);
	CHECK(strstr(text, want) != NULL);
	/* 0 and 1 ms land in le=0.001: 2 of every 100 observations */
	snprintf(want, sizeof want, "lat_seconds_bucket{le=\"0.001\"} %d\n", NTHREADS * NOPS / 50);
	CHECK(strstr(text, want) != NULL);
	free(text);
	metrics_free(reg);
}

UNIT_MAIN(UNIT_TEST(exact_text),
	  UNIT_TEST(histogram_default_buckets),
	  UNIT_TEST(labels_escaped_and_bounded),
	  UNIT_TEST(registration),
	  UNIT_TEST(concurrent_updates))
