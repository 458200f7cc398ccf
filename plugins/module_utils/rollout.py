# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollout waiting with doom detection.

Pure functions evaluate plain API dicts (camelCase keys, as the API returns
them): ``statefulset_status`` and ``deployment_status`` follow kubectl's
StatefulSetStatusViewer and DeploymentStatusViewer; ``pod_doom`` recognises a
pod that will not become ready by waiting (image pull failures, crash loops,
config errors, unschedulable). ``RolloutWaiter`` lists the workloads and their
pods, and waits for changes with watches on pods, StatefulSets and Deployments
(one feeder thread per watch, one evaluation loop), failing as soon as a pod
is doomed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import re
import threading
import time

import queue

try:
    import kubernetes
    from kubernetes.client.rest import ApiException
except ImportError:  # pragma: no cover - the module reports the missing library
    kubernetes = None
    ApiException = Exception

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.k8s_client import (
    api_error_message,
    call_json,
)

DOOM_WAITING_REASONS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
)
UNSCHEDULABLE = "Unschedulable"
# What the scheduler says while a pod's PersistentVolumeClaims are still being provisioned and bound
# (its VolumeBinding plugin; the scheduler retries by itself once the PV controller has bound them):
# right after a StatefulSet is created this is normal, not a reason to give up.
VOLUME_BINDING_WAIT = re.compile(
    r'pod has unbound immediate PersistentVolumeClaims|persistentvolumeclaim "[^"]*" not found')
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


class RolloutFailed(Exception):
    """The rollout cannot complete; ``details`` carries the result fields."""

    def __init__(self, message, **details):
        super(RolloutFailed, self).__init__(message)
        self.message = message
        self.details = details


# --------------------------------------------------------------------------
# workload status (kubectl rollout status semantics)
# --------------------------------------------------------------------------

def _int(value, default=0):
    return default if value is None else int(value)


def _spec_replicas(obj):
    return _int((obj.get("spec") or {}).get("replicas"), 1)


def statefulset_status(sts):
    """Evaluate a StatefulSet dict. Returns ``(done, message)``.

    Same checks as kubectl's StatefulSetStatusViewer: the controller has
    observed the latest generation, every replica is ready, and the update
    has reached every pod (``updatedReplicas`` up to the partition, and
    ``currentRevision == updateRevision`` for an unpartitioned rolling
    update). For the ``OnDelete`` strategy, where kubectl has no rollout
    status, readiness of every replica at the observed generation counts as done.
    """
    name = (sts.get("metadata") or {}).get("name")
    spec = sts.get("spec") or {}
    status = sts.get("status") or {}
    generation = _int((sts.get("metadata") or {}).get("generation"))
    observed = _int(status.get("observedGeneration"))
    replicas = _spec_replicas(sts)
    strategy = spec.get("updateStrategy") or {}
    strategy_type = strategy.get("type") or "RollingUpdate"
    if observed == 0 or generation > observed:
        return False, "Waiting for statefulset %s spec update to be observed..." % name
    ready = _int(status.get("readyReplicas"))
    if ready < replicas:
        return False, "Waiting for statefulset %s: %d of %d pods ready..." % (name, ready, replicas)
    if strategy_type != "RollingUpdate":
        return True, "statefulset %s: %d pods ready (%s strategy)" % (name, ready, strategy_type)
    updated = _int(status.get("updatedReplicas"))
    partition = _int((strategy.get("rollingUpdate") or {}).get("partition"))
    if partition > 0:
        wanted = replicas - partition
        if updated < wanted:
            return False, "Waiting for statefulset %s partitioned roll out to finish: %d out of %d new pods " \
                "have been updated..." % (name, updated, wanted)
        return True, "statefulset %s partitioned roll out complete: %d new pods have been updated" % (name, updated)
    if updated < replicas:
        return False, "Waiting for statefulset %s rolling update: %d out of %d new pods have been updated..." % (
            name, updated, replicas)
    current_rev = status.get("currentRevision")
    update_rev = status.get("updateRevision")
    if update_rev != current_rev:
        return False, "Waiting for statefulset %s rolling update to complete %d pods at revision %s..." % (
            name, updated, update_rev)
    return True, "statefulset %s rolling update complete %d pods at revision %s" % (name, replicas, current_rev)


def _condition(obj, cond_type):
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == cond_type:
            return cond
    return None


def deployment_status(deploy):
    """Evaluate a Deployment dict. Returns ``(done, message)``.

    Same checks as kubectl's DeploymentStatusViewer. Raises ``RolloutFailed``
    when the Progressing condition reports ``ProgressDeadlineExceeded``.
    """
    name = (deploy.get("metadata") or {}).get("name")
    status = deploy.get("status") or {}
    generation = _int((deploy.get("metadata") or {}).get("generation"))
    observed = _int(status.get("observedGeneration"))
    if generation > observed:
        return False, "Waiting for deployment %s spec update to be observed..." % name
    cond = _condition(deploy, "Progressing")
    if cond is not None and cond.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        raise RolloutFailed(
            "deployment %s exceeded its progress deadline: %s" % (name, cond.get("message") or ""),
            reason=PROGRESS_DEADLINE_EXCEEDED,
        )
    replicas = _spec_replicas(deploy)
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    if updated < replicas:
        return False, "Waiting for deployment %s rollout to finish: %d out of %d new replicas have been updated..." % (
            name, updated, replicas)
    if total > updated:
        return False, "Waiting for deployment %s rollout to finish: %d old replicas are pending termination..." % (
            name, total - updated)
    if available < updated:
        return False, "Waiting for deployment %s rollout to finish: %d of %d updated replicas are available..." % (
            name, available, updated)
    return True, "deployment %s successfully rolled out" % name


# --------------------------------------------------------------------------
# pods: ownership, readiness, doom
# --------------------------------------------------------------------------

def selector_matches(selector, labels):
    """Whether a LabelSelector dict matches a label dict. An empty or missing selector matches nothing."""
    if not selector:
        return False
    labels = labels or {}
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    for key, value in match_labels.items():
        if labels.get(key) != value:
            return False
    for expr in expressions:
        key = expr.get("key")
        operator = expr.get("operator")
        values = expr.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _controller_ref(obj):
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller"):
            return ref
    return refs[0] if refs else None


def pod_owner(pod, statefulsets, deployments, replicasets):
    """Return ``(kind, name)`` of the watched workload owning ``pod``, or ``None``.

    Ownership goes through ownerReferences (Pod -> StatefulSet, Pod ->
    ReplicaSet -> Deployment); a pod without an owner reference is matched by
    the workload's selector.
    """
    ref = _controller_ref(pod)
    sts_names = set((s.get("metadata") or {}).get("name") for s in statefulsets)
    deploy_names = set((d.get("metadata") or {}).get("name") for d in deployments)
    if ref is not None:
        if ref.get("kind") == "StatefulSet" and ref.get("name") in sts_names:
            return ("StatefulSet", ref.get("name"))
        if ref.get("kind") == "ReplicaSet":
            for rs in replicasets:
                if (rs.get("metadata") or {}).get("name") == ref.get("name"):
                    rs_ref = _controller_ref(rs)
                    if rs_ref and rs_ref.get("kind") == "Deployment" and rs_ref.get("name") in deploy_names:
                        return ("Deployment", rs_ref.get("name"))
            # the ReplicaSet may not be listed yet: fall through to the selector
    labels = (pod.get("metadata") or {}).get("labels") or {}
    for sts in statefulsets:
        if selector_matches((sts.get("spec") or {}).get("selector"), labels):
            return ("StatefulSet", sts["metadata"]["name"])
    for deploy in deployments:
        if selector_matches((deploy.get("spec") or {}).get("selector"), labels):
            return ("Deployment", deploy["metadata"]["name"])
    return None


def pod_ready(pod):
    cond = _condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True")


def _spec_images(pod):
    images = {}
    spec = pod.get("spec") or {}
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            images[container.get("name")] = container.get("image")
    return images


def pod_doom(pod):
    """Return a dict describing why ``pod`` cannot become ready, or ``None``.

    A pod the scheduler holds back only until its volume claims are bound
    (``VOLUME_BINDING_WAIT``) is not doomed: it is scheduled once they are.

    Keys: ``pod`` (namespace/name), ``container``, ``image``, ``reason``,
    ``message`` (kubelet or scheduler message) and ``text`` (one line for humans).
    Terminating pods are ignored: they are on their way out.
    """
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    pod_ref = "%s/%s" % (meta.get("namespace"), meta.get("name"))
    images = _spec_images(pod)
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for cstatus in status.get(key) or []:
            waiting = (cstatus.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason not in DOOM_WAITING_REASONS:
                continue
            cname = cstatus.get("name")
            image = images.get(cname) or cstatus.get("image")
            message = waiting.get("message") or ""
            last = (cstatus.get("lastState") or {}).get("terminated") or {}
            if reason == "CrashLoopBackOff" and last:
                exit_info = "last exit code %s" % last.get("exitCode")
                if last.get("reason"):
                    exit_info += " (%s)" % last.get("reason")
                if last.get("message"):
                    exit_info += ": %s" % last.get("message").strip()
                message = "%s; %s" % (message, exit_info) if message else exit_info
            text = "pod %s %scontainer %s (image %s): %s" % (
                pod_ref, "init " if key == "initContainerStatuses" else "", cname, image, reason)
            if message:
                text += ": %s" % message
            return dict(pod=pod_ref, container=cname, image=image, reason=reason, message=message, text=text)
    cond = _condition(pod, "PodScheduled")
    if cond is not None and cond.get("status") == "False" and cond.get("reason") == UNSCHEDULABLE and \
            not VOLUME_BINDING_WAIT.search(cond.get("message") or ""):
        containers = (pod.get("spec") or {}).get("containers") or []
        cname = containers[0].get("name") if containers else None
        image = containers[0].get("image") if containers else None
        message = cond.get("message") or ""
        text = "pod %s container %s (image %s): %s" % (pod_ref, cname, image, UNSCHEDULABLE)
        if message:
            text += ": %s" % message
        return dict(pod=pod_ref, container=cname, image=image, reason=UNSCHEDULABLE, message=message, text=text)
    return None


def pod_summary(pod, owner=None):
    meta = pod.get("metadata") or {}
    summary = dict(
        name=meta.get("name"),
        phase=(pod.get("status") or {}).get("phase"),
        ready=pod_ready(pod),
    )
    if owner:
        summary["owner"] = "%s/%s" % owner
    return summary


def _event_time(event):
    return (event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
            or (event.get("metadata") or {}).get("creationTimestamp") or "")


def warning_events(events, pod_name, limit=10):
    """The most recent Warning events about pod ``pod_name`` (oldest first)."""
    selected = []
    for event in events:
        involved = event.get("involvedObject") or event.get("regarding") or {}
        if involved.get("kind") != "Pod" or involved.get("name") != pod_name:
            continue
        if event.get("type") != "Warning":
            continue
        selected.append(event)
    selected.sort(key=_event_time)
    return [
        dict(pod=pod_name, reason=e.get("reason"), message=e.get("message") or e.get("note"),
             count=_int(e.get("count"), 1), last_timestamp=_event_time(e) or None)
        for e in selected[-limit:]
    ]


def evaluate(statefulsets, deployments, replicasets, pods):
    """Evaluate a snapshot. Returns a dict with ``done`` (bool), ``doom`` (dict or None),
    ``statefulsets``, ``deployments`` and ``pods`` summaries and ``waiting`` (messages of
    unfinished workloads). May raise ``RolloutFailed`` (progress deadline exceeded)."""
    sts_summaries = []
    waiting = []
    for sts in statefulsets:
        done, message = statefulset_status(sts)
        status = sts.get("status") or {}
        sts_summaries.append(dict(
            name=sts["metadata"]["name"], done=done, message=message, replicas=_spec_replicas(sts),
            ready_replicas=_int(status.get("readyReplicas")), updated_replicas=_int(status.get("updatedReplicas")),
            current_revision=status.get("currentRevision"), update_revision=status.get("updateRevision"),
        ))
        if not done:
            waiting.append(message)
    deploy_summaries = []
    for deploy in deployments:
        done, message = deployment_status(deploy)
        status = deploy.get("status") or {}
        deploy_summaries.append(dict(
            name=deploy["metadata"]["name"], done=done, message=message, replicas=_spec_replicas(deploy),
            ready_replicas=_int(status.get("readyReplicas")), updated_replicas=_int(status.get("updatedReplicas")),
            available_replicas=_int(status.get("availableReplicas")),
        ))
        if not done:
            waiting.append(message)
    pod_summaries = []
    doom = None
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name") or ""):
        owner = pod_owner(pod, statefulsets, deployments, replicasets)
        if owner is None:
            continue
        pod_summaries.append(pod_summary(pod, owner))
        if doom is None:
            doom = pod_doom(pod)
            if doom is not None:
                doom["owner"] = "%s/%s" % owner
    return dict(
        done=not waiting and doom is None,
        doom=doom,
        waiting=waiting,
        statefulsets=sts_summaries,
        deployments=deploy_summaries,
        pods=pod_summaries,
    )


# --------------------------------------------------------------------------
# the waiter
# --------------------------------------------------------------------------

class _WatchFeeder(threading.Thread):
    """Streams one watch into a shared queue, reconnecting on timeout and relisting on 410 Gone."""

    def __init__(self, name, list_func, namespace, events, stop, watch_timeout):
        super(_WatchFeeder, self).__init__(name="watch-%s" % name)
        self.daemon = True
        self.kind = name
        self.list_func = list_func
        self.namespace = namespace
        self.events = events
        self.stop_event = stop
        self.watch_timeout = watch_timeout
        self.resource_version = None
        self.watch = None

    def _relist(self):
        data = call_json(self.list_func, self.namespace)
        self.resource_version = (data.get("metadata") or {}).get("resourceVersion")

    def run(self):
        while not self.stop_event.is_set():
            try:
                if self.resource_version is None:
                    self._relist()
                    # something may have changed between the caller's list and ours
                    self.events.put((self.kind, "RELIST"))
                self.watch = kubernetes.watch.Watch(return_type="object")
                for event in self.watch.stream(
                    self.list_func, self.namespace, resource_version=self.resource_version,
                    timeout_seconds=self.watch_timeout, allow_watch_bookmarks=True,
                    _request_timeout=self.watch_timeout + 10,
                ):
                    if self.stop_event.is_set():
                        break
                    obj = event.get("raw_object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if event.get("type") != "BOOKMARK":
                        self.events.put((self.kind, event.get("type")))
            except ApiException as exc:
                if getattr(exc, "status", None) == 410:
                    self.resource_version = None  # expired: relist and start over
                    continue
                self.events.put((self.kind, "ERROR", api_error_message(exc)))
                self.stop_event.wait(1.0)
                self.resource_version = None
            except Exception as exc:  # pylint: disable=duplicate-except  # connection reset, read timeout: reconnect
                if self.stop_event.is_set():
                    break
                self.events.put((self.kind, "ERROR", "%s: %s" % (type(exc).__name__, exc)))
                self.stop_event.wait(1.0)
                self.resource_version = None

    def halt(self):
        if self.watch is not None:
            self.watch.stop()


class RolloutWaiter:
    """Wait for StatefulSets and Deployments in one namespace to finish rolling out."""

    def __init__(self, api_client, namespace, statefulsets, deployments, timeout,
                 watch_timeout=30, resync_interval=15, clock=time.monotonic):
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.namespace = namespace
        self.sts_names = list(statefulsets or [])
        self.deploy_names = list(deployments or [])
        self.timeout = timeout
        self.watch_timeout = watch_timeout
        self.resync_interval = resync_interval
        self.clock = clock
        self.watch_errors = []

    # ---- snapshot -------------------------------------------------------
    def _select(self, items, names, kind):
        by_name = dict(((i.get("metadata") or {}).get("name"), i) for i in items)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise RolloutFailed("%s %s not found in namespace %s" % (
                kind, ", ".join(missing), self.namespace), reason="NotFound")
        return [by_name[n] for n in names]

    def snapshot(self):
        ns = self.namespace

        def listed(func, kind):
            return call_json(func, ns, _what="list of %s in namespace %s" % (kind, ns)).get("items") or []

        sts_items = listed(self.apps.list_namespaced_stateful_set, "StatefulSets") if self.sts_names else []
        deploy_items = listed(self.apps.list_namespaced_deployment, "Deployments") if self.deploy_names else []
        rs_items = listed(self.apps.list_namespaced_replica_set, "ReplicaSets") if self.deploy_names else []
        pod_items = listed(self.core.list_namespaced_pod, "Pods")
        statefulsets = self._select(sts_items, self.sts_names, "statefulset")
        deployments = self._select(deploy_items, self.deploy_names, "deployment")
        return statefulsets, deployments, rs_items, pod_items

    def pod_events(self, pod_name):
        try:
            events = call_json(self.core.list_namespaced_event, self.namespace).get("items") or []
        except Exception:  # events are a diagnostic extra: never hide the real failure
            return []
        return warning_events(events, pod_name)

    def check(self):
        """One evaluation without waiting. Returns the ``evaluate`` dict."""
        return evaluate(*self.snapshot())

    # ---- wait -----------------------------------------------------------
    def _result(self, state, start):
        return dict(
            statefulsets=state["statefulsets"],
            deployments=state["deployments"],
            pods=state["pods"],
            elapsed=round(self.clock() - start, 2),
        )

    def wait(self):
        """Block until every workload is rolled out. Returns the result dict.

        Raises ``RolloutFailed`` on a doomed pod (at once), a progress deadline,
        a missing workload, or the timeout.
        """
        start = self.clock()
        deadline = start + self.timeout
        events = queue.Queue()
        stop = threading.Event()
        feeders = [_WatchFeeder("pods", self.core.list_namespaced_pod, self.namespace, events, stop,
                                self.watch_timeout)]
        if self.sts_names:
            feeders.append(_WatchFeeder("statefulsets", self.apps.list_namespaced_stateful_set, self.namespace,
                                        events, stop, self.watch_timeout))
        if self.deploy_names:
            feeders.append(_WatchFeeder("deployments", self.apps.list_namespaced_deployment, self.namespace,
                                        events, stop, self.watch_timeout))
        for feeder in feeders:
            feeder.start()
        state = None
        try:
            while True:
                try:
                    state = evaluate(*self.snapshot())
                except RolloutFailed as exc:
                    exc.details.update(elapsed=round(self.clock() - start, 2))
                    raise
                if state["doom"] is not None:
                    doom = state["doom"]
                    result = self._result(state, start)
                    result.update(doom=doom, events=self.pod_events(doom["pod"].split("/", 1)[1]))
                    raise RolloutFailed(doom["text"], **result)
                if state["done"]:
                    return self._result(state, start)
                remaining = deadline - self.clock()
                if remaining <= 0:
                    result = self._result(state, start)
                    not_ready = [p["name"] for p in state["pods"] if not p["ready"]]
                    pod_events = []
                    for name in not_ready:
                        pod_events.extend(self.pod_events(name))
                    result.update(events=pod_events)
                    message = "rollout in namespace %s not complete after %ss: %s" % (
                        self.namespace, self.timeout, "; ".join(state["waiting"]))
                    if not_ready:
                        message += "; pods not ready: %s" % ", ".join(not_ready)
                    raise RolloutFailed(message, reason="Timeout", **result)
                # block until a watch reports a change (or a periodic resync), then drain the batch
                try:
                    item = events.get(timeout=min(remaining, self.resync_interval))
                    if len(item) > 2:
                        self.watch_errors.append(item[2])
                    while True:
                        item = events.get_nowait()
                        if len(item) > 2:
                            self.watch_errors.append(item[2])
                except queue.Empty:
                    pass
        finally:
            stop.set()
            for feeder in feeders:
                feeder.halt()
