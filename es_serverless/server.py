"""The HTTP API: the original manager's endpoints (``GET /health``, ``POST /clusters``, ``GET /deployments``)
and the rest of the Python API (delete, a deployment, its reports, a stream of them), with FastAPI on uvicorn.

Each create, update or delete runs through the Python API (``es_serverless.api``) in a thread of this server;
runs of different tenants go at once (up to ``max_runs``), two runs of one tenant never: while one runs here,
another request for the pair is answered 409. Every endpoint but ``/health`` needs ``Authorization: Bearer
<token>``. Names from a path or a query are checked by the collection's name rule before any use, and a body
by the collection's request rules (``api.to_request``), so a refusal carries the message ``ansible-playbook``
gives for the same input. README: "The HTTP API".
"""

import asyncio
import concurrent.futures
import logging
import os
import secrets
import threading
import urllib.parse
from contextlib import asynccontextmanager
from typing import Annotated, Any, Optional, Union

import uvicorn
import yaml
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from es_serverless import api
from es_serverless._collection import COLLECTIONS_PATH, PACKAGE

TOKEN_ENV = "ES_SERVERLESS_API_TOKEN"
# How long a create or delete request waits for its run's first report before it answers without one.
FIRST_REPORT_TIMEOUT = 60.0
# How often an event stream reads the pair's report index.
POLL_INTERVAL = 0.2
# What a 503 (every run slot taken) tells the client to wait, in seconds.
RETRY_AFTER = 5
UNAUTHORIZED = "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the server's %s" % TOKEN_ENV

log = logging.getLogger(__name__)
rules = api.request_rules

# ----------------------------------------------------------------- the request body


def _field(name, kind, meaning, example):
    """A documented optional field of the body; the collection's default is in its description."""
    default = rules.REQUEST_FIELDS.get(name, rules.REQUIRED)
    text = meaning + ("" if default is rules.REQUIRED else " Default: %r." % (default,))
    return Annotated[Optional[kind], Field(None, description=text, examples=[example])]


_NAME = Union[StrictStr, StrictInt]
_INT = Union[StrictInt, StrictStr]
_QUANTITY = Union[StrictStr, StrictInt, StrictFloat]


class ClusterRequest(BaseModel):
    """The body of ``POST /clusters``: the original manager's fields (``tenant_org_id``, ``user``,
    ``service_name``, ``replicas``, ``cpu``, ``memory``, ``storage``) or the collection's own request fields
    (README: Variables), validated by the collection's rules (``es_serverless.api.to_request``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "required": ["user", "service_name"],
        "examples": [{"tenant_org_id": "test-org", "user": "test_user", "service_name": "test_service",
                      "replicas": 1, "cpu": "500m/2", "memory": "1Gi/2Gi", "storage": "10Gi"}]})

    tenant_org_id: _field("tenant_org_id", _NAME, "Organisation of the tenant (original).", "test-org")
    user: _field("user", _NAME, "Tenant user id (required): 1-63 letters, digits, '.', '_' or '-'.", "test_user")
    service_name: _field("service_name", _NAME, "The tenant's service, one Elasticsearch cluster (required);"
                         " the same rule as user.", "test_service")
    namespace: _field("namespace", StrictStr, "Kubernetes namespace (a DNS-1123 label). Default:"
                      " es-<user>-<service_name> in lower case with '_' and '.' as '-'.", "es-test")
    replicas: _field("replicas", _INT, "Elasticsearch nodes, 1-100.", 1)
    cpu: _field("cpu", _QUANTITY, "Original: CPU per Elasticsearch container, '<request>/<limit>' or one quantity"
                " for both; sets cpu_request and cpu_limit.", "500m/2")
    memory: _field("memory", _QUANTITY, "Original: memory per Elasticsearch container, '<request>/<limit>' or one"
                   " quantity for both; sets mem_request and mem_limit.", "1Gi/2Gi")
    storage: _field("storage", _QUANTITY, "Original: the volume size per Elasticsearch node; sets disk_size.",
                    "10Gi")
    cpu_request: _field("cpu_request", _QUANTITY, "CPU request per Elasticsearch container.", "500m")
    cpu_limit: _field("cpu_limit", _QUANTITY, "CPU limit per Elasticsearch container.", "2")
    mem_request: _field("mem_request", _QUANTITY, "Memory request per Elasticsearch container.", "1Gi")
    mem_limit: _field("mem_limit", _QUANTITY, "Memory limit per Elasticsearch container.", "2Gi")
    disk_size: _field("disk_size", _QUANTITY, "Volume size per Elasticsearch node; it can only grow.", "10Gi")
    gpu_count: _field("gpu_count", _INT, "nvidia.com/gpu limit per Elasticsearch container, 0-1024.", 0)
    dimension: _field("dimension", _INT, "Vector dimension of the tenant's data, 1-4096.", 128)
    vector_count: _field("vector_count", _INT, "Expected number of vectors.", 10000)
    index_limit: _field("index_limit", _INT, "Max indices (annotation es.yunpeng.cn/max-indices).", 100)


class Links(BaseModel):
    deployment: str = Field(description="GET: the pair's deployment status entry")
    reports: str = Field(description="GET: the reports of this deployment")
    events: str = Field(description="GET: the reports of this deployment as Server-Sent Events")


class RunAccepted(BaseModel):
    """A run that started (202), or one refused before it changed anything (409, ``refused`` true)."""

    operation: str = Field(description="create, update (a create of a created cluster) or delete")
    user: str
    service_name: str
    deployment_id: Optional[str] = Field(description="The run's deployment id; null only when the run wrote no"
                                                     " report within %d s" % FIRST_REPORT_TIMEOUT)
    refused: bool = Field(False, description="True when the playbook refused the run at stage 0")
    detail: Optional[str] = Field(None, description="Why it was refused, or why there is no report yet")
    report: Optional[dict] = Field(None, description="The run's first report")
    links: Links


class Running(BaseModel):
    """409: a run of the pair is going in this server."""

    detail: str
    operation: str
    user: str
    service_name: str
    deployment_id: Optional[str]
    links: Links


def _links(user, service_name, deployment_id):
    base = "/deployments/%s/%s" % (urllib.parse.quote(user, safe=""), urllib.parse.quote(service_name, safe=""))
    query = "?" + urllib.parse.urlencode({"deployment_id": deployment_id}) if deployment_id else ""
    return {"deployment": base, "reports": base + "/reports" + query, "events": base + "/events" + query}


# ----------------------------------------------------------------- refusals of input


def _invalid(location, field, message, value):
    """A 422 answer in FastAPI's own shape: ``detail`` is a list of ``{type, loc, msg, input}``."""
    return JSONResponse(status_code=422, content={"detail": [
        {"type": "request_rule", "loc": [location, field], "msg": message, "input": jsonable_encoder(value)}]})


def _body_field(body, field):
    """The body field to blame for ``field``: itself, or the manager's field that set it (``cpu`` for
    ``cpu_request``)."""
    if field in body:
        return field
    for key, targets in api.MANAGER_FIELDS.items():
        if field in targets and body.get(key) is not None:
            return key
    return field


def _refused_body(body, exc):
    field = _body_field(body, exc.field or "request")
    return _invalid("body", field, str(exc), body.get(field))


class Invalid(Exception):
    """A path or query value broke a rule (answered 422 naming it)."""

    def __init__(self, location, field, message, value):
        super().__init__(message)
        self.location, self.field, self.value = location, field, value


def _check_name(location, field, value):
    try:
        return rules.check_name(field, value)
    except api.RequestError as exc:
        raise Invalid(location, field, str(exc), value)


def _check_deployment_id(value):
    if value is None:
        return None
    try:
        return api.store.check_deployment_id(value)
    except api.StoreError as exc:
        raise Invalid("query", "deployment_id", str(exc), value)


UserPath = Annotated[str, Path(description="Tenant user id (the collection's name rule)")]
ServicePath = Annotated[str, Path(description="The tenant's service (the collection's name rule)")]
DeploymentQuery = Annotated[Optional[str], Query(description="One deployment's id")]


def pair(user: UserPath, service_name: ServicePath):
    """The ``{user}/{service_name}`` of a path, checked by the collection's name rule."""
    return _check_name("path", "user", user), _check_name("path", "service_name", service_name)


Pair = Annotated[tuple, Depends(pair)]


# ----------------------------------------------------------------- runs


class Run:
    """A create, update or delete going in a thread of this server."""

    def __init__(self, loop, operation, user, service_name):
        self.operation = operation
        self.user = user
        self.service_name = service_name
        self.deployment_id = None
        self.result = None
        self._loop = loop
        self.first = loop.create_future()  # the first report; None when the run ended without one

    def on_report(self, report):
        """The run's ``on_report`` (called in the run's thread): the first report names the deployment and,
        for a create of a created cluster, says it is an update (``details.operation``)."""
        if self.deployment_id is None:
            self.deployment_id = report.get("deployment_id")
            if (report.get("details") or {}).get("operation") == "update":
                self.operation = "update"
            self._settle(report)

    def _settle(self, value):
        def settle():
            if not self.first.done():
                self.first.set_result(value)
        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def finish(self, result):
        self.result = result
        self._settle(None)


class Busy(Exception):
    def __init__(self, run):
        super().__init__("%s/%s" % (run.user, run.service_name))
        self.run = run


class Full(Exception):
    pass


class Runs:
    """The runs of this server: one at a time per pair, ``max_runs`` at once, each in a thread."""

    def __init__(self, max_runs):
        if not isinstance(max_runs, int) or isinstance(max_runs, bool) or max_runs < 1:
            raise api.ApiError("max_runs: must be an integer of at least 1 (got %r)" % (max_runs,), field="max_runs")
        self.max_runs = max_runs
        self._lock = threading.Lock()
        self._running = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_runs, thread_name_prefix="es-run")

    def start(self, operation, user, service_name, call):
        """Start ``call(on_report)`` for the pair; ``Busy`` when the pair has a run here, ``Full`` when
        ``max_runs`` runs are going."""
        run = Run(asyncio.get_running_loop(), operation, user, service_name)
        with self._lock:
            running = self._running.get((user, service_name))
            if running is not None:
                raise Busy(running)
            if len(self._running) >= self.max_runs:
                raise Full()
            self._running[(user, service_name)] = run
        try:
            self._pool.submit(self._go, run, call)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._release(run)
            raise Full()
        return run

    def _go(self, run, call):
        result = None
        try:
            result = call(run.on_report)
        except Exception as exc:  # an ApiError or a failure of ansible-runner itself: the run's answer
            log.exception("%s of %s/%s failed", run.operation, run.user, run.service_name)
            result = api.RunResult(run.operation, run.user, run.service_name, deployment_id=run.deployment_id,
                                   error="%s: %s" % (type(exc).__name__, exc))
        finally:
            self._release(run)
            run.finish(result)

    def _release(self, run):
        with self._lock:
            if self._running.get((run.user, run.service_name)) is run:
                del self._running[(run.user, run.service_name)]

    def shutdown(self):
        """Wait for the runs in progress (each ends on its own: the playbook's timeouts bound it)."""
        self._pool.shutdown(wait=True)


# ----------------------------------------------------------------- the application


def _check_token(token, name):
    """Refuse a token no client could send in ``Authorization: Bearer <token>`` (it is never echoed)."""
    if token is None or token == "":
        raise api.ApiError("%s: is %s; set it to the bearer token the clients will send"
                           % (name, "empty" if token == "" else "not set"), field=name)
    if not (isinstance(token, str) and token.isascii() and token.isprintable() and " " not in token):
        raise api.ApiError("%s: must be printable ASCII characters without spaces (the bearer token the clients"
                           " send)" % name, field=name)


def create_app(data_dir, token, kubeconfig=None, context=None, extra_vars=None, max_runs=8):
    """The FastAPI application of the data folder ``data_dir``; clients send ``Authorization: Bearer <token>``.

    ``kubeconfig``, ``context``, ``extra_vars``: passed to every run (``api.run_playbook``). ``max_runs``: how
    many runs may go at once (more are answered 503).
    """
    _check_token(token, "token")
    if not data_dir:
        raise api.ApiError("data_dir: is required (the data folder of the reports and the store)", field="data_dir")
    data_dir = os.path.abspath(data_dir)
    options = {"kubeconfig": kubeconfig, "context": context, "extra_vars": extra_vars}
    runs = Runs(max_runs)
    closing = threading.Event()
    expected = token.encode("utf-8")
    bearer = HTTPBearer(auto_error=False, description="The token of the server's %s" % TOKEN_ENV)

    def authorized(credentials):
        return (credentials is not None and credentials.scheme.lower() == "bearer"
                and secrets.compare_digest(credentials.credentials.encode("utf-8"), expected))

    def require_token(credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(bearer)]):
        if not authorized(credentials):
            raise HTTPException(status_code=401, headers={"WWW-Authenticate": "Bearer"}, detail=UNAUTHORIZED)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        closing.set()
        await run_in_threadpool(runs.shutdown)

    app = FastAPI(title="es-serverless", version=_version(), lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  description="Create, update, delete and follow per-tenant Elasticsearch clusters"
                              " (the yunpeng.es_serverless collection). Every endpoint but /health needs"
                              " 'Authorization: Bearer <token>'.")
    app.state.closing = closing
    app.state.runs = runs

    @app.exception_handler(Invalid)
    async def invalid(_request, exc):
        return _invalid(exc.location, exc.field, str(exc), exc.value)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        # Authentication first: an anonymous client learns nothing from a refused body.
        if not authorized(await bearer(request)):
            return JSONResponse(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                                content={"detail": UNAUTHORIZED})
        route = request.scope.get("route")
        if getattr(route, "name", None) == "create_cluster" and isinstance(exc.body, dict):
            # The collection's rules decide: its message for the field when it refuses the body too.
            try:
                api.to_request(exc.body)
            except api.ApiError as refused:
                return _refused_body(exc.body, refused)
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(exc.errors())})

    @app.exception_handler(api.StoreError)
    async def store_error(_request, exc):
        return JSONResponse(status_code=500, content={"detail": "data folder: %s" % exc})

    @app.get("/health", response_class=PlainTextResponse, tags=["original"],
             summary="ok when the server answers (no token needed)")
    def health():
        return "ok"

    router = APIRouter(dependencies=[Depends(require_token)],
                       responses={401: {"description": "Missing or wrong bearer token"},
                                  422: {"description": "A field, a path or a query value broke the collection's"
                                                       " rules (loc names it, msg is the collection's message)"}})

    @router.get("/openapi.json", include_in_schema=False)
    def openapi():
        return app.openapi()

    async def launch(operation, user, service_name, call):
        """Start a run and answer with its first report: 202, or 409 when it is refused or the pair is busy."""
        try:
            run = runs.start(operation, user, service_name, call)
        except Busy as busy:
            return await _busy(busy.run)
        except Full:
            return JSONResponse(status_code=503, headers={"Retry-After": str(RETRY_AFTER)},
                                content={"detail": "%d runs are going in this server (max_runs); try again later"
                                                   % runs.max_runs})
        try:
            report = await asyncio.wait_for(asyncio.shield(run.first), FIRST_REPORT_TIMEOUT)
        except asyncio.TimeoutError:
            return _accepted(run, None, 202, detail="the run has written no report within %d s; follow the"
                                                    " pair's events" % FIRST_REPORT_TIMEOUT)
        if report is None:  # the run ended without any report
            result = run.result
            if operation == "delete" and await run_in_threadpool(api.get_deployment, user, service_name, data_dir) \
                    is None:
                raise HTTPException(status_code=404, detail=result.error)
            return JSONResponse(status_code=500, content={"detail": result.error, "result": result.to_dict()})
        if report.get("status") == "failed" and (report.get("details") or {}).get("stage") in api.REFUSAL_STAGES:
            return _accepted(run, report, 409, refused=True, detail=report.get("message"))
        return _accepted(run, report, 202)

    async def _busy(run):
        # The run that holds the pair may not have written its first report yet: its id comes with it.
        try:
            await asyncio.wait_for(asyncio.shield(run.first), FIRST_REPORT_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        detail = ("a %s of %s/%s is running in this server (deployment %s); wait for it to finish"
                  % (run.operation, run.user, run.service_name, run.deployment_id or "not reported yet"))
        body = Running(detail=detail, operation=run.operation, user=run.user, service_name=run.service_name,
                       deployment_id=run.deployment_id, links=_links(run.user, run.service_name, run.deployment_id))
        return JSONResponse(status_code=409, content=body.model_dump())

    def _accepted(run, report, status, refused=False, detail=None):
        links = _links(run.user, run.service_name, run.deployment_id)
        body = RunAccepted(operation=run.operation, user=run.user, service_name=run.service_name,
                           deployment_id=run.deployment_id, refused=refused, detail=detail, report=report,
                           links=links)
        headers = {"Location": links["reports"]} if status == 202 else None
        return JSONResponse(status_code=status, content=jsonable_encoder(body), headers=headers)

    run_responses = {
        202: {"model": RunAccepted, "description": "The run started; its first report and where to follow it"},
        404: {"description": "DELETE: the pair has no deployment"},
        409: {"model": Union[Running, RunAccepted],
              "description": "A run of the pair is going in this server (Running, naming its deployment), or"
                             " the playbook refused the run at stage 0 (RunAccepted with refused true and its"
                             " failed report: quota, a run of another process, a name or namespace taken, an"
                             " update that cannot be done in place)"},
        500: {"description": "The run ended without any report (its error)"},
        503: {"description": "max_runs runs are going; Retry-After says when to try again"},
    }

    @router.post("/clusters", status_code=202, tags=["original"], responses=run_responses, name="create_cluster",
                 summary="Create a tenant cluster (or update a created one) in the background")
    async def create_cluster(body: ClusterRequest) -> RunAccepted:
        raw = body.model_dump(exclude_unset=True)
        try:
            req = api.to_request(raw)
        except api.ApiError as exc:
            return _refused_body(raw, exc)
        return await launch("create", req["user"], req["service_name"],
                            lambda on_report: api.create_cluster(raw, data_dir, on_report=on_report, **options))

    @router.delete("/clusters/{user}/{service_name}", status_code=202, responses=run_responses,
                   summary="Delete the pair's cluster in the background")
    async def delete_cluster(names: Pair) -> RunAccepted:
        user, service_name = names
        if await run_in_threadpool(api.get_deployment, user, service_name, data_dir) is None:
            raise HTTPException(status_code=404, detail="no deployment of %s/%s" % (user, service_name))
        return await launch("delete", user, service_name,
                            lambda on_report: api.delete_cluster(user, service_name, data_dir, on_report=on_report,
                                                                 **options))

    @router.get("/deployments", tags=["original"], summary="Deployment status entries (the original query)")
    def list_deployments(user: Annotated[Optional[str], Query(description="Only this user's")] = None,
                         service_name: Annotated[Optional[str], Query(description="Only this service's")] = None
                         ) -> list[dict[str, Any]]:
        if user is not None:
            _check_name("query", "user", user)
        if service_name is not None:
            _check_name("query", "service_name", service_name)
        return api.list_deployments(data_dir, user, service_name)

    @router.get("/deployments/{user}/{service_name}", responses={404: {"description": "No deployment"}},
                summary="The pair's deployment status entry with its latest report")
    def get_deployment(names: Pair) -> dict[str, Any]:
        found = api.get_deployment(names[0], names[1], data_dir)
        if found is None:
            raise HTTPException(status_code=404, detail="no deployment of %s/%s" % names)
        return found

    @router.get("/deployments/{user}/{service_name}/reports", responses={404: {"description": "No report"}},
                summary="The pair's reports in write order (of one deployment when given)")
    def get_reports(names: Pair, deployment_id: DeploymentQuery = None) -> list[dict[str, Any]]:
        found = api.reports(names[0], names[1], data_dir, _check_deployment_id(deployment_id))
        if not found:
            raise HTTPException(status_code=404, detail="no report of %s/%s%s" % (
                names[0], names[1], " deployment %s" % deployment_id if deployment_id else ""))
        return found

    def stream_start(names: Pair, deployment_id: DeploymentQuery = None,
                     last_event_id: Annotated[Optional[str], Header(
                         description="Resume after this event id (what a browser's EventSource sends)")] = None):
        """Where the stream starts: after ``Last-Event-ID``, at the deployment's first report, or now."""
        deployment_id = _check_deployment_id(deployment_id)
        if last_event_id is not None:
            if not last_event_id.isdigit() or len(last_event_id) > 18:
                raise Invalid("header", "last-event-id", "last-event-id: must be the id of an event of this"
                              " stream, a report's index (got %s)" % rules.echo(last_event_id), last_event_id)
            return names, deployment_id, int(last_event_id) + 1
        if deployment_id is not None:
            if not api.reports(names[0], names[1], data_dir, deployment_id):
                raise HTTPException(status_code=404, detail="no report of %s/%s deployment %s"
                                    % (names[0], names[1], deployment_id))
            return names, deployment_id, 0
        return names, None, api.new_reports(names[0], names[1], data_dir)[1]

    @router.get("/deployments/{user}/{service_name}/events", response_class=EventSourceResponse,
                responses={404: {"description": "No report of that deployment"}},
                summary="Server-Sent Events: each report as it is written (event 'report', id its index)")
    async def events(start: Annotated[tuple, Depends(stream_start)]):
        """Each report of the deployment (or, without ``deployment_id``, of the next deployment that writes one)
        as it is written; the stream ends after that deployment's final report (completed, deleted, failed)."""
        (user, service_name), deployment_id, seen = start
        while not closing.is_set():
            found, seen = await run_in_threadpool(api.new_reports, user, service_name, data_dir, seen)
            for item in found:
                body = item["report"]
                deployment_id = deployment_id or body.get("deployment_id")
                if body.get("deployment_id") != deployment_id:
                    continue
                yield ServerSentEvent(event="report", id=str(item["index"]), data=body)
                if body.get("status") in api.TERMINAL_STATUSES:
                    return
            await asyncio.sleep(POLL_INTERVAL)

    app.include_router(router)
    return app


def _version():
    """The collection's version (``galaxy.yml``, as the package's own)."""
    path = os.path.join(COLLECTIONS_PATH, *PACKAGE.split("."), "galaxy.yml")
    with open(path, encoding="utf-8") as handle:
        return str(yaml.safe_load(handle)["version"])


class ApiServer(uvicorn.Server):
    """uvicorn's server that also ends the open event streams when it is told to stop (a stream waits for
    reports that may never come; uvicorn waits for open connections before it stops)."""

    def __init__(self, app, **config):
        super().__init__(uvicorn.Config(app, **config))
        self.app = app

    def request_exit(self):
        self.app.state.closing.set()
        self.should_exit = True

    def handle_exit(self, sig, frame):
        self.app.state.closing.set()
        super().handle_exit(sig, frame)


def serve(port, data_dir, host="127.0.0.1", kubeconfig=None, context=None):
    """Serve the HTTP API of ``data_dir`` on ``host:port`` until interrupted; the token is the environment
    variable ``ES_SERVERLESS_API_TOKEN`` (``api.ApiError`` when it is unset or empty)."""
    token = os.environ.get(TOKEN_ENV)
    _check_token(token, TOKEN_ENV)
    app = create_app(data_dir, token, kubeconfig=kubeconfig, context=context)
    ApiServer(app, host=host, port=port).run()
