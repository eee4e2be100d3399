"""jrdeploy.py -- Redis as it is deployed, for test_redis_deployed.py:
certificates made with openssl, redis-server listening on --tls-port only,
a master with a replica and three redis-sentinel processes, ACL users.

What: `make_certs` (a CA, a server certificate for localhost/127.0.0.1
signed by it, and a second CA that signed nothing of ours), `TlsRedis`
(a harness.Redis whose only port is TLS), `Sentinel` (one redis-sentinel
watching a master, with small down-after and failover timeouts so a
failover takes seconds), `sentinel_group` (three of them) and
`wait_master` (polls the sentinels until they agree on a master).

Why apart from harness.py: only the deployment tests need TLS and
Sentinel; harness.Redis stays the plain server every other file uses.
Every server is registered with the harness, so failure reports show its
log and cleanup stops it.
"""

import os
import subprocess
import time

import harness

REDIS_SENTINEL = "/usr/bin/redis-sentinel"


def _openssl(args, cwd):
    p = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s%s" % (" ".join(args), p.stdout, p.stderr))


def make_certs(d):
    """Writes ca.pem, server.pem, server.key (CN localhost, SAN localhost
    and 127.0.0.1, signed by ca.pem), expired.pem (the same, expired) and
    other-ca.pem into d; returns a dict of their paths.  EC keys: fast to
    make."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
              "-subj", "/CN=jobrunner test CA"], d)
    _openssl(["req", "-x509", *ec, "-keyout", "other-ca.key", "-out", "other-ca.pem",
              "-days", "2", "-subj", "/CN=some other CA"], d)
    _openssl(["req", *ec, "-keyout", "server.key", "-out", "server.csr",
              "-subj", "/CN=localhost"], d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext"], d)
    # the same name and CA, but expired (notAfter a day before notBefore)
    _openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-out", "expired.pem", "-days", "-1", "-extfile", "san.ext"], d)
    os.chmod(os.path.join(d, "server.key"), 0o644)
    return {k: os.path.join(d, v) for k, v in (
        ("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"),
        ("other_ca", "other-ca.pem"), ("expired", "expired.pem"))}


class TlsRedis(harness.Redis):
    """redis-server with --port 0 and --tls-port: TLS only.  url is the
    rediss:// URL for the name 'localhost' (the certificate's)."""

    def __init__(self, certs, cert=None, **kw):
        self.certs = certs
        super().__init__(extra_args=[
            "--port", "0", "--tls-port", str(kw.pop("port", None) or harness.free_port()),
            "--tls-cert-file", cert or certs["cert"], "--tls-key-file", certs["key"],
            "--tls-ca-cert-file", certs["ca"], "--tls-auth-clients", "no"], **kw)

    @property
    def tls_port(self):
        return int(self.extra_args[self.extra_args.index("--tls-port") + 1])

    @property
    def url(self):
        return "rediss://localhost:%d/0" % self.tls_port

    def client(self, **kw):
        import redis
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("socket_connect_timeout", 5)
        # the test's own client does not verify (the expired server too
        # must answer its readiness ping); jobrunner's verification is what
        # the tests check
        return redis.Redis(host="127.0.0.1", port=self.tls_port, ssl=True,
                           ssl_cert_reqs="none", ssl_check_hostname=False, **kw)


class Sentinel:
    """One redis-sentinel on 127.0.0.1:port watching master `name` at
    master_port, quorum 2, down-after 1000 ms, failover-timeout 3000 ms;
    requirepass: the sentinel's own password."""

    def __init__(self, master_port, name="mymaster", port=None, requirepass=None):
        self.name = "sentinel"
        self.master = name
        self.port = port or harness.free_port()
        self.dir = harness.make_tmpdir("sentinel")
        self.log_path = os.path.join(self.dir, "sentinel.log")
        self.conf = os.path.join(self.dir, "sentinel.conf")
        self.requirepass = requirepass
        with open(self.conf, "w") as f:
            if requirepass:
                f.write("requirepass %s\n" % requirepass)
            f.write("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"
                    "sentinel monitor %s 127.0.0.1 %d 2\n"
                    "sentinel down-after-milliseconds %s 1000\n"
                    "sentinel failover-timeout %s 3000\n"
                    "sentinel parallel-syncs %s 1\n"
                    % (self.port, self.dir, name, master_port, name, name, name))
        self.closed = False
        harness._REGISTRY.append(self)
        self.proc = harness._popen([REDIS_SENTINEL, self.conf], env={"PATH": "/usr/bin:/bin"},
                                   log_path=self.log_path, cwd=self.dir)
        c = self.client()
        try:
            harness.wait_until(lambda: c.ping(), timeout=20, ignore=(Exception,),
                               msg="sentinel :%d to answer" % self.port)
        finally:
            c.close()

    def client(self):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True,
                           socket_timeout=5, socket_connect_timeout=5, password=self.requirepass)

    def master_addr(self):
        c = self.client()
        try:
            a = c.execute_command("SENTINEL", "get-master-addr-by-name", self.master)
            return (a[0], int(a[1])) if a else None
        finally:
            c.close()

    def log_tail(self, n=harness.TAIL_LINES):
        return harness.tail_file(self.log_path, n)

    def describe(self):
        return "sentinel :%d (%s)" % (self.port, self.log_path)

    def cleanup(self):
        if self.closed:
            return
        if self.proc.poll() is None:
            harness._kill_group(self.proc)
            self.proc.wait()
        self.closed = True
        harness._remove_tree(self.dir)


def sentinel_group(master_port, n=3):
    return [Sentinel(master_port) for _ in range(n)]


def wait_master(sentinels, port, timeout=30.0):
    """Polls until every sentinel names 127.0.0.1:port as the master."""
    def agree():
        return all(s.master_addr() == ("127.0.0.1", port) for s in sentinels)
    harness.wait_until(agree, timeout=timeout, interval=0.1, ignore=(Exception,),
                       msg="sentinels to agree on master :%d" % port)


def sentinel_url(sentinels, db=0, password=None, tls=False):
    auth = ":%s@" % password if password else ""
    hosts = ",".join("127.0.0.1:%d" % s.port for s in sentinels)
    return "%s://%s%s/%d#%s" % ("rediss-sentinel" if tls else "redis-sentinel", auth, hosts, db,
                                sentinels[0].master)


def role(redis_server):
    """'master' or 'slave' (ROLE's first element) of a harness.Redis."""
    c = redis_server.client()
    try:
        return c.execute_command("ROLE")[0]
    finally:
        c.close()


def wait_role(redis_server, want, timeout=30.0):
    harness.wait_until(lambda: role(redis_server) == want, timeout=timeout, interval=0.1,
                       ignore=(Exception,), msg="%s to be %s" % (redis_server.describe(), want))


def now():
    return time.monotonic()
