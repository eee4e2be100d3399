/* health_answer.c -- the readiness and /metrics answers of both binaries
 * (see health_answer.h). */
#include "health_answer.h"

#include <cjson/cJSON.h>

#include "config.h"
#include "httpd.h"
#include "metrics.h"
#include "probe.h"
#include "util.h"
#include "worker.h"

/* The worker's own view of Redis: a failed last claim fails the Redis
 * check, so that redisReachable agrees with it. */
static void worker_redis_view(const struct httpd_request *req, const struct health_source *src,
			      cJSON *checks, int *ok, int *r_ok)
{
	if (src->cfg->redis_url && *r_ok && !worker_redis_ok(src->w)) {
		*r_ok = *ok = 0;
		cJSON_ReplaceItemInObject(checks, "redis", httpd_check_for(req, "redis", 0, 0,
			"the worker cannot use Redis (its last claim failed)"));
	}
}

static void add_run_counts(cJSON *o, struct worker *w)
{
	struct worker_counts c;
	worker_get_counts(w, &c);
	cJSON *co = cJSON_AddObjectToObject(o, "runs");
	cJSON_AddNumberToObject(co, "claimed", (double)c.claimed);
	cJSON_AddNumberToObject(co, "succeeded", (double)c.succeeded);
	cJSON_AddNumberToObject(co, "retried", (double)c.retried);
	cJSON_AddNumberToObject(co, "dead", (double)c.dead);
	cJSON_AddNumberToObject(co, "reclaimed", (double)c.reclaimed);
}

void health_answer_ready(struct httpd_request *req, struct httpd_response *resp,
			 const struct health_source *src)
{
	const struct config *cfg = src->cfg;
	int worker = src->worker_mode;
	cJSON *checks = cJSON_CreateObject();
	int r_ok = 1;
	int ok = probe_checks(src->probe, req, checks, &r_ok);
	if (worker && src->w)
		worker_redis_view(req, src, checks, &ok, &r_ok);
	if (!worker && !cfg->redis_url) {
		cJSON *r = httpd_check(1, 0, NULL);   /* not used: Redis-less mode */
		cJSON_AddBoolToObject(r, "configured", 0);
		cJSON_AddItemToObject(checks, "redis", r);
	}
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", ok ? "ok" : "degraded");
	cJSON_AddStringToObject(o, "mode", worker ? "worker" : "api");
	if (worker)
		cJSON_AddStringToObject(o, "consumer", cfg->consumer_name);
	cJSON *jr = cJSON_AddObjectToObject(o, "jobRunner");
	cJSON_AddBoolToObject(jr, "enabled", cfg->job_runner_enabled);
	cJSON_AddBoolToObject(jr, "workerMode", worker);
	cJSON_AddStringToObject(o, "queueBackend", cfg->redis_url ? "redis" : "postgres");
	cJSON_AddItemToObject(o, "checks", checks);
	if (worker && src->w)
		add_run_counts(o, src->w);
	/* also before the worker is up: the same value as the Redis check */
	if (worker && cfg->redis_url)
		cJSON_AddBoolToObject(o, "redisReachable", r_ok);
	cJSON_AddStringToObject(o, "version", JR_VERSION);
	cJSON_AddNumberToObject(o, "uptimeS", (double)((mono_ms() - src->started_ms) / 1000));
	httpd_json(resp, ok ? 200 : 503, o);
}

void health_answer_metrics(struct httpd_request *req, struct httpd_response *resp)
{
	(void)req;
	struct strbuf sb = STRBUF_INIT;
	metrics_render(metrics_default(), &sb);
	size_t len = sb.len;
	httpd_body(resp, 200, METRICS_CONTENT_TYPE, sb_detach(&sb), len);
}
