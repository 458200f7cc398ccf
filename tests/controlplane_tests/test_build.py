"""The control plane build: pins decide the cache folder, failures leave
nothing half-built and say which build failed."""

import os
import shutil

import pytest

from tests.controlplane import build


@pytest.fixture
def modules(tmp_path, monkeypatch):
    copy = tmp_path / "go"
    shutil.copytree(build.GO, copy)
    monkeypatch.setattr(build, "GO", str(copy))
    monkeypatch.setenv("ES_CONTROLPLANE_CACHE", str(tmp_path / "cache"))
    return copy


def test_the_cache_folder_follows_the_pins(modules):
    before = build.cache_dir()
    assert os.path.basename(before).startswith("k8s-%s-" % build.kubernetes_version())
    assert build.kubernetes_version().startswith("v1.34.")
    assert build.cache_dir() == before  # stable
    gomod = modules / "etcd" / "go.mod"
    gomod.write_text(gomod.read_text().replace("v3.6.4", "v3.6.5"))
    assert build.cache_dir() != before
    assert not build.is_built()


def test_a_failed_build_names_the_command_and_leaves_nothing(modules):
    (modules / "etcd" / "main.go").write_text("package main\n\nfunc main() { undefined() }\n")
    with pytest.raises(build.BuildError) as failed:
        build.build(log=lambda msg: None)
    message = str(failed.value)
    assert "go build" in message and "etcd" in message and "undefined: undefined" in message
    cache_root = os.path.dirname(build.cache_dir())
    assert not os.path.exists(cache_root) or os.listdir(cache_root) == []
