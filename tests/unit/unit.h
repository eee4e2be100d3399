/* unit.h -- a minimal unit test runner: CHECK() records a failure with its
 * location and carries on; each test file's main() calls unit_run(). */
#ifndef JOBRUNNER_TESTS_UNIT_H
#define JOBRUNNER_TESTS_UNIT_H

#include <stdio.h>
#include <string.h>

#include "util.h"

struct config;

extern int unit_failures;
extern int unit_checks;

#define CHECK(cond)                                                             \
	do {                                                                    \
		unit_checks++;                                                  \
		if (!(cond)) {                                                  \
			unit_failures++;                                        \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                               \
	} while (0)
static inline int unit_streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }
#define CHECK_STR(a, b) CHECK(unit_streq((a), (b)))

struct unit_test {
	const char *name;
	void (*fn)(void);
};

/* A TCP port on 127.0.0.1 that was free a moment ago (for test servers). */
int unit_free_port(void);

/* ---- an HTTP server on loopback, for tests of HTTP clients ---- */

/* One request as the server read it (NUL-terminated strings). */
struct unit_http_request {
	char method[16];
	char target[4096];          /* path and query, as sent */
	char headers[8192];         /* the header lines, "Name: value\r\n" each */
	char body[65536];           /* up to Content-Length (cut at the buffer) */
	size_t body_len;
};

/* Writes the whole answer for rq into out: see unit_http_answer().  May
 * sleep (timeouts) or write a broken answer.  Runs on the server thread. */
typedef void (*unit_http_fn)(const struct unit_http_request *rq, struct strbuf *out, void *arg);

struct unit_http;
/* Serves fn on 127.0.0.1 (a free port) from its own thread, one connection
 * at a time, closing each after its answer.  Exits the test on failure. */
struct unit_http *unit_http_start(unit_http_fn fn, void *arg);
int unit_http_port(const struct unit_http *s);
/* "http://127.0.0.1:<port>" followed by path. */
void unit_http_url(const struct unit_http *s, const char *path, char *out, size_t outlen);
/* How many requests it has answered. */
int unit_http_count(const struct unit_http *s);
void unit_http_stop(struct unit_http *s);
/* An answer: status line, Content-Length, extra header lines (each
 * "Name: value\r\n", may be NULL), then body. */
void unit_http_answer(struct strbuf *out, int status, const char *extra_headers, const char *body);
/* The value of header name in rq (case-insensitive) into out, "" if absent. */
void unit_http_header(const struct unit_http_request *rq, const char *name, char *out, size_t outlen);

/* Runs every test, prints "N passed, N failed" and returns main's exit code. */
int unit_run(const struct unit_test *tests, size_t n);

/* The main() of a test file without set-up:
 *   UNIT_MAIN(UNIT_TEST(parse), UNIT_TEST(redact))
 * runs test_parse and test_redact, named "parse" and "redact". */
#define UNIT_TEST(name) { #name, test_##name }
#define UNIT_MAIN(...)                                                        \
	int main(void)                                                        \
	{                                                                     \
		static const struct unit_test tests[] = { __VA_ARGS__ };      \
		return unit_run(tests, JR_ARRAY_LEN(tests));                  \
	}

/* A configuration for tests that open queues against a test Redis: zeroed,
 * then the settings every such test shares (a 30 s lease, a long stream,
 * 5 s cycles); the caller sets the rest (attempts, backoff, ...). */
void unit_queue_config(struct config *cfg, char *redis_url);

#endif
