/* db.c -- see db.h.
 *
 * Connections are opened with PQconnectdbParams and expand_dbname, so
 * DATABASE_URL may be a URL or a key=value string; our keys come after it
 * and win: connect_timeout, TCP keepalives (idle 30 s, interval 10 s,
 * 3 probes), application_name.  statement_timeout is set per session right
 * after connecting.
 */
#include "db.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void db_fail(struct db *db, const char *what, const char *detail)
{
	db->err = -1;
	char clean[200];
	snprintf(clean, sizeof clean, "%s", detail ? detail : "");
	/* libpq messages end with a newline; keep log lines single-line */
	for (char *p = clean; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	size_t n = strlen(clean);
	while (n && clean[n - 1] == ' ')
		clean[--n] = '\0';
	snprintf(db->errstr, sizeof db->errstr, "%s: %s", what, clean);
}

/* Server notices ("relation already exists, skipping") are not errors and
 * must not reach stderr uncontrolled. */
static void ignore_notice(void *arg, const char *message) { }

void db_init(struct db *db, const char *url, const char *app_name, int64_t statement_timeout_ms)
{
	memset(db, 0, sizeof *db);
	db->url = xstrdup(url);
	db->app_name = xstrdup(app_name ? app_name : "jobrunner");
	db->statement_timeout_ms = statement_timeout_ms;
}

static _Atomic(void (*)(void)) reconnect_hook;

void db_on_reconnect(void (*fn)(void)) { atomic_store_explicit(&reconnect_hook, fn, memory_order_relaxed); }

int db_connect(struct db *db)
{
	if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
		return 0;
	if (db->conn) {
		PQfinish(db->conn);
		db->conn = NULL;
	}
	const char *keys[] = { "dbname", "connect_timeout", "keepalives", "keepalives_idle",
			       "keepalives_interval", "keepalives_count", "application_name", NULL };
	const char *vals[] = { db->url, "5", "1", "30", "10", "3", db->app_name, NULL };
	PGconn *c = PQconnectdbParams(keys, vals, 1);
	if (!c || PQstatus(c) != CONNECTION_OK) {
		db_fail(db, "connect", c ? PQerrorMessage(c) : "out of memory");
		PQfinish(c);
		return -1;
	}
	db->conn = c;
	PQsetNoticeProcessor(c, ignore_notice, NULL);
	/* statement_timeout per session; server-side TCP keepalives so that
	 * the server notices a vanished client (and frees its advisory locks)
	 * in about a minute instead of the kernel's two hours */
	char tmo[32];
	snprintf(tmo, sizeof tmo, "%lld", (long long)db->statement_timeout_ms);
	const char *p[1] = { tmo };
	PGresult *r = PQexecParams(c, "select set_config('statement_timeout', $1, false),"
				   " set_config('tcp_keepalives_idle', '30', false),"
				   " set_config('tcp_keepalives_interval', '10', false),"
				   " set_config('tcp_keepalives_count', '3', false)",
				   1, NULL, p, NULL, NULL, 0);
	int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
	PQclear(r);
	if (!ok) {
		db_fail(db, "connect", PQerrorMessage(c));
		db_close(db);
		return -1;
	}
	if (db->connected_once) {
		db->reconnects++;
		void (*fn)(void) = atomic_load_explicit(&reconnect_hook, memory_order_relaxed);
		if (fn)
			fn();
	}
	db->connected_once = 1;
	db->generation++;
	db->nprepared = 0;   /* a new session has none of the old one's */
	db->err = 0;
	db->errstr[0] = '\0';
	return 0;
}

int db_connect_retry(struct db *db, int64_t timeout_ms, atomic_int *stop)
{
	int64_t deadline = mono_ms() + timeout_ms;
	int64_t delay = 100;
	for (;;) {
		if (db_connect(db) == 0)
			return 0;
		if (mono_ms() >= deadline || (stop && atomic_load_explicit(stop, memory_order_acquire)))
			return -1;
		sleep_ms(delay);
		delay = delay * 2 > 1000 ? 1000 : delay * 2;
	}
}

void db_close(struct db *db)
{
	if (db->conn)
		PQfinish(db->conn);
	db->conn = NULL;
	db->nprepared = 0;
}

void db_release(struct db *db)
{
	db_close(db);
	free(db->url);
	free(db->app_name);
	db->url = db->app_name = NULL;
}

/* r is the result of a statement on db: returns it when it succeeded, else
 * frees it, records the error (closing a dead connection) and returns NULL. */
static PGresult *db_result(struct db *db, PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		db->err = 0;
		return r;
	}
	db_fail(db, "query", r ? PQresultErrorMessage(r) : PQerrorMessage(db->conn));
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	snprintf(db->sqlstate, sizeof db->sqlstate, "%s", state ? state : "");
	PQclear(r);
	if (PQstatus(db->conn) != CONNECTION_OK)
		db_close(db);   /* dead: replaced on the next call, never reused */
	return NULL;
}

PGresult *db_query(struct db *db, const char *sql, int n, const char *const *params)
{
	if (db_connect(db))
		return NULL;
	return db_result(db, PQexecParams(db->conn, sql, n, NULL, params, NULL, NULL, 0));
}

PGresult *db_query_prepared(struct db *db, const char *name, const char *sql, int n,
			    const char *const *params)
{
	if (db_connect(db))
		return NULL;
	int have = 0;
	for (int i = 0; i < db->nprepared && !have; i++)
		have = !strcmp(db->prepared[i], name);
	if (!have) {
		if (db->nprepared == DB_MAX_PREPARED)
			return db_query(db, sql, n, params);
		PGresult *r = db_result(db, PQprepare(db->conn, name, sql, n, NULL));
		if (!r)
			return NULL;
		PQclear(r);
		db->prepared[db->nprepared++] = name;
	}
	PGresult *r = db_result(db, PQexecPrepared(db->conn, name, n, params, NULL, NULL, 0));
	if (!r && db->conn && !strcmp(db->sqlstate, "26000")) {
		/* the session lost its statements (DISCARD ALL, a pooler that
		 * changed the server connection): forget them, run this one plain */
		db->nprepared = 0;
		return db_query(db, sql, n, params);
	}
	return r;
}

int db_exec(struct db *db, const char *sql, int n, const char *const *params)
{
	PGresult *r = db_query(db, sql, n, params);
	if (!r)
		return -1;
	PQclear(r);
	return 0;
}

int db_copy_in(struct db *db, const char *sql, const char *data, size_t len)
{
	if (db_connect(db))
		return -1;
	db->sqlstate[0] = '\0';
	PGresult *r = PQexec(db->conn, sql);
	if (PQresultStatus(r) != PGRES_COPY_IN) {
		db_fail(db, "copy", r ? PQresultErrorMessage(r) : PQerrorMessage(db->conn));
		goto fail;
	}
	PQclear(r);
	r = NULL;
	/* PQputCopyData takes an int length: send in chunks */
	for (size_t off = 0; off < len;) {
		size_t k = len - off < (1u << 20) ? len - off : (1u << 20);
		if (PQputCopyData(db->conn, data + off, (int)k) != 1) {
			db_fail(db, "copy", PQerrorMessage(db->conn));
			goto fail;
		}
		off += k;
	}
	if (PQputCopyEnd(db->conn, NULL) != 1) {
		db_fail(db, "copy", PQerrorMessage(db->conn));
		goto fail;
	}
	int ok = 1;
	while ((r = PQgetResult(db->conn)) != NULL) {
		if (ok && PQresultStatus(r) != PGRES_COMMAND_OK) {
			ok = 0;
			db_fail(db, "copy", PQresultErrorMessage(r));
			const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
			snprintf(db->sqlstate, sizeof db->sqlstate, "%s", state ? state : "");
		}
		PQclear(r);
	}
	if (ok) {
		db->err = 0;
		return 0;
	}
	r = NULL;
fail:
	if (r) {
		const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		snprintf(db->sqlstate, sizeof db->sqlstate, "%s", state ? state : "");
		PQclear(r);
	}
	if (PQstatus(db->conn) != CONNECTION_OK)
		db_close(db);
	return -1;
}

int db_exec_script(struct db *db, const char *sql)
{
	if (db_connect(db))
		return -1;
	PGresult *r = PQexec(db->conn, sql);
	ExecStatusType st = PQresultStatus(r);
	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		PQclear(r);
		return 0;
	}
	db_fail(db, "script", r ? PQresultErrorMessage(r) : PQerrorMessage(db->conn));
	PQclear(r);
	if (PQstatus(db->conn) != CONNECTION_OK)
		db_close(db);
	return -1;
}

int db_ping(struct db *db, int64_t *latency_ms)
{
	int64_t t0 = mono_ms();
	int rc = db_exec(db, "select 1", 0, NULL);
	if (latency_ms)
		*latency_ms = mono_ms() - t0;
	return rc;
}

const char *db_sqlstate(const struct db *db) { return db->sqlstate; }

const char *db_get(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

int64_t db_get_i64(const PGresult *r, int row, int col, int64_t dflt)
{
	const char *v = db_get(r, row, col);
	int64_t n;
	return v && parse_i64(v, INT64_MIN, INT64_MAX, &n) == 0 ? n : dflt;
}

void db_array_add(struct strbuf *sb, const char *v)
{
	if (!v) {
		sb_adds(sb, "NULL");
		return;
	}
	sb_add(sb, "\"", 1);
	/* plain stretches in one piece, not a call per byte: the complete of
	 * every Redis-less batch passes its ids through here */
	for (const char *p = v; *p;) {
		size_t plain = strcspn(p, "\"\\");
		sb_add(sb, p, plain);
		p += plain;
		if (*p) {
			sb_add(sb, "\\", 1);
			sb_add(sb, p++, 1);
		}
	}
	sb_add(sb, "\"", 1);
}
