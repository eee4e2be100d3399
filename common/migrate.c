/* migrate.c -- see migrate.h.
 *
 * Each pending migration runs in its own transaction together with its
 * schema_migrations row, so a crash leaves either both or neither.  The
 * session-level advisory lock serialises concurrent starters: the second
 * waits, then finds nothing left to do.
 */
#include "migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "util.h"

static int applied_version(struct db *db, int version, int *yes)
{
	char v[16];
	snprintf(v, sizeof v, "%d", version);
	const char *p[1] = { v };
	PGresult *r = db_query(db, "select 1 from schema_migrations where version = $1", 1, p);
	if (!r)
		return -1;
	*yes = PQntuples(r) > 0;
	PQclear(r);
	return 0;
}

/* Who holds the migration lock, for the waiting log line. */
static void lock_holder(struct db *db, const char *key, char *out, size_t outlen)
{
	const char *p[1] = { key };
	snprintf(out, outlen, "unknown");
	PGresult *r = db_query(db,
		"select l.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local')"
		"  from pg_locks l left join pg_stat_activity a on a.pid = l.pid"
		" where l.locktype = 'advisory' and l.granted and l.objsubid = 1"
		"   and ((l.classid::bigint << 32) | l.objid::bigint) = $1::bigint limit 1", 1, p);
	if (!r)
		return;
	if (PQntuples(r) == 1)
		snprintf(out, outlen, "pid %s (%s) from %s", db_get(r, 0, 0), db_get(r, 0, 1), db_get(r, 0, 2));
	PQclear(r);
}

int migrate_apply(struct db *db, int *applied, char *err, size_t errlen)
{
	return migrate_apply_wait(db, applied, err, errlen, NULL, NULL);
}

int migrate_apply_wait(struct db *db, int *applied, char *err, size_t errlen,
		       int (*wait)(void *arg, const char *holder), void *arg)
{
	int rc = -1, n = 0, locked = 0;
	char key[32];
	snprintf(key, sizeof key, "%lld", MIGRATE_LOCK_KEY);
	const char *kp[1] = { key };

	/* a try-lock loop rather than pg_advisory_lock(): the wait can be
	 * given up (SIGTERM) and says whom it waits for */
	for (;;) {
		PGresult *r = db_query(db, "select pg_try_advisory_lock($1::bigint)", 1, kp);
		if (!r)
			goto out;
		locked = db_get(r, 0, 0) && db_get(r, 0, 0)[0] == 't';
		PQclear(r);
		if (locked)
			break;
		if (wait) {
			char holder[256];
			lock_holder(db, key, holder, sizeof holder);
			if (wait(arg, holder)) {
				if (applied)
					*applied = 0;
				return MIGRATE_STOPPED;
			}
		}
		sleep_ms(500);
	}
	if (db_exec(db, "create table if not exists schema_migrations ("
			"version integer primary key, name text not null, "
			"applied_at timestamptz not null default now())", 0, NULL))
		goto out;
	for (int i = 0; i < migrations_count; i++) {
		const struct migration *m = &migrations[i];
		int yes;
		if (applied_version(db, m->version, &yes))
			goto out;
		if (yes)
			continue;
		char ver[16];
		snprintf(ver, sizeof ver, "%d", m->version);
		const char *mp[2] = { ver, m->name };
		if (db_exec_script(db, "begin") || db_exec_script(db, m->sql) ||
		    db_exec(db, "insert into schema_migrations(version, name) values ($1, $2)", 2, mp) ||
		    db_exec_script(db, "commit")) {
			snprintf(err, errlen, "migration %s failed: %s", m->name, db->errstr);
			db_exec_script(db, "rollback");
			goto unlock;
		}
		n++;
	}
	rc = 0;
out:
	if (rc)
		snprintf(err, errlen, "migrations: %s", db->errstr);
unlock:
	if (locked)
		db_exec(db, "select pg_advisory_unlock($1::bigint)", 1, kp);
	if (applied)
		*applied = n;
	return rc;
}
