"""Controllers of the Kubernetes API simulator, driven through the object store
(no HTTP): what a real control plane does in the background.

Simulator-only: these tests have no API server to point at a real cluster;
they watch the store's change stream (the order pods are created and deleted
in), change the simulator's settings while it runs (image pull failures,
crashes, GPUs, ready delay) and write objects past admission. What clients
see of the same behaviour runs on both clusters in test_kubectl.py (rollout
status, image pull failure, unschedulable GPU request), test_api_core.py
(the scheduler's messages, namespace deletion, garbage collection) and
tests/controlplane_tests."""

import re
import time

import pytest

from tests.kubesim.config import SimConfig
from tests.kubesim.controllers import NODE_NAME, Controllers
from tests.kubesim.store import NotFound, Store, now_iso
from tests.kubesim.validation import apply_defaults
from tests.waiting import wait_for

NS = "tenant-a"
ES_IMAGE = "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"


# -- mirrors of kubectl's rollout status viewers (k8s.io/kubectl/pkg/polymorphichelpers) --


def sts_rollout_status(sts):
    spec, status, meta = sts["spec"], sts.get("status") or {}, sts["metadata"]
    if status.get("observedGeneration", 0) == 0 or meta["generation"] > status.get("observedGeneration", 0):
        return "Waiting for statefulset spec update to be observed...", False
    replicas = spec.get("replicas")
    if replicas is not None and status.get("readyReplicas", 0) < replicas:
        return "Waiting for %d pods to be ready..." % (replicas - status.get("readyReplicas", 0)), False
    us = spec["updateStrategy"]
    if us["type"] == "RollingUpdate" and us.get("rollingUpdate") is not None:
        partition = us["rollingUpdate"].get("partition")
        if replicas is not None and partition is not None:
            if status.get("updatedReplicas", 0) < replicas - partition:
                return ("Waiting for partitioned roll out to finish: %d out of %d new pods have been updated..."
                        % (status.get("updatedReplicas", 0), replicas - partition)), False
        return "partitioned roll out complete: %d new pods have been updated..." % status.get(
            "updatedReplicas", 0), True
    if status.get("updateRevision") != status.get("currentRevision"):
        return "waiting for statefulset rolling update to complete %d pods at revision %s..." % (
            status.get("updatedReplicas", 0), status.get("updateRevision")), False
    return "statefulset rolling update complete %d pods at revision %s..." % (
        status.get("currentReplicas", 0), status.get("currentRevision")), True


def deploy_rollout_status(d):
    status, name = d.get("status") or {}, d["metadata"]["name"]
    if d["metadata"]["generation"] <= status.get("observedGeneration", 0):
        cond = next((c for c in status.get("conditions") or [] if c["type"] == "Progressing"), None)
        if cond is not None and cond["reason"] == "ProgressDeadlineExceeded":
            raise RuntimeError('deployment "%s" exceeded its progress deadline' % name)
        if status.get("updatedReplicas", 0) < d["spec"]["replicas"]:
            return ('Waiting for deployment "%s" rollout to finish: %d out of %d new replicas have been updated...'
                    % (name, status.get("updatedReplicas", 0), d["spec"]["replicas"])), False
        if status.get("replicas", 0) > status.get("updatedReplicas", 0):
            return ('Waiting for deployment "%s" rollout to finish: %d old replicas are pending termination...'
                    % (name, status.get("replicas", 0) - status.get("updatedReplicas", 0))), False
        if status.get("availableReplicas", 0) < status.get("updatedReplicas", 0):
            return ('Waiting for deployment "%s" rollout to finish: %d of %d updated replicas are available...'
                    % (name, status.get("availableReplicas", 0), status.get("updatedReplicas", 0))), False
        return 'deployment "%s" successfully rolled out' % name, True
    return "Waiting for deployment spec update to be observed...", False


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def cluster():
    store = Store()
    config = SimConfig(ready_delay=0.2)
    ctl = Controllers(store, config)
    store.create("namespaces", apply_defaults("Namespace", {"metadata": {"name": NS}}), namespaced=False)
    store.create("storage.k8s.io/storageclasses", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": True,
    }, namespaced=False)
    ctl.start()
    yield store, config, ctl
    ctl.stop()


def es_sts(replicas=1, image=ES_IMAGE, policy="OrderedReady", resources=None):
    sts = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "elasticsearch", "namespace": NS, "labels": {"app": "elasticsearch"}},
        "spec": {
            "replicas": replicas, "serviceName": "elasticsearch", "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": "elasticsearch"}},
            "template": {
                "metadata": {"labels": {"app": "elasticsearch"}},
                "spec": {"containers": [{"name": "elasticsearch", "image": image,
                                         "resources": resources or {"requests": {"cpu": "1", "memory": "2Gi"}}}]},
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "elasticsearch-data", "labels": {"tier": "data"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
            }],
        },
    }
    return apply_defaults("StatefulSet", sts)


def kibana(image="docker.elastic.co/kibana/kibana:8.15.3", replicas=1, deadline=None):
    d = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "kibana", "namespace": NS},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": "kibana"}},
            "template": {"metadata": {"labels": {"app": "kibana"}},
                         "spec": {"containers": [{"name": "kibana", "image": image}]}},
        },
    }
    if deadline is not None:
        d["spec"]["progressDeadlineSeconds"] = deadline
    return apply_defaults("Deployment", d)


def pod(name, image="nginx:1.27", requests=None, limits=None, **spec):
    res = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
         "spec": dict({"containers": [{"name": name.split("-")[0], "image": image, "resources": res}]}, **spec)}
    return apply_defaults("Pod", p)


def events_for(store, name, reason=None):
    items, _u = store.list("events", NS, lambda e: e["involvedObject"]["name"] == name)
    return [e for e in items if reason is None or e["reason"] == reason]


def cond(obj, ctype):
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)


def get(store, resource, name, ns=NS):
    try:
        return store.get(resource, ns, name)
    except NotFound:
        return None


def sts_status(store):
    return store.get("apps/statefulsets", NS, "elasticsearch").get("status") or {}


def pod_is_ready(p):
    c = cond(p, "Ready") if p else None
    return bool(p) and p["status"].get("phase") == "Running" and c is not None and c["status"] == "True"


# -- StatefulSet ------------------------------------------------------------------------------


def test_statefulset_creates_claims_and_pods_in_order(cluster):
    store, _u, _u = cluster
    seen = []
    store.add_listener(lambda et, res, o: seen.append((et, res, o["metadata"]["name"], pod_is_ready(o)))
                       if res == "pods" else None)
    sts = store.create("apps/statefulsets", es_sts(replicas=2))
    wait_for(lambda: (sts_status(store).get("readyReplicas") == 2))

    # OrderedReady: pod 1 is created only after pod 0 was Ready
    created = [n for et, r, n, _u in seen if et == "ADDED"]
    assert created == ["elasticsearch-0", "elasticsearch-1"]
    first_ready = next(i for i, s in enumerate(seen) if s[2] == "elasticsearch-0" and s[3])
    assert seen.index(("ADDED", "pods", "elasticsearch-1", False)) > first_ready

    for i in range(2):
        pvc = store.get("persistentvolumeclaims", NS, "elasticsearch-data-elasticsearch-%d" % i)
        assert pvc["metadata"]["labels"] == {"tier": "data", "app": "elasticsearch"}
        assert "ownerReferences" not in pvc["metadata"]
        assert pvc["status"]["phase"] == "Bound"
        assert pvc["status"]["capacity"] == {"storage": "5Gi"}
        assert pvc["spec"]["storageClassName"] == "standard"
        assert store.exists("persistentvolumes", None, pvc["spec"]["volumeName"])

        p = store.get("pods", NS, "elasticsearch-%d" % i)
        labels = p["metadata"]["labels"]
        assert labels["statefulset.kubernetes.io/pod-name"] == "elasticsearch-%d" % i
        assert re.fullmatch(r"elasticsearch-[bcdfghjklmnpqrstvwxz2456789]+", labels["controller-revision-hash"])
        assert p["metadata"]["ownerReferences"][0]["uid"] == sts["metadata"]["uid"]
        assert p["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
        claim = {"claimName": "elasticsearch-data-elasticsearch-%d" % i}
        assert {"name": "elasticsearch-data", "persistentVolumeClaim": claim} in p["spec"]["volumes"]
        assert p["spec"]["nodeName"] == NODE_NAME
        assert p["spec"]["hostname"] == "elasticsearch-%d" % i and p["spec"]["subdomain"] == "elasticsearch"
        cs = p["status"]["containerStatuses"][0]
        assert cs["ready"] and cs["started"] and cs["restartCount"] == 0
        assert cs["image"] == ES_IMAGE
        assert cs["imageID"].startswith("docker.elastic.co/elasticsearch/elasticsearch@sha256:")
        assert cs["containerID"].startswith("containerd://") and "startedAt" in cs["state"]["running"]
        assert [c["type"] for c in p["status"]["conditions"]] == [
            "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        assert p["status"]["podIP"].startswith("10.244.") and p["status"]["hostIP"]

    status = sts_status(store)
    assert status["observedGeneration"] == 1
    assert status["replicas"] == status["currentReplicas"] == status["updatedReplicas"] == 2
    assert status["availableReplicas"] == 2
    assert status["currentRevision"] == status["updateRevision"] == labels["controller-revision-hash"]
    msg, done = sts_rollout_status(store.get("apps/statefulsets", NS, "elasticsearch"))
    assert done and msg == "partitioned roll out complete: 2 new pods have been updated..."
    reasons = [e["reason"] for e in events_for(store, "elasticsearch")]
    assert reasons.count("SuccessfulCreate") == 4  # two claims, two pods
    assert store.exists("apps/controllerrevisions", NS, status["updateRevision"])


def test_statefulset_pod_not_ready_blocks_next_ordinal(cluster):
    store, config, _u = cluster
    config.image_pull_fail.append("broken")
    store.create("apps/statefulsets", es_sts(replicas=3, image="example.org/broken:1"))
    wait_for(lambda: events_for(store, "elasticsearch-0", "BackOff"))
    time.sleep(0.5)
    assert not store.exists("pods", NS, "elasticsearch-1")
    sts = store.get("apps/statefulsets", NS, "elasticsearch")
    assert sts_rollout_status(sts) == ("Waiting for 3 pods to be ready...", False)


def test_statefulset_parallel_creates_all_pods_at_once(cluster):
    store, config, _u = cluster
    config.image_pull_fail.append("broken")
    store.create("apps/statefulsets", es_sts(replicas=3, image="example.org/broken:1", policy="Parallel"))
    wait_for(lambda: all(store.exists("pods", NS, "elasticsearch-%d" % i) for i in range(3)), timeout=3)


def test_statefulset_rolling_update_highest_ordinal_first(cluster):
    store, _u, _u = cluster
    store.create("apps/statefulsets", es_sts(replicas=3))
    wait_for(lambda: sts_rollout_status(store.get("apps/statefulsets", NS, "elasticsearch"))[1])
    old_rev = sts_status(store)["currentRevision"]
    deleted = []
    store.add_listener(lambda et, res, o: deleted.append(o["metadata"]["name"])
                       if res == "pods" and et == "DELETED" else None)

    def set_resources(o):
        o["spec"]["template"]["spec"]["containers"][0]["resources"] = {
            "requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}

    updated = store.mutate("apps/statefulsets", NS, "elasticsearch", set_resources)
    assert updated["metadata"]["generation"] == 2
    statuses = []

    def done():
        sts = store.get("apps/statefulsets", NS, "elasticsearch")
        statuses.append(sts_rollout_status(sts))
        return statuses[-1][1]

    wait_for(done, timeout=15)
    sts = store.get("apps/statefulsets", NS, "elasticsearch")
    st = sts["status"]
    assert deleted == ["elasticsearch-2", "elasticsearch-1", "elasticsearch-0"]
    assert st["observedGeneration"] == 2
    assert st["updateRevision"] != old_rev and st["currentRevision"] == st["updateRevision"]
    assert st["updatedReplicas"] == st["currentReplicas"] == st["readyReplicas"] == 3
    waits = [m for m, d in statuses if not d]
    assert waits and all(m.startswith("Waiting for") for m in waits)  # kubectl would have waited
    for i in range(3):
        p = store.get("pods", NS, "elasticsearch-%d" % i)
        assert p["metadata"]["labels"]["controller-revision-hash"] == st["updateRevision"]
        assert p["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    # the claims survived the pods
    assert store.get("persistentvolumeclaims", NS, "elasticsearch-data-elasticsearch-0")["status"]["phase"] == "Bound"


def test_statefulset_without_partition_reports_revision_messages(cluster):
    store, _u, _u = cluster
    sts = es_sts(replicas=1)
    sts["spec"]["updateStrategy"] = {"type": "RollingUpdate"}
    store.create("apps/statefulsets", sts)
    wait_for(lambda: sts_rollout_status(store.get("apps/statefulsets", NS, "elasticsearch"))[1])
    got = store.get("apps/statefulsets", NS, "elasticsearch")
    msg, _u = sts_rollout_status(got)
    assert msg == "statefulset rolling update complete 1 pods at revision %s..." % got["status"]["currentRevision"]


def test_statefulset_scale_down_from_highest_ordinal_keeps_claims(cluster):
    store, _u, _u = cluster
    store.create("apps/statefulsets", es_sts(replicas=3))
    wait_for(lambda: sts_status(store).get("readyReplicas") == 3)
    deleted = []
    store.add_listener(lambda et, res, o: deleted.append(o["metadata"]["name"])
                       if res == "pods" and et == "DELETED" else None)
    store.mutate("apps/statefulsets", NS, "elasticsearch", lambda o: o["spec"].__setitem__("replicas", 1))
    wait_for(lambda: sts_status(store)["replicas"] == 1)
    assert deleted == ["elasticsearch-2", "elasticsearch-1"]
    assert store.exists("pods", NS, "elasticsearch-0")
    for i in range(3):
        assert store.exists("persistentvolumeclaims", NS, "elasticsearch-data-elasticsearch-%d" % i)
    assert sts_rollout_status(store.get("apps/statefulsets", NS, "elasticsearch"))[1]


def test_existing_claim_is_reused(cluster):
    store, _u, _u = cluster
    existing = apply_defaults("PersistentVolumeClaim", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "elasticsearch-data-elasticsearch-0", "namespace": NS, "labels": {"mine": "yes"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}, store)
    uid = store.create("persistentvolumeclaims", existing)["metadata"]["uid"]
    store.create("apps/statefulsets", es_sts(replicas=1))
    wait_for(lambda: pod_is_ready(get(store, "pods", "elasticsearch-0")))
    pvc = store.get("persistentvolumeclaims", NS, "elasticsearch-data-elasticsearch-0")
    assert pvc["metadata"]["uid"] == uid and pvc["metadata"]["labels"] == {"mine": "yes"}
    assert pvc["status"]["capacity"] == {"storage": "20Gi"}


def test_deleting_statefulset_collects_pods_not_claims(cluster):
    store, _u, _u = cluster
    store.create("apps/statefulsets", es_sts(replicas=2))
    wait_for(lambda: sts_status(store).get("readyReplicas") == 2)
    store.delete("apps/statefulsets", NS, "elasticsearch")
    wait_for(lambda: not store.list("pods", NS)[0])
    assert not store.list("apps/controllerrevisions", NS)[0]
    assert len(store.list("persistentvolumeclaims", NS)[0]) == 2


def test_a_recreated_statefulset_adopts_the_orphaned_pods(cluster):
    store, _u, _u = cluster
    store.create("apps/statefulsets", es_sts(replicas=2))
    wait_for(lambda: sts_status(store).get("readyReplicas") == 2)
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in store.list("pods", NS)[0]}

    def orphan(o):
        o["metadata"]["ownerReferences"] = []

    for name in uids:  # what a delete with propagationPolicy Orphan leaves
        store.mutate("pods", NS, name, orphan)
    store.delete("apps/statefulsets", NS, "elasticsearch")
    again = es_sts(replicas=2)
    again["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "10Gi"
    store.create("apps/statefulsets", again)
    wait_for(lambda: sts_status(store).get("readyReplicas") == 2)
    new_uid = get(store, "apps/statefulsets", "elasticsearch")["metadata"]["uid"]
    pods = store.list("pods", NS)[0]
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods} == uids  # adopted, not replaced
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == new_uid for p in pods)


def test_deleted_pod_is_recreated(cluster):
    store, _u, _u = cluster
    store.create("apps/statefulsets", es_sts(replicas=1))
    first = wait_for(lambda: pod_is_ready(get(store, "pods", "elasticsearch-0")) and get(
        store, "pods", "elasticsearch-0"))
    store.delete("pods", NS, "elasticsearch-0")
    again = wait_for(lambda: pod_is_ready(get(store, "pods", "elasticsearch-0")) and get(
        store, "pods", "elasticsearch-0"))
    assert again["metadata"]["uid"] != first["metadata"]["uid"]


# -- Deployment / ReplicaSet ---------------------------------------------------------------------


def test_deployment_rollout_and_update(cluster):
    store, _u, _u = cluster
    store.create("apps/deployments", kibana(replicas=2))
    wait_for(lambda: deploy_rollout_status(store.get("apps/deployments", NS, "kibana"))[1])
    d = store.get("apps/deployments", NS, "kibana")
    rss = store.list("apps/replicasets", NS)[0]
    assert len(rss) == 1
    rs = rss[0]
    phash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == "kibana-" + phash
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "kibana", "pod-template-hash": phash}
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    pods = store.list("pods", NS)[0]
    assert len(pods) == 2
    for p in pods:
        assert re.fullmatch(r"kibana-%s-[bcdfghjklmnpqrstvwxz2456789]{5}" % phash, p["metadata"]["name"])
        assert p["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]
    st = d["status"]
    assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"], st["availableReplicas"]) == (2, 2, 2, 2)
    assert "unavailableReplicas" not in st
    assert cond(d, "Available")["status"] == "True" and cond(d, "Available")["reason"] == "MinimumReplicasAvailable"
    prog = cond(d, "Progressing")
    assert prog["reason"] == "NewReplicaSetAvailable"
    assert prog["message"] == 'ReplicaSet "kibana-%s" has successfully progressed.' % phash
    assert [c["type"] for c in st["conditions"]] == ["Available", "Progressing"]
    scaling = [e["message"] for e in events_for(store, "kibana", "ScalingReplicaSet")]
    assert scaling == ["Scaled up replica set kibana-%s from 0 to 2" % phash]
    assert len(events_for(store, rs["metadata"]["name"], "SuccessfulCreate")) == 2

    def new_image(o):
        o["spec"]["template"]["spec"]["containers"][0]["image"] = "docker.elastic.co/kibana/kibana:8.15.4"

    store.mutate("apps/deployments", NS, "kibana", new_image)
    assert not deploy_rollout_status(store.get("apps/deployments", NS, "kibana"))[1]
    messages = set()

    def done():
        m, ok = deploy_rollout_status(store.get("apps/deployments", NS, "kibana"))
        messages.add(m)
        return ok

    wait_for(done, timeout=15)
    d = store.get("apps/deployments", NS, "kibana")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    rss = {r["metadata"]["name"]: r for r in store.list("apps/replicasets", NS)[0]}
    assert len(rss) == 2
    assert rss[rs["metadata"]["name"]]["spec"]["replicas"] == 0
    new = [r for n, r in rss.items() if n != rs["metadata"]["name"]][0]
    assert new["spec"]["replicas"] == 2 and new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    pods = store.list("pods", NS)[0]
    assert len(pods) == 2 and all(p["spec"]["containers"][0]["image"].endswith("8.15.4") for p in pods)
    assert cond(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert any("Waiting for deployment" in m for m in messages)


def test_deployment_progress_deadline_exceeded(cluster):
    store, config, _u = cluster
    config.image_pull_fail.append("kibana:does-not-exist")
    store.create("apps/deployments", kibana(image="docker.elastic.co/kibana/kibana:does-not-exist", deadline=1))
    wait_for(lambda: (cond(store.get("apps/deployments", NS, "kibana"), "Progressing") or {}).get("reason")
             == "ProgressDeadlineExceeded", timeout=5)
    d = store.get("apps/deployments", NS, "kibana")
    prog = cond(d, "Progressing")
    assert prog["status"] == "False"
    assert re.fullmatch(r'ReplicaSet "kibana-\w+" has timed out progressing\.', prog["message"])
    assert cond(d, "Available")["status"] == "False"
    assert d["status"]["unavailableReplicas"] == 1
    with pytest.raises(RuntimeError, match='deployment "kibana" exceeded its progress deadline'):
        deploy_rollout_status(d)


def test_replicaset_keeps_pod_count(cluster):
    store, _u, _u = cluster
    store.create("apps/deployments", kibana(replicas=2))
    wait_for(lambda: deploy_rollout_status(store.get("apps/deployments", NS, "kibana"))[1])
    victim = store.list("pods", NS)[0][0]["metadata"]["name"]
    store.delete("pods", NS, victim)
    wait_for(lambda: len(store.list("pods", NS, pod_is_ready)[0]) == 2)
    assert not store.exists("pods", NS, victim)
    store.mutate("apps/deployments", NS, "kibana", lambda o: o["spec"].__setitem__("replicas", 1))
    wait_for(lambda: len(store.list("pods", NS)[0]) == 1)
    assert wait_for(lambda: deploy_rollout_status(store.get("apps/deployments", NS, "kibana"))[1])


# -- Jobs -------------------------------------------------------------------------------------------


def test_job_runs_to_completion(cluster):
    store, _u, _u = cluster
    job = apply_defaults("Job", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "register-repo", "namespace": NS},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "curl", "image": "curlimages/curl:8.9.1"}]}}}})
    store.create("batch/jobs", job)
    done = wait_for(lambda: cond(store.get("batch/jobs", NS, "register-repo"), "Complete")
                    and store.get("batch/jobs", NS, "register-repo"))
    assert done["status"]["succeeded"] == 1 and "active" not in done["status"]
    assert done["status"]["completionTime"]
    pods = store.list("pods", NS)[0]
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Succeeded"
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert pods[0]["metadata"]["labels"]["job-name"] == "register-repo"


def test_job_fails_after_backoff_limit(cluster):
    store, config, _u = cluster
    config.crash.append("curl")
    job = apply_defaults("Job", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "register-repo", "namespace": NS},
        "spec": {"backoffLimit": 1, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "curl", "image": "curlimages/curl:8.9.1"}]}}}})
    store.create("batch/jobs", job)
    failed = wait_for(lambda: cond(store.get("batch/jobs", NS, "register-repo"), "Failed")
                      and store.get("batch/jobs", NS, "register-repo"))
    assert cond(failed, "Failed")["reason"] == "BackoffLimitExceeded"
    assert failed["status"]["failed"] == 2 and "succeeded" not in failed["status"]
    pods = store.list("pods", NS)[0]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Failed" for p in pods)
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 1 and term["reason"] == "Error"


# -- scheduler ------------------------------------------------------------------------------------


def test_unschedulable_gpu_then_schedulable_when_node_gets_gpus(cluster):
    store, config, _u = cluster
    store.create("pods", pod("gpu-0", requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "1"}))
    p = wait_for(lambda: cond(get(store, "pods", "gpu-0"), "PodScheduled") and get(store, "pods", "gpu-0"))
    sched = cond(p, "PodScheduled")
    assert sched["status"] == "False" and sched["reason"] == "Unschedulable"
    assert sched["message"] == ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu. no new claims to deallocate, "
                                "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")
    assert p["status"]["phase"] == "Pending" and "nodeName" not in p["spec"]
    ev = wait_for(lambda: events_for(store, "gpu-0", "FailedScheduling"))[0]
    assert ev["type"] == "Warning" and ev["message"] == sched["message"]
    assert ev["source"]["component"] == "default-scheduler" and ev["reportingComponent"] == "default-scheduler"
    assert ev["involvedObject"]["kind"] == "Pod" and ev["involvedObject"]["uid"] == p["metadata"]["uid"]
    assert re.fullmatch(r"gpu-0\.[0-9a-f]+", ev["metadata"]["name"])
    config.node_gpus = 1
    wait_for(lambda: pod_is_ready(get(store, "pods", "gpu-0")), timeout=5)
    node = store.get("nodes", None, NODE_NAME)
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"


def test_unschedulable_reasons_are_sorted_and_joined(cluster):
    store, _u, _u = cluster
    store.create("pods", pod("big-0", requests={"cpu": "32", "memory": "128Gi"}))
    p = wait_for(lambda: cond(get(store, "pods", "big-0"), "PodScheduled") and get(store, "pods", "big-0"))
    assert cond(p, "PodScheduled")["message"] == \
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. no new claims to deallocate, " \
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."


def test_pending_pod_scheduled_when_capacity_frees(cluster):
    store, _u, _u = cluster
    store.create("pods", pod("a-0", requests={"cpu": "10"}))
    wait_for(lambda: pod_is_ready(get(store, "pods", "a-0")))
    store.create("pods", pod("b-0", requests={"cpu": "10"}))
    p = wait_for(lambda: cond(get(store, "pods", "b-0"), "PodScheduled") and get(store, "pods", "b-0"))
    # the node could hold it were it empty: preemption finds no victims (every pod has the same priority)
    assert cond(p, "PodScheduled")["message"] == (
        "0/1 nodes are available: 1 Insufficient cpu. no new claims to deallocate, "
        "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")
    store.delete("pods", NS, "a-0")
    wait_for(lambda: pod_is_ready(get(store, "pods", "b-0")), timeout=5)


def test_missing_claim_keeps_pod_pending(cluster):
    store, _u, _u = cluster
    store.create("pods", pod("c-0", volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "nope"}}]))
    p = wait_for(lambda: cond(get(store, "pods", "c-0"), "PodScheduled") and get(store, "pods", "c-0"))
    # a PreFilter failure: the DynamicResources PostFilter finds no cycle state and says "not found", as v1.34 does
    assert cond(p, "PodScheduled")["message"] == \
        '0/1 nodes are available: persistentvolumeclaim "nope" not found. not found'


# -- kubelet faults --------------------------------------------------------------------------------


def test_image_pull_failure(cluster):
    store, config, _u = cluster
    config.image_pull_fail.append("prom/prometheus")
    store.create("pods", pod("prometheus-0", image="prom/prometheus:v2.47.0"))

    def waiting_reason():
        p = get(store, "pods", "prometheus-0")
        cs = ((p or {}).get("status") or {}).get("containerStatuses") or [{}]
        return (cs[0].get("state") or {}).get("waiting", {}).get("reason")

    reasons = set()
    wait_for(lambda: reasons.add(waiting_reason()) or {"ErrImagePull", "ImagePullBackOff"} <= reasons, timeout=5)
    p = wait_for(lambda: waiting_reason() == "ImagePullBackOff" and get(store, "pods", "prometheus-0"))
    cs = p["status"]["containerStatuses"][0]
    assert cs["state"]["waiting"]["message"] == 'Back-off pulling image "prom/prometheus:v2.47.0"'
    assert cs["ready"] is False and cs["image"] == "prom/prometheus:v2.47.0" and cs["imageID"] == ""
    assert p["status"]["phase"] == "Pending"
    assert cond(p, "Ready")["reason"] == "ContainersNotReady"
    assert cond(p, "Ready")["message"] == "containers with unready status: [prometheus]"
    failed = list(events_for(store, "prometheus-0", "Failed"))
    pull = [e for e in failed if e["message"].startswith("Failed to pull image")][0]
    assert pull["type"] == "Warning"
    assert pull["message"].startswith(
        'Failed to pull image "prom/prometheus:v2.47.0": rpc error: code = NotFound desc = failed to pull and unpack '
        'image "docker.io/prom/prometheus:v2.47.0"')
    assert pull["involvedObject"]["fieldPath"] == "spec.containers{prometheus}"
    assert pull["source"] == {"component": "kubelet", "host": NODE_NAME}
    assert {e["message"] for e in failed} >= {"Error: ErrImagePull", "Error: ImagePullBackOff"}
    backoff = events_for(store, "prometheus-0", "BackOff")[0]
    assert backoff["message"] == 'Back-off pulling image "prom/prometheus:v2.47.0"'
    # the kubelet keeps retrying: the same events are counted, not duplicated
    wait_for(lambda: events_for(store, "prometheus-0", "Pulling")[0]["count"] >= 3, timeout=8)
    assert len(events_for(store, "prometheus-0", "Pulling")) == 1
    # fixing the registry lets the next pull succeed
    config.image_pull_fail.clear()
    wait_for(lambda: pod_is_ready(get(store, "pods", "prometheus-0")), timeout=8)


def test_crash_loop(cluster):
    store, config, _u = cluster
    config.crash.append("minio")
    store.create("pods", pod("minio-0", image="minio/minio:latest"))

    def status():
        p = get(store, "pods", "minio-0")
        return p and (p["status"].get("containerStatuses") or [None])[0]

    cs = wait_for(lambda: (status() or {}).get("restartCount", 0) >= 3 and status(), timeout=10)
    p = store.get("pods", NS, "minio-0")
    assert p["status"]["phase"] == "Running"
    last = cs["lastState"]["terminated"]
    assert last["exitCode"] == 1 and last["reason"] == "Error" and last["startedAt"] and last["finishedAt"]
    cs = wait_for(lambda: "waiting" in status()["state"] and status(), timeout=5)
    waiting = cs["state"]["waiting"]
    assert waiting["reason"] == "CrashLoopBackOff"
    assert re.fullmatch(r"back-off (10s|20s|40s|1m20s|2m40s|5m0s) restarting failed container=minio "
                        r"pod=minio-0_%s\(%s\)" % (NS, p["metadata"]["uid"]), waiting["message"])
    assert cs["ready"] is False
    ev = events_for(store, "minio-0", "BackOff")[0]
    assert ev["type"] == "Warning"
    assert ev["message"] == "Back-off restarting failed container minio in pod minio-0_%s(%s)" % (
        NS, p["metadata"]["uid"])
    assert ev["count"] >= 2
    assert events_for(store, "minio-0", "Started")[0]["count"] >= 3


def test_missing_configmap_blocks_container_creation(cluster):
    store, _u, _u = cluster
    store.create("pods", pod("es-0", volumes=[{"name": "config", "configMap": {"name": "es-config"}}]))
    ev = wait_for(lambda: events_for(store, "es-0", "FailedMount"))[0]
    assert ev["message"] == 'MountVolume.SetUp failed for volume "config" : configmap "es-config" not found'
    p = store.get("pods", NS, "es-0")
    assert p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
    assert p["status"]["phase"] == "Pending"
    store.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "es-config", "namespace": NS}, "data": {}})
    wait_for(lambda: pod_is_ready(get(store, "pods", "es-0")), timeout=5)


def test_ready_delay_is_honoured(cluster):
    store, config, _u = cluster
    config.ready_delay = 0.8
    t0 = time.monotonic()
    store.create("pods", pod("slow-0"))
    wait_for(lambda: pod_is_ready(get(store, "pods", "slow-0")), timeout=5, interval=0.01)
    elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed < 2.0


# -- PVCs, namespaces, idleness ---------------------------------------------------------------------


def test_pvc_resize_updates_capacity(cluster):
    store, _u, _u = cluster
    store.create("apps/statefulsets", es_sts(replicas=1))
    wait_for(lambda: pod_is_ready(get(store, "pods", "elasticsearch-0")))
    name = "elasticsearch-data-elasticsearch-0"
    store.mutate("persistentvolumeclaims", NS, name,
                 lambda o: o["spec"]["resources"]["requests"].__setitem__("storage", "10Gi"))
    pvc = wait_for(lambda: store.get("persistentvolumeclaims", NS, name)["status"]["capacity"]["storage"] == "10Gi"
                   and store.get("persistentvolumeclaims", NS, name))
    assert "conditions" not in pvc["status"]
    pv = store.get("persistentvolumes", None, pvc["spec"]["volumeName"])
    assert pv["spec"]["capacity"] == {"storage": "10Gi"}
    assert events_for(store, name, "FileSystemResizeSuccessful")


def test_immediate_binding_class(cluster):
    store, _u, _u = cluster
    store.create("storage.k8s.io/storageclasses", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"},
        "provisioner": "example.com/csi", "volumeBindingMode": "Immediate"}, namespaced=False)
    store.create("persistentvolumeclaims", apply_defaults("PersistentVolumeClaim", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "d", "namespace": NS},
        "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}}, store))
    wait_for(lambda: store.get("persistentvolumeclaims", NS, "d")["status"].get("phase") == "Bound")


def test_namespace_deletion_removes_everything(cluster):
    store, _u, _u = cluster
    store.create("apps/statefulsets", es_sts(replicas=1))
    store.create("apps/deployments", kibana())
    wait_for(lambda: pod_is_ready(get(store, "pods", "elasticsearch-0")))

    # the API server marks the namespace Terminating; the namespace controller empties and removes it
    store.mark_deleting("namespaces", None, NS, now_iso(),
                        lambda o: o.setdefault("status", {}).update(phase="Terminating"))
    wait_for(lambda: not store.exists("namespaces", None, NS), timeout=5)
    time.sleep(0.3)
    leftovers = [(r, o["metadata"]["name"]) for r, o in store.all_objects() if o["metadata"].get("namespace") == NS]
    assert leftovers == []


def test_idle_control_plane_uses_no_cpu(cluster):
    store, _u, ctl = cluster
    store.create("apps/statefulsets", es_sts(replicas=1))
    store.create("apps/deployments", kibana(replicas=2))
    wait_for(lambda: sts_rollout_status(store.get("apps/statefulsets", NS, "elasticsearch"))[1])
    wait_for(lambda: deploy_rollout_status(store.get("apps/deployments", NS, "kibana"))[1])
    time.sleep(0.3)
    assert ctl.wait_idle()
    rv = store.resource_version
    cpu = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu < 0.1
    assert store.resource_version == rv  # nothing rewritten while idle
