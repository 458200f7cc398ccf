"""pytest fixtures of the Kubernetes API simulator (test infrastructure).

Use with ``pytest_plugins = ["tests.kubesim.pytest_plugin"]``.
"""

import pytest

from .fixture import KubeSim


@pytest.fixture
def kubesim_factory():
    """``kubesim_factory(**KubeSim kwargs)`` starts a simulator; all are stopped at teardown."""
    started = []

    def make(**kwargs):
        sim = KubeSim(**kwargs).start()
        started.append(sim)
        return sim

    yield make
    for sim in reversed(started):
        sim.stop()


@pytest.fixture
def kubesim(kubesim_factory):
    """A running simulator (in-process, ready delay 0.2s)."""
    return kubesim_factory(ready_delay=0.2)
