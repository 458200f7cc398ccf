#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_remove
short_description: Remove a tenant's Kubernetes objects and wait until they are gone
description:
  - The removal that the rollback of a failed create and the delete flow share.
  - Deletes the namespace O(namespace) with everything in it when it is the tenant's, that is when
    O(namespace_created) says this run created it, or when O(owner) is given and the namespace carries
    the label C(app.kubernetes.io/managed-by=es-serverless) and the annotations C(es.yunpeng.cn/user)
    and C(es.yunpeng.cn/service-name) of that owner (the create puts them only on a namespace its own
    request created). A namespace that existed before is never deleted.
  - Otherwise deletes only the collection's objects in it, with background propagation, O(objects),
    with O(managed) every object of the kinds the collection renders that carries the managed-by
    label, and with O(claims) the StatefulSet's data PVCs (label C(app=elasticsearch)) except
    O(keep_claims).
  - Then waits until everything it deleted is gone (a namespace passes through Terminating).
  - Runs in the controller process (action plugin).
version_added: "1.0.0"
author:
  - ES Serverless platform team (@yunpeng)
extends_documentation_fragment:
  - yunpeng.es_serverless.k8s_auth
options:
  namespace:
    description: The tenant namespace.
    type: str
    required: true
  namespace_created:
    description: The namespace was created by this run; delete it without looking at it.
    type: bool
    default: false
  owner:
    description:
      - The tenant, C(user) and C(service_name); the namespace is deleted when it is labelled and
        annotated as created by the collection for this tenant (one read of the namespace). A
        namespace that does not exist means there is nothing to remove.
    type: dict
  objects:
    description:
      - References (C(kind), C(api_version), C(name)) of objects in the namespace to delete when the
        namespace is not deleted, in the order given (for example what M(yunpeng.es_serverless.es_apply)
        returned as C(created)).
    type: list
    elements: dict
    default: []
  managed:
    description: When the namespace is not deleted, also delete every object labelled managed-by es-serverless.
    type: bool
    default: false
  claims:
    description: When the namespace is not deleted, also delete the data PVCs (label C(app=elasticsearch)).
    type: bool
    default: false
  keep_claims:
    description: Names of data PVCs that O(claims) keeps (those that existed before the run).
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds to wait until everything deleted is gone.
    type: int
    default: 300
notes:
  - Does not support check mode.
"""

EXAMPLES = r"""
- name: Delete the tenant's namespace if it is ours, else our objects and the data PVCs
  yunpeng.es_serverless.es_remove:
    namespace: es-test
    owner: {user: test_user, service_name: test_service}
    managed: true
    claims: true
  register: removed
"""

RETURN = r"""
namespace:
  description: The namespace.
  returned: always
  type: str
namespace_deleted:
  description: Whether the namespace was deleted (with everything in it).
  returned: always
  type: bool
deleted:
  description: References of the objects deleted (the namespace, or the objects in it), also on failure.
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "StatefulSet", "api_version": "apps/v1", "name": "elasticsearch", "namespace": "es-test"}]
elapsed:
  description: Seconds the removal took, the wait included.
  returned: always
  type: float
"""

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry  # noqa: E402
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import (  # noqa: E402
    K8S_AUTH_ARGS,
    RETRY_BUDGET,
    K8sClientError,
    client_from_params,
)
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.remove import RemoveError, remove  # noqa: E402

ARGUMENT_SPEC = dict(
    argument_spec=dict(
        K8S_AUTH_ARGS,
        namespace=dict(type="str", required=True),
        namespace_created=dict(type="bool", default=False),
        owner=dict(type="dict"),
        objects=dict(type="list", elements="dict", default=[]),
        managed=dict(type="bool", default=False),
        claims=dict(type="bool", default=False),
        keep_claims=dict(type="list", elements="str", default=[], no_log=False),
        timeout=dict(type="int", default=300),
    ),
    supports_check_mode=False,
)


def run(params, check_mode, warn):
    empty = dict(changed=False, namespace=params["namespace"], namespace_deleted=False, deleted=[], elapsed=0.0)
    try:
        api_client = client_from_params(params, notify=warn, retry_budget=min(RETRY_BUDGET, max(params["timeout"], 1)))
    except K8sClientError as exc:
        raise entry.ModuleFailed("cannot connect to Kubernetes: %s" % exc, **empty)
    options = dict((key, params[key]) for key in ("namespace_created", "owner", "objects", "managed", "claims",
                                                  "keep_claims", "timeout"))
    try:
        result = remove(api_client, params["namespace"], **options)
    except RemoveError as exc:
        raise entry.ModuleFailed(exc.message, changed=bool(exc.result["deleted"]), **exc.result)
    return dict(result, changed=bool(result["deleted"]))


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
