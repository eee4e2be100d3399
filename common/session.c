/* session.c -- see session.h. */
#include "session.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "orglimit.h"
#include "util.h"

const char *session_url(const struct config *cfg)
{
	return cfg->database_direct_url ? cfg->database_direct_url : cfg->database_url;
}

void session_db_init(struct db *db, const struct config *cfg, const char *app_name,
		     int64_t statement_timeout_ms)
{
	db_init(db, cfg->database_url, app_name, statement_timeout_ms);
	db->pooled = cfg->database_direct_url != NULL;
}

/* ------------------------------------------------------------------ */
/* the pooler check                                                    */
/* ------------------------------------------------------------------ */

static int backend_pid(struct db *db, int64_t *pid)
{
	PGresult *r = db_query(db, "select pg_backend_pid()", 0, NULL);
	if (!r)
		return -1;
	*pid = db_get_i64(r, 0, 0, -1);
	PQclear(r);
	return 0;
}

int session_check_pooling(const char *url, int *pooling, char *err, size_t errlen)
{
	struct db a, b;
	int rc = -1;
	*pooling = 0;
	/* both marked pooled: no session settings may leak onto a pooled
	 * server connection while we find out */
	db_init(&a, url, "jobrunner-poolcheck", 0);
	db_init(&b, url, "jobrunner-poolcheck", 0);
	a.pooled = b.pooled = 1;
	a.client_timeout_ms = b.client_timeout_ms = 3000;
	int64_t pid1 = -1, pid2 = -1, pidb = -1;
	if (backend_pid(&a, &pid1)) {
		snprintf(err, errlen, "%s", a.errstr);
		goto out;
	}
	int b_ok = db_exec(&b, "begin", 0, NULL) == 0 && backend_pid(&b, &pidb) == 0;
	int a2_ok = backend_pid(&a, &pid2) == 0;
	if (b_ok)
		db_exec(&b, "rollback", 0, NULL);
	if (b_ok)
		*pooling = pidb == pid1 || !a2_ok || pid2 != pid1;
	else
		*pooling = a2_ok && pid2 != pid1;
	rc = 0;
out:
	db_release(&a);
	db_release(&b);
	return rc;
}

/* ------------------------------------------------------------------ */
/* the shared session connection                                       */
/* ------------------------------------------------------------------ */

struct held_slot {
	char *org;
	int slot;
	uint64_t gen;       /* session generation it was taken on */
};

static struct {
	pthread_mutex_t mu;
	int ready;
	struct db db;
	struct held_slot *slots;
	size_t nslots, cap;
	/* the listener (pooled mode) */
	pthread_mutex_t nmu;
	pthread_cond_t ncv;
	uint64_t notified;
	int listener;
} S = { .mu = PTHREAD_MUTEX_INITIALIZER, .nmu = PTHREAD_MUTEX_INITIALIZER,
	.ncv = PTHREAD_COND_INITIALIZER };

/* Locks S.mu, setting the connection up on first use. */
static void s_lock(const struct config *cfg)
{
	pthread_mutex_lock(&S.mu);
	if (!S.ready) {
		/* statement_timeout: a lock call never waits (try-locks only) */
		db_init(&S.db, session_url(cfg), "jobrunner-session", 30000);
		S.db.client_timeout_ms = 10000;
		S.ready = 1;
	}
}

static void s_err(char *err, size_t errlen)
{
	if (err)
		snprintf(err, errlen, "%s", S.db.errstr);
}

/* Forgets slots taken on a session that is gone (the server freed them). */
static void s_prune_stale(void)
{
	size_t k = 0;
	for (size_t i = 0; i < S.nslots; i++) {
		if (S.slots[i].gen == S.db.generation && S.db.conn)
			S.slots[k++] = S.slots[i];
		else
			free(S.slots[i].org);
	}
	S.nslots = k;
}

static int s_held(const char *org, int slot)
{
	for (size_t i = 0; i < S.nslots; i++)
		if (S.slots[i].slot == slot && !strcmp(S.slots[i].org, org))
			return 1;
	return 0;
}

int session_org_acquire(const struct config *cfg, const char *org, int limit, int *slot,
			char *err, size_t errlen)
{
	*slot = -1;
	s_lock(cfg);
	int rc = 0;
	if (db_connect(&S.db)) {
		s_err(err, errlen);
		rc = -1;
		goto out;
	}
	s_prune_stale();
	for (int s = 0; s < limit; s++) {
		if (s_held(org, s))
			continue;   /* another thread of ours has it */
		int got = 0;
		if (orglimit_try_slot(&S.db, org, s, &got)) {
			s_err(err, errlen);
			rc = -1;
			break;
		}
		if (!got)
			continue;
		if (S.nslots == S.cap) {
			S.cap = S.cap ? S.cap * 2 : 16;
			S.slots = xrealloc(S.slots, S.cap * sizeof *S.slots);
		}
		S.slots[S.nslots++] = (struct held_slot){ xstrdup(org), s, S.db.generation };
		*slot = s;
		break;
	}
out:
	pthread_mutex_unlock(&S.mu);
	return rc;
}

void session_org_release(const struct config *cfg, const char *org, int slot)
{
	s_lock(cfg);
	for (size_t i = 0; i < S.nslots; i++) {
		struct held_slot *h = &S.slots[i];
		if (h->slot != slot || strcmp(h->org, org))
			continue;
		if (h->gen == S.db.generation && S.db.conn)
			orglimit_release(&S.db, org, slot);
		free(h->org);
		S.slots[i] = S.slots[--S.nslots];
		break;
	}
	pthread_mutex_unlock(&S.mu);
}

static pthread_mutex_t cycle_mu = PTHREAD_MUTEX_INITIALIZER;
static struct db cycle_db;
static int cycle_ready;

struct db *session_cycle_db(const struct config *cfg)
{
	if (pthread_mutex_trylock(&cycle_mu))
		return NULL;
	if (!cycle_ready) {
		db_init(&cycle_db, session_url(cfg), "jobrunner-cycle", 0);
		cycle_ready = 1;
	}
	return &cycle_db;
}

void session_cycle_db_done(struct db *db)
{
	if (db == &cycle_db)
		pthread_mutex_unlock(&cycle_mu);
}

/* ------------------------------------------------------------------ */
/* the listener                                                        */
/* ------------------------------------------------------------------ */

static void wake_all(void)
{
	pthread_mutex_lock(&S.nmu);
	S.notified++;
	pthread_cond_broadcast(&S.ncv);
	pthread_mutex_unlock(&S.nmu);
}

static void *listener_thread(void *arg)
{
	const struct config *cfg = arg;
	struct db db;
	db_init(&db, session_url(cfg), "jobrunner-listen", 30000);
	for (;;) {
		if (!db.conn) {
			if (db_exec(&db, "listen jobrunner_runs", 0, NULL)) {
				sleep_ms(1000);
				continue;
			}
			wake_all();   /* notifications may have been missed meanwhile */
		}
		struct pollfd pfd = { PQsocket(db.conn), POLLIN, 0 };
		int r = poll(&pfd, 1, 1000);
		if (r < 0 && errno != EINTR)
			continue;
		if (r > 0) {
			if (!PQconsumeInput(db.conn)) {
				db_close(&db);
				continue;
			}
			int got = 0;
			PGnotify *nt;
			while ((nt = PQnotifies(db.conn)) != NULL) {
				PQfreemem(nt);
				got = 1;
			}
			if (got)
				wake_all();
		}
	}
	return NULL;
}

void session_wait_notify(const struct config *cfg, int64_t ms)
{
	pthread_mutex_lock(&S.nmu);
	if (!S.listener) {
		pthread_t tid;
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		S.listener = pthread_create(&tid, &at, listener_thread, (void *)cfg) == 0;
		pthread_attr_destroy(&at);
	}
	uint64_t seen = S.notified;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t ns = (int64_t)ts.tv_nsec + (ms % 1000) * 1000000LL;
	ts.tv_sec += (time_t)(ms / 1000 + ns / 1000000000LL);
	ts.tv_nsec = (long)(ns % 1000000000LL);
	while (S.notified == seen)
		if (pthread_cond_timedwait(&S.ncv, &S.nmu, &ts))
			break;
	pthread_mutex_unlock(&S.nmu);
}
