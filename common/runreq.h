/* runreq.h -- the body of POST /api/integrations/jobs/{job}/run (docs/operations.md, "Endpoints").
 *
 * A body is empty (one run, no org, no payload), one JSON object
 *   {"orgId"?: string|null, "payload"?: object|null, "idempotencyKey"?: string|null,
 *    "runAt"?: ISO-8601 UTC string|null, "delayMs"?: integer|null}   (not both)
 * or a JSON array of 1..RUNREQ_MAX_ITEMS such objects (bulk).  Anything
 * else is refused with a message that says what is wrong and where
 * ("item 3: orgId must be a string").
 *
 * This is the request validation of the API, kept apart from the HTTP
 * handler so that the libFuzzer target (tests/fuzz/fuzz_runreq.c) drives
 * exactly the code the producer runs.  It does not look the job up (the
 * handler answers 404 for an unknown job before it reads the body) and it
 * does not touch a queue; enqueuer_submit() checks the runs again.
 *
 * Bounds: the body is at most HTTP_MAX_BODY_BYTES (httpd refuses more while
 * receiving it); it is parsed with its explicit length (it is not
 * NUL-terminated); the number of items is checked before anything is
 * allocated for them.
 */
#ifndef JOBRUNNER_COMMON_RUNREQ_H
#define JOBRUNNER_COMMON_RUNREQ_H

#include <stddef.h>
#include <stdint.h>

#include "run.h"

#define RUNREQ_MAX_ITEMS 10000          /* = ENQ_MAX_BATCH */
#define RUNREQ_MAX_DELAY_MS ((int64_t)90 * 86400 * 1000)   /* delayMs, and runAt ahead of now */

struct cJSON;
/* runAt (is_run_at) or delayMs from JSON value f into *run_at_ms (0 = now;
 * a runAt in the past is now).  0, or -1 with a message naming the field.
 * Shared with `producer enqueue --run-at/--delay-ms` (given as JSON). */
int runreq_when(const struct cJSON *f, int is_run_at, int64_t now_ms, int64_t *run_at_ms, char *err,
		size_t errlen);

/* Parses body[0..len) into runs of job `job` (source adhoc).
 *
 * Returns 0 with *out an array of *n runs (n >= 1), each owning its strings
 * (job, org_id, payload as compact JSON text, idempotency_key); release it
 * with runreq_free(*out, *n).  *bulk is 1 when the body was an array.
 *
 * Returns 400 (malformed JSON, wrong types, unknown fields, an empty array,
 * sizes over RUN_MAX_ORG_LEN / RUN_MAX_IDEM_LEN) or 413 (an array of more
 * than RUNREQ_MAX_ITEMS items) -- the HTTP status to answer -- with a
 * NUL-terminated message for the client in err (errlen bytes; it quotes at
 * most a few dozen bytes of the input); *out is NULL and *n 0. */
int runreq_parse(const char *job, const char *body, size_t len, struct run **out, size_t *n,
		 int *bulk, char *err, size_t errlen);

/* Releases runs[0..n) (run_clear each) and the array.  NULL is a no-op. */
void runreq_free(struct run *runs, size_t n);

#endif
