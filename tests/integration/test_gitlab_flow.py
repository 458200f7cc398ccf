"""Stage 3 through the real playbook: unmodified python-gitlab against the
GitLab API test server, what is pulled changes the cluster, failures roll back
and the token never leaks."""

import hashlib
import socket

import pytest

from tests.gitlabsim.server import sample_server
from tests.integration.flow import (
    all_files_text,
    expected_log_line,
    find_deployment,
    log_lines,
    output,
    reports,
    run_playbook,
    tenant_record,
    tenant_vars,
    wait_for,
)

pytest_plugins = ["tests.gitlabsim.pytest_plugin"]


def gitlab_vars(server, **extra):
    v = tenant_vars("git_user", "svc", "es-git", es_gitlab_url=server.url, es_gitlab_project="tenants/es-config",
                    es_gitlab_files=["docker-compose.yml", "elasticsearch.yml", "jvm.options"], es_gitlab_dir="k8s")
    v.update(extra)
    return v


def test_pull_changes_the_configmap_and_adds_manifests(cluster, data_dir, gitlab_server):
    proc = run_playbook(cluster.kubeconfig, data_dir, gitlab_vars(gitlab_server),
                        env={"GITLAB_TOKEN": gitlab_server.token}, args=["-v"])
    assert proc.returncode == 0, output(proc)
    got = dict((b["status"], b) for _u, b in reports(data_dir, "git_user", "svc"))
    assert got["completed"]

    pulled = got["gitlab_pulled"]
    assert pulled["message"] == "GitLab resources pulled successfully"
    project = gitlab_server.projects[42]
    main_sha = project.branches["main"]
    assert pulled["details"]["commit"] == main_sha
    files = {f["path"]: f for f in pulled["details"]["files"]}
    assert set(files) == {"docker-compose.yml", "elasticsearch.yml", "jvm.options", "k8s/configmap.yml",
                          "k8s/nested/service.yaml"}
    es_yml = project.commits[main_sha].files["elasticsearch.yml"].content
    es_yml = es_yml.encode() if isinstance(es_yml, str) else es_yml
    assert files["elasticsearch.yml"]["sha256"] == hashlib.sha256(es_yml).hexdigest()
    assert files["elasticsearch.yml"]["size"] == len(es_yml)

    # The tenant's elasticsearch.yml is the ConfigMap's content; ours wins where it must.
    cm = cluster.core.read_namespaced_config_map("elasticsearch-config", "es-git")
    assert "indices.query.bool.max_clause_count: 4096" in cm.data["elasticsearch.yml"]
    assert "cluster.name: svc" in cm.data["elasticsearch.yml"]
    assert "tenant-cluster" not in cm.data["elasticsearch.yml"]
    assert "cluster.name" in got["k8s_applied"]["details"]["config_overridden"]
    assert "-XX:+UseG1GC" in cm.data["jvm.options"] and "-Xmx1024m" in cm.data["jvm.options"]
    assert "-Xmx4g" not in cm.data["jvm.options"]

    # Manifests under k8s/ are applied into the tenant namespace.
    assert cluster.core.read_namespaced_config_map("tenant-extra", "es-git").data == {"a": "b"}
    assert cluster.core.read_namespaced_service("tenant-svc", "es-git").spec.ports[0].port == 80

    record = tenant_record(data_dir, "git_user", "svc")
    assert record["resources"]["gitlab"]["commit"] == main_sha
    assert gitlab_server.token not in all_files_text(data_dir)
    assert gitlab_server.token not in output(proc)
    assert any(r["headers"].get("PRIVATE-TOKEN") == gitlab_server.token for r in gitlab_server.requests)


def test_token_file_with_vvv_leaks_the_token_nowhere(cluster, data_dir, gitlab_server, tmp_path):
    token_file = tmp_path / "gitlab-token"
    token_file.write_text(gitlab_server.token + "\n")
    token_file.chmod(0o600)
    proc = run_playbook(cluster.kubeconfig, data_dir, gitlab_vars(gitlab_server, es_gitlab_token_file=str(token_file)),
                        env={"GITLAB_TOKEN": "glpat-not-this-one-0000"}, args=["-vvv"])
    assert proc.returncode == 0, output(proc)
    assert reports(data_dir, "git_user", "svc")[-1][1]["status"] == "completed"
    # the file's token was sent (it wins over GITLAB_TOKEN) and is nowhere in the output or the data folder
    assert {r["headers"].get("PRIVATE-TOKEN") for r in gitlab_server.requests} == {gitlab_server.token}
    assert gitlab_server.token not in output(proc) and gitlab_server.token not in all_files_text(data_dir)


def test_manifest_for_another_namespace_is_refused(cluster, data_dir, gitlab_server):
    project = gitlab_server.projects[42]
    project.commit({"k8s/evil.yml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: evil\n"
                                    "  namespace: kube-system\ndata: {}\n"}, message="evil")
    proc = run_playbook(cluster.kubeconfig, data_dir, gitlab_vars(gitlab_server, es_gitlab_token=gitlab_server.token))
    assert proc.returncode != 0
    failed = reports(data_dir, "git_user", "svc")[-1][1]
    assert failed["status"] == "failed" and "kube-system" in failed["message"] and "k8s/evil.yml" in failed["message"]
    assert "evil" not in {c.metadata.name for c in cluster.core.list_namespaced_config_map("kube-system").items}


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


FAILURES = {
    "bad_token": (dict(es_gitlab_token="glpat-wrong-token-xyz"), "401"),
    "missing_project": (dict(es_gitlab_project="tenants/nope"), "404"),
    "missing_file": (dict(es_gitlab_files=["docker-compose.yml", "absent.yml"]), "absent.yml"),
    "unreachable": (dict(es_gitlab_url="http://127.0.0.1:%d" % _closed_port()), "127.0.0.1"),
    "timeout": (dict(es_gitlab_timeout=1), "timeout of 1"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_pull_failures_roll_back_without_leaking_the_token(cluster, data_dir, case):
    server = sample_server()
    server.start()
    try:
        if case == "timeout":
            server.delay = 3
        extra, needle = FAILURES[case]
        extra = dict({"es_gitlab_token": server.token}, **extra)
        proc = run_playbook(cluster.kubeconfig, data_dir, gitlab_vars(server, **extra), args=["-vvv"])
    finally:
        server.stop()
    assert proc.returncode != 0
    got = reports(data_dir, "git_user", "svc")
    assert [b["status"] for _u, b in got] == ["starting", "namespace_created", "failed"]
    message = got[-1][1]["message"]
    assert message.startswith("Cluster creation failed at stage gitlab: ")
    assert needle.lower() in message.lower()
    assert (extra.get("es_gitlab_url") or server.url) in message
    assert log_lines(data_dir)[-1] == expected_log_line(got[-1][1])
    assert tenant_record(data_dir, "git_user", "svc") is None
    assert find_deployment(data_dir, "git_user", "svc")["stage"] == "gitlab"
    for token in (server.token, "glpat-wrong-token-xyz"):
        assert token not in all_files_text(data_dir)
        assert token not in output(proc)
    assert wait_for(lambda: "es-git" not in cluster.namespace_names(), timeout=60)
