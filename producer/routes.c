/* routes.c -- the producer's HTTP API (docs/operations.md, "Endpoints").
 *
 * The routes are a table; each handler validates its input and answers the
 * 4xx itself.  Handlers that touch PostgreSQL or Redis run on httpd's
 * worker threads (opt.workers), several at once, so each borrows a
 * connection set (struct api_conn: a PostgreSQL connection, an enqueuer
 * with its Redis and PostgreSQL queue handles, a Redis connection for the
 * dashboard's latency figure) from a small pool for the
 * length of the request: no connection is ever used by two threads, and
 * there is no connect per request.  /api/health, /api/health/extended and
 * /metrics are HTTPD_INLINE: they answer on the polling threads from the
 * process alone and the background probe (probe.h), so they answer while
 * every worker waits on a stalled dependency.  Their answers are
 * health_answer.c's, the same code as the consumer's health port.
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
#include "control.h"
#include "dashauth.h"
#include "dashboard.h"
#include "db.h"
#include "enqueue.h"
#include "health_answer.h"
#include "httpd.h"
#include "jrmetrics.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "producer.h"
#include "rconn.h"
#include "registry.h"
#include "runlookup.h"
#include "runreq.h"
#include "session.h"
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
	struct probe *probe;         /* health/extended and the queue depth (probe.h) */
	struct dashauth *auth;       /* the dashboard's sessions; NULL when off */
	pthread_mutex_t stats_mu;    /* the stats answer, shared for STATS_CACHE_MS */
	char *stats_text;
	char stats_key[64];
	int64_t stats_at;
	pthread_mutex_t series_mu;   /* the settled buckets (struct series_cache) */
	struct series_cache *series;
};

struct dashauth *producer_dashauth(void *app)
{
	return ((struct producer_api *)app)->auth;
}

const struct config *producer_config(void *app)
{
	return ((struct producer_api *)app)->cfg;
}

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

/* SQL text values become JSON with control_json_str/num (control.h). */
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

/* The answer is health_answer.c's, shared with the consumer. */
static void h_health_extended(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	struct health_source src = {
		.cfg = api->cfg, .probe = api->probe, .started_ms = api->started_ms, .worker_mode = 0,
	};
	health_answer_ready(req, resp, &src);
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

/* The "queue" object of the metrics and stats answers: the counts of the
 * queue's backend, all 0 with an "error" when they could not be read (qs
 * NULL). */
static cJSON *add_queue_json(cJSON *o, const struct queue_stats *qs, const char *backend,
			     const struct config *cfg)
{
	cJSON *q = cJSON_AddObjectToObject(o, "queue");
	cJSON_AddStringToObject(q, "backend", qs ? backend : (cfg->redis_url ? "redis" : "postgres"));
	cJSON_AddNumberToObject(q, "queued", qs ? (double)qs->queued : 0);
	cJSON_AddNumberToObject(q, "running", qs ? (double)qs->running : 0);
	cJSON_AddNumberToObject(q, "delayed", qs ? (double)qs->delayed : 0);
	cJSON_AddNumberToObject(q, "dead", qs ? (double)qs->dead : 0);
	if (!qs)
		cJSON_AddStringToObject(q, "error", "queue statistics unavailable");
	return q;
}

/* One consumer of the queue's statistics, as the answers list it. */
static cJSON *consumer_json(const struct queue_consumer_stat *c)
{
	cJSON *co = cJSON_CreateObject();
	cJSON_AddStringToObject(co, "name", c->name);
	cJSON_AddNumberToObject(co, "pending", (double)c->pending);
	cJSON_AddNumberToObject(co, "idleMs", (double)c->idle_ms);
	return co;
}

/* ------------------------------------------------------------------ */

/* The orgs with work waiting, for the metrics JSON: the 20 with the most
 * queued runs (due or delayed; runs without an org are org null), and the
 * orgs whose runs per-org limits are holding back, with why.  From
 * job_runs, which shows Redis mode's runs too (the history writer), so
 * every consumer's deferrals are seen, not this process's. */
#define ORGS_TOP 20
static const char org_backlog_sql[] =
	"select org_id, count(*) filter (where run_at <= now()), count(*) filter (where run_at > now())"
	"  from job_runs where status = 'queued'"
	" group by org_id order by count(*) desc, org_id limit 20";
static const char org_deferred_sql[] =
	"select org_id, reason, sum(runs)::bigint, " ISO("max(until)")
	"  from (select org_id, case when error like 'org rate limit%' then 'rate_limit'"
	"                            when error like 'org concurrency%' then 'concurrency'"
	"                            else 'graph_throttle' end as reason, 1 as runs, run_at as until"
	"          from job_runs where status = 'queued' and run_at > now() and org_id is not null"
	"           and (error like 'org rate limit%' or error like 'org concurrency%'"
	"                or error like 'org throttled%')"
	"        union all"
	"        select org_id, 'graph_throttle', 0, until from org_throttle where until > now()) d"
	" group by org_id, reason order by sum(runs) desc, org_id limit 20";

static void add_orgs(cJSON *o, PGresult *backlog, PGresult *deferred)
{
	cJSON *orgs = cJSON_AddObjectToObject(o, "orgs");
	cJSON *b = cJSON_AddArrayToObject(orgs, "backlog");
	for (int i = 0; backlog && i < PQntuples(backlog) && i < ORGS_TOP; i++) {
		cJSON *e = cJSON_CreateObject();
		control_json_str(e, "org", db_get(backlog, i, 0));
		cJSON_AddNumberToObject(e, "queued", (double)db_get_i64(backlog, i, 1, 0));
		cJSON_AddNumberToObject(e, "delayed", (double)db_get_i64(backlog, i, 2, 0));
		cJSON_AddItemToArray(b, e);
	}
	cJSON *d = cJSON_AddArrayToObject(orgs, "deferred");
	for (int i = 0; deferred && i < PQntuples(deferred) && i < ORGS_TOP; i++) {
		cJSON *e = cJSON_CreateObject();
		control_json_str(e, "org", db_get(deferred, i, 0));
		control_json_str(e, "reason", db_get(deferred, i, 1));
		cJSON_AddNumberToObject(e, "runs", (double)db_get_i64(deferred, i, 2, 0));
		control_json_str(e, "until", db_get(deferred, i, 3));
		cJSON_AddItemToArray(d, e);
	}
	if (!backlog || !deferred)
		cJSON_AddStringToObject(orgs, "error", "org statistics unavailable");
}

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
	uint64_t paused = 0;
	if (control_load_paused(&c->db, &paused)) {
		PQclear(r);
		give_back(api, c);
		answer_db_down(resp);
		return;
	}
	PGresult *backlog = api_query(c, org_backlog_sql, 0, NULL);
	PGresult *deferred = backlog ? api_query(c, org_deferred_sql, 0, NULL) : NULL;
	struct queue_stats qs;
	const char *backend;
	int have_q = enqueuer_stats(&c->enq, &qs, &backend) == 0 ||
		     enqueuer_stats(&c->enq, &qs, &backend) == 0;   /* once more on a fresh connection */
	give_back(api, c);

	cJSON *o = cJSON_CreateObject();
	add_orgs(o, backlog, deferred);
	PQclear(backlog);
	PQclear(deferred);
	int whole = -1;
	for (int i = 0; i < PQntuples(r); i++)
		if (!strcmp(PQgetvalue(r, i, 0), "job_runner"))
			whole = i;
	control_json_str(o, "lastRunAt", whole >= 0 ? db_get(r, whole, 1) : NULL);
	control_json_num(o, "lastRunDurationMs", whole >= 0 ? db_get(r, whole, 2) : NULL);
	cJSON *jobs = cJSON_AddArrayToObject(o, "jobs");
	size_t n;
	const struct job_def *defs = registry_all(&n);
	for (size_t j = 0; j < n; j++) {
		cJSON *jo = cJSON_CreateObject();
		cJSON_AddStringToObject(jo, "name", defs[j].name);
		cJSON_AddBoolToObject(jo, "enabled", registry_enabled(&defs[j], cfg));
		cJSON_AddBoolToObject(jo, "paused", j < 64 && (paused >> j & 1));
		if (defs[j].interval_ms)
			cJSON_AddNumberToObject(jo, "intervalMs", (double)defs[j].interval_ms(cfg));
		else
			cJSON_AddNullToObject(jo, "intervalMs");
		int row = -1;
		for (int i = 0; i < PQntuples(r); i++)
			if (!strcmp(PQgetvalue(r, i, 0), defs[j].name))
				row = i;
		control_json_str(jo, "lastRunAt", row >= 0 ? db_get(r, row, 1) : NULL);
		control_json_num(jo, "lastRunDurationMs", row >= 0 ? db_get(r, row, 2) : NULL);
		control_json_str(jo, "lastStatus", row >= 0 ? db_get(r, row, 3) : NULL);
		cJSON_AddNumberToObject(jo, "runCount", row >= 0 ? (double)db_get_i64(r, row, 4, 0) : 0);
		cJSON_AddNumberToObject(jo, "failureCount", row >= 0 ? (double)db_get_i64(r, row, 5, 0) : 0);
		cJSON_AddItemToArray(jobs, jo);
	}
	PQclear(r);
	cJSON *q = add_queue_json(o, have_q ? &qs : NULL, backend, cfg);
	cJSON *cons = cJSON_AddArrayToObject(q, "consumers");
	for (size_t i = 0; have_q && i < qs.nconsumers; i++)
		cJSON_AddItemToArray(cons, consumer_json(&qs.consumers[i]));
	if (have_q)
		queue_stats_free(&qs);
	httpd_json(resp, 200, o);
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
	if (!bulk && runs[0].run_at_ms > wall_ms())
		snprintf(status_now, sizeof status_now, "delayed");
	struct api_conn *c = borrow(api);
	int rc = enqueuer_submit(&c->enq, runs, n, &backend, err, sizeof err);
	if (rc == QUEUE_EDOWN)   /* a pooled connection that died idle: once more, on a new one */
		rc = enqueuer_submit(&c->enq, runs, n, &backend, err, sizeof err);
	if (rc == 0 && mine[0] && strcmp(mine, runs[0].id)) {
		const char *p[1] = { runs[0].id };
		PGresult *r = api_query(c, "select case when status = 'queued' and run_at > now() then 'delayed'"
					   " else status end from job_runs where id = $1", 1, p);
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
			if (runs[0].run_at_ms > 0 && !strcmp(status_now, "delayed")) {
				char at[32];
				iso8601_ms(runs[0].run_at_ms, at, sizeof at);
				cJSON_AddStringToObject(o, "runAt", at);
			}
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

/* answer_db_down() when the database did not answer (r NULL): 1, else 0. */
static int db_down(struct httpd_response *resp, const void *r)
{
	if (r)
		return 0;
	answer_db_down(resp);
	return 1;
}

/* The route's {id}, or NULL after answering 404 for what ("run", "dead run"). */
static const char *run_id_param(struct httpd_request *req, struct httpd_response *resp,
				const char *what)
{
	const char *id = httpd_param(req, "id");
	if (id && run_id_valid(id, strlen(id)))
		return id;
	answer_no_run(resp, what, NULL);
	return NULL;
}

/* GET /runs/{id}.  JOB_HISTORY=failures keeps no row of a run still queued
 * or running, nor of one that succeeded at its first attempt: in Redis mode
 * such a run is looked up in Redis (runlookup.h) while Redis still holds
 * it, and job_runs is read once more after the lookup (the history writer
 * may have written the row meanwhile: the row wins).  Redis-less mode has
 * nothing to look in. */
static void h_run_get(struct httpd_request *req, struct httpd_response *resp)
{
	const char *id = run_id_param(req, resp, "run");
	if (!id)
		return;
	struct producer_api *api = req->app;
	struct api_conn *c = borrow(api);
	PGresult *r = control_get_run(&c->db, id);
	if (!r && !c->db.conn)
		r = control_get_run(&c->db, id);   /* a pooled connection that died idle */
	int failures = api->cfg->job_history && !strcmp(api->cfg->job_history, "failures");
	if (!r || PQntuples(r) > 0 || !failures || !api->cfg->redis_url) {
		give_back(api, c);
		if (db_down(resp, r))
			return;
		if (PQntuples(r) == 0 && failures)
			httpd_error(resp, 404, "unknown_run",
				    "no run with id %s is recorded: with JOB_HISTORY=failures a run has a row"
				    " only once an attempt of it failed, went dead or was cancelled (runs that"
				    " succeeded at once, and runs still queued or running, have none)", id);
		else if (PQntuples(r) == 0)
			answer_no_run(resp, "run", id);
		else
			httpd_json(resp, 200, control_run_json(r, 0));
		PQclear(r);
		return;
	}
	PQclear(r);
	struct queue *rq = enqueuer_redis(&c->enq);
	if (!rq) {
		give_back(api, c);
		httpd_error(resp, 503, "queue_unavailable",
			    "run %s has no row (JOB_HISTORY=failures) and Redis, which may still hold it,"
			    " is unavailable; try again later", id);
		return;
	}
	enum runlookup_result res;
	cJSON *found = NULL;
	int rc = runlookup(rq, id, &res, &found);
	if (rc) {
		LOGF(LOG_WARN, "run_lookup_failed", "looking a run up in Redis failed", LF_S("runId", id),
		     LF_S("error", rq->errstr));
		if (rq->err)
			enqueuer_drop(&c->enq, rq);
		give_back(api, c);
		httpd_error(resp, 503, "queue_unavailable",
			    "run %s has no row (JOB_HISTORY=failures) and Redis, which may still hold it,"
			    " is unavailable; try again later", id);
		return;
	}
	r = control_get_run(&c->db, id);
	if (!r && !c->db.conn)
		r = control_get_run(&c->db, id);
	give_back(api, c);
	if (db_down(resp, r)) {
		cJSON_Delete(found);
		return;
	}
	if (PQntuples(r) > 0) {
		cJSON_Delete(found);
		httpd_json(resp, 200, control_run_json(r, 0));
	} else if (res == RUNLOOKUP_FOUND) {
		httpd_json(resp, 200, found);
	} else if (res == RUNLOOKUP_GONE) {
		httpd_error(resp, 404, "unknown_run",
			    "no run with id %s is recorded, and Redis no longer holds it: with"
			    " JOB_HISTORY=failures a run that succeeded at its first attempt has no row,"
			    " and Redis keeps its entry only until the workers and the history writer"
			    " have passed it (moments after it ends)", id);
	} else {
		httpd_error(resp, 404, "unknown_run",
			    "no run with id %s is recorded, and Redis does not show it within the"
			    " lookup's bounds: with JOB_HISTORY=failures a run that succeeded at its"
			    " first attempt has no row, and Redis keeps its entry only for a while", id);
	}
	PQclear(r);
}

/* GET /runs?job=&orgId=&status=&since=&until=&limit=&cursor= */
static void h_runs(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	static const char *const known[] = { "job", "orgId", "status", "since", "until", "limit", "cursor" };
	const char *bad = httpd_query_unknown(req, known, JR_ARRAY_LEN(known));
	if (bad) {
		httpd_error(resp, 400, "bad_request", "unknown filter '%.40s' (expected job, orgId, status, since, until, limit, cursor)", bad);
		return;
	}
	struct control_search s = { .limit = CONTROL_SEARCH_LIMIT_DEFAULT };
	s.job = httpd_query(req, "job");
	s.org_id = httpd_query(req, "orgId");
	s.status = httpd_query(req, "status");
	const char *since = httpd_query(req, "since"), *until = httpd_query(req, "until");
	const char *lim = httpd_query(req, "limit"), *cur = httpd_query(req, "cursor");
	char after[65];
	int64_t limit = CONTROL_SEARCH_LIMIT_DEFAULT;
	if (s.job && !registry_find(s.job)) {
		httpd_error(resp, 400, "bad_request", "job: unknown job '%.64s'", s.job);
		return;
	}
	if (s.org_id && (!*s.org_id || strlen(s.org_id) > RUN_MAX_ORG_LEN)) {
		httpd_error(resp, 400, "bad_request", "orgId must be 1 to %d characters", RUN_MAX_ORG_LEN);
		return;
	}
	if (s.status && !control_status_valid(s.status)) {
		httpd_error(resp, 400, "bad_request",
			    "status must be one of queued, delayed, running, succeeded, failed, dead, cancelled");
		return;
	}
	if (since && iso8601_parse_ms(since, &s.since_ms)) {
		httpd_error(resp, 400, "bad_request", "since must be an ISO-8601 UTC time, e.g. 2026-01-02T03:04:05Z");
		return;
	}
	if (until && iso8601_parse_ms(until, &s.until_ms)) {
		httpd_error(resp, 400, "bad_request", "until must be an ISO-8601 UTC time, e.g. 2026-01-02T03:04:05Z");
		return;
	}
	if (lim && parse_i64(lim, 1, CONTROL_SEARCH_LIMIT_MAX, &limit)) {
		httpd_error(resp, 400, "bad_request", "limit must be a whole number from 1 to %d", CONTROL_SEARCH_LIMIT_MAX);
		return;
	}
	if (cur && control_cursor_decode(cur, &s.after_us, after, sizeof after)) {
		httpd_error(resp, 400, "bad_request", "cursor is malformed (give back the nextCursor of an answer)");
		return;
	}
	s.limit = (int)limit;
	s.after_id = cur ? after : NULL;
	struct api_conn *c = borrow(api);
	PGresult *r = control_search_runs(&c->db, &s);
	if (!r && !c->db.conn)
		r = control_search_runs(&c->db, &s);
	give_back(api, c);
	if (db_down(resp, r))
		return;
	int rows = PQntuples(r);
	cJSON *o = cJSON_CreateObject();
	cJSON *runs = cJSON_AddArrayToObject(o, "runs");
	for (int i = 0; i < rows && i < s.limit; i++)
		cJSON_AddItemToArray(runs, control_run_json(r, i));
	if (rows > s.limit) {
		char next[CONTROL_CURSOR_MAX];
		control_cursor_encode(r, s.limit - 1, next, sizeof next);
		cJSON_AddStringToObject(o, "nextCursor", next);
	} else {
		cJSON_AddNullToObject(o, "nextCursor");
	}
	PQclear(r);
	httpd_json(resp, 200, o);
}

/* The Redis handle for a control operation: NULL in Redis-less mode; 1 with
 * a 503 answered when Redis mode has no Redis now. */
static int control_redis(struct api_conn *c, const struct config *cfg, struct queue **rq,
			 struct httpd_response *resp)
{
	*rq = cfg->redis_url ? enqueuer_redis(&c->enq) : NULL;
	if (cfg->redis_url && !*rq) {
		httpd_error(resp, 503, "queue_unavailable", "Redis is unavailable; try again later");
		return 1;
	}
	return 0;
}

/* POST /runs/{id}/cancel */
static void h_run_cancel(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	const char *id = httpd_param(req, "id");
	if (!id || !run_id_valid(id, strlen(id))) {
		answer_no_run(resp, "run", NULL);
		return;
	}
	struct api_conn *c = borrow(api);
	struct queue *rq;
	if (control_redis(c, api->cfg, &rq, resp)) {
		give_back(api, c);
		return;
	}
	enum queue_cancel_result res;
	char status[16], job[RUN_MAX_JOB_LEN + 1], err[256];
	int rc = queue_cancel(&c->db, rq, id, &res, status, sizeof status, job, sizeof job, err, sizeof err);
	if (rc == QUEUE_EDOWN && !c->db.conn)
		rc = queue_cancel(&c->db, rq, id, &res, status, sizeof status, job, sizeof job, err, sizeof err);
	if (rc && rq && rq->err)
		enqueuer_drop(&c->enq, rq);
	give_back(api, c);
	if (rc) {
		LOGF(LOG_ERROR, "cancel_failed", "cancel failed", LF_S("runId", id), LF_S("error", err));
		httpd_error(resp, 503, "unavailable", "PostgreSQL or Redis is unavailable; try again later");
		return;
	}
	if (res == QUEUE_NOT_FOUND) {
		answer_no_run(resp, "run", id);
		return;
	}
	if (res == QUEUE_FINISHED) {
		httpd_error(resp, 409, "already_finished", "run %s already finished (%s)", id, status);
		return;
	}
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "id", id);
	cJSON_AddStringToObject(o, "job", job);
	cJSON_AddStringToObject(o, "status", res == QUEUE_CANCELLED ? "cancelled" : "running");
	cJSON_AddStringToObject(o, "previousStatus", status);
	cJSON_AddBoolToObject(o, "cancelRequested", 1);
	if (res == QUEUE_CANCELLED)
		jrm_finished(job, JRM_CANCELLED, -1);
	LOGF(LOG_INFO, "run_cancel_requested", res == QUEUE_CANCELLED ? "run cancelled" : "running run asked to stop",
	     LF_S("runId", id), LF_S("job", job), LF_S("previousStatus", status));
	httpd_json(resp, res == QUEUE_CANCELLED ? 200 : 202, o);
}

/* POST /{job}/pause and /{job}/resume */
static void pause_or_resume(struct httpd_request *req, struct httpd_response *resp, int on)
{
	struct producer_api *api = req->app;
	const char *job = httpd_param(req, "job");
	if (!registry_find(job)) {
		httpd_error(resp, 404, "unknown_job", "unknown job '%.64s'", job);
		return;
	}
	struct api_conn *c = borrow(api);
	int rc = control_pause(&c->db, job, on);
	if (rc && !c->db.conn)
		rc = control_pause(&c->db, job, on);
	give_back(api, c);
	if (rc) {
		answer_db_down(resp);
		return;
	}
	LOGF(LOG_INFO, on ? "job_paused" : "job_resumed", on ? "job paused" : "job resumed", LF_S("job", job));
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "job", job);
	cJSON_AddBoolToObject(o, "paused", on);
	httpd_json(resp, 200, o);
}

static void h_pause(struct httpd_request *req, struct httpd_response *resp) { pause_or_resume(req, resp, 1); }
static void h_resume(struct httpd_request *req, struct httpd_response *resp) { pause_or_resume(req, resp, 0); }

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
	/* payloads only while their running total stays within
	 * CONTROL_LIST_PAYLOAD_BYTES; later rows have none and say payloadOmitted
	 * (GET runs/{id} has it): the answer, and what PostgreSQL sends for
	 * it, stay bounded.  The columns are CONTROL_RUN_COLUMNS'. */
	char cap[24];
	snprintf(cap, sizeof cap, "%d", CONTROL_LIST_PAYLOAD_BYTES);
	const char *p[2] = { l, cap };
	struct api_conn *c = borrow(api);
	PGresult *r = api_query(c,
		"select id, job, org_id, status, attempts, enq, st, fin, duration_ms, error, consumer,"
		" max_attempts, source, case when total <= $2::bigint then payload end, runat, cancel"
		" from (select *, sum(octet_length(payload)) over (order by finished_at desc nulls last,"
		"              id desc rows unbounded preceding) as total"
		"       from (select id, job, org_id, status, attempts, " CONTROL_ISO("enqueued_at") " as enq,"
		"             " CONTROL_ISO("started_at") " as st, " CONTROL_ISO("finished_at") " as fin,"
		"             finished_at, duration_ms, error, consumer, max_attempts, source,"
		"             payload::text as payload, " CONTROL_ISO("run_at") " as runat,"
		"             " CONTROL_ISO("cancel_requested_at") " as cancel"
		"             from job_runs where status = 'dead'"
		"             order by finished_at desc nulls last, id desc limit $1::int) x) d"
		" order by finished_at desc nulls last, id desc", 2, p);
	give_back(api, c);
	if (db_down(resp, r))
		return;
	cJSON *o = cJSON_CreateObject();
	cJSON *runs = cJSON_AddArrayToObject(o, "runs");
	for (int i = 0; i < PQntuples(r); i++)
		cJSON_AddItemToArray(runs, control_run_json(r, i));
	PQclear(r);
	httpd_json(resp, 200, o);
}

/* Both retries go through queue_retry_dead() (queue_ctl.c), the dead →
 * queued transition: one run by id, or the dead runs a filter matches. */
static int retry(struct producer_api *api, const struct queue_dead_filter *f,
		 struct queue_retried **ids, size_t *n, struct httpd_response *resp)
{
	struct api_conn *c = borrow(api);
	struct queue *rq = enqueuer_redis(&c->enq);   /* NULL: Redis-less, or down (the PostgreSQL queue carries them) */
	char err[256];
	int rc = queue_retry_dead(&c->db, rq, f, ids, n, err, sizeof err);
	if (rc == QUEUE_EDOWN && !c->db.conn)
		rc = queue_retry_dead(&c->db, rq, f, ids, n, err, sizeof err);
	if (rc && rq && rq->err)
		enqueuer_drop(&c->enq, rq);
	give_back(api, c);
	if (rc == QUEUE_EUNKNOWN) {
		httpd_error(resp, 503, "enqueue_outcome_unknown", "%s", err);
		free(*ids);
		return -1;
	}
	if (rc) {
		answer_db_down(resp);
		free(*ids);
		return -1;
	}
	for (size_t i = 0; i < *n; i++)
		jrm_enqueued((*ids)[i].job, 1);
	return 0;
}

static void h_dead_retry(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	const char *id = run_id_param(req, resp, "dead run");
	if (!id)
		return;
	struct queue_dead_filter f = { .id = id, .limit = 1 };
	struct queue_retried *ids = NULL;
	size_t n = 0;
	if (retry(api, &f, &ids, &n, resp))
		return;
	if (n == 0) {
		answer_no_run(resp, "dead run", id);
		return;
	}
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "id", id);
	cJSON_AddStringToObject(o, "job", ids[0].job);
	cJSON_AddStringToObject(o, "status", "queued");
	free(ids);
	httpd_json(resp, 202, o);
}

#define BULK_RETRY_DEFAULT 100

/* POST /dead/retry {"job"?, "orgId"?, "since"?, "limit"?} */
static void h_dead_retry_bulk(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	struct queue_dead_filter f = { .limit = BULK_RETRY_DEFAULT };
	cJSON *doc = NULL;
	if (req->body_len) {
		doc = cJSON_ParseWithLength(req->body, req->body_len);
		if (!cJSON_IsObject(doc)) {
			cJSON_Delete(doc);
			httpd_error(resp, 400, "bad_request", "the body must be a JSON object {\"job\"?, \"orgId\"?, \"since\"?, \"limit\"?}");
			return;
		}
	}
	for (const cJSON *it = doc ? doc->child : NULL; it; it = it->next) {
		const char *k = it->string ? it->string : "";
		const char *why = NULL;
		if (cJSON_IsNull(it))
			continue;
		if (!strcmp(k, "job")) {
			if (!cJSON_IsString(it) || !registry_find(it->valuestring))
				why = "job must be the name of a job";
			else
				f.job = it->valuestring;
		} else if (!strcmp(k, "orgId")) {
			if (!cJSON_IsString(it) || !*it->valuestring || strlen(it->valuestring) > RUN_MAX_ORG_LEN)
				why = "orgId must be a string of 1 to 128 characters";
			else
				f.org_id = it->valuestring;
		} else if (!strcmp(k, "since")) {
			if (!cJSON_IsString(it) || iso8601_parse_ms(it->valuestring, &f.since_ms))
				why = "since must be an ISO-8601 UTC time, e.g. 2026-01-02T03:04:05Z";
		} else if (!strcmp(k, "limit")) {
			if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble ||
			    it->valuedouble < 1 || it->valuedouble > QUEUE_RETRY_MAX)
				why = "limit must be a whole number from 1 to 1000";
			else
				f.limit = (int)it->valuedouble;
		} else {
			why = "unknown field (expected job, orgId, since, limit)";
		}
		if (why) {
			httpd_error(resp, 400, "bad_request", "%s", why);
			cJSON_Delete(doc);
			return;
		}
	}
	struct queue_retried *ids = NULL;
	size_t n = 0;
	int rc = retry(api, &f, &ids, &n, resp);
	cJSON_Delete(doc);
	if (rc)
		return;
	cJSON *o = control_retried_json(ids, n);
	free(ids);
	httpd_json(resp, 200, o);
}

/* ------------------------------------------------------------------ */
/* stats: the dashboard's overview in one answer                       */
/* ------------------------------------------------------------------ */

/* GET /api/integrations/jobs/stats?window=1h&step=1m
 *
 * One answer for the dashboard's overview: per job its state and the last
 * window's finished runs by outcome; the queue's depth and consumers (the
 * transport's own counters: XLEN/XPENDING and the dead list in Redis mode,
 * counts in Redis-less mode); which consumer holds the cycle lock; the
 * PostgreSQL and Redis round trips; and finished runs per step over the
 * window by outcome.  The series is one index-only range scan of
 * job_runs_stats_idx (007_stats_index.sql: finished_at, job, status), so
 * its cost follows the runs finished in the window, not the size of the
 * table.  The text of the answer is shared for STATS_CACHE_MS between
 * callers asking the same window and step: ten open dashboards cost the
 * database what one does. */
#define STATS_CACHE_MS 1000
#define STATS_MAX_BUCKETS 1440
#define STATS_MAX_WINDOW_MS (7 * 86400000LL)

/* "90s", "5m", "1h", "2d" -> ms; -1 when malformed. */
static int64_t parse_span(const char *s)
{
	if (!s || !*s)
		return -1;
	size_t n = strlen(s);
	if (n > 8)
		return -1;
	char num[9];
	memcpy(num, s, n - 1);
	num[n - 1] = '\0';
	int64_t v, unit;
	switch (s[n - 1]) {
	case 's': unit = 1000; break;
	case 'm': unit = 60000; break;
	case 'h': unit = 3600000; break;
	case 'd': unit = 86400000; break;
	default: return -1;
	}
	if (parse_i64(num, 1, 100000, &v))
		return -1;
	return v * unit;
}

/* Finished runs per (step bucket, job, status).  A bucket that ended more
 * than SERIES_SETTLE_MS ago is counted once and kept here; each answer
 * then reads from job_runs only the runs finished since the last settled
 * bucket (a step or two), so a busy hour costs what its last minute does.
 * SERIES_SETTLE_MS covers the history writer's lag in Redis mode (a second
 * or two); a record written later than that into a settled bucket is not
 * added to it. */
#define SERIES_SETTLE_MS 10000

struct series_cell {
	int64_t bucket;                  /* start, ms since the epoch */
	char job[RUN_MAX_JOB_LEN + 1];
	char status[16];
	int64_t n;
};

struct series_cache {
	int64_t step_ms;
	int64_t settled_until;           /* buckets before this are in cells */
	struct series_cell *cells;
	size_t ncells, cap;
};

static void cells_add(struct series_cell **cells, size_t *n, size_t *cap, int64_t bucket,
		      const char *job, const char *status, int64_t count)
{
	for (size_t i = 0; i < *n; i++) {
		struct series_cell *c = &(*cells)[i];
		if (c->bucket == bucket && !strcmp(c->job, job) && !strcmp(c->status, status)) {
			c->n += count;
			return;
		}
	}
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 256;
		*cells = xrealloc(*cells, *cap * sizeof **cells);
	}
	struct series_cell *c = &(*cells)[(*n)++];
	c->bucket = bucket;
	snprintf(c->job, sizeof c->job, "%s", job);
	snprintf(c->status, sizeof c->status, "%s", status);
	c->n = count;
}

/* The cells of buckets [start, now] for step_ms: settled ones from the
 * cache, the rest from one indexed query.  0, or -1 when PostgreSQL failed.
 * *out is malloc'd (free it). */
static int series_cells(struct producer_api *api, struct api_conn *c, int64_t now, int64_t start,
			int64_t step_ms, struct series_cell **out, size_t *nout)
{
	pthread_mutex_lock(&api->series_mu);
	struct series_cache *sc = api->series;
	if (!sc)
		sc = api->series = xcalloc(1, sizeof *sc);
	if (sc->step_ms != step_ms || sc->settled_until < start) {
		sc->step_ms = step_ms;
		sc->settled_until = start;
		sc->ncells = 0;
	}
	size_t keep = 0;                 /* forget the buckets that left the window */
	for (size_t i = 0; i < sc->ncells; i++)
		if (sc->cells[i].bucket >= start)
			sc->cells[keep++] = sc->cells[i];
	sc->ncells = keep;
	int64_t settled = (now - SERIES_SETTLE_MS) / step_ms * step_ms;
	char p_from[32], p_step[32];
	snprintf(p_from, sizeof p_from, "%lld", (long long)sc->settled_until);
	snprintf(p_step, sizeof p_step, "%lld", (long long)step_ms);
	const char *p[2] = { p_from, p_step };
	PGresult *r = api_query(c,
		"select job, status,"
		"       (floor(extract(epoch from finished_at) * 1000 / $2::float8) * $2::float8)::bigint,"
		"       count(*)"
		"  from job_runs where finished_at >= to_timestamp($1::float8 / 1000)"
		" group by 1, 2, 3", 2, p);
	if (!r) {
		pthread_mutex_unlock(&api->series_mu);
		return -1;
	}
	struct series_cell *cells = NULL;
	size_t n = 0, cap = 0;
	for (size_t i = 0; i < sc->ncells; i++)
		cells_add(&cells, &n, &cap, sc->cells[i].bucket, sc->cells[i].job, sc->cells[i].status,
			  sc->cells[i].n);
	for (int i = 0; i < PQntuples(r); i++) {
		int64_t b = db_get_i64(r, i, 2, 0), cnt = db_get_i64(r, i, 3, 0);
		const char *job = PQgetvalue(r, i, 0), *st = PQgetvalue(r, i, 1);
		if (b < sc->settled_until)
			continue;        /* counted already (a clock step between two answers) */
		if (b < settled)
			cells_add(&sc->cells, &sc->ncells, &sc->cap, b, job, st, cnt);
		cells_add(&cells, &n, &cap, b, job, st, cnt);
	}
	PQclear(r);
	if (settled > sc->settled_until)
		sc->settled_until = settled;
	pthread_mutex_unlock(&api->series_mu);
	*out = cells;
	*nout = n;
	return 0;
}

static void stats_build(struct producer_api *api, int64_t window_ms, int64_t step_ms,
			const char *wtext, const char *stext, cJSON *o, int *status)
{
	const struct config *cfg = api->cfg;
	int64_t now = wall_ms();
	int64_t nb = window_ms / step_ms;
	int64_t start = (now / step_ms + 1) * step_ms - nb * step_ms;   /* the last bucket holds now */
	struct api_conn *c = borrow(api);
	int64_t db_lat = 0, r_lat = 0;
	int db_ok = db_ping(&c->db, &db_lat) == 0 || db_ping(&c->db, &db_lat) == 0;
	char db_err[256], r_err[256] = "";
	snprintf(db_err, sizeof db_err, "%s", c->db.errstr);
	struct series_cell *cells = NULL;
	size_t ncells = 0;
	int series_ok = db_ok && series_cells(api, c, now, start, step_ms, &cells, &ncells) == 0;
	PGresult *state = db_ok ? api_query(c,
		"select s.id, " ISO("s.\"lastRunAt\"") ", s.\"lastRunDurationMs\", s.\"lastStatus\","
		"       (extract(epoch from s.\"lastRunAt\") * 1000)::bigint"
		"  from job_runner_state s", 0, NULL) : NULL;
	PGresult *lock = db_ok ? api_query(c,
		"select holder, " ISO("acquired_at") ", " ISO("heartbeat_at") " from job_runner_lock limit 1",
		0, NULL) : NULL;
	uint64_t paused = 0;
	int paused_ok = db_ok && control_load_paused(&c->db, &paused) == 0;
	struct queue_stats qs;
	const char *backend;
	int have_q = enqueuer_stats(&c->enq, &qs, &backend) == 0 ||
		     enqueuer_stats(&c->enq, &qs, &backend) == 0;
	int r_ok = 1;
	if (cfg->redis_url)
		r_ok = redis_ping(c, cfg, &r_lat, r_err, sizeof r_err) == 0;
	give_back(api, c);

	char t[40];
	iso8601_ms(now, t, sizeof t);
	cJSON_AddStringToObject(o, "generatedAt", t);
	cJSON_AddStringToObject(o, "window", wtext);
	cJSON_AddStringToObject(o, "step", stext);

	/* the series: nb buckets of {t, <status>: n} */
	cJSON *ser = cJSON_AddObjectToObject(o, "series");
	iso8601_ms(start, t, sizeof t);
	cJSON_AddStringToObject(ser, "start", t);
	cJSON_AddNumberToObject(ser, "stepMs", (double)step_ms);
	cJSON *buckets = cJSON_AddArrayToObject(ser, "buckets");
	cJSON **b = xcalloc((size_t)nb, sizeof *b);
	for (int64_t i = 0; i < nb; i++) {
		b[i] = cJSON_CreateObject();
		iso8601_ms(start + i * step_ms, t, sizeof t);
		cJSON_AddStringToObject(b[i], "t", t);
		cJSON_AddItemToArray(buckets, b[i]);
	}

	size_t njobs;
	const struct job_def *defs = registry_all(&njobs);
	cJSON *jobs = cJSON_AddArrayToObject(o, "jobs");
	cJSON **window_counts = xcalloc(njobs ? njobs : 1, sizeof *window_counts);
	for (size_t j = 0; j < njobs; j++) {
		cJSON *jo = cJSON_CreateObject();
		cJSON_AddStringToObject(jo, "name", defs[j].name);
		cJSON_AddBoolToObject(jo, "enabled", !defs[j].enabled || defs[j].enabled(cfg));
		if (paused_ok)
			cJSON_AddBoolToObject(jo, "paused", j < 64 && (paused >> j & 1));
		else
			cJSON_AddNullToObject(jo, "paused");
		int64_t interval = defs[j].interval_ms ? defs[j].interval_ms(cfg) : 0;
		if (defs[j].interval_ms)
			cJSON_AddNumberToObject(jo, "intervalMs", (double)interval);
		else
			cJSON_AddNullToObject(jo, "intervalMs");
		int row = -1;
		for (int i = 0; state && i < PQntuples(state); i++)
			if (!strcmp(PQgetvalue(state, i, 0), defs[j].name))
				row = i;
		control_json_str(jo, "lastRunAt", row >= 0 ? db_get(state, row, 1) : NULL);
		control_json_num(jo, "lastRunDurationMs", row >= 0 ? db_get(state, row, 2) : NULL);
		control_json_str(jo, "lastStatus", row >= 0 ? db_get(state, row, 3) : NULL);
		if (defs[j].interval_ms && (!defs[j].enabled || defs[j].enabled(cfg))) {
			int64_t last = row >= 0 ? db_get_i64(state, row, 4, 0) : 0;
			int64_t due = last ? last + interval : now;
			iso8601_ms(due, t, sizeof t);
			cJSON_AddStringToObject(jo, "nextDueAt", t);
		} else {
			cJSON_AddNullToObject(jo, "nextDueAt");
		}
		window_counts[j] = cJSON_AddObjectToObject(jo, "window");
		cJSON_AddItemToArray(jobs, jo);
	}
	for (size_t i = 0; i < ncells; i++) {
		const char *job = cells[i].job, *st = cells[i].status;
		int64_t bi = (cells[i].bucket - start) / step_ms, n = cells[i].n;
		if (bi >= 0 && bi < nb) {
			cJSON *cur = cJSON_GetObjectItemCaseSensitive(b[bi], st);
			if (cur)
				cJSON_SetNumberValue(cur, cur->valuedouble + (double)n);
			else
				cJSON_AddNumberToObject(b[bi], st, (double)n);
		}
		for (size_t j = 0; j < njobs; j++) {
			if (strcmp(defs[j].name, job))
				continue;
			cJSON *cur = cJSON_GetObjectItemCaseSensitive(window_counts[j], st);
			if (cur)
				cJSON_SetNumberValue(cur, cur->valuedouble + (double)n);
			else
				cJSON_AddNumberToObject(window_counts[j], st, (double)n);
		}
	}
	free(b);
	free(window_counts);
	free(cells);

	const char *holder = lock && PQntuples(lock) ? db_get(lock, 0, 0) : NULL;
	add_queue_json(o, have_q ? &qs : NULL, backend, cfg);
	cJSON *cons = cJSON_AddArrayToObject(o, "consumers");
	for (size_t i = 0; have_q && i < qs.nconsumers; i++) {
		cJSON *co = consumer_json(&qs.consumers[i]);
		cJSON_AddBoolToObject(co, "holdsCycleLock", holder && !strcmp(holder, qs.consumers[i].name));
		cJSON_AddItemToArray(cons, co);
	}
	if (have_q)
		queue_stats_free(&qs);
	if (holder) {
		cJSON *l = cJSON_AddObjectToObject(o, "cycleLock");
		control_json_str(l, "holder", holder);
		control_json_str(l, "acquiredAt", db_get(lock, 0, 1));
		control_json_str(l, "heartbeatAt", db_get(lock, 0, 2));
	} else {
		cJSON_AddNullToObject(o, "cycleLock");
	}
	cJSON *h = cJSON_AddObjectToObject(o, "health");
	cJSON_AddItemToObject(h, "database", httpd_check(db_ok && series_ok && state, db_lat, db_err));
	cJSON *rh = httpd_check(r_ok, r_lat, r_err);
	cJSON_AddBoolToObject(rh, "configured", cfg->redis_url != NULL);
	cJSON_AddItemToObject(h, "redis", rh);
	*status = db_ok && series_ok && state ? 200 : 503;
	PQclear(state);
	PQclear(lock);
}

static void h_stats(struct httpd_request *req, struct httpd_response *resp)
{
	struct producer_api *api = req->app;
	const char *w = httpd_query(req, "window"), *st = httpd_query(req, "step");
	if (!w)
		w = "1h";
	if (!st)
		st = "1m";
	int64_t window_ms = parse_span(w), step_ms = parse_span(st);
	if (window_ms < 0 || window_ms > STATS_MAX_WINDOW_MS) {
		httpd_error(resp, 400, "bad_request", "window must be a duration such as 1h (1s to 7d)");
		return;
	}
	if (step_ms < 1000 || step_ms > window_ms || window_ms % step_ms || window_ms / step_ms > STATS_MAX_BUCKETS) {
		httpd_error(resp, 400, "bad_request",
			    "step must divide window into at most %d buckets of at least 1s", STATS_MAX_BUCKETS);
		return;
	}
	char key[64];
	snprintf(key, sizeof key, "%lld/%lld", (long long)window_ms, (long long)step_ms);
	pthread_mutex_lock(&api->stats_mu);
	if (api->stats_text && !strcmp(api->stats_key, key) && mono_ms() - api->stats_at < STATS_CACHE_MS) {
		httpd_json_str(resp, 200, api->stats_text);
		pthread_mutex_unlock(&api->stats_mu);
		return;
	}
	pthread_mutex_unlock(&api->stats_mu);

	cJSON *o = cJSON_CreateObject();
	int status = 200;
	stats_build(api, window_ms, step_ms, w, st, o, &status);
	char *text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!text) {
		fprintf(stderr, "jobrunner: out of memory printing JSON\n");
		abort();
	}
	if (status == 200) {
		pthread_mutex_lock(&api->stats_mu);
		free(api->stats_text);
		api->stats_text = xstrdup(text);
		snprintf(api->stats_key, sizeof api->stats_key, "%s", key);
		api->stats_at = mono_ms();
		pthread_mutex_unlock(&api->stats_mu);
	}
	httpd_json_str(resp, status, text);
	cJSON_free(text);
}

/* ------------------------------------------------------------------ */
/* the table and the lifecycle                                         */
/* ------------------------------------------------------------------ */

static const struct httpd_route routes[] = {
	{ "GET", "/api/health", httpd_ok, HTTPD_LIVENESS | HTTPD_INLINE },
	{ "GET", "/api/health/extended", h_health_extended, HTTPD_INLINE },
	{ "GET", "/api/integrations/jobs/metrics", h_jobs_metrics, 0 },
	{ "GET", "/metrics", health_answer_metrics, HTTPD_INLINE },
	{ "GET", "/api/integrations/jobs/dead", h_dead, HTTPD_AUTH },
	{ "POST", "/api/integrations/jobs/dead/retry", h_dead_retry_bulk, HTTPD_AUTH },
	{ "POST", "/api/integrations/jobs/dead/{id}/retry", h_dead_retry, HTTPD_AUTH | HTTPD_NO_BODY },
	{ "GET", "/api/integrations/jobs/runs", h_runs, HTTPD_AUTH },
	{ "GET", "/api/integrations/jobs/runs/{id}", h_run_get, HTTPD_AUTH },
	{ "POST", "/api/integrations/jobs/runs/{id}/cancel", h_run_cancel, HTTPD_AUTH },
	{ "GET", "/api/integrations/jobs/stats", h_stats, HTTPD_AUTH },
	{ "POST", "/api/integrations/jobs/{job}/run", h_run, HTTPD_AUTH },
	{ "POST", "/api/integrations/jobs/{job}/pause", h_pause, HTTPD_AUTH },
	{ "POST", "/api/integrations/jobs/{job}/resume", h_resume, HTTPD_AUTH },
	/* the dashboard (DASHBOARD_ENABLED): these rows last, left out when off */
	{ "GET", "/dashboard", dash_h_index, 0 },
	{ "GET", "/dashboard/session", dash_h_session, 0 },
	{ "POST", "/dashboard/login", dash_h_login, 0 },
	{ "POST", "/dashboard/logout", dash_h_logout, 0 },
	{ "GET", "/dashboard/{file}", dash_h_file, 0 },
};
#define DASH_ROUTES 5

int producer_api_start(const struct config *cfg, struct worker *w, struct producer_api **out)
{
	struct producer_api *api = xcalloc(1, sizeof *api);
	api->cfg = cfg;
	api->w = w;
	api->started_ms = mono_ms();
	pthread_mutex_init(&api->mu, NULL);
	pthread_cond_init(&api->cv, NULL);
	pthread_mutex_init(&api->stats_mu, NULL);
	pthread_mutex_init(&api->series_mu, NULL);
	if (cfg->dashboard_enabled)
		api->auth = dashauth_new(cfg->api_token, cfg->dashboard_session_ttl_ms);
	for (int i = 0; i < API_POOL; i++) {
		session_db_init(&api->conns[i].db, cfg, "jobrunner-api", 10000);
		enqueuer_init(&api->conns[i].enq, cfg, "producer");
	}
	jrm_init();
	api->probe = probe_start(cfg, "producer");
	jrm_queue_depth_source(probe_queue_depth, api->probe);
	control_watch_start(cfg);   /* jobrunner_job_paused{job} */

	struct httpd_options opt;
	httpd_options_init(&opt);
	opt.port = (int)cfg->port;
	opt.api_token = cfg->api_token;
	opt.max_body_bytes = (size_t)cfg->http_max_body_bytes;
	opt.max_connections = (unsigned)cfg->http_max_connections;
	opt.per_ip_max_connections = (unsigned)cfg->http_max_connections_per_ip;
	opt.bind_addr = cfg->http_bind_address;
	opt.conn_timeout_ms = cfg->http_timeout_ms;
	opt.threads = API_POOL;
	opt.workers = API_POOL;   /* handlers that wait on PostgreSQL or Redis */
	size_t nroutes = JR_ARRAY_LEN(routes);
	if (cfg->dashboard_enabled)
		opt.alt_auth = dash_alt_auth;   /* the session cookie, besides the Bearer token */
	else
		nroutes -= DASH_ROUTES;
	char err[256];
	int rc = httpd_start(&opt, routes, nroutes, api, &api->srv, err, sizeof err);
	if (rc < 0) {
		LOGF(LOG_ERROR, "startup_failed", "cannot serve HTTP", LF_I("port", cfg->port), LF_S("error", err));
		producer_api_stop(api);
		*out = NULL;
		return -1;
	}
	*out = api;
	return 0;
}

void producer_api_stop(struct producer_api *api)
{
	if (!api)
		return;
	httpd_stop(api->srv);
	probe_stop(api->probe);
	control_watch_stop();
	for (int i = 0; i < API_POOL; i++) {
		db_release(&api->conns[i].db);
		enqueuer_release(&api->conns[i].enq);
		if (api->conns[i].rc_ok)
			rconn_release(&api->conns[i].rc);
	}
	pthread_mutex_destroy(&api->mu);
	pthread_cond_destroy(&api->cv);
	pthread_mutex_destroy(&api->stats_mu);
	pthread_mutex_destroy(&api->series_mu);
	if (api->series)
		free(api->series->cells);
	free(api->series);
	free(api->stats_text);
	dashauth_free(api->auth);
	free(api);
}
