/* run.h -- the run record and its state machine.
 *
 * One run lifecycle for both transports (Redis Streams and PostgreSQL):
 *
 *                 enqueue                claim                     complete(ok)
 *   (nothing) ───────────────▶ queued ───────────▶ running ─┬───────────────────▶ succeeded
 *                 queue->enqueue  ▲  │ queue->claim          │ complete(retry), attempt < max
 *                                 │  │                       ├───────────────────▶ failed ──┐
 *                                 │  │                       │ complete(fail), or           │
 *                                 │  │                       │ attempt == max               │
 *                                 │  │                       ├───────────────────▶ dead     │
 *                                 │  │                       │ cancel: the job is told to   │
 *                                 │  │                       │ stop; complete() records it  │
 *                                 │  │                       └───────────────────▶ cancelled│
 *                                 │  │ cancel (queued, delayed, or failed: never starts)    │
 *                                 │  └──────────────────────────────────────────▶ cancelled│
 *                                 └──────────── due again (run_at) ────────────────────────┘
 *   dead ── queue_retry_dead(): one run, or the dead runs a filter matches ──▶ queued
 *           (attempts reset, source 'retry')
 *   running ── lease expired ──▶ running (another consumer, fence + 1)
 *
 * The transitions operators start (cancel, dead → queued) are in
 * queue_ctl.c, for both transports; the others belong to the transports.
 * "delayed" is not a stored state: a queued run whose run_at is in the
 * future (enqueued with runAt/delayMs).  A paused job's runs stay queued:
 * claimed by no one (PostgreSQL) or handed back without an attempt (Redis).
 *
 * run_decide() performs the complete() transition for both transports: it is
 * the only place that knows when a run retries and when it dies.
 *
 * Fencing: a claim hands out a fence token that grows with each claim of
 * the same run (PostgreSQL: the attempts column; Redis: the entry's delivery
 * count, checked together with the owning consumer).  A result is recorded
 * only if the fence still matches, so a consumer that lost its lease (paused,
 * partitioned) cannot overwrite the newer attempt.
 */
#ifndef JOBRUNNER_COMMON_RUN_H
#define JOBRUNNER_COMMON_RUN_H

#include <stddef.h>
#include <stdint.h>

enum run_status { RUN_QUEUED = 0, RUN_RUNNING, RUN_SUCCEEDED, RUN_FAILED, RUN_DEAD, RUN_CANCELLED };
enum run_source { RUN_SRC_ADHOC = 0, RUN_SRC_CYCLE, RUN_SRC_FANOUT, RUN_SRC_RETRY };

#define RUN_ID_LEN 36
#define RUN_MAX_JOB_LEN 64
#define RUN_MAX_ORG_LEN 128
#define RUN_MAX_IDEM_LEN 200
#define RUN_MAX_ERROR_LEN 500

struct run {
	char id[RUN_ID_LEN + 1];   /* "" until enqueue assigns one */
	int is_tick;               /* a tick: run a cycle, no job */
	char *job;                 /* owned */
	char *org_id;              /* owned, may be NULL */
	char *payload;             /* owned JSON text, NULL means {} */
	char *idempotency_key;     /* owned, may be NULL */
	enum run_source source;
	int attempt;               /* attempts so far, counting the current claim */
	int max_attempts;
	int64_t enqueued_at_ms;
	int64_t run_at_ms;         /* not before; 0 = now */
	int64_t started_at_ms;     /* wall ms this attempt started (set by the worker
				      when it begins the run, not at claim) */
	int reclaimed;             /* set by claim: taken over from a consumer that
				      went silent (its lease expired, or it was this
				      consumer's previous incarnation) */
	/* transport handle, opaque above the queue */
	char handle[48];           /* Redis stream entry id */
	int64_t fence;             /* see the fencing note above */
};

enum run_outcome {
	RUN_OK = 0,      /* succeeded */
	RUN_RETRY,       /* transient failure: retry after backoff (or retry_after_ms) */
	RUN_FAIL,        /* permanent failure: dead now, attempts left or not */
	RUN_DEFER,       /* not run at all (org limit, throttle): back in the queue
			    after retry_after_ms, the attempt is not counted */
	RUN_CANCEL,      /* cancelled by an operator (before or while it ran):
			    final, never retried */
};

struct run_result {
	enum run_outcome outcome;
	int64_t retry_after_ms;    /* RETRY: at least this long; DEFER: this long */
	int64_t duration_ms;
	int64_t finished_at_ms;    /* wall ms the run ended; 0: when complete() records it */
	char error[RUN_MAX_ERROR_LEN + 1];
};

struct backoff {
	int64_t base_ms;
	int64_t max_ms;
};

/* The one definition of a valid run id, for every way in (a stream entry's
 * id field, the API's path parameters): 1 to RUN_ID_LEN characters of
 * [A-Za-z0-9._:-].  len is the length of s (s need not be terminated). */
int run_id_valid(const char *s, size_t len);

/* Frees the owned strings of r and zeroes it. */
void run_clear(struct run *r);
/* Deep copy: dst receives its own strings (release with run_clear). */
void run_copy(struct run *dst, const struct run *src);

/* The complete() transition.  Returns the next status: RUN_SUCCEEDED;
 * RUN_FAILED for a retry (attempts left: due again at *next_run_at_ms);
 * RUN_QUEUED for a deferral (due again at *next_run_at_ms); RUN_DEAD;
 * RUN_CANCELLED for a cancellation.
 * *attempt_out is the attempts value to record (a deferral gives the
 * attempt back). */
enum run_status run_decide(const struct run *r, const struct run_result *res,
			   const struct backoff *b, int64_t now_ms,
			   int64_t *next_run_at_ms, int *attempt_out);

/* Backoff before attempt+1 after `attempt` failures: base * 2^(attempt-1),
 * capped at max, with "equal jitter" (a random point in [d/2, d]). */
int64_t run_backoff_ms(int attempt, const struct backoff *b);

const char *run_status_name(enum run_status s);
int run_status_parse(const char *s, enum run_status *out);
const char *run_source_name(enum run_source s);
int run_source_parse(const char *s, enum run_source *out);

#endif
