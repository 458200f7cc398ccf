"""Leases of running creates, updates and deletes, and the take-over of a run that died
(plugins/module_utils/store.py: ``lease_state``, ``_take_over``, ``release``, the quota, ``write_report``)."""

import datetime
import json
import os
import subprocess

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import reports
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import request as r
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import store as st
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import MetadataStore, StoreError

NOW = datetime.datetime(2024, 1, 1, 0, 0, 0, tzinfo=datetime.timezone.utc)
LATER = NOW + datetime.timedelta(seconds=60)


def req(user="u", service="s", namespace="es-u-s", **changes):
    return r.validate(dict({"user": user, "service_name": service, "namespace": namespace}, **changes))


@pytest.fixture
def store(tmp_path):
    return MetadataStore(str(tmp_path))


@pytest.fixture
def dead_pid():
    """The pid of a process that ran and was reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def as_dead(monkeypatch, dead_pid):
    """Run the next store calls as if from the ansible-playbook process ``dead_pid``, then as this one."""
    def switch(dead=True):
        if dead:
            monkeypatch.setenv(st.OWNER_PID_ENV, str(dead_pid))
        else:
            monkeypatch.delenv(st.OWNER_PID_ENV, raising=False)
    return switch


def entry_file(store, user="u", service="s"):
    with open(store.entry_path(user, service)) as handle:
        return json.load(handle)


def write_entry(store, entry):
    with open(store.entry_path(entry["user"], entry["service_name"]), "w") as handle:
        json.dump(entry, handle)


def own_reports(store, deployment_id, user="u", service="s"):
    return [item["report"] for item in store.list_reports(user, service, deployment_id)]


# ------------------------------------------------------------------ lease_state
def lease(**changes):
    host, boot = st.host_identity()
    out = {"host": host, "boot_id": boot, "pid": os.getpid(), "pid_start": st.process_start(os.getpid()),
           "renewed_at": "2024-01-01T00:00:00Z", "expires_at": "2024-01-01T01:00:00Z"}
    out.update(changes)
    return out


def test_a_run_on_this_host_lives_exactly_while_its_process_does(dead_pid):
    assert st.lease_state(lease(), now=NOW + datetime.timedelta(days=9))[0] is True  # expiry does not matter
    alive, why = st.lease_state(lease(pid=dead_pid, pid_start=None), now=NOW)
    assert not alive and why == "ansible-playbook pid %d on host %s is gone" % (dead_pid, st.host_identity()[0])
    alive, why = st.lease_state(lease(pid_start=st.process_start(os.getpid()) + 1), now=NOW)
    assert not alive and "the pid now belongs to another process" in why
    alive, why = st.lease_state(lease(boot_id="another-boot"), now=NOW)
    assert not alive and "has rebooted" in why


def test_a_zombie_counts_as_gone():
    proc = subprocess.Popen(["true"])
    try:
        for _attempt in range(200):
            if st.process_start(proc.pid) is None:
                break
            subprocess.run(["sleep", "0.01"], check=True)
        assert st.process_start(proc.pid) is None  # exited, not reaped yet
        assert os.path.exists("/proc/%d" % proc.pid)
    finally:
        proc.wait()


def test_a_run_on_another_host_lives_until_its_lease_expires():
    other = lease(host="elsewhere", boot_id="b", pid=1)
    assert st.lease_state(other, now=NOW + datetime.timedelta(minutes=59))[0] is True
    alive, why = st.lease_state(other, now=NOW + datetime.timedelta(hours=1))
    assert not alive and why == "the lease of ansible-playbook pid 1 on host elsewhere expired at 2024-01-01T01:00:00Z"


def test_a_released_lease_is_dead_and_no_lease_expires_after_the_lease_time():
    assert st.lease_state(lease(released_at="2024-01-01T00:00:05Z"), now=NOW) == (
        False, "its lease was released at 2024-01-01T00:00:05Z")
    since = "2024-01-01T00:00:00Z"
    assert st.lease_state(None, since, now=NOW + datetime.timedelta(seconds=st.LEASE_SECONDS - 1))[0] is True
    assert st.lease_state(None, since, now=NOW + datetime.timedelta(seconds=st.LEASE_SECONDS))[0] is False


# ------------------------------------------------------------------ leases in the entry
def test_begin_update_and_delete_hold_a_lease_of_the_playbook_process_and_the_end_drops_it(store, monkeypatch):
    monkeypatch.setenv(st.OWNER_PID_ENV, str(os.getppid()))
    store.begin(req(), "c1", now=NOW)
    held = entry_file(store)["lease"]
    assert held == {"host": st.host_identity()[0], "boot_id": st.host_identity()[1], "pid": os.getppid(),
                    "pid_start": st.process_start(os.getppid()), "renewed_at": "2024-01-01T00:00:00Z",
                    "expires_at": "2024-01-01T01:00:00Z"}
    store.sync(req(), "c1", {}, now=NOW)
    store.complete(req(), "c1", now=NOW)
    assert "lease" not in entry_file(store)
    store.begin(req(replicas=2), "u1", now=NOW)
    assert entry_file(store)["update"]["lease"]["pid"] == os.getppid()
    store.sync(req(replicas=2), "u1", {}, now=NOW)
    store.complete(req(replicas=2), "u1", now=NOW)
    store.begin_delete("u", "s", "d1", now=NOW)
    assert entry_file(store)["lease"]["pid"] == os.getppid()
    store.complete_delete("u", "s", "d1", now=NOW)
    assert "lease" not in entry_file(store)


def test_every_report_of_the_run_moves_its_lease_on_and_no_other_report_does(store):
    store.begin(req(), "c1", now=NOW)
    store.write_report(None, reports.build("starting", req(), "c1"), now=LATER)
    assert entry_file(store)["lease"]["expires_at"] == "2024-01-01T01:01:00Z"
    before = entry_file(store)
    store.write_report(None, reports.build("failed", req(), "refused", message="x"),
                       now=LATER + datetime.timedelta(seconds=60))
    assert entry_file(store) == before


# ------------------------------------------------------------------ take-over
def test_a_live_create_is_still_refused_naming_its_process(store):
    store.begin(req(), "c1", now=NOW)
    with pytest.raises(StoreError, match=r"already being created by deployment c1 .*ansible-playbook pid %d on host"
                                         r" .* is running\); wait" % os.getpid()):
        store.begin(req(), "c2", now=NOW)
    with pytest.raises(StoreError, match="is being created by deployment c1"):
        store.begin_delete("u", "s", "d2", now=NOW)


def test_the_next_create_takes_over_a_create_that_died(store, as_dead, tmp_path):
    as_dead()
    store.begin(req(), "c1", now=NOW)
    store.write_report(None, reports.build("namespace_created", req(), "c1"), now=NOW)
    as_dead(False)
    record = store.begin(req(), "c2", now=LATER)
    assert record["deployment_id"] == "c2"
    entry = entry_file(store)
    assert (entry["deployment_id"], entry["status"], entry["lease"]["pid"]) == ("c2", "creating", os.getpid())
    took = store.took_over
    assert (took["deployment_id"], took["operation"], took["namespace"], took["stage"]) == (
        "c1", "create", "es-u-s", "run_died")
    assert took["error"].startswith("the run died: ansible-playbook pid ")
    assert took["error"].endswith(" is gone, after its report namespace_created; deployment c2 took over")
    failed = own_reports(store, "c1")[-1]
    assert failed["status"] == "failed" and failed["details"] == {"stage": "run_died", "error": took["error"]}
    assert failed["message"] == "Cluster creation failed at stage run_died: " + took["error"]
    assert took["report"] == store.list_reports("u", "s", "c1")[-1]["file"]
    log = (tmp_path / "deployment.log").read_text().splitlines()
    assert log[-1] == reports.log_line(failed)
    assert json.loads((tmp_path / "namespaces" / "es-u-s.json").read_text())["deployment_id"] == "c2"


def test_a_create_that_died_before_its_first_report_says_so_and_the_log_file_is_the_runs(store, as_dead, tmp_path):
    as_dead()
    store.begin(req(), "c1", now=NOW)
    as_dead(False)
    log_file = str(tmp_path / "logs" / "elsewhere.log")
    store.begin(req(), "c2", now=LATER, log_file=log_file)
    assert "before its first report" in store.took_over["error"]
    assert "Status: failed" in open(log_file).read()


def test_a_dead_update_is_recorded_failed_and_the_cluster_stays_created(store, as_dead):
    store.begin(req(), "c1", now=NOW)
    store.sync(req(), "c1", {}, now=NOW)
    store.complete(req(), "c1", now=NOW)
    as_dead()
    store.begin(req(replicas=2), "u1", now=NOW)
    store.sync(req(replicas=2), "u1", {}, now=NOW)  # the record now says 2 replicas
    as_dead(False)
    store.begin(req(replicas=3), "u2", now=LATER)
    entry = entry_file(store)
    assert (entry["status"], entry["deployment_id"], entry["request"]["replicas"]) == ("created", "c1", 1)
    assert entry["last_update"]["deployment_id"] == "u1" and entry["last_update"]["status"] == "failed"
    assert entry["last_update"]["stage"] == "run_died"
    assert entry["update"]["deployment_id"] == "u2"
    assert store.get_tenant("u", "s")["replicas"] == 1  # the record before the dead update
    assert own_reports(store, "u1")[-1]["status"] == "failed"
    assert store.took_over["operation"] == "update"


def test_a_dead_delete_is_finished_by_the_next_delete_not_by_a_create(store, as_dead):
    store.begin(req(), "c1", now=NOW)
    store.complete(req(), "c1", now=NOW)
    as_dead()
    store.begin_delete("u", "s", "d1", now=NOW)
    as_dead(False)
    with pytest.raises(StoreError, match=r"was being deleted by deployment d1, whose run died \(ansible-playbook pid"
                                         r" .* is gone\); run the delete again to finish it"):
        store.begin(req(), "c2", now=LATER)
    assert entry_file(store)["status"] == "deleting"
    entry = store.begin_delete("u", "s", "d2", now=LATER)
    assert (entry["status"], entry["deployment_id"], entry["previous_deployment_id"]) == ("deleting", "d2", "c1")
    failed = own_reports(store, "d1")[-1]
    assert failed["message"].startswith("Cluster deletion failed at stage run_died: the run died")
    assert store.took_over["operation"] == "delete"


def test_a_delete_takes_over_a_dead_create_and_refuses_a_live_update(store, as_dead):
    as_dead()
    store.begin(req(), "c1", now=NOW)
    as_dead(False)
    entry = store.begin_delete("u", "s", "d1", now=LATER)
    assert entry["status"] == "deleting" and store.took_over["deployment_id"] == "c1"
    assert store.get_tenant("u", "s") is None
    store.complete_delete("u", "s", "d1", now=LATER)
    store.begin(req(), "c2", now=LATER)
    store.complete(req(), "c2", now=LATER)
    store.begin(req(replicas=2), "u1", now=LATER)
    with pytest.raises(StoreError, match="is being updated by deployment u1"):
        store.begin_delete("u", "s", "d2", now=LATER)


def test_check_mode_takes_over_nothing(store, as_dead):
    as_dead()
    store.begin(req(), "c1", now=NOW)
    as_dead(False)
    before = entry_file(store)
    store.begin(req(), "c2", now=LATER, check_only=True)
    assert store.took_over["deployment_id"] == "c1"
    assert entry_file(store) == before and own_reports(store, "c1") == []


# ------------------------------------------------------------------ quota
def test_creates_and_deletes_that_died_stop_counting_against_the_quota(store, as_dead):
    quota = {"max_clusters_per_user": 2}
    as_dead()
    store.begin(req(service="a", namespace="es-a"), "a1", quota, now=NOW)
    store.begin(req(service="b", namespace="es-b"), "b1", quota, now=NOW)
    store.complete(req(service="b", namespace="es-b"), "b1", now=NOW)
    store.begin_delete("u", "b", "b2", now=NOW)
    as_dead(False)
    store.begin(req(service="c", namespace="es-c"), "c1", quota, now=NOW)  # a and b died: none counts
    store.begin(req(service="d", namespace="es-d"), "d1", quota, now=NOW)
    with pytest.raises(StoreError, match="max_clusters_per_user exceeded for user 'u': limit 2, in use 2"):
        store.begin(req(service="e", namespace="es-e"), "e1", quota, now=NOW)  # c and d live


# ------------------------------------------------------------------ release
def test_release_lets_the_next_run_take_over_a_run_of_a_host_that_is_gone(store):
    store.begin(req(), "c1", now=NOW)
    with pytest.raises(StoreError, match=r"deployment c1 of cluster 's' of user 'u' is still running .*; stop it"):
        store.release("u", "s", "c1", now=NOW)
    entry = entry_file(store)
    entry["lease"]["host"] = "gone"
    write_entry(store, entry)
    with pytest.raises(StoreError, match="holds its lease until 2024-01-01T01:00:00Z"):
        store.begin(req(), "c2", now=LATER)
    with pytest.raises(StoreError, match="deployment 'c9' is not running for cluster 's' of user 'u' .running: c1."):
        store.release("u", "s", "c9", now=LATER)
    store.release("u", "s", "c1", now=LATER)
    assert entry_file(store)["lease"]["released_at"] == "2024-01-01T00:01:00Z"
    store.begin(req(), "c2", now=LATER)
    assert "its lease was released at 2024-01-01T00:01:00Z" in store.took_over["error"]


def test_a_run_of_an_earlier_version_without_a_lease_expires(store):
    store.begin(req(), "c1", now=NOW)
    entry = entry_file(store)
    del entry["lease"]
    write_entry(store, entry)
    with pytest.raises(StoreError, match="it holds no lease; it counts as running until 2024-01-01T01:00:00Z"):
        store.begin(req(), "c2", now=NOW + datetime.timedelta(minutes=59))
    store.begin(req(), "c2", now=NOW + datetime.timedelta(hours=1))
    assert store.took_over["deployment_id"] == "c1"


def test_a_refused_run_leaves_the_dead_run_as_it_was(store, as_dead):
    store.begin(req(service="x", namespace="es-x"), "x1", now=NOW)
    as_dead()
    store.begin(req(), "c1", now=NOW)
    as_dead(False)
    before = entry_file(store)
    with pytest.raises(StoreError, match="quota max_clusters_per_user exceeded"):
        store.begin(req(), "c2", {"max_clusters_per_user": 1}, now=LATER)
    with pytest.raises(StoreError, match="namespace 'es-x' is already used"):
        store.begin(req(namespace="es-x"), "c3", now=LATER)
    assert entry_file(store) == before and own_reports(store, "c1") == []
    assert store.get_tenant("u", "s")["deployment_id"] == "c1"
