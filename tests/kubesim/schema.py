"""Kubernetes 1.32 object schemas for the API simulator (test infrastructure).

The schemas come from the ``kubernetes-validate`` package (JSON Schema
conversions of the upstream OpenAPI). They drive three things: field
validation (unknown fields, wrong types), the strategic-merge-patch metadata
(``x-kubernetes-patch-strategy`` / ``x-kubernetes-patch-merge-key``) and the
``/openapi/v3`` documents that kubectl reads.
"""

import copy
import functools
import json
import os

K8S_SCHEMA_VERSION = "v1.32.0"
REF_PREFIX = "#/$defs/"


def _definitions_path():
    import kubernetes_validate

    base = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
    return os.path.join(base, K8S_SCHEMA_VERSION + "-local", "_definitions.json")


def _normalize(node):
    """Drop the ``null`` alternatives kubernetes-validate adds to every type."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "type" and isinstance(v, list):
                types = [t for t in v if t != "null"]
                out[k] = types[0] if len(types) == 1 else types
            else:
                out[k] = _normalize(v)
        return out
    if isinstance(node, list):
        return [_normalize(v) for v in node]
    return node


@functools.lru_cache(maxsize=1)
def definitions():
    with open(_definitions_path()) as f:
        raw = json.load(f)
    return _normalize(raw["$defs"])


@functools.lru_cache(maxsize=1)
def _gvk_index():
    index = {}
    for name, d in definitions().items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            index[(gvk.get("group", ""), gvk["version"], gvk["kind"])] = name
    return index


def kind_definition_name(group, version, kind):
    return _gvk_index().get((group, version, kind))


def resolve(node):
    """Follow ``$ref`` (also inside a single-element ``allOf``)."""
    seen = 0
    while isinstance(node, dict) and seen < 20:
        seen += 1
        if "$ref" in node:
            node = definitions().get(node["$ref"][len(REF_PREFIX):], {})
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            break
    return node if isinstance(node, dict) else {}


def kind_schema(group, version, kind):
    name = kind_definition_name(group, version, kind)
    return definitions()[name] if name else None


def child_schema(node, key):
    """Schema of ``node[key]`` for an object node, or None if unknown."""
    node = resolve(node)
    props = node.get("properties")
    if props and key in props:
        return props[key]
    addl = node.get("additionalProperties")
    if isinstance(addl, dict):
        return addl
    return None


def list_patch_meta(node, key):
    """``(items_schema, strategies, merge_key)`` for the list at ``node[key]``."""
    field = child_schema(node, key)
    if field is None:
        return None, [], None
    strategy = field.get("x-kubernetes-patch-strategy", "")
    strategies = [s for s in strategy.split(",") if s]
    items = resolve(field).get("items") if "$ref" in field else field.get("items")
    return items, strategies, field.get("x-kubernetes-patch-merge-key")


def list_apply_meta(node, key):
    """``(items_schema, strategies, keys)`` for server-side apply, from
    ``x-kubernetes-list-type`` / ``x-kubernetes-list-map-keys``: ``map``
    lists merge by their keys, ``set`` lists are unions, others are atomic."""
    field = child_schema(node, key)
    if field is None:
        return None, [], None
    items = resolve(field).get("items") if "$ref" in field else field.get("items")
    list_type = field.get("x-kubernetes-list-type")
    if list_type == "map":
        return items, ["merge"], list(field.get("x-kubernetes-list-map-keys") or [])
    if list_type == "set":
        return items, ["merge"], None
    return items, [], None


def field_strategies(node, key):
    field = child_schema(node, key)
    if field is None:
        return []
    return [s for s in field.get("x-kubernetes-patch-strategy", "").split(",") if s]


# -- field validation ---------------------------------------------------------

_GO_TYPES = {"integer": "int32", "string": "string", "boolean": "bool", "number": "float64", "array": "[]",
             "object": "map"}


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value, types):
    if isinstance(types, str):
        types = [types]
    for t in types:
        if t == "string" and isinstance(value, str):
            return True
        if t == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t == "integer" and isinstance(value, float) and value.is_integer():
            return True
        if t == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t == "boolean" and isinstance(value, bool):
            return True
        if t == "array" and isinstance(value, list):
            return True
        if t == "object" and isinstance(value, dict):
            return True
    return False


class FieldReport:
    def __init__(self):
        self.unknown = []  # field paths
        self.type_errors = []  # (path, json type, go type, struct name)
        self.unknown_refs = []  # (containing dict, key) of each unknown field

    def prune(self):
        """Drop the unknown fields, as decoding into the typed object does."""
        for container, key in self.unknown_refs:
            container.pop(key, None)


def _join(path, key):
    return key if not path else path + "." + key


def check_fields(obj, node, path="", report=None, struct="", skip_top=("apiVersion", "kind")):
    """Walk ``obj`` against ``node``: unknown fields and wrong types."""
    if report is None:
        report = FieldReport()
    if obj is None:
        return report
    ref_name = node.get("$ref", "")[len(REF_PREFIX):] if isinstance(node, dict) else ""
    node = resolve(node)
    if not node:
        return report
    if "oneOf" in node:
        if not any(_type_ok(obj, alt.get("type", [])) for alt in node["oneOf"]):
            report.type_errors.append((path, _json_type(obj), "string", struct))
        return report
    types = node.get("type")
    if types and not _type_ok(obj, types):
        first = types if isinstance(types, str) else types[0]
        gotype = ref_name.rsplit(".", 1)[-1] if ref_name else _GO_TYPES.get(first)
        report.type_errors.append((path, _json_type(obj), gotype, struct))
        return report
    if isinstance(obj, dict):
        props = node.get("properties")
        addl = node.get("additionalProperties")
        name = ref_name.rsplit(".", 1)[-1] or struct
        for key, value in obj.items():
            if not path and key in skip_top:
                continue
            if props is not None and key in props:
                check_fields(value, props[key], _join(path, key), report, name)
            elif isinstance(addl, dict):
                check_fields(value, addl, _join(path, key), report, name)
            elif props is not None or addl is False:
                report.unknown.append(_join(path, key))
                report.unknown_refs.append((obj, key))
    elif isinstance(obj, list):
        items = node.get("items")
        if items:
            for i, value in enumerate(obj):
                check_fields(value, items, "%s[%d]" % (path, i), report, struct)
    return report


# -- OpenAPI v3 documents ---------------------------------------------------------


def _to_v3(node):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith(REF_PREFIX):
                out[k] = "#/components/schemas/" + v[len(REF_PREFIX):]
            else:
                out[k] = _to_v3(v)
        return out
    if isinstance(node, list):
        return [_to_v3(v) for v in node]
    return node


def _refs(node, acc):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            name = ref[len(REF_PREFIX):]
            if name not in acc:
                acc.add(name)
                _refs(definitions().get(name, {}), acc)
        for v in node.values():
            _refs(v, acc)
    elif isinstance(node, list):
        for v in node:
            _refs(v, acc)


def _param(name, where="query", required=False, typ="string"):
    return {"name": name, "in": where, "required": required, "schema": {"type": typ}, "uniqueItems": True}


def _response(defname):
    ref = {"$ref": "#/components/schemas/" + defname}
    return {
        "200": {"description": "OK", "content": {"application/json": {"schema": ref}}},
        "401": {"description": "Unauthorized"},
    }


def openapi_v3_document(group, version, resources):
    """OpenAPI v3 for one group/version, shaped like the real server's: paths
    with ``x-kubernetes-group-version-kind`` and the ``fieldValidation``
    parameter kubectl checks for, and the referenced component schemas."""
    prefix = "/api/v1" if group == "" else "/apis/%s/%s" % (group, version)
    paths = {}
    names = set()
    for res in resources:
        defname = kind_definition_name(group, version, res.kind)
        if not defname:
            continue
        names.add(defname)
        gvk = {"group": group, "version": version, "kind": res.kind}
        list_def = kind_definition_name(group, version, res.kind + "List")
        if list_def:
            names.add(list_def)
        base = prefix + ("/namespaces/{namespace}" if res.namespaced else "") + "/" + res.name
        scope = [_param("namespace", "path", True)] if res.namespaced else []
        write_params = [_param("dryRun"), _param("fieldManager"), _param("fieldValidation")]
        collection = {
            "parameters": scope + [_param("pretty")],
            "get": {
                "operationId": "list" + res.kind,
                "parameters": [_param("labelSelector"), _param("fieldSelector"), _param("watch", typ="boolean")],
                "responses": _response(list_def or defname),
                "x-kubernetes-action": "list",
                "x-kubernetes-group-version-kind": gvk,
            },
            "post": {
                "operationId": "create" + res.kind,
                "parameters": write_params,
                "requestBody": {"content": {"*/*": {"schema": {"$ref": "#/components/schemas/" + defname}}}},
                "responses": _response(defname),
                "x-kubernetes-action": "post",
                "x-kubernetes-group-version-kind": gvk,
            },
        }
        item = {
            "parameters": [_param("name", "path", True)] + scope + [_param("pretty")],
            "get": {
                "operationId": "read" + res.kind,
                "responses": _response(defname),
                "x-kubernetes-action": "get",
                "x-kubernetes-group-version-kind": gvk,
            },
            "put": {
                "operationId": "replace" + res.kind,
                "parameters": write_params,
                "requestBody": {"content": {"*/*": {"schema": {"$ref": "#/components/schemas/" + defname}}}},
                "responses": _response(defname),
                "x-kubernetes-action": "put",
                "x-kubernetes-group-version-kind": gvk,
            },
            "patch": {
                "operationId": "patch" + res.kind,
                "parameters": write_params + [_param("force", typ="boolean")],
                "requestBody": {
                    "content": {
                        ct: {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}}
                        for ct in (
                            "application/json-patch+json",
                            "application/merge-patch+json",
                            "application/strategic-merge-patch+json",
                            "application/apply-patch+yaml",
                        )
                    }
                },
                "responses": _response(defname),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
            },
            "delete": {
                "operationId": "delete" + res.kind,
                "parameters": [_param("dryRun"), _param("propagationPolicy"),
                               _param("gracePeriodSeconds", typ="integer")],
                "responses": _response("io.k8s.apimachinery.pkg.apis.meta.v1.Status"),
                "x-kubernetes-action": "delete",
                "x-kubernetes-group-version-kind": gvk,
            },
        }
        paths[base] = collection
        paths[base + "/{name}"] = item
        for sub in res.subresources:
            sub_def = defname
            sub_gvk = gvk
            if sub == "scale":
                sub_def = "io.k8s.api.autoscaling.v1.Scale"
                sub_gvk = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
                names.add(sub_def)
            sub_item = copy.deepcopy(item)
            for verb in ("get", "put", "patch"):
                sub_item[verb]["responses"] = _response(sub_def)
                sub_item[verb]["x-kubernetes-group-version-kind"] = sub_gvk
                sub_item[verb]["operationId"] += sub.capitalize()
            del sub_item["delete"]
            paths[base + "/{name}/" + sub] = sub_item
    names.update(
        [
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
        ]
    )
    closure = set()
    for n in list(names):
        closure.add(n)
        _refs(definitions().get(n, {}), closure)
    schemas = {}
    for n in sorted(closure):
        if n == "io.k8s.apimachinery.pkg.apis.meta.v1.Patch":
            schemas[n] = {"description": "Patch is provided to give a concrete name and type to the patch.",
                          "type": "object"}
        elif n in definitions():
            schemas[n] = _to_v3(definitions()[n])
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": K8S_SCHEMA_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }
