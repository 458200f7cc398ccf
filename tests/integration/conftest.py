"""Integration fixtures: a cluster (the simulator by default, a real cluster
when ES_TEST_KUBECONFIG names its kubeconfig) and the Kubernetes clients the
tests read it with."""

import os

import pytest
from kubernetes import client, config

from tests.kubesim.fixture import KubeSim

# Images that every simulated cluster fails to pull; on a real cluster the
# registry does not exist (.invalid), so the pull fails there too.
BAD_REGISTRY = "registry.invalid"


class Cluster:
    def __init__(self, kubeconfig, sim=None):
        self.kubeconfig = kubeconfig
        self.sim = sim
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)

    def namespace_names(self):
        return {ns.metadata.name for ns in self.core.list_namespace().items}

    def write_requests(self):
        """Requests that changed the cluster (simulator only)."""
        return [r for r in self.sim.requests() if r["method"] not in ("GET", "HEAD", "OPTIONS")]


@pytest.fixture
def cluster(tmp_path):
    real = os.environ.get("ES_TEST_KUBECONFIG")
    if real:
        yield Cluster(real)
        return
    with KubeSim(ready_delay=0.3, node_gpus=4, image_pull_fail=[BAD_REGISTRY]) as sim:
        yield Cluster(sim.kubeconfig, sim)


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "es_data"
    return str(path)
