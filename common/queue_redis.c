/* queue_redis.c -- the Redis Streams transport of queue.h.
 *
 * Keys (prefix RENTRY_PREFIX "jr:", see rentry.h and docs/protocol.md):
 *
 *   jr:runs        stream of runs and ticks.  Group jr:workers: the
 *                  consumers compete for entries (XREADGROUP).  Group
 *                  jr:history: the history writer records queued runs.
 *   jr:delayed     ZSET of runs waiting for a time (retries, deferrals,
 *                  runs enqueued with run_at): score = due ms, member =
 *                  the entry's fields as a JSON object.
 *   jr:events      stream of finished attempts (succeeded, failed, dead,
 *                  deferred): one entry per completed batch, v=1 n=<count>
 *                  e=<JSON array of events>; read by the history writer
 *                  (history.c, group jr:history) and written to job_runs.
 *   jr:tick:<slot> dedupe key of one tick slot (SET NX PX).
 *   jr:idem:<job>:<key>  first run id of an idempotency key (24 h).
 *
 * Lifecycle of an entry, with the function behind each step:
 *
 *   XADD (enqueue, tick) ─▶ jr:runs ─ XREADGROUP > (claim) ─▶ pending, owned by C,
 *        ▲                                                      fence = delivery count
 *        │ promote (claim, every PROMOTE_MS)                    │   │
 *   jr:delayed ◀── S_COMPLETE kind 'd' (failed: retry / defer) ─┤   │ XAUTOCLAIM after lease
 *                                                               │   │ (claim, S_RECLAIM):
 *   jr:events ◀── S_COMPLETE: XACK + event (succeeded/dead) ────┘   └▶ owned by C', fence+1
 *
 * Invariants:
 * - An entry is acknowledged only by S_COMPLETE, in the same script that
 *   records its outcome (event, delayed member): a result is never lost
 *   between two commands, and a retry never exists twice.
 * - Fencing: S_COMPLETE and S_EXTEND act only if XPENDING still shows the
 *   entry owned by this consumer with the delivery count seen at claim
 *   (run.fence).  A consumer that paused past its lease finds the entry
 *   reclaimed (new owner or count) and its result is dropped ("fenced").
 *   extend() re-claims its own entries with XCLAIM ... JUSTID, which resets
 *   the idle time without counting a delivery.
 * - Attempts: attempt on claim = entry.attempt + delivery count, so an
 *   attempt whose consumer died counts; a run whose consumers keep dying
 *   (poison) goes dead instead of looping.
 * - Trimming (S_TRIM) never removes an entry that is pending in, or not yet
 *   delivered to, the jr:workers group; jr:history's backlog is kept too,
 *   except above REDIS_STREAM_MAX_LEN (hard cap: history loses entries
 *   before work is lost).
 * - A malformed entry is acknowledged with a dead event and never returned.
 * - Restart: entries of this consumer name last delivered before this
 *   process started belong to its previous incarnation and are taken back
 *   at once (S_OWN); entries delivered since (sibling threads may share the
 *   name) are never touched before their lease expires.
 *
 * Speed: claims read COUNT max entries in one XREADGROUP; all outcomes of
 * a batch go in one EVALSHA; enqueues are pipelined XADDs.  Housekeeping
 * (promote, reclaim, trim, consumer GC) rides on claim() at fixed
 * intervals, so an idle consumer blocks at most PROMOTE_MS at a time.
 *
 * Rejected: a Lua script for the whole claim (XREADGROUP cannot block in a
 * script, and polling costs latency or CPU); XADD MAXLEN ~ (drops entries
 * that are still pending); re-reading "own pending" with XREADGROUP id 0
 * (with a name shared by threads it would re-deliver, and re-count, the
 * entries that siblings are running); one jr:events entry per run (one
 * XADD per batch is ~2x faster and the writer reads batches anyway).
 */
#include "queue_redis.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "config.h"
#include "log.h"
#include "lua_gen.h"
#include "orglimit.h"
#include "rconn.h"
#include "rentry.h"
#include "revent.h"
#include "run.h"
#include "util.h"

#define PROMOTE_MS 200          /* delayed -> stream at most this late */
#define PROMOTE_BATCH 256
#define TRIM_MS 1000
#define GC_MS 60000
#define COMPLETE_CHUNK 256      /* runs per S_COMPLETE call */
#define ENQUEUE_CHUNK 512       /* runs per pipeline */
#define IDEM_TTL_S 86400
#define TRIM_CAP_STEP 10000     /* entries dropped per call by the hard cap */
#define FAIR_IDLE_MS 20         /* lanes empty: look for a second group this often */
#define FAIR_THRESHOLD 64       /* waiting entries above which a second group starts lanes */
#define FAIR_MOVE 2000          /* entries fair.lua moves into lanes per call */
#define FAIR_SAMPLE 64          /* newest arrivals fair.lua looks at while the lanes are off */

/* ------------------------------------------------------------------ */
/* Lua scripts (loaded when missing at a connect, run with EVALSHA)     */
/* ------------------------------------------------------------------ */

/* The scripts live in common/lua/<name>.lua, each with its KEYS, ARGV and
 * reply in its header comment; the build embeds them (lua_gen.h). */
enum { S_ENQ_IDEM, S_TICK, S_PROMOTE, S_COMPLETE, S_RECLAIM, S_OWN, S_EXTEND, S_TRIM, S_GC,
       S_RELEASE, S_CANCEL, S_CAUGHT_UP, S_RATE, S_FAIR, S_LOOKUP, S_COUNT };

static const struct rscript scripts[S_COUNT] = {
	[S_ENQ_IDEM] = { "enqueue_idem.lua", jr_lua_enqueue_idem, jr_lua_enqueue_idem_sha },
	[S_TICK] = { "tick.lua", jr_lua_tick, jr_lua_tick_sha },
	[S_PROMOTE] = { "promote.lua", jr_lua_promote, jr_lua_promote_sha },
	[S_COMPLETE] = { "complete.lua", jr_lua_complete, jr_lua_complete_sha },
	[S_RECLAIM] = { "reclaim.lua", jr_lua_reclaim, jr_lua_reclaim_sha },
	[S_OWN] = { "own_pending.lua", jr_lua_own_pending, jr_lua_own_pending_sha },
	[S_EXTEND] = { "extend.lua", jr_lua_extend, jr_lua_extend_sha },
	[S_TRIM] = { "trim.lua", jr_lua_trim, jr_lua_trim_sha },
	[S_GC] = { "consumer_gc.lua", jr_lua_consumer_gc, jr_lua_consumer_gc_sha },
	[S_RELEASE] = { "release.lua", jr_lua_release, jr_lua_release_sha },
	[S_CANCEL] = { "cancel.lua", jr_lua_cancel, jr_lua_cancel_sha },
	[S_CAUGHT_UP] = { "caught_up.lua", jr_lua_caught_up, jr_lua_caught_up_sha },
	[S_RATE] = { "rate.lua", jr_lua_rate, jr_lua_rate_sha },
	[S_FAIR] = { "fair.lua", jr_lua_fair, jr_lua_fair_sha },
	[S_LOOKUP] = { "lookup.lua", jr_lua_lookup, jr_lua_lookup_sha },
};

/* ------------------------------------------------------------------ */
/* the process epoch                                                   */
/* ------------------------------------------------------------------ */

/* An entry of this consumer name whose last delivery is older than this
 * process (plus a margin for the clocks of two machines) was claimed by a
 * previous incarnation: claim() takes it back at once instead of waiting
 * for its lease.  Entries delivered since (to sibling threads sharing the
 * name) are never taken.  The one piece of process-wide state here. */
#define OWN_MARGIN_MS 1000
static pthread_once_t epoch_once = PTHREAD_ONCE_INIT;
static _Atomic int64_t epoch_mono_ms;

static void epoch_init(void) { atomic_store_explicit(&epoch_mono_ms, mono_ms(), memory_order_relaxed); }

static int64_t epoch_ms(void)
{
	pthread_once(&epoch_once, epoch_init);
	return atomic_load_explicit(&epoch_mono_ms, memory_order_relaxed);
}

void queue_redis_reset_epoch(void)
{
	pthread_once(&epoch_once, epoch_init);
	epoch_init();
}

/* ------------------------------------------------------------------ */
/* the handle                                                          */
/* ------------------------------------------------------------------ */

struct rqueue {
	struct queue q;          /* first: a struct queue * is a struct rqueue * */
	struct rconn rc;
	uint64_t groups_at;      /* rc.connects when the groups were last ensured */
	struct backoff backoff;
	int64_t lease_ms;
	int64_t reclaim_ms;      /* how often to look for expired leases */
	int64_t max_len;
	int64_t tick_px;
	int default_max;
	int min_acks;            /* REDIS_MIN_REPLICAS_ACK: WAIT after enqueues */
	int failures;            /* JOB_HISTORY=failures: kind 's' for first-attempt successes */
	uint64_t acks_seen_at;   /* rc.connects when enough replicas were in sync */

	int own_done;            /* own entries of a previous incarnation taken back */
	char reclaim_cursor[48];
	int64_t next_promote_ms, next_reclaim_ms, next_trim_ms, next_gc_ms;  /* mono */
	int fair;                /* FAIRNESS: fair.lua before each claim */

	struct rargv av;         /* reused for every command: no per-run allocations */
	struct strbuf scratch;
	struct queue_redis_shared *shared;   /* housekeeping shared with sibling handles */
	/* the last claim found jr:cancel empty after its deliveries: its runs
	 * (n of them, the first's entry id) have no cancel request (rq_cancelled()) */
	size_t no_cancel_n;
	char no_cancel_first[48];
};

static struct rqueue *rq_of(struct queue *q) { return (struct rqueue *)q; }

/* Copies the connection's error into the queue and maps its code. */
static int rq_fail(struct rqueue *rq)
{
	int code = rq->rc.err == RCONN_EREPLY ? QUEUE_EINTERNAL : QUEUE_EDOWN;
	snprintf(rq->q.errstr, sizeof rq->q.errstr, "%s",
		 rq->rc.errstr[0] ? rq->rc.errstr : "redis: unknown error");
	rq->q.err = code;
	return code;
}

static int rq_failf(struct rqueue *rq, int code, const char *fmt, ...) JR_PRINTF(3, 4);
static int rq_failf(struct rqueue *rq, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rq->q.errstr, sizeof rq->q.errstr, fmt, ap);
	va_end(ap);
	rq->q.err = code;
	return code;
}

static int rq_ok(struct rqueue *rq)
{
	rq->q.err = 0;
	rq->q.errstr[0] = '\0';
	return 0;
}

/* Creates the groups (rentry_create_groups()) once per connection. */
static int ensure_groups(struct rqueue *rq)
{
	if (rconn_connect(&rq->rc))
		return rq_fail(rq);
	if (rq->groups_at == rq->rc.connects)
		return 0;
	if (rentry_create_groups(&rq->rc))
		return rq_fail(rq);
	rq->groups_at = rq->rc.connects;
	return 0;
}

/* A call failed with NOGROUP (the stream was deleted or Redis restarted
 * empty without us reconnecting): create the groups again next time. */
static void check_nogroup(struct rqueue *rq)
{
	if (strstr(rq->rc.errstr, "NOGROUP"))
		rq->groups_at = 0;
}

/* ------------------------------------------------------------------ */
/* enqueue                                                             */
/* ------------------------------------------------------------------ */

static int check_run(struct rqueue *rq, const struct run *r)
{
	if (r->is_tick)
		return rq_failf(rq, QUEUE_EINVAL, "enqueue: ticks are added with queue_redis_tick");
	if (!r->job || !*r->job || strlen(r->job) > RUN_MAX_JOB_LEN)
		return rq_failf(rq, QUEUE_EINVAL, "enqueue: missing or too long job name");
	if (r->org_id && strlen(r->org_id) > RUN_MAX_ORG_LEN)
		return rq_failf(rq, QUEUE_EINVAL, "enqueue: orgId over %d bytes", RUN_MAX_ORG_LEN);
	if (r->idempotency_key && strlen(r->idempotency_key) > RUN_MAX_IDEM_LEN)
		return rq_failf(rq, QUEUE_EINVAL, "enqueue: idempotencyKey over %d bytes",
				RUN_MAX_IDEM_LEN);
	if (r->payload && strlen(r->payload) > RENTRY_MAX_PAYLOAD)
		return rq_failf(rq, QUEUE_EINVAL, "enqueue: payload over %d bytes", RENTRY_MAX_PAYLOAD);
	if (r->attempt < 0 || r->attempt > RENTRY_MAX_ATTEMPTS || r->max_attempts > RENTRY_MAX_ATTEMPTS)
		return rq_failf(rq, QUEUE_EINVAL, "enqueue: attempts out of range");
	return 0;
}

struct slice {
	size_t start, count;
	int scripted;
};

/* A connection failure after commands were sent: Redis may have applied
 * them.  Reported as QUEUE_EUNKNOWN so that nobody falls back to the other
 * transport with the same runs (they would then run twice). */
static int unknown(struct rqueue *rq)
{
	rq_fail(rq);
	if (rq->q.err == QUEUE_EDOWN)
		rq->q.err = QUEUE_EUNKNOWN;
	return rq->q.err;
}

static int enqueue_chunk(struct rqueue *rq, struct run *runs, size_t n, int64_t now)
{
	struct rargv *a = &rq->av;
	struct slice sl[ENQUEUE_CHUNK];
	rargv_reset(a);
	for (size_t i = 0; i < n; i++) {
		struct run *r = &runs[i];
		if (!r->id[0])
			run_id_new(r->id);
		if (r->max_attempts <= 0)
			r->max_attempts = rq->default_max;
		if (!r->enqueued_at_ms)
			r->enqueued_at_ms = now;
		/* a delayed run goes on the stream too, with its runat field (so
		 * the history writer records it at once); the consumer that reads
		 * it early parks it in jr:delayed (park_delayed()) */
		sl[i].start = a->n;
		sl[i].scripted = r->idempotency_key != NULL;
		if (r->idempotency_key) {
			rargv_addrefs(a, "3");
			sb_reset(&rq->scratch);
			sb_addf(&rq->scratch, "%s%s:%s", RENTRY_IDEM_KEY, r->job, r->idempotency_key);
			rargv_addcopy(a, rq->scratch.buf, rq->scratch.len);
			rargv_addrefs(a, RENTRY_RUNS);
			rargv_addrefs(a, RENTRY_DELAYED);
			rargv_addrefs(a, r->id);
			rargv_addi64(a, IDEM_TTL_S);
			rargv_addrefs(a, "0");
			rargv_addrefs(a, "");
			rentry_add_fields(a, r, r->attempt);
		} else {
			rargv_addrefs(a, "XADD");
			rargv_addrefs(a, RENTRY_RUNS);
			rargv_addrefs(a, "*");
			rentry_add_fields(a, r, r->attempt);
		}
		sl[i].count = a->n - sl[i].start;
	}
	rargv_finish(a);
	for (size_t i = 0; i < n; i++) {
		int rv = sl[i].scripted
				 ? rconn_append_evalsha(&rq->rc, S_ENQ_IDEM, (int)sl[i].count,
							a->argv + sl[i].start, a->lens + sl[i].start)
				 : rconn_append(&rq->rc, (int)sl[i].count, a->argv + sl[i].start,
						a->lens + sl[i].start);
		if (rv)
			return rq_fail(rq);
	}
	char acks[8], wait_ms[16];
	snprintf(acks, sizeof acks, "%d", rq->min_acks);
	snprintf(wait_ms, sizeof wait_ms, "%d", QUEUE_REDIS_WAIT_MS);
	const char *wait[] = { "WAIT", acks, wait_ms };
	if (rq->min_acks > 0 && rconn_append(&rq->rc, 3, wait, NULL))
		return rq_fail(rq);
	int failed = 0;
	size_t redo[ENQUEUE_CHUNK], nredo = 0;
	for (size_t i = 0; i < n; i++) {
		redisReply *r = rconn_get(&rq->rc);
		if (!r)   /* sent, no answer: applied or not?  (EDOWN: nothing left) */
			return rq->rc.err == RCONN_ELOST ? unknown(rq) : rq_fail(rq);
		if (rconn_is_error(r, "NOSCRIPT")) {
			redo[nredo++] = i;
		} else if (r->type == REDIS_REPLY_ERROR) {
			if (!failed) {
				failed = rconn_reply_error(&rq->rc, r) == RCONN_EDOWN ? QUEUE_EDOWN
										    : QUEUE_EINTERNAL;
				snprintf(rq->q.errstr, sizeof rq->q.errstr, "enqueue: %.200s", rq->rc.errstr);
			}
		} else if (sl[i].scripted && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
			   r->element[1]->type == REDIS_REPLY_STRING && r->element[1]->len <= RUN_ID_LEN) {
			memcpy(runs[i].id, r->element[1]->str, r->element[1]->len + 1);
		}
		rconn_free(r);
	}
	if (rq->min_acks > 0) {
		/* a failover to a replica that lacks them would lose accepted runs */
		redisReply *w = rconn_get(&rq->rc);
		long long got = w && w->type == REDIS_REPLY_INTEGER ? w->integer : -1;
		if (w)
			rconn_free(w);
		if (!failed && got < rq->min_acks) {
			if (!w)
				return unknown(rq);
			return rq_failf(rq, QUEUE_EUNKNOWN, "enqueue: only %lld of %d replicas confirmed "
					"the runs within %d ms (REDIS_MIN_REPLICAS_ACK); they are on the "
					"master but could be lost by a failover", got < 0 ? 0 : got,
					rq->min_acks, QUEUE_REDIS_WAIT_MS);
		}
	}
	/* after a SCRIPT FLUSH: run those again, one by one, with EVAL */
	for (size_t k = 0; k < nredo && !failed; k++) {
		size_t i = redo[k];
		redisReply *r = rconn_eval(&rq->rc, S_ENQ_IDEM, (int)sl[i].count, a->argv + sl[i].start,
					   a->lens + sl[i].start);
		if (!r)
			return rq->rc.err == RCONN_ELOST ? unknown(rq) : rq_fail(rq);
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
		    r->element[1]->type == REDIS_REPLY_STRING && r->element[1]->len <= RUN_ID_LEN)
			memcpy(runs[i].id, r->element[1]->str, r->element[1]->len + 1);
		rconn_free(r);
	}
	if (failed) {
		rq->q.err = failed;
		return failed;
	}
	return 0;
}

/* REDIS_MIN_REPLICAS_ACK: before the first enqueue of a connection (a new
 * master after a failover may have no replica yet), count the replicas in
 * sync (WAIT 0 0 answers at once).  Too few: QUEUE_EDOWN before anything
 * is sent, so the runs go to PostgreSQL instead of failing as unknown. */
static int check_replicas(struct rqueue *rq)
{
	if (rq->min_acks <= 0 || rq->acks_seen_at == rq->rc.connects)
		return 0;
	/* WAIT n 250, not WAIT 0 0: this connection has written already (the
	 * scripts it loaded, the groups), and WAIT counts the replicas that
	 * acknowledged this client's last write; WAIT 0 0 answered 0 until
	 * the replicas' next periodic acknowledgement (up to a second), and
	 * each failed check sent enqueues to PostgreSQL for a second more.
	 * A WAIT that blocks makes Redis ask the replicas for it at once. */
	char want[16];
	snprintf(want, sizeof want, "%d", rq->min_acks);
	redisReply *w = rconn_cmdf(&rq->rc, "WAIT %s 250", want);
	if (!w)
		return rq_fail(rq);
	long long got = w->type == REDIS_REPLY_INTEGER ? w->integer : 0;
	rconn_free(w);
	if (got < rq->min_acks)
		return rq_failf(rq, QUEUE_EDOWN, "enqueue: %lld replicas in sync, REDIS_MIN_REPLICAS_ACK=%d: "
				"nothing sent", got, rq->min_acks);
	rq->acks_seen_at = rq->rc.connects;
	return 0;
}

static int rq_enqueue(struct queue *q, struct run *runs, size_t n)
{
	struct rqueue *rq = rq_of(q);
	for (size_t i = 0; i < n; i++)
		if (check_run(rq, &runs[i]))
			return q->err;
	if (ensure_groups(rq) || check_replicas(rq))
		return q->err;
	int64_t now = wall_ms();
	for (size_t off = 0; off < n; off += ENQUEUE_CHUNK) {
		size_t k = n - off < ENQUEUE_CHUNK ? n - off : ENQUEUE_CHUNK;
		int rv = enqueue_chunk(rq, runs + off, k, now);
		if (rv == QUEUE_EDOWN && off > 0)
			return unknown(rq);   /* the chunks before went in: not all or nothing */
		if (rv)
			return rv;
	}
	return rq_ok(rq);
}

/* ------------------------------------------------------------------ */
/* complete (and the dead records of claim)                            */
/* ------------------------------------------------------------------ */

/* One outcome to record: the arguments of one run of S_COMPLETE. */
struct outcome {
	const struct run *r;     /* fields for the event; NULL for ack only */
	const char *handle;
	int64_t fence;
	char kind;               /* a, e, s, d, x (S_COMPLETE); r: running event only */
	const char *status;
	int attempt;
	int64_t due_ms;          /* d: when to run again */
	int64_t duration_ms;
	int64_t finished_ms;     /* the run's own end (0: the time of recording) */
	const char *error;
	int no_event;            /* d: park only (a delayed run read early) */
};

/* Appends the event of outcome o (revent.h: an element of the `e` array of
 * a jr:events entry). */
static void event_json(struct strbuf *sb, const struct rqueue *rq, const struct outcome *o,
		       int64_t now)
{
	const struct run *r = o->r;
	struct revent ev = {
		.job = r->job, .org = r->org_id,
		.payload = o->kind != 'r' ? r->payload : NULL,   /* the outcome's event carries it */
		.error = (char *)o->error, .consumer = (char *)rq->q.consumer,
		.idem = r->idempotency_key, .src = run_source_name(r->source), .status = o->status,
		.attempt = o->attempt, .max = r->max_attempts, .enq = r->enqueued_at_ms,
		.started = r->started_at_ms ? r->started_at_ms : -1,
		.finished = o->kind != 'r' ? (o->finished_ms ? o->finished_ms : now) : -1,
		.duration = o->kind != 'r' ? o->duration_ms : -1,   /* running: not finished yet */
		.runat = o->kind == 'd' ? o->due_ms : -1,
	};
	snprintf(ev.id, sizeof ev.id, "%s", r->id);
	revent_encode(sb, &ev);
}

/* Orders two stream ids ("ms-seq") numerically. */
static int id_cmp(const char *a, const char *b)
{
	unsigned long long am = strtoull(a, (char **)&a, 10), bm = strtoull(b, (char **)&b, 10);
	if (am != bm)
		return am < bm ? -1 : 1;
	unsigned long long as = *a == '-' ? strtoull(a + 1, NULL, 10) : 0;
	unsigned long long bs = *b == '-' ? strtoull(b + 1, NULL, 10) : 0;
	return as < bs ? -1 : as > bs;
}

/* Records n outcomes with S_COMPLETE; fenced[i] (may be NULL) set. */
static int record(struct rqueue *rq, const struct outcome *o, size_t n, int *fenced)
{
	int64_t now = wall_ms();
	for (size_t off = 0; off < n; off += COMPLETE_CHUNK) {
		size_t k = n - off < COMPLETE_CHUNK ? n - off : COMPLETE_CHUNK;
		struct rargv *a = &rq->av;
		rargv_reset(a);
		rargv_addrefs(a, "5");
		rargv_addrefs(a, RENTRY_RUNS);
		rargv_addrefs(a, RENTRY_EVENTS);
		rargv_addrefs(a, RENTRY_DELAYED);
		rargv_addrefs(a, RENTRY_DEAD_COUNT);
		rargv_addrefs(a, RENTRY_CANCEL);
		rargv_addrefs(a, RENTRY_GROUP);
		rargv_addrefs(a, rq->q.consumer);
		rargv_addi64(a, (int64_t)k);
		size_t lo = off, hi = off;
		for (size_t i = off + 1; i < off + k; i++) {
			if (id_cmp(o[i].handle, o[lo].handle) < 0)
				lo = i;
			if (id_cmp(o[i].handle, o[hi].handle) > 0)
				hi = i;
		}
		rargv_addrefs(a, o[lo].handle);
		rargv_addrefs(a, o[hi].handle);
		for (size_t i = off; i < off + k; i++) {
			rargv_addrefs(a, o[i].handle);
			rargv_addi64(a, o[i].fence);
			rargv_addcopy(a, &o[i].kind, 1);
			if (o[i].kind == 'd') {
				rargv_addi64(a, o[i].due_ms);
				sb_reset(&rq->scratch);
				rentry_delayed_json(&rq->scratch, o[i].r, o[i].attempt);
				rargv_addcopy(a, rq->scratch.buf, rq->scratch.len);
			} else {
				rargv_addrefs(a, "0");
				rargv_addrefs(a, "");
			}
			if (o[i].kind == 'a' || !o[i].r || o[i].no_event) {
				rargv_addrefs(a, "");
			} else {
				sb_reset(&rq->scratch);
				event_json(&rq->scratch, rq, &o[i], now);
				rargv_addcopy(a, rq->scratch.buf, rq->scratch.len);
			}
			rargv_addrefs(a, o[i].r && !o[i].r->is_tick ? o[i].r->id : "");
		}
		rargv_finish(a);
		redisReply *r = rconn_eval(&rq->rc, S_COMPLETE, (int)a->n, a->argv, a->lens);
		if (!r) {
			check_nogroup(rq);
			return rq_fail(rq);
		}
		if (r->type != REDIS_REPLY_ARRAY || r->elements != k) {
			rconn_free(r);
			return rq_failf(rq, QUEUE_EINTERNAL, "complete: unexpected reply");
		}
		for (size_t i = 0; i < k; i++)
			if (fenced)
				fenced[off + i] = r->element[i]->integer != 0;
		rconn_free(r);
	}
	return 0;
}

static int rq_complete(struct queue *q, struct run *runs, const struct run_result *res, size_t n,
		       int *fenced)
{
	struct rqueue *rq = rq_of(q);
	if (n == 0)
		return rq_ok(rq);
	if (ensure_groups(rq))
		return q->err;
	struct outcome stack_o[64];
	struct outcome *o = n <= 64 ? stack_o : xmalloc(sizeof *o * n);
	int64_t now = wall_ms();
	for (size_t i = 0; i < n; i++) {
		struct run *r = &runs[i];
		struct outcome *x = &o[i];
		memset(x, 0, sizeof *x);
		x->r = r;
		x->handle = r->handle;
		x->fence = r->fence;
		x->duration_ms = res[i].duration_ms;
		x->finished_ms = res[i].finished_at_ms;
		x->error = res[i].error;
		if (r->is_tick) {
			x->kind = 'a';
			continue;
		}
		int64_t next = 0;
		int attempt = r->attempt;
		enum run_status st = run_decide(r, &res[i], &rq->backoff, now, &next, &attempt);
		x->attempt = attempt;
		x->status = run_status_name(st);
		switch (st) {
		case RUN_SUCCEEDED:
			/* JOB_HISTORY=failures records no success at the first attempt
			 * (history.c): no event for it unless it has a cancel request */
			x->kind = rq->failures && attempt <= 1 && r->source != RUN_SRC_RETRY ? 's' : 'e';
			break;
		case RUN_CANCELLED:
			x->kind = 'c';
			break;
		case RUN_QUEUED:   /* deferral: the attempt is given back */
		case RUN_FAILED:   /* retry after backoff */
			x->kind = 'd';
			x->due_ms = next;
			break;
		default:
			x->kind = 'x';
			x->status = "dead";
			break;
		}
	}
	int rv = record(rq, o, n, fenced);
	if (o != stack_o)
		free(o);
	return rv ? rv : rq_ok(rq);
}

/* ------------------------------------------------------------------ */
/* claim                                                               */
/* ------------------------------------------------------------------ */

/* Turns one delivered entry into out (0) or a dead record (1, appended to
 * dead[] with its reason in reasons).  fields: the entry's field array. */
static int take_entry(struct rqueue *rq, const char *id, size_t idlen, const redisReply *fields,
		      int64_t fence, struct run *out, char *reason, size_t reasonlen)
{
	int64_t slot;
	int rv = rentry_parse(fields, id, rq->default_max, out, &slot, reason, reasonlen);
	if (idlen >= sizeof out->handle) {   /* cannot happen with Redis ids */
		snprintf(reason, reasonlen, "malformed entry: stream id too long");
		rv = -1;
		idlen = sizeof out->handle - 1;
	}
	memcpy(out->handle, id, idlen);
	out->handle[idlen] = '\0';
	out->fence = fence;
	if (rv) {
		/* malformed: recorded dead as of the entry's own time (its id) */
		if (!out->enqueued_at_ms)
			out->enqueued_at_ms = rentry_id_ms(out->handle);
		return 1;
	}
	out->started_at_ms = wall_ms();   /* the claim; the worker sets the run's own start */
	if (out->is_tick)
		return 0;
	out->attempt += (int)(fence > 0 ? fence : 1);
	if (out->attempt > out->max_attempts) {
		snprintf(reason, reasonlen,
			 "attempts exhausted: %d of %d (consumers lost the run while it ran)",
			 out->attempt - 1, out->max_attempts);
		out->attempt--;
		return 1;
	}
	return 0;
}

struct deadbuf {
	struct run runs[8];
	char reasons[8][RUN_MAX_ERROR_LEN + 1];
	size_t n;
};

/* Records and releases the dead records collected by a claim. */
static int flush_dead(struct rqueue *rq, struct deadbuf *d)
{
	if (!d->n)
		return 0;
	struct outcome o[8];
	for (size_t i = 0; i < d->n; i++) {
		struct run *r = &d->runs[i];
		if (!r->id[0])
			run_id_new(r->id);   /* so job_runs can list it */
		memset(&o[i], 0, sizeof o[i]);
		o[i].r = r;
		o[i].handle = r->handle;
		o[i].fence = r->fence;
		o[i].kind = 'x';
		o[i].status = "dead";
		o[i].attempt = r->attempt;
		o[i].error = d->reasons[i];
	}
	int rv = record(rq, o, d->n, NULL);
	for (size_t i = 0; i < d->n; i++)
		run_clear(&d->runs[i]);
	d->n = 0;
	return rv;
}

/* Moves a delayed run (an entry with runat in the future) from the
 * stream into jr:delayed, acknowledged in the same script (S_COMPLETE kind
 * 'd' without an event): the attempt it was given at claim is given back. */
static int park_delayed(struct rqueue *rq, const struct run *r)
{
	struct outcome o;
	memset(&o, 0, sizeof o);
	o.r = r;
	o.handle = r->handle;
	o.fence = r->fence;
	o.kind = 'd';
	o.status = "queued";
	o.attempt = r->attempt - (int)(r->fence > 0 ? r->fence : 1);
	if (o.attempt < 0)
		o.attempt = 0;
	o.due_ms = r->run_at_ms;
	o.no_event = 1;
	return record(rq, &o, 1, NULL);
}

/* Processes an array of {id, fields, deliveries} (own and reclaim scripts)
 * or of {id, fields} (XREADGROUP, fence 1) into out[*got..max); reclaimed:
 * the entries were taken over from a consumer that went silent. */
static int take_entries(struct rqueue *rq, const redisReply *arr, struct run *out, size_t max,
			size_t *got, struct deadbuf *dead, int reclaimed)
{
	for (size_t i = 0; i < arr->elements; i++) {
		const redisReply *e = arr->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
		    e->element[0]->type != REDIS_REPLY_STRING)
			continue;
		int64_t fence = 1;
		if (e->elements >= 3 && e->element[2]->type == REDIS_REPLY_INTEGER)
			fence = e->element[2]->integer;
		if (dead->n == JR_ARRAY_LEN(dead->runs) && flush_dead(rq, dead))
			return -1;
		struct run *slot = *got < max ? &out[*got] : &dead->runs[dead->n];
		int bad = take_entry(rq, e->element[0]->str, e->element[0]->len, e->element[1], fence,
				     slot, dead->reasons[dead->n], sizeof dead->reasons[0]);
		if (!bad && !slot->is_tick && slot->run_at_ms > wall_ms() && *got < max) {
			/* a delayed run read before its time: into jr:delayed */
			int prv = park_delayed(rq, slot);
			run_clear(slot);
			if (prv)
				return -1;
			continue;
		}
		if (bad) {
			if (slot != &dead->runs[dead->n]) {
				dead->runs[dead->n] = *slot;   /* move ownership */
				memset(slot, 0, sizeof *slot);
			}
			dead->n++;
		} else if (*got < max) {
			slot->reclaimed = reclaimed;
			(*got)++;
		} else {
			/* more than max came back (cannot happen: COUNT bounds it) */
			run_clear(slot);
		}
	}
	return 0;
}

static int promote(struct rqueue *rq, int64_t *moved)
{
	char now[24], lim[16];
	snprintf(now, sizeof now, "%lld", (long long)wall_ms());
	snprintf(lim, sizeof lim, "%d", PROMOTE_BATCH);
	const char *av[] = { "2", RENTRY_DELAYED, RENTRY_RUNS, now, lim };
	redisReply *r = rconn_eval(&rq->rc, S_PROMOTE, 5, av, NULL);
	if (!r)
		return rq_fail(rq);
	if (moved)
		*moved += r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
	int more = r->type == REDIS_REPLY_INTEGER && r->integer == PROMOTE_BATCH;
	rconn_free(r);
	rq->next_promote_ms = mono_ms() + (more ? 0 : PROMOTE_MS);
	return 0;
}

static int trim_stream(struct rqueue *rq, const char *key, const char *protect, int64_t *trimmed)
{
	char maxlen[24], step[16];
	snprintf(maxlen, sizeof maxlen, "%lld", (long long)rq->max_len);
	snprintf(step, sizeof step, "%d", TRIM_CAP_STEP);
	const char *av[] = { "1", key, protect, maxlen, step };
	redisReply *r = rconn_eval(&rq->rc, S_TRIM, 5, av, NULL);
	if (!r)
		return rq_fail(rq);
	if (trimmed && r->type == REDIS_REPLY_INTEGER)
		*trimmed += r->integer;
	rconn_free(r);
	return 0;
}

static int gc_consumers(struct rqueue *rq, int64_t idle_ms)
{
	char idle[24];
	snprintf(idle, sizeof idle, "%lld", (long long)idle_ms);
	static const char *const targets[][2] = {
		{ RENTRY_RUNS, RENTRY_GROUP },
		{ RENTRY_RUNS, RENTRY_HISTORY_GROUP },
		{ RENTRY_EVENTS, RENTRY_HISTORY_GROUP },
	};
	for (size_t i = 0; i < JR_ARRAY_LEN(targets); i++) {
		const char *av[] = { "1", targets[i][0], targets[i][1], idle };
		redisReply *r = rconn_eval(&rq->rc, S_GC, 4, av, NULL);
		if (!r)
			return rq_fail(rq);
		rconn_free(r);
	}
	return 0;
}

static int64_t default_gc_idle(const struct rqueue *rq)
{
	int64_t idle = 10 * rq->lease_ms;
	return idle > 600000 ? idle : 600000;
}

/* Cancel requests (score: the request's ms) live until the run's consumer
 * records it cancelled, then an hour more (score negated); one whose run
 * never came (its entry lost with a Redis that restarted empty) goes after
 * the longest delay a run may have plus a day. */
#define CANCEL_KEEP_MS ((int64_t)91 * 86400 * 1000)
#define CANCEL_DONE_KEEP_MS ((int64_t)3600 * 1000)
static int prune_cancel(struct rqueue *rq)
{
	int64_t now = wall_ms();
	redisReply *r = rconn_cmdf(&rq->rc, "ZREMRANGEBYSCORE %s 0 (%lld", RENTRY_CANCEL,
				   (long long)(now - CANCEL_KEEP_MS));
	if (!r)
		return rq_fail(rq);
	rconn_free(r);
	/* done (negative score -T): T older than an hour */
	r = rconn_cmdf(&rq->rc, "ZREMRANGEBYSCORE %s (%lld (0", RENTRY_CANCEL,
		       (long long)-(now - CANCEL_DONE_KEEP_MS));
	if (!r)
		return rq_fail(rq);
	rconn_free(r);
	return 0;
}

/* Housekeeping shared by sibling handles (queue_redis_share(): the run
 * threads of one consumer).  Promote, trim, consumer GC and the lease-expiry
 * scan are needed once per interval per process, not per handle: with 200
 * run threads, each scanning the pending list every second (XAUTOCLAIM) and
 * promoting every 200 ms cost Redis more than the runs themselves.  One
 * handle at a time holds the turn (busy; the mutex is never held across a
 * round trip): it works on the shared schedule and cursor, copied in and
 * out; the others skip the housekeeping and read the schedule only to know
 * when to wake up. */
struct queue_redis_shared {
	pthread_mutex_t mu;
	int busy;
	int64_t next_promote_ms, next_reclaim_ms, next_trim_ms, next_gc_ms;
	char reclaim_cursor[48];
};

#define SHARED_BUSY_WAIT_MS 20   /* a sibling is doing due housekeeping: look again then */

struct queue_redis_shared *queue_redis_shared_new(void)
{
	struct queue_redis_shared *s = xcalloc(1, sizeof *s);
	pthread_mutex_init(&s->mu, NULL);
	snprintf(s->reclaim_cursor, sizeof s->reclaim_cursor, "0-0");
	return s;
}

void queue_redis_shared_free(struct queue_redis_shared *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void queue_redis_share(struct queue *q, struct queue_redis_shared *s) { rq_of(q)->shared = s; }

/* Takes the housekeeping turn if free (1; always without a shared
 * schedule), and copies the shared schedule into rq either way. */
static int sched_enter(struct rqueue *rq)
{
	struct queue_redis_shared *s = rq->shared;
	if (!s)
		return 1;
	pthread_mutex_lock(&s->mu);
	int mine = !s->busy;
	s->busy = 1;
	rq->next_promote_ms = s->next_promote_ms;
	rq->next_reclaim_ms = s->next_reclaim_ms;
	rq->next_trim_ms = s->next_trim_ms;
	rq->next_gc_ms = s->next_gc_ms;
	memcpy(rq->reclaim_cursor, s->reclaim_cursor, sizeof rq->reclaim_cursor);
	pthread_mutex_unlock(&s->mu);
	return mine;
}

/* Gives the turn back with the schedule as rq left it. */
static void sched_leave(struct rqueue *rq, int mine)
{
	struct queue_redis_shared *s = rq->shared;
	if (!s || !mine)
		return;
	pthread_mutex_lock(&s->mu);
	s->next_promote_ms = rq->next_promote_ms;
	s->next_reclaim_ms = rq->next_reclaim_ms;
	s->next_trim_ms = rq->next_trim_ms;
	s->next_gc_ms = rq->next_gc_ms;
	memcpy(s->reclaim_cursor, rq->reclaim_cursor, sizeof s->reclaim_cursor);
	s->busy = 0;
	pthread_mutex_unlock(&s->mu);
}

/* Fairness across orgs (fair.lua): while the lanes are on, every claim
 * first calls the script, which moves what arrived into the lanes and feeds
 * the stream round-robin with what this claim will take; while they are
 * off, one thread of the process at a time (every FAIR_IDLE_MS) lets it
 * look at the newest arrivals, to turn the lanes on when a second group,
 * or a tick, waits behind a backlog. */
static _Atomic int fair_on;                 /* the lanes were on, last seen */
static _Atomic int64_t fair_next_ms;        /* mono: next scan while they are off */

static int fair_feed(struct rqueue *rq, size_t want)
{
	int64_t now = mono_ms();
	if (!atomic_load_explicit(&fair_on, memory_order_relaxed)) {
		int64_t next = atomic_load_explicit(&fair_next_ms, memory_order_relaxed);
		if (now < next || !atomic_compare_exchange_strong(&fair_next_ms, &next,
								   now + FAIR_IDLE_MS))
			return 0;
	}
	char w[24], th[16], most[16], sample[16];
	snprintf(w, sizeof w, "%zu", want);
	snprintf(th, sizeof th, "%d", FAIR_THRESHOLD);
	snprintf(most, sizeof most, "%d", FAIR_MOVE);
	snprintf(sample, sizeof sample, "%d", FAIR_SAMPLE);
	const char *av[] = { "3", RENTRY_RUNS, RENTRY_LANES, RENTRY_FAIR, RENTRY_GROUP, w, th, most,
			     RENTRY_LANE, RENTRY_FAIRER, sample };
	redisReply *r = rconn_eval(&rq->rc, S_FAIR, 11, av, NULL);
	if (!r) {
		check_nogroup(rq);
		return rq_fail(rq);
	}
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER &&
	    r->element[2]->type == REDIS_REPLY_INTEGER) {
		int on = r->element[0]->integer != 0;
		if (atomic_exchange_explicit(&fair_on, on, memory_order_relaxed) != on)
			LOGF(LOG_INFO, on ? "fair_lanes_on" : "fair_lanes_off",
			     on ? "org fairness: a second group waits behind a backlog; runs take turns"
				: "org fairness: the lanes are empty; the stream is FIFO again",
			     LF_I("inLanes", r->element[1]->integer), LF_I("moved", r->element[2]->integer));
	}
	rconn_free(r);
	return 0;
}

/* Housekeeping due at mono time now. */
static int housekeeping(struct rqueue *rq, int64_t now)
{
	if (now >= rq->next_promote_ms && promote(rq, NULL))
		return -1;
	if (now >= rq->next_trim_ms) {
		if (trim_stream(rq, RENTRY_RUNS, RENTRY_GROUP, NULL) ||
		    trim_stream(rq, RENTRY_EVENTS, "", NULL) || prune_cancel(rq))
			return -1;
		rq->next_trim_ms = now + TRIM_MS;
	}
	if (now >= rq->next_gc_ms) {
		if (gc_consumers(rq, default_gc_idle(rq)))
			return -1;
		rq->next_gc_ms = now + GC_MS;
	}
	return 0;
}

static int claim_own(struct rqueue *rq, struct run *out, size_t max, size_t *got,
		     struct deadbuf *dead)
{
	char count[16], idle[24];
	snprintf(count, sizeof count, "%zu", max - *got);
	snprintf(idle, sizeof idle, "%lld", (long long)(mono_ms() - epoch_ms() + OWN_MARGIN_MS));
	const char *av[] = { "1", RENTRY_RUNS, RENTRY_GROUP, rq->q.consumer, idle, count };
	redisReply *r = rconn_eval(&rq->rc, S_OWN, 6, av, NULL);
	if (!r)
		return rq_fail(rq);
	int rv = 0;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER) {
		if ((size_t)r->element[0]->integer < max - *got)
			rq->own_done = 1;
		if (r->element[1]->type == REDIS_REPLY_ARRAY)   /* left by a previous incarnation */
			rv = take_entries(rq, r->element[1], out, max, got, dead, 1);
	} else {
		rq->own_done = 1;
	}
	rconn_free(r);
	return rv ? rq->q.err : 0;
}

static int claim_reclaim(struct rqueue *rq, struct run *out, size_t max, size_t *got,
			 struct deadbuf *dead)
{
	char idle[24], count[16];
	snprintf(idle, sizeof idle, "%lld", (long long)rq->lease_ms);
	snprintf(count, sizeof count, "%zu", max - *got);
	const char *av[] = { "1", RENTRY_RUNS, RENTRY_GROUP, rq->q.consumer, idle,
			     rq->reclaim_cursor, count, "8" };
	redisReply *r = rconn_eval(&rq->rc, S_RECLAIM, 8, av, NULL);
	if (!r)
		return rq_fail(rq);
	int rv = 0;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_STRING) {
		const redisReply *cur = r->element[0];
		int wrapped = !strcmp(cur->str, "0-0");
		snprintf(rq->reclaim_cursor, sizeof rq->reclaim_cursor, "%s", wrapped ? "0-0" : cur->str);
		rq->next_reclaim_ms = mono_ms() + (wrapped ? rq->reclaim_ms : 0);
		if (r->element[1]->type == REDIS_REPLY_ARRAY)
			rv = take_entries(rq, r->element[1], out, max, got, dead, 1);
	} else {
		rq->next_reclaim_ms = mono_ms() + rq->reclaim_ms;
	}
	rconn_free(r);
	return rv ? rq->q.err : 0;
}

static int claim_new(struct rqueue *rq, struct run *out, size_t max, size_t *got,
		     int64_t block_ms, struct deadbuf *dead)
{
	char count[16], block[24];
	snprintf(count, sizeof count, "%zu", max - *got);
	snprintf(block, sizeof block, "%lld", (long long)block_ms);
	const char *av[] = { "XREADGROUP", "GROUP", RENTRY_GROUP, rq->q.consumer, "COUNT", count,
			     "BLOCK", block, "STREAMS", RENTRY_RUNS, ">" };
	int argc = 11;
	if (block_ms <= 0) {   /* no BLOCK: answer at once */
		av[6] = "STREAMS";
		av[7] = RENTRY_RUNS;
		av[8] = ">";
		argc = 9;
	}
	/* and, in the same round trip, after the delivery: are there cancel
	 * requests at all?  None: the runs delivered cannot have one (a request
	 * added from now on finds them pending, "held", and the heartbeat's
	 * look stops them), and rq_cancelled() saves its round trip */
	const char *zc[] = { "ZCARD", RENTRY_CANCEL };
	if (rconn_append(&rq->rc, argc, av, NULL) || rconn_append(&rq->rc, 2, zc, NULL))
		return rq_fail(rq);
	redisReply *r = rconn_get(&rq->rc);
	redisReply *z = r ? rconn_get(&rq->rc) : NULL;
	if (r && r->type == REDIS_REPLY_ERROR) {
		rconn_reply_error(&rq->rc, r);
		rconn_free(r);
		r = NULL;
	}
	if (!r) {
		if (z)
			rconn_free(z);
		check_nogroup(rq);
		return rq_fail(rq);
	}
	size_t before = *got;
	int rv = 0;
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1) {
		const redisReply *s = r->element[0];
		if (s->type == REDIS_REPLY_ARRAY && s->elements == 2 &&
		    s->element[1]->type == REDIS_REPLY_ARRAY)
			rv = take_entries(rq, s->element[1], out, max, got, dead, 0);
	}
	rconn_free(r);
	if (!rv && before == 0 && *got > 0 && z && z->type == REDIS_REPLY_INTEGER && z->integer == 0) {
		rq->no_cancel_n = *got;
		memcpy(rq->no_cancel_first, out[0].handle, sizeof rq->no_cancel_first);
	}
	if (z)
		rconn_free(z);
	return rv ? rq->q.err : 0;
}

/* Appends one jr:events entry with a `running` event per run, so that
 * job_runs shows the runs as running while they run.  Best effort: a
 * failure loses only that intermediate state (the outcome is written by
 * complete()). */
static int announce_started(struct rqueue *rq, const struct run *runs, size_t n)
{
	struct strbuf *sb = &rq->scratch;
	size_t count = 0;
	char num[24];
	sb_reset(sb);
	sb_add(sb, "[", 1);
	for (size_t i = 0; i < n; i++) {
		if (runs[i].is_tick)
			continue;
		struct outcome o = { .r = &runs[i], .kind = 'r', .status = "running",
				     .attempt = runs[i].attempt };
		if (count++)
			sb_add(sb, ",", 1);
		event_json(sb, rq, &o, 0);
	}
	sb_add(sb, "]", 1);
	if (!count)
		return 0;
	snprintf(num, sizeof num, "%zu", count);
	const char *av[] = { "XADD", RENTRY_EVENTS, "*", "v", RENTRY_VERSION, "n", num, "e", sb->buf };
	size_t lens[] = { 4, strlen(RENTRY_EVENTS), 1, 1, strlen(RENTRY_VERSION), 1, strlen(num), 1,
			  sb->len };
	redisReply *r = rconn_cmd(&rq->rc, 9, av, lens);
	if (!r)
		return -1;
	rconn_free(r);
	return 0;
}

static int rq_announce(struct queue *q, const struct run *r)
{
	struct rqueue *rq = rq_of(q);
	if (announce_started(rq, r, 1))   /* rconn_cmd connects if needed */
		return rq_fail(rq);
	return rq_ok(rq);
}

static int rq_claim(struct queue *q, struct run *out, size_t max, int64_t block_ms, size_t *n)
{
	struct rqueue *rq = rq_of(q);
	struct deadbuf dead;
	dead.n = 0;
	*n = 0;
	rq->no_cancel_n = 0;
	if (max == 0)
		return rq_ok(rq);
	if (ensure_groups(rq))
		return q->err;
	int64_t deadline = mono_ms() + (block_ms > 0 ? block_ms : 0);
	size_t got = 0;
	int rv = 0;
	for (;;) {
		int64_t now = mono_ms();
		int mine = sched_enter(rq);   /* 0: a sibling handle does the housekeeping now */
		if (mine && housekeeping(rq, now)) {
			sched_leave(rq, mine);
			rv = q->err;
			break;
		}
		if (!rq->own_done && (rv = claim_own(rq, out, max, &got, &dead))) {
			sched_leave(rq, mine);
			break;
		}
		if (mine && got < max && now >= rq->next_reclaim_ms &&
		    (rv = claim_reclaim(rq, out, max, &got, &dead))) {
			sched_leave(rq, mine);
			break;
		}
		sched_leave(rq, mine);
		if (got < max && rq->fair && (rv = fair_feed(rq, max - got)))
			break;
		int64_t wait = 0;
		if (got == 0 && rq->own_done) {
			/* block, but wake up for the next housekeeping */
			now = mono_ms();
			wait = deadline - now;
			int64_t next = rq->next_promote_ms < rq->next_reclaim_ms ? rq->next_promote_ms
										 : rq->next_reclaim_ms;
			if (!mine && next <= now)
				next = now + SHARED_BUSY_WAIT_MS;   /* due, and a sibling is on it */
			if (wait > next - now)
				wait = next - now;
			if (wait > RCONN_MAX_BLOCK_MS)
				wait = RCONN_MAX_BLOCK_MS;
			if (wait < 0)
				wait = 0;
		}
		if (got < max && (rv = claim_new(rq, out, max, &got, wait, &dead)))
			break;
		if (got > 0 || dead.n > 0 || mono_ms() >= deadline)
			break;
	}
	int drv = flush_dead(rq, &dead);
	if (!rv)
		rv = drv;
	if (rv) {
		/* the runs already claimed stay pending and will be reclaimed */
		for (size_t i = 0; i < got; i++)
			run_clear(&out[i]);
		return rv;
	}
	*n = got;
	return rq_ok(rq);
}

/* ------------------------------------------------------------------ */
/* extend, stats, destroy                                              */
/* ------------------------------------------------------------------ */

/* Runs script (extend.lua, release.lua: KEYS runs, ARGV group, consumer,
 * then entry id and fence pairs) over runs[off..off+k): its reply, or NULL
 * with the connection's error. */
static redisReply *eval_pairs(struct rqueue *rq, size_t script, const struct run *runs,
			      size_t off, size_t k)
{
	struct rargv *a = &rq->av;
	rargv_reset(a);
	rargv_addrefs(a, "1");
	rargv_addrefs(a, RENTRY_RUNS);
	rargv_addrefs(a, RENTRY_GROUP);
	rargv_addrefs(a, rq->q.consumer);
	for (size_t i = off; i < off + k; i++) {
		rargv_addrefs(a, runs[i].handle);
		rargv_addi64(a, runs[i].fence);
	}
	rargv_finish(a);
	redisReply *r = rconn_eval(&rq->rc, script, (int)a->n, a->argv, a->lens);
	if (!r)
		check_nogroup(rq);
	return r;
}

/* extend.lua or release.lua over all of runs, in chunks; release.lua's
 * answers go to released[] (may be NULL). */
static int call_pairs(struct queue *q, size_t script, const struct run *runs, size_t n,
		      int *released)
{
	struct rqueue *rq = rq_of(q);
	if (n == 0)
		return rq_ok(rq);
	if (ensure_groups(rq))
		return q->err;
	for (size_t off = 0; off < n; off += COMPLETE_CHUNK) {
		size_t k = n - off < COMPLETE_CHUNK ? n - off : COMPLETE_CHUNK;
		redisReply *r = eval_pairs(rq, script, runs, off, k);
		if (!r)
			return rq_fail(rq);
		int ok = script != S_RELEASE || (r->type == REDIS_REPLY_ARRAY && r->elements == k);
		for (size_t i = 0; script == S_RELEASE && released && i < k; i++)
			released[off + i] = ok && r->element[i]->type == REDIS_REPLY_INTEGER &&
					    r->element[i]->integer == 1;
		rconn_free(r);
		if (!ok)
			return rq_failf(rq, QUEUE_EINTERNAL, "release: unexpected reply");
	}
	return rq_ok(rq);
}

static int rq_extend(struct queue *q, const struct run *runs, size_t n)
{
	return call_pairs(q, S_EXTEND, runs, n, NULL);
}

static int rq_release(struct queue *q, const struct run *runs, size_t n, int *released)
{
	return call_pairs(q, S_RELEASE, runs, n, released);
}

static const redisReply *kv(const redisReply *flat, const char *key)
{
	if (!flat || flat->type != REDIS_REPLY_ARRAY)
		return NULL;
	for (size_t i = 0; i + 1 < flat->elements; i += 2)
		if (flat->element[i]->type == REDIS_REPLY_STRING && !strcmp(flat->element[i]->str, key))
			return flat->element[i + 1];
	return NULL;
}

static int64_t kv_int(const redisReply *flat, const char *key, int64_t dflt)
{
	const redisReply *v = kv(flat, key);
	if (v && v->type == REDIS_REPLY_INTEGER)
		return v->integer;
	return dflt;
}

static int rq_stats(struct queue *q, struct queue_stats *out)
{
	struct rqueue *rq = rq_of(q);
	memset(out, 0, sizeof *out);
	if (ensure_groups(rq))
		return q->err;
	const char *c1[] = { "XINFO", "GROUPS", RENTRY_RUNS };
	const char *c2[] = { "ZCARD", RENTRY_DELAYED };
	const char *c3[] = { "GET", RENTRY_DEAD_COUNT };
	const char *c4[] = { "XINFO", "CONSUMERS", RENTRY_RUNS, RENTRY_GROUP };
	const char *c5[] = { "GET", RENTRY_TICK_LAST };
	const char *c6[] = { "HGET", RENTRY_FAIR, "n" };
	if (rconn_append(&rq->rc, 3, c1, NULL) || rconn_append(&rq->rc, 2, c2, NULL) ||
	    rconn_append(&rq->rc, 2, c3, NULL) || rconn_append(&rq->rc, 4, c4, NULL) ||
	    rconn_append(&rq->rc, 2, c5, NULL) || rconn_append(&rq->rc, 3, c6, NULL))
		return rq_fail(rq);
	redisReply *r[6] = { 0 };
	int rv = 0;
	for (int i = 0; i < 6; i++) {
		r[i] = rconn_get(&rq->rc);
		if (!r[i]) {
			rv = rq_fail(rq);
			goto out;
		}
	}
	for (int i = 0; i < 6; i++)
		if (r[i]->type == REDIS_REPLY_ERROR) {
			rconn_reply_error(&rq->rc, r[i]);
			check_nogroup(rq);
			rv = rq_fail(rq);
			goto out;
		}
	for (size_t i = 0; r[0]->type == REDIS_REPLY_ARRAY && i < r[0]->elements; i++) {
		const redisReply *g = r[0]->element[i];
		const redisReply *name = kv(g, "name");
		if (!name || name->type != REDIS_REPLY_STRING || strcmp(name->str, RENTRY_GROUP))
			continue;
		out->running = kv_int(g, "pending", 0);
		out->queued = kv_int(g, "lag", -1);
		/* runs only: the one tick that may wait for delivery is not a run */
		const redisReply *last = kv(g, "last-delivered-id");
		int tick_waiting = r[4]->type == REDIS_REPLY_STRING && last &&
				   last->type == REDIS_REPLY_STRING && id_cmp(r[4]->str, last->str) > 0;
		if (out->queued < 0) {
			/* lag unknown after deletions: count what is after last-delivered */
			out->queued = 0;
			if (last && last->type == REDIS_REPLY_STRING) {
				char from[64];
				snprintf(from, sizeof from, "(%s", last->str);
				redisReply *x = rconn_cmdf(&rq->rc, "XRANGE %s %s + COUNT 100000",
							   RENTRY_RUNS, from);
				if (x && x->type == REDIS_REPLY_ARRAY)
					out->queued = (int64_t)x->elements;
				if (x)
					rconn_free(x);
			}
		}
		if (tick_waiting && out->queued > 0)
			out->queued--;
	}
	int64_t in_lanes = 0;   /* runs waiting their turn (fair.lua) */
	if (r[5]->type == REDIS_REPLY_STRING && !parse_i64(r[5]->str, 0, INT64_MAX, &in_lanes))
		out->queued += in_lanes;
	out->delayed = r[1]->type == REDIS_REPLY_INTEGER ? r[1]->integer : 0;
	if (r[2]->type == REDIS_REPLY_STRING)
		parse_i64(r[2]->str, 0, INT64_MAX, &out->dead);
	if (r[3]->type == REDIS_REPLY_ARRAY && r[3]->elements) {
		out->consumers = xcalloc(r[3]->elements, sizeof *out->consumers);
		for (size_t i = 0; i < r[3]->elements; i++) {
			const redisReply *c = r[3]->element[i];
			const redisReply *name = kv(c, "name");
			struct queue_consumer_stat *s = &out->consumers[out->nconsumers];
			if (!name || name->type != REDIS_REPLY_STRING)
				continue;
			snprintf(s->name, sizeof s->name, "%s", name->str);
			s->pending = kv_int(c, "pending", 0);
			s->idle_ms = kv_int(c, "idle", 0);
			out->nconsumers++;
		}
	}
	rv = rq_ok(rq);
out:
	for (int i = 0; i < 6; i++)
		if (r[i])
			rconn_free(r[i]);
	return rv;
}

static void rq_destroy(struct queue *q)
{
	if (!q)
		return;
	struct rqueue *rq = rq_of(q);
	rconn_release(&rq->rc);
	rargv_release(&rq->av);
	sb_release(&rq->scratch);
	free(rq);
}

/* Cancel requests among runs[0..n): one ZMSCORE over the batch (a round
 * trip per claimed batch: a request added before the entry was delivered
 * is always seen before the run starts). */
static int rq_cancelled(struct queue *q, const struct run *runs, size_t n, int *flags)
{
	struct rqueue *rq = rq_of(q);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		flags[i] = 0;
		m += !runs[i].is_tick;
	}
	/* the batch this handle just claimed, with jr:cancel empty then */
	int none = n && n == rq->no_cancel_n && !strcmp(runs[0].handle, rq->no_cancel_first);
	rq->no_cancel_n = 0;
	if (!m || none)
		return rq_ok(rq);
	struct rargv *a = &rq->av;
	rargv_reset(a);
	rargv_addrefs(a, "ZMSCORE");
	rargv_addrefs(a, RENTRY_CANCEL);
	for (size_t i = 0; i < n; i++)
		rargv_addrefs(a, runs[i].is_tick ? "" : runs[i].id);
	rargv_finish(a);
	redisReply *r = rconn_cmd(&rq->rc, (int)a->n, a->argv, a->lens);
	if (!r)
		return rq_fail(rq);
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < n && i < r->elements; i++)
		flags[i] = !runs[i].is_tick && r->element[i]->type != REDIS_REPLY_NIL;
	rconn_free(r);
	return rq_ok(rq);
}

int queue_redis_cancel_request(struct queue *q, const char *id, int on, int *held, int *added,
				int64_t history_wait_ms)
{
	struct rqueue *rq = rq_of(q);
	if (held)
		*held = 0;
	if (added)
		*added = 0;
	if (!on) {
		redisReply *r = rconn_cmdf(&rq->rc, "ZREM %s %s", RENTRY_CANCEL, id);
		if (!r)
			return rq_fail(rq);
		rconn_free(r);
		return rq_ok(rq);
	}
	if (ensure_groups(rq))
		return q->err;
	char now[24];
	snprintf(now, sizeof now, "%lld", (long long)wall_ms());
	const char *av[] = { "3", RENTRY_CANCEL, RENTRY_RUNS, RENTRY_EVENTS, id, now, RENTRY_GROUP, "10000" };
	redisReply *r = rconn_eval(&rq->rc, S_CANCEL, 8, av, NULL);
	if (!r)
		return rq_fail(rq);
	char runs_id[48] = "0-0", events_id[48] = "0-0";
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
		if (added && r->element[3]->type == REDIS_REPLY_INTEGER)
			*added = r->element[3]->integer == 1;
		if (held && r->element[0]->type == REDIS_REPLY_INTEGER)
			*held = r->element[0]->integer == 1;
		if (r->element[1]->type == REDIS_REPLY_STRING)
			snprintf(runs_id, sizeof runs_id, "%s", r->element[1]->str);
		if (r->element[2]->type == REDIS_REPLY_STRING)
			snprintf(events_id, sizeof events_id, "%s", r->element[2]->str);
	}
	rconn_free(r);
	/* wait for the history writer: job_runs then shows every state
	 * reached before the request (a state after it is cancelled) */
	int64_t end = mono_ms() + history_wait_ms;
	for (;;) {
		const char *cv[] = { "2", RENTRY_RUNS, RENTRY_EVENTS, RENTRY_HISTORY_GROUP, runs_id, events_id };
		r = rconn_eval(&rq->rc, S_CAUGHT_UP, 6, cv, NULL);
		if (!r)
			return rq_fail(rq);
		int done = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
		rconn_free(r);
		if (done || mono_ms() >= end)
			break;
		sleep_ms(20);
	}
	return rq_ok(rq);
}

int queue_redis_lookup(struct queue *q, const char *id, int64_t id_ms, const char *expect,
		       const struct strbuf *members, size_t nmembers, redisReply **out)
{
	struct rqueue *rq = rq_of(q);
	*out = NULL;
	char from[48] = "-", lo[24] = "-1", hi[24] = "-1";
	if (id_ms > QUEUE_REDIS_LOOKUP_SKEW_MS) {
		snprintf(from, sizeof from, "%lld-0", (long long)(id_ms - QUEUE_REDIS_LOOKUP_SKEW_MS));
		snprintf(lo, sizeof lo, "%lld", (long long)(id_ms - QUEUE_REDIS_LOOKUP_SKEW_MS));
		snprintf(hi, sizeof hi, "%lld", (long long)(id_ms + QUEUE_REDIS_LOOKUP_SKEW_MS));
	}
	struct rargv *a = &rq->av;
	rargv_reset(a);
	static const char *const keys[] = { "5", RENTRY_RUNS, RENTRY_EVENTS, RENTRY_DELAYED, RENTRY_LANES,
					    RENTRY_FAIR };
	for (size_t i = 0; i < JR_ARRAY_LEN(keys); i++)
		rargv_addrefs(a, keys[i]);
	rargv_addrefs(a, id);
	rargv_addrefs(a, from);
	rargv_addrefs(a, RENTRY_GROUP);
	rargv_addi64(a, QUEUE_REDIS_LOOKUP_ENTRIES);
	rargv_addi64(a, QUEUE_REDIS_LOOKUP_EVENTS);
	rargv_addi64(a, QUEUE_REDIS_LOOKUP_MEMBERS);
	rargv_addrefs(a, RENTRY_LANE);
	rargv_addrefs(a, lo);
	rargv_addrefs(a, hi);
	rargv_addi64(a, QUEUE_REDIS_LOOKUP_LANES);
	rargv_addrefs(a, expect ? expect : "");
	rargv_addi64(a, QUEUE_REDIS_LOOKUP_BYTES);
	for (size_t i = 0; expect && i < nmembers; i++)
		rargv_addref(a, members[i].buf, members[i].len);
	rargv_finish(a);
	redisReply *r = rconn_eval(&rq->rc, S_LOOKUP, (int)a->n, a->argv, a->lens);
	if (!r)
		return rq_fail(rq);
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 13) {
		rconn_free(r);
		return rq_failf(rq, QUEUE_EINTERNAL, "redis: unexpected reply to the run lookup");
	}
	*out = r;
	return rq_ok(rq);
}

static const struct queue_ops redis_ops = {
	.backend = "redis",
	.enqueue = rq_enqueue,
	.claim = rq_claim,
	.complete = rq_complete,
	.release = rq_release,
	.extend = rq_extend,
	.announce = rq_announce,
	.cancelled = rq_cancelled,
	.stats = rq_stats,
	.destroy = rq_destroy,
};

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

int queue_redis_open(const struct config *cfg, const char *consumer, struct queue **out,
		     char *err, size_t errlen)
{
	*out = NULL;
	if (!cfg->redis_url) {
		snprintf(err, errlen, "REDIS_URL is not set");
		return QUEUE_EINVAL;
	}
	if (!consumer || !*consumer || strlen(consumer) >= sizeof((struct queue *)0)->consumer) {
		snprintf(err, errlen, "consumer name missing or over 127 bytes");
		return QUEUE_EINVAL;
	}
	epoch_ms();
	struct rqueue *rq = xcalloc(1, sizeof *rq);
	if (rconn_init(&rq->rc, cfg->redis_url, scripts, S_COUNT, err, errlen)) {
		free(rq);
		return QUEUE_EINVAL;
	}
	rconn_set_name(&rq->rc, cfg->role == ROLE_PRODUCER ? "producer" : "consumer", consumer);
	rq->min_acks = (int)cfg->redis_min_replicas_ack;
	rq->failures = cfg->job_history && !strcmp(cfg->job_history, "failures");
	rq->fair = cfg->org_fairness;
	rq->q.ops = &redis_ops;
	rq->q.cfg = cfg;
	snprintf(rq->q.consumer, sizeof rq->q.consumer, "%s", consumer);
	rq->backoff.base_ms = cfg->job_backoff_base_ms > 0 ? cfg->job_backoff_base_ms : 1000;
	rq->backoff.max_ms = cfg->job_backoff_max_ms > 0 ? cfg->job_backoff_max_ms : 300000;
	rq->lease_ms = cfg->job_lease_ms > 0 ? cfg->job_lease_ms : 30000;
	rq->reclaim_ms = rq->lease_ms / 4;
	if (rq->reclaim_ms < 50)
		rq->reclaim_ms = 50;
	if (rq->reclaim_ms > 1000)
		rq->reclaim_ms = 1000;
	rq->max_len = cfg->redis_stream_max_len;
	rq->tick_px = 2 * (cfg->job_runner_interval_ms > 0 ? cfg->job_runner_interval_ms : 5000);
	rq->default_max = cfg->job_max_attempts > 0 ? (int)cfg->job_max_attempts : 5;
	snprintf(rq->reclaim_cursor, sizeof rq->reclaim_cursor, "0-0");
	if (ensure_groups(rq)) {
		snprintf(err, errlen, "%s", rq->q.errstr);
		int code = rq->q.err;
		rq_destroy(&rq->q);
		return code;
	}
	*out = &rq->q;
	return 0;
}

int64_t queue_redis_slot(int64_t now_ms, int64_t interval_ms)
{
	return interval_ms > 0 ? now_ms / interval_ms : now_ms;
}

int queue_redis_tick(struct queue *q, int64_t slot, int *added)
{
	struct rqueue *rq = rq_of(q);
	*added = 0;
	if (ensure_groups(rq))
		return q->err;
	char key[64], px[24], slots[24], enq[24];
	snprintf(key, sizeof key, "%s%lld", RENTRY_TICK_KEY, (long long)slot);
	snprintf(px, sizeof px, "%lld", (long long)rq->tick_px);
	snprintf(slots, sizeof slots, "%lld", (long long)slot);
	snprintf(enq, sizeof enq, "%lld", (long long)wall_ms());
	const char *av[] = { "3", key, RENTRY_RUNS, RENTRY_TICK_LAST, px, slots, enq, RENTRY_GROUP };
	redisReply *r = rconn_eval(&rq->rc, S_TICK, 8, av, NULL);
	if (!r)
		return rq_fail(rq);
	*added = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
	rconn_free(r);
	return rq_ok(rq);
}

int queue_redis_rate(struct queue *q, const char *key, int64_t n, int64_t period_ms, const char *id,
		     int64_t *wait_ms)
{
	struct rqueue *rq = rq_of(q);
	*wait_ms = 0;
	char zkey[ORGLIMIT_RATE_KEY_LEN + 32], hkey[ORGLIMIT_RATE_KEY_LEN + 32], ns[24], ps[24];
	snprintf(zkey, sizeof zkey, "%s%s", RENTRY_RATE, key);
	snprintf(hkey, sizeof hkey, "%s%s", RENTRY_RATE_HINT, key);
	snprintf(ns, sizeof ns, "%lld", (long long)n);
	snprintf(ps, sizeof ps, "%lld", (long long)period_ms);
	const char *av[] = { "2", zkey, hkey, ns, ps, id };
	redisReply *r = rconn_eval(&rq->rc, S_RATE, 6, av, NULL);
	if (!r)
		return rq_fail(rq);
	int ok = r->type == REDIS_REPLY_INTEGER;
	if (ok)
		*wait_ms = r->integer;
	rconn_free(r);
	if (!ok)
		return rq_failf(rq, QUEUE_EINTERNAL, "rate: unexpected reply");
	return rq_ok(rq);
}

int queue_redis_check_policy(struct queue *q, char *policy, size_t policylen, int *noeviction)
{
	struct rqueue *rq = rq_of(q);
	*noeviction = 0;
	if (policylen)
		policy[0] = '\0';
	redisReply *r = rconn_cmdf(&rq->rc, "CONFIG GET maxmemory-policy");
	if (!r)
		return rq_fail(rq);
	int rv = 0;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[1]->type == REDIS_REPLY_STRING) {
		snprintf(policy, policylen, "%s", r->element[1]->str);
		*noeviction = !strcmp(r->element[1]->str, "noeviction");
	} else {
		rv = rq_failf(rq, QUEUE_EINTERNAL, "CONFIG GET maxmemory-policy: unexpected reply");
	}
	rconn_free(r);
	return rv ? rv : rq_ok(rq);
}

int queue_redis_ping(struct queue *q, int64_t *latency_ms)
{
	struct rqueue *rq = rq_of(q);
	int64_t t0 = mono_ms();
	redisReply *r = rconn_cmdf(&rq->rc, "PING");
	if (latency_ms)
		*latency_ms = mono_ms() - t0;
	if (!r)
		return rq_fail(rq);
	rconn_free(r);
	return rq_ok(rq);
}

int queue_redis_maintain(struct queue *q, int64_t idle_consumer_ms, int64_t *moved, int64_t *trimmed)
{
	struct rqueue *rq = rq_of(q);
	int64_t mv = 0, tr = 0;
	if (ensure_groups(rq))
		return q->err;
	if (promote(rq, &mv) || trim_stream(rq, RENTRY_RUNS, RENTRY_GROUP, &tr) ||
	    trim_stream(rq, RENTRY_EVENTS, "", &tr) ||
	    gc_consumers(rq, idle_consumer_ms > 0 ? idle_consumer_ms : default_gc_idle(rq)))
		return q->err;
	if (moved)
		*moved = mv;
	if (trimmed)
		*trimmed = tr;
	return rq_ok(rq);
}
