"""Packaging as the README documents it, checked from outside the checkout.

- Execution environment: ``ansible-builder create`` of ``meta/execution-environment.yml`` writes a
  build context with this collection's tarball, its Galaxy requirements, ``requirements.txt`` and the
  callback enabled in the final image; the context's Galaxy step and ansible-builder's dependency
  introspection are run against it (no image is built: no container runtime here).
- ``ansible-galaxy collection build`` keeps the development tree out, and ``ansible-galaxy collection
  install`` of the tarball into an empty folder gives a working collection: the playbook by FQCN, the
  ad-hoc module and the lookup, from an empty folder with no ansible.cfg of ours.
- ``pip install`` from the checkout and from the installed collection's folder: the wheel carries the
  package and the collection (nothing else), and from an empty folder the Python API and
  ``ansible-playbook`` find the collection with no ``ANSIBLE_*`` variable but the callback's.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement

from ansible_collections.yunpeng.es_serverless.plugins.plugin_utils.extravars import write_extra_vars
from tests.entrypoints.packaging import (
    BIN,
    CALLBACK,
    COLLECTION_DIR,
    ROOT,
    build_collection,
    clean_env,
    galaxy,
    galaxy_install,
    make_venv,
    pip_install,
    record,
    run,
    tarball_name,
)
from tests.integration.flow import find_deployment, reports
from tests.integration.test_create_flow import CPU_STATUSES

EE_FILE = os.path.join("meta", "execution-environment.yml")
# What the built collection holds at its root; anything else (a new folder of the development tree, a
# tool's cache) must be added here or to galaxy.yml's build_ignore.
TARBALL_TOP_LEVEL = {
    "MANIFEST.json", "FILES.json", "README.md", "LICENSE", "CHANGELOG.md", "requirements.txt",
    "requirements.yml", "meta", "plugins", "roles", "playbooks", "docs", "inventories",
    "es_serverless", "pyproject.toml", "hatch_build.py",
}
# The collection's content in the wheel (hatch_build.CONTENT), compared file by file with its source.
WHEEL_CONTENT = ("plugins", "playbooks", "roles")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def tarball(work):
    return build_collection(str(work / "dist"), work / "home")


@pytest.fixture(scope="module")
def installed(work, tarball):
    """The tarball installed by ansible-galaxy into an empty folder: (collections path, install output)."""
    dest = work / "collections"
    done = galaxy_install(tarball, str(dest), str(work / "home"))
    return str(dest), done.stdout + done.stderr


def _files_under(top, names):
    out = set()
    for name in names:
        for folder, dirs, files in os.walk(os.path.join(top, name)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            out.update(os.path.relpath(os.path.join(folder, f), top) for f in files if not f.endswith(".pyc"))
    return out


def _git_files(names):
    listed = subprocess.run(["git", "ls-files", "-z", "--"] + list(names), cwd=ROOT, capture_output=True,
                            check=True).stdout.decode()
    return set(name for name in listed.split("\0") if name)


# -- the execution environment ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ee_context(work, tarball):
    """``ansible-builder create`` as the README runs it, in a copy of the files the definition names
    (the definition, ``requirements.txt``, the built tarball at the root), so the test writes nothing
    into the checkout: (context folder, create's output)."""
    tree = work / "ee-tree"
    shutil.copytree(os.path.join(ROOT, "meta"), str(tree / "meta"))
    shutil.copy(os.path.join(ROOT, "requirements.txt"), str(tree / "requirements.txt"))
    shutil.copy(tarball, str(tree / os.path.basename(tarball)))
    context = work / "ee-context"
    done = run([os.path.join(BIN, "ansible-builder"), "create", "-f", EE_FILE, "--context", str(context),
                "--output-filename", "Containerfile", "-v3"], cwd=tree, env=clean_env(work / "home"))
    return context, done.stdout + done.stderr


def _stages(containerfile):
    """The Containerfile's stages: ``{name: [lines]}`` (``FROM x AS name`` starts one)."""
    stages, current = {}, None
    for line in containerfile.splitlines():
        if line.startswith("FROM "):
            current = line.split()[-1]
            stages[current] = []
        elif current is not None:
            stages[current].append(line)
    return stages


def test_ee_context_carries_the_collection_its_requirements_and_the_callback(ee_context):
    context, output = ee_context
    assert "Complete!" in output, output
    # a missing additional build file is only a warning of ansible-builder: the build would fail later
    assert "No matches for" not in output and "does not exist" not in output, output
    build = context / "_build"
    with open(str(context / "Containerfile"), encoding="utf-8") as handle:
        containerfile = handle.read()
    args = dict(line[4:].split("=", 1) for line in containerfile.splitlines()
                if line.startswith("ARG ") and "=" in line)
    stages = _stages(containerfile)

    # a current base image, not ansible-builder's outdated default; ansible-core 2.19 and ansible-runner
    with open(os.path.join(ROOT, EE_FILE), encoding="utf-8") as handle:
        definition = yaml.safe_load(handle)
    assert args["EE_BASE_IMAGE"] == '"%s"' % definition["images"]["base_image"]["name"]
    assert "ansible-runner:latest" not in args["EE_BASE_IMAGE"]
    core = definition["dependencies"]["ansible_core"]["package_pip"]
    runner = definition["dependencies"]["ansible_runner"]["package_pip"]
    assert args["ANSIBLE_INSTALL_REFS"] == '"%s %s"' % (core, runner)
    # the image's ansible-core is the series the tests run with
    assert Requirement(core).name == "ansible-core" and metadata.version("ansible-core") in Requirement(core).specifier

    # the callback is enabled in the final image
    assert "ENV ANSIBLE_CALLBACKS_ENABLED=%s" % CALLBACK in stages["final"], stages["final"]

    # the Python requirements: requirements.txt as it is, for the builder stage's introspection
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as handle:
        requirements = handle.read()
    assert (build / "requirements.txt").read_text(encoding="utf-8") == requirements
    assert {"kubernetes", "python-gitlab"} <= set(requirements.split())
    assert any(line.startswith("RUN $PYCMD /output/scripts/introspect.py introspect --user-pip=requirements.txt")
               for line in stages["builder"]), stages["builder"]

    # the Galaxy requirements: kubernetes.core as galaxy.yml asks, and this collection's tarball
    with open(str(build / "requirements.yml"), encoding="utf-8") as handle:
        galaxy_reqs = yaml.safe_load(handle)["collections"]
    by_name = dict((entry["name"], entry) for entry in galaxy_reqs)
    assert by_name["kubernetes.core"]["version"] == galaxy()["dependencies"]["kubernetes.core"]
    files = [entry for entry in galaxy_reqs if entry.get("type") == "file"]
    assert [os.path.basename(entry["name"]) for entry in files] == [tarball_name()]
    # the galaxy stage runs in /build, a copy of _build: the entry names the tarball copied there
    packed = build / files[0]["name"]
    assert packed.is_file(), sorted(str(p.relative_to(build)) for p in build.rglob("*"))
    with tarfile.open(str(packed)) as archive:
        manifest = json.load(archive.extractfile("MANIFEST.json"))["collection_info"]
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == ("yunpeng", "es_serverless",
                                                                              galaxy()["version"])
    assert "COPY _build /build" in stages["galaxy"] and "WORKDIR /build" in stages["galaxy"]
    assert any(line.startswith("RUN ") and "ansible-galaxy collection install" in line
               and "-r requirements.yml" in line for line in stages["galaxy"]), stages["galaxy"]


def test_ee_galaxy_step_and_introspection_run_on_the_context(ee_context, work):
    """The galaxy stage's install command and the builder stage's introspection, run here against the
    context (offline: kubernetes.core is the ansible package's copy here, Galaxy's in the image)."""
    context, _output = ee_context
    build = context / "_build"
    with open(str(context / "Containerfile"), encoding="utf-8") as handle:
        line = next(line for line in handle if "ansible-galaxy collection install" in line)
    share = work / "ee-share" / "collections"
    command = line.split("ansible-galaxy", 1)[1].replace("$ANSIBLE_GALAXY_CLI_COLLECTION_OPTS", "")
    command = command.replace('"/usr/share/ansible/collections"', str(share))
    run([os.path.join(BIN, "ansible-galaxy")] + command.split(), cwd=build, env=clean_env(work / "home"))
    installed = share / COLLECTION_DIR
    assert (installed / "plugins" / "callback" / "reports.py").is_file()
    assert (installed / "playbooks" / "create_cluster.yml").is_file()
    # ansible-builder reads an installed collection's meta/execution-environment.yml as its dependency
    # list, relative to the collection root (this repository's file, with ../requirements.txt, would
    # stop it); without that file, the collection's requirements.txt
    done = run([sys.executable, str(build / "scripts" / "introspect.py"), "introspect",
                "--user-pip=requirements.txt", str(share)], cwd=build, env=clean_env(work / "home"))
    found = yaml.safe_load(done.stdout)["python"]
    for name in ("kubernetes", "python-gitlab"):
        assert "%s  # from collection yunpeng.es_serverless" % name in found, done.stdout
    assert not (installed / "meta" / "execution-environment.yml").exists()


# -- ansible-galaxy: build and install ------------------------------------------------------------------


def test_tarball_holds_the_collection_and_no_junk(tarball):
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
    names = [member.name for member in members]
    assert set(name.split("/")[0] for name in names) == TARBALL_TOP_LEVEL
    assert not [name for name in names if "__pycache__" in name or name.endswith((".pyc", ".tar.gz", ".whl"))]
    assert not [member.name for member in members if member.issym() or member.islnk()]
    assert "meta/execution-environment.yml" not in names
    with open(os.path.join(ROOT, "LICENSE"), "rb") as handle:
        licence = handle.read()
    with tarfile.open(tarball) as archive:
        assert archive.extractfile("LICENSE").read() == licence
    # every tracked file of the collection's content is in it
    tracked = _git_files(["plugins", "roles", "playbooks", "meta/runtime.yml", "es_serverless"])
    assert tracked <= set(names), sorted(tracked - set(names))


def test_galaxy_install_from_an_empty_folder_gives_playbook_module_and_lookup(installed, sandbox, tmp_path):
    collections, install_output = installed
    # offline: kubernetes.core counts as installed, from the ansible package
    assert "yunpeng.es_serverless:%s was installed successfully" % galaxy()["version"] in install_output
    assert "'kubernetes.core:" in install_output and "is already installed, skipping." in install_output
    empty = tmp_path / "empty"
    empty.mkdir()
    data_dir = str(tmp_path / "es_data")
    write_extra_vars(str(empty / "vars.yml"), {"es_user": "galaxy_user", "es_service_name": "svc",
                                               "es_namespace": "es-galaxy", "es_data_dir": data_dir})
    env = clean_env(tmp_path / "home", ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_CALLBACKS_ENABLED=CALLBACK,
                    KUBECONFIG=sandbox.kubeconfig)
    assert os.listdir(str(empty)) == ["vars.yml"]

    run([os.path.join(BIN, "ansible-playbook"), "yunpeng.es_serverless.create_cluster", "-e", "@vars.yml"],
        cwd=empty, env=env)
    assert [body["status"] for _name, body in reports(data_dir, "galaxy_user", "svc")] == CPU_STATUSES
    assert find_deployment(data_dir, "galaxy_user", "svc")["status"] == "created"

    module = run([os.path.join(BIN, "ansible"), "localhost", "-m", "yunpeng.es_serverless.es_deployment_info",
                  "-a", "data_dir=%s user=galaxy_user service_name=svc" % data_dir], cwd=empty, env=env)
    answer = json.loads(module.stdout.split(" => ", 1)[1])
    assert [entry["status"] for entry in answer["deployments"]] == ["created"]

    lookup = run([os.path.join(BIN, "ansible"), "localhost", "-m", "ansible.builtin.debug", "-a",
                  "msg={{ lookup('yunpeng.es_serverless.es_deployment', 'galaxy_user', 'svc', data_dir='%s') }}"
                  % data_dir], cwd=empty, env=env)
    answer = json.loads(lookup.stdout.split(" => ", 1)[1])["msg"]
    assert answer["status"] == "created" and answer["latest_report"]["report"]["status"] == "completed"


# -- pip -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def venvs(work, installed):
    """One throwaway venv per source pip installs from: the checkout, and the collection's folder as
    ansible-galaxy installed it. ``{source: (python, site-packages, source folder)}``."""
    out = {}
    for source, folder in (("checkout", ROOT), ("collection", os.path.join(installed[0], COLLECTION_DIR))):
        python, site = make_venv(str(work / ("venv-" + source)))
        pip_install(python, folder, str(work / "home"))
        out[source] = (python, site, folder)
    return out


@pytest.mark.parametrize("source", ["checkout", "collection"])
def test_wheel_carries_the_package_and_the_collection_only(venvs, source):
    _python, site, folder = venvs[source]
    version = galaxy()["version"]
    files = record(site, version)
    collection = COLLECTION_DIR + "/"
    info = "es_serverless-%s.dist-info/" % version
    allowed = ("es_serverless/", collection, info, "../../../bin/es-serverless")
    assert [name for name in files if not name.startswith(allowed)] == []
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc") or "/tests/" in name]
    metadata = "galaxy.yml" if source == "checkout" else "MANIFEST.json"
    assert set(name for name in files if name.startswith(collection) and name.count("/") == 3) == set(
        collection + name for name in ("LICENSE", metadata))
    assert collection + "meta/runtime.yml" in files and collection + "meta/execution-environment.yml" not in files
    assert info + "licenses/LICENSE" in files
    # the package, and the collection's plugins, playbooks and roles file for file
    assert set(name for name in files if name.startswith("es_serverless/")) == set(
        name for name in _files_under(folder, ["es_serverless"]))
    in_wheel = set(name[len(collection):] for name in files if name.startswith(collection))
    assert set(name for name in in_wheel if name.split("/")[0] in WHEEL_CONTENT) == _files_under(folder, WHEEL_CONTENT)
    with open(os.path.join(ROOT, "LICENSE"), "rb") as handle:
        licence = hashlib.sha256(handle.read()).hexdigest()
    for name in (collection + "LICENSE", info + "licenses/LICENSE"):
        with open(os.path.join(site, name), "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == licence, name


API_SCRIPT = """
import json, sys
import es_serverless
from es_serverless import _collection
result = es_serverless.create_cluster({"user": "pip_user", "service_name": "svc", "namespace": "es-pip"}, sys.argv[1])
print(json.dumps({"package": es_serverless.__file__, "collections": _collection.COLLECTIONS_PATH,
                  "sys_path": sys.path, "result": result.to_dict()}))
"""


@pytest.mark.parametrize("source", ["checkout", "collection"])
def test_pip_installed_api_and_playbook_find_the_collection(venvs, source, sandbox, tmp_path):
    python, site, _folder = venvs[source]
    empty = tmp_path / "empty"
    empty.mkdir()
    data_dir = str(tmp_path / "es_data")
    venv_bin = os.path.dirname(python)

    # the Python API: no ANSIBLE_* variable, no checkout on sys.path
    env = clean_env(tmp_path / "home", path=venv_bin, KUBECONFIG=sandbox.kubeconfig)
    done = run([python, "-c", API_SCRIPT, data_dir], cwd=empty, env=env)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["package"].startswith(site + os.sep) and answer["collections"] == site
    # the checkout is nowhere on sys.path: the venv's site-packages is the one place holding the collection
    checkout = (os.path.realpath(ROOT), os.path.realpath(os.path.join(ROOT, "collections")))
    assert not [entry for entry in answer["sys_path"] if os.path.realpath(entry or empty) in checkout]
    assert [entry for entry in answer["sys_path"]
            if os.path.isdir(os.path.join(entry or str(empty), COLLECTION_DIR))] == [site]
    assert answer["result"]["status"] == "completed" and answer["result"]["ok"], answer["result"]
    assert [report["status"] for report in answer["result"]["reports"]] == CPU_STATUSES

    # the es-serverless command pip wrote into the venv's bin, from the empty folder
    status = run([os.path.join(venv_bin, "es-serverless"), "status", "pip_user", "svc", "--data-dir", data_dir,
                  "--query", "[status, deployment_id]"], cwd=empty, env=env)
    assert json.loads(status.stdout) == ["created", answer["result"]["deployment_id"]]

    # ansible-playbook of that environment: the collection found on sys.path, only the callback enabled
    listed = run([os.path.join(venv_bin, "ansible-galaxy"), "collection", "list", "yunpeng.es_serverless"],
                 cwd=empty, env=env)
    assert os.path.join(site, "ansible_collections") in listed.stdout, listed.stdout
    write_extra_vars(str(empty / "vars.yml"), {"es_user": "pip_user2", "es_service_name": "svc",
                                               "es_namespace": "es-pip2", "es_data_dir": data_dir})
    env["ANSIBLE_CALLBACKS_ENABLED"] = CALLBACK
    run([os.path.join(venv_bin, "ansible-playbook"), "yunpeng.es_serverless.create_cluster", "-e", "@vars.yml"],
        cwd=empty, env=env)
    assert [body["status"] for _name, body in reports(data_dir, "pip_user2", "svc")] == CPU_STATUSES
