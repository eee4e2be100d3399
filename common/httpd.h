/* httpd.h -- a small HTTP server on libmicrohttpd: a route table, bounded
 * request bodies, JSON answers, Bearer auth.
 *
 * The caller describes its API as a table of routes:
 *
 *   static const struct httpd_route routes[] = {
 *       { "GET",  "/api/health",                        h_health, 0 },
 *       { "POST", "/api/integrations/jobs/{job}/run",   h_run,    HTTPD_AUTH },
 *   };
 *   struct httpd_options opt;
 *   httpd_options_init(&opt);
 *   opt.port = cfg->port;
 *   opt.api_token = cfg->api_token;
 *   opt.max_body_bytes = (size_t)cfg->http_max_body_bytes;
 *   opt.max_connections = (unsigned)cfg->http_max_connections;
 *   opt.conn_timeout_ms = cfg->http_timeout_ms;
 *   char err[256];
 *   struct httpd *srv;
 *   if (httpd_start(&opt, routes, JR_ARRAY_LEN(routes), app, &srv, err, sizeof err) < 0)
 *       ... log err, exit ...
 *   ...
 *   httpd_stop(srv);
 *
 * A handler reads the request and answers with one helper:
 *
 *   static void h_run(struct httpd_request *req, struct httpd_response *resp)
 *   {
 *       struct producer *p = req->app;
 *       const char *job = httpd_param(req, "job");
 *       cJSON *body = cJSON_ParseWithLength(req->body, req->body_len);
 *       if (req->body_len && !body) {
 *           httpd_error(resp, 400, "bad_request", "body is not JSON");
 *           return;
 *       }
 *       ...
 *       httpd_json(resp, 202, answer);          // takes answer over
 *   }
 *   static void h_metrics(struct httpd_request *req, struct httpd_response *resp)
 *   {
 *       struct strbuf sb = STRBUF_INIT;
 *       metrics_render(metrics_default(), &sb);
 *       size_t len = sb.len;
 *       httpd_body(resp, 200, METRICS_CONTENT_TYPE, sb_detach(&sb), len);
 *   }
 *
 * httpd answers these itself, before a handler runs and before any body is
 * read, always as {"error":{"code":"…","message":"…"}}:
 *   404 not_found           no route has this path
 *   405 method_not_allowed  a route has this path but not this method
 *                           (with an Allow header)
 *   401 unauthorized        HTTPD_AUTH route and the Authorization header is
 *                           not "Bearer <api_token>"; always when no token is
 *                           configured (NULL or ""); without an Authorization
 *                           header, opt.alt_auth (when set) may accept the
 *                           request instead (the dashboard's session cookie)
 *   403 (alt_auth's code)   alt_auth refused a credential it recognised
 *                           (e.g. a session cookie without its CSRF token)
 *   413 payload_too_large   Content-Length over max_body_bytes (answered at
 *                           once), or a chunked body that grows past it
 *   400 bad_request         Content-Length twice, Content-Length with
 *                           Transfer-Encoding, or a coding other than
 *                           "chunked" (answered before the body is read,
 *                           and the connection is closed); a body on GET
 *                           or HEAD
 *   503 unavailable         max_connections are open (liveness routes
 *                           still answer 200, see HTTPD_LIVENESS)
 *   500 internal            the handler set no status
 * HEAD is served by GET routes (libmicrohttpd drops the body).
 *
 * THREADS: handlers run on libmicrohttpd's pool threads, several at once
 * (opt.threads).  A handler and everything it touches through req->app must
 * be thread-safe.  The request and everything reachable from it are valid
 * only during the handler call.
 *
 * The module does not log errors; httpd_start() returns them.  With the log
 * level at debug it writes one "http_request" line per request (method,
 * path without the query string, status, duration): never headers, never
 * the query string, never the token.
 */
#ifndef JOBRUNNER_COMMON_HTTPD_H
#define JOBRUNNER_COMMON_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "util.h"

struct httpd;                   /* a running server; opaque */
struct httpd_request;
struct httpd_response;

/* ---- route table ---- */

enum httpd_route_flags {
	HTTPD_AUTH = 1 << 0,    /* requires Authorization: Bearer <api_token> */
	HTTPD_LIVENESS = 1 << 1,/* GET of this literal path is also answered
	                           200 {"status":"ok"} when the connection
	                           table is full (the handler should say the
	                           same: httpd_ok) */
	HTTPD_NO_BODY = 1 << 2, /* the handler reads no body: one sent is read
	                           and dropped (up to max_body_bytes, 413
	                           past it), never stored */
	HTTPD_INLINE = 1 << 3,  /* with opt.workers: run on the polling thread
				   anyway (quick handlers that never wait on a
				   dependency: liveness, cached health, metrics) */
};

/* A handler fills resp (with the helpers below).  It does not return a code:
 * whatever it wants to say goes into resp.  resp starts as status 0 and no
 * body; a handler that leaves status 0 produces a 500. */
typedef void httpd_handler_fn(struct httpd_request *req, struct httpd_response *resp);

/* One row of the route table.  pattern is an absolute path whose segments
 * are literals or "{name}" (one whole, non-empty segment; at most
 * HTTPD_MAX_PARAMS per route).  Literal segments match exactly; there is no
 * wildcard and no trailing-slash folding ("/api/health/" is a 404).  When
 * several rows match a path and method, the first one wins, so put literal
 * routes ("/jobs/dead") before parameter routes ("/jobs/{job}").
 * The table and its strings must outlive the server (use static tables). */
struct httpd_route {
	const char *method;             /* "GET", "POST", ... (exact, upper case) */
	const char *pattern;
	httpd_handler_fn *handler;
	unsigned flags;                 /* enum httpd_route_flags */
};

#define HTTPD_MAX_PARAMS 4
#define HTTPD_MAX_SEGMENTS 16       /* longer paths are a 404 */

/* ---- server options ---- */

struct httpd_options {
	const char *bind_addr;          /* IPv4 or IPv6 literal; NULL: all IPv4 */
	int port;                       /* 0: the kernel picks one (see httpd_port) */
	const char *api_token;          /* copied; NULL or "": HTTPD_AUTH routes always 401 */
	size_t max_body_bytes;          /* HTTP_MAX_BODY_BYTES; default 1 MiB */
	/* A request that fails (413, 401, 404, 405) while its body is already
	 * on the wire (chunked, or sent without "Expect: 100-continue") has up
	 * to max_body_bytes + this many body bytes read and dropped (never
	 * stored), and is answered when the upload ends; past that the
	 * connection is closed without an answer.  Clients that send
	 * "Expect: 100-continue" (curl does for bodies over 1 MiB) are answered
	 * at once and send nothing.  Default 8 MiB. */
	size_t max_discard_bytes;
	unsigned max_connections;       /* open connections handed to MHD; past
	                                   it a new connection gets 200 for a
	                                   HTTPD_LIVENESS route, else 503, and is
	                                   closed; default 256 */
	unsigned per_ip_max_connections;/* HTTP_MAX_CONNECTIONS_PER_IP; 0: none
	                                   (behind a proxy); default 0 */
	int64_t conn_timeout_ms;        /* idle timeout per connection, rounded up
	                                   to whole seconds; default 30000 */
	size_t conn_memory_bytes;       /* per-connection buffer; bounds the request
	                                   line and headers; default 32 KiB */
	unsigned threads;               /* pool threads; default 4 */
	/* 0 (default): handlers run on the polling threads.  >0: handlers run
	 * on this many worker threads while the connection is suspended, so a
	 * handler that waits on a dependency never stops the polling threads
	 * from accepting and answering the HTTPD_INLINE routes (liveness). */
	unsigned workers;
	/* Optional second credential for HTTPD_AUTH routes, asked only when
	 * the request has no Authorization header (a wrong Bearer token is
	 * always a 401).  Called before the body is read, from a pool thread,
	 * with req->body empty; it may read the method, path and headers.
	 * Returns 0 to accept, or 401/403 with *code and *msg set to static
	 * strings for the error answer.  NULL: Bearer only. */
	int (*alt_auth)(const struct httpd_request *req, const char **code, const char **msg);
};

/* Fills opt with the defaults above. */
void httpd_options_init(struct httpd_options *opt);

/* ---- lifecycle ---- */

/* Starts serving routes[0..nroutes).  app is handed to every handler as
 * req->app.  On success returns 0 and *out (stop it with httpd_stop()).
 * On failure returns a negative code (-errno when the system said why,
 * e.g. -EADDRINUSE; -EINVAL for a bad option or route) and writes a
 * message into err (errlen bytes, may be 0); *out is NULL.  The message
 * never contains the token. */
int httpd_start(const struct httpd_options *opt, const struct httpd_route *routes,
		size_t nroutes, void *app, struct httpd **out, char *err, size_t errlen);

/* The TCP port the server listens on (the chosen one when opt.port was 0). */
int httpd_port(const struct httpd *srv);

/* Stops accepting, waits for the handlers in progress, closes every
 * connection and frees srv.  NULL is a no-op. */
void httpd_stop(struct httpd *srv);

struct httpd_stats {
	uint64_t requests;              /* requests answered (any status) */
	uint64_t rejected_too_large;    /* 413s */
	size_t max_body_seen;           /* the most body bytes ever held for one
	                                   request (never above max_body_bytes) */
};
void httpd_get_stats(const struct httpd *srv, struct httpd_stats *out);

/* ---- inside a handler: the request ---- */

struct httpd_request {
	const char *method;
	const char *path;               /* decoded path, without the query string */
	const char *body;               /* the body, NOT NUL-terminated ("" when empty) */
	size_t body_len;                /* <= max_body_bytes */
	void *app;                      /* the pointer given to httpd_start() */
	/* private to httpd */
	struct httpd_req_priv *priv;
};

/* The value of path parameter "{name}" (decoded), or NULL when the route has
 * no such parameter.  Valid during the handler call. */
const char *httpd_param(const struct httpd_request *req, const char *name);
/* The value of query parameter name ("?limit=10" -> "10"; "?flag" -> ""),
 * or NULL when absent.  Valid during the handler call. */
const char *httpd_query(const struct httpd_request *req, const char *name);
/* The first query parameter whose name is not one of known[0..n), or NULL
 * when all are known (for a 400 naming an unknown filter). */
const char *httpd_query_unknown(const struct httpd_request *req, const char *const *known, size_t n);
/* The value of request header name (case-insensitive), or NULL. */
const char *httpd_header(const struct httpd_request *req, const char *name);
/* The client's address as text ("127.0.0.1", "::1") into out; "" when
 * unknown.  The TCP peer: behind a proxy, the proxy's address. */
void httpd_client_addr(const struct httpd_request *req, char *out, size_t outlen);

/* ---- inside a handler: the response ---- */

#define HTTPD_JSON "application/json"

/* Sets status and a JSON body from json, which the call takes over: it is
 * freed with cJSON_Delete() here, whatever happens (json may be NULL: empty
 * object body "{}").  Replaces any earlier body. */
void httpd_json(struct httpd_response *resp, int status, cJSON *json);

/* Sets status and a JSON body copied from the NUL-terminated string json. */
void httpd_json_str(struct httpd_response *resp, int status, const char *json);

/* Sets status and the body {"error":{"code":code,"message":<fmt...>}} with
 * both strings JSON-escaped.  code is a short snake_case word
 * ("bad_request", "not_found").  Replaces any earlier body. */
void httpd_error(struct httpd_response *resp, int status, const char *code,
		 const char *fmt, ...) JR_PRINTF(4, 5);

/* Sets status and a body of any type.  body (len bytes, allocated with
 * malloc, e.g. from sb_detach()) is taken over and freed with free() by
 * httpd.  content_type is copied ("text/plain; version=0.0.4" for
 * Prometheus).  Replaces any earlier body. */
void httpd_body(struct httpd_response *resp, int status, const char *content_type,
		char *body, size_t len);

/* Adds a response header (name and value copied; at most 8 per response,
 * extra ones are dropped).  Content-Type is set by the helpers above. */
void httpd_add_header(struct httpd_response *resp, const char *name, const char *value);

/* ---- health answers, shared by the producer and the consumer ---- */

/* A handler answering 200 {"status":"ok"} (liveness). */
void httpd_ok(struct httpd_request *req, struct httpd_response *resp);
/* One dependency check of a readiness answer: {"ok","latencyMs","error"?}
 * (error only when !ok).  The caller owns the object (cJSON_Delete, or
 * hands it to a parent). */
cJSON *httpd_check(int ok, int64_t latency_ms, const char *error);

/* httpd_check() for a public answer: unless req carries the API token, the
 * error is replaced by its category (httpd_error_category()), as a
 * server's error text names hosts, addresses, ports, databases and users. */
cJSON *httpd_check_for(const struct httpd_request *req, const char *what, int ok,
		       int64_t latency_ms, const char *error);

/* "<what> unreachable: <category>" from a libpq or hiredis error text:
 * connection refused, timeout, name not resolved, authentication failed,
 * permission denied, too many connections, TLS error, not found, starting
 * or stopping, network unreachable, connection lost, error.  Never any of
 * the text itself. */
void httpd_error_category(const char *what, const char *error, char *out, size_t outlen);

/* 1 when req carries "Authorization: Bearer <api_token>" (or passes
 * opt.alt_auth, the dashboard's session). */
int httpd_authenticated(const struct httpd_request *req);

#endif
