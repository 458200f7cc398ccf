"""The shared removal of the rollback and the delete (plugins/module_utils/remove.py)."""

import os
import re

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import remove

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rendered_kinds():
    kinds = set()
    for path in ("roles/k8s_apply/templates/resources.yml.j2", "roles/k8s_apply/tasks/main.yml"):
        with open(os.path.join(ROOT, path)) as handle:
            text = handle.read()
        kinds.update(re.findall(r"^\s*(?:- )?kind: (\w+)\s*$", text, re.MULTILINE))
    return kinds


def test_every_kind_the_collection_renders_is_removed_by_label():
    rendered = _rendered_kinds()
    assert {"StatefulSet", "Deployment", "Secret", "ConfigMap", "Service"} <= rendered
    # The data PVCs (the StatefulSet's claim template) are found by their app=elasticsearch label.
    assert rendered - {kind for _v, kind in remove.MANAGED_KINDS} == {remove.CLAIM[1]}


def test_only_a_namespace_created_for_this_tenant_is_owned():
    ours = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "es-serverless", "es-cluster": "true"},
                         "annotations": {"es.yunpeng.cn/user": "u", "es.yunpeng.cn/service-name": "s"}}}
    assert remove.owned_namespace(ours, "u", "s")
    assert not remove.owned_namespace(ours, "u", "other")
    assert not remove.owned_namespace(ours, "other", "s")
    labelled_only = {"metadata": {"labels": {"es-cluster": "true"},
                                  "annotations": {"es.yunpeng.cn/user": "u", "es.yunpeng.cn/service-name": "s"}}}
    assert not remove.owned_namespace(labelled_only, "u", "s")
    assert not remove.owned_namespace({"metadata": {}}, "u", "s")
    assert not remove.owned_namespace(None, "u", "s")


class FakeApi:
    """Answers ``request_json`` from a dict of objects by path; records every request."""

    def __init__(self, objects, vanish_after=0):
        self.objects = dict(objects)
        self.requests = []
        self.vanish_after = vanish_after  # GETs a deleted object still answers before it is gone
        self.deleted = {}

    def request_json(self, _client, method, path, query=None, body=None, **_kw):
        self.requests.append((method, path, (query or {}).get("labelSelector")))
        if method == "GET" and query and "labelSelector" in query:
            key, value = query["labelSelector"].split("=")
            items = [o for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path
                     and (o["metadata"].get("labels") or {}).get(key) == value]
            return 200, {"items": items}
        if path not in self.objects:
            raise remove.ApiException(status=404, reason="Not Found")
        if method == "DELETE":
            self.deleted[path] = self.vanish_after
            return 200, {}
        if path in self.deleted:
            if self.deleted[path] <= 0:
                del self.objects[path]
                raise remove.ApiException(status=404, reason="Not Found")
            self.deleted[path] -= 1
        return 200, self.objects[path]


def _obj(name, labels=None, annotations=None):
    return {"metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}}}


OURS = {"app.kubernetes.io/managed-by": "es-serverless"}
STS_LABELS = dict(OURS, app="elasticsearch")


def _run(monkeypatch, api, **options):
    monkeypatch.setattr(remove, "request_json", api.request_json)
    clock = iter(range(0, 10000))
    remover = remove.Remover(object(), "ns", clock=lambda: next(clock), sleep=lambda _s: None)
    remover.resolver.resolve = lambda api_version, kind: {
        "Deployment": ("deployments", True), "StatefulSet": ("statefulsets", True),
        "PersistentVolumeClaim": ("persistentvolumeclaims", True)}.get(kind, (kind.lower() + "s", True))
    return remover.run(**options)


def test_a_namespace_that_is_not_ours_keeps_everything_but_our_objects(monkeypatch):
    api = FakeApi({
        "/api/v1/namespaces/ns": _obj("ns", {"es-cluster": "true"}),
        "/apis/apps/v1/namespaces/ns/statefulsets/elasticsearch": _obj("elasticsearch", STS_LABELS),
        "/apis/apps/v1/namespaces/ns/statefulsets/theirs": _obj("theirs"),
        "/api/v1/namespaces/ns/persistentvolumeclaims/data-0": _obj("data-0", {"app": "elasticsearch"}),
        "/api/v1/namespaces/ns/persistentvolumeclaims/other": _obj("other", {"app": "other"}),
    }, vanish_after=2)
    result = _run(monkeypatch, api, owner={"user": "u", "service_name": "s"}, managed=True, claims=True)
    assert result["namespace_deleted"] is False
    assert [(r["kind"], r["name"]) for r in result["deleted"]] == [("StatefulSet", "elasticsearch"),
                                                                   ("PersistentVolumeClaim", "data-0")]
    assert sorted(p.rsplit("/", 1)[1] for p in api.objects) == ["ns", "other", "theirs"]
    assert not [r for r in api.requests if r[0] == "DELETE" and r[1].endswith("/namespaces/ns")]


def test_our_namespace_goes_and_the_wait_ends_when_it_is_gone(monkeypatch):
    ns = _obj("ns", dict(OURS, **{"es-cluster": "true"}),
              {"es.yunpeng.cn/user": "u", "es.yunpeng.cn/service-name": "s"})
    ns["status"] = {"phase": "Terminating"}
    api = FakeApi({"/api/v1/namespaces/ns": ns}, vanish_after=3)
    result = _run(monkeypatch, api, owner={"user": "u", "service_name": "s"}, managed=True, claims=True)
    assert result["namespace_deleted"] is True and "/api/v1/namespaces/ns" not in api.objects
    # No listing of objects: they go with the namespace.
    assert [r[0] for r in api.requests] == ["GET", "DELETE", "GET", "GET", "GET", "GET"]


def test_a_namespace_still_there_at_the_timeout_is_an_error_naming_it(monkeypatch):
    ns = _obj("ns")
    api = FakeApi({"/api/v1/namespaces/ns": ns}, vanish_after=10 ** 6)
    ns["status"] = {"phase": "Terminating"}
    with pytest.raises(remove.RemoveError, match=r"still there after 5 s: Namespace ns \(Terminating\)") as failed:
        _run(monkeypatch, api, namespace_created=True, timeout=5)
    assert failed.value.result["namespace_deleted"] is True


def test_rollback_objects_and_claims_kept(monkeypatch):
    api = FakeApi({
        "/api/v1/namespaces/ns/configmaps/cfg": _obj("cfg", OURS),
        "/api/v1/namespaces/ns/persistentvolumeclaims/old-0": _obj("old-0", {"app": "elasticsearch"}),
        "/api/v1/namespaces/ns/persistentvolumeclaims/new-1": _obj("new-1", {"app": "elasticsearch"}),
    })
    result = _run(monkeypatch, api, objects=[{"kind": "ConfigMap", "api_version": "v1", "name": "cfg"},
                                             {"kind": "ConfigMap", "api_version": "v1", "name": "gone-already"}],
                  claims=True, keep_claims=["old-0"])
    assert [r["name"] for r in result["deleted"]] == ["cfg", "new-1"]
    assert list(api.objects) == ["/api/v1/namespaces/ns/persistentvolumeclaims/old-0"]
    # The rollback does not read the namespace: it knows that the run did not create it.
    assert ("GET", "/api/v1/namespaces/ns", None) not in api.requests


def test_a_failed_request_names_the_object_and_the_api_servers_reason(monkeypatch):
    api = FakeApi({"/apis/apps/v1/namespaces/ns/statefulsets/elasticsearch": _obj("elasticsearch", STS_LABELS)})
    answer = api.request_json

    def failing(client, method, path, query=None, body=None, **kw):
        if method == "DELETE":
            exc = remove.ApiException(status=500, reason="Internal Server Error")
            exc.body = '{"kind": "Status", "message": "Internal error occurred: etcd leader changed"}'
            raise exc
        return answer(client, method, path, query, body, **kw)
    api.request_json = failing
    with pytest.raises(remove.RemoveError) as failed:
        _run(monkeypatch, api, objects=[{"kind": "StatefulSet", "api_version": "apps/v1", "name": "elasticsearch"}])
    assert failed.value.message == (
        "cannot remove the objects of namespace ns: StatefulSet ns/elasticsearch: 500 Internal Server Error: "
        "Internal error occurred: etcd leader changed")


def test_a_404_on_a_repeated_delete_counts_as_deleted(monkeypatch):
    # The first attempt deleted it and its answer was lost (a 5xx or a broken connection); the retry
    # of the client's pool answers 404 (ApiException.retried): this removal deleted it.
    api = FakeApi({})

    def gone(_client, method, path, query=None, body=None, **_kw):
        exc = remove.ApiException(status=404, reason="Not Found")
        exc.retried = method == "DELETE"
        raise exc
    api.request_json = gone
    result = _run(monkeypatch, api, objects=[{"kind": "ConfigMap", "api_version": "v1", "name": "cfg"}])
    assert [r["name"] for r in result["deleted"]] == ["cfg"]
