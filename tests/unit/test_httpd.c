/* test_httpd.c -- common/httpd over real HTTP on loopback, with libcurl as
 * the client: routing and path parameters, 404/405/401/413, query strings,
 * headers, bodies at and over the limit (declared and chunked), concurrent
 * clients. */
#include "httpd.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <unistd.h>

#include <curl/curl.h>

#include "log.h"
#include "unit.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* handlers                                                            */
/* ------------------------------------------------------------------ */

struct app {
	_Atomic int calls;
};

static void h_health(struct httpd_request *req, struct httpd_response *resp)
{
	struct app *a = req->app;
	atomic_fetch_add(&a->calls, 1);
	httpd_json_str(resp, 200, "{\"status\":\"ok\"}");
}

/* Echoes the path parameters, method and path. */
static void h_params(struct httpd_request *req, struct httpd_response *resp)
{
	struct app *a = req->app;
	atomic_fetch_add(&a->calls, 1);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "job", httpd_param(req, "job"));
	const char *id = httpd_param(req, "id");
	if (id)
		cJSON_AddStringToObject(o, "id", id);
	cJSON_AddBoolToObject(o, "noSuch", httpd_param(req, "nosuch") == NULL);
	cJSON_AddStringToObject(o, "method", req->method);
	cJSON_AddStringToObject(o, "path", req->path);
	httpd_json(resp, 200, o);
}

static void h_dead(struct httpd_request *req, struct httpd_response *resp)
{
	struct app *a = req->app;
	atomic_fetch_add(&a->calls, 1);
	httpd_json_str(resp, 200, "{\"literal\":true}");
}

/* Echoes the body's length and first bytes, and its JSON parse. */
static void h_echo(struct httpd_request *req, struct httpd_response *resp)
{
	struct app *a = req->app;
	atomic_fetch_add(&a->calls, 1);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "len", (double)req->body_len);
	cJSON *parsed = cJSON_ParseWithLength(req->body, req->body_len);
	cJSON_AddBoolToObject(o, "json", parsed != NULL);
	cJSON_Delete(parsed);
	/* all bytes of the test bodies are 'x' or JSON; check the tail */
	cJSON_AddBoolToObject(o, "lastIsX", req->body_len > 0 && req->body[req->body_len - 1] == 'x');
	httpd_json(resp, 201, o);
}

static void h_query(struct httpd_request *req, struct httpd_response *resp)
{
	struct app *a = req->app;
	atomic_fetch_add(&a->calls, 1);
	cJSON *o = cJSON_CreateObject();
	const char *names[] = { "limit", "flag", "text", "absent" };
	for (size_t i = 0; i < JR_ARRAY_LEN(names); i++) {
		const char *v = httpd_query(req, names[i]);
		if (v)
			cJSON_AddStringToObject(o, names[i], v);
		else
			cJSON_AddNullToObject(o, names[i]);
	}
	const char *h = httpd_header(req, "x-test-header");
	cJSON_AddStringToObject(o, "header", h ? h : "(none)");
	httpd_json(resp, 200, o);
}

static void h_error(struct httpd_request *req, struct httpd_response *resp)
{
	(void)req;
	httpd_error(resp, 400, "bad_request", "field \"%s\" is bad\n\ttab %d", "org\\Id", 7);
}

static void h_nothing(struct httpd_request *req, struct httpd_response *resp)
{
	(void)req;
	(void)resp;
}

static void h_text(struct httpd_request *req, struct httpd_response *resp)
{
	(void)req;
	struct strbuf sb = STRBUF_INIT;
	sb_adds(&sb, "# TYPE x counter\nx 1\n");
	size_t len = sb.len;
	httpd_body(resp, 200, "text/plain; version=0.0.4; charset=utf-8", sb_detach(&sb), len);
	httpd_add_header(resp, "Cache-Control", "no-store");
}

static const struct httpd_route routes[] = {
	{ "GET", "/api/health", h_health, 0 },
	{ "GET", "/jobs/dead", h_dead, HTTPD_AUTH },
	{ "GET", "/jobs/{job}", h_params, 0 },
	{ "GET", "/jobs/{job}/runs/{id}", h_params, 0 },
	{ "DELETE", "/jobs/{job}/runs/{id}", h_params, 0 },
	{ "POST", "/api/integrations/jobs/{job}/run", h_echo, HTTPD_AUTH },
	{ "POST", "/echo", h_echo, 0 },
	{ "GET", "/q", h_query, 0 },
	{ "GET", "/error", h_error, 0 },
	{ "GET", "/nothing", h_nothing, 0 },
	{ "GET", "/metrics", h_text, 0 },
	{ "GET", "/", h_health, 0 },
};

/* ------------------------------------------------------------------ */
/* client                                                              */
/* ------------------------------------------------------------------ */

struct reply {
	long status;
	char *body;
	size_t len;
	char ctype[128];
	char allow[128];
	char www_auth[64];
	char cache[64];
	CURLcode rc;
};

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
	struct strbuf *sb = ud;
	sb_add(sb, p, size * n);
	return size * n;
}

struct upload {
	size_t left;
	size_t chunk;
};

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
	struct upload *u = ud;
	size_t want = size * n;
	if (want > u->chunk)
		want = u->chunk;
	if (want > u->left)
		want = u->left;
	memset(buf, 'x', want);
	u->left -= want;
	return want;
}

static void header_copy(CURL *c, const char *name, char *out, size_t outlen)
{
	struct curl_header *h = NULL;
	out[0] = '\0';
	if (curl_easy_header(c, name, 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
		snprintf(out, outlen, "%s", h->value);
}

struct req_opts {
	const char *method;             /* NULL: GET */
	const char *body;
	size_t body_len;
	size_t chunked_len;             /* > 0: send this many 'x' bytes chunked */
	const char *auth;               /* Authorization header value */
	const char *extra_header;
	int no_expect;                  /* suppress Expect: 100-continue */
};

static void do_req(CURL *c, int port, const char *path, const struct req_opts *o,
		   struct reply *r)
{
	struct strbuf sb = STRBUF_INIT;
	struct curl_slist *hdrs = NULL;
	struct upload up = { 0, 0 };
	char url[512];
	snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
	memset(r, 0, sizeof *r);
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &sb);
	const char *method = o && o->method ? o->method : "GET";
	if (o && o->chunked_len) {
		up.left = o->chunked_len;
		up.chunk = 16 * 1024;
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, &up);
		hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
	} else if (o && o->body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, o->body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
	}
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	else if (strcmp(method, "GET") != 0 || (o && (o->body || o->chunked_len)))
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (o && o->auth) {
		char h[512];
		snprintf(h, sizeof h, "Authorization: %s", o->auth);
		hdrs = curl_slist_append(hdrs, h);
	}
	if (o && o->extra_header)
		hdrs = curl_slist_append(hdrs, o->extra_header);
	if (o && o->no_expect)
		hdrs = curl_slist_append(hdrs, "Expect:");
	if (hdrs)
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	r->rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	header_copy(c, "Content-Type", r->ctype, sizeof r->ctype);
	header_copy(c, "Allow", r->allow, sizeof r->allow);
	header_copy(c, "WWW-Authenticate", r->www_auth, sizeof r->www_auth);
	header_copy(c, "Cache-Control", r->cache, sizeof r->cache);
	curl_slist_free_all(hdrs);
	r->len = sb.len;
	r->body = sb_detach(&sb);
}

static void reply_free(struct reply *r)
{
	free(r->body);
	r->body = NULL;
}

/* One request on a fresh handle; the reply's body must be freed. */
static struct reply req1(int port, const char *path, const struct req_opts *o)
{
	CURL *c = curl_easy_init();
	struct reply r;
	do_req(c, port, path, o, &r);
	curl_easy_cleanup(c);
	return r;
}

/* ------------------------------------------------------------------ */
/* fixtures                                                            */
/* ------------------------------------------------------------------ */

static struct httpd *start(const char *token, size_t max_body, struct app *a)
{
	struct httpd_options opt;
	httpd_options_init(&opt);
	opt.bind_addr = "127.0.0.1";
	opt.port = 0;
	opt.api_token = token;
	if (max_body)
		opt.max_body_bytes = max_body;
	opt.threads = 2;
	struct httpd *srv = NULL;
	char err[256];
	int rc = httpd_start(&opt, routes, JR_ARRAY_LEN(routes), a, &srv, err, sizeof err);
	CHECK(rc == 0);
	if (rc != 0) {
		fprintf(stderr, "httpd_start: %s\n", err);
		exit(1);
	}
	CHECK(httpd_port(srv) > 0);
	return srv;
}

#define ERR_BODY(code, msg) "{\"error\":{\"code\":\"" code "\",\"message\":\"" msg "\"}}"

/* ------------------------------------------------------------------ */
/* tests                                                               */
/* ------------------------------------------------------------------ */

static void test_routing(void)
{
	struct app a = { 0 };
	struct httpd *srv = start("tok", 0, &a);
	int port = httpd_port(srv);

	struct reply r = req1(port, "/api/health", NULL);
	CHECK(r.rc == CURLE_OK);
	CHECK(r.status == 200);
	CHECK_STR(r.body, "{\"status\":\"ok\"}");
	CHECK_STR(r.ctype, "application/json");
	reply_free(&r);

	r = req1(port, "/", NULL);
	CHECK(r.status == 200);
	reply_free(&r);

	r = req1(port, "/jobs/noop", NULL);
	CHECK(r.status == 200);
	CHECK_STR(r.body, "{\"job\":\"noop\",\"noSuch\":true,\"method\":\"GET\",\"path\":\"/jobs/noop\"}");
	reply_free(&r);

	r = req1(port, "/jobs/meta_spend/runs/0190-abc", NULL);
	CHECK(r.status == 200);
	CHECK_STR(r.body, "{\"job\":\"meta_spend\",\"id\":\"0190-abc\",\"noSuch\":true,"
			  "\"method\":\"GET\",\"path\":\"/jobs/meta_spend/runs/0190-abc\"}");
	reply_free(&r);

	/* percent-decoding happens before matching */
	r = req1(port, "/jobs/a%20b", NULL);
	CHECK(r.status == 200);
	CHECK(r.body && strstr(r.body, "\"job\":\"a b\""));
	reply_free(&r);

	struct req_opts del = { .method = "DELETE" };
	r = req1(port, "/jobs/x/runs/7", &del);
	CHECK(r.status == 200);
	CHECK(r.body && strstr(r.body, "\"method\":\"DELETE\""));
	reply_free(&r);

	/* the literal row comes first in the table and wins over {job} */
	struct req_opts auth = { .auth = "Bearer tok" };
	r = req1(port, "/jobs/dead", &auth);
	CHECK(r.status == 200);
	CHECK_STR(r.body, "{\"literal\":true}");
	reply_free(&r);

	/* HEAD is served by the GET route, without a body */
	struct req_opts head = { .method = "HEAD" };
	r = req1(port, "/api/health", &head);
	CHECK(r.status == 200);
	CHECK(r.len == 0);
	reply_free(&r);

	/* text bodies and extra headers */
	r = req1(port, "/metrics", NULL);
	CHECK(r.status == 200);
	CHECK_STR(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
	CHECK_STR(r.cache, "no-store");
	CHECK_STR(r.body, "# TYPE x counter\nx 1\n");
	reply_free(&r);

	httpd_stop(srv);
}

static void test_not_found_and_method(void)
{
	struct app a = { 0 };
	struct httpd *srv = start("tok", 0, &a);
	int port = httpd_port(srv);
	const char *missing[] = { "/nope", "/api/health/", "/api", "//", "/jobs//runs/1",
				  "/jobs/x/runs/1/extra", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r" };
	for (size_t i = 0; i < JR_ARRAY_LEN(missing); i++) {
		struct reply r = req1(port, missing[i], NULL);
		CHECK(r.status == 404);
		CHECK_STR(r.body, ERR_BODY("not_found", "no such path"));
		CHECK_STR(r.ctype, "application/json");
		reply_free(&r);
	}

	struct req_opts post = { .method = "POST", .body = "{}", .body_len = 2 };
	struct reply r = req1(port, "/api/health", &post);
	CHECK(r.status == 405);
	CHECK_STR(r.body, ERR_BODY("method_not_allowed", "method not allowed for this path"));
	CHECK_STR(r.allow, "GET");
	reply_free(&r);

	struct req_opts put = { .method = "PUT" };
	r = req1(port, "/jobs/x/runs/1", &put);
	CHECK(r.status == 405);
	CHECK_STR(r.allow, "GET, DELETE");
	reply_free(&r);

	struct req_opts get = { .method = "GET" };
	r = req1(port, "/echo", &get);
	CHECK(r.status == 405);
	CHECK_STR(r.allow, "POST");
	reply_free(&r);

	CHECK(atomic_load(&a.calls) == 0);
	httpd_stop(srv);
}

static void test_auth(void)
{
	const char *path = "/api/integrations/jobs/noop/run";
	struct app a = { 0 };

	/* no token configured: always 401, even with something that looks right */
	const char *none[] = { NULL, "" };
	for (size_t i = 0; i < JR_ARRAY_LEN(none); i++) {
		struct httpd *srv = start(none[i], 0, &a);
		struct req_opts o = { .method = "POST", .body = "{}", .body_len = 2,
				      .auth = "Bearer " };
		struct reply r = req1(httpd_port(srv), path, &o);
		CHECK(r.status == 401);
		CHECK_STR(r.body, ERR_BODY("unauthorized", "API token is not configured"));
		CHECK_STR(r.www_auth, "Bearer");
		reply_free(&r);
		o.auth = NULL;
		r = req1(httpd_port(srv), path, &o);
		CHECK(r.status == 401);
		reply_free(&r);
		httpd_stop(srv);
	}

	struct httpd *srv = start("s3cret-token", 0, &a);
	int port = httpd_port(srv);
	struct {
		const char *auth;
		long status;
		const char *msg;
	} cases[] = {
		{ NULL, 401, "missing bearer token" },
		{ "Basic czNjcmV0LXRva2Vu", 401, "missing bearer token" },
		{ "Bearer", 401, "missing bearer token" },
		{ "Bearer wrong", 401, "invalid bearer token" },
		{ "Bearer s3cret-toke", 401, "invalid bearer token" },
		{ "Bearer s3cret-token2", 401, "invalid bearer token" },
		{ "Bearer S3CRET-TOKEN", 401, "invalid bearer token" },
		{ "Bearer s3cret-token", 201, NULL },
		{ "bearer s3cret-token", 201, NULL },
	};
	for (size_t i = 0; i < JR_ARRAY_LEN(cases); i++) {
		struct req_opts o = { .method = "POST", .body = "{\"orgId\":\"o1\"}",
				      .body_len = 14, .auth = cases[i].auth };
		struct reply r = req1(port, path, &o);
		CHECK(r.status == cases[i].status);
		if (cases[i].msg) {
			char want[256];
			snprintf(want, sizeof want, ERR_BODY("unauthorized", "%s"), cases[i].msg);
			const char *wantp = want;
			CHECK_STR(r.body, wantp);
			CHECK(!strstr(r.body, "s3cret"));
		} else {
			CHECK_STR(r.body, "{\"len\":14,\"json\":true,\"lastIsX\":false}");
		}
		reply_free(&r);
	}
	/* a GET without a body is refused before anything else happens */
	struct reply r = req1(port, "/jobs/dead", NULL);
	CHECK(r.status == 401);
	reply_free(&r);
	CHECK(atomic_load(&a.calls) == 2);
	httpd_stop(srv);
}

static void test_bodies(void)
{
	const size_t limit = 1024 * 1024;
	struct app a = { 0 };
	struct httpd *srv = start("tok", limit, &a);
	int port = httpd_port(srv);

	/* exactly the limit: accepted, whole */
	char *big = xmalloc(5 * limit);
	memset(big, 'x', 5 * limit);
	struct req_opts o = { .method = "POST", .body = big, .body_len = limit };
	struct reply r = req1(port, "/echo", &o);
	CHECK(r.status == 201);
	CHECK_STR(r.body, "{\"len\":1048576,\"json\":false,\"lastIsX\":true}");
	reply_free(&r);

	/* chunked, within the limit */
	struct req_opts ch = { .method = "POST", .chunked_len = limit };
	r = req1(port, "/echo", &ch);
	CHECK(r.status == 201);
	CHECK_STR(r.body, "{\"len\":1048576,\"json\":false,\"lastIsX\":true}");
	reply_free(&r);

	/* empty body */
	struct req_opts e = { .method = "POST", .body = "", .body_len = 0 };
	r = req1(port, "/echo", &e);
	CHECK(r.status == 201);
	CHECK_STR(r.body, "{\"len\":0,\"json\":false,\"lastIsX\":false}");
	reply_free(&r);

	int calls_before = atomic_load(&a.calls);

	/* one byte over, declared */
	o.body_len = limit + 1;
	r = req1(port, "/echo", &o);
	CHECK(r.status == 413);
	CHECK_STR(r.body, ERR_BODY("payload_too_large", "request body is too large"));
	reply_free(&r);

	/* 5 MiB declared (curl sends Expect: 100-continue) */
	o.body_len = 5 * limit;
	r = req1(port, "/echo", &o);
	CHECK(r.rc == CURLE_OK);
	CHECK(r.status == 413);
	CHECK_STR(r.body, ERR_BODY("payload_too_large", "request body is too large"));
	reply_free(&r);

	/* 5 MiB declared and sent at once, without waiting for 100-continue */
	o.no_expect = 1;
	r = req1(port, "/echo", &o);
	CHECK(r.status == 413);
	reply_free(&r);
	o.no_expect = 0;

	/* 5 MiB chunked: no length to reject up front */
	ch.chunked_len = 5 * limit;
	r = req1(port, "/echo", &ch);
	CHECK(r.rc == CURLE_OK);
	CHECK(r.status == 413);
	CHECK_STR(r.body, ERR_BODY("payload_too_large", "request body is too large"));
	reply_free(&r);

	/* one byte over, chunked */
	ch.chunked_len = limit + 1;
	r = req1(port, "/echo", &ch);
	CHECK(r.status == 413);
	reply_free(&r);

	/* failures are answered before the body is read, in the order 404,
	 * 405, 401, 413; the handler never runs */
	struct req_opts ua = { .method = "POST", .body = big, .body_len = 5 * limit };
	r = req1(port, "/api/integrations/jobs/noop/run", &ua);
	CHECK(r.status == 401);
	reply_free(&r);
	ua.no_expect = 1;
	r = req1(port, "/nope", &ua);
	CHECK(r.status == 404);
	reply_free(&r);

	CHECK(atomic_load(&a.calls) == calls_before);
	struct httpd_stats st;
	httpd_get_stats(srv, &st);
	CHECK(st.max_body_seen == limit);      /* never more held than the limit */
	CHECK(st.rejected_too_large == 5);
	free(big);
	httpd_stop(srv);
}

/* A small limit, so that over-limit bodies arrive in the same packets as
 * the headers. */
static void test_small_limit(void)
{
	struct app a = { 0 };
	struct httpd *srv = start("tok", 100, &a);
	int port = httpd_port(srv);
	char body[300];
	memset(body, 'x', sizeof body);
	for (size_t n = 98; n <= 102; n++) {
		struct req_opts o = { .method = "POST", .body = body, .body_len = n,
				      .no_expect = 1 };
		struct reply r = req1(port, "/echo", &o);
		CHECK(r.status == (n <= 100 ? 201 : 413));
		reply_free(&r);
		struct req_opts ch = { .method = "POST", .chunked_len = n };
		r = req1(port, "/echo", &ch);
		CHECK(r.status == (n <= 100 ? 201 : 413));
		reply_free(&r);
	}
	/* keep-alive survives a late error: a 401 answered after its body */
	CURL *c = curl_easy_init();
	struct req_opts o = { .method = "POST", .body = body, .body_len = 50,
			      .auth = "Bearer nope" };
	struct reply r;
	do_req(c, port, "/api/integrations/jobs/noop/run", &o, &r);
	CHECK(r.status == 401);
	reply_free(&r);
	do_req(c, port, "/api/health", NULL, &r);
	CHECK(r.status == 200);
	long conns = -1;
	curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &conns);
	CHECK(conns == 0);                     /* reused the connection */
	reply_free(&r);
	curl_easy_cleanup(c);

	struct httpd_stats st;
	httpd_get_stats(srv, &st);
	CHECK(st.max_body_seen == 100);
	httpd_stop(srv);
}

/* A client that keeps sending long after its 413 is cut off. */
static void test_discard_cap(void)
{
	struct httpd_options opt;
	httpd_options_init(&opt);
	opt.bind_addr = "127.0.0.1";
	opt.max_body_bytes = 1000;
	opt.max_discard_bytes = 10000;
	opt.threads = 1;
	struct app a = { 0 };
	struct httpd *srv = NULL;
	CHECK(httpd_start(&opt, routes, JR_ARRAY_LEN(routes), &a, &srv, NULL, 0) == 0);
	int port = httpd_port(srv);
	/* within limit + discard allowance: answered 413 */
	struct req_opts ch = { .method = "POST", .chunked_len = 8000 };
	struct reply r = req1(port, "/echo", &ch);
	CHECK(r.status == 413);
	reply_free(&r);
	/* declared far past it and sent without waiting: answered at once (the
	 * client may see the answer or a reset), the handler never runs */
	char *body = xmalloc(1024 * 1024);
	memset(body, 'x', 1024 * 1024);
	struct req_opts big = { .method = "POST", .body = body, .body_len = 1024 * 1024,
				.no_expect = 1 };
	r = req1(port, "/echo", &big);
	CHECK(r.status == 413 || r.rc != CURLE_OK);
	reply_free(&r);
	free(body);
	/* chunked far past it: the connection is closed, no answer */
	ch.chunked_len = 4 * 1024 * 1024;
	r = req1(port, "/echo", &ch);
	CHECK(r.rc != CURLE_OK);
	CHECK(r.status != 200 && r.status != 201);
	reply_free(&r);
	/* the server is fine afterwards */
	r = req1(port, "/api/health", NULL);
	CHECK(r.status == 200);
	reply_free(&r);
	struct httpd_stats st;
	httpd_get_stats(srv, &st);
	CHECK(st.max_body_seen <= 1000);
	CHECK(atomic_load(&a.calls) == 1);
	httpd_stop(srv);
}

static void test_query_and_headers(void)
{
	struct app a = { 0 };
	struct httpd *srv = start("tok", 0, &a);
	int port = httpd_port(srv);
	struct req_opts o = { .extra_header = "X-Test-Header: hello" };
	struct reply r = req1(port, "/q?limit=10&flag&text=a%20b%26c", &o);
	CHECK(r.status == 200);
	CHECK_STR(r.body, "{\"limit\":\"10\",\"flag\":\"\",\"text\":\"a b&c\",\"absent\":null,"
			  "\"header\":\"hello\"}");
	reply_free(&r);
	r = req1(port, "/q", NULL);
	CHECK_STR(r.body, "{\"limit\":null,\"flag\":null,\"text\":null,\"absent\":null,"
			  "\"header\":\"(none)\"}");
	reply_free(&r);
	httpd_stop(srv);
}

static void test_handler_answers(void)
{
	struct app a = { 0 };
	struct httpd *srv = start("tok", 0, &a);
	int port = httpd_port(srv);
	struct reply r = req1(port, "/error", NULL);
	CHECK(r.status == 400);
	CHECK_STR(r.body, "{\"error\":{\"code\":\"bad_request\","
			  "\"message\":\"field \\\"org\\\\Id\\\" is bad\\n\\ttab 7\"}}");
	cJSON *j = cJSON_Parse(r.body);
	CHECK(j != NULL);
	cJSON_Delete(j);
	reply_free(&r);

	r = req1(port, "/nothing", NULL);
	CHECK(r.status == 500);
	CHECK_STR(r.body, ERR_BODY("internal", "the handler produced no answer"));
	reply_free(&r);
	httpd_stop(srv);
}

static void test_headers_too_large(void)
{
	struct app a = { 0 };
	struct httpd *srv = start("tok", 0, &a);
	char *h = xmalloc(64 * 1024);
	strcpy(h, "X-Big: ");
	memset(h + 7, 'a', 64 * 1024 - 8);
	h[64 * 1024 - 1] = '\0';
	struct req_opts o = { .extra_header = h };
	struct reply r = req1(httpd_port(srv), "/api/health", &o);
	CHECK(r.status == 431 || r.status == 413);
	CHECK(atomic_load(&a.calls) == 0);
	reply_free(&r);
	free(h);
	httpd_stop(srv);
}

static void test_start_errors(void)
{
	struct httpd_options opt;
	httpd_options_init(&opt);
	opt.bind_addr = "127.0.0.1";
	struct httpd *srv = (struct httpd *)1;
	char err[256];

	static const struct httpd_route bad1[] = { { "GET", "nope", h_health, 0 } };
	static const struct httpd_route bad2[] = { { "GET", "/a/{x", h_health, 0 } };
	static const struct httpd_route bad3[] = { { "GET", "/a//b", h_health, 0 } };
	static const struct httpd_route bad4[] = { { "GET", "/{a}/{b}/{c}/{d}/{e}", h_health, 0 } };
	static const struct httpd_route bad5[] = { { "GET", "/a/{}", h_health, 0 } };
	const struct httpd_route *bads[] = { bad1, bad2, bad3, bad4, bad5 };
	for (size_t i = 0; i < JR_ARRAY_LEN(bads); i++) {
		CHECK(httpd_start(&opt, bads[i], 1, NULL, &srv, err, sizeof err) == -EINVAL);
		CHECK(srv == NULL);
		CHECK(strstr(err, "bad pattern") != NULL);
	}
	opt.bind_addr = "not-an-address";
	CHECK(httpd_start(&opt, routes, 1, NULL, &srv, err, sizeof err) == -EINVAL);
	opt.bind_addr = "127.0.0.1";
	opt.port = 70000;
	CHECK(httpd_start(&opt, routes, 1, NULL, &srv, err, sizeof err) == -EINVAL);

	/* the port is taken */
	struct app a = { 0 };
	struct httpd *first = start("tok", 0, &a);
	opt.port = httpd_port(first);
	int rc = httpd_start(&opt, routes, 1, NULL, &srv, err, sizeof err);
	CHECK(rc < 0);
	CHECK(srv == NULL);
	CHECK(strstr(err, "cannot serve HTTP") != NULL);
	httpd_stop(first);
	httpd_stop(NULL);

	/* IPv6 loopback, when the machine has it */
	opt.bind_addr = "::1";
	opt.port = 0;
	if (httpd_start(&opt, routes, JR_ARRAY_LEN(routes), &a, &srv, err, sizeof err) == 0) {
		CHECK(httpd_port(srv) > 0);
		httpd_stop(srv);
	}
}

/* At debug level one access line per request, without token or query. */
static void test_access_log(void)
{
	char path[] = "/tmp/test_httpd_logXXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	fflush(stdout);
	int saved = dup(STDOUT_FILENO);
	dup2(fd, STDOUT_FILENO);
	log_init(LOG_FORMAT_JSON, LOG_DEBUG);

	struct app a = { 0 };
	struct httpd *srv = start("s3cret-token", 0, &a);
	struct req_opts o = { .method = "POST", .body = "{}", .body_len = 2,
			      .auth = "Bearer s3cret-token" };
	struct reply r = req1(httpd_port(srv), "/api/integrations/jobs/noop/run?k=qsecret", &o);
	CHECK(r.status == 201);
	reply_free(&r);
	o.auth = "Bearer wrong-token";
	r = req1(httpd_port(srv), "/api/integrations/jobs/noop/run", &o);
	CHECK(r.status == 401);
	reply_free(&r);
	httpd_stop(srv);                /* every request_done has run */

	log_init(LOG_FORMAT_JSON, LOG_INFO);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	char buf[4096] = { 0 };
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	close(fd);
	unlink(path);
	CHECK(n > 0);
	CHECK(strstr(buf, "\"event\":\"http_request\"") != NULL);
	CHECK(strstr(buf, "\"path\":\"/api/integrations/jobs/noop/run\"") != NULL);
	CHECK(strstr(buf, "\"status\":201") != NULL);
	CHECK(strstr(buf, "\"status\":401") != NULL);
	CHECK(strstr(buf, "s3cret") == NULL);
	CHECK(strstr(buf, "wrong-token") == NULL);
	CHECK(strstr(buf, "qsecret") == NULL);
}

/* ------------------------------------------------------------------ */
/* concurrency                                                         */
/* ------------------------------------------------------------------ */

#define NTHREADS 8
#define NREQ 200

struct worker {
	int port;
	int idx;
	int ok;
};

static void *client_thread(void *arg)
{
	struct worker *w = arg;
	CURL *c = curl_easy_init();
	for (int i = 0; i < NREQ; i++) {
		char path[128], want[256];
		struct reply r;
		if (i % 4 == 3) {
			struct req_opts o = { .method = "POST", .auth = "Bearer tok",
					      .body = "[1,2,3]", .body_len = 7 };
			snprintf(path, sizeof path, "/api/integrations/jobs/t%d/run", w->idx);
			do_req(c, w->port, path, &o, &r);
			snprintf(want, sizeof want, "{\"len\":7,\"json\":true,\"lastIsX\":false}");
			if (r.status == 201 && r.body && strcmp(r.body, want) == 0)
				w->ok++;
		} else {
			snprintf(path, sizeof path, "/jobs/t%d/runs/%d", w->idx, i);
			do_req(c, w->port, path, NULL, &r);
			snprintf(want, sizeof want,
				 "{\"job\":\"t%d\",\"id\":\"%d\",\"noSuch\":true,\"method\":\"GET\","
				 "\"path\":\"/jobs/t%d/runs/%d\"}", w->idx, i, w->idx, i);
			if (r.status == 200 && r.body && strcmp(r.body, want) == 0)
				w->ok++;
		}
		reply_free(&r);
	}
	curl_easy_cleanup(c);
	return NULL;
}

static void test_concurrent(void)
{
	struct app a = { 0 };
	struct httpd *srv = start("tok", 0, &a);
	pthread_t th[NTHREADS];
	struct worker w[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .port = httpd_port(srv), .idx = i, .ok = 0 };
		pthread_create(&th[i], NULL, client_thread, &w[i]);
	}
	int ok = 0;
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		ok += w[i].ok;
	}
	CHECK(ok == NTHREADS * NREQ);
	CHECK(atomic_load(&a.calls) == NTHREADS * NREQ);
	struct httpd_stats st;
	httpd_get_stats(srv, &st);
	CHECK(st.requests == NTHREADS * NREQ);
	httpd_stop(srv);
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	static const struct unit_test tests[] = {
		{ "routing", test_routing },
		{ "not_found_and_method", test_not_found_and_method },
		{ "auth", test_auth },
		{ "bodies", test_bodies },
		{ "small_limit", test_small_limit },
		{ "discard_cap", test_discard_cap },
		{ "query_and_headers", test_query_and_headers },
		{ "handler_answers", test_handler_answers },
		{ "headers_too_large", test_headers_too_large },
		{ "start_errors", test_start_errors },
		{ "access_log", test_access_log },
		{ "concurrent", test_concurrent },
	};
	int rc = unit_run(tests, JR_ARRAY_LEN(tests));
	curl_global_cleanup();
	return rc;
}
