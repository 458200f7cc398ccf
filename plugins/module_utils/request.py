# -*- coding: utf-8 -*-
# Copyright: (c) 2024, ES Serverless platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tenant request: fields, defaults and every validation rule.

This is the single home of the request rules; modules, the callback, the
lookup and any CLI import it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import decimal
import math
import re
from collections import OrderedDict

# field -> default; REQUIRED marks fields without a default.
REQUIRED = object()

REQUEST_FIELDS = OrderedDict([
    ("user", REQUIRED),
    ("service_name", REQUIRED),
    ("namespace", REQUIRED),
    ("replicas", 1),
    ("cpu_request", "500m"),
    ("cpu_limit", "2"),
    ("mem_request", "1Gi"),
    ("mem_limit", "2Gi"),
    ("disk_size", "10Gi"),
    ("gpu_count", 0),
    ("dimension", 128),
    ("vector_count", 10000),
    ("index_limit", 100),
    ("tenant_org_id", ""),
])

IDENTITY_FIELDS = ("user", "service_name", "namespace")
QUANTITY_FIELDS = ("cpu_request", "cpu_limit", "mem_request", "mem_limit", "disk_size")

MAX_REPLICAS = 100
MAX_DIMENSION = 4096  # Elasticsearch dense_vector maximum
MAX_INT = 10 ** 15

# (minimum, maximum) per integer field
INT_RANGES = {
    "replicas": (1, MAX_REPLICAS),
    "gpu_count": (0, 1024),
    "dimension": (1, MAX_DIMENSION),
    "vector_count": (0, MAX_INT),
    "index_limit": (1, MAX_INT),
}

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
NAME_RULE = "must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
NAME_DOTS_RULE = "must not contain '..'"
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_LABEL_RULE = ("must be a DNS-1123 label: at most 63 characters of lower-case letters, digits or '-',"
                  " starting and ending with a letter or digit")
ORG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,252}$")
ORG_RULE = ("must be empty or 1-253 characters of letters, digits, '.', '_', ':', '@' or '-',"
            " starting with a letter or digit")
INT_RE = re.compile(r"^[+-]?[0-9]{1,18}$")

# Kubernetes quantity grammar (k8s.io/apimachinery/pkg/api/resource):
#   <signedNumber><suffix>; suffix = binarySI | decimalExponent | decimalSI
QUANTITY_RE = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|m|k|M|G|T|P|E|)$"
)
BINARY_SI = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
DECIMAL_SI = {"m": decimal.Decimal("0.001"), "": decimal.Decimal(1), "k": decimal.Decimal(10) ** 3,
              "M": decimal.Decimal(10) ** 6, "G": decimal.Decimal(10) ** 9, "T": decimal.Decimal(10) ** 12,
              "P": decimal.Decimal(10) ** 15, "E": decimal.Decimal(10) ** 18}
QUANTITY_RULE = ("must be a Kubernetes quantity: a number with an optional suffix"
                 " (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent like e3)")
MAX_QUANTITY_EXPONENT = 30  # far beyond any real resource; keeps arithmetic exact

_CONTEXT = decimal.Context(prec=60)

ECHO_LIMIT = 80


def echo(value, limit=ECHO_LIMIT):
    """repr() of a user-supplied value, truncated so messages stay bounded."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "... (%d characters)" % len(value)
    text = repr(value)
    if len(text) > limit + 2:
        text = text[:limit] + "..."
    return text


class RequestError(ValueError):
    """A request field broke a rule; ``str()`` is ``"<field>: <rule>"``."""

    def __init__(self, field, rule):
        self.field = field
        self.rule = rule
        super(RequestError, self).__init__("%s: %s" % (field, rule))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def parse_quantity(value):
    """Parse a Kubernetes quantity (``"500m"``, ``"2"``, ``"1Gi"``, ``"1e3"``) into a ``Decimal``.

    Raises ``ValueError`` for anything Kubernetes would reject.
    """
    if _is_int(value):
        value = str(value)
    elif isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("not a finite number")
        value = repr(value)
    if not isinstance(value, str):
        raise ValueError("not a string")
    match = QUANTITY_RE.match(value)
    if not match:
        raise ValueError("not a quantity")
    number = decimal.Decimal(match.group("number"))
    suffix = match.group("suffix")
    if suffix in BINARY_SI:
        return _CONTEXT.multiply(number, decimal.Decimal(BINARY_SI[suffix]))
    if suffix in DECIMAL_SI:
        return _CONTEXT.multiply(number, DECIMAL_SI[suffix])
    exponent = int(suffix[1:])
    if abs(exponent) > MAX_QUANTITY_EXPONENT:
        raise ValueError("exponent out of range")
    return _CONTEXT.multiply(number, _CONTEXT.power(decimal.Decimal(10), exponent))


def format_quantity(amount, kind):
    """Human form of a parsed quantity: ``kind`` is ``"cpu"`` (cores) or ``"bytes"``."""
    amount = decimal.Decimal(amount)
    if kind == "bytes":
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            unit = BINARY_SI[suffix]
            if amount >= unit and amount % unit == 0:
                return "%s%s" % (int(amount // unit), suffix)
        if amount == amount.to_integral_value():
            return str(int(amount))
        return format(amount.normalize(), "f")
    if amount == amount.to_integral_value():
        return str(int(amount))
    millis = amount * 1000
    if millis == millis.to_integral_value():
        return "%dm" % int(millis)
    return format(amount.normalize(), "f")


def _check_name(field, value):
    if _is_int(value):
        value = str(value)
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise RequestError(field, "%s (got %s)" % (NAME_RULE, echo(value)))
    if ".." in value:
        raise RequestError(field, "%s (got %s)" % (NAME_DOTS_RULE, echo(value)))
    return value


def check_name(field, value):
    """Validate a user or service name (they become file names). Returns the string."""
    return _check_name(field, value)


def is_valid_name(value):
    return isinstance(value, str) and bool(NAME_RE.match(value)) and ".." not in value


def _check_namespace(value):
    if not isinstance(value, str) or len(value) > 63 or not DNS_LABEL_RE.match(value):
        raise RequestError("namespace", "%s (got %s)" % (DNS_LABEL_RULE, echo(value)))
    return value


def _check_org(value):
    if _is_int(value):
        value = str(value)
    if not isinstance(value, str) or (value != "" and not ORG_RE.match(value)):
        raise RequestError("tenant_org_id", "%s (got %s)" % (ORG_RULE, echo(value)))
    return value


def _check_int(field, value):
    low, high = INT_RANGES[field]
    rule = "must be an integer from %d to %d" % (low, high)
    if isinstance(value, bool):
        raise RequestError(field, "%s, not a boolean (got %s)" % (rule, echo(value)))
    if isinstance(value, float) and value.is_integer():
        number = int(value)
    elif _is_int(value):
        number = value
    elif isinstance(value, str) and INT_RE.match(value):
        number = int(value)
    else:
        raise RequestError(field, "%s (got %s)" % (rule, echo(value)))
    if number < low or number > high:
        raise RequestError(field, "%s (got %s)" % (rule, echo(value)))
    return number


def _check_quantity(field, value):
    kind = "bytes" if field.startswith("mem") or field == "disk_size" else "cpu"
    try:
        amount = parse_quantity(value)
    except (ValueError, decimal.DecimalException):
        raise RequestError(field, "%s (got %s)" % (QUANTITY_RULE, echo(value)))
    if amount <= 0:
        raise RequestError(field, "must be greater than zero (got %s)" % echo(value))
    if kind == "cpu" and amount < decimal.Decimal("0.001"):
        raise RequestError(field, "must be at least 1m, the smallest CPU unit Kubernetes keeps (got %s)"
                           % echo(value))
    if _is_int(value):
        value = str(value)
    elif isinstance(value, float):
        value = repr(value)
    return value, amount


def validate(params):
    """Validate a request and return it normalized.

    ``params`` maps field names to raw values (Ansible may pass strings for
    integers). Missing or ``None`` fields take their default. Unknown fields are
    refused. Returns an ``OrderedDict`` in ``REQUEST_FIELDS`` order with ints as
    ints and quantities as strings. Raises ``RequestError`` on the first broken rule.
    """
    if not isinstance(params, dict):
        raise RequestError("request", "must be a mapping of request fields (got %s)" % echo(params))
    unknown = sorted(str(key) for key in params if key not in REQUEST_FIELDS)
    if unknown:
        raise RequestError(unknown[0], "unknown request field; known fields are %s" % ", ".join(REQUEST_FIELDS))
    values = {}
    for field, default in REQUEST_FIELDS.items():
        value = params.get(field)
        if value is None:
            if default is REQUIRED:
                raise RequestError(field, "is required")
            value = default
        values[field] = value

    result = OrderedDict()
    result["user"] = _check_name("user", values["user"])
    result["service_name"] = _check_name("service_name", values["service_name"])
    result["namespace"] = _check_namespace(values["namespace"])
    result["replicas"] = _check_int("replicas", values["replicas"])
    amounts = {}
    for field in QUANTITY_FIELDS:
        result[field], amounts[field] = _check_quantity(field, values[field])
    for kind, req_field, lim_field in (("cpu", "cpu_request", "cpu_limit"), ("memory", "mem_request", "mem_limit")):
        if amounts[req_field] > amounts[lim_field]:
            raise RequestError(req_field, "%s request %s must not be greater than %s %s"
                               % (kind, echo(result[req_field]), lim_field, echo(result[lim_field])))
    for field in ("gpu_count", "dimension", "vector_count", "index_limit"):
        result[field] = _check_int(field, values[field])
    result["tenant_org_id"] = _check_org(values["tenant_org_id"])

    ordered = OrderedDict()
    for field in REQUEST_FIELDS:
        ordered[field] = result[field]
    return ordered


def identity(req):
    """The identity triple of a request (raw values are kept as given, ``None`` as ``""``)."""
    out = OrderedDict()
    for field in IDENTITY_FIELDS:
        value = req.get(field) if isinstance(req, dict) else None
        out[field] = "" if value is None else (value if isinstance(value, str) else str(value))
    return out


def record_fields(req):
    """The tenant container record fields (spec shape) of a validated request."""
    out = OrderedDict()
    out["user"] = req["user"]
    out["service_name"] = req["service_name"]
    out["namespace"] = req["namespace"]
    out["replicas"] = req["replicas"]
    out["cpu"] = "%s/%s" % (req["cpu_request"], req["cpu_limit"])
    out["memory"] = "%s/%s" % (req["mem_request"], req["mem_limit"])
    out["disk"] = req["disk_size"]
    out["gpu_count"] = req["gpu_count"]
    out["dimension"] = req["dimension"]
    out["vector_count"] = req["vector_count"]
    out["index_limit"] = req["index_limit"]
    out["tenant_org_id"] = req["tenant_org_id"]
    return out


def compare_disk(existing, requested):
    """Check a disk resize of a volume.

    Returns True when ``requested`` is larger than ``existing`` (or there is no existing size), False when
    they are equal. Raises ``RequestError`` on field ``disk_size`` naming both sizes when it would shrink.
    """
    _value, wanted = _check_quantity("disk_size", requested)
    if existing in (None, ""):
        return True
    try:
        current = parse_quantity(existing)
    except (ValueError, decimal.DecimalException):
        raise RequestError("disk_size", "existing volume size %s is not a Kubernetes quantity" % echo(existing))
    if wanted < current:
        raise RequestError("disk_size", "cannot shrink the volume from %s to %s; a PersistentVolumeClaim can only grow"
                           % (existing, requested))
    return wanted > current


# What an update may not change: the namespace (the cluster would have to move) and a smaller disk.
def check_update(previous, req):
    """Refuse an update of the cluster created by ``previous`` to ``req`` that cannot be done in place.

    Raises ``RequestError`` naming the field: another namespace, or a smaller disk.
    """
    before, after = echo(previous.get("namespace")), echo(req["namespace"])
    if req["namespace"] != previous.get("namespace"):
        raise RequestError("namespace", "cannot change from %s to %s for an existing cluster; delete it and"
                           " create it again in the other namespace" % (before, after))
    compare_disk(previous.get("disk_size"), req["disk_size"])


def request_changes(previous, req, fields=None):
    """The request fields whose value differs: ``{field: {"from": old, "to": new}}`` in request order.

    Quantities compare by value (``0.5`` and ``500m`` are the same); ``previous`` None means
    a new cluster (every field is new, reported as an empty mapping: nothing to compare).
    """
    out = OrderedDict()
    if not previous:
        return out
    for field in fields or REQUEST_FIELDS:
        old, new = previous.get(field), req.get(field)
        same = _same_quantity(old, new) if field in QUANTITY_FIELDS else old == new
        if not same:
            out[field] = OrderedDict([("from", old), ("to", new)])
    return out


GPU_RESOURCE = "nvidia.com/gpu"
MAX_INDICES_ANNOTATION = "es.yunpeng.cn/max-indices"


def _same_quantity(have, want):
    try:
        return have is not None and parse_quantity(str(have)) == parse_quantity(str(want))
    except ValueError:
        return False


def statefulset_drift(sts, req, container="elasticsearch", aspects=("replicas", "resources", "max_indices")):
    """How the StatefulSet as the API server holds it differs from the request: a list of sentences.

    ``aspects``: ``replicas``, ``resources`` (cpu/memory requests and limits), ``max_indices``
    (the annotation), ``gpus`` (``nvidia.com/gpu`` request and limit; absent when 0).
    Quantities compare by value, so ``0.5`` and ``500m`` are the same.
    """
    sts = sts or {}
    spec = sts.get("spec") or {}
    found = [c for c in ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
             if c.get("name") == container]
    resources = (found[0].get("resources") or {}) if found else {}
    drift = []
    if "replicas" in aspects and spec.get("replicas") != req["replicas"]:
        drift.append("spec.replicas is %s, requested %s" % (spec.get("replicas"), req["replicas"]))
    if "max_indices" in aspects:
        have = ((sts.get("metadata") or {}).get("annotations") or {}).get(MAX_INDICES_ANNOTATION)
        if have != str(req["index_limit"]):
            drift.append("annotation %s is %s, requested %s" % (MAX_INDICES_ANNOTATION, have, req["index_limit"]))
    wanted = []
    if "resources" in aspects:
        wanted += [("requests", "cpu", req["cpu_request"]), ("requests", "memory", req["mem_request"]),
                   ("limits", "cpu", req["cpu_limit"]), ("limits", "memory", req["mem_limit"])]
    if "gpus" in aspects:
        gpus = int(req["gpu_count"])
        wanted += [("requests", GPU_RESOURCE, gpus or None), ("limits", GPU_RESOURCE, gpus or None)]
    for kind, name, want in wanted:
        have = (resources.get(kind) or {}).get(name)
        if (want is None and have is not None) or (want is not None and not _same_quantity(have, want)):
            drift.append("container %s %s %s is %s, requested %s"
                         % (container, kind, name, have, "none" if want is None else want))
    return drift


def tenant_quota(req, kibana_replicas=0, kibana_requests=None, kibana_limits=None, previous=None):
    """``spec.hard`` of the tenant namespace's ResourceQuota: what the request allows.

    Elasticsearch (``replicas`` times the per-container values, the disk and GPUs) and Kibana
    (``kibana_replicas`` times its ``cpu``/``memory`` requests and limits) together; pods and
    claims counted exactly. With ``previous`` (an update's live request), each value is the larger
    of the two, so the pods of both specifications fit while the StatefulSet rolls.
    Raises ``RequestError`` naming a Kibana value that is not a quantity.
    """
    if previous:
        now = tenant_quota(req, kibana_replicas, kibana_requests, kibana_limits)
        before = tenant_quota(previous, kibana_replicas, kibana_requests, kibana_limits)
        return dict((key, max(now[key], before[key], key=parse_quantity)) for key in now)
    replicas, kibanas = int(req["replicas"]), int(kibana_replicas)
    kibana = {"requests": kibana_requests or {}, "limits": kibana_limits or {}}

    def kibana_total(kind, name):
        if not kibanas:
            return decimal.Decimal(0)
        value = kibana[kind].get(name)
        try:
            return parse_quantity(str(value)) * kibanas
        except ValueError:
            raise RequestError("kibana %s.%s" % (kind, name), "%s (got %s)" % (QUANTITY_RULE, echo(value)))

    hard = {}
    for kind, cpu, memory in (("requests", "cpu_request", "mem_request"), ("limits", "cpu_limit", "mem_limit")):
        hard["%s.cpu" % kind] = format_quantity(parse_quantity(req[cpu]) * replicas + kibana_total(kind, "cpu"), "cpu")
        hard["%s.memory" % kind] = format_quantity(
            parse_quantity(req[memory]) * replicas + kibana_total(kind, "memory"), "bytes")
    hard["requests.storage"] = format_quantity(parse_quantity(req["disk_size"]) * replicas, "bytes")
    hard["persistentvolumeclaims"] = str(replicas)
    hard["pods"] = str(replicas + kibanas)
    hard["requests.%s" % GPU_RESOURCE] = str(int(req["gpu_count"]) * replicas)
    return hard
