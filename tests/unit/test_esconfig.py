"""module_utils.esconfig: elasticsearch.yml / jvm.options merge, and the es_config module."""


import pytest
import yaml

from ansible_collections.yunpeng.es_serverless.plugins.module_utils.esconfig import (
    ConfigError,
    flatten,
    jvm_key,
    merge,
    merge_jvm,
    parse_yaml,
)

from tests import ansible_module


REQUIRED = {
    "cluster.name": "alice-search",
    "network.host": "0.0.0.0",
    "discovery.type": "single-node",
    "path": {"data": "/usr/share/elasticsearch/data"},
    "xpack.security.enabled": False,
}
DEFAULTS = {"indices.query.bool.max_clause_count": 1024, "http.max_content_length": "100mb"}


def test_flatten_nested_and_dotted():
    assert flatten({"a": {"b": {"c": 1}, "d": [1, 2]}, "e.f": "x", True: "yes"}) == {
        "a.b.c": 1, "a.d": [1, 2], "e.f": "x", "true": "yes"}


def test_flatten_refuses_a_key_given_twice():
    with pytest.raises(ConfigError, match="cluster.name is given twice"):
        flatten({"cluster": {"name": "a"}, "cluster.name": "b"}, "t.yml")


def test_parent_and_child_in_tenant_file_refused():
    with pytest.raises(ConfigError, match="xpack.security has a value and also sub-settings"):
        parse_yaml("xpack.security: on\nxpack.security.enabled: true\n", "tenant/elasticsearch.yml")


def test_no_tenant_file_gives_required_plus_defaults_flat_sorted():
    text, overridden, tenant, refused = merge(REQUIRED, DEFAULTS, None)
    assert overridden == [] and tenant == [] and refused == []
    assert text == (
        "cluster.name: alice-search\n"
        "discovery.type: single-node\n"
        "http.max_content_length: 100mb\n"
        "indices.query.bool.max_clause_count: 1024\n"
        "network.host: 0.0.0.0\n"
        "path.data: /usr/share/elasticsearch/data\n"
        "xpack.security.enabled: false\n"
    )


def test_tenant_values_override_defaults_and_required_win():
    tenant = (
        "cluster:\n  name: tenant-cluster\n"
        "network.host: 0.0.0.0\n"  # same as ours: not an override
        "indices:\n  query.bool.max_clause_count: 4096\n"
        "path.data: /tmp/elsewhere\n"
        "xpack:\n  security:\n    enabled: 'false'\n"  # same value as a string: not an override
        "thread_pool.write.queue_size: 500\n"
    )
    text, overridden, tenant_keys, _u = merge(REQUIRED, DEFAULTS, tenant, source="g/elasticsearch.yml")
    final = yaml.safe_load(text)
    assert final["cluster.name"] == "alice-search"
    assert final["path.data"] == "/usr/share/elasticsearch/data"
    assert final["indices.query.bool.max_clause_count"] == 4096  # tenant beat our default
    assert final["http.max_content_length"] == "100mb"  # our default kept
    assert final["thread_pool.write.queue_size"] == 500
    assert final["xpack.security.enabled"] is False
    assert overridden == ["cluster.name", "path.data"]
    assert tenant_keys == ["cluster.name", "indices.query.bool.max_clause_count", "network.host", "path.data",
                           "thread_pool.write.queue_size", "xpack.security.enabled"]
    assert all("." in key or key == "" for key in final)  # flat output
    assert list(final) == sorted(final)


def test_output_is_deterministic():
    tenant_a = "b: 1\na:\n  z: 2\n  y: 3\n"
    tenant_b = "a.y: 3\nb: 1\na.z: 2\n"
    assert merge(REQUIRED, DEFAULTS, tenant_a)[0] == merge(REQUIRED, DEFAULTS, tenant_b)[0]


def test_parent_or_child_of_a_required_key_is_overridden():
    tenant = "xpack.security: something\ncluster.name.extra: 1\n"
    text, overridden, _u, _r = merge(REQUIRED, {}, tenant)
    final = yaml.safe_load(text)
    assert "xpack.security" not in final and "cluster.name.extra" not in final
    assert overridden == ["cluster.name.extra", "xpack.security"]


def test_protected_patterns_drop_tenant_keys():
    tenant = "discovery.seed_hosts: [a, b]\ndiscovery.type: single-node\ncluster.initial_master_nodes: [x]\n"
    text, overridden, _u, refused = merge(REQUIRED, {}, tenant,
                                          protected=["discovery.*", "cluster.initial_master_nodes"])
    final = yaml.safe_load(text)
    assert "discovery.seed_hosts" not in final and "cluster.initial_master_nodes" not in final
    assert final["discovery.type"] == "single-node"
    # discovery.type carries our own value: dropped but not reported as refused
    assert refused == ["cluster.initial_master_nodes", "discovery.seed_hosts"]
    assert overridden == []


def test_protected_security_settings_are_refused_even_as_a_parent_or_a_default():
    required = dict(REQUIRED, **{"xpack.security.enabled": True, "xpack.security.transport.ssl.enabled": True})
    defaults = {"action.destructive_requires_name": True}
    tenant = ("xpack.security.enabled: false\nxpack.security.http.ssl.enabled: false\n"
              "xpack.security.authc.anonymous.roles: superuser\nreadiness.port: 9999\n"
              "xpack.ml.enabled: false\naction.destructive_requires_name: false\ncluster.name: theirs\n")
    text, overridden, _u, refused = merge(required, defaults, tenant,
                                          protected=["xpack.security.*", "readiness.*"])
    final = yaml.safe_load(text)
    assert refused == ["readiness.port", "xpack.security.authc.anonymous.roles", "xpack.security.enabled",
                       "xpack.security.http.ssl.enabled"]
    assert overridden == ["cluster.name"]
    assert final["xpack.security.enabled"] is True and "readiness.port" not in final
    assert "xpack.security.http.ssl.enabled" not in final and "xpack.security.authc.anonymous.roles" not in final
    assert final["xpack.ml.enabled"] is False and final["action.destructive_requires_name"] is False
    # A parent of what a pattern covers is refused too (nested YAML flattened to it).
    assert merge(required, {}, "xpack:\n  security: off\n", protected=["xpack.security.*"])[3] == ["xpack.security"]


def test_tenant_key_beats_colliding_default():
    text, overridden, _u, _r = merge({}, {"a.b": 1}, "a: 2\n")
    assert yaml.safe_load(text) == {"a": 2}
    assert overridden == []


@pytest.mark.parametrize("body, message", [
    ("- a\n- b\n", "not a YAML mapping of settings (found list)"),
    ("just a string\n", "not a YAML mapping of settings (found str)"),
    ("a: [1, 2\n", "not valid YAML"),
    ("a: 1\na: 2\n", "duplicate key 'a'"),
])
def test_bad_tenant_files_refused_with_path(body, message):
    with pytest.raises(ConfigError) as info:
        merge(REQUIRED, DEFAULTS, body, source="/data/gitlab/elasticsearch.yml")
    assert "/data/gitlab/elasticsearch.yml" in info.value.message
    assert message in info.value.message


def test_empty_tenant_file_is_no_settings():
    assert merge(REQUIRED, {}, "# nothing\n")[0] == merge(REQUIRED, {}, None)[0]


# ------------------------------------------------------------------ jvm.options
def test_jvm_keys():
    assert jvm_key("-Xmx4g") == jvm_key("-Xmx1g") == "-Xmx"
    assert jvm_key("-XX:+UseG1GC") == jvm_key("-XX:-UseG1GC") == "-XX:UseG1GC"
    assert jvm_key("-XX:MaxGCPauseMillis=200") == "-XX:MaxGCPauseMillis"
    assert jvm_key("17-:-Dfoo=1") == jvm_key("-Dfoo=2") == "-Dfoo"
    assert jvm_key("-Xms1g") != jvm_key("-Xmx1g")


def test_required_heap_wins_and_is_reported():
    tenant = "# tenant options\n-Xms4g\n-Xmx4g\n8-:-XX:+UseG1GC\n\n-Dlog4j2.formatMsgNoLookups=true\n"
    text, overridden = merge_jvm(tenant, ["-Xms1g", "-Xmx1g"])
    assert overridden == ["-Xms4g", "-Xmx4g"]
    assert text == ("# tenant options\n8-:-XX:+UseG1GC\n\n-Dlog4j2.formatMsgNoLookups=true\n"
                    "# required by the platform\n-Xms1g\n-Xmx1g\n")


def test_same_heap_is_not_reported():
    assert merge_jvm("-Xmx1g\n", ["-Xmx1g"])[1] == []


def test_jvm_without_tenant_file():
    assert merge_jvm(None, []) == (None, [])
    assert merge_jvm(None, ["-Xmx2g"]) == ("# required by the platform\n-Xmx2g\n", [])
    assert merge_jvm("-XX:+UseG1GC\n", []) == ("-XX:+UseG1GC\n", [])


@pytest.mark.parametrize("body, line", [("-Xmx1g\nXmx2g\n", 2), ("# c\n\nfoo=bar\n", 3), ("17:Xmx\n", 1)])
def test_invalid_jvm_lines_refused(body, line):
    with pytest.raises(ConfigError) as info:
        merge_jvm(body, [], source="/g/jvm.options")
    assert "/g/jvm.options line %d" % line in info.value.message


def test_required_jvm_must_be_options():
    with pytest.raises(ConfigError, match="not a JVM option"):
        merge_jvm(None, ["Xmx1g"])


# ------------------------------------------------------------------ the module through Ansible
def run_module(tmp_path, args):
    return ansible_module.run_module(tmp_path, "es_config", args)


def test_module_merges_files(tmp_path):
    es_yml = tmp_path / "elasticsearch.yml"
    es_yml.write_text("cluster.name: theirs\nindices.query.bool.max_clause_count: 4096\n")
    jvm = tmp_path / "jvm.options"
    jvm.write_text("-Xmx8g\n-XX:+UseG1GC\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("- not\n- a mapping\n")
    proc, result = run_module(tmp_path, {"required": REQUIRED, "defaults": DEFAULTS,
                                         "elasticsearch_yml": str(es_yml), "jvm_options": str(jvm),
                                         "required_jvm": ["-Xms1g", "-Xmx1g"], "protected": ["discovery.*"]})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["changed"] is False
    assert result["elasticsearch_yml"] == merge(REQUIRED, DEFAULTS, es_yml.read_text())[0]
    assert yaml.safe_load(result["elasticsearch_yml"])["cluster.name"] == "alice-search"
    assert result["overridden"] == ["cluster.name", "-Xmx8g"]
    assert result["overridden_keys"] == ["cluster.name"] and result["overridden_jvm"] == ["-Xmx8g"]
    assert result["tenant_keys"] == ["cluster.name", "indices.query.bool.max_clause_count"]
    assert result["jvm_options"] == "-XX:+UseG1GC\n# required by the platform\n-Xms1g\n-Xmx1g\n"

    proc, result = run_module(tmp_path, {"required": REQUIRED, "elasticsearch_yml": str(bad)})
    assert proc.returncode != 0 and result["failed"] is True
    assert str(bad) in result["msg"] and "not a YAML mapping" in result["msg"]

    proc, result = run_module(tmp_path, {"required": REQUIRED})
    assert proc.returncode == 0
    assert result["jvm_options"] is None and result["tenant_keys"] == [] and result["overridden"] == []


def test_module_bootstrap_settings_are_written_but_left_out_of_the_checksum_text(tmp_path):
    es_yml = tmp_path / "elasticsearch.yml"
    es_yml.write_text("cluster.initial_master_nodes: [x]\nxpack.security.enabled: false\nfoo.bar: 1\n")
    bootstrap = {"cluster.initial_master_nodes": ["es-0", "es-1"]}
    proc, result = run_module(tmp_path, {"required": REQUIRED, "bootstrap": bootstrap, "elasticsearch_yml": str(es_yml),
                                         "protected": ["cluster.initial_master_nodes", "xpack.security.*"]})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = yaml.safe_load(result["elasticsearch_yml"])
    assert written["cluster.initial_master_nodes"] == ["es-0", "es-1"] and written["foo.bar"] == 1
    assert written["xpack.security.enabled"] is False  # ours (REQUIRED), not the tenant's
    stable = yaml.safe_load(result["checksum_yml"])
    assert stable == {k: v for k, v in written.items() if k != "cluster.initial_master_nodes"}
    assert result["refused"] == ["cluster.initial_master_nodes"]  # the tenant's false repeats ours
    assert result["overridden"] == []
