/* meta_spend -- daily ad spend from Meta's Insights API into meta_spend_daily.
 *
 * A cycle fans out one run per org (plan(): the active connections with an
 * ad account), so more consumers finish a large sync sooner.  A run with
 * an org syncs that org; a run without one (ad hoc) syncs every active
 * connection in turn.  One org's sync:
 *
 *   GET {META_GRAPH_URL}/act_<id>/insights?level=account&fields=spend,account_currency
 *       &time_increment=1&time_range={"since":"<today-(days-1)>","until":"<today>"}
 *   (UTC dates, days = META_SPEND_LOOKBACK_DAYS), following paging.next,
 *   each page upserted in one statement (ON CONFLICT DO UPDATE).
 *
 * Choices:
 * - ad_account_id is accepted with or without Meta's "act_" prefix and is
 *   stored WITHOUT it (the bare numeric id), so "act_123" and "123" are one
 *   account in meta_spend_daily; it must be numeric (it is put in the path).
 * - Amounts stay exact: Meta sends spend as a decimal string ("123.45"),
 *   which goes to PostgreSQL as text and is cast to numeric there, never
 *   through a double.  Should a JSON number arrive instead, cJSON keeps
 *   only a double: it is accepted when it has at most two decimals (and is
 *   below 1e9), where printing it with %.2f gives back the original digits
 *   exactly; anything else is rejected as a permanent error rather than
 *   stored rounded.
 * - Errors (graph.h): 190 marks the connection needs_reauth (no retry),
 *   throttling retries after Meta's time and opens the org's throttle
 *   window (orglimit.h: its other runs are deferred until then, other
 *   orgs go on), transient errors retry with
 *   backoff, others fail the run with Meta's message.  A database error
 *   is transient, except a data error (SQLSTATE class 22/21), which is not.
 *
 * The SQL lives here so that adapting it to another schema touches one file.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "graph.h"
#include "jobs/meta_conn.h"
#include "orglimit.h"
#include "registry.h"
#include "util.h"

#define ACCOUNT_MAX_DIGITS 32

static const char plan_sql[] =
	"select org_id from meta_connections"
	" where status = 'active' and coalesce(ad_account_id, '') <> ''"
	" order by org_id";

static const char conns_sql[] =
	"select org_id, ad_account_id, access_token, status from meta_connections"
	" where ($1::text is null and status = 'active' and coalesce(ad_account_id, '') <> '')"
	"    or org_id = $1"
	" order by org_id";

static const char upsert_sql[] =
	"insert into meta_spend_daily (org_id, ad_account_id, date, spend, currency, fetched_at)"
	" select $1, $2, t.d::date, t.s::numeric, t.c, now()"
	" from unnest($3::text[], $4::text[], $5::text[]) as t(d, s, c)"
	" on conflict (org_id, ad_account_id, date) do update"
	" set spend = excluded.spend, currency = excluded.currency, fetched_at = excluded.fetched_at";

/* ------------------------------------------------------------------ */
/* validation of what Meta sent                                        */
/* ------------------------------------------------------------------ */

/* "act_123" or "123" -> "123" in out; 0, or -1 if not numeric. */
static int account_digits(const char *id, char *out, size_t outlen)
{
	if (!strncmp(id, "act_", 4))
		id += 4;
	size_t n = strlen(id);
	if (n == 0 || n > ACCOUNT_MAX_DIGITS || n >= outlen || strspn(id, "0123456789") != n)
		return -1;
	memcpy(out, id, n + 1);
	return 0;
}

static int is_date(const char *s)
{
	static const char shape[] = "dddd-dd-dd";
	for (size_t i = 0; i < sizeof shape - 1; i++)
		if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i])
			return 0;
	return s[sizeof shape - 1] == '\0';
}

/* Non-negative decimal: up to 12 integer digits, optional fraction. */
static int is_amount(const char *s)
{
	size_t i = strspn(s, "0123456789");
	if (i == 0 || i > 12)
		return 0;
	if (s[i] == '\0')
		return 1;
	if (s[i] != '.')
		return 0;
	size_t f = strspn(s + i + 1, "0123456789");
	return f > 0 && f <= 12 && s[i + 1 + f] == '\0';
}

/* The spend of an insights row as exact decimal text into out: 0 or -1. */
static int spend_text(const cJSON *v, char *out, size_t outlen)
{
	if (cJSON_IsString(v)) {
		if (!is_amount(v->valuestring) || strlen(v->valuestring) >= outlen)
			return -1;
		snprintf(out, outlen, "%s", v->valuestring);
		return 0;
	}
	if (cJSON_IsNumber(v)) {
		double d = v->valuedouble, cents = d * 100.0;
		if (!(d >= 0 && d < 1e9) || fabs(cents - round(cents)) > 1e-4)
			return -1;
		snprintf(out, outlen, "%.2f", d);
		return 0;
	}
	return -1;
}

static int is_currency(const char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++)
		if (!isupper((unsigned char)s[i]))
			return 0;
	return n >= 1 && n <= 8;
}

/* ------------------------------------------------------------------ */
/* one org                                                             */
/* ------------------------------------------------------------------ */

struct sync {
	struct db *db;
	const char *org_id;
	const char *account;        /* digits only */
	int rows;
};

/* graph_page_fn: validates the page and upserts it in one statement. */
static int upsert_page(const cJSON *data, void *arg, enum graph_kind *kind, char *err,
		       size_t errlen)
{
	struct sync *s = arg;
	struct strbuf dates = STRBUF_INIT, spends = STRBUF_INIT, curs = STRBUF_INIT;
	const cJSON *row;
	int n = 0, rc = -1;

	sb_adds(&dates, "{");
	sb_adds(&spends, "{");
	sb_adds(&curs, "{");
	cJSON_ArrayForEach(row, data) {
		const cJSON *date = cJSON_GetObjectItemCaseSensitive(row, "date_start");
		const cJSON *cur = cJSON_GetObjectItemCaseSensitive(row, "account_currency");
		char spend[32];
		if (!cJSON_IsString(date) || !is_date(date->valuestring)) {
			snprintf(err, errlen, "insights row %d without a valid date_start", n);
			goto out;
		}
		if (spend_text(cJSON_GetObjectItemCaseSensitive(row, "spend"), spend, sizeof spend)) {
			snprintf(err, errlen, "insights row for %s: spend is not an exact amount "
				 "(a decimal string, or a number with at most 2 decimals)",
				 date->valuestring);
			goto out;
		}
		if (!cJSON_IsString(cur) || !is_currency(cur->valuestring)) {
			snprintf(err, errlen, "insights row for %s without a valid account_currency",
				 date->valuestring);
			goto out;
		}
		const char *sep = n ? "," : "";
		sb_adds(&dates, sep);
		db_array_add(&dates, date->valuestring);
		sb_adds(&spends, sep);
		db_array_add(&spends, spend);
		sb_adds(&curs, sep);
		db_array_add(&curs, cur->valuestring);
		n++;
	}
	sb_adds(&dates, "}");
	sb_adds(&spends, "}");
	sb_adds(&curs, "}");
	if (n) {
		const char *p[5] = { s->org_id, s->account, dates.buf, spends.buf, curs.buf };
		if (db_exec(s->db, upsert_sql, 5, p)) {
			const char *state = db_sqlstate(s->db);
			int data_error = !strncmp(state, "22", 2) || !strncmp(state, "21", 2);
			*kind = data_error ? GRAPH_PERMANENT : GRAPH_TRANSIENT;
			snprintf(err, errlen, "upsert meta_spend_daily: %s", s->db->errstr);
			goto out;
		}
	}
	s->rows += n;
	rc = 0;
out:
	sb_release(&dates);
	sb_release(&spends);
	sb_release(&curs);
	return rc;
}

/* Syncs one connection; counts its outcome in t. */
static void sync_org(struct job_ctx *ctx, const char *org_id, const char *ad_account_id,
		     const char *token, struct meta_tally *t, int *rows)
{
	char account[ACCOUNT_MAX_DIGITS + 1], since[11], until[11], range[64], msg[300];
	if (account_digits(ad_account_id, account, sizeof account)) {
		snprintf(msg, sizeof msg, "ad_account_id \"%.40s\" is not act_<digits> or <digits>",
			 ad_account_id);
		meta_conn_tally(t, org_id, GRAPH_PERMANENT, 0, msg);
		return;
	}
	if (graph_day_range(wall_ms(), ctx->cfg->meta_spend_lookback_days, since, until)) {
		meta_conn_tally(t, org_id, GRAPH_PERMANENT, 0, "META_SPEND_LOOKBACK_DAYS out of range");
		return;
	}
	snprintf(range, sizeof range, "{\"since\":\"%s\",\"until\":\"%s\"}", since, until);
	char path[64];
	snprintf(path, sizeof path, "/act_%s/insights", account);
	const struct graph_param params[] = {
		{ "level", "account", 0 },
		{ "fields", "spend,account_currency", 0 },
		{ "time_increment", "1", 0 },
		{ "time_range", range, 0 },
	};

	struct sync s = { .db = ctx->db, .org_id = org_id, .account = account };
	struct graph_result res = { 0 };
	struct graph_client *g = graph_client_new(ctx->cfg, job_http(ctx));
	graph_get_paged(g, path, params, JR_ARRAY_LEN(params), token, upsert_page, &s, &res);
	graph_client_free(g);
	if (res.kind == GRAPH_THROTTLED && res.retry_after_ms > 0) {
		/* the org's other runs wait too (orglimit.h); best effort: this
		 * run's own retry waits retry_after_ms either way */
		orglimit_throttle(ctx->db, org_id, wall_ms() + res.retry_after_ms, res.message);
	}
	meta_conn_tally_result(t, ctx->db, org_id, token, &res);
	*rows += s.rows;
	graph_result_clear(&res);
}

/* ------------------------------------------------------------------ */
/* job entry points                                                    */
/* ------------------------------------------------------------------ */

static void meta_spend_run(struct job_ctx *ctx, struct run_result *out)
{
	const char *org = ctx->run->org_id;
	PGresult *r = db_query(ctx->db, conns_sql, 1, &org);
	if (!r) {
		out->outcome = RUN_RETRY;
		snprintf(out->error, sizeof out->error, "meta_spend: %s", ctx->db->errstr);
		return;
	}
	struct meta_tally t = { 0 };
	int rows = 0, n = PQntuples(r), i;
	for (i = 0; i < n && !(i > 0 && job_stopping(ctx)); i++) {
		const char *org_id = db_get(r, i, 0), *account = db_get(r, i, 1);
		const char *token = db_get(r, i, 2), *status = db_get(r, i, 3);
		if (strcmp(status, "active") || !account || !*account) {
			t.skipped++;      /* only an explicit org can get here */
			snprintf(ctx->summary, sizeof ctx->summary, "skipped: connection %s%s",
				 status, account && *account ? "" : ", no ad account");
			continue;
		}
		sync_org(ctx, org_id, account, token, &t, &rows);
	}
	PQclear(r);

	meta_conn_tally_finish(&t, org != NULL, out);
	if (i < n && out->outcome == RUN_OK) {
		out->outcome = RUN_RETRY;
		snprintf(out->error, sizeof out->error, "stopped by shutdown after %d of %d orgs", i, n);
	}
	if (n == 0)
		snprintf(ctx->summary, sizeof ctx->summary, org ? "skipped: no connection"
							      : "no active connections");
	else if (!t.skipped)
		snprintf(ctx->summary, sizeof ctx->summary, "%d orgs, %d days upserted", t.orgs, rows);
}

static int meta_spend_plan(const struct config *cfg, struct db *db, char ***orgs, size_t *n,
			   char *errstr, size_t errlen)
{
	*orgs = NULL;
	*n = 0;
	PGresult *r = db_query(db, plan_sql, 0, NULL);
	if (!r) {
		snprintf(errstr, errlen, "meta_spend plan: %s", db->errstr);
		return -1;
	}
	int rows = PQntuples(r);
	*orgs = xcalloc((size_t)rows + 1, sizeof **orgs);
	for (int i = 0; i < rows; i++)
		(*orgs)[i] = xstrdup(db_get(r, i, 0));
	*n = (size_t)rows;
	PQclear(r);
	return 0;
}

static int meta_spend_enabled(const struct config *cfg) { return cfg->meta_spend_enabled; }
static int64_t meta_spend_interval(const struct config *cfg) { return cfg->meta_spend_interval_ms; }

const struct job_def job_meta_spend = {
	.name = "meta_spend",
	.run = meta_spend_run,
	.plan = meta_spend_plan,
	.enabled = meta_spend_enabled,
	.interval_ms = meta_spend_interval,
	.org_throttled = 1,
};
