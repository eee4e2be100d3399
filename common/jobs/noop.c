/* noop -- does nothing, on purpose.  Used by benchmarks and fault tests.
 *
 * Payload (all optional):
 *   sleepMs     work time in ms (0 – 3600000), interrupted by shutdown or cancel
 *   failTimes   fail (retryably) the first N attempts
 *   failAlways  true: always fail (retryably, so attempts run out → dead)
 */
#include <stdio.h>

#include "registry.h"
#include "util.h"

static void noop_run(struct job_ctx *ctx, struct run_result *out)
{
	const cJSON *sleep = cJSON_GetObjectItemCaseSensitive(ctx->payload, "sleepMs");
	const cJSON *fail_times = cJSON_GetObjectItemCaseSensitive(ctx->payload, "failTimes");
	const cJSON *fail_always = cJSON_GetObjectItemCaseSensitive(ctx->payload, "failAlways");

	if (cJSON_IsNumber(sleep) && sleep->valuedouble > 0) {
		int64_t ms = sleep->valuedouble > 3600000 ? 3600000 : (int64_t)sleep->valuedouble;
		int64_t end = mono_ms() + ms;
		while (!job_stopping(ctx) && mono_ms() < end) {
			int64_t left = end - mono_ms();
			sleep_ms(left > 50 ? 50 : left);
		}
		if (job_stopping(ctx) && mono_ms() < end) {
			out->outcome = RUN_RETRY;
			snprintf(out->error, sizeof out->error, "interrupted by shutdown");
			return;
		}
	}
	if (cJSON_IsTrue(fail_always)) {
		out->outcome = RUN_RETRY;
		snprintf(out->error, sizeof out->error, "noop: failAlways");
		return;
	}
	if (cJSON_IsNumber(fail_times) && ctx->run->attempt <= fail_times->valuedouble) {
		out->outcome = RUN_RETRY;
		snprintf(out->error, sizeof out->error, "noop: failTimes=%d, attempt %d",
			 (int)fail_times->valuedouble, ctx->run->attempt);
		return;
	}
	out->outcome = RUN_OK;
}

const struct job_def job_noop = {
	.name = "noop",
	.run = noop_run,
	.no_db = 1,
};
