#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# ruff: noqa: E402 -- Ansible plugins keep DOCUMENTATION before the imports

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_deployment_info
short_description: Where is my cluster? Deployment status, tenant record, reports and log lines
version_added: "0.1.0"
description:
  - Reads the metadata store and the reports of a data folder and answers the questions of the
    original platform; list a deployment's report files, show the latest report, tail the log,
    and the deployment statuses filtered by user and service.
  - Reports and the tenant record are returned when both I(user) and I(service_name) are given.
author:
  - ES Serverless platform team (@yunpeng)
attributes:
  check_mode:
    support: full
    description: Read-only.
options:
  data_dir:
    description: Data folder holding C(deployments/), C(tenant_data/) and C(deployment_reports/).
    type: path
    required: true
  user:
    description: Only deployments of this user.
    type: str
  service_name:
    description: Only deployments of this service.
    type: str
  deployment_id:
    description: Only reports of this deployment (run).
    type: str
  log_file:
    description: Deployment log. Defaults to C(<data_dir>/deployment.log).
    type: path
  log_lines:
    description: How many of the last log lines (of the pair, when given) to return.
    type: int
    default: 20
  query:
    description:
      - A JMESPath expression applied to the answer (C(deployments), C(tenant), C(reports), C(latest_report),
        C(log_tail)), as the C(--query) option of the AWS and Azure CLIs and of the C(es-serverless) command;
        its result is returned as RV(query_result), next to the whole answer.
      - An invalid expression, or one that cannot apply to the answer, fails the task with a message starting
        C(query:) that names the expression and the reason.
      - Needs the Python library C(jmespath) on the controller.
    type: str
requirements:
  - jmespath (only for O(query))
"""

EXAMPLES = r"""
- name: Where is my cluster?
  yunpeng.es_serverless.es_deployment_info:
    data_dir: /var/lib/es_serverless
    user: test_user
    service_name: test_service
  register: info

- name: Show its status and latest report
  ansible.builtin.debug:
    msg: "{{ info.deployments[0].status }}: {{ info.latest_report.report.message }}"

- name: All deployments of a user
  yunpeng.es_serverless.es_deployment_info:
    data_dir: /var/lib/es_serverless
    user: test_user

- name: The services of a user whose cluster failed, with the stage it failed at
  yunpeng.es_serverless.es_deployment_info:
    data_dir: /var/lib/es_serverless
    user: test_user
    query: "deployments[?status=='failed'].{service: service_name, stage: stage}"
  register: failed

- name: Show them
  ansible.builtin.debug:
    var: failed.query_result
"""

RETURN = r"""
deployments:
  description:
    - Matching deployment status entries, sorted by user/service.
    - C(status) is C(creating), C(created), C(failed), C(deleting) or C(deleted); a deleted cluster keeps
      its entry (with C(previous_deployment_id), the deployment that was deleted) and its reports.
  returned: always
  type: list
  elements: dict
  sample:
    - user: test_user
      service_name: test_service
      namespace: es-test
      deployment_id: "20240101T000000-abc123"
      status: created
      stage: null
      error: null
      created_at: "2024-01-01T00:00:00Z"
      updated_at: "2024-01-01T00:02:00Z"
      reports_dir: /var/lib/es_serverless/deployment_reports
tenant:
  description: The tenant container record of the pair, or C(None) (also once the cluster is deleted).
  returned: always
  type: dict
reports:
  description: The pair's report files in order, each with C(file), C(path) and the C(report) body.
  returned: always
  type: list
  elements: dict
latest_report:
  description:
    - The last report of the deployment the pair's status names, or C(None).
    - A run refused at stage 0 (bad input, quota, a run already in progress) has its own deployment id;
      its C(failed) report is in I(reports) and in the log but never the latest report of a live cluster.
    - With I(deployment_id), the last element of I(reports).
  returned: always
  type: dict
log_tail:
  description: The last I(log_lines) lines of the deployment log (of the pair when given).
  returned: always
  type: list
  elements: str
query_result:
  description: The result of the JMESPath expression O(query) over the answer (any JSON type, C(None) when nothing
    matches).
  returned: when O(query) is given
  type: raw
  sample:
    - service: test_service
      stage: rollout
"""

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry, jsonquery
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import StoreError, query

ARGUMENT_SPEC = dict(
    argument_spec=dict(
        data_dir=dict(type="path", required=True),
        user=dict(type="str"),
        service_name=dict(type="str"),
        deployment_id=dict(type="str"),
        log_file=dict(type="path"),
        log_lines=dict(type="int", default=20),
        query=dict(type="str"),
    ),
    supports_check_mode=True,
)


def run(params, check_mode, warn):
    try:
        answer = query(params["data_dir"], params["user"], params["service_name"], params["deployment_id"],
                       params["log_file"], params["log_lines"])
    except (StoreError, OSError, ValueError) as exc:
        raise entry.ModuleFailed("cannot read %s: %s" % (params["data_dir"], exc), changed=False)
    result = dict(answer, changed=False)
    if params.get("query") is not None:
        try:
            result["query_result"] = jsonquery.search(params["query"], answer)
        except ValueError as exc:
            raise entry.ModuleFailed(str(exc), changed=False)
    return result


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
