#!/usr/bin/python3
"""graph_stub.py -- a stand-in for Meta's Graph API, for the tests.

What: a real HTTP/1.1 server on loopback (keep-alive, so the client's
connection reuse is exercised) that speaks Meta's wire format for the two
calls jobrunner makes:

  GET {base}/act_<id>/insights?level=account&fields=spend,account_currency
      &time_increment=1&time_range={"since":..,"until":..}[&after=<cursor>]
      -> {"data":[{"spend":"12.34","account_currency":"USD","date_start":..,
                   "date_stop":..}, ...],
          "paging":{"cursors":{"before":..,"after":..},"next":"http://..."}}
  GET {base}/oauth/access_token?grant_type=fb_exchange_token&client_id=..
      &client_secret=..&fb_exchange_token=..
      -> {"access_token":"..","token_type":"bearer","expires_in":5183944}

{base} is the configurable base path ("/v21.0"); requests without it are
accepted too.  Like Meta, `paging.next` carries the access token as a query
parameter, and every answer carries X-Business-Use-Case-Usage.

It checks what Meta checks: the access token (Authorization: Bearer, or the
access_token query parameter) must be known and unexpired, else code 190;
the token must have access to the account, else code 100; with an app
secret configured, a given appsecret_proof must be right (and with
require_proof it must be given); the insights parameters must be the ones
jobrunner is supposed to send, else code 100.

Scripted failures (fail()) answer Meta error bodies with code, subcode,
type, fbtrace_id and any HTTP status, optionally with the usage header
(estimated_time_to_regain_access) and a delay; delay() only delays (for
timeout tests).  Every request is recorded (path, query, Authorization
header) and counted per path.

Use in pytest:
    stub = GraphStub(page_size=2, app_id="app", app_secret="s3cret").start()
    stub.add_account("111", token="tokA", rows=[("2026-11-26", "12.34"), ...])
    ... META_GRAPH_URL=stub.url ...
    stub.stop()
As a script (another process):  graph_stub.py --port 0 [--base-path /v21.0]
prints the bound port on its first stdout line and serves until SIGTERM; it
is then driven through POST /__control {"op": "<method>", "args": {...}}
(any of CONTROL_OPS) and GET /__control/requests.

Rejected alternative: a mocked curl in the C tests -- it would test our
idea of Meta's format against itself, not the client on a real socket.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import http.server
import itertools
import json
import re
import signal
import sys
import threading
import time
import urllib.parse

DEFAULT_EXPIRES_IN = 5183944

CONTROL_OPS = ("add_account", "set_rows", "add_token", "expire_token", "fail", "oversize", "delay",
               "clear_failures", "reset_requests", "configure")


def _cursor(i):
    return base64.b64encode(str(i).encode()).decode()


def _uncursor(s):
    try:
        return int(base64.b64decode(s.encode(), validate=True).decode())
    except Exception:
        return None


def _is_date(s):
    try:
        datetime.date.fromisoformat(s)
        return len(s) == 10
    except (TypeError, ValueError):
        return False


class MetaError(Exception):
    """An answer in Meta's error format."""

    def __init__(self, status, code, message, subcode=None, type_="OAuthException",
                 headers=None, is_transient=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.subcode = subcode
        self.type = type_
        self.headers = headers or {}
        self.is_transient = is_transient

    def body(self, trace):
        err = {"message": self.message, "type": self.type, "code": self.code,
               "fbtrace_id": trace}
        if self.subcode is not None:
            err["error_subcode"] = self.subcode
        if self.is_transient is not None:
            err["is_transient"] = self.is_transient
        return {"error": err}


def usage_header(business_id, minutes, call_count=100):
    """An X-Business-Use-Case-Usage value asking to wait `minutes`."""
    return json.dumps({str(business_id): [{
        "type": "ads_insights", "call_count": call_count, "total_cputime": 25,
        "total_time": 25, "estimated_time_to_regain_access": minutes}]})


def _secret(token, kind="Meta access token"):
    """Registers a token the stub knows or hands out with the test harness's
    secrets check, when the harness is loaded (not in the standalone stub)."""
    h = sys.modules.get("harness")
    if h is not None and token:
        h.register_secret(token, kind)


class GraphStub:
    def __init__(self, base_path="/v21.0", page_size=25, app_id=None, app_secret=None,
                 require_proof=False, host="127.0.0.1", port=0):
        self.base_path = base_path.rstrip("/")
        self.page_size = page_size
        self.app_id = app_id
        self.app_secret = app_secret
        _secret(app_secret, "META_APP_SECRET")
        self.require_proof = require_proof
        self.host = host
        self._port = port
        self.next_origin = None      # override paging.next's origin (origin-check tests)
        self.lock = threading.Lock()
        self.accounts = {}           # id -> {"rows": [...], "currency": str, "tokens": set}
        self.tokens = {}             # token -> {"expired": bool, "expires_in", "exchange_to"}
        self.failures = []           # [{"key", "times", "status", ...}]
        self.delays = []             # [{"key", "seconds", "times"}]
        self.requests = []           # [{"path", "query", "authorization", "at"}]
        self._counter = itertools.count(1)
        self.server = None
        self.thread = None

    # ---- lifecycle ----

    def start(self):
        stub = self

        class Handler(_Handler):
            pass
        Handler.stub = stub
        self.server = http.server.ThreadingHTTPServer((self.host, self._port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="graph-stub")
        self.thread.start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def port(self):
        return self.server.server_address[1]

    @property
    def origin(self):
        return "http://%s:%d" % (self.host, self.port)

    @property
    def url(self):
        """The META_GRAPH_URL to give jobrunner."""
        return self.origin + self.base_path

    # ---- configuration (also reachable through /__control) ----

    def configure(self, **kw):
        """Sets page_size, app_id, app_secret, require_proof, next_origin."""
        with self.lock:
            for k, v in kw.items():
                if k not in ("page_size", "app_id", "app_secret", "require_proof", "next_origin"):
                    raise ValueError("unknown setting %r" % k)
                setattr(self, k, v)

    def add_account(self, account_id, token=None, rows=(), currency="USD", tokens=()):
        """An ad account (digits, without act_) readable with token/tokens.
        rows: (date, spend) pairs or dicts {date, spend[, currency]}; spend
        is sent as given (a str stays a JSON string, a number a number)."""
        account_id = str(account_id)
        with self.lock:
            acc = self.accounts.setdefault(account_id, {"rows": [], "currency": currency,
                                                        "tokens": set()})
            acc["currency"] = currency
            for t in ([token] if token else []) + list(tokens):
                _secret(t)
                acc["tokens"].add(t)
                self.tokens.setdefault(t, {"expired": False, "expires_in": DEFAULT_EXPIRES_IN,
                                           "exchange_to": None})
        self.set_rows(account_id, rows)

    def set_rows(self, account_id, rows):
        norm = []
        for r in rows:
            if isinstance(r, dict):
                norm.append({"date": r["date"], "spend": r["spend"],
                             "currency": r.get("currency")})
            else:
                norm.append({"date": r[0], "spend": r[1], "currency": None})
        with self.lock:
            self.accounts[str(account_id)]["rows"] = sorted(norm, key=lambda x: x["date"])

    def add_token(self, token, expires_in=DEFAULT_EXPIRES_IN, exchange_to=None, accounts=()):
        """A known token; exchanging it answers exchange_to (or a fresh one)
        with expires_in (None: the field is left out)."""
        _secret(token)
        _secret(exchange_to)
        with self.lock:
            self.tokens[token] = {"expired": False, "expires_in": expires_in,
                                  "exchange_to": exchange_to}
            for a in accounts:
                self.accounts[str(a)]["tokens"].add(token)

    def expire_token(self, token):
        with self.lock:
            self.tokens[token]["expired"] = True

    def fail(self, key, status=400, code=1, message=None, subcode=None, type="OAuthException",
             times=1, usage_minutes=None, headers=None, delay_s=0, is_transient=None):
        """The next `times` requests (None: all) matching key answer this
        error.  key: an account id ("111" or "act_111"), a token, "oauth"
        (the exchange endpoint) or "*"."""
        hdrs = dict(headers or {})
        if usage_minutes is not None:
            hdrs["X-Business-Use-Case-Usage"] = usage_header(key, usage_minutes)
        with self.lock:
            self.failures.append({
                "key": self._norm_key(key), "times": times, "delay_s": delay_s,
                "error": MetaError(status, code, message or "(#%d) scripted failure" % code,
                                   subcode, type, hdrs, is_transient)})

    def oversize(self, key, nbytes, times=1):
        """The next `times` requests matching key answer 200 with a valid
        JSON body of about nbytes bytes (body-limit tests)."""
        pad = max(0, nbytes - 40)
        raw = ('{"data":[],"padding":"' + "x" * pad + '"}').encode()
        with self.lock:
            self.failures.append({"key": self._norm_key(key), "times": times, "delay_s": 0,
                                  "raw": raw})

    def delay(self, key, seconds, times=1):
        """The next `times` requests matching key wait `seconds` first."""
        with self.lock:
            self.delays.append({"key": self._norm_key(key), "seconds": seconds, "times": times})

    def clear_failures(self):
        with self.lock:
            self.failures.clear()
            self.delays.clear()

    def reset_requests(self):
        with self.lock:
            self.requests.clear()

    # ---- observation ----

    def count(self, path_contains=""):
        """Requests received whose path contains path_contains."""
        with self.lock:
            return sum(1 for r in self.requests if path_contains in r["path"])

    def paths(self):
        with self.lock:
            return [r["path"] for r in self.requests]

    def authorizations(self, path_contains=""):
        """The Authorization headers seen (None where absent)."""
        with self.lock:
            return [r["authorization"] for r in self.requests if path_contains in r["path"]]

    def request_log(self):
        with self.lock:
            return [dict(r) for r in self.requests]

    # ---- internals ----

    @staticmethod
    def _norm_key(key):
        key = str(key)
        return key[4:] if key.startswith("act_") else key

    def _take(self, lst, keys):
        """Consumes and returns the first entry of lst matching keys."""
        for e in lst:
            if e["key"] in keys and (e["times"] is None or e["times"] > 0):
                if e["times"] is not None:
                    e["times"] -= 1
                return e
        return None

    def _route(self, path):
        for prefix in (self.base_path, ""):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix):]
            m = re.fullmatch(r"/act_(\d+)/insights", rest)
            if m:
                return "insights", m.group(1)
            if rest == "/oauth/access_token":
                return "oauth", None
        return None, None

    def _check_token(self, token):
        t = self.tokens.get(token) if token else None
        if t is None:
            raise MetaError(400, 190, "Invalid OAuth access token - Cannot parse access token")
        if t["expired"]:
            raise MetaError(400, 190, "Error validating access token: Session has expired on "
                            "Friday, 27-Nov-26 10:00:00 PST. The current time is Saturday, "
                            "28-Nov-26 11:00:00 PST.", subcode=463)

    def _check_proof(self, token, q):
        if not self.app_secret:
            return
        proof = q.get("appsecret_proof")
        if proof is None:
            if self.require_proof:
                raise MetaError(400, 100, "API calls from the server require an "
                                "appsecret_proof argument", type_="GraphMethodException")
            return
        want = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(proof, want):
            raise MetaError(400, 100, "Invalid appsecret_proof provided in the API argument",
                            type_="GraphMethodException")

    def _insights(self, account, token, q, raw_path):
        self._check_token(token)
        self._check_proof(token, q)
        acc = self.accounts.get(account)
        if acc is None or token not in acc["tokens"]:
            raise MetaError(400, 100, "Unsupported get request. Object with ID 'act_%s' does not "
                            "exist, cannot be loaded due to missing permissions, or does not "
                            "support this operation." % account, subcode=33,
                            type_="GraphMethodException")
        fields = set((q.get("fields") or "").split(","))
        if q.get("level") != "account" or not {"spend", "account_currency"} <= fields \
                or q.get("time_increment") != "1":
            raise MetaError(400, 100, "(#100) level=account, fields=spend,account_currency and "
                            "time_increment=1 are expected by this stub")
        try:
            tr = json.loads(q.get("time_range") or "")
            since, until = tr["since"], tr["until"]
        except (ValueError, TypeError, KeyError):
            raise MetaError(400, 100, "(#100) param time_range must be a JSON object with "
                            "since and until") from None
        if not (_is_date(since) and _is_date(until)) or since > until:
            raise MetaError(400, 100, "(#100) time_range: invalid since/until")
        rows = [r for r in acc["rows"] if since <= r["date"] <= until]
        off = 0
        if "after" in q:
            off = _uncursor(q["after"])
            if off is None:
                raise MetaError(400, 100, "(#100) invalid cursor")
            off += 1
        page = rows[off:off + self.page_size]
        data = [{"spend": r["spend"], "account_currency": r["currency"] or acc["currency"],
                 "date_start": r["date"], "date_stop": r["date"]} for r in page]
        body = {"data": data}
        if page:
            body["paging"] = {"cursors": {"before": _cursor(off),
                                          "after": _cursor(off + len(page) - 1)}}
            if off + len(page) < len(rows):
                nq = {k: v for k, v in q.items()
                      if k not in ("after", "access_token", "appsecret_proof")}
                nq["access_token"] = token      # as Meta does: the token in the URL
                nq["after"] = _cursor(off + len(page) - 1)
                origin = self.next_origin or self.origin
                body["paging"]["next"] = origin + raw_path + "?" + urllib.parse.urlencode(nq)
        return body

    def _exchange(self, q):
        if q.get("grant_type") != "fb_exchange_token":
            raise MetaError(400, 100, "(#100) Invalid grant_type")
        if not self.app_id or q.get("client_id") != self.app_id:
            raise MetaError(400, 101, "Error validating application. Invalid application ID.")
        if not self.app_secret or q.get("client_secret") != self.app_secret:
            raise MetaError(400, 101, "Error validating client secret.")
        old = q.get("fb_exchange_token")
        self._check_token(old)
        t = self.tokens[old]
        new = t["exchange_to"] or "EAAStub%d%s" % (next(self._counter), old[-4:])
        _secret(new)
        self.tokens.setdefault(new, {"expired": False, "expires_in": t["expires_in"],
                                     "exchange_to": None})
        for acc in self.accounts.values():
            if old in acc["tokens"]:
                acc["tokens"].add(new)
        body = {"access_token": new, "token_type": "bearer"}
        if t["expires_in"] is not None:
            body["expires_in"] = t["expires_in"]
        return body

    def handle(self, path, q, authorization):
        """-> (status, headers, body dict, delay seconds)."""
        token = None
        if authorization and authorization.startswith("Bearer "):
            token = authorization[len("Bearer "):]
        elif "access_token" in q:
            token = q["access_token"]
        kind, account = self._route(path)
        with self.lock:
            self.requests.append({"path": path, "query": dict(q), "authorization": authorization,
                                  "at": time.time()})
            if kind is None:
                return 404, {}, MetaError(404, 2500, "Unknown path components: %s" % path)
            keys = {"*"}
            if kind == "insights":
                keys |= {account, token}
            else:
                keys |= {"oauth", q.get("fb_exchange_token")}
            d = self._take(self.delays, keys)
            delay = d["seconds"] if d else 0
            f = self._take(self.failures, keys)
            if f and "raw" in f:
                return 200, {}, f["raw"], delay
            if f:
                return f["error"].status, f["error"].headers, f["error"], delay + f["delay_s"]
            try:
                if kind == "insights":
                    body = self._insights(account, token, q, path)
                    hdrs = {"X-Business-Use-Case-Usage": usage_header(account, 0, call_count=5)}
                else:
                    body, hdrs = self._exchange(q), {}
            except MetaError as e:
                return e.status, e.headers, e, delay
            return 200, hdrs, body, delay

    def control(self, op, args):
        if op not in CONTROL_OPS:
            raise ValueError("unknown op %r" % op)
        return getattr(self, op)(**(args or {}))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stub = None

    def log_message(self, fmt, *args):      # quiet: tests read the request log
        pass

    def _send(self, status, headers, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/__control/requests":
            return self._send(200, {}, {"requests": self.stub.request_log()})
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        status, headers, body, delay = self.stub.handle(u.path, q,
                                                        self.headers.get("Authorization"))
        if delay:
            time.sleep(delay)
        if isinstance(body, MetaError):
            body = body.body("Stub%08d" % next(self.stub._counter))
        self._send(status, headers, body)

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(n, 1 << 20))
        if u.path != "/__control":
            return self._send(404, {}, {"error": {"message": "POST only on /__control",
                                                  "code": 2500}})
        try:
            req = json.loads(raw or b"{}")
            result = self.stub.control(req.get("op"), req.get("args"))
            self._send(200, {}, {"ok": True, "result": result})
        except Exception as e:   # a bad control request is the test's bug: say so
            self._send(400, {}, {"ok": False, "error": str(e)})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--base-path", default="/v21.0")
    ap.add_argument("--page-size", type=int, default=25)
    ap.add_argument("--app-id")
    ap.add_argument("--app-secret")
    ap.add_argument("--require-proof", action="store_true")
    args = ap.parse_args(argv)
    stub = GraphStub(base_path=args.base_path, page_size=args.page_size, app_id=args.app_id,
                     app_secret=args.app_secret, require_proof=args.require_proof,
                     host=args.host, port=args.port).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(stub.port, flush=True)     # after the handlers: a quick SIGTERM still exits 0
    done.wait()
    stub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
