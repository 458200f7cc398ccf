"""module_utils.manifests: tenant manifests confined to the tenant namespace, and the es_manifests module."""

import inspect
import json

import kubernetes.client
import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.manifests import (
    ManifestError,
    is_cluster_scoped,
    load,
    load_objects,
)

from tests import ansible_module

NS = "es-alice"

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  a: b\n"
SERVICE = "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\n  namespace: es-alice\nspec:\n  ports: [{port: 80}]\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_multi_document_yaml_and_json(tmp_path):
    first = write(tmp_path, "k8s/a.yml", "---\n" + CONFIGMAP + "---\n" + SERVICE + "---\n")
    second = write(tmp_path, "k8s/b.json", json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}},
        ]}))
    definitions = load([first, second], NS)
    assert [(d["kind"], d["metadata"]["name"]) for d in definitions] == [
        ("ConfigMap", "extra"), ("Service", "svc"), ("Secret", "s"), ("Deployment", "web")]
    assert all(d["metadata"]["namespace"] == NS for d in definitions)
    assert definitions[0]["data"] == {"a": "b"}
    assert [p for p, _u in load_objects([first, second], NS)] == [first, first, second, second]


def test_empty_documents_skipped(tmp_path):
    path = write(tmp_path, "a.yaml", "---\n---\n" + CONFIGMAP)
    assert len(load([path], NS)) == 1


@pytest.mark.parametrize("kind", ["Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
                                  "PersistentVolume", "StorageClass", "PriorityClass", "Node", "clusterrole"])
def test_cluster_scoped_kinds_refused(tmp_path, kind):
    _refused(tmp_path, kind, "%s/x is cluster-scoped" % kind)


@pytest.mark.parametrize("kind", ["ResourceQuota", "LimitRange", "NetworkPolicy", "networkpolicy"])
def test_guard_rail_kinds_refused(tmp_path, kind):
    _refused(tmp_path, kind, "%s/x is a %s: the tenant namespace's quota" % (kind, kind))


def _refused(tmp_path, kind, why):
    path = write(tmp_path, "k8s/bad.yml", "apiVersion: v1\nkind: %s\nmetadata:\n  name: x\n" % kind)
    with pytest.raises(ManifestError) as info:
        load([path], NS)
    assert path in info.value.message
    assert why in info.value.message


def test_every_cluster_scoped_kind_of_the_kubernetes_api_is_known():
    """Derived from the Kubernetes client (generated from the API's OpenAPI):
    a ``create_<kind>`` without ``namespaced_`` is a cluster-scoped kind."""
    cluster, namespaced = set(), set()
    for name, cls in inspect.getmembers(kubernetes.client, inspect.isclass):
        if not name.endswith("Api"):
            continue
        for method in dir(cls):
            if not method.startswith("create_") or method.endswith("_with_http_info"):
                continue
            rest = method[len("create_"):]
            target = namespaced if rest.startswith("namespaced_") else cluster
            target.add(rest.replace("namespaced_", "", 1).replace("_", ""))
    cluster.discard("clustercustomobject")  # custom objects API, not a kind
    assert len(cluster) > 25
    missing = sorted(k for k in cluster if not is_cluster_scoped(k))
    assert missing == []
    wrongly = sorted(k for k in namespaced if is_cluster_scoped(k))
    assert wrongly == []


def test_other_namespace_refused_with_both_names(tmp_path):
    path = write(tmp_path, "k8s/svc.yml", SERVICE.replace("namespace: es-alice", "namespace: kube-system"))
    with pytest.raises(ManifestError) as info:
        load([path], NS)
    message = info.value.message
    assert path in message and "Service/svc" in message and "'kube-system'" in message and "'es-alice'" in message


@pytest.mark.parametrize("doc, missing", [
    ("kind: ConfigMap\nmetadata: {name: a}\n", "apiVersion"),
    ("apiVersion: v1\nmetadata: {name: a}\n", "kind"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "metadata.name"),
    ("apiVersion: v1\nkind: ConfigMap\n", "metadata.name"),
])
def test_required_fields(tmp_path, doc, missing):
    path = write(tmp_path, "m.yml", doc)
    with pytest.raises(ManifestError, match="has no %s" % missing.replace(".", r"\.")):
        load([path], NS)


@pytest.mark.parametrize("name, text, message", [
    ("list.yml", "- a\n- b\n", "not a mapping"),
    ("bad.yml", "a: [1\n", "not valid YAML"),
    ("bad.json", "{", "not valid JSON"),
    ("notes.txt", "x", "only .yml, .yaml and .json"),
])
def test_bad_files(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(ManifestError) as info:
        load([path], NS)
    assert message in info.value.message and path in info.value.message


def test_reserved_and_duplicates_refused(tmp_path):
    sts = write(tmp_path, "sts.yml", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: elasticsearch}\n")
    with pytest.raises(ManifestError, match="managed by the platform"):
        load([sts], NS, reserved=["StatefulSet/elasticsearch"])
    assert load([sts], NS)[0]["kind"] == "StatefulSet"
    a = write(tmp_path, "a.yml", CONFIGMAP)
    b = write(tmp_path, "b.yml", CONFIGMAP)
    with pytest.raises(ManifestError) as info:
        load([a, b], NS)
    assert "ConfigMap/extra is already defined in %s" % a in info.value.message


def test_bad_namespace_and_symlink(tmp_path):
    path = write(tmp_path, "a.yml", CONFIGMAP)
    with pytest.raises(ManifestError, match="DNS-1123"):
        load([path], "../etc")
    link = tmp_path / "link.yml"
    link.symlink_to(path)
    with pytest.raises(ManifestError, match="symbolic link"):
        load([str(link)], NS)


def run_module(tmp_path, args):
    return ansible_module.run_module(tmp_path, "es_manifests", args)


def test_module(tmp_path):
    a = write(tmp_path, "k8s/a.yml", CONFIGMAP + "---\n" + SERVICE)
    proc, result = run_module(tmp_path, {"paths": [a], "namespace": NS})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["changed"] is False
    assert [d["metadata"] for d in result["definitions"]] == [{"name": "extra", "namespace": NS},
                                                              {"name": "svc", "namespace": NS}]
    assert result["objects"] == [{"path": a, "api_version": "v1", "kind": "ConfigMap", "name": "extra"},
                                 {"path": a, "api_version": "v1", "kind": "Service", "name": "svc"}]
    bad = write(tmp_path, "k8s/ns.yml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: evil}\n")
    proc, result = run_module(tmp_path, {"paths": [a, bad], "namespace": NS})
    assert proc.returncode != 0 and "Namespace/evil is cluster-scoped" in result["msg"]
