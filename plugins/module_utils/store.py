"""Metadata store: quota, tenant container records, deployment statuses, report index, queries.

The store owns the data folder. Layout under ``data_dir``::

    deployments/<user>/<service_name>.json     the pair's deployment status entry
    deployments/<user>/<service_name>.reports  the pair's report file names, one a line, in write order
    namespaces/<namespace>.json                the live deployment holding the namespace (a claim)
    tenant_data/{user}_{service_name}.json     one tenant container record per cluster
    deployment_reports/{user}_{service_name}_{YYYYMMDDTHHMMSS.ffffff}Z.json   the reports (reports.py)
    deployment.log                             one line per report (the default log file)
    deployments.json.migrated                  a legacy deployments.json after its migration
    .lock                                      flock serializing every writer

``<user>``, ``<service_name>`` and ``<namespace>`` are path parts (``path_part``): valid names as
they are, anything else percent-encoded, so nothing leaves the folder. Nothing is written for an
invalid user or service name (a refused request has no tenant; its failed report is written under
``reports.REFUSED_IDENTITY``); the encoding serves reads and entries that an earlier version wrote.
A write touches only files of one pair (entry, index, tenant record, report), of one
namespace (its claim), the files of the user's own folder (quota) and the log, so it costs the
same with 10 tenants as with 10,000; a query for one pair reads only that pair's files.

Every write happens under ``fileutil.locked(data_dir)`` and is atomic (entries, claims and records
are replaced by rename; index and log lines are appended with one write and fsync); reads take no
lock and tolerate missing files, and a check-mode step takes no lock and writes nothing. A record
is only ever changed or removed by the
(user, service_name) pair that owns it, so ``a_b``/``c`` and ``a``/``b_c`` (same tenant record
file name) can never overwrite each other: the second create is refused.

Migration: an earlier version kept every status in ``deployments.json``. The first write into
such a folder (under the lock) writes every entry to ``deployments/``, the claims of the live
ones and every pair's report index (one scan of ``deployment_reports/``), then renames
``deployments.json`` to ``deployments.json.migrated``, last: a crash part-way redoes it. Until
then reads answer from ``deployments.json`` and a scan of the reports folder.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import contextlib
import datetime
import decimal
import errno
import os
import re
import socket
from collections import OrderedDict

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import fileutil
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import reports
from ansible_collections.yunpeng.es_serverless.plugins.module_utils import request as reqmod

TENANT_DIR = "tenant_data"
DEPLOYMENTS_DIR = "deployments"
NAMESPACES_DIR = "namespaces"
REPORTS_DIR = reports.REPORTS_DIR
ENTRY_SUFFIX = ".json"
INDEX_SUFFIX = ".reports"
LEGACY_FILE = "deployments.json"
MIGRATED_FILE = "deployments.json.migrated"

STATUS_CREATING = "creating"
STATUS_CREATED = "created"
STATUS_FAILED = "failed"
STATUS_DELETING = "deleting"
STATUS_DELETED = "deleted"
# A live deployment holds its namespace and counts toward its user's quota: while a
# cluster is being deleted its Kubernetes objects still exist.
LIVE_STATUSES = (STATUS_CREATING, STATUS_CREATED, STATUS_DELETING)

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


# The lease of a running create, update or delete (see "Leases" below).
LEASE_SECONDS = 3600
OWNER_PID_ENV = "ES_SERVERLESS_RUN_PID"
DIED_STAGE = "run_died"


class StoreError(Exception):
    """The metadata store refused or could not complete an operation."""


class UnknownTenant(StoreError):
    """The pair has no deployment status: there is nothing to delete (and nothing was written)."""


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def timestamp(now=None):
    """UTC timestamp with second precision, ``2024-01-01T00:00:00Z``."""
    now = now or utc_now()
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment_key(user, service_name):
    """The sort key of a pair (and its key in a legacy deployments.json); ``/`` cannot occur in valid names."""
    return "%s/%s" % (user, service_name)


def path_part(value):
    """``value`` as one path component of the data folder: ``reports.encode_part`` (a valid name is
    itself; anything else is percent-encoded, never ``/`` nor a leading ``.``), ``%`` for ``""``."""
    return reports.encode_part(value) or "%"


def _owned(entry, user, service_name):
    return isinstance(entry, dict) and entry.get("user") == user and entry.get("service_name") == service_name


def _entry_sort_key(entry):
    return deployment_key(entry.get("user"), entry.get("service_name"))


def _update_of(entry, deployment_id):
    """The update that ``deployment_id`` runs on the created cluster of ``entry``, or None."""
    running = (entry or {}).get("update")
    if (isinstance(running, dict) and running.get("deployment_id") == deployment_id
            and entry.get("status") == STATUS_CREATED):
        return running
    return None


def _refuse_while_deleting(entry):
    """A create (or update) of a cluster that a delete is removing is refused."""
    if entry is not None and entry.get("status") == STATUS_DELETING:
        raise StoreError("cluster %s of user %s is being deleted by deployment %s; wait for the delete to finish"
                         % (reqmod.echo(entry.get("service_name")), reqmod.echo(entry.get("user")),
                            entry.get("deployment_id")))


# ----------------------------------------------------------------- leases
# A running create, update or delete holds a lease in the pair's entry (the update in its ``update``
# sub-entry): the host and boot of the controller, the pid of the ansible-playbook process (the
# report callback exports it as ES_SERVERLESS_RUN_PID before Ansible forks its workers) with the
# process's start time, so that a reused pid is not mistaken for the run, and an expiry that every
# report of the run moves on (``write_report``, which runs in the controller anyway: no task of its
# own). A run on this host is alive exactly while its process is; a run on another host (a data
# folder shared between controllers) is alive until its lease expires, LEASE_SECONDS after its
# last report. An operator can release the lease of a run whose host is gone (``release``).


def _read_text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("ascii", "replace")
    except OSError:
        return None


def host_identity():
    """``(host name, boot id)`` of this machine; the boot id is None where /proc does not give one."""
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    return socket.gethostname(), (boot.strip() or None) if boot else None


def process_start(pid):
    """Start time of process ``pid`` (clock ticks since boot, from /proc), 0 where /proc is missing,
    or None when there is no such process (a zombie, killed but not reaped, counts as gone)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    stat = _read_text("/proc/%d/stat" % pid)
    if stat is None:
        if os.path.isdir("/proc/self"):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    fields = stat[stat.rfind(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


def owner_pid():
    """The pid of the run: the ansible-playbook process (ES_SERVERLESS_RUN_PID), else this process."""
    value = os.environ.get(OWNER_PID_ENV, "")
    return int(value) if value.isdigit() else os.getpid()


def new_lease(now=None, pid=None):
    """A lease of the running process (``pid``, default ``owner_pid()``) for LEASE_SECONDS from ``now``."""
    now = now or utc_now()
    pid = owner_pid() if pid is None else pid
    host, boot = host_identity()
    return OrderedDict([("host", host), ("boot_id", boot), ("pid", pid), ("pid_start", process_start(pid)),
                        ("renewed_at", timestamp(now)),
                        ("expires_at", timestamp(now + datetime.timedelta(seconds=LEASE_SECONDS)))])


def _parse_stamp(value):
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


def lease_state(lease, since=None, now=None):
    """``(alive, why)`` of a run's lease; ``why`` says what decided it, for messages.

    * released by an operator: dead;
    * this host (same name and boot id): alive exactly while the pid runs with the same start time;
    * this host name with another boot id: dead (the machine rebooted);
    * another host: alive until ``expires_at``;
    * no lease (a run of an earlier version): alive until LEASE_SECONDS after ``since``.
    """
    now = now or utc_now()
    if not isinstance(lease, dict):
        start = _parse_stamp(since)
        expires = start + datetime.timedelta(seconds=LEASE_SECONDS) if start else None
        if expires is None:
            return True, "it holds no lease"
        if now >= expires:
            return False, "it holds no lease and its status has not changed since %s" % since
        return True, "it holds no lease; it counts as running until %s" % timestamp(expires)
    if lease.get("released_at"):
        return False, "its lease was released at %s" % lease.get("released_at")
    where = "pid %s on host %s" % (lease.get("pid"), lease.get("host"))
    host, boot = host_identity()
    if lease.get("host") == host:
        if lease.get("boot_id") != boot:
            return False, "host %s has rebooted since the run started" % host
        started = process_start(lease.get("pid"))
        if started is None:
            return False, "ansible-playbook %s is gone" % where
        if lease.get("pid_start") is not None and started != lease.get("pid_start"):
            return False, "ansible-playbook %s is gone (the pid now belongs to another process)" % where
        return True, "ansible-playbook %s is running" % where
    expires = _parse_stamp(lease.get("expires_at"))
    if expires is not None and now < expires:
        return True, "ansible-playbook %s holds its lease until %s" % (where, lease.get("expires_at"))
    return False, "the lease of ansible-playbook %s expired at %s" % (where, lease.get("expires_at"))


def running_run(entry):
    """The run in progress in ``entry``: ``{"operation", "deployment_id", "lease", "since"}`` (create or
    delete: the entry's own; update: its ``update`` sub-entry), or None."""
    if not isinstance(entry, dict):
        return None
    status = entry.get("status")
    if status in (STATUS_CREATING, STATUS_DELETING):
        return {"operation": "create" if status == STATUS_CREATING else "delete",
                "deployment_id": entry.get("deployment_id"), "lease": entry.get("lease"),
                "since": entry.get("updated_at")}
    update = entry.get("update")
    if status == STATUS_CREATED and isinstance(update, dict):
        return {"operation": "update", "deployment_id": update.get("deployment_id"), "lease": update.get("lease"),
                "since": update.get("started_at")}
    return None


def dead_run(entry, now=None):
    """The run in progress in ``entry`` when it died (with ``why``), else None."""
    run = running_run(entry)
    if run is None:
        return None
    alive, why = lease_state(run["lease"], run["since"], now)
    if alive:
        return None
    run["why"] = why
    return run


def _lease_note(entry, now=None):
    """What the lease of the entry's running run says, for a refusal."""
    run = running_run(entry)
    return lease_state(run["lease"], run["since"], now)[1] if run else "no run in progress"


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
    """Tenant records, deployment statuses and report indexes under one data folder."""

    def __init__(self, data_dir):
        if not data_dir:
            raise StoreError("data_dir is required")
        self.data_dir = os.path.abspath(data_dir)
        self.tenant_dir = os.path.join(self.data_dir, TENANT_DIR)
        self.deployments_dir = os.path.join(self.data_dir, DEPLOYMENTS_DIR)
        self.namespaces_dir = os.path.join(self.data_dir, NAMESPACES_DIR)
        self.reports_dir = os.path.join(self.data_dir, REPORTS_DIR)
        self.legacy_path = os.path.join(self.data_dir, LEGACY_FILE)
        self.migrated_path = os.path.join(self.data_dir, MIGRATED_FILE)
        # What the last begin or begin_delete took over from a run that died (``_take_over``), or None.
        self.took_over = None
        self._taken_pair = None

    # ----------------------------------------------------------------- paths
    def tenant_path(self, user, service_name):
        """Path of the tenant record; only for valid names (they cannot leave ``tenant_data/``)."""
        reqmod.check_name("user", user)
        reqmod.check_name("service_name", service_name)
        return os.path.join(self.tenant_dir, "%s_%s.json" % (user, service_name))

    def _pair_base(self, user_part, service_part):
        return os.path.join(self.deployments_dir, user_part or "%", service_part or "%")

    def entry_path(self, user, service_name):
        """``deployments/<user>/<service_name>.json``: the pair's deployment status entry."""
        return self._pair_base(path_part(user), path_part(service_name)) + ENTRY_SUFFIX

    def index_path(self, user, service_name):
        """``deployments/<user>/<service_name>.reports``: the pair's report file names in write order."""
        return self._pair_base(path_part(user), path_part(service_name)) + INDEX_SUFFIX

    def claim_path(self, namespace):
        """``namespaces/<namespace>.json``: which deployment holds the namespace."""
        return os.path.join(self.namespaces_dir, path_part(namespace) + ".json")

    # ----------------------------------------------------------------- reads
    def _read_record_file(self, path):
        try:
            record = fileutil.read_json(path)
        except ValueError as exc:
            raise StoreError("%s is not valid JSON: %s" % (path, exc))
        if record is not None and not isinstance(record, dict):
            raise StoreError("%s does not hold a JSON object" % path)
        return record

    def _legacy(self):
        """The mapping of a not yet migrated ``deployments.json``, or None (the folder uses the layout)."""
        try:
            data = fileutil.read_json(self.legacy_path)
        except ValueError as exc:
            raise StoreError("%s is not valid JSON: %s" % (self.legacy_path, exc))
        if data is not None and not isinstance(data, dict):
            raise StoreError("%s does not hold a JSON object" % self.legacy_path)
        return data

    def _indexed(self):
        """True when every pair's report index is complete, i.e. the folder needs no migration."""
        return not os.path.exists(self.legacy_path) and (
            os.path.isdir(self.deployments_dir) or not os.path.isdir(self.reports_dir))

    def get_tenant(self, user, service_name):
        """The tenant record of the pair, or None (also None when the file belongs to another pair)."""
        if not (reqmod.is_valid_name(user) and reqmod.is_valid_name(service_name)):
            return None
        record = self._read_record_file(self.tenant_path(user, service_name))
        if record is None or record.get("user") != user or record.get("service_name") != service_name:
            return None
        return record

    def get_deployment(self, user, service_name):
        """The deployment status entry of the pair, or None. Reads only that entry."""
        legacy = self._legacy()
        if legacy is not None:
            entry = legacy.get(deployment_key(user, service_name))
        else:
            entry = self._read_record_file(self.entry_path(user, service_name))
        return entry if _owned(entry, user, service_name) else None

    def _entries(self, user=None):
        """The entries of one user (reading only ``deployments/<user>/``) or of everyone, sorted by key."""
        legacy = self._legacy()
        if legacy is not None:
            found = [legacy[key] for key in sorted(legacy) if isinstance(legacy[key], dict)]
        else:
            if user is None:
                folders = []
                if os.path.isdir(self.deployments_dir):
                    with os.scandir(self.deployments_dir) as items:
                        folders = [item.path for item in items if item.is_dir() and not item.name.startswith(".")]
            else:
                folders = [os.path.join(self.deployments_dir, path_part(user))]
            found = []
            for folder in folders:
                for name in fileutil.list_dir(folder):
                    if name.endswith(ENTRY_SUFFIX) and not name.startswith("."):
                        entry = self._read_record_file(os.path.join(folder, name))
                        if isinstance(entry, dict):
                            found.append(entry)
            found.sort(key=_entry_sort_key)
        if user is not None:
            found = [entry for entry in found if entry.get("user") == user]
        return found

    def list_deployments(self, user=None, service_name=None):
        """Entries filtered on their own ``user``/``service_name`` fields, sorted by ``user/service_name``.

        With both, only the pair's entry is read; with ``user``, only that user's folder; with
        neither, every entry.
        """
        if user is not None and service_name is not None:
            entry = self.get_deployment(user, service_name)
            return [entry] if entry is not None else []
        entries = self._entries(user)
        if service_name is not None:
            entries = [entry for entry in entries if entry.get("service_name") == service_name]
        return entries

    def _index_names(self, user, service_name):
        """The report file names of the pair's index, in write order (torn or foreign lines skipped)."""
        try:
            with open(self.index_path(user, service_name), "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return []
            raise
        prefix = reports.file_prefix(user, service_name)
        out = []
        for line in text.split("\n"):
            parsed = reports.split_filename(line)
            if parsed is not None and parsed[0] == prefix:
                out.append(line)
        return out

    def report_names(self, user, service_name):
        """The pair's report file names in write order: its index (in a folder not migrated yet, a scan)."""
        if self._indexed():
            return self._index_names(user, service_name)
        return reports.scan(self.data_dir).get(reports.file_prefix(user, service_name), [])

    def list_reports(self, user, service_name, deployment_id=None):
        """Reports of exactly this pair (body's ``user`` and ``service_name``), in write order.

        Names come from ``report_names``; files that are missing or unparsable are skipped.
        Returns ``[{"file", "path", "report"}, ...]``.
        """
        found = reports.read(self.data_dir, self.report_names(user, service_name), user, service_name)
        if deployment_id is not None:
            found = [item for item in found if item["report"].get("deployment_id") == deployment_id]
        return found

    def _namespace_holder(self, namespace, user, service_name):
        """The live entry of another pair holding ``namespace``, or None.

        Reads the namespace's claim and the entry it names: a claim whose deployment is no
        longer that pair's live deployment in this namespace is stale.
        """
        legacy = self._legacy()
        if legacy is not None:
            for key in sorted(legacy):
                other = legacy[key]
                if (isinstance(other, dict) and not _owned(other, user, service_name)
                        and other.get("namespace") == namespace and other.get("status") in LIVE_STATUSES):
                    return other
            return None
        claim = self._read_record_file(self.claim_path(namespace))
        if claim is None or _owned(claim, user, service_name):
            return None
        other = self.get_deployment(claim.get("user"), claim.get("service_name"))
        if (other is not None and other.get("deployment_id") == claim.get("deployment_id")
                and other.get("namespace") == namespace and other.get("status") in LIVE_STATUSES):
            return other
        return None

    # ----------------------------------------------------------------- writes
    def _locked(self, check_only):
        """The data folder's lock for a write; none for a check, which writes nothing (not even the lock)."""
        return contextlib.nullcontext() if check_only else fileutil.locked(self.data_dir)

    def _write_entry(self, entry, durable=True):
        fileutil.write_json(self.entry_path(entry["user"], entry["service_name"]), entry, durable=durable)

    def _write_claim(self, namespace, user, service_name, deployment_id, durable=True):
        fileutil.write_json(self.claim_path(namespace), OrderedDict([
            ("user", user), ("service_name", service_name), ("deployment_id", deployment_id)]), durable=durable)

    def _release_claim(self, namespace, user, service_name, deployment_id):
        """Remove the claim on ``namespace`` if it is this deployment's."""
        path = self.claim_path(namespace)
        claim = self._read_record_file(path)
        if _owned(claim, user, service_name) and claim.get("deployment_id") == deployment_id:
            fileutil.remove(path)

    def _migrate(self):
        """Move a folder of an earlier version to the layout; under the lock, before any write.

        Writes every entry of ``deployments.json``, the namespace claims of the live ones and
        every pair's report index (one scan of ``deployment_reports/``), syncs them to disk once
        (``os.sync``, instead of two fsyncs per file), then renames ``deployments.json`` to
        ``deployments.json.migrated``. Every step overwrites, so a crash part-way just redoes it.
        A folder with reports but neither ``deployments.json`` nor ``deployments/`` is migrated
        as if ``deployments.json`` were empty. Returns True when it migrated.
        """
        legacy = self._legacy()
        if legacy is None:
            if os.path.isdir(self.deployments_dir) or not os.path.isdir(self.reports_dir):
                return False
            legacy = {}
            fileutil.write_json(self.legacy_path, legacy)
        claimed = set()
        for key in sorted(legacy):
            entry = legacy[key]
            if not (isinstance(entry, dict) and isinstance(entry.get("user"), str)
                    and isinstance(entry.get("service_name"), str)):
                continue
            self._write_entry(entry, durable=False)
            namespace = entry.get("namespace")
            if entry.get("status") in LIVE_STATUSES and namespace and namespace not in claimed:
                claimed.add(namespace)
                self._write_claim(namespace, entry["user"], entry["service_name"], entry.get("deployment_id"),
                                  durable=False)
        for prefix, names in reports.scan(self.data_dir).items():
            for parts, pair_names in self._pairs_of_prefix(prefix, names).items():
                fileutil.atomic_write(self._pair_base(*parts) + INDEX_SUFFIX, "".join(n + "\n" for n in pair_names),
                                      durable=False)
        fileutil.ensure_dir(self.deployments_dir)
        os.sync()
        target, number = self.migrated_path, 0
        while os.path.exists(target):
            number += 1
            target = "%s.%d" % (self.migrated_path, number)
        os.rename(self.legacy_path, target)
        fileutil.fsync_dir(self.data_dir)
        return True

    def _pairs_of_prefix(self, prefix, names):
        """``{(user part, service part): names}`` of one file-name prefix.

        ``{user}_{service}_`` with one ``_`` inside splits one way; otherwise (``a_b_c_``: user
        ``a_b`` or ``a``?) each report body says whose it is.
        """
        stem = prefix[:-1]
        cuts = [i for i, char in enumerate(stem) if char == "_"]
        if len(cuts) == 1:
            return {(stem[:cuts[0]], stem[cuts[0] + 1:]): names}
        out = OrderedDict()
        for name in names:
            try:
                body = fileutil.read_json(os.path.join(self.reports_dir, name))
            except (OSError, ValueError):
                continue
            if not isinstance(body, dict):
                continue
            user, service = body.get("user"), body.get("service_name")
            if isinstance(user, str) and isinstance(service, str) and reports.file_prefix(user, service) == prefix:
                out.setdefault((reports.encode_part(user), reports.encode_part(service)), []).append(name)
        return out

    def migrate(self):
        """Migrate a folder of an earlier version now (writes do it on their own). True when it migrated."""
        with fileutil.locked(self.data_dir):
            return self._migrate()

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

        Usage counts the user's live (creating, created or deleting) clusters other than this pair, read
        from ``deployments/<user>/`` unless ``deployments`` (entries, or a mapping of them) is given; a
        create or delete whose run died does not count.
        """
        limits = normalize_quota(quota)
        if deployments is None:
            deployments = self._entries(req["user"])
        elif isinstance(deployments, dict):
            deployments = list(deployments.values())
        used = {"clusters": 0, "cpu": decimal.Decimal(0), "memory": decimal.Decimal(0),
                "disk": decimal.Decimal(0), "gpus": 0}
        for entry in deployments:
            if not isinstance(entry, dict) or _owned(entry, req["user"], req["service_name"]):
                continue
            if entry.get("user") != req["user"] or entry.get("status") not in LIVE_STATUSES:
                continue
            dead = dead_run(entry)
            if dead is not None and dead["operation"] != "update":
                continue  # a create or delete whose run died holds nothing: its cluster is not live
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
    def begin(self, request, deployment_id, quota=None, now=None, check_only=False, log_file=None):
        """Stage 0: refuse conflicts, check quota, write the tenant record, set status ``creating``.

        A create or update of the pair whose run died is taken over first (``_take_over``; what was
        done is in ``took_over``); a delete that died is not: the delete must be run again.

        ``request`` is validated here again (the store never holds an unvalidated request).
        Reads only the pair's entry and tenant record, the namespace's claim and the user's
        entries. Writes the namespace claim, the tenant record and the entry, in that order.
        Returns the tenant record. With ``check_only`` nothing is written.
        """
        try:
            req = reqmod.validate(request)
        except reqmod.RequestError as exc:
            raise StoreError(str(exc))
        check_deployment_id(deployment_id)
        user, service = req["user"], req["service_name"]
        stamp = timestamp(now)
        with self._locked(check_only):
            if not check_only:
                self._migrate()
            entry = self._take_over(self.get_deployment(user, service), deployment_id, ("create", "update"), now)
            _refuse_while_deleting(entry)
            updating = False
            if entry is not None:
                running = entry.get("update") or {}
                if entry.get("status") == STATUS_CREATED and running.get("deployment_id") not in (None, deployment_id):
                    raise StoreError("cluster %s of user %s is already being updated by deployment %s"
                                     " (started %s; %s); wait for it to finish or fail"
                                     % (reqmod.echo(service), reqmod.echo(user), running.get("deployment_id"),
                                        running.get("started_at"), _lease_note(entry, now)))
                if entry.get("status") == STATUS_CREATING and entry.get("deployment_id") != deployment_id:
                    raise StoreError("cluster %s of user %s is already being created by deployment %s"
                                     " (started %s; %s); wait for it to finish or fail"
                                     % (reqmod.echo(service), reqmod.echo(user), entry.get("deployment_id"),
                                        entry.get("created_at"), _lease_note(entry, now)))
                if entry.get("status") == STATUS_CREATED:
                    # Create for a created cluster converges it: an update, refused before anything
                    # changes when it cannot be done in place.
                    try:
                        reqmod.check_update(entry.get("request") or {"namespace": entry.get("namespace")}, req)
                    except reqmod.RequestError as exc:
                        raise StoreError(str(exc))
                    updating = True
            path = self.tenant_path(user, service)
            existing = self._read_record_file(path)
            if existing is not None:
                if existing.get("user") != user or existing.get("service_name") != service:
                    raise StoreError("name collision: %s is already used by user %s, service %s; user %s with"
                                     " service %s maps to the same file, choose another service name"
                                     % (os.path.join(TENANT_DIR, os.path.basename(path)),
                                        reqmod.echo(existing.get("user")), reqmod.echo(existing.get("service_name")),
                                        reqmod.echo(user), reqmod.echo(service)))
                if existing.get("status") == STATUS_CREATED and not updating:
                    raise StoreError("cluster %s of user %s already exists (tenant record status created);"
                                     " delete it before creating it again" % (reqmod.echo(service), reqmod.echo(user)))
            other = self._namespace_holder(req["namespace"], user, service)
            if other is not None:
                raise StoreError("namespace %s is already used by cluster %s of user %s (status %s);"
                                 " each cluster needs its own namespace"
                                 % (reqmod.echo(req["namespace"]), reqmod.echo(other.get("service_name")),
                                    reqmod.echo(other.get("user")), other.get("status")))
            self.check_quota(req, quota)

            if updating:
                if check_only:
                    return existing
                if self.took_over:
                    self._record_taken_over(now, log_file)
                    entry = self.get_deployment(user, service)
                    existing = self._read_record_file(path)
                entry["update"] = OrderedDict([("deployment_id", deployment_id), ("started_at", stamp),
                                               ("request", dict(req)), ("lease", new_lease(now))])
                self._write_entry(entry)
                return existing
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
                ("created_by", deployment_id),
                ("lease", new_lease(now)),
            ])
            if self.took_over:
                self._record_taken_over(now, log_file)
            # The claim first: until the entry says this deployment is live, the claim is stale.
            self._write_claim(req["namespace"], user, service, deployment_id)
            fileutil.write_json(path, record)
            self._write_entry(new_entry)
            return record

    @staticmethod
    def _would_be_record(req, deployment_id, status=STATUS_CREATING, **fields):
        """The tenant record a run checked in check mode would hold."""
        record = reqmod.record_fields(req)
        record["status"] = status
        record["deployment_id"] = deployment_id
        record.update(fields)
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

    def _update_entry(self, entry, user, service, deployment_id, stamp, **changes):
        if entry is None or entry.get("deployment_id") != deployment_id:
            raise StoreError("no deployment status entry of deployment %s for user %s, service %s (%s)"
                             % (deployment_id, reqmod.echo(user), reqmod.echo(service),
                                self.entry_path(user, service)))
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
        with self._locked(check_only):
            if not check_only:
                self._migrate()
            entry = self.get_deployment(user, service)
            running = _update_of(entry, deployment_id)
            # An update rewrites the live cluster's record; the entry keeps the record it replaces
            # so that a failed update can put it back.
            first_sync = running is not None and "previous_record" not in running
            if check_only and (entry is None or running is None and entry.get("deployment_id") != deployment_id):
                # a check: stage 0 wrote nothing, so there is no record of this run to sync
                return self._would_be_record(req, deployment_id, resources=resources or {}, synced_at=stamp)
            path, record = self._owned_record(user, service, entry["deployment_id"] if first_sync else deployment_id)
            previous_record = OrderedDict(record) if first_sync else None
            record.update(reqmod.record_fields(req))
            record["status"] = STATUS_CREATING if running is None else STATUS_CREATED
            record["deployment_id"] = deployment_id
            record["resources"] = resources or {}
            record["synced_at"] = stamp
            if check_only:
                return record
            if running is None:
                self._update_entry(entry, user, service, deployment_id, stamp)
            else:
                if first_sync:
                    running["previous_record"] = previous_record
                entry["updated_at"] = stamp
            self._write_entry(entry)
            fileutil.write_json(path, record)
            return record

    # ----------------------------------------------------------------- stage 10
    def complete(self, request, deployment_id, now=None, check_only=False):
        """Mark the cluster ``created`` in the tenant record (with ``sync_time``) and in its entry."""
        req = reqmod.validate(request)
        user, service = req["user"], req["service_name"]
        stamp = timestamp(now)
        with self._locked(check_only):
            if not check_only:
                self._migrate()
            entry = self.get_deployment(user, service)
            if check_only and (entry is None or _update_of(entry, deployment_id) is None and
                               entry.get("deployment_id") != deployment_id):
                # a check: stage 0 wrote nothing, so there is no record of this run to complete
                return self._would_be_record(req, deployment_id, status=STATUS_CREATED, sync_time=stamp), entry
            path, record = self._owned_record(user, service, deployment_id)
            running = _update_of(entry, deployment_id)
            record["status"] = STATUS_CREATED
            record["sync_time"] = stamp
            if check_only:
                return record, entry
            if running is not None:
                # The update's deployment becomes the live one; the cluster keeps its creation facts.
                entry.pop("update")
                entry.setdefault("created_by", entry.get("deployment_id"))
                entry.update(deployment_id=deployment_id, request=running["request"], stage=None, error=None,
                             last_update=OrderedDict([("deployment_id", deployment_id), ("status", STATUS_CREATED),
                                                      ("started_at", running.get("started_at")),
                                                      ("finished_at", stamp)]))
            entry = self._update_entry(entry, user, service, deployment_id, stamp,
                                       status=STATUS_CREATED, stage=None, error=None)
            entry.pop("lease", None)
            fileutil.write_json(path, record)
            self._write_entry(entry)
            return record, entry

    # ----------------------------------------------------------------- rollback
    def fail(self, user, service_name, namespace, deployment_id, stage, error, now=None, check_only=False):
        """Record a failed run.

        * An invalid user or service name (a refused request) has no tenant: nothing is written
          (its failed report goes under ``reports.REFUSED_IDENTITY``).

        * The tenant record is deleted only when it belongs to this pair and this deployment.
        * The pair's entry becomes ``failed`` with ``stage`` and ``error`` unless it is live
          (creating/created) for another deployment: a refused second run never touches the
          first run's status or a created cluster.
        * This deployment's namespace claim is released.

        Returns ``{"deployment": entry, "record_deleted": bool, "status_changed": bool}``.
        """
        user = "" if user is None else str(user)
        service_name = "" if service_name is None else str(service_name)
        namespace = "" if namespace is None else str(namespace)
        deployment_id = "" if deployment_id is None else str(deployment_id)
        stamp = timestamp(now)
        result = {"deployment": None, "record_deleted": False, "status_changed": False}
        if not (reqmod.is_valid_name(user) and reqmod.is_valid_name(service_name)):
            return result
        with self._locked(check_only):
            if not check_only:
                self._migrate()
            entry = self.get_deployment(user, service_name)
            running = _update_of(entry, deployment_id)
            if running is not None:
                # A failed update: the cluster stays created with its previous record; the failure
                # is on record in the entry (and in the failed report).
                entry.pop("update")
                entry["last_update"] = OrderedDict([
                    ("deployment_id", deployment_id), ("status", STATUS_FAILED), ("stage", _truncate(stage, 200)),
                    ("error", _truncate(error)), ("started_at", running.get("started_at")), ("finished_at", stamp)])
                entry["updated_at"] = stamp
                result["deployment"] = entry
                if not check_only:
                    self._write_entry(entry)
                    if running.get("previous_record") is not None:
                        fileutil.write_json(self.tenant_path(user, service_name), running["previous_record"])
                return result
            path = self.tenant_path(user, service_name)
            record = self._read_record_file(path)
            if (record is not None and record.get("user") == user and record.get("service_name") == service_name
                    and record.get("deployment_id") == deployment_id):
                if not check_only:
                    fileutil.remove(path)
                result["record_deleted"] = True
            if (entry is not None and entry.get("deployment_id") != deployment_id
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
            same_run = entry is not None and entry.get("deployment_id") == deployment_id
            new_entry["created_at"] = entry.get("created_at", stamp) if same_run else stamp
            new_entry["updated_at"] = stamp
            new_entry["reports_dir"] = self.reports_dir
            if same_run and "request" in entry:
                new_entry["request"] = entry["request"]
            result["deployment"] = new_entry
            result["status_changed"] = True
            if not check_only:
                self._write_entry(new_entry)
                held = {namespace, entry.get("namespace") if same_run else None}
                for name in sorted(ns for ns in held if ns):
                    self._release_claim(name, user, service_name, deployment_id)
            return result

    # ----------------------------------------------------------------- delete
    def _known_entry(self, user, service_name):
        """The pair's deployment status entry; ``UnknownTenant`` when it has none."""
        entry = None
        if reqmod.is_valid_name(user) and reqmod.is_valid_name(service_name):
            entry = self.get_deployment(user, service_name)
        if entry is None:
            raise UnknownTenant("no cluster %s of user %s in %s: nothing to delete"
                                % (reqmod.echo(service_name), reqmod.echo(user), self.data_dir))
        return entry

    def begin_delete(self, user, service_name, deployment_id, now=None, check_only=False, log_file=None):
        """Start deleting the pair's cluster: its status becomes ``deleting``, under ``deployment_id``.

        Refused with nothing written: a pair without a status (``UnknownTenant``, found before the
        lock is taken, so not even the lock file is made), a cluster that another deployment is
        creating or deleting, one already deleted, and one whose namespace another live cluster
        holds now (a failed cluster's namespace is free for others, and its objects are theirs).
        A ``created`` or ``failed`` cluster is deleted. The entry keeps ``namespace``, ``request``
        and ``created_at``, names the deleted deployment in ``previous_deployment_id``, and the
        namespace claim passes to this deployment. A create, update or delete of the pair whose run
        died is taken over first (``_take_over``): the delete then removes what is left. Returns the entry.
        """
        check_deployment_id(deployment_id)
        self._known_entry(user, service_name)
        stamp = timestamp(now)
        with self._locked(check_only):
            if not check_only:
                self._migrate()
            entry = self._take_over(self._known_entry(user, service_name), deployment_id,
                                    ("create", "update", "delete"), now)
            status, current, namespace = entry.get("status"), entry.get("deployment_id"), entry.get("namespace")
            if (self.took_over or {}).get("operation") == "delete":
                current = entry.get("previous_deployment_id") or current
            what = "cluster %s of user %s" % (reqmod.echo(service_name), reqmod.echo(user))
            if status == STATUS_CREATING:
                raise StoreError("%s is being created by deployment %s (started %s; %s); wait for it to finish or"
                                 " fail, then delete it" % (what, current, entry.get("created_at"),
                                                            _lease_note(entry, now)))
            if status == STATUS_DELETING:
                raise StoreError("%s is already being deleted by deployment %s (%s)"
                                 % (what, current, _lease_note(entry, now)))
            if running_run(entry) is not None:
                raise StoreError("%s is being updated by deployment %s (%s); wait for it to finish or fail, then"
                                 " delete it" % (what, entry["update"].get("deployment_id"), _lease_note(entry, now)))
            if status == STATUS_DELETED:
                raise StoreError("%s was already deleted (deployment %s, %s)"
                                 % (what, current, entry.get("updated_at")))
            other = self._namespace_holder(namespace, user, service_name)
            if other is not None:
                raise StoreError("namespace %s of %s is now used by cluster %s of user %s (status %s); nothing was"
                                 " deleted" % (reqmod.echo(namespace), what, reqmod.echo(other.get("service_name")),
                                               reqmod.echo(other.get("user")), other.get("status")))
            new_entry = OrderedDict((key, entry.get(key)) for key in ("user", "service_name", "namespace"))
            new_entry["deployment_id"] = deployment_id
            new_entry["status"] = STATUS_DELETING
            new_entry["stage"] = None
            new_entry["error"] = None
            new_entry["created_at"] = entry.get("created_at", stamp)
            new_entry["updated_at"] = stamp
            new_entry["reports_dir"] = self.reports_dir
            if "request" in entry:
                new_entry["request"] = entry["request"]
            new_entry["previous_deployment_id"] = current
            new_entry["lease"] = new_lease(now)
            if not check_only:
                if self.took_over:
                    self._record_taken_over(now, log_file)
                if namespace:
                    self._write_claim(namespace, user, service_name, deployment_id)
                self._write_entry(new_entry)
            return new_entry

    def _remove_pair_record(self, user, service_name, check_only):
        """Delete the pair's tenant record (whichever deployment wrote it); True when there was one."""
        if not (reqmod.is_valid_name(user) and reqmod.is_valid_name(service_name)):
            return False
        path = self.tenant_path(user, service_name)
        record = self._read_record_file(path)
        if record is None or record.get("user") != user or record.get("service_name") != service_name:
            return False
        if not check_only:
            fileutil.remove(path)
        return True

    def _deleting_entry(self, user, service_name, deployment_id):
        entry = self.get_deployment(user, service_name)
        if entry is None or entry.get("deployment_id") != deployment_id or entry.get("status") != STATUS_DELETING:
            raise StoreError("cluster %s of user %s is not being deleted by deployment %s (%s)"
                             % (reqmod.echo(service_name), reqmod.echo(user), deployment_id,
                                self.entry_path(user, service_name)))
        return entry

    def complete_delete(self, user, service_name, deployment_id, now=None, check_only=False):
        """The cluster is gone: tenant record deleted, status ``deleted``, namespace claim released.

        The entry (with ``request`` and ``created_at``), the report index and the reports stay:
        the history. Returns ``{"deployment": entry, "record_deleted": bool}``.
        """
        stamp = timestamp(now)
        with self._locked(check_only):
            if not check_only:
                self._migrate()
            entry = self._deleting_entry(user, service_name, deployment_id)
            entry = self._update_entry(entry, user, service_name, deployment_id, stamp,
                                       status=STATUS_DELETED, stage=None, error=None)
            entry.pop("lease", None)
            deleted = self._remove_pair_record(user, service_name, check_only)
            if not check_only:
                self._write_entry(entry)
                if entry.get("namespace"):
                    self._release_claim(entry["namespace"], user, service_name, deployment_id)
            return {"deployment": entry, "record_deleted": deleted}

    def fail_delete(self, user, service_name, deployment_id, stage, error, now=None, check_only=False):
        """Record a failed delete: status ``failed`` with ``stage`` and ``error``, tenant record deleted,
        namespace claim released (part of the cluster may be gone: it is no longer a working cluster;
        running the delete again removes what is left).

        Only a delete that began (the pair's status is this deployment's ``deleting``) changes anything:
        a refused delete leaves the pair's status as it was. Returns ``{"deployment": entry,
        "record_deleted": bool, "status_changed": bool}``.
        """
        stamp = timestamp(now)
        result = {"deployment": None, "record_deleted": False, "status_changed": False}
        if not (reqmod.is_valid_name(user) and reqmod.is_valid_name(service_name)):
            return result
        entry = self.get_deployment(user, service_name)
        result["deployment"] = entry
        if entry is None or entry.get("deployment_id") != deployment_id:
            return result
        with self._locked(check_only):
            if not check_only:
                self._migrate()
            entry = self._deleting_entry(user, service_name, deployment_id)
            entry = self._update_entry(entry, user, service_name, deployment_id, stamp, status=STATUS_FAILED,
                                       stage=_truncate(stage, 200), error=_truncate(error))
            entry.pop("lease", None)
            result.update(deployment=entry, status_changed=True,
                          record_deleted=self._remove_pair_record(user, service_name, check_only))
            if not check_only:
                self._write_entry(entry)
                if entry.get("namespace"):
                    self._release_claim(entry["namespace"], user, service_name, deployment_id)
            return result

    # ----------------------------------------------------------------- reports
    def check_report_paths(self, log_file, user, service_name):
        """Raise ``fileutil.UnsafePath`` when ``write_report`` of the pair would meet a symlink (the
        lock, ``deployment_reports/``, the pair's index and its folders, the log file), so a report
        task can fail before the callback, which cannot fail a task, meets it. Writes nothing."""
        for path in (os.path.join(self.data_dir, fileutil.LOCK_NAME), os.path.join(self.reports_dir, "-"),
                     self.index_path(user, service_name), log_file or reports.default_log_file(self.data_dir)):
            fileutil.check_path(path, self.data_dir)

    def write_report(self, log_file, report, now=None):
        """Write ``report`` as a new report file, list it in the pair's index, append its log line.

        Under the data folder's lock (migrating the folder first if needed). The file name is
        ``reports.next_filename``: now, or 1 µs past the pair's last report (the last line of its
        index, never a folder listing) when that one sorts at or after now; a name that exists
        already is moved 1 µs on, so nothing is ever overwritten and names sort in report order.
        ``log_file`` defaults to ``<data_dir>/deployment.log``. Returns the report file's path.
        """
        reports.check(report)
        log_file = log_file or reports.default_log_file(self.data_dir)
        user, service = report["user"], report["service_name"]
        payload = reports.dumps(report)
        line = reports.log_line(report)
        index = self.index_path(user, service)
        prefix = reports.file_prefix(user, service)
        with fileutil.locked(self.data_dir):
            self._migrate()
            last = None
            for candidate in fileutil.lines_backwards(index, chunk=4096):
                parsed = reports.split_filename(candidate)
                if parsed is not None and parsed[0] == prefix:
                    last = candidate
                    break
            name = reports.next_filename(user, service, last, now)
            while True:
                path = os.path.join(self.reports_dir, name)
                try:
                    fileutil.create_exclusive(path, payload)
                    break
                except OSError as exc:
                    if exc.errno != errno.EEXIST:
                        raise
                    name = reports.bump_filename(name)
            fileutil.append_line(index, name)
            fileutil.append_line(log_file, line)
            self._renew(user, service, report.get("deployment_id"), now)
        return path

    def _renew(self, user, service_name, deployment_id, now=None):
        """Move on the lease of the pair's running run when it is ``deployment_id``'s (under the lock).

        Not durable: a lease lost in a power cut only expires sooner, which is what such a crash means.
        """
        entry = self.get_deployment(user, service_name)
        run = running_run(entry)
        if run is None or run["deployment_id"] != deployment_id or not isinstance(run["lease"], dict):
            return False
        lease = run["lease"]
        if lease.get("released_at"):
            return False
        now = now or utc_now()
        lease["renewed_at"] = timestamp(now)
        lease["expires_at"] = timestamp(now + datetime.timedelta(seconds=LEASE_SECONDS))
        self._write_entry(entry, durable=False)
        return True

    # ----------------------------------------------------------------- crashed runs
    def _take_over(self, entry, deployment_id, operations, now):
        """Whether the pair's run in progress died and is taken over; returns the entry to check the run
        against (as ``_record_taken_over`` will leave it), and sets ``took_over`` (what died:
        ``deployment_id``, ``operation``, ``namespace``, ``stage``, ``error``, ``report``) or None.

        Nothing is written here: the caller records the take-over with ``_record_taken_over`` only
        once every check of its own run has passed, so a refused run leaves the dead one as it was.
        A dead run whose operation is not in ``operations`` is refused naming the way out.
        """
        self.took_over = self._taken_pair = None
        run = dead_run(entry, now)
        if run is None or run["deployment_id"] == deployment_id:
            return entry
        user, service_name, namespace = entry.get("user"), entry.get("service_name"), entry.get("namespace")
        what = "cluster %s of user %s" % (reqmod.echo(service_name), reqmod.echo(user))
        if run["operation"] not in operations:
            raise StoreError("%s was being deleted by deployment %s, whose run died (%s); run the delete again to"
                             " finish it" % (what, run["deployment_id"], run["why"]))
        last = [item["report"].get("status") for item in self.list_reports(user, service_name, run["deployment_id"])]
        error = "the run died: %s%s; deployment %s took over" % (
            run["why"], ", after its report %s" % last[-1] if last else " before its first report", deployment_id)
        self.took_over = OrderedDict([("deployment_id", run["deployment_id"]), ("operation", run["operation"]),
                                      ("namespace", namespace), ("stage", DIED_STAGE), ("error", error),
                                      ("report", None)])
        self._taken_pair = (user, service_name)
        entry = OrderedDict(entry)
        if run["operation"] == "update":
            entry.pop("update")
        else:
            entry["status"] = STATUS_FAILED
        return entry

    def _record_taken_over(self, now, log_file):
        """Record the dead run of ``took_over`` as it would have recorded its own failure, at stage
        ``run_died`` with the cause: a create's status becomes ``failed`` (its tenant record deleted,
        its namespace claim released), an update's failure goes to ``last_update`` (the cluster stays
        created, its previous record put back), a delete's status becomes ``failed``; then its
        ``failed`` report and log line are written under its own deployment id (under the lock the
        caller holds). What it left in Kubernetes is for the caller's flow to remove."""
        run = self.took_over
        (user, service_name), namespace, error = self._taken_pair, run["namespace"], run["error"]
        flow = "delete" if run["operation"] == "delete" else "create"
        if flow == "delete":
            self.fail_delete(user, service_name, run["deployment_id"], DIED_STAGE, error, now=now)
        else:
            self.fail(user, service_name, namespace, run["deployment_id"], DIED_STAGE, error, now=now)
        report = reports.build("failed", {"user": user, "service_name": service_name, "namespace": namespace},
                               run["deployment_id"], message=reports.failed_message(DIED_STAGE, error, flow),
                               details=OrderedDict([("stage", DIED_STAGE), ("error", error)]), now=now)
        self.took_over["report"] = os.path.basename(self.write_report(log_file, report, now))

    def release(self, user, service_name, deployment_id, now=None):
        """Release the lease of the pair's running ``deployment_id`` (its host is gone): the next create or
        delete of the pair takes it over at once. Refused for another deployment, and for a run whose
        process is still running on this host (stop it first). Returns the entry."""
        stamp = timestamp(now)
        with fileutil.locked(self.data_dir):
            self._migrate()
            entry = self.get_deployment(user, service_name)
            run = running_run(entry)
            what = "cluster %s of user %s" % (reqmod.echo(service_name), reqmod.echo(user))
            if run is None or run["deployment_id"] != deployment_id:
                raise StoreError("deployment %s is not running for %s (running: %s); nothing to release"
                                 % (reqmod.echo(deployment_id), what, run["deployment_id"] if run else "none"))
            lease = run["lease"] if isinstance(run["lease"], dict) else OrderedDict()
            alive, why = lease_state(run["lease"], run["since"], now)
            if alive and lease.get("host") == host_identity()[0]:
                raise StoreError("deployment %s of %s is still running (%s); stop it first"
                                 % (deployment_id, what, why))
            lease["released_at"] = stamp
            if run["operation"] == "update":
                entry["update"]["lease"] = lease
            else:
                entry["lease"] = lease
            self._write_entry(entry)
            return entry


def query(data_dir, user=None, service_name=None, deployment_id=None, log_file=None, log_lines=20):
    """Where is my cluster? The one answer of the module, the lookup and any CLI.

    Returns ``{"deployments": [...], "tenant": record or None, "reports": [{"file", "path",
    "report"}, ...], "latest_report": ..., "log_tail": [...]}``.

    * ``deployments``: ``list_deployments(user, service_name)``.
    * With both ``user`` and ``service_name`` (a pair): ``tenant`` is its record, ``reports``
      its reports in write order from its index (only those of ``deployment_id`` when given),
      ``latest_report`` the last of them that belongs to the deployment its status names (a run
      refused at stage 0 has its own deployment id and never becomes the pair's latest report;
      without a status, or with ``deployment_id``, simply the last one),
      and ``log_tail`` the log lines of its last ``log_lines`` reports (of every deployment),
      each ``reports.log_line(report)``, exactly the line appended when the report was written.
      Only the pair's files are read; the log is not.
    * Otherwise ``log_tail`` is the last ``log_lines`` lines of ``log_file`` (default
      ``<data_dir>/deployment.log``), of ``user`` or ``service_name`` when one is given.
    """
    store = MetadataStore(data_dir)
    if log_lines is None:
        log_lines = 20
    result = {"deployments": store.list_deployments(user, service_name), "tenant": None, "reports": [],
              "latest_report": None, "log_tail": []}
    if user is not None and service_name is not None:
        found = store.list_reports(user, service_name)
        result["tenant"] = store.get_tenant(user, service_name)
        result["reports"] = [item for item in found
                             if deployment_id is None or item["report"].get("deployment_id") == deployment_id]
        current = result["deployments"][0].get("deployment_id") if result["deployments"] else None
        own = [item for item in result["reports"] if item["report"].get("deployment_id") == current]
        latest = own or result["reports"]
        result["latest_report"] = latest[-1] if latest else None
        if log_lines > 0:
            result["log_tail"] = [reports.log_line(item["report"]) for item in found[-log_lines:]]
    else:
        result["log_tail"] = reports.log_tail(log_file or reports.default_log_file(store.data_dir), user,
                                              service_name, log_lines)
    return result
