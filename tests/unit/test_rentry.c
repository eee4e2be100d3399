/* Unit tests of stream-entry decoding (rentry_parse) on hand-built replies. */
#include <stdlib.h>
#include <string.h>

#include "rentry.h"
#include "run.h"
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

int main(void)
{
	static const struct unit_test tests[] = {
		{ "valid_run", test_valid_run },
		{ "embedded_nul_is_malformed", test_embedded_nul_is_malformed },
	};
	return unit_run(tests, sizeof tests / sizeof tests[0]);
}
