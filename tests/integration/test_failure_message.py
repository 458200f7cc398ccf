"""The error of a failed looped task, as the rollback records it: each failed
item's Kubernetes error, not Ansible's "One or more items failed"."""

import os

from tests.integration.flow import BIN, ROOT, output
import subprocess

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - block:
        - name: Create two ConfigMaps, one with a name Kubernetes refuses
          kubernetes.core.k8s:
            kubeconfig: "%(kubeconfig)s"
            definition:
              apiVersion: v1
              kind: ConfigMap
              metadata: {name: "{{ item }}", namespace: default}
          loop: [good-one, Bad_Name]
      rescue:
        - name: Show the failure as the rollback records it
          ansible.builtin.debug:
            msg: "ERROR=[{{ ansible_failed_result | yunpeng.es_serverless.failure_message }}]"
"""


def test_looped_failure_names_the_item_and_the_api_error(sim_cluster, tmp_path):
    book = tmp_path / "loop.yml"
    book.write_text(PLAYBOOK % {"kubeconfig": sim_cluster.kubeconfig})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_NOCOLOR"] = "1"
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), str(book)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    text = output(proc)
    line = next(ln for ln in text.splitlines() if "ERROR=[" in ln)
    assert "item Bad_Name:" in line and "Invalid" in line and "metadata.name" in line, text
    assert "good-one" not in line and "One or more items failed" not in line
