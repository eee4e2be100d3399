/* probe.h -- dependency checks refreshed in the background, for readiness,
 * /api/health/extended and the queue depth of /metrics.
 *
 * A probe thread pings PostgreSQL (and Redis in Redis mode) and reads the
 * queue counts about once a second, on its own connections, every database
 * call with a client-side timeout (db.h).  HTTP handlers only read what it
 * found, under a mutex that is never held across I/O: an answer never waits
 * for a dependency, so a stalled PostgreSQL or Redis cannot hang a request
 * thread.  When a check has been under way for longer than PROBE_BUDGET_MS
 * it is reported failed ("database check timed out") without waiting for it.
 *
 * Readiness also fails while PostgreSQL refuses new connections: any
 * connection of the process (db.c counts them) failed to connect with
 * "too many clients" within the last PROBE_REFUSED_WINDOW_MS.
 */
#ifndef JOBRUNNER_COMMON_PROBE_H
#define JOBRUNNER_COMMON_PROBE_H

#include <cjson/cJSON.h>
#include <stdint.h>

struct config;
struct metrics_emitter;
struct probe;

#define PROBE_EVERY_MS 1000
#define PROBE_BUDGET_MS 1500
#define PROBE_TIMEOUT_MS 2000
#define PROBE_REFUSED_WINDOW_MS 15000

/* Starts the probe thread; name is used for the queue handles. */
struct probe *probe_start(const struct config *cfg, const char *name);
void probe_stop(struct probe *p);

/* Fills checks with "database" (and "redis" in Redis mode) check objects
 * (httpd_check_for(): the error's category unless req carries the API
 * token); returns 1 when all are ok, *redis_ok (may be NULL) says whether
 * the Redis check is (1 in Redis-less mode).  Redis is checked as a
 * writable master (rconn_check_master()).  Right after the start it
 * waits (up to PROBE_BUDGET_MS) for the first results; never otherwise. */
struct httpd_request;
int probe_checks(struct probe *p, const struct httpd_request *req, cJSON *checks, int *redis_ok);
/* A jrm_queue_depth_source() callback (ctx: the probe): the last counts read. */
void probe_queue_depth(void *ctx, struct metrics_emitter *emit);

#endif
