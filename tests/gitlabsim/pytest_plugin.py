"""pytest fixtures for the GitLab test server.

Use with ``pytest_plugins = ["tests.gitlabsim.pytest_plugin"]`` (in the root
conftest or a test module). ``gitlab_server`` is a started HTTP server with
the ``sample_server`` data; ``gitlab_tls_server`` the same over HTTPS (its CA
file is ``server.ca_path``).
"""

import pytest

from tests.gitlabsim.server import sample_server


@pytest.fixture
def gitlab_server():
    sim = sample_server()
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def gitlab_tls_server():
    sim = sample_server(tls=True)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
