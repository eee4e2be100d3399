"""The Meta jobs (meta_spend, meta_token_refresh) end to end: the real
consumer and producer binaries, a real PostgreSQL, and the Graph API
stand-in (tests/support/graph_stub.py) on loopback.

Every test ends by scanning every line the binaries wrote for the access
tokens and the app secret (docs/jobs.md: they never appear in logs).
"""

import datetime
import decimal
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))

import harness  # noqa: E402
from graph_stub import GraphStub  # noqa: E402

APP_ID = "1234567890123"
APP_SECRET = "appsecret-5f2b9c0e7d1a4b38"


def days_ago(n):
    return (datetime.datetime.now(datetime.timezone.utc).date()
            - datetime.timedelta(days=n)).isoformat()


class Meta:
    """One test's world: the stub, the database, the binaries, the secrets."""

    def __init__(self, db, db_url, spawn, stub):
        self.db, self.db_url, self.spawn, self.stub = db, db_url, spawn, stub
        self.procs = []
        self.secrets = {APP_SECRET}

    def env(self, **over):
        e = {
            "DATABASE_URL": self.db_url,
            "META_GRAPH_URL": self.stub.url,
            "META_APP_ID": APP_ID,
            "META_APP_SECRET": APP_SECRET,
            "META_SPEND_ENABLED": "false",
            "META_TOKEN_REFRESH_ENABLED": "false",
            "NO_REPLY_SCAN_ENABLED": "false",
            "JOB_RUNNER_INTERVAL_MS": "200",
            "JOB_BACKOFF_BASE_MS": "200",
            "JOB_BACKOFF_MAX_MS": "800",
            "WORKER_HTTP_PORT": "0",
            "WORKER_CONCURRENCY": "2",
            "CONSUMER_NAME": "meta-it",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "json",
        }
        e.update({k: (None if v is None else str(v)) for k, v in over.items()})
        return e

    def run(self, prog, args, **over):
        p = self.spawn(prog, args, env=self.env(**over))
        self.procs.append(p)
        return p

    def migrate(self):
        p = self.run("consumer", ["--migrate-only"])
        assert p.wait(60) == 0, p.log_tail()

    def consumer(self, **over):
        p = self.run("consumer", [], **over)
        p.wait_for_log({"event": "job_runner_started"}, timeout=30)
        return p

    def enqueue(self, job, org=None, **over):
        p = self.run("producer", ["enqueue", job] + (["--org", org] if org else []), **over)
        assert p.wait(30) == 0, p.log_tail()
        ids = [ln for ln in p.lines() if len(ln) == 36]
        assert len(ids) == 1, p.lines()
        return ids[0]

    def connect(self, org, account, token, status="active", expires="+60 days",
                last_error=None):
        """A meta_connections row; expires: an interval from now ("-1 day"),
        or None for no expiry."""
        self.secrets.add(token)
        self.db.execute(
            "insert into meta_connections (org_id, ad_account_id, access_token,"
            " token_expires_at, status, last_error) values (%s, %s, %s,"
            " case when %s::text is null then null else now() + %s::interval end, %s, %s)",
            (org, account, token, expires, expires, status, last_error))

    def conn(self, org):
        rows = self.db.query("select status, last_error, access_token,"
                             " extract(epoch from token_expires_at - now())::bigint"
                             " from meta_connections where org_id = %s", (org,))
        return dict(zip(("status", "last_error", "access_token", "expires_in_s"), rows[0]))

    def spend(self, org=None):
        """{(org, account, date): (spend text, currency)}."""
        rows = self.db.query("select org_id, ad_account_id, date::text, spend::text, currency"
                             " from meta_spend_daily where %s::text is null or org_id = %s",
                             (org, org))
        return {(o, a, d): (s, c) for o, a, d, s, c in rows}

    def run_row(self, run_id):
        rows = self.db.query("select status, attempts, error,"
                             " extract(epoch from run_at - now())::float8"
                             " from job_runs where id = %s", (run_id,))
        return dict(zip(("status", "attempts", "error", "run_at_in_s"), rows[0])) if rows else None

    def wait_run(self, run_id, statuses=("succeeded", "dead"), timeout=30):
        return harness.wait_until(
            lambda: (lambda r: r if r and r["status"] in statuses else None)(self.run_row(run_id)),
            timeout=timeout, msg="run %s to reach %s" % (run_id, statuses))

    def assert_no_secrets(self):
        """No token or app secret in any output line of the binaries, nor in
        the error texts that the database keeps (and the API answers)."""
        texts = [t for (t,) in self.db.query(
            "select error from job_runs where error is not null"
            " union all select last_error from meta_connections where last_error is not null"
            " union all select \"lastError\" from job_runner_state where \"lastError\" is not null"
            " union all select reason from org_throttle where reason is not null")]
        for t in texts:
            for s in self.secrets:
                assert s not in t, "a secret leaked into the database: %s" % t
        for p in self.procs:
            for line in p.lines():
                for s in self.secrets:
                    assert s not in line, "a secret leaked into %s's output: %s" % (p.name, line)


@pytest.fixture
def stub():
    s = GraphStub(page_size=2, app_id=APP_ID, app_secret=APP_SECRET, require_proof=True).start()
    yield s
    s.stop()


@pytest.fixture
def meta(db, db_url, bins, spawn, stub):
    m = Meta(db, db_url, spawn, stub)
    m.migrate()
    yield m
    m.assert_no_secrets()


# ---------------------------------------------------------------------------
# the stand-in itself, as a separate process driven through /__control
# ---------------------------------------------------------------------------

def test_stub_script_mode_and_control_endpoint():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support",
                        "graph_stub.py")
    p = harness.Proc(["/usr/bin/python3", path, "--port", "0", "--base-path", "/v99.0",
                      "--page-size", "1"], name="graph_stub")
    try:
        port = int(harness.wait_until(lambda: (p.lines() or [None])[0], timeout=10,
                                      msg="the stub's port line"))
        base = "http://127.0.0.1:%d" % port
        st, _, body = harness.http("POST", base + "/__control", {
            "op": "add_account", "args": {"account_id": "42", "token": "tokS-1",
                                          "rows": [[days_ago(1), "4.20"], [days_ago(0), "4.21"]]}})
        assert st == 200 and body["ok"], body
        q = ("level=account&fields=spend,account_currency&time_increment=1&time_range="
             "%7B%22since%22%3A%22" + days_ago(1) + "%22%2C%22until%22%3A%22" + days_ago(0)
             + "%22%7D")
        st, hdrs, body = harness.http("GET", base + "/v99.0/act_42/insights?" + q,
                                      headers={"Authorization": "Bearer tokS-1"})
        assert st == 200 and body["data"][0]["spend"] == "4.20"
        assert "x-business-use-case-usage" in hdrs
        nxt = body["paging"]["next"]
        assert nxt.startswith(base + "/v99.0/act_42/insights?") and "access_token=tokS-1" in nxt
        st, _, body = harness.http("GET", nxt)          # the token from the URL
        assert st == 200 and [r["spend"] for r in body["data"]] == ["4.21"]
        assert "next" not in body["paging"]
        st, _, body = harness.http("GET", base + "/act_42/insights?" + q,
                                   headers={"Authorization": "Bearer nope"})
        assert st == 400 and body["error"]["code"] == 190 and body["error"]["fbtrace_id"]
        st, _, body = harness.http("POST", base + "/__control", {
            "op": "fail", "args": {"key": "42", "status": 429, "code": 80000, "usage_minutes": 3}})
        assert st == 200
        st, hdrs, body = harness.http("GET", base + "/v99.0/act_42/insights?" + q,
                                      headers={"Authorization": "Bearer tokS-1"})
        assert st == 429 and body["error"]["code"] == 80000
        assert '"estimated_time_to_regain_access": 3' in hdrs["x-business-use-case-usage"]
        st, _, body = harness.http("GET", base + "/__control/requests")
        assert [r["path"] for r in body["requests"]].count("/v99.0/act_42/insights") == 3
        st, _, body = harness.http("POST", base + "/__control", {"op": "stop"})
        assert st == 400 and not body["ok"]
    finally:
        assert p.terminate() == 0
        p.cleanup()


# ---------------------------------------------------------------------------
# meta_spend
# ---------------------------------------------------------------------------

def test_spend_fanout_exact_amounts_paging_and_prefixes(meta, stub):
    # org_a: "act_" prefix in the database, 5 days in the window over 3 pages,
    # plus a day outside the window; org_b: bare id, another currency.
    stub.add_account("111", token="tokA-9f8e7d6c5b4a", rows=[
        (days_ago(5), "999.99"),              # outside a 5-day lookback
        (days_ago(4), "0.01"),
        (days_ago(3), "123456789012.34"),     # 12 integer digits: exact, no double
        (days_ago(2), "1234.5"),
        (days_ago(1), "0"),
        (days_ago(0), "12.34"),
    ])
    stub.add_account("222", token="tokB-0a1b2c3d4e5f", currency="EUR",
                     rows=[(days_ago(1), "77.10"), (days_ago(0), 5.25)])   # a JSON number too
    meta.connect("org_a", "act_111", "tokA-9f8e7d6c5b4a")
    meta.connect("org_b", "222", "tokB-0a1b2c3d4e5f")

    meta.consumer(META_SPEND_ENABLED="true", META_SPEND_LOOKBACK_DAYS="5")
    want = {
        ("org_a", "111", days_ago(4)): ("0.01", "USD"),
        ("org_a", "111", days_ago(3)): ("123456789012.34", "USD"),
        ("org_a", "111", days_ago(2)): ("1234.50", "USD"),
        ("org_a", "111", days_ago(1)): ("0.00", "USD"),
        ("org_a", "111", days_ago(0)): ("12.34", "USD"),
        ("org_b", "222", days_ago(1)): ("77.10", "EUR"),
        ("org_b", "222", days_ago(0)): ("5.25", "EUR"),
    }
    harness.wait_until(lambda: meta.spend() == want, timeout=30,
                       msg="meta_spend_daily to hold the stub's rows")
    # the rows are in before the runs are marked done: wait for that too
    harness.wait_until(lambda: meta.db.query(
        "select org_id, status, source from job_runs where job = 'meta_spend' order by org_id")
        == [("org_a", "succeeded", "fanout"), ("org_b", "succeeded", "fanout")], timeout=15,
        msg="one succeeded fan-out run per org")

    # paging: 5 rows at 2 a page is 3 requests; all of them with the header token
    assert stub.count("/act_111/insights") == 3
    assert stub.count("/act_222/insights") == 1
    assert set(stub.authorizations("/act_111/")) == {"Bearer tokA-9f8e7d6c5b4a"}
    log = stub.request_log()
    first = [r for r in log if "/act_111/" in r["path"]][0]
    assert first["path"] == "/v21.0/act_111/insights"
    assert first["query"]["time_range"] == \
        '{"since":"%s","until":"%s"}' % (days_ago(4), days_ago(0))
    assert "access_token" not in first["query"]          # only in Meta's next links
    assert all("appsecret_proof" in r["query"] for r in log)   # require_proof held


def test_spend_fanout_and_throttle_over_redis(meta, stub, redis_server):
    """The same handlers behind the Redis Streams transport."""
    stub.add_account("161", token="tokR-redis0001", rows=[(days_ago(1), "16.10"),
                                                           (days_ago(0), "16.11")])
    stub.add_account("162", token="tokR-redis0002", rows=[(days_ago(0), "16.20")])
    stub.fail("162", status=500, code=1, message="An unknown error occurred", times=1)
    meta.connect("org_r1", "161", "tokR-redis0001")
    meta.connect("org_r2", "act_162", "tokR-redis0002")
    c = meta.consumer(REDIS_URL=redis_server.url, META_SPEND_ENABLED="true")
    # in Redis mode the producer's ticks start the cycles
    meta.run("producer", [], REDIS_URL=redis_server.url, META_SPEND_ENABLED="true",
             PORT=harness.free_port())
    harness.wait_until(lambda: meta.spend() == {
        ("org_r1", "161", days_ago(1)): ("16.10", "USD"),
        ("org_r1", "161", days_ago(0)): ("16.11", "USD"),
        ("org_r2", "162", days_ago(0)): ("16.20", "USD")}, timeout=30,
        msg="meta_spend_daily over the Redis transport")
    assert stub.count("/act_162/") == 2          # the 500, then the retry
    harness.wait_until(lambda: meta.db.query(
        "select org_id, status, attempts from job_runs where job = 'meta_spend' order by org_id")
        == [("org_r1", "succeeded", 1), ("org_r2", "succeeded", 2)], timeout=15,
        msg="job_runs to record the fan-out runs")
    assert not [o for o in c.json_lines() if o.get("event") == "redis_unreachable"]


def test_spend_upsert_updates_and_adhoc_all_orgs(meta, stub):
    stub.add_account("333", token="tokC-11223344", rows=[(days_ago(0), "10.00")])
    stub.add_account("444", token="tokD-55667788", rows=[(days_ago(0), "20.00")])
    meta.connect("org_c", "333", "tokC-11223344")
    meta.connect("org_d", "act_444", "tokD-55667788")
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_spend"))       # no org: every active connection
    assert r["status"] == "succeeded"
    assert meta.spend() == {("org_c", "333", days_ago(0)): ("10.00", "USD"),
                            ("org_d", "444", days_ago(0)): ("20.00", "USD")}
    stub.set_rows("333", [(days_ago(0), "10.50"), (days_ago(1), "3.00")])
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_c"))
    assert r["status"] == "succeeded"
    assert meta.spend("org_c") == {("org_c", "333", days_ago(0)): ("10.50", "USD"),
                                   ("org_c", "333", days_ago(1)): ("3.00", "USD")}
    assert meta.db.scalar("select count(*) from meta_spend_daily") == 3


def test_spend_skips_disabled_needs_reauth_and_no_account(meta, stub):
    stub.add_account("555", token="tokE-aabbccdd", rows=[(days_ago(0), "1.00")])
    meta.connect("org_off", "555", "tokE-aabbccdd", status="disabled")
    meta.connect("org_reauth", "555", "tokE-aabbccdd", status="needs_reauth")
    meta.connect("org_noacct", None, "tokE-aabbccdd")
    meta.connect("org_on", "555", "tokE-aabbccdd")
    c = meta.consumer(META_SPEND_ENABLED="true")
    harness.wait_until(lambda: meta.db.scalar(
        "select count(*) from job_runs where job = 'meta_spend' and status = 'succeeded'") == 1,
        timeout=30, msg="the one fan-out run")
    assert meta.db.query("select org_id from job_runs where job = 'meta_spend'") == [("org_on",)]
    for org in ("org_off", "org_reauth", "org_noacct"):
        r = meta.wait_run(meta.enqueue("meta_spend", org=org))
        assert r["status"] == "succeeded" and r["attempts"] == 1
    assert stub.count("/insights") == 1
    assert set(meta.spend()) == {("org_on", "555", days_ago(0))}
    assert c.returncode is None


def test_spend_190_marks_needs_reauth_without_retry(meta, stub):
    stub.add_account("666", token="tokF-good", rows=[(days_ago(0), "1.00")])
    meta.connect("org_bad", "666", "tokF-revoked-0000")    # unknown to Meta
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_bad"))
    assert r["status"] == "dead" and r["attempts"] == 1
    assert "Invalid OAuth access token" in r["error"]
    c = meta.conn("org_bad")
    assert c["status"] == "needs_reauth"
    assert "Invalid OAuth access token" in c["last_error"] and "code 190" in c["last_error"]
    assert stub.count("/act_666/") == 1
    # now skipped
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_bad"))
    assert r["status"] == "succeeded" and stub.count("/act_666/") == 1


def test_spend_token_with_crlf_is_never_sent(meta, stub):
    """A stored access token with CR/LF was sent as a header (header
    injection): it is refused before any request, like an invalid token."""
    stub.add_account("777", token="tokI-good0001", rows=[(days_ago(0), "7.77")])
    meta.connect("org_inj", "777", "tokI-good0001\r\nX-Injected: 1")
    meta.secrets.add("tokI-good0001")
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_inj"))
    assert r["status"] == "dead", r
    assert "not a valid token" in r["error"], r
    assert stub.count("/act_777/") == 0
    assert meta.conn("org_inj")["status"] == "needs_reauth"


def test_spend_all_orgs_one_bad_token_does_not_stop_the_others(meta, stub):
    stub.add_account("121", token="tokM-fine0001", rows=[(days_ago(0), "1.21")])
    meta.connect("org_bad2", "120", "tokM-unknown02")
    meta.connect("org_fine", "121", "tokM-fine0001")
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_spend"))
    assert r["status"] == "dead" and r["attempts"] == 1
    assert r["error"].startswith("1 of 2 orgs failed; first: org org_bad2: Invalid OAuth")
    assert meta.conn("org_bad2")["status"] == "needs_reauth"
    assert meta.spend() == {("org_fine", "121", days_ago(0)): ("1.21", "USD")}


def test_spend_throttled_waits_for_the_usage_header(meta, stub):
    stub.add_account("777", token="tokG-12345678", rows=[(days_ago(0), "7.00")])
    stub.fail("777", status=400, code=17, subcode=2446079, usage_minutes=1,
              message="(#17) User request limit reached")
    meta.connect("org_t", "777", "tokG-12345678")
    meta.consumer()
    run_id = meta.enqueue("meta_spend", org="org_t")
    r = meta.wait_run(run_id, statuses=("failed",))
    assert "User request limit reached" in r["error"]
    # retried after the minute Meta asked for, not after the 800 ms backoff cap
    assert 50 <= r["run_at_in_s"] <= 61, r
    # the org's throttle window is open: another run of the org is deferred
    # (no attempt, no request), while other orgs go on
    until = meta.db.scalar("select extract(epoch from until - now()) from org_throttle"
                           " where org_id = 'org_t'")
    assert until is not None and 50 <= until <= 61
    stub.add_account("779", token="tokG-other000", rows=[(days_ago(0), "7.79")])
    meta.connect("org_u", "779", "tokG-other000")
    second = meta.enqueue("meta_spend", org="org_t")
    other = meta.enqueue("meta_spend", org="org_u")
    assert meta.wait_run(other)["status"] == "succeeded"
    harness.wait_until(lambda: (lambda r: r["status"] == "queued" and r["attempts"] == 0
                                and r["run_at_in_s"] > 40)(meta.run_row(second)),
                       timeout=10, msg="the second run of org_t to be deferred")
    time.sleep(2.0)    # longer than any backoff: the first run must not have been retried
    assert stub.count("/act_777/") == 1
    assert meta.run_row(run_id)["status"] == "failed"
    # the minute passes (moved forward instead of waited for): both runs go through
    meta.db.execute("update org_throttle set until = now() where org_id = 'org_t'")
    meta.db.execute("update job_runs set run_at = now() where id in (%s, %s)", (run_id, second))
    r = meta.wait_run(run_id)
    assert r["status"] == "succeeded" and r["attempts"] == 2
    assert meta.wait_run(second)["status"] == "succeeded"
    assert meta.spend("org_t") == {("org_t", "777", days_ago(0)): ("7.00", "USD")}


def test_spend_throttled_429_recovers_after_retry_after(meta, stub):
    stub.add_account("778", token="tokH-87654321", rows=[(days_ago(0), "8.00")])
    stub.fail("778", status=429, code=4, message="(#4) Application request limit reached",
              headers={"Retry-After": "2"})
    meta.connect("org_r", "778", "tokH-87654321")
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_r"), timeout=30)
    assert r["status"] == "succeeded" and r["attempts"] == 2
    times = [x["at"] for x in stub.request_log() if "/act_778/" in x["path"]]
    assert len(times) == 2 and times[1] - times[0] >= 1.9
    assert meta.spend("org_r") == {("org_r", "778", days_ago(0)): ("8.00", "USD")}


def test_spend_5xx_and_code_2_are_retried(meta, stub):
    stub.add_account("888", token="tokI-abcdef12", rows=[(days_ago(0), "8.88")])
    stub.fail("888", status=500, code=1, message="An unknown error occurred", times=1)
    stub.fail("888", status=503, code=2, message="Service temporarily unavailable", times=1)
    meta.connect("org_5", "888", "tokI-abcdef12")
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_5"))
    assert r["status"] == "succeeded" and r["attempts"] == 3
    assert stub.count("/act_888/") == 3
    assert meta.spend("org_5") == {("org_5", "888", days_ago(0)): ("8.88", "USD")}


def test_spend_permanent_error_fails_with_metas_message(meta, stub):
    meta.connect("org_p", "999", "tokJ-noaccess")
    stub.add_token("tokJ-noaccess")           # valid token, no access to act_999
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_p"))
    assert r["status"] == "dead" and r["attempts"] == 1
    assert "Unsupported get request" in r["error"] and "code 100" in r["error"]
    assert meta.conn("org_p")["status"] == "active"


def mapped(proc, name):
    with open("/proc/%d/maps" % proc.pid) as f:
        return any(name in line for line in f)


def test_libcurl_is_loaded_by_the_first_graph_call_only(meta, stub):
    """libcurl is opened on first use (dlopen): a consumer that never calls
    the Graph API does not carry it (0.6 MiB of resident memory)."""
    stub.add_account("161", token="tokL-16161616", rows=[(days_ago(0), "1.61")])
    meta.connect("org_l", "161", "tokL-16161616")
    c = meta.consumer()
    r = meta.wait_run(meta.enqueue("noop"))
    assert r["status"] == "succeeded"
    assert not mapped(c, "libcurl.so")
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_l"))
    assert r["status"] == "succeeded", r
    assert mapped(c, "libcurl.so")


def test_without_a_loadable_libcurl_meta_runs_fail_with_the_reason(meta, stub, tmp_path):
    """A deployment whose libcurl cannot be loaded: the Meta runs are dead
    at once (no retry will do better), the error says why, and the consumer
    carries on with other work."""
    (tmp_path / "libcurl.so.4").write_text("not a shared object\n")
    stub.add_account("171", token="tokM-17171717", rows=[(days_ago(0), "1.71")])
    meta.connect("org_m", "171", "tokM-17171717")
    c = meta.consumer(LD_LIBRARY_PATH=str(tmp_path))
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_m"))
    assert r["status"] == "dead" and r["attempts"] == 1, r
    assert "cannot load libcurl.so.4" in r["error"], r["error"]
    assert stub.count("/act_171/") == 0
    assert meta.wait_run(meta.enqueue("noop"))["status"] == "succeeded"
    assert c.returncode is None, c.log_tail()


def test_spend_metas_message_echoing_the_token_is_scrubbed(meta, stub):
    tok = "EAAGm0PX4ZCpsBAMalformed77"
    stub.add_account("131", token=tok, rows=[(days_ago(0), "1.31")])
    stub.fail("131", status=400, code=190, type="OAuthException",
              message="Malformed access token %s (client secret %s)" % (tok, APP_SECRET))
    meta.connect("org_echo", "131", tok)
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_echo"))
    assert r["status"] == "dead"
    assert r["error"].startswith("Malformed access token [REDACTED] (client secret [REDACTED])")
    c = meta.conn("org_echo")
    assert c["status"] == "needs_reauth" and "[REDACTED]" in c["last_error"]
    # assert_no_secrets (fixture teardown) checks the logs and the database


def test_spend_oversized_answer_and_inexact_number_fail(meta, stub):
    stub.add_account("141", token="tokN-oversize1", rows=[(days_ago(0), "1.41")])
    stub.oversize("141", 5 << 20)
    stub.add_account("151", token="tokN-inexact01", rows=[(days_ago(0), 1.234)])
    meta.connect("org_big", "141", "tokN-oversize1")
    meta.connect("org_num", "151", "tokN-inexact01")
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_big"))
    assert r["status"] == "dead" and "response body over 4194304 bytes" in r["error"]
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_num"))
    assert r["status"] == "dead" and "spend is not an exact amount" in r["error"]
    assert meta.spend() == {}
    assert meta.conn("org_num")["status"] == "active"


def test_spend_timeout_is_retried(meta, stub):
    stub.add_account("1010", token="tokK-slowslow", rows=[(days_ago(0), "10.10")])
    stub.delay("1010", 1.5, times=1)
    meta.connect("org_slow", "1010", "tokK-slowslow")
    c = meta.consumer(META_HTTP_TIMEOUT_MS="400")
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_slow"))
    assert r["status"] == "succeeded" and r["attempts"] == 2
    line = c.wait_for_log({"event": "run_failed"})
    assert "timed out after 400 ms" in line["error"]
    assert "GET /v21.0/act_1010/insights" in line["error"]


def test_spend_paging_next_to_another_origin_is_not_followed(meta, stub):
    stub.add_account("1111", token="tokL-origin00", rows=[(days_ago(1), "1.00"),
                                                           (days_ago(0), "2.00")])
    stub.configure(page_size=1, next_origin="http://localhost:%d" % stub.port)
    meta.connect("org_o", "1111", "tokL-origin00")
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_spend", org="org_o"))
    assert r["status"] == "dead"
    assert "another origin" in r["error"]
    assert stub.count("/act_1111/") == 1


# ---------------------------------------------------------------------------
# meta_token_refresh
# ---------------------------------------------------------------------------

def test_token_refresh_inside_outside_window_and_expired(meta, stub):
    stub.add_token("tokIn-00000001", exchange_to="tokNew-99999999", expires_in=5183944)
    stub.add_token("tokOut-0000002")
    stub.add_token("tokOld-0000003")
    meta.secrets.add("tokNew-99999999")
    meta.connect("org_in", "1", "tokIn-00000001", expires="+2 days")
    meta.connect("org_out", "2", "tokOut-0000002", expires="+30 days")
    meta.connect("org_exp", "3", "tokOld-0000003", expires="-1 hour")
    meta.connect("org_never", "4", "tokNever-000004", expires=None)
    meta.consumer(META_TOKEN_REFRESH_ENABLED="true")
    harness.wait_until(lambda: meta.db.scalar(
        "select \"lastStatus\" from job_runner_state where id = 'meta_token_refresh'"),
        timeout=30, msg="the cycle to run meta_token_refresh")
    assert meta.db.scalar("select \"lastStatus\" from job_runner_state"
                          " where id = 'meta_token_refresh'") == "succeeded"
    c = meta.conn("org_in")
    assert c["access_token"] == "tokNew-99999999" and c["status"] == "active"
    assert abs(c["expires_in_s"] - 5183944) < 60
    assert meta.conn("org_out")["access_token"] == "tokOut-0000002"
    c = meta.conn("org_exp")
    assert c["status"] == "needs_reauth" and c["last_error"] == "token expired"
    assert meta.conn("org_never")["access_token"] == "tokNever-000004"
    # one exchange, for org_in only; an expired token is never sent
    log = [r for r in stub.request_log() if r["path"].endswith("/oauth/access_token")]
    assert len(log) == 1
    q = log[0]["query"]
    assert q["fb_exchange_token"] == "tokIn-00000001" and q["client_id"] == APP_ID
    assert q["client_secret"] == APP_SECRET and q["grant_type"] == "fb_exchange_token"
    assert log[0]["authorization"] is None


def test_token_refresh_190_and_one_org(meta, stub):
    stub.add_token("tokOk-00000005")
    meta.connect("org_gone", "5", "tokGone-0000006", expires="+1 day")   # unknown to Meta
    meta.connect("org_ok", "6", "tokOk-00000005", expires="+1 day")
    meta.consumer()
    r = meta.wait_run(meta.enqueue("meta_token_refresh", org="org_gone"))
    assert r["status"] == "dead" and r["attempts"] == 1
    c = meta.conn("org_gone")
    assert c["status"] == "needs_reauth" and "code 190" in c["last_error"]
    assert meta.conn("org_ok")["access_token"] == "tokOk-00000005"   # not its org
    r = meta.wait_run(meta.enqueue("meta_token_refresh", org="org_ok"))
    assert r["status"] == "succeeded"
    new = meta.conn("org_ok")["access_token"]
    meta.secrets.add(new)
    assert new != "tokOk-00000005" and new.startswith("EAAStub")


def test_token_refresh_without_app_credentials_fails_clearly(meta, stub):
    meta.consumer(META_APP_ID=None, META_APP_SECRET=None)
    # nothing due: nothing to complain about (an installation without Meta)
    r = meta.wait_run(meta.enqueue("meta_token_refresh", META_APP_ID=None, META_APP_SECRET=None))
    assert r["status"] == "succeeded"
    meta.connect("org_x", "7", "tokX-00000007", expires="+1 day")
    meta.connect("org_y", "8", "tokY-00000008", expires="-1 day")
    r = meta.wait_run(meta.enqueue("meta_token_refresh", META_APP_ID=None, META_APP_SECRET=None))
    assert r["status"] == "dead" and r["attempts"] == 1
    assert "META_APP_ID" in r["error"] and "META_APP_SECRET" in r["error"]
    assert stub.count() == 0
    assert meta.conn("org_x")["access_token"] == "tokX-00000007"
    assert meta.conn("org_y")["status"] == "needs_reauth"      # no Meta call needed for that


def test_spend_cancel_ends_a_graph_transfer_under_way(meta, stub):
    """A cancel of a running meta_spend run stops the Graph call it waits on
    (the HTTP client's transfer ends on the run's stop flag): the run ends
    cancelled within 2 s (5 s allowed here), long before Meta would answer."""
    stub.add_account("2020", token="tokK-cancelme", rows=[(days_ago(0), "20.20")])
    stub.delay("2020", 60, times=1)
    meta.connect("org_cancel", "2020", "tokK-cancelme")
    meta.consumer(META_HTTP_TIMEOUT_MS="120000")
    rid = meta.enqueue("meta_spend", org="org_cancel")
    meta.wait_run(rid, statuses=("running",))
    time.sleep(0.5)                                   # inside the Graph call
    t0 = time.monotonic()
    p = meta.run("producer", ["runs", "cancel", rid, "--json"])
    assert p.wait(30) == 0, p.log_tail()
    r = meta.wait_run(rid, statuses=("cancelled",), timeout=30)
    assert time.monotonic() - t0 < 5.0, "cancelled after %.1f s" % (time.monotonic() - t0)
    assert r["status"] == "cancelled", r
    assert meta.spend("org_cancel") == {}
