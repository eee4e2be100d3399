/* consumer -- the worker process: claims and runs work (docs/architecture.md, "Processes").
 *
 *   consumer                 claim and run until SIGTERM/SIGINT
 *   consumer --drain-once    everything due now (one cycle included), then exit
 *   consumer --migrate-only  apply migrations and exit
 *
 * With JOB_RUNNER_ENABLED=false it claims nothing and only serves its
 * health and metrics port (debugging).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "consumer.h"
#include "jrmetrics.h"
#include "config.h"
#include "db.h"
#include "log.h"
#include "queue.h"
#include "util.h"
#include "worker.h"

static int shutdown_worker(struct config *cfg, struct worker *w, int sig)
{
	worker_stop(w);   /* first: nothing is claimed once the line below is out */
	LOGF(LOG_INFO, "shutdown", "signal received: finishing runs in hand",
	     LF_S("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"),
	     LF_I("timeoutMs", cfg->worker_shutdown_timeout_ms));
	struct worker_counts c;
	if (worker_join(w, cfg->worker_shutdown_timeout_ms, &c)) {
		worker_abort(w);
		if (worker_join(w, 2000, &c)) {
			LOGF(LOG_WARN, "shutdown_timeout", "runs still in hand at the shutdown deadline; "
			     "they will be retried after their lease", LF_I("timeoutMs", cfg->worker_shutdown_timeout_ms));
			_exit(EXIT_OK);   /* threads still hold the configuration: do not free it */
		}
	}
	LOGF(LOG_INFO, "stopped", "consumer stopped", LF_I("succeeded", (int64_t)c.succeeded),
	     LF_I("retried", (int64_t)c.retried), LF_I("dead", (int64_t)c.dead));
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	struct config cfg;
	struct db db;
	struct health *health = NULL;
	sigset_t sigs;
	int rc;
	if (app_init(&cfg, ROLE_CONSUMER, argc, argv, &rc))
		goto out_cfg;
	if (cfg.nargs > 0) {
		fprintf(stderr, "consumer: unexpected argument '%s' (see --help)\n", cfg.args[0]);
		rc = EXIT_USAGE;
		goto out_cfg;
	}
	app_signals_block(&sigs);
	if (app_database(&cfg, &db, "jobrunner-consumer", &rc))
		goto out_db;
	if (cfg.migrate_only) {
		rc = EXIT_OK;
		goto out_db;
	}
	db_close(&db);   /* the worker threads open their own */
	jrm_init();
	app_log_connection_budget(&cfg, ROLE_CONSUMER);
	if (app_redis_startup(&cfg, cfg.consumer_name, &rc))
		goto out_db;

	if (cfg.worker_http_port > 0 && !cfg.drain_once) {
		char herr[256];
		health = health_start(&cfg, herr, sizeof herr);
		if (!health) {
			LOGF(LOG_ERROR, "startup_failed", "cannot serve the health port",
			     LF_I("port", cfg.worker_http_port), LF_S("error", herr));
			rc = EXIT_USAGE;
			goto out_db;
		}
	}

	if (!cfg.job_runner_enabled) {
		LOGF(LOG_WARN, "job_runner_disabled", "JOB_RUNNER_ENABLED=false: this consumer claims nothing",
		     LF_S("consumer", cfg.consumer_name));
		while (!app_signals_wait(&sigs, 1000))
			;
		rc = EXIT_OK;
		goto out_db;
	}

	LOGF(LOG_INFO, "job_runner_started", "Starting job runner in WORKER mode",
	     LF_S("consumer", cfg.consumer_name), LF_I("concurrency", cfg.worker_concurrency),
	     LF_S("queueBackend", cfg.redis_url ? "redis" : "postgres"),
	     LF_I("intervalMs", cfg.job_runner_interval_ms), LF_S("drainOnce", cfg.drain_once ? "true" : "false"));

	struct worker *w;
	char err[256];
	if (worker_start(&cfg, cfg.drain_once, &w, err, sizeof err)) {
		LOGF(LOG_ERROR, "startup_failed", "cannot start the worker", LF_S("error", err));
		worker_join(w, -1, NULL);
		rc = EXIT_UNREACHABLE;
		goto out_db;
	}
	health_set_worker(health, w);
	if (cfg.drain_once) {
		struct worker_counts c;
		for (;;) {
			if (worker_join(w, 200, &c) == 0)
				break;
			int sig = app_signals_wait(&sigs, 0);
			if (sig) {
				health_set_worker(health, NULL);
				rc = shutdown_worker(&cfg, w, sig);
				goto out_db;
			}
		}
		LOGF(LOG_INFO, "drain_complete", "drain-once finished", LF_I("claimed", (int64_t)c.claimed),
		     LF_I("succeeded", (int64_t)c.succeeded), LF_I("retried", (int64_t)c.retried),
		     LF_I("dead", (int64_t)c.dead), LF_I("cycles", (int64_t)c.cycles));
		rc = c.runs_failed_total ? EXIT_RUN_FAILED : EXIT_OK;
		if (c.claim_failures) {
			LOGF(LOG_ERROR, "drain_incomplete", "drain-once could not claim from Redis: runs it "
			     "holds were not drained", LF_I("failedClaims", (int64_t)c.claim_failures));
			rc = EXIT_UNREACHABLE;
		}
		goto out_db;
	}
	int sig;
	while (!(sig = app_signals_wait(&sigs, 1000)))
		;
	health_set_worker(health, NULL);
	rc = shutdown_worker(&cfg, w, sig);
out_db:
	health_stop(health);
	db_release(&db);
out_cfg:
	config_free(&cfg);
	return rc;
}
