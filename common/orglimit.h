/* orglimit.h -- per-org scheduling limits, across all consumers.
 *
 * Concurrency (ORG_CONCURRENCY): a run of org O takes one of N slots, each
 * a PostgreSQL session advisory lock in the two-int key space
 * (hashtext('jobrunner.org:' || O), slot).  The worker takes them through
 * session.h, on the process's one session connection (never on a pooled
 * one), so they are released when the run ends, and by the server if the
 * consumer dies (its session ends): no slot ever leaks.
 * The two-int key space is distinct from the cycle lock's single bigint, so
 * the two never collide.  A hash collision between two orgs can only make
 * them share slots (stricter, never looser).  One mechanism serves both
 * transports, because PostgreSQL is always there.
 *
 * Throttle windows: when Meta throttles an account, the job records until
 * when (org_throttle); the worker defers the org's runs until then.
 *
 * Rejected: counting running rows in job_runs (not true in Redis mode,
 * where job_runs is written behind); a Redis semaphore (not there in
 * Redis-less mode, and leaks slots of dead consumers until a timeout).
 */
#ifndef JOBRUNNER_COMMON_ORGLIMIT_H
#define JOBRUNNER_COMMON_ORGLIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "run.h"

struct db;

/* Tries to take one of `limit` slots of org on db's session.  0 with *slot
 * set to the slot taken or -1 when all are busy; -1 on a database error. */
int orglimit_acquire(struct db *db, const char *org, int limit, int *slot);
/* Tries slot `slot` of org alone: 0 with *ok 0/1, or -1. */
int orglimit_try_slot(struct db *db, const char *org, int slot, int *ok);
/* Releases a slot taken by orglimit_acquire() on the same session. */
int orglimit_release(struct db *db, const char *org, int slot);

/* Records that org is throttled until until_ms (epoch ms); keeps the later
 * of an existing window and the new one.  reason is stored for operators. */
int orglimit_throttle(struct db *db, const char *org, int64_t until_ms, const char *reason);
/* *wait_ms: how long org is still throttled (0: not throttled). */
int orglimit_throttled(struct db *db, const char *org, int64_t *wait_ms);

/* Rate limits (ORG_RATE_LIMIT, <JOB>_ORG_RATE_LIMIT): a sliding window log
 * of the org's starts, shared by all consumers: in Redis (common/lua/
 * rate.lua, queue_redis_rate()) in Redis mode, in PostgreSQL (org_rate,
 * jobrunner_org_rate_take(), migration 009) in Redis-less mode and while
 * Redis is down.  The key is the scope ("*" for ORG_RATE_LIMIT, the job's
 * name for a job with its own limit), ':', the org id. */
#define ORGLIMIT_RATE_KEY_LEN (RUN_MAX_JOB_LEN + RUN_MAX_ORG_LEN + 2)
void orglimit_rate_key(char *out, size_t outlen, const char *job_or_null, const char *org);
/* PostgreSQL's limiter: *wait_ms 0 when the start was counted, else how
 * long to wait.  0 or -1 on a database error. */
int orglimit_rate_pg(struct db *db, const char *key, int64_t n, int64_t period_ms, int64_t *wait_ms);

#endif
