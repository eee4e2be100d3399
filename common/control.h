/* control.h -- operator control shared by the HTTP API (producer/routes.c)
 * and the CLI (`producer runs ...`, `producer pause|resume`): pausing jobs,
 * searching runs, and a run's JSON form.  The transitions themselves
 * (cancel, dead → queued) are in the queue layer (queue.h, queue_ctl.c).
 *
 * Pause: job_pause (PostgreSQL, 003_control.sql) is the truth.  Each
 * process keeps a copy refreshed every CONTROL_PAUSE_REFRESH_MS by a
 * watcher thread (control_watch_start); the worker reads the copy before it
 * starts a run and hands a paused job's runs back without an attempt.  The
 * PostgreSQL claim reads job_pause itself, and cycles read it once each.
 */
#ifndef JOBRUNNER_COMMON_CONTROL_H
#define JOBRUNNER_COMMON_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <libpq-fe.h>

struct config;
struct db;
struct queue_retried;

#define CONTROL_PAUSE_REFRESH_MS 500
#define CONTROL_SEARCH_LIMIT_DEFAULT 50
#define CONTROL_SEARCH_LIMIT_MAX 500
/* Payload text in one list answer (the search, the dead list): past it the
 * runs carry "payload": null, "payloadOmitted": true. */
#define CONTROL_LIST_PAYLOAD_BYTES (4 * 1024 * 1024)

/* ---- pause ---- */

/* Pauses (on) or resumes (!on) job (a registry name: the caller checks).
 * Idempotent.  0 or -1 (db->errstr). */
int control_pause(struct db *db, const char *job, int on);
/* The paused jobs as a bit mask over registry_all()'s indexes (bit i: job
 * i).  0 or -1. */
int control_load_paused(struct db *db, uint64_t *mask);
/* From the watcher's copy (0 before the first load, or without a watcher). */
int control_paused(const char *job);
uint64_t control_paused_mask(void);
/* Starts the watcher (its own connection): the first load is made before
 * it returns, when the database answers.  Registers the Prometheus gauge
 * jobrunner_job_paused{job}.  Stop with control_watch_stop(). */
void control_watch_start(const struct config *cfg);
void control_watch_stop(void);

/* ---- JSON answers (API and CLI) ---- */

/* Adds SQL text value v as a string, or null. */
void control_json_str(cJSON *o, const char *key, const char *v);
/* Adds SQL text value v as a whole number, or null. */
void control_json_num(cJSON *o, const char *key, const char *v);
/* {"retried": n, "ids": [...]}: the answer of a dead-run retry. */
cJSON *control_retried_json(const struct queue_retried *ids, size_t n);

/* ---- search ---- */

/* The columns of a run as control_run_json() reads them ("delayed" for a
 * queued run due later). */
#define CONTROL_ISO(col) "to_char(" col " at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define CONTROL_RUN_COLUMNS \
	"id, job, org_id," \
	" case when status = 'queued' and run_at > now() then 'delayed' else status end," \
	" attempts, " CONTROL_ISO("enqueued_at") ", " CONTROL_ISO("started_at") ", " CONTROL_ISO("finished_at") "," \
	" duration_ms, error, consumer, max_attempts, source, payload::text, " CONTROL_ISO("run_at") "," \
	" " CONTROL_ISO("cancel_requested_at")
#define CONTROL_RUN_NCOLUMNS 16


struct control_search {
	const char *job, *org_id, *status;   /* NULL = any; status: a run status or "delayed" */
	int64_t since_ms, until_ms;          /* enqueued in [since, until); 0 = open */
	const char *after_id;                /* the cursor: runs after (older than) this one; NULL = from the newest */
	int64_t after_us;                    /* ... and its enqueued_at (microseconds) */
	int limit;                           /* 1..CONTROL_SEARCH_LIMIT_MAX */
};

/* Runs matching s, newest first (enqueued_at, then id), up to limit + 1
 * rows (one more than asked tells that there is a next page).  Columns:
 * CONTROL_RUN_COLUMNS and the cursor's time.  NULL with db->errstr on
 * failure. */
PGresult *control_search_runs(struct db *db, const struct control_search *s);
/* One run by id (0 or 1 row), CONTROL_RUN_COLUMNS. */
PGresult *control_get_run(struct db *db, const char *id);

/* A row of CONTROL_RUN_COLUMNS as the API's run object; the payload is
 * echoed from its text, never parsed; a NULL payload (left out of a list
 * for its size) gives "payload": null, "payloadOmitted": true. */
cJSON *control_run_json(const PGresult *r, int row);

/* Statuses a search accepts (the stored ones plus "delayed"): 1 or 0. */
int control_status_valid(const char *s);

/* The opaque cursor after row `row` of a control_search_runs() result (its
 * time and id, hex-encoded) into out (CONTROL_CURSOR_MAX bytes).
 * control_cursor_decode: 0 with the time and the id (out: 65 bytes), or -1. */
#define CONTROL_CURSOR_MAX 192
void control_cursor_encode(const PGresult *r, int row, char *out, size_t outlen);
int control_cursor_decode(const char *cursor, int64_t *us, char *out, size_t outlen);

/* 1 when id has the shape of a run id (1-64 of [0-9A-Za-z_-]). */
int control_id_valid(const char *id);

#endif
