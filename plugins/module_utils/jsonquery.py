# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to the collection: a JMESPath expression over JSON data, the one rule of every ``query``.

The ``query`` option of the ``es_deployment_info`` module and of the ``es_deployment`` lookup, and
``--query`` of the ``es-serverless`` command, apply an expression with ``search``, as the AWS and
Azure CLIs do, with the ``jmespath`` package. Every error is a ``ValueError`` whose message starts
``query: `` and names the expression and jmespath's reason.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.request import echo

try:
    import jmespath
    import jmespath.exceptions

    HAS_JMESPATH = True
    JMESPATH_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the environment
    jmespath = None
    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = str(_exc)


def _reason(exc):
    """jmespath's reason on one line: its messages go on to repeat the expression under a caret."""
    text = str(exc).split("\n", 1)[0].strip()
    for tail in (", for expression:", ":"):
        if text.endswith(tail):
            text = text[:-len(tail)]
    return text or type(exc).__name__


def compile_query(expression):
    """The parsed ``expression``, to apply to data with its ``search`` method.

    Raises ``ValueError`` (``query: ...``) when it is not a valid JMESPath expression or jmespath
    is not installed, so that a caller can refuse a bad expression before doing anything else
    (functions are only resolved by ``search``).
    """
    if not HAS_JMESPATH:
        raise ValueError("query: the Python library jmespath is required for a query (pip install jmespath): %s"
                         % JMESPATH_IMPORT_ERROR)
    if not isinstance(expression, str):
        raise ValueError("query: must be a JMESPath expression, a string (got %s)" % echo(expression))
    try:
        return jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError("query: invalid JMESPath expression %s: %s" % (echo(expression), _reason(exc)))


def search(expression, data):
    """The result of the JMESPath ``expression`` over ``data`` (JSON-like: dicts, lists, strings,
    numbers, booleans, None).

    Raises ``ValueError`` whose message starts ``query: `` and names the expression and jmespath's
    reason: an invalid expression (``query: invalid JMESPath expression ...``, also an unknown function
    or a wrong number of arguments, which jmespath finds only when the expression runs), or one that
    cannot apply to ``data`` (``query: cannot apply ...``: a function given a value of the wrong type,
    such as ``length(`5`)``).
    """
    parsed = compile_query(expression)
    try:
        return parsed.search(data)
    except jmespath.exceptions.JMESPathTypeError as exc:
        raise ValueError("query: cannot apply JMESPath expression %s: %s" % (echo(expression), _reason(exc)))
    except jmespath.exceptions.JMESPathError as exc:
        # functions are resolved when the expression runs: an unknown one, or a wrong number of arguments
        raise ValueError("query: invalid JMESPath expression %s: %s" % (echo(expression), _reason(exc)))
