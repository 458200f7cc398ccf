"""The Python API (es_serverless.api) on the sandbox cluster: runs through ansible-runner, reports delivered
live and in order, the original manager's body, refusals with the playbook's own message, update, delete."""

import os
import subprocess
import sys
import threading
import time

import pytest

import es_serverless as es
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.request import RequestError, validate
from tests.entrypoints.conftest import ROOT, request_body
from tests.integration.flow import reports as report_files
from tests.integration.flow import MESSAGES, SKIPPED_GITLAB, run_playbook, tenant_vars

CREATE = ["starting", "namespace_created", "gitlab_pulled", "k8s_applied", "resources_configured",
          "disk_configured", "rollout_completed", "tenant_synced", "completed"]
MESSAGES = dict(MESSAGES, disk_configured="Disk size configured to 10Gi",
                gitlab_pulled=SKIPPED_GITLAB)


def test_create_delivers_each_report_live_and_in_order(sandbox, data_dir):
    sandbox.set_ready_delay(2)  # the rollout holds the run for 2 s after the first reports
    seen = []
    started = time.monotonic()

    def on_report(report):
        listed = [item["report"] for item in es.reports("alice", "search", data_dir)]
        seen.append((time.monotonic(), report, report in listed))

    result = es.create_cluster(request_body(), data_dir, kubeconfig=sandbox.kubeconfig, on_report=on_report)
    ended = time.monotonic()
    assert result.ok and result.status == "completed" and result.operation == "create", result.error
    assert [report["status"] for _t, report, _l in seen] == CREATE
    # live: the first reports came while the run went on (the rollout alone takes 2 s), not at its end
    assert ended - seen[0][0] > 1.5 and seen[0][0] - started < ended - started - 1.5
    assert [t for t, _r, _l in seen] == sorted(t for t, _r, _l in seen)
    # each is the report written to the data folder, already there when it is delivered
    assert [report for _t, report, _l in seen] == [body for _n, body in report_files(data_dir, "alice", "search")]
    assert all(listed for _t, _r, listed in seen)
    assert result.reports == [report for _t, report, _l in seen]
    assert {report["deployment_id"] for report in result.reports} == {result.deployment_id}
    entry = es.get_deployment("alice", "search", data_dir)
    assert entry["status"] == "created" and entry["namespace"] == "es-alice-search"
    assert entry["latest_report"]["report"]["status"] == "completed"
    # the manager's body became the request: cpu and memory "<request>/<limit>", storage the disk
    details = result.reports[0]["details"]
    assert (details["cpu_request"], details["cpu_limit"], details["mem_request"], details["mem_limit"],
            details["disk_size"], details["replicas"]) == ("500m", "2", "1Gi", "2Gi", "10Gi", 1)


def test_a_create_of_a_created_cluster_is_an_update_and_delete_removes_it(sandbox, data_dir):
    opts = dict(kubeconfig=sandbox.kubeconfig)
    with pytest.raises(es.ApiError, match=r"alice/search has no created cluster to update \(its status: none\)"):
        es.update_cluster(request_body(), data_dir, **opts)
    assert not os.path.exists(data_dir)  # refused before anything ran or was written
    assert es.create_cluster(request_body(), data_dir, **opts).ok
    result = es.update_cluster(request_body(replicas=2), data_dir, **opts)
    assert result.ok and result.operation == "update", result.error
    assert result.reports[0]["details"]["changes"] == {"replicas": {"from": 1, "to": 2}}
    again = es.create_cluster(request_body(replicas=2), data_dir, **opts)
    assert again.operation == "update" and again.ok and again.reports[0]["details"]["changes"] == {}

    deleted = es.delete_cluster("alice", "search", data_dir, **opts)
    assert deleted.ok and [r["status"] for r in deleted.reports] == ["deleting", "resources_deleted", "deleted"]
    assert [e["status"] for e in es.list_deployments(data_dir, user="alice")] == ["deleted"]
    assert "es-alice-search" not in {ns["metadata"]["name"] for ns in sandbox.objects("namespaces")}

    gone = es.delete_cluster("nobody", "search", data_dir, **opts)
    assert (gone.ok, gone.status, gone.refused, gone.reports) == (False, "error", True, [])
    assert "no cluster 'search' of user 'nobody'" in gone.error and "nothing to delete" in gone.error


@pytest.mark.parametrize("field, value", [("cpu_request", "500x"), ("user", "../etc"), ("replicas", 0)])
def test_bad_input_is_refused_with_the_playbooks_message_before_anything_runs(sandbox, data_dir, field, value):
    fields = dict(user="alice", service_name="search", namespace="es-alice")
    fields[field] = value
    with pytest.raises(RequestError) as rule:
        validate(fields)
    with pytest.raises(es.ApiError) as refused:
        es.create_cluster(fields, data_dir, kubeconfig=sandbox.kubeconfig)
    assert str(refused.value) == str(rule.value) and refused.value.field == field
    assert not os.path.exists(data_dir) and sandbox.requests() == []

    # ansible-playbook, given the same input, fails at stage 0 with that message
    proc = run_playbook(sandbox.kubeconfig, data_dir, tenant_vars("alice", "search", "es-alice", **{
        "es_" + field: value}))
    assert proc.returncode != 0
    failed = [body for _n, body in report_files(data_dir) if body["status"] == "failed"]
    assert failed and failed[-1]["message"] == "Cluster creation failed at stage metadata: %s" % rule.value


def test_the_managers_body_maps_to_the_request():
    req = es.to_request({"tenant_org_id": "org", "user": "a_b", "service_name": "S.1", "replicas": 3,
                         "cpu": "1", "memory": "512Mi/1Gi", "storage": "20Gi"})
    assert (req["namespace"], req["cpu_request"], req["cpu_limit"], req["mem_request"], req["mem_limit"],
            req["disk_size"], req["replicas"], req["tenant_org_id"]) == (
        "es-a-b-s-1", "1", "1", "512Mi", "1Gi", "20Gi", 3, "org")
    assert es.to_request({"user": "u", "service_name": "s", "namespace": "mine"})["namespace"] == "mine"
    for body, message in (
            ({"user": "u", "service_name": "s", "cpu": "1", "cpu_limit": "2"},
             "cpu: give either cpu or cpu_request and cpu_limit, not both"),
            ({"user": "u", "service_name": "s", "memory": "1Gi/2Gi/3Gi"},
             "memory: must be one quantity or '<request>/<limit>' (got '1Gi/2Gi/3Gi')"),
            ({"user": "u", "service_name": "s", "cpu": "/2"}, "cpu: must be one quantity or '<request>/<limit>'"),
            ({"user": "u", "service_name": "s", "colour": "red"}, "colour: unknown request field"),
            ({"user": "u" * 60, "service_name": "s" * 60}, "namespace: is not given, and the one made from user"),
            ({"service_name": "s"}, "user: must be 1-63 characters"),
            ("not a mapping", "request: must be a mapping")):
        with pytest.raises(es.ApiError) as refused:
            es.to_request(body)
        assert str(refused.value).startswith(message), (body, str(refused.value))


def test_a_failed_run_says_where_and_why_and_a_refusal_is_told_apart(sandbox, data_dir):
    opts = dict(kubeconfig=sandbox.kubeconfig)
    failed = es.create_cluster(request_body(gpu_count=5), data_dir, extra_vars={"es_rollout_timeout": 5}, **opts)
    assert (failed.ok, failed.status, failed.stage, failed.refused) == (False, "failed", "rollout", False)
    assert failed.error.startswith("Cluster creation failed at stage rollout: ") and "nvidia.com/gpu" in failed.error
    assert es.get_deployment("alice", "search", data_dir)["status"] == "failed"

    quota = {"max_clusters_per_user": 5, "max_replicas_per_cluster": 2, "max_cpu_per_user": "64",
             "max_memory_per_user": "256Gi", "max_disk_per_user": "2Ti", "max_gpus_per_user": 8}
    refused = es.create_cluster(request_body(replicas=3), data_dir, extra_vars={"es_quota": quota}, **opts)
    assert (refused.ok, refused.status, refused.stage, refused.refused) == (False, "failed", "metadata", True)
    assert "replicas" in refused.error
    assert es.get_deployment("alice", "search", data_dir)["status"] == "failed"  # as the failed create left it


def test_follow_yields_the_reports_of_a_run_as_they_are_written(sandbox, data_dir):
    sandbox.set_ready_delay(2)
    runs = []
    thread = threading.Thread(target=lambda: runs.append(
        es.create_cluster(request_body(), data_dir, kubeconfig=sandbox.kubeconfig)))
    thread.start()
    try:
        followed = [(item["report"]["status"], thread.is_alive())
                    for item in es.follow("alice", "search", data_dir, timeout=60, interval=0.05)]
    finally:
        thread.join(120)
    assert [status for status, _alive in followed] == CREATE
    assert followed[0][1]  # the first report was read while the run went on
    assert runs[0].ok
    # a deployment followed afterwards is read from its first report to its final one
    again = [item["report"]["status"] for item in es.follow("alice", "search", data_dir,
                                                            deployment_id=runs[0].deployment_id, timeout=5)]
    assert again == CREATE


def readme_recipe(name):
    """The code block of README.md that follows the line ``<!-- recipe: NAME -->``."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    after = text.split("<!-- recipe: %s -->\n" % name, 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


def test_the_readme_python_api_example_runs_as_written(sandbox, tmp_path):
    code = readme_recipe("python-api")
    env = dict(os.environ, KUBECONFIG=sandbox.kubeconfig, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:len(CREATE)] == ["%s - %s" % (status, MESSAGES[status]) for status in CREATE]
    assert lines[len(CREATE)].startswith("completed ") and lines[len(CREATE) + 1] == "created"
    assert [line.split(" ")[1] for line in lines[len(CREATE) + 2:2 * len(CREATE) + 2]] == CREATE
    assert lines[2 * len(CREATE) + 2:] == ["deleting - Deleting cluster", "resources_deleted - Kubernetes resources"
                                           " deleted", "deleted - Cluster deleted successfully"]
    assert os.path.isdir(tmp_path / "es-data" / "deployment_reports")
