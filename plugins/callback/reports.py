# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# ruff: noqa: E402 -- Ansible plugins keep DOCUMENTATION before the imports

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
name: reports
type: notification
short_description: Write the stage reports of tenant cluster creation
version_added: "0.1.0"
author:
  - ES Serverless platform team (@yunpeng)
description:
  - For every successful task whose result carries C(es_report) (the
    M(yunpeng.es_serverless.es_report) module), writes the report file
    C(<data_dir>/deployment_reports/{user}_{service_name}_{timestamp}.json), lists it in the
    pair's report index and appends the report's line to the deployment log, through the
    metadata store, under the data folder's lock, atomically.
  - Looped report tasks are handled too (one report per item).
  - On construction it sets C(ES_SERVERLESS_REPORTS_CALLBACK=enabled) in the controller
    environment, so a play can check C(lookup('env', 'ES_SERVERLESS_REPORTS_CALLBACK'))
    before it creates anything.
  - On construction it also sets C(ES_SERVERLESS_RUN_PID) to the pid of the C(ansible-playbook)
    process, before Ansible forks its workers. The lease of a run (C(lease) in its deployment
    status) names that process, which lives as long as the run. Every report written moves on
    the lease of the run it belongs to, so a run needs no task of its own to keep its lease.
  - It is a notification callback, not a stdout callback; it prints nothing except errors
    through Ansible's display, so it works under ansible-runner and AWX.
  - A callback cannot fail a task. When a report cannot be written, the error is displayed
    loudly (with the report's log line) and a summary of every lost report is displayed again at the end
    of the playbook.
  - Reports built in check mode are not written.
requirements:
  - enable it, for example C(ANSIBLE_CALLBACKS_ENABLED=yunpeng.es_serverless.reports) or
    C(callbacks_enabled = yunpeng.es_serverless.reports) in C(ansible.cfg)
"""

import os

from ansible.plugins.callback import CallbackBase

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import reports
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import OWNER_PID_ENV, MetadataStore

ENV_FLAG = "ES_SERVERLESS_REPORTS_CALLBACK"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "yunpeng.es_serverless.reports"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super(CallbackModule, self).__init__(display=display)
        os.environ[ENV_FLAG] = "enabled"
        os.environ[OWNER_PID_ENV] = str(os.getpid())
        self.written = []
        self.failures = []

    @staticmethod
    def _result_of(result):
        data = getattr(result, "result", None)
        if data is None:
            data = getattr(result, "_result", None)
        return data if isinstance(data, dict) else {}

    def _handle(self, result):
        data = self._result_of(result)
        spec = data.get("es_report")
        if not isinstance(spec, dict) or data.get("failed") or data.get("skipped"):
            return None
        if spec.get("check_mode"):
            return None
        report = spec.get("report")
        try:
            path = MetadataStore(spec.get("data_dir")).write_report(spec.get("log_file"), report)
        except Exception as exc:  # any failure must be shown, never lost silently
            line = reports.log_line(report) if isinstance(report, dict) else repr(report)
            message = "yunpeng.es_serverless.reports: could not write report (%s): %s" % (line, exc)
            self.failures.append(message)
            self._display.error(message)
            return None
        self.written.append(path)
        return path

    def v2_runner_on_ok(self, result):
        self._handle(result)

    def v2_runner_item_on_ok(self, result):
        self._handle(result)

    def v2_playbook_on_stats(self, stats):
        if self.failures:
            self._display.error("yunpeng.es_serverless.reports: %d report(s) could not be written:\n%s"
                                % (len(self.failures), "\n".join(self.failures)))
