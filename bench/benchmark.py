"""The benchmark of the create flow (``bench/run``): see bench/README.md.

Every measured run gets a fresh Kubernetes API simulator (this repository's
``tests/kubesim``, started as ``python -m tests.kubesim``) and a fresh data
folder under /tmp. The playbook of ``--repo`` runs with ``cwd=--repo`` so its
own ansible.cfg (collections path, report callback) is used. Figures are
printed and written to ``bench/results/<label>.json``; nothing is asserted.
"""

import argparse
import base64
import datetime
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import ssl
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
CLUSTER_SH = os.path.join(BENCH_DIR, "cluster.sh")
PARTS = ("create", "batch", "query", "kubectl")
STAGE_ORDER = ("starting", "namespace_created", "gitlab_pulled", "k8s_applied", "resources_configured",
               "disk_configured", "gpu_configured", "rollout_completed", "tenant_synced", "completed", "failed", "tail")
STAGE_LABELS = {"starting": "start -> starting (startup, stage 0)", "tail": "tail (last report -> exit)"}
REPORT_NAME_RE = re.compile(r"^(?P<prefix>.*)_(?P<ts>[0-9]{8}T[0-9]{6}\.[0-9]{6})Z\.json$")
PLAYBOOK = os.path.join("playbooks", "create_cluster.yml")
RUN_TIMEOUT = 1800

# The sandbox tenant (inventories/sandbox/hosts.yml).
SANDBOX_TENANT = {
    "es_user": "test_user", "es_service_name": "test_service", "es_namespace": "es-test",
    "es_replicas": 1, "es_cpu_request": "500m", "es_cpu_limit": "2", "es_mem_request": "1Gi",
    "es_mem_limit": "2Gi", "es_disk_size": "10Gi", "es_gpu_count": 0, "es_dimension": 128,
    "es_vector_count": 10000, "es_index_limit": 100, "es_tenant_org_id": "test-org",
}
HOST_VARS = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}


# ----------------------------------------------------------------------------- small helpers
def log(msg=""):
    print(msg, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, unit="", digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return ("%%.%df%%s" % digits) % (value, unit)
    return "%s%s" % (value, unit)


def table(headers, rows):
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def tail_of(path, lines=30):
    try:
        with open(path, errors="replace") as handle:
            return handle.read().splitlines()[-lines:]
    except OSError:
        return []


def git_info(repo):
    def git(*args):
        try:
            return subprocess.run(["git", "-C", repo] + list(args), capture_output=True, text=True,
                                  timeout=30, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def venv_tool(name):
    """A console script next to the running Python (the project venv), else on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.access(candidate, os.X_OK) else shutil.which(name)


def kill_tree(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


# ----------------------------------------------------------------------------- the simulator
class Simulator:
    """``python -m tests.kubesim`` of the bench's repository, in a process of its own."""

    def __init__(self, workdir, args):
        self.workdir = workdir
        self.kubeconfig = os.path.join(workdir, "kubeconfig")
        self.args = args
        self.proc = None

    def __enter__(self):
        cmd = [sys.executable, "-m", "tests.kubesim", "--kubeconfig", self.kubeconfig, "--port", "0",
               "--ready-delay", str(self.args.ready_delay), "--node-gpus", str(self.args.node_gpus),
               "--node-cpu", str(self.args.node_cpu), "--node-memory", str(self.args.node_memory)]
        self.logfile = open(os.path.join(self.workdir, "kubesim.log"), "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.logfile, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.kubeconfig):
            if self.proc.poll() is not None:
                raise RuntimeError("the simulator exited with %s: %s" % (
                    self.proc.returncode, " | ".join(tail_of(self.logfile.name, 10))))
            if time.monotonic() > deadline:
                raise RuntimeError("the simulator did not write its kubeconfig within 60 s")
            time.sleep(0.05)
        import yaml

        with open(self.kubeconfig) as handle:
            cfg = yaml.safe_load(handle)
        cluster = cfg["clusters"][0]["cluster"]
        self.url = cluster["server"]
        self.token = cfg["users"][0]["user"]["token"]
        self.ssl = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        return self

    def requests(self):
        """The request log. Admin requests (``/kubesim/...``, the only ones the bench sends) are not in it."""
        req = urllib.request.Request(self.url + "/kubesim/requests", headers={"Authorization": "Bearer " + self.token})
        with urllib.request.urlopen(req, context=self.ssl, timeout=60) as resp:
            return json.loads(resp.read())["items"]

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc)
                self.proc.wait()
            self.logfile.close()
        return False


def classify(entry):
    """``(verb, resource)`` of one logged request: GET/LIST/WATCH/POST/PUT/PATCH/DELETE(COLLECTION)."""
    path = entry.get("path", "")
    query = entry.get("query") or ""
    method = entry.get("method", "")
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        rest = None
    if not rest:  # /version, /api, /apis, /api/v1, /apis/G/V, /openapi/...
        return method, "discovery"
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        rest = rest[2:]
    resource = rest[0] if not group else "%s/%s" % (group, rest[0])
    if len(rest) >= 3:
        resource += "/" + rest[2]
    collection = len(rest) == 1
    if method == "GET":
        if re.search(r"(^|&)watch=(true|1)(&|$)", query):
            return "WATCH", resource
        return ("LIST" if collection else "GET"), resource
    if method == "DELETE" and collection:
        return "DELETECOLLECTION", resource
    return method, resource


def count_requests(entries):
    by_verb, by_resource, by_both, agents = {}, {}, {}, {}
    for entry in entries:
        verb, resource = classify(entry)
        by_verb[verb] = by_verb.get(verb, 0) + 1
        by_resource[resource] = by_resource.get(resource, 0) + 1
        key = "%s %s" % (verb, resource)
        by_both[key] = by_both.get(key, 0) + 1
        agent = (entry.get("user_agent") or "").split(" ")[0]
        agents[agent] = agents.get(agent, 0) + 1
    return {"total": len(entries), "by_verb": by_verb, "by_resource": by_resource,
            "by_verb_resource": dict(sorted(by_both.items(), key=lambda kv: (-kv[1], kv[0]))),
            "user_agents": agents,
            "errors": sum(1 for e in entries if (e.get("status") or 0) >= 400)}


# ----------------------------------------------------------------------------- memory
class MemorySampler(threading.Thread):
    """Peak of the summed RSS (every ``interval``) and PSS (every ``pss_interval``) of a process and all its
    descendants. PSS needs /proc/PID/smaps_rollup, about 1 ms of kernel time per process here, so with a
    hundred processes it cannot be read every 0.1 s without taking most of a core from the measured run."""

    def __init__(self, pid, interval=0.1, pss_interval=1.0):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.pss_every = max(1, int(round(pss_interval / interval)))
        self.done = threading.Event()
        self.peak_rss = self.peak_pss = 0
        self.procs_at_peak = self.max_procs = self.samples = self.pss_samples = 0
        self.pss_available = True
        self.cpu_s = self.duration = 0.0

    def sample(self):
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except self.psutil.Error:
            return
        with_pss = self.pss_available and self.samples % self.pss_every == 0
        rss = pss = 0
        for proc in procs:
            try:
                if with_pss:
                    info = proc.memory_full_info()
                    rss += info.rss
                    pss += getattr(info, "pss", 0)
                    if not hasattr(info, "pss"):
                        self.pss_available = False
                else:
                    rss += proc.memory_info().rss
            except self.psutil.AccessDenied:
                self.pss_available = False
            except self.psutil.Error:
                pass
        self.samples += 1
        self.max_procs = max(self.max_procs, len(procs))
        if rss > self.peak_rss:
            self.peak_rss, self.procs_at_peak = rss, len(procs)
        if with_pss:
            self.pss_samples += 1
            self.peak_pss = max(self.peak_pss, pss)

    def run(self):
        start, self.started = time.thread_time(), time.monotonic()
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)
        self.cpu_s = time.thread_time() - start
        self.duration = time.monotonic() - self.started

    def stop(self):
        self.done.set()
        self.join(10)
        mb = 1024.0 * 1024.0
        return {"peak_rss_sum_mb": round(self.peak_rss / mb, 1),
                "peak_pss_sum_mb": round(self.peak_pss / mb, 1) if self.pss_available else None,
                "processes_at_rss_peak": self.procs_at_peak, "max_processes": self.max_procs,
                "samples": self.samples, "interval_s": self.interval, "pss_samples": self.pss_samples,
                "effective_interval_s": round(self.duration / self.samples, 3) if self.samples else None,
                "pss_interval_s": round(self.interval * self.pss_every, 2), "sampler_cpu_s": round(self.cpu_s, 2),
                "what": "sums over ansible-playbook and all its descendants: RSS-sum counts a page shared by n "
                        "processes n times (an upper bound), PSS-sum splits it among them (the memory really "
                        "used); the target is checked on PSS-sum"}


# ----------------------------------------------------------------------------- running things
class CpuMeter:
    """CPU seconds of a measured run: the waited-for process tree (RUSAGE_CHILDREN), the simulator, and the
    rest of the machine (another user's jobs make a run slower; this says how much else was running)."""

    def __init__(self, sim_pid=None):
        self.sim_pid = sim_pid
        try:
            import psutil

            self.psutil = psutil
        except ImportError:
            self.psutil = None

    def _sim(self):
        try:
            times = self.psutil.Process(self.sim_pid).cpu_times()
            return times.user + times.system
        except Exception:  # noqa: BLE001
            return None

    def _busy(self):
        times = self.psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def start(self):
        self.load = os.getloadavg()[0]
        self.children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.me = resource.getrusage(resource.RUSAGE_SELF)
        if self.psutil:
            self.sim0 = self._sim() if self.sim_pid else None
            self.busy0 = self._busy()
        return self

    def stop(self):
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        tree = (children.ru_utime - self.children.ru_utime) + (children.ru_stime - self.children.ru_stime)
        bench = (me.ru_utime - self.me.ru_utime) + (me.ru_stime - self.me.ru_stime)
        out = {"tree_cpu_s": round(tree, 2), "bench_cpu_s": round(bench, 2), "load_avg_1m_at_start": self.load}
        if self.psutil:
            sim1 = self._sim() if self.sim_pid else None
            sim = (sim1 - self.sim0) if sim1 is not None and self.sim0 is not None else 0.0
            busy = self._busy() - self.busy0
            out["simulator_cpu_s"] = round(sim, 2)
            out["other_cpu_s"] = round(max(0.0, busy - tree - bench - sim), 2)
        return out


def ansible_env(kubeconfig=None):
    """The environment of every ansible run: no ANSIBLE_* of the caller, so --repo's ansible.cfg decides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "ES_SERVERLESS_DATA_DIR"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["ANSIBLE_NOCOLOR"] = "1"
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return env


WAIT_IDLE = {"seconds": 0.0}


def wait_idle(threshold=0.25, window=2.0):
    """With --wait-idle S: wait up to S seconds until the rest of the machine uses less than ``threshold``
    of a core over ``window`` seconds (the bench itself is idle while waiting). Returns the seconds waited."""
    limit = WAIT_IDLE["seconds"]
    if not limit:
        return 0.0
    try:
        import psutil
    except ImportError:
        return 0.0
    start = time.monotonic()
    while True:
        before = psutil.cpu_times()
        time.sleep(window)
        after = psutil.cpu_times()
        busy = (sum(after) - after.idle - getattr(after, "iowait", 0.0)) - (
            sum(before) - before.idle - getattr(before, "iowait", 0.0))
        waited = time.monotonic() - start
        if busy / window < threshold or waited >= limit:
            if waited > window + 0.5:
                log("  waited %.0fs for the machine to be idle (%s)" % (
                    waited, "idle" if busy / window < threshold else "still %.1f cores busy" % (busy / window)))
            return round(waited, 1)


def run_process(cmd, cwd, env, logpath, sample_memory=False, timeout=RUN_TIMEOUT, sim_pid=None):
    """Run one command; wall time, start/end (epoch, as the report file names are), rc, cpu, memory."""
    waited = wait_idle()
    meter = CpuMeter(sim_pid).start()
    with open(logpath, "w") as out:
        start_epoch = time.time()
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = None
        if sample_memory:
            try:
                sampler = MemorySampler(proc.pid)
                sampler.start()
            except Exception as exc:  # noqa: BLE001 - a missing psutil must not stop the run
                log("  memory sampling unavailable: %s" % exc)
                sampler = None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            rc = proc.wait()
            rc = "timeout after %ds" % timeout
        wall = time.monotonic() - start
        end_epoch = time.time()
    result = {"rc": rc, "wall_s": round(wall, 3), "start_epoch": start_epoch, "end_epoch": end_epoch,
              "cpu": meter.stop(), "waited_idle_s": waited}
    if sampler is not None:
        result["memory"] = sampler.stop()
    if rc != 0:
        result["output_tail"] = tail_of(logpath, 25)
    return result


def tenant_inventory_yaml(data):
    """The inventory as YAML, the tenant strings tagged ``!unsafe`` (never templated), as every entry
    point that passes tenant strings must (the collection's plugins/plugin_utils/extravars.py)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "collections"))
    from ansible_collections.yunpeng.es_serverless.plugins.plugin_utils.extravars import dump_yaml, mark_unsafe

    def tag(host):
        return dict((k, mark_unsafe(v) if k.startswith("es_") else v) for k, v in host.items())
    return dump_yaml({"all": dict(data["all"], hosts=dict((name, tag(host))
                                                          for name, host in data["all"]["hosts"].items()))})


def inventory(path, tenants, batch):
    """Write an inventory: ``localhost`` with the one tenant, or one host per tenant for a batch."""
    if batch:
        data = {"all": {"vars": dict(HOST_VARS),
                        "hosts": {"tenant-%s" % t["es_user"]: t for t in tenants}}}
    else:
        host = dict(HOST_VARS)
        host.update(tenants[0])
        data = {"all": {"hosts": {"localhost": host}}}
    with open(path, "w") as handle:
        handle.write(tenant_inventory_yaml(data))
    return path


def batch_tenant(i, prefix="bench"):
    tenant = dict(SANDBOX_TENANT)
    tenant.update({"es_user": "%s%03d" % (prefix, i), "es_service_name": "search",
                   "es_namespace": "es-%s%03d" % (prefix, i)})
    return tenant


def read_reports(data_dir):
    """Every report file: ``{"file", "t" (epoch from the file name, microseconds), "status", "user", ...}``."""
    directory = os.path.join(data_dir, "deployment_reports")
    out = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return out
    for name in names:
        match = REPORT_NAME_RE.match(name)
        if not match:
            continue
        when = datetime.datetime.strptime(match.group("ts"), "%Y%m%dT%H%M%S.%f").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        try:
            with open(os.path.join(directory, name)) as handle:
                body = json.load(handle)
        except (OSError, ValueError):
            body = {}
        out.append({"file": name, "t": when, "status": body.get("status"), "user": body.get("user"),
                    "service_name": body.get("service_name"), "deployment_id": body.get("deployment_id"),
                    "timestamp": body.get("timestamp")})
    out.sort(key=lambda r: r["t"])
    return out


def stage_breakdown(reports, start_epoch, end_epoch):
    """Seconds per stage: process start -> first report, report -> report, last report -> process end."""
    stages, prev = [], start_epoch
    for report in reports:
        stages.append({"stage": report["status"], "s": round(report["t"] - prev, 3)})
        prev = report["t"]
    stages.append({"stage": "tail", "s": round(end_epoch - prev, 3)})
    return stages


def tenant_outcomes(reports, tenants):
    """Which tenants reached ``completed``; the others with their last status."""
    by_user = {}
    for report in reports:
        by_user.setdefault((report["user"], report["service_name"]), []).append(report)
    completed, failures = 0, []
    for tenant in tenants:
        got = by_user.get((tenant["es_user"], tenant["es_service_name"]), [])
        if any(r["status"] == "completed" for r in got):
            completed += 1
        else:
            failures.append({"user": tenant["es_user"], "service_name": tenant["es_service_name"],
                             "reports": len(got), "last_status": got[-1]["status"] if got else None})
    return completed, failures


def median_stages(runs):
    values = {}
    for run in runs:
        for stage in run.get("stages", []):
            values.setdefault(stage["stage"], []).append(stage["s"])
    ordered = sorted(values, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER))
    return {stage: round(median(values[stage]), 3) for stage in ordered}


class Workdir:
    """A fresh temporary folder, removed afterwards unless --keep."""

    def __init__(self, args, prefix):
        self.args, self.prefix = args, prefix

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="es-bench-%s-" % self.prefix, dir=self.args.tmp)
        return self.path

    def __exit__(self, *exc):
        if self.args.keep:
            log("  kept %s" % self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
        return False


def playbook_run(args, tenants, batch, prefix, sample_memory=False, data_dir=None, want_requests=False):
    """One measured ``ansible-playbook`` run on a fresh simulator (and a fresh data folder unless given)."""
    with Workdir(args, prefix) as work, Simulator(work, args) as sim:
        data = data_dir or os.path.join(work, "data")
        inv = inventory(os.path.join(work, "hosts.yml"), tenants, batch)
        cmd = [args.ansible_playbook, PLAYBOOK, "-i", inv, "-e", "es_data_dir=" + data]
        if batch:
            cmd += ["-e", "es_target_hosts=all", "--forks", str(min(len(tenants), args.forks or len(tenants)))]
        cmd += args.playbook_arg
        result = run_process(cmd, args.repo, ansible_env(sim.kubeconfig), os.path.join(work, "ansible.log"),
                             sample_memory=sample_memory, sim_pid=sim.proc.pid)
        reports = read_reports(data)
        if data_dir:  # a shared folder: only this run's reports
            names = {(t["es_user"], t["es_service_name"]) for t in tenants}
            reports = [r for r in reports if (r["user"], r["service_name"]) in names
                       and r["t"] >= result["start_epoch"] - 1]
        completed, failures = tenant_outcomes(reports, tenants)
        result.update({"tenants": len(tenants), "completed": completed, "failures": failures,
                       "reports": len(reports)})
        if len(tenants) == 1:
            result["stages"] = stage_breakdown(reports, result["start_epoch"], result["end_epoch"])
        try:
            entries = sim.requests()
            result["api_requests_total"] = len(entries)
            if want_requests:
                result["api_requests"] = count_requests(entries)
                result["api_request_log"] = [
                    {"method": e.get("method"), "path": e.get("path"), "query": e.get("query"),
                     "status": e.get("status")} for e in entries]
        except Exception as exc:  # noqa: BLE001
            result["api_requests_error"] = str(exc)
    return result


def kubectl_run(args, tenants, prefix, want_requests=False):
    """N ``bench/cluster.sh create`` at once on a fresh simulator and data folder."""
    with Workdir(args, prefix) as work, Simulator(work, args) as sim:
        data = os.path.join(work, "data")
        os.makedirs(data)
        env = dict(os.environ)
        env.update({"KUBECONFIG": sim.kubeconfig, "KUBECTL": args.kubectl,
                    "KUBECACHEDIR": os.path.join(work, "kube-cache")})
        procs, logs, handles = [], {}, []
        waited = wait_idle()
        meter = CpuMeter(sim.proc.pid).start()
        start_epoch, start = time.time(), time.monotonic()
        for t in tenants:
            cmd = ["bash", CLUSTER_SH, "create", "--user", t["es_user"], "--service", t["es_service_name"],
                   "--namespace", t["es_namespace"], "--data-dir", data, "--replicas", str(t["es_replicas"]),
                   "--cpu-request", t["es_cpu_request"], "--cpu-limit", t["es_cpu_limit"],
                   "--mem-request", t["es_mem_request"], "--mem-limit", t["es_mem_limit"],
                   "--disk-size", t["es_disk_size"], "--gpu-count", str(t["es_gpu_count"]),
                   "--dimension", str(t["es_dimension"]), "--vector-count", str(t["es_vector_count"]),
                   "--index-limit", str(t["es_index_limit"]), "--tenant-org-id", t["es_tenant_org_id"]]
            logs[t["es_user"]] = os.path.join(work, "cluster-%s.log" % t["es_user"])
            handles.append(open(logs[t["es_user"]], "w"))
            procs.append(subprocess.Popen(cmd, env=env, stdout=handles[-1], stderr=subprocess.STDOUT,
                                          start_new_session=True))
        rcs = []
        deadline = time.monotonic() + RUN_TIMEOUT
        for proc in procs:
            try:
                rcs.append(proc.wait(timeout=max(1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                kill_tree(proc)
                proc.wait()
                rcs.append("timeout")
        for handle in handles:
            handle.close()
        wall = time.monotonic() - start
        end_epoch = time.time()
        cpu = meter.stop()
        reports = read_reports(data)
        completed, failures = tenant_outcomes(reports, tenants)
        result = {"wall_s": round(wall, 3), "start_epoch": start_epoch, "end_epoch": end_epoch, "cpu": cpu,
                  "waited_idle_s": waited,
                  "rc": 0 if all(rc == 0 for rc in rcs) else [rc for rc in rcs if rc != 0],
                  "tenants": len(tenants), "completed": completed, "failures": failures, "reports": len(reports)}
        if failures:
            result["output_tail"] = tail_of(logs[failures[0]["user"]], 15)
        if len(tenants) == 1:
            result["stages"] = stage_breakdown(reports, start_epoch, end_epoch)
        try:
            entries = sim.requests()
            result["api_requests_total"] = len(entries)
            if want_requests:
                result["api_requests"] = count_requests(entries)
        except Exception as exc:  # noqa: BLE001
            result["api_requests_error"] = str(exc)
    return result


def cpu_text(run):
    cpu = run.get("cpu") or {}
    text = "cpu %.1fs" % cpu.get("tree_cpu_s", 0)
    if "other_cpu_s" in cpu:
        text += ", simulator %.1fs, other processes %.1fs" % (cpu["simulator_cpu_s"], cpu["other_cpu_s"])
    return text


def strip_epochs(run):
    return {k: v for k, v in run.items() if k not in ("start_epoch", "end_epoch")}


# ----------------------------------------------------------------------------- part 1+2: one create
def part_create(args, results):
    log("== create: one tenant (sandbox vars), %d run(s), ready delay %.2fs" % (args.repeat, args.ready_delay))
    runs = []
    for n in range(args.repeat):
        run = playbook_run(args, [dict(SANDBOX_TENANT)], batch=False, prefix="create", want_requests=(n == 0))
        runs.append(run)
        log("  run %d: %.2fs rc=%s reports=%d completed=%d api_requests=%s (%s)" % (
            n + 1, run["wall_s"], run["rc"], run["reports"], run["completed"], run.get("api_requests_total"),
            cpu_text(run)))
        if run["rc"] != 0:
            log("    " + "\n    ".join(run.get("output_tail", [])[-8:]))
    first = runs[0]
    out = {
        "runs": [strip_epochs({k: v for k, v in r.items() if k not in ("api_requests", "api_request_log")})
                 for r in runs],
        "median_wall_s": round(median([r["wall_s"] for r in runs]), 3),
        "stages_median_s": median_stages([r for r in runs if r["rc"] == 0] or runs),
        "all_completed": all(r["completed"] == 1 for r in runs),
        "api_requests": first.get("api_requests"),
        "api_request_log": first.get("api_request_log"),
    }
    results["create"] = out
    print_create(out)


def print_create(out):
    log("\none tenant create: median %.2fs of %d (%s)" % (
        out["median_wall_s"], len(out["runs"]), ", ".join("%.2f" % r["wall_s"] for r in out["runs"])))
    rows = [[STAGE_LABELS.get(s, s), fmt(v, "s")] for s, v in out["stages_median_s"].items()]
    log(table(["stage (median)", "time"], rows))
    req = out.get("api_requests")
    if req:
        log("\nKubernetes API requests of one create: %d (%d answered >= 400)" % (req["total"], req["errors"]))
        log(table(["verb", "count"], sorted(req["by_verb"].items(), key=lambda kv: -kv[1])))
        log(table(["verb resource", "count"], list(req["by_verb_resource"].items())))


# ----------------------------------------------------------------------------- part 3+4: batches
def part_batch(args, results):
    sizes = args.sizes
    biggest = max(sizes)
    out = results.get("batch") or {}
    for size in sizes:
        log("== batch: %d tenant(s) in one ansible-playbook run, --forks %d%s" % (
            size, size, ", sampling controller memory" if size == biggest and args.memory else ""))
        try:
            tenants = [batch_tenant(i) for i in range(1, size + 1)]
            run = playbook_run(args, tenants, batch=True, prefix="batch%d" % size,
                               sample_memory=(size == biggest and args.memory))
            run = strip_epochs(run)
            run["tenants_per_min"] = round(size * 60.0 / run["wall_s"], 2)
            run["api_requests_per_tenant"] = round(run["api_requests_total"] / size, 1) \
                if run.get("api_requests_total") else None
            out[str(size)] = run
            log("  %.2fs rc=%s completed %d/%d, %.1f tenants/min, %s API requests per tenant (%s)" % (
                run["wall_s"], run["rc"], run["completed"], size, run["tenants_per_min"],
                run["api_requests_per_tenant"], cpu_text(run)))
            if run.get("memory"):
                mem = run["memory"]
                log("  controller memory peak: PSS-sum %s MB, RSS-sum %s MB (%d processes at the RSS peak, "
                    "%d samples, sampler cpu %.1fs)" % (mem["peak_pss_sum_mb"], mem["peak_rss_sum_mb"],
                                                        mem["processes_at_rss_peak"], mem["samples"],
                                                        mem["sampler_cpu_s"]))
            if run["failures"]:
                log("  not completed: %s" % ", ".join("%s (%s)" % (f["user"], f["last_status"])
                                                      for f in run["failures"][:10]))
            if run["rc"] != 0:
                log("    " + "\n    ".join(run.get("output_tail", [])[-8:]))
        except Exception as exc:  # noqa: BLE001 - one size failing must not stop the others
            out[str(size)] = {"error": "%s: %s" % (type(exc).__name__, exc)}
            log("  FAILED: %s" % exc)
            traceback.print_exc()
    results["batch"] = out


# ----------------------------------------------------------------------------- part 6: kubectl script
def part_kubectl(args, results):
    missing = [tool for tool in (args.kubectl, "jq", "flock", "bash") if not shutil.which(tool)]
    if missing:
        raise RuntimeError("bench/cluster.sh needs %s" % ", ".join(missing))
    out = results.get("kubectl") or {}
    out["kubectl"] = subprocess.run([args.kubectl, "version", "--client"], capture_output=True,
                                    text=True, check=False).stdout.strip().splitlines()[:1]
    for size in args.sizes:
        try:
            if size == 1:
                log("== kubectl: bench/cluster.sh for one tenant (sandbox vars), %d run(s)" % args.repeat)
                runs = []
                for n in range(args.repeat):
                    run = kubectl_run(args, [dict(SANDBOX_TENANT)], "kubectl1", want_requests=(n == 0))
                    runs.append(run)
                    log("  run %d: %.2fs rc=%s reports=%d completed=%d api_requests=%s (%s)" % (
                        n + 1, run["wall_s"], run["rc"], run["reports"], run["completed"],
                        run.get("api_requests_total"), cpu_text(run)))
                entry = {"runs": [strip_epochs({k: v for k, v in r.items() if k != "api_requests"}) for r in runs],
                         "wall_s": round(median([r["wall_s"] for r in runs]), 3),
                         "stages_median_s": median_stages(runs),
                         "completed": min(r["completed"] for r in runs), "tenants": 1,
                         "failures": [f for r in runs for f in r["failures"]],
                         "api_requests": runs[0].get("api_requests")}
                log(table(["kubectl stage (median)", "time"],
                          [[STAGE_LABELS.get(s, s), fmt(v, "s")] for s, v in entry["stages_median_s"].items()]))
            else:
                log("== kubectl: %d bench/cluster.sh at once" % size)
                tenants = [batch_tenant(i, prefix="kube") for i in range(1, size + 1)]
                entry = strip_epochs(kubectl_run(args, tenants, "kubectl%d" % size))
                log("  %.2fs completed %d/%d (%s)" % (entry["wall_s"], entry["completed"], size, cpu_text(entry)))
            entry["tenants_per_min"] = round(size * 60.0 / entry["wall_s"], 2)
            out[str(size)] = entry
            if entry["failures"]:
                log("  not completed: %s" % ", ".join("%s (%s)" % (f["user"], f["last_status"])
                                                      for f in entry["failures"][:10]))
        except Exception as exc:  # noqa: BLE001
            out[str(size)] = {"error": "%s: %s" % (type(exc).__name__, exc)}
            log("  FAILED: %s" % exc)
            traceback.print_exc()
    results["kubectl"] = out


# ----------------------------------------------------------------------------- part 5: query
FLOW = ["starting", "namespace_created", "gitlab_pulled", "k8s_applied", "resources_configured", "disk_configured",
        "gpu_configured", "rollout_completed", "tenant_synced", "completed"]
MESSAGES = {
    "starting": "Starting cluster creation", "namespace_created": "Namespace created successfully",
    "gitlab_pulled": "GitLab pull skipped: no GitLab URL configured",
    "k8s_applied": "Kubernetes resources applied successfully",
    "resources_configured": "Cluster resources configured successfully",
    "disk_configured": "Disk size configured to {disk_size}", "gpu_configured": "GPU count configured to {gpu_count}",
    "rollout_completed": "Cluster rollout completed successfully",
    "tenant_synced": "Data synced to tenant container management",
    "completed": "Cluster creation completed successfully",
}
OBJECTS = [("ConfigMap", "v1", "elasticsearch-config"), ("Service", "v1", "elasticsearch"),
           ("Service", "v1", "elasticsearch-headless"), ("Service", "v1", "kibana"),
           ("StatefulSet", "apps/v1", "elasticsearch"), ("Deployment", "apps/v1", "kibana")]


def _dump(obj):
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _stamp(epoch):
    when = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ"), when.strftime("%Y%m%dT%H%M%S.%fZ")


def generate_store(data_dir, tenants, total_reports, seed=8):
    """A data folder in the documented layout (deployments.json, tenant_data/, deployment_reports/, the log),
    written directly, with the shapes a real run writes. Tenants are created one after the other (one minute
    apart); each has ``total_reports / tenants`` reports: its completed deployment (the GPU flow, 10 reports, for
    even tenants, 9 otherwise) after earlier failed attempts that fill the rest. Returns the tenants' list."""
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase + string.digits
    reports_dir = os.path.join(data_dir, "deployment_reports")
    os.makedirs(reports_dir)
    os.makedirs(os.path.join(data_dir, "tenant_data"))
    open(os.path.join(data_dir, ".lock"), "w").close()
    base = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    deployments, listing = {}, []
    per, extra = divmod(total_reports, tenants)
    with open(os.path.join(data_dir, "deployment.log"), "w") as logf:
        for i in range(tenants):
            user, service, ns = "user%05d" % i, "search", "es-user%05d" % i
            gpu = 1 if i % 2 == 0 else 0
            req = {"user": user, "service_name": service, "namespace": ns, "replicas": 1, "cpu_request": "500m",
                   "cpu_limit": "2", "mem_request": "1Gi", "mem_limit": "2Gi", "disk_size": "10Gi",
                   "gpu_count": gpu, "dimension": 128, "vector_count": 10000, "index_limit": 100,
                   "tenant_org_id": "org%03d" % (i % 100)}
            flow = [s for s in FLOW if gpu or s != "gpu_configured"]
            count = per + (1 if i < extra else 0)
            if count < len(flow):
                flow = flow[:max(count, 1)]
            attempts, rest = [], count - len(flow)
            while rest > 0:  # earlier failed attempts: first stages, then the failed report
                n = min(rest, len(flow))
                attempts.append(flow[:n - 1] + ["failed"])
                rest -= n
            attempts.append(flow)
            t = base + i * 60.0
            created_at = None
            for statuses in attempts:
                dep_id = "".join(rng.choice(alphabet) for _i in range(20))
                created_at, _f = _stamp(t)
                t += 0.7
                for status in statuses:
                    ts, fts = _stamp(t)
                    t += rng.uniform(0.2, 2.5)
                    if status == "failed":
                        msg = "Cluster creation failed at stage k8s_apply: Failed to create object: (409) Conflict"
                    else:
                        msg = MESSAGES[status].format(**req)
                    body = {"status": status, "message": msg, "timestamp": ts, "user": user, "service_name": service,
                            "namespace": ns, "deployment_id": dep_id}
                    if status in ("starting", "completed"):
                        body["details"] = dict(req)
                    elif status == "gitlab_pulled":
                        body["details"] = {"skipped": True}
                    elif status == "k8s_applied":
                        body["details"] = {"objects": [{"kind": k, "api_version": a, "name": n, "namespace": ns}
                                                       for k, a, n in OBJECTS],
                                           "config_overridden": [], "config_tenant_keys": []}
                    elif status == "resources_configured":
                        body["details"] = {"max_indices": 100, "replicas": 1,
                                           "requests": {"cpu": "500m", "memory": "1Gi"},
                                           "limits": {"cpu": "2", "memory": "2Gi"}}
                    elif status == "disk_configured":
                        body["details"] = {"pvcs": [{"name": "elasticsearch-data-elasticsearch-0", "old": "10Gi",
                                                     "new": "10Gi", "changed": False, "capacity": "10Gi"}]}
                    elif status == "rollout_completed":
                        body["details"] = {"pods": [
                            {"name": "elasticsearch-0", "phase": "Running", "ready": True,
                             "owner": "StatefulSet/elasticsearch"},
                            {"name": "kibana-7ff5756cd6-%s" % dep_id[:5], "phase": "Running", "ready": True,
                             "owner": "Deployment/kibana"}], "elapsed": 0.19}
                    with open(os.path.join(reports_dir, "%s_%s_%s.json" % (user, service, fts)), "w") as handle:
                        handle.write(_dump(body))
                    logf.write("%s - User: %s, Service: %s, Namespace: %s, Status: %s, Message: %s\n"
                               % (ts, user, service, ns, status, msg))
                last_ts = ts
            complete = attempts[-1][-1] == "completed"
            entry = {"user": user, "service_name": service, "namespace": ns, "deployment_id": dep_id,
                     "status": "created" if complete else "failed", "stage": None if complete else "k8s_apply",
                     "error": None if complete else "Failed to create object: (409) Conflict",
                     "created_at": created_at, "updated_at": last_ts, "reports_dir": reports_dir, "request": req}
            deployments["%s/%s" % (user, service)] = entry
            if complete:
                record = {"user": user, "service_name": service, "namespace": ns, "replicas": 1, "cpu": "500m/2",
                          "memory": "1Gi/2Gi", "disk": "10Gi", "gpu_count": gpu, "dimension": 128,
                          "vector_count": 10000, "index_limit": 100, "tenant_org_id": req["tenant_org_id"],
                          "status": "created", "created_at": created_at, "deployment_id": dep_id,
                          "resources": {
                              "namespace": ns, "replicas": 1, "requests": {"cpu": "500m", "memory": "1Gi"},
                              "limits": {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": gpu}, "disk_size": "10Gi",
                              "storage_class": "cluster default", "max_indices": 100,
                              "images": {"elasticsearch": "docker.elastic.co/elasticsearch/elasticsearch:8.15.3",
                                         "kibana": "docker.elastic.co/kibana/kibana:8.15.3"},
                              "objects": [{"kind": k, "api_version": a, "name": n, "namespace": ns}
                                          for k, a, n in OBJECTS],
                              "pvcs": [{"name": "elasticsearch-data-elasticsearch-0", "old": "10Gi", "new": "10Gi",
                                        "changed": False, "capacity": "10Gi"}],
                              "gitlab": None,
                              "endpoints": {"elasticsearch": "http://elasticsearch.%s.svc:9200" % ns,
                                            "kibana": "http://kibana.%s.svc:5601" % ns},
                              "credentials_secret": "elasticsearch-credentials"},
                          "synced_at": last_ts, "sync_time": last_ts}
                with open(os.path.join(data_dir, "tenant_data", "%s_%s.json" % (user, service)), "w") as handle:
                    handle.write(_dump(record))
            listing.append({"user": user, "service_name": service, "reports": count, "deployment_id": dep_id})
    with open(os.path.join(data_dir, "deployments.json"), "w") as handle:
        handle.write(_dump(deployments))
    return listing


QUERY_SCRIPT = r"""
import inspect, json, os, statistics, sys, time
repo, data_dir, user, service, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
sys.path.insert(0, os.path.join(repo, "collections"))
t0 = time.perf_counter()
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import reports, store
import_ms = (time.perf_counter() - t0) * 1000
if callable(getattr(store, "query", None)):
    how = "store.query%s" % (inspect.signature(store.query),)
    def query():
        try:
            return store.query(data_dir, user, service)
        except TypeError:
            return store.query(data_dir=data_dir, user=user, service_name=service)
else:
    how = "es_deployment_info main(): list_deployments, get_tenant, list_reports, log_tail"
    def query():
        s = store.MetadataStore(data_dir)
        out = {"deployments": s.list_deployments(user, service), "tenant": s.get_tenant(user, service),
               "reports": reports.list_reports(data_dir, user, service)}
        out["latest_report"] = out["reports"][-1] if out["reports"] else None
        out["log_tail"] = reports.log_tail(reports.default_log_file(data_dir), user, service, 20)
        return out
times = []
for _ in range(runs):
    t = time.perf_counter()
    result = query()
    times.append((time.perf_counter() - t) * 1000)
def size(v):
    return len(v) if isinstance(v, (list, dict)) else (0 if v is None else 1)
summary = {k: size(v) for k, v in result.items()} if isinstance(result, dict) else {"type": type(result).__name__}
print(json.dumps({"how": how, "import_ms": round(import_ms, 1), "first_ms": round(times[0], 2),
                  "median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2),
                  "max_ms": round(max(times), 2), "runs": runs, "result_sizes": summary,
                  "reports_found": len(result.get("reports") or []) if isinstance(result, dict) else None}))
"""


def timed_command(cmd, cwd, env, runs, expect=None):
    walls, last = [], None
    for _run in range(runs):
        start = time.monotonic()
        last = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
        walls.append(time.monotonic() - start)
    ok = last.returncode == 0 and (expect is None or expect in last.stdout)
    out = {"median_s": round(median(walls), 3), "runs_s": [round(w, 3) for w in walls], "rc": last.returncode,
           "ok": ok}
    if not ok:
        out["output_tail"] = (last.stdout + last.stderr).splitlines()[-15:]
    return out


def part_query(args, results):
    out = {"tenants": args.query_tenants, "reports": args.query_reports}
    with Workdir(args, "query") as work:
        data = os.path.join(work, "data")
        log("== query: generating %d tenants with %d reports in %s" % (args.query_tenants, args.query_reports, data))
        start = time.monotonic()
        listing = generate_store(data, args.query_tenants, args.query_reports)
        out["generate_s"] = round(time.monotonic() - start, 1)
        target = listing[len(listing) // 2]
        out["queried"] = target
        out["data_bytes"] = {"deployments.json": os.path.getsize(os.path.join(data, "deployments.json")),
                             "deployment.log": os.path.getsize(os.path.join(data, "deployment.log"))}
        log("  generated in %.1fs; querying %s/%s (%d reports; middle of the log)" % (
            out["generate_s"], target["user"], target["service_name"], target["reports"]))
        user, service = target["user"], target["service_name"]
        env = ansible_env()
        out["waited_idle_s"] = wait_idle()
        out["load_avg_1m_at_start"] = os.getloadavg()[0]

        # Writes first: the first one migrates a folder in the old layout (if the checkout does that);
        # the second shows what a write costs in a folder of this size afterwards. Queries then read
        # the folder as it is in use.
        for key, prefix in (("first_write", "firstwrite"), ("second_write", "secondwrite")):
            log("  %s: a create for one new tenant into the big data folder" % key.replace("_", " "))
            try:
                run = playbook_run(args, [batch_tenant(1, prefix=prefix)], batch=False, prefix=prefix, data_dir=data)
                run = strip_epochs(run)
                out[key] = run
                log("  %s: %.2fs rc=%s completed=%d (%s)" % (key.replace("_", " "), run["wall_s"], run["rc"],
                                                             run["completed"], cpu_text(run)))
                log(table(["stage", "time"], [[STAGE_LABELS.get(s["stage"], s["stage"]), fmt(s["s"], "s")]
                                              for s in run.get("stages", [])]))
                if run["rc"] != 0:
                    log("    " + "\n    ".join(run.get("output_tail", [])[-8:]))
            except Exception as exc:  # noqa: BLE001
                out[key] = {"error": str(exc)}
                log("  %s FAILED: %s" % (key, exc))
        out["layout_after_write"] = sorted(os.listdir(data))

        try:
            proc = subprocess.run([sys.executable, "-c", QUERY_SCRIPT, args.repo, data, user, service,
                                   str(args.query_runs)], capture_output=True, text=True, timeout=600, check=False)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode)
            out["inprocess"] = json.loads(proc.stdout.strip().splitlines()[-1])
            out["inprocess"]["ok"] = out["inprocess"].get("reports_found") == target["reports"]
            log("  in-process (%s): median %.2f ms of %d, first %.2f ms, %s reports found" % (
                out["inprocess"]["how"], out["inprocess"]["median_ms"], args.query_runs,
                out["inprocess"]["first_ms"], out["inprocess"].get("reports_found")))
        except Exception as exc:  # noqa: BLE001
            out["inprocess"] = {"error": str(exc)}
            log("  in-process query FAILED: %s" % exc)

        ansible = venv_tool("ansible")
        checks = [
            ("ansible_baseline", [ansible, "localhost", "-m", "ansible.builtin.debug", "-a", "msg=baseline"],
             "baseline"),
            ("module", [ansible, "localhost", "-m", "yunpeng.es_serverless.es_deployment_info", "-a",
                        "data_dir=%s user=%s service_name=%s" % (data, user, service)], target["deployment_id"]),
            ("lookup", [ansible, "localhost", "-m", "ansible.builtin.debug", "-a",
                        "msg={{ lookup('yunpeng.es_serverless.es_deployment', '%s', '%s', data_dir='%s') }}"
                        % (user, service, data)], target["deployment_id"]),
        ]
        for name, cmd, expect in checks:
            try:
                out[name] = timed_command(cmd, args.repo, env, args.query_cli_runs, expect)
                log("  %-17s median %.2fs of %d (%s)%s" % (
                    name, out[name]["median_s"], args.query_cli_runs,
                    ", ".join("%.2f" % w for w in out[name]["runs_s"]), "" if out[name]["ok"] else " NOT OK"))
                if not out[name]["ok"]:
                    log("    " + "\n    ".join(out[name]["output_tail"][-6:]))
            except Exception as exc:  # noqa: BLE001
                out[name] = {"error": str(exc)}
                log("  %s FAILED: %s" % (name, exc))

    results["query"] = out


# ----------------------------------------------------------------------------- summary and targets
def get(results, *path):
    node = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def targets(results):
    """``[(name, value text, target text, met)]``; met is None when the figure is missing."""
    one, kube1 = get(results, "create", "median_wall_s"), get(results, "kubectl", "1", "wall_s")
    ten, kube10 = get(results, "batch", "10", "wall_s"), get(results, "kubectl", "10", "wall_s")
    fifty = get(results, "batch", "50", "wall_s")
    fifty_ok = get(results, "batch", "50", "completed") == 50
    reqs = get(results, "create", "api_requests", "total")
    create_ok = get(results, "create", "all_completed")
    memory = get(results, "batch", "50", "memory") or {}
    mem = memory.get("peak_pss_sum_mb") or memory.get("peak_rss_sum_mb")
    q_ms = get(results, "query", "inprocess", "median_ms")
    mod, look = get(results, "query", "module", "median_s"), get(results, "query", "lookup", "median_s")
    mod_ok, look_ok = get(results, "query", "module", "ok"), get(results, "query", "lookup", "ok")
    q_ok = get(results, "query", "inprocess", "ok")

    def check(value, ok):
        return None if value is None else bool(ok)

    r1, r10 = ratio(one, kube1), ratio(ten, kube10)
    return [
        ("one tenant vs kubectl script", "%s (%ss / %ss)" % (fmt(r1, "x"), fmt(one), fmt(kube1)), "<= 2x",
         check(r1, r1 is not None and r1 <= 2)),
        ("10 tenants vs 10 kubectl scripts", "%s (%ss / %ss)" % (fmt(r10, "x"), fmt(ten), fmt(kube10)), "<= 2x",
         check(r10, r10 is not None and r10 <= 2)),
        ("50 tenants, one run", "%ss%s" % (fmt(fifty), "" if fifty is None or fifty_ok else " (not all completed)"),
         "< 60s", check(fifty, fifty is not None and fifty < 60 and fifty_ok)),
        ("API requests per tenant", "%s%s" % (fmt(reqs), "" if reqs is None or create_ok else " (run failed)"),
         "<= 25", check(reqs, reqs is not None and reqs <= 25 and create_ok)),
        ("controller peak memory (50)", fmt(mem, " MB", 0), "< 500 MB", check(mem, mem is not None and mem < 500)),
        ("query in-process", fmt(q_ms, " ms") + ("" if q_ok in (None, True) else " (wrong answer)"), "< 50 ms",
         check(q_ms, q_ms is not None and q_ms < 50 and q_ok)),
        ("query via module", fmt(mod, "s") + ("" if mod_ok in (None, True) else " (failed)"), "< 1s",
         check(mod, mod is not None and mod < 1 and mod_ok)),
        ("query via lookup", fmt(look, "s") + ("" if look_ok in (None, True) else " (failed)"), "< 1s",
         check(look, look is not None and look < 1 and look_ok)),
    ]


def verdict(met):
    return {True: "met", False: "NOT met", None: "-"}[met]


def print_summary(results):
    log("\n== summary: %s (%s at %s)"
        % (results["label"], results["meta"]["repo"], results["meta"].get("commit", "")[:9]))
    rows = []
    one, kube1 = get(results, "create", "median_wall_s"), get(results, "kubectl", "1", "wall_s")
    done = get(results, "create", "all_completed")
    rows.append(["1 tenant create (median of %d)" % len(get(results, "create", "runs") or []), fmt(one, "s"),
                 "-" if done is None else ("yes" if done else "NO"), fmt(kube1, "s"),
                 "%s/1" % get(results, "kubectl", "1", "completed") if kube1 else "-", fmt(ratio(one, kube1), "x"),
                 fmt(round(60 / one, 2) if one else None)])
    sizes = sorted({int(k) for k in list((results.get("batch") or {}).keys()) + list(
        (results.get("kubectl") or {}).keys()) if k.isdigit()})
    for size in sizes:
        b, k = get(results, "batch", str(size)) or {}, get(results, "kubectl", str(size)) or {}
        rows.append(["%d tenant(s) in one run" % size, fmt(b.get("wall_s"), "s"),
                     "%s/%d" % (b["completed"], size) if "completed" in b else b.get("error", "-")[:20],
                     fmt(k.get("wall_s"), "s"),
                     "%s/%d" % (k["completed"], size) if "completed" in k else k.get("error", "-")[:20],
                     fmt(ratio(b.get("wall_s"), k.get("wall_s")), "x"), fmt(b.get("tenants_per_min"))])
    log(table(["wall time", "collection", "completed", "kubectl", "completed", "ratio", "tenants/min"], rows))
    reqs, kreqs = get(results, "create", "api_requests", "total"), get(results, "kubectl", "1", "api_requests", "total")
    if reqs is not None or kreqs is not None:
        log("API requests of one create: collection %s, kubectl script %s" % (fmt(reqs), fmt(kreqs)))
    for part, error in sorted((results.get("errors") or {}).items()):
        log("part %s failed: %s" % (part, error))
    log("")
    log(table(["target", "value", "target", "met?"], [[n, v, t, verdict(m)] for n, v, t, m in targets(results)]))


def print_comparison(before, current):
    log("\n== before (%s) vs %s (%s)" % (before["meta"].get("commit", "")[:9], current["label"],
                                         current["meta"].get("commit", "")[:9]))
    rows = []
    for (name, bval, target, bmet), (_n, cval, _t, cmet) in zip(targets(before), targets(current)):
        rows.append([name, bval, cval, target, verdict(bmet), verdict(cmet)])
    log(table(["target", "before", current["label"], "target", "met before", "met " + current["label"]], rows))
    bst, cst = get(before, "create", "stages_median_s") or {}, get(current, "create", "stages_median_s") or {}
    stages = [s for s in STAGE_ORDER if s in bst or s in cst]
    if stages:
        log("")
        log(table(["stage (one create, median)", "before", current["label"]],
                  [[STAGE_LABELS.get(s, s), fmt(bst.get(s), "s"), fmt(cst.get(s), "s")] for s in stages]))


# ----------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=ROOT, help="checkout of the collection to benchmark (default: %(default)s)")
    p.add_argument("--label", default="current", help="results go to bench/results/LABEL.json")
    p.add_argument("--ready-delay", type=float, default=0.5, help="simulator: pod creation to Ready (s)")
    p.add_argument("--sizes", default="1,10,50", help="tenants per batch run (and kubectl runs)")
    p.add_argument("--repeat", type=int, default=3, help="runs of the one-tenant create (median)")
    p.add_argument("--query-tenants", type=int, default=10000)
    p.add_argument("--query-reports", type=int, default=100000)
    p.add_argument("--query-runs", type=int, default=20, help="in-process query runs (median)")
    p.add_argument("--query-cli-runs", type=int, default=3, help="module/lookup runs (median)")
    p.add_argument("--only", help="comma-separated parts to run: %s" % ",".join(PARTS))
    p.add_argument("--skip", default="", help="comma-separated parts to leave out")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="do not sample controller memory in the biggest batch")
    p.add_argument("--plot", action="store_true", help="also write bench/results/stages.png (bench/plot)")
    p.add_argument("--node-cpu", default="64", help="simulator node cpu (50 tenants need 25 cpu of requests)")
    p.add_argument("--node-memory", default="256Gi", help="simulator node memory")
    p.add_argument("--node-gpus", type=int, default=4, help="simulator node GPUs")
    p.add_argument("--kubectl", default="/usr/bin/kubectl" if os.path.exists("/usr/bin/kubectl") else "kubectl")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="before each measured run wait up to SECONDS for the rest of the machine to be idle")
    p.add_argument("--forks", type=int, default=10,
                   help="forks of a batch run, capped at the tenants (default %(default)s, the README's advice;"
                        " 0: as many as tenants)")
    p.add_argument("--playbook-arg", action="append", default=[], metavar="ARG",
                   help="extra ansible-playbook argument for the collection's runs (repeatable), e.g. -e x=y")
    p.add_argument("--tmp", default="/tmp", help="parent folder of the temporary data folders")
    p.add_argument("--keep", action="store_true", help="keep the temporary folders (logs, data) for inspection")
    args = p.parse_args(argv)
    args.repo = os.path.abspath(args.repo)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    only = [s.strip() for s in (args.only or ",".join(PARTS)).split(",") if s.strip()]
    skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    unknown = [s for s in only + skip if s not in PARTS]
    if unknown:
        p.error("unknown part(s) %s; parts are %s" % (", ".join(unknown), ", ".join(PARTS)))
    args.parts = [s for s in PARTS if s in only and s not in skip]
    if not re.match(r"^[A-Za-z0-9._-]+$", args.label):
        p.error("--label must be a plain file name")
    return args


def check_environment(args):
    problems = []
    if not os.path.isfile(os.path.join(args.repo, PLAYBOOK)):
        problems.append("%s has no %s" % (args.repo, PLAYBOOK))
    link = os.path.join(args.repo, "collections", "ansible_collections", "yunpeng", "es_serverless")
    if not os.path.isdir(link) or os.path.realpath(link) != os.path.realpath(args.repo):
        problems.append("%s does not resolve to %s (the checkout's collection link)" % (link, args.repo))
    for module in ("psutil", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            log("note: %s is missing; install the bench's requirements: %s -m pip install -r %s" % (
                module, sys.executable, os.path.join(BENCH_DIR, "requirements.txt")))
    args.ansible_playbook = venv_tool("ansible-playbook")
    if not args.ansible_playbook:
        problems.append("ansible-playbook not found (use the project venv)")
    return problems


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    WAIT_IDLE["seconds"] = args.wait_idle
    problems = check_environment(args)
    if problems:
        for problem in problems:
            log("bench/run: %s" % problem)
        return 2
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, args.label + ".json")
    results = {}
    if os.path.exists(path):
        with open(path) as handle:
            results = json.load(handle)
    info = git_info(args.repo)
    if results.get("meta", {}).get("commit") not in (None, info["commit"]):
        log("note: %s holds parts measured at %s; the parts run now are of %s" % (
            path, results["meta"]["commit"][:9], info["commit"][:9]))
    ansible_version = subprocess.run([args.ansible_playbook, "--version"], capture_output=True, text=True,
                                     env=ansible_env(), check=False).stdout.splitlines()[:1]
    results["label"] = args.label
    results["meta"] = {
        "repo": args.repo, "commit": info["commit"], "subject": info["subject"], "dirty": info["dirty"],
        "bench_commit": git_info(ROOT)["commit"], "ansible": ansible_version, "python": platform.python_version(),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "simulator": {"ready_delay_s": args.ready_delay, "node_cpu": args.node_cpu, "node_memory": args.node_memory,
                      "node_gpus": args.node_gpus, "from": ROOT},
        "updated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    results.setdefault("parts_measured", {})
    results.setdefault("errors", {})
    log("bench/run: %s at %s (%s), parts %s" % (args.repo, info["commit"][:9], info["subject"],
                                                ",".join(args.parts)))
    runners = {"create": part_create, "batch": part_batch, "query": part_query, "kubectl": part_kubectl}
    for part in args.parts:
        start = time.monotonic()
        try:
            runners[part](args, results)
            results["errors"].pop(part, None)
        except KeyboardInterrupt:
            log("interrupted")
            break
        except Exception as exc:  # noqa: BLE001 - one part failing must not stop the others
            results["errors"][part] = "%s: %s" % (type(exc).__name__, exc)
            log("== %s FAILED: %s" % (part, exc))
            traceback.print_exc()
        results["parts_measured"][part] = {"commit": info["commit"], "when": results["meta"]["updated"],
                                           "seconds": round(time.monotonic() - start, 1)}
        with open(path + ".tmp", "w") as handle:
            json.dump(results, handle, indent=1)
        os.replace(path + ".tmp", path)
    print_summary(results)
    before_path = os.path.join(RESULTS_DIR, "before.json")
    if args.label != "before" and os.path.exists(before_path):
        with open(before_path) as handle:
            print_comparison(json.load(handle), results)
    log("\nresults: %s" % path)
    if args.plot:
        from plotting import plot  # noqa: E402 - bench/ is on sys.path (bench/run)

        try:
            log("plot: %s" % plot())
        except Exception as exc:  # noqa: BLE001
            log("plot FAILED: %s" % exc)
    return 0
