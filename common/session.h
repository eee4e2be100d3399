/* session.h -- what needs a PostgreSQL *session*, on one direct connection
 * per process; and the pooler check at start-up.
 *
 * DATABASE_URL may point at a transaction-mode pooler (PgBouncer
 * pool_mode=transaction, Supabase's pooler port, Neon's -pooler hosts, RDS
 * Proxy) when DATABASE_DIRECT_URL is set: then every statement on it is a
 * plain one (no named prepared statements, no session settings: db.h) and
 * everything that needs a session goes through here, on DATABASE_DIRECT_URL:
 *
 *   cycles                the cycle lock, pg_try_advisory_lock(JOB_RUNNER_LOCK_KEY),
 *                         and the cycle's writes, on one cycle connection
 *   per-org slots         pg_try_advisory_lock(hashtext(org), slot)
 *   LISTEN jobrunner_runs one listener thread wakes the PostgreSQL claimers
 *   migrations            app.c, under their own advisory lock
 *
 * Without DATABASE_DIRECT_URL the session connection is a second
 * connection to DATABASE_URL, which start-up has checked is not a
 * transaction pooler (session_check_pooling()).
 *
 * One connection holds every org slot of the process, shared under a
 * mutex by all worker threads (advisory
 * locks are re-entrant within a session, so the process keeps its own
 * table of what it holds and never asks twice).  If that connection dies
 * the server frees its locks with it; holders notice through the
 * connection's generation and do not unlock on the new session what they
 * never locked there.  A lock is therefore never left on a pooled server
 * connection, whatever fails: it is never taken on one.
 */
#ifndef JOBRUNNER_COMMON_SESSION_H
#define JOBRUNNER_COMMON_SESSION_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct db;

/* The URL of session connections: DATABASE_DIRECT_URL, else DATABASE_URL. */
const char *session_url(const struct config *cfg);
/* db_init() for a DATABASE_URL connection, marked pooled when
 * DATABASE_DIRECT_URL is set (DATABASE_URL may then be a transaction pooler). */
void session_db_init(struct db *db, const struct config *cfg, const char *app_name,
		     int64_t statement_timeout_ms);

/* Whether the server behind url pools by transaction: two connections,
 * where the second holds a transaction open while the first runs another;
 * a session that changes backend between two transactions, or hands its
 * backend to the other connection, is a transaction pooler.  0 with
 * *pooling set, or -1 with a message in err. */
int session_check_pooling(const char *url, int *pooling, char *err, size_t errlen);

/* Per-org slots (orglimit.h's advisory locks) on the session connection.
 * 0 with *slot set (-1: all busy), or -1 when PostgreSQL failed (err set). */
int session_org_acquire(const struct config *cfg, const char *org, int limit, int *slot,
			char *err, size_t errlen);
void session_org_release(const struct config *cfg, const char *org, int slot);

/* The process's cycle connection, a session connection (DATABASE_DIRECT_URL,
 * else DATABASE_URL): a cycle takes the cycle lock on it and does all its
 * work on it, so that every write of a cycle is made by the session that
 * holds the lock (if that session dies, the cycle's writes die with it).
 * NULL while another thread of the process runs a cycle.  Give it back
 * with session_cycle_db_done(). */
struct db *session_cycle_db(const struct config *cfg);
void session_cycle_db_done(struct db *db);

/* Waits up to ms for a jobrunner_runs notification, received by the
 * process's listener thread on a session connection (used when DATABASE_URL
 * may be a transaction pooler, where LISTEN would be lost). */
void session_wait_notify(const struct config *cfg, int64_t ms);

#endif
