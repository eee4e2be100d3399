/* test_rconn.c -- REDIS_URL parsing, argument vectors and the replies'
 * arenas (no server). */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Replies are built in arenas (rconn.c): nested arrays, nil, integers,
 * status and error strings, empty arrays and strings that outgrow the
 * first blocks come out as hiredis builds them; a reply fed a byte at a
 * time is the same; rconn_free() frees it all (the ASan build checks). */
static void test_reply_arenas(void)
{
	redisReader *rd = rconn_reader_new();
	CHECK(rd != NULL);
	if (!rd)
		return;
	struct strbuf in = STRBUF_INIT;
	static const char head[] = "*5\r\n:42\r\n$-1\r\n+OK\r\n-ERR no\r\n*2\r\n*0\r\n$3\r\na\0b\r\n";
	sb_add(&in, head, sizeof head - 1);
	/* then 3,000 entries like XREADGROUP's, and a 300 KB string */
	sb_adds(&in, "*3000\r\n");
	for (int i = 0; i < 3000; i++)
		sb_addf(&in, "*2\r\n$%d\r\n%d-0\r\n*2\r\n$2\r\nid\r\n$4\r\nr%03d\r\n",
			(int)snprintf(NULL, 0, "%d-0", i), i, i % 1000);
	size_t big = 300000;
	sb_addf(&in, "$%zu\r\n", big);
	for (size_t i = 0; i < big; i++)
		sb_add(&in, "x", 1);
	sb_adds(&in, "\r\n");
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		if (bytewise) {
			for (size_t i = 0; i < in.len; i++)
				redisReaderFeed(rd, in.buf + i, 1);
		} else {
			redisReaderFeed(rd, in.buf, in.len);
		}
		void *v = NULL;
		CHECK(redisReaderGetReply(rd, &v) == REDIS_OK && v);
		redisReply *r = v;
		CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 5);
		if (r && r->elements == 5) {
			CHECK(r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 42);
			CHECK(r->element[1]->type == REDIS_REPLY_NIL);
			CHECK(r->element[2]->type == REDIS_REPLY_STATUS && !strcmp(r->element[2]->str, "OK"));
			CHECK(r->element[3]->type == REDIS_REPLY_ERROR && !strcmp(r->element[3]->str, "ERR no"));
			redisReply *a = r->element[4];
			CHECK(a->type == REDIS_REPLY_ARRAY && a->elements == 2);
			CHECK(a->element[0]->type == REDIS_REPLY_ARRAY && a->element[0]->elements == 0);
			CHECK(a->element[1]->len == 3 && !memcmp(a->element[1]->str, "a\0b", 4));
		}
		rconn_free(r);
		v = NULL;
		CHECK(redisReaderGetReply(rd, &v) == REDIS_OK && v);
		r = v;
		CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3000);
		int ok = r && r->elements == 3000;
		for (size_t i = 0; ok && i < 3000; i++) {
			redisReply *e = r->element[i];
			char id[16], val[8];
			snprintf(id, sizeof id, "%zu-0", i);
			snprintf(val, sizeof val, "r%03zu", i % 1000);
			ok = e->elements == 2 && !strcmp(e->element[0]->str, id) &&
			     e->element[1]->elements == 2 && !strcmp(e->element[1]->element[1]->str, val) &&
			     ((uintptr_t)e->element[1]->element[1] % 8) == 0;
		}
		CHECK(ok);
		rconn_free(r);
		v = NULL;
		CHECK(redisReaderGetReply(rd, &v) == REDIS_OK && v);
		r = v;
		CHECK(r && r->type == REDIS_REPLY_STRING && r->len == big && r->str[big] == '\0' &&
		      r->str[0] == 'x' && r->str[big - 1] == 'x');
		rconn_free(r);
	}
	/* a reply given up half-read is freed by the reader (freeObject) */
	static const char part[] = "*3\r\n:1\r\n*2\r\n$1\r\na\r\n";
	redisReaderFeed(rd, part, sizeof part - 1);
	void *v = NULL;
	CHECK(redisReaderGetReply(rd, &v) == REDIS_OK && v == NULL);
	redisReaderFree(rd);
	rconn_free(NULL);
	sb_release(&in);
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
	  UNIT_TEST(rargv),
	  UNIT_TEST(reply_arenas))
