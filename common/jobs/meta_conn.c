/* meta_conn.c -- see meta_conn.h. */
#include "jobs/meta_conn.h"

#include <stdio.h>
#include <string.h>

#include "db.h"
#include "util.h"

static const char reauth_sql[] =
	"update meta_connections set status = 'needs_reauth', last_error = $3, updated_at = now()"
	" where org_id = $1 and access_token = $2 and status = 'active'";

int meta_conn_mark_reauth(struct db *db, const char *org_id, const char *access_token,
			  const char *message)
{
	const char *p[3] = { org_id, access_token, message };
	return db_exec(db, reauth_sql, 3, p);
}

void meta_conn_tally(struct meta_tally *t, const char *org_id, enum graph_kind kind,
		     int64_t retry_after_ms, const char *message)
{
	int *const count[] = {
		[GRAPH_OK] = &t->ok, [GRAPH_AUTH] = &t->auth, [GRAPH_THROTTLED] = &t->throttled,
		[GRAPH_TRANSIENT] = &t->transient, [GRAPH_PERMANENT] = &t->permanent,
	};
	t->orgs++;
	if ((unsigned)kind < JR_ARRAY_LEN(count))
		(*count[kind])++;
	if (kind == GRAPH_OK)
		return;
	if (kind == GRAPH_THROTTLED && retry_after_ms > t->retry_after_ms)
		t->retry_after_ms = retry_after_ms;
	if (!t->first_error[0]) {
		snprintf(t->first_org, sizeof t->first_org, "%s", org_id);
		snprintf(t->first_error, sizeof t->first_error, "%s", message ? message : "failed");
	}
}

void meta_conn_tally_result(struct meta_tally *t, struct db *db, const char *org_id,
			    const char *access_token, const struct graph_result *res)
{
	if (res->kind == GRAPH_AUTH && meta_conn_mark_reauth(db, org_id, access_token, res->message)) {
		char msg[300];
		snprintf(msg, sizeof msg, "%.150s; marking needs_reauth failed: %.100s", res->message,
			 db->errstr);
		meta_conn_tally(t, org_id, GRAPH_TRANSIENT, 0, msg);
		return;
	}
	meta_conn_tally(t, org_id, res->kind, res->retry_after_ms, res->message);
}

void meta_conn_tally_finish(const struct meta_tally *t, int named_org, struct run_result *out)
{
	int failed = t->auth + t->throttled + t->transient + t->permanent;
	out->retry_after_ms = 0;
	if (!failed) {
		out->outcome = RUN_OK;
		out->error[0] = '\0';
		return;
	}
	if (t->throttled + t->transient) {
		out->outcome = RUN_RETRY;
		out->retry_after_ms = t->retry_after_ms;
	} else {
		out->outcome = RUN_FAIL;
	}
	if (named_org)
		snprintf(out->error, sizeof out->error, "%s", t->first_error);
	else if (t->orgs == 1)
		snprintf(out->error, sizeof out->error, "org %s: %s", t->first_org, t->first_error);
	else
		snprintf(out->error, sizeof out->error, "%d of %d orgs failed; first: org %s: %s",
			 failed, t->orgs, t->first_org, t->first_error);
}
