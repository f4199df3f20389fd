"""Safe serialization of IR graphs: a JSON-able description plus a table of named numpy arrays.

No pickle and no code execution: everything is rebuilt from plain JSON values and typed arrays, and
``graph_from_dict`` validates the description before building a Graph. The program file
(``opennpu.runtime.program``) stores the arrays as its binary blobs; the description goes into its manifest.

``graph_to_dict(graph) -> (meta, arrays)``::

    meta = {
      "format": "opennpu.graph", "version": 1,
      "name": str, "inputs": [str], "outputs": [str],
      "tensors": [                       # in graph.tensors order
        {"name": str, "shape": [int] | null, "dtype": str,       # -1 marks a dynamic dim
         "data": <array key> | null,                            # constant value, in the array table
         "quant": null | {"scale": V, "zero_point": V, "axis": int | null, "bits": int | null},
         "dim_names": [str | null] | null}],
      "nodes": [                         # in graph order (topological)
        {"op_type": str, "name": str, "inputs": [str], "outputs": [str], "attrs": {str: V}}],
      "metadata": {str: V},
    }
    arrays = {<array key>: np.ndarray}   # keys "a0", "a1", ...; one entry per distinct array object

A value ``V`` is plain JSON for None, bool, int, finite float, str and list; every other kind is a JSON object
with exactly one tag key:

    {"tuple": [V...]}                  a tuple
    {"float": "inf" | "-inf" | "nan"}  a non-finite float (the JSON stays strict: no NaN/Infinity literals)
    {"scalar": [dtype, V]}             a numpy scalar such as np.float32(0.5)
    {"array": <array key>}             an ndarray, stored in the array table
    {"dict": {str: V}}                 a dict with string keys

Node attributes must be of these kinds (``GraphError`` otherwise). Metadata is best effort: a value of any
other kind (or a dict with non-string keys) is stored as its ``repr`` string, so it loads back as a str.

Arrays are stored little-endian and C-contiguous; their dtypes (and every tensor dtype) come from
``ALLOWED_DTYPES``. Loading rejects unknown or missing keys, wrong JSON types, unknown tags, too deep values,
dtypes outside the allow-list, dangling tensor/array references, unused arrays, nodes out of topological order
and tensors produced twice, all with ``GraphError`` (the program loader reports them as ProgramFormatError).
Op types are not checked against the registry: executing an unknown op raises UnsupportedOpError later.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import GraphError
from .graph import Graph, Node, QuantInfo, Tensor

GRAPH_FORMAT = "opennpu.graph"
GRAPH_FORMAT_VERSION = 1

ALLOWED_DTYPES = frozenset({"bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                            "float16", "float32", "float64"})
MAX_VALUE_DEPTH = 16  # nesting of attribute/metadata values (tuples in lists in dicts...)
MAX_RANK = 32
_INT_LIMIT = 1 << 64  # attribute ints beyond +-2**64 are not meaningful for any op

_TAGS = ("tuple", "float", "scalar", "array", "dict")
_TENSOR_KEYS = frozenset({"name", "shape", "dtype", "data", "quant", "dim_names"})
_QUANT_KEYS = frozenset({"scale", "zero_point", "axis", "bits"})
_NODE_KEYS = frozenset({"op_type", "name", "inputs", "outputs", "attrs"})
_GRAPH_KEYS = frozenset({"format", "version", "name", "inputs", "outputs", "tensors", "nodes", "metadata"})


def check_dtype(dtype: Any, where: str) -> np.dtype:
    """The little-endian numpy dtype for an allow-listed dtype name; GraphError for anything else."""
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise GraphError(f"{where}: dtype {str(dtype)[:40]!r} is not allowed (allowed: {sorted(ALLOWED_DTYPES)})")
    dt = np.dtype(dtype)
    return dt if sys.byteorder == "little" else dt.newbyteorder("<")


def storable_array(arr: np.ndarray, where: str) -> np.ndarray:
    """The array as it is stored: allow-listed dtype, little-endian, C-contiguous."""
    if not isinstance(arr, np.ndarray):
        raise GraphError(f"{where}: expected an ndarray, got {type(arr).__name__}")
    dt = check_dtype(arr.dtype.name, where)
    if arr.ndim > MAX_RANK:
        raise GraphError(f"{where}: rank {arr.ndim} is over the limit of {MAX_RANK}")
    return np.asarray(arr, dtype=dt, order="C")  # (ascontiguousarray would turn 0-d arrays into 1-d)


# ---- values -----------------------------------------------------------------------------------------------

class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._by_id: dict[int, tuple[str, np.ndarray]] = {}

    def array(self, arr: np.ndarray, where: str) -> str:
        hit = self._by_id.get(id(arr))
        if hit is not None and hit[1] is arr:
            return hit[0]
        key = f"a{len(self.arrays)}"
        self.arrays[key] = storable_array(arr, where)
        self._by_id[id(arr)] = (key, arr)  # keep arr alive so its id stays unique
        return key

    def value(self, v: Any, where: str, strict: bool, depth: int = 0) -> Any:
        if depth > MAX_VALUE_DEPTH:
            raise GraphError(f"{where}: value is nested deeper than {MAX_VALUE_DEPTH} levels")
        if isinstance(v, np.generic):  # first: np.float64 is a subclass of float
            if v.dtype.name not in ALLOWED_DTYPES:
                return self._fallback(v, where, strict, f"a numpy scalar of dtype {v.dtype.name}")
            return {"scalar": [v.dtype.name, self.value(v.item(), where, strict, depth + 1)]}
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            if not -_INT_LIMIT < v < _INT_LIMIT:
                return self._fallback(v, where, strict, "an integer beyond 64 bits")
            return int(v)
        if isinstance(v, float):
            if math.isfinite(v):
                return float(v)
            return {"float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if isinstance(v, np.ndarray):
            if v.dtype.name not in ALLOWED_DTYPES:
                return self._fallback(v, where, strict, f"an array of dtype {v.dtype.name}")
            return {"array": self.array(v, where)}
        if isinstance(v, tuple):
            return {"tuple": [self.value(x, where, strict, depth + 1) for x in v]}
        if isinstance(v, list):
            return [self.value(x, where, strict, depth + 1) for x in v]
        if isinstance(v, Mapping):
            if not all(isinstance(k, str) for k in v):
                return self._fallback(v, where, strict, "a dict with non-string keys")
            return {"dict": {k: self.value(x, f"{where}.{k}", strict, depth + 1) for k, x in v.items()}}
        return self._fallback(v, where, strict, f"a {type(v).__name__}")

    @staticmethod
    def _fallback(v: Any, where: str, strict: bool, what: str) -> str:
        if strict:
            raise GraphError(f"{where} is {what}, which cannot be serialized")
        return repr(v)[:4096]


class _Decoder:
    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.used: set[str] = set()

    def array(self, key: Any, where: str) -> np.ndarray:
        if not isinstance(key, str) or key not in self.arrays:
            raise GraphError(f"{where} refers to array {str(key)[:60]!r}, which is not in the array table")
        arr = self.arrays[key]
        if not isinstance(arr, np.ndarray):
            raise GraphError(f"array {key!r} is a {type(arr).__name__}, not an ndarray")
        check_dtype(arr.dtype.name, f"array {key!r}")
        self.used.add(key)
        return arr

    def value(self, v: Any, where: str, depth: int = 0) -> Any:
        if depth > MAX_VALUE_DEPTH:
            raise GraphError(f"{where}: value is nested deeper than {MAX_VALUE_DEPTH} levels")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            if not -_INT_LIMIT < v < _INT_LIMIT:
                raise GraphError(f"{where}: integer is beyond 64 bits")
            return v
        if isinstance(v, float):
            if not math.isfinite(v):
                raise GraphError(f"{where}: non-finite float literal (must be tagged)")
            return v
        if isinstance(v, list):
            return [self.value(x, where, depth + 1) for x in v]
        if not isinstance(v, dict):
            raise GraphError(f"{where}: unexpected JSON value of type {type(v).__name__}")
        if len(v) != 1 or next(iter(v)) not in _TAGS:
            raise GraphError(f"{where}: object with keys {sorted(v)[:5]} is not a known value tag {list(_TAGS)}")
        tag, body = next(iter(v.items()))
        if tag == "tuple":
            if not isinstance(body, list):
                raise GraphError(f"{where}: 'tuple' holds a {type(body).__name__}, not a list")
            return tuple(self.value(x, where, depth + 1) for x in body)
        if tag == "float":
            if body not in ("inf", "-inf", "nan"):
                raise GraphError(f"{where}: 'float' tag holds {str(body)[:20]!r}, not inf/-inf/nan")
            return float(body)
        if tag == "scalar":
            if not (isinstance(body, list) and len(body) == 2):
                raise GraphError(f"{where}: 'scalar' must be [dtype, value]")
            dt = check_dtype(body[0], where)
            x = self.value(body[1], where, depth + 1)
            if isinstance(x, bool) != (dt.kind == "b") or not isinstance(x, (bool, int, float)):
                raise GraphError(f"{where}: scalar value {str(x)[:20]!r} does not fit dtype {body[0]}")
            if dt.kind in "iu" and not (isinstance(x, int) and np.iinfo(dt).min <= x <= np.iinfo(dt).max):
                raise GraphError(f"{where}: scalar value {str(x)[:20]!r} does not fit dtype {body[0]}")
            return dt.type(x)
        if tag == "array":
            return self.array(body, where)
        if not isinstance(body, dict):
            raise GraphError(f"{where}: 'dict' holds a {type(body).__name__}, not an object")
        _check_keys(body, where)
        return {k: self.value(x, f"{where}.{k}", depth + 1) for k, x in body.items()}


# ---- graph -----------------------------------------------------------------------------------------------

def graph_to_dict(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Describe ``graph`` as (JSON-able dict, array table). GraphError for attributes that cannot be stored."""
    enc = _Encoder()
    tensors = []
    for key, t in graph.tensors.items():
        where = f"tensor {key!r}"
        if t.name != key:
            raise GraphError(f"{where} is registered under a different name ({t.name!r})")
        check_dtype(t.dtype, where)
        quant = None
        if t.quant is not None:
            q = t.quant
            quant = {"scale": enc.value(q.scale, f"{where} quant scale", True),
                     "zero_point": enc.value(q.zero_point, f"{where} quant zero_point", True),
                     "axis": None if q.axis is None else int(q.axis),
                     "bits": None if q.bits is None else int(q.bits)}
        tensors.append({
            "name": t.name,
            "shape": None if t.shape is None else [int(d) for d in t.shape],
            "dtype": t.dtype,
            "data": None if t.data is None else enc.array(np.asarray(t.data), f"{where} data"),
            "quant": quant,
            "dim_names": None if t.dim_names is None else [None if d is None else str(d) for d in t.dim_names],
        })
    nodes = []
    for n in graph.nodes:
        where = f"node {n.name!r} ({n.op_type})"
        attrs = {}
        for k, v in n.attrs.items():
            if not isinstance(k, str):
                raise GraphError(f"{where} has a non-string attribute name {k!r}")
            attrs[k] = enc.value(v, f"{where} attribute {k!r}", True)
        nodes.append({"op_type": n.op_type, "name": n.name, "inputs": list(n.inputs), "outputs": list(n.outputs),
                      "attrs": attrs})
    metadata = {str(k): enc.value(v, f"metadata {k!r}", False) for k, v in graph.metadata.items()}
    meta = {"format": GRAPH_FORMAT, "version": GRAPH_FORMAT_VERSION, "name": graph.name,
            "inputs": list(graph.inputs), "outputs": list(graph.outputs), "tensors": tensors, "nodes": nodes,
            "metadata": metadata}
    return meta, enc.arrays


def _obj(v: Any, keys: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise GraphError(f"{where} is a {type(v).__name__}, not an object")
    if set(v) != keys:
        extra, missing = sorted(set(v) - keys), sorted(keys - set(v))
        raise GraphError(f"{where}: " + "; ".join(
            s for s in (f"unknown keys {extra[:5]}" if extra else "", f"missing keys {missing}" if missing else "")
            if s))
    return v


def _check_keys(d: dict, where: str) -> None:
    for k in d:
        if not isinstance(k, str):
            raise GraphError(f"{where} has a non-string key {str(k)[:40]!r}")


def _str(v: Any, where: str, empty: bool = True) -> str:
    if not isinstance(v, str):
        raise GraphError(f"{where} is a {type(v).__name__}, not a string")
    if not empty and not v:
        raise GraphError(f"{where} is empty")
    return v


def _str_list(v: Any, where: str) -> list[str]:
    if not isinstance(v, list):
        raise GraphError(f"{where} is a {type(v).__name__}, not a list")
    return [_str(x, where) for x in v]


def _opt_int(v: Any, where: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not -_INT_LIMIT < v < _INT_LIMIT:
        raise GraphError(f"{where} is not an integer")
    return v


def graph_from_dict(meta: Any, arrays: Mapping[str, np.ndarray]) -> Graph:
    """Rebuild a Graph from ``graph_to_dict`` output, validating it first (GraphError on any problem)."""
    meta = _obj(meta, _GRAPH_KEYS, "graph description")
    if meta["format"] != GRAPH_FORMAT:
        raise GraphError(f"graph description has format {str(meta['format'])[:40]!r}, expected {GRAPH_FORMAT!r}")
    if meta["version"] != GRAPH_FORMAT_VERSION or isinstance(meta["version"], bool):
        raise GraphError(f"graph description version {str(meta['version'])[:20]} is not supported "
                         f"(this opennpu reads version {GRAPH_FORMAT_VERSION})")
    if not isinstance(arrays, Mapping):
        raise GraphError("the array table is not a mapping")
    dec = _Decoder(arrays)
    name = _str(meta["name"], "graph name")

    if not isinstance(meta["tensors"], list):
        raise GraphError("graph 'tensors' is not a list")
    tensors: dict[str, Tensor] = {}
    for i, tm in enumerate(meta["tensors"]):
        tm = _obj(tm, _TENSOR_KEYS, f"tensor #{i}")
        tname = _str(tm["name"], f"tensor #{i} name", empty=False)
        where = f"tensor {tname!r}"
        if tname in tensors:
            raise GraphError(f"{where} is defined twice")
        shape = tm["shape"]
        if shape is not None:
            if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(
                    isinstance(d, int) and not isinstance(d, bool) and -1 <= d < _INT_LIMIT for d in shape):
                raise GraphError(f"{where}: shape must be a list of at most {MAX_RANK} integers >= -1")
            shape = tuple(shape)
        dtype = tm["dtype"]
        check_dtype(dtype, where)
        data = None if tm["data"] is None else dec.array(tm["data"], f"{where} data")
        quant = None
        if tm["quant"] is not None:
            qm = _obj(tm["quant"], _QUANT_KEYS, f"{where} quant")
            scale = dec.value(qm["scale"], f"{where} quant scale")
            zp = dec.value(qm["zero_point"], f"{where} quant zero_point")
            for what, v in (("scale", scale), ("zero_point", zp)):
                if not isinstance(v, (np.ndarray, np.generic, int, float)) or isinstance(v, bool):
                    raise GraphError(f"{where}: quant {what} is a {type(v).__name__}, not a number or array")
            quant = QuantInfo(scale, zp, _opt_int(qm["axis"], f"{where} quant axis"),
                              _opt_int(qm["bits"], f"{where} quant bits"))
        dim_names = tm["dim_names"]
        if dim_names is not None:
            if not isinstance(dim_names, list) or len(dim_names) > MAX_RANK or not all(
                    d is None or isinstance(d, str) for d in dim_names):
                raise GraphError(f"{where}: dim_names must be a list of strings or nulls")
            dim_names = tuple(dim_names)
        tensors[tname] = Tensor(tname, shape, dtype, data, quant, dim_names)

    inputs = _str_list(meta["inputs"], "graph inputs")
    outputs = _str_list(meta["outputs"], "graph outputs")
    for what, names in (("input", inputs), ("output", outputs)):
        for t in names:
            if t not in tensors:
                raise GraphError(f"graph {what} {t!r} is not a defined tensor")
    if len(set(inputs)) != len(inputs):
        raise GraphError("graph inputs list a tensor twice")

    if not isinstance(meta["nodes"], list):
        raise GraphError("graph 'nodes' is not a list")
    available = {k for k, t in tensors.items() if t.is_const} | set(inputs)
    produced: set[str] = set()
    nodes: list[Node] = []
    for i, nm in enumerate(meta["nodes"]):
        nm = _obj(nm, _NODE_KEYS, f"node #{i}")
        op_type = _str(nm["op_type"], f"node #{i} op_type", empty=False)
        nname = _str(nm["name"], f"node #{i} name")
        where = f"node {nname!r} ({op_type})"
        ins = _str_list(nm["inputs"], f"{where} inputs")
        outs = _str_list(nm["outputs"], f"{where} outputs")
        for t in ins:
            if not t:
                continue
            if t not in tensors:
                raise GraphError(f"{where} reads {t!r}, which is not a defined tensor")
            if t not in available:
                raise GraphError(f"{where} reads {t!r} before it is produced (nodes out of topological order)")
        for t in outs:
            if not t:
                continue
            if t not in tensors:
                raise GraphError(f"{where} writes {t!r}, which is not a defined tensor")
            if t in produced or t in available:
                raise GraphError(f"tensor {t!r} is produced twice (or is a constant or graph input)")
            produced.add(t)
        available.update(t for t in outs if t)
        if not isinstance(nm["attrs"], dict):
            raise GraphError(f"{where} attrs is not an object")
        _check_keys(nm["attrs"], f"{where} attrs")
        attrs = {k: dec.value(v, f"{where} attribute {k!r}") for k, v in nm["attrs"].items()}
        nodes.append(Node(op_type, ins, outs, attrs, nname))
    for t in outputs:
        if t not in available:
            raise GraphError(f"graph output {t!r} is never produced")

    if not isinstance(meta["metadata"], dict):
        raise GraphError("graph metadata is not an object")
    _check_keys(meta["metadata"], "graph metadata")
    metadata = {k: dec.value(v, f"metadata {k!r}") for k, v in meta["metadata"].items()}
    unused = sorted(set(arrays) - dec.used)
    if unused:
        raise GraphError(f"array table holds {len(unused)} arrays nothing refers to, e.g. {unused[0][:60]!r}")
    return Graph(name, nodes, tensors, inputs, outputs, metadata)


__all__ = ["ALLOWED_DTYPES", "GRAPH_FORMAT", "GRAPH_FORMAT_VERSION", "check_dtype", "graph_from_dict",
           "graph_to_dict", "storable_array"]
