/* test_history.c -- the history writer against a real redis-server and a
 * real PostgreSQL 15, both started by this test on free ports in temporary
 * directories (PostgreSQL as the `postgres` user when we are root) and
 * stopped at the end.  Runs go through the Redis transport (queue_redis)
 * and must reach job_runs with their final state.
 */
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "history.h"
#include "migrate.h"
#include "queue.h"
#include "queue_redis.h"
#include "run.h"
#include "unit.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* servers                                                             */
/* ------------------------------------------------------------------ */

static char tmpdir[64];
static pid_t redis_pid, pg_pid;
static int redis_port, pg_port;
static char redis_url[64], pg_url[128];

/* Forks and execs argv, as the postgres user when we are root. */
static pid_t spawn(char *const argv[], int as_postgres, const char *log)
{
	pid_t pid = fork();
	if (pid == 0) {
		if (log) {
			FILE *f = freopen(log, "a", stdout);
			(void)f;
			dup2(1, 2);
		}
		if (as_postgres && getuid() == 0) {
			struct passwd *pw = getpwnam("postgres");
			if (!pw || setgid(pw->pw_gid) || setuid(pw->pw_uid))
				_exit(126);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static void start_servers(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/jr-test-history-XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		exit(2);
	}
	chmod(tmpdir, 0755);
	char pgdir[128], datadir[160], log[160];
	snprintf(pgdir, sizeof pgdir, "%s/pg", tmpdir);
	snprintf(datadir, sizeof datadir, "%s/data", pgdir);
	snprintf(log, sizeof log, "%s/pg.log", pgdir);
	mkdir(pgdir, 0700);
	if (getuid() == 0) {
		struct passwd *pw = getpwnam("postgres");
		if (!pw || chown(pgdir, pw->pw_uid, pw->pw_gid)) {
			fprintf(stderr, "no postgres user\n");
			exit(2);
		}
	}
	char *initdb[] = { "/usr/lib/postgresql/15/bin/initdb", "-D", datadir, "-A", "trust", "-U",
			   "postgres", "-E", "UTF8", "--locale=C", "-N", NULL };
	int st;
	pid_t p = spawn(initdb, 1, log);
	waitpid(p, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "initdb failed, see %s\n", log);
		exit(2);
	}
	pg_port = unit_free_port();
	char port[16], sock[160];
	snprintf(port, sizeof port, "%d", pg_port);
	snprintf(sock, sizeof sock, "unix_socket_directories=%s", pgdir);
	char *pg[] = { "/usr/lib/postgresql/15/bin/postgres", "-D", datadir, "-p", port, "-c", sock,
		       "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", NULL };
	pg_pid = spawn(pg, 1, log);
	snprintf(pg_url, sizeof pg_url, "postgresql://postgres@127.0.0.1:%d/postgres", pg_port);

	redis_port = unit_free_port();
	char rport[16], rlog[160];
	snprintf(rport, sizeof rport, "%d", redis_port);
	snprintf(rlog, sizeof rlog, "%s/redis.log", tmpdir);
	char *rs[] = { "/usr/bin/redis-server", "--port", rport, "--bind", "127.0.0.1", "--save", "",
		       "--appendonly", "no", "--dir", tmpdir, "--logfile", rlog, NULL };
	redis_pid = spawn(rs, 0, NULL);
	snprintf(redis_url, sizeof redis_url, "redis://127.0.0.1:%d", redis_port);

	/* poll both until ready */
	struct db db;
	db_init(&db, pg_url, "test", 10000);
	if (db_connect_retry(&db, 30000, NULL)) {
		fprintf(stderr, "postgres did not start: %s (see %s)\n", db.errstr, log);
		exit(2);
	}
	char err[256];
	if (migrate_apply(&db, NULL, err, sizeof err)) {
		fprintf(stderr, "migrate: %s\n", err);
		exit(2);
	}
	db_release(&db);
	for (int i = 0;; i++) {
		struct timeval tv = { 1, 0 };
		redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
		int ok = c && !c->err;
		if (c)
			redisFree(c);
		if (ok)
			break;
		if (i > 500) {
			fprintf(stderr, "redis did not start\n");
			exit(2);
		}
		usleep(10000);
	}
}

static void stop_servers(void)
{
	if (redis_pid > 0) {
		kill(redis_pid, SIGKILL);
		waitpid(redis_pid, NULL, 0);
	}
	if (pg_pid > 0) {
		kill(pg_pid, SIGINT);   /* fast shutdown */
		waitpid(pg_pid, NULL, 0);
	}
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static struct config cfg_;

static void reset(void)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
	redisReply *r = redisCommand(c, "FLUSHALL");
	freeReplyObject(r);
	redisFree(c);
	struct db db;
	db_init(&db, pg_url, "test", 10000);
	CHECK(db_exec(&db, "truncate job_runs", 0, NULL) == 0);
	db_release(&db);
	unit_queue_config(&cfg_, redis_url);
	cfg_.database_url = pg_url;
	cfg_.job_max_attempts = 2;
	cfg_.job_backoff_base_ms = 60000;
	cfg_.job_backoff_max_ms = 60000;
}

static long long sql_count(const char *where)
{
	struct db db;
	db_init(&db, pg_url, "test", 10000);
	char *sql = xasprintf("select count(*) from job_runs where %s", where);
	PGresult *r = db_query(&db, sql, 0, NULL);
	long long n = r ? db_get_i64(r, 0, 0, -1) : -1;
	if (!r)
		fprintf(stderr, "sql: %s\n", db.errstr);
	PQclear(r);
	free(sql);
	db_release(&db);
	return n;
}

static long long rint_(const char *fmt, const char *arg)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
	redisReply *r = redisCommand(c, fmt, arg);
	long long v = -1;
	if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	else if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_INTEGER)
		v = r->element[0]->integer;   /* XPENDING summary */
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return v;
}

/* Steps h until a step writes nothing. */
static void drain(struct history *h)
{
	for (int i = 0; i < 100; i++) {
		size_t w = 0;
		int rv = history_step(h, 0, &w);
		if (rv)
			fprintf(stderr, "history_step: %s\n", history_errstr(h));
		CHECK(rv == 0);
		if (rv || w == 0)
			break;
	}
}

/* Enqueues n noop runs and completes them: i % 4 == 0 retry, == 1 fail,
 * else ok. */
static void produce(struct queue *q, int n)
{
	struct run *runs = xcalloc((size_t)n, sizeof *runs);
	for (int i = 0; i < n; i++) {
		runs[i].job = xstrdup("noop");
		runs[i].org_id = xasprintf("org-%d", i % 3);
		runs[i].payload = xasprintf("{\"i\":%d,\"q\":\"a\\\"b\"}", i);
	}
	CHECK(q->ops->enqueue(q, runs, (size_t)n) == 0);
	for (int i = 0; i < n; i++)
		run_clear(&runs[i]);
	int done = 0;
	while (done < n) {
		size_t k = 0;
		CHECK(q->ops->claim(q, runs, (size_t)n, 200, &k) == 0);
		if (!k)
			break;
		struct run_result *res = xcalloc(k, sizeof *res);
		for (size_t j = 0; j < k; j++) {
			int i = atoi(strchr(runs[j].payload, ':') + 1);
			res[j].outcome = i % 4 == 0 ? RUN_RETRY : i % 4 == 1 ? RUN_FAIL : RUN_OK;
			res[j].duration_ms = 7;
			if (res[j].outcome != RUN_OK)
				snprintf(res[j].error, sizeof res[j].error, "failure \"%d\"", i);
		}
		CHECK(q->ops->complete(q, runs, res, k, NULL) == 0);
		free(res);
		for (size_t j = 0; j < k; j++)
			run_clear(&runs[j]);
		done += (int)k;
	}
	CHECK(done == n);
	free(runs);
}

/* ------------------------------------------------------------------ */
/* tests                                                               */
/* ------------------------------------------------------------------ */

/* A fresh Redis and job_runs, a queue handle "c1" and a history writer
 * "h1" that has made its groups (a first step): 0, or -1 (both NULL). */
static int open_pair(struct queue **q, struct history **h)
{
	char err[256];
	reset();
	*q = NULL;
	*h = NULL;
	CHECK(queue_redis_open(&cfg_, "c1", q, err, sizeof err) == 0);
	CHECK(history_open(&cfg_, "h1", h, err, sizeof err) == 0);
	size_t w;
	if (*q && *h && history_step(*h, 0, &w) == 0)
		return 0;
	CHECK(!"queue or history writer did not open");
	if (*q)
		(*q)->ops->destroy(*q);
	history_close(*h);
	*q = NULL;
	*h = NULL;
	return -1;
}

static void test_final_states_reach_job_runs(void)
{
	reset();
	struct queue *q = NULL;
	char err[256];
	CHECK(queue_redis_open(&cfg_, "c1", &q, err, sizeof err) == 0);
	struct history *h = NULL;
	CHECK(history_open(&cfg_, "h1", &h, err, sizeof err) == 0);
	if (!q || !h)
		return;
	size_t w = 0;
	CHECK(history_step(h, 0, &w) == 0);   /* creates nothing yet, catches up */
	produce(q, 400);
	drain(h);
	CHECK(sql_count("transport = 'redis'") == 400);
	CHECK(sql_count("status = 'succeeded' and attempts = 1 and consumer = 'c1' and started_at is not null"
			" and finished_at >= started_at and duration_ms = 7 and error is null") == 200);
	CHECK(sql_count("status = 'dead' and error like 'failure \"%' and attempts = 1") == 100);
	CHECK(sql_count("status = 'failed' and run_at > now() + interval '20 seconds' and attempts = 1") == 100);
	CHECK(sql_count("payload->>'q' = 'a\"b' and org_id like 'org-%' and job = 'noop'") == 400);
	CHECK(rint_("XPENDING %s jr:history", "jr:runs") == 0);
	CHECK(rint_("XPENDING %s jr:history", "jr:events") == 0);
	/* an old state arriving late does not go back */
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
	struct db db;
	db_init(&db, pg_url, "test", 10000);
	PGresult *r = db_query(&db, "select id from job_runs where status = 'succeeded' limit 1", 0, NULL);
	CHECK(r && PQntuples(r) == 1);
	if (r && PQntuples(r) == 1) {
		redisReply *x = redisCommand(c, "XADD jr:runs * v 1 type run id %s job noop", PQgetvalue(r, 0, 0));
		freeReplyObject(x);
		drain(h);
		const char *p[1] = { PQgetvalue(r, 0, 0) };
		PGresult *s = db_query(&db, "select status, payload->>'i' is not null from job_runs where id = $1", 1, p);
		CHECK(s && PQntuples(s) == 1 && !strcmp(PQgetvalue(s, 0, 0), "succeeded") &&
		      !strcmp(PQgetvalue(s, 0, 1), "t"));
		PQclear(s);
	}
	PQclear(r);
	redisFree(c);
	db_release(&db);
	history_close(h);
	q->ops->destroy(q);
}

static void test_two_writers_share_the_work(void)
{
	reset();
	struct queue *q = NULL;
	struct history *a = NULL, *b = NULL;
	char err[256];
	CHECK(queue_redis_open(&cfg_, "c1", &q, err, sizeof err) == 0);
	CHECK(history_open(&cfg_, "ha", &a, err, sizeof err) == 0);
	CHECK(history_open(&cfg_, "hb", &b, err, sizeof err) == 0);
	if (!q || !a || !b)
		return;
	size_t w;
	CHECK(history_step(a, 0, &w) == 0);
	CHECK(history_step(b, 0, &w) == 0);
	produce(q, 10000);   /* more than one writer's batch (RUNS_COUNT_MAX) */
	size_t wa = 0, wb = 0;
	for (int i = 0; i < 200; i++) {
		size_t x = 0, y = 0;
		CHECK(history_step(a, 0, &x) == 0);
		CHECK(history_step(b, 0, &y) == 0);
		wa += x;
		wb += y;
		if (!x && !y)
			break;
	}
	CHECK(wa > 0 && wb > 0);
	CHECK(sql_count("true") == 10000);
	CHECK(sql_count("status = 'succeeded'") == 5000);
	CHECK(rint_("XPENDING %s jr:history", "jr:runs") == 0);
	history_close(a);
	history_close(b);
	q->ops->destroy(q);
}

/* Ends the history writers' PostgreSQL sessions (the server side). */
static void kill_writer_connection(void)
{
	struct db db;
	db_init(&db, pg_url, "test", 10000);
	CHECK(db_exec(&db, "select pg_terminate_backend(pid) from pg_stat_activity"
		      " where application_name = 'jobrunner-history'", 0, NULL) == 0);
	db_release(&db);
}

static void test_postgres_connection_lost(void)
{
	struct queue *q;
	struct history *h;
	if (open_pair(&q, &h))
		return;
	size_t w;
	produce(q, 40);
	/* the writer's connection dies between two batches */
	kill_writer_connection();
	int failed = 0;
	for (int i = 0; i < 10; i++) {
		if (history_step(h, 0, &w))
			failed++;
		else if (!w)
			break;
	}
	CHECK(failed <= 1);
	CHECK(sql_count("true") == 40);
	CHECK(rint_("XPENDING %s jr:history", "jr:runs") == 0);
	CHECK(rint_("XPENDING %s jr:history", "jr:events") == 0);
	history_close(h);
	q->ops->destroy(q);
}

static void test_refused_idempotency_key(void)
{
	reset();
	struct db db;
	db_init(&db, pg_url, "test", 10000);
	CHECK(db_exec(&db, "insert into job_runs (id, job, idempotency_key, status) values"
		      " ('pg-run-1', 'noop', 'dup', 'succeeded')", 0, NULL) == 0);
	db_release(&db);
	struct queue *q = NULL;
	struct history *h = NULL;
	char err[256];
	CHECK(queue_redis_open(&cfg_, "c1", &q, err, sizeof err) == 0);
	CHECK(history_open(&cfg_, "h1", &h, err, sizeof err) == 0);
	if (!q || !h)
		return;
	size_t w;
	CHECK(history_step(h, 0, &w) == 0);
	struct run r[2];
	memset(r, 0, sizeof r);
	r[0].job = xstrdup("noop");
	r[0].idempotency_key = xstrdup("dup");   /* Redis has never seen it */
	r[1].job = xstrdup("noop");
	CHECK(q->ops->enqueue(q, r, 2) == 0);
	drain(h);
	CHECK(sql_count("transport = 'redis'") == 2);
	CHECK(sql_count("idempotency_key = 'dup'") == 1);
	run_clear(&r[0]);
	run_clear(&r[1]);
	history_close(h);
	q->ops->destroy(q);
}

static const char *status_of(const char *id, char *buf, size_t len)
{
	struct db db;
	db_init(&db, pg_url, "test", 10000);
	const char *p[1] = { id };
	PGresult *r = db_query(&db, "select status || '/' || attempts from job_runs where id = $1", 1, p);
	snprintf(buf, len, "%s", r && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "none");
	PQclear(r);
	db_release(&db);
	return buf;
}

static void test_running_deferred_running_succeeded(void)
{
	struct queue *q;
	struct history *h;
	char st[64];
	if (open_pair(&q, &h))
		return;
	struct run r;
	memset(&r, 0, sizeof r);
	r.job = xstrdup("noop");
	CHECK(q->ops->enqueue(q, &r, 1) == 0);
	char id[RUN_ID_LEN + 1];
	memcpy(id, r.id, sizeof id);
	run_clear(&r);
	drain(h);
	CHECK(strcmp(status_of(id, st, sizeof st), "queued/0") == 0);
	size_t n = 0;
	CHECK(q->ops->claim(q, &r, 1, 500, &n) == 0 && n == 1);
	CHECK(q->ops->announce(q, &r) == 0);   /* the worker's heartbeat, for a run that takes a while */
	drain(h);
	CHECK(strcmp(status_of(id, st, sizeof st), "running/1") == 0);
	struct run_result res = { .outcome = RUN_DEFER, .retry_after_ms = 30 };
	CHECK(q->ops->complete(q, &r, &res, 1, NULL) == 0);
	run_clear(&r);
	drain(h);
	CHECK(strcmp(status_of(id, st, sizeof st), "queued/0") == 0);
	n = 0;
	for (int i = 0; i < 20 && n == 0; i++)
		CHECK(q->ops->claim(q, &r, 1, 200, &n) == 0);
	CHECK(n == 1);
	CHECK(q->ops->announce(q, &r) == 0);
	drain(h);
	CHECK(strcmp(status_of(id, st, sizeof st), "running/1") == 0);
	res.outcome = RUN_OK;
	CHECK(q->ops->complete(q, &r, &res, 1, NULL) == 0);
	run_clear(&r);
	drain(h);
	CHECK(strcmp(status_of(id, st, sizeof st), "succeeded/1") == 0);
	history_close(h);
	q->ops->destroy(q);
}

/* Enqueues n noop runs (nothing else set). */
static void enqueue_noops(struct queue *q, size_t n)
{
	struct run *runs = xcalloc(n, sizeof *runs);
	for (size_t i = 0; i < n; i++)
		runs[i].job = xstrdup("noop");
	CHECK(q->ops->enqueue(q, runs, n) == 0);
	for (size_t i = 0; i < n; i++)
		run_clear(&runs[i]);
	free(runs);
}

/* Claims up to n runs and completes them all as succeeded; how many. */
static size_t succeed(struct queue *q, size_t n)
{
	struct run *runs = xcalloc(n, sizeof *runs);
	struct run_result *res = xcalloc(n, sizeof *res);
	size_t k = 0;
	CHECK(q->ops->claim(q, runs, n, 500, &k) == 0);
	if (k)
		CHECK(q->ops->complete(q, runs, res, k, NULL) == 0);
	for (size_t i = 0; i < k; i++)
		run_clear(&runs[i]);
	free(runs);
	free(res);
	return k;
}

/* While runs are finishing, a queued row read before its run's end waits
 * (the carry) and meets it: a quick run costs one row write, not two. */
static void test_quick_runs_cost_one_row(void)
{
	struct queue *q;
	struct history *h;
	if (open_pair(&q, &h))
		return;
	size_t w;
	enqueue_noops(q, 1000);
	CHECK(succeed(q, 500) == 500);
	/* ends of 500 runs, then 1000 queued entries: 500 rows, 500 wait */
	CHECK(history_step(h, 100, &w) == 0);
	struct history_counts c;
	history_get_counts(h, &c);
	CHECK(c.rows == 500 && c.carried == 500);
	CHECK(sql_count("true") == 500);
	CHECK(sql_count("status = 'succeeded'") == 500);
	CHECK(succeed(q, 500) == 500);
	CHECK(history_step(h, 100, &w) == 0);
	history_get_counts(h, &c);
	CHECK(c.rows == 1000);   /* not 1500: the waiting rows met their ends */
	CHECK(sql_count("status = 'succeeded'") == 1000);
	CHECK(rint_("XPENDING %s jr:history", "jr:runs") == 0);
	CHECK(rint_("XPENDING %s jr:history", "jr:events") == 0);
	history_close(h);
	q->ops->destroy(q);
}

/* Rows waiting in the carry when PostgreSQL goes away are not lost: they
 * are still pending in Redis and are read again once it is back. */
static void test_carried_rows_survive_a_postgres_failure(void)
{
	struct queue *q;
	struct history *h;
	if (open_pair(&q, &h))
		return;
	enqueue_noops(q, 600);
	CHECK(succeed(q, 100) == 100);
	size_t w;
	CHECK(history_step(h, 100, &w) == 0);
	struct history_counts c;
	history_get_counts(h, &c);
	CHECK(c.carried == 500);
	kill_writer_connection();
	CHECK(succeed(q, 500) == 500);
	int failed = 0;
	for (int i = 0; i < 20; i++) {
		if (history_step(h, 100, &w))
			failed++;
		else if (!w && i > 1)
			break;
	}
	CHECK(failed == 1);
	CHECK(sql_count("status = 'succeeded'") == 600);
	CHECK(rint_("XPENDING %s jr:history", "jr:runs") == 0);
	CHECK(rint_("XPENDING %s jr:history", "jr:events") == 0);
	history_close(h);
	q->ops->destroy(q);
}

/* Steps a pipelined writer until two steps in a row write nothing (a
 * step writes the batch the step before handed over). */
static void drain_pipelined(struct history *h, int *failed)
{
	int idle = 0;
	for (int i = 0; i < 100 && idle < 2; i++) {
		size_t w = 0;
		if (history_step(h, 0, &w))
			(*failed)++;
		else
			idle = w ? 0 : idle + 1;
	}
}

/* With the store thread: every final state reaches job_runs and the
 * entries are all acknowledged; a PostgreSQL connection that dies while
 * a batch is in flight loses nothing. */
static void test_pipelined_writer(void)
{
	struct queue *q;
	struct history *h;
	if (open_pair(&q, &h))
		return;
	CHECK(history_pipeline(h) == 0);
	produce(q, 400);
	int failed = 0;
	drain_pipelined(h, &failed);
	CHECK(failed == 0);
	CHECK(sql_count("transport = 'redis'") == 400);
	CHECK(sql_count("status = 'succeeded' and attempts = 1 and duration_ms = 7") == 200);
	CHECK(sql_count("status = 'dead'") == 100);
	CHECK(rint_("XPENDING %s jr:history", "jr:runs") == 0);
	CHECK(rint_("XPENDING %s jr:history", "jr:events") == 0);
	struct history_counts c;
	history_get_counts(h, &c);
	CHECK(c.rows >= 400);
	history_close(h);
	q->ops->destroy(q);
}

static void test_pipelined_writer_postgres_lost(void)
{
	struct queue *q;
	struct history *h;
	if (open_pair(&q, &h))
		return;
	CHECK(history_pipeline(h) == 0);
	enqueue_noops(q, 600);
	CHECK(succeed(q, 300) == 300);
	size_t w;
	CHECK(history_step(h, 100, &w) == 0);   /* hands a batch over */
	kill_writer_connection();
	CHECK(succeed(q, 300) == 300);
	int failed = 0;
	drain_pipelined(h, &failed);
	CHECK(failed >= 1 && failed <= 2);
	CHECK(sql_count("status = 'succeeded'") == 600);
	CHECK(rint_("XPENDING %s jr:history", "jr:runs") == 0);
	CHECK(rint_("XPENDING %s jr:history", "jr:events") == 0);
	history_close(h);
	q->ops->destroy(q);
}

static void test_thread(void)
{
	reset();
	struct queue *q = NULL;
	struct history_thread *t = NULL;
	char err[256];
	CHECK(queue_redis_open(&cfg_, "c1", &q, err, sizeof err) == 0);
	CHECK(history_thread_start(&cfg_, "ht", &t, err, sizeof err) == 0);
	if (!q || !t)
		return;
	/* the thread must create its group reading position before runs flow:
	 * its group exists from queue_redis_open, so nothing is missed */
	produce(q, 100);
	int64_t end = mono_ms() + 10000;
	while (sql_count("status <> 'queued'") < 100 && mono_ms() < end)
		usleep(50000);
	CHECK(sql_count("status <> 'queued'") == 100);
	history_thread_stop(t, 2000);
	q->ops->destroy(q);
}

/* The PostgreSQL transport keeps queue.h's error convention: a negative
 * QUEUE_E* code, returned and in q->err, with a message in q->errstr. */
static void test_queue_pg_error_codes(void)
{
	struct db db;
	db_init(&db, pg_url, "test", 10000);
	db_exec(&db, "drop database if exists qerr", 0, NULL);
	CHECK(db_exec(&db, "create database qerr", 0, NULL) == 0);
	struct config cfg = cfg_;
	char url[160], err[256];
	snprintf(url, sizeof url, "postgresql://postgres@127.0.0.1:%d/qerr", pg_port);
	cfg.database_url = url;
	struct queue *q = NULL;
	CHECK(queue_pg_open(&cfg, "e1", &q, err, sizeof err) == QUEUE_OK);
	if (!q) {
		db_release(&db);
		return;
	}
	struct run r[2];
	size_t n = 0;
	/* no job_runs table there: PostgreSQL refuses */
	CHECK(q->ops->claim(q, r, 2, 0, &n) == QUEUE_EINTERNAL);
	CHECK(q->err == QUEUE_EINTERNAL);
	CHECK(strncmp(q->errstr, "postgres: ", 10) == 0);
	/* its connection is killed: the backend is down */
	CHECK(db_exec(&db, "select pg_terminate_backend(pid) from pg_stat_activity"
		      " where datname = 'qerr'", 0, NULL) == 0);
	CHECK(q->ops->claim(q, r, 2, 0, &n) == QUEUE_EDOWN);
	CHECK(q->err == QUEUE_EDOWN);
	q->ops->destroy(q);
	db_release(&db);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	start_servers();
	static const struct unit_test tests[] = {
		{ "final_states_reach_job_runs", test_final_states_reach_job_runs },
		{ "two_writers_share_the_work", test_two_writers_share_the_work },
		{ "postgres_connection_lost", test_postgres_connection_lost },
		{ "refused_idempotency_key", test_refused_idempotency_key },
		{ "running_deferred_running_succeeded", test_running_deferred_running_succeeded },
		{ "quick_runs_cost_one_row", test_quick_runs_cost_one_row },
		{ "carried_rows_survive_a_postgres_failure", test_carried_rows_survive_a_postgres_failure },
		{ "pipelined_writer", test_pipelined_writer },
		{ "pipelined_writer_postgres_lost", test_pipelined_writer_postgres_lost },
		{ "thread", test_thread },
		{ "queue_pg_error_codes", test_queue_pg_error_codes },
	};
	int rv = unit_run(tests, JR_ARRAY_LEN(tests));
	stop_servers();
	return rv;
}
