/* test_queue_redis.c -- the Redis Streams transport against a real
 * redis-server that this test starts on a free port in a temporary
 * directory (and kills at the end).  No mocks.
 *
 * JR_BENCH=1 additionally measures claim+complete throughput and memory per
 * queued entry with 100k runs (prints the numbers).
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "lua_gen.h"
#include "queue.h"
#include "queue_redis.h"
#include "run.h"
#include "runlookup.h"
#include "unit.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* a throwaway redis-server                                            */
/* ------------------------------------------------------------------ */

static pid_t server_pid;
static int server_port;
static char server_dir[64];
static char server_url[64];

static redisContext *raw(void)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", server_port, tv);
	if (c && c->err) {
		redisFree(c);
		return NULL;
	}
	return c;
}

static void server_start(void)
{
	char port[16];
	snprintf(port, sizeof port, "%d", server_port);
	server_pid = fork();
	if (server_pid == 0) {
		char log[128];
		snprintf(log, sizeof log, "%s/redis.log", server_dir);
		execl("/usr/bin/redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
		      "--save", "", "--appendonly", "no", "--dir", server_dir, "--logfile", log,
		      (char *)NULL);
		_exit(127);
	}
	/* poll until it answers PING */
	for (int i = 0; i < 500; i++) {
		redisContext *c = raw();
		if (c) {
			redisReply *r = redisCommand(c, "PING");
			int ok = r && r->type == REDIS_REPLY_STATUS;
			if (r)
				freeReplyObject(r);
			redisFree(c);
			if (ok)
				return;
		}
		usleep(10000);
	}
	fprintf(stderr, "redis-server did not start\n");
	exit(2);
}

static void server_stop(void)
{
	if (server_pid > 0) {
		kill(server_pid, SIGKILL);
		waitpid(server_pid, NULL, 0);
		server_pid = 0;
	}
}

/* Runs a command on a fresh raw connection; returns the integer reply (or
 * elements of an array, or -1). */
static long long rcmd(const char *fmt, ...)
{
	redisContext *c = raw();
	if (!c)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	long long v = -1;
	if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	else if (r && r->type == REDIS_REPLY_ARRAY)
		v = (long long)r->elements;
	else if (r && r->type == REDIS_REPLY_STRING)
		v = strtoll(r->str, NULL, 10);
	else if (r && r->type == REDIS_REPLY_ERROR)
		fprintf(stderr, "rcmd: %s\n", r->str);
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return v;
}

/* Counts events in jr:events with status st (and optionally error prefix);
 * the consumer of the last one goes to last_consumer. */
static int count_events(const char *st, const char *err_prefix, char *last_consumer, size_t lclen)
{
	redisContext *c = raw();
	redisReply *r = redisCommand(c, "XRANGE jr:events - +");
	int n = 0;
	for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
		redisReply *f = r->element[i]->element[1];
		cJSON *arr = NULL;
		for (size_t k = 0; k + 1 < f->elements; k += 2)
			if (!strcmp(f->element[k]->str, "e"))
				arr = cJSON_Parse(f->element[k + 1]->str);
		CHECK(cJSON_IsArray(arr));
		cJSON *e;
		cJSON_ArrayForEach(e, arr) {
			const char *status = cJSON_GetStringValue(cJSON_GetObjectItem(e, "status"));
			const char *error = cJSON_GetStringValue(cJSON_GetObjectItem(e, "error"));
			const char *consumer = cJSON_GetStringValue(cJSON_GetObjectItem(e, "consumer"));
			if (!error)
				error = "";
			if (status && !strcmp(status, st) &&
			    (!err_prefix || !strncmp(error, err_prefix, strlen(err_prefix)))) {
				n++;
				if (last_consumer)
					snprintf(last_consumer, lclen, "%s", consumer ? consumer : "");
			}
		}
		cJSON_Delete(arr);
	}
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return n;
}

/* ------------------------------------------------------------------ */
/* fixtures                                                            */
/* ------------------------------------------------------------------ */

static struct config base_cfg(void)
{
	struct config cfg;
	unit_queue_config(&cfg, server_url);
	cfg.job_max_attempts = 5;
	cfg.job_backoff_base_ms = 100;
	cfg.job_backoff_max_ms = 1000;
	cfg.worker_concurrency = 4;
	return cfg;
}

static struct queue *open_q(const struct config *cfg, const char *name)
{
	struct queue *q = NULL;
	char err[256];
	int rv = queue_redis_open(cfg, name, &q, err, sizeof err);
	if (rv)
		fprintf(stderr, "open %s: %s\n", name, err);
	CHECK(rv == 0 && q);
	return q;
}

static void fresh(void)
{
	rcmd("FLUSHALL");
}

static void make_run(struct run *r, const char *job, int i)
{
	memset(r, 0, sizeof *r);
	r->job = xstrdup(job);
	r->payload = xasprintf("{\"i\":%d}", i);
	r->source = RUN_SRC_ADHOC;
}

static int enqueue_n(struct queue *q, int n, char (*ids)[RUN_ID_LEN + 1])
{
	struct run *runs = xcalloc((size_t)n, sizeof *runs);
	for (int i = 0; i < n; i++)
		make_run(&runs[i], "noop", i);
	int rv = q->ops->enqueue(q, runs, (size_t)n);
	for (int i = 0; i < n; i++) {
		if (ids)
			memcpy(ids[i], runs[i].id, sizeof ids[i]);
		run_clear(&runs[i]);
	}
	free(runs);
	return rv;
}

static void complete_all(struct queue *q, struct run *runs, size_t n, enum run_outcome oc, int *fenced)
{
	struct run_result *res = xcalloc(n ? n : 1, sizeof *res);
	for (size_t i = 0; i < n; i++)
		res[i].outcome = oc;
	CHECK(q->ops->complete(q, runs, res, n, fenced) == 0);
	free(res);
}

/* Claims until it gets at least one run or timeout_ms passes. */
static size_t claim_wait(struct queue *q, struct run *out, size_t max, int64_t timeout_ms)
{
	int64_t end = mono_ms() + timeout_ms;
	size_t n = 0;
	while (mono_ms() < end) {
		int rv = q->ops->claim(q, out, max, 100, &n);
		CHECK(rv == 0);
		if (rv || n)
			break;
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* tests                                                               */
/* ------------------------------------------------------------------ */

#define NRUNS 2000
static atomic_int seen[NRUNS];
static atomic_int done_total;

struct worker_arg {
	struct queue *q;
	int completed;
};

/* One claim of up to max runs, run and completed; 0 when the claim failed. */
static int work_once(struct worker_arg *w, size_t max)
{
	struct run batch[64];
	size_t n = 0;
	if (max > 64 || w->q->ops->claim(w->q, batch, max, 50, &n))
		return 0;
	for (size_t i = 0; i < n; i++) {
		int idx = atoi(strchr(batch[i].payload, ':') + 1);
		if (idx >= 0 && idx < NRUNS)
			atomic_fetch_add(&seen[idx], 1);
	}
	int fenced[64];
	struct run_result res[64];
	memset(res, 0, sizeof res);
	if (n && w->q->ops->complete(w->q, batch, res, n, fenced) == 0) {
		for (size_t i = 0; i < n; i++)
			if (!fenced[i])
				w->completed++;
		atomic_fetch_add(&done_total, (int)n);
	}
	for (size_t i = 0; i < n; i++)
		run_clear(&batch[i]);
	return 1;
}

static void *worker(void *p)
{
	struct worker_arg *w = p;
	int64_t end = mono_ms() + 20000;
	while (atomic_load(&done_total) < NRUNS && mono_ms() < end)
		if (!work_once(w, 64))
			break;
	return NULL;
}

static void test_two_consumers_exactly_once(void)
{
	fresh();
	struct config cfg = base_cfg();
	struct queue *a = open_q(&cfg, "ca"), *b = open_q(&cfg, "cb");
	if (!a || !b)
		return;
	CHECK(enqueue_n(a, NRUNS, NULL) == 0);
	struct worker_arg wa = { a, 0 }, wb = { b, 0 };
	/* each takes a first batch, so both are in the group whichever thread
	 * is quicker afterwards (one may well drain the rest alone) */
	CHECK(work_once(&wa, 10) && work_once(&wb, 10));
	pthread_t ta, tb;
	pthread_create(&ta, NULL, worker, &wa);
	pthread_create(&tb, NULL, worker, &wb);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	int once = 0;
	for (int i = 0; i < NRUNS; i++)
		once += atomic_load(&seen[i]) == 1;
	CHECK(once == NRUNS);
	CHECK(wa.completed + wb.completed == NRUNS);
	CHECK(wa.completed > 0 && wb.completed > 0);
	CHECK(count_events("succeeded", NULL, NULL, 0) == NRUNS);
	CHECK(rcmd("XPENDING jr:runs jr:workers") == 4);   /* summary array */
	struct queue_stats st;
	CHECK(a->ops->stats(a, &st) == 0);
	CHECK(st.queued == 0 && st.running == 0);
	CHECK(st.nconsumers == 2);
	queue_stats_free(&st);
	a->ops->destroy(a);
	b->ops->destroy(b);
}

static void test_lease_reclaim_and_fencing(void)
{
	fresh();
	struct config cfg = base_cfg();
	cfg.job_lease_ms = 200;
	struct queue *a = open_q(&cfg, "slow"), *b = open_q(&cfg, "fast");
	if (!a || !b)
		return;
	char ids[1][RUN_ID_LEN + 1];
	CHECK(enqueue_n(a, 1, ids) == 0);
	struct run ra[4], rb[4];
	size_t na = claim_wait(a, ra, 4, 2000);
	CHECK(na == 1);
	CHECK(ra[0].attempt == 1 && ra[0].fence == 1);
	/* a goes silent; b gets the run after the lease */
	int64_t t0 = mono_ms();
	size_t nb = claim_wait(b, rb, 4, 3000);
	CHECK(nb == 1);
	CHECK(mono_ms() - t0 >= 150);
	if (nb == 1) {
		CHECK_STR(rb[0].id, ids[0]);
		CHECK(rb[0].fence == 2);
		CHECK(rb[0].attempt == 2);
	}
	/* a wakes up: its result is fenced */
	int fenced[4] = { -1 };
	complete_all(a, ra, na, RUN_OK, fenced);
	CHECK(fenced[0] == 1);
	complete_all(b, rb, nb, RUN_OK, fenced);
	CHECK(fenced[0] == 0);
	char who[64] = "";
	CHECK(count_events("succeeded", NULL, who, sizeof who) == 1);
	CHECK(strcmp(who, "fast") == 0);
	for (size_t i = 0; i < na; i++)
		run_clear(&ra[i]);
	for (size_t i = 0; i < nb; i++)
		run_clear(&rb[i]);
	a->ops->destroy(a);
	b->ops->destroy(b);
}

static void test_extend_keeps_lease(void)
{
	fresh();
	struct config cfg = base_cfg();
	cfg.job_lease_ms = 500;   /* extends every ~50 ms: a tenfold margin */
	struct queue *a = open_q(&cfg, "long"), *b = open_q(&cfg, "thief");
	if (!a || !b)
		return;
	CHECK(enqueue_n(a, 1, NULL) == 0);
	struct run ra[2], rb[2];
	size_t na = claim_wait(a, ra, 2, 2000);
	CHECK(na == 1);
	int64_t end = mono_ms() + 1500;   /* three leases */
	size_t stolen = 0;
	while (mono_ms() < end) {
		CHECK(a->ops->extend(a, ra, na) == 0);
		size_t nb = 0;
		CHECK(b->ops->claim(b, rb, 2, 50, &nb) == 0);
		stolen += nb;
		for (size_t i = 0; i < nb; i++)
			run_clear(&rb[i]);
	}
	CHECK(stolen == 0);
	int fenced[2] = { -1 };
	complete_all(a, ra, na, RUN_OK, fenced);
	CHECK(fenced[0] == 0);
	for (size_t i = 0; i < na; i++)
		run_clear(&ra[i]);
	a->ops->destroy(a);
	b->ops->destroy(b);
}

static void test_retry_then_dead(void)
{
	fresh();
	struct config cfg = base_cfg();
	cfg.job_max_attempts = 3;
	cfg.job_backoff_base_ms = 100;
	struct queue *q = open_q(&cfg, "retrier");
	if (!q)
		return;
	char ids[1][RUN_ID_LEN + 1];
	CHECK(enqueue_n(q, 1, ids) == 0);
	for (int attempt = 1; attempt <= 3; attempt++) {
		struct run r[2];
		int64_t t0 = mono_ms();
		size_t n = claim_wait(q, r, 2, 3000);
		CHECK(n == 1);
		if (n != 1)
			break;
		if (attempt > 1)
			CHECK(mono_ms() - t0 >= 40);   /* backoff: at least half of base */
		CHECK(r[0].attempt == attempt);
		CHECK_STR(r[0].id, ids[0]);
		CHECK_STR(r[0].payload, "{\"i\":0}");
		struct run_result res = { .outcome = RUN_RETRY, .duration_ms = 5 };
		snprintf(res.error, sizeof res.error, "boom %d", attempt);
		int fenced = -1;
		CHECK(q->ops->complete(q, r, &res, 1, &fenced) == 0);
		CHECK(fenced == 0);
		if (attempt < 3)
			CHECK(rcmd("ZCARD jr:delayed") == 1);
		run_clear(&r[0]);
	}
	CHECK(rcmd("ZCARD jr:delayed") == 0);
	CHECK(count_events("failed", "boom", NULL, 0) == 2);
	CHECK(count_events("dead", "boom 3", NULL, 0) == 1);
	CHECK(rcmd("GET jr:stats:dead") == 1);
	struct queue_stats st;
	CHECK(q->ops->stats(q, &st) == 0);
	CHECK(st.dead == 1 && st.delayed == 0 && st.running == 0);
	queue_stats_free(&st);
	q->ops->destroy(q);
}

static void test_defer_keeps_attempt(void)
{
	fresh();
	struct config cfg = base_cfg();
	struct queue *q = open_q(&cfg, "deferrer");
	if (!q)
		return;
	CHECK(enqueue_n(q, 1, NULL) == 0);
	struct run r[1];
	CHECK(claim_wait(q, r, 1, 2000) == 1);
	struct run_result res = { .outcome = RUN_DEFER, .retry_after_ms = 50 };
	CHECK(q->ops->complete(q, r, &res, 1, NULL) == 0);
	run_clear(&r[0]);
	CHECK(claim_wait(q, r, 1, 2000) == 1);
	CHECK(r[0].attempt == 1);
	complete_all(q, r, 1, RUN_OK, NULL);
	run_clear(&r[0]);
	CHECK(count_events("queued", NULL, NULL, 0) == 1);
	q->ops->destroy(q);
}

/* release gives an unstarted run back at once: the same run id, no attempt
 * counted for the release, the attempt of a consumer that died still counted,
 * and nothing given back once the lease has passed to another consumer. */
static void test_release_gives_back_without_an_attempt(void)
{
	fresh();
	struct config cfg = base_cfg();
	cfg.job_lease_ms = 200;
	struct queue *a = open_q(&cfg, "rel-a"), *b = open_q(&cfg, "rel-b");
	if (!a || !b)
		return;
	char ids[2][RUN_ID_LEN + 1];
	CHECK(enqueue_n(a, 2, ids) == 0);
	struct run r[2], x[2];
	CHECK(claim_wait(a, r, 2, 2000) == 2);
	int released[2] = { -1, -1 };
	CHECK(a->ops->release(a, r, 2, released) == 0);
	CHECK(released[0] == 1 && released[1] == 1);
	CHECK(rcmd("XPENDING jr:runs jr:workers - + 10") == 0);
	/* taken at once by another consumer: same ids, attempt 1 */
	CHECK(claim_wait(b, x, 2, 2000) == 2);
	CHECK_STR(x[0].id, ids[0]);
	CHECK_STR(x[1].id, ids[1]);
	CHECK(x[0].attempt == 1 && x[1].attempt == 1);
	/* b dies with them; a reclaims them after the lease (attempt 2), gives
	 * them back: the next claim is attempt 2 again, not 3 */
	struct run y[2];
	CHECK(claim_wait(a, y, 2, 3000) == 2);
	CHECK(y[0].attempt == 2 && y[0].fence == 2);
	CHECK(a->ops->release(a, y, 2, released) == 0);
	CHECK(released[0] == 1 && released[1] == 1);
	/* b wakes up: its release is fenced */
	CHECK(b->ops->release(b, x, 2, released) == 0);
	CHECK(released[0] == 0 && released[1] == 0);
	struct run z[2];
	CHECK(claim_wait(b, z, 2, 2000) == 2);
	CHECK(z[0].attempt == 2 && z[1].attempt == 2);
	complete_all(b, z, 2, RUN_OK, NULL);
	CHECK(count_events("succeeded", NULL, NULL, 0) == 2);
	for (int i = 0; i < 2; i++) {
		run_clear(&r[i]);
		run_clear(&x[i]);
		run_clear(&y[i]);
		run_clear(&z[i]);
	}
	a->ops->destroy(a);
	b->ops->destroy(b);
}

static void test_malformed_entries(void)
{
	fresh();
	struct config cfg = base_cfg();
	struct queue *q = open_q(&cfg, "careful");
	if (!q)
		return;
	/* garbage as another service might write it, with redis-cli */
	rcmd("XADD jr:runs * foo bar");
	rcmd("XADD jr:runs * v 1 type run job noop");                /* no id */
	rcmd("XADD jr:runs * v 2 type run id x1 job noop");           /* unknown version */
	rcmd("XADD jr:runs * v 1 type run id x2 job noop payload {nope");
	rcmd("XADD jr:runs * v 1 type run id x3 job noop attempt -4");
	rcmd("XADD jr:runs * v 1 type run id good-1 job noop payload {\"ok\":true} src cycle");
	struct run r[8];
	size_t n = claim_wait(q, r, 8, 2000);
	CHECK(n == 1);
	if (n == 1) {
		CHECK_STR(r[0].id, "good-1");
		CHECK(r[0].source == RUN_SRC_CYCLE);
		CHECK(r[0].max_attempts == 5);
		complete_all(q, r, n, RUN_OK, NULL);
		run_clear(&r[0]);
	}
	CHECK(count_events("dead", "malformed entry:", NULL, 0) == 5);
	CHECK(rcmd("XPENDING jr:runs jr:workers - + 10") == 0);
	/* and claiming carries on */
	CHECK(enqueue_n(q, 3, NULL) == 0);
	n = claim_wait(q, r, 8, 2000);
	CHECK(n == 3);
	complete_all(q, r, n, RUN_OK, NULL);
	for (size_t i = 0; i < n; i++)
		run_clear(&r[i]);
	q->ops->destroy(q);
}

static void *ticker(void *p)
{
	struct queue *q = p;
	int added = 0;
	CHECK(queue_redis_tick(q, 4242, &added) == 0);
	return (void *)(intptr_t)added;
}

static void test_tick_dedupe(void)
{
	fresh();
	struct config cfg = base_cfg();
	struct queue *q[3];
	pthread_t t[3];
	for (int i = 0; i < 3; i++) {
		char name[16];
		snprintf(name, sizeof name, "producer-%d", i);
		q[i] = open_q(&cfg, name);
		if (!q[i])
			return;
	}
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, ticker, q[i]);
	int added = 0;
	for (int i = 0; i < 3; i++) {
		void *rv;
		pthread_join(t[i], &rv);
		added += (int)(intptr_t)rv;
	}
	CHECK(added == 1);
	CHECK(rcmd("XLEN jr:runs") == 1);
	CHECK(queue_redis_slot(10000, 5000) == 2);
	/* while that tick waits for a consumer, later slots add none */
	CHECK(queue_redis_tick(q[1], 4243, &added) == 0);
	CHECK(added == 0);
	CHECK(rcmd("XLEN jr:runs") == 1);
	struct queue_stats st;
	CHECK(q[0]->ops->stats(q[0], &st) == 0);
	CHECK(st.queued == 0);   /* a tick is not a queued run */
	queue_stats_free(&st);
	struct run r[2];
	size_t n = claim_wait(q[0], r, 2, 2000);
	CHECK(n == 1);
	if (n == 1) {
		CHECK(r[0].is_tick);
		CHECK(r[0].job == NULL);
		complete_all(q[0], r, 1, RUN_OK, NULL);
		run_clear(&r[0]);
	}
	CHECK(rcmd("XPENDING jr:runs jr:workers - + 10") == 0);
	CHECK(rcmd("XLEN jr:events") == 0);
	/* delivered: the next slot ticks again */
	CHECK(queue_redis_tick(q[2], 4244, &added) == 0);
	CHECK(added == 1);
	CHECK(rcmd("XLEN jr:runs") == 2);
	for (int i = 0; i < 3; i++)
		q[i]->ops->destroy(q[i]);
}

static void test_trim_keeps_pending(void)
{
	fresh();
	struct config cfg = base_cfg();
	cfg.redis_stream_max_len = 5;
	struct queue *q = open_q(&cfg, "trimmer");
	if (!q)
		return;
	char ids[50][RUN_ID_LEN + 1];
	CHECK(enqueue_n(q, 50, ids) == 0);
	struct run held[10];
	size_t nh = 0;
	CHECK(q->ops->claim(q, held, 10, 100, &nh) == 0);
	CHECK(nh == 10);
	int64_t trimmed = -1;
	CHECK(queue_redis_maintain(q, 0, NULL, &trimmed) == 0);
	CHECK(trimmed == 0);   /* the oldest entry is pending */
	CHECK(rcmd("XLEN jr:runs") == 50);
	/* the next 30 are processed; the held 10 stay pending */
	struct run r[30];
	size_t n = 0;
	CHECK(q->ops->claim(q, r, 30, 100, &n) == 0);
	CHECK(n == 30);
	complete_all(q, r, n, RUN_OK, NULL);
	for (size_t i = 0; i < n; i++)
		run_clear(&r[i]);
	CHECK(queue_redis_maintain(q, 0, NULL, &trimmed) == 0);
	/* still nothing: the held ones are the oldest (jr:events has no such
	 * protection above the cap: history loses entries before work does) */
	CHECK(rcmd("XRANGE jr:runs - + COUNT 100") == 50);
	complete_all(q, held, nh, RUN_OK, NULL);
	for (size_t i = 0; i < nh; i++)
		run_clear(&held[i]);
	/* now only the 10 undelivered must stay (hard cap 5 never drops them,
	 * even though the history group has not read anything) */
	CHECK(queue_redis_maintain(q, 0, NULL, &trimmed) == 0);
	CHECK(trimmed >= 40);
	CHECK(rcmd("XLEN jr:runs") == 10);
	n = 0;
	CHECK(q->ops->claim(q, r, 30, 100, &n) == 0);
	CHECK(n == 10);
	if (n == 10)
		CHECK_STR(r[0].id, ids[40]);
	complete_all(q, r, n, RUN_OK, NULL);
	for (size_t i = 0; i < n; i++)
		run_clear(&r[i]);
	q->ops->destroy(q);
}

static void test_trim_respects_history_group(void)
{
	fresh();
	struct config cfg = base_cfg();   /* max len 1M: no hard cap */
	struct queue *q = open_q(&cfg, "t2");
	if (!q)
		return;
	CHECK(enqueue_n(q, 20, NULL) == 0);
	struct run r[20];
	size_t n = 0;
	CHECK(q->ops->claim(q, r, 20, 100, &n) == 0);
	CHECK(n == 20);
	complete_all(q, r, n, RUN_OK, NULL);
	for (size_t i = 0; i < n; i++)
		run_clear(&r[i]);
	int64_t trimmed = -1;
	CHECK(queue_redis_maintain(q, 0, NULL, &trimmed) == 0);
	CHECK(trimmed == 0);   /* jr:history has not read them */
	/* the history group reads 15 and acknowledges 12 */
	redisContext *c = raw();
	redisReply *x = redisCommand(c, "XREADGROUP GROUP jr:history h COUNT 15 STREAMS jr:runs >");
	CHECK(x && x->type == REDIS_REPLY_ARRAY);
	if (x && x->type == REDIS_REPLY_ARRAY) {
		redisReply *e = x->element[0]->element[1];
		for (size_t i = 0; i < 12; i++) {
			redisReply *a = redisCommand(c, "XACK jr:runs jr:history %s", e->element[i]->element[0]->str);
			freeReplyObject(a);
		}
	}
	if (x)
		freeReplyObject(x);
	redisFree(c);
	CHECK(queue_redis_maintain(q, 0, NULL, &trimmed) == 0);
	CHECK(trimmed == 12);
	CHECK(rcmd("XLEN jr:runs") == 8);
	q->ops->destroy(q);
}

static void test_consumer_gc(void)
{
	fresh();
	struct config cfg = base_cfg();
	struct queue *q = open_q(&cfg, "gc-runner");
	if (!q)
		return;
	CHECK(enqueue_n(q, 1, NULL) == 0);
	/* "busy" holds a run; "ghost" and "gc-runner" hold nothing */
	rcmd("XREADGROUP GROUP jr:workers busy COUNT 1 STREAMS jr:runs >");
	rcmd("XREADGROUP GROUP jr:workers ghost COUNT 1 STREAMS jr:runs >");
	struct run r[1];
	size_t n = 0;
	CHECK(q->ops->claim(q, r, 1, 0, &n) == 0);
	CHECK(n == 0);
	usleep(20000);
	CHECK(queue_redis_maintain(q, 10, NULL, NULL) == 0);
	struct queue_stats st;
	CHECK(q->ops->stats(q, &st) == 0);
	CHECK(st.nconsumers == 1);
	if (st.nconsumers == 1) {
		CHECK(strcmp(st.consumers[0].name, "busy") == 0);
		CHECK(st.consumers[0].pending == 1);
	}
	CHECK(st.running == 1 && st.queued == 0);
	queue_stats_free(&st);
	q->ops->destroy(q);
}

static void test_idempotency_key(void)
{
	fresh();
	struct config cfg = base_cfg();
	struct queue *q = open_q(&cfg, "idem");
	if (!q)
		return;
	struct run a, b, c;
	make_run(&a, "noop", 1);
	make_run(&b, "noop", 2);
	make_run(&c, "meta_spend", 3);
	a.idempotency_key = xstrdup("key-1");
	b.idempotency_key = xstrdup("key-1");
	c.idempotency_key = xstrdup("key-1");   /* another job: another key space */
	CHECK(q->ops->enqueue(q, &a, 1) == 0);
	CHECK(q->ops->enqueue(q, &b, 1) == 0);
	CHECK(q->ops->enqueue(q, &c, 1) == 0);
	CHECK(a.id[0] && strcmp(a.id, b.id) == 0);
	CHECK(strcmp(a.id, c.id) != 0);
	CHECK(rcmd("XLEN jr:runs") == 2);
	/* in one batch too, and after SCRIPT FLUSH (NOSCRIPT fallback) */
	rcmd("SCRIPT FLUSH");
	struct run batch[2];
	make_run(&batch[0], "noop", 4);
	make_run(&batch[1], "noop", 5);
	batch[0].idempotency_key = xstrdup("key-1");
	batch[1].idempotency_key = xstrdup("key-2");
	CHECK(q->ops->enqueue(q, batch, 2) == 0);
	CHECK_STR(batch[0].id, a.id);
	CHECK(rcmd("XLEN jr:runs") == 3);
	run_clear(&a);
	run_clear(&b);
	run_clear(&c);
	run_clear(&batch[0]);
	run_clear(&batch[1]);
	q->ops->destroy(q);
}

static void test_restart_reads_own_pending_first(void)
{
	fresh();
	struct config cfg = base_cfg();
	struct queue *q = open_q(&cfg, "stable-name");
	if (!q)
		return;
	CHECK(enqueue_n(q, 5, NULL) == 0);
	struct run r[8];
	size_t n = claim_wait(q, r, 8, 2000);
	CHECK(n == 5);
	for (size_t i = 0; i < n; i++)
		run_clear(&r[i]);
	/* a second thread of the same process, sharing the name, never takes
	 * them: they were delivered after the process started */
	struct queue *sib = open_q(&cfg, "stable-name");
	size_t ns = 0;
	CHECK(sib->ops->claim(sib, r + 5, 3, 0, &ns) == 0);
	CHECK(ns == 0);
	sib->ops->destroy(sib);
	q->ops->destroy(q);   /* "crash" */
	usleep(1100 * 1000);  /* OWN_MARGIN_MS */
	queue_redis_reset_epoch();   /* "restart" */
	q = open_q(&cfg, "stable-name");
	if (!q)
		return;
	int64_t t0 = mono_ms();
	n = 0;
	CHECK(q->ops->claim(q, r, 8, 0, &n) == 0);
	CHECK(n == 5);
	CHECK(mono_ms() - t0 < 1000);   /* no waiting for the 30 s lease */
	if (n == 5)
		CHECK(r[0].fence == 2 && r[0].attempt == 2);
	int fenced[8] = { -1 };
	complete_all(q, r, n, RUN_OK, fenced);
	CHECK(fenced[0] == 0);
	for (size_t i = 0; i < n; i++)
		run_clear(&r[i]);
	CHECK(count_events("succeeded", NULL, NULL, 0) == 5);
	q->ops->destroy(q);
}

static void test_delayed_enqueue(void)
{
	fresh();
	struct config cfg = base_cfg();
	struct queue *q = open_q(&cfg, "later");
	if (!q)
		return;
	struct run a;
	make_run(&a, "noop", 1);
	a.run_at_ms = wall_ms() + 300;
	CHECK(q->ops->enqueue(q, &a, 1) == 0);
	/* on the stream with its runat (the history writer records it); the
	 * claim that reads it early parks it in jr:delayed */
	CHECK(rcmd("XLEN jr:runs") == 1);
	CHECK(rcmd("ZCARD jr:delayed") == 0);
	struct run r[1];
	size_t n = 0;
	CHECK(q->ops->claim(q, r, 1, 0, &n) == 0);
	CHECK(n == 0);
	CHECK(rcmd("ZCARD jr:delayed") == 1);
	int64_t t0 = mono_ms();
	n = claim_wait(q, r, 1, 3000);
	CHECK(n == 1);
	CHECK(mono_ms() - t0 >= 150);
	if (n == 1) {
		CHECK_STR(r[0].id, a.id);
		run_clear(&r[0]);
	}
	run_clear(&a);
	q->ops->destroy(q);
}

static void test_policy_and_ping(void)
{
	struct config cfg = base_cfg();
	struct queue *q = open_q(&cfg, "checker");
	if (!q)
		return;
	char policy[64];
	int noev = -1;
	CHECK(queue_redis_check_policy(q, policy, sizeof policy, &noev) == 0);
	CHECK(noev == 1);
	CHECK(strcmp(policy, "noeviction") == 0);
	rcmd("CONFIG SET maxmemory-policy allkeys-lru");
	CHECK(queue_redis_check_policy(q, policy, sizeof policy, &noev) == 0);
	CHECK(noev == 0);
	rcmd("CONFIG SET maxmemory-policy noeviction");
	int64_t lat = -1;
	CHECK(queue_redis_ping(q, &lat) == 0);
	CHECK(lat >= 0);
	q->ops->destroy(q);
}

static void test_outage_and_reconnect(void)
{
	fresh();
	struct config cfg = base_cfg();
	struct queue *q = open_q(&cfg, "survivor");
	if (!q)
		return;
	server_stop();
	struct run r[4];
	size_t n = 0;
	int64_t t0 = mono_ms();
	CHECK(q->ops->claim(q, r, 4, 100, &n) == QUEUE_EDOWN);
	CHECK(q->ops->claim(q, r, 4, 100, &n) == QUEUE_EDOWN);
	CHECK(enqueue_n(q, 1, NULL) == QUEUE_EDOWN);
	CHECK(mono_ms() - t0 < 2000);
	/* a handle cannot be opened while it is down, quickly */
	struct queue *q2 = NULL;
	char err[256];
	t0 = mono_ms();
	CHECK(queue_redis_open(&cfg, "late", &q2, err, sizeof err) == QUEUE_EDOWN);
	CHECK(mono_ms() - t0 < 2500);
	server_start();   /* comes back empty, as without persistence */
	int ok = 0;
	for (int i = 0; i < 100 && !ok; i++) {
		ok = enqueue_n(q, 1, NULL) == 0;
		if (!ok)
			usleep(50000);
	}
	CHECK(ok);
	n = claim_wait(q, r, 4, 3000);
	CHECK(n == 1);
	complete_all(q, r, n, RUN_OK, NULL);
	for (size_t i = 0; i < n; i++)
		run_clear(&r[i]);
	q->ops->destroy(q);
}

static void test_url_parsing(void)
{
	fresh();
	struct config cfg = base_cfg();
	struct queue *q = NULL;
	char err[256];
	cfg.redis_url = "http://x";
	CHECK(queue_redis_open(&cfg, "x", &q, err, sizeof err) == QUEUE_EINVAL);
	cfg.redis_url = "redis://:sekrit@127.0.0.1:99999";
	CHECK(queue_redis_open(&cfg, "x", &q, err, sizeof err) == QUEUE_EINVAL);
	CHECK(strstr(err, "sekrit") == NULL);
	/* AUTH with a wrong password is refused, and the password is not echoed */
	char url[128];
	snprintf(url, sizeof url, "redis://:sekrit@127.0.0.1:%d/3", server_port);
	cfg.redis_url = url;
	CHECK(queue_redis_open(&cfg, "x", &q, err, sizeof err) == QUEUE_EDOWN);
	CHECK(strstr(err, "sekrit") == NULL);
	rcmd("CONFIG SET requirepass sekrit");
	CHECK(queue_redis_open(&cfg, "x", &q, err, sizeof err) == 0);
	if (q) {
		CHECK(enqueue_n(q, 1, NULL) == 0);
		q->ops->destroy(q);
	}
	/* db 3 was used, not db 0 */
	redisContext *c = raw();
	redisReply *r = redisCommand(c, "AUTH sekrit");
	freeReplyObject(r);
	r = redisCommand(c, "EXISTS jr:runs");
	CHECK(r && r->integer == 0);
	freeReplyObject(r);
	r = redisCommand(c, "SELECT 3");
	freeReplyObject(r);
	r = redisCommand(c, "XLEN jr:runs");
	CHECK(r && r->integer == 1);
	freeReplyObject(r);
	r = redisCommand(c, "CONFIG SET requirepass %s", "");
	freeReplyObject(r);
	redisFree(c);
}

/* JR_BENCH=1: claim+complete throughput on one connection, memory/entry. */
static void bench(void)
{
	const int N = 100000;
	fresh();
	struct config cfg = base_cfg();
	struct queue *q = open_q(&cfg, "bench");
	if (!q)
		return;
	long long used0 = 0;
	{
		redisContext *c = raw();
		redisReply *r = redisCommand(c, "MEMORY STATS");
		for (size_t i = 0; r && i + 1 < r->elements; i += 2)
			if (!strcmp(r->element[i]->str, "dataset.bytes"))
				used0 = r->element[i + 1]->integer;
		freeReplyObject(r);
		redisFree(c);
	}
	int64_t t0 = mono_ms();
	struct run *runs = xcalloc((size_t)N, sizeof *runs);
	for (int i = 0; i < N; i++) {
		runs[i].job = xstrdup("noop");
		runs[i].source = RUN_SRC_ADHOC;
	}
	CHECK(q->ops->enqueue(q, runs, (size_t)N) == 0);
	int64_t t1 = mono_ms();
	for (int i = 0; i < N; i++)
		run_clear(&runs[i]);
	free(runs);
	long long mem_usage = rcmd("MEMORY USAGE jr:runs SAMPLES 0");
	long long used1 = 0;
	{
		redisContext *c = raw();
		redisReply *r = redisCommand(c, "MEMORY STATS");
		for (size_t i = 0; r && i + 1 < r->elements; i += 2)
			if (!strcmp(r->element[i]->str, "dataset.bytes"))
				used1 = r->element[i + 1]->integer;
		freeReplyObject(r);
		redisFree(c);
	}
	int done = 0;
	struct run batch[256];
	struct run_result res[256];
	memset(res, 0, sizeof res);
	int fenced[256];
	int64_t t2 = mono_ms(), tclaim = 0;
	while (done < N) {
		size_t n = 0;
		int64_t tc = mono_ms();
		if (q->ops->claim(q, batch, 256, 100, &n) || n == 0)
			break;
		tclaim += mono_ms() - tc;
		CHECK(q->ops->complete(q, batch, res, n, fenced) == 0);
		for (size_t i = 0; i < n; i++)
			run_clear(&batch[i]);
		done += (int)n;
	}
	int64_t t3 = mono_ms();
	CHECK(done == N);
	printf("bench: enqueue %d runs in %lld ms (%.0f/s)\n", N, (long long)(t1 - t0),
	       N * 1000.0 / (double)(t1 - t0 ? t1 - t0 : 1));
	printf("bench: claim+complete %d runs in %lld ms (%.0f/s), batches of 256, one connection\n",
	       done, (long long)(t3 - t2), done * 1000.0 / (double)(t3 - t2 ? t3 - t2 : 1));
	printf("bench: of which claim %lld ms, complete %lld ms\n", (long long)tclaim,
	       (long long)(t3 - t2 - tclaim));
	printf("bench: memory per queued run: MEMORY USAGE jr:runs %.1f B, dataset delta %.1f B\n",
	       mem_usage / (double)N, (used1 - used0) / (double)N);
	printf("bench: jr:events after %d completions: %.1f B/run (MEMORY USAGE)\n", N,
	       rcmd("MEMORY USAGE jr:events SAMPLES 0") / (double)N);
	if (getenv("JR_BENCH_STATS")) {
		redisContext *c = raw();
		redisReply *r = redisCommand(c, "INFO commandstats");
		if (r && r->str)
			printf("%s\n", r->str);
		freeReplyObject(r);
		redisFree(c);
	}
	q->ops->destroy(q);
}

/* Every file of common/lua/ (as embedded, with its includes) compiles in
 * a real redis-server: a syntax error fails here with the file's name.
 * The scripts (not lib/) say their KEYS, ARGV and reply in their header. */
static void test_lua_scripts_load(void)
{
	redisContext *c = raw();
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK(JR_LUA_FILES >= 10);
	for (int i = 0; i < JR_LUA_FILES; i++) {
		const struct jr_lua_file *f = &jr_lua_files[i];
		redisReply *r = redisCommand(c, "SCRIPT LOAD %s", f->src);
		int ok = r && r->type == REDIS_REPLY_STRING && r->len == 40;
		if (!ok)
			fprintf(stderr, "%s: SCRIPT LOAD: %s\n", f->path,
				r && r->type == REDIS_REPLY_ERROR ? r->str : "no answer");
		CHECK(ok);
		if (r)
			freeReplyObject(r);
		if (!strstr(f->path, "/lib/")) {
			int documented = strstr(f->src, "\n-- KEYS:") && strstr(f->src, "\n-- ARGV:") &&
					 strstr(f->src, "\n-- Reply:");
			if (!documented)
				fprintf(stderr, "%s: header comment without KEYS, ARGV and Reply\n", f->path);
			CHECK(documented);
		}
	}
	redisFree(c);
}

/* runlookup() (GET /runs/{id} of a run without a row, JOB_HISTORY=failures):
 * the state told from the entry, its event and jr:delayed.  An acknowledged
 * entry whose run waits in jr:delayed (a deferral whose event the history
 * writer has recorded and trimmed) is not a success. */
static char lookup_status[16];
static enum runlookup_result lookup(struct queue *q, const char *id, cJSON **out)
{
	enum runlookup_result res = RUNLOOKUP_UNSURE;
	cJSON *o = NULL;
	CHECK(runlookup(q, id, &res, &o) == 0);
	lookup_status[0] = '\0';
	if (o) {
		const char *st = cJSON_GetStringValue(cJSON_GetObjectItem(o, "status"));
		snprintf(lookup_status, sizeof lookup_status, "%s", st ? st : "");
		CHECK(cJSON_IsFalse(cJSON_GetObjectItem(o, "recorded")));
		CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "id")), id);
	}
	if (out)
		*out = o;
	else
		cJSON_Delete(o);
	return res;
}

static void test_run_lookup(void)
{
	fresh();
	struct config cfg = base_cfg();
	cfg.job_history = "failures";
	struct queue *q = open_q(&cfg, "looker");
	if (!q)
		return;
	char ids[3][RUN_ID_LEN + 1];
	CHECK(enqueue_n(q, 3, ids) == 0);
	CHECK(runlookup_id_ms(ids[0]) > wall_ms() - 60000 && runlookup_id_ms(ids[0]) <= wall_ms());
	CHECK(runlookup_id_ms("not-a-uuid") == 0);
	CHECK(lookup(q, ids[0], NULL) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "queued"));

	struct run r[1];
	cJSON *o = NULL;
	CHECK(claim_wait(q, r, 1, 2000) == 1 && !strcmp(r[0].id, ids[0]));
	CHECK(lookup(q, ids[0], &o) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "running"));
	CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "consumer")), "looker");
	CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "attempts")) == 1);
	cJSON_Delete(o);
	complete_all(q, r, 1, RUN_OK, NULL);
	run_clear(&r[0]);
	CHECK(lookup(q, ids[0], &o) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "succeeded"));
	CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "attempts")) == 1);
	CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "finishedAt")));
	CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "durationMs")));
	CHECK_STR(cJSON_GetObjectItem(o, "payload")->valuestring, "{\"i\":0}");   /* raw JSON */
	cJSON_Delete(o);

	/* a deferral: its event says delayed; once the event is gone (the
	 * writer recorded and trimmed it), jr:delayed still does */
	CHECK(claim_wait(q, r, 1, 2000) == 1 && !strcmp(r[0].id, ids[1]));
	struct run_result res = { .outcome = RUN_DEFER, .retry_after_ms = 600000 };
	CHECK(q->ops->complete(q, r, &res, 1, NULL) == 0);
	run_clear(&r[0]);
	CHECK(lookup(q, ids[1], NULL) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "delayed"));
	rcmd("DEL jr:events");
	CHECK(lookup(q, ids[1], &o) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "delayed"));
	CHECK(cJSON_GetStringValue(cJSON_GetObjectItem(o, "runAt")) != NULL);
	cJSON_Delete(o);

	/* many runs scheduled in jr:delayed (more than the bounded search
	 * reads): the success and the deferral are still told apart, by the
	 * exact members of the entry */
	redisContext *c = raw();
	CHECK(c != NULL);
	if (c) {
		enum { N = QUEUE_REDIS_LOOKUP_MEMBERS + 100 };
		const char **av = xcalloc(2 + 2 * N, sizeof *av);
		char (*buf)[64] = xcalloc(2 * N, 64);
		av[0] = "ZADD";
		av[1] = "jr:delayed";
		for (int i = 0; i < N; i++) {
			snprintf(buf[2 * i], 64, "%lld", (long long)(wall_ms() + 60000 + i));
			snprintf(buf[2 * i + 1], 64, "{\"v\":\"1\",\"id\":\"scheduled-%d\"}", i);
			av[2 + 2 * i] = buf[2 * i];
			av[3 + 2 * i] = buf[2 * i + 1];
		}
		redisReply *z = redisCommandArgv(c, 2 + 2 * N, av, NULL);
		CHECK(z && z->type == REDIS_REPLY_INTEGER && z->integer == N);
		if (z)
			freeReplyObject(z);
		free(av);
		free(buf);
		redisFree(c);
	}
	CHECK(lookup(q, ids[0], NULL) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "succeeded"));
	CHECK(lookup(q, ids[1], NULL) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "delayed"));
	/* ... while an id without an entry cannot be ruled out of them */
	char unknown[RUN_ID_LEN + 1];
	run_id_new(unknown);
	CHECK(lookup(q, unknown, NULL) == RUNLOOKUP_UNSURE);
	CHECK(rcmd("ZREMRANGEBYSCORE jr:delayed 0 %lld", (long long)(wall_ms() + 120000)) ==
	      QUEUE_REDIS_LOOKUP_MEMBERS + 100);

	/* a failed attempt: from its event */
	CHECK(claim_wait(q, r, 1, 2000) == 1 && !strcmp(r[0].id, ids[2]));
	complete_all(q, r, 1, RUN_RETRY, NULL);
	run_clear(&r[0]);
	CHECK(lookup(q, ids[2], &o) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "failed"));
	CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "attempts")) == 1);
	CHECK(cJSON_GetStringValue(cJSON_GetObjectItem(o, "consumer")) != NULL);
	cJSON_Delete(o);

	/* gone: an id Redis never had, and the success once its entry is trimmed */
	run_id_new(unknown);
	CHECK(lookup(q, unknown, NULL) == RUNLOOKUP_GONE);
	rcmd("XTRIM jr:runs MAXLEN 0");
	CHECK(lookup(q, ids[0], NULL) == RUNLOOKUP_GONE);
	/* ... while the deferred run is still found in jr:delayed */
	CHECK(lookup(q, ids[1], NULL) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "delayed"));

	/* bounded: a success with more entries behind it than the reads
	 * cover (one of them could be the run's, queued again) is not
	 * claimed; a run among them is found where the reads reach */
	char last[RUN_ID_LEN + 1];
	CHECK(enqueue_n(q, 1, &last) == 0);
	CHECK(claim_wait(q, r, 1, 2000) == 1 && !strcmp(r[0].id, last));
	complete_all(q, r, 1, RUN_OK, NULL);
	run_clear(&r[0]);
	CHECK(lookup(q, last, NULL) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "succeeded"));
	char (*behind)[RUN_ID_LEN + 1] = xcalloc(3 * QUEUE_REDIS_LOOKUP_ENTRIES, sizeof *behind);
	CHECK(enqueue_n(q, 3 * QUEUE_REDIS_LOOKUP_ENTRIES, behind) == 0);
	CHECK(lookup(q, last, NULL) == RUNLOOKUP_UNSURE);
	CHECK(lookup(q, behind[10], NULL) == RUNLOOKUP_FOUND && !strcmp(lookup_status, "queued"));
	CHECK(lookup(q, behind[3 * QUEUE_REDIS_LOOKUP_ENTRIES - 1], NULL) == RUNLOOKUP_FOUND &&
	      !strcmp(lookup_status, "queued"));   /* the backward read */
	/* the middle of a burst beyond both reads: not placed, not invented */
	CHECK(lookup(q, behind[QUEUE_REDIS_LOOKUP_ENTRIES + 100], NULL) == RUNLOOKUP_UNSURE);
	free(behind);
	q->ops->destroy(q);
}

/* The stream id helpers of common/lua/lib/stream.lua compare numbers, not
 * strings ("1-10" comes after "1-9", "10-0" after "9-0"). */
static void test_lua_stream_ids(void)
{
	redisContext *c = raw();
	CHECK(c != NULL);
	if (!c)
		return;
	char *src = NULL;
	CHECK(asprintf(&src, "%s\nlocal function b(x) if x then return 1 end return 0 end\n"
			     "return {b(id_less('1-9', '1-10')), b(id_less('1-10', '1-9')),\n"
			     "  b(id_less('9-0', '10-0')), b(id_less('5-5', '5-5')), id_next('7-19'),\n"
			     "  info_fields({'name', 'g', 'pending', 3})['pending']}\n",
		       jr_lua_lib_stream) > 0);
	redisReply *r = redisCommand(c, "EVAL %s 0", src);
	CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 6);
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 6) {
		CHECK(r->element[0]->integer == 1);
		CHECK(r->element[1]->integer == 0);
		CHECK(r->element[2]->integer == 1);
		CHECK(r->element[3]->integer == 0);
		CHECK_STR(r->element[4]->str, "7-20");
		CHECK(r->element[5]->integer == 3);
	} else if (r && r->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "EVAL: %s\n", r->str);
	}
	if (r)
		freeReplyObject(r);
	free(src);
	redisFree(c);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	snprintf(server_dir, sizeof server_dir, "/tmp/jr-test-redis-XXXXXX");
	if (!mkdtemp(server_dir)) {
		perror("mkdtemp");
		return 2;
	}
	server_port = unit_free_port();
	snprintf(server_url, sizeof server_url, "redis://127.0.0.1:%d", server_port);
	server_start();
	static const struct unit_test tests[] = {
		{ "lua_scripts_load", test_lua_scripts_load },
		{ "lua_stream_ids", test_lua_stream_ids },
		{ "two_consumers_exactly_once", test_two_consumers_exactly_once },
		{ "lease_reclaim_and_fencing", test_lease_reclaim_and_fencing },
		{ "extend_keeps_lease", test_extend_keeps_lease },
		{ "retry_then_dead", test_retry_then_dead },
		{ "defer_keeps_attempt", test_defer_keeps_attempt },
		{ "run_lookup", test_run_lookup },
		{ "release_gives_back_without_an_attempt", test_release_gives_back_without_an_attempt },
		{ "malformed_entries", test_malformed_entries },
		{ "tick_dedupe", test_tick_dedupe },
		{ "trim_keeps_pending", test_trim_keeps_pending },
		{ "trim_respects_history_group", test_trim_respects_history_group },
		{ "consumer_gc", test_consumer_gc },
		{ "idempotency_key", test_idempotency_key },
		{ "restart_reads_own_pending_first", test_restart_reads_own_pending_first },
		{ "delayed_enqueue", test_delayed_enqueue },
		{ "policy_and_ping", test_policy_and_ping },
		{ "url_parsing", test_url_parsing },
		{ "outage_and_reconnect", test_outage_and_reconnect },
	};
	int rv = unit_run(tests, JR_ARRAY_LEN(tests));
	const char *b = getenv("JR_BENCH");
	if (b && *b == '1')
		bench();
	server_stop();
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", server_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", server_dir);
	return rv;
}
