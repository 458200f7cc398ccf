"""The Python API: create, update and delete tenant clusters through ansible-runner, and read the data folder.

Each run is the collection's own playbook (``yunpeng.es_serverless.create_cluster`` or ``delete_cluster``)
run by ``ansible_runner.run`` with the report callback enabled; ``on_report`` is called with each report as
the run writes it (from the run's job events, in order). The queries read the data folder through the
collection's store (``plugins/module_utils/store.py``), the same answers as the ``es_deployment_info``
module and the ``es_deployment`` lookup.
"""

import dataclasses
import os
import shutil
import sys
import tempfile
import time

from es_serverless._collection import COLLECTIONS_PATH, module_utils

request_rules = module_utils("request")
store = module_utils("store")
reports_module = module_utils("reports")
extravars = module_utils("extravars", package="plugin_utils")

RequestError = request_rules.RequestError
StoreError = store.StoreError

CALLBACK = "yunpeng.es_serverless.reports"
PLAYBOOKS = {
    "create": "yunpeng.es_serverless.create_cluster",
    "update": "yunpeng.es_serverless.create_cluster",
    "delete": "yunpeng.es_serverless.delete_cluster",
}
# The last report of each kind of run; a run that ends without one of them wrote none (see ``RunResult``).
FINAL_STATUSES = {"create": ("completed", "failed"), "update": ("completed", "failed"),
                  "delete": ("deleted", "failed")}
TERMINAL_STATUSES = ("completed", "deleted", "failed")
# Stages at which a run is refused before it changes anything: the request, the quota, a run in progress.
REFUSAL_STAGES = ("metadata", "delete_metadata")

# The original manager's body (POST /clusters): field -> the request fields it sets.
MANAGER_FIELDS = {
    "cpu": ("cpu_request", "cpu_limit"),
    "memory": ("mem_request", "mem_limit"),
    "storage": ("disk_size",),
}


class ApiError(Exception):
    """A call that cannot run: ``str()`` says why; ``field`` names the request field when one is to blame."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


def _refuse(field, rule):
    raise ApiError(str(RequestError(field, rule)), field=field)


def default_namespace(user, service_name):
    """The namespace of a request that names none (the manager's body has no namespace):
    ``es-<user>-<service_name>`` in lower case with ``_`` and ``.`` as ``-``."""
    return ("es-%s-%s" % (user, service_name)).lower().replace("_", "-").replace(".", "-")


def to_request(body):
    """The request fields of ``body``: the collection's fields (``user``, ``service_name``, ``namespace``,
    ``cpu_request``, ...) or the original manager's body (``tenant_org_id``, ``user``, ``service_name``,
    ``replicas``, ``cpu``, ``memory``, ``storage``), validated by the collection's rules.

    ``cpu`` and ``memory`` are ``"<request>/<limit>"`` (the tenant record's form, ``"500m/2"``) or one
    quantity for both; ``storage`` is ``disk_size``; a missing ``namespace`` is ``default_namespace``.
    Returns the validated request; raises ``ApiError`` naming the field and the rule, with the message
    ``ansible-playbook`` gives for the same input.
    """
    if not isinstance(body, dict):
        _refuse("request", "must be a mapping of request fields (got %s)" % request_rules.echo(body))
    # A field left out is empty, as the playbook's defaults make it, so the message is the playbook's.
    fields = {"user": "", "service_name": ""}
    for key, value in body.items():
        if key not in MANAGER_FIELDS and value is not None:
            fields[key] = value
    for key, targets in MANAGER_FIELDS.items():
        if body.get(key) is None:
            continue
        given = [target for target in targets if body.get(target) is not None]
        if given:
            _refuse(key, "give either %s or %s, not both" % (key, " and ".join(targets)))
        value = body[key]
        parts = value.split("/") if isinstance(value, str) and len(targets) == 2 else [value]
        if len(parts) > len(targets) or (len(parts) == 2 and not all(parts)):
            _refuse(key, "must be one quantity or '<request>/<limit>' (got %s)" % request_rules.echo(value))
        for target, part in zip(targets, parts * len(targets) if len(parts) == 1 else parts):
            fields[target] = part
    if fields.get("namespace") in (None, ""):
        try:
            user = request_rules.check_name("user", fields.get("user"))
            service = request_rules.check_name("service_name", fields.get("service_name"))
        except RequestError as exc:
            raise ApiError(str(exc), field=exc.field)
        fields["namespace"] = default_namespace(user, service)
        if not request_rules.DNS_LABEL_RE.match(fields["namespace"]) or len(fields["namespace"]) > 63:
            _refuse("namespace", "is not given, and the one made from user and service_name (%s) %s; give one"
                    % (request_rules.echo(fields["namespace"]), request_rules.DNS_LABEL_RULE))
    try:
        return dict(request_rules.validate(fields))
    except RequestError as exc:
        raise ApiError(str(exc), field=exc.field)


def request_vars(req):
    """The playbook's variables of a validated request: ``es_<field>`` for each field."""
    return dict(("es_%s" % field, value) for field, value in req.items())


@dataclasses.dataclass
class RunResult:
    """What a create, update or delete did.

    ``status`` is the run's last report (``completed``, ``deleted`` or ``failed``), or ``error`` when the run
    wrote no final report (the playbook stopped before its first report: an unknown tenant to delete, the
    callback not found, an unknown variable); ``ok`` is true for ``completed``/``deleted``; ``refused`` is
    true when it failed at stage 0, before it changed anything (quota, a run in progress), or ended before
    its first report;
    ``error`` is the failed report's message or the playbook's own failure message.
    """

    operation: str
    user: str
    service_name: str
    deployment_id: str = None
    status: str = "error"
    ok: bool = False
    refused: bool = False
    stage: str = None
    error: str = None
    reports: list = dataclasses.field(default_factory=list)
    rc: int = None

    def to_dict(self):
        return dataclasses.asdict(self)


class _Written:
    """The reports of one pair written since it was made: a job event carries a report as the callback
    writes it, so ``on_report`` waits (at most ``WRITE_WAIT`` seconds) until the pair's index lists it."""

    WRITE_WAIT = 5.0

    def __init__(self, user, service_name, data_dir):
        self.pair, self.data_dir, self.bodies = (user, service_name), data_dir, []
        self.seen = new_reports(user, service_name, data_dir)[1] if _valid_pair(user, service_name) else 0

    def wait_for(self, report):
        """True once ``report`` is written; False when it is another pair's or not written in time."""
        if (report.get("user"), report.get("service_name")) != self.pair:
            return False
        deadline = time.monotonic() + self.WRITE_WAIT
        while report not in self.bodies:
            found, self.seen = new_reports(self.pair[0], self.pair[1], self.data_dir, self.seen)
            self.bodies.extend(item["report"] for item in found)
            if report in self.bodies:
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


def _valid_pair(user, service_name):
    return request_rules.is_valid_name(user) and request_rules.is_valid_name(service_name)


def _job_report(event):
    """The report a job event carries (an ``es_report`` task's result, as the callback writes it), or None."""
    if event.get("event") not in ("runner_on_ok", "runner_item_on_ok"):
        return None
    spec = ((event.get("event_data") or {}).get("res") or {}).get("es_report")
    if not isinstance(spec, dict) or spec.get("check_mode") or not isinstance(spec.get("report"), dict):
        return None
    return spec["report"]


def _failure_message(event):
    """The message of a failed task that ends the run (not one whose failure is ignored), or None."""
    data = event.get("event_data") or {}
    if event.get("event") != "runner_on_failed" or data.get("ignore_errors"):
        return None
    res = data.get("res") or {}
    return res.get("msg") or res.get("message") or "task %s failed" % data.get("task", "?")


def run_playbook(operation, variables, data_dir, *, on_report=None, kubeconfig=None, context=None,
                 private_data_dir=None, envvars=None, extra_vars=None, verbosity=0):
    """Run the playbook of ``operation`` with ``variables`` (``es_*``) and return a ``RunResult``.

    The variables go to ``env/extravars`` with every string tagged ``!unsafe`` (tenant strings are data,
    never templates). ``extra_vars``: more ``es_*`` variables of the flow (README: Variables), e.g.
    ``es_rollout_timeout`` or the GitLab settings; unknown ones are refused by the playbook.
    ``private_data_dir``: ansible-runner's folder, kept (default: a temporary folder, removed).
    """
    import ansible_runner

    if operation not in PLAYBOOKS:
        raise ApiError("operation: must be one of %s (got %r)" % (", ".join(PLAYBOOKS), operation))
    if not data_dir:
        raise ApiError("data_dir: is required (the data folder of the reports and the store)", field="data_dir")
    variables = dict(extra_vars or {}, **variables)
    variables["es_data_dir"] = os.path.abspath(data_dir)
    if kubeconfig:
        variables["es_kubeconfig"] = os.path.abspath(kubeconfig)
    if context:
        variables["es_kube_context"] = context
    folder = private_data_dir or tempfile.mkdtemp(prefix="es-serverless-run-")
    os.makedirs(os.path.join(folder, "env"), mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(folder, "project"), exist_ok=True)
    extravars.write_extra_vars(os.path.join(folder, "env", "extravars"), variables)
    env = {
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(
            [COLLECTIONS_PATH, os.environ.get("ANSIBLE_COLLECTIONS_PATH")
             or os.pathsep.join(["~/.ansible/collections", "/usr/share/ansible/collections"])]),
        "ANSIBLE_CALLBACKS_ENABLED": CALLBACK,
        # the ansible-playbook of the Python that runs this package first: the Ansible it was installed with
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)]),
    }
    env.update(envvars or {})
    result = RunResult(operation, str(variables.get("es_user")), str(variables.get("es_service_name")))
    failures = []
    written = _Written(result.user, result.service_name, variables["es_data_dir"])

    def handle(event):
        report = _job_report(event)
        if report is not None:
            written.wait_for(report)
            result.reports.append(report)
            result.deployment_id = result.deployment_id or report.get("deployment_id")
            if on_report is not None:
                on_report(report)
        message = _failure_message(event)
        if message:
            failures.append(message)
        return True

    try:
        runner = ansible_runner.run(private_data_dir=folder, playbook=PLAYBOOKS[operation], envvars=env,
                                    event_handler=handle, quiet=True, verbosity=verbosity)
        output = runner.stdout.read() if runner.rc and not failures else ""
    finally:
        if private_data_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    result.rc = runner.rc
    last = result.reports[-1] if result.reports else None
    if last is not None and last.get("status") in FINAL_STATUSES[operation]:
        result.status = last["status"]
        result.ok = last["status"] != "failed" and runner.rc == 0
        if last["status"] == "failed":
            result.error = last.get("message")
            result.stage = (last.get("details") or {}).get("stage")
    else:
        result.error = failures[-1] if failures else "the playbook ended (%s, rc %s) without a final report: %s" % (
            runner.status, runner.rc, " / ".join(output.strip().splitlines()[-3:]) or "no output")
    result.refused = (result.status == "error" and not result.reports) or (
        result.status == "failed" and result.stage in REFUSAL_STAGES)
    return result


def create_cluster(request, data_dir, *, on_report=None, **options):
    """Create (or, for a tenant whose cluster is ``created``, update) a tenant cluster.

    ``request``: the request fields or the original manager's body (``to_request``). Bad input raises
    ``ApiError`` before anything runs. ``options``: those of ``run_playbook`` (``kubeconfig``, ``context``,
    ``extra_vars``, ``private_data_dir``, ``envvars``, ``verbosity``). Returns a ``RunResult``.
    """
    req = to_request(request)
    operation = "update" if _status(data_dir, req["user"], req["service_name"]) == "created" else "create"
    return run_playbook(operation, request_vars(req), data_dir, on_report=on_report, **options)


def update_cluster(request, data_dir, *, on_report=None, **options):
    """Change a ``created`` cluster to ``request``: the create flow run again (README: Update).

    Raises ``ApiError`` when the pair has no ``created`` cluster (a create is not an update).
    """
    req = to_request(request)
    status = _status(data_dir, req["user"], req["service_name"])
    if status != "created":
        raise ApiError("%s/%s has no created cluster to update (its status: %s)"
                       % (req["user"], req["service_name"], status or "none"))
    return run_playbook("update", request_vars(req), data_dir, on_report=on_report, **options)


def delete_cluster(user, service_name, data_dir, *, on_report=None, **options):
    """Delete the pair's cluster (``yunpeng.es_serverless.delete_cluster``). Returns a ``RunResult``."""
    for field, value in (("user", user), ("service_name", service_name)):
        try:
            request_rules.check_name(field, value)
        except RequestError as exc:
            raise ApiError(str(exc), field=exc.field)
    return run_playbook("delete", {"es_user": user, "es_service_name": service_name}, data_dir,
                        on_report=on_report, **options)


def _status(data_dir, user, service_name):
    entry = store.MetadataStore(data_dir).get_deployment(user, service_name)
    return entry.get("status") if entry else None


def get_deployment(user, service_name, data_dir):
    """The pair's deployment status entry with its ``latest_report`` (or None): the lookup's answer."""
    answer = store.query(data_dir, user, service_name, log_lines=0)
    if not answer["deployments"]:
        return None
    return dict(answer["deployments"][0], latest_report=answer["latest_report"])


def list_deployments(data_dir, user=None, service_name=None):
    """Deployment status entries, filtered on ``user`` and ``service_name`` when given."""
    return store.MetadataStore(data_dir).list_deployments(user, service_name)


def reports(user, service_name, data_dir, deployment_id=None):
    """The pair's reports in write order (of one deployment when given): ``[{"file", "path", "report"}]``."""
    return store.query(data_dir, user, service_name, deployment_id, log_lines=0)["reports"]


def log(data_dir, user=None, service_name=None, lines=20):
    """The last ``lines`` log lines (of the pair, or of a user, when given)."""
    return store.query(data_dir, user, service_name, log_lines=lines)["log_tail"]


def query(data_dir, user=None, service_name=None, deployment_id=None, log_lines=20):
    """The whole answer of the ``es_deployment_info`` module (deployments, tenant, reports, latest, log)."""
    return store.query(data_dir, user, service_name, deployment_id, log_lines=log_lines)


def new_reports(user, service_name, data_dir, seen=0):
    """The pair's reports written after the first ``seen`` names of its index (``{"file", "path", "report",
    "index"}``, ``index`` the name's place in the index), and the new ``seen``."""
    names = store.MetadataStore(data_dir).report_names(user, service_name)
    found = reports_module.read(data_dir, names[seen:], user, service_name)
    place = dict((name, number) for number, name in enumerate(names))
    for item in found:
        item["index"] = place[item["file"]]
    return found, len(names)


def follow(user, service_name, data_dir, deployment_id=None, interval=0.2, timeout=None, sleep=time.sleep):
    """Yield the pair's reports as they are written (``{"file", "path", "report"}``), from now on, or from
    the first report of ``deployment_id``; stops after a final report (``completed``, ``deleted``,
    ``failed``) of that deployment (of any deployment when none is given), or after ``timeout`` seconds."""
    seen = 0
    if deployment_id is None:
        _old, seen = new_reports(user, service_name, data_dir)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        found, seen = new_reports(user, service_name, data_dir, seen)
        for item in found:
            body = item["report"]
            if deployment_id is not None and body.get("deployment_id") != deployment_id:
                continue
            yield item
            if body.get("status") in TERMINAL_STATUSES:
                return
        if deadline is not None and time.monotonic() >= deadline:
            return
        sleep(interval)
