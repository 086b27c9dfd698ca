"""Tensors on the wire <-> numpy, for the TF Serving and KServe v2 protocols.

Every decoder raises ``RequestError`` (INVALID_ARGUMENT) naming the tensor for anything malformed:
an unknown or unsupported dtype, a value count that does not match the shape, a JSON value of the
wrong kind, bad base64. Strings are numpy object arrays of ``bytes``.

- TF Serving: ``tensorflow.TensorProto`` (``tensor_content`` or the typed ``*_val`` fields, a
  single value broadcast to the shape as TensorFlow does); responses use the typed fields (as
  TensorFlow's ``AsProtoField``), which ``tf.make_ndarray`` and ``.float_val`` readers accept.
- KServe v2 gRPC: ``InferTensorContents`` or ``raw_input_contents`` (BYTES elements with 4-byte
  little-endian length prefixes); responses use ``raw_output_contents``.
- JSON (both REST protocols): nested lists; bytes as ``{"b64": "..."}`` (TF Serving) or strings.
"""

from __future__ import annotations

import base64
import binascii
import struct

import numpy as np

from .status import RequestError, Status

__all__ = ["from_tensor_proto", "to_tensor_proto", "tf_dtype", "from_infer_tensor", "raw_contents",
           "v2_datatype", "from_v2_json", "from_json_value", "to_json_value", "split_raw_bytes"]

# TensorFlow DataType enum values (tensorflow/core/framework/types.proto) -> numpy, and the typed
# field of a TensorProto that holds them
_TF = {1: (np.float32, "float_val"), 2: (np.float64, "double_val"), 3: (np.int32, "int_val"),
       4: (np.uint8, "int_val"), 5: (np.int16, "int_val"), 6: (np.int8, "int_val"), 7: (object, "string_val"),
       9: (np.int64, "int64_val"), 10: (np.bool_, "bool_val"), 17: (np.uint16, "int_val"),
       19: (np.float16, "half_val"), 22: (np.uint32, "uint32_val"), 23: (np.uint64, "uint64_val")}
_TF_OF = {np.dtype(v[0]): k for k, v in _TF.items() if v[0] is not object}

# TensorProto's fixed-width value fields (field numbers in tensor.proto): packed little-endian
# arrays on the wire, read and written without a Python object per value
_PACKED_FIELDS = {"float_val": 5, "double_val": 6}

# KServe v2 datatype names -> numpy, and the InferTensorContents field that holds them
_V2 = {"BOOL": (np.bool_, "bool_contents"), "UINT8": (np.uint8, "uint_contents"),
       "UINT16": (np.uint16, "uint_contents"), "UINT32": (np.uint32, "uint_contents"),
       "UINT64": (np.uint64, "uint64_contents"), "INT8": (np.int8, "int_contents"),
       "INT16": (np.int16, "int_contents"), "INT32": (np.int32, "int_contents"),
       "INT64": (np.int64, "int64_contents"), "FP16": (np.float16, None), "FP32": (np.float32, "fp32_contents"),
       "FP64": (np.float64, "fp64_contents"), "BYTES": (object, "bytes_contents")}
_V2_OF = {np.dtype(v[0]): k for k, v in _V2.items() if v[0] is not object}


def _bad(name: str, message: str) -> RequestError:
    return RequestError(Status.INVALID_ARGUMENT, f"input {name!r}: {message}")


def _shaped(values, shape: tuple[int, ...], dtype, name: str, broadcast: bool = False) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    arr = np.asarray(values, dtype=dtype) if dtype is not object else _object_array(values)
    if arr.size == 1 and count != 1 and broadcast:
        return np.full(shape, arr.reshape(-1)[0], dtype=arr.dtype)
    if arr.size != count:
        raise _bad(name, f"{arr.size} value(s) for shape {list(shape)} ({count} expected)")
    return arr.reshape(shape)


def _object_array(items) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = [bytes(i) for i in items]
    return arr


def _dims(dims, name: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in dims)
    if any(d < 0 for d in shape):
        raise _bad(name, f"shape {list(shape)} has a negative dimension")
    return shape


# -- TF Serving ------------------------------------------------------------------------------------

def from_tensor_proto(t, name: str) -> np.ndarray:
    """A ``tensorflow.TensorProto`` -> numpy."""
    if t.dtype not in _TF:
        raise _bad(name, f"unsupported dtype (TensorFlow DataType {t.dtype})")
    dtype, field = _TF[t.dtype]
    if t.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = _dims((d.size for d in t.tensor_shape.dim), name)
    if t.tensor_content and dtype is not object:
        raw = t.tensor_content
        if len(raw) % np.dtype(dtype).itemsize:
            raise _bad(name, f"tensor_content of {len(raw)} bytes is not a whole number of {np.dtype(dtype).name}")
        values = np.frombuffer(raw, dtype=dtype)
    elif field == "half_val":
        values = np.asarray(list(t.half_val), np.uint16).view(np.float16)
    elif field in _PACKED_FIELDS and (raw := _packed(t.SerializeToString(), _PACKED_FIELDS[field])) is not None \
            and len(raw) == np.dtype(dtype).itemsize * len(getattr(t, field)):
        values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    else:
        values = list(getattr(t, field))
        if dtype is not object:
            try:
                values = np.asarray(values).astype(dtype, casting="unsafe")
            except (ValueError, OverflowError) as e:
                raise _bad(name, f"values do not fit {np.dtype(dtype).name}: {e}") from None
    if shape is None:
        shape = (len(values),)
    return _shaped(values, shape, dtype, name, broadcast=True)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _packed(data: bytes, field: int) -> bytes | None:
    """The payloads of a length-delimited field in a serialised message, joined; None if the field
    is absent or not length-delimited (unpacked values: the caller reads the parsed message)."""
    parts, pos = [], 0
    try:
        while pos < len(data):
            key, pos = _read_varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _read_varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                n, pos = _read_varint(data, pos)
                if number == field:
                    parts.append(data[pos:pos + n])
                pos += n
            else:
                return None
    except ValueError:
        return None
    return b"".join(parts) if parts else None


def tf_dtype(dtype) -> int:
    """numpy dtype (or "string") -> TensorFlow DataType enum value."""
    if dtype == "string" or np.dtype(dtype).kind in ("O", "S"):
        return 7
    return _TF_OF[np.dtype(dtype)]


def to_tensor_proto(arr: np.ndarray):
    """numpy -> ``tensorflow.TensorProto`` with the typed value field."""
    from tensorflow.core.framework import tensor_pb2

    arr = np.asarray(arr)
    t = tensor_pb2.TensorProto(dtype=tf_dtype(arr.dtype))
    for d in arr.shape:
        t.tensor_shape.dim.add(size=int(d))
    field = _TF[t.dtype][1]
    flat = arr.reshape(-1)
    if field in _PACKED_FIELDS:  # the values as one packed field, without a Python float per value
        raw = np.ascontiguousarray(flat, dtype=np.dtype(arr.dtype).newbyteorder("<")).tobytes()
        body = t.SerializeToString() + _varint(_PACKED_FIELDS[field] << 3 | 2) + _varint(len(raw)) + raw
        return tensor_pb2.TensorProto.FromString(body)
    if field == "string_val":
        t.string_val.extend(bytes(v) for v in flat)
    elif field == "half_val":
        t.half_val.extend(flat.view(np.uint16).tolist())
    else:
        getattr(t, field).extend(flat.tolist())
    return t


# -- KServe v2 -------------------------------------------------------------------------------------

def v2_datatype(dtype) -> str:
    """numpy dtype (or "string") -> KServe v2 datatype name."""
    if dtype == "string" or np.dtype(dtype).kind in ("O", "S"):
        return "BYTES"
    return _V2_OF[np.dtype(dtype)]


def split_raw_bytes(raw: bytes, name: str) -> list[bytes]:
    """BYTES elements, each a 4-byte little-endian length and its bytes."""
    items, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise _bad(name, "truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise _bad(name, "BYTES element runs past the end of the data")
        items.append(raw[pos:pos + n])
        pos += n
    return items


def _v2_decode(datatype: str, shape: tuple[int, ...], raw: bytes | None, contents, name: str) -> np.ndarray:
    if datatype not in _V2:
        raise _bad(name, f"unsupported datatype {datatype!r} (supported: {', '.join(_V2)})")
    dtype, field = _V2[datatype]
    if raw is not None:
        if dtype is object:
            return _shaped(split_raw_bytes(raw, name), shape, object, name)
        if len(raw) % np.dtype(dtype).itemsize:
            raise _bad(name, f"{len(raw)} raw bytes are not a whole number of {datatype}")
        return _shaped(np.frombuffer(raw, dtype=dtype), shape, dtype, name)
    if field is None:
        raise _bad(name, f"{datatype} travels only as raw contents")
    return _shaped(list(getattr(contents, field)), shape, dtype, name)


def from_infer_tensor(t, raw: bytes | None) -> np.ndarray:
    """A KServe v2 ``ModelInferRequest.InferInputTensor`` (with its raw contents, if sent) -> numpy."""
    return _v2_decode(t.datatype, _dims(t.shape, t.name), raw, t.contents, t.name)


def raw_contents(arr: np.ndarray) -> bytes:
    """numpy -> KServe v2 raw contents (BYTES length-prefixed)."""
    arr = np.asarray(arr)
    if arr.dtype.kind in ("O", "S"):
        return b"".join(struct.pack("<I", len(v)) + bytes(v) for v in arr.reshape(-1))
    return np.ascontiguousarray(arr).tobytes()


def from_v2_json(t: dict, raw: bytes | None) -> np.ndarray:
    """A KServe v2 REST input object (``data`` in JSON, or its binary part) -> numpy."""
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise RequestError(Status.INVALID_ARGUMENT, "every input needs a \"name\"")
    name = t["name"]
    shape, datatype = t.get("shape"), t.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape) or not isinstance(datatype, str):
        raise _bad(name, "needs \"shape\" (a list of integers) and \"datatype\"")
    shape = _dims(shape, name)
    if raw is not None:
        return _v2_decode(datatype, shape, raw, None, name)
    if datatype not in _V2:
        raise _bad(name, f"unsupported datatype {datatype!r}")
    dtype = _V2[datatype][0]
    values = _flatten(t.get("data"), name)
    if dtype is object:
        values = [_json_bytes(v, name) for v in values]
        return _shaped(values, shape, object, name)
    if not all(isinstance(v, (int, float, bool)) for v in values):
        raise _bad(name, f"{datatype} data must be numbers")
    return _shaped(values, shape, dtype, name)


def _flatten(data, name: str) -> list:
    if data is None:
        raise _bad(name, "no \"data\"")
    out, todo = [], [data]
    while todo:
        item = todo.pop()
        if isinstance(item, list):
            todo.extend(reversed(item))
        else:
            out.append(item)
    return out


def _json_bytes(v, name: str) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, dict) and set(v) == {"b64"} and isinstance(v["b64"], str):
        try:
            return base64.b64decode(v["b64"], validate=True)
        except binascii.Error as e:
            raise _bad(name, f"bad base64: {e}") from None
    raise _bad(name, f"expected a string or {{\"b64\": ...}}, got {type(v).__name__}")


# -- TF Serving REST (JSON) ------------------------------------------------------------------------

def from_json_value(value, name: str, string: bool) -> np.ndarray:
    """A JSON value (nested lists) -> numpy; ``string``: the input takes bytes ({"b64"} or text)."""
    if string:
        flat = [_json_bytes(v, name) for v in _flatten(value, name)]
        shape = _nested_shape(value)
        if int(np.prod(shape, dtype=np.int64)) != len(flat):
            raise _bad(name, "ragged nested lists")
        return _object_array(flat).reshape(shape)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise _bad(name, "expected numbers in regular nested lists") from None
    return arr.astype(np.float32)


def _nested_shape(value) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def to_json_value(arr: np.ndarray):
    """numpy -> JSON value; bytes as {"b64": ...} (as TF Serving writes them)."""
    arr = np.asarray(arr)
    if arr.dtype.kind in ("O", "S"):
        flat = [{"b64": base64.b64encode(bytes(v)).decode()} for v in arr.reshape(-1)]
        return np.asarray(flat, dtype=object).reshape(arr.shape).tolist()
    return arr.tolist()
