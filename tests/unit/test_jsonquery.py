"""The JMESPath rule (plugins/module_utils/jsonquery.py) and the ``query`` option of the es_deployment_info
module that uses it (the lookup's is in test_lookup.py, the CLI's --query in tests/entrypoints/test_cli.py)."""

import pytest

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import jsonquery
from ansible_collections.yunpeng.es_serverless.plugins.modules import es_deployment_info
from tests.ansible_module import run_module
from tests.unit.test_lookup import seed

ANSWER = {"deployments": [{"user": "u", "service_name": "a", "status": "created"},
                          {"user": "u", "service_name": "b", "status": "failed", "stage": "rollout"}],
          "latest_report": None}


def test_search_applies_the_expression():
    assert jsonquery.search("deployments[?status=='failed'].{service: service_name, stage: stage}", ANSWER) == [
        {"service": "b", "stage": "rollout"}]
    assert jsonquery.search("length(deployments)", ANSWER) == 2
    assert jsonquery.search("latest_report.report.status", ANSWER) is None
    assert jsonquery.search("status", None) is None


@pytest.mark.parametrize("expression, reason", [
    ("deployments[", "Invalid jmespath expression: Incomplete expression"),
    ("deployments[]]", 'Unexpected token: ]: Parse error at column 13, token "]" (RBRACKET)'),
    ("`{bad", "Bad jmespath expression: Unclosed ` delimiter"),
    ("", "Invalid JMESPath expression: cannot be empty."),
])
def test_an_invalid_expression_names_itself_and_the_reason(expression, reason):
    with pytest.raises(ValueError) as info:
        jsonquery.search(expression, ANSWER)
    assert str(info.value) == "query: invalid JMESPath expression %r: %s" % (expression, reason)
    with pytest.raises(ValueError) as again:
        jsonquery.compile_query(expression)
    assert str(again.value) == str(info.value)


@pytest.mark.parametrize("expression, reason", [
    ("abs(`1`, `2`)", "Expected 1 argument for function abs(), received 2"),
    ("nope(@)", "Unknown function: nope()"),
])
def test_functions_are_checked_when_the_expression_runs(expression, reason):
    jsonquery.compile_query(expression)
    with pytest.raises(ValueError) as info:
        jsonquery.search(expression, ANSWER)
    assert str(info.value) == "query: invalid JMESPath expression %r: %s" % (expression, reason)


def test_an_expression_that_cannot_apply_to_the_data_is_a_value_error():
    with pytest.raises(ValueError) as info:
        jsonquery.search("length(deployments[0].nothing)", ANSWER)
    assert str(info.value).startswith("query: cannot apply JMESPath expression 'length(deployments[0].nothing)': "
                                      "In function length(), invalid type for value: None")


def test_a_long_expression_is_echoed_truncated_and_a_non_string_refused():
    with pytest.raises(ValueError, match=r"^query: invalid JMESPath expression '\[{80}'\.\.\. \(81 characters\): "):
        jsonquery.search("[" * 81, ANSWER)
    with pytest.raises(ValueError, match=r"^query: must be a JMESPath expression, a string \(got 5\)$"):
        jsonquery.search(5, ANSWER)


def test_without_jmespath_a_query_says_what_to_install(monkeypatch):
    monkeypatch.setattr(jsonquery, "HAS_JMESPATH", False)
    monkeypatch.setattr(jsonquery, "JMESPATH_IMPORT_ERROR", "No module named 'jmespath'")
    with pytest.raises(ValueError, match=r"^query: the Python library jmespath is required .*No module named"):
        jsonquery.search("status", ANSWER)


def _params(data_dir, **changes):
    params = {"data_dir": data_dir, "user": None, "service_name": None, "deployment_id": None, "log_file": None,
              "log_lines": 20, "query": None}
    params.update(changes)
    return params


def test_module_returns_query_result_next_to_the_answer(tmp_path):
    seed(str(tmp_path))
    plain = es_deployment_info.run(_params(str(tmp_path), user="test_user", service_name="test_service"),
                                   False, None)
    assert "query_result" not in plain
    result = es_deployment_info.run(_params(str(tmp_path), user="test_user", service_name="test_service",
                                            query="reports[].report.status"), False, None)
    assert result["query_result"] == ["starting", "namespace_created"]
    del result["query_result"]
    assert result == plain


def test_module_fails_on_a_bad_query_with_the_helper_message(tmp_path):
    seed(str(tmp_path))
    with pytest.raises(es_deployment_info.entry.ModuleFailed) as info:
        es_deployment_info.run(_params(str(tmp_path), query="deployments[?"), False, None)
    assert info.value.msg == "query: invalid JMESPath expression 'deployments[?': " \
                             "Invalid jmespath expression: Incomplete expression"


def test_module_query_through_ansible(tmp_path):
    data_dir = str(tmp_path / "data")
    seed(data_dir)
    _proc, result = run_module(tmp_path, "es_deployment_info", {
        "data_dir": data_dir, "query": "deployments[?status=='failed'].{user: user, stage: stage}"})
    assert result.get("failed") is not True, result
    assert result["query_result"] == [{"user": "test", "stage": "metadata"}]
    assert [entry["user"] for entry in result["deployments"]] == ["test", "test_user"]
    _proc, result = run_module(tmp_path, "es_deployment_info", {"data_dir": data_dir, "query": "length(@"})
    assert result["failed"] is True
    assert result["msg"] == "query: invalid JMESPath expression 'length(@': Invalid jmespath expression: " \
                            "Incomplete expression"
