# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to the collection: the one error model and entry point of its modules.

Each module file holds its ``ARGUMENT_SPEC`` (the ``AnsibleModule`` keyword
arguments) and a ``run(params, check_mode, warn)`` that returns the result or
raises ``ModuleFailed``. The collection's action plugins call ``run`` in the
controller process; ``main`` runs it as a module process.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001


class ModuleFailed(Exception):
    """A task failure: ``msg`` plus the fields of the failed result."""

    def __init__(self, msg, **result):
        super(ModuleFailed, self).__init__(msg)
        self.msg = msg
        self.result = result


def main(argument_spec, run, diff=False):
    """Run ``run`` as a module process with ``argument_spec`` (AnsibleModule keyword arguments).

    With ``diff``, ``run`` takes a fourth argument, ``diff``: whether the task runs with ``--diff``.
    """
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(**argument_spec)
    extra = {"diff": module._diff} if diff else {}  # pylint: disable=protected-access
    try:
        result = run(module.params, module.check_mode, module.warn, **extra)
    except ModuleFailed as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)
