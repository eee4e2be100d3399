/* test_rconn.c -- REDIS_URL parsing and argument vectors (no server). */
#include <string.h>

#include "rconn.h"
#include "unit.h"

static void test_urls(void)
{
	struct rconn rc;
	char err[256];
	CHECK(rconn_init(&rc, "redis://localhost", NULL, 0, err, sizeof err) == 0);
	CHECK_STR(rc.host, "localhost");
	CHECK(rc.port == 6379 && rc.db == 0 && !rc.password && !rc.user);
	rconn_release(&rc);

	CHECK(rconn_init(&rc, "redis://:p%40ss@10.0.0.5:6380/2", NULL, 0, err, sizeof err) == 0);
	CHECK_STR(rc.host, "10.0.0.5");
	CHECK_STR(rc.password, "p@ss");
	CHECK(!rc.user && rc.port == 6380 && rc.db == 2);
	rconn_release(&rc);

	CHECK(rconn_init(&rc, "redis://app:secret@[::1]:7000/", NULL, 0, err, sizeof err) == 0);
	CHECK_STR(rc.host, "::1");
	CHECK_STR(rc.user, "app");
	CHECK_STR(rc.password, "secret");
	CHECK(rc.port == 7000 && rc.db == 0);
	rconn_release(&rc);

	static const char *const bad[] = { "http://x", "redis://", "redis://:pw@", "redis://h:0",
					   "redis://h:65536", "redis://h:12ab", "redis://h/x",
					   "redis://h/-1", "redis://[::1" };
	for (size_t i = 0; i < JR_ARRAY_LEN(bad); i++) {
		CHECK(rconn_init(&rc, bad[i], NULL, 0, err, sizeof err) == -1);
		CHECK(err[0] != '\0');
	}
	CHECK(rconn_init(&rc, "redis://:hunter2@h:99999", NULL, 0, err, sizeof err) == -1);
	CHECK(strstr(err, "hunter2") == NULL);
}

static void test_down_fails_fast(void)
{
	struct rconn rc;
	char err[256];
	/* port 1 on loopback: refused at once; then the backoff answers without I/O */
	CHECK(rconn_init(&rc, "redis://127.0.0.1:1", NULL, 0, err, sizeof err) == 0);
	CHECK(rconn_connect(&rc) == RCONN_EDOWN);
	int64_t t0 = mono_ms();
	for (int i = 0; i < 1000; i++)
		CHECK(rconn_cmdf(&rc, "PING") == NULL);
	CHECK(mono_ms() - t0 < 500);
	CHECK(rc.err == RCONN_EDOWN);
	rconn_release(&rc);
}

static void test_rargv(void)
{
	struct rargv a = { 0 };
	const char *ext = "external";
	rargv_addrefs(&a, ext);
	for (int i = 0; i < 200; i++)
		rargv_addi64(&a, i);   /* the arena grows: offsets stay valid */
	rargv_addcopy(&a, "a\0b", 3);
	rargv_finish(&a);
	CHECK(a.n == 202);
	CHECK(a.argv[0] == ext);
	CHECK_STR(a.argv[1], "0");
	CHECK_STR(a.argv[200], "199");
	CHECK(a.lens[201] == 3 && memcmp(a.argv[201], "a\0b", 3) == 0);
	rargv_reset(&a);
	CHECK(a.n == 0);
	rargv_release(&a);
}

UNIT_MAIN(UNIT_TEST(urls),
	  UNIT_TEST(down_fails_fast),
	  UNIT_TEST(rargv))
