# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to a Kubernetes config file, or the config itself as a dictionary.
      - Several files may be joined with C(:) as in C(KUBECONFIG).
      - Can also be set with the E(K8S_AUTH_KUBECONFIG) environment variable.
      - With no connection option at all, the in-cluster service account is tried first,
        then E(KUBECONFIG) and C(~/.kube/config).
    type: raw
  context:
    description:
      - Name of a context in the kubeconfig. Can also be set with E(K8S_AUTH_CONTEXT).
    type: str
  host:
    description:
      - URL of the Kubernetes API server. Can also be set with E(K8S_AUTH_HOST).
    type: str
  api_key:
    description:
      - Bearer token for the API server. Can also be set with E(K8S_AUTH_API_KEY).
    type: str
  validate_certs:
    description:
      - Whether to verify the API server's TLS certificate.
      - Can also be set with E(K8S_AUTH_VALIDATE_CERTS) or E(K8S_AUTH_VERIFY_SSL).
    type: bool
    aliases: [ verify_ssl ]
  ca_cert:
    description:
      - Path to the CA certificate chain of the API server.
      - Can also be set with E(K8S_AUTH_CA_CERT) or E(K8S_AUTH_SSL_CA_CERT).
    type: path
    aliases: [ ssl_ca_cert ]
  client_cert:
    description:
      - Path to a client certificate for the API server.
      - Can also be set with E(K8S_AUTH_CLIENT_CERT) or E(K8S_AUTH_CERT_FILE).
    type: path
    aliases: [ cert_file ]
  client_key:
    description:
      - Path to the key of O(client_cert).
      - Can also be set with E(K8S_AUTH_CLIENT_KEY) or E(K8S_AUTH_KEY_FILE).
    type: path
    aliases: [ key_file ]
requirements:
  - kubernetes (Python library)
"""
