"""Request validation rules (plugins/module_utils/request.py)."""

import decimal

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import request as r

BASE = {"user": "test_user", "service_name": "test_service", "namespace": "es-test"}


def req(**changes):
    params = dict(BASE)
    params.update(changes)
    return params


def refused(**changes):
    with pytest.raises(r.RequestError) as info:
        r.validate(req(**changes))
    return info.value


def test_defaults_applied_and_types_normalized():
    out = r.validate(req())
    assert dict(out) == {
        "user": "test_user", "service_name": "test_service", "namespace": "es-test", "replicas": 1,
        "cpu_request": "500m", "cpu_limit": "2", "mem_request": "1Gi", "mem_limit": "2Gi", "disk_size": "10Gi",
        "gpu_count": 0, "dimension": 128, "vector_count": 10000, "index_limit": 100, "tenant_org_id": "",
    }
    assert list(out) == list(r.REQUEST_FIELDS)


def test_none_means_default_and_strings_become_ints():
    out = r.validate(req(replicas="3", gpu_count="2", dimension="4096", vector_count="0", index_limit="7",
                         cpu_limit=None))
    assert (out["replicas"], out["gpu_count"], out["dimension"], out["vector_count"], out["index_limit"]) == (
        3, 2, 4096, 0, 7)
    assert out["cpu_limit"] == "2"


def test_int_quantities_become_strings():
    out = r.validate(req(cpu_request=1, cpu_limit=2))
    assert out["cpu_request"] == "1" and out["cpu_limit"] == "2"


@pytest.mark.parametrize("field", ["user", "service_name", "namespace"])
def test_identity_required(field):
    params = req()
    del params[field]
    with pytest.raises(r.RequestError) as info:
        r.validate(params)
    assert info.value.field == field
    assert str(info.value) == "%s: is required" % field


def test_path_traversal_user_message_exact():
    err = refused(user="../../etc")
    assert str(err) == ("user: must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter"
                        " or digit (got '../../etc')")
    assert err.field == "user"
    assert err.rule.startswith("must be 1-63 characters")


@pytest.mark.parametrize("bad", ["a b", "x*", "a/b", "", "-lead", ".hidden", "a" * 64, "a\nb", "a;rm", "é", "$(x)",
                                 "a?", "[a]", "a..b"])
@pytest.mark.parametrize("field", ["user", "service_name"])
def test_bad_names_refused(field, bad):
    err = refused(**{field: bad})
    assert err.field == field
    assert str(err).startswith(field + ": must")


def test_name_double_dot_rule_named():
    err = refused(service_name="a..b")
    assert str(err) == "service_name: must not contain '..' (got 'a..b')"


@pytest.mark.parametrize("good", ["a", "A1", "test_user", "a.b-c_d", "a" * 63, "7"])
def test_good_names(good):
    assert r.validate(req(user=good))["user"] == good


def test_non_string_name_refused_but_int_accepted():
    assert r.validate(req(user=123))["user"] == "123"
    assert refused(user=["a"]).field == "user"
    assert refused(user=True).field == "user"


def test_echo_is_bounded():
    err = refused(user="x" * 5000 + "*")
    assert len(str(err)) < 300
    assert "5001 characters" in str(err)


@pytest.mark.parametrize("bad", ["ES-test", "es_test", "-es", "es-", "a" * 64, "es test", "", "es.test"])
def test_namespace_dns_label(bad):
    err = refused(namespace=bad)
    assert err.field == "namespace"
    assert "DNS-1123" in err.rule


def test_namespace_63_ok():
    assert r.validate(req(namespace="a" * 63))["namespace"] == "a" * 63


@pytest.mark.parametrize("text,expected", [
    ("500m", "0.5"), ("2", "2"), ("1Gi", str(2 ** 30)), ("1.5Gi", str(int(1.5 * 2 ** 30))), ("1k", "1000"),
    ("1e3", "1000"), ("1E3", "1000"), ("1E", str(10 ** 18)), ("2Ki", "2048"), (".5", "0.5"), ("5.", "5"),
    ("+1M", "1000000"), ("-1", "-1"), ("100m", "0.1"), ("1e-3", "0.001"), ("12Ti", str(12 * 2 ** 40)),
])
def test_parse_quantity(text, expected):
    assert r.parse_quantity(text) == decimal.Decimal(expected)


@pytest.mark.parametrize("bad", ["500x", "", "1.2.3", "Gi", "1 Gi", " 1", "1gi", "1KI", "1e", "1e3.5", "0x10",
                                 "1Mi ", "m", "1mm", "nan", "inf"])
def test_parse_quantity_refuses(bad):
    with pytest.raises(ValueError):
        r.parse_quantity(bad)


@pytest.mark.parametrize("field", ["cpu_request", "cpu_limit", "mem_request", "mem_limit", "disk_size"])
def test_bad_quantity_names_field(field):
    err = refused(**{field: "500x"})
    assert err.field == field
    assert "Kubernetes quantity" in err.rule and "'500x'" in err.rule


@pytest.mark.parametrize("field,value", [("cpu_request", "0"), ("mem_request", "0Gi"), ("disk_size", "0"),
                                         ("disk_size", "-1Gi"), ("cpu_request", "-500m")])
def test_quantity_must_be_positive(field, value):
    err = refused(**{field: value})
    assert err.field == field and "greater than zero" in err.rule


def test_cpu_below_one_milli_refused():
    assert refused(cpu_request="0.1m").field == "cpu_request"


def test_request_above_limit_refused():
    err = refused(cpu_request="3", cpu_limit="2")
    assert err.field == "cpu_request"
    assert str(err) == "cpu_request: cpu request '3' must not be greater than cpu_limit '2'"
    err = refused(mem_request="3Gi", mem_limit="2048Mi")
    assert err.field == "mem_request" and "mem_limit '2048Mi'" in str(err)


def test_request_equal_limit_ok_across_units():
    out = r.validate(req(cpu_request="2000m", cpu_limit="2", mem_request="1024Mi", mem_limit="1Gi"))
    assert out["cpu_request"] == "2000m"


@pytest.mark.parametrize("field,value", [
    ("replicas", 0), ("replicas", -1), ("replicas", 101), ("replicas", True), ("replicas", False), ("replicas", "2.5"),
    ("replicas", "two"), ("replicas", 2.5), ("replicas", ""), ("replicas", [1]),
    ("gpu_count", -1), ("gpu_count", "-1"), ("gpu_count", True),
    ("dimension", 0), ("dimension", 4097), ("vector_count", -1), ("index_limit", 0), ("index_limit", "1e3"),
])
def test_int_rules(field, value):
    err = refused(**{field: value})
    assert err.field == field
    assert "must be an integer" in err.rule


def test_true_refused_for_replicas_says_boolean():
    assert "not a boolean" in str(refused(replicas=True))


def test_unknown_field_refused():
    err = refused(replica=2)
    assert err.field == "replica" and "unknown request field" in err.rule


def test_non_mapping_refused():
    with pytest.raises(r.RequestError):
        r.validate(["user"])


def test_tenant_org_id():
    assert r.validate(req(tenant_org_id="test-org"))["tenant_org_id"] == "test-org"
    assert refused(tenant_org_id="a b").field == "tenant_org_id"


def test_identity_and_record_fields():
    out = r.validate(req(replicas=2, gpu_count=1))
    assert dict(r.identity(out)) == BASE
    assert dict(r.identity({"user": None, "service_name": 5})) == {"user": "", "service_name": "5", "namespace": ""}
    rec = r.record_fields(out)
    assert rec["cpu"] == "500m/2" and rec["memory"] == "1Gi/2Gi" and rec["disk"] == "10Gi"
    assert rec["replicas"] == 2 and rec["gpu_count"] == 1 and rec["dimension"] == 128 and rec["vector_count"] == 10000


def test_compare_disk():
    assert r.compare_disk("10Gi", "20Gi") is True
    assert r.compare_disk("10Gi", "10240Mi") is False
    assert r.compare_disk(None, "10Gi") is True
    with pytest.raises(r.RequestError) as info:
        r.compare_disk("20Gi", "10Gi")
    assert info.value.field == "disk_size"
    assert "20Gi" in str(info.value) and "10Gi" in str(info.value) and "shrink" in str(info.value)
    with pytest.raises(r.RequestError):
        r.compare_disk("10Gi", "10x")


def test_format_quantity():
    assert r.format_quantity(decimal.Decimal(2 ** 31), "bytes") == "2Gi"
    assert r.format_quantity(decimal.Decimal("0.5"), "cpu") == "500m"
    assert r.format_quantity(decimal.Decimal(64), "cpu") == "64"


def _sts(replicas=2, requests=None, limits=None, annotations=None):
    container = {"name": "elasticsearch", "resources": {"requests": requests or {}, "limits": limits or {}}}
    return {"metadata": {"annotations": annotations or {}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "kibana"}, container]}}}}


def test_statefulset_drift_compares_by_value_and_names_each_difference():
    req = r.validate(dict(user="u", service_name="s", namespace="es-a", replicas=2, cpu_request="0.5",
                          cpu_limit="2", mem_request="1024Mi", mem_limit="2Gi", gpu_count=1, index_limit=7))
    same = _sts(2, {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"},
                {"cpu": "2", "memory": "2048Mi", "nvidia.com/gpu": "1"}, {"es.yunpeng.cn/max-indices": "7"})
    assert r.statefulset_drift(same, req, aspects=("replicas", "resources", "max_indices", "gpus")) == []
    off = _sts(1, {"cpu": "250m", "memory": "1Gi"}, {"cpu": "2", "memory": "2Gi"})
    assert r.statefulset_drift(off, req) == [
        "spec.replicas is 1, requested 2",
        "annotation es.yunpeng.cn/max-indices is None, requested 7",
        "container elasticsearch requests cpu is 250m, requested 0.5",
    ]
    assert r.statefulset_drift(off, req, aspects=("gpus",)) == [
        "container elasticsearch requests nvidia.com/gpu is None, requested 1",
        "container elasticsearch limits nvidia.com/gpu is None, requested 1",
    ]
    no_gpu = dict(req, gpu_count=0)
    assert r.statefulset_drift(same, no_gpu, aspects=("gpus",)) == [
        "container elasticsearch requests nvidia.com/gpu is 1, requested none",
        "container elasticsearch limits nvidia.com/gpu is 1, requested none",
    ]
    assert r.statefulset_drift({}, req, aspects=("replicas",)) == ["spec.replicas is None, requested 2"]


def test_tenant_quota_adds_elasticsearch_and_kibana_and_names_a_bad_kibana_value():
    req = r.validate(dict(user="u", service_name="s", namespace="es-a", replicas=3, cpu_request="0.5",
                          cpu_limit="1500m", mem_request="1Gi", mem_limit="1536Mi", disk_size="10G"))
    assert r.tenant_quota(req) == {
        "requests.cpu": "1500m", "limits.cpu": "4500m", "requests.memory": "3Gi", "limits.memory": "4608Mi",
        "requests.storage": "29296875Ki", "persistentvolumeclaims": "3", "pods": "3",
        "requests.nvidia.com/gpu": "0"}
    with_kibana = r.tenant_quota(req, 2, {"cpu": "250m", "memory": "512Mi"}, {"cpu": "1", "memory": "1Gi"})
    assert with_kibana["requests.cpu"] == "2" and with_kibana["limits.memory"] == "6656Mi"
    assert with_kibana["pods"] == "5" and with_kibana["persistentvolumeclaims"] == "3"
    with pytest.raises(r.RequestError) as bad:
        r.tenant_quota(req, 1, {"cpu": "lots", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"})
    assert str(bad.value).startswith("kibana requests.cpu: must be a Kubernetes quantity")
    assert "'lots'" in str(bad.value)
