"""The test control plane is a real Kubernetes: TLS, RBAC, admission, the
built-in controllers, KWOK nodes, storage, and the failure modes the
collection's rollout wait must recognise."""

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.waiting import wait_for
from tests.controlplane import build
from tests.controlplane.pki import Authority
from tests.controlplane.pytest_plugin import NamespaceHygiene
from tests.controlplane.stages import READY_DELAY_ANNOTATION

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def api(controlplane):
    with NamespaceHygiene(controlplane.kubeconfig, wait=False):  # each test has a namespace of its own
        yield config.new_client_from_config(config_file=controlplane.kubeconfig)


@pytest.fixture
def ns(api, request):
    name = "cp-" + request.node.name.replace("_", "-")[5:40].strip("-").lower()
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    wait_for(lambda: _default_sa(api, name), what="default service account")
    return name


def _default_sa(api, namespace):
    try:
        return client.CoreV1Api(api).read_namespaced_service_account("default", namespace)
    except ApiException:
        return None


def _pod(name, image="docker.elastic.co/elasticsearch/elasticsearch:8.15.3", resources=None, annotations=None,
         container="main"):
    c = {"name": container, "image": image}
    if resources:
        c["resources"] = resources
    return {"metadata": {"name": name, "annotations": annotations or {}}, "spec": {"containers": [c]}}


def _events(core, namespace, pod):
    return [e for e in core.list_namespaced_event(namespace).items if e.involved_object.name == pod]


def test_version_nodes_and_default_storage_class(api):
    assert client.VersionApi(api).get_code().git_version == build.kubernetes_version()
    nodes = client.CoreV1Api(api).list_node().items
    assert len(nodes) == 2
    for node in nodes:
        assert [c.status for c in node.status.conditions if c.type == "Ready"] == ["True"]
        assert node.status.allocatable["nvidia.com/gpu"] == "4"
    classes = client.StorageV1Api(api).list_storage_class().items
    assert [(c.metadata.name, c.allow_volume_expansion,
             c.metadata.annotations.get("storageclass.kubernetes.io/is-default-class")) for c in classes] == \
        [("standard", True, "true")]


def test_clients_verify_the_server_certificate(controlplane, tmp_path):
    with open(controlplane.kubeconfig) as f:
        kubeconfig = yaml.safe_load(f)
    # A kubeconfig that trusts another CA.
    kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"] = \
        base64.b64encode(Authority("someone-else").pem).decode()
    path = tmp_path / "wrong-ca.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    wrong = client.CoreV1Api(config.new_client_from_config(config_file=str(path)))
    wrong.api_client.configuration.retries = 0
    with pytest.raises(Exception) as info:
        wrong.list_namespace()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    # No client certificate: anonymous requests are not authorised.
    ctx = ssl.create_default_context(cadata=controlplane._ca.pem.decode())
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(controlplane.server + "/api/v1/namespaces", context=ctx, timeout=5)
    assert denied.value.code in (401, 403)


def test_rbac_a_non_admin_identity_needs_a_role(controlplane, api, ns):
    user = client.CoreV1Api(config.new_client_from_config(
        config_file=controlplane.user_kubeconfig("operator", groups=["es-operators"])))
    with pytest.raises(ApiException) as denied:
        user.list_namespaced_config_map(ns)
    assert denied.value.status == 403
    assert 'User "operator" cannot list resource "configmaps"' in json.loads(denied.value.body)["message"]
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(ns, {"metadata": {"name": "cm-reader"},
                                     "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                                                "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(ns, {"metadata": {"name": "cm-reader"},
                                             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                         "name": "cm-reader"},
                                             "subjects": [{"kind": "Group", "name": "es-operators",
                                                           "apiGroup": "rbac.authorization.k8s.io"}]})
    wait_for(lambda: _can_list(user, ns), what="the role to apply")
    with pytest.raises(ApiException) as still:
        user.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
    assert still.value.status == 403


def _can_list(core, namespace):
    try:
        core.list_namespaced_config_map(namespace)
        return True
    except ApiException:
        return False


def test_admission_limit_range_quota_and_service_account(api, ns):
    core = client.CoreV1Api(api)
    core.create_namespaced_limit_range(ns, {"metadata": {"name": "defaults"}, "spec": {"limits": [
        {"type": "Container", "default": {"cpu": "1", "memory": "1Gi"},
         "defaultRequest": {"cpu": "100m", "memory": "256Mi"}}]}})
    core.create_namespaced_resource_quota(ns, {"metadata": {"name": "quota"},
                                               "spec": {"hard": {"requests.cpu": "1", "pods": "5"}}})
    wait_for(lambda: core.read_namespaced_resource_quota("quota", ns).status.hard, what="quota status")
    pod = core.create_namespaced_pod(ns, _pod("defaulted"))
    assert pod.spec.containers[0].resources.requests == {"cpu": "100m", "memory": "256Mi"}
    assert pod.spec.containers[0].resources.limits == {"cpu": "1", "memory": "1Gi"}
    assert pod.spec.service_account_name == "default"
    assert any(v.projected for v in pod.spec.volumes)  # the ServiceAccount plugin mounted a token
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(ns, _pod("too-big", resources={"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}))
    assert refused.value.status == 403
    assert "exceeded quota: quota" in refused.value.body
    token = core.create_namespaced_service_account_token("default", ns, {"spec": {"expirationSeconds": 600}})
    assert token.status.token.count(".") == 2


def test_statefulset_with_volumes_rolls_out_and_a_claim_expands(api, ns):
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_stateful_set(ns, {
        "metadata": {"name": "es"},
        "spec": {"replicas": 2, "serviceName": "es", "selector": {"matchLabels": {"app": "es"}},
                 "template": {"metadata": {"labels": {"app": "es"}},
                              "spec": {"containers": [{"name": "es", "image": "elasticsearch:8.15.3",
                                                       "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    wait_for(lambda: apps.read_namespaced_stateful_set("es", ns).status.ready_replicas == 2, what="ready replicas")
    claims = core.list_namespaced_persistent_volume_claim(ns).items
    assert sorted((c.metadata.name, c.status.phase, c.spec.storage_class_name) for c in claims) == [
        ("data-es-0", "Bound", "standard"), ("data-es-1", "Bound", "standard")]
    core.patch_namespaced_persistent_volume_claim("data-es-0", ns,
                                                  {"spec": {"resources": {"requests": {"storage": "3Gi"}}}})
    wait_for(lambda: core.read_namespaced_persistent_volume_claim("data-es-0", ns).status.capacity["storage"]
             == "3Gi", what="the claim to expand")
    volume = core.read_namespaced_persistent_volume_claim("data-es-0", ns).spec.volume_name
    assert core.read_persistent_volume(volume).spec.capacity["storage"] == "3Gi"
    with pytest.raises(ApiException) as shrink:
        core.patch_namespaced_persistent_volume_claim("data-es-0", ns,
                                                      {"spec": {"resources": {"requests": {"storage": "1Gi"}}}})
    assert shrink.value.status == 422 and "field can not be less than" in shrink.value.body


def test_image_pull_failure_names_the_image(api, ns):
    core = client.CoreV1Api(api)
    image = "registry.invalid/elasticsearch/elasticsearch:8.15.3"
    core.create_namespaced_pod(ns, _pod("pull", image=image))

    def backoff():
        statuses = core.read_namespaced_pod("pull", ns).status.container_statuses or []
        return [s for s in statuses if s.state.waiting and s.state.waiting.reason == "ImagePullBackOff"]

    status = wait_for(backoff, what="ImagePullBackOff")[0]
    assert status.image == image
    assert status.state.waiting.message == 'Back-off pulling image "%s"' % image
    warnings = [e.message for e in _events(core, ns, "pull") if e.type == "Warning"]
    assert any(m.startswith('Failed to pull image "%s"' % image) for m in warnings), warnings


def test_crash_loop_restart_count_rises(api, ns):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(ns, _pod("crash", image="example.org/crash-loop/kibana:8.15.3"))

    def restarts():
        statuses = core.read_namespaced_pod("crash", ns).status.container_statuses or []
        return [s.restart_count for s in statuses if s.state.waiting and s.state.waiting.reason == "CrashLoopBackOff"]

    first = wait_for(restarts, what="CrashLoopBackOff")[0]
    wait_for(lambda: (restarts() or [0])[0] > first, what="another restart")
    pod = core.read_namespaced_pod("crash", ns)
    status = pod.status.container_statuses[0]
    assert status.last_state.terminated.exit_code == 1 and not status.ready
    assert status.state.waiting.message == "back-off 10s restarting failed container=main pod=crash_%s(%s)" % (
        ns, pod.metadata.uid)
    assert any(e.reason == "BackOff" and "Back-off restarting failed container main" in e.message
               for e in _events(core, ns, "crash"))


def test_unschedulable_pod_gets_the_schedulers_message(api, ns):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(ns, _pod("gpu", resources={"limits": {"nvidia.com/gpu": "8"}}))

    def condition():
        for c in core.read_namespaced_pod("gpu", ns).status.conditions or []:
            if c.type == "PodScheduled" and c.reason == "Unschedulable":
                return c
        return None

    assert "Insufficient nvidia.com/gpu" in wait_for(condition, what="Unschedulable").message


def test_a_pod_can_ask_for_a_longer_ready_delay(api, ns):
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(ns, _pod("slow", annotations={READY_DELAY_ANNOTATION: "3s"}))
    core.create_namespaced_pod(ns, _pod("slow-image", image="example.org/es:ready-after-3s"))
    core.create_namespaced_pod(ns, _pod("quick"))

    def ready_after(name):
        pod = core.read_namespaced_pod(name, ns)
        for c in pod.status.conditions or []:
            if c.type == "Ready" and c.status == "True":
                return (c.last_transition_time - pod.metadata.creation_timestamp).total_seconds() + 0.001
        return None

    slow = wait_for(lambda: ready_after("slow"), what="slow pod")
    slow_image = wait_for(lambda: ready_after("slow-image"), what="slow-image pod")
    quick = wait_for(lambda: ready_after("quick"), what="quick pod")
    assert slow >= 2 and slow_image >= 2  # timestamps have whole seconds
    assert quick < min(slow, slow_image)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as f:  # a zombie is dead too
        return f.read().split(") ")[1][0] != "Z"


def test_everything_stops_when_the_serving_process_dies(tmp_path):
    kubeconfig = str(tmp_path / "kubeconfig")
    proc = subprocess.Popen([sys.executable, "-m", "tests.controlplane", "serve", "--kubeconfig", kubeconfig,
                             "--nodes", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert "control plane ready" in line, line + proc.stdout.read()
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                               text=True, check=False).stdout.split()]
    assert len(children) == 5  # etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not any(_alive(p) for p in children), timeout=10, what="the components to die")


def _up(script, kubeconfig):
    up = subprocess.run([script, "up", "--kubeconfig", kubeconfig, "--nodes", "1", "--node-gpus", "0"],
                        capture_output=True, text=True, check=False, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    print(up.stdout.strip())
    with open(kubeconfig + ".controlplane/serve.pid") as f:
        return int(f.read())


def test_up_and_down(tmp_path):
    kubeconfig = str(tmp_path / "admin.kubeconfig")
    script = os.path.join(ROOT, "scripts", "control-plane")
    killed = _up(script, kubeconfig)
    again = subprocess.run([script, "up", "--kubeconfig", kubeconfig], capture_output=True, text=True, check=False)
    assert again.returncode != 0 and "already runs" in again.stderr
    os.kill(killed, signal.SIGKILL)  # what it leaves behind does not stop the next up
    wait_for(lambda: not _alive(killed), timeout=10, what="the killed control plane to go")
    serve = _up(script, kubeconfig)
    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    assert [n.metadata.name for n in core.list_node().items] == ["kwok-node-0"]
    alice = str(tmp_path / "alice.kubeconfig")
    made = subprocess.run([script, "kubeconfig", "--kubeconfig", kubeconfig, "--user", "alice", "--out", alice],
                          capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(config.new_client_from_config(config_file=alice)).list_node()
    assert denied.value.status == 403 and 'User "alice"' in json.loads(denied.value.body)["message"]
    down = subprocess.run([script, "down", "--kubeconfig", kubeconfig], capture_output=True, text=True,
                          check=False, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not _alive(serve)
    assert not os.path.exists(kubeconfig) and not os.path.exists(kubeconfig + ".controlplane")


def test_job_completes_and_garbage_collection_follows_owners(api, ns):
    batch, apps = client.BatchV1Api(api), client.AppsV1Api(api)
    batch.create_namespaced_job(ns, {"metadata": {"name": "once"}, "spec": {"backoffLimit": 0, "template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    wait_for(lambda: batch.read_namespaced_job("once", ns).status.succeeded == 1, what="the Job to succeed")
    apps.create_namespaced_deployment(ns, {"metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    wait_for(lambda: apps.read_namespaced_deployment("web", ns).status.available_replicas == 2, what="available")
    assert len(apps.list_namespaced_replica_set(ns).items) == 1
    apps.delete_namespaced_deployment("web", ns, propagation_policy="Background")
    wait_for(lambda: not apps.list_namespaced_replica_set(ns).items, what="the ReplicaSet to be collected")
    wait_for(lambda: not client.CoreV1Api(api).list_namespaced_pod(ns, label_selector="app=web").items,
             what="its pods to be collected")
