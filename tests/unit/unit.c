#include "unit.h"
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int unit_failures;
int unit_checks;

int unit_run(const struct unit_test *tests, size_t n)
{
	int passed = 0, failed = 0;
	for (size_t i = 0; i < n; i++) {
		int before = unit_failures;
		tests[i].fn();
		if (unit_failures == before) {
			passed++;
		} else {
			failed++;
			fprintf(stderr, "FAIL %s\n", tests[i].name);
		}
	}
	printf("%d passed, %d failed (%d checks)\n", passed, failed, unit_checks);
	return failed ? 1 : 0;
}

/* The low end of the kernel's ephemeral port range (32768 if unknown). */
static int ephemeral_low(void)
{
	int low = 32768, high;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f) {
		if (fscanf(f, "%d %d", &low, &high) != 2)
			low = 32768;
		fclose(f);
	}
	return low > 10001 ? low : 32768;
}

/* Chosen at random below the ephemeral range: a port from that range (what
 * bind(0) hands out) is where outgoing connections take their source port,
 * so on a busy machine it could be taken by the time a server starts. */
int unit_free_port(void)
{
	int low = ephemeral_low();
	for (int i = 0; i < 200; i++) {
		int port = 10000 + (int)(rand_u64() % (uint64_t)(low - 10000));
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY),
					 .sin_port = htons((uint16_t)port) };
		int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
		if (fd >= 0)
			close(fd);
		if (ok)
			return port;
	}
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) {
		perror("unit_free_port");
		exit(2);
	}
	close(fd);
	return ntohs(a.sin_port);
}

/* ------------------------------------------------------------------ */
/* an HTTP server on loopback                                          */
/* ------------------------------------------------------------------ */

struct unit_http {
	int fd;
	int port;
	pthread_t tid;
	unit_http_fn fn;
	void *arg;
	atomic_int stop;
	atomic_int count;
	struct unit_http_request rq;   /* the server thread's */
};

void unit_http_header(const struct unit_http_request *rq, const char *name, char *out, size_t outlen)
{
	size_t n = strlen(name);
	out[0] = '\0';
	for (const char *l = rq->headers; *l;) {
		const char *end = strstr(l, "\r\n");
		size_t len = end ? (size_t)(end - l) : strlen(l);
		if (len > n && l[n] == ':' && !strncasecmp(l, name, n)) {
			const char *v = l + n + 1;
			while (*v == ' ')
				v++;
			snprintf(out, outlen, "%.*s", (int)(len - (size_t)(v - l)), v);
			return;
		}
		l += len + (end ? 2 : 0);
	}
}

void unit_http_answer(struct strbuf *out, int status, const char *extra_headers, const char *body)
{
	sb_addf(out, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n%s",
		status, strlen(body), extra_headers ? extra_headers : "", body);
}

#define REQ_HEAD_MAX (sizeof(((struct unit_http_request *)0)->headers) + 4096 + 64)

/* Reads one request from fd into rq: 0, or -1 (closed or malformed). */
static int read_request(int fd, struct unit_http_request *rq, char *buf)
{
	size_t len = 0;
	char *end = NULL;
	while (!end) {
		if (len == REQ_HEAD_MAX - 1)
			return -1;
		ssize_t n = read(fd, buf + len, REQ_HEAD_MAX - 1 - len);
		if (n <= 0)
			return -1;
		len += (size_t)n;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	memset(rq, 0, sizeof *rq);
	char *line_end = strstr(buf, "\r\n");
	if (sscanf(buf, "%15s %4095s", rq->method, rq->target) != 2)
		return -1;
	snprintf(rq->headers, sizeof rq->headers, "%.*s", (int)(end + 2 - (line_end + 2)), line_end + 2);
	char cl[32];
	unit_http_header(rq, "Content-Length", cl, sizeof cl);
	size_t want = (size_t)strtoul(cl, NULL, 10);
	size_t have = len - (size_t)(end + 4 - buf);
	if (want > sizeof rq->body - 1)
		want = sizeof rq->body - 1;
	memcpy(rq->body, end + 4, have < want ? have : want);
	while (have < want) {
		ssize_t n = read(fd, rq->body + have, want - have);
		if (n <= 0)
			return -1;
		have += (size_t)n;
	}
	rq->body_len = want;
	return 0;
}

static void *http_main(void *arg)
{
	struct unit_http *s = arg;
	char *buf = xmalloc(REQ_HEAD_MAX);
	while (!atomic_load(&s->stop)) {
		int c = accept(s->fd, NULL, NULL);
		if (c < 0)
			continue;
		struct timeval tv = { 10, 0 };
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		if (!read_request(c, &s->rq, buf)) {
			struct strbuf out = STRBUF_INIT;
			s->fn(&s->rq, &out, s->arg);
			for (size_t off = 0; off < out.len;) {
				ssize_t n = write(c, out.buf + off, out.len - off);
				if (n <= 0)
					break;
				off += (size_t)n;
			}
			sb_release(&out);
			atomic_fetch_add(&s->count, 1);
		}
		close(c);
	}
	free(buf);
	return NULL;
}

struct unit_http *unit_http_start(unit_http_fn fn, void *arg)
{
	struct unit_http *s = xcalloc(1, sizeof *s);
	s->fn = fn;
	s->arg = arg;
	s->fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof a;
	if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof a) || listen(s->fd, 16) ||
	    getsockname(s->fd, (struct sockaddr *)&a, &len) ||
	    pthread_create(&s->tid, NULL, http_main, s)) {
		perror("unit_http_start");
		exit(2);
	}
	s->port = ntohs(a.sin_port);
	return s;
}

int unit_http_port(const struct unit_http *s) { return s->port; }

int unit_http_count(const struct unit_http *s) { return atomic_load(&((struct unit_http *)s)->count); }

void unit_http_url(const struct unit_http *s, const char *path, char *out, size_t outlen)
{
	snprintf(out, outlen, "http://127.0.0.1:%d%s", s->port, path);
}

void unit_http_stop(struct unit_http *s)
{
	atomic_store(&s->stop, 1);
	shutdown(s->fd, SHUT_RDWR);   /* wakes accept() */
	pthread_join(s->tid, NULL);
	close(s->fd);
	free(s);
}

void unit_queue_config(struct config *cfg, char *redis_url)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->redis_url = redis_url;
	cfg->job_lease_ms = 30000;
	cfg->redis_stream_max_len = 1000000;
	cfg->job_runner_interval_ms = 5000;
}
