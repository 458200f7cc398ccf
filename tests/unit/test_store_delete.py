"""The delete steps of the metadata store (begin_delete, complete_delete, fail_delete)."""

import datetime
import os

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import reports
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import request as r
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import (
    MetadataStore,
    StoreError,
    UnknownTenant,
    query,
)

NOW = datetime.datetime(2024, 1, 1, 0, 0, 0, tzinfo=datetime.timezone.utc)
LATER = NOW + datetime.timedelta(minutes=5)


def req(user="u", service="s", namespace="es-ns", **changes):
    return r.validate(dict({"user": user, "service_name": service, "namespace": namespace}, **changes))


def created(store, user="u", service="s", namespace="es-ns", deployment_id="dep1"):
    store.begin(req(user, service, namespace), deployment_id, now=NOW)
    store.complete(req(user, service, namespace), deployment_id, now=NOW)


def files(folder):
    out = set()
    for dirpath, _dirs, names in os.walk(folder):
        out.update(os.path.relpath(os.path.join(dirpath, name), folder) for name in names)
    return out


@pytest.fixture
def store(tmp_path):
    return MetadataStore(str(tmp_path / "data"))


def test_delete_of_a_created_cluster(store):
    created(store)
    store.write_report(None, reports.build("completed", req(), "dep1", now=NOW))
    entry = store.begin_delete("u", "s", "del1", now=LATER)
    assert (entry["status"], entry["deployment_id"], entry["previous_deployment_id"]) == ("deleting", "del1", "dep1")
    assert entry["namespace"] == "es-ns" and entry["request"]["namespace"] == "es-ns"
    assert entry["created_at"] == "2024-01-01T00:00:00Z" and entry["updated_at"] == "2024-01-01T00:05:00Z"
    assert store.get_deployment("u", "s") == entry
    # While it is being deleted it holds its namespace and its quota, and cannot be created again.
    with pytest.raises(StoreError, match="namespace 'es-ns' is already used by cluster 's' of user 'u'"):
        store.begin(req("v", "t", "es-ns"), "other", now=LATER)
    with pytest.raises(StoreError, match="max_clusters_per_user"):
        store.begin(req("u", "t", "es-other"), "other", quota={"max_clusters_per_user": 1}, now=LATER)
    with pytest.raises(StoreError, match="is being deleted by deployment del1"):
        store.begin(req(), "again", now=LATER)
    with pytest.raises(StoreError, match="already being deleted by deployment del1"):
        store.begin_delete("u", "s", "del2", now=LATER)
    store.write_report(None, reports.build("deleting", req(), "del1", now=LATER))

    outcome = store.complete_delete("u", "s", "del1", now=LATER)
    assert outcome["record_deleted"] is True
    assert outcome["deployment"]["status"] == "deleted" and outcome["deployment"]["previous_deployment_id"] == "dep1"
    assert store.get_tenant("u", "s") is None
    assert not os.path.exists(store.claim_path("es-ns"))
    # The history stays and a query says deleted.
    answer = query(store.data_dir, "u", "s")
    assert [d["status"] for d in answer["deployments"]] == ["deleted"]
    assert answer["tenant"] is None
    assert [item["report"]["status"] for item in answer["reports"]] == ["completed", "deleting"]
    assert answer["latest_report"]["report"]["status"] == "deleting"
    with pytest.raises(StoreError, match="was already deleted"):
        store.begin_delete("u", "s", "del2", now=LATER)
    # The namespace and the quota are free again; the same pair can be created again.
    store.begin(req("u", "t", "es-ns"), "other", quota={"max_clusters_per_user": 1}, now=LATER)
    store.fail("u", "t", "es-ns", "other", "metadata", "test")
    store.begin(req(), "dep2", now=LATER)
    assert store.get_deployment("u", "s")["status"] == "creating"


@pytest.mark.parametrize("user, service", [("nobody", "s"), ("../../etc", "s"), ("", "")])
def test_an_unknown_tenant_writes_nothing(store, user, service):
    with pytest.raises(UnknownTenant, match="nothing to delete"):
        store.begin_delete(user, service, "del1")
    assert not os.path.exists(store.data_dir)
    created(store)
    before = files(store.data_dir)
    with pytest.raises(UnknownTenant):
        store.begin_delete(user, service, "del1")
    assert store.fail_delete(user, service, "del1", "delete_metadata", "x")["status_changed"] is False
    assert files(store.data_dir) == before


def test_a_cluster_being_created_is_not_deleted(store):
    store.begin(req(), "dep1", now=NOW)
    before = store.get_deployment("u", "s")
    with pytest.raises(StoreError, match="is being created by deployment dep1"):
        store.begin_delete("u", "s", "del1", now=LATER)
    outcome = store.fail_delete("u", "s", "del1", "delete_metadata", "refused", now=LATER)
    assert outcome == {"deployment": before, "record_deleted": False, "status_changed": False}
    assert store.get_deployment("u", "s") == before
    assert store.get_tenant("u", "s")["status"] == "creating"


def test_a_cluster_being_updated_is_not_deleted(store):
    created(store)
    store.begin(req(replicas=3), "upd1", now=LATER)
    before = store.get_deployment("u", "s")
    with pytest.raises(StoreError, match="is being updated by deployment upd1"):
        store.begin_delete("u", "s", "del1", now=LATER)
    assert store.get_deployment("u", "s") == before


def test_a_failed_delete_is_recorded_and_can_be_run_again(store):
    created(store)
    store.begin_delete("u", "s", "del1", now=LATER)
    outcome = store.fail_delete("u", "s", "del1", "delete_resources", "namespace still terminating", now=LATER)
    assert outcome["status_changed"] and outcome["record_deleted"]
    entry = store.get_deployment("u", "s")
    assert (entry["status"], entry["stage"]) == ("failed", "delete_resources")
    assert entry["error"] == "namespace still terminating"
    assert entry["request"]["namespace"] == "es-ns"
    assert not os.path.exists(store.claim_path("es-ns"))
    entry = store.begin_delete("u", "s", "del2", now=LATER)
    assert (entry["status"], entry["previous_deployment_id"]) == ("deleting", "del1")
    assert store.complete_delete("u", "s", "del2")["record_deleted"] is False
    assert store.get_deployment("u", "s")["status"] == "deleted"


def test_a_failed_cluster_whose_namespace_another_cluster_holds_is_not_deleted(store):
    store.begin(req(), "dep1", now=NOW)
    store.fail("u", "s", "es-ns", "dep1", "rollout", "image pull")
    created(store, "v", "t", "es-ns", "dep2")
    before = store.get_deployment("u", "s")
    with pytest.raises(StoreError, match="namespace 'es-ns' of cluster 's' of user 'u' is now used by cluster 't'"):
        store.begin_delete("u", "s", "del1")
    assert store.get_deployment("u", "s") == before


def test_complete_delete_needs_the_delete_to_have_begun(store):
    created(store)
    with pytest.raises(StoreError, match="is not being deleted by deployment del1"):
        store.complete_delete("u", "s", "del1")
    assert store.get_deployment("u", "s")["status"] == "created"


def _meta(store, state, **params):
    from ansible_collections.yunpeng.es_serverless.plugins.modules import es_tenant_meta

    args = dict((key, spec.get("default")) for key, spec in es_tenant_meta.ARGUMENT_SPEC["argument_spec"].items())
    args.update(params, data_dir=store.data_dir, state=state)
    return es_tenant_meta.run(args, False, None)


def test_the_module_says_when_the_tenant_is_unknown(store):
    from ansible_collections.yunpeng.es_serverless.plugins.module_utils.entry import ModuleFailed

    with pytest.raises(ModuleFailed) as failed:
        _meta(store, "begin_delete", user="u", service_name="s", deployment_id="del1")
    assert failed.value.result["unknown_tenant"] is True
    created(store)
    result = _meta(store, "begin_delete", user="u", service_name="s", deployment_id="del1")
    assert (result["unknown_tenant"], result["deployment"]["status"]) == (False, "deleting")
    with pytest.raises(ModuleFailed) as failed:
        _meta(store, "begin_delete", user="u", service_name="s", deployment_id="del2")
    assert "unknown_tenant" not in failed.value.result
    result = _meta(store, "fail_delete", user="u", service_name="s", deployment_id="del2", stage="x", error="y")
    assert (result["changed"], result["status_changed"]) == (False, False)
    result = _meta(store, "complete_delete", user="u", service_name="s", deployment_id="del1")
    assert (result["deployment"]["status"], result["record_deleted"]) == ("deleted", True)
