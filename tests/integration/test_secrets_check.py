"""The secrets check of the suite (conftest.no_secret_leaks, harness.leaks)
can fail: fed logs, answers and CLI outputs that hold a registered secret
in each of its forms, it names each place and the kind, never the secret.
Fast: no jobrunner binary, one `sh` process."""

import json
import os
import subprocess
import sys
import urllib.parse

import pytest

import harness

SECRET = "leak p@ss:w/rd%" + os.urandom(6).hex()


@pytest.mark.secrets_shown("feeds the scanner a secret on purpose")
def test_scanner_finds_every_form_in_a_log():
    harness.leaks(check=False)           # start from a clean slate
    harness.register_secret(SECRET, "test secret")
    forms = [SECRET, urllib.parse.quote(SECRET, safe=""),
             json.dumps({"msg": "x" + SECRET}).replace("/", "\\/")]
    script = "echo clean line; " + "; ".join("printf '%%s\\n' %s" % _sh(f) for f in forms)
    p = harness.Proc(["/bin/sh", "-c", script], name="leaky")
    assert p.wait(10) == 0
    found = harness.leaks()
    assert len(found) == 3, found
    for n, (hit, form) in enumerate(zip(found, ("raw", "percent-encoded", "JSON-escaped (\\/)")), 2):
        assert hit.startswith("test secret (%s) in %s:%d" % (form, p.log_path, n)), hit
        assert SECRET not in hit and urllib.parse.quote(SECRET, safe="") not in hit
    assert harness.leaks() == []         # each line is reported once
    p.cleanup()


@pytest.mark.secrets_shown("feeds the scanner a secret on purpose")
def test_scanner_finds_it_in_answers_and_outputs():
    harness.leaks(check=False)
    harness.register_secret(SECRET, "test secret")
    harness.record_output("answer to GET 127.0.0.1:1/x",
                          "HTTP 200\nx-debug: %s\n" % urllib.parse.quote_plus(SECRET))
    harness.record_output("output of producer (stderr)", "ok\n" + json.dumps(SECRET).replace("/", "\\/") + "\n")
    harness.record_output("output of producer (stdout)", "nothing here\n")
    # an answer may echo what its request sent (in any form), nothing else
    harness.record_output("answer to POST 127.0.0.1:1/echo", "HTTP 404\n\n" + json.dumps(SECRET),
                          sent="POST /jobs/%s/run" % urllib.parse.quote(SECRET, safe=""))
    harness.record_output("answer to POST 127.0.0.1:1/other", "HTTP 404\n\n" + SECRET,
                          sent="POST /jobs/another/run")
    found = harness.leaks()
    assert found == ["test secret (form-encoded) in answer to GET 127.0.0.1:1/x:2",
                     "test secret (JSON-escaped (\\/)) in output of producer (stderr):2",
                     "test secret (raw) in answer to POST 127.0.0.1:1/other:3"], found


def test_passwords_in_the_environment_are_registered():
    url = "postgresql://u:%s@h:1/d" % urllib.parse.quote("env p@ss:w/%x", safe="")
    kv = "host=h password='kv pass\\'word' dbname=d"
    harness.register_env_secrets({"DATABASE_URL": url, "DATABASE_DIRECT_URL": kv,
                                  "API_TOKEN": "token-abcdef-123456", "PORT": "123456789"})
    s = harness.secrets()
    assert s.get("env p@ss:w/%x") == "password in DATABASE_URL"
    assert s.get("kv pass'word") == "password in DATABASE_DIRECT_URL"
    assert s.get("token-abcdef-123456") == "API_TOKEN"
    assert "123456789" not in s


def test_the_conftest_check_fails_a_leaking_test(tmp_path):
    """The autouse fixture itself: a test whose process prints a secret
    errors, the report names the kind and the file, not the secret."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "conftest.py"), encoding="utf-8") as f:
        (tmp_path / "conftest.py").write_text(f.read())
    (tmp_path / "test_leaky.py").write_text("""
import harness
def test_leaks():
    harness.register_secret("inner" + "SECRET-42-xyz", "inner kind")
    p = harness.Proc(["/bin/sh", "-c", "echo db: inner; echo innerSECRET-42-xyz"], name="leaky")
    assert p.wait(10) == 0
def test_clean():
    p = harness.Proc(["/bin/sh", "-c", "echo fine"], name="clean")
    assert p.wait(10) == 0
""")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([os.path.join(here, "..", "support"), here]))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), str(tmp_path)],
                         capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "2 passed, 1 error" in out, out
    assert "inner kind (raw) in " in out and "output.log:2" in out, out
    assert "innerSECRET-42-xyz" not in out, out


def _sh(s):
    return "'" + s.replace("'", "'\\''") + "'"
