"""harness.py -- real servers and real processes for the integration tests.

What: start a throwaway PostgreSQL 15 cluster (`Postgres`), a throwaway
redis-server (`Redis`) and the jobrunner binaries (`Proc`), each on a free
port in its own temporary directory, and tear all of it down again.  Plus
small helpers: `free_port`, `http`, `wait_until`.

Why this way: the tests talk to the same servers production does (no mocks),
and every wait is a poll with a deadline and an error that says what was
being waited for, with the tail of the relevant log.  Servers and processes
write their output to files, so a failure can show what they said
(`failure_report`, used by conftest.py) and nothing blocks on a full pipe.

Invariants:
- Everything started is registered in `_REGISTRY`; `cleanup_all` (atexit)
  stops whatever a fixture did not.  Children are started in their own
  session with PR_SET_PDEATHSIG=SIGKILL, so even if pytest itself is killed
  with SIGKILL the servers and binaries die with it.
- PostgreSQL refuses to run as root: when we are root, initdb and postgres
  run as the `postgres` user (subprocess's user=/group=, the same effect as
  `runuser -u postgres --`, but the pid we hold is the postmaster itself,
  so signals reach it) in a directory that user owns.
- A Proc sees only the environment the test gives it, over a minimal base
  (PATH, sanitizer options): stray variables of the caller do not leak in.

Rejected alternative: pytest-xprocess / testcontainers -- extra packages, and
Docker is not available where the tests run.

Set JR_KEEP_TMP=1 to keep the temporary directories (logs, data) after the
run; their location is printed at exit.
"""

import atexit
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

PG_BIN = "/usr/lib/postgresql/15/bin"
REDIS_SERVER = "/usr/bin/redis-server"
TAIL_LINES = 50

_REGISTRY = []      # every Postgres, Redis and Proc created, in order
_TMP_ROOT = None    # created lazily, removed at exit (unless JR_KEEP_TMP)


# --------------------------------------------------------------------------
# Low level: temp dirs, ports, children
# --------------------------------------------------------------------------

def tmp_root():
    """The per-run temporary directory (world-traversable, so that the
    postgres user can reach its own subdirectory)."""
    global _TMP_ROOT
    if _TMP_ROOT is None:
        _TMP_ROOT = tempfile.mkdtemp(prefix="jr-it-")
        os.chmod(_TMP_ROOT, 0o755)
    return _TMP_ROOT


def make_tmpdir(prefix):
    return tempfile.mkdtemp(prefix=prefix + "-", dir=tmp_root())


def _cache_dir():
    """Where initdb output is cached: $JR_BUILD/it-cache, or the run's
    temporary directory."""
    build = os.environ.get("JR_BUILD")
    if build and os.path.isdir(build):
        path = os.path.join(build, "it-cache")
        try:
            os.makedirs(path, exist_ok=True)
            return path
        except OSError:
            pass
    return tmp_root()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS = __import__("random").SystemRandom()


def free_port():
    """A TCP port that was free a moment ago, on every address.  Chosen at
    random below the kernel's ephemeral range: a port from that range (what
    bind(0) hands out) is also where every outgoing connection takes its
    source port, so on a busy machine a server started on it a moment later
    could find it taken by someone's connection."""
    low = _ephemeral_low()
    for _ in range(200):
        port = _PORTS.randrange(10000, max(10001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _is_root():
    return os.geteuid() == 0


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _child_setup():
    """Runs in the child between fork and exec (after any setuid): die with
    the test process, whatever kills it."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _popen(argv, *, env, log_path, cwd=None, as_postgres=False):
    """Starts argv in a new session with stdout+stderr appended to log_path."""
    kw = {}
    if as_postgres and _is_root():
        kw = {"user": "postgres", "group": "postgres", "extra_groups": []}
    with open(log_path, "ab", buffering=0) as log:
        return subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_child_setup, **kw)


def _kill_group(popen, sig=signal.SIGKILL):
    """Signals popen's whole session (it leads its own process group)."""
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid):
    """1 if a process of group pgid is alive: running, not a zombie (a
    zombie holds no shared memory or socket; whether and when it is reaped
    depends on who inherited it)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()   # after "pid (comm) "
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _wait_group_gone(pgid, timeout):
    """Polls until no live process of group pgid is left: True, or False
    at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return True
        time.sleep(0.02)
    return False


def _shm_attached(shmid):
    """How many processes are attached to System V segment shmid (0 when
    it is gone)."""
    try:
        with open("/proc/sysvipc/shm") as f:
            next(f)
            for line in f:
                cols = line.split()
                if len(cols) > 6 and cols[1] == str(shmid):
                    return int(cols[6])
    except (OSError, StopIteration, ValueError):
        pass
    return 0


def _wait_shm_detached(shmid, timeout):
    """Polls until no process is attached to segment shmid: True, or False
    at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _shm_attached(shmid) == 0:
            return True
        time.sleep(0.02)
    return False


def tail_file(path, n=TAIL_LINES):
    """The last n lines of a file as one string ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------
# Polling
# --------------------------------------------------------------------------

def wait_until(predicate, timeout=10.0, interval=0.05, msg=None, ignore=()):
    """Calls predicate() until it returns something truthy and returns that.
    Exceptions of the types in `ignore` count as "not yet".  On timeout
    raises AssertionError with msg (and the last ignored exception)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ignore as e:  # noqa: PERF203 -- polling
            last_exc = e
        if time.monotonic() >= deadline:
            text = "timed out after %.1fs waiting for %s" % (
                timeout, msg or getattr(predicate, "__name__", "condition"))
            if last_exc is not None:
                text += " (last error: %r)" % (last_exc,)
            raise AssertionError(text)
        time.sleep(interval)


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

def http(method, url, body=None, headers=None, timeout=10.0):
    """One HTTP request with urllib.  body: dict/list (sent as JSON),
    str or bytes (sent as is) or None.  Returns (status, headers, data):
    headers a dict with lower-case names, data the parsed JSON body, or the
    text when it is not JSON ('' when empty).  4xx/5xx are returned, not
    raised; connection errors raise urllib.error.URLError."""
    hdrs = dict(headers or {})
    data = None
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        data = body.encode()
    elif body is not None:
        data = bytes(body)
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, rhdrs, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, rhdrs, raw = e.code, e.headers, e.read()
        e.close()
    text = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(text) if text.strip() else text
    except ValueError:
        parsed = text
    return status, {k.lower(): v for k, v in rhdrs.items()}, parsed


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------

class PgDatabase:
    """One database of a Postgres cluster: url, connect(), query(), execute().
    query/execute share one cached autocommit connection, reopened when it
    was closed (the cluster resets it on stop/start/kill)."""

    def __init__(self, cluster, dbname):
        self.cluster = cluster
        self.dbname = dbname
        self._conn = None

    @property
    def url(self):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (
            self.cluster.port, self.dbname)

    def connect(self, **kw):
        """A new psycopg2 connection in autocommit mode; the caller closes it."""
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.cluster.port,
                                user="postgres", dbname=self.dbname,
                                connect_timeout=kw.pop("connect_timeout", 5),
                                **kw)
        conn.autocommit = True
        return conn

    def _cursor(self):
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn.cursor()

    def _close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def query(self, sql, params=None):
        """Runs sql and returns all rows (a list of tuples)."""
        try:
            with self._cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
        except Exception:
            self._close()   # a broken connection is never reused
            raise

    def execute(self, sql, params=None):
        """Runs sql; returns the number of rows affected."""
        try:
            with self._cursor() as cur:
                cur.execute(sql, params)
                return cur.rowcount
        except Exception:
            self._close()
            raise

    def scalar(self, sql, params=None):
        """The first column of the first row, or None if there is no row."""
        rows = self.query(sql, params)
        return rows[0][0] if rows else None


class _Server:
    """What the throwaway servers share: their log, their line in failure
    reports, their cleanup.  Subclasses set KIND, port, log_path, dir,
    closed and stop()."""
    KIND = "server"

    def log_tail(self, n=TAIL_LINES):
        return tail_file(self.log_path, n)

    def describe(self):
        return "%s :%d (%s)" % (self.KIND, self.port, self.log_path)

    def cleanup(self):
        """Stops the server and removes its directory (unless JR_KEEP_TMP)."""
        if self.closed:
            return
        self.stop(timeout=10)
        self.closed = True
        _remove_tree(self.dir)


class Postgres(PgDatabase, _Server):
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1:port (database
    `postgres`, user `postgres`, trust auth).  Started by the constructor
    unless start=False.  `settings` adds/overrides server settings.
    fsync is off (fast), but synchronous_commit stays on: a committed
    transaction is in the kernel, so it survives kill() (a process crash)."""
    KIND = "postgres"

    BASE_SETTINGS = {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "full_page_writes": "off",
        "shared_buffers": "16MB",
        "max_connections": "200",
        "max_wal_size": "256MB",
        "logging_collector": "off",
        "log_min_messages": "warning",
    }

    def __init__(self, settings=None, port=None, start=True, name="postgres"):
        self.name = name
        self.port = port or free_port()
        self.dir = make_tmpdir("pg")
        self.datadir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "server.log")
        self.settings = dict(self.BASE_SETTINGS, **(settings or {}))
        self.proc = None
        self.closed = False
        self._dbs = []
        super().__init__(self, "postgres")
        _REGISTRY.append(self)
        if _is_root():
            shutil.chown(self.dir, "postgres", "postgres")
        self._initdb()
        if start:
            self.start()

    def _env(self):
        return {"PATH": "/usr/bin:/bin", "LANG": "C", "LC_ALL": "C"}

    INITDB_ARGS = ["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
                   "--no-sync", "--no-instructions"]

    def _initdb(self):
        """Fills self.datadir: a copy of the cached initdb output when there
        is one (initdb takes ~1.2 s, a copy ~0.1 s), else initdb, whose
        output then becomes the cache.  The cache is a never-started data
        dir in $JR_BUILD/it-cache (shared by the test files; per run if
        JR_BUILD is unset), keyed by user and initdb arguments, and
        published with an atomic rename so concurrent runs cannot see
        half a copy."""
        key = hashlib.sha1(" ".join(self.INITDB_ARGS).encode()).hexdigest()[:10]
        cache = os.path.join(_cache_dir(), "pg15-%d-%s" % (os.geteuid(), key))
        if os.path.isfile(os.path.join(cache, "PG_VERSION")):
            if subprocess.run(["cp", "-a", cache, self.datadir],
                              stderr=subprocess.DEVNULL).returncode == 0:
                return
            shutil.rmtree(self.datadir, ignore_errors=True)  # fall back to initdb
        argv = [os.path.join(PG_BIN, "initdb"), "-D", self.datadir] + self.INITDB_ARGS
        log_path = os.path.join(self.dir, "initdb.log")
        p = _popen(argv, env=self._env(), log_path=log_path, cwd=self.dir,
                   as_postgres=True)
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _kill_group(p)
            p.wait()
            rc = "timeout"
        if rc != 0:
            raise RuntimeError("initdb failed (%s):\n%s" % (rc, tail_file(log_path)))
        staging = "%s.tmp-%d" % (cache, os.getpid())
        if subprocess.run(["cp", "-a", self.datadir, staging],
                          stderr=subprocess.DEVNULL).returncode == 0:
            try:
                os.rename(staging, cache)
            except OSError:       # another run published it first
                pass
        shutil.rmtree(staging, ignore_errors=True)

    def start(self, timeout=120.0):
        """Starts the server (again, on the same data dir and port) and
        polls until it accepts connections (crash recovery after kill()
        included: the deadline is generous for busy machines)."""
        if self.running:
            return self
        argv = [os.path.join(PG_BIN, "postgres"), "-D", self.datadir,
                "-p", str(self.port), "-c", "unix_socket_directories=" + self.dir]
        for k, v in self.settings.items():
            argv += ["-c", "%s=%s" % (k, v)]
        self.proc = _popen(argv, env=self._env(), log_path=self.log_path,
                           cwd=self.dir, as_postgres=True)
        self.closed = False
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited with %s while starting; log tail:\n%s"
                                   % (self.proc.returncode, tail_file(self.log_path)))
            try:
                self.connect(connect_timeout=2).close()
                return self
            except Exception as e:  # not ready yet
                last = e
            if time.monotonic() >= deadline:
                self._kill_now()
                raise RuntimeError("postgres not ready after %.0fs (%s); log tail:\n%s"
                                   % (timeout, last, tail_file(self.log_path)))
            time.sleep(0.05)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _close_conns(self):
        self._close()
        for db in self._dbs:
            db._close()

    def stop(self, timeout=30.0):
        """Fast shutdown (SIGINT): rolls back open transactions, checkpoints."""
        self._close_conns()
        if not self.running:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_now()

    def _shmid(self):
        """The System V shared memory id the postmaster recorded in
        postmaster.pid (its last line: "key shmid"), or None."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                lines = f.read().splitlines()
            return int(lines[6].split()[1]) if len(lines) > 6 else None
        except (OSError, ValueError, IndexError):
            return None

    def _kill_now(self):
        pgid = self.proc.pid
        shmid = self._shmid()
        _kill_group(self.proc)
        self.proc.wait()
        # Backends call setsid(): they are not in the postmaster's process
        # group, and outlive it until they notice it is gone.  A new
        # postmaster refuses to start while any of them is still attached to
        # the old segment, so wait until nothing is (the segment's nattch).
        if shmid is not None and not _wait_shm_detached(shmid, 120.0):
            raise RuntimeError("postgres :%d: shared memory %d still attached 120 s after "
                               "SIGKILL" % (self.port, shmid))
        # The postmaster's own group too (runuser and the postmaster).  On a
        # busy machine that can take a while: wait generously, and say so if
        # it never happens rather than let a restart fail obscurely.
        if not _wait_group_gone(pgid, 120.0):
            raise RuntimeError("postgres :%d: processes of group %d still alive 120 s after "
                               "SIGKILL" % (self.port, pgid))

    def kill(self):
        """SIGKILL the postmaster and all its backends: a crash; start()
        then runs crash recovery."""
        self._close_conns()
        if self.running:
            self._kill_now()

    def create_database(self, name=None):
        """CREATEs a new database in this cluster; returns its PgDatabase."""
        name = name or "t_%s" % os.urandom(6).hex()
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError("bad database name %r" % name)
        self.execute('CREATE DATABASE "%s"' % name)
        db = PgDatabase(self, name)
        self._dbs.append(db)
        return db



# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------

class Redis(_Server):
    """A throwaway redis-server on 127.0.0.1:port.  No RDB snapshots;
    appendonly=True turns on the AOF with appendfsync always, so data written
    before a kill() is back after start().  extra_args (a list of strings,
    e.g. ["--maxmemory", "10mb"]) come last and so override the defaults."""
    KIND = "redis"

    def __init__(self, appendonly=False, extra_args=(), port=None, start=True,
                 name="redis"):
        self.name = name
        self.port = port or free_port()
        self.dir = make_tmpdir("redis")
        self.log_path = os.path.join(self.dir, "server.log")
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        self.proc = None
        self.closed = False
        _REGISTRY.append(self)
        if start:
            self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def client(self, **kw):
        """A new redis.Redis (decode_responses=True, 10 s socket timeout)."""
        import redis
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=30.0):
        """Starts redis-server (again: same dir, port and config) and polls
        PING until it answers."""
        if self.running:
            return self
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--daemonize", "no",
                "--protected-mode", "no", "--logfile", "",
                "--maxmemory-policy", "noeviction"]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        argv += self.extra_args
        self.proc = _popen(argv, env={"PATH": "/usr/bin:/bin"},
                           log_path=self.log_path, cwd=self.dir)
        self.closed = False
        deadline = time.monotonic() + timeout
        last = None
        client = self.client(socket_timeout=2, socket_connect_timeout=2)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("redis-server exited with %s while starting; log tail:\n%s"
                                       % (self.proc.returncode, self.log_tail()))
                try:
                    if client.ping():
                        return self
                except Exception as e:  # not ready yet (or loading the AOF)
                    last = e
                if time.monotonic() >= deadline:
                    self.kill()
                    raise RuntimeError("redis-server not ready after %.0fs (%s); log tail:\n%s"
                                       % (timeout, last, self.log_tail()))
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout=30.0):
        """SIGTERM (a clean shutdown; with AOF, flushed), then wait."""
        if not self.running:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        """SIGKILL: a crash."""
        if self.running:
            _kill_group(self.proc)
            self.proc.wait()

    def restart(self):
        self.stop()
        return self.start()



# --------------------------------------------------------------------------
# PgBouncer
# --------------------------------------------------------------------------

PGBOUNCER = "/usr/sbin/pgbouncer"


class PgBouncer:
    """Debian's pgbouncer in front of a Postgres cluster, on 127.0.0.1:port,
    in its own temporary directory, run as the `postgres` user when we are
    root (pgbouncer refuses to run as root).  pool_mode is "transaction" or
    "session"; pool_size is default_pool_size (server connections per
    database and user).  url(dbname) is the pooled URL of a database."""

    def __init__(self, cluster, pool_mode="transaction", pool_size=5, port=None, start=True):
        self.cluster = cluster
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.port = port or free_port()
        self.dir = make_tmpdir("pgbouncer")
        self.log_path = os.path.join(self.dir, "pgbouncer.log")
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        self.proc = None
        self.closed = False
        _REGISTRY.append(self)
        with open(os.path.join(self.dir, "userlist.txt"), "w") as f:
            f.write('"postgres" ""\n')
        with open(self.ini, "w") as f:
            f.write("[databases]\n* = host=127.0.0.1 port=%d\n\n[pgbouncer]\n"
                    "listen_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
                    "auth_type = trust\nauth_file = %s\npool_mode = %s\n"
                    "default_pool_size = %d\nmax_client_conn = 500\n"
                    "server_reset_query = DISCARD ALL\n"
                    "ignore_startup_parameters = extra_float_digits\n"
                    % (cluster.port, self.port, os.path.join(self.dir, "userlist.txt"),
                       pool_mode, pool_size))
        if _is_root():
            for name in os.listdir(self.dir):
                shutil.chown(os.path.join(self.dir, name), "postgres", "postgres")
            shutil.chown(self.dir, "postgres", "postgres")
        if start:
            self.start()

    def url(self, dbname):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, dbname)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=20.0):
        if self.running:
            return self
        self.proc = _popen([PGBOUNCER, self.ini], env={"PATH": "/usr/bin:/bin"},
                           log_path=self.log_path, cwd=self.dir, as_postgres=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("pgbouncer exited with %s; log tail:\n%s"
                                   % (self.proc.returncode, tail_file(self.log_path)))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError("pgbouncer not listening after %.0fs; log tail:\n%s"
                                   % (timeout, tail_file(self.log_path)))
            time.sleep(0.05)

    def stop(self, timeout=10.0):
        if not self.running:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
            self.proc.wait()

    def log_tail(self, n=TAIL_LINES):
        return tail_file(self.log_path, n)

    def describe(self):
        return "pgbouncer :%d %s (%s)" % (self.port, self.pool_mode, self.log_path)

    def cleanup(self):
        if self.closed:
            return
        self.stop()
        self.closed = True
        _remove_tree(self.dir)


# --------------------------------------------------------------------------
# Processes under test
# --------------------------------------------------------------------------

# Passed through from the caller's environment; nothing else is.
_PASSTHROUGH_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TZ")


def _as_json_object(line):
    s = line.lstrip()
    if not s.startswith("{"):
        return None
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class Proc:
    """A process under test, output (stdout+stderr) captured to a file.

    argv: list (argv[0] a path).  env: dict merged over the minimal base
    (PATH + sanitizer options); a value of None removes a key; values are
    str()-ed.  The process runs in its own session; cleanup() stops it and
    anything it started."""

    def __init__(self, argv, env=None, cwd=None, name=None):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.dir = make_tmpdir("proc-" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.name))
        self.log_path = os.path.join(self.dir, "output.log")
        base = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
        for k in _PASSTHROUGH_ENV:
            if k in os.environ:
                base[k] = os.environ[k]
        for k, v in (env or {}).items():
            if v is None:
                base.pop(k, None)
            else:
                base[k] = str(v)
        self.env = base
        self.closed = False
        self._lines = []
        self._partial = b""
        self._offset = 0
        self.started_at = time.time()
        self.popen = _popen(self.argv, env=self.env, log_path=self.log_path,
                            cwd=cwd or self.dir)
        _REGISTRY.append(self)

    @property
    def pid(self):
        return self.popen.pid

    @property
    def returncode(self):
        """Exit code (negative: killed by that signal), None while running."""
        return self.popen.poll()

    # ---- output ----

    def _read(self):
        """Appends the complete lines written since the last call."""
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        if not data:
            return
        self._offset += len(data)
        data = self._partial + data
        parts = data.split(b"\n")
        self._partial = parts.pop()
        self._lines.extend(p.decode("utf-8", "replace").rstrip("\r") for p in parts)

    def lines(self):
        """All complete output lines so far (plus the unterminated last one
        once the process has exited)."""
        self._read()
        if self._partial and self.popen.poll() is not None:
            self._lines.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        return list(self._lines)

    def json_lines(self):
        """The output lines that are JSON objects, parsed."""
        return [o for o in map(_as_json_object, self.lines()) if o is not None]

    def mark(self):
        """The current number of lines: pass as wait_for_log(after=...) to
        wait for a line written after this point."""
        return len(self.lines())

    @staticmethod
    def _matcher(pattern):
        """-> function(line) returning the match result (JSON object or line)
        or None."""
        if callable(pattern) and not isinstance(pattern, re.Pattern):
            def match(line):
                obj = _as_json_object(line)
                return obj if obj is not None and pattern(obj) else None
            return match
        if isinstance(pattern, dict):
            def match(line):
                obj = _as_json_object(line)
                if obj is None:
                    return None
                ok = all(k in obj and obj[k] == v for k, v in pattern.items())
                return obj if ok else None
            return match
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern

        def match(line):
            if not rx.search(line):
                return None
            obj = _as_json_object(line)
            return obj if obj is not None else line
        return match

    def wait_for_log(self, pattern, timeout=10.0, after=0):
        """Waits for an output line (from line index `after` on) that matches
        and returns it: the parsed JSON object if the line is one, else the
        line.  pattern: a regex (str or compiled, searched in the raw line);
        a dict (a JSON line containing all these key/values); or a callable
        (called with each JSON object line; truthy = match).  Raises
        AssertionError with the last 50 lines on timeout or if the process
        exits without printing it."""
        match = self._matcher(pattern)
        deadline = time.monotonic() + timeout
        checked = after
        while True:
            exited = self.popen.poll() is not None
            lines = self.lines()
            for i in range(checked, len(lines)):
                hit = match(lines[i])
                if hit is not None:
                    return hit
            checked = max(checked, len(lines))
            if exited:
                why = "%s exited with code %s" % (self.name, self.popen.returncode)
                break
            if time.monotonic() >= deadline:
                why = "timed out after %.1fs" % timeout
                break
            time.sleep(0.02)
        raise AssertionError("%s: no log line matching %r (%s); last lines:\n%s"
                             % (self.name, pattern, why, self.log_tail()))

    def log_tail(self, n=TAIL_LINES):
        return "\n".join(self.lines()[-n:])

    # ---- lifecycle ----

    def signal(self, sig):
        """Sends sig to the process (not its children)."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill9(self):
        """SIGKILL the process (a crash); returns its exit code (-9)."""
        self.signal(signal.SIGKILL)
        return self.popen.wait()

    def wait(self, timeout=10.0):
        """Waits for the process to exit; returns the exit code.  Raises
        AssertionError (with the log tail) if it is still running."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s (pid %d) still running after %.1fs; last lines:\n%s"
                                 % (self.name, self.pid, timeout, self.log_tail())) from None

    def terminate(self, timeout=10.0):
        """SIGTERM, wait up to timeout, then SIGKILL; returns the exit code
        (negative for a signal: -15 if it died of SIGTERM, -9 if killed)."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    stop = terminate

    def describe(self):
        rc = self.popen.poll()
        state = "running" if rc is None else "exit code %s" % rc
        return "%s pid %d, %s (%s)" % (self.name, self.pid, state, self.log_path)

    def cleanup(self):
        """Stops the process and whatever is left of its session."""
        if self.closed:
            return
        self.terminate(timeout=5)
        _kill_group(self.popen)
        self.closed = True


# --------------------------------------------------------------------------
# Registry: failure reports and cleanup
# --------------------------------------------------------------------------

def registry_mark():
    """An index into the registry: pass to failure_report(since=...)."""
    return len(_REGISTRY)


def failure_report(since=0, n=TAIL_LINES):
    """The log tails of everything created since `since`, plus of servers
    created before that are still running (module-scoped ones)."""
    out = []
    for i, obj in enumerate(_REGISTRY):
        if i < since and (obj.closed or not isinstance(obj, (Postgres, Redis))):
            continue
        out.append("===== %s: last %d lines =====\n%s" % (obj.describe(), n, obj.log_tail(n)))
    return "\n".join(out)


def _remove_tree(path):
    if not os.environ.get("JR_KEEP_TMP"):
        shutil.rmtree(path, ignore_errors=True)


def cleanup_all():
    """Stops everything still running (processes first, then servers) and
    removes the temporary directory.  Safe to call more than once."""
    global _TMP_ROOT
    for obj in reversed(_REGISTRY):
        if isinstance(obj, Proc):
            try:
                obj.cleanup()
            except Exception:
                pass
    for obj in reversed(_REGISTRY):
        try:
            obj.cleanup()
        except Exception:
            pass
    if _TMP_ROOT is not None:
        if os.environ.get("JR_KEEP_TMP"):
            print("harness: kept temporary files in %s" % _TMP_ROOT)
        else:
            shutil.rmtree(_TMP_ROOT, ignore_errors=True)
        _TMP_ROOT = None


atexit.register(cleanup_all)
