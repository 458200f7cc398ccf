"""Extra vars written with every tenant string marked !unsafe (plugins/plugin_utils/extravars.py): Ansible
reads them as given and never runs a template in them."""

import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from ansible_collections.yunpeng.es_serverless.plugins.plugin_utils import extravars

BIN = os.path.dirname(sys.executable)


def _ansible_debug(varfile, tmp_path):
    out = tmp_path / "out.json"
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("ANSIBLE_"))
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    env.update(ANSIBLE_CONFIG=str(cfg), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [os.path.join(BIN, "ansible"), "localhost", "-c", "local", "-i", "localhost,", "-e", "@%s" % varfile,
         "-e", "ansible_python_interpreter=%s" % sys.executable,
         "-m", "ansible.builtin.copy", "-a", "dest=%s content={{ {'user': es_user, 'org': es_org, 'list': es_list,"
         " 'n': es_n} | to_json }}" % out],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_a_pipe_lookup_in_a_tenant_string_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    hostile = "{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % marker
    variables = {"es_user": hostile, "es_org": "it's \"quoted\"\nand {% raw %}", "es_list": [hostile, 3],
                 "es_n": 3}
    varfile = extravars.write_extra_vars(str(tmp_path / "vars.yml"), variables)
    assert stat.S_IMODE(os.stat(varfile).st_mode) == 0o600
    got = _ansible_debug(varfile, tmp_path)
    assert not marker.exists(), "the template ran"
    assert got == {"user": hostile, "org": variables["es_org"], "list": [hostile, 3], "n": 3}


def test_without_the_tag_the_same_string_runs(tmp_path):
    # What the helper prevents: the same file as plain YAML (or JSON) runs the command.
    marker = tmp_path / "pwned"
    hostile = "{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % marker
    varfile = tmp_path / "vars.yml"
    varfile.write_text(yaml.safe_dump({"es_user": hostile, "es_org": "", "es_list": [], "es_n": 0}))
    _ansible_debug(varfile, tmp_path)
    assert marker.exists()


def test_only_strings_are_tagged_and_keys_stay_plain():
    text = extravars.unsafe_yaml({"es_user": "u", "es_replicas": 2, "es_quota": {"max": "5"}, "flag": True})
    assert text == "es_user: !unsafe 'u'\nes_replicas: 2\nes_quota:\n  max: !unsafe '5'\nflag: true\n"
    inventory = extravars.dump_yaml({"all": {"vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                                             "hosts": {"t": extravars.mark_unsafe({"es_user": "u"})}}})
    assert "ansible_python_interpreter: '{{ ansible_playbook_python }}'" in inventory
    assert "es_user: !unsafe 'u'" in inventory


def test_a_symlink_at_the_path_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "vars.yml").symlink_to(target)
    with pytest.raises(OSError):
        extravars.write_extra_vars(str(tmp_path / "vars.yml"), {"es_user": "u"})
    assert target.read_text() == "keep"


def test_ansible_runner_passes_env_extravars_with_the_tags(tmp_path, monkeypatch):
    ansible_runner = pytest.importorskip("ansible_runner")
    marker = tmp_path / "pwned"
    hostile = "{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % marker
    private = tmp_path / "runner"
    (private / "project").mkdir(parents=True)
    (private / "env").mkdir()
    out = tmp_path / "out.txt"
    (private / "project" / "show.yml").write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy: {dest: %s, content: '{{ es_user }}'}\n" % out)
    extravars.write_extra_vars(str(private / "env" / "extravars"), {"es_user": hostile})
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    result = ansible_runner.run(private_data_dir=str(private), playbook="show.yml", quiet=True,
                                envvars={"ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    assert result.rc == 0, result.stdout.read()
    assert out.read_text() == hostile and not marker.exists()
