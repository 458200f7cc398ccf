#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_apply
short_description: Apply a tenant's Kubernetes objects in one call with server-side apply
description:
  - Applies O(definitions) in order with server-side apply under the field manager C(es-serverless),
    one request per object and no read before the write. Conflicts with other field managers are
    forced, because these objects are the collection's.
  - The answer of each request says whether this call created the object, so a rollback removes
    exactly what the run created, also when the call fails part-way (RV(created) is returned then too).
  - Kinds of the stable Kubernetes API the collection renders are mapped without discovery; any other
    kind (a tenant's manifests) is looked up once per group version.
  - With O(create_only), objects are created when absent and never changed (generated credentials).
  - In check mode every request is a server-side dry run; objects whose namespace does not exist yet
    are reported as to be created.
  - With C(--diff) each object is read first and the diff shows every object created or changed,
    before and after (in check mode, as the dry run would leave it), without server-set metadata,
    status or Secret data.
  - Runs in the controller process (action plugin).
version_added: "1.0.0"
author:
  - ES Serverless platform team (@yunpeng)
extends_documentation_fragment:
  - yunpeng.es_serverless.k8s_auth
options:
  definitions:
    description:
      - Kubernetes objects, each with C(apiVersion), C(kind) and C(metadata.name).
    type: list
    elements: dict
    required: true
  namespace:
    description:
      - Namespace of namespaced objects that do not name one.
    type: str
  create_only:
    description:
      - Create objects that do not exist and leave existing ones untouched.
    type: bool
    default: false
  snapshot:
    description:
      - Read each object before applying it. RV(changed_objects) then lists exactly the objects whose
        resourceVersion moved, and RV(previous) holds what they were, for a rollback. One more request
        per object; an update uses it, a create does not need it.
    type: bool
    default: false
  recreate:
    description:
      - When Kubernetes refuses a StatefulSet change (a field other than replicas, template, update
        strategy, ordinals, retention policy or minReadySeconds, such as a larger volumeClaimTemplates
        size), delete the StatefulSet with its pods and claims orphaned, wait until it is gone and apply
        it again. The new StatefulSet adopts the running pods; they roll only if the pod template changed.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait for a StatefulSet deleted by O(recreate) to be gone.
    type: int
    default: 60
notes:
  - Supports check mode and diff mode.
"""

EXAMPLES = r"""
- name: Apply the core objects
  yunpeng.es_serverless.es_apply:
    namespace: es-test
    definitions: "{{ lookup('ansible.builtin.template', 'resources.yml.j2') | ansible.builtin.from_yaml_all | list }}"
  register: applied
"""

RETURN = r"""
objects:
  description: Reference of every object applied, in order, with C(created) true when this call created it.
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "ConfigMap", "api_version": "v1", "name": "elasticsearch-config", "namespace": "es-test",
            "created": true}]
created:
  description: References of the objects this call created (also on failure), for a rollback.
  returned: always
  type: list
  elements: dict
changed_objects:
  description: References of the objects this call created or changed (with O(snapshot), by resourceVersion).
  returned: always
  type: list
  elements: dict
recreated:
  description: References of the StatefulSets that O(recreate) deleted and applied again.
  returned: always
  type: list
  elements: dict
previous:
  description:
    - With O(snapshot), each changed object that existed before, as the API server held it, without
      server-set metadata and status (Secrets never), ready to be applied back by a rollback.
  returned: always
  type: list
  elements: dict
resources:
  description: The objects as the API server answered (Secrets without their data).
  returned: success
  type: list
  elements: dict
"""

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.apply import ApplyError, apply_objects  # noqa: E402
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry  # noqa: E402
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import (  # noqa: E402
    K8S_AUTH_ARGS,
    K8sClientError,
    client_from_params,
)

ARGUMENT_SPEC = dict(
    argument_spec=dict(
        K8S_AUTH_ARGS,
        definitions=dict(type="list", elements="dict", required=True),
        namespace=dict(type="str"),
        create_only=dict(type="bool", default=False),
        snapshot=dict(type="bool", default=False),
        recreate=dict(type="bool", default=False),
        wait_timeout=dict(type="int", default=60),
    ),
    supports_check_mode=True,
)


def _outcome(applied):
    refs = [entry["ref"] for entry in applied]
    changed = [entry for entry in applied if entry["changed"]]
    return dict(changed=bool(changed), objects=refs, created=[ref for ref in refs if ref["created"]],
                changed_objects=[entry["ref"] for entry in changed],
                recreated=[entry["ref"] for entry in applied if entry.get("recreated")],
                previous=[entry["previous"] for entry in changed if entry.get("previous")])


SUPPORTS_DIFF = True


def run(params, check_mode, warn, diff=False):
    try:
        api_client = client_from_params(params, notify=warn)
    except K8sClientError as exc:
        raise entry.ModuleFailed("cannot connect to Kubernetes: %s" % exc, changed=False, objects=[], created=[])
    try:
        applied = apply_objects(api_client, params["definitions"], params["namespace"],
                                create_only=params["create_only"], check_mode=check_mode,
                                snapshot=params["snapshot"], recreate=params["recreate"],
                                timeout=params["wait_timeout"], diff=diff)
    except ApplyError as exc:
        raise entry.ModuleFailed(exc.message, **_outcome(exc.applied))
    result = dict(_outcome(applied), resources=[entry["object"] for entry in applied])
    if diff:
        result["diff"] = [entry["diff"] for entry in applied if entry.get("diff") and entry["changed"]]
    return result


def main():
    entry.main(ARGUMENT_SPEC, run, diff=True)


if __name__ == "__main__":
    main()
