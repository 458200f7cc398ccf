"""The es_* variables: the ones a user sets (roles/common/meta/argument_specs.yml), the ones the flows
set themselves (roles/common/vars/main.yml), and the refusal of any other (the unknown_variables
filter, used by roles/common before stage 0)."""

import glob
import os

import yaml

from ansible_collections.yunpeng.es_serverless.plugins.filter.es_helpers import unknown_variables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(path):
    with open(os.path.join(ROOT, path)) as handle:
        return yaml.safe_load(handle)


def user_variables():
    return set(_load("roles/common/meta/argument_specs.yml")["argument_specs"]["main"]["options"])


def flow_variables():
    return set(_load("roles/common/vars/main.yml")["es_flow_variables"])


def _set_by(tasks, names):
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        for key in ("block", "rescue", "always"):
            _set_by(task.get(key), names)
        if str(task.get("register", "")).startswith("es_"):
            names.add(task["register"])
        for key in ("ansible.builtin.set_fact", "set_fact"):
            names.update(name for name in task.get(key) or {} if name.startswith("es_"))
        names.update(name for name in task.get("vars") or {} if name.startswith("es_"))


def names_the_flows_set():
    names = set()
    for path in glob.glob(os.path.join(ROOT, "roles", "*", "tasks", "*.yml")):
        _set_by(_load(path), names)
    for path in glob.glob(os.path.join(ROOT, "playbooks", "*.yml")):
        for play in _load(path):
            _set_by(play.get("tasks"), names)
            names.update(name for name in play.get("vars") or {} if name.startswith("es_"))
    for path in glob.glob(os.path.join(ROOT, "roles", "*", "vars", "*.yml")) + glob.glob(
            os.path.join(ROOT, "roles", "*", "defaults", "*.yml")):
        names.update(name for name in _load(path) or {} if name.startswith("es_"))
    return names


def test_every_name_the_flows_set_is_known_or_listed_as_theirs():
    missing = names_the_flows_set() - user_variables() - flow_variables()
    assert not missing, "add to roles/common/vars/main.yml es_flow_variables: %s" % sorted(missing)


def test_the_lists_do_not_overlap_and_every_user_variable_has_a_default():
    assert not user_variables() & flow_variables()
    defaults = set(_load("roles/common/defaults/main.yml"))
    # es_target_hosts is the play's (hosts:), defaulting to localhost there.
    assert user_variables() - defaults == {"es_target_hosts"}
    assert defaults - user_variables() <= flow_variables()  # derived values, not settings


def test_a_mistyped_variable_is_named_with_the_closest_known_one():
    known, internal = sorted(user_variables()), sorted(flow_variables())
    given = ["es_user", "es_replica", "es_request", "es_deployment_id", "es_gpus_count", "es_zzz", "es_rplicas"]
    assert unknown_variables(given, known, internal) == [
        "es_gpus_count (did you mean es_gpu_count?)",
        "es_replica (did you mean es_replicas?)",
        "es_rplicas (did you mean es_replicas?)",
        "es_zzz",
    ]
    assert unknown_variables(known + internal, known, internal) == []
    # A suggestion is always a variable a user sets, never one of the flow's own.
    assert unknown_variables(["es_requests"], known, internal) == ["es_requests (did you mean es_mem_request?)"]
