/* test_http.c -- the HTTP client of http.h against a real HTTP server on
 * loopback (unit_http_start(), unit.h): requests and answers, timeouts,
 * refused connections, bounded bodies, captured headers, classification,
 * and messages without secrets. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"
#include "run.h"
#include "unit.h"
#include "util.h"

#define CHECK_EQ(a, b) CHECK(strcmp((a), (b)) == 0)

/* The server's answers, chosen by path. */
static void serve(const struct unit_http_request *rq, struct strbuf *out, void *arg)
{
	char auth[256], accept[128];
	unit_http_header(rq, "Authorization", auth, sizeof auth);
	unit_http_header(rq, "Accept", accept, sizeof accept);
	if (!strncmp(rq->target, "/echo", 5)) {
		struct strbuf body = STRBUF_INIT;
		sb_addf(&body, "%s %s|%s|%s|%.*s", rq->method, rq->target, auth, accept,
			(int)rq->body_len, rq->body);
		unit_http_answer(out, 200, "X-Usage: 12\r\nRetry-After: 7\r\n", body.buf);
		sb_release(&body);
	} else if (!strcmp(rq->target, "/unavailable")) {
		unit_http_answer(out, 503, NULL, "{\"error\":\"later\"}");
	} else if (!strcmp(rq->target, "/huge")) {
		size_t n = HTTP_MAX_BODY_BYTES + 1000;
		char *big = xmalloc(n + 1);
		memset(big, 'x', n);
		big[n] = '\0';
		unit_http_answer(out, 200, NULL, big);
		free(big);
	} else if (!strncmp(rq->target, "/slow", 5)) {
		sleep(2);
		unit_http_answer(out, 200, NULL, "late");
	} else {
		unit_http_answer(out, 404, NULL, "");
	}
}

static struct unit_http *srv;

static int get(struct http_client *c, const char *method, const char *path, const char *body,
	       const char *bearer, int64_t timeout_ms, struct http_response *res)
{
	static const char *const capture[] = { "X-Usage", "Retry-After", "X-Absent" };
	static const char *const secrets[] = { "tok-SECRET" };
	char url[256];
	unit_http_url(srv, path, url, sizeof url);
	struct http_request rq = {
		.method = method, .url = url, .what = path, .bearer = bearer,
		.body = body, .body_len = body ? strlen(body) : 0,
		.capture = capture, .ncapture = JR_ARRAY_LEN(capture),
		.secrets = secrets, .nsecrets = 1, .timeout_ms = timeout_ms,
	};
	return http_request(c, &rq, res);
}

static void test_request_and_answer(void)
{
	struct http_client *c = http_client_new();
	struct http_response r;
	CHECK(get(c, NULL, "/echo?a=1", NULL, "tok-1", 0, &r) == 0);
	CHECK(r.kind == HTTP_OK && r.status == 200);
	CHECK_EQ(r.body, "GET /echo?a=1|Bearer tok-1|application/json|");
	CHECK(r.len == strlen(r.body));
	CHECK(r.captured[0] && !strcmp(r.captured[0], "12"));
	CHECK(r.captured[1] && !strcmp(r.captured[1], "7"));
	CHECK(r.captured[2] == NULL);
	CHECK(http_retry_after_ms(r.captured[1], 60000) == 7000);

	/* the same handle again: a POST with a body, then a GET without one */
	CHECK(get(c, "POST", "/echo", "{\"x\":1}", NULL, 0, &r) == 0);
	CHECK_EQ(r.body, "POST /echo||application/json|{\"x\":1}");
	CHECK(get(c, "GET", "/echo", NULL, NULL, 0, &r) == 0);
	CHECK_EQ(r.body, "GET /echo||application/json|");
	http_wipe_body(c);
	http_client_free(c);
}

static void test_query_params_are_escaped(void)
{
	struct http_client *c = http_client_new();
	struct strbuf url = STRBUF_INIT;
	char base[128];
	unit_http_url(srv, "/echo", base, sizeof base);
	sb_adds(&url, base);
	http_add_query_param(c, &url, "a", "x y&z=1");
	http_add_query_param(c, &url, "b", "\xc3\xa9/~-._");
	struct http_request rq = { .url = url.buf, .what = "GET /echo" };
	struct http_response r;
	CHECK(http_request(c, &rq, &r) == 0);
	CHECK_EQ(r.body, "GET /echo?a=x%20y%26z%3D1&b=%C3%A9%2F~-._||application/json|");
	sb_release(&url);
	http_client_free(c);
}

static void test_classification(void)
{
	struct http_client *c = http_client_new();
	struct http_response r;
	CHECK(get(c, NULL, "/unavailable", NULL, NULL, 0, &r) == 0);   /* an answer came */
	CHECK(r.status == 503 && http_status_kind(r.status) == HTTP_TRANSIENT);
	CHECK(get(c, NULL, "/nothing", NULL, NULL, 0, &r) == 0);
	CHECK(r.status == 404 && http_status_kind(r.status) == HTTP_PERMANENT);
	CHECK(http_status_kind(204) == HTTP_OK);
	CHECK(http_status_kind(429) == HTTP_TRANSIENT);
	CHECK(http_status_kind(408) == HTTP_TRANSIENT);
	CHECK(http_status_kind(400) == HTTP_PERMANENT);

	/* a body over the limit: permanent, nothing kept */
	CHECK(get(c, NULL, "/huge", NULL, NULL, 0, &r) == -1);
	CHECK(r.kind == HTTP_PERMANENT);
	CHECK(strstr(r.message, "/huge: response body over 4194304 bytes") != NULL);

	/* nobody listening: transient */
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/x", unit_free_port());
	struct http_request rq = { .url = url, .what = "GET /x" };
	CHECK(http_request(c, &rq, &r) == -1 && r.kind == HTTP_TRANSIENT);
	CHECK(strncmp(r.message, "GET /x: ", 8) == 0);

	/* not http(s): permanent */
	struct http_request ftp = { .url = "ftp://127.0.0.1/x", .what = "GET ftp" };
	CHECK(http_request(c, &ftp, &r) == -1 && r.kind == HTTP_PERMANENT);

	struct run_result rr;
	http_to_run_result(HTTP_TRANSIENT, "later", &rr);
	CHECK(rr.outcome == RUN_RETRY && !strcmp(rr.error, "later"));
	http_to_run_result(HTTP_PERMANENT, "no", &rr);
	CHECK(rr.outcome == RUN_FAIL);
	http_client_free(c);
}

/* The server sleeps 2 s; the request gives up at 200 ms.  The message
 * names the request and not the secret that its `what` carried. */
static void test_timeout_is_transient_and_scrubbed(void)
{
	struct http_client *c = http_client_new();
	struct http_response r;
	CHECK(get(c, NULL, "/slow?token=tok-SECRET", NULL, NULL, 200, &r) == -1);
	CHECK(r.kind == HTTP_TRANSIENT);
	CHECK_EQ(r.message, "/slow?token=[REDACTED]: timed out after 200 ms");
	http_client_free(c);
}

static void test_retry_after(void)
{
	CHECK(http_retry_after_ms(NULL, 60000) == 0);
	CHECK(http_retry_after_ms(" 30 ", 60000) == 30000);
	CHECK(http_retry_after_ms("61", 60000) == 0);      /* over the cap */
	CHECK(http_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", 60000) == 0);
	CHECK(http_retry_after_ms("-1", 60000) == 0);
}

static void test_scrub(void)
{
	char msg[64] = "token EAABtok in EAABtok and sec";
	const char *secrets[] = { "EAABtok", NULL, "", "sec" };
	http_scrub(msg, sizeof(msg), secrets, JR_ARRAY_LEN(secrets));
	CHECK_EQ(msg, "token [REDACTED] in [REDACTED] and [REDACTED]");
	char small[16] = "abcXYZabcXYZ";
	const char *s2[] = { "XYZ" };
	http_scrub(small, sizeof(small), s2, 1);
	CHECK(strlen(small) == 15 && strncmp(small, "abc[REDACTED]ab", 15) == 0);
}

static void test_origin(void)
{
	CHECK(http_same_origin("https://graph.facebook.com/v21.0/act_1/insights?after=x",
			       "https://graph.facebook.com/v21.0"));
	CHECK(http_same_origin("https://GRAPH.facebook.com:443/v19.0/x",
			       "https://graph.facebook.com/v21.0"));
	CHECK(http_same_origin("http://127.0.0.1:8080/a", "http://127.0.0.1:8080/v21.0"));
	CHECK(!http_same_origin("http://127.0.0.1:8081/a", "http://127.0.0.1:8080/v21.0"));
	CHECK(!http_same_origin("http://graph.facebook.com/v21.0/x",
				"https://graph.facebook.com/v21.0"));
	CHECK(!http_same_origin("https://evil.example/v21.0/x", "https://graph.facebook.com/v21.0"));
	CHECK(!http_same_origin("https://graph.facebook.com@evil.example/x",
				"https://graph.facebook.com/v21.0"));
	CHECK(!http_same_origin("https://graph.facebook.com.evil.example/x",
				"https://graph.facebook.com/v21.0"));
	CHECK(!http_same_origin("ftp://graph.facebook.com/x", "ftp://graph.facebook.com/v21.0"));
	CHECK(!http_same_origin("/relative/next", "https://graph.facebook.com/v21.0"));
	CHECK(!http_same_origin("", "https://graph.facebook.com/v21.0"));
}

int main(void)
{
	srv = unit_http_start(serve, NULL);
	static const struct unit_test tests[] = {
		{ "request_and_answer", test_request_and_answer },
		{ "query_params_are_escaped", test_query_params_are_escaped },
		{ "classification", test_classification },
		{ "retry_after", test_retry_after },
		{ "scrub", test_scrub },
		{ "origin", test_origin },
		{ "timeout_is_transient_and_scrubbed", test_timeout_is_transient_and_scrubbed },
	};
	int rv = unit_run(tests, JR_ARRAY_LEN(tests));
	unit_http_stop(srv);
	return rv;
}
