"""Guard rails in the tenant namespace: a ResourceQuota of what the request allows, a LimitRange,
and one NetworkPolicy; checked field by field and, on the real control plane, by admission."""

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.flow import output, run_playbook, tenant_vars


def test_a_gpu_tenant_gets_its_quota_limits_and_network_policy(cluster, data_dir):
    vars_ = tenant_vars("rails_user", "svc", "es-rails", es_replicas=2, es_gpu_count=1, es_disk_size="20Gi")
    proc = run_playbook(cluster.kubeconfig, data_dir, vars_)
    assert proc.returncode == 0, output(proc)

    quota = cluster.core.read_namespaced_resource_quota("es-tenant-quota", "es-rails")
    # Elasticsearch 2 x (500m/2 cpu, 1Gi/2Gi memory, 20Gi, 1 GPU) + Kibana 1 x (250m/1 cpu, 1Gi/1Gi).
    assert quota.spec.hard == {
        "requests.cpu": "1250m", "limits.cpu": "5", "requests.memory": "3Gi", "limits.memory": "5Gi",
        "requests.storage": "40Gi", "persistentvolumeclaims": "2", "pods": "3", "requests.nvidia.com/gpu": "2"}

    limits = {item.type: item for item in cluster.core.read_namespaced_limit_range("es-tenant-limits",
                                                                                   "es-rails").spec.limits}
    assert limits["Container"].default_request == {"cpu": "100m", "memory": "128Mi"}
    assert limits["Container"].default == {"cpu": "500m", "memory": "512Mi"}
    assert limits["PersistentVolumeClaim"].max == {"storage": "20Gi"}

    policy = client.NetworkingV1Api(cluster.api).read_namespaced_network_policy("es-tenant-ingress", "es-rails")
    assert policy.spec.pod_selector.match_labels is None and policy.spec.policy_types == ["Ingress"]
    http, transport = policy.spec.ingress
    assert sorted(p.port for p in http.ports) == [5601, 9200]
    assert http._from[0].pod_selector.match_labels is None and http._from[0].namespace_selector is None
    assert http._from[1].namespace_selector.match_labels == {"es.yunpeng.cn/platform": "true"}
    assert [p.port for p in transport.ports] == [9300]
    assert [f.pod_selector.match_labels for f in transport._from] == [{"app": "elasticsearch"}]

    kibana = cluster.apps.read_namespaced_deployment("kibana", "es-rails")
    assert kibana.spec.template.spec.containers[0].resources.limits == {"cpu": "1", "memory": "1Gi"}
    assert kibana.spec.strategy.rolling_update.max_surge == 0


def test_the_quota_refuses_a_pod_beyond_the_request(cluster, data_dir):
    if cluster.controlplane is None and cluster.sim is not None:
        pytest.skip("the simulator has no quota admission; the control plane's kube-apiserver does")
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("quota_pod_user", "svc", "es-quota-pod"))
    assert proc.returncode == 0, output(proc)
    pod = {"metadata": {"name": "greedy"},
           "spec": {"containers": [{"name": "c", "image": "busybox",
                                    "resources": {"requests": {"cpu": "8"}, "limits": {"cpu": "8"}}}]}}
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod("es-quota-pod", pod)
    assert refused.value.status == 403 and "exceeded quota: es-tenant-quota" in refused.value.body
