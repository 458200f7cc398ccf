"""What a real cluster's node agents and CSI sidecars would do, for the test
control plane (test infrastructure), each a thread on one watch:

- ``Provisioner``: the dynamic provisioner and resizer of the StorageClass
  ``standard``: a PersistentVolume for each claim the PV controller hands to
  it, deletion of released volumes, and expansion (the volume's capacity,
  then the claim's ``status.capacity``), as a CSI driver's external
  provisioner and resizer do;
- ``KubeletEvents``: the kubelet's Warning events for containers that the
  KWOK stages put in ``ErrImagePull``/``ImagePullBackOff`` or
  ``CrashLoopBackOff``, naming the image or the container.
"""

import datetime
import json
import logging
import threading

from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.utils.quantity import parse_quantity

DRIVER = "hostpath.controlplane.es-serverless.test"
STORAGE_CLASS = "standard"
LOG = logging.getLogger("controlplane.agents")


class _Watcher(threading.Thread):
    """List, then watch ``list_func`` forever, calling ``handle(obj)`` (a dict)
    for every object seen; relists after any error."""

    def __init__(self, api, list_func, stop):
        super().__init__(daemon=True, name=type(self).__name__)
        self.api = api
        self.list_func = list_func
        self.stop_event = stop

    def run(self):
        while not self.stop_event.is_set():
            try:
                body = json.loads(self.list_func(_preload_content=False).data)
                for item in body.get("items", []):
                    self._safe(item)
                version = body.get("metadata", {}).get("resourceVersion")
                for event in watch.Watch().stream(self.list_func, resource_version=version, timeout_seconds=30,
                                                  allow_watch_bookmarks=False):
                    if self.stop_event.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._safe(event["raw_object"])
            except Exception as exc:  # noqa: BLE001 - a test agent must outlive API hiccups
                if self.stop_event.is_set():
                    return
                LOG.warning("%s: %s; relisting", self.name, exc)
                self.stop_event.wait(0.5)

    def _safe(self, obj):
        try:
            self.handle(obj)
        except ApiException as exc:
            if exc.status not in (404, 409):
                LOG.warning("%s: %s", self.name, exc)

    def handle(self, obj):
        raise NotImplementedError


def _storage(resources):
    return ((resources or {}).get("requests") or {}).get("storage")


class Provisioner:
    """Provisions, deletes and expands the volumes of ``STORAGE_CLASS``."""

    def __init__(self, api_client, stop):
        self.core = client.CoreV1Api(api_client)
        self.threads = [_Claims(self.core, self.core.list_persistent_volume_claim_for_all_namespaces, stop),
                        _Volumes(self.core, self.core.list_persistent_volume, stop)]

    def start(self):
        for t in self.threads:
            t.start()


class _Claims(_Watcher):
    def handle(self, obj):
        pvc = obj
        meta, spec, status = pvc["metadata"], pvc.get("spec") or {}, pvc.get("status") or {}
        if spec.get("storageClassName") != STORAGE_CLASS or meta.get("deletionTimestamp"):
            return
        annotations = meta.get("annotations") or {}
        if status.get("phase") == "Pending" and not spec.get("volumeName") and \
                annotations.get("volume.kubernetes.io/storage-provisioner") == DRIVER:
            self._provision(pvc)
        elif status.get("phase") == "Bound":
            self._resize(pvc)

    def _provision(self, pvc):
        meta, spec = pvc["metadata"], pvc["spec"]
        self.api.create_persistent_volume({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pvc-" + meta["uid"], "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER}},
            "spec": {"capacity": {"storage": _storage(spec.get("resources"))},
                     "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                     "volumeMode": spec.get("volumeMode") or "Filesystem",
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": STORAGE_CLASS,
                     "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                                  "name": meta["name"], "uid": meta["uid"]},
                     "csi": {"driver": DRIVER, "volumeHandle": meta["uid"], "fsType": "ext4"}}})

    def _resize(self, pvc):
        wanted = _storage(pvc["spec"].get("resources"))
        have = ((pvc.get("status") or {}).get("capacity") or {}).get("storage")
        name = pvc["spec"].get("volumeName")
        if not wanted or not name or parse_quantity(wanted) <= parse_quantity(have or "0"):
            return
        pv = self.api.read_persistent_volume(name)
        if pv.spec.csi is None or pv.spec.csi.driver != DRIVER:
            return
        if parse_quantity(pv.spec.capacity["storage"]) < parse_quantity(wanted):
            self.api.patch_persistent_volume(name, {"spec": {"capacity": {"storage": wanted}}})
        meta = pvc["metadata"]
        self.api.patch_namespaced_persistent_volume_claim_status(
            meta["name"], meta["namespace"],
            {"status": {"capacity": {"storage": wanted}, "conditions": None,
                        "allocatedResources": {"storage": wanted}}})


class _Volumes(_Watcher):
    def handle(self, obj):
        pv = obj
        annotations = pv["metadata"].get("annotations") or {}
        if (pv.get("status") or {}).get("phase") == "Released" and \
                annotations.get("pv.kubernetes.io/provisioned-by") == DRIVER and \
                (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete":
            self.api.delete_persistent_volume(pv["metadata"]["name"])


class KubeletEvents(_Watcher):
    """Warning events for pods stuck pulling their image or crash-looping."""

    def __init__(self, core, stop):
        super().__init__(core, core.list_pod_for_all_namespaces, stop)
        self.sent = set()

    def handle(self, obj):
        pod = obj
        meta = pod["metadata"]
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            key = (meta["uid"], status["name"], reason, status.get("restartCount", 0))
            if key in self.sent:
                continue
            if reason == "ErrImagePull":
                self._event(pod, "Failed", 'Failed to pull image "%s": %s' % (status["image"], waiting.get("message")))
            elif reason == "ImagePullBackOff":
                self._event(pod, "Failed", "Error: ImagePullBackOff")
            elif reason == "CrashLoopBackOff":
                self._event(pod, "BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)" % (
                    status["name"], meta["name"], meta["namespace"], meta["uid"]))
            else:
                continue
            self.sent.add(key)

    def _event(self, pod, reason, message):
        meta = pod["metadata"]
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.api.create_namespaced_event(meta["namespace"], {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": meta["name"] + ".", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": "Warning", "reason": reason, "message": message, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": "kubelet", "host": (pod.get("spec") or {}).get("nodeName", "")},
            "reportingComponent": "kubelet", "reportingInstance": (pod.get("spec") or {}).get("nodeName", "")})
