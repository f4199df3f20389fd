"""Corpus of malformed model files, and the sandboxed runner that feeds them to opennpu.

Every case is generated here from code (no binary files in the repository): truncations, bit flips and
crafted structures for ONNX, TFLite and PyTorch checkpoints. ``tests/test_malformed.py`` writes the corpus
to a temporary directory and runs ``python tests/malformed_corpus.py MANIFEST RESULTS`` for each kind; the
runner caps its address space (RLIMIT_AS), guards every case with ``signal.alarm`` and appends one JSON line
per case event, so the parent can tell a clean error from a crash, a hang or a memory blow-up.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import signal
import struct
import sys
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CASE_TIMEOUT_S = 30
MAX_RSS_GROWTH_MB = 1024  # no single bad file may make the loader grow by more than this
ADDRESS_SPACE_BYTES = 3 << 30

YOLO_SHAPES = {"images": [1, 3, 320, 320]}
BLAZEFACE_MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"

ANY = None  # expectation: any OpenNPUError subclass


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "onnx" | "tflite" | "ckpt"
    build: Callable[[Sources], bytes]
    expect: tuple[str, ...] | None = ANY  # acceptable error class names (matched against the MRO)
    allow_success: bool = False
    suffix: str = ".onnx"
    via: str = "path"  # "path": load_model(str(path)); "bytes": load_model(data)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)


class SourceUnavailable(Exception):
    """A real model file could not be fetched (no network and no cache): its cases are skipped."""


class Sources:
    """Real model files, fetched lazily from the zoo cache (PyPI wheels)."""

    def __init__(self) -> None:
        self._cache: dict[str, bytes] = {}

    def yolov8n(self) -> bytes:
        if "yolo" not in self._cache:
            try:
                from opennpu import zoo

                path = zoo.fetch("yolov8n")
            except Exception:  # fetch not usable: take the member straight out of the wheel
                path = self._extract("nudenet", "3.4.2", "nudenet/320n.onnx")
            self._cache["yolo"] = Path(path).read_bytes()
        return self._cache["yolo"]

    def blazeface(self) -> bytes:
        if "blaze" not in self._cache:
            self._cache["blaze"] = self._extract("mediapipe", "0.10.21", BLAZEFACE_MEMBER).read_bytes()
        return self._cache["blaze"]

    @staticmethod
    def _extract(package: str, version: str, member: str) -> Path:
        from opennpu.zoo.pypi import extract_member

        try:
            return extract_member(package, version, member)
        except Exception as e:
            raise SourceUnavailable(f"{package}=={version}:{member}: {type(e).__name__}: {e}") from None


# ---- byte mutations ---------------------------------------------------------------------------------------

def flip_bits(data: bytes, seed: int, count: int, lo: int = 0, hi: int | None = None) -> bytes:
    rng = random.Random(seed)
    buf = bytearray(data)
    hi = len(buf) if hi is None else min(hi, len(buf))
    for _ in range(count):
        pos = rng.randrange(lo, hi)
        buf[pos] ^= 1 << rng.randrange(8)
    return bytes(buf)


def overwrite(data: bytes, pos: int, new: bytes) -> bytes:
    return data[:pos] + new + data[pos + len(new):]


def garbage(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# ---- ONNX ---------------------------------------------------------------------------------------------------

def _model(nodes, inputs, outputs, inits=(), opset: int = 17, **kw) -> bytes:
    from onnx import helper

    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(inits))
    opsets = kw.pop("opsets", None) or [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, **kw)
    return model.SerializeToString()


def _vi(name: str, shape, elem=None):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT if elem is None else elem, shape)


def _init(name: str, arr):
    import numpy as np
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(arr), name)


def _node(op: str, ins, outs, **attrs):
    from onnx import helper

    return helper.make_node(op, list(ins), list(outs), **attrs)


def small_onnx() -> bytes:
    """A valid little CNN: Conv -> Relu -> MaxPool -> GlobalAveragePool -> Flatten -> Gemm."""
    import numpy as np

    rng = np.random.default_rng(0)
    inits = [_init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             _init("b", rng.standard_normal(4).astype(np.float32)),
             _init("fw", rng.standard_normal((5, 4)).astype(np.float32)),
             _init("fb", rng.standard_normal(5).astype(np.float32))]
    nodes = [_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             _node("Relu", ["c"], ["r"]),
             _node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             _node("GlobalAveragePool", ["p"], ["g"]),
             _node("Flatten", ["g"], ["f"]),
             _node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    return _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", None)], inits)


def _x_model(nodes, inits=(), x_shape=(1, 3, 8, 8), out="y", **kw) -> bytes:
    return _model(nodes, [_vi("x", list(x_shape))], [_vi(out, None)], inits, **kw)


def _cycle() -> bytes:
    return _x_model([_node("Add", ["x", "b"], ["a"]), _node("Relu", ["a"], ["b"]), _node("Relu", ["a"], ["y"])])


def _self_loop() -> bytes:
    return _x_model([_node("Add", ["x", "y"], ["y"])])


def _missing_tensor() -> bytes:
    return _x_model([_node("Add", ["x", "nowhere"], ["y"])])


def _output_never_produced() -> bytes:
    return _model([_node("Relu", ["x"], ["r"])], [_vi("x", [1, 4])], [_vi("ghost", None)])


def _tensor_proto(name: str, dims, data_type=None, raw: bytes | None = None, floats=None):
    from onnx import TensorProto

    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT if data_type is None else data_type
    t.dims.extend(int(d) for d in dims)
    if raw is not None:
        t.raw_data = raw
    if floats is not None:
        t.float_data.extend(floats)
    return t


def _init_model(t, x_shape=(1, 4)) -> bytes:
    return _x_model([_node("Add", ["x", t.name], ["y"])], [t], x_shape=x_shape)


def _raw_mismatch() -> bytes:
    return _init_model(_tensor_proto("k", [2, 2], raw=b"\0" * 12))


def _neg_dims_init() -> bytes:
    return _init_model(_tensor_proto("k", [-4, 4], raw=b"\0" * 64))


def _absurd_init() -> bytes:
    return _init_model(_tensor_proto("k", [1_000_000, 1_000_000], floats=[1.0]))


def _absurd_init_raw() -> bytes:
    return _init_model(_tensor_proto("k", [1_000_000, 1_000_000], raw=b"\0" * 16))


def _int64_inverse_pair() -> tuple[int, int]:
    """Two positive int64 dims whose product wraps to exactly 1 modulo 2**64 (fools int64 size checks)."""
    a = 0x5851F42D4C957F2D  # odd, < 2**63
    b = pow(a, -1, 1 << 64)
    while b >= 1 << 63:
        a += 2
        b = pow(a, -1, 1 << 64)
    return a, b


def _wrap_dims_init() -> bytes:
    a, b = _int64_inverse_pair()
    return _init_model(_tensor_proto("k", [a, b], raw=b"\0" * 4), x_shape=(1, 1))


def _absurd_input() -> bytes:
    return _model([_node("Relu", ["x"], ["y"])], [_vi("x", [1_000_000, 1_000_000])], [_vi("y", None)])


def _huge_dim_input() -> bytes:
    return _model([_node("Relu", ["x"], ["y"])], [_vi("x", [(1 << 63) - 1, 2])], [_vi("y", None)])


def _reshape_absurd() -> bytes:
    return _x_model([_node("Reshape", ["x", "s"], ["y"])], [_init("s", [1_000_000, 1_000_000, 1_000_000])])


def _reshape_wrap() -> bytes:
    import numpy as np

    a, b = _int64_inverse_pair()
    return _x_model([_node("Reshape", ["x", "s"], ["y"])], [_init("s", np.array([a, b], np.int64))],
                    x_shape=(1,))


def _constant_of_shape_absurd() -> bytes:
    import numpy as np

    return _model([_node("ConstantOfShape", ["s"], ["c"]), _node("Add", ["x", "c"], ["y"])],
                  [_vi("x", [1])], [_vi("y", None)], [_init("s", np.array([1_000_000, 1_000_000], np.int64))])


def _expand_absurd() -> bytes:
    import numpy as np

    return _x_model([_node("Expand", ["x", "s"], ["y"])],
                    [_init("s", np.array([1_000_000, 1_000_000], np.int64))], x_shape=(1,))


def _expand_const_absurd() -> bytes:
    import numpy as np

    # all-constant inputs: the constant folder must check the size before it evaluates the kernel
    return _x_model([_node("Expand", ["one", "s"], ["e"]), _node("Add", ["x", "e"], ["y"])],
                    [_init("one", np.ones(1, np.float32)),
                     _init("s", np.array([1_000_000, 1_000_000], np.int64))], x_shape=(1,))


def _tile_absurd() -> bytes:
    import numpy as np

    return _x_model([_node("Tile", ["x", "r"], ["y"])], [_init("r", np.array([1, 1, 100_000, 100_000], np.int64))])


def _pad_absurd() -> bytes:
    import numpy as np

    return _x_model([_node("Pad", ["x", "p"], ["y"])],
                    [_init("p", np.array([0, 0, 1_000_000, 1_000_000, 0, 0, 1_000_000, 1_000_000], np.int64))])


def _resize_absurd() -> bytes:
    import numpy as np

    return _x_model([_node("Resize", ["x", "", "s"], ["y"], mode="nearest")],
                    [_init("s", np.array([1, 1, 100_000, 100_000], np.float32))])


def _conv_transpose_absurd() -> bytes:
    import numpy as np

    return _x_model([_node("ConvTranspose", ["x", "w"], ["y"], strides=[1_000_000, 1_000_000])],
                    [_init("w", np.ones((3, 2, 3, 3), np.float32))])


def _split_many_outputs() -> bytes:
    return _x_model([_node("Split", ["x"], ["y", "z"], axis=1, num_outputs=1_000_000_000)])


def _duplicate_outputs() -> bytes:
    return _x_model([_node("Relu", ["x"], ["y"]), _node("Sigmoid", ["x"], ["y"])])


def _duplicate_graph_outputs() -> bytes:
    return _model([_node("Relu", ["x"], ["y"])], [_vi("x", [1, 4])], [_vi("y", None), _vi("y", None)])


def _unknown_op() -> bytes:
    return _x_model([_node("FrobnicateTensor", ["x"], ["y"])])


def _unknown_domain() -> bytes:
    from onnx import helper

    node = helper.make_node("Relu", ["x"], ["y"], domain="com.example.evil")
    return _x_model([node], opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.evil", 1)])


def _opset(v: int) -> Callable[[Sources], bytes]:
    return lambda s: _x_model([_node("Relu", ["x"], ["y"])], opset=v)


def _no_default_opset() -> bytes:
    from onnx import helper

    return _x_model([_node("Relu", ["x"], ["y"])], opsets=[helper.make_opsetid("com.example", 1)])


def _conv(attrs: dict, w_shape=(4, 3, 3, 3), x_shape=(1, 3, 8, 8)) -> bytes:
    import numpy as np

    return _x_model([_node("Conv", ["x", "w"], ["y"], **attrs)], [_init("w", np.ones(w_shape, np.float32))],
                    x_shape=x_shape)


def _wrong_attr_type_conv() -> bytes:
    return _conv({"strides": "two"})


def _wrong_attr_type_concat() -> bytes:
    return _x_model([_node("Concat", ["x", "x"], ["y"], axis=[1.5, 2.5])])


def _wrong_attr_type_transpose() -> bytes:
    import numpy as np
    from onnx import helper, numpy_helper

    node = _node("Transpose", ["x"], ["y"])
    node.attribute.append(helper.make_attribute("perm", numpy_helper.from_array(np.arange(4, dtype=np.int64))))
    return _x_model([node])


def _wrong_attr_type_cast() -> bytes:
    return _x_model([_node("Cast", ["x"], ["y"], to=999)])


def _concat_no_axis() -> bytes:
    return _x_model([_node("Concat", ["x", "x"], ["y"])])


def _cast_no_to() -> bytes:
    return _x_model([_node("Cast", ["x"], ["y"])])


def _rank9_input() -> bytes:
    return _model([_node("Relu", ["x"], ["y"])], [_vi("x", [1] * 9)], [_vi("y", None)])


def _rank9_unsqueeze() -> bytes:
    import numpy as np

    return _x_model([_node("Unsqueeze", ["x", "a"], ["y"])], [_init("a", np.arange(4, 9, dtype=np.int64))])


def _external_data() -> bytes:
    from onnx import TensorProto

    t = _tensor_proto("k", [1, 4])
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../../etc/passwd"), ("offset", "0"), ("length", "16")):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return _init_model(t)


def _string_initializer() -> bytes:
    from onnx import TensorProto

    t = _tensor_proto("k", [2], data_type=TensorProto.STRING)
    t.string_data.extend([b"hello", b"world"])
    return _x_model([_node("Identity", ["k"], ["y"])], [t])


def _string_input() -> bytes:
    from onnx import TensorProto

    return _model([_node("Identity", ["x"], ["y"])], [_vi("x", [2], TensorProto.STRING)], [_vi("y", None)])


def _unknown_dtype_initializer() -> bytes:
    return _init_model(_tensor_proto("k", [1, 4], data_type=999, raw=b"\0" * 16))


def _constant_without_value() -> bytes:
    return _x_model([_node("Constant", [], ["c"]), _node("Add", ["x", "c"], ["y"])])


def _subgraph_attr() -> bytes:
    from onnx import helper

    body = helper.make_graph([_node("Relu", ["x"], ["o"])], "body", [], [_vi("o", None)])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=body)
    return _model([node], [_vi("cond", [], 9), _vi("x", [1, 4])], [_vi("y", None)])


def _recursive_function() -> bytes:
    from onnx import helper

    body = [helper.make_node("Rec", ["a"], ["b"], domain="local")]
    fn = helper.make_function("local", "Rec", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    node = helper.make_node("Rec", ["x"], ["y"], domain="local")
    return _x_model([node], opsets=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                    functions=[fn])


def _gather_out_of_range() -> bytes:
    import numpy as np

    return _x_model([_node("Gather", ["d", "i"], ["g"], axis=0), _node("Add", ["x", "g"], ["y"])],
                    [_init("d", np.ones((4, 4), np.float32)), _init("i", np.array([1000], np.int64))],
                    x_shape=(1, 4))


def _matmul_mismatch() -> bytes:
    import numpy as np

    return _x_model([_node("MatMul", ["x", "w"], ["y"])], [_init("w", np.ones((5, 2), np.float32))],
                    x_shape=(1, 4))


def _empty_graph() -> bytes:
    return _model([], [], [])


def _empty_op_type() -> bytes:
    return _x_model([_node("", ["x"], ["y"])])


def _long_chain() -> bytes:
    nodes = [_node("Relu", ["x" if i == 0 else f"t{i}"], [f"t{i + 1}"]) for i in range(20_000)]
    nodes.append(_node("Identity", ["t20000"], ["y"]))
    return _x_model(nodes, x_shape=(1, 4))


def _range_absurd() -> bytes:
    import numpy as np

    return _x_model([_node("Range", ["a", "b", "c"], ["r"]), _node("Cast", ["r"], ["rf"], to=1),
                     _node("Add", ["x", "rf"], ["y"])],
                    [_init("a", np.array(0, np.int64)), _init("b", np.array(10**12, np.int64)),
                     _init("c", np.array(1, np.int64))], x_shape=(1,))


def _topk_huge() -> bytes:
    import numpy as np

    return _x_model([_node("TopK", ["x", "k"], ["y", "i"], axis=-1)], [_init("k", np.array([10**12], np.int64))])


def _split_negative() -> bytes:
    import numpy as np

    return _x_model([_node("Split", ["x", "s"], ["y", "z"], axis=1)], [_init("s", np.array([-1, 4], np.int64))])


def _reduce_axis_out_of_range() -> bytes:
    import numpy as np

    return _x_model([_node("ReduceMean", ["x", "a"], ["y"])], [_init("a", np.array([7], np.int64))], opset=18)


def _flatten_axis_huge() -> bytes:
    return _x_model([_node("Flatten", ["x"], ["y"], axis=100)])


def _softmax_old_axis_huge() -> bytes:
    return _x_model([_node("Softmax", ["x"], ["y"], axis=10)], opset=11)


def _maxpool_zero_kernel() -> bytes:
    return _x_model([_node("MaxPool", ["x"], ["y"], kernel_shape=[0, 0])])


def _pb_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _pb_field(num: int, payload: bytes | int) -> bytes:
    """One protobuf field: varint for ints, length-delimited for bytes."""
    if isinstance(payload, int):
        return _pb_varint(num << 3) + _pb_varint(payload)
    return _pb_varint(num << 3 | 2) + _pb_varint(len(payload)) + payload


def _deep_subgraphs(depth: int = 150) -> bytes:
    """If nodes nested ``depth`` deep through then_branch, written at the wire level (the protobuf library
    refuses to build messages nested deeper than 100)."""
    from onnx import helper

    leaf = helper.make_graph([_node("Relu", ["x"], ["o0"])], "leaf", [], [_vi("o0", None)]).SerializeToString()
    graph_attr_type = 5  # AttributeProto.GRAPH

    def branch(name: str, graph: bytes) -> bytes:  # AttributeProto: name=1, type=20, g=6
        return _pb_field(5, _pb_field(1, name.encode()) + _pb_field(20, graph_attr_type) + _pb_field(6, graph))

    graph = leaf
    for i in range(1, depth + 1):  # NodeProto: input=1, output=2, op_type=4; GraphProto: node=1, name=2, output=12
        out = b"y" if i == depth else f"o{i}".encode()
        node = (_pb_field(1, b"cond") + _pb_field(2, out) + _pb_field(4, b"If")
                + branch("then_branch", graph) + branch("else_branch", leaf))
        graph = _pb_field(1, node) + _pb_field(2, f"g{i}".encode()) + _pb_field(12, _pb_field(1, out))
    # the outer graph's inputs/outputs come from a normal model; a second `graph` field merges into it
    base = _model([], [_vi("cond", [], 9), _vi("x", [1, 4])], [_vi("y", None)])
    return base + _pb_field(7, _pb_field(1, node))


def _reducemax_empty_const() -> bytes:
    import numpy as np

    return _x_model([_node("ReduceMax", ["e"], ["m"], keepdims=0), _node("Add", ["x", "m"], ["y"])],
                    [_init("e", np.zeros((0, 4), np.float32))], x_shape=(1, 4), opset=18)


def _init_is_node_output() -> bytes:
    import numpy as np

    return _x_model([_node("Relu", ["x"], ["k"]), _node("Add", ["x", "k"], ["y"])],
                    [_init("k", np.ones((1, 4), np.float32))], x_shape=(1, 4))


def _duplicate_initializer() -> bytes:
    import numpy as np

    return _x_model([_node("Add", ["x", "k"], ["y"])],
                    [_init("k", np.ones((1, 4), np.float32)), _init("k", np.ones((1, 4), np.float32))],
                    x_shape=(1, 4))


def _sum_many_inputs() -> bytes:
    return _x_model([_node("Sum", ["x"] * 100_000, ["y"])], x_shape=(1, 4))


def _wrong_attr_type_transpose_str() -> bytes:
    return _x_model([_node("Transpose", ["x"], ["y"], perm="abcd")])


def _wrong_message_type() -> bytes:
    """A serialized TensorProto: valid protobuf, but not a ModelProto."""
    import numpy as np

    return _init("k", np.arange(64, dtype=np.float32)).SerializeToString()


def _onnx_cases() -> list[Case]:
    cases: list[Case] = []

    def add(cid: str, build: Callable[[Sources], bytes], expect=ANY, **kw) -> None:
        cases.append(Case(f"onnx-{cid}", "onnx", build, expect, **kw))

    mf, ge, sh, big = ("ModelFormatError",), ("GraphError",), ("ShapeError",), ("TensorTooLargeError",)
    uo, uos = ("UnsupportedOpError",), ("UnsupportedOpsetError",)

    add("small-valid", lambda s: small_onnx(), allow_success=True)
    for frac in (0.01, 0.25, 0.5, 0.75, 0.99):
        add(f"small-trunc-{int(frac * 100)}pct", lambda s, f=frac: small_onnx()[: max(1, int(len(small_onnx()) * f))],
            mf)
    add("small-trunc-minus1", lambda s: small_onnx()[:-1], mf)
    for cut in (2, 16, 4096):
        add(f"yolov8n-trunc-{cut}B", lambda s, c=cut: s.yolov8n()[:c], mf, input_shapes=YOLO_SHAPES)
    for frac in (0.1, 0.5, 0.9):
        add(f"yolov8n-trunc-{int(frac * 100)}pct", lambda s, f=frac: s.yolov8n()[: int(len(s.yolov8n()) * f)], mf,
            input_shapes=YOLO_SHAPES)
    add("yolov8n-trunc-minus1", lambda s: s.yolov8n()[:-1], mf, input_shapes=YOLO_SHAPES)
    add("yolov8n-trunc-minus1-bytes", lambda s: s.yolov8n()[:-1], mf, via="bytes", input_shapes=YOLO_SHAPES)
    for seed in range(8):
        add(f"small-bitflip-seed{seed}", lambda s, sd=seed: flip_bits(small_onnx(), sd, 1 + sd % 4),
            allow_success=True)
    for seed in range(3):  # the node table sits in the first ~50 KB of the file, weights after it
        add(f"yolov8n-bitflip-nodes-seed{seed}", lambda s, sd=seed: flip_bits(s.yolov8n(), sd, 4, 16, 50_000),
            allow_success=True, input_shapes=YOLO_SHAPES)
    add("empty-file", lambda s: b"", mf)
    add("empty-bytes", lambda s: b"", mf, via="bytes")
    for seed in range(3):
        add(f"garbage-seed{seed}", lambda s, sd=seed: garbage(sd, 4096), mf)
    add("garbage-bytes", lambda s: garbage(7, 4096), mf, via="bytes")
    add("zeros", lambda s: b"\0" * 1024, mf)
    add("all-ff", lambda s: b"\xff" * 1024, mf)
    add("text", lambda s: b"this is not a model\n" * 20, mf)
    add("zip-header", lambda s: b"PK\x03\x04" + garbage(3, 200), mf)
    add("wrong-message-type", _w(_wrong_message_type), mf)
    add("cycle", _w(_cycle), ge)
    add("self-loop", _w(_self_loop), ge)
    add("missing-tensor", _w(_missing_tensor), ge)
    add("output-never-produced", _w(_output_never_produced), ge)
    add("raw-data-length-mismatch", _w(_raw_mismatch), mf)
    add("initializer-negative-dims", _w(_neg_dims_init), mf)
    # an initializer claiming 1e12 elements but holding a few bytes is refused before allocation; either
    # reason (size or inconsistency) is a correct diagnosis
    add("initializer-absurd-dims", _w(_absurd_init), mf + big)
    add("initializer-absurd-dims-raw", _w(_absurd_init_raw), mf + big)
    add("initializer-dims-int64-wrap", _w(_wrap_dims_init), mf + big)
    add("input-absurd-dims", _w(_absurd_input), big)
    add("input-int64max-dim", _w(_huge_dim_input), big)
    add("reshape-absurd", _w(_reshape_absurd), sh)
    add("reshape-int64-wrap", _w(_reshape_wrap), sh)
    add("constant-of-shape-absurd", _w(_constant_of_shape_absurd), big)
    add("expand-absurd", _w(_expand_absurd), big)
    add("expand-const-absurd", _w(_expand_const_absurd), big)
    add("tile-absurd", _w(_tile_absurd), big)
    add("pad-absurd", _w(_pad_absurd), big)
    add("resize-absurd", _w(_resize_absurd), big)
    add("convtranspose-absurd-stride", _w(_conv_transpose_absurd), big)
    add("split-1e9-outputs", _w(_split_many_outputs))
    add("duplicate-node-outputs", _w(_duplicate_outputs), ge)
    add("duplicate-graph-outputs", _w(_duplicate_graph_outputs), allow_success=True)
    add("unknown-op", _w(_unknown_op), uo)
    add("unknown-domain", _w(_unknown_domain), uo)
    add("opset-7", _opset(7), uos)
    add("opset-99", _opset(99), uos)
    add("no-default-opset", _w(_no_default_opset), uos)
    add("conv-channel-mismatch", lambda s: _conv({}, w_shape=(4, 5, 3, 3)), sh)
    add("conv-kernel-larger-than-input", lambda s: _conv({}, w_shape=(4, 3, 9, 9)), sh)
    add("conv-zero-stride", lambda s: _conv({"strides": [0, 0]}), sh)
    add("conv-group-zero", lambda s: _conv({"group": 0}), sh)
    add("conv-negative-pads", lambda s: _conv({"pads": [-5, -5, -5, -5]}), sh)
    add("conv-weight-rank-1", lambda s: _conv({}, w_shape=(4,)), sh)
    add("attr-wrong-type-conv-strides", _w(_wrong_attr_type_conv))
    add("attr-wrong-type-concat-axis", _w(_wrong_attr_type_concat))
    # a tensor holding the right integers is a harmless spelling of INTS: accepting it is fine
    add("attr-wrong-type-transpose-perm-tensor", _w(_wrong_attr_type_transpose), allow_success=True)
    add("attr-wrong-type-transpose-perm-string", _w(_wrong_attr_type_transpose_str))
    add("attr-cast-unknown-dtype", _w(_wrong_attr_type_cast))
    add("missing-attr-concat-axis", _w(_concat_no_axis))
    add("missing-attr-cast-to", _w(_cast_no_to))
    add("rank9-input", _w(_rank9_input), sh)
    add("rank9-unsqueeze", _w(_rank9_unsqueeze), sh)
    add("external-data", _w(_external_data), mf)
    add("string-initializer", _w(_string_initializer), uo)
    add("string-input", _w(_string_input), uo)
    add("initializer-unknown-dtype", _w(_unknown_dtype_initializer), mf)
    add("constant-without-value", _w(_constant_without_value), mf)
    add("subgraph-attribute", _w(_subgraph_attr), uo)
    add("recursive-local-function", _w(_recursive_function))
    add("gather-index-out-of-range", _w(_gather_out_of_range))
    add("matmul-shape-mismatch", _w(_matmul_mismatch), sh)
    add("empty-graph", _w(_empty_graph))
    add("empty-op-type", _w(_empty_op_type))
    add("long-chain-20000-nodes", _w(_long_chain), allow_success=True)
    add("range-absurd", _w(_range_absurd), big)
    add("topk-k-huge", _w(_topk_huge), sh)
    add("split-negative-sizes", _w(_split_negative), sh)
    add("reduce-axis-out-of-range", _w(_reduce_axis_out_of_range), sh)
    add("flatten-axis-huge", _w(_flatten_axis_huge), sh)
    add("softmax-opset11-axis-huge", _w(_softmax_old_axis_huge), sh)
    add("maxpool-zero-kernel", _w(_maxpool_zero_kernel), sh)
    add("subgraphs-nested-150-deep", _w(_deep_subgraphs), mf + uo)
    add("reducemax-empty-constant", _w(_reducemax_empty_const), allow_success=True)
    add("initializer-is-node-output", _w(_init_is_node_output), ge)
    add("duplicate-initializer", _w(_duplicate_initializer), ge)
    add("sum-100k-inputs", _w(_sum_many_inputs), allow_success=True)
    return cases


def _w(fn: Callable[[], bytes]) -> Callable[[Sources], bytes]:
    return lambda s: fn()


# ---- TFLite -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TfliteLayout:
    """Absolute byte positions of interesting flatbuffer fields in the blazeface file."""

    tensor_tables: tuple[int, int]  # [lo, hi) of the tensor tables
    buffer_tables: tuple[int, ...]  # start of each Buffer table
    shape_vec: int  # first dimension of tensor 1's shape vector
    tensor_buffer_field: int  # tensor 1's buffer index
    buffer_data_len: int  # length prefix of buffer 1's data vector
    op_opcode_field: int  # operator 0's opcode_index
    op_inputs_vec: int  # first element of operator 0's inputs vector
    op_outputs_vec: int  # first element of operator 0's outputs vector
    op_options_type_field: int  # the builtin_options union type (uint8) of the first operator having options
    subgraphs_len: int  # length prefix of the subgraphs vector
    opcode_builtin_field: int  # operator code 0's builtin_code (int32) or deprecated code (int8)


def tflite_layout(data: bytes) -> TfliteLayout:
    import tflite

    m = tflite.Model.GetRootAsModel(data, 0)
    sg = m.Subgraphs(0)
    tpos = [sg.Tensors(i)._tab.Pos for i in range(sg.TensorsLength())]
    t1 = sg.Tensors(1)._tab
    b1 = m.Buffers(1)._tab
    op0 = sg.Operators(0)._tab
    oc0 = m.OperatorCodes(0)._tab
    mt = m._tab

    def field_pos(tab, slot: int) -> int:
        off = tab.Offset(slot)
        assert off, slot
        return tab.Pos + off

    def vector_start(tab, slot: int) -> int:
        return tab.Vector(tab.Offset(slot))

    with_options = next(sg.Operators(i)._tab for i in range(sg.OperatorsLength())
                        if sg.Operators(i)._tab.Offset(10))
    builtin = oc0.Offset(10) or oc0.Offset(4)  # builtin_code (new) or deprecated_builtin_code
    return TfliteLayout(
        tensor_tables=(min(tpos), max(tpos) + 64),
        buffer_tables=tuple(m.Buffers(i)._tab.Pos for i in range(m.BuffersLength())),
        shape_vec=vector_start(t1, 4),
        tensor_buffer_field=field_pos(t1, 8),
        buffer_data_len=vector_start(b1, 4) - 4,
        op_opcode_field=field_pos(op0, 4),
        op_inputs_vec=vector_start(op0, 6),
        op_outputs_vec=vector_start(op0, 8),
        op_options_type_field=field_pos(with_options, 10),
        subgraphs_len=vector_start(mt, 8) - 4,
        opcode_builtin_field=oc0.Pos + builtin,
    )


def _tfl(mutate: Callable[[bytes, TfliteLayout], bytes]) -> Callable[[Sources], bytes]:
    return lambda s: mutate(s.blazeface(), tflite_layout(s.blazeface()))


def _u32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


def _buffer_table_flips(seed: int) -> Callable[[Sources], bytes]:
    def mutate(d: bytes, lay: TfliteLayout) -> bytes:
        rng = random.Random(seed)
        buf = bytearray(d)
        for pos in rng.sample(lay.buffer_tables, 6):
            off = pos + rng.randrange(8)  # the table's vtable offset or its data vector offset
            buf[off] ^= 1 << rng.randrange(8)
        return bytes(buf)

    return _tfl(mutate)


def _tflite_cases() -> list[Case]:
    cases: list[Case] = []
    shapes = {"input": [1, 128, 128, 3]}

    def add(cid: str, build: Callable[[Sources], bytes], expect=ANY, **kw) -> None:
        kw.setdefault("suffix", ".tflite")
        kw.setdefault("input_shapes", shapes)
        cases.append(Case(f"tflite-{cid}", "tflite", build, expect, **kw))

    mf = ("ModelFormatError",)
    for cut in (4, 16, 1024):
        add(f"trunc-{cut}B", lambda s, c=cut: s.blazeface()[:c], mf)
    for frac in (0.25, 0.5, 0.9, 0.97):
        add(f"trunc-{int(frac * 100)}pct", lambda s, f=frac: s.blazeface()[: int(len(s.blazeface()) * f)], mf)
    add("trunc-50pct-bytes", lambda s: s.blazeface()[: len(s.blazeface()) // 2], mf, via="bytes")
    for seed in range(3):
        add(f"bitflip-header-seed{seed}", lambda s, sd=seed: flip_bits(s.blazeface(), sd, 3, 0, 64),
            allow_success=True)
    for seed in range(4):
        add(f"bitflip-tensor-tables-seed{seed}",
            _tfl(lambda d, lay, sd=seed: flip_bits(d, sd, 8, *lay.tensor_tables)), allow_success=True)
    for seed in range(3):
        add(f"bitflip-buffer-tables-seed{seed}", _buffer_table_flips(seed), allow_success=True)
    for seed in range(2):
        add(f"overwrite-random-bytes-seed{seed}",
            lambda s, sd=seed: _overwrite_random(s.blazeface(), sd), allow_success=True)
    add("wrong-identifier", lambda s: overwrite(s.blazeface(), 4, b"XFL3"), mf)
    add("wrong-identifier-bytes", lambda s: overwrite(s.blazeface(), 4, b"XFL3"), mf, via="bytes")
    add("root-offset-outside", lambda s: overwrite(s.blazeface(), 0, _u32(0x7FFFFFF0)), mf)
    add("root-offset-negative-vtable", lambda s: overwrite(s.blazeface(), 28, _u32(0x7FFFFFFF)), mf)
    add("tensor-shape-huge", _tfl(lambda d, lay: overwrite(d, lay.shape_vec, _u32(0x7FFFFFFF))),
        ("TensorTooLargeError", "ShapeError", "ModelFormatError"))
    add("tensor-shape-negative", _tfl(lambda d, lay: overwrite(d, lay.shape_vec, _u32(-7))),
        ("ShapeError", "ModelFormatError"))
    add("tensor-buffer-index-huge", _tfl(lambda d, lay: overwrite(d, lay.tensor_buffer_field, _u32(0xFFFFFF))),
        ("ModelFormatError", "GraphError"))
    add("buffer-data-length-huge", _tfl(lambda d, lay: overwrite(d, lay.buffer_data_len, _u32(0x7FFFFFFF))), mf)
    add("operator-opcode-index-huge",
        _tfl(lambda d, lay: overwrite(d, lay.op_opcode_field, _u32(0xFFFF))), ("ModelFormatError", "GraphError"))
    add("operator-input-index-huge",
        _tfl(lambda d, lay: overwrite(d, lay.op_inputs_vec, _u32(99_999))), ("ModelFormatError", "GraphError"))
    add("operator-input-omitted", _tfl(lambda d, lay: overwrite(d, lay.op_inputs_vec, _u32(-1))))
    add("operator-reads-own-output", _tfl(
        lambda d, lay: overwrite(d, lay.op_inputs_vec, d[lay.op_outputs_vec:lay.op_outputs_vec + 4])),
        ("GraphError", "ModelFormatError"))
    add("operator-options-type-swapped", _tfl(lambda d, lay: overwrite(d, lay.op_options_type_field, b"\x2a")))
    add("operator-options-type-unknown", _tfl(lambda d, lay: overwrite(d, lay.op_options_type_field, b"\xfe")))
    add("subgraphs-count-zero", _tfl(lambda d, lay: overwrite(d, lay.subgraphs_len, _u32(0))), mf)
    add("subgraphs-count-huge", _tfl(lambda d, lay: overwrite(d, lay.subgraphs_len, _u32(0x7FFFFFFF))), mf)
    add("unknown-builtin-opcode", _tfl(lambda d, lay: overwrite(d, lay.opcode_builtin_field, b"\xf0")),
        ("UnsupportedOpError", "ModelFormatError"))
    add("garbage-with-identifier", lambda s: garbage(11, 8) [:4] + b"TFL3" + garbage(12, 4096), mf)
    add("identifier-only", lambda s: b"\x08\0\0\0TFL3", mf)
    return cases


def _overwrite_random(data: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    buf = bytearray(data)
    for _ in range(16):
        pos = rng.randrange(len(buf) - 4)
        buf[pos:pos + 4] = rng.randbytes(4)
    return bytes(buf)


# ---- PyTorch checkpoints --------------------------------------------------------------------------------

# A tiny pickle assembler (protocol 2 opcodes): lets the tests write exactly the structure a torch
# checkpoint has -- or a hostile variant of it -- without importing torch.
PROTO2 = b"\x80\x02"
MARK, STOP, TUPLE, REDUCE, BINPERSID, SETITEM, EMPTY_DICT = b"(", b".", b"t", b"R", b"Q", b"s", b"}"
EMPTY_TUPLE, NEWFALSE, EMPTY_LIST, APPEND = b")", b"\x89", b"]", b"a"


def p_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def p_str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def p_int(v: int) -> bytes:
    if 0 <= v < 1 << 31 or -(1 << 31) <= v < 0:
        return b"J" + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def p_tuple(items: list[bytes]) -> bytes:
    return MARK + b"".join(items) + TUPLE


def p_tensor(key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0,
             storage: str = "FloatStorage", legacy: bool = False) -> bytes:
    pid_items = [p_str("storage"), p_global("torch", storage), p_str(key), p_str("cpu"), p_int(numel)]
    if legacy:
        pid_items.append(b"N")  # no view
    pid = p_tuple(pid_items) + BINPERSID
    args = p_tuple([pid, p_int(offset), p_tuple([p_int(d) for d in size]), p_tuple([p_int(s) for s in stride]),
                    NEWFALSE, p_global("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE])
    return p_global("torch._utils", "_rebuild_tensor_v2") + args + REDUCE


def p_state_dict(entries: list[tuple[str, bytes]]) -> bytes:
    body = p_global("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    for k, v in entries:
        body += p_str(k) + v + SETITEM
    return PROTO2 + body + STOP


def torch_zip(pkl: bytes, storages: dict[str, bytes], root: str = "archive") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{root}/data.pkl", pkl)
        zf.writestr(f"{root}/byteorder", b"little")
        for key, raw in storages.items():
            zf.writestr(f"{root}/data/{key}", raw)
        zf.writestr(f"{root}/version", b"3\n")
    return buf.getvalue()


def valid_checkpoint() -> bytes:
    w = struct.pack("<6f", *range(6))
    pkl = p_state_dict([("weight", p_tensor("0", 6, (2, 3), (3, 1))), ("bias", p_tensor("1", 2, (2,), (1,)))])
    return torch_zip(pkl, {"0": w, "1": struct.pack("<2f", 0.5, -0.5)})


def legacy_checkpoint(storage_bytes: bytes | None = None, numel: int = 6) -> bytes:
    def one(obj: bytes) -> bytes:
        return PROTO2 + obj + STOP

    raw = struct.pack("<6f", *range(6)) if storage_bytes is None else storage_bytes
    sys_info = EMPTY_DICT + p_str("little_endian") + b"\x88" + SETITEM
    obj = p_state_dict([("weight", p_tensor("k0", 6, (2, 3), (3, 1), legacy=True))])
    keys = EMPTY_LIST + p_str("k0") + APPEND
    return (one(p_int(0x1950A86A20F9469CFC6C)) + one(p_int(1001)) + one(sys_info) + obj + one(keys)
            + struct.pack("<q", numel) + raw)


def _evil_reduce(module: str, name: str, arg: bytes) -> bytes:
    """``module.name(arg)`` at unpickling time -- the classic pickle code execution."""
    return PROTO2 + p_global(module, name) + p_tuple([arg]) + REDUCE + STOP


class _Evil:
    """Pickled by the real pickler, so the opcodes are exactly what an attacker's ``pickle.dumps`` emits."""

    def __init__(self, fn: Callable, args: tuple) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _marker(markers: Path, cid: str) -> str:
    return str(markers / f"{cid}.ran")


def _ckpt_cases(markers: Path) -> list[Case]:
    cases: list[Case] = []
    ce = ("CheckpointError",)

    def add(cid: str, build: Callable[[Sources], bytes], expect=ce, **kw) -> None:
        kw.setdefault("suffix", ".pth")
        cases.append(Case(f"ckpt-{cid}", "ckpt", build, expect, **kw))

    def shell(cid: str) -> str:
        return f"touch {_marker(markers, cid)}"

    def py(cid: str) -> str:
        return f"open({_marker(markers, cid)!r}, 'w').write('pwned')"

    def in_zip(pkl: bytes) -> bytes:
        return torch_zip(pkl, {"0": b"\0" * 24})

    add("valid", lambda s: valid_checkpoint(), allow_success=True)
    add("legacy-valid", lambda s: legacy_checkpoint(), allow_success=True)
    for cut in (3, 30, 200):
        add(f"zip-trunc-{cut}B", lambda s, c=cut: valid_checkpoint()[:c])
    add("zip-trunc-half", lambda s: valid_checkpoint()[: len(valid_checkpoint()) // 2])
    add("zip-trunc-minus1", lambda s: valid_checkpoint()[:-1])
    add("zip-trunc-no-central-dir", lambda s: valid_checkpoint()[:-22])
    add("empty", lambda s: b"")
    add("garbage", lambda s: garbage(5, 2048))
    # code execution attempts: each would create its marker file if anything ran
    add("pickle-os-system", lambda s: in_zip(_evil_reduce("os", "system", p_str(shell("ckpt-pickle-os-system")))))
    add("pickle-posix-system",
        lambda s: in_zip(_evil_reduce("posix", "system", p_str(shell("ckpt-pickle-posix-system")))))
    add("pickle-builtins-eval",
        lambda s: in_zip(_evil_reduce("builtins", "eval", p_str(py("ckpt-pickle-builtins-eval")))))
    add("pickle-builtins-exec",
        lambda s: in_zip(_evil_reduce("builtins", "exec", p_str(py("ckpt-pickle-builtins-exec")))))
    add("pickle-subprocess-call", lambda s: in_zip(_evil_reduce(
        "subprocess", "call", p_tuple([p_str("touch"), p_str(_marker(markers, "ckpt-pickle-subprocess-call"))]))))
    add("pickle-dumps-os-system", lambda s: in_zip(pickle.dumps(
        _Evil(os.system, (shell("ckpt-pickle-dumps-os-system"),)), protocol=5)))
    add("pickle-dumps-eval-proto0", lambda s: in_zip(pickle.dumps(
        _Evil(eval, (py("ckpt-pickle-dumps-eval-proto0"),)), protocol=0)))
    add("pickle-inst-opcode", lambda s: in_zip(
        b"(" + p_str(shell("ckpt-pickle-inst-opcode")) + b"ios\nsystem\n" + STOP))
    add("pickle-stack-global", lambda s: in_zip(
        b"\x80\x04" + p_str("os") + p_str("system") + b"\x93" + p_tuple([p_str(shell("ckpt-pickle-stack-global"))])
        + REDUCE + STOP))
    add("pickle-getattr-import", lambda s: in_zip(
        PROTO2 + p_global("builtins", "getattr")
        + p_tuple([p_global("builtins", "__import__") + p_tuple([p_str("os")]) + REDUCE, p_str("system")])
        + REDUCE + p_tuple([p_str(shell("ckpt-pickle-getattr-import"))]) + REDUCE + STOP))
    add("pickle-evil-inside-state-dict", lambda s: in_zip(p_state_dict(
        [("w", p_global("os", "system") + p_tuple([p_str(shell("ckpt-pickle-evil-inside-state-dict"))])
          + REDUCE)])))
    add("legacy-evil-magic", lambda s: _evil_reduce("os", "system", p_str(shell("ckpt-legacy-evil-magic"))))
    add("legacy-evil-object", lambda s: legacy_checkpoint().replace(
        p_state_dict([("weight", p_tensor("k0", 6, (2, 3), (3, 1), legacy=True))]),
        _evil_reduce("os", "system", p_str(shell("ckpt-legacy-evil-object")))))
    add("persistent-module", lambda s: in_zip(
        PROTO2 + p_tuple([p_str("module"), p_str("evil"), p_str("import os")]) + BINPERSID + STOP))
    add("storage-smaller-than-tensor", lambda s: torch_zip(
        p_state_dict([("w", p_tensor("0", 10_000, (100, 100), (100, 1)))]), {"0": b"\0" * 24}))
    add("storage-not-multiple-of-itemsize", lambda s: torch_zip(
        p_state_dict([("w", p_tensor("0", 6, (2, 3), (3, 1)))]), {"0": b"\0" * 23}))
    add("storage-record-missing", lambda s: torch_zip(p_state_dict([("w", p_tensor("0", 6, (2, 3), (3, 1)))]), {}))
    add("tensor-offset-past-end", lambda s: torch_zip(
        p_state_dict([("w", p_tensor("0", 6, (2, 3), (3, 1), offset=1_000_000))]), {"0": b"\0" * 24}))
    add("tensor-negative-size", lambda s: torch_zip(
        p_state_dict([("w", p_tensor("0", 6, (-2, 3), (3, 1)))]), {"0": b"\0" * 24}))
    add("tensor-absurd-size-stride0", lambda s: torch_zip(
        p_state_dict([("w", p_tensor("0", 1, (1 << 20, 1 << 20), (0, 0)))]), {"0": b"\0" * 4}))
    add("tensor-huge-stride", lambda s: torch_zip(
        p_state_dict([("w", p_tensor("0", 6, (2, 3), (1 << 62, 1)))]), {"0": b"\0" * 24}))
    add("tensor-size-stride-rank-mismatch", lambda s: torch_zip(
        p_state_dict([("w", p_tensor("0", 6, (2, 3), (1,)))]), {"0": b"\0" * 24}))
    add("pickle-nested-100k", lambda s: in_zip(PROTO2 + EMPTY_LIST * 100_000 + APPEND * 99_999 + STOP))
    add("pickle-binbytes8-huge-length", lambda s: in_zip(PROTO2[:1] + b"\x04" + b"\x8e"
                                                         + struct.pack("<Q", 1 << 40) + b"abc"))
    add("pickle-garbage", lambda s: in_zip(garbage(9, 512)))
    add("zip-two-data-pkl", lambda s: _zip_members({"a/data.pkl": b"\x80\x02}.", "b/data.pkl": b"\x80\x02}."}))
    add("zip-forged-size", lambda s: _forge_zip_size(valid_checkpoint(), "archive/data.pkl", 0xFFFFFFF0))
    add("zip-bad-byteorder", lambda s: _zip_members({"archive/data.pkl": b"\x80\x02}.",
                                                      "archive/byteorder": b"middle"}))
    add("pickle-shared-list-dag-2pow60", lambda s: in_zip(_shared_dag(60, as_dict=False)))
    add("pickle-shared-dict-dag-2pow60", lambda s: in_zip(_shared_dag(60, as_dict=True)))
    add("zip-deflate-bomb-3.75GiB", lambda s: _bomb_checkpoint())
    add("legacy-truncated-storage", lambda s: legacy_checkpoint()[:-5])
    add("legacy-numel-huge", lambda s: legacy_checkpoint(numel=1 << 60))
    add("legacy-numel-negative", lambda s: legacy_checkpoint(numel=-6))
    return cases


def _shared_dag(levels: int, as_dict: bool) -> bytes:
    """A pickle of ``levels`` containers each holding the previous one twice: linear in size thanks to the
    pickle memo, but 2**levels nodes for anything that walks it as a tree (a "billion laughs")."""
    obj: object = []
    for _ in range(levels):
        obj = {"a": obj, "b": obj} if as_dict else [obj, obj]
    return pickle.dumps({"w": obj}, protocol=2)


def _deflate_bomb(uncompressed: int) -> bytes:
    """Raw deflate stream of ``uncompressed`` zero bytes (~1000:1), built from one repeated sync-flushed
    1 MiB block so that generating it costs milliseconds."""
    import zlib

    mib = 1 << 20
    assert uncompressed % mib == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(bytes(mib)) + c.flush(zlib.Z_SYNC_FLUSH)
    again = c.compress(bytes(mib)) + c.flush(zlib.Z_SYNC_FLUSH)
    assert again == c.compress(bytes(mib)) + c.flush(zlib.Z_SYNC_FLUSH)  # steady state reached
    return first + again * (uncompressed // mib - 1) + c.flush()


def _zip_raw(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip written by hand: (name, stored payload, method, crc, uncompressed size) per member."""
    out, central = bytearray(), bytearray()
    for name, payload, method, crc, size in members:
        raw_name = name.encode()
        offset = len(out)
        out += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(payload), size,
                           len(raw_name), 0) + raw_name + payload
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(payload), size,
                               len(raw_name), 0, 0, 0, 0, 0, offset) + raw_name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + end)


def _bomb_checkpoint() -> bytes:
    import zlib

    size = 3840 << 20  # 3.75 GiB: under the reader's 4 GiB member limit, over the runner's address space
    pkl = p_state_dict([("w", p_tensor("0", 6, (2, 3), (3, 1)))])
    small = [("archive/data.pkl", pkl, 0, zlib.crc32(pkl), len(pkl)),
             ("archive/byteorder", b"little", 0, zlib.crc32(b"little"), 6)]
    # the CRC is left 0: the reader must refuse (or fail) before it could ever check it
    return _zip_raw(small + [("archive/data/0", _deflate_bomb(size), 8, 0, size)])


def _zip_members(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    return buf.getvalue()


def _forge_zip_size(data: bytes, member: str, size: int) -> bytes:
    """Claim a bigger uncompressed size for ``member`` in its central directory entry."""
    needle = b"PK\x01\x02"
    buf = bytearray(data)
    pos = buf.find(needle)
    while pos >= 0:
        name_len = struct.unpack_from("<H", buf, pos + 28)[0]
        if bytes(buf[pos + 46:pos + 46 + name_len]) == member.encode():
            struct.pack_into("<I", buf, pos + 24, size)
            return bytes(buf)
        pos = buf.find(needle, pos + 4)
    raise AssertionError(f"{member} not in zip")


def all_cases(markers: Path) -> list[Case]:
    return _onnx_cases() + _tflite_cases() + _ckpt_cases(markers)


def case_ids() -> list[str]:
    return [c.id for c in all_cases(Path("/nonexistent"))]


# ---- runner (child process) ----------------------------------------------------------------------------------

class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that ``except Exception`` in library code cannot swallow it."""


def _frame(tb_entry) -> str:
    return f"{tb_entry.filename}:{tb_entry.lineno} in {tb_entry.name}"


def _describe(exc: BaseException) -> dict:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}opennpu{os.sep}" in f.filename]
    return {
        "type": type(exc).__name__,
        "mro": [k.__name__ for k in type(exc).__mro__],
        "message": str(exc)[:500],
        "raised_at": _frame(frames[-1]) if frames else "",
        "opennpu_frame": _frame(ours[-1]) if ours else "",
        "lines": len(str(exc).splitlines()),
    }


def _run_one(spec: dict):
    if spec["kind"] == "selftest":  # lets the tests check the harness itself: crash recovery
        if Path(spec["path"]).read_bytes() == b"abort":
            os.abort()
        return None
    if spec["kind"] == "ckpt":
        from opennpu.zoo.checkpoint import load_torch_checkpoint

        return load_torch_checkpoint(spec["path"])
    from opennpu.frontends import load_model

    shapes = {k: tuple(v) for k, v in spec["input_shapes"].items()}
    source = Path(spec["path"]).read_bytes() if spec["via"] == "bytes" else spec["path"]
    return load_model(source, shapes)


def _on_alarm(signum, frame):
    raise CaseTimeout(f"no result after {CASE_TIMEOUT_S} s")


def run_manifest(manifest: Path, results: Path) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
    signal.signal(signal.SIGALRM, _on_alarm)
    import opennpu.frontends  # noqa: F401  (import cost outside the per-case clocks)
    from opennpu.errors import OpenNPUError

    specs = json.loads(manifest.read_text())
    with results.open("a") as out:
        for spec in specs:
            out.write(json.dumps({"event": "start", "id": spec["id"]}) + "\n")
            out.flush()
            t0 = time.perf_counter()
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            rec: dict = {"event": "end", "id": spec["id"]}
            signal.alarm(CASE_TIMEOUT_S)
            try:
                _run_one(spec)
                rec["status"] = "ok"
            except CaseTimeout as e:
                rec.update(status="timeout", **_describe(e))
            except MemoryError as e:
                rec.update(status="memory", **_describe(e))
            except OpenNPUError as e:
                rec.update(status="error", **_describe(e))
            except BaseException as e:  # anything else is a bug: report it with where it escaped
                rec.update(status="other", **_describe(e))
            finally:
                signal.alarm(0)
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            # ru_maxrss only grows: the step during this case is a lower bound of its peak allocation
            rec["maxrss_mb"], rec["rss_growth_mb"] = rss1 // 1024, (rss1 - rss0) // 1024
            out.write(json.dumps(rec) + "\n")
            out.flush()


if __name__ == "__main__":
    run_manifest(Path(sys.argv[1]), Path(sys.argv[2]))
