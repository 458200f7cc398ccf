"""Certificate authority and server certificate of the API simulator (test infrastructure)."""

import os

from tests.controlplane.pki import Authority, write

SERVER_NAMES = ("localhost", "kubernetes", "kubernetes.default.svc")


def generate(directory):
    """Write ``ca.crt``, ``server.crt`` and ``server.key`` to ``directory``;
    return ``(ca_pem, cert_path, key_path)``."""
    ca = Authority("kubesim-ca")
    cert, key = ca.issue("kube-apiserver", dns_names=SERVER_NAMES, ips=("127.0.0.1",), server=True)
    write(os.path.join(directory, "ca.crt"), ca.pem)
    cert_path = write(os.path.join(directory, "server.crt"), cert)
    key_path = write(os.path.join(directory, "server.key"), key, private=True)
    return ca.pem, cert_path, key_path
