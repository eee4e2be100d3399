/* lock.c -- see lock.h. */
#include "lock.h"

#include <stdio.h>

#include "db.h"

int lock_try_acquire(struct db *db, int64_t key, const char *holder, int *acquired)
{
	char k[24];
	snprintf(k, sizeof k, "%lld", (long long)key);
	const char *p[1] = { k };
	*acquired = 0;
	PGresult *r = db_query(db, "select pg_try_advisory_lock($1::bigint)", 1, p);
	if (!r)
		return -1;
	*acquired = db_get(r, 0, 0) && db_get(r, 0, 0)[0] == 't';
	PQclear(r);
	if (!*acquired)
		return 0;
	const char *hp[1] = { holder };
	if (db_exec(db, "insert into job_runner_lock (id, holder, backend_pid, acquired_at, heartbeat_at, fence)"
			" values ('job_runner', $1, pg_backend_pid(), now(), now(), 1)"
			" on conflict (id) do update set holder = excluded.holder,"
			"   backend_pid = excluded.backend_pid, acquired_at = now(), heartbeat_at = now(),"
			"   fence = job_runner_lock.fence + 1", 1, hp)) {
		/* the row is informational; a failure here (e.g. the table is
		 * being migrated) must not keep the lock held */
		db_exec(db, "select pg_advisory_unlock($1::bigint)", 1, p);
		*acquired = 0;
		return -1;
	}
	return 0;
}

int lock_heartbeat(struct db *db, const char *holder)
{
	const char *p[1] = { holder };
	return db_exec(db, "update job_runner_lock set heartbeat_at = now()"
			   " where id = 'job_runner' and holder = $1 and backend_pid = pg_backend_pid()", 1, p);
}

int lock_release(struct db *db, int64_t key, const char *holder)
{
	char k[24];
	snprintf(k, sizeof k, "%lld", (long long)key);
	const char *p[1] = { k };
	const char *hp[1] = { holder };
	int rc = db_exec(db, "delete from job_runner_lock where id = 'job_runner' and holder = $1"
			     " and backend_pid = pg_backend_pid()", 1, hp);
	if (db_exec(db, "select pg_advisory_unlock($1::bigint)", 1, p))
		rc = -1;
	return rc;
}
