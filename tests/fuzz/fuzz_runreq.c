/* fuzz_runreq.c -- libFuzzer target: the request validation and JSON
 * handling of POST /api/integrations/jobs/{job}/run (common/runreq.c), the
 * JSON answer built from its result, and the error-body escaping of
 * httpd_error().
 *
 * The input is the request body, byte for byte (not NUL-terminated: the
 * target copies it into an exact-size heap buffer so that ASan catches any
 * read past the end).  Invariants checked on every input:
 *   - runreq_parse() answers 0, 400 or 413, nothing else;
 *   - on 0: 1 <= n <= RUNREQ_MAX_ITEMS, every run is of the job asked for,
 *     every payload is the text of a JSON object, sizes are within bounds;
 *   - on 400/413: nothing is returned and the message is a non-empty,
 *     NUL-terminated string that fits its buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "enqueue.h"
#include "runreq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = malloc(size ? size : 1);
	if (!body)
		return 0;
	if (size)
		memcpy(body, data, size);

	struct run *runs = NULL;
	size_t n = 99;
	int bulk = -1;
	char err[256];
	memset(err, 'x', sizeof err);
	int status = runreq_parse("noop", body, size, &runs, &n, &bulk, err, sizeof err);
	if (status == 0) {
		if (!runs || n < 1 || n > RUNREQ_MAX_ITEMS || (bulk != 0 && bulk != 1))
			abort();
		if (!bulk && n != 1)
			abort();
		cJSON *answer = cJSON_CreateArray();
		for (size_t i = 0; i < n; i++) {
			const struct run *r = &runs[i];
			if (!r->job || strcmp(r->job, "noop") || r->source != RUN_SRC_ADHOC || r->id[0])
				abort();
			if (r->org_id && (!*r->org_id || strlen(r->org_id) > RUN_MAX_ORG_LEN))
				abort();
			if (r->idempotency_key &&
			    (!*r->idempotency_key || strlen(r->idempotency_key) > RUN_MAX_IDEM_LEN))
				abort();
			if (r->payload) {
				size_t len = strlen(r->payload);
				if (len > ENQ_MAX_PAYLOAD_BYTES)
					abort();
				cJSON *p = cJSON_ParseWithLength(r->payload, len);
				if (!cJSON_IsObject(p))
					abort();
				cJSON_Delete(p);
			}
			cJSON_AddItemToArray(answer, cJSON_CreateString(r->org_id ? r->org_id : ""));
		}
		char *text = cJSON_PrintUnformatted(answer);
		free(text);
		cJSON_Delete(answer);
		runreq_free(runs, n);
	} else {
		if ((status != 400 && status != 413) || runs || n != 0 || bulk != 0)
			abort();
		if (!memchr(err, '\0', sizeof err) || err[0] == '\0')
			abort();
	}
	free(body);
	return 0;
}
