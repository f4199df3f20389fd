"""A small ONNX graph writer on top of ``onnx.helper`` shared by the checkpoint builders (no torch).

Builders turn a state_dict into an opset-17 ModelProto with static input shapes. Weights become
initializers named after their state_dict keys, so a graph can be traced back to the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...errors import CheckpointError

OPSET = 17
# Builders leave only the batch dim symbolic (everything else static), so load_model(..., input_shapes) can
# pin another batch size; the zoo pins it to 1. Pass batch=1 to a builder for a fully static model.
BATCH = "batch"
IR_VERSION = 8  # readable by every onnxruntime >= 1.10

_ELEM = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "int32": TensorProto.INT32}


def tf_same_pads(in_hw: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """TensorFlow 'SAME' padding as ONNX pads [top, left, bottom, right]: output = ceil(in / stride), the
    odd pixel goes to the bottom/right (what Conv2dStaticSamePadding's ZeroPad2d does)."""
    begins, ends = [], []
    for i, k, s in zip(in_hw, kernel, stride, strict=True):
        total = max((math.ceil(i / s) - 1) * s + k - i, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


class Weights:
    """A state_dict with checked access: a missing key or a wrong shape is a CheckpointError."""

    def __init__(self, sd: Mapping[str, np.ndarray], what: str) -> None:
        self.sd, self.what, self.used = sd, what, set()

    def __contains__(self, key: str) -> bool:
        return key in self.sd

    def get(self, key: str, shape: Sequence[int | None] | None = None) -> np.ndarray:
        arr = self.sd.get(key)
        if arr is None:
            raise CheckpointError(f"{self.what}: the checkpoint lacks {key!r}")
        if shape is not None and (arr.ndim != len(shape) or any(
                s is not None and s != d for s, d in zip(shape, arr.shape, strict=True))):
            raise CheckpointError(f"{self.what}: {key!r} has shape {arr.shape}, expected {tuple(shape)}")
        self.used.add(key)
        return arr

    def check_all_used(self, ignore: Sequence[str] = ("num_batches_tracked",)) -> None:
        """Weights the graph did not use mean the checkpoint is another architecture (e.g. SE blocks)."""
        left = sorted(k for k in self.sd if k not in self.used and not any(i in k for i in ignore))
        if left:
            raise CheckpointError(f"{self.what}: {len(left)} checkpoint tensors do not fit the architecture, "
                                  f"e.g. {left[:3]}")


class OnnxWriter:
    """Collects nodes/initializers; ``node`` returns the output name(s) so builders read like code."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count: dict[str, int] = {}

    def _fresh(self, base: str) -> str:
        n = self._count.get(base, 0)
        self._count[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def input(self, name: str, dtype: str, shape: Sequence[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, _ELEM[dtype], list(shape)))
        return name

    def output(self, name: str, dtype: str, shape: Sequence[int | str]) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, _ELEM[dtype], list(shape)))

    def const(self, name: str, value: np.ndarray | float | Sequence[int], dtype: str | None = None) -> str:
        arr = np.asarray(value, dtype=dtype) if dtype or not isinstance(value, np.ndarray) else value
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        name = self._fresh(name)
        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(arr), name)
        return name

    def node(self, op: str, inputs: Sequence[str], name: str | None = None, outputs: int | Sequence[str] = 1,
             **attrs: Any) -> str | list[str]:
        base = self._fresh(name or op.lower())
        outs = [f"{base}:{i}" if i else base for i in range(outputs)] if isinstance(outputs, int) \
            else list(outputs)
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=base, **attrs))
        return outs[0] if len(outs) == 1 else outs

    # -- common layers ----------------------------------------------------------------------------------
    def conv(self, x: str, w: np.ndarray, b: np.ndarray | None, wname: str, *, stride: int = 1,
             pads: Sequence[int] = (0, 0, 0, 0), group: int = 1) -> str:
        ins = [x, self.const(wname + ".weight", w)]
        if b is not None:
            ins.append(self.const(wname + ".bias", b))
        return self.node("Conv", ins, name=wname, kernel_shape=list(w.shape[2:]), strides=[stride, stride],
                         pads=list(pads), group=group, dilations=[1, 1])

    def batchnorm(self, x: str, W: Weights, prefix: str, channels: int, eps: float) -> str:
        p = [self.const(f"{prefix}.{k}", W.get(f"{prefix}.{k}", (channels,)))
             for k in ("weight", "bias", "running_mean", "running_var")]
        return self.node("BatchNormalization", [x, *p], name=prefix, epsilon=eps)

    def relu6(self, x: str, name: str | None = None) -> str:
        lo = self.shared_scalar("relu6.min", 0.0)
        hi = self.shared_scalar("relu6.max", 6.0)
        return self.node("Clip", [x, lo, hi], name=name or "relu6")

    def shared_scalar(self, name: str, value: float) -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)
        return name

    def linear(self, x: str, W: Weights, prefix: str, in_f: int, out_f: int, out: str | None = None) -> str:
        """torch Linear on a (N, in) tensor: Gemm with transB=1 keeps the checkpoint's (out, in) layout."""
        w = self.const(prefix + ".weight", W.get(prefix + ".weight", (out_f, in_f)))
        b = self.const(prefix + ".bias", W.get(prefix + ".bias", (out_f,)))
        return self.node("Gemm", [x, w, b], name=prefix, outputs=[out] if out else 1, transB=1)

    def model(self, doc: str, metadata: Mapping[str, str]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs,
                                  initializer=list(self.inits.values()))
        model = helper.make_model(graph, producer_name="opennpu.zoo.builders", doc_string=doc,
                                  opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        helper.set_model_props(model, {k: str(v) for k, v in metadata.items()})
        onnx.checker.check_model(model, full_check=True)
        return model


def info_metadata(info: Mapping[str, Any]) -> dict[str, str]:
    """INFO dict -> ONNX metadata_props (strings only; nested values as repr)."""
    return {k: v if isinstance(v, str) else repr(v) for k, v in info.items()}
