"""Metadata store (plugins/module_utils/store.py) and the file helpers it relies on."""

import datetime
import glob
import json
import multiprocessing
import os

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import fileutil
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import request as r
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import MetadataStore, StoreError

NOW = datetime.datetime(2024, 1, 1, 0, 0, 0, tzinfo=datetime.timezone.utc)


def req(user="test_user", service="test_service", namespace=None, **changes):
    params = {"user": user, "service_name": service, "namespace": namespace or ("ns-%s-%s" % (
        user, service)).lower().replace("_", "-").replace(".", "-")}
    params.update(changes)
    return r.validate(params)


@pytest.fixture
def store(tmp_path):
    return MetadataStore(str(tmp_path))


def deployments(store):
    """Every entry on disk (``deployments/<user>/<service>.json``), by ``user/service`` key."""
    out = {}
    for path in glob.glob(os.path.join(store.deployments_dir, "*", "*.json")):
        with open(path) as handle:
            entry = json.load(handle)
        out["%s/%s" % (entry["user"], entry["service_name"])] = entry
    return out


def test_begin_writes_record_and_status(store, tmp_path):
    record = store.begin(req(namespace="es-test", tenant_org_id="test-org"), "dep1", now=NOW)
    path = tmp_path / "tenant_data" / "test_user_test_service.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == record
    assert on_disk == {
        "user": "test_user", "service_name": "test_service", "namespace": "es-test", "replicas": 1,
        "cpu": "500m/2", "memory": "1Gi/2Gi", "disk": "10Gi", "gpu_count": 0, "dimension": 128,
        "vector_count": 10000, "index_limit": 100, "tenant_org_id": "test-org", "status": "creating",
        "created_at": "2024-01-01T00:00:00Z", "deployment_id": "dep1",
    }
    entry = json.loads((tmp_path / "deployments" / "test_user" / "test_service.json").read_text())
    assert list(entry) == ["user", "service_name", "namespace", "deployment_id", "status", "stage", "error",
                           "created_at", "updated_at", "reports_dir", "request", "created_by", "lease"]
    assert {k: entry[k] for k in ("user", "service_name", "namespace", "deployment_id", "status", "stage", "error",
                                  "created_at", "updated_at", "reports_dir")} == {
        "user": "test_user", "service_name": "test_service", "namespace": "es-test", "deployment_id": "dep1",
        "status": "creating", "stage": None, "error": None, "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z", "reports_dir": str(tmp_path / "deployment_reports"),
    }
    assert store.get_deployment("test_user", "test_service") == entry
    assert store.get_tenant("test_user", "test_service") == record


def test_begin_validates_the_request_again(store):
    with pytest.raises(StoreError, match="user: must be"):
        store.begin({"user": "../../etc", "service_name": "s", "namespace": "n"}, "dep1")
    assert not os.path.exists(store.data_dir) or os.listdir(store.data_dir) == []


def test_bad_deployment_id(store):
    with pytest.raises(StoreError, match="deployment_id"):
        store.begin(req(), "../x")


def test_second_run_refused_while_creating(store):
    store.begin(req(), "dep1")
    with pytest.raises(StoreError, match="is already being created by deployment dep1"):
        store.begin(req(), "dep2")
    assert store.get_tenant("test_user", "test_service")["deployment_id"] == "dep1"


def created(store, request=None, deployment_id="dep1"):
    request = request or req()
    store.begin(request, deployment_id)
    store.sync(request, deployment_id, {"replicas": request["replicas"]})
    store.complete(request, deployment_id)


def test_create_for_a_created_cluster_begins_an_update(store):
    created(store)
    before = store.get_tenant("test_user", "test_service")
    bigger = req(replicas=3, disk_size="20Gi")
    assert store.begin(bigger, "dep2") == before  # the live record is untouched
    entry = store.get_deployment("test_user", "test_service")
    assert (entry["status"], entry["deployment_id"], entry["created_by"]) == ("created", "dep1", "dep1")
    assert entry["update"]["deployment_id"] == "dep2" and entry["update"]["request"] == bigger
    assert entry["request"] == req()
    with pytest.raises(StoreError, match="already being updated by deployment dep2"):
        store.begin(bigger, "dep3")


@pytest.mark.parametrize("change, message", [
    ({"namespace": "other"}, "namespace: cannot change from 'ns-test-user-test-service' to 'other'"),
    ({"disk_size": "5Gi"}, "disk_size: cannot shrink the volume from 10Gi to 5Gi"),
])
def test_update_refused_before_anything_changes(store, tmp_path, change, message):
    created(store)
    files = {p: open(p).read() for p in glob.glob(str(tmp_path / "**" / "*.json"), recursive=True)}
    with pytest.raises(StoreError, match=message):
        store.begin(req(**change), "dep2")
    assert {p: open(p).read() for p in glob.glob(str(tmp_path / "**" / "*.json"), recursive=True)} == files


def test_update_completes_as_the_live_deployment(store):
    created(store)
    bigger = req(replicas=3)
    store.begin(bigger, "dep2")
    synced = store.sync(bigger, "dep2", {"replicas": 3})
    assert (synced["status"], synced["replicas"], synced["deployment_id"]) == ("created", 3, "dep2")
    record, entry = store.complete(bigger, "dep2")
    assert record["replicas"] == 3 and record["status"] == "created"
    assert (entry["status"], entry["deployment_id"], entry["created_by"]) == ("created", "dep2", "dep1")
    assert entry["request"] == bigger and "update" not in entry
    assert entry["last_update"]["deployment_id"] == "dep2" and entry["last_update"]["status"] == "created"
    assert store.get_deployment("test_user", "test_service") == entry


def test_failed_update_keeps_the_cluster_and_its_record(store):
    created(store)
    before = store.get_tenant("test_user", "test_service")
    bigger = req(replicas=3)
    store.begin(bigger, "dep2")
    store.sync(bigger, "dep2", {"replicas": 3})  # the record was rewritten before the failure
    out = store.fail("test_user", "test_service", bigger["namespace"], "dep2", "rollout", "timed out")
    assert out["record_deleted"] is False and out["status_changed"] is False
    assert store.get_tenant("test_user", "test_service") == before
    entry = store.get_deployment("test_user", "test_service")
    assert (entry["status"], entry["deployment_id"], entry["request"]) == ("created", "dep1", req())
    assert "update" not in entry
    assert {k: entry["last_update"][k] for k in ("deployment_id", "status", "stage", "error")} == {
        "deployment_id": "dep2", "status": "failed", "stage": "rollout", "error": "timed out"}
    store.begin(bigger, "dep3")  # and it can be updated again


def test_name_collision_refused_and_untouched(store, tmp_path):
    first = store.begin(req("a_b", "c", namespace="ns1"), "dep1")
    with pytest.raises(StoreError, match="name collision") as info:
        store.begin(req("a", "b_c", namespace="ns2"), "dep2")
    assert "'a_b'" in str(info.value) and "'c'" in str(info.value)
    assert json.loads((tmp_path / "tenant_data" / "a_b_c.json").read_text()) == first
    assert store.get_tenant("a", "b_c") is None
    assert store.get_deployment("a", "b_c") is None
    # the refused pair's rollback must not delete the other pair's record
    out = store.fail("a", "b_c", "ns2", "dep2", "metadata", "name collision")
    assert out["record_deleted"] is False and out["status_changed"] is True
    assert json.loads((tmp_path / "tenant_data" / "a_b_c.json").read_text()) == first
    assert store.get_deployment("a_b", "c")["status"] == "creating"
    assert store.get_deployment("a", "b_c")["status"] == "failed"


def test_namespace_of_live_cluster_refused(store):
    store.begin(req("u1", "s1", namespace="shared"), "dep1")
    with pytest.raises(StoreError, match="namespace 'shared' is already used"):
        store.begin(req("u2", "s2", namespace="shared"), "dep2")
    store.fail("u1", "s1", "shared", "dep1", "k8s_applied", "boom")
    store.begin(req("u2", "s2", namespace="shared"), "dep2")


def test_sync_and_complete(store, tmp_path):
    store.begin(req(), "dep1", now=NOW)
    later = NOW + datetime.timedelta(minutes=2)
    rec = store.sync(req(), "dep1", {"images": {"es": "elasticsearch:8.15.3"}, "objects": ["StatefulSet/es"]},
                     now=later)
    assert rec["status"] == "creating" and rec["synced_at"] == "2024-01-01T00:02:00Z"
    assert rec["resources"]["images"] == {"es": "elasticsearch:8.15.3"}
    assert json.loads((tmp_path / "tenant_data" / "test_user_test_service.json").read_text()) == rec
    record, entry = store.complete(req(), "dep1", now=later)
    assert record["status"] == "created" and record["sync_time"] == "2024-01-01T00:02:00Z"
    assert record["resources"]["objects"] == ["StatefulSet/es"]
    assert entry["status"] == "created" and entry["updated_at"] == "2024-01-01T00:02:00Z"
    assert deployments(store)["test_user/test_service"]["status"] == "created"
    assert store.get_tenant("test_user", "test_service")["status"] == "created"


def test_sync_and_complete_refuse_other_deployment(store):
    store.begin(req(), "dep1")
    with pytest.raises(StoreError, match="belongs to deployment dep1"):
        store.sync(req(), "dep2", {})
    with pytest.raises(StoreError, match="belongs to deployment dep1"):
        store.complete(req(), "dep2")
    with pytest.raises(StoreError, match="no tenant record"):
        store.complete(req("other", "svc"), "dep1")


def test_fail_deletes_own_record_and_marks_failed(store, tmp_path):
    store.begin(req(), "dep1", now=NOW)
    out = store.fail("test_user", "test_service", "ns", "dep1", "k8s_applied", "API refused", now=NOW)
    assert out["record_deleted"] and out["status_changed"]
    assert not (tmp_path / "tenant_data" / "test_user_test_service.json").exists()
    entry = deployments(store)["test_user/test_service"]
    assert entry["status"] == "failed" and entry["stage"] == "k8s_applied" and entry["error"] == "API refused"
    assert entry["deployment_id"] == "dep1" and entry["updated_at"] == "2024-01-01T00:00:00Z"
    # a failed pair can be created again
    store.begin(req(), "dep2")


def test_fail_of_refused_second_run_keeps_first(store):
    store.begin(req(), "dep1")
    with pytest.raises(StoreError):
        store.begin(req(), "dep2")
    out = store.fail("test_user", "test_service", "ns", "dep2", "metadata", "already being created")
    assert out == {"deployment": deployments(store)["test_user/test_service"], "record_deleted": False,
                   "status_changed": False}
    assert store.get_deployment("test_user", "test_service")["status"] == "creating"
    assert store.get_tenant("test_user", "test_service")["deployment_id"] == "dep1"


def test_fail_never_touches_created_cluster(store):
    store.begin(req(), "dep1")
    store.complete(req(), "dep1")
    store.fail("test_user", "test_service", "ns", "dep2", "metadata", "already exists")
    assert store.get_deployment("test_user", "test_service")["status"] == "created"
    assert store.get_tenant("test_user", "test_service")["status"] == "created"


def test_fail_with_invalid_identity(store, tmp_path):
    # A refused request has no tenant: nothing is written for the raw values, not even the lock.
    for user, service in (("../../etc", "x y"), ("../x", "s1"), ("ok", "../s"), (None, None)):
        out = store.fail(user, service, "Bad NS", "dep1", "metadata", "user: must be ...")
        assert out == {"deployment": None, "record_deleted": False, "status_changed": False}
    assert os.listdir(str(tmp_path)) == []
    assert store.get_deployment("../../etc", "x y") is None and store.list_deployments() == []


def test_reads_tolerate_missing_files(store):
    assert store.get_deployment("a", "b") is None
    assert store.get_tenant("a", "b") is None
    assert store.get_tenant("../x", "b") is None
    assert store.list_deployments() == []


def test_list_deployments_filters_on_own_fields(store):
    store.begin(req("u1", "s1"), "d1")
    store.begin(req("u1", "s2"), "d2")
    store.begin(req("u2", "s1"), "d3")
    assert [e["deployment_id"] for e in store.list_deployments(user="u1")] == ["d1", "d2"]
    assert [e["deployment_id"] for e in store.list_deployments(service_name="s1")] == ["d1", "d3"]
    assert [e["deployment_id"] for e in store.list_deployments("u2", "s1")] == ["d3"]


def test_check_only_writes_nothing(store, tmp_path):
    record = store.begin(req(), "dep1", check_only=True)
    assert record["status"] == "creating"
    assert sorted(os.listdir(str(tmp_path))) == []  # not even the lock


# ---------------------------------------------------------------- quota

def test_quota_max_clusters(store):
    quota = {"max_clusters_per_user": 2}
    store.begin(req("u", "s1"), "d1", quota)
    store.begin(req("u", "s2"), "d2", quota)
    with pytest.raises(StoreError) as info:
        store.begin(req("u", "s3"), "d3", quota)
    assert str(info.value) == ("quota max_clusters_per_user exceeded for user 'u': limit 2, in use 2, "
                               "requested 1 more")
    store.begin(req("other", "s3"), "d4", quota)  # another user's count is separate
    store.fail("u", "s1", "", "d1", "rollout", "x")  # failed clusters do not count
    store.begin(req("u", "s3"), "d3", quota)


def test_quota_max_replicas(store):
    with pytest.raises(StoreError, match="quota max_replicas_per_cluster exceeded: limit 3, requested 4 replicas"):
        store.begin(req(replicas=4), "d1", {"max_replicas_per_cluster": 3})
    store.begin(req(replicas=3), "d1", {"max_replicas_per_cluster": 3})


def test_quota_cpu_sums_limits_times_replicas(store):
    quota = {"max_cpu_per_user": "10"}
    store.begin(req("u", "s1", replicas=2, cpu_limit="2"), "d1", quota)  # 4 cores
    store.begin(req("u", "s2", replicas=3, cpu_limit="2000m"), "d2", quota)  # 6 cores
    with pytest.raises(StoreError) as info:
        store.begin(req("u", "s3", cpu_request="100m", cpu_limit="100m"), "d3", quota)
    assert str(info.value) == ("quota max_cpu_per_user exceeded for user 'u': limit 10, in use 10, requested 100m"
                               " (cpu_limit 100m x 1 replicas)")


def test_quota_memory(store):
    with pytest.raises(StoreError) as info:
        store.begin(req(replicas=3, mem_limit="2Gi"), "d1", {"max_memory_per_user": "5Gi"})
    assert "quota max_memory_per_user exceeded" in str(info.value)
    assert "limit 5Gi, in use 0, requested 6Gi (mem_limit 2Gi x 3 replicas)" in str(info.value)
    store.begin(req(replicas=2, mem_limit="2Gi"), "d1", {"max_memory_per_user": "4Gi"})


def test_quota_disk(store):
    store.begin(req("u", "s1", disk_size="1Ti"), "d1", {"max_disk_per_user": "2Ti"})
    with pytest.raises(StoreError) as info:
        store.begin(req("u", "s2", disk_size="1025Gi"), "d2", {"max_disk_per_user": "2Ti"})
    assert "quota max_disk_per_user exceeded for user 'u': limit 2Ti, in use 1Ti, requested 1025Gi" in str(info.value)


def test_quota_gpus(store):
    store.begin(req("u", "s1", gpu_count=2, replicas=2), "d1", {"max_gpus_per_user": 6})
    with pytest.raises(StoreError) as info:
        store.begin(req("u", "s2", gpu_count=1, replicas=3), "d2", {"max_gpus_per_user": 6})
    assert str(info.value) == ("quota max_gpus_per_user exceeded for user 'u': limit 6, in use 4, requested 3"
                               " (gpu_count 1 x 3 replicas)")


def test_quota_defaults(store):
    with pytest.raises(StoreError, match="max_gpus_per_user exceeded.*limit 8"):
        store.begin(req(gpu_count=9), "d1")
    with pytest.raises(StoreError, match="max_replicas_per_cluster exceeded: limit 10"):
        store.begin(req(replicas=11), "d1")
    with pytest.raises(StoreError, match="max_cpu_per_user exceeded.*limit 64"):
        store.begin(req(cpu_limit="65"), "d1")


def test_quota_rerun_of_same_pair_not_double_counted(store):
    quota = {"max_cpu_per_user": "2"}
    store.begin(req(cpu_limit="2"), "d1", quota)
    store.fail("test_user", "test_service", "", "d1", "rollout", "x")
    store.begin(req(cpu_limit="2"), "d2", quota)


@pytest.mark.parametrize("quota", [{"max_cpu_per_user": "lots"}, {"max_clusters_per_user": -1},
                                   {"max_gpus_per_user": True}, {"max_disk": "1Ti"}])
def test_bad_quota_named(store, quota):
    with pytest.raises(StoreError) as info:
        store.begin(req(), "d1", quota)
    assert list(quota)[0] in str(info.value)


# ---------------------------------------------------------------- concurrency & atomicity

def _begin_worker(data_dir, deployment_id, barrier, queue):
    barrier.wait()
    try:
        MetadataStore(data_dir).begin(req(), deployment_id)
        queue.put((deployment_id, "ok"))
    except StoreError as exc:
        queue.put((deployment_id, str(exc)))
    # The winner's lease names this process: it must live until every begin is done, or a slow worker
    # rightly takes over a run whose process died (README: After a crash) and wins too.
    barrier.wait(60)


def test_concurrent_begin_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_begin_worker, args=(str(tmp_path), "dep%d" % i, barrier, queue)) for i in range(4)]
    for proc in procs:
        proc.start()
    results = dict(queue.get(timeout=60) for _u in procs)
    for proc in procs:
        proc.join(60)
    winners = [dep for dep, outcome in results.items() if outcome == "ok"]
    assert len(winners) == 1
    for dep, outcome in results.items():
        if dep != winners[0]:
            assert "is already being created by deployment %s" % winners[0] in outcome
    assert MetadataStore(str(tmp_path)).get_tenant("test_user", "test_service")["deployment_id"] == winners[0]


def _many_begins(data_dir, user, count):
    store = MetadataStore(data_dir)
    for i in range(count):
        store.begin(req(user, "s%d" % i, namespace="%s-%d" % (user, i)), "d-%s-%d" % (user, i),
                    {"max_clusters_per_user": 1000, "max_cpu_per_user": "100000", "max_memory_per_user": "1000Ti",
                     "max_disk_per_user": "1000Ti"})


def test_parallel_writers_lose_no_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_many_begins, args=(str(tmp_path), "user%d" % n, 15)) for n in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    data = deployments(MetadataStore(str(tmp_path)))
    assert len(data) == 45
    assert len(os.listdir(str(tmp_path / "namespaces"))) == 45
    assert len(os.listdir(str(tmp_path / "tenant_data"))) == 45


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "f.json"
    for i in range(20):
        fileutil.write_json(str(target), {"n": i})
    assert json.loads(target.read_text()) == {"n": 19}
    assert os.listdir(str(tmp_path)) == ["f.json"]


def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    fileutil.write_json(str(target), {"n": 1})

    def broken_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileutil.os, "rename", broken_rename)
    with pytest.raises(OSError):
        fileutil.write_json(str(target), {"n": 2})
    assert json.loads(target.read_text()) == {"n": 1}
    assert os.listdir(str(tmp_path)) == ["f.json"]


def test_create_exclusive_never_overwrites(tmp_path):
    path = str(tmp_path / "a")
    fileutil.create_exclusive(path, "one")
    with pytest.raises(OSError) as info:
        fileutil.create_exclusive(path, "two")
    assert info.value.errno == 17
    assert (tmp_path / "a").read_text() == "one"
    assert os.listdir(str(tmp_path)) == ["a"]


def test_lock_is_reentrant_and_exclusive_across_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with fileutil.locked(str(tmp_path)):
        with fileutil.locked(str(tmp_path)):
            pass

        def try_lock(path, queue):
            import fcntl
            fd = os.open(os.path.join(path, ".lock"), os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                queue.put("got")
            except OSError:
                queue.put("blocked")

        queue = ctx.Queue()
        proc = ctx.Process(target=try_lock, args=(str(tmp_path), queue))
        proc.start()
        assert queue.get(timeout=30) == "blocked"
        proc.join(30)
    proc = ctx.Process(target=try_lock, args=(str(tmp_path), queue))
    proc.start()
    assert queue.get(timeout=30) == "got"
    proc.join(30)
