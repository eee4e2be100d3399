/* cli.c -- the operators' commands of `producer` (the same operations as
 * the HTTP API, on PostgreSQL and Redis directly, like `producer enqueue`):
 *
 *   producer runs list [--job J] [--org ID] [--status S] [--since T] [--until T]
 *                      [--limit N] [--cursor C] [--json]
 *   producer runs show ID [--json]
 *   producer runs cancel ID [--json]
 *   producer runs retry ID [--json]
 *   producer runs retry --dead [--job J] [--org ID] [--since T] [--limit N] [--json]
 *   producer pause JOB [--json]
 *   producer resume JOB [--json]
 *
 * Tables for people on standard output, or one JSON document with --json
 * (the API's answer bodies).  Exit codes: 0 done; 1 not found or refused
 * (unknown run, a cancel of a finished run); 2 usage; 3 PostgreSQL (or, for
 * a cancel in Redis mode, Redis) unreachable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "config.h"
#include "control.h"
#include "db.h"
#include "enqueue.h"
#include "producer.h"
#include "queue.h"
#include "registry.h"
#include "util.h"

#define CLI_USAGE                                                                              \
	"usage: producer runs list [--job J] [--org ID] [--status S] [--since T] [--until T]\n"    \
	"                          [--limit N] [--cursor C] [--json]\n"                             \
	"       producer runs show ID [--json]\n"                                                   \
	"       producer runs cancel ID [--json]\n"                                                 \
	"       producer runs retry ID [--json]\n"                                                  \
	"       producer runs retry --dead [--job J] [--org ID] [--since T] [--limit N] [--json]\n" \
	"       producer pause JOB [--json]\n"                                                      \
	"       producer resume JOB [--json]\n"

static int usage(const char *what, const char *arg)
{
	fprintf(stderr, "producer: %s%s%s\n%s", what, arg ? " " : "", arg ? arg : "", CLI_USAGE);
	return EXIT_USAGE;
}

/* The options of a command: value options by name, flags, one positional. */
struct opts {
	const char *job, *org, *status, *since, *until, *limit, *cursor;
	int json, dead;
	const char *arg;   /* the positional argument (ID or JOB) */
};

/* Reads the options after the command: 0, or -1 with the usage error's exit
 * code in *exit_code (the reason printed). */
static int parse_opts(int argc, char **argv, struct opts *o, int *exit_code)
{
	memset(o, 0, sizeof *o);
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char **slot = !strcmp(a, "--job") ? &o->job : !strcmp(a, "--org") ? &o->org
				  : !strcmp(a, "--status") ? &o->status : !strcmp(a, "--since") ? &o->since
				  : !strcmp(a, "--until") ? &o->until : !strcmp(a, "--limit") ? &o->limit
				  : !strcmp(a, "--cursor") ? &o->cursor : NULL;
		if (slot) {
			if (i + 1 >= argc) {
				*exit_code = usage("missing value for", a);
				return -1;
			}
			*slot = argv[++i];
		} else if (!strcmp(a, "--json")) {
			o->json = 1;
		} else if (!strcmp(a, "--dead")) {
			o->dead = 1;
		} else if (a[0] == '-') {
			*exit_code = usage("unknown option", a);
			return -1;
		} else if (!o->arg) {
			o->arg = a;
		} else {
			*exit_code = usage("unexpected argument", a);
			return -1;
		}
	}
	return 0;
}

static void print_json(cJSON *o)
{
	char *s = cJSON_Print(o);
	printf("%s\n", s);
	free(s);
	cJSON_Delete(o);
}

static const char *str_or(const cJSON *o, const char *k, const char *dflt)
{
	const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
	return v ? v : dflt;
}

static void print_table(cJSON *runs)
{
	printf("%-36s  %-18s  %-16s  %-9s  %3s  %-24s  %s\n", "ID", "JOB", "ORG", "STATUS", "ATT",
	       "ENQUEUED", "ERROR");
	const cJSON *r;
	cJSON_ArrayForEach(r, runs) {
		const cJSON *att = cJSON_GetObjectItemCaseSensitive(r, "attempts");
		printf("%-36s  %-18.18s  %-16.16s  %-9s  %3d  %-24s  %.60s\n", str_or(r, "id", ""),
		       str_or(r, "job", ""), str_or(r, "orgId", "-"), str_or(r, "status", ""),
		       cJSON_IsNumber(att) ? (int)att->valuedouble : 0, str_or(r, "enqueuedAt", "-"),
		       str_or(r, "error", ""));
	}
}

/* Opens db: -1 when open, else the exit code to return (db released). */
/* app_database() for the CLI: 0, or -1 with the exit code in *exit_code
 * (db released). */
static int open_db(const struct config *cfg, struct db *db, int *exit_code)
{
	if (app_database(cfg, db, "jobrunner-cli", exit_code) == 0)
		return 0;
	db_release(db);
	return -1;
}

/* ---- runs list / show ---- */

static int runs_list(const struct config *cfg, const struct opts *o)
{
	struct control_search s = { .job = o->job, .org_id = o->org, .status = o->status,
				    .limit = CONTROL_SEARCH_LIMIT_DEFAULT };
	char after[65];
	int64_t limit = s.limit;
	if (o->arg)
		return usage("unexpected argument", o->arg);
	if (o->job && !registry_find(o->job))
		return usage("--job: unknown job", o->job);
	if (o->status && !control_status_valid(o->status))
		return usage("--status must be one of queued, delayed, running, succeeded, failed, dead, cancelled, not", o->status);
	if (o->since && iso8601_parse_ms(o->since, &s.since_ms))
		return usage("--since must be an ISO-8601 UTC time, not", o->since);
	if (o->until && iso8601_parse_ms(o->until, &s.until_ms))
		return usage("--until must be an ISO-8601 UTC time, not", o->until);
	if (o->limit && parse_i64(o->limit, 1, CONTROL_SEARCH_LIMIT_MAX, &limit))
		return usage("--limit must be a whole number from 1 to 500, not", o->limit);
	if (o->cursor && control_cursor_decode(o->cursor, &s.after_us, after, sizeof after))
		return usage("--cursor is malformed:", o->cursor);
	s.limit = (int)limit;
	s.after_id = o->cursor ? after : NULL;
	struct db db;
	int rc;
	if (open_db(cfg, &db, &rc))
		return rc;
	PGresult *r = control_search_runs(&db, &s);
	if (!r) {
		fprintf(stderr, "producer runs list: %s\n", db.errstr);
		db_release(&db);
		return EXIT_UNREACHABLE;
	}
	cJSON *out = cJSON_CreateObject();
	cJSON *runs = cJSON_AddArrayToObject(out, "runs");
	int rows = PQntuples(r);
	for (int i = 0; i < rows && i < s.limit; i++)
		cJSON_AddItemToArray(runs, control_run_json(r, i));
	char next[CONTROL_CURSOR_MAX] = "";
	if (rows > s.limit)
		control_cursor_encode(r, s.limit - 1, next, sizeof next);
	if (next[0])
		cJSON_AddStringToObject(out, "nextCursor", next);
	else
		cJSON_AddNullToObject(out, "nextCursor");
	PQclear(r);
	db_release(&db);
	if (o->json) {
		print_json(out);
	} else {
		print_table(runs);
		if (next[0])
			printf("next page: --cursor %s\n", next);
		cJSON_Delete(out);
	}
	return EXIT_OK;
}

/* `producer runs VERB ID`: the ID checked and the database opened: 0, or
 * -1 with the exit code in *rc (the reason printed). */
static int open_for_id(const struct config *cfg, const struct opts *o, const char *verb,
		       struct db *db, int *rc)
{
	if (!o->arg) {
		*rc = usage("missing ID", NULL);
		return -1;
	}
	if (!control_id_valid(o->arg)) {
		fprintf(stderr, "producer runs %s: no run with id %s\n", verb, o->arg);
		*rc = 1;
		return -1;
	}
	return open_db(cfg, db, rc);
}

static int runs_show(const struct config *cfg, const struct opts *o)
{
	struct db db;
	int rc;
	if (open_for_id(cfg, o, "show", &db, &rc))
		return rc;
	PGresult *r = control_get_run(&db, o->arg);
	if (!r) {
		fprintf(stderr, "producer runs show: %s\n", db.errstr);
		db_release(&db);
		return EXIT_UNREACHABLE;
	}
	if (PQntuples(r) == 0) {
		fprintf(stderr, "producer runs show: no run with id %s\n", o->arg);
		PQclear(r);
		db_release(&db);
		return 1;
	}
	cJSON *run = control_run_json(r, 0);
	PQclear(r);
	db_release(&db);
	if (o->json) {
		print_json(run);
		return EXIT_OK;
	}
	for (const cJSON *f = run->child; f; f = f->next) {
		char *v = cJSON_IsString(f) ? NULL : cJSON_PrintUnformatted(f);
		printf("%-18s %s\n", f->string, v ? v : f->valuestring);
		free(v);
	}
	cJSON_Delete(run);
	return EXIT_OK;
}

/* ---- runs cancel ---- */

static int runs_cancel(const struct config *cfg, const struct opts *o)
{
	struct db db;
	int rc;
	if (open_for_id(cfg, o, "cancel", &db, &rc))
		return rc;
	struct enqueuer e;
	enqueuer_init(&e, cfg, "producer-cli");
	struct queue *rq = cfg->redis_url ? enqueuer_redis(&e) : NULL;
	enum queue_cancel_result res = QUEUE_NOT_FOUND;
	char status[16], job[RUN_MAX_JOB_LEN + 1], err[256];
	int failed = 1;
	if (cfg->redis_url && !rq)
		fprintf(stderr, "producer runs cancel: Redis is unreachable\n");
	else if (queue_cancel(&db, rq, o->arg, &res, status, sizeof status, job, sizeof job, err, sizeof err))
		fprintf(stderr, "producer runs cancel: %s\n", err);
	else
		failed = 0;
	enqueuer_release(&e);
	db_release(&db);
	if (failed)
		return EXIT_UNREACHABLE;
	if (res == QUEUE_NOT_FOUND) {
		fprintf(stderr, "producer runs cancel: no run with id %s\n", o->arg);
		return 1;
	}
	if (res == QUEUE_FINISHED) {
		fprintf(stderr, "producer runs cancel: run %s already finished (%s)\n", o->arg, status);
		return 1;
	}
	const char *now = res == QUEUE_CANCELLED ? "cancelled" : "running";
	if (o->json) {
		cJSON *out = cJSON_CreateObject();
		cJSON_AddStringToObject(out, "id", o->arg);
		cJSON_AddStringToObject(out, "job", job);
		cJSON_AddStringToObject(out, "status", now);
		cJSON_AddStringToObject(out, "previousStatus", status);
		cJSON_AddBoolToObject(out, "cancelRequested", 1);
		print_json(out);
	} else if (res == QUEUE_CANCELLED) {
		printf("%s cancelled (was %s)\n", o->arg, status);
	} else {
		printf("%s is running: asked to stop; it ends cancelled\n", o->arg);
	}
	return EXIT_OK;
}

/* ---- runs retry ---- */

static int runs_retry(const struct config *cfg, const struct opts *o)
{
	struct queue_dead_filter f = { .limit = 100 };
	int64_t limit = 100;
	if (o->dead == !!o->arg)
		return usage("give a run ID or --dead with filters", NULL);
	if (o->arg && (o->job || o->org || o->since || o->limit))
		return usage("filters go with --dead, not with an ID", NULL);
	if (o->status || o->until || o->cursor)
		return usage("retry takes --job, --org, --since and --limit", NULL);
	if (o->arg && !control_id_valid(o->arg)) {
		fprintf(stderr, "producer runs retry: no dead run with id %s\n", o->arg);
		return 1;
	}
	if (o->job && !registry_find(o->job))
		return usage("--job: unknown job", o->job);
	if (o->since && iso8601_parse_ms(o->since, &f.since_ms))
		return usage("--since must be an ISO-8601 UTC time, not", o->since);
	if (o->limit && parse_i64(o->limit, 1, QUEUE_RETRY_MAX, &limit))
		return usage("--limit must be a whole number from 1 to 1000, not", o->limit);
	f.id = o->arg;
	f.job = o->job;
	f.org_id = o->org;
	f.limit = o->arg ? 1 : (int)limit;
	struct db db;
	int rc;
	if (open_db(cfg, &db, &rc))
		return rc;
	struct enqueuer e;
	enqueuer_init(&e, cfg, "producer-cli");
	struct queue *rq = cfg->redis_url ? enqueuer_redis(&e) : NULL;
	struct queue_retried *ids = NULL;
	size_t n = 0;
	char err[256];
	int qrc = queue_retry_dead(&db, rq, &f, &ids, &n, err, sizeof err);
	enqueuer_release(&e);
	db_release(&db);
	if (qrc) {
		fprintf(stderr, "producer runs retry: %s\n", err);
		free(ids);
		return EXIT_UNREACHABLE;
	}
	if (o->arg && n == 0) {
		fprintf(stderr, "producer runs retry: no dead run with id %s\n", o->arg);
		return 1;
	}
	if (o->json) {
		print_json(control_retried_json(ids, n));
	} else {
		for (size_t i = 0; i < n; i++)
			printf("%s  %s  queued\n", ids[i].id, ids[i].job);
		printf("%zu run%s queued again\n", n, n == 1 ? "" : "s");
	}
	free(ids);
	return EXIT_OK;
}

int cli_runs(const struct config *cfg, int argc, char **argv)
{
	if (argc < 2)
		return usage("missing command after runs", NULL);
	struct opts o;
	int rc;
	if (parse_opts(argc - 2, argv + 2, &o, &rc))
		return rc;
	const char *cmd = argv[1];
	if (!strcmp(cmd, "list"))
		return runs_list(cfg, &o);
	if (strcmp(cmd, "retry") && (o.job || o.org || o.status || o.since || o.until || o.limit ||
				     o.cursor || o.dead))
		return usage("filters go with list and retry --dead", NULL);
	if (!strcmp(cmd, "show"))
		return runs_show(cfg, &o);
	if (!strcmp(cmd, "cancel"))
		return runs_cancel(cfg, &o);
	if (!strcmp(cmd, "retry"))
		return runs_retry(cfg, &o);
	return usage("unknown command: runs", cmd);
}

int cli_pause(const struct config *cfg, int argc, char **argv, int on)
{
	struct opts o;
	int rc;
	if (parse_opts(argc - 1, argv + 1, &o, &rc))
		return rc;
	if (!o.arg)
		return usage("missing JOB", NULL);
	if (o.job || o.org || o.status || o.since || o.until || o.limit || o.cursor || o.dead)
		return usage("pause and resume take a JOB (and --json)", NULL);
	if (!registry_find(o.arg)) {
		fprintf(stderr, "producer %s: unknown job '%s'\n", on ? "pause" : "resume", o.arg);
		return 1;
	}
	struct db db;
	if (open_db(cfg, &db, &rc))
		return rc;
	if (control_pause(&db, o.arg, on)) {
		fprintf(stderr, "producer %s: %s\n", on ? "pause" : "resume", db.errstr);
		db_release(&db);
		return EXIT_UNREACHABLE;
	}
	db_release(&db);
	if (o.json) {
		cJSON *out = cJSON_CreateObject();
		cJSON_AddStringToObject(out, "job", o.arg);
		cJSON_AddBoolToObject(out, "paused", on);
		print_json(out);
	} else {
		printf("%s %s\n", o.arg, on ? "paused" : "resumed");
	}
	return EXIT_OK;
}
