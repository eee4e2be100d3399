/* app.c -- see app.h. */
#include "app.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "migrate.h"
#include "queue_redis.h"
#include "session.h"
#include "util.h"

int app_init(struct config *cfg, enum config_role role, int argc, char **argv, int *exit_code)
{
	char err[512];
	const char *prog = role == ROLE_PRODUCER ? "producer" : "consumer";
	int rc = config_load(cfg, role, argc, argv, err, sizeof err);
	if (rc == CONFIG_HELP) {
		*exit_code = EXIT_OK;
		return -1;
	}
	if (rc != CONFIG_OK) {
		fprintf(stderr, "%s: %s\n", prog, err);
		*exit_code = EXIT_USAGE;
		return -1;
	}
	log_init((enum log_format)cfg->log_format, (enum log_level)cfg->log_level);
	config_register_secrets(cfg);
	return 0;
}

/* A SIGTERM/SIGINT waiting (blocked) for us: consumed, 1.  Start-up
 * honours it at every stage. */
static int startup_signalled(void)
{
	sigset_t pending, set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigpending(&pending) || (!sigismember(&pending, SIGTERM) && !sigismember(&pending, SIGINT)))
		return 0;
	/* blocked (app_signals_block): take it off the queue */
	struct timespec zero = { 0, 0 };
	int sig = sigtimedwait(&set, NULL, &zero);
	LOGF(LOG_INFO, "shutdown", "signal received during start-up: exiting",
	     LF_S("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
	return 1;
}

struct lock_wait {
	int64_t since_ms, logged_ms;
};

static int migration_wait(void *arg, const char *holder)
{
	struct lock_wait *lw = arg;
	int64_t now = mono_ms();
	if (!lw->logged_ms || now - lw->logged_ms >= 10000) {
		lw->logged_ms = now;
		LOGF(LOG_WARN, "migration_lock_wait", "waiting for the migration lock held by another session",
		     LF_S("holder", holder), LF_I("waitedMs", now - lw->since_ms));
	}
	return startup_signalled();
}

int app_database(const struct config *cfg, struct db *db, const char *app_name, int *exit_code)
{
	*exit_code = EXIT_UNREACHABLE;
	char where[256];
	db_redact(session_url(cfg), where, sizeof where);
	db_init(db, session_url(cfg), app_name, 60000);
	int64_t deadline = mono_ms() + cfg->startup_timeout_ms, delay = 100;
	while (db_connect(db)) {
		if (startup_signalled()) {
			*exit_code = EXIT_OK;
			return -1;
		}
		if (mono_ms() >= deadline) {
			LOGF(LOG_ERROR, "startup_failed", "PostgreSQL is unreachable",
			     LF_S("database", where), LF_S("error", db->errstr),
			     LF_I("startupTimeoutMs", cfg->startup_timeout_ms));
			return -1;
		}
		sleep_ms(delay);
		delay = delay * 2 > 1000 ? 1000 : delay * 2;
	}
	if (!cfg->database_direct_url) {
		/* a transaction pooler without a direct URL would share our
		 * session locks with strangers: refuse before touching anything */
		int pooling = 0;
		char err[256];
		if (session_check_pooling(cfg->database_url, &pooling, err, sizeof err)) {
			LOGF(LOG_ERROR, "startup_failed", "PostgreSQL is unreachable", LF_S("database", where),
			     LF_S("error", err));
			return -1;
		}
		if (pooling) {
			LOGF(LOG_ERROR, "startup_failed",
			     "DATABASE_URL pools by transaction (the server session changes between "
			     "transactions): set DATABASE_DIRECT_URL to a direct (session) connection for "
			     "the locks, LISTEN and migrations, and keep DATABASE_URL for the pooler",
			     LF_S("database", where));
			*exit_code = EXIT_USAGE;
			return -1;
		}
	}
	if (startup_signalled()) {
		*exit_code = EXIT_OK;
		return -1;
	}
	char err[512];
	int applied = 0;
	struct lock_wait lw = { mono_ms(), 0 };
	int rc = migrate_apply_wait(db, &applied, err, sizeof err, migration_wait, &lw);
	if (rc == MIGRATE_STOPPED) {
		*exit_code = EXIT_OK;
		return -1;
	}
	if (rc) {
		LOGF(LOG_ERROR, "startup_failed", "database migrations failed", LF_S("error", err));
		return -1;
	}
	if (applied)
		LOGF(LOG_INFO, "migrations_applied", "database migrations applied", LF_I("count", applied));
	*exit_code = EXIT_OK;
	return 0;
}

void app_log_connection_budget(const struct config *cfg, enum config_role role)
{
	int64_t n = cfg->worker_concurrency, p = cfg->database_pool_size;
	int redis = cfg->redis_url != NULL, direct = cfg->database_direct_url != NULL;
	int64_t pooled, pooled_max, session;
	const char *formula;
	if (role == ROLE_PRODUCER && !cfg->job_runner_enabled) {
		/* 4 request connections, their 4 queue handles (Redis-less, or Redis
		 * down), the probe's 2, the history writer (Redis mode) */
		pooled = redis ? 4 + 2 + 1 : 4 + 4 + 2;
		pooled_max = 4 + 4 + 2 + redis;
		session = 0;
		formula = redis ? "producer: 4 API + 2 health + 1 history (+4 queue handles while Redis is down)"
				: "producer: 4 API + 4 queue handles + 2 health";
	} else if (!cfg->job_runner_enabled) {
		pooled = pooled_max = 2;
		session = 0;
		formula = "idle consumer: 2 health";
	} else if (redis) {
		pooled = 1 + 1 + p + 2;
		pooled_max = pooled + n + 1 + 1;
		session = 1 + (cfg->org_concurrency > 0) + direct;
		formula = "Redis mode: 1 PostgreSQL-queue poll + 1 history + DATABASE_POOL_SIZE jobs + 2 health "
			  "(+ WORKER_CONCURRENCY claims + 1 heartbeat + 1 fan-out while Redis is down); "
			  "session: 1 cycle + 1 org slots if ORG_CONCURRENCY > 0 + 1 listener with DATABASE_DIRECT_URL";
	} else {
		pooled = pooled_max = n + 1 + p + 1 + 2;
		session = 1 + (cfg->org_concurrency > 0) + direct;
		formula = "Redis-less: WORKER_CONCURRENCY claims + 1 heartbeat + DATABASE_POOL_SIZE jobs + 1 fan-out "
			  "+ 2 health; session: 1 cycle + 1 org slots if ORG_CONCURRENCY > 0 "
			  "+ 1 listener with DATABASE_DIRECT_URL";
	}
	if (role == ROLE_PRODUCER && cfg->job_runner_enabled)
		pooled += 4 + 4 + 2, pooled_max += 4 + 4 + 2;
	LOGF(LOG_INFO, "connection_budget",
	     direct ? "PostgreSQL connections this process may open: on DATABASE_URL (the pooler) and on "
		      "DATABASE_DIRECT_URL (sessions)"
		    : "PostgreSQL connections this process may open on DATABASE_URL",
	     LF_I("databaseUrl", direct ? pooled : pooled + session),
	     LF_I("databaseUrlMax", direct ? pooled_max : pooled_max + session),
	     LF_I("databaseDirectUrl", direct ? session : 0),
	     LF_I("concurrency", n), LF_I("poolSize", p), LF_S("formula", formula));
}

void app_redis_policy_check(struct queue *q)
{
	char policy[64];
	int noeviction = 0;
	if (queue_redis_check_policy(q, policy, sizeof policy, &noeviction)) {
		LOGF(LOG_WARN, "redis_policy_unknown",
		     "could not read Redis maxmemory-policy; it must be noeviction or queued runs can be lost",
		     LF_S("error", q->errstr));
	} else if (!noeviction) {
		LOGF(LOG_ERROR, "redis_policy_evicts",
		     "Redis maxmemory-policy is not noeviction: queued runs can be evicted and lost. "
		     "Set maxmemory-policy noeviction.",
		     LF_S("policy", policy));
	}
}

void app_signals_block(sigset_t *set)
{
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, set, NULL);
}

int app_signals_wait(const sigset_t *set, int64_t timeout_ms)
{
	struct timespec ts = { (time_t)(timeout_ms / 1000), (long)(timeout_ms % 1000) * 1000000L };
	int sig = sigtimedwait(set, NULL, &ts);
	return sig > 0 ? sig : 0;
}
