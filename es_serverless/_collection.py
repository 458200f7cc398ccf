"""Where the collection is: the package imports its rules from the collection and runs its playbooks.

Installed with ``pip install .`` (or from the built collection's folder), the wheel carries the collection
as ``ansible_collections/yunpeng/es_serverless`` next to this package, where Ansible finds it on
``sys.path``. In a checkout, ``collections/ansible_collections/yunpeng/es_serverless`` links to the
repository, and that folder is put on ``sys.path`` when the collection is not importable otherwise.
"""

import importlib
import os
import sys

PACKAGE = "ansible_collections.yunpeng.es_serverless"
_CHECKOUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "collections")


def _locate():
    try:
        found = importlib.import_module(PACKAGE + ".plugins.module_utils.request")
    except ImportError:
        if not os.path.isdir(os.path.join(_CHECKOUT, "ansible_collections", "yunpeng", "es_serverless")):
            raise
        sys.path.append(_CHECKOUT)
        found = importlib.import_module(PACKAGE + ".plugins.module_utils.request")
    # <root>/ansible_collections/yunpeng/es_serverless/plugins/module_utils/request.py -> <root>
    path = found.__file__
    for _level in range(6):
        path = os.path.dirname(path)
    return path


COLLECTIONS_PATH = _locate()


def module_utils(name, package="module_utils"):
    """The collection's ``plugins/<package>/<name>.py``."""
    return importlib.import_module("%s.plugins.%s.%s" % (PACKAGE, package, name))
