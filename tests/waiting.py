"""Waiting in tests: the one polling helper of the suites."""

import time


def wait_for(fn, timeout=60.0, interval=0.05, what="condition"):
    """Poll ``fn`` until it returns something true and return that; fail
    naming ``what`` and ``fn``'s last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("%s not met in %.1fs (last value %r)" % (what, timeout, last))
