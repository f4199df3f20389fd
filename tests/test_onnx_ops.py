"""Float kernels of the ONNX ops vs ONNX Runtime: one small onnx.helper model per attribute variant.

Every case runs twice: with the data as a graph input (kernel at run time) and with everything as
initializers (kernel runs during constant folding at load time).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from opennpu.frontends import load_model
from opennpu.ir.ops.math_ops import erf
from opennpu.runtime.cpu import run_graph

RNG = np.random.default_rng(1234)
F32 = np.float32
I64 = np.int64


def rnd(*shape, lo=-3.0, hi=3.0) -> np.ndarray:
    return RNG.uniform(lo, hi, shape).astype(F32)


def make_model(nodes, inputs: dict, inits: dict, outputs, opset: int) -> bytes:
    vis = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in inputs.items()
    ]
    outs = [onnx.ValueInfoProto(name=o) for o in outputs]
    graph = helper.make_graph(
        nodes, "case", vis, outs, [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return model.SerializeToString()


def check(
    nodes,
    inputs: dict,
    inits: dict | None = None,
    outputs=("y",),
    opset: int = 17,
    tol: float = 1e-4,
    fold: bool = False,
) -> None:
    inits = dict(inits or {})
    if fold:
        inits, inputs = {**inputs, **inits}, {}
    data = make_model(nodes, inputs, inits, outputs, opset)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    refs = sess.run(list(outputs), inputs)
    graph = load_model(data)
    ours = run_graph(graph, inputs)
    for name, ref in zip(outputs, refs, strict=True):
        got = np.asarray(ours[name])
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        assert got.dtype == ref.dtype, (name, got.dtype, ref.dtype)
        if ref.dtype.kind == "f":
            scale = max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-30)
            err = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
            assert err <= tol * scale, f"{name}: max err {err:.3g} vs max|ref| {scale:.3g}"
        else:
            np.testing.assert_array_equal(got, ref)


N = helper.make_node
CASES: list = []


def case(id_: str, nodes, inputs, inits=None, outputs=("y",), opset=17, tol=1e-4):
    CASES.append(pytest.param(nodes, inputs, inits, outputs, opset, tol, id=id_))


# ---- Resize ----------
X4 = rnd(1, 2, 5, 7)
for coord in ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]:
    for rule in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]:
        for sc in ([1, 1, 2, 2], [1, 1, 1.7, 0.6], [1, 1, 0.5, 3]):
            case(
                f"resize-nearest-{coord}-{rule}-{sc[2]}x{sc[3]}",
                [
                    N(
                        "Resize",
                        ["x", "", "s"],
                        ["y"],
                        mode="nearest",
                        coordinate_transformation_mode=coord,
                        nearest_mode=rule,
                    )
                ],
                {"x": X4},
                {"s": np.array(sc, F32)},
            )
case(
    "resize-nearest-tf_half_pixel_for_nn-op11",
    [
        N(
            "Resize",
            ["x", "roi", "s"],
            ["y"],
            mode="nearest",
            coordinate_transformation_mode="tf_half_pixel_for_nn",
        )
    ],
    {"x": X4},
    {"roi": np.zeros(0, F32), "s": np.array([1, 1, 1.5, 2.5], F32)},
    opset=11,
)
case(
    "resize-nearest-op11-asymmetric-floor-2x",  # the YOLO / PP-OCR form: roi given as empty tensor
    [
        N(
            "Resize",
            ["x", "roi", "s"],
            ["y"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
    ],
    {"x": X4},
    {"roi": np.zeros(0, F32), "s": np.array([1, 1, 2, 2], F32)},
    opset=11,
)
for coord in ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]:
    for sc in ([1, 1, 2, 2], [1, 1, 1.3, 0.7], [1, 1, 0.4, 2.5]):
        case(
            f"resize-linear-{coord}-{sc[2]}x{sc[3]}",
            [N("Resize", ["x", "", "s"], ["y"], mode="linear", coordinate_transformation_mode=coord)],
            {"x": X4},
            {"s": np.array(sc, F32)},
        )
    case(
        f"resize-linear-{coord}-sizes",
        [N("Resize", ["x", "", "", "z"], ["y"], mode="linear", coordinate_transformation_mode=coord)],
        {"x": X4},
        {"z": np.array([1, 2, 9, 4], I64)},
    )
case(
    "resize-linear-half_pixel_symmetric-op19",
    [
        N(
            "Resize",
            ["x", "", "s"],
            ["y"],
            mode="linear",
            coordinate_transformation_mode="half_pixel_symmetric",
        )
    ],
    {"x": X4},
    {"s": np.array([1, 1, 1.7, 0.6], F32)},
    opset=19,
)
case(
    "resize-linear-op11-sizes-empty-scales",
    [
        N(
            "Resize",
            ["x", "roi", "s", "z"],
            ["y"],
            mode="linear",
            coordinate_transformation_mode="align_corners",
        )
    ],
    {"x": X4},
    {"roi": np.zeros(0, F32), "s": np.zeros(0, F32), "z": np.array([1, 2, 3, 11], I64)},
    opset=11,
)
for coord in ["half_pixel", "align_corners", "asymmetric"]:
    for excl in (0, 1):
        case(
            f"resize-cubic-{coord}-excl{excl}",
            [
                N(
                    "Resize",
                    ["x", "", "s"],
                    ["y"],
                    mode="cubic",
                    coordinate_transformation_mode=coord,
                    exclude_outside=excl,
                    cubic_coeff_a=-0.5,
                )
            ],
            {"x": X4},
            {"s": np.array([1, 1, 1.6, 0.8], F32)},
        )
for mode in ["nearest", "linear"]:
    case(
        f"resize-{mode}-tf_crop_and_resize",
        [
            N(
                "Resize",
                ["x", "roi", "", "z"],
                ["y"],
                mode=mode,
                coordinate_transformation_mode="tf_crop_and_resize",
                extrapolation_value=-7.0,
            )
        ],
        {"x": X4},
        {"roi": np.array([0, 0, -0.2, 0.3, 1, 1, 0.9, 1.4], F32), "z": np.array([1, 2, 6, 5], I64)},
    )
case(
    "resize-op18-axes-not_larger",
    [
        N(
            "Resize",
            ["x", "", "", "z"],
            ["y"],
            mode="linear",
            axes=[2, 3],
            keep_aspect_ratio_policy="not_larger",
        )
    ],
    {"x": X4},
    {"z": np.array([8, 20], I64)},
    opset=18,
)
case(
    "resize-op18-axes-not_smaller-nearest",
    [
        N(
            "Resize",
            ["x", "", "", "z"],
            ["y"],
            mode="nearest",
            axes=[3, 2],
            keep_aspect_ratio_policy="not_smaller",
        )
    ],
    {"x": X4},
    {"z": np.array([9, 3], I64)},
    opset=18,
)

# ---- ConvTranspose ----------
XC = rnd(1, 4, 5, 6)
for id_, attrs, wshape in [
    ("k2s2", dict(kernel_shape=[2, 2], strides=[2, 2]), (4, 3, 2, 2)),
    ("pads-group2", dict(strides=[2, 2], pads=[1, 0, 1, 1], group=2), (4, 3, 3, 3)),
    ("outpad-dilation", dict(strides=[2, 3], output_padding=[1, 0], dilations=[2, 1]), (4, 3, 3, 2)),
    ("output_shape", dict(strides=[2, 2], output_shape=[10, 11]), (4, 3, 3, 3)),
    ("same_upper", dict(strides=[2, 2], auto_pad="SAME_UPPER"), (4, 3, 3, 3)),
    ("same_lower", dict(strides=[2, 2], auto_pad="SAME_LOWER"), (4, 3, 3, 3)),
    ("depthwise", dict(group=4, strides=[2, 2]), (4, 1, 4, 4)),
]:
    case(
        f"convtranspose-{id_}",
        [N("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)],
        {"x": XC},
        {"w": rnd(*wshape), "b": rnd(wshape[1] * attrs.get("group", 1))},
    )
case(
    "convtranspose-1d-nobias",
    [N("ConvTranspose", ["x", "w"], ["y"], strides=[3], pads=[1, 2])],
    {"x": rnd(2, 3, 7)},
    {"w": rnd(3, 2, 4)},
)
case(
    "convtranspose-3d",
    [N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 1, 2])],
    {"x": rnd(1, 2, 3, 4, 3)},
    {"w": rnd(2, 2, 2, 3, 2)},
)

# ---- Slice / Split / Gather / Scatter / Tile / Expand ----------
XS = rnd(3, 4, 5, 6)
BIG = np.iinfo(np.int64).max
for id_, st, en, ax, sp in [
    ("basic", [0, 1], [2, 3], [0, 1], None),
    ("negative", [-3, -4], [-1, 100], [2, 3], [1, 2]),
    ("reverse", [-1, BIG], [-BIG, 0], [0, 3], [-1, -2]),
    ("no-axes", [1, 0, 2], [3, 3, 5], None, None),
    ("negative-axes", [1], [BIG], [-1], [2]),
    ("empty", [3], [1], [1], None),
]:
    ins = ["x", "st", "en"] + (["ax"] if ax is not None or sp is not None else []) + (["sp"] if sp else [])
    inits = {"st": np.array(st, I64), "en": np.array(en, I64)}
    if ax is not None or sp is not None:
        inits["ax"] = np.array(ax if ax is not None else list(range(len(st))), I64)
    if sp:
        inits["sp"] = np.array(sp, I64)
    for opset in (11, 13):
        case(f"slice-{id_}-op{opset}", [N("Slice", ins, ["y"])], {"x": XS}, inits, opset=opset)
case(
    "split-op11-attr",
    [N("Split", ["x"], ["a", "b"], axis=1, split=[1, 3])],
    {"x": XS},
    outputs=("a", "b"),
    opset=11,
)
case(
    "split-op11-equal",
    [N("Split", ["x"], ["a", "b", "c"], axis=0)],
    {"x": XS},
    outputs=("a", "b", "c"),
    opset=11,
)
case(
    "split-op13-input",
    [N("Split", ["x", "s"], ["a", "b", "c"], axis=-1)],
    {"x": XS},
    {"s": np.array([1, 2, 3], I64)},
    outputs=("a", "b", "c"),
    opset=13,
)
case(
    "split-op18-num_outputs-uneven",
    [N("Split", ["x"], ["a", "b"], axis=2, num_outputs=2)],
    {"x": XS},
    outputs=("a", "b"),
    opset=18,
)
for axis in (0, 1, -1):
    case(
        f"gather-axis{axis}",
        [N("Gather", ["x", "i"], ["y"], axis=axis)],
        {"x": XS},
        {"i": np.array([[0, -1], [2, 1]], I64)},
    )
case("gather-scalar-index", [N("Gather", ["x", "i"], ["y"], axis=1)], {"x": XS}, {"i": np.array(-2, I64)})
case(
    "gather-int32-index",
    [N("Gather", ["x", "i"], ["y"], axis=2)],
    {"x": XS},
    {"i": np.array([4, 0], np.int32)},
)
case(
    "gatherelements",
    [N("GatherElements", ["x", "i"], ["y"], axis=1)],
    {"x": rnd(3, 4)},
    {"i": np.array([[0, 3], [-1, 2], [1, 1]], I64)},
)
case("gathernd", [N("GatherND", ["x", "i"], ["y"])], {"x": XS}, {"i": np.array([[0, 1], [2, -1]], I64)})
case(
    "gathernd-batch",
    [N("GatherND", ["x", "i"], ["y"], batch_dims=1)],
    {"x": XS},
    {"i": np.array([[[0, 1]], [[2, 3]], [[1, 0]]], I64)},
)
case(
    "scatternd",
    [N("ScatterND", ["x", "i", "u"], ["y"])],
    {"x": XS},
    {"i": np.array([[0, 1], [2, 3]], I64), "u": rnd(2, 5, 6)},
)
case(
    "scatternd-add-op16",
    [N("ScatterND", ["x", "i", "u"], ["y"], reduction="add")],
    {"x": XS},
    {"i": np.array([[0], [0], [2]], I64), "u": rnd(3, 4, 5, 6)},
    opset=16,
)
case(
    "scatterelements",
    [N("ScatterElements", ["x", "i", "u"], ["y"], axis=1)],
    {"x": rnd(3, 4)},
    {"i": np.array([[0, 3], [-1, 2], [1, 0]], I64), "u": rnd(3, 2)},
)
case("tile", [N("Tile", ["x", "r"], ["y"])], {"x": rnd(2, 3)}, {"r": np.array([2, 3], I64)})
case(
    "expand-bidirectional",
    [N("Expand", ["x", "s"], ["y"])],
    {"x": rnd(3, 1)},
    {"s": np.array([2, 1, 4], I64)},
)
case("expand-ones", [N("Expand", ["x", "s"], ["y"])], {"x": rnd(2, 3)}, {"s": np.array([1, 1], I64)})

# ---- Cast / Range / ConstantOfShape / Where / shapes ----------
XR = rnd(2, 3, 4, lo=-5, hi=5)
for to in (
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.BOOL,
    TensorProto.FLOAT16,
    TensorProto.DOUBLE,
    TensorProto.INT8,
    TensorProto.UINT8,
):
    xin = XR if to not in (TensorProto.UINT8,) else np.abs(XR)
    case(f"cast-to-{TensorProto.DataType.Name(to)}", [N("Cast", ["x"], ["y"], to=to)], {"x": xin})
case("cast-int-to-float", [N("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], {"x": np.arange(-5, 7, dtype=I64)})
case("castlike", [N("CastLike", ["x", "t"], ["y"])], {"x": XR}, {"t": np.zeros(1, np.int32)}, opset=15)
# Range's output length depends on its values: they must fold (here from Shape arithmetic).
RANGE_X = {"x": rnd(2, 17)}
RANGE_LIMIT = [N("Shape", ["x"], ["s"]), N("Gather", ["s", "one"], ["n"], axis=0)]
case(
    "range-int",
    [*RANGE_LIMIT, N("Range", ["a", "n", "c"], ["y"])],
    RANGE_X,
    {"one": np.array(1, I64), "a": np.array(2, I64), "c": np.array(3, I64)},
)
case(
    "range-float-negative",
    [
        *RANGE_LIMIT,
        N("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        N("Neg", ["nf"], ["l"]),
        N("Range", ["a", "l", "c"], ["y"]),
    ],
    RANGE_X,
    {"one": np.array(1, I64), "a": np.array(1.5, F32), "c": np.array(-0.5, F32)},
)
case(
    "range-empty",
    [*RANGE_LIMIT, N("Range", ["n", "a", "c"], ["y"])],
    RANGE_X,
    {"one": np.array(1, I64), "a": np.array(1, I64), "c": np.array(1, I64)},
)
case("constantofshape-default", [N("Shape", ["x"], ["s"]), N("ConstantOfShape", ["s"], ["y"])], {"x": XR})
case(
    "constantofshape-int",
    [
        N("Shape", ["x"], ["s"]),
        N("ConstantOfShape", ["s"], ["y"], value=helper.make_tensor("v", TensorProto.INT64, [1], [7])),
    ],
    {"x": XR},
)
case(
    "where",
    [N("Greater", ["x", "t"], ["c"]), N("Where", ["c", "x", "z"], ["y"])],
    {"x": XR},
    {"t": np.array(0.5, F32), "z": rnd(3, 1)},
)
case("shape-start-end-op15", [N("Shape", ["x"], ["y"], start=1, end=-1)], {"x": XR}, opset=15)
case("squeeze-op11-attr", [N("Squeeze", ["x"], ["y"], axes=[1, -1])], {"x": rnd(2, 1, 3, 1)}, opset=11)
case(
    "squeeze-op13-input",
    [N("Squeeze", ["x", "a"], ["y"])],
    {"x": rnd(2, 1, 3, 1)},
    {"a": np.array([1], I64)},
    opset=13,
)
case("unsqueeze-op11-attr", [N("Unsqueeze", ["x"], ["y"], axes=[0, -1])], {"x": rnd(2, 3)}, opset=11)
case(
    "unsqueeze-op13-input",
    [N("Unsqueeze", ["x", "a"], ["y"])],
    {"x": rnd(2, 3)},
    {"a": np.array([1, 3], I64)},
    opset=13,
)

# ---- reductions / arg / topk ----------
XD = rnd(2, 3, 4, 5, lo=0.1, hi=2.0)
REDUCE = [
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSum",
    "ReduceLogSumExp",
]
for op in REDUCE:
    for keep in (0, 1):
        case(
            f"{op}-op11-attr-keep{keep}",
            [N(op, ["x"], ["y"], axes=[1, -1], keepdims=keep)],
            {"x": XD},
            opset=11,
        )
        case(
            f"{op}-op18-input-keep{keep}",
            [N(op, ["x", "a"], ["y"], keepdims=keep)],
            {"x": XD},
            {"a": np.array([0, 2], I64)},
            opset=18,
        )
    case(f"{op}-all-axes", [N(op, ["x"], ["y"])], {"x": XD}, opset=13)
case(
    "ReduceSum-op13-input",
    [N("ReduceSum", ["x", "a"], ["y"], keepdims=0)],
    {"x": XD},
    {"a": np.array([3], I64)},
    opset=13,
)
case(
    "ReduceMean-op18-noop-empty",
    [N("ReduceMean", ["x", "a"], ["y"], noop_with_empty_axes=1)],
    {"x": XD},
    {"a": np.zeros(0, I64)},
    opset=18,
)
XT = np.round(rnd(3, 6, 4), 0)  # many ties
for op in ("ArgMax", "ArgMin"):
    for keep in (0, 1):
        for last in (0, 1):
            case(
                f"{op}-keep{keep}-last{last}",
                [N(op, ["x"], ["y"], axis=1, keepdims=keep, select_last_index=last)],
                {"x": XT},
            )
for largest in (0, 1):
    case(
        f"topk-largest{largest}",
        [N("TopK", ["x", "k"], ["v", "i"], axis=1, largest=largest)],
        {"x": XT},
        {"k": np.array([3], I64)},
        outputs=("v", "i"),
    )

# ---- normalizations / activations ----------
XN = rnd(2, 6, 5, 4)
case(
    "layernorm-last",
    [N("LayerNormalization", ["x", "s", "b"], ["y"], epsilon=1e-5)],
    {"x": XN},
    {"s": rnd(4), "b": rnd(4)},
)
case(
    "layernorm-axis1-nobias",
    [N("LayerNormalization", ["x", "s"], ["y"], axis=1)],
    {"x": XN},
    {"s": rnd(6, 5, 4)},
)
case(
    "layernorm-stats",
    [N("LayerNormalization", ["x", "s", "b"], ["y", "m", "r"], axis=-2)],
    {"x": XN},
    {"s": rnd(5, 4), "b": rnd(5, 4)},
    outputs=("y", "m", "r"),
)
case(
    "instancenorm",
    [N("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)],
    {"x": XN},
    {"s": rnd(6), "b": rnd(6)},
)
case(
    "groupnorm-op21",
    [N("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3)],
    {"x": XN},
    {"s": rnd(6), "b": rnd(6)},
    opset=21,
)
case("lpnorm", [N("LpNormalization", ["x"], ["y"], axis=1, p=2)], {"x": XN})
case("lpnorm-p1", [N("LpNormalization", ["x"], ["y"], axis=-1, p=1)], {"x": XN})
for opset in (11, 13):
    for axis in (0, 1, -1):
        for op in ("Softmax", "LogSoftmax", "Hardmax"):
            case(f"{op}-op{opset}-axis{axis}", [N(op, ["x"], ["y"], axis=axis)], {"x": XN}, opset=opset)
case("softmax-op11-default-axis", [N("Softmax", ["x"], ["y"])], {"x": XN}, opset=11)
XE = np.concatenate([np.linspace(-7, 7, 281), rnd(100, lo=-0.1, hi=0.1)]).astype(F32)
case("erf", [N("Erf", ["x"], ["y"])], {"x": XE}, tol=1e-6)
case("gelu-op20", [N("Gelu", ["x"], ["y"])], {"x": XE}, opset=20)
case("gelu-tanh-op20", [N("Gelu", ["x"], ["y"], approximate="tanh")], {"x": XE}, opset=20)
for op, attrs, opset in [
    ("Elu", {"alpha": 0.7}, 17),
    ("Selu", {}, 17),
    ("Celu", {"alpha": 1.3}, 17),
    ("Mish", {}, 18),
    ("Softsign", {}, 17),
    ("ThresholdedRelu", {"alpha": 0.4}, 17),
    ("Shrink", {"lambd": 0.6, "bias": 0.2}, 17),
    ("Sin", {}, 17),
    ("Cos", {}, 17),
    ("Tan", {}, 17),
    ("Atan", {}, 17),
    ("Sinh", {}, 17),
    ("Cosh", {}, 17),
    ("Sign", {}, 17),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 17),
]:
    case(f"{op}", [N(op, ["x"], ["y"], **attrs)], {"x": XE}, opset=opset)
case(
    "round-half-even",
    [N("Round", ["x"], ["y"])],
    {"x": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4], F32)},
)
case(
    "asin-acos",
    [N("Asin", ["x"], ["a"]), N("Acos", ["x"], ["b"])],
    {"x": rnd(20, lo=-1, hi=1)},
    outputs=("a", "b"),
)
case("mod-int", [N("Mod", ["x", "m"], ["y"])], {"x": np.arange(-7, 8, dtype=I64)}, {"m": np.array(3, I64)})
case("mod-fmod-float", [N("Mod", ["x", "m"], ["y"], fmod=1)], {"x": XE}, {"m": np.array(1.3, F32)})
case("dropout-op12", [N("Dropout", ["x"], ["y", "mask"])], {"x": XE}, outputs=("y", "mask"), opset=12)
case("clip-op11-min-only", [N("Clip", ["x", "lo"], ["y"])], {"x": XE}, {"lo": np.array(-0.5, F32)}, opset=11)

# ---- logic ----------
A, B = rnd(3, 4) > 0, rnd(4) > 0
for op in ("And", "Or", "Xor"):
    case(f"{op}", [N(op, ["a", "b"], ["y"])], {"a": A}, {"b": B})
case("not", [N("Not", ["a"], ["y"])], {"a": A})
XQ = np.round(rnd(3, 4))
for op in ("GreaterOrEqual", "LessOrEqual"):
    case(f"{op}", [N(op, ["x", "t"], ["y"])], {"x": XQ}, {"t": np.round(rnd(4))})
XI = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0], F32)
case("isnan", [N("IsNaN", ["x"], ["y"])], {"x": XI})
case("isinf-pos", [N("IsInf", ["x"], ["y"], detect_negative=0)], {"x": XI})


@pytest.mark.parametrize("fold", [False, True], ids=["runtime", "folded"])
@pytest.mark.parametrize("nodes,inputs,inits,outputs,opset,tol", CASES)
def test_op_matches_onnxruntime(nodes, inputs, inits, outputs, opset, tol, fold):
    check(nodes, inputs, inits, outputs, opset, tol, fold)


def test_erf_accuracy():
    x = np.concatenate([np.linspace(-9, 9, 200001), np.geomspace(1e-30, 10, 2000), [0.0, -0.0]])
    ref = np.array([math.erf(v) for v in x])
    assert np.abs(erf(x) - ref).max() < 1e-12  # float64 path; the brief needs < 1e-7
    x32 = x.astype(F32)
    assert erf(x32).dtype == F32
    assert (
        np.abs(erf(x32).astype(np.float64) - np.array([math.erf(v) for v in x32.astype(np.float64)])).max()
        < 1e-7
    )
    assert np.isnan(erf(np.array([np.nan]))).all()
