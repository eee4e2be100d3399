/* rawloop.c -- the raw Redis Streams limit that the benchmark compares to.
 *
 * What: the least a stream-based job queue must do, with nothing else:
 *   xadd N PIPE       XADD N entries (fields like a jobrunner run: id, job,
 *                     payload), PIPE commands in flight per round trip
 *   drain N BATCH     XREADGROUP COUNT BATCH from a consumer group, then one
 *                     XACK of the ids read, until N entries are acknowledged
 *   latency SAMPLES   a child blocks in XREADGROUP BLOCK 0 while the parent
 *                     XADDs one entry carrying its wall-clock time every
 *                     10 ms; the child reports now - sent (enqueue-to-start)
 * Each mode prints one JSON object on stdout.  tests/bench/run.py compiles it
 * with cc and pkg-config (hiredis) and uses the numbers as the ceiling.
 *
 * Why: a ratio to BullMQ says how jobrunner compares to a peer; a ratio to
 * this loop says how much of what Redis itself allows on this machine the
 * product leaves on the table.
 *
 * Rejected: redis-benchmark (it cannot do XREADGROUP+XACK in batches).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#define STREAM "bench:raw"
#define GROUP "g"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static redisContext *connect_or_die(const char *host, int port)
{
	struct timeval tv = { 5, 0 };
	redisContext *c = redisConnectWithTimeout(host, port, tv);
	if (!c || c->err) {
		fprintf(stderr, "rawloop: connect %s:%d: %s\n", host, port, c ? c->errstr : "oom");
		exit(2);
	}
	return c;
}

static redisReply *cmd_or_die(redisContext *c, int argc, const char **argv)
{
	redisReply *r = redisCommandArgv(c, argc, argv, NULL);
	if (!r) {
		fprintf(stderr, "rawloop: %s: %s\n", argv[0], c->errstr);
		exit(2);
	}
	if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "BUSYGROUP") == NULL) {
		fprintf(stderr, "rawloop: %s: %s\n", argv[0], r->str);
		exit(2);
	}
	return r;
}

static void ensure_group(redisContext *c, const char *start)
{
	const char *argv[] = { "XGROUP", "CREATE", STREAM, GROUP, start, "MKSTREAM" };
	freeReplyObject(cmd_or_die(c, 6, argv));
}

static int do_xadd(redisContext *c, long n, long pipe)
{
	char id[40];
	const char *argv[] = { "XADD", STREAM, "*", "id", id, "job", "noop", "p", "{}", "a", "0" };
	double t0 = now_s();
	for (long done = 0; done < n;) {
		long k = n - done < pipe ? n - done : pipe;
		for (long i = 0; i < k; i++) {
			snprintf(id, sizeof id, "01JBENCH%018ld", done + i);
			redisAppendCommandArgv(c, 11, argv, NULL);
		}
		for (long i = 0; i < k; i++) {
			redisReply *r;
			if (redisGetReply(c, (void **)&r) != REDIS_OK || r->type != REDIS_REPLY_STRING) {
				fprintf(stderr, "rawloop: XADD failed\n");
				return 2;
			}
			freeReplyObject(r);
		}
		done += k;
	}
	double dt = now_s() - t0;
	printf("{\"mode\":\"xadd\",\"n\":%ld,\"pipeline\":%ld,\"seconds\":%.3f,\"per_s\":%.0f}\n",
	       n, pipe, dt, (double)n / dt);
	return 0;
}

static int do_drain(redisContext *c, long n, long batch)
{
	char count[24];
	snprintf(count, sizeof count, "%ld", batch);
	const char *rd[] = { "XREADGROUP", "GROUP", GROUP, "c1", "COUNT", count,
			     "BLOCK", "1000", "STREAMS", STREAM, ">" };
	const char **ack = calloc((size_t)batch + 3, sizeof *ack);
	long acked = 0;
	double t0 = now_s();
	ack[0] = "XACK";
	ack[1] = STREAM;
	ack[2] = GROUP;
	while (acked < n) {
		redisReply *r = cmd_or_die(c, 11, rd);
		if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
			fprintf(stderr, "rawloop: stream ran dry after %ld entries\n", acked);
			return 2;
		}
		redisReply *entries = r->element[0]->element[1];
		size_t k = entries->elements;
		for (size_t i = 0; i < k; i++)
			ack[3 + i] = entries->element[i]->element[0]->str;
		redisReply *a = cmd_or_die(c, (int)k + 3, ack);
		acked += a->integer;
		freeReplyObject(a);
		freeReplyObject(r);
	}
	double dt = now_s() - t0;
	printf("{\"mode\":\"drain\",\"n\":%ld,\"batch\":%ld,\"seconds\":%.3f,\"per_s\":%.0f}\n",
	       acked, batch, dt, (double)acked / dt);
	free(ack);
	return 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static int do_latency(const char *host, int port, long samples)
{
	int fds[2];
	if (pipe(fds))
		return 2;
	pid_t pid = fork();
	if (pid == 0) {   /* the consumer */
		redisContext *c = connect_or_die(host, port);
		const char *rd[] = { "XREADGROUP", "GROUP", GROUP, "c1", "COUNT", "1",
				     "BLOCK", "0", "STREAMS", STREAM, ">" };
		int64_t *lat = calloc((size_t)samples, sizeof *lat);
		if (write(fds[1], "r", 1) != 1)   /* ready */
			_exit(2);
		for (long i = 0; i < samples; i++) {
			redisReply *r = cmd_or_die(c, 11, rd);
			int64_t got = wall_us();
			redisReply *e = r->element[0]->element[1]->element[0];
			int64_t sent = strtoll(e->element[1]->element[1]->str, NULL, 10);
			const char *ack[] = { "XACK", STREAM, GROUP, e->element[0]->str };
			freeReplyObject(cmd_or_die(c, 4, ack));
			lat[i] = got - sent;
			freeReplyObject(r);
		}
		qsort(lat, (size_t)samples, sizeof *lat, cmp_i64);
		printf("{\"mode\":\"latency\",\"samples\":%ld,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
		       samples, lat[samples / 2] / 1000.0, lat[(samples * 99) / 100] / 1000.0);
		fflush(stdout);
		_exit(0);
	}
	char b;
	if (read(fds[0], &b, 1) != 1)
		return 2;
	usleep(100000);   /* let the child enter its first blocking read */
	redisContext *c = connect_or_die(host, port);
	char ts[24];
	const char *add[] = { "XADD", STREAM, "*", "t", ts, "job", "noop" };
	for (long i = 0; i < samples; i++) {
		snprintf(ts, sizeof ts, "%" PRId64, wall_us());
		freeReplyObject(cmd_or_die(c, 7, add));
		usleep(10000);
	}
	int st;
	waitpid(pid, &st, 0);
	redisFree(c);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 2;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: rawloop HOST PORT xadd N PIPE | drain N BATCH | latency SAMPLES 0\n");
		return 2;
	}
	const char *host = argv[1], *mode = argv[3];
	int port = atoi(argv[2]);
	long a = atol(argv[4]), b = atol(argv[5]);
	if (!strcmp(mode, "latency")) {
		redisContext *c = connect_or_die(host, port);
		const char *del[] = { "DEL", STREAM };
		freeReplyObject(cmd_or_die(c, 2, del));
		ensure_group(c, "$");
		redisFree(c);
		return do_latency(host, port, a);
	}
	redisContext *c = connect_or_die(host, port);
	int rc = 2;
	if (!strcmp(mode, "xadd")) {
		const char *del[] = { "DEL", STREAM };
		freeReplyObject(cmd_or_die(c, 2, del));
		rc = do_xadd(c, a, b);
	} else if (!strcmp(mode, "drain")) {
		ensure_group(c, "0");
		rc = do_drain(c, a, b);
	}
	redisFree(c);
	return rc;
}
