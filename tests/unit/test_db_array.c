/* Unit tests of db_array_add: PostgreSQL array literal elements, quoted and
 * escaped, NULL for a NULL value. */
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "unit.h"
#include "util.h"

/* "{" + the elements + "}" as the callers build it. */
static char *literal(const char *const *v, size_t n)
{
	struct strbuf sb = STRBUF_INIT;
	sb_add(&sb, "{", 1);
	for (size_t i = 0; i < n; i++) {
		if (i)
			sb_add(&sb, ",", 1);
		db_array_add(&sb, v[i]);
	}
	sb_add(&sb, "}", 1);
	char *out = xstrdup(sb.buf);
	sb_release(&sb);
	return out;
}

static void test_plain_and_null(void)
{
	const char *v[] = { "01a223a3-fb04-73f5-a872-6fef691889ed", NULL, "", "a b,c{d}" };
	char *s = literal(v, 4);
	CHECK_STR(s, "{\"01a223a3-fb04-73f5-a872-6fef691889ed\",NULL,\"\",\"a b,c{d}\"}");
	free(s);
}

static void test_quotes_and_backslashes_are_escaped(void)
{
	const char *v[] = { "\"", "\\", "say \"hi\" \\o/", "\\\"end" };
	char *s = literal(v, 4);
	CHECK_STR(s, "{\"\\\"\",\"\\\\\",\"say \\\"hi\\\" \\\\o/\",\"\\\\\\\"end\"}");
	free(s);
}

static void test_long_value(void)
{
	char big[5000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	big[2500] = '"';
	const char *v[] = { big };
	char *s = literal(v, 1);
	CHECK(strlen(s) == sizeof big - 1 + 1 + 4);
	CHECK(!strncmp(s + 2 + 2500, "\\\"", 2));
	free(s);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "plain_and_null", test_plain_and_null },
		{ "quotes_and_backslashes_are_escaped", test_quotes_and_backslashes_are_escaped },
		{ "long_value", test_long_value },
	};
	return unit_run(tests, sizeof tests / sizeof tests[0]);
}
