/* cycle.c -- see cycle.h. */
#include "cycle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "control.h"
#include "db.h"
#include "lock.h"
#include "registry.h"
#include "run.h"
#include "util.h"

#define PRUNE_BATCH 5000

static const char record_state_sql[] =
	"insert into job_runner_state as s (id, \"lastRunAt\", \"lastRunDurationMs\", \"lastStatus\","
	"    \"lastError\", \"runCount\", \"failureCount\", \"updatedAt\")"
	" values ($1, to_timestamp($2::bigint / 1000.0), $3::int, $4, $5, 1, $6::bigint, now())"
	" on conflict (id) do update set \"lastRunAt\" = excluded.\"lastRunAt\","
	"   \"lastRunDurationMs\" = excluded.\"lastRunDurationMs\", \"lastStatus\" = excluded.\"lastStatus\","
	"   \"lastError\" = excluded.\"lastError\", \"runCount\" = s.\"runCount\" + 1,"
	"   \"failureCount\" = s.\"failureCount\" + excluded.\"failureCount\", \"updatedAt\" = now()";

static int record_state(struct db *db, const char *id, int64_t started_ms, int64_t dur_ms,
			const char *status, const char *error)
{
	char st[24], du[24];
	snprintf(st, sizeof st, "%lld", (long long)started_ms);
	snprintf(du, sizeof du, "%lld", (long long)(dur_ms > INT32_MAX ? INT32_MAX : dur_ms));
	const char *p[6] = { id, st, du, status, error, strcmp(status, "failed") ? "0" : "1" };
	return db_exec(db, record_state_sql, 6, p);
}

/* The inline run's record in job_runs (source 'cycle'), written once it ended. */
static int record_run(struct db *db, const struct run *r, const char *holder, const char *status,
		      int64_t dur_ms, const char *error)
{
	char st[24], du[24];
	snprintf(st, sizeof st, "%lld", (long long)r->started_at_ms);
	snprintf(du, sizeof du, "%lld", (long long)(dur_ms > INT32_MAX ? INT32_MAX : dur_ms));
	const char *p[7] = { r->id, r->job, status, st, du, error, holder };
	return db_exec(db,
		"insert into job_runs (id, job, source, status, attempts, max_attempts, run_at, enqueued_at,"
		"   started_at, finished_at, duration_ms, error, consumer, transport)"
		" values ($1, $2, 'cycle', $3, 1, 1, to_timestamp($4::bigint / 1000.0),"
		"   to_timestamp($4::bigint / 1000.0), to_timestamp($4::bigint / 1000.0), now(), $5::int, $6, $7, 'pg')",
		7, p);
}

static void summary_add(struct cycle_report *out, const char *name, const char *detail)
{
	size_t len = strlen(out->summary);
	snprintf(out->summary + len, sizeof out->summary - len, "%s%s=%s", len ? " " : "", name, detail);
}

/* Runs job inline under the lock; records its state and run. */
static int run_inline(struct cycle_env *env, const struct job_def *job, struct cycle_report *out)
{
	struct run r;
	memset(&r, 0, sizeof r);
	run_id_new(r.id);
	r.job = (char *)job->name;     /* borrowed: never run_clear()ed */
	r.source = RUN_SRC_CYCLE;
	r.attempt = r.max_attempts = 1;
	r.started_at_ms = r.enqueued_at_ms = wall_ms();

	cJSON *payload = cJSON_CreateObject();
	struct job_ctx ctx = { .cfg = env->cfg, .db = env->db, .run = &r, .payload = payload,
			       .http = env->http ? *env->http : NULL, .stop = env->stop };
	struct run_result res = { 0 };
	int64_t t0 = mono_ms();
	job->run(&ctx, &res);
	int64_t dur = mono_ms() - t0;
	if (env->http)
		*env->http = ctx.http;
	cJSON_Delete(payload);

	const char *status = res.outcome == RUN_OK ? "succeeded" : "failed";
	const char *error = res.outcome == RUN_OK ? NULL : res.error;
	out->jobs_run++;
	if (res.outcome != RUN_OK)
		out->jobs_failed++;
	char detail[200];
	snprintf(detail, sizeof detail, "%s%s%s%s", status, ctx.summary[0] ? "(" : "", ctx.summary,
		 ctx.summary[0] ? ")" : "");
	summary_add(out, job->name, detail);
	if (record_state(env->db, job->name, r.started_at_ms, dur, status, error))
		return -1;
	/* JOB_HISTORY=failures: a success leaves job_runner_state, no run row */
	if (res.outcome == RUN_OK && env->cfg && env->cfg->job_history &&
	    !strcmp(env->cfg->job_history, "failures"))
		return 0;
	return record_run(env->db, &r, env->holder, status, dur, error);
}

/* Fans job out: one run per org from plan(). */
static int run_fanout(struct cycle_env *env, const struct job_def *job, struct cycle_report *out)
{
	char **orgs = NULL, err[256] = "";
	size_t n = 0;
	int64_t started = wall_ms(), t0 = mono_ms();
	int failed = job->plan(env->cfg, env->db, &orgs, &n, err, sizeof err) != 0;
	if (!failed && n > 0) {
		struct run *runs = xcalloc(n, sizeof *runs);
		for (size_t i = 0; i < n; i++) {
			runs[i].job = (char *)job->name;   /* borrowed */
			runs[i].org_id = orgs[i];          /* borrowed */
			runs[i].source = RUN_SRC_FANOUT;
		}
		failed = env->enqueue(env->enqueue_arg, runs, n, err, sizeof err) != 0;
		free(runs);
		if (!failed)
			out->runs_enqueued += (int)n;
	}
	for (size_t i = 0; i < n; i++)
		free(orgs[i]);
	free(orgs);
	out->jobs_run++;
	out->jobs_failed += failed;
	char detail[64];
	if (failed)
		snprintf(detail, sizeof detail, "failed");
	else
		snprintf(detail, sizeof detail, "fanout(%zu)", n);
	summary_add(out, job->name, detail);
	return record_state(env->db, job->name, started, mono_ms() - t0,
			    failed ? "failed" : "succeeded", failed ? err : NULL);
}

/* Milliseconds since each job's lastRunAt by the database clock (-1: never). */
static int load_since(struct db *db, const struct job_def *jobs, size_t n, int64_t *since)
{
	for (size_t i = 0; i < n; i++)
		since[i] = -1;
	PGresult *r = db_query(db, "select id, (extract(epoch from now() - \"lastRunAt\") * 1000)::bigint"
				   " from job_runner_state where \"lastRunAt\" is not null", 0, NULL);
	if (!r)
		return -1;
	for (int row = 0; row < PQntuples(r); row++)
		for (size_t i = 0; i < n; i++)
			if (!strcmp(jobs[i].name, db_get(r, row, 0)))
				since[i] = db_get_i64(r, row, 1, -1);
	PQclear(r);
	return 0;
}

static int64_t prune(struct db *db, int64_t retention_ms)
{
	if (retention_ms <= 0)
		return 0;
	char ret[24], lim[16];
	snprintf(ret, sizeof ret, "%lld", (long long)retention_ms);
	snprintf(lim, sizeof lim, "%d", PRUNE_BATCH);
	const char *p[2] = { ret, lim };
	PGresult *r = db_query(db,
		"with old as (select id from job_runs where status in ('succeeded','dead','cancelled')"
		"   and finished_at < now() - make_interval(secs => $1::bigint / 1000.0)"
		"   limit $2::int for update skip locked)"
		" delete from job_runs j using old where j.id = old.id", 2, p);
	if (!r)
		return -1;
	int64_t n = atoll(PQcmdTuples(r));
	PQclear(r);
	return n;
}

int cycle_run(struct cycle_env *env, struct cycle_report *out)
{
	const struct config *cfg = env->cfg;
	int acquired = 0, rc = -1;
	memset(out, 0, sizeof *out);
	if (lock_try_acquire(env->db, cfg->job_runner_lock_key, env->holder, &acquired))
		return -1;
	if (!acquired)
		return 0;
	out->ran = 1;
	int64_t started = wall_ms(), t0 = mono_ms();

	size_t n;
	const struct job_def *jobs = registry_all(&n);
	int64_t *since = xcalloc(n, sizeof *since);
	if (load_since(env->db, jobs, n, since))
		goto out;
	uint64_t paused = 0;
	if (control_load_paused(env->db, &paused))
		goto out;
	for (size_t i = 0; i < n && !atomic_load_explicit(env->stop, memory_order_acquire); i++) {
		const struct job_def *job = &jobs[i];
		if (!job->interval_ms || !registry_enabled(job, cfg))
			continue;
		if (i < 64 && (paused >> i & 1))
			continue;   /* paused (POST /{job}/pause): its periodic run is skipped */
		if (since[i] >= 0 && since[i] < job->interval_ms(cfg))
			continue;
		if ((job->plan ? run_fanout(env, job, out) : run_inline(env, job, out)))
			goto out;
		lock_heartbeat(env->db, env->holder);
	}
	out->pruned = prune(env->db, cfg->job_history_retention_ms);
	out->duration_ms = mono_ms() - t0;
	if (record_state(env->db, "job_runner", started, out->duration_ms,
			 out->jobs_failed ? "failed" : "succeeded", NULL))
		goto out;
	rc = 0;
out:
	free(since);
	/* on a dead connection the session is gone and the lock with it */
	lock_release(env->db, cfg->job_runner_lock_key, env->holder);
	if (rc)
		out->duration_ms = mono_ms() - t0;
	return rc;
}
