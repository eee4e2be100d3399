/* cycle.h -- one cycle: under the advisory lock, find the jobs that are
 * due, run them inline or fan them out, record state, release the lock.
 *
 * Due-ness is read from job_runner_state with the database's clock, so a
 * duplicate or lost tick does no harm: a cycle that finds nothing due does
 * nothing, and the next tick catches up.  Jobs without a plan() run inline
 * under the lock (the seed's semantics: never twice at once, also against
 * the legacy monolith); jobs with a plan() are fanned out as one run per
 * org through env->enqueue (whichever transport is up).
 */
#ifndef JOBRUNNER_COMMON_CYCLE_H
#define JOBRUNNER_COMMON_CYCLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct db;
struct http_client;
struct run;

/* Enqueues n fan-out runs: 0 or -1 with a message in err. */
typedef int (*cycle_enqueue_fn)(void *arg, struct run *runs, size_t n, char *err, size_t errlen);

struct cycle_env {
	const struct config *cfg;
	struct db *db;               /* the lock is taken on this session */
	const char *holder;          /* consumer name, shown in job_runner_lock */
	cycle_enqueue_fn enqueue;
	void *enqueue_arg;
	struct http_client **http;   /* the calling thread's HTTP client slot (registry.h job_http()) */
	atomic_int *stop;
};

struct cycle_report {
	int ran;                     /* 0: another session held the lock */
	int64_t duration_ms;
	int jobs_run;
	int jobs_failed;
	int runs_enqueued;
	int64_t pruned;
	char summary[512];           /* e.g. "no_reply_scan=succeeded(3 reminders) meta_spend=fanout(4)" */
};

/* Runs one cycle.  0 (see out->ran), or -1 when PostgreSQL failed (the
 * message is in env->db->errstr); the lock is released on every path. */
int cycle_run(struct cycle_env *env, struct cycle_report *out);

#endif
