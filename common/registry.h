/* registry.h -- the job table.
 *
 * A job is a name, a handler, and the settings that make it due.  Adding a
 * job is one new file in common/jobs/ plus one line in registry.c and here;
 * CONTRIBUTING.md ("Adding a job") lists the settings, documents and test
 * that go with it.
 *
 * The handler runs one run (ad hoc, fanned out, or inline in a cycle).  It
 * reports through struct run_result: RUN_OK, RUN_RETRY (transient: retried
 * with backoff, or after retry_after_ms), RUN_FAIL (permanent: dead), or
 * RUN_DEFER (not run: put back without counting an attempt).  Handlers do
 * not log the outcome; the worker does, once, with the run's context.
 *
 * A job with a plan() function is fanned out by the cycle: plan() lists the
 * org ids to enqueue one run each for (source "fanout").  A job without
 * plan() runs inline in the cycle, under the cycle lock.
 */
#ifndef JOBRUNNER_COMMON_REGISTRY_H
#define JOBRUNNER_COMMON_REGISTRY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "run.h"

struct config;
struct db;
struct http_client;

/* What a handler may use; all of it belongs to the calling worker thread. */
struct job_ctx {
	const struct config *cfg;
	struct db *db;              /* a PostgreSQL connection borrowed for the run (NULL if no_db) */
	const struct run *run;      /* run->org_id may be NULL */
	const cJSON *payload;       /* never NULL (an empty object at least) */
	struct http_client *http;   /* this thread's HTTP client: get it with job_http(ctx) */
	atomic_int *stop;           /* set when shutting down: check job_stopping(ctx) */
	/* set by the handler: a short summary for the completion log, e.g. "3 reminders" */
	char summary[128];
};

/* 1 once the consumer is shutting down: a long job finishes early. */
static inline int job_stopping(const struct job_ctx *ctx)
{
	return ctx->stop && atomic_load_explicit(ctx->stop, memory_order_acquire);
}

typedef void (*job_fn)(struct job_ctx *ctx, struct run_result *out);
/* Lists org ids for fan-out into *orgs (array of owned strings; free each
 * and the array).  0 or -1 with errstr. */
typedef int (*job_plan_fn)(const struct config *cfg, struct db *db, char ***orgs, size_t *n,
			   char *errstr, size_t errlen);

struct job_def {
	const char *name;
	job_fn run;
	job_plan_fn plan;                                   /* NULL: runs inline in the cycle */
	int (*enabled)(const struct config *cfg);           /* NULL: always; see registry_enabled() */
	int64_t (*interval_ms)(const struct config *cfg);   /* NULL: not periodic (ad hoc only) */
	int org_throttled;   /* 1: the org's runs wait out its org_throttle window (orglimit.h) */
	int no_db;           /* 1: never uses ctx->db (NULL then): borrows no pool connection */
};

/* The calling thread's HTTP client (http.h), made on first use and kept in
 * ctx->http for the thread's next runs: the job that calls an HTTP service
 * uses it (directly, or under an API's format as graph.h does).  The
 * worker frees it when the thread ends. */
struct http_client *job_http(struct job_ctx *ctx);

/* Whether cycles start job (its <JOB>_ENABLED variable; 1 without one).
 * The one place that reads it.  <JOB>_ENABLED=false turns the schedule
 * off, not the job: ad-hoc runs (API, CLI) of it are still accepted and
 * run, which is how an operator runs a job by hand while its schedule is
 * off (docs/jobs.md). */
int registry_enabled(const struct job_def *job, const struct config *cfg);

const struct job_def *registry_find(const char *name);
/* The whole table (n entries). */
const struct job_def *registry_all(size_t *n);

/* The job files' definitions (one per file in common/jobs/). */
extern const struct job_def job_noop;
extern const struct job_def job_no_reply_scan;
extern const struct job_def job_meta_spend;
extern const struct job_def job_meta_token_refresh;

#endif
