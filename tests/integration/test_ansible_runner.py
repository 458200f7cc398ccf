"""The create flow driven the way AWX and Python tools drive it: through
ansible-runner, playbook by FQCN, callback enabled by environment variable
(no ansible.cfg of ours in play)."""

import os

import ansible_runner

from tests.integration.flow import BIN, ROOT, find_deployment, log_lines, reports, tenant_vars
from tests.integration.test_create_flow import CPU_STATUSES

pytest_plugins = ["tests.gitlabsim.pytest_plugin"]


def test_runner_with_fqcn_playbook_and_env_enabled_callback(cluster, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    private = tmp_path / "runner"
    (private / "project").mkdir(parents=True)
    env = {
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "collections"),
        "ANSIBLE_CALLBACKS_ENABLED": "yunpeng.es_serverless.reports",
        "KUBECONFIG": cluster.kubeconfig,
    }
    result = ansible_runner.run(
        private_data_dir=str(private),
        playbook="yunpeng.es_serverless.create_cluster",
        extravars=dict(tenant_vars("runner_user", "svc", "es-runner"), es_data_dir=data_dir),
        envvars=env,
        quiet=True,
    )
    assert result.status == "successful", result.stdout.read()
    got = reports(data_dir, "runner_user", "svc")
    assert [b["status"] for _u, b in got] == CPU_STATUSES
    assert len([ln for ln in log_lines(data_dir) if "User: runner_user," in ln]) == len(CPU_STATUSES)
    assert find_deployment(data_dir, "runner_user", "svc")["status"] == "created"

    # Every report is also visible as a job event (what AWX shows).
    event_reports = [e["event_data"]["res"]["es_report"]["report"]
                     for e in result.events
                     if e.get("event") == "runner_on_ok" and "es_report" in e.get("event_data", {}).get("res", {})]
    assert [r["status"] for r in event_reports] == CPU_STATUSES
    assert event_reports == [b for _u, b in got]


def _text_under(folder):
    out = []
    for root, _dirs, files in os.walk(str(folder)):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                out.append(handle.read().decode("utf-8", "replace"))
    return "".join(out)


def test_runner_with_a_gitlab_token_file_leaks_the_token_nowhere(cluster, data_dir, tmp_path, monkeypatch,
                                                                 gitlab_server):
    """The README's ansible-runner recipe: the token in a file (es_gitlab_token_file), never in
    envvars or extravars, so runner's artifacts (command, env, job events, stdout) never hold it."""
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    private = tmp_path / "runner"
    (private / "project").mkdir(parents=True)
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    token_file = secrets / "gitlab-token"
    token_file.write_text(gitlab_server.token + "\n")
    token_file.chmod(0o600)
    env = {
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "collections"),
        "ANSIBLE_CALLBACKS_ENABLED": "yunpeng.es_serverless.reports",
        "KUBECONFIG": cluster.kubeconfig,
    }
    extravars = dict(tenant_vars("runner_git", "svc", "es-runner-git"), es_data_dir=data_dir,
                     es_gitlab_url=gitlab_server.url, es_gitlab_project="tenants/es-config",
                     es_gitlab_files=["docker-compose.yml"], es_gitlab_token_file=str(token_file))
    result = ansible_runner.run(private_data_dir=str(private), playbook="yunpeng.es_serverless.create_cluster",
                                extravars=extravars, envvars=env, verbosity=3, quiet=True)
    stdout = result.stdout.read()
    assert result.status == "successful", stdout
    got = dict((b["status"], b) for _u, b in reports(data_dir, "runner_git", "svc"))
    assert got["gitlab_pulled"]["message"] == "GitLab resources pulled successfully"
    # the token was used ...
    assert any(r["headers"].get("PRIVATE-TOKEN") == gitlab_server.token for r in gitlab_server.requests)
    # ... and is nowhere else: runner's artifacts and inputs (command, env, job events, -vvv stdout),
    # the reports, the log, the tenant records and the rest of the data folder
    assert '"-vvv"' in _text_under(private / "artifacts") and str(token_file) in _text_under(private / "env")
    for where, text in (("runner folder", _text_under(private)), ("stdout", stdout),
                        ("data folder", _text_under(data_dir)), ("log", "\n".join(log_lines(data_dir)))):
        assert gitlab_server.token not in where + text, where
