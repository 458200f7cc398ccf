"""Server-side ``Table`` rendering (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``)
for ``kubectl get``, with the columns a real 1.32 server prints (test infrastructure)."""

import datetime


def human_duration(seconds):
    s = int(max(seconds, 0))
    if s < 120:
        return "%ds" % s
    m = s // 60
    if m < 10:
        return "%dm%ds" % (m, s % 60) if s % 60 else "%dm" % m
    if m < 180:
        return "%dm" % m
    h = m // 60
    if h < 8:
        return "%dh%dm" % (h, m % 60) if m % 60 else "%dh" % h
    if h < 48:
        return "%dh" % h
    d = h // 24
    if d < 8:
        return "%dd%dh" % (d, h % 24) if h % 24 else "%dd" % d
    if d < 365 * 2:
        return "%dd" % d
    return "%dy" % (d // 365)


def age(ts):
    if not ts:
        return "<unknown>"
    when = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return human_duration((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds())


def _col(name, typ="string", fmt="", priority=0):
    return {"name": name, "type": typ, "format": fmt, "description": name, "priority": priority}


def _pod_status(pod):
    st = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    reason = st.get("reason") or st.get("phase") or "Pending"
    for cs in st.get("initContainerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "PodInitializing"):
            return "Init:" + waiting["reason"]
    for cs in st.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("waiting") and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated") and state["terminated"].get("reason"):
            reason = state["terminated"]["reason"]
    return reason


def _pod_row(pod):
    st = pod.get("status") or {}
    statuses = st.get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    return [pod["metadata"]["name"], "%d/%d" % (ready, total), _pod_status(pod), restarts,
            age(pod["metadata"].get("creationTimestamp")), st.get("podIP") or "<none>",
            (pod.get("spec") or {}).get("nodeName") or "<none>"]


def _sts_row(o):
    st = o.get("status") or {}
    return [o["metadata"]["name"], "%d/%d" % (st.get("readyReplicas") or 0, (o.get("spec") or {}).get("replicas", 1)),
            age(o["metadata"].get("creationTimestamp"))]


def _deploy_row(o):
    st = o.get("status") or {}
    return [o["metadata"]["name"], "%d/%d" % (st.get("readyReplicas") or 0, (o.get("spec") or {}).get("replicas", 1)),
            st.get("updatedReplicas") or 0, st.get("availableReplicas") or 0,
            age(o["metadata"].get("creationTimestamp"))]


def _rs_row(o):
    st = o.get("status") or {}
    return [o["metadata"]["name"], (o.get("spec") or {}).get("replicas", 1), st.get("replicas") or 0,
            st.get("readyReplicas") or 0, age(o["metadata"].get("creationTimestamp"))]


def _pvc_row(o):
    spec, st = o.get("spec") or {}, o.get("status") or {}
    modes = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return [o["metadata"]["name"], st.get("phase") or "Pending", spec.get("volumeName") or "",
            (st.get("capacity") or {}).get("storage", ""),
            ",".join(modes.get(m, m) for m in st.get("accessModes") or []),
            spec.get("storageClassName") or "<unset>", spec.get("volumeAttributesClassName") or "<unset>",
            age(o["metadata"].get("creationTimestamp"))]


def _ns_row(o):
    return [o["metadata"]["name"], (o.get("status") or {}).get("phase", "Active"),
            age(o["metadata"].get("creationTimestamp"))]


def _svc_row(o):
    spec = o.get("spec") or {}
    ports = ",".join("%s/%s" % (p.get("port"), p.get("protocol", "TCP")) for p in spec.get("ports") or [])
    return [o["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", "<none>",
            ports or "<none>", age(o["metadata"].get("creationTimestamp"))]


def _node_row(o):
    conds = {c["type"]: c["status"] for c in (o.get("status") or {}).get("conditions") or []}
    roles = sorted(k.split("/", 1)[1] for k in (o["metadata"].get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    return [o["metadata"]["name"], "Ready" if conds.get("Ready") == "True" else "NotReady",
            ",".join(roles) or "<none>", age(o["metadata"].get("creationTimestamp")),
            ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")]


def _event_row(o):
    inv = o.get("involvedObject") or {}
    last = o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
    return [age(last if isinstance(last, str) and last.endswith("Z") and len(last) == 20 else None),
            o.get("type", ""), o.get("reason", ""),
            "%s/%s" % ((inv.get("kind") or "").lower(), inv.get("name", "")), o.get("message", "")]


TABLES = {
    "pods": ([_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts", "integer"), _col("Age"),
              _col("IP", priority=1), _col("Node", priority=1)], _pod_row),
    "statefulsets": ([_col("Name", fmt="name"), _col("Ready"), _col("Age")], _sts_row),
    "deployments": ([_col("Name", fmt="name"), _col("Ready"), _col("Up-to-date", "integer"),
                     _col("Available", "integer"), _col("Age")], _deploy_row),
    "replicasets": ([_col("Name", fmt="name"), _col("Desired", "integer"), _col("Current", "integer"),
                     _col("Ready", "integer"), _col("Age")], _rs_row),
    "persistentvolumeclaims": ([_col("Name", fmt="name"), _col("Status"), _col("Volume"), _col("Capacity"),
                                _col("Access Modes"), _col("StorageClass"), _col("VolumeAttributesClass"),
                                _col("Age")], _pvc_row),
    "namespaces": ([_col("Name", fmt="name"), _col("Status"), _col("Age")], _ns_row),
    "services": ([_col("Name", fmt="name"), _col("Type"), _col("Cluster-IP"), _col("External-IP"),
                  _col("Port(s)"), _col("Age")], _svc_row),
    "nodes": ([_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"), _col("Version")], _node_row),
    "events": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")], _event_row),
}


def wants_table(accept):
    return "as=Table" in (accept or "")


def table(resource_name, objects, resource_version):
    columns, row = TABLES.get(resource_name, ([_col("Name", fmt="name"), _col("Age")],
                                              lambda o: [o["metadata"]["name"],
                                                         age(o["metadata"].get("creationTimestamp"))]))
    rows = []
    for o in objects:
        meta = {k: v for k, v in o["metadata"].items() if k != "managedFields"}
        rows.append({"cells": row(o), "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                 "metadata": meta}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": rows}
