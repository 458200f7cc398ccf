"""Integration fixtures: a cluster and the Kubernetes clients the tests read
it with.

``cluster`` is, by ``ES_TEST_CLUSTER``:

- ``controlplane`` (the default): the real control plane of
  ``tests/controlplane`` (etcd, kube-apiserver, controllers, scheduler, KWOK
  nodes), one per session; the namespaces a test creates are deleted after it;
- ``kubesim``: the simulator, a new one per test;

and, whatever that says, the cluster ``ES_TEST_KUBECONFIG`` names when it is
set. ``sim_cluster`` is always a simulator, for the tests that need its HTTP
fault injection or its request log.
"""

import os

import pytest
from kubernetes import client, config

from tests.controlplane.pytest_plugin import NamespaceHygiene
from tests.kubesim.fixture import KubeSim

# Images that every test cluster fails to pull; on a real cluster the
# registry does not exist (.invalid), so the pull fails there too.
BAD_REGISTRY = "registry.invalid"
BACKENDS = ("controlplane", "kubesim")


class Cluster:
    def __init__(self, kubeconfig, sim=None, controlplane=None):
        self.kubeconfig = kubeconfig
        self.sim = sim
        self.controlplane = controlplane
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)

    def namespace_names(self):
        return {ns.metadata.name for ns in self.core.list_namespace().items
                if ns.status.phase != "Terminating"}

    def write_requests(self):
        """Requests that changed the cluster (simulator only)."""
        return [r for r in self.sim.requests() if r["method"] not in ("GET", "HEAD", "OPTIONS")]


def _simulator():
    return KubeSim(ready_delay=0.3, node_gpus=4, image_pull_fail=[BAD_REGISTRY])


@pytest.fixture
def cluster(request):
    real = os.environ.get("ES_TEST_KUBECONFIG")
    backend = os.environ.get("ES_TEST_CLUSTER", "controlplane")
    if real:  # someone else's cluster: remove only the tenant namespaces the tests made
        with NamespaceHygiene(real, prefix="es-"):
            yield Cluster(real)
    elif backend == "kubesim":
        with _simulator() as sim:
            yield Cluster(sim.kubeconfig, sim=sim)
    elif backend == "controlplane":
        cp = request.getfixturevalue("controlplane")
        with NamespaceHygiene(cp.kubeconfig):
            yield Cluster(cp.kubeconfig, controlplane=cp)
    else:
        raise pytest.UsageError("ES_TEST_CLUSTER must be one of %s, not %r" % (", ".join(BACKENDS), backend))


@pytest.fixture
def sim_cluster():
    with _simulator() as sim:
        yield Cluster(sim.kubeconfig, sim=sim)


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "es_data"
    return str(path)
