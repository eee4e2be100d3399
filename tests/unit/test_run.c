/* Unit tests of the run state machine, backoff, ids and small utilities. */
#include <string.h>

#include "log.h"
#include "run.h"
#include "unit.h"
#include "util.h"

static void test_decide(void)
{
	struct backoff b = { 1000, 300000 };
	struct run r = { .attempt = 1, .max_attempts = 3 };
	struct run_result res = { .outcome = RUN_OK };
	int64_t next;
	int att;
	CHECK(run_decide(&r, &res, &b, 1000000, &next, &att) == RUN_SUCCEEDED);
	CHECK(att == 1 && next == 0);

	res.outcome = RUN_RETRY;
	CHECK(run_decide(&r, &res, &b, 1000000, &next, &att) == RUN_FAILED);
	CHECK(next >= 1000000 + 500 && next <= 1000000 + 1000);
	r.attempt = 3;
	CHECK(run_decide(&r, &res, &b, 1000000, &next, &att) == RUN_DEAD);

	r.attempt = 1;
	res.outcome = RUN_FAIL;
	CHECK(run_decide(&r, &res, &b, 1000000, &next, &att) == RUN_DEAD);

	res.outcome = RUN_RETRY;
	res.retry_after_ms = 60000;   /* the job asks for longer than the backoff */
	CHECK(run_decide(&r, &res, &b, 1000000, &next, &att) == RUN_FAILED);
	CHECK(next == 1000000 + 60000);

	r.attempt = 2;
	res.outcome = RUN_DEFER;
	res.retry_after_ms = 250;
	CHECK(run_decide(&r, &res, &b, 1000000, &next, &att) == RUN_QUEUED);
	CHECK(att == 1);             /* the attempt is given back */
	CHECK(next == 1000250);
}

static void test_backoff_doubles_with_jitter_and_cap(void)
{
	struct backoff b = { 100, 1000 };
	for (int i = 0; i < 200; i++) {
		int64_t d1 = run_backoff_ms(1, &b), d3 = run_backoff_ms(3, &b), d9 = run_backoff_ms(9, &b);
		CHECK(d1 >= 50 && d1 <= 100);
		CHECK(d3 >= 200 && d3 <= 400);
		CHECK(d9 >= 500 && d9 <= 1000);
	}
	/* jitter: not always the same value */
	int64_t first = run_backoff_ms(5, &b);
	int differs = 0;
	for (int i = 0; i < 50; i++)
		differs |= run_backoff_ms(5, &b) != first;
	CHECK(differs);
}

static void test_names(void)
{
	enum run_status s;
	enum run_source src;
	CHECK_STR(run_status_name(RUN_DEAD), "dead");
	CHECK(run_status_parse("failed", &s) == 0 && s == RUN_FAILED);
	CHECK(run_status_parse("bogus", &s) == -1);
	CHECK(run_source_parse("fanout", &src) == 0 && src == RUN_SRC_FANOUT);
	CHECK_STR(run_source_name(RUN_SRC_RETRY), "retry");
}

static void test_run_ids_sort_by_time_and_are_unique(void)
{
	char a[37], b[37];
	run_id_new(a);
	sleep_ms(2);
	run_id_new(b);
	CHECK(strlen(a) == 36 && a[14] == '7');
	CHECK(strcmp(a, b) < 0);
}

static void test_parsing(void)
{
	int64_t v;
	int bv;
	CHECK(parse_i64("42", 0, 100, &v) == 0 && v == 42);
	/* i64_dec writes what %lld does, at the edges too */
	static const int64_t nums[] = { 0, 7, -7, 10, 1795894190778LL, -1000000, INT64_MAX, INT64_MIN };
	for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
		char want[32], got[24];
		snprintf(want, sizeof want, "%lld", (long long)nums[i]);
		CHECK(i64_dec(got, nums[i]) == strlen(want));
		CHECK_STR(got, want);
	}
	CHECK(parse_i64("-5", 0, 100, &v) == -1);
	CHECK(parse_i64("5000ms", 0, 1 << 30, &v) == -1);
	CHECK(parse_i64(" 5", 0, 100, &v) == -1);
	CHECK(parse_i64("", 0, 100, &v) == -1);
	CHECK(parse_i64("99999999999999999999", 0, 100, &v) == -1);
	CHECK(parse_bool("YES", &bv) == 0 && bv == 1);
	CHECK(parse_bool("Off", &bv) == 0 && bv == 0);
	CHECK(parse_bool("maybe", &bv) == -1);
	CHECK(ct_equal("abc", 3, "abc", 3));
	CHECK(!ct_equal("abd", 3, "abc", 3));
	CHECK(!ct_equal("ab", 2, "abc", 3));
	CHECK(!ct_equal("abcd", 4, "abc", 3));
}

static void test_json_quote(void)
{
	struct strbuf sb = STRBUF_INIT;
	json_quote(&sb, "a\"b\\c\n\x01");
	CHECK_STR(sb.buf, "\"a\\\"b\\\\c\\n\\u0001\"");
	sb_release(&sb);
}

/* Every byte against the documented set [0-9A-Za-z_.:-], and the length
 * bounds. */
static void test_run_id_valid(void)
{
	for (int c = 0; c < 256; c++) {
		char s[3] = { 'a', (char)c, 'b' };
		int want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   c == '-' || c == '_' || c == '.' || c == ':';
		CHECK(run_id_valid(s, 3) == want);
	}
	char id[37];
	run_id_new(id);
	CHECK(run_id_valid(id, strlen(id)));
	char longest[RUN_ID_LEN + 2];
	memset(longest, 'x', sizeof longest);
	CHECK(run_id_valid(longest, RUN_ID_LEN));
	CHECK(!run_id_valid(longest, RUN_ID_LEN + 1));
	CHECK(!run_id_valid("", 0));
	CHECK(!run_id_valid(NULL, 3));
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "decide", test_decide },
		{ "backoff_doubles_with_jitter_and_cap", test_backoff_doubles_with_jitter_and_cap },
		{ "names", test_names },
		{ "run_ids_sort_by_time_and_are_unique", test_run_ids_sort_by_time_and_are_unique },
		{ "parsing", test_parsing },
		{ "json_quote", test_json_quote },
		{ "run_id_valid", test_run_id_valid },
	};
	return unit_run(tests, sizeof tests / sizeof tests[0]);
}
