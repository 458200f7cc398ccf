#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_pvc_size
short_description: Grow every PersistentVolumeClaim of a StatefulSet to a requested size
description:
  - Finds every existing PVC of O(statefulset) (C(<template>-<statefulset>-<ordinal>) for each
    volumeClaimTemplate and each ordinal up to the larger of C(spec.replicas) and the highest existing
    ordinal) and sets its C(spec.resources.requests.storage) to O(size) with a JSON merge patch.
  - Checks every PVC before patching any. A request smaller than a PVC's current size is refused
    (PVCs cannot shrink), and so is a growth of a claim that is not C(Bound) or whose StorageClass
    does not allow volume expansion.
    Nothing is half done.
  - The StatefulSet's volumeClaimTemplates are immutable and are not changed; claims created later
    from the template get the template's size (a warning says so when it differs from O(size)).
  - Idempotent; in check mode reports what would change without patching.
version_added: "1.0.0"
author:
  - ES Serverless platform team (@yunpeng)
extends_documentation_fragment:
  - yunpeng.es_serverless.k8s_auth
options:
  namespace:
    description:
      - Namespace of the StatefulSet and its PVCs.
    type: str
    required: true
  statefulset:
    description:
      - Name of the StatefulSet.
    type: str
    default: elasticsearch
  size:
    description:
      - Requested storage size, a Kubernetes quantity such as C(10Gi) (the tenant's C(disk_size)).
    type: str
    required: true
  wait:
    description:
      - Wait until every patched PVC reports C(status.capacity.storage) of at least O(size).
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait when O(wait=true).
    type: int
    default: 300
  claims_timeout:
    description:
      - Seconds to wait for claims of the StatefulSet that do not exist yet (its controller creates them
        shortly after the StatefulSet or a scale-up). Claims still missing then are listed in RV(missing).
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    description: Reports the PVCs that would be resized without patching them.
"""

EXAMPLES = r"""
- name: Size the Elasticsearch data volumes to the tenant's disk_size
  yunpeng.es_serverless.es_pvc_size:
    namespace: es-alice-search
    statefulset: elasticsearch
    size: "{{ es_disk_size }}"

- name: Grow and wait for the volumes to be expanded
  yunpeng.es_serverless.es_pvc_size:
    namespace: es-alice-search
    size: 50Gi
    wait: true
    wait_timeout: 600
"""

RETURN = r"""
pvcs:
  description: Every existing PVC of the StatefulSet with its size before and after.
  returned: always
  type: list
  elements: dict
  sample:
    - name: elasticsearch-data-elasticsearch-0
      old: 10Gi
      new: 20Gi
      changed: true
      capacity: 20Gi
missing:
  description: PVCs the StatefulSet will create later from its volumeClaimTemplates (not patched).
  returned: always
  type: list
  elements: str
  sample: [elasticsearch-data-elasticsearch-2]
"""

import time  # noqa: E402

from ansible.module_utils.basic import missing_required_lib  # noqa: E402

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry  # noqa: E402

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import (  # noqa: E402
    HAS_KUBERNETES,
    K8S_AUTH_ARGS,
    KUBERNETES_IMPORT_ERROR,
    ApiException,
    K8sClientError,
    api_error_message,
    call_json,
    client_from_params,
)
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.pvc import (  # noqa: E402
    PvcSizeError,
    capacity_reached,
    check_bound,
    check_expandable,
    parse_size,
    plan_pvc_sizes,
    pvc_capacity,
    resize_conditions,
    statefulset_pvc_names,
)

if HAS_KUBERNETES:
    import kubernetes


def _template_sizes(sts):
    sizes = {}
    for template in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
        storage = ((((template.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))
        sizes[(template.get("metadata") or {}).get("name")] = storage
    return sizes


def _wait_claims(core, namespace, names, done, timeout):
    """Watch the namespace's PVCs until ``done(pvc)`` holds for every one in ``names``.

    Returns the last PVCs by name and the names still pending at ``timeout``."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    while True:
        data = call_json(core.list_namespaced_persistent_volume_claim, namespace,
                         _what="list of PersistentVolumeClaims in namespace %s" % namespace)
        by_name = dict((p["metadata"]["name"], p) for p in data.get("items") or [])
        pending = [n for n in names if n not in by_name or not done(by_name[n])]
        if not pending:
            return by_name, []
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return by_name, pending
        watch = kubernetes.watch.Watch(return_type="object")
        try:
            for event in watch.stream(core.list_namespaced_persistent_volume_claim, namespace,
                                      resource_version=(data.get("metadata") or {}).get("resourceVersion"),
                                      timeout_seconds=max(1, int(min(remaining, 30))),
                                      _request_timeout=min(remaining, 30) + 10):
                obj = event.get("raw_object") or {}
                if (obj.get("metadata") or {}).get("name") in pending:
                    break  # re-evaluate from a fresh list
        except ApiException as exc:
            if exc.status != 410:
                raise
        finally:
            watch.stop()


ARGUMENT_SPEC = dict(
    argument_spec=dict(
        K8S_AUTH_ARGS,
        namespace=dict(type="str", required=True),
        statefulset=dict(type="str", default="elasticsearch"),
        size=dict(type="str", required=True),
        wait=dict(type="bool", default=False),
        wait_timeout=dict(type="int", default=300),
        claims_timeout=dict(type="int", default=0),
    ),
    supports_check_mode=True,
)


def run(params, check_mode, warn):
    if not HAS_KUBERNETES:
        raise entry.ModuleFailed(missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))

    namespace = params["namespace"]
    sts_name = params["statefulset"]
    size = params["size"]
    result = dict(changed=False, pvcs=[], missing=[])
    try:
        parse_size(size, "disk_size")
        api_client = client_from_params(params, notify=warn)
        core = kubernetes.client.CoreV1Api(api_client)
        apps = kubernetes.client.AppsV1Api(api_client)
        try:
            sts = call_json(apps.read_namespaced_stateful_set, sts_name, namespace,
                            _what="StatefulSet %s/%s" % (namespace, sts_name))
        except ApiException as exc:
            if exc.status == 404 and check_mode:
                return result  # a check of a new cluster: the StatefulSet would be created with its claims
            if exc.status == 404:
                raise entry.ModuleFailed("statefulset %s/%s not found" % (namespace, sts_name), **result)
            raise
        pvc_items = call_json(core.list_namespaced_persistent_volume_claim, namespace,
                              _what="list of PersistentVolumeClaims in namespace %s" % namespace).get("items") or []
        by_name = dict((p["metadata"]["name"], p) for p in pvc_items)
        names, missing = statefulset_pvc_names(sts, by_name)
        if missing and params["claims_timeout"] > 0 and not check_mode:
            latest, _pending = _wait_claims(core, namespace, missing, lambda pvc: True, params["claims_timeout"])
            by_name.update(latest)
            names, missing = statefulset_pvc_names(sts, by_name)
        result["missing"] = missing
        pvcs = [by_name[n] for n in names]

        # every check happens before the first patch
        plan = plan_pvc_sizes(pvcs, size, namespace)
        growing = [by_name[p["name"]] for p in plan if p["change"]]
        if growing:
            check_bound(growing, namespace)
            try:
                classes = call_json(kubernetes.client.StorageV1Api(api_client).list_storage_class,
                                    _what="list of StorageClasses").get("items") or []
            except ApiException as exc:
                classes = None
                warn("cannot list StorageClasses to check allowVolumeExpansion (%s); "
                     "the API server will refuse the patch if expansion is not allowed"
                     % api_error_message(exc))
            if classes is not None:
                check_expandable(growing, classes, namespace)

        for template, template_size in _template_sizes(sts).items():
            if template_size and parse_size(template_size, "template size") != parse_size(size, "disk_size"):
                warn("volumeClaimTemplate %s of statefulset %s requests %s (templates are immutable): "
                     "PVCs created later from it start at that size, not %s"
                     % (template, sts_name, template_size, size))

        result["pvcs"] = [dict(name=p["name"], old=p["old"], new=p["new"], changed=p["change"],
                               capacity=pvc_capacity(by_name[p["name"]])) for p in plan]
        result["changed"] = bool(growing)
        if check_mode or not growing:
            return result

        body = {"spec": {"resources": {"requests": {"storage": size}}}}
        for pvc in result["pvcs"]:
            if pvc["changed"]:
                patched = call_json(core.patch_namespaced_persistent_volume_claim, pvc["name"], namespace, body,
                                    _content_type="application/merge-patch+json",
                                    _what="PersistentVolumeClaim %s/%s" % (namespace, pvc["name"]))
                pvc["capacity"] = pvc_capacity(patched)

        if params["wait"]:
            names_changed = [e["name"] for e in result["pvcs"] if e["changed"]]
            latest, pending = _wait_claims(core, namespace, names_changed, lambda pvc: capacity_reached(pvc, size),
                                           params["wait_timeout"])
            for pvc in result["pvcs"]:
                if pvc["name"] in latest:
                    pvc["capacity"] = pvc_capacity(latest[pvc["name"]])
            if pending:
                raise entry.ModuleFailed("PVCs patched to %s but not expanded after %ss: %s" % (
                    size, params["wait_timeout"], ", ".join(
                        "%s (capacity %s, conditions %s)" % (
                            n, pvc_capacity(latest.get(n, {})), ",".join(resize_conditions(latest.get(n, {})))
                            or "none") for n in pending)), **result)
    except PvcSizeError as exc:
        raise entry.ModuleFailed(str(exc), **result)
    except K8sClientError as exc:
        raise entry.ModuleFailed("cannot connect to Kubernetes: %s" % exc, **result)
    except ApiException as exc:
        raise entry.ModuleFailed("Kubernetes API error while sizing the PVCs of statefulset %s/%s: %s" % (
            namespace, sts_name, api_error_message(exc)), **result)
    return result


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
