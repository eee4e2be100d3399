/* graph.c -- see graph.h for the contract and the error classification.
 *
 * Layout: libcurl loading -> URL helpers (redaction, origin, path) ->
 * message scrubbing -> classification of answers -> the curl transport ->
 * the API.
 */
#include "graph.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "registry.h"
#include "run.h"
#include "sha256.h"
#include "url.h"
#include "util.h"

#define GRAPH_MAX_HEADER_BYTES 8192   /* captured header values are cut here */
#define GRAPH_CONNECT_TIMEOUT_MAX_MS 10000
#define GRAPH_LIBCURL "libcurl.so.4"   /* curl's ABI 4, the one its headers describe */

struct graph_client {
	CURL *curl;
	char *base_url;             /* META_GRAPH_URL without trailing '/' */
	char *app_secret;           /* NULL: no appsecret_proof */
	int64_t timeout_ms;

	/* per request */
	struct strbuf body;
	int body_over;              /* the body passed GRAPH_MAX_BODY_BYTES */
	struct strbuf usage;        /* X-Business-Use-Case-Usage */
	struct strbuf retry_after;  /* Retry-After */
};

/* ------------------------------------------------------------------ */
/* libcurl, loaded on first use                                        */
/* ------------------------------------------------------------------ */

/* libcurl is opened with dlopen() the first time a Graph client is made,
 * not linked: only the Meta jobs use it, and with what it pulls in (nghttp2,
 * ssh2, rtmp, idn2, psl, brotli, ...) it added 0.8 MiB to the resident size
 * of every consumer and producer, idle or not.  The calls go through this
 * table; the names keep curl's without the "curl_" prefix. */
#define CURL_FUNCS(X)                                                          \
	X(global_init) X(easy_init) X(easy_setopt) X(easy_perform) X(easy_getinfo) \
	X(easy_strerror) X(easy_cleanup) X(free) X(slist_append) X(slist_free_all) \
	X(url) X(url_set) X(url_get) X(url_cleanup)

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
	void *lib = dlopen(GRAPH_LIBCURL, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *e = dlerror();
		snprintf(cl.err, sizeof cl.err, "cannot load %s: %s", GRAPH_LIBCURL, e ? e : "?");
		return;
	}
	/* POSIX's way of storing a dlsym() result in a function pointer */
#define X(f)                                                                   \
	if (!cl.err[0] && !(*(void **)&cl.f = dlsym(lib, "curl_" #f)))         \
		snprintf(cl.err, sizeof cl.err, "%s has no curl_" #f, GRAPH_LIBCURL);
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
/* URL helpers                                                         */
/* ------------------------------------------------------------------ */

/* Splits url into scheme "://" authority rest (path, query, fragment):
 * *auth and *rest point into url.  Returns 0, or -1 when url has no
 * scheme (then all of it is rest). */
void graph_url_path(const char *url, char *out, size_t outlen)
{
	struct url_parts p;
	url_split(url, &p);   /* a bare path: p.rest is url */
	const char *rest = p.rest;
	size_t plen = strcspn(rest, "?#");
	if (plen == 0 || rest[0] != '/')
		snprintf(out, outlen, "/%.*s", (int)plen, rest);
	else
		snprintf(out, outlen, "%.*s", (int)plen, rest);
}

void graph_redact_url(const char *url, char *out, size_t outlen)
{
	url_redact(url, out, outlen);
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

int graph_same_origin(const char *a, const char *b)
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
/* scrubbing                                                           */
/* ------------------------------------------------------------------ */

void graph_scrub(char *msg, size_t cap, const char *const *secrets, size_t nsecrets)
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

/* ------------------------------------------------------------------ */
/* classification                                                      */
/* ------------------------------------------------------------------ */

static int is_throttle_code(int code)
{
	return code == 4 || code == 17 || code == 32 || code == 613 ||
	       (code >= 80000 && code <= 80014);
}

/* A JSON number or numeric string as an int64 within [min, max]: 0 or -1. */
static int json_i64(const cJSON *v, int64_t min, int64_t max, int64_t *out)
{
	if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;
		if (!(d >= (double)min && d <= (double)max))
			return -1;
		*out = (int64_t)d;
		return 0;
	}
	if (cJSON_IsString(v))
		return parse_i64(v->valuestring, min, max, out);
	return -1;
}

/* Raises *max_min to entry's estimated_time_to_regain_access (minutes). */
static void regain_minutes(const cJSON *entry, int64_t *max_min)
{
	int64_t m;
	if (!json_i64(cJSON_GetObjectItemCaseSensitive(entry, "estimated_time_to_regain_access"), 0,
		      INT32_MAX, &m) && m > *max_min)
		*max_min = m;
}

int64_t graph_usage_retry_ms(const char *header)
{
	if (!header || !*header)
		return 0;
	cJSON *root = cJSON_ParseWithLength(header, strlen(header));
	int64_t max_min = 0;
	const cJSON *ent, *item;
	/* {"<business id>":[{...}, ...], ...}; a bare entry object is taken too */
	cJSON_ArrayForEach(ent, root) {
		if (cJSON_IsObject(ent)) {
			regain_minutes(ent, &max_min);
			continue;
		}
		cJSON_ArrayForEach(item, ent)
			regain_minutes(item, &max_min);
	}
	cJSON_Delete(root);
	int64_t ms = max_min * 60 * 1000;
	return ms > GRAPH_MAX_RETRY_AFTER_MS ? GRAPH_MAX_RETRY_AFTER_MS : ms;
}

/* Retry-After in delta-seconds (the HTTP-date form is ignored): ms or 0. */
static int64_t retry_after_ms(const char *v)
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
	if (parse_i64(tmp, 0, GRAPH_MAX_RETRY_AFTER_MS / 1000, &s))
		return 0;
	return s * 1000;
}

void graph_classify(long http_status, const char *body, size_t len, const char *usage_header,
		    const char *retry_after_header, const char *what, struct graph_result *res)
{
	graph_result_clear(res);
	res->http_status = http_status;

	cJSON *root = len ? cJSON_ParseWithLength(body, len) : NULL;
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
	int ok_status = http_status >= 200 && http_status < 300;

	if (ok_status && cJSON_IsObject(root) && !err) {
		res->kind = GRAPH_OK;
		res->body = root;
		return;
	}

	int transient_flag = 0;
	if (cJSON_IsObject(err)) {
		int64_t v;
		const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
		const cJSON *type = cJSON_GetObjectItemCaseSensitive(err, "type");
		const cJSON *trace = cJSON_GetObjectItemCaseSensitive(err, "fbtrace_id");
		if (!json_i64(cJSON_GetObjectItemCaseSensitive(err, "code"), 0, INT32_MAX, &v))
			res->code = (int)v;
		if (!json_i64(cJSON_GetObjectItemCaseSensitive(err, "error_subcode"), 0, INT32_MAX, &v))
			res->subcode = (int)v;
		transient_flag = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(err, "is_transient"));

		struct strbuf sb = STRBUF_INIT;
		sb_adds(&sb, cJSON_IsString(msg) && *msg->valuestring ? msg->valuestring
								      : "Graph API error");
		sb_addf(&sb, " (code %d", res->code);
		if (res->subcode)
			sb_addf(&sb, ", subcode %d", res->subcode);
		if (cJSON_IsString(type))
			sb_addf(&sb, ", %.40s", type->valuestring);
		sb_addf(&sb, ", HTTP %ld", http_status);
		if (cJSON_IsString(trace))
			sb_addf(&sb, ", fbtrace_id %.40s", trace->valuestring);
		sb_addf(&sb, "; %s)", what);
		snprintf(res->message, sizeof(res->message), "%s", sb.buf);
		sb_release(&sb);
	} else if (ok_status) {
		snprintf(res->message, sizeof(res->message), "%s: HTTP %ld with %s", what,
			 http_status, len ? "a body that is not a JSON object" : "an empty body");
	} else {
		snprintf(res->message, sizeof(res->message), "%s: HTTP %ld", what, http_status);
	}
	cJSON_Delete(root);

	if (res->code == 190) {
		res->kind = GRAPH_AUTH;
	} else if (is_throttle_code(res->code) || http_status == 429) {
		res->kind = GRAPH_THROTTLED;
		res->retry_after_ms = graph_usage_retry_ms(usage_header);
		if (!res->retry_after_ms)
			res->retry_after_ms = retry_after_ms(retry_after_header);
	} else if (res->code == 1 || res->code == 2 || transient_flag || http_status >= 500 ||
		   (ok_status && !cJSON_IsObject(err))) {
		/* a 2xx that is not JSON is a truncated or mangled answer */
		res->kind = GRAPH_TRANSIENT;
	} else {
		res->kind = GRAPH_PERMANENT;
	}
}

void graph_result_clear(struct graph_result *res)
{
	cJSON_Delete(res->body);
	memset(res, 0, sizeof(*res));
}

const char *graph_kind_name(enum graph_kind kind)
{
	static const char *const names[] = { "ok", "auth", "throttled", "transient", "permanent" };
	return (unsigned)kind < JR_ARRAY_LEN(names) ? names[kind] : "?";
}

void graph_to_run_result(const struct graph_result *res, struct run_result *out)
{
	switch (res->kind) {
	case GRAPH_OK:
		out->outcome = RUN_OK;
		break;
	case GRAPH_THROTTLED:
	case GRAPH_TRANSIENT:
		out->outcome = RUN_RETRY;
		break;
	default:
		out->outcome = RUN_FAIL;
		break;
	}
	out->retry_after_ms = res->kind == GRAPH_THROTTLED ? res->retry_after_ms : 0;
	snprintf(out->error, sizeof(out->error), "%s", res->message);
}

int graph_day_range(int64_t now_ms, int64_t days, char since[11], char until[11])
{
	if (days < 1 || days > 3660)
		return -1;
	time_t now = (time_t)(now_ms / 1000), first = now - (time_t)((days - 1) * 86400);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(until, 11, "%Y-%m-%d", &tm);
	gmtime_r(&first, &tm);
	strftime(since, 11, "%Y-%m-%d", &tm);
	return 0;
}

/* ------------------------------------------------------------------ */
/* transport                                                           */
/* ------------------------------------------------------------------ */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct graph_client *c = arg;
	size_t n = size * nmemb;
	if (c->body.len + n > GRAPH_MAX_BODY_BYTES) {
		c->body_over = 1;
		return 0;                   /* aborts with CURLE_WRITE_ERROR */
	}
	sb_add(&c->body, ptr, n);
	return n;
}

/* Keeps the value of a header line "Name: value\r\n" if name matches. */
static void keep_header(const char *line, size_t n, const char *name, struct strbuf *out)
{
	size_t nlen = strlen(name);
	if (n <= nlen || line[nlen] != ':' || strncasecmp(line, name, nlen))
		return;
	const char *v = line + nlen + 1;
	size_t vlen = n - nlen - 1;
	while (vlen && (*v == ' ' || *v == '\t'))
		v++, vlen--;
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
	sb_reset(out);
	sb_add(out, v, vlen < GRAPH_MAX_HEADER_BYTES ? vlen : GRAPH_MAX_HEADER_BYTES);
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct graph_client *c = arg;
	size_t n = size * nmemb;
	if (n >= 5 && !strncmp(ptr, "HTTP/", 5)) {   /* a new response (e.g. after 100) */
		sb_reset(&c->usage);
		sb_reset(&c->retry_after);
	}
	keep_header(ptr, n, "X-Business-Use-Case-Usage", &c->usage);
	keep_header(ptr, n, "Retry-After", &c->retry_after);
	return n;
}

struct graph_client *graph_client_new(const struct config *cfg)
{
	struct graph_client *c = xcalloc(1, sizeof(*c));
	const char *base = cfg->meta_graph_url && *cfg->meta_graph_url
				   ? cfg->meta_graph_url : "https://graph.facebook.com/v21.0";
	size_t blen = strlen(base);
	while (blen && base[blen - 1] == '/')
		blen--;
	c->base_url = xstrndup(base, blen);
	c->app_secret = cfg->meta_app_secret && *cfg->meta_app_secret
				? xstrdup(cfg->meta_app_secret) : NULL;
	c->timeout_ms = cfg->meta_http_timeout_ms > 0 ? cfg->meta_http_timeout_ms
						      : GRAPH_DEFAULT_TIMEOUT_MS;
	/* without libcurl the client is made all the same; perform() then
	 * answers every request with the reason (cl.err) */
	c->curl = curl_ready() ? cl.easy_init() : NULL;
	if (!c->curl)
		return c;
	long connect_ms = (long)(c->timeout_ms < GRAPH_CONNECT_TIMEOUT_MAX_MS
					 ? c->timeout_ms : GRAPH_CONNECT_TIMEOUT_MAX_MS);
	CURL *h = c->curl;
	cl.easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	cl.easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	cl.easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
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
	return c;
}

void graph_client_free(struct graph_client *c)
{
	if (!c)
		return;
	if (c->curl)
		cl.easy_cleanup(c->curl);
	free(c->base_url);
	if (c->app_secret)
		explicit_bzero(c->app_secret, strlen(c->app_secret));
	free(c->app_secret);
	sb_release(&c->body);
	sb_release(&c->usage);
	sb_release(&c->retry_after);
	free(c);
}

struct graph_client *graph_client_for(struct job_ctx *ctx)
{
	if (!ctx->http)
		ctx->http = graph_client_new(ctx->cfg);
	return ctx->http;
}

/* The kind of a transport failure: configuration mistakes are permanent,
 * everything else (timeouts, refused, reset, DNS, TLS) is transient. */
static enum graph_kind curl_kind(CURLcode rc)
{
	switch (rc) {
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_NOT_BUILT_IN:
	case CURLE_TOO_MANY_REDIRECTS:
		return GRAPH_PERMANENT;
	default:
		return GRAPH_TRANSIENT;
	}
}

static void wipe_slist(struct curl_slist *l)
{
	for (struct curl_slist *p = l; p; p = p->next)
		explicit_bzero(p->data, strlen(p->data));
	cl.slist_free_all(l);
}

/* One GET of url.  what names it in messages (no query); secrets are
 * scrubbed from the message.  Fills res; 0 if OK, else -1. */
static int perform(struct graph_client *c, const char *url, const char *token, const char *what,
		   const char *const *secrets, size_t nsecrets, struct graph_result *res)
{
	graph_result_clear(res);
	sb_reset(&c->body);
	sb_reset(&c->usage);
	sb_reset(&c->retry_after);
	c->body_over = 0;
	if (!c->curl) {
		/* a deployment without libcurl: no retry will do better */
		res->kind = GRAPH_PERMANENT;
		snprintf(res->message, sizeof(res->message), "%s: %s", what,
			 cl.err[0] ? cl.err : "curl_easy_init failed");
		return -1;
	}

	struct curl_slist *hdrs = cl.slist_append(NULL, "Accept: application/json");
	if (token) {
		char *auth = xasprintf("Authorization: Bearer %s", token);
		hdrs = cl.slist_append(hdrs, auth);
		explicit_bzero(auth, strlen(auth));
		free(auth);
	}
	if (!hdrs)
		abort();
	cl.easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
	cl.easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
	cl.easy_setopt(c->curl, CURLOPT_URL, url);
	CURLcode rc = cl.easy_perform(c->curl);
	cl.easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
	wipe_slist(hdrs);

	if (rc == CURLE_WRITE_ERROR && c->body_over) {
		res->kind = GRAPH_PERMANENT;
		snprintf(res->message, sizeof(res->message), "%s: response body over %u bytes",
			 what, GRAPH_MAX_BODY_BYTES);
	} else if (rc == CURLE_OPERATION_TIMEDOUT) {
		res->kind = GRAPH_TRANSIENT;
		snprintf(res->message, sizeof(res->message), "%s: timed out after %lld ms", what,
			 (long long)c->timeout_ms);
	} else if (rc != CURLE_OK) {
		res->kind = curl_kind(rc);
		snprintf(res->message, sizeof(res->message), "%s: %s", what, cl.easy_strerror(rc));
	} else {
		long status = 0;
		cl.easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
		graph_classify(status, c->body.buf ? c->body.buf : "", c->body.len,
			       c->usage.len ? c->usage.buf : NULL,
			       c->retry_after.len ? c->retry_after.buf : NULL, what, res);
	}
	if (c->body.buf)
		explicit_bzero(c->body.buf, c->body.len);   /* token exchanges answer tokens */
	graph_scrub(res->message, sizeof(res->message), secrets, nsecrets);
	return res->kind == GRAPH_OK ? 0 : -1;
}

/* Appends "&name=value" to sb, value percent-encoded (all but RFC 3986's
 * unreserved characters, as curl_easy_escape); the first one gets '?'. */
static void add_param(struct strbuf *sb, const char *name, const char *value)
{
	static const char hex[] = "0123456789ABCDEF";
	sb_addf(sb, "%c%s=", strchr(sb->buf, '?') ? '&' : '?', name);
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			sb_add(sb, (const char *)p, 1);
		} else {
			char e[3] = { '%', hex[*p >> 4], hex[*p & 15] };
			sb_add(sb, e, 3);
		}
	}
}

static void add_proof(struct graph_client *c, struct strbuf *sb, const char *token)
{
	uint8_t mac[SHA256_LEN];
	char hex[SHA256_HEX_LEN + 1];
	sha256_hmac(c->app_secret, strlen(c->app_secret), token, strlen(token), mac);
	sha256_hex(mac, hex);
	add_param(sb, "appsecret_proof", hex);
}

/* The secrets of one call: token, app secret and secret params. */
#define GRAPH_MAX_SECRETS 8
static size_t collect_secrets(const struct graph_client *c, const struct graph_param *params,
			      size_t nparams, const char *token, const char **out)
{
	size_t n = 0;
	out[n++] = token;
	out[n++] = c->app_secret;
	for (size_t i = 0; i < nparams && n < GRAPH_MAX_SECRETS; i++)
		if (params[i].secret)
			out[n++] = params[i].value;
	return n;
}

static void wipe_sb(struct strbuf *sb)
{
	if (sb->buf)
		explicit_bzero(sb->buf, sb->len);
	sb_release(sb);
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

int graph_get(struct graph_client *c, const char *path, const struct graph_param *params,
	      size_t nparams, const char *access_token, struct graph_result *res)
{
	const char *secrets[GRAPH_MAX_SECRETS];
	size_t nsecrets = collect_secrets(c, params, nparams, access_token, secrets);

	struct strbuf url = STRBUF_INIT;
	sb_addf(&url, "%s%s", c->base_url, path);
	for (size_t i = 0; i < nparams; i++)
		if (params[i].value)          /* a NULL value leaves the parameter out */
			add_param(&url, params[i].name, params[i].value);
	if (c->app_secret && access_token)
		add_proof(c, &url, access_token);

	char what[300], upath[256];
	graph_url_path(url.buf, upath, sizeof(upath));
	snprintf(what, sizeof(what), "GET %s", upath);
	int rc = perform(c, url.buf, access_token, what, secrets, nsecrets, res);
	wipe_sb(&url);
	return rc;
}

int graph_get_paged(struct graph_client *c, const char *path, const struct graph_param *params,
		    size_t nparams, const char *access_token, graph_page_fn fn, void *arg,
		    struct graph_result *res)
{
	const char *secrets[GRAPH_MAX_SECRETS];
	size_t nsecrets = collect_secrets(c, params, nparams, access_token, secrets);
	struct strbuf next = STRBUF_INIT;
	char what[300], upath_page[256];

	char *first = xasprintf("%s%s", c->base_url, path);
	graph_url_path(first, upath_page, sizeof(upath_page));
	free(first);
	if (graph_get(c, path, params, nparams, access_token, res))
		return -1;
	for (int page = 1;; page++) {
		const cJSON *data = cJSON_GetObjectItemCaseSensitive(res->body, "data");
		const cJSON *paging = cJSON_GetObjectItemCaseSensitive(res->body, "paging");
		const cJSON *nx = cJSON_GetObjectItemCaseSensitive(paging, "next");

		if (!cJSON_IsArray(data)) {
			res->kind = GRAPH_PERMANENT;
			snprintf(res->message, sizeof(res->message),
				 "GET %s: answer without a data array", upath_page);
			break;
		}
		enum graph_kind kind = GRAPH_PERMANENT;
		char err[sizeof(res->message)] = "";
		if (fn(data, arg, &kind, err, sizeof(err))) {
			res->kind = kind == GRAPH_OK ? GRAPH_PERMANENT : kind;
			snprintf(res->message, sizeof(res->message), "%s", err);
			break;
		}
		if (!cJSON_IsString(nx) || !*nx->valuestring)
			break;                          /* the last page */
		if (!graph_same_origin(nx->valuestring, c->base_url)) {
			res->kind = GRAPH_PERMANENT;
			snprintf(res->message, sizeof(res->message),
				 "GET %s: paging.next points to another origin, not followed",
				 upath_page);
			break;
		}
		if (page >= GRAPH_MAX_PAGES) {
			res->kind = GRAPH_PERMANENT;
			snprintf(res->message, sizeof(res->message),
				 "GET %s: more than %d pages, stopped", upath_page, GRAPH_MAX_PAGES);
			break;
		}
		wipe_sb(&next);
		sb_adds(&next, nx->valuestring);
		const char *q = strchr(next.buf, '?');
		if (c->app_secret && access_token && !(q && strstr(q, "appsecret_proof=")))
			add_proof(c, &next, access_token);
		graph_url_path(next.buf, upath_page, sizeof(upath_page));
		snprintf(what, sizeof(what), "GET %s", upath_page);
		if (perform(c, next.buf, access_token, what, secrets, nsecrets, res))
			break;
	}
	wipe_sb(&next);
	graph_scrub(res->message, sizeof(res->message), secrets, nsecrets);
	if (res->kind != GRAPH_OK) {
		cJSON_Delete(res->body);
		res->body = NULL;
		return -1;
	}
	return 0;
}
