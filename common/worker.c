/* worker.c -- see worker.h for the threads and their jobs.
 *
 * Transport choice per claim (run threads):
 *   Redis-less mode          PostgreSQL queue only, blocking on NOTIFY.
 *   Redis mode, Redis up     Redis stream, blocking XREADGROUP; thread 0 also
 *                            polls the PostgreSQL queue every PG_POLL_MS for
 *                            runs accepted there (while Redis was down, or
 *                            with an idempotency key).  When a poll finds
 *                            runs, every thread drains the PostgreSQL queue
 *                            too (the backlog, below), alternating with
 *                            the stream so that neither waits on the other.
 *   Redis mode, Redis down   PostgreSQL queue, blocking; Redis retried every
 *                            second.  After REDIS_FALLBACK_AFTER_MS the cycle
 *                            timer runs cycles itself (ticks cannot arrive).
 * A run is completed on the transport it was claimed from.
 */
#include "worker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "control.h"
#include "cycle.h"
#include "db.h"
#include "enqueue.h"
#include "http.h"
#include "history.h"
#include "jrmetrics.h"
#include "log.h"
#include "orglimit.h"
#include "orgstat.h"
#include "queue_redis.h"
#include "queue.h"
#include "registry.h"
#include "session.h"
#include "util.h"

enum transport { T_NONE = 0, T_REDIS, T_PG };

#define PG_POLL_MS 250
#define PG_BACKLOG_MS 1000   /* all threads look at PostgreSQL this long after a find */
#define CANCEL_LOOK_MS 250   /* the heartbeat looks for cancel requests of runs in hand */
#define REDIS_RETRY_MS 1000

/* No head-of-line blocking.  A run thread claims a batch (batches are what
 * make quick runs cheap) and runs it in order; a run of the batch that has
 * not started must not wait behind a long one while a thread is free.  The
 * heartbeat (every HB_TICK_MS) gives the waiting runs back to the queue
 * (queue->release: no attempt counted, at the stream's end or queued again
 * in job_runs, with a wake-up) as soon as the run ahead of them has run
 * HANDBACK_RUN_MS, or the batch has been in hand HANDBACK_BATCH_MS: any free
 * thread of any consumer takes them at once.  Quick runs never trigger it,
 * so batches of them cost nothing more.  Rejected: claiming one run per
 * free thread (a round trip per run: a third of the throughput of quick
 * runs), and stealing inside the process (idle threads block in their
 * claim, in Redis or on NOTIFY, and could not be woken without a wake-up
 * through the queue anyway; a release helps other consumers too). */
#define HB_TICK_MS 10
#define HANDBACK_RUN_MS 20
#define HANDBACK_BATCH_MS 200

enum hand_state { H_WAIT = 0, H_STARTED, H_RELEASING, H_RELEASED };

/* What the heartbeat needs to extend a lease: copies, no owned strings;
 * and the run being executed, to announce it once it has run for
 * WORKER_ANNOUNCE_AFTER_MS (read under mu: the run thread does not change
 * it, nor free it, while cur points to it). */
struct hand {
	pthread_mutex_t mu;
	pthread_cond_t cv;                   /* a release finished */
	enum transport from;
	size_t n;
	unsigned char state[WORKER_MAX_BATCH];   /* enum hand_state, per run */
	int64_t claimed_ms;                  /* mono ms the batch was claimed */
	int no_release;                      /* a release failed: keep this batch */
	const struct run *cur;               /* being executed, or NULL */
	int64_t cur_since_ms;                /* mono ms it started */
	int cur_announced;
	size_t cur_idx;                      /* runs[cur_idx] is cur */
	int cancel[WORKER_MAX_BATCH];        /* cancel requested (control: see cancel_look()) */
	/* last, as hand is in struct wthread: the 24 KB that a small batch
	 * does not touch come after everything that is touched */
	struct run runs[WORKER_MAX_BATCH];   /* id, handle, fence, is_tick only */
};

struct wthread {
	struct worker *w;
	int idx;
	pthread_t tid;
	struct queue *rq, *pq;
	int64_t redis_retry_at_ms, pg_poll_at_ms;
	struct db *db;                 /* borrowed from the pool while a job runs */
	struct http_client *http;      /* for jobs (job_http()), made on first use */
	struct enqueuer enq;           /* for fan-out from cycles */
	size_t batch;
	int pg_first;                  /* backlog: which transport this claim tries first */
	atomic_int run_stop;           /* the running job's ctx.stop: shutdown or cancel */
	struct hand hand;              /* last (see its runs[]) */
};

struct worker {
	const struct config *cfg;
	int drain;
	atomic_int stopping;           /* claim nothing more */
	atomic_int aborting;           /* and tell the jobs to give up (job_stopping()) */
	int nthreads;
	struct wthread *threads;
	pthread_t hb_tid, timer_tid;
	int hb_started, timer_started;
	struct history_thread *history;   /* Redis mode: runs' states into job_runs */
	struct queue_redis_shared *rshared;   /* the run threads' Redis housekeeping, done once */
	/* the jobs' connections (DATABASE_POOL_SIZE): borrowed by a run of a
	 * job that uses the database, and by cycles, for their length */
	pthread_mutex_t pool_mu;
	pthread_cond_t pool_cv;
	int npool;
	struct db *pool;
	int *pool_busy;
	pthread_mutex_t mu;
	pthread_cond_t done_cv;
	atomic_int running;            /* run threads not yet finished (changed under mu) */
	_Atomic int64_t redis_down_since_ms;   /* mono ms, 0 while up */
	_Atomic int64_t pg_backlog_until_ms;   /* mono ms: Redis mode, the PostgreSQL queue had
						  runs lately; every thread claims there too */
	struct {
#define X(f) _Atomic uint64_t f;
		WORKER_COUNTS(X)
#undef X
	} counts;
};

#define COUNT(w, field, n) atomic_fetch_add_explicit(&(w)->counts.field, (n), memory_order_relaxed)

static int stopping(const struct worker *w)
{
	return atomic_load_explicit(&((struct worker *)w)->stopping, memory_order_acquire);
}

/* ------------------------------------------------------------------ */
/* Redis health, as the run threads see it                             */
/* ------------------------------------------------------------------ */

static void redis_mark(struct worker *w, int up)
{
	int64_t since = atomic_load_explicit(&w->redis_down_since_ms, memory_order_relaxed);
	if (up && since) {
		atomic_store_explicit(&w->redis_down_since_ms, 0, memory_order_relaxed);
		log_msg(LOG_INFO, "redis_recovered", "Redis is reachable again: back to Redis mode");
	} else if (!up && !since) {
		int64_t zero = 0;
		if (atomic_compare_exchange_strong_explicit(&w->redis_down_since_ms, &zero, mono_ms(),
							    memory_order_relaxed, memory_order_relaxed))
			log_msg(LOG_WARN, "redis_unreachable",
				"Redis is unreachable: draining the PostgreSQL queue; cycles fall back to "
				"the local timer after %lld ms", (long long)w->cfg->redis_fallback_after_ms);
	}
}

int worker_redis_ok(const struct worker *w)
{
	return !w->cfg->redis_url ||
	       atomic_load_explicit(&((struct worker *)w)->redis_down_since_ms, memory_order_relaxed) == 0;
}

static int in_fallback(struct worker *w)
{
	if (!w->cfg->redis_url)
		return 1;
	int64_t since = atomic_load_explicit(&w->redis_down_since_ms, memory_order_relaxed);
	return since && mono_ms() - since >= w->cfg->redis_fallback_after_ms;
}

/* ------------------------------------------------------------------ */
/* cycles                                                              */
/* ------------------------------------------------------------------ */

static void log_cycle(const struct cycle_report *rep, const char *trigger)
{
	LOGF(LOG_INFO, "job_runner_cycle_complete", "job runner cycle complete",
	     LF_I("durationMs", rep->duration_ms), LF_S("ran", rep->summary[0] ? rep->summary : "nothing due"),
	     LF_I("jobsRun", rep->jobs_run), LF_I("jobsFailed", rep->jobs_failed),
	     LF_I("runsEnqueued", rep->runs_enqueued), LF_I("pruned", rep->pruned),
	     LF_S("trigger", trigger));
}

/* ------------------------------------------------------------------ */
/* the jobs' connection pool                                           */
/* ------------------------------------------------------------------ */

/* Borrows a pool connection: waits for a free one and connects it; while
 * PostgreSQL refuses a new connection (max_connections) waits and tries
 * again every 500 ms (the failure is counted and logged by db.c) instead
 * of failing the run.  Any other failure leaves it unconnected: the job's
 * first query fails, as it would have. */
static struct db *pool_borrow(struct worker *w)
{
	pthread_mutex_lock(&w->pool_mu);
	int i;
	for (;;) {
		for (i = 0; i < w->npool && w->pool_busy[i]; i++)
			;
		if (i < w->npool)
			break;
		pthread_cond_wait(&w->pool_cv, &w->pool_mu);
	}
	w->pool_busy[i] = 1;
	pthread_mutex_unlock(&w->pool_mu);
	struct db *db = &w->pool[i];
	/* only a refusal is waited out; PostgreSQL down fails the run as
	 * before (retried with backoff), so threads stay free for other work */
	while (db_connect(db) && db_fail_reason_of(db->errstr) == DBF_TOO_MANY && !w->stopping)
		sleep_ms(500);
	return db;
}

static void pool_return(struct worker *w, struct db *db)
{
	if (!db)
		return;
	pthread_mutex_lock(&w->pool_mu);
	w->pool_busy[db - w->pool] = 0;
	pthread_cond_signal(&w->pool_cv);
	pthread_mutex_unlock(&w->pool_mu);
}

/* Runs one cycle on t's connections; 0, or -1 on a database failure (logged). */
static int thread_cycle(struct wthread *t, const char *trigger)
{
	struct db *db = session_cycle_db(t->w->cfg);
	if (!db) {
		log_msg(LOG_DEBUG, "job_runner_cycle_skipped", "a cycle of this process is under way");
		return 0;
	}
	int rc = 0;
	struct cycle_env env = { .cfg = t->w->cfg, .db = db, .holder = t->w->cfg->consumer_name,
				 .enqueue = enqueuer_cycle_fn, .enqueue_arg = &t->enq, .http = &t->http,
				 .stop = &t->w->aborting };
	struct cycle_report rep;
	if (cycle_run(&env, &rep)) {
		LOGF(LOG_ERROR, "job_runner_cycle_failed", "cycle failed",
		     LF_S("error", db->errstr), LF_S("trigger", trigger));
		rc = -1;
	} else if (rep.ran) {
		COUNT(t->w, cycles, 1);
		jrm_cycle(rep.duration_ms, wall_ms());
		log_cycle(&rep, trigger);
	} else {
		log_msg(LOG_DEBUG, "job_runner_cycle_skipped", "cycle lock held elsewhere");
	}
	session_cycle_db_done(db);
	return rc;
}

/* ------------------------------------------------------------------ */
/* running one run                                                     */
/* ------------------------------------------------------------------ */

static void drop(struct queue **q);

/* A start of run r under an org rate limit: *wait_ms 0 when it was
 * counted, else how long r must wait.  Redis's limiter while Redis is up,
 * PostgreSQL's in Redis-less mode and while Redis is down (each counts
 * apart: during an outage an org may start up to twice its limit). */
static int org_rate_take(struct wthread *t, const struct config_rate *rate, const char *scope,
			 const struct run *r, int64_t *wait_ms)
{
	char key[ORGLIMIT_RATE_KEY_LEN];
	orglimit_rate_key(key, sizeof key, scope, r->org_id);
	if (t->w->cfg->redis_url && worker_redis_ok(t->w) && t->rq) {
		int rc = queue_redis_rate(t->rq, key, rate->n, rate->period_ms, r->id, wait_ms);
		if (rc == QUEUE_OK)
			return 0;
		if (rc == QUEUE_EDOWN)
			drop(&t->rq);
		else
			LOGF(LOG_WARN, "rate_limiter_failed", "Redis's rate limiter failed: PostgreSQL's counts this start",
			     LF_S("error", t->rq->errstr));
	}
	struct db *db = t->db ? t->db : pool_borrow(t->w);   /* a job without a database: borrowed */
	int rc = orglimit_rate_pg(db, key, rate->n, rate->period_ms, wait_ms);
	if (db != t->db)
		pool_return(t->w, db);
	return rc;
}

/* Per-org limits before a run of an org: its throttle window, a slot of
 * ORG_CONCURRENCY, then a start under its rate limit (last: a start counted
 * is a start made).  Returns 1 with res set to a deferral when the run must
 * wait (not an attempt, and not a spin: it comes back after a delay). */
static int org_gate(struct wthread *t, const struct job_def *job, const struct run *r,
		    struct run_result *res, int *slot)
{
	const struct config *cfg = t->w->cfg;
	int64_t wait = 0;
	if (job->org_throttled && t->db) {
		if (orglimit_throttled(t->db, r->org_id, &wait))
			wait = 1000;   /* cannot tell: look again soon */
		if (wait > 0) {
			res->outcome = RUN_DEFER;
			res->retry_after_ms = wait;
			snprintf(res->error, sizeof res->error, "org throttled by the Graph API for %lld ms more",
				 (long long)wait);
			orgstat_defer(ORGSTAT_THROTTLE);
			return 1;
		}
	}
	char err[256];
	/* a slot cannot be asked for while PostgreSQL refuses the session
	 * connection: wait for it (the run keeps its lease) rather than call
	 * it an org limit */
	while (cfg->org_concurrency > 0 &&
	       session_org_acquire(cfg, r->org_id, (int)cfg->org_concurrency, slot, err, sizeof err)) {
		if (t->w->stopping || db_fail_reason_of(err) != DBF_TOO_MANY) {
			/* not run, no attempt counted; and said for what it is */
			res->outcome = RUN_DEFER;
			res->retry_after_ms = t->w->stopping ? 1 : 1000;
			snprintf(res->error, sizeof res->error, "%s: %.200s",
				 t->w->stopping ? "consumer shutting down" : "database unavailable", err);
			return 1;
		}
		sleep_ms(500);
	}
	if (cfg->org_concurrency > 0 && *slot < 0) {
		res->outcome = RUN_DEFER;
		res->retry_after_ms = 250 + (int64_t)(rand_u64() % 500);
		snprintf(res->error, sizeof res->error, "org concurrency limit (%lld) reached",
			 (long long)cfg->org_concurrency);
		orgstat_defer(ORGSTAT_CONCURRENCY);
		return 1;
	}
	int own;
	const struct config_rate *rate = config_org_rate(cfg, r->job, &own);
	if (!rate)
		return 0;
	if (org_rate_take(t, rate, own ? r->job : NULL, r, &wait))
		wait = 1000;   /* cannot tell: look again soon */
	if (wait <= 0)
		return 0;
	if (*slot >= 0) {
		session_org_release(cfg, r->org_id, *slot);
		*slot = -1;
	}
	res->outcome = RUN_DEFER;
	res->retry_after_ms = wait;
	snprintf(res->error, sizeof res->error, "org rate limit (%lld per %lld ms) reached",
		 (long long)rate->n, (long long)rate->period_ms);
	orgstat_defer(ORGSTAT_RATE);
	return 1;
}

static void execute(struct wthread *t, struct run *r, struct run_result *res)
{
	memset(res, 0, sizeof *res);
	int64_t t0 = mono_ms();
	if (r->is_tick) {
		thread_cycle(t, "tick");
		res->outcome = RUN_OK;
		return;
	}
	const struct job_def *job = registry_find(r->job);
	if (!job) {
		res->outcome = RUN_FAIL;
		snprintf(res->error, sizeof res->error, "unknown job '%.64s'", r->job ? r->job : "");
		return;
	}
	cJSON *payload = r->payload ? cJSON_ParseWithLength(r->payload, strlen(r->payload))
				    : cJSON_CreateObject();
	if (!cJSON_IsObject(payload)) {
		cJSON_Delete(payload);
		res->outcome = RUN_FAIL;
		snprintf(res->error, sizeof res->error, "payload is not a JSON object");
		return;
	}
	jrm_started(r->job, r->enqueued_at_ms ? wall_ms() - r->enqueued_at_ms : -1);
	int slot = -1;
	if (!job->no_db)
		t->db = pool_borrow(t->w);
	if (r->org_id && org_gate(t, job, r, res, &slot)) {
		cJSON_Delete(payload);
		pool_return(t->w, t->db);
		t->db = NULL;
		return;
	}
	struct job_ctx ctx = { .cfg = t->w->cfg, .db = t->db, .run = r, .payload = payload,
			       .http = t->http, .stop = &t->run_stop };
	job->run(&ctx, res);
	t->http = ctx.http;
	cJSON_Delete(payload);
	pool_return(t->w, t->db);
	t->db = NULL;
	if (slot >= 0)
		session_org_release(t->w->cfg, r->org_id, slot);
	res->duration_ms = mono_ms() - t0;
}

static void log_outcome(const struct run *r, const struct run_result *res, int fenced,
			const struct config *cfg)
{
	if (r->is_tick)
		return;
	const char *event, *msg;
	enum log_level lvl;
	if (fenced) {
		lvl = LOG_WARN, event = "run_fenced", msg = "result discarded: the lease passed to another consumer";
	} else if (res->outcome == RUN_CANCEL) {
		lvl = LOG_INFO, event = "run_cancelled", msg = "run cancelled";
	} else if (res->outcome == RUN_OK) {
		if (!log_enabled(LOG_DEBUG))
			return;
		lvl = LOG_DEBUG, event = "run_succeeded", msg = "run succeeded";
	} else if (res->outcome == RUN_DEFER) {
		if (!log_enabled(LOG_DEBUG))
			return;
		lvl = LOG_DEBUG, event = "run_deferred", msg = "run deferred";
	} else if (res->outcome == RUN_RETRY && r->attempt < r->max_attempts) {
		lvl = LOG_WARN, event = "run_failed", msg = "run failed, will retry";
	} else {
		lvl = LOG_ERROR, event = "run_dead", msg = "run is dead";
	}
	LOGF(lvl, event, msg, LF_S("runId", r->id), LF_S("job", r->job), LF_S("orgId", r->org_id),
	     LF_I("attempt", r->attempt), LF_I("maxAttempts", r->max_attempts),
	     LF_I("durationMs", res->duration_ms), LF_S("error", res->outcome == RUN_OK ? NULL : res->error),
	     LF_S("consumer", cfg->consumer_name));
}

static void count_outcome(struct worker *w, const struct run *r, const struct run_result *res, int fenced)
{
	if (r->is_tick)
		return;
	enum jrm_outcome o;
	if (fenced) {
		COUNT(w, fenced, 1);
		o = JRM_FENCED;
	} else if (res->outcome == RUN_CANCEL) {
		COUNT(w, cancelled, 1);
		if (res->duration_ms < 0)
			return;   /* never started: the producer counted it when it cancelled it */
		o = JRM_CANCELLED;
	} else if (res->outcome == RUN_OK) {
		COUNT(w, succeeded, 1);
		o = JRM_SUCCEEDED;
	} else if (res->outcome == RUN_DEFER) {
		COUNT(w, deferred, 1);
		o = JRM_DEFERRED;
	} else if (res->outcome == RUN_RETRY && r->attempt < r->max_attempts) {
		COUNT(w, retried, 1);
		COUNT(w, runs_failed_total, 1);
		o = JRM_FAILED;
	} else {
		COUNT(w, dead, 1);
		COUNT(w, runs_failed_total, 1);
		o = JRM_DEAD;
	}
	jrm_finished(r->job, o, res->duration_ms);
}

/* ------------------------------------------------------------------ */
/* operator control: cancel and pause (control.h, queue_ctl.c)         */
/* ------------------------------------------------------------------ */

static struct queue *thread_queue(struct wthread *t, enum transport from)
{
	return from == T_REDIS ? t->rq : from == T_PG ? t->pq : NULL;
}

static void cancel_result(struct run_result *res, const char *why, int64_t duration_ms)
{
	memset(res, 0, sizeof *res);
	res->outcome = RUN_CANCEL;
	res->duration_ms = duration_ms;
	snprintf(res->error, sizeof res->error, "%s", why);
}

/* Before a claimed batch starts: which of its runs were asked to cancel.
 * Redis only: there a request added before the entry was delivered was
 * answered "never starts" (queue_ctl.c), so it must be seen now.  A
 * PostgreSQL claim never takes a cancelled row, and a request made after
 * the claim was answered "running, asked to stop": the heartbeat's next
 * look (CANCEL_LOOK_MS) finds it, before the run starts or while it runs,
 * and the batch saves a round trip.  A request the check misses (the
 * transport failed) is seen by the heartbeat too. */
static void cancel_look_batch(struct wthread *t, enum transport from, const struct run *runs, size_t n)
{
	struct queue *q = thread_queue(t, from);
	int flags[WORKER_MAX_BATCH];
	if (from != T_REDIS || !q || !q->ops->cancelled || q->ops->cancelled(q, runs, n, flags))
		memset(flags, 0, sizeof flags);
	pthread_mutex_lock(&t->hand.mu);
	for (size_t i = 0; i < n; i++)
		t->hand.cancel[i] = flags[i];
	pthread_mutex_unlock(&t->hand.mu);
}

/* A run that must not start: cancelled (final), or its job paused (handed
 * back without counting an attempt; it comes round again in a second).
 * Called with t->hand.mu held.  Returns 1 with res set. */
static int control_gate(struct wthread *t, size_t i, struct run *r, struct run_result *res)
{
	if (r->is_tick)
		return 0;
	if (t->hand.cancel[i]) {
		cancel_result(res, "cancelled before it started", -1);
		r->started_at_ms = 0;   /* its record shows it never started */
		return 1;
	}
	if (control_paused(r->job)) {
		memset(res, 0, sizeof *res);
		res->outcome = RUN_DEFER;
		res->retry_after_ms = 1000;
		snprintf(res->error, sizeof res->error, "job %.64s is paused", r->job);
		r->started_at_ms = 0;   /* not started: its record must not say so */
		return 1;
	}
	return 0;
}

/* The heartbeat's look for cancel requests: the runs in the hands of all
 * threads, gathered per transport into calls of up to WORKER_MAX_BATCH
 * runs (200 threads holding one run each: 2 round trips, not 200).  A
 * requested run not started yet is skipped (control_gate), the one
 * running is told to stop through its context (run_stop, as at shutdown). */
struct look {
	struct run runs[WORKER_MAX_BATCH];   /* shallow copies: ids, handles */
	int owner[WORKER_MAX_BATCH];         /* thread index */
	size_t idx[WORKER_MAX_BATCH];        /* index in its hand */
	size_t n;
};

static void cancel_look_flush(struct worker *w, struct queue *q, struct look *lk)
{
	int flags[WORKER_MAX_BATCH];
	size_t n = lk->n;
	lk->n = 0;
	if (!n || q->ops->cancelled(q, lk->runs, n, flags))
		return;
	for (size_t k = 0; k < n; k++) {
		if (!flags[k])
			continue;
		struct wthread *t = &w->threads[lk->owner[k]];
		size_t i = lk->idx[k];
		pthread_mutex_lock(&t->hand.mu);
		/* unless the hand moved on to another batch meanwhile */
		if (i < t->hand.n && !strcmp(t->hand.runs[i].id, lk->runs[k].id)) {
			t->hand.cancel[i] = 1;
			if (t->hand.cur && t->hand.cur_idx == i)
				atomic_store_explicit(&t->run_stop, 1, memory_order_release);
		}
		pthread_mutex_unlock(&t->hand.mu);
	}
}

/* ------------------------------------------------------------------ */
/* run threads                                                         */
/* ------------------------------------------------------------------ */

static void hand_set(struct wthread *t, enum transport from, const struct run *runs, size_t n)
{
	pthread_mutex_lock(&t->hand.mu);
	t->hand.from = from;
	t->hand.n = n;
	t->hand.claimed_ms = mono_ms();
	t->hand.no_release = 0;
	memset(t->hand.state, H_WAIT, sizeof t->hand.state);
	for (size_t i = 0; i < n; i++) {
		struct run *h = &t->hand.runs[i];
		memset(h, 0, sizeof *h);
		memcpy(h->id, runs[i].id, sizeof h->id);
		memcpy(h->handle, runs[i].handle, sizeof h->handle);
		h->fence = runs[i].fence;
		h->is_tick = runs[i].is_tick;
	}
	pthread_mutex_unlock(&t->hand.mu);
}

/* Drops the handle of a transport whose connection failed. */
static void drop(struct queue **q)
{
	if (*q)
		(*q)->ops->destroy(*q);
	*q = NULL;
}

static int open_q(struct wthread *t, enum transport which)
{
	char err[256];
	struct queue **slot = which == T_REDIS ? &t->rq : &t->pq;
	if (*slot)
		return 0;
	int rc = which == T_REDIS
		 ? queue_redis_open(t->w->cfg, t->w->cfg->consumer_name, slot, err, sizeof err)
		 : queue_pg_open(t->w->cfg, t->w->cfg->consumer_name, slot, err, sizeof err);
	if (rc && t->idx == 0)
		log_msg(LOG_DEBUG, "queue_open_failed", "%s", err);
	if (!rc)
		(*slot)->stop = &t->w->stopping;
	if (!rc && which == T_REDIS)
		queue_redis_share(*slot, t->w->rshared);
	return rc;
}

/* Claims from PostgreSQL (opened if needed): the transport or T_NONE. */
static enum transport claim_pg(struct wthread *t, struct run *runs, size_t *n, int64_t block,
			       int redis_up)
{
	struct worker *w = t->w;
	if (open_q(t, T_PG)) {
		if (!redis_up && !w->drain)
			sleep_ms(REDIS_RETRY_MS / 2);   /* both down: do not spin */
		else
			t->pg_poll_at_ms = mono_ms() + REDIS_RETRY_MS;   /* PostgreSQL down: poll less */
		return T_NONE;
	}
	int rc = t->pq->ops->claim(t->pq, runs, t->batch, block, n);
	if (rc != QUEUE_OK) {
		LOGF(LOG_ERROR, "claim_failed", "claim from PostgreSQL failed", LF_S("error", t->pq->errstr));
		if (rc == QUEUE_EDOWN)
			drop(&t->pq);
		sleep_ms(200);
		return T_NONE;
	}
	if (w->cfg->redis_url && redis_up)   /* found some: every thread helps; none: over */
		atomic_store_explicit(&w->pg_backlog_until_ms, *n ? mono_ms() + PG_BACKLOG_MS : 0,
				      memory_order_relaxed);
	return *n ? T_PG : T_NONE;
}

/* Claims a batch into runs; returns the transport it came from (T_NONE: nothing). */
static enum transport claim(struct wthread *t, struct run *runs, size_t *n)
{
	struct worker *w = t->w;
	int64_t block = w->drain ? 0 : WORKER_BLOCK_MS;
	*n = 0;
	int redis_up = 0, tried_pg = 0;
	int backlog = w->cfg->redis_url &&
		      mono_ms() < atomic_load_explicit(&w->pg_backlog_until_ms, memory_order_relaxed);
	/* thread 0's poll comes first when due: a stream that always has runs
	 * must not starve the PostgreSQL queue */
	int poll_due = w->cfg->redis_url && !w->drain && t->idx == 0 &&
		       mono_ms() >= t->pg_poll_at_ms;
	if (backlog || poll_due) {
		/* runs wait in both queues: take turns, and block in neither */
		t->pg_first = backlog ? !t->pg_first : 1;
		if (poll_due)
			t->pg_poll_at_ms = mono_ms() + PG_POLL_MS;
		if (t->pg_first) {
			if (claim_pg(t, runs, n, 0, 1) == T_PG)
				return T_PG;
			tried_pg = 1;
		}
		if (backlog)
			block = 0;
	}
	if (!backlog && t->idx == 0 && block > PG_POLL_MS)
		block = PG_POLL_MS;   /* thread 0 polls PostgreSQL on time */
	if (w->cfg->redis_url && mono_ms() >= t->redis_retry_at_ms) {
		if (open_q(t, T_REDIS) == 0) {
			int rc = t->rq->ops->claim(t->rq, runs, t->batch, block, n);
			if (rc != QUEUE_OK && w->drain)
				COUNT(w, claim_failures, 1);
			if (rc == QUEUE_EDOWN) {
				drop(&t->rq);
			} else if (rc == QUEUE_OK) {
				redis_up = 1;
				redis_mark(w, 1);
				if (*n)
					return T_REDIS;
			} else {
				LOGF(LOG_ERROR, "claim_failed", "claim from Redis failed", LF_S("error", t->rq->errstr));
				redis_up = 1;   /* it answered: not an outage */
			}
		}
		if (!redis_up) {
			if (w->drain && !t->rq)
				COUNT(w, claim_failures, 1);   /* could not even connect */
			redis_mark(w, 0);
			t->redis_retry_at_ms = mono_ms() + REDIS_RETRY_MS;
		}
	}
	/* the PostgreSQL queue: always in Redis-less mode and while Redis is
	 * down; otherwise during a backlog, when thread 0's poll is due, and
	 * always in drain */
	int pg_turn = !w->cfg->redis_url || !redis_up || w->drain || (backlog && !tried_pg) ||
		      (t->idx == 0 && !tried_pg && mono_ms() >= t->pg_poll_at_ms);
	if (!pg_turn)
		return T_NONE;
	if (t->idx == 0)
		t->pg_poll_at_ms = mono_ms() + PG_POLL_MS;
	return claim_pg(t, runs, n, redis_up ? 0 : block, redis_up);
}

static void run_batch(struct wthread *t, enum transport from, struct run *runs, size_t n)
{
	struct worker *w = t->w;
	/* sized to the batch (1 <= n <= WORKER_MAX_BATCH), not to the largest
	 * one: 200 run threads at a batch of 1 would each touch pages of a
	 * 93 KB frame (about 3 MiB of stack in all) */
	size_t cap = n ? n : 1;
	struct run_result res[cap];
	int fenced[cap];
	int64_t t0 = mono_ms();
	unsigned char gone[cap];   /* given back by the heartbeat */
	size_t ngone = 0;
	COUNT(w, claimed, n);
	uint64_t reclaimed = 0;
	for (size_t i = 0; i < n; i++)
		reclaimed += runs[i].reclaimed != 0;
	if (reclaimed) {
		COUNT(w, reclaimed, reclaimed);
		jrm_reclaims(reclaimed);
	}
	hand_set(t, from, runs, n);
	cancel_look_batch(t, from, runs, n);
	for (size_t i = 0; i < n; i++) {
		gone[i] = 0;
		pthread_mutex_lock(&t->hand.mu);
		while (t->hand.state[i] == H_RELEASING)
			pthread_cond_wait(&t->hand.cv, &t->hand.mu);
		if (t->hand.state[i] == H_RELEASED) {
			pthread_mutex_unlock(&t->hand.mu);
			gone[i] = 1;
			ngone++;
			continue;
		}
		t->hand.state[i] = H_STARTED;
		if (control_gate(t, i, &runs[i], &res[i])) {   /* cancelled, or its job paused */
			pthread_mutex_unlock(&t->hand.mu);
			continue;
		}
		if (stopping(w) && !runs[i].is_tick) {
			pthread_mutex_unlock(&t->hand.mu);
			/* not started: give it back without counting an attempt */
			memset(&res[i], 0, sizeof res[i]);
			res[i].outcome = RUN_DEFER;
			res[i].retry_after_ms = 1;
			snprintf(res[i].error, sizeof res[i].error, "consumer shutting down");
			continue;
		}
		t->hand.cur = &runs[i];
		t->hand.cur_idx = i;
		t->hand.cur_since_ms = mono_ms();
		runs[i].started_at_ms = wall_ms();   /* its own start, not the batch's claim */
		t->hand.cur_announced = 0;
		atomic_store_explicit(&t->run_stop, atomic_load_explicit(&w->aborting, memory_order_acquire), memory_order_release);
		pthread_mutex_unlock(&t->hand.mu);
		execute(t, &runs[i], &res[i]);
		res[i].finished_at_ms = wall_ms();
		if (atomic_load_explicit(&w->aborting, memory_order_acquire) && !runs[i].is_tick &&
		    res[i].outcome != RUN_OK) {
			/* cut off by the shutdown deadline: not the run's fault, so
			 * handed back at once without counting an attempt */
			res[i].outcome = RUN_DEFER;
			res[i].retry_after_ms = 1;
			snprintf(res[i].error, sizeof res[i].error, "interrupted by shutdown: handed back");
		}
		pthread_mutex_lock(&t->hand.mu);
		t->hand.cur = NULL;
		int cancelled = t->hand.cancel[i];
		pthread_mutex_unlock(&t->hand.mu);
		if (cancelled && !runs[i].is_tick)
			cancel_result(&res[i], "cancelled while it ran", res[i].duration_ms);
	}
	/* the runs given back are another consumer's now: complete the rest */
	size_t ran = 0;
	for (size_t i = 0; i < n; i++) {
		if (gone[i]) {
			run_clear(&runs[i]);
			continue;
		}
		if (ran != i) {
			runs[ran] = runs[i];   /* moves the owned strings */
			res[ran] = res[i];
			memset(&runs[i], 0, sizeof runs[i]);
		}
		ran++;
	}
	n = ran;
	struct queue *q = from == T_REDIS ? t->rq : t->pq;
	int rc = !n ? QUEUE_OK : q ? q->ops->complete(q, runs, res, n, fenced) : QUEUE_EDOWN;
	if (rc != QUEUE_OK) {
		/* the results are lost with the connection; the runs' leases
		 * expire and they run again elsewhere (at least once) */
		LOGF(LOG_ERROR, "complete_failed", "could not record results; the runs will be retried after their lease",
		     LF_S("backend", from == T_REDIS ? "redis" : "postgres"), LF_I("runs", (int64_t)n),
		     LF_S("error", q ? q->errstr : "no connection"));
		if (rc == QUEUE_EDOWN)
			drop(from == T_REDIS ? &t->rq : &t->pq);
		memset(fenced, 0, n * sizeof fenced[0]);
	}
	for (size_t i = 0; i < n; i++) {
		if (rc == QUEUE_OK) {
			count_outcome(w, &runs[i], &res[i], fenced[i]);
			log_outcome(&runs[i], &res[i], fenced[i], w->cfg);
		}
		run_clear(&runs[i]);
	}
	hand_set(t, T_NONE, NULL, 0);
	/* adapt the batch to the run time (runs given back: it was too big) */
	int64_t per_run_ms = n ? (mono_ms() - t0) / (int64_t)n : 0;
	if (ngone || per_run_ms > 50) {
		if (t->batch > 1)
			t->batch /= 2;
	} else if (per_run_ms < 5 && t->batch < WORKER_MAX_BATCH) {
		t->batch *= 2;
	}
}

static void thread_done(struct worker *w)
{
	pthread_mutex_lock(&w->mu);
	atomic_fetch_sub_explicit(&w->running, 1, memory_order_relaxed);
	pthread_cond_broadcast(&w->done_cv);
	pthread_mutex_unlock(&w->mu);
}

static void *run_thread(void *arg)
{
	struct wthread *t = arg;
	struct worker *w = t->w;
	while (!stopping(w)) {
		struct run runs[t->batch];   /* claim() takes up to t->batch (see run_batch()) */
		size_t n = 0;
		enum transport from = claim(t, runs, &n);
		if (from == T_NONE) {
			if (w->drain)
				break;
			continue;
		}
		run_batch(t, from, runs, n);
	}
	thread_done(w);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* heartbeat and cycle timer                                           */
/* ------------------------------------------------------------------ */

/* A copy of t's runs in hand (shallow: the heartbeat reads handles and
 * fences) into out; their transport in *from.  Returns how many. */
static size_t hand_copy(struct wthread *t, struct run *out, enum transport *from)
{
	pthread_mutex_lock(&t->hand.mu);
	*from = t->hand.from;
	size_t n = t->hand.n;
	memcpy(out, t->hand.runs, n * sizeof *out);
	pthread_mutex_unlock(&t->hand.mu);
	return n;
}

/* The run thread t executes a run that has run for WORKER_ANNOUNCE_AFTER_MS
 * and is not announced yet: a copy of it into *out (0), else -1. */
static int hand_take_announce(struct wthread *t, struct run *out)
{
	int rv = -1;
	pthread_mutex_lock(&t->hand.mu);
	const struct run *r = t->hand.cur;
	if (r && !r->is_tick && !t->hand.cur_announced && t->hand.from == T_REDIS &&
	    mono_ms() - t->hand.cur_since_ms >= WORKER_ANNOUNCE_AFTER_MS) {
		run_copy(out, r);
		t->hand.cur_announced = 1;
		rv = 0;
	}
	pthread_mutex_unlock(&t->hand.mu);
	return rv;
}

/* The runs of thread t's batch that wait behind a run that has run
 * HANDBACK_RUN_MS (or in a batch held HANDBACK_BATCH_MS): copied into out
 * with their indexes, marked H_RELEASING.  Returns how many. */
static size_t hand_take_release(struct wthread *t, struct run *out, size_t *idx,
				enum transport *from)
{
	size_t k = 0;
	pthread_mutex_lock(&t->hand.mu);
	int64_t now = mono_ms();
	if (t->hand.cur && t->hand.from != T_NONE && !t->hand.no_release && !stopping(t->w) &&
	    (now - t->hand.cur_since_ms >= HANDBACK_RUN_MS ||
	     now - t->hand.claimed_ms >= HANDBACK_BATCH_MS)) {
		*from = t->hand.from;
		for (size_t i = 0; i < t->hand.n; i++) {
			if (t->hand.state[i] != H_WAIT)
				continue;
			t->hand.state[i] = H_RELEASING;
			out[k] = t->hand.runs[i];
			idx[k++] = i;
		}
	}
	pthread_mutex_unlock(&t->hand.mu);
	return k;
}

/* Settles a release: H_RELEASED where released[i], else the run stays
 * with its thread (H_WAIT), which is woken. */
static void hand_end_release(struct wthread *t, const size_t *idx, size_t k, const int *released,
			     int failed)
{
	pthread_mutex_lock(&t->hand.mu);
	for (size_t i = 0; i < k; i++)
		t->hand.state[idx[i]] = released[i] ? H_RELEASED : H_WAIT;
	if (failed)
		t->hand.no_release = 1;
	pthread_cond_broadcast(&t->hand.cv);
	pthread_mutex_unlock(&t->hand.mu);
}

/* Opens the heartbeat's handle of a transport if needed: 0 or -1. */
static int hb_queue(struct worker *w, enum transport from, struct queue **q)
{
	char err[256];
	if (*q)
		return 0;
	return from == T_REDIS ? queue_redis_open(w->cfg, w->cfg->consumer_name, q, err, sizeof err)
			       : queue_pg_open(w->cfg, w->cfg->consumer_name, q, err, sizeof err);
}

static void *heartbeat_thread(void *arg)
{
	struct worker *w = arg;
	struct queue *rq = NULL, *pq = NULL;
	struct run *copy = xcalloc(WORKER_MAX_BATCH, sizeof *copy);
	struct look *looks = xcalloc(2, sizeof *looks);   /* Redis, PostgreSQL */
	size_t idx[WORKER_MAX_BATCH];
	int released[WORKER_MAX_BATCH];
	int64_t every = w->cfg->job_lease_ms / 3;
	if (every < 50)
		every = 50;
	int64_t next_extend = mono_ms() + every;
	int64_t next_cancel_look = mono_ms() + CANCEL_LOOK_MS;
	/* Redis-less: the lease extensions' connection is opened now, with the
	 * claims', not when the first run is in hand: a server that runs out
	 * of connections later cannot keep leases from being extended */
	if (!w->cfg->redis_url)
		hb_queue(w, T_PG, &pq);
	while (atomic_load_explicit(&w->running, memory_order_relaxed) > 0) {
		sleep_ms(HB_TICK_MS);
		if (mono_ms() >= next_cancel_look) {
			next_cancel_look = mono_ms() + CANCEL_LOOK_MS;
			for (int i = 0; i < w->nthreads; i++) {
				enum transport from;
				size_t n = hand_copy(&w->threads[i], copy, &from);
				struct queue **q = from == T_REDIS ? &rq : &pq;
				struct look *lk = from == T_REDIS ? &looks[0] : &looks[1];
				if (!n || from == T_NONE || hb_queue(w, from, q))
					continue;
				for (size_t j = 0; j < n; j++) {
					if (lk->n == WORKER_MAX_BATCH)
						cancel_look_flush(w, *q, lk);
					lk->runs[lk->n] = copy[j];
					lk->owner[lk->n] = i;
					lk->idx[lk->n++] = j;
				}
			}
			if (looks[0].n)
				cancel_look_flush(w, rq, &looks[0]);
			if (looks[1].n)
				cancel_look_flush(w, pq, &looks[1]);
		}
		/* runs waiting behind a long one: back to the queue, for a free thread */
		for (int i = 0; i < w->nthreads; i++) {
			enum transport from = T_NONE;
			size_t k = hand_take_release(&w->threads[i], copy, idx, &from);
			if (!k)
				continue;
			struct queue **q = from == T_REDIS ? &rq : &pq;
			int rc = hb_queue(w, from, q) ? QUEUE_EDOWN
						       : (*q)->ops->release(*q, copy, k, released);
			if (rc != QUEUE_OK) {
				memset(released, 0, k * sizeof *released);
				if (rc == QUEUE_EDOWN)
					drop(q);
			}
			hand_end_release(&w->threads[i], idx, k, released, rc != QUEUE_OK);
			size_t nrel = 0;
			for (size_t j = 0; j < k; j++)
				nrel += released[j] != 0;
			COUNT(w, released, nrel);
		}
		/* runs that take a while: job_runs shows them running */
		for (int i = 0; i < w->nthreads; i++) {
			struct run r;
			if (hand_take_announce(&w->threads[i], &r))
				continue;
			if (hb_queue(w, T_REDIS, &rq) == 0 && rq->ops->announce &&
			    rq->ops->announce(rq, &r) == QUEUE_EDOWN)
				drop(&rq);
			run_clear(&r);
		}
		if (mono_ms() < next_extend)
			continue;
		next_extend = mono_ms() + every;
		for (int i = 0; i < w->nthreads; i++) {
			enum transport from;
			size_t n = hand_copy(&w->threads[i], copy, &from);
			if (!n || from == T_NONE)
				continue;
			struct queue **q = from == T_REDIS ? &rq : &pq;
			if (hb_queue(w, from, q))
				continue;
			if ((*q)->ops->extend(*q, copy, n) == QUEUE_EDOWN)
				drop(q);
		}
	}
	drop(&rq);
	drop(&pq);
	free(copy);
	free(looks);
	return NULL;
}

static void *timer_thread(void *arg)
{
	struct worker *w = arg;
	struct wthread t;
	memset(&t, 0, sizeof t);
	t.w = w;
	t.idx = -1;
	enqueuer_init(&t.enq, w->cfg, w->cfg->consumer_name);
	int64_t next = mono_ms();
	while (!stopping(w)) {
		if (mono_ms() < next) {
			sleep_ms(50);
			continue;
		}
		next = mono_ms() + w->cfg->job_runner_interval_ms;
		if (in_fallback(w))
			thread_cycle(&t, w->cfg->redis_url ? "fallback-timer" : "timer");
	}
	enqueuer_release(&t.enq);
	http_client_free(t.http);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

int worker_start(const struct config *cfg, int drain, struct worker **out, char *err, size_t errlen)
{
	struct worker *w = xcalloc(1, sizeof *w);
	w->cfg = cfg;
	w->drain = drain;
	w->nthreads = (int)cfg->worker_concurrency;
	w->threads = xcalloc((size_t)w->nthreads, sizeof *w->threads);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->done_cv, NULL);
	pthread_mutex_init(&w->pool_mu, NULL);
	pthread_cond_init(&w->pool_cv, NULL);
	w->npool = (int)cfg->database_pool_size;
	if (w->npool <= 0)
		w->npool = 1;
	w->pool = xcalloc((size_t)w->npool, sizeof *w->pool);
	w->pool_busy = xcalloc((size_t)w->npool, sizeof *w->pool_busy);
	if (cfg->redis_url)
		w->rshared = queue_redis_shared_new();
	for (int i = 0; i < w->npool; i++)
		session_db_init(&w->pool[i], cfg, "jobrunner-jobs", 0);
	for (int i = 0; i < w->nthreads; i++) {
		struct wthread *t = &w->threads[i];
		t->w = w;
		t->idx = i;
		t->batch = 1;
		pthread_mutex_init(&t->hand.mu, NULL);
		pthread_cond_init(&t->hand.cv, NULL);
		enqueuer_init(&t->enq, cfg, cfg->consumer_name);
	}
	if (drain) {
		/* one cycle first, so that what it fans out is drained too */
		thread_cycle(&w->threads[0], "drain");
	}
	atomic_store_explicit(&w->running, w->nthreads, memory_order_relaxed);
	for (int i = 0; i < w->nthreads; i++) {
		if (pthread_create(&w->threads[i].tid, NULL, run_thread, &w->threads[i])) {
			snprintf(err, errlen, "cannot start worker threads");
			atomic_store_explicit(&w->stopping, 1, memory_order_release);
			pthread_mutex_lock(&w->mu);
			atomic_fetch_sub_explicit(&w->running, w->nthreads - i, memory_order_relaxed);
			pthread_mutex_unlock(&w->mu);
			break;
		}
	}
	control_watch_start(cfg);   /* paused jobs, re-read every CONTROL_PAUSE_REFRESH_MS */
	w->hb_started = pthread_create(&w->hb_tid, NULL, heartbeat_thread, w) == 0;
	if (cfg->redis_url && cfg->database_url) {
		char herr[256];
		if (history_thread_start(cfg, cfg->consumer_name, &w->history, herr, sizeof herr))
			LOGF(LOG_ERROR, "history_failed", "cannot start the history writer", LF_S("error", herr));
	}
	if (!drain)
		w->timer_started = pthread_create(&w->timer_tid, NULL, timer_thread, w) == 0;
	*out = w;
	return stopping(w) ? -1 : 0;
}

void worker_stop(struct worker *w) { atomic_store_explicit(&w->stopping, 1, memory_order_release); }

void worker_abort(struct worker *w)
{
	atomic_store_explicit(&w->stopping, 1, memory_order_release);
	atomic_store_explicit(&w->aborting, 1, memory_order_release);
	for (int i = 0; i < w->nthreads; i++)
		atomic_store_explicit(&w->threads[i].run_stop, 1, memory_order_release);
}

void worker_get_counts(const struct worker *w, struct worker_counts *out)
{
	struct worker *mw = (struct worker *)w;   /* atomic loads take non-const */
#define X(f) out->f = atomic_load_explicit(&mw->counts.f, memory_order_relaxed);
	WORKER_COUNTS(X)
#undef X
}

int worker_join(struct worker *w, int64_t timeout_ms, struct worker_counts *counts)
{
	int64_t deadline = mono_ms() + timeout_ms;
	pthread_mutex_lock(&w->mu);
	while (atomic_load_explicit(&w->running, memory_order_relaxed) > 0) {
		if (timeout_ms >= 0 && mono_ms() >= deadline)
			break;
		struct timespec ts = realtime_after_ms(50);
		pthread_cond_timedwait(&w->done_cv, &w->mu, &ts);
	}
	int left = atomic_load_explicit(&w->running, memory_order_relaxed);
	pthread_mutex_unlock(&w->mu);
	if (counts)
		worker_get_counts(w, counts);
	if (left > 0)
		return -1;   /* threads still busy: leave them, the process exits */
	atomic_store_explicit(&w->stopping, 1, memory_order_release);
	for (int i = 0; i < w->nthreads; i++)
		pthread_join(w->threads[i].tid, NULL);
	if (w->hb_started)
		pthread_join(w->hb_tid, NULL);
	if (w->timer_started)
		pthread_join(w->timer_tid, NULL);
	history_thread_stop(w->history, 5000);   /* writes what is left, then ends */
	for (int i = 0; i < w->nthreads; i++) {
		struct wthread *t = &w->threads[i];
		drop(&t->rq);
		drop(&t->pq);
		enqueuer_release(&t->enq);
		http_client_free(t->http);
		pthread_mutex_destroy(&t->hand.mu);
		pthread_cond_destroy(&t->hand.cv);
	}
	free(w->threads);
	queue_redis_shared_free(w->rshared);
	control_watch_stop();
	for (int i = 0; i < w->npool; i++)
		db_release(&w->pool[i]);
	free(w->pool);
	free(w->pool_busy);
	pthread_mutex_destroy(&w->pool_mu);
	pthread_cond_destroy(&w->pool_cv);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->done_cv);
	free(w);
	return 0;
}
