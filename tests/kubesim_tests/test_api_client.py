"""The official ``kubernetes`` Python client (typed and dynamic) against both
clusters (the simulator and the real control plane, fixture ``k8s``)."""

import time

import pytest
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

pytest_plugins = ["tests.kubesim.pytest_plugin", "tests.kubesim_tests.clusters"]


@pytest.fixture
def api(k8s):
    api_client = k8s.api_client()
    yield api_client
    api_client.close()


@pytest.fixture
def ns(k8s, api):
    """A namespace of this test's own."""
    name = k8s.unique("es")
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


def sts_body(ns, replicas=1):
    return client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name="elasticsearch", namespace=ns),
        spec=client.V1StatefulSetSpec(
            service_name="elasticsearch",
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": "es"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "es"}),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name="elasticsearch", image="elasticsearch:8.15.0",
                    resources=client.V1ResourceRequirements(requests={"cpu": "500m", "memory": "1Gi"},
                                                            limits={"cpu": "1", "memory": "2Gi"}))]),
            ),
            volume_claim_templates=[client.V1PersistentVolumeClaim(
                metadata=client.V1ObjectMeta(name="elasticsearch-data"),
                spec=client.V1PersistentVolumeClaimSpec(
                    access_modes=["ReadWriteOnce"],
                    resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"})))],
        ),
    )


def test_typed_clients_crud_and_errors(api, k8s):
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    ns = k8s.unique("es")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns, labels={"team": ns})))
    got = core.read_namespace(ns)
    assert got.status.phase == "Active" and got.metadata.labels["kubernetes.io/metadata.name"] == ns
    assert [n.metadata.name for n in core.list_namespace(label_selector="team=" + ns).items] == [ns]
    created = apps.create_namespaced_stateful_set(ns, sts_body(ns))
    assert created.metadata.generation == 1 and created.spec.pod_management_policy == "OrderedReady"
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_stateful_set(ns, sts_body(ns))
    assert exc.value.status == 409 and '"reason":"AlreadyExists"' in exc.value.body.replace(" ", "")
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_stateful_set("nope", ns)
    assert exc.value.status == 404
    scale = apps.patch_namespaced_stateful_set_scale("elasticsearch", ns, {"spec": {"replicas": 2}})
    assert scale.spec.replicas == 2
    assert apps.read_namespaced_stateful_set_scale("elasticsearch", ns).spec.replicas == 2
    patched = apps.patch_namespaced_stateful_set("elasticsearch", ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "elasticsearch", "resources": {"limits": {"nvidia.com/gpu": "1"},
                                                               "requests": {"nvidia.com/gpu": "1"}}}]}}}})
    res = patched.spec.template.spec.containers[0].resources
    assert res.limits == {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}
    assert patched.metadata.generation == 3
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_stateful_set("elasticsearch", ns, {"spec": {"serviceName": "x"}})
    assert exc.value.status == 422
    stale = apps.read_namespaced_stateful_set("elasticsearch", ns)
    for _u in range(20):  # the controller writes status concurrently: retry on conflict as clients do
        fresh = apps.read_namespaced_stateful_set("elasticsearch", ns)
        fresh.metadata.labels = {"a": "b"}
        try:
            apps.replace_namespaced_stateful_set("elasticsearch", ns, fresh)
            break
        except ApiException as e:
            assert e.status == 409
    assert apps.read_namespaced_stateful_set("elasticsearch", ns).metadata.labels == {"a": "b"}
    stale.metadata.labels = {"a": "stale"}
    with pytest.raises(ApiException) as exc:
        apps.replace_namespaced_stateful_set("elasticsearch", ns, stale)
    assert exc.value.status == 409
    apps.delete_namespaced_stateful_set("elasticsearch", ns, propagation_policy="Foreground")
    # Foreground: the object stays, with a deletionTimestamp, until its pods are gone
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            apps.read_namespaced_stateful_set("elasticsearch", ns)
        except ApiException as e:
            assert e.status == 404
            break
        time.sleep(0.1)
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_stateful_set("elasticsearch", ns)
    assert exc.value.status == 404


def test_typed_deletes_return_the_deleted_object(api, ns, k8s):
    """Services, ServiceAccounts and StorageClasses answer a DELETE with the
    object, which the typed client returns as that type."""
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    fast = k8s.unique("fast")
    core.create_namespaced_service(ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="svc"), spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)])))
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="sa")))
    storage.create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name=fast),
                                                       provisioner="example.com/fast"))
    svc = core.delete_namespaced_service("svc", ns)
    assert isinstance(svc, client.V1Service) and svc.metadata.name == "svc" and svc.spec.cluster_ip
    sa = core.delete_namespaced_service_account("sa", ns)
    assert isinstance(sa, client.V1ServiceAccount) and sa.metadata.name == "sa"
    sc = storage.delete_storage_class(fast)
    assert isinstance(sc, client.V1StorageClass) and sc.provisioner == "example.com/fast"


def test_unknown_fields_give_a_warning_to_the_python_client(kubesim):
    """Simulator only: it reads the request log (what the client sent, the
    warnings answered). test_api_core checks the Warning header on both."""
    api = config.new_client_from_config(config_file=kubesim.kubeconfig)
    cms = dynamic.DynamicClient(api).resources.get(api_version="v1", kind="ConfigMap")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"a": "b"}, "extra": 1}
    created = cms.create(body=body, namespace="default")
    assert created.metadata.name == "c1"
    post = [r for r in kubesim.requests() if r["method"] == "POST"][-1]
    assert post["status"] == 201 and "fieldValidation" not in post["query"]
    assert post["warnings"] == ['unknown field "extra"']
    assert "extra" not in kubesim.get("configmaps", "default", "c1")


def test_watch_through_the_client(api, ns):
    core = client.CoreV1Api(api)
    seen = []
    w = watch.Watch()
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w1"}, "data": {"a": "1"}})
    for event in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "w1" and event["type"] == "ADDED":
            core.patch_namespaced_config_map("w1", ns, {"data": {"a": "2"}})
        if event["type"] == "MODIFIED":
            core.delete_namespaced_config_map("w1", ns)
        if event["type"] == "DELETED":
            w.stop()
    assert [s for s in seen if s[1] == "w1"] == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_dynamic_client_discovery_apply_and_status(api, k8s):
    dyn = dynamic.DynamicClient(api)
    sts_api = dyn.resources.get(api_version="apps/v1", kind="StatefulSet")
    assert sts_api.namespaced and sts_api.short_names == ["sts"]
    pvc_api = dyn.resources.get(api_version="v1", kind="PersistentVolumeClaim")
    assert pvc_api.short_names == ["pvc"]
    ns_api = dyn.resources.get(api_version="v1", kind="Namespace")
    ns = k8s.unique("dyn")
    ns_api.create(body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    body = client.ApiClient().sanitize_for_serialization(sts_body(ns))
    body.update(apiVersion="apps/v1", kind="StatefulSet")
    applied = sts_api.server_side_apply(body=body, name="elasticsearch", namespace=ns,
                                        field_manager="ansible", force_conflicts=True)
    assert applied.metadata.managedFields[0].manager == "ansible"
    got = sts_api.get(name="elasticsearch", namespace=ns)
    assert got.spec.replicas == 1
    listed = sts_api.get(namespace=ns, label_selector="")
    assert [i.metadata.name for i in listed.items] == ["elasticsearch"]
    # the controllers create the claim from the template and bind it
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pvcs = pvc_api.get(namespace=ns).items
        if pvcs and pvcs[0].status.phase == "Bound":
            break
        time.sleep(0.1)
    assert [p.metadata.name for p in pvcs] == ["elasticsearch-data-elasticsearch-0"]
    assert pvcs[0].status.phase == "Bound"
    with pytest.raises(dynamic.exceptions.UnprocessibleEntityError):
        pvc_api.patch(name="elasticsearch-data-elasticsearch-0", namespace=ns,
                      body={"spec": {"resources": {"requests": {"storage": "500Mi"}}}},
                      content_type="application/merge-patch+json")
    deleted = ns_api.delete(name=ns)
    assert deleted.status.phase == "Terminating" and deleted.metadata.deletionTimestamp
    deadline = time.monotonic() + 60  # a real namespace controller takes 5 to 10 s
    while time.monotonic() < deadline:
        try:
            ns_api.get(name=ns)
        except dynamic.exceptions.NotFoundError:
            break
        time.sleep(0.2)
    with pytest.raises(dynamic.exceptions.NotFoundError):
        ns_api.get(name=ns)
    assert pvc_api.get(namespace=ns).items == []
