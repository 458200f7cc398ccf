#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# ruff: noqa: E402 -- Ansible plugins keep DOCUMENTATION before the imports

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_request
short_description: Validate and normalize a tenant Elasticsearch cluster request
version_added: "0.1.0"
description:
  - Applies the defaults and every validation rule of a tenant cluster request
    (names that become file names, DNS-1123 namespace, Kubernetes quantities,
    request not above limit, integer ranges).
  - Fails with a message that names the field and the rule; nothing is written.
  - Options take raw values so that the module itself, not Ansible's type
    conversion, explains what is wrong (for example C(True) is refused for I(replicas)).
author:
  - ES Serverless platform team (@yunpeng)
attributes:
  check_mode:
    support: full
    description: The module never changes anything.
options:
  user:
    description: Tenant user id; 1-63 letters, digits, C(.), C(_) or C(-), starting with a letter or digit, no C(..).
    type: raw
  service_name:
    description: The tenant's service (one Elasticsearch cluster); same rule as I(user).
    type: raw
  namespace:
    description: Kubernetes namespace of the cluster; a DNS-1123 label.
    type: raw
  replicas:
    description: Number of Elasticsearch nodes, 1 to 100. Defaults to C(1).
    type: raw
  cpu_request:
    description: CPU request per Elasticsearch container (Kubernetes quantity). Defaults to C(500m).
    type: raw
  cpu_limit:
    description: CPU limit per Elasticsearch container, not below I(cpu_request). Defaults to C(2).
    type: raw
  mem_request:
    description: Memory request per Elasticsearch container. Defaults to C(1Gi).
    type: raw
  mem_limit:
    description: Memory limit per Elasticsearch container, not below I(mem_request). Defaults to C(2Gi).
    type: raw
  disk_size:
    description: Volume size per Elasticsearch node. Defaults to C(10Gi).
    type: raw
  gpu_count:
    description: C(nvidia.com/gpu) limit per Elasticsearch container, 0 or more. Defaults to C(0).
    type: raw
  dimension:
    description: Vector dimension of the tenant's data, 1 to 4096. Defaults to C(128).
    type: raw
  vector_count:
    description: Expected number of vectors, 0 or more. Defaults to C(10000).
    type: raw
  index_limit:
    description: Maximum number of indices, 1 or more. Defaults to C(100).
    type: raw
  tenant_org_id:
    description: Organisation of the tenant; empty or 1-253 letters, digits, C(.), C(_), C(:), C(@) or C(-).
    type: raw
"""

EXAMPLES = r"""
- name: Validate the request
  yunpeng.es_serverless.es_request:
    user: "{{ es_user }}"
    service_name: "{{ es_service_name }}"
    namespace: "{{ es_namespace }}"
    replicas: "{{ es_replicas }}"
    gpu_count: "{{ es_gpu_count }}"
  register: es_req

- name: Use the normalized request
  ansible.builtin.debug:
    var: es_req.request
"""

RETURN = r"""
request:
  description: The normalized request, every field with its default applied; integers are integers.
  returned: success
  type: dict
  sample:
    user: test_user
    service_name: test_service
    namespace: es-test
    replicas: 1
    cpu_request: 500m
    cpu_limit: "2"
    mem_request: 1Gi
    mem_limit: 2Gi
    disk_size: 10Gi
    gpu_count: 0
    dimension: 128
    vector_count: 10000
    index_limit: 100
    tenant_org_id: ""
record:
  description: Preview of the tenant container record fields.
  returned: success
  type: dict
  sample:
    user: test_user
    service_name: test_service
    namespace: es-test
    replicas: 1
    cpu: 500m/2
    memory: 1Gi/2Gi
    disk: 10Gi
    gpu_count: 0
    dimension: 128
    vector_count: 10000
    index_limit: 100
    tenant_org_id: ""
field:
  description: On failure, the request field that broke a rule.
  returned: failure
  type: str
  sample: user
rule:
  description: On failure, the rule that was broken.
  returned: failure
  type: str
  sample: must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit (got 'a b')
"""

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.request import (
    REQUEST_FIELDS,
    RequestError,
    record_fields,
    validate,
)

ARGUMENT_SPEC = dict(
    argument_spec=dict((field, dict(type="raw")) for field in REQUEST_FIELDS),
    supports_check_mode=True,
)


def run(params, check_mode, warn):
    try:
        req = validate(dict((field, params.get(field)) for field in REQUEST_FIELDS))
    except RequestError as exc:
        raise entry.ModuleFailed(str(exc), field=exc.field, rule=exc.rule)
    return dict(changed=False, request=dict(req), record=dict(record_fields(req)))


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
