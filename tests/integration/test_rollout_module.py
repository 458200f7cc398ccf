"""es_rollout and es_pvc_size run through ansible-playbook against the Kubernetes API simulator."""

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time

import kubernetes
import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import rollout
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import client_from_params
from tests.kubesim.fixture import KubeSim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NS = "es-test"
ES_IMAGE = "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"
KIBANA_IMAGE = "docker.elastic.co/kibana/kibana:8.15.3"


# ---------------------------------------------------------------- cluster helpers

def api(sim):
    return kubernetes.config.new_client_from_config(config_file=sim.kubeconfig)


def create_tenant(sim, replicas=1, gpus=0, storage_class="standard", es_image=ES_IMAGE, kibana=True):
    client = api(sim)
    core = kubernetes.client.CoreV1Api(client)
    apps = kubernetes.client.AppsV1Api(client)
    core.create_namespace({"metadata": {"name": NS}})
    limits = {"cpu": "1", "memory": "1Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    apps.create_namespaced_stateful_set(NS, {
        "metadata": {"name": "elasticsearch"},
        "spec": {
            "replicas": replicas,
            "serviceName": "elasticsearch",
            "selector": {"matchLabels": {"app": "elasticsearch"}},
            "template": {
                "metadata": {"labels": {"app": "elasticsearch"}},
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
        apps.create_namespaced_deployment(NS, {
            "metadata": {"name": "kibana"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "kibana"}},
                "template": {
                    "metadata": {"labels": {"app": "kibana"}},
                    "spec": {"containers": [{"name": "kibana", "image": KIBANA_IMAGE}]},
                },
            },
        })
    return core, apps


def pvc_size(core, name):
    return core.read_namespaced_persistent_volume_claim(name, NS).spec.resources.requests["storage"]


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s" % what)


# ---------------------------------------------------------------- running the modules

def run_module(tmp_path, sim, module, args, check=False, extra_env=None):
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
        KUBECONFIG=sim.kubeconfig,
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

def test_rollout_success(tmp_path):
    # pods become ready one after the other, seconds after the module starts: it has to wait for them
    with KubeSim(ready_delay=4) as sim:
        create_tenant(sim, replicas=2)
        rc, result, _u = run_module(tmp_path, sim, "es_rollout", {"namespace": NS, "timeout": 120})
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


def test_rollout_image_pull_failure_fails_fast(tmp_path):
    with KubeSim(ready_delay=0.5, image_pull_fail=["elasticsearch:8.15.3"]) as sim:
        create_tenant(sim)
        rc, result, seconds = run_module(tmp_path, sim, "es_rollout", {"namespace": NS, "timeout": 120})
    assert rc != 0
    assert seconds < 30, "took %.1fs: the doomed pod was not detected before the timeout" % seconds
    assert result["elapsed"] < 30
    doom = result["doom"]
    assert doom["pod"] == NS + "/elasticsearch-0"
    assert doom["container"] == "elasticsearch"
    assert doom["image"] == ES_IMAGE
    assert doom["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert result["reason"] == doom["reason"]
    assert result["msg"].startswith("pod %s/elasticsearch-0 container elasticsearch (image %s): %s" % (
        NS, ES_IMAGE, doom["reason"]))
    assert any(e["pod"] == "elasticsearch-0" and e["reason"] == "Failed" for e in result["events"])


def test_rollout_crash_loop(tmp_path):
    with KubeSim(ready_delay=0.3, crash=["kibana"]) as sim:
        create_tenant(sim)
        rc, result, seconds = run_module(tmp_path, sim, "es_rollout", {"namespace": NS, "timeout": 120})
    assert rc != 0
    assert seconds < 60
    assert result["doom"]["reason"] == "CrashLoopBackOff"
    assert result["doom"]["pod"].startswith(NS + "/kibana-")
    assert result["doom"]["owner"] == "Deployment/kibana"
    assert "container kibana (image %s): CrashLoopBackOff" % KIBANA_IMAGE in result["msg"]


def test_rollout_unschedulable_gpu(tmp_path):
    with KubeSim(ready_delay=0.3, node_gpus=0) as sim:
        create_tenant(sim, gpus=2)
        rc, result, seconds = run_module(tmp_path, sim, "es_rollout", {"namespace": NS, "timeout": 120})
    assert rc != 0
    assert seconds < 30
    assert result["doom"]["reason"] == "Unschedulable"
    assert result["doom"]["pod"] == NS + "/elasticsearch-0"
    assert "nvidia.com/gpu" in result["msg"]


def test_rollout_timeout_names_what_is_not_ready(tmp_path):
    with KubeSim(ready_delay=60) as sim:
        create_tenant(sim, kibana=False)
        rc, result, seconds = run_module(tmp_path, sim, "es_rollout",
                                         {"namespace": NS, "timeout": 3, "deployments": []})
    assert rc != 0
    assert result["reason"] == "Timeout"
    assert 3 <= result["elapsed"] < 20
    assert "not complete after 3s" in result["msg"]
    assert "elasticsearch" in result["msg"] and "elasticsearch-0" in result["msg"]


def test_rollout_missing_workload_fails_at_once(tmp_path):
    with KubeSim(ready_delay=0.2) as sim:
        create_tenant(sim, kibana=False)
        rc, result, seconds = run_module(tmp_path, sim, "es_rollout", {"namespace": NS, "timeout": 120})
    assert rc != 0
    assert result["reason"] == "NotFound"
    assert "deployment kibana not found in namespace es-test" in result["msg"]
    assert seconds < 30


def test_waiter_is_driven_by_watch_events():
    """With the periodic resync pushed out to 10 minutes, only watch events can end the wait in seconds."""
    with KubeSim(ready_delay=2) as sim:
        create_tenant(sim, replicas=2)
        client = client_from_params({"kubeconfig": sim.kubeconfig})
        waiter = rollout.RolloutWaiter(client, NS, ["elasticsearch"], ["kibana"], timeout=120, resync_interval=600,
                                       watch_timeout=2)
        result = waiter.wait()
        watches = [r for r in sim.requests() if "watch=true" in r["query"]]
    assert result["statefulsets"][0]["done"] and result["deployments"][0]["done"]
    assert 2 <= result["elapsed"] < 60
    assert waiter.watch_errors == []
    assert {r["path"] for r in watches} >= {"/api/v1/namespaces/es-test/pods",
                                            "/apis/apps/v1/namespaces/es-test/statefulsets",
                                            "/apis/apps/v1/namespaces/es-test/deployments"}


def test_watch_feeder_relists_after_410_gone():
    with KubeSim(ready_delay=0.2) as sim:
        create_tenant(sim)
        wait_for(lambda: len(sim.objects("pods", NS)) == 2, what="pods")
        with sim.store.lock:  # compact the history: resourceVersion 1 is now too old to resume from
            del sim.store._history[:len(sim.store._history) - 1]
        client = client_from_params({"kubeconfig": sim.kubeconfig})
        events, stop = queue.Queue(), threading.Event()
        feeder = rollout._WatchFeeder("pods", kubernetes.client.CoreV1Api(client).list_namespaced_pod, NS, events,
                                      stop, watch_timeout=5)
        feeder.resource_version = "1"
        feeder.start()
        try:
            assert events.get(timeout=20) == ("pods", "RELIST")
            fresh_rv = feeder.resource_version
            assert fresh_rv is not None and int(fresh_rv) > 1
            kubernetes.client.CoreV1Api(client).patch_namespaced_pod(
                "elasticsearch-0", NS, {"metadata": {"labels": {"touched": "yes"}}},
                _content_type="application/merge-patch+json")
            assert events.get(timeout=20) == ("pods", "MODIFIED")
            assert int(feeder.resource_version) > int(fresh_rv)
        finally:
            stop.set()
            feeder.halt()
        gone = [r for r in sim.requests() if "resourceVersion=1&" in r["query"] and "watch=true" in r["query"]]
        assert gone, "the feeder never tried to resume from the expired resourceVersion"


def ca_file(sim, tmp_path):
    import base64

    import yaml

    with open(sim.kubeconfig) as f:
        cluster = yaml.safe_load(f)["clusters"][0]["cluster"]
    path = tmp_path / "ca.crt"
    path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return str(path)


def test_rollout_check_mode_with_host_token_options_and_env(tmp_path):
    with KubeSim(ready_delay=0.2) as sim:
        create_tenant(sim)
        wait_for(lambda: all(p.get("status", {}).get("phase") == "Running" for p in sim.objects("pods", NS))
                 and len(sim.objects("pods", NS)) == 2, what="running pods")
        ca = ca_file(sim, tmp_path)
        # options as module parameters (no KUBECONFIG): the token must not leak into the output
        args = {"namespace": NS, "host": sim.url, "api_key": sim.token, "ca_cert": ca, "timeout": 60}
        rc, result, _u = run_module(tmp_path, sim, "es_rollout", args, extra_env={})
        assert rc == 0, result
        assert result["ready"] is True
        assert sim.token not in run_module.last_output
        # the same through K8S_AUTH_* variables, in check mode: evaluated once, nothing fails
        env = {"K8S_AUTH_HOST": sim.url, "K8S_AUTH_API_KEY": sim.token, "K8S_AUTH_SSL_CA_CERT": ca}
        rc, result, _u = run_module(tmp_path, sim, "es_rollout", {"namespace": NS}, check=True, extra_env=env)
        assert rc == 0, result
        assert result["ready"] is True and result["changed"] is False
        rc, result, _u = run_module(tmp_path, sim, "es_rollout", {"namespace": "es-absent"}, check=True,
                                    extra_env=env)
        assert rc == 0, result
        assert result["ready"] is False
        assert "not found in namespace es-absent" in result["msg"]
        # a wrong token is an API error, with a clear message and no token in it
        bad = dict(env, K8S_AUTH_API_KEY="not-the-token")
        rc, result, _u = run_module(tmp_path, sim, "es_rollout", {"namespace": NS, "timeout": 5}, extra_env=bad)
        assert rc != 0
        assert "401" in result["msg"] and "not-the-token" not in result["msg"]


# ---------------------------------------------------------------- es_pvc_size

PVC0 = "elasticsearch-data-elasticsearch-0"
PVC1 = "elasticsearch-data-elasticsearch-1"


def test_pvc_grow_check_mode_then_apply_then_idempotent(tmp_path):
    with KubeSim(ready_delay=0.2) as sim:
        core, _u = create_tenant(sim, replicas=2, kibana=False)
        wait_for(lambda: len(sim.objects("persistentvolumeclaims", NS)) == 2, what="PVCs")
        args = {"namespace": NS, "size": "20Gi", "wait": True, "wait_timeout": 60}

        rc, result, _u = run_module(tmp_path, sim, "es_pvc_size", args, check=True)
        assert rc == 0, result
        assert result["changed"] is True
        assert [(p["name"], p["old"], p["new"]) for p in result["pvcs"]] == [
            (PVC0, "10Gi", "20Gi"), (PVC1, "10Gi", "20Gi")]
        assert pvc_size(core, PVC0) == "10Gi" and pvc_size(core, PVC1) == "10Gi"

        rc, result, _u = run_module(tmp_path, sim, "es_pvc_size", args)
        assert rc == 0, result
        assert result["changed"] is True
        assert [(p["name"], p["old"], p["new"], p["capacity"]) for p in result["pvcs"]] == [
            (PVC0, "10Gi", "20Gi", "20Gi"), (PVC1, "10Gi", "20Gi", "20Gi")]
        assert pvc_size(core, PVC0) == "20Gi" and pvc_size(core, PVC1) == "20Gi"
        patches = [r for r in sim.requests() if r["method"] == "PATCH" and "persistentvolumeclaims" in r["path"]]
        assert len(patches) == 2
        assert all(r["content_type"].startswith("application/merge-patch+json") for r in patches)

        rc, result, _u = run_module(tmp_path, sim, "es_pvc_size", dict(args, size="20480Mi"))
        assert rc == 0, result
        assert result["changed"] is False
        assert len([r for r in sim.requests() if r["method"] == "PATCH"]) == 2


def test_pvc_shrink_refused_nothing_changed(tmp_path):
    with KubeSim(ready_delay=0.2) as sim:
        core, _u = create_tenant(sim, replicas=2, kibana=False)
        wait_for(lambda: len(sim.objects("persistentvolumeclaims", NS)) == 2, what="PVCs")
        core.patch_namespaced_persistent_volume_claim(
            PVC1, NS, {"spec": {"resources": {"requests": {"storage": "30Gi"}}}},
            _content_type="application/merge-patch+json")
        rc, result, _u = run_module(tmp_path, sim, "es_pvc_size", {"namespace": NS, "size": "20Gi"})
        assert rc != 0
        assert "disk_size 20Gi" in result["msg"]
        assert "%s/%s" % (NS, PVC1) in result["msg"]
        assert "current size 30Gi" in result["msg"]
        # the PVC that could have grown was not touched: nothing half done
        assert pvc_size(core, PVC0) == "10Gi"
        assert pvc_size(core, PVC1) == "30Gi"
        assert result.get("changed") is False


def test_pvc_refused_when_a_claim_is_not_bound(tmp_path):
    with KubeSim(ready_delay=0.2) as sim:
        core, _u = create_tenant(sim, kibana=False)
        wait_for(lambda: sim.objects("persistentvolumeclaims", NS), what="PVC")
        # a claim of ordinal 1 left over from a larger StatefulSet, never bound (its class does not exist)
        core.create_namespaced_persistent_volume_claim(NS, {
            "metadata": {"name": PVC1},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "gone",
                     "resources": {"requests": {"storage": "10Gi"}}}})
        rc, result, _u = run_module(tmp_path, sim, "es_pvc_size", {"namespace": NS, "size": "20Gi"})
        assert rc != 0
        assert "PVC %s/%s is not bound (phase Pending)" % (NS, PVC1) in result["msg"]
        assert pvc_size(core, PVC0) == "10Gi"
        assert pvc_size(core, PVC1) == "10Gi"


def test_pvc_refused_when_storage_class_cannot_expand(tmp_path):
    with KubeSim(ready_delay=0.2) as sim:
        client = api(sim)
        kubernetes.client.StorageV1Api(client).create_storage_class({
            "metadata": {"name": "fixed"}, "provisioner": "kubesim.io/hostpath", "allowVolumeExpansion": False})
        core, _u = create_tenant(sim, kibana=False, storage_class="fixed")
        wait_for(lambda: sim.objects("persistentvolumeclaims", NS), what="PVC")
        rc, result, _u = run_module(tmp_path, sim, "es_pvc_size", {"namespace": NS, "size": "20Gi"})
        assert rc != 0
        assert "StorageClass fixed" in result["msg"] and "does not allow volume expansion" in result["msg"]
        assert pvc_size(core, PVC0) == "10Gi"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
