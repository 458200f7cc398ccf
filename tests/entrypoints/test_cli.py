"""The es-serverless command on the sandbox cluster: every command with --json and its exit code, --query,
the live progress, watch of a run as it goes. Each call is a subprocess ``python -m es_serverless`` run from
an empty folder with only the worktree on PYTHONPATH, as an installed command would be."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from es_serverless import api
from tests.entrypoints.conftest import ROOT
from tests.waiting import wait_for

CREATE_STATUSES = ["starting", "namespace_created", "gitlab_pulled", "k8s_applied", "resources_configured",
                   "disk_configured", "rollout_completed", "tenant_synced", "completed"]
DELETE_STATUSES = ["deleting", "resources_deleted", "deleted"]
COMMANDS = ["create", "update", "delete", "status", "list", "reports", "log", "watch", "serve"]
# a progress line: seconds since the start, the report's status, its message
PROGRESS_LINE = re.compile(r"^ +(?P<elapsed>[0-9]+\.[0-9])s  (?P<status>[a-z0-9_]+) +(?P<message>.*)$")


def environment(extra=None):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ANSIBLE_", "ES_SERVERLESS_")) and key not in ("KUBECONFIG", "PYTHONPATH")}
    env["PYTHONPATH"] = ROOT
    env.update(extra or {})
    return env


def command(*args):
    return [sys.executable, "-m", "es_serverless"] + [str(arg) for arg in args]


@pytest.fixture
def cwd(tmp_path):
    """An empty folder to run the command from."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    return str(folder)


@pytest.fixture
def es(cwd):
    """Run the command: ``es(*args, env=None) -> CompletedProcess`` (text)."""

    def run(*args, env=None, timeout=180):
        return subprocess.run(command(*args), cwd=cwd, env=environment(env), capture_output=True, text=True,
                              timeout=timeout, check=False)

    return run


def answer(proc, code=0):
    """The JSON document on stdout of a call that exited ``code``."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


class Lines:
    """A process's stderr read line by line as it is written, each line with the time it arrived."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout=180):
        code = self.proc.wait(timeout)
        ended = time.monotonic()
        self.thread.join(10)
        return code, ended

    def progress(self):
        """``[(arrived, elapsed, status, message)]`` of the progress lines."""
        found = []
        for arrived, line in self.lines:
            match = PROGRESS_LINE.match(line)
            if match:
                found.append((arrived, float(match["elapsed"]), match["status"], match["message"]))
        return found


def start(cwd, *args, env=None):
    return subprocess.Popen(command(*args), cwd=cwd, env=environment(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)


def test_help_shows_every_command_the_exit_codes_and_examples(es):
    proc = es("--help")
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert re.search(r"^  %s +\S" % name, proc.stdout, re.M), name
    for code in (0, 1, 2, 3, 4):
        assert re.search(r"^    %d +\S" % code, proc.stdout, re.M), code
    assert "Examples:\n    es-serverless create --user alice --service-name search" in proc.stdout
    for name in COMMANDS:
        proc = es(name, "--help")
        assert proc.returncode == 0, (name, proc.stderr)
        assert re.search(r"^  Examples:\n(    .*\n)*    (ES_SERVERLESS_API_TOKEN=.*\n +)?es-serverless %s " % name,
                         proc.stdout, re.M), (name, proc.stdout)
    assert "--extra-var NAME=VALUE" in es("create", "--help").stdout
    assert "--port" in es("serve", "--help").stdout


def test_refused_before_anything_runs(es, data_dir):
    expected = None
    try:
        api.request_rules.validate({"user": "alice", "service_name": "search", "namespace": "es-alice-search",
                                    "cpu_request": "500x"})
    except api.RequestError as exc:
        expected = str(exc)
    assert expected.startswith("cpu_request: must be a Kubernetes quantity")
    for extra in ([], ["--json"]):
        proc = es("create", "--user", "alice", "--service-name", "search", "--cpu-request", "500x",
                  "--data-dir", data_dir, *extra)
        assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "Error: %s\n" % expected)
    proc = es("create", "--user", "alice", "--service-name", "search", "-e", "es_replicas=3", "--data-dir", data_dir)
    assert (proc.returncode, proc.stderr) == (2, "Error: es_replicas: is a request field: give it as --replicas\n")
    proc = es("create", "--user", "alice", "--service-name", "search", "-e", "es_rollout_timeout=soon",
              "--data-dir", data_dir)
    assert (proc.returncode, proc.stderr) == (2, "Error: es_rollout_timeout: must be an integer (got 'soon')\n")
    proc = es("create", "--user", "alice", "--cpu", "1/2", "--cpu-limit", "2", "--data-dir", data_dir)
    assert (proc.returncode, proc.stderr) == (2, "Error: cpu: give either cpu or cpu_request and cpu_limit, not both\n")
    proc = es("create", "--user", "alice", "--no-such-option", "--data-dir", data_dir)  # click's usage error
    assert proc.returncode == 2 and "Error: No such option '--no-such-option'" in proc.stderr
    proc = es("create", "--user", "alice", "--service-name", "search", "--data-dir", data_dir, "--query", "[status")
    assert (proc.returncode, proc.stdout) == (4, "")
    assert proc.stderr == ("Error: query: invalid JMESPath expression '[status': "
                           "Invalid jmespath expression: Incomplete expression\n")
    for args in (["status", "alice", "search"], ["reports", "alice", "search"], ["watch", "alice", "search"],
                 ["delete", "alice", "search"], ["log", "--user", "alice"],
                 ["update", "--user", "alice", "--service-name", "search", "--replicas", "2"]):
        proc = es(*args, "--data-dir", data_dir, "--json")
        assert (proc.returncode, proc.stdout) == (3, ""), (args, proc.stderr)
        assert re.match(r"^Error: no [a-z ]+ of user 'alice'", proc.stderr), (args, proc.stderr)
    assert answer(es("list", "--data-dir", data_dir, "--json")) == []
    assert not os.path.exists(data_dir)
    broken = os.path.join(os.path.dirname(data_dir), "broken")
    os.makedirs(broken)
    with open(os.path.join(broken, "deployments.json"), "w") as handle:
        handle.write("{not json")
    proc = es("list", "--data-dir", broken, "--json")
    assert (proc.returncode, proc.stdout) == (4, "")
    assert proc.stderr.startswith("Error: cannot read the data folder %s: " % broken)
    assert "not valid JSON" in proc.stderr


def test_create_query_update_delete(es, sandbox, data_dir):
    kube = ["--kubeconfig", sandbox.kubeconfig, "--data-dir", data_dir]
    started = time.monotonic()
    proc = es("create", "--user", "alice", "--service-name", "search", "--cpu-limit", "3", *kube, "--json")
    created = answer(proc)
    assert proc.stderr == ""  # no progress with --json
    assert [report["status"] for report in created["reports"]] == CREATE_STATUSES
    assert (created["operation"], created["status"], created["ok"], created["refused"], created["rc"]) == (
        "create", "completed", True, False, 0)
    deployment = created["deployment_id"]
    assert deployment and all(report["deployment_id"] == deployment for report in created["reports"])

    status = answer(es("status", "alice", "search", "--data-dir", data_dir, "--json"))
    assert (status["status"], status["deployment_id"], status["namespace"]) == ("created", deployment,
                                                                                "es-alice-search")
    assert status["request"]["cpu_limit"] == "3" and status["latest_report"]["report"]["status"] == "completed"
    assert answer(es("status", "alice", "search", "--data-dir", data_dir, "--query",
                     "[status, latest_report.report.status]")) == ["created", "completed"]
    listed = answer(es("list", "--data-dir", data_dir, "--json"))
    assert [(entry["user"], entry["service_name"], entry["status"]) for entry in listed] == [
        ("alice", "search", "created")]
    assert answer(es("list", "--user", "alice", "--data-dir", data_dir, "--query", "[].service_name")) == ["search"]
    assert answer(es("list", "--user", "nobody", "--data-dir", data_dir, "--json")) == []
    found = answer(es("reports", "alice", "search", "--data-dir", data_dir, "--json"))
    assert [item["report"]["status"] for item in found] == CREATE_STATUSES
    assert all(os.path.isfile(item["path"]) for item in found)
    assert answer(es("reports", "alice", "search", "--deployment-id", deployment, "--data-dir", data_dir, "--query",
                     "[].report.status")) == CREATE_STATUSES
    proc = es("reports", "alice", "search", "--deployment-id", "nope", "--data-dir", data_dir, "--json")
    assert (proc.returncode, proc.stdout) == (3, "")
    lines = answer(es("log", "--user", "alice", "--service-name", "search", "-n", "3", "--data-dir", data_dir,
                      "--json"))
    assert len(lines) == 3 and lines[-1].endswith(
        "User: alice, Service: search, Namespace: es-alice-search, Status: completed,"
        " Message: Cluster creation completed successfully")
    assert answer(es("log", "--data-dir", data_dir, "--query", "length(@)")) == len(CREATE_STATUSES)
    watched = answer(es("watch", "alice", "search", "--data-dir", data_dir, "--json"))  # a finished deployment
    assert (watched["status"], watched["ok"], watched["deployment_id"]) == ("completed", True, deployment)
    assert [report["status"] for report in watched["reports"]] == CREATE_STATUSES
    assert answer(es("watch", "alice", "search", "--data-dir", data_dir, "--query", "[operation, status]")) == [
        "create", "completed"]
    # an expression that cannot apply to the answer: exit 4, nothing on stdout
    proc = es("status", "alice", "search", "--data-dir", data_dir, "--query", "abs(status)")
    assert (proc.returncode, proc.stdout) == (4, "")
    assert proc.stderr.startswith("Error: query: cannot apply JMESPath expression 'abs(status)': In function abs()")

    # update: only the fields given change
    updated = answer(es("update", "--user", "alice", "--service-name", "search", "--replicas", "2", *kube, "--json"))
    assert (updated["operation"], updated["status"], updated["ok"]) == ("update", "completed", True)
    assert updated["reports"][0]["details"]["changes"] == {"replicas": {"from": 1, "to": 2}}
    request = answer(es("status", "alice", "search", "--data-dir", data_dir, "--query", "request"))
    assert (request["replicas"], request["cpu_limit"]) == (2, "3")

    deleted = answer(es("delete", "alice", "search", *kube, "--json"))
    assert (deleted["operation"], deleted["status"], deleted["ok"]) == ("delete", "deleted", True)
    assert [report["status"] for report in deleted["reports"]] == DELETE_STATUSES
    assert answer(es("status", "alice", "search", "--data-dir", data_dir, "--query", "status")) == "deleted"
    # a second delete is refused at stage 0 by the playbook: exit 2, the run's result on stdout
    again = answer(es("delete", "alice", "search", *kube, "--json"), code=2)
    assert (again["status"], again["refused"], again["stage"]) == ("failed", True, "delete_metadata")
    assert "was already deleted" in again["error"]
    print("create, queries, update, delete: %.1fs" % (time.monotonic() - started))


def test_failing_create_progress_and_json(cwd, es, sandbox, data_dir):
    """The progress shows each stage as it arrives with the seconds since the start, then the failing stage
    and its reason; --json has them in the run's result."""
    kube = ["--kubeconfig", sandbox.kubeconfig, "--data-dir", data_dir]
    begun = time.monotonic()
    proc = start(cwd, "create", "--user", "alice", "--service-name", "gpu", "--gpu-count", "5",
                 "-e", "es_rollout_timeout=5", *kube)
    stderr = Lines(proc)
    code, ended = stderr.wait()
    text = "\n".join(line for _at, line in stderr.lines)
    assert code == 1, text
    assert proc.stdout.read() == ""
    progress = stderr.progress()
    assert [status for _at, _elapsed, status, _message in progress] == CREATE_STATUSES[:6] + [
        "gpu_configured", "failed"], text
    # live: the first report was on the screen seconds before the run ended, and the elapsed times grow
    assert progress[0][0] < ended - 1.0, text
    elapsed = [seconds for _at, seconds, _status, _message in progress]
    assert elapsed == sorted(elapsed) and 1.0 <= elapsed[-1] <= ended - begun, text
    failed = progress[-1][3]
    assert failed.startswith("Cluster creation failed at stage rollout: pod es-alice-gpu/elasticsearch-0"), text
    assert "Insufficient nvidia.com/gpu" in failed
    last = stderr.lines[-1][1]
    assert re.match(r"^create of alice/gpu failed at stage rollout after [0-9.]+s \(what it did was rolled back\):"
                    r" pod es-alice-gpu/elasticsearch-0 .*Insufficient nvidia\.com/gpu", last), text

    result = answer(es("create", "--user", "alice", "--service-name", "gpu2", "--gpu-count", "5",
                       "-e", "es_rollout_timeout=5", *kube, "--json"), code=1)
    assert (result["status"], result["ok"], result["refused"], result["stage"]) == ("failed", False, False, "rollout")
    assert result["error"].startswith("Cluster creation failed at stage rollout: ")
    assert "Insufficient nvidia.com/gpu" in result["error"]
    assert result["reports"][-1]["details"]["stage"] == "rollout"
    assert answer(es("status", "alice", "gpu2", "--data-dir", data_dir, "--query", "[status, stage]")) == [
        "failed", "rollout"]


def test_watch_follows_a_run_as_it_goes(cwd, sandbox, data_dir):
    # the create takes the cluster from KUBECONFIG, as the playbook does
    creating = start(cwd, "create", "--user", "alice", "--service-name", "live", "--data-dir", data_dir, "--json",
                     env={"KUBECONFIG": sandbox.kubeconfig})
    # watch from the second report on: it shows the run from its first report all the same
    deadline = time.monotonic() + 60
    while len(api.reports("alice", "live", data_dir)) < 2:
        assert time.monotonic() < deadline and creating.poll() is None, creating.communicate()
        time.sleep(0.05)
    human = start(cwd, "watch", "alice", "live", "--data-dir", data_dir, "--timeout", "120")
    as_json = start(cwd, "watch", "alice", "live", "--data-dir", data_dir, "--json", "--timeout", "120")
    human_lines = Lines(human)
    out, err = creating.communicate(timeout=120)
    created_at = time.monotonic()
    created = json.loads(out)
    assert (creating.returncode, created["status"]) == (0, "completed"), err
    code, _ended = human_lines.wait()
    text = "\n".join(line for _at, line in human_lines.lines)
    assert code == 0, text
    progress = human_lines.progress()
    assert [status for _at, _elapsed, status, _message in progress] == CREATE_STATUSES, text
    # shown while the create was still running: the reports written so far at once, the others as they came
    assert progress[0][0] < created_at - 1.0 and progress[-1][0] - progress[0][0] > 1.0, text
    assert progress[0][1] == 0.0 and progress[-1][1] > 1.0, text
    assert human_lines.lines[0][1] == "watch alice/live, deployment %s" % created["deployment_id"]
    assert human_lines.lines[-1][1].startswith("create of alice/live: completed in ")
    out, err = as_json.communicate(timeout=60)
    assert as_json.returncode == 0, err
    watched = json.loads(out)
    assert (watched["deployment_id"], watched["status"], watched["ok"], watched["operation"]) == (
        created["deployment_id"], "completed", True, "create")
    assert watched["reports"] == created["reports"]


def test_serve_starts_the_http_api_and_needs_its_token(cwd, es, sandbox, data_dir):
    refused = es("serve", "--port", "8080", "--data-dir", data_dir)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "ES_SERVERLESS_API_TOKEN: " in refused.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "cli-serve-token"
    proc = start(cwd, "serve", "--port", port, "--data-dir", data_dir, "--kubeconfig", sandbox.kubeconfig,
                 env={"ES_SERVERLESS_API_TOKEN": token})
    try:
        url = "http://127.0.0.1:%d" % port

        def health():
            try:
                return httpx.get(url + "/health", timeout=2).text == "ok"
            except httpx.TransportError:
                return proc.poll() is not None
        wait_for(health, timeout=60, what="GET /health answered ok")
        assert proc.poll() is None, proc.stderr.read()
        assert httpx.get(url + "/deployments", timeout=10).status_code == 401
        listed = httpx.get(url + "/deployments", headers={"Authorization": "Bearer " + token}, timeout=10)
        assert (listed.status_code, listed.json()) == (200, [])
    finally:
        proc.terminate()
        proc.wait(60)
