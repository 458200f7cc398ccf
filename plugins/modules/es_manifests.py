#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_manifests
short_description: Load a tenant's Kubernetes manifests, confined to the tenant namespace
description:
  - Reads C(.yml)/C(.yaml) (multi-document) and C(.json) manifests, for example those pulled from GitLab by
    M(yunpeng.es_serverless.es_gitlab_pull), and expands documents of kind C(List).
  - Every object needs C(apiVersion), C(kind) and C(metadata.name).
  - Cluster-scoped kinds (C(Namespace), C(ClusterRole), C(CustomResourceDefinition), webhook
    configurations, C(PersistentVolume), C(StorageClass), C(PriorityClass), ...) are refused.
  - An object whose C(metadata.namespace) is not O(namespace) is refused, with the file, the object and both
    namespaces in the message. A missing namespace is set to O(namespace).
  - Objects listed in O(reserved) and objects defined twice are refused.
  - Returns the definitions for a C(kubernetes.core.k8s) C(definition:) loop. Reads files only.
version_added: "1.0.0"
author:
  - ES Serverless platform team (@yunpeng)
options:
  paths:
    description:
      - Manifest files, read in this order.
    type: list
    elements: path
    required: true
  namespace:
    description:
      - The tenant namespace; the only namespace objects may be in.
    type: str
    required: true
  reserved:
    description:
      - C(Kind/name) of objects the platform manages, which tenant manifests may not define
        (for example C(StatefulSet/elasticsearch)).
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    description: Computes the same result; the module never changes anything.
"""

EXAMPLES = r"""
- name: Load the tenant's manifests
  yunpeng.es_serverless.es_manifests:
    paths: "{{ pulled.manifests }}"
    namespace: "{{ es_namespace }}"
    reserved: [StatefulSet/elasticsearch, Deployment/kibana, Service/elasticsearch, Service/kibana]
  register: tenant_manifests

- name: Apply them
  kubernetes.core.k8s:
    definition: "{{ item }}"
    state: present
  loop: "{{ tenant_manifests.definitions }}"
"""

RETURN = r"""
definitions:
  description: The checked objects, in file order, each with C(metadata.namespace) set to O(namespace).
  returned: success
  type: list
  elements: dict
  sample: [{apiVersion: v1, kind: ConfigMap, metadata: {name: extra, namespace: es-alice}, data: {a: b}}]
objects:
  description: One summary per definition, in the same order.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: The file the object came from.
      type: str
      sample: /data/workspace/alice_search/gitlab/k8s/extra.yml
    api_version:
      description: C(apiVersion) of the object.
      type: str
      sample: v1
    kind:
      description: C(kind) of the object.
      type: str
      sample: ConfigMap
    name:
      description: C(metadata.name) of the object.
      type: str
      sample: extra
"""

from ansible.module_utils.basic import missing_required_lib  # noqa: E402

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry, manifests  # noqa: E402

ARGUMENT_SPEC = dict(
    argument_spec=dict(
        paths=dict(type="list", elements="path", required=True),
        namespace=dict(type="str", required=True),
        reserved=dict(type="list", elements="str", default=[]),
    ),
    supports_check_mode=True,
)


def run(params, check_mode, warn):
    if not manifests.HAS_YAML:
        raise entry.ModuleFailed(missing_required_lib("PyYAML"), exception=manifests.YAML_IMPORT_ERROR)
    try:
        loaded = manifests.load_objects(params["paths"], params["namespace"],
                                        params["reserved"])
    except manifests.ManifestError as err:
        raise entry.ModuleFailed(err.message)
    objects = [{"path": path, "api_version": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"]}
               for path, obj in loaded]
    return dict(changed=False, definitions=[obj for _path, obj in loaded], objects=objects)


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
