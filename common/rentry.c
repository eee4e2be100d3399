/* rentry.c -- see rentry.h.
 *
 * Validation is strict because an entry may come from another service's
 * XADD: every size is bounded before anything is copied, numbers are parsed
 * with parse_i64, and the payload must be JSON (job_runs.payload is jsonb;
 * one bad payload must not break a history batch).  A run that fails
 * validation is reported, never guessed at.
 */
#include "rentry.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsoncheck.h"
#include "log.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* writing                                                             */
/* ------------------------------------------------------------------ */

/* The fields of a run's entry, in order, to one of two writers: the XADD
 * arguments (rentry_add_fields) or a delayed member's JSON
 * (rentry_delayed_json). */
struct field_sink {
	void (*str)(void *ctx, const char *k, const char *v);
	void (*num)(void *ctx, const char *k, int64_t v);
	void *ctx;
};

static void run_fields(const struct field_sink *f, const struct run *r, int attempt)
{
	f->str(f->ctx, "v", RENTRY_VERSION);
	f->str(f->ctx, "type", "run");
	f->str(f->ctx, "id", r->id);
	f->str(f->ctx, "job", r->job);
	if (r->org_id)
		f->str(f->ctx, "org", r->org_id);
	if (r->payload)
		f->str(f->ctx, "payload", r->payload);
	f->str(f->ctx, "src", run_source_name(r->source));
	f->num(f->ctx, "attempt", attempt);
	f->num(f->ctx, "max", r->max_attempts);
	f->num(f->ctx, "enq", r->enqueued_at_ms);
	if (r->idempotency_key)
		f->str(f->ctx, "idem", r->idempotency_key);
}

static void argv_str(void *ctx, const char *k, const char *v)
{
	rargv_addrefs(ctx, k);
	rargv_addrefs(ctx, v);
}

static void argv_num(void *ctx, const char *k, int64_t v)
{
	rargv_addrefs(ctx, k);
	rargv_addi64(ctx, v);
}

void rentry_add_fields(struct rargv *a, const struct run *r, int attempt)
{
	const struct field_sink f = { argv_str, argv_num, a };
	run_fields(&f, r, attempt);
	if (r->run_at_ms > 0)
		argv_num(a, "runat", r->run_at_ms);
}

/* every value a JSON string: the promote script turns the members back
 * into entry fields */
static void json_str(void *ctx, const char *k, const char *v)
{
	cJSON_AddStringToObject(ctx, k, v);
}

static void json_num(void *ctx, const char *k, int64_t v)
{
	char num[24];
	snprintf(num, sizeof num, "%lld", (long long)v);
	cJSON_AddStringToObject(ctx, k, num);
}

void rentry_delayed_json(struct strbuf *sb, const struct run *r, int attempt)
{
	cJSON *o = cJSON_CreateObject();
	const struct field_sink f = { json_str, json_num, o };
	run_fields(&f, r, attempt);
	char *text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!text) {
		fprintf(stderr, "jobrunner: out of memory building a delayed member\n");
		abort();
	}
	sb_adds(sb, text);
	cJSON_free(text);
}

/* ------------------------------------------------------------------ */
/* reading                                                             */
/* ------------------------------------------------------------------ */

int64_t rentry_id_ms(const char *id)
{
	int64_t ms = 0;
	for (const char *p = id; p && *p >= '0' && *p <= '9' && ms < INT64_MAX / 10 - 10; p++)
		ms = ms * 10 + (*p - '0');
	return ms;
}

int rentry_json_valid(const char *s, size_t len, char *err, size_t errlen)
{
	if (len > RENTRY_MAX_PAYLOAD) {
		if (err && errlen)
			snprintf(err, errlen, "larger than %d bytes", RENTRY_MAX_PAYLOAD);
		return 0;
	}
	if (len == 2 && s[0] == '{' && s[1] == '}')
		return 1;
	return json_check(s, len, JSON_MAX_DEPTH, JSON_CHECK_OBJECT, err, errlen) == 0;
}

/* The fields of an entry, found in one pass over the flat array. */
enum { F_V, F_TYPE, F_ID, F_JOB, F_ORG, F_PAYLOAD, F_SRC, F_ATTEMPT, F_MAX, F_ENQ, F_IDEM, F_SLOT,
       F_RUNAT, F_COUNT };
static const char *const field_names[F_COUNT] = { "v", "type", "id", "job", "org", "payload",
						  "src", "attempt", "max", "enq", "idem", "slot",
						  "runat" };

static void find_fields(const redisReply *f, const redisReply *out[F_COUNT])
{
	memset(out, 0, sizeof(*out) * F_COUNT);
	for (size_t i = 0; i + 1 < f->elements; i += 2) {
		const redisReply *k = f->element[i], *v = f->element[i + 1];
		if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
			continue;
		for (int j = 0; j < F_COUNT; j++)
			if (k->str[0] == field_names[j][0] && !strcmp(k->str, field_names[j])) {
				if (!out[j])
					out[j] = v;
				break;
			}
	}
}

/* 1 when the reply string v equals s exactly (binary-safe: an embedded NUL
 * does not make "1\0junk" equal "1"). */
static int field_is(const redisReply *v, const char *s)
{
	return v && v->len == strlen(s) && !memcmp(v->str, s, v->len);
}

static int field_i64(const redisReply *v, int64_t min, int64_t max, int64_t dflt, int64_t *out)
{
	if (!v) {
		*out = dflt;
		return 0;
	}
	if (v->len > 20 || strlen(v->str) != v->len)
		return -1;
	return parse_i64(v->str, min, max, out);
}

/* An optional text field: absent or empty leaves *out alone; else it must
 * be text_valid() within max bytes, and *out gets a copy.  0 or -1. */
static int opt_text(const redisReply *v, size_t max, char **out)
{
	if (!v || !v->len)
		return 0;
	if (!text_valid(v->str, v->len, max))
		return -1;
	*out = xstrndup(v->str, v->len);
	return 0;
}

int rentry_parse(const redisReply *fields, const char *entry_id, int default_max_attempts,
		 struct run *r, int64_t *slot, char *err, size_t errlen)
{
	memset(r, 0, sizeof *r);
	*slot = 0;
	if (!fields || fields->type != REDIS_REPLY_ARRAY || fields->elements % 2) {
		snprintf(err, errlen, "malformed entry: fields are not key/value pairs");
		return -1;
	}
	const redisReply *f[F_COUNT];
	find_fields(fields, f);
	/* best effort first, so a dead record can name the run */
	const redisReply *id = f[F_ID];
	if (id && run_id_valid(id->str, id->len))
		memcpy(r->id, id->str, id->len + 1);
	const redisReply *job = f[F_JOB];
	if (job && text_valid(job->str, job->len, RUN_MAX_JOB_LEN))
		r->job = xstrndup(job->str, job->len);

	const redisReply *v = f[F_V];
	if (!field_is(v, RENTRY_VERSION)) {
		snprintf(err, errlen, "malformed entry: unknown format version %.16s",
			 v ? v->str : "(missing)");
		return -1;
	}
	const redisReply *type = f[F_TYPE];
	int64_t n;
	if (field_is(type, "tick")) {
		if (field_i64(f[F_SLOT], 0, INT64_MAX, -1, &n) || n < 0) {
			snprintf(err, errlen, "malformed entry: tick without a valid slot");
			return -1;
		}
		*slot = n;
		r->is_tick = 1;
		snprintf(r->id, sizeof r->id, "tick:%lld", (long long)n);
		if (field_i64(f[F_ENQ], 0, INT64_MAX, rentry_id_ms(entry_id), &n))
			n = rentry_id_ms(entry_id);
		r->enqueued_at_ms = n;
		return 0;
	}
	if (!field_is(type, "run")) {
		snprintf(err, errlen, "malformed entry: unknown type %.32s",
			 type ? type->str : "(missing)");
		return -1;
	}
	if (!id || !run_id_valid(id->str, id->len)) {
		snprintf(err, errlen, "malformed entry: missing or invalid id");
		return -1;
	}
	if (!r->job) {
		snprintf(err, errlen, "malformed entry: missing or invalid job");
		return -1;
	}
	if (opt_text(f[F_ORG], RUN_MAX_ORG_LEN, &r->org_id)) {
		snprintf(err, errlen, "malformed entry: invalid org");
		return -1;
	}
	const redisReply *payload = f[F_PAYLOAD];
	if (payload && payload->len) {
		char why[200];
		if (!rentry_json_valid(payload->str, payload->len, why, sizeof why)) {
			snprintf(err, errlen, "malformed entry: payload is not one JSON object: %s", why);
			return -1;
		}
		r->payload = xstrndup(payload->str, payload->len);
	}
	const redisReply *src = f[F_SRC];
	r->source = RUN_SRC_ADHOC;
	if (src && (strlen(src->str) != src->len || run_source_parse(src->str, &r->source))) {
		snprintf(err, errlen, "malformed entry: invalid src %.32s", src->str);
		return -1;
	}
	if (field_i64(f[F_ATTEMPT], 0, RENTRY_MAX_ATTEMPTS, 0, &n)) {
		snprintf(err, errlen, "malformed entry: invalid attempt");
		return -1;
	}
	r->attempt = (int)n;
	if (field_i64(f[F_MAX], 1, RENTRY_MAX_ATTEMPTS, default_max_attempts, &n)) {
		snprintf(err, errlen, "malformed entry: invalid max");
		return -1;
	}
	r->max_attempts = (int)n;
	if (field_i64(f[F_ENQ], 0, INT64_MAX, rentry_id_ms(entry_id), &n)) {
		snprintf(err, errlen, "malformed entry: invalid enq");
		return -1;
	}
	r->enqueued_at_ms = n;
	if (field_i64(f[F_RUNAT], 0, INT64_MAX, 0, &n)) {
		snprintf(err, errlen, "malformed entry: invalid runat");
		return -1;
	}
	r->run_at_ms = n;
	if (opt_text(f[F_IDEM], RUN_MAX_IDEM_LEN, &r->idempotency_key)) {
		snprintf(err, errlen, "malformed entry: invalid idem");
		return -1;
	}
	return 0;
}

int rentry_is_fed(const redisReply *fields)
{
	for (size_t i = 0; fields && fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements;
	     i += 2) {
		const redisReply *k = fields->element[i];
		if (k->type == REDIS_REPLY_STRING && k->len == 4 && !memcmp(k->str, "lane", 4))
			return 1;
	}
	return 0;
}

int rentry_create_groups(struct rconn *rc)
{
	static const char *const groups[][2] = {
		{ RENTRY_RUNS, RENTRY_GROUP },
		{ RENTRY_RUNS, RENTRY_HISTORY_GROUP },
		{ RENTRY_EVENTS, RENTRY_HISTORY_GROUP },
	};
	if (rconn_connect(rc))
		return rc->err;
	for (size_t i = 0; i < JR_ARRAY_LEN(groups); i++) {
		/* from the stream's start, not "$": a group is missing only on a
		 * stream nobody has consumed yet (first start, or a Redis that lost
		 * its data and took new entries before any consumer came back),
		 * and "$" would skip what was added before it existed */
		const char *av[] = { "XGROUP", "CREATE", groups[i][0], groups[i][1], "0", "MKSTREAM" };
		if (rconn_append(rc, 6, av, NULL))
			return rc->err;
	}
	int rv = 0;
	for (size_t i = 0; i < JR_ARRAY_LEN(groups); i++) {
		redisReply *r = rconn_get(rc);
		if (!r)
			return rc->err;
		if (r->type == REDIS_REPLY_ERROR && !rconn_is_error(r, "BUSYGROUP") && !rv)
			rv = rconn_reply_error(rc, r);
		rconn_free(r);
	}
	return rv;
}
