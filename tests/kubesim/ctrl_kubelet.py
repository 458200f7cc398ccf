"""Scheduler and kubelet of the Kubernetes API simulator (test infrastructure).

The scheduler places pods on the single node when their requests fit its
allocatable and reports ``PodScheduled=False``/``Unschedulable`` with the real
scheduler's message otherwise. The kubelet runs each pod through the
container lifecycle a real node shows: pulling, ``ErrImagePull`` /
``ImagePullBackOff`` for images matching ``config.image_pull_fail``,
``CrashLoopBackOff`` with rising restart counts for containers matching
``config.crash``, and ``Ready`` ``config.ready_delay`` seconds after the pod
was created. Back-offs are compressed in time; messages carry the real values.
"""

import itertools
import time

from tests.kubesim.ctrl_util import (
    go_duration,
    hex_id,
    image_id,
    normalize_image,
    quantity,
)
from tests.kubesim.store import NotFound, now_iso

MAX_BACKOFF = 3.2


def _sim_backoff(n):
    return min(0.2 * (2 ** max(0, n - 1)), MAX_BACKOFF)


def _real_backoff(n):
    return go_duration(min(10 * (2 ** max(0, n - 1)), 300))


def pod_requests(spec):
    """Effective requests of a pod: sum over containers, at least the largest init container."""
    total = {}
    for c in spec.get("containers") or []:
        for name, qty in _container_requests(c).items():
            total[name] = total.get(name, 0) + quantity(qty)
    for c in spec.get("initContainers") or []:
        for name, qty in _container_requests(c).items():
            total[name] = max(total.get(name, 0), quantity(qty))
    for name, qty in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, 0) + quantity(qty)
    return total


def _container_requests(c):
    res = c.get("resources") or {}
    out = dict(res.get("limits") or {})
    out.update(res.get("requests") or {})
    return out


class ContainerRT:
    """What the kubelet knows about one container of a pod."""

    def __init__(self, spec, init):
        self.name = spec.get("name")
        self.image = spec.get("image") or ""
        self.pull_policy = spec.get("imagePullPolicy") or "IfNotPresent"
        self.init = init
        self.state = "idle"  # idle pulling errpull pullbackoff creating running crashbackoff done
        self.next_at = None
        self.restart_count = 0
        self.crashes = 0
        self.pull_failures = 0
        self.pull_started = None
        self.container_id = None
        self.started_iso = None
        self.started_mono = None
        self.ever_started = False
        self.last_term = None
        self.term = None
        self.waiting = ("ContainerCreating", None)


class PodRT:
    def __init__(self, t_seen):
        self.t_seen = t_seen
        self.started = None
        self.start_iso = None
        self.ip = None
        self.init = []
        self.main = []
        self.cond_times = {}
        self.sched_msg = None
        self.sched_emit = 0.0
        self.mount_emit = 0.0


class Kubelet:
    def __init__(self, ctl):
        self.ctl = ctl
        self.store = ctl.store
        self.events = ctl.events
        self.pods = {}  # uid -> PodRT
        self.images = set()
        self._ips = itertools.count(5)

    def forget(self, uid):
        self.pods.pop(uid, None)

    # -- entry point ---------------------------------------------------------------
    def reconcile_pod(self, ns, name):
        pod = self.store.get("pods", ns, name)
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            # graceful deletion: the kubelet stops the containers, then the object goes (once no
            # finalizer holds it; the API server deletes it when the last one is removed)
            if not meta.get("finalizers"):
                try:
                    self.store.delete("pods", ns, name)
                except NotFound:
                    pass
            return
        rt = self.pods.get(meta["uid"])
        if rt is None:
            rt = self.pods[meta["uid"]] = PodRT(time.monotonic())
        if not (pod.get("spec") or {}).get("nodeName"):
            pod = self._schedule(pod, rt)
            if pod is None:
                return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and rt.started is None:
            return
        self._run(pod, rt)

    # -- scheduler -------------------------------------------------------------------
    def _schedule(self, pod, rt):
        ctl = self.ctl
        meta, spec = pod["metadata"], pod.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        key = ("pods", ns, name)
        node = ctl.node()
        message = self._unschedulable_message(pod, node)
        if message:
            ctl.unscheduled.add(key)

            def unsched(o):
                st = o.setdefault("status", {})
                st["phase"] = "Pending"
                cond = {"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                        "lastTransitionTime": rt.cond_times.setdefault("PodScheduled", ("False", now_iso()))[1],
                        "reason": "Unschedulable", "message": message}
                st["conditions"] = [cond]

            self.store.mutate("pods", ns, name, unsched, subresource="status")
            t = time.monotonic()
            if message != rt.sched_msg or t - rt.sched_emit >= 1.0:
                rt.sched_msg, rt.sched_emit = message, t
                self.events.record("pods", pod, "Warning", "FailedScheduling", message, "default-scheduler")
            return None
        ctl.unscheduled.discard(key)
        node_name = node["metadata"]["name"]
        for claim in _claims(spec):
            try:
                pvc = self.store.get("persistentvolumeclaims", ns, claim)
            except NotFound:
                continue
            if (pvc.get("status") or {}).get("phase") != "Bound":
                self.store.mutate("persistentvolumeclaims", ns, claim,
                                  lambda o: o["metadata"].setdefault("annotations", {}).__setitem__(
                                      "volume.kubernetes.io/selected-node", node_name))
                ctl.reconcile_pvc(ns, claim)

        def bind(o):
            o["spec"]["nodeName"] = node_name

        self.store.mutate("pods", ns, name, bind)
        rt.cond_times["PodScheduled"] = ("True", now_iso())

        def scheduled(o):
            st = o.setdefault("status", {})
            st["phase"] = "Pending"
            st["conditions"] = [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                 "lastTransitionTime": rt.cond_times["PodScheduled"][1]}]

        pod = self.store.mutate("pods", ns, name, scheduled, subresource="status")
        self.events.record("pods", pod, "Normal", "Scheduled",
                           "Successfully assigned %s/%s to %s" % (ns, name, node_name), "default-scheduler")
        return pod

    def _unschedulable_message(self, pod, node):
        """The scheduler's FitError message for the one node, worded as v1.34
        words it: ``0/N nodes are available: <PreFilter or Filter reasons>.``
        and then what the PostFilter plugins said. A PreFilter failure (the
        volume binding plugin) leaves the DynamicResources plugin without its
        cycle state, whose PostFilter then answers ``not found``; otherwise
        it answers ``no new claims to deallocate`` and preemption follows:
        not helpful when the node's failure is unresolvable (a request above
        the node's allocatable, a node selector that does not match), and no
        victims otherwise (every pod here has the same priority)."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        ns = meta["namespace"]
        for claim in _claims(spec):
            try:
                pvc = self.store.get("persistentvolumeclaims", ns, claim)
            except NotFound:
                return '0/1 nodes are available: persistentvolumeclaim "%s" not found. not found' % claim
            if (pvc.get("status") or {}).get("phase") != "Bound":
                sc = self.ctl.storage_class((pvc.get("spec") or {}).get("storageClassName"))
                if sc is None or sc.get("volumeBindingMode") != "WaitForFirstConsumer":
                    return "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. not found"
        reasons = []
        unresolvable = False
        labels = node["metadata"].get("labels") or {}
        selector = spec.get("nodeSelector") or {}
        alloc = (node.get("status") or {}).get("allocatable") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            # NodeAffinity filters before NodeResourcesFit, and a node's filtering stops at the first failure
            reasons.append("node(s) didn't match Pod's node affinity/selector")
            unresolvable = True
        else:
            node_name = node["metadata"]["name"]
            uid = meta["uid"]

            def on_node(o):
                return ((o.get("spec") or {}).get("nodeName") == node_name and o["metadata"]["uid"] != uid
                        and (o.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))

            others, _u = self.store.list("pods", predicate=on_node)
            used = {}
            for o in others:
                for res, q in pod_requests(o.get("spec") or {}).items():
                    used[res] = used.get(res, 0) + q
            if len(others) + 1 > int(quantity(alloc.get("pods", "110"))):
                reasons.append("Too many pods")
            for res, q in sorted(pod_requests(spec).items()):
                if q <= 0 or res == "pods":
                    continue
                if quantity(alloc.get(res, 0)) - used.get(res, 0) < q:
                    reasons.append("Insufficient %s" % res)
                    unresolvable = unresolvable or q > quantity(alloc.get(res, 0))
        if not reasons:
            return None
        preemption = "Preemption is not helpful for scheduling" if unresolvable else \
            "No preemption victims found for incoming pod"
        return ("0/1 nodes are available: %s. no new claims to deallocate, preemption: 0/1 nodes are available: "
                "1 %s." % (", ".join("1 %s" % r for r in sorted(reasons)), preemption))

    # -- kubelet -----------------------------------------------------------------------
    def _missing_volume(self, pod):
        ns = pod["metadata"]["namespace"]
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            for src, res, field in (("configMap", "configmaps", "name"), ("secret", "secrets", "secretName")):
                ref = vol.get(src)
                if isinstance(ref, dict) and not ref.get("optional"):
                    target = ref.get(field)
                    if target and not self.store.exists(res, ns, target):
                        kind = "configmap" if src == "configMap" else "secret"
                        return 'MountVolume.SetUp failed for volume "%s" : %s "%s" not found' % (
                            vol.get("name"), kind, target)
        return None

    def _run(self, pod, rt):
        ctl = self.ctl
        meta, spec = pod["metadata"], pod.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        key = ("pods", ns, name)
        t = time.monotonic()
        if rt.started is None:
            missing = self._missing_volume(pod)
            if missing:
                ctl.mount_wait.add(key)
                if t - rt.mount_emit >= 2.0:
                    rt.mount_emit = t
                    self.events.record("pods", pod, "Warning", "FailedMount", missing, "kubelet")
                self._write_status(pod, rt, t)
                ctl.schedule(key, 2.0)
                return
            ctl.mount_wait.discard(key)
            rt.started = t
            rt.start_iso = now_iso()
            rt.ip = "10.244.0.%d" % (next(self._ips) % 250 + 2)
            rt.init = [ContainerRT(c, True) for c in spec.get("initContainers") or []]
            rt.main = [ContainerRT(c, False) for c in spec.get("containers") or []]
            if rt.init:
                self._begin(pod, rt, rt.init[0], t)
            else:
                for c in rt.main:
                    self._begin(pod, rt, c, t)
        for _u in range(200):
            if not self._advance(pod, rt, time.monotonic()):
                break
        self._write_status(pod, rt, time.monotonic())
        pending = [c.next_at for c in rt.init + rt.main if c.next_at is not None]
        ready_at = rt.t_seen + self._ready_delay()
        if any(c.state == "running" for c in rt.main) and time.monotonic() < ready_at:
            pending.append(ready_at)
        if pending:
            ctl.schedule(key, min(pending) - time.monotonic())

    def _ready_delay(self):
        return max(0.0, float(self.ctl.config.ready_delay))

    def _pull_fails(self, image):
        return any(s and s in image for s in list(self.ctl.config.image_pull_fail or []))

    def _crashes(self, c):
        return any(s and (s in c.image or s in (c.name or "")) for s in list(self.ctl.config.crash or []))

    def _begin(self, pod, rt, c, t):
        image = c.image
        present = image in self.images and not self._pull_fails(image)
        if c.pull_policy == "Never" or (c.pull_policy == "IfNotPresent" and present):
            self._event(pod, c, "Normal", "Pulled", 'Container image "%s" already present on machine' % image)
            c.state, c.next_at = "creating", t
        else:
            self._event(pod, c, "Normal", "Pulling", 'Pulling image "%s"' % image)
            c.state, c.next_at = "pulling", t + self._ready_delay() * 0.3
            c.pull_started = t
        c.waiting = ("ContainerCreating", None) if not c.ever_started else c.waiting

    def _event(self, pod, c, etype, reason, message):
        path = "spec.%s{%s}" % ("initContainers" if c.init else "containers", c.name)
        self.events.record("pods", pod, etype, reason, message, "kubelet", field_path=path)

    def _advance(self, pod, rt, t):
        """Run due transitions; return True if anything changed."""
        changed = False
        for c in rt.init + rt.main:
            if c.next_at is None or c.next_at > t:
                continue
            changed = True
            self._step(pod, rt, c, t)
        # start the next init container, or the main containers once init is done
        if rt.init:
            for i, c in enumerate(rt.init):
                if c.state == "done" and c.term and c.term["exitCode"] == 0:
                    continue
                if c.state == "idle" and all(p.state == "done" for p in rt.init[:i]):
                    self._begin(pod, rt, c, t)
                    changed = True
                break
            else:
                for c in rt.main:
                    if c.state == "idle":
                        self._begin(pod, rt, c, t)
                        changed = True
        return changed

    def _step(self, pod, rt, c, t):
        meta = pod["metadata"]
        policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
        rd = self._ready_delay()
        if c.state == "pulling":
            if self._pull_fails(c.image):
                full = normalize_image(c.image)
                err = ('rpc error: code = NotFound desc = failed to pull and unpack image "%s": failed to resolve '
                       'reference "%s": %s: not found' % (full, full, full))
                c.pull_failures += 1
                c.state, c.next_at = "errpull", t + 0.1
                c.waiting = ("ErrImagePull", err)
                self._event(pod, c, "Warning", "Failed", 'Failed to pull image "%s": %s' % (c.image, err))
                self._event(pod, c, "Warning", "Failed", "Error: ErrImagePull")
            else:
                self.images.add(c.image)
                took = max(0.001, t - (c.pull_started or t))
                self._event(pod, c, "Normal", "Pulled",
                            'Successfully pulled image "%s" in %.3fs (%.3fs including waiting). Image size: %d bytes.'
                            % (c.image, took, took, 40000000 + len(c.image) * 1000))
                c.state, c.next_at = "creating", t
        elif c.state == "errpull":
            c.state, c.next_at = "pullbackoff", t + _sim_backoff(c.pull_failures)
            c.waiting = ("ImagePullBackOff", 'Back-off pulling image "%s"' % c.image)
            self._event(pod, c, "Normal", "BackOff", 'Back-off pulling image "%s"' % c.image)
            self._event(pod, c, "Warning", "Failed", "Error: ImagePullBackOff")
        elif c.state == "pullbackoff":
            self._event(pod, c, "Normal", "Pulling", 'Pulling image "%s"' % c.image)
            c.state, c.next_at, c.pull_started = "pulling", t + rd * 0.3, t
        elif c.state == "creating":
            c.container_id = "containerd://" + hex_id()
            c.started_iso, c.started_mono = now_iso(), t
            c.ever_started = True
            c.state = "running"
            self._event(pod, c, "Normal", "Created", "Created container: %s" % c.name)
            self._event(pod, c, "Normal", "Started", "Started container %s" % c.name)
            if self._crashes(c):
                c.next_at = t + max(0.05, min(0.3, rd * 0.3))
            elif c.init:
                c.next_at = t + max(0.0, rd * 0.1)
            elif policy != "Always":
                c.next_at = max(t, rt.t_seen + rd)
            else:
                c.next_at = None
        elif c.state == "running":
            crashed = self._crashes(c)
            term = {
                "containerID": c.container_id,
                "exitCode": 1 if crashed else 0,
                "reason": "Error" if crashed else "Completed",
                "startedAt": c.started_iso,
                "finishedAt": now_iso(),
            }
            if crashed and (policy in ("Always", "OnFailure") or (c.init and policy == "Always")):
                c.crashes += 1
                c.restart_count += 1
                c.last_term = term
                c.state, c.next_at = "crashbackoff", t + _sim_backoff(c.crashes)
                uid_part = "%s_%s(%s)" % (meta["name"], meta["namespace"], meta["uid"])
                c.waiting = ("CrashLoopBackOff", "back-off %s restarting failed container=%s pod=%s"
                             % (_real_backoff(c.crashes), c.name, uid_part))
                self._event(pod, c, "Warning", "BackOff",
                            "Back-off restarting failed container %s in pod %s" % (c.name, uid_part))
            else:
                c.term = term
                c.state, c.next_at = "done", None
        elif c.state == "crashbackoff":
            self._begin(pod, rt, c, t)
            if c.state == "creating":
                c.next_at = t

    # -- status ------------------------------------------------------------------------
    def _container_status(self, c, rt, t, init_pending):
        st = {
            "name": c.name,
            "image": normalize_image(c.image) if c.ever_started else c.image,
            "imageID": image_id(c.image) if c.ever_started else "",
            "ready": False,
            "restartCount": c.restart_count,
            "started": False,
            "lastState": {"terminated": dict(c.last_term)} if c.last_term else {},
        }
        if c.container_id and c.state in ("running", "done", "crashbackoff"):
            st["containerID"] = c.container_id
        if c.state == "running":
            st["state"] = {"running": {"startedAt": c.started_iso}}
            st["started"] = True
            st["ready"] = (not self._crashes(c)) and (c.init is False) and t >= rt.t_seen + self._ready_delay()
            if c.init:
                st["ready"] = False
        elif c.state == "done":
            st["state"] = {"terminated": dict(c.term)}
            st["ready"] = bool(c.init and c.term["exitCode"] == 0)
        else:
            reason, message = c.waiting
            if c.state == "idle" or (rt.started is None):
                reason, message = ("PodInitializing" if init_pending else "ContainerCreating"), None
            if c.state in ("pulling", "creating") and not c.last_term:
                reason, message = "ContainerCreating", None
            waiting = {"reason": reason}
            if message:
                waiting["message"] = message
            st["state"] = {"waiting": waiting}
        return st

    def _write_status(self, pod, rt, t):
        meta, spec = pod["metadata"], pod.get("spec") or {}
        policy = spec.get("restartPolicy", "Always")
        init_specs = spec.get("initContainers") or []
        if rt.started is None:
            init_rts = [ContainerRT(c, True) for c in init_specs]
            main_rts = [ContainerRT(c, False) for c in spec.get("containers") or []]
        else:
            init_rts, main_rts = rt.init, rt.main
        init_done = all(c.state == "done" and c.term and c.term["exitCode"] == 0 for c in init_rts)
        init_failed = any(c.state == "done" and c.term and c.term["exitCode"] != 0 for c in init_rts)
        init_statuses = [self._container_status(c, rt, t, True) for c in init_rts]
        main_statuses = [self._container_status(c, rt, t, bool(init_rts) and not init_done) for c in main_rts]
        all_done = bool(main_rts) and all(c.state == "done" for c in main_rts)
        if init_failed and policy == "Never":
            phase = "Failed"
        elif all_done and policy != "Always":
            phase = "Succeeded" if all(c.term["exitCode"] == 0 for c in main_rts) else "Failed"
        elif init_done and rt.started is not None and any(c.ever_started for c in main_rts):
            phase = "Running"
        else:
            phase = "Pending"
        unready = [s["name"] for s in main_statuses if not s["ready"]]
        incomplete = [c.name for c in init_rts if not (c.state == "done" and c.term and c.term["exitCode"] == 0)]

        def cond(ctype, status, reason=None, message=None):
            prev = rt.cond_times.get(ctype)
            if prev is None or prev[0] != status:
                prev = rt.cond_times[ctype] = (status, now_iso())
            c = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": prev[1]}
            if reason:
                c["reason"] = reason
            if message:
                c["message"] = message
            return c

        conds = []
        conds.append(cond("PodReadyToStartContainers", "True" if rt.started is not None else "False"))
        if incomplete:
            conds.append(cond("Initialized", "False", "ContainersNotInitialized",
                              "containers with incomplete status: [%s]" % " ".join(incomplete)))
        else:
            conds.append(cond("Initialized", "True"))
        if phase in ("Succeeded", "Failed"):
            conds.append(cond("Ready", "False", "PodCompleted"))
            conds.append(cond("ContainersReady", "False", "PodCompleted"))
        elif unready:
            msg = "containers with unready status: [%s]" % " ".join(unready)
            conds.append(cond("Ready", "False", "ContainersNotReady", msg))
            conds.append(cond("ContainersReady", "False", "ContainersNotReady", msg))
        else:
            conds.append(cond("Ready", "True"))
            conds.append(cond("ContainersReady", "True"))
        conds.append(cond("PodScheduled", "True"))
        host_ip = "172.18.0.2"
        new = {
            "phase": phase,
            "conditions": conds,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
            "containerStatuses": main_statuses,
        }
        if rt.started is not None:
            new["podIP"] = rt.ip
            new["podIPs"] = [{"ip": rt.ip}]
            new["startTime"] = rt.start_iso
        if init_specs:
            new["initContainerStatuses"] = init_statuses

        def put(o):
            o["status"] = new

        try:
            self.store.mutate("pods", meta["namespace"], meta["name"], put, subresource="status")
        except NotFound:
            pass


def _claims(spec):
    out = []
    for vol in spec.get("volumes") or []:
        pvc = vol.get("persistentVolumeClaim")
        if isinstance(pvc, dict) and pvc.get("claimName"):
            out.append(pvc["claimName"])
    return out
