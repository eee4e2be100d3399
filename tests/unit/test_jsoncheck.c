/* Unit tests of json_check() and text_valid() (common/jsoncheck.c): the
 * strict rules for JSON and identifiers from outside. */
#include <stdio.h>
#include <string.h>

#include "jsoncheck.h"
#include "unit.h"
#include "util.h"

static int ok(const char *s)
{
	char err[200];
	return json_check(s, strlen(s), JSON_MAX_DEPTH, 0, err, sizeof err) == 0;
}

/* The message of a refused text ("" when accepted). */
static const char *why(const char *s, size_t len, unsigned flags)
{
	static char err[200];
	if (json_check(s, len, JSON_MAX_DEPTH, flags, err, sizeof err) == 0)
		return "";
	return err;
}

static void test_values(void)
{
	CHECK(ok("{}") && ok("[]") && ok(" {\"a\": [1, -2.5e3, true, false, null, \"x\"]} \n"));
	CHECK(ok("0") && ok("-0") && ok("\"\"") && ok("1.5E+2"));
	CHECK(!ok("") && !ok(" ") && !ok("{") && !ok("}") && !ok("[1,]") && !ok("{\"a\"}"));
	CHECK(!ok("{\"a\":1,}") && !ok("{a:1}") && !ok("01") && !ok("1.") && !ok(".5") && !ok("+1"));
	CHECK(!ok("tru") && !ok("nul") && !ok("[1 2]") && !ok("'a'"));
	CHECK(strstr(why("{\"a\":1}{\"b\":2}", 14, 0), "data after the JSON value at byte 7"));
	CHECK(strstr(why("{}}", 3, 0), "data after"));
	CHECK(strstr(why("[]", 2, JSON_CHECK_OBJECT), "expected a JSON object"));
	CHECK(strstr(why("{\"a\":1}\0x", 9, 0), "data after"));   /* explicit length */
}

static void test_depth(void)
{
	char buf[1024];
	size_t n = 0;
	for (int i = 0; i < 64; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, "[");
	for (int i = 0; i < 64; i++)
		buf[n++] = ']';
	CHECK(json_check(buf, n, JSON_MAX_DEPTH, 0, NULL, 0) == 0);
	memmove(buf + 1, buf, n);
	buf[0] = '[';
	buf[++n] = ']';
	n++;
	CHECK(strstr(why(buf, n, 0), "nested deeper than 64 levels at byte 64"));
	CHECK(json_check("[[1]]", 5, 1, 0, NULL, 0) == -1 && json_check("[[1]]", 5, 2, 0, NULL, 0) == 0);
}

static void test_strings(void)
{
	CHECK(ok("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83d\\ude00\""));
	CHECK(ok("\"\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80\""));
	CHECK(strstr(why("\"\\u0000\"", 8, 0), "\\u0000 is not allowed"));
	CHECK(strstr(why("\"\\ud800\"", 8, 0), "unpaired surrogate"));
	CHECK(strstr(why("\"\\udc00\"", 8, 0), "unpaired surrogate"));
	CHECK(strstr(why("\"\\ud800\\u0041\"", 14, 0), "unpaired surrogate"));
	CHECK(strstr(why("\"\\x\"", 4, 0), "invalid escape"));
	CHECK(strstr(why("\"\\u12g4\"", 8, 0), "invalid \\u escape"));
	CHECK(strstr(why("\"a\x01\"", 4, 0), "control character"));
	CHECK(strstr(why("\"a\0\"", 4, 0), "control character"));
	CHECK(strstr(why("\"\xff\"", 3, 0), "invalid UTF-8"));
	CHECK(strstr(why("\"\xc0\xaf\"", 4, 0), "invalid UTF-8"));         /* overlong */
	CHECK(strstr(why("\"\xed\xa0\x80\"", 5, 0), "invalid UTF-8"));     /* surrogate */
	CHECK(strstr(why("\"\xf4\x90\x80\x80\"", 6, 0), "invalid UTF-8")); /* > U+10FFFF */
	CHECK(strstr(why("\"\xe4\xb8\"", 4, 0), "invalid UTF-8"));         /* cut short */
	CHECK(strstr(why("\"abc", 4, 0), "unterminated"));
}

static void test_numbers(void)
{
	CHECK(ok("123456789012345") && ok("-123456789012345") && ok("1000000000000000000000"));
	CHECK(ok("0.000000000000001") && ok("1.5e300") && ok("1e-300") && ok("123456789.012345"));
	CHECK(strstr(why("9007199254740993", 16, 0), "cannot be kept exactly"));
	CHECK(strstr(why("1234567890123456", 16, 0), "cannot be kept exactly"));
	CHECK(strstr(why("0.1234567890123456", 18, 0), "cannot be kept exactly"));
	CHECK(strstr(why("1e999999", 8, 0), "out of range"));
	CHECK(strstr(why("-1e309", 6, 0), "out of range"));
	CHECK(strstr(why("1e-999999", 9, 0), "out of range"));
	CHECK(ok("0e999999"));   /* zero stays zero */
}

static void test_text(void)
{
	CHECK(text_valid("org-42", 6, 128) && text_valid("org \xc3\xa9", 6, 128));
	CHECK(!text_valid("", 0, 128) && !text_valid("abc", 3, 2));
	CHECK(!text_valid("a\nb", 3, 128) && !text_valid("a\x7f", 2, 128) && !text_valid("a\0b", 3, 128));
	CHECK(!text_valid("\xc2\x85", 2, 128));   /* C1 NEL */
	CHECK(text_valid("\xc2\xa0", 2, 128));    /* NBSP is text */
	CHECK(!text_valid("\xff", 1, 128) && !text_valid("\x1b[31m", 5, 128));
}

static void test_clean(void)
{
	char out[8];
	CHECK(text_clean(out, "abc", 7) == 3 && unit_streq(out, "abc"));
	CHECK(text_clean(out, "a\nb\x1b\xff", 7) == 5 && unit_streq(out, "a?b??"));
	/* cut on a character boundary: the 3-byte character does not fit */
	CHECK(text_clean(out, "abcde\xe4\xb8\xad", 7) == 5 && unit_streq(out, "abcde"));
	CHECK(text_clean(out, "ab\xc3\xa9", 7) == 4 && unit_streq(out, "ab\xc3\xa9"));
	CHECK(text_clean(out, "", 7) == 0 && out[0] == '\0');
}

UNIT_MAIN(UNIT_TEST(values),
	  UNIT_TEST(depth),
	  UNIT_TEST(strings),
	  UNIT_TEST(numbers),
	  UNIT_TEST(text),
	  UNIT_TEST(clean))
