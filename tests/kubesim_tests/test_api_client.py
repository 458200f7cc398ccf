"""The official ``kubernetes`` Python client (typed and dynamic) against the simulator."""

import time

import pytest
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

pytest_plugins = ["tests.kubesim.pytest_plugin"]


@pytest.fixture
def api(kubesim):
    api_client = config.new_client_from_config(config_file=kubesim.kubeconfig)
    yield api_client
    api_client.close()


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


def test_typed_clients_crud_and_errors(api):
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="es1", labels={"team": "a"})))
    ns = core.read_namespace("es1")
    assert ns.status.phase == "Active" and ns.metadata.labels["kubernetes.io/metadata.name"] == "es1"
    assert "es1" in [n.metadata.name for n in core.list_namespace(label_selector="team=a").items]
    created = apps.create_namespaced_stateful_set("es1", sts_body("es1"))
    assert created.metadata.generation == 1 and created.spec.pod_management_policy == "OrderedReady"
    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_stateful_set("es1", sts_body("es1"))
    assert exc.value.status == 409 and '"reason":"AlreadyExists"' in exc.value.body.replace(" ", "")
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_stateful_set("nope", "es1")
    assert exc.value.status == 404
    scale = apps.patch_namespaced_stateful_set_scale("elasticsearch", "es1", {"spec": {"replicas": 2}})
    assert scale.spec.replicas == 2
    assert apps.read_namespaced_stateful_set_scale("elasticsearch", "es1").spec.replicas == 2
    patched = apps.patch_namespaced_stateful_set("elasticsearch", "es1", {"spec": {"template": {"spec": {
        "containers": [{"name": "elasticsearch", "resources": {"limits": {"nvidia.com/gpu": "1"},
                                                               "requests": {"nvidia.com/gpu": "1"}}}]}}}})
    res = patched.spec.template.spec.containers[0].resources
    assert res.limits == {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}
    assert patched.metadata.generation == 3
    with pytest.raises(ApiException) as exc:
        apps.patch_namespaced_stateful_set("elasticsearch", "es1", {"spec": {"serviceName": "x"}})
    assert exc.value.status == 422
    stale = apps.read_namespaced_stateful_set("elasticsearch", "es1")
    for _u in range(20):  # the controller writes status concurrently: retry on conflict as clients do
        fresh = apps.read_namespaced_stateful_set("elasticsearch", "es1")
        fresh.metadata.labels = {"a": "b"}
        try:
            apps.replace_namespaced_stateful_set("elasticsearch", "es1", fresh)
            break
        except ApiException as e:
            assert e.status == 409
    assert apps.read_namespaced_stateful_set("elasticsearch", "es1").metadata.labels == {"a": "b"}
    stale.metadata.labels = {"a": "stale"}
    with pytest.raises(ApiException) as exc:
        apps.replace_namespaced_stateful_set("elasticsearch", "es1", stale)
    assert exc.value.status == 409
    apps.delete_namespaced_stateful_set("elasticsearch", "es1", propagation_policy="Foreground")
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_stateful_set("elasticsearch", "es1")
    assert exc.value.status == 404


def test_typed_deletes_return_the_deleted_object(api):
    """Services, ServiceAccounts and StorageClasses answer a DELETE with the
    object, which the typed client returns as that type."""
    core = client.CoreV1Api(api)
    storage = client.StorageV1Api(api)
    core.create_namespaced_service("default", client.V1Service(
        metadata=client.V1ObjectMeta(name="svc"), spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)])))
    core.create_namespaced_service_account("default", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="sa")))
    storage.create_storage_class(client.V1StorageClass(metadata=client.V1ObjectMeta(name="fast"),
                                                       provisioner="example.com/fast"))
    svc = core.delete_namespaced_service("svc", "default")
    assert isinstance(svc, client.V1Service) and svc.metadata.name == "svc" and svc.spec.cluster_ip
    sa = core.delete_namespaced_service_account("sa", "default")
    assert isinstance(sa, client.V1ServiceAccount) and sa.metadata.name == "sa"
    sc = storage.delete_storage_class("fast")
    assert isinstance(sc, client.V1StorageClass) and sc.provisioner == "example.com/fast"


def test_unknown_fields_give_a_warning_to_the_python_client(api, kubesim):
    cms = dynamic.DynamicClient(api).resources.get(api_version="v1", kind="ConfigMap")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"a": "b"}, "extra": 1}
    created = cms.create(body=body, namespace="default")
    assert created.metadata.name == "c1"
    post = [r for r in kubesim.requests() if r["method"] == "POST"][-1]
    assert post["status"] == 201 and "fieldValidation" not in post["query"]
    assert post["warnings"] == ['unknown field "extra"']
    assert "extra" not in kubesim.get("configmaps", "default", "c1")


def test_watch_through_the_client(api):
    core = client.CoreV1Api(api)
    seen = []
    w = watch.Watch()
    core.create_namespaced_config_map("default", {"metadata": {"name": "w1"}, "data": {"a": "1"}})
    for event in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "w1" and event["type"] == "ADDED":
            core.patch_namespaced_config_map("w1", "default", {"data": {"a": "2"}})
        if event["type"] == "MODIFIED":
            core.delete_namespaced_config_map("w1", "default")
        if event["type"] == "DELETED":
            w.stop()
    assert [s for s in seen if s[1] == "w1"] == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_dynamic_client_discovery_apply_and_status(api, kubesim):
    dyn = dynamic.DynamicClient(api)
    sts_api = dyn.resources.get(api_version="apps/v1", kind="StatefulSet")
    assert sts_api.namespaced and sts_api.short_names == ["sts"]
    pvc_api = dyn.resources.get(api_version="v1", kind="PersistentVolumeClaim")
    assert pvc_api.short_names == ["pvc"]
    ns_api = dyn.resources.get(api_version="v1", kind="Namespace")
    ns_api.create(body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dyn"}})
    body = client.ApiClient().sanitize_for_serialization(sts_body("dyn"))
    body.update(apiVersion="apps/v1", kind="StatefulSet")
    applied = sts_api.server_side_apply(body=body, name="elasticsearch", namespace="dyn",
                                        field_manager="ansible", force_conflicts=True)
    assert applied.metadata.managedFields[0].manager == "ansible"
    got = sts_api.get(name="elasticsearch", namespace="dyn")
    assert got.spec.replicas == 1
    listed = sts_api.get(namespace="dyn", label_selector="")
    assert [i.metadata.name for i in listed.items] == ["elasticsearch"]
    # the controllers create the claim from the template and bind it
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pvcs = pvc_api.get(namespace="dyn").items
        if pvcs and pvcs[0].status.phase == "Bound":
            break
        time.sleep(0.1)
    assert [p.metadata.name for p in pvcs] == ["elasticsearch-data-elasticsearch-0"]
    assert pvcs[0].status.phase == "Bound"
    with pytest.raises(dynamic.exceptions.UnprocessibleEntityError):
        pvc_api.patch(name="elasticsearch-data-elasticsearch-0", namespace="dyn",
                      body={"spec": {"resources": {"requests": {"storage": "500Mi"}}}},
                      content_type="application/merge-patch+json")
    deleted = ns_api.delete(name="dyn")
    assert deleted.status.phase == "Terminating" and deleted.metadata.deletionTimestamp
    deadline = time.monotonic() + 20
    while kubesim.get("namespaces", None, "dyn") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kubesim.objects("persistentvolumeclaims", "dyn") == []
    with pytest.raises(dynamic.exceptions.NotFoundError):
        ns_api.get(name="dyn")
