"""pytest fixtures of the test control plane (test infrastructure).

``controlplane`` starts one real control plane for the whole session (a few
seconds with built binaries; ``scripts/control-plane build`` builds them) and
stops it at the end, or when the test process dies. ``NamespaceHygiene``
removes the namespaces a test created, so that tests sharing the session's
cluster do not see each other's tenants.
"""

import time

import pytest
from kubernetes import client, config

from .cluster import ControlPlane

SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}


@pytest.fixture(scope="session")
def controlplane():
    with ControlPlane() as cp:
        yield cp


def _namespaces(core):
    return {ns.metadata.name: ns.status.phase for ns in core.list_namespace().items}


def _terminating(core, prefix):
    return sorted(n for n, phase in _namespaces(core).items() if phase == "Terminating" and n.startswith(prefix))


def wait_terminated(core, prefix="", timeout=120):
    """Wait until no namespace (whose name starts with ``prefix``) is being deleted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _terminating(core, prefix):
            return
        time.sleep(0.2)
    raise AssertionError("namespaces still terminating after %d s: %s" % (timeout, _terminating(core, prefix)))


class NamespaceHygiene:
    """Around a test: wait for earlier deletions to finish (unless ``wait`` is
    false: a real namespace controller takes 5 to 10 s to remove one, so tests
    that never reuse a name need not wait), then delete, without waiting,
    every namespace the test created (with ``prefix``: only those whose
    name starts with it)."""

    def __init__(self, kubeconfig, wait=True, prefix=""):
        self.core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
        self.wait = wait
        self.prefix = prefix  # on a shared cluster: delete only namespaces named so

    def __enter__(self):
        if self.wait:
            wait_terminated(self.core, self.prefix)
        self.before = set(_namespaces(self.core))
        return self

    def __exit__(self, *exc):
        for name in sorted(set(_namespaces(self.core)) - self.before - SYSTEM_NAMESPACES):
            if not name.startswith(self.prefix):
                continue
            try:
                self.core.delete_namespace(name)
            except client.ApiException as e:
                if e.status != 404:
                    raise
