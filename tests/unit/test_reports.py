"""Report body, messages, file names, log line and writing (plugins/module_utils/reports.py)."""

import datetime
import json
import os

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import reports
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import request as r

NOW = datetime.datetime(2024, 1, 1, 0, 0, 0, tzinfo=datetime.timezone.utc)
REQ = r.validate({"user": "test_user", "service_name": "test_service", "namespace": "es-test"})
IDENT = {"user": "test_user", "service_name": "test_service", "namespace": "es-test"}

SPEC_MESSAGES = {
    "starting": "Starting cluster creation",
    "namespace_created": "Namespace created successfully",
    "gitlab_pulled": "GitLab resources pulled successfully",
    "k8s_applied": "Kubernetes resources applied successfully",
    "resources_configured": "Cluster resources configured successfully",
    "disk_configured": "Disk size configured to 10Gi",
    "gpu_configured": "GPU count configured to 2",
    "rollout_completed": "Cluster rollout completed successfully",
    "tenant_synced": "Data synced to tenant container management",
    "completed": "Cluster creation completed successfully",
}


@pytest.mark.parametrize("status", sorted(SPEC_MESSAGES))
def test_messages_exactly_as_spec(status):
    body = reports.build(status, dict(REQ, gpu_count=2), "dep1", now=NOW)
    assert body["message"] == SPEC_MESSAGES[status]
    assert body["status"] == status
    assert body["timestamp"] == "2024-01-01T00:00:00Z"


def test_status_order():
    assert list(reports.STATUSES) == ["starting", "namespace_created", "gitlab_pulled", "k8s_applied",
                                      "resources_configured", "disk_configured", "gpu_configured",
                                      "rollout_completed", "tenant_synced", "completed", "failed"]


def test_starting_body_matches_spec_example():
    body = reports.build("starting", REQ, "dep1", now=NOW)
    assert list(body) == ["status", "message", "timestamp", "user", "service_name", "namespace", "deployment_id",
                          "details"]
    assert body["details"] == {
        "user": "test_user", "service_name": "test_service", "namespace": "es-test", "replicas": 1,
        "cpu_request": "500m", "cpu_limit": "2", "mem_request": "1Gi", "mem_limit": "2Gi", "disk_size": "10Gi",
        "gpu_count": 0, "dimension": 128, "vector_count": 10000, "index_limit": 100, "tenant_org_id": "",
    }
    assert body["deployment_id"] == "dep1"
    assert {k: body[k] for k in IDENT} == IDENT


def test_completed_needs_full_request():
    with pytest.raises(reports.ReportError, match="missing replicas"):
        reports.build("completed", IDENT, "dep1")


def test_middle_report_without_details():
    body = reports.build("namespace_created", IDENT, "dep1", now=NOW)
    assert body == {"status": "namespace_created", "message": "Namespace created successfully",
                    "timestamp": "2024-01-01T00:00:00Z", "user": "test_user", "service_name": "test_service",
                    "namespace": "es-test", "deployment_id": "dep1"}
    body = reports.build("k8s_applied", IDENT, "dep1", details={"objects": ["a"]})
    assert body["details"] == {"objects": ["a"]}


def test_templated_messages_need_their_field():
    with pytest.raises(reports.ReportError, match="disk_size"):
        reports.build("disk_configured", IDENT, "dep1")
    body = reports.build("disk_configured", IDENT, "dep1", details={"disk_size": "20Gi"})
    assert body["message"] == "Disk size configured to 20Gi"


def test_message_override():
    body = reports.build("gitlab_pulled", IDENT, "dep1", message="GitLab pull skipped: no GitLab URL configured")
    assert body["message"] == "GitLab pull skipped: no GitLab URL configured"


def test_failed_report():
    assert reports.failed_message("k8s_applied", "boom") == "Cluster creation failed at stage k8s_applied: boom"
    with pytest.raises(reports.ReportError):
        reports.build("failed", IDENT, "dep1")
    body = reports.build("failed", {"user": "../../etc", "service_name": None, "namespace": "x"}, "dep1",
                         message=reports.failed_message("metadata", "user: bad"))
    assert body["user"] == "../../etc" and body["service_name"] == ""


def test_unknown_status():
    with pytest.raises(reports.ReportError, match="unknown report status"):
        reports.build("done", IDENT, "dep1")


def test_secrets_filtered_recursively():
    body = reports.build("k8s_applied", IDENT, "dep1", details={
        "password": "x", "elastic_password": "x", "gitlab_token": "x",
        "nested": {"Secret": "x", "ok": 1, "list": [{"api_key": "x", "y": 2}]},
        "keep": "v"})
    assert body["details"] == {"nested": {"ok": 1, "list": [{"y": 2}]}, "keep": "v"}
    full = reports.build("starting", REQ, "dep1", details={"token": "x", "extra": 1})
    assert "token" not in full["details"] and full["details"]["extra"] == 1


def test_log_line_exact():
    body = reports.build("starting", REQ, "dep1", now=NOW)
    assert reports.log_line(body) == ("2024-01-01T00:00:00Z - User: test_user, Service: test_service, "
                                      "Namespace: es-test, Status: starting, Message: Starting cluster creation")


def test_log_line_escapes_control_characters():
    body = reports.build("failed", {"user": "a\nb", "service_name": "s\r", "namespace": "n\x00"}, "d", now=NOW,
                         message="bad\nthing\tx\x1b[31m\u2028end\x85")
    line = reports.log_line(body)
    assert "\n" not in line and "\r" not in line and len(line.splitlines()) == 1
    assert line == ("2024-01-01T00:00:00Z - User: a\\nb, Service: s\\r, Namespace: n\\x00, Status: failed, "
                    "Message: bad\\nthing\\tx\\x1b[31m\\u2028end\\u0085")


def test_filename_format_and_encoding():
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, 6789, tzinfo=datetime.timezone.utc)
    assert reports.filename("test_user", "test_service", when) == "test_user_test_service_20240102T030405.006789Z.json"
    assert reports.filename("../../etc", "a b", when) == "%2E.%2F..%2Fetc_a%20b_20240102T030405.006789Z.json"
    assert "/" not in reports.filename("a/b", "%", when)
    assert reports.filename("a", "%", when).startswith("a_%25_")
    long_name = reports.filename("x" * 5000, "y/" * 3000, when)
    assert len(long_name) < 255 and "/" not in long_name
    assert reports.filename("x" * 5000, "s", when) != reports.filename("x" * 4999 + "z", "s", when)


def test_filename_naive_time_is_utc():
    naive = datetime.datetime(2024, 1, 1, 0, 0, 0)
    assert reports.filename("u", "s", naive) == "u_s_20240101T000000.000000Z.json"


def test_write_creates_file_and_log_line(tmp_path):
    body = reports.build("starting", REQ, "dep1", now=NOW)
    path = reports.write(str(tmp_path), None, body)
    assert os.path.dirname(path) == str(tmp_path / "deployment_reports")
    assert os.path.basename(path).startswith("test_user_test_service_")
    assert json.loads(open(path).read()) == body
    assert open(path).read().startswith('{\n  "status": "starting",\n  "message"')
    assert (tmp_path / "deployment.log").read_text() == reports.log_line(body) + "\n"


def test_write_log_outside_data_dir(tmp_path):
    log = tmp_path / "logs" / "nested" / "deployment.log"
    reports.write(str(tmp_path / "data"), str(log), reports.build("namespace_created", IDENT, "d"))
    reports.write(str(tmp_path / "data"), str(log), reports.build("k8s_applied", IDENT, "d"))
    lines = log.read_text().splitlines()
    assert [line.split("Status: ")[1].split(",")[0] for line in lines] == ["namespace_created", "k8s_applied"]


def test_invalid_identity_cannot_escape(tmp_path):
    data = tmp_path / "data"
    body = reports.build("failed", {"user": "../../etc", "service_name": "../x", "namespace": ""}, "d",
                         message="Cluster creation failed at stage metadata: user: bad")
    path = reports.write(str(data), None, body)
    assert os.path.dirname(path) == str(data / "deployment_reports")
    assert sorted(os.listdir(str(tmp_path))) == ["data"]
    assert [e["report"] for e in reports.list_reports(str(data), "../../etc", "../x")] == [body]


def test_200_reports_sort_in_order_and_never_overwrite(tmp_path):
    bodies = []
    for i in range(200):
        body = reports.build("k8s_applied", IDENT, "dep1", details={"n": i})
        bodies.append(body)
        reports.write(str(tmp_path), None, body)
    names = os.listdir(str(tmp_path / "deployment_reports"))
    assert len(names) == 200
    ordered = [json.loads((tmp_path / "deployment_reports" / name).read_text())["details"]["n"]
               for name in sorted(names)]
    assert ordered == list(range(200))
    assert [e["report"]["details"]["n"] for e in reports.list_reports(str(tmp_path), "test_user", "test_service")] \
        == list(range(200))
    assert len((tmp_path / "deployment.log").read_text().splitlines()) == 200


def test_same_or_earlier_clock_is_bumped(tmp_path):
    body = reports.build("namespace_created", IDENT, "d")
    first = reports.write(str(tmp_path), None, body, now=NOW)
    second = reports.write(str(tmp_path), None, body, now=NOW)
    third = reports.write(str(tmp_path), None, body, now=NOW - datetime.timedelta(hours=1))
    names = [os.path.basename(p) for p in (first, second, third)]
    assert names == ["test_user_test_service_20240101T000000.000000Z.json",
                     "test_user_test_service_20240101T000000.000001Z.json",
                     "test_user_test_service_20240101T000000.000002Z.json"]


def test_no_temp_files_left(tmp_path):
    for status in ("namespace_created", "k8s_applied"):
        reports.write(str(tmp_path), None, reports.build(status, IDENT, "d"))
    assert not [n for n in os.listdir(str(tmp_path / "deployment_reports")) if n.startswith(".")]


def test_write_refuses_incomplete_report(tmp_path):
    with pytest.raises(reports.ReportError, match="missing"):
        reports.write(str(tmp_path), None, {"status": "starting"})
    with pytest.raises(reports.ReportError, match="unknown report status"):
        reports.write(str(tmp_path), None, dict(reports.build("starting", REQ, "d"), status="bogus"))


def test_list_reports_filters_collisions_and_deployment(tmp_path):
    ab_c = {"user": "a_b", "service_name": "c", "namespace": "n1"}
    a_bc = {"user": "a", "service_name": "b_c", "namespace": "n2"}
    reports.write(str(tmp_path), None, reports.build("namespace_created", ab_c, "d1"))
    reports.write(str(tmp_path), None, reports.build("namespace_created", a_bc, "d2"))
    reports.write(str(tmp_path), None, reports.build("k8s_applied", ab_c, "d3"))
    assert [e["report"]["deployment_id"] for e in reports.list_reports(str(tmp_path), "a_b", "c")] == ["d1", "d3"]
    assert [e["report"]["deployment_id"] for e in reports.list_reports(str(tmp_path), "a", "b_c")] == ["d2"]
    assert [e["report"]["deployment_id"] for e in reports.list_reports(str(tmp_path), "a_b", "c", "d3")] == ["d3"]
    assert reports.latest_report(str(tmp_path), "a_b", "c")["report"]["status"] == "k8s_applied"
    assert reports.latest_report(str(tmp_path), "x", "y") is None
    assert reports.list_reports(str(tmp_path / "missing"), "a", "b") == []


def test_log_tail(tmp_path):
    log = tmp_path / "deployment.log"
    for i in range(30):
        ident = {"user": "u%d" % (i % 2), "service_name": "s", "namespace": "n"}
        reports.write(str(tmp_path), str(log), reports.build("k8s_applied", ident, "d", message="m%d" % i))
    tail = reports.log_tail(str(log), "u1", "s", lines=3)
    assert [line.rsplit("Message: ", 1)[1] for line in tail] == ["m25", "m27", "m29"]
    assert len(reports.log_tail(str(log), lines=100)) == 30
    assert reports.log_tail(str(log), "u", "s") == []
    assert reports.log_tail(str(tmp_path / "nope.log")) == []
    # small chunks exercise the backwards reader across chunk borders
    assert reports.log_tail(str(log), "u0", "s", lines=15, chunk=37) == reports.log_tail(str(log), "u0", "s", 15)
    assert len(reports.log_tail(str(log), "u0", "s", lines=15, chunk=37)) == 15
