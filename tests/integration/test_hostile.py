"""Hostile input against the real binaries (docs/security.md): what a
client of the API, or another writer of the jr:runs stream, may send, and
what it must never achieve -- change another run's record, make the system
lose a record, or hold memory and connections out of proportion.

Each test here reproduced a finding before its fix (see the docstrings).
"""

import json
import socket
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
    payload = {"n": 9007199254740991 // 1000, "f": 0.1, "big": 1e300, "t": "\u00e9\u4e2d\U0001f600",
               "deep": json.loads('{"a":' * 62 + "1" + "}" * 62)}
    rid = api.enqueue("noop", {"orgId": "org \u00e9", "payload": payload})["id"]
    got = api.run(rid)
    assert got["payload"] == payload, got
    assert got["orgId"] == "org \u00e9"
