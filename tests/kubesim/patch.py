"""Patch semantics of the API simulator: JSON merge patch (RFC 7386), JSON
patch (RFC 6902), strategic merge patch with the merge keys and strategies of
the built-in types (read from the schemas), and the field sets used by
server-side apply (test infrastructure)."""

import copy
import json

import jsonpatch

from . import schema


class PatchError(Exception):
    pass


# -- JSON merge patch ---------------------------------------------------------


def merge_patch(target, patch):
    """A value that is not an object replaces the target wholesale (lists
    too), with the null-valued keys inside it pruned, as the real server's
    merge patch (evanphx/json-patch) does."""
    if not isinstance(patch, dict):
        return _prune_nulls(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _prune_nulls(value):
    if isinstance(value, dict):
        return {k: _prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_nulls(v) for v in value]
    return copy.deepcopy(value)


# -- JSON patch -----------------------------------------------------------------


def json_patch(target, operations):
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    try:
        return jsonpatch.JsonPatch(operations).apply(target)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError, TypeError) as e:
        raise PatchError(str(e))


# -- strategic merge patch --------------------------------------------------------

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ORDER = "$setElementOrder/"
DELETE_FROM_PRIMITIVE = "$deleteFromPrimitiveList/"


def _list_meta(node, key, apply):
    if not node:
        return None, [], None
    if apply:
        return schema.list_apply_meta(node, key)
    items, strategies, merge_key = schema.list_patch_meta(node, key)
    return items, strategies, [merge_key] if merge_key else None


def strategic_merge(original, patch, node, apply=False):
    """Apply a strategic merge patch ``patch`` to ``original`` (schema ``node``).
    With ``apply=True`` lists merge by the server-side apply list metadata."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(original, dict):
        original = {}
    directive = patch.get(DIRECTIVE)
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != DIRECTIVE}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError("Unknown patch type: %s in map: %s" % (directive, json.dumps(patch)))
    result = copy.deepcopy(original)
    retain = patch.get(RETAIN_KEYS)
    for key, value in patch.items():
        if key in (DIRECTIVE, RETAIN_KEYS) or key.startswith(SET_ORDER):
            continue
        if key.startswith(DELETE_FROM_PRIMITIVE):
            field = key[len(DELETE_FROM_PRIMITIVE):]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
            continue
        child = schema.child_schema(node, key) if node else None
        if isinstance(value, list):
            items, strategies, merge_keys = _list_meta(node, key, apply)
            if "merge" in strategies:
                result[key] = _merge_list(result.get(key), value, items, merge_keys, apply)
            else:
                result[key] = [_strip_directives(v) for v in value]
            continue
        if isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, child, apply)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
            continue
        result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _strip_directives(value):
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not (k in (DIRECTIVE, RETAIN_KEYS) or k.startswith(SET_ORDER) or k.startswith(DELETE_FROM_PRIMITIVE))
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return copy.deepcopy(value)


def _same_item(o, p, keys):
    """``o`` is the list item ``p`` names (keys missing in ``p`` are not compared,
    so a defaulted key such as a port's protocol still matches)."""
    present = [k for k in keys if k in p]
    return isinstance(o, dict) and bool(present) and all(o.get(k) == p[k] for k in present)


def _merge_list(original, patch, items, merge_keys, apply=False):
    original = copy.deepcopy(original) if isinstance(original, list) else []
    if any(isinstance(p, dict) and p.get(DIRECTIVE) == "replace" for p in patch):
        return [_strip_directives(p) for p in patch if not (isinstance(p, dict) and DIRECTIVE in p)]
    if not merge_keys:
        # a set of primitives (e.g. finalizers): union, keeping order
        result = original
        for p in patch:
            if isinstance(p, dict) and p.get(DIRECTIVE) == "delete":
                continue
            if p not in result:
                result.append(copy.deepcopy(p))
        return result
    result = original
    for p in patch:
        if not isinstance(p, dict):
            raise PatchError("map items expected for a list merged by key %r" % merge_keys[0])
        if not any(k in p for k in merge_keys):
            raise PatchError("map: %s does not contain declared merge key: %s" % (json.dumps(p), merge_keys[0]))
        idx = next((i for i, o in enumerate(result) if _same_item(o, p, merge_keys)), None)
        if p.get(DIRECTIVE) == "delete":
            if idx is not None:
                del result[idx]
            continue
        if idx is None:
            result.append(_strip_directives(p))
        else:
            result[idx] = strategic_merge(result[idx], p, items, apply)
    return result


# -- server-side apply field sets ------------------------------------------------------


def field_set(obj, node):
    """The ``fieldsV1`` set of the fields present in ``obj`` (real format:
    ``f:name`` for fields, ``k:{...}`` for keyed list items, ``v:...`` for set
    members; ``{}`` marks a leaf)."""
    out = {}
    if not isinstance(obj, dict):
        return out
    for key, value in obj.items():
        fkey = "f:" + key
        child = schema.child_schema(node, key) if node else None
        resolved = schema.resolve(child) if child is not None else None
        if isinstance(value, dict) and value and resolved is not None and \
                resolved.get("x-kubernetes-map-type") == "atomic":
            out[fkey] = {}  # an atomic struct (a label selector, an object reference) is one field
        elif isinstance(value, dict) and value and (
                resolved is None or resolved.get("properties") is not None
                or isinstance(resolved.get("additionalProperties"), dict)):
            out[fkey] = field_set(value, child)
        elif isinstance(value, list) and value:
            items, strategies, merge_keys = _list_meta(node, key, True)
            if merge_keys and all(isinstance(v, dict) and any(k in v for k in merge_keys) for v in value):
                sub = {}
                for v in value:
                    entry = field_set(v, items)
                    entry["."] = {}
                    ident = {k: v[k] for k in merge_keys if k in v}
                    sub["k:" + json.dumps(ident, separators=(",", ":"), sort_keys=True)] = entry
                out[fkey] = sub
            elif "merge" in strategies and all(not isinstance(v, (dict, list)) for v in value):
                out[fkey] = {"v:" + json.dumps(v, separators=(",", ":")): {} for v in value}
            else:
                out[fkey] = {}
        else:
            out[fkey] = {}
    return out


def mark_created(fs, new, old, node, inside_new=False):
    """Add the ``.`` entries an Update operation's field set has on a real
    server, whose field manager compares the object with the live one (with
    the type's zero value on create, ``old`` None) and owns what the update
    created as a whole: a map of values (labels, annotations, data, resource
    lists, ...) or a keyed or set list absent before (on create, a list the
    type's schema requires is there already, as ``null``), and everything
    inside a new list item. A struct is taken to be there already (most are
    not pointers), so a new optional struct (e.g. a Deployment's
    ``strategy.rollingUpdate``) gets no ``.`` here. A field left null or
    removed is not owned (it equals the zero value, or is gone)."""
    for key, sub in list(fs.items()):
        kind, _u, rest = key.partition(":")
        if kind != "f" or not isinstance(new, dict):
            continue
        value = new.get(rest)
        if value is None:
            del fs[key]
            continue
        if not sub:
            continue
        before = old.get(rest) if isinstance(old, dict) else None
        child = schema.child_schema(node, rest) if node else None
        resolved = schema.resolve(child) if child is not None else {}
        required = old is None and rest in (schema.resolve(node).get("required") or []) if node else False
        created = inside_new or (before is None and not required)
        if isinstance(value, dict):
            if created and (inside_new or resolved.get("properties") is None):
                sub["."] = {}
            mark_created(sub, value, before, child, inside_new)
        elif isinstance(value, list):
            if created:
                sub["."] = {}
            items, _u, keys = _list_meta(node, rest, True)
            for item_key, item_sub in sub.items():
                if not item_key.startswith("k:") or not keys:
                    continue
                ident = json.loads(item_key[2:])

                def find(lst, ident=ident):
                    for v in lst if isinstance(lst, list) else []:
                        if isinstance(v, dict) and all(v.get(k) == ident[k] for k in ident):
                            return v
                    return None

                item_old = find(before)
                mark_created(item_sub, find(value), item_old, items, inside_new or item_old is None)
        if not sub:
            del fs[key]  # everything under it was null or removed
    return fs


# what the real field manager never records as owned (its stripMetaManager)
_STRIPPED_META = ("f:name", "f:namespace", "f:creationTimestamp", "f:selfLink", "f:uid", "f:clusterName",
                  "f:generation", "f:managedFields", "f:resourceVersion")


def owned_fields(obj, node):
    """``field_set`` of an object without ``apiVersion``, ``kind`` and the
    metadata the server sets, as ``managedFields`` list them."""
    fs = field_set(obj, node)
    fs.pop("f:apiVersion", None)
    fs.pop("f:kind", None)
    meta = {k: v for k, v in (fs.pop("f:metadata", None) or {}).items() if k not in _STRIPPED_META}
    if meta:
        fs["f:metadata"] = meta
    return fs


def leaf_paths(fs, prefix=()):
    """All paths of a field set, leaves and inner nodes."""
    for key, sub in fs.items():
        if key == ".":
            continue
        path = prefix + (key,)
        yield path
        if sub:
            yield from leaf_paths(sub, path)


def _lookup(fs, path):
    for key in path:
        if not isinstance(fs, dict) or key not in fs:
            return None
        fs = fs[key]
    return fs


def remove_path(obj, path):
    """Remove the field/list item named by a field-set path from ``obj``."""
    cur = obj
    for i, key in enumerate(path):
        last = i == len(path) - 1
        kind, _u, rest = key.partition(":")
        if kind == "f":
            if not isinstance(cur, dict) or rest not in cur:
                return
            if last:
                del cur[rest]
                return
            cur = cur[rest]
        elif kind == "k":
            if not isinstance(cur, list):
                return
            want = json.loads(rest)
            idx = next((j for j, o in enumerate(cur)
                        if isinstance(o, dict) and all(o.get(k) == v for k, v in want.items())), None)
            if idx is None:
                return
            if last:
                del cur[idx]
                return
            cur = cur[idx]
        elif kind == "v":
            if isinstance(cur, list):
                val = json.loads(rest)
                if val in cur:
                    cur.remove(val)
            return


def removed_paths(old_fs, new_fs, others):
    """Top-most paths applied before but not now, and owned by no other manager."""
    out = []

    def walk(old, new, prefix):
        for key, sub in old.items():
            if key == ".":
                continue
            path = prefix + (key,)
            if new is None or key not in new:
                if not any(_lookup(o, path) is not None for o in others):
                    out.append(path)
                elif sub:
                    walk(sub, None, path)
            elif sub:
                walk(sub, new[key], path)

    walk(old_fs, new_fs, ())
    return out


def value_at(obj, path):
    cur = obj
    for key in path:
        kind, _u, rest = key.partition(":")
        if kind == "f" and isinstance(cur, dict) and rest in cur:
            cur = cur[rest]
        elif kind == "k" and isinstance(cur, list):
            want = json.loads(rest)
            cur = next((o for o in cur if isinstance(o, dict) and all(o.get(k) == v for k, v in want.items())), None)
            if cur is None:
                return None
        else:
            return None
    return cur


def path_to_field(path):
    parts = []
    for key in path:
        kind, _u, rest = key.partition(":")
        if kind == "f":
            parts.append("." + rest)
        elif kind == "k":
            want = json.loads(rest)
            parts.append("[" + ",".join("%s=%s" % (k, json.dumps(v)) for k, v in want.items()) + "]")
        else:
            parts.append("[" + rest + "]")
    return "".join(parts)
