"""ONNX importer: ModelProto -> raw IR graph (declared input shapes, initializers and Constant nodes as
constant tensors, attributes as python values).

Op-version differences inside the supported opset range are normalized here into the newest ONNX form,
so kernels see one convention: axes/split/min/max/pads that older opsets carried as attributes become
constant inputs, and Softmax-family ops of opset < 13 (which flattened the input to 2-D at ``axis``) are
rewritten into Flatten -> Softmax -> Reshape. The graph is *not* canonicalized (see ``load_model``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto

from ..errors import GraphError, ModelFormatError, UnsupportedOpError, UnsupportedOpsetError
from ..ir.graph import Graph, Node, Tensor

MIN_OPSET, MAX_OPSET = 11, 21
DEFAULT_DOMAINS = ("", "ai.onnx")

# ONNX TensorProto.DataType -> numpy dtype name (the types the IR can hold).
ONNX_TO_NUMPY: dict[int, str] = {
    TensorProto.FLOAT: "float32", TensorProto.UINT8: "uint8", TensorProto.INT8: "int8",
    TensorProto.UINT16: "uint16", TensorProto.INT16: "int16", TensorProto.INT32: "int32",
    TensorProto.INT64: "int64", TensorProto.BOOL: "bool", TensorProto.FLOAT16: "float16",
    TensorProto.DOUBLE: "float64", TensorProto.UINT32: "uint32", TensorProto.UINT64: "uint64",
}


def onnx_dtype(elem_type: int, what: str) -> str:
    try:
        return ONNX_TO_NUMPY[elem_type]
    except KeyError:
        try:
            tname = TensorProto.DataType.Name(elem_type)
        except ValueError:
            raise ModelFormatError(f"{what}: unknown ONNX data type {elem_type}") from None
        raise UnsupportedOpError(f"{what}: data type {tname} is not supported") from None


# ---- tensors and attributes ------------------------------------------------------------------------------

def tensor_to_array(t: TensorProto, what: str) -> np.ndarray:
    """Decode a TensorProto, validating sizes before anything is allocated."""
    if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
        raise ModelFormatError(f"{what}: weights are stored in an external data file; only self-contained "
                               "models are supported (save with onnx.save(..., save_as_external_data=False))")
    if t.data_type == TensorProto.STRING:
        raise UnsupportedOpError(f"{what}: string tensors are not supported")
    dtype = np.dtype(onnx_dtype(t.data_type, what))
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise ModelFormatError(f"{what}: negative dimension in {dims}")
    count = 1
    for d in dims:
        count *= d
    raw = t.raw_data
    if len(raw):
        need = count * dtype.itemsize
        if len(raw) != need:
            raise ModelFormatError(f"{what}: raw_data has {len(raw)} bytes, but shape {dims} of {dtype.name} "
                                   f"needs {need}")
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
        return arr.reshape(dims)
    if dtype.name in ("float32",):
        vals, src = t.float_data, np.float32
    elif dtype.name == "float64":
        vals, src = t.double_data, np.float64
    elif dtype.name == "int64":
        vals, src = t.int64_data, np.int64
    elif dtype.name in ("uint32", "uint64"):
        vals, src = t.uint64_data, np.uint64
    else:  # int8/16/32, uint8/16, bool, float16 (as raw 16-bit patterns) live in int32_data
        vals, src = t.int32_data, np.int32
    if len(vals) != count:
        raise ModelFormatError(f"{what}: holds {len(vals)} values, but shape {dims} needs {count}")
    arr = np.asarray(vals, dtype=src)
    if dtype.name == "float16":
        arr = arr.astype(np.uint16).view(np.float16)
    else:
        arr = arr.astype(dtype)
    return arr.reshape(dims)


def _attr_value(a: AttributeProto, where: str) -> Any:
    what = f"{where}: attribute {a.name!r}"
    t = a.type
    if t == AttributeProto.FLOAT:
        return float(a.f)
    if t == AttributeProto.INT:
        return int(a.i)
    if t == AttributeProto.STRING:
        return a.s.decode("utf-8", errors="replace")
    if t == AttributeProto.TENSOR:
        return tensor_to_array(a.t, what)
    if t == AttributeProto.FLOATS:
        return [float(v) for v in a.floats]
    if t == AttributeProto.INTS:
        return [int(v) for v in a.ints]
    if t == AttributeProto.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if t == AttributeProto.TENSORS:
        return [tensor_to_array(x, what) for x in a.tensors]
    if t in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        raise UnsupportedOpError(f"{where} has a subgraph (control flow); If/Loop/Scan are not supported yet")
    if t == AttributeProto.UNDEFINED and a.ref_attr_name:
        raise UnsupportedOpError(f"{what} refers to a function attribute; local functions must be inlined")
    raise UnsupportedOpError(f"{what} has unsupported type {AttributeProto.AttributeType.Name(t)}")


def _constant_value(attrs: dict[str, Any], where: str) -> np.ndarray:
    if "value" in attrs:
        return np.asarray(attrs["value"])
    if "value_float" in attrs:
        return np.array(attrs["value_float"], dtype=np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], dtype=np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], dtype=np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], dtype=np.int64)
    if "value_string" in attrs or "value_strings" in attrs:
        raise UnsupportedOpError(f"{where}: string constants are not supported")
    raise ModelFormatError(f"{where}: Constant node without a value")


def _value_info_type(vi: onnx.ValueInfoProto, what: str) -> tuple[str | None, tuple[int, ...] | None,
                                                                  tuple[str | None, ...] | None]:
    """(dtype, shape with -1 for unknown dims, dim names) of a value_info; shape None if not declared."""
    if not vi.type.HasField("tensor_type"):
        kind = vi.type.WhichOneof("value")
        if kind is None:
            return None, None, None
        raise UnsupportedOpError(f"{what} has type {kind}; only tensors are supported")
    tt = vi.type.tensor_type
    dtype = onnx_dtype(tt.elem_type, what) if tt.elem_type else None
    if not tt.HasField("shape"):
        return dtype, None, None
    shape, names = [], []
    for d in tt.shape.dim:
        kind = d.WhichOneof("value")
        if kind == "dim_value" and d.dim_value >= 0:
            shape.append(int(d.dim_value))
            names.append(None)
        else:
            shape.append(-1)
            names.append(d.dim_param if kind == "dim_param" and d.dim_param else None)
    return dtype, tuple(shape), tuple(names) if any(n is not None for n in names) else None


# ---- parsing --------------------------------------------------------------------------------

def _parse(data: bytes | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(data, onnx.ModelProto):
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ModelFormatError(f"not a valid ONNX model: expected bytes, got {type(data).__name__}")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(bytes(data))
    except Exception as e:  # DecodeError, RuntimeWarning-as-error, invalid UTF-8 ...: all mean a bad file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFormatError(f"not a valid ONNX model: {msg}") from None
    return model


def _opset(model: onnx.ModelProto) -> int:
    if not model.HasField("graph") or not (len(model.graph.node) or len(model.graph.output)):
        raise ModelFormatError("not a valid ONNX model: it has no graph (truncated or not an ONNX file)")
    if not len(model.opset_import):
        raise ModelFormatError("not a valid ONNX model: it declares no opset_import (truncated file?)")
    versions = [int(o.version) for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions:
        raise UnsupportedOpsetError("model declares no opset for the default ONNX domain")
    opset = max(versions)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedOpsetError(f"ONNX opset {opset} is not supported ({MIN_OPSET}..{MAX_OPSET} are)")
    return opset


class _Builder:
    def __init__(self, name: str, opset: int):
        self.g = Graph(name)
        self.opset = opset
        self.node_names: set[str] = set()

    # -- names
    def const(self, base: str, value: np.ndarray) -> str:
        name = base
        k = 1
        while name in self.g.tensors:
            name = f"{base}_{k}"
            k += 1
        arr = np.asarray(value)
        self.g.tensors[name] = Tensor(name, tuple(arr.shape), arr.dtype.name, arr)
        return name

    def node_name(self, node: onnx.NodeProto, index: int) -> str:
        base = node.name or (f"{node.op_type}_{index}" if not node.output or not node.output[0]
                             else node.output[0])
        name, k = base, 1
        while name in self.node_names:
            name = f"{base}_{k}"
            k += 1
        self.node_names.add(name)
        return name

    def define(self, name: str, what: str) -> Tensor:
        if name in self.g.tensors:
            raise GraphError(f"tensor {name!r} is defined twice ({what})")
        t = Tensor(name)
        self.g.tensors[name] = t
        return t

    def add(self, op: str, inputs: list[str], outputs: list[str], attrs: dict[str, Any], name: str) -> None:
        self.g.nodes.append(Node(op, inputs, outputs, attrs, name))


def _set_input(ins: list[str], idx: int, name: str) -> list[str]:
    ins = list(ins) + [""] * max(0, idx + 1 - len(ins))
    ins[idx] = name
    return ins


def _normalize(b: _Builder, op: str, ins: list[str], outs: list[str], attrs: dict[str, Any],
               name: str) -> bool:
    """Rewrite old-opset forms into the newest one. Returns True when it emitted the node(s) itself."""
    opset = b.opset
    reduce_ops = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                  "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
    if op in ("Squeeze", "Unsqueeze", "ReduceSum", *reduce_ops) and "axes" in attrs:
        ins[:] = _set_input(ins, 1, b.const(f"{name}_axes", np.array(attrs.pop("axes"), dtype=np.int64)))
    elif op == "Split":
        if "split" in attrs:
            split = np.array(attrs.pop("split"), dtype=np.int64)
            ins[:] = _set_input(ins, 1, b.const(f"{name}_split", split))
        if (len(ins) < 2 or not ins[1]) and "num_outputs" not in attrs:
            attrs["num_outputs"] = len(outs)  # kernels cannot see how many outputs the node declares
        if "num_outputs" in attrs and attrs["num_outputs"] != len(outs):
            raise GraphError(f"node {name!r} (Split): num_outputs={attrs['num_outputs']} but it declares "
                             f"{len(outs)} outputs")
    elif op == "Clip":
        for idx, key in ((1, "min"), (2, "max")):
            if key in attrs:
                ins[:] = _set_input(ins, idx, b.const(f"{name}_{key}", np.array(attrs.pop(key), np.float32)))
    elif op == "Pad" and "pads" in attrs:
        ins[:] = _set_input(ins, 1, b.const(f"{name}_pads", np.array(attrs.pop("pads"), dtype=np.int64)))
        if "value" in attrs:
            ins[:] = _set_input(ins, 2, b.const(f"{name}_value", np.array(attrs.pop("value"), np.float32)))
    elif op in ("Cast", "EyeLike", "RandomNormalLike", "RandomUniformLike", "RandomNormal", "RandomUniform",
                "Multinomial"):
        key = "to" if op == "Cast" else "dtype"
        if isinstance(attrs.get(key), int):
            attrs[key] = onnx_dtype(attrs[key], f"node {name!r} ({op})")
    elif op in ("Softmax", "LogSoftmax", "Hardmax") and opset < 13:
        axis = int(attrs.get("axis", 1))
        if axis == -1:
            attrs["axis"] = -1
            return False
        # Old semantics: flatten to 2-D at `axis`, normalize each row, restore the shape.
        shp, flat, soft = (f"{name}__shape", f"{name}__flat", f"{name}__2d")
        for t in (shp, flat, soft):
            b.define(t, f"output of the rewrite of {name!r}")
        b.add("Shape", [ins[0]], [shp], {}, f"{name}__shape")
        b.add("Flatten", [ins[0]], [flat], {"axis": axis}, f"{name}__flatten")
        b.add(op, [flat], [soft], {"axis": -1}, name)
        b.add("Reshape", [soft, shp], outs[:1], {}, f"{name}__reshape")
        return True
    return False


def import_onnx(data: bytes | onnx.ModelProto, name: str = "model") -> Graph:
    """Parse an ONNX model (bytes or ModelProto) into a raw IR graph."""
    model = _parse(data)
    opset = _opset(model)
    if len(model.functions):
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as e:
            raise ModelFormatError(f"cannot inline the model's local functions: {e}") from None
    if len(model.graph.sparse_initializer):
        raise UnsupportedOpError("sparse initializers are not supported")
    graph_proto = model.graph
    b = _Builder(name, opset)
    g = b.g
    producer = " ".join(s for s in (model.producer_name, model.producer_version) if s)
    g.metadata.update({"format": "onnx", "opset": opset, "producer": producer,
                       "ir_version": int(model.ir_version),
                       "opset_import": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import}})

    for init in graph_proto.initializer:
        if not init.name:
            raise GraphError("an initializer has an empty name")
        if init.name in g.tensors:
            raise GraphError(f"initializer {init.name!r} is defined twice")
        arr = tensor_to_array(init, f"initializer {init.name!r}")
        g.tensors[init.name] = Tensor(init.name, tuple(arr.shape), arr.dtype.name, arr)

    for vi in graph_proto.input:
        if not vi.name:
            raise GraphError("a graph input has an empty name")
        if vi.name in g.tensors:
            if g.tensors[vi.name].is_const:
                continue  # an initializer listed as input (IR < 4 style) is a constant, not a graph input
            raise GraphError(f"graph input {vi.name!r} is listed twice")
        dtype, shape, names = _value_info_type(vi, f"graph input {vi.name!r}")
        g.tensors[vi.name] = Tensor(vi.name, shape, dtype or "float32", None, None, names)
        g.inputs.append(vi.name)

    declared: dict[str, str] = {}
    for vi in list(graph_proto.value_info) + list(graph_proto.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type in ONNX_TO_NUMPY:
            declared[vi.name] = ONNX_TO_NUMPY[vi.type.tensor_type.elem_type]

    unsupported: dict[str, int] = {}
    from ..ir.ops import REGISTRY

    for idx, node in enumerate(graph_proto.node):
        nname = b.node_name(node, idx)
        where = f"node {nname!r} ({node.op_type})"
        if node.domain not in DEFAULT_DOMAINS:
            raise UnsupportedOpError(f"{where} is in domain {node.domain!r}; only the default ONNX domain "
                                     "is supported")
        attrs: dict[str, Any] = {}
        for a in node.attribute:
            if not a.name:
                raise ModelFormatError(f"{where} has an attribute with an empty name")
            attrs[a.name] = _attr_value(a, where)
        outs = [str(o) for o in node.output]
        if not any(outs):
            raise GraphError(f"{where} has no outputs")
        if node.op_type == "Constant":
            value = _constant_value(attrs, where)
            if outs[0] in g.tensors:
                raise GraphError(f"tensor {outs[0]!r} is produced by more than one node")
            g.tensors[outs[0]] = Tensor(outs[0], tuple(value.shape), value.dtype.name, value)
            continue
        for o in outs:
            if not o:
                continue
            if o in g.tensors:
                raise GraphError(f"tensor {o!r} is produced by more than one node ({where})")
            t = b.define(o, where)
            if o in declared:
                t.dtype = declared[o]
        ins = [str(i) for i in node.input]
        if _normalize(b, node.op_type, ins, outs, attrs, nname):
            continue
        if node.op_type not in REGISTRY:
            unsupported[node.op_type] = unsupported.get(node.op_type, 0) + 1
        b.add(node.op_type, ins, outs, attrs, nname)

    if unsupported:
        listed = ", ".join(f"{k} (x{v})" for k, v in sorted(unsupported.items()))
        raise UnsupportedOpError(f"unsupported ONNX operators: {listed}")

    for vi in graph_proto.output:
        if not vi.name:
            raise GraphError("a graph output has an empty name")
        if vi.name not in g.tensors:
            raise GraphError(f"graph output {vi.name!r} is never produced")
        g.outputs.append(vi.name)
    if not g.outputs:
        raise GraphError("the graph has no outputs")
    g.toposort()  # raises GraphError on cycles and on inputs nobody defines
    return g
