/* history.c -- see history.h.
 *
 * Why a consumer group and not a write per run: the completion script on
 * the hot path only appends to jr:events (in Redis, inside the same script
 * that acknowledges the run), so a consumer never waits for PostgreSQL per
 * run; the writer turns thousands of entries into one batch.  Reading
 * jr:runs with its own group means the producer writes a run once (XADD)
 * and the queued row still appears; trimming (queue_redis.c) keeps every
 * entry this group has not acknowledged, up to the hard cap
 * REDIS_STREAM_MAX_LEN.
 *
 * One write per run, as a rule.  PostgreSQL's row writes are the ceiling of
 * the whole system, so the writer avoids writing a run twice:
 *   - events are read first, then as many jr:runs entries as attempts just
 *     ended, so a run's queued entry and its end tend to share a batch;
 *   - the carry: while runs are finishing, a queued row that met no end in
 *     its batch waits in memory (unacknowledged, at most CARRY_MAX rows,
 *     CARRY_MS) for the next batches, where its end usually is;
 *   - rows of one batch are reduced to the newest state per id;
 *   - a cache of the states this writer committed drops rows that the
 *     upsert would refuse (a queued entry read after its run's end).
 * A batch goes to PostgreSQL as COPY into a temporary stage table and one
 * INSERT ... SELECT ... ON CONFLICT DO UPDATE from it, in one transaction:
 * COPY's stream costs the server far less to parse than array parameters.
 * Under history_thread_start() the writer is a pipeline of two threads:
 * while the store thread writes batch N (store_rows()), the writer reads
 * and prepares batch N+1, then collects N (acknowledges its entries) and
 * hands N+1 over.  One after the other, Redis reads, decoding and the
 * PostgreSQL transaction were the ceiling of a whole consumer.
 *
 * Order does not matter: the upsert's WHERE keeps the newest of what is
 * stored and what arrives (see row_cmp()), whichever writer sends it.
 *
 * Failure handling: entries are acknowledged only after their rows are
 * committed.  Redis failing mid-step: the rows already read are written
 * (unacknowledged) before they are forgotten, in case Redis lost them.  PostgreSQL unreachable: nothing is acknowledged, what was
 * carried is forgotten, and the next step reads this writer's pending
 * entries again (id 0) before new ones.  PostgreSQL refuses the batch (a
 * constraint, bad data): the batch is retried without idempotency keys
 * (their unique index may hold a key of another run), then row by row, and
 * rows that still fail are dropped and counted, so one bad row never blocks
 * history.
 *
 * JOB_HISTORY=failures: rows are written only for runs that did not
 * succeed at once.  After the reduction, a queued or running row is
 * dropped (acknowledged, not written: a success may be recorded by another
 * writer before this one, and nothing would take the row back), and so is
 * a success at the first attempt of a run that was not retried from the
 * dead list (no row of it can exist: nothing before its end was written).
 * Any other success (after a failed attempt, or of a retried dead run)
 * goes through the upsert, which then only updates a row that exists
 * (failures_filter), so a run that failed keeps its row with its final
 * state.  The carry has nothing to wait for then.
 *
 * Rejected: a write per run from the consumer (a PostgreSQL round trip on
 * the hot path, and history lost when the consumer dies between the two
 * writes); COPY straight into job_runs (a row that exists already, which
 * cannot be known for sure without asking, aborts the whole COPY); a single
 * elected writer (the groups already share the work, and any writer may
 * stop at any time).
 */
#include "history.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "db.h"
#include "jrmetrics.h"
#include "jsoncheck.h"
#include "log.h"
#include "session.h"
#include "rconn.h"
#include "rentry.h"
#include "revent.h"
#include "run.h"
#include "util.h"

#define RUNS_COUNT 1000      /* jr:runs entries per read, at least */
#define RUNS_COUNT_MAX 8000  /* ... and at most (as many as the events just read; the
				reply's array of entries stays under 64 KiB, whose free
				would make glibc consolidate every small free chunk) */
#define EVENTS_COUNT 64      /* jr:events entries per read (each up to 256 events) */
#define RECLAIM_EVERY_MS 5000
#define WCACHE_SLOTS (1u << 16)   /* ids written lately, and their states */
#define CARRY_MS 1000             /* a queued row waits at most this for its run's end */
#define CARRY_MAX 8192            /* ... and at most this many wait */

/* ------------------------------------------------------------------ */
/* rows                                                                */
/* ------------------------------------------------------------------ */

struct hrow {
	char id[RUN_ID_LEN + 1];
	char *job, *org, *payload, *error, *consumer, *idem;   /* owned */
	const char *src, *status;                              /* static */
	int retried;               /* source 'retry': bypasses the cache */
	int rank, eff;             /* row_rank(), row_eff_attempts(): set by rows_reduce() */
	char reid[48];             /* the jr:runs entry it came from, acked once written; "" */
	int stored;                /* the upsert took it (store_rows()) */
	int64_t carried_ms;        /* mono ms it was first held back (carry), or 0 */
	int attempts, max;
	int64_t runat, enq, started, finished, duration;       /* -1: NULL */
};

struct rows {
	struct hrow *v;
	size_t n, cap;
};

static struct hrow *row_new(struct rows *rs)
{
	if (rs->n == rs->cap) {
		rs->cap = rs->cap ? rs->cap * 2 : 256;
		rs->v = xrealloc(rs->v, rs->cap * sizeof *rs->v);
	}
	struct hrow *r = &rs->v[rs->n++];
	memset(r, 0, sizeof *r);
	r->runat = r->enq = r->started = r->finished = r->duration = -1;
	return r;
}

static void row_free(struct hrow *r)
{
	free(r->job);
	free(r->org);
	free(r->payload);
	free(r->error);
	free(r->consumer);
	free(r->idem);
}

static void rows_reset(struct rows *rs)
{
	for (size_t i = 0; i < rs->n; i++)
		row_free(&rs->v[i]);
	rs->n = 0;
}

/* The order of a run's states, as both this file and the upsert's WHERE
 * compute it: (effective attempts, started_at, rank), where
 *   queued, never started (enqueued, retry waiting)   rank 0
 *   running (a claim at started_at)                   rank 1
 *   queued after a start (deferred: the attempt was   rank 2, attempts + 1
 *     given back, so it ranks with the claim it ends)
 *   succeeded, failed (will retry), dead              rank 3
 * A later claim of the same attempt number (after a deferral, or by
 * another consumer) has a later started_at, so it is newer. */
static int row_rank(const struct hrow *r)
{
	if (!strcmp(r->status, "queued"))
		return r->started < 0 ? 0 : 2;
	if (!strcmp(r->status, "running"))
		return 1;
	return 3;
}

static int row_eff_attempts(const struct hrow *r)
{
	return r->attempts + (row_rank(r) == 2);
}

/* By id, then age (rank and eff precomputed). */
static int row_cmp(const void *pa, const void *pb)
{
	const struct hrow *a = pa, *b = pb;
	int c = strcmp(a->id, b->id);
	if (c)
		return c;
	if (a->eff != b->eff)
		return a->eff < b->eff ? -1 : 1;
	int64_t sa = a->started < 0 ? 0 : a->started, sb_ = b->started < 0 ? 0 : b->started;
	if (sa != sb_)
		return sa < sb_ ? -1 : 1;
	return a->rank - b->rank;
}

/* Entry ids to acknowledge, per stream. */
struct acks {
	struct rargv runs, events;
};

/* Keeps the newest row per id (sorted by id, then age).  The jr:runs entry
 * of a dropped row goes with the row that replaces it, or to ack when that
 * row has its own. */
static void rows_reduce(struct rows *rs, struct acks *ack)
{
	for (size_t i = 0; i < rs->n; i++) {
		rs->v[i].rank = row_rank(&rs->v[i]);
		rs->v[i].eff = row_eff_attempts(&rs->v[i]);
	}
	if (rs->n < 2)
		return;
	qsort(rs->v, rs->n, sizeof *rs->v, row_cmp);
	size_t w = 0;
	for (size_t i = 0; i < rs->n; i++) {
		if (i + 1 < rs->n && !strcmp(rs->v[i].id, rs->v[i + 1].id)) {
			/* the later one is newer; keep a payload the newer lacks */
			if (!rs->v[i + 1].payload) {
				rs->v[i + 1].payload = rs->v[i].payload;
				rs->v[i].payload = NULL;
			}
			if (rs->v[i].reid[0] && !rs->v[i + 1].reid[0])
				memcpy(rs->v[i + 1].reid, rs->v[i].reid, sizeof rs->v[i].reid);
			else if (rs->v[i].reid[0])
				rargv_addcopy(&ack->runs, rs->v[i].reid, strlen(rs->v[i].reid));
			row_free(&rs->v[i]);
			continue;
		}
		rs->v[w++] = rs->v[i];
	}
	rs->n = w;
}

/* ------------------------------------------------------------------ */
/* the written-ids cache                                               */
/* ------------------------------------------------------------------ */

/* What this writer committed lately: a direct-mapped table of 128-bit id
 * fingerprints and the state (row_cmp's order key) each id was written in.
 * A row older than what is stored would be refused by the upsert's WHERE:
 * it is not sent at all (the queued entry of a run whose end was recorded
 * first, the common case when jr:runs is read behind jr:events).  A slot is
 * overwritten by the next id that maps to it, so a miss only means "not
 * known", and the row takes the upsert, which is always correct.  Rows only
 * move forward, except when the API retries a dead run (its row becomes
 * queued again): rows of source 'retry' bypass the cache. */
struct wkey {
	int32_t eff, rank;
	int64_t started;
};

struct wslot {
	uint64_t h1, h2;     /* 0, 0: empty */
	struct wkey k;
};

static void id_hash(const char *id, uint64_t *h1, uint64_t *h2)
{
	uint64_t a = 0xcbf29ce484222325ull, b = 0x84222325cbf29ce4ull;
	for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
		a = (a ^ *p) * 0x100000001b3ull;
		b = (b ^ *p) * 0x100000001b3ull + (b >> 29);
	}
	*h1 = a | 1;   /* never 0: 0, 0 marks an empty slot */
	*h2 = b;
}

static struct wkey row_key(const struct hrow *r)
{
	struct wkey k = { r->eff, r->rank, r->started < 0 ? 0 : r->started };
	return k;
}

static int wkey_cmp(struct wkey a, struct wkey b)
{
	if (a.eff != b.eff)
		return a.eff < b.eff ? -1 : 1;
	if (a.started != b.started)
		return a.started < b.started ? -1 : 1;
	return a.rank - b.rank;
}

/* The slot of id if it holds id, else NULL. */
static const struct wslot *wcache_get(const struct wslot *c, const char *id)
{
	if (!c)
		return NULL;
	uint64_t h1, h2;
	id_hash(id, &h1, &h2);
	const struct wslot *s = &c[h1 & (WCACHE_SLOTS - 1)];
	return s->h1 == h1 && s->h2 == h2 ? s : NULL;
}

static void wcache_put(struct wslot **c, const struct hrow *r)
{
	if (!*c)
		*c = xcalloc(WCACHE_SLOTS, sizeof **c);
	uint64_t h1, h2;
	id_hash(r->id, &h1, &h2);
	struct wslot *s = &(*c)[h1 & (WCACHE_SLOTS - 1)];
	struct wkey k = row_key(r);
	if (s->h1 == h1 && s->h2 == h2 && wkey_cmp(s->k, k) > 0)
		return;   /* an older state arrived late: what is stored is newer */
	s->h1 = h1;
	s->h2 = h2;
	s->k = k;
}

/* A jr:runs entry -> a queued row (0), or nothing (1: a tick, malformed). */
static int row_from_run(struct rows *rs, const redisReply *fields, const char *entry_id,
			int default_max)
{
	struct run r;
	int64_t slot;
	char err[RUN_MAX_ERROR_LEN + 1];
	if (rentry_is_fed(fields))
		return 1;   /* recorded when its original was read (fair.lua moves only those) */
	if (rentry_parse(fields, entry_id, default_max, &r, &slot, err, sizeof err) || r.is_tick) {
		run_clear(&r);
		return 1;   /* malformed ones reach job_runs through their dead event */
	}
	struct hrow *h = row_new(rs);
	memcpy(h->id, r.id, sizeof h->id);
	h->job = r.job;
	h->org = r.org_id;
	h->payload = r.payload;
	h->idem = r.idempotency_key;
	r.job = r.org_id = r.payload = r.idempotency_key = NULL;
	h->src = run_source_name(r.source);
	h->status = "queued";
	h->attempts = r.attempt;
	h->max = r.max_attempts;
	h->enq = r.enqueued_at_ms;
	if (r.run_at_ms > 0)
		h->runat = r.run_at_ms;   /* a delayed run: job_runs shows it delayed */
	run_clear(&r);
	return 0;
}

/* revent_fn: one decoded event becomes a row (its strings move in). */
static void row_from_event(struct revent *e, void *arg)
{
	struct hrow *h = row_new(arg);
	memcpy(h->id, e->id, sizeof h->id);
	h->job = e->job;
	h->org = e->org;
	h->payload = e->payload;
	h->error = e->error;
	h->consumer = e->consumer;
	h->idem = e->idem;
	h->src = e->src;
	h->status = e->status;
	h->attempts = e->attempt;
	h->max = e->max;
	h->runat = e->runat;
	h->enq = e->enq;
	h->started = e->started;
	h->finished = e->finished;
	h->duration = e->duration;
}

/* A jr:events entry -> rows (revent_decode()).  Returns how many. */
static size_t rows_from_events(struct rows *rs, const redisReply *fields, size_t *bad)
{
	return revent_decode(fields, row_from_event, rs, bad);
}

size_t history_decode_entry(const redisReply *fields, size_t *bad)
{
	struct rows rs = { 0 };
	*bad = 0;
	size_t n = 0;
	if (fields && fields->type == REDIS_REPLY_ARRAY)
		n = rows_from_events(&rs, fields, bad);
	for (size_t i = 0; i < rs.n; i++) {
		const struct hrow *h = &rs.v[i];
		/* what the rows promise the upsert */
		if (!run_id_valid(h->id, strlen(h->id)) || !h->job || !h->status ||
		    (h->payload && !rentry_json_valid(h->payload, strlen(h->payload), NULL, 0)) ||
		    (h->org && !text_valid(h->org, strlen(h->org), RUN_MAX_ORG_LEN)) ||
		    (h->error && strlen(h->error) > RUN_MAX_ERROR_LEN))
			abort();
	}
	rows_reset(&rs);
	free(rs.v);
	return n;
}

/* ------------------------------------------------------------------ */
/* the upsert                                                          */
/* ------------------------------------------------------------------ */

#define UPSERT_INSERT \
	"insert into job_runs as j (id, job, org_id, payload, source, status, attempts," \
	" max_attempts, run_at, enqueued_at, started_at, finished_at, duration_ms, error," \
	" consumer, transport, idempotency_key, updated_at, redis_gen)" \
	" select u.id, u.job, u.org, coalesce(u.payload::jsonb, '{}'::jsonb), u.src, u.status," \
	" u.attempts, u.max, to_timestamp(coalesce(u.runat, u.enq, (extract(epoch from now()) * 1000)::bigint) / 1000.0)," \
	" coalesce(to_timestamp(u.enq / 1000.0), now()), to_timestamp(u.started / 1000.0)," \
	" to_timestamp(u.finished / 1000.0), u.duration, u.error, u.consumer, 'redis', u.idem, now()," \
	" nullif(current_setting('jobrunner.redis_gen', true), '')"
#define UPSERT_CONFLICT \
	" on conflict (id) do update set" \
	" job = excluded.job, org_id = excluded.org_id," \
	" payload = case when excluded.payload = '{}'::jsonb then j.payload else excluded.payload end," \
	" source = excluded.source, status = excluded.status, attempts = excluded.attempts," \
	" max_attempts = excluded.max_attempts, run_at = excluded.run_at," \
	" enqueued_at = least(j.enqueued_at, excluded.enqueued_at)," \
	" started_at = coalesce(excluded.started_at, j.started_at)," \
	" finished_at = excluded.finished_at, duration_ms = excluded.duration_ms," \
	" error = excluded.error, consumer = coalesce(excluded.consumer, j.consumer)," \
	" idempotency_key = coalesce(j.idempotency_key, excluded.idempotency_key)," \
	" updated_at = now(), redis_gen = excluded.redis_gen" \
	/* a run carried by the PostgreSQL queue is its own record: a copy of it \
	 * that reached Redis too (an enqueue whose reply was lost) never \
	 * overwrites it */ \
	" where j.transport = 'redis' and (excluded.attempts + (excluded.status = 'queued' and excluded.started_at is not null)::int," \
	"        coalesce(excluded.started_at, '-infinity')," \
	"        case when excluded.status = 'queued' then" \
	"             case when excluded.started_at is null then 0 else 2 end" \
	"             when excluded.status = 'running' then 1 else 3 end)" \
	" >= (j.attempts + (j.status = 'queued' and j.started_at is not null)::int," \
	"     coalesce(j.started_at, '-infinity')," \
	"     case when j.status = 'queued' then case when j.started_at is null then 0 else 2 end" \
	"          when j.status = 'running' then 1 else 3 end)"

/* JOB_HISTORY=failures: a success only updates the row of a run that has
 * one (see the top of the file). */
#define FAILURES_FILTER \
	" where u.status <> 'succeeded' or exists (select 1 from job_runs x where x.id = u.id)"

/* Rows as arrays, one per column: for the fallbacks (without idempotency
 * keys, then row by row). */
#define UPSERT_FROM_ARRAYS \
	" from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]," \
	" $7::int[], $8::int[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[]," \
	" $13::int[], $14::text[], $15::text[], $16::text[])" \
	" as u(id, job, org, payload, src, status, attempts, max, runat, enq, started, finished," \
	" duration, error, consumer, idem)"
static const char upsert_sql[] = UPSERT_INSERT UPSERT_FROM_ARRAYS UPSERT_CONFLICT;
static const char upsert_failures_sql[] =
	UPSERT_INSERT UPSERT_FROM_ARRAYS FAILURES_FILTER UPSERT_CONFLICT;

/* Rows COPYed into the stage first: the way of big batches, as parsing a
 * COPY stream costs PostgreSQL a fraction of parsing array literals. */
#define STAGE "jr_history_stage"
static const char stage_create_sql[] =
	"create temp table if not exists " STAGE " (id text, job text, org text, payload text,"
	" src text, status text, attempts int, max int, runat bigint, enq bigint, started bigint,"
	" finished bigint, duration int, error text, consumer text, idem text)"
	" on commit delete rows";
/* Behind a transaction pooler (db.pooled) the session may change between
 * transactions: the stage is made inside the batch's transaction and
 * dropped at its commit, so no temporary table is left on a pooled server
 * connection. */
static const char stage_create_tx_sql[] =
	"create temp table " STAGE " (id text, job text, org text, payload text,"
	" src text, status text, attempts int, max int, runat bigint, enq bigint, started bigint,"
	" finished bigint, duration int, error text, consumer text, idem text)"
	" on commit drop";
static const char stage_copy_sql[] = "copy " STAGE " from stdin";
static const char stage_upsert_sql[] = UPSERT_INSERT " from " STAGE " u" UPSERT_CONFLICT;

static const char stage_upsert_failures_sql[] =
	UPSERT_INSERT " from " STAGE " u" FAILURES_FILTER UPSERT_CONFLICT;

enum { P_ID, P_JOB, P_ORG, P_PAYLOAD, P_SRC, P_STATUS, P_ATTEMPTS, P_MAX, P_RUNAT, P_ENQ,
       P_STARTED, P_FINISHED, P_DURATION, P_ERROR, P_CONSUMER, P_IDEM, P_COUNT };

/* One element of an array literal: the comma, then db_array_add(). */
static void arr_text(struct strbuf *sb, const char *s)
{
	if (sb->len > 1)
		sb_add(sb, ",", 1);
	db_array_add(sb, s);
}

static void arr_int(struct strbuf *sb, int64_t v, int null_if_negative)
{
	if (sb->len > 1)
		sb_add(sb, ",", 1);
	if (null_if_negative && v < 0)
		sb_adds(sb, "NULL");
	else
		sb_addf(sb, "%lld", (long long)v);
}

/* Writes rows [from, to) in one statement: 0, or -1 (db errstr).  failures:
 * JOB_HISTORY=failures (FAILURES_FILTER). */
static int upsert(struct db *db, const struct hrow *v, size_t from, size_t to, int with_idem,
		  int failures)
{
	struct strbuf sb[P_COUNT];
	for (int k = 0; k < P_COUNT; k++) {
		sb[k] = (struct strbuf)STRBUF_INIT;
		sb_add(&sb[k], "{", 1);
	}
	for (size_t i = from; i < to; i++) {
		const struct hrow *r = &v[i];
		arr_text(&sb[P_ID], r->id);
		arr_text(&sb[P_JOB], r->job);
		arr_text(&sb[P_ORG], r->org);
		arr_text(&sb[P_PAYLOAD], r->payload);
		arr_text(&sb[P_SRC], r->src);
		arr_text(&sb[P_STATUS], r->status);
		arr_int(&sb[P_ATTEMPTS], r->attempts, 0);
		arr_int(&sb[P_MAX], r->max, 0);
		arr_int(&sb[P_RUNAT], r->runat, 1);
		arr_int(&sb[P_ENQ], r->enq, 1);
		arr_int(&sb[P_STARTED], r->started, 1);
		arr_int(&sb[P_FINISHED], r->finished, 1);
		arr_int(&sb[P_DURATION], r->duration, 1);
		arr_text(&sb[P_ERROR], r->error);
		arr_text(&sb[P_CONSUMER], r->consumer);
		arr_text(&sb[P_IDEM], with_idem ? r->idem : NULL);
	}
	const char *params[P_COUNT];
	for (int k = 0; k < P_COUNT; k++) {
		sb_add(&sb[k], "}", 1);
		params[k] = sb[k].buf;
	}
	int rv = db_exec(db, failures ? upsert_failures_sql : upsert_sql, P_COUNT, params);
	for (int k = 0; k < P_COUNT; k++)
		sb_release(&sb[k]);
	return rv;
}

/* ------------------------------------------------------------------ */
/* COPY into the stage                                                 */
/* ------------------------------------------------------------------ */

/* A text field of COPY's text format: \N for NULL, backslash escapes. */
static void copy_text(struct strbuf *sb, const char *s)
{
	if (!s) {
		sb_add(sb, "\\N\t", 3);
		return;
	}
	const char *run = s;
	for (const char *p = s; *p; p++) {
		const char *esc = NULL;
		switch (*p) {
		case '\\': esc = "\\\\"; break;
		case '\t': esc = "\\t"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		default: continue;
		}
		sb_add(sb, run, (size_t)(p - run));
		sb_add(sb, esc, 2);
		run = p + 1;
	}
	sb_adds(sb, run);
	sb_add(sb, "\t", 1);
}

static void copy_int(struct strbuf *sb, int64_t v, int null_if_negative)
{
	if (null_if_negative && v < 0) {
		sb_add(sb, "\\N\t", 3);
		return;
	}
	char buf[24];
	int n = snprintf(buf, sizeof buf, "%lld\t", (long long)v);
	sb_add(sb, buf, (size_t)n);
}

/* Rows [from, to) as lines of the stage's COPY text format. */
static void copy_rows(struct strbuf *sb, const struct hrow *v, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++) {
		const struct hrow *r = &v[i];
		copy_text(sb, r->id);
		copy_text(sb, r->job);
		copy_text(sb, r->org);
		copy_text(sb, r->payload);
		copy_text(sb, r->src);
		copy_text(sb, r->status);
		copy_int(sb, r->attempts, 0);
		copy_int(sb, r->max, 0);
		copy_int(sb, r->runat, 1);
		copy_int(sb, r->enq, 1);
		copy_int(sb, r->started, 1);
		copy_int(sb, r->finished, 1);
		copy_int(sb, r->duration, 1);
		copy_text(sb, r->error);
		copy_text(sb, r->consumer);
		copy_text(sb, r->idem);
		sb->buf[sb->len - 1] = '\n';   /* the last field ends the line */
	}
}

/* ------------------------------------------------------------------ */
/* the writer                                                          */
/* ------------------------------------------------------------------ */

struct history {
	const struct config *cfg;
	char consumer[128];
	struct rconn rc;
	uint64_t groups_at;
	struct db db;
	int pending;              /* read own pending entries (id 0) first */
	int64_t next_reclaim_ms;
	struct rows rows;
	struct rows carry;        /* queued rows waiting for their run's end */
	struct wslot *wcache;     /* NULL until the first write */
	uint64_t stage_for;       /* db.reconnects + 1 when the stage was made, or 0 */
	char gen[40];             /* Redis's generation marker as last seen, or "" */
	uint64_t gen_set_for;     /* db.reconnects + 1 when the session was told gen */
	struct history_counts counts;
	int failures;             /* JOB_HISTORY=failures */
	struct strbuf copy;       /* COPY text of a batch, kept from one batch to the next */
	char errstr[256];
	/* The store thread (history_thread_start(); none for history_step()
	 * called alone): PostgreSQL writes batch N while this thread reads and
	 * prepares batch N+1 from Redis.  It owns db, copy, stage_for and the
	 * batch in flight while fl.busy && !fl.done; the rest is this thread's. */
	int async;
	pthread_t stid;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int st_stop;
	struct flight {
		int busy;             /* handed over, not collected yet */
		int done;             /* stored (or failed): ready to collect */
		struct rows rows;
		struct acks ack;      /* its entries, acknowledged once it is stored */
		int rv;               /* 0, or -1: PostgreSQL unreachable */
		uint64_t stored, dropped;
		char errstr[256];
	} fl;
};

/* A batch's COPY text is kept for the next batch up to this size: a buffer
 * made and freed per batch (a megabyte for 8,000 rows) cost page faults
 * and, freed, a consolidation of every small free chunk of the process. */
#define COPY_KEEP_BYTES (4u << 20)

static void store_stop(struct history *h);

static int h_fail(struct history *h, const char *what, const char *detail)
{
	snprintf(h->errstr, sizeof h->errstr, "history: %s: %.200s", what, detail);
	return -1;
}

static int ensure_groups(struct history *h)
{
	if (rconn_connect(&h->rc))
		return h_fail(h, "redis", h->rc.errstr);
	if (h->groups_at == h->rc.connects)
		return 0;
	if (rentry_create_groups(&h->rc))
		return h_fail(h, "redis", h->rc.errstr);
	h->groups_at = h->rc.connects;
	h->pending = 1;
	return 0;
}

int history_open(const struct config *cfg, const char *consumer, struct history **out,
		 char *err, size_t errlen)
{
	*out = NULL;
	if (!cfg->redis_url || !cfg->database_url) {
		snprintf(err, errlen, "history needs REDIS_URL and DATABASE_URL");
		return -1;
	}
	if (!consumer || !*consumer || strlen(consumer) >= 128) {
		snprintf(err, errlen, "history: consumer name missing or over 127 bytes");
		return -1;
	}
	struct history *h = xcalloc(1, sizeof *h);
	h->cfg = cfg;
	h->failures = cfg->job_history && !strcmp(cfg->job_history, "failures");
	snprintf(h->consumer, sizeof h->consumer, "%s", consumer);
	if (rconn_init(&h->rc, cfg->redis_url, NULL, 0, err, errlen)) {
		free(h);
		return -1;
	}
	rconn_set_name(&h->rc, "history", consumer);
	session_db_init(&h->db, cfg, "jobrunner-history", 30000);
	h->pending = 1;   /* Redis is reached on the first step, not here */
	*out = h;
	return 0;
}

void history_close(struct history *h)
{
	if (!h)
		return;
	store_stop(h);
	rconn_release(&h->rc);
	db_release(&h->db);
	rows_reset(&h->rows);
	free(h->rows.v);
	rows_reset(&h->carry);
	free(h->carry.v);
	free(h->wcache);
	sb_release(&h->copy);
	free(h);
}

const char *history_errstr(const struct history *h) { return h->errstr; }

void history_get_counts(const struct history *h, struct history_counts *out) { *out = h->counts; }

/* Takes over entries of writers that died (idle past HISTORY_RECLAIM_IDLE_MS):
 * XAUTOCLAIM JUSTID, so they become this writer's pending entries. */
static int reclaim(struct history *h)
{
	static const char *const keys[] = { RENTRY_RUNS, RENTRY_EVENTS };
	char idle[24];
	snprintf(idle, sizeof idle, "%d", HISTORY_RECLAIM_IDLE_MS);
	for (size_t i = 0; i < JR_ARRAY_LEN(keys); i++) {
		const char *av[] = { "XAUTOCLAIM", keys[i], RENTRY_HISTORY_GROUP, h->consumer, idle,
				     "0-0", "COUNT", "1000", "JUSTID" };
		redisReply *r = rconn_cmd(&h->rc, 9, av, NULL);
		if (!r)
			return h_fail(h, "redis", h->rc.errstr);
		if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
		    r->element[1]->type == REDIS_REPLY_ARRAY && r->element[1]->elements)
			h->pending = 1;
		rconn_free(r);
	}
	h->next_reclaim_ms = mono_ms() + RECLAIM_EVERY_MS;
	return 0;
}

/* Turns one XREADGROUP stream reply ([key, [[id, fields]...]]) into rows. */
static void take(struct history *h, const redisReply *s, struct acks *ack, size_t *nentries)
{
	if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 || s->element[0]->type != REDIS_REPLY_STRING ||
	    s->element[1]->type != REDIS_REPLY_ARRAY)
		return;
	int is_events = !strcmp(s->element[0]->str, RENTRY_EVENTS);
	const redisReply *list = s->element[1];
	for (size_t i = 0; i < list->elements; i++) {
		const redisReply *e = list->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING)
			continue;
		const char *id = e->element[0]->str;
		size_t idlen = e->element[0]->len;
		(*nentries)++;
		if (is_events) {
			rargv_addcopy(&ack->events, id, idlen);
			size_t bad = 0;
			if (e->element[1]->type == REDIS_REPLY_ARRAY)   /* else deleted */
				rows_from_events(&h->rows, e->element[1], &bad);
			h->counts.dropped += bad;
			continue;
		}
		int made = e->element[1]->type == REDIS_REPLY_ARRAY &&
			   row_from_run(&h->rows, e->element[1], id, (int)h->cfg->job_max_attempts) == 0;
		if (made && idlen < sizeof h->rows.v[0].reid)
			memcpy(h->rows.v[h->rows.n - 1].reid, id, idlen + 1);   /* acked when written */
		else
			rargv_addcopy(&ack->runs, id, idlen);   /* deleted, a tick, malformed */
	}
}

/* One XREADGROUP of key from id `from` (">" or "0"): entries into h->rows
 * and ack.  0 or -1. */
static int read_one(struct history *h, const char *key, int count, const char *from,
		    struct acks *ack, size_t *nentries)
{
	char c[16];
	snprintf(c, sizeof c, "%d", count);
	const char *av[] = { "XREADGROUP", "GROUP", RENTRY_HISTORY_GROUP, h->consumer, "COUNT", c,
			     "STREAMS", key, from };
	redisReply *r = rconn_cmd(&h->rc, 9, av, NULL);
	if (!r) {
		if (strstr(h->rc.errstr, "NOGROUP"))
			h->groups_at = 0;
		return h_fail(h, "redis", h->rc.errstr);
	}
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1)
		take(h, r->element[0], ack, nentries);
	rconn_free(r);
	return 0;
}

/* Reads a batch into h->rows and ack; 0 or -1.  Events first, then as many
 * runs as there were ends of attempts (at least RUNS_COUNT): when the writer is
 * behind, a run's queued entry and its end then tend to fall into the same
 * batch and become one row, and a queued entry read after its end is
 * dropped by the cache instead of sent. */
static int read_batch(struct history *h, int64_t block_ms, struct acks *ack, size_t *nentries)
{
	const char *from = h->pending ? "0" : ">";
	size_t rows_before = h->rows.n;
	if (read_one(h, RENTRY_EVENTS, EVENTS_COUNT, from, ack, nentries))
		return -1;
	size_t ev = 0;   /* runs that finished an attempt (not the running events) */
	for (size_t i = rows_before; i < h->rows.n; i++)
		ev += strcmp(h->rows.v[i].status, "running") != 0;
	int runs_count = ev < RUNS_COUNT ? RUNS_COUNT : ev > RUNS_COUNT_MAX ? RUNS_COUNT_MAX : (int)ev;
	if (read_one(h, RENTRY_RUNS, runs_count, from, ack, nentries))
		return -1;
	if (h->pending) {
		if (*nentries == 0)
			h->pending = 0;   /* caught up: new entries from now on */
		return 0;
	}
	if (*nentries == 0 && block_ms > 0) {
		char c2[16], blk[24];
		if (block_ms > RCONN_MAX_BLOCK_MS)
			block_ms = RCONN_MAX_BLOCK_MS;
		snprintf(c2, sizeof c2, "%d", EVENTS_COUNT);
		snprintf(blk, sizeof blk, "%lld", (long long)block_ms);
		const char *a3[] = { "XREADGROUP", "GROUP", RENTRY_HISTORY_GROUP, h->consumer, "COUNT", c2,
				     "BLOCK", blk, "STREAMS", RENTRY_RUNS, RENTRY_EVENTS, ">", ">" };
		redisReply *r = rconn_cmd(&h->rc, 13, a3, NULL);
		if (!r) {
			if (strstr(h->rc.errstr, "NOGROUP"))
				h->groups_at = 0;
			return h_fail(h, "redis", h->rc.errstr);
		}
		for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
			take(h, r->element[i], ack, nentries);
		rconn_free(r);
	}
	return 0;
}

/* Keeps the rows for which drop() says 0; the others are freed, their
 * jr:runs entries acknowledged, and counted in *dropped. */
static void rows_filter(struct history *h, struct acks *ack,
			int (*drop)(struct history *h, struct hrow *r), uint64_t *dropped)
{
	struct rows *rs = &h->rows;
	size_t w = 0;
	for (size_t i = 0; i < rs->n; i++) {
		struct hrow *r = &rs->v[i];
		if (drop(h, r)) {
			if (r->reid[0])
				rargv_addcopy(&ack->runs, r->reid, strlen(r->reid));
			row_free(r);
			(*dropped)++;
			continue;
		}
		rs->v[w++] = *r;
	}
	rs->n = w;
}

/* Rows older than what this writer stored (the upsert would refuse them;
 * their jr:runs entries are done). */
static int row_stale(struct history *h, struct hrow *r)
{
	const struct wslot *slot = wcache_get(h->wcache, r->id);
	/* a retried dead run: the API moved its row back to queued, so what
	 * this writer stored before says nothing; the upsert decides */
	r->retried = !strcmp(r->src, run_source_name(RUN_SRC_RETRY));
	return slot && !r->retried && wkey_cmp(slot->k, row_key(r)) > 0;
}

/* JOB_HISTORY=failures: the rows that are not written (see the top of the
 * file).  A dropped success is remembered in the written-ids cache, so that
 * its queued entry read later is dropped as stale without a look. */
static int row_unrecorded(struct history *h, struct hrow *r)
{
	int succeeded = !strcmp(r->status, run_status_name(RUN_SUCCEEDED));
	int first = r->attempts <= 1 && !r->retried;
	if (!strcmp(r->status, run_status_name(RUN_QUEUED)) ||
	    !strcmp(r->status, run_status_name(RUN_RUNNING)) || (succeeded && first)) {
		if (succeeded)
			wcache_put(&h->wcache, r);
		return 1;
	}
	return 0;
}

/* The carry: while runs are finishing (allow), a queued row just read from
 * jr:runs waits in memory, unacknowledged, for up to CARRY_MS, so that it
 * meets its run's end and both become one row.  At most CARRY_MAX wait;
 * the rest are written now.  What waits is read again from Redis if this
 * process dies (the entries are pending) or a step fails (pending re-read). */
static void rows_hold(struct history *h, int allow)
{
	struct rows *rs = &h->rows;
	int64_t now = mono_ms();
	size_t w = 0;
	for (size_t i = 0; i < rs->n; i++) {
		struct hrow *r = &rs->v[i];
		if (allow && r->reid[0] && r->rank == 0 && !r->retried && h->carry.n < CARRY_MAX &&
		    (r->carried_ms == 0 || now - r->carried_ms < CARRY_MS)) {
			if (!r->carried_ms)
				r->carried_ms = now;
			*row_new(&h->carry) = *r;   /* owns its strings now */
			h->counts.carried++;
			continue;
		}
		rs->v[w++] = *r;
	}
	rs->n = w;
}

/* The jr:runs entries of rows [from, to) join ack. */
static void ack_rows(const struct rows *rs, size_t from, size_t to, struct acks *ack)
{
	for (size_t i = from; i < to; i++)
		if (rs->v[i].reid[0])
			rargv_addcopy(&ack->runs, rs->v[i].reid, strlen(rs->v[i].reid));
}

/* All rows in one transaction: COPY into the stage (a temporary table of
 * this connection, emptied at commit), then the upsert from it.  0, or -1
 * (rolled back; db.conn NULL when PostgreSQL is unreachable). */
static int write_staged(struct history *h, const struct rows *rs)
{
	struct db *db = &h->db;
	if (db_connect(db))
		return -1;
	if (!db->pooled && h->stage_for != db->reconnects + 1) {
		if (db_exec(db, stage_create_sql, 0, NULL))
			return -1;
		h->stage_for = db->reconnects + 1;
	}
	if (db_exec(db, "begin", 0, NULL))
		return -1;
	if (db->pooled && db_exec(db, stage_create_tx_sql, 0, NULL)) {
		if (db->conn)
			db_exec(db, "rollback", 0, NULL);
		return -1;
	}
	struct strbuf *sb = &h->copy;
	sb_reset(sb);
	copy_rows(sb, rs->v, 0, rs->n);
	int rv = db_copy_in(db, stage_copy_sql, sb->buf, sb->len);
	if (sb->cap > COPY_KEEP_BYTES)
		sb_release(sb);
	if (!rv)
		rv = db_exec(db, h->failures ? stage_upsert_failures_sql : stage_upsert_sql, 0, NULL);
	if (!rv)
		rv = db_exec(db, "commit", 0, NULL);
	if (rv && db->conn) {
		char keep[sizeof db->errstr];
		memcpy(keep, db->errstr, sizeof keep);
		db_exec(db, "rollback", 0, NULL);
		memcpy(db->errstr, keep, sizeof keep);
	}
	return rv;
}

/* What of h->rows is written now: reduced to one row per run, without
 * the stale and (JOB_HISTORY=failures) unrecorded rows, the carry held
 * back.  The jr:runs entries of what was dropped join ack. */
static void prepare_rows(struct history *h, struct acks *ack, int allow_carry)
{
	rows_reduce(&h->rows, ack);
	rows_filter(h, ack, row_stale, &h->counts.skipped);
	if (h->failures)
		rows_filter(h, ack, row_unrecorded, &h->counts.unrecorded);
	rows_hold(h, allow_carry);
}

/* Upserts rs (marking each row the upsert took as stored): 0, or -1 when
 * PostgreSQL is unreachable (nothing lost: the caller does not
 * acknowledge).  Rows that PostgreSQL refuses even one by one are counted
 * in *dropped and described in errbuf.  Uses only h's PostgreSQL side
 * (db, copy, stage_for, failures): the store thread calls it. */
static int store_rows(struct history *h, struct rows *rs, uint64_t *dropped, char *errbuf,
		      size_t errlen)
{
	if (!rs->n)
		return 0;
	int done = write_staged(h, rs) == 0;
	/* refused (a constraint, bad data): without idempotency keys, then row by row */
	if (!done && h->db.conn && upsert(&h->db, rs->v, 0, rs->n, 0, h->failures) == 0)
		done = 1;
	if (!done && !h->db.conn) {
		snprintf(errbuf, errlen, "history: postgres: %.200s", h->db.errstr);
		return -1;
	}
	for (size_t i = 0; i < rs->n; i++) {
		if (done || upsert(&h->db, rs->v, i, i + 1, 0, h->failures) == 0) {
			rs->v[i].stored = 1;
			continue;
		}
		if (!h->db.conn) {
			snprintf(errbuf, errlen, "history: postgres: %.200s", h->db.errstr);
			return -1;
		}
		(*dropped)++;
		snprintf(errbuf, errlen, "history: row refused: %.200s", h->db.errstr);
	}
	return 0;
}

/* After store_rows() succeeded: the stored rows into the written-ids
 * cache, and every row's jr:runs entry into ack. */
static void finish_rows(struct history *h, const struct rows *rs, struct acks *ack)
{
	for (size_t i = 0; i < rs->n; i++) {
		if (rs->v[i].stored) {
			h->counts.rows++;
			wcache_put(&h->wcache, &rs->v[i]);
		}
	}
	ack_rows(rs, 0, rs->n, ack);
}

/* Writes h->rows (what is not carried), in this thread: 0, or -1 when
 * PostgreSQL is unreachable (nothing lost: the caller does not
 * acknowledge).  The jr:runs entries of what was written or dropped join
 * ack. */
static int write_rows(struct history *h, struct acks *ack, int allow_carry)
{
	prepare_rows(h, ack, allow_carry);
	char why[256] = "";
	uint64_t dropped = 0;
	int rv = store_rows(h, &h->rows, &dropped, why, sizeof why);
	h->counts.dropped += dropped;
	if (why[0])
		snprintf(h->errstr, sizeof h->errstr, "%s", why);
	if (rv)
		return -1;
	finish_rows(h, &h->rows, ack);
	return 0;
}

/* XACK of ids in key, 1000 a command, pipelined.  0 or -1. */
static int ack_all(struct history *h, struct rargv *ids, const char *key)
{
	size_t sent = 0;
	int rv = 0;
	for (size_t off = 0; off < ids->n; off += 1000) {
		size_t k = ids->n - off < 1000 ? ids->n - off : 1000;
		struct rargv a = { 0 };
		rargv_addrefs(&a, "XACK");
		rargv_addrefs(&a, key);
		rargv_addrefs(&a, RENTRY_HISTORY_GROUP);
		for (size_t i = off; i < off + k; i++)
			rargv_addref(&a, ids->argv[i], ids->lens[i]);
		rargv_finish(&a);
		rv = rconn_append(&h->rc, (int)a.n, a.argv, a.lens);
		rargv_release(&a);
		if (rv)
			return h_fail(h, "redis", h->rc.errstr);
		sent++;
	}
	for (; sent > 0; sent--) {
		redisReply *r = rconn_get(&h->rc);
		if (!r)
			return h_fail(h, "redis", h->rc.errstr);
		if (r->type == REDIS_REPLY_ERROR && !rv) {
			rconn_reply_error(&h->rc, r);
			rv = h_fail(h, "redis", h->rc.errstr);
		}
		rconn_free(r);
	}
	return rv;
}

/* Redis failed in the middle of a step: the rows already read (the carry
 * among them) are written now, best effort and unacknowledged, instead of
 * waiting to be read again: if Redis lost its data they cannot be, and they
 * are what the data-loss check below requeues.  A Redis that comes back
 * whole gives them again, and the upsert takes them twice harmlessly. */
static void flush_on_redis_failure(struct history *h)
{
	if (!h->rows.n)
		return;
	char keep[sizeof h->errstr];
	memcpy(keep, h->errstr, sizeof keep);
	struct acks ack;
	memset(&ack, 0, sizeof ack);
	write_rows(h, &ack, 0);
	rargv_release(&ack.runs);
	rargv_release(&ack.events);
	memcpy(h->errstr, keep, sizeof keep);
}

/* Redis data loss.  Redis keeps a random generation marker (jr:gen; the
 * first writer to find none makes one) and PostgreSQL the last one seen
 * (redis_generation); every row this writer upserts carries the marker of
 * the connection its entries were read on (job_runs.redis_gen, through the
 * session setting jobrunner.redis_gen).  A marker that differs from the
 * one this writer saw before, or from PostgreSQL's, means Redis lost its
 * data: the runs that the record shows unfinished (queued, failed waiting
 * for a retry, running) on another generation are moved to the PostgreSQL
 * queue.  Each run is moved once: the move changes its transport, and no
 * history row overwrites a run carried by PostgreSQL.  Every writer that
 * sees the change runs the move after writing what it had read from the
 * lost Redis, so a slow writer's late rows are caught by its own move.
 * Checked at every step (one GET), so a FLUSHALL is seen as well as a
 * restart.  What is lost anyway: runs accepted by Redis and not yet
 * recorded by a writer (docs/guarantees.md gives the window). */
static const char requeue_sql[] =
	"update job_runs set transport = 'pg', status = 'queued', run_at = now(), consumer = null,"
	"       lease_until = null, started_at = null, updated_at = now()"
	" where transport = 'redis' and status in ('queued','failed','running')"
	"   and redis_gen is distinct from $1";

/* The marker in Redis (made when there is none) into gen.  0 or -1. */
static int read_generation(struct history *h, char gen[40])
{
	redisReply *r = rconn_cmdf(&h->rc, "GET %s", RENTRY_GEN);
	if (r && r->type == REDIS_REPLY_NIL) {
		char fresh[40];
		rconn_free(r);
		snprintf(fresh, sizeof fresh, "%016llx%016llx", (unsigned long long)rand_u64(),
			 (unsigned long long)rand_u64());
		r = rconn_cmdf(&h->rc, "SET %s %s NX", RENTRY_GEN, fresh);
		if (r)
			rconn_free(r);
		r = r ? rconn_cmdf(&h->rc, "GET %s", RENTRY_GEN) : NULL;
	}
	if (!r)
		return h_fail(h, "redis", h->rc.errstr);
	if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len >= sizeof h->gen) {
		rconn_free(r);
		return h_fail(h, "redis", "unexpected generation marker " RENTRY_GEN);
	}
	memcpy(gen, r->str, r->len + 1);
	rconn_free(r);
	return 0;
}

/* PostgreSQL's side of the marker gen (the store thread idle): the move
 * of a lost Redis's runs, and the session setting.  0 or -1. */
static int settle_generation(struct history *h, const char *gen)
{
	struct db *db = &h->db;
	if (!strcmp(gen, h->gen) && h->gen_set_for == db->reconnects + 1 && db->conn)
		return 0;
	if (db_connect(db))
		return h_fail(h, "postgres", db->errstr);
	const char *p[1] = { gen };
	if (strcmp(gen, h->gen)) {
		PGresult *s = db_query(db, "select gen from redis_generation where id = 'jr'", 0, NULL);
		if (!s)
			return h_fail(h, "postgres", db->errstr);
		int lost = (h->gen[0] != '\0') ||
			   (PQntuples(s) == 1 && strcmp(PQgetvalue(s, 0, 0), gen));
		PQclear(s);
		if (lost) {
			PGresult *u = db_query(db, requeue_sql, 1, p);
			if (!u)
				return h_fail(h, "postgres", db->errstr);
			const char *n = PQcmdTuples(u);
			LOGF(LOG_WARN, "redis_data_loss", "Redis lost its data (new generation marker): "
			     "unfinished runs of the record moved to the PostgreSQL queue",
			     LF_S("generation", gen), LF_I("requeued", n && *n ? atoll(n) : 0));
			PQclear(u);
		}
		if (db_exec(db, "insert into redis_generation (id, gen) values ('jr', $1)"
				" on conflict (id) do update set gen = excluded.gen, updated_at = now()"
				" where redis_generation.gen <> excluded.gen", 1, p))
			return h_fail(h, "postgres", db->errstr);
		memcpy(h->gen, gen, sizeof h->gen);
	}
	if (db_exec(db, "select set_config('jobrunner.redis_gen', $1, false)", 1, p))
		return h_fail(h, "postgres", db->errstr);
	h->gen_set_for = db->reconnects + 1;
	return 0;
}

static int check_generation(struct history *h)
{
	char gen[sizeof h->gen];
	return read_generation(h, gen) || settle_generation(h, gen) ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* the store thread                                                    */
/* ------------------------------------------------------------------ */

static void *store_main(void *arg)
{
	struct history *h = arg;
	struct flight *f = &h->fl;
	pthread_mutex_lock(&h->mu);
	for (;;) {
		while (!h->st_stop && !(f->busy && !f->done))
			pthread_cond_wait(&h->cv, &h->mu);
		if (!(f->busy && !f->done))
			break;   /* stopping, nothing in flight */
		pthread_mutex_unlock(&h->mu);
		f->errstr[0] = '\0';
		f->dropped = 0;
		f->rv = store_rows(h, &f->rows, &f->dropped, f->errstr, sizeof f->errstr);
		pthread_mutex_lock(&h->mu);
		f->done = 1;
		pthread_cond_broadcast(&h->cv);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* Acknowledges ack's entries and counts them.  0 or -1. */
static int ack_batch(struct history *h, struct acks *ack)
{
	rargv_finish(&ack->runs);
	rargv_finish(&ack->events);
	int rv = ack_all(h, &ack->runs, RENTRY_RUNS);
	if (!rv)
		rv = ack_all(h, &ack->events, RENTRY_EVENTS);
	if (!rv) {
		h->counts.entries += ack->runs.n + ack->events.n;
		h->counts.batches++;
	}
	return rv;
}

/* Waits for the batch in flight, if any, and settles it: stored, its
 * entries are acknowledged; PostgreSQL unreachable, nothing is, the carry
 * is forgotten and the next step reads this writer's pending entries
 * again.  0, or -1 with errstr.  The store thread is idle after it. */
static int collect(struct history *h)
{
	struct flight *f = &h->fl;
	if (!f->busy)
		return 0;
	pthread_mutex_lock(&h->mu);
	while (!f->done)
		pthread_cond_wait(&h->cv, &h->mu);
	f->busy = f->done = 0;
	pthread_mutex_unlock(&h->mu);
	h->counts.dropped += f->dropped;
	if (f->errstr[0])
		snprintf(h->errstr, sizeof h->errstr, "%s", f->errstr);
	int rv = f->rv;
	if (!rv) {
		finish_rows(h, &f->rows, &f->ack);
		rv = ack_batch(h, &f->ack);
	} else {
		h->pending = 1;
		rows_reset(&h->carry);
	}
	rows_reset(&f->rows);
	rargv_release(&f->ack.runs);
	rargv_release(&f->ack.events);
	return rv;
}

/* Hands h->rows (prepared) and ack over to the store thread. */
static void hand_over(struct history *h, struct acks *ack)
{
	struct flight *f = &h->fl;
	struct rows swap = f->rows;   /* empty: collect() left it so, with its array */
	f->rows = h->rows;
	h->rows = swap;
	f->ack = *ack;
	memset(ack, 0, sizeof *ack);
	pthread_mutex_lock(&h->mu);
	f->busy = 1;
	f->done = 0;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

/* Starts the store thread: 0 or -1. */
static int store_start(struct history *h)
{
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	if (pthread_create(&h->stid, NULL, store_main, h)) {
		pthread_mutex_destroy(&h->mu);
		pthread_cond_destroy(&h->cv);
		return -1;
	}
	h->async = 1;
	return 0;
}

int history_pipeline(struct history *h)
{
	return h->async ? 0 : store_start(h);
}

/* Settles what is in flight and stops the store thread. */
static void store_stop(struct history *h)
{
	if (!h->async)
		return;
	collect(h);
	pthread_mutex_lock(&h->mu);
	h->st_stop = 1;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->stid, NULL);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h->fl.rows.v);
	h->async = 0;
}

/* What waited in the carry joins this step's rows; a step with rows in
 * hand waits at most CARRY_MS / 10 for new entries (*block_ms). */
static void join_carry(struct history *h, int64_t *block_ms)
{
	for (size_t i = 0; i < h->carry.n; i++)
		*row_new(&h->rows) = h->carry.v[i];
	h->carry.n = 0;
	if (h->rows.n && *block_ms > CARRY_MS / 10)
		*block_ms = CARRY_MS / 10;
}

/* The step with the store thread: batch N+1 is read and prepared while
 * PostgreSQL stores batch N; then N is collected (acknowledged) and N+1
 * handed over.  The marker's PostgreSQL side waits for the store thread
 * to be idle, as every write of this thread to the database does. */
static int step_async(struct history *h, int64_t block_ms, struct acks *ack)
{
	char gen[sizeof h->gen];
	if (read_generation(h, gen))
		return -2;
	uint64_t conn = h->rc.connects;   /* entries of this step come from one Redis */
	if (mono_ms() >= h->next_reclaim_ms && reclaim(h))
		return -2;
	if (h->pending) {
		/* this writer's pending entries are read again: not those in flight */
		if (collect(h))
			return -1;
		rows_reset(&h->carry);
	}
	join_carry(h, &block_ms);
	if (h->fl.busy)
		block_ms = 0;   /* no wait for new entries while a batch waits for its acks */
	size_t nentries = 0;
	if (read_batch(h, block_ms, ack, &nentries))
		return -2;
	if (h->rc.connects != conn) {
		h_fail(h, "redis", "reconnected during the step");   /* generation unknown */
		return -2;
	}
	if (nentries || h->rows.n)
		prepare_rows(h, ack, block_ms > 0 && ack->events.n > 0);
	if (collect(h)) {
		rows_reset(&h->rows);   /* unacknowledged: read again with the pending entries */
		return -1;
	}
	if (settle_generation(h, gen))
		return -1;
	if (h->rows.n || ack->runs.n || ack->events.n)
		hand_over(h, ack);
	return 0;
}

int history_step(struct history *h, int64_t block_ms, size_t *written)
{
	*written = 0;
	h->errstr[0] = '\0';
	uint64_t rows_before = h->counts.rows;
	struct acks ack;
	memset(&ack, 0, sizeof ack);
	int rv = 0;
	if (ensure_groups(h))
		goto failed;
	if (h->async) {
		rv = step_async(h, block_ms, &ack);
		if (rv == -2)
			goto failed;   /* Redis */
		if (rv)
			h->pending = 1;
		goto out;
	}
	if (check_generation(h))
		goto failed;
	uint64_t conn = h->rc.connects;   /* entries of this step come from one Redis */
	if (mono_ms() >= h->next_reclaim_ms && reclaim(h))
		goto failed;
	if (h->pending)
		rows_reset(&h->carry);   /* pending entries are read again from Redis */
	join_carry(h, &block_ms);
	size_t nentries = 0;
	rv = read_batch(h, block_ms, &ack, &nentries);
	if (!rv && h->rc.connects != conn)
		rv = h_fail(h, "redis", "reconnected during the step");   /* generation unknown */
	if (rv) {
		h->pending = 1;
		flush_on_redis_failure(h);
	} else if (nentries || h->rows.n) {
		rv = write_rows(h, &ack, block_ms > 0 && ack.events.n > 0);
		if (rv) {
			h->pending = 1;   /* read them again once PostgreSQL is back */
			rows_reset(&h->carry);
		} else {
			rv = ack_batch(h, &ack);
		}
	}
out:
	*written = (size_t)(h->counts.rows - rows_before);
	rows_reset(&h->rows);
	rargv_release(&ack.runs);
	rargv_release(&ack.events);
	return rv;
failed:
	collect(h);   /* the store thread idle: this thread writes now */
	for (size_t i = 0; i < h->carry.n; i++)
		*row_new(&h->rows) = h->carry.v[i];
	h->carry.n = 0;
	flush_on_redis_failure(h);
	*written = (size_t)(h->counts.rows - rows_before);
	rows_reset(&h->rows);
	rargv_release(&ack.runs);
	rargv_release(&ack.events);
	h->pending = 1;
	return -1;
}

/* ------------------------------------------------------------------ */
/* the thread                                                          */
/* ------------------------------------------------------------------ */

struct history_thread {
	pthread_t tid;
	struct history *h;
	atomic_int stop;
	_Atomic int64_t stop_deadline_ms;   /* mono ms */
};

static void *history_main(void *arg)
{
	struct history_thread *t = arg;
	int64_t backoff_ms = 200, next_log_ms = 0;
	uint64_t dropped_logged = 0;
	for (;;) {
		int stopping = atomic_load_explicit(&t->stop, memory_order_acquire);
		if (stopping && mono_ms() >= atomic_load_explicit(&t->stop_deadline_ms, memory_order_relaxed))
			break;
		size_t written = 0;
		struct history_counts before, c;
		history_get_counts(t->h, &before);
		int rv = history_step(t->h, stopping ? 0 : 1000, &written);
		history_get_counts(t->h, &c);
		jrm_history(c.rows - before.rows, c.skipped - before.skipped, c.dropped - before.dropped);
		if (c.dropped > dropped_logged) {
			LOGF(LOG_ERROR, "history_rows_dropped",
			     "history rows dropped (refused by PostgreSQL, or events that cannot be decoded)",
			     LF_I("rows", (int64_t)(c.dropped - dropped_logged)),
			     LF_S("error", history_errstr(t->h)));
			dropped_logged = c.dropped;
		}
		if (rv == 0) {
			backoff_ms = 200;
			if (stopping && c.entries == before.entries)
				break;   /* caught up: nothing left to read */
			continue;
		}
		if (mono_ms() >= next_log_ms) {
			LOGF(LOG_WARN, "history_write_failed", "run history not written yet; retrying",
			     LF_S("error", history_errstr(t->h)));
			next_log_ms = mono_ms() + 30000;
		}
		if (stopping)
			break;
		for (int64_t slept = 0; slept < backoff_ms && !atomic_load_explicit(&t->stop, memory_order_acquire);
		     slept += 50)
			sleep_ms(50);
		backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
	}
	struct history_counts c;
	history_get_counts(t->h, &c);
	LOGF(LOG_INFO, "history_stopped", "history writer stopped",
	     LF_I("rows", (int64_t)c.rows),
	     LF_I("skipped", (int64_t)c.skipped), LF_I("carried", (int64_t)c.carried),
	     LF_I("dropped", (int64_t)c.dropped),
	     LF_I("entries", (int64_t)c.entries), LF_I("batches", (int64_t)c.batches));
	return NULL;
}

int history_thread_start(const struct config *cfg, const char *consumer,
			 struct history_thread **out, char *err, size_t errlen)
{
	*out = NULL;
	struct history_thread *t = xcalloc(1, sizeof *t);
	if (history_open(cfg, consumer, &t->h, err, errlen)) {
		free(t);
		return -1;
	}
	if (history_pipeline(t->h)) {
		snprintf(err, errlen, "history: cannot start thread");
		history_close(t->h);
		free(t);
		return -1;
	}
	if (pthread_create(&t->tid, NULL, history_main, t)) {
		snprintf(err, errlen, "history: cannot start thread");
		history_close(t->h);
		free(t);
		return -1;
	}
	*out = t;
	return 0;
}

void history_thread_stop(struct history_thread *t, int64_t timeout_ms)
{
	if (!t)
		return;
	atomic_store_explicit(&t->stop_deadline_ms, mono_ms() + timeout_ms, memory_order_relaxed);
	atomic_store_explicit(&t->stop, 1, memory_order_release);
	pthread_join(t->tid, NULL);
	history_close(t->h);
	free(t);
}
