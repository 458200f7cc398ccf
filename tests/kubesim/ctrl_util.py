"""Helpers shared by the simulator's controllers (test infrastructure).

Quantities, the hashes and random suffixes Kubernetes uses in generated names,
timestamps, conditions and an event recorder that writes core/v1 Events the
way the real components do (deduplicated by increasing ``count``).
"""

import calendar
import hashlib
import json
import random
import re
import threading
import time
from decimal import Decimal, InvalidOperation

from tests.kubesim.store import AlreadyExists, NotFound, now_iso

# -- quantities ----------------------------------------------------------------

_SUFFIX = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_QTY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def quantity(value):
    """Decimal value of a Kubernetes quantity (``500m``, ``2Gi``, ``1e3``, 4); 0 for junk."""
    if value is None or isinstance(value, bool):
        return Decimal(0)
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    m = _QTY.match(str(value).strip())
    if not m:
        return Decimal(0)
    try:
        return Decimal(m.group(1)) * _SUFFIX[m.group(2) or ""]
    except InvalidOperation:
        return Decimal(0)


# -- names and hashes ------------------------------------------------------------

ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


def safe_encode(text):
    return "".join(ALPHANUMS[ord(ch) % len(ALPHANUMS)] for ch in text)


def fnv32a(data):
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template, collision_count=0):
    """The form of ``pod-template-hash`` / ``controller-revision-hash`` suffixes."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


def random_suffix(n=5):
    return "".join(random.choice(ALPHANUMS) for _u in range(n))


def hex_id(n=64):
    return "".join(random.choice("0123456789abcdef") for _u in range(n))


# -- images ----------------------------------------------------------------------


def normalize_image(image):
    """``nginx:1.25`` -> ``docker.io/library/nginx:1.25`` (what containerd reports)."""
    image = image or ""
    name, digest = (image.split("@", 1) + [None])[:2]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        name += ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = "docker.io/library/" + name
    elif not ("." in first or ":" in first or first == "localhost"):
        name = "docker.io/" + name
    return name + ("@" + digest if digest else "")


def image_digest(image):
    return "sha256:" + hashlib.sha256(normalize_image(image).encode()).hexdigest()


def image_id(image):
    full = normalize_image(image)
    repo = full.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: -(len(last) - last.index(":"))]
    return repo + "@" + image_digest(image)


def go_duration(seconds):
    """Go's ``time.Duration`` String() for whole seconds: 10s, 1m20s, 5m0s."""
    seconds = int(seconds)
    if seconds < 60:
        return "%ds" % seconds
    m, s = divmod(seconds, 60)
    if m < 60:
        return "%dm%ds" % (m, s)
    h, m = divmod(m, 60)
    return "%dh%dm%ds" % (h, m, s)


# -- conditions ------------------------------------------------------------------


def get_condition(status, ctype):
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def pod_ready(pod):
    st = pod.get("status") or {}
    c = get_condition(st, "Ready")
    return st.get("phase") == "Running" and c is not None and c.get("status") == "True"


def pod_ready_since(pod):
    c = get_condition(pod.get("status"), "Ready")
    if not c or c.get("status") != "True":
        return None
    return parse_iso(c.get("lastTransitionTime"))


def pod_available(pod, min_ready_seconds, now=None):
    if not pod_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    since = pod_ready_since(pod)
    return since is not None and (now or time.time()) - since >= min_ready_seconds


def parse_iso(text):
    if not text:
        return None
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except (ValueError, OverflowError):
        return None


def is_controlled_by(obj, owner_uid):
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("uid") == owner_uid and ref.get("controller"):
            return True
    return False


def owner_ref(owner, api_version, kind):
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_matches(selector, labels):
    """A ``LabelSelector`` (matchLabels + matchExpressions) against a label map."""
    if not selector:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# -- events ----------------------------------------------------------------------

KIND_API = {
    "pods": ("v1", "Pod"),
    "persistentvolumeclaims": ("v1", "PersistentVolumeClaim"),
    "nodes": ("v1", "Node"),
    "apps/statefulsets": ("apps/v1", "StatefulSet"),
    "apps/deployments": ("apps/v1", "Deployment"),
    "apps/replicasets": ("apps/v1", "ReplicaSet"),
    "batch/jobs": ("batch/v1", "Job"),
}


class EventRecorder:
    """Writes ``events`` the way client-go's recorder does: a repeated event
    (same object, field path, reason, message, type, component) bumps
    ``count`` and ``lastTimestamp`` of the existing Event."""

    def __init__(self, store, node_name):
        self.store = store
        self.node_name = node_name
        self._seen = {}  # dedupe key -> (namespace, event name)
        self._lock = threading.Lock()
        self._last_nano = 0

    def _name(self, obj_name):
        with self._lock:
            nano = max(time.time_ns(), self._last_nano + 1)
            self._last_nano = nano
        return "%s.%x" % (obj_name, nano)

    def record(self, resource, obj, etype, reason, message, component, field_path=None):
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        if not namespace_active(self.store, ns):
            return None
        api_version, kind = KIND_API.get(resource, (obj.get("apiVersion", "v1"), obj.get("kind", "")))
        key = (meta.get("uid"), field_path, reason, message, etype, component)
        ts = now_iso()
        with self._lock:
            existing = self._seen.get(key)
        if existing is not None:
            def bump(ev):
                ev["count"] = int(ev.get("count") or 1) + 1
                ev["lastTimestamp"] = ts

            try:
                return self.store.mutate("events", existing[0], existing[1], bump)
            except NotFound:
                pass
        involved = {
            "apiVersion": api_version,
            "kind": kind,
            "name": meta["name"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if meta.get("namespace"):
            involved["namespace"] = meta["namespace"]
        if field_path:
            involved["fieldPath"] = field_path
        source = {"component": component}
        if component == "kubelet":
            source["host"] = self.node_name
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": self._name(meta["name"]), "namespace": ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": etype,
            "count": 1,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "eventTime": None,
            "source": source,
            "reportingComponent": component,
            "reportingInstance": self.node_name if component == "kubelet" else "",
        }
        try:
            out = self.store.create("events", ev)
        except AlreadyExists:
            return None
        with self._lock:
            self._seen[key] = (ns, ev["metadata"]["name"])
        return out

    def forget_uid(self, uid):
        with self._lock:
            for key in [k for k in self._seen if k[0] == uid]:
                del self._seen[key]


def namespace_active(store, ns):
    """Objects may be created only in a namespace that exists and is not terminating."""
    if not ns:
        return True
    try:
        obj = store.get("namespaces", None, ns)
    except NotFound:
        return False
    return not obj["metadata"].get("deletionTimestamp")


def now():
    return now_iso()
