/* enqueue.h -- the one enqueue path: `producer enqueue`, the HTTP API and
 * the cycle's fan-out all submit runs through an enqueuer.
 *
 * It validates runs (known job, sizes, payload is a JSON object), then
 * writes them to Redis when REDIS_URL is set and Redis answers, else to the
 * PostgreSQL queue: while Redis is unreachable nothing accepted is lost,
 * it just travels the other way.  A batch with an idempotency key always
 * goes to PostgreSQL (one key, one run: its unique index is the only
 * authority on keys), so it needs PostgreSQL up.  A Redis failure is remembered for a
 * short while (ENQ_REDIS_RETRY_MS) so that a dead Redis does not add a
 * connect timeout to every request.
 *
 * An enqueuer is used by one thread at a time.
 */
#ifndef JOBRUNNER_COMMON_ENQUEUE_H
#define JOBRUNNER_COMMON_ENQUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "queue.h"

#define ENQ_MAX_PAYLOAD_BYTES (256 * 1024)
#define ENQ_MAX_BATCH 10000
#define ENQ_REDIS_RETRY_MS 1000

struct enqueuer {
	const struct config *cfg;
	char name[128];              /* consumer/producer name used for queue handles */
	struct queue *redis;         /* NULL until opened, or in Redis-less mode */
	struct queue *pg;            /* NULL until needed */
	int64_t redis_retry_at_ms;   /* mono ms: do not try Redis before this */
	uint64_t redis_failovers;    /* batches that went to PostgreSQL because Redis was down */
};

void enqueuer_init(struct enqueuer *e, const struct config *cfg, const char *name);
void enqueuer_release(struct enqueuer *e);

/* Checks one run before it is queued: 0, or -1 with a message for the
 * client in err (unknown job → *not_found = 1). */
int enqueue_validate(const struct run *r, int *not_found, char *err, size_t errlen);

/* Validates and queues n runs (ids are written back; see queue.h for
 * idempotency keys).  *backend (may be NULL) is "redis" or "postgres".
 * 0, QUEUE_EINVAL (err says which run and why), QUEUE_EDOWN when no
 * transport took them, or QUEUE_EUNKNOWN when Redis failed after the runs
 * were sent (they may be queued: they are not written to PostgreSQL too,
 * which could run them twice). */
int enqueuer_submit(struct enqueuer *e, struct run *runs, size_t n, const char **backend,
		    char *err, size_t errlen);

/* The enqueuer's queue handles, opened on first use: NULL when the
 * transport is not configured (Redis-less mode) or unreachable.  Owned by e. */
struct queue *enqueuer_redis(struct enqueuer *e);
struct queue *enqueuer_pg(struct enqueuer *e);
/* Drops a handle after a connection failure (it is reopened on next use). */
void enqueuer_drop(struct enqueuer *e, struct queue *q);

/* Queue counts for metrics and health: the stream's (Redis mode) plus the
 * PostgreSQL queue's (runs accepted there while Redis was down, or all of
 * them without Redis); dead runs from PostgreSQL, the system of record.
 * *backend is "redis" when Redis answered, else "postgres".  0, or -1 when
 * PostgreSQL did not answer.  Release out with queue_stats_free(). */
int enqueuer_stats(struct enqueuer *e, struct queue_stats *out, const char **backend);

/* A cycle_enqueue_fn (cycle.h) over an enqueuer passed as arg. */
int enqueuer_cycle_fn(void *arg, struct run *runs, size_t n, char *err, size_t errlen);

#endif
