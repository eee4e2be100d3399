/* Unit tests of stream-entry decoding (rentry_parse) on hand-built replies. */
#include <stdlib.h>
#include <string.h>

#include "rentry.h"
#include "revent.h"
#include "run.h"
#include "util.h"
#include "unit.h"

/* Builds an array reply of n strings (lens given: binary-safe). */
static redisReply *fields(size_t n, const char *const *s, const size_t *lens)
{
	redisReply *a = calloc(1, sizeof *a);
	a->type = REDIS_REPLY_ARRAY;
	a->elements = n;
	a->element = calloc(n, sizeof *a->element);
	for (size_t i = 0; i < n; i++) {
		redisReply *e = calloc(1, sizeof *e);
		e->type = REDIS_REPLY_STRING;
		e->len = lens[i];
		e->str = malloc(lens[i] + 1);
		memcpy(e->str, s[i], lens[i]);
		e->str[lens[i]] = '\0';
		a->element[i] = e;
	}
	return a;
}

static int parse(const char *const *s, const size_t *lens, size_t n, struct run *r, char *err)
{
	redisReply *a = fields(n, s, lens);
	int64_t slot = -1;
	memset(r, 0, sizeof *r);
	int rc = rentry_parse(a, "1700000000000-0", 5, r, &slot, err, 256);
	freeReplyObject(a);
	return rc;
}

static void test_valid_run(void)
{
	const char *s[] = { "v", "1", "type", "run", "id", "01a223a3-fb04-73f5-a872-6fef691889ed",
			    "job", "noop", "src", "adhoc", "attempt", "0", "max", "3" };
	size_t l[14];
	for (int i = 0; i < 14; i++)
		l[i] = strlen(s[i]);
	struct run r;
	char err[256];
	CHECK(parse(s, l, 14, &r, err) == 0);
	CHECK_STR(r.job, "noop");
	CHECK(r.max_attempts == 3);
	run_clear(&r);
}

static void test_embedded_nul_is_malformed(void)
{
	/* "1\0junk" must not pass for version "1", nor "run\0x" for type "run" */
	const char *s[] = { "v", "1\0junk", "type", "run", "id", "01a223a3-fb04-73f5-a872-6fef691889ed",
			    "job", "noop" };
	size_t l[8];
	for (int i = 0; i < 8; i++)
		l[i] = strlen(s[i]);
	l[1] = 6;
	struct run r;
	char err[256];
	CHECK(parse(s, l, 8, &r, err) != 0);
	CHECK(strstr(err, "malformed") != NULL);
	run_clear(&r);

	const char *t[] = { "v", "1", "type", "run\0x", "id", "01a223a3-fb04-73f5-a872-6fef691889ed",
			    "job", "noop" };
	for (int i = 0; i < 8; i++)
		l[i] = strlen(t[i]);
	l[3] = 5;
	CHECK(parse(t, l, 8, &r, err) != 0);
	run_clear(&r);

	const char *u[] = { "v", "1", "type", "run", "id", "01a223a3-fb04-73f5-a872-6fef691889ed",
			    "job", "noop", "src", "adhoc\0zz" };
	size_t lu[10];
	for (int i = 0; i < 10; i++)
		lu[i] = strlen(u[i]);
	lu[9] = 8;
	CHECK(parse(u, lu, 10, &r, err) != 0);
	run_clear(&r);
}

struct got {
	struct revent ev[4];
	size_t n;
};

static void collect_event(struct revent *ev, void *arg)
{
	struct got *g = arg;
	if (g->n < 4)
		g->ev[g->n++] = *ev;
	else
		revent_clear(ev);
}

/* revent_encode writes JSON that revent_decode reads back member for
 * member: quotes, backslashes, control characters, UTF-8, absent members,
 * a payload object, and one not JSON (left out). */
static void test_event_round_trip(void)
{
	struct revent a = { .job = "noop", .org = "o\"rg\\1", .payload = "{\"k\":[1,\"\\u00e9\"]}",
			    .error = "boom\n\ttab \x01 caf\xc3\xa9 bad\xff", .consumer = "c-1",
			    .idem = "key \xe2\x82\xac", .src = "adhoc", .status = "failed",
			    .attempt = 2, .max = 5, .runat = 1700000000123, .enq = 1700000000000,
			    .started = 1700000000050, .finished = 1700000000060, .duration = 10 };
	memcpy(a.id, "01a223a3-fb04-73f5-a872-6fef691889ed", 37);
	struct revent b = { .job = NULL, .payload = "not json", .src = "cycle", .status = "succeeded",
			    .attempt = 1, .max = 1, .runat = -1, .enq = 5, .started = -1, .finished = -1,
			    .duration = -1 };
	memcpy(b.id, "run.2:x_y", 10);
	struct strbuf sb = STRBUF_INIT;
	sb_add(&sb, "[", 1);
	revent_encode(&sb, &a);
	sb_add(&sb, ",", 1);
	revent_encode(&sb, &b);
	sb_add(&sb, "]", 1);
	const char *f[] = { "v", "1", "n", "2", "e", sb.buf };
	size_t lens[] = { 1, 1, 1, 1, 1, sb.len };
	redisReply *r = fields(6, f, lens);
	struct got g = { .n = 0 };
	size_t bad = 0;
	CHECK(revent_decode(r, collect_event, &g, &bad) == 2 && bad == 0 && g.n == 2);
	freeReplyObject(r);
	if (g.n == 2) {
		struct revent *x = &g.ev[0], *y = &g.ev[1];
		CHECK_STR(x->id, a.id);
		CHECK_STR(x->job, "noop");
		CHECK_STR(x->org, "o\"rg\\1");
		CHECK_STR(x->payload, "{\"k\":[1,\"\xc3\xa9\"]}");
		/* the error is cleaned first (text_clean: control bytes and invalid UTF-8 as '?') */
		CHECK_STR(x->error, "boom??tab ? caf\xc3\xa9 bad?");
		CHECK_STR(x->consumer, "c-1");
		CHECK_STR(x->idem, "key \xe2\x82\xac");
		CHECK_STR(x->src, "adhoc");
		CHECK_STR(x->status, "failed");
		CHECK(x->attempt == 2 && x->max == 5 && x->runat == 1700000000123 &&
		      x->enq == 1700000000000 && x->started == 1700000000050 &&
		      x->finished == 1700000000060 && x->duration == 10);
		CHECK_STR(y->id, "run.2:x_y");
		CHECK_STR(y->job, "unknown");
		CHECK(!y->org && !y->payload && !y->error && !y->consumer && !y->idem);
		CHECK_STR(y->src, "cycle");
		CHECK(y->attempt == 1 && y->max == 1 && y->enq == 5 && y->runat == -1 &&
		      y->started == -1 && y->finished == -1 && y->duration == -1);
	}
	for (size_t i = 0; i < g.n; i++)
		revent_clear(&g.ev[i]);
	sb_release(&sb);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "valid_run", test_valid_run },
		{ "embedded_nul_is_malformed", test_embedded_nul_is_malformed },
		{ "event_round_trip", test_event_round_trip },
	};
	return unit_run(tests, sizeof tests / sizeof tests[0]);
}
