"""Cycles in Redis-less mode (no REDIS_URL): each consumer runs cycles on its
own timer under pg_try_advisory_lock(JOB_RUNNER_LOCK_KEY), and the cycle's
jobs (here no_reply_scan) do their work (docs/architecture.md, "Ticks, cycles and runs";
docs/jobs.md).

How overlap is observed: a probe (triggers installed by the test, see
PROBE_SQL) writes an event row, numbered by a sequence, whenever a cycle
takes the job_runner_lock row, records a job's state, records its inline run
or deletes the row -- all of which a consumer does from inside the cycle --
together with whether that very backend holds the advisory lock with the
documented key at that moment.  The advisory lock is exclusive, so "every
cycle statement ran under the lock" means "no two cycles overlapped", and
the sequence order must show each cycle complete (acquire ... release)
before the next begins.  The probe can also make one consumer's cycle slow
(pg_sleep while it records a job's state, mid-cycle), to widen the window
in which the lock is contended, or to catch a holder mid-cycle.
"""

import time

import psycopg2
import pytest

import harness
import jrcli

CLASSID, OBJID = jrcli.lock_key_parts()

PROBE_SQL = """
CREATE TABLE it_events (
    seq    bigserial PRIMARY KEY,
    pid    int NOT NULL,
    kind   text NOT NULL,
    holder text,
    locked boolean NOT NULL,
    at     timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE it_ctl (slow_holder text, slow_ms int NOT NULL DEFAULT 0);
INSERT INTO it_ctl VALUES (NULL, 0);

CREATE FUNCTION it_holds_lock() RETURNS boolean LANGUAGE sql AS $$
  SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                 AND pid = pg_backend_pid() AND granted
                 AND classid = %(classid)s::oid AND objid = %(objid)s::oid AND objsubid = 1) $$;

CREATE FUNCTION it_on_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF tg_op = 'DELETE' THEN
    INSERT INTO it_events (pid, kind, holder, locked)
      VALUES (pg_backend_pid(), 'release', old.holder, it_holds_lock());
    RETURN old;
  END IF;
  INSERT INTO it_events (pid, kind, holder, locked)
    VALUES (pg_backend_pid(),
            CASE WHEN tg_op = 'INSERT' OR new.acquired_at IS DISTINCT FROM old.acquired_at
                      OR new.backend_pid IS DISTINCT FROM old.backend_pid
                 THEN 'acquire' ELSE 'heartbeat' END,
            new.holder, it_holds_lock());
  RETURN new;
END $$;
CREATE TRIGGER it_lock_trg AFTER INSERT OR UPDATE OR DELETE ON job_runner_lock
  FOR EACH ROW EXECUTE FUNCTION it_on_lock();

CREATE FUNCTION it_on_state() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  c it_ctl;
  h text;
BEGIN
  SELECT holder INTO h FROM job_runner_lock WHERE backend_pid = pg_backend_pid();
  INSERT INTO it_events (pid, kind, holder, locked)
    VALUES (pg_backend_pid(), 'state:' || new.id, h, it_holds_lock());
  SELECT * INTO c FROM it_ctl;
  IF new.id <> 'job_runner' AND c.slow_ms > 0
     AND (c.slow_holder IS NULL OR c.slow_holder = h) THEN
    PERFORM pg_sleep(c.slow_ms / 1000.0);
  END IF;
  RETURN new;
END $$;
CREATE TRIGGER it_state_trg BEFORE INSERT OR UPDATE ON job_runner_state
  FOR EACH ROW EXECUTE FUNCTION it_on_state();

CREATE FUNCTION it_on_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF new.source = 'cycle' THEN
    INSERT INTO it_events (pid, kind, holder, locked)
      VALUES (pg_backend_pid(), 'cycle_run', new.consumer, it_holds_lock());
  END IF;
  RETURN new;
END $$;
CREATE TRIGGER it_run_trg AFTER INSERT ON job_runs
  FOR EACH ROW EXECUTE FUNCTION it_on_run();
"""


@pytest.fixture
def probe(bins, db, db_url):
    """The migrated database with the probe installed; returns db."""
    jrcli.migrate(bins, db_url)
    db.execute(PROBE_SQL % {"classid": CLASSID, "objid": OBJID})
    return db


def slow(db, ms, holder=None):
    db.execute("UPDATE it_ctl SET slow_ms = %s, slow_holder = %s", (ms, holder))


def probe_events(db):
    return db.query("SELECT seq, pid, kind, holder, locked FROM it_events"
                    " WHERE kind <> 'heartbeat' ORDER BY seq")


def consumer_env(db_url, name, **kw):
    # NO_REPLY_SCAN_INTERVAL_MS=0: no_reply_scan is due in every cycle, so
    # every cycle writes a job state and a job_runs row (source 'cycle').
    kw.setdefault("NO_REPLY_SCAN_INTERVAL_MS", 0)
    kw.setdefault("LOG_LEVEL", "debug")
    return jrcli.env(db_url, CONSUMER_NAME=name, **kw)


def cycles_logged(proc, after=0):
    return jrcli.events(proc, "job_runner_cycle_complete", after)


def skips_logged(proc, after=0):
    return jrcli.events(proc, "job_runner_cycle_skipped", after)


def assert_cycles_exclusive(db, consumers_pids=None):
    """Every cycle statement ran under the advisory lock, and cycles follow
    each other: acquire(p) [state/cycle_run of p]* release(p), then the next."""
    ev = probe_events(db)
    assert ev, "the probe saw no cycle"
    unlocked = [e for e in ev if not e[4] and (consumers_pids is None or e[1] in consumers_pids)]
    assert not unlocked, "cycle statements without the advisory lock: %r" % unlocked[:5]
    current = None
    for seq, pid, kind, holder, _ in ev:
        if kind == "acquire":
            assert current is None, "seq %d: %s (pid %d) took the cycle while pid %d was in one" % (
                seq, holder, pid, current)
            current = pid
        elif kind == "release":
            assert current == pid, "seq %d: release by pid %d outside its cycle" % (seq, pid)
            current = None
        else:
            assert current == pid, "seq %d: %s by pid %d outside its cycle (current %r)" % (
                seq, kind, pid, current)


def assert_cycle_runs_disjoint(db):
    """The job_runs rows of inline cycle runs (started_at .. finished_at)
    never overlap.  started_at is the consumer's clock truncated to the
    millisecond, hence the 1 ms tolerance."""
    rows = db.query("SELECT consumer, started_at, finished_at FROM job_runs"
                    " WHERE source = 'cycle' ORDER BY started_at, finished_at")
    for (c1, s1, f1), (c2, s2, f2) in zip(rows, rows[1:]):
        assert (s2 - f1).total_seconds() > -0.001, (
            "cycle runs overlap: %s %s..%s and %s %s..%s" % (c1, s1, f1, c2, s2, f2))
    return rows


def state(db, id_):
    rows = db.query('SELECT "lastRunAt", "lastRunDurationMs", "lastStatus", "lastError",'
                    ' "runCount", "failureCount" FROM job_runner_state WHERE id = %s', (id_,))
    if not rows:
        return None
    return dict(zip(("lastRunAt", "lastRunDurationMs", "lastStatus", "lastError",
                     "runCount", "failureCount"), rows[0]))


# ---- the cycle lock ------------------------------------------------------------------

@pytest.mark.parametrize("first", ["consumer", "monolith"])
def test_two_consumers_never_run_cycles_at_once(probe, spawn, db_url, first):
    """Two consumers; or a producer in monolith mode (the migration period's
    shape: the old API process still runs jobs) beside a consumer."""
    db = probe
    slow(db, 80)   # every cycle holds the lock >= 80 ms: both contend
    if first == "monolith":
        a = spawn("producer", env=consumer_env(db_url, "A", JOB_RUNNER_ENABLED="true",
                                               PORT=harness.free_port()), name="A")
    else:
        a = spawn("consumer", env=consumer_env(db_url, "A"), name="A")
    b = spawn("consumer", env=consumer_env(db_url, "B"), name="B")

    def enough():
        holders = [r[0] for r in db.query(
            "SELECT holder FROM it_events WHERE kind = 'acquire'")]
        return holders.count("A") >= 6 and holders.count("B") >= 6
    harness.wait_until(enough, timeout=30, msg="both consumers to run >= 6 cycles")
    assert a.terminate() == 0 and b.terminate() == 0

    assert_cycles_exclusive(db)
    # the lock was contended (else the test proved little)
    assert len(skips_logged(a)) + len(skips_logged(b)) >= 1
    rows = assert_cycle_runs_disjoint(db)
    assert {r[0] for r in rows} == {"A", "B"}
    # the records agree with what the consumers logged
    logged = cycles_logged(a) + cycles_logged(b)
    assert state(db, "job_runner")["runCount"] == len(logged)
    assert state(db, "no_reply_scan")["runCount"] == len(rows) == len(logged)
    assert all(c["trigger"] == "timer" for c in logged)
    assert all("no_reply_scan=succeeded" in c["ran"] for c in logged)
    # both stopped cleanly: nobody holds the lock, nobody is shown as holder
    assert db.scalar("SELECT count(*) FROM job_runner_lock") == 0
    assert db.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                     " AND classid = %s::oid AND objid = %s::oid", (CLASSID, OBJID)) == 0


def test_holder_is_shown_in_job_runner_lock_while_a_cycle_runs(probe, spawn, db_url):
    db = probe
    slow(db, 1000, "A")
    a = spawn("consumer", env=consumer_env(db_url, "A"), name="A")

    def holding():
        rows = db.query(
            "SELECT l.holder, l.backend_pid, a.application_name,"
            "       EXISTS (SELECT 1 FROM pg_locks k WHERE k.pid = l.backend_pid AND k.granted"
            "               AND k.locktype = 'advisory' AND k.classid = %s::oid AND k.objid = %s::oid)"
            "  FROM job_runner_lock l LEFT JOIN pg_stat_activity a ON a.pid = l.backend_pid"
            " WHERE l.id = 'job_runner'", (CLASSID, OBJID))
        return rows[0] if rows else None
    holder, pid, app, has_lock = harness.wait_until(holding, timeout=10, msg="a lock row")
    assert holder == "A"
    assert has_lock, "the backend shown in job_runner_lock does not hold the advisory lock"
    assert app and app.startswith("jobrunner")
    hb = db.query("SELECT acquired_at, heartbeat_at FROM job_runner_lock")[0]
    assert hb[1] >= hb[0]

    mark = a.mark()
    cyc = a.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=10, after=mark)
    assert cyc["durationMs"] >= 900, cyc   # the slow state write is part of the cycle
    slow(db, 0)
    assert a.terminate() == 0
    assert db.scalar("SELECT count(*) FROM job_runner_lock") == 0
    st = state(db, "job_runner")
    assert st["lastStatus"] == "succeeded" and st["lastError"] is None
    assert st["runCount"] == len(cycles_logged(a))
    assert state(db, "no_reply_scan")["lastStatus"] == "succeeded"


def _hold(db, key=jrcli.DEFAULT_LOCK_KEY):
    """Another session (the legacy monolith) takes the advisory lock."""
    conn = db.connect()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '20s'")
        cur.execute("SELECT pg_advisory_lock(%s)", (key,))
    return conn


def _release(conn, key=jrcli.DEFAULT_LOCK_KEY):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        assert cur.fetchone()[0] is True
    conn.close()


def test_no_cycle_while_another_session_holds_the_lock(bins, probe, spawn, db_url):
    db = probe
    a = spawn("consumer", env=consumer_env(db_url, "A"), name="A")
    a.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=15)

    conn = _hold(db)   # waits for a running cycle to end, like the monolith would
    try:
        # once a skip is logged, the cycle that was running has been logged too
        a.wait_for_log({"event": "job_runner_cycle_skipped"}, timeout=10)
        mark = a.mark()
        before = state(db, "job_runner")
        ev_before = db.scalar("SELECT count(*) FROM it_events")
        # runs are not cycles: an ad-hoc run still goes through
        ids = jrcli.enqueue(bins, db_url, "noop")
        jrcli.wait_runs(db, ids, "succeeded")
        harness.wait_until(lambda: len(skips_logged(a, mark)) >= 5, timeout=10,
                           msg="5 refused cycle attempts")
        assert cycles_logged(a, mark) == []
        assert state(db, "job_runner") == before
        assert db.scalar("SELECT count(*) FROM it_events") == ev_before
        assert db.scalar("SELECT count(*) FROM job_runner_lock") == 0
    finally:
        _release(conn)
    mark = a.mark()
    a.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=10, after=mark)
    after = state(db, "job_runner")
    assert after["runCount"] > before["runCount"]
    assert after["lastRunAt"] > before["lastRunAt"]
    assert a.terminate() == 0
    assert_cycles_exclusive(db)


def test_lock_key_is_configurable(probe, spawn, db_url):
    db = probe
    # the probe checks the default key, so the probe's lock flag is not used here
    a = spawn("consumer", env=consumer_env(db_url, "K", JOB_RUNNER_LOCK_KEY="-42"), name="K")
    default = _hold(db)
    try:
        # the default key held elsewhere does not stop a consumer on key -42
        a.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=15)
        other = _hold(db, -42)
        try:
            a.wait_for_log({"event": "job_runner_cycle_skipped"}, timeout=10)
            mark = a.mark()
            harness.wait_until(lambda: len(skips_logged(a, mark)) >= 3, timeout=10,
                               msg="3 refused cycle attempts on key -42")
            assert cycles_logged(a, mark) == []
        finally:
            _release(other, -42)
        a.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=10, after=mark)
    finally:
        _release(default)
    assert a.terminate() == 0


def test_kill9_of_the_lock_holder_mid_cycle(bins, probe, spawn, db_url):
    db = probe
    slow(db, 1500, "A")   # A's cycles stall mid-way, holding the lock
    a = spawn("consumer", env=consumer_env(db_url, "A"), name="A")
    b = spawn("consumer", env=consumer_env(db_url, "B"), name="B")

    def a_mid_cycle():
        rows = db.query(
            "SELECT l.backend_pid FROM job_runner_lock l"
            "  JOIN pg_stat_activity s ON s.pid = l.backend_pid"
            " WHERE l.holder = 'A' AND s.wait_event = 'PgSleep'")
        return rows[0][0] if rows else None
    a_pid = harness.wait_until(a_mid_cycle, timeout=20, msg="A to be mid-cycle")
    assert db.scalar("SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'"
                     " AND granted AND classid = %s::oid AND objid = %s::oid",
                     (a_pid, CLASSID, OBJID)) == 1
    mark_b = b.mark()
    assert a.kill9() == -9

    # The dead holder's session ends and the lock with it: B runs cycles.
    b.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=15, after=mark_b)
    harness.wait_until(lambda: db.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                         (a_pid,)) == 0, timeout=10, msg="A's session to end")
    assert db.scalar("SELECT count(*) FROM job_runner_lock WHERE holder = 'A'") == 0
    # The seed runbook for a stuck lock is harmless while B works.
    for _ in range(5):
        db.execute("SELECT pg_advisory_unlock_all(); DELETE FROM job_runner_lock;")
    mark_b = b.mark()
    harness.wait_until(lambda: len(cycles_logged(b, mark_b)) >= 3, timeout=15,
                       msg="B to keep running cycles")
    # and runs still flow
    ids = jrcli.enqueue(bins, db_url, "noop", count=3)
    rows = jrcli.wait_runs(db, ids, "succeeded")
    assert {r["consumer"] for r in rows.values()} == {"B"}
    assert b.terminate() == 0
    assert jrcli.events(b, "job_runner_cycle_failed") == []
    # Every cycle statement of every consumer ran under the lock
    # (the runbook's DELETE, from this test's session, is not a cycle).
    me = db.scalar("SELECT pg_backend_pid()")
    assert not db.query("SELECT seq, kind, holder FROM it_events"
                        " WHERE NOT locked AND pid <> %s", (me,))
    assert_cycle_runs_disjoint(db)


def test_seed_runbook_is_safe_while_consumers_run(probe, spawn, db_url):
    db = probe
    slow(db, 30)   # so that the runbook often lands mid-cycle
    a = spawn("consumer", env=consumer_env(db_url, "A"), name="A")
    b = spawn("consumer", env=consumer_env(db_url, "B"), name="B")
    a.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=15)
    b.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=15)
    conn = db.connect()
    deleted = 0
    try:
        with conn.cursor() as cur:
            for _ in range(40):
                cur.execute("SELECT pg_advisory_unlock_all()")
                cur.execute("DELETE FROM job_runner_lock")
                deleted += cur.rowcount
                time.sleep(0.03)   # pacing of the loop, not a wait for a result
    finally:
        conn.close()
    assert deleted > 0, "the runbook never met a holder row: the test did not test"
    ma, mb = a.mark(), b.mark()
    harness.wait_until(lambda: len(cycles_logged(a, ma)) + len(cycles_logged(b, mb)) >= 4,
                       timeout=15, msg="cycles to go on after the runbook")
    assert a.terminate() == 0 and b.terminate() == 0
    for p in (a, b):
        assert jrcli.events(p, "job_runner_cycle_failed") == []
    pids = {r[0] for r in db.query("SELECT pid FROM it_events WHERE kind = 'acquire'")}
    unlocked = db.query("SELECT seq, kind, holder FROM it_events WHERE NOT locked AND pid = ANY(%s)",
                        (list(pids),))
    assert not unlocked, "cycle statements without the lock after the runbook: %r" % unlocked[:5]
    assert_cycle_runs_disjoint(db)
    assert db.scalar("SELECT count(*) FROM job_runner_lock") == 0


def test_job_runner_state_rows(probe, spawn, db_url):
    db = probe
    a = spawn("consumer", env=jrcli.env(db_url, CONSUMER_NAME="A"), name="A")
    harness.wait_until(lambda: len(cycles_logged(a)) >= 3, timeout=15, msg="3 cycles")
    assert a.terminate() == 0
    ids = {r[0] for r in db.query("SELECT id FROM job_runner_state")}
    assert ids == {"job_runner", "no_reply_scan"}
    cyc = state(db, "job_runner")
    assert cyc["runCount"] == len(cycles_logged(a))
    assert cyc["lastStatus"] == "succeeded" and cyc["failureCount"] == 0
    # Same cycle; the log may say a few ms more for a sub-millisecond cycle
    # (cycle.c recomputes duration_ms after the release when it was 0).
    assert 0 <= cycles_logged(a)[-1]["durationMs"] - cyc["lastRunDurationMs"] <= 20
    # the default NO_REPLY_SCAN_INTERVAL_MS (5 min): one scan, then "nothing due"
    scan = state(db, "no_reply_scan")
    assert scan["runCount"] == 1 and scan["lastStatus"] == "succeeded"
    assert [c["ran"] for c in cycles_logged(a)[1:]] == ["nothing due"] * (len(cycles_logged(a)) - 1)
    assert scan["lastRunAt"] <= cyc["lastRunAt"]


# ---- no_reply_scan -----------------------------------------------------------------------

# name: (org, inbound, outbound, notified) as SQL expressions, and whether a
# reminder is due
CONVERSATIONS = {
    "awaiting":             ("o1", "now() - interval '2 days'", None, None, True),
    "awaiting_old_reply":   ("o1", "now() - interval '2 days'", "now() - interval '3 days'", None, True),
    "answered":             ("o1", "now() - interval '2 days'", "now() - interval '1 day'", None, False),
    "too_recent":           ("o1", "now() - interval '1 hour'", None, None, False),
    "no_inbound":           ("o1", None, "now() - interval '5 days'", None, False),
    "already_notified":     ("o1", "now() - interval '2 days'", None, "now() - interval '1 day'", False),
    "new_inbound_since":    ("o1", "now() - interval '2 days'", None, "now() - interval '3 days'", True),
    "other_org_awaiting":   ("o2", "now() - interval '30 hours'", None, None, True),
    "other_org_answered":   ("o2", "now() - interval '30 hours'", "now() - interval '29 hours'", None, False),
}


def _seed(db):
    ids = {}
    for name, (org, inb, out, notified, _) in CONVERSATIONS.items():
        ids[name] = db.scalar(
            "INSERT INTO conversations (org_id, contact, last_inbound_at, last_outbound_at,"
            " no_reply_notified_at) VALUES (%%s, %%s, %s, %s, %s) RETURNING id"
            % (inb or "NULL", out or "NULL", notified or "NULL"), (org, name))
    # the reminder made for the earlier inbound message of new_inbound_since
    db.execute("INSERT INTO reminders (org_id, conversation_id, kind, source_at)"
               " VALUES ('o1', %s, 'no_reply', now() - interval '4 days')",
               (ids["new_inbound_since"],))
    return ids


def _conv(db):
    rows = db.query("SELECT contact, id, org_id, last_inbound_at, no_reply_notified_at"
                    " FROM conversations")
    return {r[0]: r[1:] for r in rows}


def _reminders(db, since=None):
    """{contact: [(org, kind, source_at)]} of reminders (made after `since`)."""
    rows = db.query("SELECT c.contact, r.org_id, r.kind, r.source_at FROM reminders r"
                    " JOIN conversations c ON c.id = r.conversation_id"
                    " WHERE %s::timestamptz IS NULL OR r.created_at >= %s::timestamptz",
                    (since, since))
    out = {}
    for contact, org, kind, src in rows:
        out.setdefault(contact, []).append((org, kind, src))
    return out


def _drain(bins, db_url, **kw):
    p = jrcli.run(bins.consumer, ["--drain-once"], jrcli.env(db_url, **kw), timeout=60)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return [o for o in map(harness._as_json_object, p.stdout.splitlines()) if o]


def test_no_reply_scan_in_a_cycle(bins, db, db_url):
    jrcli.migrate(bins, db_url)
    _seed(db)
    t0 = db.scalar("SELECT now()")
    before = _conv(db)
    logs = _drain(bins, db_url)
    cyc = [o for o in logs if o.get("event") == "job_runner_cycle_complete"]
    assert len(cyc) == 1 and cyc[0]["trigger"] == "drain"
    due = sorted(n for n, v in CONVERSATIONS.items() if v[4])
    assert "no_reply_scan=succeeded(%d reminders)" % len(due) in cyc[0]["ran"]

    made = _reminders(db, t0)
    assert sorted(made) == due
    after = _conv(db)
    for name in due:
        org, inbound, notified = after[name][1], after[name][2], after[name][3]
        assert made[name] == [(org, "no_reply", inbound)], name
        assert notified is not None and notified >= t0, name
    for name in set(CONVERSATIONS) - set(due):
        assert after[name] == before[name], "%s changed" % name

    # Twice: nothing new (NO_REPLY_SCAN_INTERVAL_MS=0 makes it due again).
    logs = _drain(bins, db_url, NO_REPLY_SCAN_INTERVAL_MS=0)
    cyc = [o for o in logs if o.get("event") == "job_runner_cycle_complete"]
    assert "no_reply_scan=succeeded(0 reminders)" in cyc[0]["ran"]
    assert _reminders(db, t0) == made
    assert _conv(db) == after
    st = state(db, "no_reply_scan")
    assert st["runCount"] == 2 and st["lastStatus"] == "succeeded"
    # and once more as an ad-hoc run
    ids = jrcli.enqueue(bins, db_url, "no_reply_scan")
    _drain(bins, db_url, NO_REPLY_SCAN_ENABLED="false")
    assert jrcli.runs(db, ids)[ids[0]]["status"] == "succeeded"
    assert _reminders(db, t0) == made


def test_no_reply_scan_org_id_limits_an_adhoc_run(bins, db, db_url):
    jrcli.migrate(bins, db_url)
    _seed(db)
    t0 = db.scalar("SELECT now()")
    ids = jrcli.enqueue(bins, db_url, "no_reply_scan", org="o2")
    # cycles do not scan here: only the ad-hoc run does
    _drain(bins, db_url, NO_REPLY_SCAN_ENABLED="false")
    row = jrcli.runs(db, ids)[ids[0]]
    assert (row["status"], row["org_id"], row["source"]) == ("succeeded", "o2", "adhoc")
    assert sorted(_reminders(db, t0)) == ["other_org_awaiting"]
    assert state(db, "no_reply_scan") is None

    ids = jrcli.enqueue(bins, db_url, "no_reply_scan", org="o1")
    _drain(bins, db_url, NO_REPLY_SCAN_ENABLED="false")
    assert jrcli.runs(db, ids)[ids[0]]["status"] == "succeeded"
    assert sorted(_reminders(db, t0)) == sorted(n for n, v in CONVERSATIONS.items() if v[4])

    ids = jrcli.enqueue(bins, db_url, "no_reply_scan", org="no-such-org")
    _drain(bins, db_url, NO_REPLY_SCAN_ENABLED="false")
    assert jrcli.runs(db, ids)[ids[0]]["status"] == "succeeded"
    assert len(_reminders(db, t0)) == sum(1 for v in CONVERSATIONS.values() if v[4])


def test_no_reply_threshold(bins, db, db_url):
    jrcli.migrate(bins, db_url)
    db.execute("INSERT INTO conversations (org_id, contact, last_inbound_at) VALUES"
               " ('o', 'two_hours', now() - interval '2 hours'),"
               " ('o', 'half_hour', now() - interval '30 minutes')")
    _drain(bins, db_url, NO_REPLY_THRESHOLD_MS=3600000)
    assert sorted(_reminders(db)) == ["two_hours"]


def test_no_reply_scan_disabled_in_cycles(bins, db, db_url):
    jrcli.migrate(bins, db_url)
    _seed(db)
    logs = _drain(bins, db_url, NO_REPLY_SCAN_ENABLED="false")
    cyc = [o for o in logs if o.get("event") == "job_runner_cycle_complete"]
    assert cyc and cyc[0]["ran"] == "nothing due"
    assert db.scalar("SELECT count(*) FROM reminders") == 1   # the seeded one
    assert state(db, "no_reply_scan") is None
    assert state(db, "job_runner")["runCount"] == 1


def test_scan_goes_through_batches(bins, db, db_url):
    jrcli.migrate(bins, db_url)
    db.execute("INSERT INTO conversations (org_id, contact, last_inbound_at)"
               " SELECT 'org-' || (g % 7), 'c' || g, now() - interval '2 days' - g * interval '1 second'"
               " FROM generate_series(1, 2500) g")
    logs = _drain(bins, db_url)
    cyc = [o for o in logs if o.get("event") == "job_runner_cycle_complete"]
    assert "no_reply_scan=succeeded(2500 reminders)" in cyc[0]["ran"]
    assert db.scalar("SELECT count(DISTINCT conversation_id) FROM reminders") == 2500
    assert db.scalar("SELECT count(*) FROM conversations WHERE no_reply_notified_at IS NULL") == 0


def test_concurrent_scans_make_one_reminder_each(bins, db, db_url):
    jrcli.migrate(bins, db_url)
    db.execute("INSERT INTO conversations (org_id, contact, last_inbound_at)"
               " SELECT 'org-' || (g % 3), 'c' || g, now() - interval '2 days'"
               " FROM generate_series(1, 3000) g")
    ids = jrcli.enqueue(bins, db_url, "no_reply_scan", count=4)
    # four scans at once (one per worker thread), plus the drain's cycle scan
    logs = _drain(bins, db_url, WORKER_CONCURRENCY=4)
    assert all(r["status"] == "succeeded" for r in jrcli.runs(db, ids).values())
    assert db.scalar("SELECT count(*) FROM reminders") == 3000
    assert db.scalar("SELECT count(DISTINCT conversation_id) FROM reminders") == 3000
    assert db.scalar("SELECT count(*) FROM conversations WHERE no_reply_notified_at IS NULL") == 0
    assert logs


def test_due_ness_is_read_from_job_runner_state(bins, probe, spawn, db_url):
    db = probe
    a = spawn("consumer", env=jrcli.env(db_url, CONSUMER_NAME="A"), name="A")
    first = a.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=15)
    assert "no_reply_scan=succeeded(0 reminders)" in first["ran"]
    db.execute("INSERT INTO conversations (org_id, contact, last_inbound_at)"
               " VALUES ('o', 'late', now() - interval '2 days')")
    mark = a.mark()
    harness.wait_until(lambda: len(cycles_logged(a, mark)) >= 3, timeout=10, msg="3 cycles")
    assert all(c["ran"] == "nothing due" for c in cycles_logged(a, mark))
    assert db.scalar("SELECT count(*) FROM reminders") == 0
    # An operator (or the legacy monolith) moves lastRunAt back: due again.
    db.execute('UPDATE job_runner_state SET "lastRunAt" = now() - interval \'10 minutes\''
               " WHERE id = 'no_reply_scan'")
    hit = a.wait_for_log(lambda o: o.get("event") == "job_runner_cycle_complete"
                         and "no_reply_scan=" in o.get("ran", ""), timeout=10, after=a.mark())
    assert "no_reply_scan=succeeded(1 reminders)" in hit["ran"]
    assert db.scalar("SELECT count(*) FROM reminders") == 1
    assert a.terminate() == 0
