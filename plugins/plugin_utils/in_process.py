# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to the collection: run a module's work in the controller process.

The collection runs on the controller (its plays use the local connection), so
starting a Python process per task only to import the same libraries again is
pure overhead. An action plugin built on ``InProcessAction`` validates the task
arguments with the module file's own ``ARGUMENT_SPEC`` (one spec, documented in
the module) and calls the module's ``run`` directly. Because Ansible's strategy
loads the action class in the main process before forking a worker per task,
what the module imports (the ``kubernetes`` client, python-gitlab, PyYAML) is
imported once per run and shared by every worker.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import json

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.entry import ModuleFailed

_SPEC_CHECKS = ("mutually_exclusive", "required_together", "required_one_of", "required_if", "required_by")


class InProcessAction(ActionBase):
    """Base of the collection's action plugins; ``MODULE`` is the module file (a Python module)."""

    MODULE = None
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(InProcessAction, self).run(tmp, task_vars)
        spec = self.MODULE.ARGUMENT_SPEC
        # Plain data, as a module process would receive it: the templated arguments
        # arrive as Ansible's own str/dict subclasses, which e.g. YAML dumpers refuse.
        args = json.loads(json.dumps(self._task.args, default=str))
        validator = ArgumentSpecValidator(spec["argument_spec"],
                                          **dict((key, spec[key]) for key in _SPEC_CHECKS if key in spec))
        validation = validator.validate(args)
        if validation.error_messages:
            result.update(failed=True, msg="%s: %s" % (self._task.action, "; ".join(validation.error_messages)))
            return result
        params = validation.validated_parameters
        warnings = []
        try:
            # A module that can show a diff says so (SUPPORTS_DIFF) and gets --diff as ``diff``.
            extra = {"diff": bool(self._task.diff)} if getattr(self.MODULE, "SUPPORTS_DIFF", False) else {}
            outcome = self.MODULE.run(params, bool(self._task.check_mode), warnings.append, **extra)
        except ModuleFailed as exc:
            outcome = dict(exc.result, failed=True, msg=exc.msg)
        if warnings:
            outcome.setdefault("warnings", []).extend(warnings)
        result.update(remove_values(outcome, validation._no_log_values))  # pylint: disable=protected-access
        return result
