"""Whole-model integer reference of the RK3588 path, at IR level (no registers, no memory layouts).

``run_reference(lowering, feeds)`` executes the lowered model segment by segment in the compiled order: CPU
segments with the integer executor (``opennpu.quant.executor.run_quantized``, TFLite int8 semantics) on the
same subgraphs the program embeds, NPU conv ops with ``arith.conv_reference`` (the NPU's integer pipeline:
zero-point padding, raw MAC, CLIP_TRUNCATE, BS bias/per-channel MUL/ReLU, EW add, OUT_CVT) using the very
requantization parameters the compiler programmed, on whole (untiled) NCHW tensors; pool ops with
``arith.pool_reference`` (the PPU's max/min and fixed-point-reciprocal average); alias ops are reshapes;
concat ops (output addressing) run their Concat node through the integer executor at IR level, on the legs'
NCHW tensors -- nothing of the addressing (buffers, channel-group offsets, strides) is used.

It shares the lowering decisions with the compiler on purpose and nothing else: tiling, packing, addresses,
regcmd words and the emulator's register decoding are all independent of it, so
``run_program(program, feeds, "emulator") == run_reference(lowering, feeds)`` byte for byte checks the whole
code generation and the emulator against the arithmetic model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from opennpu.quant.executor import run_quantized
from opennpu.runtime.cpu import check_feeds

from . import arith
from .lower import AliasOp, ConcatOp, ConvOp, Lowering, subgraph
from .pool import PoolOp


def run_reference(low: Lowering, feeds: Mapping[str, np.ndarray], keep: bool = False) -> dict[str, np.ndarray]:
    """Outputs of the lowered model (every tensor computed when ``keep``)."""
    g = low.graph
    env: dict[str, np.ndarray] = dict(check_feeds(g, feeds))
    for seg in low.segments:
        if seg.device == "cpu":
            sub = subgraph(g, seg.nodes, seg.inputs, seg.outputs, f"{g.name}/seg{seg.id}")
            env.update(run_quantized(sub, {t: env[t] for t in sub.inputs}))
            continue
        for name in seg.ops:
            op = low.ops[name]
            shape = tuple(g.tensor(op.output).shape)
            if isinstance(op, AliasOp):
                env[op.output] = env[op.input].reshape(shape)
                continue
            if isinstance(op, ConcatOp):
                node = g.nodes[op.nodes[-1]]
                legs = [t for t in node.inputs if t]
                sub = subgraph(g, op.nodes, legs, [op.output], f"{g.name}/{op.name}")
                env.update(run_quantized(sub, {t: env[t] for t in legs}))
                continue
            if isinstance(op, PoolOp):  # stage by stage (a multi-stage global average rounds after each)
                pg = op.stages[0]
                y = np.asarray(env[op.input]).reshape(1, pg.c, pg.in_h, pg.in_w)
                for pg in op.stages:
                    y = arith.pool_reference(y, pg)
                env[op.output] = y.reshape(shape)
                continue
            assert isinstance(op, ConvOp)
            geo = op.geometry
            x = np.asarray(env[op.input]).reshape(1, geo.in_c, geo.in_h, geo.in_w)
            ew = None
            if op.ew_input is not None:
                hw = (1, 1) if op.requant.ew is not None and op.requant.ew.per_channel else (geo.out_h, geo.out_w)
                ew = np.asarray(env[op.ew_input]).reshape(1, geo.out_c, *hw)
            y = arith.conv_reference(x, op.weights, op.bias, op.requant, geo, ew)
            env[op.output] = y.reshape(shape)
    if keep:
        return env
    return {o: env[o] for o in g.outputs}


__all__ = ["run_reference"]
