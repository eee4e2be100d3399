/* rentry.h -- the Redis key names and the run entry format (version 1).
 *
 * Shared by the queue transport (queue_redis.c), which writes and claims
 * entries, and the history writer (history.c), which reads the same entries
 * to record queued runs.  docs/protocol.md is the reference for other
 * services that enqueue with a plain XADD.
 *
 * A run entry of the stream RENTRY_RUNS is a flat list of string fields:
 *   v=1 type=run id=<run id> job=<name> [org=<id>] [payload=<JSON>]
 *   [src=adhoc|cycle|fanout|retry] [attempt=<attempts already made>]
 *   [max=<max attempts>] [enq=<ms epoch>] [idem=<idempotency key>]
 *   [runat=<ms epoch: not before>]  (a delayed run: the consumer that reads
 *   it early moves it to RENTRY_DELAYED until then)
 * A tick: v=1 type=tick slot=<N> [enq=<ms epoch>].
 * Required: v, type, and id+job (run) or slot (tick); the rest has defaults.
 */
#ifndef JOBRUNNER_COMMON_RENTRY_H
#define JOBRUNNER_COMMON_RENTRY_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "rconn.h"
#include "run.h"

/* Every key starts with this prefix (it could become configurable). */
#define RENTRY_PREFIX "jr:"
#define RENTRY_RUNS RENTRY_PREFIX "runs"          /* stream of runs and ticks */
#define RENTRY_EVENTS RENTRY_PREFIX "events"      /* stream of finished attempts */
#define RENTRY_DELAYED RENTRY_PREFIX "delayed"    /* ZSET: score due ms, member JSON */
#define RENTRY_GROUP RENTRY_PREFIX "workers"      /* consumers' group on RENTRY_RUNS */
#define RENTRY_HISTORY_GROUP RENTRY_PREFIX "history"  /* on RENTRY_RUNS and RENTRY_EVENTS */
#define RENTRY_TICK_KEY RENTRY_PREFIX "tick:"     /* + slot */
#define RENTRY_TICK_LAST RENTRY_PREFIX "tick:last"  /* stream id of the newest tick */
#define RENTRY_IDEM_KEY RENTRY_PREFIX "idem:"     /* + job ":" key */
#define RENTRY_DEAD_COUNT RENTRY_PREFIX "stats:dead"  /* counter of dead runs */
#define RENTRY_GEN RENTRY_PREFIX "gen"            /* generation marker (history.c) */
#define RENTRY_CANCEL RENTRY_PREFIX "cancel"      /* ZSET: run ids asked to cancel, score = ms */
#define RENTRY_RATE RENTRY_PREFIX "rate:"         /* + scope ":" org: ZSET of recent starts */
#define RENTRY_RATE_HINT RENTRY_PREFIX "ratehint:"  /* + scope ":" org: next wake-up ms */
#define RENTRY_LANE RENTRY_PREFIX "lane:"         /* + "o:" org, or "-": LIST of a group's waiting runs */
#define RENTRY_LANES RENTRY_PREFIX "lanes"        /* LIST: the lanes with runs, in turn order */
#define RENTRY_FAIR RENTRY_PREFIX "fair"          /* HASH: fair.lua's state (cursor, group, n, on) */
#define RENTRY_FAIRER RENTRY_PREFIX "mover"       /* the consumer name fair.lua moves runs as (within the script) */

#define RENTRY_VERSION "1"
#define RENTRY_MAX_PAYLOAD (1024 * 1024)
#define RENTRY_MAX_ATTEMPTS 1000

/* Appends the fields of run r (type=run, attempt as given) to a.  The
 * strings of r are referenced, not copied: r must outlive the use of a. */
void rentry_add_fields(struct rargv *a, const struct run *r, int attempt);

/* Appends r as the JSON object stored as a member of RENTRY_DELAYED (every
 * value a JSON string), with attempt and src as given. */
void rentry_delayed_json(struct strbuf *sb, const struct run *r, int attempt);

/* Parses a stream entry's field array (as XREADGROUP returns it) into r:
 * owned strings (release with run_clear), attempt = the entry's attempt
 * field (attempts already made), is_tick and *slot for ticks.  entry_id is
 * the stream id (used for enq when the field is absent).
 * Returns 0, or -1 with the reason in err; on failure r still holds what
 * could be read (id or "", job or NULL) for the dead record. */
int rentry_parse(const redisReply *fields, const char *entry_id, int default_max_attempts,
		 struct run *r, int64_t *slot, char *err, size_t errlen);

/* Creates the consumer groups of both streams (RENTRY_GROUP and
 * RENTRY_HISTORY_GROUP on RENTRY_RUNS, RENTRY_HISTORY_GROUP on
 * RENTRY_EVENTS) from the stream's start ("0") with MKSTREAM, pipelined; a group that exists
 * (BUSYGROUP) is fine.  The one place the groups are made: the queue
 * transport and the history writer call it after every (re)connect, since
 * a Redis without persistence comes back empty.  Connects if needed.
 * 0, or an RCONN_E* code with the reason in rc->errstr. */
/* 1 when an entry's fields carry `lane` (fed back from a lane by fair.lua:
 * the history writer recorded its run when it read the original). */
int rentry_is_fed(const redisReply *fields);

int rentry_create_groups(struct rconn *rc);

/* Milliseconds part of a stream id ("1700000000000-3"), or 0. */
int64_t rentry_id_ms(const char *id);

/* 1 if s[0..len) is a payload: one JSON object, at most RENTRY_MAX_PAYLOAD
 * bytes, meeting json_check() with JSON_MAX_DEPTH (the same rule as the
 * API's); else 0 with the reason in err (may be NULL). */
int rentry_json_valid(const char *s, size_t len, char *err, size_t errlen);

#endif
