/* Unit tests of the configuration table: defaults, roles, refusals. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "unit.h"

static const char *const vars[] = { "WORKER_MODE", "JOB_RUNNER_ENABLED", "JOB_RUNNER_INTERVAL_MS", "PORT",
				    "DATABASE_URL", "REDIS_URL", "CONSUMER_NAME", "LOG_LEVEL",
				    "JOB_BACKOFF_BASE_MS", "JOB_BACKOFF_MAX_MS", "NO_REPLY_SCAN_ENABLED",
				    "REDIS_MIN_REPLICAS_ACK" };

static void clean_env(void)
{
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
		unsetenv(vars[i]);
	setenv("DATABASE_URL", "postgresql://u:secretpw@h:5432/d", 1);
}

static int load(struct config *cfg, enum config_role role, int argc, char **argv, char *err)
{
	return config_load(cfg, role, argc, argv, err, 512);
}

static void test_defaults_by_role(void)
{
	struct config cfg;
	char err[512];
	char *argv[] = { "x" };
	clean_env();
	CHECK(load(&cfg, ROLE_PRODUCER, 1, argv, err) == CONFIG_OK);
	CHECK(cfg.job_runner_enabled == 0);
	CHECK(cfg.port == 4000);
	CHECK(cfg.job_runner_interval_ms == 5000);
	CHECK(cfg.no_reply_scan_interval_ms == 300000);
	CHECK(cfg.job_max_attempts == 5);
	CHECK(cfg.worker_shutdown_timeout_ms == 25000);
	CHECK_STR(cfg.meta_graph_url, "https://graph.facebook.com/v21.0");
	CHECK(cfg.redis_url == NULL);
	config_free(&cfg);
	CHECK(load(&cfg, ROLE_CONSUMER, 1, argv, err) == CONFIG_OK);
	CHECK(cfg.job_runner_enabled == 1);
	CHECK(cfg.consumer_name && strchr(cfg.consumer_name, '-'));
	config_free(&cfg);
	setenv("JOB_RUNNER_ENABLED", "FALSE", 1);
	CHECK(load(&cfg, ROLE_CONSUMER, 1, argv, err) == CONFIG_OK);
	CHECK(cfg.job_runner_enabled == 0);
	config_free(&cfg);
	setenv("JOB_RUNNER_ENABLED", "on", 1);
	CHECK(load(&cfg, ROLE_PRODUCER, 1, argv, err) == CONFIG_OK);
	CHECK(cfg.job_runner_enabled == 1);
	config_free(&cfg);
}

/* load() refuses, with a message that names want and quotes no password. */
static void check_refused(enum config_role role, int argc, char **argv, const char *want)
{
	struct config cfg;
	char err[512];
	CHECK(load(&cfg, role, argc, argv, err) == CONFIG_ERR);
	CHECK(strstr(err, want) != NULL);
	CHECK(strstr(err, "pw-123") == NULL);
	CHECK(strstr(err, "p@ss") == NULL);   /* passwords never in messages */
	config_free(&cfg);
}

static void test_refusals_name_the_variable(void)
{
	static const struct { const char *var, *val, *want; enum config_role role; } cases[] = {
		{ "WORKER_MODE", "maybe", "WORKER_MODE=maybe", ROLE_CONSUMER },
		{ "JOB_RUNNER_INTERVAL_MS", "-5", "JOB_RUNNER_INTERVAL_MS=-5", ROLE_CONSUMER },
		{ "JOB_RUNNER_INTERVAL_MS", "5000ms", "JOB_RUNNER_INTERVAL_MS=5000ms", ROLE_CONSUMER },
		{ "PORT", "99999", "PORT=99999", ROLE_PRODUCER },
		{ "NO_REPLY_SCAN_ENABLED", "sure", "NO_REPLY_SCAN_ENABLED=sure", ROLE_CONSUMER },
		{ "LOG_LEVEL", "loud", "LOG_LEVEL=loud", ROLE_CONSUMER },
		{ "REDIS_URL", "http://x", "REDIS_URL", ROLE_CONSUMER },
		{ "REDIS_URL", "rediss://u:p@ss:w@h:99999", "REDIS_URL=rediss://u:***@h:99999: rediss:// URL: invalid port", ROLE_CONSUMER },
		{ "REDIS_URL", "redis://:p@ss@h1:1,h2:2", "host list is only accepted in the sentinel form", ROLE_CONSUMER },
		{ "REDIS_URL", "rediss-sentinel://:p@ss@s1,s2/0", "master name is missing", ROLE_CONSUMER },
		{ "REDIS_URL", "memcached://:p@ss@h", "unknown scheme memcached://", ROLE_CONSUMER },
		{ "REDIS_MIN_REPLICAS_ACK", "17", "REDIS_MIN_REPLICAS_ACK=17", ROLE_CONSUMER },
		{ "CONSUMER_NAME", "a b", "CONSUMER_NAME", ROLE_CONSUMER },
		{ "WORKER_MODE", "1", "consumer", ROLE_PRODUCER },
		{ "WORKER_MODE", "0", "producer", ROLE_CONSUMER },
		/* rows' own checks; a URL that may carry a password is never quoted */
		{ "REDIS_URL", "foo://u:pw-123@h:1", "REDIS_URL", ROLE_CONSUMER },
		{ "META_GRAPH_URL", "redis://u:pw-123@h:1", "META_GRAPH_URL", ROLE_CONSUMER },
	};
	char *argv[] = { "x" };
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		clean_env();
		setenv(cases[i].var, cases[i].val, 1);
		check_refused(cases[i].role, 1, argv, cases[i].want);
		unsetenv(cases[i].var);
	}
	clean_env();
	setenv("JOB_BACKOFF_BASE_MS", "5000", 1);
	setenv("JOB_BACKOFF_MAX_MS", "10", 1);
	check_refused(ROLE_CONSUMER, 1, argv, "JOB_BACKOFF_MAX_MS");
	clean_env();
	unsetenv("DATABASE_URL");
	check_refused(ROLE_CONSUMER, 1, argv, "DATABASE_URL");
}

static void test_flags_override_env_and_stop_at_args(void)
{
	struct config cfg;
	char err[512];
	clean_env();
	setenv("JOB_RUNNER_INTERVAL_MS", "7000", 1);
	char *argv[] = { "x", "--interval-ms", "250", "--drain-once", "--concurrency=3",
			 "enqueue", "noop", "--count", "5" };
	CHECK(load(&cfg, ROLE_PRODUCER, 9, argv, err) == CONFIG_OK);
	CHECK(cfg.job_runner_interval_ms == 250);
	CHECK(cfg.drain_once == 1);
	CHECK(cfg.worker_concurrency == 3);
	CHECK(cfg.nargs == 4);
	CHECK_STR(cfg.args[0], "enqueue");
	config_free(&cfg);

	char *bad[] = { "x", "--interval-ms=abc" };
	check_refused(ROLE_CONSUMER, 2, bad, "--interval-ms");
	char *unknown[] = { "x", "--frobnicate" };
	check_refused(ROLE_CONSUMER, 2, unknown, "--frobnicate");
}

static void test_empty_is_unset(void)
{
	struct config cfg;
	char err[512];
	char *argv[] = { "x" };
	clean_env();
	setenv("REDIS_URL", "", 1);
	setenv("PORT", "", 1);
	CHECK(load(&cfg, ROLE_PRODUCER, 1, argv, err) == CONFIG_OK);
	CHECK(cfg.redis_url == NULL);
	CHECK(cfg.port == 4000);
	config_free(&cfg);
}

static void test_redact_url(void)
{
	char out[256];
	config_redact_url("postgresql://user:hunter22@db:5432/app?sslmode=require", out, sizeof out);
	CHECK_STR(out, "postgresql://user:***@db:5432/app");
	config_redact_url("redis://:pw@r:6379/0", out, sizeof out);
	CHECK_STR(out, "redis://:***@r:6379/0");
	config_redact_url("redis://r:6379", out, sizeof out);
	CHECK_STR(out, "redis://r:6379");
}

static void test_org_rate_limits(void)
{
	struct config_rate r;
	CHECK(config_parse_rate("100/1m", &r) == 0 && r.n == 100 && r.period_ms == 60000);
	CHECK(config_parse_rate("5/1s", &r) == 0 && r.n == 5 && r.period_ms == 1000);
	CHECK(config_parse_rate("5/s", &r) == 0 && r.n == 5 && r.period_ms == 1000);
	CHECK(config_parse_rate("3/250ms", &r) == 0 && r.period_ms == 250);
	CHECK(config_parse_rate("10000/24h", &r) == 0 && r.period_ms == 86400000);
	CHECK(config_parse_rate("off", &r) == 0 && r.n == -1);
	const char *bad[] = { "abc", "0/1s", "5/0s", "5/1d", "5/25h", "10001/1s", "5/", "/1s", "5/1",
			      "-1/1s", "5/1s ", " 5/1s", "5//1s", "99999999999999999999/1s", "5/1.5s" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CHECK(config_parse_rate(bad[i], &r) == -1);

	/* a job's own limit wins, counted apart; off exempts it; else the org's */
	struct config cfg;
	char err[512];
	char *argv[] = { "x" };
	clean_env();
	setenv("ORG_RATE_LIMIT", "100/1m", 1);
	setenv("META_SPEND_ORG_RATE_LIMIT", "5/1s", 1);
	setenv("NOOP_ORG_RATE_LIMIT", "off", 1);
	CHECK(load(&cfg, ROLE_CONSUMER, 1, argv, err) == CONFIG_OK);
	int own = -1;
	const struct config_rate *got = config_org_rate(&cfg, "meta_spend", &own);
	CHECK(got && got->n == 5 && got->period_ms == 1000 && own == 1);
	got = config_org_rate(&cfg, "no_reply_scan", &own);
	CHECK(got && got->n == 100 && own == 0);
	CHECK(config_org_rate(&cfg, "noop", &own) == NULL && own == 1);
	config_free(&cfg);
	setenv("ORG_RATE_LIMIT", "0/1s", 1);
	CHECK(load(&cfg, ROLE_CONSUMER, 1, argv, err) == CONFIG_ERR);
	CHECK(strstr(err, "ORG_RATE_LIMIT") != NULL);
	config_free(&cfg);
	unsetenv("ORG_RATE_LIMIT");
	unsetenv("META_SPEND_ORG_RATE_LIMIT");
	unsetenv("NOOP_ORG_RATE_LIMIT");
}

/* db_redact(): host, port, dbname and user only, for both forms, whatever
 * the password holds; an unparsable string is never echoed. */
static void test_db_redact(void)
{
	char out[256];
	db_redact("host=db.internal port=5432 dbname=app user=jr password='p@ss:w/o%rd x' sslmode=require",
		  out, sizeof out);
	CHECK_STR(out, "host=db.internal port=5432 dbname=app user=jr");
	db_redact("postgresql://jr:p%40ss%3Aw%2Fo%25rd%20x@db.internal:6543/app?sslmode=verify-full",
		  out, sizeof out);
	CHECK_STR(out, "host=db.internal port=6543 dbname=app user=jr");
	db_redact("host=db password='p@ss", out, sizeof out);   /* unterminated quote */
	CHECK_STR(out, "(unparsable connection string)");
	db_redact("postgresql://jr:secret@[bad", out, sizeof out);
	CHECK(strstr(out, "secret") == NULL);
	db_redact(NULL, out, sizeof out);
	CHECK_STR(out, "(unset)");
}

/* A DATABASE_URL libpq cannot parse stops start-up naming the variable,
 * without the value. */
static void test_bad_dsn_not_echoed(void)
{
	struct config cfg;
	char err[512];
	char *argv[] = { "consumer", NULL };
	setenv("DATABASE_URL", "host=db password='hunter2 @:/%", 1);
	CHECK(load(&cfg, ROLE_CONSUMER, 1, argv, err) == CONFIG_ERR);
	CHECK(strstr(err, "DATABASE_URL") != NULL);
	CHECK(strstr(err, "hunter2") == NULL);
	config_free(&cfg);
	setenv("DATABASE_URL", "postgresql://u@h/db", 1);
	setenv("DATABASE_DIRECT_URL", "postgresql://u:hunter2@[oops", 1);
	CHECK(load(&cfg, ROLE_CONSUMER, 1, argv, err) == CONFIG_ERR);
	CHECK(strstr(err, "DATABASE_DIRECT_URL") != NULL);
	CHECK(strstr(err, "hunter2") == NULL);
	config_free(&cfg);
	unsetenv("DATABASE_DIRECT_URL");
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "defaults_by_role", test_defaults_by_role },
		{ "db_redact", test_db_redact },
		{ "bad_dsn_not_echoed", test_bad_dsn_not_echoed },
		{ "refusals_name_the_variable", test_refusals_name_the_variable },
		{ "flags_override_env_and_stop_at_args", test_flags_override_env_and_stop_at_args },
		{ "empty_is_unset", test_empty_is_unset },
		{ "redact_url", test_redact_url },
		{ "org_rate_limits", test_org_rate_limits },
	};
	return unit_run(tests, sizeof tests / sizeof tests[0]);
}
