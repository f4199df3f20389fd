"""Hand-built architectures with random weights, for the performance model's published-figure comparisons.

The published RK3588 figures (shared/reference/rk3588-npu.md §1.8, §3, §4.4) are for models the PyPI wheels do not
ship (MobileNetV1, YOLOv5s, lite_transformer) or for bare matmuls. Timing does not depend on weight values, so
these builders write the architectures as ONNX with seeded random weights, then load them like any model
(``opennpu.load_model(bytes)``: BatchNorm-free convs, SiLU fused from x*sigmoid(x)).

* ``mobilenet_v1``: Howard et al. 2017, Table 1 (width 1.0, 224x224, ReLU6, 1000 classes).
* ``yolov5s``: ultralytics YOLOv5 v6 ``yolov5s.yaml`` (depth 0.33, width 0.50; Conv k6 s2 stem, C3 blocks,
  SPPF k5, PANet head, 3 detect convs of 255 channels), SiLU or ReLU (rknn_model_zoo's ``yolov5s_relu``).
* ``matmul``: one MatMul of an (M, K) activation by a constant (K, N) matrix.
* ``transformer``: an encoder (or decoder: masked self-attention + cross-attention) stack, post-LN, GELU-free
  ReLU FFN -- an approximation of lite_transformer's layers (its long-short-range attention splits channels
  between attention and a light convolution; here all channels go through attention).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    def __init__(self, name: str, seed: int = 0) -> None:
        self.name, self.nodes, self.inits, self.n = name, [], [], 0
        self.rng = np.random.default_rng(seed)

    def fresh(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, value: np.ndarray, base: str = "w") -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str | None = None, **attrs) -> str:
        out = self.fresh(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, s: int = 1, group: int = 1, act: str | None = "relu6",
             pad: int | None = None) -> str:
        p = k // 2 if pad is None else pad
        w = self.rng.normal(0, (2.0 / (k * k * cin / group)) ** 0.5, (cout, cin // group, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.01, cout).astype(np.float32)
        y = self.op("Conv", [x, self.const(w), self.const(b, "b")], "conv", kernel_shape=[k, k], strides=[s, s],
                    pads=[p] * 4, group=group)
        return self.act(y, act)

    def act(self, y: str, act: str | None) -> str:
        if act == "relu6":
            return self.op("Clip", [y, self.const(np.float32(0), "lo"), self.const(np.float32(6), "hi")], "relu6")
        if act == "relu":
            return self.op("Relu", [y])
        if act == "silu":
            return self.op("Mul", [y, self.op("Sigmoid", [y])], "silu")
        return y

    def model(self, inputs: list[tuple[str, tuple[int, ...]]], outputs: list[str]) -> bytes:
        g = helper.make_graph(self.nodes, self.name,
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
                              [helper.make_empty_tensor_value_info(o) for o in outputs],
                              self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="opennpu.timing")
        m.ir_version = 8
        return m.SerializeToString()


def mobilenet_v1(size: int = 224, classes: int = 1000) -> bytes:
    b = _Builder("mobilenet_v1")
    x = b.conv("input", 3, 32, 3, 2)
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    c = 32
    for cout, s in cfg:
        x = b.conv(x, c, c, 3, s, group=c)
        x = b.conv(x, c, cout, 1)
        c = cout
    x = b.op("GlobalAveragePool", [x])
    x = b.op("Flatten", [x], axis=1)
    w = b.rng.normal(0, 0.02, (classes, c)).astype(np.float32)
    y = b.op("Gemm", [x, b.const(w), b.const(np.zeros(classes, np.float32), "b")], "fc", transB=1)
    return b.model([("input", (1, 3, size, size))], [y])


def yolov5(size: int = 640, act: str = "silu", width: float = 0.50, depth: float = 0.33) -> bytes:
    """YOLOv5 v6 at a width/depth multiple: n = (0.25, 0.33), s = (0.50, 0.33), m = (0.75, 0.67)."""
    b = _Builder(f"yolov5_w{width}_d{depth}_{act}")

    def ch(c):
        return int(math.ceil(c * width / 8) * 8)

    def rep(n):
        return max(round(n * depth), 1)

    def cv(x, c1, c2, k=1, s=1):
        return b.conv(x, c1, c2, k, s, act=act)

    def c3(x, c1, c2, n, shortcut=True):
        h = c2 // 2
        y1 = cv(x, c1, h)
        for _ in range(n):
            z = cv(cv(y1, h, h, 1), h, h, 3)
            y1 = b.op("Add", [y1, z]) if shortcut else z
        y2 = cv(x, c1, h)
        return cv(b.op("Concat", [y1, y2], axis=1), 2 * h, c2)

    def up(x):
        return b.op("Resize", [x, "", b.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")

    c32, c64, c128, c256, c512, c1024 = (ch(c) for c in (64, 128, 256, 512, 1024, 2048))
    x = b.conv("images", 3, c32, 6, 2, act=act, pad=2)
    x = cv(x, c32, c64, 3, 2)
    x = c3(x, c64, c64, rep(3))
    x = cv(x, c64, c128, 3, 2)
    p3 = c3(x, c128, c128, rep(6))
    x = cv(p3, c128, c256, 3, 2)
    p4 = c3(x, c256, c256, rep(9))
    x = cv(p4, c256, c512, 3, 2)
    x = c3(x, c512, c512, rep(3))
    h = cv(x, c512, c256)  # SPPF k5
    m1 = b.op("MaxPool", [h], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    m2 = b.op("MaxPool", [m1], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    m3 = b.op("MaxPool", [m2], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    x = cv(b.op("Concat", [h, m1, m2, m3], axis=1), c1024, c512)
    h10 = cv(x, c512, c256)
    x = c3(b.op("Concat", [up(h10), p4], axis=1), c512, c256, rep(3), False)
    h14 = cv(x, c256, c128)
    out3 = c3(b.op("Concat", [up(h14), p3], axis=1), c256, c128, rep(3), False)
    x = cv(out3, c128, c128, 3, 2)
    out4 = c3(b.op("Concat", [x, h14], axis=1), c256, c256, rep(3), False)
    x = cv(out4, c256, c256, 3, 2)
    out5 = c3(b.op("Concat", [x, h10], axis=1), c512, c512, rep(3), False)
    heads = [b.conv(o, c, 255, 1, act=None) for o, c in ((out3, c128), (out4, c256), (out5, c512))]
    return b.model([("images", (1, 3, size, size))], heads)


def yolov5s(size: int = 640, act: str = "silu") -> bytes:
    return yolov5(size, act)


def matmul(m: int, k: int, n: int) -> bytes:
    b = _Builder(f"matmul_{m}x{k}x{n}")
    w = b.rng.normal(0, k ** -0.5, (k, n)).astype(np.float32)
    y = b.op("MatMul", ["a", b.const(w)], "c")
    return b.model([("a", (m, k))], [y])


def transformer(layers: int = 6, d: int = 256, ffn: int = 1024, heads: int = 4, tokens: int = 16,
                decoder: bool = False) -> bytes:
    b = _Builder(f"transformer_{'dec' if decoder else 'enc'}_{layers}x{d}")
    hd = d // heads

    def linear(x, cin, cout):
        w = b.rng.normal(0, cin ** -0.5, (cin, cout)).astype(np.float32)
        return b.op("Add", [b.op("MatMul", [x, b.const(w)]), b.const(np.zeros(cout, np.float32), "b")])

    def ln(x):
        return b.op("LayerNormalization", [x, b.const(np.ones(d, np.float32), "g"),
                                           b.const(np.zeros(d, np.float32), "be")], axis=-1)

    def heads_of(x):  # (T, d) -> (H, T, hd)
        r = b.op("Reshape", [x, b.const(np.array([tokens, heads, hd], np.int64), "shape")])
        return b.op("Transpose", [r], perm=[1, 0, 2])

    def attention(q_in, kv_in):
        q, k, v = (heads_of(linear(t, d, d)) for t in (q_in, kv_in, kv_in))
        kt = b.op("Transpose", [k], perm=[0, 2, 1])
        s = b.op("Mul", [b.op("MatMul", [q, kt]), b.const(np.float32(hd ** -0.5), "scale")])
        p = b.op("Softmax", [s], axis=-1)
        o = b.op("Transpose", [b.op("MatMul", [p, v])], perm=[1, 0, 2])
        o = b.op("Reshape", [o, b.const(np.array([tokens, d], np.int64), "shape")])
        return linear(o, d, d)

    x = "x"
    for _ in range(layers):
        x = ln(b.op("Add", [x, attention(x, x)]))
        if decoder:
            x = ln(b.op("Add", [x, attention(x, "memory")]))
        h = b.op("Relu", [linear(x, d, ffn)])
        x = ln(b.op("Add", [x, linear(h, ffn, d)]))
    inputs = [("x", (tokens, d))] + ([("memory", (tokens, d))] if decoder else [])
    return b.model(inputs, [x])




# ---------------------------------------------------------------------------------------------- published figures

REF = "shared/reference/rk3588-npu.md"


@dataclass(frozen=True)
class Published:
    """One published RK3588 figure and how to reproduce its setting with the cost model."""

    name: str
    model: str  # key of MODELS
    dtype: str  # "int8" | "float16"
    cores: int
    clock_mhz: float
    driver: str  # "rknn" | "rocket"
    ms: float | None  # published latency (None: a throughput figure, see tops)
    source: str
    tops: float | None = None  # published throughput (TOPS / TFLOPS) for bare matmuls


MODELS: dict[str, Callable[[], bytes]] = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenetv2": lambda: b"zoo:mobilenetv2",
    "yolov5s": yolov5s,
    "yolov5s_relu": lambda: yolov5s(act="relu"),
    "yolov5n": lambda: yolov5(width=0.25, depth=0.33),
    "yolov5m": lambda: yolov5(width=0.75, depth=0.67),
    "matmul_128x1024x8192": lambda: matmul(128, 1024, 8192),
    "lite_transformer_enc16": lambda: transformer(),
    "lite_transformer_dec16": lambda: transformer(decoder=True),
}

PUBLISHED: list[Published] = [
    Published("MobileNetV1 int8, RKNN, 1 core", "mobilenet_v1", "int8", 1, 1000, "rknn", 2.18,
              f"widgetii librocketnpu/BENCHMARKS.md ({REF} §1.8)"),
    Published("MobileNetV1 int8, Mesa+rocket, 1 core", "mobilenet_v1", "int8", 1, 200, "rocket", 11.18,
              f"widgetii BENCHMARKS.md, Mesa 26.0.2; Tomeu 10-11 ms ({REF} §1.8)"),
    Published("mobilenetv2-12 int8, RKNN, 1 core", "mobilenetv2", "int8", 1, 1000, "rknn", 2.2,
              f"rknn_model_zoo v2.3.2 README, 450.7 FPS ({REF} §4.4)"),
    Published("yolov5s 640 int8, RKNN, 1 core", "yolov5s", "int8", 1, 1000, "rknn", 20.7,
              f"rknn_model_zoo v2.3.2, 48.4 FPS ({REF} §4.4)"),
    Published("yolov5n 640 int8, RKNN, 1 core", "yolov5n", "int8", 1, 1000, "rknn", 12.1,
              f"rknn_model_zoo v2.3.2, 82.5 FPS ({REF} §4.4)"),
    Published("yolov5m 640 int8, RKNN, 1 core", "yolov5m", "int8", 1, 1000, "rknn", 47.8,
              f"rknn_model_zoo v2.3.2, 20.9 FPS ({REF} §4.4)"),
    Published("yolov5s 640 int8, RKNN SDK 1.5, 1 core", "yolov5s", "int8", 1, 1000, "rknn", 18.84,
              f"jas-hacks 2023, single-core instance ({REF} §4.4)"),
    Published("yolov5s 640 int8, RKNN SDK 1.5, 3 cores", "yolov5s", "int8", 3, 1000, "rknn", 9.86,
              f"jas-hacks 2023, core mask 0_1_2 ({REF} §4.4)"),
    Published("yolov5s_relu 640 int8, RKNN, 1 core", "yolov5s_relu", "int8", 1, 1000, "rknn", 15.1,
              f"rknn_model_zoo v2.3.2, 66.1 FPS ({REF} §4.4)"),
    Published("matmul 128x1024x8192 int8 peak", "matmul_128x1024x8192", "int8", 1, 1000, "rknn", None,
              f"Martin Chang EP3, ~1.8 TOPS ({REF} §3)", tops=1.8),
    Published("matmul 128x1024x8192 fp16 peak", "matmul_128x1024x8192", "float16", 1, 1000, "rknn", None,
              f"Martin Chang EP3, ~900 GFLOPS native layout ({REF} §3)", tops=0.9),
    Published("lite_transformer encoder, 16 tokens, fp16", "lite_transformer_enc16", "float16", 1, 1000, "rknn", 1.2,
              f"rknn_model_zoo v2.3.2, 867.6 FPS ({REF} §4.4)"),
    Published("lite_transformer decoder, 16 tokens, fp16", "lite_transformer_dec16", "float16", 1, 1000, "rknn", 2.9,
              f"rknn_model_zoo v2.3.2, 343.8 FPS ({REF} §4.4)"),
]


def load_timing_model(key: str):
    """The IR graph of MODELS[key] (zoo models through the zoo)."""
    from opennpu.frontends import load_model

    data = MODELS[key]()
    if data.startswith(b"zoo:"):
        return load_model(data[4:].decode())
    return load_model(data)


__all__ = ["MODELS", "PUBLISHED", "Published", "load_timing_model", "matmul", "mobilenet_v1", "transformer", "yolov5s"]
