"""Run-time settings of the Kubernetes API simulator (test infrastructure).

The API server and the controllers read these fields while they run, so a
test may change them (faults, ready delay) without restarting the simulator.
"""

import threading
from dataclasses import dataclass, field


@dataclass
class SimConfig:
    ready_delay: float = 1.0
    image_pull_fail: list = field(default_factory=list)
    crash: list = field(default_factory=list)
    node_cpu: str = "16"
    node_memory: str = "64Gi"
    node_gpus: int = 0
    faults: list = field(default_factory=list)  # list of Fault
    latency_ms: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)


class Fault:
    """``METHOD:RESOURCE:STATUS[:COUNT]``: answer matching requests with ``STATUS``.

    ``METHOD`` is an HTTP method or ``*``; ``RESOURCE`` a plural resource name
    (``statefulsets``), optionally with a subresource (``statefulsets/scale``),
    or ``*``. ``COUNT`` limits how many requests fail (default: all).
    """

    def __init__(self, method, resource, status, count=None):
        self.method = method.upper()
        self.resource = resource
        self.status = int(status)
        self.count = count

    @classmethod
    def parse(cls, text):
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise ValueError("fault must be METHOD:RESOURCE:STATUS[:COUNT], got %r" % text)
        count = int(parts[3]) if len(parts) == 4 else None
        return cls(parts[0], parts[1], parts[2], count)

    def matches(self, method, resource, subresource):
        if self.count is not None and self.count <= 0:
            return False
        if self.method not in ("*", method.upper()):
            return False
        if self.resource == "*":
            return True
        full = resource + ("/" + subresource if subresource else "")
        return self.resource in (resource, full)

    def __repr__(self):
        return "Fault(%s:%s:%s:%s)" % (self.method, self.resource, self.status, self.count)
