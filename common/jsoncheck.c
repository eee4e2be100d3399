/* jsoncheck.c -- see jsoncheck.h. */
#include "jsoncheck.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define STACK_MAX 256

size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	if (n == 0)
		return 0;
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t need;
	unsigned char lo = 0x80, hi = 0xbf;   /* range of the second byte */
	if (c >= 0xc2 && c <= 0xdf)
		need = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		need = 3;
		if (c == 0xe0)
			lo = 0xa0;              /* no overlong forms */
		else if (c == 0xed)
			hi = 0x9f;              /* no surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;              /* nothing above U+10FFFF */
	} else {
		return 0;
	}
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return need;
}

int text_valid(const char *s, size_t n, size_t max)
{
	if (!s || n == 0 || n > max)
		return 0;
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			return 0;
		size_t k = utf8_seq_len(p + i, n - i);
		if (k == 0 || (k == 2 && p[i] == 0xc2 && p[i + 1] <= 0x9f))   /* C1 */
			return 0;
		i += k;
	}
	return 1;
}

size_t text_clean(char *out, const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), w = 0;
	for (size_t i = 0; i < n;) {
		size_t k = p[i] < 0x20 || p[i] == 0x7f ? 0 : utf8_seq_len(p + i, n - i);
		if (w + (k ? k : 1) > max)
			break;
		if (k) {
			memcpy(out + w, p + i, k);
			w += k;
			i += k;
		} else {
			out[w++] = '?';
			i++;
		}
	}
	out[w] = '\0';
	return w;
}

struct jc {
	const unsigned char *s, *p, *end;
	char *err;
	size_t errlen;
};

static int fail(struct jc *c, const char *fmt, ...) JR_PRINTF(2, 3);
static int fail(struct jc *c, const char *fmt, ...)
{
	if (c->err && c->errlen) {
		char what[160];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(what, sizeof what, fmt, ap);
		va_end(ap);
		snprintf(c->err, c->errlen, "%s at byte %zu", what, (size_t)(c->p - c->s));
	}
	return -1;
}

static void skip_ws(struct jc *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int hex4(const unsigned char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char h = p[i];
		v <<= 4;
		if (h >= '0' && h <= '9')
			v |= h - '0';
		else if (h >= 'a' && h <= 'f')
			v |= h - 'a' + 10;
		else if (h >= 'A' && h <= 'F')
			v |= h - 'A' + 10;
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* c->p at the opening quote; leaves it after the closing one. */
static int string(struct jc *c)
{
	c->p++;
	for (;;) {
		if (c->p >= c->end)
			return fail(c, "unterminated string");
		unsigned char ch = *c->p;
		if (ch == '"') {
			c->p++;
			return 0;
		}
		if (ch < 0x20)
			return fail(c, "control character in a string");
		if (ch == '\\') {
			if (c->end - c->p < 2)
				return fail(c, "unterminated string");
			unsigned char e = c->p[1];
			if (e != 'u') {
				if (!strchr("\"\\/bfnrt", e) || e == 0)
					return fail(c, "invalid escape");
				c->p += 2;
				continue;
			}
			unsigned u;
			if (c->end - c->p < 6 || hex4(c->p + 2, &u))
				return fail(c, "invalid \\u escape");
			if (u == 0)
				return fail(c, "\\u0000 is not allowed");
			if (u >= 0xdc00 && u <= 0xdfff)
				return fail(c, "unpaired surrogate escape");
			if (u >= 0xd800 && u <= 0xdbff) {
				unsigned lo;
				if (c->end - c->p < 12 || c->p[6] != '\\' || c->p[7] != 'u' ||
				    hex4(c->p + 8, &lo) || lo < 0xdc00 || lo > 0xdfff)
					return fail(c, "unpaired surrogate escape");
				c->p += 12;
				continue;
			}
			c->p += 6;
			continue;
		}
		if (ch < 0x80) {
			c->p++;
			continue;
		}
		size_t k = utf8_seq_len(c->p, (size_t)(c->end - c->p));
		if (!k)
			return fail(c, "invalid UTF-8");
		c->p += k;
	}
}

static int is_digit(unsigned char ch)
{
	return ch >= '0' && ch <= '9';
}

/* c->p at '-' or a digit. */
static int number(struct jc *c)
{
	const unsigned char *start = c->p;
	int sig = 0, seen_nonzero = 0, zeros = 0;
	if (*c->p == '-')
		c->p++;
	if (c->p >= c->end || !is_digit(*c->p))
		return fail(c, "invalid number");
	if (*c->p == '0') {
		c->p++;
		if (c->p < c->end && is_digit(*c->p))
			return fail(c, "invalid number (leading zero)");
	} else {
		while (c->p < c->end && is_digit(*c->p)) {
			/* significant digits: from the first non-zero to the last */
			if (*c->p != '0') {
				sig += seen_nonzero ? zeros + 1 : 1;
				seen_nonzero = 1;
				zeros = 0;
			} else {
				zeros++;
			}
			c->p++;
		}
	}
	if (c->p < c->end && *c->p == '.') {
		c->p++;
		if (c->p >= c->end || !is_digit(*c->p))
			return fail(c, "invalid number");
		while (c->p < c->end && is_digit(*c->p)) {
			if (*c->p != '0') {
				sig += seen_nonzero ? zeros + 1 : 1;
				seen_nonzero = 1;
				zeros = 0;
			} else if (seen_nonzero) {
				zeros++;
			}
			c->p++;
		}
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
			c->p++;
		if (c->p >= c->end || !is_digit(*c->p))
			return fail(c, "invalid number");
		while (c->p < c->end && is_digit(*c->p))
			c->p++;
	}
	if (sig > JSON_MAX_NUMBER_DIGITS) {
		c->p = start;
		return fail(c, "number with more than %d significant digits cannot be kept exactly",
			    JSON_MAX_NUMBER_DIGITS);
	}
	size_t n = (size_t)(c->p - start);
	char buf[64];
	if (n >= sizeof buf) {   /* long only through its exponent or zeros */
		c->p = start;
		return fail(c, "number too long");
	}
	memcpy(buf, start, n);
	buf[n] = '\0';
	errno = 0;
	double d = strtod(buf, NULL);
	if (errno == ERANGE || !isfinite(d) || (seen_nonzero && d == 0)) {
		c->p = start;
		return fail(c, "number out of range");
	}
	return 0;
}

static int literal(struct jc *c, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n))
		return fail(c, "invalid literal");
	c->p += n;
	return 0;
}

int json_check(const char *s, size_t len, int max_depth, unsigned flags, char *err,
	       size_t errlen)
{
	struct jc c = { (const unsigned char *)s, (const unsigned char *)s,
			(const unsigned char *)s + len, err, errlen };
	char stack[STACK_MAX];
	int sp = 0;
	if (max_depth < 0 || max_depth > STACK_MAX)
		max_depth = STACK_MAX;
	if (err && errlen)
		err[0] = '\0';
	skip_ws(&c);
	if ((flags & JSON_CHECK_OBJECT) && (c.p >= c.end || *c.p != '{'))
		return fail(&c, "expected a JSON object");
value:
	skip_ws(&c);
	if (c.p >= c.end)
		return fail(&c, "unexpected end of JSON");
	switch (*c.p) {
	case '{':
	case '[':
		if (sp == max_depth)
			return fail(&c, "nested deeper than %d levels", max_depth);
		stack[sp++] = (char)*c.p;
		c.p++;
		skip_ws(&c);
		if (c.p < c.end && *c.p == (stack[sp - 1] == '{' ? '}' : ']')) {
			c.p++;
			sp--;
			goto after;
		}
		if (stack[sp - 1] == '{')
			goto key;
		goto value;
	case '"':
		if (string(&c))
			return -1;
		goto after;
	case 't':
	case 'f':
	case 'n':
		if (literal(&c, *c.p == 't' ? "true" : *c.p == 'f' ? "false" : "null"))
			return -1;
		goto after;
	default:
		if (*c.p == '-' || is_digit(*c.p)) {
			if (number(&c))
				return -1;
			goto after;
		}
		return fail(&c, "unexpected character");
	}
key:
	skip_ws(&c);
	if (c.p >= c.end || *c.p != '"')
		return fail(&c, "expected a string key");
	if (string(&c))
		return -1;
	skip_ws(&c);
	if (c.p >= c.end || *c.p != ':')
		return fail(&c, "expected ':'");
	c.p++;
	goto value;
after:
	skip_ws(&c);
	if (sp == 0) {
		if (c.p != c.end)
			return fail(&c, "data after the JSON value");
		return 0;
	}
	if (c.p >= c.end)
		return fail(&c, "unexpected end of JSON");
	if (*c.p == ',') {
		c.p++;
		if (stack[sp - 1] == '{')
			goto key;
		goto value;
	}
	if (*c.p == (stack[sp - 1] == '{' ? '}' : ']')) {
		c.p++;
		sp--;
		goto after;
	}
	return fail(&c, "expected ',' or the end of the %s", stack[sp - 1] == '{' ? "object" : "array");
}
