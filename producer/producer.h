/* producer.h -- the producer's parts: the HTTP API (routes.c) and the
 * ticker (ticker.c). */
#ifndef JOBRUNNER_PRODUCER_PRODUCER_H
#define JOBRUNNER_PRODUCER_PRODUCER_H

struct config;
struct worker;
struct producer_api;
struct ticker;

/* Starts the HTTP API on cfg->port.  Returns 0 (*out set), or -1 after
 * logging why it could not start (the port is taken or refused: a usage
 * error).  w is the in-process worker in monolith mode, else NULL. */
int producer_api_start(const struct config *cfg, struct worker *w, struct producer_api **out);
void producer_api_stop(struct producer_api *api);

/* Starts the tick thread (Redis mode: one tick per JOB_RUNNER_INTERVAL_MS
 * slot, deduplicated across producer replicas; Redis-less mode: none, the
 * consumers run cycles on their own timer).  Never fails: a Redis outage is
 * retried.  NULL when there is nothing to tick. */
struct ticker *ticker_start(const struct config *cfg);
void ticker_stop(struct ticker *t);

/* The operators' commands (cli.c): `producer runs ...` (argv[0] = "runs")
 * and `producer pause|resume JOB` (on = 1 for pause).  Return an exit code. */
int cli_runs(const struct config *cfg, int argc, char **argv);
int cli_pause(const struct config *cfg, int argc, char **argv, int on);

#endif
