"""The resource types the API simulator serves and their discovery documents
(test infrastructure)."""

from collections import namedtuple

Resource = namedtuple("Resource", "group version name kind namespaced short_names subresources singular")

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

RESOURCES = [
    Resource("", "v1", "namespaces", "Namespace", False, ["ns"], ["status", "finalize"], "namespace"),
    Resource("", "v1", "configmaps", "ConfigMap", True, ["cm"], [], "configmap"),
    Resource("", "v1", "secrets", "Secret", True, [], [], "secret"),
    Resource("", "v1", "services", "Service", True, ["svc"], ["status"], "service"),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"], [], "serviceaccount"),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"], ["status"],
             "persistentvolumeclaim"),
    Resource("", "v1", "persistentvolumes", "PersistentVolume", False, ["pv"], ["status"], "persistentvolume"),
    Resource("", "v1", "pods", "Pod", True, ["po"], ["status"], "pod"),
    Resource("", "v1", "events", "Event", True, ["ev"], [], "event"),
    Resource("", "v1", "resourcequotas", "ResourceQuota", True, ["quota"], ["status"], "resourcequota"),
    Resource("", "v1", "limitranges", "LimitRange", True, ["limits"], [], "limitrange"),
    Resource("", "v1", "nodes", "Node", False, ["no"], ["status"], "node"),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True, ["sts"], ["status", "scale"], "statefulset"),
    Resource("apps", "v1", "deployments", "Deployment", True, ["deploy"], ["status", "scale"], "deployment"),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, ["rs"], ["status", "scale"], "replicaset"),
    Resource("apps", "v1", "controllerrevisions", "ControllerRevision", True, [], [], "controllerrevision"),
    Resource("batch", "v1", "jobs", "Job", True, [], ["status"], "job"),
    Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ["sc"], [], "storageclass"),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ["pdb"], ["status"],
             "poddisruptionbudget"),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ["netpol"], [],
             "networkpolicy"),
]

GROUPS = ["apps", "batch", "networking.k8s.io", "policy", "storage.k8s.io"]

# the ``all`` category of a real server (``kubectl get all``)
CATEGORY_ALL = {"pods", "services", "statefulsets", "deployments", "replicasets", "jobs"}


def store_key(res):
    """The store's resource name: ``pods``, ``apps/statefulsets``."""
    return res.name if not res.group else res.group + "/" + res.name


def find(group, version, name):
    for r in RESOURCES:
        if r.group == group and r.version == version and r.name == name:
            return r
    return None


def by_store_key(key):
    for r in RESOURCES:
        if store_key(r) == key:
            return r
    return None


def by_kind(api_version, kind):
    group, _u, version = api_version.rpartition("/")
    for r in RESOURCES:
        if r.group == group and r.version == version and r.kind == kind:
            return r
    return None


def api_version_of(res):
    return res.version if not res.group else res.group + "/" + res.version


def resource_list(group, version):
    items = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        verbs = list(VERBS)
        if r.name == "namespaces":
            verbs.remove("deletecollection")
        items.append(
            {
                "name": r.name,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs,
                **({"shortNames": r.short_names} if r.short_names else {}),
                **({"categories": ["all"]} if r.name in CATEGORY_ALL else {}),
                "storageVersionHash": "",
            }
        )
        for sub in r.subresources:
            if sub == "scale":
                items.append(
                    {
                        "name": r.name + "/scale",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "group": "autoscaling",
                        "version": "v1",
                        "kind": "Scale",
                        "verbs": ["get", "patch", "update"],
                    }
                )
            elif sub == "finalize":
                items.append({"name": r.name + "/finalize", "singularName": "", "namespaced": False,
                              "kind": r.kind, "verbs": ["update"]})
            else:
                items.append(
                    {"name": r.name + "/" + sub, "singularName": "", "namespaced": r.namespaced, "kind": r.kind,
                     "verbs": ["get", "patch", "update"]}
                )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version_of(
        Resource(group, version, "", "", False, [], [], "")), "resources": items}


def api_versions():
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}


def api_group(group):
    gv = {"groupVersion": group + "/v1", "version": "v1"}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv}


def api_group_list():
    groups = [api_group(g) for g in GROUPS]
    for g in groups:
        del g["kind"], g["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
