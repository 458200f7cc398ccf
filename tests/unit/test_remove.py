"""The shared removal of the rollback and the delete (plugins/module_utils/remove.py)."""

import os
import re

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
