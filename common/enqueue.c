/* enqueue.c -- see enqueue.h. */
#include "enqueue.h"

#include <stdio.h>
#include <string.h>

#include "config.h"
#include "jrmetrics.h"
#include "jsoncheck.h"
#include "log.h"
#include "registry.h"
#include "util.h"

void enqueuer_init(struct enqueuer *e, const struct config *cfg, const char *name)
{
	memset(e, 0, sizeof *e);
	e->cfg = cfg;
	snprintf(e->name, sizeof e->name, "%s", name ? name : "producer");
}

void enqueuer_release(struct enqueuer *e)
{
	if (e->redis)
		e->redis->ops->destroy(e->redis);
	if (e->pg)
		e->pg->ops->destroy(e->pg);
	e->redis = e->pg = NULL;
}

int enqueue_validate(const struct run *r, int *not_found, char *err, size_t errlen)
{
	*not_found = 0;
	if (!r->job || !registry_find(r->job)) {
		*not_found = 1;
		snprintf(err, errlen, "unknown job '%.64s'", r->job ? r->job : "");
		return -1;
	}
	if (r->org_id && !text_valid(r->org_id, strlen(r->org_id), RUN_MAX_ORG_LEN)) {
		snprintf(err, errlen, "orgId must be 1 to %d bytes of text without control characters",
			 RUN_MAX_ORG_LEN);
		return -1;
	}
	if (r->idempotency_key &&
	    !text_valid(r->idempotency_key, strlen(r->idempotency_key), RUN_MAX_IDEM_LEN)) {
		snprintf(err, errlen,
			 "idempotencyKey must be 1 to %d bytes of text without control characters",
			 RUN_MAX_IDEM_LEN);
		return -1;
	}
	if (r->payload) {
		size_t len = strlen(r->payload);
		if (len > ENQ_MAX_PAYLOAD_BYTES) {
			snprintf(err, errlen, "payload is larger than %d bytes", ENQ_MAX_PAYLOAD_BYTES);
			return -1;
		}
		char why[160];
		if (json_check(r->payload, len, JSON_MAX_DEPTH, JSON_CHECK_OBJECT, why, sizeof why)) {
			snprintf(err, errlen, "payload must be one JSON object: %s", why);
			return -1;
		}
	}
	return 0;
}

static int try_open(struct enqueuer *e, int redis)
{
	char err[256];
	struct queue **slot = redis ? &e->redis : &e->pg;
	if (*slot)
		return 0;
	int rc = redis ? queue_redis_open(e->cfg, e->name, slot, err, sizeof err)
		       : queue_pg_open(e->cfg, e->name, slot, err, sizeof err);
	return rc;
}

int enqueuer_submit(struct enqueuer *e, struct run *runs, size_t n, const char **backend,
		    char *err, size_t errlen)
{
	if (n > ENQ_MAX_BATCH) {
		snprintf(err, errlen, "at most %d runs per request", ENQ_MAX_BATCH);
		return QUEUE_EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		int nf;
		char why[200];
		if (enqueue_validate(&runs[i], &nf, why, sizeof why)) {
			if (n > 1)
				snprintf(err, errlen, "run %zu: %s", i, why);
			else
				snprintf(err, errlen, "%s", why);
			return QUEUE_EINVAL;
		}
	}
	/* One key, one run: a batch that carries an idempotency key goes to
	 * PostgreSQL, whose unique index (job, idempotency_key) is the one
	 * authority on keys whatever Redis is doing.  Redis would need a second
	 * authority (its own key), and a request stuck in a stopped Redis could
	 * still be applied after the retry had gone elsewhere. */
	int keyed = 0;
	for (size_t i = 0; i < n && !keyed; i++)
		keyed = runs[i].idempotency_key != NULL;
	if (errlen)
		err[0] = '\0';
	if (!keyed && e->cfg->redis_url && mono_ms() >= e->redis_retry_at_ms) {
		if (try_open(e, 1) == 0) {
			int rc = e->redis->ops->enqueue(e->redis, runs, n);
			if (rc == QUEUE_OK) {
				if (backend)
					*backend = "redis";
				jrm_enqueued(runs[0].job, n);
				return 0;
			}
			snprintf(err, errlen, "%s", e->redis->errstr);
			if (rc == QUEUE_EUNKNOWN) {
				/* Redis may hold the runs: falling back would queue them
				 * twice.  Say so; the client retries (with an
				 * idempotency key to be safe). */
				e->redis->ops->destroy(e->redis);
				e->redis = NULL;
				e->redis_retry_at_ms = mono_ms() + ENQ_REDIS_RETRY_MS;
				snprintf(err, errlen, "Redis failed while taking the runs: they may or may not "
					 "be queued (an idempotency key makes a retry safe)");
				return rc;
			}
			if (rc != QUEUE_EDOWN)
				return rc;
			/* a dead connection is replaced, never reused */
			e->redis->ops->destroy(e->redis);
			e->redis = NULL;
		}
		e->redis_retry_at_ms = mono_ms() + ENQ_REDIS_RETRY_MS;
	}
	if (e->cfg->redis_url && !keyed) {
		e->redis_failovers++;
		jrm_enqueue_fallback();
		LOGF(LOG_DEBUG, "enqueue_fallback", "runs enqueued on PostgreSQL: Redis unavailable",
		     LF_S("error", errlen && *err ? err : "Redis is retried a second after a failure"), LF_I("runs", n));
	}
	int rc = try_open(e, 0);
	if (rc == 0) {
		rc = e->pg->ops->enqueue(e->pg, runs, n);
		if (rc != QUEUE_OK) {
			snprintf(err, errlen, "%s", e->pg->errstr);
			if (rc == QUEUE_EDOWN) {
				e->pg->ops->destroy(e->pg);
				e->pg = NULL;
			}
		}
	} else {
		if (keyed)
			snprintf(err, errlen, "runs with an idempotency key need PostgreSQL, which is down");
		else
			snprintf(err, errlen, "no queue is reachable (PostgreSQL down%s)",
				 e->cfg->redis_url ? ", Redis down" : "");
	}
	if (rc == 0) {
		if (backend)
			*backend = "postgres";
		jrm_enqueued(runs[0].job, n);
	}
	return rc;
}

struct queue *enqueuer_redis(struct enqueuer *e)
{
	if (!e->cfg->redis_url || mono_ms() < e->redis_retry_at_ms)
		return NULL;
	if (try_open(e, 1)) {
		e->redis_retry_at_ms = mono_ms() + ENQ_REDIS_RETRY_MS;
		return NULL;
	}
	return e->redis;
}

struct queue *enqueuer_pg(struct enqueuer *e)
{
	return try_open(e, 0) ? NULL : e->pg;
}

void enqueuer_drop(struct enqueuer *e, struct queue *q)
{
	if (q && q == e->redis) {
		e->redis = NULL;
		e->redis_retry_at_ms = mono_ms() + ENQ_REDIS_RETRY_MS;
	} else if (q && q == e->pg) {
		e->pg = NULL;
	} else {
		return;
	}
	q->ops->destroy(q);
}

int enqueuer_stats(struct enqueuer *e, struct queue_stats *out, const char **backend)
{
	memset(out, 0, sizeof *out);
	*backend = "postgres";
	struct queue_stats ps;
	struct queue *pq = enqueuer_pg(e);
	if (!pq)
		return -1;
	if (pq->ops->stats(pq, &ps)) {
		enqueuer_drop(e, pq);
		return -1;
	}
	struct queue *rq = enqueuer_redis(e);
	struct queue_stats rs;
	if (rq && rq->ops->stats(rq, &rs) == 0) {
		*backend = "redis";
		*out = rs;
		out->queued += ps.queued;
		out->running += ps.running;
		out->delayed += ps.delayed;
		out->dead = ps.dead;
		queue_stats_free(&ps);
		return 0;
	}
	if (rq)
		enqueuer_drop(e, rq);
	*out = ps;
	return 0;
}

int enqueuer_cycle_fn(void *arg, struct run *runs, size_t n, char *err, size_t errlen)
{
	return enqueuer_submit(arg, runs, n, NULL, err, errlen) == 0 ? 0 : -1;
}
