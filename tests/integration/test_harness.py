"""The harness itself, against the real servers (no jobrunner binaries needed)."""

import http.server
import json
import os
import re
import signal
import threading
import time

import psycopg2
import pytest

import harness

# ---- PostgreSQL -----------------------------------------------------------------


def test_postgres_starts_and_answers(pg):
    assert re.fullmatch(r"postgresql://jobrunner:[A-Za-z0-9%]+@127\.0\.0\.1:\d+/postgres", pg.url)
    assert all(c in pg.app_password for c in " @:/%")
    assert pg.query("SELECT 1, 'a'") == [(1, "a")]
    assert pg.scalar("SHOW fsync") == "off"
    assert pg.scalar("SHOW max_connections") == "200"
    assert pg.execute("CREATE TABLE IF NOT EXISTS t (x int)") == -1
    assert pg.execute("INSERT INTO t VALUES (%s), (%s)", (1, 2)) == 2


def test_binaries_url_needs_its_password(pg):
    """The URL the binaries get authenticates with the password (a
    secret the secrets check then looks for); a wrong one is refused."""
    import psycopg2
    conn = psycopg2.connect(pg.url, connect_timeout=5)
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone()[0] == "jobrunner"
    conn.close()
    bad = pg.url.replace(":" + pg.url.split(":")[2].split("@")[0] + "@", ":wrong@")
    assert bad != pg.url
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(bad, connect_timeout=5)
    assert pg.app_password in harness.secrets()


_seen_dbs = []


@pytest.mark.parametrize("round_", [1, 2])
def test_a_new_database_per_test(pg, db_url, db, round_):
    assert db.url == db_url
    assert re.match(r"postgresql://jobrunner:[^@]+@127\.0\.0\.1:%d/t_" % pg.port, db_url)
    assert db.dbname not in _seen_dbs
    _seen_dbs.append(db.dbname)
    # Empty: the table made in the previous round lives in another database.
    assert db.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'mine'") == 0
    db.execute("CREATE TABLE mine (v text)")
    db.execute("INSERT INTO mine VALUES (%s)", ("r%d" % round_,))
    # The URL works for a plain libpq client too.
    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT v FROM mine")
            assert cur.fetchall() == [("r%d" % round_,)]
    finally:
        conn.close()


def test_postgres_stop_start_and_kill_keep_data(pg_fresh):
    pg = pg_fresh
    pg.execute("CREATE TABLE k (v int)")
    pg.execute("INSERT INTO k VALUES (1)")
    pg.stop()
    assert not pg.running
    with pytest.raises(psycopg2.OperationalError):
        pg.connect(connect_timeout=1)
    pg.start()
    assert pg.query("SELECT v FROM k") == [(1,)]
    # A crash: committed rows survive recovery, and the port is the same.
    port = pg.port
    pg.execute("INSERT INTO k VALUES (2)")
    other = pg.connect()        # a backend that the kill must take down too
    pg.kill()
    assert not pg.running
    with pytest.raises(psycopg2.Error):
        with other.cursor() as cur:
            cur.execute("SELECT 1")
    other.close()
    pg.start()
    assert pg.port == port
    assert pg.query("SELECT v FROM k ORDER BY v") == [(1,), (2,)]


# ---- Redis ----------------------------------------------------------------------


def test_redis_starts_and_answers(redis_server):
    assert redis_server.url == "redis://127.0.0.1:%d/0" % redis_server.port
    r = redis_server.client()
    assert r.set("k", "v") is True
    assert r.get("k") == "v"          # decode_responses
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert r.config_get("save") == {"save": ""}
    # Without AOF a restart loses everything.
    redis_server.restart()
    assert redis_server.client().get("k") is None


def test_redis_aof_survives_kill(redis_aof):
    r = redis_aof.client()
    r.xadd("s", {"f": "1"})
    r.set("k", "v")
    redis_aof.kill()
    assert not redis_aof.running
    redis_aof.start()
    r = redis_aof.client()
    assert r.get("k") == "v"
    assert r.xlen("s") == 1


def test_redis_extra_args():
    server = harness.Redis(extra_args=["--maxmemory-policy", "allkeys-lru"])
    try:
        got = server.client().config_get("maxmemory-policy")
        assert got == {"maxmemory-policy": "allkeys-lru"}
    finally:
        server.cleanup()
    assert not server.running
    assert not os.path.exists(server.dir)


# ---- Proc -----------------------------------------------------------------------


def test_proc_output_and_terminate(spawn):
    p = spawn("/bin/sh", ["-c", 'echo "plain line"; echo \'{"event":"x","n":1}\'; exec sleep 30'])
    assert p.wait_for_log({"event": "x"}, timeout=5) == {"event": "x", "n": 1}
    assert p.wait_for_log(r"plain", timeout=5) == "plain line"
    assert p.wait_for_log(r'"n":1', timeout=5) == {"event": "x", "n": 1}
    assert p.wait_for_log(lambda e: e.get("n") == 1, timeout=5)["event"] == "x"
    assert p.lines() == ["plain line", '{"event":"x","n":1}']
    assert p.json_lines() == [{"event": "x", "n": 1}]
    assert p.returncode is None
    assert p.terminate(timeout=5) == -signal.SIGTERM
    assert p.returncode == -signal.SIGTERM


def test_proc_env_is_minimal(spawn, monkeypatch):
    monkeypatch.setenv("JR_STRAY_VARIABLE", "leak")
    p = spawn("/bin/sh", ["-c", "env"], env={"JR_GIVEN": 7, "PATH": "/bin"})
    assert p.wait(timeout=5) == 0
    env = dict(line.split("=", 1) for line in p.lines() if "=" in line)
    assert env["JR_GIVEN"] == "7"
    assert env["PATH"] == "/bin"
    assert "JR_STRAY_VARIABLE" not in env
    assert "HOME" not in env


def test_proc_wait_for_log_after_mark_and_signal(spawn):
    script = ('trap \'echo "{\\"event\\":\\"usr1\\"}"\' USR1; echo \'{"event":"ready"}\'; '
              'while :; do sleep 0.05; done')
    p = spawn("/bin/sh", ["-c", script])
    p.wait_for_log({"event": "ready"}, timeout=5)
    mark = p.mark()
    p.signal(signal.SIGUSR1)
    assert p.wait_for_log({"event": "usr1"}, timeout=5, after=mark) == {"event": "usr1"}
    with pytest.raises(AssertionError, match="timed out"):
        p.wait_for_log({"event": "ready"}, timeout=0.3, after=p.mark())
    assert p.kill9() == -signal.SIGKILL


def test_proc_wait_for_log_fails_fast_when_process_exits(spawn):
    p = spawn("/bin/sh", ["-c", "echo bye; exit 3"], name="quitter")
    started = time.monotonic()
    with pytest.raises(AssertionError) as ei:
        p.wait_for_log("never printed", timeout=20)
    assert time.monotonic() - started < 5
    assert "quitter exited with code 3" in str(ei.value)
    assert "bye" in str(ei.value)          # the log tail
    assert p.wait(timeout=1) == 3


def test_proc_wait_times_out_with_log_tail(spawn):
    p = spawn("/bin/sh", ["-c", "echo still-here; exec sleep 30"])
    p.wait_for_log("still-here", timeout=5)
    with pytest.raises(AssertionError, match="still running[^$]*still-here"):
        p.wait(timeout=0.2)


def test_failure_report_names_procs_and_servers(spawn, redis_server):
    mark = harness.registry_mark()
    p = spawn("/bin/sh", ["-c", "echo report-me; exec sleep 30"])
    p.wait_for_log("report-me", timeout=5)
    text = harness.failure_report(since=mark)
    assert "report-me" in text
    assert "pid %d" % p.pid in text
    # redis_server was made before the mark but is still running: included.
    assert "redis :%d" % redis_server.port in text


def test_spawn_bare_name_skips_without_binaries(spawn, monkeypatch):
    monkeypatch.setenv("JR_BIN", "/nonexistent-jr-bin")
    with pytest.raises(pytest.skip.Exception, match="missing"):
        spawn("producer")


# ---- helpers --------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(n)) if n else None
        self._answer(201, {"got": body, "auth": self.headers.get("Authorization")})

    def do_GET(self):
        if self.path == "/text":
            data = b"hello"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._answer(404, {"error": {"code": "not_found", "message": "no"}})

    def _answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_http_helper():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    base = "http://127.0.0.1:%d" % server.server_address[1]
    try:
        status, headers, body = harness.http("POST", base + "/x", {"a": 1},
                                             headers={"Authorization": "Bearer t"})
        assert status == 201
        assert headers["content-type"] == "application/json"
        assert body == {"got": {"a": 1}, "auth": "Bearer t"}
        status, _, body = harness.http("GET", base + "/missing")
        assert status == 404 and body["error"]["code"] == "not_found"
        assert harness.http("GET", base + "/text")[2] == "hello"
    finally:
        server.shutdown()
        server.server_close()


def test_wait_until_and_free_port():
    t0 = time.monotonic()
    assert harness.wait_until(lambda: time.monotonic() - t0 > 0.1 and "done", timeout=5) == "done"
    with pytest.raises(AssertionError, match="the impossible"):
        harness.wait_until(lambda: False, timeout=0.2, msg="the impossible")
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        harness.wait_until(lambda: 1 / 0, timeout=0.2, ignore=(ZeroDivisionError,))
    port = harness.free_port()
    assert 1024 <= port <= 65535
