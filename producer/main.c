/* producer -- the API process: serves HTTP and enqueues work (docs/architecture.md, "Processes").
 *
 *   producer                              serve the API; tick every interval (Redis mode)
 *   producer enqueue JOB [--org ID] [--payload JSON] [--count N]
 *                    [--run-at ISO-8601 | --delay-ms N]
 *                                         enqueue runs, print one id a line, exit
 *   producer runs list|show|cancel|retry ..., producer pause|resume JOB
 *                                         operator control (cli.c)
 *   producer --migrate-only               apply migrations and exit
 *
 * JOB_RUNNER_ENABLED=true (explicitly) also runs an in-process consumer:
 * the monolith's shape, kept for migrations, not recommended in production.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "config.h"
#include "db.h"
#include "enqueue.h"
#include "log.h"
#include "producer.h"
#include "runreq.h"
#include "util.h"

#include <cjson/cJSON.h>
#include "worker.h"

/* ------------------------------------------------------------------ */
/* producer enqueue                                                    */
/* ------------------------------------------------------------------ */

static int usage_error(const char *what, const char *arg)
{
	fprintf(stderr, "producer enqueue: %s%s%s", what, arg ? " " : "", arg ? arg : "");
	fprintf(stderr, "\nusage: producer enqueue JOB [--org ID] [--payload JSON] [--count N] [--idempotency-key K]\n"
			"                        [--run-at ISO-8601 | --delay-ms N]\n");
	return EXIT_USAGE;
}

static int cmd_enqueue(struct config *cfg, int argc, char **argv)
{
	const char *job = NULL, *org = NULL, *payload = NULL, *idem = NULL, *run_at = NULL, *delay = NULL;
	int64_t count = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **slot = !strcmp(a, "--org") ? &org : !strcmp(a, "--payload") ? &payload
				  : !strcmp(a, "--idempotency-key") ? &idem : !strcmp(a, "--run-at") ? &run_at
				  : !strcmp(a, "--delay-ms") ? &delay : NULL;
		if (slot || !strcmp(a, "--count")) {
			if (i + 1 >= argc)
				return usage_error("missing value for", a);
			if (slot) {
				*slot = argv[++i];
			} else if (parse_i64(argv[++i], 1, 100000000, &count)) {
				return usage_error("--count must be a whole number from 1 to 100000000, not", argv[i]);
			}
		} else if (a[0] == '-') {
			return usage_error("unknown option", a);
		} else if (!job) {
			job = a;
		} else {
			return usage_error("unexpected argument", a);
		}
	}
	if (!job)
		return usage_error("missing JOB", NULL);
	if (idem && count > 1)
		return usage_error("--idempotency-key cannot be combined with --count", NULL);
	if (run_at && delay)
		return usage_error("--run-at and --delay-ms: give one of them, not both", NULL);
	int64_t run_at_ms = 0;
	if (run_at || delay) {
		/* the API's rules (runreq_when), on the option's value as JSON */
		char why[200];
		cJSON *v = run_at ? cJSON_CreateString(run_at) : cJSON_Parse(delay);
		int bad = !v || runreq_when(v, run_at != NULL, wall_ms(), &run_at_ms, why, sizeof why);
		cJSON_Delete(v);
		if (bad)
			return usage_error(run_at ? "bad --run-at:" : "bad --delay-ms:", run_at ? run_at : delay);
	}

	struct run proto = { .job = (char *)job, .org_id = (char *)org, .payload = (char *)payload,
			     .idempotency_key = (char *)idem, .source = RUN_SRC_ADHOC, .run_at_ms = run_at_ms };
	int not_found;
	char err[512];
	if (enqueue_validate(&proto, &not_found, err, sizeof err)) {
		fprintf(stderr, "producer enqueue: %s\n", err);
		return EXIT_USAGE;
	}
	struct db db;
	int rc;
	int down = app_database(cfg, &db, "jobrunner-producer", &rc);
	db_release(&db);
	if (down)
		return rc;
	if (app_redis_startup(cfg, "producer-cli", &rc))
		return rc;

	struct enqueuer e;
	enqueuer_init(&e, cfg, "producer-cli");
	size_t chunk = count < ENQ_MAX_BATCH ? (size_t)count : ENQ_MAX_BATCH;
	struct run *runs = xcalloc(chunk, sizeof *runs);
	struct strbuf out = STRBUF_INIT;
	rc = EXIT_OK;
	for (int64_t done = 0; done < count;) {
		size_t n = (size_t)(count - done) < chunk ? (size_t)(count - done) : chunk;
		for (size_t i = 0; i < n; i++) {
			runs[i] = proto;
			runs[i].id[0] = '\0';
		}
		const char *backend;
		int qrc = enqueuer_submit(&e, runs, n, &backend, err, sizeof err);
		if (qrc) {
			fprintf(stderr, "producer enqueue: %s\n", err);
			rc = qrc == QUEUE_EINVAL ? EXIT_USAGE : EXIT_UNREACHABLE;
			break;
		}
		sb_reset(&out);
		for (size_t i = 0; i < n; i++) {
			sb_add(&out, runs[i].id, strlen(runs[i].id));
			sb_add(&out, "\n", 1);
		}
		fwrite(out.buf, 1, out.len, stdout);
		done += (int64_t)n;
	}
	fflush(stdout);
	sb_release(&out);
	free(runs);
	enqueuer_release(&e);
	return rc;
}

/* ------------------------------------------------------------------ */
/* serving                                                             */
/* ------------------------------------------------------------------ */

static int serve(struct config *cfg)
{
	sigset_t sigs;
	struct db db;
	app_signals_block(&sigs);
	int rc;
	int down = app_database(cfg, &db, "jobrunner-producer", &rc);
	db_release(&db);
	if (down)
		return rc;
	if (cfg->migrate_only)
		return EXIT_OK;
	app_log_connection_budget(cfg, ROLE_PRODUCER);
	if (app_redis_startup(cfg, cfg->consumer_name, &rc))
		return rc;
	if (!cfg->api_token || !*cfg->api_token)
		LOGF(LOG_WARN, "api_token_missing", "API_TOKEN is not set: the authenticated endpoints answer 401");

	struct worker *w = NULL;
	if (cfg->job_runner_enabled) {
		LOGF(LOG_WARN, "monolith_mode", "JOB_RUNNER_ENABLED=true in the API process: jobs run in-process "
		     "(monolith mode). Not recommended in production: run the consumer binary instead.");
		LOGF(LOG_INFO, "job_runner_started", "Starting job runner in API process (monolith mode)",
		     LF_S("consumer", cfg->consumer_name), LF_I("concurrency", cfg->worker_concurrency));
		char err[256];
		if (worker_start(cfg, 0, &w, err, sizeof err)) {
			LOGF(LOG_ERROR, "startup_failed", "cannot start the in-process worker", LF_S("error", err));
			worker_join(w, -1, NULL);
			return EXIT_UNREACHABLE;
		}
	}
	struct producer_api *api = NULL;
	if (producer_api_start(cfg, w, &api)) {
		rc = EXIT_USAGE;
		goto out;
	}
	struct ticker *tk = ticker_start(cfg);
	LOGF(LOG_INFO, "producer_started", "producer serving", LF_I("port", cfg->port),
	     LF_S("queueBackend", cfg->redis_url ? "redis" : "postgres"),
	     LF_S("jobRunnerEnabled", cfg->job_runner_enabled ? "true" : "false"));
	int sig;
	while (!(sig = app_signals_wait(&sigs, 1000)))
		;
	LOGF(LOG_INFO, "shutdown", "signal received: stopping", LF_S("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
	ticker_stop(tk);
	producer_api_stop(api);
	rc = EXIT_OK;
out:
	if (w) {
		worker_stop(w);
		if (worker_join(w, cfg->worker_shutdown_timeout_ms, NULL)) {
			worker_abort(w);
			if (worker_join(w, 2000, NULL))
				_exit(rc);
		}
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct config cfg;
	int rc;
	if (app_init(&cfg, ROLE_PRODUCER, argc, argv, &rc))
		goto out;
	if (cfg.nargs > 0 && !strcmp(cfg.args[0], "enqueue")) {
		log_set_fd(STDERR_FILENO);   /* standard output holds only run ids */
		rc = cmd_enqueue(&cfg, cfg.nargs, cfg.args);
	} else if (cfg.nargs > 0 && !strcmp(cfg.args[0], "runs")) {
		log_set_fd(STDERR_FILENO);
		rc = cli_runs(&cfg, cfg.nargs, cfg.args);
	} else if (cfg.nargs > 0 && (!strcmp(cfg.args[0], "pause") || !strcmp(cfg.args[0], "resume"))) {
		log_set_fd(STDERR_FILENO);
		rc = cli_pause(&cfg, cfg.nargs, cfg.args, !strcmp(cfg.args[0], "pause"));
	} else if (cfg.nargs > 0) {
		fprintf(stderr, "producer: unknown command '%s' (see --help)\n", cfg.args[0]);
		rc = EXIT_USAGE;
	} else {
		rc = serve(&cfg);
	}
out:
	config_free(&cfg);
	return rc;
}
