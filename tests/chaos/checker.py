"""checker.py -- judges a history recorded by the chaos run (chaos_run.py).

What: check(history) returns a Report: the list of violations (each a kind
and a human-readable detail) and the figures of the run.  A history is a
plain dict (JSON-serialisable, so a failed run can be kept and re-checked):

  requests      what the load generators asked for and were told.  One per
                request tag: {"tag", "via": "http"|"cli", "key": str|None,
                "n": runs asked for, "tries": [{"t": epoch s, "outcome":
                "accepted"|"refused"|"unknown", "ids": [...]}]}.  Every run
                a request creates carries payload {"tag": <tag>}; a keyed
                request's tag is its idempotency key, and it is retried with
                the same key (so it has several tries).
                "refused" is an answer that promises nothing was queued
                (4xx, 503 queue_unavailable); "unknown" is any other failure
                (503 enqueue_outcome_unknown, a timeout, a CLI exit != 0).
  runs          the job_runs rows whose payload has a tag: {"id", "tag",
                "status", "attempts", "max_attempts", "consumer",
                "idempotency_key", "transport", "enqueued_at", "started_at"}
                (the two times in epoch seconds; started_at is the start of
                the attempt that is the record).
  events        the consumers' JSON log lines about runs: {"event":
                "run_succeeded"|"run_fenced"|"run_dead"|..., "runId",
                "attempt", "maxAttempts", "consumer", "proc"}.
  state_writes  every write of job_runner_state, in the order PostgreSQL
                applied them (a trigger logs them): {"seq", "id",
                "lastRunAt": epoch s, "durationMs"}.  The 'job_runner' row
                is written once per cycle, under the cycle lock, with the
                cycle's start and duration: it gives every finished cycle's
                interval without relying on log timestamps.
  legacy_holds  [[t1, t2], ...]: epoch seconds during which the test's own
                session (standing in for the legacy monolith) held the
                advisory lock (t1 after pg_advisory_lock returned, t2 before
                pg_advisory_unlock was sent).
  faults        [{"name", "start", "end", "recovery_s", "deadline_s",
                "unfinished"}]: recovery_s is how long after the fault was
                lifted every run accepted until then was finished; None when
                that took longer than deadline_s (unfinished says what was
                left), which counts as runs stuck.
  probes        optional, per fault: [{"fault", "ok", "detail"}] -- checks
                the run made itself during a fault (e.g. the API answered
                during the slowloris); a probe with ok false is a violation.

Violation kinds (Report.KINDS):
  lost            a run id an accepted request was given has no row
  stuck           an accepted run's row is not finished (succeeded/dead) at
                  the end; or runs accepted before a fault was lifted were
                  not all finished within the deadline after it; or an
                  accepted run started more than WAIT_LIMIT_S after it was
                  enqueued (no fault lasts a third of that: such a run sat
                  in a queue nobody served)
  duplicate_run   a request produced more runs than it was given ids for
                  (an unkeyed request; or a refused request that ran)
  key_two_runs    one idempotency key, more than one run (or two different
                  ids answered for it)
  result_twice    a run with more than one final result logged
                  (run_succeeded/run_dead), i.e. two completions accepted
  fenced_record   the record of a run is an attempt that was fenced
  attempts_over   attempts over the run's maximum
  cycle_overlap   two cycles' intervals overlap
  cycle_in_legacy a cycle ran while the legacy lock was held
  lastrunat_back  lastRunAt of a job_runner_state row moved backwards
  probe           a probe made during a fault failed

Why a module of its own: the checker must be tested on made-up histories
with each kind of violation (test_checker.py) without starting anything.
"""

import collections

FINISHED = ("succeeded", "dead")
RESULT_EVENTS = ("run_succeeded", "run_dead")
# Timestamps: lastRunAt is whole milliseconds and durations are measured on
# a monotonic clock; one millisecond absorbs the rounding.
TOLERANCE_S = 0.001
WAIT_LIMIT_S = 30.0


class Report:
    KINDS = ("lost", "stuck", "duplicate_run", "key_two_runs", "result_twice",
             "fenced_record", "attempts_over", "cycle_overlap", "cycle_in_legacy",
             "lastrunat_back", "probe")

    def __init__(self):
        self.violations = []      # [(kind, detail)]
        self.figures = collections.OrderedDict()

    def add(self, kind, detail):
        assert kind in self.KINDS, kind
        self.violations.append((kind, detail))

    def kinds(self):
        return sorted({k for k, _ in self.violations})

    def count(self, kind):
        return sum(1 for k, _ in self.violations if k == kind)

    @property
    def ok(self):
        return not self.violations

    def summary(self, limit=5):
        """Per kind: the count and the first `limit` details."""
        out = []
        for kind in self.KINDS:
            details = [d for k, d in self.violations if k == kind]
            if details:
                out.append("%s: %d" % (kind, len(details)))
                out += ["    " + d for d in details[:limit]]
        return "\n".join(out) if out else "no violation"


def _waited(row):
    """Seconds from enqueue to the start of the recorded attempt, or None."""
    if row.get("enqueued_at") is None or row.get("started_at") is None:
        return None
    return float(row["started_at"]) - float(row["enqueued_at"])


def _check_requests(h, rep, runs_by_tag, rows):
    accepted_ids = set()
    duplicated = 0
    unknown_reqs = 0
    for req in h.get("requests", ()):
        tag, key, n = req["tag"], req.get("key"), req.get("n", 1)
        tries = req.get("tries", ())
        ok = [t for t in tries if t["outcome"] == "accepted"]
        answered = set()
        for t in ok:
            answered.update(t.get("ids", ()))
        mine = runs_by_tag.get(tag, [])
        if any(t["outcome"] == "unknown" for t in tries):
            unknown_reqs += 1
        accepted_ids |= answered
        for rid in sorted(answered):
            row = rows.get(rid)
            if row is None:
                rep.add("lost", "%s (request %s, %s)" % (rid, tag, req.get("via")))
            elif row["status"] not in FINISHED:
                rep.add("stuck", "%s is %s after %d attempt(s) on %s (request %s)" % (
                    rid, row["status"], row.get("attempts") or 0, row.get("transport"), tag))
            elif _waited(row) is not None and _waited(row) > WAIT_LIMIT_S:
                rep.add("stuck", "%s (%s, request %s) started %.1f s after it was enqueued "
                        "(attempt %s)" % (rid, row.get("transport"), tag, _waited(row),
                                          row.get("attempts")))
        if key is not None:
            ids = sorted({r["id"] for r in mine} | answered)
            if len(ids) > 1:
                duplicated += len(ids) - 1
                rep.add("key_two_runs", "key %s (%s): runs %s%s" % (
                    key, req.get("via"), ", ".join(
                        "%s[%s]" % (i, rows[i]["transport"] if i in rows else "no row")
                        for i in ids),
                    "; answered %s" % sorted(answered) if len(answered) > 1 else ""))
            continue
        extra = [r["id"] for r in mine if r["id"] not in answered]
        if ok:
            if extra:
                duplicated += len(extra)
                rep.add("duplicate_run", "request %s (%s) was answered %d id(s) but made %d run(s): "
                        "extra %s" % (tag, req.get("via"), len(answered), len(mine), extra[:3]))
        elif any(t["outcome"] == "unknown" for t in tries):
            if len(mine) > n:
                duplicated += len(mine) - n
                rep.add("duplicate_run", "request %s (%s, outcome unknown) asked for %d run(s), "
                        "made %d" % (tag, req.get("via"), n, len(mine)))
        elif mine:
            duplicated += len(mine)
            rep.add("duplicate_run", "request %s (%s) was refused but made %d run(s): %s" % (
                tag, req.get("via"), len(mine), [r["id"] for r in mine][:3]))
    known = {req["tag"] for req in h.get("requests", ())}
    for tag, mine in runs_by_tag.items():
        if tag not in known:
            duplicated += len(mine)
            rep.add("duplicate_run", "runs of tag %s that no request asked for: %s" % (
                tag, [r["id"] for r in mine][:3]))
    return accepted_ids, duplicated, unknown_reqs


def _check_events(h, rep, rows):
    results = collections.defaultdict(list)
    fenced = []
    for e in h.get("events", ()):
        ev = e.get("event")
        if ev in RESULT_EVENTS:
            results[e.get("runId")].append(e)
        elif ev == "run_fenced":
            fenced.append(e)
        att, mx = e.get("attempt"), e.get("maxAttempts")
        if isinstance(att, int) and isinstance(mx, int) and att > mx:
            rep.add("attempts_over", "%s: %s logged attempt %d of %d by %s" % (
                e.get("runId"), ev, att, mx, e.get("consumer")))
    twice = 0
    for rid, evs in sorted(results.items()):
        if len(evs) > 1:
            twice += 1
            rep.add("result_twice", "%s: %s" % (rid, "; ".join(
                "%s attempt %s by %s" % (e["event"], e.get("attempt"), e.get("consumer"))
                for e in evs)))
    for e in fenced:
        row = rows.get(e.get("runId"))
        if row and row["status"] in FINISHED and row.get("consumer") == e.get("consumer") \
                and row.get("attempts") == e.get("attempt"):
            rep.add("fenced_record", "%s: the record (%s, attempt %s by %s) is the fenced attempt" % (
                e["runId"], row["status"], row.get("attempts"), row.get("consumer")))
    return twice, len(fenced)


def _cycles(h):
    """[(start, end, seq)] of the cycles recorded in the 'job_runner' row."""
    out = []
    for w in h.get("state_writes", ()):
        if w["id"] == "job_runner" and w.get("lastRunAt") is not None:
            start = float(w["lastRunAt"])
            out.append((start, start + (w.get("durationMs") or 0) / 1000.0, w["seq"]))
    return sorted(out)


def _check_cycles(h, rep):
    cycles = _cycles(h)
    for (s1, e1, q1), (s2, e2, q2) in zip(cycles, cycles[1:]):
        if s2 < e1 - TOLERANCE_S:
            rep.add("cycle_overlap", "cycle of write %d [%.3f, %.3f] overlaps cycle of write %d "
                    "[%.3f, %.3f] by %.0f ms" % (q1, s1, e1, q2, s2, e2, (e1 - s2) * 1000))
    holds = h.get("legacy_holds", ())
    for t1, t2 in holds:
        for s, e, q in cycles:
            if s < t2 - TOLERANCE_S and e > t1 + TOLERANCE_S:
                rep.add("cycle_in_legacy", "cycle of write %d [%.3f, %.3f] ran while the legacy "
                        "lock was held [%.3f, %.3f]" % (q, s, e, t1, t2))
    last = {}
    for w in sorted(h.get("state_writes", ()), key=lambda w: w["seq"]):
        v = w.get("lastRunAt")
        if v is None:
            continue
        prev = last.get(w["id"])
        if prev is not None and v < prev[0] - TOLERANCE_S:
            rep.add("lastrunat_back", "%s: lastRunAt went from %.3f (write %d) back to %.3f "
                    "(write %d)" % (w["id"], prev[0], prev[1], v, w["seq"]))
        if prev is None or v > prev[0]:
            last[w["id"]] = (v, w["seq"])
    return len(cycles)


def check(h):
    rep = Report()
    rows = {r["id"]: r for r in h.get("runs", ())}
    runs_by_tag = collections.defaultdict(list)
    for r in rows.values():
        if r.get("tag") is not None:
            runs_by_tag[r["tag"]].append(r)
        if r.get("attempts") is not None and r.get("max_attempts") is not None \
                and r["attempts"] > r["max_attempts"]:
            rep.add("attempts_over", "%s: %d attempts, maximum %d (%s)" % (
                r["id"], r["attempts"], r["max_attempts"], r["status"]))
    accepted, duplicated, unknown = _check_requests(h, rep, runs_by_tag, rows)
    twice, fenced = _check_events(h, rep, rows)
    ncycles = _check_cycles(h, rep)
    not_recovered = 0
    for x in h.get("faults", ()):
        if "recovery_s" in x and x["recovery_s"] is None:
            not_recovered += 1
            rep.add("stuck", "runs accepted before the end of fault %s were not all finished %s s "
                    "after it: %s" % (x["name"], x.get("deadline_s"), x.get("unfinished")))
    for p in h.get("probes", ()):
        if not p.get("ok"):
            rep.add("probe", "%s: %s" % (p.get("fault"), p.get("detail")))

    reqs = h.get("requests", ())
    f = rep.figures
    f["requests"] = len(reqs)
    f["keyed_requests"] = sum(1 for r in reqs if r.get("key") is not None)
    f["outcome_unknown_requests"] = unknown
    f["accepted_runs"] = len(accepted)
    f["runs_recorded"] = len(rows)
    f["lost"] = rep.count("lost")
    f["stuck"] = rep.count("stuck") - not_recovered
    f["faults_not_recovered"] = not_recovered
    f["duplicated"] = duplicated
    f["results_twice"] = twice
    f["fenced"] = fenced
    waits = sorted(w for w in map(_waited, rows.values()) if w is not None)
    f["start_wait_p99_s"] = round(waits[int(len(waits) * 0.99)], 2) if waits else None
    f["start_wait_max_s"] = round(waits[-1], 2) if waits else None
    f["executed_again"] = sum(1 for r in rows.values() if (r.get("attempts") or 0) > 1)
    f["dead"] = sum(1 for r in rows.values() if r["status"] == "dead")
    f["cycles"] = ncycles
    f["faults"] = [{"name": x["name"], "duration_s": round(x["end"] - x["start"], 1),
                    "recovery_s": None if x.get("recovery_s") is None else round(x["recovery_s"], 1)}
                   for x in h.get("faults", ())]
    return rep
