/* queue_ctl.c -- the transitions operators start (queue.h): cancel, and
 * dead → queued (retry).  The others (enqueue, claim, complete) belong to
 * the transports; these two act on job_runs, the system of record, and on
 * Redis when it carries the run.
 *
 * Cancel, and why it is safe under races:
 *   PostgreSQL transport  the UPDATE takes the row's lock: a claim (FOR
 *                         UPDATE SKIP LOCKED) either took the row first
 *                         (it is 'running': the request is recorded in
 *                         cancel_requested_at and the consumer stops it) or
 *                         finds it 'cancelled' and never claims it.
 *   Redis transport       the request goes into jr:cancel (S_CANCEL) in the
 *                         same script that tells whether a consumer holds the
 *                         entry; a consumer reads jr:cancel after it claims a
 *                         batch and before it starts it, so an entry
 *                         delivered after the request never starts.  The
 *                         completion script records any run with a request
 *                         as cancelled, whatever it ended with.
 * Either way a run has one final state, and an accepted cancel is it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "queue.h"
#include "queue_redis.h"
#include "util.h"

#define NOTIFY_SQL "select pg_notify('jobrunner_runs', '')"
#define HISTORY_WAIT_MS 3000
#define CLOCK_SLACK_MS 1000    /* between this host's clock and a consumer's */   /* Redis mode: how long a cancel waits for job_runs to catch up */

static const char cancel_sql[] =
	"update job_runs j set"
	"   status = case when o.status in ('queued','failed') then 'cancelled' else j.status end,"
	"   cancel_requested_at = case when o.status in ('queued','failed','running')"
	"                              then coalesce(j.cancel_requested_at, now()) else j.cancel_requested_at end,"
	"   finished_at = case when o.status in ('queued','failed') then now() else j.finished_at end,"
	"   error = case when o.status in ('queued','failed') then 'cancelled before it started' else j.error end,"
	"   lease_until = case when o.status in ('queued','failed') then null else j.lease_until end,"
	"   updated_at = case when o.status in ('queued','failed','running') then now() else j.updated_at end"
	"  from (select id, status, run_at > now() as later, cancel_requested_at is null as unasked"
	"          from job_runs where id = $1 for update) o"
	" where j.id = o.id"
	" returning o.status, o.later, j.job, (extract(epoch from j.finished_at) * 1000)::bigint, o.unasked";

int queue_cancel(struct db *db, struct queue *redis, const char *id, enum queue_cancel_result *res,
		 char *status, size_t statuslen, char *job, size_t joblen, char *err, size_t errlen)
{
	int held = 0, added = 0;
	int64_t asked_ms = wall_ms();
	*res = QUEUE_NOT_FOUND;
	snprintf(status, statuslen, "%s", "");
	snprintf(job, joblen, "%s", "");
	if (redis) {
		int rc = queue_redis_cancel_request(redis, id, 1, &held, &added, HISTORY_WAIT_MS);
		if (rc) {
			snprintf(err, errlen, "%s", redis->errstr);
			return rc;
		}
	}
	const char *p[1] = { id };
	PGresult *r = db_query(db, cancel_sql, 1, p);
	if (!r) {
		snprintf(err, errlen, "postgres: %s", db->errstr);
		return db->conn ? QUEUE_EINTERNAL : QUEUE_EDOWN;
	}
	int found = PQntuples(r) == 1;
	const char *old = found ? db_get(r, 0, 0) : "";
	int later = found && db_get(r, 0, 1) && db_get(r, 0, 1)[0] == 't';
	if (found) {
		snprintf(status, statuslen, "%s", !strcmp(old, "queued") && later ? "delayed" : old);
		snprintf(job, joblen, "%s", db_get(r, 0, 2));
	}
	if (!found)
		*res = QUEUE_NOT_FOUND;
	else if (!strcmp(old, "queued") || !strcmp(old, "failed"))
		*res = held ? QUEUE_STOPPING : QUEUE_CANCELLED;
	else if (!strcmp(old, "running"))
		*res = QUEUE_STOPPING;
	else if (!strcmp(old, "cancelled") && added && db_get(r, 0, 4) && db_get(r, 0, 4)[0] == 't' &&
		 db_get_i64(r, 0, 3, 0) >= asked_ms - CLOCK_SLACK_MS) {
		/* Redis: this request was the first, and while it waited for
		 * job_runs a consumer honoured it: before starting the run (it
		 * was not held: queued), or by stopping it (held: running).
		 * "unasked": no other request recorded itself in the row (one
		 * that did answered for the run, and this one is told 409). */
		*res = held ? QUEUE_STOPPING : QUEUE_CANCELLED;
		snprintf(status, statuslen, "%s", held ? "running" : "queued");
	} else
		*res = QUEUE_FINISHED;
	if (held && *res == QUEUE_STOPPING && strcmp(old, "running"))
		snprintf(status, statuslen, "running");   /* claimed, not yet shown running */
	PQclear(r);
	/* a request this call added for a run that is unknown or had ended
	 * would wait for nothing (a cancelled run's entry that may still be
	 * queued keeps the earlier request, which this call did not add) */
	if (redis && added && (*res == QUEUE_NOT_FOUND || *res == QUEUE_FINISHED))
		queue_redis_cancel_request(redis, id, 0, NULL, NULL, 0);
	return QUEUE_OK;
}

/* The rows are picked in a CTE: a FOR UPDATE CTE is evaluated once, where
 * "id in (select ... limit n for update skip locked)" may be rescanned by
 * the join and, skipping what it locked the first time, take more than n. */
static const char retry_sql[] =
	"with picked as (select id, finished_at from job_runs"
	"                 where status = 'dead' and ($2::text is null or id = $2)"
	"                   and ($3::text is null or job = $3) and ($4::text is null or org_id = $4)"
	"                   and ($5::bigint is null or finished_at >= to_timestamp($5::bigint / 1000.0))"
	"                 order by finished_at desc nulls last, id desc limit $6::int"
	"                 for update skip locked)"
	"update job_runs j set status = 'queued', attempts = 0, source = 'retry', error = null,"
	"   run_at = now(), enqueued_at = now(), started_at = null, finished_at = null,"
	"   duration_ms = null, consumer = null, lease_until = null, cancel_requested_at = null,"
	"   transport = $1, fair_seq = null, updated_at = now()"
	"  from picked where j.id = picked.id and j.status = 'dead'"
	" returning j.id, j.job, j.org_id, j.payload::text, j.max_attempts,"
	"   coalesce((extract(epoch from picked.finished_at) * 1000)::bigint, 0)";

/* Redis mode: the rows of r (retry_sql's, in the open transaction) onto
 * the stream.  Each run carries an idempotency key made of its id and the
 * finished_at of the death it leaves, so a resend -- after a lost answer,
 * or a client's second retry of the same death -- cannot put it on the
 * stream twice.  Returns the transport's code; a lost answer is sent once
 * more on a fresh connection, and stays QUEUE_EUNKNOWN only if that fails
 * too. */
static int retry_to_redis(struct queue *redis, PGresult *r, size_t rows, char *err, size_t errlen)
{
	struct run *runs = xcalloc(rows, sizeof *runs);
	char (*keys)[RUN_MAX_IDEM_LEN + 1] = xcalloc(rows, sizeof *keys);
	for (size_t i = 0; i < rows; i++) {
		snprintf(runs[i].id, sizeof runs[i].id, "%s", db_get(r, (int)i, 0));
		runs[i].job = (char *)db_get(r, (int)i, 1);
		runs[i].org_id = (char *)db_get(r, (int)i, 2);
		runs[i].payload = (char *)db_get(r, (int)i, 3);
		runs[i].source = RUN_SRC_RETRY;
		runs[i].max_attempts = (int)db_get_i64(r, (int)i, 4, 5);
		runs[i].enqueued_at_ms = wall_ms();
		snprintf(keys[i], sizeof keys[i], "dead-retry:%s:%s", runs[i].id, db_get(r, (int)i, 5));
		runs[i].idempotency_key = keys[i];
	}
	int erc = redis->ops->enqueue(redis, runs, rows);
	if (erc)
		snprintf(err, errlen, "%s", redis->errstr);
	if (erc == QUEUE_EUNKNOWN) {
		struct queue *fresh = NULL;
		char e2[256];
		if (queue_redis_open(redis->cfg, redis->consumer, &fresh, e2, sizeof e2) == 0) {
			/* the key makes the resend a no-op where the first send went in */
			erc = fresh->ops->enqueue(fresh, runs, rows) ? QUEUE_EUNKNOWN : QUEUE_OK;
			if (erc)
				snprintf(err, errlen, "%s", fresh->errstr);
			fresh->ops->destroy(fresh);
		}
	}
	free(keys);
	free(runs);   /* the strings belong to r */
	return erc;
}

int queue_retry_dead(struct db *db, struct queue *redis, const struct queue_dead_filter *f,
		     struct queue_retried **ids, size_t *n, char *err, size_t errlen)
{
	char since[24], lim[16];
	snprintf(since, sizeof since, "%lld", (long long)f->since_ms);
	snprintf(lim, sizeof lim, "%d", f->limit < 1 ? 1 : f->limit > QUEUE_RETRY_MAX ? QUEUE_RETRY_MAX : f->limit);
	const char *p[6] = { redis ? "redis" : "pg", f->id, f->job, f->org_id, f->since_ms ? since : NULL, lim };
	*n = 0;
	if (ids)
		*ids = NULL;
	/* Redis mode: one step.  The rows turn queued in a transaction that
	 * commits once the runs are on the stream (or, nothing sent, on the
	 * PostgreSQL queue); when Redis's answer is lost for good it is rolled
	 * back and the runs stay dead -- never queued in neither place. */
	uint64_t gen = db->generation;
	if (redis) {
		if (db_exec(db, "begin", 0, NULL)) {
			snprintf(err, errlen, "postgres: %s", db->errstr);
			return db->conn ? QUEUE_EINTERNAL : QUEUE_EDOWN;
		}
		gen = db->generation;
	}
	PGresult *r = db_query(db, retry_sql, 6, p);
	if (!r) {
		snprintf(err, errlen, "postgres: %s", db->errstr);
		int code = db->conn ? QUEUE_EINTERNAL : QUEUE_EDOWN;
		if (redis)
			db_exec(db, "rollback", 0, NULL);
		return code;
	}
	size_t rows = (size_t)PQntuples(r);
	int rc = QUEUE_OK;
	if (rows && redis) {
		int erc = retry_to_redis(redis, r, rows, err, errlen);
		if (erc == QUEUE_EUNKNOWN) {
			rc = erc;   /* rolled back below: the runs stay dead, to be retried again */
		} else if (erc) {
			/* nothing was sent: the PostgreSQL queue carries them */
			struct strbuf arr = STRBUF_INIT;
			sb_add(&arr, "{", 1);
			for (size_t i = 0; i < rows; i++) {
				if (i)
					sb_add(&arr, ",", 1);
				db_array_add(&arr, db_get(r, (int)i, 0));
			}
			sb_add(&arr, "}", 1);
			const char *pp[1] = { arr.buf };
			if (db_exec(db, "update job_runs set transport = 'pg' where id = any($1::text[]) and status = 'queued'", 1, pp) ||
			    db_exec(db, NOTIFY_SQL, 0, NULL)) {
				snprintf(err, errlen, "postgres: %s", db->errstr);
				rc = db->conn ? QUEUE_EINTERNAL : QUEUE_EDOWN;
			}
			sb_release(&arr);
		}
	} else if (rows) {
		db_exec(db, NOTIFY_SQL, 0, NULL);   /* wakes idle claimers; the poll is the net */
	}
	if (redis) {
		if (rc) {
			db_exec(db, "rollback", 0, NULL);
			rows = 0;
		} else if (db_exec(db, "commit", 0, NULL) || db->generation != gen) {
			/* the transaction died with its connection: the rows are dead
			 * still (runs that reached the stream are deduplicated by
			 * their key when retried again) */
			snprintf(err, errlen, "postgres: %s", db->errstr[0] ? db->errstr : "connection lost");
			rc = QUEUE_EDOWN;
			rows = 0;
		}
	}
	if (ids && rows) {
		*ids = xcalloc(rows, sizeof **ids);
		for (size_t i = 0; i < rows; i++) {
			snprintf((*ids)[i].id, sizeof (*ids)[i].id, "%s", db_get(r, (int)i, 0));
			snprintf((*ids)[i].job, sizeof (*ids)[i].job, "%s", db_get(r, (int)i, 1));
		}
	}
	*n = rows;
	PQclear(r);
	return rc;
}
