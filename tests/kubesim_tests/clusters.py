"""Both test clusters behind one fixture (test infrastructure).

``k8s`` is parametrized over ``kubesim`` (the simulator, a fresh one per
test) and ``controlplane`` (the session's real control plane, see
``tests/controlplane``), so a test using it runs once on each and its id
says where (``test_refusals[kubesim]``, ``test_refusals[controlplane]``).
A test that passes on one and fails on the other has found a difference of
the simulator: fix the simulator, or document the difference in
``docs/kubesim.md`` ("Known differences from a real API server").

The simulator is configured as the control plane is: the same image and
crash substrings (``registry.invalid``, ``crash-loop``), nodes of 16 cpu,
64Gi and 4 ``nvidia.com/gpu``, pods Ready after 0.3 s. The simulator has one
node, the control plane two: tests read the node count from the cluster.

On the control plane every namespace a test creates is deleted after it
(without waiting: real deletion takes seconds), so tests use unique
namespace names (``k8s.unique("es")``) on both clusters.

Use with ``pytest_plugins = ["tests.kubesim.pytest_plugin", "tests.kubesim_tests.clusters"]``.
"""

import base64
import json
import os
import secrets
import ssl
import tempfile
import urllib.request
from contextlib import contextmanager

import pytest
import yaml
from kubernetes import config

from tests.kubesim.fixture import send

CLUSTERS = ["kubesim", "controlplane"]
SIM_SETTINGS = {"ready_delay": 0.3, "image_pull_fail": ["registry.invalid"], "crash": ["crash-loop"],
                "node_cpu": "16", "node_memory": "64Gi", "node_gpus": 4}


class Cluster:
    """A cluster reached through its kubeconfig, the same way on both."""

    def __init__(self, name, kubeconfig, workdir, sim=None):
        self.name = name
        self.kubeconfig = kubeconfig
        self.sim = sim  # the KubeSim, for simulator-only settings; None on the control plane
        with open(kubeconfig) as f:
            cfg = yaml.safe_load(f)
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.url = cluster["server"]
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self._anonymous_ssl = ssl.create_default_context(cadata=ca)
        self._ssl = ssl.create_default_context(cadata=ca)
        self._token = user.get("token")
        if "client-certificate-data" in user:
            cert, key = os.path.join(workdir, "client.crt"), os.path.join(workdir, "client.key")
            for path, data in ((cert, user["client-certificate-data"]), (key, user["client-key-data"])):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(base64.b64decode(data))
            self._ssl.load_cert_chain(cert, key)

    def __repr__(self):
        return "<Cluster %s %s>" % (self.name, self.url)

    @property
    def is_sim(self):
        return self.sim is not None

    @staticmethod
    def unique(prefix="es"):
        """A name no other test uses (namespaces outlive a test on the control plane)."""
        return "%s-%s" % (prefix, secrets.token_hex(3))

    def env(self):
        """Environment for child processes (``KUBECONFIG`` set)."""
        return dict(os.environ, KUBECONFIG=self.kubeconfig)

    def api_client(self):
        return config.new_client_from_config(config_file=self.kubeconfig)

    def _request(self, method, path, body=None, content_type="application/json", headers=None, token=None):
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        hdrs = {"Accept": "application/json"}
        if token is not None:  # these credentials instead of the kubeconfig's
            hdrs["Authorization"] = "Bearer " + token
        elif self._token:
            hdrs["Authorization"] = "Bearer " + self._token
        if data is not None:
            hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        req = urllib.request.Request(self.url + path, method=method, data=data, headers=hdrs)
        return req, (self._anonymous_ssl if token is not None else self._ssl)

    def call(self, method, path, body=None, content_type="application/json", headers=None, token=None):
        """One raw API request as the kubeconfig's user (or, with ``token``,
        with only that bearer token): ``(status, decoded JSON body or text,
        response headers)``."""
        req, ctx = self._request(method, path, body, content_type, headers, token)
        return send(req, ctx)

    @contextmanager
    def stream(self, path, timeout=30):
        """A streaming GET (a watch): the open response, to iterate by line."""
        req, ctx = self._request("GET", path)
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            yield resp

    def node_count(self):
        return len(self.call("GET", "/api/v1/nodes")[1]["items"])


@pytest.fixture(params=CLUSTERS)
def k8s(request, kubesim_factory, tmp_path_factory):
    """Each cluster in turn: a fresh simulator, or the session's control plane
    (with the namespaces the test created deleted after it)."""
    workdir = tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp(), prefix="cluster-")
    if request.param == "kubesim":
        sim = kubesim_factory(**SIM_SETTINGS)
        yield Cluster("kubesim", sim.kubeconfig, workdir, sim=sim)
        return
    from tests.controlplane.pytest_plugin import NamespaceHygiene

    cp = request.getfixturevalue("controlplane")
    with NamespaceHygiene(cp.kubeconfig, wait=False):
        yield Cluster("controlplane", cp.kubeconfig, workdir)
