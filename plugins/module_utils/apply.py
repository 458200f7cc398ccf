# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply a list of Kubernetes objects in one call: server-side apply under our field manager.

One request per object, no read before the write: the answer says whether the
object was created (201) or already existed (200), which is what a rollback
needs to know, and there is no window between a look-up and a create. Kinds
that are part of the stable Kubernetes API are mapped to their paths without
discovery; any other kind is discovered once per group version.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import base64
import datetime
import json
import time

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.manifests import object_ref
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import (
    ApiException,
    K8sClientError,
    api_error_message,
    request_json,
    status_message,
)

FIELD_MANAGER = "es-serverless"

# (apiVersion, kind) -> (resource, namespaced) for the GA kinds the collection renders.
STABLE_RESOURCES = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Service"): ("services", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "PersistentVolumeClaim"): ("persistentvolumeclaims", True),
    ("v1", "ResourceQuota"): ("resourcequotas", True),
    ("v1", "LimitRange"): ("limitranges", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
}


class ApplyError(Exception):
    """An object could not be applied; ``applied`` lists what this call applied before it."""

    def __init__(self, message, applied):
        super(ApplyError, self).__init__(message)
        self.message = message
        self.applied = applied


def group_version_path(api_version):
    return "/api/v1" if api_version == "v1" else "/apis/%s" % api_version


class Resolver:
    """Maps (apiVersion, kind) to (resource, namespaced), discovering a group version at most once."""

    def __init__(self, api_client):
        self.api_client = api_client
        self._discovered = {}

    def resolve(self, api_version, kind):
        known = STABLE_RESOURCES.get((api_version, kind))
        if known:
            return known
        if api_version not in self._discovered:
            try:
                _status, data = request_json(self.api_client, "GET", group_version_path(api_version))
            except ApiException as exc:
                if exc.status == 404:
                    raise ValueError("the cluster does not serve apiVersion %s" % api_version)
                raise
            self._discovered[api_version] = dict(
                (item["kind"], (item["name"], bool(item.get("namespaced"))))
                for item in data.get("resources") or [] if "/" not in item.get("name", "/"))
        found = self._discovered[api_version].get(kind)
        if not found:
            raise ValueError("the cluster does not serve kind %s in apiVersion %s" % (kind, api_version))
        return found


def _summary(obj):
    """What the answer tells later stages, without Secret data."""
    if obj.get("kind") == "Secret":
        obj = dict(obj)
        obj.pop("data", None)
        obj.pop("stringData", None)
    return obj


def _changed_since(obj, since):
    """Whether our field manager's entry was written at or after ``since`` (second precision)."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply" and entry.get("time"):
            written = datetime.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%SZ")
            return written >= since.replace(microsecond=0)
    return True


# Server-set metadata that an object restored from a snapshot must not carry.
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
                   "deletionTimestamp", "deletionGracePeriodSeconds")

# The StatefulSet fields Kubernetes lets change; any other change (a new volumeClaimTemplates size)
# needs the StatefulSet recreated.
IMMUTABLE_STATEFULSET = "updates to statefulset spec for fields other than"


def restorable(obj):
    """``obj`` as read from the API server, reduced to what applying it back needs."""
    meta = dict((k, v) for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_METADATA)
    out = dict((k, v) for k, v in obj.items() if k not in ("status", "metadata"))
    out["metadata"] = meta
    return out


def _immutable_statefulset(kind, exc):
    return kind == "StatefulSet" and exc.status == 422 and IMMUTABLE_STATEFULSET in (exc.body or "")


def _delete_orphaning(api_client, path, timeout):
    """Delete the object at ``path`` leaving its dependents (pods, claims) and wait until it is gone."""
    try:
        request_json(api_client, "DELETE", path, None, {"propagationPolicy": "Orphan"})
    except ApiException as exc:
        if exc.status != 404:
            raise
    deadline = time.monotonic() + timeout
    while True:
        try:
            request_json(api_client, "GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        if time.monotonic() > deadline:
            raise ValueError("it was deleted to be recreated but still exists after %ss" % timeout)
        time.sleep(0.2)


def _namespace_missing(exc):
    """A 404 whose Status names a namespace as the missing object."""
    if exc.status != 404:
        return False
    try:
        details = json.loads(exc.body or "{}").get("details") or {}
    except (TypeError, ValueError, AttributeError):
        return False
    return details.get("kind") == "namespaces"


def _read(api_client, path):
    """The object at ``path``, or None when the API server answers 404."""
    try:
        return request_json(api_client, "GET", path)[1]
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _holds(sent, obj):
    """Whether ``obj`` carries everything of ``sent`` that names its creator: the labels and
    annotations, and a Secret's or ConfigMap's data. The collection's create-only objects carry
    something no one else has (the namespace its deployment id, the Secrets generated keys), so an
    object that holds them is the one an earlier attempt of the same create made."""
    sent_meta, meta = sent.get("metadata") or {}, obj.get("metadata") or {}
    for key in ("labels", "annotations"):
        if any((meta.get(key) or {}).get(k) != v for k, v in (sent_meta.get(key) or {}).items()):
            return False
    data = dict(sent.get("data") or {})
    if sent.get("kind") == "Secret":
        data.update((k, base64.b64encode(v.encode("utf-8")).decode("ascii"))
                    for k, v in (sent.get("stringData") or {}).items())
    elif sent.get("stringData"):
        return False
    return all((obj.get("data") or {}).get(k) == v for k, v in data.items())


def _existing_after_conflict(api_client, definition, path, exc, label):
    """A create answered 409: read the object. Returns ``(object, created)``; ``created`` when an
    earlier attempt of this request, retried after an ambiguous failure, made it. An object that
    does not exist after a 409 is a failure, never an "exists"."""
    obj = _read(api_client, path)
    if obj is None:
        why = status_message(exc) if definition.get("kind") == "Secret" else api_error_message(exc)
        raise ValueError("the create answered %s, yet %s does not exist (a read answered 404 Not Found)"
                         % (why, label))
    return obj, bool(getattr(exc, "retried", False)) and _holds(definition, obj)


def apply_objects(api_client, definitions, namespace=None, create_only=False, check_mode=False,
                  field_manager=FIELD_MANAGER, snapshot=False, recreate=False, timeout=60, diff=False):
    """Apply ``definitions`` in order and return one entry per object.

    Each entry: ``ref`` (kind, api_version, name, namespace, created), ``changed`` and
    ``object`` (the server's answer; Secrets without data). With ``create_only`` an object
    that exists is left as it is. In check mode the server runs the request as a dry run;
    an object whose namespace does not exist yet would be created.

    With ``snapshot`` each object is read first: ``previous`` is what the API server held
    (None when absent; Secrets are not kept) and ``changed`` means its resourceVersion moved.
    With ``recreate`` a StatefulSet whose change Kubernetes forbids (volumeClaimTemplates) is
    deleted with its pods and claims orphaned and applied again (``recreated``); the new
    StatefulSet adopts the pods.

    With ``diff`` (implies ``snapshot``) each entry has ``diff``: the object before and after
    (or as the dry run would leave it), without server-set metadata, status or Secret data.
    """
    snapshot = snapshot or diff
    resolver = Resolver(api_client)
    applied = []
    for definition in definitions:
        if not isinstance(definition, dict):
            raise ApplyError("every definition must be a mapping, got %r" % (definition,), applied)
        meta = definition.get("metadata") or {}
        api_version, kind, name = definition.get("apiVersion"), definition.get("kind"), meta.get("name")
        if not (api_version and kind and name):
            raise ApplyError("every definition needs apiVersion, kind and metadata.name", applied)
        label = "%s/%s" % (kind, name)
        try:
            resource, namespaced = resolver.resolve(api_version, kind)
            if namespaced:
                obj_ns = meta.get("namespace") or namespace
                if not obj_ns:
                    raise ValueError("%s is namespaced and no namespace was given" % label)
                if meta.get("namespace") != obj_ns:
                    definition = dict(definition, metadata=dict(meta, namespace=obj_ns))
                collection = "%s/namespaces/%s/%s" % (group_version_path(api_version), obj_ns, resource)
                label = "%s in namespace %s" % (label, obj_ns)
            else:
                collection = "%s/%s" % (group_version_path(api_version), resource)
            query = {"dryRun": "All"} if check_mode else {}
            since = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            path = "%s/%s" % (collection, name)
            previous, recreated = None, False
            try:
                if snapshot:
                    try:
                        previous = request_json(api_client, "GET", path)[1]
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                if create_only:
                    query["fieldManager"] = field_manager
                    status, obj = request_json(api_client, "POST", collection, query, definition)
                else:
                    query.update(fieldManager=field_manager, force="true")
                    try:
                        status, obj = request_json(api_client, "PATCH", path, query, definition,
                                                   content_type="application/apply-patch+yaml")
                    except ApiException as exc:
                        if not (recreate and _immutable_statefulset(kind, exc)):
                            raise
                        if check_mode:
                            applied.append({"ref": object_ref(definition, False), "changed": True,
                                            "recreated": True, "previous": _kept(previous),
                                            "object": _summary(definition),
                                            "diff": _diff(label, previous, definition)})
                            continue
                        _delete_orphaning(api_client, path, timeout)
                        recreated = True
                        status, obj = request_json(api_client, "PATCH", path, query, definition,
                                                   content_type="application/apply-patch+yaml")
            except ApiException as exc:
                if create_only and exc.status == 409:
                    existing, created = _existing_after_conflict(api_client, definition, path, exc, label)
                    applied.append({"ref": object_ref(existing, created), "changed": created,
                                    "object": _summary(existing)})
                    continue
                if check_mode and _namespace_missing(exc):
                    applied.append({"ref": object_ref(definition, True), "changed": True,
                                    "object": _summary(definition), "diff": _diff(label, None, definition)})
                    continue
                raise
        except (ValueError, K8sClientError) as exc:
            raise ApplyError("cannot apply %s: %s" % (label, exc), applied)
        except ApiException as exc:
            # The API server may echo the request body in its message: never for a Secret.
            why = status_message(exc) if kind == "Secret" else api_error_message(exc)
            raise ApplyError("cannot apply %s: %s" % (label, why), applied)
        created = status == 201 and not recreated
        if snapshot and check_mode:  # a dry run keeps the resourceVersion: compare the content
            changed = previous is None or restorable(previous) != restorable(obj)
        elif snapshot:
            changed = previous is None or recreated or (
                (previous.get("metadata") or {}).get("resourceVersion") != (obj.get("metadata") or {}).get(
                    "resourceVersion"))
        else:
            changed = created or recreated or _changed_since(obj, since)
        entry = {"ref": object_ref(obj, created), "changed": changed, "recreated": recreated,
                 "previous": _kept(previous), "object": _summary(obj)}
        if diff:
            entry["diff"] = _diff(label, previous, obj)
        applied.append(entry)
    return applied


def _diff(label, before, after):
    """A diff for Ansible's --diff output: the object before and after, as an operator reads them."""
    return {"before_header": label, "after_header": label,
            "before": restorable(_summary(before)) if before else {},
            "after": restorable(_summary(after)) if after else {}}


def _kept(previous):
    """The snapshot worth keeping for a rollback: none for Secrets (their data stays out of results)."""
    if previous is None or previous.get("kind") == "Secret":
        return None
    return restorable(previous)
