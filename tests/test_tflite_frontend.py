"""TFLite importer: real MediaPipe models vs LiteRT, int8 models built here, corrupt files."""

from __future__ import annotations

import importlib
import time

import flatbuffers
import numpy as np
import pytest
import tflite

from opennpu.errors import ModelFormatError, OpenNPUError, UnsupportedOpError
from opennpu.frontends import load_model
from opennpu.frontends.tflite import import_tflite
from opennpu.ir.graph import Graph, Node, Tensor
from opennpu.ir.passes.layout import cancel_transposes
from opennpu.runtime.cpu import run_graph

Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

MP = ("mediapipe", "0.10.21")
BLAZEFACE = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
SELFIE = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"


def _fetch(package: tuple[str, str], member: str):
    from opennpu.errors import ZooError
    from opennpu.zoo.pypi import extract_member

    try:
        return extract_member(*package, member)
    except ZooError as e:
        pytest.skip(f"cannot fetch {member}: {e}")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from PIL import Image

    return np.asarray(
        Image.open(_fetch(("scikit-image", "0.26.0"), "skimage/data/astronaut.png")).convert("RGB")
    )


def _litert(data: bytes, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
    it = Interpreter(model_content=data, num_threads=2)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], feeds[d["name"]])
    it.invoke()
    t0 = time.perf_counter()
    for _ in range(5):
        it.invoke()
    dt = (time.perf_counter() - t0) / 5
    return {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}, dt


# ---- real models --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "size", "signed", "max_transposes"),
    [(BLAZEFACE, 128, True, 5), (SELFIE, 256, False, 2)],
    ids=["blazeface", "selfie"],
)
def test_mediapipe_model_matches_litert(member, size, signed, max_transposes, astronaut):
    from PIL import Image

    path = _fetch(MP, member)
    data = path.read_bytes()
    img = (
        np.asarray(Image.fromarray(astronaut).resize((size, size), Image.BILINEAR), np.float32)[None] / 255.0
    )
    x = img * 2.0 - 1.0 if signed else img  # BlazeFace expects [-1, 1], selfie segmentation [0, 1]

    raw = import_tflite(data, path.stem)
    assert raw.metadata["format"] == "tflite" and raw.metadata["version"] == 3
    assert raw.metadata["description"]
    graph = load_model(path)
    n_transposes = graph.op_types().get("Transpose", 0)
    print(
        f"\n{path.stem}: {raw.op_types().get('Transpose', 0)} transposes imported, {n_transposes} after "
        f"canonicalize; ops {graph.op_types()}"
    )
    assert n_transposes <= max_transposes

    feeds = {graph.inputs[0]: x}
    run_graph(graph, feeds)
    t0 = time.perf_counter()
    ours = run_graph(graph, feeds)
    t_ours = time.perf_counter() - t0
    ref, t_ref = _litert(data, {"input" if signed else "input_1": x})
    print(f"{path.stem}: opennpu {t_ours * 1e3:.1f} ms, LiteRT {t_ref * 1e3:.2f} ms")
    assert set(ours) == set(ref)
    for name, r in ref.items():
        assert ours[name].shape == r.shape
        err = float(np.abs(ours[name] - r).max())
        assert err <= 1e-3 * float(np.abs(r).max()), (name, err)


def test_selfie_segments_the_astronaut(astronaut):
    """Sanity on the task itself: a sizeable part of the portrait is person."""
    from PIL import Image

    graph = load_model(_fetch(MP, SELFIE))
    x = np.asarray(Image.fromarray(astronaut).resize((256, 256), Image.BILINEAR), np.float32)[None] / 255.0
    mask = next(iter(run_graph(graph, {graph.inputs[0]: x}).values()))
    assert 0.3 < float((mask > 0.5).mean()) < 0.8


# ---- a minimal TFLite builder ---------------------------------------------------------------------------


def _mod(name: str):
    return importlib.import_module(f"tflite.{name}")


def _table(b: flatbuffers.Builder, name: str, **fields) -> int:
    m = _mod(name)
    getattr(m, f"{name}Start")(b)
    for k, v in fields.items():
        if v is not None:
            getattr(m, f"{name}Add{k}")(b, v)
    return getattr(m, f"{name}End")(b)


def _vec(b: flatbuffers.Builder, values, dtype) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=dtype))


def _offsets(b: flatbuffers.Builder, offs: list[int]) -> int:
    b.StartVector(4, len(offs), 4)
    for o in reversed(offs):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


class TinyModel:
    """Collects tensors and operators, then serializes one subgraph with the tflite builder functions."""

    TYPES = {"float32": 0, "int32": 2, "uint8": 3, "int8": 9}

    def __init__(self) -> None:
        self.tensors: list[dict] = []
        self.ops: list[dict] = []
        self.codes: list[tuple[int, str]] = []
        self.versions: dict[tuple[int, str], int] = {}

    def tensor(self, name, shape, dtype="float32", data=None, scale=None, zp=None, axis=0) -> int:
        self.tensors.append(
            dict(name=name, shape=shape, dtype=dtype, data=data, scale=scale, zp=zp, axis=axis)
        )
        return len(self.tensors) - 1

    def op(
        self, code: int, inputs, outputs, opt_type=0, opt=None, custom: str = "", version: int = 1
    ) -> None:
        key = (code, custom)
        if key not in self.codes:
            self.codes.append(key)
        self.versions[key] = max(version, self.versions.get(key, 1))
        self.ops.append(
            dict(
                idx=self.codes.index(key),
                inputs=inputs,
                outputs=outputs,
                opt_type=opt_type,
                opt=opt,
                version=version,
            )
        )

    def build(self, inputs, outputs) -> bytes:
        b = flatbuffers.Builder(1024)
        buffers = [_table(b, "Buffer")]
        tensors = []
        for t in self.tensors:
            buf = 0
            if t["data"] is not None:
                raw = np.ascontiguousarray(t["data"], dtype=t["dtype"]).tobytes()
                buffers.append(_table(b, "Buffer", Data=_vec(b, np.frombuffer(raw, np.uint8), np.uint8)))
                buf = len(buffers) - 1
            quant = None
            if t["scale"] is not None:
                scale = np.atleast_1d(np.asarray(t["scale"], np.float32))
                zp = np.atleast_1d(np.asarray(t["zp"] if t["zp"] is not None else 0, np.int64))
                zp = np.broadcast_to(zp, scale.shape)
                quant = _table(
                    b,
                    "QuantizationParameters",
                    Scale=_vec(b, scale, np.float32),
                    ZeroPoint=_vec(b, zp, np.int64),
                    QuantizedDimension=t["axis"],
                )
            name = b.CreateString(t["name"])
            shape = _vec(b, t["shape"], np.int32)
            tensors.append(
                _table(
                    b,
                    "Tensor",
                    Shape=shape,
                    Type=self.TYPES[t["dtype"]],
                    Buffer=buf,
                    Name=name,
                    Quantization=quant,
                )
            )
        ops = []
        for o in self.ops:
            opt = o["opt"](b) if o["opt"] is not None else None
            ins, outs = _vec(b, o["inputs"], np.int32), _vec(b, o["outputs"], np.int32)
            ops.append(
                _table(
                    b,
                    "Operator",
                    OpcodeIndex=o["idx"],
                    Inputs=ins,
                    Outputs=outs,
                    BuiltinOptionsType=o["opt_type"] if opt is not None else None,
                    BuiltinOptions=opt,
                )
            )
        codes = []
        for code, custom in self.codes:
            cc = b.CreateString(custom) if custom else None
            codes.append(
                _table(
                    b,
                    "OperatorCode",
                    DeprecatedBuiltinCode=min(code, 127),
                    BuiltinCode=code,
                    Version=self.versions[(code, custom)],
                    CustomCode=cc,
                )
            )
        sg = _table(
            b,
            "SubGraph",
            Tensors=_offsets(b, tensors),
            Inputs=_vec(b, inputs, np.int32),
            Outputs=_vec(b, outputs, np.int32),
            Operators=_offsets(b, ops),
            Name=b.CreateString("main"),
        )
        desc = b.CreateString("opennpu test model")
        model = _table(
            b,
            "Model",
            Version=3,
            OperatorCodes=_offsets(b, codes),
            Subgraphs=_offsets(b, [sg]),
            Description=desc,
            Buffers=_offsets(b, buffers),
        )
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())


BO, OPT, ACT = tflite.BuiltinOperator, tflite.BuiltinOptions, tflite.ActivationFunctionType


def _conv_opt(stride: int, padding: int, act: int):
    return lambda b: _table(
        b,
        "Conv2DOptions",
        Padding=padding,
        StrideW=stride,
        StrideH=stride,
        FusedActivationFunction=act,
        DilationWFactor=1,
        DilationHFactor=1,
    )


def _dw_opt(stride: int, padding: int, act: int):
    return lambda b: _table(
        b,
        "DepthwiseConv2DOptions",
        Padding=padding,
        StrideW=stride,
        StrideH=stride,
        DepthMultiplier=1,
        FusedActivationFunction=act,
        DilationWFactor=1,
        DilationHFactor=1,
    )


def int8_model(per_channel: bool, seed: int = 0) -> bytes:
    """float in -> QUANTIZE -> CONV(relu) -> DW CONV -> ADD -> AVG POOL -> RESHAPE -> FC -> DEQUANTIZE."""
    rng = np.random.default_rng(seed)
    m = TinyModel()
    s_in, zp_in = 2.0 / 255, -1
    x = m.tensor("x", [1, 8, 8, 3])
    xq = m.tensor("x_q", [1, 8, 8, 3], "int8", scale=s_in, zp=zp_in)
    m.op(BO.QUANTIZE, [x], [xq], version=2)

    def weights(name, shape, axis):
        w = rng.integers(-127, 128, size=shape).astype(np.int8)
        n = shape[axis] if per_channel else 1
        scale = rng.uniform(0.002, 0.01, n).astype(np.float32)
        return m.tensor(
            name,
            list(shape),
            "int8",
            w,
            scale=scale,
            zp=np.zeros(n, np.int64),
            axis=axis if per_channel else 0,
        ), scale

    w1, ws1 = weights("conv_w", (4, 3, 3, 3), 0)
    b1 = m.tensor(
        "conv_b", [4], "int32", rng.integers(-500, 500, 4), scale=s_in * ws1, zp=np.zeros(ws1.size), axis=0
    )
    c1 = m.tensor("conv_out", [1, 8, 8, 4], "int8", scale=0.05, zp=-128)
    m.op(
        BO.CONV_2D,
        [xq, w1, b1],
        [c1],
        OPT.Conv2DOptions,
        _conv_opt(1, tflite.Padding.SAME, ACT.RELU),
        version=3,
    )
    w2, ws2 = weights("dw_w", (1, 3, 3, 4), 3)
    b2 = m.tensor(
        "dw_b", [4], "int32", rng.integers(-500, 500, 4), scale=0.05 * ws2, zp=np.zeros(ws2.size), axis=0
    )
    c2 = m.tensor("dw_out", [1, 8, 8, 4], "int8", scale=0.04, zp=3)
    m.op(
        BO.DEPTHWISE_CONV_2D,
        [c1, w2, b2],
        [c2],
        OPT.DepthwiseConv2DOptions,
        _dw_opt(1, tflite.Padding.SAME, ACT.NONE),
        version=3,
    )
    a = m.tensor("add_out", [1, 8, 8, 4], "int8", scale=0.06, zp=-5)
    m.op(
        BO.ADD,
        [c1, c2],
        [a],
        OPT.AddOptions,
        lambda b: _table(b, "AddOptions", FusedActivationFunction=ACT.RELU6),
        version=2,
    )
    p = m.tensor("pool_out", [1, 4, 4, 4], "int8", scale=0.06, zp=-5)
    m.op(
        BO.AVERAGE_POOL_2D,
        [a],
        [p],
        OPT.Pool2DOptions,
        lambda b: _table(
            b,
            "Pool2DOptions",
            Padding=tflite.Padding.VALID,
            StrideW=2,
            StrideH=2,
            FilterWidth=2,
            FilterHeight=2,
        ),
        version=2,
    )
    shape = m.tensor("flat_shape", [2], "int32", np.array([1, 64]))
    f = m.tensor("flat", [1, 64], "int8", scale=0.06, zp=-5)
    m.op(BO.RESHAPE, [p, shape], [f])
    w3, ws3 = weights("fc_w", (5, 64), 0)
    b3 = m.tensor(
        "fc_b", [5], "int32", rng.integers(-500, 500, 5), scale=0.06 * ws3, zp=np.zeros(ws3.size), axis=0
    )
    yq = m.tensor("y_q", [1, 5], "int8", scale=0.1, zp=2)
    m.op(
        BO.FULLY_CONNECTED,
        [f, w3, b3],
        [yq],
        OPT.FullyConnectedOptions,
        lambda b: _table(b, "FullyConnectedOptions", FusedActivationFunction=ACT.NONE),
        version=4,
    )
    y = m.tensor("y", [1, 5])
    m.op(BO.DEQUANTIZE, [yq], [y], version=2)
    return m.build([x], [y])


def int8_io_model() -> bytes:
    """Pure int8 graph (int8 in/out, per-tensor): MAX_POOL -> CONCAT -> RELU."""
    m = TinyModel()
    x = m.tensor("x", [1, 6, 6, 2], "int8", scale=0.1, zp=4)
    p = m.tensor("pool", [1, 3, 3, 2], "int8", scale=0.1, zp=4)
    m.op(
        BO.MAX_POOL_2D,
        [x],
        [p],
        OPT.Pool2DOptions,
        lambda b: _table(
            b,
            "Pool2DOptions",
            Padding=tflite.Padding.SAME,
            StrideW=2,
            StrideH=2,
            FilterWidth=3,
            FilterHeight=3,
        ),
        version=2,
    )
    c = m.tensor("cat", [1, 3, 3, 4], "int8", scale=0.1, zp=4)
    m.op(
        BO.CONCATENATION,
        [p, p],
        [c],
        OPT.ConcatenationOptions,
        lambda b: _table(b, "ConcatenationOptions", Axis=3),
        version=2,
    )
    y = m.tensor("y", [1, 3, 3, 4], "int8", scale=0.1, zp=4)
    m.op(BO.RELU, [c], [y], version=2)
    return m.build([x], [y])


def _check_quant_against_litert(data: bytes) -> Graph:
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    rng = np.random.default_rng(1)
    for d in it.get_input_details():
        if d["dtype"] == np.float32:
            it.set_tensor(d["index"], rng.uniform(-1, 1, d["shape"]).astype(np.float32))
        else:
            it.set_tensor(d["index"], rng.integers(-128, 128, d["shape"]).astype(d["dtype"]))
    it.invoke()  # proves the hand-built file is a valid, runnable TFLite model
    for d in it.get_output_details():
        assert np.all(np.isfinite(it.get_tensor(d["index"]).astype(np.float64)))
    g = import_tflite(data, "int8")
    # Kernels may rewrite quantization in Prepare (FC expands a per-tensor bias scale), so read the file's
    # parameters from an interpreter whose tensors were never allocated.
    it = Interpreter(model_content=data)
    perms = {"conv_w": (0, 3, 1, 2), "dw_w": (3, 0, 1, 2)}  # OHWI -> OIHW, 1HWC -> C1HW
    checked = 0
    for d in it.get_tensor_details():
        qp = d["quantization_parameters"]
        if not qp["scales"].size:
            continue
        t = g.tensors[d["name"]]
        assert t.quant is not None, d["name"]
        assert t.dtype == np.dtype(d["dtype"]).name
        np.testing.assert_array_equal(t.quant.scale, qp["scales"])
        np.testing.assert_array_equal(t.quant.zero_point, qp["zero_points"])
        if qp["scales"].size > 1:
            perm = perms.get(d["name"], tuple(range(len(d["shape"]))))
            assert t.quant.axis == perm.index(int(qp["quantized_dimension"])), d["name"]
            assert t.shape[t.quant.axis] == qp["scales"].size
        else:
            assert t.quant.axis is None
        if d["name"] in perms:  # constant weights stay int8, re-laid out
            assert t.data is not None and t.data.dtype == np.int8
            np.testing.assert_array_equal(t.data, np.transpose(it.get_tensor(d["index"]), perms[d["name"]]))
        checked += 1
    assert checked >= 3
    return g


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_int8_model_quant_params(per_channel):
    data = int8_model(per_channel)
    g = _check_quant_against_litert(data)
    ops = g.op_types()
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1 and ops["Gemm"] == 1
    conv = next(n for n in g.nodes if n.op_type == "Conv" and n.attrs["group"] == 1)
    assert conv.attrs["clip"] == (0.0, float("inf")) and conv.attrs["pads"] == [1, 1, 1, 1]
    # Canonicalization works on the quantized graph too: layout transposes cancel, quant params survive.
    canon = load_model(data)
    assert canon.op_types().get("Transpose", 0) <= 2
    for n in canon.nodes:
        for o in n.outputs:
            t = canon.tensors[o]
            if t.dtype == "int8":
                assert t.quant is not None, o


def test_int8_io_model_quant_params():
    g = _check_quant_against_litert(int8_io_model())
    assert g.tensors["x"].dtype == "int8" and g.tensors["y"].quant.zero_point.tolist() == [4]


def test_quantize_dequantize_kernels_match_litert():
    """QUANTIZE/DEQUANTIZE pair in float: our QuantizeLinear/DequantizeLinear reproduce LiteRT bit-exactly."""
    m = TinyModel()
    x = m.tensor("x", [1, 4, 4, 3])
    q = m.tensor("q", [1, 4, 4, 3], "int8", scale=0.02, zp=-7)
    y = m.tensor("y", [1, 4, 4, 3])
    m.op(BO.QUANTIZE, [x], [q], version=2)
    m.op(BO.DEQUANTIZE, [q], [y], version=2)
    data = m.build([x], [y])
    xv = np.random.default_rng(3).uniform(-3, 3, (1, 4, 4, 3)).astype(np.float32)
    ref, _ = _litert(data, {"x": xv})
    g = load_model(data)
    np.testing.assert_array_equal(run_graph(g, {"x": xv})["y"], ref["y"])


# ---- error cases ----------------------------------------------------------------------------------------


def test_custom_op_is_unsupported():
    m = TinyModel()
    x, y = m.tensor("x", [1, 4]), m.tensor("y", [1, 4])
    m.op(BO.CUSTOM, [x], [y], custom="MyFancyOp")
    with pytest.raises(UnsupportedOpError, match="MyFancyOp"):
        import_tflite(m.build([x], [y]))


def test_unknown_builtin_is_unsupported():
    m = TinyModel()
    x, y = m.tensor("x", [1, 4]), m.tensor("y", [1, 4])
    m.op(BO.LSH_PROJECTION, [x], [y])
    with pytest.raises(UnsupportedOpError, match="LSH_PROJECTION"):
        import_tflite(m.build([x], [y]))


def test_wrong_identifier_and_tiny_files():
    data = bytearray(int8_model(True))
    data[4:8] = b"TFL2"
    with pytest.raises(ModelFormatError, match="identifier"):
        import_tflite(bytes(data))
    for blob in (b"", b"TFL3", b"\0\0\0\0TFL3"):
        with pytest.raises(ModelFormatError):
            import_tflite(blob)


def test_bad_buffer_index_and_size():
    m = TinyModel()
    x = m.tensor("x", [1, 4])
    w = m.tensor("w", [3, 4], data=np.ones((3, 4), np.float32))
    y = m.tensor("y", [1, 3])
    m.op(BO.FULLY_CONNECTED, [x, w], [y])
    good = m.build([x], [y])
    assert import_tflite(good).tensors["w"].data.shape == (3, 4)
    m.tensors[w]["shape"] = [3, 5]  # buffer holds 48 bytes, shape needs 60
    with pytest.raises(ModelFormatError, match="bytes"):
        import_tflite(m.build([x], [y]))
    m.tensors[w]["shape"] = [3, 4]
    m.ops[0]["inputs"] = [x, 7]
    with pytest.raises(ModelFormatError, match="tensor 7"):
        import_tflite(m.build([x], [y]))


def _must_fail_cleanly(data: bytes, canonicalize: bool = False) -> None:
    """Damaged files may import (a flip inside weight data is harmless) but never raise other types."""
    try:
        load_model(data) if canonicalize else import_tflite(data)
    except OpenNPUError:
        pass  # ModelFormatError mostly; a flip may also make an op unsupported or a shape invalid


@pytest.mark.parametrize("member", [BLAZEFACE, "int8"])
def test_truncated_files(member):
    data = int8_model(True) if member == "int8" else _fetch(MP, member).read_bytes()
    for frac in (0.02, 0.1, 0.33, 0.5, 0.77, 0.95, 0.999):
        cut = data[: int(len(data) * frac)]
        with pytest.raises(ModelFormatError):
            import_tflite(cut)


@pytest.mark.parametrize("member", [BLAZEFACE, "int8"])
def test_flipped_bytes(member):
    data = int8_model(True) if member == "int8" else _fetch(MP, member).read_bytes()
    rng = np.random.default_rng(1234)
    t0 = time.perf_counter()
    for _ in range(150):
        blob = bytearray(data)
        for pos in rng.integers(8, len(blob), size=int(rng.integers(1, 8))):
            blob[pos] ^= 1 << int(rng.integers(0, 8))
        _must_fail_cleanly(bytes(blob), canonicalize=member == "int8")
    assert time.perf_counter() - t0 < 60


def test_crafted_offsets():
    """Root/vtable offsets pointing outside the file or at random places."""
    data = bytearray(int8_model(True))
    rng = np.random.default_rng(7)
    for value in (0xFFFFFFF0, len(data) + 4, 0x7FFFFFFF, 3):
        blob = bytearray(data)
        blob[0:4] = int(value).to_bytes(4, "little")
        with pytest.raises(OpenNPUError):
            import_tflite(bytes(blob))
    for _ in range(100):  # overwrite random aligned words with large values (offsets/lengths)
        blob = bytearray(data)
        pos = int(rng.integers(2, len(blob) // 4)) * 4
        blob[pos : pos + 4] = int(rng.integers(0, 2**32)).to_bytes(4, "little")
        _must_fail_cleanly(bytes(blob))


def test_sparse_model_is_unsupported():
    data = _fetch(MP, "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite").read_bytes()
    with pytest.raises(UnsupportedOpError, match="sparse"):
        import_tflite(data)


def test_mediapipe_custom_op_is_named():
    data = _fetch(MP, "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite").read_bytes()
    with pytest.raises(UnsupportedOpError, match="Landmarks2TransformMatrix"):
        import_tflite(data)


# ---- the layout pass on its own ----------------------------------------------------------------------


def test_cancel_transposes_chain():
    """NHWC input -> T -> Conv / MaxPool -> T -> Add(const), Relu, Pad -> Concat -> T -> Conv -> T:
    only the transposes at the ends remain."""
    rng = np.random.default_rng(0)
    g = Graph("chain")
    g.add_tensor(Tensor("x", (1, 6, 6, 2)))
    g.inputs, g.outputs = ["x"], ["y"]
    w1 = g.add_const("w1", rng.standard_normal((2, 2, 3, 3)).astype(np.float32))
    w2 = g.add_const("w2", rng.standard_normal((3, 4, 1, 1)).astype(np.float32))
    c = g.add_const("c", rng.standard_normal(2).astype(np.float32))
    pads = g.add_const("pads", np.array([0, 1, 0, 0, 0, 0, 1, 0], np.int64))
    g.add_node("Transpose", ["x"], ["x_t"], {"perm": [0, 3, 1, 2]})
    g.add_node("Conv", ["x_t", w1], ["c1"], {"pads": [1, 1, 1, 1]})
    g.add_node("Transpose", ["c1"], ["c1_t"], {"perm": [0, 2, 3, 1]})
    g.add_node("Add", ["c1_t", c], ["a"])
    g.add_node("Relu", ["a"], ["r"])
    g.add_node("Pad", ["r", pads], ["p"])
    g.add_node("MaxPool", ["x_t"], ["mp"], {"kernel_shape": [1, 1]})
    g.add_node("Transpose", ["mp"], ["mp_t"], {"perm": [0, 2, 3, 1]})
    g.add_node("Pad", ["mp_t", pads], ["xp"])
    g.add_node("Concat", ["p", "xp"], ["cat"], {"axis": 3})
    g.add_node("Transpose", ["cat"], ["cat_t"], {"perm": [0, 3, 1, 2]})
    g.add_node("Conv", ["cat_t", w2], ["c2"])
    g.add_node("Transpose", ["c2"], ["y"], {"perm": [0, 2, 3, 1]})
    from opennpu.ir.passes import infer_shapes

    infer_shapes(g)
    x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
    ref = run_graph(g, {"x": x})["y"]
    assert cancel_transposes(g) > 0
    infer_shapes(g)
    np.testing.assert_allclose(run_graph(g, {"x": x})["y"], ref, rtol=1e-5, atol=1e-5)
    transposes = [n for n in g.nodes if n.op_type == "Transpose"]
    assert len(transposes) == 2  # one at the input, one at the output
    assert all(n.inputs[0] == "x" or n.outputs[0] == "y" for n in transposes)
    assert next(n for n in g.nodes if n.op_type == "Concat").attrs["axis"] == 1


def test_cancel_transposes_keeps_reshape_in_nhwc():
    g = Graph("reshape")
    g.add_tensor(Tensor("x", (1, 2, 3, 4)))
    g.inputs, g.outputs = ["x"], ["y"]
    g.add_node("Transpose", ["x"], ["t"], {"perm": [0, 2, 3, 1]})
    g.add_node("Relu", ["t"], ["r"])
    g.add_node("Reshape", ["r", g.add_const("s", np.array([1, -1], np.int64))], ["y"])
    from opennpu.ir.passes import infer_shapes

    infer_shapes(g)
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4)).astype(np.float32)
    ref = run_graph(g, {"x": x})["y"]
    cancel_transposes(g)
    infer_shapes(g)
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], ref)
    order = [n.op_type for n in g.nodes]
    assert order == ["Relu", "Transpose", "Reshape"]
    assert isinstance(g.nodes[0], Node)
