"""Hostile input through the real create playbook (issue 10): forged log lines,
refused identities that must write nothing under their raw values, symlinks
planted in the data folder, and the modes of the files it writes."""

import os
import stat

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import reports as reportsmod
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import query
from tests.integration.flow import deployments, find_deployment, log_lines, output, reports, run_playbook, tenant_vars

FORGED_USER = ("victim, Service: vsvc, Namespace: ns-v, Status: completed,"
               " Message: Cluster creation completed successfully")


def test_forged_user_cannot_write_a_line_of_another_tenant(cluster, data_dir):
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars(FORGED_USER, "esvc", "es-forged"))
    assert proc.returncode != 0
    assert "user: must be" in output(proc)
    lines = log_lines(data_dir)
    assert len(lines) == 1
    # no line of the log is (or greps as) a line of victim/vsvc, nor a completed one
    assert not [ln for ln in lines if "User: victim, Service: vsvc," in ln or ", Status: completed," in ln]
    fields = reportsmod.parse_log_line(lines[0])
    assert (fields["user"], fields["service_name"], fields["status"]) == ("_refused", "_refused", "failed")
    assert "(got 'victim, Service: vsvc, " in fields["message"]  # the refusal names the raw value, escaped
    assert reports(data_dir)[0][1]["details"]["refused"]["user"] == FORGED_USER
    answer = query(data_dir, "victim", "vsvc")
    assert answer["deployments"] == [] and answer["reports"] == [] and answer["log_tail"] == []
    assert query(data_dir, "victim")["log_tail"] == [] and query(data_dir, service_name="vsvc")["log_tail"] == []
    assert [e["report"]["status"] for e in query(data_dir, "_refused", "_refused")["reports"]] == ["failed"]
    assert "es-forged" not in cluster.namespace_names()


def test_refused_identity_writes_nothing_under_the_raw_value(cluster, data_dir, tmp_path):
    for user, service in (("../x", "s1"), ("u1", "../s1"), ("a b", "s1")):
        proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars(user, service, "es-bad"))
        assert proc.returncode != 0
    got = reports(data_dir)
    assert [(b["user"], b["service_name"], b["status"]) for _n, b in got] == [("_refused", "_refused", "failed")] * 3
    assert [b["details"]["refused"]["user"] for _n, b in got] == ["../x", "u1", "a b"]
    assert all(n.startswith("_refused__refused_") for n, _b in got)
    assert deployments(data_dir) == {}  # no deployment entry at all
    assert sorted(os.listdir(os.path.join(data_dir, "deployments"))) == ["_refused"]
    assert sorted(os.listdir(data_dir)) == [".lock", "deployment.log", "deployment_reports", "deployments"]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("vars-")] == ["es_data"]
    for user, service in (("../x", "s1"), ("u1", "../s1"), ("a b", "s1")):
        assert query(data_dir, user, service)["reports"] == []
    assert "es-bad" not in cluster.namespace_names()


def _outside(tmp_path):
    target = tmp_path / "outside"
    target.mkdir()
    (target / "file").write_text("keep\n")
    return target


@pytest.mark.parametrize("planted", ["deployment.log", "deployment_reports"])
def test_planted_symlink_is_refused_and_its_target_untouched(cluster, data_dir, tmp_path, planted):
    outside = _outside(tmp_path)
    os.makedirs(data_dir)
    link = os.path.join(data_dir, planted)
    os.symlink(str(outside / "file") if planted.endswith(".log") else str(outside), link)
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("sym_user", "svc", "es-sym"))
    assert proc.returncode != 0
    assert "refused: %s is a symbolic link" % link in output(proc)
    assert sorted(os.listdir(str(outside))) == ["file"] and (outside / "file").read_text() == "keep\n"
    assert os.path.islink(link)
    # stage 1 is refused before anything is created in the cluster
    assert "es-sym" not in cluster.namespace_names()
    assert find_deployment(data_dir, "sym_user", "svc")["status"] == "failed"


def test_files_0600_and_folders_0700(cluster, data_dir):
    old = os.umask(0o002)  # a looser umask than the default: the modes do not depend on it
    try:
        proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("mode_user", "svc", "es-mode"))
    finally:
        os.umask(old)
    assert proc.returncode == 0, output(proc)
    seen = 0
    for folder, _dirs, files in os.walk(data_dir):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o600, name
            seen += 1
    assert seen >= 13  # lock, log, 9 reports, entry, index, claim, tenant record
