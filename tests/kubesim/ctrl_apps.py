"""Workload controllers of the Kubernetes API simulator (test infrastructure):
StatefulSet, Deployment, ReplicaSet and Job, following the algorithms of the
real kube-controller-manager closely enough that ``kubectl rollout status``
waits and succeeds exactly as it does against a real cluster."""

import copy
import json
import math
import time

from tests.kubesim.ctrl_util import (
    get_condition,
    is_controlled_by,
    namespace_active,
    now,
    owner_ref,
    parse_iso,
    pod_available,
    pod_ready,
    random_suffix,
    selector_matches,
    template_hash,
)
from tests.kubesim.store import AlreadyExists, NotFound
from tests.kubesim.validation import apply_defaults

REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"


def _replicas(spec):
    r = spec.get("replicas")
    return 1 if r is None else int(r)


def _active(pod):
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in (
        "Succeeded", "Failed")


def _strip_hash(template):
    t = copy.deepcopy(template or {})
    labels = (t.get("metadata") or {}).get("labels") or {}
    labels.pop("pod-template-hash", None)
    (t.get("metadata") or {}).pop("creationTimestamp", None)
    return json.dumps(t, sort_keys=True)


def _omit_zero(status, fields):
    for f in fields:
        if not status.get(f):
            status.pop(f, None)
    return status


def _scaled(value, total, round_up):
    if value is None:
        return 0
    if isinstance(value, str) and value.endswith("%"):
        frac = int(value[:-1]) * total / 100.0
        return int(math.ceil(frac)) if round_up else int(math.floor(frac))
    return int(value)


class AppsControllers:
    def __init__(self, ctl):
        self.ctl = ctl
        self.store = ctl.store
        self.events = ctl.events
        self._progress = {}  # deployment uid -> wall time of the last Progressing update

    # -- shared ---------------------------------------------------------------------
    def _owned_pods(self, owner):
        uid = owner["metadata"]["uid"]
        pods, _u = self.store.list("pods", owner["metadata"]["namespace"], lambda o: is_controlled_by(o, uid))
        return pods

    def _adopt_orphans(self, owner, api_version, kind):
        """Take the pods that match the owner's selector and have no controller (as the real controllers do)."""
        meta = owner["metadata"]
        selector = (owner.get("spec") or {}).get("selector")

        def orphan(o):
            refs = o["metadata"].get("ownerReferences") or []
            return (not o["metadata"].get("deletionTimestamp") and not any(r.get("controller") for r in refs)
                    and selector_matches(selector, o["metadata"].get("labels")))

        def adopt(o):
            o["metadata"]["ownerReferences"] = (o["metadata"].get("ownerReferences") or []) + [
                owner_ref(owner, api_version, kind)]

        for pod in self.store.list("pods", meta["namespace"], orphan)[0]:
            try:
                self.store.mutate("pods", meta["namespace"], pod["metadata"]["name"], adopt)
            except NotFound:
                pass

    def _new_pod(self, owner, api_version, kind, template, name=None, generate=None):
        tmeta = copy.deepcopy(template.get("metadata") or {})
        tmeta.pop("creationTimestamp", None)
        meta = {
            "namespace": owner["metadata"]["namespace"],
            "labels": dict(tmeta.get("labels") or {}),
            "ownerReferences": [owner_ref(owner, api_version, kind)],
        }
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        if tmeta.get("finalizers"):
            meta["finalizers"] = list(tmeta["finalizers"])
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = generate
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template.get("spec") or {})}
        return pod

    def _create_pod(self, pod):
        ns = pod["metadata"]["namespace"]
        if not namespace_active(self.store, ns):
            return None
        apply_defaults("Pod", pod, self.store)
        if "name" in pod["metadata"]:
            return self.store.create("pods", pod)
        for _u in range(10):
            pod["metadata"]["name"] = pod["metadata"]["generateName"] + random_suffix()
            try:
                return self.store.create("pods", pod)
            except AlreadyExists:
                continue
        return None

    def _delete(self, resource, obj):
        try:
            self.store.delete(resource, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            return True
        except NotFound:
            return False

    def _set_status(self, resource, obj, status):
        meta = obj["metadata"]

        def put(o):
            o["status"] = status

        return self.store.mutate(resource, meta["namespace"], meta["name"], put, subresource="status")

    # -- StatefulSet ---------------------------------------------------------------------
    def _revision(self, sts, template, number):
        """Find or create the ControllerRevision for ``template``; return its name."""
        meta = sts["metadata"]
        name = "%s-%s" % (meta["name"], template_hash(template))
        if not self.store.exists("apps/controllerrevisions", meta["namespace"], name):
            labels = dict(((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
            labels["controller.kubernetes.io/hash"] = name[len(meta["name"]) + 1:]
            rev = {
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "labels": labels,
                    "ownerReferences": [owner_ref(sts, "apps/v1", "StatefulSet")],
                },
                "data": {"spec": {"template": dict(copy.deepcopy(template), **{"$patch": "replace"})}},
                "revision": number,
            }
            if namespace_active(self.store, meta["namespace"]):
                try:
                    self.store.create("apps/controllerrevisions", rev)
                except AlreadyExists:
                    pass
        return name

    def _revision_template(self, ns, name):
        try:
            rev = self.store.get("apps/controllerrevisions", ns, name)
        except NotFound:
            return None
        tmpl = copy.deepcopy(((rev.get("data") or {}).get("spec") or {}).get("template"))
        if isinstance(tmpl, dict):
            tmpl.pop("$patch", None)
        return tmpl

    def _sts_claims(self, sts, ordinal):
        meta, spec = sts["metadata"], sts.get("spec") or {}
        out = []
        for vct in spec.get("volumeClaimTemplates") or []:
            vname = (vct.get("metadata") or {}).get("name")
            out.append((vname, "%s-%s-%d" % (vname, meta["name"], ordinal), vct))
        return out

    def _ensure_claims(self, sts, ordinal, pod_name):
        meta, spec = sts["metadata"], sts.get("spec") or {}
        ns = meta["namespace"]
        policy = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        for _vname, claim, vct in self._sts_claims(sts, ordinal):
            if self.store.exists("persistentvolumeclaims", ns, claim):
                continue
            vmeta = copy.deepcopy(vct.get("metadata") or {})
            labels = dict(vmeta.get("labels") or {})
            labels.update((spec.get("selector") or {}).get("matchLabels") or {})
            pmeta = {"name": claim, "namespace": ns, "labels": labels}
            if vmeta.get("annotations"):
                pmeta["annotations"] = dict(vmeta["annotations"])
            if policy.get("whenDeleted") == "Delete":
                pmeta["ownerReferences"] = [dict(owner_ref(sts, "apps/v1", "StatefulSet"))]
            pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": pmeta,
                   "spec": copy.deepcopy(vct.get("spec") or {}), "status": {"phase": "Pending"}}
            apply_defaults("PersistentVolumeClaim", pvc, self.store)
            try:
                self.store.create("persistentvolumeclaims", pvc)
                self.events.record("apps/statefulsets", sts, "Normal", "SuccessfulCreate",
                                   "create Claim %s Pod %s in StatefulSet %s success" % (claim, pod_name, meta["name"]),
                                   "statefulset-controller")
            except AlreadyExists:
                pass

    def _sts_pod(self, sts, ordinal, revision, template):
        meta, spec = sts["metadata"], sts.get("spec") or {}
        name = "%s-%d" % (meta["name"], ordinal)
        pod = self._new_pod(sts, "apps/v1", "StatefulSet", template, name=name)
        labels = pod["metadata"]["labels"]
        labels["controller-revision-hash"] = revision
        labels["statefulset.kubernetes.io/pod-name"] = name
        labels["apps.kubernetes.io/pod-index"] = str(ordinal)
        pspec = pod["spec"]
        pspec["hostname"] = name
        if spec.get("serviceName"):
            pspec["subdomain"] = spec["serviceName"]
        vols = list(pspec.get("volumes") or [])
        for vname, claim, _u in self._sts_claims(sts, ordinal):
            vols = [v for v in vols if v.get("name") != vname]
            vols.append({"name": vname, "persistentVolumeClaim": {"claimName": claim}})
        if vols:
            pspec["volumes"] = vols
        return pod

    def reconcile_statefulset(self, ns, name):
        sts = self.store.get("apps/statefulsets", ns, name)
        meta, spec = sts["metadata"], sts.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        status = sts.get("status") or {}
        replicas = _replicas(spec)
        start = int(((spec.get("ordinals") or {}).get("start")) or 0)
        template = spec.get("template") or {}
        strategy = spec.get("updateStrategy") or {"type": "RollingUpdate"}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        partition = int(((strategy.get("rollingUpdate") or {}).get("partition")) or 0)
        monotonic = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        min_ready = int(spec.get("minReadySeconds") or 0)

        existing = list(self.store.list("apps/controllerrevisions", ns,
                                        lambda o: is_controlled_by(o, meta["uid"]))[0])
        number = max([int(r.get("revision") or 0) for r in existing] + [0])
        update_rev = "%s-%s" % (name, template_hash(template))
        known = {r["metadata"]["name"]: r for r in existing}
        if update_rev not in known:
            number += 1
        update_rev = self._revision(sts, template, number if update_rev not in known else
                                    int(known[update_rev].get("revision") or 1))
        current_rev = status.get("currentRevision") or update_rev
        current_tmpl = self._revision_template(ns, current_rev) if current_rev != update_rev else template

        self._adopt_orphans(sts, "apps/v1", "StatefulSet")
        pods = {}
        for p in self._owned_pods(sts):
            pname = p["metadata"]["name"]
            suffix = pname[len(name) + 1:] if pname.startswith(name + "-") else ""
            if suffix.isdigit():
                pods[int(suffix)] = p

        def revision_of(p):
            return (p["metadata"].get("labels") or {}).get("controller-revision-hash")

        def finish():
            self._sts_status(sts, pods, current_rev, update_rev, rolling, min_ready)

        wanted = range(start, start + replicas)
        # create missing pods / recreate failed ones, in order
        for ordinal in wanted:
            pod = pods.get(ordinal)
            if pod is not None and (pod.get("status") or {}).get("phase") == "Failed":
                if self._delete("pods", pod):
                    self.events.record("apps/statefulsets", sts, "Normal", "SuccessfulDelete",
                                       "delete Pod %s in StatefulSet %s successful" % (pod["metadata"]["name"], name),
                                       "statefulset-controller")
                pods.pop(ordinal)
                pod = None
            if pod is None:
                use_current = (rolling and ordinal < start + partition and current_tmpl is not None
                               and current_rev != update_rev)
                rev, tmpl = (current_rev, current_tmpl) if use_current else (update_rev, template)
                pname = "%s-%d" % (name, ordinal)
                self._ensure_claims(sts, ordinal, pname)
                try:
                    created = self._create_pod(self._sts_pod(sts, ordinal, rev, tmpl))
                except AlreadyExists:
                    created = None
                if created is not None:
                    pods[ordinal] = created
                    self.events.record("apps/statefulsets", sts, "Normal", "SuccessfulCreate",
                                       "create Pod %s in StatefulSet %s successful" % (pname, name),
                                       "statefulset-controller")
                if monotonic:
                    return finish()
                continue
            if monotonic and not pod_ready(pod):
                return finish()
        # scale down from the highest ordinal
        condemned = sorted((o for o in pods if o not in wanted), reverse=True)
        for ordinal in condemned:
            pod = pods[ordinal]
            if monotonic and not pod_ready(pod) and ordinal != condemned[-1] and any(
                    not pod_ready(pods[o]) for o in condemned if o < ordinal):
                return finish()
            if self._delete("pods", pod):
                self.events.record("apps/statefulsets", sts, "Normal", "SuccessfulDelete",
                                   "delete Pod %s in StatefulSet %s successful" % (pod["metadata"]["name"], name),
                                   "statefulset-controller")
            pods.pop(ordinal)
            if (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get("whenScaled") == "Delete":
                for _v, claim, _t in self._sts_claims(sts, ordinal):
                    try:
                        self.store.delete("persistentvolumeclaims", ns, claim)
                    except NotFound:
                        pass
            if monotonic:
                return finish()
        # rolling update: highest ordinal first, one at a time, each back to Ready before the next
        if rolling:
            for ordinal in sorted((o for o in pods if o in wanted and o >= start + partition), reverse=True):
                pod = pods[ordinal]
                if revision_of(pod) != update_rev:
                    if self._delete("pods", pod):
                        self.events.record("apps/statefulsets", sts, "Normal", "SuccessfulDelete",
                                           "delete Pod %s in StatefulSet %s successful"
                                           % (pod["metadata"]["name"], name), "statefulset-controller")
                    pods.pop(ordinal)
                    break
                if not pod_ready(pod):
                    break
        return finish()

    def _sts_status(self, sts, pods, current_rev, update_rev, rolling, min_ready):
        meta = sts["metadata"]
        plist = list(pods.values())

        def rev(p):
            return (p["metadata"].get("labels") or {}).get("controller-revision-hash")

        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(plist),
            "readyReplicas": sum(1 for p in plist if pod_ready(p)),
            "currentReplicas": sum(1 for p in plist if rev(p) == current_rev),
            "updatedReplicas": sum(1 for p in plist if rev(p) == update_rev),
            "availableReplicas": sum(1 for p in plist if pod_available(p, min_ready)),
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
        }
        n = status["replicas"]
        if rolling and status["updatedReplicas"] == n and status["readyReplicas"] == n:
            status["currentRevision"] = update_rev
            status["currentReplicas"] = status["updatedReplicas"]
        if min_ready:
            for p in plist:
                if pod_ready(p) and not pod_available(p, min_ready):
                    self.ctl.schedule(("apps/statefulsets", meta["namespace"], meta["name"]), 0.5)
                    break
        _omit_zero(status, ("readyReplicas", "currentReplicas", "updatedReplicas"))
        self._set_status("apps/statefulsets", sts, status)

    # -- ReplicaSet -------------------------------------------------------------------------
    def reconcile_replicaset(self, ns, name):
        rs = self.store.get("apps/replicasets", ns, name)
        meta, spec = rs["metadata"], rs.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        replicas = _replicas(spec)
        min_ready = int(spec.get("minReadySeconds") or 0)
        pods = [p for p in self._owned_pods(rs) if _active(p)]
        diff = len(pods) - replicas
        if diff < 0:
            for _u in range(-diff):
                pod = self._new_pod(rs, "apps/v1", "ReplicaSet", spec.get("template") or {}, generate=name + "-")
                created = self._create_pod(pod)
                if created is None:
                    break
                pods.append(created)
                self.events.record("apps/replicasets", rs, "Normal", "SuccessfulCreate",
                                   "Created pod: %s" % created["metadata"]["name"], "replicaset-controller")
        elif diff > 0:
            def rank(p):
                st = p.get("status") or {}
                return (
                    1 if (p.get("spec") or {}).get("nodeName") else 0,
                    {"Pending": 0, "Unknown": 1, "Running": 2}.get(st.get("phase"), 0),
                    1 if pod_ready(p) else 0,
                    -(parse_iso(p["metadata"].get("creationTimestamp")) or 0),
                )

            for pod in sorted(pods, key=rank)[:diff]:
                if self._delete("pods", pod):
                    self.events.record("apps/replicasets", rs, "Normal", "SuccessfulDelete",
                                       "Deleted pod: %s" % pod["metadata"]["name"], "replicaset-controller")
                pods.remove(pod)
        selector_labels = ((spec.get("selector") or {}).get("matchLabels") or {})
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(
                1 for p in pods
                if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector_labels.items())),
            "readyReplicas": sum(1 for p in pods if pod_ready(p)),
            "availableReplicas": sum(1 for p in pods if pod_available(p, min_ready)),
            "observedGeneration": meta.get("generation", 1),
        }
        if min_ready and any(pod_ready(p) and not pod_available(p, min_ready) for p in pods):
            self.ctl.schedule(("apps/replicasets", ns, name), 0.5)
        _omit_zero(status, ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"))
        self._set_status("apps/replicasets", rs, status)

    # -- Deployment -------------------------------------------------------------------------
    def _scale_rs(self, d, rs, count, max_surge):
        old = _replicas(rs.get("spec") or {})
        meta = rs["metadata"]
        desired = _replicas(d.get("spec") or {})

        def scale(o):
            o["spec"]["replicas"] = count
            ann = o["metadata"].setdefault("annotations", {})
            ann[DESIRED] = str(desired)
            ann[MAX_REPLICAS] = str(desired + max_surge)

        out = self.store.mutate("apps/replicasets", meta["namespace"], meta["name"], scale)
        if old != count:
            self.events.record("apps/deployments", d, "Normal", "ScalingReplicaSet",
                               "Scaled %s replica set %s from %d to %d"
                               % ("up" if count > old else "down", meta["name"], old, count),
                               "deployment-controller")
        return out

    def reconcile_deployment(self, ns, name):
        d = self.store.get("apps/deployments", ns, name)
        meta, spec = d["metadata"], d.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        replicas = _replicas(spec)
        template = spec.get("template") or {}
        strategy = spec.get("strategy") or {"type": "RollingUpdate"}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        ru = strategy.get("rollingUpdate") or {}
        if rolling:
            max_surge = _scaled(ru.get("maxSurge", "25%"), replicas, True)
            max_unavail = _scaled(ru.get("maxUnavailable", "25%"), replicas, False)
            if max_surge == 0 and max_unavail == 0:
                max_unavail = 1
            max_unavail = min(max_unavail, replicas)
        else:
            max_surge, max_unavail = 0, 0
        rss, _u = self.store.list("apps/replicasets", ns, lambda o: is_controlled_by(o, meta["uid"]))
        key = _strip_hash(template)
        new_rs = next((r for r in rss if _strip_hash((r.get("spec") or {}).get("template")) == key), None)
        old_rss = [r for r in rss if new_rs is None or r["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        old_rss.sort(key=lambda r: (r["metadata"].get("creationTimestamp") or "", r["metadata"]["name"]))
        max_rev = max([int((r["metadata"].get("annotations") or {}).get(REVISION, "0") or 0) for r in rss] + [0])
        progressing_msg = None
        if spec.get("paused"):
            return self._deploy_status(d, rss, new_rs, max_unavail, None)
        if new_rs is None:
            if not namespace_active(self.store, ns):
                return None
            phash = template_hash(template)
            rs_name = "%s-%s" % (name, phash)
            tmpl = copy.deepcopy(template)
            tmpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = phash
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = phash
            if rolling:
                current = sum(_replicas(r.get("spec") or {}) for r in rss)
                initial = max(0, min(replicas, replicas + max_surge - current))
            else:
                initial = 0 if any(_replicas(r.get("spec") or {}) for r in rss) else replicas
            rs = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name,
                    "namespace": ns,
                    "labels": dict(tmpl["metadata"]["labels"]),
                    "annotations": {REVISION: str(max_rev + 1), DESIRED: str(replicas),
                                    MAX_REPLICAS: str(replicas + max_surge)},
                    "ownerReferences": [owner_ref(d, "apps/v1", "Deployment")],
                },
                "spec": {"replicas": initial, "selector": selector, "template": tmpl,
                         "minReadySeconds": int(spec.get("minReadySeconds") or 0)},
            }
            apply_defaults("ReplicaSet", rs, self.store)
            try:
                new_rs = self.store.create("apps/replicasets", rs)
            except AlreadyExists:
                new_rs = self.store.get("apps/replicasets", ns, rs_name)
            else:
                if initial:
                    self.events.record("apps/deployments", d, "Normal", "ScalingReplicaSet",
                                       "Scaled up replica set %s from 0 to %d" % (rs_name, initial),
                                       "deployment-controller")
                progressing_msg = ("NewReplicaSetCreated", 'Created new replica set "%s"' % rs_name)
            rss = list(rss) + [new_rs]
        else:
            rev = int((new_rs["metadata"].get("annotations") or {}).get(REVISION, "0") or 0)
            if rev < max_rev:
                def bump(o):
                    o["metadata"].setdefault("annotations", {})[REVISION] = str(max_rev + 1)

                new_rs = self.store.mutate("apps/replicasets", ns, new_rs["metadata"]["name"], bump)
        new_rev = (new_rs["metadata"].get("annotations") or {}).get(REVISION)
        if (meta.get("annotations") or {}).get(REVISION) != new_rev:
            def set_rev(o):
                o["metadata"].setdefault("annotations", {})[REVISION] = new_rev

            d = self.store.mutate("apps/deployments", ns, name, set_rev)

        new_count = _replicas(new_rs.get("spec") or {})
        if rolling:
            active_old = [r for r in old_rss if _replicas(r.get("spec") or {}) > 0]
            if not active_old:
                if new_count != replicas:
                    new_rs = self._scale_rs(d, new_rs, replicas, max_surge)
            else:
                # scale up the new replica set within maxSurge
                total = sum(_replicas(r.get("spec") or {}) for r in rss)
                if new_count > replicas:
                    new_rs = self._scale_rs(d, new_rs, replicas, max_surge)
                elif new_count < replicas and total < replicas + max_surge:
                    up = min(replicas + max_surge - total, replicas - new_count)
                    new_rs = self._scale_rs(d, new_rs, new_count + up, max_surge)
                # scale down old replica sets within maxUnavailable
                new_count = _replicas(new_rs.get("spec") or {})
                all_pods = sum(_replicas(r.get("spec") or {}) for r in old_rss) + new_count
                min_available = replicas - max_unavail
                new_unavailable = new_count - int((new_rs.get("status") or {}).get("availableReplicas") or 0)
                max_down = all_pods - min_available - new_unavailable
                if max_down > 0:
                    cleaned = 0
                    for r in active_old:  # unhealthy old replicas first
                        if cleaned >= max_down:
                            break
                        cnt = _replicas(r.get("spec") or {})
                        unhealthy = cnt - int((r.get("status") or {}).get("availableReplicas") or 0)
                        down = min(unhealthy, max_down - cleaned)
                        if down > 0:
                            self._scale_rs(d, r, cnt - down, max_surge)
                            cleaned += down
                    rss, _u = self.store.list("apps/replicasets", ns, lambda o: is_controlled_by(o, meta["uid"]))
                    olds = sorted((r for r in rss if r["metadata"]["uid"] != new_rs["metadata"]["uid"]
                                   and _replicas(r.get("spec") or {}) > 0),
                                  key=lambda r: (r["metadata"].get("creationTimestamp") or "", r["metadata"]["name"]))
                    available = sum(int((r.get("status") or {}).get("availableReplicas") or 0) for r in rss)
                    budget = min(available - min_available, max_down - cleaned)
                    for r in olds:
                        if budget <= 0:
                            break
                        cnt = _replicas(r.get("spec") or {})
                        down = min(cnt, budget)
                        self._scale_rs(d, r, cnt - down, max_surge)
                        budget -= down
        else:
            active_old = [r for r in old_rss if _replicas(r.get("spec") or {}) > 0]
            for r in active_old:
                self._scale_rs(d, r, 0, 0)
            old_pods = [p for r in old_rss for p in self._owned_pods(r)]
            if not active_old and not old_pods and new_count != replicas:
                new_rs = self._scale_rs(d, new_rs, replicas, 0)
        rss, _u = self.store.list("apps/replicasets", ns, lambda o: is_controlled_by(o, meta["uid"]))
        self._cleanup_history(d, rss, new_rs)
        return self._deploy_status(d, rss, new_rs, max_unavail, progressing_msg)

    def _cleanup_history(self, d, rss, new_rs):
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        old = [r for r in rss if r["metadata"]["uid"] != new_rs["metadata"]["uid"]
               and _replicas(r.get("spec") or {}) == 0 and not int((r.get("status") or {}).get("replicas") or 0)]
        old.sort(key=lambda r: int((r["metadata"].get("annotations") or {}).get(REVISION, "0") or 0))
        for r in old[: max(0, len(old) - limit)]:
            self._delete("apps/replicasets", r)

    def _deploy_status(self, d, rss, new_rs, max_unavail, progressing_msg):
        meta, spec = d["metadata"], d.get("spec") or {}
        replicas = _replicas(spec)
        old_status = d.get("status") or {}

        def total(field):
            return sum(int((r.get("status") or {}).get(field) or 0) for r in rss)

        available = total("availableReplicas")
        spec_total = sum(_replicas(r.get("spec") or {}) for r in rss)
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": total("replicas"),
            "updatedReplicas": int(((new_rs or {}).get("status") or {}).get("replicas") or 0) if new_rs else 0,
            "readyReplicas": total("readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": max(0, spec_total - available),
            "conditions": copy.deepcopy(old_status.get("conditions") or []),
        }
        if old_status.get("collisionCount") is not None:
            status["collisionCount"] = old_status["collisionCount"]
        t = now()
        if available >= replicas - max_unavail:
            _set_cond(status, "Available", "True", "MinimumReplicasAvailable",
                      "Deployment has minimum availability.", t)
        else:
            _set_cond(status, "Available", "False", "MinimumReplicasUnavailable",
                      "Deployment does not have minimum availability.", t)
        rs_name = new_rs["metadata"]["name"] if new_rs else None
        deadline = spec.get("progressDeadlineSeconds")
        uid = meta["uid"]
        if progressing_msg:
            _set_cond(status, "Progressing", "True", progressing_msg[0], progressing_msg[1], t, force=True)
            self._progress[uid] = time.time()
        elif new_rs is not None and deadline is not None:
            cur = get_condition(status, "Progressing")
            complete_before = (status["replicas"] == status["updatedReplicas"] and cur is not None
                               and cur.get("reason") == "NewReplicaSetAvailable")
            if cur is None:
                _set_cond(status, "Progressing", "True", "FoundNewReplicaSet",
                          'Found new replica set "%s"' % rs_name, t)
                self._progress[uid] = time.time()
            if not complete_before:
                if (status["updatedReplicas"] == replicas and status["replicas"] == replicas
                        and available == replicas):
                    _set_cond(status, "Progressing", "True", "NewReplicaSetAvailable",
                              'ReplicaSet "%s" has successfully progressed.' % rs_name, t)
                elif _progressed(old_status, status):
                    _set_cond(status, "Progressing", "True", "ReplicaSetUpdated",
                              'ReplicaSet "%s" is progressing.' % rs_name, t, force=True)
                    self._progress[uid] = time.time()
                else:
                    cur = get_condition(status, "Progressing")
                    if cur is not None and cur.get("reason") not in ("ProgressDeadlineExceeded",):
                        since = self._progress.get(uid) or parse_iso(cur.get("lastUpdateTime")) or time.time()
                        left = since + int(deadline) - time.time()
                        if left <= 0:
                            _set_cond(status, "Progressing", "False", "ProgressDeadlineExceeded",
                                      'ReplicaSet "%s" has timed out progressing.' % rs_name, t)
                        else:
                            self.ctl.schedule(("apps/deployments", meta["namespace"], meta["name"]), left + 0.01)
        elif deadline is None:
            status["conditions"] = [c for c in status["conditions"] if c.get("type") != "Progressing"]
        if not status["conditions"]:
            status.pop("conditions")
        _omit_zero(status, ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
                            "unavailableReplicas"))
        return self._set_status("apps/deployments", d, status)

    # -- Job -------------------------------------------------------------------------------
    def reconcile_job(self, ns, name):
        job = self.store.get("batch/jobs", ns, name)
        meta, spec = job["metadata"], job.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return
        status = copy.deepcopy(job.get("status") or {})
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in status.get("conditions") or []):
            return
        completions = spec.get("completions")
        completions = 1 if completions is None else int(completions)
        parallelism = int(spec.get("parallelism") if spec.get("parallelism") is not None else 1)
        backoff = int(spec.get("backoffLimit") if spec.get("backoffLimit") is not None else 6)
        pods = self._owned_pods(job)
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        active = [p for p in pods if _active(p)]
        t = now()
        status.setdefault("startTime", t)
        if spec.get("suspend"):
            return None
        if succeeded >= completions:
            status["conditions"] = (status.get("conditions") or []) + [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t},
            ]
            status["completionTime"] = t
            for p in active:
                self._delete("pods", p)
            active = []
            self.events.record("batch/jobs", job, "Normal", "Completed", "Job completed", "job-controller")
        elif failed > backoff:
            for p in active:
                self._delete("pods", p)
            active = []
            status["conditions"] = (status.get("conditions") or []) + [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastProbeTime": t,
                 "lastTransitionTime": t},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastProbeTime": t,
                 "lastTransitionTime": t},
            ]
            self.events.record("batch/jobs", job, "Warning", "BackoffLimitExceeded",
                               "Job has reached the specified backoff limit", "job-controller")
        else:
            want = min(parallelism, completions - succeeded) - len(active)
            template = copy.deepcopy(spec.get("template") or {})
            labels = template.setdefault("metadata", {}).setdefault("labels", {})
            for k in ("batch.kubernetes.io/controller-uid", "controller-uid"):
                labels.setdefault(k, meta["uid"])
            for k in ("batch.kubernetes.io/job-name", "job-name"):
                labels.setdefault(k, name)
            for _u in range(max(0, want)):
                pod = self._new_pod(job, "batch/v1", "Job", template, generate=name + "-")
                created = self._create_pod(pod)
                if created is None:
                    break
                active.append(created)
                self.events.record("batch/jobs", job, "Normal", "SuccessfulCreate",
                                   "Created pod: %s" % created["metadata"]["name"], "job-controller")
        status["active"] = len(active)
        status["succeeded"] = succeeded
        status["failed"] = failed
        status["ready"] = sum(1 for p in active if pod_ready(p))
        status["terminating"] = 0
        status["uncountedTerminatedPods"] = {}
        _omit_zero(status, ("active", "succeeded", "failed"))
        return self._set_status("batch/jobs", job, status)


def _progressed(old, new):
    def g(s, f):
        return int(s.get(f) or 0)

    old_old = g(old, "replicas") - g(old, "updatedReplicas")
    new_old = g(new, "replicas") - g(new, "updatedReplicas")
    return (g(new, "updatedReplicas") > g(old, "updatedReplicas") or new_old < old_old
            or g(new, "readyReplicas") > g(old, "readyReplicas")
            or g(new, "availableReplicas") > g(old, "availableReplicas"))


def _set_cond(status, ctype, cstatus, reason, message, t, force=False):
    """``SetDeploymentCondition``: keep an identical condition, else replace and append."""
    conds = status.setdefault("conditions", [])
    cur = next((c for c in conds if c.get("type") == ctype), None)
    if cur is not None and cur.get("status") == cstatus and cur.get("reason") == reason:
        if force:
            cur["lastUpdateTime"] = t
            cur["message"] = message
        return
    transition = cur["lastTransitionTime"] if cur is not None and cur.get("status") == cstatus else t
    status["conditions"] = [c for c in conds if c.get("type") != ctype] + [{
        "type": ctype, "status": cstatus, "lastUpdateTime": t, "lastTransitionTime": transition,
        "reason": reason, "message": message,
    }]
