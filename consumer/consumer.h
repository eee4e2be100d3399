/* consumer.h -- the consumer's parts. */
#ifndef JOBRUNNER_CONSUMER_CONSUMER_H
#define JOBRUNNER_CONSUMER_CONSUMER_H

#include <stddef.h>

struct config;
struct health;
struct worker;

/* Serves /health, /health/ready and /metrics on WORKER_HTTP_PORT.  NULL
 * with a message in err when the port cannot be served. */
struct health *health_start(const struct config *cfg, char *err, size_t errlen);
/* Lets the health port report the worker's counters (w may be NULL). */
void health_set_worker(struct health *h, struct worker *w);
void health_stop(struct health *h);

#endif
