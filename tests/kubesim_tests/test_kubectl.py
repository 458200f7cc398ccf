"""The genuine kubectl binary, unchanged, against both clusters (the
simulator and the real control plane, fixture ``k8s``): the commands the
platform scripts run, and the refusals a real server gives."""

import json
import shutil
import subprocess
import threading
import time

import pytest

from tests.waiting import wait_for

pytest_plugins = ["tests.kubesim.pytest_plugin", "tests.kubesim_tests.clusters"]

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

STS = """
apiVersion: v1
kind: Service
metadata: {name: elasticsearch, namespace: NS}
spec:
  clusterIP: None
  selector: {app: elasticsearch}
  ports: [{name: http, port: 9200}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: elasticsearch, namespace: NS}
spec:
  serviceName: elasticsearch
  replicas: 1
  selector: {matchLabels: {app: elasticsearch}}
  template:
    metadata: {labels: {app: elasticsearch}}
    spec:
      containers:
      - name: elasticsearch
        image: docker.elastic.co/elasticsearch/elasticsearch:8.15.0
        resources: {requests: {cpu: "1", memory: 2Gi}, limits: {cpu: "2", memory: 4Gi}}
        volumeMounts: [{name: elasticsearch-data, mountPath: /usr/share/elasticsearch/data}]
  volumeClaimTemplates:
  - metadata: {name: elasticsearch-data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 5Gi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: kibana, namespace: NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: kibana}}
  template:
    metadata: {labels: {app: kibana}}
    spec:
      containers:
      - name: kibana
        image: docker.elastic.co/kibana/kibana:8.15.0
"""


def gpu_patch(count="1"):
    return json.dumps({"spec": {"template": {"spec": {"containers": [{
        "name": "elasticsearch",
        "resources": {"limits": {"nvidia.com/gpu": count}, "requests": {"nvidia.com/gpu": count}}}]}}}})


class Kubectl:
    def __init__(self, cluster):
        self.cluster = cluster
        self.kubeconfig = cluster.kubeconfig

    def __call__(self, *args, stdin=None, check=True, timeout=120):
        proc = subprocess.run([KUBECTL, "--kubeconfig", self.kubeconfig] + list(args), input=stdin,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("kubectl %s failed (%d): %s%s"
                                 % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def json(self, *args):
        return json.loads(self(*args, "-o", "json").stdout)


@pytest.fixture
def kubectl(k8s):
    return Kubectl(k8s)


@pytest.fixture
def ns(k8s):
    """A namespace name of this test's own (not created)."""
    return k8s.unique("es")


def deploy(kubectl, ns):
    kubectl("create", "namespace", ns)
    kubectl("apply", "-f", "-", stdin=STS.replace("NS", ns))


def test_platform_script_commands(kubectl, ns):
    assert kubectl("create", "namespace", ns).stdout.strip() == "namespace/%s created" % ns
    assert kubectl("label", "namespace", ns, "es-cluster=true").stdout.strip() == "namespace/%s labeled" % ns
    assert kubectl.json("get", "namespace", ns)["metadata"]["labels"]["es-cluster"] == "true"
    kubectl("apply", "-f", "-", stdin=STS.replace("NS", ns))
    kubectl("-n", ns, "annotate", "sts/elasticsearch", "es.yunpeng.cn/max-indices=100", "--overwrite")
    sts = kubectl.json("-n", ns, "get", "sts", "elasticsearch")
    assert sts["metadata"]["annotations"]["es.yunpeng.cn/max-indices"] == "100"
    assert sts["metadata"]["generation"] == 1
    kubectl("-n", ns, "rollout", "status", "sts/elasticsearch", "--timeout=60s")
    kubectl("-n", ns, "rollout", "status", "deploy/kibana", "--timeout=60s")

    out = kubectl("-n", ns, "scale", "sts/elasticsearch", "--replicas", "2").stdout
    assert out.strip() == "statefulset.apps/elasticsearch scaled"
    assert kubectl.json("-n", ns, "get", "sts", "elasticsearch")["spec"]["replicas"] == 2

    kubectl("-n", ns, "set", "resources", "sts/elasticsearch", "--requests=cpu=2,memory=4Gi",
            "--limits=cpu=4,memory=8Gi")
    res = kubectl.json("-n", ns, "get", "sts", "elasticsearch")["spec"]["template"]["spec"]["containers"][0][
        "resources"]
    assert res == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}

    kubectl("-n", ns, "patch", "pvc", "elasticsearch-data-elasticsearch-0", "-p",
            '{"spec":{"resources":{"requests":{"storage":"10Gi"}}}}')
    pvc = kubectl.json("-n", ns, "get", "pvc", "elasticsearch-data-elasticsearch-0")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"

    kubectl("-n", ns, "patch", "sts", "elasticsearch", "-p", gpu_patch())
    sts = kubectl.json("-n", ns, "get", "sts", "elasticsearch")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert container["volumeMounts"] == [{"name": "elasticsearch-data", "mountPath": "/usr/share/elasticsearch/data"}]
    assert sts["metadata"]["generation"] == 4
    # strategic merge kept the template's other fields and the annotation set before
    assert sts["metadata"]["annotations"]["es.yunpeng.cn/max-indices"] == "100"
    assert sts["spec"]["replicas"] == 2 and sts["kind"] == "StatefulSet"
    names = kubectl("get", "ns", "-l", "es-cluster=true", "-o", "name").stdout.split()
    assert "namespace/%s" % ns in names


def test_kubectl_patches_reach_the_server_as_merge_and_strategic_patches(kubesim):
    """Simulator only: it reads the simulator's request log."""
    kubectl = Kubectl(kubesim)
    kubectl("create", "namespace", "es1")
    kubectl("label", "namespace", "es1", "es-cluster=true")
    kubectl("patch", "namespace", "es1", "-p", '{"metadata":{"annotations":{"a":"b"}}}')
    paths = [(r["method"], r["content_type"], r["status"]) for r in kubesim.requests() if r["method"] == "PATCH"]
    assert paths == [("PATCH", "application/merge-patch+json", 200),
                     ("PATCH", "application/strategic-merge-patch+json", 200)]


def test_rollout_status_follows_a_template_change(kubectl, ns):
    deploy(kubectl, ns)
    kubectl("-n", ns, "rollout", "status", "sts/elasticsearch", "--timeout=60s")
    kubectl("-n", ns, "set", "image", "deploy/kibana", "kibana=docker.elastic.co/kibana/kibana:8.16.0")
    out = kubectl("-n", ns, "rollout", "status", "deploy/kibana", "--timeout=60s").stdout
    assert 'deployment "kibana" successfully rolled out' in out
    kubectl("-n", ns, "patch", "sts", "elasticsearch", "-p", gpu_patch())
    out = kubectl("-n", ns, "rollout", "status", "sts/elasticsearch", "--timeout=60s").stdout
    assert "partitioned roll out complete" in out or "rolling update complete" in out
    pod = kubectl.json("-n", ns, "get", "pod", "elasticsearch-0")
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # kubectl get prints the server's Table columns
    lines = kubectl("-n", ns, "get", "sts").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "AGE"] and lines[1].split()[:2] == ["elasticsearch", "1/1"]
    lines = kubectl("-n", ns, "get", "pod", "elasticsearch-0").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split()[:4] == ["elasticsearch-0", "1/1", "Running", "0"]
    kinds = {line.split("/")[0] for line in kubectl("-n", ns, "get", "all", "-o", "name").stdout.split()}
    assert kinds == {"pod", "service", "statefulset.apps", "deployment.apps", "replicaset.apps"}
    lines = kubectl("get", "ns", ns).stdout.splitlines()
    assert lines[1].split()[:2] == [ns, "Active"]


def test_refusals(kubectl, ns):
    deploy(kubectl, ns)
    p = kubectl("create", "namespace", "Bad_Name", check=False)
    assert p.returncode == 1
    assert 'The Namespace "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"' in p.stderr

    p = kubectl("-n", ns, "patch", "sts", "elasticsearch", "-p", '{"spec":{"serviceName":"other"}}', check=False)
    assert p.returncode == 1
    assert ('The StatefulSet "elasticsearch" is invalid: spec: Forbidden: updates to statefulset spec for fields '
            "other than 'replicas', 'ordinals', 'template', 'updateStrategy'") in p.stderr

    kubectl("-n", ns, "rollout", "status", "sts/elasticsearch", "--timeout=60s")  # the claim is bound
    p = kubectl("-n", ns, "patch", "pvc", "elasticsearch-data-elasticsearch-0", "-p",
                '{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}', check=False)
    assert p.returncode == 1
    assert "spec.resources.requests.storage: Forbidden: field can not be less than" in p.stderr

    bad_gpu = json.dumps({"spec": {"template": {"spec": {"containers": [{"name": "elasticsearch", "resources": {
        "limits": {"nvidia.com/gpu": "2"}, "requests": {"nvidia.com/gpu": "1"}}}]}}}})
    p = kubectl("-n", ns, "patch", "sts", "elasticsearch", "-p", bad_gpu, check=False)
    assert p.returncode == 1
    assert ('spec.template.spec.containers[0].resources.requests: Invalid value: "1": must be '
            "equal to nvidia.com/gpu limit of 2") in p.stderr

    p = kubectl("apply", "-f", "-", check=False, stdin="""
apiVersion: v1
kind: ConfigMap
metadata: {name: c1, namespace: NS}
data: {a: b}
bogus: true
""".replace("NS", ns))
    assert p.returncode == 1
    assert 'strict decoding error: unknown field "bogus"' in p.stderr
    p = kubectl("-n", ns, "get", "configmap", "c1", check=False)
    assert p.returncode == 1 and 'configmaps "c1" not found' in p.stderr

    p = kubectl("-n", ns, "get", "sts", "nope", check=False)
    assert p.returncode == 1 and 'statefulsets.apps "nope" not found' in p.stderr
    # kubectl looks the namespace up after a NotFound and reports that instead
    p = kubectl("-n", "nope", "get", "sts", "elasticsearch", check=False)
    assert p.returncode == 1 and 'namespaces "nope" not found' in p.stderr

    p = kubectl("create", "namespace", ns, check=False)
    assert p.returncode == 1 and 'namespaces "%s" already exists' % ns in p.stderr


def test_injected_fault_reaches_kubectl(kubesim):
    """Simulator only: fault injection."""
    kubectl = Kubectl(kubesim)
    deploy(kubectl, "es1")
    kubesim.add_fault("PATCH:statefulsets:500:1")
    p = kubectl("-n", "es1", "annotate", "sts/elasticsearch", "a=b", check=False)
    assert p.returncode == 1
    assert "Error from server (InternalError)" in p.stderr and "injected fault" in p.stderr
    kubectl("-n", "es1", "annotate", "sts/elasticsearch", "a=b")


def test_delete_namespace_with_kubectl(kubectl, ns):
    deploy(kubectl, ns)
    kubectl("-n", ns, "rollout", "status", "sts/elasticsearch", "--timeout=60s")
    kubectl("delete", "namespace", ns, "--timeout=60s")
    p = kubectl("get", "namespace", ns, check=False)
    assert p.returncode == 1 and 'namespaces "%s" not found' % ns in p.stderr
    assert kubectl.json("-n", ns, "get", "pods")["items"] == []


def test_pod_faults_as_kubectl_sees_them(kubectl, ns):
    image = "registry.invalid/kibana/kibana:8.15.0"  # both clusters fail to pull images from registry.invalid
    deploy(kubectl, ns)
    kubectl("-n", ns, "set", "image", "deploy/kibana", "kibana=" + image)

    def pulling_fails():
        pods = kubectl.json("-n", ns, "get", "pods", "-l", "app=kibana")["items"]
        for p in pods:
            for cs in p["status"].get("containerStatuses") or []:
                if (cs["state"].get("waiting") or {}).get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                    return p
        return None

    pod = wait_for(pulling_fails)

    def warnings():
        events = kubectl.json("-n", ns, "get", "events", "--field-selector",
                              "involvedObject.name=%s,type=Warning" % pod["metadata"]["name"])["items"]
        return [e for e in events if '"%s"' % image in e["message"]]

    wait_for(warnings)
    p = kubectl("-n", ns, "rollout", "status", "deploy/kibana", "--timeout=3s", check=False)
    assert p.returncode == 1

    # a GPU request no node can satisfy stays Pending with the scheduler's message
    nodes = kubectl.cluster.node_count()
    kubectl("-n", ns, "patch", "sts", "elasticsearch", "-p", gpu_patch("8"))

    def unschedulable():
        pod = kubectl.json("-n", ns, "get", "pod", "elasticsearch-0")
        conds = [c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"]
        if conds and conds[0]["status"] == "False" and "nvidia.com/gpu" in (pod["spec"]["containers"][0][
                "resources"].get("limits") or {}):
            return conds[0]
        return None

    cond = wait_for(unschedulable)
    assert cond["reason"] == "Unschedulable"
    assert cond["message"] == (
        "0/{n} nodes are available: {n} Insufficient nvidia.com/gpu. no new claims to deallocate, "
        "preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.".format(n=nodes))
    p = kubectl("-n", ns, "rollout", "status", "sts/elasticsearch", "--timeout=3s", check=False)
    assert p.returncode == 1


def test_kubectl_create_configmap_and_secret(kubectl, ns):
    kubectl("create", "namespace", ns)
    kubectl("-n", ns, "create", "configmap", "cfg", "--from-literal=max-indices=100")
    kubectl("-n", ns, "create", "secret", "generic", "creds", "--from-literal=password=s3cret")
    assert kubectl.json("-n", ns, "get", "configmap", "cfg")["data"] == {"max-indices": "100"}
    secret = kubectl.json("-n", ns, "get", "secret", "creds")
    assert secret["type"] == "Opaque" and secret["data"] == {"password": "czNjcmV0"}


def test_kubectl_create_sends_protobuf_that_the_server_reads(kubesim):
    """Simulator only: it reads the request log (what kubectl sent)."""
    kubectl = Kubectl(kubesim)
    kubectl("create", "namespace", "es1")
    kubectl("-n", "es1", "create", "configmap", "cfg", "--from-literal=max-indices=100")
    kubectl("-n", "es1", "create", "secret", "generic", "creds", "--from-literal=password=s3cret")
    posts = [r for r in kubesim.requests() if r["method"] == "POST"]
    assert {r["content_type"] for r in posts} == {"application/vnd.kubernetes.protobuf"}
    assert [r["status"] for r in posts] == [201, 201, 201]
    assert kubesim.get("configmaps", "es1", "cfg")["data"] == {"max-indices": "100"}
    secret = kubesim.get("secrets", "es1", "creds")
    assert secret["type"] == "Opaque" and secret["data"] == {"password": "czNjcmV0"}


def test_kubectl_get_watch_prints_rows_as_objects_change(kubectl, k8s):
    new = k8s.unique("new")

    def change():
        time.sleep(1.5)
        k8s.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": new}})
        time.sleep(0.3)
        k8s.call("DELETE", "/api/v1/namespaces/" + new)

    t = threading.Thread(target=change)
    t.start()
    out = kubectl("get", "ns", "-w", "--request-timeout=4s").stdout
    t.join()
    rows = [line.split()[:2] for line in out.splitlines()[1:]]
    assert [new, "Active"] in rows and [new, "Terminating"] in rows
