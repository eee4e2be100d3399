/* routes.c -- the producer's HTTP API (docs/operations.md, "Endpoints").
 *
 * The routes are a table; each handler validates its input and answers the
 * 4xx itself.  Handlers run on libmicrohttpd's pool threads at once, so each
 * borrows a connection set (struct api_conn: a PostgreSQL connection, an
 * enqueuer with its Redis and PostgreSQL queue handles, a Redis connection
 * for health checks) from a small pool for the length of the request: no
 * connection is ever used by two threads, and there is no connect per
 * request.
 *
 * The body of POST .../run is parsed and validated by runreq_parse()
 * (common/runreq.c, shared with the fuzz target tests/fuzz/fuzz_runreq.c).
 * Enqueue goes through enqueuer_submit(), the same path as `producer
 * enqueue`: Redis when it answers, the PostgreSQL queue when it does not.
 * A pooled connection that died while idle (PostgreSQL restarted) gets one
 * more attempt on a new connection (api_query()), so the first requests
 * after an outage are not answered 503 for a dependency that is back.
 * Reads (run status, dead list, job metrics) come from PostgreSQL, the
 * system of record; in Redis mode a run's row is written behind the stream
 * by the consumers' history writer and appears within a second or two.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "db.h"
#include "enqueue.h"
#include "httpd.h"
#include "jrmetrics.h"
#include "log.h"
#include "metrics.h"
#include "producer.h"
#include "rconn.h"
#include "registry.h"
#include "runreq.h"
#include "util.h"
#include "worker.h"

#define API_POOL 4
#define DEAD_LIMIT_DEFAULT 50
#define DEAD_LIMIT_MAX 1000

struct api_conn {
	struct db db;
	struct enqueuer enq;
	struct rconn rc;
	int rc_ok;                   /* rconn_init succeeded */
};

struct producer_api {
	const struct config *cfg;
	struct worker *w;
	struct httpd *srv;
	int64_t started_ms;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct api_conn conns[API_POOL];
	int busy[API_POOL];
};

/* ------------------------------------------------------------------ */
/* the connection pool                                                 */
/* ------------------------------------------------------------------ */

static struct api_conn *borrow(struct producer_api *api)
{
	pthread_mutex_lock(&api->mu);
	for (;;) {
		for (int i = 0; i < API_POOL; i++)
			if (!api->busy[i]) {
				api->busy[i] = 1;
				pthread_mutex_unlock(&api->mu);
				return &api->conns[i];
			}
		pthread_cond_wait(&api->cv, &api->mu);
	}
}

static void give_back(struct producer_api *api, struct api_conn *c)
{
	pthread_mutex_lock(&api->mu);
	api->busy[c - api->conns] = 0;
	pthread_cond_signal(&api->cv);
	pthread_mutex_unlock(&api->mu);
}

/* db_query() on a pooled connection.  A pooled connection that died while
 * it sat idle (PostgreSQL restarted, a proxy dropped it) fails its next
 * query at once; db_query() then drops it, and one new attempt on a fresh
 * connection answers for it, so the first request after an outage does
 * not see a 503 for a dependency that is back.  A failure that is not a
 * lost connection (the connection is still there) is not retried. */
static PGresult *api_query(struct api_conn *c, const char *sql, int n, const char *const *params)
{
	PGresult *r = db_query(&c->db, sql, n, params);
	if (!r && !c->db.conn)
		r = db_query(&c->db, sql, n, params);
	return r;
}

/* ------------------------------------------------------------------ */
/* JSON helpers                                                        */
/* ------------------------------------------------------------------ */

/* Adds a string, or null when v is NULL. */
static void add_str(cJSON *o, const char *k, const char *v)
{
	if (v)
		cJSON_AddStringToObject(o, k, v);
	else
		cJSON_AddNullToObject(o, k);
}

/* Adds a number parsed from a SQL text value, or null. */
static void add_num(cJSON *o, const char *k, const char *v)
{
	int64_t n;
	if (v && parse_i64(v, INT64_MIN, INT64_MAX, &n) == 0)
		cJSON_AddNumberToObject(o, k, (double)n);
	else
		cJSON_AddNullToObject(o, k);
}

#define ISO(col) "to_char(" col " at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* ------------------------------------------------------------------ */
/* health                                                              */
/* ------------------------------------------------------------------ */


/* The Redis check of the pool connection's link: a writable master
 * (rconn_check_master), 0 or -1 (*err set). */
static int redis_ping(struct api_conn *c, const struct config *cfg, int64_t *lat, char *err, size_t errlen)
{
	*lat = 0;
	if (!c->rc_ok) {
		char e[256];
		if (rconn_init(&c->rc, cfg->redis_url, NULL, 0, e, sizeof e)) {
			snprintf(err, errlen, "%s", e);
			return -1;
		}
		rconn_set_name(&c->rc, "health", cfg->consumer_name);
		c->rc_ok = 1;
	}
	return rconn_check_master(&c->rc, lat, err, errlen);
}

static void h_health_extended(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	const struct config *cfg = api->cfg;
	struct api_conn *c = borrow(api);
	int64_t db_lat = 0, r_lat = 0;
	int db_ok = db_ping(&c->db, &db_lat) == 0;
	char db_err[256], r_err[256] = "";
	snprintf(db_err, sizeof db_err, "%s", c->db.errstr);
	int r_ok = 1;
	if (cfg->redis_url)
		r_ok = redis_ping(c, cfg, &r_lat, r_err, sizeof r_err) == 0;
	give_back(api, c);

	int ok = db_ok && r_ok;
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", ok ? "ok" : "degraded");
	cJSON_AddStringToObject(o, "mode", "api");
	cJSON *jr = cJSON_AddObjectToObject(o, "jobRunner");
	cJSON_AddBoolToObject(jr, "enabled", cfg->job_runner_enabled);
	cJSON_AddBoolToObject(jr, "workerMode", 0);
	cJSON_AddStringToObject(o, "queueBackend", cfg->redis_url ? "redis" : "postgres");
	cJSON *checks = cJSON_AddObjectToObject(o, "checks");
	cJSON_AddItemToObject(checks, "database", httpd_check(db_ok, db_lat, db_err));
	if (cfg->redis_url)
		cJSON_AddItemToObject(checks, "redis", httpd_check(r_ok, r_lat, r_err));
	else
		cJSON_AddItemToObject(checks, "redis", httpd_check(1, 0, NULL));   /* not used: Redis-less mode */
	if (!cfg->redis_url)
		cJSON_AddBoolToObject(cJSON_GetObjectItem(checks, "redis"), "configured", 0);
	cJSON_AddStringToObject(o, "version", JR_VERSION);
	cJSON_AddNumberToObject(o, "uptimeS", (double)((mono_ms() - api->started_ms) / 1000));
	httpd_json(resp, ok ? 200 : 503, o);
}

/* ------------------------------------------------------------------ */
/* metrics                                                             */
/* ------------------------------------------------------------------ */
/* answers several routes give                                         */
/* ------------------------------------------------------------------ */

/* 503: what the route needs from PostgreSQL could not be had. */
static void answer_db_down(struct httpd_response *resp)
{
	httpd_error(resp, 503, "database_unavailable", "PostgreSQL is unavailable");
}

/* 404 for a run id: what ("run", "dead run") with this id does not exist;
 * id NULL when the id is not even well-formed (it is not echoed then). */
static void answer_no_run(struct httpd_response *resp, const char *what, const char *id)
{
	if (id)
		httpd_error(resp, 404, "unknown_run", "no %s with id %s", what, id);
	else
		httpd_error(resp, 404, "unknown_run", "no %s with this id", what);
}

/* ------------------------------------------------------------------ */

static void h_jobs_metrics(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	const struct config *cfg = api->cfg;
	struct api_conn *c = borrow(api);
	PGresult *r = api_query(c,
		"select id, " ISO("\"lastRunAt\"") ", \"lastRunDurationMs\", \"lastStatus\","
		"       \"runCount\", \"failureCount\" from job_runner_state", 0, NULL);
	if (!r) {
		give_back(api, c);
		answer_db_down(resp);
		return;
	}
	struct queue_stats qs;
	const char *backend;
	int have_q = enqueuer_stats(&c->enq, &qs, &backend) == 0 ||
		     enqueuer_stats(&c->enq, &qs, &backend) == 0;   /* once more on a fresh connection */
	give_back(api, c);

	cJSON *o = cJSON_CreateObject();
	int whole = -1;
	for (int i = 0; i < PQntuples(r); i++)
		if (!strcmp(PQgetvalue(r, i, 0), "job_runner"))
			whole = i;
	add_str(o, "lastRunAt", whole >= 0 ? db_get(r, whole, 1) : NULL);
	add_num(o, "lastRunDurationMs", whole >= 0 ? db_get(r, whole, 2) : NULL);
	cJSON *jobs = cJSON_AddArrayToObject(o, "jobs");
	size_t n;
	const struct job_def *defs = registry_all(&n);
	for (size_t j = 0; j < n; j++) {
		cJSON *jo = cJSON_CreateObject();
		cJSON_AddStringToObject(jo, "name", defs[j].name);
		cJSON_AddBoolToObject(jo, "enabled", registry_enabled(&defs[j], cfg));
		if (defs[j].interval_ms)
			cJSON_AddNumberToObject(jo, "intervalMs", (double)defs[j].interval_ms(cfg));
		else
			cJSON_AddNullToObject(jo, "intervalMs");
		int row = -1;
		for (int i = 0; i < PQntuples(r); i++)
			if (!strcmp(PQgetvalue(r, i, 0), defs[j].name))
				row = i;
		add_str(jo, "lastRunAt", row >= 0 ? db_get(r, row, 1) : NULL);
		add_num(jo, "lastRunDurationMs", row >= 0 ? db_get(r, row, 2) : NULL);
		add_str(jo, "lastStatus", row >= 0 ? db_get(r, row, 3) : NULL);
		cJSON_AddNumberToObject(jo, "runCount", row >= 0 ? (double)db_get_i64(r, row, 4, 0) : 0);
		cJSON_AddNumberToObject(jo, "failureCount", row >= 0 ? (double)db_get_i64(r, row, 5, 0) : 0);
		cJSON_AddItemToArray(jobs, jo);
	}
	PQclear(r);
	cJSON *q = cJSON_AddObjectToObject(o, "queue");
	cJSON_AddStringToObject(q, "backend", have_q ? backend : (cfg->redis_url ? "redis" : "postgres"));
	cJSON_AddNumberToObject(q, "queued", have_q ? (double)qs.queued : 0);
	cJSON_AddNumberToObject(q, "running", have_q ? (double)qs.running : 0);
	cJSON_AddNumberToObject(q, "delayed", have_q ? (double)qs.delayed : 0);
	cJSON_AddNumberToObject(q, "dead", have_q ? (double)qs.dead : 0);
	cJSON *cons = cJSON_AddArrayToObject(q, "consumers");
	for (size_t i = 0; have_q && i < qs.nconsumers; i++) {
		cJSON *co = cJSON_CreateObject();
		cJSON_AddStringToObject(co, "name", qs.consumers[i].name);
		cJSON_AddNumberToObject(co, "pending", (double)qs.consumers[i].pending);
		cJSON_AddNumberToObject(co, "idleMs", (double)qs.consumers[i].idle_ms);
		cJSON_AddItemToArray(cons, co);
	}
	if (have_q)
		queue_stats_free(&qs);
	else
		cJSON_AddStringToObject(q, "error", "queue statistics unavailable");
	httpd_json(resp, 200, o);
}

static void queue_depth(void *ctx, struct metrics_emitter *emit)
{
	struct producer_api *api = ctx;
	struct api_conn *c = borrow(api);
	struct queue_stats qs;
	const char *backend;
	if (enqueuer_stats(&c->enq, &qs, &backend) == 0) {
		jrm_emit_depth(emit, &qs);
		queue_stats_free(&qs);
	}
	give_back(api, c);
}

static void h_prometheus(struct httpd_request *req, struct httpd_response *resp)
{
	struct strbuf sb = STRBUF_INIT;
	metrics_render(metrics_default(), &sb);
	size_t len = sb.len;
	httpd_body(resp, 200, METRICS_CONTENT_TYPE, sb_detach(&sb), len);
}

/* ------------------------------------------------------------------ */
/* enqueue                                                             */
/* ------------------------------------------------------------------ */

/* Body parsing and validation live in runreq.c (shared with the fuzz
 * target); this handler only maps the outcome to an answer. */
static void h_run(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	const char *job = httpd_param(req, "job");
	if (!registry_find(job)) {
		httpd_error(resp, 404, "unknown_job", "unknown job '%.64s'", job);
		return;
	}
	struct run *runs;
	size_t n;
	int bulk;
	char err[256];
	int status = runreq_parse(job, req->body, req->body_len, &runs, &n, &bulk, err, sizeof err);
	if (status == 413) {
		httpd_error(resp, 413, "too_many_runs", "%s", err);
		return;
	}
	if (status) {
		httpd_error(resp, 400, "bad_request", "%s", err);
		return;
	}
	const char *backend = NULL;
	/* a new id of our own: a key already used answers another id, and then
	 * that run's current status */
	char mine[RUN_ID_LEN + 1] = "";
	if (!bulk && runs[0].idempotency_key && !runs[0].id[0]) {
		run_id_new(runs[0].id);
		memcpy(mine, runs[0].id, sizeof mine);
	}
	char status_now[16] = "queued";
	struct api_conn *c = borrow(api);
	int rc = enqueuer_submit(&c->enq, runs, n, &backend, err, sizeof err);
	if (rc == QUEUE_EDOWN)   /* a pooled connection that died idle: once more, on a new one */
		rc = enqueuer_submit(&c->enq, runs, n, &backend, err, sizeof err);
	if (rc == 0 && mine[0] && strcmp(mine, runs[0].id)) {
		const char *p[1] = { runs[0].id };
		PGresult *r = api_query(c, "select status from job_runs where id = $1", 1, p);
		if (r && PQntuples(r) == 1)
			snprintf(status_now, sizeof status_now, "%s", PQgetvalue(r, 0, 0));
		if (r)
			PQclear(r);
	}
	give_back(api, c);
	if (rc == 0) {
		cJSON *o = cJSON_CreateObject();
		if (bulk) {
			cJSON *ids = cJSON_AddArrayToObject(o, "ids");
			for (size_t i = 0; i < n; i++)
				cJSON_AddItemToArray(ids, cJSON_CreateString(runs[i].id));
		} else {
			cJSON_AddStringToObject(o, "id", runs[0].id);
			cJSON_AddStringToObject(o, "job", job);
			cJSON_AddStringToObject(o, "status", status_now);
		}
		httpd_json(resp, 202, o);
	} else if (rc == QUEUE_EINVAL) {
		httpd_error(resp, 400, "bad_request", "%s", err);
	} else if (rc == QUEUE_EUNKNOWN) {
		LOGF(LOG_WARN, "enqueue_outcome_unknown", "Redis failed after the runs were sent",
		     LF_S("job", job), LF_I("runs", (int64_t)n));
		httpd_error(resp, 503, "enqueue_outcome_unknown", "%s", err);
	} else {
		LOGF(LOG_ERROR, "enqueue_failed", "enqueue failed: no queue reachable", LF_S("job", job),
		     LF_S("error", err));
		httpd_error(resp, 503, "queue_unavailable", "no queue is reachable; try again later");
	}
	runreq_free(runs, n);
}

/* ------------------------------------------------------------------ */
/* runs and the dead list                                              */
/* ------------------------------------------------------------------ */

#define RUN_COLUMNS \
	"id, job, org_id, status, attempts, " ISO("enqueued_at") ", " ISO("started_at") ", " \
	ISO("finished_at") ", duration_ms, error, consumer, max_attempts, source, payload::text"

static cJSON *run_json(const PGresult *r, int row)
{
	cJSON *o = cJSON_CreateObject();
	add_str(o, "id", db_get(r, row, 0));
	add_str(o, "job", db_get(r, row, 1));
	add_str(o, "orgId", db_get(r, row, 2));
	add_str(o, "status", db_get(r, row, 3));
	add_num(o, "attempts", db_get(r, row, 4));
	add_str(o, "enqueuedAt", db_get(r, row, 5));
	add_str(o, "startedAt", db_get(r, row, 6));
	add_str(o, "finishedAt", db_get(r, row, 7));
	add_num(o, "durationMs", db_get(r, row, 8));
	add_str(o, "error", db_get(r, row, 9));
	add_str(o, "consumer", db_get(r, row, 10));
	add_num(o, "maxAttempts", db_get(r, row, 11));
	add_str(o, "source", db_get(r, row, 12));
	const char *payload = db_get(r, row, 13);
	cJSON *p = payload ? cJSON_Parse(payload) : NULL;
	if (p)
		cJSON_AddItemToObject(o, "payload", p);
	else
		cJSON_AddNullToObject(o, "payload");
	return o;
}

static void h_run_get(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	const char *id = httpd_param(req, "id");
	if (!id || !run_id_valid(id, strlen(id))) {
		answer_no_run(resp, "run", NULL);
		return;
	}
	const char *p[1] = { id };
	struct api_conn *c = borrow(api);
	PGresult *r = api_query(c, "select " RUN_COLUMNS " from job_runs where id = $1", 1, p);
	give_back(api, c);
	if (!r) {
		answer_db_down(resp);
		return;
	}
	if (PQntuples(r) == 0)
		answer_no_run(resp, "run", id);
	else
		httpd_json(resp, 200, run_json(r, 0));
	PQclear(r);
}

static void h_dead(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	const char *lim = httpd_query(req, "limit");
	int64_t limit = DEAD_LIMIT_DEFAULT;
	if (lim && parse_i64(lim, 1, DEAD_LIMIT_MAX, &limit)) {
		httpd_error(resp, 400, "bad_request", "limit must be a whole number from 1 to %d", DEAD_LIMIT_MAX);
		return;
	}
	char l[16];
	snprintf(l, sizeof l, "%lld", (long long)limit);
	const char *p[1] = { l };
	struct api_conn *c = borrow(api);
	PGresult *r = api_query(c, "select " RUN_COLUMNS " from job_runs where status = 'dead'"
				       " order by finished_at desc nulls last, id desc limit $1::int", 1, p);
	give_back(api, c);
	if (!r) {
		answer_db_down(resp);
		return;
	}
	cJSON *o = cJSON_CreateObject();
	cJSON *runs = cJSON_AddArrayToObject(o, "runs");
	for (int i = 0; i < PQntuples(r); i++)
		cJSON_AddItemToArray(runs, run_json(r, i));
	PQclear(r);
	httpd_json(resp, 200, o);
}

#define RETRY_SET \
	"status = 'queued', attempts = 0, source = 'retry', error = null," \
	" run_at = now(), enqueued_at = now(), started_at = null, finished_at = null," \
	" duration_ms = null, consumer = null, lease_until = null, transport = $2, updated_at = now()"

/* Redis mode's retry as one step: the row turns queued inside a
 * transaction that commits only once the run is on the stream (or, Redis
 * down, on the PostgreSQL queue); when Redis's answer is lost the
 * transaction is rolled back and the run stays dead, never queued in
 * neither place.  The enqueue carries an idempotency key made of the id
 * and the death's finished_at, so the resend after a lost answer -- and a
 * client's second retry of the same death -- cannot put it on the stream
 * twice.  Returns 202, 404, 503 (database) or 504 (outcome unknown). */
static int retry_dead_redis(struct api_conn *c, struct queue *rq, const char *id, char *job,
			    size_t joblen, char *err, size_t errlen)
{
	PGresult *b = api_query(c, "begin", 0, NULL);   /* a pooled connection may have died idle */
	if (!b)
		return 503;
	PQclear(b);
	uint64_t gen = c->db.generation;
	const char *p[2] = { id, "redis" };
	PGresult *r = db_query(&c->db,
		"update job_runs j set " RETRY_SET
		" from (select id, finished_at from job_runs where id = $1 and status = 'dead' for update) o"
		" where j.id = o.id"
		" returning j.job, j.org_id, j.payload::text, j.max_attempts,"
		"   coalesce((extract(epoch from o.finished_at) * 1000)::bigint, 0)", 2, p);
	if (!r || PQntuples(r) == 0) {
		int st = r ? 404 : 503;
		PQclear(r);
		db_exec(&c->db, "rollback", 0, NULL);
		return st;
	}
	char key[RUN_MAX_IDEM_LEN + 1];
	snprintf(key, sizeof key, "dead-retry:%s:%s", id, db_get(r, 0, 4));
	snprintf(job, joblen, "%s", db_get(r, 0, 0));
	struct run run = { .job = (char *)db_get(r, 0, 0), .org_id = (char *)db_get(r, 0, 1),
			   .payload = (char *)db_get(r, 0, 2), .source = RUN_SRC_RETRY,
			   .idempotency_key = key,
			   .max_attempts = (int)db_get_i64(r, 0, 3, 5), .enqueued_at_ms = wall_ms() };
	snprintf(run.id, sizeof run.id, "%s", id);
	int erc = rq->ops->enqueue(rq, &run, 1);
	if (erc == QUEUE_EUNKNOWN) {
		/* the answer was lost: ask again on a fresh connection; the key
		 * makes the second send a no-op if the first went in */
		snprintf(err, errlen, "%s", rq->errstr);
		enqueuer_drop(&c->enq, rq);
		struct queue *q2 = NULL;
		char e2[256];
		if (queue_redis_open(c->enq.cfg, c->enq.name, &q2, e2, sizeof e2) == 0) {
			erc = q2->ops->enqueue(q2, &run, 1);
			if (erc)
				snprintf(err, errlen, "%s", q2->errstr);
			q2->ops->destroy(q2);
		}
		if (erc) {   /* whatever failed now, the first send may have gone in */
			db_exec(&c->db, "rollback", 0, NULL);   /* stays dead: retry it again */
			PQclear(r);
			return 504;
		}
		rq = NULL;   /* dropped */
	}
	int status = 202;
	if (erc) {
		/* nothing reached Redis: the PostgreSQL queue carries it */
		if (rq) {
			snprintf(err, errlen, "%s", rq->errstr);
			enqueuer_drop(&c->enq, rq);
		}
		const char *pp[1] = { id };
		if (db_exec(&c->db, "update job_runs set transport = 'pg' where id = $1", 1, pp))
			status = 503;
	}
	PQclear(r);
	if (status == 202 && (db_exec(&c->db, "commit", 0, NULL) || c->db.generation != gen))
		status = 503;   /* the transaction died with its connection */
	if (status != 202)
		db_exec(&c->db, "rollback", 0, NULL);
	else if (erc)
		db_exec(&c->db, "select pg_notify('jobrunner_runs', '')", 0, NULL);
	return status;
}

/* Retry: the dead row becomes queued again with fresh attempts, under its
 * own id; then the run is put on the stream (Redis mode, retry_dead_redis)
 * or is claimable from job_runs directly (transport 'pg'). */
static void h_dead_retry(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	const char *id = httpd_param(req, "id");
	if (!id || !run_id_valid(id, strlen(id))) {
		answer_no_run(resp, "dead run", NULL);
		return;
	}
	struct api_conn *c = borrow(api);
	struct queue *rq = enqueuer_redis(&c->enq);
	char job[RUN_MAX_JOB_LEN + 1] = "";
	char err[256] = "";
	int status;
	if (rq) {
		status = retry_dead_redis(c, rq, id, job, sizeof job, err, sizeof err);
	} else {
		const char *p[2] = { id, "pg" };
		PGresult *r = api_query(c, "update job_runs set " RETRY_SET
					   " where id = $1 and status = 'dead' returning job", 2, p);
		status = !r ? 503 : PQntuples(r) == 0 ? 404 : 202;
		if (status == 202) {
			snprintf(job, sizeof job, "%s", db_get(r, 0, 0));
			db_exec(&c->db, "select pg_notify('jobrunner_runs', '')", 0, NULL);
		}
		PQclear(r);
	}
	give_back(api, c);
	if (status == 404) {
		answer_no_run(resp, "dead run", id);
	} else if (status == 504) {
		LOGF(LOG_WARN, "enqueue_outcome_unknown", "Redis failed after the retried run was sent; "
		     "the run stays dead", LF_S("runId", id), LF_S("error", err));
		httpd_error(resp, 503, "enqueue_outcome_unknown", "Redis failed while taking the run; it "
			    "stays dead: retry again (the same death is never queued twice)");
	} else if (status == 503) {
		answer_db_down(resp);
	} else {
		jrm_enqueued(job, 1);
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "id", id);
		cJSON_AddStringToObject(o, "job", job);
		cJSON_AddStringToObject(o, "status", "queued");
		httpd_json(resp, 202, o);
	}
}

/* ------------------------------------------------------------------ */
/* the table and the lifecycle                                         */
/* ------------------------------------------------------------------ */

static const struct httpd_route routes[] = {
	{ "GET", "/api/health", httpd_ok, 0 },
	{ "GET", "/api/health/extended", h_health_extended, 0 },
	{ "GET", "/api/integrations/jobs/metrics", h_jobs_metrics, 0 },
	{ "GET", "/metrics", h_prometheus, 0 },
	{ "GET", "/api/integrations/jobs/dead", h_dead, HTTPD_AUTH },
	{ "POST", "/api/integrations/jobs/dead/{id}/retry", h_dead_retry, HTTPD_AUTH },
	{ "GET", "/api/integrations/jobs/runs/{id}", h_run_get, HTTPD_AUTH },
	{ "POST", "/api/integrations/jobs/{job}/run", h_run, HTTPD_AUTH },
};

int producer_api_start(const struct config *cfg, struct worker *w, struct producer_api **out)
{
	struct producer_api *api = xcalloc(1, sizeof *api);
	api->cfg = cfg;
	api->w = w;
	api->started_ms = mono_ms();
	pthread_mutex_init(&api->mu, NULL);
	pthread_cond_init(&api->cv, NULL);
	for (int i = 0; i < API_POOL; i++) {
		db_init(&api->conns[i].db, cfg->database_url, "jobrunner-api", 10000);
		enqueuer_init(&api->conns[i].enq, cfg, "producer");
	}
	jrm_init();
	jrm_queue_depth_source(queue_depth, api);

	struct httpd_options opt;
	httpd_options_init(&opt);
	opt.port = (int)cfg->port;
	opt.api_token = cfg->api_token;
	opt.max_body_bytes = (size_t)cfg->http_max_body_bytes;
	opt.max_connections = (unsigned)cfg->http_max_connections;
	opt.conn_timeout_ms = cfg->http_timeout_ms;
	opt.threads = API_POOL;
	char err[256];
	int rc = httpd_start(&opt, routes, JR_ARRAY_LEN(routes), api, &api->srv, err, sizeof err);
	if (rc < 0) {
		LOGF(LOG_ERROR, "startup_failed", "cannot serve HTTP", LF_I("port", cfg->port), LF_S("error", err));
		producer_api_stop(api);
		*out = NULL;
		return EXIT_USAGE;
	}
	*out = api;
	return -1;
}

void producer_api_stop(struct producer_api *api)
{
	if (!api)
		return;
	httpd_stop(api->srv);
	for (int i = 0; i < API_POOL; i++) {
		db_release(&api->conns[i].db);
		enqueuer_release(&api->conns[i].enq);
		if (api->conns[i].rc_ok)
			rconn_release(&api->conns[i].rc);
	}
	pthread_mutex_destroy(&api->mu);
	pthread_cond_destroy(&api->cv);
	free(api);
}
