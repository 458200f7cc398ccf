"""File modes and symlink refusal of every write (plugins/module_utils/fileutil.py), and through the store."""

import os
import stat

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import fileutil, reports
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import MetadataStore


def mode(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def test_files_0600_and_folders_0700_whatever_the_umask(tmp_path, loose_umask):
    data = tmp_path / "data"
    with fileutil.locked(str(data)):
        fileutil.write_json(str(data / "a" / "b" / "x.json"), {"k": 1})
        fileutil.create_exclusive(str(data / "c" / "y.json"), "{}")
        fileutil.append_line(str(data / "d" / "log"), "one")
    for folder in (data, data / "a", data / "a" / "b", data / "c", data / "d"):
        assert mode(folder) == 0o700, folder
    for name in ("a/b/x.json", "c/y.json", "d/log", ".lock"):
        assert mode(data / name) == 0o600, name


def test_existing_files_keep_their_mode(tmp_path):
    log = tmp_path / "log"
    log.write_text("old\n")
    os.chmod(str(log), 0o644)
    fileutil.append_line(str(log), "new")
    assert mode(log) == 0o644 and log.read_text() == "old\nnew\n"


@pytest.fixture
def outside(tmp_path):
    target = tmp_path / "outside"
    target.mkdir()
    (target / "file").write_text("keep\n")
    return target


def assert_untouched(outside):
    assert sorted(os.listdir(str(outside))) == ["file"] and (outside / "file").read_text() == "keep\n"


@pytest.mark.parametrize("write", ["write_json", "create_exclusive", "append_line"])
def test_symlink_at_the_file_is_refused(tmp_path, outside, write):
    data = tmp_path / "data"
    data.mkdir()
    link = data / "x.json"
    link.symlink_to(outside / "file")
    call = {"write_json": lambda: fileutil.write_json(str(link), {}),
            "create_exclusive": lambda: fileutil.create_exclusive(str(link), "{}"),
            "append_line": lambda: fileutil.append_line(str(link), "line")}[write]
    with pytest.raises(fileutil.UnsafePath, match="refused: %s is a symbolic link" % link):
        call()
    with pytest.raises(fileutil.UnsafePath), fileutil.locked(str(data)):
        call()
    assert os.path.islink(str(link))
    assert_untouched(outside)


@pytest.mark.parametrize("write", ["write_json", "create_exclusive", "append_line", "remove"])
def test_symlinked_folder_below_the_locked_data_folder_is_refused(tmp_path, outside, write):
    data = tmp_path / "data"
    (data / "deployments").mkdir(parents=True)
    (data / "deployments" / "u").symlink_to(outside)
    path = str(data / "deployments" / "u" / "file")
    call = {"write_json": lambda: fileutil.write_json(path, {}),
            "create_exclusive": lambda: fileutil.create_exclusive(path + ".new", "{}"),
            "append_line": lambda: fileutil.append_line(path, "line"),
            "remove": lambda: fileutil.remove(path)}[write]
    with fileutil.locked(str(data)), pytest.raises(fileutil.UnsafePath, match=str(data / "deployments" / "u")):
        call()
    assert_untouched(outside)


def test_the_data_folder_itself_and_folders_outside_it_may_be_symlinks(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "data").symlink_to(real)
    (tmp_path / "logs").symlink_to(real)
    store = MetadataStore(str(tmp_path / "data"))
    body = reports.build("namespace_created", {"user": "u", "service_name": "s", "namespace": "n"}, "d")
    store.write_report(str(tmp_path / "logs" / "deployment.log"), body)
    assert (real / "deployment.log").read_text() == reports.log_line(body) + "\n"
    assert len(os.listdir(str(real / "deployment_reports"))) == 1


@pytest.mark.parametrize("planted", ["deployment.log", "deployment_reports", "deployments", "deployments/u",
                                     "deployments/u/s.reports", ".lock"])
def test_store_refuses_planted_symlinks(tmp_path, outside, planted):
    data = tmp_path / "data"
    (data / "deployments").mkdir(parents=True)
    if planted == "deployments":
        (data / "deployments").rmdir()
    link = data / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside if "." not in os.path.basename(planted) else outside / "file")
    store = MetadataStore(str(data))
    body = reports.build("namespace_created", {"user": "u", "service_name": "s", "namespace": "n"}, "d")
    with pytest.raises(fileutil.UnsafePath, match="refused: %s is a symbolic link" % link):
        store.write_report(None, body)
    assert_untouched(outside)


def test_store_begin_refuses_a_symlinked_tenant_folder(tmp_path, outside):
    data = tmp_path / "data"
    data.mkdir()
    (data / "tenant_data").symlink_to(outside)
    store = MetadataStore(str(data))
    with pytest.raises(fileutil.UnsafePath, match="tenant_data is a symbolic link"):
        store.begin({"user": "u", "service_name": "s", "namespace": "es-n"}, "d1")
    assert_untouched(outside)


def test_es_report_fails_on_a_planted_symlink_before_the_callback_meets_it(tmp_path, outside):
    from ansible_collections.yunpeng.es_serverless.plugins.module_utils.entry import ModuleFailed
    from ansible_collections.yunpeng.es_serverless.plugins.modules import es_report
    data = tmp_path / "data"
    data.mkdir()
    params = {key: spec.get("default") for key, spec in es_report.ARGUMENT_SPEC["argument_spec"].items()}
    params.update(status="namespace_created", deployment_id="d", data_dir=str(data),
                  request={"user": "u", "service_name": "s", "namespace": "n"})
    assert es_report.run(params, False, None)["es_report"]["report"]["status"] == "namespace_created"
    (data / "deployment.log").symlink_to(outside / "file")
    with pytest.raises(ModuleFailed, match="the report cannot be written: refused: %s is a symbolic link"
                       % (data / "deployment.log")):
        es_report.run(params, False, None)
    assert es_report.run(params, True, None)["es_report"]["check_mode"] is True  # a check writes nothing
    assert_untouched(outside)
