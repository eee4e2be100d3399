/* fuzz_url.c -- libFuzzer target: the URL module (common/url.c), which
 * reads REDIS_URL, DATABASE_URL (for messages) and META_GRAPH_URL, and
 * redacts them for every message that shows one.
 *
 * Input: the URL, byte for byte (a NUL ends it, as in an environment
 * variable).
 * Invariants: url_parse() returns 0 or -1; on -1 the message is non-empty
 * and holds no byte of the password; on 0 a redis URL has 1 to
 * URL_MAX_HOSTS hosts with ports 1-65535, more than one only in the
 * sentinel form, which has a master name.  url_redact() never shows the
 * password (as written or decoded) when it is at least 3 bytes long and
 * does not occur elsewhere in the URL; url_free() releases everything.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 1 if needle (n bytes) occurs in hay outside [skip, skip + n). */
static int occurs_elsewhere(const char *hay, const char *needle, size_t n, const char *skip)
{
	for (const char *p = hay; (p = strstr(p, needle)); p++)
		if (p != skip)
			return 1;
	(void)n;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	struct url u;
	char err[256];
	int rv = url_parse(s, &u, err, sizeof err);
	if (rv != 0 && rv != -1)
		abort();
	if (rv == -1 && !err[0])
		abort();
	if (rv == 0 && u.scheme != URL_HTTP && u.scheme != URL_HTTPS) {
		if (u.nhosts < 1 || u.nhosts > URL_MAX_HOSTS || (u.nhosts > 1 && !u.sentinel))
			abort();
		if (u.sentinel && (!u.master || !*u.master))
			abort();
		for (size_t i = 0; i < u.nhosts; i++)
			if (u.hosts[i].port < 1 || u.hosts[i].port > 65535 || !u.hosts[i].name[0])
				abort();
	}
	url_free(&u);

	struct url_parts p;
	char out[8192];
	url_redact(s, out, sizeof out);
	if (url_split(s, &p) == 0 && p.password && p.password_len >= 3) {
		char *pw = strndup(p.password, p.password_len);
		char *t = strdup(s);
		if (pw && t && strlen(pw) == p.password_len &&
		    !occurs_elsewhere(s, pw, p.password_len, p.password)) {
			/* the fixed text of a message or of the redaction ("://",
			 * ":***@", "expected redis://") may happen to spell the
			 * password: compare with the same URL, password blanked;
			 * a leak shows only with the real one */
			struct url u2;
			char out2[8192], err2[256] = "";
			memset(t + (p.password - s), 'Z', p.password_len);
			url_redact(t, out2, sizeof out2);
			int rv2 = url_parse(t, &u2, err2, sizeof err2);
			url_free(&u2);
			if (strstr(out, pw) && !strstr(out2, pw))
				abort();   /* the password as written leaked */
			if (rv == -1 && strstr(err, pw) && !(rv2 == -1 && strstr(err2, pw)))
				abort();
		}
		free(t);
		free(pw);
	}
	char raw[512], dec[512];
	url_password(s, raw, sizeof raw, dec, sizeof dec);
	free(s);
	return 0;
}
