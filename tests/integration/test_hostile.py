"""Hostile input against the real binaries (docs/security.md): what a
client of the API, or another writer of the jr:runs stream, may send, and
what it must never achieve -- change another run's record, make the system
lose a record, or hold memory and connections out of proportion.

Each test here reproduced a finding before its fix (see the docstrings).
"""

import json
import socket
import struct
import time
import uuid

import pytest

import harness
from apiclient import (REDIS_SKIP, TOKEN, System, assert_error, bin_dir_or_skip, raw_request,
                       read_response)

RUN = "/api/integrations/jobs/%s/run"


def _wait_rows(db, ids, timeout=60):
    """Polls job_runs until every id has a row in a final state; returns
    {id: (status, job, org_id, error)}."""
    def done():
        rows = db.query("SELECT id, status, job, org_id, error FROM job_runs WHERE id = ANY(%s)",
                        (list(ids),))
        got = {r[0]: tuple(r[1:]) for r in rows}
        if len(got) == len(ids) and all(v[0] in ("succeeded", "dead") for v in got.values()):
            return got
        return None
    last = {}

    def check():
        r = done()
        last["n"] = db.scalar("SELECT count(*) FROM job_runs WHERE id = ANY(%s) AND status IN "
                              "('succeeded','dead')", (list(ids),))
        return r
    try:
        return harness.wait_until(check, timeout=timeout, interval=0.2,
                                  msg="%d runs recorded" % len(ids))
    except AssertionError as e:
        raise AssertionError("%s; %s of them final" % (e, last.get("n"))) from None


def _xadd_run(r, rid, job="noop", **fields):
    f = {"v": "1", "type": "run", "id": rid, "job": job}
    f.update(fields)
    r.xadd("jr:runs", f)


@pytest.fixture
def redis_system(pg, redis_server):
    bin_dir_or_skip()
    db = pg.create_database()
    s = System("redis", db, redis=redis_server, consumers=1, tag="hostile")
    yield s
    s.stop()


# ---- 1. record integrity (Redis mode) --------------------------------------


@REDIS_SKIP
def test_payload_cannot_forge_another_runs_record(redis_system, redis_server):
    """Finding 1: a payload of the form `{}},{"id":"<victim>",...}]` ended
    the event early in the jr:events array and rewrote the victim's record
    (job, org, status dead)."""
    s = redis_system
    victim = s.api.enqueue("noop", {"orgId": "victim-org"})["id"]
    s.api.wait_status(victim, "succeeded", timeout=30)
    r = redis_server.client()
    forged = ('{}},{"id":"%s","job":"meta_spend","org":"attacker-org","src":"adhoc",'
              '"status":"dead","attempt":1,"max":1,"enq":1,"error":"forged"}]' % victim)
    attacker = "atk-" + uuid.uuid4().hex[:12]
    _xadd_run(r, attacker, payload=forged)
    # a run after it proves the history writer went past both
    probe = s.api.enqueue("noop", {})["id"]
    rows = _wait_rows(s.db, [attacker, probe])
    assert rows[probe][0] == "succeeded", rows
    assert rows[attacker][0] == "dead", rows
    assert rows[attacker][3].startswith("malformed entry: payload is not one JSON object"), rows
    v = s.db.query("SELECT status, job, org_id, error FROM job_runs WHERE id = %s", (victim,))[0]
    assert v == ("succeeded", "noop", "victim-org", None), v


@REDIS_SKIP
def test_bad_entries_cost_only_their_own_run(redis_system, redis_server):
    """Finding 1: one entry with a payload nested 999 deep, or with two JSON
    values ('{"a":1}{"b":2}'), made the history writer drop the whole
    jr:events entry of its batch: the neighbours executed but stayed
    `queued` in job_runs forever."""
    s = redis_system
    r = redis_server.client()
    deep = '{"a":' * 999 + "1" + "}" * 999
    bad = {"deep-" + uuid.uuid4().hex[:8]: deep,
           "two-" + uuid.uuid4().hex[:8]: '{"a":1}{"b":2}',
           "d65-" + uuid.uuid4().hex[:8]: '{"a":' * 65 + "1" + "}" * 65}
    good = []
    pipe = r.pipeline(transaction=False)
    for i in range(600):
        rid = "ok-%d-%s" % (i, uuid.uuid4().hex[:8])
        good.append(rid)
        pipe.xadd("jr:runs", {"v": "1", "type": "run", "id": rid, "job": "noop",
                              "payload": '{"i":%d}' % i})
        if i % 200 == 100:
            for bid, payload in bad.items():
                pipe.xadd("jr:runs", {"v": "1", "type": "run", "id": "%s-%d" % (bid, i),
                                      "job": "noop", "payload": payload})
    pipe.execute()
    bad_ids = ["%s-%d" % (b, i) for b in bad for i in range(600) if i % 200 == 100]
    # exactly at the limit is accepted
    ok64 = "d64-" + uuid.uuid4().hex[:8]
    _xadd_run(r, ok64, payload='{"a":' * 63 + "1" + "}" * 63)
    rows = _wait_rows(s.db, good + bad_ids + [ok64], timeout=90)
    assert all(rows[g][0] == "succeeded" for g in good + [ok64]), \
        [g for g in good if rows[g][0] != "succeeded"][:5]
    for b in bad_ids:
        assert rows[b][0] == "dead" and rows[b][3].startswith("malformed entry"), (b, rows[b])
    assert "nested deeper than 64" in rows[bad_ids[0]][3], rows[bad_ids[0]]
    assert "data after the JSON value" in rows[bad_ids[3]][3], rows[bad_ids[3]]


@REDIS_SKIP
@pytest.mark.parametrize("field,value", [
    ("org", b"ctl\x1b[31mred"),
    ("org", b"bad\xffutf8"),
    ("org", b"c1\xc2\x85"),
    ("idem", b"k\x00ey"),
    ("payload", b'{"org":"\xff"}'),
    ("payload", b'{"n":9007199254740993}'),
    ("payload", b'{"s":"a\\u0000b"}'),
])
def test_entry_with_control_or_invalid_text_is_dead(redis_system, redis_server, field, value):
    """Finding 2: invalid UTF-8 ran but never got a job_runs row
    (PostgreSQL refused the batch); control characters were accepted."""
    s = redis_system
    r = redis_server.client()
    rid = "txt-" + uuid.uuid4().hex[:12]
    _xadd_run(r, rid, **{field: value})
    probe = s.api.enqueue("noop", {})["id"]
    rows = _wait_rows(s.db, [rid, probe])
    assert rows[probe][0] == "succeeded"
    assert rows[rid][0] == "dead" and rows[rid][3].startswith("malformed entry"), rows[rid]


# ---- 2 and 7. strict input at the API --------------------------------------


@pytest.fixture(scope="module")
def api(pg):
    bin_dir_or_skip()
    s = System("redisless", pg.create_database(), consumers=0, tag="strict")
    yield s.api
    s.stop()


@pytest.mark.parametrize("body,why", [
    (b'{"orgId":"\xff"}', "invalid UTF-8"),
    (b'{"payload":{"k":"\xc0\xaf"}}', "invalid UTF-8"),
    (b'{"orgId":"a\x01b"}', "control character"),
    (b'{"orgId":"a\\u0007b"}', "orgId must be text without control characters"),
    (b'{"orgId":"a\\u0000b"}', "\\u0000 is not allowed"),
    (b'{"idempotencyKey":"k\\u0000x"}', "\\u0000 is not allowed"),
    (b'{"payload":{"n":9007199254740993}}', "cannot be kept exactly"),
    (b'{"payload":{"n":1e999999}}', "out of range"),
    (b'{"payload":{"n":1e-999999}}', "out of range"),
    (b'{"payload":{"s":"\\udc00"}}', "unpaired surrogate"),
    (b'{"payload":{}}{"payload":{}}', "data after the JSON value"),
    (b'{"payload":' + b'{"a":' * 65 + b'1' + b'}' * 65 + b'}', "payload: nested deeper than 64"),
])
def test_api_refuses_what_cannot_be_kept(api, body, why):
    err = assert_error(api.post(RUN % "noop", body, headers={"Content-Type": "application/json"}),
                       400, "bad_request")
    assert why in err["message"], err


def test_api_keeps_what_it_accepts(api, pg):
    payload = {"n": 9007199254740991 // 1000, "f": 0.1, "big": 1.5e20, "t": "\u00e9\u4e2d\U0001f600",
               "deep": json.loads('{"a":' * 62 + "1" + "}" * 62)}
    rid = api.enqueue("noop", {"orgId": "org \u00e9", "payload": payload})["id"]
    got = api.run(rid)
    assert got["payload"] == payload, got
    assert got["orgId"] == "org \u00e9"


# ---- 3. memory and connections ---------------------------------------------


def _slack(pid):
    """How much more memory a sanitizer build holds (ASan keeps freed
    blocks in quarantine and pads every allocation): 1 otherwise."""
    with open("/proc/%d/maps" % pid) as f:
        return 2.5 if "libasan" in f.read() else 1


def _rss_kib(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def test_declared_bodies_are_not_allocated(pg):
    """Finding 3: the server allocated the declared Content-Length before
    any body byte arrived (150 connections declaring 1 MiB each on a public
    GET route: RSS 36 -> 192 MiB)."""
    bin_dir_or_skip()
    s = System("redisless", pg.create_database(), consumers=0, tag="mem",
               producer_env={"HTTP_MAX_CONNECTIONS_PER_IP": 0, "HTTP_MAX_CONNECTIONS": 512})
    socks = []
    try:
        before = _rss_kib(s.producer.pid, "VmData")
        for i in range(150):
            x = socket.create_connection(("127.0.0.1", s.api.port), timeout=5)
            path = "/api/integrations/jobs/noop/run" if i % 2 else "/api/integrations/jobs/metrics"
            method = b"POST" if i % 2 else b"GET"
            x.sendall(method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                      b"Content-Length: 1048576\r\n\r\n{")
            socks.append(x)
        time.sleep(1.0)
        assert s.api.up()
        # what the process allocated (VmData: heap and anonymous maps), not
        # only what it touched so far: a declared size reserved is memory
        # the next bytes, or a reuse of freed dirty pages, make resident
        grown = _rss_kib(s.producer.pid, "VmData") - before
        assert grown < 40 * 1024 * _slack(s.producer.pid), \
            "VmData grew %d KiB for 150 declared 1 MiB bodies" % grown
    finally:
        for x in socks:
            x.close()
        s.stop()


def test_routes_without_a_body_store_none(pg):
    """Finding 3: a route that takes no body (the dead-run retry) stored
    whatever body came, up to HTTP_MAX_BODY_BYTES per connection."""
    bin_dir_or_skip()
    s = System("redisless", pg.create_database(), consumers=0, tag="nobody",
               producer_env={"HTTP_MAX_CONNECTIONS_PER_IP": 0})
    socks = []
    try:
        before = _rss_kib(s.producer.pid)
        chunk = b"x" * 65536
        for i in range(80):
            x = socket.create_connection(("127.0.0.1", s.api.port), timeout=10)
            x.sendall(b"POST /api/integrations/jobs/dead/no-such-run/retry HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                      b"Content-Length: 1000000\r\n\r\n")
            for _ in range(14):          # 896 KiB of the declared 1,000,000
                x.sendall(chunk)
            socks.append(x)
        time.sleep(1.0)
        grown = _rss_kib(s.producer.pid) - before
        assert grown < 30 * 1024 * _slack(s.producer.pid), \
            "RSS grew %d KiB holding 80 unread bodies" % grown
        for x in socks:
            x.close()
        socks = []
        # a body is still accepted (and ignored) by the route
        assert_error(s.api.post("/api/integrations/jobs/dead/no-such-run/retry", {}), 404)
    finally:
        for x in socks:
            x.close()
        s.stop()


def test_dead_list_never_parses_payloads_and_caps_the_answer(pg):
    """Finding 3: GET /dead?limit=1000 parsed every payload into a cJSON
    tree: 40 dead runs with 256 KiB payloads peaked at 434 MB."""
    bin_dir_or_skip()
    db = pg.create_database()
    s = System("redisless", db, consumers=0, tag="deadmem")
    try:
        # 256 KiB payloads of tiny values (a tree costs ~30x the text)
        db.execute("insert into job_runs (id, job, status, payload, finished_at)"
                   " select 'dead-' || g, 'noop', 'dead',"
                   "   jsonb_build_object('n', g, 'a', (select jsonb_agg(0) from generate_series(1, 87000))),"
                   "   now() - g * interval '1 second'"
                   " from generate_series(1, 40) g")
        before = _rss_kib(s.producer.pid)
        st, _, d = s.api.get("/api/integrations/jobs/dead?limit=1000", timeout=60)
        assert st == 200, (st, d)
        st, _, d = s.api.get("/api/integrations/jobs/dead?limit=1000", timeout=60)
        peak = _rss_kib(s.producer.pid) - before
        assert peak < 80 * 1024 * _slack(s.producer.pid), "RSS grew %d KiB" % peak
        runs = d["runs"]
        assert len(runs) == 40
        with_payload = [r for r in runs if r["payload"] is not None]
        assert 8 <= len(with_payload) < 40, len(with_payload)
        assert with_payload[0]["payload"]["n"] == 1 and len(with_payload[0]["payload"]["a"]) == 87000
        omitted = [r for r in runs if r.get("payloadOmitted")]
        assert len(omitted) == 40 - len(with_payload) and omitted[0]["payload"] is None
        assert runs == sorted(runs, key=lambda r: r["finishedAt"], reverse=True)
        one = s.api.run(omitted[0]["id"])   # the full run is one GET away
        assert one["payload"]["n"] == int(omitted[0]["id"][5:])
        # the run search pages the same way
        st, _, d = s.api.get("/api/integrations/jobs/runs?status=dead&limit=500", timeout=60)
        assert st == 200, (st, d)
        found = d["runs"]
        assert len(found) == 40
        kept = [r for r in found if r["payload"] is not None]
        assert 8 <= len(kept) < 40 and all(r.get("payloadOmitted") for r in found[len(kept):])
        peak = _rss_kib(s.producer.pid) - before
        assert peak < 80 * 1024 * _slack(s.producer.pid), "RSS grew %d KiB" % peak
    finally:
        s.stop()


def _hold(port, n, src="127.0.0.1"):
    """n idle connections (a partial request line each) from address src,
    each one taken by the server (not answered 503 because a connection
    that was just closed had not been counted out yet)."""
    out = []
    deadline = time.monotonic() + 20
    while len(out) < n and time.monotonic() < deadline:
        batch = []
        for _ in range(n - len(out)):
            x = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
            # closed with a reset: no TIME_WAIT left on this address's port
            x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            x.sendall(b"GET /hea")
            batch.append(x)
        time.sleep(0.4)   # an overflow answer comes within 200 ms
        for x in batch:
            x.setblocking(False)
            try:
                got = x.recv(100)
            except BlockingIOError:
                got = None
            x.setblocking(True)
            if got is None:
                out.append(x)
            else:
                x.close()
    assert len(out) == n, "could hold only %d of %d connections" % (len(out), n)
    return out


def _served(port, path, src="127.0.0.1", timeout=5.0):
    """Status of GET path on a new connection from src, or None when the
    server closed it without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(src, 0)) as x:
        x.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return read_response(x, timeout)[0]


@pytest.mark.parametrize("side", ["producer", "consumer"])
def test_connections_per_address_and_liveness_when_full(pg, side):
    """Finding 3 (and the correctness issue's item 4): 64 idle connections
    locked the consumer's health port out, so its liveness probe failed; no
    per-client connection cap on either port."""
    bin_dir_or_skip()
    env = {"HTTP_MAX_CONNECTIONS_PER_IP": 8, "HTTP_MAX_CONNECTIONS": 20}
    s = System("redisless", pg.create_database(), consumers=1 if side == "consumer" else 0,
               tag="conn-" + side, env=env)
    held = []
    try:
        if side == "producer":
            port, live, other = s.api.port, "/api/health", "/api/integrations/jobs/metrics"
        else:
            port, live, other = s.consumers[0][1].port, "/health", "/metrics"
        table = 20
        held += _hold(port, 8)
        # a ninth from the same address gets liveness only; another
        # address is served
        assert _served(port, live) == 200
        assert _served(port, other) == 503
        assert _served(port, other, src="127.0.0.2") == 200
        if side == "producer":
            # fill the table from more addresses: liveness still answers
            for k in range(3, 6):
                held += _hold(port, min(8, table - len(held)), src="127.0.0.%d" % k)
            assert _served(port, live, src="127.0.0.9") == 200
            assert _served(port, other, src="127.0.0.9") == 503
    finally:
        for x in held:
            x.close()
        s.stop()


# ---- 4. request smuggling ---------------------------------------------------


SMUGGLED = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("framing,body", [
    (b"Content-Length: 2\r\nContent-Length: 40\r\n", b"{}" + SMUGGLED),
    # a proxy that goes by Content-Length sees one request; chunked sees two
    (b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % (5 + len(SMUGGLED)),
     b"0\r\n\r\n" + SMUGGLED),
    (b"Transfer-Encoding: xchunkedx\r\n", b"2\r\n{}\r\n0\r\n\r\n" + SMUGGLED),
    (b"Transfer-Encoding: gzip, chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n" + SMUGGLED),
])
def test_ambiguous_framing_is_refused_and_closed(api, framing, body):
    """Finding 4: two Content-Length headers, or Content-Length with
    chunked, were accepted on keep-alive (the smuggled second request was
    served); an unknown coding held the connection until the timeout."""
    req = (b"POST /api/integrations/jobs/noop/run HTTP/1.1\r\nHost: x\r\n"
           b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" + framing + b"\r\n" + body)
    t0 = time.monotonic()
    status, raw = raw_request(api.port, req, read_timeout=8)
    assert time.monotonic() - t0 < 5, "the connection was held"
    assert status == 400, raw[:300]
    assert raw.count(b"HTTP/1.1 ") == 1, raw   # nothing after it was served
    assert b"connection: close" in raw.lower(), raw[:300]


# ---- 5 and issue 13. log redaction, text logs ------------------------------


def _start_producer(db_url, extra, tag):
    port = harness.free_port()
    env = {"DATABASE_URL": db_url, "PORT": port, "API_TOKEN": TOKEN, "LOG_LEVEL": "debug",
           "LOG_FORMAT": "json", "JOB_RUNNER_INTERVAL_MS": 200}
    env.update(extra)
    import os
    p = harness.Proc([os.path.join(os.environ["JR_BIN"], "producer")],
                     env={k: str(v) for k, v in env.items()}, name=tag)
    from apiclient import Api
    a = Api(port)
    harness.wait_until(lambda: p.returncode is None and a.up(), timeout=30, msg="producer up")
    return p, a


def _with_password(db_url, pw):
    # trust authentication: the password is carried, registered as a
    # secret, and ignored by the server
    scheme, rest = db_url.split("://", 1)
    userinfo, host = rest.split("@", 1) if "@" in rest else ("postgres", rest)
    user = userinfo.split(":", 1)[0]
    return "%s://%s:%s@%s" % (scheme, user, pw, host)


def test_redaction_terminates_for_a_secret_inside_the_marker(pg):
    """Finding 5: a secret that is a substring of [REDACTED] (a database
    password DACT) made log.c redact() loop at 100 % CPU with the log lock
    held: the next line that held it hung the process."""
    bin_dir_or_skip()
    db = pg.create_database()
    p, a = _start_producer(_with_password(db.url, "DACT"), {}, "redact-loop")
    try:
        a.post("/api/integrations/jobs/DACT/run", {}, timeout=10)   # logged at debug: the path
        mark = time.monotonic()
        harness.wait_until(lambda: a.up(), timeout=10, msg="producer still answering")
        assert time.monotonic() - mark < 10
        line = p.wait_for_log({"event": "http_request", "path": "/api/integrations/jobs/[REDACTED]/run"},
                              timeout=10)
        assert line
    finally:
        p.cleanup()


def test_redaction_handles_json_escapes_and_whole_words_only(pg):
    """Finding 5: secrets containing " or \\ were not redacted in JSON logs.
    Issue 13: a short secret mangled unrelated words
    (meta_[REDACTED]en_refresh)."""
    bin_dir_or_skip()
    db = pg.create_database()
    secret = 'qu"ote\\back-7f3a9c21e5'
    p, a = _start_producer(_with_password(db.url, "token"),
                           {"META_APP_SECRET": secret, "JOB_RUNNER_ENABLED": "true"}, "redact-json")
    try:
        a.post("/api/integrations/jobs/qu%22ote%5Cback-7f3a9c21e5/run", {}, timeout=10)
        p.wait_for_log({"event": "http_request", "path": "/api/integrations/jobs/[REDACTED]/run"},
                       timeout=10)
        cycle = p.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=20)
        assert "meta_token_refresh=" in cycle["ran"], cycle
        text = "\n".join(p.lines())
        assert 'qu\\"ote' not in text and "7f3a9c21e5" not in text
    finally:
        p.cleanup()


def test_text_logs_escape_control_characters(pg):
    """Finding 2: in text log format CR, ESC and VT passed through raw (log
    forging)."""
    bin_dir_or_skip()
    db = pg.create_database()
    p, a = _start_producer(db.url, {"LOG_FORMAT": "text"}, "textlog")
    try:
        # no space, quote, '=' or LF: the old code wrote such a value raw
        a.post("/api/integrations/jobs/x%0dforged%1b[2K%0b/run", {}, timeout=10)
        harness.wait_until(lambda: any("http_request" in l and "forged" in l for l in p.lines()),
                           timeout=10, msg="the request's log line")
        for line in p.lines():
            assert "\x1b" not in line and "\x0b" not in line and "\r" not in line, repr(line)
    finally:
        p.cleanup()


def test_json_logs_stay_valid_utf8(pg):
    """A value with invalid UTF-8 (a path %ff) made a JSON log line that log
    shippers refuse; it becomes U+FFFD."""
    bin_dir_or_skip()
    db = pg.create_database()
    p, a = _start_producer(db.url, {}, "utf8log")
    try:
        a.post("/api/integrations/jobs/x%ff%c0y/run", {}, timeout=10)
        line = p.wait_for_log({"event": "http_request", "path": "/api/integrations/jobs/x\ufffd\ufffdy/run"},
                              timeout=10)
        assert line
        with open(p.log_path, "rb") as f:
            for raw in f:
                json.loads(raw.decode("utf-8"))   # strict: raises on invalid UTF-8
    finally:
        p.cleanup()


# ---- 7. safe defaults -------------------------------------------------------


@pytest.mark.parametrize("env,variable", [
    ({"API_TOKEN": "short-token-15ch"[:15]}, "API_TOKEN"),
    ({"API_TOKEN": "dev-token-change-me"}, "API_TOKEN"),
    ({"API_TOKEN": "dev-token-change-me", "JOBRUNNER_ENV": "production"}, "API_TOKEN"),
    ({"HTTP_BIND_ADDRESS": "example.com"}, "HTTP_BIND_ADDRESS"),
    ({"HTTP_MAX_CONNECTIONS_PER_IP": "-1"}, "HTTP_MAX_CONNECTIONS_PER_IP"),
])
@pytest.mark.parametrize("binary", ["producer", "consumer"])
def test_unsafe_settings_stop_start_up(pg, binary, env, variable):
    bin_dir_or_skip()
    import os
    import jrcli
    e = {"DATABASE_URL": pg.create_database().url, "LOG_FORMAT": "json"}
    e.update(env)
    p = jrcli.run(os.path.join(os.environ["JR_BIN"], binary), [], e, timeout=30)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    out = p.stdout + p.stderr
    assert variable in out, out
    if "API_TOKEN" in env:
        assert env["API_TOKEN"] not in out, out


def test_dev_token_in_development_and_bind_address(pg):
    bin_dir_or_skip()
    db = pg.create_database()
    p, a = _start_producer(db.url, {"API_TOKEN": "dev-token-change-me",
                                    "JOBRUNNER_ENV": "development",
                                    "HTTP_BIND_ADDRESS": "127.0.0.1"}, "devtoken")
    try:
        a.token = "dev-token-change-me"
        assert a.post(RUN % "noop", {})[0] == 202
        with pytest.raises(OSError):   # not listening on other addresses
            socket.create_connection(("127.0.0.2", a.port), timeout=3).close()
    finally:
        p.cleanup()


# ---- 6. disclosure ----------------------------------------------------------


def test_health_answers_say_a_category_unless_authenticated(pg_fresh):
    """Finding 6: unauthenticated /api/health/extended and /health/ready
    returned libpq's error text (host, address, port, database, user)."""
    bin_dir_or_skip()
    db = pg_fresh.create_database()
    s = System("redisless", db, consumers=1, tag="disclose",
               consumer_env={"API_TOKEN": TOKEN})
    try:
        health = s.consumers[0][1]
        pg_fresh.stop()
        port = str(pg_fresh.port)

        def down(api, path):
            # the first check after the stop may see its open connection
            # lost; from then on a new one is refused
            st, _, d = api.get(path, token="")
            if st != 503 or d["checks"]["database"]["error"].endswith("connection lost"):
                return None
            return d
        for api, path in ((s.api, "/api/health/extended"), (health, "/health/ready")):
            d = harness.wait_until(lambda: down(api, path), timeout=30,
                                   msg="%s to answer 503" % path)
            err = d["checks"]["database"]["error"]
            assert err == "database unreachable: connection refused", d
            text = json.dumps(d)
            for leak in (port, "127.0.0.1", "localhost", db.dbname, "server at", "FATAL", "user"):
                assert leak not in text, (leak, text)
            # with the token, the operator gets the server's text
            st, _, d = api.get(path, token=TOKEN)
            assert st == 503 and port in d["checks"]["database"]["error"], d
    finally:
        s.stop()
