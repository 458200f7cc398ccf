"""The create flow driven the way AWX and Python tools drive it: through
ansible-runner, playbook by FQCN, callback enabled by environment variable
(no ansible.cfg of ours in play). The README's ansible-runner and AWX recipes
themselves (the GitLab token file) run in tests/entrypoints/test_readme_recipes.py."""

import os

import ansible_runner

from ansible_collections.yunpeng.es_serverless.plugins.plugin_utils.extravars import write_extra_vars
from tests.integration.flow import BIN, ROOT, find_deployment, log_lines, reports, tenant_vars
from tests.integration.test_create_flow import CPU_STATUSES


def test_runner_with_fqcn_playbook_and_env_enabled_callback(cluster, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    private = tmp_path / "runner"
    (private / "project").mkdir(parents=True)
    (private / "env").mkdir()
    # tenant strings as data: env/extravars, every string !unsafe (README: Tenant strings are data)
    write_extra_vars(str(private / "env" / "extravars"),
                     dict(tenant_vars("runner_user", "svc", "es-runner"), es_data_dir=data_dir))
    env = {
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "collections"),
        "ANSIBLE_CALLBACKS_ENABLED": "yunpeng.es_serverless.reports",
        "KUBECONFIG": cluster.kubeconfig,
    }
    result = ansible_runner.run(
        private_data_dir=str(private),
        playbook="yunpeng.es_serverless.create_cluster",
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
