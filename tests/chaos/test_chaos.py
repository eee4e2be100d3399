"""The chaos run under pytest (CTest: chaos/redis and chaos/redisless,
label `chaos`).

Starts everything, injects every fault of chaos_run.FAULTS[mode] under
load, and fails with the checker's summary if any violation was found.
The history and the figures are kept in $JR_BUILD/chaos-<mode>/
(history.json, figures.json).  Redis mode takes about 75 s, Redis-less
about 45 s, on an idle 2-core machine."""

import json
import os
import signal
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "support"))

import chaos_run  # noqa: E402
import harness  # noqa: E402


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")   # CTest's timeout: unwind, stop the servers


@pytest.mark.parametrize("mode", ["redis", "redisless"])
def test_chaos(mode):
    bin_dir = os.environ.get("JR_BIN")
    if not bin_dir or not os.access(os.path.join(bin_dir, "consumer"), os.X_OK):
        pytest.skip("JR_BIN is not set or has no consumer (build first, run through ctest)")
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    build = os.environ.get("JR_BUILD")
    out = os.path.join(build, "chaos-" + mode) if build else harness.make_tmpdir("chaos-" + mode)
    rep = chaos_run.run(bin_dir, out, mode)
    assert rep.ok, "chaos checker found violations (history in %s):\n%s\nfigures: %s" % (
        out, rep.summary(limit=10), json.dumps(rep.figures))
    if mode == "redis":
        # the faults also hit runs moved into the fairness lanes
        assert rep.figures["fair_lanes_on"] >= 1, json.dumps(rep.figures)
