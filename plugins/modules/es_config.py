#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_config
short_description: Merge a tenant's elasticsearch.yml and jvm.options with the platform's settings
description:
  - Reads the tenant's C(elasticsearch.yml) (nested or flat dotted keys) and C(jvm.options), pulled for
    example by M(yunpeng.es_serverless.es_gitlab_pull), and merges them with the platform's settings.
  - Priority, highest first; O(required), the tenant's file, O(defaults). Keys are compared as flat dotted
    keys; a key also collides with its dotted parents and children. Tenant keys matching a O(protected)
    pattern are dropped.
  - The merged C(elasticsearch.yml) is flat YAML with sorted keys, the same bytes for the same input.
  - C(jvm.options) lines are checked as Elasticsearch parses them. Options in O(required_jvm) replace
    tenant options that set the same thing (C(-Xmx4g) against C(-Xmx1g)).
  - Tenant keys under a O(protected) pattern are returned in RV(refused); the other tenant keys and options
    that were dropped or replaced by a different value are returned in RV(overridden). Reads files only and
    changes nothing.
  - O(bootstrap) settings are written like O(required) ones but left out of RV(checksum_yml), so that dropping
    them once the cluster has formed changes no checksum taken over it.
version_added: "1.0.0"
author:
  - ES Serverless platform team (@yunpeng)
options:
  required:
    description:
      - Settings that always win over the tenant's (nested or flat dotted keys).
    type: dict
    default: {}
  defaults:
    description:
      - Settings used when the tenant's file does not set them.
    type: dict
    default: {}
  bootstrap:
    description:
      - Settings that always win, needed only while the cluster forms (C(cluster.initial_master_nodes)).
    type: dict
    default: {}
  protected:
    description:
      - Shell-style patterns (C(fnmatch)) of flat keys the tenant may not set at all, for example C(discovery.*).
      - A tenant key that is a dotted parent of what a pattern covers (C(xpack.security) under
        C(xpack.security.*)) is refused too.
    type: list
    elements: str
    default: []
  elasticsearch_yml:
    description:
      - Path of the tenant's C(elasticsearch.yml); omitted or null when the tenant has none.
    type: path
  jvm_options:
    description:
      - Path of the tenant's C(jvm.options); omitted or null when the tenant has none.
    type: path
  required_jvm:
    description:
      - JVM options that always win, for example C([-Xms1g, -Xmx1g]).
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    description: Computes the same result; the module never changes anything.
"""

EXAMPLES = r"""
- name: Merge the tenant's configuration
  yunpeng.es_serverless.es_config:
    required:
      cluster.name: "{{ es_user }}-{{ es_service_name }}"
      network.host: 0.0.0.0
      discovery.type: single-node
      path.data: /usr/share/elasticsearch/data
    defaults:
      xpack.security.enabled: false
    protected: ["discovery.*", "path.*"]
    elasticsearch_yml: "{{ pulled.elasticsearch_yml }}"
    jvm_options: "{{ pulled.jvm_options }}"
    required_jvm: [-Xms1g, -Xmx1g]
  register: esconfig
"""

RETURN = r"""
elasticsearch_yml:
  description: The merged C(elasticsearch.yml) text (flat keys, sorted).
  returned: success
  type: str
  sample: "cluster.name: alice-search\nnetwork.host: 0.0.0.0\n"
jvm_options:
  description: The merged C(jvm.options) text; null when there is neither a tenant file nor O(required_jvm).
  returned: success
  type: str
  sample: "-XX:+UseG1GC\n# required by the platform\n-Xms1g\n-Xmx1g\n"
checksum_yml:
  description: RV(elasticsearch_yml) without the O(bootstrap) settings, for a checksum that rolls pods.
  returned: success
  type: str
  sample: "cluster.name: alice-search\nnetwork.host: 0.0.0.0\n"
refused:
  description: Tenant keys under a O(protected) pattern, dropped (unless they repeat our value), sorted.
  returned: success
  type: list
  elements: str
  sample: [xpack.security.enabled]
overridden:
  description: Tenant keys, then tenant JVM options, that were dropped or replaced by a different value
    (the refused keys are in RV(refused) only).
  returned: success
  type: list
  elements: str
  sample: [cluster.name, -Xmx4g]
overridden_keys:
  description: The C(elasticsearch.yml) part of RV(overridden).
  returned: success
  type: list
  elements: str
  sample: [cluster.name]
overridden_jvm:
  description: The C(jvm.options) part of RV(overridden).
  returned: success
  type: list
  elements: str
  sample: [-Xmx4g]
tenant_keys:
  description: Flat keys set by the tenant's C(elasticsearch.yml), sorted.
  returned: success
  type: list
  elements: str
  sample: [cluster.name, indices.query.bool.max_clause_count]
"""

from ansible.module_utils.basic import missing_required_lib  # noqa: E402

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry, esconfig  # noqa: E402

ARGUMENT_SPEC = dict(
    argument_spec=dict(
        required=dict(type="dict", default={}),
        bootstrap=dict(type="dict", default={}),
        defaults=dict(type="dict", default={}),
        protected=dict(type="list", elements="str", default=[]),
        elasticsearch_yml=dict(type="path"),
        jvm_options=dict(type="path"),
        required_jvm=dict(type="list", elements="str", default=[]),
    ),
    supports_check_mode=True,
)


def _read(path, what):
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise entry.ModuleFailed("cannot read the tenant's %s at %s: %s" % (what, path, exc.strerror or exc))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise entry.ModuleFailed("the tenant's %s at %s is not UTF-8 text: %s" % (what, path, exc))


def run(params, check_mode, warn):
    if not esconfig.HAS_YAML:
        raise entry.ModuleFailed(missing_required_lib("PyYAML"), exception=esconfig.YAML_IMPORT_ERROR)
    es_path = params["elasticsearch_yml"]
    jvm_path = params["jvm_options"]
    es_text = _read(es_path, "elasticsearch.yml")
    jvm_text = _read(jvm_path, "jvm.options")
    try:
        source = es_path or "elasticsearch.yml"
        checksum_text = esconfig.merge(params["required"], params["defaults"], es_text, source=source,
                                       protected=params["protected"])[0]
        required = dict(esconfig.flatten(params["required"], "required settings"),
                        **esconfig.flatten(params["bootstrap"], "bootstrap settings"))
        text, overridden_keys, tenant_keys, refused = esconfig.merge(
            required, params["defaults"], es_text, source=source, protected=params["protected"])
        jvm, overridden_jvm = esconfig.merge_jvm(jvm_text, params["required_jvm"], source=jvm_path or "jvm.options")
    except esconfig.ConfigError as err:
        raise entry.ModuleFailed(err.message)
    return dict(
        changed=False,
        elasticsearch_yml=text,
        checksum_yml=checksum_text,
        refused=refused,
        jvm_options=jvm,
        overridden=overridden_keys + overridden_jvm,
        overridden_keys=overridden_keys,
        overridden_jvm=overridden_jvm,
        tenant_keys=tenant_keys,
    )


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
