"""Redis as platform teams deploy it (issue 11), with the real servers:
redis-server on --tls-port only with certificates made here by openssl;
a master, a replica and three redis-sentinel processes; ACL users; a
server `timeout` that closes idle connections.

- runs go through TLS, and a wrong CA or name stops start-up (exit 3)
  with the cause named;
- every bad Redis setting stops start-up with its exit code and a
  message that shows no password (even one holding '@' and ':');
- an ACL user with exactly the permissions docs/deployment.md lists runs
  everything, and hears once, at info level, that the eviction policy
  could not be checked;
- the idle-timeout repro answers 202 every time, and a dead-run retry
  over such a connection lands on the stream;
- health says "replica" when the node is one;
- SENTINEL FAILOVER and kill -9 of the master under load: no accepted
  run is lost (REDIS_MIN_REPLICAS_ACK=1) and the system is back on the
  new master within 10 s.
"""

import os
import re
import threading
import time
import uuid

import pytest

import harness
import jrcli
import jrdeploy
from apiclient import System, bin_dir_or_skip

pytestmark = pytest.mark.skipif(not os.path.exists(jrdeploy.REDIS_SENTINEL),
                                reason="redis-sentinel is not installed (scripts/deps.sh)")

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOYMENT_MD = os.path.join(HERE, "..", "..", "docs", "deployment.md")


def start_check(bins, db_url, redis_url, **env):
    """Runs `consumer --drain-once` (start-up checks, then a drain) and
    returns (exit code, everything it printed)."""
    p = jrcli.run(bins.consumer, ["--drain-once"],
                  jrcli.env(db_url, REDIS_URL=redis_url, **env), timeout=60)
    return p.returncode, p.stdout + p.stderr


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs():
    return jrdeploy.make_certs(harness.make_tmpdir("certs"))


def test_runs_over_tls_and_clear_refusals(bins, db, db_url, spawn, certs):
    r = jrdeploy.TlsRedis(certs)
    tls = {"REDIS_URL": r.url, "REDIS_TLS_CA_FILE": certs["ca"]}
    ids = jrcli.enqueue(bins, db_url, "noop", count=20, **tls)
    c = r.client()
    assert c.xlen("jr:runs") >= 20, "the runs went to Redis over TLS, not to PostgreSQL"
    con = spawn("consumer", [], env=jrcli.env(db_url, CONSUMER_NAME="tls-c1", **tls), name="tls-c1")
    con.wait_for_log({"event": "job_runner_started"}, timeout=20)
    jrcli.wait_runs(db, ids, "succeeded", timeout=30)
    names = [cl.get("name") for cl in c.client_list()]
    assert "jobrunner:consumer:tls-c1" in names, names   # CLIENT SETNAME
    assert "jobrunner:history:tls-c1" in names, names
    con.stop()

    rc, out = start_check(bins, db_url, r.url, REDIS_TLS_CA_FILE=certs["other_ca"])
    assert rc == 3, out
    assert "unknown CA" in out, out
    rc, out = start_check(bins, db_url, r.url, REDIS_TLS_CA_FILE=certs["ca"],
                          REDIS_TLS_SERVER_NAME="wrong.example")
    assert rc == 3, out
    assert "name mismatch" in out and "wrong.example" in out, out
    # the IP address is in the certificate too
    rc, out = start_check(bins, db_url, r.url.replace("localhost", "127.0.0.1"),
                          REDIS_TLS_CA_FILE=certs["ca"])
    assert rc == 0, out
    # a CA file that cannot be read is a configuration error naming the variable
    rc, out = start_check(bins, db_url, r.url, REDIS_TLS_CA_FILE="/nonexistent/ca.pem")
    assert rc == 2 and "REDIS_TLS_CA_FILE" in out, out
    c.close()
    r.cleanup()
    # a server whose certificate has expired
    old = jrdeploy.TlsRedis(certs, cert=certs["expired"])
    rc, out = start_check(bins, db_url, old.url, REDIS_TLS_CA_FILE=certs["ca"])
    assert rc == 3 and "certificate expired" in out, out
    old.cleanup()


# --------------------------------------------------------------------------
# bad settings
# --------------------------------------------------------------------------

SECRET = "s3cr@t:pw"          # '@' and ':' unencoded
SECRET_ENC = "s3cr%40t%3Apw"


def test_bad_settings_stop_startup_without_secrets(bins, db, db_url):
    r = harness.Redis()
    port = r.port
    c = r.client()
    c.config_set("requirepass", SECRET)
    c.close()
    cases = [
        # (REDIS_URL, exit code, text that must be in the message)
        ("redis://:wr@ng:pass@127.0.0.1:%d/0" % port, 3, "WRONGPASS"),
        ("redis://127.0.0.1:%d/0" % port, 3, "NOAUTH"),
        ("redis://:%s@127.0.0.1:99999/0" % SECRET, 2, "invalid port"),
        ("redis://:%s@127.0.0.1:1,127.0.0.1:2/0" % SECRET, 2, "sentinel form"),
        ("memcached://:%s@127.0.0.1:%d" % (SECRET, port), 2, "unknown scheme"),
        ("redis-sentinel://:%s@127.0.0.1:%d/0" % (SECRET, port), 2, "master name"),
    ]
    for url, code, text in cases:
        rc, out = start_check(bins, db_url, url)
        assert rc == code, (url, out)
        assert text in out, (url, out)
        for secret in (SECRET, SECRET_ENC, "wr@ng:pass", "wr@ng"):
            assert secret not in out, (url, out)
    # the right password, written both ways, is accepted
    for pw in (SECRET, SECRET_ENC):
        rc, out = start_check(bins, db_url, "redis://:%s@127.0.0.1:%d/0" % (pw, port))
        assert rc == 0, out
        assert SECRET not in out and SECRET_ENC not in out, out

    # an ACL user without one command the transport needs: named, exit 3
    c = r.client(password=SECRET)
    c.execute_command("ACL", "SETUSER", "limited", "on", ">limitedpw", "~jr:*", "+@all",
                      "-xautoclaim")
    rc, out = start_check(bins, db_url, "redis://limited:limitedpw@127.0.0.1:%d/0" % port)
    assert rc == 3, out
    assert "XAUTOCLAIM" in out and "limitedpw" not in out, out
    # an ACL user limited to other keys
    c.execute_command("ACL", "SETUSER", "otherkeys", "on", ">otherpw", "~app:*", "+@all")
    rc, out = start_check(bins, db_url, "redis://otherkeys:otherpw@127.0.0.1:%d/0" % port)
    assert rc == 3 and "XADD" in out, out
    c.close()
    r.cleanup()

    # a Redis Cluster node
    d = harness.make_tmpdir("cluster")
    port = harness.free_port()
    while port > 55535:   # a cluster node's bus port is its port + 10000
        port = harness.free_port()
    cl = harness.Redis(port=port, extra_args=["--cluster-enabled", "yes", "--cluster-config-file",
                                              os.path.join(d, "nodes.conf")])
    rc, out = start_check(bins, db_url, cl.url)
    assert rc == 3 and "Cluster is not supported" in out, out
    cl.cleanup()


def test_drain_once_fails_when_it_cannot_claim_from_redis(bins, db, db_url, redis_server):
    ids = jrcli.enqueue(bins, db_url, "noop", count=3, REDIS_URL=redis_server.url)
    redis_server.stop()   # the runs stay in Redis (no AOF: gone, but drain cannot know)
    rc, out = start_check(bins, db_url, redis_server.url)
    assert rc == 3 and "drain_incomplete" in out, out
    assert len(ids) == 3


# --------------------------------------------------------------------------
# ACL user with the documented permissions
# --------------------------------------------------------------------------

def documented_acl_line():
    """The ACL SETUSER line of docs/deployment.md (the test uses exactly it)."""
    with open(DEPLOYMENT_MD) as f:
        text = f.read()
    m = re.search(r"^ACL SETUSER jobrunner .*$", text, re.M)
    assert m, "docs/deployment.md has no 'ACL SETUSER jobrunner ...' line"
    return m.group(0)


@pytest.mark.parametrize("line_of", ["documented", "earlier_without_script_exists"])
def test_documented_acl_user_runs_everything(bins, db, db_url, redis_server, spawn, line_of):
    """The documented line runs everything; so does the line of earlier
    versions, without +script|exists (each connection then loads the
    scripts instead of asking which the server has)."""
    line = documented_acl_line().replace(">CHANGE-ME", ">aclpw")
    assert " +script|exists" in line
    if line_of != "documented":
        line = line.replace(" +script|exists", "")
    c = redis_server.client()
    c.execute_command(*line.split())
    c.execute_command("ACL", "SETUSER", "default", "off")   # nobody else gets in
    url = "redis://jobrunner:aclpw@127.0.0.1:%d/0" % redis_server.port
    ids = jrcli.enqueue(bins, db_url, "noop", count=5, REDIS_URL=url)
    ids += jrcli.enqueue(bins, db_url, "noop", key="k-%s" % uuid.uuid4().hex, REDIS_URL=url)
    con = spawn("consumer", [], env=jrcli.env(db_url, REDIS_URL=url, CONSUMER_NAME="acl-c1",
                                              WORKER_CONCURRENCY=2), name="acl-c1")
    con.wait_for_log({"event": "job_runner_started"}, timeout=20)
    jrcli.wait_runs(db, ids, "succeeded", timeout=30)
    # a retry and a dead run go through the scripts too
    more = jrcli.enqueue(bins, db_url, "noop", payload='{"failTimes":1}', REDIS_URL=url)
    jrcli.wait_runs(db, more, "succeeded", timeout=30)
    infos = jrcli.events(con, "redis_policy_unchecked")
    assert len(infos) == 1 and infos[0]["level"] == "info", con.log_tail()
    assert not jrcli.events(con, "redis_policy_unknown")
    assert not jrcli.events(con, "claim_failed"), con.log_tail()
    con.stop()


# --------------------------------------------------------------------------
# stale connections
# --------------------------------------------------------------------------

def test_idle_timeout_costs_nothing(db, redis_server):
    bin_dir_or_skip()
    s = System("redis", db, redis_server, consumers=0, tag="idle")
    try:
        r = redis_server.client()
        r.config_set("timeout", 2)
        answers = [s.api.post("/api/integrations/jobs/noop/run", {})]
        time.sleep(4)   # the server closes the producer's idle connections
        answers += [s.api.post("/api/integrations/jobs/noop/run", {}) for _ in range(4)]
        assert [a[0] for a in answers] == [202] * 5, answers
        in_stream = {f.get("id") for _, f in r.xrange("jr:runs", "-", "+")}
        assert {a[2]["id"] for a in answers} <= in_stream, "all five went to Redis, none fell back"

        # a dead run's retry over a connection that died idle
        rid = str(uuid.uuid4())
        db.execute("insert into job_runs (id, job, status, attempts, max_attempts, source,"
                   " payload, enqueued_at, finished_at, error, transport)"
                   " values (%s, 'noop', 'dead', 2, 2, 'adhoc', '{}', now(), now(), 'x', 'redis')",
                   (rid,))
        time.sleep(4)
        st, _, body = s.api.post("/api/integrations/jobs/dead/%s/retry" % rid)
        assert st == 202, body
        assert db.scalar("select status from job_runs where id = %s", (rid,)) == "queued"
        entries = r.xrange("jr:runs", "-", "+")
        assert any(f.get("id") == rid for _, f in entries), "the retried run is on the stream"
        st, _, body = s.api.post("/api/integrations/jobs/dead/%s/retry" % rid)
        assert st == 404, body
        r.close()
    finally:
        s.stop()


def test_dead_retry_with_a_lost_answer_stays_dead_then_goes_once(db, redis_server):
    """Redis takes the retried run but its answer is lost (writes paused
    past the command timeout, twice): the run stays dead (503
    enqueue_outcome_unknown), never queued in neither place; retried again
    once Redis answers, it is on the stream exactly once."""
    bin_dir_or_skip()
    s = System("redis", db, redis_server, consumers=0, tag="lost")
    try:
        r = redis_server.client()
        st, _, _ = s.api.post("/api/integrations/jobs/noop/run", {})   # the pooled connection is ready
        assert st == 202
        rid = str(uuid.uuid4())
        db.execute("insert into job_runs (id, job, status, attempts, max_attempts, source,"
                   " payload, enqueued_at, finished_at, error, transport)"
                   " values (%s, 'noop', 'dead', 2, 2, 'adhoc', '{}', now(), now(), 'x', 'redis')",
                   (rid,))
        t0 = time.monotonic()
        r.execute_command("CLIENT", "PAUSE", 12000, "WRITE")
        st, _, body = s.api.post("/api/integrations/jobs/dead/%s/retry" % rid, timeout=60)
        assert st == 503 and body["error"]["code"] == "enqueue_outcome_unknown", (st, body)
        assert db.scalar("select status from job_runs where id = %s", (rid,)) == "dead"
        time.sleep(max(0.0, 12.5 - (time.monotonic() - t0)))   # the pause is over
        st, _, body = s.api.post("/api/integrations/jobs/dead/%s/retry" % rid)
        assert st == 202, body
        assert db.scalar("select status from job_runs where id = %s", (rid,)) == "queued"
        on_stream = [f for _, f in r.xrange("jr:runs", "-", "+") if f.get("id") == rid]
        assert len(on_stream) == 1, on_stream
        r.close()
    finally:
        s.stop()


# --------------------------------------------------------------------------
# health and Sentinel
# --------------------------------------------------------------------------

def test_health_says_replica(db, redis_server):
    bin_dir_or_skip()
    replica = harness.Redis(extra_args=["--replicaof", "127.0.0.1", str(redis_server.port)])
    try:
        jrdeploy.wait_role(replica, "slave")
        s = System("redis", db, replica, consumers=1, tag="replica")
        try:
            st, _, data = s.api.get("/api/health/extended", token="")
            assert st == 503 and not data["checks"]["redis"]["ok"], data
            assert "replica" in data["checks"]["redis"]["error"], data
            proc, health = s.consumers[0]
            st, _, data = health.get("/health/ready")
            assert st == 503 and "replica" in data["checks"]["redis"]["error"], data
            assert data["redisReachable"] is False, data
        finally:
            s.stop()
    finally:
        replica.cleanup()


def test_sentinel_password(bins, db, db_url, redis_server):
    s = jrdeploy.Sentinel(redis_server.port, requirepass="sent:p@ss")
    try:
        url = jrdeploy.sentinel_url([s])
        rc, out = start_check(bins, db_url, url, REDIS_SENTINEL_PASSWORD="sent:p@ss")
        assert rc == 0, out
        rc, out = start_check(bins, db_url, url)
        assert rc == 3 and "NOAUTH" in out, out
        rc, out = start_check(bins, db_url, url, REDIS_SENTINEL_PASSWORD="wr:ong@pw")
        assert rc == 3 and "REDIS_SENTINEL_PASSWORD" in out, out
        for secret in ("sent:p@ss", "wr:ong@pw"):
            assert secret not in out, out
    finally:
        s.cleanup()


class Loader:
    """Bulk enqueues over HTTP in a thread, about bulk / pause runs a
    second (a load the consumer keeps up with); keeps the ids of every 202."""

    def __init__(self, api, bulk=20, pause=0.05):
        self.api, self.bulk, self.pause = api, bulk, pause
        self.accepted, self.statuses = [], {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                st, _, body = self.api.post("/api/integrations/jobs/noop/run", [{}] * self.bulk,
                                            timeout=30)
            except OSError:
                st, body = "oserror", None
            self.statuses[st] = self.statuses.get(st, 0) + 1
            if st == 202:
                self.accepted.extend(body["ids"])
            time.sleep(self.pause)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(60)
        return list(self.accepted)


def wait_new_master_used(api, health, new_master, within):
    """Polls until the consumer is ready and an enqueue lands on new_master;
    returns the seconds it took."""
    t0 = time.monotonic()
    c = new_master.client()

    seen = []

    def back():
        st, _, data = health.get("/health/ready", timeout=5)
        seen[:] = ["ready %s %s" % (st, data)]
        if st != 200:
            return None
        # entries-added, not XLEN: the consumers trim the stream meanwhile
        before = c.xinfo_stream("jr:runs")["entries-added"]
        st, _, body = api.post("/api/integrations/jobs/noop/run", {}, timeout=10)
        after = c.xinfo_stream("jr:runs")["entries-added"]
        seen.append("enqueue %s %s; entries-added %s -> %s" % (st, body, before, after))
        return st == 202 and after > before
    try:
        harness.wait_until(back, timeout=within, interval=0.2, ignore=(OSError, Exception),
                           msg="back on the new master")
    except AssertionError as e:
        raise AssertionError("%s; last: %s" % (e, seen)) from None
    finally:
        c.close()
    return time.monotonic() - t0


def test_sentinel_failover_and_kill_lose_nothing(db, redis_server):
    bin_dir_or_skip()
    master = redis_server
    fast = ["--repl-diskless-sync-delay", "0"]
    master.client().config_set("repl-diskless-sync-delay", 0)
    # two replicas: with REDIS_MIN_REPLICAS_ACK=1 the new master needs one
    replica = harness.Redis(extra_args=fast + ["--replicaof", "127.0.0.1", str(master.port)])
    spare = harness.Redis(extra_args=fast + ["--replicaof", "127.0.0.1", str(master.port),
                                             "--replica-priority", "0"])   # never promoted
    jrdeploy.wait_role(replica, "slave")
    jrdeploy.wait_role(spare, "slave")
    sentinels = jrdeploy.sentinel_group(master.port)
    jrdeploy.wait_master(sentinels, master.port)
    url = jrdeploy.sentinel_url(sentinels)
    s = None
    for attempt in range(3):
        # sentinels open many outgoing connections: a port that free_port()
        # found free can be taken as an ephemeral port before a binary binds it
        try:
            s = System("redis", db, master, consumers=1, tag="sentinel%d" % attempt,
                       env={"REDIS_URL": url, "REDIS_MIN_REPLICAS_ACK": 1, "JOB_LEASE_MS": 3000})
            break
        except AssertionError as e:
            if "Address already in use" not in str(e) or attempt == 2:
                raise
    try:
        proc, health = s.consumers[0]
        # the producer and the consumer each keep one subscription to
        # +switch-master on some sentinel

        def watchers():
            n = 0
            for x in sentinels:
                c = x.client()
                n += len(c.execute_command("CLIENT", "LIST", "TYPE", "pubsub").strip().splitlines())
                c.close()
            return n >= 2
        harness.wait_until(watchers, timeout=20, msg="+switch-master subscriptions")
        loader = Loader(s.api).start()
        harness.wait_until(lambda: len(loader.accepted) >= 1000, timeout=60,
                           msg="1000 runs accepted before the failover")

        # 1. a planned failover: the replica becomes the master
        sentinels[0].client().execute_command("SENTINEL", "FAILOVER", "mymaster")
        jrdeploy.wait_master(sentinels, replica.port)
        took = wait_new_master_used(s.api, health, replica, within=10)
        assert took <= 10, took
        jrdeploy.wait_role(master, "slave")
        mark = len(loader.accepted)
        harness.wait_until(lambda: len(loader.accepted) >= mark + 500, timeout=60,
                           msg="500 more runs accepted on the new master")

        # 2. a crash of that master: the old one is promoted again
        replica.kill()
        jrdeploy.wait_master(sentinels, master.port, timeout=30)
        replica.start()   # comes back, and is made a replica of the new master
        jrdeploy.wait_role(replica, "slave")
        took = wait_new_master_used(s.api, health, master, within=10)
        assert took <= 10, took
        mark = len(loader.accepted)
        harness.wait_until(lambda: len(loader.accepted) >= mark + 200, timeout=60,
                           msg="200 more runs accepted after the crash")
        accepted = loader.stop()
        assert len(accepted) >= 1700, loader.statuses
        print("accepted %d runs; answers %s" % (len(accepted), loader.statuses))

        # no accepted run is lost: every one reaches succeeded
        jrcli.wait_runs(db, accepted, "succeeded", timeout=90)
        st, _, data = health.get("/health/ready")
        assert st == 200 and data["redisReachable"] is True, data
        st, _, data = s.api.get("/api/health/extended", token="")
        assert st == 200 and data["checks"]["redis"]["ok"], data
    finally:
        s.stop()
        for x in sentinels:
            x.cleanup()
        replica.cleanup()
        spare.cleanup()
