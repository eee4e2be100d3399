/* jrmetrics.c -- see jrmetrics.h.  Series per job are resolved through the
 * registry's job table (bounded, known at start-up); unknown job names
 * share one "_other" series so that junk input cannot grow memory. */
#include "jrmetrics.h"

#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "db.h"
#include "metrics.h"
#include "orgstat.h"
#include "queue.h"
#include "rconn.h"
#include "registry.h"
#include "util.h"

#define MAX_JOBS 16

enum { F_ENQ, F_START, F_SUCC, F_FAIL, F_DEAD, F_DEFER, F_FENCE, F_CANCEL, F_NFAM };

static struct {
	atomic_int ready;
	size_t njobs;
	const char *names[MAX_JOBS + 1];          /* last: "_other" */
	struct metric_series *per_job[F_NFAM][MAX_JOBS + 1];
	struct metric_series *run_dur[MAX_JOBS + 1];
	struct metric_series *latency[MAX_JOBS + 1];
	struct metric_series *cycles, *cycle_dur, *last_cycle, *reclaims, *fallbacks;
	struct metric_series *reconnect_redis, *reconnect_pg;
	struct metric_series *hist_written, *hist_skipped, *hist_dropped;
	struct metric *depth;
} m;

/* 1 once jrm_init() has made every series (before that, updates are dropped). */
static int ready(void) { return atomic_load_explicit(&m.ready, memory_order_acquire); }

static const char *const fam_names[F_NFAM][2] = {
	{ "jobrunner_runs_enqueued_total", "Runs accepted by enqueue (API, CLI, cycles)." },
	{ "jobrunner_runs_started_total", "Runs started by a worker." },
	{ "jobrunner_runs_succeeded_total", "Runs that succeeded." },
	{ "jobrunner_runs_failed_total", "Failed attempts that will be retried after backoff." },
	{ "jobrunner_runs_dead_total", "Runs that are dead (attempts exhausted or permanent error)." },
	{ "jobrunner_runs_deferred_total", "Runs put back without an attempt (per-org limits, shutdown)." },
	{ "jobrunner_runs_fenced_total", "Results discarded because the lease had passed to another consumer." },
	{ "jobrunner_runs_cancelled_total", "Runs cancelled (POST /runs/{id}/cancel): by this producer before they started, or stopped by this consumer." },
};

/* ---- process_*: the families Prometheus client libraries export by
 * default, with their names and units, read from /proc at scrape time ---- */

static double start_time_s;   /* the process's start, Unix seconds */

/* The process's start from /proc: boot time (btime of /proc/stat) plus
 * starttime (field 22 of /proc/self/stat, in clock ticks); 0 if unknown. */
static double read_start_time(void)
{
	char buf[1024];
	double btime = 0;
	FILE *f = fopen("/proc/stat", "r");
	if (f) {
		while (fgets(buf, sizeof buf, f))
			if (sscanf(buf, "btime %lf", &btime) == 1)
				break;
		fclose(f);
	}
	unsigned long long ticks = 0;
	f = fopen("/proc/self/stat", "r");
	if (f) {
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		buf[n] = '\0';
		fclose(f);
		/* after "pid (comm) ": comm may hold spaces and parentheses */
		const char *p = strrchr(buf, ')');
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u"
				       " %*d %*d %*d %*d %*d %*d %llu", &ticks) != 1)
			ticks = 0;
	}
	long hz = sysconf(_SC_CLK_TCK);
	return btime > 0 && ticks && hz > 0 ? btime + (double)ticks / (double)hz : 0;
}

static void emit_cpu(void *ctx, struct metrics_emitter *e)
{
	(void)ctx;
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		metrics_emit(e, (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
				(double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6, NULL, NULL);
}

/* /proc/self/statm: size and resident, in pages; which: 0 or 1 */
static void emit_statm(struct metrics_emitter *e, int which)
{
	unsigned long long v[2];
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f)
		return;
	int ok = fscanf(f, "%llu %llu", &v[0], &v[1]) == 2;
	fclose(f);
	if (ok)
		metrics_emit(e, (double)v[which] * (double)sysconf(_SC_PAGESIZE), NULL, NULL);
}

static void emit_vsize(void *ctx, struct metrics_emitter *e) { (void)ctx; emit_statm(e, 0); }
static void emit_rss(void *ctx, struct metrics_emitter *e) { (void)ctx; emit_statm(e, 1); }

static void emit_open_fds(void *ctx, struct metrics_emitter *e)
{
	(void)ctx;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	long n = 0;
	for (struct dirent *de; (de = readdir(d)) != NULL;)
		n += de->d_name[0] != '.';
	closedir(d);
	metrics_emit(e, (double)(n - 1), NULL, NULL);   /* not the one opendir holds */
}

static void emit_max_fds(void *ctx, struct metrics_emitter *e)
{
	(void)ctx;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		metrics_emit(e, (double)rl.rlim_cur, NULL, NULL);
}

static void emit_start_time(void *ctx, struct metrics_emitter *e)
{
	(void)ctx;
	if (start_time_s > 0)
		metrics_emit(e, start_time_s, NULL, NULL);
}

static void process_metrics_init(struct metrics *reg)
{
	static const struct {
		enum metric_type type;
		const char *name, *help;
		metrics_collect_fn *fn;
	} fams[] = {
		{ METRIC_COUNTER, "process_cpu_seconds_total",
		  "Total user and system CPU time spent in seconds.", emit_cpu },
		{ METRIC_GAUGE, "process_resident_memory_bytes", "Resident memory size in bytes.", emit_rss },
		{ METRIC_GAUGE, "process_virtual_memory_bytes", "Virtual memory size in bytes.", emit_vsize },
		{ METRIC_GAUGE, "process_open_fds", "Number of open file descriptors.", emit_open_fds },
		{ METRIC_GAUGE, "process_max_fds", "Maximum number of open file descriptors.", emit_max_fds },
		{ METRIC_GAUGE, "process_start_time_seconds",
		  "Start time of the process since unix epoch in seconds.", emit_start_time },
	};
	start_time_s = read_start_time();
	for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++)
		metrics_callback(reg, fams[i].type, fams[i].name, fams[i].help, NULL, NULL, fams[i].fn, NULL);
}

/* jobrunner_db_connections{role} and jobrunner_db_connect_failures_total{reason}
 * from db.c's accounting, at scrape time. */
static void emit_db_open(void *ctx, struct metrics_emitter *e)
{
	(void)ctx;
	const char *roles[DB_MAX_ROLES];
	int64_t open[DB_MAX_ROLES];
	uint64_t fails[DBF_NREASONS];
	int n;
	db_connect_stats(roles, open, &n, fails);
	for (int i = 0; i < n; i++)
		metrics_emit(e, (double)open[i], roles[i], NULL);
}

static void emit_db_fail(void *ctx, struct metrics_emitter *e)
{
	(void)ctx;
	const char *roles[DB_MAX_ROLES];
	int64_t open[DB_MAX_ROLES];
	uint64_t fails[DBF_NREASONS];
	int n;
	db_connect_stats(roles, open, &n, fails);
	for (int i = 0; i < DBF_NREASONS; i++)
		metrics_emit(e, (double)fails[i], db_fail_reason_name(i), NULL);
}

static void reconnect_redis(void)
{
	if (ready())
		metrics_inc(m.reconnect_redis);
}

static void reconnect_pg(void)
{
	if (ready())
		metrics_inc(m.reconnect_pg);
}

void jrm_init(void)
{
	if (ready())
		return;
	struct metrics *reg = metrics_default();
	metrics_callback(reg, METRIC_GAUGE, "jobrunner_db_connections",
			 "Open PostgreSQL connections of this process, by role (see the connection budget).",
			 "role", NULL, emit_db_open, NULL);
	metrics_callback(reg, METRIC_COUNTER, "jobrunner_db_connect_failures_total",
			 "Failed PostgreSQL connects, by reason (too_many_connections, auth, timeout, refused, other).",
			 "reason", NULL, emit_db_fail, NULL);
	size_t n;
	const struct job_def *jobs = registry_all(&n);
	m.njobs = n < MAX_JOBS ? n : MAX_JOBS;
	for (size_t i = 0; i < m.njobs; i++)
		m.names[i] = jobs[i].name;
	m.names[m.njobs] = "_other";
	for (int f = 0; f < F_NFAM; f++) {
		struct metric *fam = metrics_counter(reg, fam_names[f][0], fam_names[f][1], "job", NULL);
		for (size_t i = 0; i <= m.njobs; i++)
			m.per_job[f][i] = metrics_with(fam, m.names[i], NULL);
	}
	struct metric *dur = metrics_histogram(reg, "jobrunner_run_duration_seconds",
					       "Run duration (the job handler's time).", "job", NULL, NULL, 0);
	struct metric *lat = metrics_histogram(reg, "jobrunner_enqueue_to_start_seconds",
					       "Time from enqueue to the start of a run.", "job", NULL, NULL, 0);
	for (size_t i = 0; i <= m.njobs; i++) {
		m.run_dur[i] = metrics_with(dur, m.names[i], NULL);
		m.latency[i] = metrics_with(lat, m.names[i], NULL);
	}
	m.cycles = metrics_with(metrics_counter(reg, "jobrunner_cycles_total",
						"Cycles run by this process.", NULL, NULL), NULL, NULL);
	m.cycle_dur = metrics_with(metrics_histogram(reg, "jobrunner_cycle_duration_seconds",
						     "Cycle duration.", NULL, NULL, NULL, 0), NULL, NULL);
	m.last_cycle = metrics_with(metrics_gauge(reg, "jobrunner_last_cycle_timestamp_seconds",
						  "Unix time at which this process last finished a cycle.",
						  NULL, NULL), NULL, NULL);
	m.reclaims = metrics_with(metrics_counter(reg, "jobrunner_reclaims_total",
						  "Runs taken over from consumers that went silent.",
						  NULL, NULL), NULL, NULL);
	struct metric *rc = metrics_counter(reg, "jobrunner_reconnects_total",
					    "Reconnections after a lost connection.", "backend", NULL);
	m.reconnect_redis = metrics_with(rc, "redis", NULL);
	m.reconnect_pg = metrics_with(rc, "postgres", NULL);
	m.fallbacks = metrics_with(metrics_counter(reg, "jobrunner_enqueue_fallbacks_total",
						   "Enqueue batches written to PostgreSQL because Redis was down.",
						   NULL, NULL), NULL, NULL);
	struct metric *hist = metrics_counter(reg, "jobrunner_history_rows_total",
					      "Run states from Redis for job_runs (Redis mode): written, "
					      "skipped (older than what is stored), dropped (refused).",
					      "result", NULL);
	m.hist_written = metrics_with(hist, "written", NULL);
	m.hist_skipped = metrics_with(hist, "skipped", NULL);
	m.hist_dropped = metrics_with(hist, "dropped", NULL);
	orgstat_metrics_init();   /* jobrunner_org_deferrals_total{reason} */
	process_metrics_init(reg);
	atomic_store_explicit(&m.ready, 1, memory_order_release);
	/* every connection of the process counts (queues, history writer,
	 * health checks, cycles) */
	rconn_on_reconnect(reconnect_redis);
	db_on_reconnect(reconnect_pg);
}

static size_t job_index(const char *job)
{
	for (size_t i = 0; job && i < m.njobs; i++)
		if (!strcmp(m.names[i], job))
			return i;
	return m.njobs;
}

void jrm_enqueued(const char *job, uint64_t n)
{
	if (ready())
		metrics_add(m.per_job[F_ENQ][job_index(job)], n);
}

void jrm_started(const char *job, int64_t enqueue_to_start_ms)
{
	if (!ready())
		return;
	size_t i = job_index(job);
	metrics_inc(m.per_job[F_START][i]);
	if (enqueue_to_start_ms >= 0)
		metrics_observe_ms(m.latency[i], (double)enqueue_to_start_ms);
}

void jrm_finished(const char *job, enum jrm_outcome outcome, int64_t duration_ms)
{
	if (!ready())
		return;
	static const int fam[] = { F_SUCC, F_FAIL, F_DEAD, F_DEFER, F_FENCE, F_CANCEL };
	size_t i = job_index(job);
	metrics_inc(m.per_job[fam[outcome]][i]);
	if (outcome != JRM_DEFERRED && duration_ms >= 0)
		metrics_observe_ms(m.run_dur[i], (double)duration_ms);
}

void jrm_cycle(int64_t duration_ms, int64_t finished_at_ms)
{
	if (!ready())
		return;
	metrics_inc(m.cycles);
	metrics_observe_ms(m.cycle_dur, (double)duration_ms);
	metrics_set(m.last_cycle, (double)finished_at_ms / 1000.0);
}

void jrm_reclaims(uint64_t n)
{
	if (ready())
		metrics_add(m.reclaims, n);
}

void jrm_history(uint64_t written, uint64_t skipped, uint64_t dropped)
{
	if (!ready())
		return;
	metrics_add(m.hist_written, written);
	metrics_add(m.hist_skipped, skipped);
	metrics_add(m.hist_dropped, dropped);
}

void jrm_enqueue_fallback(void)
{
	if (ready())
		metrics_inc(m.fallbacks);
}

void jrm_queue_depth_source(void (*fn)(void *ctx, struct metrics_emitter *emit), void *ctx)
{
	/* every process reads the same shared queue: the label says so, and
	 * the help says how to aggregate (max, never sum) */
	m.depth = metrics_callback(metrics_default(), METRIC_GAUGE, "jobrunner_queue_depth",
				   "Runs by state (queued, running, delayed, dead) in the whole cluster, "
				   "read at scrape time from the shared queue: every process exports the "
				   "same value, so aggregate with max by (state), never sum.",
				   "state", "scope", fn, ctx);
}

void jrm_emit_depth(struct metrics_emitter *emit, const struct queue_stats *s)
{
	metrics_emit(emit, (double)s->queued, "queued", "cluster");
	metrics_emit(emit, (double)s->running, "running", "cluster");
	metrics_emit(emit, (double)s->delayed, "delayed", "cluster");
	metrics_emit(emit, (double)s->dead, "dead", "cluster");
}
