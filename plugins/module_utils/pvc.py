# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizing the PersistentVolumeClaims of a StatefulSet (used by es_pvc_size).

Pure functions over plain API dicts: which claims belong to the StatefulSet,
what to patch (refusing any shrink before anything is patched), and whether
the StorageClass allows expansion.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

try:
    import kubernetes.utils
except ImportError:  # pragma: no cover - the module reports the missing library
    kubernetes = None


def _spec_replicas(obj):
    replicas = (obj.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)


class PvcSizeError(Exception):
    """A sizing request that must be refused before any PVC is patched."""


def parse_size(value, what):
    """``kubernetes.utils.parse_quantity`` with a message naming ``what``."""
    try:
        return kubernetes.utils.parse_quantity(value)
    except (ValueError, TypeError) as exc:
        raise PvcSizeError("%s %r is not a valid Kubernetes quantity: %s" % (what, value, exc))


def statefulset_pvc_names(sts, pvc_names):
    """Names of the existing PVCs of a StatefulSet, in template then ordinal order.

    For each volumeClaimTemplate ``t`` and ordinal ``0..max(spec.replicas, highest existing + 1) - 1``
    the claim is ``<t>-<sts>-<i>``; only names present in ``pvc_names`` are returned. The second
    value lists the expected claims that do not exist yet.
    """
    name = sts["metadata"]["name"]
    claim_templates = (sts.get("spec") or {}).get("volumeClaimTemplates") or []
    templates = [(t.get("metadata") or {}).get("name") for t in claim_templates]
    existing = set(pvc_names)
    highest = -1
    for template in templates:
        prefix = "%s-%s-" % (template, name)
        for pvc in existing:
            suffix = pvc[len(prefix):] if pvc.startswith(prefix) else ""
            if suffix.isdigit() and str(int(suffix)) == suffix:
                highest = max(highest, int(suffix))
    count = max(_spec_replicas(sts), highest + 1)
    found, missing = [], []
    for template in templates:
        for ordinal in range(count):
            pvc = "%s-%s-%d" % (template, name, ordinal)
            (found if pvc in existing else missing).append(pvc)
    return found, missing


def pvc_request(pvc):
    return ((((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))


def plan_pvc_sizes(pvcs, size, namespace):
    """Decide what to patch. ``pvcs`` are PVC dicts; returns ``[{name, old, new, change}]``.

    Raises ``PvcSizeError`` naming ``disk_size``, the PVC and both sizes when any PVC would
    shrink, so that nothing is patched when one of them is refused.
    """
    wanted = parse_size(size, "disk_size")
    plan = []
    for pvc in pvcs:
        name = pvc["metadata"]["name"]
        old = pvc_request(pvc)
        if old is None:
            raise PvcSizeError("PVC %s/%s has no spec.resources.requests.storage" % (namespace, name))
        current = parse_size(old, "storage request of PVC %s/%s" % (namespace, name))
        if wanted < current:
            raise PvcSizeError(
                "disk_size %s is smaller than the current size %s of PVC %s/%s: "
                "a PersistentVolumeClaim cannot shrink" % (size, old, namespace, name))
        plan.append(dict(name=name, old=old, new=size if wanted > current else old, change=wanted > current))
    return plan


def default_storage_class(classes):
    for sc in classes:
        annotations = (sc.get("metadata") or {}).get("annotations") or {}
        if any(str(annotations.get(a, "")).lower() == "true" for a in DEFAULT_CLASS_ANNOTATIONS):
            return sc
    return None


def check_expandable(pvcs, classes, namespace):
    """Raise ``PvcSizeError`` unless every PVC's StorageClass has ``allowVolumeExpansion: true``."""
    by_name = dict(((sc.get("metadata") or {}).get("name"), sc) for sc in classes)
    for pvc in pvcs:
        name = pvc["metadata"]["name"]
        class_name = (pvc.get("spec") or {}).get("storageClassName")
        if class_name is None:
            sc = default_storage_class(classes)
            if sc is None:
                raise PvcSizeError("PVC %s/%s has no storageClassName and the cluster has no default StorageClass: "
                                   "its volume cannot be expanded" % (namespace, name))
        elif class_name == "":
            raise PvcSizeError("PVC %s/%s is bound without a StorageClass (storageClassName \"\"): "
                               "its volume cannot be expanded" % (namespace, name))
        else:
            sc = by_name.get(class_name)
            if sc is None:
                raise PvcSizeError("StorageClass %s of PVC %s/%s not found: cannot expand the volume" % (
                    class_name, namespace, name))
        if sc.get("allowVolumeExpansion") is not True:
            raise PvcSizeError("StorageClass %s of PVC %s/%s does not allow volume expansion "
                               "(allowVolumeExpansion is not true): cannot resize to the requested disk_size" % (
                                   sc["metadata"]["name"], namespace, name))


def pvc_capacity(pvc):
    return (((pvc.get("status") or {}).get("capacity") or {}).get("storage"))


def capacity_reached(pvc, size):
    """Whether the PVC's ``status.capacity.storage`` is at least ``size``."""
    capacity = pvc_capacity(pvc)
    if capacity is None:
        return False
    return parse_size(capacity, "capacity") >= parse_size(size, "disk_size")


def resize_conditions(pvc):
    return ["%s=%s" % (c.get("type"), c.get("status")) for c in (pvc.get("status") or {}).get("conditions") or []]


def check_bound(pvcs, namespace):
    """Raise ``PvcSizeError`` unless every PVC is ``Bound``: Kubernetes resizes only bound claims."""
    for pvc in pvcs:
        phase = (pvc.get("status") or {}).get("phase")
        if phase != "Bound":
            raise PvcSizeError("PVC %s/%s is not bound (phase %s): Kubernetes only resizes bound claims, "
                               "so disk_size cannot be applied yet" % (namespace, pvc["metadata"]["name"], phase))
