"""The web dashboard (/dashboard), against the real producer, consumers,
PostgreSQL and (for the browser tour) Redis.

  test_files_*        Content-Type, ETag/304, gzip, the security headers,
                      page weight, nothing loaded from another origin
  test_session_*      login (cookie flags, wrong token, rate limit), the
                      cookie as a credential of the API, CSRF (token and
                      Origin), logout, DASHBOARD_ENABLED=false
  test_stats_*        GET /api/integrations/jobs/stats: shape, counts,
                      bad parameters
  test_browser_tour   headless Debian chromium through puppeteer-core
                      (tests/browser/dashboard.js): log in, a run enqueued
                      through the API shown with its final status, its page,
                      cancel, pause, retry one and all dead runs, Spanish,
                      logout; no console error, no request to another
                      origin, the XSS payload stays text.  Screenshots go to
                      <build>/test-output/dashboard/.

puppeteer-core is installed by this file (npm ci of tests/browser/package-lock.json
into tests/browser/.cache/, git-ignored); the browser test is skipped, saying
why, only when chromium or npm is missing or the install fails.
"""

import gzip
import http.client
import json
import os
import re
import shutil
import subprocess
import time

import pytest

import harness
import openapi_check
from apiclient import System, TOKEN

HERE = os.path.dirname(os.path.abspath(__file__))
BROWSER_DIR = os.path.join(HERE, "..", "browser")
NPM_DIR = os.path.join(BROWSER_DIR, ".cache")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
API = "/api/integrations/jobs"
FILES = ["index.html", "app.js", "app.css", "favicon.svg"]


def raw(port, method, path, body=None, headers=None):
    """(status, headers with lower-case names, body bytes), no decoding."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        status, hdrs, data = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        if hdrs.get("content-type", "").startswith("application/json") and not hdrs.get("content-encoding"):
            openapi_check.check(method, path, status, hdrs, json.loads(data.decode()))
        elif status != 304:
            openapi_check.check(method, path, status, hdrs, None)
        return status, hdrs, data
    finally:
        c.close()


def jbody(b):
    return json.loads(b.decode()) if b else None


def login(port, token=TOKEN, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return raw(port, "POST", "/dashboard/login", {"token": token}, h)


def session_cookie(hdrs):
    m = re.match(r"jr_session=([^;]*)", hdrs.get("set-cookie", ""))
    return m.group(1) if m else None


@pytest.fixture
def system(db):
    s = System("redisless", db, consumers=1, tag="dash")
    yield s
    s.stop()


# --------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------

def test_files_types_cache_gzip_and_security_headers(system):
    port = system.api.port
    total = 0
    for name in FILES:
        path = "/dashboard" if name == "index.html" else "/dashboard/" + name
        st, h, body = raw(port, "GET", path)
        assert st == 200, (name, st)
        total += len(body)
        want = {"html": "text/html", "js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
        assert h["content-type"].startswith(want[name.rsplit(".", 1)[1]]), (name, h["content-type"])
        assert h["x-frame-options"] == "DENY"
        assert h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "no-referrer"
        csp = h["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert h["cache-control"] == "no-cache"
        etag = h["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
        assert "content-encoding" not in h
        # revalidation: 304, no body
        st2, h2, body2 = raw(port, "GET", path, headers={"If-None-Match": etag})
        assert st2 == 304 and body2 == b"" and h2["etag"] == etag
        # gzip when accepted, the same bytes once inflated
        st3, h3, body3 = raw(port, "GET", path, headers={"Accept-Encoding": "br, gzip;q=0.8"})
        assert st3 == 200 and h3["content-encoding"] == "gzip" and "Accept-Encoding" in h3["vary"]
        assert gzip.decompress(body3) == body
        st4, h4, _ = raw(port, "GET", path, headers={"Accept-Encoding": "gzip;q=0, identity"})
        assert "content-encoding" not in h4
    assert total < 150 * 1024, "page weight %d bytes" % total
    print("dashboard page weight: %d bytes uncompressed" % total)
    # no inline script or style, and nothing from another origin
    _, _, html = raw(port, "GET", "/dashboard")
    text = html.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", text), "inline script"
    assert " style=" not in text and "<style" not in text
    for url in re.findall(r'(?:src|href)="([^"#]+)"', text):
        assert url.startswith("/dashboard/"), url
    st, _, _ = raw(port, "GET", "/dashboard/nope.js")
    assert st == 404


# --------------------------------------------------------------------------
# sessions
# --------------------------------------------------------------------------

def test_session_login_cookie_csrf_and_logout(system):
    port = system.api.port
    host = "127.0.0.1:%d" % port
    st, _, b = raw(port, "GET", "/dashboard/session", headers={"Accept-Language": "es-MX,es;q=0.9,en;q=0.8"})
    assert st == 200 and jbody(b) == {"authenticated": False, "lang": "es"}
    _, _, b = raw(port, "GET", "/dashboard/session", headers={"Accept-Language": "de, en;q=0.5, es;q=0.3"})
    assert jbody(b)["lang"] == "en"

    st, h, b = login(port)
    assert st == 200, b
    cookie = session_cookie(h)
    setc = h["set-cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"):
        assert flag in setc, setc
    assert "Secure" not in setc                      # plain HTTP
    assert TOKEN not in setc and TOKEN not in b.decode()
    csrf = jbody(b)["csrf"]
    assert re.fullmatch(r"[0-9a-f]{64}", csrf)
    ck = {"Cookie": "jr_session=" + cookie}

    # behind a TLS proxy the cookie is Secure
    _, h2, _ = login(port, headers={"X-Forwarded-Proto": "https"})
    assert "; Secure" in h2["set-cookie"]

    # the session answers, and stands for the token on the API
    st, _, b = raw(port, "GET", "/dashboard/session", headers=ck)
    assert jbody(b)["authenticated"] is True and jbody(b)["csrf"] == csrf
    st, _, b = raw(port, "GET", API + "/stats", headers=ck)
    assert st == 200, b
    # a forged or altered cookie is not
    forged = cookie[:-1] + ("0" if cookie[-1] != "0" else "1")
    st, _, b = raw(port, "GET", API + "/stats", headers={"Cookie": "jr_session=" + forged})
    assert st == 401
    later = re.sub(r"^v1\.(\d+)\.", lambda m: "v1.%d." % (int(m.group(1)) + 86400000), cookie)
    assert raw(port, "GET", API + "/stats", headers={"Cookie": "jr_session=" + later})[0] == 401

    # CSRF: a state change with the cookie needs X-CSRF-Token, and a same-origin Origin
    body = {"orgId": "org-csrf"}
    st, _, b = raw(port, "POST", API + "/noop/run", body, ck)
    assert st == 403 and jbody(b)["error"]["code"] == "csrf_failed"
    st, _, b = raw(port, "POST", API + "/noop/run", body, dict(ck, **{"X-CSRF-Token": "0" * 64}))
    assert st == 403
    st, _, b = raw(port, "POST", API + "/noop/run", body,
                   dict(ck, **{"X-CSRF-Token": csrf, "Origin": "http://evil.example", "Host": host}))
    assert st == 403 and "Origin" in jbody(b)["error"]["message"]
    st, _, b = raw(port, "POST", API + "/noop/run", body,
                   dict(ck, **{"X-CSRF-Token": csrf, "Origin": "http://" + host}))
    assert st == 202, b
    rid = jbody(b)["id"]
    system.api.wait_status(rid, "succeeded")
    # a wrong Bearer token is not rescued by a good cookie
    st, _, _ = raw(port, "GET", API + "/stats", headers=dict(ck, Authorization="Bearer wrong"))
    assert st == 401
    # login itself refuses a foreign Origin and a non-JSON body
    assert login(port, headers={"Origin": "http://evil.example", "Host": host})[0] == 403
    assert raw(port, "POST", "/dashboard/login", b"token=x",
               {"Content-Type": "application/x-www-form-urlencoded"})[0] == 415

    # logout: cookie cleared, session revoked
    st, h, _ = raw(port, "POST", "/dashboard/logout", headers=ck)
    assert st == 200 and re.match(r"jr_session=;.*Max-Age=0", h["set-cookie"])
    assert raw(port, "GET", API + "/stats", headers=ck)[0] == 401
    # the token never reached the log
    assert TOKEN not in system.producer.log_tail(10000)


def test_session_login_rate_limit_per_address(system):
    port = system.api.port
    codes = [login(port, token="wrong-%d" % i)[0] for i in range(10)]
    assert codes == [401] * 10
    st, h, b = login(port, token="wrong-again")
    assert st == 429 and int(h["retry-after"]) > 0 and jbody(b)["error"]["code"] == "too_many_attempts"
    # while limited, even the right token is refused from this address
    st, _, _ = login(port)
    assert st == 429
    # the Bearer API is not affected
    assert system.api.get(API + "/stats")[0] == 200


def test_dashboard_disabled(db):
    s = System("redisless", db, consumers=0, tag="dash-off",
               producer_env={"DASHBOARD_ENABLED": "false"})
    try:
        port = s.api.port
        for path in ("/dashboard", "/dashboard/app.js", "/dashboard/session"):
            assert raw(port, "GET", path)[0] == 404, path
        assert login(port)[0] == 404
        # no cookie credential either (an old cookie from another producer)
        assert raw(port, "GET", API + "/stats", headers={"Cookie": "jr_session=v1.1.2.3"})[0] == 401
        assert s.api.get(API + "/stats")[0] == 200
    finally:
        s.stop()


# --------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------

def test_stats_counts_finished_runs_and_rejects_bad_parameters(system, db):
    api = system.api
    # five runs that finished five minutes ago (a settled bucket, counted once
    # and then kept by the producer) and two an hour and a half ago (outside)
    db.execute("""insert into job_runs (id, job, status, finished_at, transport)
                  select 'old-' || g, 'noop', 'succeeded',
                         now() - case when g <= 5 then interval '5 minutes' else interval '90 minutes' end, 'pg'
                    from generate_series(1, 7) g""")
    ok = [api.enqueue("noop", {"orgId": "o-1"})["id"] for _ in range(3)]
    bad = api.enqueue("noop", {"payload": {"failAlways": True}})["id"]
    for r in ok:
        api.wait_status(r, "succeeded")
    api.wait_status(bad, "dead")

    def counted():
        st, _, s = api.get(API + "/stats?window=1h&step=1m")
        assert st == 200, s
        noop = [j for j in s["jobs"] if j["name"] == "noop"][0]
        total = {}
        for b in s["series"]["buckets"]:
            for k, v in b.items():
                if k != "t":
                    total[k] = total.get(k, 0) + v
        return s if noop["window"].get("succeeded") == 8 and noop["window"].get("dead") == 1 \
            and total.get("succeeded", 0) >= 8 and total.get("dead") == 1 else None

    s = harness.wait_until(counted, timeout=20, msg="stats count the finished runs")
    # later answers (past the one-second shared answer) count the settled
    # bucket once, not again, and still see new runs
    time.sleep(1.2)
    more = api.enqueue("noop", {"orgId": "o-2"})["id"]
    api.wait_status(more, "succeeded")

    def counted_again():
        st, _, s3 = api.get(API + "/stats?window=1h&step=1m")
        noop = [j for j in s3["jobs"] if j["name"] == "noop"][0]
        return noop["window"] if noop["window"].get("succeeded") == 9 else None

    w = harness.wait_until(counted_again, timeout=20, msg="the new run counted, the old ones once")
    assert w.get("dead") == 1, w
    assert len(s["series"]["buckets"]) == 60 and s["series"]["stepMs"] == 60000
    assert s["queue"]["backend"] == "postgres" and s["queue"]["dead"] >= 1
    assert s["health"]["database"]["ok"] is True and s["health"]["redis"]["configured"] is False
    names = {j["name"] for j in s["jobs"]}
    assert {"noop", "no_reply_scan", "meta_spend", "meta_token_refresh"} <= names
    st, _, s2 = api.get(API + "/stats?window=15m&step=30s")
    assert st == 200 and len(s2["series"]["buckets"]) == 30
    for q in ("window=1x", "window=0h", "window=30d", "step=0s", "step=7m", "window=1h&step=1s", "step=2h"):
        st, _, b = api.get(API + "/stats?" + q)
        assert st == 400 and b["error"]["code"] == "bad_request", q
    assert harness.http("GET", "http://127.0.0.1:%d%s/stats" % (api.port, API))[0] == 401


# --------------------------------------------------------------------------
# the browser
# --------------------------------------------------------------------------

def install_puppeteer():
    """npm ci of tests/browser/package-lock.json into tests/browser/.cache
    (skipped when that lock file is already installed).  Returns the
    node_modules path, or skips the test saying why."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("%s is missing (apt-get install chromium; scripts/deps.sh does)" % CHROMIUM)
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node or npm is missing (apt-get install nodejs npm; scripts/deps.sh does)")
    os.makedirs(NPM_DIR, exist_ok=True)
    lock = os.path.join(BROWSER_DIR, "package-lock.json")
    want = open(lock, "rb").read()
    have = os.path.join(NPM_DIR, "package-lock.json")
    mods = os.path.join(NPM_DIR, "node_modules")
    if not (os.path.exists(os.path.join(mods, "puppeteer-core", "package.json")) and os.path.exists(have)
            and open(have, "rb").read() == want):
        for f in ("package.json", "package-lock.json"):
            shutil.copyfile(os.path.join(BROWSER_DIR, f), os.path.join(NPM_DIR, f))
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NPM_DIR,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.skip("npm ci of puppeteer-core failed (no registry?): %s" % r.stderr.strip()[-400:])
    return mods


def output_dir(name):
    base = os.environ.get("JR_BUILD") or harness.make_tmpdir("dash-out")
    d = os.path.join(base, "test-output", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def test_browser_tour(db, redis_server):
    mods = install_puppeteer()
    out = output_dir("dashboard")
    s = System("redis", db, redis=redis_server, consumers=2, tag="tour")
    try:
        env = dict(os.environ, NODE_PATH=mods, JR_URL="http://127.0.0.1:%d" % s.api.port,
                   JR_TOKEN=TOKEN, JR_OUT=out, CHROMIUM=CHROMIUM)
        r = subprocess.run(["node", os.path.join(BROWSER_DIR, "dashboard.js")], env=env,
                           capture_output=True, text=True, timeout=420)
        print(r.stdout)
        print("screenshots and report.json in %s" % out)
        report_path = os.path.join(out, "report.json")
        assert os.path.exists(report_path), r.stdout + r.stderr
        report = json.load(open(report_path))
        failed = [c for c in report["checks"] if c["result"] == "failed"]
        assert r.returncode == 0 and not failed, (failed, report.get("error"), r.stderr[-2000:])
        passed = {c["name"] for c in report["checks"] if c["result"] == "passed"}
        for must in ("login shows the overview", "XSS payload shows as text and creates no element",
                     "retry one dead run from the page", "switch to Spanish",
                     "no error in the browser console", "no request to another origin"):
            assert must in passed, must
        for shot in ("overview.png", "run.png", "dead.png", "jobs.png", "overview-es.png"):
            assert os.path.getsize(os.path.join(out, shot)) > 1000, shot
        # the operator-control API (search, cancel, pause, bulk retry) is on
        # this tree: every check must have run
        missing = [c for c in report["checks"] if c["result"] == "missing"]
        assert not missing, "checks that could not run: %s" % json.dumps(missing)
        for must in ("a run enqueued through the API appears in Runs with its final status",
                     "cancel a long run from its page: it ends cancelled",
                     "pause a job from the page: its runs stay queued",
                     "retry all dead runs that match the filter, after a confirmation"):
            assert must in passed, must
        for shot in ("runs.png", "run-cancelled.png"):
            assert os.path.getsize(os.path.join(out, shot)) > 1000, shot
    finally:
        s.stop()
