"""The create flow end to end: the real playbook against the cluster fixture,
asserting on report files, the deployment log, the metadata store and the
objects in the cluster."""

import base64
import json
import os
import re
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import query
from tests.integration.conftest import BAD_REGISTRY
from tests.integration.flow import (
    MESSAGES,
    ROOT,
    SKIPPED_GITLAB,
    all_files_text,
    config_checksum,
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

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
CPU_STATUSES = ["starting", "namespace_created", "gitlab_pulled", "k8s_applied", "resources_configured",
                "disk_configured", "rollout_completed", "tenant_synced", "completed"]
GPU_STATUSES = CPU_STATUSES[:6] + ["gpu_configured"] + CPU_STATUSES[6:]


def expected_message(status, disk="10Gi", gpus=0):
    if status == "gitlab_pulled":
        return SKIPPED_GITLAB
    if status == "disk_configured":
        return "Disk size configured to %s" % disk
    if status == "gpu_configured":
        return "GPU count configured to %d" % gpus
    return MESSAGES[status]


def assert_reports_and_log(data_dir, user, service, namespace, statuses, disk="10Gi", gpus=0):
    got = reports(data_dir, user, service)
    assert [b["status"] for _u, b in got] == statuses
    assert [b["message"] for _u, b in got] == [expected_message(s, disk, gpus) for s in statuses]
    names = [n for n, _u in got]
    assert names == sorted(names) and len(set(names)) == len(names)
    prefix = "%s_%s_" % (user, service)
    assert all(n.startswith(prefix) and n.endswith(".json") for n in names)
    ids = {b["deployment_id"] for _u, b in got}
    assert len(ids) == 1 and ids != {""}
    for _u, body in got:
        assert TS.match(body["timestamp"])
        assert (body["user"], body["service_name"], body["namespace"]) == (user, service, namespace)
    lines = [ln for ln in log_lines(data_dir) if ("User: %s, Service: %s," % (user, service)) in ln]
    assert lines == [expected_log_line(b) for _u, b in got]
    return got


def test_cpu_tenant_nine_reports_metadata_and_objects(cluster, data_dir):
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars(es_replicas=1))
    assert proc.returncode == 0, output(proc)
    got = assert_reports_and_log(data_dir, "test_user", "test_service", "es-test", CPU_STATUSES)

    starting = got[0][1]
    assert starting["details"] == {
        "user": "test_user", "service_name": "test_service", "namespace": "es-test", "replicas": 1,
        "cpu_request": "500m", "cpu_limit": "2", "mem_request": "1Gi", "mem_limit": "2Gi", "disk_size": "10Gi",
        "gpu_count": 0, "dimension": 128, "vector_count": 10000, "index_limit": 100, "tenant_org_id": "test-org"}
    assert got[-1][1]["details"] == starting["details"]

    record = tenant_record(data_dir, "test_user", "test_service")
    assert record["status"] == "created" and record["sync_time"]
    assert record["cpu"] == "500m/2" and record["memory"] == "1Gi/2Gi" and record["disk"] == "10Gi"
    assert record["resources"]["endpoints"]["elasticsearch"] == "https://elasticsearch.es-test.svc:9200"
    deployment = find_deployment(data_dir, "test_user", "test_service")
    assert deployment["status"] == "created" and deployment["deployment_id"] == got[0][1]["deployment_id"]

    ns = cluster.core.read_namespace("es-test")
    assert ns.metadata.labels["es-cluster"] == "true"
    cm = cluster.core.read_namespaced_config_map("elasticsearch-config", "es-test")
    assert "discovery.type: single-node" in cm.data["elasticsearch.yml"]
    svc = {s.metadata.name: s for s in cluster.core.list_namespaced_service("es-test").items}
    assert sorted(p.port for p in svc["elasticsearch"].spec.ports) == [9200, 9300]
    assert [p.port for p in svc["kibana"].spec.ports] == [5601]
    sts = cluster.apps.read_namespaced_stateful_set("elasticsearch", "es-test")
    assert sts.metadata.annotations["es.yunpeng.cn/max-indices"] == "100"
    assert sts.spec.replicas == 1
    es = [c for c in sts.spec.template.spec.containers if c.name == "elasticsearch"][0]
    assert es.image == "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"
    assert es.resources.requests == {"cpu": "500m", "memory": "1Gi"}
    assert es.resources.limits == {"cpu": "2", "memory": "2Gi"}
    assert sts.status.ready_replicas == 1
    assert_pod_hardening(cluster, sts, cm, "es-test", anti_affinity="soft")
    pvc = cluster.core.read_namespaced_persistent_volume_claim("elasticsearch-data-elasticsearch-0", "es-test")
    assert pvc.spec.resources.requests["storage"] == "10Gi"
    kibana = cluster.apps.read_namespaced_deployment("kibana", "es-test")
    assert kibana.spec.template.spec.containers[0].image == "docker.elastic.co/kibana/kibana:8.15.3"
    assert kibana.status.available_replicas == 1

    secret = cluster.core.read_namespaced_secret("elasticsearch-credentials", "es-test")
    password = base64.b64decode(secret.data["elastic-password"]).decode()
    assert len(password) >= 24
    assert password not in all_files_text(data_dir)
    assert password not in output(proc)


def assert_pod_hardening(cluster, sts, cm, namespace, anti_affinity):
    pod = sts.spec.template.spec
    assert pod.automount_service_account_token is False
    assert pod.termination_grace_period_seconds == 180
    ctx = pod.security_context
    assert (ctx.run_as_user, ctx.run_as_group, ctx.run_as_non_root, ctx.fs_group) == (1000, 1000, True, 1000)
    es = [c for c in pod.containers if c.name == "elasticsearch"][0]
    assert es.security_context.allow_privilege_escalation is False and es.security_context.privileged is False
    assert es.security_context.capabilities.drop == ["ALL"]
    # The one privileged container is the init container that raises vm.max_map_count.
    assert [c.name for c in pod.init_containers or [] if c.security_context.privileged] == ["sysctl"]
    spread = pod.affinity.pod_anti_affinity
    if anti_affinity == "soft":
        assert spread.required_during_scheduling_ignored_during_execution is None
        term = spread.preferred_during_scheduling_ignored_during_execution[0].pod_affinity_term
    else:
        assert spread.preferred_during_scheduling_ignored_during_execution is None
        term = spread.required_during_scheduling_ignored_during_execution[0]
    assert term.topology_key == "kubernetes.io/hostname"
    assert term.label_selector.match_labels == {"app": "elasticsearch"}
    # The checksum of the ConfigMap's data is on the pod template: a changed configuration rolls the pods.
    assert sts.spec.template.metadata.annotations["es.yunpeng.cn/config-checksum"] == config_checksum(cm.data)
    kibana = cluster.apps.read_namespaced_deployment("kibana", namespace).spec.template.spec
    assert kibana.automount_service_account_token is False and kibana.security_context.run_as_non_root is True
    assert kibana.containers[0].security_context.allow_privilege_escalation is False
    pdb = client.PolicyV1Api(cluster.api).read_namespaced_pod_disruption_budget("elasticsearch", namespace)
    assert pdb.spec.max_unavailable == 1 and pdb.spec.selector.match_labels == {"app": "elasticsearch"}


def test_hard_anti_affinity_puts_each_node_on_its_own_kubernetes_node(cluster, data_dir):
    if cluster.controlplane is None:
        pytest.skip("the scheduler's spreading needs the control plane's two nodes; the simulator has one")
    vars_ = tenant_vars("spread_user", "svc", "es-spread", es_replicas=2, es_anti_affinity="hard")
    proc = run_playbook(cluster.kubeconfig, data_dir, vars_)
    assert proc.returncode == 0, output(proc)
    sts = cluster.apps.read_namespaced_stateful_set("elasticsearch", "es-spread")
    cm = cluster.core.read_namespaced_config_map("elasticsearch-config", "es-spread")
    assert_pod_hardening(cluster, sts, cm, "es-spread", anti_affinity="hard")
    pods = cluster.core.list_namespaced_pod("es-spread", label_selector="app=elasticsearch").items
    assert len(pods) == 2 and len({p.spec.node_name for p in pods}) == 2


def test_gpu_tenant_ten_reports(cluster, data_dir):
    vars_ = tenant_vars("gpu_user", "vectors", "es-gpu", es_replicas=2, es_gpu_count=2, es_disk_size="20Gi")
    proc = run_playbook(cluster.kubeconfig, data_dir, vars_)
    assert proc.returncode == 0, output(proc)
    assert_reports_and_log(data_dir, "gpu_user", "vectors", "es-gpu", GPU_STATUSES, disk="20Gi", gpus=2)

    sts = cluster.apps.read_namespaced_stateful_set("elasticsearch", "es-gpu")
    es = [c for c in sts.spec.template.spec.containers if c.name == "elasticsearch"][0]
    assert es.resources.limits["nvidia.com/gpu"] == "2"
    assert es.resources.requests["nvidia.com/gpu"] == "2"
    assert sts.spec.replicas == 2 and sts.status.ready_replicas == 2
    # Applied once, complete: no pod ever ran without its resources and GPUs.
    assert sts.metadata.generation == 1
    assert es.resources.requests["cpu"] == "500m" and es.resources.limits["memory"] == "2Gi"
    assert sts.metadata.annotations["es.yunpeng.cn/max-indices"] == "100"
    cm = cluster.core.read_namespaced_config_map("elasticsearch-config", "es-gpu")
    assert "elasticsearch-headless" in cm.data["elasticsearch.yml"]
    assert "single-node" not in cm.data["elasticsearch.yml"]
    for i in range(2):
        pvc = cluster.core.read_namespaced_persistent_volume_claim("elasticsearch-data-elasticsearch-%d" % i, "es-gpu")
        assert pvc.spec.resources.requests["storage"] == "20Gi"
    assert find_deployment(data_dir, "gpu_user", "vectors")["status"] == "created"


def _assert_failed_run(data_dir, user, service, stage, proc):
    assert proc.returncode != 0
    got = reports(data_dir, user, service)
    failed = got[-1][1]
    assert failed["status"] == "failed"
    assert failed["message"].startswith("Cluster creation failed at stage %s: " % stage)
    assert log_lines(data_dir)[-1] == expected_log_line(failed)
    assert tenant_record(data_dir, user, service) is None
    deployment = find_deployment(data_dir, user, service)
    assert deployment["status"] == "failed" and deployment["stage"] == stage
    assert deployment["error"]
    return got


def test_image_pull_failure_fails_fast_and_rolls_back(cluster, data_dir):
    vars_ = tenant_vars("pull_user", "svc", "es-pull", es_kibana_image=BAD_REGISTRY + "/kibana/kibana:8.15.3",
                        es_rollout_timeout=300)
    started = time.monotonic()
    proc = run_playbook(cluster.kubeconfig, data_dir, vars_)
    elapsed = time.monotonic() - started
    got = _assert_failed_run(data_dir, "pull_user", "svc", "rollout", proc)
    assert [b["status"] for _u, b in got] == CPU_STATUSES[:6] + ["failed"]
    message = got[-1][1]["message"]
    assert "ImagePullBackOff" in message or "ErrImagePull" in message
    assert BAD_REGISTRY + "/kibana/kibana:8.15.3" in message and "kibana" in message
    assert elapsed < 150, "the rollout wait should end at the first doomed pod, not at the timeout"
    # The namespace this run created is removed with everything in it.
    assert wait_for(lambda: "es-pull" not in cluster.namespace_names(), timeout=60)


def test_keep_failed_resources(cluster, data_dir):
    vars_ = tenant_vars("keep_user", "svc", "es-keep", es_kibana_image=BAD_REGISTRY + "/kibana:1",
                        es_keep_failed_resources=True)
    proc = run_playbook(cluster.kubeconfig, data_dir, vars_)
    _assert_failed_run(data_dir, "keep_user", "svc", "rollout", proc)
    assert cluster.apps.read_namespaced_stateful_set("elasticsearch", "es-keep").metadata.name == "elasticsearch"
    assert "es-keep" in cluster.namespace_names()


def test_existing_namespace_is_left_alone_on_failure(cluster, data_dir):
    cluster.core.create_namespace({"metadata": {"name": "es-shared"}})
    cluster.core.create_namespaced_config_map("es-shared", {"metadata": {"name": "keep-me"}, "data": {"a": "b"}})
    vars_ = tenant_vars("shared_user", "svc", "es-shared", es_kibana_image=BAD_REGISTRY + "/kibana:1")
    proc = run_playbook(cluster.kubeconfig, data_dir, vars_)
    _assert_failed_run(data_dir, "shared_user", "svc", "rollout", proc)
    assert "es-shared" in cluster.namespace_names()
    assert cluster.core.read_namespaced_config_map("keep-me", "es-shared").data == {"a": "b"}

    def gone():
        left = []
        for read in (lambda: cluster.apps.read_namespaced_stateful_set("elasticsearch", "es-shared"),
                     lambda: cluster.apps.read_namespaced_deployment("kibana", "es-shared"),
                     lambda: cluster.core.read_namespaced_config_map("elasticsearch-config", "es-shared"),
                     lambda: cluster.core.read_namespaced_secret("elasticsearch-credentials", "es-shared"),
                     lambda: cluster.core.read_namespaced_secret("elasticsearch-security", "es-shared"),
                     lambda: cluster.core.read_namespaced_config_map("elasticsearch-ca", "es-shared"),
                     lambda: cluster.core.read_namespaced_persistent_volume_claim(
                         "elasticsearch-data-elasticsearch-0", "es-shared")):
            try:
                left.append(read().metadata.name)
            except ApiException as exc:
                assert exc.status == 404
        return not left
    assert wait_for(gone, timeout=30)


def test_quota_refusal_creates_nothing(cluster, data_dir):
    vars_ = tenant_vars("quota_user", "svc", "es-quota", es_gpu_count=1,
                        es_quota={"max_gpus_per_user": 0})
    before = cluster.namespace_names()
    proc = run_playbook(cluster.kubeconfig, data_dir, vars_)
    got = _assert_failed_run(data_dir, "quota_user", "svc", "metadata", proc)
    assert [b["status"] for _u, b in got] == ["failed"]
    assert "max_gpus_per_user" in got[0][1]["message"]
    assert cluster.namespace_names() == before
    if cluster.sim:
        assert cluster.write_requests() == []


def test_invalid_request_writes_only_inside_the_data_folder(cluster, data_dir, tmp_path):
    vars_ = tenant_vars("../../etc", "svc", "es-bad")
    proc = run_playbook(cluster.kubeconfig, data_dir, vars_)
    assert proc.returncode != 0
    got = reports(data_dir)
    assert [b["status"] for _u, b in got] == ["failed"]
    assert got[0][1]["user"] == "_refused" and got[0][1]["details"]["refused"]["user"] == "../../etc"
    assert got[0][0].startswith("_refused__refused_")
    assert "user:" in got[0][1]["message"] and "stage metadata" in got[0][1]["message"]
    # Nothing escaped the data folder and nothing went to the cluster.
    outside = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in outside if not n.startswith("vars-")] == ["es_data"]
    assert not os.path.exists(os.path.join(os.path.dirname(data_dir), "etc"))
    assert "es-bad" not in cluster.namespace_names()
    if cluster.sim:
        assert cluster.write_requests() == []


def test_without_the_callback_nothing_happens(cluster, data_dir, tmp_path):
    # The collection found, the callback not enabled: as with an installed
    # collection and a plain ansible.cfg.
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\ncollections_path = %s\n" % os.path.join(ROOT, "collections"))
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("cb_user", "svc", "es-cb"),
                        env={"ANSIBLE_CONFIG": str(cfg)})
    assert proc.returncode != 0
    assert "ANSIBLE_CALLBACKS_ENABLED=yunpeng.es_serverless.reports" in output(proc)
    assert not os.path.exists(data_dir)
    assert "es-cb" not in cluster.namespace_names()


def test_batch_with_forks(cluster, data_dir, tmp_path):
    tenants = [("alice", "search", "es-alice", 0), ("bob", "vectors", "es-bob", 0), ("carol", "gpu", "es-carol", 1)]
    inventory = {"all": {"vars": {"ansible_connection": "local",
                                  "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                         "hosts": {}}}
    for user, service, ns, gpus in tenants:
        host = tenant_vars(user, service, ns, es_gpu_count=gpus)
        inventory["all"]["hosts"]["tenant-%s" % user] = host
    inv = tmp_path / "inventory.json"
    inv.write_text(json.dumps(inventory))
    proc = run_playbook(cluster.kubeconfig, data_dir, {"es_target_hosts": "all"}, inventory=str(inv),
                        args=["--forks", "3"])
    assert proc.returncode == 0, output(proc)
    for user, service, ns, gpus in tenants:
        statuses = GPU_STATUSES if gpus else CPU_STATUSES
        assert_reports_and_log(data_dir, user, service, ns, statuses, gpus=gpus)
        assert find_deployment(data_dir, user, service)["status"] == "created"
        assert cluster.apps.read_namespaced_stateful_set("elasticsearch", ns).status.ready_replicas == 1
    ids = {b["deployment_id"] for _u, b in reports(data_dir)}
    assert len(ids) == 3


def test_second_run_for_the_same_tenant_is_refused_while_the_first_is_creating(cluster, data_dir):
    first = start_held_create(cluster, data_dir, "dup_user", "svc", "es-dup")  # held in its rollout
    assert wait_for(lambda: (find_deployment(data_dir, "dup_user", "svc") or {}).get("status") == "creating",
                    timeout=120)
    second = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("dup_user", "svc", "es-dup"))
    assert second.returncode != 0
    out, _u = first.communicate(timeout=300)
    assert out.startswith("0"), out
    got = reports(data_dir, "dup_user", "svc")
    failed = [b for _u, b in got if b["status"] == "failed"]
    assert len(failed) == 1 and "already being created" in failed[0]["message"]
    first_id = got[0][1]["deployment_id"]
    assert failed[0]["deployment_id"] != first_id
    assert [b["status"] for _u, b in got if b["deployment_id"] == first_id] == CPU_STATUSES
    assert find_deployment(data_dir, "dup_user", "svc")["status"] == "created"
    assert tenant_record(data_dir, "dup_user", "svc")["status"] == "created"
    # The refusal is history, not the cluster's latest report.
    latest = query(data_dir, "dup_user", "svc")["latest_report"]["report"]
    assert (latest["status"], latest["deployment_id"]) == ("completed", first_id)


def test_api_server_error_mid_flow_rolls_back(sim_cluster, data_dir):
    cluster = sim_cluster  # HTTP fault injection: the simulator's
    cluster.sim.add_fault("GET:persistentvolumeclaims:500")
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("fault_user", "svc", "es-fault"))
    got = _assert_failed_run(data_dir, "fault_user", "svc", "disk", proc)
    assert [b["status"] for _u, b in got] == CPU_STATUSES[:5] + ["failed"]
    assert "500" in got[-1][1]["message"] or "Internal" in got[-1][1]["message"]
    assert wait_for(lambda: "es-fault" not in cluster.namespace_names(), timeout=60)


def test_apply_failing_part_way_in_an_existing_namespace_removes_what_it_applied(sim_cluster, data_dir):
    cluster = sim_cluster
    cluster.core.create_namespace({"metadata": {"name": "es-partial"}})
    cluster.core.create_namespaced_config_map("es-partial", {"metadata": {"name": "keep-me"}, "data": {"a": "b"}})
    cluster.sim.add_fault("PATCH:deployments:500")  # kibana is applied last
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("partial_user", "svc", "es-partial"))
    got = _assert_failed_run(data_dir, "partial_user", "svc", "k8s_apply", proc)
    assert [b["status"] for _u, b in got] == CPU_STATUSES[:3] + ["failed"]
    assert "cannot apply Deployment/kibana in namespace es-partial: 500" in got[-1][1]["message"]

    def leftovers():
        left = {}
        for resource in ("configmaps", "services", "secrets", "apps/statefulsets", "persistentvolumeclaims"):
            names = [o["metadata"]["name"] for o in cluster.sim.objects(resource, "es-partial")]
            if names:
                left[resource] = names
        return left
    assert wait_for(lambda: leftovers() == {"configmaps": ["keep-me", "kube-root-ca.crt"]}, timeout=30), leftovers()
    assert "es-partial" in cluster.namespace_names()
