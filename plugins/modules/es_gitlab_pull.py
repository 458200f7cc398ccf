#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_gitlab_pull
short_description: Pull a tenant's configuration files from a GitLab repository, atomically and safely
description:
  - Resolves O(ref) (default the project's default branch) to one commit id and downloads O(files)
    and every file under the folder O(dir) at that commit, with the python-gitlab library.
  - Every path is checked first. Absolute paths, paths with C(..) or empty components, paths outside
    O(dir), symbolic links (tree mode C(120000)) and submodules are refused. Each file's content is
    checked against its git blob id.
  - Files are written into a temporary folder beside O(dest) that then replaces O(dest) with renames.
    A failed pull leaves the previous tree (or none) and no temporary folder.
  - The pulled tree mirrors repository paths. The result points at C(elasticsearch.yml) and
    C(jvm.options) found at C(<root>/config/) or C(<root>/), and lists the manifests (C(.yml),
    C(.yaml), C(.json)) under C(<root>/k8s/), where C(<root>) is O(dir) when given, then the top
    of the tree.
  - Error messages name the URL, project and path, and never contain the token.
version_added: "1.0.0"
author:
  - ES Serverless platform team (@yunpeng)
requirements:
  - python-gitlab
options:
  url:
    description:
      - Base URL of the GitLab server, for example C(https://gitlab.example.com).
    type: str
    required: true
  project:
    description:
      - Numeric id or C(group/project) path of the project.
    type: str
    required: true
  ref:
    description:
      - Branch, tag or commit to pull. Defaults to the project's default branch.
    type: str
  files:
    description:
      - Repository paths of single files to pull.
    type: list
    elements: str
    default: [docker-compose.yml]
  dir:
    description:
      - Repository folder pulled recursively (optional).
    type: str
  token:
    description:
      - Personal, project or group access token, sent as C(PRIVATE-TOKEN).
      - Defaults to the E(GITLAB_TOKEN) environment variable.
      - Prefer O(token_file) where the runner keeps a record of variables or environment
        (ansible-runner writes its environment to C(artifacts/<id>/command) and C(env)).
    type: str
  token_file:
    description:
      - File holding the token (surrounding whitespace ignored), read by the module on the controller,
        so the token is never a task argument, a variable or an environment variable.
      - When set, O(token) and E(GITLAB_TOKEN) are not used. A missing, unreadable or empty file fails
        the pull, naming the path; a file that others may read is used with a warning.
    type: path
  ca_path:
    description:
      - CA bundle (PEM) used to verify the server certificate.
    type: path
  validate_certs:
    description:
      - Whether to verify the server's TLS certificate.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each answer from the server.
    type: float
    default: 30
  dest:
    description:
      - Absolute path of the folder that receives the pulled tree; replaced as a whole.
    type: path
    required: true
attributes:
  check_mode:
    support: full
    description: Downloads and checks everything into a temporary folder, reports whether O(dest) would change,
      and leaves O(dest) untouched.
"""

EXAMPLES = r"""
- name: Pull the tenant configuration
  yunpeng.es_serverless.es_gitlab_pull:
    url: https://gitlab.example.com
    project: tenants/es-config
    ref: main
    files:
      - docker-compose.yml
    dir: alice
    token_file: /run/secrets/gitlab-token
    dest: /var/lib/es-serverless/workspace/alice_search/gitlab
  register: pulled
"""

RETURN = r"""
commit:
  description: Full id of the commit every file was fetched at.
  returned: success
  type: str
  sample: 5f4f500f40094fc656a5ad221541197682b3271b
ref:
  description: The ref that was resolved (the default branch when O(ref) was not given).
  returned: success
  type: str
  sample: main
url:
  description: The GitLab URL.
  returned: success
  type: str
  sample: https://gitlab.example.com
project:
  description: The project.
  returned: success
  type: dict
  contains:
    id:
      description: Numeric id.
      type: int
      sample: 42
    path_with_namespace:
      description: Full path.
      type: str
      sample: tenants/es-config
files:
  description: Pulled files, sorted by path.
  returned: success
  type: list
  elements: dict
  contains:
    path:
      description: Repository path, also the path under O(dest).
      type: str
      sample: config/elasticsearch.yml
    size:
      description: Size in bytes.
      type: int
      sample: 120
    sha256:
      description: SHA-256 of the content, hex.
      type: str
      sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
dest:
  description: The destination folder.
  returned: success
  type: str
  sample: /var/lib/es-serverless/workspace/alice_search/gitlab
elasticsearch_yml:
  description: Path of the pulled C(elasticsearch.yml), or null.
  returned: success
  type: str
  sample: /var/lib/es-serverless/workspace/alice_search/gitlab/elasticsearch.yml
jvm_options:
  description: Path of the pulled C(jvm.options), or null.
  returned: success
  type: str
  sample: /var/lib/es-serverless/workspace/alice_search/gitlab/jvm.options
manifests:
  description: Paths of the pulled Kubernetes manifests under C(k8s/), sorted.
  returned: success
  type: list
  elements: str
  sample: [/var/lib/es-serverless/workspace/alice_search/gitlab/k8s/configmap.yml]
error_kind:
  description: Class of the failure (V(unauthorized), V(not_found), V(unreachable), V(timeout), V(tls),
    V(unsafe_path), V(symlink), ...).
  returned: failure
  type: str
  sample: not_found
"""

import os  # noqa: E402
import stat  # noqa: E402

from ansible.module_utils.basic import env_fallback, missing_required_lib  # noqa: E402

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import entry, gitlab_pull  # noqa: E402

ARGUMENT_SPEC = dict(
    argument_spec=dict(
        url=dict(type="str", required=True),
        project=dict(type="str", required=True),
        ref=dict(type="str"),
        files=dict(type="list", elements="str", default=["docker-compose.yml"]),
        dir=dict(type="str"),
        token=dict(type="str", no_log=True, fallback=(env_fallback, ["GITLAB_TOKEN"])),
        token_file=dict(type="path"),
        ca_path=dict(type="path"),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="float", default=30),
        dest=dict(type="path", required=True),
    ),
    supports_check_mode=True,
)


def run(params, check_mode, warn):
    if not gitlab_pull.HAS_GITLAB:
        raise entry.ModuleFailed(missing_required_lib("python-gitlab"), exception=gitlab_pull.GITLAB_IMPORT_ERROR)
    token = params["token"]
    if params["token_file"]:
        token = _read_token_file(params["token_file"], warn)
    try:
        result = gitlab_pull.pull(
            params["url"], params["project"], params["dest"], ref=params["ref"], files=params["files"],
            directory=params["dir"], token=token, ca_path=params["ca_path"],
            validate_certs=params["validate_certs"], timeout=params["timeout"], check_mode=check_mode,
        )
    except gitlab_pull.PullError as err:
        raise entry.ModuleFailed(gitlab_pull.scrub(err.message, [token]), error_kind=err.kind)
    return result


def _read_token_file(path, warn):
    """The token in ``path``; failures name the path and the reason, never the content."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            token = handle.read().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise entry.ModuleFailed("token_file %s cannot be read: %s" % (path, reason), error_kind="token_file")
    if not token:
        raise entry.ModuleFailed("token_file %s is empty" % path, error_kind="token_file")
    if stat.S_IMODE(mode) & 0o077:
        warn("token_file %s may be read by other users (mode %04o); chmod 600 it" % (path, stat.S_IMODE(mode)))
    return token


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
