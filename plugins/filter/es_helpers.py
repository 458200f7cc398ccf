# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small filters for the stage roles. Their documentation is in the .yml files beside this one."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001 -- Ansible plugin boilerplate

import difflib
from decimal import Decimal

from ansible.errors import AnsibleFilterError
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.manifests import object_ref
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.request import (
    RequestError,
    parse_quantity,
    request_changes as _request_changes,
    statefulset_drift,
)
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.request import tenant_quota as _tenant_quota


def _has_registry(first):
    return "." in first or ":" in first or first == "localhost"


def mirror_image(image, mirror):
    if not isinstance(image, str) or not image.strip():
        raise AnsibleFilterError("mirror_image: the image must be a non-empty string, got %r" % (image,))
    if not mirror:
        return image
    mirror = mirror.strip().rstrip("/")
    if "://" in mirror:
        raise AnsibleFilterError(
            "es_registry_mirror: give a registry host such as 'mirror.local:5000', not a URL (%r)" % mirror)
    first, sep, rest = image.partition("/")
    if sep and _has_registry(first):
        path = rest
    elif sep:
        path = image
    else:
        path = "library/" + image
    return mirror + "/" + path


def name_refs(names):
    return [{"name": n} for n in names or []]


def heap_options(mem_limit, fraction=0.5):
    """JVM heap options for a container memory limit: half of it by default,
    in MiB, as Elasticsearch recommends."""
    total = parse_quantity(str(mem_limit))
    mib = int(total * Decimal(str(fraction)) / (1024 * 1024))
    if mib < 1:
        raise AnsibleFilterError("mem_limit: %r is too small for a JVM heap" % (mem_limit,))
    return ["-Xms%dm" % mib, "-Xmx%dm" % mib]


def tenant_quota(req, kibana_replicas=0, kibana_requests=None, kibana_limits=None, previous=None):
    try:
        return _tenant_quota(req, kibana_replicas, kibana_requests, kibana_limits, previous)
    except RequestError as exc:
        raise AnsibleFilterError("tenant_quota: %s" % exc)


def request_changes(req, previous=None, fields=None):
    return dict((field, dict(change)) for field, change in _request_changes(previous, req, fields).items())


def failure_message(result, limit=2000):
    """The message of a failed result; for a looped task, each failed item's, labelled."""
    result = result if isinstance(result, dict) else {}
    items = [item for item in result.get("results") or [] if isinstance(item, dict) and item.get("failed")]
    if items:
        parts = []
        for item in items:
            label = item.get("_ansible_item_label", item.get("item"))
            parts.append("item %s: %s" % (label, item.get("msg") or "unknown error"))
        message = "; ".join(parts)
    else:
        message = str(result.get("msg") or "unknown error")
    return message[:limit]


def unknown_variables(names, known, internal=None):
    """The names in ``names`` that are neither ``known`` (the variables a user sets) nor ``internal``
    (those the flows set themselves), each with the closest known name: ``es_replica (did you mean
    es_replicas?)``."""
    known = sorted(set(known or ()))
    allowed = set(known) | set(internal or ())
    out = []
    for name in sorted(set(names or ()) - allowed):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        out.append("%s (did you mean %s?)" % (name, close[0]) if close else name)
    return out


class FilterModule:
    def filters(self):
        return {
            "mirror_image": mirror_image,
            "name_refs": name_refs,
            "object_ref": object_ref,
            "heap_options": heap_options,
            "failure_message": failure_message,
            "request_changes": request_changes,
            "statefulset_drift": statefulset_drift,
            "tenant_quota": tenant_quota,
            "unknown_variables": unknown_variables,
        }
