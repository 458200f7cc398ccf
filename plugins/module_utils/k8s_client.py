# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes API client set-up shared by the collection's modules.

The options and their environment fallbacks follow kubernetes.core: an option
given to the module wins, then ``K8S_AUTH_<OPTION>`` (or the kubernetes-client
name, e.g. ``K8S_AUTH_VERIFY_SSL``), then - when neither ``host`` with
credentials nor ``kubeconfig``/``context`` is given - the in-cluster service
account, then ``KUBECONFIG`` / ``~/.kube/config``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import json
import os
import time
from urllib.parse import urlencode, urlsplit

try:
    # ApiException is re-exported for the modules
    import kubernetes
    import urllib3
    from kubernetes.client.rest import ApiException  # pylint: disable=unused-import

    # The client imports these lazily, on first use. Touch them here, at import: the
    # collection's action plugins are loaded once by the controller before it forks a
    # worker per task, so every worker then shares them instead of importing them again.
    _EAGER = (kubernetes.client.ApiClient, kubernetes.client.CoreV1Api, kubernetes.client.AppsV1Api,
              kubernetes.client.StorageV1Api, kubernetes.config.load_kube_config, kubernetes.watch.Watch)
    from urllib3.util.retry import Retry as _Retry

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - reported by the modules
    kubernetes = None
    ApiException = Exception
    _Retry = object
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = _exc


# Argument-spec fragment for the collection's modules (documented by the
# yunpeng.es_serverless.k8s_auth doc fragment).
K8S_AUTH_ARGS = dict(
    kubeconfig=dict(type="raw", no_log=True),
    context=dict(type="str"),
    host=dict(type="str"),
    api_key=dict(type="str", no_log=True),
    validate_certs=dict(type="bool", aliases=["verify_ssl"]),
    ca_cert=dict(type="path", aliases=["ssl_ca_cert"]),
    client_cert=dict(type="path", aliases=["cert_file"]),
    client_key=dict(type="path", aliases=["key_file"]),
)

# option name -> kubernetes.client.Configuration attribute
_AUTH_MAP = dict(
    kubeconfig="kubeconfig",
    context="context",
    host="host",
    api_key="api_key",
    validate_certs="verify_ssl",
    ca_cert="ssl_ca_cert",
    client_cert="cert_file",
    client_key="key_file",
)

_BOOL_OPTIONS = ("validate_certs",)


class K8sClientError(Exception):
    """The API client could not be configured; the message carries no secret."""


# Transient answers retried as client-go retries them: 429 (the API server's priority and fairness
# rejects a request before it is processed, with Retry-After) and the 5xx a busy or restarting API
# server or a load balancer in front of it gives.
RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
# Every method the collection sends is safe to repeat: GET/LIST/WATCH, server-side apply and merge
# PATCH (the same body sets the same fields), DELETE (a 404 on the repeat means gone), and POST,
# which only creates: a repeat answers 409 when an earlier attempt created the object, and
# apply.apply_objects reads the object then (``ApiException.retried`` says an attempt was ambiguous).
RETRY_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE", "POST"))
RETRY_ATTEMPTS = 5  # retries after the first attempt
RETRY_BACKOFF = 0.25  # seconds: 0, 0.5, 1, 2, 4 between attempts (Retry-After when the server says)
RETRY_BUDGET = 30.0  # seconds of retrying per request at most, waits included
RETRY_AFTER_MAX = 10  # seconds: a longer Retry-After is cut to this


class ApiRetry(_Retry):
    """urllib3's ``Retry`` for the Kubernetes client's connection pool, bounded in time.

    The pool retries every request by itself (connection errors, answers in ``RETRY_STATUSES``, with
    exponential backoff or the server's Retry-After) and returns the last answer when the retries
    are spent, so that the caller sees the API server's own error. On top of urllib3: at most
    ``budget`` seconds per request, and ``notify`` (e.g. a module's ``warn``) hears of each retry.
    """

    def __init__(self, *args, **kwargs):
        self.budget = kwargs.pop("budget", RETRY_BUDGET)
        self.started = kwargs.pop("started", None)
        self.notify = kwargs.pop("notify", None)
        super(ApiRetry, self).__init__(*args, **kwargs)

    def new(self, **kw):
        for key in ("budget", "started", "notify"):
            kw.setdefault(key, getattr(self, key))
        return super(ApiRetry, self).new(**kw)

    def _spent(self):
        return 0.0 if self.started is None else time.monotonic() - self.started

    def is_exhausted(self):
        return super(ApiRetry, self).is_exhausted() or self._spent() >= self.budget

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        retry = super(ApiRetry, self).increment(method, url, response, error, _pool, _stacktrace)
        if retry.started is None:
            retry.started = time.monotonic()
        if self.notify is not None:
            cause = ("answered %s %s" % (response.status, response.reason) if response is not None
                     else "failed (%s)" % type(error).__name__)
            self.notify("Kubernetes API %s %s %s; retrying (%d of at most %d)" % (
                method, urlsplit(url or "").path, cause, len(retry.history), RETRY_ATTEMPTS))
        return retry

    def sleep(self, response=None):
        wait = None
        if self.respect_retry_after_header and response is not None:
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time()
        wait = min(wait, max(self.budget - self._spent(), 0.0))
        if wait > 0:
            time.sleep(wait)


def api_retry(notify=None, budget=RETRY_BUDGET):
    """The retry policy of the collection's API clients (``ApiRetry``)."""
    return ApiRetry(total=RETRY_ATTEMPTS, allowed_methods=RETRY_METHODS, status_forcelist=RETRY_STATUSES,
                    backoff_factor=RETRY_BACKOFF, raise_on_status=False, retry_after_max=RETRY_AFTER_MAX,
                    budget=budget, notify=notify)


def ambiguous_retries(response):
    """Whether an earlier attempt of this answer's request may have reached the API server and done
    its work (a 5xx or a broken connection; a 429 or a refused connection did nothing)."""
    retries = getattr(getattr(response, "response", response), "retries", None)
    for attempt in getattr(retries, "history", None) or ():
        if attempt.status is not None and attempt.status >= 500:
            return True
        if attempt.error is not None and not isinstance(attempt.error, urllib3.exceptions.ConnectTimeoutError):
            return True
    return False


def auth_from_params(params, environ=None):
    """Resolve the auth options: module parameter, else ``K8S_AUTH_*`` variable.

    Returns a dict keyed by option name holding only the options that are set.
    """
    environ = os.environ if environ is None else environ
    auth = {}
    for option, attr in _AUTH_MAP.items():
        value = params.get(option) if params else None
        if value is None:
            value = environ.get("K8S_AUTH_" + option.upper())
            if value is None:
                value = environ.get("K8S_AUTH_" + attr.upper())
            if value is not None and option in _BOOL_OPTIONS:
                value = value.lower() not in ("0", "false", "no", "off")
            if value is not None and option == "kubeconfig" and value.lstrip().startswith("{"):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
        if value is not None and value != "":
            auth[option] = value
    return auth


def _load_kubeconfig(auth, configuration):
    kubeconfig = auth.get("kubeconfig")
    context = auth.get("context")
    if isinstance(kubeconfig, dict):
        kubernetes.config.load_kube_config_from_dict(
            config_dict=kubeconfig, context=context, client_configuration=configuration, persist_config=False
        )
    else:
        # None -> KUBECONFIG or ~/.kube/config; a string may hold several paths joined by ':'.
        kubernetes.config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration, persist_config=False
        )


def _source(auth, environ):
    kubeconfig = auth.get("kubeconfig")
    if isinstance(kubeconfig, dict):
        return "kubeconfig given as a dictionary"
    if kubeconfig:
        return "kubeconfig %s" % kubeconfig
    environ = os.environ if environ is None else environ
    return "no in-cluster service account; kubeconfig %s" % (environ.get("KUBECONFIG") or "~/.kube/config")


def configuration_from_params(params, environ=None):
    """Build a ``kubernetes.client.Configuration`` from module parameters."""
    if not HAS_KUBERNETES:
        raise K8sClientError("the Python 'kubernetes' library is required: %s" % KUBERNETES_IMPORT_ERROR)
    auth = auth_from_params(params, environ)
    if auth.get("host"):
        auth["host"] = auth["host"].rstrip("/")
    configuration = kubernetes.client.Configuration()
    has_direct_creds = auth.get("host") and (
        auth.get("api_key") or (auth.get("client_cert") and auth.get("client_key"))
    )
    try:
        if has_direct_creds:
            pass
        elif auth.get("kubeconfig") or auth.get("context"):
            _load_kubeconfig(auth, configuration)
        else:
            try:
                kubernetes.config.load_incluster_config(client_configuration=configuration)
            except kubernetes.config.ConfigException:
                _load_kubeconfig(auth, configuration)
    except kubernetes.config.ConfigException as exc:
        raise K8sClientError("could not load the Kubernetes configuration (%s): %s" % (_source(auth, environ), exc))
    except OSError as exc:
        raise K8sClientError("could not read the Kubernetes configuration (%s): %s" % (_source(auth, environ), exc))
    except Exception as exc:  # malformed kubeconfig: yaml errors, missing keys
        raise K8sClientError("invalid Kubernetes configuration (%s): %s: %s" % (
            _source(auth, environ), type(exc).__name__, exc))

    for option in ("host", "validate_certs", "ca_cert", "client_cert", "client_key"):
        if option in auth:
            setattr(configuration, _AUTH_MAP[option], auth[option])
    if auth.get("api_key"):
        token = "Bearer %s" % auth["api_key"]
        # 'BearerToken' for current kubernetes clients, 'authorization' for older ones
        configuration.api_key = {"BearerToken": token, "authorization": token}
    return configuration


def client_from_params(params, environ=None, notify=None, retry_budget=RETRY_BUDGET):
    """Return a ``kubernetes.client.ApiClient`` configured from module parameters.

    Every request it sends is retried on transient failures (``api_retry``): ``notify`` hears of
    each retry, ``retry_budget`` bounds the seconds spent retrying one request.
    Raises ``K8sClientError`` with a message free of credentials when no usable
    configuration is found.
    """
    configuration = configuration_from_params(params, environ)
    configuration.retries = api_retry(notify, retry_budget)
    configuration.client_go_retries = False  # the pool's retries above cover reads too
    return kubernetes.client.ApiClient(configuration)


def api_error_message(exc, what=None):
    """A short, token-free description of an ``ApiException``: status, reason and the API server's
    message, after ``what`` (the object, e.g. ``StatefulSet es-test/elasticsearch``) when given.

    Never for a Secret: the API server may echo the request body in its message (``status_message``).
    """
    what = what or getattr(exc, "what", None)
    prefix = "%s: " % what if what else ""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    body = getattr(exc, "body", None)
    message = None
    if body:
        try:
            data = json.loads(body)
            message = data.get("message")
        except (ValueError, TypeError, AttributeError):
            message = None
    if message:
        return "%s%s %s: %s" % (prefix, status, reason, message)
    return "%s%s %s" % (prefix, status, reason)


def status_message(exc, what=None):
    """``api_error_message`` without the API server's message: for Secrets, whose body it may echo."""
    what = what or getattr(exc, "what", None)
    return "%s%s %s" % ("%s: " % what if what else "", getattr(exc, "status", None), getattr(exc, "reason", None))


def call_json(func, *args, **kwargs):
    """Call a generated API method and return the JSON body as plain dicts (camelCase keys).

    ``_what`` names the object or list for messages: an ``ApiException`` carries it as ``what``,
    which ``api_error_message`` puts first.
    """
    what = kwargs.pop("_what", None)
    kwargs["_preload_content"] = False
    try:
        response = func(*args, **kwargs)
    except ApiException as exc:
        exc.what = what
        raise
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def request_json(api_client, method, path, query=None, body=None, content_type="application/json", timeout=None):
    """Send one request to the API server and return ``(status, body as plain dicts)``.

    For the calls the generated API classes do not cover alike in every client
    version (server-side apply of any kind). Goes through the client's own
    connection pool and authentication; a non-2xx answer raises ``ApiException``.
    """
    configuration = api_client.configuration
    headers = {"Accept": "application/json", "User-Agent": api_client.user_agent}
    if body is not None:
        headers["Content-Type"] = content_type
        if "json" not in content_type:
            body = json.dumps(body)  # the client encodes only JSON content types itself
    for setting in configuration.auth_settings().values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[setting["key"]] = setting["value"]
    url = configuration.host + path
    if query:
        url += "?" + urlencode(query)
    # Clients before v35 raise ApiException for a non-2xx answer here; later ones return it.
    try:
        response = api_client.rest_client.request(method, url, headers=headers, body=body,
                                                  _request_timeout=timeout)
    except urllib3.exceptions.HTTPError as exc:
        raise K8sClientError("cannot reach the Kubernetes API server at %s: %s" % (configuration.host, exc))
    data = getattr(response, "data", None)
    if data is None:
        response.read()
        data = response.data
    if not 200 <= response.status <= 299:
        exc = ApiException(status=response.status, reason=response.reason)
        exc.body = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        exc.retried = ambiguous_retries(response)
        raise exc
    return response.status, json.loads(data) if data else {}
