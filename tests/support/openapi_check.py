"""openapi_check.py -- validates HTTP answers against docs/openapi.yaml.

apiclient.Api sends every answer it receives through check(), so the whole
API suite checks the document against the real servers: a field renamed,
added or dropped on either side, a status code not documented, fails the
test that saw it.  The schemas are checked by jsonschema (Debian package
python3-jsonschema, JSON Schema 2020-12, the dialect of OpenAPI 3.1); this
module only finds the operation and the response a request maps to.

Rules:
  - the path is matched against the document's path templates (literal
    segments before {parameters}); a path the document does not have is
    only allowed to answer an error;
  - a 2xx status must be documented for the operation; a 4xx/5xx that is not
    (the server's generic 401/404/405/413 ...) must still be the Error shape;
  - JSON bodies are validated against the response's schema; text/plain
    (Prometheus) must come as text/plain.
Set JR_OPENAPI_CHECK=0 to switch it off (e.g. when debugging a server).
"""

import os
import re

import yaml
from jsonschema import Draft202012Validator, RefResolver

HERE = os.path.dirname(os.path.abspath(__file__))
DOC_PATH = os.path.join(HERE, "..", "..", "docs", "openapi.yaml")

_doc = None
_resolver = None
_templates = None
_seen = set()   # (method, template, status) checked so far (for the coverage test)


def doc():
    global _doc, _resolver, _templates
    if _doc is None:
        with open(DOC_PATH, encoding="utf-8") as f:
            _doc = yaml.safe_load(f)
        _resolver = RefResolver.from_schema(_doc)
        ts = []
        for t in _doc["paths"]:
            segs = t.strip("/").split("/")
            ts.append((sum(s.startswith("{") for s in segs), t, segs))
        ts.sort()
        _templates = ts
    return _doc


def _match(path):
    doc()
    segs = path.strip("/").split("/")
    for _, t, tsegs in _templates:
        if len(tsegs) == len(segs) and all(a.startswith("{") or a == b for a, b in zip(tsegs, segs)):
            return t
    return None


def _validate(schema, body, where):
    v = Draft202012Validator(schema, resolver=_resolver)
    errors = sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise AssertionError("openapi: %s: %s at %s (body: %.400r)" % (
            where, e.message, "/".join(map(str, e.absolute_path)) or "(root)", body))


def _error_schema():
    return {"$ref": "#/components/schemas/Error"}


def enabled():
    return os.environ.get("JR_OPENAPI_CHECK", "1") != "0"


def check(method, url_path, status, headers, body):
    """Raises AssertionError when (status, headers, body) is not an answer
    the document allows for method and url_path (query string allowed)."""
    if not enabled():
        return
    method = method.upper()
    path = url_path.split("?", 1)[0]
    d = doc()
    ctype = headers.get("content-type", "")
    where = "%s %s -> %d" % (method, path, status)
    t = _match(path)
    op = d["paths"][t].get("get" if method == "HEAD" else method.lower()) if t else None
    if method == "HEAD":
        return
    if op is None:
        assert status >= 400, "openapi: %s: not in the document" % where
        assert ctype.startswith("application/json"), "openapi: %s: %s" % (where, ctype)
        _validate(_error_schema(), body, where)
        return
    resp = op["responses"].get(str(status))
    if resp is None:
        assert status >= 400, "openapi: %s: status not documented" % where
        assert ctype.startswith("application/json"), "openapi: %s: %s" % (where, ctype)
        _validate(_error_schema(), body, where)
        _seen.add((method, t, status))
        return
    if "$ref" in resp:
        resp = _resolver.resolve(resp["$ref"])[1]
    content = resp.get("content", {})
    if "application/json" in content:
        assert ctype.startswith("application/json"), "openapi: %s: content-type %s" % (where, ctype)
        _validate(content["application/json"]["schema"], body, where)
    elif "text/plain" in content:
        assert ctype.startswith("text/plain"), "openapi: %s: content-type %s" % (where, ctype)
    _seen.add((method, t, status))


def check_document():
    """The document's own schemas are valid JSON Schema 2020-12, every $ref
    resolves, and it says it is OpenAPI 3.1."""
    d = doc()
    assert str(d["openapi"]).startswith("3.1"), d["openapi"]
    for name, s in d["components"]["schemas"].items():
        Draft202012Validator.check_schema(s)

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    _resolver.resolve(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(d)


def operations():
    """[(METHOD, template)] of the document."""
    out = []
    for t, item in doc()["paths"].items():
        for m in item:
            if m in ("get", "post", "put", "delete", "patch"):
                out.append((m.upper(), t))
    return out


def seen():
    return set(_seen)
