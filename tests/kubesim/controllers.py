"""The control plane of the Kubernetes API simulator (test infrastructure).

What a small real cluster runs in the background, working only through the
object ``Store``: the scheduler (one node), the kubelet (pod lifecycle with
image pull failures, crash loops, readiness after ``ready_delay``), the
StatefulSet, Deployment, ReplicaSet and Job controllers, the PersistentVolume
binder and resizer, namespace deletion and the garbage collector. Events are
written as core/v1 ``Event`` objects like the real components write them.

One worker thread reacts to store changes (a listener queues them) and to
timers for time-based transitions; it sleeps while there is nothing to do.
"""

import heapq
import itertools
import logging
import queue
import threading
import time

from tests.kubesim import ctrl_apps
from tests.kubesim.ctrl_kubelet import Kubelet
from tests.kubesim.ctrl_util import EventRecorder, now, quantity
from tests.kubesim.store import AlreadyExists, NotFound

log = logging.getLogger("kubesim.controllers")

NODE_NAME = "kubesim-node-1"  # the one node; created by _sync_node when the controllers start
CONFIG_POLL = 0.2

OWNER_RESOURCE = {
    "StatefulSet": "apps/statefulsets",
    "ReplicaSet": "apps/replicasets",
    "Deployment": "apps/deployments",
    "Job": "batch/jobs",
}
_STOP = object()


class Controllers:
    """``Controllers(store, config)``; ``start()`` runs them, ``stop()`` joins."""

    def __init__(self, store, config, node_name=NODE_NAME):
        self.store = store
        self.config = config
        self.node_name = node_name
        self.events = EventRecorder(store, node_name)
        self.kubelet = Kubelet(self)
        self.apps = ctrl_apps.AppsControllers(self)
        self._q = queue.Queue()
        self._timers = []
        self._timer_at = {}
        self._seq = itertools.count()
        self._thread = None
        self._stopping = threading.Event()
        self._config_snapshot = None
        self.unscheduled = set()  # pod keys waiting for capacity
        self.mount_wait = set()  # pod keys waiting for a configmap/secret/pvc
        self.resources = set()
        self.idle = threading.Event()
        store.add_listener(self._on_change)

    # -- lifecycle -----------------------------------------------------------------
    def start(self):
        if self._thread is not None:
            return
        self._stopping.clear()
        self._sync_node()
        for res, obj in self.store.all_objects():
            self._q.put(("ADDED", res, obj))
        self._thread = threading.Thread(target=self._run, name="kubesim-controllers", daemon=True)
        self._thread.start()

    def stop(self):
        if self._thread is None:
            return
        self._stopping.set()
        self._q.put(_STOP)
        self._thread.join(timeout=10)
        self._thread = None

    def schedule(self, key, delay):
        """Reconcile ``key`` again after ``delay`` seconds (earliest request wins)."""
        when = time.monotonic() + max(0.0, delay)
        cur = self._timer_at.get(key)
        if cur is not None and cur <= when and cur > time.monotonic():
            return
        self._timer_at[key] = when
        heapq.heappush(self._timers, (when, next(self._seq), key))

    def kick(self, key):
        self._q.put(("KICK", key[0], key))

    # -- listener (may run with the store lock held: only queue) --------------------
    def _on_change(self, event_type, resource, obj):
        if resource == "events":
            return
        self._q.put((event_type, resource, obj))

    # -- worker ----------------------------------------------------------------------
    def _run(self):
        last_poll = 0.0
        while not self._stopping.is_set():
            t = time.monotonic()
            timeout = CONFIG_POLL - (t - last_poll)
            if self._timers:
                timeout = min(timeout, self._timers[0][0] - t)
            batch = []
            try:
                self.idle.set()
                batch.append(self._q.get(timeout=max(0.0, timeout)))
            except queue.Empty:
                pass
            self.idle.clear()
            while True:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                break
            keys = {}
            for item in batch:
                try:
                    self._dispatch(item, keys)
                except Exception:  # keep the control plane alive, as a real one would
                    log.exception("kubesim controllers: dispatch failed for %r", item[:2])
            t = time.monotonic()
            while self._timers and self._timers[0][0] <= t:
                when, _u, key = heapq.heappop(self._timers)
                if self._timer_at.get(key) == when:
                    del self._timer_at[key]
                    keys[key] = True
            if t - last_poll >= CONFIG_POLL:
                last_poll = t
                self._check_config(keys)
            for key in keys:
                try:
                    self.reconcile(key)
                except NotFound:
                    pass
                except Exception:
                    log.exception("kubesim controllers: reconcile failed for %r", key)

    def _dispatch(self, item, keys):
        event_type, resource, obj = item
        if event_type == "KICK":
            keys[obj] = True
            return
        self.resources.add(resource)
        meta = obj.get("metadata", {})
        ns, name = meta.get("namespace"), meta.get("name")
        key = (resource, ns, name)
        if event_type == "DELETED":
            self._on_deleted(resource, obj, keys)
        keys[key] = True
        for ref in meta.get("ownerReferences") or []:
            res = OWNER_RESOURCE.get(ref.get("kind"))
            if res:
                keys[(res, ns, ref.get("name"))] = True
        if resource in ("persistentvolumeclaims", "configmaps", "secrets") and event_type != "DELETED":
            for pkey in list(self.mount_wait | self.unscheduled):
                if pkey[1] == ns:
                    keys[pkey] = True
        if resource == "storage.k8s.io/storageclasses":
            for pvc in self.store.list("persistentvolumeclaims", predicate=_pending)[0]:
                keys[("persistentvolumeclaims", pvc["metadata"]["namespace"], pvc["metadata"]["name"])] = True
        if resource == "pods" and event_type == "MODIFIED":
            if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                for pkey in self.unscheduled:
                    keys[pkey] = True

    def _on_deleted(self, resource, obj, keys):
        meta = obj["metadata"]
        uid, ns = meta.get("uid"), meta.get("namespace")
        self.garbage_collect(uid, ns)
        if resource == "pods":
            key = ("pods", ns, meta["name"])
            self.unscheduled.discard(key)
            self.mount_wait.discard(key)
            self.kubelet.forget(uid)
            self.events.forget_uid(uid)
            for pkey in self.unscheduled:
                keys[pkey] = True
        elif resource == "persistentvolumeclaims":
            vol = (obj.get("spec") or {}).get("volumeName")
            if vol:
                try:
                    pv = self.store.get("persistentvolumes", None, vol)
                    if pv.get("spec", {}).get("persistentVolumeReclaimPolicy", "Delete") == "Delete":
                        self.store.delete("persistentvolumes", None, vol)
                    else:
                        self.store.mutate("persistentvolumes", None, vol, _release_pv, subresource="status")
                except NotFound:
                    pass
        elif resource == "nodes":
            self._sync_node()

    def garbage_collect(self, uid, ns):
        """Delete objects whose owners are all gone (background propagation)."""
        if not uid:
            return

        def owned(o):
            refs = o.get("metadata", {}).get("ownerReferences") or []
            return any(r.get("uid") == uid for r in refs)

        for res in sorted(self.resources | {"pods", "persistentvolumeclaims", "apps/replicasets",
                                            "apps/controllerrevisions"}):
            if res in ("events", "namespaces", "nodes"):
                continue
            items, _u = self.store.list(res, namespace=ns, predicate=owned)
            for item in items:
                others = [r for r in item["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                if any(self._uid_exists(res, item["metadata"].get("namespace"), r) for r in others):
                    continue
                try:
                    self.store.delete(res, item["metadata"].get("namespace"), item["metadata"]["name"])
                except NotFound:
                    pass

    def _uid_exists(self, res, ns, ref):
        owner_res = OWNER_RESOURCE.get(ref.get("kind"))
        if owner_res is None:
            return True  # unknown owner kinds are kept, as the real collector would not know them either
        try:
            return self.store.get(owner_res, ns, ref.get("name"))["metadata"]["uid"] == ref.get("uid")
        except NotFound:
            return False

    # -- reconcile dispatch ------------------------------------------------------------
    def reconcile(self, key):
        resource, ns, name = key
        if resource == "pods":
            self.kubelet.reconcile_pod(ns, name)
        elif resource == "apps/statefulsets":
            self.apps.reconcile_statefulset(ns, name)
        elif resource == "apps/deployments":
            self.apps.reconcile_deployment(ns, name)
        elif resource == "apps/replicasets":
            self.apps.reconcile_replicaset(ns, name)
        elif resource == "batch/jobs":
            self.apps.reconcile_job(ns, name)
        elif resource == "persistentvolumeclaims":
            self.reconcile_pvc(ns, name)
        elif resource == "namespaces":
            self.reconcile_namespace(name)

    # -- node ----------------------------------------------------------------------------
    def node_allocatable(self):
        cfg = self.config
        alloc = {
            "cpu": str(cfg.node_cpu),
            "memory": str(cfg.node_memory),
            "ephemeral-storage": "100Gi",
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
            "pods": "110",
        }
        if int(cfg.node_gpus or 0) > 0:
            alloc["nvidia.com/gpu"] = str(int(cfg.node_gpus))
        return alloc

    def _sync_node(self):
        alloc = self.node_allocatable()
        try:
            node = self.store.get("nodes", None, self.node_name)
        except NotFound:
            node = None
        if node is None:
            t = now()
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": self.node_name,
                    "labels": {
                        "beta.kubernetes.io/arch": "amd64",
                        "beta.kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "kubernetes.io/hostname": self.node_name,
                        "kubernetes.io/os": "linux",
                        "node-role.kubernetes.io/control-plane": "",
                    },
                },
                "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": "172.18.0.2"},
                        {"type": "Hostname", "address": self.node_name},
                    ],
                    "conditions": [
                        _node_cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
                                   "kubelet has sufficient memory available", t),
                        _node_cond("DiskPressure", "False", "KubeletHasNoDiskPressure",
                                   "kubelet has no disk pressure", t),
                        _node_cond("PIDPressure", "False", "KubeletHasSufficientPID",
                                   "kubelet has sufficient PID available", t),
                        _node_cond("Ready", "True", "KubeletReady", "kubelet is posting ready status", t),
                    ],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                    "nodeInfo": {
                        "architecture": "amd64",
                        "bootID": "3b1c0c5e-6d1e-4a8f-9f41-1c2d3e4f5a6b",
                        "containerRuntimeVersion": "containerd://1.7.24",
                        "kernelVersion": "6.1.0",
                        "kubeProxyVersion": "v1.32.0",
                        "kubeletVersion": "v1.32.0",
                        "machineID": "5f0e9d8c7b6a41e2a3b4c5d6e7f80912",
                        "operatingSystem": "linux",
                        "osImage": "Debian GNU/Linux 12 (bookworm)",
                        "systemUUID": "5f0e9d8c-7b6a-41e2-a3b4-c5d6e7f80912",
                    },
                },
            }
            node["status"]["capacity"] = dict(alloc)
            node["status"]["allocatable"] = dict(alloc)
            try:
                self.store.create("nodes", node, namespaced=False)
            except AlreadyExists:
                pass
            return

        def fix(n):
            n.setdefault("status", {})["capacity"] = dict(alloc)
            n["status"]["allocatable"] = dict(alloc)

        if node.get("status", {}).get("allocatable") != alloc:
            self.store.mutate("nodes", None, self.node_name, fix, subresource="status")

    def _check_config(self, keys):
        cfg = self.config
        snap = (str(cfg.node_cpu), str(cfg.node_memory), int(cfg.node_gpus or 0))
        if snap != self._config_snapshot:
            changed = self._config_snapshot is not None
            self._config_snapshot = snap
            self._sync_node()
            if changed:
                for pkey in self.unscheduled:
                    keys[pkey] = True

    def node(self):
        try:
            return self.store.get("nodes", None, self.node_name)
        except NotFound:
            self._sync_node()
            return self.store.get("nodes", None, self.node_name)

    # -- persistent volumes ------------------------------------------------------------
    def storage_class(self, name):
        if name:
            try:
                return self.store.get("storage.k8s.io/storageclasses", None, name)
            except NotFound:
                return None
        classes, _u = self.store.list("storage.k8s.io/storageclasses")
        for sc in classes:
            ann = sc["metadata"].get("annotations") or {}
            if ann.get("storageclass.kubernetes.io/is-default-class") == "true":
                return sc
        return None

    def reconcile_pvc(self, ns, name):
        pvc = self.store.get("persistentvolumeclaims", ns, name)
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        status = pvc.get("status") or {}
        if status.get("phase") != "Bound":
            self._bind_pvc(pvc)
            return
        # expansion: the requested size grew past the capacity
        requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        capacity = (status.get("capacity") or {}).get("storage")
        if requested and capacity and quantity(requested) > quantity(capacity):
            self._resize_pvc(pvc, requested)

    def _bind_pvc(self, pvc):
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        sc_name = spec.get("storageClassName")
        if sc_name == "":
            self.events.record("persistentvolumeclaims", pvc, "Normal", "FailedBinding",
                               "no persistent volumes available for this claim and no storage class is set",
                               "persistentvolume-controller")
            return
        sc = self.storage_class(sc_name)
        if sc is None:
            if sc_name:
                self.events.record("persistentvolumeclaims", pvc, "Warning", "ProvisioningFailed",
                                   'storageclass.storage.k8s.io "%s" not found' % sc_name,
                                   "persistentvolume-controller")
            else:
                self.events.record("persistentvolumeclaims", pvc, "Normal", "FailedBinding",
                                   "no persistent volumes available for this claim and no storage class is set",
                                   "persistentvolume-controller")
            return
        ann = meta.get("annotations") or {}
        if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and "volume.kubernetes.io/selected-node" not in ann:
            self.events.record("persistentvolumeclaims", pvc, "Normal", "WaitForFirstConsumer",
                               "waiting for first consumer to be created before binding",
                               "persistentvolume-controller")
            return
        provisioner = sc.get("provisioner", "rancher.io/local-path")
        pv_name = spec.get("volumeName") or "pvc-" + meta["uid"]
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        access = spec.get("accessModes") or ["ReadWriteOnce"]
        if not self.store.exists("persistentvolumes", None, pv_name):
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": pv_name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": provisioner},
                },
                "spec": {
                    "accessModes": list(access),
                    "capacity": {"storage": size},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "name": name,
                        "namespace": ns,
                        "uid": meta["uid"],
                        "resourceVersion": meta.get("resourceVersion"),
                    },
                    "hostPath": {"path": "/var/local-path-provisioner/%s_%s_%s" % (pv_name, ns, name),
                                 "type": "DirectoryOrCreate"},
                    "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                    "storageClassName": sc["metadata"]["name"],
                    "volumeMode": spec.get("volumeMode", "Filesystem"),
                },
                "status": {"phase": "Bound"},
            }
            try:
                self.store.create("persistentvolumes", pv, namespaced=False)
            except AlreadyExists:
                pass
            self.events.record("persistentvolumeclaims", pvc, "Normal", "ProvisioningSucceeded",
                               "Successfully provisioned volume %s" % pv_name, provisioner)

        def bind_spec(o):
            a = o["metadata"].setdefault("annotations", {})
            a["pv.kubernetes.io/bind-completed"] = "yes"
            a["pv.kubernetes.io/bound-by-controller"] = "yes"
            a["volume.beta.kubernetes.io/storage-provisioner"] = provisioner
            a["volume.kubernetes.io/storage-provisioner"] = provisioner
            o["spec"]["volumeName"] = pv_name
            o["spec"].setdefault("storageClassName", sc["metadata"]["name"])

        def bind_status(o):
            o["status"] = {
                "phase": "Bound",
                "accessModes": list(access),
                "capacity": {"storage": size},
            }

        self.store.mutate("persistentvolumeclaims", ns, name, bind_spec)
        self.store.mutate("persistentvolumeclaims", ns, name, bind_status, subresource="status")

    def _resize_pvc(self, pvc, requested):
        meta = pvc["metadata"]
        ns, name = meta["namespace"], meta["name"]
        status = pvc.get("status") or {}
        started = [c for c in status.get("conditions") or [] if c.get("type") == "Resizing"]
        delay = min(0.5, max(0.05, float(self.config.ready_delay) * 0.3))
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if not started:
            def begin(o):
                st = o.setdefault("status", {})
                st["conditions"] = [{"type": "Resizing", "status": "True", "lastProbeTime": None,
                                     "lastTransitionTime": now()}]
                st["allocatedResources"] = {"storage": requested}

            self.store.mutate("persistentvolumeclaims", ns, name, begin, subresource="status")
            self.events.record("persistentvolumeclaims", pvc, "Normal", "Resizing",
                               "External resizer is resizing volume %s" % pv_name, "external-resizer")
            self._resize_started = getattr(self, "_resize_started", {})
            self._resize_started[meta["uid"]] = time.monotonic()
            self.schedule(("persistentvolumeclaims", ns, name), delay)
            return
        t0 = getattr(self, "_resize_started", {}).get(meta["uid"])
        if t0 is not None and time.monotonic() - t0 < delay:
            self.schedule(("persistentvolumeclaims", ns, name), delay - (time.monotonic() - t0))
            return

        def finish(o):
            st = o.setdefault("status", {})
            st["capacity"] = {"storage": requested}
            st["allocatedResources"] = {"storage": requested}
            st.pop("conditions", None)

        self.store.mutate("persistentvolumeclaims", ns, name, finish, subresource="status")
        if pv_name:
            try:
                self.store.mutate("persistentvolumes", None, pv_name,
                                  lambda o: o["spec"].__setitem__("capacity", {"storage": requested}))
            except NotFound:
                pass
        self.events.record("persistentvolumeclaims", pvc, "Normal", "FileSystemResizeSuccessful",
                           "MountVolume.NodeExpandVolume succeeded for volume \"%s\" %s" % (pv_name, self.node_name),
                           "kubelet")
        getattr(self, "_resize_started", {}).pop(meta["uid"], None)

    # -- namespaces ------------------------------------------------------------------------
    def reconcile_namespace(self, name):
        ns = self.store.get("namespaces", None, name)
        if not ns["metadata"].get("deletionTimestamp"):
            return
        for res, obj in self.store.all_objects():
            if obj["metadata"].get("namespace") == name:
                try:
                    self.store.delete(res, name, obj["metadata"]["name"])
                except NotFound:
                    pass
        try:
            self.store.delete("namespaces", None, name)
        except NotFound:
            pass

    # -- helpers for tests ------------------------------------------------------------------
    def wait_idle(self, timeout=5.0):
        """Block until the worker has nothing queued (timers may still be pending)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._q.empty() and self.idle.is_set():
                time.sleep(0.02)
                if self._q.empty() and self.idle.is_set():
                    return True
            time.sleep(0.01)
        return False


def _pending(o):
    return (o.get("status") or {}).get("phase") != "Bound"


def _release_pv(pv):
    pv.setdefault("status", {})["phase"] = "Released"


def _node_cond(ctype, status, reason, message, t):
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": t, "lastTransitionTime": t}
