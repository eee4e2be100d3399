/* rconn.c -- see rconn.h.
 *
 * Why a wrapper: hiredis leaves three things to the caller that every
 * user of Redis here needs the same way -- a context with err set must be
 * freed and replaced (never reused), reconnects must back off so an outage
 * costs microseconds per call instead of a connect timeout each, and Lua
 * scripts must survive SCRIPT FLUSH.  The queue transport and the history
 * writer each hold their own rconn (one per thread).
 */
#include "rconn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* ------------------------------------------------------------------ */
/* URL                                                                 */
/* ------------------------------------------------------------------ */

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Percent-decodes s[0..n) into a new string. */
static char *pct_decode(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		int h, l;
		if (s[i] == '%' && i + 2 < n &&
		    (h = hexval((unsigned char)s[i + 1])) >= 0 &&
		    (l = hexval((unsigned char)s[i + 2])) >= 0) {
			out[j++] = (char)(h * 16 + l);
			i += 2;
		} else {
			out[j++] = s[i];
		}
	}
	out[j] = '\0';
	return out;
}

static int parse_url(struct rconn *rc, const char *url, char *err, size_t errlen)
{
	if (!url || strncmp(url, "redis://", 8)) {
		snprintf(err, errlen, "REDIS_URL must start with redis://");
		return -1;
	}
	const char *p = url + 8;
	const char *end = p + strcspn(p, "/?#");
	const char *at = memchr(p, '@', (size_t)(end - p));
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (colon) {
			if (colon > p)
				rc->user = pct_decode(p, (size_t)(colon - p));
			rc->password = pct_decode(colon + 1, (size_t)(at - colon - 1));
		} else if (at > p) {
			rc->password = pct_decode(p, (size_t)(at - p));  /* redis://secret@host */
		}
		p = at + 1;
	}
	const char *hs = p, *he;
	const char *portp = NULL;
	if (*p == '[') {
		hs = p + 1;
		he = memchr(hs, ']', (size_t)(end - hs));
		if (!he) {
			snprintf(err, errlen, "REDIS_URL: unterminated [ in host");
			return -1;
		}
		if (he + 1 < end && he[1] == ':')
			portp = he + 2;
	} else {
		he = memchr(p, ':', (size_t)(end - p));
		if (he)
			portp = he + 1;
		else
			he = end;
	}
	if (he == hs || (size_t)(he - hs) > 255) {
		snprintf(err, errlen, "REDIS_URL: missing or too long host");
		return -1;
	}
	rc->host = xstrndup(hs, (size_t)(he - hs));
	rc->port = 6379;
	if (portp) {
		char buf[16];
		size_t n = (size_t)(end - portp);
		int64_t v;
		if (n == 0 || n >= sizeof buf) {
			snprintf(err, errlen, "REDIS_URL: invalid port");
			return -1;
		}
		memcpy(buf, portp, n);
		buf[n] = '\0';
		if (parse_i64(buf, 1, 65535, &v)) {
			snprintf(err, errlen, "REDIS_URL: invalid port %s", buf);
			return -1;
		}
		rc->port = (int)v;
	}
	rc->db = 0;
	if (*end == '/' && end[1] && end[1] != '?' && end[1] != '#') {
		char buf[16];
		size_t n = strcspn(end + 1, "?#");
		int64_t v;
		if (n >= sizeof buf) {
			snprintf(err, errlen, "REDIS_URL: invalid database number");
			return -1;
		}
		memcpy(buf, end + 1, n);
		buf[n] = '\0';
		if (parse_i64(buf, 0, 100000, &v)) {
			snprintf(err, errlen, "REDIS_URL: invalid database number %s", buf);
			return -1;
		}
		rc->db = (int)v;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* connection                                                          */
/* ------------------------------------------------------------------ */

static void set_err(struct rconn *rc, int code, const char *fmt, ...) JR_PRINTF(3, 4);
static void set_err(struct rconn *rc, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rc->errstr, sizeof rc->errstr, fmt, ap);
	va_end(ap);
	rc->err = code;
}

static _Atomic(void (*)(void)) reconnect_hook;

void rconn_on_reconnect(void (*fn)(void)) { atomic_store_explicit(&reconnect_hook, fn, memory_order_relaxed); }

int rconn_init(struct rconn *rc, const char *url, const struct rscript *scripts, size_t nscripts,
	       char *err, size_t errlen)
{
	memset(rc, 0, sizeof *rc);
	if (nscripts > RCONN_MAX_SCRIPTS) {
		snprintf(err, errlen, "too many scripts");
		return -1;
	}
	rc->scripts = scripts;
	rc->nscripts = nscripts;
	rc->backoff_ms = BACKOFF_MIN_MS;
	if (parse_url(rc, url, err, errlen)) {
		rconn_release(rc);
		return -1;
	}
	return 0;
}

void rconn_release(struct rconn *rc)
{
	if (rc->c)
		redisFree(rc->c);
	free(rc->host);
	free(rc->user);
	if (rc->password) {
		memset(rc->password, 0, strlen(rc->password));
		free(rc->password);
	}
	memset(rc, 0, sizeof *rc);
}

void rconn_drop(struct rconn *rc, const char *why)
{
	if (rc->c) {
		redisFree(rc->c);
		rc->c = NULL;
	}
	rc->next_try_ms = mono_ms();   /* first reconnect may be immediate */
	if (why)
		set_err(rc, RCONN_EDOWN, "redis %s:%d: %s", rc->host, rc->port, why);
}

static void connect_failed(struct rconn *rc)
{
	if (rc->c) {
		redisFree(rc->c);
		rc->c = NULL;
	}
	rc->next_try_ms = mono_ms() + rc->backoff_ms;
	rc->backoff_ms *= 2;
	if (rc->backoff_ms > BACKOFF_MAX_MS)
		rc->backoff_ms = BACKOFF_MAX_MS;
	rc->err = RCONN_EDOWN;
}

static struct timeval tv_ms(int64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
	return tv;
}

int rconn_connect(struct rconn *rc)
{
	if (rc->c)
		return 0;
	if (mono_ms() < rc->next_try_ms) {
		if (!rc->err)
			set_err(rc, RCONN_EDOWN, "redis %s:%d: down, waiting to reconnect", rc->host,
				rc->port);
		rc->err = RCONN_EDOWN;
		return RCONN_EDOWN;
	}
	redisContext *c = redisConnectWithTimeout(rc->host, rc->port, tv_ms(RCONN_CONNECT_TIMEOUT_MS));
	if (!c || c->err) {
		set_err(rc, RCONN_EDOWN, "redis %s:%d: connect: %s", rc->host, rc->port,
			c ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		connect_failed(rc);
		return RCONN_EDOWN;
	}
	rc->c = c;
	if (redisSetTimeout(c, tv_ms(RCONN_CMD_TIMEOUT_MS)) != REDIS_OK ||
	    redisEnableKeepAlive(c) != REDIS_OK) {
		set_err(rc, RCONN_EDOWN, "redis %s:%d: socket options: %s", rc->host, rc->port,
			c->errstr);
		connect_failed(rc);
		return RCONN_EDOWN;
	}
	/* AUTH, SELECT and SCRIPT LOADs in one round trip */
	int nsent = 0;
	int auth_at = -1, select_at = -1;
	if (rc->password) {
		const char *av[3] = { "AUTH", rc->user ? rc->user : rc->password, rc->password };
		auth_at = nsent++;
		redisAppendCommandArgv(c, rc->user ? 3 : 2, av, NULL);
	}
	if (rc->db) {
		char dbs[16];
		snprintf(dbs, sizeof dbs, "%d", rc->db);
		const char *av[2] = { "SELECT", dbs };
		select_at = nsent++;
		redisAppendCommandArgv(c, 2, av, NULL);
	}
	int scripts_at = nsent;
	for (size_t i = 0; i < rc->nscripts; i++) {
		const char *av[3] = { "SCRIPT", "LOAD", rc->scripts[i].src };
		redisAppendCommandArgv(c, 3, av, NULL);
		nsent++;
	}
	int failed = 0;
	for (int i = 0; i < nsent; i++) {
		redisReply *r = NULL;
		if (redisGetReply(c, (void **)&r) != REDIS_OK) {
			set_err(rc, RCONN_EDOWN, "redis %s:%d: %s", rc->host, rc->port, c->errstr);
			connect_failed(rc);
			return RCONN_EDOWN;
		}
		if (!failed && r->type == REDIS_REPLY_ERROR) {
			failed = 1;
			/* never echo AUTH arguments; the server's message is safe */
			set_err(rc, RCONN_EDOWN, "redis %s:%d: %s%s: %.120s", rc->host, rc->port,
				i == auth_at ? "AUTH" : i == select_at ? "SELECT" : "SCRIPT LOAD ",
				i >= scripts_at ? rc->scripts[i - scripts_at].name : "", r->str);
		} else if (!failed && i >= scripts_at && r->type == REDIS_REPLY_STRING && r->len == 40) {
			memcpy(rc->sha[i - scripts_at], r->str, 40);
			rc->sha[i - scripts_at][40] = '\0';
		}
		freeReplyObject(r);
	}
	if (failed) {
		connect_failed(rc);
		return RCONN_EDOWN;
	}
	if (rc->connects++ > 0) {
		void (*fn)(void) = atomic_load_explicit(&reconnect_hook, memory_order_relaxed);
		if (fn)
			fn();
	}
	rc->backoff_ms = BACKOFF_MIN_MS;
	rc->err = 0;
	rc->errstr[0] = '\0';
	return 0;
}

/* ------------------------------------------------------------------ */
/* commands                                                            */
/* ------------------------------------------------------------------ */

int rconn_is_error(const redisReply *r, const char *prefix)
{
	return r && r->type == REDIS_REPLY_ERROR && r->str &&
	       !strncmp(r->str, prefix, strlen(prefix));
}

int rconn_reply_error(struct rconn *rc, const redisReply *r)
{
	static const char *const down[] = { "LOADING", "READONLY", "MASTERDOWN", "OOM", "BUSY",
					    "NOAUTH", "CLUSTERDOWN" };
	int code = RCONN_EREPLY;
	for (size_t i = 0; i < JR_ARRAY_LEN(down); i++)
		if (rconn_is_error(r, down[i]))
			code = RCONN_EDOWN;
	set_err(rc, code, "redis: %.200s", r && r->str ? r->str : "error reply");
	return code;
}

static void io_failed(struct rconn *rc)
{
	char why[160];
	snprintf(why, sizeof why, "%s", rc->c && rc->c->errstr[0] ? rc->c->errstr : "I/O error");
	if (rc->c && rc->c->err == REDIS_ERR_IO && errno == EAGAIN)
		snprintf(why, sizeof why, "command timed out");
	rconn_drop(rc, why);
}

int rconn_append(struct rconn *rc, int argc, const char **argv, const size_t *lens)
{
	if (rconn_connect(rc))
		return RCONN_EDOWN;
	if (redisAppendCommandArgv(rc->c, argc, argv, lens) != REDIS_OK) {
		io_failed(rc);
		return RCONN_EDOWN;
	}
	return 0;
}

redisReply *rconn_get(struct rconn *rc)
{
	if (!rc->c) {
		if (!rc->err)
			set_err(rc, RCONN_EDOWN, "redis: not connected");
		return NULL;
	}
	redisReply *r = NULL;
	if (redisGetReply(rc->c, (void **)&r) != REDIS_OK || !r) {
		io_failed(rc);
		return NULL;
	}
	return r;
}

/* The reply of the one command just appended: an error reply becomes NULL
 * with rc->err and errstr set (rconn_reply_error). */
static redisReply *take_reply(struct rconn *rc)
{
	redisReply *r = rconn_get(rc);
	if (r && r->type == REDIS_REPLY_ERROR) {
		rconn_reply_error(rc, r);
		freeReplyObject(r);
		return NULL;
	}
	if (r)
		rc->err = 0;
	return r;
}

redisReply *rconn_cmd(struct rconn *rc, int argc, const char **argv, const size_t *lens)
{
	if (rconn_append(rc, argc, argv, lens))
		return NULL;
	return take_reply(rc);
}

redisReply *rconn_cmdf(struct rconn *rc, const char *fmt, ...)
{
	if (rconn_connect(rc))
		return NULL;
	va_list ap;
	va_start(ap, fmt);
	int rv = redisvAppendCommand(rc->c, fmt, ap);
	va_end(ap);
	if (rv != REDIS_OK) {
		io_failed(rc);
		return NULL;
	}
	return take_reply(rc);
}

int rconn_append_evalsha(struct rconn *rc, size_t idx, int argc, const char **argv,
			 const size_t *lens)
{
	if (rconn_connect(rc))
		return RCONN_EDOWN;
	const char *stack_av[64];
	size_t stack_lens[64];
	const char **av = stack_av;
	size_t *ln = stack_lens;
	if (argc + 2 > 64) {
		av = xmalloc(sizeof *av * (size_t)(argc + 2));
		ln = xmalloc(sizeof *ln * (size_t)(argc + 2));
	}
	av[0] = "EVALSHA";
	ln[0] = 7;
	av[1] = rc->sha[idx];
	ln[1] = strlen(rc->sha[idx]);
	for (int i = 0; i < argc; i++) {
		av[i + 2] = argv[i];
		ln[i + 2] = lens ? lens[i] : strlen(argv[i]);
	}
	int rv = rconn_append(rc, argc + 2, av, ln);
	if (av != stack_av) {
		free(av);
		free(ln);
	}
	return rv;
}

redisReply *rconn_eval(struct rconn *rc, size_t idx, int argc, const char **argv, const size_t *lens)
{
	if (idx >= rc->nscripts) {
		set_err(rc, RCONN_EREPLY, "no such script");
		return NULL;
	}
	if (rconn_append_evalsha(rc, idx, argc, argv, lens))
		return NULL;
	redisReply *r = rconn_get(rc);
	if (rconn_is_error(r, "NOSCRIPT")) {
		freeReplyObject(r);
		/* EVAL also caches the script on the server for the next EVALSHA */
		const char **av = xmalloc(sizeof *av * (size_t)(argc + 2));
		size_t *ln = xmalloc(sizeof *ln * (size_t)(argc + 2));
		av[0] = "EVAL";
		ln[0] = 4;
		av[1] = rc->scripts[idx].src;
		ln[1] = strlen(av[1]);
		for (int i = 0; i < argc; i++) {
			av[i + 2] = argv[i];
			ln[i + 2] = lens ? lens[i] : strlen(argv[i]);
		}
		r = NULL;
		if (rconn_append(rc, argc + 2, av, ln) == 0)
			r = rconn_get(rc);
		free(av);
		free(ln);
	}
	if (r && r->type == REDIS_REPLY_ERROR) {
		rconn_reply_error(rc, r);
		freeReplyObject(r);
		return NULL;
	}
	if (r)
		rc->err = 0;
	return r;
}

/* ------------------------------------------------------------------ */
/* argument vectors                                                    */
/* ------------------------------------------------------------------ */

#define OFF_EXT ((size_t)-1)

static void rargv_grow(struct rargv *a)
{
	if (a->n < a->cap)
		return;
	a->cap = a->cap ? a->cap * 2 : 64;
	a->argv = xrealloc(a->argv, sizeof *a->argv * a->cap);
	a->lens = xrealloc(a->lens, sizeof *a->lens * a->cap);
	a->ext = xrealloc(a->ext, sizeof *a->ext * a->cap);
	a->off = xrealloc(a->off, sizeof *a->off * a->cap);
}

void rargv_reset(struct rargv *a)
{
	a->n = 0;
	sb_reset(&a->arena);
}

void rargv_release(struct rargv *a)
{
	free(a->argv);
	free(a->lens);
	free(a->ext);
	free(a->off);
	sb_release(&a->arena);
	memset(a, 0, sizeof *a);
}

void rargv_addref(struct rargv *a, const char *s, size_t len)
{
	rargv_grow(a);
	a->ext[a->n] = s;
	a->off[a->n] = OFF_EXT;
	a->lens[a->n] = len;
	a->n++;
}

void rargv_addrefs(struct rargv *a, const char *s)
{
	rargv_addref(a, s, strlen(s));
}

void rargv_addcopy(struct rargv *a, const char *s, size_t len)
{
	rargv_grow(a);
	a->ext[a->n] = NULL;
	a->off[a->n] = a->arena.len;
	a->lens[a->n] = len;
	sb_add(&a->arena, s, len);
	sb_add(&a->arena, "", 1);   /* keep a NUL after each item */
	a->n++;
}

void rargv_addi64(struct rargv *a, int64_t v)
{
	char buf[24];
	int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
	rargv_addcopy(a, buf, (size_t)n);
}

void rargv_finish(struct rargv *a)
{
	for (size_t i = 0; i < a->n; i++)
		a->argv[i] = a->off[i] == OFF_EXT ? a->ext[i] : a->arena.buf + a->off[i];
}
