/* metrics.h -- counters, gauges and histograms in Prometheus text format
 * (exposition format 0.0.4).
 *
 * A registry holds metric families; a family has a name, help text, a
 * type and 0-2 label keys; each distinct tuple of label values is a series.
 *
 *   struct metrics *reg = metrics_default();
 *   struct metric *enq = metrics_counter(reg, "jobrunner_runs_enqueued_total",
 *                                        "Runs enqueued.", "job", NULL);
 *   struct metric_series *s = metrics_with(enq, "noop", NULL);  // once
 *   metrics_inc(s);                                              // hot path
 *
 *   struct metric *dur = metrics_histogram(reg, "jobrunner_run_duration_seconds",
 *                                          "Run duration.", "job", NULL, NULL, 0);
 *   metrics_observe_ms(metrics_with(dur, job, NULL), elapsed_ms);
 *
 *   struct strbuf sb = STRBUF_INIT;
 *   metrics_render(reg, &sb);       // -> body of GET /metrics
 *
 * Threads: every function is thread-safe.  Updating a series is one or two
 * relaxed atomic operations, no lock; metrics_with() takes a lock only the
 * first time it sees a tuple of label values.  Cache the series pointer on
 * hot paths.
 *
 * Bounded memory: a family holds at most METRICS_MAX_SERIES distinct label
 * tuples; later tuples all share one series whose label values are
 * "_overflow".  Label values are cut to METRICS_MAX_LABEL_LEN bytes.
 * A registry holds at most METRICS_MAX_FAMILIES families.
 *
 * Pointers: families and series live until the registry is freed
 * (metrics_free); the default registry lives for the whole process.
 * Every update function accepts NULL (does nothing), so a failed
 * registration costs a missing metric, not a crash.
 */
#ifndef JOBRUNNER_COMMON_METRICS_H
#define JOBRUNNER_COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define METRICS_MAX_FAMILIES 128
#define METRICS_MAX_SERIES 64
#define METRICS_MAX_LABEL_LEN 128
#define METRICS_MAX_BUCKETS 24
/* Content-Type of metrics_render()'s output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics;                 /* registry */
struct metric;                  /* family */
struct metric_series;           /* one tuple of label values */

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

/* ---- registries ---- */

/* A new empty registry (tests, or a second independent exposition).
 * Free with metrics_free(), after every user of its pointers is done. */
struct metrics *metrics_new(void);
void metrics_free(struct metrics *reg);

/* The process-wide registry, created on first use and never freed.
 * The binaries register their metrics here and serve it on /metrics. */
struct metrics *metrics_default(void);

/* ---- families ----
 * name: [a-zA-Z_:][a-zA-Z0-9_:]*; label keys: [a-zA-Z_][a-zA-Z0-9_]*, not
 * "le", distinct; key2 only with key1.  help is copied (any text; escaped on
 * output).  Registering a name again with the same type and keys returns the
 * existing family (so modules can register idempotently); with a different
 * type or keys, or invalid names, or a full registry, returns NULL.
 * Families are written in registration order. */

struct metric *metrics_counter(struct metrics *reg, const char *name, const char *help,
			       const char *key1, const char *key2);
struct metric *metrics_gauge(struct metrics *reg, const char *name, const char *help,
			     const char *key1, const char *key2);
/* bounds_s: upper bounds in seconds, strictly increasing, at most
 * METRICS_MAX_BUCKETS (+Inf is implicit); NULL: METRICS_DEFAULT_BUCKETS_S.
 * Bounds are kept to the microsecond. */
struct metric *metrics_histogram(struct metrics *reg, const char *name, const char *help,
				 const char *key1, const char *key2,
				 const double *bounds_s, size_t nbounds);
/* 0.001 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60 */
extern const double METRICS_DEFAULT_BUCKETS_S[14];

/* A family whose values are computed at scrape time: during metrics_render
 * fn(ctx, emit) is called and reports each series with metrics_emit().
 * type is METRIC_COUNTER or METRIC_GAUGE.  fn runs on the scraping thread,
 * possibly on several at once, so it must be thread-safe; it must not
 * register metrics or render.  ctx must outlive the registry. */
struct metrics_emitter;
typedef void metrics_collect_fn(void *ctx, struct metrics_emitter *emit);
struct metric *metrics_callback(struct metrics *reg, enum metric_type type,
				const char *name, const char *help,
				const char *key1, const char *key2,
				metrics_collect_fn *fn, void *ctx);
/* Reports one series from inside a metrics_collect_fn: label values for the
 * family's keys (NULL where there is no key).  Repeated tuples are written
 * as given; the callback should not repeat them. */
void metrics_emit(struct metrics_emitter *emit, double value, const char *v1, const char *v2);

/* ---- series ---- */

/* The series for these label values (values for the family's keys in
 * order; pass NULL where the family has no key).  Created on first use.
 * Returns NULL only when fam is NULL or a callback family. */
struct metric_series *metrics_with(struct metric *fam, const char *v1, const char *v2);

/* Counters (and gauges: adds). */
void metrics_inc(struct metric_series *s);
void metrics_add(struct metric_series *s, uint64_t n);
/* Gauges. */
void metrics_set(struct metric_series *s, double v);
void metrics_gauge_add(struct metric_series *s, double delta);
/* Histograms: one observation of ms milliseconds (negative counts as 0). */
void metrics_observe_ms(struct metric_series *s, double ms);

/* Current value of a counter or gauge series (tests, JSON endpoints). */
double metrics_value(const struct metric_series *s);
/* Count of observations of a histogram series. */
uint64_t metrics_count(const struct metric_series *s);

/* ---- exposition ---- */

/* Appends the whole registry to out in text format 0.0.4: for each family
 * "# HELP" and "# TYPE" lines and then its series, histograms as
 * name_bucket{...,le="…"} (cumulative), name_sum (seconds) and name_count.
 * A family without labels always shows its one series (0 before any
 * update); a labelled family shows the series created so far. */
void metrics_render(struct metrics *reg, struct strbuf *out);

#endif
