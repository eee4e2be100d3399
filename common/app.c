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

int app_database(const struct config *cfg, struct db *db, const char *app_name, int *exit_code)
{
	*exit_code = EXIT_UNREACHABLE;
	char where[256];
	config_redact_url(cfg->database_url, where, sizeof where);
	db_init(db, cfg->database_url, app_name, 60000);
	if (db_connect_retry(db, cfg->startup_timeout_ms, NULL)) {
		LOGF(LOG_ERROR, "startup_failed", "PostgreSQL is unreachable",
		     LF_S("database", where), LF_S("error", db->errstr),
		     LF_I("startupTimeoutMs", cfg->startup_timeout_ms));
		return -1;
	}
	char err[512];
	int applied = 0;
	if (migrate_apply(db, &applied, err, sizeof err)) {
		LOGF(LOG_ERROR, "startup_failed", "database migrations failed", LF_S("error", err));
		return -1;
	}
	if (applied)
		LOGF(LOG_INFO, "migrations_applied", "database migrations applied", LF_I("count", applied));
	*exit_code = EXIT_OK;
	return 0;
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
