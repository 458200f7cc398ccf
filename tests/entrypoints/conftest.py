"""Fixtures of the entry point tests (Python API, es-serverless command, HTTP API, packaging): the
sandbox cluster (the simulator, as ``scripts/sandbox`` runs it) and a data folder."""

import os
import sys

import pytest

from tests.kubesim.fixture import KubeSim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


@pytest.fixture
def sandbox():
    """A new simulator per test: 16-CPU nodes with 4 GPUs, pods Ready after 0.3 s."""
    with KubeSim(ready_delay=0.3, node_gpus=4, image_pull_fail=["registry.invalid"]) as sim:
        yield sim


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "es_data")


def request_body(user="alice", service="search", **fields):
    """The original manager's POST /clusters body."""
    body = {"tenant_org_id": "test-org", "user": user, "service_name": service, "replicas": 1,
            "cpu": "500m/2", "memory": "1Gi/2Gi", "storage": "10Gi"}
    body.update(fields)
    return body
