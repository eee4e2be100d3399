/* registry.c -- the job table (see registry.h).  One line per job. */
#include "registry.h"

#include <pthread.h>
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
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

/* copied into an array once so callers can index it */
static void table_fill(void)
{
	for (size_t i = 0; i < JR_ARRAY_LEN(jobs); i++)
		table[i] = *jobs[i];
}

const struct job_def *registry_all(size_t *n)
{
	pthread_once(&table_once, table_fill);
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
	http_client_stop_flag(ctx->http, ctx->stop);   /* this run's: shutdown or cancel */
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
