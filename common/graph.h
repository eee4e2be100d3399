/* graph.h -- the Meta Graph API's format on the HTTP client of http.h.
 *
 * A graph client is a few strings (META_GRAPH_URL, META_APP_SECRET,
 * META_HTTP_TIMEOUT_MS) on top of the calling thread's HTTP client
 * (job_http(ctx), registry.h), which it borrows: the libcurl handle and
 * its connection cache (keep-alive) are reused across requests and runs.
 * The transport's rules are http.h's: connect and total timeouts
 * (META_HTTP_TIMEOUT_MS), http/https only, no redirects, a response body
 * larger than GRAPH_MAX_BODY_BYTES aborted.
 *
 * The access token travels in the "Authorization: Bearer" header, never in
 * a URL that we build; with META_APP_SECRET set, appsecret_proof =
 * hex(HMAC-SHA256(app_secret, access_token)) is added as a query parameter.
 * Meta's paging.next URLs carry the token as a query parameter: they are
 * followed only when their origin (scheme, host, port) is META_GRAPH_URL's,
 * and never logged, stored or quoted in an error.
 *
 * Secrets never reach a message: errors name the method and the path
 * without its query, and every message is scrubbed of the token, the app
 * secret and any parameter flagged secret before it is returned.
 *
 * Error classification (docs/jobs.md, "Graph API errors"), in this order:
 *   Meta error code 190                               -> GRAPH_AUTH (re-auth, no retry)
 *   codes 4, 17, 32, 613, 80000-80014 or HTTP 429     -> GRAPH_THROTTLED (retry after
 *        max estimated_time_to_regain_access of X-Business-Use-Case-Usage, else
 *        Retry-After, else 0 = the queue's backoff)
 *   codes 1, 2, is_transient, HTTP 5xx, timeouts,
 *   connection errors, a truncated 2xx body            -> GRAPH_TRANSIENT (retry with backoff)
 *   anything else                                      -> GRAPH_PERMANENT (Meta's message)
 *
 * Rejected alternative: a client per request (no keep-alive, a TLS
 * handshake per page) and a shared client across threads (curl easy handles
 * are not thread-safe; a share handle would need locks for little gain).
 */
#ifndef JOBRUNNER_COMMON_GRAPH_H
#define JOBRUNNER_COMMON_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "http.h"

struct config;
struct run_result;

#define GRAPH_MAX_BODY_BYTES HTTP_MAX_BODY_BYTES   /* larger responses are aborted */
#define GRAPH_MAX_PAGES 1000              /* paging.next loops are cut here */
#define GRAPH_DEFAULT_TIMEOUT_MS 30000    /* when meta_http_timeout_ms is 0 */
#define GRAPH_MAX_RETRY_AFTER_MS (24LL * 3600 * 1000)

enum graph_kind {
	GRAPH_OK = 0,
	GRAPH_AUTH,         /* code 190: the token is invalid or expired */
	GRAPH_THROTTLED,    /* rate limited: retry after retry_after_ms (0: backoff) */
	GRAPH_TRANSIENT,    /* retry with backoff */
	GRAPH_PERMANENT,    /* do not retry */
};

struct graph_result {
	long http_status;          /* 0 when no HTTP answer came */
	enum graph_kind kind;
	int64_t retry_after_ms;    /* THROTTLED: what Meta asked for, 0 = backoff */
	int code, subcode;         /* Meta's error code/error_subcode, 0 if none */
	char message[400];         /* "" on OK; never contains a token or secret */
	cJSON *body;               /* OK: the parsed JSON answer (last page when paging);
				      owned, released by graph_result_clear() */
};

/* 1 when token can be sent: 1..GRAPH_MAX_TOKEN_LEN bytes of visible ASCII
 * (a CR or LF would inject header lines).  graph_get() checks it and fails
 * with GRAPH_AUTH otherwise, before anything is sent. */
#define GRAPH_MAX_TOKEN_LEN 4096
int graph_token_valid(const char *token);

/* A query parameter (left out when value is NULL); secret values are also
 * scrubbed from messages. */
struct graph_param {
	const char *name;
	const char *value;
	int secret;
};

struct graph_client;

/* Makes a client for cfg's META_GRAPH_URL, META_APP_SECRET and
 * META_HTTP_TIMEOUT_MS (strings are copied) on http, which stays the
 * caller's and must outlive the client.  Never NULL (aborts on OOM).  Free
 * with graph_client_free(); NULL is fine there. */
struct graph_client *graph_client_new(const struct config *cfg, struct http_client *http);
void graph_client_free(struct graph_client *c);

/* GET {META_GRAPH_URL}{path}?params[&appsecret_proof=...].  path starts
 * with '/' and must be URL-safe (the caller validates ids it puts there).
 * access_token may be NULL (no Authorization header, no proof).  Fills res
 * (clear it with graph_result_clear()); returns 0 if res->kind == GRAPH_OK,
 * else -1. */
int graph_get(struct graph_client *c, const char *path, const struct graph_param *params,
	      size_t nparams, const char *access_token, struct graph_result *res);

/* Called with each page's "data" array (never NULL: an empty page gives an
 * empty array).  Return 0 to go on, or -1 with a message in err (no
 * secrets) to stop: graph_get_paged() then returns -1 with kind
 * *err_kind (set by the callback, GRAPH_PERMANENT if left alone). */
typedef int (*graph_page_fn)(const cJSON *data, void *arg, enum graph_kind *err_kind,
			     char *err, size_t errlen);

/* graph_get(), then follows paging.next while present (same origin only,
 * at most GRAPH_MAX_PAGES), calling fn for every page.  Same returns. */
int graph_get_paged(struct graph_client *c, const char *path, const struct graph_param *params,
		    size_t nparams, const char *access_token, graph_page_fn fn, void *arg,
		    struct graph_result *res);

/* Releases res->body and zeroes res. */
void graph_result_clear(struct graph_result *res);

/* Maps a failed result to a run outcome: AUTH and PERMANENT -> RUN_FAIL,
 * THROTTLED and TRANSIENT -> RUN_RETRY (retry_after_ms kept); message copied. */
void graph_to_run_result(const struct graph_result *res, struct run_result *out);

/* ---- pure parts, exposed for the unit tests ---- */

/* Classifies an HTTP answer (status, body of len bytes, the raw values of
 * the X-Business-Use-Case-Usage and Retry-After headers or NULL) into res:
 * kind, code, subcode, retry_after_ms, message and (OK only) body.  what
 * names the request in messages ("GET /v21.0/act_1/insights"). */
void graph_classify(long http_status, const char *body, size_t len, const char *usage_header,
		    const char *retry_after_header, const char *what, struct graph_result *res);

/* The max estimated_time_to_regain_access (minutes) over every entry of an
 * X-Business-Use-Case-Usage value, in ms, capped at GRAPH_MAX_RETRY_AFTER_MS;
 * 0 when absent or unparsable. */
int64_t graph_usage_retry_ms(const char *header);

/* url_redact() (url.h): the password hidden, query string and fragment
 * dropped ("https://graph.facebook.com/v21.0/me?access_token=x" ->
 * "https://graph.facebook.com/v21.0/me").  Truncates to outlen. */
void graph_redact_url(const char *url, char *out, size_t outlen);
/* The path of url without query and fragment ("/v21.0/me"), "/" if none. */
void graph_url_path(const char *url, char *out, size_t outlen);

/* UTC dates "YYYY-MM-DD" of the last `days` days up to now_ms's day:
 * until = today, since = today - (days - 1).  0, or -1 if days < 1. */
int graph_day_range(int64_t now_ms, int64_t days, char since[11], char until[11]);

#endif
