/* test_graph.c -- the pure parts of the Graph client: SHA-256 and
 * HMAC-SHA256 vectors, error classification, the usage header, URL
 * redaction, the paging origin check and the insights date range. */
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "run.h"
#include "sha256.h"
#include "unit.h"
#include "util.h"

/* CHECK_STR for arrays (never NULL). */
#define CHECK_EQ(a, b) CHECK(strcmp((a), (b)) == 0)

static void hex_of(const void *data, size_t len, char out[65])
{
	uint8_t d[SHA256_LEN];
	sha256(data, len, d);
	sha256_hex(d, out);
}

static void test_sha256_vectors(void)
{
	char hex[65];
	hex_of("", 0, hex);
	CHECK_EQ(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	hex_of("abc", 3, hex);
	CHECK_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	hex_of(m448, strlen(m448), hex);
	CHECK_EQ(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

	/* a million 'a', fed in uneven pieces to exercise buffering */
	struct sha256 s;
	char chunk[997];
	memset(chunk, 'a', sizeof(chunk));
	sha256_init(&s);
	size_t left = 1000000;
	for (size_t step = 1; left; step = step * 7 % 997 + 1) {
		size_t n = step < left ? step : left;
		sha256_update(&s, chunk, n);
		left -= n;
	}
	uint8_t d[SHA256_LEN];
	sha256_final(&s, d);
	sha256_hex(d, hex);
	CHECK_EQ(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

	/* lengths around the padding boundary (55, 56, 63, 64 bytes) */
	static const struct { size_t n; const char *hex; } pads[] = {
		{ 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318" },
		{ 56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a" },
		{ 63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34" },
		{ 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb" },
	};
	for (size_t i = 0; i < JR_ARRAY_LEN(pads); i++) {
		hex_of(chunk, pads[i].n, hex);
		CHECK_EQ(hex, pads[i].hex);
	}
}

/* RFC 4231 test cases 1-4, 6 and 7 (case 5 is a truncated output). */
static void test_hmac_rfc4231(void)
{
	uint8_t key[131], data[50], mac[SHA256_LEN];
	char hex[65];

	memset(key, 0x0b, 20);
	sha256_hmac(key, 20, "Hi There", 8, mac);
	sha256_hex(mac, hex);
	CHECK_EQ(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

	const char *jefe = "what do ya want for nothing?";
	sha256_hmac("Jefe", 4, jefe, strlen(jefe), mac);
	sha256_hex(mac, hex);
	CHECK_EQ(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

	memset(key, 0xaa, 20);
	memset(data, 0xdd, 50);
	sha256_hmac(key, 20, data, 50, mac);
	sha256_hex(mac, hex);
	CHECK_EQ(hex, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");

	for (size_t i = 0; i < 25; i++)
		key[i] = (uint8_t)(i + 1);
	memset(data, 0xcd, 50);
	sha256_hmac(key, 25, data, 50, mac);
	sha256_hex(mac, hex);
	CHECK_EQ(hex, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");

	memset(key, 0xaa, 131);
	const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
	sha256_hmac(key, 131, m6, strlen(m6), mac);
	sha256_hex(mac, hex);
	CHECK_EQ(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");

	const char *m7 = "This is a test using a larger than block-size key and a larger than "
			 "block-size data. The key needs to be hashed before being used by the "
			 "HMAC algorithm.";
	sha256_hmac(key, 131, m7, strlen(m7), mac);
	sha256_hex(mac, hex);
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

	char msg[64] = "token EAABtok in EAABtok and sec";
	const char *secrets[] = { "EAABtok", NULL, "", "sec" };
	graph_scrub(msg, sizeof(msg), secrets, JR_ARRAY_LEN(secrets));
	CHECK_EQ(msg, "token [REDACTED] in [REDACTED] and [REDACTED]");
	char small[16] = "abcXYZabcXYZ";
	const char *s2[] = { "XYZ" };
	graph_scrub(small, sizeof(small), s2, 1);
	CHECK(strlen(small) == 15 && strncmp(small, "abc[REDACTED]ab", 15) == 0);
}

static void test_origin(void)
{
	CHECK(graph_same_origin("https://graph.facebook.com/v21.0/act_1/insights?after=x",
				"https://graph.facebook.com/v21.0"));
	CHECK(graph_same_origin("https://GRAPH.facebook.com:443/v19.0/x",
				"https://graph.facebook.com/v21.0"));
	CHECK(graph_same_origin("http://127.0.0.1:8080/a", "http://127.0.0.1:8080/v21.0"));
	CHECK(!graph_same_origin("http://127.0.0.1:8081/a", "http://127.0.0.1:8080/v21.0"));
	CHECK(!graph_same_origin("http://graph.facebook.com/v21.0/x",
				 "https://graph.facebook.com/v21.0"));
	CHECK(!graph_same_origin("https://evil.example/v21.0/x", "https://graph.facebook.com/v21.0"));
	CHECK(!graph_same_origin("https://graph.facebook.com@evil.example/x",
				 "https://graph.facebook.com/v21.0"));
	CHECK(!graph_same_origin("https://graph.facebook.com.evil.example/x",
				 "https://graph.facebook.com/v21.0"));
	CHECK(!graph_same_origin("ftp://graph.facebook.com/x", "ftp://graph.facebook.com/v21.0"));
	CHECK(!graph_same_origin("/relative/next", "https://graph.facebook.com/v21.0"));
	CHECK(!graph_same_origin("", "https://graph.facebook.com/v21.0"));
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

int main(void)
{
	static const struct unit_test tests[] = {
		{ "sha256_vectors", test_sha256_vectors },
		{ "hmac_rfc4231", test_hmac_rfc4231 },
		{ "classify", test_classify },
		{ "usage_header", test_usage_header },
		{ "redaction", test_redaction },
		{ "origin", test_origin },
		{ "day_range", test_day_range },
	};
	return unit_run(tests, JR_ARRAY_LEN(tests));
}
