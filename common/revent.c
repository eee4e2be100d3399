/* revent.c -- see revent.h. */
#include "revent.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsoncheck.h"
#include "log.h"
#include "rentry.h"
#include "util.h"

#define CONSUMER_MAX 127   /* bytes of a consumer name kept from an event */

/* ------------------------------------------------------------------ */
/* encoder                                                             */
/* ------------------------------------------------------------------ */

/* The event is written as text straight into sb, members in a fixed
 * order: building a cJSON tree and printing it cost a malloc per member
 * and per node, about a tenth of a busy consumer's CPU.  Strings go
 * through json_quote() (log.c: control characters escaped, invalid UTF-8
 * as U+FFFD), numbers through i64_dec(). */
static void put_key(struct strbuf *sb, int *first, const char *key)
{
	sb_add(sb, *first ? "{\"" : ",\"", 2);
	*first = 0;
	sb_adds(sb, key);
	sb_add(sb, "\":", 2);
}

static void put_text(struct strbuf *sb, int *first, const char *key, const char *v)
{
	if (!v)
		return;
	put_key(sb, first, key);
	json_quote(sb, v);
}

static void put_int(struct strbuf *sb, int *first, const char *key, long long v)
{
	char num[24];
	i64_dec(num, (int64_t)v);
	put_key(sb, first, key);
	sb_adds(sb, num);
}

void revent_encode(struct strbuf *sb, const struct revent *e)
{
	char err[RUN_MAX_ERROR_LEN + 1];
	int first = 1;
	put_text(sb, &first, "id", e->id);
	put_text(sb, &first, "job", e->job ? e->job : "unknown");
	put_text(sb, &first, "org", e->org);
	/* the payload passed rentry_json_valid() at claim and is checked again
	 * before it goes in as it is: it can never end the event early or
	 * reach another run's event */
	if (e->payload && rentry_json_valid(e->payload, strlen(e->payload), NULL, 0)) {
		put_key(sb, &first, "payload");
		sb_adds(sb, e->payload);
	}
	put_text(sb, &first, "src", e->src);
	put_text(sb, &first, "status", e->status);
	put_int(sb, &first, "attempt", e->attempt);
	put_int(sb, &first, "max", e->max);
	put_int(sb, &first, "enq", e->enq);
	if (e->started >= 0)
		put_int(sb, &first, "started", e->started);
	if (e->finished >= 0)
		put_int(sb, &first, "finished", e->finished);
	if (e->duration >= 0)
		put_int(sb, &first, "duration", e->duration);
	if (e->runat >= 0)
		put_int(sb, &first, "runat", e->runat);
	if (e->error && *e->error) {
		text_clean(err, e->error, RUN_MAX_ERROR_LEN);
		put_text(sb, &first, "error", err);
	}
	put_text(sb, &first, "idem", e->idem);
	put_text(sb, &first, "consumer", e->consumer);
	sb_add(sb, "}", 1);
}

/* ------------------------------------------------------------------ */
/* decoder                                                             */
/* ------------------------------------------------------------------ */

void revent_clear(struct revent *e)
{
	free(e->job);
	free(e->org);
	free(e->payload);
	free(e->error);
	free(e->consumer);
	free(e->idem);
	memset(e, 0, sizeof *e);
}

/* The members decode_one reads, found in one pass over the object's
 * children (the first of a name, as cJSON_GetObjectItemCaseSensitive would
 * find it): fifteen look-ups by name cost a strcmp per member each, the
 * most of the history writer's CPU after the allocations. */
enum { K_ID, K_STATUS, K_SRC, K_JOB, K_ORG, K_PAYLOAD, K_ERROR, K_CONSUMER, K_IDEM, K_ATTEMPT,
       K_MAX, K_RUNAT, K_ENQ, K_STARTED, K_FINISHED, K_DURATION, K_COUNT };
static const char *const member_names[K_COUNT] = {
	"id", "status", "src", "job", "org", "payload", "error", "consumer", "idem", "attempt",
	"max", "runat", "enq", "started", "finished", "duration",
};

static void members(const cJSON *o, const cJSON *m[K_COUNT])
{
	memset(m, 0, sizeof(*m) * K_COUNT);
	const cJSON *c;
	cJSON_ArrayForEach(c, o) {
		const char *k = c->string;
		if (!k)
			continue;
		for (int j = 0; j < K_COUNT; j++)
			if (k[0] == member_names[j][0] && !strcmp(k, member_names[j])) {
				if (!m[j])
					m[j] = c;
				break;
			}
	}
}

/* A string member as identifier text (jsoncheck.h), or NULL. */
static char *json_text(const cJSON *v, size_t max)
{
	const char *s = cJSON_GetStringValue(v);
	if (!s || !text_valid(s, strlen(s), max))
		return NULL;
	return xstrdup(s);
}

/* A free-text string member (an error message, a consumer name): at most
 * max bytes, cut on a UTF-8 boundary; invalid UTF-8 and control characters
 * become '?' (PostgreSQL refuses invalid UTF-8, and would refuse the whole
 * batch with it). */
static char *json_free_text(const cJSON *v, size_t max)
{
	const char *s = cJSON_GetStringValue(v);
	if (!s)
		return NULL;
	char *out = xmalloc(max + 1);
	text_clean(out, s, max);
	return out;
}

static int64_t json_i64(const cJSON *v)
{
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9e15)
		return -1;
	return (int64_t)v->valuedouble;
}

/* One event into *e (0), or -1: not an event of a run it can name. */
static int decode_one(const cJSON *ev, struct revent *e)
{
	if (!cJSON_IsObject(ev))
		return -1;
	const cJSON *m[K_COUNT];
	members(ev, m);
	const char *id = cJSON_GetStringValue(m[K_ID]);
	const char *st = cJSON_GetStringValue(m[K_STATUS]);
	const char *src = cJSON_GetStringValue(m[K_SRC]);
	enum run_status status;
	enum run_source source = RUN_SRC_ADHOC;
	if (!id || !run_id_valid(id, strlen(id)) || !st || run_status_parse(st, &status))
		return -1;
	if (src)
		run_source_parse(src, &source);
	memset(e, 0, sizeof *e);
	memcpy(e->id, id, strlen(id) + 1);
	e->job = json_text(m[K_JOB], RUN_MAX_JOB_LEN);
	if (!e->job)
		e->job = xstrdup("unknown");
	e->org = json_text(m[K_ORG], RUN_MAX_ORG_LEN);
	const cJSON *p = m[K_PAYLOAD];
	if (cJSON_IsObject(p)) {
		e->payload = cJSON_PrintUnformatted(p);
		if (e->payload && !rentry_json_valid(e->payload, strlen(e->payload), NULL, 0)) {
			cJSON_free(e->payload);
			e->payload = NULL;
		}
	}
	e->error = json_free_text(m[K_ERROR], RUN_MAX_ERROR_LEN);
	e->consumer = json_free_text(m[K_CONSUMER], CONSUMER_MAX);
	e->idem = json_text(m[K_IDEM], RUN_MAX_IDEM_LEN);
	e->src = run_source_name(source);
	e->status = run_status_name(status);
	int64_t a = json_i64(m[K_ATTEMPT]), mx = json_i64(m[K_MAX]);
	e->attempt = a >= 0 && a <= RENTRY_MAX_ATTEMPTS ? (int)a : 0;
	e->max = mx >= 1 && mx <= RENTRY_MAX_ATTEMPTS ? (int)mx : 1;
	e->runat = json_i64(m[K_RUNAT]);
	e->enq = json_i64(m[K_ENQ]);
	e->started = json_i64(m[K_STARTED]);
	e->finished = json_i64(m[K_FINISHED]);
	e->duration = json_i64(m[K_DURATION]);
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
