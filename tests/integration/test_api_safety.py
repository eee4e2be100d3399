"""Safety of the producer's HTTP API (docs/operations.md, "Endpoints"): Bearer
auth, no token configured, the token never logged, bodies bounded while received
(413 without buffering), header size, per-connection time and connection
limits, and many concurrent clients.

These are properties of the HTTP layer, the same in both queue modes, so
they run in Redis-less mode only (the enqueue path of both modes is covered
by test_api.py).
"""

import os
import socket
import threading
import time

import pytest

import harness
from apiclient import TOKEN, System, assert_error, bin_dir_or_skip, raw_request, read_response

AUTHED = [
    ("POST", "/api/integrations/jobs/noop/run"),
    ("GET", "/api/integrations/jobs/runs/01890000-0000-7000-8000-000000000000"),
    ("GET", "/api/integrations/jobs/dead"),
    ("POST", "/api/integrations/jobs/dead/01890000-0000-7000-8000-000000000000/retry"),
]
OPEN = ["/api/health", "/api/health/extended", "/api/integrations/jobs/metrics", "/metrics"]


@pytest.fixture
def start(pg):
    bin_dir_or_skip()
    made = []

    def make(**kw):
        kw.setdefault("consumers", 0)
        s = System("redisless", pg.create_database(), tag="safety", **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


@pytest.fixture(scope="module")
def shared(pg):
    """One producer with small limits and one consumer, for the tests that
    do not change its configuration."""
    bin_dir_or_skip()
    # every client here is 127.0.0.1, like clients behind one proxy: no
    # per-address limit (test_hostile.py tests that limit)
    s = System("redisless", pg.create_database(), consumers=1, tag="shared",
               producer_env={"HTTP_MAX_BODY_BYTES": 65536, "LOG_LEVEL": "debug",
                             "HTTP_MAX_CONNECTIONS_PER_IP": 0})
    yield s
    s.stop()


# ---- auth -----------------------------------------------------------------


@pytest.mark.parametrize("auth", [
    None,
    "Bearer",
    "Bearer ",
    "Bearer wrong-token",
    "Bearer " + TOKEN[:-1],
    "Bearer " + TOKEN + "x",
    "Basic " + TOKEN,
    TOKEN,
])
@pytest.mark.parametrize("method,path", AUTHED)
def test_bad_or_missing_token_is_401(shared, auth, method, path):
    headers = {"Authorization": auth} if auth is not None else {}
    resp = shared.api.req(method, path, body={} if method == "POST" else None, token="",
                          headers=headers)
    assert_error(resp, 401, "unauthorized")
    assert resp[1].get("www-authenticate", "").startswith("Bearer"), resp[1]


def test_right_token_passes_and_open_routes_need_none(shared):
    api = shared.api
    assert api.post("/api/integrations/jobs/noop/run", {})[0] == 202
    assert api.req("POST", "/api/integrations/jobs/noop/run", {},
                   token="", headers={"Authorization": "bearer " + TOKEN})[0] == 202
    assert api.get("/api/integrations/jobs/dead")[0] == 200
    for path in OPEN:
        assert api.get(path, token="")[0] == 200, path


def test_auth_is_checked_before_the_job_and_the_body(shared):
    api = shared.api
    # unknown job and broken body: still 401 without the token
    assert_error(api.post("/api/integrations/jobs/no_such_job/run", "{", token="x"), 401)
    # a huge declared body without the token: 401 or 413, never read
    status, raw = raw_request(api.port, (
        "POST /api/integrations/jobs/noop/run HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n").encode())
    assert status in (401, 413), raw[:200]


def test_no_token_configured_means_401_and_a_warning(start):
    s = start(token=None)
    s.producer.wait_for_log({"event": "api_token_missing", "level": "warn"}, timeout=10)
    for method, path in AUTHED:
        resp = s.api.req(method, path, body={} if method == "POST" else None, token="",
                         headers={"Authorization": "Bearer "})
        assert_error(resp, 401, "unauthorized")
        resp = s.api.req(method, path, body={} if method == "POST" else None, token="anything")
        assert_error(resp, 401, "unauthorized")
    assert s.api.get("/api/health", token="")[0] == 200


def test_token_never_appears_in_logs(start):
    secret = "tok-" + os.urandom(12).hex()
    s = start(token=secret, consumers=1, env={"LOG_LEVEL": "debug", "API_TOKEN": secret})
    api = s.api
    api.post("/api/integrations/jobs/noop/run", {"orgId": "o"})
    api.req("POST", "/api/integrations/jobs/noop/run", {}, token=secret + "-wrong")
    api.req("GET", "/api/integrations/jobs/dead?limit=abc")
    api.req("POST", "/api/integrations/jobs/nope/run", "{", token=secret)
    api.get("/api/health/extended", token=secret)
    rid = api.enqueue("noop", {"payload": {"failAlways": True}})["id"]
    api.wait_status(rid, "dead")
    # the producer logs requests at debug: make sure there were some lines
    s.producer.wait_for_log(r"http_request", timeout=10)
    logs = s.logs()
    assert logs.strip()
    assert secret not in logs
    assert secret[4:] not in logs


# ---- bounded bodies -------------------------------------------------------


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_body_over_limit_is_413_at_once(shared):
    """A declared Content-Length over HTTP_MAX_BODY_BYTES is answered 413
    before the client sends a byte of the body."""
    head = ("POST /api/integrations/jobs/noop/run HTTP/1.1\r\nHost: x\r\n"
            "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (TOKEN, 200 * 1024 * 1024)).encode()
    with socket.create_connection(("127.0.0.1", shared.api.port), timeout=10) as sock:
        sock.sendall(head)
        t0 = time.monotonic()
        status, raw = read_response(sock, timeout=10)
        assert time.monotonic() - t0 < 5
    assert status == 413, raw[:300]
    body = raw.partition(b"\r\n\r\n")[2]
    assert b'"payload_too_large"' in body


def test_body_over_limit_with_urllib(shared):
    resp = shared.api.post("/api/integrations/jobs/noop/run", b"[" + b"{}," * 40000 + b"{}]")
    assert_error(resp, 413, "payload_too_large")


def test_chunked_body_over_limit_is_not_buffered(shared):
    """A chunked body (no length known in advance) that grows past the limit
    is answered 413, and the producer does not hold it: its memory does not
    grow by the body's size."""
    pid = shared.producer.pid
    rss0 = _rss_kb(pid)
    total = 6 * 1024 * 1024
    chunk = b"[" + b"{}," * 20000
    with socket.create_connection(("127.0.0.1", shared.api.port), timeout=20) as sock:
        sock.sendall(("POST /api/integrations/jobs/noop/run HTTP/1.1\r\nHost: x\r\n"
                      "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n" % TOKEN).encode())
        sent = 0
        try:
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass   # the server may stop reading once it has answered
        status, raw = read_response(sock, timeout=20)
    assert status == 413, raw[:300]
    grown_kb = _rss_kb(pid) - rss0
    assert grown_kb < 3 * 1024, "producer RSS grew by %d KiB for a %d KiB body" % (grown_kb, total // 1024)
    assert shared.api.up()


def test_body_at_the_limit_is_read(shared):
    """A body of exactly HTTP_MAX_BODY_BYTES is accepted (it is the limit,
    not one byte under it)."""
    item = b'{"orgId":"o"}'
    body = b"[" + b",".join([item] * 4000) + b"]"
    pad = 65536 - len(body)
    assert pad > 0
    body = body + b" " * pad
    assert len(body) == 65536
    status, _, data = shared.api.post("/api/integrations/jobs/noop/run", body,
                                      headers={"Content-Type": "application/json"})
    assert status == 202, data
    assert len(data["ids"]) == 4000


# ---- limits on headers, time and connections -------------------------------


def test_oversized_headers_are_refused(shared):
    big = "X-Filler: " + "a" * 100000 + "\r\n"
    try:
        status, raw = raw_request(shared.api.port, (
            "GET /api/health HTTP/1.1\r\nHost: x\r\n" + big + "\r\n").encode())
    except (BrokenPipeError, ConnectionResetError):
        status, raw = None, b""
    assert status in (None, 400, 413, 414, 431), raw[:300]
    assert status != 200
    assert shared.api.up()


def test_idle_connection_is_closed_after_the_timeout(start):
    s = start(producer_env={"HTTP_TIMEOUT_MS": 1000})
    with socket.create_connection(("127.0.0.1", s.api.port), timeout=15) as sock:
        sock.sendall(b"GET /api/hea")   # and then nothing
        t0 = time.monotonic()
        try:
            data = sock.recv(4096)
        except (ConnectionResetError, socket.timeout):
            data = b""
        waited = time.monotonic() - t0
    assert not data.startswith(b"HTTP/1.1 200"), data
    assert waited < 10, "the server held an idle connection for %.1f s" % waited
    assert s.api.up()


def test_connection_limit(start):
    """With HTTP_MAX_CONNECTIONS slots held by idle clients, a new client
    gets liveness at once (200) and anything else 503 with the connection
    closed, until the per-connection timeout frees a slot; then it is
    served, and the producer is fine."""
    s = start(producer_env={"HTTP_MAX_CONNECTIONS": 4, "HTTP_TIMEOUT_MS": 2000,
                            "HTTP_MAX_CONNECTIONS_PER_IP": 0})
    socks = []
    try:
        for _ in range(4):
            x = socket.create_connection(("127.0.0.1", s.api.port), timeout=5)
            x.sendall(b"GET /api/hea")      # a slot, held idle
            socks.append(x)
        time.sleep(0.2)   # the server has taken them (no answer is due)
        assert s.api.get("/api/health", token="", timeout=20)[0] == 200
        st, hdrs, data = s.api.get("/metrics", token="", timeout=20)
        if st == 503:   # the idle ones may already have timed out on a slow machine
            assert hdrs.get("connection", "").lower() == "close", hdrs
            assert data["error"]["code"] == "unavailable", data
        harness.wait_until(lambda: s.api.get("/metrics", token="")[0] == 200, timeout=20,
                           msg="a slot freed by the idle timeout")
        for x in socks:        # the idle ones were closed by the server
            x.settimeout(5)
            try:
                assert not x.recv(100).startswith(b"HTTP/1.1 200")
            except OSError:
                pass
    finally:
        for x in socks:
            x.close()
    assert s.api.up()


# ---- concurrency ------------------------------------------------------------


def test_many_concurrent_clients(shared):
    """48 clients at once, each a mix of every route; every answer is right
    and the producer stays up."""
    api, db = shared.api, shared.db
    nclients, rounds = 48, 8
    ids, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(nclients)

    def client(n):
        try:
            barrier.wait()
            for i in range(rounds):
                st, _, d = api.post("/api/integrations/jobs/noop/run", {"orgId": "c%d" % n})
                assert st == 202, (st, d)
                with lock:
                    ids.append(d["id"])
                st, _, d = api.post("/api/integrations/jobs/noop/run", [{}, {"orgId": "b"}])
                assert st == 202 and len(d["ids"]) == 2, (st, d)
                with lock:
                    ids.extend(d["ids"])
                assert api.get("/api/health", token="")[0] == 200
                st, _, d = api.get("/api/integrations/jobs/runs/" + ids[-1])
                assert st in (200, 404), (st, d)
                assert api.get("/api/integrations/jobs/metrics", token="")[0] == 200
                assert api.get("/metrics", token="")[0] == 200
                st, _, d = api.post("/api/integrations/jobs/noop/run", "{bad", timeout=30)
                assert st == 400, (st, d)
                st, _, _ = api.get("/api/integrations/jobs/dead", token="wrong")
                assert st == 401
        except Exception as e:  # collected and reported below
            with lock:
                errors.append("client %d: %r" % (n, e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(nclients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert len(ids) == nclients * rounds * 3 and len(set(ids)) == len(ids)
    assert shared.producer.returncode is None
    assert db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s)", (ids,)) == len(ids)
    harness.wait_until(
        lambda: db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND status = 'succeeded'",
                          (ids,)) == len(ids), timeout=60, interval=0.2, msg="all runs to succeed")
    assert shared.api.get("/api/health/extended", token="")[0] == 200
