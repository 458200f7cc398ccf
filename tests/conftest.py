"""Make the collection importable as ``ansible_collections.yunpeng.es_serverless``
from a checkout (``collections/ansible_collections/yunpeng/es_serverless`` is a
symlink to the repository root)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, "collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

pytest_plugins = ["tests.controlplane.pytest_plugin"]
