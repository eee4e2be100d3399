/* health_answer.h -- the readiness and /metrics answers both binaries give.
 *
 * The producer (/api/health/extended, /metrics on PORT) and the consumer
 * (/health/ready, /metrics on WORKER_HTTP_PORT) answer with the same code;
 * liveness is httpd_ok (httpd.h) on both.  Everything here reads state kept
 * in the background (probe.h for the dependency checks, the metrics
 * registry, the worker's counters): no handler waits for PostgreSQL or
 * Redis.
 */
#ifndef JOBRUNNER_COMMON_HEALTH_ANSWER_H
#define JOBRUNNER_COMMON_HEALTH_ANSWER_H

#include <stdint.h>

struct config;
struct httpd_request;
struct httpd_response;
struct probe;
struct worker;

/* What a readiness answer is made from.  worker_mode 0 (the producer,
 * "mode":"api"): in Redis-less mode a "redis" check that says
 * "configured": false.  worker_mode 1 (the consumer, "mode":"worker"): the
 * consumer's name, and with w (NULL while the job runner is disabled) the
 * worker's run counts and its own view of Redis ("redisReachable"; a
 * failed last claim makes the Redis check fail). */
struct health_source {
	const struct config *cfg;
	struct probe *probe;
	int64_t started_ms;          /* mono_ms() at the start, for "uptimeS" */
	int worker_mode;
	struct worker *w;
};

/* 200 {"status":"ok",...} when every check passes, else 503 "degraded". */
void health_answer_ready(struct httpd_request *req, struct httpd_response *resp,
			 const struct health_source *src);

/* An httpd handler: the process's metrics registry as Prometheus text. */
void health_answer_metrics(struct httpd_request *req, struct httpd_response *resp);

#endif
