"""The HTTP API (es_serverless.server) through a real HTTP client (httpx) against a real uvicorn server on a
loopback port, running the collection's playbooks against the sandbox cluster."""

import contextlib
import json
import socket
import threading
import time

import httpx
import pytest

from es_serverless import api, server
from tests.entrypoints.conftest import request_body
from tests.waiting import wait_for

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": "Bearer " + TOKEN}
CREATE_STATUSES = ["starting", "namespace_created", "gitlab_pulled", "k8s_applied", "resources_configured",
                   "disk_configured", "rollout_completed", "tenant_synced", "completed"]


@contextlib.contextmanager
def serving(app):
    """``app`` served by uvicorn in a thread on a free port of 127.0.0.1; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    uv = server.ApiServer(app, host=host, port=port, log_level="warning")
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: uv.started or not thread.is_alive(), timeout=30, what="uvicorn started")
        assert uv.started, "uvicorn did not start"
        yield "http://%s:%d" % (host, port)
    finally:
        uv.request_exit()
        thread.join(timeout=120)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def start_server(sandbox, data_dir):
    """``start_server(**create_app options)`` -> an httpx client of a served app on the sandbox cluster."""
    with contextlib.ExitStack() as stack:
        def start(**options):
            app = server.create_app(data_dir, TOKEN, kubeconfig=sandbox.kubeconfig, **options)
            url = stack.enter_context(serving(app))
            return stack.enter_context(httpx.Client(base_url=url, timeout=90))
        yield start


def read_events(client, path, deadline, connected=None, on_event=None):
    """The events of an SSE stream until the server ends it: ``[{"event", "id", "data"}]`` (data parsed)."""
    events = []
    with client.stream("GET", path, headers=AUTH, timeout=httpx.Timeout(30)) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        if connected is not None:
            connected.set()
        fields = {}
        for line in resp.iter_lines():
            assert time.monotonic() < deadline, "the stream did not end in time: %r" % events
            if line.startswith(":"):  # a comment (keep-alive)
                continue
            if line:
                name, _sep, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
                continue
            if fields:
                fields["data"] = json.loads(fields["data"])
                events.append(fields)
                if on_event is not None:
                    on_event(fields)
                fields = {}
    return events


def status_of(data_dir, user, service_name):
    entry = api.get_deployment(user, service_name, data_dir)
    return entry and entry["status"]


def test_health_is_open_everything_else_needs_the_token(start_server, data_dir):
    client = start_server()
    health = client.get("/health")
    assert (health.status_code, health.text) == (200, "ok")
    assert health.headers["content-type"].startswith("text/plain")

    calls = [("GET", "/deployments", None), ("GET", "/openapi.json", None), ("POST", "/clusters", request_body()),
             ("GET", "/deployments/alice/search", None), ("GET", "/deployments/alice/search/reports", None),
             ("GET", "/deployments/alice/search/events", None), ("DELETE", "/clusters/alice/search", None)]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + TOKEN},
                    {"Authorization": "Bearer " + TOKEN + "x"}):
        for method, path, body in calls:
            resp = client.request(method, path, json=body, headers=headers)
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.headers["www-authenticate"] == "Bearer"
    # a body that cannot be parsed does not get past the token either
    resp = client.post("/clusters", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 401
    # the default open documentation pages are not served
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404

    doc = client.get("/openapi.json", headers=AUTH)
    assert doc.status_code == 200
    doc = doc.json()
    assert {"/health", "/clusters", "/clusters/{user}/{service_name}", "/deployments",
            "/deployments/{user}/{service_name}", "/deployments/{user}/{service_name}/reports",
            "/deployments/{user}/{service_name}/events"} <= set(doc["paths"])
    assert set(doc["paths"]["/clusters"]) == {"post"}
    assert set(doc["paths"]["/clusters/{user}/{service_name}"]) == {"delete"}
    assert "security" not in doc["paths"]["/health"]["get"]
    assert doc["paths"]["/deployments"]["get"]["security"] == [{"HTTPBearer": []}]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    fields = doc["components"]["schemas"]["ClusterRequest"]["properties"]
    assert {"tenant_org_id", "user", "service_name", "replicas", "cpu", "memory", "storage", "namespace",
            "cpu_request", "gpu_count"} <= set(fields)
    assert all(spec.get("description") for spec in fields.values())
    assert client.get("/deployments", headers=AUTH).json() == []


def test_bad_input_is_422_naming_the_field_with_the_collections_message(start_server, data_dir):
    client = start_server()
    bad = [(request_body(cpu="500x"), "cpu"),
           ({k: v for k, v in request_body().items() if k != "user"}, "user"),
           (request_body(replicas="many"), "replicas"),
           (request_body(replicas=True), "replicas"),
           (request_body(memory="2Gi/1Gi"), "memory"),
           (request_body(colour="blue"), "colour"),
           (request_body(user="../../etc"), "user")]
    for body, field in bad:
        with pytest.raises(api.ApiError) as refused:
            api.to_request(body)
        resp = client.post("/clusters", json=body, headers=AUTH)
        assert resp.status_code == 422, (body, resp.text)
        (error,) = resp.json()["detail"]
        assert error["loc"] == ["body", field]
        assert error["msg"] == str(refused.value)
        assert error["msg"].startswith(refused.value.field + ": ")
    # a JSON type no field takes: pydantic refuses it, naming the field
    resp = client.post("/clusters", json=request_body(replicas=2.5), headers=AUTH)
    assert resp.status_code == 422
    assert {tuple(error["loc"][:2]) for error in resp.json()["detail"]} == {("body", "replicas")}

    # names in paths and queries: the collection's name rule, before any use
    with pytest.raises(api.RequestError) as refused:
        api.request_rules.check_name("user", "a..b")
    for method, path, loc in [("GET", "/deployments/a..b/search", ["path", "user"]),
                              ("GET", "/deployments/alice/.hidden/reports", ["path", "service_name"]),
                              ("GET", "/deployments/alice/se$rch/events", ["path", "service_name"]),
                              ("DELETE", "/clusters/a..b/search", ["path", "user"]),
                              ("GET", "/deployments?user=a..b", ["query", "user"]),
                              ("GET", "/deployments/alice/search/reports?deployment_id=../x",
                               ["query", "deployment_id"])]:
        resp = client.request(method, path, headers=AUTH)
        assert resp.status_code == 422, (path, resp.text)
        (error,) = resp.json()["detail"]
        assert error["loc"] == loc
    resp = client.get("/deployments/a..b/search", headers=AUTH)
    assert resp.json()["detail"][0]["msg"] == str(refused.value)
    assert client.get("/deployments", headers=AUTH).json() == []  # nothing ran


def test_original_body_runs_in_the_background_reports_stream_live_and_the_original_query_finds_it(
        start_server, data_dir):
    client = start_server()
    deadline = time.monotonic() + 90
    # A stream opened before the request follows the next deployment, live: when each report arrives,
    # the store says how far the run has gone.
    connected, written, live = threading.Event(), [], {}

    def follow():
        live["events"] = read_events(client, "/deployments/alice/search/events", deadline, connected,
                                     lambda event: written.append(len(api.reports("alice", "search", data_dir))))

    reader = threading.Thread(target=follow)
    reader.start()
    assert connected.wait(30)

    resp = client.post("/clusters", json=request_body(), headers=AUTH)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    deployment_id = accepted["deployment_id"]
    assert deployment_id
    assert (accepted["operation"], accepted["user"], accepted["service_name"]) == ("create", "alice", "search")
    assert accepted["report"]["status"] == "starting" and accepted["report"]["deployment_id"] == deployment_id
    assert accepted["links"]["events"] == "/deployments/alice/search/events?deployment_id=" + deployment_id
    assert resp.headers["location"] == accepted["links"]["reports"]

    reader.join(timeout=max(1, deadline - time.monotonic()))
    assert not reader.is_alive()
    events = live["events"]
    assert [event["data"]["status"] for event in events] == CREATE_STATUSES
    assert {event["event"] for event in events} == {"report"}
    assert {event["data"]["deployment_id"] for event in events} == {deployment_id}
    assert written[0] < len(CREATE_STATUSES)  # the first report came while the run went

    reports = client.get(accepted["links"]["reports"], headers=AUTH)
    assert reports.status_code == 200
    assert [item["report"] for item in reports.json()] == [event["data"] for event in events]
    # an event's id is its report's place in the pair's index: the first deployment's are 0, 1, ...
    assert [int(event["id"]) for event in events] == list(range(len(CREATE_STATUSES)))
    # the same stream of a finished deployment replays it and ends
    replay = read_events(client, accepted["links"]["events"], time.monotonic() + 30)
    assert replay == events

    # the original query
    found = client.get("/deployments", params={"user": "alice", "service_name": "search"}, headers=AUTH)
    assert found.status_code == 200
    (entry,) = found.json()
    assert (entry["status"], entry["deployment_id"]) == ("created", deployment_id)
    assert entry["namespace"] == "es-alice-search"
    assert client.get("/deployments", params={"user": "bob"}, headers=AUTH).json() == []
    one = client.get("/deployments/alice/search", headers=AUTH).json()
    assert one["status"] == "created" and one["latest_report"]["report"]["status"] == "completed"
    assert client.get("/deployments/alice/other", headers=AUTH).status_code == 404
    assert client.get("/deployments/alice/search/reports?deployment_id=nope", headers=AUTH).status_code == 404
    assert client.get("/deployments/alice/search/events?deployment_id=nope", headers=AUTH).status_code == 404


def test_one_run_per_tenant_at_once_other_tenants_go_alongside_then_delete(start_server, sandbox, data_dir):
    client = start_server(max_runs=2)
    sandbox.set_ready_delay(5)  # a slow rollout: the first create is still going when the second comes
    answers = []
    barrier = threading.Barrier(2)

    def create():
        barrier.wait(timeout=30)
        answers.append(client.post("/clusters", json=request_body(), headers=AUTH))

    threads = [threading.Thread(target=create) for _number in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(resp.status_code for resp in answers) == [202, 409], [resp.text for resp in answers]
    accepted = next(resp.json() for resp in answers if resp.status_code == 202)
    busy = next(resp.json() for resp in answers if resp.status_code == 409)
    assert busy["deployment_id"] == accepted["deployment_id"]
    assert accepted["deployment_id"] in busy["detail"]

    # another tenant runs alongside; a third would exceed max_runs
    other = client.post("/clusters", json=request_body("carol", "logs"), headers=AUTH)
    assert other.status_code == 202, other.text
    assert status_of(data_dir, "alice", "search") == "creating"
    full = client.post("/clusters", json=request_body("dave", "docs"), headers=AUTH)
    assert full.status_code == 503 and full.headers["retry-after"] == str(server.RETRY_AFTER)
    assert status_of(data_dir, "dave", "docs") is None

    wait_for(lambda: status_of(data_dir, "alice", "search") == "created"
             and status_of(data_dir, "carol", "logs") == "created", timeout=90, what="both clusters created")
    alice = api.reports("alice", "search", data_dir)
    assert [item["report"]["status"] for item in alice] == CREATE_STATUSES  # the 409 ran nothing
    carol = api.reports("carol", "logs", data_dir)
    assert carol[0]["report"]["timestamp"] <= alice[-1]["report"]["timestamp"]

    resp = client.delete("/clusters/alice/search", headers=AUTH)
    assert resp.status_code == 202, resp.text
    deleting = resp.json()
    assert (deleting["operation"], deleting["report"]["status"]) == ("delete", "deleting")
    assert deleting["deployment_id"] not in (None, accepted["deployment_id"])
    wait_for(lambda: status_of(data_dir, "alice", "search") == "deleted", timeout=60, what="alice deleted")
    events = read_events(client, deleting["links"]["events"], time.monotonic() + 30)
    assert [event["data"]["status"] for event in events] == ["deleting", "resources_deleted", "deleted"]
    assert client.delete("/clusters/nobody/here", headers=AUTH).status_code == 404

    # a delete of a deleted cluster: refused by the playbook at stage 0, the status stays (until the
    # delete's run has ended here, the server answers 409 naming it: retry)

    def delete_again():
        resp = client.delete("/clusters/alice/search", headers=AUTH)
        return None if resp.json().get("deployment_id") == deleting["deployment_id"] else resp

    again = wait_for(delete_again, timeout=30, interval=0.2, what="the delete's run ended")
    assert again.status_code == 409, again.text
    assert again.json()["refused"] is True and "already deleted" in again.json()["detail"]
    assert status_of(data_dir, "alice", "search") == "deleted"
    assert status_of(data_dir, "carol", "logs") == "created"


def test_a_run_the_playbook_refuses_at_stage_0_is_409_with_its_failed_report(start_server, sandbox, data_dir):
    client = start_server()
    sandbox.set_ready_delay(3)
    # another process (the Python API here) is creating bob/logs
    first = threading.Event()
    other = {}

    def create_elsewhere():
        other["result"] = api.create_cluster(request_body("bob", "logs"), data_dir, kubeconfig=sandbox.kubeconfig,
                                             on_report=lambda report: first.set())

    thread = threading.Thread(target=create_elsewhere)
    thread.start()
    try:
        assert first.wait(60)
        resp = client.post("/clusters", json=request_body("bob", "logs", replicas=2), headers=AUTH)
    finally:
        thread.join(timeout=90)
    assert resp.status_code == 409, resp.text
    refused = resp.json()
    result = other["result"]
    assert result.status == "completed"
    assert refused["refused"] is True and refused["deployment_id"] != result.deployment_id
    assert refused["report"]["status"] == "failed" and refused["report"]["details"]["stage"] == "metadata"
    assert refused["detail"] == refused["report"]["message"]
    assert "already being created by deployment %s" % result.deployment_id in refused["detail"]
    entry = client.get("/deployments/bob/logs", headers=AUTH).json()
    assert (entry["status"], entry["deployment_id"]) == ("created", result.deployment_id)


def test_serve_needs_the_token_in_the_environment(monkeypatch, data_dir):
    for value in (None, "", "two words"):
        if value is None:
            monkeypatch.delenv(server.TOKEN_ENV, raising=False)
        else:
            monkeypatch.setenv(server.TOKEN_ENV, value)
        with pytest.raises(api.ApiError) as refused:
            server.serve(0, data_dir)
        assert str(refused.value).startswith("ES_SERVERLESS_API_TOKEN: ")
        assert refused.value.field == server.TOKEN_ENV
    with pytest.raises(api.ApiError, match="^token: is empty"):
        server.create_app(data_dir, "")
