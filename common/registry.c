/* registry.c -- the job table (see registry.h).  One line per job. */
#include "registry.h"

#include <string.h>

#include "http.h"
#include "util.h"

static const struct job_def *const jobs[] = {
	&job_noop,
	&job_no_reply_scan,
	&job_meta_spend,
	&job_meta_token_refresh,
};

static struct job_def table[JR_ARRAY_LEN(jobs)];
static int table_ready;

const struct job_def *registry_all(size_t *n)
{
	/* copied into an array once so callers can index it; the copy is
	 * idempotent, so a race between two first callers is harmless */
	if (!table_ready) {
		for (size_t i = 0; i < JR_ARRAY_LEN(jobs); i++)
			table[i] = *jobs[i];
		__atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
	}
	*n = JR_ARRAY_LEN(jobs);
	return table;
}

int registry_enabled(const struct job_def *job, const struct config *cfg)
{
	return !job->enabled || job->enabled(cfg);
}

struct http_client *job_http(struct job_ctx *ctx)
{
	if (!ctx->http)
		ctx->http = http_client_new();
	return ctx->http;
}

const struct job_def *registry_find(const char *name)
{
	size_t n;
	const struct job_def *all = registry_all(&n);
	for (size_t i = 0; name && i < n; i++)
		if (!strcmp(all[i].name, name))
			return &all[i];
	return NULL;
}
