# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# ruff: noqa: E402 -- Ansible plugins keep DOCUMENTATION before the imports

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
name: es_deployment
short_description: The deployment status of a tenant cluster with its latest report
version_added: "0.1.0"
author:
  - ES Serverless platform team (@yunpeng)
description:
  - Returns the deployment status entry of one user/service pair from a data folder
    (C(deployments/<user>/<service_name>.json)), with its latest report under C(latest_report),
    or C(None) when the pair has no deployment.
  - Reads only the pair's files. Runs on the controller.
options:
  _terms:
    description: The user and the service name, in that order.
    required: true
    type: list
    elements: str
  data_dir:
    description: Data folder holding C(deployments/) and C(deployment_reports/).
    type: path
    required: true
  query:
    description:
      - A JMESPath expression applied to the answer (the deployment entry with C(latest_report), or C(None)),
        as the C(query) option of the C(es_deployment_info) module and C(--query) of the C(es-serverless)
        command; the lookup then returns the expression's result instead of the answer.
      - An invalid expression, or one that cannot apply to the answer, is an error starting C(query:) that
        names the expression and the reason.
      - Needs the Python library C(jmespath).
    type: str
requirements:
  - jmespath (only for O(query))
"""

EXAMPLES = r"""
- name: Where is my cluster?
  ansible.builtin.debug:
    msg: "{{ lookup('yunpeng.es_serverless.es_deployment', 'test_user', 'test_service', data_dir=es_data_dir) }}"

- name: Fail unless the cluster is created
  ansible.builtin.assert:
    that:
      - dep is not none
      - dep.status == 'created'
  vars:
    dep: "{{ lookup('yunpeng.es_serverless.es_deployment', es_user, es_service_name, data_dir=es_data_dir) }}"

- name: Only the latest report's message
  ansible.builtin.debug:
    msg: "{{ lookup('yunpeng.es_serverless.es_deployment', 'test_user', 'test_service', data_dir=es_data_dir,
                    query='latest_report.report.message') }}"
"""

RETURN = r"""
_raw:
  description:
    - The deployment entry (user, service_name, namespace, deployment_id, status, stage, error,
      created_at, updated_at, reports_dir) plus C(latest_report) (C(file), C(path), C(report)) or C(None);
      C(None) when the pair has no deployment.
    - With O(query), the result of the expression over that answer instead.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import jsonquery
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import StoreError, query


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        data_dir = self.get_option("data_dir")
        expression = self.get_option("query")
        if len(terms) != 2:
            raise AnsibleError("es_deployment takes two terms, the user and the service name (got %d)" % len(terms))
        user, service_name = (str(term) for term in terms)
        entry = None
        try:
            answer = query(data_dir, user, service_name, log_lines=0)
            if answer["deployments"]:
                entry = dict(answer["deployments"][0])
                entry["latest_report"] = answer["latest_report"]
        except (StoreError, OSError, ValueError) as exc:
            raise AnsibleError("cannot read the deployment of %s/%s in %s: %s" % (user, service_name, data_dir, exc))
        if expression is None:
            return [entry]
        try:
            return [jsonquery.search(expression, entry)]
        except ValueError as exc:
            raise AnsibleError(str(exc))
