/* jrmetrics.h -- jobrunner's own metrics, on the default registry
 * (metrics.h).  Both binaries call jrm_init() once at start-up; the hot
 * paths then update cached series (one atomic add each).
 *
 * Families (Prometheus names are public interface, see docs/operations.md):
 *   jobrunner_runs_enqueued_total{job}         runs accepted by enqueue
 *   jobrunner_runs_started_total{job}          runs started by a worker
 *   jobrunner_runs_succeeded_total{job}
 *   jobrunner_runs_failed_total{job}           failed attempts that will retry
 *   jobrunner_runs_dead_total{job}
 *   jobrunner_runs_deferred_total{job}         put back by per-org limits
 *   jobrunner_org_deferrals_total{reason}      rate_limit | concurrency | graph_throttle
 *                                              (orgstat.c; never one series per org)
 *   jobrunner_runs_fenced_total{job}           results discarded (lease lost)
 *   jobrunner_runs_cancelled_total{job}        cancelled: by the producer before they
 *                                              started, or stopped by the consumer
 *   jobrunner_job_paused{job}                  1 while paused (control.c)
 *   jobrunner_run_duration_seconds{job}        histogram
 *   jobrunner_enqueue_to_start_seconds{job}    histogram
 *   jobrunner_cycles_total, jobrunner_cycle_duration_seconds (histogram),
 *   jobrunner_last_cycle_timestamp_seconds
 *   jobrunner_reclaims_total                   runs taken over from silent consumers
 *   jobrunner_reconnects_total{backend}        redis | postgres (every connection
 *                                              of the process, through rconn and db hooks)
 *   jobrunner_enqueue_fallbacks_total          batches sent to PostgreSQL because Redis was down
 *   jobrunner_queue_depth{state}               queued | running | delayed | dead (scrape time)
 */
#ifndef JOBRUNNER_COMMON_JRMETRICS_H
#define JOBRUNNER_COMMON_JRMETRICS_H

#include <stdint.h>

struct metrics_emitter;

void jrm_init(void);

void jrm_enqueued(const char *job, uint64_t n);
void jrm_started(const char *job, int64_t enqueue_to_start_ms);
/* outcome: 0 succeeded, 1 failed (will retry), 2 dead, 3 deferred, 4 fenced,
 * 5 cancelled.  duration_ms < 0: not observed in the duration histogram. */
enum jrm_outcome { JRM_SUCCEEDED, JRM_FAILED, JRM_DEAD, JRM_DEFERRED, JRM_FENCED, JRM_CANCELLED };
void jrm_finished(const char *job, enum jrm_outcome outcome, int64_t duration_ms);
void jrm_cycle(int64_t duration_ms, int64_t finished_at_ms);
void jrm_reclaims(uint64_t n);
void jrm_enqueue_fallback(void);
/* History writer (Redis mode): rows written to job_runs, rows not sent
 * (older than what the writer stored), rows PostgreSQL refused. */
void jrm_history(uint64_t written, uint64_t skipped, uint64_t dropped);

struct queue_stats;
/* Emits the four queue-depth values of s (for a queue-depth source). */
void jrm_emit_depth(struct metrics_emitter *emit, const struct queue_stats *s);

/* Registers the queue-depth gauge, filled at scrape time by fn(ctx, emit),
 * which emits one value per state ("queued", "running", "delayed", "dead")
 * with metrics_emit(emit, value, state, NULL). */
void jrm_queue_depth_source(void (*fn)(void *ctx, struct metrics_emitter *emit), void *ctx);

#endif
