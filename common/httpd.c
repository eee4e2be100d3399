/* httpd.c -- route table, bounded bodies and JSON answers on libmicrohttpd.
 *
 * Accepting.  The listening socket is ours: accept_main() accepts every
 * connection and hands it to MHD (MHD_add_connection) while fewer than
 * max_connections are open and its address holds fewer than
 * per_ip_max_connections (counted here: MHD's own per-address limit does
 * not apply to handed-over connections).  Otherwise the connection is
 * "overflow": the same thread polls it for at most 200 ms for its request
 * line, answers a HTTPD_LIVENESS route 200 and anything else 503, and
 * closes it -- so a full table never fails the liveness probe.
 *
 * How a request flows.  libmicrohttpd (MHD) calls access_cb() several times
 * per request, with the per-request state in *con_cls:
 *
 *   1. headers received (*con_cls == NULL): framing first -- two
 *      Content-Length headers, Content-Length with Transfer-Encoding, or a
 *      coding other than "chunked" alone are answered 400 at once with
 *      "Connection: close" (request smuggling).  Then match the route,
 *      check the method, the token and the declared Content-Length (a body
 *      on GET or HEAD is a 400).  The state is created here; no buffer is
 *      reserved for the declared length.  The first failure found (in the
 *      order 404, 405, 401, 413) is answered at once when no body follows, or when the client
 *      waits for "100 Continue" (MHD then sends no 100, reads nothing more
 *      and closes the connection after the answer), or when the declared
 *      body is beyond what we would drop.  Otherwise the failure is
 *      remembered and the body is dropped as it arrives (step 2): a client
 *      that is already pushing its body would otherwise see a connection
 *      reset (we close with unread data) instead of the answer.
 *   2. body bytes (*upload_data_size > 0): appended to the state's buffer,
 *      which grows (doubling from 4 KiB) as bytes arrive and never beyond
 *      max_body_bytes.  The first byte past the
 *      limit frees the buffer and turns the request into a 413; MHD cannot
 *      queue an answer while body bytes are being handed over (see
 *      MHD_AccessHandlerCallback), so the rest is read and dropped, up to
 *      max_discard_bytes, past which we return MHD_NO and MHD closes the
 *      connection.  A request that failed in step 1 drops its body under
 *      the same budget.  Every chunk is consumed (*upload_data_size = 0).
 *   3. request complete (*upload_data_size == 0 again): answer the
 *      remembered failure, or call the handler and queue its response.
 *   4. MHD_OPTION_NOTIFY_COMPLETED: request_done() frees the state and, at
 *      debug level, logs one access line.
 *
 * Invariants: no request ever holds more than max_body_bytes of body; no
 * handler runs for a request that failed routing, auth or size; every
 * answer httpd makes itself is {"error":{"code","message"}} JSON; the token
 * lives only in struct httpd (wiped on stop) and is never written anywhere.
 *
 * Threads: MHD's internal polling thread pool with epoll (opt.threads
 * threads).  Each connection is served by one pool thread, so the
 * per-request state needs no lock; struct httpd is read-only after start
 * except for the statistics, which are atomics.  With opt.workers > 0 a
 * complete request whose route is not HTTPD_INLINE is suspended
 * (MHD_suspend_connection), queued to a worker thread that runs the
 * handler, and resumed with its answer: MHD calls access_cb() once more
 * and step 3 queues the stored answer.  The polling threads then never
 * wait for a handler, so liveness answers while every handler is stuck on
 * a stalled dependency.
 *
 * Rejected alternatives: MHD's listening socket and its
 * MHD_OPTION_PER_IP_CONNECTION_LIMIT (a full table closes every new
 * connection, liveness probes included); MHD's POST processor (form parsing we do not need,
 * with security fixes after 0.9.75); a thread per connection (unbounded
 * threads under load, where a pool with MHD_OPTION_CONNECTION_LIMIT keeps
 * the process size fixed); answering 413 by closing the connection at once
 * (the client would see a reset, not the JSON error the API promises).
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "log.h"
#include "util.h"

#define HTTPD_MAX_HEADERS 8

/* ------------------------------------------------------------------ */
/* types                                                               */
/* ------------------------------------------------------------------ */

/* A route pattern split into segments; a segment is a literal or, when
 * is_param, the name of a parameter. */
struct seg {
	char *text;
	int is_param;
};

struct croute {
	const struct httpd_route *row;
	struct seg segs[HTTPD_MAX_SEGMENTS];
	size_t nsegs;
};

struct httpd_req_priv;

struct httpd {
	struct MHD_Daemon *daemon;
	/* handler workers (opt.workers) */
	pthread_mutex_t wmu;
	pthread_cond_t wcv;
	struct httpd_req_priv *whead, *wtail;
	pthread_t *wtids;
	unsigned nworkers;
	int wstop;
	int wmu_init;
	struct croute *routes;
	size_t nroutes;
	void *app;
	char *token;                    /* NULL: auth routes always 401 */
	int (*alt_auth)(const struct httpd_request *, const char **, const char **);
	size_t token_len;
	size_t max_body;
	size_t drop_budget;             /* body bytes a failed request may send:
	                                   max_body + max_discard, saturated */
	int port;
	int lfd;                        /* our listening socket (-1: none) */
	int stop_pipe[2];               /* wakes the accept thread at stop */
	pthread_t acceptor;
	int acceptor_started;
	unsigned max_conns;             /* handed to MHD below this many open */
	_Atomic unsigned n_open;        /* connections MHD holds */
	_Atomic uint64_t n_overflow;    /* connections answered by ovf_finish() */
	unsigned per_ip;                /* open connections per address; 0: any */
	int ip_mu_init;
	pthread_mutex_t ip_mu;
	struct ipslot *iptab;           /* IPTAB_SLOTS, when per_ip */
	_Atomic uint64_t n_requests;
	_Atomic uint64_t n_too_large;
	_Atomic size_t max_body_seen;
};

struct httpd_response {
	int status;
	char *body;                     /* malloc'd, len bytes */
	size_t len;
	char *ctype;
	size_t nheaders;
	char *hname[HTTPD_MAX_HEADERS];
	char *hvalue[HTTPD_MAX_HEADERS];
};

/* Per-request state (*con_cls). */
struct httpd_req_priv {
	struct httpd *srv;
	struct MHD_Connection *conn;
	const struct croute *route;
	char *path;                     /* copy of the decoded path */
	char *segbuf;                   /* another copy, cut into segments */
	const char *pvalue[HTTPD_MAX_PARAMS];
	const char *pname[HTTPD_MAX_PARAMS];
	size_t nparams;
	char *body;
	size_t len, cap;
	size_t dropped;                 /* body bytes read and thrown away */
	int fail_status;                /* != 0: answer this error, drop the body */
	const char *fail_code;
	const char *fail_msg;
	char *allow;                    /* Allow header value of a 405 */
	int status;                     /* the status queued, for the access log */
	int close;                      /* answer with Connection: close */
	char method[16];                /* for the access log */
	int64_t start_ms;
	/* handed to a worker (opt.workers) */
	struct httpd_req_priv *wnext;
	struct httpd_response *answer;  /* set by the worker before resuming */
	int suspended;
};

/* ------------------------------------------------------------------ */
/* responses                                                           */
/* ------------------------------------------------------------------ */

static void resp_clear_body(struct httpd_response *r)
{
	free(r->body);
	free(r->ctype);
	r->body = NULL;
	r->ctype = NULL;
	r->len = 0;
}

static void resp_release(struct httpd_response *r)
{
	resp_clear_body(r);
	for (size_t i = 0; i < r->nheaders; i++) {
		free(r->hname[i]);
		free(r->hvalue[i]);
	}
	r->nheaders = 0;
}

void httpd_body(struct httpd_response *resp, int status, const char *content_type,
		char *body, size_t len)
{
	resp_clear_body(resp);
	resp->status = status;
	resp->body = body;
	resp->len = body ? len : 0;
	resp->ctype = xstrdup(content_type ? content_type : "application/octet-stream");
}

void httpd_json_str(struct httpd_response *resp, int status, const char *json)
{
	httpd_body(resp, status, HTTPD_JSON, xstrdup(json), strlen(json));
}

void httpd_json(struct httpd_response *resp, int status, cJSON *json)
{
	char *text = json ? cJSON_PrintUnformatted(json) : NULL;
	cJSON_Delete(json);
	if (json && !text) {
		/* cJSON ran out of memory: the x* policy is to abort. */
		fprintf(stderr, "jobrunner: out of memory printing JSON\n");
		abort();
	}
	httpd_json_str(resp, status, text ? text : "{}");
	cJSON_free(text);
}

static void error_body(struct httpd_response *resp, int status, const char *code,
		       const char *msg)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *e = cJSON_AddObjectToObject(o, "error");
	cJSON_AddStringToObject(e, "code", code);
	cJSON_AddStringToObject(e, "message", msg);
	httpd_json(resp, status, o);
}

void httpd_error(struct httpd_response *resp, int status, const char *code,
		 const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = NULL;
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	error_body(resp, status, code, msg ? msg : "");
	free(msg);
}

void httpd_add_header(struct httpd_response *resp, const char *name, const char *value)
{
	if (resp->nheaders >= HTTPD_MAX_HEADERS || !name || !value)
		return;
	resp->hname[resp->nheaders] = xstrdup(name);
	resp->hvalue[resp->nheaders] = xstrdup(value);
	resp->nheaders++;
}

/* Hands r to MHD and releases it.  Returns MHD's verdict. */
static enum MHD_Result queue_resp(struct httpd_req_priv *st, struct httpd_response *r)
{
	if (r->status < 100 || r->status > 599)
		error_body(r, 500, "internal", "the handler produced no answer");
	struct MHD_Response *mr;
	if (r->body) {
		mr = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
		if (mr)
			r->body = NULL;         /* MHD frees it with free() */
	} else {
		mr = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	}
	if (!mr) {
		resp_release(r);
		return MHD_NO;
	}
	if (r->ctype)
		MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
	for (size_t i = 0; i < r->nheaders; i++)
		MHD_add_response_header(mr, r->hname[i], r->hvalue[i]);
	enum MHD_Result ret = MHD_queue_response(st->conn, (unsigned)r->status, mr);
	MHD_destroy_response(mr);
	st->status = r->status;
	atomic_fetch_add_explicit(&st->srv->n_requests, 1, memory_order_relaxed);
	if (r->status == 413)
		atomic_fetch_add_explicit(&st->srv->n_too_large, 1, memory_order_relaxed);
	resp_release(r);
	return ret;
}

/* Answers the failure remembered in st. */
static enum MHD_Result queue_fail(struct httpd_req_priv *st)
{
	struct httpd_response r = { 0 };
	error_body(&r, st->fail_status, st->fail_code, st->fail_msg);
	if (st->fail_status == 401)
		httpd_add_header(&r, "WWW-Authenticate", "Bearer");
	if (st->fail_status == 405 && st->allow)
		httpd_add_header(&r, "Allow", st->allow);
	if (st->close)
		httpd_add_header(&r, MHD_HTTP_HEADER_CONNECTION, "close");
	return queue_resp(st, &r);
}

/* ------------------------------------------------------------------ */
/* routing                                                             */
/* ------------------------------------------------------------------ */

static void croute_free(struct croute *cr)
{
	for (size_t i = 0; i < cr->nsegs; i++)
		free(cr->segs[i].text);
	cr->nsegs = 0;
}

/* Splits a route pattern; -1 when it is not "/seg/{param}/...". */
static int croute_compile(struct croute *cr, const struct httpd_route *row)
{
	cr->row = row;
	cr->nsegs = 0;
	const char *p = row->pattern;
	if (!p || p[0] != '/' || !row->method || !row->handler)
		return -1;
	p++;
	if (*p == '\0')
		return 0;               /* "/" */
	size_t nparams = 0;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 0 || cr->nsegs == HTTPD_MAX_SEGMENTS)
			goto bad;
		struct seg *s = &cr->segs[cr->nsegs];
		if (p[0] == '{') {
			if (n < 3 || p[n - 1] != '}' || memchr(p + 1, '{', n - 2) ||
			    memchr(p + 1, '}', n - 2) || nparams == HTTPD_MAX_PARAMS)
				goto bad;
			s->text = xstrndup(p + 1, n - 2);
			s->is_param = 1;
			nparams++;
		} else {
			if (memchr(p, '{', n) || memchr(p, '}', n))
				goto bad;
			s->text = xstrndup(p, n);
			s->is_param = 0;
		}
		cr->nsegs++;
		if (!slash)
			return 0;
		p = slash + 1;
	}
bad:
	croute_free(cr);
	return -1;
}

/* Cuts path (a writable copy) into segments; -1 when there are too many. */
static int split_path(char *path, char **segs, size_t *nsegs)
{
	*nsegs = 0;
	if (path[0] != '/')
		return -1;
	char *p = path + 1;
	if (*p == '\0')
		return 0;
	for (;;) {
		if (*nsegs == HTTPD_MAX_SEGMENTS)
			return -1;
		segs[(*nsegs)++] = p;
		char *slash = strchr(p, '/');
		if (!slash)
			return 0;
		*slash = '\0';
		p = slash + 1;
	}
}

static int croute_match(const struct croute *cr, char **segs, size_t nsegs)
{
	if (cr->nsegs != nsegs)
		return 0;
	for (size_t i = 0; i < nsegs; i++) {
		if (cr->segs[i].is_param ? segs[i][0] == '\0'
					 : strcmp(cr->segs[i].text, segs[i]) != 0)
			return 0;
	}
	return 1;
}

static int method_matches(const char *route_method, const char *method)
{
	if (strcmp(route_method, method) == 0)
		return 1;
	return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

/* Sets st->fail_* and returns the failing status, or 0. */
static int set_fail(struct httpd_req_priv *st, int status, const char *code, const char *msg)
{
	st->fail_status = status;
	st->fail_code = code;
	st->fail_msg = msg;
	return status;
}

/* Bearer check in constant time against the configured token. */
static int check_auth(struct httpd_req_priv *st)
{
	const struct httpd *srv = st->srv;
	if (!srv->token)
		return set_fail(st, 401, "unauthorized", "API token is not configured");
	const char *h = MHD_lookup_connection_value(st->conn, MHD_HEADER_KIND,
						    MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h && srv->alt_auth) {
		struct httpd_request req = { .method = st->method, .path = st->path, .body = "",
					     .app = srv->app, .priv = st };
		const char *code = "unauthorized", *msg = "missing bearer token or session";
		int rc = srv->alt_auth(&req, &code, &msg);
		return rc ? set_fail(st, rc == 403 ? 403 : 401, code, msg) : 0;
	}
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return set_fail(st, 401, "unauthorized", "missing bearer token");
	h += 7;
	while (*h == ' ')
		h++;
	if (!ct_equal(h, strlen(h), srv->token, srv->token_len))
		return set_fail(st, 401, "unauthorized", "invalid bearer token");
	return 0;
}

/* Finds the route for st's method and path.  On failure sets st->fail_*
 * (404, or 405 with st->allow). */
static int route_request(struct httpd_req_priv *st, const char *method)
{
	char *segs[HTTPD_MAX_SEGMENTS];
	size_t nsegs;
	st->segbuf = xstrdup(st->path);
	if (split_path(st->segbuf, segs, &nsegs) < 0)
		return set_fail(st, 404, "not_found", "no such path");
	struct strbuf allow = STRBUF_INIT;
	int path_found = 0;
	for (size_t i = 0; i < st->srv->nroutes; i++) {
		const struct croute *cr = &st->srv->routes[i];
		if (!croute_match(cr, segs, nsegs))
			continue;
		path_found = 1;
		if (!method_matches(cr->row->method, method)) {
			if (!strstr(allow.buf ? allow.buf : "", cr->row->method)) {
				if (allow.len)
					sb_adds(&allow, ", ");
				sb_adds(&allow, cr->row->method);
			}
			continue;
		}
		st->route = cr;
		for (size_t j = 0; j < nsegs; j++) {
			if (!cr->segs[j].is_param)
				continue;
			st->pname[st->nparams] = cr->segs[j].text;
			st->pvalue[st->nparams] = segs[j];
			st->nparams++;
		}
		sb_release(&allow);
		return 0;
	}
	if (path_found) {
		st->allow = sb_detach(&allow);
		return set_fail(st, 405, "method_not_allowed", "method not allowed for this path");
	}
	sb_release(&allow);
	return set_fail(st, 404, "not_found", "no such path");
}

/* ------------------------------------------------------------------ */
/* request state machine                                               */
/* ------------------------------------------------------------------ */

/* The framing headers of a request, counted (MHD keeps every copy). */
struct framing {
	int n_cl, n_te;
	const char *cl, *te;
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
				     const char *value)
{
	(void)kind;
	struct framing *f = cls;
	if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
		f->n_cl++;
		f->cl = value;
	} else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
		f->n_te++;
		f->te = value;
	}
	return MHD_YES;
}

/* "chunked" alone, in any case, with optional spaces around it. */
static int is_chunked(const char *te)
{
	while (*te == ' ' || *te == '\t')
		te++;
	if (strncasecmp(te, "chunked", 7))
		return 0;
	te += 7;
	while (*te == ' ' || *te == '\t')
		te++;
	return *te == '\0';
}

/* Declared body size: 0 none, 1 Content-Length (in *len), 2 chunked; -1
 * for framing a proxy in front could read differently (request smuggling):
 * Content-Length twice, Content-Length with Transfer-Encoding, or a
 * transfer coding other than "chunked" alone. */
static int body_kind(struct MHD_Connection *conn, uint64_t *len)
{
	struct framing f = { 0 };
	MHD_get_connection_values(conn, MHD_HEADER_KIND, count_framing, &f);
	if (f.n_cl > 1 || f.n_te > 1 || (f.n_cl && f.n_te) || (f.te && !is_chunked(f.te)))
		return -1;
	if (f.te)
		return 2;
	if (!f.cl)
		return 0;
	/* MHD has already rejected a malformed Content-Length with a 400. */
	int64_t v;
	if (parse_i64(f.cl, 0, INT64_MAX, &v) < 0) {
		*len = UINT64_MAX;
		return 1;
	}
	*len = (uint64_t)v;
	return v > 0 ? 1 : 0;
}

static void note_body_size(struct httpd *srv, size_t n)
{
	size_t cur = atomic_load_explicit(&srv->max_body_seen, memory_order_relaxed);
	while (n > cur && !atomic_compare_exchange_weak_explicit(
				  &srv->max_body_seen, &cur, n, memory_order_relaxed,
				  memory_order_relaxed))
		;
}

/* First call: route, auth, declared size.  Returns MHD's verdict. */
static enum MHD_Result on_headers(struct httpd *srv, struct MHD_Connection *conn,
				  const char *url, const char *method, void **con_cls)
{
	struct httpd_req_priv *st = xcalloc(1, sizeof *st);
	st->srv = srv;
	st->conn = conn;
	st->start_ms = mono_ms();
	st->path = xstrdup(url);
	snprintf(st->method, sizeof st->method, "%s", method);
	*con_cls = st;

	uint64_t declared = 0;
	int kind = body_kind(conn, &declared);
	if (kind < 0) {
		/* answered before any body byte is read, and the connection is
		 * closed: what follows on it cannot be trusted to be a request */
		set_fail(st, 400, "bad_request",
			 "conflicting Content-Length / Transfer-Encoding, or an unsupported transfer coding");
		st->close = 1;
		return queue_fail(st);
	}
	if (route_request(st, method) == 0 && (st->route->row->flags & HTTPD_AUTH))
		check_auth(st);
	int too_big = kind == 1 && declared > srv->max_body;
	if (!st->fail_status && too_big)
		set_fail(st, 413, "payload_too_large", "request body is too large");
	if (!st->fail_status && kind && (!strcmp(method, "GET") || !strcmp(method, "HEAD")))
		set_fail(st, 400, "bad_request", "this route takes no request body");
	if (!st->fail_status)
		return MHD_YES;   /* the buffer grows as bytes arrive (on_body) */
	/* Answer now when no body follows, when the client waits for "100
	 * Continue" before sending it, or when it is more than we would drop;
	 * else drop the body and answer after it (see the top of the file). */
	const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
							 MHD_HTTP_HEADER_EXPECT);
	if (kind == 0 || (expect && strcasestr(expect, "100-continue")) ||
	    (kind == 1 && declared > srv->drop_budget))
		return queue_fail(st);
	return MHD_YES;
}

/* A chunk of body: store it within the limit, or drop it. */
static enum MHD_Result on_body(struct httpd_req_priv *st, const char *data, size_t n)
{
	struct httpd *srv = st->srv;
	if (!st->fail_status && (st->route->row->flags & HTTPD_NO_BODY)) {
		st->dropped += n;   /* not stored: the handler reads none */
		if (st->dropped > srv->max_body)
			set_fail(st, 413, "payload_too_large", "request body is too large");
		return MHD_YES;
	}
	if (!st->fail_status && n > srv->max_body - st->len) {
		free(st->body);
		st->body = NULL;
		st->len = st->cap = 0;
		set_fail(st, 413, "payload_too_large", "request body is too large");
	}
	if (st->fail_status) {
		st->dropped += n;
		/* MHD_NO closes the connection: a client that keeps sending
		 * after it was told no is not read any further. */
		return st->dropped > srv->drop_budget ? MHD_NO : MHD_YES;
	}
	if (st->len + n > st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 4096;
		if (cap < st->len + n)
			cap = st->len + n;
		if (cap > srv->max_body)
			cap = srv->max_body;
		st->body = xrealloc(st->body, cap);
		st->cap = cap;
	}
	memcpy(st->body + st->len, data, n);
	st->len += n;
	note_body_size(srv, st->len);
	return MHD_YES;
}

/* Runs the handler of st into r. */
static void run_handler(struct httpd_req_priv *st, const char *method, struct httpd_response *r)
{
	struct httpd_request req = {
		.method = method,
		.path = st->path,
		.body = st->body ? st->body : "",
		.body_len = st->len,
		.app = st->srv->app,
		.priv = st,
	};
	st->route->row->handler(&req, r);
}

static void *worker_main(void *arg)
{
	struct httpd *srv = arg;
	pthread_mutex_lock(&srv->wmu);
	for (;;) {
		while (!srv->whead && !srv->wstop)
			pthread_cond_wait(&srv->wcv, &srv->wmu);
		struct httpd_req_priv *st = srv->whead;
		if (!st)
			break;   /* stopping and nothing left */
		srv->whead = st->wnext;
		if (!srv->whead)
			srv->wtail = NULL;
		int stopping = srv->wstop;
		pthread_mutex_unlock(&srv->wmu);
		struct httpd_response *r = xcalloc(1, sizeof *r);
		if (stopping)
			error_body(r, 503, "shutting_down", "the server is shutting down");
		else
			run_handler(st, st->method, r);
		st->answer = r;
		MHD_resume_connection(st->conn);
		pthread_mutex_lock(&srv->wmu);
	}
	pthread_mutex_unlock(&srv->wmu);
	return NULL;
}

/* Request complete: the remembered failure, or the handler. */
static enum MHD_Result on_complete(struct httpd_req_priv *st, const char *method)
{
	if (st->fail_status)
		return queue_fail(st);
	if (st->answer) {
		/* resumed: the worker's answer */
		struct httpd_response *r = st->answer;
		st->answer = NULL;
		enum MHD_Result ret = queue_resp(st, r);
		free(r);
		return ret;
	}
	struct httpd *srv = st->srv;
	if (srv->nworkers && !(st->route->row->flags & HTTPD_INLINE) && !st->suspended) {
		pthread_mutex_lock(&srv->wmu);
		if (srv->wstop) {
			pthread_mutex_unlock(&srv->wmu);
			struct httpd_response r = { 0 };
			error_body(&r, 503, "shutting_down", "the server is shutting down");
			return queue_resp(st, &r);
		}
		st->suspended = 1;
		MHD_suspend_connection(st->conn);
		st->wnext = NULL;
		if (srv->wtail)
			srv->wtail->wnext = st;
		else
			srv->whead = st;
		srv->wtail = st;
		pthread_cond_signal(&srv->wcv);
		pthread_mutex_unlock(&srv->wmu);
		return MHD_YES;
	}
	struct httpd_request req = {
		.method = method,
		.path = st->path,
		.body = st->body ? st->body : "",
		.body_len = st->len,
		.app = st->srv->app,
		.priv = st,
	};
	struct httpd_response r = { 0 };
	st->route->row->handler(&req, &r);
	return queue_resp(st, &r);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
				 const char *method, const char *version,
				 const char *upload_data, size_t *upload_data_size,
				 void **con_cls)
{
	(void)version;
	struct httpd_req_priv *st = *con_cls;
	if (!st)
		return on_headers(cls, conn, url, method, con_cls);
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		return on_body(st, upload_data, n);
	}
	return on_complete(st, method);
}

static void request_done(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	struct httpd_req_priv *st = *con_cls;
	if (!st)
		return;
	*con_cls = NULL;
	if (log_enabled(LOG_DEBUG))
		LOGF(LOG_DEBUG, "http_request", "request served",
		     LF_S("method", st->method),
		     LF_S("path", st->path),
		     LF_I("status", st->status),
		     LF_I("bodyBytes", st->len),
		     LF_I("durationMs", mono_ms() - st->start_ms),
		     LF_I("complete", toe == MHD_REQUEST_TERMINATED_COMPLETED_OK));
	free(st->body);
	free(st->path);
	free(st->segbuf);
	free(st->allow);
	free(st);
}

/* ------------------------------------------------------------------ */
/* API: request accessors                                              */
/* ------------------------------------------------------------------ */

const char *httpd_param(const struct httpd_request *req, const char *name)
{
	const struct httpd_req_priv *st = req->priv;
	for (size_t i = 0; i < st->nparams; i++) {
		if (strcmp(st->pname[i], name) == 0)
			return st->pvalue[i];
	}
	return NULL;
}

const char *httpd_query(const struct httpd_request *req, const char *name)
{
	const char *v = NULL;
	size_t vlen = 0;
	if (MHD_lookup_connection_value_n(req->priv->conn, MHD_GET_ARGUMENT_KIND, name,
					  strlen(name), &v, &vlen) != MHD_YES)
		return NULL;
	return v ? v : "";
}

struct unknown_scan {
	const char *const *known;
	size_t n;
	const char *first;   /* the first name not in known */
};

static enum MHD_Result scan_query(void *cls, enum MHD_ValueKind kind, const char *key,
				  const char *value)
{
	(void)kind, (void)value;
	struct unknown_scan *u = cls;
	for (size_t i = 0; key && i < u->n; i++)
		if (!strcmp(key, u->known[i]))
			return MHD_YES;
	u->first = key ? key : "";
	return MHD_NO;
}

const char *httpd_query_unknown(const struct httpd_request *req, const char *const *known, size_t n)
{
	struct unknown_scan u = { known, n, NULL };
	MHD_get_connection_values(req->priv->conn, MHD_GET_ARGUMENT_KIND, scan_query, &u);
	return u.first;
}

const char *httpd_header(const struct httpd_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->priv->conn, MHD_HEADER_KIND, name);
}

void httpd_client_addr(const struct httpd_request *req, char *out, size_t outlen)
{
	if (!outlen)
		return;
	out[0] = '\0';
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(req->priv->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	if (!sa)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)outlen);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)outlen);
}

/* ------------------------------------------------------------------ */
/* accepting: the connection table and liveness when it is full        */
/* ------------------------------------------------------------------ */

/* Open connections per client address (the per-address limit), kept here
 * because the accept thread decides before MHD sees a connection. */
#define IPTAB_SLOTS 4096
struct ipslot {
	unsigned char key[17];          /* family byte + address; [0] == 0: empty */
	unsigned count;
};

static size_t addr_key(const struct sockaddr *sa, unsigned char key[17])
{
	memset(key, 0, 17);
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		key[0] = 6;
		memcpy(key + 1, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	} else {
		return 0;
	}
	return 17;
}

/* The slot of key (found or, with create, claimed), or NULL. Under ip_mu. */
static struct ipslot *ip_slot(struct httpd *srv, const unsigned char key[17], int create)
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < 17; i++)
		h = (h ^ key[i]) * 16777619u;
	for (unsigned i = 0; i < IPTAB_SLOTS; i++) {
		struct ipslot *sl = &srv->iptab[(h + i) & (IPTAB_SLOTS - 1)];
		if (sl->key[0] && !memcmp(sl->key, key, 17))
			return sl;
		if (!sl->key[0])
			return create ? memcpy(sl->key, key, 17), sl : NULL;
	}
	return NULL;
}

/* Counts a connection from sa; 0, or -1 when that address is at its limit
 * (or the table is full). */
static int ip_take(struct httpd *srv, const struct sockaddr *sa)
{
	unsigned char key[17];
	if (!srv->per_ip || !addr_key(sa, key))
		return 0;
	pthread_mutex_lock(&srv->ip_mu);
	struct ipslot *sl = ip_slot(srv, key, 1);
	int ok = sl && sl->count < srv->per_ip;
	if (ok)
		sl->count++;
	pthread_mutex_unlock(&srv->ip_mu);
	return ok ? 0 : -1;
}

static void ip_give(struct httpd *srv, const struct sockaddr *sa)
{
	unsigned char key[17];
	if (!srv->per_ip || !sa || !addr_key(sa, key))
		return;
	pthread_mutex_lock(&srv->ip_mu);
	struct ipslot *sl = ip_slot(srv, key, 0);
	if (sl && sl->count && --sl->count == 0) {
		/* removal from an open-addressing table: re-insert the run after it */
		size_t at = (size_t)(sl - srv->iptab);
		memset(sl, 0, sizeof *sl);
		for (size_t j = (at + 1) & (IPTAB_SLOTS - 1); srv->iptab[j].key[0];
		     j = (j + 1) & (IPTAB_SLOTS - 1)) {
			struct ipslot moved = srv->iptab[j];
			memset(&srv->iptab[j], 0, sizeof moved);
			struct ipslot *dst = ip_slot(srv, moved.key, 1);
			dst->count = moved.count;
		}
	}
	pthread_mutex_unlock(&srv->ip_mu);
}

static void conn_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
			enum MHD_ConnectionNotificationCode toe)
{
	(void)socket_context;
	struct httpd *srv = cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		atomic_fetch_add(&srv->n_open, 1);
		return;
	}
	atomic_fetch_sub(&srv->n_open, 1);
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	ip_give(srv, ci ? ci->client_addr : NULL);
}

/* 1 when the request line in buf is "GET|HEAD <a liveness route> HTTP/..". */
static int is_liveness(const struct httpd *srv, const char *buf)
{
	const char *sp = strchr(buf, ' ');
	if (!sp)
		return 0;
	size_t mlen = (size_t)(sp - buf);
	if (!((mlen == 3 && !memcmp(buf, "GET", 3)) || (mlen == 4 && !memcmp(buf, "HEAD", 4))))
		return 0;
	const char *path = sp + 1, *end = strchr(path, ' ');
	if (!end)
		return 0;
	for (size_t i = 0; i < srv->nroutes; i++) {
		const struct httpd_route *row = srv->routes[i].row;
		if ((row->flags & HTTPD_LIVENESS) && strlen(row->pattern) == (size_t)(end - path) &&
		    !memcmp(row->pattern, path, (size_t)(end - path)))
			return 1;
	}
	return 0;
}

/* Connections that find the table full, or their address at its limit:
 * the accept thread reads their request line for at most OVERFLOW_WAIT_MS
 * (polling them with the listening socket, never blocking on one), answers
 * a liveness route 200 and anything else 503, and closes them.  The
 * process is alive even when clients hold every slot, so the
 * orchestrator's probe must not restart it for that.  At most OVERFLOW_MAX
 * wait at once; past that the oldest is closed unanswered. */
#define OVERFLOW_WAIT_MS 200
#define OVERFLOW_MAX 64
struct ovf {
	int fd;
	int64_t deadline;
	size_t n;
	char buf[512];
};

static void ovf_finish(struct httpd *srv, struct ovf *o)
{
	static const char ok[] =
		"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
		"Connection: close\r\n\r\n{\"status\":\"ok\"}";
	static const char busy[] =
		"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
		"Content-Length: 70\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
		"{\"error\":{\"code\":\"unavailable\",\"message\":\"too many open connections\"}}";
	o->buf[o->n] = '\0';
	int live = is_liveness(srv, o->buf);
	const char *a = live ? ok : busy;
	size_t alen = live ? sizeof ok - 1 : sizeof busy - 1;
	if (send(o->fd, a, alen, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* the client is gone, or not reading: nothing more to do */
	}
	atomic_fetch_add(&srv->n_overflow, 1);
	close(o->fd);
	o->fd = -1;
}

/* Reads what o's client sent; 1 when o is done (line complete, closed). */
static int ovf_read(struct ovf *o)
{
	ssize_t r = recv(o->fd, o->buf + o->n, sizeof o->buf - 1 - o->n, MSG_DONTWAIT);
	if (r > 0)
		o->n += (size_t)r;
	return r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR) ||
	       memchr(o->buf, '\n', o->n) != NULL || o->n == sizeof o->buf - 1;
}

static void *accept_main(void *arg)
{
	struct httpd *srv = arg;
	struct ovf *ov = xcalloc(OVERFLOW_MAX, sizeof *ov);
	size_t nov = 0;
	struct pollfd p[2 + OVERFLOW_MAX];
	for (;;) {
		int64_t now = mono_ms(), wait = -1;
		p[0] = (struct pollfd){ srv->lfd, POLLIN, 0 };
		p[1] = (struct pollfd){ srv->stop_pipe[0], POLLIN, 0 };
		for (size_t i = 0; i < nov; i++) {
			p[2 + i] = (struct pollfd){ ov[i].fd, POLLIN, 0 };
			int64_t left = ov[i].deadline - now;
			if (wait < 0 || left < wait)
				wait = left < 0 ? 0 : left;
		}
		if (poll(p, 2 + nov, (int)wait) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		now = mono_ms();
		for (size_t i = 0; i < nov; i++)
			if ((p[2 + i].revents && ovf_read(&ov[i])) || now >= ov[i].deadline)
				ovf_finish(srv, &ov[i]);
		size_t w = 0;
		for (size_t i = 0; i < nov; i++)
			if (ov[i].fd >= 0)
				ov[w++] = ov[i];
		nov = w;
		if (!(p[0].revents & POLLIN))
			continue;
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		int fd = accept4(srv->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				poll(NULL, 0, 10);   /* out of descriptors: let some close */
			continue;
		}
		if (atomic_load(&srv->n_open) < srv->max_conns &&
		    ip_take(srv, (struct sockaddr *)&ss) == 0) {
			if (MHD_add_connection(srv->daemon, fd, (struct sockaddr *)&ss, sl) != MHD_YES)
				ip_give(srv, (struct sockaddr *)&ss);   /* MHD closed fd */
			continue;
		}
		if (nov == OVERFLOW_MAX) {
			close(ov[0].fd);
			memmove(ov, ov + 1, (OVERFLOW_MAX - 1) * sizeof *ov);
			nov--;
		}
		ov[nov].fd = fd;
		ov[nov].n = 0;
		ov[nov].deadline = mono_ms() + OVERFLOW_WAIT_MS;
		nov++;
	}
	for (size_t i = 0; i < nov; i++)
		close(ov[i].fd);
	free(ov);
	return NULL;
}

/* Binds and listens on addr:port; the fd, or -errno. */
static int listen_on(const struct sockaddr_storage *ss, socklen_t sl)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (const struct sockaddr *)ss, sl) < 0 || listen(fd, 256) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* ------------------------------------------------------------------ */
/* API: lifecycle                                                      */
/* ------------------------------------------------------------------ */

void httpd_options_init(struct httpd_options *opt)
{
	memset(opt, 0, sizeof *opt);
	opt->max_body_bytes = 1024 * 1024;
	opt->max_discard_bytes = 8 * 1024 * 1024;
	opt->max_connections = 256;
	opt->per_ip_max_connections = 0;
	opt->conn_timeout_ms = 30000;
	opt->conn_memory_bytes = 32 * 1024;
	opt->threads = 4;
	opt->workers = 0;
}

static void srv_free(struct httpd *srv)
{
	if (!srv)
		return;
	if (srv->acceptor_started) {
		if (write(srv->stop_pipe[1], "x", 1) < 0) {
			/* cannot happen on a fresh pipe; join below waits anyway */
		}
		pthread_join(srv->acceptor, NULL);
	}
	if (srv->stop_pipe[0] >= 0)
		close(srv->stop_pipe[0]);
	if (srv->stop_pipe[1] >= 0)
		close(srv->stop_pipe[1]);
	if (srv->lfd >= 0)
		close(srv->lfd);
	if (srv->daemon)
		MHD_stop_daemon(srv->daemon);
	free(srv->wtids);
	if (srv->wmu_init) {
		pthread_mutex_destroy(&srv->wmu);
		pthread_cond_destroy(&srv->wcv);
	}
	free(srv->iptab);
	if (srv->ip_mu_init)
		pthread_mutex_destroy(&srv->ip_mu);
	for (size_t i = 0; i < srv->nroutes; i++)
		croute_free(&srv->routes[i]);
	free(srv->routes);
	if (srv->token) {
		explicit_bzero(srv->token, srv->token_len);
		free(srv->token);
	}
	free(srv);
}

static int fail_start(struct httpd *srv, int code, char *err, size_t errlen,
		      const char *fmt, ...) JR_PRINTF(5, 6);
static int fail_start(struct httpd *srv, int code, char *err, size_t errlen,
		      const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	srv_free(srv);
	return code;
}

int httpd_start(const struct httpd_options *opt, const struct httpd_route *routes,
		size_t nroutes, void *app, struct httpd **out, char *err, size_t errlen)
{
	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	struct httpd *srv = xcalloc(1, sizeof *srv);
	srv->lfd = srv->stop_pipe[0] = srv->stop_pipe[1] = -1;
	if (opt->port < 0 || opt->port > 65535)
		return fail_start(srv, -EINVAL, err, errlen, "port %d out of range", opt->port);
	if (opt->max_body_bytes == 0 || opt->threads == 0 || opt->threads > 64 ||
	    opt->max_connections < opt->threads || opt->conn_memory_bytes < 1024)
		return fail_start(srv, -EINVAL, err, errlen, "invalid HTTP server limits");

	srv->routes = xcalloc(nroutes ? nroutes : 1, sizeof *srv->routes);
	for (size_t i = 0; i < nroutes; i++) {
		if (croute_compile(&srv->routes[i], &routes[i]) < 0)
			return fail_start(srv, -EINVAL, err, errlen, "route %zu: bad pattern \"%s\"",
					  i, routes[i].pattern ? routes[i].pattern : "(null)");
		srv->nroutes = i + 1;
	}
	srv->app = app;
	if (opt->api_token && opt->api_token[0]) {
		srv->token = xstrdup(opt->api_token);
		srv->token_len = strlen(srv->token);
	}
	srv->alt_auth = opt->alt_auth;
	srv->max_body = opt->max_body_bytes;
	srv->drop_budget = opt->max_body_bytes + opt->max_discard_bytes;
	if (srv->drop_budget < opt->max_body_bytes)
		srv->drop_budget = SIZE_MAX;

	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
	if (opt->workers > 64)
		return fail_start(srv, -EINVAL, err, errlen, "invalid HTTP server limits");
	if (opt->workers)
		flags |= MHD_ALLOW_SUSPEND_RESUME;
	pthread_mutex_init(&srv->wmu, NULL);
	pthread_cond_init(&srv->wcv, NULL);
	srv->wmu_init = 1;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	const char *addr = opt->bind_addr ? opt->bind_addr : "0.0.0.0";
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)opt->port);
	} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)opt->port);
		flags |= MHD_USE_IPv6;
	} else {
		return fail_start(srv, -EINVAL, err, errlen, "bad bind address \"%s\"", addr);
	}
	int64_t timeout_s = opt->conn_timeout_ms > 0 ? (opt->conn_timeout_ms + 999) / 1000 : 0;
	if (timeout_s > 86400)
		timeout_s = 86400;

	socklen_t sl = ss.ss_family == AF_INET6 ? sizeof *sin6 : sizeof *sin;
	srv->lfd = listen_on(&ss, sl);
	if (srv->lfd < 0) {
		int e = -srv->lfd;
		return fail_start(srv, -e, err, errlen, "cannot serve HTTP on %s port %d: %s",
				  addr, opt->port, strerror(e));
	}
	struct sockaddr_storage bound;
	socklen_t bl = sizeof bound;
	if (getsockname(srv->lfd, (struct sockaddr *)&bound, &bl) == 0)
		srv->port = ntohs(bound.ss_family == AF_INET6
					  ? ((struct sockaddr_in6 *)&bound)->sin6_port
					  : ((struct sockaddr_in *)&bound)->sin_port);
	else
		srv->port = opt->port;
	srv->max_conns = opt->max_connections;
	srv->per_ip = opt->per_ip_max_connections;
	pthread_mutex_init(&srv->ip_mu, NULL);
	srv->ip_mu_init = 1;
	if (srv->per_ip)
		srv->iptab = xcalloc(IPTAB_SLOTS, sizeof *srv->iptab);

	/* MHD serves the connections that accept_main() hands it; the margin
	 * keeps its own limit from refusing one that raced with a close */
	errno = 0;
	srv->daemon = MHD_start_daemon(
		(flags & ~(unsigned)MHD_USE_IPv6) | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC, 0, NULL, NULL, access_cb, srv,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)opt->max_connections + 16,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)timeout_s,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)opt->conn_memory_bytes,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned)opt->threads,
		MHD_OPTION_NOTIFY_COMPLETED, request_done, (void *)srv,
		MHD_OPTION_NOTIFY_CONNECTION, conn_notify, (void *)srv,
		MHD_OPTION_END);
	if (!srv->daemon) {
		int e = errno ? errno : EIO;
		return fail_start(srv, -e, err, errlen, "cannot serve HTTP on %s port %d: %s",
				  addr, opt->port, strerror(e));
	}
	if (pipe2(srv->stop_pipe, O_CLOEXEC) < 0 ||
	    pthread_create(&srv->acceptor, NULL, accept_main, srv) != 0) {
		int e = errno ? errno : EAGAIN;
		return fail_start(srv, -e, err, errlen, "cannot start the HTTP accept thread: %s",
				  strerror(e));
	}
	srv->acceptor_started = 1;
	if (opt->workers) {
		srv->wtids = xcalloc(opt->workers, sizeof *srv->wtids);
		for (unsigned i = 0; i < opt->workers; i++) {
			if (pthread_create(&srv->wtids[i], NULL, worker_main, srv))
				break;
			srv->nworkers = i + 1;
		}
		if (!srv->nworkers)
			return fail_start(srv, -EAGAIN, err, errlen, "cannot start HTTP worker threads");
	}
	*out = srv;
	return 0;
}

int httpd_port(const struct httpd *srv)
{
	return srv->port;
}

void httpd_stop(struct httpd *srv)
{
	if (!srv)
		return;
	if (srv->nworkers) {
		/* handlers under way finish; queued ones are answered 503, and so
		 * is whatever completes from now on; every suspended connection
		 * is resumed before the daemon stops (srv_free) */
		pthread_mutex_lock(&srv->wmu);
		srv->wstop = 1;
		pthread_cond_broadcast(&srv->wcv);
		pthread_mutex_unlock(&srv->wmu);
		for (unsigned i = 0; i < srv->nworkers; i++)
			pthread_join(srv->wtids[i], NULL);
	}
	srv_free(srv);
}

void httpd_get_stats(const struct httpd *srv, struct httpd_stats *out)
{
	struct httpd *s = (struct httpd *)srv;  /* atomic loads want non-const */
	out->requests = atomic_load(&s->n_requests);
	out->rejected_too_large = atomic_load(&s->n_too_large);
	out->max_body_seen = atomic_load(&s->max_body_seen);
}

void httpd_ok(struct httpd_request *req, struct httpd_response *resp)
{
	httpd_json_str(resp, 200, "{\"status\":\"ok\"}");
}

int httpd_authenticated(const struct httpd_request *req)
{
	struct httpd_req_priv st = *req->priv;   /* check_auth only sets fail_* */
	st.fail_status = 0;
	return check_auth(&st) == 0;
}

/* Lower-case substring search. */
static int has(const char *s, const char *needle)
{
	return strcasestr(s, needle) != NULL;
}

void httpd_error_category(const char *what, const char *error, char *out, size_t outlen)
{
	const char *e = error ? error : "";
	/* reachable, but not fit for use: said as such, not as unreachable */
	const char *unfit =
		has(e, "replica") ? "connected to a replica, not a writable master" :
		has(e, "cluster") ? "a Redis Cluster node (not supported)" :
		has(e, "cannot use redis") ? "the worker cannot use it (its last claim failed)" : NULL;
	if (unfit) {
		snprintf(out, outlen, "%s: %s", what, unfit);
		return;
	}
	const char *cat =
		has(e, "refused") ? "connection refused" :
		has(e, "timeout") || has(e, "timed out") ? "timeout" :
		has(e, "translate host") || has(e, "name or service") || has(e, "resolv") ||
			has(e, "unknown host") ? "name not resolved" :
		has(e, "password") || has(e, "authenticat") || has(e, "noauth") || has(e, "wrongpass")
			? "authentication failed" :
		has(e, "permission") || has(e, "noperm") ? "permission denied" :
		has(e, "too many") ? "too many connections" :
		has(e, "ssl") || has(e, "tls") || has(e, "certificate") ? "TLS error" :
		has(e, "does not exist") ? "not found" :
		has(e, "starting up") || has(e, "shutting down") || has(e, "recovery") ||
			has(e, "loading") ? "starting or stopping" :
		has(e, "no route") || has(e, "unreachable") ? "network unreachable" :
		has(e, "reset") || has(e, "closed") || has(e, "eof") || has(e, "terminat")
			? "connection lost" : "error";
	snprintf(out, outlen, "%s unreachable: %s", what, cat);
}

cJSON *httpd_check_for(const struct httpd_request *req, const char *what, int ok,
		       int64_t latency_ms, const char *error)
{
	if (ok || httpd_authenticated(req))
		return httpd_check(ok, latency_ms, error);
	char cat[96];
	httpd_error_category(what, error, cat, sizeof cat);
	return httpd_check(ok, latency_ms, cat);
}

cJSON *httpd_check(int ok, int64_t latency_ms, const char *error)
{
	cJSON *c = cJSON_CreateObject();
	cJSON_AddBoolToObject(c, "ok", ok);
	cJSON_AddNumberToObject(c, "latencyMs", (double)latency_ms);
	if (!ok)
		cJSON_AddStringToObject(c, "error", error ? error : "");
	return c;
}
