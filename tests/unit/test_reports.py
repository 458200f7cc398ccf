"""Report body, messages, file names, log line, reading (plugins/module_utils/reports.py).

Writing reports is the store's: tests/unit/test_store_layout.py."""

import datetime
import json

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
    "deleting": "Deleting cluster",
    "resources_deleted": "Kubernetes resources deleted",
    "deleted": "Cluster deleted successfully",
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
                                      "rollout_completed", "tenant_synced", "completed", "deleting",
                                      "resources_deleted", "deleted", "failed"]


def test_failed_message_of_each_flow():
    assert reports.failed_message("rollout", "boom") == "Cluster creation failed at stage rollout: boom"
    assert reports.failed_message("delete_resources", "boom", "delete") == \
        "Cluster deletion failed at stage delete_resources: boom"


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
                         message=reports.failed_message("metadata", "user: bad"), details={"stage": "metadata"})
    # a refused identity: the report is the refused pair's, the raw values only in details
    assert (body["user"], body["service_name"], body["namespace"]) == ("_refused", "_refused", "")
    assert body["details"] == {"stage": "metadata",
                               "refused": {"user": "../../etc", "service_name": "", "namespace": "x"}}
    assert reports.file_prefix(body["user"], body["service_name"]) == "_refused__refused_"
    reports.check(body)
    with pytest.raises(reports.ReportError, match="only a failed report can be of a refused request"):
        reports.build("namespace_created", {"user": "ok", "service_name": "a b", "namespace": "x"}, "dep1")
    with pytest.raises(reports.ReportError, match="a report names a valid pair"):
        reports.check(dict(body, service_name="a b"))


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
    line = reports.log_line(dict(body, user="a\nb", service_name="s\r", namespace="n\x00"))
    assert "\n" not in line and "\r" not in line and len(line.splitlines()) == 1
    assert line == ("2024-01-01T00:00:00Z - User: a%0Ab, Service: s%0D, Namespace: n%00, Status: failed, "
                    "Message: bad%0Athing%09x%1B[31m%E2%80%A8end%C2%85")
    assert reports.parse_log_line(line)["message"] == "bad\nthing\tx\x1b[31m\u2028end\x85"


FORGED = "victim, Service: vsvc, Namespace: ns-v, Status: completed, Message: Cluster creation completed successfully"


@pytest.mark.parametrize("field", ["user", "service_name", "namespace", "message"])
def test_log_line_fields_cannot_forge_another_line(field):
    report = {"timestamp": "2024-01-01T00:00:00Z", "user": "eve", "service_name": "esvc", "namespace": "ns-e",
              "status": "failed", "message": "Cluster creation failed at stage metadata: user: bad"}
    report[field] = FORGED + "\n2024-01-01T00:00:00Z - User: victim, Service: vsvc, Namespace: ns-v, Status: completed"
    line = reports.log_line(report)
    assert len(line.splitlines()) == 1 and line.count(",") == 4
    assert "User: victim, Service: vsvc," not in line and ", Status: completed," not in line
    parsed = reports.parse_log_line(line)
    assert parsed == {key: report[key] for key in reports.LOG_FIELDS}  # reversible
    assert (parsed["user"], parsed["service_name"], parsed["status"]) != ("victim", "vsvc", "completed")


def test_log_line_of_valid_values_is_unchanged():
    # The characters the escape touches never occur in valid values or in the stage messages.
    for status in reports.STATUSES:
        body = reports.build(status, dict(REQ, gpu_count=2), "d", now=NOW,
                             message=reports.failed_message("rollout", "timeout") if status == "failed" else None)
        assert reports.log_line(body) == "%s - User: %s, Service: %s, Namespace: %s, Status: %s, Message: %s" % (
            body["timestamp"], body["user"], body["service_name"], body["namespace"], status, body["message"])
    skipped = reports.build("gitlab_pulled", REQ, "d", now=NOW,
                            message="GitLab pull skipped: no GitLab URL configured")
    assert reports.log_line(skipped).endswith("Message: GitLab pull skipped: no GitLab URL configured")
    # A message's '%' and ',' are encoded (reversibly); its ':' stays.
    odd = dict(skipped, message="quota: limit 5, in use 100%")
    assert reports.log_line(odd).endswith("Message: quota: limit 5%2C in use 100%25")
    assert reports.parse_log_line(reports.log_line(odd))["message"] == "quota: limit 5, in use 100%"


def test_parse_log_line_refuses_other_text():
    assert reports.parse_log_line("one") is None
    assert reports.parse_log_line("2024-01-01T00:00:00Z - User: u, Serv") is None
    assert reports.parse_log_line("t - User: a:b, Service: s, Namespace: n, Status: failed, Message: m") is None


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


def test_split_and_next_filename():
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, 6789, tzinfo=datetime.timezone.utc)
    name = reports.filename("a_b", "c", when)
    assert reports.split_filename(name) == ("a_b_c_", when)
    assert reports.split_filename("a_b_c_20240102T030405.006789Z.json.tmp") is None
    assert reports.split_filename("20240102T030405.006789Z.json") is None
    assert reports.split_filename("x_20241302T030405.006789Z.json") is None  # month 13
    assert reports.next_filename("u", "s", None, when) == reports.filename("u", "s", when)
    later = when + datetime.timedelta(seconds=1)
    assert reports.next_filename("u", "s", reports.filename("u", "s", when), later) == reports.filename("u", "s", later)
    for now in (when, when - datetime.timedelta(hours=1)):
        assert reports.next_filename("u", "s", reports.filename("u", "s", when), now) == \
            "u_s_20240102T030405.006790Z.json"
    assert reports.bump_filename("u_s_20241231T235959.999999Z.json") == "u_s_20250101T000000.000000Z.json"


def test_check_refuses_incomplete_report():
    with pytest.raises(reports.ReportError, match="must be a mapping"):
        reports.check(["starting"])
    with pytest.raises(reports.ReportError, match="missing"):
        reports.check({"status": "starting"})
    with pytest.raises(reports.ReportError, match="unknown report status"):
        reports.check(dict(reports.build("starting", REQ, "d"), status="bogus"))


def test_dumps_keeps_body_order():
    body = reports.build("starting", REQ, "dep1", now=NOW)
    text = reports.dumps(body)
    assert text.startswith('{\n  "status": "starting",\n  "message"') and text.endswith("}\n")
    assert json.loads(text) == body


def test_scan_groups_by_prefix(tmp_path):
    folder = tmp_path / "deployment_reports"
    folder.mkdir()
    for name in ("a_b_c_20240101T000000.000002Z.json", "a_b_c_20240101T000000.000001Z.json",
                 "u_s_20240101T000000.000000Z.json", ".tmp-123", "notes.txt"):
        (folder / name).write_text("{}")
    assert reports.scan(str(tmp_path)) == {
        "a_b_c_": ["a_b_c_20240101T000000.000001Z.json", "a_b_c_20240101T000000.000002Z.json"],
        "u_s_": ["u_s_20240101T000000.000000Z.json"]}
    assert reports.scan(str(tmp_path / "missing")) == {}


def test_read_skips_missing_broken_and_foreign(tmp_path):
    folder = tmp_path / "deployment_reports"
    folder.mkdir()
    mine = reports.build("namespace_created", {"user": "a_b", "service_name": "c", "namespace": "n"}, "d1")
    theirs = reports.build("namespace_created", {"user": "a", "service_name": "b_c", "namespace": "n"}, "d2")
    (folder / "a_b_c_1.json").write_text(json.dumps(mine))
    (folder / "a_b_c_2.json").write_text(json.dumps(theirs))
    (folder / "a_b_c_3.json").write_text("{broken")
    (folder / "a_b_c_4.json").write_text("[]")
    names = ["a_b_c_%d.json" % i for i in range(6)]
    assert reports.read(str(tmp_path), names, "a_b", "c") == [
        {"file": "a_b_c_1.json", "path": str(folder / "a_b_c_1.json"), "report": mine}]
    assert [e["report"] for e in reports.read(str(tmp_path), names, "a", "b_c")] == [theirs]


def test_log_tail(tmp_path):
    log = tmp_path / "deployment.log"
    lines = []
    for i in range(30):
        ident = {"user": "u%d" % (i % 2), "service_name": "s", "namespace": "n"}
        lines.append(reports.log_line(reports.build("k8s_applied", ident, "d", message="m%d" % i)))
    log.write_text("\n".join(lines) + "\n")
    tail = reports.log_tail(str(log), "u1", "s", lines=3)
    assert [line.rsplit("Message: ", 1)[1] for line in tail] == ["m25", "m27", "m29"]
    assert reports.log_tail(str(log), lines=100) == lines
    assert reports.log_tail(str(log), "u", "s") == []
    assert reports.log_tail(str(log), lines=0) == []
    assert reports.log_tail(str(tmp_path / "nope.log")) == []
    # small chunks exercise the backwards reader across chunk borders
    assert reports.log_tail(str(log), "u0", "s", lines=15, chunk=37) == reports.log_tail(str(log), "u0", "s", 15)
    assert reports.log_tail(str(log), "u0", "s", lines=15, chunk=37) == lines[0::2]


def test_log_tail_of_a_pair_matches_only_its_own_lines(tmp_path):
    log = tmp_path / "deployment.log"
    real = reports.build("failed", {"user": "victim", "service_name": "vsvc", "namespace": "ns-v"}, "d1",
                         message="Cluster creation failed at stage rollout: timeout")
    lines = [reports.log_line(real)]
    for field in ("user", "service_name", "namespace", "message"):
        report = dict(real, user="eve", service_name="esvc", namespace="ns-e", deployment_id="d2")
        report[field] = FORGED
        lines.append(reports.log_line(report))
    log.write_text("\n".join(lines) + "\n")
    assert reports.log_tail(str(log), "victim", "vsvc") == lines[:1]
    assert reports.log_tail(str(log), "victim") == lines[:1]
    assert reports.log_tail(str(log), service_name="vsvc") == lines[:1]
    assert [reports.parse_log_line(line)["status"] for line in reports.log_tail(str(log))] == ["failed"] * 5
