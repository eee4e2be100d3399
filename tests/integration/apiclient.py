"""apiclient.py -- helpers of the HTTP API tests (test_api*.py).

Starts the real producer and consumers against the harness's real
PostgreSQL (and Redis, in Redis mode), and talks to them over real HTTP:

  MODES                   pytest params "redisless" / "redis"; the Redis ones
                          are skipped while common/queue_redis.c on this tree
                          is still the placeholder that reports Redis down
  System(...)             one database (+ Redis), a producer, N consumers
  shared_system(...)      body of a module fixture: one System per mode
  system_factory(...)     body of a fixture: make(**kw) -> a System of its own
  Api                     a client for one producer: get/post with the token
  assert_error(...)       the API's error shape {"error":{"code","message"}}
  (every answer an Api receives is validated against docs/openapi.yaml by
  openapi_check.py)
  prometheus(text)        parses and checks Prometheus text exposition
"""

import json
import os
import re
import socket
import time

import pytest

import harness
import openapi_check

TOKEN = "it-token-6f1c0e9a5b27d4c3"
HERE = os.path.dirname(os.path.abspath(__file__))
QUEUE_REDIS_C = os.path.join(HERE, "..", "..", "common", "queue_redis.c")


def redis_transport_missing():
    """True while common/queue_redis.c is the placeholder of main, which
    reports Redis as unreachable (everything then takes the PostgreSQL
    path, and Redis-mode behaviour cannot be tested)."""
    try:
        with open(QUEUE_REDIS_C, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return True
    return "placeholder" in text[:400] and "not built yet" in text


REDIS_SKIP = pytest.mark.skipif(
    redis_transport_missing(),
    reason="Redis transport not on this tree yet (common/queue_redis.c is the placeholder); "
           "merge main once branch `redis` has landed")

MODES = [pytest.param("redisless", id="redisless"),
         pytest.param("redis", id="redis", marks=REDIS_SKIP)]


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

class Api:
    """A client of one producer (or consumer health port)."""

    def __init__(self, port, token=TOKEN):
        self.port = port
        self.token = token
        self.base = "http://127.0.0.1:%d" % port

    def req(self, method, path, body=None, token=None, headers=None, timeout=30.0):
        """One request; the answer is checked against docs/openapi.yaml
        (openapi_check.py) before it is returned."""
        hdrs = dict(headers or {})
        tok = self.token if token is None else token
        if tok:
            hdrs.setdefault("Authorization", "Bearer " + tok)
        resp = harness.http(method, self.base + path, body=body, headers=hdrs, timeout=timeout)
        openapi_check.check(method, path, *resp)
        return resp

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.req("POST", path, body=body, **kw)

    def up(self):
        try:
            return self.req("GET", "/api/health", token="")[0] == 200
        except OSError:
            return False

    # ---- runs ----

    def enqueue(self, job="noop", body=None, expect=202):
        status, _, data = self.post("/api/integrations/jobs/%s/run" % job, body)
        assert status == expect, (status, data)
        return data

    def run(self, run_id):
        """GET runs/{id}: the answer, or None while it is a 404 (Redis mode:
        the row is written behind the stream)."""
        status, _, data = self.get("/api/integrations/jobs/runs/%s" % run_id)
        if status == 404:
            return None
        assert status == 200, (status, data)
        return data

    def wait_run(self, run_id, pred, timeout=20.0, msg=None):
        """Polls the run until pred(run) is true; returns the run."""
        last = {}

        def check():
            r = self.run(run_id)
            last["run"] = r
            return r if r is not None and pred(r) else None
        try:
            return harness.wait_until(check, timeout=timeout, interval=0.05,
                                      msg=msg or "run %s" % run_id)
        except AssertionError as e:
            raise AssertionError("%s; last answer: %r" % (e, last.get("run"))) from None

    def wait_status(self, run_id, status, timeout=20.0):
        return self.wait_run(run_id, lambda r: r["status"] == status, timeout,
                             "run %s to be %s" % (run_id, status))


def assert_error(resp, status, code=None):
    """resp = (status, headers, data) is an error of the API's shape
    {"error": {"code": ..., "message": ...}}."""
    got, headers, data = resp
    assert got == status, resp
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert isinstance(data, dict) and set(data) == {"error"}, data
    err = data["error"]
    assert set(err) == {"code", "message"}, err
    assert isinstance(err["code"], str) and re.fullmatch(r"[a-z_]+", err["code"]), err
    assert isinstance(err["message"], str) and err["message"], err
    if code is not None:
        assert err["code"] == code, err
    return err


ISO_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def is_iso(v):
    return isinstance(v, str) and ISO_RE.fullmatch(v) is not None


def raw_request(port, data, read_timeout=10.0):
    """Sends raw bytes on a new connection and reads until the server closes
    or read_timeout; returns (status or None, raw bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(data)
        return read_response(s, read_timeout, sent=data)


def read_response(sock, timeout=10.0, sent=b""):
    """Reads one response (headers + Content-Length body) or until close."""
    sock.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        buf += chunk
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep:
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if m and len(body) >= int(m.group(1)):
                break
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    harness.record_output("raw answer on port %d" % sock.getpeername()[1]
                          if _connected(sock) else "raw answer",
                          buf.decode("utf-8", "replace"),
                          sent=bytes(sent).decode("utf-8", "replace"))
    return (int(m.group(1)) if m else None), buf


def _connected(sock):
    try:
        sock.getpeername()
        return True
    except OSError:
        return False


def json_body(raw):
    return json.loads(raw.partition(b"\r\n\r\n")[2].decode())


# --------------------------------------------------------------------------
# Prometheus text
# --------------------------------------------------------------------------

_SAMPLE_RE = re.compile(
    r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
    r'(-?(?:[0-9.]+(?:e[+-]?\d+)?|\+Inf|NaN))( -?\d+)?')


def prometheus(text):
    """Parses text exposition format 0.0.4 strictly: every line is a
    comment, a HELP/TYPE line or a valid sample.  Returns (types, samples):
    types {family: type}, samples {(name, labels-string): float}.  Checks
    histograms: cumulative buckets ending in +Inf == _count."""
    types, samples = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE_RE.fullmatch(line)
        assert m, "not a valid Prometheus sample line: %r" % line
        samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    for fam, kind in types.items():
        if kind != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                le = re.search(r'le="([^"]*)"', labels).group(1)
                rest = re.sub(r',?le="[^"]*"', "", labels).replace("{,", "{")
                series.setdefault(rest if rest != "{}" else "", []).append(
                    (float("inf") if le == "+Inf" else float(le), v))
        for rest, buckets in series.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), (fam, rest, buckets)
            assert buckets[-1][0] == float("inf"), (fam, rest)
            assert (fam + "_count", rest) in samples, (fam, rest)
            assert samples[(fam + "_count", rest)] == counts[-1], (fam, rest)
            assert (fam + "_sum", rest) in samples, (fam, rest)
    return types, samples


def metric(samples, name, **labels):
    """The value of one sample (labels given as keywords), or None."""
    want = {k: str(v) for k, v in labels.items()}
    for (n, lab), v in samples.items():
        if n != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', lab))
        if all(got.get(k) == x for k, x in want.items()):
            return v
    return None


# --------------------------------------------------------------------------
# The system under test
# --------------------------------------------------------------------------

class System:
    """A database (in cluster pg, or db given), Redis in Redis mode, one
    producer and `consumers` consumers, all started and polled until they
    answer.  env: extra environment for all processes; producer_env /
    consumer_env for one side.  stop() stops the processes (not the
    servers, which belong to their fixtures)."""

    def __init__(self, mode, db, redis=None, consumers=1, token=TOKEN, env=None,
                 producer_env=None, consumer_env=None, tag="api"):
        assert mode in ("redisless", "redis")
        assert (redis is not None) == (mode == "redis")
        self.mode = mode
        self.db = db
        self.redis = redis
        self.procs = []
        self.consumers = []
        base = {"DATABASE_URL": db.url, "LOG_FORMAT": "json",
                "JOB_MAX_ATTEMPTS": 2, "JOB_BACKOFF_BASE_MS": 20, "JOB_BACKOFF_MAX_MS": 50,
                "STARTUP_TIMEOUT_MS": 20000}
        if redis is not None:
            base["REDIS_URL"] = redis.url
            base["REDIS_FALLBACK_AFTER_MS"] = 3000
        base.update(env or {})
        self.base_env = base
        port = harness.free_port()
        penv = dict(base, PORT=port)
        if token is not None:          # None: API_TOKEN unset
            penv["API_TOKEN"] = token
        penv.update(producer_env or {})
        self.producer = self._spawn("producer", penv, "%s-producer" % tag)
        self.api = Api(port, token)
        harness.wait_until(lambda: self._alive(self.producer) and self.api.up(), timeout=30,
                           msg="producer on :%d" % port)
        for i in range(consumers):
            self.add_consumer("%s-c%d" % (tag, i + 1), consumer_env)

    def _alive(self, proc):
        if proc.returncode is not None:
            raise AssertionError("%s exited with %s:\n%s" % (proc.name, proc.returncode,
                                                              proc.log_tail()))
        return True

    def _spawn(self, name, env, label):
        path = os.path.join(os.environ["JR_BIN"], name)
        p = harness.Proc([path], env=env, name=label)
        self.procs.append(p)
        return p

    def add_consumer(self, name, consumer_env=None):
        hport = harness.free_port()
        cenv = dict(self.base_env, CONSUMER_NAME=name, WORKER_HTTP_PORT=hport,
                    WORKER_CONCURRENCY=4, JOB_RUNNER_INTERVAL_MS=1000)
        cenv.update(consumer_env or {})
        proc = self._spawn("consumer", cenv, name)
        health = Api(hport, token="")

        def ready():
            self._alive(proc)
            try:
                return health.get("/health")[0] == 200
            except OSError:
                return False
        harness.wait_until(ready, timeout=30, msg="consumer %s health port" % name)
        self.consumers.append((proc, health))
        return proc, health

    def logs(self):
        return "\n".join("\n".join(p.lines()) for p in self.procs)

    def stop(self):
        for p in reversed(self.procs):
            p.cleanup()


def bin_dir_or_skip():
    d = os.environ.get("JR_BIN")
    if not d or not os.access(os.path.join(d, "producer"), os.X_OK):
        pytest.skip("JR_BIN is not set or has no producer (run through ctest)")
    return d


def redis_for(mode):
    """A throwaway Redis for the Redis mode, None for the Redis-less one."""
    return harness.Redis() if mode == "redis" else None


def shared_system(mode, pg, tag, consumers=1):
    """Generator for a module fixture: `yield from shared_system(mode, pg,
    "api-" + mode)` gives the tests one System and stops it afterwards."""
    bin_dir_or_skip()
    redis = redis_for(mode)
    s = System(mode, pg.create_database(), redis, consumers=consumers, tag=tag)
    try:
        yield s
    finally:
        s.stop()
        if redis is not None:
            redis.cleanup()


def system_factory(mode, pg, tag):
    """Generator for a fixture: yields make(**kw), which starts a System of
    its own (consumers=0 unless given); all are stopped afterwards."""
    bin_dir_or_skip()
    made = []

    def make(**kw):
        redis = redis_for(mode)
        kw.setdefault("consumers", 0)
        s = System(mode, pg.create_database(), redis, tag=tag, **kw)
        made.append((s, redis))
        return s
    try:
        yield make
    finally:
        for s, redis in made:
            s.stop()
            if redis is not None:
                redis.cleanup()
