/* migrate.h -- versioned SQL migrations embedded in the binaries.
 *
 * common/sql/NNN_name.sql files are compiled into `migrations[]` by
 * cmake/embed_sql.cmake.  migrate_apply() takes its own advisory lock
 * (MIGRATE_LOCK_KEY, distinct from the cycle lock), applies every version
 * missing from schema_migrations in order, each in its own transaction, and
 * records it.  Running it twice, or from many processes at once, is safe.
 */
#ifndef JOBRUNNER_COMMON_MIGRATE_H
#define JOBRUNNER_COMMON_MIGRATE_H

#include <stddef.h>

struct db;

struct migration {
	int version;
	const char *name;
	const char *sql;
};

extern const struct migration migrations[];
extern const int migrations_count;

#define MIGRATE_LOCK_KEY 1785684593LL  /* 'jobq' - 1; the cycle lock default is 'jobr' */

/* Applies pending migrations.  0, or -1 with a message in err.  *applied
 * (may be NULL) receives how many were applied now.  db must be a session
 * connection (never a transaction pooler: the lock is a session lock). */
int migrate_apply(struct db *db, int *applied, char *err, size_t errlen);

/* migrate_apply() that, while another session holds the migration lock,
 * tries again every 500 ms and calls wait(arg, holder) before each wait:
 * holder describes the holder ("pid 123 (jobrunner-consumer)", from
 * pg_locks and pg_stat_activity).  wait returning nonzero gives up:
 * MIGRATE_STOPPED, nothing applied, no lock held. */
#define MIGRATE_STOPPED 1
int migrate_apply_wait(struct db *db, int *applied, char *err, size_t errlen,
		       int (*wait)(void *arg, const char *holder), void *arg);

#endif
