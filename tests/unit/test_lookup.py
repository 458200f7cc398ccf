"""The es_deployment lookup: directly through LookupModule and in a real playbook."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from ansible import constants as C
from ansible.errors import AnsibleError

from ansible_collections.yunpeng.es_serverless.plugins.lookup import es_deployment
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import reports
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import request as r
from ansible_collections.yunpeng.es_serverless.plugins.module_utils.store import MetadataStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def LookupModule():
    """The plugin with its documented options registered, as Ansible's plugin loader does."""
    name = "yunpeng.es_serverless.es_deployment"
    options = yaml.safe_load(es_deployment.DOCUMENTATION)["options"]
    C.config.initialize_plugin_configuration_definitions("lookup", name, options)
    plugin = es_deployment.LookupModule()
    plugin._load_name = name
    return plugin


def seed(data_dir):
    store = MetadataStore(data_dir)
    req = r.validate({"user": "test_user", "service_name": "test_service", "namespace": "es-test"})
    store.begin(req, "dep1")
    store.write_report(None, reports.build("starting", req, "dep1"))
    store.write_report(None, reports.build("namespace_created", req, "dep1"))
    # same file-name prefix, refused at stage 0: it has its own failed status and report
    other = {"user": "test", "service_name": "user_test_service", "namespace": "es-other"}
    store.fail("test", "user_test_service", "es-other", "dep2", "metadata", "name collision")
    store.write_report(None, reports.build("failed", other, "dep2", message="collision"))
    return store


def test_lookup_returns_entry_with_latest_report(tmp_path):
    seed(str(tmp_path))
    [entry] = LookupModule().run(["test_user", "test_service"], variables={}, data_dir=str(tmp_path))
    assert entry["status"] == "creating" and entry["deployment_id"] == "dep1"
    assert entry["latest_report"]["report"]["status"] == "namespace_created"
    assert entry["latest_report"]["file"].startswith("test_user_test_service_")


def test_lookup_colliding_pair_gets_its_own_reports(tmp_path):
    seed(str(tmp_path))
    [entry] = LookupModule().run(["test", "user_test_service"], variables={}, data_dir=str(tmp_path))
    assert entry["deployment_id"] == "dep2" and entry["status"] == "failed"
    assert entry["latest_report"]["report"]["deployment_id"] == "dep2"
    assert entry["latest_report"]["report"]["status"] == "failed"


def test_lookup_reads_a_legacy_folder_without_migrating_it(tmp_path):
    body = reports.build("namespace_created", {"user": "u", "service_name": "s", "namespace": "n"}, "dep1")
    (tmp_path / "deployment_reports").mkdir()
    (tmp_path / "deployment_reports" / reports.filename("u", "s", None)).write_text(reports.dumps(body))
    (tmp_path / "deployments.json").write_text(json.dumps({"u/s": {
        "user": "u", "service_name": "s", "namespace": "n", "deployment_id": "dep1", "status": "creating"}}))
    [entry] = LookupModule().run(["u", "s"], variables={}, data_dir=str(tmp_path))
    assert entry["status"] == "creating" and entry["latest_report"]["report"] == body
    assert sorted(os.listdir(str(tmp_path))) == ["deployment_reports", "deployments.json"]


def test_lookup_unknown_pair_is_none(tmp_path):
    assert LookupModule().run(["nobody", "nothing"], variables={}, data_dir=str(tmp_path)) == [None]


def test_lookup_needs_two_terms(tmp_path):
    with pytest.raises(AnsibleError, match="two terms"):
        LookupModule().run(["only_user"], variables={}, data_dir=str(tmp_path))


def test_lookup_broken_store_is_an_error(tmp_path):
    (tmp_path / "deployments.json").write_text("{not json")
    with pytest.raises(AnsibleError, match="not valid JSON"):
        LookupModule().run(["a", "b"], variables={}, data_dir=str(tmp_path))


def test_lookup_query_returns_the_result_over_its_answer(tmp_path):
    seed(str(tmp_path))
    lookup = LookupModule()
    assert lookup.run(["test_user", "test_service"], variables={}, data_dir=str(tmp_path),
                      query="[status, latest_report.report.status]") == [["creating", "namespace_created"]]
    assert lookup.run(["nobody", "nothing"], variables={}, data_dir=str(tmp_path), query="status") == [None]
    assert lookup.run(["nobody", "nothing"], variables={}, data_dir=str(tmp_path), query="@ == null") == [True]


def test_lookup_bad_query_is_an_error_naming_it(tmp_path):
    seed(str(tmp_path))
    with pytest.raises(AnsibleError) as info:
        LookupModule().run(["test_user", "test_service"], variables={}, data_dir=str(tmp_path), query="status[")
    assert info.value.message == ("query: invalid JMESPath expression 'status[': "
                                  "Invalid jmespath expression: Incomplete expression")
    with pytest.raises(AnsibleError, match=r"^query: cannot apply JMESPath expression 'length\(deployment_id\)'"):
        LookupModule().run(["nobody", "x"], variables={}, data_dir=str(tmp_path), query="length(deployment_id)")


def test_lookup_in_playbook(tmp_path):
    data_dir = str(tmp_path / "data")
    seed(data_dir)
    out = tmp_path / "out.json"
    (tmp_path / "play.yml").write_text(textwrap.dedent("""\
        - hosts: all
          gather_facts: false
          tasks:
            - name: Look it up
              ansible.builtin.copy:
                dest: "%s"
                content: "{{ {'found': found, 'missing': missing, 'status': status} | to_json }}"
              vars:
                found: "{{ lookup('yunpeng.es_serverless.es_deployment', 'test_user', 'test_service',
                           data_dir='%s') }}"
                missing: "{{ lookup('yunpeng.es_serverless.es_deployment', 'x', 'y', data_dir='%s') }}"
                status: "{{ lookup('yunpeng.es_serverless.es_deployment', 'test_user', 'test_service',
                            data_dir='%s', query='latest_report.report.status') }}"
    """) % (out, data_dir, data_dir, data_dir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "collections"),
                "ANSIBLE_HOME": str(tmp_path / ".ansible-home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / ".tmp"),
                "ANSIBLE_CONFIG": str(tmp_path / "none.cfg")})
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", "ansible_python_interpreter=" + sys.executable, "play.yml"],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["found"]["status"] == "creating"
    assert result["found"]["namespace"] == "es-test"
    assert result["found"]["latest_report"]["report"]["message"] == "Namespace created successfully"
    assert result["missing"] is None
    assert result["status"] == "namespace_created"
