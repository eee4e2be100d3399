/* probe.c -- see probe.h. */
#include "probe.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "enqueue.h"
#include "httpd.h"
#include "jrmetrics.h"
#include "queue.h"
#include "rconn.h"
#include "session.h"
#include "util.h"

struct check {
	int done;                /* a result exists */
	int ok;
	int64_t latency_ms;
	char err[256];
	int64_t inflight_since;  /* mono ms a check started, 0 when none runs */
};

struct probe {
	const struct config *cfg;
	char name[128];
	pthread_t tid;
	int started;
	volatile int stop;
	pthread_mutex_t mu;      /* guards the fields below, never held across I/O */
	pthread_cond_t cv;       /* a check ended */
	struct check db, redis;
	int have_depth;
	struct queue_stats depth;   /* consumers not kept */
	uint64_t refused_seen;
	int64_t refused_at_ms;   /* mono ms connection refusals were last seen */
	char refused_err[160];
	/* the thread's own */
	struct db pdb;
	struct rconn rc;
	int rc_ok;
	struct enqueuer enq;
};

static void begin(struct probe *p, struct check *c)
{
	pthread_mutex_lock(&p->mu);
	c->inflight_since = mono_ms();
	pthread_mutex_unlock(&p->mu);
}

static void end(struct probe *p, struct check *c, int ok, int64_t lat, const char *err)
{
	pthread_mutex_lock(&p->mu);
	c->done = 1;
	c->ok = ok;
	c->latency_ms = lat;
	snprintf(c->err, sizeof c->err, "%s", ok ? "" : err);
	c->inflight_since = 0;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

/* Reads the queue counts (on the enqueuer's PostgreSQL handle, and Redis'
 * in Redis mode): 0, or -1 when PostgreSQL failed (err set). */
static int read_depth(struct probe *p, char *err, size_t errlen);

/* The ping and the queue counts are one check: while either waits on
 * PostgreSQL, the check is under way (and overdue past the budget). */
static void check_db(struct probe *p)
{
	char err[256];
	begin(p, &p->db);
	int64_t lat = 0;
	int ok = db_ping(&p->pdb, &lat) == 0;
	snprintf(err, sizeof err, "%s", p->pdb.errstr);
	if (ok && read_depth(p, err, sizeof err))
		ok = 0;
	end(p, &p->db, ok, lat, err);
}

static void check_redis(struct probe *p)
{
	char err[256] = "";
	begin(p, &p->redis);
	int64_t t0 = mono_ms();
	if (!p->rc_ok && (p->rc_ok = rconn_init(&p->rc, p->cfg->redis_url, NULL, 0, err, sizeof err) == 0))
		rconn_set_name(&p->rc, "health", p->name);
	/* a writable master, not only an answer (a replica answers PING) */
	int ok = p->rc_ok && rconn_check_master(&p->rc, NULL, err, sizeof err) == 0;
	end(p, &p->redis, ok, mono_ms() - t0, err);
}

static int read_depth(struct probe *p, char *err, size_t errlen)
{
	struct queue *pq = enqueuer_pg(&p->enq);
	if (!pq) {
		snprintf(err, errlen, "cannot connect for the queue counts");
		return -1;
	}
	queue_pg_set_timeout(pq, PROBE_TIMEOUT_MS);
	struct queue_stats qs;
	const char *backend;
	int64_t t0 = mono_ms();
	if (enqueuer_stats(&p->enq, &qs, &backend)) {
		/* the handle is gone with its message; the time tells which */
		if (mono_ms() - t0 >= PROBE_TIMEOUT_MS)
			snprintf(err, errlen, "database check timed out after %d ms", PROBE_TIMEOUT_MS);
		else
			snprintf(err, errlen, "the queue counts could not be read");
		return -1;
	}
	pthread_mutex_lock(&p->mu);
	p->depth = qs;
	p->depth.consumers = NULL;
	p->depth.nconsumers = 0;
	p->have_depth = 1;
	pthread_mutex_unlock(&p->mu);
	queue_stats_free(&qs);
	return 0;
}

/* Refusals (max_connections) seen by any connection of the process. */
static void read_refusals(struct probe *p)
{
	const char *roles[DB_MAX_ROLES];
	int64_t open[DB_MAX_ROLES];
	int n;
	uint64_t fails[DBF_NREASONS];
	db_connect_stats(roles, open, &n, fails);
	if (fails[DBF_TOO_MANY] == p->refused_seen)
		return;
	pthread_mutex_lock(&p->mu);
	p->refused_seen = fails[DBF_TOO_MANY];
	p->refused_at_ms = mono_ms();
	pthread_mutex_unlock(&p->mu);
}

static void *probe_thread(void *arg)
{
	struct probe *p = arg;
	while (!p->stop) {
		int64_t t0 = mono_ms();
		check_db(p);
		if (p->cfg->redis_url)
			check_redis(p);
		read_refusals(p);
		while (!p->stop && mono_ms() - t0 < PROBE_EVERY_MS)
			sleep_ms(50);
	}
	return NULL;
}

struct probe *probe_start(const struct config *cfg, const char *name)
{
	struct probe *p = xcalloc(1, sizeof *p);
	p->cfg = cfg;
	snprintf(p->name, sizeof p->name, "%s", name ? name : "");
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	session_db_init(&p->pdb, cfg, "jobrunner-health", 5000);
	p->pdb.client_timeout_ms = PROBE_TIMEOUT_MS;
	p->pdb.connect_timeout_s = 2;
	enqueuer_init(&p->enq, cfg, name);
	p->started = pthread_create(&p->tid, NULL, probe_thread, p) == 0;
	return p;
}

void probe_stop(struct probe *p)
{
	if (!p)
		return;
	p->stop = 1;
	if (p->started)
		pthread_join(p->tid, NULL);
	db_release(&p->pdb);
	enqueuer_release(&p->enq);
	if (p->rc_ok)
		rconn_release(&p->rc);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p);
}

/* One check's JSON, judged at now: a check under way past the budget has
 * failed, whatever it answers later. */
static cJSON *check_json(const struct httpd_request *req, const struct check *c, int64_t now,
			 const char *what, int *ok)
{
	if (c->inflight_since && now - c->inflight_since > PROBE_BUDGET_MS) {
		char msg[64];
		snprintf(msg, sizeof msg, "%s check timed out", what);
		*ok = 0;
		return httpd_check_for(req, what, 0, now - c->inflight_since, msg);
	}
	if (!c->done) {
		*ok = 0;
		return httpd_check_for(req, what, 0, 0, "not checked yet");
	}
	*ok = c->ok;
	return httpd_check_for(req, what, c->ok, c->latency_ms, c->err);
}

int probe_checks(struct probe *p, const struct httpd_request *req, cJSON *checks, int *redis_ok)
{
	int db_ok, r_ok = 1;
	pthread_mutex_lock(&p->mu);
	/* just started: the first results are due within the budget */
	int64_t until = mono_ms() + PROBE_BUDGET_MS;
	while ((!p->db.done || (p->cfg->redis_url && !p->redis.done)) && mono_ms() < until) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->cv, &p->mu, &ts);
	}
	int64_t now = mono_ms();
	cJSON *d = check_json(req, &p->db, now, "database", &db_ok);
	if (db_ok && p->refused_at_ms && now - p->refused_at_ms < PROBE_REFUSED_WINDOW_MS) {
		cJSON_Delete(d);
		db_ok = 0;
		d = httpd_check_for(req, "database", 0, p->db.latency_ms,
				    "PostgreSQL refuses new connections: too many clients (max_connections)");
	}
	cJSON_AddItemToObject(checks, "database", d);
	if (p->cfg->redis_url)
		cJSON_AddItemToObject(checks, "redis", check_json(req, &p->redis, now, "redis", &r_ok));
	pthread_mutex_unlock(&p->mu);
	if (redis_ok)
		*redis_ok = r_ok;
	return db_ok && r_ok;
}

void probe_queue_depth(void *ctx, struct metrics_emitter *emit)
{
	struct probe *p = ctx;
	pthread_mutex_lock(&p->mu);
	struct queue_stats qs = p->depth;
	int have = p->have_depth;
	pthread_mutex_unlock(&p->mu);
	if (have)
		jrm_emit_depth(emit, &qs);
}
