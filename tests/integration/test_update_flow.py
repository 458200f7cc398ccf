"""Update: create run again for a created tenant converges the cluster to the new
request, as a deployment of its own, and a failed update puts the previous one back."""

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import query
from tests.integration.flow import (
    find_deployment,
    output,
    reports,
    run_playbook,
    tenant_record,
    tenant_vars,
    wait_for,
)
from tests.integration.test_create_flow import CPU_STATUSES, GPU_STATUSES

NS = "es-upd"
USER, SERVICE = "upd_user", "upd_service"


def tenant(**extra):
    return tenant_vars(USER, SERVICE, NS, **extra)


def versions(cluster):
    """resourceVersion of every object of the tenant namespace (and of the namespace)."""
    out = {"Namespace/" + NS: cluster.core.read_namespace(NS).metadata.resource_version}
    calls = {
        "ConfigMap": cluster.core.list_namespaced_config_map, "Secret": cluster.core.list_namespaced_secret,
        "Service": cluster.core.list_namespaced_service,
        "PersistentVolumeClaim": cluster.core.list_namespaced_persistent_volume_claim,
        "ResourceQuota": cluster.core.list_namespaced_resource_quota,
        "LimitRange": cluster.core.list_namespaced_limit_range,
        "StatefulSet": cluster.apps.list_namespaced_stateful_set, "Deployment": cluster.apps.list_namespaced_deployment,
    }
    for kind, call in calls.items():
        for item in call(NS).items:
            if kind == "ConfigMap" and item.metadata.name == "kube-root-ca.crt":
                continue
            if kind == "PersistentVolumeClaim":  # the volume controller writes claims' status
                out["%s/%s" % (kind, item.metadata.name)] = item.spec.resources.requests["storage"]
                continue
            out["%s/%s" % (kind, item.metadata.name)] = item.metadata.resource_version
    return out


def runs(data_dir):
    """The reports of the tenant grouped by deployment, in order."""
    out = {}
    for _name, body in reports(data_dir, USER, SERVICE):
        out.setdefault(body["deployment_id"], []).append(body)
    return list(out.values())


def by_status(run):
    return {body["status"]: body for body in run}


def sts(cluster):
    return cluster.apps.read_namespaced_stateful_set("elasticsearch", NS)


def es_container(cluster):
    return sts(cluster).spec.template.spec.containers[0]


def claims(cluster):
    return {p.metadata.name: p.spec.resources.requests["storage"]
            for p in cluster.core.list_namespaced_persistent_volume_claim(NS).items}


def test_same_request_changes_nothing(cluster, data_dir):
    # three nodes: the create's bootstrap setting is gone by the end of the create
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant(es_replicas=3))
    assert proc.returncode == 0, output(proc)
    before = versions(cluster)
    first = find_deployment(data_dir, USER, SERVICE)

    proc = run_playbook(cluster.kubeconfig, data_dir, tenant(es_replicas=3))
    assert proc.returncode == 0, output(proc)
    assert versions(cluster) == before
    create, update = runs(data_dir)
    assert [b["status"] for b in update] == CPU_STATUSES
    assert update[0]["deployment_id"] != create[0]["deployment_id"]
    steps = by_status(update)
    assert steps["starting"]["details"]["operation"] == "update"
    assert steps["starting"]["details"]["changes"] == {}
    assert steps["namespace_created"]["details"] == {"changed": False}
    assert steps["k8s_applied"]["details"]["changed"] == [] and steps["k8s_applied"]["details"]["recreated"] == []
    assert steps["resources_configured"]["details"]["changes"] == {}
    assert steps["disk_configured"]["details"]["changes"] == {}
    entry = find_deployment(data_dir, USER, SERVICE)
    assert (entry["status"], entry["deployment_id"]) == ("created", update[0]["deployment_id"])
    assert entry["created_at"] == first["created_at"] and entry["created_by"] == first["deployment_id"]


def test_grow_then_shrink(cluster, data_dir):
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant())
    assert proc.returncode == 0, output(proc)
    uid = sts(cluster).metadata.uid

    grown = tenant(es_replicas=3, es_cpu_request="1", es_cpu_limit="3", es_mem_request="2Gi", es_mem_limit="4Gi",
                   es_disk_size="20Gi", es_gpu_count=1, es_index_limit=200)
    proc = run_playbook(cluster.kubeconfig, data_dir, grown)
    assert proc.returncode == 0, output(proc)
    got = sts(cluster)
    assert got.metadata.uid != uid  # recreated for the new claim size, pods orphaned and adopted
    assert got.spec.replicas == 3
    assert got.spec.volume_claim_templates[0].spec.resources.requests["storage"] == "20Gi"
    assert got.metadata.annotations["es.yunpeng.cn/max-indices"] == "200"
    res = es_container(cluster).resources
    assert res.requests == {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}
    assert res.limits == {"cpu": "3", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert claims(cluster) == {"elasticsearch-data-elasticsearch-%d" % i: "20Gi" for i in range(3)}
    update = runs(data_dir)[-1]
    assert_statuses = [b["status"] for b in update]
    assert assert_statuses == GPU_STATUSES
    steps = by_status(update)
    assert steps["starting"]["details"]["changes"]["replicas"] == {"from": 1, "to": 3}
    assert steps["k8s_applied"]["details"]["recreated"] == [
        {"kind": "StatefulSet", "api_version": "apps/v1", "name": "elasticsearch", "namespace": NS, "created": False}]
    assert steps["resources_configured"]["details"]["changes"] == {
        "replicas": {"from": 1, "to": 3}, "cpu_request": {"from": "500m", "to": "1"},
        "cpu_limit": {"from": "2", "to": "3"}, "mem_request": {"from": "1Gi", "to": "2Gi"},
        "mem_limit": {"from": "2Gi", "to": "4Gi"}, "index_limit": {"from": 100, "to": 200}}
    assert steps["disk_configured"]["message"] == "Disk size configured to 20Gi"
    assert steps["disk_configured"]["details"]["changes"] == {"disk_size": {"from": "10Gi", "to": "20Gi"}}
    expanded = {p["name"]: p["changed"] for p in steps["disk_configured"]["details"]["pvcs"]}
    assert expanded["elasticsearch-data-elasticsearch-0"] is True
    assert steps["gpu_configured"]["details"]["changes"] == {"gpu_count": {"from": 0, "to": 1}}
    assert tenant_record(data_dir, USER, SERVICE)["replicas"] == 3

    # fewer replicas, less cpu, no GPUs: stage 7 reports the GPUs gone
    shrunk = dict(grown, es_replicas=2, es_cpu_limit="1", es_cpu_request="500m", es_gpu_count=0)
    proc = run_playbook(cluster.kubeconfig, data_dir, shrunk)
    assert proc.returncode == 0, output(proc)
    assert sts(cluster).spec.replicas == 2
    res = es_container(cluster).resources
    assert res.requests == {"cpu": "500m", "memory": "2Gi"} and res.limits == {"cpu": "1", "memory": "4Gi"}
    steps = by_status(runs(data_dir)[-1])
    assert steps["gpu_configured"]["message"] == "GPU count configured to 0"
    assert steps["gpu_configured"]["details"]["changes"] == {"gpu_count": {"from": 1, "to": 0}}
    assert steps["k8s_applied"]["details"]["recreated"] == []
    record = tenant_record(data_dir, USER, SERVICE)
    assert (record["replicas"], record["gpu_count"], record["status"]) == (2, 0, "created")


def test_refused_shrink_and_move_change_nothing(cluster, data_dir):
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant(es_disk_size="20Gi"))
    assert proc.returncode == 0, output(proc)
    before = versions(cluster)
    entry = find_deployment(data_dir, USER, SERVICE)
    for change, message in ((dict(es_disk_size="10Gi"), "disk_size: cannot shrink the volume from 20Gi to 10Gi"),
                            (dict(es_namespace="es-elsewhere"), "namespace: cannot change from 'es-upd' to")):
        proc = run_playbook(cluster.kubeconfig, data_dir, dict(tenant(es_disk_size="20Gi"), **change))
        assert proc.returncode != 0
        assert message in output(proc)
        assert versions(cluster) == before
        assert "es-elsewhere" not in cluster.namespace_names()
        assert find_deployment(data_dir, USER, SERVICE) == entry
        refused = runs(data_dir)[-1]
        assert [b["status"] for b in refused] == ["failed"] and message in refused[0]["message"]
    answer = query(data_dir, USER, SERVICE)
    assert answer["deployments"][0]["status"] == "created"
    assert answer["latest_report"]["report"]["status"] == "completed"


def test_quota_counts_the_cluster_once(cluster, data_dir):
    quota = {"es_quota": {"max_cpu_per_user": "4"}}
    proc = run_playbook(cluster.kubeconfig, data_dir, dict(tenant(es_cpu_limit="2"), **quota))
    assert proc.returncode == 0, output(proc)
    proc = run_playbook(cluster.kubeconfig, data_dir, dict(tenant(es_cpu_limit="3"), **quota))
    assert proc.returncode == 0, output(proc)  # 3 of 4, not 2 + 3
    proc = run_playbook(cluster.kubeconfig, data_dir, dict(tenant(es_cpu_limit="3", es_replicas=2), **quota))
    assert proc.returncode != 0 and "quota max_cpu_per_user exceeded" in output(proc)
    assert sts(cluster).spec.replicas == 1


def test_failed_update_rolls_back_to_the_previous_specification(cluster, data_dir):
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant(es_replicas=2))
    assert proc.returncode == 0, output(proc)
    record = tenant_record(data_dir, USER, SERVICE)
    live = find_deployment(data_dir, USER, SERVICE)
    template = sts(cluster).spec.template.to_dict()

    # more GPUs than any node has: the new pods never schedule and the rollout times out
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant(es_replicas=3, es_gpu_count=5, es_rollout_timeout=5,
                                                             es_quota={"max_gpus_per_user": 20}))
    assert proc.returncode != 0
    assert "Cluster creation failed at stage rollout" in output(proc)
    got = sts(cluster)
    assert got.spec.replicas == 2 and got.spec.template.to_dict() == template
    assert wait_for(lambda: "elasticsearch-data-elasticsearch-2" not in claims(cluster))
    assert tenant_record(data_dir, USER, SERVICE) == record
    entry = find_deployment(data_dir, USER, SERVICE)
    assert (entry["status"], entry["deployment_id"], entry["request"]) == (
        "created", live["deployment_id"], live["request"])
    failed = runs(data_dir)[-1]
    assert failed[-1]["status"] == "failed" and entry["last_update"]["deployment_id"] == failed[0]["deployment_id"]
    assert (entry["last_update"]["status"], entry["last_update"]["stage"]) == ("failed", "rollout")
    assert [b["status"] for b in runs(data_dir)[0]] == CPU_STATUSES
