"""docs/openapi.yaml: the document itself, and that the check every API
test runs (openapi_check.py, through apiclient.Api) can fail.  The answers
of the real servers are validated by the API tests themselves."""

import pytest

import openapi_check


def test_document_is_valid():
    openapi_check.check_document()
    ops = openapi_check.operations()
    for op in [("POST", "/api/integrations/jobs/runs/{id}/cancel"),
               ("GET", "/api/integrations/jobs/runs"),
               ("POST", "/api/integrations/jobs/{job}/pause"),
               ("POST", "/api/integrations/jobs/{job}/resume"),
               ("POST", "/api/integrations/jobs/dead/retry"),
               ("GET", "/health/ready"), ("GET", "/metrics")]:
        assert op in ops, op


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("method,path,status,body", [
    ("GET", "/api/health", 200, {"status": "ok", "extra": 1}),              # undocumented field
    ("GET", "/api/integrations/jobs/runs/x", 200, {"id": "x"}),             # fields missing
    ("POST", "/api/integrations/jobs/runs/x/cancel", 201, {}),              # undocumented 2xx
    ("GET", "/api/integrations/jobs/runs", 200, {"runs": [], "nextCursor": 5}),
    ("POST", "/api/integrations/jobs/noop/pause", 404, {"error": "nope"}),  # not the error shape
    ("GET", "/no/such/path", 200, {}),                                      # not in the document
])
def test_check_refuses(method, path, status, body):
    with pytest.raises(AssertionError):
        openapi_check.check(method, path, status, JSON, body)


def test_check_accepts():
    openapi_check.check("GET", "/api/health", 200, JSON, {"status": "ok"})
    openapi_check.check("POST", "/api/integrations/jobs/noop/pause", 200, JSON,
                        {"job": "noop", "paused": True})
    openapi_check.check("GET", "/nowhere", 404, JSON,
                        {"error": {"code": "not_found", "message": "no route"}})
