"""GitLab v4 API test server for the collection's tests."""

from tests.gitlabsim.server import Entry, GitLabSim, Project, make_tls_files, sample_server

__all__ = ["Entry", "GitLabSim", "Project", "make_tls_files", "sample_server"]
