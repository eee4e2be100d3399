/* db.c -- see db.h.
 *
 * Connections are opened with PQconnectdbParams and expand_dbname, so
 * DATABASE_URL may be a URL or a key=value string; our keys come after it
 * and win: connect_timeout, TCP keepalives (idle 30 s, interval 10 s,
 * 3 probes), application_name.  gssencmode=disable comes before it (the URL
 * wins), and only where Kerberos is not set up (kerberos_absent()).
 * statement_timeout is set per session right after connecting.
 */
#include "db.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* accounting: open connections by role, failed connects by reason     */
/* ------------------------------------------------------------------ */

static pthread_mutex_t acct_mu = PTHREAD_MUTEX_INITIALIZER;
static const char *acct_roles[DB_MAX_ROLES];   /* owned copies, never freed */
static int acct_nroles;
static int64_t acct_open[DB_MAX_ROLES];        /* atomic */
static uint64_t acct_fail[DBF_NREASONS];       /* atomic */
static int64_t acct_logged_ms[DBF_NREASONS];   /* atomic: last log line per reason */

static const char *const reason_names[DBF_NREASONS] = {
	"too_many_connections", "auth", "timeout", "refused", "other",
};

const char *db_fail_reason_name(int reason)
{
	return reason >= 0 && reason < DBF_NREASONS ? reason_names[reason] : "other";
}

int db_fail_reason_of(const char *msg)
{
	if (!msg)
		return DBF_OTHER;
	if (strstr(msg, "too many clients") || strstr(msg, "remaining connection slots") ||
	    strstr(msg, "too many connections") || strstr(msg, "no more connections allowed"))
		return DBF_TOO_MANY;
	if (strstr(msg, "authentication failed") || strstr(msg, "no password supplied") ||
	    strstr(msg, "no pg_hba.conf entry"))
		return DBF_AUTH;
	if (strstr(msg, "timeout expired") || strstr(msg, "timed out"))
		return DBF_TIMEOUT;
	if (strstr(msg, "Connection refused") || strstr(msg, "could not connect") ||
	    strstr(msg, "No such file or directory"))
		return DBF_REFUSED;
	return DBF_OTHER;
}

static int role_index(const char *app_name)
{
	const char *role = app_name;
	if (!strncmp(role, "jobrunner-", 10) && role[10])
		role += 10;
	pthread_mutex_lock(&acct_mu);
	int i;
	for (i = 0; i < acct_nroles; i++)
		if (!strcmp(acct_roles[i], role))
			break;
	if (i == acct_nroles) {
		if (acct_nroles < DB_MAX_ROLES - 1)
			acct_roles[acct_nroles++] = xstrdup(role);
		else if (acct_nroles == DB_MAX_ROLES - 1)
			acct_roles[acct_nroles++] = "other";
		i = acct_nroles - 1;
	}
	pthread_mutex_unlock(&acct_mu);
	return i;
}

void db_connect_stats(const char **roles, int64_t *open, int *nroles, uint64_t *failures)
{
	pthread_mutex_lock(&acct_mu);
	for (int i = 0; i < acct_nroles; i++) {
		roles[i] = acct_roles[i];
		open[i] = __atomic_load_n(&acct_open[i], __ATOMIC_RELAXED);
	}
	*nroles = acct_nroles;
	pthread_mutex_unlock(&acct_mu);
	for (int i = 0; i < DBF_NREASONS; i++)
		failures[i] = __atomic_load_n(&acct_fail[i], __ATOMIC_RELAXED);
}

/* A failed connect: counted by reason, and logged with the server's error
 * (at most once per 10 s per reason, so that a refusing server does not
 * flood the log from every thread). */
static void note_connect_failure(const struct db *db, const char *msg)
{
	int reason = db_fail_reason_of(msg);
	__atomic_add_fetch(&acct_fail[reason], 1, __ATOMIC_RELAXED);
	int64_t now = mono_ms(), last = __atomic_load_n(&acct_logged_ms[reason], __ATOMIC_RELAXED);
	if (last && now - last < 10000)
		return;
	if (!__atomic_compare_exchange_n(&acct_logged_ms[reason], &last, now, 0, __ATOMIC_RELAXED,
					 __ATOMIC_RELAXED))
		return;
	LOGF(reason == DBF_TOO_MANY ? LOG_ERROR : LOG_WARN, "db_connect_failed",
	     reason == DBF_TOO_MANY ? "PostgreSQL refuses connections: max_connections reached "
				      "(see the connection budget in docs/deployment.md)"
				    : "cannot connect to PostgreSQL",
	     LF_S("reason", reason_names[reason]), LF_S("role", acct_roles[db->role]),
	     LF_S("error", db->errstr));
}

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
	db->connect_timeout_s = 5;
	db->role = role_index(db->app_name);
}

static _Atomic(void (*)(void)) reconnect_hook;

/* GSSAPI encryption (libpq's gssencmode, default "prefer") can only work
 * with Kerberos set up on this machine.  Without it, libpq's probe for a
 * credential cache still initialises the Kerberos libraries on every
 * connect: about 0.7 MiB resident in each process (docs/operations.md).
 * Absent: no PGGSSENCMODE, KRB5CCNAME or KRB5_CONFIG in the environment,
 * no /etc/krb5.conf and no default credential cache (/tmp/krb5cc_<uid>);
 * then connections ask for gssencmode=disable, unless DATABASE_URL sets
 * gssencmode itself (it wins).  Decided once per process. */
static int kerberos_absent_now(void)
{
	char ccache[64];
	snprintf(ccache, sizeof ccache, "/tmp/krb5cc_%u", (unsigned)getuid());
	return !getenv("PGGSSENCMODE") && !getenv("KRB5CCNAME") && !getenv("KRB5_CONFIG") &&
	       access("/etc/krb5.conf", F_OK) != 0 && access(ccache, F_OK) != 0;
}

static pthread_once_t krb_once = PTHREAD_ONCE_INIT;
static int krb_absent;
static void krb_init(void) { krb_absent = kerberos_absent_now(); }

static int kerberos_absent(void)
{
	pthread_once(&krb_once, krb_init);
	return krb_absent;
}

void db_on_reconnect(void (*fn)(void)) { atomic_store_explicit(&reconnect_hook, fn, memory_order_relaxed); }

int db_connect(struct db *db)
{
	if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
		return 0;
	if (db->conn) {
		PQfinish(db->conn);
		db->conn = NULL;
	}
	/* gssencmode first: DATABASE_URL (dbname, expanded after it) may override it */
	const char *keys[] = { "gssencmode", "dbname", "connect_timeout", "keepalives", "keepalives_idle",
			       "keepalives_interval", "keepalives_count", "application_name", NULL };
	char cto[16];
	snprintf(cto, sizeof cto, "%d", db->connect_timeout_s >= 2 ? db->connect_timeout_s : 2);
	const char *vals[] = { "disable", db->url, cto, "1", "30", "10", "3", db->app_name, NULL };
	int skip = kerberos_absent() ? 0 : 1;   /* 1: libpq's own gssencmode default */
	db->timed_out = 0;
	PGconn *c = PQconnectdbParams(keys + skip, vals + skip, 1);
	if (!c || PQstatus(c) != CONNECTION_OK) {
		db_fail(db, "connect", c ? PQerrorMessage(c) : "out of memory");
		db->timed_out = db_fail_reason_of(db->errstr) == DBF_TIMEOUT;
		note_connect_failure(db, db->errstr);
		PQfinish(c);
		return -1;
	}
	db->conn = c;
	db->counted = 1;
	__atomic_add_fetch(&acct_open[db->role], 1, __ATOMIC_RELAXED);
	PQsetNoticeProcessor(c, ignore_notice, NULL);
	if (db->pooled)
		goto connected;   /* no session state behind a transaction pooler */
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
connected:
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
	if (db->counted)
		__atomic_sub_fetch(&acct_open[db->role], 1, __ATOMIC_RELAXED);
	db->counted = 0;
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

/* Waits for the result of the statement just sent on db, until the
 * client-side deadline: the last result (like PQexecParams), or NULL with
 * the connection closed and timed_out set. */
static PGresult *await_result(struct db *db, int64_t deadline)
{
	PGconn *c = db->conn;
	struct pollfd pfd = { PQsocket(c), POLLIN, 0 };
	for (;;) {
		int f = PQflush(c);
		if (f < 0)
			break;
		if (!PQisBusy(c) && f == 0)
			break;
		int64_t left = deadline - mono_ms();
		if (left <= 0) {
			/* a hung server would not answer a cancel either: drop the
			 * connection; the server ends the statement when it notices */
			db_fail(db, "query", "timed out");
			snprintf(db->errstr, sizeof db->errstr, "database check timed out after %lld ms",
				 (long long)db->client_timeout_ms);
			db->timed_out = 1;
			db->sqlstate[0] = '\0';
			db_close(db);
			return NULL;
		}
		pfd.events = f > 0 ? POLLIN | POLLOUT : POLLIN;
		int r = poll(&pfd, 1, (int)(left > 1000 ? 1000 : left));
		if (r < 0 && errno != EINTR)
			break;
		if (r > 0 && !PQconsumeInput(c))
			break;
	}
	PGresult *last = NULL, *r;
	while ((r = PQgetResult(c)) != NULL) {
		PQclear(last);
		last = r;
	}
	return last;
}

PGresult *db_query(struct db *db, const char *sql, int n, const char *const *params)
{
	if (db_connect(db))
		return NULL;
	db->timed_out = 0;
	if (db->client_timeout_ms <= 0)
		return db_result(db, PQexecParams(db->conn, sql, n, NULL, params, NULL, NULL, 0));
	int64_t deadline = mono_ms() + db->client_timeout_ms;
	if (!PQsendQueryParams(db->conn, sql, n, NULL, params, NULL, NULL, 0))
		return db_result(db, NULL);
	PGresult *r = await_result(db, deadline);
	return db->timed_out ? NULL : db_result(db, r);
}

PGresult *db_query_prepared(struct db *db, const char *name, const char *sql, int n,
			    const char *const *params)
{
	if (db->pooled)
		return db_query(db, sql, n, params);
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

/* ------------------------------------------------------------------ */
/* connection strings in messages                                      */
/* ------------------------------------------------------------------ */

void db_redact(const char *conninfo, char *out, size_t outlen)
{
	if (!conninfo) {
		snprintf(out, outlen, "(unset)");
		return;
	}
	char *msg = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
	if (!opts) {
		/* libpq's message may quote the string: never shown */
		PQfreemem(msg);
		snprintf(out, outlen, "(unparsable connection string)");
		return;
	}
	static const char *const shown[] = { "host", "hostaddr", "port", "dbname", "user" };
	struct strbuf sb = STRBUF_INIT;
	for (size_t k = 0; k < JR_ARRAY_LEN(shown); k++)
		for (PQconninfoOption *o = opts; o->keyword; o++)
			if (!strcmp(o->keyword, shown[k]) && o->val && *o->val)
				sb_addf(&sb, "%s%s=%s", sb.len ? " " : "", o->keyword, o->val);
	PQconninfoFree(opts);
	snprintf(out, outlen, "%s", sb.len ? sb.buf : "(defaults)");
	sb_release(&sb);
}

void db_register_secrets(const char *conninfo)
{
	if (!conninfo)
		return;
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	if (!opts)
		return;
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (strcmp(o->keyword, "password") || !o->val || !*o->val)
			continue;
		log_add_secret(o->val);
		/* a URL carries it percent-encoded: the raw form is a secret too */
		const char *scheme = strstr(conninfo, "://");
		const char *at = scheme ? strrchr(conninfo, '@') : NULL;
		const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
		if (at && colon && colon < at) {
			char *raw = xstrndup(colon + 1, (size_t)(at - colon - 1));
			log_add_secret(raw);
			free(raw);
		}
	}
	PQconninfoFree(opts);
}

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
