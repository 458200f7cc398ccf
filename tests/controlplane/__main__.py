"""``python -m tests.controlplane``: build, start and stop the test control
plane (test infrastructure). ``scripts/control-plane`` runs this.

    build                        build the binaries (a no-op when they are up to date)
    up --kubeconfig PATH         start it in the background; PATH gets an admin kubeconfig
    down --kubeconfig PATH       stop what ``up`` started and remove its files
    kubeconfig --kubeconfig PATH --user NAME [--group G ...] --out FILE
                                 a kubeconfig for a non-admin identity
    serve --kubeconfig PATH      run it in the foreground until SIGTERM/SIGINT
"""

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

from . import build
from .cluster import ControlPlane, ControlPlaneError, write_kubeconfig
from .pki import Authority

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _state_dir(kubeconfig):
    return os.path.abspath(kubeconfig) + ".controlplane"


def _pid_file(kubeconfig):
    return os.path.join(_state_dir(kubeconfig), "serve.pid")


def _options(parser):
    parser.add_argument("--kubeconfig", required=True, help="where to write the admin kubeconfig")
    parser.add_argument("--nodes", type=int, default=2, help="fake nodes (default 2)")
    parser.add_argument("--node-cpu", default="16")
    parser.add_argument("--node-memory", default="64Gi")
    parser.add_argument("--node-gpus", type=int, default=4, help="nvidia.com/gpu per node (default 4)")
    parser.add_argument("--ready-delay", type=float, default=0.3, help="seconds before a pod is Ready")
    parser.add_argument("--image-pull-fail", action="append", default=None, metavar="SUBSTRING",
                        help="images containing it fail to pull (default: registry.invalid)")
    parser.add_argument("--crash", action="append", default=None, metavar="SUBSTRING",
                        help="containers whose image or name contains it crash-loop (default: crash-loop)")


def _control_plane(args):
    return ControlPlane(workdir=_state_dir(args.kubeconfig), nodes=args.nodes, node_cpu=args.node_cpu,
                        node_memory=args.node_memory, node_gpus=args.node_gpus, ready_delay=args.ready_delay,
                        image_pull_fail=args.image_pull_fail or ("registry.invalid",),
                        crash=args.crash or ("crash-loop",))


def serve(args):
    cp = _control_plane(args)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    os.makedirs(cp.workdir, exist_ok=True)
    with open(_pid_file(args.kubeconfig), "w") as f:
        f.write(str(os.getpid()))
    try:
        cp.start()
        shutil.copyfile(cp.kubeconfig, args.kubeconfig)
        os.chmod(args.kubeconfig, 0o600)
        message = "control plane ready in %.1f s: %s (kubeconfig %s)"
        print(message % (cp.startup_seconds, cp.server, args.kubeconfig), flush=True)
        while not stopping:
            for name, proc in cp.processes:
                if proc.poll() is not None:
                    print("%s exited with %s; stopping" % (name, proc.returncode), flush=True)
                    stopping.append(1)
            time.sleep(0.5)
    finally:
        cp.stop()
    return 0


def _running(kubeconfig):
    """The pid of the control plane serving ``kubeconfig``, or None (a pid
    file left by one that was killed does not count)."""
    try:
        with open(_pid_file(kubeconfig)) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return None if state in ("Z", "X") else pid


def up(args):
    if _running(args.kubeconfig):
        sys.exit("a control plane already runs for %s; run down first" % args.kubeconfig)
    shutil.rmtree(_state_dir(args.kubeconfig), ignore_errors=True)  # what a killed one left
    build.build(log=lambda msg: print(msg, file=sys.stderr))
    os.makedirs(_state_dir(args.kubeconfig), exist_ok=True)
    if os.path.exists(args.kubeconfig):
        os.remove(args.kubeconfig)
    log = open(os.path.join(_state_dir(args.kubeconfig), "serve.log"), "ab")  # noqa: SIM115 - child owns it
    cmd = [sys.executable, "-m", "tests.controlplane", "serve", "--kubeconfig", args.kubeconfig,
           "--nodes", str(args.nodes), "--node-cpu", args.node_cpu, "--node-memory", args.node_memory,
           "--node-gpus", str(args.node_gpus), "--ready-delay", str(args.ready_delay)]
    for option, values in (("--image-pull-fail", args.image_pull_fail), ("--crash", args.crash)):
        for value in values or ():
            cmd += [option, value]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    started = time.monotonic()
    while not os.path.exists(args.kubeconfig):
        if proc.poll() is not None:
            with open(log.name, errors="replace") as f:
                sys.exit("the control plane did not start:\n" + f.read()[-4000:])
        time.sleep(0.2)
    print("control plane up in %.1f s; KUBECONFIG=%s; stop it with: scripts/control-plane down --kubeconfig %s"
          % (time.monotonic() - started, args.kubeconfig, args.kubeconfig))
    return 0


def down(args):
    pid = _running(args.kubeconfig)
    if pid is None and not os.path.isdir(_state_dir(args.kubeconfig)):
        print("no control plane runs for %s" % args.kubeconfig)
        return 0
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _running(args.kubeconfig) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _running(args.kubeconfig):
            os.kill(pid, signal.SIGKILL)  # its children die with it (parent-death signal)
    shutil.rmtree(_state_dir(args.kubeconfig), ignore_errors=True)
    if os.path.exists(args.kubeconfig):
        os.remove(args.kubeconfig)
    print("control plane stopped")
    return 0


def kubeconfig(args):
    pki_dir = os.path.join(_state_dir(args.kubeconfig), "pki")
    with open(os.path.join(pki_dir, "ca.crt"), "rb") as c, open(os.path.join(pki_dir, "ca.key"), "rb") as k:
        ca = Authority(cert_pem=c.read(), key_pem=k.read())
    from kubernetes import config as kconfig

    server = kconfig.new_client_from_config(config_file=args.kubeconfig).configuration.host
    print(write_kubeconfig(args.out, server, ca, args.user, args.group or ()))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="scripts/control-plane", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the binaries")
    for name in ("up", "serve"):
        _options(sub.add_parser(name))
    p = sub.add_parser("down")
    p.add_argument("--kubeconfig", required=True)
    p = sub.add_parser("kubeconfig")
    p.add_argument("--kubeconfig", required=True, help="the admin kubeconfig that up wrote")
    p.add_argument("--user", required=True)
    p.add_argument("--group", action="append")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    for name in ("kubeconfig", "out"):
        if getattr(args, name, None):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.command == "build":
            build.build()
            return 0
        return {"up": up, "down": down, "serve": serve, "kubeconfig": kubeconfig}[args.command](args)
    except (build.BuildError, ControlPlaneError) as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    sys.exit(main())
