/* rconn.c -- see rconn.h.
 *
 * Why a wrapper: every user of Redis here needs the same things -- a
 * failed connection must be closed and replaced (never reused), reconnects
 * must back off so an outage costs microseconds per call instead of a
 * connect timeout each, Lua scripts must survive SCRIPT FLUSH, TLS and
 * Sentinel must work although hiredis 0.14 knows neither, and a pooled
 * connection that the server closed while idle must cost nothing.  The
 * queue transport, the history writer and the health checks each hold
 * their own rconn (one per thread).
 *
 * Layout: settings and TLS context -> sockets (connect with timeout, TLS
 * handshake, read, write) -> handshake and Sentinel discovery -> sending
 * (buffer, stale check, one resend) and reading -> commands.
 */
#include "rconn.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define KEEPALIVE_IDLE_S 15
#define KEEPALIVE_INTVL_S 5
#define KEEPALIVE_CNT 3

/* ------------------------------------------------------------------ */
/* settings and the TLS context (process-wide)                         */
/* ------------------------------------------------------------------ */

static pthread_mutex_t set_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char *ca, *cert, *key, *server_name, *sentinel_password;
	SSL_CTX *ctx;
} set;

static void set_str(char **slot, const char *v)
{
	free(*slot);
	*slot = v && *v ? xstrdup(v) : NULL;
}

/* The last OpenSSL error as text ("" if none); clears the queue. */
static void ssl_errstr(char *out, size_t outlen)
{
	unsigned long e = ERR_get_error();
	unsigned long last = e;
	while (e) {
		last = e;
		e = ERR_get_error();
	}
	if (last)
		ERR_error_string_n(last, out, outlen);
	else
		snprintf(out, outlen, "unknown error");
}

/* Builds the context from set (under set_mu). */
static SSL_CTX *ctx_build(char *err, size_t errlen)
{
	char why[200];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		ssl_errstr(why, sizeof why);
		snprintf(err, errlen, "TLS: cannot create a context: %s", why);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (set.ca ? SSL_CTX_load_verify_locations(ctx, set.ca, NULL) != 1
		   : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		ssl_errstr(why, sizeof why);
		snprintf(err, errlen, "REDIS_TLS_CA_FILE%s%s: cannot load the CA certificates: %s",
			 set.ca ? "=" : " (unset: the system store)", set.ca ? set.ca : "", why);
		goto fail;
	}
	if (!set.cert != !set.key) {
		snprintf(err, errlen, "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together: set both or neither");
		goto fail;
	}
	if (set.cert && SSL_CTX_use_certificate_chain_file(ctx, set.cert) != 1) {
		ssl_errstr(why, sizeof why);
		snprintf(err, errlen, "REDIS_TLS_CERT_FILE=%s: cannot load the certificate: %s", set.cert, why);
		goto fail;
	}
	if (set.key && (SSL_CTX_use_PrivateKey_file(ctx, set.key, SSL_FILETYPE_PEM) != 1 ||
			SSL_CTX_check_private_key(ctx) != 1)) {
		ssl_errstr(why, sizeof why);
		snprintf(err, errlen, "REDIS_TLS_KEY_FILE=%s: cannot load the key, or it does not match "
			 "REDIS_TLS_CERT_FILE: %s", set.key, why);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int rconn_setup(const struct rconn_settings *s, int tls, char *err, size_t errlen)
{
	pthread_mutex_lock(&set_mu);
	set_str(&set.ca, s->tls_ca_file);
	set_str(&set.cert, s->tls_cert_file);
	set_str(&set.key, s->tls_key_file);
	set_str(&set.server_name, s->tls_server_name);
	set_str(&set.sentinel_password, s->sentinel_password);
	if (set.ctx) {
		SSL_CTX_free(set.ctx);
		set.ctx = NULL;
	}
	int rv = 0;
	if (tls) {
		set.ctx = ctx_build(err, errlen);
		rv = set.ctx ? 0 : -1;
	}
	pthread_mutex_unlock(&set_mu);
	return rv;
}

/* The context (built on first use with the settings); a new reference. */
static SSL_CTX *ctx_get(char *err, size_t errlen)
{
	pthread_mutex_lock(&set_mu);
	if (!set.ctx)
		set.ctx = ctx_build(err, errlen);
	SSL_CTX *ctx = set.ctx;
	if (ctx)
		SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&set_mu);
	return ctx;
}

/* A copy of a setting string (NULL if unset); caller frees. */
static char *setting(char *const *slot)
{
	pthread_mutex_lock(&set_mu);
	char *v = xstrdup(*slot);
	pthread_mutex_unlock(&set_mu);
	return v;
}

/* Called after every reconnect (a connect after the first) of any rconn:
 * the application counts reconnects without this file knowing metrics. */
static _Atomic(void (*)(void)) reconnect_hook;

void rconn_on_reconnect(void (*fn)(void)) { atomic_store_explicit(&reconnect_hook, fn, memory_order_relaxed); }

/* ------------------------------------------------------------------ */
/* errors                                                              */
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

/* ------------------------------------------------------------------ */
/* sockets                                                             */
/* ------------------------------------------------------------------ */

/* One link: a socket and maybe a TLS session over it. */
struct link {
	int fd;
	SSL *ssl;
};

static void link_close(struct link *l)
{
	if (l->ssl) {
		SSL_free(l->ssl);   /* no close_notify: the peer may be gone */
		l->ssl = NULL;
	}
	if (l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
}

static void sock_timeouts(int fd, int64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* TCP connect within RCONN_CONNECT_TIMEOUT_MS: the fd, or -1 with why. */
static int tcp_connect(const char *host, int port, char *why, size_t whylen)
{
	struct addrinfo hints, *res = NULL;
	char ports[8];
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(ports, sizeof ports, "%d", port);
	int gai = getaddrinfo(host, ports, &hints, &res);
	if (gai) {
		snprintf(why, whylen, "cannot resolve the host: %s", gai_strerror(gai));
		return -1;
	}
	int fd = -1;
	snprintf(why, whylen, "no address");
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
		if (fd < 0) {
			snprintf(why, whylen, "socket: %s", strerror(errno));
			continue;
		}
		int rv = connect(fd, a->ai_addr, a->ai_addrlen);
		if (rv && errno == EINPROGRESS) {
			struct pollfd pfd = { fd, POLLOUT, 0 };
			int pr;
			do
				pr = poll(&pfd, 1, RCONN_CONNECT_TIMEOUT_MS);
			while (pr < 0 && errno == EINTR);
			int soerr = 0;
			socklen_t sl = sizeof soerr;
			if (pr == 0) {
				errno = ETIMEDOUT;
				rv = -1;
			} else if (pr < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr) {
				if (soerr)
					errno = soerr;
				rv = -1;
			} else {
				rv = 0;
			}
		}
		if (rv == 0)
			break;
		snprintf(why, whylen, "connect: %s", strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return -1;
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	int on = 1, idle = KEEPALIVE_IDLE_S, intvl = KEEPALIVE_INTVL_S, cnt = KEEPALIVE_CNT;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
	return fd;
}

static int is_ip_literal(const char *h)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/* TLS handshake over l->fd with certificate and name verification.  0, or
 * -1 with the cause in why (*refused: the server answered, but its
 * certificate or our settings do not do). */
static int tls_handshake(struct link *l, const char *host, char *why, size_t whylen, int *refused)
{
	char cerr[300] = "";
	SSL_CTX *ctx = ctx_get(cerr, sizeof cerr);
	*refused = 1;
	if (!ctx) {
		snprintf(why, whylen, "%s", cerr);
		return -1;
	}
	char *sn = setting(&set.server_name);
	const char *name = sn ? sn : host;
	l->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx);   /* the session holds its own reference */
	int rv = -1;
	if (!l->ssl || SSL_set_fd(l->ssl, l->fd) != 1) {
		snprintf(why, whylen, "TLS: cannot create a session");
		goto out;
	}
	if (!is_ip_literal(name))
		SSL_set_tlsext_host_name(l->ssl, name);
	X509_VERIFY_PARAM *vp = SSL_get0_param(l->ssl);
	X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (is_ip_literal(name) ? X509_VERIFY_PARAM_set1_ip_asc(vp, name) != 1
				: X509_VERIFY_PARAM_set1_host(vp, name, 0) != 1) {
		snprintf(why, whylen, "TLS: cannot set the name to verify");
		goto out;
	}
	ERR_clear_error();
	int r = SSL_connect(l->ssl);
	if (r == 1) {
		rv = 0;
		goto out;
	}
	long vr = SSL_get_verify_result(l->ssl);
	int se = SSL_get_error(l->ssl, r);
	if (vr != X509_V_OK) {
		const char *what = vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH
					   ? "name mismatch"
				   : vr == X509_V_ERR_CERT_HAS_EXPIRED ? "certificate expired"
				   : vr == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
					     vr == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
					     vr == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
					     vr == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
					   ? "unknown CA"
					   : "certificate rejected";
		snprintf(why, whylen, "TLS handshake failed: %s (%s; verified name %s)", what,
			 X509_verify_cert_error_string(vr), name);
	} else if (se == SSL_ERROR_SYSCALL || se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE) {
		*refused = 0;   /* the network, not the certificate */
		snprintf(why, whylen, "TLS handshake failed: %s",
			 errno == EAGAIN ? "timed out" : errno ? strerror(errno) : "connection closed "
			 "(is the port a TLS port?)");
	} else {
		char e[200];
		ssl_errstr(e, sizeof e);
		snprintf(why, whylen, "TLS handshake failed: %s", e);
	}
out:
	free(sn);
	return rv;
}

/* Connects l to host:port (TLS if tls), command timeouts set.  0 or -1. */
static int link_open(struct link *l, const char *host, int port, int tls, char *why, size_t whylen,
		     int *refused)
{
	l->fd = -1;
	l->ssl = NULL;
	*refused = 0;
	l->fd = tcp_connect(host, port, why, whylen);
	if (l->fd < 0)
		return -1;
	sock_timeouts(l->fd, tls ? RCONN_CONNECT_TIMEOUT_MS : RCONN_CMD_TIMEOUT_MS);
	if (tls) {
		if (tls_handshake(l, host, why, whylen, refused)) {
			link_close(l);
			return -1;
		}
		sock_timeouts(l->fd, RCONN_CMD_TIMEOUT_MS);
	}
	return 0;
}

/* Writes all of buf.  Returns 0, or -1 with *sent the bytes that went out. */
static int link_write(struct link *l, const char *buf, size_t len, size_t *sent)
{
	*sent = 0;
	while (*sent < len) {
		ssize_t n;
		if (l->ssl) {
			ERR_clear_error();
			errno = 0;
			int r = SSL_write(l->ssl, buf + *sent, (int)(len - *sent > (1 << 30) ? 1 << 30 : len - *sent));
			n = r > 0 ? r : -1;
			if (r <= 0 && !errno)
				errno = EIO;
		} else {
			n = send(l->fd, buf + *sent, len - *sent, MSG_NOSIGNAL);
		}
		if (n < 0 && errno == EINTR && !l->ssl)
			continue;
		if (n <= 0)
			return -1;
		*sent += (size_t)n;
	}
	return 0;
}

/* Reads what is there (blocking up to the timeout): bytes, 0 on EOF, -1. */
static ssize_t link_read(struct link *l, char *buf, size_t cap)
{
	for (;;) {
		if (l->ssl) {
			ERR_clear_error();
			errno = 0;
			int r = SSL_read(l->ssl, buf, (int)cap);
			if (r > 0)
				return r;
			int e = SSL_get_error(l->ssl, r);
			if (e == SSL_ERROR_ZERO_RETURN)
				return 0;
			if (e == SSL_ERROR_SYSCALL && errno == 0)
				return 0;   /* EOF without close_notify */
			if (!errno)
				errno = EIO;
			return -1;
		}
		ssize_t n = recv(l->fd, buf, cap, 0);
		if (n < 0 && errno == EINTR)
			continue;
		return n;
	}
}

/* 1 when a link on which no reply is expected was closed by the peer or
 * holds unexpected bytes: it must not be used.  TLS 1.3 session tickets
 * that arrive after the handshake are consumed and do not count. */
static int link_stale(struct link *l)
{
	struct pollfd pfd = { l->fd, POLLIN, 0 };
	if (poll(&pfd, 1, 0) <= 0 && !(l->ssl && SSL_pending(l->ssl) > 0))
		return 0;
	if (pfd.revents & (POLLERR | POLLNVAL))
		return 1;
	char c;
	int fl = fcntl(l->fd, F_GETFL);
	fcntl(l->fd, F_SETFL, fl | O_NONBLOCK);
	int stale;
	if (l->ssl) {
		ERR_clear_error();
		errno = 0;
		int r = SSL_peek(l->ssl, &c, 1);
		int e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(l->ssl, r);
		stale = !(r <= 0 && e == SSL_ERROR_WANT_READ);
	} else {
		ssize_t n = recv(l->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
		stale = !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
	}
	fcntl(l->fd, F_SETFL, fl);
	return stale;
}

/* ------------------------------------------------------------------ */
/* replies: one arena each                                              */
/* ------------------------------------------------------------------ */

/* A reply (the root object) starts a block that also holds a header;
 * its elements and strings are carved from that block and from further
 * blocks chained to it, each twice the last (from 4 KiB).  The reader
 * builds a reply top-down, so every object finds its root through the
 * parent tasks.  hiredis calls freeObject only on roots (a reply given
 * up half-read). */
struct rblock {
	struct rblock *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

struct rroot {
	struct rblock *cur;      /* the block objects are carved from */
	redisReply r;
};

#define RBLOCK_MIN 4096u

static struct rblock *rblock_new(size_t cap)
{
	struct rblock *b = xmalloc(sizeof *b + cap);
	b->next = NULL;
	b->used = 0;
	b->cap = cap;
	return b;
}

static void *rblock_take(struct rroot *root, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	struct rblock *b = root->cur;
	if (b->cap - b->used < n) {
		size_t cap = b->cap * 2 < RBLOCK_MIN ? RBLOCK_MIN : b->cap * 2;
		if (cap > (1u << 20))
			cap = 1u << 20;
		struct rblock *nb = rblock_new(cap < n ? n : cap);
		nb->next = b;   /* newest first: rconn_free walks them all */
		root->cur = b = nb;
	}
	void *p = b->data + b->used;
	b->used += n;
	return p;
}

/* A new object of type for task, with extra bytes after it (a string's
 * text, an array's element pointers) at *tail; hooked into its parent.
 * A root's first block fits the root, with room for about 96 bytes per
 * element of an array root (its entries' objects and short strings). */
static redisReply *robj_new(const redisReadTask *task, int type, size_t extra, size_t guess,
			    void **tail)
{
	const size_t hdr = (sizeof(redisReply) + 15) & ~(size_t)15;
	redisReply *r;
	if (!task->parent) {
		const size_t top = (sizeof(struct rroot) + 15) & ~(size_t)15;
		struct rblock *b = rblock_new(top + ((extra + 15) & ~(size_t)15) + guess);
		b->used = top;
		struct rroot *root = (struct rroot *)(void *)b->data;
		root->cur = b;
		r = &root->r;
		*tail = extra ? rblock_take(root, extra) : NULL;
	} else {
		const redisReadTask *t = task;
		while (t->parent)
			t = t->parent;
		struct rroot *root = (struct rroot *)(void *)((char *)t->obj - offsetof(struct rroot, r));
		char *p = rblock_take(root, hdr + extra);
		r = (redisReply *)(void *)p;
		*tail = extra ? p + hdr : NULL;
		redisReply *parent = task->parent->obj;
		parent->element[task->idx] = r;
	}
	memset(r, 0, sizeof *r);
	r->type = type;
	return r;
}

static void *rcreate_string(const redisReadTask *task, char *str, size_t len)
{
	void *text;
	redisReply *r = robj_new(task, task->type, len + 1, 0, &text);
	r->str = text;
	memcpy(r->str, str, len);
	r->str[len] = '\0';
	r->len = len;
	return r;
}

static void *rcreate_array(const redisReadTask *task, int elements)
{
	void *v;
	size_t n = elements > 0 ? (size_t)elements : 0;
	redisReply *r = robj_new(task, REDIS_REPLY_ARRAY, n * sizeof(redisReply *), n * 96, &v);
	r->element = v;
	r->elements = n;
	if (n)
		memset(v, 0, n * sizeof(redisReply *));
	return r;
}

static void *rcreate_integer(const redisReadTask *task, long long value)
{
	void *unused;
	redisReply *r = robj_new(task, REDIS_REPLY_INTEGER, 0, 0, &unused);
	r->integer = value;
	return r;
}

static void *rcreate_nil(const redisReadTask *task)
{
	void *unused;
	return robj_new(task, REDIS_REPLY_NIL, 0, 0, &unused);
}

void rconn_free(redisReply *r)
{
	if (!r)
		return;
	struct rroot *root = (struct rroot *)(void *)((char *)r - offsetof(struct rroot, r));
	struct rblock *b = root->cur;
	while (b) {
		struct rblock *next = b->next;
		free(b);
		b = next;
	}
}

static void rfree_object(void *r)
{
	rconn_free(r);
}

static redisReplyObjectFunctions reply_fns = {
	rcreate_string, rcreate_array, rcreate_integer, rcreate_nil, rfree_object
};

static redisReader *reader_new(void)
{
	return redisReaderCreateWithFunctions(&reply_fns);
}

void *rconn_reader_new(void)
{
	return reader_new();
}

/* Reads one reply from l through reader: the reply, or NULL with why. */
static redisReply *link_reply(struct link *l, redisReader *rd, char *why, size_t whylen)
{
	for (;;) {
		void *r = NULL;
		if (redisReaderGetReply(rd, &r) != REDIS_OK) {
			snprintf(why, whylen, "protocol error: %s", rd->errstr);
			return NULL;
		}
		if (r)
			return r;
		char buf[16384];
		errno = 0;
		ssize_t n = link_read(l, buf, sizeof buf);
		if (n == 0) {
			snprintf(why, whylen, "connection closed by the server");
			return NULL;
		}
		if (n < 0) {
			snprintf(why, whylen, "%s", errno == EAGAIN || errno == EWOULDBLOCK ? "command timed out"
						   : strerror(errno));
			return NULL;
		}
		if (redisReaderFeed(rd, buf, (size_t)n) != REDIS_OK) {
			snprintf(why, whylen, "protocol error: %s", rd->errstr);
			return NULL;
		}
	}
}

/* Sends n formatted commands in buf and reads n replies into out[]
 * (error replies included).  0, or -1 with why (out[] freed). */
static int link_exchange(struct link *l, redisReader *rd, const struct strbuf *buf, int n,
			 redisReply **out, char *why, size_t whylen)
{
	size_t sent;
	if (link_write(l, buf->buf, buf->len, &sent)) {
		snprintf(why, whylen, "write: %s", strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		out[i] = link_reply(l, rd, why, whylen);
		if (!out[i]) {
			while (i-- > 0)
				rconn_free(out[i]);
			return -1;
		}
	}
	return 0;
}

static void add_cmd(struct strbuf *sb, int argc, const char **argv, const size_t *lens)
{
	char *cmd = NULL;
	int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (len < 0 || !cmd)
		abort();   /* out of memory */
	sb_add(sb, cmd, (size_t)len);
	redisFreeCommand(cmd);
}

/* SCRIPT LOAD of the scripts missing[] on a fresh link, in one round
 * trip; their SHA1s into rc->sha.  0 or an RCONN_E* code (set_err'd).  A
 * SHA1 that differs from the build's means the embedded text is not what
 * the server hashed: an error, not a silent reload on every EVALSHA. */
static int refusal(const char *msg);

static int load_scripts(struct rconn *rc, struct link *l, const int *missing, int n)
{
	struct strbuf sb = STRBUF_INIT;
	for (int k = 0; k < n; k++) {
		const char *sv[3] = { "SCRIPT", "LOAD", rc->scripts[missing[k]].src };
		add_cmd(&sb, 3, sv, NULL);
	}
	redisReply *rep[RCONN_MAX_SCRIPTS];
	char why[300];
	int xr = link_exchange(l, rc->reader, &sb, n, rep, why, sizeof why);
	sb_release(&sb);
	if (xr) {
		set_err(rc, RCONN_EDOWN, "redis %s:%d: %s", rc->host, rc->port, why);
		return RCONN_EDOWN;
	}
	int code = 0;
	for (int k = 0; k < n; k++) {
		const struct rscript *s = &rc->scripts[missing[k]];
		redisReply *r = rep[k];
		if (code) {
			/* an earlier one failed: only free the rest */
		} else if (r->type == REDIS_REPLY_ERROR) {
			code = refusal(r->str) ? RCONN_EREFUSED : RCONN_EDOWN;
			set_err(rc, code, "redis %s:%d: SCRIPT LOAD %s: %.120s", rc->host, rc->port,
				s->name, r->str);
		} else if (r->type != REDIS_REPLY_STRING || r->len != 40 ||
			   (s->sha && memcmp(r->str, s->sha, 40))) {
			code = RCONN_EREFUSED;
			set_err(rc, code, "redis %s:%d: SCRIPT LOAD %s: unexpected SHA1 %.40s (the build "
				"computed %s)", rc->host, rc->port, s->name,
				r->type == REDIS_REPLY_STRING ? r->str : "?", s->sha ? s->sha : "none");
		} else {
			memcpy(rc->sha[missing[k]], r->str, 40);
			rc->sha[missing[k]][40] = '\0';
		}
		rconn_free(r);
	}
	return code;
}

/* ------------------------------------------------------------------ */
/* Sentinel's +switch-master                                           */
/* ------------------------------------------------------------------ */

/* One thread per process (started by the first Sentinel connect) stays
 * subscribed to +switch-master on one of the sentinels.  Each message for
 * our master bumps switch_epoch; a connection made before the bump is
 * replaced before its next command is sent (flush), so even an idle
 * connection that Sentinel did not close moves to the new master. */
static _Atomic uint64_t switch_epoch;
static struct {
	pthread_mutex_t mu;
	int started;
	pthread_t tid;
	int wake[2];                 /* a byte on wake[1] stops the thread */
	struct url_host hosts[URL_MAX_HOSTS];
	size_t nhosts;
	int tls;
	char *master;
} watch = { .mu = PTHREAD_MUTEX_INITIALIZER, .wake = { -1, -1 } };

static int watch_stopping(void)
{
	struct pollfd p = { watch.wake[0], POLLIN, 0 };
	return poll(&p, 1, 0) > 0;
}

/* A +switch-master message for our master? */
static void watch_message(const redisReply *r)
{
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") ||
	    r->element[2]->type != REDIS_REPLY_STRING)
		return;
	size_t n = strlen(watch.master);
	if (!strncmp(r->element[2]->str, watch.master, n) && r->element[2]->str[n] == ' ')
		atomic_fetch_add_explicit(&switch_epoch, 1, memory_order_relaxed);
}

static void *watch_main(void *arg)
{
	(void)arg;
	for (size_t k = 0; !watch_stopping(); k++) {
		const struct url_host *h = &watch.hosts[k % watch.nhosts];
		struct link l;
		int refused;
		char why[240];
		if (link_open(&l, h->name, h->port, watch.tls, why, sizeof why, &refused)) {
			struct pollfd p = { watch.wake[0], POLLIN, 0 };
			poll(&p, 1, 1000);
			continue;
		}
		redisReader *rd = reader_new();
		struct strbuf sb = STRBUF_INIT;
		char *spw = setting(&set.sentinel_password);
		int nc = 0;
		if (spw) {
			const char *av[] = { "AUTH", spw };
			add_cmd(&sb, 2, av, NULL);
			nc++;
			explicit_bzero(spw, strlen(spw));
			free(spw);
		}
		const char *av[] = { "SUBSCRIBE", "+switch-master" };
		add_cmd(&sb, 2, av, NULL);
		nc++;
		redisReply *rep[2] = { 0 };
		int ok = link_exchange(&l, rd, &sb, nc, rep, why, sizeof why) == 0;
		for (int i = 0; ok && i < nc; i++)
			ok = rep[i]->type != REDIS_REPLY_ERROR;
		for (int i = 0; i < nc; i++)
			if (rep[i])
				rconn_free(rep[i]);
		sb_release(&sb);
		while (ok) {
			struct pollfd p[2] = { { l.fd, POLLIN, 0 }, { watch.wake[0], POLLIN, 0 } };
			if (!(l.ssl && SSL_pending(l.ssl) > 0) && poll(p, 2, 1000) <= 0)
				continue;
			if (p[1].revents)
				break;
			redisReply *r = link_reply(&l, rd, why, sizeof why);
			if (!r)
				break;   /* the sentinel went away: another one */
			do {
				watch_message(r);
				rconn_free(r);
				r = NULL;
			} while (redisReaderGetReply(rd, (void **)&r) == REDIS_OK && r);
		}
		redisReaderFree(rd);
		link_close(&l);
	}
	return NULL;
}

static void watch_stop(void)
{
	pthread_mutex_lock(&watch.mu);
	if (watch.started) {
		if (write(watch.wake[1], "x", 1) < 0) {
			/* nothing to do: the thread then ends with the process */
		}
		pthread_join(watch.tid, NULL);
		watch.started = 0;
		close(watch.wake[0]);
		close(watch.wake[1]);
		free(watch.master);
		watch.master = NULL;
	}
	pthread_mutex_unlock(&watch.mu);
}

/* Starts the watcher for u's sentinels, once per process. */
static void watch_start(const struct url *u)
{
	pthread_mutex_lock(&watch.mu);
	if (!watch.started && !watch.master && pipe2(watch.wake, O_CLOEXEC) == 0) {
		memcpy(watch.hosts, u->hosts, sizeof watch.hosts);
		watch.nhosts = u->nhosts;
		watch.tls = u->tls;
		watch.master = xstrdup(u->master);
		if (pthread_create(&watch.tid, NULL, watch_main, NULL) == 0) {
			watch.started = 1;
			atexit(watch_stop);
		} else {
			close(watch.wake[0]);
			close(watch.wake[1]);
		}
	}
	pthread_mutex_unlock(&watch.mu);
}

/* ------------------------------------------------------------------ */
/* URL, handshake, discovery                                           */
/* ------------------------------------------------------------------ */

int rconn_init(struct rconn *rc, const char *url, const struct rscript *scripts, size_t nscripts,
	       char *err, size_t errlen)
{
	memset(rc, 0, sizeof *rc);
	rc->fd = -1;
	if (nscripts > RCONN_MAX_SCRIPTS) {
		snprintf(err, errlen, "too many scripts");
		return -1;
	}
	rc->scripts = scripts;
	rc->nscripts = nscripts;
	rc->backoff_ms = BACKOFF_MIN_MS;
	char why[200];
	if (url_parse(url, &rc->url, why, sizeof why)) {
		snprintf(err, errlen, "REDIS_URL: %s", why);
		rconn_release(rc);
		return -1;
	}
	if (rc->url.scheme == URL_HTTP || rc->url.scheme == URL_HTTPS) {
		snprintf(err, errlen, "REDIS_URL: expected redis://, rediss://, redis-sentinel:// or "
			 "rediss-sentinel://");
		rconn_release(rc);
		return -1;
	}
	rc->host = xstrdup(rc->url.hosts[0].name);
	rc->port = rc->url.hosts[0].port;
	rc->user = xstrdup(rc->url.user);
	rc->password = xstrdup(rc->url.password);
	rc->db = rc->url.db;
	return 0;
}

void rconn_set_name(struct rconn *rc, const char *role, const char *who)
{
	free(rc->name);
	rc->name = xasprintf("jobrunner:%s:%s", role, who && *who ? who : "-");
	for (char *p = rc->name; *p; p++)
		if ((unsigned char)*p <= ' ')
			*p = '_';   /* CLIENT SETNAME takes no spaces */
}

static void link_of(struct rconn *rc, struct link *l)
{
	l->fd = rc->fd;
	l->ssl = rc->ssl;
}

static void close_conn(struct rconn *rc)
{
	struct link l;
	link_of(rc, &l);
	link_close(&l);
	rc->fd = -1;
	rc->ssl = NULL;
	if (rc->reader) {
		redisReaderFree(rc->reader);
		rc->reader = NULL;
	}
	sb_reset(&rc->out);
	rc->queued = rc->inflight = 0;
	rc->role[0] = '\0';
}

void rconn_release(struct rconn *rc)
{
	close_conn(rc);
	sb_release(&rc->out);
	url_free(&rc->url);
	free(rc->host);
	free(rc->user);
	free(rc->name);
	if (rc->password) {
		explicit_bzero(rc->password, strlen(rc->password));
		free(rc->password);
	}
	memset(rc, 0, sizeof *rc);
	rc->fd = -1;
}

void rconn_drop(struct rconn *rc, const char *why)
{
	close_conn(rc);
	rc->next_try_ms = mono_ms();   /* first reconnect may be immediate */
	if (why)
		set_err(rc, RCONN_EDOWN, "redis %s:%d: %s", rc->host, rc->port, why);
}

static void connect_failed(struct rconn *rc, int code)
{
	close_conn(rc);
	rc->next_try_ms = mono_ms() + rc->backoff_ms;
	rc->backoff_ms *= 2;
	if (rc->backoff_ms > BACKOFF_MAX_MS)
		rc->backoff_ms = BACKOFF_MAX_MS;
	rc->err = code;
}

/* A value of HELLO's flat key/value reply, or NULL. */
static const char *hello_field(const redisReply *r, const char *key)
{
	if (!r || r->type != REDIS_REPLY_ARRAY)
		return NULL;
	for (size_t i = 0; i + 1 < r->elements; i += 2)
		if (r->element[i]->type == REDIS_REPLY_STRING && !strcmp(r->element[i]->str, key) &&
		    r->element[i + 1]->type == REDIS_REPLY_STRING)
			return r->element[i + 1]->str;
	return NULL;
}

static int refusal(const char *msg)
{
	static const char *const refused[] = { "NOPERM", "NOAUTH", "WRONGPASS", "ERR AUTH",
					       "ERR invalid password", "ERR Client sent AUTH" };
	for (size_t i = 0; i < JR_ARRAY_LEN(refused); i++)
		if (msg && !strncmp(msg, refused[i], strlen(refused[i])))
			return 1;
	return 0;
}

/* Asks the sentinels for the master's address, starting with the one
 * that answered last.  0 (rc->host/port set) or an RCONN_E* code. */
static int discover(struct rconn *rc)
{
	char why[300] = "no sentinel";
	int code = RCONN_EDOWN, found = 0;
	char *spw = setting(&set.sentinel_password);
	size_t n = rc->url.nhosts;
	for (size_t k = 0; k < n; k++) {
		size_t i = (rc->sentinel_next + k) % n;
		const struct url_host *h = &rc->url.hosts[i];
		struct link l;
		int refused;
		char lwhy[240];
		if (link_open(&l, h->name, h->port, rc->url.tls, lwhy, sizeof lwhy, &refused)) {
			snprintf(why, sizeof why, "sentinel %s:%d: %s", h->name, h->port, lwhy);
			if (refused)
				code = RCONN_EREFUSED;
			continue;
		}
		redisReader *rd = reader_new();
		struct strbuf sb = STRBUF_INIT;
		int nc = 0;
		if (spw) {
			const char *av[] = { "AUTH", spw };
			add_cmd(&sb, 2, av, NULL);
			nc++;
		}
		const char *av[] = { "SENTINEL", "get-master-addr-by-name", rc->url.master };
		add_cmd(&sb, 3, av, NULL);
		nc++;
		redisReply *rep[2] = { 0 };
		int ok = 0;
		if (link_exchange(&l, rd, &sb, nc, rep, lwhy, sizeof lwhy)) {
			snprintf(why, sizeof why, "sentinel %s:%d: %s", h->name, h->port, lwhy);
		} else {
			redisReply *a = rep[nc - 1];
			if (nc == 2 && rep[0]->type == REDIS_REPLY_ERROR) {
				snprintf(why, sizeof why, "sentinel %s:%d: AUTH (REDIS_SENTINEL_PASSWORD): %.100s",
					 h->name, h->port, rep[0]->str);
				code = RCONN_EREFUSED;
			} else if (a->type == REDIS_REPLY_ERROR) {
				snprintf(why, sizeof why, "sentinel %s:%d: %.120s", h->name, h->port, a->str);
				if (refusal(a->str))
					code = RCONN_EREFUSED;
			} else if (a->type != REDIS_REPLY_ARRAY || a->elements != 2 ||
				   a->element[0]->type != REDIS_REPLY_STRING ||
				   a->element[1]->type != REDIS_REPLY_STRING) {
				snprintf(why, sizeof why, "sentinel %s:%d: no master named %s", h->name,
					 h->port, rc->url.master);
			} else {
				int64_t port;
				if (parse_i64(a->element[1]->str, 1, 65535, &port) ||
				    a->element[0]->len > URL_MAX_HOST_LEN) {
					snprintf(why, sizeof why, "sentinel %s:%d: bad master address", h->name,
						 h->port);
				} else {
					free(rc->host);
					rc->host = xstrdup(a->element[0]->str);
					rc->port = (int)port;
					rc->sentinel_next = i;
					ok = 1;
				}
			}
			for (int j = 0; j < nc; j++)
				rconn_free(rep[j]);
		}
		sb_release(&sb);
		redisReaderFree(rd);
		link_close(&l);
		if (ok) {
			found = 1;
			break;
		}
	}
	if (spw) {
		explicit_bzero(spw, strlen(spw));
		free(spw);
	}
	if (found)
		return 0;
	set_err(rc, code, "redis-sentinel master %s: %s", rc->url.master, why);
	return code;
}

int rconn_connect(struct rconn *rc)
{
	if (rc->fd >= 0)
		return 0;
	uint64_t epoch = atomic_load_explicit(&switch_epoch, memory_order_relaxed);
	if (rc->url.sentinel && rc->epoch != epoch) {
		/* the sentinels switched masters since the last attempt: the
		 * new master is worth trying at once, not after the backoff
		 * that the dead one built up */
		rc->next_try_ms = 0;
		rc->backoff_ms = BACKOFF_MIN_MS;
	}
	if (mono_ms() < rc->next_try_ms) {
		if (!rc->err)
			set_err(rc, RCONN_EDOWN, "redis %s:%d: down, waiting to reconnect", rc->host,
				rc->port);
		if (rc->err != RCONN_EREFUSED)
			rc->err = RCONN_EDOWN;
		return rc->err;
	}
	rc->epoch = epoch;   /* the attempt's: a later switch cuts its backoff short */
	if (rc->url.sentinel) {
		watch_start(&rc->url);
		int code = discover(rc);
		if (code) {
			connect_failed(rc, code);
			return code;
		}
	}
	struct link l;
	int refused;
	char why[300];
	if (link_open(&l, rc->host, rc->port, rc->url.tls, why, sizeof why, &refused)) {
		set_err(rc, refused ? RCONN_EREFUSED : RCONN_EDOWN, "redis %s:%d: %s", rc->host, rc->port, why);
		connect_failed(rc, rc->err);
		return rc->err;
	}
	rc->fd = l.fd;
	rc->ssl = l.ssl;
	rc->reader = reader_new();
	/* keep a read buffer of up to 4 MiB from one reply to the next:
	 * hiredis frees one with more than maxbuf (16 KiB) unused once a reply
	 * is consumed, and every history batch (about a megabyte) would then
	 * be read into a fresh buffer */
	if (rc->reader)
		((redisReader *)rc->reader)->maxbuf = 4u << 20;
	/* AUTH, HELLO (name, role, mode), SELECT and SCRIPT EXISTS in one
	 * round trip.  AUTH apart from HELLO: a password given to a server that
	 * has none is refused, not ignored (HELLO AUTH would accept it).  The
	 * build knows each script's SHA1, so a connection sends the scripts
	 * only when the server lacks them (its first connection, a restart, a
	 * SCRIPT FLUSH): 24 KB of SCRIPT LOADs from each of 200 run threads
	 * cost the consumer about 3 MiB of peak memory, and Redis their
	 * parsing.  A script without a known SHA1 is loaded every time. */
	struct strbuf sb = STRBUF_INIT;
	int nsent = 0, auth_at = -1, hello_at, select_at = -1;
	if (rc->password) {
		const char *av[3] = { "AUTH", rc->user ? rc->user : rc->password, rc->password };
		auth_at = nsent++;
		add_cmd(&sb, rc->user ? 3 : 2, av, NULL);
	}
	const char *hv[4] = { "HELLO", "2", "SETNAME", rc->name };
	hello_at = nsent++;
	add_cmd(&sb, rc->name ? 4 : 2, hv, NULL);
	if (rc->db) {
		char dbs[16];
		snprintf(dbs, sizeof dbs, "%d", rc->db);
		const char *sv[2] = { "SELECT", dbs };
		select_at = nsent++;
		add_cmd(&sb, 2, sv, NULL);
	}
	int exists_at = -1;
	if (rc->nscripts) {
		const char *ev[2 + RCONN_MAX_SCRIPTS] = { "SCRIPT", "EXISTS" };
		int ne = 2;
		for (size_t i = 0; i < rc->nscripts; i++)
			ev[ne++] = rc->scripts[i].sha ? rc->scripts[i].sha : "-";
		exists_at = nsent++;
		add_cmd(&sb, ne, ev, NULL);
	}
	redisReply **rep = xcalloc((size_t)nsent, sizeof *rep);
	int xr = link_exchange(&l, rc->reader, &sb, nsent, rep, why, sizeof why);
	sb_release(&sb);
	if (xr) {
		free(rep);
		set_err(rc, RCONN_EDOWN, "redis %s:%d: %s", rc->host, rc->port, why);
		connect_failed(rc, RCONN_EDOWN);
		return RCONN_EDOWN;
	}
	int code = 0;
	const char *role = NULL, *mode = NULL;
	redisReply *h = rep[hello_at];
	if (auth_at >= 0 && rep[auth_at]->type == REDIS_REPLY_ERROR) {
		/* never echo AUTH arguments; the server's message is safe */
		code = refusal(rep[auth_at]->str) ? RCONN_EREFUSED : RCONN_EDOWN;
		set_err(rc, code, "redis %s:%d: AUTH: %.140s", rc->host, rc->port, rep[auth_at]->str);
	} else if (h->type == REDIS_REPLY_ERROR) {
		code = refusal(h->str) ? RCONN_EREFUSED : RCONN_EDOWN;
		if (!strncasecmp(h->str, "ERR unknown command", 19)) {
			code = RCONN_EREFUSED;
			set_err(rc, code, "redis %s:%d: HELLO is not known: Redis 6.2 or later is needed",
				rc->host, rc->port);
		} else {
			set_err(rc, code, "redis %s:%d: HELLO: %.140s", rc->host, rc->port, h->str);
		}
	} else {
		role = hello_field(h, "role");
		mode = hello_field(h, "mode");
		snprintf(rc->role, sizeof rc->role, "%s", role ? role : "");
		if (mode && !strcmp(mode, "cluster")) {
			code = RCONN_EREFUSED;
			set_err(rc, code, "redis %s:%d: this is a Redis Cluster node: Cluster is not "
				"supported (jobrunner's scripts use keys that cannot share one hash "
				"slot; use one master, with replicas and Sentinel)", rc->host, rc->port);
		} else if (mode && !strcmp(mode, "sentinel")) {
			code = RCONN_EREFUSED;
			set_err(rc, code, "redis %s:%d: this is a sentinel: use "
				"redis-sentinel://host:port#master", rc->host, rc->port);
		} else if (role && strcmp(role, "master")) {
			code = RCONN_EDOWN;
			set_err(rc, code, "redis %s:%d: connected to a replica (role %s), not the "
				"master: it cannot take writes", rc->host, rc->port, role);
		}
	}
	for (int i = hello_at + 1; i < nsent && !code; i++) {
		/* an ACL user without +script|exists (the line documented before
		 * it was needed) still works: every connection loads the scripts */
		if (i == exists_at && rep[i]->type == REDIS_REPLY_ERROR && !strncmp(rep[i]->str, "NOPERM", 6))
			continue;
		if (rep[i]->type == REDIS_REPLY_ERROR) {
			code = refusal(rep[i]->str) ? RCONN_EREFUSED : RCONN_EDOWN;
			set_err(rc, code, "redis %s:%d: %s: %.120s", rc->host, rc->port,
				i == select_at ? "SELECT" : "SCRIPT EXISTS", rep[i]->str);
		}
	}
	int missing[RCONN_MAX_SCRIPTS], nmissing = 0;
	if (!code && exists_at >= 0) {
		redisReply *e = rep[exists_at];
		for (size_t i = 0; i < rc->nscripts; i++) {
			int have = e->type == REDIS_REPLY_ARRAY && i < e->elements &&
				   e->element[i]->type == REDIS_REPLY_INTEGER && e->element[i]->integer == 1;
			if (have) {
				memcpy(rc->sha[i], rc->scripts[i].sha, 40);
				rc->sha[i][40] = '\0';
			} else {
				missing[nmissing++] = (int)i;
			}
		}
	}
	for (int i = 0; i < nsent; i++)
		rconn_free(rep[i]);
	free(rep);
	if (!code && nmissing)
		code = load_scripts(rc, &l, missing, nmissing);
	if (code) {
		if (rc->url.sentinel && code == RCONN_EDOWN)
			rc->sentinel_next++;   /* that sentinel may be behind: ask another */
		connect_failed(rc, code);
		return code;
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
/* sending and reading                                                 */
/* ------------------------------------------------------------------ */

/* A fresh connection for the commands buffered in rc->out (which are
 * kept): 0 or an RCONN_E* code. */
static int reconnect_keep(struct rconn *rc)
{
	struct strbuf keep = rc->out;
	int queued = rc->queued;
	memset(&rc->out, 0, sizeof rc->out);
	rconn_drop(rc, NULL);
	int code = rconn_connect(rc);
	sb_release(&rc->out);
	rc->out = keep;
	rc->queued = queued;
	if (code) {
		sb_reset(&rc->out);
		rc->queued = 0;
	}
	return code;
}

/* Writes the buffered commands.  0, or RCONN_EDOWN (nothing was sent; the
 * connection is gone) or RCONN_ELOST (some bytes went out). */
static int flush(struct rconn *rc)
{
	if (!rc->out.len)
		return 0;
	for (int attempt = 0;; attempt++) {
		if (rc->fd < 0 || (attempt > 0)) {
			int code = reconnect_keep(rc);
			if (code)
				return code == RCONN_EREFUSED ? code : RCONN_EDOWN;
		}
		struct link l;
		link_of(rc, &l);
		if (rc->inflight == 0 &&
		    (link_stale(&l) || (rc->url.sentinel &&
					rc->epoch != atomic_load_explicit(&switch_epoch, memory_order_relaxed)))) {
			/* closed while idle (server timeout, proxy, restart), or the
			 * sentinels switched masters since it was made: the commands
			 * never left; send them on a fresh connection */
			if (attempt > 0) {
				rconn_drop(rc, "connection closed before sending");
				return RCONN_EDOWN;
			}
			rc->resends++;
			continue;
		}
		size_t sent;
		if (link_write(&l, rc->out.buf, rc->out.len, &sent) == 0) {
			rc->inflight += rc->queued;
			rc->queued = 0;
			sb_reset(&rc->out);
			return 0;
		}
		char why[160];
		snprintf(why, sizeof why, "write: %s", errno == EAGAIN ? "timed out" : strerror(errno));
		int nothing_out = sent == 0 && rc->inflight == 0;
		if (nothing_out && attempt == 0) {
			rc->resends++;   /* the write failed before any byte left: once more */
			continue;
		}
		rconn_drop(rc, why);
		return nothing_out ? RCONN_EDOWN : RCONN_ELOST;
	}
}

int rconn_append(struct rconn *rc, int argc, const char **argv, const size_t *lens)
{
	if (rc->fd < 0 && !rc->out.len) {
		int code = rconn_connect(rc);
		if (code)
			return code;
	}
	add_cmd(&rc->out, argc, argv, lens);
	rc->queued++;
	return 0;
}

redisReply *rconn_get(struct rconn *rc)
{
	if (rc->out.len) {
		int code = flush(rc);
		if (code) {
			rc->err = code;
			if (!rc->errstr[0])
				set_err(rc, code, "redis %s:%d: not connected", rc->host, rc->port);
			return NULL;
		}
	}
	if (rc->fd < 0 || rc->inflight <= 0) {
		if (!rc->err)
			set_err(rc, RCONN_EDOWN, "redis: not connected");
		return NULL;
	}
	struct link l;
	link_of(rc, &l);
	char why[200];
	redisReply *r = link_reply(&l, rc->reader, why, sizeof why);
	if (!r) {
		rconn_drop(rc, why);
		rc->err = RCONN_ELOST;
		return NULL;
	}
	rc->inflight--;
	return r;
}

int rconn_is_error(const redisReply *r, const char *prefix)
{
	return r && r->type == REDIS_REPLY_ERROR && r->str &&
	       !strncmp(r->str, prefix, strlen(prefix));
}

int rconn_reply_error(struct rconn *rc, const redisReply *r)
{
	static const char *const down[] = { "LOADING", "READONLY", "MASTERDOWN", "OOM", "BUSY",
					    "CLUSTERDOWN" };
	int code = RCONN_EREPLY;
	for (size_t i = 0; i < JR_ARRAY_LEN(down); i++)
		if (rconn_is_error(r, down[i]))
			code = RCONN_EDOWN;
	if (r && refusal(r->str))
		code = RCONN_EREFUSED;
	set_err(rc, code, "redis: %.200s", r && r->str ? r->str : "error reply");
	if (rconn_is_error(r, "READONLY") && rc->inflight == 0 && !rc->out.len) {
		/* the node was demoted: find the master again on the next call */
		char keep[sizeof rc->errstr];
		memcpy(keep, rc->errstr, sizeof keep);
		rconn_drop(rc, NULL);
		memcpy(rc->errstr, keep, sizeof keep);
		rc->err = code;
	}
	return code;
}

/* r as the caller's reply: an error reply becomes NULL with rc->err and
 * errstr set (rconn_reply_error), any other clears rc->err. */
static redisReply *checked_reply(struct rconn *rc, redisReply *r)
{
	if (r && r->type == REDIS_REPLY_ERROR) {
		rconn_reply_error(rc, r);
		rconn_free(r);
		return NULL;
	}
	if (r)
		rc->err = 0;
	return r;
}

/* The reply of the one command just appended, through checked_reply(). */
static redisReply *take_reply(struct rconn *rc)
{
	return checked_reply(rc, rconn_get(rc));
}

redisReply *rconn_cmd(struct rconn *rc, int argc, const char **argv, const size_t *lens)
{
	if (rconn_append(rc, argc, argv, lens))
		return NULL;
	return take_reply(rc);
}

redisReply *rconn_cmdf(struct rconn *rc, const char *fmt, ...)
{
	if (rc->fd < 0 && !rc->out.len && rconn_connect(rc))
		return NULL;
	va_list ap;
	va_start(ap, fmt);
	char *cmd = NULL;
	int len = redisvFormatCommand(&cmd, fmt, ap);
	va_end(ap);
	if (len < 0 || !cmd) {
		set_err(rc, RCONN_EREPLY, "redis: bad command format");
		return NULL;
	}
	sb_add(&rc->out, cmd, (size_t)len);
	redisFreeCommand(cmd);
	rc->queued++;
	return take_reply(rc);
}

int rconn_append_evalsha(struct rconn *rc, size_t idx, int argc, const char **argv,
			 const size_t *lens)
{
	if (rc->fd < 0 && !rc->out.len) {
		int code = rconn_connect(rc);
		if (code)
			return code;
	}
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
		rconn_free(r);
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
	return checked_reply(rc, r);
}

int rconn_check_master(struct rconn *rc, int64_t *latency_ms, char *why, size_t whylen)
{
	int64_t t0 = mono_ms();
	redisReply *r = rconn_cmdf(rc, "HELLO 2");
	if (latency_ms)
		*latency_ms = mono_ms() - t0;
	if (!r) {
		snprintf(why, whylen, "%s", rc->errstr[0] ? rc->errstr : "redis: unreachable");
		return -1;
	}
	const char *role = hello_field(r, "role");
	int ok = role && !strcmp(role, "master");
	if (!ok) {
		snprintf(why, whylen, "redis %s:%d: connected to a replica (role %s), not a writable master",
			 rc->host, rc->port, role ? role : "unknown");
		rconn_drop(rc, NULL);   /* next time: connect (and discover) again */
	}
	rconn_free(r);
	return ok ? 0 : -1;
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
	rargv_addcopy(a, buf, i64_dec(buf, v));
}

void rargv_finish(struct rargv *a)
{
	for (size_t i = 0; i < a->n; i++)
		a->argv[i] = a->off[i] == OFF_EXT ? a->ext[i] : a->arena.buf + a->off[i];
}
