/* app.h -- start-up steps both binaries share: configuration (exit 2 on
 * bad values), logging, PostgreSQL within STARTUP_TIMEOUT_MS (exit 3),
 * migrations, and signal handling.  These functions sit at the top of the
 * call stack, so they log and choose exit codes themselves. */
#ifndef JOBRUNNER_COMMON_APP_H
#define JOBRUNNER_COMMON_APP_H

#include <signal.h>

#include "config.h"

struct db;

/* Loads the configuration and sets up logging.  Returns 0 to go on, or -1
 * when the process is to exit with *exit_code: EXIT_OK after --help,
 * EXIT_USAGE on bad configuration (the message, naming the variable, is
 * already printed on stderr). */
int app_init(struct config *cfg, enum config_role role, int argc, char **argv, int *exit_code);

/* Connects db (a session connection: DATABASE_DIRECT_URL, else
 * DATABASE_URL) within STARTUP_TIMEOUT_MS, refuses a transaction pooler as
 * DATABASE_URL when DATABASE_DIRECT_URL is unset, and applies migrations
 * (waiting for the migration lock, logging its holder).  Returns 0, or -1
 * (logged) when the process is to exit with *exit_code: EXIT_UNREACHABLE,
 * EXIT_USAGE (a transaction pooler without DATABASE_DIRECT_URL), EXIT_OK
 * (SIGTERM or SIGINT arrived meanwhile: signals must be blocked,
 * app_signals_block()). */
int app_database(const struct config *cfg, struct db *db, const char *app_name, int *exit_code);

/* Logs the connection budget (event connection_budget): how many
 * PostgreSQL connections this process may open, on DATABASE_URL and on
 * DATABASE_DIRECT_URL, with the formula (docs/deployment.md). */
void app_log_connection_budget(const struct config *cfg, enum config_role role);

struct queue;
/* Reads Redis' maxmemory-policy through q (a Redis queue) and logs loudly
 * (error level) unless it is noeviction: an evicting Redis loses queued
 * runs; when CONFIG GET is refused (managed Redis, ACL users) it says so
 * once at info level.  Once per process: the start-up check or this. */
void app_redis_policy_check(struct queue *q);

/* Redis mode's start-up check (no-op without REDIS_URL), `who` naming the
 * connection: connects (TLS, Sentinel, credentials; a Cluster node is
 * refused), checks that the user may run every command the transport
 * needs, and the eviction policy.  0 to go on -- also when Redis does not
 * answer: the process starts on the PostgreSQL queue -- or -1 with
 * *exit_code EXIT_UNREACHABLE when Redis answers but refuses (wrong
 * password, missing permissions, TLS verification, Cluster), logged with
 * the reason. */
int app_redis_startup(const struct config *cfg, const char *who, int *exit_code);

/* Blocks SIGINT/SIGTERM (call before starting threads, so that every
 * thread inherits the mask) and ignores SIGPIPE. */
void app_signals_block(sigset_t *set);
/* Waits up to timeout_ms for SIGINT/SIGTERM: the signal number or 0. */
int app_signals_wait(const sigset_t *set, int64_t timeout_ms);

#endif
