"""The README's recipes, run as written (README: "The GitLab token under ansible-runner and AWX").

Each recipe is a fenced block after an HTML comment ``<!-- recipe: NAME -->`` in README.md:

- ``runner``: the ansible-runner recipe, a Python block run as written from an empty folder by a
  Python with no ``ANSIBLE_*`` variable and no checkout on ``sys.path``, against the collection
  installed from its tarball, the GitLab test server and the sandbox cluster. Only the literals in
  ``RUNNER_LITERALS`` are replaced (each must be in the block exactly once, so a README that drifts
  fails here);
- ``awx-inputs`` and ``awx-injectors``: the AWX credential type, rendered as AWX renders it and its
  extra vars used in an ansible-runner run as AWX starts one.
"""

import os
import re
import stat
import tempfile

import ansible_runner
import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tests.entrypoints.packaging import BIN, CALLBACK, ROOT, build_collection, clean_env, galaxy_install, run
from tests.integration.flow import find_deployment, log_lines, reports
from tests.integration.test_create_flow import CPU_STATUSES

pytest_plugins = ["tests.gitlabsim.pytest_plugin"]

RECIPE_RE = re.compile(r"^<!-- recipe: ([\w-]+) -->\n```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# The runner recipe's site-specific literals: README text -> what the test uses instead.
RUNNER_LITERALS = {
    '"/opt/es-serverless/collections"': "collections",
    '"/srv/runner/alice-search"': "private_data_dir",
    '"/run/secrets/es-gitlab-token"': "token_file",
    '"/var/lib/es-serverless"': "data_dir",
    '"/etc/es-serverless/kubeconfig"': "kubeconfig",
    '"https://gitlab.example.com"': "gitlab_url",
}
TENANT = ("alice", "search")


def recipes():
    """``{name: (language, code)}`` of README.md's marked blocks."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        found = RECIPE_RE.findall(handle.read())
    names = [name for name, _lang, _code in found]
    assert len(names) == len(set(names)), names
    return dict((name, (lang, code)) for name, lang, code in found)


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    """The collection built and installed by ansible-galaxy into an empty folder, as the README's
    Installing section does (the AWX run uses it as an execution environment's collections)."""
    work = tmp_path_factory.mktemp("recipes")
    tarball = build_collection(str(work / "dist"), str(work / "home"))
    galaxy_install(tarball, str(work / "collections"), str(work / "home"))
    return str(work / "collections")


def _text_under(folder, skip=()):
    out = []
    for root, _dirs, files in os.walk(str(folder)):
        for name in files:
            path = os.path.join(root, name)
            if path not in skip:
                with open(path, "rb") as handle:
                    out.append(handle.read().decode("utf-8", "replace"))
    return "".join(out)


def _assert_created_with_gitlab(data_dir, gitlab_server):
    got = reports(data_dir, *TENANT)
    assert [body["status"] for _name, body in got] == CPU_STATUSES
    assert dict((b["status"], b) for _n, b in got)["gitlab_pulled"]["message"] == "GitLab resources pulled successfully"
    assert find_deployment(data_dir, *TENANT)["status"] == "created"
    # the token was used ...
    assert any(r["headers"].get("PRIVATE-TOKEN") == gitlab_server.token for r in gitlab_server.requests)


def _assert_token_nowhere(gitlab_server, data_dir, runner_text):
    # ... and is nowhere else: the runner's folder (artifacts, command, env, job events, stdout), the
    # reports, the log, the tenant records and the rest of the data folder
    for where, text in (("runner folder", runner_text), ("data folder", _text_under(data_dir)),
                        ("log", "\n".join(log_lines(data_dir)))):
        assert gitlab_server.token not in text, where


def test_runner_recipe_runs_as_written(collections, sandbox, gitlab_server, tmp_path):
    lang, code = recipes()["runner"]
    assert lang == "python"
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    token_file = secrets / "es-gitlab-token"
    token_file.write_text(gitlab_server.token + "\n")
    token_file.chmod(0o600)
    values = {"collections": collections, "private_data_dir": str(tmp_path / "runner" / "alice-search"),
              "token_file": str(token_file), "data_dir": str(tmp_path / "es_data"),
              "kubeconfig": sandbox.kubeconfig, "gitlab_url": gitlab_server.url}
    for literal, key in RUNNER_LITERALS.items():
        assert code.count(literal) == 1, "the README's runner recipe no longer holds %s once" % literal
        code = code.replace(literal, '"%s"' % values[key])
    empty = tmp_path / "empty"
    empty.mkdir()

    # a Python with no ANSIBLE_* variable and no checkout on sys.path; -vvv through the environment
    env = clean_env(tmp_path / "home", ANSIBLE_VERBOSITY=3)
    done = run([os.path.join(BIN, "python"), "-c", code], cwd=empty, env=env, timeout=600)
    assert done.stdout.strip().splitlines()[-1] == "successful 0", done.stdout + done.stderr

    data_dir = values["data_dir"]
    _assert_created_with_gitlab(data_dir, gitlab_server)
    private = values["private_data_dir"]
    extravars = os.path.join(private, "env", "extravars")
    assert stat.S_IMODE(os.stat(extravars).st_mode) == 0o600
    with open(extravars, encoding="utf-8") as handle:
        assert "es_user: !unsafe 'alice'" in handle.read()
    runner_text = _text_under(private)
    _assert_token_nowhere(gitlab_server, data_dir, runner_text + done.stdout + done.stderr)
    assert "task path:" in runner_text and str(token_file) in runner_text   # -vvv, and the path given


class TowerNamespace:
    """AWX's ``tower`` template namespace."""


class _AwxSafeDumper(yaml.SafeDumper):
    """AWX's ``safe_dump``: every string, key or value, tagged ``!unsafe``."""

    def represent_data(self, data):
        if isinstance(data, str):
            return self.represent_scalar("!unsafe", data)
        return super().represent_data(data)


def _awx_write(env_dir, data, mode):
    """A file in the job's ``env/`` as AWX writes one (``tempfile.mkstemp``, then ``chmod``)."""
    handle, path = tempfile.mkstemp(dir=env_dir)
    with os.fdopen(handle, "w") as out:
        out.write(data)
    os.chmod(path, mode)
    return path


def test_awx_credential_type_rendered_as_awx_does(collections, sandbox, gitlab_server, tmp_path, monkeypatch):
    everything = recipes()
    inputs = yaml.safe_load(everything["awx-inputs"][1])
    injectors = yaml.safe_load(everything["awx-injectors"][1])
    assert everything["awx-inputs"][0] == everything["awx-injectors"][0] == "yaml"
    # the input: a secret (AWX keeps it encrypted and shows it as ****)
    fields = dict((field["id"], field) for field in inputs["fields"])
    assert fields["token"]["secret"] is True and inputs["required"] == ["token"]
    credential = {"token": gitlab_server.token}
    assert set(credential) == set(fields)

    # AWX's CredentialType.inject_credential: the file injector, then the extra vars injector
    private = tmp_path / "awx_job"
    env_dir = private / "env"
    env_dir.mkdir(parents=True)
    (private / "project").mkdir()
    sandbox_env = ImmutableSandboxedEnvironment()
    tower = TowerNamespace()
    namespace = dict(credential, tower=tower)
    for label, template in injectors.get("file", {}).items():
        path = _awx_write(str(env_dir), sandbox_env.from_string(template).render(**namespace), 0o600)
        if "." not in label:
            tower.filename = path
        else:
            if not hasattr(tower, "filename"):
                tower.filename = TowerNamespace()
            setattr(tower.filename, label.split(".")[1], path)
    assert set(injectors) <= {"file", "extra_vars", "env"} and not injectors.get("env")
    injected = dict((name, sandbox_env.from_string(template).render(**namespace))
                    for name, template in injectors["extra_vars"].items())
    assert injected == {"es_gitlab_token_file": tower.filename}
    with open(tower.filename, encoding="utf-8") as handle:
        assert handle.read() == gitlab_server.token
    assert stat.S_IMODE(os.stat(tower.filename).st_mode) == 0o600
    injected_file = _awx_write(str(env_dir), yaml.dump(injected, Dumper=_AwxSafeDumper), 0o400)

    # the job template's variables (a survey's answers) in env/extravars, as AWX writes them
    data_dir = str(tmp_path / "es_data")
    job_vars = {"es_user": TENANT[0], "es_service_name": TENANT[1], "es_namespace": "es-alice",
                "es_data_dir": data_dir, "es_kubeconfig": sandbox.kubeconfig, "es_gitlab_url": gitlab_server.url,
                "es_gitlab_project": "tenants/es-config"}
    with open(str(env_dir / "extravars"), "w", encoding="utf-8") as handle:
        handle.write(yaml.dump(job_vars, Dumper=_AwxSafeDumper))

    # the execution environment: the collection in its collections path, the callback enabled
    for name in [name for name in os.environ if name.startswith("ANSIBLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    result = ansible_runner.run(private_data_dir=str(private), playbook="yunpeng.es_serverless.create_cluster",
                                cmdline="-e @%s" % injected_file, verbosity=3, quiet=True,
                                envvars={"ANSIBLE_COLLECTIONS_PATH": collections,
                                         "ANSIBLE_CALLBACKS_ENABLED": CALLBACK})
    stdout = result.stdout.read()
    assert result.status == "successful", stdout
    _assert_created_with_gitlab(data_dir, gitlab_server)
    # the job's records hold the token file's path, not the token (AWX removes the file with the job)
    runner_text = _text_under(private, skip=(tower.filename,))
    assert tower.filename in runner_text
    _assert_token_nowhere(gitlab_server, data_dir, runner_text + stdout)
