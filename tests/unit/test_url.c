/* test_url.c -- the URL module: parsing every REDIS_URL form, refusals
 * that quote no secret, and the one redaction function. */
#include <string.h>

#include "url.h"
#include "unit.h"
#include "util.h"

static void test_redis_forms(void)
{
	struct url u;
	char err[256];
	CHECK(url_parse("redis://localhost", &u, err, sizeof err) == 0);
	CHECK(u.scheme == URL_REDIS && !u.tls && !u.sentinel && u.nhosts == 1);
	CHECK_STR(u.hosts[0].name, "localhost");
	CHECK(u.hosts[0].port == 6379 && u.db == 0 && !u.user && !u.password);
	url_free(&u);

	/* '@' and ':' in a password, unencoded and encoded */
	CHECK(url_parse("rediss://app:p@ss:w0rd@cache.example:6380/2", &u, err, sizeof err) == 0);
	CHECK(u.tls && u.hosts[0].port == 6380 && u.db == 2);
	CHECK_STR(u.user, "app");
	CHECK_STR(u.password, "p@ss:w0rd");
	CHECK_STR(u.hosts[0].name, "cache.example");
	url_free(&u);
	CHECK(url_parse("redis://:p%40ss%3Aw@[::1]:7000/", &u, err, sizeof err) == 0);
	CHECK_STR(u.password, "p@ss:w");
	CHECK_STR(u.hosts[0].name, "::1");
	CHECK(!u.user && u.hosts[0].port == 7000);
	url_free(&u);
	CHECK(url_parse("redis://justapassword@h", &u, err, sizeof err) == 0);
	CHECK_STR(u.password, "justapassword");
	CHECK(!u.user);
	url_free(&u);

	CHECK(url_parse("redis-sentinel://:pw@s1:26379,s2,[::1]:26381/3#mymaster", &u, err, sizeof err) == 0);
	CHECK(u.sentinel && !u.tls && u.nhosts == 3 && u.db == 3);
	CHECK(u.hosts[1].port == 26379 && u.hosts[2].port == 26381);
	CHECK_STR(u.hosts[1].name, "s2");
	CHECK_STR(u.master, "mymaster");
	url_free(&u);
	CHECK(url_parse("rediss-sentinel://s1#m", &u, err, sizeof err) == 0);
	CHECK(u.sentinel && u.tls && u.nhosts == 1);
	url_free(&u);

	CHECK(url_parse("https://graph.facebook.com/v21.0?x=1#f", &u, err, sizeof err) == 0);
	CHECK(u.scheme == URL_HTTPS && u.hosts[0].port == 443);
	CHECK_STR(u.path, "/v21.0?x=1");
	url_free(&u);
}

static void test_refusals_quote_no_secret(void)
{
	static const char *const bad[] = {
		"http//x", "redis://", "redis://:hunter2@", "redis://:hunter2@h:0",
		"redis://:hunter2@h:65536", "redis://:hunter2@h:99999", "redis://h:12ab", "redis://h/x",
		"redis://h/-1", "redis://[::1", "redis://:hunter2@h1,h2:6379", "redis://h?ssl=true",
		"redis://h#master", "redis-sentinel://:hunter2@s1,s2", "redis-sentinel://s1/0#",
		"memcached://:hunter2@h", "redis://:hunter2%00@h", "redis://:hunter2@h x",
	};
	for (size_t i = 0; i < JR_ARRAY_LEN(bad); i++) {
		struct url u;
		char err[256] = "";
		CHECK(url_parse(bad[i], &u, err, sizeof err) == -1);
		CHECK(err[0] != '\0');
		CHECK(strstr(err, "hunter2") == NULL);
		url_free(&u);
	}
}

static void test_redact(void)
{
	char out[256];
	url_redact("postgresql://user:hunter22@db:5432/app?sslmode=require", out, sizeof out);
	CHECK_STR(out, "postgresql://user:***@db:5432/app");
	url_redact("redis://:pw@r:6379/0", out, sizeof out);
	CHECK_STR(out, "redis://:***@r:6379/0");
	url_redact("redis://r:6379", out, sizeof out);
	CHECK_STR(out, "redis://r:6379");
	url_redact("rediss://app:p@ss:w0rd@cache:6380/2", out, sizeof out);
	CHECK_STR(out, "rediss://app:***@cache:6380/2");
	url_redact("redis://:pa/ss#x@host/0", out, sizeof out);   /* '/' and '#' unencoded */
	CHECK_STR(out, "redis://:***@host/0");
	url_redact("redis://secretonly@h:1", out, sizeof out);
	CHECK_STR(out, "redis://***@h:1");
	url_redact("redis-sentinel://:pw@s1,s2:26380/1#mymaster", out, sizeof out);
	CHECK_STR(out, "redis-sentinel://:***@s1,s2:26380/1#mymaster");
	url_redact("https://h.example/v1?access_token=SECRET#frag", out, sizeof out);
	CHECK_STR(out, "https://h.example/v1");
	url_redact("https://h.example/users/@me?email=a@b", out, sizeof out);
	CHECK_STR(out, "https://h.example/users/@me");
	url_redact("host=db password=hunter2", out, sizeof out);
	CHECK_STR(out, "(hidden)");
	url_redact("/oauth/access_token?client_secret=S", out, sizeof out);
	CHECK_STR(out, "/oauth/access_token");
	url_redact("postgresql://postgres@127.0.0.1:5432/db", out, sizeof out);
	CHECK_STR(out, "postgresql://postgres@127.0.0.1:5432/db");   /* a user, no password */
	CHECK(url_password("postgresql://postgres@h/db", NULL, 0, NULL, 0) == 0);
	url_redact(NULL, out, sizeof out);
	CHECK_STR(out, "(unset)");

	char raw[64], dec[64];
	CHECK(url_password("redis://u:p%40ss@h", raw, sizeof raw, dec, sizeof dec) == 1);
	CHECK_STR(raw, "p%40ss");
	CHECK_STR(dec, "p@ss");
	CHECK(url_password("redis://h", raw, sizeof raw, dec, sizeof dec) == 0);
}

UNIT_MAIN(UNIT_TEST(redis_forms),
	  UNIT_TEST(refusals_quote_no_secret),
	  UNIT_TEST(redact))
