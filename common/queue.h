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

	int (*stats)(struct queue *q, struct queue_stats *out);

	/* Closes connections and frees q. */
	void (*destroy)(struct queue *q);
};

struct queue {
	const struct queue_ops *ops;
	const struct config *cfg;
	char consumer[128];   /* this consumer's name */
	volatile int *stop;   /* may be set by the owner: once *stop, claim() takes
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

#endif
