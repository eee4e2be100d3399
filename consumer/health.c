/* health.c -- the consumer's health and metrics port (WORKER_HTTP_PORT).
 *
 *   GET /health        liveness: 200 while the process serves; answered
 *                      from the process alone, never touching a dependency
 *   GET /health/ready  readiness: 503 while PostgreSQL (or Redis, in Redis
 *                      mode) cannot be reached, refuses connections, or its
 *                      check is overdue ("database check timed out"); Redis
 *                      must be a writable master (rconn_check_master) that
 *                      the worker can use too (redisReachable is the same)
 *   GET /metrics       Prometheus text
 *
 * The port is served in every mode, JOB_RUNNER_ENABLED=false included
 * (debugging).  Readiness and the queue depth of /metrics come from the
 * probe thread (probe.h), refreshed in the background on its own
 * connections with client-side timeouts: no handler waits for PostgreSQL
 * or Redis, so a stalled database cannot take the health port down.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "consumer.h"
#include "db.h"
#include "enqueue.h"
#include "httpd.h"
#include "jrmetrics.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "util.h"
#include "worker.h"

struct health {
	const struct config *cfg;
	_Atomic(struct worker *) w;   /* NULL when the job runner is disabled (set by main) */
	struct httpd *srv;
	struct probe *probe;
	int64_t started_ms;
};


static void h_ready(struct httpd_request *req, struct httpd_response *resp)
{
	struct health *h = req->app;
	const struct config *cfg = h->cfg;
	cJSON *checks = cJSON_CreateObject();
	int r_ok = 1;
	int ok = probe_checks(h->probe, req, checks, &r_ok);
	struct worker *w = atomic_load_explicit(&h->w, memory_order_acquire);
	/* and the worker's own view, so that redisReachable agrees */
	if (cfg->redis_url && r_ok && w && !worker_redis_ok(w)) {
		r_ok = ok = 0;
		cJSON_ReplaceItemInObject(checks, "redis", httpd_check_for(req, "redis", 0, 0,
			"the worker cannot use Redis (its last claim failed)"));
	}
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", ok ? "ok" : "degraded");
	cJSON_AddStringToObject(o, "mode", "worker");
	cJSON_AddStringToObject(o, "consumer", cfg->consumer_name);
	cJSON *jr = cJSON_AddObjectToObject(o, "jobRunner");
	cJSON_AddBoolToObject(jr, "enabled", cfg->job_runner_enabled);
	cJSON_AddBoolToObject(jr, "workerMode", 1);
	cJSON_AddStringToObject(o, "queueBackend", cfg->redis_url ? "redis" : "postgres");
	cJSON_AddItemToObject(o, "checks", checks);
	if (w) {
		struct worker_counts c;
		worker_get_counts(w, &c);
		cJSON *co = cJSON_AddObjectToObject(o, "runs");
		cJSON_AddNumberToObject(co, "claimed", (double)c.claimed);
		cJSON_AddNumberToObject(co, "succeeded", (double)c.succeeded);
		cJSON_AddNumberToObject(co, "retried", (double)c.retried);
		cJSON_AddNumberToObject(co, "dead", (double)c.dead);
		cJSON_AddNumberToObject(co, "reclaimed", (double)c.reclaimed);
		if (cfg->redis_url)
			cJSON_AddBoolToObject(o, "redisReachable", r_ok);
	}
	cJSON_AddStringToObject(o, "version", JR_VERSION);
	cJSON_AddNumberToObject(o, "uptimeS", (double)((mono_ms() - h->started_ms) / 1000));
	httpd_json(resp, ok ? 200 : 503, o);
}

static void h_metrics(struct httpd_request *req, struct httpd_response *resp)
{
	struct strbuf sb = STRBUF_INIT;
	metrics_render(metrics_default(), &sb);
	size_t len = sb.len;
	httpd_body(resp, 200, METRICS_CONTENT_TYPE, sb_detach(&sb), len);
}

static const struct httpd_route routes[] = {
	{ "GET", "/health", httpd_ok, HTTPD_LIVENESS },
	{ "GET", "/health/ready", h_ready, 0 },
	{ "GET", "/metrics", h_metrics, 0 },
};

struct health *health_start(const struct config *cfg, char *err, size_t errlen)
{
	struct health *h = xcalloc(1, sizeof *h);
	h->cfg = cfg;
	h->started_ms = mono_ms();
	h->probe = probe_start(cfg, cfg->consumer_name);
	jrm_queue_depth_source(probe_queue_depth, h->probe);
	struct httpd_options opt;
	httpd_options_init(&opt);
	opt.port = (int)cfg->worker_http_port;
	opt.threads = 2;
	/* HTTP_MAX_CONNECTIONS (512) is above one address's share
	 * (HTTP_MAX_CONNECTIONS_PER_IP), so one client cannot fill it; when
	 * many do, /health is still answered */
	opt.max_connections = (unsigned)cfg->http_max_connections;
	opt.per_ip_max_connections = (unsigned)cfg->http_max_connections_per_ip;
	opt.api_token = cfg->api_token;   /* the full error text of /health/ready */
	opt.bind_addr = cfg->http_bind_address;
	opt.conn_timeout_ms = cfg->http_timeout_ms;
	opt.max_body_bytes = 4096;
	if (httpd_start(&opt, routes, JR_ARRAY_LEN(routes), h, &h->srv, err, errlen) < 0) {
		health_stop(h);
		return NULL;
	}
	return h;
}

void health_set_worker(struct health *h, struct worker *w)
{
	if (h)
		atomic_store_explicit(&h->w, w, memory_order_release);
}

void health_stop(struct health *h)
{
	if (!h)
		return;
	httpd_stop(h->srv);
	probe_stop(h->probe);
	free(h);
}
