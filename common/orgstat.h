/* orgstat.h -- runs deferred by per-org limits, totals by reason, for the
 * Prometheus family jobrunner_org_deferrals_total{reason}: never one
 * series per org (org ids are unbounded).  Which orgs are deferred, and
 * why, is in the metrics JSON (producer/routes.c, from job_runs, across
 * all consumers). */
#ifndef JOBRUNNER_COMMON_ORGSTAT_H
#define JOBRUNNER_COMMON_ORGSTAT_H

#include <stdint.h>

enum orgstat_reason { ORGSTAT_RATE, ORGSTAT_CONCURRENCY, ORGSTAT_THROTTLE, ORGSTAT_NREASONS };

/* Counts one deferral of a run for reason. */
void orgstat_defer(enum orgstat_reason reason);

/* Deferrals so far, by reason. */
uint64_t orgstat_total(enum orgstat_reason reason);

/* Registers jobrunner_org_deferrals_total{reason} (idempotent). */
void orgstat_metrics_init(void);

#endif
