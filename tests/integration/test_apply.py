"""Server-side apply of a list of objects in one call (module_utils/apply.py, the es_apply module),
against the cluster fixture (the real control plane by default)."""

import json

import pytest
from kubernetes.client.rest import ApiException

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.apply import (
    FIELD_MANAGER,
    ApplyError,
    apply_objects,
)
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import client_from_params


def config_map(name, **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


@pytest.fixture
def api(cluster):
    return client_from_params({"kubeconfig": cluster.kubeconfig})


@pytest.fixture
def namespace(cluster, request):
    name = "es-apply-%s" % request.node.name.replace("_", "-")[5:40].strip("-")
    cluster.core.create_namespace({"metadata": {"name": name}})
    yield name
    cluster.core.delete_namespace(name)


def test_created_is_what_the_server_says(cluster, api, namespace):
    first = apply_objects(api, [config_map("a", x="1")], namespace)
    assert [e["ref"] for e in first] == [{"kind": "ConfigMap", "api_version": "v1", "name": "a",
                                          "namespace": namespace, "created": True}]
    again = apply_objects(api, [config_map("a", x="2"), config_map("b", y="1")], namespace)
    assert [(e["ref"]["name"], e["ref"]["created"], e["changed"]) for e in again] == [
        ("a", False, True), ("b", True, True)]
    live = cluster.core.read_namespaced_config_map("a", namespace)
    assert live.data == {"x": "2"}
    assert [m.manager for m in live.metadata.managed_fields] == [FIELD_MANAGER]
    assert again[0]["object"]["data"] == {"x": "2"}  # the server's answer comes back


def test_a_cluster_scoped_namespace_reports_whether_it_existed(cluster, api):
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "es-apply-scoped", "labels": {"a": "b"}}}
    try:
        assert apply_objects(api, [ns])[0]["ref"]["created"] is True
        assert apply_objects(api, [ns])[0]["ref"]["created"] is False
        assert cluster.core.read_namespace("es-apply-scoped").metadata.labels["a"] == "b"
    finally:
        cluster.core.delete_namespace("es-apply-scoped")


def test_create_only_keeps_an_existing_object(cluster, api, namespace):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "first"}}
    assert apply_objects(api, [secret], namespace, create_only=True)[0]["ref"]["created"] is True
    second = apply_objects(api, [dict(secret, stringData={"k": "second"})], namespace, create_only=True)
    assert second[0]["ref"]["created"] is False and second[0]["changed"] is False
    assert "stringData" not in second[0]["object"] and "data" not in second[0]["object"]
    data = cluster.core.read_namespaced_secret("s", namespace).data
    assert data == {"k": "Zmlyc3Q="}  # base64 of "first"


def test_a_failure_part_way_names_what_was_created_before_it(cluster, api, namespace):
    bad = config_map("bad_name")
    with pytest.raises(ApplyError) as failed:
        apply_objects(api, [config_map("before"), bad, config_map("after")], namespace)
    assert failed.value.message.startswith("cannot apply ConfigMap/bad_name in namespace %s: 422" % namespace)
    assert "Invalid value" in failed.value.message  # the API server's own words
    assert [(e["ref"]["name"], e["ref"]["created"]) for e in failed.value.applied] == [("before", True)]
    with pytest.raises(ApiException):
        cluster.core.read_namespaced_config_map("after", namespace)


def test_a_secret_error_carries_only_the_status(api, namespace):
    # The API server may echo a request body in its message; for a Secret only the status is kept.
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad_name"},
              "stringData": {"password": "do-not-echo-me"}}
    for create_only in (False, True):
        with pytest.raises(ApplyError) as failed:
            apply_objects(api, [secret], namespace, create_only=create_only)
        assert failed.value.message == ("cannot apply Secret/bad_name in namespace %s: 422 Unprocessable Entity"
                                        % namespace)


def test_other_kinds_are_discovered_once_per_group_version(cluster, api, namespace):
    def job(name):
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "c", "image": "busybox"}]}}}}
    applied = apply_objects(api, [job("j1"), job("j2")], namespace)
    assert [(e["ref"]["kind"], e["ref"]["created"]) for e in applied] == [("Job", True), ("Job", True)]
    if cluster.sim is not None:
        discovery = [r for r in cluster.sim.requests() if r["path"] == "/apis/batch/v1"]
        assert len(discovery) == 1
    with pytest.raises(ApplyError) as failed:
        apply_objects(api, [{"apiVersion": "v1", "kind": "NoSuchKind", "metadata": {"name": "x"}}], namespace)
    assert "does not serve kind NoSuchKind in apiVersion v1" in failed.value.message
    with pytest.raises(ApplyError) as failed:
        apply_objects(api, [{"apiVersion": "no.such/v9", "kind": "X", "metadata": {"name": "x"}}], namespace)
    assert "does not serve apiVersion no.such/v9" in failed.value.message


def test_check_mode_is_a_dry_run_and_previews_a_missing_namespace(cluster, api, namespace):
    preview = apply_objects(api, [config_map("dry")], namespace, check_mode=True)
    assert preview[0]["ref"]["created"] is True
    with pytest.raises(ApiException):
        cluster.core.read_namespaced_config_map("dry", namespace)
    ahead = apply_objects(api, [config_map("dry")], "es-apply-not-yet", check_mode=True)
    assert ahead[0]["ref"] == {"kind": "ConfigMap", "api_version": "v1", "name": "dry",
                               "namespace": "es-apply-not-yet", "created": True}


def test_one_request_per_object_and_no_discovery_for_stable_kinds(sim_cluster):
    api = client_from_params({"kubeconfig": sim_cluster.kubeconfig})
    before = len(sim_cluster.sim.requests())
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "es-apply-count"}},
               config_map("a"), config_map("b"),
               {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"a": "b"}},
                         "template": {"metadata": {"labels": {"a": "b"}},
                                      "spec": {"containers": [{"name": "c", "image": "i"}]}}}}]
    apply_objects(api, objects, "es-apply-count")
    sent = sim_cluster.sim.requests()[before:]
    assert [(r["method"], r["path"]) for r in sent] == [
        ("PATCH", "/api/v1/namespaces/es-apply-count"),
        ("PATCH", "/api/v1/namespaces/es-apply-count/configmaps/a"),
        ("PATCH", "/api/v1/namespaces/es-apply-count/configmaps/b"),
        ("PATCH", "/apis/apps/v1/namespaces/es-apply-count/deployments/d"),
    ]
    assert all("fieldManager=%s" % FIELD_MANAGER in r["query"] for r in sent)
    assert json.dumps(sent).count("apply-patch") == 4
