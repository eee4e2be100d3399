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

int migrate_apply(struct db *db, int *applied, char *err, size_t errlen)
{
	int rc = -1, n = 0, locked = 0;
	char key[32];
	snprintf(key, sizeof key, "%lld", MIGRATE_LOCK_KEY);
	const char *kp[1] = { key };

	if (db_exec(db, "select pg_advisory_lock($1::bigint)", 1, kp))
		goto out;
	locked = 1;
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
