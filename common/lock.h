/* lock.h -- the cycle lock: pg_try_advisory_lock(JOB_RUNNER_LOCK_KEY).
 *
 * The lock is the single-bigint advisory lock that the legacy monolith
 * takes, so the monolith and jobrunner never run a cycle at the same time.
 * It is a *session* lock: it lives exactly as long as the connection that
 * took it, which is why a consumer killed while holding it frees it (its
 * backend ends) and why the connection must never go through a transaction
 * pooler (the session would be shared with strangers and the lock could
 * outlive us, or be released under us): callers pass the process's cycle
 * connection (session_cycle_db(), on DATABASE_DIRECT_URL when set).
 *
 * job_runner_lock shows the holder while a cycle runs; the advisory lock is
 * the truth.  A stale row left by a killed holder is overwritten by the next
 * holder; the seed's runbook (pg_advisory_unlock_all(); DELETE FROM
 * job_runner_lock;) stays safe.
 */
#ifndef JOBRUNNER_COMMON_LOCK_H
#define JOBRUNNER_COMMON_LOCK_H

#include <stdint.h>

struct db;

/* Tries the lock on db's session.  0 with *acquired 0/1, or -1 (db->errstr).
 * On success the job_runner_lock row names holder and the backend pid. */
int lock_try_acquire(struct db *db, int64_t key, const char *holder, int *acquired);
/* Updates heartbeat_at of our row. */
int lock_heartbeat(struct db *db, const char *holder);
/* Deletes our row and releases the lock. */
int lock_release(struct db *db, int64_t key, const char *holder);

#endif
