"""Every zoo CNN, compiled for the RK3588 and run on the emulator, equals the target's integer reference byte
for byte (issue "Spine 3/4", first must-show item).

Oracle: ``targets/rk3588/reference.run_reference`` computes the quantized graph at IR level (NPU ops through
``arith``'s hardware arithmetic with the compiled requantization parameters, CPU segments through the integer
executor); the emulator sees only the ``.npu`` bytes (regcmd words, blobs, manifest). They share no tiling,
packing, addressing, register or emulator code, so byte equality on real models checks all of those.

Where the NPU's documented rounding differs from TFLite's int8 semantics (docs/rk3588-arithmetic.md: one
OUT_CVT rounding of a 15-bit mantissa, a fused Add rounded once), the NPU path follows the hardware; the test
prints that distance (output LSBs against ``opennpu.quant.executor.run_quantized``) and bounds it loosely, so a
gross lowering error cannot hide behind "the reference agrees with itself".

Weights are rounded to nearest here (not GPTQ) so that all models compile in seconds: rounding changes the
weight values, not any code path under test. Inputs are real (``zoo.inputs.example_inputs``): calibration on
two photos/samples, the check on a third.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import opennpu
from opennpu.quant.executor import run_quantized
from opennpu.runtime.devices import run_program
from opennpu.runtime.program import load_program, program_to_bytes
from opennpu.targets.rk3588.compiler import compile_lowered
from opennpu.targets.rk3588.reference import run_reference
from opennpu.zoo.inputs import example_inputs

# model -> (calibration samples, checked sample): photos for image models, sample indices for mnist
ZOO_CNNS = {
    "mnist-cnn": ((1, 2), 3),
    "efficientnet-lite0": (("coffee", "china"), "chelsea"),
    "mobilenetv2": (("coffee", "china"), "chelsea"),
    "blazeface": (("grace_hopper", "chelsea"), "astronaut"),
    "selfie-segmentation": (("grace_hopper", "chelsea"), "astronaut"),
    "yolov8n": (("coffee", "motorcycle"), "astronaut"),
    "ppocrv5-det": (("coffee", "china"), "page"),
    "ppocrv5-rec": ((0, 1), 2),
    "ppocrv4-det": (("coffee", "china"), "page"),
    "ppocrv4-rec": ((0, 1), 2),
}
# end-to-end distance to TFLite int8 semantics allowed for any output element, in output LSBs; the NPU's single
# rounding per op differs by at most 1 LSB per op (tests/test_rk3588_compile.py), and deep nets accumulate it
MAX_TFLITE_LSB = {"mnist-cnn": 4, "efficientnet-lite0": 40, "mobilenetv2": 40}


def _inputs(name: str, sample) -> dict[str, np.ndarray]:
    if name == "mnist-cnn" or name.endswith("-rec"):
        return example_inputs(name, index=sample)
    return example_inputs(name, photo=sample)


@pytest.fixture(scope="module", params=list(ZOO_CNNS))
def compiled(request):
    name = request.param
    cal_samples, check = ZOO_CNNS[name]
    g = opennpu.load_model(name)
    q = opennpu.quantize(g, [_inputs(name, s) for s in cal_samples], weight_rounding="nearest",
                         min_channel_scale_ratio=2.0 ** -12, progress=False)
    c = compile_lowered(q)
    program = load_program(program_to_bytes(c.program))
    return name, c, program, _inputs(name, check)


def test_emulator_equals_integer_reference(compiled):
    name, c, program, feeds = compiled
    out = run_program(program, feeds)
    ref = run_reference(c.lowering, feeds)
    assert set(out) == set(ref) == set(c.qgraph.outputs)
    for k in ref:
        assert out[k].dtype == ref[k].dtype and out[k].shape == ref[k].shape
        np.testing.assert_array_equal(out[k], ref[k], err_msg=f"{name} output {k!r}")

    st = c.program.manifest.target_payload["stats"]
    cpu = Counter(d.op_type for d in c.lowering.decisions if d.device == "cpu")
    print(f"\n{name}: NPU MAC fraction {c.npu_mac_fraction:.4f}, {st['npu_ops']} NPU ops, {st['tasks']} tasks; "
          f"CPU ops {dict(cpu)}")
    tfl = run_quantized(c.qgraph, feeds)
    for k in ref:
        d = np.abs(out[k].astype(np.float64) - tfl[k].astype(np.float64)) / _lsb(c.qgraph, k)
        print(f"  {k}: NPU - TFLite int8 |LSB| p50 {np.median(d):.0f}, p99 {np.percentile(d, 99):.0f}, "
              f"max {d.max():.0f}")
        if name in MAX_TFLITE_LSB:
            assert d.max() <= MAX_TFLITE_LSB[name]


def _lsb(q, tensor: str) -> float:
    """The output's quantization step: 1 for an integer output, the DequantizeLinear scale for a float one."""
    node = q.producers().get(tensor)
    if node is not None and node.op_type == "DequantizeLinear":
        return float(np.max(q.tensor(node.inputs[0]).quant.scale))
    return 1.0


def test_every_cpu_placement_has_a_reason(compiled):
    _, c, _, _ = compiled
    for d in c.lowering.decisions:
        assert (d.device == "cpu") == bool(d.reason), (d.name, d.op_type, d.reason)


def test_classifiers_keep_most_macs_on_the_npu(compiled):
    name, c, _, _ = compiled
    if name in ("efficientnet-lite0", "mobilenetv2"):
        assert c.npu_mac_fraction >= 0.99
