/* Unit tests of runreq_parse(): the body of POST .../jobs/{job}/run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runreq.h"
#include "unit.h"
#include "util.h"

/* Parses a NUL-terminated body; returns the status (runs and n as parsed). */
static int parse(const char *body, struct run **runs, size_t *n, int *bulk, char *err, size_t errlen)
{
	return runreq_parse("noop", body, strlen(body), runs, n, bulk, err, errlen);
}

static void test_single_and_empty(void)
{
	struct run *runs;
	size_t n;
	int bulk;
	char err[256];
	CHECK(runreq_parse("noop", NULL, 0, &runs, &n, &bulk, err, sizeof err) == 0);
	CHECK(n == 1 && !bulk && unit_streq(runs[0].job, "noop") && !runs[0].org_id && !runs[0].payload);
	CHECK(runs[0].source == RUN_SRC_ADHOC && runs[0].id[0] == '\0');
	runreq_free(runs, n);

	CHECK(parse(" \r\n", &runs, &n, &bulk, err, sizeof err) == 0 && n == 1);
	runreq_free(runs, n);

	CHECK(parse("{\"orgId\":\"o1\",\"payload\":{\"a\": [1, 2]},\"idempotencyKey\":\"k\"}",
		    &runs, &n, &bulk, err, sizeof err) == 0);
	CHECK(n == 1 && !bulk);
	CHECK_STR(runs[0].org_id, "o1");
	CHECK_STR(runs[0].payload, "{\"a\":[1,2]}");
	CHECK_STR(runs[0].idempotency_key, "k");
	runreq_free(runs, n);

	CHECK(parse("{\"orgId\":null,\"payload\":null,\"idempotencyKey\":null}", &runs, &n, &bulk, err,
		    sizeof err) == 0);
	CHECK(!runs[0].org_id && !runs[0].payload && !runs[0].idempotency_key);
	runreq_free(runs, n);
}

static void test_bulk(void)
{
	struct run *runs;
	size_t n;
	int bulk;
	char err[256];
	CHECK(parse("[{}, {\"orgId\":\"b\"}, {\"payload\":{}}]", &runs, &n, &bulk, err, sizeof err) == 0);
	CHECK(n == 3 && bulk == 1);
	CHECK(!runs[0].org_id && unit_streq(runs[1].org_id, "b") && unit_streq(runs[2].payload, "{}"));
	runreq_free(runs, n);

	/* exactly the limit, then one more */
	struct strbuf sb = STRBUF_INIT;
	sb_adds(&sb, "[{}");
	for (int i = 1; i < RUNREQ_MAX_ITEMS; i++)
		sb_adds(&sb, ",{}");
	sb_adds(&sb, "]");
	CHECK(runreq_parse("noop", sb.buf, sb.len, &runs, &n, &bulk, err, sizeof err) == 0);
	CHECK(n == RUNREQ_MAX_ITEMS);
	runreq_free(runs, n);
	sb.len--;
	sb_adds(&sb, ",{}]");
	CHECK(runreq_parse("noop", sb.buf, sb.len, &runs, &n, &bulk, err, sizeof err) == 413);
	CHECK(!runs && n == 0 && strstr(err, "10000"));
	sb_release(&sb);
}

static void test_errors(void)
{
	static const struct {
		const char *body;
		const char *needle;
	} bad[] = {
		{ "{", "not valid JSON" },
		{ "{} {}", "after the JSON" },
		{ "null", "object or an array" },
		{ "[]", "empty" },
		{ "[{}, 3]", "item 1: expected a JSON object" },
		{ "{\"orgId\":1}", "orgId must be a string" },
		{ "{\"orgId\":\"\"}", "orgId must be 1 to 128" },
		{ "{\"payload\":[]}", "payload must be a JSON object" },
		{ "{\"idempotencyKey\":true}", "idempotencyKey must be a string" },
		{ "{\"x\":1}", "unknown field 'x'" },
		{ "{\"payload\":{},\"payload\":{}}", "appears twice" },
	};
	for (size_t i = 0; i < JR_ARRAY_LEN(bad); i++) {
		struct run *runs = (struct run *)1;
		size_t n = 7;
		int bulk = 5;
		char err[256] = "";
		CHECK(parse(bad[i].body, &runs, &n, &bulk, err, sizeof err) == 400);
		CHECK(!runs && n == 0 && bulk == 0);
		if (!strstr(err, bad[i].needle))
			fprintf(stderr, "body %s: message '%s' lacks '%s'\n", bad[i].body, err, bad[i].needle);
		CHECK(strstr(err, bad[i].needle) != NULL);
	}
	/* not NUL-terminated: only len bytes are read */
	char body[2] = { '{', '}' };
	struct run *runs;
	size_t n;
	int bulk;
	char err[64];
	CHECK(runreq_parse("noop", body, sizeof body, &runs, &n, &bulk, err, sizeof err) == 0 && n == 1);
	runreq_free(runs, n);
	/* a tiny error buffer is still NUL-terminated */
	char small[8];
	CHECK(parse("{\"orgId\":1}", &runs, &n, &bulk, small, sizeof small) == 400);
	CHECK(memchr(small, '\0', sizeof small) != NULL);
}

/* runAt and delayMs (delayed runs), and the ISO-8601 parser behind runAt. */
static void test_delay(void)
{
	struct run *runs;
	size_t n;
	int bulk;
	char err[256];
	int64_t t;
	CHECK(iso8601_parse_ms("1970-01-01T00:00:00Z", &t) == 0 && t == 0);
	CHECK(iso8601_parse_ms("2026-11-30T17:00:01.5Z", &t) == 0 && t == 1796058001500LL);
	CHECK(iso8601_parse_ms("2026-11-30T17:00:01.123456+00:00", &t) == 0 && t == 1796058001123LL);
	CHECK(iso8601_parse_ms("2024-02-29", &t) == 0 && t == 1709164800000LL);
	CHECK(iso8601_parse_ms("2023-02-29T00:00:00Z", &t) == -1);
	CHECK(iso8601_parse_ms("2026-11-30T17:00:01+01:00", &t) == -1);
	CHECK(iso8601_parse_ms("2026-11-30 17:00:01Z", &t) == -1);
	CHECK(iso8601_parse_ms("2026-11-30T17:00:01.Z", &t) == -1);
	CHECK(iso8601_parse_ms("2026-11-30T24:00:00Z", &t) == -1);
	CHECK(iso8601_parse_ms("2026-11-30T17:00:01Zjunk", &t) == -1);

	int64_t before = wall_ms();
	CHECK(parse("{\"delayMs\":60000}", &runs, &n, &bulk, err, sizeof err) == 0);
	CHECK(runs[0].run_at_ms >= before + 60000 && runs[0].run_at_ms <= wall_ms() + 60000);
	runreq_free(runs, n);
	CHECK(parse("{\"delayMs\":0}", &runs, &n, &bulk, err, sizeof err) == 0 && runs[0].run_at_ms == 0);
	runreq_free(runs, n);
	CHECK(parse("{\"runAt\":\"2001-01-01T00:00:00Z\"}", &runs, &n, &bulk, err, sizeof err) == 0);
	CHECK(runs[0].run_at_ms == 0);   /* in the past: now */
	runreq_free(runs, n);
	char body[128];
	char at[32];
	iso8601_ms(wall_ms() + 3600000, at, sizeof at);
	snprintf(body, sizeof body, "[{\"runAt\":\"%s\"},{\"delayMs\":null}]", at);
	CHECK(parse(body, &runs, &n, &bulk, err, sizeof err) == 0 && n == 2);
	CHECK(iso8601_parse_ms(at, &t) == 0 && runs[0].run_at_ms == t && runs[1].run_at_ms == 0);
	runreq_free(runs, n);

	static const char *const bad[][2] = {
		{ "{\"delayMs\":-1}", "delayMs" },
		{ "{\"delayMs\":7776000001}", "delayMs" },
		{ "{\"delayMs\":2.5}", "delayMs" },
		{ "{\"delayMs\":1e90}", "delayMs" },   /* past int64_t: no conversion (UBSan, fuzz_runreq) */
		{ "{\"delayMs\":\"5\"}", "delayMs" },
		{ "{\"runAt\":\"soon\"}", "runAt" },
		{ "{\"runAt\":5}", "runAt" },
		{ "{\"runAt\":\"2999-01-01T00:00:00Z\"}", "90 days" },
		{ "{\"runAt\":\"2001-01-01T00:00:00Z\",\"delayMs\":5}", "not both" },
		{ "{\"delayMs\":5,\"runAt\":null}", "not both" },
	};
	for (size_t i = 0; i < JR_ARRAY_LEN(bad); i++) {
		CHECK(parse(bad[i][0], &runs, &n, &bulk, err, sizeof err) == 400);
		CHECK(strstr(err, bad[i][1]) != NULL);
		if (!strstr(err, bad[i][1]))
			fprintf(stderr, "  case %zu: %s\n", i, err);
	}
}

UNIT_MAIN(UNIT_TEST(single_and_empty),
	  UNIT_TEST(bulk),
	  UNIT_TEST(errors),
	  UNIT_TEST(delay))
