"""Every module of the collection runs in the controller process through its action plugin,
validated with the module file's own argument spec."""

import os

from ansible_collections.yunpeng.es_serverless.plugins.plugin_utils.in_process import InProcessAction
from tests.ansible_module import ROOT, run_module

MODULES = sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "plugins", "modules"))
                 if name.endswith(".py") and not name.startswith("_"))
NO_PYTHON = "/nonexistent/python"  # a module process could not start


def test_every_module_has_an_in_process_action_plugin_over_its_own_spec():
    import importlib
    for name in MODULES:
        action = importlib.import_module("ansible_collections.yunpeng.es_serverless.plugins.action." + name)
        module = importlib.import_module("ansible_collections.yunpeng.es_serverless.plugins.modules." + name)
        assert issubclass(action.ActionModule, InProcessAction), name
        assert action.ActionModule.MODULE is module, name
        assert module.ARGUMENT_SPEC["argument_spec"] and callable(module.run), name
    assert "es_apply" in MODULES and len(MODULES) == 12


def test_no_module_process_is_started(tmp_path):
    proc, result = run_module(tmp_path, "es_request", {"user": "u1", "service_name": "s1", "namespace": "es-u1"},
                              interpreter=NO_PYTHON, verbosity="-vvv")
    assert result.get("failed") is not True, proc.stdout + proc.stderr
    assert result["request"]["namespace"] == "es-u1" and result["request"]["replicas"] == 1
    assert "AnsiballZ" not in proc.stdout + proc.stderr
    _proc, info = run_module(tmp_path, "es_deployment_info", {"data_dir": str(tmp_path / "data")},
                             interpreter=NO_PYTHON)
    assert info.get("failed") is not True and info["deployments"] == []


def test_the_module_spec_validates_the_task_and_failures_keep_their_fields(tmp_path):
    _proc, result = run_module(tmp_path, "es_report", {"status": "nope", "request": {}, "deployment_id": "d",
                                                       "data_dir": str(tmp_path)}, interpreter=NO_PYTHON)
    assert result["failed"] is True
    assert "value of status must be one of" in result["msg"] and "got: nope" in result["msg"]
    _proc, result = run_module(tmp_path, "es_report", {"status": "starting", "request": {}, "deployment_id": "d",
                                                       "data_dir": str(tmp_path), "surprise": 1},
                               interpreter=NO_PYTHON)
    assert result["failed"] is True and "surprise" in result["msg"]
    _proc, result = run_module(tmp_path, "es_request", {"user": "../x", "service_name": "s", "namespace": "es-a"},
                               interpreter=NO_PYTHON)
    assert result["failed"] is True and result["field"] == "user" and result["rule"]


def test_no_log_values_are_masked_in_the_result(tmp_path):
    # api_key is a no_log option; the unreachable host's name carries the same text on purpose.
    _proc, result = run_module(tmp_path, "es_apply", {
        "host": "https://tok-secret-123.invalid", "api_key": "tok-secret-123", "validate_certs": False,
        "definitions": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "es-x"}}]},
        interpreter=NO_PYTHON)
    assert result["failed"] is True
    assert result["msg"].startswith("cannot apply Namespace/es-x: cannot reach the Kubernetes API server at")
    assert "********.invalid" in result["msg"] and "tok-secret-123" not in repr(result)
