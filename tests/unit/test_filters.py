"""Filters of the stage roles: registry mirror, name references, object refs, heap."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.yunpeng.es_serverless.plugins.filter.es_helpers import (
    heap_options,
    mirror_image,
    name_refs,
    object_ref,
)


@pytest.mark.parametrize("image, mirror, expected", [
    ("docker.elastic.co/elasticsearch/elasticsearch:8.15.3", "mirror.local:5000",
     "mirror.local:5000/elasticsearch/elasticsearch:8.15.3"),
    ("prom/prometheus:v2.47.0", "mirror.local", "mirror.local/prom/prometheus:v2.47.0"),
    ("busybox", "mirror.local/", "mirror.local/library/busybox"),
    ("localhost/x:1", "m.io/proxy", "m.io/proxy/x:1"),
    ("docker.elastic.co/kibana/kibana:8.15.3", "", "docker.elastic.co/kibana/kibana:8.15.3"),
])
def test_mirror_image(image, mirror, expected):
    assert mirror_image(image, mirror) == expected


def test_mirror_refuses_urls_and_empty_images():
    with pytest.raises(AnsibleFilterError, match="es_registry_mirror"):
        mirror_image("a/b:1", "https://mirror.local")
    with pytest.raises(AnsibleFilterError, match="non-empty"):
        mirror_image("", "m")


def test_name_refs_and_object_ref():
    assert name_refs(["a", "b"]) == [{"name": "a"}, {"name": "b"}]
    assert name_refs(None) == []
    obj = {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "es", "namespace": "t"}}
    assert object_ref(obj) == {"kind": "Service", "api_version": "v1", "name": "es", "namespace": "t"}
    assert "namespace" not in object_ref({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "t"}})


def test_heap_options_half_the_limit():
    assert heap_options("2Gi") == ["-Xms1024m", "-Xmx1024m"]
    assert heap_options("3000Mi") == ["-Xms1500m", "-Xmx1500m"]
    with pytest.raises(AnsibleFilterError, match="mem_limit"):
        heap_options("1Ki")
