"""es_rollout and es_pvc_size run through ansible-playbook against the test control plane.

Every test that checks Kubernetes behaviour runs on the real control plane of
``tests/controlplane`` (the session's ``controlplane`` fixture), in a namespace
of its own so that no test waits for another's namespace to go away. What a
test needs from the cluster it asks for the way a workload would: a pod
annotation for a slow start, an image from ``registry.invalid`` that cannot be
pulled, a ``crash-loop`` image, more GPUs than a node has. The few tests that
read the simulator's request log or reach into its store run on ``KubeSim``.
"""

import base64
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import kubernetes
import pytest
import yaml

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import rollout
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import client_from_params
from tests.waiting import wait_for
from tests.controlplane.pytest_plugin import NamespaceHygiene
from tests.controlplane.stages import READY_DELAY_ANNOTATION
from tests.kubesim.fixture import KubeSim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIM_NS = "es-test"  # the simulator tests' namespace (a new simulator per test)
ES_IMAGE = "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"
KIBANA_IMAGE = "docker.elastic.co/kibana/kibana:8.15.3"
# The control plane fails to pull images from registry.invalid (so would a real cluster: .invalid never
# resolves) and crash-loops containers whose image contains "crash-loop".
UNPULLABLE_ES_IMAGE = "registry.invalid/elasticsearch/elasticsearch:8.15.3"
CRASHING_KIBANA_IMAGE = "docker.elastic.co/kibana/kibana-crash-loop:8.15.3"
NODE_GPUS = 4  # each fake node of the control plane has 4 nvidia.com/gpu
PVC0 = "elasticsearch-data-elasticsearch-0"
PVC1 = "elasticsearch-data-elasticsearch-1"


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def cp(controlplane):
    """The session's control plane; the namespaces the test creates are deleted after it."""
    with NamespaceHygiene(controlplane.kubeconfig, wait=False):  # each test has a namespace of its own
        yield controlplane


@pytest.fixture
def ns(request):
    """A namespace name no other test uses (a deleted namespace takes seconds to go away)."""
    base = request.node.name[len("test_"):].replace("_", "-")[:40].strip("-")
    return "es-%s-%s" % (base, uuid.uuid4().hex[:5])


# ---------------------------------------------------------------- cluster helpers

def api(kubeconfig):
    return kubernetes.config.new_client_from_config(config_file=kubeconfig)


def create_tenant(kubeconfig, ns, replicas=1, gpus=0, storage_class="standard", es_image=ES_IMAGE, kibana=True,
                  kibana_image=KIBANA_IMAGE, ready_delay=None):
    """Namespace ``ns`` with the StatefulSet elasticsearch (and the Deployment kibana). ``ready_delay``
    (a Go duration such as "4s") makes the control plane hold the pods not ready that long."""
    client = api(kubeconfig)
    core = kubernetes.client.CoreV1Api(client)
    apps = kubernetes.client.AppsV1Api(client)
    core.create_namespace({"metadata": {"name": ns}})
    # pods are refused until the namespace's default ServiceAccount exists
    wait_for(lambda: _exists(core.read_namespaced_service_account, "default", ns), what="default service account")
    annotations = {READY_DELAY_ANNOTATION: ready_delay} if ready_delay else {}
    limits = {"cpu": "1", "memory": "1Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    apps.create_namespaced_stateful_set(ns, {
        "metadata": {"name": "elasticsearch"},
        "spec": {
            "replicas": replicas,
            "serviceName": "elasticsearch",
            "selector": {"matchLabels": {"app": "elasticsearch"}},
            "template": {
                "metadata": {"labels": {"app": "elasticsearch"}, "annotations": annotations},
                "spec": {"containers": [{
                    "name": "elasticsearch", "image": es_image,
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": limits},
                    "volumeMounts": [{"name": "elasticsearch-data", "mountPath": "/usr/share/elasticsearch/data"}],
                }]},
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "elasticsearch-data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                         "resources": {"requests": {"storage": "10Gi"}}},
            }],
        },
    })
    if kibana:
        apps.create_namespaced_deployment(ns, {
            "metadata": {"name": "kibana"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "kibana"}},
                "template": {
                    "metadata": {"labels": {"app": "kibana"}, "annotations": annotations},
                    "spec": {"containers": [{"name": "kibana", "image": kibana_image}]},
                },
            },
        })
    return core, apps


def _exists(read, *args):
    try:
        return read(*args)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def pvc_size(core, ns, name):
    return core.read_namespaced_persistent_volume_claim(name, ns).spec.resources.requests["storage"]


def bound_claims(core, ns):
    return sorted(c.metadata.name for c in core.list_namespaced_persistent_volume_claim(ns).items
                  if c.status.phase == "Bound")


def ca_file(kubeconfig, tmp_path):
    with open(kubeconfig) as f:
        cluster = yaml.safe_load(f)["clusters"][0]["cluster"]
    path = tmp_path / "ca.crt"
    path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return str(path)


def static_storage_class(client, name, expandable=True):
    """A StorageClass ``name`` with no provisioner (claims bind only to volumes made with
    ``static_volume``); returns a function removing it and those volumes (cluster-scoped objects)."""
    storage = kubernetes.client.StorageV1Api(client)
    core = kubernetes.client.CoreV1Api(client)
    storage.create_storage_class({"metadata": {"name": name}, "provisioner": "kubernetes.io/no-provisioner",
                                  "allowVolumeExpansion": expandable, "volumeBindingMode": "Immediate"})

    def remove():  # a volume still bound goes once its claim has gone with the namespace
        for pv in core.list_persistent_volume().items:
            if pv.spec.storage_class_name == name:
                core.delete_persistent_volume(pv.metadata.name)
        storage.delete_storage_class(name)
    return remove


def static_volume(client, storage_class, ns, claim, size="10Gi"):
    """A volume of ``storage_class`` reserved for claim ``ns/claim`` (statically provisioned)."""
    kubernetes.client.CoreV1Api(client).create_persistent_volume({
        "metadata": {"name": "%s-%s" % (ns, claim)[:253]},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": "/srv/%s/%s" % (ns, claim)},
                 "claimRef": {"namespace": ns, "name": claim}}})


def scheduler_message(core, ns, pod):
    """The message of the pod's PodScheduled=False condition, if any."""
    found = _exists(core.read_namespaced_pod, pod, ns)
    for cond in (found.status.conditions or []) if found else []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return cond.message
    return None


# ---------------------------------------------------------------- running the modules

def run_module(tmp_path, kubeconfig, module, args, check=False, extra_env=None):
    """Run one module task in a playbook; return (rc, registered result, seconds)."""
    out = tmp_path / ("result-%d.json" % time.monotonic_ns())
    playbook = tmp_path / "play.yml"
    playbook.write_text(textwrap.dedent("""\
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: Run the module
              yunpeng.es_serverless.{module}: {args}
              register: result
              ignore_errors: true
            - name: Save the result
              ansible.builtin.copy:
                content: "{{{{ result | to_json }}}}"
                dest: {out}
              check_mode: false
            - name: Fail the play like the module did
              ansible.builtin.fail:
                msg: "{{{{ result.msg }}}}"
              when: result is failed
        """).format(module=module, args=json.dumps(args), out=out))
    env = dict(os.environ)
    env.update(
        KUBECONFIG=kubeconfig,
        ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "collections"),
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
    )
    env.pop("ANSIBLE_CONFIG", None)
    if extra_env is not None:
        env.pop("KUBECONFIG")
        env.update(extra_env)
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
           str(playbook)]
    if check:
        cmd.append("--check")
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.monotonic() - start
    assert out.exists(), proc.stdout + proc.stderr
    run_module.last_output = proc.stdout + proc.stderr + out.read_text()
    return proc.returncode, json.loads(out.read_text()), elapsed


# ---------------------------------------------------------------- es_rollout

def test_rollout_success(tmp_path, cp, ns):
    # pods become ready one after the other, seconds after the module starts: it has to wait for them
    create_tenant(cp.kubeconfig, ns, replicas=2, ready_delay="4s")
    rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_rollout", {"namespace": ns, "timeout": 120})
    assert rc == 0, result
    assert result["ready"] is True and result["changed"] is False
    assert [s["name"] for s in result["statefulsets"]] == ["elasticsearch"]
    sts = result["statefulsets"][0]
    assert sts["done"] is True and sts["ready_replicas"] == 2 and sts["updated_replicas"] == 2
    assert result["deployments"][0]["name"] == "kibana" and result["deployments"][0]["done"] is True
    names = sorted(p["name"] for p in result["pods"])
    assert names[:2] == ["elasticsearch-0", "elasticsearch-1"]
    assert any(n.startswith("kibana-") for n in names)
    assert all(p["ready"] and p["phase"] == "Running" for p in result["pods"])
    assert result["elapsed"] >= 1  # it really waited for the pods to become ready


def test_rollout_image_pull_failure_fails_fast(tmp_path, cp, ns):
    create_tenant(cp.kubeconfig, ns, es_image=UNPULLABLE_ES_IMAGE)
    rc, result, seconds = run_module(tmp_path, cp.kubeconfig, "es_rollout", {"namespace": ns, "timeout": 120})
    assert rc != 0
    assert seconds < 30, "took %.1fs: the doomed pod was not detected before the timeout" % seconds
    assert result["elapsed"] < 30
    doom = result["doom"]
    assert doom["pod"] == ns + "/elasticsearch-0"
    assert doom["container"] == "elasticsearch"
    assert doom["image"] == UNPULLABLE_ES_IMAGE
    assert doom["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert result["reason"] == doom["reason"]
    assert result["msg"].startswith("pod %s/elasticsearch-0 container elasticsearch (image %s): %s" % (
        ns, UNPULLABLE_ES_IMAGE, doom["reason"]))
    assert any(e["pod"] == "elasticsearch-0" and e["reason"] == "Failed" for e in result["events"])


def test_rollout_crash_loop(tmp_path, cp, ns):
    create_tenant(cp.kubeconfig, ns, kibana_image=CRASHING_KIBANA_IMAGE)
    rc, result, seconds = run_module(tmp_path, cp.kubeconfig, "es_rollout", {"namespace": ns, "timeout": 120})
    assert rc != 0
    assert seconds < 60
    assert result["doom"]["reason"] == "CrashLoopBackOff"
    assert result["doom"]["pod"].startswith(ns + "/kibana-")
    assert result["doom"]["owner"] == "Deployment/kibana"
    assert "container kibana (image %s): CrashLoopBackOff" % CRASHING_KIBANA_IMAGE in result["msg"]


def test_rollout_unschedulable_gpu(tmp_path, cp, ns):
    create_tenant(cp.kubeconfig, ns, gpus=NODE_GPUS * 2)  # more than any node has
    rc, result, seconds = run_module(tmp_path, cp.kubeconfig, "es_rollout", {"namespace": ns, "timeout": 120})
    assert rc != 0
    assert seconds < 30
    assert result["doom"]["reason"] == "Unschedulable"
    assert result["doom"]["pod"] == ns + "/elasticsearch-0"
    assert "nvidia.com/gpu" in result["msg"]


def test_rollout_waits_while_the_volumes_are_being_bound(tmp_path, cp, ns):
    """Unschedulable only until its claim is bound is not doomed: the scheduler retries by itself."""
    client = api(cp.kubeconfig)
    late = ns + "-late"
    remove = static_storage_class(client, late)
    try:
        core, _u = create_tenant(cp.kubeconfig, ns, kibana=False, storage_class=late)
        wait_for(lambda: "pod has unbound immediate PersistentVolumeClaims" in (
            scheduler_message(core, ns, "elasticsearch-0") or ""), what="the scheduler to wait for the claim")
        # the volume appears seconds after the module has started and seen the pod Unschedulable
        timer = threading.Timer(6, static_volume, (client, late, ns, PVC0))
        timer.start()
        try:
            rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_rollout",
                                        {"namespace": ns, "deployments": [], "timeout": 120})
        finally:
            timer.cancel()
            timer.join()
        assert rc == 0, result
        assert result["ready"] is True
        assert result["elapsed"] >= 1  # it waited for the volume, the scheduler and the pod
        assert [(p["name"], p["ready"]) for p in result["pods"]] == [("elasticsearch-0", True)]
    finally:
        remove()


def test_rollout_timeout_names_what_is_not_ready(tmp_path, cp, ns):
    create_tenant(cp.kubeconfig, ns, kibana=False, ready_delay="60s")
    rc, result, seconds = run_module(tmp_path, cp.kubeconfig, "es_rollout",
                                     {"namespace": ns, "timeout": 3, "deployments": []})
    assert rc != 0
    assert result["reason"] == "Timeout"
    assert 3 <= result["elapsed"] < 20
    assert "not complete after 3s" in result["msg"]
    assert "elasticsearch" in result["msg"] and "elasticsearch-0" in result["msg"]


def test_rollout_missing_workload_fails_at_once(tmp_path, cp, ns):
    create_tenant(cp.kubeconfig, ns, kibana=False)
    rc, result, seconds = run_module(tmp_path, cp.kubeconfig, "es_rollout", {"namespace": ns, "timeout": 120})
    assert rc != 0
    assert result["reason"] == "NotFound"
    assert "deployment kibana not found in namespace %s" % ns in result["msg"]
    assert seconds < 30


def test_waiter_is_driven_by_watch_events(cp, ns):
    """With the periodic resync pushed out to 10 minutes, only watch events can end the wait in seconds."""
    create_tenant(cp.kubeconfig, ns, replicas=2, ready_delay="2s")
    client = client_from_params({"kubeconfig": cp.kubeconfig})
    waiter = rollout.RolloutWaiter(client, ns, ["elasticsearch"], ["kibana"], timeout=120, resync_interval=600,
                                   watch_timeout=2)
    result = waiter.wait()
    assert result["statefulsets"][0]["done"] and result["deployments"][0]["done"]
    assert 2 <= result["elapsed"] < 60
    assert waiter.watch_errors == []


def test_waiter_watches_pods_statefulsets_and_deployments():
    # stays on the simulator: it reads the watch requests from the simulator's request log
    with KubeSim(ready_delay=2) as sim:
        create_tenant(sim.kubeconfig, SIM_NS, replicas=2)
        client = client_from_params({"kubeconfig": sim.kubeconfig})
        waiter = rollout.RolloutWaiter(client, SIM_NS, ["elasticsearch"], ["kibana"], timeout=120,
                                       resync_interval=600, watch_timeout=2)
        result = waiter.wait()
        watches = [r for r in sim.requests() if "watch=true" in r["query"]]
    assert result["statefulsets"][0]["done"] and result["deployments"][0]["done"]
    assert {r["path"] for r in watches} >= {"/api/v1/namespaces/es-test/pods",
                                            "/apis/apps/v1/namespaces/es-test/statefulsets",
                                            "/apis/apps/v1/namespaces/es-test/deployments"}


def test_watch_feeder_relists_after_410_gone():
    # stays on the simulator: it compacts the simulator's history to force a 410 Gone and reads its request log
    with KubeSim(ready_delay=0.2) as sim:
        create_tenant(sim.kubeconfig, SIM_NS)
        wait_for(lambda: len(sim.objects("pods", SIM_NS)) == 2, what="pods")
        with sim.store.lock:  # compact the history: resourceVersion 1 is now too old to resume from
            del sim.store._history[:len(sim.store._history) - 1]
        client = client_from_params({"kubeconfig": sim.kubeconfig})
        events, stop = queue.Queue(), threading.Event()
        feeder = rollout._WatchFeeder("pods", kubernetes.client.CoreV1Api(client).list_namespaced_pod, SIM_NS,
                                      events, stop, watch_timeout=5)
        feeder.resource_version = "1"
        feeder.start()
        try:
            assert events.get(timeout=20) == ("pods", "RELIST")
            fresh_rv = feeder.resource_version
            assert fresh_rv is not None and int(fresh_rv) > 1
            kubernetes.client.CoreV1Api(client).patch_namespaced_pod(
                "elasticsearch-0", SIM_NS, {"metadata": {"labels": {"touched": "yes"}}},
                _content_type="application/merge-patch+json")
            assert events.get(timeout=20) == ("pods", "MODIFIED")
            assert int(feeder.resource_version) > int(fresh_rv)
        finally:
            stop.set()
            feeder.halt()
        gone = [r for r in sim.requests() if "resourceVersion=1&" in r["query"] and "watch=true" in r["query"]]
        assert gone, "the feeder never tried to resume from the expired resourceVersion"


def _reader_token(client, ns, name):
    """A ServiceAccount token allowed to read every namespace (ClusterRole view); returns it and the binding."""
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "rollout-reader"}})
    kubernetes.client.RbacAuthorizationV1Api(client).create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "rollout-reader", "namespace": ns}]})
    token = core.create_namespaced_service_account_token("rollout-reader", ns,
                                                         {"spec": {"expirationSeconds": 3600}}).status.token
    return token


def test_rollout_check_mode_with_host_token_options_and_env(tmp_path, cp, ns):
    core, _u = create_tenant(cp.kubeconfig, ns)
    client = api(cp.kubeconfig)
    binding = ns + "-rollout-reader"
    token = _reader_token(client, ns, binding)
    try:
        ca = ca_file(cp.kubeconfig, tmp_path)
        # options as module parameters (no KUBECONFIG): the token must not leak into the output
        args = {"namespace": ns, "host": cp.server, "api_key": token, "ca_cert": ca, "timeout": 60}
        rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_rollout", args, extra_env={})
        assert rc == 0, result
        assert result["ready"] is True
        assert token not in run_module.last_output
        # the same through K8S_AUTH_* variables, in check mode: evaluated once, nothing fails
        env = {"K8S_AUTH_HOST": cp.server, "K8S_AUTH_API_KEY": token, "K8S_AUTH_SSL_CA_CERT": ca}
        rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_rollout", {"namespace": ns}, check=True,
                                    extra_env=env)
        assert rc == 0, result
        assert result["ready"] is True and result["changed"] is False
        absent = ns + "-absent"
        rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_rollout", {"namespace": absent}, check=True,
                                    extra_env=env)
        assert rc == 0, result
        assert result["ready"] is False
        assert "not found in namespace %s" % absent in result["msg"]
        # a wrong token is an API error, with a clear message and no token in it
        bad = dict(env, K8S_AUTH_API_KEY="not-the-token")
        rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_rollout", {"namespace": ns, "timeout": 5},
                                    extra_env=bad)
        assert rc != 0
        assert "401" in result["msg"] and "not-the-token" not in result["msg"]
    finally:
        kubernetes.client.RbacAuthorizationV1Api(client).delete_cluster_role_binding(binding)


# ---------------------------------------------------------------- es_pvc_size

def test_pvc_grow_check_mode_then_apply_then_idempotent(tmp_path, cp, ns):
    core, _u = create_tenant(cp.kubeconfig, ns, replicas=2, kibana=False)
    wait_for(lambda: bound_claims(core, ns) == [PVC0, PVC1], what="bound PVCs")
    args = {"namespace": ns, "size": "20Gi", "wait": True, "wait_timeout": 60}

    rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_pvc_size", args, check=True)
    assert rc == 0, result
    assert result["changed"] is True
    assert [(p["name"], p["old"], p["new"]) for p in result["pvcs"]] == [
        (PVC0, "10Gi", "20Gi"), (PVC1, "10Gi", "20Gi")]
    assert pvc_size(core, ns, PVC0) == "10Gi" and pvc_size(core, ns, PVC1) == "10Gi"

    # the storage driver expands the volumes; the module waits for the claims' capacity
    rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_pvc_size", args)
    assert rc == 0, result
    assert result["changed"] is True
    assert [(p["name"], p["old"], p["new"], p["capacity"]) for p in result["pvcs"]] == [
        (PVC0, "10Gi", "20Gi", "20Gi"), (PVC1, "10Gi", "20Gi", "20Gi")]
    assert pvc_size(core, ns, PVC0) == "20Gi" and pvc_size(core, ns, PVC1) == "20Gi"
    for name in (PVC0, PVC1):
        claim = core.read_namespaced_persistent_volume_claim(name, ns)
        assert core.read_persistent_volume(claim.spec.volume_name).spec.capacity["storage"] == "20Gi"

    rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_pvc_size", dict(args, size="20480Mi"))
    assert rc == 0, result
    assert result["changed"] is False
    assert [(p["name"], p["changed"]) for p in result["pvcs"]] == [(PVC0, False), (PVC1, False)]


def test_pvc_grow_patches_each_claim_once_with_a_merge_patch(tmp_path):
    # stays on the simulator: it counts the PATCH requests and their content type in the simulator's request log
    with KubeSim(ready_delay=0.2) as sim:
        create_tenant(sim.kubeconfig, SIM_NS, replicas=2, kibana=False)
        wait_for(lambda: len(sim.objects("persistentvolumeclaims", SIM_NS)) == 2, what="PVCs")
        args = {"namespace": SIM_NS, "size": "20Gi"}
        rc, result, _u = run_module(tmp_path, sim.kubeconfig, "es_pvc_size", args)
        assert rc == 0, result
        patches = [r for r in sim.requests() if r["method"] == "PATCH" and "persistentvolumeclaims" in r["path"]]
        assert len(patches) == 2
        assert all(r["content_type"].startswith("application/merge-patch+json") for r in patches)
        rc, result, _u = run_module(tmp_path, sim.kubeconfig, "es_pvc_size", dict(args, size="20480Mi"))
        assert rc == 0, result
        assert result["changed"] is False
        assert len([r for r in sim.requests() if r["method"] == "PATCH"]) == 2  # idempotent: no patch at all


def test_pvc_shrink_refused_nothing_changed(tmp_path, cp, ns):
    core, _u = create_tenant(cp.kubeconfig, ns, replicas=2, kibana=False)
    wait_for(lambda: bound_claims(core, ns) == [PVC0, PVC1], what="bound PVCs")
    core.patch_namespaced_persistent_volume_claim(
        PVC1, ns, {"spec": {"resources": {"requests": {"storage": "30Gi"}}}},
        _content_type="application/merge-patch+json")
    rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_pvc_size", {"namespace": ns, "size": "20Gi"})
    assert rc != 0
    assert "disk_size 20Gi" in result["msg"]
    assert "%s/%s" % (ns, PVC1) in result["msg"]
    assert "current size 30Gi" in result["msg"]
    # the PVC that could have grown was not touched: nothing half done
    assert pvc_size(core, ns, PVC0) == "10Gi"
    assert pvc_size(core, ns, PVC1) == "30Gi"
    assert result.get("changed") is False


def test_pvc_refused_when_a_claim_is_not_bound(tmp_path, cp, ns):
    core, _u = create_tenant(cp.kubeconfig, ns, kibana=False)
    wait_for(lambda: bound_claims(core, ns) == [PVC0], what="bound PVC")
    # a claim of ordinal 1 left over from a larger StatefulSet, never bound (its class does not exist)
    core.create_namespaced_persistent_volume_claim(ns, {
        "metadata": {"name": PVC1},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "gone",
                 "resources": {"requests": {"storage": "10Gi"}}}})
    rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_pvc_size", {"namespace": ns, "size": "20Gi"})
    assert rc != 0
    assert "PVC %s/%s is not bound (phase Pending)" % (ns, PVC1) in result["msg"]
    assert pvc_size(core, ns, PVC0) == "10Gi"
    assert pvc_size(core, ns, PVC1) == "10Gi"


def test_pvc_refused_when_storage_class_cannot_expand(tmp_path, cp, ns):
    client = api(cp.kubeconfig)
    fixed = ns + "-fixed"
    remove = static_storage_class(client, fixed, expandable=False)
    try:
        static_volume(client, fixed, ns, PVC0)
        core, _u = create_tenant(cp.kubeconfig, ns, kibana=False, storage_class=fixed)
        wait_for(lambda: bound_claims(core, ns) == [PVC0], what="bound PVC")
        rc, result, _u = run_module(tmp_path, cp.kubeconfig, "es_pvc_size", {"namespace": ns, "size": "20Gi"})
        assert rc != 0
        assert "StorageClass %s of PVC %s/%s does not allow volume expansion" % (fixed, ns, PVC0) in result["msg"]
        assert pvc_size(core, ns, PVC0) == "10Gi"
    finally:
        remove()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
