"""Build the control-plane binaries from their Go modules (test infrastructure).

The pins live in the ``go.mod`` files under ``go/``: ``k8s.io/kubernetes``
(kube-apiserver, kube-controller-manager, kube-scheduler), etcd's server and
KWOK. Binaries go to ``$ES_CONTROLPLANE_CACHE`` (default
``~/.cache/es-serverless``) under ``k8s-<version>-<digest of the pins>/`` and
are rebuilt only when a pin changes. Nothing is downloaded except Go modules.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GO = os.path.join(HERE, "go")
MODULES = ("kubernetes", "etcd", "kwok")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# KWOK's own published stages, taken from the module at the pinned version.
KWOK_STAGES = ("kustomize/stage/node/fast/node-initialize.yaml",
               "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
               "kustomize/stage/pod/fast/pod-ready.yaml",
               "kustomize/stage/pod/fast/pod-complete.yaml",
               "kustomize/stage/pod/fast/pod-delete.yaml")
VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")


class BuildError(Exception):
    pass


def kubernetes_version():
    with open(os.path.join(GO, "kubernetes", "go.mod")) as f:
        match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes (v[^\s/]+)", f.read(), re.M)
    return match.group(1)


def _digest():
    h = hashlib.sha256()
    for module in MODULES:
        folder = os.path.join(GO, module)
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
    h.update(_ldflags().encode() + repr(KWOK_STAGES).encode())
    return h.hexdigest()[:12]


def _ldflags():
    version = kubernetes_version()
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in VERSION_PACKAGES:
        flags += ["-X", "%s.gitVersion=%s" % (pkg, version), "-X", "%s.gitMajor=%s" % (pkg, major),
                  "-X", "%s.gitMinor=%s" % (pkg, minor), "-X", "%s.gitTreeState=clean" % pkg]
    return " ".join(flags)


def cache_dir():
    default = os.path.join(os.path.expanduser("~"), ".cache", "es-serverless")
    root = os.environ.get("ES_CONTROLPLANE_CACHE") or default
    return os.path.join(root, "k8s-%s-%s" % (kubernetes_version(), _digest()))


def binary(name):
    return os.path.join(cache_dir(), "bin", name)


def stages_dir():
    return os.path.join(cache_dir(), "kwok-stages")


def is_built():
    return os.path.exists(os.path.join(cache_dir(), "complete"))


def _go(args, cwd, log):
    log("$ (cd %s && go %s)" % (os.path.relpath(cwd), " ".join(args)))
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    proc = subprocess.run(["go"] + args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-4000:]
        raise BuildError("go %s in %s failed (exit %d):\n%s" % (" ".join(args), cwd, proc.returncode, output))
    return proc.stdout


def build(log=print):
    """Build what is missing; return the cache folder."""
    target = cache_dir()
    if is_built():
        log("control plane binaries are up to date in %s" % target)
        return target
    if shutil.which("go") is None:
        raise BuildError("the go command is not on PATH; Go 1.26+ is needed to build the control plane")
    started = time.monotonic()
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _build_into(partial, log)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    with open(os.path.join(partial, "complete"), "w") as f:
        f.write("built in %.0f s\n" % (time.monotonic() - started))
    shutil.rmtree(target, ignore_errors=True)
    os.rename(partial, target)
    log("built %s in %.0f s into %s" % (", ".join(BINARIES), time.monotonic() - started, target))
    return target


def _build_into(partial, log):
    os.makedirs(os.path.join(partial, "bin"))
    out = os.path.join(partial, "bin") + os.sep
    _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", out + "etcd", "."], os.path.join(GO, "etcd"), log)
    _go(["build", "-trimpath", "-ldflags", _ldflags(), "-o", out, "k8s.io/kubernetes/cmd/kube-apiserver",
         "k8s.io/kubernetes/cmd/kube-controller-manager", "k8s.io/kubernetes/cmd/kube-scheduler"],
        os.path.join(GO, "kubernetes"), log)
    _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", out, "sigs.k8s.io/kwok/cmd/kwok"],
        os.path.join(GO, "kwok"), log)
    kwok_dir = _go(["list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"], os.path.join(GO, "kwok"), log).strip()
    os.makedirs(os.path.join(partial, "kwok-stages"))
    for rel in KWOK_STAGES:
        shutil.copyfile(os.path.join(kwok_dir, rel), os.path.join(partial, "kwok-stages", os.path.basename(rel)))
    for name in BINARIES:
        if not os.access(os.path.join(partial, "bin", name), os.X_OK):
            raise BuildError("%s was not built" % name)


if __name__ == "__main__":
    try:
        build()
    except BuildError as exc:
        sys.exit(str(exc))
