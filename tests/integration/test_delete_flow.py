"""The delete flow end to end (playbooks/delete_cluster.yml): the real playbook
against the cluster fixture, asserting on the reports, the log, the metadata
store and what is left in the cluster."""

import os

from kubernetes import client

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import query
from tests.integration.flow import (
    expected_log_line,
    find_deployment,
    log_lines,
    output,
    reports,
    run_playbook,
    start_held_create,
    tenant_record,
    tenant_vars,
    wait_for,
)

DELETE = "playbooks/delete_cluster.yml"
DELETE_MESSAGES = {"deleting": "Deleting cluster", "resources_deleted": "Kubernetes resources deleted",
                   "deleted": "Cluster deleted successfully"}
MANAGED = "app.kubernetes.io/managed-by=es-serverless"


def create(cluster, data_dir, user, service, namespace, **extra):
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars(user, service, namespace, **extra))
    assert proc.returncode == 0, output(proc)
    return proc


def delete(cluster, data_dir, user, service, **extra):
    return run_playbook(cluster.kubeconfig, data_dir, dict(es_user=user, es_service_name=service, **extra),
                        playbook=DELETE)


def all_namespaces(cluster):
    """Every namespace, Terminating ones too."""
    return {ns.metadata.name for ns in cluster.core.list_namespace().items}


def ours_in(cluster, namespace):
    """The objects labelled managed-by es-serverless and the data PVCs left in ``namespace``."""
    policy, networking = client.PolicyV1Api(cluster.api), client.NetworkingV1Api(cluster.api)
    listings = {
        "statefulsets": cluster.apps.list_namespaced_stateful_set,
        "deployments": cluster.apps.list_namespaced_deployment,
        "services": cluster.core.list_namespaced_service,
        "configmaps": cluster.core.list_namespaced_config_map,
        "secrets": cluster.core.list_namespaced_secret,
        "resourcequotas": cluster.core.list_namespaced_resource_quota,
        "limitranges": cluster.core.list_namespaced_limit_range,
        "poddisruptionbudgets": policy.list_namespaced_pod_disruption_budget,
        "networkpolicies": networking.list_namespaced_network_policy,
    }
    left = {}
    for name, listing in listings.items():
        names = [o.metadata.name for o in listing(namespace, label_selector=MANAGED).items]
        if names:
            left[name] = names
    pvcs = [p.metadata.name for p in
            cluster.core.list_namespaced_persistent_volume_claim(namespace, label_selector="app=elasticsearch").items]
    if pvcs:
        left["persistentvolumeclaims"] = pvcs
    return left


def assert_deleted(data_dir, user, service, namespace):
    """Three delete reports in order after the create's, their log lines, status deleted, history kept."""
    got = reports(data_dir, user, service)
    names = [n for n, _b in got]
    assert names == sorted(names)
    delete_id = got[-1][1]["deployment_id"]
    deleted = [b for _n, b in got if b["deployment_id"] == delete_id]
    assert [b["status"] for b in deleted] == list(DELETE_MESSAGES)
    assert [b["message"] for b in deleted] == list(DELETE_MESSAGES.values())
    assert all((b["user"], b["service_name"], b["namespace"]) == (user, service, namespace) for b in deleted)
    created_id = got[0][1]["deployment_id"]
    assert created_id != delete_id
    assert [b["status"] for _n, b in got if b["deployment_id"] == created_id][-1] == "completed"
    assert deleted[0]["details"]["deployment_deleted"] == created_id
    lines = [ln for ln in log_lines(data_dir) if ("User: %s, Service: %s," % (user, service)) in ln]
    assert lines == [expected_log_line(b) for _n, b in got]

    entry = find_deployment(data_dir, user, service)
    assert (entry["status"], entry["deployment_id"], entry["previous_deployment_id"]) == (
        "deleted", delete_id, created_id)
    assert entry["namespace"] == namespace and entry["request"]["namespace"] == namespace
    assert tenant_record(data_dir, user, service) is None
    assert not os.path.exists(os.path.join(data_dir, "namespaces", namespace + ".json"))
    answer = query(data_dir, user, service)
    assert [d["status"] for d in answer["deployments"]] == ["deleted"]
    assert answer["tenant"] is None
    assert [i["report"]["status"] for i in answer["reports"]] == [b["status"] for _n, b in got]
    assert answer["latest_report"]["report"]["status"] == "deleted"
    return deleted


def test_delete_in_the_namespace_the_create_made(cluster, data_dir):
    create(cluster, data_dir, "del_user", "svc", "es-del")
    ns = cluster.core.read_namespace("es-del").metadata
    assert ns.labels["es-cluster"] == "true" and ns.labels["app.kubernetes.io/managed-by"] == "es-serverless"
    assert ns.annotations["es.yunpeng.cn/user"] == "del_user"
    assert ns.annotations["es.yunpeng.cn/service-name"] == "svc"
    created_id = find_deployment(data_dir, "del_user", "svc")["deployment_id"]
    assert ns.annotations["es.yunpeng.cn/deployment-id"] == created_id

    proc = delete(cluster, data_dir, "del_user", "svc")
    assert proc.returncode == 0, output(proc)
    # The playbook waited until the namespace was gone, not only Terminating (the simulator
    # finalizes a namespace within about a second: its request log shows the wait).
    assert "es-del" not in all_namespaces(cluster)
    if cluster.sim:
        log = [(r["method"], r["status"]) for r in cluster.sim.requests() if r["path"] == "/api/v1/namespaces/es-del"]
        after = log[[method for method, _s in log].index("DELETE"):]
        assert ("GET", 404) in after, log
    deleted = assert_deleted(data_dir, "del_user", "svc", "es-del")
    assert deleted[1]["details"]["namespace_deleted"] is True

    # The namespace and the quota are free again: the same tenant is created again.
    create(cluster, data_dir, "del_user", "svc", "es-del", es_quota={"max_clusters_per_user": 1})
    assert find_deployment(data_dir, "del_user", "svc")["status"] == "created"
    assert tenant_record(data_dir, "del_user", "svc")["status"] == "created"
    assert cluster.apps.read_namespaced_stateful_set("elasticsearch", "es-del").status.ready_replicas == 1
    statuses = [b["status"] for _n, b in reports(data_dir, "del_user", "svc")]
    assert statuses[9:12] == list(DELETE_MESSAGES)
    assert statuses[:9] == statuses[12:] and statuses[-1] == "completed" and len(statuses) == 21


def test_delete_in_a_namespace_that_existed_keeps_it_and_what_is_not_ours(cluster, data_dir):
    cluster.core.create_namespace({"metadata": {"name": "es-shared-del", "labels": {"team": "search"}}})
    cluster.core.create_namespaced_config_map("es-shared-del", {"metadata": {"name": "keep-me"}, "data": {"a": "b"}})
    create(cluster, data_dir, "shared_del", "svc", "es-shared-del")
    ns = cluster.core.read_namespace("es-shared-del").metadata
    assert ns.labels["es-cluster"] == "true" and ns.labels["team"] == "search"
    assert "app.kubernetes.io/managed-by" not in ns.labels
    assert not [key for key in (ns.annotations or {}) if key.startswith("es.yunpeng.cn/")]
    expected = {"statefulsets", "deployments", "services", "configmaps", "secrets", "persistentvolumeclaims"}
    assert set(ours_in(cluster, "es-shared-del")) >= expected

    proc = delete(cluster, data_dir, "shared_del", "svc")
    assert proc.returncode == 0, output(proc)
    assert ours_in(cluster, "es-shared-del") == {}
    ns = cluster.core.read_namespace("es-shared-del")
    assert ns.status.phase == "Active" and ns.metadata.labels["team"] == "search"
    assert cluster.core.read_namespaced_config_map("keep-me", "es-shared-del").data == {"a": "b"}
    deleted = assert_deleted(data_dir, "shared_del", "svc", "es-shared-del")
    assert deleted[1]["details"]["namespace_deleted"] is False
    kinds = {o["kind"] for o in deleted[1]["details"]["objects"]}
    assert {"StatefulSet", "Deployment", "Secret", "PersistentVolumeClaim"} <= kinds


def test_deleting_an_unknown_tenant_writes_nothing(cluster, data_dir):
    proc = delete(cluster, data_dir, "ghost", "svc")
    assert proc.returncode != 0
    assert "nothing to delete" in output(proc)
    assert not os.path.exists(data_dir)

    create(cluster, data_dir, "known", "svc", "es-known")

    def snapshot():
        out = {}
        for dirpath, _dirs, files in os.walk(data_dir):
            for name in files:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, data_dir)] = f.read()
        return out
    before = snapshot()
    for user, service in (("ghost", "svc"), ("known", "other"), ("../../etc", "svc")):
        proc = delete(cluster, data_dir, user, service)
        assert proc.returncode != 0
        assert "nothing to delete" in output(proc)
    assert snapshot() == before
    assert "es-known" in cluster.namespace_names()


def test_a_cluster_being_created_is_not_deleted(cluster, data_dir):
    first = start_held_create(cluster, data_dir, "busy_user", "svc", "es-busy")  # held in its rollout
    assert wait_for(lambda: (find_deployment(data_dir, "busy_user", "svc") or {}).get("status") == "creating",
                    timeout=120)
    entry = find_deployment(data_dir, "busy_user", "svc")
    proc = delete(cluster, data_dir, "busy_user", "svc")
    assert proc.returncode != 0
    assert "is being created by deployment %s" % entry["deployment_id"] in output(proc)

    def unrenewed(found):  # the running create's reports move its lease on meanwhile
        return dict(found, lease={k: v for k, v in found["lease"].items() if k not in ("renewed_at", "expires_at")})
    assert unrenewed(find_deployment(data_dir, "busy_user", "svc")) == unrenewed(entry)
    out, _e = first.communicate(timeout=300)
    assert out.startswith("0"), out

    got = reports(data_dir, "busy_user", "svc")
    refused = [b for _n, b in got if b["deployment_id"] != entry["deployment_id"]]
    assert [b["status"] for b in refused] == ["failed"]
    assert refused[0]["message"].startswith("Cluster deletion failed at stage delete_metadata: ")
    assert "is being created" in refused[0]["message"] and refused[0]["namespace"] == "es-busy"
    assert [b["status"] for _n, b in got if b["deployment_id"] == entry["deployment_id"]][-1] == "completed"
    # The refusal is history; the cluster is created and a query says so.
    assert find_deployment(data_dir, "busy_user", "svc")["status"] == "created"
    assert tenant_record(data_dir, "busy_user", "svc")["status"] == "created"
    latest = query(data_dir, "busy_user", "svc")["latest_report"]["report"]
    assert (latest["status"], latest["deployment_id"]) == ("completed", entry["deployment_id"])
    assert "es-busy" in cluster.namespace_names()


def test_a_failed_delete_is_recorded_and_a_second_delete_finishes(sim_cluster, data_dir):
    cluster = sim_cluster  # HTTP fault injection: the simulator's
    create(cluster, data_dir, "flaky_user", "svc", "es-flaky")
    # A single 500 is retried (tests/integration/test_api_faults.py): six fail the first attempt and its 5 retries.
    cluster.sim.add_fault("DELETE:namespaces:500:6")
    proc = delete(cluster, data_dir, "flaky_user", "svc")
    assert proc.returncode != 0
    got = reports(data_dir, "flaky_user", "svc")
    failed = got[-1][1]
    assert [b["status"] for _n, b in got if b["deployment_id"] == failed["deployment_id"]] == ["deleting", "failed"]
    assert failed["message"].startswith("Cluster deletion failed at stage delete_resources: cannot remove")
    assert "Namespace es-flaky: 500 Internal Server Error: Internal error occurred: injected fault" in failed["message"]
    assert log_lines(data_dir)[-1] == expected_log_line(failed)
    entry = find_deployment(data_dir, "flaky_user", "svc")
    assert (entry["status"], entry["stage"]) == ("failed", "delete_resources") and "500" in entry["error"]
    assert tenant_record(data_dir, "flaky_user", "svc") is None
    assert "es-flaky" in cluster.namespace_names()

    proc = delete(cluster, data_dir, "flaky_user", "svc")
    assert proc.returncode == 0, output(proc)
    assert "es-flaky" not in all_namespaces(cluster)
    assert find_deployment(data_dir, "flaky_user", "svc")["status"] == "deleted"
    assert [b["status"] for _n, b in reports(data_dir, "flaky_user", "svc")][-3:] == list(DELETE_MESSAGES)


def test_a_deleted_cluster_is_not_deleted_twice(cluster, data_dir):
    create(cluster, data_dir, "twice", "svc", "es-twice")
    assert delete(cluster, data_dir, "twice", "svc").returncode == 0
    entry = find_deployment(data_dir, "twice", "svc")
    proc = delete(cluster, data_dir, "twice", "svc")
    assert proc.returncode != 0 and "was already deleted" in output(proc)
    assert find_deployment(data_dir, "twice", "svc") == entry
    assert query(data_dir, "twice", "svc")["latest_report"]["report"]["status"] == "deleted"
