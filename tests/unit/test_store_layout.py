"""The data folder layout of the metadata store (plugins/module_utils/store.py): files per pair and
per namespace, the report index, write_report, query, migration of a legacy folder, concurrency.

Real files, the real lock; the legacy folder is written byte for byte as the previous version left it.
"""

import datetime
import json
import multiprocessing
import os
import shutil
import threading

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import fileutil, reports
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import request as r
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import store as storemod
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import MetadataStore, StoreError, query

NOW = datetime.datetime(2024, 1, 1, 0, 0, 0, tzinfo=datetime.timezone.utc)
ROOMY = {"max_clusters_per_user": 1000, "max_cpu_per_user": "100000", "max_memory_per_user": "1000Ti",
         "max_disk_per_user": "1000Ti", "max_gpus_per_user": 1000}


def req(user="test_user", service="test_service", namespace=None, **changes):
    params = {"user": user, "service_name": service, "namespace": namespace or ("ns-%s-%s" % (
        user, service)).lower().replace("_", "-").replace(".", "-")}
    params.update(changes)
    return r.validate(params)


def ident(user, service, namespace="ns"):
    return {"user": user, "service_name": service, "namespace": namespace}


def at(seconds):
    return NOW + datetime.timedelta(seconds=seconds)


def tree(folder):
    """Every file under ``folder`` (relative paths), the lock and temp files left out."""
    out = []
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            if name != ".lock":
                out.append(os.path.relpath(os.path.join(dirpath, name), folder))
    return sorted(out)


def read(path):
    with open(str(path)) as handle:
        return json.load(handle)


def index_lines(store, user, service):
    with open(store.index_path(user, service)) as handle:
        return handle.read().splitlines()


@pytest.fixture
def store(tmp_path):
    return MetadataStore(str(tmp_path))


# ---------------------------------------------------------------- layout

def test_path_part_keeps_valid_names_and_encodes_the_rest():
    for name in ("test_user", "a.b-c_d", "0", "x" * 63):
        assert storemod.path_part(name) == name
    assert storemod.path_part("../../etc") == "%2E.%2F..%2Fetc"
    assert storemod.path_part("a/b") == "a%2Fb"
    assert storemod.path_part("x y") == "x%20y"
    assert storemod.path_part("") == "%"
    assert storemod.path_part(None) == "%"
    assert storemod.path_part("%") == "%25"
    assert "/" not in storemod.path_part("/" * 500) and len(storemod.path_part("/" * 500)) <= 100


def test_layout_after_begin_sync_complete_fail(store, tmp_path):
    store.begin(req(namespace="es-test"), "dep1", now=NOW)
    assert tree(str(tmp_path)) == ["deployments/test_user/test_service.json", "namespaces/es-test.json",
                                   "tenant_data/test_user_test_service.json"]
    assert read(tmp_path / "namespaces" / "es-test.json") == {
        "user": "test_user", "service_name": "test_service", "deployment_id": "dep1"}
    entry = read(tmp_path / "deployments" / "test_user" / "test_service.json")
    assert entry["status"] == "creating" and entry["request"] == dict(req(namespace="es-test"))

    store.sync(req(namespace="es-test"), "dep1", {"objects": ["StatefulSet/elasticsearch"]}, now=at(60))
    store.complete(req(namespace="es-test"), "dep1", now=at(120))
    entry = read(tmp_path / "deployments" / "test_user" / "test_service.json")
    assert (entry["status"], entry["updated_at"]) == ("created", "2024-01-01T00:02:00Z")
    assert read(tmp_path / "tenant_data" / "test_user_test_service.json")["status"] == "created"
    assert tree(str(tmp_path)) == ["deployments/test_user/test_service.json", "namespaces/es-test.json",
                                   "tenant_data/test_user_test_service.json"]

    store.begin(req("other", "svc", namespace="es-other"), "dep2", now=NOW)
    store.fail("other", "svc", "es-other", "dep2", "k8s_applied", "boom", now=at(5))
    assert tree(str(tmp_path)) == ["deployments/other/svc.json", "deployments/test_user/test_service.json",
                                   "namespaces/es-test.json", "tenant_data/test_user_test_service.json"]
    failed = read(tmp_path / "deployments" / "other" / "svc.json")
    assert (failed["status"], failed["stage"], failed["error"]) == ("failed", "k8s_applied", "boom")
    assert failed["request"]["namespace"] == "es-other"


def test_write_report_writes_file_index_and_log_line(store, tmp_path):
    body = reports.build("starting", req(namespace="es-test"), "dep1", now=NOW)
    path = store.write_report(None, body, now=NOW)
    assert path == str(tmp_path / "deployment_reports" / "test_user_test_service_20240101T000000.000000Z.json")
    with open(path) as handle:
        assert handle.read() == reports.dumps(body)
    assert index_lines(store, "test_user", "test_service") == ["test_user_test_service_20240101T000000.000000Z.json"]
    assert (tmp_path / "deployment.log").read_text() == reports.log_line(body) + "\n"
    assert tree(str(tmp_path)) == ["deployment.log", "deployment_reports/" + os.path.basename(path),
                                   "deployments/test_user/test_service.reports"]


def test_write_report_log_outside_data_dir(tmp_path):
    log = tmp_path / "logs" / "nested" / "deployment.log"
    store = MetadataStore(str(tmp_path / "data"))
    store.write_report(str(log), reports.build("namespace_created", ident("u", "s"), "d"))
    store.write_report(str(log), reports.build("k8s_applied", ident("u", "s"), "d"))
    assert [line.split("Status: ")[1].split(",")[0] for line in log.read_text().splitlines()] == [
        "namespace_created", "k8s_applied"]
    assert not (tmp_path / "data" / "deployment.log").exists()


def test_write_report_refuses_incomplete_report(store, tmp_path):
    with pytest.raises(reports.ReportError, match="missing"):
        store.write_report(None, {"status": "starting"})
    with pytest.raises(reports.ReportError, match="unknown report status"):
        store.write_report(None, dict(reports.build("starting", req(), "d"), status="bogus"))
    with pytest.raises(StoreError, match="data_dir is required"):
        MetadataStore(None).write_report(None, reports.build("namespace_created", ident("u", "s"), "d"))
    assert tree(str(tmp_path)) == []


def test_invalid_identity_cannot_escape(tmp_path):
    data = tmp_path / "data"
    store = MetadataStore(str(data))
    body = reports.build("failed", ident("../../etc", "../x", ""), "d",
                         message="Cluster creation failed at stage metadata: user: bad")
    path = store.write_report(None, body)
    store.fail("../../etc", "../x", "", "d", "metadata", "user: bad")
    empty = reports.build("failed", ident("", "", ""), "d", message="user: is required")
    store.write_report(None, empty)
    assert os.path.dirname(path) == str(data / "deployment_reports")
    assert os.path.basename(path).startswith("_refused__refused_")
    assert sorted(os.listdir(str(tmp_path))) == ["data"]
    assert sorted(os.listdir(str(data))) == [".lock", "deployment.log", "deployment_reports", "deployments"]
    # no entry and no index for the raw values: the refusals are the refused pair's reports
    assert tree(str(data / "deployments")) == ["_refused/_refused.reports"]
    assert query(str(data), "../../etc", "../x") == {"deployments": [], "tenant": None, "reports": [],
                                                     "latest_report": None, "log_tail": []}
    answer = query(str(data), "_refused", "_refused")
    assert [e["report"] for e in answer["reports"]] == [body, empty]
    assert answer["deployments"] == [] and answer["tenant"] is None
    assert body["details"]["refused"] == {"user": "../../etc", "service_name": "../x", "namespace": ""}
    assert empty["details"]["refused"] == {"user": "", "service_name": "", "namespace": ""}
    # a report that names an invalid pair is never written (it would be a path of the raw value)
    with pytest.raises(reports.ReportError, match="a report names a valid pair"):
        store.write_report(None, dict(body, user="../../etc"))


# ---------------------------------------------------------------- report index and the 1 µs rule

def test_same_or_earlier_clock_is_bumped_past_the_pairs_last_report(store):
    body = reports.build("namespace_created", ident("test_user", "test_service"), "d")
    first = store.write_report(None, body, now=NOW)
    second = store.write_report(None, body, now=NOW)
    third = store.write_report(None, body, now=NOW - datetime.timedelta(hours=1))
    fourth = store.write_report(None, body, now=at(1))
    names = [os.path.basename(p) for p in (first, second, third, fourth)]
    assert names == ["test_user_test_service_20240101T000000.000000Z.json",
                     "test_user_test_service_20240101T000000.000001Z.json",
                     "test_user_test_service_20240101T000000.000002Z.json",
                     "test_user_test_service_20240101T000001.000000Z.json"]
    assert index_lines(store, "test_user", "test_service") == names


def test_last_report_comes_from_the_index_not_the_folder(store, tmp_path):
    body = reports.build("namespace_created", ident("u", "s"), "d")
    store.write_report(None, body, now=NOW)
    # A file of the pair that is not in its index (copied in by hand) is not looked for...
    stray = tmp_path / "deployment_reports" / "u_s_20240601T000000.000000Z.json"
    stray.write_text("{}")
    # ...but a name that exists is never overwritten: it moves 1 µs on.
    taken = tmp_path / "deployment_reports" / "u_s_20240101T000001.000000Z.json"
    taken.write_text('"taken"')
    second = store.write_report(None, body, now=at(1))
    third = store.write_report(None, body, now=at(1))
    assert [os.path.basename(p) for p in (second, third)] == ["u_s_20240101T000001.000001Z.json",
                                                              "u_s_20240101T000001.000002Z.json"]
    assert taken.read_text() == '"taken"' and stray.read_text() == "{}"
    assert index_lines(store, "u", "s") == ["u_s_20240101T000000.000000Z.json", "u_s_20240101T000001.000001Z.json",
                                            "u_s_20240101T000001.000002Z.json"]


def test_200_reports_sort_in_order_and_never_overwrite(store, tmp_path):
    for i in range(200):
        store.write_report(None, reports.build("k8s_applied", ident("test_user", "test_service"), "dep1",
                                               details={"n": i}))
    names = os.listdir(str(tmp_path / "deployment_reports"))
    assert len(names) == 200
    assert sorted(names) == index_lines(store, "test_user", "test_service")
    assert [read(tmp_path / "deployment_reports" / name)["details"]["n"] for name in sorted(names)] == list(range(200))
    answer = query(str(tmp_path), "test_user", "test_service", log_lines=5)
    assert [e["report"]["details"]["n"] for e in answer["reports"]] == list(range(200))
    assert answer["log_tail"] == (tmp_path / "deployment.log").read_text().splitlines()[-5:]
    assert not [n for n in os.listdir(str(tmp_path / "deployment_reports")) if n.startswith(".")]


def test_torn_index_and_log_lines_are_ended_not_merged(store, tmp_path):
    body = reports.build("namespace_created", ident("u", "s"), "d")
    store.write_report(None, body, now=NOW)
    with open(store.index_path("u", "s"), "a") as handle:
        handle.write("u_s_2024")  # a crash in the middle of an append
    with open(str(tmp_path / "deployment.log"), "a") as handle:
        handle.write("2024-01-01T00:00:00Z - User: u, Serv")
    store.write_report(None, body, now=NOW)
    assert index_lines(store, "u", "s") == ["u_s_20240101T000000.000000Z.json", "u_s_2024",
                                            "u_s_20240101T000000.000001Z.json"]
    assert [e["file"] for e in query(str(tmp_path), "u", "s")["reports"]] == [
        "u_s_20240101T000000.000000Z.json", "u_s_20240101T000000.000001Z.json"]
    log = (tmp_path / "deployment.log").read_text().splitlines()
    assert log[-1] == reports.log_line(body) and log[-2] == "2024-01-01T00:00:00Z - User: u, Serv"


def test_colliding_prefixes_have_their_own_index(store):
    ab_c, a_bc = ident("a_b", "c", "n1"), ident("a", "b_c", "n2")
    store.write_report(None, reports.build("namespace_created", ab_c, "d1"), now=NOW)
    store.write_report(None, reports.build("namespace_created", a_bc, "d2"), now=NOW)
    store.write_report(None, reports.build("k8s_applied", ab_c, "d3"), now=NOW)
    # same file-name prefix, one clock: the names never collide, each index keeps its own
    assert index_lines(store, "a_b", "c") == ["a_b_c_20240101T000000.000000Z.json",
                                              "a_b_c_20240101T000000.000002Z.json"]
    assert index_lines(store, "a", "b_c") == ["a_b_c_20240101T000000.000001Z.json"]
    assert [e["report"]["deployment_id"] for e in store.list_reports("a_b", "c")] == ["d1", "d3"]
    assert [e["report"]["deployment_id"] for e in store.list_reports("a", "b_c")] == ["d2"]
    assert [e["report"]["deployment_id"] for e in store.list_reports("a_b", "c", "d3")] == ["d3"]
    assert store.list_reports("x", "y") == []


# ---------------------------------------------------------------- query

def seed(store):
    """Two users, a created cluster with reports of two deployments, a creating one, a refused one."""
    store.begin(req("test_user", "test_service", "es-test"), "dep0", now=NOW)
    for status in ("starting", "namespace_created"):
        store.write_report(None, reports.build(status, req("test_user", "test_service", "es-test"), "dep0"))
    store.write_report(None, reports.build("failed", ident("test_user", "test_service", "es-test"), "dep0",
                                           message=reports.failed_message("k8s_applied", "boom")))
    store.fail("test_user", "test_service", "es-test", "dep0", "k8s_applied", "boom")
    store.begin(req("test_user", "test_service", "es-test"), "dep1", now=at(10))
    for status in ("starting", "namespace_created", "completed"):
        store.write_report(None, reports.build(status, req("test_user", "test_service", "es-test"), "dep1"))
    store.complete(req("test_user", "test_service", "es-test"), "dep1", now=at(20))
    store.begin(req("test_user", "other", "es-other"), "dep2", now=at(30))
    store.write_report(None, reports.build("starting", req("test_user", "other", "es-other"), "dep2"))
    store.begin(req("u2", "s"), "dep3", now=at(40))
    store.write_report(None, reports.build("starting", req("u2", "s"), "dep3"))


def test_query_of_a_pair(store, tmp_path):
    seed(store)
    answer = query(str(tmp_path), "test_user", "test_service", log_lines=4)
    assert sorted(answer) == ["deployments", "latest_report", "log_tail", "reports", "tenant"]
    assert [e["deployment_id"] for e in answer["deployments"]] == ["dep1"]
    assert answer["tenant"]["status"] == "created" and answer["tenant"]["deployment_id"] == "dep1"
    assert [(e["report"]["deployment_id"], e["report"]["status"]) for e in answer["reports"]] == [
        ("dep0", "starting"), ("dep0", "namespace_created"), ("dep0", "failed"),
        ("dep1", "starting"), ("dep1", "namespace_created"), ("dep1", "completed")]
    assert answer["reports"][0]["path"] == str(tmp_path / "deployment_reports" / answer["reports"][0]["file"])
    assert answer["latest_report"] == answer["reports"][-1]
    # the log lines of the pair's last reports: exactly the lines that were appended
    pair_lines = [line for line in (tmp_path / "deployment.log").read_text().splitlines()
                  if " - User: test_user, Service: test_service, " in line]
    assert len(pair_lines) == 6 and answer["log_tail"] == pair_lines[-4:]
    only = query(str(tmp_path), "test_user", "test_service", deployment_id="dep0", log_lines=0)
    assert [e["report"]["status"] for e in only["reports"]] == ["starting", "namespace_created", "failed"]
    assert only["latest_report"]["report"]["status"] == "failed" and only["log_tail"] == []
    nobody = query(str(tmp_path), "nobody", "nothing")
    assert nobody == {"deployments": [], "tenant": None, "reports": [], "latest_report": None, "log_tail": []}


def test_a_refused_run_does_not_become_the_latest_report_of_a_live_cluster(store, tmp_path):
    seed(store)
    refused = reports.build("failed", ident("test_user", "test_service", "es-test"), "dep9",
                            message=reports.failed_message("metadata", "already exists"))
    outcome = store.fail("test_user", "test_service", "es-test", "dep9", "metadata", "already exists")
    assert outcome["status_changed"] is False
    store.write_report(None, refused)
    answer = query(str(tmp_path), "test_user", "test_service", log_lines=1)
    assert answer["deployments"][0]["status"] == "created" and answer["deployments"][0]["deployment_id"] == "dep1"
    assert answer["latest_report"]["report"]["status"] == "completed"
    assert answer["latest_report"]["report"]["deployment_id"] == "dep1"
    assert answer["reports"][-1]["report"]["deployment_id"] == "dep9"  # the refusal stays in the history
    assert answer["log_tail"] == [reports.log_line(refused)]  # and in the log
    mine = query(str(tmp_path), "test_user", "test_service", deployment_id="dep9")
    assert mine["latest_report"]["report"]["deployment_id"] == "dep9"


def test_query_without_a_pair(store, tmp_path):
    seed(store)
    log = (tmp_path / "deployment.log").read_text().splitlines()
    everyone = query(str(tmp_path), log_lines=3)
    assert [(e["user"], e["service_name"]) for e in everyone["deployments"]] == [
        ("test_user", "other"), ("test_user", "test_service"), ("u2", "s")]
    assert everyone["log_tail"] == log[-3:] and everyone["reports"] == [] and everyone["tenant"] is None
    user = query(str(tmp_path), "test_user", log_lines=100)
    assert [e["service_name"] for e in user["deployments"]] == ["other", "test_service"]
    assert user["log_tail"] == [line for line in log if " - User: test_user, " in line]
    service = query(str(tmp_path), service_name="s")
    assert [e["user"] for e in service["deployments"]] == ["u2"]
    other_log = tmp_path / "elsewhere.log"
    other_log.write_text("one\ntwo\n")
    assert query(str(tmp_path), log_file=str(other_log))["log_tail"] == ["one", "two"]


class Recorder:
    """Records every directory listed and every file opened for reading while installed."""

    def __init__(self, monkeypatch):
        self.listed, self.opened = [], []
        real_listdir, real_scandir, real_open = os.listdir, os.scandir, open

        def listdir(path="."):
            self.listed.append(os.path.abspath(path))
            return real_listdir(path)

        def scandir(path="."):
            self.listed.append(os.path.abspath(path))
            return real_scandir(path)

        def opener(path, *args, **kwargs):
            self.opened.append(os.path.abspath(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "listdir", listdir)
        monkeypatch.setattr(os, "scandir", scandir)
        for module in (fileutil, storemod, reports):
            monkeypatch.setattr(module, "open", opener, raising=False)


def test_write_and_pair_query_read_only_the_pairs_files(tmp_path, monkeypatch):
    store = MetadataStore(str(tmp_path))
    for n in range(30):
        user, service = "user%d" % (n % 3), "svc%d" % n
        store.begin(req(user, service), "dep%d" % n, ROOMY)
        for status in ("starting", "namespace_created"):
            store.write_report(None, reports.build(status, req(user, service), "dep%d" % n))
    rec = Recorder(monkeypatch)
    answer = query(str(tmp_path), "user1", "svc7")
    assert [e["report"]["status"] for e in answer["reports"]] == ["starting", "namespace_created"]
    allowed = {store.legacy_path, store.entry_path("user1", "svc7"), store.index_path("user1", "svc7"),
               store.tenant_path("user1", "svc7")} | {e["path"] for e in answer["reports"]}
    assert rec.listed == []
    assert set(rec.opened) <= allowed and len(rec.opened) == 6

    rec.opened[:], rec.listed[:] = [], []
    store.write_report(None, reports.build("k8s_applied", req("user1", "svc7"), "dep7"))
    assert rec.listed == []
    # the pair's entry too: the report moves on the lease of its running run
    assert set(rec.opened) <= {store.legacy_path, store.index_path("user1", "svc7"), store.entry_path("user1", "svc7")}

    rec.opened[:], rec.listed[:] = [], []
    with pytest.raises(StoreError, match="namespace 'ns-user1-svc7' is already used by cluster 'svc7' of user 'user1'"):
        store.begin(req("user2", "new", namespace="ns-user1-svc7"), "dep-new", ROOMY)
    store.begin(req("user2", "new"), "dep-new", ROOMY)
    # quota: only the user's own folder; conflicts: the pair's entry, the namespace's claim (and its holder)
    user_dir = os.path.join(store.deployments_dir, "user2")
    assert rec.listed == [user_dir]
    for path in rec.opened:
        if path.startswith("/proc/"):
            continue  # the new run's lease: boot id and process start time
        assert (path in (store.legacy_path, store.claim_path("ns-user1-svc7"), store.claim_path("ns-user2-new"),
                         store.entry_path("user1", "svc7"), store.tenant_path("user2", "new"))
                or os.path.dirname(path) == user_dir), path


# ---------------------------------------------------------------- namespaces and quota across tenants

def test_namespace_claims_across_tenants(store, tmp_path):
    store.begin(req("u1", "s1", namespace="shared"), "dep1")
    with pytest.raises(StoreError, match="namespace 'shared' is already used by cluster 's1' of user 'u1'"
                                         r" \(status creating\)"):
        store.begin(req("u2", "s2", namespace="shared"), "dep2")
    # the refused run's rollback keeps the first run's claim
    store.fail("u2", "s2", "shared", "dep2", "metadata", "namespace already used")
    assert read(tmp_path / "namespaces" / "shared.json")["deployment_id"] == "dep1"
    store.complete(req("u1", "s1", namespace="shared"), "dep1")
    with pytest.raises(StoreError, match=r"\(status created\)"):
        store.begin(req("u2", "s2", namespace="shared"), "dep2")
    # a failed run releases its claim; another tenant may then take the namespace
    store.begin(req("u3", "s3", namespace="free"), "dep3")
    store.fail("u3", "s3", "free", "dep3", "k8s_applied", "boom")
    assert not (tmp_path / "namespaces" / "free.json").exists()
    store.begin(req("u2", "s2", namespace="free"), "dep4")
    assert read(tmp_path / "namespaces" / "free.json") == {
        "user": "u2", "service_name": "s2", "deployment_id": "dep4"}


@pytest.mark.parametrize("holder", ["failed entry", "other deployment", "other namespace", "no entry"])
def test_stale_claim_may_be_taken(store, tmp_path, holder):
    store.begin(req("u1", "s1", namespace="ns1"), "dep1")
    claim = tmp_path / "namespaces" / "ns1.json"
    entry_path = tmp_path / "deployments" / "u1" / "s1.json"
    entry = read(entry_path)
    if holder == "failed entry":  # a crash between the failed status and the release of the claim
        entry["status"] = "failed"
        entry_path.write_text(json.dumps(entry))
    elif holder == "other deployment":
        claim.write_text(json.dumps({"user": "u1", "service_name": "s1", "deployment_id": "dep0"}))
    elif holder == "other namespace":
        entry["namespace"] = "ns9"
        entry_path.write_text(json.dumps(entry))
    else:
        entry_path.unlink()
    store.begin(req("u2", "s2", namespace="ns1"), "dep2")
    assert read(claim)["user"] == "u2"


def test_quota_counts_only_the_users_live_clusters(store):
    quota = {"max_clusters_per_user": 2, "max_cpu_per_user": "4"}
    for n in range(5):
        store.begin(req("crowd", "s%d" % n, cpu_limit="1"), "c%d" % n, ROOMY)
    store.begin(req("u", "s1", cpu_limit="2"), "d1", quota)
    store.begin(req("u", "s2", cpu_limit="2"), "d2", quota)
    with pytest.raises(StoreError, match="max_clusters_per_user exceeded for user 'u': limit 2, in use 2"):
        store.begin(req("u", "s3", cpu_limit="1"), "d3", quota)
    store.fail("u", "s2", "", "d2", "rollout", "x")
    with pytest.raises(StoreError, match="max_cpu_per_user exceeded for user 'u': limit 4, in use 2, requested 3"):
        store.begin(req("u", "s3", cpu_limit="3"), "d3", quota)
    store.begin(req("u", "s3", cpu_limit="2"), "d3", quota)
    assert [e["status"] for e in store.list_deployments(user="u")] == ["creating", "failed", "creating"]


# ---------------------------------------------------------------- migration of a legacy folder

LEGACY_REQ = dict(req("test_user", "test_service", "es-test"))


def legacy_folder(root):
    """A data folder as the previous version left it: every status in deployments.json, reports with
    ambiguous prefixes, a refused request, a report-only pair, a broken report, tenant records, a log."""
    root = str(root)
    rdir = os.path.join(root, "deployment_reports")
    os.makedirs(rdir)
    os.makedirs(os.path.join(root, "tenant_data"))

    def entry(user, service, namespace, dep, status, **extra):
        out = {"user": user, "service_name": service, "namespace": namespace, "deployment_id": dep,
               "status": status, "stage": None, "error": None, "created_at": "2024-01-01T00:00:00Z",
               "updated_at": "2024-01-01T00:00:00Z", "reports_dir": rdir}
        out.update(extra)
        return out

    data = {
        "test_user/test_service": entry("test_user", "test_service", "es-test", "dep1", "created",
                                        request=LEGACY_REQ),
        "a_b/c": entry("a_b", "c", "ns-abc", "dep2", "creating", request=dict(req("a_b", "c", "ns-abc"))),
        "a/b_c": entry("a", "b_c", "ns-a-bc", "dep3", "failed", stage="metadata", error="name collision"),
        "u1/s1": entry("u1", "s1", "ns-u1", "dep4", "failed", stage="rollout", error="timeout"),
        "../../etc/x y": entry("../../etc", "x y", "Bad NS", "dep5", "failed", stage="metadata",
                               error="user: must be ..."),
        "/": entry("", "", "", "dep6", "failed", stage="metadata", error="user: is required"),
        "not/an entry": ["ignored"],
    }
    with open(os.path.join(root, "deployments.json"), "w") as handle:
        json.dump(data, handle, indent=2)
    for user, service in (("test_user", "test_service"), ("a_b", "c")):
        record = r.record_fields(req(user, service, data["%s/%s" % (user, service)]["namespace"]))
        record.update(status=data["%s/%s" % (user, service)]["status"], created_at="2024-01-01T00:00:00Z",
                      deployment_id=data["%s/%s" % (user, service)]["deployment_id"])
        with open(os.path.join(root, "tenant_data", "%s_%s.json" % (user, service)), "w") as handle:
            json.dump(record, handle)
    written = [
        ("test_user", "test_service", "es-test", "dep0", "starting", 1),
        ("a_b", "c", "ns-abc", "dep2", "starting", 2),
        ("test_user", "test_service", "es-test", "dep1", "starting", 3),
        ("a", "b_c", "ns-a-bc", "dep3", "failed", 3),  # same prefix a_b_c_ and a later name than a_b/c's
        ("test_user", "test_service", "es-test", "dep1", "namespace_created", 4),
        ("../../etc", "x y", "Bad NS", "dep5", "failed", 5),
        ("", "", "", "dep6", "failed", 6),
        ("solo", "svc", "ns-solo", "dep7", "namespace_created", 7),  # a report without a status
        ("a_b", "c", "ns-abc", "dep2", "namespace_created", 8),
        ("test_user", "test_service", "es-test", "dep1", "completed", 9),
    ]
    lines = []
    for user, service, namespace, dep, status, second in written:
        when = at(second) + datetime.timedelta(microseconds=1 if user == "a" else 0)
        kwargs = {"message": "refused"} if status == "failed" else {}
        body = reports.build(status, dict(LEGACY_REQ, **ident(user, service, namespace)), dep, now=when, **kwargs)
        body.update(ident(user, service, namespace))  # an earlier version wrote refusals under the raw identity
        with open(os.path.join(rdir, reports.filename(user, service, when)), "w") as handle:
            handle.write(reports.dumps(body))
        lines.append(reports.log_line(body))
    with open(os.path.join(rdir, "test_user_test_service_20240101T000009.500000Z.json"), "w") as handle:
        handle.write("{broken")
    with open(os.path.join(root, "deployment.log"), "w") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return data


PAIRS = [("test_user", "test_service"), ("a_b", "c"), ("a", "b_c"), ("u1", "s1"), ("../../etc", "x y"), ("", ""),
         ("solo", "svc"), ("nobody", "nothing")]


def answers(data_dir):
    """Every question the old store answered about the legacy folder."""
    out = {"all": query(data_dir, log_lines=50), "user a": query(data_dir, "a"),
           "service c": query(data_dir, service_name="c")}
    for user, service in PAIRS:
        out[(user, service)] = query(data_dir, user, service)
        out[(user, service, "dep1")] = query(data_dir, user, service, deployment_id="dep1")
    return out


def check_legacy_answers(got, data):
    assert [e["deployment_id"] for e in got["all"]["deployments"]] == ["dep5", "dep6", "dep3", "dep2", "dep1",
                                                                       "dep4"]
    assert [e["service_name"] for e in got["user a"]["deployments"]] == ["b_c"]
    assert [e["user"] for e in got["service c"]["deployments"]] == ["a_b"]
    pair = got[("test_user", "test_service")]
    assert pair["deployments"] == [data["test_user/test_service"]]
    assert pair["tenant"]["deployment_id"] == "dep1"
    assert [(e["report"]["deployment_id"], e["report"]["status"]) for e in pair["reports"]] == [
        ("dep0", "starting"), ("dep1", "starting"), ("dep1", "namespace_created"), ("dep1", "completed")]
    assert [e["report"]["status"] for e in got[("test_user", "test_service", "dep1")]["reports"]] == [
        "starting", "namespace_created", "completed"]
    assert pair["log_tail"] == [line for line in got["all"]["log_tail"] if "User: test_user," in line]
    assert [e["report"]["status"] for e in got[("a_b", "c")]["reports"]] == ["starting", "namespace_created"]
    assert [e["report"]["deployment_id"] for e in got[("a", "b_c")]["reports"]] == ["dep3"]
    assert got[("a", "b_c")]["deployments"][0]["error"] == "name collision" and got[("a", "b_c")]["tenant"] is None
    assert got[("u1", "s1")]["reports"] == [] and got[("u1", "s1")]["deployments"][0]["status"] == "failed"
    assert [e["report"]["status"] for e in got[("../../etc", "x y")]["reports"]] == ["failed"]
    assert got[("", "")]["deployments"][0]["deployment_id"] == "dep6"
    assert [e["report"]["deployment_id"] for e in got[("", "")]["reports"]] == ["dep6"]
    assert got[("solo", "svc")]["deployments"] == [] and len(got[("solo", "svc")]["reports"]) == 1
    assert got[("nobody", "nothing")]["reports"] == [] and got[("nobody", "nothing")]["deployments"] == []


def migrate_with_a_write(data_dir):
    MetadataStore(data_dir).write_report(None, reports.build("namespace_created", ident("zz", "new"), "dep9"),
                                         now=at(100))


def without_new_writes(got):
    """The answers minus what ``migrate_with_a_write`` added (one log line)."""
    got["all"]["log_tail"] = [line for line in got["all"]["log_tail"] if "User: zz," not in line]
    return got


def test_migration_keeps_every_answer(tmp_path):
    data = legacy_folder(tmp_path)
    before = answers(str(tmp_path))
    check_legacy_answers(before, data)
    assert os.path.exists(str(tmp_path / "deployments.json")) and not (tmp_path / "deployments").exists()
    migrate_with_a_write(str(tmp_path))
    assert not (tmp_path / "deployments.json").exists()
    assert read(tmp_path / "deployments.json.migrated") == data
    files = tree(str(tmp_path))
    assert [f for f in files if f.startswith(("deployments/", "namespaces/"))] == [
        "deployments/%/%.json", "deployments/%/%.reports",
        "deployments/%2E.%2F..%2Fetc/x%20y.json", "deployments/%2E.%2F..%2Fetc/x%20y.reports",
        "deployments/a/b_c.json", "deployments/a/b_c.reports",
        "deployments/a_b/c.json", "deployments/a_b/c.reports",
        "deployments/solo/svc.reports",
        "deployments/test_user/test_service.json", "deployments/test_user/test_service.reports",
        "deployments/u1/s1.json",
        "deployments/zz/new.reports",
        "namespaces/es-test.json", "namespaces/ns-abc.json"]
    assert read(tmp_path / "namespaces" / "ns-abc.json") == {
        "user": "a_b", "service_name": "c", "deployment_id": "dep2"}
    for key, entry in data.items():
        if isinstance(entry, dict):
            assert MetadataStore(str(tmp_path)).get_deployment(entry["user"], entry["service_name"]) == entry, key
    after = without_new_writes(answers(str(tmp_path)))
    assert after == before
    # the migrated store works on: conflicts, quota and new reports
    store = MetadataStore(str(tmp_path))
    with pytest.raises(StoreError, match="namespace: cannot change from 'es-test' to 'es-other'"):
        store.begin(req("test_user", "test_service", "es-other"), "dep10")
    with pytest.raises(StoreError, match="namespace 'ns-abc' is already used by cluster 'c' of user 'a_b'"):
        store.begin(req("zz", "new", "ns-abc"), "dep10")
    store.write_report(None, reports.build("rollout_completed", ident("a_b", "c", "ns-abc"), "dep2"), now=at(200))
    assert [e["report"]["status"] for e in store.list_reports("a_b", "c")] == [
        "starting", "namespace_created", "rollout_completed"]


@pytest.mark.parametrize("crash_at", [1, 4, 8, 10, 14, "rename"])
def test_migration_crash_part_way_is_redone(tmp_path, monkeypatch, crash_at):
    """A crash at the n-th file the migration writes (or at its last step) leaves a folder that reads
    as before, and the next write migrates it completely; indexes hold each report once."""
    legacy_folder(tmp_path)
    before = answers(str(tmp_path))
    calls = []
    real_write, real_rename = fileutil.atomic_write, os.rename

    def crashing_write(path, data, mode=0o644, durable=True):
        calls.append(path)
        if len(calls) == crash_at:
            raise OSError(28, "No space left on device (simulated)")
        return real_write(path, data, mode, durable)

    def crashing_rename(src, dst):
        if src.endswith("deployments.json"):
            raise OSError(5, "I/O error (simulated)")
        return real_rename(src, dst)

    if crash_at == "rename":
        monkeypatch.setattr(storemod.os, "rename", crashing_rename)
    else:
        monkeypatch.setattr(fileutil, "atomic_write", crashing_write)
    with pytest.raises(OSError, match="simulated"):
        migrate_with_a_write(str(tmp_path))
    monkeypatch.undo()
    assert (tmp_path / "deployments.json").exists() and not (tmp_path / "deployments.json.migrated").exists()
    assert answers(str(tmp_path)) == before
    migrate_with_a_write(str(tmp_path))
    assert not (tmp_path / "deployments.json").exists()
    assert without_new_writes(answers(str(tmp_path))) == before
    store = MetadataStore(str(tmp_path))
    lines = index_lines(store, "test_user", "test_service")
    assert len(lines) == len(set(lines)) == 4 and lines == sorted(lines)
    assert not store.migrate()


def test_migration_syncs_its_files_before_its_last_step(tmp_path, monkeypatch):
    """The migration writes its files without an fsync each, so it must sync them all before
    deployments.json is renamed: after the rename nothing would redo them."""
    legacy_folder(tmp_path)
    events = []
    real_sync, real_rename = os.sync, os.rename
    monkeypatch.setattr(storemod.os, "sync", lambda: events.append("sync") or real_sync())
    monkeypatch.setattr(storemod.os, "rename", lambda src, dst: events.append(
        "rename " + os.path.basename(src)) or real_rename(src, dst))
    assert MetadataStore(str(tmp_path)).migrate()
    assert [e for e in events if not e.startswith("rename .tmp-")] == ["sync", "rename deployments.json"]
    assert events[-1] == "rename deployments.json" and len(events) > 10


def test_migration_is_idempotent_when_redone(tmp_path):
    legacy_folder(tmp_path)
    shutil.copy(str(tmp_path / "deployments.json"), str(tmp_path / "copy.json"))
    store = MetadataStore(str(tmp_path))
    assert store.migrate()
    first = {path: (tmp_path / path).read_bytes() for path in tree(str(tmp_path))}
    # the same legacy file again (a crash after everything but the rename): same files, a second backup
    shutil.copy(str(tmp_path / "copy.json"), str(tmp_path / "deployments.json"))
    assert store.migrate()
    second = {path: (tmp_path / path).read_bytes() for path in tree(str(tmp_path))}
    assert second.pop("deployments.json.migrated.1") == first["deployments.json.migrated"]
    assert second == first


def test_folder_with_reports_but_no_statuses_is_migrated(tmp_path):
    data = legacy_folder(tmp_path)
    (tmp_path / "deployments.json").unlink()
    before = answers(str(tmp_path))
    assert [e["report"]["status"] for e in before[("solo", "svc")]["reports"]] == ["namespace_created"]
    assert before[("a", "b_c")]["deployments"] == [] and len(before[("a", "b_c")]["reports"]) == 1
    migrate_with_a_write(str(tmp_path))
    assert read(tmp_path / "deployments.json.migrated") == {}
    assert without_new_writes(answers(str(tmp_path))) == before
    assert data  # the statuses are gone with deployments.json; the reports are all indexed
    assert len(index_lines(MetadataStore(str(tmp_path)), "test_user", "test_service")) == 4


def test_reads_and_check_only_never_migrate(tmp_path):
    legacy_folder(tmp_path)
    files = tree(str(tmp_path))
    store = MetadataStore(str(tmp_path))
    answers(str(tmp_path))
    store.begin(req("new", "one"), "dep1", check_only=True)
    store.fail("a_b", "c", "ns-abc", "dep2", "rollout", "x", check_only=True)
    assert store.list_deployments(user="test_user")[0]["status"] == "created"
    assert tree(str(tmp_path)) == files


@pytest.mark.parametrize("content,error", [("{not json", "is not valid JSON"),
                                           ("[1, 2]", "does not hold a JSON object")])
def test_invalid_legacy_file_is_a_clear_error(tmp_path, content, error):
    (tmp_path / "deployments.json").write_text(content)
    store = MetadataStore(str(tmp_path))
    for call in (lambda: store.begin(req(), "dep1"), lambda: store.fail("u", "s", "n", "d", "x", "y"),
                 lambda: store.write_report(None, reports.build("namespace_created", ident("u", "s"), "d")),
                 lambda: query(str(tmp_path), "u", "s"), store.list_deployments):
        with pytest.raises(StoreError, match=error):
            call()
    assert tree(str(tmp_path)) == ["deployments.json"]


def test_legacy_begin_conflicts_migrate_then_refuse(tmp_path):
    legacy_folder(tmp_path)
    store = MetadataStore(str(tmp_path))
    with pytest.raises(StoreError, match="namespace 'es-test' is already used by cluster 'test_service'"):
        store.begin(req("zz", "new", "es-test"), "dep9", check_only=True)
    with pytest.raises(StoreError, match="namespace 'es-test' is already used by cluster 'test_service'"):
        store.begin(req("zz", "new", "es-test"), "dep9")
    assert not (tmp_path / "deployments.json").exists()  # the write migrated before it refused
    store.begin(req("u1", "s1", "ns-u1"), "dep10")
    assert store.get_deployment("u1", "s1")["status"] == "creating"


# ---------------------------------------------------------------- concurrent writers

def _report_worker(data_dir, tag, count, barrier):
    barrier.wait()
    store = MetadataStore(data_dir)
    for i in range(count):
        store.write_report(None, reports.build("k8s_applied", ident("shared", "pair"), tag, details={"i": i}),
                           now=NOW)
        store.write_report(None, reports.build("k8s_applied", ident("own", tag), tag, details={"i": i}))


def test_concurrent_writers_lose_nothing(tmp_path):
    legacy_folder(tmp_path)  # the first writer migrates; the others wait on the lock
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_report_worker, args=(str(tmp_path), "p%d" % n, 15, barrier)) for n in range(3)]
    for proc in procs:
        proc.start()
    tbarrier = threading.Barrier(2)
    threads = [threading.Thread(target=_report_worker, args=(str(tmp_path), "t%d" % n, 15, tbarrier))
               for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    store = MetadataStore(str(tmp_path))
    shared = index_lines(store, "shared", "pair")
    # all written at the same clock: every name 1 µs past the one before, in index order
    assert shared == ["shared_pair_20240101T000000.%06dZ.json" % i for i in range(75)]
    found = store.list_reports("shared", "pair")
    assert len(found) == 75
    for tag in ("p0", "p1", "p2", "t0", "t1"):
        assert [e["report"]["details"]["i"] for e in found if e["report"]["deployment_id"] == tag] == list(range(15))
        assert [e["report"]["details"]["i"] for e in store.list_reports("own", tag)] == list(range(15))
    log = (tmp_path / "deployment.log").read_text().splitlines()
    assert len(log) == 10 + 150
    on_disk = set(os.listdir(str(tmp_path / "deployment_reports")))
    assert len(on_disk) == 11 + 150 and set(shared) <= on_disk
    assert not (tmp_path / "deployments.json").exists()


def _begin_many(data_dir, user, count, barrier):
    barrier.wait()
    store = MetadataStore(data_dir)
    for i in range(count):
        store.begin(req(user, "s%d" % i, namespace="%s-%d" % (user, i)), "d-%s-%d" % (user, i), ROOMY)
        store.write_report(None, reports.build("starting", req(user, "s%d" % i, namespace="%s-%d" % (user, i)),
                                               "d-%s-%d" % (user, i)))
        if i % 2:
            store.fail(user, "s%d" % i, "%s-%d" % (user, i), "d-%s-%d" % (user, i), "rollout", "x")


def test_concurrent_begins_and_fails_keep_entries_and_claims(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_begin_many, args=(str(tmp_path), "user%d" % n, 10, barrier)) for n in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    entries = MetadataStore(str(tmp_path)).list_deployments()
    assert len(entries) == 30
    assert sorted(e["namespace"] for e in entries if e["status"] == "creating") == sorted(
        os.path.splitext(name)[0] for name in os.listdir(str(tmp_path / "namespaces")))
    assert len(os.listdir(str(tmp_path / "namespaces"))) == 15
    assert all(len(query(str(tmp_path), e["user"], e["service_name"])["reports"]) == 1 for e in entries)
