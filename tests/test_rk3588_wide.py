"""2047-wide maps through the whole RK3588 path (compile -> .npu -> emulator), against the target's integer
reference at IR level (targets/rk3588/reference.py: one unsplit conv, no tiling or addressing code):

* a 16-channel 2047-wide map, split into row slices with kernel overlap;
* a 64-channel 2047-wide map whose 3-row band alone overflows the CBUF: column windows of one output row each,
  read at the full map's line stride (CNA_DMA_CON1.LINE_STRIDE) and written at their column offset;
* the same with a fused residual Add, so the EW operand is addressed per window too.
"""

from __future__ import annotations

import numpy as np
import pytest

from opennpu.ir.graph import Graph, Tensor
from opennpu.ir.passes import canonicalize
from opennpu.runtime.devices import run_program
from opennpu.runtime.program import load_program, program_to_bytes
from opennpu.targets.rk3588.compiler import compile_lowered
from opennpu.targets.rk3588.reference import run_reference


def _wide_conv(cin: int, cout: int, h: int, w: int, k: int, stride: int, residual: bool) -> Graph:
    rng = np.random.default_rng(cin * h + k)
    g = Graph("wide")
    g.add_tensor(Tensor("x", (1, cin, h, w), "float32"))
    g.inputs = ["x"]
    wt = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    g.add_node("Conv", ["x", g.add_const("w", wt), g.add_const("b", rng.standard_normal(cout).astype(np.float32))],
               ["y"], {"kernel_shape": [k, k], "pads": [k // 2] * 4, "strides": [stride] * 2}, name="conv")
    out = "y"
    if residual:  # cout == cin, stride 1: the Add fuses into the conv's EW stage
        g.add_node("Add", ["y", "x"], ["z"], name="add")
        out = "z"
    g.outputs = [out]
    return canonicalize(g)


@pytest.mark.parametrize("cin, cout, h, k, stride, residual, column_split", [
    (16, 16, 9, 3, 1, False, False),
    (64, 32, 4, 3, 1, False, True),
    (64, 64, 3, 3, 1, True, True),
    (64, 16, 5, 5, 2, False, True),
])
def test_2047_wide_map_equals_unsplit_reference(cin, cout, h, k, stride, residual, column_split):
    g = _wide_conv(cin, cout, h, 2047, k, stride, residual)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, cin, h, 2047)).astype(np.float32)} for _ in range(3)]
    c = compile_lowered(g, calibration=feeds[:2])
    (op,) = c.lowering.conv_ops()
    assert op.plan.column_split is column_split and len(op.plan.tasks) > 1
    assert (op.ew_input is not None) is residual
    program = load_program(program_to_bytes(c.program))
    out = run_program(program, feeds[2])
    ref = run_reference(c.lowering, feeds[2])
    np.testing.assert_array_equal(out[g.outputs[0]], ref[g.outputs[0]])
