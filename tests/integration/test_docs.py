"""The deployment files and the documentation stay true to the binaries.

No Docker engine or Kubernetes cluster runs here, so the files are checked
against what the binaries themselves say:

- docs/configuration.md is exactly `producer --print-config-reference`;
- every variable set in compose/ and compose/k8s/ is one that `--help`
  lists ("env NAME"), and every command line they run is accepted by the
  binary (run with an unreachable database and STARTUP_TIMEOUT_MS=0, a
  valid command exits 3, "unreachable"; a bad flag, variable value or
  role mix-up exits 2, "usage");
- probes and health checks point to the health paths on the right port,
  the worker's termination grace period outlasts WORKER_SHUTDOWN_TIMEOUT_MS,
  and consumers in Kubernetes are named after their pod;
- the commands, variables and HTTP paths written in the guides exist
  (the paths against a running producer and consumer), and both operations
  guides describe every variable and have the same sections;
- the stuck-lock runbook works, step by step, with the guides' own SQL,
  against a real consumer and an orphaned session holding the cycle lock.

`docker compose config` and `kubectl kustomize` are run when those clients
are installed (they parse offline); otherwise those two checks are skipped
with the reason.
"""

import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
COMPOSE_DIR = os.path.join(ROOT, "compose")
K8S_DIR = os.path.join(COMPOSE_DIR, "k8s")
COMPOSE_FILE = os.path.join(COMPOSE_DIR, "docker-compose.yml")
DOCKERFILE = os.path.join(COMPOSE_DIR, "Dockerfile")

# The guides whose commands, variables and paths are checked.
GUIDES = ["docs/architecture.md", "docs/operations.md", "docs/es/operations.md",
          "compose/README.md", "docs/deployment.md", "docs/es/deployment.md"]

# Health paths (docs/operations.md, "Endpoints"); test_health_paths_answer checks them live.
PRODUCER_HEALTH = {"/api/health", "/api/health/extended"}
CONSUMER_HEALTH = {"/health", "/health/ready"}

# A database nobody listens on: a valid command line gets past the
# configuration and stops at the connection (exit 3).
UNREACHABLE_DB = "postgresql://jobrunner@127.0.0.1:1/jobrunner"
EXIT_USAGE, EXIT_UNREACHABLE = 2, 3

# The consumer's extra wait after WORKER_SHUTDOWN_TIMEOUT_MS before it
# exits anyway (consumer/main.c: worker_abort then worker_join 2000 ms).
ABORT_WINDOW_MS = 2000

SEED_VARIABLES = {"NODE_ENV", "PORT", "DATABASE_URL", "WORKER_MODE", "JOB_RUNNER_ENABLED",
                  "JOB_RUNNER_INTERVAL_MS", "NO_REPLY_SCAN_ENABLED", "NO_REPLY_SCAN_INTERVAL_MS",
                  "META_SPEND_ENABLED", "META_TOKEN_REFRESH_ENABLED", "WORKER_RUN_ONCE"}

# Upper-case names in the guides that are not jobrunner variables.
NOT_OUR_VARIABLES = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "JR_BIN", "JR_BUILD",
                     "RUN_ID",
                     # libpq's and Kerberos's own, read by db.c to tell whether Kerberos is set up
                     "PGGSSENCMODE", "KRB5CCNAME", "KRB5_CONFIG"}


# ---------------------------------------------------------------------------
# what the binaries say
# ---------------------------------------------------------------------------

def _base_env():
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TZ"):
        if k in os.environ:
            env[k] = os.environ[k]
    return env


class Binary:
    """One binary's --help, parsed: variables, flags (name -> takes a value)
    and subcommands (name -> their flags, from the usage lines)."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        out = subprocess.run([path, "--help"], env=_base_env(), capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, out.stderr
        self.help = out.stdout
        self.variables = set(re.findall(r"\benv ([A-Z][A-Z0-9_]*)", self.help))
        self.defaults = dict(re.findall(r"\benv ([A-Z][A-Z0-9_]*), default (\S+)", self.help))
        self.flags = {}
        for m in re.finditer(r"^\s+--([a-z0-9-]+)(=(\S+))?", self.help, re.M):
            self.flags[m.group(1)] = m.group(3) not in (None, "BOOL")
        self.subcommands = {}
        # "producer [OPTIONS] enqueue JOB [--org ID] ..." and its continuation lines
        usage = self.help.split("\n\n", 1)[0]
        for m in re.finditer(r"%s \[OPTIONS\] ([a-z]+)\b(.*(?:\n {20,}\S.*)*)" % self.name, usage):
            self.subcommands[m.group(1)] = set(re.findall(r"--([a-z0-9-]+)", m.group(2)))

    def default(self, var):
        return self.defaults.get(var)

    def run(self, args, env=None, timeout=60):
        """Runs the binary against an unreachable database."""
        e = _base_env()
        e.update(env or {})
        e["DATABASE_URL"] = UNREACHABLE_DB
        e["STARTUP_TIMEOUT_MS"] = "0"
        return subprocess.run([self.path, *args], env=e, capture_output=True, text=True,
                              timeout=timeout)

    def assert_accepts(self, args, env, where):
        """The configuration and command line are valid: the binary gets as
        far as connecting (exit 3), or finishes (0) for --help and the like."""
        out = self.run(args, env)
        assert out.returncode in (0, EXIT_UNREACHABLE), (
            "%s: `%s %s` is refused by the binary (exit %d): %s" % (
                where, self.name, " ".join(args), out.returncode,
                (out.stderr or out.stdout).strip()[-500:]))


@pytest.fixture(scope="module")
def known(bins):
    return {"producer": Binary(bins.producer), "consumer": Binary(bins.consumer)}


def _binary_of(known, argv, where):
    assert argv, "%s: no command" % where
    name = os.path.basename(argv[0])
    assert name in known, "%s: runs %r, which is not producer or consumer" % (where, argv[0])
    return known[name]


def _check_flags(b, args, where):
    """A readable message for an unknown flag before running the binary."""
    sub = None
    for a in args:
        if not a.startswith("-"):
            if sub is None and a in b.subcommands:
                sub = a
            continue
        name = a[2:].split("=", 1)[0]
        allowed = b.subcommands[sub] if sub else b.flags
        assert name in allowed or name == "help", (
            "%s: `%s` has no flag --%s (see `%s --help`)" % (where, b.name, name, b.name))


# ---------------------------------------------------------------------------
# the configuration reference
# ---------------------------------------------------------------------------

def _tracked(*dirs):
    out = subprocess.run(["git", "-C", ROOT, "ls-files", *dirs], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout: %s" % out.stderr.strip())
    return out.stdout.split()


def test_source_map_lists_every_source_file():
    """docs/architecture.md's source map names every C file, header, Lua
    script and migration (a directory glob like `common/sql/*.sql` covers
    its files)."""
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Source map"):]
    listed = set(re.findall(r"`([^`\s]+)`", section))
    globs = [g for g in listed if "*" in g]
    missing = [p for p in _tracked("common", "producer", "consumer")
               if p not in listed and not any(re.fullmatch(re.escape(g).replace(r"\*", "[^/]*"), p)
                                              for g in globs)]
    assert not missing, "add to the source map of docs/architecture.md: %s" % missing


def test_no_reference_outside_the_repository():
    """Comments, tests and docs point at files in the repository."""
    pat = re.compile(r"SPEC [§]|STYLE[.]md|seed[ ]guide|[.][.]/shared/")
    hits = []
    for p in _tracked("common", "producer", "consumer", "tests", "docs", "README.md",
                      "CONTRIBUTING.md", "compose", "scripts", "cmake", "CMakeLists.txt"):
        if p.endswith((".png", ".ico")):
            continue
        with open(os.path.join(ROOT, p), encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if pat.search(line):
                    hits.append("%s:%d: %s" % (p, n, line.strip()))
    assert not hits, "\n".join(hits)


def test_configuration_reference_is_current(known):
    path = os.path.join(ROOT, "docs", "configuration.md")
    with open(path, encoding="utf-8") as f:
        committed = f.read()
    for b in known.values():
        out = b.run(["--print-config-reference"])
        assert out.returncode == 0, out.stderr
        assert out.stdout == committed, (
            "docs/configuration.md differs from `%s --print-config-reference`; regenerate it:\n"
            "  build/bin/producer --print-config-reference > docs/configuration.md" % b.name)


def test_reference_lists_every_variable_of_help(known):
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
        documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", f.read(), re.M))
    for b in known.values():
        assert b.variables == documented, b.name
    # A table row per setting: '|' inside a cell is escaped.
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
        rows = [l for l in f if l.startswith("| `") or l.startswith("| —")]
    for row in rows:
        assert len(re.findall(r"(?<!\\)\|", row)) == 7, row


# ---------------------------------------------------------------------------
# Docker Compose
# ---------------------------------------------------------------------------

_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$\$")


def _interpolate(value):
    """Compose's ${VAR:-default} with nothing set in the environment."""
    if not isinstance(value, str):
        return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return _INTERP.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), value)


def _load_compose():
    with open(COMPOSE_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _ours(svc):
    return "build" in svc or str(svc.get("image", "")).startswith("jobrunner")


def _compose_env(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: _interpolate(v) for k, v in env.items()}


def _duration_ms(text):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(text))
    assert m and text, "cannot read duration %r" % text
    return (int(m.group(1) or 0) * 60 + int(m.group(2) or 0)) * 1000


def test_compose_services(known):
    doc = _load_compose()
    services = doc["services"]
    assert {"db", "redis", "api", "worker"} <= set(services)
    assert str(services["db"]["image"]).startswith("postgres:16")
    assert str(services["redis"]["image"]).startswith("redis:7")
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd
    assert "--maxmemory-policy noeviction" in redis_cmd
    assert services["worker"]["deploy"]["replicas"] == 2
    for name in ("api", "worker"):
        dep = services[name]["depends_on"]
        for d in ("db", "redis"):
            assert dep[d]["condition"] == "service_healthy", (name, d)
    for name in ("db", "redis", "api", "worker"):
        assert services[name]["healthcheck"]["test"], name
    seen = set()
    for svc in services.values():
        if _ours(svc):
            seen |= set(_compose_env(svc))
    assert SEED_VARIABLES <= seen, "seed variables missing: %s" % sorted(SEED_VARIABLES - seen)


def test_compose_variables_and_commands(known):
    for name, svc in _load_compose()["services"].items():
        if not _ours(svc):
            continue
        where = "docker-compose.yml service %s" % name
        b = _binary_of(known, svc["command"], where)
        env = _compose_env(svc)
        unknown = set(env) - b.variables
        assert not unknown, "%s sets variables %s knows nothing of: %s" % (
            where, b.name, sorted(unknown))
        _check_flags(b, svc["command"][1:], where)
        b.assert_accepts(svc["command"][1:], env, where)


def _health_url_ok(b, url, env, where):
    m = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[^\s\"']*)", url)
    assert m, "%s: no health URL in %r" % (where, url)
    port, path = m.group(1), m.group(2)
    if b.name == "producer":
        assert port == env.get("PORT", b.default("PORT")), (where, url)
        assert path in PRODUCER_HEALTH, (where, url)
    else:
        assert port == env.get("WORKER_HTTP_PORT", b.default("WORKER_HTTP_PORT")), (where, url)
        assert path in CONSUMER_HEALTH, (where, url)


def test_compose_health_checks_and_grace(known):
    for name, svc in _load_compose()["services"].items():
        if not _ours(svc) or svc.get("healthcheck", {}).get("disable"):
            continue
        b = _binary_of(known, svc["command"], name)
        env = _compose_env(svc)
        _health_url_ok(b, " ".join(svc["healthcheck"]["test"]), env, "service %s" % name)
    worker = _load_compose()["services"]["worker"]
    timeout = int(_compose_env(worker).get("WORKER_SHUTDOWN_TIMEOUT_MS",
                                           known["consumer"].default("WORKER_SHUTDOWN_TIMEOUT_MS")))
    assert _duration_ms(worker["stop_grace_period"]) > timeout + ABORT_WINDOW_MS


def _compose_client():
    """argv prefix of a compose client that works without an engine, or
    (None, why not)."""
    tried = []
    for argv in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(argv[0]):
            tried.append("%s: not installed" % argv[0])
            continue
        out = subprocess.run(argv + ["version"], capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            return argv, None
        tried.append("%s: %s" % (" ".join(argv), (out.stderr or out.stdout).strip()[:120]))
    return None, "; ".join(tried)


def test_docker_compose_config_parses():
    argv, why = _compose_client()
    if argv is None:
        pytest.skip("no Docker Compose client that parses offline (%s)" % why)
    env = dict(os.environ)
    env.pop("DOCKER_HOST", None)
    out = subprocess.run(argv + ["-f", COMPOSE_FILE, "config", "-q"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------

def _dockerfile_instructions():
    with open(DOCKERFILE, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile(known):
    ins = _dockerfile_instructions()
    froms = [r for w, r in ins if w == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    assert all(re.match(r"debian:12\b|debian:bookworm\b", f) for f in froms), froms
    last = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    runtime = ins[last:]
    installs = " ".join(r for w, r in runtime if w == "RUN" and "apt-get install" in r)
    for lib in ("libhiredis0.14", "libpq5", "libmicrohttpd12", "libcjson1", "libcurl4"):
        assert re.search(r"\b%s\b" % re.escape(lib), installs), lib
    assert "-dev" not in installs, "runtime stage installs build packages"
    copies = " ".join(r for w, r in runtime if w == "COPY")
    assert "--from=" in copies and "producer" in copies and "consumer" in copies
    users = [r for w, r in runtime if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "runs as root"
    for w, r in runtime:
        if w == "ENV":
            for k in re.findall(r"([A-Z][A-Z0-9_]*)=", r):
                assert k in known["producer"].variables, "Dockerfile ENV %s" % k
        if w == "CMD":
            argv = yaml.safe_load(r) if r.startswith("[") else shlex.split(r)
            _binary_of(known, argv, "Dockerfile CMD")
    checks = [r for w, r in runtime if w == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK"
    # ${VAR:-default}: a known variable with the binary's default, and a health path.
    urls = re.findall(r"http://127\.0\.0\.1:\$\{([A-Z_]+):-(\d+)\}(/[^\s\"']*)", checks[0])
    assert {u[0] for u in urls} == {"PORT", "WORKER_HTTP_PORT"}, urls
    for var, dflt, path in urls:
        b = known["producer" if var == "PORT" else "consumer"]
        assert dflt == b.default(var), (var, dflt)
        assert path in (PRODUCER_HEALTH if var == "PORT" else CONSUMER_HEALTH), path


# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------

def _k8s_objects():
    objs = []
    for fn in sorted(os.listdir(K8S_DIR)):
        if fn.endswith((".yaml", ".yml")) and fn != "kustomization.yaml":
            with open(os.path.join(K8S_DIR, fn), encoding="utf-8") as f:
                for d in yaml.safe_load_all(f):
                    if d:
                        objs.append((fn, d))
    return objs


def _by_kind(objs, kind):
    return [(fn, o) for fn, o in objs if o["kind"] == kind]


def _pod_specs(objs):
    """(file, owner object, pod spec) of every workload."""
    for fn, o in objs:
        k = o["kind"]
        if k in ("Deployment", "StatefulSet", "Job"):
            yield fn, o, o["spec"]["template"]["spec"]
        elif k == "CronJob":
            yield fn, o, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _effective_env(container, objs, pod_name="jobrunner-pod-0"):
    """The environment the container would get, with the example secret's
    values and a pod name for fieldRefs.  Returns (env, problems)."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for _, o in _by_kind(objs, "ConfigMap")}
    secrets = {o["metadata"]["name"]: o.get("stringData", {}) for _, o in _by_kind(objs, "Secret")}
    env, problems = {}, []
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            name = src["configMapRef"]["name"]
            if name not in maps:
                problems.append("envFrom ConfigMap %s is not in compose/k8s" % name)
            env.update({k: str(v) for k, v in maps.get(name, {}).items()})
        elif "secretRef" in src:
            name = src["secretRef"]["name"]
            if name not in secrets:
                problems.append("envFrom Secret %s is not in compose/k8s" % name)
            env.update({k: str(v) for k, v in secrets.get(name, {}).items()})
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            if ref["key"] not in secrets.get(ref["name"], {}):
                problems.append("%s: Secret %s has no key %s in the example" % (
                    e["name"], ref["name"], ref["key"]))
            env[e["name"]] = str(secrets.get(ref["name"], {}).get(ref["key"], "x"))
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = pod_name
        elif "configMapKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = str(maps.get(ref["name"], {}).get(ref["key"], ""))
    return env, problems


def test_k8s_files_parse_and_are_complete():
    objs = _k8s_objects()
    kinds = {o["kind"] for _, o in objs}
    assert {"Deployment", "Service", "Job", "CronJob", "Secret", "ConfigMap"} <= kinds, kinds
    for fn, o in objs:
        assert o.get("apiVersion") and o.get("metadata"), fn
        assert o["metadata"].get("name") or o["metadata"].get("generateName"), fn
    secret = _by_kind(objs, "Secret")[0][1]
    assert {"DATABASE_URL", "REDIS_URL", "API_TOKEN", "META_APP_ID",
            "META_APP_SECRET"} <= set(secret["stringData"])


def test_k8s_variables_and_commands(known):
    objs = _k8s_objects()
    for fn, o in _by_kind(objs, "ConfigMap") + _by_kind(objs, "Secret"):
        keys = set(o.get("data", {})) | set(o.get("stringData", {}))
        unknown = keys - known["producer"].variables
        assert not unknown, "%s: keys that are no variable: %s" % (fn, sorted(unknown))
    n = 0
    for fn, owner, spec in _pod_specs(objs):
        for c in spec["containers"]:
            where = "%s container %s" % (fn, c["name"])
            argv = list(c.get("command", [])) + list(c.get("args", []))
            b = _binary_of(known, argv, where)
            env, problems = _effective_env(c, objs)
            assert not problems, "%s: %s" % (where, problems)
            names = {e["name"] for e in c.get("env", [])} | set(env)
            unknown = names - b.variables
            assert not unknown, "%s sets variables %s knows nothing of: %s" % (
                where, b.name, sorted(unknown))
            _check_flags(b, argv[1:], where)
            b.assert_accepts(argv[1:], env, where)
            n += 1
    assert n >= 4


def _probe_port(container, probe):
    port = probe["httpGet"]["port"]
    if isinstance(port, int) or str(port).isdigit():
        return str(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return str(p["containerPort"])
    raise AssertionError("probe port %r is not a port of container %s" % (port, container["name"]))


def test_k8s_probes_names_and_grace(known):
    objs = _k8s_objects()
    for fn, owner, spec in _pod_specs(objs):
        for c in spec["containers"]:
            argv = list(c.get("command", [])) + list(c.get("args", []))
            b = _binary_of(known, argv, fn)
            env, _ = _effective_env(c, objs)
            probes = {k: c[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in c}
            if owner["kind"] == "Deployment":
                assert "livenessProbe" in probes and "readinessProbe" in probes, fn
            for kind, probe in probes.items():
                where = "%s %s" % (fn, kind)
                port = _probe_port(c, probe)
                path = probe["httpGet"]["path"]
                if b.name == "producer":
                    assert port == env.get("PORT", b.default("PORT")), where
                    assert path in PRODUCER_HEALTH, where
                else:
                    assert port == env.get("WORKER_HTTP_PORT", b.default("WORKER_HTTP_PORT")), where
                    assert path in CONSUMER_HEALTH, where
            if b.name == "consumer":
                if owner["kind"] == "Deployment":
                    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready", fn
                    assert c["livenessProbe"]["httpGet"]["path"] == "/health", fn
                name_env = [e for e in c["env"] if e["name"] == "CONSUMER_NAME"]
                assert name_env, "%s: CONSUMER_NAME is not set" % fn
                assert name_env[0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", fn
                timeout_ms = int(env.get("WORKER_SHUTDOWN_TIMEOUT_MS",
                                         b.default("WORKER_SHUTDOWN_TIMEOUT_MS")))
                grace_s = spec.get("terminationGracePeriodSeconds", 30)
                assert grace_s * 1000 > timeout_ms + ABORT_WINDOW_MS, (
                    "%s: terminationGracePeriodSeconds %ds does not outlast "
                    "WORKER_SHUTDOWN_TIMEOUT_MS %d ms (+%d ms)" % (fn, grace_s, timeout_ms,
                                                                   ABORT_WINDOW_MS))
            if owner["kind"] in ("Job", "CronJob"):
                assert "--drain-once" in argv or env.get("WORKER_RUN_ONCE") in ("1", "true"), fn
                assert spec["restartPolicy"] in ("Never", "OnFailure"), fn


def test_k8s_modes():
    """The seed's matrix: the API never runs jobs, the worker does."""
    objs = _k8s_objects()
    for fn, owner, spec in _pod_specs(objs):
        for c in spec["containers"]:
            env, _ = _effective_env(c, objs)
            role = os.path.basename(c["command"][0])
            if role == "producer":
                assert env.get("WORKER_MODE") == "0" and env.get("JOB_RUNNER_ENABLED") == "false", fn
            elif owner["kind"] == "Deployment":
                assert env.get("WORKER_MODE") == "1" and env.get("JOB_RUNNER_ENABLED") == "true", fn


def test_k8s_service_reaches_the_api():
    objs = _k8s_objects()
    svc = _by_kind(objs, "Service")[0][1]
    sel = svc["spec"]["selector"]
    targets = [(o, spec) for fn, o, spec in _pod_specs(objs)
               if o["kind"] == "Deployment"
               and sel.items() <= o["spec"]["template"]["metadata"]["labels"].items()]
    assert len(targets) == 1, "the Service must select exactly the API pods"
    c = targets[0][1]["containers"][0]
    assert os.path.basename(c["command"][0]) == "producer"
    port = svc["spec"]["ports"][0]["targetPort"]
    assert port in [p.get("name") for p in c["ports"]] + [p["containerPort"] for p in c["ports"]]


def test_kustomize_builds():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed (kustomize build is offline, but needs the client)")
    out = subprocess.run([kubectl, "kustomize", K8S_DIR], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted(kinds) == ["ConfigMap", "Deployment", "Deployment", "PodDisruptionBudget",
                             "Service"], kinds


# ---------------------------------------------------------------------------
# the guides
# ---------------------------------------------------------------------------

def _guide_text(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def _code_lines(text):
    """Logical lines of the fenced code blocks (continuations joined)."""
    lines, block, buf = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            block = not block
            continue
        if not block:
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    return lines


_ASSIGN = re.compile(r"^[A-Z][A-Z0-9_]*=")


def _jobrunner_commands(text):
    """(env, argv) of every code line that runs producer or consumer."""
    for line in _code_lines(text):
        for part in re.split(r"\s(?:\||&&|;|\|\|)\s", line):
            try:
                toks = shlex.split(part, comments=True)
            except ValueError:
                continue
            env = {}
            while toks and _ASSIGN.match(toks[0]):
                k, v = toks.pop(0).split("=", 1)
                env[k] = v
            if toks and toks[0] in ("env", "exec"):
                toks.pop(0)
                while toks and _ASSIGN.match(toks[0]):
                    k, v = toks.pop(0).split("=", 1)
                    env[k] = v
            if toks and toks[0] in ("docker", "docker-compose", "kubectl"):
                # docker compose run --rm api producer ..., kubectl exec ... -- consumer ...
                at = [i for i, t in enumerate(toks) if t in ("producer", "consumer")]
                toks = toks[at[0]:] if at else []
                env = {}
            if toks and os.path.basename(toks[0]) in ("producer", "consumer") \
                    and not toks[0].startswith("$"):
                yield env, toks


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_commands_are_accepted(known, guide):
    text = _guide_text(guide)
    n = 0
    for env, argv in _jobrunner_commands(text):
        if any("$" in a or "<" in a for a in argv[1:]) or any("$" in v for v in env.values()):
            continue   # a placeholder: the flags are still checked below
        b = known[os.path.basename(argv[0])]
        _check_flags(b, argv[1:], guide)
        unknown = set(env) - b.variables
        assert not unknown, "%s: %s" % (guide, sorted(unknown))
        b.assert_accepts(argv[1:], env, guide)
        n += 1
    for env, argv in _jobrunner_commands(text):
        _check_flags(known[os.path.basename(argv[0])], argv[1:], guide)
    if guide.startswith("docs/") and "operations" in guide:
        assert n >= 5, "%s: expected the guide's commands" % guide


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_variables_exist(known, guide):
    text = _guide_text(guide)
    names = set(re.findall(r"(?<![A-Za-z0-9_$])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(?![A-Za-z0-9_])",
                           text))
    unknown = names - known["producer"].variables - NOT_OUR_VARIABLES
    assert not unknown, "%s names variables the binaries do not know: %s" % (guide, sorted(unknown))


def test_guides_have_the_same_sections():
    def outline(rel):
        return [len(m.group(1)) for m in re.finditer(r"^(#{1,4}) ", _guide_text(rel), re.M)
                if not _in_code(_guide_text(rel), m.start())]
    en, es = outline("docs/operations.md"), outline("docs/es/operations.md")
    assert en == es, "docs/es/operations.md must have the same sections as docs/operations.md"
    assert len(en) >= 20


def _in_code(text, pos):
    return text.count("```", 0, pos) % 2 == 1


_PATH = re.compile(r"(?<![A-Za-z_.])(/api/[A-Za-z0-9_/{}<>.:$-]*[A-Za-z0-9_}>]|/health(?:/ready)?\b)")


def _documented_paths():
    paths = set()
    for rel in GUIDES:
        for m in _PATH.finditer(_guide_text(rel)):
            p = re.sub(r"\{[^}]*\}|<[^>]*>|\$\w+", "00000000-0000-0000-0000-000000000000",
                       m.group(1))
            paths.add(p)
    return paths


def test_health_paths_answer(bins, db_url, spawn):
    """The probe paths and every HTTP path the guides name exist in the
    running binaries (Redis-less mode: only PostgreSQL is needed)."""
    api_port, worker_port = harness.free_port(), harness.free_port()
    env = {"DATABASE_URL": db_url, "API_TOKEN": "docs-test-token-4c1e9b7a", "LOG_FORMAT": "json"}
    api = spawn("producer", env=dict(env, PORT=api_port))
    worker = spawn("consumer", env=dict(env, WORKER_HTTP_PORT=worker_port,
                                        CONSUMER_NAME="docs-worker"))
    api_base = "http://127.0.0.1:%d" % api_port
    worker_base = "http://127.0.0.1:%d" % worker_port

    def up(base, path):
        return lambda: harness.http("GET", base + path, timeout=2)[0] == 200

    harness.wait_until(up(api_base, "/api/health"), timeout=30, msg="the producer",
                       ignore=(OSError,))
    harness.wait_until(up(worker_base, "/health"), timeout=30, msg="the consumer",
                       ignore=(OSError,))
    for path in PRODUCER_HEALTH:
        harness.wait_until(up(api_base, path), timeout=10, msg=path, ignore=(OSError,))
    for path in CONSUMER_HEALTH:
        harness.wait_until(up(worker_base, path), timeout=10, msg=path, ignore=(OSError,))

    auth = {"Authorization": "Bearer docs-test-token"}
    paths = _documented_paths()
    assert {"/api/health", "/api/health/extended", "/health", "/health/ready"} <= paths
    for path in sorted(paths):
        base = worker_base if path.startswith("/health") else api_base
        status, _, body = harness.http("GET", base + path, headers=auth)
        if status == 405:
            continue            # the path exists, for another method
        missing = status == 404 and isinstance(body, dict) and \
            body.get("error", {}).get("code") == "not_found"
        assert not missing, "a guide names %s, which neither binary serves" % path
    assert harness.http("GET", worker_base + "/metrics")[0] == 200
    assert harness.http("GET", api_base + "/metrics")[0] == 200
    api.signal(15)
    worker.signal(15)


@pytest.mark.parametrize("guide", ["docs/operations.md", "docs/es/operations.md"])
def test_guide_covers_every_variable(known, guide):
    text = _guide_text(guide)
    missing = sorted(v for v in known["producer"].variables | known["consumer"].variables
                     if not re.search(r"`%s`" % v, text))
    assert not missing, "%s does not describe: %s" % (guide, missing)


def _section(text, heading):
    """The text of the section under `heading` (up to the next heading of
    the same or a higher level)."""
    m = re.search(r"^(#+) %s\s*$" % re.escape(heading), text, re.M)
    assert m, "no section %r" % heading
    level = len(m.group(1))
    end = re.compile(r"^#{1,%d} " % level, re.M)
    pos = m.end()
    while True:
        n = end.search(text, pos)
        if n is None or not _in_code(text, n.start()):
            return text[m.end():n.start() if n else len(text)]
        pos = n.end()


def _sql_blocks(text):
    return re.findall(r"```sql\n(.*?)```", text, re.S)


def _statements(block):
    body = "\n".join(l for l in block.splitlines() if not l.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


@pytest.mark.parametrize("guide,heading", [("docs/operations.md", "Stuck lock"),
                                           ("docs/es/operations.md", "Lock stuck")])
def test_stuck_lock_runbook(known, db, db_url, spawn, guide, heading):
    """The runbook, step by step, with its own SQL, against a real consumer:
    an orphaned session holds the cycle lock; the seed's commands run from
    another session do not free it; the holder query finds it; terminating
    it lets cycles run again."""
    blocks = _sql_blocks(_section(_guide_text(guide), heading))
    assert len(blocks) == 3, "%s: the runbook's three SQL blocks" % guide
    holder_sql, holder_row_sql = _statements(blocks[0])
    terminate_sql, delete_sql = _statements(blocks[1])
    assert _statements(blocks[2]) == ["SELECT pg_advisory_unlock_all()",
                                      "DELETE FROM job_runner_lock"], "the seed's recovery"

    worker = spawn("consumer", env={"DATABASE_URL": db_url, "WORKER_HTTP_PORT": "0",
                                    "JOB_RUNNER_INTERVAL_MS": "200", "LOG_LEVEL": "debug",
                                    "CONSUMER_NAME": "runbook-worker"})
    worker.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=30)

    # The orphan: a session that holds the lock and wrote the row, as a
    # consumer whose host vanished would leave them.
    orphan = db.connect()
    cur = orphan.cursor()
    lock_key = int(known["consumer"].default("JOB_RUNNER_LOCK_KEY"))
    cur.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
    cur.execute("SELECT pg_backend_pid()")
    orphan_pid = cur.fetchone()[0]
    cur.execute("INSERT INTO job_runner_lock (id, holder, backend_pid, acquired_at, heartbeat_at)"
                " VALUES ('job_runner', 'vanished-worker', pg_backend_pid(), now(), now())"
                " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,"
                " backend_pid = excluded.backend_pid")
    try:
        mark = worker.mark()
        worker.wait_for_log({"event": "job_runner_cycle_skipped"}, timeout=10, after=mark)

        # Step 1: the holder query finds the orphan's session.
        rows = db.query(holder_sql)
        assert [r[0] for r in rows] == [orphan_pid], rows
        row = db.query(holder_row_sql)
        assert [(r[0], r[1]) for r in row] == [("vanished-worker", orphan_pid)], row

        # Step 6 (the seed's recovery) from another session: safe, frees nothing.
        db.query(blocks[2])
        mark = worker.mark()
        worker.wait_for_log({"event": "job_runner_cycle_skipped"}, timeout=10, after=mark)
        assert not any('"job_runner_cycle_complete"' in l for l in worker.lines()[mark:])

        # Step 5: end that session; the next cycle runs.
        mark = worker.mark()
        assert "<pid" in terminate_sql
        db.query(re.sub(r"<pid[^>]*>", str(orphan_pid), terminate_sql))
        db.execute(delete_sql)
        worker.wait_for_log({"event": "job_runner_cycle_complete"}, timeout=10, after=mark)
        assert orphan_pid not in [r[0] for r in db.query(holder_sql)]
    finally:
        orphan.close()
