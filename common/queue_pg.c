/* queue_pg.c -- the PostgreSQL transport: job_runs is the queue.
 *
 * Claim:    one UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)
 *           takes due runs (status queued/failed, run_at <= now()) and runs
 *           whose lease expired (their consumer went silent), sets them
 *           running with a lease, and bumps attempts.  SKIP LOCKED lets any
 *           number of consumers claim at once without waiting on each other.
 * Fence:    the attempts value returned by the claim.  complete() and
 *           extend() match on (id, attempts, consumer, status='running'), so a
 *           consumer whose lease passed to another cannot write over the
 *           newer attempt: its UPDATE matches no row and it is told "fenced".
 * Wake-up:  enqueue sends NOTIFY jobrunner_runs; an idle claim waits on
 *           the connection's socket for it, up to block_ms.  The wait is
 *           also the safety net poll: a notification lost (or a retry
 *           becoming due) is picked up by the next claim.
 * Batches:  arrays of values through unnest(), one round trip per batch.
 * Prepared: claim (one statement per batch size), complete and the dead
 *           sweep are prepared once per connection (db_query_prepared):
 *           the server parses and plans them once, not per batch.  Enqueue
 *           is not: a generic plan sized for 10 rows would be wrong for a
 *           bulk of 10,000.
 *
 * Rejected: a separate queue table apart from job_runs (two writes per
 * state change, and the record is the queue in the seed's world anyway);
 * advisory locks per run (they leak on poolers and cost a round trip each).
 * Measured and rejected for speed (PostgreSQL CPU per run, two consumers
 * side by side on one server): joining the claim by ctid, one claim at a
 * time per process, complete + next claim in one round trip, batches of
 * 256, fillfactor 70, no job_runs_finished_idx, synchronous_commit off.
 * None did better than the noise; the cost is the two non-HOT updates
 * per run (status is in the partial indexes' predicates) and their index
 * entries, which every design that shows 'running' in job_runs pays.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "queue.h"
#include "session.h"
#include "util.h"

struct pgq {
	struct queue q;      /* first: struct queue * <-> struct pgq * */
	struct db db;
	int listening;
	int64_t last_dead_sweep_ms;
};

#define NOTIFY_CHANNEL "jobrunner_runs"

/* Records the database's failure in the queue (err and errstr, as
 * queue.h promises) and returns its QUEUE_E* code: QUEUE_EDOWN when the
 * connection is gone, QUEUE_EINTERNAL when PostgreSQL refused. */
static int pgq_code(struct pgq *p)
{
	if (!p->db.conn)
		p->listening = 0;
	p->q.err = p->db.conn ? QUEUE_EINTERNAL : QUEUE_EDOWN;
	snprintf(p->q.errstr, sizeof p->q.errstr, "postgres: %s", p->db.errstr);
	return p->q.err;
}

/* ------------------------------------------------------------------ */
/* enqueue                                                             */
/* ------------------------------------------------------------------ */

static const char enqueue_sql[] =
	"with v as ("
	"  select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
	"                       $6::int[], $7::bigint[], $8::text[], $9::bigint[]) with ordinality"
	"    as t(id, job, org_id, payload, source, max_attempts, run_at_ms, idem, enq_ms, ord)"
	/* fairness (009): a run due now goes at the end of its org's line,
	 * which starts no earlier than the lowest rank waiting (an org with no
	 * line joins at the front); a run due later gets no rank */
	/* (order by ... limit 1, not min()/max(): the planner then walks
	 * job_runs_fair_idx and job_runs_fair_org_idx from one end, whatever
	 * its statistics say) */
	"), lo as (select coalesce((select fair_seq from job_runs"
	"           where transport = 'pg' and status in ('queued','failed') and fair_seq is not null"
	"           order by fair_seq limit 1), 0) as m"
	"), orgs as materialized (select o, greatest((select m from lo), coalesce((select j.fair_seq from job_runs j"
	"                 where coalesce(j.org_id, '') = o and j.transport = 'pg'"
	"                   and j.status in ('queued','failed') and j.fair_seq is not null"
	"                 order by j.fair_seq desc limit 1), 0)) as last"
	"            from (select distinct coalesce(org_id, '') as o from v) d"
	"), ins as ("
	"  insert into job_runs (id, job, org_id, payload, source, status, max_attempts,"
	"                        run_at, enqueued_at, idempotency_key, transport, fair_seq)"
	"  select id, job, org_id, coalesce(payload, '{}')::jsonb, source, 'queued', max_attempts,"
	"         greatest(to_timestamp(run_at_ms / 1000.0), now()),"
	"         to_timestamp(enq_ms / 1000.0), idem, 'pg',"
	/* (due now: within a second, for a producer's clock a little ahead) */
	"         case when to_timestamp(run_at_ms / 1000.0) <= now() + interval '1 second'"
	"              then orgs.last + row_number() over (partition by coalesce(org_id, ''),"
	"                   to_timestamp(run_at_ms / 1000.0) <= now() + interval '1 second' order by ord)"
	"         end"
	"    from v join orgs on orgs.o = coalesce(v.org_id, '')"
	"  on conflict (job, idempotency_key) where idempotency_key is not null do nothing"
	"  returning id"
	"), n as (select pg_notify('" NOTIFY_CHANNEL "', '') where exists (select 1 from ins))"
	/* rows inserted by ins are not visible to this scan (same snapshot), so
	 * j finds only runs that held the key before: those ids are returned.
	 * n is referenced so that the NOTIFY is evaluated.  A key taken by a
	 * concurrent enqueue that committed after this statement's snapshot
	 * was taken is neither inserted nor found: the 4th column flags it,
	 * and pgq_enqueue() looks the holder up in a new statement. */
	" select v.id, coalesce(j.id, v.id), (select count(*) from n),"
	"        v.idem is not null and j.id is null and not exists (select 1 from ins where ins.id = v.id)"
	"   from v left join job_runs j on v.idem is not null and j.job = v.job"
	"                       and j.idempotency_key = v.idem and j.id <> v.id";

static const char idem_holder_sql[] =
	"select id from job_runs where job = $1 and idempotency_key = $2";

static void arr_open(struct strbuf *sb) { sb_reset(sb); sb_add(sb, "{", 1); }
static void arr_next(struct strbuf *sb, const char *v, size_t i)
{
	if (i)
		sb_add(sb, ",", 1);
	db_array_add(sb, v);
}

/* If an earlier run of the batch has the same job and idempotency key,
 * copies its id into runs[i] and returns 1. */
static int dup_in_batch(struct run *runs, size_t i)
{
	for (size_t k = 0; k < i; k++)
		if (runs[k].idempotency_key && !strcmp(runs[k].idempotency_key, runs[i].idempotency_key) &&
		    !strcmp(runs[k].job, runs[i].job)) {
			memcpy(runs[i].id, runs[k].id, sizeof runs[i].id);
			return 1;
		}
	return 0;
}

static int pgq_enqueue(struct queue *q, struct run *runs, size_t n)
{
	struct pgq *p = (struct pgq *)q;
	enum { NCOL = 9 };
	struct strbuf col[NCOL] = { STRBUF_INIT, STRBUF_INIT, STRBUF_INIT, STRBUF_INIT, STRBUF_INIT,
				    STRBUF_INIT, STRBUF_INIT, STRBUF_INIT, STRBUF_INIT };
	int rc = QUEUE_OK;
	if (n == 0)
		return 0;
	for (int c = 0; c < NCOL; c++)
		arr_open(&col[c]);
	int64_t now = wall_ms();
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		struct run *r = &runs[i];
		char num[3][24];
		if (r->idempotency_key && dup_in_batch(runs, i))
			continue;   /* same key earlier in this batch: shares its id */
		if (!r->id[0])
			run_id_new(r->id);
		if (!r->enqueued_at_ms)
			r->enqueued_at_ms = now;
		if (r->max_attempts <= 0)
			r->max_attempts = (int)q->cfg->job_max_attempts;
		snprintf(num[0], sizeof num[0], "%d", r->max_attempts);
		snprintf(num[1], sizeof num[1], "%lld", (long long)(r->run_at_ms ? r->run_at_ms : now));
		snprintf(num[2], sizeof num[2], "%lld", (long long)r->enqueued_at_ms);
		arr_next(&col[0], r->id, m);
		arr_next(&col[1], r->job, m);
		arr_next(&col[2], r->org_id, m);
		arr_next(&col[3], r->payload, m);
		arr_next(&col[4], run_source_name(r->source), m);
		arr_next(&col[5], num[0], m);
		arr_next(&col[6], num[1], m);
		arr_next(&col[7], r->idempotency_key, m);
		arr_next(&col[8], num[2], m);
		m++;
	}
	const char *params[NCOL];
	for (int c = 0; c < NCOL; c++) {
		sb_add(&col[c], "}", 1);
		params[c] = col[c].buf;
	}
	PGresult *res = db_query(&p->db, enqueue_sql, NCOL, params);
	if (!res) {
		rc = pgq_code(p);
		goto out;
	}
	/* rows come back as (our id, the id that holds the run): they differ
	 * where an idempotency key was already used */
	for (int row = 0; row < PQntuples(res); row++) {
		const char *mine = db_get(res, row, 0), *held = db_get(res, row, 1);
		const char *flag = db_get(res, row, 3);
		int lost = flag && flag[0] == 't';
		if (!mine || !held || (!lost && !strcmp(mine, held)))
			continue;
		for (size_t i = 0; i < n; i++) {
			if (strcmp(runs[i].id, mine))
				continue;
			if (lost) {
				const char *hp[2] = { runs[i].job, runs[i].idempotency_key };
				PGresult *h = db_query(&p->db, idem_holder_sql, 2, hp);
				if (!h) {
					PQclear(res);
					rc = pgq_code(p);
					goto out;
				}
				if (PQntuples(h) == 1)
					snprintf(runs[i].id, sizeof runs[i].id, "%s", db_get(h, 0, 0));
				PQclear(h);
			} else {
				snprintf(runs[i].id, sizeof runs[i].id, "%s", held);
			}
			break;
		}
	}
	PQclear(res);
	for (size_t i = 0; i < n; i++)
		if (runs[i].idempotency_key)
			dup_in_batch(runs, i);   /* copy the (possibly replaced) first id */
out:
	for (int c = 0; c < NCOL; c++)
		sb_release(&col[c]);
	return rc;
}

/* ------------------------------------------------------------------ */
/* claim                                                               */
/* ------------------------------------------------------------------ */

/* The claim, with its batch size written in (printf format: %zu = the
 * limit).  A LIMIT given as a parameter would leave the planner, for a
 * prepared statement's generic plan, assuming a tenth of the table and
 * joining it by a sequential scan: so it kept planning every claim afresh
 * (a seventh of the claim's time).  With the number in the text, each
 * batch size is its own prepared statement whose generic plan is the one
 * that a fresh plan would be. */
static const char claim_sql_fmt[] =
	/* two index-ordered scans (job_runs_claim_idx, job_runs_lease_idx): one
	 * OR over both made the planner scan and sort the whole backlog on
	 * every claim.  Rows locked by a branch but cut by the outer limit stay
	 * locked only until this statement commits. */
	"with due as (select id, run_at from job_runs"
	"              where transport = 'pg' and status in ('queued','failed') and run_at <= now()"
	"                and fair_seq is null"
	/* a paused job's runs are claimed by no one (job_pause, 003_control) */
	"                and not exists (select 1 from job_pause p where p.job = job_runs.job)"
	"              order by run_at limit %zu for update skip locked),"
	/* fairness (009): the ranked runs, lowest rank first: the orgs with
	 * work waiting take turns (job_runs_fair_idx) */
	"     fair as (select id, fair_seq from job_runs"
	"               where transport = 'pg' and status in ('queued','failed') and fair_seq is not null"
	"                 and run_at <= now()"
	"                 and not exists (select 1 from job_pause p where p.job = job_runs.job)"
	"               order by fair_seq limit %zu for update skip locked),"
	"     lost as (select id, run_at from job_runs"
	"               where status = 'running' and lease_until < now() and transport = 'pg'"
	"                 and attempts < max_attempts"
	"                 and not exists (select 1 from job_pause p where p.job = job_runs.job)"
	"               order by lease_until limit %zu for update skip locked)"
	"update job_runs j set status = 'running', attempts = j.attempts + 1,"
	"       started_at = now(), finished_at = null, consumer = $1,"
	"       lease_until = now() + make_interval(secs => $2::bigint / 1000.0),"
	"       updated_at = now()"
	/* the runs that waited for a time (and lost leases) alternate with
	 * the ranked ones: neither kind holds the other up */
	"  from (select id, reclaimed from (select id, false as reclaimed,"
	"                                          row_number() over (order by run_at) as turn from due"
	"                                   union all select id, false,"
	"                                          row_number() over (order by fair_seq) from fair"
	"                                   union all select id, true,"
	"                                          row_number() over (order by run_at) from lost) b"
	"         order by turn limit %zu) c"
	" where j.id = c.id"
	" returning j.id, j.job, j.org_id, j.payload::text, j.source, j.attempts, j.max_attempts,"
	"   (extract(epoch from j.enqueued_at) * 1000)::bigint, j.idempotency_key,"
	"   (extract(epoch from j.started_at) * 1000)::bigint, c.reclaimed";

/* Prepared claims by batch size: the worker's batches are powers of two
 * (worker.c); other sizes are planned each time. */
static const char *const claim_names[] = {
	"jr_claim_1", "jr_claim_2", "jr_claim_4", "jr_claim_8",
	"jr_claim_16", "jr_claim_32", "jr_claim_64", "jr_claim_128",
};

static PGresult *claim_query(struct pgq *p, size_t max, const char *const *params)
{
	char sql[sizeof claim_sql_fmt + 64];
	snprintf(sql, sizeof sql, claim_sql_fmt, max, max, max, max);
	for (size_t i = 0; i < sizeof claim_names / sizeof claim_names[0]; i++)
		if (max == (size_t)1 << i)
			return db_query_prepared(&p->db, claim_names[i], sql, 2, params);
	return db_query(&p->db, sql, 2, params);
}

/* A run whose consumer went silent on its last attempt has no attempt left
 * to give to another consumer: it is dead. */
static const char dead_sweep_sql[] =
	"update job_runs set status = 'dead', finished_at = now(), lease_until = null,"
	"       error = 'lease expired on the last attempt (consumer ' || coalesce(consumer, '?') || ' went silent)',"
	"       updated_at = now()"
	" where id in (select id from job_runs where transport = 'pg' and status = 'running'"
	"               and lease_until < now() and attempts >= max_attempts"
	"               limit 1000 for update skip locked)";

static int pgq_listen(struct pgq *p)
{
	if (p->db.pooled)
		return 0;   /* LISTEN on a pooler is lost: the session listener wakes us */
	if (p->listening && p->db.conn)
		return 0;
	if (db_exec(&p->db, "listen " NOTIFY_CHANNEL, 0, NULL))
		return -1;
	p->listening = 1;
	return 0;
}

/* Waits up to ms for a notification on the connection; drains them. */
static void pgq_wait(struct pgq *p, int64_t ms)
{
	if (p->db.pooled && ms > 0) {
		session_wait_notify(p->q.cfg, ms > 200 ? 200 : ms);
		return;
	}
	if (!p->db.conn || ms <= 0)
		return;
	int fd = PQsocket(p->db.conn);
	struct pollfd pfd = { fd, POLLIN, 0 };
	int64_t end = mono_ms() + ms;
	for (;;) {
		int64_t left = end - mono_ms();
		if (left <= 0)
			return;
		int r = poll(&pfd, 1, (int)(left > 200 ? 200 : left));
		if (r < 0 && errno != EINTR)
			return;
		if (r > 0) {
			if (!PQconsumeInput(p->db.conn)) {
				db_close(&p->db);
				p->listening = 0;
				return;
			}
			int got = 0;
			PGnotify *nt;
			while ((nt = PQnotifies(p->db.conn)) != NULL) {
				PQfreemem(nt);
				got = 1;
			}
			if (got)
				return;
		}
		/* wake at least every 200 ms to let stop flags be seen by callers */
		if (r == 0 && left > 200)
			return;
	}
}

static int pgq_claim(struct queue *q, struct run *out, size_t max, int64_t block_ms, size_t *n)
{
	struct pgq *p = (struct pgq *)q;
	char lease[24];
	snprintf(lease, sizeof lease, "%lld", (long long)q->cfg->job_lease_ms);
	const char *params[2] = { q->consumer, lease };
	*n = 0;
	if (block_ms > 0 && pgq_listen(p))
		return pgq_code(p);
	int64_t now = mono_ms();
	if (now - p->last_dead_sweep_ms > 1000) {
		p->last_dead_sweep_ms = now;
		PGresult *r = db_query_prepared(&p->db, "jr_dead_sweep", dead_sweep_sql, 0, NULL);
		if (!r)
			return pgq_code(p);
		PQclear(r);
	}
	int64_t deadline = now + block_ms;
	for (;;) {
		if (q->stop && atomic_load_explicit(q->stop, memory_order_acquire))
			return QUEUE_OK;   /* shutting down: claim nothing more */
		PGresult *res = claim_query(p, max, params);
		if (!res)
			return pgq_code(p);
		int rows = PQntuples(res);
		for (int i = 0; i < rows && (size_t)i < max; i++) {
			struct run *r = &out[i];
			memset(r, 0, sizeof *r);
			snprintf(r->id, sizeof r->id, "%s", db_get(res, i, 0));
			r->job = xstrdup(db_get(res, i, 1));
			r->org_id = xstrdup(db_get(res, i, 2));
			r->payload = xstrdup(db_get(res, i, 3));
			if (run_source_parse(db_get(res, i, 4), &r->source))
				r->source = RUN_SRC_ADHOC;
			r->attempt = (int)db_get_i64(res, i, 5, 1);
			r->max_attempts = (int)db_get_i64(res, i, 6, 1);
			r->enqueued_at_ms = db_get_i64(res, i, 7, 0);
			r->idempotency_key = xstrdup(db_get(res, i, 8));
			r->started_at_ms = db_get_i64(res, i, 9, wall_ms());
			r->fence = r->attempt;
			r->reclaimed = db_get(res, i, 10) && db_get(res, i, 10)[0] == 't';
		}
		PQclear(res);
		*n = (size_t)rows;
		if (rows > 0 || block_ms <= 0)
			return QUEUE_OK;
		int64_t left = deadline - mono_ms();
		if (left <= 0)
			return QUEUE_OK;
		pgq_wait(p, left);
		if (mono_ms() >= deadline)
			return QUEUE_OK;
	}
}

/* ------------------------------------------------------------------ */
/* complete and extend                                                 */
/* ------------------------------------------------------------------ */

/* A run with a cancel request (cancel_requested_at, set by
 * queue_cancel() while it ran) ends cancelled whatever its outcome: the
 * request was answered as accepted, so that is its one final state. */
static const char complete_sql[] =
	"update job_runs j set status = case when j.cancel_requested_at is null then u.status else 'cancelled' end,"
	"       attempts = u.attempts,"
	"       run_at = case when u.next_ms > 0 and j.cancel_requested_at is null"
	"                     then to_timestamp(u.next_ms / 1000.0) else j.run_at end,"
	"       fair_seq = case when u.next_ms > 0 then null else j.fair_seq end,"
	/* each run's own start and end, not its batch's claim and completion */
	"       finished_at = case when u.status = 'queued' and j.cancel_requested_at is null then null"
	"                          when u.fin_ms > 0 then to_timestamp(u.fin_ms / 1000.0) else now() end,"
	"       started_at = case when u.status = 'queued' and j.cancel_requested_at is null then null"
	"                         when u.start_ms > 0 then to_timestamp(u.start_ms / 1000.0) else j.started_at end,"
	"       duration_ms = u.duration_ms,"
	"       error = case when j.cancel_requested_at is null or u.status = 'cancelled' then u.error"
	"                    else 'cancelled (the run had ended ' || u.status || ' when it saw the request)' end,"
	"       lease_until = null, updated_at = now()"
	"  from unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::bigint[], $6::int[], $7::text[],"
	"              $9::bigint[], $10::bigint[])"
	"       as u(id, fence, status, attempts, next_ms, duration_ms, error, start_ms, fin_ms)"
	/* "status || ''": a plain status = 'running' lets the planner walk
	 * job_runs_lease_idx (partial on status = 'running'), whose dead
	 * entries grow with every run until vacuum, instead of looking the
	 * batch's ids up in the primary key: 4x slower under load. */
	" where j.id = u.id and j.status || '' = 'running' and j.attempts = u.fence and j.consumer = $8"
	" returning j.id";

static int pgq_complete(struct queue *q, struct run *runs, const struct run_result *res,
			size_t n, int *fenced)
{
	struct pgq *p = (struct pgq *)q;
	enum { NCOL = 7, NARR = NCOL + 2 };   /* + started, finished ($9, $10) */
	struct strbuf col[NARR] = { STRBUF_INIT, STRBUF_INIT, STRBUF_INIT, STRBUF_INIT, STRBUF_INIT,
				    STRBUF_INIT, STRBUF_INIT, STRBUF_INIT, STRBUF_INIT };
	struct backoff b = { q->cfg->job_backoff_base_ms, q->cfg->job_backoff_max_ms };
	int rc = QUEUE_OK;
	int64_t now = wall_ms();
	size_t m = 0;
	int requeued = 0;
	for (int c = 0; c < NARR; c++)
		arr_open(&col[c]);
	for (size_t i = 0; i < n; i++) {
		fenced[i] = 0;
		if (runs[i].is_tick)
			continue;
		int64_t next;
		int attempts;
		enum run_status st = run_decide(&runs[i], &res[i], &b, now, &next, &attempts);
		requeued |= st == RUN_QUEUED || st == RUN_FAILED;
		char fence[24], att[16], nx[24], dur[24];
		snprintf(fence, sizeof fence, "%lld", (long long)runs[i].fence);
		snprintf(att, sizeof att, "%d", attempts);
		snprintf(nx, sizeof nx, "%lld", (long long)next);
		snprintf(dur, sizeof dur, "%lld", (long long)(res[i].duration_ms > INT32_MAX ? INT32_MAX : res[i].duration_ms));
		arr_next(&col[0], runs[i].id, m);
		arr_next(&col[1], fence, m);
		arr_next(&col[2], run_status_name(st), m);
		arr_next(&col[3], att, m);
		arr_next(&col[4], nx, m);
		arr_next(&col[5], res[i].duration_ms < 0 ? NULL : dur, m);   /* < 0: never started */
		arr_next(&col[6], res[i].outcome == RUN_OK ? NULL : res[i].error, m);
		char st_ms[24], fin_ms[24];
		snprintf(st_ms, sizeof st_ms, "%lld", (long long)runs[i].started_at_ms);
		snprintf(fin_ms, sizeof fin_ms, "%lld", (long long)res[i].finished_at_ms);
		arr_next(&col[7], st_ms, m);
		arr_next(&col[8], fin_ms, m);
		m++;
	}
	if (m == 0)
		goto out;
	const char *params[NCOL + 3];
	for (int c = 0; c < NARR; c++)
		sb_add(&col[c], "}", 1);
	for (int c = 0; c < NCOL; c++)
		params[c] = col[c].buf;
	params[NCOL] = q->consumer;
	params[NCOL + 1] = col[NCOL].buf;
	params[NCOL + 2] = col[NCOL + 1].buf;
	PGresult *r = db_query_prepared(&p->db, "jr_complete", complete_sql, NCOL + 3, params);
	if (!r) {
		rc = pgq_code(p);
		goto out;
	}
	/* whatever did not come back was fenced */
	for (size_t i = 0; i < n; i++) {
		if (runs[i].is_tick)
			continue;
		int found = 0;
		for (int row = 0; row < PQntuples(r) && !found; row++)
			found = !strcmp(PQgetvalue(r, row, 0), runs[i].id);
		fenced[i] = !found;
	}
	/* wake idle claimers only when runs went back to the queue (retries,
	 * deferrals): a finished run adds no work, and a NOTIFY per batch cost
	 * a round trip and serialises commits on the notification queue */
	if (requeued && PQntuples(r) > 0)
		db_exec(&p->db, "select pg_notify('" NOTIFY_CHANNEL "', '')", 0, NULL);
	PQclear(r);
out:
	for (int c = 0; c < NARR; c++)
		sb_release(&col[c]);
	return rc;
}

/* Gives back claimed runs that have not started: queued again with the
 * attempt uncounted, fenced like complete(). */
static const char release_sql[] =
	"update job_runs j set status = 'queued', attempts = j.attempts - 1, consumer = null,"
	"       lease_until = null, started_at = null, updated_at = now()"
	"  from unnest($1::text[], $2::int[]) as u(id, fence)"
	" where j.id = u.id and j.status || '' = 'running' and j.attempts = u.fence and j.consumer = $3"
	" returning j.id";

static int pgq_release(struct queue *q, const struct run *runs, size_t n, int *released)
{
	struct pgq *p = (struct pgq *)q;
	struct strbuf ids = STRBUF_INIT, fences = STRBUF_INIT;
	arr_open(&ids);
	arr_open(&fences);
	for (size_t i = 0; i < n; i++) {
		char f[24];
		snprintf(f, sizeof f, "%lld", (long long)runs[i].fence);
		arr_next(&ids, runs[i].id, i);
		arr_next(&fences, f, i);
		if (released)
			released[i] = 0;
	}
	sb_add(&ids, "}", 1);
	sb_add(&fences, "}", 1);
	const char *params[3] = { ids.buf, fences.buf, q->consumer };
	int rc = QUEUE_OK;
	PGresult *r = n ? db_query(&p->db, release_sql, 3, params) : NULL;
	if (n && !r) {
		rc = pgq_code(p);
	} else if (r) {
		for (int row = 0; row < PQntuples(r); row++)
			for (size_t i = 0; released && i < n; i++)
				if (!strcmp(PQgetvalue(r, row, 0), runs[i].id))
					released[i] = 1;
		/* wake the idle claimers: the runs are waiting now */
		if (PQntuples(r) > 0)
			db_exec(&p->db, "select pg_notify('" NOTIFY_CHANNEL "', '')", 0, NULL);
		PQclear(r);
	}
	sb_release(&ids);
	sb_release(&fences);
	return rc;
}

/* SKIP LOCKED: a row that another session holds locked is being completed
 * (or reclaimed, its lease already gone): it needs no extension, and the
 * heartbeat must not wait for it.  A plain UPDATE waited there, and an
 * extend and a complete of the same batch, each locking the rows in its
 * own order, deadlocked: PostgreSQL broke the cycle after deadlock_timeout
 * (1 s), by which time the batch's leases had run out, its runs were
 * reclaimed and ran twice, and every other thread's extension waited too. */
static const char extend_sql[] =
	"update job_runs j set lease_until = now() + make_interval(secs => $4::bigint / 1000.0)"
	"  from (select r.id from job_runs r join unnest($1::text[], $2::int[]) as u(id, fence)"
	"          on r.id = u.id"
	"         where r.attempts = u.fence and r.status = 'running' and r.consumer = $3"
	"           for update of r skip locked) s"
	" where j.id = s.id";

static int pgq_extend(struct queue *q, const struct run *runs, size_t n)
{
	struct pgq *p = (struct pgq *)q;
	struct strbuf ids = STRBUF_INIT, fences = STRBUF_INIT;
	arr_open(&ids);
	arr_open(&fences);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (runs[i].is_tick)
			continue;
		char f[24];
		snprintf(f, sizeof f, "%lld", (long long)runs[i].fence);
		arr_next(&ids, runs[i].id, m);
		arr_next(&fences, f, m);
		m++;
	}
	sb_add(&ids, "}", 1);
	sb_add(&fences, "}", 1);
	char lease[24];
	snprintf(lease, sizeof lease, "%lld", (long long)q->cfg->job_lease_ms);
	const char *params[4] = { ids.buf, fences.buf, q->consumer, lease };
	int rc = QUEUE_OK;
	if (m && db_exec(&p->db, extend_sql, 4, params))
		rc = pgq_code(p);
	sb_release(&ids);
	sb_release(&fences);
	return rc;
}

/* ------------------------------------------------------------------ */
/* stats and lifecycle                                                 */
/* ------------------------------------------------------------------ */

static int pgq_cancelled(struct queue *q, const struct run *runs, size_t n, int *flags)
{
	struct pgq *p = (struct pgq *)q;
	struct strbuf ids = STRBUF_INIT;
	arr_open(&ids);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		flags[i] = 0;
		if (!runs[i].is_tick)
			arr_next(&ids, runs[i].id, m++);
	}
	sb_add(&ids, "}", 1);
	int rc = QUEUE_OK;
	if (m) {
		const char *params[1] = { ids.buf };
		PGresult *r = db_query_prepared(&p->db, "jr_cancelled",
			"select id from job_runs where id = any($1::text[]) and cancel_requested_at is not null",
			1, params);
		if (!r) {
			rc = pgq_code(p);
		} else {
			for (int row = 0; row < PQntuples(r); row++)
				for (size_t i = 0; i < n; i++)
					if (!runs[i].is_tick && !strcmp(runs[i].id, PQgetvalue(r, row, 0)))
						flags[i] = 1;
			PQclear(r);
		}
	}
	sb_release(&ids);
	return rc;
}

static int pgq_stats(struct queue *q, struct queue_stats *out)
{
	struct pgq *p = (struct pgq *)q;
	memset(out, 0, sizeof *out);
	PGresult *r = db_query(&p->db,
		/* one count per partial index (claim, lease, dead), so that the
		 * cost follows the live and dead runs, not the history: a single
		 * filtered count over job_runs was a scan of the whole table */
		"select (select count(*) from job_runs where transport = 'pg'"
		"          and status in ('queued','failed') and run_at <= now()),"
		"       (select count(*) from job_runs where status = 'running' and transport = 'pg'),"
		"       (select count(*) from job_runs where transport = 'pg'"
		"          and status in ('queued','failed') and run_at > now()),"
		"       (select count(*) from job_runs where status = 'dead')", 0, NULL);
	if (!r)
		return pgq_code(p);
	out->queued = db_get_i64(r, 0, 0, 0);
	out->running = db_get_i64(r, 0, 1, 0);
	out->delayed = db_get_i64(r, 0, 2, 0);
	out->dead = db_get_i64(r, 0, 3, 0);
	PQclear(r);
	r = db_query(&p->db,
		"select consumer, count(*),"
		"       (extract(epoch from now() - max(updated_at)) * 1000)::bigint"
		"  from job_runs where status = 'running' and transport = 'pg' and consumer is not null"
		" group by consumer order by consumer limit 1000", 0, NULL);
	if (!r)
		return pgq_code(p);
	int rows = PQntuples(r);
	out->consumers = xcalloc((size_t)rows, sizeof *out->consumers);
	for (int i = 0; i < rows; i++) {
		snprintf(out->consumers[i].name, sizeof out->consumers[i].name, "%s", db_get(r, i, 0));
		out->consumers[i].pending = db_get_i64(r, i, 1, 0);
		out->consumers[i].idle_ms = db_get_i64(r, i, 2, 0);
	}
	out->nconsumers = (size_t)rows;
	PQclear(r);
	return QUEUE_OK;
}

static void pgq_destroy(struct queue *q)
{
	struct pgq *p = (struct pgq *)q;
	if (!p)
		return;
	db_release(&p->db);
	free(p);
}

static const struct queue_ops pg_ops = {
	.backend = "postgres",
	.enqueue = pgq_enqueue,
	.claim = pgq_claim,
	.complete = pgq_complete,
	.release = pgq_release,
	.extend = pgq_extend,
	.cancelled = pgq_cancelled,
	.stats = pgq_stats,
	.destroy = pgq_destroy,
};

int queue_pg_open(const struct config *cfg, const char *consumer, struct queue **out,
		  char *err, size_t errlen)
{
	struct pgq *p = xcalloc(1, sizeof *p);
	p->q.ops = &pg_ops;
	p->q.cfg = cfg;
	snprintf(p->q.consumer, sizeof p->q.consumer, "%s", consumer ? consumer : "");
	session_db_init(&p->db, cfg, "jobrunner-queue", 30000);
	if (db_connect(&p->db)) {
		snprintf(err, errlen, "postgres: %s", p->db.errstr);
		pgq_destroy(&p->q);
		*out = NULL;
		return QUEUE_EDOWN;
	}
	*out = &p->q;
	return QUEUE_OK;
}

void queue_pg_set_timeout(struct queue *q, int64_t ms)
{
	if (q && q->ops == &pg_ops)
		((struct pgq *)q)->db.client_timeout_ms = ms;
}

void queue_stats_free(struct queue_stats *s)
{
	free(s->consumers);
	s->consumers = NULL;
	s->nconsumers = 0;
}
