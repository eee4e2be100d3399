/* runlookup.c -- see runlookup.h. */
#include "runlookup.h"

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "queue_redis.h"
#include "rconn.h"
#include "rentry.h"
#include "revent.h"
#include "run.h"
#include "util.h"

int64_t runlookup_id_ms(const char *id)
{
	/* xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx: the time is the first 12 hex digits */
	if (!id || strlen(id) != 36 || id[8] != '-' || id[13] != '-' || id[14] != '7')
		return 0;
	int64_t ms = 0;
	for (int i = 0; i < 13; i++) {
		if (i == 8)
			continue;
		char c = id[i];
		int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
		      : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (v < 0)
			return 0;
		ms = ms * 16 + v;
	}
	return ms;
}

/* the newest event of the run in one jr:events entry */
struct pick {
	const char *id;
	struct revent ev;
	int found;
};

static void pick_event(struct revent *ev, void *arg)
{
	struct pick *p = arg;
	if (strcmp(ev->id, p->id)) {
		revent_clear(ev);
		return;
	}
	if (p->found)
		revent_clear(&p->ev);
	p->ev = *ev;
	p->found = 1;
}

static void add_time(cJSON *o, const char *k, int64_t ms)
{
	if (ms > 0) {
		char t[40];
		iso8601_ms(ms, t, sizeof t);
		cJSON_AddStringToObject(o, k, t);
	} else {
		cJSON_AddNullToObject(o, k);
	}
}

static void add_str(cJSON *o, const char *k, const char *v)
{
	if (v)
		cJSON_AddStringToObject(o, k, v);
	else
		cJSON_AddNullToObject(o, k);
}

/* What the run object is made of: an entry (or lane / delayed member) or
 * an event, and what the lookup adds. */
struct view {
	const char *id, *job, *org, *status, *error, *consumer, *src, *payload;
	int attempts, max;
	int64_t enq, started, finished, duration, runat;
};

/* The run object in control_run_json()'s key order, "recorded": false. */
static cJSON *view_json(const struct view *v)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "id", v->id);
	add_str(o, "job", v->job);
	add_str(o, "orgId", v->org);
	cJSON_AddStringToObject(o, "status", v->status);
	cJSON_AddNumberToObject(o, "attempts", v->attempts);
	add_time(o, "enqueuedAt", v->enq);
	add_time(o, "startedAt", v->started);
	add_time(o, "finishedAt", v->finished);
	if (v->duration >= 0)
		cJSON_AddNumberToObject(o, "durationMs", (double)v->duration);
	else
		cJSON_AddNullToObject(o, "durationMs");
	add_str(o, "error", v->error);
	add_str(o, "consumer", v->consumer);
	cJSON_AddNumberToObject(o, "maxAttempts", v->max);
	add_str(o, "source", v->src);
	cJSON_AddItemToObject(o, "payload", cJSON_CreateRaw(v->payload ? v->payload : "{}"));
	add_time(o, "runAt", v->runat);
	cJSON_AddNullToObject(o, "cancelRequestedAt");
	cJSON_AddFalseToObject(o, "recorded");
	return o;
}

static void view_of_run(struct view *v, const struct run *r)
{
	v->job = r->job;
	v->org = r->org_id;
	v->src = run_source_name(r->source);
	v->payload = r->payload;
	v->attempts = r->attempt;
	v->max = r->max_attempts;
	v->enq = r->enqueued_at_ms;
	v->runat = r->run_at_ms;
	v->started = v->finished = 0;
	v->duration = -1;
}

static void view_of_event(struct view *v, const struct revent *e)
{
	v->job = e->job;
	v->org = e->org;
	v->src = e->src;
	v->payload = e->payload;
	v->error = e->error;
	v->consumer = e->consumer;
	v->attempts = e->attempt;
	v->max = e->max;
	v->enq = e->enq;
	v->started = e->started;
	v->finished = e->finished;
	v->duration = e->duration;
	v->runat = e->runat;
}

static int str_is(const redisReply *r, const char *s)
{
	return r->type == REDIS_REPLY_STRING && r->len == strlen(s) && !memcmp(r->str, s, r->len);
}

static int flag(const redisReply *r)
{
	return r->type == REDIS_REPLY_INTEGER && r->integer == 1;
}

#define CANDIDATES 5   /* deliveries before a deferral that the exact members cover */

/* Decides from one reply of the script.  *bare: the newest entry is
 * acknowledged and nothing else was found (a success, unless its run waits
 * in jr:delayed beyond the bounded search); then cand[0..CANDIDATES) get
 * the members a consumer would have put in jr:delayed for it (parked as
 * read, or deferred after 1..CANDIDATES-1 deliveries: rentry_delayed_json()
 * of the entry as the consumer parsed it) and expect its entry id. */
static void decide(const char *id, const redisReply *r, int default_max, enum runlookup_result *res,
		   cJSON **out, int *bare, struct strbuf cand[CANDIDATES], char *expect, size_t expectlen)
{
	redisReply **el = r->element;
	const redisReply *eid = el[0], *efields = el[1], *state = el[2], *owner = el[3], *count = el[4];
	const redisReply *vid = el[6], *vfields = el[7], *where = el[9], *wfields = el[10], *score = el[11];
	int runs_all = flag(el[5]), events_all = flag(el[8]), waiting_all = flag(el[12]);
	int64_t now = wall_ms();
	*res = RUNLOOKUP_UNSURE;
	*bare = 0;

	struct run entry, waiting;
	memset(&entry, 0, sizeof entry);
	memset(&waiting, 0, sizeof waiting);
	int64_t slot;
	char err[200];
	int has_eid = eid->type == REDIS_REPLY_STRING && eid->len > 0;
	int have_entry = has_eid && rentry_parse(efields, eid->str, default_max, &entry, &slot, err, sizeof err) == 0 &&
			 !entry.is_tick && !strcmp(entry.id, id);
	if (!have_entry)
		run_clear(&entry);   /* an entry that does not parse: as if none */
	int has_where = where->type == REDIS_REPLY_STRING && where->len > 0;
	int have_waiting = has_where &&
			   rentry_parse(wfields, has_eid ? eid->str : "0-0", default_max, &waiting, &slot, err,
					sizeof err) == 0 &&
			   !waiting.is_tick && !strcmp(waiting.id, id);
	if (!have_waiting)
		run_clear(&waiting);
	struct pick ev = { .id = id };
	if (vid->type == REDIS_REPLY_STRING && vid->len > 0) {
		size_t bad = 0;
		revent_decode(vfields, pick_event, &ev, &bad);
	}
	/* the event counts if it is not older than the newest entry (both ids
	 * are Redis's clock: the event of the entry's own end comes after it) */
	int event_after = ev.found && (!have_entry || rentry_id_ms(vid->str) >= rentry_id_ms(eid->str));

	struct view v = { .id = id, .duration = -1 };
	const char *st = NULL;
	if (have_entry && (str_is(state, "queued") || str_is(state, "pending"))) {
		view_of_run(&v, &entry);
		if (str_is(state, "pending")) {
			/* attempts: those made before the entry, and its deliveries */
			int64_t n = count->type == REDIS_REPLY_INTEGER ? count->integer : 1;
			v.attempts = entry.attempt + (int)(n > 0 && n < RENTRY_MAX_ATTEMPTS ? n : 1);
			if (v.attempts > v.max)
				v.attempts = v.max;
			v.consumer = owner->type == REDIS_REPLY_STRING && owner->len ? owner->str : NULL;
			if (event_after && !strcmp(ev.ev.status, "running") && ev.ev.started > 0)
				v.started = ev.ev.started;
			st = "running";
		} else {
			st = "queued";
		}
		if (entry.run_at_ms > now)
			st = "delayed";   /* parked by the consumer that reads it */
	} else if (event_after && strcmp(ev.ev.status, "running")) {
		const struct revent *e = &ev.ev;
		view_of_event(&v, e);
		st = !strcmp(e->status, "queued") && e->runat > now ? "delayed" : e->status;
	} else if (have_waiting) {
		view_of_run(&v, &waiting);
		if (str_is(where, "delayed")) {
			v.runat = score->type == REDIS_REPLY_INTEGER ? score->integer : waiting.run_at_ms;
			st = v.runat > now ? "delayed" : "queued";
		} else {
			st = "queued";
		}
	} else if (have_entry && str_is(state, "acked")) {
		*bare = 1;
		for (int k = 0; k < CANDIDATES; k++) {
			sb_reset(&cand[k]);
			rentry_delayed_json(&cand[k], &entry, entry.attempt + k);
		}
		snprintf(expect, expectlen, "%s", eid->str);
		if (runs_all && events_all && waiting_all) {
			/* acknowledged without an event, in no lane and not
			 * delayed: the end of its first attempt, a success (kind
			 * 's' of complete.lua) */
			view_of_run(&v, &entry);
			v.attempts = entry.attempt + 1;
			if (v.attempts > v.max)
				v.attempts = v.max;
			st = "succeeded";
		}
	}
	if (st) {
		v.status = st;
		*out = view_json(&v);
		*res = RUNLOOKUP_FOUND;
	} else if (!have_entry && !ev.found && !have_waiting && runs_all && events_all && waiting_all) {
		*res = RUNLOOKUP_GONE;
	}
	run_clear(&entry);
	run_clear(&waiting);
	if (ev.found)
		revent_clear(&ev.ev);
}

int runlookup(struct queue *rq, const char *id, enum runlookup_result *res, cJSON **out)
{
	*out = NULL;
	*res = RUNLOOKUP_UNSURE;
	int default_max = rq->cfg && rq->cfg->job_max_attempts > 0 ? (int)rq->cfg->job_max_attempts : 5;
	struct strbuf cand[CANDIDATES];
	for (int k = 0; k < CANDIDATES; k++)
		cand[k] = (struct strbuf)STRBUF_INIT;
	char expect[64] = "";
	int rc = 0;
	int64_t id_ms = runlookup_id_ms(id);
	/* pass 2 only for an acknowledged entry without anything else: the
	 * same script again, with that entry's exact jr:delayed members (a
	 * second look, not a second half: it sees everything anew, atomically) */
	for (int pass = 0; pass < 2; pass++) {
		redisReply *r;
		rc = queue_redis_lookup(rq, id, id_ms, pass ? expect : NULL, cand, CANDIDATES, &r);
		if (rc)
			break;
		int bare;
		cJSON_Delete(*out);
		*out = NULL;
		decide(id, r, default_max, res, out, &bare, cand, expect, sizeof expect);
		rconn_free(r);
		if (!bare)
			break;
	}
	for (int k = 0; k < CANDIDATES; k++)
		sb_release(&cand[k]);
	if (rc) {
		cJSON_Delete(*out);
		*out = NULL;
	}
	return rc;
}
