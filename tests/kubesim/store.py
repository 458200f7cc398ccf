"""In-memory object store of the Kubernetes API simulator (test infrastructure).

Objects are plain JSON dicts exactly as the API returns them. A resource is
named by its API path key: ``"pods"`` for the core group, ``"apps/statefulsets"``
for named groups. The store owns what a real API server owns in metadata:
``uid``, the cluster-wide ``resourceVersion``, ``generation`` (bumped on changes
outside ``metadata`` and ``status``), ``creationTimestamp``. Everything returned
is a deep copy; callers never share state with the store.

Listeners (the controllers) are called with ``(event_type, resource, obj)``
after every change, outside the store lock, in the thread that made the change.
Watchers get the same events through a queue.
"""

import copy
import datetime
import itertools
import queue
import threading
import uuid


class StoreError(Exception):
    """Base of the errors the HTTP layer turns into ``Status`` objects."""

    code = 500
    reason = "InternalError"

    def __init__(self, message, resource=None, name=None):
        super().__init__(message)
        self.message = message
        self.resource = resource
        self.name = name


class NotFound(StoreError):
    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    code = 409
    reason = "AlreadyExists"


class Conflict(StoreError):
    code = 409
    reason = "Conflict"


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def group_of(resource):
    return resource.split("/", 1)[0] if "/" in resource else ""


def plural_of(resource):
    return resource.split("/", 1)[-1]


def display_name(resource):
    """``statefulsets.apps`` / ``pods``: the form real error messages use."""
    group = group_of(resource)
    return plural_of(resource) + ("." + group if group else "")


def _spec_part(obj):
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self._objects = {}  # (resource, namespace or "", name) -> obj
        self._rv = itertools.count(1)
        self._last_rv = 0
        self._listeners = []
        self._watchers = []  # (resource, namespace or None, queue)
        self._history = []  # (rv, event_type, resource, obj) for watch resume

    # -- helpers -----------------------------------------------------------
    def _next_rv(self):
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    @property
    def resource_version(self):
        return str(self._last_rv)

    def add_listener(self, fn):
        self._listeners.append(fn)

    def _record(self, event_type, resource, obj):
        """Called with the lock held, so watchers see events in rv order."""
        self._history.append((int(obj["metadata"]["resourceVersion"]), event_type, resource, copy.deepcopy(obj)))
        if len(self._history) > 5000:
            del self._history[:1000]
        for res, ns, q in list(self._watchers):
            if res == resource and (ns is None or ns == obj["metadata"].get("namespace")):
                q.put((event_type, copy.deepcopy(obj)))

    def _emit(self, event_type, resource, obj):
        """Called after the lock is released: listeners may write again."""
        for fn in list(self._listeners):
            fn(event_type, resource, copy.deepcopy(obj))

    @staticmethod
    def _key(resource, namespace, name):
        return (resource, namespace or "", name)

    # -- reads -------------------------------------------------------------
    def get(self, resource, namespace, name):
        with self.lock:
            obj = self._objects.get(self._key(resource, namespace, name))
            if obj is None:
                raise NotFound('%s "%s" not found' % (display_name(resource), name), resource, name)
            return copy.deepcopy(obj)

    def exists(self, resource, namespace, name):
        with self.lock:
            return self._key(resource, namespace, name) in self._objects

    def list(self, resource, namespace=None, predicate=None):
        """Return ``(items, resourceVersion)``; items sorted by namespace, name."""
        with self.lock:
            items = [
                copy.deepcopy(o)
                for (res, ns, _u), o in self._objects.items()
                if res == resource and (namespace is None or ns == namespace) and (predicate is None or predicate(o))
            ]
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            return items, self.resource_version

    def all_objects(self):
        with self.lock:
            return [(res, copy.deepcopy(o)) for (res, _u, _u), o in sorted(self._objects.items())]

    # -- writes ------------------------------------------------------------
    def create(self, resource, obj, namespaced=True):
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        ns = meta.get("namespace") if namespaced else None
        if not namespaced:
            meta.pop("namespace", None)
        with self.lock:
            key = self._key(resource, ns, name)
            if key in self._objects:
                raise AlreadyExists('%s "%s" already exists' % (display_name(resource), name), resource, name)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso()
            meta["resourceVersion"] = self._next_rv()
            meta["generation"] = 1
            for k in ("deletionTimestamp", "selfLink"):
                meta.pop(k, None)
            self._objects[key] = obj
            out = copy.deepcopy(obj)
            self._record("ADDED", resource, out)
        self._emit("ADDED", resource, out)
        return out

    def update(self, resource, obj, subresource=None, check_rv=True):
        """PUT semantics. ``subresource=None`` keeps the stored status;
        ``subresource="status"`` changes only the status. 409 on stale rv."""
        meta = obj.get("metadata", {})
        with self.lock:
            key = self._key(resource, meta.get("namespace"), meta.get("name"))
            old = self._objects.get(key)
            if old is None:
                name = meta.get("name")
                raise NotFound('%s "%s" not found' % (display_name(resource), name), resource, name)
            new = self._merge_for_update(old, obj, subresource, check_rv, resource)
            if new == old:
                return copy.deepcopy(old)
            out = self._store_modified(resource, key, new)
        self._emit("MODIFIED", resource, out)
        return out

    def _store_modified(self, resource, key, new):
        """With the lock held: store a changed object under a new resourceVersion
        and record the MODIFIED event; the caller emits it after the lock."""
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[key] = new
        out = copy.deepcopy(new)
        self._record("MODIFIED", resource, out)
        return out

    def _merge_for_update(self, old, obj, subresource, check_rv, resource):
        rv = obj.get("metadata", {}).get("resourceVersion")
        if check_rv and rv and rv != old["metadata"]["resourceVersion"]:
            raise Conflict(
                'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                "please apply your changes to the latest version and try again"
                % (display_name(resource), old["metadata"]["name"]),
                resource,
                old["metadata"]["name"],
            )
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = copy.deepcopy(obj["status"])
            else:
                new.pop("status", None)
            return new
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "resourceVersion"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
        if _spec_part(new) != _spec_part(old):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        return new

    def mutate(self, resource, namespace, name, fn, subresource=None):
        """Read-modify-write under the lock (for controllers): ``fn(obj)``
        changes the copy in place; the result is stored as an update."""
        with self.lock:
            obj = self.get(resource, namespace, name)
            fn(obj)
            return self.update(resource, obj, subresource=subresource, check_rv=False)

    def delete(self, resource, namespace, name):
        with self.lock:
            key = self._key(resource, namespace, name)
            obj = self._objects.pop(key, None)
            if obj is None:
                raise NotFound('%s "%s" not found' % (display_name(resource), name), resource, name)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            out = copy.deepcopy(obj)
            self._record("DELETED", resource, out)
        self._emit("DELETED", resource, out)
        return out

    # -- watch -------------------------------------------------------------
    def watch(self, resource, namespace=None, since_rv=None):
        """Return a queue of ``(event_type, obj)``. With ``since_rv``, events
        newer than it that are still in history are replayed first."""
        q = queue.Queue()
        with self.lock:
            if since_rv not in (None, "", "0"):
                since = int(since_rv)
                for rv, et, res, obj in self._history:
                    in_ns = namespace is None or namespace == obj["metadata"].get("namespace")
                    if rv > since and res == resource and in_ns:
                        q.put((et, copy.deepcopy(obj)))
            self._watchers.append((resource, namespace, q))
        return q

    def unwatch(self, q):
        with self.lock:
            self._watchers = [w for w in self._watchers if w[2] is not q]

    def mark_deleting(self, resource, namespace, name, timestamp, fn=None):
        """Set ``metadata.deletionTimestamp`` (graceful deletion, e.g. a
        namespace going ``Terminating``); ``fn(obj)`` may change more."""
        with self.lock:
            key = self._key(resource, namespace, name)
            old = self._objects.get(key)
            if old is None:
                raise NotFound('%s "%s" not found' % (display_name(resource), name), resource, name)
            new = copy.deepcopy(old)
            new["metadata"].setdefault("deletionTimestamp", timestamp)
            if fn is not None:
                fn(new)
            if new == old:
                return copy.deepcopy(old)
            out = self._store_modified(resource, key, new)
        self._emit("MODIFIED", resource, out)
        return out

    def finalizing(self):
        """``(resource, namespace, name)`` of each object other than a
        namespace that is being deleted and waits for its ``finalizers``
        (no copies)."""
        with self.lock:
            return [(res, ns or None, name) for (res, ns, name), o in self._objects.items()
                    if res != "namespaces" and o.get("metadata", {}).get("deletionTimestamp")
                    and o["metadata"].get("finalizers")]

    def ownership(self):
        """``(uids, owned)``: every stored uid, and ``(resource, namespace,
        name, owner uids)`` of each object with ownerReferences (no copies)."""
        with self.lock:
            uids = set()
            owned = []
            for (res, ns, name), o in self._objects.items():
                meta = o.get("metadata", {})
                uids.add(meta.get("uid"))
                refs = meta.get("ownerReferences")
                if refs:
                    owned.append((res, ns or None, name, [r.get("uid") for r in refs]))
            return uids, owned
