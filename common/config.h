/* config.h -- the configuration table: environment variables and flags.
 *
 * Every setting is one row of the table in config.c: name of the variable,
 * its flag, type, bounds, default and the field of struct config it fills.
 * One parser walks the table for the environment and then the command line
 * (a flag overrides its variable); --help and docs/configuration.md are
 * printed from the same table, so they cannot drift from the code.
 *
 * Invalid values never fall back to a default: config_load() returns
 * CONFIG_ERR (exit code 2) with a message naming the variable and value.
 */
#ifndef JOBRUNNER_COMMON_CONFIG_H
#define JOBRUNNER_COMMON_CONFIG_H

#include <stdint.h>
#include <stdio.h>

enum config_role { ROLE_PRODUCER = 0, ROLE_CONSUMER = 1 };

/* Exit codes shared by both binaries (docs/operations.md, "Exit codes"). */
enum {
	EXIT_OK = 0,
	EXIT_RUN_FAILED = 1,      /* --drain-once finished, some run failed */
	EXIT_USAGE = 2,           /* bad configuration or usage */
	EXIT_UNREACHABLE = 3,     /* a dependency was not reachable in STARTUP_TIMEOUT_MS */
};

/* An org rate limit: n runs per period_ms.  n 0: unset; -1: off. */
#define CONFIG_RATE_MAX_N 10000
struct config_rate {
	int64_t n;
	int64_t period_ms;
};

struct config {
	enum config_role role;

	/* the legacy worker's variables */
	char *node_env;
	int64_t port;
	char *database_url;
	char *database_direct_url;       /* NULL: DATABASE_URL is a session connection */
	int64_t database_pool_size;      /* connections the jobs of a consumer share */
	int worker_mode;                 /* -1 unset, 0, 1 */
	int job_runner_enabled;          /* resolved against the role's default */
	int64_t job_runner_interval_ms;
	int no_reply_scan_enabled;
	int64_t no_reply_scan_interval_ms;
	int meta_spend_enabled;
	int meta_token_refresh_enabled;
	int worker_run_once;

	/* queue and workers */
	char *redis_url;                 /* NULL: Redis-less mode */
	char *redis_tls_ca_file;         /* NULL: the system's CA store */
	char *redis_tls_cert_file;       /* client certificate, with the key */
	char *redis_tls_key_file;
	char *redis_tls_server_name;     /* NULL: the host of the URL */
	char *redis_sentinel_password;
	int64_t redis_min_replicas_ack;  /* enqueue waits (WAIT) for this many replicas */
	char *consumer_name;             /* default "<host>-<pid>" */
	int64_t worker_concurrency;
	int64_t worker_http_port;        /* 0: off */
	int64_t worker_shutdown_timeout_ms;
	int64_t redis_fallback_after_ms;
	int64_t org_concurrency;         /* 0: unlimited */
	struct config_rate org_rate_limit;              /* n 0: unset */
	struct config_rate noop_org_rate_limit;         /* <JOB>_ORG_RATE_LIMIT */
	struct config_rate no_reply_scan_org_rate_limit;
	struct config_rate meta_spend_org_rate_limit;
	struct config_rate meta_token_refresh_org_rate_limit;
	char *api_token;
	int64_t job_max_attempts;
	int64_t job_backoff_base_ms;
	int64_t job_backoff_max_ms;
	int64_t job_lease_ms;
	int64_t job_history_retention_ms;
	int org_fairness;                /* ORG_FAIRNESS (Redis mode) */
	char *job_history;               /* "all" or "failures" (JOB_HISTORY) */
	int64_t redis_stream_max_len;
	int64_t http_max_body_bytes;
	int64_t http_max_connections;
	int64_t http_timeout_ms;
	int64_t http_max_connections_per_ip;   /* 0: no per-address limit */
	char *http_bind_address;               /* IPv4 or IPv6 literal */
	char *jobrunner_env;                   /* "development" allows CONFIG_DEV_TOKEN */
	int dashboard_enabled;
	int64_t dashboard_session_ttl_ms;

	/* jobs */
	int64_t meta_spend_interval_ms;
	int64_t meta_token_refresh_interval_ms;
	char *meta_graph_url;
	char *meta_app_id;
	char *meta_app_secret;
	int64_t meta_spend_lookback_days;
	int64_t meta_token_refresh_window_ms;
	int64_t meta_http_timeout_ms;
	int64_t no_reply_threshold_ms;

	/* operations */
	int log_level;
	int log_format;
	int64_t startup_timeout_ms;
	int64_t job_runner_lock_key;

	/* flags without a variable */
	int migrate_only;
	int drain_once;                  /* --drain-once or WORKER_RUN_ONCE */

	/* positional arguments left after the flags (e.g. "enqueue noop"),
	 * pointing into argv. */
	int nargs;
	char **args;
};

/* Parses an ORG_RATE_LIMIT value (N/PERIOD, or off: n = -1): 0 or -1. */
int config_parse_rate(const char *v, struct config_rate *out);
/* The org rate limit of job's runs: its <JOB>_ORG_RATE_LIMIT (*own = 1:
 * counted apart from the org's other runs) or ORG_RATE_LIMIT (*own = 0);
 * NULL: no limit. */
const struct config_rate *config_org_rate(const struct config *cfg, const char *job, int *own);

enum { CONFIG_OK = 0, CONFIG_HELP = 1, CONFIG_ERR = -1 };

/* Fills cfg from the environment and argv for a role.  Returns CONFIG_OK,
 * CONFIG_HELP (--help was given: usage printed to stdout) or CONFIG_ERR with
 * a message naming the variable or flag in err.  On any return cfg owns
 * heap strings: release with config_free(). */
int config_load(struct config *cfg, enum config_role role, int argc, char **argv,
		char *err, size_t errlen);
void config_free(struct config *cfg);

/* Prints --help (role's flags with their defaults) to f. */
void config_usage(FILE *f, enum config_role role);
/* Prints the configuration reference (Markdown) for docs/configuration.md. */
void config_reference(FILE *f);

/* The API token of the development set-ups (compose/docker-compose.yml):
 * refused unless JOBRUNNER_ENV=development.  API tokens are at least
 * CONFIG_MIN_TOKEN_LEN characters. */
#define CONFIG_DEV_TOKEN "dev-token-change-me"
#define CONFIG_MIN_TOKEN_LEN 16

/* Registers the secrets of cfg (tokens, passwords in URLs) with the logger. */
void config_register_secrets(const struct config *cfg);

/* Copies url into out with any password replaced by "***". */
void config_redact_url(const char *url, char *out, size_t outlen);

#endif
