"""The reports callback and the modules, through real ansible-playbook runs."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, "collections")
PLAYBOOK_BIN = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")

REQUEST_VARS = textwrap.dedent("""\
    es_user: test_user
    es_service_name: test_service
    es_namespace: es-test
""")


def run_playbook(tmp_path, body, callback=True, extra_env=None):
    play = tmp_path / "play.yml"
    play.write_text(body)
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("ANSIBLE_") or key == "ES_SERVERLESS_REPORTS_CALLBACK":
            del env[key]
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS,
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / ".ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / ".ansible-remote"),
        "ANSIBLE_HOME": str(tmp_path / ".ansible-home"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),
    })
    if callback:
        env["ANSIBLE_CALLBACKS_ENABLED"] = "yunpeng.es_serverless.reports"
    env.update(extra_env or {})
    proc = subprocess.run(
        [PLAYBOOK_BIN, "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable,
         str(play)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=240, check=False)
    return proc


def report_files(data_dir):
    directory = os.path.join(data_dir, "deployment_reports")
    if not os.path.isdir(directory):
        return []
    return sorted(os.listdir(directory))


FLOW = textwrap.dedent("""\
    - hosts: all
      gather_facts: false
      vars:
        data_dir: "{data_dir}"
        log_file: "{log_file}"
      module_defaults:
        yunpeng.es_serverless.es_report:
          deployment_id: dep-1
          data_dir: "{{{{ data_dir }}}}"
          log_file: "{{{{ log_file }}}}"
      tasks:
        - name: The callback announces itself before anything is created
          ansible.builtin.assert:
            that: lookup('ansible.builtin.env', 'ES_SERVERLESS_REPORTS_CALLBACK') == 'enabled'

        - name: Refused request
          yunpeng.es_serverless.es_request:
            user: "../../etc"
            service_name: svc
            namespace: es-test
          register: bad
          ignore_errors: true

        - name: Refused request result
          ansible.builtin.assert:
            that:
              - bad is failed
              - bad.field == 'user'
              - bad.msg is match("user. must be 1-63 characters")

        - name: Refused boolean replicas
          yunpeng.es_serverless.es_request:
            user: test_user
            service_name: test_service
            namespace: es-test
            replicas: true
          register: bad_bool
          ignore_errors: true

        - name: Refused boolean result
          ansible.builtin.assert:
            that:
              - bad_bool is failed
              - bad_bool.field == 'replicas'

        - name: Validate
          yunpeng.es_serverless.es_request:
            user: test_user
            service_name: test_service
            namespace: es-test
            replicas: "{{{{ '2' }}}}"
            gpu_count: 2
          register: req

        - name: Validated shape
          ansible.builtin.assert:
            that:
              - req.request.replicas == 2
              - req.request.cpu_request == '500m'
              - req.record.cpu == '500m/2'

        - name: Begin
          yunpeng.es_serverless.es_tenant_meta:
            data_dir: "{{{{ data_dir }}}}"
            state: begin
            request: "{{{{ req.request }}}}"
            deployment_id: dep-1
          register: begun

        - name: Second begin refused
          yunpeng.es_serverless.es_tenant_meta:
            data_dir: "{{{{ data_dir }}}}"
            state: begin
            request: "{{{{ req.request }}}}"
            deployment_id: dep-2
          register: second
          ignore_errors: true

        - name: Begin results
          ansible.builtin.assert:
            that:
              - begun is changed
              - begun.record.status == 'creating'
              - begun.deployment.status == 'creating'
              - second is failed
              - "'already being created by deployment dep-1' in second.msg"

        - name: Report starting
          yunpeng.es_serverless.es_report:
            status: starting
            request: "{{{{ req.request }}}}"

        - name: Report gitlab skipped
          yunpeng.es_serverless.es_report:
            status: gitlab_pulled
            report_message: "GitLab pull skipped: no GitLab URL configured"
            request: "{{{{ req.request }}}}"

        - name: Report k8s with secret details
          yunpeng.es_serverless.es_report:
            status: k8s_applied
            request: "{{{{ req.request }}}}"
            details:
              objects: [StatefulSet/elasticsearch]
              elastic_password: hunter2-secret-value
          register: k8s_report

        - name: Secret is not in the module result
          ansible.builtin.assert:
            that:
              - "'elastic_password' not in k8s_report.es_report.report.details"
              - k8s_report is not changed

        - name: Report disk
          yunpeng.es_serverless.es_report:
            status: disk_configured
            request: "{{{{ req.request }}}}"

        - name: Report gpu
          yunpeng.es_serverless.es_report:
            status: gpu_configured
            request: "{{{{ req.request }}}}"

        - name: A check-mode report is not written
          yunpeng.es_serverless.es_report:
            status: rollout_completed
            request: "{{{{ req.request }}}}"
          check_mode: true

        - name: Sync
          yunpeng.es_serverless.es_tenant_meta:
            data_dir: "{{{{ data_dir }}}}"
            state: sync
            request: "{{{{ req.request }}}}"
            deployment_id: dep-1
            resources:
              images: {{elasticsearch: "elasticsearch:8.15.3"}}

        - name: Complete
          yunpeng.es_serverless.es_tenant_meta:
            data_dir: "{{{{ data_dir }}}}"
            state: complete
            request: "{{{{ req.request }}}}"
            deployment_id: dep-1
          register: done

        - name: Report completed
          yunpeng.es_serverless.es_report:
            status: completed
            request: "{{{{ req.request }}}}"

        - name: Failed report of an invalid identity, one per loop item
          yunpeng.es_serverless.es_report:
            status: failed
            stage: metadata
            error: "{{{{ item }}}}"
            deployment_id: dep-9
            request:
              user: "../../etc"
              service_name: "x"
              namespace: "es-test"
          loop: ["user: bad", "second\\nline"]

        - name: Where is my cluster
          yunpeng.es_serverless.es_deployment_info:
            data_dir: "{{{{ data_dir }}}}"
            log_file: "{{{{ log_file }}}}"
            user: test_user
            service_name: test_service
            log_lines: 3
          register: info

        - name: Info results
          ansible.builtin.assert:
            that:
              - done.record.status == 'created'
              - done.deployment.status == 'created'
              - info.deployments | length == 1
              - info.deployments[0].status == 'created'
              - info.tenant.sync_time is defined
              - info.tenant.resources.images.elasticsearch == 'elasticsearch:8.15.3'
              - info.reports | map(attribute='report.status') | list == ['starting', 'gitlab_pulled', 'k8s_applied',
                'disk_configured', 'gpu_configured', 'completed']
              - info.latest_report.report.status == 'completed'
              - info.log_tail | length == 3
              - info.log_tail[-1] is search('Status. completed, Message. Cluster creation completed successfully$')
""")


def test_playbook_writes_reports_through_callback(tmp_path):
    data_dir = str(tmp_path / "data")
    log_file = str(tmp_path / "logs" / "deployment.log")
    proc = run_playbook(tmp_path, FLOW.format(data_dir=data_dir, log_file=log_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "could not write report" not in proc.stdout + proc.stderr

    names = report_files(data_dir)
    bodies = [json.loads(open(os.path.join(data_dir, "deployment_reports", n)).read()) for n in names]
    mine = [b for b in bodies if b["user"] == "test_user"]
    assert [b["status"] for b in mine] == ["starting", "gitlab_pulled", "k8s_applied", "disk_configured",
                                           "gpu_configured", "completed"]
    assert [b["message"] for b in mine] == [
        "Starting cluster creation", "GitLab pull skipped: no GitLab URL configured",
        "Kubernetes resources applied successfully", "Disk size configured to 10Gi", "GPU count configured to 2",
        "Cluster creation completed successfully"]
    assert all(n.startswith("test_user_test_service_") for n in names if "_refused_" not in n)
    assert {b["deployment_id"] for b in mine} == {"dep-1"}
    assert mine[0]["details"]["replicas"] == 2 and mine[-1]["details"]["gpu_count"] == 2
    assert mine[2]["details"] == {"objects": ["StatefulSet/elasticsearch"]}

    failed = [b for b in bodies if b["status"] == "failed"]
    assert [b["message"] for b in failed] == ["Cluster creation failed at stage metadata: user: bad",
                                              "Cluster creation failed at stage metadata: second\nline"]
    # refused identity: the refused pair's reports, the raw values only in details
    assert all((b["user"], b["service_name"]) == ("_refused", "_refused") for b in failed)
    assert all(b["details"]["refused"] == {"user": "../../etc", "service_name": "x", "namespace": "es-test"}
               for b in failed)
    assert len([n for n in names if n.startswith("_refused__refused_")]) == 2
    assert not [n for n in names if "etc" in n]
    for folder in (tmp_path, tmp_path / "data", tmp_path.parent):
        assert not [n for n in os.listdir(str(folder)) if n.startswith("etc")]

    lines = open(log_file).read().splitlines()
    assert len(lines) == 8
    assert lines[0].endswith(" - User: test_user, Service: test_service, Namespace: es-test, Status: starting,"
                             " Message: Starting cluster creation")
    assert lines[-1].endswith("Status: failed, Message: Cluster creation failed at stage metadata: second%0Aline")

    everything = proc.stdout + proc.stderr + open(log_file).read() + "".join(json.dumps(b) for b in bodies)
    assert "hunter2-secret-value" not in "".join(json.dumps(b) for b in bodies) + open(log_file).read()
    assert "hunter2" not in everything.replace("elastic_password: hunter2-secret-value", "")

    record = json.load(open(os.path.join(data_dir, "tenant_data", "test_user_test_service.json")))
    assert record["status"] == "created"
    assert record["resources"] == {"images": {"elasticsearch": "elasticsearch:8.15.3"}}

    # the callback writes through the store: every report is listed in its pair's index
    def index(user_part, service_part):
        with open(os.path.join(data_dir, "deployments", user_part, service_part + ".reports")) as handle:
            return handle.read().splitlines()

    assert index("test_user", "test_service") == [n for n in names if n.startswith("test_user_test_service_")]
    assert index("_refused", "_refused") == [n for n in names if n.startswith("_refused__refused_")]
    assert sorted(os.listdir(os.path.join(data_dir, "deployments"))) == ["_refused", "test_user"]
    assert sorted(os.listdir(data_dir)) == [".lock", "deployment_reports", "deployments", "namespaces", "tenant_data"]


def test_without_callback_nothing_is_written(tmp_path):
    data_dir = str(tmp_path / "data")
    body = textwrap.dedent("""\
        - hosts: all
          gather_facts: false
          tasks:
            - name: The flag is absent
              ansible.builtin.assert:
                that: lookup('ansible.builtin.env', 'ES_SERVERLESS_REPORTS_CALLBACK') | length == 0
            - name: Report
              yunpeng.es_serverless.es_report:
                status: namespace_created
                deployment_id: d
                data_dir: "%s"
                request: {user: u, service_name: s, namespace: n}
    """) % data_dir
    proc = run_playbook(tmp_path, body, callback=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report_files(data_dir) == []
    assert not os.path.exists(os.path.join(data_dir, "deployment.log"))


def test_write_failure_is_reported_loudly(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data folder should be")
    body = textwrap.dedent("""\
        - hosts: all
          gather_facts: false
          tasks:
            - name: Report into an impossible folder
              yunpeng.es_serverless.es_report:
                status: namespace_created
                deployment_id: d
                data_dir: "%s"
                request: {user: u, service_name: s, namespace: n}
    """) % str(blocker / "data")
    proc = run_playbook(tmp_path, body)
    output = proc.stdout + proc.stderr
    assert "yunpeng.es_serverless.reports: could not write report" in output
    assert "Status: namespace_created" in output
    assert "1 report(s) could not be written" in output


@pytest.mark.parametrize("status,extra,error", [
    ("starting", "", "missing replicas"),
    ("failed", "", "status is failed but all of the following are missing: stage, error"),
    ("bogus", "", "value of status must be one of"),
])
def test_es_report_refuses_bad_input(tmp_path, status, extra, error):
    body = textwrap.dedent("""\
        - hosts: all
          gather_facts: false
          tasks:
            - name: Report
              yunpeng.es_serverless.es_report:
                status: %s
                deployment_id: d
                data_dir: "%s"
                request: {user: u, service_name: s, namespace: n}
    """) % (status, str(tmp_path / "data"))
    proc = run_playbook(tmp_path, body)
    assert proc.returncode != 0
    assert error in proc.stdout + proc.stderr
    assert report_files(str(tmp_path / "data")) == []
