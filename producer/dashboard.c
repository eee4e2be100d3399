/* dashboard.c -- serves the embedded dashboard and its sessions.
 *
 * Files: GET /dashboard is index.html, GET /dashboard/{file} the others,
 * from the table cmake/embed_files.cmake generates.  Each answer carries
 * the ETag of the file (If-None-Match gives 304), Cache-Control: no-cache
 * (the browser keeps the file but asks each time; the names are not
 * fingerprinted, so an upgrade shows at once), the gzipped bytes when the
 * client accepts gzip (Vary: Accept-Encoding), and the security headers:
 * a Content-Security-Policy that allows only this origin's own scripts,
 * styles, images and requests (no inline script or style), frame-ancestors
 * 'none' with X-Frame-Options: DENY, nosniff and Referrer-Policy:
 * no-referrer.
 *
 * Sessions (common/dashauth.h): POST /dashboard/login exchanges API_TOKEN
 * for the jr_session cookie (HttpOnly, SameSite=Strict, Path=/, Max-Age of
 * DASHBOARD_SESSION_TTL_MS, Secure when the request came through a TLS
 * proxy that says X-Forwarded-Proto: https; the producer itself serves
 * plain HTTP).  Login accepts only a JSON body and, when the browser sends
 * Origin, only from the producer's own origin.  The token is never logged,
 * never echoed, never put into the cookie (the cookie is an HMAC of an
 * expiry and a nonce).
 */
#include "dashboard.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "dashauth.h"
#include "httpd.h"
#include "log.h"
#include "util.h"

#define CSP "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " \
	    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
#define MAX_TOKEN_LEN 1024

static void security_headers(struct httpd_response *resp)
{
	httpd_add_header(resp, "X-Frame-Options", "DENY");
	httpd_add_header(resp, "X-Content-Type-Options", "nosniff");
	httpd_add_header(resp, "Referrer-Policy", "no-referrer");
}

/* 1 when Accept-Encoding allows gzip (a "gzip" entry whose q is not 0). */
static int accepts_gzip(const char *ae)
{
	if (!ae)
		return 0;
	for (const char *p = ae; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if ((n >= 4 && !strncasecmp(p, "gzip", 4) && (n == 4 || p[4] == ';' || p[4] == ' ')) ||
		    (n >= 1 && p[0] == '*' && (n == 1 || p[1] == ';' || p[1] == ' '))) {
			const char *q = memchr(p, ';', n);
			if (!q)
				return 1;
			const char *qv = strstr(q, "q=");
			if (!qv || qv >= p + n)
				return 1;
			return strtod(qv + 2, NULL) > 0;
		}
		if (!end)
			break;
		p = end + 1;
	}
	return 0;
}

static void serve(struct httpd_request *req, struct httpd_response *resp, const struct dash_asset *a)
{
	const char *inm = httpd_header(req, "If-None-Match");
	int gz = accepts_gzip(httpd_header(req, "Accept-Encoding"));
	if (inm && strstr(inm, a->etag)) {
		httpd_body(resp, 304, a->ctype, NULL, 0);
	} else if (gz) {
		char *b = xmalloc(a->gzlen);
		memcpy(b, a->gz, a->gzlen);
		httpd_body(resp, 200, a->ctype, b, a->gzlen);
		httpd_add_header(resp, "Content-Encoding", "gzip");
	} else {
		char *b = xmalloc(a->len);
		memcpy(b, a->body, a->len);
		httpd_body(resp, 200, a->ctype, b, a->len);
	}
	httpd_add_header(resp, "ETag", a->etag);
	httpd_add_header(resp, "Cache-Control", "no-cache");
	httpd_add_header(resp, "Vary", "Accept-Encoding");
	httpd_add_header(resp, "Content-Security-Policy", CSP);
	security_headers(resp);
}

static const struct dash_asset *find_asset(const char *name)
{
	for (int i = 0; i < dash_assets_count; i++)
		if (!strcmp(dash_assets[i].name, name))
			return &dash_assets[i];
	return NULL;
}

void dash_h_index(struct httpd_request *req, struct httpd_response *resp)
{
	const struct dash_asset *a = find_asset("index.html");
	if (!a) {
		httpd_error(resp, 404, "not_found", "no such file");
		return;
	}
	serve(req, resp, a);
}

void dash_h_file(struct httpd_request *req, struct httpd_response *resp)
{
	const char *name = httpd_param(req, "file");
	const struct dash_asset *a = name && strcmp(name, "index.html") ? find_asset(name) : NULL;
	if (!a) {
		httpd_error(resp, 404, "not_found", "no such file");
		return;
	}
	serve(req, resp, a);
}

/* "es" or "en" from Accept-Language: the supported language with the
 * highest q (the first one on a tie); "en" when neither is named. */
static const char *pick_lang(const char *al)
{
	const char *best = "en";
	double bestq = -1;
	for (const char *p = al; p && *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		double q = 1;
		const char *semi = memchr(p, ';', n);
		if (semi) {
			const char *qv = strstr(semi, "q=");
			if (qv && qv < p + n)
				q = strtod(qv + 2, NULL);
		}
		const char *lang = NULL;
		if (n >= 2 && !strncasecmp(p, "es", 2) && (n == 2 || p[2] == '-' || p[2] == ';' || p[2] == ' '))
			lang = "es";
		else if (n >= 2 && !strncasecmp(p, "en", 2) && (n == 2 || p[2] == '-' || p[2] == ';' || p[2] == ' '))
			lang = "en";
		if (lang && q > bestq) {
			best = lang;
			bestq = q;
		}
		if (!end)
			break;
		p = end + 1;
	}
	return best;
}

/* 1 when the request's Origin (if any) is the producer's own. */
static int same_origin(const struct httpd_request *req)
{
	const char *origin = httpd_header(req, "Origin");
	if (!origin)
		return 1;   /* not a browser's cross-origin request (SameSite covers the cookie) */
	return dashauth_origin_matches(origin, httpd_header(req, "Host"));
}

static int over_tls(const struct httpd_request *req)
{
	const char *xfp = httpd_header(req, "X-Forwarded-Proto");
	return xfp && !strcasecmp(xfp, "https");
}

static void set_cookie(struct httpd_request *req, struct httpd_response *resp, const char *value,
		       int64_t max_age_s)
{
	char c[DASHAUTH_COOKIE_LEN + 128];
	snprintf(c, sizeof c, "%s=%s; Path=/; Max-Age=%" PRId64 "; HttpOnly; SameSite=Strict%s",
		 DASHAUTH_COOKIE, value, max_age_s, over_tls(req) ? "; Secure" : "");
	httpd_add_header(resp, "Set-Cookie", c);
}

static void iso(int64_t ms, char *out, size_t n)
{
	iso8601_ms(ms, out, n);
}

void dash_h_login(struct httpd_request *req, struct httpd_response *resp)
{
	struct dashauth *auth = producer_dashauth(req->app);
	security_headers(resp);
	httpd_add_header(resp, "Cache-Control", "no-store");
	if (!same_origin(req)) {
		httpd_error(resp, 403, "csrf_failed", "Origin does not match the host");
		return;
	}
	const char *ct = httpd_header(req, "Content-Type");
	if (!ct || strncasecmp(ct, "application/json", 16)) {
		httpd_error(resp, 415, "unsupported_media_type", "the body must be application/json");
		return;
	}
	cJSON *body = cJSON_ParseWithLength(req->body, req->body_len);
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(body, "token");
	if (!cJSON_IsString(t) || !t->valuestring[0] || strlen(t->valuestring) > MAX_TOKEN_LEN) {
		cJSON_Delete(body);
		httpd_error(resp, 400, "bad_request", "token must be a non-empty string");
		return;
	}
	char addr[64];
	httpd_client_addr(req, addr, sizeof addr);
	char cookie[DASHAUTH_COOKIE_LEN], csrf[DASHAUTH_CSRF_LEN];
	int64_t expires = 0, retry = 0;
	int rc = dashauth_login(auth, addr, t->valuestring, strlen(t->valuestring), wall_ms(), cookie,
				csrf, &expires, &retry);
	cJSON_Delete(body);
	if (rc == DASHAUTH_LIMITED) {
		char ra[32];
		snprintf(ra, sizeof ra, "%" PRId64, (retry + 999) / 1000);
		httpd_add_header(resp, "Retry-After", ra);
		LOGF(LOG_WARN, "dashboard_login_limited", "too many wrong dashboard logins", LF_S("client", addr));
		httpd_error(resp, 429, "too_many_attempts",
			    "too many wrong tokens from this address; try again in %s s", ra);
		return;
	}
	if (rc != DASHAUTH_OK) {
		LOGF(LOG_WARN, "dashboard_login_failed", "wrong token on the dashboard login", LF_S("client", addr));
		httpd_error(resp, 401, "unauthorized", "wrong token");
		return;
	}
	const struct config *cfg = producer_config(req->app);
	set_cookie(req, resp, cookie, cfg->dashboard_session_ttl_ms / 1000);
	LOGF(LOG_INFO, "dashboard_login", "dashboard session opened", LF_S("client", addr));
	char exp[40];
	iso(expires, exp, sizeof exp);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "csrf", csrf);
	cJSON_AddStringToObject(o, "expiresAt", exp);
	httpd_json(resp, 200, o);
}

void dash_h_logout(struct httpd_request *req, struct httpd_response *resp)
{
	security_headers(resp);
	httpd_add_header(resp, "Cache-Control", "no-store");
	if (!same_origin(req)) {
		httpd_error(resp, 403, "csrf_failed", "Origin does not match the host");
		return;
	}
	dashauth_revoke(producer_dashauth(req->app), httpd_header(req, "Cookie"), wall_ms());
	set_cookie(req, resp, "", 0);
	httpd_json_str(resp, 200, "{\"status\":\"logged_out\"}");
}

void dash_h_session(struct httpd_request *req, struct httpd_response *resp)
{
	security_headers(resp);
	httpd_add_header(resp, "Cache-Control", "no-store");
	char csrf[DASHAUTH_CSRF_LEN];
	int64_t expires;
	int ok = dashauth_check(producer_dashauth(req->app), httpd_header(req, "Cookie"), wall_ms(),
				csrf, &expires) == 0;
	cJSON *o = cJSON_CreateObject();
	cJSON_AddBoolToObject(o, "authenticated", ok);
	cJSON_AddStringToObject(o, "lang", pick_lang(httpd_header(req, "Accept-Language")));
	if (ok) {
		char exp[40];
		iso(expires, exp, sizeof exp);
		cJSON_AddStringToObject(o, "csrf", csrf);
		cJSON_AddStringToObject(o, "expiresAt", exp);
	}
	httpd_json(resp, 200, o);
}

int dash_alt_auth(const struct httpd_request *req, const char **code, const char **msg)
{
	char csrf[DASHAUTH_CSRF_LEN];
	if (dashauth_check(producer_dashauth(req->app), httpd_header(req, "Cookie"), wall_ms(), csrf,
			   NULL)) {
		*code = "unauthorized";
		*msg = "missing bearer token or session";
		return 401;
	}
	if (!strcmp(req->method, "GET") || !strcmp(req->method, "HEAD"))
		return 0;
	if (!same_origin(req)) {
		*code = "csrf_failed";
		*msg = "Origin does not match the host";
		return 403;
	}
	const char *h = httpd_header(req, "X-CSRF-Token");
	if (!h || !ct_equal(h, strlen(h), csrf, strlen(csrf))) {
		*code = "csrf_failed";
		*msg = "missing or wrong X-CSRF-Token";
		return 403;
	}
	return 0;
}
