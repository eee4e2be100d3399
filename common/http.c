/* http.c -- see http.h.
 *
 * Layout: libcurl loading -> helpers (scrubbing, classification, query
 * parameters, origins) -> the client.
 */
#include "http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "run.h"
#include "util.h"

#define HTTP_LIBCURL "libcurl.so.4"   /* curl's ABI 4, the one its headers describe */

struct http_client {
	CURL *curl;              /* NULL: libcurl missing, cl.err says why */
	struct strbuf body;
	int body_over;           /* the body passed HTTP_MAX_BODY_BYTES */
	/* per request: the response headers to keep */
	const char *const *capture;
	size_t ncapture;
	struct strbuf captured[HTTP_MAX_CAPTURE];
	int have[HTTP_MAX_CAPTURE];
	atomic_int *stop;        /* set: a transfer under way ends (http_client_stop_flag) */
};

/* ------------------------------------------------------------------ */
/* libcurl, loaded on first use                                        */
/* ------------------------------------------------------------------ */

/* The calls go through this table; the names keep curl's without the
 * "curl_" prefix. */
#define CURL_FUNCS(X)                                                          \
	X(global_init) X(easy_init) X(easy_setopt) X(easy_perform) X(easy_getinfo) \
	X(easy_strerror) X(easy_escape) X(easy_cleanup) X(free) X(slist_append)    \
	X(slist_free_all) X(url) X(url_set) X(url_get) X(url_cleanup)

static struct {
#define X(f) __typeof__(curl_##f) *f;
	CURL_FUNCS(X)
#undef X
	void *lib;            /* NULL: not loaded, err says why */
	char err[200];
} cl;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_load(void)
{
	void *lib = dlopen(HTTP_LIBCURL, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *e = dlerror();
		snprintf(cl.err, sizeof cl.err, "cannot load %s: %s", HTTP_LIBCURL, e ? e : "?");
		return;
	}
	/* POSIX's way of storing a dlsym() result in a function pointer */
#define X(f)                                                                   \
	if (!cl.err[0] && !(*(void **)&cl.f = dlsym(lib, "curl_" #f)))         \
		snprintf(cl.err, sizeof cl.err, "%s has no curl_" #f, HTTP_LIBCURL);
	CURL_FUNCS(X)
#undef X
	if (!cl.err[0] && cl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		snprintf(cl.err, sizeof cl.err, "curl_global_init failed");
	if (cl.err[0])
		dlclose(lib);
	else
		cl.lib = lib;
}

/* 1 when libcurl is usable (loading it the first time), else 0. */
static int curl_ready(void)
{
	pthread_once(&curl_once, curl_load);
	return cl.lib != NULL;
}

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

void http_scrub(char *msg, size_t cap, const char *const *secrets, size_t nsecrets)
{
	static const char mark[] = "[REDACTED]";
	if (!cap)
		return;
	for (size_t i = 0; i < nsecrets; i++) {
		const char *sec = secrets[i];
		if (!sec || !*sec || !strstr(msg, sec))
			continue;
		size_t slen = strlen(sec);
		struct strbuf sb = STRBUF_INIT;
		const char *p = msg, *hit;
		while ((hit = strstr(p, sec))) {
			sb_add(&sb, p, (size_t)(hit - p));
			sb_adds(&sb, mark);
			p = hit + slen;
		}
		sb_adds(&sb, p);
		snprintf(msg, cap, "%s", sb.buf);
		sb_release(&sb);
	}
}

enum http_kind http_status_kind(long status)
{
	if (status >= 200 && status < 300)
		return HTTP_OK;
	if (status == 408 || status == 425 || status == 429 || status >= 500)
		return HTTP_TRANSIENT;
	return HTTP_PERMANENT;
}

int64_t http_retry_after_ms(const char *v, int64_t max_ms)
{
	int64_t s;
	if (!v)
		return 0;
	while (isspace((unsigned char)*v))
		v++;
	char tmp[32];
	size_t n = strcspn(v, " \t\r\n");
	if (n == 0 || n >= sizeof(tmp))
		return 0;
	memcpy(tmp, v, n);
	tmp[n] = '\0';
	if (parse_i64(tmp, 0, max_ms / 1000, &s))
		return 0;
	return s * 1000;
}

void http_to_run_result(enum http_kind kind, const char *message, struct run_result *out)
{
	out->outcome = kind == HTTP_OK ? RUN_OK : kind == HTTP_TRANSIENT ? RUN_RETRY : RUN_FAIL;
	snprintf(out->error, sizeof(out->error), "%s", message ? message : "");
}

void http_add_query_param(struct http_client *c, struct strbuf *url, const char *name,
			  const char *value)
{
	if (!c->curl)          /* no libcurl: the request answers with the reason */
		return;
	size_t n = strlen(value);
	char *e = cl.easy_escape(c->curl, value, n > INT_MAX ? INT_MAX : (int)n);
	if (!e) {
		fprintf(stderr, "jobrunner: out of memory in curl_easy_escape\n");
		abort();
	}
	sb_addf(url, "%c%s=%s", url->buf && strchr(url->buf, '?') ? '&' : '?', name, e);
	explicit_bzero(e, strlen(e));    /* the value may be a token */
	cl.free(e);
}

/* Fills scheme/host/port of an absolute http(s) URL (owned by u). */
static int origin_parts(CURLU *u, const char *url, char **scheme, char **host, char **port)
{
	*scheme = *host = *port = NULL;
	if (cl.url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
		return -1;
	if (cl.url_get(u, CURLUPART_SCHEME, scheme, 0) != CURLUE_OK ||
	    cl.url_get(u, CURLUPART_HOST, host, 0) != CURLUE_OK ||
	    cl.url_get(u, CURLUPART_PORT, port, CURLU_DEFAULT_PORT) != CURLUE_OK)
		return -1;
	if (strcasecmp(*scheme, "http") && strcasecmp(*scheme, "https"))
		return -1;
	return 0;
}

int http_same_origin(const char *a, const char *b)
{
	if (!curl_ready())
		return 0;   /* nothing can be fetched anyway */
	CURLU *ua = cl.url(), *ub = cl.url();
	char *sa, *ha, *pa, *sb, *hb, *pb;
	int same = 0;
	if (!ua || !ub)
		abort();
	int ra = origin_parts(ua, a, &sa, &ha, &pa);
	int rb = origin_parts(ub, b, &sb, &hb, &pb);
	if (!ra && !rb)
		same = !strcasecmp(sa, sb) && !strcasecmp(ha, hb) && !strcmp(pa, pb);
	cl.free(sa);
	cl.free(ha);
	cl.free(pa);
	cl.free(sb);
	cl.free(hb);
	cl.free(pb);
	cl.url_cleanup(ua);
	cl.url_cleanup(ub);
	return same;
}

/* ------------------------------------------------------------------ */
/* the client                                                          */
/* ------------------------------------------------------------------ */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct http_client *c = arg;
	size_t n = size * nmemb;
	if (c->body.len + n > HTTP_MAX_BODY_BYTES) {
		c->body_over = 1;
		return 0;                   /* aborts with CURLE_WRITE_ERROR */
	}
	sb_add(&c->body, ptr, n);
	return n;
}

/* Keeps the value of a header line "Name: value\r\n" if name matches. */
static int keep_header(const char *line, size_t n, const char *name, struct strbuf *out)
{
	size_t nlen = strlen(name);
	if (n <= nlen || line[nlen] != ':' || strncasecmp(line, name, nlen))
		return 0;
	const char *v = line + nlen + 1;
	size_t vlen = n - nlen - 1;
	while (vlen && (*v == ' ' || *v == '\t'))
		v++, vlen--;
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
	sb_reset(out);
	sb_add(out, v, vlen < HTTP_MAX_HEADER_BYTES ? vlen : HTTP_MAX_HEADER_BYTES);
	return 1;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct http_client *c = arg;
	size_t n = size * nmemb;
	if (n >= 5 && !strncmp(ptr, "HTTP/", 5))     /* a new response (e.g. after 100) */
		memset(c->have, 0, sizeof c->have);
	for (size_t i = 0; i < c->ncapture; i++)
		if (keep_header(ptr, n, c->capture[i], &c->captured[i]))
			c->have[i] = 1;
	return n;
}

/* Progress callback: a nonzero answer ends the transfer at once
 * (CURLE_ABORTED_BY_CALLBACK); libcurl calls it about once a second while
 * idle, more often while data flows. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	const struct http_client *c = arg;
	return c->stop && atomic_load_explicit(c->stop, memory_order_acquire);
}

void http_client_stop_flag(struct http_client *c, atomic_int *stop)
{
	if (c)
		c->stop = stop;
}

struct http_client *http_client_new(void)
{
	struct http_client *c = xcalloc(1, sizeof(*c));
	c->curl = curl_ready() ? cl.easy_init() : NULL;
	if (!c->curl)
		return c;
	CURL *h = c->curl;
	cl.easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	cl.easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	cl.easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	cl.easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	cl.easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	cl.easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	cl.easy_setopt(h, CURLOPT_USERAGENT, "jobrunner/" JR_VERSION);
	cl.easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	cl.easy_setopt(h, CURLOPT_WRITEDATA, c);
	cl.easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	cl.easy_setopt(h, CURLOPT_HEADERDATA, c);
	cl.easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	cl.easy_setopt(h, CURLOPT_XFERINFODATA, c);
	cl.easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	return c;
}

void http_wipe_body(struct http_client *c)
{
	if (c->body.buf)
		explicit_bzero(c->body.buf, c->body.len);
	sb_reset(&c->body);
}

void http_client_free(struct http_client *c)
{
	if (!c)
		return;
	if (c->curl)
		cl.easy_cleanup(c->curl);
	http_wipe_body(c);
	sb_release(&c->body);
	for (size_t i = 0; i < HTTP_MAX_CAPTURE; i++)
		sb_release(&c->captured[i]);
	free(c);
}

/* The kind of a transport failure: configuration mistakes are permanent,
 * everything else (timeouts, refused, reset, DNS, TLS) is transient. */
static enum http_kind curl_kind(CURLcode rc)
{
	switch (rc) {
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_NOT_BUILT_IN:
	case CURLE_TOO_MANY_REDIRECTS:
		return HTTP_PERMANENT;
	default:
		return HTTP_TRANSIENT;
	}
}

static void wipe_slist(struct curl_slist *l)
{
	for (struct curl_slist *p = l; p; p = p->next)
		explicit_bzero(p->data, strlen(p->data));
	cl.slist_free_all(l);
}

static void set_method(CURL *h, const struct http_request *rq)
{
	const char *m = rq->method ? rq->method : "GET";
	if (!strcmp(m, "GET") && !rq->body) {
		cl.easy_setopt(h, CURLOPT_CUSTOMREQUEST, (char *)NULL);
		cl.easy_setopt(h, CURLOPT_HTTPGET, 1L);
		return;
	}
	cl.easy_setopt(h, CURLOPT_POST, 1L);
	cl.easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
	cl.easy_setopt(h, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
	cl.easy_setopt(h, CURLOPT_CUSTOMREQUEST, strcmp(m, "POST") ? m : (char *)NULL);
}

int http_request(struct http_client *c, const struct http_request *rq, struct http_response *res)
{
	memset(res, 0, sizeof *res);
	res->body = "";
	http_wipe_body(c);
	c->body_over = 0;
	c->capture = rq->capture;
	c->ncapture = rq->ncapture < HTTP_MAX_CAPTURE ? rq->ncapture : HTTP_MAX_CAPTURE;
	memset(c->have, 0, sizeof c->have);
	const char *what = rq->what ? rq->what : "HTTP request";
	int64_t timeout_ms = rq->timeout_ms > 0 ? rq->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	size_t nsecrets = rq->nsecrets < HTTP_MAX_SECRETS ? rq->nsecrets : HTTP_MAX_SECRETS;

	if (!c->curl) {
		/* a deployment without libcurl: no retry will do better */
		res->kind = HTTP_PERMANENT;
		snprintf(res->message, sizeof(res->message), "%s: %s", what,
			 cl.err[0] ? cl.err : "curl_easy_init failed");
		return -1;
	}

	struct curl_slist *hdrs = cl.slist_append(NULL, "Accept: application/json");
	if (rq->bearer) {
		char *auth = xasprintf("Authorization: Bearer %s", rq->bearer);
		hdrs = hdrs ? cl.slist_append(hdrs, auth) : NULL;
		explicit_bzero(auth, strlen(auth));
		free(auth);
	}
	for (size_t i = 0; hdrs && i < rq->nheaders; i++)
		hdrs = cl.slist_append(hdrs, rq->headers[i]);
	if (!hdrs)
		abort();
	CURL *h = c->curl;
	long connect_ms = (long)(timeout_ms < HTTP_CONNECT_TIMEOUT_MAX_MS ? timeout_ms
									 : HTTP_CONNECT_TIMEOUT_MAX_MS);
	cl.easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	cl.easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	cl.easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	set_method(h, rq);
	cl.easy_setopt(h, CURLOPT_URL, rq->url);
	CURLcode rc = cl.easy_perform(h);
	cl.easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	cl.easy_setopt(h, CURLOPT_URL, "");   /* the URL may hold a token */
	wipe_slist(hdrs);
	c->capture = NULL;

	if (rc == CURLE_WRITE_ERROR && c->body_over) {
		res->kind = HTTP_PERMANENT;
		snprintf(res->message, sizeof(res->message), "%s: response body over %u bytes",
			 what, HTTP_MAX_BODY_BYTES);
	} else if (rc == CURLE_ABORTED_BY_CALLBACK) {
		res->kind = HTTP_TRANSIENT;
		snprintf(res->message, sizeof(res->message), "%s: stopped (shutdown or cancel)", what);
	} else if (rc == CURLE_OPERATION_TIMEDOUT) {
		res->kind = HTTP_TRANSIENT;
		snprintf(res->message, sizeof(res->message), "%s: timed out after %lld ms", what,
			 (long long)timeout_ms);
	} else if (rc != CURLE_OK) {
		res->kind = curl_kind(rc);
		snprintf(res->message, sizeof(res->message), "%s: %s", what, cl.easy_strerror(rc));
	} else {
		res->kind = HTTP_OK;
		cl.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &res->status);
		sb_add(&c->body, "", 0);      /* NUL-terminated even when empty */
		res->body = c->body.buf;
		res->len = c->body.len;
		for (size_t i = 0; i < c->ncapture; i++)
			res->captured[i] = c->have[i] ? c->captured[i].buf : NULL;
	}
	if (res->kind != HTTP_OK)
		http_wipe_body(c);
	http_scrub(res->message, sizeof(res->message), rq->secrets, nsecrets);
	return res->kind == HTTP_OK ? 0 : -1;
}
