/* no_reply_scan -- reminders for conversations that await a reply.
 *
 * A conversation awaits a reply when last_inbound_at is set, no outbound
 * message came after it, it is older than NO_REPLY_THRESHOLD_MS, and no
 * reminder was made for that inbound message yet.  For each, one statement
 * inserts the reminders row (kind 'no_reply', source_at = last_inbound_at)
 * and sets no_reply_notified_at: atomic, and idempotent through the unique
 * (conversation_id, kind, source_at) key, so running it twice (or two
 * scans at once) creates nothing new.
 *
 * The SQL lives here so that adapting it to another schema touches one
 * file.  A scan works in batches of SCAN_BATCH to bound each statement.
 */
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "db.h"
#include "registry.h"
#include "util.h"

#define SCAN_BATCH 1000

static const char scan_sql[] =
	"with due as ("
	"  select c.id, c.org_id, c.last_inbound_at from conversations c"
	"  where c.last_inbound_at is not null"
	"    and (c.last_outbound_at is null or c.last_outbound_at < c.last_inbound_at)"
	"    and c.last_inbound_at <= now() - make_interval(secs => $1::bigint / 1000.0)"
	"    and (c.no_reply_notified_at is null or c.no_reply_notified_at < c.last_inbound_at)"
	"    and ($2::text is null or c.org_id = $2)"
	"  order by c.last_inbound_at"
	"  limit $3::int"
	"  for update skip locked"
	"), ins as ("
	"  insert into reminders (org_id, conversation_id, kind, source_at)"
	"  select org_id, id, 'no_reply', last_inbound_at from due"
	"  on conflict (conversation_id, kind, source_at) do nothing"
	"  returning conversation_id"
	"), upd as ("
	"  update conversations c set no_reply_notified_at = now()"
	"  from due where c.id = due.id"
	"  returning c.id"
	") select (select count(*) from ins), (select count(*) from upd)";

static void no_reply_scan_run(struct job_ctx *ctx, struct run_result *out)
{
	char threshold[32], limit[16];
	snprintf(threshold, sizeof threshold, "%lld", (long long)ctx->cfg->no_reply_threshold_ms);
	snprintf(limit, sizeof limit, "%d", SCAN_BATCH);
	const char *p[3] = { threshold, ctx->run->org_id, limit };
	int64_t created = 0;
	for (;;) {
		PGresult *r = db_query(ctx->db, scan_sql, 3, p);
		if (!r) {
			out->outcome = RUN_RETRY;
			snprintf(out->error, sizeof out->error, "no_reply_scan: %s", ctx->db->errstr);
			return;
		}
		int64_t ins = db_get_i64(r, 0, 0, 0), marked = db_get_i64(r, 0, 1, 0);
		PQclear(r);
		created += ins;
		if (marked < SCAN_BATCH || job_stopping(ctx))
			break;
	}
	snprintf(ctx->summary, sizeof ctx->summary, "%lld reminders", (long long)created);
	out->outcome = RUN_OK;
}

static int no_reply_scan_enabled(const struct config *cfg) { return cfg->no_reply_scan_enabled; }
static int64_t no_reply_scan_interval(const struct config *cfg) { return cfg->no_reply_scan_interval_ms; }

const struct job_def job_no_reply_scan = {
	.name = "no_reply_scan",
	.run = no_reply_scan_run,
	.enabled = no_reply_scan_enabled,
	.interval_ms = no_reply_scan_interval,
};
