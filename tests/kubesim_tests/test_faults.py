"""Faults of the simulated cluster as clients see them, through the official
``kubernetes`` client and the genuine kubectl binary against the running
simulator: image pull failure, crash loop, unschedulable GPU request, and
``kubectl rollout status`` waiting and succeeding as on a real cluster."""

import re
import shutil
import subprocess

import kubernetes

from tests.waiting import wait_for


pytest_plugins = ["tests.kubesim.pytest_plugin"]

NS = "tenant-faults"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def clients(sim):
    api = kubernetes.config.new_client_from_config(config_file=sim.kubeconfig)
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return core, kubernetes.client.AppsV1Api(api)


def make_pod(name, image, resources=None):
    container = {"name": name.rsplit("-", 1)[0], "image": image}
    if resources:
        container["resources"] = resources
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}


def pod_events(core, name):
    return [e for e in core.list_namespaced_event(NS).items if e.involved_object.name == name]


def waiting(core, name):
    pod = core.read_namespaced_pod(name, NS)
    statuses = pod.status.container_statuses or []
    if statuses and statuses[0].state and statuses[0].state.waiting:
        return statuses[0].state.waiting
    return None


def test_image_pull_failure_as_clients_see_it(kubesim_factory):  # noqa: F811
    sim = kubesim_factory(ready_delay=0.2, image_pull_fail=["prom/prometheus"])
    core, _u = clients(sim)
    core.create_namespaced_pod(NS, make_pod("prometheus-0", "prom/prometheus:v2.47.0"))
    reasons = set()

    def seen_both():
        w = waiting(core, "prometheus-0")
        if w is not None:
            reasons.add(w.reason)
        return {"ErrImagePull", "ImagePullBackOff"} <= reasons

    wait_for(seen_both)
    w = wait_for(lambda: (waiting(core, "prometheus-0") or None) if getattr(
        waiting(core, "prometheus-0"), "reason", None) == "ImagePullBackOff" else None)
    assert w.message == 'Back-off pulling image "prom/prometheus:v2.47.0"'
    pod = core.read_namespaced_pod("prometheus-0", NS)
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].ready is False
    assert pod.status.container_statuses[0].image == "prom/prometheus:v2.47.0"
    events = pod_events(core, "prometheus-0")
    failed = [e for e in events if e.reason == "Failed" and e.message.startswith("Failed to pull image")]
    assert failed and failed[0].type == "Warning"
    assert failed[0].message.startswith('Failed to pull image "prom/prometheus:v2.47.0": rpc error: code = NotFound')
    assert failed[0].source.component == "kubelet"
    assert failed[0].involved_object.field_path == "spec.containers{prometheus}"
    backoff = [e for e in events if e.reason == "BackOff"]
    assert backoff and backoff[0].message == 'Back-off pulling image "prom/prometheus:v2.47.0"'
    assert {e.message for e in events if e.reason == "Failed"} >= {"Error: ErrImagePull", "Error: ImagePullBackOff"}


def test_crash_loop_as_clients_see_it(kubesim_factory):  # noqa: F811
    sim = kubesim_factory(ready_delay=0.2, crash=["minio"])
    core, _u = clients(sim)
    created = core.create_namespaced_pod(NS, make_pod("minio-0", "minio/minio:latest"))
    uid = created.metadata.uid

    def restarts():
        st = core.read_namespaced_pod("minio-0", NS).status.container_statuses
        return st[0].restart_count if st else 0

    counts = []
    wait_for(lambda: counts.append(restarts()) or counts[-1] >= 3)
    assert counts == sorted(counts)  # restartCount only rises
    w = wait_for(lambda: getattr(waiting(core, "minio-0"), "reason", None) == "CrashLoopBackOff"
                 and waiting(core, "minio-0"))
    assert re.fullmatch(r"back-off (10s|20s|40s|1m20s|2m40s|5m0s) restarting failed container=minio "
                        r"pod=minio-0_%s\(%s\)" % (NS, uid), w.message)
    pod = core.read_namespaced_pod("minio-0", NS)
    cs = pod.status.container_statuses[0]
    assert pod.status.phase == "Running" and cs.ready is False
    assert cs.last_state.terminated.exit_code == 1 and cs.last_state.terminated.reason == "Error"
    backoff = [e for e in pod_events(core, "minio-0") if e.reason == "BackOff"]
    assert backoff[0].type == "Warning"
    assert backoff[0].message == "Back-off restarting failed container minio in pod minio-0_%s(%s)" % (NS, uid)


def test_unschedulable_gpu_as_clients_see_it(kubesim_factory):  # noqa: F811
    sim = kubesim_factory(ready_delay=0.2)
    core, _u = clients(sim)
    gpu = {"limits": {"nvidia.com/gpu": "1"}}
    core.create_namespaced_pod(NS, make_pod("es-0", "docker.elastic.co/elasticsearch/elasticsearch:8.15.3", gpu))

    def scheduled_cond():
        conds = core.read_namespaced_pod("es-0", NS).status.conditions or []
        return next((c for c in conds if c.type == "PodScheduled"), None)

    cond = wait_for(scheduled_cond)
    assert (cond.status, cond.reason) == ("False", "Unschedulable")
    assert cond.message == ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu. no new claims to deallocate, "
                            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")
    pod = core.read_namespaced_pod("es-0", NS)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    ev = wait_for(lambda: [e for e in pod_events(core, "es-0") if e.reason == "FailedScheduling"])[0]
    assert ev.type == "Warning" and ev.message == cond.message
    node = core.list_node().items[0]
    assert "nvidia.com/gpu" not in node.status.allocatable
    assert node.status.allocatable["cpu"] == "16" and node.status.allocatable["memory"] == "64Gi"


def es_statefulset(replicas, image):
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "elasticsearch"},
        "spec": {
            "replicas": replicas, "serviceName": "elasticsearch",
            "selector": {"matchLabels": {"app": "elasticsearch"}},
            "template": {"metadata": {"labels": {"app": "elasticsearch"}},
                         "spec": {"containers": [{"name": "elasticsearch", "image": image}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "elasticsearch-data"},
                                      "spec": {"accessModes": ["ReadWriteOnce"],
                                               "resources": {"requests": {"storage": "10Gi"}}}}],
        },
    }


def kubectl(sim, *args, timeout=60):
    return subprocess.run([KUBECTL, "--kubeconfig", sim.kubeconfig, "-n", NS, *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_kubectl_rollout_status_statefulset_and_deployment(kubesim_factory):  # noqa: F811
    sim = kubesim_factory(ready_delay=1.0)
    core, apps = clients(sim)
    apps.create_namespaced_stateful_set(NS, es_statefulset(2, "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"))
    apps.create_namespaced_deployment(NS, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kibana"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "kibana"}},
                 "template": {"metadata": {"labels": {"app": "kibana"}},
                              "spec": {"containers": [{"name": "kibana",
                                                       "image": "docker.elastic.co/kibana/kibana:8.15.3"}]}}}})
    out = kubectl(sim, "rollout", "status", "sts/elasticsearch", "--timeout=30s")
    assert out.returncode == 0, out.stderr
    assert "partitioned roll out complete: 2 new pods have been updated..." in out.stdout
    assert "Waiting for" in out.stdout  # it really waited for the pods
    out = kubectl(sim, "rollout", "status", "deploy/kibana", "--timeout=30s")
    assert out.returncode == 0, out.stderr
    assert 'deployment "kibana" successfully rolled out' in out.stdout
    sim.set_ready_delay(0.3)

    # a template change rolls the pods again, highest ordinal first
    patch = ('{"spec":{"template":{"spec":{"containers":[{"name":"elasticsearch",'
             '"resources":{"limits":{"cpu":"2","memory":"4Gi"}}}]}}}}')
    out = kubectl(sim, "patch", "sts", "elasticsearch", "-p", patch)
    assert out.returncode == 0, out.stderr
    out = kubectl(sim, "rollout", "status", "sts/elasticsearch", "--timeout=30s")
    assert out.returncode == 0, out.stderr
    assert "partitioned roll out complete: 2 new pods have been updated..." in out.stdout
    sts = apps.read_namespaced_stateful_set("elasticsearch", NS)
    assert sts.status.current_revision == sts.status.update_revision
    for i in range(2):
        pod = core.read_namespaced_pod("elasticsearch-%d" % i, NS)
        assert pod.metadata.labels["controller-revision-hash"] == sts.status.update_revision

    # a broken image makes kubectl wait until its timeout, as on a real cluster
    sim.set_image_pull_fail(["kibana:broken"])
    out = kubectl(sim, "set", "image", "deploy/kibana", "kibana=docker.elastic.co/kibana/kibana:broken")
    assert out.returncode == 0, out.stderr
    out = kubectl(sim, "rollout", "status", "deploy/kibana", "--timeout=2s")
    assert out.returncode != 0
    assert 'Waiting for deployment "kibana" rollout to finish' in out.stdout


def test_an_injected_429_says_when_to_retry(kubesim_factory):  # noqa: F811
    sim = kubesim_factory(faults=["GET:namespaces:429:1"])
    status, body, headers = sim.call("GET", "/api/v1/namespaces/default")
    assert status == 429 and headers["Retry-After"] == "1"
    assert (body["reason"], body["message"]) == ("TooManyRequests", "Too many requests, please try again later.")
    assert body["details"]["retryAfterSeconds"] == 1
    assert sim.call("GET", "/api/v1/namespaces/default")[0] == 200  # the count was one
