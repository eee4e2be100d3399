/* orgstat.h -- which orgs this process is deferring, and why (the stats
 * JSON's "orgs.deferred"), and totals by reason (the Prometheus family
 * jobrunner_org_deferrals_total{reason}: never one series per org, since
 * org ids are unbounded).
 *
 * The table of deferred orgs is bounded (ORGSTAT_MAX entries, the most
 * recent deferrals win) and process-local: each consumer reports the orgs
 * it deferred; an org shows until its wait is over. */
#ifndef JOBRUNNER_COMMON_ORGSTAT_H
#define JOBRUNNER_COMMON_ORGSTAT_H

#include <stdint.h>

#define ORGSTAT_MAX 64

enum orgstat_reason { ORGSTAT_RATE, ORGSTAT_CONCURRENCY, ORGSTAT_THROTTLE, ORGSTAT_NREASONS };

/* "rate_limit", "concurrency", "graph_throttle" */
const char *orgstat_reason_name(enum orgstat_reason r);

/* Records that a run of org was deferred for wait_ms because of reason. */
void orgstat_defer(const char *org, enum orgstat_reason reason, int64_t wait_ms);

/* Deferrals so far, by reason. */
uint64_t orgstat_total(enum orgstat_reason reason);

struct cJSON;
/* Appends to arr one object per org deferred now: {"org", "reason",
 * "waitMs" (left), "deferrals" (since it was first listed)}, longest wait first. */
void orgstat_deferred_json(struct cJSON *arr);

/* Registers jobrunner_org_deferrals_total{reason} (idempotent). */
void orgstat_metrics_init(void);

#endif
