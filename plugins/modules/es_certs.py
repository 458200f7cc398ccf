#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: es_certs
short_description: Create a tenant cluster's CA, TLS certificates and Kibana token once, in one Secret
description:
  - Makes a CA for the tenant, a transport and an HTTP certificate signed by it (ECDSA P-256 keys, PEM) that
    name the Services C(elasticsearch) and C(elasticsearch-headless) and every pod behind the headless Service,
    and a service-account token for C(elastic/kibana) with the C(service_tokens) line Elasticsearch verifies it
    with.
  - Creates them as one Secret O(name) in O(namespace) (keys C(ca.crt), C(ca.key), C(transport.crt),
    C(transport.key), C(http.crt), C(http.key), C(service_tokens), C(kibana-token)). An existing Secret is kept
    as it is, so a running cluster keeps the CA its nodes trust; its CA certificate is returned then.
  - Without O(read_first) the Secret is created without a read before (one request for a new tenant; the
    material is generated in milliseconds and thrown away when the Secret exists). With O(read_first) it is
    read first and material is generated only when it is missing.
  - Returns the CA certificate only; no private key or token is ever returned.
  - Runs in the controller process (action plugin). Supports check mode (server-side dry run).
version_added: "1.0.0"
author:
  - ES Serverless platform team (@yunpeng)
extends_documentation_fragment:
  - yunpeng.es_serverless.k8s_auth
requirements:
  - cryptography
options:
  namespace:
    description:
      - Namespace of the tenant cluster; the certificates name its Services.
    type: str
    required: true
  name:
    description:
      - Name of the Secret.
    type: str
    required: true
  labels:
    description:
      - Labels of the Secret when it is created.
    type: dict
    default: {}
  read_first:
    description:
      - Read the Secret before creating it (a cluster that most likely has one already).
    type: bool
    default: false
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Create the tenant's certificates and Kibana token (kept when they exist)
  yunpeng.es_serverless.es_certs:
    namespace: es-test
    name: elasticsearch-security
  register: es_certs
  no_log: true
"""

RETURN = r"""
ca_crt:
  description: The CA certificate (PEM) of the Secret in effect, for clients to trust.
  returned: success
  type: str
objects:
  description: Reference of the Secret, with C(created) true when this call created it.
  returned: always
  type: list
  elements: dict
created:
  description: References of what this call created (also on failure), for a rollback.
  returned: always
  type: list
  elements: dict
"""

import base64  # noqa: E402

from ansible.module_utils.basic import missing_required_lib  # noqa: E402

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import certs, entry  # noqa: E402
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.apply import ApplyError, apply_objects  # noqa: E402
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.manifests import object_ref  # noqa: E402
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import (  # noqa: E402
    K8S_AUTH_ARGS,
    ApiException,
    K8sClientError,
    client_from_params,
    request_json,
)

ARGUMENT_SPEC = dict(
    argument_spec=dict(
        K8S_AUTH_ARGS,
        namespace=dict(type="str", required=True),
        name=dict(type="str", required=True),
        labels=dict(type="dict", default={}),
        read_first=dict(type="bool", default=False),
    ),
    supports_check_mode=True,
)


def _failed(msg):
    """A failure before anything was created (the Secret is the only object)."""
    return entry.ModuleFailed(msg, changed=False, objects=[], created=[])


def _read(api_client, namespace, name):
    """The existing Secret's CA certificate, or None when there is no Secret."""
    try:
        _status, obj = request_json(api_client, "GET", "/api/v1/namespaces/%s/secrets/%s" % (namespace, name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        # Never the body: it would be the Secret.
        raise _failed("cannot read Secret/%s in namespace %s: %s %s" % (name, namespace, exc.status, exc.reason))
    data = obj.get("data") or {}
    missing = [key for key in certs.SECRET_KEYS if key not in data]
    if missing:
        raise _failed("Secret/%s in namespace %s exists without %s; delete it to have it made again "
                      "(its cluster's pods restart with the new CA)" % (name, namespace, ", ".join(missing)))
    return base64.b64decode(data[certs.CA_CERT]).decode("ascii")


def run(params, check_mode, warn):
    if not certs.HAS_CRYPTOGRAPHY:
        raise entry.ModuleFailed(missing_required_lib("cryptography"), exception=certs.CRYPTOGRAPHY_IMPORT_ERROR,
                                 changed=False, objects=[], created=[])
    namespace, name = params["namespace"], params["name"]
    try:
        api_client = client_from_params(params, notify=warn)
    except K8sClientError as exc:
        raise _failed("cannot connect to Kubernetes: %s" % exc)
    ref = {"kind": "Secret", "api_version": "v1", "name": name, "namespace": namespace}
    if params["read_first"]:
        try:
            existing = _read(api_client, namespace, name)
        except K8sClientError as exc:
            raise _failed(str(exc))
        if existing is not None:
            return dict(changed=False, ca_crt=existing, objects=[dict(ref, created=False)], created=[])
    try:
        material = certs.bundle(namespace)
    except certs.CertError as exc:
        raise _failed(str(exc))
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": name, "namespace": namespace, "labels": params["labels"]},
              "stringData": material}
    try:
        applied = apply_objects(api_client, [secret], namespace, create_only=True, check_mode=check_mode)
        created = applied[0]["ref"]["created"]
        ca_crt = material[certs.CA_CERT] if created else _read(api_client, namespace, name)
    except ApplyError as exc:
        raise _failed(exc.message)
    except K8sClientError as exc:
        raise _failed(str(exc))
    if ca_crt is None:  # deleted between the create and the read
        raise _failed("Secret/%s in namespace %s disappeared while it was read" % (name, namespace))
    ref = object_ref(secret, created)
    return dict(changed=created, ca_crt=ca_crt, objects=[ref], created=[ref] if created else [])


def main():
    entry.main(ARGUMENT_SPEC, run)


if __name__ == "__main__":
    main()
