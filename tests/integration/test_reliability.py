"""The reliability suite of issue 10, through the real playbook on the simulator: a fault at every
stage (one table), many tenants at once, hostile input in one run, and the generated password kept
out of every output. The README's "Reliability" section is the table of what this and the other
suites (test_api_faults.py, test_crash_recovery.py, test_hostile_input.py, test_gitlab_flow.py,
test_readme_recipes.py) tried and what held."""

import base64
import glob
import json
import os
import threading
import time

import ansible_runner
import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import reports as reportsmod
from ansible_collections.yunpeng.es_serverless.plugins.plugin_utils.extravars import dump_yaml, mark_unsafe
from tests.integration.conftest import BAD_REGISTRY, Cluster
from tests.integration.flow import (
    BIN,
    ROOT,
    all_files_text,
    deployments,
    expected_log_line,
    find_deployment,
    log_lines,
    output,
    reports,
    run_playbook,
    tenant_record,
    tenant_vars,
    wait_for,
)
from tests.kubesim.fixture import KubeSim

CPU_STATUSES = ["starting", "namespace_created", "gitlab_pulled", "k8s_applied", "resources_configured",
                "disk_configured", "rollout_completed", "tenant_synced", "completed"]
CRASH = "crash-loop"
FAST = {"es_rollout_timeout": 20, "es_k8s_timeout": 10}
ROLLOUT = {"es_rollout_timeout": 4}  # a watch that fails is reopened until the rollout's timeout
# What a tenant's run leaves in its namespace (besides what the simulator puts in every namespace).
RESOURCES = ("configmaps", "secrets", "services", "apps/statefulsets", "apps/deployments", "persistentvolumeclaims",
             "resourcequotas", "limitranges", "policy/poddisruptionbudgets", "networking.k8s.io/networkpolicies")
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}


# --- 1. a fault at every stage ------------------------------------------------------------------------------
#
# (id, fault, extra vars, simulator settings, failing stage, cause in the message, statuses before `failed`,
#  pre-existing namespace with a foreign ConfigMap). A lasting 500 is given 6 times: the first answer and
# the client's 5 retries (a transient one is survived: test_api_faults.py). A 403 or 409 is not retried.
# The calls are those of a normal create (the simulator's request log): stage 2 POST namespaces, stage 4
# POST secrets and the server-side apply PATCHes, stage 6 the StatefulSet read and the PVC list (stage 5 makes
# no request), stage 8 the lists and watches of the StatefulSet and the Deployment, which the rollout reopens
# until its timeout (a failing pods list does not fail it: pods are read only to find a doomed pod sooner).
# The latency (1.5 s a request) is added once the last object of stage 4 is applied and taken away 5 s later;
# with pods not Ready yet, the rollout ends at its timeout however slow its reads (a read that ends after the
# deadline and finds the rollout done is a success: latency alone fails no stage while each request takes
# less than the client's 30 s).
S = CPU_STATUSES
STAGE_FAULTS = [
    ("namespace-500", "POST:namespaces:500:6", {}, {}, "namespace", "500 Internal Server Error", S[:1], False),
    ("namespace-403", "POST:namespaces:403:1", {}, {}, "namespace", "403 Forbidden", S[:1], False),
    ("namespace-403-existing", "POST:namespaces:403:1", {}, {}, "namespace", "403 Forbidden", S[:1], True),
    ("namespace-409", "POST:namespaces:409:1", {}, {}, "namespace", "409 Conflict", S[:1], False),
    ("secret-500", "POST:secrets:500:6", {}, {}, "k8s_apply", "500 Internal Server Error", S[:3], False),
    ("secret-403-existing", "POST:secrets:403:1", {}, {}, "k8s_apply", "403 Forbidden", S[:3], True),
    ("configmap-403", "PATCH:configmaps:403:1", {}, {}, "k8s_apply", "403 Forbidden", S[:3], False),
    ("configmap-409-existing", "PATCH:configmaps:409:1", {}, {}, "k8s_apply", "409 Conflict", S[:3], True),
    ("statefulset-409", "PATCH:statefulsets:409:1", {}, {}, "k8s_apply", "409 Conflict", S[:3], False),
    ("pvc-list-500", "GET:persistentvolumeclaims:500:6", {}, {}, "disk", "500", S[:5], False),
    ("pvc-list-403", "GET:persistentvolumeclaims:403:1", {}, {}, "disk", "403", S[:5], False),
    ("statefulset-read-403", "GET:statefulsets:403:1", {}, {}, "disk", "403 Forbidden", S[:5], False),
    ("statefulset-read-500-existing", "GET:statefulsets:500:6", {}, {}, "disk", "500 Internal Server Error", S[:5],
     True),
    ("deployments-watch-500", "GET:deployments:500", ROLLOUT, {}, "rollout", "500", S[:6], False),
    ("deployments-watch-403-existing", "GET:deployments:403", ROLLOUT, {}, "rollout", "403", S[:6], True),
    ("latency", None, {"es_rollout_timeout": 2}, {"latency": 1500, "ready_delay": 30}, "rollout",
     "not complete after 2s", S[:6], False),
    ("image-pull", None, {"es_kibana_image": BAD_REGISTRY + "/kibana/kibana:8.15.3"}, {}, "rollout",
     "ImagePull", S[:6], False),
    ("image-pull-existing", None, {"es_kibana_image": BAD_REGISTRY + "/kibana/kibana:8.15.3"}, {}, "rollout",
     "ImagePull", S[:6], True),
    ("crash-loop", None, {"es_elasticsearch_image": "docker.elastic.co/elasticsearch/" + CRASH + ":8.15.3"}, {},
     "rollout", "CrashLoopBackOff", S[:6], False),
    ("gpu-unschedulable", None, {"es_gpu_count": 8}, {}, "rollout", "Insufficient nvidia.com/gpu",
     S[:6] + ["gpu_configured"], False),
]


class World:
    """One simulator and one data folder for the whole table, holding a tenant created beforehand."""

    def __init__(self, sim, data_dir):
        self.sim = sim
        self.cluster = Cluster(sim.kubeconfig, sim=sim)
        self.data_dir = data_dir

    def other_tenant(self):
        """What must not change: the other tenant's files and its objects' resourceVersions."""
        files = {}
        for path in glob.glob(os.path.join(self.data_dir, "**", "*other_user*"), recursive=True) + \
                glob.glob(os.path.join(self.data_dir, "*", "es-other.json")):
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    files[path] = f.read()
        versions = {(r, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                    for r in RESOURCES + ("pods",) for o in self.sim.objects(r, "es-other")}
        return files, versions


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with KubeSim(ready_delay=0.2, node_gpus=4, image_pull_fail=[BAD_REGISTRY], crash=[CRASH]) as sim:
        data_dir = str(tmp_path_factory.mktemp("reliability") / "es_data")
        proc = run_playbook(sim.kubeconfig, data_dir, tenant_vars("other_user", "svc", "es-other"))
        assert proc.returncode == 0, output(proc)[-3000:]
        yield World(sim, data_dir)


def _slow_rollout(sim, data_dir, user, latency_ms):
    marker = "/namespaces/es-%s/deployments/kibana" % user[2:]
    if wait_for(lambda: [r for r in sim.requests() if r["method"] == "PATCH" and marker in r["path"]],
                timeout=60, interval=0.01):
        sim.set_latency(latency_ms)
        time.sleep(5)
    sim.set_latency(0)


def _leftovers(sim, namespace):
    left = {}
    for resource in RESOURCES:
        names = sorted(o["metadata"]["name"] for o in sim.objects(resource, namespace))
        names = [n for n in names if n not in ("kube-root-ca.crt", "keep-me")]
        if names:
            left[resource] = names
    return left


@pytest.mark.parametrize("case", STAGE_FAULTS, ids=[c[0] for c in STAGE_FAULTS])
def test_a_fault_at_every_stage_fails_cleanly(world, case):
    name, fault, extra, settings, stage, cause, before, existing = case
    sim, cluster, data_dir = world.sim, world.cluster, world.data_dir
    user, namespace = "u-" + name, "es-" + name
    if existing:
        cluster.core.create_namespace({"metadata": {"name": namespace}})
        cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "keep-me"}, "data": {"a": "b"}})
    other = world.other_tenant()
    if fault:
        sim.add_fault(fault)
    slow = None
    sim.set_ready_delay(settings.get("ready_delay", 0.2))
    if settings.get("latency"):
        slow = threading.Thread(target=_slow_rollout, args=(sim, data_dir, user, settings["latency"]))
        slow.start()
    try:
        proc = run_playbook(cluster.kubeconfig, data_dir, tenant_vars(user, "svc", namespace, **dict(FAST, **extra)))
    finally:
        if slow:
            slow.join()
        sim.set_faults([])
        sim.set_latency(0)
        sim.set_ready_delay(0.2)
    out = output(proc)
    assert proc.returncode != 0, out[-3000:]
    got = reports(data_dir, user, "svc")
    assert [b["status"] for _n, b in got] == before + ["failed"], out[-3000:]
    message = got[-1][1]["message"]
    assert message.startswith("Cluster creation failed at stage %s: " % stage), message
    assert cause in message, message
    entry = find_deployment(data_dir, user, "svc")
    assert entry["status"] == "failed" and entry["stage"] == stage, entry
    assert tenant_record(data_dir, user, "svc") is None
    mine = [reportsmod.parse_log_line(ln) for ln in log_lines(data_dir) if "User: %s," % user in ln]
    assert [f["status"] for f in mine] == before + ["failed"] and mine[-1]["message"] == message
    assert not os.path.exists(os.path.join(data_dir, "namespaces", namespace + ".json"))  # released
    if existing:  # the namespace and what was in it before are kept, the run's objects removed
        assert wait_for(lambda: _leftovers(sim, namespace) == {}, timeout=30), _leftovers(sim, namespace)
        assert namespace in cluster.namespace_names()
        assert cluster.core.read_namespaced_config_map("keep-me", namespace).data == {"a": "b"}
    else:
        assert wait_for(lambda: namespace not in cluster.namespace_names(), timeout=30)
    assert world.other_tenant() == other
    assert find_deployment(data_dir, "other_user", "svc")["status"] == "created"


# --- 3. concurrency ----------------------------------------------------------------------------------------

def _inventory(path, hosts):
    """An inventory with one host per tenant; every tenant string tagged ``!unsafe``."""
    with open(path, "w") as f:
        f.write(dump_yaml({"all": {"vars": LOCAL, "hosts": {h: mark_unsafe(v) for h, v in hosts.items()}}}))
    return path


def _batch(cluster, data_dir, tmp_path, label, tenants, forks):
    hosts = {"tenant-%s" % user: tenant_vars(user, "svc", ns) for user, ns in tenants}
    inv = _inventory(str(tmp_path / ("inventory-%s.yml" % label)), hosts)
    return run_playbook(cluster.kubeconfig, data_dir, {"es_target_hosts": "all"}, inventory=inv,
                        args=["--forks", str(forks)])


@pytest.fixture
def big_cluster():
    """A simulator whose node holds 40 tenants (the default one holds 16 cpu)."""
    with KubeSim(ready_delay=0.3, node_cpu="1000", node_memory="4000Gi") as sim:
        yield Cluster(sim.kubeconfig, sim=sim)


def test_twenty_tenants_with_forks_and_two_processes_at_once(big_cluster, data_dir, tmp_path):
    cluster = big_cluster
    forked = [("fork%02d" % i, "es-fork%02d" % i) for i in range(20)]
    proc = _batch(cluster, data_dir, tmp_path, "forks", forked, 10)
    assert proc.returncode == 0, output(proc)[-3000:]
    groups = [[("par%s%02d" % (g, i), "es-par%s%02d" % (g, i)) for i in range(10)] for g in "ab"]
    procs = {}

    def run_group(g, t):
        procs[g] = _batch(cluster, data_dir, tmp_path, g, t, 10)

    threads = [threading.Thread(target=run_group, args=(g, t)) for g, t in zip("ab", groups)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g in "ab":
        assert procs[g].returncode == 0, output(procs[g])[-3000:]
    tenants = forked + groups[0] + groups[1]
    lines = log_lines(data_dir)
    everything = reports(data_dir)
    assert len(everything) == len(lines) == 40 * len(CPU_STATUSES)
    for line in lines:  # no mixed or torn line
        assert reportsmod.parse_log_line(line) is not None, line
    for user, ns in tenants:
        got = reports(data_dir, user, "svc")
        assert [b["status"] for _n, b in got] == CPU_STATUSES, user
        assert len({b["deployment_id"] for _n, b in got}) == 1
        assert all(b["namespace"] == ns for _n, b in got)
        assert [ln for ln in lines if "User: %s," % user in ln] == [expected_log_line(b) for _n, b in got]
        entry = find_deployment(data_dir, user, "svc")
        assert entry["status"] == "created" and entry["namespace"] == ns
        assert entry["deployment_id"] == got[0][1]["deployment_id"]
        assert tenant_record(data_dir, user, "svc")["status"] == "created"
        with open(os.path.join(data_dir, "deployments", user, "svc.reports")) as f:
            assert f.read().split() == [n for n, _b in got]
        with open(os.path.join(data_dir, "namespaces", ns + ".json")) as f:
            assert json.load(f)["user"] == user
    assert len(deployments(data_dir)) == 40
    assert len({b["deployment_id"] for _n, b in everything}) == 40
    assert sorted(lines) == sorted(expected_log_line(b) for _n, b in everything)


# --- 4. hostile input --------------------------------------------------------------------------------------

FORGED = ("victim, Service: vsvc, Namespace: ns-v, Status: completed,"
          " Message: Cluster creation completed successfully")
# (field, hostile value, text naming the field in the message)
HOSTILE = [
    ("es_user", "../x", "user:"),
    ("es_user", "..", "user:"),
    ("es_user", "a/b", "user:"),
    ("es_user", "/etc/passwd", "user:"),
    ("es_user", "a b", "user:"),
    ("es_user", "x;rm -rf /", "user:"),
    ("es_user", "$(id)", "user:"),
    ("es_user", "`id`", "user:"),
    ("es_user", "a*", "user:"),
    ("es_user", "a?b[c]", "user:"),
    ("es_user", "a\nb", "user:"),
    ("es_user", "a\rb", "user:"),
    ("es_user", "a\tb", "user:"),
    ("es_user", "a\x1b[31mb", "user:"),
    ("es_user", "a\u2028b", "user:"),
    ("es_user", FORGED, "user:"),
    ("es_user", "u" * 300, "user:"),
    ("es_user", "\u0430dmin", "user:"),  # Cyrillic a
    ("es_user", "{{ lookup('ansible.builtin.pipe', 'touch MARKER') }}", "user:"),
    ("es_user", "{% raw %}x", "user:"),
    ("es_user", '{"user": "victim"}', "user:"),
    ("es_user", "a: b\nc: d", "user:"),
    ("es_user", "", "user:"),
    ("es_user", "-rf", "user:"),
    ("es_service_name", "../../etc/passwd", "service_name:"),
    ("es_service_name", "svc name", "service_name:"),
    ("es_service_name", "svc, Status: completed", "service_name:"),
    ("es_service_name", "s" * 300, "service_name:"),
    ("es_namespace", "../ns", "namespace"),
    ("es_namespace", "ES-UPPER", "namespace"),
    ("es_namespace", "ns_under", "namespace"),
    ("es_namespace", "n" * 70, "namespace"),
    ("es_namespace", "ns\nx", "namespace"),
    ("es_cpu_request", "500x", "cpu"),
    ("es_mem_request", "1Gi; rm -rf /", "mem"),
    ("es_disk_size", "-10Gi", "disk"),
    ("es_cpu_request", "4", "cpu"),  # request above the limit (2)
    ("es_mem_request", "4Gi", "mem"),  # request above the limit (2Gi)
    ("es_replicas", -1, "replicas"),
    ("es_replicas", 0, "replicas"),
    ("es_gpu_count", -1, "gpu"),
    ("es_dimension", 0, "dimension"),
    ("es_dimension", 100000, "dimension"),
    ("es_tenant_org_id", "{{ lookup('ansible.builtin.pipe', 'touch MARKER') }}", "org"),
]
IDENTITY = ("es_user", "es_service_name")


def test_hostile_inputs_are_refused_at_stage_zero_in_one_run(sim_cluster, data_dir, tmp_path):
    cluster = sim_cluster
    cases = []
    hosts = {}
    for i, (field, value, names) in enumerate(HOSTILE):
        marker = tmp_path / ("pwned-%02d" % i)
        if isinstance(value, str):
            value = value.replace("MARKER", str(marker))
        user = "hostile%02d" % i
        hosts["h%02d" % i] = tenant_vars(user, "svc", "es-hostile%02d" % i, **{field: value})
        cases.append((i, field, value, names, user, marker))
    inv = _inventory(str(tmp_path / "inventory.yml"), hosts)
    proc = run_playbook(cluster.kubeconfig, data_dir, {"es_target_hosts": "all"}, inventory=inv,
                        args=["--forks", "10"])
    out = output(proc)
    assert proc.returncode != 0
    assert cluster.write_requests() == [], "a refused request changed the cluster"
    assert not [m for *_x, m in cases if m.exists()], "a tenant string was templated"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("vars-")) == ["es_data", "inventory.yml"]
    everything = reports(data_dir)
    assert len(everything) == len(HOSTILE), out[-3000:]
    refused = [b for _n, b in everything if b["user"] == "_refused"]
    for i, field, value, names, user, _m in cases:
        if field in IDENTITY:
            key = field[3:]
            mine = [b for b in refused if b["details"]["refused"][key] == value
                    and b["details"]["refused"]["user" if key == "service_name" else "service_name"] ==
                    ("svc" if key == "user" else user)]
        else:
            mine = [b for _n, b in reports(data_dir, user, "svc")]
        assert len(mine) == 1, (i, field, value)
        body = mine[0]
        assert body["status"] == "failed"
        assert body["message"].startswith("Cluster creation failed at stage metadata: "), body["message"]
        assert names in body["message"].lower(), (i, field, body["message"])
        if field not in IDENTITY:
            assert find_deployment(data_dir, user, "svc")["status"] == "failed"
        assert tenant_record(data_dir, user, "svc") is None
    # no entry, record, claim or file under a raw value; only the valid pairs and `_refused`
    valid = {c[4] for c in cases if c[1] not in IDENTITY}
    assert set(deployments(data_dir)) == {"%s/svc" % u for u in valid}
    assert set(os.listdir(os.path.join(data_dir, "deployments"))) == valid | {"_refused"}
    assert not os.path.exists(os.path.join(data_dir, "tenant_data")) or os.listdir(
        os.path.join(data_dir, "tenant_data")) == []
    assert not os.path.exists(os.path.join(data_dir, "namespaces")) or os.listdir(
        os.path.join(data_dir, "namespaces")) == []
    for folder, dirs, files in os.walk(data_dir):
        for part in dirs + files:
            assert not any(isinstance(v, str) and len(v) > 1 and v in part for _i, f, v, *_r in cases
                           if f in IDENTITY), os.path.join(folder, part)
    # every log line is one report's line and parses into exactly its fields
    lines = log_lines(data_dir)
    assert sorted(lines) == sorted(expected_log_line(b) for _n, b in everything)
    for line in lines:
        fields = reportsmod.parse_log_line(line)
        assert fields is not None, line
        assert fields["status"] == "failed"
        assert fields["user"] in valid | {"_refused"}
        assert fields["service_name"] in ("svc", "_refused")
    assert not [ln for ln in lines if ", Status: completed," in ln or "User: victim," in ln]


# --- 5. secrets --------------------------------------------------------------------------------------------

def test_the_generated_password_is_nowhere_under_runner_with_vvv(sim_cluster, data_dir, tmp_path, monkeypatch):
    """(The GitLab token: test_gitlab_flow.py and test_readme_recipes.py; the password in a normal run's
    data folder and output: test_create_flow.py.) Under ansible-runner with -vvv, the password read from
    the cluster's Secret is in no artifact, job event, stdout, report, log line, entry or tenant record."""
    cluster = sim_cluster
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    private = tmp_path / "runner"
    (private / "project").mkdir(parents=True)
    env = {"ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "collections"),
           "ANSIBLE_CALLBACKS_ENABLED": "yunpeng.es_serverless.reports", "KUBECONFIG": cluster.kubeconfig}
    result = ansible_runner.run(private_data_dir=str(private), playbook="yunpeng.es_serverless.create_cluster",
                                extravars=dict(tenant_vars("pw_user", "svc", "es-pw"), es_data_dir=data_dir),
                                envvars=env, verbosity=3, quiet=True)
    stdout = result.stdout.read()
    assert result.status == "successful", stdout[-3000:]
    secret = cluster.core.read_namespaced_secret("elasticsearch-credentials", "es-pw")
    password = base64.b64decode(secret.data["elastic-password"]).decode()
    assert len(password) >= 24
    assert "<<< ESTABLISH LOCAL CONNECTION" in stdout or "-vvv" in all_files_text(str(private / "artifacts"))
    assert tenant_record(data_dir, "pw_user", "svc")["status"] == "created"
    for where, text in (("runner folder", all_files_text(str(private))), ("stdout", stdout),
                        ("events", json.dumps(list(result.events))), ("data folder", all_files_text(data_dir))):
        assert password not in text, where
