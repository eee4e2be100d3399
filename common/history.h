/* history.h -- the history writer of Redis mode: every run's state reaches
 * job_runs in PostgreSQL within a few seconds, in batches, off the hot path.
 *
 * It reads, as consumer group jr:history (RENTRY_HISTORY_GROUP):
 *   jr:runs    every enqueued run (-> a row with status queued)
 *   jr:events  every finished attempt, written by the completion script
 *              (-> succeeded / failed with run_at / dead / queued (deferred))
 * and upserts job_runs rows (transport 'redis') in one transaction per batch
 * (COPY into a stage, then INSERT ... ON CONFLICT DO UPDATE), then
 * acknowledges the entries.  A row only moves forward: an update is applied
 * when its state is not older than the stored one (the order is defined at
 * row_cmp() in history.c), so batches may arrive in any order and from any
 * number of writers.  While runs are finishing, a queued row waits up to a
 * second for its run's end, so that most runs cost one row write.
 *
 *   jr:events also carries a `running` event for a run that has executed
 *   for WORKER_ANNOUNCE_AFTER_MS (worker.h).
 *
 * Every consumer and producer runs a history writer: the consumer group shares
 * the work, a writer that died has its entries reclaimed after
 * HISTORY_RECLAIM_IDLE_MS, and the upsert is idempotent.
 */
#ifndef JOBRUNNER_COMMON_HISTORY_H
#define JOBRUNNER_COMMON_HISTORY_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>

struct config;
struct history;

#define HISTORY_RECLAIM_IDLE_MS 60000

struct history_counts {
	uint64_t rows;        /* rows written (upserts sent) */
	uint64_t entries;     /* stream entries acknowledged */
	uint64_t dropped;     /* rows PostgreSQL refused, and events that could not be
	                         decoded (logged by the thread) */
	uint64_t batches;
	uint64_t skipped;     /* rows not sent: older than what this writer stored */
	uint64_t carried;     /* queued rows held back for their run's end (a row may count twice) */
	uint64_t unrecorded;  /* JOB_HISTORY=failures: rows not written (queued, running,
	                         successes at the first attempt) */
};

/* Connects to Redis (cfg->redis_url) and prepares a PostgreSQL connection
 * (cfg->database_url, connected on first use).  consumer names this writer
 * in the jr:history group (one writer per name).  0, or -1 with a message
 * in err.  Free *out with history_close(). */
int history_open(const struct config *cfg, const char *consumer, struct history **out,
		 char *err, size_t errlen);
void history_close(struct history *h);

/* One batch: reads what is pending for this writer (after a failure), else
 * new entries (waiting up to block_ms for the first), writes them, acks.
 * *written receives the number of rows written.  0, or -1 with a message
 * in history_errstr() (Redis or PostgreSQL unreachable: the entries stay
 * pending and are written by a later step). */
int history_step(struct history *h, int64_t block_ms, size_t *written);

/* Gives h its store thread, as history_thread_start() does: a step then
 * hands the batch it read to that thread, which writes it to PostgreSQL
 * while the next step reads from Redis, and collects (acknowledges) the
 * batch handed over before; *written counts that batch.  0 or -1. */
int history_pipeline(struct history *h);
const char *history_errstr(const struct history *h);
void history_get_counts(const struct history *h, struct history_counts *out);

/* ---- the writer thread of a consumer ---- */
struct history_thread;

/* Starts a thread that runs history_step() until history_thread_stop(),
 * logging failures (rate-limited) and retrying with backoff.  0, or -1 with
 * a message in err. */
int history_thread_start(const struct config *cfg, const char *consumer,
			 struct history_thread **out, char *err, size_t errlen);
/* Stops the thread after writing what it already read (up to timeout_ms
 * more), joins it and frees it. */
void history_thread_stop(struct history_thread *t, int64_t timeout_ms);

/* Decodes one jr:events entry (its field array, as XREADGROUP returns it)
 * the way the writer does, and throws the rows away: for the fuzz target
 * (tests/fuzz/fuzz_events.c).  Returns the rows made; *bad counts what
 * could not be decoded.  Aborts if a row breaks what the upsert relies on
 * (a valid id, payload, org; bounded error). */
size_t history_decode_entry(const redisReply *fields, size_t *bad);

#endif
