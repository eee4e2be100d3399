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
 *
 * Poolers.  A db with `pooled` set may sit behind a transaction-mode pooler
 * (PgBouncer pool_mode=transaction, Supabase's pooler port, Neon's -pooler
 * hosts, RDS Proxy): its server session can change between two
 * transactions, so nothing on it may depend on session state.  It sets no
 * session settings (statement_timeout and the server keepalives are the
 * pooler's business there) and prepares no named statements
 * (db_query_prepared() runs db_query()).  Session things (advisory locks,
 * LISTEN, migrations) go to a direct connection: see session.h.
 *
 * Client-side timeouts.  With client_timeout_ms > 0 every statement is sent
 * asynchronously and waited for at most that long: a server that stopped
 * answering (SIGSTOP, a black-holed network) fails the call with
 * timed_out set and the connection closed, instead of hanging the thread.
 * Health checks and metrics use it.
 *
 * Accounting.  Open connections are counted by role (app_name without
 * "jobrunner-"), and failed connects by reason (db_connect_stats()):
 * jobrunner_db_connections and jobrunner_db_connect_failures_total.
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
	int pooled;              /* may be a transaction pooler: no session state */
	int64_t client_timeout_ms;   /* >0: each statement waits at most this long */
	int connect_timeout_s;   /* libpq connect_timeout (default 5; libpq's minimum is 2) */
	int timed_out;           /* the last failure was a client-side timeout */
	int role;                /* index into the accounting table */
	int counted;             /* this connection is counted as open */
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

/* Writes a loggable form of a connection string (URL or key=value) into
 * out: host, port, dbname and user only, never the password or any other
 * parameter.  A string libpq cannot parse is written as
 * "(unparsable connection string)", never echoed. */
void db_redact(const char *conninfo, char *out, size_t outlen);
/* Registers the password of a connection string (URL or key=value; the
 * decoded and, for URLs, the percent-encoded form) with the logger, which
 * then writes [REDACTED] in its place. */
void db_register_secrets(const char *conninfo);

/* Why connects failed, for metrics (db_connect_stats()) and logs. */
enum db_fail_reason { DBF_TOO_MANY = 0, DBF_AUTH, DBF_TIMEOUT, DBF_REFUSED, DBF_OTHER, DBF_NREASONS };
const char *db_fail_reason_name(int reason);
/* The reason of a libpq connect error message. */
int db_fail_reason_of(const char *msg);
/* Accounting: for i in [0, *nroles): role name, open connections; and the
 * connect failures per reason (DBF_NREASONS entries). */
#define DB_MAX_ROLES 16
void db_connect_stats(const char **roles, int64_t *open, int *nroles, uint64_t *failures);

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
