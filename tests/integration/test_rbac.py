"""The create, update and delete flows run by an identity that is not cluster-admin, on
the real control plane (the simulator has no RBAC): with the documented
ClusterRole (docs/rbac/provisioner.yml) a create completes and rolls back and a
delete removes the namespace or, in a namespace that existed, the collection's
objects; without it, a create fails at the namespace stage with Kubernetes' own
refusal and creates nothing."""

import os

import pytest
import yaml
from kubernetes import client, config

from tests.controlplane.pytest_plugin import NamespaceHygiene
from tests.integration.conftest import BAD_REGISTRY
from tests.integration.flow import ROOT, find_deployment, output, reports, run_playbook, tenant_vars, wait_for

ROLE = os.path.join(ROOT, "docs", "rbac", "provisioner.yml")


@pytest.fixture
def admin(controlplane):
    with NamespaceHygiene(controlplane.kubeconfig, wait=False):
        yield config.new_client_from_config(config_file=controlplane.kubeconfig)


@pytest.fixture
def provisioner(controlplane, admin):
    """A kubeconfig for user ``es-provisioner``, bound to the documented role."""
    with open(ROLE) as f:
        role = yaml.safe_load(f)
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_cluster_role(role)
    binding = {"metadata": {"name": "es-provisioner"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": role["metadata"]["name"]},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "es-provisioner"}]}
    rbac.create_cluster_role_binding(binding)
    yield controlplane.user_kubeconfig("es-provisioner")
    rbac.delete_cluster_role_binding("es-provisioner")
    rbac.delete_cluster_role(role["metadata"]["name"])


def _namespaces(api):
    return {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items
            if n.status.phase != "Terminating"}


def test_the_documented_role_is_enough_to_create_and_to_roll_back(provisioner, admin, data_dir):
    proc = run_playbook(provisioner, data_dir, tenant_vars("rbac_user", "svc", "es-rbac"))
    assert proc.returncode == 0, output(proc)
    assert [b["status"] for _n, b in reports(data_dir, "rbac_user", "svc")][-1] == "completed"
    assert client.AppsV1Api(admin).read_namespaced_stateful_set("elasticsearch", "es-rbac").status.ready_replicas == 1
    # an update that reads every object, recreates the StatefulSet (bigger disk) and expands the claim
    proc = run_playbook(provisioner, data_dir, tenant_vars("rbac_user", "svc", "es-rbac", es_replicas=2,
                                                           es_disk_size="20Gi"))
    assert proc.returncode == 0, output(proc)
    sts = client.AppsV1Api(admin).read_namespaced_stateful_set("elasticsearch", "es-rbac")
    assert sts.spec.replicas == 2 and sts.spec.volume_claim_templates[0].spec.resources.requests["storage"] == "20Gi"
    failing = tenant_vars("rbac_user", "broken", "es-rbac-broken",
                          es_kibana_image=BAD_REGISTRY + "/kibana/kibana:8.15.3")
    proc = run_playbook(provisioner, data_dir, failing)
    assert proc.returncode != 0
    failed = reports(data_dir, "rbac_user", "broken")[-1][1]
    # The rollout wait ends at the first doomed state it sees: the pull error or its back-off.
    assert failed["status"] == "failed", failed
    assert "ErrImagePull" in failed["message"] or "ImagePullBackOff" in failed["message"], failed
    assert "forbidden" not in output(proc).lower()
    assert wait_for(lambda: "es-rbac-broken" not in _namespaces(admin), timeout=60)


def test_the_documented_role_is_enough_to_delete(provisioner, admin, data_dir):
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": "es-rbac-shared"}})
    for user, namespace in (("rbac_del", "es-rbac-del"), ("rbac_shared", "es-rbac-shared")):
        proc = run_playbook(provisioner, data_dir, tenant_vars(user, "svc", namespace))
        assert proc.returncode == 0, output(proc)
        proc = run_playbook(provisioner, data_dir, {"es_user": user, "es_service_name": "svc"},
                            playbook="playbooks/delete_cluster.yml")
        assert proc.returncode == 0, output(proc)
        assert [b["status"] for _n, b in reports(data_dir, user, "svc")][-1] == "deleted"
        assert find_deployment(data_dir, user, "svc")["status"] == "deleted"
    assert "es-rbac-del" not in {n.metadata.name for n in core.list_namespace().items}
    assert core.read_namespace("es-rbac-shared").status.phase == "Active"
    assert client.AppsV1Api(admin).list_namespaced_stateful_set("es-rbac-shared").items == []
    assert core.list_namespaced_persistent_volume_claim("es-rbac-shared").items == []


def test_without_rights_the_run_fails_at_the_namespace_stage(controlplane, admin, data_dir):
    nobody = controlplane.user_kubeconfig("nobody")
    before = _namespaces(admin)
    proc = run_playbook(nobody, data_dir, tenant_vars("rbac_none", "svc", "es-rbac-none"))
    assert proc.returncode != 0
    failed = reports(data_dir, "rbac_none", "svc")[-1][1]
    assert failed["status"] == "failed"
    assert failed["message"].startswith("Cluster creation failed at stage namespace: "), failed["message"]
    assert 'User \\"nobody\\" cannot' in failed["message"] or 'User "nobody" cannot' in failed["message"], \
        failed["message"]
    assert find_deployment(data_dir, "rbac_none", "svc")["status"] == "failed"
    assert _namespaces(admin) == before
