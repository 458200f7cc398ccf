"""Retries of the collection's Kubernetes client (plugins/module_utils/k8s_client.py) and what the
apply makes of a create that answers 409 (plugins/module_utils/apply.py), through the real client and
its urllib3 pool against a scripted HTTP server."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import apply, k8s_client


class Script:
    """Answers in order, per method: ``(status, headers, body)`` tuples or ``"reset"`` (close the
    connection without an answer); once a method's answers are spent, its last one repeats."""

    def __init__(self, **answers):
        self.answers = dict((method, list(items)) for method, items in answers.items())
        self.seen = []

    def next(self, method, path):
        self.seen.append((method, path))
        items = self.answers[method]
        return items.pop(0) if len(items) > 1 else items[0]


def status(code, reason, message="", extra=None):
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message}
    body.update(extra or {})
    return (code, {}, body)


OK = (200, {}, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "n"}})
CREATED = (201, {}, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "n"}})


@pytest.fixture
def server():
    servers = []

    def start(script):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                answer = script.next(self.command, self.path)
                if answer == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    return
                code, headers, body = answer
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        notes = []
        api = k8s_client.client_from_params({"host": "http://127.0.0.1:%d" % httpd.server_port, "api_key": "t"},
                                            environ={}, notify=notes.append)
        return api, notes

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("method,answer", [
    ("POST", status(500, "InternalError", "Internal error occurred: etcd leader changed")),
    ("POST", status(503, "ServiceUnavailable", "the server is currently unable to handle the request")),
    ("PATCH", status(504, "Timeout", "the server was unable to return a response in the time allotted")),
    ("GET", status(502, "BadGateway")),
    ("DELETE", status(500, "InternalError")),
    ("GET", "reset"),
    ("POST", "reset"),
])
def test_a_transient_failure_is_retried_and_noted(server, method, answer):
    good = CREATED if method == "POST" else OK
    script = Script(**{method: [answer, good]})
    api, notes = server(script)
    code, body = k8s_client.request_json(api, method, "/api/v1/namespaces/n", body={} if method != "GET" else None)
    assert code == good[0] and body["metadata"]["name"] == "n"
    assert len(script.seen) == 2
    assert len(notes) == 1 and notes[0].startswith("Kubernetes API %s /api/v1/namespaces/n " % method)
    assert notes[0].endswith("; retrying (1 of at most %d)" % k8s_client.RETRY_ATTEMPTS)


def test_429_waits_as_retry_after_says(server):
    script = Script(PATCH=[(429, {"Retry-After": "1"}, {"kind": "Status", "code": 429, "reason": "TooManyRequests",
                                                        "message": "Too many requests, please try again later."}),
                           OK])
    api, notes = server(script)
    start = time.monotonic()
    assert k8s_client.request_json(api, "PATCH", "/api/v1/namespaces/n", body={})[0] == 200
    assert 1.0 <= time.monotonic() - start < 3
    assert "answered 429 Too Many Requests" in notes[0]


def test_a_lasting_failure_ends_with_the_api_servers_own_error(server):
    script = Script(GET=[status(500, "InternalError", "Internal error occurred: injected fault")])
    api, notes = server(script)
    start = time.monotonic()
    with pytest.raises(k8s_client.ApiException) as failed:
        k8s_client.request_json(api, "GET", "/apis/apps/v1/namespaces/n/statefulsets/elasticsearch")
    assert len(script.seen) == 1 + k8s_client.RETRY_ATTEMPTS and len(notes) == k8s_client.RETRY_ATTEMPTS
    assert time.monotonic() - start < 10  # 0 + 0.5 + 1 + 2 + 4 s of backoff
    assert failed.value.retried
    assert k8s_client.api_error_message(failed.value, "StatefulSet n/elasticsearch") == (
        "StatefulSet n/elasticsearch: 500 Internal Server Error: Internal error occurred: injected fault")


@pytest.mark.parametrize("code,reason", [(400, "BadRequest"), (403, "Forbidden"), (404, "NotFound"),
                                         (409, "AlreadyExists"), (422, "Invalid")])
def test_an_answer_that_will_not_change_is_not_retried(server, code, reason):
    script = Script(POST=[status(code, reason, "no"), CREATED])
    api, notes = server(script)
    with pytest.raises(k8s_client.ApiException) as failed:
        k8s_client.request_json(api, "POST", "/api/v1/namespaces", body={})
    assert failed.value.status == code and not failed.value.retried
    assert len(script.seen) == 1 and notes == []


def test_the_time_spent_retrying_is_bounded(server):
    script = Script(GET=[(429, {"Retry-After": "3600"}, {"kind": "Status", "code": 429})])
    api, _notes = server(script)
    api.configuration.retries = k8s_client.api_retry(budget=2)
    api.rest_client = type(api.rest_client)(api.configuration)  # a pool with that policy
    start = time.monotonic()
    with pytest.raises(k8s_client.ApiException) as failed:
        k8s_client.request_json(api, "GET", "/api/v1/namespaces/n")
    assert failed.value.status == 429
    assert time.monotonic() - start < 4


SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "n",
                                                             "labels": {"app": "elasticsearch"}},
          "stringData": {"password": "generated-0123456789"}}


def test_a_create_answering_409_for_an_object_that_does_not_exist_fails(server):
    script = Script(POST=[status(409, "AlreadyExists", 'secrets "creds" already exists')],
                    GET=[status(404, "NotFound", 'secrets "creds" not found')])
    api, _notes = server(script)
    with pytest.raises(apply.ApplyError) as failed:
        apply.apply_objects(api, [SECRET], "n", create_only=True)
    assert failed.value.message == ("cannot apply Secret/creds in namespace n: the create answered 409 Conflict, "
                                    "yet Secret/creds in namespace n does not exist (a read answered 404 Not Found)")
    assert failed.value.applied == []
    assert [method for method, _path in script.seen] == ["POST", "GET"]


def _stored_secret(password):
    return (200, {}, {"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": "creds", "namespace": "n", "labels": {"app": "elasticsearch"}},
                      "data": {"password": __import__("base64").b64encode(password.encode()).decode()}})


def test_a_create_answering_409_for_an_object_that_exists_keeps_it(server):
    script = Script(POST=[status(409, "AlreadyExists")], GET=[_stored_secret("someone-elses")])
    api, _notes = server(script)
    applied = apply.apply_objects(api, [SECRET], "n", create_only=True)
    assert applied[0]["ref"]["created"] is False and applied[0]["changed"] is False
    assert "data" not in applied[0]["object"]


def test_a_create_retried_after_an_ambiguous_failure_knows_its_own_object(server):
    # The first attempt created the Secret and then failed (500); the retry answers 409.
    script = Script(POST=[status(500, "InternalError"), status(409, "AlreadyExists")],
                    GET=[_stored_secret("generated-0123456789")])
    api, _notes = server(script)
    applied = apply.apply_objects(api, [SECRET], "n", create_only=True)
    assert applied[0]["ref"]["created"] is True and applied[0]["changed"] is True
    # An object someone else holds under that name is not this run's, retried or not.
    script = Script(POST=[status(500, "InternalError"), status(409, "AlreadyExists")],
                    GET=[_stored_secret("someone-elses")])
    api, _notes = server(script)
    assert apply.apply_objects(api, [SECRET], "n", create_only=True)[0]["ref"]["created"] is False
