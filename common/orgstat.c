/* orgstat.c -- see orgstat.h. */
#include "orgstat.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "metrics.h"
#include "run.h"
#include "util.h"

static const char *const reason_names[ORGSTAT_NREASONS] = { "rate_limit", "concurrency", "graph_throttle" };

struct entry {
	char org[RUN_MAX_ORG_LEN + 1];
	enum orgstat_reason reason;
	int64_t until_ms;   /* wall ms; 0: free */
	uint64_t count;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct entry table[ORGSTAT_MAX];
static _Atomic uint64_t totals[ORGSTAT_NREASONS];

const char *orgstat_reason_name(enum orgstat_reason r)
{
	return r < ORGSTAT_NREASONS ? reason_names[r] : "unknown";
}

void orgstat_defer(const char *org, enum orgstat_reason reason, int64_t wait_ms)
{
	if (reason >= ORGSTAT_NREASONS || !org)
		return;
	atomic_fetch_add_explicit(&totals[reason], 1, memory_order_relaxed);
	int64_t now = wall_ms();
	pthread_mutex_lock(&mu);
	struct entry *e = NULL, *victim = &table[0];
	for (size_t i = 0; i < ORGSTAT_MAX; i++) {
		if (table[i].until_ms && !strcmp(table[i].org, org)) {
			e = &table[i];
			break;
		}
		if (table[i].until_ms < victim->until_ms)
			victim = &table[i];   /* free or expiring first */
	}
	if (!e) {
		e = victim;
		snprintf(e->org, sizeof e->org, "%s", org);
		e->count = 0;
	} else if (e->until_ms <= now) {
		e->count = 0;   /* a new episode */
	}
	e->reason = reason;
	e->until_ms = now + (wait_ms > 0 ? wait_ms : 1);
	e->count++;
	pthread_mutex_unlock(&mu);
}

uint64_t orgstat_total(enum orgstat_reason reason)
{
	return reason < ORGSTAT_NREASONS ? atomic_load_explicit(&totals[reason], memory_order_relaxed) : 0;
}

static int by_until_desc(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	return x->until_ms < y->until_ms ? 1 : x->until_ms > y->until_ms ? -1 : 0;
}

void orgstat_deferred_json(struct cJSON *arr)
{
	struct entry copy[ORGSTAT_MAX];
	size_t n = 0;
	int64_t now = wall_ms();
	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < ORGSTAT_MAX; i++)
		if (table[i].until_ms > now)
			copy[n++] = table[i];
	pthread_mutex_unlock(&mu);
	qsort(copy, n, sizeof *copy, by_until_desc);
	for (size_t i = 0; i < n; i++) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "org", copy[i].org);
		cJSON_AddStringToObject(o, "reason", reason_names[copy[i].reason]);
		cJSON_AddNumberToObject(o, "waitMs", (double)(copy[i].until_ms - now));
		cJSON_AddNumberToObject(o, "deferrals", (double)copy[i].count);
		cJSON_AddItemToArray(arr, o);
	}
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
