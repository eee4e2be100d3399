/* app.c -- see app.h. */
#include "app.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "migrate.h"
#include "queue_redis.h"
#include "session.h"
#include "rconn.h"
#include "url.h"
#include "util.h"

int app_init(struct config *cfg, enum config_role role, int argc, char **argv, int *exit_code)
{
	char err[512];
	const char *prog = role == ROLE_PRODUCER ? "producer" : "consumer";
	int rc = config_load(cfg, role, argc, argv, err, sizeof err);
	if (rc == CONFIG_HELP) {
		*exit_code = EXIT_OK;
		return -1;
	}
	if (rc != CONFIG_OK) {
		fprintf(stderr, "%s: %s\n", prog, err);
		*exit_code = EXIT_USAGE;
		return -1;
	}
	log_init((enum log_format)cfg->log_format, (enum log_level)cfg->log_level);
	config_register_secrets(cfg);
	struct rconn_settings rs = { .tls_ca_file = cfg->redis_tls_ca_file,
				     .tls_cert_file = cfg->redis_tls_cert_file,
				     .tls_key_file = cfg->redis_tls_key_file,
				     .tls_server_name = cfg->redis_tls_server_name,
				     .sentinel_password = cfg->redis_sentinel_password };
	int tls = cfg->redis_url && !strncasecmp(cfg->redis_url, "rediss", 6);
	signal(SIGPIPE, SIG_IGN);   /* a TLS write to a closed socket fails with EPIPE, not a signal */
	if (rconn_setup(&rs, tls, err, sizeof err)) {
		fprintf(stderr, "%s: %s\n", prog, err);
		*exit_code = EXIT_USAGE;
		return -1;
	}
	return 0;
}

/* A SIGTERM/SIGINT waiting (blocked) for us: consumed, 1.  Start-up
 * honours it at every stage. */
static int startup_signalled(void)
{
	sigset_t pending, set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigpending(&pending) || (!sigismember(&pending, SIGTERM) && !sigismember(&pending, SIGINT)))
		return 0;
	/* blocked (app_signals_block): take it off the queue */
	struct timespec zero = { 0, 0 };
	int sig = sigtimedwait(&set, NULL, &zero);
	LOGF(LOG_INFO, "shutdown", "signal received during start-up: exiting",
	     LF_S("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
	return 1;
}

struct lock_wait {
	int64_t since_ms, logged_ms;
};

static int migration_wait(void *arg, const char *holder)
{
	struct lock_wait *lw = arg;
	int64_t now = mono_ms();
	if (!lw->logged_ms || now - lw->logged_ms >= 10000) {
		lw->logged_ms = now;
		LOGF(LOG_WARN, "migration_lock_wait", "waiting for the migration lock held by another session",
		     LF_S("holder", holder), LF_I("waitedMs", now - lw->since_ms));
	}
	return startup_signalled();
}

int app_database(const struct config *cfg, struct db *db, const char *app_name, int *exit_code)
{
	*exit_code = EXIT_UNREACHABLE;
	char where[256];
	db_redact(session_url(cfg), where, sizeof where);
	db_init(db, session_url(cfg), app_name, 60000);
	int64_t deadline = mono_ms() + cfg->startup_timeout_ms, delay = 100;
	while (db_connect(db)) {
		if (startup_signalled()) {
			*exit_code = EXIT_OK;
			return -1;
		}
		if (mono_ms() >= deadline) {
			LOGF(LOG_ERROR, "startup_failed", "PostgreSQL is unreachable",
			     LF_S("database", where), LF_S("error", db->errstr),
			     LF_I("startupTimeoutMs", cfg->startup_timeout_ms));
			return -1;
		}
		sleep_ms(delay);
		delay = delay * 2 > 1000 ? 1000 : delay * 2;
	}
	if (!cfg->database_direct_url) {
		/* a transaction pooler without a direct URL would share our
		 * session locks with strangers: refuse before touching anything */
		int pooling = 0;
		char err[256];
		if (session_check_pooling(cfg->database_url, &pooling, err, sizeof err)) {
			LOGF(LOG_ERROR, "startup_failed", "PostgreSQL is unreachable", LF_S("database", where),
			     LF_S("error", err));
			return -1;
		}
		if (pooling) {
			LOGF(LOG_ERROR, "startup_failed",
			     "DATABASE_URL pools by transaction (the server session changes between "
			     "transactions): set DATABASE_DIRECT_URL to a direct (session) connection for "
			     "the locks, LISTEN and migrations, and keep DATABASE_URL for the pooler",
			     LF_S("database", where));
			*exit_code = EXIT_USAGE;
			return -1;
		}
	}
	if (startup_signalled()) {
		*exit_code = EXIT_OK;
		return -1;
	}
	char err[512];
	int applied = 0;
	struct lock_wait lw = { mono_ms(), 0 };
	int rc = migrate_apply_wait(db, &applied, err, sizeof err, migration_wait, &lw);
	if (rc == MIGRATE_STOPPED) {
		*exit_code = EXIT_OK;
		return -1;
	}
	if (rc) {
		LOGF(LOG_ERROR, "startup_failed", "database migrations failed", LF_S("error", err));
		return -1;
	}
	if (applied)
		LOGF(LOG_INFO, "migrations_applied", "database migrations applied", LF_I("count", applied));
	*exit_code = EXIT_OK;
	return 0;
}

void app_log_connection_budget(const struct config *cfg, enum config_role role)
{
	int64_t n = cfg->worker_concurrency, p = cfg->database_pool_size;
	int redis = cfg->redis_url != NULL, direct = cfg->database_direct_url != NULL;
	int64_t pooled, pooled_max, session;
	const char *formula;
	if (role == ROLE_PRODUCER && !cfg->job_runner_enabled) {
		/* 4 request connections, their 4 queue handles (Redis-less, or Redis
		 * down), the probe's 2, the history writer (Redis mode) */
		pooled = redis ? 4 + 2 + 1 : 4 + 4 + 2;
		pooled_max = 4 + 4 + 2 + redis;
		session = 0;
		formula = redis ? "producer: 4 API + 2 health + 1 history (+4 queue handles while Redis is down)"
				: "producer: 4 API + 4 queue handles + 2 health";
	} else if (!cfg->job_runner_enabled) {
		pooled = pooled_max = 2;
		session = 0;
		formula = "idle consumer: 2 health";
	} else if (redis) {
		pooled = 1 + 1 + p + 2;
		pooled_max = pooled + n + 1 + 1;
		session = 1 + (cfg->org_concurrency > 0) + direct;
		formula = "Redis mode: 1 PostgreSQL-queue poll + 1 history + DATABASE_POOL_SIZE jobs + 2 health "
			  "(+ WORKER_CONCURRENCY claims + 1 heartbeat + 1 fan-out while Redis is down); "
			  "session: 1 cycle + 1 org slots if ORG_CONCURRENCY > 0 + 1 listener with DATABASE_DIRECT_URL";
	} else {
		pooled = pooled_max = n + 1 + p + 1 + 2;
		session = 1 + (cfg->org_concurrency > 0) + direct;
		formula = "Redis-less: WORKER_CONCURRENCY claims + 1 heartbeat + DATABASE_POOL_SIZE jobs + 1 fan-out "
			  "+ 2 health; session: 1 cycle + 1 org slots if ORG_CONCURRENCY > 0 "
			  "+ 1 listener with DATABASE_DIRECT_URL";
	}
	if (role == ROLE_PRODUCER && cfg->job_runner_enabled)
		pooled += 4 + 4 + 2, pooled_max += 4 + 4 + 2;
	LOGF(LOG_INFO, "connection_budget",
	     direct ? "PostgreSQL connections this process may open: on DATABASE_URL (the pooler) and on "
		      "DATABASE_DIRECT_URL (sessions)"
		    : "PostgreSQL connections this process may open on DATABASE_URL",
	     LF_I("databaseUrl", direct ? pooled : pooled + session),
	     LF_I("databaseUrlMax", direct ? pooled_max : pooled_max + session),
	     LF_I("databaseDirectUrl", direct ? session : 0),
	     LF_I("concurrency", n), LF_I("poolSize", p), LF_S("formula", formula));
}

/* The eviction policy is reported once per process, by whichever check
 * gets an answer first (start-up, or the ticker after an outage). */
static atomic_int policy_reported;

static void policy_report(int refused, const char *policy, int noeviction, const char *error)
{
	if (atomic_exchange_explicit(&policy_reported, 1, memory_order_relaxed))
		return;
	if (refused) {
		/* managed Redis and ACL users without CONFIG: not an error */
		LOGF(LOG_INFO, "redis_policy_unchecked",
		     "could not check Redis maxmemory-policy (CONFIG GET refused); it must be "
		     "noeviction or queued runs can be lost", LF_S("error", error));
	} else if (!noeviction) {
		LOGF(LOG_ERROR, "redis_policy_evicts",
		     "Redis maxmemory-policy is not noeviction: queued runs can be evicted and lost. "
		     "Set maxmemory-policy noeviction.",
		     LF_S("policy", policy));
	}
}

void app_redis_policy_check(struct queue *q)
{
	char policy[64];
	int noeviction = 0;
	if (atomic_load_explicit(&policy_reported, memory_order_relaxed))
		return;
	if (queue_redis_check_policy(q, policy, sizeof policy, &noeviction)) {
		if (q->err == QUEUE_EDOWN)
			return;   /* not an answer: the next connection checks */
		policy_report(1, NULL, 0, q->errstr);
	} else {
		policy_report(0, policy, noeviction, NULL);
	}
}

/* The commands the transport needs, each sent once in a harmless form on
 * a key of jobrunner's prefix (so that key patterns are checked too): an
 * ACL user that lacks one gets NOPERM here instead of in the middle of a
 * script later.  docs/deployment.md lists them as one ACL SETUSER line. */
#define PROBE_KEY "jr:perm-check"
static const char *const probes[][10] = {
	{ "XADD", PROBE_KEY, "NOMKSTREAM", "*", "f", "v" },
	{ "XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", PROBE_KEY, ">" },
	{ "XACK", PROBE_KEY, "g", "0-1" },
	{ "XAUTOCLAIM", PROBE_KEY, "g", "c", "0", "0-0", "COUNT", "1" },
	{ "XCLAIM", PROBE_KEY, "g", "c", "0", "0-1" },
	{ "XPENDING", PROBE_KEY, "g" },
	{ "XGROUP", "CREATE", PROBE_KEY, "g", "$" },
	{ "XGROUP", "DELCONSUMER", PROBE_KEY, "g", "c" },
	{ "XINFO", "GROUPS", PROBE_KEY },
	{ "XINFO", "CONSUMERS", PROBE_KEY, "g" },
	{ "XTRIM", PROBE_KEY, "MINID", "0" },
	{ "XRANGE", PROBE_KEY, "-", "+", "COUNT", "1" },
	{ "XLEN", PROBE_KEY },
	{ "ZADD", PROBE_KEY, "XX", "0", "m" },
	{ "ZRANGEBYSCORE", PROBE_KEY, "0", "0" },
	{ "ZREM", PROBE_KEY, "m" },
	{ "ZCARD", PROBE_KEY },
	{ "ZSCORE", PROBE_KEY, "m" },
	{ "ZMSCORE", PROBE_KEY, "m" },
	{ "ZREMRANGEBYSCORE", PROBE_KEY, "1", "0" },
	{ "ZRANGE", PROBE_KEY, "0", "0" },
	{ "PEXPIRE", PROBE_KEY, "60000" },
	{ "TIME" },
	{ "XREVRANGE", PROBE_KEY, "+", "-", "COUNT", "1" },
	{ "EVALSHA", "0000000000000000000000000000000000000000", "0" },
	{ "EVAL", "return 1", "0" },
	{ "SCRIPT", "LOAD", "return 1" },
	{ "HMGET", PROBE_KEY, "f" },
	{ "HGET", PROBE_KEY, "f" },
	{ "HSET", PROBE_KEY, "f", "v" },   /* the hash and list probes may meet WRONGTYPE: */
	{ "RPUSH", PROBE_KEY, "v" },       /* harmless, only NOPERM counts; SET below */
	{ "LPOP", PROBE_KEY },             /* leaves the key a string that expires */
	{ "LLEN", PROBE_KEY },
	{ "LRANGE", PROBE_KEY, "0", "0" },
	{ "LTRIM", PROBE_KEY, "0", "-1" },
	{ "SET", PROBE_KEY, "0", "PX", "60000" },
	{ "INCR", PROBE_KEY },
	{ "GET", PROBE_KEY },
	{ "EXISTS", PROBE_KEY },
	{ "WAIT", "0", "1" },
};

/* Appends "NAME[ SUB]" of probe i to sb. */
static void probe_name(struct strbuf *sb, size_t i)
{
	const char *const *p = probes[i];
	if (sb->len)
		sb_adds(sb, ", ");
	sb_adds(sb, p[0]);
	if (!strcmp(p[0], "XGROUP") || !strcmp(p[0], "XINFO") || !strcmp(p[0], "SCRIPT")) {
		sb_adds(sb, " ");
		sb_adds(sb, p[1]);
	}
}

int app_redis_startup(const struct config *cfg, const char *who, int *exit_code)
{
	*exit_code = EXIT_OK;
	if (!cfg->redis_url)
		return 0;
	struct rconn rc;
	char err[256], where[256];
	url_redact(cfg->redis_url, where, sizeof where);
	if (rconn_init(&rc, cfg->redis_url, NULL, 0, err, sizeof err)) {
		LOGF(LOG_ERROR, "startup_failed", "bad REDIS_URL", LF_S("error", err));
		*exit_code = EXIT_USAGE;
		return -1;
	}
	rconn_set_name(&rc, "startup", who);
	int rv = 0;
	int code = rconn_connect(&rc);
	if (code == RCONN_EREFUSED) {
		LOGF(LOG_ERROR, "startup_failed", "Redis refuses jobrunner: fix the settings",
		     LF_S("redis", where), LF_S("error", rc.errstr));
		*exit_code = EXIT_UNREACHABLE;
		rv = -1;
		goto out;
	}
	if (code) {
		LOGF(LOG_WARN, "redis_unreachable", "Redis is unreachable at start-up: "
		     "starting on the PostgreSQL queue", LF_S("redis", where), LF_S("error", rc.errstr));
		goto out;
	}
	/* permissions: every probe in one round trip */
	size_t n = JR_ARRAY_LEN(probes);
	for (size_t i = 0; i < n; i++) {
		int argc = 0;
		while (argc < 10 && probes[i][argc])
			argc++;
		if (rconn_append(&rc, argc, (const char **)probes[i], NULL))
			break;
	}
	struct strbuf denied = STRBUF_INIT;
	for (size_t i = 0; i < n; i++) {
		redisReply *r = rconn_get(&rc);
		if (!r) {
			LOGF(LOG_WARN, "redis_unreachable", "Redis failed during the start-up checks: "
			     "starting on the PostgreSQL queue", LF_S("redis", where), LF_S("error", rc.errstr));
			sb_release(&denied);
			goto out;
		}
		if (rconn_is_error(r, "NOPERM") &&
		    (strcmp(probes[i][0], "WAIT") || cfg->redis_min_replicas_ack > 0))
			probe_name(&denied, i);
		rconn_free(r);
	}
	if (denied.len) {
		LOGF(LOG_ERROR, "startup_failed", "the Redis user lacks permissions jobrunner needs "
		     "(see docs/deployment.md for the ACL SETUSER line)", LF_S("redis", where),
		     LF_S("denied", denied.buf));
		sb_release(&denied);
		*exit_code = EXIT_UNREACHABLE;
		rv = -1;
		goto out;
	}
	sb_release(&denied);
	redisReply *r = rconn_cmdf(&rc, "CONFIG GET maxmemory-policy");
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[1]->type == REDIS_REPLY_STRING)
		policy_report(0, r->element[1]->str, !strcmp(r->element[1]->str, "noeviction"), NULL);
	else if (!r && rc.err != RCONN_EDOWN && rc.err != RCONN_ELOST)
		policy_report(1, NULL, 0, rc.errstr);
	if (r)
		rconn_free(r);
out:
	rconn_release(&rc);
	return rv;
}

void app_signals_block(sigset_t *set)
{
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, set, NULL);
}

int app_signals_wait(const sigset_t *set, int64_t timeout_ms)
{
	struct timespec ts = { (time_t)(timeout_ms / 1000), (long)(timeout_ms % 1000) * 1000000L };
	int sig = sigtimedwait(set, NULL, &ts);
	return sig > 0 ? sig : 0;
}
