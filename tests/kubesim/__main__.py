"""``python -m tests.kubesim --kubeconfig PATH``: run the Kubernetes API
simulator (test infrastructure) until SIGTERM/SIGINT."""

import argparse
import signal
import sys
import threading

from .config import Fault, SimConfig
from .server import ApiServer


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.kubesim", description="Kubernetes API simulator for tests")
    p.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig once serving")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--ready-delay", type=float, default=1.0, help="seconds from pod creation to Ready")
    p.add_argument("--image-pull-fail", action="append", default=[], metavar="SUBSTRING",
                   help="pods whose image contains SUBSTRING fail to pull (repeatable)")
    p.add_argument("--crash", action="append", default=[], metavar="SUBSTRING",
                   help="containers whose image or name contains SUBSTRING crash-loop (repeatable)")
    p.add_argument("--node-cpu", default="16")
    p.add_argument("--node-memory", default="64Gi")
    p.add_argument("--node-gpus", type=int, default=0)
    p.add_argument("--fault", action="append", default=[], metavar="METHOD:RESOURCE:STATUS[:COUNT]",
                   help="answer matching requests with STATUS (repeatable)")
    p.add_argument("--latency", type=int, default=0, metavar="MS", help="added latency per request")
    p.add_argument("--state-file", help="dump all objects as JSON here on exit")
    return p.parse_args(argv)


def config_from_args(args):
    return SimConfig(
        ready_delay=args.ready_delay,
        image_pull_fail=list(args.image_pull_fail),
        crash=list(args.crash),
        node_cpu=args.node_cpu,
        node_memory=args.node_memory,
        node_gpus=args.node_gpus,
        faults=[Fault.parse(f) for f in args.fault],
        latency_ms=args.latency,
    )


def main(argv=None):
    args = parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        print("kubesim: %s" % e, file=sys.stderr)
        return 2
    server = ApiServer(config, port=args.port, state_file=args.state_file)
    done = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    server.write_kubeconfig(args.kubeconfig)
    print("kubesim: serving %s, kubeconfig %s" % (server.url, args.kubeconfig), flush=True)
    while not done.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
