# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Load a tenant's Kubernetes manifests for the tenant namespace, and only it.

``load(paths, namespace)`` reads ``.yml``/``.yaml`` (multi-document) and
``.json`` files, expands ``kind: List`` (and ``*List``) documents, and checks
every object:

- ``apiVersion``, ``kind`` and ``metadata.name`` are present strings;
- the kind is not cluster-scoped (``CLUSTER_SCOPED_KINDS``: every cluster-scoped
  kind of the Kubernetes API, plus well-known cluster-scoped custom kinds);
- ``metadata.namespace``, when set, is the tenant namespace; when missing it is set;
- the kind is not one of the platform's guard rails (``GUARD_RAIL_KINDS``);
- the object is not one of the ``reserved`` ``Kind/name`` pairs (the platform's own
  objects) and is not defined twice.

It returns the definitions in file order, ready for ``es_apply``. Error messages name the file and the object.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import copy
import fnmatch
import json
import os
import re

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import esconfig

try:
    import yaml
except ImportError:  # pragma: no cover - esconfig reports the missing library
    yaml = None

HAS_YAML = esconfig.HAS_YAML
YAML_IMPORT_ERROR = esconfig.YAML_IMPORT_ERROR

EXTENSIONS = (".yml", ".yaml", ".json")

# Kinds a tenant may not add to its namespace: the platform's guard rails (a second
# ResourceQuota, LimitRange or an allowing NetworkPolicy would loosen them).
GUARD_RAIL_KINDS = ("resourcequota", "limitrange", "networkpolicy")

# Cluster-scoped kinds of the Kubernetes API (1.25 - 1.35), and well-known
# cluster-scoped kinds of common add-ons. Compared case-insensitively; entries
# may be fnmatch patterns.
CLUSTER_SCOPED_KINDS = (
    # core
    "Namespace", "Node", "PersistentVolume", "ComponentStatus",
    # admission
    "*WebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
    # API extension
    "CustomResourceDefinition", "APIService",
    # authentication / authorization
    "TokenReview", "SelfSubjectAccessReview", "SelfSubjectRulesReview", "SubjectAccessReview",
    "SelfSubjectReview", "ClusterRole", "ClusterRoleBinding",
    # certificates
    "CertificateSigningRequest", "ClusterTrustBundle",
    # flow control, scheduling, node
    "FlowSchema", "PriorityLevelConfiguration", "PriorityClass", "RuntimeClass",
    # networking
    "IngressClass", "IPAddress", "ServiceCIDR",
    # storage
    "StorageClass", "CSIDriver", "CSINode", "VolumeAttachment", "VolumeAttributesClass",
    "StorageVersion", "StorageVersionMigration",
    # dynamic resource allocation
    "DeviceClass", "ResourceSlice", "DeviceTaintRule", "ResourcePoolStatusRequest",
    # removed or legacy APIs that may still be served
    "PodSecurityPolicy",
    # common add-ons
    "ClusterIssuer", "ClusterPolicy", "ClusterSecretStore", "ClusterExternalSecret",
    "GlobalNetworkPolicy", "ClusterTask", "ClusterTriggerBinding",
)

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ManifestError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


def is_cluster_scoped(kind):
    lowered = ("%s" % (kind,)).lower()
    return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in CLUSTER_SCOPED_KINDS)


def _describe(obj):
    kind = obj.get("kind") if isinstance(obj, dict) else None
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return "%s/%s" % (kind or "<no kind>", name or "<no name>")


def _documents(path):
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ManifestError("cannot read manifest %s: %s" % (path, exc.strerror or exc))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError("manifest %s is not UTF-8 text: %s" % (path, exc))
    if path.lower().endswith(".json"):
        try:
            return [json.loads(text)] if text.strip() else []
        except ValueError as exc:
            raise ManifestError("manifest %s is not valid JSON: %s" % (path, exc))
    try:
        return list(yaml.load_all(text, Loader=esconfig._UniqueKeyLoader))  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ManifestError("manifest %s is not valid YAML: %s" % (path, exc))


def _expand(doc):
    """A ``kind: List`` (or ``*List``) document -> its items; any other -> [doc]."""
    if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List") \
            and isinstance(doc.get("items"), list):
        return list(doc["items"])
    return [doc]


def check_object(obj, path, namespace, reserved=()):
    """Check one object (see the module docstring); return a copy with its namespace set."""
    if not isinstance(obj, dict):
        raise ManifestError("manifest %s: a document is not a mapping (found %s)" % (path, type(obj).__name__))
    what = _describe(obj)
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj.get(field):
            raise ManifestError("manifest %s: object %s has no %s" % (path, what, field))
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta.get("name"):
        raise ManifestError("manifest %s: object %s has no metadata.name" % (path, what))
    kind = obj["kind"]
    if is_cluster_scoped(kind):
        raise ManifestError("manifest %s: %s is cluster-scoped (kind %s); only objects in the tenant namespace %s "
                            "are allowed" % (path, what, kind, namespace))
    if kind.lower() in GUARD_RAIL_KINDS:
        raise ManifestError("manifest %s: %s is a %s: the tenant namespace's quota, limits and network policy are "
                            "the platform's; a tenant may not add to them" % (path, what, kind))
    if "%s/%s" % (kind, meta["name"]) in reserved:
        raise ManifestError("manifest %s: %s is managed by the platform and may not be defined by the tenant"
                            % (path, what))
    current = meta.get("namespace")
    if current not in (None, "") and current != namespace:
        raise ManifestError("manifest %s: %s has metadata.namespace %r, but the tenant namespace is %r; objects "
                            "may only be created in the tenant namespace" % (path, what, current, namespace))
    out = copy.deepcopy(obj)
    out["metadata"]["namespace"] = namespace
    return out


def load_objects(paths, namespace, reserved=()):
    """Read and check the manifests in ``paths``; return ``[(path, definition)]`` in file order."""
    if not isinstance(namespace, str) or not _DNS1123_LABEL.match(namespace) or len(namespace) > 63:
        raise ManifestError("namespace %r is not a DNS-1123 label" % (namespace,))
    if yaml is None:
        raise ManifestError("the PyYAML library is required: %s" % YAML_IMPORT_ERROR)
    reserved = set(reserved or ())
    out = []
    seen = {}
    for path in paths or []:
        if not path.lower().endswith(EXTENSIONS):
            raise ManifestError("manifest %s: only .yml, .yaml and .json files are read" % path)
        if os.path.islink(path):
            raise ManifestError("manifest %s is a symbolic link; refused" % path)
        for doc in _documents(path):
            if doc is None:
                continue
            for obj in _expand(doc):
                definition = check_object(obj, path, namespace, reserved)
                group = definition["apiVersion"].rpartition("/")[0]
                key = (group, definition["kind"], definition["metadata"]["name"])
                if key in seen:
                    raise ManifestError("manifest %s: %s is already defined in %s"
                                        % (path, _describe(definition), seen[key]))
                seen[key] = path
                out.append((path, definition))
    return out


def load(paths, namespace, reserved=()):
    """Read and check the manifests in ``paths``; return their definitions in file order."""
    return [definition for _path, definition in load_objects(paths, namespace, reserved)]


def object_ref(obj, created=None):
    """``{kind, api_version, name[, namespace][, created]}`` of an object."""
    obj = obj or {}
    meta = obj.get("metadata") or {}
    ref = {"kind": obj.get("kind"), "api_version": obj.get("apiVersion"), "name": meta.get("name")}
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    if created is not None:
        ref["created"] = created
    return ref
