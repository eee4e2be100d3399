/* test_graph.c -- the Graph client: HMAC-SHA256 (RFC 4231 vectors, through
 * libcrypto), a request on a loopback server, error classification, the
 * usage header, URL redaction and the insights date range. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "graph.h"
#include "http.h"
#include "run.h"
#include "unit.h"
#include "util.h"

/* CHECK_STR for arrays (never NULL). */
#define CHECK_EQ(a, b) CHECK(strcmp((a), (b)) == 0)

/* RFC 4231 test cases 1-4, 6 and 7 (case 5 is a truncated output) through
 * hmac_sha256_hex(), which computes appsecret_proof. */
static void test_hmac_rfc4231(void)
{
	uint8_t key[131], data[50];
	char hex[65];

	memset(key, 0x0b, 20);
	hmac_sha256_hex(key, 20, "Hi There", 8, hex);
	CHECK_EQ(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

	const char *jefe = "what do ya want for nothing?";
	hmac_sha256_hex("Jefe", 4, jefe, strlen(jefe), hex);
	CHECK_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

	memset(key, 0xaa, 20);
	memset(data, 0xdd, 50);
	hmac_sha256_hex(key, 20, data, 50, hex);
	CHECK_EQ(hex, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");

	for (size_t i = 0; i < 25; i++)
		key[i] = (uint8_t)(i + 1);
	memset(data, 0xcd, 50);
	hmac_sha256_hex(key, 25, data, 50, hex);
	CHECK_EQ(hex, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");

	memset(key, 0xaa, 131);
	const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
	hmac_sha256_hex(key, 131, m6, strlen(m6), hex);
	CHECK_EQ(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");

	const char *m7 = "This is a test using a larger than block-size key and a larger than "
			 "block-size data. The key needs to be hashed before being used by the "
			 "HMAC algorithm.";
	hmac_sha256_hex(key, 131, m7, strlen(m7), hex);
	CHECK_EQ(hex, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

static void classify(long status, const char *body, const char *usage, const char *retry_after,
		     struct graph_result *res)
{
	graph_classify(status, body, strlen(body), usage, retry_after, "GET /v21.0/act_1/insights",
		       res);
}

static void test_classify(void)
{
	struct graph_result r = { 0 };

	classify(200, "{\"data\":[]}", NULL, NULL, &r);
	CHECK(r.kind == GRAPH_OK && r.body && cJSON_IsArray(cJSON_GetObjectItem(r.body, "data")));
	CHECK(r.message[0] == '\0');

	classify(400, "{\"error\":{\"message\":\"Error validating access token: Session has "
		      "expired\",\"type\":\"OAuthException\",\"code\":190,\"error_subcode\":463,"
		      "\"fbtrace_id\":\"AbC123\"}}", NULL, NULL, &r);
	CHECK(r.kind == GRAPH_AUTH && r.code == 190 && r.subcode == 463 && !r.body);
	CHECK(r.http_status == 400);
	CHECK(strstr(r.message, "Session has expired") != NULL);
	CHECK(strstr(r.message, "subcode 463") != NULL);
	CHECK(strstr(r.message, "AbC123") != NULL);
	CHECK(strstr(r.message, "GET /v21.0/act_1/insights") != NULL);

	/* 190 wins over a throttling status */
	classify(429, "{\"error\":{\"message\":\"x\",\"code\":190}}", NULL, NULL, &r);
	CHECK(r.kind == GRAPH_AUTH);

	static const int throttle[] = { 4, 17, 32, 613, 80000, 80004, 80014 };
	for (size_t i = 0; i < JR_ARRAY_LEN(throttle); i++) {
		char body[128];
		snprintf(body, sizeof(body), "{\"error\":{\"message\":\"limit\",\"code\":%d}}",
			 throttle[i]);
		classify(400, body, NULL, NULL, &r);
		CHECK(r.kind == GRAPH_THROTTLED && r.retry_after_ms == 0);
	}
	classify(400, "{\"error\":{\"message\":\"x\",\"code\":80015}}", NULL, NULL, &r);
	CHECK(r.kind == GRAPH_PERMANENT);
	classify(400, "{\"error\":{\"message\":\"x\",\"code\":79999}}", NULL, NULL, &r);
	CHECK(r.kind == GRAPH_PERMANENT);

	/* throttled with the usage header: max over accounts and entries, minutes -> ms */
	const char *usage = "{\"112233\":[{\"type\":\"ads_insights\",\"call_count\":100,"
			    "\"total_cputime\":20,\"total_time\":30,\"estimated_time_to_regain_access\":2},"
			    "{\"type\":\"ads_management\",\"call_count\":5,\"total_cputime\":1,"
			    "\"total_time\":1,\"estimated_time_to_regain_access\":0}],"
			    "\"445566\":[{\"type\":\"ads_insights\",\"estimated_time_to_regain_access\":7}]}";
	classify(400, "{\"error\":{\"message\":\"User request limit reached\",\"code\":17,"
		      "\"error_subcode\":2446079}}", usage, NULL, &r);
	CHECK(r.kind == GRAPH_THROTTLED && r.retry_after_ms == 7 * 60000);

	/* HTTP 429 alone, with Retry-After as the fallback */
	classify(429, "Too Many Requests", NULL, "12", &r);
	CHECK(r.kind == GRAPH_THROTTLED && r.retry_after_ms == 12000);
	CHECK(strstr(r.message, "HTTP 429") != NULL);
	classify(429, "", NULL, "Wed, 21 Oct 2026 07:28:00 GMT", &r);
	CHECK(r.kind == GRAPH_THROTTLED && r.retry_after_ms == 0);

	/* transient: codes 1 and 2, is_transient, 5xx, a mangled 2xx */
	classify(500, "{\"error\":{\"message\":\"An unknown error occurred\",\"code\":1}}", NULL,
		 NULL, &r);
	CHECK(r.kind == GRAPH_TRANSIENT && r.code == 1);
	classify(400, "{\"error\":{\"message\":\"Service temporarily unavailable\",\"code\":2}}",
		 NULL, NULL, &r);
	CHECK(r.kind == GRAPH_TRANSIENT);
	classify(400, "{\"error\":{\"message\":\"x\",\"code\":100,\"is_transient\":true}}", NULL,
		 NULL, &r);
	CHECK(r.kind == GRAPH_TRANSIENT);
	classify(502, "<html>Bad Gateway</html>", NULL, NULL, &r);
	CHECK(r.kind == GRAPH_TRANSIENT && r.http_status == 502);
	classify(200, "{\"data\":[", NULL, NULL, &r);
	CHECK(r.kind == GRAPH_TRANSIENT);

	/* permanent: other codes, 4xx without a Meta body */
	classify(400, "{\"error\":{\"message\":\"(#100) Invalid parameter\",\"type\":"
		      "\"OAuthException\",\"code\":100}}", NULL, NULL, &r);
	CHECK(r.kind == GRAPH_PERMANENT && r.code == 100);
	CHECK(strncmp(r.message, "(#100) Invalid parameter", 24) == 0);
	classify(404, "not found", NULL, NULL, &r);
	CHECK(r.kind == GRAPH_PERMANENT);
	CHECK(strstr(r.message, "HTTP 404") != NULL);
	/* a code sent as a string still counts */
	classify(400, "{\"error\":{\"message\":\"x\",\"code\":\"190\"}}", NULL, NULL, &r);
	CHECK(r.kind == GRAPH_AUTH);
	graph_result_clear(&r);

	struct run_result rr = { 0 };
	classify(400, "{\"error\":{\"message\":\"limit\",\"code\":4}}",
		 "{\"1\":[{\"estimated_time_to_regain_access\":1}]}", NULL, &r);
	graph_to_run_result(&r, &rr);
	CHECK(rr.outcome == RUN_RETRY && rr.retry_after_ms == 60000);
	classify(400, "{\"error\":{\"message\":\"bad\",\"code\":190}}", NULL, NULL, &r);
	graph_to_run_result(&r, &rr);
	CHECK(rr.outcome == RUN_FAIL && strstr(rr.error, "bad") != NULL);
	graph_result_clear(&r);
}

static void test_usage_header(void)
{
	CHECK(graph_usage_retry_ms(NULL) == 0);
	CHECK(graph_usage_retry_ms("") == 0);
	CHECK(graph_usage_retry_ms("not json") == 0);
	CHECK(graph_usage_retry_ms("{}") == 0);
	CHECK(graph_usage_retry_ms("{\"1\":[{\"call_count\":99}]}") == 0);
	CHECK(graph_usage_retry_ms("{\"1\":[{\"estimated_time_to_regain_access\":3}]}") == 180000);
	CHECK(graph_usage_retry_ms("{\"1\":[{\"estimated_time_to_regain_access\":\"5\"}]}") == 300000);
	CHECK(graph_usage_retry_ms("{\"1\":[{\"estimated_time_to_regain_access\":-5}]}") == 0);
	/* capped at a day */
	CHECK(graph_usage_retry_ms("{\"1\":[{\"estimated_time_to_regain_access\":100000}]}") ==
	      GRAPH_MAX_RETRY_AFTER_MS);
}

static void test_redaction(void)
{
	char out[256];
	graph_redact_url("https://graph.facebook.com/v21.0/act_1/insights?access_token=SECRET&after=x",
			 out, sizeof(out));
	CHECK_EQ(out, "https://graph.facebook.com/v21.0/act_1/insights");
	graph_redact_url("http://user:pw@127.0.0.1:8080/v21.0/me#frag", out, sizeof(out));
	CHECK_EQ(out, "http://user:***@127.0.0.1:8080/v21.0/me");
	graph_redact_url("https://h.example?access_token=SECRET", out, sizeof(out));
	CHECK_EQ(out, "https://h.example");
	graph_redact_url("/oauth/access_token?client_secret=S", out, sizeof(out));
	CHECK_EQ(out, "/oauth/access_token");

	graph_url_path("https://graph.facebook.com/v21.0/oauth/access_token?client_secret=S", out,
		       sizeof(out));
	CHECK_EQ(out, "/v21.0/oauth/access_token");
	graph_url_path("https://graph.facebook.com?x=1", out, sizeof(out));
	CHECK_EQ(out, "/");

}

/* graph_get over a real HTTP server on loopback: the token travels as a
 * Bearer header, the parameters are percent-encoded, appsecret_proof is
 * HMAC-SHA256(app secret, token), and Meta's error 190 is GRAPH_AUTH with
 * the secrets scrubbed from Meta's message. */
static void graph_serve(const struct unit_http_request *rq, struct strbuf *out, void *arg)
{
	struct strbuf *seen = arg;
	char auth[128];
	unit_http_header(rq, "Authorization", auth, sizeof auth);
	sb_reset(seen);
	sb_addf(seen, "%s|%s", rq->target, auth);
	unit_http_answer(out, 400, NULL,
			 "{\"error\":{\"message\":\"bad token tok-9 / app-sec\",\"code\":190}}");
}

static void test_graph_on_loopback(void)
{
	struct strbuf seen = STRBUF_INIT;
	struct unit_http *srv = unit_http_start(graph_serve, &seen);
	char base[128];
	unit_http_url(srv, "/v21.0", base, sizeof base);
	struct config cfg = { 0 };
	cfg.meta_graph_url = base;
	cfg.meta_app_secret = "app-sec";
	struct http_client *http = http_client_new();
	struct graph_client *g = graph_client_new(&cfg, http);
	const struct graph_param params[] = {
		{ "fields", "spend,account_currency", 0 },
		{ "time_range", "{\"since\":\"2026-01-01\"}", 0 },
		{ "left_out", NULL, 0 },
	};
	struct graph_result res = { 0 };
	CHECK(graph_get(g, "/act_1/insights", params, JR_ARRAY_LEN(params), "tok-9", &res) == -1);
	char proof[HMAC_SHA256_HEX_LEN + 1], want[512];
	hmac_sha256_hex("app-sec", 7, "tok-9", 5, proof);
	snprintf(want, sizeof want,
		 "/v21.0/act_1/insights?fields=spend%%2Caccount_currency"
		 "&time_range=%%7B%%22since%%22%%3A%%222026-01-01%%22%%7D&appsecret_proof=%s|Bearer tok-9",
		 proof);
	CHECK_STR(seen.buf, want);
	CHECK(res.kind == GRAPH_AUTH && res.code == 190 && res.http_status == 400);
	CHECK(strncmp(res.message, "bad token [REDACTED] / [REDACTED] (code 190", 43) == 0);
	graph_result_clear(&res);
	graph_client_free(g);
	http_client_free(http);
	unit_http_stop(srv);
	sb_release(&seen);
}

static void test_day_range(void)
{
	char since[11], until[11];
	/* 2026-11-28T19:21:35Z */
	int64_t now = 1795893695000LL;
	CHECK(graph_day_range(now, 3, since, until) == 0);
	CHECK_EQ(until, "2026-11-28");
	CHECK_EQ(since, "2026-11-26");
	CHECK(graph_day_range(now, 1, since, until) == 0);
	CHECK_EQ(since, "2026-11-28");
	CHECK_EQ(until, "2026-11-28");
	/* across a month and a year, at the first millisecond of the day */
	int64_t jan2 = 1798848000000LL;      /* 2027-01-02T00:00:00Z */
	CHECK(graph_day_range(jan2, 3, since, until) == 0);
	CHECK_EQ(since, "2026-12-31");
	CHECK_EQ(until, "2027-01-02");
	CHECK(graph_day_range(jan2 - 1, 1, since, until) == 0);
	CHECK_EQ(until, "2027-01-01");
	/* leap day */
	int64_t mar1 = 1709251200000LL;      /* 2024-03-01T00:00:00Z */
	CHECK(graph_day_range(mar1, 2, since, until) == 0);
	CHECK_EQ(since, "2024-02-29");
	CHECK(graph_day_range(now, 0, since, until) == -1);
	CHECK(graph_day_range(now, -3, since, until) == -1);
}

UNIT_MAIN(UNIT_TEST(hmac_rfc4231),
	  UNIT_TEST(classify),
	  UNIT_TEST(usage_header),
	  UNIT_TEST(redaction),
	  UNIT_TEST(graph_on_loopback),
	  UNIT_TEST(day_range))
