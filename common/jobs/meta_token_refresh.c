/* meta_token_refresh -- exchange Meta access tokens before they expire.
 *
 * Runs inline in the cycle (no plan(): a handful of calls a day), or ad hoc
 * for one org.  Steps:
 *   1. active connections whose token_expires_at has passed are set to
 *      needs_reauth with last_error 'token expired': an expired token is
 *      never sent to Meta (it cannot be exchanged, and would answer 190);
 *   2. each active connection whose token_expires_at falls within
 *      META_TOKEN_REFRESH_WINDOW_MS from now is exchanged at
 *      GET {META_GRAPH_URL}/oauth/access_token?grant_type=fb_exchange_token
 *          &client_id=META_APP_ID&client_secret=META_APP_SECRET&fb_exchange_token=<token>
 *      and the answer stored: access_token, token_expires_at = now() +
 *      expires_in seconds (NULL when Meta sends no expires_in: a token
 *      that does not expire).
 * The store is fenced on the old token, so a connection re-authorised by
 * the API meanwhile keeps its new token.  Connections without
 * token_expires_at are left alone (nothing says they expire).
 *
 * The URL carries the app secret and the token: graph.c never puts a URL
 * query into a message, and scrubs both from Meta's messages.  Without
 * META_APP_ID or META_APP_SECRET the run fails, saying so, as soon as a
 * token is due (expired ones are still marked: that needs no Meta call);
 * with nothing due it succeeds, so that an installation without Meta does
 * not log a failed job every day.  Errors are handled as in meta_spend
 * (graph.h, meta_conn.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "graph.h"
#include "jobs/meta_conn.h"
#include "registry.h"
#include "util.h"

#define TOKEN_MAX_LEN 4096
#define EXPIRES_IN_MAX_S (10LL * 365 * 86400)

static const char expire_sql[] =
	"update meta_connections set status = 'needs_reauth', last_error = 'token expired',"
	" updated_at = now()"
	" where status = 'active' and token_expires_at <= now()"
	" and ($1::text is null or org_id = $1)";

static const char due_sql[] =
	"select org_id, access_token from meta_connections"
	" where status = 'active' and token_expires_at > now()"
	" and token_expires_at <= now() + $1::bigint * interval '1 millisecond'"
	" and ($2::text is null or org_id = $2)"
	" order by token_expires_at";

static const char store_sql[] =
	"update meta_connections set access_token = $3,"
	" token_expires_at = now() + $4::bigint * interval '1 second',"
	" last_error = null, updated_at = now()"
	" where org_id = $1 and access_token = $2 and status = 'active'";

/* A token as Meta issues them: printable ASCII without spaces. */
static int is_token(const char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return 0;
	return n >= 1 && n <= TOKEN_MAX_LEN;
}

/* Exchanges one connection's token; counts its outcome in t. */
static void refresh_org(struct job_ctx *ctx, const char *org_id, const char *token,
			struct meta_tally *t, int *refreshed)
{
	const struct config *cfg = ctx->cfg;
	const struct graph_param params[] = {
		{ "grant_type", "fb_exchange_token", 0 },
		{ "client_id", cfg->meta_app_id, 0 },
		{ "client_secret", cfg->meta_app_secret, 1 },
		{ "fb_exchange_token", token, 1 },
	};
	struct graph_result res = { 0 };
	char msg[300];
	struct graph_client *g = graph_client_new(cfg, job_http(ctx));
	graph_get(g, "/oauth/access_token", params, JR_ARRAY_LEN(params), NULL, &res);
	graph_client_free(g);

	if (res.kind == GRAPH_OK) {
		const cJSON *nt = cJSON_GetObjectItemCaseSensitive(res.body, "access_token");
		const cJSON *ex = cJSON_GetObjectItemCaseSensitive(res.body, "expires_in");
		char expires[24];
		const char *expires_p = NULL;
		if (cJSON_IsNumber(ex) && ex->valuedouble >= 1 && ex->valuedouble <= EXPIRES_IN_MAX_S) {
			snprintf(expires, sizeof expires, "%lld", (long long)ex->valuedouble);
			expires_p = expires;
		}
		if (!cJSON_IsString(nt) || !is_token(nt->valuestring) ||
		    !(expires_p || !ex || cJSON_IsNull(ex))) {
			meta_conn_tally(t, org_id, GRAPH_PERMANENT, 0,
					"token exchange answered without a valid access_token/expires_in");
		} else {
			const char *p[4] = { org_id, token, nt->valuestring, expires_p };
			if (db_exec(ctx->db, store_sql, 4, p)) {
				snprintf(msg, sizeof msg, "storing the new token: %s", ctx->db->errstr);
				meta_conn_tally(t, org_id, GRAPH_TRANSIENT, 0, msg);
			} else {
				meta_conn_tally(t, org_id, GRAPH_OK, 0, NULL);
				(*refreshed)++;
			}
		}
	} else {
		meta_conn_tally_result(t, ctx->db, org_id, token, &res);
	}
	graph_result_clear(&res);
}

static void meta_token_refresh_run(struct job_ctx *ctx, struct run_result *out)
{
	const struct config *cfg = ctx->cfg;
	const char *org = ctx->run->org_id;
	int have_app = cfg->meta_app_id && *cfg->meta_app_id && cfg->meta_app_secret &&
		       *cfg->meta_app_secret;

	PGresult *r = db_query(ctx->db, expire_sql, 1, &org);
	if (!r)
		goto db_fail;
	long expired = strtol(PQcmdTuples(r), NULL, 10);
	PQclear(r);

	char window[24];
	snprintf(window, sizeof window, "%lld", (long long)cfg->meta_token_refresh_window_ms);
	const char *p[2] = { window, org };
	r = db_query(ctx->db, due_sql, 2, p);
	if (!r)
		goto db_fail;
	int n = PQntuples(r), i, refreshed = 0;
	if (n > 0 && !have_app) {
		PQclear(r);
		out->outcome = RUN_FAIL;
		snprintf(out->error, sizeof out->error,
			 "%d token(s) due for refresh, but META_APP_ID and META_APP_SECRET are not "
			 "both set: meta_token_refresh cannot exchange tokens without them", n);
		return;
	}

	struct meta_tally t = { 0 };
	for (i = 0; i < n && !(i > 0 && job_stopping(ctx)); i++)
		refresh_org(ctx, db_get(r, i, 0), db_get(r, i, 1), &t, &refreshed);
	PQclear(r);

	meta_conn_tally_finish(&t, org != NULL, out);
	if (i < n && out->outcome == RUN_OK) {
		out->outcome = RUN_RETRY;
		snprintf(out->error, sizeof out->error, "stopped by shutdown after %d of %d tokens", i, n);
	}
	snprintf(ctx->summary, sizeof ctx->summary, "%d refreshed, %d failed, %ld expired", refreshed,
		 t.orgs - t.ok, expired);
	return;

db_fail:
	out->outcome = RUN_RETRY;
	snprintf(out->error, sizeof out->error, "meta_token_refresh: %s", ctx->db->errstr);
}

static int meta_token_refresh_enabled(const struct config *cfg)
{
	return cfg->meta_token_refresh_enabled;
}

static int64_t meta_token_refresh_interval(const struct config *cfg)
{
	return cfg->meta_token_refresh_interval_ms;
}

const struct job_def job_meta_token_refresh = {
	.name = "meta_token_refresh",
	.run = meta_token_refresh_run,
	.enabled = meta_token_refresh_enabled,
	.interval_ms = meta_token_refresh_interval,
};
