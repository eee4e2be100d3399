/* Unit tests of the dashboard's sessions (common/dashauth.c): the signed
 * cookie, its CSRF token, expiry, revocation, the login rate limit and the
 * Origin check. */
#include <stdio.h>
#include <string.h>

#include "dashauth.h"
#include "unit.h"
#include "util.h"

#define TOKEN "unit-token-0123456789"
#define NOW 1800000000000LL

static int login(struct dashauth *a, const char *addr, const char *tok, int64_t now, char *cookie_hdr,
		 char *csrf)
{
	char cookie[DASHAUTH_COOKIE_LEN];
	int64_t exp, retry;
	int rc = dashauth_login(a, addr, tok, strlen(tok), now, cookie, csrf, &exp, &retry);
	if (rc == DASHAUTH_OK)
		snprintf(cookie_hdr, DASHAUTH_COOKIE_LEN + 64, "a=b; " DASHAUTH_COOKIE "=%s; c=d", cookie);
	return rc;
}

static void test_cookie_roundtrip_and_tampering(void)
{
	struct dashauth *a = dashauth_new(TOKEN, 3600000);
	char hdr[DASHAUTH_COOKIE_LEN + 64], csrf[DASHAUTH_CSRF_LEN], csrf2[DASHAUTH_CSRF_LEN];
	CHECK(login(a, "10.0.0.1", TOKEN, NOW, hdr, csrf) == DASHAUTH_OK);
	CHECK(strstr(hdr, TOKEN) == NULL);
	int64_t exp = 0;
	CHECK(dashauth_check(a, hdr, NOW + 1000, csrf2, &exp) == 0);
	CHECK_STR(csrf, csrf2);
	CHECK(exp == NOW + 3600000);
	CHECK(dashauth_check(a, hdr, NOW + 3600000, NULL, NULL) == -1);   /* expired */
	/* every single changed character is refused */
	char *v = strstr(hdr, DASHAUTH_COOKIE "=") + sizeof DASHAUTH_COOKIE;
	size_t vlen = strcspn(v, ";");
	for (size_t i = 0; i < vlen; i++) {
		char saved = v[i];
		v[i] = saved == '1' ? '2' : '1';
		CHECK(dashauth_check(a, hdr, NOW + 1000, NULL, NULL) == -1);
		v[i] = saved;
	}
	CHECK(dashauth_check(a, hdr, NOW + 1000, NULL, NULL) == 0);
	/* another token (a rotated API_TOKEN) does not accept it */
	struct dashauth *b = dashauth_new("another-token", 3600000);
	CHECK(dashauth_check(b, hdr, NOW + 1000, NULL, NULL) == -1);
	dashauth_free(b);
	/* no cookie, empty, garbage */
	CHECK(dashauth_check(a, NULL, NOW, NULL, NULL) == -1);
	CHECK(dashauth_check(a, "", NOW, NULL, NULL) == -1);
	CHECK(dashauth_check(a, DASHAUTH_COOKIE "=v1.9.x.y", NOW, NULL, NULL) == -1);
	/* two logins: two sessions with different CSRF tokens */
	char hdr2[DASHAUTH_COOKIE_LEN + 64];
	CHECK(login(a, "10.0.0.1", TOKEN, NOW, hdr2, csrf2) == DASHAUTH_OK);
	CHECK(strcmp(csrf, csrf2) != 0);
	/* revocation ends one session, not the other */
	dashauth_revoke(a, hdr, NOW + 5);
	CHECK(dashauth_check(a, hdr, NOW + 10, NULL, NULL) == -1);
	CHECK(dashauth_check(a, hdr2, NOW + 10, NULL, NULL) == 0);
	dashauth_free(a);
	/* no token configured: no login */
	struct dashauth *none = dashauth_new(NULL, 1000);
	CHECK(login(none, "10.0.0.1", "", NOW, hdr, csrf) == DASHAUTH_WRONG);
	dashauth_free(none);
}

static void test_rate_limit(void)
{
	struct dashauth *a = dashauth_new(TOKEN, 3600000);
	char hdr[DASHAUTH_COOKIE_LEN + 64], csrf[DASHAUTH_CSRF_LEN];
	for (int i = 0; i < DASHAUTH_MAX_FAILURES; i++)
		CHECK(login(a, "10.0.0.2", "wrong", NOW + i, hdr, csrf) == DASHAUTH_WRONG);
	CHECK(login(a, "10.0.0.2", TOKEN, NOW + 100, hdr, csrf) == DASHAUTH_LIMITED);
	char cookie[DASHAUTH_COOKIE_LEN];
	int64_t exp, retry;
	CHECK(dashauth_login(a, "10.0.0.2", "x", 1, NOW + 100, cookie, csrf, &exp, &retry) == DASHAUTH_LIMITED);
	CHECK(retry > 0 && retry <= DASHAUTH_WINDOW_MS);
	/* another address is not limited */
	CHECK(login(a, "10.0.0.3", TOKEN, NOW + 100, hdr, csrf) == DASHAUTH_OK);
	/* the window ends */
	CHECK(login(a, "10.0.0.2", TOKEN, NOW + DASHAUTH_WINDOW_MS + 1, hdr, csrf) == DASHAUTH_OK);
	/* many addresses evict old entries without growing */
	for (int i = 0; i < 5000; i++) {
		char addr[32];
		snprintf(addr, sizeof addr, "10.1.%d.%d", i / 256, i % 256);
		CHECK(login(a, addr, "wrong", NOW + 2 * DASHAUTH_WINDOW_MS + i, hdr, csrf) == DASHAUTH_WRONG);
	}
	dashauth_free(a);
}

static void test_origin(void)
{
	CHECK(dashauth_origin_matches("http://127.0.0.1:4000", "127.0.0.1:4000"));
	CHECK(dashauth_origin_matches("https://Jobs.Example.com", "jobs.example.com"));
	CHECK(!dashauth_origin_matches("http://evil.example", "127.0.0.1:4000"));
	CHECK(!dashauth_origin_matches("http://127.0.0.1:4000.evil", "127.0.0.1:4000"));
	CHECK(!dashauth_origin_matches("http://127.0.0.1", "127.0.0.1:4000"));
	CHECK(!dashauth_origin_matches("null", "127.0.0.1:4000"));
	CHECK(!dashauth_origin_matches("http://127.0.0.1:4000", NULL));
	CHECK(!dashauth_origin_matches(NULL, "h"));
}

UNIT_MAIN(UNIT_TEST(cookie_roundtrip_and_tampering),
	  UNIT_TEST(rate_limit),
	  UNIT_TEST(origin))
