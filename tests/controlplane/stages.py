"""KWOK stages of the test control plane (test infrastructure).

KWOK's own published stages (copied from the module at build time) drive
nodes and ordinary pods: nodes become Ready and keep their lease, pods become
Ready after ``ready_delay`` seconds (a pod may set its own delay with the
annotation ``READY_DELAY_ANNOTATION``, a Go duration such as ``30s``, or
with ``ready-after-<N>s`` in an image name), Job
pods complete, deleted pods go away. Ours add what a kubelet does to pods
that cannot start:

- a container whose image contains an ``image_pull_fail`` substring waits
  with ``ErrImagePull``, then ``ImagePullBackOff``;
- a container whose image or name contains a ``crash`` substring starts,
  exits with code 1 and waits in ``CrashLoopBackOff``, its restart count
  rising every ``CRASH_PERIOD_MS``.

The Warning events that name the image or container are posted by
``agents.KubeletEvents``, because a stage's event message cannot be a
template.
"""

import copy
import os
import re

import yaml

READY_DELAY_ANNOTATION = "controlplane.es-serverless.test/ready-delay"
PULL_BACKOFF_MS = 1000
CRASH_PERIOD_MS = 2000
STAGE_API = "kwok.x-k8s.io/v1alpha1"
# A pod's own ready delay: the annotation, else a ``ready-after-<N>s`` in an
# image name (for tests that cannot annotate the pods a playbook creates).
_READY_DELAY_FROM = ('.metadata.annotations["%s"] // '
                     '([.spec.containers[].image | capture("ready-after-(?<d>[0-9]+s)") | .d] | .[0])'
                     % READY_DELAY_ANNOTATION)


def _regex(substrings):
    """A jq (Oniguruma) regex that matches any of ``substrings`` literally."""
    return "|".join(re.sub(r"([^A-Za-z0-9_])", r"\\\1", s) for s in substrings if s)


def _images_matching(regex, names_too=False):
    key = ".spec.containers.[] | select(.image | test(%s))" % _jq_string(regex)
    if names_too:
        key = ".spec.containers.[] | select((.image | test({0})) or (.name | test({0})))".format(_jq_string(regex))
    return key + " | .name"


def _jq_string(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def _expr(key, operator, values=None):
    expr = {"key": key, "operator": operator}
    if values is not None:
        expr["values"] = list(values)
    return expr


def _stage(name, selector, template, delay_ms=None, weight=None):
    spec = {"resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": [_expr(".metadata.deletionTimestamp", "DoesNotExist")] + selector},
            "next": {"statusTemplate": template}}
    if delay_ms is not None:
        spec["delay"] = {"durationMilliseconds": delay_ms}
    if weight is not None:
        spec["weight"] = weight
    return {"apiVersion": STAGE_API, "kind": "Stage", "metadata": {"name": name}, "spec": spec}


# Conditions of a pod whose containers are not ready (the kubelet's wording).
_NOT_READY = """
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: ContainersReady
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
startTime: {{ $now | Quote }}
"""

# Containers of a pod that is still Pending, each waiting (the reason follows).
_WAITING = """
phase: Pending
containerStatuses:
{{ range %(containers)s }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  restartCount: 0
  started: false
  state:
    waiting:
"""

_PULL_FAILED = _NOT_READY + _WAITING + """
{{ if regexMatch %(regex)s .image }}
      reason: ErrImagePull
      message: {{ printf "failed to pull and unpack image %%q: failed to resolve reference %%q: not found"
                   .image .image | Quote }}
{{ else }}
      reason: ContainerCreating
{{ end }}
{{ end }}
"""

_PULL_BACKOFF = _NOT_READY + _WAITING + """
{{ if eq .state.waiting.reason "ErrImagePull" }}
      reason: ImagePullBackOff
      message: {{ printf "Back-off pulling image %%q" .image | Quote }}
{{ else }}
      reason: {{ .state.waiting.reason | Quote }}
{{ end }}
{{ end }}
"""

_CRASH_STATUS = """
  lastState:
    terminated:
      exitCode: 1
      reason: Error
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
  ready: false
  started: false
  state:
    waiting:
      reason: CrashLoopBackOff
      message: {{ printf "back-off 10s restarting failed container=%%s pod=%%s_%%s(%%s)"
                   .name $pod.metadata.name $pod.metadata.namespace $pod.metadata.uid | Quote }}
"""

_CRASH_START = _NOT_READY + """
{{ $pod := . }}
phase: Running
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" )
                   ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
{{ if or ( regexMatch %(regex)s .image ) ( regexMatch %(regex)s .name ) }}
  restartCount: 1
""" + _CRASH_STATUS + """
{{ else }}
  restartCount: 0
  ready: true
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ end }}
"""

_CRASH_AGAIN = """
{{ $now := Now }}
{{ $pod := . }}
containerStatuses:
{{ range .status.containerStatuses }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
{{ if and .state.waiting ( eq .state.waiting.reason "CrashLoopBackOff" ) }}
  restartCount: {{ add .restartCount 1 }}
""" + _CRASH_STATUS + """
{{ else }}
  restartCount: {{ .restartCount }}
  ready: {{ .ready }}
  started: {{ .started }}
  state: {{ toJson .state }}
{{ end }}
{{ end }}
"""


def _template(text, regex="", containers=".spec.containers"):
    """A status template with its placeholders filled; every template goes
    through here, so ``%%`` always reaches Go's printf as ``%``."""
    return text % {"regex": _jq_string(regex), "containers": containers}


def render(stages_dir, ready_delay=0.3, image_pull_fail=(), crash=()):
    """The KWOK configuration (a list of Stage documents)."""
    docs = []
    for name in sorted(os.listdir(stages_dir)):
        with open(os.path.join(stages_dir, name)) as f:
            docs.append(yaml.safe_load(f))
    pull, crashing = _regex(image_pull_fail), _regex(crash)
    for doc in docs:
        if doc["metadata"]["name"] != "pod-ready":
            continue
        doc["spec"]["delay"] = {"durationMilliseconds": int(ready_delay * 1000),
                                "durationFrom": {"expressionFrom": _READY_DELAY_FROM}}
        exprs = doc["spec"]["selector"]["matchExpressions"]
        if pull:
            exprs.append(_expr(_images_matching(pull), "DoesNotExist"))
        if crashing:
            exprs.append(_expr(_images_matching(crashing, names_too=True), "DoesNotExist"))
    pending = _expr(".status.phase", "In", ["Pending"])
    waiting = ".status.containerStatuses.[] | select(.state.waiting.reason == %s) | .name"
    if pull:
        docs.append(_stage("es-test-image-pull-failed",
                           [pending, _expr(_images_matching(pull), "Exists"),
                            _expr(waiting % '"ErrImagePull"', "DoesNotExist"),
                            _expr(waiting % '"ImagePullBackOff"', "DoesNotExist")],
                           _template(_PULL_FAILED, pull)))
        docs.append(_stage("es-test-image-pull-backoff",
                           [pending, _expr(waiting % '"ErrImagePull"', "Exists")],
                           _template(_PULL_BACKOFF, containers=".status.containerStatuses"),
                           delay_ms=PULL_BACKOFF_MS))
    if crashing:
        not_pulling = [_expr(_images_matching(pull), "DoesNotExist")] if pull else []
        docs.append(_stage("es-test-crash-start",
                           [pending, _expr(_images_matching(crashing, names_too=True), "Exists")] + not_pulling,
                           _template(_CRASH_START, crashing)))
        docs.append(_stage("es-test-crash-again",
                           [_expr(".status.phase", "In", ["Running"]),
                            _expr(waiting % '"CrashLoopBackOff"', "Exists")],
                           _template(_CRASH_AGAIN), delay_ms=CRASH_PERIOD_MS))
    return copy.deepcopy(docs)


def write(path, stages_dir, **options):
    with open(path, "w") as f:
        yaml.safe_dump_all(render(stages_dir, **options), f, sort_keys=False)
    return path
