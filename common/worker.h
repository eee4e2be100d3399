/* worker.h -- the consumer's engine: worker threads that claim, run and
 * complete runs; the lease heartbeat; cycles (on ticks, or on a timer in
 * Redis-less and fallback mode).
 *
 * Threads of one worker:
 *   run threads (WORKER_CONCURRENCY)  claim a batch → run each → complete the batch
 *   heartbeat                         extends the leases of runs in hand;
 *                                     announces runs executing for
 *                                     WORKER_ANNOUNCE_AFTER_MS (Redis mode)
 *   cycle timer                       Redis-less mode, or Redis down for
 *                                     REDIS_FALLBACK_AFTER_MS: a cycle per interval
 * Each thread owns its queue handles (one per transport) and its HTTP
 * client.  Runs of jobs that use the database borrow a connection from the
 * worker's pool (DATABASE_POOL_SIZE) for the run; per-org slots and cycles
 * use the process's session connections (session.h).  Otherwise nothing is shared
 * but the in-hand table (for the heartbeat) and atomic counters.
 *
 * Batches adapt: a thread claims one run at first and doubles its batch
 * while runs are quick (no-ops flow in batches of up to WORKER_MAX_BATCH,
 * one round trip each way per batch), halving it when runs are slow, so a
 * slow run never holds queued runs hostage behind it.
 *
 * Shutdown: worker_stop() stops claiming; runs in hand finish; runs claimed
 * but not started are given back (deferred without counting an attempt).
 * worker_abort() additionally tells jobs to give up (the deadline passed);
 * a run that ends unsuccessfully after that is handed back the same way
 * (deferred at once, no attempt counted): a deploy costs no attempt.
 */
#ifndef JOBRUNNER_COMMON_WORKER_H
#define JOBRUNNER_COMMON_WORKER_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct worker;

#define WORKER_MAX_BATCH 128
/* A run executing this long is announced (job_runs: running) by the
 * heartbeat thread; quicker runs go from queued straight to their end. */
#define WORKER_ANNOUNCE_AFTER_MS 100
#define WORKER_BLOCK_MS 1000

/* The counters of struct worker_counts (the worker keeps atomic copies). */
#define WORKER_COUNTS(X)                                                       \
	X(claimed) X(succeeded) X(retried) X(dead) X(deferred) X(fenced) X(cycles)  \
	X(reclaimed)                                                           \
	X(runs_failed_total)   /* retried + dead: for --drain-once's exit code */   \
	X(released)            /* claimed, not started, given back (head-of-line) */ \
	X(cancelled)                                                           \
	X(claim_failures)      /* drain: failed claims from Redis (runs it holds not drained) */

struct worker_counts {
#define X(f) uint64_t f;
	WORKER_COUNTS(X)
#undef X
};

/* Starts the threads.  drain: claim without blocking and let each thread
 * end once nothing is due (--drain-once); one cycle is run first.
 * 0, or -1 with a message in err.  *out is released by worker_join(). */
int worker_start(const struct config *cfg, int drain, struct worker **out, char *err, size_t errlen);
void worker_stop(struct worker *w);
void worker_abort(struct worker *w);
/* Waits for the threads up to timeout_ms (<0: forever).  Returns 0 when
 * all ended, -1 on timeout (threads are left running: the process is
 * about to exit).  counts (may be NULL) receives the totals. */
int worker_join(struct worker *w, int64_t timeout_ms, struct worker_counts *counts);
/* Live counters (for metrics and health). */
void worker_get_counts(const struct worker *w, struct worker_counts *out);
/* 1 while the worker believes Redis is reachable (or is in Redis-less mode). */
int worker_redis_ok(const struct worker *w);

#endif
