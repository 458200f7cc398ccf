"""HTTPS API server of the Kubernetes API simulator (test infrastructure).

Serves the Kubernetes REST API over the :mod:`tests.kubesim.store` object
store: discovery, OpenAPI v3, CRUD with watch, the three patch types and
server-side apply, status/scale subresources, ``Status`` errors, field
validation, fault injection and a request log. See ``docs/kubesim.md``.
"""

import base64
import copy
import datetime
import json
import os
import queue
import random
import re
import secrets
import shutil
import socket
import ssl
import string
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from . import certs, patch, protobuf, tables, resources, schema, validation
from .config import Fault, SimConfig
from .store import AlreadyExists, Conflict, NotFound, Store, StoreError, display_name, now_iso

try:  # the controllers are written separately; CRUD works without them
    from .controllers import Controllers
except ImportError:  # pragma: no cover - only while controllers.py does not exist
    Controllers = None

NAMESPACE_FINALIZE_DELAY = 1.0
GENERATION_KINDS = {"StatefulSet", "Deployment", "ReplicaSet", "Job", "ControllerRevision"}
# the resources whose registry sets ReturnDeletedObject (kubernetes pkg/registry/.../storage/storage.go):
# a DELETE answers with the deleted object; the others answer with a Success Status
RETURN_DELETED_OBJECT = {"namespaces", "services", "serviceaccounts", "pods", "persistentvolumeclaims",
                         "persistentvolumes", "resourcequotas", "storageclasses"}
WORKLOAD_ORDER = ["apps/statefulsets", "apps/deployments", "batch/jobs", "apps/replicasets", "pods"]
REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}


def status_body(code, reason, message, details=None):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details is not None:
        body["details"] = details
    return body


# what the system:public-info-viewer role lets anyone read
ANONYMOUS_PATHS = ("/version", "/version/", "/healthz", "/livez", "/readyz")
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def anonymous_forbidden(method, path, query):
    """The 403 a real server's RBAC gives ``system:anonymous`` (no
    credentials), worded as its authorization filter words it."""
    user = 'User "system:anonymous"'
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        rest = None
    if not rest:
        verb = _VERBS.get(method, "get")
        return ApiError(403, "Forbidden", 'forbidden: %s cannot %s path "%s"' % (user, verb, path), {})
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name, sub = rest[0], (rest[1:2] or [None])[0], "/".join(rest[2:])
    if resource == "namespaces" and name:
        namespace = name  # a namespace is its own namespace to the authorizer
    if method == "GET":
        verb = "get" if name else ("watch" if query.get("watch", "").lower() in ("true", "1") else "list")
    elif method == "DELETE" and not name:
        verb = "deletecollection"
    else:
        verb = _VERBS.get(method, method.lower())
    what = "%s cannot %s resource \"%s\" in API group \"%s\" %s" % (
        user, verb, resource + ("/" + sub if sub else ""), group,
        'in the namespace "%s"' % namespace if namespace else "at the cluster scope")
    qualified = resource + ("." + group if group else "")
    details = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = resource
    message = ('%s "%s" is forbidden: %s' % (qualified, name, what)) if name else \
        ("%s is forbidden: %s" % (qualified, what))
    return ApiError(403, "Forbidden", message, details)


def _details(res, name, kind=None):
    d = {}
    if name:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    d["kind"] = kind or res.name
    return d


def _kind_display(res):
    return res.kind + ("." + res.group if res.group else "")


def invalid_error(res, name, causes):
    texts = [c.text() for c in causes]
    msg = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _details(res, name, res.kind)
    details["causes"] = [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (_kind_display(res), name, msg), details)


def not_found(res, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (display_name(resources.store_key(res)), name),
                    _details(res, name))


def bad_request(message):
    return ApiError(400, "BadRequest", message)


# -- selectors ---------------------------------------------------------------------


_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _label_test(part):
    m = _SET_RE.match(part)
    if m:
        key, op = m.group(1), m.group(2)
        values = {v.strip() for v in m.group(3).split(",") if v.strip()}
        if op == "in":
            return lambda lb: lb.get(key) in values
        return lambda lb: lb.get(key) not in values
    if "!=" in part:
        key, value = (x.strip() for x in part.split("!=", 1))
        return lambda lb: lb.get(key) != value
    if "=" in part:
        key, value = (x.strip() for x in part.replace("==", "=").split("=", 1))
        return lambda lb: lb.get(key) == value
    if part.startswith("!"):
        key = part[1:].strip()
        return lambda lb: key not in lb
    return lambda lb: part in lb


def label_matcher(text):
    if not text:
        return lambda labels: True
    tests = [_label_test(part) for part in _split_selector(text)]
    return lambda labels: all(t(labels or {}) for t in tests)


def _field_value(obj, path):
    cur = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def _field_test(text, part):
    if "!=" in part:
        key, value = (x.strip() for x in part.split("!=", 1))
        return lambda o: _field_value(o, key) != value
    if "=" in part:
        key, value = (x.strip() for x in part.replace("==", "=").split("=", 1))
        return lambda o: _field_value(o, key) == value
    raise bad_request("invalid selector: '%s'; can't understand '%s'" % (text, part))


def field_matcher(text):
    if not text:
        return lambda obj: True
    tests = [_field_test(text, part) for part in _split_selector(text)]
    return lambda obj: all(t(obj) for t in tests)


# -- the server -----------------------------------------------------------------------


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler, api):
        self.api = api
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.api.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):  # noqa: ARG002 - clients hang up mid-watch all the time
        pass


class ApiServer:
    """The simulator: ``ApiServer(config).start()`` then ``.kubeconfig_text()``."""

    def __init__(self, config=None, store=None, port=0, state_file=None):
        self.config = config or SimConfig()
        self.store = store or Store()
        self.port = port
        self.state_file = state_file
        self.token = secrets.token_hex(24)
        self.requests = []
        self.requests_lock = threading.Lock()
        self.workdir = tempfile.mkdtemp(prefix="kubesim-")
        self.ca_pem, cert, key = certs.generate(self.workdir)
        self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_context.load_cert_chain(cert, key)
        self.ssl_context.set_alpn_protocols(["http/1.1"])
        self.httpd = None
        self.controllers = None
        self._stop = threading.Event()
        self._threads = []
        self._openapi_cache = {}
        self._ip_counter = 10
        self._terminating_since = {}

    # -- lifecycle ------------------------------------------------------------
    def start(self):
        self.bootstrap()
        self.httpd = _TLSServer(("127.0.0.1", self.port), _Handler, self)
        self.port = self.httpd.server_address[1]
        t = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                             name="kubesim-http")
        t.start()
        self._threads.append(t)
        for target, name in ((self._gc_loop, "kubesim-gc"), (self._namespace_loop, "kubesim-ns")):
            t = threading.Thread(target=target, daemon=True, name=name)
            t.start()
            self._threads.append(t)
        if Controllers is not None:
            self.controllers = Controllers(self.store, self.config)
            self.controllers.start()
        return self

    def stop(self):
        self._stop.set()
        if self.controllers is not None:
            try:
                self.controllers.stop()
            except Exception:  # noqa: BLE001 - shutting down regardless
                pass
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        if self.state_file:
            self.dump_state(self.state_file)
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def kubeconfig_text(self):
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubesim", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.ca_pem).decode()}}],
            "users": [{"name": "kubesim-admin", "user": {"token": self.token}}],
            "contexts": [{"name": "kubesim", "context": {"cluster": "kubesim", "user": "kubesim-admin",
                                                         "namespace": "default"}}],
            "current-context": "kubesim",
            "preferences": {},
        }
        return yaml.safe_dump(cfg, default_flow_style=False)

    def write_kubeconfig(self, path):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.kubeconfig_text())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def dump_state(self, path):
        state = {"resourceVersion": self.store.resource_version,
                 "objects": [{"resource": res, "object": obj} for res, obj in self.store.all_objects()]}
        with open(path, "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)

    def log_request(self, entry):
        with self.requests_lock:
            self.requests.append(entry)

    # -- bootstrap ------------------------------------------------------------
    def bootstrap(self):
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            if not self.store.exists("namespaces", None, ns):
                self.create_object(resources.find("", "v1", "namespaces"), None,
                                   {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        if not self.store.exists("storage.k8s.io/storageclasses", None, "standard"):
            sc = {
                "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "standard",
                             "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "kubesim.io/hostpath", "allowVolumeExpansion": True,
                "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
            }
            self.store.create("storage.k8s.io/storageclasses", sc, namespaced=False)

    # -- background loops ------------------------------------------------------
    def _gc_loop(self):
        while not self._stop.wait(0.3):
            try:
                self.collect_garbage()
            except Exception:  # noqa: BLE001 - keep collecting
                pass

    def collect_garbage(self):
        """Finish deletions waiting for the garbage collector, then delete
        objects all of whose owners (by uid) are gone."""
        self.finalize_deleted()
        uids, owned = self.store.ownership()
        for res, ns, name, owners in owned:
            if not any(uid in uids for uid in owners):
                try:
                    self.store.delete(res, ns, name)
                except NotFound:
                    pass

    def _namespace_loop(self):
        while not self._stop.wait(0.2):
            try:
                self.finalize_namespaces()
            except Exception:  # noqa: BLE001
                pass

    def finalize_namespaces(self):
        """The namespace controller: a Terminating namespace loses its
        objects (after ``NAMESPACE_FINALIZE_DELAY``), then goes away."""
        namespaces, _u = self.store.list("namespaces")
        now = time.monotonic()
        for ns in namespaces:
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            name = ns["metadata"]["name"]
            first_seen = self._terminating_since.setdefault(ns["metadata"]["uid"], now)
            if now - first_seen < NAMESPACE_FINALIZE_DELAY:
                continue
            remaining = 0
            keys = WORKLOAD_ORDER + [resources.store_key(r) for r in resources.RESOURCES
                                     if r.namespaced and resources.store_key(r) not in WORKLOAD_ORDER]
            for key in keys:
                items, _u = self.store.list(key, name)
                for obj in items:
                    remaining += 1
                    try:
                        if obj["metadata"].get("finalizers"):  # marked; it goes when they are removed
                            if not obj["metadata"].get("deletionTimestamp"):
                                self.store.mark_deleting(key, name, obj["metadata"]["name"], now_iso())
                        else:
                            self.store.delete(key, name, obj["metadata"]["name"])
                    except NotFound:
                        pass
            if remaining == 0:
                try:
                    self.store.delete("namespaces", None, name)
                except NotFound:
                    pass

    # -- helpers used by the handler -----------------------------------------------
    def openapi_v3(self, group, version):
        key = (group, version)
        if key not in self._openapi_cache:
            res = [r for r in resources.RESOURCES if r.group == group and r.version == version]
            self._openapi_cache[key] = json.dumps(schema.openapi_v3_document(group, version, res)).encode()
        return self._openapi_cache[key]

    def check_namespace_for_create(self, res, namespace, name):
        if not res.namespaced:
            return
        try:
            ns = self.store.get("namespaces", None, namespace)
        except NotFound:
            raise ApiError(404, "NotFound", 'namespaces "%s" not found' % namespace,
                           {"name": namespace, "kind": "namespaces"})
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403, "Forbidden",
                '%s "%s" is forbidden: unable to create new content in namespace %s because it is being terminated'
                % (display_name(resources.store_key(res)), name, namespace),
                dict(_details(res, name), causes=[{"reason": "NamespaceTerminating",
                                                   "message": "namespace %s is being terminated" % namespace,
                                                   "field": "metadata.namespace"}]),
            )

    def create_object(self, res, namespace, obj, manager=None, dry_run=False):
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                random.choice(string.ascii_lowercase + string.digits) for _u in range(5))
        obj["apiVersion"] = resources.api_version_of(res)
        obj["kind"] = res.kind
        validation.apply_defaults(res.kind, obj, self.store)
        causes = validation.validate(res.kind, obj, store=self.store)
        if causes:
            raise invalid_error(res, meta.get("name"), causes)
        self.check_namespace_for_create(res, namespace, meta.get("name"))
        if res.name == "services":
            self._allocate_cluster_ip(obj)
        node = schema.kind_schema(res.group, res.version, res.kind)
        fields = manager and patch.mark_created(patch.owned_fields(_without_status(obj), node),
                                                _without_status(obj), None, node)
        if fields:
            meta["managedFields"] = [_managed_entry(manager, "Update", res, fields)]
        meta.pop("resourceVersion", None)
        if dry_run:
            if self.store.exists(resources.store_key(res), namespace, meta["name"]):
                raise AlreadyExists('%s "%s" already exists' % (display_name(resources.store_key(res)), meta["name"]))
            meta.setdefault("uid", "00000000-0000-0000-0000-000000000000")
            meta.setdefault("creationTimestamp", now_iso())
            return obj
        out = self.store.create(resources.store_key(res), obj, namespaced=res.namespaced)
        if res.name == "namespaces":
            self._populate_namespace(out["metadata"]["name"])
        return out

    def _allocate_cluster_ip(self, obj):
        spec = obj.setdefault("spec", {})
        if spec.get("clusterIP") in (None, ""):
            self._ip_counter += 1
            ip = "10.96.%d.%d" % (self._ip_counter // 250, self._ip_counter % 250 + 1)
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        elif "clusterIPs" not in spec:
            spec["clusterIPs"] = [spec["clusterIP"]]
        self._allocate_node_ports(spec)

    def _allocate_node_ports(self, spec, old_spec=None):
        """NodePort and LoadBalancer services get a node port (30000-32767)
        for each port that has none, keeping the ones they had."""
        if spec.get("type") not in ("NodePort", "LoadBalancer") or \
                spec.get("allocateLoadBalancerNodePorts") is False:
            return
        kept = {(p.get("port"), p.get("protocol")): p.get("nodePort")
                for p in (old_spec or {}).get("ports") or [] if isinstance(p, dict)}
        used = {p.get("nodePort") for _r, svc in self.store.all_objects() if _r == "services"
                for p in (svc.get("spec") or {}).get("ports") or []}
        for p in spec.get("ports") or []:
            if isinstance(p, dict) and not p.get("nodePort"):
                port = kept.get((p.get("port"), p.get("protocol")))
                while not port or port in used:
                    port = random.randint(30000, 32767)
                used.add(port)
                p["nodePort"] = port

    def _populate_namespace(self, ns):
        try:
            self.store.create("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                  "metadata": {"name": "default", "namespace": ns}})
        except AlreadyExists:
            pass
        try:
            self.store.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                             "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                                                          "annotations": {
                                                              "kubernetes.io/description": "Contains a CA bundle "
                                                              "that can be used to verify the kube-apiserver when "
                                                              "using internal endpoints such as the internal service "
                                                              "IP or kubernetes.default.svc. No other usage is "
                                                              "guaranteed across distributions of Kubernetes "
                                                              "clusters."}},
                                             "data": {"ca.crt": self.ca_pem.decode()}})
        except AlreadyExists:
            pass

    def delete_object(self, res, namespace, name, policy=None, dry_run=False):
        key = resources.store_key(res)
        obj = self.store.get(key, namespace, name)
        if dry_run:
            return obj
        if res.name == "namespaces":
            if name in ("default", "kube-system", "kube-public"):
                raise ApiError(403, "Forbidden", 'namespaces "%s" is forbidden: this namespace may not be deleted'
                               % name, {"name": name, "kind": "namespaces"})
            return self.store.mark_deleting("namespaces", None, name, now_iso(),
                                            lambda o: o.setdefault("status", {}).update(phase="Terminating"))
        finalizer = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(policy)
        if finalizer or obj["metadata"].get("finalizers"):
            # as a real server: the object stays, marked for deletion, until its finalizers are gone;
            # the garbage collector (collect_garbage) handles orphan and foregroundDeletion
            def mark(o):
                meta = o["metadata"]
                if finalizer and finalizer not in (meta.get("finalizers") or []):
                    meta["finalizers"] = (meta.get("finalizers") or []) + [finalizer]
                meta.setdefault("deletionGracePeriodSeconds", 0)

            return self.store.mark_deleting(key, namespace, name, now_iso(), mark)
        return self.store.delete(key, namespace, name)

    def _dependents(self, uid):
        for res, obj in self.store.all_objects():
            if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                yield res, obj

    def _orphan_dependents(self, uid):
        for res, obj in list(self._dependents(uid)):
            m = obj["metadata"]

            def drop(o, uid=uid):
                o["metadata"]["ownerReferences"] = [r for r in o["metadata"].get("ownerReferences") or []
                                                    if r.get("uid") != uid]
                if not o["metadata"]["ownerReferences"]:
                    del o["metadata"]["ownerReferences"]

            try:
                self.store.mutate(res, m.get("namespace"), m["name"], drop)
            except NotFound:
                pass

    def finalize_deleted(self):
        """The garbage collector's part in deletion: an object deleted with
        Orphan propagation (finalizer ``orphan``) first loses its dependents'
        owner references; one deleted in the foreground (``foregroundDeletion``)
        waits until its dependents are deleted (in the foreground when they
        have dependents of their own). The object goes with its last finalizer."""
        for key, namespace, name in self.store.finalizing():
            try:
                obj = self.store.get(key, namespace, name)
            except NotFound:
                continue
            meta = obj["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if "orphan" in finalizers:
                self._orphan_dependents(meta["uid"])
                finalizers.remove("orphan")
            if "foregroundDeletion" in finalizers:
                dependents = list(self._dependents(meta["uid"]))
                for res, dep in dependents:
                    dmeta = dep["metadata"]
                    if dmeta.get("deletionTimestamp"):
                        continue
                    policy = "Foreground" if any(True for _u in self._dependents(dmeta["uid"])) else None
                    try:
                        self.delete_object(resources.by_store_key(res), dmeta.get("namespace"), dmeta["name"], policy)
                    except NotFound:
                        pass
                if not dependents:
                    finalizers.remove("foregroundDeletion")
            if finalizers == (meta.get("finalizers") or []):
                continue
            try:
                if finalizers:
                    self.store.mutate(key, namespace, name,
                                      lambda o, f=finalizers: o["metadata"].__setitem__("finalizers", f))
                else:
                    self.store.delete(key, namespace, name)
            except NotFound:
                pass


def _without_status(obj):
    return {k: v for k, v in obj.items() if k not in ("status", "apiVersion", "kind")}


def _managed_entry(manager, operation, res, fields, subresource=None):
    entry = {"manager": manager, "operation": operation, "apiVersion": resources.api_version_of(res),
             "time": now_iso(), "fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        entry["subresource"] = subresource
    return entry


def _union(a, b):
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _union(out.get(k, {}), v) if k in out else copy.deepcopy(v)
    return out


def _manager_from_agent(agent):
    if not agent:
        return "unknown"
    return agent.split("/", 1)[0].split(" ", 1)[0] or "unknown"


def _strip_generation(res, obj):
    if res.kind not in GENERATION_KINDS:
        obj.get("metadata", {}).pop("generation", None)
    return obj


# -- request handler ---------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubesim"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler signature
        pass

    @property
    def api(self):
        return self.server.api

    def setup(self):
        super().setup()
        self.connection.settimeout(120)

    def handle(self):
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            return
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, socket.timeout, OSError):
            pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing ------------------------------------------------------------
    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            return data
        return b""

    def _send(self, code, body, content_type="application/json", warnings=(), headers=None):
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", self._audit_id)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self._warnings = list(warnings)
        for w in warnings:
            self.send_header("Warning", '299 - "%s"' % w.replace('"', '\\"'))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self._status = code

    def _send_error(self, err):
        self._send(err.code, status_body(err.code, err.reason, err.message, err.details), headers=err.headers)

    def _dispatch(self, method):
        self._audit_id = secrets.token_hex(8)
        self._status = None
        self._warnings = []
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            body = self._read_body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        except (ValueError, OSError):
            body = b""
        admin = path.startswith("/kubesim/")
        try:
            auth = (self.headers.get("Authorization") or "").strip()
            if auth != "Bearer " + self.api.token:
                scheme, _u, token = auth.partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    raise ApiError(401, "Unauthorized", "Unauthorized")  # a token, but not a valid one
                # no credentials: the request is system:anonymous's, which RBAC lets read only these
                if path not in ANONYMOUS_PATHS:
                    raise anonymous_forbidden(method, path, query)
            latency = self.api.config.latency_ms
            if latency and not admin:
                time.sleep(latency / 1000.0)
            if admin:
                self._admin(method, path, query, body)
            else:
                self._route(method, path, query, body, content_type)
        except ApiError as e:
            self._send_error(e)
        except StoreError as e:
            res = resources.by_store_key(e.resource) if e.resource else None
            details = _details(res, e.name) if res else None
            self._send_error(ApiError(e.code, e.reason, e.message, details))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self._status = self._status or 499
        except Exception as e:  # noqa: BLE001 - a server answers 500, it does not die
            try:
                self._send_error(ApiError(500, "InternalError", "Internal error occurred: %s" % e))
            except OSError:
                pass
        finally:
            if not admin:
                self.api.log_request({"method": method, "path": path, "query": parsed.query,
                                      "content_type": content_type, "status": self._status,
                                      "warnings": self._warnings,
                                      "user_agent": self.headers.get("User-Agent", ""),
                                      "accept": self.headers.get("Accept", "")})

    # -- admin endpoints (tests only) ---------------------------------------------
    def _admin(self, method, path, query, body):
        api = self.api
        if path == "/kubesim/objects":
            if query.get("resource"):
                items, _u = api.store.list(query["resource"], query.get("namespace") or None)
            else:
                items = [{"resource": r, "object": o} for r, o in api.store.all_objects()]
            return self._send(200, {"items": items})
        if path == "/kubesim/requests":
            with api.requests_lock:
                return self._send(200, {"items": list(api.requests)})
        if path == "/kubesim/config" and method == "POST":
            data = json.loads(body or b"{}")
            with api.config.lock:
                if "faults" in data:
                    api.config.faults = [Fault.parse(f) for f in data["faults"]]
                api.config.faults.extend(Fault.parse(f) for f in data.get("add_faults", []))
                for k in ("image_pull_fail", "crash"):
                    if k in data:
                        setattr(api.config, k, list(data[k]))
                for k in ("ready_delay", "latency_ms"):
                    if k in data:
                        setattr(api.config, k, data[k])
            return self._send(200, {"ok": True})
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # -- routing ------------------------------------------------------------------
    def _route(self, method, path, query, body, content_type):
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/readyz", "/livez"):
            return self._send(200, "ok", "text/plain")
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "kubesim",
                                    "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z",
                                    "goVersion": "go1.23.3", "compiler": "gc", "platform": "linux/amd64"})
        if path == "/api":
            return self._send(200, resources.api_versions())
        if path == "/apis":
            return self._send(200, resources.api_group_list())
        if path == "/openapi/v3":
            paths = {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=KUBESIM01"}}
            for g in resources.GROUPS:
                paths["apis/%s/v1" % g] = {"serverRelativeURL": "/openapi/v3/apis/%s/v1?hash=KUBESIM01" % g}
            return self._send(200, {"paths": paths})
        if parts[:2] == ["openapi", "v3"]:
            rest = parts[2:]
            if rest == ["api", "v1"]:
                return self._send(200, self.api.openapi_v3("", "v1"))
            if len(rest) == 3 and rest[0] == "apis" and rest[1] in resources.GROUPS and rest[2] == "v1":
                return self._send(200, self.api.openapi_v3(rest[1], "v1"))
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if parts[:1] == ["api"]:
            if len(parts) == 2 and parts[1] == "v1":
                return self._send(200, resources.resource_list("", "v1"))
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 2:
            if len(parts) == 2:
                if parts[1] in resources.GROUPS:
                    return self._send(200, resources.api_group(parts[1]))
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if len(parts) == 3:
                if parts[1] in resources.GROUPS and parts[2] == "v1":
                    return self._send(200, resources.resource_list(parts[1], "v1"))
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and resources.find(group, version, rest[2]):
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res = resources.find(group, version, rest[0])
        if res is None or len(rest) > 3 or (namespace is not None and not res.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub and sub not in res.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        for fault in list(self.api.config.faults):
            if fault.matches(method, res.name, sub):
                with self.api.config.lock:
                    if fault.count is not None:
                        fault.count -= 1
                reason = REASONS.get(fault.status, "InternalError")
                msg = "Internal error occurred: injected fault" if fault.status == 500 else "injected fault"
                details, headers = _details(res, name) if name else None, None
                if fault.status == 429:  # as the API server's priority and fairness rejects a request
                    msg, headers = "Too many requests, please try again later.", {"Retry-After": "1"}
                    details = dict(details or {}, retryAfterSeconds=1)
                raise ApiError(fault.status, reason, msg, details, headers)
        handler = Request(self, res, namespace, name, sub, query, body, content_type)
        return handler.run(method)


class Request:
    """One resource request."""

    def __init__(self, http, res, namespace, name, sub, query, body, content_type):
        self.http = http
        self.api = http.api
        self.store = http.api.store
        self.res = res
        self.key = resources.store_key(res)
        self.namespace = namespace
        self.name = name
        self.sub = sub
        self.query = query
        self.body = body
        self.content_type = content_type
        self.warnings = []
        self.dry_run = query.get("dryRun") == "All"
        self.manager = query.get("fieldManager") or _manager_from_agent(http.headers.get("User-Agent"))

    def run(self, method):
        res = self.res
        if res.namespaced and self.namespace is None and method in ("POST", "PUT", "PATCH", "DELETE"):
            raise ApiError(405 if self.name is None else 404, "NotFound",
                           "the server could not find the requested resource")
        if self.name is None:
            if method == "GET":
                truthy = ("true", "1")
                return self.watch() if self.query.get("watch", "").lower() in truthy else self.list()
            if method == "POST":
                return self.create()
            if method == "DELETE":
                return self.delete_collection()
        else:
            if method == "GET":
                return self.get()
            if method == "PUT":
                return self.update()
            if method == "PATCH":
                return self.patch()
            if method == "DELETE" and not self.sub:
                return self.delete()
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def reply(self, code, obj):
        self.http._send(code, obj, warnings=self.warnings)

    def out(self, obj):
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", resources.api_version_of(self.res))
        obj.setdefault("kind", self.res.kind)
        return _strip_generation(self.res, obj)

    # -- body decoding & validation ------------------------------------------------
    def decode(self, yaml_ok=False):
        ct = self.content_type
        self.duplicates = []
        if ct == "application/vnd.kubernetes.protobuf":
            try:
                return protobuf.decode(self.body)
            except protobuf.ProtobufError as e:
                raise ApiError(415, "UnsupportedMediaType", str(e))
        try:
            text = self.body.decode("utf-8")
            if yaml_ok:
                return yaml.safe_load(text)
            try:
                return json.loads(text, object_pairs_hook=_no_duplicates)
            except DuplicateField as e:
                self.duplicates.append(e.args[0])
                return json.loads(text)
        except (ValueError, yaml.YAMLError) as e:
            if yaml_ok:
                raise bad_request("error decoding YAML: %s" % e)
            raise bad_request("the body of the request was in an unknown format - accepted media types include: "
                              "application/json, application/yaml")

    def check_type(self, obj, expect_kind=None):
        if not isinstance(obj, dict):
            raise bad_request("Object 'Kind' is missing in '%s'" % json.dumps(obj)[:200])
        kind = expect_kind or self.res.kind
        api_version = "autoscaling/v1" if kind == "Scale" else resources.api_version_of(self.res)
        body_kind, body_version = obj.get("kind") or kind, obj.get("apiVersion") or api_version
        if (body_kind, body_version) != (kind, api_version):
            # as the real decoder answers: the body's kind decoded (if the scheme knows it) and converted
            group, _u, version = api_version.rpartition("/")
            body_group, _u, body_v = body_version.rpartition("/")
            if body_kind == kind and body_group == group and schema.kind_definition_name(group, body_v, kind):
                raise bad_request("the API version in the data (%s) does not match the expected API version (%s)"
                                  % (body_version, api_version))
            if schema.kind_definition_name(body_group, body_v, body_kind):
                why = "converting (%s.%s) to (%s.%s): unknown conversion" % (
                    body_v, body_kind, group.split(".")[0] or "core", kind)
            else:
                why = 'no kind "%s" is registered for version "%s" in scheme "pkg/runtime/scheme.go:110"' % (
                    body_kind, body_version)
            raise bad_request('%s in version "%s" cannot be handled as a %s: %s' % (body_kind, body_v, kind, why))
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            self._field_problems([], [("metadata", _json_kind(meta), "ObjectMeta", kind)])
        if self.res.namespaced and isinstance(meta, dict) and meta.get("namespace") and self.namespace and \
                meta["namespace"] != self.namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")

    def field_validation(self, obj, kind=None, group=None, version="v1"):
        kind = kind or self.res.kind
        group = self.res.group if group is None else group
        node = schema.kind_schema(group, version, kind)
        if node is None:
            return
        report = schema.check_fields(obj, node)
        self._field_problems(report.unknown, report.type_errors, getattr(self, "duplicates", None))
        report.prune()

    def _field_problems(self, unknown, type_errors, duplicates=None):
        kind = self.res.kind
        head = '%s in version "%s" cannot be handled as a %s: ' % (kind, self.res.version, kind)
        if type_errors:
            path, jt, gt, struct = type_errors[0]
            raise bad_request(head + "json: cannot unmarshal %s into Go struct field %s.%s of type %s"
                              % (jt, struct or kind, path, gt))
        mode = self.query.get("fieldValidation") or "Warn"
        if mode not in ("Strict", "Warn", "Ignore"):
            raise bad_request('Invalid fieldValidation value: %s' % mode)
        problems = ['unknown field "%s"' % u for u in unknown]
        problems = ['duplicate field "%s"' % d for d in duplicates or []] + problems
        if not problems or mode == "Ignore":
            return
        if mode == "Strict":
            raise bad_request(head + "strict decoding error: " + ", ".join(problems))
        self.warnings.extend(problems)

    # -- verbs ---------------------------------------------------------------------------
    def get(self):
        obj = self.store.get(self.key, self.namespace, self.name)
        if self.sub == "scale":
            return self.reply(200, self.scale_of(obj))
        if not self.sub and tables.wants_table(self.http.headers.get("Accept")):
            return self.reply(200, tables.table(self.res.name, [self.out(obj)], obj["metadata"]["resourceVersion"]))
        return self.reply(200, self.out(obj))

    def _matchers(self):
        lm = label_matcher(self.query.get("labelSelector"))
        fm = field_matcher(self.query.get("fieldSelector"))
        return lambda o: lm(o["metadata"].get("labels")) and fm(o)

    def list(self):
        items, rv = self.store.list(self.key, self.namespace, self._matchers())
        if tables.wants_table(self.http.headers.get("Accept")):
            return self.reply(200, tables.table(self.res.name, [self.out(o) for o in items], rv))
        out = []
        for o in items:
            o = self.out(o)
            o.pop("apiVersion", None)
            o.pop("kind", None)
            out.append(o)
        return self.reply(200, {"kind": self.res.kind + "List", "apiVersion": resources.api_version_of(self.res),
                                "metadata": {"resourceVersion": rv}, "items": out})

    def watch(self):
        match = self._matchers()
        rv = self.query.get("resourceVersion")
        timeout = float(self.query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        initial = []
        # Streaming lists (client-go's WatchList, on in kubectl 1.35+): the
        # current objects as ADDED, then a bookmark that marks their end.
        send_initial = self.query.get("sendInitialEvents", "").lower() == "true"
        end_bookmark = None
        with self.store.lock:
            if rv in (None, "", "0") or send_initial:
                items, current_rv = self.store.list(self.key, self.namespace)
                initial = [("ADDED", o) for o in items]
                q = self.store.watch(self.key, self.namespace)
                if send_initial:
                    end_bookmark = {"type": "BOOKMARK", "object": {
                        "kind": self.res.kind, "apiVersion": resources.api_version_of(self.res),
                        "metadata": {"resourceVersion": current_rv,
                                     "annotations": {"k8s.io/initial-events-end": "true"}}}}
            else:
                oldest = self.store._history[0][0] if self.store._history else None
                if oldest is not None and int(rv) < oldest - 1 and int(rv) < int(self.store.resource_version):
                    q = None
                else:
                    q = self.store.watch(self.key, self.namespace, since_rv=rv)
        http = self.http
        http.send_response(200)
        http.send_header("Content-Type", "application/json")
        http.send_header("Transfer-Encoding", "chunked")
        http.send_header("Cache-Control", "no-cache, private")
        http.end_headers()
        http._status = 200

        as_table = tables.wants_table(http.headers.get("Accept"))

        def send(event):
            if as_table and event["type"] not in ("ERROR", "BOOKMARK"):
                obj = event["object"]
                event = {"type": event["type"],
                         "object": tables.table(self.res.name, [obj], obj["metadata"].get("resourceVersion", ""))}
            data = (json.dumps(event) + "\n").encode()
            http.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            http.wfile.flush()

        try:
            if q is None:
                send({"type": "ERROR", "object": status_body(410, "Expired", "too old resource version: %s" % rv)})
                return
            for et, obj in initial:
                if match(obj):
                    send({"type": et, "object": self.out(obj)})
            if end_bookmark is not None:
                send(end_bookmark)
            while not self.api._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    et, obj = q.get(timeout=min(left, 1.0))
                except queue.Empty:
                    continue
                if match(obj):
                    send({"type": et, "object": self.out(obj)})
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            http.close_connection = True
            return
        finally:
            if q is not None:
                self.store.unwatch(q)
        try:
            http.wfile.write(b"0\r\n\r\n")
            http.wfile.flush()
        except OSError:
            http.close_connection = True

    def create(self):
        if self.sub:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        obj = self.decode()
        self.check_type(obj)
        self.field_validation(obj)
        obj.pop("status", None) if self.res.name not in ("events",) else None
        out = self.api.create_object(self.res, self.namespace, obj, self.manager, self.dry_run)
        return self.reply(201, self.out(out))

    def _prepare_update(self, new, old):
        """Defaults, validation and admission of an update (PUT/PATCH)."""
        res = self.res
        meta = new.setdefault("metadata", {})
        if self.sub is None:
            validation.apply_defaults(res.kind, new, self.store)
            if res.name == "namespaces":
                new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = self.name
            if res.name == "services":
                # before validation, as the service registry's patchAllocatedValues and normalizeClusterIPs:
                # addresses left out keep their values, and a changed clusterIP carries clusterIPs along
                spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
                for k in ("clusterIP", "clusterIPs"):
                    if k in old_spec and not spec.get(k):
                        spec[k] = old_spec[k]
                if spec.get("clusterIP") != old_spec.get("clusterIP") and \
                        spec.get("clusterIPs") == old_spec.get("clusterIPs"):
                    spec["clusterIPs"] = [spec["clusterIP"]]
                self.api._allocate_node_ports(spec, old_spec)
            causes = validation.validate(res.kind, new, old=old, store=self.store)
            if causes:
                raise invalid_error(res, self.name, causes)
            if res.name == "persistentvolumeclaims":
                msg = validation.pvc_resize_forbidden(new, old, self.store)
                if msg:
                    raise ApiError(403, "Forbidden", 'persistentvolumeclaims "%s" is forbidden: %s' % (self.name, msg),
                                   _details(res, self.name))
        elif self.sub == "status":
            validation.apply_defaults(res.kind, new, self.store)
            causes = validation.validate_status_update(res.kind, new, old)
            if causes:
                raise invalid_error(res, self.name, causes)
        meta["namespace"] = old["metadata"].get("namespace")
        if not res.namespaced:
            meta.pop("namespace", None)
        return new

    def _store_update(self, new, old, operation="Update", fields=None, check_rv=True):
        new_rv = (new.get("metadata") or {}).get("resourceVersion")
        stale = check_rv and new_rv and new_rv != old["metadata"]["resourceVersion"]
        if not stale and _same_but_managed(new, old, self.sub):
            return old  # a no-op write changes nothing, not even managedFields
        if fields is not None:
            new["metadata"]["managedFields"] = _record_manager(
                old["metadata"].get("managedFields") or [], self.manager, operation, self.res, fields, self.sub)
        if self.dry_run:
            return new
        if self.sub == "status":
            managed = new["metadata"].get("managedFields")
            new["metadata"] = copy.deepcopy(old["metadata"])
            new["metadata"]["resourceVersion"] = new_rv or old["metadata"]["resourceVersion"]
            if managed is not None:
                new["metadata"]["managedFields"] = managed
            return self.store.update(self.key, new, subresource="status", check_rv=check_rv)
        if old["metadata"].get("deletionTimestamp") and self.res.name == "namespaces":
            new.setdefault("status", {})["phase"] = "Terminating"
        out = self.store.update(self.key, new, check_rv=check_rv)
        meta = out["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and self.res.name != "namespaces":
            try:  # the last finalizer of an object being deleted is gone: so is the object
                self.store.delete(self.key, self.namespace, self.name)
            except NotFound:
                pass
        return out

    def update(self):
        obj = self.decode()
        if self.sub == "scale":
            self.check_type(obj, "Scale")
            return self._scale_write(obj)
        if self.sub == "status" and not (obj.get("metadata") or {}).get("resourceVersion"):
            for attempt in range(20):
                try:
                    return self._update_once(copy.deepcopy(obj))
                except Conflict:
                    if attempt == 19:
                        raise
                    time.sleep(0.01)
        return self._update_once(obj)

    def _update_once(self, obj):
        self.check_type(obj)
        self.field_validation(obj)
        meta = obj.get("metadata") or {}
        if meta.get("name") and meta["name"] != self.name:
            raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                              % (meta["name"], self.name))
        old = self.store.get(self.key, self.namespace, self.name)
        obj.setdefault("metadata", {})["name"] = self.name
        obj["apiVersion"], obj["kind"] = resources.api_version_of(self.res), self.res.kind
        if self.sub == "finalize":
            self.sub = None
        new = self._prepare_update(obj, old)
        node = schema.kind_schema(self.res.group, self.res.version, self.res.kind)
        if self.sub == "status":
            status_node = schema.child_schema(node, "status")
            fields = patch.mark_created(patch.owned_fields(obj.get("status", {}), status_node),
                                        obj.get("status", {}), old.get("status") or {}, status_node)
        else:
            fields = patch.mark_created(patch.owned_fields(_without_status(obj), node), _without_status(obj),
                                        old, node)
        out = self._store_update(new, old, fields=fields)
        return self.reply(200, self.out(out))

    def patch(self):
        for attempt in range(20):
            try:
                return self._patch_once()
            except Conflict:
                if self.user_precondition or attempt == 19:
                    raise
                time.sleep(0.01)

    user_precondition = False

    def _patch_once(self):
        ct = self.content_type
        if ct not in PATCH_TYPES:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: " + ", ".join(PATCH_TYPES))
        if ct == "application/apply-patch+yaml":
            return self.apply()
        data = self.decode()
        old = self.store.get(self.key, self.namespace, self.name)
        if self.sub == "scale":
            current = self.scale_of(old)
            node = schema.kind_schema("autoscaling", "v1", "Scale")
            new_scale = self._apply_patch(ct, current, data, node)
            return self._scale_write(new_scale, old)
        node = schema.kind_schema(self.res.group, self.res.version, self.res.kind)
        current = self.out(old)
        if ct == "application/strategic-merge-patch+json":
            if not isinstance(data, dict):
                raise bad_request("cannot unmarshal a patch that is not an object")
        new = self._apply_patch(ct, current, data, node)
        if not isinstance(new, dict):
            raise bad_request("patch produced a non-object")
        self.check_type(new)
        self.field_validation(new)
        new_meta = new.setdefault("metadata", {})
        if new_meta.get("name") != self.name:
            raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                              % (new_meta.get("name"), self.name))
        check_rv = isinstance(data, dict) and bool((data.get("metadata") or {}).get("resourceVersion"))
        self.user_precondition = check_rv
        if not check_rv:
            new_meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        new = self._prepare_update(new, old)
        fields = patch.mark_created(patch.owned_fields(data if isinstance(data, dict) else {}, node), new, old, node)
        if self.sub == "status":
            fields = fields.get("f:status", {})
        out = self._store_update(new, old, fields=fields, check_rv=True)
        return self.reply(200, self.out(out))

    def _apply_patch(self, ct, current, data, node):
        try:
            if ct == "application/json-patch+json":
                return patch.json_patch(current, data)
            if ct == "application/merge-patch+json":
                return patch.merge_patch(current, data)
            return patch.strategic_merge(current, data, node)
        except patch.PatchError as e:
            if ct == "application/json-patch+json":
                raise ApiError(422, "Invalid", str(e))
            raise bad_request(str(e))

    def apply(self):
        for attempt in range(20):
            try:
                return self._apply_once()
            except Conflict as e:
                if "Apply failed" in str(e) or attempt == 19:
                    raise
                time.sleep(0.01)

    def _apply_once(self):
        data = self.decode(yaml_ok=True)
        if not self.query.get("fieldManager"):
            raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                           "is required for apply patch",
                           {"group": "meta.k8s.io", "kind": "PatchOptions",
                            "causes": [{"reason": "FieldValueRequired", "message": "Required value: is required "
                                        "for apply patch", "field": "fieldManager"}]})
        if self.sub:
            raise ApiError(405, "MethodNotAllowed", "server-side apply of subresources is not supported by kubesim")
        self.check_type(data)
        if not data.get("apiVersion") or not data.get("kind"):
            raise bad_request("invalid object type: /, Kind=")
        meta = data.setdefault("metadata", {}) if isinstance(data.get("metadata"), dict) else None
        if meta is None or meta.get("name") not in (None, self.name):
            raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                              % ((meta or {}).get("name"), self.name))
        self.field_validation(data)
        node = schema.kind_schema(self.res.group, self.res.version, self.res.kind)
        applied = copy.deepcopy(data)
        applied["metadata"].pop("managedFields", None)
        new_fs = patch.owned_fields(_without_status(applied), node)
        force = self.query.get("force", "").lower() in ("true", "1")
        try:
            old = self.store.get(self.key, self.namespace, self.name)
        except NotFound:
            obj = copy.deepcopy(applied)
            obj["metadata"]["name"] = self.name
            obj.pop("status", None)
            out = self.api.create_object(self.res, self.namespace, obj, None, self.dry_run)
            if not self.dry_run and new_fs:
                def set_owner(o):
                    o["metadata"]["managedFields"] = [_managed_entry(self.manager, "Apply", self.res, new_fs)]
                out = self.store.mutate(self.key, self.namespace, self.name, set_owner)
            return self.reply(201, self.out(out))
        managed = copy.deepcopy(old["metadata"].get("managedFields") or [])
        mine = next((m for m in managed if m.get("manager") == self.manager and m.get("operation") == "Apply"
                     and not m.get("subresource")), None)
        others = [m for m in managed if m is not mine and not m.get("subresource")]
        current = self.out(old)
        conflicts = []
        for other in others:
            if other.get("operation") != "Apply":
                continue
            ofs = other.get("fieldsV1") or {}
            for p in patch.leaf_paths(new_fs):
                sub = patch._lookup(ofs, p)
                if sub == {} and patch._lookup(new_fs, p) == {}:
                    if patch.value_at(current, p) != patch.value_at(applied, p):
                        conflicts.append((other, p))
        if conflicts and not force:
            # worded as the real field manager words them (conflicts are with Apply managers only here,
            # which it names without an API version or time)
            causes = [{"reason": "FieldManagerConflict", "message": 'conflict with "%s"' % o["manager"],
                       "field": patch.path_to_field(p)} for o, p in conflicts]
            if len(causes) == 1:
                msg = "Apply failed with 1 conflict: %s: %s" % (causes[0]["message"], causes[0]["field"])
            else:
                lines = []
                for manager in sorted({o["manager"] for o, _p in conflicts}):
                    lines.append('conflicts with "%s":' % manager)
                    lines.extend("- %s" % patch.path_to_field(p) for o, p in conflicts if o["manager"] == manager)
                msg = "Apply failed with %d conflicts: %s" % (len(causes), "\n".join(lines))
            raise ApiError(409, "Conflict", msg, {"causes": causes})
        for other, p in conflicts:
            _remove_fs_path(other.get("fieldsV1") or {}, p)
        # a manager the forced apply took every field from loses its entry
        managed = [m for m in managed if m is mine or m.get("fieldsV1")]
        merged = patch.strategic_merge(current, _without_status(applied), node, apply=True)
        if mine is not None:
            for p in patch.removed_paths(mine.get("fieldsV1") or {}, new_fs,
                                         [m.get("fieldsV1") or {} for m in others]):
                patch.remove_path(merged, p)
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        merged["metadata"]["name"] = self.name
        new = self._prepare_update(merged, old)
        if _same_but_managed(new, old) and mine is not None and mine.get("fieldsV1") == new_fs and not conflicts:
            return self.reply(200, self.out(old))
        managed = [m for m in managed if m is not mine]
        if new_fs:
            managed.append(_managed_entry(self.manager, "Apply", self.res, new_fs))
        new["metadata"]["managedFields"] = managed
        if not managed:
            del new["metadata"]["managedFields"]
        out = new if self.dry_run else self.store.update(self.key, new)
        return self.reply(200, self.out(out))

    def _scale_write(self, scale, old=None):
        if old is None:
            old = self.store.get(self.key, self.namespace, self.name)
        report = schema.check_fields(scale, schema.kind_schema("autoscaling", "v1", "Scale"))
        self._field_problems(report.unknown, report.type_errors)
        report.prune()
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", 'Scale.autoscaling "%s" is invalid: spec.replicas: Invalid value: %s: '
                           "must be greater than or equal to 0" % (self.name, replicas),
                           {"name": self.name, "group": "autoscaling", "kind": "Scale",
                            "causes": [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                        "message": "Invalid value: %s: must be greater than or equal to 0"
                                        % replicas}]})
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        self.user_precondition = bool(rv) and self.http.command == "PUT"
        if self.http.command == "PATCH" and rv == old["metadata"]["resourceVersion"]:
            rv = None  # the patched Scale carries the current version; no precondition was asked for
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        if rv:
            new["metadata"]["resourceVersion"] = rv
        new["metadata"]["managedFields"] = _record_manager(
            old["metadata"].get("managedFields") or [], self.manager, "Update", self.res,
            {"f:spec": {"f:replicas": {}}}, "scale")
        out = new if self.dry_run else self.store.update(self.key, new, check_rv=bool(rv))
        return self.reply(200, self.scale_of(out))

    def scale_of(self, obj):
        sel = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        meta = obj["metadata"]
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join("%s=%s" % kv for kv in sorted(sel.items()))},
        }

    def _delete_options(self):
        policy = self.query.get("propagationPolicy")
        if self.body:
            try:
                opts = json.loads(self.body)
            except ValueError:
                raise bad_request("the body of the request was in an unknown format")
            if isinstance(opts, dict):
                policy = opts.get("propagationPolicy") or policy
                if opts.get("orphanDependents") is True:
                    policy = "Orphan"
                pre = opts.get("preconditions") or {}
                if pre:
                    cur = self.store.get(self.key, self.namespace, self.name) if self.name else None
                    if cur is not None:
                        for k in ("uid", "resourceVersion"):
                            if pre.get(k) and pre[k] != cur["metadata"].get(k):
                                raise Conflict(
                                    'Operation cannot be fulfilled on %s "%s": Precondition failed: %s in '
                                    "precondition: %s, %s in object meta: %s" % (
                                        display_name(self.key), self.name, k.upper() if k == "uid" else k,
                                        pre[k], k.upper() if k == "uid" else k, cur["metadata"].get(k)),
                                    self.key, self.name)
        if policy not in (None, "Foreground", "Background", "Orphan"):
            raise ApiError(422, "Invalid", 'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                           'value: "%s": supported values: "Foreground", "Background", "Orphan", "nil"' % policy)
        return policy

    def delete(self):
        policy = self._delete_options()
        if self.res.namespaced and not self.store.exists("namespaces", None, self.namespace):
            raise not_found(self.res, self.name)
        out = self.api.delete_object(self.res, self.namespace, self.name, policy, self.dry_run)
        # the object, when its registry returns deleted objects or when finalizers (orphan,
        # foregroundDeletion or the object's own) keep it; otherwise a Status
        if self.res.name in RETURN_DELETED_OBJECT or (out["metadata"].get("deletionTimestamp")
                                                      and out["metadata"].get("finalizers")):
            return self.reply(200, self.out(out))
        return self.reply(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                "details": _details(self.res, self.name, self.res.name)
                                | {"uid": out["metadata"].get("uid")}})

    def delete_collection(self):
        policy = self._delete_options()
        items, rv = self.store.list(self.key, self.namespace, self._matchers())
        deleted = []
        for o in items:
            try:
                deleted.append(self.out(self.api.delete_object(self.res, self.namespace,
                                                               o["metadata"]["name"], policy, self.dry_run)))
            except (NotFound, ApiError):
                pass
        return self.reply(200, {"kind": self.res.kind + "List", "apiVersion": resources.api_version_of(self.res),
                                "metadata": {"resourceVersion": self.store.resource_version}, "items": deleted})


def _same_but_managed(new, old, sub=None):
    if sub == "status":
        return new.get("status") == old.get("status")
    a, b = copy.deepcopy(new), copy.deepcopy(old)
    for o in (a, b):
        o.get("metadata", {}).pop("managedFields", None)
        o.get("metadata", {}).pop("resourceVersion", None)
        o.get("metadata", {}).pop("generation", None)
        o.pop("status", None)
    return a == b


def _remove_fs_path(fs, path):
    """Remove ``path`` from a field set, and the parents it leaves empty (they
    were in the set only through their children)."""
    key, rest = path[0], path[1:]
    if not rest:
        fs.pop(key, None)
        return
    sub = fs.get(key)
    if isinstance(sub, dict):
        _remove_fs_path(sub, rest)
        if not sub:
            del fs[key]


def _record_manager(managed, manager, operation, res, fields, subresource=None):
    managed = copy.deepcopy(managed)
    for m in managed:
        if m.get("manager") == manager and m.get("operation") == operation and m.get("subresource") == subresource:
            m["fieldsV1"] = _union(m.get("fieldsV1") or {}, fields)
            m["time"] = now_iso()
            return managed
    if fields:
        managed.append(_managed_entry(manager, operation, res, fields, subresource))
    return managed


class DuplicateField(ValueError):
    pass


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateField(k)
        out[k] = v
    return out


def _json_kind(value):
    return {dict: "object", list: "array", str: "string", bool: "bool"}.get(type(value), "number")


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)
