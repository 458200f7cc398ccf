"""The API server over raw HTTPS: auth, discovery, metadata, errors,
validation, patches, server-side apply, watch, namespaces, GC, subresources.

Tests that take ``k8s`` run on both clusters (the simulator and the real
control plane, see ``clusters.py``); those that take ``sim`` or
``kubesim_factory`` are simulator-only, each saying why: they read the
simulator's store or request log, inject faults or latency, or check its
own settings and modes."""

import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.waiting import wait_for
from tests.kubesim.fixture import KubeSim

from tests.controlplane import build

pytest_plugins = ["tests.kubesim.pytest_plugin", "tests.kubesim_tests.clusters"]

STS_PATH = "/apis/apps/v1/namespaces/%s/statefulsets"


def ns_obj(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def sts_obj(name="elasticsearch", ns="es1", replicas=1, gpu=None):
    resources = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    if gpu:
        resources["limits"]["nvidia.com/gpu"] = gpu[1]
        if gpu[0] is not None:
            resources["requests"]["nvidia.com/gpu"] = gpu[0]
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "es"}},
        "spec": {
            "serviceName": name, "replicas": replicas,
            "selector": {"matchLabels": {"app": "es"}},
            "template": {"metadata": {"labels": {"app": "es"}}, "spec": {"containers": [
                {"name": "elasticsearch", "image": "elasticsearch:8.15.0", "resources": resources,
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"name": "http", "containerPort": 9200}]},
                {"name": "sidecar", "image": "busybox:1.36"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}}],
        },
    }


def cm_obj(name, ns="es1", data=None, owner=None):
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
           "data": data or {"k": "v"}}
    if owner:
        obj["metadata"]["ownerReferences"] = [owner]
    return obj


@pytest.fixture
def sim(kubesim_factory):
    """Simulator-only tests: a simulator with namespace es1."""
    s = kubesim_factory(ready_delay=0.1)
    status, _u, _u = s.call("POST", "/api/v1/namespaces", ns_obj("es1"))
    assert status == 201
    return s


@pytest.fixture
def ns(k8s):
    """A namespace of this test's own, settled: its default ServiceAccount (which
    pods need) and the ``kube-root-ca.crt`` ConfigMap (which would otherwise
    show up in the middle of a test's lists and watches) exist."""
    name = k8s.unique("es")
    status, body, _u = k8s.call("POST", "/api/v1/namespaces", ns_obj(name))
    assert status == 201, body
    for path in ("serviceaccounts/default", "configmaps/kube-root-ca.crt"):
        wait_for(lambda path=path: k8s.call("GET", "/api/v1/namespaces/%s/%s" % (name, path))[0] == 200)
    return name


def get(k8s, path):
    """The object at ``path``, or None."""
    status, body, _u = k8s.call("GET", path)
    assert status in (200, 404), body
    return body if status == 200 else None


# -- transport, auth, discovery ------------------------------------------------------


def test_tls_is_verified_against_the_generated_ca(k8s):
    plain = ssl.create_default_context()
    with pytest.raises(urllib.error.URLError) as exc:
        urllib.request.urlopen(k8s.url + "/version", context=plain, timeout=10)
    assert isinstance(exc.value.reason, ssl.SSLCertVerificationError)
    status, body, _u = k8s.call("GET", "/version")
    # each cluster's own version: the simulator's schemas are 1.32's, the control plane is built at v1.34.x
    version = "v1.32.0" if k8s.is_sim else build.kubernetes_version()
    assert status == 200 and body["major"] == "1" and body["gitVersion"] == version


def test_requests_with_a_wrong_token_get_401_status(k8s):
    status, body, _u = k8s.call("GET", "/api/v1/namespaces", token="wrong-token")
    assert status == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def test_requests_without_credentials_are_anonymous_and_forbidden(k8s):
    """No credentials (an empty bearer token is none) make a request
    system:anonymous's, whom RBAC lets read /version and the health checks only."""
    status, body, _u = k8s.call("GET", "/api/v1/namespaces", token="")
    assert status == 403
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" '
                               'in API group "" at the cluster scope',
                    "reason": "Forbidden", "details": {"kind": "namespaces"}, "code": 403}
    status, body, _u = k8s.call("GET", STS_PATH % "es1" + "/elasticsearch", token="")
    assert status == 403 and body["details"] == {"name": "elasticsearch", "group": "apps", "kind": "statefulsets"}
    assert body["message"] == ('statefulsets.apps "elasticsearch" is forbidden: User "system:anonymous" cannot get '
                               'resource "statefulsets" in API group "apps" in the namespace "es1"')
    status, body, _u = k8s.call("GET", "/api", token="")
    assert status == 403 and body["message"] == 'forbidden: User "system:anonymous" cannot get path "/api"'
    assert k8s.call("GET", "/version", token="")[0] == 200
    assert k8s.call("GET", "/healthz", token="")[0:2] == (200, "ok")


def test_discovery_lists_resources_with_short_names_and_subresources(k8s):
    _u, api, _u = k8s.call("GET", "/api")
    assert api["versions"] == ["v1"]
    _u, core, _u = k8s.call("GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    for name in ("namespaces", "configmaps", "secrets", "services", "serviceaccounts", "persistentvolumeclaims",
                 "pods", "events", "resourcequotas", "limitranges", "nodes"):
        assert name in by_name
    assert by_name["persistentvolumeclaims"]["shortNames"] == ["pvc"]
    assert by_name["namespaces"]["namespaced"] is False and by_name["namespaces"]["shortNames"] == ["ns"]
    _u, groups, _u = k8s.call("GET", "/apis")
    assert {g["name"] for g in groups["groups"]} >= {"apps", "batch", "storage.k8s.io"}
    _u, apps, _u = k8s.call("GET", "/apis/apps/v1")
    by_name = {r["name"]: r for r in apps["resources"]}
    assert by_name["statefulsets"]["shortNames"] == ["sts"]
    assert by_name["deployments"]["shortNames"] == ["deploy"]
    assert by_name["statefulsets/scale"]["kind"] == "Scale" and by_name["statefulsets/scale"]["group"] == "autoscaling"
    assert "statefulsets/status" in by_name and "deployments/scale" in by_name
    assert set(by_name["statefulsets"]["verbs"]) >= {"create", "get", "list", "watch", "patch", "update", "delete"}
    _u, v3, _u = k8s.call("GET", "/openapi/v3")
    assert "apis/apps/v1" in v3["paths"]
    _u, doc, _u = k8s.call("GET", v3["paths"]["apis/apps/v1"]["serverRelativeURL"])
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "StatefulSet"}
    assert "fieldValidation" in [p["name"] for p in op["parameters"]]


def test_bootstrap_objects(sim):
    """Simulator only: its own bootstrap objects (node and provisioner names);
    tests/controlplane_tests check the control plane's."""
    names = {o["metadata"]["name"] for o in sim.objects("namespaces")}
    assert {"default", "kube-system", "kube-public", "es1"} <= names
    _u, node, _u = sim.call("GET", "/api/v1/nodes/kubesim-node-1")
    assert node["status"]["capacity"]["cpu"] == "16" and node["status"]["allocatable"]["memory"] == "64Gi"
    assert node["status"]["capacity"]["pods"] == "110"
    assert "nvidia.com/gpu" not in node["status"]["capacity"]
    assert [c for c in node["status"]["conditions"] if c["type"] == "Ready"][0]["status"] == "True"
    _u, sc, _u = sim.call("GET", "/apis/storage.k8s.io/v1/storageclasses/standard")
    assert sc["allowVolumeExpansion"] is True and sc["provisioner"] == "kubesim.io/hostpath"
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    status, sa, _u = sim.call("GET", "/api/v1/namespaces/es1/serviceaccounts/default")
    assert status == 200 and sa["kind"] == "ServiceAccount"


def test_node_capacity_follows_configuration(kubesim_factory):
    """Simulator only: its node settings."""
    sim = kubesim_factory(node_cpu="4", node_memory="8Gi", node_gpus=2)
    _u, node, _u = sim.call("GET", "/api/v1/nodes/kubesim-node-1")
    assert node["status"]["capacity"]["cpu"] == "4"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"


# -- metadata and CRUD ---------------------------------------------------------------------


def test_metadata_set_by_the_server(k8s, ns):
    status, a, _u = k8s.call("POST", STS_PATH % ns, sts_obj(ns=ns))
    assert status == 201
    meta = a["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    rv1 = int(meta["resourceVersion"])
    _u, b, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("c1", ns))
    assert int(b["metadata"]["resourceVersion"]) > rv1
    assert "generation" not in b["metadata"]
    # label change: no generation bump; spec change: bump
    _u, c, _u = k8s.call("PATCH", STS_PATH % ns + "/elasticsearch", {"metadata": {"labels": {"x": "y"}}},
                         "application/merge-patch+json")
    assert c["metadata"]["generation"] == 1 and int(c["metadata"]["resourceVersion"]) > rv1
    _u, d, _u = k8s.call("PATCH", STS_PATH % ns + "/elasticsearch", {"spec": {"replicas": 3}},
                         "application/merge-patch+json")
    assert d["metadata"]["generation"] == 2
    assert d["metadata"]["uid"] == meta["uid"] and d["metadata"]["creationTimestamp"] == meta["creationTimestamp"]
    # defaults a real server fills in
    spec = d["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    container = spec["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent" and container["ports"][0]["protocol"] == "TCP"


def test_not_found_and_missing_namespace(k8s, ns):
    status, body, _u = k8s.call("GET", STS_PATH % ns + "/nope")
    assert status == 404
    assert body["reason"] == "NotFound" and body["message"] == 'statefulsets.apps "nope" not found'
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "statefulsets"}
    status, body, _u = k8s.call("POST", "/api/v1/namespaces/ghost/configmaps", cm_obj("c1", ns="ghost"))
    assert status == 404 and body["message"] == 'namespaces "ghost" not found'
    assert body["details"] == {"name": "ghost", "kind": "namespaces"}
    status, body, _u = k8s.call("DELETE", "/api/v1/namespaces/ghost/configmaps/c1")
    assert status == 404 and body["reason"] == "NotFound"


def test_already_exists_and_stale_update_conflict(k8s, ns):
    assert k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("c1", ns))[0] == 201
    status, body, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("c1", ns))
    assert status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'configmaps "c1" already exists'
    _u, cur, _u = k8s.call("GET", "/api/v1/namespaces/%s/configmaps/c1" % ns)
    stale = json.loads(json.dumps(cur))
    cur["data"] = {"k": "new"}
    status, updated, _u = k8s.call("PUT", "/api/v1/namespaces/%s/configmaps/c1" % ns, cur)
    assert status == 200 and updated["data"] == {"k": "new"}
    stale["data"] = {"k": "stale"}
    status, body, _u = k8s.call("PUT", "/api/v1/namespaces/%s/configmaps/c1" % ns, stale)
    assert status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    assert get(k8s, "/api/v1/namespaces/%s/configmaps/c1" % ns)["data"] == {"k": "new"}


def test_list_with_label_and_field_selectors(k8s, ns):
    for i, tier in enumerate(["hot", "hot", "cold"]):
        obj = cm_obj("c%d" % i, ns)
        obj["metadata"]["labels"] = {"tier": tier}
        k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, obj)
    _u, lst, _u = k8s.call("GET", "/api/v1/namespaces/%s/configmaps?labelSelector=tier%%3Dhot" % ns)
    assert lst["kind"] == "ConfigMapList" and [o["metadata"]["name"] for o in lst["items"]] == ["c0", "c1"]
    assert lst["metadata"]["resourceVersion"]
    _u, lst, _u = k8s.call("GET", "/api/v1/namespaces/%s/configmaps?labelSelector=tier+notin+(hot),tier" % ns)
    assert [o["metadata"]["name"] for o in lst["items"]] == ["c2"]
    _u, lst, _u = k8s.call("GET", "/api/v1/configmaps?fieldSelector=metadata.name%%3Dc1,metadata.namespace%%3D%s" % ns)
    assert [o["metadata"]["name"] for o in lst["items"]] == ["c1"]


# -- validation refusals -----------------------------------------------------------------


def test_names_must_be_dns_1123(k8s, ns):
    status, body, _u = k8s.call("POST", "/api/v1/namespaces", ns_obj("Bad_Name"))
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('Namespace "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
                                      "a lowercase RFC 1123 label must consist of")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert body["details"]["causes"][0]["reason"] == "FieldValueInvalid"
    status, body, _u = k8s.call("POST", STS_PATH % ns, sts_obj(name="ES.Cluster", ns=ns))
    assert status == 422 and body["details"]["kind"] == "StatefulSet" and body["details"]["group"] == "apps"
    assert k8s.call("GET", STS_PATH % ns)[1]["items"] == []


def test_statefulset_spec_changes_outside_the_allowed_fields_are_forbidden(k8s, ns):
    k8s.call("POST", STS_PATH % ns, sts_obj(ns=ns))
    path = STS_PATH % ns + "/elasticsearch"
    bigger = [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                      "resources": {"requests": {"storage": "50Gi"}}}}]
    status, body, _u = k8s.call("PATCH", path, {"spec": {"volumeClaimTemplates": bigger}},
                                "application/merge-patch+json")
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"] == (
        'StatefulSet.apps "elasticsearch" is invalid: spec: Forbidden: updates to statefulset spec for fields other '
        "than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', "
        "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden")
    assert body["details"]["causes"] == [{"reason": "FieldValueForbidden", "field": "spec", "message": body[
        "message"].split("spec: ", 1)[1]}]
    status, _u, _u = k8s.call("PATCH", path, {"spec": {"serviceName": "other"}}, "application/merge-patch+json")
    assert status == 422
    # a merge patch keeps the defaulted rollingUpdate, which OnDelete does not allow
    status, body, _u = k8s.call("PATCH", path, {"spec": {"updateStrategy": {"type": "OnDelete"}}},
                                "application/merge-patch+json")
    assert status == 422 and body["message"] == (
        'StatefulSet.apps "elasticsearch" is invalid: spec.updateStrategy.rollingUpdate: Invalid value: '
        '{"Partition":0,"MaxUnavailable":null}: only allowed for updateStrategy \'RollingUpdate\'')
    for allowed in ({"replicas": 3}, {"minReadySeconds": 5},
                    {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}, {"revisionHistoryLimit": 3},
                    {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}}):
        status, body, _u = k8s.call("PATCH", path, {"spec": allowed}, "application/merge-patch+json")
        assert status == 200, body


def test_extended_resources_request_must_equal_limit(k8s, ns):
    status, body, _u = k8s.call("POST", STS_PATH % ns, sts_obj(ns=ns, gpu=("1", "2")))
    assert status == 422
    cause = body["details"]["causes"][0]
    assert cause["field"] == "spec.template.spec.containers[0].resources.requests"
    assert cause["message"] == 'Invalid value: "1": must be equal to nvidia.com/gpu limit of 2'
    # a request without a limit is refused
    obj = sts_obj(ns=ns)
    obj["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "1"
    status, body, _u = k8s.call("POST", STS_PATH % ns, obj)
    assert status == 422
    assert body["details"]["causes"][0]["message"] == (
        "Required value: Limit must be set for non overcommitable resources")
    # limit only: valid; a pod gets the request defaulted to the limit
    status, _u, _u = k8s.call("POST", STS_PATH % ns, sts_obj(ns=ns, gpu=(None, "1")))
    assert status == 201
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns}, "spec": {"containers": [
        {"name": "c", "image": "busybox:1.36", "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "1"}}}]}}
    status, created, _u = k8s.call("POST", "/api/v1/namespaces/%s/pods" % ns, pod)
    assert status == 201
    assert created["spec"]["containers"][0]["resources"]["requests"] == {"nvidia.com/gpu": "1", "cpu": "1"}


def _bound_pvc(k8s, ns, name, size, storage_class=None, volume=None):
    """A claim, bound: dynamically provisioned by the default class, or
    bound to the pre-made ``volume`` (as a real PV controller binds both)."""
    obj = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}
    if storage_class:
        obj["spec"]["storageClassName"] = storage_class
    if volume:
        obj["spec"]["volumeName"] = volume
    path = "/api/v1/namespaces/%s/persistentvolumeclaims" % ns
    status, created, _u = k8s.call("POST", path, obj)
    assert status == 201, created
    wait_for(lambda: (get(k8s, path + "/" + name).get("status") or {}).get("phase") == "Bound", timeout=30)
    return created


def test_unschedulable_pods_get_the_schedulers_message(k8s, ns):
    """The v1.34 scheduler's words, for failures no node's free capacity
    explains (so the other tests' pods on the control plane do not matter)."""
    n = k8s.node_count()
    pods = {
        "big": {"containers": [{"name": "c", "image": "busybox:1.36",
                                "resources": {"requests": {"cpu": "64", "memory": "512Gi"}}}]},
        "elsewhere": {"nodeSelector": {"disktype": "ssd"}, "containers": [{"name": "c", "image": "busybox:1.36"}]},
        "no-claim": {"containers": [{"name": "c", "image": "busybox:1.36"}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "nope"}}]},
    }
    for name, spec in pods.items():
        assert k8s.call("POST", "/api/v1/namespaces/%s/pods" % ns, {"metadata": {"name": name}, "spec": spec})[0] == 201
    not_helpful = " no new claims to deallocate, preemption: 0/{n} nodes are available: {n} Preemption is not " \
                  "helpful for scheduling."
    expected = {
        "big": "0/{n} nodes are available: {n} Insufficient cpu, {n} Insufficient memory." + not_helpful,
        "elsewhere": "0/{n} nodes are available: {n} node(s) didn't match Pod's node affinity/selector." + not_helpful,
        # a PreFilter failure: the DynamicResources PostFilter, without its cycle state, says "not found"
        "no-claim": '0/{n} nodes are available: persistentvolumeclaim "nope" not found. not found',
    }

    def message(name):
        pod = get(k8s, "/api/v1/namespaces/%s/pods/%s" % (ns, name))
        conds = [c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "PodScheduled"]
        return conds and conds[0]["status"] == "False" and conds[0]

    for name, text in expected.items():
        cond = wait_for(lambda name=name: message(name), timeout=30)
        assert cond["reason"] == "Unschedulable" and cond["message"] == text.format(n=n), name


def test_pvc_shrink_is_invalid_and_growth_needs_an_expandable_class(k8s, ns):
    created = _bound_pvc(k8s, ns, "data-0", "5Gi")
    assert created["spec"]["storageClassName"] == "standard"
    path = "/api/v1/namespaces/%s/persistentvolumeclaims/" % ns
    status, body, _u = k8s.call("PATCH", path + "data-0", {"spec": {"resources": {"requests": {"storage": "1Gi"}}}},
                                "application/strategic-merge-patch+json")
    assert status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.resources.requests.storage"
    assert "Forbidden: field can not be less than" in body["message"]
    status, body, _u = k8s.call("PATCH", path + "data-0", {"spec": {"resources": {"requests": {"storage": "10Gi"}}}},
                                "application/strategic-merge-patch+json")
    assert status == 200 and body["spec"]["resources"]["requests"]["storage"] == "10Gi"
    fixed = k8s.unique("fixed")  # a class without allowVolumeExpansion, and a volume of it made by hand
    assert k8s.call("POST", "/apis/storage.k8s.io/v1/storageclasses", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": fixed},
        "provisioner": "example.com/fixed"})[0] == 201
    assert k8s.call("POST", "/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": fixed},
        "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": fixed,
                 "persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": "/tmp/" + fixed},
                 "claimRef": {"namespace": ns, "name": "data-1"}}})[0] == 201
    _bound_pvc(k8s, ns, "data-1", "5Gi", fixed, volume=fixed)
    status, body, _u = k8s.call("PATCH", path + "data-1", {"spec": {"resources": {"requests": {"storage": "10Gi"}}}},
                                "application/strategic-merge-patch+json")
    assert status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == ('persistentvolumeclaims "data-1" is forbidden: only dynamically provisioned pvc can be '
                               "resized and the storageclass that provisions the pvc must support resize")
    assert get(k8s, path + "data-1")["spec"]["resources"]["requests"]["storage"] == "5Gi"
    for gone in ("/api/v1/persistentvolumes/", "/apis/storage.k8s.io/v1/storageclasses/"):
        k8s.call("DELETE", gone + fixed)


def test_field_validation_strict_warn_ignore(k8s, ns):
    obj = cm_obj("c1", ns)
    obj["bogus"] = 1
    obj["metadata"]["nonsense"] = "x"
    path = "/api/v1/namespaces/%s/configmaps" % ns
    status, body, _u = k8s.call("POST", path + "?fieldValidation=Strict", obj)
    assert status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == ('ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
                               'unknown field "metadata.nonsense", unknown field "bogus"')
    status, body, headers = k8s.call("POST", path, obj)  # server default: Warn
    assert status == 201 and "bogus" not in body
    assert headers.get_all("Warning") == ['299 - "unknown field \\"metadata.nonsense\\""',
                                          '299 - "unknown field \\"bogus\\""']
    obj["metadata"]["name"] = "c2"
    status, _u, headers = k8s.call("POST", path + "?fieldValidation=Ignore", obj)
    assert status == 201 and not headers.get_all("Warning")
    wrong = sts_obj(ns=ns)
    wrong["spec"]["replicas"] = "three"
    status, body, _u = k8s.call("POST", STS_PATH % ns + "?fieldValidation=Ignore", wrong)
    assert status == 400
    assert "cannot unmarshal string into Go struct field StatefulSetSpec.spec.replicas of type" in body["message"]


def test_service_cluster_ip_may_not_change_once_set(k8s, ns):
    """v1.34's service registry: clusterIPs follows a changed clusterIP
    (normalizeClusterIPs), then ValidateServiceUpdate refuses a changed
    primary address; clusterIPs[0] must match clusterIP."""
    svc = {"metadata": {"name": "s1"}, "spec": {"ports": [{"port": 80}]}}
    status, svc, _u = k8s.call("POST", "/api/v1/namespaces/%s/services" % ns, svc)
    assert status == 201
    path = "/api/v1/namespaces/%s/services/s1" % ns
    ip = svc["spec"]["clusterIP"]
    moved = '["10.96.9.9"]'  # v1.34 prints a bad value that is not a string or number as JSON
    for body, ct in [({"spec": {"clusterIP": "10.96.9.9"}}, "application/merge-patch+json"),
                     ({"spec": {"clusterIP": "10.96.9.9"}}, "application/strategic-merge-patch+json"),
                     ({"spec": {"clusterIP": "10.96.9.9", "clusterIPs": ["10.96.9.9"]}},
                      "application/merge-patch+json"),
                     (json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s1"},
                                  "spec": {"clusterIP": "10.96.9.9"}}), "application/apply-patch+yaml")]:
        query = "?fieldManager=m" if ct == "application/apply-patch+yaml" else ""
        status, err, _u = k8s.call("PATCH", path + query, body, ct)
        assert status == 422 and err["reason"] == "Invalid", (ct, err)
        assert err["message"] == 'Service "s1" is invalid: spec.clusterIPs[0]: Invalid value: %s: ' \
                                 "may not change once set" % moved, err["message"]
        assert err["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.clusterIPs[0]",
                                             "message": "Invalid value: %s: may not change once set" % moved}]
    status, err, _u = k8s.call("PATCH", path, {"spec": {"clusterIPs": ["10.96.9.9"]}}, "application/merge-patch+json")
    assert status == 422
    assert err["message"] == 'Service "s1" is invalid: spec.clusterIPs: Invalid value: %s: ' \
                             "first value must match `clusterIP`" % moved
    changed = dict(svc, spec=dict(svc["spec"], clusterIP="10.96.9.9"))
    assert k8s.call("PUT", path, changed)[0] == 422
    assert get(k8s, path)["spec"]["clusterIPs"] == [ip]
    # the same address, or none at all, is fine
    status, body, _u = k8s.call("PATCH", path, {"spec": {"clusterIP": ip}, "metadata": {"labels": {"a": "b"}}},
                                "application/merge-patch+json")
    assert status == 200 and body["spec"]["clusterIPs"] == [ip]
    assert k8s.call("PUT", path, dict(body, spec=dict(body["spec"], clusterIP="", clusterIPs=None)))[0] == 200


# -- patches and apply -----------------------------------------------------------------------


def test_strategic_merge_patch_merges_lists_by_their_keys(k8s, ns):
    k8s.call("POST", STS_PATH % ns, sts_obj(ns=ns))
    path = STS_PATH % ns + "/elasticsearch"
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "elasticsearch", "env": [
        {"name": "B", "value": "changed"}, {"name": "C", "value": "3"}, {"name": "A", "$patch": "delete"}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}}]}}}}
    status, body, _u = k8s.call("PATCH", path, patch, "application/strategic-merge-patch+json")
    assert status == 200, body
    containers = body["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["elasticsearch", "sidecar"]
    es = containers[0]
    assert es["env"] == [{"name": "B", "value": "changed"}, {"name": "C", "value": "3"}]
    assert es["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert es["image"] == "elasticsearch:8.15.0" and es["ports"][0]["containerPort"] == 9200
    # the same patch as a merge patch replaces the whole list
    status, body, _u = k8s.call("PATCH", path, {"spec": {"template": {"spec": {"containers": [
        {"name": "elasticsearch", "image": "elasticsearch:8.16.0"}]}}}}, "application/merge-patch+json")
    assert status == 200
    assert [c["name"] for c in body["spec"]["template"]["spec"]["containers"]] == ["elasticsearch"]
    assert "env" not in body["spec"]["template"]["spec"]["containers"][0]


def test_merge_patch_prunes_nulls_inside_a_replaced_list(k8s, ns):
    """RFC 7386 as the real server applies it: the list replaces the old one
    and null-valued keys inside its elements are dropped, not refused."""
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": ns},
              "spec": {"selector": {"matchLabels": {"app": "d"}},
                       "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [
                           {"name": "c", "image": "old", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                           {"name": "other", "image": "busybox"}]}}}}
    assert k8s.call("POST", "/apis/apps/v1/namespaces/%s/deployments" % ns, deploy)[0] == 201
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "x", "resources": {"requests": {"cpu": None, "memory": "2Gi"}, "limits": None}}]}}}}
    status, body, _u = k8s.call("PATCH", "/apis/apps/v1/namespaces/%s/deployments/d" % ns, patch,
                                "application/merge-patch+json")
    assert status == 200, body
    containers = body["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("c", "x")]
    assert containers[0]["resources"] == {"requests": {"memory": "2Gi"}}


def test_json_patch(k8s, ns):
    k8s.call("POST", STS_PATH % ns, sts_obj(ns=ns))
    path = STS_PATH % ns + "/elasticsearch"
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 2},
           {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]
    status, body, _u = k8s.call("PATCH", path, ops, "application/json-patch+json")
    assert status == 200 and body["spec"]["replicas"] == 2 and body["metadata"]["annotations"] == {"a": "b"}
    status, body, _u = k8s.call("PATCH", path, [{"op": "test", "path": "/spec/replicas", "value": 5}],
                                "application/json-patch+json")
    assert status == 422 and body["kind"] == "Status"
    status, _u, _u = k8s.call("PATCH", path, {"spec": {}}, "text/plain")
    assert status == 415


def test_server_side_apply_create_update_prune_conflict_force(k8s, ns):
    path = STS_PATH % ns + "/elasticsearch"
    cfg = sts_obj(ns=ns)
    cfg["metadata"]["annotations"] = {"owned-by": "ansible"}
    status, body, _u = k8s.call("PATCH", path + "?fieldManager=ansible", json.dumps(cfg),
                                "application/apply-patch+yaml")
    assert status == 201 and body["metadata"]["managedFields"][0]["manager"] == "ansible"
    assert body["metadata"]["managedFields"][0]["operation"] == "Apply"
    # dropping a field the manager applied removes it; the same list merge rules apply
    del cfg["metadata"]["annotations"]
    cfg["spec"]["replicas"] = 2
    yaml_text = json.dumps(cfg)
    status, body, _u = k8s.call("PATCH", path + "?fieldManager=ansible", yaml_text, "application/apply-patch+yaml")
    assert status == 200 and body["spec"]["replicas"] == 2 and "owned-by" not in body["metadata"].get(
        "annotations", {})
    # another applier changing an owned field conflicts unless forced
    other = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "elasticsearch"},
             "spec": {"replicas": 5}}
    status, body, _u = k8s.call("PATCH", path + "?fieldManager=other", json.dumps(other),
                                "application/apply-patch+yaml")
    assert status == 409 and body["reason"] == "Conflict"
    assert body["message"] == 'Apply failed with 1 conflict: conflict with "ansible": .spec.replicas'
    assert body["details"] == {"causes": [{"reason": "FieldManagerConflict", "field": ".spec.replicas",
                                           "message": 'conflict with "ansible"'}]}
    status, body, _u = k8s.call("PATCH", path + "?fieldManager=other&force=true", json.dumps(other),
                                "application/apply-patch+yaml")
    assert status == 200 and body["spec"]["replicas"] == 5
    # apply merges lists by their list-map keys: ports are keyed by (containerPort, protocol)
    udp = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "elasticsearch"},
           "spec": {"template": {"spec": {"containers": [{"name": "elasticsearch", "ports": [
               {"name": "udp", "containerPort": 9200, "protocol": "UDP"}]}]}}}}
    status, body, _u = k8s.call("PATCH", path + "?fieldManager=ports", json.dumps(udp), "application/apply-patch+yaml")
    assert status == 200
    ports = body["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [(p["containerPort"], p["protocol"]) for p in ports] == [(9200, "TCP"), (9200, "UDP")]
    mine = [m for m in body["metadata"]["managedFields"] if m["manager"] == "ports"][0]["fieldsV1"]
    assert 'k:{"containerPort":9200,"protocol":"UDP"}' in \
        mine["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"elasticsearch"}']["f:ports"]
    # apply without a field manager is refused
    status, body, _u = k8s.call("PATCH", path, json.dumps(other), "application/apply-patch+yaml")
    assert status == 422 and "fieldManager: Required value" in body["message"]


def test_managed_fields_never_list_name_namespace_or_type_meta(k8s, ns):
    """As the real field manager strips them; a manager left with no fields
    after a forced apply loses its entry."""
    path = "/api/v1/namespaces/%s/configmaps/c1" % ns
    cfg = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "namespace": ns,
                                                                 "labels": {"x": "1"}}, "data": {"k": "v"}}
    status, body, _u = k8s.call("PATCH", path + "?fieldManager=a", json.dumps(cfg), "application/apply-patch+yaml")
    assert status == 201
    assert [(m["manager"], m["fieldsV1"]) for m in body["metadata"]["managedFields"]] == [
        ("a", {"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:x": {}}}})]
    cfg["metadata"]["labels"]["x"], cfg["data"]["k"] = "2", "w"
    status, body, _u = k8s.call("PATCH", path + "?fieldManager=b&force=true", json.dumps(cfg),
                                "application/apply-patch+yaml")
    assert status == 200
    assert [m["manager"] for m in body["metadata"]["managedFields"]] == ["b"]
    # an update sending the whole object back records neither its identity nor its server-set metadata
    body["data"]["k2"] = "v2"
    status, body, _u = k8s.call("PUT", path + "?fieldManager=editor", body)
    assert status == 200
    editor = [m for m in body["metadata"]["managedFields"] if m["manager"] == "editor"][0]["fieldsV1"]
    assert "f:k2" in editor["f:data"] and "f:apiVersion" not in editor and "f:kind" not in editor
    assert set(editor.get("f:metadata", {})) <= {"f:labels"}, editor
    status, body, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps?fieldManager=creator" % ns, cm_obj("c2", ns))
    assert status == 201
    # an update owns the map it created as a whole too (".")
    assert body["metadata"]["managedFields"][0]["fieldsV1"] == {"f:data": {".": {}, "f:k": {}}}


# -- subresources ------------------------------------------------------------------------------


def test_scale_and_status_subresources(k8s, ns):
    k8s.call("POST", STS_PATH % ns, sts_obj(ns=ns))
    path = STS_PATH % ns + "/elasticsearch"
    for _u in range(20):  # the controller writes status concurrently: retry on conflict as clients do
        status, scale, _u = k8s.call("GET", path + "/scale")
        assert status == 200 and scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
        assert scale["spec"]["replicas"] == 1 and scale["status"]["selector"] == "app=es"
        scale["spec"]["replicas"] = 3
        status, scale, _u = k8s.call("PUT", path + "/scale", scale)
        if status != 409:
            break
    assert status == 200 and scale["spec"]["replicas"] == 3
    assert get(k8s, path)["spec"]["replicas"] == 3
    status, scale, _u = k8s.call("PATCH", path + "/scale", {"spec": {"replicas": 0}}, "application/merge-patch+json")
    assert status == 200 and get(k8s, path)["spec"]["replicas"] == 0
    # status: spec changes through /status are ignored, status changes through the main resource too
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "es-http", "namespace": ns},
           "spec": {"selector": {"app": "es"}, "ports": [{"name": "http", "port": 9200}]}}
    status, cluster_ip, _u = k8s.call("POST", "/api/v1/namespaces/%s/services" % ns, svc)
    assert status == 201 and cluster_ip["spec"]["clusterIP"] and cluster_ip["spec"]["ports"][0]["targetPort"] == 9200
    cluster_ip["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
    status, body, _u = k8s.call("PUT", "/api/v1/namespaces/%s/services/es-http/status" % ns, cluster_ip)
    assert status == 422 and body["details"]["causes"] == [{
        "reason": "FieldValueForbidden", "field": "status.loadBalancer.ingress",
        "message": "Forbidden: may only be used when `spec.type` is 'LoadBalancer'"}]
    svc["metadata"]["name"], svc["spec"]["type"] = "es-lb", "LoadBalancer"
    status, svc, _u = k8s.call("POST", "/api/v1/namespaces/%s/services" % ns, svc)
    assert status == 201, svc
    assert 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767 and svc["spec"]["externalTrafficPolicy"] == "Cluster"
    assert svc["spec"]["allocateLoadBalancerNodePorts"] is True
    svc_path = "/api/v1/namespaces/%s/services/es-lb" % ns
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
    svc["spec"]["ports"][0]["port"] = 9999
    status, body, _u = k8s.call("PUT", svc_path + "/status", svc)
    assert status == 200 and body["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.1", "ipMode": "VIP"}]
    assert body["spec"]["ports"][0]["port"] == 9200
    status, body, _u = k8s.call("PATCH", svc_path, {"status": {"loadBalancer": {}}}, "application/merge-patch+json")
    assert status == 200 and body["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.1", "ipMode": "VIP"}]
    status, body, _u = k8s.call("PATCH", svc_path + "/status", {"status": {"loadBalancer": {"ingress": None}}},
                                "application/merge-patch+json")
    assert status == 200 and body["status"]["loadBalancer"] == {}
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}]}}  # svc carries an old resourceVersion
    status, body, _u = k8s.call("PUT", svc_path + "/status", svc)
    assert status == 409 and body["reason"] == "Conflict"


# -- watch --------------------------------------------------------------------------------------


def _watch(k8s, path, events, stop_after):
    with k8s.stream(path) as resp:
        for line in resp:
            events.append(json.loads(line))
            if len(events) >= stop_after:
                return


def test_watch_streams_added_modified_deleted(k8s, ns):
    k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("before", ns))
    events = []
    t = threading.Thread(target=_watch, args=(k8s, "/api/v1/namespaces/%s/configmaps?watch=true&timeoutSeconds=20"
                                              % ns, events, 5))
    t.start()
    wait_for(lambda: any(e["object"]["metadata"]["name"] == "before" for e in events))
    k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("c1", ns))
    k8s.call("PATCH", "/api/v1/namespaces/%s/configmaps/c1" % ns, {"data": {"k": "2"}}, "application/merge-patch+json")
    k8s.call("DELETE", "/api/v1/namespaces/%s/configmaps/c1" % ns)
    t.join(20)
    names = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert ("ADDED", "before") in names
    assert names[-3:] == [("ADDED", "c1"), ("MODIFIED", "c1"), ("DELETED", "c1")]
    assert events[-2]["object"]["data"] == {"k": "2"} and events[-1]["object"]["kind"] == "ConfigMap"


def test_watch_resumes_from_resource_version_and_times_out(k8s, ns):
    _u, lst, _u = k8s.call("GET", "/api/v1/namespaces/%s/configmaps" % ns)
    rv = lst["metadata"]["resourceVersion"]
    k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("later", ns))
    events = []
    start = time.monotonic()
    _watch(k8s, "/api/v1/namespaces/%s/configmaps?watch=1&timeoutSeconds=1&resourceVersion=%s" % (ns, rv), events, 99)
    assert time.monotonic() - start < 5
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "later")]


# -- deletion -------------------------------------------------------------------------------------


def test_namespace_deletion_terminates_then_removes_everything(k8s, ns):
    k8s.call("POST", STS_PATH % ns, sts_obj(ns=ns))
    k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("c1", ns))
    status, body, _u = k8s.call("DELETE", "/api/v1/namespaces/" + ns)
    assert status == 200
    assert body["status"]["phase"] == "Terminating" and body["metadata"]["deletionTimestamp"]
    wait_for(lambda: get(k8s, "/api/v1/namespaces/" + ns) is None, timeout=60)  # a real one takes 5 to 10 s
    assert k8s.call("GET", "/api/v1/namespaces/%s/configmaps" % ns)[1]["items"] == []
    assert k8s.call("GET", STS_PATH % ns)[1]["items"] == []


def test_create_in_terminating_namespace_is_forbidden(k8s, ns):
    if k8s.is_sim:
        # Without the controllers the simulator's own namespace loop finalizes,
        # after a delay, which leaves a window to observe the Terminating phase
        # (a real namespace controller takes seconds anyway).
        k8s.sim.server.controllers.stop()
    k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("c1", ns))
    status, body, _u = k8s.call("DELETE", "/api/v1/namespaces/" + ns)
    assert status == 200 and body["status"]["phase"] == "Terminating"
    status, body, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("c2", ns))
    assert status == 403 and body["reason"] == "Forbidden" and body["code"] == 403
    assert body["message"] == ('configmaps "c2" is forbidden: unable to create new content in namespace %s '
                               "because it is being terminated" % ns)
    assert body["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    if k8s.is_sim:
        # the content is still there while the simulator's controllers are stopped; a real namespace
        # controller starts removing it at once, so there this would be a race
        assert get(k8s, "/api/v1/namespaces/%s/configmaps/c1" % ns) is not None
    wait_for(lambda: get(k8s, "/api/v1/namespaces/" + ns) is None, timeout=60)
    assert k8s.call("GET", "/api/v1/namespaces/%s/configmaps" % ns)[1]["items"] == []


def test_delete_answers_the_object_or_a_status_per_kind(k8s, ns):
    """As the real registries do: kinds whose storage sets ReturnDeletedObject
    (services, serviceaccounts, storageclasses, pods, PVCs, PVs, quotas,
    namespaces) answer with the deleted object, the others with a Success
    Status; any kind answers with the object when a finalizer (Orphan or
    Foreground propagation) keeps it around."""
    svc = {"metadata": {"name": "s1"}, "spec": {"ports": [{"port": 80}]}}
    fast = k8s.unique("fast")
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": fast},
          "provisioner": "example.com/fast"}
    created = {
        "/api/v1/namespaces/%s/services" % ns: svc,
        "/api/v1/namespaces/%s/serviceaccounts" % ns: {"metadata": {"name": "sa1"}},
        "/apis/storage.k8s.io/v1/storageclasses": sc,
        "/api/v1/namespaces/%s/configmaps" % ns: cm_obj("c1", ns),
        "/api/v1/namespaces/%s/secrets" % ns: {"metadata": {"name": "s1"}, "stringData": {"a": "b"}},
        STS_PATH % ns: sts_obj(ns=ns),
    }
    for path, obj in created.items():
        assert k8s.call("POST", path, obj)[0] == 201, path
    for path, kind in [("/api/v1/namespaces/%s/services/s1" % ns, "Service"),
                       ("/api/v1/namespaces/%s/serviceaccounts/sa1" % ns, "ServiceAccount"),
                       ("/apis/storage.k8s.io/v1/storageclasses/" + fast, "StorageClass")]:
        status, body, _u = k8s.call("DELETE", path)
        assert status == 200 and body["kind"] == kind and body["metadata"]["name"] == path.rsplit("/", 1)[1], body
    status, body, _u = k8s.call("DELETE", "/api/v1/namespaces/%s/secrets/s1" % ns)
    assert status == 200 and body["kind"] == "Status" and body["status"] == "Success"
    assert body["details"]["name"] == "s1" and body["details"]["kind"] == "secrets" and body["details"]["uid"]
    status, body, _u = k8s.call("DELETE", STS_PATH % ns + "/elasticsearch")
    assert status == 200 and body["kind"] == "Status"
    assert body["details"] == {"name": "elasticsearch", "group": "apps", "kind": "statefulsets",
                               "uid": body["details"]["uid"]}
    status, body, _u = k8s.call("DELETE", "/api/v1/namespaces/%s/configmaps/c1?propagationPolicy=Orphan" % ns)
    assert status == 200 and body["kind"] == "ConfigMap"
    assert body["metadata"]["finalizers"] == ["orphan"] and body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["deletionGracePeriodSeconds"] == 0
    wait_for(lambda: get(k8s, "/api/v1/namespaces/%s/configmaps/c1" % ns) is None)


def test_finalizers_keep_a_deleted_object_until_they_are_removed(k8s, ns):
    """Deletion marks an object that has finalizers (its own, or the
    garbage collector's for Orphan and Foreground propagation) and answers
    with it; the object goes once the last finalizer is removed."""
    path = "/api/v1/namespaces/%s/configmaps" % ns
    held = cm_obj("held", ns)
    held["metadata"]["finalizers"] = ["example.com/hold"]
    assert k8s.call("POST", path, held)[0] == 201
    status, body, _u = k8s.call("DELETE", path + "/held")
    assert status == 200 and body["kind"] == "ConfigMap" and body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["finalizers"] == ["example.com/hold"]
    time.sleep(1.0)
    still = get(k8s, path + "/held")
    assert still is not None and still["metadata"]["deletionTimestamp"] == body["metadata"]["deletionTimestamp"]
    status, _u, _u = k8s.call("PATCH", path + "/held", {"metadata": {"finalizers": None}},
                              "application/merge-patch+json")
    assert status == 200
    wait_for(lambda: get(k8s, path + "/held") is None)
    # Foreground: the owner waits, marked, for the collector to delete its dependents
    _u, owner, _u = k8s.call("POST", path, cm_obj("owner", ns))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"],
           "blockOwnerDeletion": True}
    assert k8s.call("POST", path, cm_obj("child", ns, owner=ref))[0] == 201
    status, body, _u = k8s.call("DELETE", path + "/owner", {"propagationPolicy": "Foreground"})
    assert status == 200 and body["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert body["metadata"]["deletionTimestamp"]
    wait_for(lambda: get(k8s, path + "/owner") is None and get(k8s, path + "/child") is None)


def test_garbage_collection_follows_owner_references(k8s, ns):
    _u, owner, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("owner", ns))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("child", ns, owner=ref))
    _u, owner2, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("owner2", ns))
    ref2 = dict(ref, name="owner2", uid=owner2["metadata"]["uid"])
    k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("orphan", ns, owner=ref2))
    status, body, _u = k8s.call("DELETE", "/api/v1/namespaces/%s/configmaps/owner?propagationPolicy=Background" % ns)
    assert status == 200 and body["status"] == "Success"
    wait_for(lambda: get(k8s, "/api/v1/namespaces/%s/configmaps/child" % ns) is None)
    status, _u, _u = k8s.call("DELETE", "/api/v1/namespaces/%s/configmaps/owner2" % ns, {"propagationPolicy": "Orphan"})
    assert status == 200
    time.sleep(1.0)
    orphan = get(k8s, "/api/v1/namespaces/%s/configmaps/orphan" % ns)
    assert orphan is not None and "ownerReferences" not in orphan["metadata"]
    status, body, _u = k8s.call("DELETE", "/api/v1/namespaces/%s/configmaps/orphan?propagationPolicy=Sideways" % ns)
    assert status == 422
    # an object whose only owner never existed is collected too
    ghost = dict(ref, name="ghost", uid="00000000-1111-2222-3333-444444444444")
    assert k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("dangling", ns, owner=ghost))[0] == 201
    wait_for(lambda: get(k8s, "/api/v1/namespaces/%s/configmaps/dangling" % ns) is None)


# -- faults, latency, request log, subprocess ------------------------------------------------------


def test_injected_fault_answers_with_status_body_then_recovers(sim):
    """Simulator only: fault injection and its request log."""
    sim.call("POST", STS_PATH % "es1", sts_obj())
    sim.add_fault("PATCH:statefulsets:500:1")
    path = STS_PATH % "es1" + "/elasticsearch"
    status, body, _u = sim.call("PATCH", path, {"spec": {"replicas": 2}}, "application/merge-patch+json")
    assert status == 500
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Internal error occurred: injected fault", "reason": "InternalError",
                    "details": {"name": "elasticsearch", "group": "apps", "kind": "statefulsets"}, "code": 500}
    assert sim.get("apps/statefulsets", "es1", "elasticsearch")["spec"]["replicas"] == 1
    status, _u, _u = sim.call("PATCH", path, {"spec": {"replicas": 2}}, "application/merge-patch+json")
    assert status == 200
    sim.set_faults(["GET:*:503"])
    assert sim.call("GET", "/api/v1/namespaces/es1/configmaps")[0] == 503
    sim.set_faults([])
    assert sim.call("GET", "/api/v1/namespaces/es1/configmaps")[0] == 200
    log = sim.requests()
    patches = [(r["method"], r["path"], r["content_type"], r["status"]) for r in log if r["method"] == "PATCH"]
    assert patches == [("PATCH", path, "application/merge-patch+json", 500),
                       ("PATCH", path, "application/merge-patch+json", 200)]


def test_latency(sim):
    """Simulator only: its latency setting."""
    sim.set_latency(300)
    start = time.monotonic()
    sim.call("GET", "/api/v1/namespaces")
    assert time.monotonic() - start >= 0.3


def test_subprocess_mode_and_state_file(tmp_path):
    """Simulator only: its subprocess mode, admin endpoints and state file."""
    state = tmp_path / "state.json"
    with KubeSim(subprocess=True, state_file=str(state), faults=["DELETE:configmaps:500"]) as sim:
        assert sim.call("POST", "/api/v1/namespaces", ns_obj("sub"))[0] == 201
        assert sim.call("POST", "/api/v1/namespaces/sub/configmaps", cm_obj("c1", ns="sub"))[0] == 201
        assert sim.call("DELETE", "/api/v1/namespaces/sub/configmaps/c1")[0] == 500
        assert [o["metadata"]["name"] for o in sim.objects("configmaps", "sub")] == ["c1", "kube-root-ca.crt"]
        assert sim.get("namespaces", None, "sub")["status"]["phase"] == "Active"
        sim.set_faults([])
        assert sim.call("DELETE", "/api/v1/namespaces/sub/configmaps/c1")[0] == 200
        assert [r["status"] for r in sim.requests() if r["method"] == "DELETE"] == [500, 200]
        assert os.path.exists(sim.kubeconfig)
    dumped = json.loads(state.read_text())
    names = {(o["resource"], o["object"]["metadata"]["name"]) for o in dumped["objects"]}
    assert ("namespaces", "sub") in names and ("configmaps", "c1") not in names


def test_request_bodies_must_match_the_url(k8s, ns):
    status, body, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("c1", ns="other"))
    assert status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == "the namespace of the provided object does not match the namespace sent on the request"
    wrong = cm_obj("c1", ns)
    wrong["apiVersion"] = "apps/v1"
    status, body, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, wrong)
    assert status == 400 and body["message"].startswith(
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: no kind "ConfigMap" is registered for '
        'version "apps/v1" in scheme "')
    status, body, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns,
                                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c1"}})
    assert status == 400 and body["message"] == ('Secret in version "v1" cannot be handled as a ConfigMap: '
                                                 "converting (v1.Secret) to (core.ConfigMap): unknown conversion")
    k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, cm_obj("c1", ns))
    status, body, _u = k8s.call("PUT", "/api/v1/namespaces/%s/configmaps/c1" % ns, cm_obj("c2", ns))
    assert status == 400
    assert body["message"] == "the name of the object (c2) does not match the name on the URL (c1)"
    status, body, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, "{not json")
    assert status == 400 and body["kind"] == "Status"


def test_deployment_scale_and_status_subresources(k8s, ns):
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kibana", "namespace": ns},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "kibana"}},
                       "template": {"metadata": {"labels": {"app": "kibana"}},
                                    "spec": {"containers": [{"name": "kibana", "image": "kibana:8.15.0"}]}}}}
    status, created, _u = k8s.call("POST", "/apis/apps/v1/namespaces/%s/deployments" % ns, deploy)
    assert status == 201
    assert created["spec"]["strategy"] == {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert created["spec"]["progressDeadlineSeconds"] == 600
    path = "/apis/apps/v1/namespaces/%s/deployments/kibana" % ns
    status, scale, _u = k8s.call("PATCH", path + "/scale", {"spec": {"replicas": 3}}, "application/merge-patch+json")
    assert status == 200 and scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == "app=kibana"
    assert get(k8s, path)["spec"]["replicas"] == 3
    status, body, _u = k8s.call("PATCH", path + "/scale", {"spec": {"replicas": -1}}, "application/merge-patch+json")
    assert status == 422 and body["details"]["kind"] == "Scale"
    status, body, _u = k8s.call("GET", path + "/status")
    assert status == 200 and body["kind"] == "Deployment"
    status, body, _u = k8s.call("PATCH", path, {"spec": {"selector": {"matchLabels": {"app": "other"}}}},
                                "application/merge-patch+json")
    assert status == 422 and body["reason"] == "Invalid"


def test_streaming_list_watch_ends_initial_events_with_a_bookmark(k8s, ns):
    """kubectl 1.35+ (client-go WatchList) lists through a watch with
    sendInitialEvents and waits for the bookmark that ends them."""
    for name in ("w1", "w2"):
        status, _u, _u = k8s.call("POST", "/api/v1/namespaces/%s/configmaps" % ns, {"metadata": {"name": name}})
        assert status == 201
    status, text, _u = k8s.call(
        "GET", "/api/v1/namespaces/%s/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
               "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1" % ns)
    assert status == 200
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "kube-root-ca.crt"), ("ADDED", "w1"), ("ADDED", "w2"), ("BOOKMARK", None)]
    bookmark = events[-1]["object"]
    assert bookmark["kind"] == "ConfigMap"
    assert bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(events[2]["object"]["metadata"]["resourceVersion"])
