/* control.c -- see control.h. */
#include "control.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "queue.h"
#include "metrics.h"
#include "registry.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* pause                                                               */
/* ------------------------------------------------------------------ */

int control_pause(struct db *db, const char *job, int on)
{
	const char *p[1] = { job };
	return db_exec(db, on ? "insert into job_pause (job) values ($1) on conflict (job) do nothing"
			      : "delete from job_pause where job = $1", 1, p);
}

int control_load_paused(struct db *db, uint64_t *mask)
{
	PGresult *r = db_query(db, "select job from job_pause", 0, NULL);
	if (!r)
		return -1;
	size_t n;
	const struct job_def *jobs = registry_all(&n);
	uint64_t m = 0;
	for (int row = 0; row < PQntuples(r); row++)
		for (size_t i = 0; i < n && i < 64; i++)
			if (!strcmp(jobs[i].name, PQgetvalue(r, row, 0)))
				m |= (uint64_t)1 << i;
	PQclear(r);
	*mask = m;
	return 0;
}

static struct {
	_Atomic uint64_t mask;
	atomic_int stop;
	int started;
	pthread_t tid;
	struct db db;
} watch;

uint64_t control_paused_mask(void) { return atomic_load_explicit(&watch.mask, memory_order_relaxed); }

int control_paused(const char *job)
{
	size_t n;
	const struct job_def *jobs = registry_all(&n);
	uint64_t m = control_paused_mask();
	for (size_t i = 0; job && i < n && i < 64; i++)
		if (!strcmp(jobs[i].name, job))
			return (int)(m >> i & 1);
	return 0;
}

static void refresh(void)
{
	uint64_t m;
	if (control_load_paused(&watch.db, &m) == 0)
		atomic_store_explicit(&watch.mask, m, memory_order_relaxed);
	/* PostgreSQL down: keep the last copy (the PostgreSQL claim reads
	 * job_pause itself, and nothing is claimed from it meanwhile) */
}

static void *watch_main(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&watch.stop, memory_order_acquire)) {
		sleep_ms(CONTROL_PAUSE_REFRESH_MS);
		refresh();
	}
	return NULL;
}

static void emit_paused(void *ctx, struct metrics_emitter *e)
{
	(void)ctx;
	size_t n;
	const struct job_def *jobs = registry_all(&n);
	uint64_t m = control_paused_mask();
	for (size_t i = 0; i < n && i < 64; i++)
		metrics_emit(e, (double)(m >> i & 1), jobs[i].name, NULL);
}

void control_watch_start(const struct config *cfg)
{
	if (watch.started || !cfg->database_url)
		return;
	db_init(&watch.db, cfg->database_url, "jobrunner-pause", 5000);
	refresh();
	metrics_callback(metrics_default(), METRIC_GAUGE, "jobrunner_job_paused",
			 "1 while the job is paused (POST /api/integrations/jobs/{job}/pause), else 0.",
			 "job", NULL, emit_paused, NULL);
	atomic_store_explicit(&watch.stop, 0, memory_order_relaxed);
	watch.started = pthread_create(&watch.tid, NULL, watch_main, NULL) == 0;
	if (!watch.started)
		db_release(&watch.db);
}

void control_watch_stop(void)
{
	if (!watch.started)
		return;
	atomic_store_explicit(&watch.stop, 1, memory_order_release);
	pthread_join(watch.tid, NULL);
	db_release(&watch.db);
	watch.started = 0;
}

/* ------------------------------------------------------------------ */
/* search                                                              */
/* ------------------------------------------------------------------ */

/* status filter → SQL (constants from this table only) */
static const struct {
	const char *name, *sql;
} status_sql[] = {
	{ "queued", "status = 'queued' and run_at <= now()" },
	{ "delayed", "status = 'queued' and run_at > now()" },
	{ "running", "status = 'running'" },
	{ "succeeded", "status = 'succeeded'" },
	{ "failed", "status = 'failed'" },
	{ "dead", "status = 'dead'" },
	{ "cancelled", "status = 'cancelled'" },
};

int control_status_valid(const char *s)
{
	for (size_t i = 0; s && i < JR_ARRAY_LEN(status_sql); i++)
		if (!strcmp(s, status_sql[i].name))
			return 1;
	return 0;
}

/* The query is written with only the filters given (each a parameter), so
 * the planner sees a plain predicate per filter and picks its index
 * (003_control.sql: job_runs_recent_idx for none or a time window,
 * job_runs_job_recent_idx, job_runs_org_recent_idx,
 * job_runs_status_recent_idx), each a range scan in the answer's order.
 * The last column is the cursor's time (enqueued_at in microseconds). */
PGresult *control_search_runs(struct db *db, const struct control_search *s)
{
	struct strbuf sql = STRBUF_INIT;
	const char *p[8];
	char since[24], until[24], lim[16];
	int n = 0;
	sb_adds(&sql, "select " CONTROL_RUN_COLUMNS ", (extract(epoch from enqueued_at) * 1000000)::bigint"
		      " from job_runs where true");
	if (s->job) {
		p[n++] = s->job;
		sb_addf(&sql, " and job = $%d", n);
	}
	if (s->org_id) {
		p[n++] = s->org_id;
		sb_addf(&sql, " and org_id = $%d", n);
	}
	for (size_t i = 0; s->status && i < JR_ARRAY_LEN(status_sql); i++)
		if (!strcmp(s->status, status_sql[i].name))
			sb_addf(&sql, " and %s", status_sql[i].sql);
	if (s->since_ms) {
		snprintf(since, sizeof since, "%lld", (long long)s->since_ms);
		p[n++] = since;
		sb_addf(&sql, " and enqueued_at >= to_timestamp($%d::bigint / 1000.0)", n);
	}
	if (s->until_ms) {
		snprintf(until, sizeof until, "%lld", (long long)s->until_ms);
		p[n++] = until;
		sb_addf(&sql, " and enqueued_at < to_timestamp($%d::bigint / 1000.0)", n);
	}
	char after_us[24];
	if (s->after_id) {
		snprintf(after_us, sizeof after_us, "%lld", (long long)s->after_us);
		p[n++] = after_us;
		p[n++] = s->after_id;
		sb_addf(&sql, " and (enqueued_at, id) < (timestamptz 'epoch' + $%d::bigint * interval '1 microsecond', $%d)",
			n - 1, n);
	}
	snprintf(lim, sizeof lim, "%d", s->limit + 1);
	p[n++] = lim;
	sb_addf(&sql, " order by enqueued_at desc, id desc limit $%d::int", n);
	/* the page's payloads only while their running total stays within
	 * CONTROL_LIST_PAYLOAD_BYTES (NULL past it: control_run_json() says
	 * payloadOmitted); the window runs over the page alone, after the
	 * index range scan above */
	char cap[24];
	snprintf(cap, sizeof cap, "%d", CONTROL_LIST_PAYLOAD_BYTES);
	p[n++] = cap;
	struct strbuf outer = STRBUF_INIT;
	sb_adds(&outer, "select c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13,"
			" case when sum(octet_length(c14)) over (order by c17 desc, c1 desc"
			"   rows unbounded preceding) <= ");
	sb_addf(&outer, "$%d::bigint then c14 end, c15, c16, c17 from (%s) as x(c1, c2, c3, c4, c5,"
			" c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17)"
			" order by c17 desc, c1 desc", n, sql.buf);
	sb_release(&sql);
	sql = outer;
	PGresult *r = db_query(db, sql.buf, n, p);
	sb_release(&sql);
	return r;
}

PGresult *control_get_run(struct db *db, const char *id)
{
	const char *p[1] = { id };
	return db_query(db, "select " CONTROL_RUN_COLUMNS " from job_runs where id = $1", 1, p);
}

void control_json_str(cJSON *o, const char *k, const char *v)
{
	if (v)
		cJSON_AddStringToObject(o, k, v);
	else
		cJSON_AddNullToObject(o, k);
}

void control_json_num(cJSON *o, const char *k, const char *v)
{
	int64_t n;
	if (v && parse_i64(v, INT64_MIN, INT64_MAX, &n) == 0)
		cJSON_AddNumberToObject(o, k, (double)n);
	else
		cJSON_AddNullToObject(o, k);
}

cJSON *control_retried_json(const struct queue_retried *ids, size_t n)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "retried", (double)n);
	cJSON *arr = cJSON_AddArrayToObject(o, "ids");
	for (size_t i = 0; i < n; i++)
		cJSON_AddItemToArray(arr, cJSON_CreateString(ids[i].id));
	return o;
}

cJSON *control_run_json(const PGresult *r, int row)
{
	/* CONTROL_RUN_COLUMNS 0-12 in order: the JSON key, and whether the
	 * value is a number (13 is the payload, 14-15 follow it) */
	static const struct { const char *key; int num; } cols[] = {
		{ "id", 0 }, { "job", 0 }, { "orgId", 0 }, { "status", 0 }, { "attempts", 1 },
		{ "enqueuedAt", 0 }, { "startedAt", 0 }, { "finishedAt", 0 }, { "durationMs", 1 },
		{ "error", 0 }, { "consumer", 0 }, { "maxAttempts", 1 }, { "source", 0 },
	};
	cJSON *o = cJSON_CreateObject();
	for (size_t i = 0; i < JR_ARRAY_LEN(cols); i++)
		(cols[i].num ? control_json_num : control_json_str)(o, cols[i].key, db_get(r, row, (int)i));
	/* jsonb's text output is one valid JSON value: echoed as it is, never
	 * parsed into a tree (a 256 KiB payload of small values costs ~30
	 * times that in nodes).  The column is NOT NULL in job_runs, so NULL
	 * here is a list that left the payload out to stay within its size
	 * (CONTROL_LIST_PAYLOAD_BYTES). */
	const char *payload = db_get(r, row, 13);
	if (payload) {
		cJSON_AddItemToObject(o, "payload", cJSON_CreateRaw(payload));
	} else {
		cJSON_AddNullToObject(o, "payload");
		cJSON_AddTrueToObject(o, "payloadOmitted");
	}
	control_json_str(o, "runAt", db_get(r, row, 14));
	control_json_str(o, "cancelRequestedAt", db_get(r, row, 15));
	return o;
}

/* ------------------------------------------------------------------ */
/* ids and cursors                                                     */
/* ------------------------------------------------------------------ */

int control_id_valid(const char *id)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0 || n > 64)
		return 0;
	for (const char *p = id; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      *p == '-' || *p == '_'))
			return 0;
	return 1;
}

void control_cursor_encode(const PGresult *r, int row, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	char plain[96];
	snprintf(plain, sizeof plain, "%s.%s", db_get(r, row, CONTROL_RUN_NCOLUMNS), db_get(r, row, 0));
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)plain; *p && o + 2 < outlen; p++) {
		out[o++] = hex[*p >> 4];
		out[o++] = hex[*p & 15];
	}
	out[o] = '\0';
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int control_cursor_decode(const char *cursor, int64_t *us, char *out, size_t outlen)
{
	char plain[96];
	size_t n = strlen(cursor);
	if (n == 0 || n % 2 || n / 2 >= sizeof plain)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		int a = hexval(cursor[2 * i]), b = hexval(cursor[2 * i + 1]);
		if (a < 0 || b < 0)
			return -1;
		plain[i] = (char)(a * 16 + b);
	}
	plain[n / 2] = '\0';
	char *dot = strchr(plain, '.');
	if (!dot)
		return -1;
	*dot = '\0';
	if (parse_i64(plain, INT64_MIN / 2, INT64_MAX / 2, us) || strlen(dot + 1) >= outlen ||
	    !control_id_valid(dot + 1))
		return -1;
	snprintf(out, outlen, "%s", dot + 1);
	return 0;
}
