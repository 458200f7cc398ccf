"""API faults through the real playbook on the simulator (its HTTP fault injection): a transient
500, 503 or 429 is retried and the run completes; a lasting one fails naming the object and the API's
reason; a create answering 409 for an object that does not exist is a failure, not a success; a
mistyped variable and a template in a tenant string are refused before anything runs."""

import os

import pytest

from tests.integration.flow import (
    find_deployment,
    output,
    reports,
    run_playbook,
    tenant_record,
    tenant_vars,
)

CPU_STATUSES = ["starting", "namespace_created", "gitlab_pulled", "k8s_applied", "resources_configured",
                "disk_configured", "rollout_completed", "tenant_synced", "completed"]


def _failed(data_dir, user, stage, proc):
    assert proc.returncode != 0
    got = reports(data_dir, user, "svc")
    message = got[-1][1]["message"]
    assert got[-1][1]["status"] == "failed"
    assert message.startswith("Cluster creation failed at stage %s: " % stage), message
    assert find_deployment(data_dir, user, "svc")["status"] == "failed"
    assert tenant_record(data_dir, user, "svc") is None
    return got, message


def _answers(sim, method, resource, namespace):
    """Statuses the simulator gave to ``method`` requests on ``resource`` of ``namespace``."""
    marker = "/namespaces/%s/%s" % (namespace, resource) if resource != "namespaces" else "/namespaces"
    return [r["status"] for r in sim.requests() if r["method"] == method and marker in r["path"]]


# One fault on the call a stage makes: a create (POST), a server-side apply (PATCH), a read (GET).
TRANSIENT = [
    ("POST:namespaces:500:1", "POST", "namespaces", False),           # stage 2, create
    ("POST:secrets:503:1", "POST", "secrets", False),                 # stage 4, create (credentials)
    ("PATCH:statefulsets:503:1", "PATCH", "statefulsets", False),     # stage 4, server-side apply
    ("PATCH:services:429:1", "PATCH", "services", False),             # stage 4, 429 with Retry-After
    ("GET:persistentvolumeclaims:500:1", "GET", "persistentvolumeclaims", False),  # stage 6, read
    ("GET:persistentvolumeclaims:503:1", "GET", "persistentvolumeclaims", True),   # stage 4, kubernetes.core
    ("GET:pods:429:1", "GET", "pods", False),                         # stage 8, read
]


@pytest.mark.parametrize("fault,method,resource,existing", TRANSIENT, ids=[t[0] for t in TRANSIENT])
def test_a_transient_fault_is_retried_and_the_run_completes(
        sim_cluster, data_dir, fault, method, resource, existing):
    cluster = sim_cluster
    if existing:  # stage 4 then reads the data PVCs that existed, with kubernetes.core.k8s_info
        cluster.core.create_namespace({"metadata": {"name": "es-retry"}})
    cluster.sim.add_fault(fault)
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("retry_user", "svc", "es-retry"))
    assert proc.returncode == 0, output(proc)[-3000:]
    assert [b["status"] for _u, b in reports(data_dir, "retry_user", "svc")] == CPU_STATUSES
    assert find_deployment(data_dir, "retry_user", "svc")["status"] == "created"
    status = int(fault.split(":")[2])
    answers = _answers(cluster.sim, method, resource, "es-retry")
    assert answers[0] == status and len(answers) >= 2, answers  # the fault, then the same call again
    # (that a 429 waits as its Retry-After says: tests/unit/test_k8s_client.py)
    if not existing:  # the collection's client says so in the task's warnings
        assert "answered %d" % status in output(proc) and "retrying (1 of at most 5)" in output(proc)


def test_a_lasting_500_fails_naming_the_object_and_the_reason(sim_cluster, data_dir):
    cluster = sim_cluster
    cluster.sim.add_fault("PATCH:statefulsets:500")
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("lasting_user", "svc", "es-lasting"))
    got, message = _failed(data_dir, "lasting_user", "k8s_apply", proc)
    assert [b["status"] for _u, b in got] == CPU_STATUSES[:3] + ["failed"]
    assert ("cannot apply StatefulSet/elasticsearch in namespace es-lasting: 500 Internal Server Error: "
            "Internal error occurred: injected fault") in message
    assert _answers(cluster.sim, "PATCH", "statefulsets", "es-lasting")[:6] == [500] * 6  # 1 + 5 retries


def test_a_409_on_the_statefulset_names_it(sim_cluster, data_dir):
    cluster = sim_cluster
    cluster.sim.add_fault("PATCH:statefulsets:409")
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("conflict_user", "svc", "es-conflict"))
    _got, message = _failed(data_dir, "conflict_user", "k8s_apply", proc)
    assert "cannot apply StatefulSet/elasticsearch in namespace es-conflict: 409 Conflict: injected fault" in message
    assert "nknown error" not in message
    assert _answers(cluster.sim, "PATCH", "statefulsets", "es-conflict") == [409]  # a 409 is not retried


@pytest.mark.parametrize("fault,stage,what", [
    ("POST:namespaces:409:1", "namespace", "Namespace/es-ghost"),
    ("POST:secrets:409:1", "k8s_apply", "Secret/elasticsearch-credentials in namespace es-ghost"),
])
def test_a_409_for_an_object_that_does_not_exist_is_not_a_success(sim_cluster, data_dir, fault, stage, what):
    cluster = sim_cluster
    cluster.sim.add_fault(fault)  # answers 409 and creates nothing
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("ghost_user", "svc", "es-ghost"))
    got, message = _failed(data_dir, "ghost_user", stage, proc)
    assert "completed" not in [b["status"] for _u, b in got]
    assert "the create answered 409 Conflict" in message
    assert "yet %s does not exist" % what in message
    if "Secret" in what:  # never the API server's message for a Secret: it may echo the body
        assert "injected fault" not in message


def test_a_mistyped_variable_is_refused_naming_the_known_one(sim_cluster, data_dir, tmp_path):
    cluster = sim_cluster
    for playbook in ("playbooks/create_cluster.yml", "playbooks/delete_cluster.yml"):
        proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("typo_user", "svc", "es-typo", es_replica=3),
                            playbook=playbook)
        assert proc.returncode != 0
        assert "Unknown variable es_replica (did you mean es_replicas?): nothing was done" in output(proc)
    assert not os.path.exists(data_dir)
    assert cluster.write_requests() == []


def test_a_template_in_a_tenant_string_is_not_run(sim_cluster, data_dir, tmp_path):
    cluster = sim_cluster
    markers = [tmp_path / "pwned-user", tmp_path / "pwned-org"]
    hostile = ["{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % marker for marker in markers]
    proc = run_playbook(cluster.kubeconfig, data_dir,
                        tenant_vars(hostile[0], "svc", "es-tpl", es_tenant_org_id=hostile[1]))
    assert not any(marker.exists() for marker in markers), "a tenant string was templated"
    assert proc.returncode != 0
    failed = reports(data_dir)[-1][1]
    # refused under the fixed identity, the raw value kept as given, never rendered
    assert failed["user"] == "_refused" and failed["details"]["refused"]["user"] == hostile[0]
    assert "stage metadata: user:" in failed["message"]
    assert cluster.write_requests() == []
