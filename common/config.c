/* config.c -- the configuration table and its one parser.
 *
 * Each row names a setting once: variable, flag, type, bounds, default,
 * help text and the struct config field it fills.  config_load() walks the
 * table twice (environment, then flags: a flag wins over its variable);
 * config_usage() and config_reference() print from it, so --help and
 * docs/configuration.md cannot drift from the parser.
 *
 * An empty variable counts as unset (compose files often write VAR: "").
 * Anything else that does not parse stops start-up: there is no silent
 * default for a value that was given.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "url.h"
#include "util.h"

enum ctype { T_STR, T_SECRET, T_INT, T_BOOL, T_LEVEL, T_FORMAT, T_MODE, T_URL, T_RATE };

/* A row's own check of a text value (after its type's): 0, or -1 with a
 * message naming `who` (the variable or option).  A value that may hold a
 * secret is never quoted. */
typedef int (*crow_check)(const char *v, const char *who, char *err, size_t errlen);

struct crow {
	const char *env;        /* NULL: flag only */
	const char *flag;       /* without "--" */
	enum ctype type;
	size_t off;
	const char *dflt;       /* as text, NULL: unset */
	int64_t min, max;       /* T_INT */
	const char *help;
	crow_check check;       /* NULL: the type's checks only */
};

/* A URL of one of kinds (url.h), parsed by the one URL module; a refusal
 * shows the URL redacted (url_redact), never its password. */
static int check_url(const char *v, const char *who, int want_redis, char *err, size_t errlen)
{
	struct url u;
	char why[200], shown[256];
	int bad = url_parse(v, &u, why, sizeof why);
	int redis = !bad && u.scheme != URL_HTTP && u.scheme != URL_HTTPS;
	url_free(&u);
	if (!bad && want_redis && !redis) {
		snprintf(why, sizeof why, "expected redis://, rediss://, redis-sentinel:// or rediss-sentinel://");
		bad = 1;
	} else if (!bad && !want_redis && redis) {
		snprintf(why, sizeof why, "expected an http:// or https:// URL");
		bad = 1;
	}
	if (bad) {
		url_redact(v, shown, sizeof shown);
		snprintf(err, errlen, "invalid %s=%s: %s", who, shown, why);
		return -1;
	}
	return 0;
}

static int check_redis_url(const char *v, const char *who, char *err, size_t errlen)
{
	return check_url(v, who, 1, err, errlen);
}

static int check_http_url(const char *v, const char *who, char *err, size_t errlen)
{
	return check_url(v, who, 0, err, errlen);
}

static int check_consumer_name(const char *v, const char *who, char *err, size_t errlen)
{
	for (const char *p = v; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._:-@", *p)) {
			snprintf(err, errlen, "invalid %s=%.100s: use letters, digits and . _ : - @", who, v);
			return -1;
		}
	if (strlen(v) > 100) {
		snprintf(err, errlen, "invalid %s: longer than 100 characters", who);
		return -1;
	}
	return 0;
}

static int check_job_history(const char *v, const char *who, char *err, size_t errlen)
{
	if (strcmp(v, "all") && strcmp(v, "failures")) {
		snprintf(err, errlen, "invalid %s=%.40s: expected all or failures", who, v);
		return -1;
	}
	return 0;
}

#define F(field) offsetof(struct config, field)
#define DAY_MS 86400000LL
#define I64MAX INT64_MAX

/* Rows without a check leave the last field out. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const struct crow rows[] = {
	/* ---- the legacy worker's variables (docs/operations.md, "Environment variables") ---- */
	{ "NODE_ENV", "node-env", T_STR, F(node_env), "development", 0, 0,
	  "Environment name (development, production); informational." },
	{ "PORT", "port", T_INT, F(port), "4000", 1, 65535,
	  "Producer: HTTP API port." },
	{ "DATABASE_URL", "database-url", T_SECRET, F(database_url), NULL, 0, 0,
	  "PostgreSQL connection URL or key=value string (required). The system of record. May be a transaction pooler when DATABASE_DIRECT_URL is set." },
	{ "DATABASE_DIRECT_URL", "database-direct-url", T_SECRET, F(database_direct_url), NULL, 0, 0,
	  "A direct (session) PostgreSQL connection for what needs a session: the cycle lock, per-org slots, migrations, LISTEN. Set it when DATABASE_URL is a transaction pooler (PgBouncer transaction mode, Supabase, Neon -pooler, RDS Proxy)." },
	{ "DATABASE_POOL_SIZE", "database-pool-size", T_INT, F(database_pool_size), "4", 1, 256,
	  "Consumer: PostgreSQL connections shared by the runs of jobs that use the database (and cycles); a run waits for a free one." },
	{ "WORKER_MODE", "worker-mode", T_MODE, F(worker_mode), NULL, 0, 0,
	  "0 for the API (producer), 1 for the worker (consumer); unset: the binary's role." },
	{ "JOB_RUNNER_ENABLED", "job-runner-enabled", T_BOOL, F(job_runner_enabled), NULL, 0, 0,
	  "Claim and run work. Default: false in the producer, true in the consumer." },
	{ "JOB_RUNNER_INTERVAL_MS", "interval-ms", T_INT, F(job_runner_interval_ms), "5000", 100, DAY_MS,
	  "Tick interval: how often a cycle looks for due jobs." },
	{ "NO_REPLY_SCAN_ENABLED", "no-reply-scan-enabled", T_BOOL, F(no_reply_scan_enabled), "true", 0, 0,
	  "Run no_reply_scan in cycles." },
	{ "NO_REPLY_SCAN_INTERVAL_MS", "no-reply-scan-interval-ms", T_INT, F(no_reply_scan_interval_ms), "300000", 0, 365 * DAY_MS,
	  "Minimum time between two cycle runs of no_reply_scan." },
	{ "META_SPEND_ENABLED", "meta-spend-enabled", T_BOOL, F(meta_spend_enabled), "true", 0, 0,
	  "Run meta_spend in cycles." },
	{ "META_TOKEN_REFRESH_ENABLED", "meta-token-refresh-enabled", T_BOOL, F(meta_token_refresh_enabled), "true", 0, 0,
	  "Run meta_token_refresh in cycles." },
	{ "WORKER_RUN_ONCE", "drain-once", T_BOOL, F(worker_run_once), "false", 0, 0,
	  "Consumer: process everything due now (one cycle included), then exit." },

	/* ---- queue and workers ---- */
	{ "REDIS_URL", "redis-url", T_URL, F(redis_url), NULL, 0, 0,
	  "redis://[[user]:password@]host:port[/db]; rediss:// for TLS; "
	  "redis-sentinel://[[user]:password@]host1:port1,host2:port2[/db]#master for Sentinel "
	  "(rediss-sentinel:// with TLS). Unset: Redis-less mode (PostgreSQL carries the queue).",
	  check_redis_url },
	{ "REDIS_TLS_CA_FILE", "redis-tls-ca-file", T_STR, F(redis_tls_ca_file), NULL, 0, 0,
	  "TLS (rediss://): PEM file of the CA certificates that sign the server's. Unset: the system's CA store." },
	{ "REDIS_TLS_CERT_FILE", "redis-tls-cert-file", T_STR, F(redis_tls_cert_file), NULL, 0, 0,
	  "TLS: PEM client certificate (chain), for servers that require one; with REDIS_TLS_KEY_FILE." },
	{ "REDIS_TLS_KEY_FILE", "redis-tls-key-file", T_STR, F(redis_tls_key_file), NULL, 0, 0,
	  "TLS: PEM private key of REDIS_TLS_CERT_FILE." },
	{ "REDIS_TLS_SERVER_NAME", "redis-tls-server-name", T_STR, F(redis_tls_server_name), NULL, 0, 0,
	  "TLS: the name sent (SNI) and verified in the server's certificate, when it differs from the URL's host." },
	{ "REDIS_SENTINEL_PASSWORD", "redis-sentinel-password", T_SECRET, F(redis_sentinel_password), NULL, 0, 0,
	  "Sentinel: the sentinels' own password (requirepass of sentinel.conf), when they have one." },
	{ "REDIS_MIN_REPLICAS_ACK", "redis-min-replicas-ack", T_INT, F(redis_min_replicas_ack), "0", 0, 16,
	  "An enqueue is acknowledged only once this many replicas have it (WAIT, up to 2 s), so a failover cannot lose an accepted run; 0: the master's word." },
	{ "CONSUMER_NAME", "consumer-name", T_STR, F(consumer_name), NULL, 0, 0,
	  "This consumer's name in the group (default host-pid; stable names are recommended).",
	  check_consumer_name },
	{ "WORKER_CONCURRENCY", "concurrency", T_INT, F(worker_concurrency), "4", 1, 256,
	  "Runs in flight per consumer (worker threads)." },
	{ "WORKER_HTTP_PORT", "http-port", T_INT, F(worker_http_port), "9090", 0, 65535,
	  "Consumer: health and metrics port; 0 turns it off." },
	{ "WORKER_SHUTDOWN_TIMEOUT_MS", "shutdown-timeout-ms", T_INT, F(worker_shutdown_timeout_ms), "25000", 0, 3600000,
	  "On SIGTERM/SIGINT: how long runs in hand may take to finish." },
	{ "REDIS_FALLBACK_AFTER_MS", "redis-fallback-after-ms", T_INT, F(redis_fallback_after_ms), "15000", 0, DAY_MS,
	  "How long Redis may be unreachable before consumers run cycles on their own timer." },
	{ "ORG_CONCURRENCY", "org-concurrency", T_INT, F(org_concurrency), "0", 0, 100000,
	  "Runs of one org in flight at once, across all consumers; 0 = unlimited." },
	{ "ORG_FAIRNESS", "org-fairness", T_BOOL, F(org_fairness), "true", 0, 0,
	  "Redis mode: the orgs with runs waiting take turns (a backlog of one org does not hold up the others). false: one FIFO stream. Redis-less mode is always fair." },
	{ "ORG_RATE_LIMIT", "org-rate-limit", T_RATE, F(org_rate_limit), NULL, 0, 0,
	  "Runs of one org started per period, across all consumers: N/PERIOD (100/1m, 5/1s; N up to "
	  "10000, PERIOD 1ms to 24h). Unset or off: no limit. A run over it waits (no attempt counted)." },
	{ "NOOP_ORG_RATE_LIMIT", "noop-org-rate-limit", T_RATE, F(noop_org_rate_limit), NULL, 0, 0,
	  "ORG_RATE_LIMIT for the noop job's runs only, counted apart (off: none); unset: ORG_RATE_LIMIT." },
	{ "NO_REPLY_SCAN_ORG_RATE_LIMIT", "no-reply-scan-org-rate-limit", T_RATE, F(no_reply_scan_org_rate_limit), NULL, 0, 0,
	  "ORG_RATE_LIMIT for no_reply_scan's runs only, counted apart (off: none); unset: ORG_RATE_LIMIT." },
	{ "META_SPEND_ORG_RATE_LIMIT", "meta-spend-org-rate-limit", T_RATE, F(meta_spend_org_rate_limit), NULL, 0, 0,
	  "ORG_RATE_LIMIT for meta_spend's runs only, counted apart (off: none); unset: ORG_RATE_LIMIT." },
	{ "META_TOKEN_REFRESH_ORG_RATE_LIMIT", "meta-token-refresh-org-rate-limit", T_RATE, F(meta_token_refresh_org_rate_limit), NULL, 0, 0,
	  "ORG_RATE_LIMIT for meta_token_refresh's runs only, counted apart (off: none); unset: ORG_RATE_LIMIT." },
	{ "API_TOKEN", "api-token", T_SECRET, F(api_token), NULL, 0, 0,
	  "Bearer token of the authenticated API endpoints. Unset: they answer 401." },
	{ "JOB_MAX_ATTEMPTS", "max-attempts", T_INT, F(job_max_attempts), "5", 1, 1000,
	  "Attempts before a run is dead." },
	{ "JOB_BACKOFF_BASE_MS", "backoff-base-ms", T_INT, F(job_backoff_base_ms), "1000", 1, DAY_MS,
	  "First retry delay, doubled per attempt, with jitter." },
	{ "JOB_BACKOFF_MAX_MS", "backoff-max-ms", T_INT, F(job_backoff_max_ms), "300000", 1, 30 * DAY_MS,
	  "Longest retry delay." },
	{ "JOB_LEASE_MS", "lease-ms", T_INT, F(job_lease_ms), "30000", 100, DAY_MS,
	  "A run whose consumer has been silent this long is given to another." },
	{ "JOB_HISTORY_RETENTION_MS", "history-retention-ms", T_INT, F(job_history_retention_ms), "604800000", 0, 3650 * DAY_MS,
	  "Finished runs older than this are pruned from job_runs; 0 keeps them forever." },
	{ "JOB_HISTORY", "job-history", T_STR, F(job_history), "all", 0, 0,
	  "all: every run has its row in job_runs. failures (Redis mode): a run gets a row only once an attempt failed, went dead or was cancelled; runs that succeeded at once leave none (counters and job_runner_state as before).",
	  check_job_history },
	{ "REDIS_STREAM_MAX_LEN", "stream-max-len", T_INT, F(redis_stream_max_len), "1000000", 1000, 1000000000,
	  "Entries kept in the run stream once processed (pending entries are never trimmed)." },
	{ "HTTP_MAX_BODY_BYTES", "http-max-body-bytes", T_INT, F(http_max_body_bytes), "1048576", 1024, 64LL << 20,
	  "Largest request body accepted (413 beyond)." },
	{ "HTTP_MAX_CONNECTIONS", "http-max-connections", T_INT, F(http_max_connections), "512", 1, 100000,
	  "Concurrent HTTP connections accepted, on each HTTP port (API and health); past it only liveness is answered." },
	{ "HTTP_TIMEOUT_MS", "http-timeout-ms", T_INT, F(http_timeout_ms), "30000", 1000, 3600000,
	  "Idle time after which an HTTP connection is closed." },
	{ "HTTP_MAX_CONNECTIONS_PER_IP", "http-max-connections-per-ip", T_INT, F(http_max_connections_per_ip), "64", 0, 100000,
	  "Concurrent HTTP connections from one client address, on the API and on the consumer's health port; 0 = no limit (behind a proxy that shares one address)." },
	{ "HTTP_BIND_ADDRESS", "http-bind-address", T_STR, F(http_bind_address), "0.0.0.0", 0, 0,
	  "Address both HTTP ports listen on (IPv4 or IPv6 literal); 0.0.0.0 suits containers, 127.0.0.1 keeps a host-run process local." },
	{ "JOBRUNNER_ENV", "jobrunner-env", T_STR, F(jobrunner_env), NULL, 0, 0,
	  "development allows the documented development API token " CONFIG_DEV_TOKEN "; anything else refuses it." },
	{ "DASHBOARD_ENABLED", "dashboard-enabled", T_BOOL, F(dashboard_enabled), "true", 0, 0,
	  "Producer: serve the web dashboard at /dashboard (and accept its session cookie on the API)." },
	{ "DASHBOARD_SESSION_TTL_MS", "dashboard-session-ttl-ms", T_INT, F(dashboard_session_ttl_ms), "43200000", 60000, 30 * DAY_MS,
	  "How long a dashboard login lasts (the session cookie's lifetime)." },

	/* ---- jobs ---- */
	{ "META_SPEND_INTERVAL_MS", "meta-spend-interval-ms", T_INT, F(meta_spend_interval_ms), "3600000", 0, 365 * DAY_MS,
	  "Minimum time between two cycle runs of meta_spend." },
	{ "META_TOKEN_REFRESH_INTERVAL_MS", "meta-token-refresh-interval-ms", T_INT, F(meta_token_refresh_interval_ms), "86400000", 0, 365 * DAY_MS,
	  "Minimum time between two cycle runs of meta_token_refresh." },
	{ "META_GRAPH_URL", "meta-graph-url", T_URL, F(meta_graph_url), "https://graph.facebook.com/v21.0", 0, 0,
	  "Base URL of the Meta Graph API.", check_http_url },
	{ "META_APP_ID", "meta-app-id", T_STR, F(meta_app_id), NULL, 0, 0,
	  "Meta app id (token exchange)." },
	{ "META_APP_SECRET", "meta-app-secret", T_SECRET, F(meta_app_secret), NULL, 0, 0,
	  "Meta app secret (token exchange, appsecret_proof)." },
	{ "META_SPEND_LOOKBACK_DAYS", "meta-spend-lookback-days", T_INT, F(meta_spend_lookback_days), "3", 1, 90,
	  "Days of daily spend fetched per sync." },
	{ "META_TOKEN_REFRESH_WINDOW_MS", "meta-token-refresh-window-ms", T_INT, F(meta_token_refresh_window_ms), "604800000", 0, 365 * DAY_MS,
	  "Tokens expiring within this window are exchanged." },
	{ "META_HTTP_TIMEOUT_MS", "meta-http-timeout-ms", T_INT, F(meta_http_timeout_ms), "30000", 100, 600000,
	  "Total timeout of one Graph API request." },
	{ "NO_REPLY_THRESHOLD_MS", "no-reply-threshold-ms", T_INT, F(no_reply_threshold_ms), "86400000", 0, 365 * DAY_MS,
	  "A conversation awaits a reply once its last inbound message is this old." },

	/* ---- operations ---- */
	{ "LOG_LEVEL", "log-level", T_LEVEL, F(log_level), "info", 0, 0,
	  "debug, info, warn or error." },
	{ "LOG_FORMAT", "log-format", T_FORMAT, F(log_format), "json", 0, 0,
	  "json (one object per line) or text." },
	{ "STARTUP_TIMEOUT_MS", "startup-timeout-ms", T_INT, F(startup_timeout_ms), "30000", 0, 3600000,
	  "How long start-up waits for PostgreSQL (and Redis) before exit 3." },
	{ "JOB_RUNNER_LOCK_KEY", "lock-key", T_INT, F(job_runner_lock_key), "1785684594", INT64_MIN, I64MAX,
	  "The cycle's advisory-lock key (pg_try_advisory_lock(bigint)); must match the legacy monolith's." },

	/* ---- flags without a variable ---- */
	{ NULL, "migrate-only", T_BOOL, F(migrate_only), "false", 0, 0,
	  "Apply database migrations and exit." },
};
#pragma GCC diagnostic pop

/* ------------------------------------------------------------------ */
/* setting one value                                                   */
/* ------------------------------------------------------------------ */

static void set_str(struct config *cfg, size_t off, const char *v)
{
	char **p = (char **)((char *)cfg + off);
	free(*p);
	*p = xstrdup(v);
}

/* Parses v into the row's field: 0, or -1 with a message naming `who`. */
static int set_value(struct config *cfg, const struct crow *r, const char *who, const char *v,
		     char *err, size_t errlen)
{
	char *base = (char *)cfg;
	int b;
	int64_t n;
	switch (r->type) {
	case T_STR:
	case T_SECRET:
	case T_URL:
		if (strlen(v) > 4096) {
			snprintf(err, errlen, "%s is too long (over 4096 bytes)", who);
			return -1;
		}
		if (r->check && r->check(v, who, err, errlen))
			return -1;
		if (r->type == T_URL && !r->check && strncmp(v, "redis://", 8) &&
		    strncmp(v, "http://", 7) && strncmp(v, "https://", 8)) {
			snprintf(err, errlen, "invalid %s: expected a URL (redis://, http:// or https://)", who);
			return -1;
		}
		set_str(cfg, r->off, v);
		return 0;
	case T_INT:
		if (parse_i64(v, r->min, r->max, &n)) {
			snprintf(err, errlen, "invalid %s=%s: expected a whole number from %lld to %lld",
				 who, v, (long long)r->min, (long long)r->max);
			return -1;
		}
		*(int64_t *)(base + r->off) = n;
		return 0;
	case T_BOOL:
		if (parse_bool(v, &b)) {
			snprintf(err, errlen, "invalid %s=%s: expected 1/0/true/false/yes/no/on/off", who, v);
			return -1;
		}
		*(int *)(base + r->off) = b;
		return 0;
	case T_MODE:
		if (parse_bool(v, &b)) {
			snprintf(err, errlen, "invalid %s=%s: expected 0 (API) or 1 (worker)", who, v);
			return -1;
		}
		*(int *)(base + r->off) = b;
		return 0;
	case T_LEVEL:
		if (log_parse_level(v, &b)) {
			snprintf(err, errlen, "invalid %s=%s: expected debug, info, warn or error", who, v);
			return -1;
		}
		*(int *)(base + r->off) = b;
		return 0;
	case T_RATE:
		if (config_parse_rate(v, (struct config_rate *)(base + r->off))) {
			snprintf(err, errlen, "invalid %s=%.40s: expected N/PERIOD (e.g. 100/1m, 5/1s; N 1 to %d, "
				 "PERIOD 1ms to 24h, units ms s m h) or off", who, v, CONFIG_RATE_MAX_N);
			return -1;
		}
		return 0;
	case T_FORMAT:
		if (log_parse_format(v, &b)) {
			snprintf(err, errlen, "invalid %s=%s: expected json or text", who, v);
			return -1;
		}
		*(int *)(base + r->off) = b;
		return 0;
	}
	return -1;
}

static const struct crow *find_flag(const char *name, size_t len)
{
	for (size_t i = 0; i < JR_ARRAY_LEN(rows); i++)
		if (strlen(rows[i].flag) == len && !strncmp(rows[i].flag, name, len))
			return &rows[i];
	return NULL;
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

int config_load(struct config *cfg, enum config_role role, int argc, char **argv,
		char *err, size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->role = role;
	cfg->worker_mode = -1;
	cfg->job_runner_enabled = -1;
	err[0] = '\0';

	/* defaults */
	for (size_t i = 0; i < JR_ARRAY_LEN(rows); i++)
		if (rows[i].dflt && set_value(cfg, &rows[i], rows[i].flag, rows[i].dflt, err, errlen))
			return CONFIG_ERR;   /* a bad default is a bug; the message says which */

	/* environment */
	for (size_t i = 0; i < JR_ARRAY_LEN(rows); i++) {
		const char *v = rows[i].env ? getenv(rows[i].env) : NULL;
		if (v && *v && set_value(cfg, &rows[i], rows[i].env, v, err, errlen))
			return CONFIG_ERR;
	}

	/* flags, up to the first positional argument */
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (strncmp(a, "--", 2))
			break;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			config_usage(stdout, role);
			return CONFIG_HELP;
		}
		if (!strcmp(a, "--print-config-reference")) {
			config_reference(stdout);
			return CONFIG_HELP;
		}
		const char *name = a + 2;
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const struct crow *r = find_flag(name, len);
		if (!r) {
			snprintf(err, errlen, "unknown option --%.*s (see --help)", (int)(len > 64 ? 64 : len), name);
			return CONFIG_ERR;
		}
		const char *v = eq ? eq + 1 : NULL;
		if (!v && r->type == T_BOOL) {
			v = "true";
		} else if (!v) {
			if (i + 1 >= argc) {
				snprintf(err, errlen, "option --%s needs a value", r->flag);
				return CONFIG_ERR;
			}
			v = argv[++i];
		}
		char who[80];
		snprintf(who, sizeof who, "--%s", r->flag);
		if (set_value(cfg, r, who, v, err, errlen))
			return CONFIG_ERR;
	}
	cfg->nargs = argc - i;
	cfg->args = argv + i;

	/* roles (docs/operations.md, "Mode matrix") */
	if (role == ROLE_PRODUCER && cfg->worker_mode == 1) {
		snprintf(err, errlen, "WORKER_MODE=1 is the worker's mode: run the `consumer` binary "
			 "(the producer is the API, WORKER_MODE=0 or unset)");
		return CONFIG_ERR;
	}
	if (role == ROLE_CONSUMER && cfg->worker_mode == 0) {
		snprintf(err, errlen, "WORKER_MODE=0 is the API's mode: run the `producer` binary "
			 "(the consumer is the worker, WORKER_MODE=1 or unset)");
		return CONFIG_ERR;
	}
	if (cfg->job_runner_enabled < 0)
		cfg->job_runner_enabled = role == ROLE_CONSUMER;
	cfg->drain_once = cfg->worker_run_once;
	if (cfg->job_backoff_max_ms < cfg->job_backoff_base_ms) {
		snprintf(err, errlen, "invalid JOB_BACKOFF_MAX_MS=%lld: less than JOB_BACKOFF_BASE_MS=%lld",
			 (long long)cfg->job_backoff_max_ms, (long long)cfg->job_backoff_base_ms);
		return CONFIG_ERR;
	}
	if (!cfg->consumer_name) {
		char host[64] = "host";
		gethostname(host, sizeof host - 1);
		host[sizeof host - 1] = '\0';
		cfg->consumer_name = xasprintf("%s-%d", host, (int)getpid());
	}
	if (cfg->api_token && strlen(cfg->api_token) < CONFIG_MIN_TOKEN_LEN) {
		snprintf(err, errlen, "invalid API_TOKEN: shorter than %d characters (use a long random "
			 "value, e.g. openssl rand -hex 32)", CONFIG_MIN_TOKEN_LEN);
		return CONFIG_ERR;
	}
	if (cfg->api_token && !strcmp(cfg->api_token, CONFIG_DEV_TOKEN) &&
	    !(cfg->jobrunner_env && !strcmp(cfg->jobrunner_env, "development"))) {
		snprintf(err, errlen, "invalid API_TOKEN: the documented development token is refused "
			 "unless JOBRUNNER_ENV=development");
		return CONFIG_ERR;
	}
	{
		unsigned char a[16];
		if (inet_pton(AF_INET, cfg->http_bind_address, a) != 1 &&
		    inet_pton(AF_INET6, cfg->http_bind_address, a) != 1) {
			snprintf(err, errlen, "invalid HTTP_BIND_ADDRESS=%.64s: expected an IPv4 or IPv6 "
				 "address (0.0.0.0, 127.0.0.1, ::)", cfg->http_bind_address);
			return CONFIG_ERR;
		}
	}
	if (!cfg->database_url) {
		snprintf(err, errlen, "DATABASE_URL is required (postgresql://user:password@host:port/db)");
		return CONFIG_ERR;
	}
	/* libpq's own parser; its message may quote the string, so it is not shown */
	const char *dsn_var[2] = { "DATABASE_URL", "DATABASE_DIRECT_URL" };
	const char *dsn_val[2] = { cfg->database_url, cfg->database_direct_url };
	for (int d = 0; d < 2; d++) {
		PQconninfoOption *o = dsn_val[d] ? PQconninfoParse(dsn_val[d], NULL) : NULL;
		if (dsn_val[d] && !o) {
			snprintf(err, errlen, "invalid %s: not a PostgreSQL URL or key=value connection string "
				 "(the value is not shown: it may hold a password)", dsn_var[d]);
			return CONFIG_ERR;
		}
		PQconninfoFree(o);
	}
	return CONFIG_OK;
}

void config_free(struct config *cfg)
{
	for (size_t i = 0; i < JR_ARRAY_LEN(rows); i++) {
		if (rows[i].type == T_STR || rows[i].type == T_SECRET || rows[i].type == T_URL) {
			char **p = (char **)((char *)cfg + rows[i].off);
			free(*p);
			*p = NULL;
		}
	}
	free(cfg->consumer_name);
	cfg->consumer_name = NULL;
}

int config_parse_rate(const char *v, struct config_rate *out)
{
	if (!strcmp(v, "off") || !strcmp(v, "none")) {
		out->n = -1;
		out->period_ms = 0;
		return 0;
	}
	const char *slash = strchr(v, '/');
	char num[24];
	if (!slash || slash == v || (size_t)(slash - v) >= sizeof num)
		return -1;
	memcpy(num, v, (size_t)(slash - v));
	num[slash - v] = '\0';
	int64_t n, k = 1;
	if (parse_i64(num, 1, CONFIG_RATE_MAX_N, &n))
		return -1;
	const char *p = slash + 1, *u = p;
	while (*u >= '0' && *u <= '9')
		u++;
	if (u != p) {
		if ((size_t)(u - p) >= sizeof num)
			return -1;
		memcpy(num, p, (size_t)(u - p));
		num[u - p] = '\0';
		if (parse_i64(num, 1, DAY_MS, &k))
			return -1;
	}
	int64_t unit = !strcmp(u, "ms") ? 1 : !strcmp(u, "s") ? 1000 : !strcmp(u, "m") ? 60000
		     : !strcmp(u, "h") ? 3600000 : 0;
	if (!unit || k > DAY_MS / unit)
		return -1;
	out->n = n;
	out->period_ms = k * unit;
	return 0;
}

const struct config_rate *config_org_rate(const struct config *cfg, const char *job, int *own)
{
	static const struct { const char *job; size_t off; } per_job[] = {
		{ "noop", F(noop_org_rate_limit) },
		{ "no_reply_scan", F(no_reply_scan_org_rate_limit) },
		{ "meta_spend", F(meta_spend_org_rate_limit) },
		{ "meta_token_refresh", F(meta_token_refresh_org_rate_limit) },
	};
	*own = 0;
	for (size_t i = 0; job && i < JR_ARRAY_LEN(per_job); i++) {
		const struct config_rate *r = (const struct config_rate *)((const char *)cfg + per_job[i].off);
		if (strcmp(job, per_job[i].job) || r->n == 0)
			continue;
		*own = 1;
		return r->n > 0 ? r : NULL;
	}
	return cfg->org_rate_limit.n > 0 ? &cfg->org_rate_limit : NULL;
}

static const char *type_hint(const struct crow *r)
{
	switch (r->type) {
	case T_INT: return "N";
	case T_BOOL: return "BOOL";
	case T_MODE: return "0|1";
	case T_LEVEL: return "LEVEL";
	case T_FORMAT: return "json|text";
	case T_URL: return "URL";
	case T_RATE: return "N/PERIOD";
	default: return "TEXT";
	}
}

static const char *shown_default(const struct crow *r, enum config_role role)
{
	if (r->off == F(job_runner_enabled))
		return role == ROLE_CONSUMER ? "true" : "false";
	if (r->off == F(consumer_name))
		return "<host>-<pid>";
	return r->dflt;
}

void config_usage(FILE *f, enum config_role role)
{
	if (role == ROLE_PRODUCER)
		fprintf(f, "usage: producer [OPTIONS]                       serve the HTTP API and enqueue ticks\n"
			   "       producer [OPTIONS] enqueue JOB [--org ID] [--payload JSON] [--count N]\n"
			   "                                 [--idempotency-key K] [--run-at ISO-8601 | --delay-ms N]\n"
			   "       producer [OPTIONS] runs list [--job J] [--org ID] [--status S] [--since T]\n"
			   "                                 [--until T] [--limit N] [--cursor C] [--json]\n"
			   "                                 | show ID | cancel ID | retry ID [--json]\n"
			   "                                 | retry --dead [--job J] [--org ID] [--since T] [--limit N]\n"
			   "       producer [OPTIONS] pause JOB [--json]      stop starting JOB's runs (resume JOB: again)\n"
			   "       producer [OPTIONS] resume JOB [--json]\n"
			   "       producer [OPTIONS] --migrate-only\n");
	else
		fprintf(f, "usage: consumer [OPTIONS]                       claim and run work\n"
			   "       consumer [OPTIONS] --drain-once          run everything due now, then exit\n"
			   "       consumer [OPTIONS] --migrate-only\n");
	fprintf(f, "\nEvery option can also be set by its environment variable; the option wins.\n"
		   "Exit codes: 0 ok, 1 a --drain-once run failed, 2 bad configuration or usage,\n"
		   "3 a dependency was unreachable at start-up.\n\nOptions:\n");
	for (size_t i = 0; i < JR_ARRAY_LEN(rows); i++) {
		const struct crow *r = &rows[i];
		char left[96];
		snprintf(left, sizeof left, "--%s=%s", r->flag, type_hint(r));
		fprintf(f, "  %-40s %s\n", left, r->help);
		const char *d = shown_default(r, role);
		if (r->env)
			fprintf(f, "  %-40s   env %s, default %s\n", "", r->env, d ? d : "unset");
		else
			fprintf(f, "  %-40s   default %s\n", "", d ? d : "unset");
	}
	fprintf(f, "  %-40s %s\n", "--help", "Print this help and exit.");
}

/* Prints s as the text of one Markdown table cell: '|' would end the cell. */
static void md_cell(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '|')
			fputc('\\', f);
		fputc(*s, f);
	}
}

void config_reference(FILE *f)
{
	fprintf(f, "# Configuration reference\n\n"
		   "Generated from the configuration table in `common/config.c` by "
		   "`producer --print-config-reference`; do not edit by hand.\n"
		   "Each variable can also be given as the option of the same meaning "
		   "(the option wins). An empty variable counts as unset. Invalid values stop "
		   "start-up with exit code 2 and a message naming the variable.\n\n"
		   "| variable | option | type | default | range | meaning |\n"
		   "|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < JR_ARRAY_LEN(rows); i++) {
		const struct crow *r = &rows[i];
		char range[64] = "";
		if (r->type == T_INT)
			snprintf(range, sizeof range, "%lld – %lld", (long long)r->min, (long long)r->max);
		const char *d = r->off == F(job_runner_enabled) ? "false (producer), true (consumer)"
							  : shown_default(r, ROLE_CONSUMER);
		fprintf(f, "| %s%s%s | `--%s` | ",
			r->env ? "`" : "", r->env ? r->env : "—", r->env ? "`" : "", r->flag);
		md_cell(f, type_hint(r));
		fprintf(f, " | %s%s%s | %s | ", d ? "`" : "", d ? d : "unset", d ? "`" : "", range);
		md_cell(f, r->help);
		fprintf(f, " |\n");
	}
}

void config_redact_url(const char *url, char *out, size_t outlen)
{
	url_redact(url, out, outlen);
}

/* Registers the password of a URL with the logger, as written and decoded. */
static void register_url_password(const char *url)
{
	char raw[512], dec[512];
	if (!url_password(url, raw, sizeof raw, dec, sizeof dec))
		return;
	if (strlen(raw) >= 4)
		log_add_secret(raw);
	if (strlen(dec) >= 4 && strcmp(dec, raw))
		log_add_secret(dec);
	explicit_bzero(raw, sizeof raw);
	explicit_bzero(dec, sizeof dec);
}

void config_register_secrets(const struct config *cfg)
{
	log_add_secret(cfg->api_token);
	log_add_secret(cfg->meta_app_secret);
	log_add_secret(cfg->redis_sentinel_password);
	db_register_secrets(cfg->database_url);
	db_register_secrets(cfg->database_direct_url);
	register_url_password(cfg->redis_url);
}
