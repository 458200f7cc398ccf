# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build hooks of the ``es-serverless`` wheel (hatchling), from a checkout or from a built collection.

``pip install .`` runs from a checkout (``galaxy.yml``) or from a collection that ``ansible-galaxy``
built or installed, whose folder holds ``MANIFEST.json`` and ``FILES.json`` instead of ``galaxy.yml``
(``ansible-galaxy collection build`` always leaves ``galaxy.yml`` out). The version is the collection's
version in either case (``collection_version()``, hatch's ``code`` version source), and the wheel carries the
collection as ``ansible_collections/yunpeng/es_serverless``: what Ansible reads to run it and nothing
else (no tests, docs or scripts).
"""

import json
import os
import re

ROOT = os.path.dirname(os.path.abspath(__file__))
COLLECTION = "ansible_collections/yunpeng/es_serverless"
# The collection's content in the wheel: Ansible loads these.
CONTENT = ("LICENSE", "meta/runtime.yml", "plugins", "playbooks", "roles")
# The collection's metadata: galaxy.yml in a checkout, MANIFEST.json in a built collection (its FILES.json
# lists what the built collection holds, more than the wheel carries).
METADATA = ("galaxy.yml", "MANIFEST.json")
VERSION_RE = re.compile(r"""^version:\s*['"]?([0-9][^\s'"#]*)""", re.MULTILINE)


def collection_version(root=ROOT):
    """The collection's version: ``galaxy.yml``'s ``version``, or ``MANIFEST.json``'s
    ``collection_info.version`` in a built collection."""
    galaxy = os.path.join(root, "galaxy.yml")
    if os.path.isfile(galaxy):
        with open(galaxy, encoding="utf-8") as handle:
            found = VERSION_RE.search(handle.read())
        if not found:
            raise ValueError("%s has no version" % galaxy)
        return found.group(1)
    manifest = os.path.join(root, "MANIFEST.json")
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as handle:
            return json.load(handle)["collection_info"]["version"]
    raise ValueError("%s holds neither galaxy.yml nor MANIFEST.json: not the collection's folder" % root)


def collection_files(root=ROOT):
    """``{source: path in the wheel}`` of the collection's content and metadata found under ``root``."""
    missing = [name for name in CONTENT if not os.path.exists(os.path.join(root, name))]
    if missing:
        raise ValueError("%s lacks %s: not the collection's folder" % (root, ", ".join(missing)))
    return dict((os.path.join(root, name), "%s/%s" % (COLLECTION, name))
                for name in CONTENT + METADATA if os.path.exists(os.path.join(root, name)))


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # imported outside a build (ansible-test sanity, ruff): only the functions above are used
    BuildHookInterface = object


class CustomBuildHook(BuildHookInterface):
    """Puts the collection into the wheel (``[tool.hatch.build.targets.wheel.hooks.custom]``)."""

    def initialize(self, version, build_data):  # pylint: disable=unused-argument
        if self.target_name == "wheel":
            build_data["force_include"].update(collection_files(self.root))
