"""Run one of the collection's modules through the real ``ansible`` command
(ad hoc, local connection, JSON stdout callback) and return its result."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(tmp_path, module, args, env=None, verbosity=None, timeout=240, interpreter=sys.executable):
    """``(CompletedProcess, host result dict)`` of ``yunpeng.es_serverless.<module>``.
    Runs in ``tmp_path`` with no ansible.cfg, so only what is given here applies."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "GITLAB_TOKEN"}
    full_env.update({
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "collections"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    })
    full_env.update(env or {})
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-c", "local", "-i", "localhost,",
           "-e", "ansible_python_interpreter=%s" % interpreter, "-m", "yunpeng.es_serverless." + module,
           "-a", json.dumps(args)]
    if verbosity:
        cmd.append(verbosity)
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=full_env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    out = proc.stdout
    data = json.loads(out[out.index("{"):])
    return proc, data["plays"][0]["tasks"][0]["hosts"]["localhost"]
