/* rconn.h -- one Redis connection on hiredis 0.14: URL, timeouts, reconnect
 * with backoff, Lua scripts, binary-safe argument vectors.
 *
 * A struct rconn carries err/errstr like a hiredis context.  After an I/O
 * error (the hiredis context has err set) the context is freed at once and
 * the next call connects again, no sooner than the backoff allows (100 ms
 * doubling to 5 s): a dead context is never reused, and while Redis is down
 * calls fail fast with RCONN_EDOWN instead of waiting on connect timeouts.
 *
 * Timeouts: connect RCONN_CONNECT_TIMEOUT_MS, then every command
 * RCONN_CMD_TIMEOUT_MS (socket send/receive timeout).  A blocking command
 * (XREADGROUP BLOCK) must block for less than that: RCONN_MAX_BLOCK_MS.
 *
 * Scripts: the caller gives rconn_init() a table of Lua sources; each new
 * connection loads them (SCRIPT LOAD, pipelined) and rconn_eval() sends
 * EVALSHA, falling back to EVAL when the server answers NOSCRIPT (after a
 * SCRIPT FLUSH or a failover to a replica that never saw them).
 *
 * A struct rconn is used by one thread at a time.  Helpers here never log.
 */
#ifndef JOBRUNNER_COMMON_RCONN_H
#define JOBRUNNER_COMMON_RCONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define RCONN_CONNECT_TIMEOUT_MS 1500
#define RCONN_CMD_TIMEOUT_MS 4000
#define RCONN_MAX_BLOCK_MS 2000
#define RCONN_MAX_SCRIPTS 16

enum {
	RCONN_OK = 0,
	RCONN_EDOWN = -1,    /* not connected / I/O error / server loading or read-only */
	RCONN_EREPLY = -3,   /* the server answered with an error reply */
};

struct rscript {
	const char *name;    /* for messages */
	const char *src;     /* Lua source */
};

struct rconn {
	redisContext *c;         /* NULL while disconnected */
	char *host;              /* owned */
	int port;
	char *user;              /* owned, may be NULL (AUTH with password only) */
	char *password;          /* owned, may be NULL; never put in errstr */
	int db;
	const struct rscript *scripts;   /* not owned (static tables) */
	size_t nscripts;
	char sha[RCONN_MAX_SCRIPTS][41];
	int64_t next_try_ms;     /* mono_ms() before which we do not reconnect */
	int64_t backoff_ms;
	uint64_t connects;       /* successful connects, including the first */
	int err;                 /* RCONN_E* of the last failure, 0 after success */
	char errstr[256];
};

/* Parses url (redis://[[user]:password@]host[:port][/db]) and prepares rc;
 * no I/O.  0, or -1 with a message (without the password) in err. */
int rconn_init(struct rconn *rc, const char *url, const struct rscript *scripts, size_t nscripts,
	       char *err, size_t errlen);
/* fn is called (on the reconnecting thread) after every successful
 * reconnect of any struct rconn (a connect after its first): how the
 * application counts reconnects without this file knowing its metrics.
 * Set once at start-up. */
void rconn_on_reconnect(void (*fn)(void));
/* Closes the connection and frees everything rc owns. */
void rconn_release(struct rconn *rc);

/* Connects (AUTH, SELECT, SCRIPT LOAD) unless connected.  Respects the
 * reconnect backoff: returns RCONN_EDOWN at once while it runs. */
int rconn_connect(struct rconn *rc);
/* Drops the connection (after an error); the next call reconnects. */
void rconn_drop(struct rconn *rc, const char *why);

/* One command.  Returns the reply (caller frees with freeReplyObject) or
 * NULL with rc->err set.  An error reply is returned as NULL too, with
 * RCONN_EREPLY and its text in errstr (LOADING, READONLY, MASTERDOWN and
 * OOM are reported as RCONN_EDOWN). */
redisReply *rconn_cmd(struct rconn *rc, int argc, const char **argv, const size_t *lens);
/* printf-style convenience for commands without binary arguments. */
redisReply *rconn_cmdf(struct rconn *rc, const char *fmt, ...);
/* EVALSHA of script idx with NOSCRIPT fallback.  argv holds numkeys, the
 * keys and the arguments (everything after the sha).  Same return as
 * rconn_cmd. */
redisReply *rconn_eval(struct rconn *rc, size_t idx, int argc, const char **argv, const size_t *lens);

/* Pipelining: append commands, then read one reply per command in order.
 * rconn_append*() return 0 or RCONN_EDOWN; rconn_get() returns like
 * rconn_cmd() except that an error reply is returned as a reply object (the
 * caller checks type == REDIS_REPLY_ERROR), so the pipeline stays in step. */
int rconn_append(struct rconn *rc, int argc, const char **argv, const size_t *lens);
int rconn_append_evalsha(struct rconn *rc, size_t idx, int argc, const char **argv,
			 const size_t *lens);
redisReply *rconn_get(struct rconn *rc);

/* Classifies an error reply: RCONN_EDOWN for LOADING/READONLY/MASTERDOWN/
 * OOM/BUSY, else RCONN_EREPLY; copies its text to errstr. */
int rconn_reply_error(struct rconn *rc, const redisReply *r);
/* 1 if r is an error reply whose text starts with prefix (e.g. "NOSCRIPT"). */
int rconn_is_error(const redisReply *r, const char *prefix);

/* ---- argument vectors: strings by reference or copied into an arena ---- */

struct rargv {
	const char **argv;       /* valid after rargv_finish() */
	size_t *lens;
	size_t n, cap;
	/* items: either an external pointer or an offset into arena */
	const char **ext;
	size_t *off;
	struct strbuf arena;
};

void rargv_reset(struct rargv *a);     /* empties, keeps memory */
void rargv_release(struct rargv *a);
/* s must outlive the rargv's use (not copied). */
void rargv_addref(struct rargv *a, const char *s, size_t len);
void rargv_addrefs(struct rargv *a, const char *s);
/* Copied into the arena. */
void rargv_addcopy(struct rargv *a, const char *s, size_t len);
void rargv_addi64(struct rargv *a, int64_t v);
/* Resolves arena offsets: call before passing argv/lens (and after the last
 * add; adding more afterwards needs another finish). */
void rargv_finish(struct rargv *a);

#endif
