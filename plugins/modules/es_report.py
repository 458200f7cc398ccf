#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# ruff: noqa: E402 -- Ansible plugins keep DOCUMENTATION before the imports

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_report
short_description: Build a stage report of the tenant cluster creation
version_added: "0.1.0"
description:
  - Builds the report body of one stage (status, message, timestamp, user, service_name,
    namespace, deployment_id, details) exactly as the report contract says.
  - It writes nothing itself. The C(yunpeng.es_serverless.reports) callback plugin sees the
    C(es_report) key of the result and writes the report file under
    C(<data_dir>/deployment_reports/) and the log line. Enable that callback
    (C(ANSIBLE_CALLBACKS_ENABLED=yunpeng.es_serverless.reports)) or no report is written.
  - Do not set C(no_log) on report tasks; the callback would receive a censored result.
  - It fails, naming the path, when a path the callback would write is a symbolic link (the lock,
    C(deployment_reports/), the pair's report index and its folders, the log file); the callback
    refuses to write through a symlink, and it cannot fail a task itself.
  - Keys of I(details) named like passwords, tokens or secrets are removed, recursively.
author:
  - ES Serverless platform team (@yunpeng)
attributes:
  check_mode:
    support: full
    description: The module changes nothing; in check mode the callback does not write the report.
options:
  status:
    description: Report status.
    type: str
    required: true
    choices: [starting, namespace_created, gitlab_pulled, k8s_applied, resources_configured, disk_configured,
              gpu_configured, rollout_completed, tenant_synced, completed, deleting, resources_deleted, deleted,
              failed]
  request:
    description:
      - The request. At least C(user), C(service_name) and C(namespace); the full request for
        C(starting) and C(completed) (their details), C(disk_size) for C(disk_configured) and
        C(gpu_count) for C(gpu_configured) unless I(message) is given.
    type: dict
    required: true
  deployment_id:
    description: Id shared by all reports of one run.
    type: str
    required: true
  report_message:
    description:
      - "Message overriding the standard message of I(status), for example
        C(GitLab pull skipped: no GitLab URL configured)."
      - (The option cannot be called C(message); Ansible reserves that name.)
    type: str
  details:
    description: Extra details of the report.
    type: dict
  stage:
    description: For C(failed), the stage that failed.
    type: str
  error:
    description: For C(failed), the error.
    type: str
  flow:
    description:
      - For C(failed), the flow that failed, which words its message
        (C(Cluster creation failed at stage ...) or C(Cluster deletion failed at stage ...)).
    type: str
    choices: [create, delete]
    default: create
  data_dir:
    description: Data folder; the callback writes the report under C(<data_dir>/deployment_reports/).
    type: path
    required: true
  log_file:
    description: Deployment log receiving one line per report. Defaults to C(<data_dir>/deployment.log).
    type: path
"""

EXAMPLES = r"""
- name: Report stage 1
  yunpeng.es_serverless.es_report:
    status: starting
    request: "{{ es_req.request }}"
    deployment_id: "{{ es_deployment_id }}"
    data_dir: "{{ es_data_dir }}"
    log_file: "{{ es_log_file }}"

- name: Report the skipped GitLab pull
  yunpeng.es_serverless.es_report:
    status: gitlab_pulled
    report_message: "GitLab pull skipped: no GitLab URL configured"
    request: "{{ es_req.request }}"
    deployment_id: "{{ es_deployment_id }}"
    data_dir: "{{ es_data_dir }}"

- name: Report a failure
  yunpeng.es_serverless.es_report:
    status: failed
    stage: k8s_applied
    error: "{{ ansible_failed_result.msg }}"
    request:
      user: "{{ es_user }}"
      service_name: "{{ es_service_name }}"
      namespace: "{{ es_namespace }}"
    deployment_id: "{{ es_deployment_id }}"
    data_dir: "{{ es_data_dir }}"
"""

RETURN = r"""
es_report:
  description: What the report callback writes.
  returned: success
  type: dict
  contains:
    report:
      description: The report body.
      type: dict
      returned: success
      sample:
        status: disk_configured
        message: Disk size configured to 10Gi
        timestamp: "2024-01-01T00:00:00Z"
        user: test_user
        service_name: test_service
        namespace: es-test
        deployment_id: "20240101T000000-abc123"
    data_dir:
      description: The data folder.
      type: str
      returned: success
    log_file:
      description: The deployment log.
      type: str
      returned: success
    log_line:
      description: The log line the callback appends.
      type: str
      returned: success
      sample: "2024-01-01T00:00:00Z - User: test_user, Service: test_service, Namespace: es-test,
        Status: disk_configured, Message: Disk size configured to 10Gi"
    check_mode:
      description: True when built in check mode; the callback then writes nothing.
      type: bool
      returned: success
"""

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry, reports
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import MetadataStore

ARGUMENT_SPEC = dict(
    argument_spec=dict(
        status=dict(type="str", required=True, choices=list(reports.STATUSES)),
        request=dict(type="dict", required=True),
        deployment_id=dict(type="str", required=True),
        report_message=dict(type="str"),
        details=dict(type="dict"),
        stage=dict(type="str"),
        error=dict(type="str"),
        flow=dict(type="str", choices=list(reports.FAILED_MESSAGES), default="create"),
        data_dir=dict(type="path", required=True),
        log_file=dict(type="path"),
    ),
    required_if=[("status", "failed", ("stage", "error"))],
    supports_check_mode=True,
)


def run(params, check_mode, warn):
    status = params["status"]
    message = params["report_message"]
    details = dict(params["details"] or {})
    if status == "failed":
        if message is None:
            message = reports.failed_message(params["stage"], params["error"], params["flow"])
        details.setdefault("stage", params["stage"])
        details.setdefault("error", params["error"])
    try:
        body = reports.build(status, params["request"], params["deployment_id"], message=message,
                             details=details or None)
    except reports.ReportError as exc:
        raise entry.ModuleFailed(str(exc))
    log_file = params["log_file"] or reports.default_log_file(params["data_dir"])
    if not check_mode:
        try:
            MetadataStore(params["data_dir"]).check_report_paths(log_file, body["user"], body["service_name"])
        except OSError as exc:
            raise entry.ModuleFailed("the report cannot be written: %s" % exc)
    return dict(changed=False, es_report=dict(
        report=body,
        data_dir=params["data_dir"],
        log_file=log_file,
        log_line=reports.log_line(body),
        check_mode=check_mode,
    ))


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
