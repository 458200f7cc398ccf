"""Python API of the Kubernetes API simulator for tests (test infrastructure).

    with KubeSim(ready_delay=0.2) as sim:
        subprocess.run(["kubectl", "--kubeconfig", sim.kubeconfig, "get", "ns"])
        sim.objects("apps/statefulsets", "ns1")

``subprocess=True`` runs ``python -m tests.kubesim`` in a child process and
talks to it through its admin endpoints (``/kubesim/...``).
"""

import json
import os
import shutil
import signal
import ssl
import subprocess as _subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

from .config import Fault, SimConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fault(f):
    return f if isinstance(f, Fault) else Fault.parse(f)


def _fault_text(f):
    f = _fault(f)
    return "%s:%s:%s%s" % (f.method, f.resource, f.status, "" if f.count is None else ":%d" % f.count)


def send(req, context, timeout=60):
    """Send one API request: ``(status, decoded JSON body or text, headers)``,
    error answers included."""
    try:
        resp = urllib.request.urlopen(req, context=context, timeout=timeout)
    except urllib.error.HTTPError as e:
        resp = e
    with resp:
        raw = resp.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        return resp.status, payload, resp.headers


class KubeSim:
    def __init__(self, ready_delay=1.0, image_pull_fail=(), crash=(), node_cpu="16", node_memory="64Gi",
                 node_gpus=0, faults=(), latency_ms=0, state_file=None, subprocess=False, port=0):
        self.config = SimConfig(ready_delay=ready_delay, image_pull_fail=list(image_pull_fail), crash=list(crash),
                                node_cpu=str(node_cpu), node_memory=str(node_memory), node_gpus=int(node_gpus),
                                faults=[_fault(f) for f in faults], latency_ms=latency_ms)
        self.state_file = state_file
        self.subprocess = subprocess
        self.port = port
        self.server = None
        self.process = None
        self.tmpdir = None
        self.kubeconfig = None
        self._ssl = None
        self._url = None
        self._token = None

    # -- lifecycle -----------------------------------------------------------
    def start(self):
        self.tmpdir = tempfile.mkdtemp(prefix="kubesim-fixture-")
        self.kubeconfig = os.path.join(self.tmpdir, "kubeconfig")
        if self.subprocess:
            self._start_process()
        else:
            from .server import ApiServer

            self.server = ApiServer(self.config, port=self.port, state_file=self.state_file).start()
            self.server.write_kubeconfig(self.kubeconfig)
        with open(self.kubeconfig) as f:
            cfg = yaml.safe_load(f)
        cluster = cfg["clusters"][0]["cluster"]
        self._url = cluster["server"]
        self._token = cfg["users"][0]["user"]["token"]
        import base64

        self._ssl = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        return self

    def _start_process(self):
        c = self.config
        cmd = [sys.executable, "-m", "tests.kubesim", "--kubeconfig", self.kubeconfig, "--port", str(self.port),
               "--ready-delay", str(c.ready_delay), "--node-cpu", c.node_cpu, "--node-memory", c.node_memory,
               "--node-gpus", str(c.node_gpus), "--latency", str(c.latency_ms)]
        for s in c.image_pull_fail:
            cmd += ["--image-pull-fail", s]
        for s in c.crash:
            cmd += ["--crash", s]
        for f in c.faults:
            cmd += ["--fault", _fault_text(f)]
        if self.state_file:
            cmd += ["--state-file", self.state_file]
        self._log = open(os.path.join(self.tmpdir, "kubesim.log"), "w")
        self.process = _subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=_subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.kubeconfig):
            if self.process.poll() is not None:
                raise RuntimeError("kubesim exited with %s; see %s" % (self.process.returncode, self._log.name))
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError("kubesim did not start within 60s")
            time.sleep(0.05)

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except _subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self._log.close()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- access ---------------------------------------------------------------
    @property
    def store(self):
        """The object store (in-process mode only)."""
        if self.server is None:
            raise RuntimeError("the store is only reachable in-process; use objects()/get() in subprocess mode")
        return self.server.store

    @property
    def url(self):
        return self._url

    @property
    def token(self):
        return self._token

    def _admin(self, path, data=None):
        req = urllib.request.Request(self._url + path, method="POST" if data is not None else "GET",
                                     data=json.dumps(data).encode() if data is not None else None,
                                     headers={"Authorization": "Bearer " + self._token,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self._ssl, timeout=30) as resp:
            return json.loads(resp.read())

    def objects(self, resource, namespace=None):
        """Stored objects of ``resource`` (``"pods"``, ``"apps/statefulsets"``)."""
        if self.server is not None:
            return self.server.store.list(resource, namespace)[0]
        q = "?resource=%s" % urllib.request.quote(resource) + ("&namespace=%s" % namespace if namespace else "")
        return self._admin("/kubesim/objects" + q)["items"]

    def get(self, resource, namespace, name):
        """The stored object, or None."""
        for o in self.objects(resource, namespace):
            if o["metadata"]["name"] == name:
                return o
        return None

    def requests(self):
        """The request log: dicts with method, path, query, content_type, status."""
        if self.server is not None:
            with self.server.requests_lock:
                return [dict(r) for r in self.server.requests]
        return self._admin("/kubesim/requests")["items"]

    def _set(self, **values):
        if self.server is not None:
            with self.config.lock:
                for k, v in values.items():
                    setattr(self.config, k, v)
        else:
            payload = dict(values)
            if "faults" in payload:
                payload["faults"] = [_fault_text(f) for f in payload["faults"]]
            self._admin("/kubesim/config", payload)

    def set_faults(self, faults):
        self._set(faults=[_fault(f) for f in faults])

    def add_fault(self, fault):
        if self.server is not None:
            with self.config.lock:
                self.config.faults.append(_fault(fault))
        else:
            self._admin("/kubesim/config", {"add_faults": [_fault_text(fault)]})

    def set_image_pull_fail(self, substrings):
        self._set(image_pull_fail=list(substrings))

    def set_crash(self, substrings):
        self._set(crash=list(substrings))

    def set_ready_delay(self, seconds):
        self._set(ready_delay=float(seconds))

    def set_latency(self, ms):
        self._set(latency_ms=int(ms))

    def env(self):
        """Environment for child processes (``KUBECONFIG`` set)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        return env

    def call(self, method, path, body=None, content_type="application/json", headers=None, token=None):
        """One raw API request: ``(status, decoded JSON body or text, response headers)``."""
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        hdrs = {"Authorization": "Bearer " + (token if token is not None else self._token),
                "Accept": "application/json"}
        if data is not None:
            hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        req = urllib.request.Request(self._url + path, method=method, data=data, headers=hdrs)
        return send(req, self._ssl)
