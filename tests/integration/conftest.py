"""Fixtures shared by the integration tests (the harness is tests/support/harness.py).

  pg            module-scoped Postgres cluster (harness.Postgres)
  db_url        function-scoped: URL of a new, empty database in `pg`
  db            function-scoped: harness.PgDatabase handle of that same database
  pg_fresh      function-scoped private Postgres, for tests that stop/kill it
  redis_server  function-scoped harness.Redis (no AOF)
  redis_aof     function-scoped harness.Redis with appendonly yes
  bins          session-scoped Bins(producer, consumer) paths; skips if missing
  spawn         function-scoped factory: spawn("consumer", args, env) -> harness.Proc,
                all stopped at test end
  mode          module-scoped: "redisless" / "redis" (apiclient.MODES)
  system        module-scoped apiclient.System in `mode`: a producer and one consumer
  fresh         function-scoped factory: fresh(**kw) -> a System of its own

On a failed test the report gets a section with the log tails of every
server and process the test used.
"""

import collections
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))

import harness  # noqa: E402
import apiclient  # noqa: E402

Bins = collections.namedtuple("Bins", "producer consumer dir")


def _on_sigterm(signum, frame):
    # CTest's timeout (or anyone) sends SIGTERM: unwind so that fixture
    # finalizers and atexit stop the servers.
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config):
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


# ---- failure reports --------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._jr_mark = harness.registry_mark()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        text = harness.failure_report(since=getattr(item, "_jr_mark", 0))
        if text:
            rep.sections.append(("server and process logs (%s)" % rep.when, text))


# ---- servers ----------------------------------------------------------------

@pytest.fixture(scope="module")
def pg():
    server = harness.Postgres()
    yield server
    server.cleanup()


@pytest.fixture
def db(pg):
    return pg.create_database()


@pytest.fixture
def db_url(db):
    return db.url


@pytest.fixture
def pg_fresh():
    server = harness.Postgres()
    yield server
    server.cleanup()


@pytest.fixture
def redis_server():
    server = harness.Redis()
    yield server
    server.cleanup()


@pytest.fixture
def redis_aof():
    server = harness.Redis(appendonly=True)
    yield server
    server.cleanup()


# ---- binaries -----------------------------------------------------------------

def _bin_dir():
    d = os.environ.get("JR_BIN")
    if not d:
        pytest.skip("JR_BIN is not set (run through ctest, or export JR_BIN=<build>/bin)")
    return d


def _resolve(name):
    """'producer'/'consumer' (no slash) -> JR_BIN/name; a path stays as is."""
    if "/" in name:
        return name
    path = os.path.join(_bin_dir(), name)
    if not os.access(path, os.X_OK):
        pytest.skip("%s is missing or not executable (build first)" % path)
    return path


@pytest.fixture(scope="session")
def bins():
    d = _bin_dir()
    return Bins(_resolve("producer"), _resolve("consumer"), d)


@pytest.fixture
def spawn():
    """spawn(name_or_path, args=(), env=None, cwd=None, name=None) -> Proc.
    A bare name is looked up in JR_BIN (test skipped if absent)."""
    procs = []

    def start(prog, args=(), env=None, cwd=None, name=None):
        path = _resolve(str(prog))
        p = harness.Proc([path, *args], env=env, cwd=cwd, name=name)
        procs.append(p)
        return p

    yield start
    for p in reversed(procs):
        p.cleanup()


# ---- whole systems (the API tests) -------------------------------------------

def _system_tag(request, mode):
    """test_control.py in Redis mode -> "control-redis" (process names)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    return "%s-%s" % (name[5:] if name.startswith("test_") else name, mode)


@pytest.fixture(scope="module", params=apiclient.MODES)
def mode(request):
    return request.param


@pytest.fixture(scope="module")
def system(mode, pg, request):
    yield from apiclient.shared_system(mode, pg, _system_tag(request, mode))


@pytest.fixture
def fresh(mode, pg, request):
    """factory: a system of its own (consumers=0 by default)."""
    yield from apiclient.system_factory(mode, pg, _system_tag(request, mode) + "-f")
