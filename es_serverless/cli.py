"""The ``es-serverless`` command: create, update, delete, watch and query tenant clusters from a shell.

Built with **click** (the chosen command-line library: options, ``--help`` with examples, usage errors)
and **rich** (the live progress of a run, on stderr), over the Python API (``es_serverless.api``): every
run is the collection's playbook through ansible-runner, every query reads the data folder through the
collection's store, and ``--query`` is the collection's JMESPath rule (``plugins/module_utils/jsonquery.py``,
also the ``query`` option of the ``es_deployment_info`` module and of the ``es_deployment`` lookup).
``python -m es_serverless`` is the same command (``es_serverless/__main__.py``); ``pip install .`` installs
it as ``es-serverless`` (``pyproject.toml``).

stdout carries only the answer (``--json``: one JSON document); progress and errors go to stderr. The exit
codes are ``EXIT_CODES`` (README: "The es-serverless command").
"""

import contextlib
import functools
import json
import os
import textwrap
import time
import traceback

import click

from es_serverless import api
from es_serverless._collection import COLLECTIONS_PATH, PACKAGE, module_utils

jsonquery = module_utils("jsonquery")
request_rules = api.request_rules
reports_module = api.reports_module
store = api.store

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2  # click's own usage errors exit 2 as well
EXIT_NOT_FOUND = 3
EXIT_ERROR = 4
EXIT_INTERRUPTED = 130
EXIT_CODES = (
    (EXIT_OK, "success (a query found what it asked for; a run completed or deleted)"),
    (EXIT_FAILED, "the run failed after it started: a create or update was rolled back, a delete is"
                  " finished by running it again"),
    (EXIT_REFUSED, "refused before anything changed: a bad option or request field, an unknown -e variable,"
                   " the quota, a run in progress, an update of a cluster that is not created"),
    (EXIT_NOT_FOUND, "not found: the pair has no deployment (status, reports, log, watch, update, delete)"),
    (EXIT_ERROR, "any other error: the data folder unreadable, an invalid --query, a run that ended without its"
                 " final report, watch --timeout reached"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)

DATA_DIR_ENV = "ES_SERVERLESS_DATA_DIR"
DEFAULT_DATA_DIR = "~/es_serverless"  # es_data_dir in roles/common/defaults/main.yml
SPEC_PATH = ("roles", "common", "meta", "argument_specs.yml")  # the flow's variables and their types
# Flow variables that have an option of their own.
OPTION_VARIABLES = {"es_data_dir": "--data-dir", "es_kubeconfig": "--kubeconfig", "es_kube_context": "--context"}
FIELD_METAVARS = {"user": "NAME", "service_name": "NAME", "namespace": "NAMESPACE", "tenant_org_id": "ORG",
                  "cpu": "REQ[/LIM]", "memory": "REQ[/LIM]", "storage": "QUANTITY"}
STATUS_STYLES = {"failed": "bold red", "completed": "bold green", "deleted": "bold green"}


class Failure(click.ClickException):
    """An error with its exit code; click prints ``Error: <message>`` on stderr."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def not_found(user, service_name, data_dir, what="deployment"):
    return Failure("no %s of user %s, service %s in %s" % (what, request_rules.echo(user),
                                                           request_rules.echo(service_name), data_dir),
                   EXIT_NOT_FOUND)


class Command(click.Command):
    """A command whose errors exit with the code that says what happened (``EXIT_CODES``)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except api.ApiError as exc:
            raise Failure(str(exc), EXIT_REFUSED)
        except api.StoreError as exc:
            raise Failure("cannot read the data folder %s: %s" % (ctx.params.get("data_dir"), exc), EXIT_ERROR)
        except OSError as exc:
            raise Failure(str(exc), EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("\nInterrupted. A run stopped this way was not rolled back: run the same create, or the"
                       " delete, again to take it over (README: After a crash).", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # a bug: the traceback for the report, and not an exit code that means a result
            traceback.print_exc()
            raise Failure("internal error: %s: %s" % (type(exc).__name__, exc), EXIT_ERROR)


class Group(click.Group):
    command_class = Command


# ---------------------------------------------------------------------------------------------- options

def _expand_dir(_ctx, _param, value):
    return os.path.abspath(os.path.expanduser(value)) if value else value


def _check_query(_ctx, _param, value):
    if value is not None:
        try:
            jsonquery.compile_query(value)
        except ValueError as exc:
            raise Failure(str(exc), EXIT_ERROR)
    return value


def data_dir_option(func):
    return click.option(
        "--data-dir", type=click.Path(file_okay=False), envvar=DATA_DIR_ENV, show_envvar=True,
        default=DEFAULT_DATA_DIR, show_default=True, callback=_expand_dir,
        help="Data folder: reports, tenant records, deployment statuses, the log (es_data_dir).")(func)


def output_options(func):
    func = click.option("--query", metavar="EXPR", callback=_check_query, expose_value=True,
                        help="JMESPath expression applied to the JSON answer; prints its result as JSON"
                             " (implies --json). An invalid one exits 4 before anything runs.")(func)
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout (no progress).")(func)


def cluster_options(func):
    func = click.option("--context", metavar="NAME", help="kubeconfig context (es_kube_context).")(func)
    return click.option(
        "--kubeconfig", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
        help="kubeconfig of the cluster (es_kubeconfig). Default: the playbook's own, KUBECONFIG or"
             " ~/.kube/config, or the in-cluster service account.")(func)


@functools.cache
def variable_specs():
    """The flow's variables (``es_*``) and their argument specs (``roles/common/meta/argument_specs.yml``)."""
    import yaml

    path = os.path.join(COLLECTIONS_PATH, *(PACKAGE.split(".") + list(SPEC_PATH)))
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)["argument_specs"]["main"]["options"]


def _field_help(field):
    if field in api.MANAGER_FIELDS:
        targets = api.MANAGER_FIELDS[field]
        if len(targets) == 2:
            return ("The manager's %s: '<request>/<limit>' or one quantity for both (sets %s; not with them)."
                    % (field, " and ".join("--" + target.replace("_", "-") for target in targets)))
        return "The manager's %s: the same as --%s." % (field, targets[0].replace("_", "-"))
    spec = variable_specs().get("es_" + field) or {}
    text = " ".join(spec.get("description") or []) if isinstance(spec.get("description"), list) \
        else (spec.get("description") or "")
    default = request_rules.REQUEST_FIELDS[field]
    if default is request_rules.REQUIRED:
        text += " Default: es-<user>-<service-name>." if field == "namespace" else " Required."
    elif default != "":
        text += " Default: %s." % default
    return "%s (es_%s)" % (text.strip(), field)


def _field_metavar(field):
    if field in FIELD_METAVARS:
        return FIELD_METAVARS[field]
    return "QUANTITY" if field in request_rules.QUANTITY_FIELDS else "INT"


def request_options(func):
    """``--<field>`` for each request field (``request.REQUEST_FIELDS``) and the manager's ``--cpu``,
    ``--memory``, ``--storage`` (``api.MANAGER_FIELDS``), as strings: the request rules check them."""
    func = click.option("-e", "--extra-var", "extra_var", multiple=True, metavar="NAME=VALUE",
                        help="Another es_* variable of the flow (README: Variables), e.g. es_rollout_timeout=900;"
                             " repeatable. See 'Extra variables' below.")(func)
    for field in reversed(list(request_rules.REQUEST_FIELDS) + list(api.MANAGER_FIELDS)):
        func = click.option("--" + field.replace("_", "-"), field, metavar=_field_metavar(field),
                            help=_field_help(field))(func)
    return func


def run_options_of_request(func):
    """The options of create and update: the request's, the cluster's, the data folder, the output."""
    for option in (click.pass_context, output_options, data_dir_option, cluster_options, request_options):
        func = option(func)
    return func


def given_fields(params):
    """The request fields (and the manager's) given as options: the others are not sent."""
    fields = list(request_rules.REQUEST_FIELDS) + list(api.MANAGER_FIELDS)
    return dict((field, params[field]) for field in fields if params.get(field) is not None)


def _refuse(name, rule):
    raise api.ApiError(str(api.RequestError(name, rule)), field=name)


def typed_value(name, value, kind):
    """``value`` (a string from the command line) as the type the argument spec gives ``name``."""
    echo = request_rules.echo(value)
    if kind == "int":
        if not request_rules.INT_RE.match(value):
            _refuse(name, "must be an integer (got %s)" % echo)
        return int(value)
    if kind == "bool":
        from ansible.module_utils.parsing.convert_bool import BOOLEANS_FALSE, BOOLEANS_TRUE

        if value.lower() not in BOOLEANS_TRUE | BOOLEANS_FALSE:
            _refuse(name, "must be a boolean: true/false, yes/no, on/off or 1/0 (got %s)" % echo)
        return value.lower() in BOOLEANS_TRUE
    if kind in ("list", "dict"):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            _refuse(name, "must be a JSON %s (got %s: %s)" % (kind, echo, exc))
        if not isinstance(parsed, list if kind == "list" else dict):
            _refuse(name, "must be a JSON %s (got %s)" % (kind, echo))
        return parsed
    return value


def extra_vars(pairs):
    """The ``-e NAME=VALUE`` pairs as variables: only the flow's ``es_*`` variables that have no option of
    their own; typed by the flow's argument spec (int, bool, JSON list or dict), strings otherwise."""
    result = {}
    for text in pairs:
        name, sep, value = text.partition("=")
        if not sep or not name:
            _refuse("extra_var", "must be NAME=VALUE (got %s)" % request_rules.echo(text))
        if not name.startswith("es_"):
            _refuse(name, "only the flow's es_* variables can be given with -e (README: Variables)")
        field = name[len("es_"):]
        if field in request_rules.REQUEST_FIELDS or field in api.MANAGER_FIELDS:
            _refuse(name, "is a request field: give it as --%s" % field.replace("_", "-"))
        if name in OPTION_VARIABLES:
            _refuse(name, "give it as %s" % OPTION_VARIABLES[name])
        spec = variable_specs().get(name)
        # unknown es_* names go to the playbook, which refuses them naming the closest known one
        result[name] = typed_value(name, value, spec.get("type") if isinstance(spec, dict) else None)
    return result


# ---------------------------------------------------------------------------------------------- output

def printable(value):
    """``value`` as text for a terminal: characters that are not printable are escaped (data from outside
    never moves the cursor or colours the screen)."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def emit(document, as_json, query, human=None):
    """Print the answer: JSON (the ``query`` result when given), or ``human(document)``."""
    if as_json or query is not None or human is None:
        if query is not None:
            try:
                document = jsonquery.search(query, document)
            except ValueError as exc:
                raise Failure(str(exc), EXIT_ERROR)
        click.echo(json.dumps(document, indent=2))
    else:
        human(document)


def table(rows, headers):
    """Aligned columns (the last one unpadded), as ``kubectl get`` prints them."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max([len(headers[col])] + [len(row[col]) for row in rows]) for col in range(len(headers) - 1)]
    for row in [list(headers)] + rows:
        click.echo("  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]).rstrip())


class Progress:
    """The live progress of a run on stderr: each report as it arrives (seconds since the start, status,
    message), a spinner with the elapsed time while waiting, and the outcome."""

    def __init__(self, title):
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner

        self.title = title
        self.console = Console(stderr=True, highlight=False)
        self.start = time.monotonic()
        self.last = None
        self.titled = False
        self.spinner = Spinner("dots")
        self.live = Live(console=self.console, get_renderable=self._render, transient=True, refresh_per_second=8,
                         redirect_stdout=False, redirect_stderr=False)

    def _render(self):
        from rich.text import Text

        waiting = "waiting for the first report" if self.last is None else "after %s" % self.last
        self.spinner.update(text=Text("%s: %.1fs, %s" % (self.title, time.monotonic() - self.start, waiting)))
        return self.spinner

    def _header(self):
        """The title, once, above the first report (a call refused before its first report shows only its
        error)."""
        from rich.text import Text

        if not self.titled:
            self.titled = True
            self.console.print(Text(self.title, style="bold"), soft_wrap=True)

    def __enter__(self):
        self.live.start()
        return self

    def __exit__(self, *_exc):
        self.live.stop()

    def report(self, body, elapsed=None):
        """Show one report; ``elapsed``: its seconds since the start (default: now)."""
        from rich.text import Text

        if elapsed is None:
            elapsed = time.monotonic() - self.start
        self._header()
        status = printable(body.get("status"))
        self.last = status
        line = Text.assemble(("%7.1fs  " % elapsed, "dim"), (status.ljust(22), STATUS_STYLES.get(status, "cyan")),
                             printable(body.get("message")))
        self.console.print(line, soft_wrap=True)

    def outcome(self, result, took=None):
        """The last line: what the run (or the watched deployment) came to; ``took``: its seconds (default:
        since the start)."""
        from rich.text import Text

        self._header()
        what = "%s of %s/%s" % (result.operation, printable(result.user), printable(result.service_name))
        if took is None:
            took = time.monotonic() - self.start
        reason = printable(failure_reason(result))
        if result.ok:
            done = "%s: %s in %.1fs (deployment %s)" % (what, result.status, took, printable(result.deployment_id))
            line = Text(done, style="bold green")
        elif result.status == "failed" and result.refused:
            line = Text("%s refused at stage %s, nothing changed: %s" % (what, printable(result.stage), reason),
                        style="bold red")
        elif result.status == "failed":
            after = ("run the delete again to finish it" if result.operation == "delete"
                     else "what it did was rolled back")
            stage = printable(result.stage)
            failed = "%s failed at stage %s after %.1fs (%s): %s" % (what, stage, took, after, reason)
            line = Text(failed, style="bold red")
        else:
            line = Text("%s: %s" % (what, reason), style="bold red")
        self.console.print(line, soft_wrap=True)


def failure_reason(result):
    """Why a run failed: the failed report's error (without the 'failed at stage' prefix), or its message."""
    if result.reports and result.status == "failed":
        details = result.reports[-1].get("details") or {}
        if details.get("error"):
            return details["error"]
    return result.error


def run_exit_code(result):
    """The exit code of a ``RunResult`` (``EXIT_CODES``)."""
    if result.ok:
        return EXIT_OK
    if result.status == "failed":
        return EXIT_REFUSED if result.refused else EXIT_FAILED
    # no final report: refused before the flow began (an unknown variable, nothing to delete), or a run
    # that ended part-way without one (killed)
    return EXIT_REFUSED if not result.reports else EXIT_ERROR


def run(ctx, title, call):
    """Run ``call(on_report)`` with live progress (unless JSON is asked for), print the result, exit."""
    quiet = ctx.params["as_json"] or ctx.params["query"] is not None
    with contextlib.nullcontext() if quiet else Progress(title) as progress:
        result = call(None if quiet else progress.report)
    if quiet:
        emit(result.to_dict(), True, ctx.params["query"])
    else:
        progress.outcome(result)
    ctx.exit(run_exit_code(result))


def run_options(params):
    return dict(kubeconfig=params["kubeconfig"], context=params["context"], extra_vars=extra_vars(params["extra_var"]))


# ---------------------------------------------------------------------------------------------- commands

EPILOG = """\b
Exit codes:
%s

\b
Examples:
  es-serverless create --user alice --service-name search --replicas 3 --cpu 1/2
  es-serverless create --user bob --service-name vec --gpu-count 1 -e es_rollout_timeout=900 --json
  es-serverless status alice search --query status
  es-serverless list --user alice --json --query "[?status=='failed'].service_name"
  es-serverless watch alice search
  es-serverless delete alice search

The cluster is KUBECONFIG's (or --kubeconfig, --context); the data folder --data-dir or
$ES_SERVERLESS_DATA_DIR (default ~/es_serverless). Every command but serve takes --json and
--query; 'es-serverless COMMAND --help' shows its options and examples.
""" % "\n".join(textwrap.fill(text, 96, initial_indent="  %-4d" % code, subsequent_indent=" " * 6)
                for code, text in EXIT_CODES)

EXTRA_VARS_HELP = """\b
Extra variables (-e NAME=VALUE):
  Any es_* variable of the flow that has no option of its own (README: Variables):
  es_rollout_timeout, es_kibana_replicas, es_storage_class, es_gitlab_url, ...
  A value is a string, except for the variables roles/common/meta/argument_specs.yml
  types as int (digits, with an optional sign), bool (true/false, yes/no, on/off, 1/0)
  or list/dict (JSON, e.g. -e 'es_gitlab_files=["a.yml"]'); anything else is refused
  (exit 2) naming the variable. Strings are passed as data (!unsafe), never templated.
  Request fields (-e es_replicas=3) and es_data_dir, es_kubeconfig, es_kube_context are
  refused: use their options. An unknown es_* name is refused by the playbook, naming
  the closest known one.
"""


@click.group(cls=Group, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def cli():
    """Create, update, delete and query the tenant Elasticsearch clusters of the yunpeng.es_serverless
    collection.

    A run (create, update, delete) is the collection's playbook through ansible-runner; it writes one
    report per stage to the data folder, shown here as it arrives, and rolls back what it did when it
    fails. The queries (status, list, reports, log) read the data folder only.
    """


@cli.command(epilog="""\b
Examples:
  es-serverless create --user alice --service-name search
  es-serverless create --user alice --service-name search --namespace es-alice \\
      --replicas 3 --cpu-request 1 --cpu-limit 2 --mem-request 2Gi --mem-limit 4Gi --disk-size 50Gi
  es-serverless create --tenant-org-id org-1 --user alice --service-name search \\
      --replicas 1 --cpu 500m/2 --memory 1Gi/2Gi --storage 10Gi        # the manager's body
  es-serverless create --user bob --service-name vec --gpu-count 2 -e es_rollout_timeout=900
  es-serverless create --user alice --service-name search --json --query "reports[].status"

Options left out are not sent: the collection's defaults apply. A create of a pair whose
cluster is created is an update with that request (see 'update', which keeps what is not given).
Progress goes to stderr; with --json or --query stdout holds the run's result
(operation, user, service_name, deployment_id, status, ok, refused, stage, error, reports, rc).

""" + EXTRA_VARS_HELP)
@run_options_of_request
def create(ctx, **params):
    """Create a tenant cluster (an update of a created one)."""
    body = given_fields(params)
    options = run_options(params)
    api.to_request(body)  # bad input is refused before the progress starts
    title = "create %s/%s in %s" % (printable(body.get("user")), printable(body.get("service_name")),
                                    params["data_dir"])
    run(ctx, title, lambda on_report: api.create_cluster(body, params["data_dir"], on_report=on_report, **options))


@cli.command(short_help="Update a created cluster: only the fields given change.", epilog="""\b
Examples:
  es-serverless update --user alice --service-name search --replicas 3
  es-serverless update --user alice --service-name search --cpu 1/4 --disk-size 20Gi

Only the fields given change: the others keep the cluster's current request (its deployment
status's 'request'), so 'update --replicas 3' does not put the cpu, memory or disk back to the
defaults. Refused (exit 2) unless the pair's cluster is created; exit 3 when it has no deployment.

""" + EXTRA_VARS_HELP)
@run_options_of_request
def update(ctx, **params):
    """Update a created cluster: the fields given change, the rest stay as they are (README: Update)."""
    given = given_fields(params)
    user, service_name = given.get("user"), given.get("service_name")
    options = run_options(params)
    current = None
    if user is not None and service_name is not None:
        current = api.get_deployment(user, service_name, params["data_dir"])
        if current is None:
            raise not_found(user, service_name, params["data_dir"])
    body = dict((current or {}).get("request") or {})
    for field, targets in api.MANAGER_FIELDS.items():
        if field in given:
            for target in targets:
                body.pop(target, None)
    body.update(given)
    api.to_request(body)
    title = "update %s/%s in %s" % (printable(user), printable(service_name), params["data_dir"])
    run(ctx, title, lambda on_report: api.update_cluster(body, params["data_dir"], on_report=on_report, **options))


@cli.command(epilog="""\b
Examples:
  es-serverless delete alice search
  es-serverless delete alice search --json --query status

Removes the cluster's Kubernetes objects (its namespace when the collection made it) and
keeps its reports; the pair's status becomes 'deleted'. Exit 3 when the pair has no deployment.

""" + EXTRA_VARS_HELP)
@click.argument("user")
@click.argument("service_name")
@click.option("-e", "--extra-var", "extra_var", multiple=True, metavar="NAME=VALUE",
              help="Another es_* variable of the flow, e.g. es_delete_timeout=600; repeatable.")
@cluster_options
@data_dir_option
@output_options
@click.pass_context
def delete(ctx, user, service_name, **params):
    """Delete the cluster of USER's SERVICE_NAME."""
    if api.get_deployment(user, service_name, params["data_dir"]) is None:
        raise not_found(user, service_name, params["data_dir"])
    options = run_options(params)
    title = "delete %s/%s in %s" % (printable(user), printable(service_name), params["data_dir"])
    run(ctx, title, lambda on_report: api.delete_cluster(user, service_name, params["data_dir"],
                                                         on_report=on_report, **options))


@cli.command(short_help="The deployment status of a pair, with its latest report.", epilog="""\b
Examples:
  es-serverless status alice search
  es-serverless status alice search --json
  es-serverless status alice search --query "[status, latest_report.report.message]"

JSON: the deployment status entry (user, service_name, namespace, deployment_id, status, stage,
error, created_at, updated_at, request, ...) with latest_report ({file, path, report}), the
answer of the es_deployment lookup. Exit 3 when the pair has no deployment.
""")
@click.argument("user")
@click.argument("service_name")
@data_dir_option
@output_options
def status(user, service_name, data_dir, as_json, query):
    """Where is my cluster? The deployment status of USER's SERVICE_NAME, with its latest report."""
    entry = api.get_deployment(user, service_name, data_dir)
    if entry is None:
        raise not_found(user, service_name, data_dir)

    def human(entry):
        rows = [("cluster", "%s/%s" % (entry.get("user"), entry.get("service_name"))),
                ("status", entry.get("status")), ("namespace", entry.get("namespace")),
                ("deployment", entry.get("deployment_id")), ("updated", entry.get("updated_at"))]
        running = store.running_run(entry)
        if running:
            rows.append(("running", "%s, deployment %s" % (running["operation"], running["deployment_id"])))
        if entry.get("stage") or entry.get("error"):
            rows.append(("failed", "at stage %s: %s" % (entry.get("stage"), entry.get("error"))))
        latest = (entry.get("latest_report") or {}).get("report")
        if latest:
            rows.append(("latest report", "%s %s: %s" % (latest.get("timestamp"), latest.get("status"),
                                                         latest.get("message"))))
        for name, value in rows:
            click.echo("%-14s %s" % (name, printable(value)))

    emit(entry, as_json, query, human)


@cli.command(name="list", epilog="""\b
Examples:
  es-serverless list
  es-serverless list --user alice
  es-serverless list --json --query "[?status=='created'].[user, service_name]"

JSON: the deployment status entries, sorted by user and service (an empty list when there are none).
""")
@click.option("--user", help="Only the deployments of this user.")
@click.option("--service-name", help="Only the deployments of this service.")
@data_dir_option
@output_options
def list_command(user, service_name, data_dir, as_json, query):
    """The deployments of the data folder (of a user, of a service)."""
    entries = api.list_deployments(data_dir, user, service_name)

    def human(entries):
        if not entries:
            click.echo("No deployments in %s." % data_dir, err=True)
            return
        table([(e.get("user"), e.get("service_name"), e.get("namespace"), e.get("status"), e.get("deployment_id"),
                e.get("updated_at")) for e in entries],
              ("USER", "SERVICE", "NAMESPACE", "STATUS", "DEPLOYMENT", "UPDATED"))

    emit(entries, as_json, query, human)


@cli.command(epilog="""\b
Examples:
  es-serverless reports alice search
  es-serverless reports alice search --deployment-id 8xk2m4q7w9z1c3v5b6n0
  es-serverless reports alice search --query "[].report.[status, message]"
  es-serverless reports _refused _refused          # the refused requests with invalid names

JSON: [{file, path, report, index}, ...] in write order. Exit 3 when there are none.
""")
@click.argument("user")
@click.argument("service_name")
@click.option("--deployment-id", metavar="ID", help="Only the reports of this deployment (run).")
@data_dir_option
@output_options
def reports(user, service_name, deployment_id, data_dir, as_json, query):
    """The reports of USER's SERVICE_NAME, in write order."""
    found = api.reports(user, service_name, data_dir, deployment_id)
    if not found:
        if deployment_id is not None:
            raise not_found(user, service_name, data_dir, "report of deployment %s" % request_rules.echo(deployment_id))
        raise not_found(user, service_name, data_dir, "report")

    def human(found):
        table([(item["report"].get("timestamp"), item["report"].get("deployment_id"), item["report"].get("status"),
                item["report"].get("message")) for item in found],
              ("TIME", "DEPLOYMENT", "STATUS", "MESSAGE"))

    emit(found, as_json, query, human)


@cli.command(epilog="""\b
Examples:
  es-serverless log
  es-serverless log --user alice --service-name search -n 5
  es-serverless log --user alice --json --query "length(@)"

For a pair, the log lines of its last reports (rebuilt from its report files); otherwise the
last lines of the log file, of the user or service when given. JSON: a list of lines.
Exit 3 when a user or service is given that has no deployment and no line.
""")
@click.option("--user", help="Only the lines of this user.")
@click.option("--service-name", help="Only the lines of this service.")
@click.option("-n", "--lines", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the last lines.")
@data_dir_option
@output_options
def log(user, service_name, lines, data_dir, as_json, query):
    """The last lines of the deployment log."""
    found = api.log(data_dir, user, service_name, lines)
    if not found and (user is not None or service_name is not None) \
            and not api.list_deployments(data_dir, user, service_name):
        raise not_found(user, service_name, data_dir, "deployment or log line")

    def human(found):
        for line in found:
            click.echo(printable(line))

    emit(found, as_json, query, human)


def _report_time(item):
    parsed = reports_module.split_filename(item["file"])
    return parsed[1] if parsed else None


def _operation(bodies):
    first = bodies[0] if bodies else {}
    if first.get("status") == "deleting" or (bodies and bodies[-1].get("status") == "deleted"):
        return "delete"
    return "update" if (first.get("details") or {}).get("operation") == "update" else "create"


def watched_result(user, service_name, deployment_id, bodies, operation=None):
    """A ``RunResult`` of the reports of one deployment, as a run would have returned it."""
    result = api.RunResult(operation or _operation(bodies), user, service_name, deployment_id, reports=bodies)
    last = bodies[-1] if bodies else {}
    if last.get("status") in api.TERMINAL_STATUSES:
        result.status = last["status"]
        result.ok = last["status"] != "failed"
        if last["status"] == "failed":
            result.error = last.get("message")
            result.stage = (last.get("details") or {}).get("stage")
            result.refused = result.stage in api.REFUSAL_STAGES
    return result


@cli.command(short_help="Follow the run on a pair, its reports as they are written.", epilog="""\b
Examples:
  es-serverless watch alice search
  es-serverless watch alice search --deployment-id 8xk2m4q7w9z1c3v5b6n0 --timeout 900
  es-serverless watch alice search --json --query "[status, stage, error]"

Follows the run in progress on the pair (a create, update or delete started anywhere: this
command, ansible-playbook, AWX, the HTTP API) from its first report until its final one, or
the deployment given. With no run in progress it shows the pair's last deployment and exits.
The exit code is the run's: 0 completed or deleted, 1 failed, 2 refused; 3 when the pair has
no deployment, 4 when --timeout is reached or the run died (README: After a crash).
JSON: the run's result, as create prints it (rc is null).
""")
@click.argument("user")
@click.argument("service_name")
@click.option("--deployment-id", metavar="ID", help="The deployment (run) to follow, from its first report.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Give up after this many seconds (exit 4). Default: wait for the final report.")
@data_dir_option
@output_options
@click.pass_context
def watch(ctx, user, service_name, deployment_id, timeout, data_dir, as_json, query):
    """Follow the run on USER's SERVICE_NAME: its reports as they are written, until the final one."""
    entry = api.get_deployment(user, service_name, data_dir)
    running = store.running_run(entry)
    operation = running["operation"] if running and deployment_id in (None, running["deployment_id"]) else None
    if deployment_id is None:
        if entry is None:
            raise not_found(user, service_name, data_dir)
        deployment_id = running["deployment_id"] if running else entry.get("deployment_id")
    elif operation is None and not api.reports(user, service_name, data_dir, deployment_id):
        raise not_found(user, service_name, data_dir, "deployment %s" % request_rules.echo(deployment_id))
    dead = store.dead_run(entry) if running and running["deployment_id"] == deployment_id else None
    quiet = as_json or query is not None
    bodies = []
    first = elapsed = None
    title = "watch %s/%s, deployment %s" % (printable(user), printable(service_name), printable(deployment_id))
    with contextlib.nullcontext() if quiet else Progress(title) as progress:
        for item in api.follow(user, service_name, data_dir, deployment_id=deployment_id,
                               timeout=0 if dead else timeout):
            bodies.append(item["report"])
            when = _report_time(item)
            first = first or when
            # seconds since the deployment's first report, from the report files' names (microseconds)
            elapsed = (when - first).total_seconds() if when and first else None
            if not quiet:
                progress.report(item["report"], elapsed)
    result = watched_result(user, service_name, deployment_id, bodies, operation)
    if result.status not in api.TERMINAL_STATUSES:
        result.error = ("the run died (%s) before its final report; run the same create, or the delete, again to"
                        " take it over (README: After a crash)" % dead["why"] if dead
                        else "no final report within %s s" % timeout)
    if not quiet:
        progress.outcome(result, elapsed)
    if quiet:
        emit(result.to_dict(), True, query)
    if result.status not in api.TERMINAL_STATUSES:
        raise Failure(result.error, EXIT_ERROR)
    ctx.exit(run_exit_code(result))


@cli.command(epilog="""\b
Examples:
  ES_SERVERLESS_API_TOKEN=$(cat /run/secrets/es-api-token) \\
      es-serverless serve --port 8080 --data-dir /var/lib/es-serverless
  es-serverless serve --port 8080 --host 0.0.0.0 --kubeconfig ~/.kube/prod --context prod

The HTTP API of the original manager (GET /health, POST /clusters, GET /deployments) and more,
with bearer-token authentication: the token is ES_SERVERLESS_API_TOKEN (refused without it,
exit 2).
""")
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="TCP port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@cluster_options
@data_dir_option
def serve(port, host, kubeconfig, context, data_dir):
    """Serve the HTTP API (es_serverless.server) until interrupted."""
    from es_serverless import server  # FastAPI and uvicorn load only for this command

    server.serve(port=port, data_dir=data_dir, host=host, kubeconfig=kubeconfig, context=context)


def main(args=None):
    """The ``es-serverless`` console script (``pyproject.toml``) and ``python -m es_serverless``."""
    return cli.main(args=args)
