"""Helpers of the packaging tests: build the collection, install it with ansible-galaxy or pip into
throwaway folders, and run commands as a user would, from an empty folder in an environment with no
``ANSIBLE_*`` variable, no ``PYTHONPATH`` and a home of its own (so no checkout, no ``ansible.cfg`` of
ours and no ``~/.ansible/collections`` are in play)."""

import os
import subprocess
import sys
import sysconfig

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
NAMESPACE, NAME = "yunpeng", "es_serverless"
COLLECTION_DIR = os.path.join("ansible_collections", NAMESPACE, NAME)
CALLBACK = "yunpeng.es_serverless.reports"
# The shared environment's site-packages: a throwaway venv reads its packages through a .pth file, so
# pip finds every dependency installed and downloads nothing.
SHARED_SITE_PACKAGES = sysconfig.get_paths()["purelib"]


def galaxy():
    with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def tarball_name():
    """The file name ``ansible-galaxy collection build`` gives the collection at galaxy.yml's version."""
    return "%s-%s-%s.tar.gz" % (NAMESPACE, NAME, galaxy()["version"])


def clean_env(home, path=BIN, **extra):
    """A user's environment: ``path`` first on PATH, a home of its own, nothing of Ansible's or Python's."""
    env = {"PATH": os.pathsep.join([path, "/usr/local/bin", "/usr/bin", "/bin"]), "HOME": str(home),
           "LANG": "C.UTF-8", "PYTHONWARNINGS": "ignore"}
    os.makedirs(str(home), exist_ok=True)
    env.update(dict((key, str(value)) for key, value in extra.items()))
    return env


def run(cmd, cwd, env, timeout=300, ok=True):
    """Run ``cmd``; with ``ok``, fail the test with its output when it fails."""
    done = subprocess.run([str(part) for part in cmd], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if ok and done.returncode != 0:
        raise AssertionError("%s exited %d\n--- stdout\n%s\n--- stderr\n%s"
                             % (" ".join(str(part) for part in cmd), done.returncode, done.stdout[-6000:],
                                done.stderr[-6000:]))
    return done


def build_collection(dest, home):
    """``ansible-galaxy collection build`` of the repository into ``dest``: the tarball's path."""
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--force", "--output-path", dest],
        cwd=ROOT, env=clean_env(home))
    path = os.path.join(str(dest), tarball_name())
    assert os.path.isfile(path), os.listdir(str(dest))
    return path


def galaxy_install(tarball, dest, home, *args):
    """``ansible-galaxy collection install <tarball> -p <dest>`` from ``home``; the completed process."""
    return run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", tarball, "-p", dest] + list(args),
               cwd=home, env=clean_env(home))


def make_venv(path):
    """A venv whose Python reads the shared site-packages after its own (a .pth file), with the console
    scripts of ansible-core and ansible-runner in its bin, as pip writes them when it installs those
    packages into the venv: ``ansible-playbook`` there runs the venv's Python, which finds what pip
    installs into the venv."""
    run([sys.executable, "-m", "venv", "--without-pip", path], cwd=ROOT, env=clean_env(os.path.dirname(path)))
    python = os.path.join(str(path), "bin", "python")
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=path,
               env=clean_env(path)).stdout.strip()
    with open(os.path.join(site, "shared-environment.pth"), "w", encoding="utf-8") as handle:
        handle.write(SHARED_SITE_PACKAGES + "\n")
    from importlib import metadata

    for dist in ("ansible-core", "ansible-runner"):
        for entry in metadata.distribution(dist).entry_points:
            if entry.group != "console_scripts":
                continue
            module, _sep, attr = entry.value.partition(":")
            script = os.path.join(str(path), "bin", entry.name)
            with open(script, "w", encoding="utf-8") as handle:
                handle.write("#!%s\nimport sys\nfrom %s import %s\nsys.exit(%s())\n"
                             % (python, module, attr.split(".")[0], attr))
            os.chmod(script, 0o755)
    return python, site


def pip_install(python, source, home):
    """``pip install --no-build-isolation <source>`` with the venv's Python, offline (--no-index: every
    dependency is found installed) and without compiling, so the installed files are the wheel's."""
    return run([python, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-compile",
                "--disable-pip-version-check", source], cwd=home, env=clean_env(home))


def record(site, version):
    """The files pip installed from the wheel (its RECORD), without pip's own bookkeeping files."""
    info = "es_serverless-%s.dist-info" % version
    with open(os.path.join(site, info, "RECORD"), encoding="utf-8") as handle:
        names = [line.split(",")[0] for line in handle if line.strip()]
    pip_files = set("%s/%s" % (info, name) for name in ("INSTALLER", "REQUESTED", "RECORD", "direct_url.json"))
    return sorted(name for name in names if name not in pip_files)
