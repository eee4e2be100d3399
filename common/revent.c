/* revent.c -- see revent.h. */
#include "revent.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsoncheck.h"
#include "rentry.h"
#include "util.h"

#define CONSUMER_MAX 127   /* bytes of a consumer name kept from an event */

/* ------------------------------------------------------------------ */
/* encoder                                                             */
/* ------------------------------------------------------------------ */

/* A whole number as a cJSON node: raw text from i64_dec (always a valid JSON
 * number), as cJSON's own number printing (a double through %1.15g and a
 * read back) cost more than the rest of the event. */
static void add_int(cJSON *o, const char *key, long long v)
{
	char num[24];
	i64_dec(num, (int64_t)v);
	cJSON_AddItemToObject(o, key, cJSON_CreateRaw(num));
}

static void add_text(cJSON *o, const char *key, const char *v)
{
	if (v)
		cJSON_AddItemToObject(o, key, cJSON_CreateStringReference(v));
}

void revent_encode(struct strbuf *sb, const struct revent *e)
{
	char err[RUN_MAX_ERROR_LEN + 1];
	cJSON *ev = cJSON_CreateObject();
	if (!ev)
		goto oom;
	add_text(ev, "id", e->id);
	add_text(ev, "job", e->job ? e->job : "unknown");
	add_text(ev, "org", e->org);
	/* the payload passed rentry_json_valid() at claim and is checked again
	 * before it goes in as a raw node: it can never end the event early
	 * or reach another run's event */
	if (e->payload && rentry_json_valid(e->payload, strlen(e->payload), NULL, 0))
		cJSON_AddItemToObject(ev, "payload", cJSON_CreateRaw(e->payload));
	add_text(ev, "src", e->src);
	add_text(ev, "status", e->status);
	add_int(ev, "attempt", e->attempt);
	add_int(ev, "max", e->max);
	add_int(ev, "enq", e->enq);
	if (e->started >= 0)
		add_int(ev, "started", e->started);
	if (e->finished >= 0)
		add_int(ev, "finished", e->finished);
	if (e->duration >= 0)
		add_int(ev, "duration", e->duration);
	if (e->runat >= 0)
		add_int(ev, "runat", e->runat);
	if (e->error && *e->error) {
		text_clean(err, e->error, RUN_MAX_ERROR_LEN);
		add_text(ev, "error", err);
	}
	add_text(ev, "idem", e->idem);
	add_text(ev, "consumer", e->consumer);
	char *text = cJSON_PrintUnformatted(ev);
	cJSON_Delete(ev);
	if (!text)
		goto oom;
	sb_adds(sb, text);
	cJSON_free(text);
	return;
oom:
	fprintf(stderr, "jobrunner: out of memory building an event\n");
	abort();
}

/* ------------------------------------------------------------------ */
/* decoder                                                             */
/* ------------------------------------------------------------------ */

/* A string member of o as identifier text (jsoncheck.h), or NULL. */
static char *json_text(const cJSON *o, const char *key, size_t max)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
	if (!s || !text_valid(s, strlen(s), max))
		return NULL;
	return xstrdup(s);
}

/* A free-text string member of o (an error message, a consumer name): at
 * most max bytes, cut on a UTF-8 boundary; invalid UTF-8 and control
 * characters become '?' (PostgreSQL refuses invalid UTF-8, and would refuse
 * the whole batch with it). */
static char *json_free_text(const cJSON *o, const char *key, size_t max)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
	if (!s)
		return NULL;
	char *out = xmalloc(max + 1);
	text_clean(out, s, max);
	return out;
}

static int64_t json_i64(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9e15)
		return -1;
	return (int64_t)v->valuedouble;
}

/* One event into *e (0), or -1: not an event of a run it can name. */
static int decode_one(const cJSON *ev, struct revent *e)
{
	const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "id"));
	const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "status"));
	const char *src = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "src"));
	enum run_status status;
	enum run_source source = RUN_SRC_ADHOC;
	if (!cJSON_IsObject(ev) || !id || !run_id_valid(id, strlen(id)) || !st ||
	    run_status_parse(st, &status))
		return -1;
	if (src)
		run_source_parse(src, &source);
	memset(e, 0, sizeof *e);
	memcpy(e->id, id, strlen(id) + 1);
	e->job = json_text(ev, "job", RUN_MAX_JOB_LEN);
	if (!e->job)
		e->job = xstrdup("unknown");
	e->org = json_text(ev, "org", RUN_MAX_ORG_LEN);
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(ev, "payload");
	if (cJSON_IsObject(p)) {
		e->payload = cJSON_PrintUnformatted(p);
		if (e->payload && !rentry_json_valid(e->payload, strlen(e->payload), NULL, 0)) {
			cJSON_free(e->payload);
			e->payload = NULL;
		}
	}
	e->error = json_free_text(ev, "error", RUN_MAX_ERROR_LEN);
	e->consumer = json_free_text(ev, "consumer", CONSUMER_MAX);
	e->idem = json_text(ev, "idem", RUN_MAX_IDEM_LEN);
	e->src = run_source_name(source);
	e->status = run_status_name(status);
	int64_t a = json_i64(ev, "attempt"), m = json_i64(ev, "max");
	e->attempt = a >= 0 && a <= RENTRY_MAX_ATTEMPTS ? (int)a : 0;
	e->max = m >= 1 && m <= RENTRY_MAX_ATTEMPTS ? (int)m : 1;
	e->runat = json_i64(ev, "runat");
	e->enq = json_i64(ev, "enq");
	e->started = json_i64(ev, "started");
	e->finished = json_i64(ev, "finished");
	e->duration = json_i64(ev, "duration");
	if (e->duration > INT32_MAX)
		e->duration = INT32_MAX;
	return 0;
}

size_t revent_decode(const redisReply *fields, revent_fn fn, void *arg, size_t *bad)
{
	const redisReply *e = NULL;
	for (size_t i = 0; fields && fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements; i += 2)
		if (fields->element[i]->type == REDIS_REPLY_STRING && !strcmp(fields->element[i]->str, "e"))
			e = fields->element[i + 1];
	if (!e || e->type != REDIS_REPLY_STRING) {
		(*bad)++;
		return 0;
	}
	const char *end = NULL;
	cJSON *arr = cJSON_ParseWithLengthOpts(e->str, e->len, &end, 0);
	if (!cJSON_IsArray(arr) || !end || end != e->str + e->len) {
		cJSON_Delete(arr);
		(*bad)++;
		return 0;
	}
	size_t n = 0;
	const cJSON *ev;
	cJSON_ArrayForEach(ev, arr) {
		struct revent one;
		if (decode_one(ev, &one) == 0) {
			fn(&one, arg);
			n++;
		} else {
			(*bad)++;
		}
	}
	cJSON_Delete(arr);
	return n;
}
