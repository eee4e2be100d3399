/* revent.h -- the jr:events wire format, encoder and decoder side by side.
 *
 * A jr:events entry (RENTRY_EVENTS) is written by the completion script
 * (common/lua/complete.lua) with the fields v=1 n=<count> e=<JSON array>,
 * one array element per event: a run's state after an attempt, or
 * "running" once it has run a while.  The consumers encode the events
 * (queue_redis.c, revent_encode()); the history writer decodes them into
 * job_runs rows (history.c, revent_decode()).  docs/protocol.md is the
 * reference for other readers.
 *
 * An event is a JSON object: id, job, [org], [payload (a JSON object)], src,
 * status, attempt, max, enq, [started], [finished, duration], [runat],
 * [error], [idem], consumer.
 *
 * The decoder takes whatever is in Redis as hostile: each event is decoded
 * on its own and every field is checked as the run entry parser checks it
 * (rentry.h, jsoncheck.h).  A bad field is left out; a bad id or status
 * leaves the event out; neither touches another event.
 */
#ifndef JOBRUNNER_COMMON_REVENT_H
#define JOBRUNNER_COMMON_REVENT_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "run.h"

struct strbuf;

struct revent {
	char id[RUN_ID_LEN + 1];
	/* encode: borrowed; decode: owned (free() each, or move them out) */
	char *job, *org, *payload, *error, *consumer, *idem;
	const char *src, *status;  /* names (run.h); decode: static strings */
	int attempt, max;
	int64_t runat, enq, started, finished, duration;   /* -1: absent */
};

/* Appends ev as one JSON object (an element of the `e` array).  The payload,
 * when present, goes in as a JSON value only if rentry_json_valid() accepts
 * it (it cannot end the event early); the error is cleaned to valid UTF-8
 * of at most RUN_MAX_ERROR_LEN bytes.  Aborts when out of memory. */
void revent_encode(struct strbuf *sb, const struct revent *ev);

/* Frees a decoded event's strings and zeroes it. */
void revent_clear(struct revent *ev);

/* Called with each event decoded from an entry; ev's strings are the
 * callee's (free them with revent_clear(), or keep them). */
typedef void (*revent_fn)(struct revent *ev, void *arg);

/* Decodes the entry's field array (as XREADGROUP returns it): fn for each
 * event that names a run.  Returns how many; *bad (not reset) counts what
 * could not be decoded: events left out, or 1 for an entry whose `e` is not
 * a JSON array (only a foreign writer of jr:events makes one). */
size_t revent_decode(const redisReply *fields, revent_fn fn, void *arg, size_t *bad);

#endif
