"""kubernetes.core modules, run by ansible-playbook with ``KUBECONFIG`` set,
against both clusters (the simulator and the real control plane, fixture
``k8s``): k8s (apply, present, absent), k8s_info, k8s_scale,
k8s_json_patch."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["tests.kubesim.pytest_plugin", "tests.kubesim_tests.clusters"]

BIN = os.path.dirname(sys.executable)


def run_playbook(cluster, tmp_path, tasks, check=True):
    play = textwrap.dedent("""\
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
        """) + textwrap.indent(textwrap.dedent(tasks), "    ")
    (tmp_path / "play.yml").write_text(play)
    (tmp_path / "ansible.cfg").write_text("[defaults]\nstdout_callback = json\nretry_files_enabled = false\n")
    env = cluster.env()
    env.update(ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("ansible-playbook output is not JSON: %s %s" % (proc.stdout[-3000:], proc.stderr[-3000:]))
    results = {}
    for task in out["plays"][0]["tasks"]:
        results[task["task"]["name"]] = task["hosts"]["localhost"]
    if check and proc.returncode != 0:
        failed = {k: v.get("msg") for k, v in results.items() if v.get("failed")}
        raise AssertionError("playbook failed: %s\n%s" % (failed, proc.stderr[-2000:]))
    return results


STS = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: elasticsearch, namespace: NS, labels: {app: elasticsearch}}
spec:
  serviceName: elasticsearch
  replicas: 1
  selector: {matchLabels: {app: elasticsearch}}
  template:
    metadata: {labels: {app: elasticsearch}}
    spec:
      containers:
      - name: elasticsearch
        image: docker.elastic.co/elasticsearch/elasticsearch:8.15.0
        env: [{name: discovery.type, value: single-node}]
        resources: {requests: {cpu: "1", memory: 2Gi}, limits: {cpu: "2", memory: 4Gi}}
  volumeClaimTemplates:
  - metadata: {name: elasticsearch-data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 5Gi}}
"""


@pytest.fixture
def ns(k8s, tmp_path):
    """A namespace name of this test's own (not created), and the StatefulSet in it as sts.yml."""
    name = k8s.unique("es")
    (tmp_path / "sts.yml").write_text(STS.replace("NS", name))
    return name


def test_k8s_apply_present_info_scale_json_patch_absent(k8s, ns, tmp_path):
    tasks = """\
        - name: namespace
          kubernetes.core.k8s:
            state: present
            definition: {apiVersion: v1, kind: Namespace, metadata: {name: NS, labels: {es-cluster: "true"}}}
        - name: namespace again
          kubernetes.core.k8s:
            state: present
            definition: {apiVersion: v1, kind: Namespace, metadata: {name: NS, labels: {es-cluster: "true"}}}
        - name: apply sts
          kubernetes.core.k8s:
            apply: true
            src: "{{ playbook_dir }}/sts.yml"
            wait: true
            wait_timeout: 60
        - name: apply sts again
          kubernetes.core.k8s:
            apply: true
            src: "{{ playbook_dir }}/sts.yml"
        - name: info
          kubernetes.core.k8s_info:
            kind: StatefulSet
            namespace: NS
            label_selectors: [app=elasticsearch]
        - name: pvcs
          kubernetes.core.k8s_info:
            kind: PersistentVolumeClaim
            namespace: NS
        - name: scale
          kubernetes.core.k8s_scale:
            kind: StatefulSet
            name: elasticsearch
            namespace: NS
            replicas: 2
            wait: true
            wait_timeout: 60
        - name: json patch
          kubernetes.core.k8s_json_patch:
            kind: StatefulSet
            name: elasticsearch
            namespace: NS
            patch:
              - {op: add, path: /metadata/annotations, value: {es.yunpeng.cn/max-indices: "100"}}
              - {op: replace, path: /spec/template/spec/containers/0/resources/limits/cpu, value: "3"}
        - name: missing
          kubernetes.core.k8s_info:
            kind: StatefulSet
            namespace: NS
            name: nope
        - name: absent
          kubernetes.core.k8s:
            state: absent
            kind: Namespace
            name: NS
            wait: true
            wait_timeout: 60
        - name: namespace gone
          kubernetes.core.k8s_info:
            kind: Namespace
            name: NS
        - name: statefulsets gone
          kubernetes.core.k8s_info:
            kind: StatefulSet
            namespace: NS
        """
    r = run_playbook(k8s, tmp_path, tasks.replace("NS", ns))
    assert r["namespace"]["changed"] is True and r["namespace again"]["changed"] is False
    assert r["apply sts"]["changed"] is True
    assert r["apply sts"]["result"]["status"]["readyReplicas"] == 1
    assert r["apply sts again"]["changed"] is False
    info = r["info"]["resources"]
    assert [i["metadata"]["name"] for i in info] == ["elasticsearch"]
    assert [p["metadata"]["name"] for p in r["pvcs"]["resources"]] == ["elasticsearch-data-elasticsearch-0"]
    assert r["scale"]["changed"] is True and r["scale"]["result"]["spec"]["replicas"] == 2
    assert r["json patch"]["changed"] is True
    patched = r["json patch"]["result"]
    assert patched["metadata"]["annotations"]["es.yunpeng.cn/max-indices"] == "100"
    assert patched["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "3"
    assert r["missing"]["resources"] == []
    assert r["absent"]["changed"] is True
    assert r["namespace gone"]["resources"] == [] and r["statefulsets gone"]["resources"] == []


def test_k8s_module_reports_refusals(k8s, ns, tmp_path):
    tasks = """\
        - name: namespace
          kubernetes.core.k8s:
            definition: {apiVersion: v1, kind: Namespace, metadata: {name: NS}}
        - name: sts
          kubernetes.core.k8s:
            src: "{{ playbook_dir }}/sts.yml"
        - name: forbidden change
          kubernetes.core.k8s:
            definition:
              apiVersion: apps/v1
              kind: StatefulSet
              metadata: {name: elasticsearch, namespace: NS}
              spec: {serviceName: other}
          ignore_errors: true
        - name: bad name
          kubernetes.core.k8s:
            definition: {apiVersion: v1, kind: ConfigMap, metadata: {name: Bad_Name, namespace: NS}}
          ignore_errors: true
        """
    r = run_playbook(k8s, tmp_path, tasks.replace("NS", ns), check=False)
    assert r["sts"]["changed"] is True
    forbidden = r["forbidden change"]
    assert forbidden["failed"] is True and forbidden["reason"] == "Unprocessable Entity"
    status = json.loads(forbidden["msg"].split(": ", 1)[1])
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "spec"
    assert "spec: Forbidden: updates to statefulset spec" in status["message"]
    bad = r["bad name"]
    assert bad["failed"] is True and bad["reason"] == "Unprocessable Entity"
    assert "a lowercase RFC 1123 subdomain" in bad["msg"]


def test_k8s_server_side_apply(k8s, ns, tmp_path):
    tasks = """\
        - name: namespace
          kubernetes.core.k8s:
            definition: {apiVersion: v1, kind: Namespace, metadata: {name: NS}}
        - name: ssa
          kubernetes.core.k8s:
            src: "{{ playbook_dir }}/sts.yml"
            apply: true
            server_side_apply:
              field_manager: ansible
              force_conflicts: true
        - name: ssa again
          kubernetes.core.k8s:
            src: "{{ playbook_dir }}/sts.yml"
            apply: true
            server_side_apply:
              field_manager: ansible
        - name: read back
          kubernetes.core.k8s_info:
            kind: StatefulSet
            namespace: NS
            name: elasticsearch
        """
    r = run_playbook(k8s, tmp_path, tasks.replace("NS", ns))
    assert r["ssa"]["changed"] is True
    assert r["ssa again"]["changed"] is False
    sts = r["read back"]["resources"][0]
    assert [m["manager"] for m in sts["metadata"]["managedFields"] if m["operation"] == "Apply"] == ["ansible"]
