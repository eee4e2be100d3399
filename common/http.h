/* http.h -- the HTTP client jobs use: libcurl, opened on first use.
 *
 * A job that calls an HTTP service gets its worker thread's client with
 * job_http(ctx) (registry.h): one libcurl easy handle per thread, kept for
 * the thread's life, so connections and TLS sessions are reused from run to
 * run.  A client is used by one thread at a time.
 *
 * libcurl is not linked: the first client opens it with dlopen() (only
 * some jobs need it, and with what it pulls in it added 0.8 MiB to the
 * resident size of every process).  When it cannot be loaded, clients are
 * made all the same and every request fails HTTP_PERMANENT with the reason
 * ("cannot load libcurl.so.4: ...").
 *
 * What a request gets for free: connect and total timeouts, http/https
 * only, no redirects followed, a bounded body (HTTP_MAX_BODY_BYTES), the
 * response headers it asks for, and a message without secrets: the caller
 * lists the secrets of the request (tokens, keys) and they are replaced by
 * "[REDACTED]" in every message; the URL never appears in one (the caller
 * names the request with `what`, e.g. "GET /v21.0/me", without its query).
 *
 * Classification, for a run's outcome (http_to_run_result()):
 *   no answer: timeouts, refused, reset, DNS, TLS     -> HTTP_TRANSIENT
 *   no answer: a malformed URL, a protocol that is
 *     not http(s), a body over HTTP_MAX_BODY_BYTES    -> HTTP_PERMANENT
 *   an answer: http_status_kind(status): 2xx -> HTTP_OK; 408, 425, 429
 *     and 5xx -> HTTP_TRANSIENT; any other -> HTTP_PERMANENT
 * An API with its own error format classifies the answer itself (graph.c
 * does, for the Meta Graph API).
 */
#ifndef JOBRUNNER_COMMON_HTTP_H
#define JOBRUNNER_COMMON_HTTP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct run_result;
struct strbuf;

#define HTTP_MAX_BODY_BYTES (4u << 20)    /* larger responses are aborted */
#define HTTP_DEFAULT_TIMEOUT_MS 30000     /* a request's whole time, when it gives 0 */
#define HTTP_CONNECT_TIMEOUT_MAX_MS 10000 /* the connect phase, at most */
#define HTTP_MAX_HEADER_BYTES 8192        /* captured header values are cut here */
#define HTTP_MAX_CAPTURE 4                /* response headers one request may keep */
#define HTTP_MAX_SECRETS 8

enum http_kind {
	HTTP_OK = 0,        /* an answer came (see status) */
	HTTP_TRANSIENT,     /* retry with backoff */
	HTTP_PERMANENT,     /* do not retry */
};

struct http_request {
	const char *method;              /* "GET" (NULL), "POST", ... */
	const char *url;                 /* absolute http(s) URL */
	const char *what;                /* names the request in messages: no query, no secret */
	const char *bearer;              /* Authorization: Bearer <bearer>, or NULL */
	const char *const *headers;      /* more request header lines "Name: value" */
	size_t nheaders;
	const char *body;                /* request body (POST/PUT) or NULL */
	size_t body_len;
	const char *const *capture;      /* response header names to keep (HTTP_MAX_CAPTURE) */
	size_t ncapture;
	const char *const *secrets;      /* replaced by [REDACTED] in messages (HTTP_MAX_SECRETS) */
	size_t nsecrets;
	int64_t timeout_ms;              /* whole request; 0: HTTP_DEFAULT_TIMEOUT_MS */
};

struct http_response {
	enum http_kind kind;     /* HTTP_OK when an answer came, whatever its status */
	long status;             /* 0 when no answer came */
	const char *body;        /* the answer's body ("" if none), NUL-terminated; owned
				    by the client, valid until its next request or
				    http_wipe_body() */
	size_t len;
	const char *captured[HTTP_MAX_CAPTURE];   /* values of request.capture[i], or NULL;
						     owned by the client like body */
	char message[400];       /* failure (no answer): what and why, no secrets */
};

struct http_client;

/* A new client (the first one opens libcurl).  Never NULL (aborts on
 * OOM).  Free with http_client_free(); NULL is fine there. */
struct http_client *http_client_new(void);
void http_client_free(struct http_client *c);
/* While *stop is set, a transfer under way ends (HTTP_TRANSIENT, "stopped
 * (shutdown or cancel)"): job_http() points it at the run's ctx.stop, so a
 * cancelled or shut-down run does not wait for a slow server. */
void http_client_stop_flag(struct http_client *c, atomic_int *stop);

/* Performs one request.  Returns 0 when an answer came (res->kind ==
 * HTTP_OK; look at res->status), else -1 with res->kind and res->message. */
int http_request(struct http_client *c, const struct http_request *rq, struct http_response *res);
/* Zeroes the last answer's body (answers that carry tokens). */
void http_wipe_body(struct http_client *c);

/* The kind of an answer's status (see the classification above). */
enum http_kind http_status_kind(long status);
/* A Retry-After value in delta-seconds as ms (the HTTP-date form is
 * ignored), capped at max_ms; 0 when absent or unparsable. */
int64_t http_retry_after_ms(const char *value, int64_t max_ms);
/* Maps kind to a run outcome (OK -> RUN_OK, TRANSIENT -> RUN_RETRY,
 * PERMANENT -> RUN_FAIL) with message as the run's error. */
void http_to_run_result(enum http_kind kind, const char *message, struct run_result *out);

/* Appends "?name=value" (or "&name=value" once url has a '?') to url, value
 * percent-encoded by curl_easy_escape (all but RFC 3986's unreserved
 * characters).  Nothing is appended when libcurl is missing (the request
 * fails with the reason anyway). */
void http_add_query_param(struct http_client *c, struct strbuf *url, const char *name,
			  const char *value);
/* 1 when a and b are absolute http(s) URLs with the same scheme, host and
 * port (default ports filled in), else 0. */
int http_same_origin(const char *a, const char *b);
/* Replaces every occurrence of each secret in msg (capacity cap) by
 * "[REDACTED]"; NULL and "" secrets are skipped. */
void http_scrub(char *msg, size_t cap, const char *const *secrets, size_t nsecrets);

#endif
