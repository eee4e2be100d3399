/* runlookup.h -- GET /runs/{id} of a run that job_runs has no row of,
 * answered from Redis (JOB_HISTORY=failures, Redis mode).
 *
 * With JOB_HISTORY=failures a run gets a row only once an attempt of it
 * failed, went dead or was cancelled: a run still queued or running, and a
 * run that succeeded at its first attempt, have none (and the success not
 * even a jr:events event).  What Redis still holds of such a run tells its
 * state for a while: its entry in jr:runs until the trim passes it (both
 * groups must have passed it first), a lane or jr:delayed member while it
 * waits, an event until the history writer has recorded it.
 * queue_redis_lookup() (common/lua/lookup.lua) reads that in one bounded,
 * read-only script; runlookup() decides:
 *
 *   newest entry after the workers' last delivered id   queued (delayed if
 *                                                       its runat is ahead)
 *   newest entry pending in the workers' group          running
 *   an event at or after the newest entry (not running) that event's state
 *   a lane member / a jr:delayed member                 queued / delayed
 *   newest entry acknowledged, none of the above, and   succeeded
 *   every read complete
 *   nothing found, every read complete                  RUNLOOKUP_GONE
 *   otherwise                                           RUNLOOKUP_UNSURE
 *
 * Why an acknowledged entry without an event is a success: every other end
 * of an attempt (failed, dead, cancelled) puts an event into jr:events in
 * the same script as the XACK (complete.lua), and the history writer
 * acknowledges an event (and the trim then drops it) only after its row is
 * committed: so the caller reads job_runs again after this lookup, and a
 * row found then wins (it may have been written between the first read
 * and the script).  A deferral or a delayed run parked as read puts a
 * jr:delayed member in that script (a deferral's event leaves no row:
 * queued rows are not written), and fair.lua's move acknowledges the
 * original in the script that pushes it to its lane: so for such an entry
 * the script runs again with the exact jr:delayed members the consumer
 * would have made of it (ZMSCORE, atomically with the rest), and its lane
 * is searched.  Where the bounded reads cannot rule these out, the answer
 * is RUNLOOKUP_UNSURE, never a guess.
 *
 * No added cost per run: only this GET pays for the lookup.
 */
#ifndef JOBRUNNER_COMMON_RUNLOOKUP_H
#define JOBRUNNER_COMMON_RUNLOOKUP_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "queue.h"

enum runlookup_result {
	RUNLOOKUP_FOUND,    /* *out: the run object */
	RUNLOOKUP_GONE,     /* nothing of it in Redis (every read complete) */
	RUNLOOKUP_UNSURE,   /* not found within the lookup's bounds */
};

/* The creation time of a UUIDv7 run id (its first 48 bits), or 0 for an
 * id that is not one (an id given by another service's XADD). */
int64_t runlookup_id_ms(const char *id);

/* Looks run id up in Redis (rq: a Redis queue handle).  On FOUND, *out is
 * the API's run object (the keys of control_run_json(); what Redis cannot
 * tell is null) with "recorded": false.  Returns 0, or a QUEUE_E* code
 * (Redis unreachable or refusing) with the reason in rq->errstr. */
int runlookup(struct queue *rq, const char *id, enum runlookup_result *res, cJSON **out);

#endif
