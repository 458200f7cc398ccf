"""Check mode: `--check --diff` previews a create or an update, writes no file and
changes nothing in the cluster."""

import os
import re

from tests.integration.flow import all_files_text, output, run_playbook
from tests.integration.test_update_flow import NS, SERVICE, USER, tenant, versions

# The credentials Secret's task is no_log, so Ansible shows no diff for it.
CORE = ["Namespace/" + NS] + ["%s/%s in namespace %s" % (kind, name, NS) for kind, name in (
    ("ConfigMap", "elasticsearch-config"), ("Service", "elasticsearch"),
    ("Service", "elasticsearch-headless"), ("Service", "kibana"), ("StatefulSet", "elasticsearch"),
    ("PodDisruptionBudget", "elasticsearch"), ("ResourceQuota", "es-tenant-quota"),
    ("LimitRange", "es-tenant-limits"), ("NetworkPolicy", "es-tenant-ingress"), ("Deployment", "kibana"))]


def diff_headers(text):
    return {line[len("+++ after: "):] for line in text.splitlines() if line.startswith("+++ after: ")}


def files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _s, fs in os.walk(folder) for f in fs)


def test_check_of_a_new_tenant_previews_every_object(cluster, data_dir):
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant(es_replicas=3), args=["--check", "--diff"])
    assert proc.returncode == 0, output(proc)
    assert set(CORE) <= diff_headers(proc.stdout)
    assert '"replicas": 3' in proc.stdout
    assert NS not in cluster.namespace_names()
    assert files(data_dir) == [] and not os.path.exists(os.path.join(data_dir, "deployment.log"))


def test_check_of_an_update_previews_only_the_change(cluster, data_dir):
    proc = run_playbook(cluster.kubeconfig, data_dir, tenant())
    assert proc.returncode == 0, output(proc)
    before, stored = versions(cluster), all_files_text(data_dir)

    proc = run_playbook(cluster.kubeconfig, data_dir, tenant(es_replicas=2), args=["--check", "--diff"])
    assert proc.returncode == 0, output(proc)
    changed = diff_headers(proc.stdout)
    assert "StatefulSet/elasticsearch in namespace %s" % NS in changed
    assert "ResourceQuota/es-tenant-quota in namespace %s" % NS in changed
    assert "Deployment/kibana in namespace %s" % NS not in changed
    assert "Service/kibana in namespace %s" % NS not in changed
    assert re.search(r'^-\s+"replicas": 1,$', proc.stdout, re.M)
    assert re.search(r'^\+\s+"replicas": 2,$', proc.stdout, re.M)
    assert versions(cluster) == before
    assert all_files_text(data_dir) == stored
    assert USER in stored and SERVICE in stored
