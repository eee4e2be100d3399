/* orglimit.c -- see orglimit.h. */
#include "orglimit.h"

#include <stdio.h>

#include "db.h"

static int slot_lock(struct db *db, const char *sql, const char *org, int slot, int *ok)
{
	char s[16];
	snprintf(s, sizeof s, "%d", slot);
	const char *p[2] = { org, s };
	PGresult *r = db_query(db, sql, 2, p);
	if (!r)
		return -1;
	*ok = db_get(r, 0, 0) && db_get(r, 0, 0)[0] == 't';
	PQclear(r);
	return 0;
}

int orglimit_acquire(struct db *db, const char *org, int limit, int *slot)
{
	*slot = -1;
	for (int s = 0; s < limit; s++) {
		int ok;
		if (slot_lock(db, "select pg_try_advisory_lock(hashtext('jobrunner.org:' || $1), $2::int)",
			      org, s, &ok))
			return -1;
		if (ok) {
			*slot = s;
			return 0;
		}
	}
	return 0;
}

int orglimit_try_slot(struct db *db, const char *org, int slot, int *ok)
{
	return slot_lock(db, "select pg_try_advisory_lock(hashtext('jobrunner.org:' || $1), $2::int)",
			 org, slot, ok);
}

int orglimit_release(struct db *db, const char *org, int slot)
{
	int ok;
	return slot_lock(db, "select pg_advisory_unlock(hashtext('jobrunner.org:' || $1), $2::int)",
			 org, slot, &ok);
}

int orglimit_throttle(struct db *db, const char *org, int64_t until_ms, const char *reason)
{
	char u[24];
	snprintf(u, sizeof u, "%lld", (long long)until_ms);
	const char *p[3] = { org, u, reason };
	return db_exec(db,
		"insert into org_throttle (org_id, until, reason, updated_at)"
		" values ($1, to_timestamp($2::bigint / 1000.0), $3, now())"
		" on conflict (org_id) do update set until = greatest(org_throttle.until, excluded.until),"
		"   reason = excluded.reason, updated_at = now()", 3, p);
}

int orglimit_throttled(struct db *db, const char *org, int64_t *wait_ms)
{
	const char *p[1] = { org };
	*wait_ms = 0;
	PGresult *r = db_query(db,
		"select greatest(0, (extract(epoch from until - now()) * 1000)::bigint)"
		"  from org_throttle where org_id = $1", 1, p);
	if (!r)
		return -1;
	if (PQntuples(r) > 0)
		*wait_ms = db_get_i64(r, 0, 0, 0);
	PQclear(r);
	return 0;
}

void orglimit_rate_key(char *out, size_t outlen, const char *job_or_null, const char *org)
{
	snprintf(out, outlen, "%s:%s", job_or_null ? job_or_null : "*", org);
}

int orglimit_rate_pg(struct db *db, const char *key, int64_t n, int64_t period_ms, int64_t *wait_ms)
{
	char ns[24], ps[24];
	snprintf(ns, sizeof ns, "%lld", (long long)n);
	snprintf(ps, sizeof ps, "%lld", (long long)period_ms);
	const char *p[3] = { key, ns, ps };
	*wait_ms = 0;
	PGresult *r = db_query(db, "select jobrunner_org_rate_take($1, $2::int, $3::bigint)", 3, p);
	if (!r)
		return -1;
	*wait_ms = db_get_i64(r, 0, 0, 0);
	PQclear(r);
	return 0;
}
