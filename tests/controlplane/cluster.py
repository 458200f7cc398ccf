"""A real Kubernetes control plane for tests (test infrastructure).

    with ControlPlane() as cp:
        kubernetes.config.new_client_from_config(config_file=cp.kubeconfig)
        cp.user_kubeconfig("operator", groups=["tenant-admins"])  # a non-admin identity

etcd, kube-apiserver (TLS verified by clients, x509 client certificates,
service-account tokens, RBAC, the default admission plugins),
kube-controller-manager, kube-scheduler and the KWOK controller, with fake
nodes, a default StorageClass ``standard`` served by ``agents.Provisioner``
and the kubelet's events for stuck pods. Binaries come from ``build.py``.
Every process is started with the parent-death signal set, so nothing
outlives the process that started it (``stop()``, or its death).
"""

import base64
import ctypes
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request

import yaml
from kubernetes import client, config

from . import agents, build, pki, stages

LOG = logging.getLogger("controlplane")
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # of the kubernetes Service: the first address of SERVICE_CIDR
POD_CIDR = "10.244.0.0/16"
NODE_ANNOTATION = "kwok.x-k8s.io/node"
ISSUER = "https://kubernetes.default.svc.cluster.local"
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(Exception):
    pass


def _die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host_ip():
    """An address of this host that is not loopback (the API server's
    advertised address; a real server refuses loopback endpoints)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
            if not ip.startswith("127."):
                return ip
    except OSError:
        pass
    return "127.0.0.1"


def _b64(data):
    return base64.b64encode(data).decode()


class ControlPlane:
    def __init__(self, workdir=None, nodes=2, node_cpu="16", node_memory="64Gi", node_gpus=4, ready_delay=0.3,
                 image_pull_fail=("registry.invalid",), crash=("crash-loop",)):
        self.workdir = workdir
        self._own_workdir = workdir is None
        self.nodes = nodes
        self.node_cpu, self.node_memory, self.node_gpus = str(node_cpu), str(node_memory), int(node_gpus)
        self.ready_delay = ready_delay
        self.image_pull_fail, self.crash = tuple(image_pull_fail), tuple(crash)
        self.processes = []
        self.kubeconfig = None
        self.server = None
        self._ca = None
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        if not build.is_built():
            raise ControlPlaneError("control plane binaries are not built: run scripts/control-plane build")
        started = time.monotonic()
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="controlplane-")
        os.makedirs(os.path.join(self.workdir, "logs"), exist_ok=True)
        try:
            self._pki()
            self._etcd()
            self._apiserver()
            self._controllers()
            self._cluster_objects()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        LOG.info("control plane ready in %.1f s at %s", self.startup_seconds, self.server)
        return self

    def stop(self):
        """Stop everything: the API clients and the API server first, etcd last
        (a test cluster's data is thrown away, so 5 s of grace is enough)."""
        self._stop.set()
        clients = [(n, p) for n, p in self.processes if n != "etcd"]
        for group in (clients, [(n, p) for n, p in self.processes if n == "etcd"]):
            for _name, proc in group:
                if proc.poll() is None:
                    proc.terminate()
            deadline = time.monotonic() + 5
            for name, proc in group:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    LOG.info("%s did not stop in 5 s; killing it", name)
                    proc.kill()
                    proc.wait()
        self.processes = []
        if self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- pieces --------------------------------------------------------------
    def _path(self, *parts):
        return os.path.join(self.workdir, *parts)

    def _pki(self):
        os.makedirs(self._path("pki"), exist_ok=True)
        self._ca = pki.Authority("es-serverless-test-ca")
        pki.write(self._path("pki", "ca.crt"), self._ca.pem)
        pki.write(self._path("pki", "ca.key"), self._ca.key_pem, private=True)
        self.host_ip = _host_ip()
        ips = sorted({"127.0.0.1", self.host_ip, SERVICE_IP})
        names = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local")
        cert, key = self._ca.issue("kube-apiserver", dns_names=names, ips=ips, server=True)
        pki.write(self._path("pki", "apiserver.crt"), cert)
        pki.write(self._path("pki", "apiserver.key"), key, private=True)
        private, public = pki.signing_key_pair()
        pki.write(self._path("pki", "sa.key"), private, private=True)
        pki.write(self._path("pki", "sa.pub"), public)

    def _spawn(self, name, args):
        log = open(self._path("logs", name + ".log"), "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent, cwd=self.workdir)
        log.close()
        self.processes.append((name, proc))
        return proc

    def _fail(self, name, what):
        with open(self._path("logs", name + ".log"), "rb") as f:
            tail = f.read()[-3000:].decode(errors="replace")
        raise ControlPlaneError("%s: %s; end of its log:\n%s" % (name, what, tail))

    def _wait(self, name, proc, ready, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                self._fail(name, "exited with %s" % proc.returncode)
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001,S110 - not up yet
                pass
            time.sleep(0.1)
        self._fail(name, "not ready after %d s" % timeout)

    def _etcd(self):
        port, peer = _free_port(), _free_port()
        self.etcd_url = "http://127.0.0.1:%d" % port
        proc = self._spawn("etcd", [
            build.binary("etcd"), "--name", "test", "--data-dir", self._path("etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
            "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
            "--initial-cluster", "test=http://127.0.0.1:%d" % peer,
            "--unsafe-no-fsync", "--quota-backend-bytes", str(2 << 30), "--log-level", "warn"])
        self._wait("etcd", proc, lambda: urllib.request.urlopen(self.etcd_url + "/health", timeout=1).status == 200)

    def _apiserver(self):
        port = _free_port()
        self.server = "https://127.0.0.1:%d" % port
        pkid = self._path("pki")
        proc = self._spawn("kube-apiserver", [
            build.binary("kube-apiserver"), "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", self.host_ip, "--secure-port", str(port),
            "--tls-cert-file", os.path.join(pkid, "apiserver.crt"),
            "--tls-private-key-file", os.path.join(pkid, "apiserver.key"),
            "--client-ca-file", os.path.join(pkid, "ca.crt"),
            "--service-account-key-file", os.path.join(pkid, "sa.pub"),
            "--service-account-signing-key-file", os.path.join(pkid, "sa.key"),
            "--service-account-issuer", ISSUER,
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--authorization-mode", "Node,RBAC",
            "--allow-privileged=true", "--profiling=false", "--v=1",
            "--endpoint-reconciler-type", "lease"])
        self.kubeconfig = self.user_kubeconfig("kubernetes-admin", ["system:masters"], name="admin")
        ctx = ssl.create_default_context(cafile=os.path.join(pkid, "ca.crt"))
        cert, key = self._ca.issue("readiness-probe", groups=["system:masters"])
        pki.write(self._path("pki", "probe.crt"), cert)
        pki.write(self._path("pki", "probe.key"), key, private=True)
        ctx.load_cert_chain(self._path("pki", "probe.crt"), self._path("pki", "probe.key"))

        def ready():
            with urllib.request.urlopen(self.server + "/readyz", context=ctx, timeout=2) as r:
                return r.status == 200

        self._wait("kube-apiserver", proc, ready, timeout=90)

    def user_kubeconfig(self, user, groups=(), name=None):
        """Write a kubeconfig for ``user`` in ``groups`` (an x509 client
        certificate the API server trusts); return its path."""
        return write_kubeconfig(self._path((name or user) + ".kubeconfig"), self.server, self._ca, user, groups)

    def _controllers(self):
        kcm = self.user_kubeconfig("system:kube-controller-manager", name="controller-manager")
        self._spawn("kube-controller-manager", [
            build.binary("kube-controller-manager"), "--kubeconfig", kcm, "--leader-elect=false",
            "--secure-port=0", "--use-service-account-credentials=true",
            "--service-account-private-key-file", self._path("pki", "sa.key"),
            "--root-ca-file", self._path("pki", "ca.crt"),
            "--controllers", "*",
            "--kube-api-qps=100", "--kube-api-burst=200", "--concurrent-statefulset-syncs=10", "--v=1"])
        sched = self.user_kubeconfig("system:kube-scheduler", name="scheduler")
        self._spawn("kube-scheduler", [build.binary("kube-scheduler"), "--kubeconfig", sched,
                                       "--leader-elect=false", "--secure-port=0", "--v=1"])
        config_path = stages.write(self._path("kwok.yaml"), build.stages_dir(), ready_delay=self.ready_delay,
                                   image_pull_fail=self.image_pull_fail, crash=self.crash)
        self._spawn("kwok", [build.binary("kwok"), "--kubeconfig", self.kubeconfig, "--config", config_path,
                             "--manage-nodes-with-annotation-selector", NODE_ANNOTATION + "=fake",
                             "--node-lease-duration-seconds", "40", "--cidr", POD_CIDR,
                             "--node-ip", "10.0.0.1", "--server-address", "127.0.0.1:%d" % _free_port()])

    def _cluster_objects(self):
        api = config.new_client_from_config(config_file=self.kubeconfig)
        core, storage = client.CoreV1Api(api), client.StorageV1Api(api)
        for i in range(self.nodes):
            self.add_node("kwok-node-%d" % i, core=core)
        storage.create_csi_driver({"metadata": {"name": agents.DRIVER},
                                   "spec": {"attachRequired": False, "podInfoOnMount": False}})
        storage.create_storage_class({
            "metadata": {"name": agents.STORAGE_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": agents.DRIVER, "reclaimPolicy": "Delete", "allowVolumeExpansion": True,
            "volumeBindingMode": "Immediate"})
        agents.Provisioner(api, self._stop).start()
        agents.KubeletEvents(core, self._stop).start()

        def nodes_ready():
            nodes = core.list_node().items
            return len(nodes) >= self.nodes and all(
                c.status == "True" for n in nodes for c in n.status.conditions or [] if c.type == "Ready") and \
                all(not n.spec.taints for n in nodes)

        def service_accounts():  # the controller manager's token and service-account controllers run
            return core.read_namespaced_service_account("default", "default") is not None

        kcm = dict(self.processes)["kube-controller-manager"]
        self._wait("kwok", dict(self.processes)["kwok"], nodes_ready)
        self._wait("kube-controller-manager", kcm, service_accounts)

    def add_node(self, name, cpu=None, memory=None, gpus=None, core=None):
        """Add a fake node (managed by KWOK) with this capacity."""
        capacity = {"cpu": cpu or self.node_cpu, "memory": memory or self.node_memory, "pods": "110",
                    "ephemeral-storage": "100Gi"}
        gpus = self.node_gpus if gpus is None else gpus
        if gpus:
            capacity["nvidia.com/gpu"] = str(gpus)
        core = core or client.CoreV1Api(config.new_client_from_config(config_file=self.kubeconfig))
        core.create_node({
            "metadata": {"name": name, "annotations": {NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok"}},
            "status": {"capacity": capacity, "allocatable": dict(capacity)}})


def write_kubeconfig(path, server, ca, user, groups=()):
    """A kubeconfig at ``path`` for ``user`` in ``groups``, with a client
    certificate issued by ``ca`` (a ``pki.Authority``) and the CA embedded."""
    cert, key = ca.issue(user, groups=groups)
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "es-test",
        "clusters": [{"name": "es-test", "cluster": {"server": server, "certificate-authority-data": _b64(ca.pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}}],
        "contexts": [{"name": "es-test", "context": {"cluster": "es-test", "user": user}}]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(kubeconfig, f)
    return path
