# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Remove a tenant's Kubernetes objects: the one home of the rollback's and the delete's removal.

* The namespace, with everything in it, when it is the tenant's: the run created it
  (``namespace_created``, the rollback), or it carries the collection's label
  ``app.kubernetes.io/managed-by: es-serverless`` and the tenant's annotations (``owner``, the
  delete), which stage 2 puts only on a namespace that its own create request made. A namespace
  that existed before is never deleted.
* Otherwise only the collection's objects in it: ``objects`` (references, e.g. what a failed run
  created), every object of the kinds the collection renders that carries the managed-by label
  (``managed``), and the StatefulSet's data PVCs (``app=elasticsearch``, ``claims``) except
  ``keep_claims``. Objects of anyone else stay.
* Then it waits until everything it deleted is gone: a namespace passes through Terminating while
  the namespace controller empties it, a PVC waits for the pods that use it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import time

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.apply import (
    FIELD_MANAGER,
    Resolver,
    group_version_path,
)
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import (
    ApiException,
    K8sClientError,
    api_error_message,
    request_json,
)

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_SELECTOR = "%s=%s" % (MANAGED_BY_LABEL, FIELD_MANAGER)
# The annotations naming the tenant on the collection's objects (roles/k8s_apply/templates) and
# on a namespace that stage 2 created.
USER_ANNOTATION = "es.yunpeng.cn/user"
SERVICE_ANNOTATION = "es.yunpeng.cn/service-name"
DATA_CLAIMS_SELECTOR = "app=elasticsearch"
# The namespaced kinds the collection renders (roles/k8s_apply: resources.yml.j2 and the
# credentials Secret), workloads first; tests/unit/test_remove.py keeps this list complete.
MANAGED_KINDS = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "LimitRange"),
    ("v1", "ResourceQuota"),
)
CLAIM = ("v1", "PersistentVolumeClaim")


class RemoveError(Exception):
    """The removal failed; ``result`` says what was deleted before."""

    def __init__(self, message, result):
        super(RemoveError, self).__init__(message)
        self.message = message
        self.result = result


def owned_namespace(namespace, user, service_name):
    """Whether ``namespace`` (an object) is one the collection created for this tenant."""
    meta = (namespace or {}).get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return (labels.get(MANAGED_BY_LABEL) == FIELD_MANAGER and annotations.get(USER_ANNOTATION) == user
            and annotations.get(SERVICE_ANNOTATION) == service_name)


def _label(ref):
    """``Kind namespace/name`` (``Namespace name``) for messages."""
    if ref.get("namespace"):
        return "%s %s/%s" % (ref["kind"], ref["namespace"], ref["name"])
    return "%s %s" % (ref["kind"], ref["name"])


class Remover:
    """One removal: its requests, what it deleted, and the wait."""

    def __init__(self, api_client, namespace, clock=time.monotonic, sleep=time.sleep):
        self.api_client = api_client
        self.namespace = namespace
        self.resolver = Resolver(api_client)
        self.clock = clock
        self.sleep = sleep
        self.result = {"namespace": namespace, "namespace_deleted": False, "deleted": [], "elapsed": 0.0}

    def _request(self, method, path, query=None, body=None, what=None):
        """One request; an ``ApiException`` carries ``what`` (the object or list) for the message."""
        try:
            return request_json(self.api_client, method, path, query, body)
        except ApiException as exc:
            exc.what = what
            raise

    def _collection(self, api_version, kind):
        resource, namespaced = self.resolver.resolve(api_version, kind)
        if not namespaced:
            raise ValueError("%s is not namespaced: only the tenant namespace's objects are removed" % kind)
        return "%s/namespaces/%s/%s" % (group_version_path(api_version), self.namespace, resource)

    def _listed(self, api_version, kind, selector):
        _status, data = self._request("GET", self._collection(api_version, kind), {"labelSelector": selector},
                                      what="list of %s %s in namespace %s" % (kind, selector, self.namespace))
        return [item["metadata"]["name"] for item in data.get("items") or []]

    def _delete(self, path, ref):
        """DELETE ``path``; True when it was there (also when it was already being deleted)."""
        try:
            self._request("DELETE", path, body={"kind": "DeleteOptions", "apiVersion": "v1",
                                                "propagationPolicy": "Background"}, what=_label(ref))
        except ApiException as exc:
            if exc.status == 404:
                # 404 on a repeat after an attempt that may have deleted it: this removal deleted it.
                if getattr(exc, "retried", False):
                    self.result["deleted"].append(ref)
                return False
            if not (exc.status == 409 and ref["kind"] == "Namespace"):  # 409: already terminating
                raise
        self.result["deleted"].append(ref)
        return True

    def _wait_gone(self, waiting, timeout, start):
        """Poll every path in ``waiting`` (path -> label) until it answers 404."""
        deadline = start + timeout
        pause = 0.2
        while waiting:
            for path in list(waiting):
                try:
                    _status, obj = self._request("GET", path, what=waiting[path].split(" (")[0])
                except ApiException as exc:
                    if exc.status == 404:
                        del waiting[path]
                        continue
                    raise
                if (obj.get("status") or {}).get("phase") == "Terminating":
                    waiting[path] = "%s (Terminating)" % waiting[path].split(" (")[0]
            if not waiting:
                break
            if self.clock() >= deadline:
                raise ValueError("still there after %s s: %s" % (timeout, ", ".join(sorted(waiting.values()))))
            self.sleep(min(pause, max(deadline - self.clock(), 0)))
            pause = min(pause * 1.5, 2.0)

    def run(self, owner=None, namespace_created=False, objects=(), managed=False, claims=False, keep_claims=(),
            timeout=300):
        start = self.clock()
        ns_path = "/api/v1/namespaces/%s" % self.namespace
        ns_ref = {"kind": "Namespace", "api_version": "v1", "name": self.namespace}
        waiting = {}
        try:
            delete_namespace = namespace_created
            if not delete_namespace and owner:
                try:
                    _status, found = self._request("GET", ns_path, what="Namespace %s" % self.namespace)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    return self._done(start)  # no namespace, nothing in it
                delete_namespace = owned_namespace(found, owner.get("user"), owner.get("service_name"))
            if delete_namespace:
                if self._delete(ns_path, ns_ref):
                    waiting[ns_path] = _label(ns_ref)
                    self.result["namespace_deleted"] = True
            else:
                targets = []
                for ref in objects or ():
                    targets.append((ref["api_version"], ref["kind"], ref["name"]))
                if managed:
                    for api_version, kind in MANAGED_KINDS:
                        targets.extend((api_version, kind, name)
                                       for name in self._listed(api_version, kind, MANAGED_SELECTOR))
                if claims:
                    targets.extend(CLAIM + (name,) for name in self._listed(CLAIM[0], CLAIM[1], DATA_CLAIMS_SELECTOR)
                                   if name not in (keep_claims or ()))
                seen = set()
                for api_version, kind, name in targets:
                    path = "%s/%s" % (self._collection(api_version, kind), name)
                    if path in seen:
                        continue
                    seen.add(path)
                    ref = {"kind": kind, "api_version": api_version, "name": name, "namespace": self.namespace}
                    if self._delete(path, ref):
                        waiting[path] = _label(ref)
            self._wait_gone(waiting, timeout, start)
        except (ValueError, K8sClientError) as exc:
            raise RemoveError("cannot remove the objects of namespace %s: %s" % (self.namespace, exc),
                              self._done(start))
        except ApiException as exc:
            raise RemoveError("cannot remove the objects of namespace %s: %s"
                              % (self.namespace, api_error_message(exc, getattr(exc, "what", None))),
                              self._done(start))
        return self._done(start)

    def _done(self, start):
        self.result["elapsed"] = round(self.clock() - start, 2)
        return self.result


def remove(api_client, namespace, **options):
    """Remove the tenant's objects in ``namespace`` (see the module docstring); returns
    ``{"namespace", "namespace_deleted", "deleted": [refs], "elapsed"}``, raises ``RemoveError``."""
    return Remover(api_client, namespace).run(**options)
