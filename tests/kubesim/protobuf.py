"""Decoding of the Kubernetes protobuf request encoding for the few types
kubectl's typed clients send as protobuf (``kubectl create namespace``,
``create configmap``, ``create secret``). Responses are always JSON, which
those clients accept (test infrastructure)."""

import base64

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


def _varint(data, pos):
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(data):
    """Yield ``(field_number, wire_type, value)`` of a protobuf message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(data, pos)
        elif wt == 2:
            ln, pos = _varint(data, pos)
            val = data[pos:pos + ln]
            pos += ln
        elif wt == 1:
            val = data[pos:pos + 8]
            pos += 8
        elif wt == 5:
            val = data[pos:pos + 4]
            pos += 4
        else:
            raise ProtobufError("unsupported wire type %d" % wt)
        yield num, wt, val


# message layouts: field number -> (json name, kind); kinds: str, bytes, bool, int, map, bmap, [msg], msg name
_LAYOUTS = {
    "ObjectMeta": {1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"),
                   11: ("labels", "map"), 12: ("annotations", "map"), 14: ("finalizers", "[str]")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "[str]")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "map"), 3: ("binaryData", "bmap"),
                  4: ("immutable", "bool")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "bmap"), 3: ("type", "str"), 4: ("stringData", "map"),
               5: ("immutable", "bool")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta")},
}


def _map_entry(raw, binary):
    k = v = ""
    for num, _u, val in fields(raw):
        if num == 1:
            k = val.decode()
        elif num == 2:
            v = base64.b64encode(val).decode() if binary else val.decode()
    return k, v


def decode_message(raw, layout):
    spec = _LAYOUTS[layout]
    out = {}
    for num, _u, val in fields(raw):
        if num not in spec:
            continue
        name, kind = spec[num]
        if kind == "str":
            if val:
                out[name] = val.decode()
        elif kind == "bool":
            out[name] = bool(val)
        elif kind == "[str]":
            out.setdefault(name, []).append(val.decode())
        elif kind in ("map", "bmap"):
            k, v = _map_entry(val, kind == "bmap")
            out.setdefault(name, {})[k] = v
        else:
            out[name] = decode_message(val, kind)
    return out


def decode(body):
    """A JSON-shaped dict from a ``k8s\\x00``-prefixed ``runtime.Unknown``."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing protobuf magic prefix")
    api_version = kind = ""
    raw = b""
    for num, _u, val in fields(body[len(MAGIC):]):
        if num == 1:
            for n, _u, v in fields(val):
                if n == 1:
                    api_version = v.decode()
                elif n == 2:
                    kind = v.decode()
        elif num == 2:
            raw = val
    if kind not in _LAYOUTS:
        raise ProtobufError("protobuf encoding of %s is not supported by kubesim" % (kind or "this object"))
    obj = {"apiVersion": api_version, "kind": kind}
    obj.update(decode_message(raw, kind))
    return obj
