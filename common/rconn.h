/* rconn.h -- one Redis connection: URL (plain, TLS, Sentinel), timeouts,
 * reconnect with backoff, Lua scripts, binary-safe argument vectors.
 *
 * Transport: hiredis 0.14 (Debian 12) has no TLS, so rconn keeps only
 * hiredis's protocol parts -- the command formatter
 * (redisFormatCommandArgv) and the reply reader (redisReader) -- and moves
 * the bytes itself over a TCP socket or an OpenSSL connection
 * (docs/architecture.md, "Redis connections").  Replies are hiredis
 * redisReply objects, but each reply's objects and strings live in a few
 * blocks of its own (an arena; rconn_free() frees them at once): a claim
 * of 128 runs was 5,000 mallocs and as many frees, about a third of a
 * consumer's CPU.  Free them with rconn_free(), never freeReplyObject().
 *
 * A struct rconn carries err/errstr like a hiredis context.  After an I/O
 * error the connection is closed at once and the next call connects
 * again, no sooner than the backoff allows (100 ms doubling to 5 s): a dead
 * connection is never reused, and while Redis is down calls fail fast with
 * RCONN_EDOWN instead of waiting on connect timeouts.
 *
 * Handshake of every connection, one round trip: AUTH [user] password,
 * HELLO 2 SETNAME name (the name: rconn_set_name), SELECT db, SCRIPT EXISTS
 * of the scripts (and SCRIPT LOAD of those the server lacks).  HELLO answers the node's role and mode: a replica is
 * refused (RCONN_EDOWN: it cannot take writes; with Sentinel the next try
 * asks the sentinels again), a Redis Cluster node is refused for good
 * (RCONN_EREFUSED).  Wrong credentials and missing permissions are
 * RCONN_EREFUSED too: start-up stops on them (exit 3) instead of running
 * degraded.
 *
 * Sentinel (redis[s]-sentinel://s1,s2,s3/db#master): the master's address
 * is asked of the sentinels in turn (SENTINEL get-master-addr-by-name,
 * authenticated with rconn_setup()'s sentinel password), and asked again
 * on every reconnect.  A connection is dropped -- so the next call
 * re-discovers -- on an I/O error, on a READONLY reply (the node was
 * demoted), and when the sentinels announced +switch-master since it was
 * made (one thread per process stays subscribed to it).  Sentinel also
 * closes the clients of a node it reconfigures.
 *
 * Stale connections: a command that cannot have reached Redis -- the
 * pooled connection was found closed (or holding unexpected bytes) before
 * sending, or the write failed before any byte went out -- is sent once
 * more on a fresh connection.  Only a command whose bytes were sent and
 * whose reply was lost is RCONN_ELOST ("outcome unknown").  Sockets have
 * TCP keepalive (15 s idle, 5 s interval, 3 probes).
 *
 * Timeouts: connect (and TLS handshake) RCONN_CONNECT_TIMEOUT_MS, then
 * every command RCONN_CMD_TIMEOUT_MS (socket send/receive timeout).  A
 * blocking command (XREADGROUP BLOCK) must block for less than that:
 * RCONN_MAX_BLOCK_MS.
 *
 * Scripts: the caller gives rconn_init() a table of Lua sources with their
 * SHA1s; each new connection asks SCRIPT EXISTS and loads (SCRIPT LOAD,
 * pipelined) only those the server lacks, and rconn_eval() sends
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

#include "url.h"
#include "util.h"

#define RCONN_CONNECT_TIMEOUT_MS 1500
#define RCONN_CMD_TIMEOUT_MS 4000
#define RCONN_MAX_BLOCK_MS 2000
#define RCONN_MAX_SCRIPTS 16

enum {
	RCONN_OK = 0,
	RCONN_EDOWN = -1,    /* not connected / nothing sent / server loading or read-only */
	RCONN_ELOST = -2,    /* the command was sent and its reply lost: applied or not? */
	RCONN_EREPLY = -3,   /* the server answered with an error reply */
	RCONN_EREFUSED = -4, /* the server answered but refuses us: credentials,
				permissions, TLS verification, Redis Cluster */
};

/* Process-wide settings (the REDIS_TLS_* variables and
 * REDIS_SENTINEL_PASSWORD); strings are copied. */
struct rconn_settings {
	const char *tls_ca_file;       /* NULL: the system's CA store */
	const char *tls_cert_file;     /* client certificate (with tls_key_file) */
	const char *tls_key_file;
	const char *tls_server_name;   /* SNI and verified name; NULL: the host */
	const char *sentinel_password;
};

/* Applies settings for every rconn of the process and, when tls is set,
 * loads the TLS files now.  0, or -1 with a message naming the variable
 * in err (a file that cannot be read or a key that does not match the
 * certificate).  Without a call, TLS uses the system's CA store. */
int rconn_setup(const struct rconn_settings *s, int tls, char *err, size_t errlen);

struct rscript {
	const char *name;    /* for messages */
	const char *src;     /* Lua source */
	const char *sha;     /* its SHA1 in hex (the build's), or NULL */
};

struct rconn {
	int fd;                  /* -1 while disconnected */
	void *ssl;               /* SSL *, NULL on plain TCP */
	void *reader;            /* redisReader * of the current connection */
	struct strbuf out;       /* commands formatted, not written yet */
	int queued;              /* replies expected for the commands in out */
	int inflight;            /* replies expected for commands written */
	struct url url;          /* parsed REDIS_URL */
	char *host;              /* owned: the node connected to, or to connect to */
	int port;
	char *user;              /* owned, may be NULL (AUTH with password only) */
	char *password;          /* owned, may be NULL; never put in errstr */
	int db;
	char *name;              /* CLIENT SETNAME, may be NULL */
	size_t sentinel_next;    /* the sentinel asked first next time */
	const struct rscript *scripts;   /* not owned (static tables) */
	size_t nscripts;
	char sha[RCONN_MAX_SCRIPTS][41];
	char role[16];           /* HELLO's role of the connected node */
	uint64_t epoch;          /* +switch-master messages seen at the last connect attempt */
	int64_t next_try_ms;     /* mono_ms() before which we do not reconnect */
	int64_t backoff_ms;
	uint64_t connects;       /* successful connects, including the first */
	uint64_t resends;        /* commands sent again on a fresh connection */
	int err;                 /* RCONN_E* of the last failure, 0 after success */
	char errstr[256];
};

/* Parses url (see url.h: redis[s]://, redis[s]-sentinel://) and prepares
 * rc; no I/O.  0, or -1 with a message (without the password) in err. */
int rconn_init(struct rconn *rc, const char *url, const struct rscript *scripts, size_t nscripts,
	       char *err, size_t errlen);
/* Names the connections (CLIENT SETNAME): "jobrunner:<role>:<who>". */
void rconn_set_name(struct rconn *rc, const char *role, const char *who);
/* fn is called (on the reconnecting thread) after every successful
 * reconnect of any struct rconn (a connect after its first): how the
 * application counts reconnects without this file knowing its metrics.
 * Set once at start-up. */
void rconn_on_reconnect(void (*fn)(void));
/* Closes the connection and frees everything rc owns. */
void rconn_release(struct rconn *rc);

/* Connects (discovery, TLS, HELLO, SELECT, SCRIPT EXISTS/LOAD) unless connected.
 * Respects the reconnect backoff: returns RCONN_EDOWN at once while it
 * runs.  RCONN_EREFUSED when the server refused us (see above). */
int rconn_connect(struct rconn *rc);
/* Drops the connection (after an error); the next call reconnects. */
void rconn_drop(struct rconn *rc, const char *why);

/* One command.  Returns the reply (caller frees with rconn_free) or
 * NULL with rc->err set.  An error reply is returned as NULL too, with
 * RCONN_EREPLY and its text in errstr (LOADING, READONLY, MASTERDOWN and
 * OOM are reported as RCONN_EDOWN). */
/* Frees a reply of this file (a whole reply, not one of its elements);
 * NULL is ignored. */
void rconn_free(redisReply *r);
/* A hiredis reader (redisReader *) that builds replies as rconn does: for
 * tests.  Free it with redisReaderFree(), its replies with rconn_free(). */
void *rconn_reader_new(void);

redisReply *rconn_cmd(struct rconn *rc, int argc, const char **argv, const size_t *lens);
/* printf-style convenience for commands without binary arguments. */
redisReply *rconn_cmdf(struct rconn *rc, const char *fmt, ...);
/* EVALSHA of script idx with NOSCRIPT fallback.  argv holds numkeys, the
 * keys and the arguments (everything after the sha).  Same return as
 * rconn_cmd. */
redisReply *rconn_eval(struct rconn *rc, size_t idx, int argc, const char **argv, const size_t *lens);

/* Pipelining: append commands, then read one reply per command in order.
 * rconn_append*() connect if needed and buffer (0 or RCONN_EDOWN /
 * RCONN_EREFUSED); the first rconn_get() writes them.  rconn_get() returns
 * like rconn_cmd() except that an error reply is returned as a reply
 * object (the caller checks type == REDIS_REPLY_ERROR), so the pipeline
 * stays in step; NULL with RCONN_EDOWN when nothing was sent, RCONN_ELOST
 * when the commands went out and the connection failed. */
int rconn_append(struct rconn *rc, int argc, const char **argv, const size_t *lens);
int rconn_append_evalsha(struct rconn *rc, size_t idx, int argc, const char **argv,
			 const size_t *lens);
redisReply *rconn_get(struct rconn *rc);

/* Classifies an error reply: RCONN_EDOWN for LOADING/READONLY/MASTERDOWN/
 * OOM/BUSY (READONLY also drops the connection: the node was demoted),
 * RCONN_EREFUSED for NOPERM/NOAUTH/WRONGPASS, else RCONN_EREPLY; copies
 * its text to errstr. */
int rconn_reply_error(struct rconn *rc, const redisReply *r);
/* 1 if r is an error reply whose text starts with prefix (e.g. "NOSCRIPT"). */
int rconn_is_error(const redisReply *r, const char *prefix);

/* The health check of a Redis connection: connects if needed and asks the
 * node's role (HELLO, one round trip, allowed to every ACL user).  0 when
 * it is a master (writable); -1 with the reason in why ("connected to a
 * replica", the connection error).  *latency_ms (may be NULL) is the time
 * taken. */
int rconn_check_master(struct rconn *rc, int64_t *latency_ms, char *why, size_t whylen);

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
