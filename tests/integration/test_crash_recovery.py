"""``kill -9`` of the create, update and delete playbooks at many points, each followed by the documented
recovery (README "After a crash"): run the create, or the delete, again. The next run recognises the
dead run by its lease, records it ``failed`` (stage ``run_died``) with its report and log line, removes
what it left, and completes; nothing leaks and the other tenant of the data folder and the cluster is
not touched.

The kill points run on one simulator (pods Ready 0.3 s after creation, held 2.5 s for the kills during
a rollout) shared by the module, one tenant per point, next to a bystander tenant created first; two
more (in a rollout, in a delete's wait for the namespace) on the default test cluster.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.integration.conftest import Cluster
from tests.integration.flow import (
    BIN,
    ROOT,
    expected_log_line,
    find_deployment,
    log_lines,
    reports,
    run_playbook,
    start_playbook,
    tenant_record,
    tenant_vars,
)
from tests.kubesim.fixture import KubeSim

CREATE = "playbooks/create_cluster.yml"
DELETE = "playbooks/delete_cluster.yml"
# What a tenant namespace holds (besides pods), compared by name with the bystander's.
SHAPE = ("configmaps", "secrets", "services", "serviceaccounts", "persistentvolumeclaims", "resourcequotas",
         "limitranges", "apps/statefulsets", "apps/deployments", "policy/poddisruptionbudgets",
         "networking.k8s.io/networkpolicies")
READY_DELAY = 0.3
HOLD = 2.5  # pods Ready this long after creation: a kill after disk_configured lands in the rollout wait


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # room for every tenant of the module on the one node
    with KubeSim(ready_delay=READY_DELAY, node_gpus=4, node_cpu="256", node_memory="1Ti") as sim:
        cluster = Cluster(sim.kubeconfig, sim=sim)
        data_dir = str(tmp_path_factory.mktemp("crash") / "es_data")
        proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("bystander", "svc", "es-bystander"))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield cluster, data_dir


def namespaces(cluster):
    return {ns["metadata"]["name"] for ns in cluster.sim.objects("namespaces")
            if (ns.get("status") or {}).get("phase") != "Terminating"}


def shape(cluster, namespace, versions=False):
    """``{resource: sorted names}`` (with resourceVersions when ``versions``) of a namespace."""
    out = {}
    for resource in SHAPE:
        items = cluster.sim.objects(resource, namespace)
        out[resource] = sorted((o["metadata"]["name"], o["metadata"].get("resourceVersion")) if versions
                               else o["metadata"]["name"] for o in items)
    return out


def bystander_state(cluster, data_dir):
    return (find_deployment(data_dir, "bystander", "svc"), tenant_record(data_dir, "bystander", "svc"),
            reports(data_dir, "bystander", "svc"), shape(cluster, "es-bystander", versions=True))


def running_id(entry, flow):
    """The deployment id of the run ``flow`` in progress in ``entry``, or None."""
    entry = entry or {}
    if flow == "update":
        return (entry.get("update") or {}).get("deployment_id")
    wanted = "deleting" if flow == "delete" else "creating"
    return entry.get("deployment_id") if entry.get("status") == wanted else None


def index_tail(data_dir, user, service):
    """The last report file named in the pair's index (a cheap poll), or None."""
    try:
        with open(os.path.join(data_dir, "deployments", user, service + ".reports")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    return lines[-1] if lines else None


def kill_at(data_dir, user, service, flow, proc, point, timeout=120):
    """Wait for ``point`` of the run (``stage0``: its status entry says it runs; else a report status of
    it), ``kill -9`` its process group, and return its deployment id and its last report then."""
    deadline = time.monotonic() + timeout
    dead_id, seen = None, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before kill point %s" % point
        dead_id = dead_id or running_id(find_deployment(data_dir, user, service), flow)
        if dead_id and point == "stage0":
            break
        tail = index_tail(data_dir, user, service)
        if dead_id and tail and tail != seen:
            seen = tail
            with open(os.path.join(data_dir, "deployment_reports", tail)) as f:
                body = json.load(f)
            if body["deployment_id"] == dead_id and body["status"] == point:
                break
        time.sleep(0.005)
    else:
        pytest.fail("kill point %s not reached in %s s" % (point, timeout))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    entry = find_deployment(data_dir, user, service)
    assert running_id(entry, flow) == dead_id, "the run finished before the kill: %s" % entry
    done = [b["status"] for _n, b in reports(data_dir, user, service) if b["deployment_id"] == dead_id]
    return dead_id, done


def assert_dead_run_recorded(data_dir, user, service, dead_id, flow):
    got = [b for _n, b in reports(data_dir, user, service) if b["deployment_id"] == dead_id]
    last = got[-1]
    assert last["status"] == "failed", got
    assert last["details"]["stage"] == "run_died"
    verb = "deletion" if flow == "delete" else "creation"
    assert last["message"].startswith("Cluster %s failed at stage run_died: the run died: ansible-playbook pid "
                                      % verb), last["message"]
    assert "is gone" in last["message"]
    assert expected_log_line(last) in log_lines(data_dir)
    return last


# (origin flow, kill point, recovery): 22 points. A create killed and recovered by the create again at
# every stage; by a delete at three; an update (replicas 1 -> 2) recovered by the update again and by a
# delete; a delete recovered by the delete again.
CASES = [("create", point, "create") for point in (
    "stage0", "starting", "namespace_created", "gitlab_pulled", "k8s_applied", "resources_configured",
    "disk_configured", "rollout_completed", "tenant_synced")]
CASES += [("create", point, "delete") for point in ("stage0", "namespace_created", "disk_configured")]
CASES += [("update", point, "create") for point in (
    "stage0", "starting", "k8s_applied", "disk_configured", "rollout_completed", "tenant_synced")]
CASES += [("update", "k8s_applied", "delete")]
CASES += [("delete", point, "delete") for point in ("stage0", "deleting", "resources_deleted")]


@pytest.mark.parametrize("origin,point,recovery", CASES, ids=["%s-%s-%s" % case for case in CASES])
def test_kill_and_recover(world, origin, point, recovery):
    cluster, data_dir = world
    number = CASES.index((origin, point, recovery))
    user, service, namespace = "crash%d" % number, "svc", "es-crash-%d" % number
    before = bystander_state(cluster, data_dir)
    baseline = namespaces(cluster)
    if origin != "create":
        proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars(user, service, namespace))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    replicas = 2 if origin == "update" else 1
    request = tenant_vars(user, service, namespace, es_replicas=replicas)
    cluster.sim.set_ready_delay(HOLD if point == "disk_configured" else READY_DELAY)
    try:
        proc = start_playbook(cluster.kubeconfig, data_dir, request, DELETE if origin == "delete" else CREATE)
        dead_id, done = kill_at(data_dir, user, service, origin, proc, point)
    finally:
        cluster.sim.set_ready_delay(READY_DELAY)
    assert point == "stage0" or point in done

    again = run_playbook(cluster.kubeconfig, data_dir, request if recovery == "create" else tenant_vars(user, service),
                         playbook=CREATE if recovery == "create" else DELETE)
    assert again.returncode == 0, again.stdout + again.stderr
    entry = find_deployment(data_dir, user, service)
    assert entry["deployment_id"] != dead_id and "lease" not in entry and "update" not in entry
    assert_dead_run_recorded(data_dir, user, service, dead_id, "delete" if origin == "delete" else "create")
    ours = [b["status"] for _n, b in reports(data_dir, user, service) if b["deployment_id"] == entry["deployment_id"]]
    if recovery == "create":
        assert entry["status"] == "created" and ours[-1] == "completed", ours
        assert entry["request"]["replicas"] == replicas
        assert tenant_record(data_dir, user, service)["status"] == "created"
        if origin == "update":
            assert entry["last_update"]["deployment_id"] == entry["deployment_id"]
        else:
            # the dead create's namespace went; this run made it again
            ns = cluster.sim.get("namespaces", None, namespace)
            assert ns["metadata"]["annotations"]["es.yunpeng.cn/deployment-id"] == entry["deployment_id"]
        expected = shape(cluster, "es-bystander")
        if replicas == 2:
            expected["persistentvolumeclaims"] = sorted(expected["persistentvolumeclaims"]
                                                        + ["elasticsearch-data-elasticsearch-1"])
        assert shape(cluster, namespace) == expected  # nothing leaked, nothing missing
        assert namespaces(cluster) == baseline | {namespace}
    else:
        assert entry["status"] == "deleted" and ours == ["deleting", "resources_deleted", "deleted"], ours
        assert tenant_record(data_dir, user, service) is None
        assert namespace not in namespaces(cluster)
        assert all(not names for names in shape(cluster, namespace).values())
        assert namespaces(cluster) == baseline - {namespace}
    assert bystander_state(cluster, data_dir) == before


def test_a_crashed_create_stops_counting_against_the_quota(world):
    cluster, data_dir = world
    quota = {"es_quota": {"max_clusters_per_user": 1}}
    proc = start_playbook(cluster.kubeconfig, data_dir, tenant_vars("quota_user", "a", "es-quota-a", **quota))
    kill_at(data_dir, "quota_user", "a", "create", proc, "k8s_applied")
    other = run_playbook(cluster.kubeconfig, data_dir, tenant_vars("quota_user", "b", "es-quota-b", **quota))
    assert other.returncode == 0, other.stdout + other.stderr
    assert find_deployment(data_dir, "quota_user", "b")["status"] == "created"
    # the crashed one is still there to take over (and its namespace still held for it)
    assert find_deployment(data_dir, "quota_user", "a")["status"] == "creating"


def test_a_run_of_a_host_that_is_gone_is_released_by_hand(world):
    """The lease of a run on another controller lasts until it expires; ``es_tenant_meta state=release``
    lets the next run take over at once."""
    cluster, data_dir = world
    user, service, namespace = "gone_host", "svc", "es-gone-host"
    proc = start_playbook(cluster.kubeconfig, data_dir, tenant_vars(user, service, namespace))
    dead_id, _done = kill_at(data_dir, user, service, "create", proc, "namespace_created")
    path = os.path.join(data_dir, "deployments", user, service + ".json")
    with open(path) as f:
        entry = json.load(f)
    entry["lease"]["host"] = "controller-that-is-gone"
    with open(path, "w") as f:
        json.dump(entry, f)

    refused = run_playbook(cluster.kubeconfig, data_dir, tenant_vars(user, service, namespace))
    assert refused.returncode != 0
    assert "already being created by deployment %s" % dead_id in refused.stdout
    assert "on host controller-that-is-gone holds its lease until" in refused.stdout

    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    release = subprocess.run(
        [os.path.join(BIN, "ansible"), "localhost", "-m", "yunpeng.es_serverless.es_tenant_meta", "-a",
         "state=release data_dir=%s user=%s service_name=%s deployment_id=%s" % (data_dir, user, service, dead_id)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert release.returncode == 0, release.stdout + release.stderr
    again = run_playbook(cluster.kubeconfig, data_dir, tenant_vars(user, service, namespace))
    assert again.returncode == 0, again.stdout + again.stderr
    assert find_deployment(data_dir, user, service)["status"] == "created"
    got = [b for _n, b in reports(data_dir, user, service) if b["deployment_id"] == dead_id]
    assert got[-1]["status"] == "failed" and "its lease was released at" in got[-1]["message"]


def test_kills_in_a_rollout_and_in_a_delete_on_the_default_cluster(cluster, data_dir):
    """On the real control plane (``ES_TEST_CLUSTER``): pods held 8 s, a namespace Terminating for seconds."""
    user, service, namespace = "crash_cp", "svc", "es-crash-cp"
    baseline = cluster.namespace_names()
    extra = {}
    if cluster.sim:
        cluster.sim.set_ready_delay(HOLD)
    elif cluster.controlplane:
        extra["es_elasticsearch_image"] = "docker.elastic.co/elasticsearch/elasticsearch:8.15.3-ready-after-8s"
    request = tenant_vars(user, service, namespace, **extra)
    proc = start_playbook(cluster.kubeconfig, data_dir, request)
    dead_id, done = kill_at(data_dir, user, service, "create", proc, "disk_configured", timeout=300)
    assert "rollout_completed" not in done
    again = run_playbook(cluster.kubeconfig, data_dir, request)
    assert again.returncode == 0, again.stdout + again.stderr
    entry = find_deployment(data_dir, user, service)
    assert entry["status"] == "created" and entry["deployment_id"] != dead_id
    assert_dead_run_recorded(data_dir, user, service, dead_id, "create")
    ns = cluster.core.read_namespace(namespace)
    assert ns.metadata.annotations["es.yunpeng.cn/deployment-id"] == entry["deployment_id"]
    assert cluster.apps.read_namespaced_stateful_set("elasticsearch", namespace).status.ready_replicas == 1

    proc = start_playbook(cluster.kubeconfig, data_dir, tenant_vars(user, service), DELETE)
    dead_delete, _done = kill_at(data_dir, user, service, "delete", proc, "deleting", timeout=300)
    again = run_playbook(cluster.kubeconfig, data_dir, tenant_vars(user, service), playbook=DELETE)
    assert again.returncode == 0, again.stdout + again.stderr
    assert find_deployment(data_dir, user, service)["status"] == "deleted"
    assert_dead_run_recorded(data_dir, user, service, dead_delete, "delete")
    assert cluster.namespace_names() == baseline
