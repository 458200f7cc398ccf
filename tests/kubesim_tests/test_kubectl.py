"""The genuine kubectl binary, unchanged, against the simulator: the commands
the platform scripts run, and the refusals a real server gives."""

import json
import shutil
import subprocess

import pytest

pytest_plugins = ["tests.kubesim.pytest_plugin"]

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

GPU_PATCH = json.dumps({"spec": {"template": {"spec": {"containers": [{
    "name": "elasticsearch",
    "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}}]}}}})


class Kubectl:
    def __init__(self, sim):
        self.sim = sim

    def __call__(self, *args, stdin=None, check=True, timeout=120):
        proc = subprocess.run([KUBECTL, "--kubeconfig", self.sim.kubeconfig] + list(args), input=stdin,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("kubectl %s failed (%d): %s%s"
                                 % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def json(self, *args):
        return json.loads(self(*args, "-o", "json").stdout)


@pytest.fixture
def kubectl(kubesim_factory):
    sim = kubesim_factory(ready_delay=0.2, node_gpus=1)
    return Kubectl(sim)


def deploy(kubectl, ns="es1"):
    kubectl("create", "namespace", ns)
    kubectl("apply", "-f", "-", stdin=STS.replace("NS", ns))


def test_platform_script_commands(kubectl):
    sim = kubectl.sim
    assert kubectl("create", "namespace", "es1").stdout.strip() == "namespace/es1 created"
    assert kubectl("label", "namespace", "es1", "es-cluster=true").stdout.strip() == "namespace/es1 labeled"
    assert sim.get("namespaces", None, "es1")["metadata"]["labels"]["es-cluster"] == "true"
    kubectl("apply", "-f", "-", stdin=STS.replace("NS", "es1"))
    kubectl("-n", "es1", "annotate", "sts/elasticsearch", "es.yunpeng.cn/max-indices=100", "--overwrite")
    sts = sim.get("apps/statefulsets", "es1", "elasticsearch")
    assert sts["metadata"]["annotations"]["es.yunpeng.cn/max-indices"] == "100"
    assert sts["metadata"]["generation"] == 1
    kubectl("-n", "es1", "rollout", "status", "sts/elasticsearch", "--timeout=60s")
    kubectl("-n", "es1", "rollout", "status", "deploy/kibana", "--timeout=60s")

    out = kubectl("-n", "es1", "scale", "sts/elasticsearch", "--replicas", "2").stdout
    assert out.strip() == "statefulset.apps/elasticsearch scaled"
    assert sim.get("apps/statefulsets", "es1", "elasticsearch")["spec"]["replicas"] == 2

    kubectl("-n", "es1", "set", "resources", "sts/elasticsearch", "--requests=cpu=2,memory=4Gi",
            "--limits=cpu=4,memory=8Gi")
    res = sim.get("apps/statefulsets", "es1", "elasticsearch")["spec"]["template"]["spec"]["containers"][0][
        "resources"]
    assert res == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}

    kubectl("-n", "es1", "patch", "pvc", "elasticsearch-data-elasticsearch-0", "-p",
            '{"spec":{"resources":{"requests":{"storage":"10Gi"}}}}')
    pvc = sim.get("persistentvolumeclaims", "es1", "elasticsearch-data-elasticsearch-0")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"

    kubectl("-n", "es1", "patch", "sts", "elasticsearch", "-p", GPU_PATCH)
    sts = sim.get("apps/statefulsets", "es1", "elasticsearch")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert container["volumeMounts"] == [{"name": "elasticsearch-data", "mountPath": "/usr/share/elasticsearch/data"}]
    assert sts["metadata"]["generation"] == 4
    # strategic merge kept the template's other fields and the annotation set before
    assert sts["metadata"]["annotations"]["es.yunpeng.cn/max-indices"] == "100"

    got = kubectl.json("-n", "es1", "get", "sts", "elasticsearch")
    assert got["spec"]["replicas"] == 2 and got["kind"] == "StatefulSet"
    names = kubectl("get", "ns", "-l", "es-cluster=true", "-o", "name").stdout.split()
    assert names == ["namespace/es1"]
    paths = [(r["method"], r["content_type"]) for r in sim.requests() if r["method"] == "PATCH"]
    assert ("PATCH", "application/strategic-merge-patch+json") in paths
    assert ("PATCH", "application/merge-patch+json") in paths


def test_rollout_status_follows_a_template_change(kubectl):
    deploy(kubectl)
    kubectl("-n", "es1", "rollout", "status", "sts/elasticsearch", "--timeout=60s")
    kubectl("-n", "es1", "set", "image", "deploy/kibana", "kibana=docker.elastic.co/kibana/kibana:8.16.0")
    out = kubectl("-n", "es1", "rollout", "status", "deploy/kibana", "--timeout=60s").stdout
    assert 'deployment "kibana" successfully rolled out' in out
    kubectl("-n", "es1", "patch", "sts", "elasticsearch", "-p", GPU_PATCH)
    out = kubectl("-n", "es1", "rollout", "status", "sts/elasticsearch", "--timeout=60s").stdout
    assert "partitioned roll out complete" in out or "rolling update complete" in out
    pod = kubectl.json("-n", "es1", "get", "pod", "elasticsearch-0")
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # kubectl get prints the server's Table columns
    lines = kubectl("-n", "es1", "get", "sts").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "AGE"] and lines[1].split()[:2] == ["elasticsearch", "1/1"]
    lines = kubectl("-n", "es1", "get", "pod", "elasticsearch-0").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split()[:4] == ["elasticsearch-0", "1/1", "Running", "0"]
    kinds = {line.split("/")[0] for line in kubectl("-n", "es1", "get", "all", "-o", "name").stdout.split()}
    assert kinds == {"pod", "service", "statefulset.apps", "deployment.apps", "replicaset.apps"}
    lines = kubectl("get", "ns", "es1").stdout.splitlines()
    assert lines[1].split()[:2] == ["es1", "Active"]


def test_refusals(kubectl):
    deploy(kubectl)
    p = kubectl("create", "namespace", "Bad_Name", check=False)
    assert p.returncode == 1
    assert 'The Namespace "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"' in p.stderr

    p = kubectl("-n", "es1", "patch", "sts", "elasticsearch", "-p", '{"spec":{"serviceName":"other"}}', check=False)
    assert p.returncode == 1
    assert ('The StatefulSet "elasticsearch" is invalid: spec: Forbidden: updates to statefulset spec for fields '
            "other than 'replicas', 'ordinals', 'template', 'updateStrategy'") in p.stderr

    p = kubectl("-n", "es1", "patch", "pvc", "elasticsearch-data-elasticsearch-0", "-p",
                '{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}', check=False)
    assert p.returncode == 1
    assert "spec.resources.requests.storage: Forbidden: field can not be less than" in p.stderr

    bad_gpu = json.dumps({"spec": {"template": {"spec": {"containers": [{"name": "elasticsearch", "resources": {
        "limits": {"nvidia.com/gpu": "2"}, "requests": {"nvidia.com/gpu": "1"}}}]}}}})
    p = kubectl("-n", "es1", "patch", "sts", "elasticsearch", "-p", bad_gpu, check=False)
    assert p.returncode == 1
    assert ('spec.template.spec.containers[0].resources.requests[nvidia.com/gpu]: Invalid value: "1": must be '
            "equal to nvidia.com/gpu limit of 2") in p.stderr

    p = kubectl("apply", "-f", "-", check=False, stdin="""
apiVersion: v1
kind: ConfigMap
metadata: {name: c1, namespace: es1}
data: {a: b}
bogus: true
""")
    assert p.returncode == 1
    assert 'strict decoding error: unknown field "bogus"' in p.stderr
    assert kubectl.sim.get("configmaps", "es1", "c1") is None

    p = kubectl("-n", "es1", "get", "sts", "nope", check=False)
    assert p.returncode == 1 and 'statefulsets.apps "nope" not found' in p.stderr
    # kubectl 1.32 looks the namespace up after a NotFound and reports that instead
    p = kubectl("-n", "nope", "get", "sts", "elasticsearch", check=False)
    assert p.returncode == 1 and 'namespaces "nope" not found' in p.stderr

    p = kubectl("create", "namespace", "es1", check=False)
    assert p.returncode == 1 and 'namespaces "es1" already exists' in p.stderr


def test_injected_fault_reaches_kubectl(kubectl):
    deploy(kubectl)
    kubectl.sim.add_fault("PATCH:statefulsets:500:1")
    p = kubectl("-n", "es1", "annotate", "sts/elasticsearch", "a=b", check=False)
    assert p.returncode == 1
    assert "Error from server (InternalError)" in p.stderr and "injected fault" in p.stderr
    kubectl("-n", "es1", "annotate", "sts/elasticsearch", "a=b")


def test_delete_namespace_with_kubectl(kubectl):
    deploy(kubectl)
    kubectl("delete", "namespace", "es1", "--timeout=60s")
    assert kubectl.sim.objects("pods", "es1") == []
    assert kubectl.sim.get("namespaces", None, "es1") is None


def _wait(fn, timeout=30):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met within %ss" % timeout)


def test_pod_faults_as_kubectl_sees_them(kubesim_factory):
    kubectl = Kubectl(kubesim_factory(ready_delay=0.2, image_pull_fail=["kibana:bad"]))
    deploy(kubectl)
    kubectl("-n", "es1", "set", "image", "deploy/kibana", "kibana=docker.elastic.co/kibana/kibana:bad")

    def pulling_fails():
        pods = kubectl.json("-n", "es1", "get", "pods", "-l", "app=kibana")["items"]
        for p in pods:
            for cs in p["status"].get("containerStatuses") or []:
                if (cs["state"].get("waiting") or {}).get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                    return p
        return None

    pod = _wait(pulling_fails)
    events = kubectl.json("-n", "es1", "get", "events", "--field-selector",
                          "involvedObject.name=%s,type=Warning" % pod["metadata"]["name"])["items"]
    assert any('"docker.elastic.co/kibana/kibana:bad"' in e["message"] for e in events)
    p = kubectl("-n", "es1", "rollout", "status", "deploy/kibana", "--timeout=3s", check=False)
    assert p.returncode == 1

    # a GPU request the node cannot satisfy stays Pending with the scheduler's message
    kubectl("-n", "es1", "patch", "sts", "elasticsearch", "-p", GPU_PATCH.replace('"1"', '"4"'))

    def unschedulable():
        pod = kubectl.json("-n", "es1", "get", "pod", "elasticsearch-0")
        conds = [c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"]
        if conds and conds[0]["status"] == "False" and "nvidia.com/gpu" in (pod["spec"]["containers"][0][
                "resources"].get("limits") or {}):
            return conds[0]
        return None

    cond = _wait(unschedulable)
    assert cond["reason"] == "Unschedulable"
    assert cond["message"].startswith("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    p = kubectl("-n", "es1", "rollout", "status", "sts/elasticsearch", "--timeout=3s", check=False)
    assert p.returncode == 1


def test_kubectl_create_sends_protobuf_that_the_server_reads(kubectl):
    kubectl("create", "namespace", "es1")
    kubectl("-n", "es1", "create", "configmap", "cfg", "--from-literal=max-indices=100")
    kubectl("-n", "es1", "create", "secret", "generic", "creds", "--from-literal=password=s3cret")
    posts = [r for r in kubectl.sim.requests() if r["method"] == "POST"]
    assert {r["content_type"] for r in posts} == {"application/vnd.kubernetes.protobuf"}
    assert [r["status"] for r in posts] == [201, 201, 201]
    assert kubectl.sim.get("configmaps", "es1", "cfg")["data"] == {"max-indices": "100"}
    secret = kubectl.sim.get("secrets", "es1", "creds")
    assert secret["type"] == "Opaque" and secret["data"] == {"password": "czNjcmV0"}


def test_kubectl_get_watch_prints_rows_as_objects_change(kubectl):
    import threading
    import time

    def change():
        time.sleep(1.5)
        kubectl.sim.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": "new1"}})
        time.sleep(0.3)
        kubectl.sim.call("DELETE", "/api/v1/namespaces/new1")

    t = threading.Thread(target=change)
    t.start()
    out = kubectl("get", "ns", "-w", "--request-timeout=4s").stdout
    t.join()
    rows = [line.split()[:2] for line in out.splitlines()[1:]]
    assert ["new1", "Active"] in rows and ["new1", "Terminating"] in rows
