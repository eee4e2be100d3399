/* runreq.c -- see runreq.h.
 *
 * The whole body is checked by json_check() (one value, valid UTF-8, no
 * \u0000, numbers kept exactly, nesting bounded), then parsed by cJSON
 * (bounded by HTTP_MAX_BODY_BYTES), then walked once; each payload is
 * stored re-serialised, and checked again on its own against
 * JSON_MAX_DEPTH.  Org ids and idempotency keys are text_valid().  Rejected alternative: a
 * streaming parse that stops at item 10,001 -- the body is already bounded
 * at 1 MiB by default, so the extra parser would buy nothing but code.
 */
#include "runreq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "enqueue.h"
#include "jsoncheck.h"
#include "util.h"

_Static_assert(RUNREQ_MAX_ITEMS == ENQ_MAX_BATCH, "a bulk request is one enqueue batch");

/* ------------------------------------------------------------------ */
/* one item                                                            */
/* ------------------------------------------------------------------ */

enum { F_ORG = 1, F_PAYLOAD = 2, F_IDEM = 4, F_RUNAT = 8, F_DELAY = 16 };

/* A string field (null is "absent"): 0 with *out set (a copy, or NULL for
 * null), or -1 with a message. */
static int str_field(const cJSON *f, const char *name, size_t max_len, char **out, char *err,
		     size_t errlen)
{
	if (cJSON_IsNull(f))
		return 0;
	if (!cJSON_IsString(f) || !f->valuestring) {
		snprintf(err, errlen, "%s must be a string", name);
		return -1;
	}
	size_t len = strlen(f->valuestring);
	if (len == 0 || len > max_len) {
		snprintf(err, errlen, "%s must be 1 to %zu characters", name, max_len);
		return -1;
	}
	if (!text_valid(f->valuestring, len, max_len)) {
		snprintf(err, errlen, "%s must be text without control characters", name);
		return -1;
	}
	*out = xstrdup(f->valuestring);
	return 0;
}

int runreq_when(const cJSON *f, int is_run_at, int64_t now_ms, int64_t *run_at_ms, char *err,
		size_t errlen)
{
	*run_at_ms = 0;
	if (cJSON_IsNull(f))
		return 0;
	if (is_run_at) {
		int64_t t;
		if (!cJSON_IsString(f) || !f->valuestring || iso8601_parse_ms(f->valuestring, &t)) {
			snprintf(err, errlen, "runAt must be an ISO-8601 UTC time, e.g. \"2026-01-02T03:04:05Z\"");
			return -1;
		}
		if (t - now_ms > RUNREQ_MAX_DELAY_MS) {
			snprintf(err, errlen, "runAt is more than 90 days ahead");
			return -1;
		}
		*run_at_ms = t > now_ms ? t : 0;   /* in the past: now */
		return 0;
	}
	double d = cJSON_IsNumber(f) ? f->valuedouble : -1;
	/* the range first: converting a double out of int64_t's range (1e300,
	 * NaN) to check that it is whole would be undefined */
	if (!cJSON_IsNumber(f) || !(d >= 0 && d <= (double)RUNREQ_MAX_DELAY_MS) ||
	    d != (double)(int64_t)d) {
		snprintf(err, errlen, "delayMs must be a whole number from 0 to %lld (90 days)",
			 (long long)RUNREQ_MAX_DELAY_MS);
		return -1;
	}
	*run_at_ms = d > 0 ? now_ms + (int64_t)d : 0;
	return 0;
}

/* Fills r from one item.  0, or -1 with a message (r keeps what it got:
 * the caller clears it). */
static int parse_item(const cJSON *it, const char *job, struct run *r, char *err, size_t errlen)
{
	r->job = xstrdup(job);
	r->source = RUN_SRC_ADHOC;
	if (!cJSON_IsObject(it)) {
		snprintf(err, errlen, "expected a JSON object {\"orgId\", \"payload\", \"idempotencyKey\", \"runAt\", \"delayMs\"}");
		return -1;
	}
	unsigned seen = 0;
	for (const cJSON *f = it->child; f; f = f->next) {
		const char *k = f->string ? f->string : "";
		unsigned bit = !strcmp(k, "orgId") ? F_ORG : !strcmp(k, "payload") ? F_PAYLOAD
			     : !strcmp(k, "idempotencyKey") ? F_IDEM : !strcmp(k, "runAt") ? F_RUNAT
			     : !strcmp(k, "delayMs") ? F_DELAY : 0;
		if (!bit) {
			snprintf(err, errlen, "unknown field '%.40s' (expected orgId, payload, idempotencyKey, runAt, delayMs)", k);
			return -1;
		}
		if ((bit == F_RUNAT && (seen & F_DELAY)) || (bit == F_DELAY && (seen & F_RUNAT))) {
			snprintf(err, errlen, "runAt and delayMs: give one of them, not both");
			return -1;
		}
		if (seen & bit) {
			snprintf(err, errlen, "field '%s' appears twice", k);
			return -1;
		}
		seen |= bit;
		if (bit == F_RUNAT || bit == F_DELAY) {
			if (runreq_when(f, bit == F_RUNAT, wall_ms(), &r->run_at_ms, err, errlen))
				return -1;
		} else if (bit == F_ORG) {
			if (str_field(f, "orgId", RUN_MAX_ORG_LEN, &r->org_id, err, errlen))
				return -1;
		} else if (bit == F_IDEM) {
			if (str_field(f, "idempotencyKey", RUN_MAX_IDEM_LEN, &r->idempotency_key, err, errlen))
				return -1;
		} else if (!cJSON_IsNull(f)) {
			if (!cJSON_IsObject(f)) {
				snprintf(err, errlen, "payload must be a JSON object");
				return -1;
			}
			r->payload = cJSON_PrintUnformatted(f);
			if (!r->payload) {
				snprintf(err, errlen, "payload cannot be encoded");
				return -1;
			}
			size_t plen = strlen(r->payload);
			if (plen > ENQ_MAX_PAYLOAD_BYTES) {
				snprintf(err, errlen, "payload is larger than %d bytes", ENQ_MAX_PAYLOAD_BYTES);
				return -1;
			}
			/* the body passed json_check(); this is the payload's own
			 * depth, the same limit as the stream entry parser's */
			char why[160];
			if (json_check(r->payload, plen, JSON_MAX_DEPTH, JSON_CHECK_OBJECT, why,
				       sizeof why)) {
				snprintf(err, errlen, "payload: %s", why);
				return -1;
			}
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

void runreq_free(struct run *runs, size_t n)
{
	if (!runs)
		return;
	for (size_t i = 0; i < n; i++)
		run_clear(&runs[i]);
	free(runs);
}

/* True when body[0..len) is only JSON whitespace. */
static int blank(const char *body, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n')
			return 0;
	return 1;
}

int runreq_parse(const char *job, const char *body, size_t len, struct run **out, size_t *n,
		 int *bulk, char *err, size_t errlen)
{
	*out = NULL;
	*n = 0;
	*bulk = 0;
	if (len == 0 || blank(body, len)) {
		struct run *r = xcalloc(1, sizeof *r);
		r->job = xstrdup(job);
		r->source = RUN_SRC_ADHOC;
		*out = r;
		*n = 1;
		return 0;
	}
	/* strict first (one value, UTF-8, exact numbers, depth: the payload's
	 * limit plus the array and the item around it), so that cJSON only
	 * sees text it keeps as is */
	char why[160];
	if (json_check(body, len, JSON_MAX_DEPTH + 2, 0, why, sizeof why)) {
		snprintf(err, errlen, "the body is not valid JSON: %s", why);
		return 400;
	}
	const char *end = NULL;
	cJSON *doc = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	if (!doc) {
		size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
		snprintf(err, errlen, "the body is not valid JSON (error near byte %zu)", at);
		return 400;
	}
	if (end && !blank(end, len - (size_t)(end - body))) {
		cJSON_Delete(doc);
		snprintf(err, errlen, "the body has data after the JSON value (at byte %zu)",
			 (size_t)(end - body));
		return 400;
	}
	int status = 0;
	size_t count = 1;
	if (cJSON_IsArray(doc)) {
		count = 0;
		for (const cJSON *it = doc->child; it && count <= RUNREQ_MAX_ITEMS; it = it->next)
			count++;
		if (count > RUNREQ_MAX_ITEMS) {
			snprintf(err, errlen, "a bulk request holds at most %d runs", RUNREQ_MAX_ITEMS);
			status = 413;
		} else if (count == 0) {
			snprintf(err, errlen, "the array is empty: give at least one run");
			status = 400;
		}
		*bulk = 1;
	} else if (!cJSON_IsObject(doc)) {
		snprintf(err, errlen, "the body must be a JSON object or an array of objects");
		status = 400;
	}
	if (status) {
		cJSON_Delete(doc);
		*bulk = 0;
		return status;
	}
	struct run *runs = xcalloc(count, sizeof *runs);
	const cJSON *it = *bulk ? doc->child : doc;
	for (size_t i = 0; i < count; i++, it = it->next) {
		char what[200];
		if (parse_item(it, job, &runs[i], what, sizeof what)) {
			if (*bulk)
				snprintf(err, errlen, "item %zu: %s", i, what);
			else
				snprintf(err, errlen, "%s", what);
			runreq_free(runs, i + 1);
			cJSON_Delete(doc);
			*bulk = 0;
			return 400;
		}
	}
	cJSON_Delete(doc);
	*out = runs;
	*n = count;
	return 0;
}
