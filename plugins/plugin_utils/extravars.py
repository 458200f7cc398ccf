# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hand tenant strings to ``ansible-playbook`` as data, never as templates.

Ansible templates the string values of extra vars and inventory variables when they are used, so
a tenant string such as ``{{ lookup('ansible.builtin.pipe', 'id') }}`` would run a command on the
controller before the request is validated. A value tagged ``!unsafe`` in a YAML file is never
templated. Every entry point that takes tenant strings from outside (a Python API, a CLI, an HTTP
service, the bench, the tests) writes them with ``write_extra_vars`` and passes the file as
``-e @<file>`` (ansible-runner: the same file, or ``cmdline``), or builds an inventory from
``dump_yaml(mark_unsafe(...))``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import os

import yaml

UNSAFE_TAG = "!unsafe"


class Unsafe(str):
    """A string written with the ``!unsafe`` tag."""


def mark_unsafe(value):
    """``value`` with every string in it (values and list items, not mapping keys) marked unsafe."""
    if isinstance(value, dict):
        return dict((key, mark_unsafe(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return [mark_unsafe(item) for item in value]
    if isinstance(value, str) and not isinstance(value, Unsafe):
        return Unsafe(value)
    return value


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Unsafe, lambda dumper, data: dumper.represent_scalar(UNSAFE_TAG, str(data), style="'"))


def dump_yaml(data):
    """YAML text of ``data``; strings marked with ``mark_unsafe`` carry ``!unsafe``, the rest is plain."""
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, allow_unicode=True, sort_keys=False)


def unsafe_yaml(variables):
    """YAML text of ``variables`` with every string value tagged ``!unsafe``."""
    return dump_yaml(mark_unsafe(dict(variables)))


def write_extra_vars(path, variables, mode=0o600):
    """Write ``variables`` to ``path`` for ``-e @path``, every string value tagged ``!unsafe``.

    The file may hold a token: it is created ``mode`` (0600), and a symlink at ``path`` is refused.
    A value meant to be templated cannot be passed this way; pass it as an ordinary ``-e`` then.
    """
    text = unsafe_yaml(variables)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path
