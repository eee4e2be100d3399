/* orgstat.c -- see orgstat.h. */
#include "orgstat.h"

#include <stdatomic.h>

#include "metrics.h"

static const char *const reason_names[ORGSTAT_NREASONS] = { "rate_limit", "concurrency", "graph_throttle" };

static _Atomic uint64_t totals[ORGSTAT_NREASONS];

void orgstat_defer(enum orgstat_reason reason)
{
	if (reason < ORGSTAT_NREASONS)
		atomic_fetch_add_explicit(&totals[reason], 1, memory_order_relaxed);
}

uint64_t orgstat_total(enum orgstat_reason reason)
{
	return reason < ORGSTAT_NREASONS ? atomic_load_explicit(&totals[reason], memory_order_relaxed) : 0;
}

static void collect(void *ctx, struct metrics_emitter *emit)
{
	(void)ctx;
	for (int r = 0; r < ORGSTAT_NREASONS; r++)
		metrics_emit(emit, (double)orgstat_total((enum orgstat_reason)r), reason_names[r], NULL);
}

void orgstat_metrics_init(void)
{
	metrics_callback(metrics_default(), METRIC_COUNTER, "jobrunner_org_deferrals_total",
			 "Runs deferred by per-org limits, by reason (rate_limit, concurrency, graph_throttle).",
			 "reason", NULL, collect, NULL);
}
