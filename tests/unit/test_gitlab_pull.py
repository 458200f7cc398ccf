"""GitLab pull: module_utils.gitlab_pull and the es_gitlab_pull module, driven
against the GitLab test server with unmodified python-gitlab."""

import hashlib
import os
import socket

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import gitlab_pull
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.gitlab_pull import PullError, pull
from tests.gitlabsim.server import MODE_SYMLINK, Entry
from tests import ansible_module

pytest_plugins = ["tests.gitlabsim.pytest_plugin"]

PROJECT = "tenants/es-config"


def digest(root):
    return gitlab_pull.tree_digest(root)


def leftovers(parent):
    """Entries in ``parent`` other than the destination folder ``gitlab``."""
    if not os.path.exists(parent):
        return []
    return sorted(name for name in os.listdir(parent) if name != "gitlab")


@pytest.fixture
def dest(tmp_path):
    return str(tmp_path / "workspace" / "alice_search" / "gitlab")


def head(server, branch="main", project=42):
    p = server.projects[project]
    return p.branches[branch]


def content(server, path, ref="main", project=42):
    p = server.projects[project]
    return p.resolve(ref).files[path].content


# ---------------------------------------------------------------- happy paths
def test_pull_files_and_folder_recursively(gitlab_server, dest):
    server = gitlab_server
    result = pull(server.url, PROJECT, dest, files=["docker-compose.yml", "elasticsearch.yml", "jvm.options"],
                  directory="bulk", token=server.token)
    assert result["changed"] is True
    assert result["commit"] == head(server)
    assert result["ref"] == "main"
    assert result["project"] == {"id": 42, "path_with_namespace": PROJECT}
    paths = [f["path"] for f in result["files"]]
    assert paths == sorted(paths)
    expected = ["docker-compose.yml", "elasticsearch.yml", "jvm.options"] + ["bulk/f%02d.txt" % i for i in range(30)]
    assert sorted(expected) == paths
    for entry in result["files"]:
        data = content(server, entry["path"])
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        with open(os.path.join(dest, entry["path"]), "rb") as fh:
            assert fh.read() == data
    # 30 files + the folder need two pages of the tree at per_page 20
    tree_pages = [r for r in server.requests
                  if r["path"].endswith("/repository/tree") and r["query"].get("path") == "bulk"]
    assert len(tree_pages) == 2
    assert tree_pages[1]["query"]["page"] == "2"
    # every file was fetched at the resolved commit id, not at the branch name
    file_requests = [r for r in server.requests if "/repository/files/" in r["path"]]
    assert len(file_requests) == 33
    assert {r["query"]["ref"] for r in file_requests} == {head(server)}
    # the token was sent on every request
    assert all(r["headers"].get("PRIVATE-TOKEN") == server.token for r in server.requests)
    assert result["elasticsearch_yml"] == os.path.join(dest, "elasticsearch.yml")
    assert result["jvm_options"] == os.path.join(dest, "jvm.options")
    assert result["manifests"] == []
    assert leftovers(os.path.dirname(dest)) == []


def test_pull_locates_manifests_and_config(gitlab_server, dest):
    result = pull(gitlab_server.url, "42", dest, files=[], directory="k8s", token=gitlab_server.token)
    assert [f["path"] for f in result["files"]] == ["k8s/configmap.yml", "k8s/nested/service.yaml"]
    assert result["manifests"] == [os.path.join(dest, "k8s", "configmap.yml"),
                                   os.path.join(dest, "k8s", "nested", "service.yaml")]
    assert result["elasticsearch_yml"] is None and result["jvm_options"] is None


def test_locate_prefers_the_folder_and_config_subfolder():
    paths = ["elasticsearch.yml", "alice/elasticsearch.yml", "alice/config/elasticsearch.yml", "jvm.options",
             "alice/k8s/a.yml", "alice/k8s/b.txt", "k8s/x.json", "other/k8s/no.yml"]
    es_yml, jvm, manifests = gitlab_pull.locate(paths, "alice")
    assert es_yml == "alice/config/elasticsearch.yml"
    assert jvm == "jvm.options"
    assert manifests == ["alice/k8s/a.yml", "k8s/x.json"]
    assert gitlab_pull.locate(["config/elasticsearch.yml", "elasticsearch.yml"])[0] == "config/elasticsearch.yml"


@pytest.mark.parametrize("ref, expected_compose", [
    ("main", b'version: "2"'),
    ("v1", b'version: "1"'),
    ("feature", b'version: "2"'),
])
def test_pull_by_branch_and_tag(gitlab_server, dest, ref, expected_compose):
    project = gitlab_server.projects[42]
    result = pull(gitlab_server.url, PROJECT, dest, ref=ref, token=gitlab_server.token)
    assert result["commit"] == project.resolve(ref).sha
    assert result["ref"] == ref
    with open(os.path.join(dest, "docker-compose.yml"), "rb") as fh:
        assert fh.read().startswith(expected_compose)


def test_pull_feature_branch_gets_its_own_elasticsearch_yml(gitlab_server, dest):
    result = pull(gitlab_server.url, PROJECT, dest, ref="feature", files=["elasticsearch.yml"],
                  token=gitlab_server.token)
    with open(result["elasticsearch_yml"], "rb") as fh:
        assert fh.read() == b"cluster.name: feature\n"


@pytest.mark.parametrize("length", [40, 8])
def test_pull_by_commit_sha(gitlab_server, dest, length):
    first = gitlab_server.projects[42].tags["v1"]
    result = pull(gitlab_server.url, PROJECT, dest, ref=first[:length], token=gitlab_server.token)
    assert result["commit"] == first
    with open(os.path.join(dest, "docker-compose.yml"), "rb") as fh:
        assert fh.read() == b'version: "1"\nservices: {}\n'


def test_default_branch_is_used_when_no_ref(gitlab_server, dest):
    result = pull(gitlab_server.url, "tenants/empty-default", dest, token=gitlab_server.token)
    assert result["ref"] == "develop"
    assert result["commit"] == head(gitlab_server, "develop", project=7)


def test_second_identical_pull_is_unchanged_and_check_mode_leaves_dest(gitlab_server, dest):
    pull(gitlab_server.url, PROJECT, dest, token=gitlab_server.token)
    before = digest(dest)
    inode = os.stat(dest).st_ino
    again = pull(gitlab_server.url, PROJECT, dest, token=gitlab_server.token)
    assert again["changed"] is False
    assert os.stat(dest).st_ino == inode
    checked = pull(gitlab_server.url, PROJECT, dest, ref="v1", token=gitlab_server.token, check_mode=True)
    assert checked["changed"] is True
    assert digest(dest) == before
    assert leftovers(os.path.dirname(dest)) == []


def test_new_pull_replaces_the_whole_tree(gitlab_server, dest):
    pull(gitlab_server.url, PROJECT, dest, files=["docker-compose.yml", "jvm.options"], token=gitlab_server.token)
    pull(gitlab_server.url, PROJECT, dest, ref="v1", token=gitlab_server.token)
    assert sorted(digest(dest)) == ["docker-compose.yml"]  # jvm.options from the old tree is gone
    assert leftovers(os.path.dirname(dest)) == []


# ---------------------------------------------------------------- path safety
@pytest.mark.parametrize("evil", ["../x", "/abs", "bulk/../../x", "bulk//y"])
def test_evil_server_paths_are_refused(gitlab_server, dest, evil):
    gitlab_server.projects[42].add_evil_entry(evil, "pwned\n")
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, files=[], directory="bulk", token=gitlab_server.token)
    assert info.value.kind == "unsafe_path"
    assert repr(evil) in info.value.message or evil in info.value.message
    assert not os.path.exists(dest)
    tmp_root = os.path.dirname(os.path.dirname(os.path.dirname(dest)))
    for base, _dirs, names in os.walk(tmp_root):
        assert "x" not in names and "abs" not in names, base
    assert leftovers(os.path.dirname(dest)) == []
    # nothing was downloaded before the refusal
    assert not [r for r in gitlab_server.requests if "/repository/files/" in r["path"]]


def test_entry_outside_requested_folder_is_refused(gitlab_server, dest):
    gitlab_server.projects[42].add_evil_entry("elsewhere/x", "x\n")
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, files=[], directory="bulk", token=gitlab_server.token)
    assert "outside the requested folder" in info.value.message


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/./b", ""])
def test_unsafe_requested_paths_are_refused(gitlab_server, dest, path):
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, files=[path], token=gitlab_server.token)
    assert info.value.kind == "unsafe_path"
    assert not os.path.exists(dest)


def test_symlink_file_is_refused(gitlab_server, dest):
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, files=["docker-compose.yml", "link-to-compose"],
             token=gitlab_server.token)
    assert info.value.kind == "symlink"
    assert "link-to-compose" in info.value.message and "120000" in info.value.message
    assert not os.path.exists(dest)


def test_symlink_inside_folder_is_refused(gitlab_server, dest):
    project = gitlab_server.projects[42]
    project.commit({"k8s/evil.yml": Entry("/etc/passwd", MODE_SYMLINK)})
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, files=[], directory="k8s", token=gitlab_server.token)
    assert info.value.kind == "symlink"
    assert "k8s/evil.yml" in info.value.message
    assert not os.path.exists(dest)


def test_folder_requested_as_file_is_refused(gitlab_server, dest):
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, files=["k8s"], token=gitlab_server.token)
    assert info.value.kind == "not_a_file"


def test_content_not_matching_blob_id_is_refused(gitlab_server, dest, monkeypatch):
    real = gitlab_pull.git_blob_id
    monkeypatch.setattr(gitlab_pull, "git_blob_id", lambda data, length=40: real(data + b"x", length))
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, token=gitlab_server.token)
    assert info.value.kind == "inconsistent"


# ---------------------------------------------------------------- failures
def assert_failure(info, kind, server_url, token, *fragments):
    err = info.value
    assert err.kind == kind, err.message
    assert server_url in err.message
    for fragment in fragments:
        assert fragment in err.message, err.message
    assert token not in err.message
    assert token not in str(err)


def test_bad_token_401(gitlab_server, dest):
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, token="glpat-wrong-token-999999")
    assert_failure(info, "unauthorized", gitlab_server.url, "glpat-wrong-token-999999", "401", PROJECT)
    assert gitlab_server.requests[0]["headers"]["PRIVATE-TOKEN"] == "glpat-wrong-token-999999"
    assert leftovers(os.path.dirname(dest)) == []


def test_missing_token_401(gitlab_server, dest):
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest)
    assert info.value.kind == "unauthorized"
    assert "PRIVATE-TOKEN" not in gitlab_server.requests[0]["headers"]


def test_missing_project_404(gitlab_server, dest):
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, "tenants/nope", dest, token=gitlab_server.token)
    assert_failure(info, "not_found", gitlab_server.url, gitlab_server.token, "project tenants/nope not found")


def test_missing_file_404(gitlab_server, dest):
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, files=["docker-compose.yml", "conf/missing.yml"],
             token=gitlab_server.token)
    assert_failure(info, "not_found", gitlab_server.url, gitlab_server.token, "file conf/missing.yml not found",
                   "path conf/missing.yml")
    assert not os.path.exists(dest)


def test_missing_ref_404(gitlab_server, dest):
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, ref="no-such-branch", token=gitlab_server.token)
    assert_failure(info, "not_found", gitlab_server.url, gitlab_server.token, "ref no-such-branch not found")


def test_missing_folder_404(gitlab_server, dest):
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, files=[], directory="nothing/here", token=gitlab_server.token)
    assert_failure(info, "not_found", gitlab_server.url, gitlab_server.token, "folder nothing/here not found")


def free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_unreachable_server(dest):
    url = "http://127.0.0.1:%d" % free_port()
    with pytest.raises(PullError) as info:
        pull(url, PROJECT, dest, token="glpat-secret-unreachable")
    assert_failure(info, "unreachable", url, "glpat-secret-unreachable", "cannot connect")


def test_timeout(gitlab_server, dest):
    gitlab_server.delay_paths["/repository/files/"] = 3
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, token=gitlab_server.token, timeout=0.5)
    assert_failure(info, "timeout", gitlab_server.url, gitlab_server.token, "timeout of 0.5 seconds",
                   "docker-compose.yml")
    assert not os.path.exists(dest)
    assert leftovers(os.path.dirname(dest)) == []


def test_server_echoing_the_token_is_scrubbed(gitlab_server, dest):
    gitlab_server.fail_paths["/repository/commits/"] = (500, "boom, you sent %s" % gitlab_server.token)
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, token=gitlab_server.token)
    assert_failure(info, "http_error", gitlab_server.url, gitlab_server.token, "500", "boom, you sent ********")


# ---------------------------------------------------------------- TLS
def test_tls_with_ca_path(gitlab_tls_server, dest):
    server = gitlab_tls_server
    assert server.url.startswith("https://")
    result = pull(server.url, PROJECT, dest, token=server.token, ca_path=server.ca_path)
    assert result["commit"] == head(server)


def test_tls_without_ca_fails_verification(gitlab_tls_server, dest, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises(PullError) as info:
        pull(gitlab_tls_server.url, PROJECT, dest, token=gitlab_tls_server.token)
    assert_failure(info, "tls", gitlab_tls_server.url, gitlab_tls_server.token, "certificate verification failed")
    assert not os.path.exists(dest)


def test_tls_validate_certs_false(gitlab_tls_server, dest):
    result = pull(gitlab_tls_server.url, PROJECT, dest, token=gitlab_tls_server.token, validate_certs=False)
    assert result["files"][0]["path"] == "docker-compose.yml"


# ---------------------------------------------------------------- atomicity
def test_failure_midway_keeps_previous_tree_and_no_temp_dirs(gitlab_server, dest):
    files = ["docker-compose.yml", "elasticsearch.yml", "jvm.options"]
    pull(gitlab_server.url, PROJECT, dest, ref="v1", token=gitlab_server.token)
    before = digest(dest)
    assert list(before) == ["docker-compose.yml"]
    # the second file answered with 500 after the first was written into the temp folder
    gitlab_server.fail_paths["elasticsearch.yml"] = 500
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, files=files, token=gitlab_server.token)
    assert "elasticsearch.yml" in info.value.message and "500" in info.value.message
    fetched = [r["path"] for r in gitlab_server.requests if "/repository/files/" in r["path"]]
    assert any(p.endswith("docker-compose.yml") for p in fetched[1:])  # the failure really was midway
    assert digest(dest) == before
    assert leftovers(os.path.dirname(dest)) == []


def test_failed_first_pull_leaves_nothing(gitlab_server, dest):
    gitlab_server.fail_paths["jvm.options"] = 503
    with pytest.raises(PullError):
        pull(gitlab_server.url, PROJECT, dest, files=["docker-compose.yml", "jvm.options"],
             token=gitlab_server.token)
    assert not os.path.exists(dest)
    assert os.listdir(os.path.dirname(dest)) == []


def test_failed_rename_restores_previous_tree(gitlab_server, dest, monkeypatch):
    pull(gitlab_server.url, PROJECT, dest, ref="v1", token=gitlab_server.token)
    before = digest(dest)
    real_rename = os.rename
    calls = []

    def flaky_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old tree moved away; moving the new one in fails
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(gitlab_pull.os, "rename", flaky_rename)
    with pytest.raises(PullError) as info:
        pull(gitlab_server.url, PROJECT, dest, token=gitlab_server.token)
    monkeypatch.setattr(gitlab_pull.os, "rename", real_rename)
    assert info.value.kind == "io"
    assert len(calls) == 3  # away, in (failed), back
    assert digest(dest) == before
    assert leftovers(os.path.dirname(dest)) == []


# ---------------------------------------------------------------- the module through Ansible
def run_module(tmp_path, args, env_token=None, verbosity="-vvv"):
    env = {"GITLAB_TOKEN": env_token} if env_token else None
    return ansible_module.run_module(tmp_path, "es_gitlab_pull", args, env=env, verbosity=verbosity)


def all_file_bytes(root):
    for base, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as fh:
                    yield path, fh.read()


def test_module_through_ansible_success_and_failure_never_shows_the_token(gitlab_server, tmp_path):
    server = gitlab_server
    dest = str(tmp_path / "data" / "workspace" / "alice_search" / "gitlab")
    proc, result = run_module(tmp_path, {"url": server.url, "project": PROJECT, "dest": dest, "dir": "k8s",
                                         "files": ["docker-compose.yml", "elasticsearch.yml"]},
                              env_token=server.token)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["changed"] is True and result["commit"] == head(server)
    assert [f["path"] for f in result["files"]] == ["docker-compose.yml", "elasticsearch.yml", "k8s/configmap.yml",
                                                    "k8s/nested/service.yaml"]
    assert result["manifests"] == [os.path.join(dest, "k8s", "configmap.yml"),
                                   os.path.join(dest, "k8s", "nested", "service.yaml")]
    assert server.requests[0]["headers"]["PRIVATE-TOKEN"] == server.token  # the env fallback was used
    outputs = [proc.stdout + proc.stderr]

    # token as an argument, 404 file: failure, previous tree kept
    proc, result = run_module(tmp_path, {"url": server.url, "project": PROJECT, "dest": dest,
                                         "files": ["missing.yml"], "token": server.token})
    assert proc.returncode != 0
    assert result["failed"] is True and result["error_kind"] == "not_found"
    assert "missing.yml" in result["msg"] and server.url in result["msg"]
    outputs.append(proc.stdout + proc.stderr)

    # the server echoes the token in its error: scrubbed
    server.fail_paths["/repository/commits/"] = (500, "boom %s" % server.token)
    proc, result = run_module(tmp_path, {"url": server.url, "project": PROJECT, "dest": dest, "token": server.token})
    assert proc.returncode != 0 and "boom" in result["msg"]
    outputs.append(proc.stdout + proc.stderr)

    # bad token
    proc, result = run_module(tmp_path, {"url": server.url, "project": PROJECT, "dest": dest,
                                         "token": "glpat-bad-token-777777"})
    assert result["error_kind"] == "unauthorized"
    for text in outputs + [proc.stdout + proc.stderr]:
        assert server.token not in text
    assert "glpat-bad-token-777777" not in proc.stdout + proc.stderr
    for path, data in all_file_bytes(str(tmp_path)):
        assert server.token.encode() not in data, path
    assert sorted(os.listdir(os.path.dirname(dest))) == ["gitlab"]
    assert sorted(digest(dest)) == ["docker-compose.yml", "elasticsearch.yml", "k8s/configmap.yml",
                                    "k8s/nested/service.yaml"]


# ---------------------------------------------------------------- token_file
def module_params(server, dest, **extra):
    from ansible_collections.yunpeng.es_serverless.plugins.modules import es_gitlab_pull as module
    params = {key: spec.get("default") for key, spec in module.ARGUMENT_SPEC["argument_spec"].items()}
    params.update(url=server.url, project=PROJECT, dest=dest, **extra)
    return module, params


def test_token_file_is_read_and_wins_over_the_environment(gitlab_server, dest, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  %s\n" % gitlab_server.token)
    token_file.chmod(0o600)
    module, params = module_params(gitlab_server, dest, token="glpat-from-env-000", token_file=str(token_file))
    warnings = []
    result = module.run(params, False, warnings.append)
    assert result["commit"] == head(gitlab_server) and warnings == []
    assert {r["headers"].get("PRIVATE-TOKEN") for r in gitlab_server.requests} == {gitlab_server.token}
    token_file.chmod(0o644)
    module.run(params, False, warnings.append)
    assert warnings == ["token_file %s may be read by other users (mode 0644); chmod 600 it" % token_file]


@pytest.mark.parametrize("content, error", [(None, "cannot be read: No such file or directory"),
                                            ("\n \n", "is empty"), (b"\xff\xfe", "cannot be read: not UTF-8 text")])
def test_bad_token_file_fails_naming_the_path_only(gitlab_server, dest, tmp_path, content, error):
    from ansible_collections.yunpeng.es_serverless.plugins.module_utils.entry import ModuleFailed
    token_file = tmp_path / "token"
    if content is not None:
        (token_file.write_bytes if isinstance(content, bytes) else token_file.write_text)(content)
    module, params = module_params(gitlab_server, dest, token_file=str(token_file))
    with pytest.raises(ModuleFailed) as info:
        module.run(params, False, lambda msg: None)
    assert info.value.msg == "token_file %s %s" % (token_file, error)
    assert info.value.result["error_kind"] == "token_file" and gitlab_server.requests == []
