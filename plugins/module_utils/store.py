# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metadata store: quota, tenant container records and deployment statuses.

Layout under ``data_dir``::

    tenant_data/{user}_{service_name}.json   one tenant container record per cluster
    deployments.json                         {"{user}/{service_name}": deployment entry}
    deployment_reports/                      report files (see reports.py)
    .lock                                    flock serializing every writer

Every write happens under ``fileutil.locked(data_dir)`` and is atomic; every
read tolerates missing files. A record is only ever changed or removed by the
(user, service_name) pair that owns it, so ``a_b``/``c`` and ``a``/``b_c`` (same
file name) can never overwrite each other: the second create is refused.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import datetime
import decimal
import os
import re
from collections import OrderedDict

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import fileutil
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import request as reqmod

TENANT_DIR = "tenant_data"
DEPLOYMENTS_FILE = "deployments.json"
REPORTS_DIR = "deployment_reports"

STATUS_CREATING = "creating"
STATUS_CREATED = "created"
STATUS_FAILED = "failed"
LIVE_STATUSES = (STATUS_CREATING, STATUS_CREATED)

DEFAULT_QUOTA = OrderedDict([
    ("max_clusters_per_user", 5),
    ("max_replicas_per_cluster", 10),
    ("max_cpu_per_user", "64"),
    ("max_memory_per_user", "256Gi"),
    ("max_disk_per_user", "2Ti"),
    ("max_gpus_per_user", 8),
])
INT_QUOTAS = ("max_clusters_per_user", "max_replicas_per_cluster", "max_gpus_per_user")

DEPLOYMENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_ERROR_CHARS = 4000


class StoreError(Exception):
    """The metadata store refused or could not complete an operation."""


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def timestamp(now=None):
    """UTC timestamp with second precision, ``2024-01-01T00:00:00Z``."""
    now = now or utc_now()
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment_key(user, service_name):
    """The deployments.json key of a pair; ``/`` cannot occur in valid names, so it is unambiguous."""
    return "%s/%s" % (user, service_name)


def check_deployment_id(deployment_id):
    if not isinstance(deployment_id, str) or not DEPLOYMENT_ID_RE.match(deployment_id):
        raise StoreError("deployment_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-',"
                         " starting with a letter or digit (got %s)" % reqmod.echo(deployment_id))
    return deployment_id


def _truncate(text, limit=MAX_ERROR_CHARS):
    text = "" if text is None else str(text)
    if len(text) > limit:
        return text[:limit] + "... (truncated, %d characters)" % len(text)
    return text


def normalize_quota(quota):
    """Merge ``quota`` over the defaults and parse it; raises ``StoreError`` naming a bad key."""
    quota = quota or {}
    if not isinstance(quota, dict):
        raise StoreError("quota must be a mapping of quota keys (got %s)" % reqmod.echo(quota))
    unknown = sorted(str(key) for key in quota if key not in DEFAULT_QUOTA)
    if unknown:
        raise StoreError("quota: unknown key %s; known keys are %s" % (unknown[0], ", ".join(DEFAULT_QUOTA)))
    out = OrderedDict()
    for key, default in DEFAULT_QUOTA.items():
        value = quota.get(key)
        if value is None:
            value = default
        if key in INT_QUOTAS:
            if isinstance(value, bool) or not (isinstance(value, int) or
                                               (isinstance(value, str) and re.match(r"^[0-9]{1,12}$", value))):
                raise StoreError("quota %s must be a non-negative integer (got %s)" % (key, reqmod.echo(value)))
            out[key] = int(value)
        else:
            try:
                amount = reqmod.parse_quantity(value)
            except (ValueError, decimal.DecimalException):
                amount = None
            if amount is None or amount < 0 or isinstance(value, bool):
                raise StoreError("quota %s must be a non-negative Kubernetes quantity (got %s)"
                                 % (key, reqmod.echo(value)))
            out[key] = amount
    return out


def usage_of(req):
    """Resources one cluster of request ``req`` takes: per-container limits times replicas."""
    replicas = int(req["replicas"])
    return {
        "clusters": 1,
        "cpu": reqmod.parse_quantity(req["cpu_limit"]) * replicas,
        "memory": reqmod.parse_quantity(req["mem_limit"]) * replicas,
        "disk": reqmod.parse_quantity(req["disk_size"]) * replicas,
        "gpus": int(req["gpu_count"]) * replicas,
    }


class MetadataStore:
    """Tenant records and deployment statuses under one data folder."""

    def __init__(self, data_dir):
        if not data_dir:
            raise StoreError("data_dir is required")
        self.data_dir = os.path.abspath(data_dir)
        self.tenant_dir = os.path.join(self.data_dir, TENANT_DIR)
        self.deployments_path = os.path.join(self.data_dir, DEPLOYMENTS_FILE)
        self.reports_dir = os.path.join(self.data_dir, REPORTS_DIR)

    # ----------------------------------------------------------------- paths & reads
    def tenant_path(self, user, service_name):
        """Path of the tenant record; only for valid names (they cannot leave ``tenant_data/``)."""
        reqmod.check_name("user", user)
        reqmod.check_name("service_name", service_name)
        return os.path.join(self.tenant_dir, "%s_%s.json" % (user, service_name))

    def _read_deployments(self):
        try:
            data = fileutil.read_json(self.deployments_path, default={})
        except ValueError as exc:
            raise StoreError("%s is not valid JSON: %s" % (self.deployments_path, exc))
        if not isinstance(data, dict):
            raise StoreError("%s does not hold a JSON object" % self.deployments_path)
        return data

    def _write_deployments(self, data):
        fileutil.write_json(self.deployments_path, data)

    def _read_record_file(self, path):
        try:
            record = fileutil.read_json(path)
        except ValueError as exc:
            raise StoreError("%s is not valid JSON: %s" % (path, exc))
        if record is not None and not isinstance(record, dict):
            raise StoreError("%s does not hold a JSON object" % path)
        return record

    def get_tenant(self, user, service_name):
        """The tenant record of the pair, or None (also None when the file belongs to another pair)."""
        if not (reqmod.is_valid_name(user) and reqmod.is_valid_name(service_name)):
            return None
        record = self._read_record_file(self.tenant_path(user, service_name))
        if record is None or record.get("user") != user or record.get("service_name") != service_name:
            return None
        return record

    def get_deployment(self, user, service_name):
        """The deployments.json entry of the pair, or None."""
        entry = self._read_deployments().get(deployment_key(user, service_name))
        if entry is None or entry.get("user") != user or entry.get("service_name") != service_name:
            return None
        return entry

    def list_deployments(self, user=None, service_name=None):
        """Entries filtered on their own ``user``/``service_name`` fields, sorted by key."""
        data = self._read_deployments()
        out = []
        for key in sorted(data):
            entry = data[key]
            if not isinstance(entry, dict):
                continue
            if user is not None and entry.get("user") != user:
                continue
            if service_name is not None and entry.get("service_name") != service_name:
                continue
            out.append(entry)
        return out

    # ----------------------------------------------------------------- quota
    def _entry_usage(self, entry):
        req = entry.get("request")
        if isinstance(req, dict):
            try:
                return usage_of(req)
            except (KeyError, TypeError, ValueError, decimal.DecimalException):
                pass
        return {"clusters": 1, "cpu": decimal.Decimal(0), "memory": decimal.Decimal(0),
                "disk": decimal.Decimal(0), "gpus": 0}

    def check_quota(self, req, quota, deployments=None):
        """Raise ``StoreError`` when ``req`` would take its user over a quota.

        Usage counts the user's live (creating or created) clusters other than this pair.
        """
        limits = normalize_quota(quota)
        if deployments is None:
            deployments = self._read_deployments()
        key = deployment_key(req["user"], req["service_name"])
        used = {"clusters": 0, "cpu": decimal.Decimal(0), "memory": decimal.Decimal(0),
                "disk": decimal.Decimal(0), "gpus": 0}
        for other_key, entry in deployments.items():
            if other_key == key or not isinstance(entry, dict):
                continue
            if entry.get("user") != req["user"] or entry.get("status") not in LIVE_STATUSES:
                continue
            usage = self._entry_usage(entry)
            for name in used:
                used[name] += usage[name]
        wanted = usage_of(req)
        replicas = req["replicas"]
        who = "user %s" % reqmod.echo(req["user"])

        if replicas > limits["max_replicas_per_cluster"]:
            raise StoreError("quota max_replicas_per_cluster exceeded: limit %d, requested %d replicas"
                             % (limits["max_replicas_per_cluster"], replicas))
        if used["clusters"] + 1 > limits["max_clusters_per_user"]:
            raise StoreError("quota max_clusters_per_user exceeded for %s: limit %d, in use %d, requested 1 more"
                             % (who, limits["max_clusters_per_user"], used["clusters"]))
        checks = (
            ("max_cpu_per_user", "cpu", "cpu", "cpu_limit %s x %d replicas" % (req["cpu_limit"], replicas)),
            ("max_memory_per_user", "memory", "bytes", "mem_limit %s x %d replicas" % (req["mem_limit"], replicas)),
            ("max_disk_per_user", "disk", "bytes", "disk_size %s x %d replicas" % (req["disk_size"], replicas)),
        )
        for qkey, name, kind, how in checks:
            if used[name] + wanted[name] > limits[qkey]:
                raise StoreError("quota %s exceeded for %s: limit %s, in use %s, requested %s (%s)" % (
                    qkey, who, reqmod.format_quantity(limits[qkey], kind), reqmod.format_quantity(used[name], kind),
                    reqmod.format_quantity(wanted[name], kind), how))
        if used["gpus"] + wanted["gpus"] > limits["max_gpus_per_user"]:
            raise StoreError("quota max_gpus_per_user exceeded for %s: limit %d, in use %d, requested %d"
                             " (gpu_count %d x %d replicas)"
                             % (who, limits["max_gpus_per_user"], used["gpus"], wanted["gpus"], req["gpu_count"],
                                replicas))

    # ----------------------------------------------------------------- stage 0
    def begin(self, request, deployment_id, quota=None, now=None, check_only=False):
        """Stage 0: refuse conflicts, check quota, write the tenant record, set status ``creating``.

        ``request`` is validated here again (the store never holds an unvalidated request).
        Returns the tenant record. With ``check_only`` nothing is written.
        """
        try:
            req = reqmod.validate(request)
        except reqmod.RequestError as exc:
            raise StoreError(str(exc))
        check_deployment_id(deployment_id)
        user, service = req["user"], req["service_name"]
        key = deployment_key(user, service)
        stamp = timestamp(now)
        with fileutil.locked(self.data_dir):
            deployments = self._read_deployments()
            entry = deployments.get(key)
            if isinstance(entry, dict):
                if entry.get("status") == STATUS_CREATING and entry.get("deployment_id") != deployment_id:
                    raise StoreError("cluster %s of user %s is already being created by deployment %s"
                                     " (started %s); wait for it to finish or fail"
                                     % (reqmod.echo(service), reqmod.echo(user), entry.get("deployment_id"),
                                        entry.get("created_at")))
                if entry.get("status") == STATUS_CREATED:
                    raise StoreError("cluster %s of user %s already exists (deployment %s, status created);"
                                     " delete it before creating it again"
                                     % (reqmod.echo(service), reqmod.echo(user), entry.get("deployment_id")))
            path = self.tenant_path(user, service)
            existing = self._read_record_file(path)
            if existing is not None:
                if existing.get("user") != user or existing.get("service_name") != service:
                    raise StoreError("name collision: %s is already used by user %s, service %s; user %s with"
                                     " service %s maps to the same file, choose another service name"
                                     % (os.path.join(TENANT_DIR, os.path.basename(path)),
                                        reqmod.echo(existing.get("user")), reqmod.echo(existing.get("service_name")),
                                        reqmod.echo(user), reqmod.echo(service)))
                if existing.get("status") == STATUS_CREATED:
                    raise StoreError("cluster %s of user %s already exists (tenant record status created);"
                                     " delete it before creating it again" % (reqmod.echo(service), reqmod.echo(user)))
            for other_key, other in deployments.items():
                if other_key == key or not isinstance(other, dict):
                    continue
                if other.get("namespace") == req["namespace"] and other.get("status") in LIVE_STATUSES:
                    raise StoreError("namespace %s is already used by cluster %s of user %s (status %s);"
                                     " each cluster needs its own namespace"
                                     % (reqmod.echo(req["namespace"]), reqmod.echo(other.get("service_name")),
                                        reqmod.echo(other.get("user")), other.get("status")))
            self.check_quota(req, quota, deployments)

            record = reqmod.record_fields(req)
            record["status"] = STATUS_CREATING
            record["created_at"] = stamp
            record["deployment_id"] = deployment_id
            if check_only:
                return record
            new_entry = OrderedDict([
                ("user", user),
                ("service_name", service),
                ("namespace", req["namespace"]),
                ("deployment_id", deployment_id),
                ("status", STATUS_CREATING),
                ("stage", None),
                ("error", None),
                ("created_at", stamp),
                ("updated_at", stamp),
                ("reports_dir", self.reports_dir),
                ("request", dict(req)),
            ])
            fileutil.write_json(path, record)
            deployments[key] = new_entry
            self._write_deployments(deployments)
            return record

    def _owned_record(self, user, service, deployment_id):
        path = self.tenant_path(user, service)
        record = self._read_record_file(path)
        if record is None:
            raise StoreError("no tenant record for user %s, service %s (%s is missing)"
                             % (reqmod.echo(user), reqmod.echo(service), path))
        if record.get("user") != user or record.get("service_name") != service:
            raise StoreError("tenant record %s belongs to user %s, service %s, not to user %s, service %s"
                             % (path, reqmod.echo(record.get("user")), reqmod.echo(record.get("service_name")),
                                reqmod.echo(user), reqmod.echo(service)))
        if record.get("deployment_id") != deployment_id:
            raise StoreError("tenant record %s belongs to deployment %s, not %s"
                             % (path, record.get("deployment_id"), deployment_id))
        return path, record

    def _update_entry(self, deployments, user, service, deployment_id, stamp, **changes):
        key = deployment_key(user, service)
        entry = deployments.get(key)
        if not isinstance(entry, dict) or entry.get("deployment_id") != deployment_id:
            raise StoreError("deployments.json has no entry of deployment %s for user %s, service %s"
                             % (deployment_id, reqmod.echo(user), reqmod.echo(service)))
        entry.update(changes)
        entry["updated_at"] = stamp
        return entry

    # ----------------------------------------------------------------- stage 9
    def sync(self, request, deployment_id, resources, now=None, check_only=False):
        """Stage 9: store the full resource configuration in the tenant record (status stays creating)."""
        req = reqmod.validate(request)
        if resources is not None and not isinstance(resources, dict):
            raise StoreError("resources must be a mapping (got %s)" % reqmod.echo(resources))
        user, service = req["user"], req["service_name"]
        stamp = timestamp(now)
        with fileutil.locked(self.data_dir):
            path, record = self._owned_record(user, service, deployment_id)
            deployments = self._read_deployments()
            record.update(reqmod.record_fields(req))
            record["status"] = STATUS_CREATING
            record["resources"] = resources or {}
            record["synced_at"] = stamp
            if check_only:
                return record
            self._update_entry(deployments, user, service, deployment_id, stamp)
            fileutil.write_json(path, record)
            self._write_deployments(deployments)
            return record

    # ----------------------------------------------------------------- stage 10
    def complete(self, request, deployment_id, now=None, check_only=False):
        """Mark the cluster ``created`` in the tenant record (with ``sync_time``) and in deployments.json."""
        req = reqmod.validate(request)
        user, service = req["user"], req["service_name"]
        stamp = timestamp(now)
        with fileutil.locked(self.data_dir):
            path, record = self._owned_record(user, service, deployment_id)
            deployments = self._read_deployments()
            record["status"] = STATUS_CREATED
            record["sync_time"] = stamp
            if check_only:
                return record, deployments.get(deployment_key(user, service))
            entry = self._update_entry(deployments, user, service, deployment_id, stamp,
                                       status=STATUS_CREATED, stage=None, error=None)
            fileutil.write_json(path, record)
            self._write_deployments(deployments)
            return record, entry

    # ----------------------------------------------------------------- rollback
    def fail(self, user, service_name, namespace, deployment_id, stage, error, now=None, check_only=False):
        """Record a failed run. Works with invalid identities (a refused request).

        * The tenant record is deleted only when it belongs to this pair and this deployment.
        * The deployments.json entry becomes ``failed`` with ``stage`` and ``error`` unless it is
          live (creating/created) for another deployment: a refused second run never touches
          the first run's status or a created cluster.

        Returns ``{"deployment": entry, "record_deleted": bool, "status_changed": bool}``.
        """
        user = "" if user is None else str(user)
        service_name = "" if service_name is None else str(service_name)
        namespace = "" if namespace is None else str(namespace)
        deployment_id = "" if deployment_id is None else str(deployment_id)
        stamp = timestamp(now)
        result = {"deployment": None, "record_deleted": False, "status_changed": False}
        with fileutil.locked(self.data_dir):
            if reqmod.is_valid_name(user) and reqmod.is_valid_name(service_name):
                path = self.tenant_path(user, service_name)
                record = self._read_record_file(path)
                if (record is not None and record.get("user") == user and record.get("service_name") == service_name
                        and record.get("deployment_id") == deployment_id):
                    if not check_only:
                        fileutil.remove(path)
                    result["record_deleted"] = True
            deployments = self._read_deployments()
            key = deployment_key(user, service_name)
            entry = deployments.get(key)
            if (isinstance(entry, dict) and entry.get("deployment_id") != deployment_id
                    and entry.get("status") in LIVE_STATUSES):
                result["deployment"] = entry
                return result
            new_entry = OrderedDict()
            new_entry["user"] = user
            new_entry["service_name"] = service_name
            new_entry["namespace"] = namespace
            new_entry["deployment_id"] = deployment_id
            new_entry["status"] = STATUS_FAILED
            new_entry["stage"] = _truncate(stage, 200)
            new_entry["error"] = _truncate(error)
            same_run = isinstance(entry, dict) and entry.get("deployment_id") == deployment_id
            new_entry["created_at"] = entry.get("created_at", stamp) if same_run else stamp
            new_entry["updated_at"] = stamp
            new_entry["reports_dir"] = self.reports_dir
            if same_run and "request" in entry:
                new_entry["request"] = entry["request"]
            result["deployment"] = new_entry
            result["status_changed"] = True
            if not check_only:
                deployments[key] = new_entry
                self._write_deployments(deployments)
            return result
