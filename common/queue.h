/* queue.h -- the transport interface: one run lifecycle, two transports.
 *
 *   queue_pg.c     PostgreSQL: job_runs with FOR UPDATE SKIP LOCKED,
 *                  LISTEN/NOTIFY wake-ups (Redis-less mode, and the place
 *                  runs go while Redis is down).
 *   queue_redis.c  Redis Streams: XADD, XREADGROUP, XAUTOCLAIM, a delayed
 *                  set, fenced completion, safe trimming.
 *
 * Everything above this interface (worker, cycle, jobs, API) is written
 * once.  A struct queue is one connection's worth of state and is used by
 * one thread at a time; each worker thread opens its own.
 *
 * Error convention: 0 on success, a negative QUEUE_E* code on failure with
 * a message in q->errstr.  QUEUE_EDOWN means the backend is unreachable
 * and nothing was sent (the caller may fall back to the other transport);
 * QUEUE_EUNKNOWN means it failed after the request was sent, so the outcome
 * is unknown: falling back then could queue a run twice.
 */
#ifndef JOBRUNNER_COMMON_QUEUE_H
#define JOBRUNNER_COMMON_QUEUE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "run.h"

struct config;

enum {
	QUEUE_OK = 0,
	QUEUE_EDOWN = -1,     /* backend unreachable; connection dropped */
	QUEUE_EINVAL = -2,    /* bad input (unknown job, size limits) */
	QUEUE_EINTERNAL = -3, /* backend answered with an error */
	QUEUE_EUNKNOWN = -4,  /* the connection failed after the request was sent:
				 the backend may or may not have applied it */
};

struct queue_consumer_stat {
	char name[128];
	int64_t pending;
	int64_t idle_ms;
};

struct queue_stats {
	int64_t queued;       /* waiting and due (or not yet delivered) */
	int64_t running;      /* claimed, not completed */
	int64_t delayed;      /* waiting for run_at (retries, deferrals) */
	int64_t dead;
	struct queue_consumer_stat *consumers;   /* owned: free() */
	size_t nconsumers;
};

struct queue;

struct queue_ops {
	const char *backend;  /* "redis" or "postgres" */

	/* Adds n runs.  Runs without an id get one (written back into runs[i].id).
	 * A run whose idempotency_key was already used for the same job gets
	 * the first run's id written back instead, and is not added again. */
	int (*enqueue)(struct queue *q, struct run *runs, size_t n);

	/* Claims up to max due runs (and, in Redis mode, ticks), waiting up to
	 * block_ms for the first.  Includes runs whose lease expired (reclaimed
	 * from silent consumers).  out[0..*n) are owned by the caller: release
	 * each with run_clear().  A malformed entry is moved to the dead list by
	 * the transport itself and never returned. */
	int (*claim)(struct queue *q, struct run *out, size_t max, int64_t block_ms, size_t *n);

	/* Records the outcome of n claimed runs (see run_decide()).  fenced[i]
	 * is set to 1 when run i's result was discarded because its lease had
	 * passed to another consumer.  A tick is completed with RUN_OK. */
	int (*complete)(struct queue *q, struct run *runs, const struct run_result *res,
			size_t n, int *fenced);

	/* Gives back n claimed runs that have not started, without counting an
	 * attempt, so that any free thread of any consumer can take them at
	 * once (a batch's runs waiting behind a long one).  Fenced like
	 * complete(): released[i] (may be NULL) is set to 1 for each run given
	 * back, 0 for one whose lease had already passed on. */
	int (*release)(struct queue *q, const struct run *runs, size_t n, int *released);

	/* Extends the lease of n claimed, still running runs (heartbeat). */
	int (*extend)(struct queue *q, const struct run *runs, size_t n);

	/* Records that claimed run r is running (job_runs shows it so), for runs
	 * that take a while: the worker calls it once a run has run for
	 * WORKER_ANNOUNCE_AFTER_MS; quicker runs go from queued to their end.
	 * NULL where claiming already records it (PostgreSQL). */
	int (*announce)(struct queue *q, const struct run *r);

	/* Cancel requests: flags[i] = 1 when run i (claimed from this
	 * transport) was asked to cancel (POST /runs/{id}/cancel).  The worker
	 * asks before it starts a batch and, from the heartbeat, while runs
	 * are in hand. */
	int (*cancelled)(struct queue *q, const struct run *runs, size_t n, int *flags);

	int (*stats)(struct queue *q, struct queue_stats *out);

	/* Closes connections and frees q. */
	void (*destroy)(struct queue *q);
};

struct queue {
	const struct queue_ops *ops;
	const struct config *cfg;
	char consumer[128];   /* this consumer's name */
	atomic_int *stop;     /* may be set by the owner: once *stop, claim() takes
				 nothing more (it returns at once, or after a
				 blocking read that was already under way) */
	int err;
	char errstr[256];
};

/* Constructors: 0 or a QUEUE_E* code with a message in err.  *out is freed
 * with (*out)->ops->destroy(*out). */
int queue_pg_open(const struct config *cfg, const char *consumer, struct queue **out,
		  char *err, size_t errlen);
int queue_redis_open(const struct config *cfg, const char *consumer, struct queue **out,
		     char *err, size_t errlen);

void queue_stats_free(struct queue_stats *s);
/* Client-side timeout of every statement of a PostgreSQL queue handle
 * (db.h); no effect on other handles.  For health checks and metrics. */
void queue_pg_set_timeout(struct queue *q, int64_t ms);

/* ---- operator transitions (queue_ctl.c), for both transports ---- */

struct db;

enum queue_cancel_result {
	QUEUE_CANCELLED = 0,   /* it was queued, delayed or waiting to retry: it never starts */
	QUEUE_STOPPING,        /* it is running: its consumer stops it, then records cancelled */
	QUEUE_FINISHED,        /* it had finished (succeeded, dead, cancelled): nothing done */
	QUEUE_NOT_FOUND,
};

/* The cancel transition of run id (the lifecycle in run.h): in job_runs
 * (under the row's lock, so a PostgreSQL claim either finds it cancelled
 * or has it running) and, with redis (NULL in Redis-less mode), as a cancel
 * request in Redis that consumers check before and while they run a run.
 * *status receives the status the run had ("queued", "running", ...;
 * "delayed" for a queued run due later) and *job its job.  0 with *res,
 * or a QUEUE_E* code with err. */
int queue_cancel(struct db *db, struct queue *redis, const char *id, enum queue_cancel_result *res,
		 char *status, size_t statuslen, char *job, size_t joblen, char *err, size_t errlen);

#define QUEUE_RETRY_MAX 1000   /* runs per bulk retry */

/* Which dead runs queue_retry_dead() takes: id (one run), or the newest
 * dead runs matching job, org_id, finished at or after since_ms (each
 * NULL / 0 = any), at most limit (1..QUEUE_RETRY_MAX). */
struct queue_dead_filter {
	const char *id;
	const char *job;
	const char *org_id;
	int64_t since_ms;
	int limit;
};

/* The dead → queued transition (POST /dead/{id}/retry, POST /dead/retry,
 * `producer runs retry`): each matching dead row becomes queued again under
 * its own id with fresh attempts (source 'retry'), then goes on the Redis
 * stream (redis given) or is claimable from job_runs (Redis-less mode, or
 * Redis failing before anything was sent: the PostgreSQL queue carries
 * it).  *ids (may be NULL) receives an array of the runs (id and job,
 * free() it); *n how many.  0, or a QUEUE_E* code with err.  With Redis it
 * is one step: the rows change in a transaction that commits only once the
 * runs are on the stream (or on the PostgreSQL queue when nothing reached
 * Redis); QUEUE_EUNKNOWN when Redis's answer was lost even on a resend
 * over a fresh connection: the transaction is rolled back and the runs
 * stay dead (each carries an idempotency key per death, so retrying again
 * never queues one twice). */
struct queue_retried {
	char id[RUN_ID_LEN + 1];
	char job[RUN_MAX_JOB_LEN + 1];
};
int queue_retry_dead(struct db *db, struct queue *redis, const struct queue_dead_filter *f,
		     struct queue_retried **ids, size_t *n, char *err, size_t errlen);

#endif
