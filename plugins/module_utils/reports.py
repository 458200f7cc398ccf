# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stage reports: statuses and messages, body, file name, log line, reading bodies and the log.

The single home of the report contract (see docs of the spec "The ten reports"):

* body ``{"status", "message", "timestamp", "user", "service_name", "namespace", "deployment_id", "details"?}``
* file ``<data_dir>/deployment_reports/{user}_{service_name}_{YYYYMMDDTHHMMSS.ffffff}Z.json``;
  names sort in report order and never overwrite each other (``next_filename``)
* log line ``{timestamp} - User: {user}, Service: {service}, Namespace: {ns}, Status: {status}, Message: {msg}``,
  every field escaped so that it cannot forge another field (``escape_log_field``)

The metadata store (store.py) owns the data folder: ``MetadataStore.write_report`` writes a report
file, the pair's report index and the log line under the folder's lock, and ``store.query`` answers
"where is my cluster?".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import datetime
import hashlib
import json
import os
import re
import urllib.parse
from collections import OrderedDict

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import fileutil
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import request as reqmod

REPORTS_DIR = "deployment_reports"
LOG_NAME = "deployment.log"

MESSAGES = OrderedDict([
    ("starting", "Starting cluster creation"),
    ("namespace_created", "Namespace created successfully"),
    ("gitlab_pulled", "GitLab resources pulled successfully"),
    ("k8s_applied", "Kubernetes resources applied successfully"),
    ("resources_configured", "Cluster resources configured successfully"),
    ("disk_configured", "Disk size configured to {disk_size}"),
    ("gpu_configured", "GPU count configured to {gpu_count}"),
    ("rollout_completed", "Cluster rollout completed successfully"),
    ("tenant_synced", "Data synced to tenant container management"),
    ("completed", "Cluster creation completed successfully"),
    ("deleting", "Deleting cluster"),
    ("resources_deleted", "Kubernetes resources deleted"),
    ("deleted", "Cluster deleted successfully"),
    ("failed", "Cluster creation failed at stage {stage}: {error}"),
])
# The failed report's message of each flow (the create's is MESSAGES["failed"]).
FAILED_MESSAGES = OrderedDict([
    ("create", MESSAGES["failed"]),
    ("delete", "Cluster deletion failed at stage {stage}: {error}"),
])
STATUSES = tuple(MESSAGES)
FULL_DETAIL_STATUSES = ("starting", "completed")
DETAIL_FIELDS = ("user", "service_name", "namespace", "replicas", "cpu_request", "cpu_limit", "mem_request",
                 "mem_limit", "disk_size", "gpu_count", "dimension", "vector_count", "index_limit", "tenant_org_id")
REQUIRED_KEYS = ("status", "message", "timestamp", "user", "service_name", "namespace")

SECRET_KEY_RE = re.compile(r"pass(word|wd|phrase)?$|password|passwd|token|secret|private[_-]?key|api[_-]?key"
                           r"|credential|auth", re.IGNORECASE)
FILE_TS_FORMAT = "%Y%m%dT%H%M%S.%fZ"
FILE_TS_RE = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z\.json$")
FILE_TS_LEN = len("20240101T000000.000000Z.json")
SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_NAME_PART = 100
# The identity a refused request with an invalid user or service name is reported under: never a
# valid name (it starts with '_'), so no tenant can have it, and its reports are one pair's
# (``deployment_reports/_refused__refused_*.json``, ``deployments/_refused/_refused.reports``).
# The raw values are kept in the report's ``details.refused``, never in a path or a key.
REFUSED_NAME = "_refused"
REFUSED_IDENTITY = OrderedDict([("user", REFUSED_NAME), ("service_name", REFUSED_NAME), ("namespace", "")])


class ReportError(Exception):
    """A report could not be built or written."""


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def _utc(when):
    if when is None:
        return utc_now()
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


def timestamp(now=None):
    """``2024-01-01T00:00:00Z`` (UTC, second precision)."""
    return _utc(now).strftime("%Y-%m-%dT%H:%M:%SZ")


def failed_message(stage, error, flow="create"):
    return FAILED_MESSAGES[flow].format(stage=stage, error=error)


def filter_secrets(value):
    """Copy of ``value`` without mapping keys named like passwords, tokens, secrets (recursively)."""
    if isinstance(value, dict):
        out = OrderedDict()
        for key, item in value.items():
            if isinstance(key, str) and SECRET_KEY_RE.search(key):
                continue
            out[key] = filter_secrets(item)
        return out
    if isinstance(value, (list, tuple)):
        return [filter_secrets(item) for item in value]
    return value


def request_details(req):
    """The full request details carried by ``starting`` and ``completed`` reports."""
    missing = [field for field in DETAIL_FIELDS if field not in req]
    if missing:
        raise ReportError("the full request is needed for these details; missing %s" % ", ".join(missing))
    return OrderedDict((field, req[field]) for field in DETAIL_FIELDS)


def build(status, request_or_identity, deployment_id, message=None, details=None, now=None):
    """Build one report body.

    ``request_or_identity`` needs ``user``, ``service_name`` and ``namespace``; when the user or the
    service name is not valid (a refused request) only a ``failed`` report can be built, under
    ``REFUSED_IDENTITY`` with the raw values in ``details.refused``; the full request
    for ``starting``/``completed`` (their details) and the field named in a templated message
    (``disk_size`` for ``disk_configured``, ``gpu_count`` for ``gpu_configured``) unless
    ``message`` is given. ``failed`` needs ``message`` (use ``failed_message``).
    """
    if status not in MESSAGES:
        raise ReportError("unknown report status %s; known statuses are %s"
                          % (reqmod.echo(status), ", ".join(STATUSES)))
    source = request_or_identity if isinstance(request_or_identity, dict) else {}
    ident = reqmod.identity(source)
    refused = None
    if not (reqmod.is_valid_name(ident["user"]) and reqmod.is_valid_name(ident["service_name"])):
        if status != "failed":
            raise ReportError("report %s needs a valid user and service name (got user %s, service_name %s);"
                              " only a failed report can be of a refused request"
                              % (status, reqmod.echo(ident["user"]), reqmod.echo(ident["service_name"])))
        refused, ident = ident, REFUSED_IDENTITY
    if message is None:
        if status == "failed":
            raise ReportError("a failed report needs its message (stage and error)")
        template = MESSAGES[status]
        fields = re.findall(r"\{(\w+)\}", template)
        values = {}
        for field in fields:
            value = source.get(field)
            if value is None and isinstance(details, dict):
                value = details.get(field)
            if value is None:
                raise ReportError("report %s needs %s in the request to build its message" % (status, field))
            values[field] = value
        message = template.format(**values)
    body = OrderedDict()
    body["status"] = status
    body["message"] = str(message)
    body["timestamp"] = timestamp(now)
    body.update(ident)
    body["deployment_id"] = "" if deployment_id is None else str(deployment_id)
    if status in FULL_DETAIL_STATUSES:
        full = request_details(source)
        for key, value in (details or {}).items():
            if key not in full:
                full[key] = value
        body["details"] = filter_secrets(full)
    elif details or refused:
        body["details"] = filter_secrets(dict(details or {}, **({"refused": refused} if refused else {})))
    return body


def is_refused(user, service_name):
    """True for the identity of the reports of refused requests (``REFUSED_IDENTITY``)."""
    return user == REFUSED_NAME and service_name == REFUSED_NAME


LOG_FIELDS = ("timestamp", "user", "service_name", "namespace", "status", "message")
LOG_FORMAT = "%s - User: %s, Service: %s, Namespace: %s, Status: %s, Message: %s"
# Percent-encoded in every field of a log line: '%' (so the encoding reverses), ',' (the field
# separator) and control characters (C0, DEL, C1, U+2028/U+2029: a line stays one line); in the
# identity and status fields ':' too. No field then holds a ',' and no field before the message a
# ':', so a line splits into its six fields one way only, and ", Service: vsvc," or
# ", Status: completed," can only be a real field. Valid names, namespaces, statuses, timestamps and
# the stage messages contain none of these characters, so their lines are unchanged.
_LOG_ALWAYS = frozenset("%,")
_LOG_IDENTITY = _LOG_ALWAYS | frozenset(":")
_LOG_LINE_RE = re.compile(r"^(?P<timestamp>[^,]*) - User: (?P<user>[^,:]*), Service: (?P<service_name>[^,:]*),"
                          r" Namespace: (?P<namespace>[^,:]*), Status: (?P<status>[^,:]*), Message: (?P<message>.*)$")


def _is_control(char):
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029)


def escape_log_field(value, identity=True):
    """``value`` as a log line field: ``%``, ``,``, control characters and (``identity``) ``:``
    percent-encoded (UTF-8, ``%2C``), everything else as it is; ``unquote`` reverses it."""
    text = "" if value is None else str(value)
    special = _LOG_IDENTITY if identity else _LOG_ALWAYS
    return "".join("".join("%%%02X" % byte for byte in char.encode("utf-8"))
                   if char in special or _is_control(char) else char for char in text)


def log_line(report):
    """The one-line log form of a report; every field escaped by ``escape_log_field``."""
    return LOG_FORMAT % tuple(escape_log_field(report.get(key), key not in ("timestamp", "message"))
                              for key in LOG_FIELDS)


def parse_log_line(text):
    """The fields of a log line (``LOG_FIELDS``, unescaped), or None when ``text`` is not one."""
    match = _LOG_LINE_RE.match(text)
    if match is None:
        return None
    return OrderedDict((key, urllib.parse.unquote(match.group(key))) for key in LOG_FIELDS)


def encode_part(value):
    """One name part of report file names and data-folder paths; never contains ``/``.

    Characters outside ``[A-Za-z0-9._-]`` are percent-encoded (UTF-8), a leading ``.`` too, and a
    part longer than 100 characters is cut and ends with ``~`` and a hash of the value. A valid
    user or service name (``request.check_name``) encodes to itself.
    """
    value = "" if value is None else str(value)
    encoded = "".join(char if char in SAFE_CHARS else "".join("%%%02X" % byte for byte in char.encode("utf-8"))
                      for char in value)
    if encoded.startswith("."):
        # Only invalid names start with '.'; encode it so the file is not hidden.
        encoded = "%2E" + encoded[1:]
    if len(encoded) > MAX_NAME_PART:
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
        encoded = encoded[:MAX_NAME_PART - 17] + "~" + digest
    return encoded


def file_prefix(user, service_name):
    """``{user}_{service_name}_`` with characters outside ``[A-Za-z0-9._-]`` percent-encoded."""
    return "%s_%s_" % (encode_part(user), encode_part(service_name))


def filename(user, service_name, when):
    """``{user}_{service_name}_{YYYYMMDDTHHMMSS.ffffff}Z.json`` (UTC, microseconds)."""
    return file_prefix(user, service_name) + _utc(when).strftime(FILE_TS_FORMAT) + ".json"


def split_filename(name):
    """``(prefix, time)`` of a report file name, or None when ``name`` is not one."""
    head, tail = name[:-FILE_TS_LEN], name[-FILE_TS_LEN:]
    if not head.endswith("_") or not FILE_TS_RE.match(tail):
        return None
    try:
        when = datetime.datetime.strptime(tail[:-len(".json")], FILE_TS_FORMAT)
    except ValueError:
        return None
    return head, when.replace(tzinfo=datetime.timezone.utc)


def next_filename(user, service_name, last_name=None, now=None):
    """The file name of a new report of the pair: now, or 1 µs past ``last_name`` (the pair's last
    report) when that one sorts at or after now (same microsecond, clock stepped back)."""
    when = _utc(now)
    parsed = split_filename(last_name) if last_name else None
    if parsed is not None and parsed[1] >= when:
        when = parsed[1] + datetime.timedelta(microseconds=1)
    return filename(user, service_name, when)


def bump_filename(name):
    """The name 1 µs after ``name`` (a report file name of the same prefix)."""
    prefix, when = split_filename(name)
    return prefix + (when + datetime.timedelta(microseconds=1)).strftime(FILE_TS_FORMAT) + ".json"


def check(report):
    """Raise ``ReportError`` unless ``report`` can be written (a mapping with the required keys and a known status)."""
    if not isinstance(report, dict):
        raise ReportError("a report must be a mapping (got %s)" % reqmod.echo(report))
    missing = [key for key in REQUIRED_KEYS if key not in report]
    if missing:
        raise ReportError("report is missing %s" % ", ".join(missing))
    if report["status"] not in MESSAGES:
        raise ReportError("unknown report status %s" % reqmod.echo(report["status"]))
    user, service_name = report["user"], report["service_name"]
    if not (is_refused(user, service_name) or reqmod.is_valid_name(user) and reqmod.is_valid_name(service_name)):
        raise ReportError("report of user %s, service_name %s: a report names a valid pair or, for a refused"
                          " request, %s (build it with reports.build)"
                          % (reqmod.echo(user), reqmod.echo(service_name), REFUSED_NAME))
    return report


def dumps(report):
    """The content of a report file: the body as indented JSON, keys in body order."""
    return json.dumps(report, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def reports_dir(data_dir):
    return os.path.join(os.path.abspath(data_dir), REPORTS_DIR)


def default_log_file(data_dir):
    return os.path.join(os.path.abspath(data_dir), LOG_NAME)


def scan(data_dir):
    """Every report file name of the data folder grouped by prefix, ``{prefix: [names sorted]}``.

    One listing of the whole ``deployment_reports/`` folder: the store uses it only to migrate a
    data folder (building the report indexes) and to read one that is not migrated yet.
    """
    groups = {}
    for name in fileutil.list_dir(reports_dir(data_dir)):
        parsed = split_filename(name)
        if parsed is not None:
            groups.setdefault(parsed[0], []).append(name)
    for names in groups.values():
        names.sort()
    return groups


def read(data_dir, names, user, service_name):
    """The reports of exactly this pair among the file ``names``, in the order given.

    Returns ``[{"file": name, "path": path, "report": body}, ...]``; files that are missing, not
    JSON objects, or whose body names another ``user``/``service_name`` are skipped.
    """
    directory = reports_dir(data_dir)
    out = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            body = fileutil.read_json(path)
        except (OSError, ValueError):
            continue
        if not isinstance(body, dict) or body.get("user") != user or body.get("service_name") != service_name:
            continue
        out.append({"file": name, "path": path, "report": body})
    return out


def log_tail(log_file, user=None, service_name=None, lines=20, chunk=65536):
    """The last ``lines`` log lines (of the pair when ``user``/``service_name`` are given).

    A line is the pair's when its parsed fields (``parse_log_line``) name exactly that user and
    service; lines that do not parse are left out of a pair's tail. Reads the file backwards in
    chunks, so a large log is not loaded whole.
    """
    if lines <= 0:
        return []
    found = []
    for text in fileutil.lines_backwards(log_file, chunk):
        if user is not None or service_name is not None:
            fields = parse_log_line(text)
            if (fields is None or user is not None and fields["user"] != user
                    or service_name is not None and fields["service_name"] != service_name):
                continue
        found.append(text)
        if len(found) >= lines:
            break
    return list(reversed(found))
