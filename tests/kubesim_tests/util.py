"""Helpers shared by the simulator's tests."""

import time


def wait_for(fn, timeout=10.0, interval=0.02):
    """Poll ``fn`` until it returns something true; fail with its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("condition not met in %.1fs (last value %r)" % (timeout, last))
