/* queue_redis.h -- the Redis Streams transport: what it offers beyond
 * queue.h (ticks, start-up checks, health).  queue_redis_open() is declared
 * in queue.h; the design is described at the top of queue_redis.c and the
 * wire format in docs/protocol.md.
 *
 * Every function here takes a struct queue opened by queue_redis_open()
 * (ops->backend == "redis") and returns 0 or a negative QUEUE_E* code with
 * a message in q->errstr, like the queue_ops.
 *
 * Consumer names: the threads of one process may share a name (CONSUMER_NAME)
 * or use one each.  Names should be stable across restarts: the first claims
 * of a restarted process take back, at once, the entries that its previous
 * incarnation had claimed under the same name (last delivered before this
 * process started), instead of waiting for their leases to expire.  Two
 * live processes must never share a name.
 */
#ifndef JOBRUNNER_COMMON_QUEUE_REDIS_H
#define JOBRUNNER_COMMON_QUEUE_REDIS_H

#include <stddef.h>
#include <hiredis/hiredis.h>
#include <stdint.h>

#include "queue.h"

/* With REDIS_MIN_REPLICAS_ACK >= 1, an enqueue waits this long (WAIT) for
 * the replicas; fewer confirmations answer QUEUE_EUNKNOWN (the runs are on
 * the master, so falling back to PostgreSQL could queue them twice). */
#define QUEUE_REDIS_WAIT_MS 2000

/* The tick slot of a wall-clock time: floor(now_ms / interval_ms). */
int64_t queue_redis_slot(int64_t now_ms, int64_t interval_ms);

/* Adds the tick of `slot` unless some producer already did: *added is 1 for
 * the one caller (across all producer replicas) that added it, else 0.  The
 * dedupe key lives for two intervals (cfg->job_runner_interval_ms). */
int queue_redis_tick(struct queue *q, int64_t slot, int *added);

/* Reads CONFIG GET maxmemory-policy into policy (e.g. "noeviction") and sets
 * *noeviction.  Any other policy can evict queued runs: the caller warns
 * loudly.  QUEUE_EINTERNAL when the server refuses CONFIG (managed Redis). */
int queue_redis_check_policy(struct queue *q, char *policy, size_t policylen, int *noeviction);

/* The org rate limiter (common/lua/rate.lua): counts one start of run id
 * under key (scope and org, see orglimit_rate_key()) when fewer than n
 * started in the last period_ms: *wait_ms 0; else *wait_ms is how long the
 * run should wait (nothing counted). */
int queue_redis_rate(struct queue *q, const char *key, int64_t n, int64_t period_ms, const char *id,
		     int64_t *wait_ms);

/* One PING round trip and its latency (health checks). */
int queue_redis_ping(struct queue *q, int64_t *latency_ms);

/* Runs the periodic housekeeping now instead of at its next due time (the
 * claim path runs it on its own): moves due delayed runs into the stream,
 * trims the streams (never past an entry that is pending or undelivered in
 * any group) and removes consumers that are idle for idle_consumer_ms with
 * nothing pending (0: the default, max(10 leases, 10 minutes)).
 * *moved and *trimmed (may be NULL) receive what was done. */
int queue_redis_maintain(struct queue *q, int64_t idle_consumer_ms, int64_t *moved, int64_t *trimmed);

/* Adds (on) or removes (!on) the cancel request of run id in jr:cancel
 * (docs/protocol.md).  A consumer never starts a run with a request, stops
 * one that is running, and records it cancelled (whatever it ended with).
 * On adding: *held (may be NULL) is 1 when a consumer holds the run at
 * that moment (it may be running), *added (may be NULL) is 0 when there
 * was a request already; then it waits up to history_wait_ms for
 * the history writer to write what happened before the request, so that
 * job_runs tells whether the run had already finished. */
int queue_redis_cancel_request(struct queue *q, const char *id, int on, int *held, int *added,
				int64_t history_wait_ms);

/* What Redis holds of run id (common/lua/lookup.lua, read-only): its
 * newest entry in jr:runs and that entry's state in the workers' group,
 * the newest jr:events entry that names it, and the lane or jr:delayed
 * member it waits in, each with whether the bounded read was complete
 * (the script's header comment describes the reply).  id_ms: the run's
 * creation time (a UUIDv7's), or 0 when the id tells none.  A stream is
 * read in three parts (forward from the id's time, backward from the end,
 * and the QUEUE_REDIS_LOOKUP_SKEW_MS before the id's time), each at most
 * QUEUE_REDIS_LOOKUP_ENTRIES (_EVENTS) entries and about
 * QUEUE_REDIS_LOOKUP_BYTES bytes of their values; the lanes (at most
 * QUEUE_REDIS_LOOKUP_LANES) and jr:delayed, at most
 * QUEUE_REDIS_LOOKUP_MEMBERS members and about QUEUE_REDIS_LOOKUP_BYTES
 * bytes in all.  expect (NULL: none): the entry id that
 * members[0..nmembers) are candidate jr:delayed members of (looked up
 * exactly when that entry is still the run's newest).  *out: the
 * 13-element reply (the caller frees it with rconn_free()).
 * common/runlookup.c tells the run's state from it. */
#define QUEUE_REDIS_LOOKUP_SKEW_MS 5000
#define QUEUE_REDIS_LOOKUP_ENTRIES 400
#define QUEUE_REDIS_LOOKUP_EVENTS 100
#define QUEUE_REDIS_LOOKUP_BYTES (256 * 1024)
#define QUEUE_REDIS_LOOKUP_MEMBERS 2000
#define QUEUE_REDIS_LOOKUP_LANES 32
struct strbuf;
int queue_redis_lookup(struct queue *q, const char *id, int64_t id_ms, const char *expect,
		       const struct strbuf *members, size_t nmembers, redisReply **out);

/* Housekeeping shared by the handles of one process: promote, trim,
 * consumer GC and the lease-expiry scan (XAUTOCLAIM) run once per interval
 * for all handles attached to the same queue_redis_shared, by whichever of
 * them claims when it is due, instead of once per handle.  The run threads
 * of a consumer share one (worker.c); a handle without one does its own.
 * The shared state must outlive the handles attached to it. */
struct queue_redis_shared;
struct queue_redis_shared *queue_redis_shared_new(void);
void queue_redis_shared_free(struct queue_redis_shared *s);
void queue_redis_share(struct queue *q, struct queue_redis_shared *s);

/* Starts a new "incarnation" for the restart rule above, as if the process
 * had just started (tests; a process that re-initialises itself). */
void queue_redis_reset_epoch(void);

#endif
