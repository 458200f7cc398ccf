# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stage reports: statuses and messages, body, file name, log line, writing and reading.

The single home of the report contract (see docs of the spec "The ten reports"):

* body ``{"status", "message", "timestamp", "user", "service_name", "namespace", "deployment_id", "details"?}``
* file ``<data_dir>/deployment_reports/{user}_{service_name}_{YYYYMMDDTHHMMSS.ffffff}Z.json``;
  names sort in report order and never overwrite each other
* log line ``{timestamp} - User: {user}, Service: {service}, Namespace: {ns}, Status: {status}, Message: {msg}``
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import datetime
import errno
import hashlib
import json
import os
import re
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
    ("failed", "Cluster creation failed at stage {stage}: {error}"),
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
SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_NAME_PART = 100


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


def failed_message(stage, error):
    return MESSAGES["failed"].format(stage=stage, error=error)


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

    ``request_or_identity`` needs ``user``, ``service_name`` and ``namespace``; the full request
    for ``starting``/``completed`` (their details) and the field named in a templated message
    (``disk_size`` for ``disk_configured``, ``gpu_count`` for ``gpu_configured``) unless
    ``message`` is given. ``failed`` needs ``message`` (use ``failed_message``).
    """
    if status not in MESSAGES:
        raise ReportError("unknown report status %s; known statuses are %s"
                          % (reqmod.echo(status), ", ".join(STATUSES)))
    source = request_or_identity if isinstance(request_or_identity, dict) else {}
    ident = reqmod.identity(source)
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
    elif details:
        body["details"] = filter_secrets(details)
    return body


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(value):
    text = "" if value is None else str(value)
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append("\\x%02x" % code)
        elif 0x80 <= code <= 0x9F or code in (0x2028, 0x2029):
            out.append("\\u%04x" % code)
        else:
            out.append(char)
    return "".join(out)


def log_line(report):
    """The one-line log form of a report (control characters escaped, never a newline inside)."""
    return "%s - User: %s, Service: %s, Namespace: %s, Status: %s, Message: %s" % tuple(
        _escape(report.get(key)) for key in ("timestamp", "user", "service_name", "namespace", "status", "message"))


def _encode_part(value):
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
    return "%s_%s_" % (_encode_part(user), _encode_part(service_name))


def filename(user, service_name, when):
    """``{user}_{service_name}_{YYYYMMDDTHHMMSS.ffffff}Z.json`` (UTC, microseconds)."""
    return file_prefix(user, service_name) + _utc(when).strftime(FILE_TS_FORMAT) + ".json"


def reports_dir(data_dir):
    return os.path.join(os.path.abspath(data_dir), REPORTS_DIR)


def default_log_file(data_dir):
    return os.path.join(os.path.abspath(data_dir), LOG_NAME)


def _report_files(directory, prefix):
    try:
        names = os.listdir(directory)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise
    return sorted(name for name in names if name.startswith(prefix) and FILE_TS_RE.match(name[len(prefix):]))


def _parse_file_ts(name, prefix):
    return datetime.datetime.strptime(name[len(prefix):-len(".json")], FILE_TS_FORMAT).replace(
        tzinfo=datetime.timezone.utc)


def write(data_dir, log_file, report, now=None):
    """Write ``report`` as a new file under ``<data_dir>/deployment_reports/`` and append its log line.

    Under the data folder's lock. The file name comes from now; when a file of the same prefix
    already sorts at or after it (same microsecond, clock step back) it is moved 1 µs past the
    last one, so names sort in report order and nothing is ever overwritten. Returns the path.
    """
    if not isinstance(report, dict):
        raise ReportError("a report must be a mapping (got %s)" % reqmod.echo(report))
    missing = [key for key in REQUIRED_KEYS if key not in report]
    if missing:
        raise ReportError("report is missing %s" % ", ".join(missing))
    if report["status"] not in MESSAGES:
        raise ReportError("unknown report status %s" % reqmod.echo(report["status"]))
    if not data_dir:
        raise ReportError("data_dir is required")
    log_file = log_file or default_log_file(data_dir)
    directory = reports_dir(data_dir)
    payload = json.dumps(report, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    line = log_line(report)
    prefix = file_prefix(report["user"], report["service_name"])
    with fileutil.locked(data_dir):
        fileutil.ensure_dir(directory)
        when = _utc(now)
        existing = _report_files(directory, prefix)
        if existing:
            last = _parse_file_ts(existing[-1], prefix)
            if last >= when:
                when = last + datetime.timedelta(microseconds=1)
        while True:
            path = os.path.join(directory, filename(report["user"], report["service_name"], when))
            try:
                fileutil.create_exclusive(path, payload)
                break
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                when = when + datetime.timedelta(microseconds=1)
        fileutil.append_line(log_file, line)
    return path


def list_reports(data_dir, user, service_name, deployment_id=None):
    """Reports of exactly this pair (body's ``user`` and ``service_name``), in order.

    Returns ``[{"file": name, "path": path, "report": body}, ...]``; unreadable files are skipped.
    """
    directory = reports_dir(data_dir)
    prefix = file_prefix(user, service_name)
    out = []
    for name in _report_files(directory, prefix):
        path = os.path.join(directory, name)
        try:
            body = fileutil.read_json(path)
        except (OSError, ValueError):
            continue
        if not isinstance(body, dict):
            continue
        if body.get("user") != user or body.get("service_name") != service_name:
            continue
        if deployment_id is not None and body.get("deployment_id") != deployment_id:
            continue
        out.append({"file": name, "path": path, "report": body})
    return out


def latest_report(data_dir, user, service_name, deployment_id=None):
    """The last entry of ``list_reports`` or None."""
    found = list_reports(data_dir, user, service_name, deployment_id)
    return found[-1] if found else None


def log_tail(log_file, user=None, service_name=None, lines=20, chunk=65536):
    """The last ``lines`` log lines (of the pair when ``user``/``service_name`` are given).

    Reads the file backwards in chunks, so a large log is not loaded whole.
    """
    if lines <= 0:
        return []
    needles = []
    if user is not None:
        needles.append(" - User: %s, Service: " % _escape(user))
    if service_name is not None:
        needles.append(", Service: %s, Namespace: " % _escape(service_name))
    try:
        handle = open(log_file, "rb")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise
    found = []
    with handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        rest = b""
        while position > 0 and len(found) < lines:
            step = min(chunk, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + rest
            parts = data.split(b"\n")
            rest = parts[0] if position > 0 else b""
            complete = parts[1:] if position > 0 else parts
            for raw in reversed(complete):
                if not raw:
                    continue
                text = raw.decode("utf-8", "replace")
                if all(needle in text for needle in needles):
                    found.append(text)
                    if len(found) >= lines:
                        break
    return list(reversed(found))
