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

int app_init(struct config *cfg, enum config_role role, int argc, char **argv)
{
	char err[512];
	const char *prog = role == ROLE_PRODUCER ? "producer" : "consumer";
	int rc = config_load(cfg, role, argc, argv, err, sizeof err);
	if (rc == CONFIG_HELP)
		return EXIT_OK;
	if (rc != CONFIG_OK) {
		fprintf(stderr, "%s: %s\n", prog, err);
		return EXIT_USAGE;
	}
	log_init((enum log_format)cfg->log_format, (enum log_level)cfg->log_level);
	config_register_secrets(cfg);
	return -1;
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

int app_database(const struct config *cfg, struct db *db, const char *app_name)
{
	char where[256];
	db_redact(session_url(cfg), where, sizeof where);
	db_init(db, session_url(cfg), app_name, 60000);
	int64_t deadline = mono_ms() + cfg->startup_timeout_ms, delay = 100;
	while (db_connect(db)) {
		if (startup_signalled())
			return EXIT_OK;
		if (mono_ms() >= deadline) {
			LOGF(LOG_ERROR, "startup_failed", "PostgreSQL is unreachable",
			     LF_S("database", where), LF_S("error", db->errstr),
			     LF_I("startupTimeoutMs", cfg->startup_timeout_ms));
			return EXIT_UNREACHABLE;
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
			return EXIT_UNREACHABLE;
		}
		if (pooling) {
			LOGF(LOG_ERROR, "startup_failed",
			     "DATABASE_URL pools by transaction (the server session changes between "
			     "transactions): set DATABASE_DIRECT_URL to a direct (session) connection for "
			     "the locks, LISTEN and migrations, and keep DATABASE_URL for the pooler",
			     LF_S("database", where));
			return EXIT_USAGE;
		}
	}
	if (startup_signalled())
		return EXIT_OK;
	char err[512];
	int applied = 0;
	struct lock_wait lw = { mono_ms(), 0 };
	int rc = migrate_apply_wait(db, &applied, err, sizeof err, migration_wait, &lw);
	if (rc == MIGRATE_STOPPED)
		return EXIT_OK;
	if (rc) {
		LOGF(LOG_ERROR, "startup_failed", "database migrations failed", LF_S("error", err));
		return EXIT_UNREACHABLE;
	}
	if (applied)
		LOGF(LOG_INFO, "migrations_applied", "database migrations applied", LF_I("count", applied));
	return -1;
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
