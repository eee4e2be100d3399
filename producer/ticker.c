/* ticker.c -- the producer's tick thread (Redis mode).
 *
 * Every JOB_RUNNER_INTERVAL_MS slot (slot = floor(wall ms / interval)) the
 * thread calls queue_redis_tick(), whose script adds the tick only for the
 * first caller of that slot across all producer replicas: exactly one tick
 * per slot however many producers run.  The thread wakes at each slot
 * boundary (wall clock, so replicas agree on slots) and ticks the current
 * slot; a slot missed while Redis was down is not replayed (a cycle catches
 * up on everything due, so one tick is as good as many).
 *
 * Redis down: the handle is dropped and reopened at the next slot; the
 * outage is logged once when it starts and once when it ends.  On the first
 * connection the thread checks maxmemory-policy and warns loudly unless it
 * is noeviction (an evicting Redis can silently lose queued runs).
 *
 * The ticker also runs the producer's history writer (history.h): in Redis
 * mode the queued row of a run reaches job_runs through it even while no
 * consumer runs (GET /runs/{id} reads job_runs).  It shares the work with
 * the consumers' writers through the jr:history consumer group.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "app.h"
#include "config.h"
#include "history.h"
#include "log.h"
#include "producer.h"
#include "queue.h"
#include "queue_redis.h"
#include "util.h"

struct ticker {
	pthread_t tid;
	const struct config *cfg;
	struct history_thread *history;
	atomic_int stop;
};

static int stopping(struct ticker *t) { return atomic_load_explicit(&t->stop, memory_order_acquire); }

static void *ticker_main(void *arg)
{
	struct ticker *t = arg;
	const struct config *cfg = t->cfg;
	int64_t interval = cfg->job_runner_interval_ms;
	struct queue *q = NULL;
	int checked = 0, down = 0;
	int64_t last_slot = -1;
	char name[160];
	snprintf(name, sizeof name, "%s-ticker", cfg->consumer_name ? cfg->consumer_name : "producer");
	while (!stopping(t)) {
		int64_t slot = queue_redis_slot(wall_ms(), interval);
		if (slot != last_slot) {
			char err[256] = "";
			int rc = q ? 0 : queue_redis_open(cfg, name, &q, err, sizeof err);
			int added = 0;
			if (rc == 0) {
				if (!checked) {
					app_redis_policy_check(q);
					checked = 1;
				}
				rc = queue_redis_tick(q, slot, &added);
				if (rc)
					snprintf(err, sizeof err, "%s", q->errstr);
			}
			if (rc == 0) {
				last_slot = slot;
				if (down)
					log_msg(LOG_INFO, "ticker_recovered", "Redis reachable again: ticking");
				down = 0;
				if (added)
					LOGF(LOG_DEBUG, "tick_added", "tick added", LF_I("slot", slot));
			} else {
				if (!down)
					LOGF(LOG_WARN, "ticker_redis_down",
					     "cannot add ticks: Redis unreachable (consumers fall back to their own timer)",
					     LF_S("error", err));
				down = 1;
				if (q && rc == QUEUE_EDOWN) {
					q->ops->destroy(q);
					q = NULL;
				}
			}
		}
		/* sleep to the next slot boundary (or 500 ms to retry while down) */
		int64_t now = wall_ms();
		int64_t wait = (queue_redis_slot(now, interval) + 1) * interval - now;
		if (down && wait > 500)
			wait = 500;
		for (int64_t slept = 0; slept < wait && !stopping(t); slept += 50)
			sleep_ms(wait - slept < 50 ? wait - slept : 50);
	}
	if (q)
		q->ops->destroy(q);
	return NULL;
}

struct ticker *ticker_start(const struct config *cfg)
{
	if (!cfg->redis_url)
		return NULL;   /* Redis-less mode: consumers run cycles on their own timer */
	struct ticker *t = xcalloc(1, sizeof *t);
	t->cfg = cfg;
	if (pthread_create(&t->tid, NULL, ticker_main, t)) {
		log_msg(LOG_ERROR, "ticker_failed", "cannot start the tick thread");
		free(t);
		return NULL;
	}
	char err[256];
	if (cfg->database_url && history_thread_start(cfg, cfg->consumer_name ? cfg->consumer_name : "producer",
						      &t->history, err, sizeof err))
		LOGF(LOG_ERROR, "history_failed", "cannot start the history writer", LF_S("error", err));
	return t;
}

void ticker_stop(struct ticker *t)
{
	if (!t)
		return;
	atomic_store_explicit(&t->stop, 1, memory_order_release);
	pthread_join(t->tid, NULL);
	history_thread_stop(t->history, 2000);
	free(t);
}
