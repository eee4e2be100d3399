/* db.h -- PostgreSQL connection wrapper on libpq.
 *
 * A struct db carries err/errstr like a hiredis context.  After a
 * connection-level failure (err set) the connection is dead: db_query()
 * drops it and the next call reconnects, so a failed connection is
 * replaced, never reused.  SQL is always sent with PQexecParams:
 * parameters only, never string-built statements.
 *
 * Connections are made with connect_timeout, TCP keepalives and a session
 * statement_timeout.  A struct db is used by one thread at a time.
 */
#ifndef JOBRUNNER_COMMON_DB_H
#define JOBRUNNER_COMMON_DB_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdint.h>

#define DB_MAX_PREPARED 16

struct db {
	PGconn *conn;            /* NULL while disconnected */
	char *url;               /* owned */
	char *app_name;          /* owned; shows in pg_stat_activity */
	int64_t statement_timeout_ms;
	int err;                 /* -1 after a failure (errstr says what), 0 after a success */
	char errstr[256];
	char sqlstate[6];         /* SQLSTATE of the last failed query, or "" */
	int connected_once;
	uint64_t reconnects;     /* successful reconnects after the first connect */
	uint64_t generation;     /* bumped by every successful connect */
	/* statements prepared on the current connection (names and SQL are
	 * the callers' static strings); emptied when the connection goes */
	const char *prepared[DB_MAX_PREPARED];
	int nprepared;
};

/* Prepares db (no I/O).  url and app_name are copied. */
void db_init(struct db *db, const char *url, const char *app_name, int64_t statement_timeout_ms);
/* Connects if not connected.  0 or -1 (errstr set). */
int db_connect(struct db *db);
/* Tries db_connect() until it succeeds or timeout_ms passes: 0 or -1. */
int db_connect_retry(struct db *db, int64_t timeout_ms, atomic_int *stop);
void db_close(struct db *db);          /* closes the connection; db stays usable */
void db_release(struct db *db);        /* closes and frees everything */

/* Runs sql with n text parameters (NULL entries are SQL NULL).  Returns a
 * PGresult with PGRES_TUPLES_OK or PGRES_COMMAND_OK that the caller frees
 * with PQclear(), or NULL with errstr set.  Reconnects first if needed. */
PGresult *db_query(struct db *db, const char *sql, int n, const char *const *params);
/* db_query() through a named prepared statement: the statement is
 * prepared (PQprepare) on the first call on each connection, then only
 * executed (PQexecPrepared), so the server parses it once per connection.
 * name must be a static string (it is kept), one sql per name; sql is
 * read during the call only.  Beyond DB_MAX_PREPARED names, and when the
 * server no longer knows the statement (SQLSTATE 26000: DISCARD ALL, a
 * transaction-mode pooler), it runs db_query() instead.  Same result and
 * ownership as db_query(). */
PGresult *db_query_prepared(struct db *db, const char *name, const char *sql, int n,
			    const char *const *params);
/* db_query() for statements whose result is not needed: 0 or -1. */
int db_exec(struct db *db, const char *sql, int n, const char *const *params);
/* COPY ... FROM STDIN (sql, a constant statement) with len bytes of data
 * in the statement's format: 0, or -1 (errstr and sqlstate set; after a
 * connection failure the connection is dropped). */
int db_copy_in(struct db *db, const char *sql, const char *data, size_t len);
/* Runs a script of statements without parameters (migrations only). */
int db_exec_script(struct db *db, const char *sql);

/* A round trip (SELECT 1) and its latency in ms: 0 or -1. */
int db_ping(struct db *db, int64_t *latency_ms);

/* The SQLSTATE of the last failed query, or "" */
const char *db_sqlstate(const struct db *db);

/* fn is called (on the reconnecting thread) after every successful
 * reconnect of any struct db: how the application counts reconnects
 * without this file knowing its metrics.  Set once at start-up. */
void db_on_reconnect(void (*fn)(void));

/* Helpers for reading results: value or NULL for SQL NULL. */
const char *db_get(const PGresult *r, int row, int col);
int64_t db_get_i64(const PGresult *r, int row, int col, int64_t dflt);

/* Appends v to sb as one element of a PostgreSQL array literal ("{a,b}"):
 * quoted and escaped, or NULL for v == NULL.  Callers write the braces and
 * commas: sb "{" + db_array_add(...) + "," + ... + "}".  For passing many
 * rows as $n::text[] to unnest() in one round trip. */
struct strbuf;
void db_array_add(struct strbuf *sb, const char *v);

#endif
