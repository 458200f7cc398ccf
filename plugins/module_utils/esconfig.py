# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Merge a tenant's ``elasticsearch.yml`` and ``jvm.options`` with ours.

``elasticsearch.yml`` may be nested YAML or flat dotted keys (Elasticsearch
accepts both); everything is normalised to flat dotted keys. Three layers,
highest priority first:

1. ``required``: our settings, which always win (``cluster.name``,
   ``network.host``, ``discovery.type``, ``path.data``, ...);
2. the tenant's file;
3. ``defaults``: our settings the tenant may change.

A key is taken from a layer only if it does not collide with a key already
taken from a higher one. Keys collide when equal or when one is a dotted
prefix of the other (``xpack.security: x`` against ``xpack.security.enabled``:
Elasticsearch refuses such a pair). Tenant keys matching a ``protected``
pattern (``fnmatch``, e.g. ``discovery.*``) are dropped and reported as
refused; the other tenant keys that were dropped, or replaced by a different
value, are reported as overridden. The output is flat YAML with sorted keys, byte-for-byte
deterministic.

``jvm.options`` lines are checked the way Elasticsearch parses them (blank,
``#`` comment, ``-option`` or ``<java version range>:-option``). Options in
``required_jvm`` (the heap, ``-Xms``/``-Xmx``) replace tenant options of the
same kind (``-Xmx4g`` vs ``-Xmx1g``, ``-XX:+Foo`` vs ``-XX:-Foo``, ``-Dx=1`` vs
``-Dx=2``) and the replaced tenant options are reported.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import fnmatch
import json
import re

try:
    import yaml

    HAS_YAML = True
    YAML_IMPORT_ERROR = None
    _SafeLoader = yaml.SafeLoader
except ImportError as exc:  # pragma: no cover - depends on the environment
    HAS_YAML = False
    YAML_IMPORT_ERROR = str(exc)
    _SafeLoader = object


class ConfigError(Exception):
    """The tenant's configuration cannot be used; ``message`` says why and where."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class _UniqueKeyLoader(_SafeLoader):
    """SafeLoader refusing duplicate keys in a mapping (Elasticsearch refuses them too)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "unhashable key", key_node.start_mark)
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, "duplicate key %r" % (key,), key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


if HAS_YAML:
    _UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _key_text(key):
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        raise ConfigError("a setting has an empty (null) key")
    return "%s" % (key,)


def flatten(mapping, source="settings"):
    """Nested or dotted mapping -> ``{dotted.key: value}``; refuses a key given twice."""
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = _key_text(key)
            if not name or name.startswith(".") or name.endswith(".") or ".." in name:
                raise ConfigError("%s: invalid setting name %r" % (source, prefix + name))
            full = prefix + name
            if isinstance(value, dict):
                walk(value, full + ".")
                continue
            if full in flat:
                raise ConfigError("%s: setting %s is given twice (nested and dotted)" % (source, full))
            flat[full] = value

    if mapping:
        walk(mapping, "")
    keys = set(flat)
    for key in sorted(flat):
        parts = key.split(".")
        for index in range(1, len(parts)):
            parent = ".".join(parts[:index])
            if parent in keys:
                raise ConfigError("%s: setting %s has a value and also sub-settings such as %s"
                                  % (source, parent, key))
    return flat


def parse_yaml(text, source="elasticsearch.yml"):
    """Tenant YAML text -> flat settings; refuses anything but a mapping."""
    if text is None:
        return {}
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError("%s is not valid YAML: %s" % (source, exc))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("%s is not a YAML mapping of settings (found %s)" % (source, type(data).__name__))
    return flatten(data, source)


def _norm(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return "%s" % (value,)
    return json.dumps(value, sort_keys=True, default=str)


def _collides(key, taken, taken_prefixes):
    if key in taken or key in taken_prefixes:
        return True
    parts = key.split(".")
    for index in range(1, len(parts)):
        if ".".join(parts[:index]) in taken:
            return True
    return False


def _colliding_required(key, required):
    for other in required:
        if other == key or other.startswith(key + ".") or key.startswith(other + "."):
            return other
    return None


def is_protected(key, protected):
    """Whether a tenant key falls under a ``protected`` pattern: it matches one, or it is a
    dotted parent of what one covers (``xpack.security`` under ``xpack.security.*``)."""
    return any(fnmatch.fnmatchcase(key, pattern) or pattern.startswith(key + ".") for pattern in protected or ())


def merge(required, defaults, pulled_yaml_text, source="elasticsearch.yml", protected=()):
    """Merge; return ``(final_text, overridden_keys, tenant_keys, refused_keys)``.

    ``overridden_keys``: sorted tenant keys replaced by a different value of
    ``required`` (or colliding with one); ``refused_keys``: sorted tenant keys
    under a ``protected`` pattern, dropped whatever they say unless they repeat
    our value; ``tenant_keys``: sorted flat keys of the tenant file. A key is in
    at most one of the first two.
    """
    req = flatten(required or {}, "required settings")
    dflt = flatten(defaults or {}, "default settings")
    tenant = parse_yaml(pulled_yaml_text, source)
    final = {}
    prefixes = set()

    def take(key, value):
        final[key] = value
        parts = key.split(".")
        for index in range(1, len(parts)):
            prefixes.add(".".join(parts[:index]))

    for key in sorted(req):
        take(key, req[key])
    overridden = []
    refused = []
    for key in sorted(tenant):
        value = tenant[key]
        if is_protected(key, protected):
            if not (key in req and _norm(req[key]) == _norm(value)):
                refused.append(key)
            continue
        if _collides(key, final, prefixes):
            other = _colliding_required(key, req)
            if other != key or _norm(req[key]) != _norm(value):
                overridden.append(key)
            continue
        take(key, value)
    for key in sorted(dflt):
        if not _collides(key, final, prefixes):
            take(key, dflt[key])
    final = {k: v for k, v in final.items() if v != {}}
    text = yaml.safe_dump(final, default_flow_style=False, sort_keys=True, allow_unicode=True) if final else ""
    return text, sorted(overridden), sorted(tenant), sorted(refused)


# ---------------------------------------------------------------------------- jvm.options
_JVM_LINE = re.compile(r"^(?:(\d+)(-)?(\d+)?:)?(-\S.*)$")


def jvm_key(option):
    """What an option sets, so that two settings of the same thing compare equal."""
    match = _JVM_LINE.match(option.strip())
    opt = match.group(4).strip() if match else option.strip()
    for prefix in ("-Xms", "-Xmx", "-Xss", "-Xmn"):
        if opt.startswith(prefix):
            return prefix
    if opt.startswith("-XX:"):
        body = opt[4:]
        if body[:1] in ("+", "-"):
            body = body[1:]
        return "-XX:" + body.split("=", 1)[0]
    if opt.startswith("-D"):
        return opt.split("=", 1)[0]
    if opt.startswith("--") and "=" in opt:
        return opt
    return opt.split("=", 1)[0] if "=" in opt else opt


def parse_jvm(text, source="jvm.options"):
    """Check ``jvm.options`` text line by line; return its lines."""
    if not isinstance(text, str):
        raise ConfigError("%s is not text" % source)
    if "\0" in text:
        raise ConfigError("%s contains NUL bytes; not a text file" % source)
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not _JVM_LINE.match(stripped):
            raise ConfigError("%s line %d is not a JVM option (expected '-option' or '<version>:-option'): %r"
                              % (source, number, stripped[:80]))
    return lines


def merge_jvm(pulled_text, required_jvm, source="jvm.options"):
    """Return ``(text or None, overridden_options)``.

    ``None`` only when there is neither a tenant file nor a required option.
    """
    required_jvm = [opt.strip() for opt in (required_jvm or []) if opt and opt.strip()]
    for opt in required_jvm:
        if not _JVM_LINE.match(opt):
            raise ConfigError("required JVM option %r is not a JVM option" % opt)
    if pulled_text is None and not required_jvm:
        return None, []
    lines = parse_jvm(pulled_text, source) if pulled_text is not None else []
    required_keys = {}
    for opt in required_jvm:
        required_keys.setdefault(jvm_key(opt), set()).add(opt)
    kept = []
    overridden = []
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key = jvm_key(stripped)
            if key in required_keys:
                match = _JVM_LINE.match(stripped)
                if match.group(4).strip() not in required_keys[key]:
                    overridden.append(stripped)
                continue
        kept.append(line.rstrip())
    while kept and not kept[-1].strip():
        kept.pop()
    out = list(kept)
    if required_jvm:
        out.append("# required by the platform")
        out.extend(required_jvm)
    return "\n".join(out) + "\n", overridden
