/* meta_conn.h -- what the two Meta jobs share: the meta_connections rows
 * they read, the re-auth transition, and how several orgs' outcomes in one
 * run add up to one run result.
 *
 * Outcome of a run over several orgs (meta_conn_tally_finish): any
 * throttled or transient org -> RUN_RETRY (the retry repeats the whole
 * run, which is idempotent: upserts and fenced token updates), waiting the
 * longest time Meta asked for; else any auth or permanent failure ->
 * RUN_FAIL; else RUN_OK.  Orgs are independent: one org's failure never
 * stops the others.
 */
#ifndef JOBRUNNER_COMMON_JOBS_META_CONN_H
#define JOBRUNNER_COMMON_JOBS_META_CONN_H

#include <stdint.h>

#include "graph.h"
#include "run.h"

struct db;

/* Sets the connection to needs_reauth with last_error = message, but only
 * while it is still active with the token that failed (a concurrent token
 * refresh wins).  0 or -1 (db->errstr). */
int meta_conn_mark_reauth(struct db *db, const char *org_id, const char *access_token,
			  const char *message);

struct meta_tally {
	int orgs, ok, skipped, auth, throttled, transient, permanent;
	int64_t retry_after_ms;                 /* max over throttled orgs */
	char first_org[RUN_MAX_ORG_LEN + 1];
	char first_error[RUN_MAX_ERROR_LEN + 1];
};

/* Counts one org's outcome; message (no secrets) is kept for the first failure. */
void meta_conn_tally(struct meta_tally *t, const char *org_id, enum graph_kind kind,
		     int64_t retry_after_ms, const char *message);
/* The run's result from the tally (see above).  The error names the failed
 * org unless the run was for that one org (named_org: the worker's log
 * line carries it already). */
/* Tallies the failed (or OK) Graph answer res for org_id; on code 190 also
 * marks the connection needs_reauth (meta_conn_mark_reauth), and counts a
 * failure to record that as transient so that a retry records it. */
void meta_conn_tally_result(struct meta_tally *t, struct db *db, const char *org_id,
			    const char *access_token, const struct graph_result *res);
void meta_conn_tally_finish(const struct meta_tally *t, int named_org, struct run_result *out);

#endif
