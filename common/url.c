/* url.c -- see url.h.
 *
 * One split (url_split) serves the parser, the redaction and the Graph
 * client's path helper, so that what a message hides is exactly what the
 * parser reads as the password.
 *
 * Rejected: libcurl's CURLU for redis URLs (it is loaded on demand by the
 * Graph client only, knows no host lists, and reads the userinfo at the
 * first '@', so an unencoded '@' in a password would become part of the
 * host -- and of messages).
 */
#include "url.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

static const struct {
	const char *name;
	enum url_scheme scheme;
} schemes[] = {
	{ "redis", URL_REDIS },
	{ "rediss", URL_REDISS },
	{ "redis-sentinel", URL_REDIS_SENTINEL },
	{ "rediss-sentinel", URL_REDISS_SENTINEL },
	{ "http", URL_HTTP },
	{ "https", URL_HTTPS },
};

static enum url_scheme scheme_of(const char *s, size_t n)
{
	for (size_t i = 0; i < JR_ARRAY_LEN(schemes); i++)
		if (strlen(schemes[i].name) == n && !strncasecmp(s, schemes[i].name, n))
			return schemes[i].scheme;
	return URL_OTHER;
}


static int is_redis(enum url_scheme s)
{
	return s == URL_REDIS || s == URL_REDISS || s == URL_REDIS_SENTINEL || s == URL_REDISS_SENTINEL;
}

int url_split(const char *s, struct url_parts *p)
{
	memset(p, 0, sizeof *p);
	p->rest = s;
	const char *sep = strstr(s, "://");
	if (!sep || sep == s)
		return -1;
	for (const char *c = s; c < sep; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		      *c == '+' || *c == '-' || *c == '.'))
			return -1;
	p->scheme = s;
	p->scheme_len = (size_t)(sep - s);
	const char *a = sep + 3;
	enum url_scheme sch = scheme_of(s, p->scheme_len);
	/* where the user information ends: http(s) as RFC 3986 says (the
	 * authority ends at the first / ? #); other schemes at the last '@'
	 * of the whole string, so that a password holding '/', '?' or '#'
	 * unencoded is still hidden whole */
	const char *at = NULL;
	if (sch == URL_HTTP || sch == URL_HTTPS) {
		size_t alen = strcspn(a, "/?#");
		for (const char *c = a; c < a + alen; c++)
			if (*c == '@')
				at = c;
	} else {
		at = strrchr(a, '@');
	}
	const char *h = a;
	if (at) {
		const char *colon = memchr(a, ':', (size_t)(at - a));
		if (colon) {
			p->user = a;
			p->user_len = (size_t)(colon - a);
			p->password = colon + 1;
			p->password_len = (size_t)(at - colon - 1);
		} else if (is_redis(sch)) {
			p->password = a;   /* redis://secret@host: a password, as redis-cli reads it */
			p->password_len = (size_t)(at - a);
		} else {
			p->user = a;       /* postgresql://user@host: a user, as RFC 3986 reads it */
			p->user_len = (size_t)(at - a);
		}
		h = at + 1;
	}
	p->hosts = h;
	p->hosts_len = strcspn(h, "/?#");
	p->rest = h + p->hosts_len;
	return 0;
}

/* ------------------------------------------------------------------ */
/* parsing                                                             */
/* ------------------------------------------------------------------ */

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Percent-decodes s[0..n) into out (n + 1 bytes); -1 on "%00". */
static int pct_decode_into(const char *s, size_t n, char *out)
{
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)s[i + 1])) >= 0 &&
		    (lo = hexval((unsigned char)s[i + 2])) >= 0) {
			if (hi == 0 && lo == 0)
				return -1;
			out[j++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[j++] = s[i];
		}
	}
	out[j] = '\0';
	return 0;
}

static char *pct_decode(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	if (pct_decode_into(s, n, out)) {
		free(out);
		return NULL;
	}
	return out;
}

static int failf(char *err, size_t errlen, const char *fmt, ...) JR_PRINTF(3, 4);
static int failf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Reads "1".."65535" from s[0..n): the port or -1. */
static int parse_port(const char *s, size_t n)
{
	char buf[8];
	int64_t v;
	if (n == 0 || n >= sizeof buf)
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (parse_i64(buf, 1, 65535, &v))
		return -1;
	return (int)v;
}

static int parse_host(const char *s, size_t n, int dflt_port, struct url_host *h, const char **why)
{
	const char *hs = s, *he, *portp = NULL;
	const char *end = s + n;
	if (n && *s == '[') {
		hs = s + 1;
		he = memchr(hs, ']', (size_t)(end - hs));
		if (!he) {
			*why = "unterminated [ in a host";
			return -1;
		}
		if (he + 1 < end) {
			if (he[1] != ':') {
				*why = "unexpected text after ]";
				return -1;
			}
			portp = he + 2;
		}
	} else {
		he = memchr(s, ':', n);
		if (he)
			portp = he + 1;
		else
			he = end;
	}
	if (he == hs || (size_t)(he - hs) > URL_MAX_HOST_LEN) {
		*why = "missing or too long host";
		return -1;
	}
	for (const char *c = hs; c < he; c++)
		if ((unsigned char)*c <= ' ' || *c == '[' || *c == ']' || *c == '%' || *c == '\\' ||
		    (*s != '[' && *c == ':')) {
			*why = "invalid character in a host name";
			return -1;
		}
	memcpy(h->name, hs, (size_t)(he - hs));
	h->name[he - hs] = '\0';
	h->port = dflt_port;
	if (portp) {
		h->port = parse_port(portp, (size_t)(end - portp));
		if (h->port < 0) {
			*why = "invalid port (1 to 65535)";
			return -1;
		}
	}
	return 0;
}

int url_parse(const char *s, struct url *u, char *err, size_t errlen)
{
	memset(u, 0, sizeof *u);
	struct url_parts p;
	if (!s || url_split(s, &p)) {
		snprintf(err, errlen, "not a URL (expected scheme://...)");
		return -1;
	}
	char sch[24];
	snprintf(sch, sizeof sch, "%.*s", (int)(p.scheme_len < 20 ? p.scheme_len : 20), p.scheme);
	u->scheme = scheme_of(p.scheme, p.scheme_len);
	if (u->scheme == URL_OTHER)
		return failf(err, errlen, "unknown scheme %s:// (expected redis://, rediss://, "
			     "redis-sentinel://, rediss-sentinel://, http:// or https://)", sch);
	u->tls = u->scheme == URL_REDISS || u->scheme == URL_REDISS_SENTINEL || u->scheme == URL_HTTPS;
	u->sentinel = u->scheme == URL_REDIS_SENTINEL || u->scheme == URL_REDISS_SENTINEL;
	if (p.user && p.user_len) {
		u->user = pct_decode(p.user, p.user_len);
		if (!u->user)
			return failf(err, errlen, "%s:// URL: an encoded NUL byte in the user name", sch);
	}
	if (p.password && p.password_len) {
		u->password = pct_decode(p.password, p.password_len);
		if (!u->password)
			return failf(err, errlen, "%s:// URL: an encoded NUL byte in the password", sch);
	}
	int dflt = u->sentinel ? 26379 : u->scheme == URL_HTTP ? 80 : u->scheme == URL_HTTPS ? 443 : 6379;
	const char *why = NULL;
	const char *h = p.hosts, *hend = p.hosts + p.hosts_len;
	while (h <= hend) {
		const char *comma = memchr(h, ',', (size_t)(hend - h));
		const char *e = comma ? comma : hend;
		if (u->nhosts == URL_MAX_HOSTS) {
			why = "too many hosts";
			break;
		}
		if (parse_host(h, (size_t)(e - h), dflt, &u->hosts[u->nhosts], &why))
			break;
		u->nhosts++;
		if (!comma)
			break;
		h = comma + 1;
	}
	if (why) {
		snprintf(err, errlen, "%s:// URL: %s", sch, why);
		return -1;
	}
	if (u->nhosts > 1 && !u->sentinel)
		return failf(err, errlen, "%s:// URL: a host list is only accepted in the sentinel "
			     "form (redis-sentinel://host1:port1,host2:port2/db#master)", sch);
	const char *r = p.rest;
	if (!is_redis(u->scheme)) {
		size_t n = strcspn(r, "#");
		u->path = xstrndup(r, n);
		return 0;
	}
	if (*r == '/') {
		r++;
		size_t n = strcspn(r, "?#");
		if (n) {
			char buf[16];
			int64_t v;
			if (n >= sizeof buf)
				return failf(err, errlen, "%s:// URL: invalid database number", sch);
			memcpy(buf, r, n);
			buf[n] = '\0';
			if (parse_i64(buf, 0, 100000, &v))
				return failf(err, errlen, "%s:// URL: invalid database number "
					     "(/0, /1, ...)", sch);
			u->db = (int)v;
		}
		r += n;
	}
	if (*r == '?')
		return failf(err, errlen, "%s:// URL: query parameters are not supported "
			     "(TLS files and names are set with REDIS_TLS_* variables)", sch);
	if (u->sentinel) {
		if (*r != '#' || !r[1])
			return failf(err, errlen, "%s:// URL: the master name is missing "
				     "(...#mymaster at the end)", sch);
		if (strlen(r + 1) > 200)
			return failf(err, errlen, "%s:// URL: master name too long", sch);
		u->master = xstrdup(r + 1);
	} else if (*r == '#') {
		return failf(err, errlen, "%s:// URL: a #fragment is only accepted in the sentinel "
			     "form (the master name)", sch);
	}
	return 0;
}

void url_free(struct url *u)
{
	if (u->password) {
		explicit_bzero(u->password, strlen(u->password));
		free(u->password);
	}
	free(u->user);
	free(u->master);
	free(u->path);
	memset(u, 0, sizeof *u);
}

/* ------------------------------------------------------------------ */
/* redaction                                                           */
/* ------------------------------------------------------------------ */

void url_redact(const char *url, char *out, size_t outlen)
{
	struct url_parts p;
	if (!outlen)
		return;
	if (!url) {
		snprintf(out, outlen, "(unset)");
		return;
	}
	if (url_split(url, &p)) {
		if (url[0] == '/')
			snprintf(out, outlen, "%.*s", (int)strcspn(url, "?#"), url);
		else
			snprintf(out, outlen, "(hidden)");
		return;
	}
	enum url_scheme sch = scheme_of(p.scheme, p.scheme_len);
	int sentinel = sch == URL_REDIS_SENTINEL || sch == URL_REDISS_SENTINEL;
	struct strbuf sb = STRBUF_INIT;
	sb_add(&sb, p.scheme, p.scheme_len);
	sb_adds(&sb, "://");
	if (p.user) {
		sb_add(&sb, p.user, p.user_len);
		sb_adds(&sb, p.password ? ":***@" : "@");
	} else if (p.password) {
		sb_adds(&sb, "***@");
	}
	sb_add(&sb, p.hosts, p.hosts_len);
	const char *r = p.rest;
	size_t n = strcspn(r, "?#");
	sb_add(&sb, r, n);
	if (sentinel) {
		const char *frag = strchr(r, '#');
		if (frag)
			sb_adds(&sb, frag);
	}
	snprintf(out, outlen, "%s", sb.buf ? sb.buf : "");
	sb_release(&sb);
}

int url_password(const char *url, char *raw, size_t rawlen, char *decoded, size_t decodedlen)
{
	struct url_parts p;
	if (!url || url_split(url, &p) || !p.password || !p.password_len)
		return 0;
	if (raw && rawlen)
		snprintf(raw, rawlen, "%.*s", (int)p.password_len, p.password);
	if (decoded && decodedlen) {
		char *d = xmalloc(p.password_len + 1);
		if (pct_decode_into(p.password, p.password_len, d))
			snprintf(d, p.password_len + 1, "%.*s", (int)p.password_len, p.password);
		snprintf(decoded, decodedlen, "%s", d);
		explicit_bzero(d, p.password_len);
		free(d);
	}
	return 1;
}
