"""Helpers for the integration tests: run the real create playbook against a
running simulator (or the cluster KUBECONFIG names) and read what it left."""

import glob
import hashlib
import json
import os
import subprocess
import sys
import time

import yaml

from ansible_collections.yunpeng.es_serverless.plugins.plugin_utils.extravars import write_extra_vars

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)

MESSAGES = {
    "starting": "Starting cluster creation",
    "namespace_created": "Namespace created successfully",
    "gitlab_pulled": "GitLab resources pulled successfully",
    "k8s_applied": "Kubernetes resources applied successfully",
    "resources_configured": "Cluster resources configured successfully",
    "rollout_completed": "Cluster rollout completed successfully",
    "tenant_synced": "Data synced to tenant container management",
    "completed": "Cluster creation completed successfully",
}
SKIPPED_GITLAB = "GitLab pull skipped: no GitLab URL configured"


def tenant_vars(user="test_user", service="test_service", namespace="es-test", **extra):
    v = {
        "es_user": user,
        "es_service_name": service,
        "es_namespace": namespace,
        "es_replicas": 1,
        "es_cpu_request": "500m",
        "es_cpu_limit": "2",
        "es_mem_request": "1Gi",
        "es_mem_limit": "2Gi",
        "es_disk_size": "10Gi",
        "es_gpu_count": 0,
        "es_dimension": 128,
        "es_vector_count": 10000,
        "es_index_limit": 100,
        "es_tenant_org_id": "test-org",
        "es_rollout_timeout": 120,
    }
    v.update(extra)
    return v


def run_playbook(kubeconfig, data_dir, extra_vars=None, inventory=None, args=(), env=None, timeout=600,
                 playbook="playbooks/create_cluster.yml"):
    """ansible-playbook exactly as an operator runs it from a checkout; the extra vars go in a file
    with every string tagged ``!unsafe`` (plugins/plugin_utils/extravars.py), as tenant strings must."""
    cmd, full_env = playbook_command(kubeconfig, data_dir, extra_vars, inventory, args, env, playbook)
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)


def start_playbook(kubeconfig, data_dir, extra_vars=None, playbook="playbooks/create_cluster.yml"):
    """ansible-playbook as ``run_playbook`` runs it, in the background and in a process group of its own
    (``os.killpg`` ends it with its workers); its output is discarded."""
    cmd, full_env = playbook_command(kubeconfig, data_dir, extra_vars, None, (), None, playbook)
    return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def playbook_command(kubeconfig, data_dir, extra_vars, inventory, args, env, playbook):
    """The command line and environment of an ansible-playbook run from the checkout."""
    varfile = os.path.join(data_dir, "..", "vars-%d.yml" % time.monotonic_ns())
    varfile = os.path.abspath(varfile)
    write_extra_vars(varfile, dict(extra_vars or {}, es_data_dir=data_dir))
    cmd = [os.path.join(BIN, "ansible-playbook"), playbook, "-e", "@" + varfile]
    if inventory:
        cmd += ["-i", inventory]
    cmd += list(args)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    full_env.update({"KUBECONFIG": kubeconfig, "PATH": BIN + os.pathsep + full_env.get("PATH", ""),
                     "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    full_env.update(env or {})
    return cmd, full_env


def start_held_create(cluster, data_dir, user, service, namespace):
    """Start a create in the background whose rollout is held for about 8 s (a cluster that pulls real
    images is slower anyway); returns the process, whose output starts with the playbook's exit code."""
    extra = {}
    if cluster.sim:
        cluster.sim.set_ready_delay(8)
    elif cluster.controlplane:
        extra["es_elasticsearch_image"] = "docker.elastic.co/elasticsearch/elasticsearch:8.15.3-ready-after-8s"
    return subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r); sys.path.insert(0, %r)\n"
        "from tests.integration.flow import run_playbook, tenant_vars\n"
        "p = run_playbook(%r, %r, tenant_vars(%r, %r, %r, **%r))\n"
        "print(p.returncode); sys.stdout.write(p.stdout[-3000:])") % (
            ROOT, os.path.join(ROOT, "collections"), cluster.kubeconfig, data_dir, user, service, namespace, extra)],
        stdout=subprocess.PIPE, text=True)


def output(proc):
    return proc.stdout + proc.stderr


def reports(data_dir, user=None, service=None):
    """All report bodies in file-name order (optionally of one tenant)."""
    out = []
    for path in sorted(glob.glob(os.path.join(data_dir, "deployment_reports", "*.json"))):
        with open(path) as f:
            body = json.load(f)
        if (user is None or body["user"] == user) and (service is None or body["service_name"] == service):
            out.append((os.path.basename(path), body))
    return out


def log_lines(data_dir, log_file=None):
    path = log_file or os.path.join(data_dir, "deployment.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def _log_field(value, identity=True):
    # The spec's log line with the README's escape: '%', ',' and control characters
    # percent-encoded in every field, ':' too in the identity and status fields.
    special = "%,:" if identity else "%,"
    return "".join("".join("%%%02X" % b for b in c.encode("utf-8"))
                   if c in special or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" else c
                   for c in str(value))


def expected_log_line(report):
    return "%s - User: %s, Service: %s, Namespace: %s, Status: %s, Message: %s" % (
        _log_field(report["timestamp"], False), _log_field(report["user"]), _log_field(report["service_name"]),
        _log_field(report["namespace"]), _log_field(report["status"]), _log_field(report["message"], False))


def deployments(data_dir):
    """Every deployment status entry, ``{"user/service": entry}``: the data folder's
    ``deployments/<user>/<service>.json`` files."""
    out = {}
    for path in sorted(glob.glob(os.path.join(data_dir, "deployments", "*", "*.json"))):
        with open(path) as f:
            entry = json.load(f)
        out["%s/%s" % (entry["user"], entry["service_name"])] = entry
    return out


def find_deployment(data_dir, user, service):
    """The pair's entry, ``deployments/<user>/<service>.json`` (valid names are their own path parts), or None."""
    path = os.path.join(data_dir, "deployments", user, service + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        entry = json.load(f)
    assert (entry["user"], entry["service_name"]) == (user, service), path
    return entry


def tenant_record(data_dir, user, service):
    path = os.path.join(data_dir, "tenant_data", "%s_%s.json" % (user, service))
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def all_files_text(folder):
    """Every byte under a folder, for 'this secret appears nowhere' checks."""
    chunks = []
    for dirpath, _u, files in os.walk(folder):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                chunks.append(f.read().decode("utf-8", "replace"))
    return "\n".join(chunks)


def wait_for(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def config_checksum(data):
    """The pod template's es.yunpeng.cn/config-checksum, recomputed from the ConfigMap's data: SHA-256 of
    the data as JSON with sorted keys, elasticsearch.yml without the setting used only while a cluster
    forms (cluster.initial_master_nodes), so that dropping it later rolls no pod."""
    data = dict(data)
    settings = yaml.safe_load(data["elasticsearch.yml"])
    settings.pop("cluster.initial_master_nodes", None)
    data["elasticsearch.yml"] = yaml.safe_dump(settings, default_flow_style=False, sort_keys=True, allow_unicode=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
