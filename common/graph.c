/* graph.c -- see graph.h for the contract and the error classification.
 *
 * Layout: URL helpers (redaction, path) -> classification of answers ->
 * the client on http.h -> the API.
 */
#include "graph.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "http.h"
#include "run.h"
#include "url.h"
#include "util.h"

struct graph_client {
	struct http_client *http;   /* not owned: the calling thread's */
	char *base_url;             /* META_GRAPH_URL without trailing '/' */
	char *app_secret;           /* NULL: no appsecret_proof */
	int64_t timeout_ms;
};

/* ------------------------------------------------------------------ */
/* URL helpers                                                         */
/* ------------------------------------------------------------------ */

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
			res->retry_after_ms = http_retry_after_ms(retry_after_header, GRAPH_MAX_RETRY_AFTER_MS);
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
/* the client                                                          */
/* ------------------------------------------------------------------ */

struct graph_client *graph_client_new(const struct config *cfg, struct http_client *http)
{
	struct graph_client *c = xcalloc(1, sizeof(*c));
	const char *base = cfg->meta_graph_url && *cfg->meta_graph_url
				   ? cfg->meta_graph_url : "https://graph.facebook.com/v21.0";
	size_t blen = strlen(base);
	while (blen && base[blen - 1] == '/')
		blen--;
	c->http = http;
	c->base_url = xstrndup(base, blen);
	c->app_secret = cfg->meta_app_secret && *cfg->meta_app_secret
				? xstrdup(cfg->meta_app_secret) : NULL;
	c->timeout_ms = cfg->meta_http_timeout_ms > 0 ? cfg->meta_http_timeout_ms
						      : GRAPH_DEFAULT_TIMEOUT_MS;
	return c;
}

void graph_client_free(struct graph_client *c)
{
	if (!c)
		return;
	free(c->base_url);
	if (c->app_secret)
		explicit_bzero(c->app_secret, strlen(c->app_secret));
	free(c->app_secret);
	free(c);
}

int graph_token_valid(const char *token)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)token; *p; p++, n++)
		if (*p < 0x21 || *p > 0x7e || n >= GRAPH_MAX_TOKEN_LEN)
			return 0;
	return n > 0;
}

/* One GET of url.  what names it in messages (no query); secrets are
 * scrubbed from the message.  Fills res; 0 if OK, else -1. */
static int perform(struct graph_client *c, const char *url, const char *token, const char *what,
		   const char *const *secrets, size_t nsecrets, struct graph_result *res)
{
	static const char *const capture[] = { "X-Business-Use-Case-Usage", "Retry-After" };
	graph_result_clear(res);
	/* a stored token goes into a header line: it must be header text
	 * (visible ASCII, no CR or LF that would start a header of its own) */
	if (token && !graph_token_valid(token)) {
		res->kind = GRAPH_AUTH;
		snprintf(res->message, sizeof(res->message),
			 "%s: the stored access token is not a valid token (empty, too long, or "
			 "characters other than visible ASCII)", what);
		return -1;
	}
	struct http_request rq = {
		.url = url, .what = what, .bearer = token, .capture = capture,
		.ncapture = JR_ARRAY_LEN(capture), .secrets = secrets, .nsecrets = nsecrets,
		.timeout_ms = c->timeout_ms,
	};
	struct http_response hr;
	if (http_request(c->http, &rq, &hr)) {
		res->kind = hr.kind == HTTP_TRANSIENT ? GRAPH_TRANSIENT : GRAPH_PERMANENT;
		snprintf(res->message, sizeof(res->message), "%s", hr.message);
		return -1;
	}
	graph_classify(hr.status, hr.body, hr.len, hr.captured[0], hr.captured[1], what, res);
	http_wipe_body(c->http);                /* token exchanges answer tokens */
	http_scrub(res->message, sizeof(res->message), secrets, nsecrets);
	return res->kind == GRAPH_OK ? 0 : -1;
}

static void add_proof(struct graph_client *c, struct strbuf *sb, const char *token)
{
	char hex[HMAC_SHA256_HEX_LEN + 1];
	hmac_sha256_hex(c->app_secret, strlen(c->app_secret), token, strlen(token), hex);
	http_add_query_param(c->http, sb, "appsecret_proof", hex);
}

/* The secrets of one call: token, app secret and secret params. */
#define GRAPH_MAX_SECRETS HTTP_MAX_SECRETS
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
			http_add_query_param(c->http, &url, params[i].name, params[i].value);
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
		if (!http_same_origin(nx->valuestring, c->base_url)) {
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
	http_scrub(res->message, sizeof(res->message), secrets, nsecrets);
	if (res->kind != GRAPH_OK) {
		cJSON_Delete(res->body);
		res->body = NULL;
		return -1;
	}
	return 0;
}
