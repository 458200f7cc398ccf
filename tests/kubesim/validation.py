"""Defaulting and validation the simulated API server applies, with the
messages a real server gives, worded as v1.34 words them (test infrastructure)."""

import base64
import copy
import json
import re
from decimal import Decimal, InvalidOperation

from tests.kubesim.ctrl_util import selector_matches

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end "
    "with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation "
    "is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
STS_FORBIDDEN = (  # v1.34 wording; revisionHistoryLimit may change since v1.34
    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
    "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
    "are forbidden"
)
STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
               "persistentVolumeClaimRetentionPolicy", "minReadySeconds")

STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage", "storage", "pods"}


class Cause:
    def __init__(self, field, reason, message):
        self.field = field
        self.reason = reason  # FieldValueInvalid, FieldValueRequired, FieldValueForbidden, ...
        self.message = message

    def text(self):
        return "%s: %s" % (self.field, self.message) if self.field else self.message


def invalid(field, value, detail):
    return Cause(field, "FieldValueInvalid", "Invalid value: %s: %s" % (_go_value(value), detail))


def required(field, detail=""):
    return Cause(field, "FieldValueRequired", "Required value" + (": " + detail if detail else ""))


def forbidden(field, detail):
    return Cause(field, "FieldValueForbidden", "Forbidden: " + detail)


class GoJSON(str):
    """A bad value already rendered as the real server renders it."""


def _go_value(value):
    """A bad value as v1.34's field errors print it: strings quoted, numbers
    and booleans plain, anything else as JSON (``["10.96.9.9"]``)."""
    if isinstance(value, GoJSON):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # as Go escapes them


# -- quantities ------------------------------------------------------------------

_SUFFIX = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
}
_QTY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value):
    """Decimal value of a Kubernetes quantity, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = _QTY.match(value.strip())
    if not m:
        return None
    try:
        return Decimal(m.group(1)) * Decimal(_SUFFIX[m.group(2) or ""])
    except InvalidOperation:
        return None


QUANTITY_MSG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


# -- defaulting ------------------------------------------------------------------


def _image_pull_policy(image):
    last = (image or "").rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def default_pod_spec(spec, is_pod=False):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("imagePullPolicy", _image_pull_policy(c.get("image")))
            res = c.setdefault("resources", {})
            if is_pod and isinstance(res, dict) and isinstance(res.get("limits"), dict):
                requests = res.setdefault("requests", {})
                for name, qty in res["limits"].items():
                    requests.setdefault(name, qty)
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                pr = c.get(probe)
                if isinstance(pr, dict):
                    pr.setdefault("timeoutSeconds", 1)
                    pr.setdefault("periodSeconds", 10)
                    pr.setdefault("successThreshold", 1)
                    pr.setdefault("failureThreshold", 3)
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        for src in ("configMap", "secret"):
            if isinstance(v.get(src), dict):
                v[src].setdefault("defaultMode", 420)
    return spec


def _default_template(obj):
    tmpl = obj.setdefault("spec", {}).setdefault("template", {})
    if isinstance(tmpl, dict):
        tmpl.setdefault("metadata", {})
        if isinstance(tmpl.get("metadata"), dict):
            tmpl["metadata"].setdefault("creationTimestamp", None)
        default_pod_spec(tmpl.setdefault("spec", {}))


def apply_defaults(kind, obj, store=None):
    """Defaults a real API server fills in (only fields clients see)."""
    spec = obj.get("spec")
    if kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind == "Secret":
        # stringData is write-only: the server merges it into data (base64).
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict):
            data = obj.get("data") or {}
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode("utf-8")).decode("ascii")
            obj["data"] = data
        obj.setdefault("type", "Opaque")
    elif kind == "Pod" and isinstance(spec, dict):
        default_pod_spec(spec, is_pod=True)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        obj["status"].setdefault("qosClass", _qos(spec))
    elif kind == "StatefulSet" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("podManagementPolicy", "OrderedReady")
        us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if isinstance(us, dict) and us.get("type", "RollingUpdate") == "RollingUpdate":
            us.setdefault("type", "RollingUpdate")
            us.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
        _default_template(obj)
        for vct in spec.get("volumeClaimTemplates") or []:
            if isinstance(vct, dict):
                vct.setdefault("apiVersion", "v1")
                vct.setdefault("kind", "PersistentVolumeClaim")
                vct.setdefault("metadata", {}).setdefault("creationTimestamp", None)
                if isinstance(vct.get("spec"), dict):
                    vct["spec"].setdefault("volumeMode", "Filesystem")
                vct.setdefault("status", {"phase": "Pending"})
    elif kind == "Deployment" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        strat = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if isinstance(strat, dict) and strat.setdefault("type", "RollingUpdate") == "RollingUpdate":
            ru = strat.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _default_template(obj)
    elif kind == "ReplicaSet" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _default_template(obj)
    elif kind == "Job" and isinstance(spec, dict):
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("manualSelector", False) if "selector" in spec else None
        _default_template(obj)
        spec["template"]["spec"]["restartPolicy"] = spec["template"]["spec"].get("restartPolicy", "Never")
    elif kind == "Service":
        if isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            if spec["type"] in ("NodePort", "LoadBalancer"):
                spec.setdefault("externalTrafficPolicy", "Cluster")
            if spec["type"] == "LoadBalancer":
                spec.setdefault("allocateLoadBalancerNodePorts", True)
            for p in spec.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
                    p.setdefault("targetPort", p.get("port"))
            obj.setdefault("status", {}).setdefault("loadBalancer", {})
        for ingress in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if isinstance(ingress, dict) and ingress.get("ip"):
                ingress.setdefault("ipMode", "VIP")  # the LoadBalancerIPMode feature (GA in v1.32)
    elif kind == "PersistentVolumeClaim" and isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
        if "storageClassName" not in spec and store is not None:
            classes, _u = store.list("storage.k8s.io/storageclasses")
            for sc in classes:
                if sc["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true":
                    spec["storageClassName"] = sc["metadata"]["name"]
                    break
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif kind == "StorageClass":
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")
    return obj


def _qos(spec):
    requests, limits, containers = False, True, spec.get("containers") or []
    for c in containers:
        res = c.get("resources") or {} if isinstance(c, dict) else {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            requests = True
        for r in ("cpu", "memory"):
            if r not in lim or parse_quantity(req.get(r, lim.get(r))) != parse_quantity(lim.get(r)):
                limits = False
    if not requests:
        return "BestEffort"
    return "Guaranteed" if limits else "Burstable"


# -- validation ------------------------------------------------------------------


def validate_name(kind, name, generate_name=None):
    if not name:
        if generate_name:
            return []
        return [required("metadata.name", "name or generateName is required")]
    causes = []
    if kind in ("Namespace",):
        if len(name) > 63:
            causes.append(invalid("metadata.name", name, "must be no more than 63 characters"))
        elif not DNS1123_LABEL.match(name):
            causes.append(invalid("metadata.name", name, LABEL_MSG))
    elif kind == "Service":
        if len(name) > 63:
            causes.append(invalid("metadata.name", name, "must be no more than 63 characters"))
        elif not DNS1035_LABEL.match(name):
            causes.append(invalid("metadata.name", name, DNS1035_MSG))
    else:
        if len(name) > 253:
            causes.append(invalid("metadata.name", name, "must be no more than 253 characters"))
        elif not DNS1123_SUBDOMAIN.match(name):
            causes.append(invalid("metadata.name", name, SUBDOMAIN_MSG))
    return causes


def _validate_labels(labels, field):
    causes = []
    if not isinstance(labels, dict):
        return causes
    for k, v in labels.items():
        key = k.rsplit("/", 1)[-1]
        prefix = k.rsplit("/", 1)[0] if "/" in k else None
        if not key or len(key) > 63 or not QUALIFIED_NAME.match(key) or (
            prefix is not None and not DNS1123_SUBDOMAIN.match(prefix)
        ):
            causes.append(
                invalid(
                    field,
                    k,
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                )
            )
        if v is None:
            continue
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
            causes.append(
                invalid(
                    field,
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                )
            )
    return causes


def _validate_resources(res, field):
    causes = []
    if not isinstance(res, dict):
        return causes
    limits = res.get("limits") or {}
    requests = res.get("requests") or {}
    for section, values in (("limits", limits), ("requests", requests)):
        if not isinstance(values, dict):
            continue
        for name, qty in values.items():
            q = parse_quantity(qty)
            path = "%s.%s[%s]" % (field, section, name)
            if q is None:
                causes.append(invalid(path, qty, QUANTITY_MSG))
            elif q < 0:
                causes.append(invalid(path, qty, "must be greater than or equal to 0"))
            elif name not in STANDARD_RESOURCES and "/" in name and q != q.to_integral_value():
                causes.append(invalid(path, qty, "must be an integer"))
    if not isinstance(limits, dict) or not isinstance(requests, dict):
        return causes
    for name, qty in requests.items():
        q = parse_quantity(qty)
        if q is None:
            continue
        extended = name not in STANDARD_RESOURCES and not name.startswith("hugepages-")
        if name in limits:
            lq = parse_quantity(limits[name])
            if lq is None:
                continue
            if extended and q != lq:
                causes.append(  # the real validation names the requests map, not the key
                    invalid("%s.requests" % field, str(qty),
                            "must be equal to %s limit of %s" % (name, limits[name]))
                )
            elif q > lq:
                causes.append(
                    invalid("%s.requests" % field, str(qty),
                            "must be less than or equal to %s limit of %s" % (name, limits[name]))
                )
        elif extended:
            causes.append(required("%s.limits" % field, "Limit must be set for non overcommitable resources"))
    return causes


def validate_pod_spec(spec, field):
    causes = []
    if not isinstance(spec, dict):
        return [required(field)]
    containers = spec.get("containers")
    if not containers:
        causes.append(required(field + ".containers"))
    seen = set()
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            cf = "%s.%s[%d]" % (field, key, i)
            if not isinstance(c, dict):
                continue
            name = c.get("name")
            if not name:
                causes.append(required(cf + ".name"))
            elif not DNS1123_LABEL.match(name):
                causes.append(invalid(cf + ".name", name, LABEL_MSG))
            elif name in seen:
                causes.append(Cause(cf + ".name", "FieldValueDuplicate", 'Duplicate value: "%s"' % name))
            else:
                seen.add(name)
            if not c.get("image"):
                causes.append(required(cf + ".image"))
            causes.extend(_validate_resources(c.get("resources"), cf + ".resources"))
    return causes


def _validate_workload(obj):
    causes = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    selector = spec.get("selector")
    if not selector:
        causes.append(required("spec.selector"))
    tmpl = spec.get("template") or {}
    labels = (tmpl.get("metadata") or {}).get("labels")
    if isinstance(selector, dict) and selector and not selector_matches(selector, labels):
        causes.append(invalid("spec.template.metadata.labels", labels or {},
                              "`selector` does not match template `labels`"))
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    causes.extend(_validate_labels(labels, "spec.template.labels"))
    causes.extend(validate_pod_spec(tmpl.get("spec"), "spec.template.spec"))
    if obj.get("kind") == "StatefulSet":
        causes.extend(_validate_sts_update_strategy(spec.get("updateStrategy") or {}))
    return causes


def _go_struct(**fields):
    """An internal (untagged) Go struct as v1.34's field errors print it:
    JSON with the Go field names, in declaration order."""
    return GoJSON("{%s}" % ",".join("%s:%s" % (json.dumps(k), json.dumps(v, separators=(",", ":")))
                                    for k, v in fields.items()))


def _validate_sts_update_strategy(strategy):
    kind, rolling = strategy.get("type"), strategy.get("rollingUpdate")
    if kind == "OnDelete" and rolling is not None:
        # (maxUnavailable needs the alpha MaxUnavailableStatefulSet feature; without it the field is dropped)
        return [invalid("spec.updateStrategy.rollingUpdate",
                        _go_struct(Partition=int(rolling.get("partition") or 0), MaxUnavailable=None),
                        "only allowed for updateStrategy 'RollingUpdate'")]
    if kind not in ("RollingUpdate", "OnDelete", None):
        ru = None if rolling is None else {"Partition": int(rolling.get("partition") or 0), "MaxUnavailable": None}
        return [invalid("spec.updateStrategy", _go_struct(Type=kind, RollingUpdate=ru),
                        "must be 'RollingUpdate' or 'OnDelete'")]
    return []


def validate(kind, obj, old=None, store=None):
    """Causes for a 422 Invalid; ``old`` is the stored object on update."""
    meta = obj.get("metadata") or {}
    causes = []
    if old is None:
        causes.extend(validate_name(kind, meta.get("name"), meta.get("generateName")))
    causes.extend(_validate_labels(meta.get("labels"), "metadata.labels"))
    if kind in ("StatefulSet", "Deployment", "ReplicaSet"):
        causes.extend(_validate_workload(obj))
    elif kind == "Job":
        tmpl = (obj.get("spec") or {}).get("template") or {}
        causes.extend(validate_pod_spec(tmpl.get("spec"), "spec.template.spec"))
    elif kind == "Pod":
        causes.extend(validate_pod_spec(obj.get("spec"), "spec"))
    elif kind == "PersistentVolumeClaim":
        storage = (((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
        if storage is None:
            causes.append(required("spec.resources[storage]"))
        elif parse_quantity(storage) is None:
            causes.append(invalid("spec.resources.requests[storage]", storage, QUANTITY_MSG))
        if not (obj.get("spec") or {}).get("accessModes"):
            causes.append(required("spec.accessModes", "at least 1 access mode is required"))
    if old is not None:
        causes.extend(validate_update(kind, obj, old))
    return causes


def validate_status_update(kind, new, old):
    """Causes for a 422 Invalid of a write to the ``status`` subresource."""
    causes = []
    if kind == "Service":
        ingress = ((new.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if ingress and (old.get("spec") or {}).get("type") != "LoadBalancer":
            causes.append(forbidden("status.loadBalancer.ingress",
                                    "may only be used when `spec.type` is 'LoadBalancer'"))
    return causes


def validate_update(kind, new, old):
    causes = []
    if kind == "Service":
        causes.extend(_validate_cluster_ips_update(new.get("spec") or {}, old.get("spec") or {}))
    if kind == "StatefulSet":
        a = {k: v for k, v in (new.get("spec") or {}).items() if k not in STS_MUTABLE}
        b = {k: v for k, v in (old.get("spec") or {}).items() if k not in STS_MUTABLE}
        if a != b:
            causes.append(Cause("spec", "FieldValueForbidden", STS_FORBIDDEN))
    if kind in ("Deployment", "ReplicaSet", "StatefulSet"):
        if (new.get("spec") or {}).get("selector") != (old.get("spec") or {}).get("selector") and kind != "StatefulSet":
            causes.append(invalid("spec.selector", (new.get("spec") or {}).get("selector"), "field is immutable"))
    if kind == "PersistentVolumeClaim":
        ns, os_ = copy.deepcopy(new.get("spec") or {}), copy.deepcopy(old.get("spec") or {})
        new_size = parse_quantity(((ns.get("resources") or {}).get("requests") or {}).get("storage"))
        old_size = parse_quantity(((os_.get("resources") or {}).get("requests") or {}).get("storage"))
        for s in (ns, os_):
            s.get("resources", {}).get("requests", {}).pop("storage", None)
            s.pop("volumeAttributesClassName", None)
        if ns != os_:
            causes.append(forbidden("spec", "spec is immutable after creation except resources.requests and "
                                            "volumeAttributesClassName for bound claims"))
        elif new_size is not None and old_size is not None and new_size != old_size:
            if new_size < old_size:
                causes.append(forbidden("spec.resources.requests.storage", "field can not be less than previous value"))
            elif (old.get("status") or {}).get("phase") != "Bound":
                causes.append(forbidden("spec", "spec is immutable after creation except resources.requests and "
                                                "volumeAttributesClassName for bound claims"))
    return causes


def _validate_cluster_ips_update(spec, old_spec):
    """A Service's primary cluster IP may not change once set: the checks of
    ValidateServiceClusterIPsRelatedFields (clusterIPs[0] follows clusterIP;
    the allocator runs it first and stops there) and of
    validateUpgradeDowngradeClusterIPs."""
    if "ExternalName" in (spec.get("type"), old_spec.get("type")):
        return []
    ip, ips, old_ips = spec.get("clusterIP"), spec.get("clusterIPs") or [], old_spec.get("clusterIPs") or []
    if ip and not ips:
        return [required("spec.clusterIPs")]
    if ip and ips[0] != ip:
        return [invalid("spec.clusterIPs", ips, "first value must match `clusterIP`")]
    if not ip and ips:
        return [invalid("spec.clusterIPs", ips, "must be empty when `clusterIP` is not specified")]
    if ips == old_ips == ["None"] or not old_ips:
        return []
    if not ips:
        return [invalid("spec.clusterIPs[0]", ips, "primary clusterIP can not be unset")]
    changed = range(len(old_ips)) if len(ips) == len(old_ips) else [0]
    return [invalid("spec.clusterIPs[%d]" % i, ips, "may not change once set") for i in changed if ips[i] != old_ips[i]]


def pvc_resize_forbidden(new, old, store):
    """The PersistentVolumeClaimResize admission check (403 Forbidden)."""
    new_size = parse_quantity((((new.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))
    old_size = parse_quantity((((old.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))
    if new_size is None or old_size is None or new_size <= old_size:
        return None
    sc_name = (old.get("spec") or {}).get("storageClassName")
    allowed = False
    if sc_name:
        try:
            sc = store.get("storage.k8s.io/storageclasses", None, sc_name)
            allowed = bool(sc.get("allowVolumeExpansion"))
        except Exception:
            allowed = False
    if allowed:
        return None
    return ("only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must "
            "support resize")
