/* test_meta_conn.c -- how several orgs' outcomes add up to one run result. */
#include <string.h>

#include "jobs/meta_conn.h"
#include "unit.h"
#include "util.h"

static void test_all_ok(void)
{
	struct meta_tally t = { 0 };
	struct run_result r = { .outcome = RUN_FAIL, .error = "stale" };
	meta_conn_tally(&t, "a", GRAPH_OK, 0, NULL);
	meta_conn_tally(&t, "b", GRAPH_OK, 0, NULL);
	meta_conn_tally_finish(&t, 0, &r);
	CHECK(r.outcome == RUN_OK && r.error[0] == '\0' && r.retry_after_ms == 0);
	CHECK(t.orgs == 2 && t.ok == 2);

	struct meta_tally none = { 0 };
	meta_conn_tally_finish(&none, 0, &r);
	CHECK(r.outcome == RUN_OK);
}

static void test_retry_wins_and_waits_longest(void)
{
	struct meta_tally t = { 0 };
	struct run_result r = { 0 };
	meta_conn_tally(&t, "a", GRAPH_AUTH, 0, "token gone");
	meta_conn_tally(&t, "b", GRAPH_THROTTLED, 60000, "limit");
	meta_conn_tally(&t, "c", GRAPH_THROTTLED, 120000, "limit");
	meta_conn_tally(&t, "d", GRAPH_OK, 0, NULL);
	meta_conn_tally_finish(&t, 0, &r);
	CHECK(r.outcome == RUN_RETRY && r.retry_after_ms == 120000);
	CHECK(strcmp(r.error, "3 of 4 orgs failed; first: org a: token gone") == 0);
}

static void test_permanent_and_auth_fail(void)
{
	struct meta_tally t = { 0 };
	struct run_result r = { 0 };
	meta_conn_tally(&t, "a", GRAPH_OK, 0, NULL);
	meta_conn_tally(&t, "b", GRAPH_PERMANENT, 0, "bad parameter");
	meta_conn_tally_finish(&t, 0, &r);
	CHECK(r.outcome == RUN_FAIL && r.retry_after_ms == 0);
	CHECK(strstr(r.error, "org b: bad parameter") != NULL);

	struct meta_tally one = { 0 };
	meta_conn_tally(&one, "org_x", GRAPH_AUTH, 0, "Invalid OAuth access token");
	meta_conn_tally_finish(&one, 1, &r);     /* a run for that org: no prefix */
	CHECK(r.outcome == RUN_FAIL && strcmp(r.error, "Invalid OAuth access token") == 0);
	meta_conn_tally_finish(&one, 0, &r);     /* all orgs, one connection */
	CHECK(strcmp(r.error, "org org_x: Invalid OAuth access token") == 0);

	struct meta_tally tr = { 0 };
	meta_conn_tally(&tr, "z", GRAPH_TRANSIENT, 0, "HTTP 502");
	meta_conn_tally_finish(&tr, 1, &r);
	CHECK(r.outcome == RUN_RETRY && r.retry_after_ms == 0);
}

UNIT_MAIN(UNIT_TEST(all_ok),
	  UNIT_TEST(retry_wins_and_waits_longest),
	  UNIT_TEST(permanent_and_auth_fail))
