"""Unit tests of the rollout evaluation, doom detection, PVC sizing decisions and client set-up."""

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import k8s_client, pvc, rollout

NS = "es-test"
ES_IMAGE = "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"


# ---------------------------------------------------------------- helpers

def sts(name="elasticsearch", replicas=1, generation=1, observed=1, ready=1, updated=1, current="r1", update="r1",
        strategy=None, templates=("elasticsearch-data",), template_size="10Gi"):
    obj = {
        "metadata": {"name": name, "namespace": NS, "generation": generation},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": strategy if strategy is not None else {"type": "RollingUpdate"},
            "volumeClaimTemplates": [
                {"metadata": {"name": t}, "spec": {"resources": {"requests": {"storage": template_size}}}}
                for t in templates
            ],
        },
        "status": {"observedGeneration": observed, "replicas": replicas, "readyReplicas": ready,
                   "updatedReplicas": updated, "currentRevision": current, "updateRevision": update},
    }
    return obj


def deploy(name="kibana", replicas=1, generation=2, observed=2, updated=1, total=1, available=1, conditions=None):
    return {
        "metadata": {"name": name, "namespace": NS, "generation": generation},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
        "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                   "availableReplicas": available, "conditions": conditions or []},
    }


def pod(name="elasticsearch-0", labels=None, owner=("StatefulSet", "elasticsearch"), waiting=None, init_waiting=None,
        image=ES_IMAGE, container="elasticsearch", scheduled=None, ready=False, phase="Pending", deleting=False,
        last_terminated=None):
    meta = {"name": name, "namespace": NS, "labels": labels if labels is not None else {"app": "elasticsearch"}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    status = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if scheduled:
        status["conditions"].append({"type": "PodScheduled", "status": "False", "reason": scheduled[0],
                                     "message": scheduled[1]})
    if waiting:
        cstatus = {"name": container, "image": image,
                   "state": {"waiting": {"reason": waiting[0], "message": waiting[1]}}}
        if last_terminated:
            cstatus["lastState"] = {"terminated": last_terminated}
        status["containerStatuses"] = [cstatus]
    if init_waiting:
        status["initContainerStatuses"] = [{"name": "init-sysctl", "image": "busybox:1.36", "state": {
            "waiting": {"reason": init_waiting[0], "message": init_waiting[1]}}}]
    return {
        "metadata": meta,
        "spec": {"initContainers": [{"name": "init-sysctl", "image": "busybox:1.36"}],
                 "containers": [{"name": container, "image": image}]},
        "status": status,
    }


# ---------------------------------------------------------------- StatefulSet status

def test_statefulset_complete():
    done, msg = rollout.statefulset_status(sts())
    assert done is True
    assert "rolling update complete 1 pods at revision r1" in msg


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(observed=0), "spec update to be observed"),
    (dict(generation=3, observed=2), "spec update to be observed"),
    (dict(replicas=3, ready=2, updated=3), "2 of 3 pods ready"),
    (dict(replicas=2, ready=2, updated=1), "1 out of 2 new pods have been updated"),
    (dict(update="r2"), "rolling update to complete 1 pods at revision r2"),
])
def test_statefulset_not_done(kwargs, fragment):
    done, msg = rollout.statefulset_status(sts(**kwargs))
    assert done is False
    assert fragment in msg


def test_statefulset_missing_replicas_defaults_to_one():
    obj = sts(ready=0)
    del obj["spec"]["replicas"]
    assert rollout.statefulset_status(obj)[0] is False
    obj["status"]["readyReplicas"] = 1
    assert rollout.statefulset_status(obj)[0] is True


def test_statefulset_partition():
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    done, msg = rollout.statefulset_status(sts(replicas=3, ready=3, updated=0, update="r2", strategy=strategy))
    assert not done and "0 out of 1 new pods" in msg
    done, msg = rollout.statefulset_status(sts(replicas=3, ready=3, updated=1, update="r2", strategy=strategy))
    assert done and "partitioned roll out complete" in msg


def test_statefulset_on_delete_counts_readiness():
    strategy = {"type": "OnDelete"}
    assert rollout.statefulset_status(sts(ready=1, updated=0, update="r2", strategy=strategy))[0] is True
    assert rollout.statefulset_status(sts(ready=0, strategy=strategy))[0] is False


# ---------------------------------------------------------------- Deployment status

def test_deployment_complete():
    assert rollout.deployment_status(deploy()) == (True, "deployment kibana successfully rolled out")


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(generation=3, observed=2), "spec update to be observed"),
    (dict(replicas=2, updated=1, total=2, available=2), "1 out of 2 new replicas have been updated"),
    (dict(updated=1, total=2, available=1), "1 old replicas are pending termination"),
    (dict(updated=1, total=1, available=0), "0 of 1 updated replicas are available"),
])
def test_deployment_not_done(kwargs, fragment):
    done, msg = rollout.deployment_status(deploy(**kwargs))
    assert done is False
    assert fragment in msg


def test_deployment_progress_deadline_fails():
    cond = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "kibana-5f" has timed out progressing.'}]
    with pytest.raises(rollout.RolloutFailed) as info:
        rollout.deployment_status(deploy(available=0, conditions=cond))
    assert "kibana exceeded its progress deadline" in info.value.message
    assert "timed out progressing" in info.value.message
    assert info.value.details["reason"] == "ProgressDeadlineExceeded"


def test_deployment_progressing_ok_is_not_failure():
    cond = [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]
    assert rollout.deployment_status(deploy(conditions=cond))[0] is True


# ---------------------------------------------------------------- doom detection

@pytest.mark.parametrize("reason", rollout.DOOM_WAITING_REASONS)
def test_doom_waiting_reasons(reason):
    doom = rollout.pod_doom(pod(waiting=(reason, "kubelet says no")))
    assert doom["reason"] == reason
    assert doom["pod"] == "es-test/elasticsearch-0"
    assert doom["container"] == "elasticsearch"
    assert doom["image"] == ES_IMAGE
    assert doom["text"] == "pod es-test/elasticsearch-0 container elasticsearch (image %s): %s: kubelet says no" % (
        ES_IMAGE, reason)


def test_doom_image_pull_backoff_message_format():
    msg = 'Back-off pulling image "%s"' % ES_IMAGE
    doom = rollout.pod_doom(pod(waiting=("ImagePullBackOff", msg)))
    assert doom["text"] == (
        'pod es-test/elasticsearch-0 container elasticsearch (image %s): ImagePullBackOff: Back-off pulling image "%s"'
        % (ES_IMAGE, ES_IMAGE))


def test_doom_prefers_spec_image_over_status_image():
    p = pod(waiting=("ErrImagePull", "not found"))
    p["status"]["containerStatuses"][0]["image"] = "resolved:tag"
    assert rollout.pod_doom(p)["image"] == ES_IMAGE


def test_doom_crashloop_carries_last_exit():
    doom = rollout.pod_doom(pod(waiting=("CrashLoopBackOff", "back-off 10s restarting failed container"),
                                last_terminated={"exitCode": 78, "reason": "Error",
                                                 "message": "bootstrap checks failed\n"}))
    assert doom["reason"] == "CrashLoopBackOff"
    assert "last exit code 78 (Error): bootstrap checks failed" in doom["text"]


def test_doom_init_container():
    doom = rollout.pod_doom(pod(init_waiting=("ImagePullBackOff", "Back-off pulling image")))
    assert doom["container"] == "init-sysctl"
    assert doom["image"] == "busybox:1.36"
    assert "init container init-sysctl (image busybox:1.36): ImagePullBackOff" in doom["text"]


def test_doom_unschedulable():
    msg = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    doom = rollout.pod_doom(pod(scheduled=("Unschedulable", msg)))
    assert doom["reason"] == "Unschedulable"
    assert doom["container"] == "elasticsearch"
    assert doom["text"].endswith("Unschedulable: " + msg)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(waiting=("ContainerCreating", "")),
    dict(waiting=("PodInitializing", "")),
    dict(scheduled=("SchedulerError", "transient")),
    # the scheduler waits for the volume claims to be provisioned and bound, then schedules the pod
    dict(scheduled=("Unschedulable", "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. "
                                     "not found")),
    dict(scheduled=("Unschedulable", '0/2 nodes are available: persistentvolumeclaim '
                                     '"elasticsearch-data-elasticsearch-0" not found.')),
    dict(waiting=("ImagePullBackOff", "old pod"), deleting=True),
])
def test_no_doom(kwargs):
    assert rollout.pod_doom(pod(**kwargs)) is None


# ---------------------------------------------------------------- ownership

def test_selector_matches():
    sel = {"matchLabels": {"app": "es"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["data", "master"]},
        {"key": "legacy", "operator": "DoesNotExist"},
        {"key": "zone", "operator": "Exists"},
        {"key": "env", "operator": "NotIn", "values": ["dev"]},
    ]}
    assert rollout.selector_matches(sel, {"app": "es", "tier": "data", "zone": "a", "env": "prod"})
    assert not rollout.selector_matches(sel, {"app": "es", "tier": "data", "zone": "a", "env": "dev"})
    assert not rollout.selector_matches(sel, {"app": "es", "tier": "ingest", "zone": "a"})
    assert not rollout.selector_matches(sel, {"app": "es", "tier": "data", "zone": "a", "legacy": "1"})
    assert not rollout.selector_matches(sel, {"app": "es", "tier": "data"})
    assert not rollout.selector_matches({}, {"app": "es"})
    assert not rollout.selector_matches(None, {"app": "es"})


def test_pod_owner_through_replicaset():
    rs = {"metadata": {"name": "kibana-5f", "ownerReferences": [
        {"kind": "Deployment", "name": "kibana", "controller": True}]}}
    p = pod(name="kibana-5f-abc", labels={"other": "x"}, owner=("ReplicaSet", "kibana-5f"))
    assert rollout.pod_owner(p, [sts()], [deploy()], [rs]) == ("Deployment", "kibana")
    # a ReplicaSet of another Deployment does not count
    rs_other = {"metadata": {"name": "kibana-5f", "ownerReferences": [{"kind": "Deployment", "name": "other"}]}}
    assert rollout.pod_owner(p, [sts()], [deploy()], [rs_other]) is None


def test_pod_owner_statefulset_and_selector_fallback():
    assert rollout.pod_owner(pod(), [sts()], [], []) == ("StatefulSet", "elasticsearch")
    assert rollout.pod_owner(pod(owner=None, labels={"app": "kibana"}), [sts()], [deploy()], []) == (
        "Deployment", "kibana")
    assert rollout.pod_owner(pod(owner=("StatefulSet", "other"), labels={"app": "other"}), [sts()], [deploy()],
                             []) is None


def test_evaluate_ignores_doomed_pods_of_other_workloads():
    stranger = pod(name="minio-0", owner=("StatefulSet", "minio"), labels={"app": "minio"},
                   waiting=("CrashLoopBackOff", "invalid hostname :9001"))
    es_pod = pod(ready=True, phase="Running")
    state = rollout.evaluate([sts()], [deploy()], [], [stranger, es_pod])
    assert state["doom"] is None
    assert state["done"] is True
    assert state["pods"] == [{"name": "elasticsearch-0", "phase": "Running", "ready": True,
                              "owner": "StatefulSet/elasticsearch"}]


def test_evaluate_reports_doom_and_waiting():
    doomed = pod(waiting=("ImagePullBackOff", "Back-off pulling image"))
    state = rollout.evaluate([sts(ready=0)], [deploy()], [], [doomed])
    assert state["done"] is False
    assert state["doom"]["reason"] == "ImagePullBackOff"
    assert state["doom"]["owner"] == "StatefulSet/elasticsearch"
    assert state["waiting"] == ["Waiting for statefulset elasticsearch: 0 of 1 pods ready..."]
    assert state["statefulsets"][0]["done"] is False
    assert state["deployments"][0]["done"] is True


def test_warning_events_filters_and_orders():
    events = [
        {"involvedObject": {"kind": "Pod", "name": "elasticsearch-0"}, "type": "Warning", "reason": "Failed",
         "message": "second", "count": 2, "lastTimestamp": "2024-01-01T00:00:05Z"},
        {"involvedObject": {"kind": "Pod", "name": "elasticsearch-0"}, "type": "Normal", "reason": "Pulling",
         "message": "normal", "lastTimestamp": "2024-01-01T00:00:01Z"},
        {"involvedObject": {"kind": "Pod", "name": "kibana-1"}, "type": "Warning", "reason": "Failed",
         "message": "other pod", "lastTimestamp": "2024-01-01T00:00:02Z"},
        {"involvedObject": {"kind": "Pod", "name": "elasticsearch-0"}, "type": "Warning", "reason": "Failed",
         "message": "first", "lastTimestamp": "2024-01-01T00:00:03Z"},
    ]
    out = rollout.warning_events(events, "elasticsearch-0")
    assert [e["message"] for e in out] == ["first", "second"]
    assert out[1] == {"pod": "elasticsearch-0", "reason": "Failed", "message": "second", "count": 2,
                      "last_timestamp": "2024-01-01T00:00:05Z"}
    assert len(rollout.warning_events(events * 10, "elasticsearch-0", limit=3)) == 3


# ---------------------------------------------------------------- PVC sizing

def claim(name, size, storage_class="standard", capacity=None):
    obj = {"metadata": {"name": name}, "spec": {"resources": {"requests": {"storage": size}}}, "status": {}}
    if storage_class is not False:
        obj["spec"]["storageClassName"] = storage_class
    if capacity:
        obj["status"]["capacity"] = {"storage": capacity}
    return obj


def test_statefulset_pvc_names():
    s = sts(replicas=2, templates=("data", "logs"))
    existing = ["data-elasticsearch-0", "data-elasticsearch-1", "data-elasticsearch-3", "logs-elasticsearch-0",
                "data-elasticsearch-x", "data-other-0", "data-elasticsearch-01"]
    found, missing = pvc.statefulset_pvc_names(s, existing)
    assert found == ["data-elasticsearch-0", "data-elasticsearch-1", "data-elasticsearch-3", "logs-elasticsearch-0"]
    assert missing == ["data-elasticsearch-2", "logs-elasticsearch-1", "logs-elasticsearch-2",
                       "logs-elasticsearch-3"]


def test_plan_grow_and_equal():
    claims = [claim("a", "10Gi"), claim("b", "20Gi"), claim("c", "20480Mi")]
    plan = pvc.plan_pvc_sizes(claims, "20Gi", NS)
    assert plan == [
        {"name": "a", "old": "10Gi", "new": "20Gi", "change": True},
        {"name": "b", "old": "20Gi", "new": "20Gi", "change": False},
        {"name": "c", "old": "20480Mi", "new": "20480Mi", "change": False},
    ]


def test_plan_refuses_shrink_naming_everything():
    claims = [claim("data-elasticsearch-0", "5Gi"), claim("data-elasticsearch-1", "10Gi")]
    with pytest.raises(pvc.PvcSizeError) as info:
        pvc.plan_pvc_sizes(claims, "8Gi", NS)
    msg = str(info.value)
    assert "disk_size 8Gi" in msg
    assert "es-test/data-elasticsearch-1" in msg
    assert "current size 10Gi" in msg


def test_plan_rejects_bad_quantity():
    with pytest.raises(pvc.PvcSizeError, match="disk_size '10 GB' is not a valid Kubernetes quantity"):
        pvc.plan_pvc_sizes([claim("a", "10Gi")], "10 GB", NS)


def test_check_expandable():
    classes = [
        {"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
         "allowVolumeExpansion": True},
        {"metadata": {"name": "fixed"}, "allowVolumeExpansion": False},
        {"metadata": {"name": "unset"}},
    ]
    pvc.check_expandable([claim("a", "1Gi"), claim("b", "1Gi", storage_class=False)], classes, NS)
    for sc, fragment in (("fixed", "does not allow volume expansion"), ("unset", "does not allow volume expansion"),
                         ("missing", "StorageClass missing of PVC es-test/a not found"),
                         ("", "without a StorageClass")):
        with pytest.raises(pvc.PvcSizeError, match=fragment):
            pvc.check_expandable([claim("a", "1Gi", storage_class=sc)], classes, NS)
    with pytest.raises(pvc.PvcSizeError, match="no default StorageClass"):
        pvc.check_expandable([claim("a", "1Gi", storage_class=False)], classes[1:], NS)


def test_check_bound():
    bound = claim("a", "1Gi")
    bound["status"]["phase"] = "Bound"
    pvc.check_bound([bound], NS)
    pending = claim("b", "1Gi")
    pending["status"]["phase"] = "Pending"
    with pytest.raises(pvc.PvcSizeError, match=r"PVC es-test/b is not bound \(phase Pending\)"):
        pvc.check_bound([bound, pending], NS)


def test_capacity_reached():
    assert pvc.capacity_reached(claim("a", "20Gi", capacity="20Gi"), "20Gi")
    assert not pvc.capacity_reached(claim("a", "20Gi", capacity="10Gi"), "20Gi")
    assert not pvc.capacity_reached(claim("a", "20Gi"), "20Gi")


# ---------------------------------------------------------------- client set-up

def test_auth_env_fallback_like_kubernetes_core():
    env = {"K8S_AUTH_HOST": "https://k8s:6443", "K8S_AUTH_VERIFY_SSL": "no", "K8S_AUTH_SSL_CA_CERT": "/ca.pem",
           "K8S_AUTH_API_KEY": "tok"}
    auth = k8s_client.auth_from_params({"host": None, "context": "ctx"}, environ=env)
    assert auth == {"host": "https://k8s:6443", "validate_certs": False, "ca_cert": "/ca.pem", "api_key": "tok",
                    "context": "ctx"}
    # a module parameter wins over the environment
    assert k8s_client.auth_from_params({"host": "https://other"}, environ=env)["host"] == "https://other"


def test_configuration_from_host_and_token():
    cfg = k8s_client.configuration_from_params(
        {"host": "https://k8s.example:6443/", "api_key": "secret-token", "validate_certs": False}, environ={})
    assert cfg.host == "https://k8s.example:6443"
    assert cfg.verify_ssl is False
    assert cfg.auth_settings()["BearerToken"]["value"] == "Bearer secret-token"


def test_configuration_from_kubeconfig_dict():
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "c", "cluster": {"server": "https://one:6443", "insecure-skip-tls-verify": True}},
                     {"name": "d", "cluster": {"server": "https://two:6443"}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u"}},
                     {"name": "b", "context": {"cluster": "d", "user": "u"}}],
    }
    cfg = k8s_client.configuration_from_params({"kubeconfig": kubeconfig}, environ={})
    assert cfg.host == "https://one:6443"
    assert cfg.auth_settings()["BearerToken"]["value"] == "Bearer t0ken"
    cfg = k8s_client.configuration_from_params({"kubeconfig": kubeconfig, "context": "b"}, environ={})
    assert cfg.host == "https://two:6443"


def test_configuration_error_is_clear_and_secret_free(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(k8s_client.K8sClientError) as info:
        k8s_client.configuration_from_params({"kubeconfig": str(missing), "api_key": "s3cr3t"}, environ={})
    assert "s3cr3t" not in str(info.value)
    assert "nope.yaml" in str(info.value)
