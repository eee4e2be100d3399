"""The chaos checker on made-up histories: a clean one (with everything
at-least-once delivery allows: re-executions, fenced attempts that did not
become the record, enqueues of unknown outcome that did or did not apply,
keys retried) passes, and each kind of violation, added to it, is reported
as that kind and only that kind.  No server is started: this runs in well
under a second."""

import copy
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checker  # noqa: E402

T0 = 1_800_000_000.0


def row(rid, tag, status="succeeded", attempts=1, consumer="c1", key=None, transport="redis",
        max_attempts=5, waited=0.2):
    return {"id": rid, "tag": tag, "status": status, "attempts": attempts,
            "max_attempts": max_attempts, "consumer": consumer, "idempotency_key": key,
            "transport": transport, "enqueued_at": T0, "started_at": T0 + waited}


def ev(event, rid, attempt=1, consumer="c1", max_attempts=5):
    return {"event": event, "runId": rid, "attempt": attempt, "maxAttempts": max_attempts,
            "consumer": consumer, "proc": consumer}


def cycle(seq, start, ms, job="job_runner"):
    return {"seq": seq, "id": job, "lastRunAt": start, "durationMs": ms}


def clean():
    h = {
        "requests": [
            # an unkeyed bulk of 2 through the API, accepted
            {"tag": "u1", "via": "http", "key": None, "n": 2,
             "tries": [{"t": T0, "outcome": "accepted", "ids": ["a1", "a2"]}]},
            # unkeyed through the CLI, outcome unknown, and Redis applied it
            {"tag": "u2", "via": "cli", "key": None, "n": 1,
             "tries": [{"t": T0 + 1, "outcome": "unknown", "ids": []}]},
            # unkeyed, outcome unknown, and it did not apply
            {"tag": "u3", "via": "http", "key": None, "n": 1,
             "tries": [{"t": T0 + 1, "outcome": "unknown", "ids": []}]},
            # refused (queue_unavailable), nothing ran
            {"tag": "u4", "via": "http", "key": None, "n": 1,
             "tries": [{"t": T0 + 2, "outcome": "refused", "ids": []}]},
            # keyed: 503 outcome unknown, retried, accepted, posted again later
            {"tag": "k1", "via": "http", "key": "k1", "n": 1,
             "tries": [{"t": T0 + 2, "outcome": "unknown", "ids": []},
                       {"t": T0 + 3, "outcome": "accepted", "ids": ["k1run"]},
                       {"t": T0 + 9, "outcome": "accepted", "ids": ["k1run"]}]},
            # keyed through the CLI: a run executed twice (consumer killed), then dead
            {"tag": "k2", "via": "cli", "key": "k2", "n": 1,
             "tries": [{"t": T0 + 3, "outcome": "accepted", "ids": ["k2run"]}]},
        ],
        "runs": [
            row("a1", "u1"),
            row("a2", "u1", attempts=2, consumer="c2", waited=12.0),  # fenced c1 attempt 1
            row("x9", "u2", transport="pg"),
            row("k1run", "k1", key="k1", transport="pg"),
            row("k2run", "k2", key="k2", status="dead", attempts=5, consumer="c3"),
        ],
        "events": [
            ev("run_succeeded", "a1"),
            ev("run_fenced", "a2", attempt=1, consumer="c1"),
            ev("run_succeeded", "a2", attempt=2, consumer="c2"),
            ev("run_succeeded", "x9"),
            ev("run_succeeded", "k1run", consumer="c2"),
            ev("run_failed", "k2run", attempt=4, consumer="c3"),
            ev("run_dead", "k2run", attempt=5, consumer="c3"),
        ],
        "state_writes": [
            cycle(1, T0 + 0.0, 20),
            cycle(2, T0 + 0.020, 10),                 # starts right as the first ends
            cycle(3, T0 + 0.5, 5, job="no_reply_scan"),
            cycle(4, T0 + 0.5, 30),
            cycle(5, T0 + 2.0, 30),                  # after the legacy hold
            cycle(6, T0 + 2.0, 8, job="no_reply_scan"),
        ],
        "legacy_holds": [[T0 + 1.0, T0 + 1.9]],
        "faults": [{"name": "kill9", "start": T0, "end": T0 + 1, "recovery_s": 2.5}],
    }
    return h


def test_a_clean_history_passes_and_gives_its_figures():
    rep = checker.check(clean())
    assert rep.ok, rep.summary()
    f = rep.figures
    assert f["accepted_runs"] == 4            # a1 a2 k1run k2run
    assert f["requests"] == 6 and f["keyed_requests"] == 2
    assert f["outcome_unknown_requests"] == 3
    assert (f["lost"], f["stuck"], f["duplicated"], f["results_twice"]) == (0, 0, 0, 0)
    assert f["fenced"] == 1 and f["executed_again"] == 2 and f["dead"] == 1
    assert f["cycles"] == 4
    assert f["start_wait_max_s"] == 12.0
    assert f["faults"] == [{"name": "kill9", "duration_s": 1.0, "recovery_s": 2.5}]


def only(h, kind, n=1):
    rep = checker.check(h)
    assert rep.kinds() == [kind], rep.summary()
    assert rep.count(kind) == n, rep.summary()
    return rep


def test_an_accepted_run_without_a_row_is_lost():
    h = clean()
    h["runs"] = [r for r in h["runs"] if r["id"] != "a2"]
    rep = only(h, "lost")
    assert "a2" in rep.violations[0][1] and rep.figures["lost"] == 1


def test_a_keyed_run_without_a_row_is_lost():
    h = clean()
    h["runs"] = [r for r in h["runs"] if r["id"] != "k1run"]
    only(h, "lost")


@pytest.mark.parametrize("status", ["queued", "running", "failed"])
def test_an_accepted_run_not_finished_is_stuck(status):
    h = clean()
    h["runs"][0]["status"] = status
    rep = only(h, "stuck")
    assert rep.figures["stuck"] == 1


def test_runs_not_finished_within_the_deadline_after_a_fault_are_stuck():
    h = clean()
    h["faults"].append({"name": "redis_sigstop", "start": T0 + 5, "end": T0 + 15,
                        "recovery_s": None, "deadline_s": 45,
                        "unfinished": "83 queued on pg (oldest x)"})
    rep = only(h, "stuck")
    assert "redis_sigstop" in rep.violations[0][1] and "83 queued" in rep.violations[0][1]


def test_an_accepted_run_that_waited_too_long_to_start_is_stuck():
    h = clean()
    h["runs"][3]["started_at"] = h["runs"][3]["enqueued_at"] + checker.WAIT_LIMIT_S + 1
    rep = only(h, "stuck")
    assert "k1run" in rep.violations[0][1] and rep.figures["start_wait_max_s"] == 31.0


def test_an_unkeyed_request_that_made_more_runs_than_ids_is_duplicated():
    h = clean()
    h["runs"].append(row("a3", "u1"))
    rep = only(h, "duplicate_run")
    assert rep.figures["duplicated"] == 1


def test_an_unknown_outcome_that_applied_twice_is_duplicated():
    h = clean()
    h["runs"].append(row("x10", "u2", transport="redis"))
    only(h, "duplicate_run")


def test_a_refused_request_that_ran_is_duplicated():
    h = clean()
    h["runs"].append(row("r1", "u4"))
    only(h, "duplicate_run")


def test_a_run_no_request_asked_for_is_reported():
    h = clean()
    h["runs"].append(row("z1", "nobody"))
    only(h, "duplicate_run")


def test_one_key_two_runs_after_an_unknown_outcome():
    # the 503 try applied in Redis after the retry went to PostgreSQL
    h = clean()
    h["runs"].append(row("k1late", "k1", key=None, transport="redis"))
    rep = only(h, "key_two_runs")
    assert "k1late" in rep.violations[0][1] and rep.figures["duplicated"] == 1


def test_one_key_answered_with_two_ids():
    # a key first used while Redis was down, posted again once it is back
    h = clean()
    h["requests"][4]["tries"][2]["ids"] = ["k1other"]
    h["runs"].append(row("k1other", "k1", key="k1"))
    only(h, "key_two_runs")


def test_two_results_for_one_run():
    h = clean()
    h["events"].append(ev("run_succeeded", "a1", attempt=2, consumer="c2"))
    rep = only(h, "result_twice")
    assert rep.figures["results_twice"] == 1


def test_a_fenced_attempt_that_became_the_record():
    h = clean()
    r = [r for r in h["runs"] if r["id"] == "a2"][0]
    r["attempts"], r["consumer"] = 1, "c1"
    only(h, "fenced_record")


def test_attempts_over_the_maximum_in_the_record():
    h = clean()
    h["runs"][4]["attempts"] = 6
    only(h, "attempts_over")


@pytest.mark.parametrize("event,kind", [
    # a success logged for a run whose record is dead
    (("run_succeeded", "k2run", 3, "c1"), "result_twice"),
    # an attempt past the run's maximum, seen in the log only
    (("run_failed", "k2run", 6, "c3"), "attempts_over"),
])
def test_one_more_log_line_is_a_violation(event, kind):
    h = clean()
    name, run, attempt, consumer = event
    h["events"].append(ev(name, run, attempt=attempt, consumer=consumer))
    only(h, kind)


def test_overlapping_cycles():
    h = clean()
    h["state_writes"].append(cycle(7, T0 + 2.010, 5))     # inside [2.0, 2.030]
    rep = only(h, "cycle_overlap")
    assert "write 5" in rep.violations[0][1]


def test_cycles_of_other_rows_do_not_count_as_cycles():
    h = clean()
    h["state_writes"].append(cycle(7, T0 + 2.010, 5, job="meta_spend"))
    assert checker.check(h).ok


def test_a_cycle_while_the_legacy_lock_is_held():
    h = clean()
    h["state_writes"].append(cycle(4.5, T0 + 1.5, 3))   # applied between 4 and 5
    only(h, "cycle_in_legacy")


def test_a_cycle_straddling_the_start_of_the_legacy_hold():
    h = clean()
    h["state_writes"].append(cycle(4.5, T0 + 0.98, 100))
    only(h, "cycle_in_legacy")


def test_last_run_at_moving_backwards():
    h = clean()
    # applied after write 5 (T0+2.0) but with an older start
    h["state_writes"].append(cycle(8, T0 + 1.95, 1, job="no_reply_scan"))
    h["state_writes"].append(cycle(9, T0 + 3.0, 1, job="no_reply_scan"))
    rep = only(h, "lastrunat_back")
    assert "no_reply_scan" in rep.violations[0][1]


def test_a_failed_probe():
    h = clean()
    h["probes"] = [{"fault": "slowloris", "ok": True, "detail": "fine"},
                   {"fault": "slowloris", "ok": False, "detail": "no answer in 2 s"}]
    only(h, "probe")


def test_each_kind_is_tested_here():
    # every kind the checker knows has a test above that adds it
    src = open(os.path.abspath(__file__)).read()
    for kind in checker.Report.KINDS:
        assert '"%s"' % kind in src, kind


def test_the_clean_history_is_not_modified_by_check():
    h = clean()
    before = copy.deepcopy(h)
    checker.check(h)
    assert h == before
