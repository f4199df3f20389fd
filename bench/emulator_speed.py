"""Emulator speed on the zoo CNNs, side by side with two peers run in the same process on the same input:

* ``emulator``: the compiled ``.npu`` program on the RK3588 emulator (regcmd decode, NPU arithmetic, CPU
  fallback segments on the integer executor) — what ``opennpu run model.npu`` does;
* ``int-ref``: the same quantized graph on our integer executor (opennpu.quant.executor.run_quantized,
  LiteRT int8 semantics), the engine the accuracy studies run on;
* ``float-rt``: the float model file on its own runtime: ONNX Runtime (CPU) for .onnx, LiteRT for .tflite.

    python bench/emulator_speed.py                     # all zoo CNNs
    python bench/emulator_speed.py mobilenetv2 yolov8n --runs 7 --json out.json

Times are wall-clock medians over ``--runs`` runs after one warm-up; ratios are emulator / peer. Weights are
rounded to nearest (compile speed is not what is measured here; bench/compile_speed.py is).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

ZOO_CNNS = ("mnist-cnn", "efficientnet-lite0", "mobilenetv2", "blazeface", "selfie-segmentation", "yolov8n",
            "ppocrv5-det", "ppocrv5-rec")


def _median_seconds(fn, runs: int) -> float:
    fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _float_runtime(name: str, feeds: dict):
    """A no-argument callable running the zoo model file on ONNX Runtime (.onnx) or LiteRT (.tflite)."""
    from opennpu import zoo

    path = zoo.fetch(name)
    if zoo.get(name).fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()

        def run_litert():
            for d in interp.get_input_details():
                interp.set_tensor(d["index"], feeds[d["name"]])
            interp.invoke()
        return run_litert
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feeds)


def measure(name: str, runs: int) -> dict:
    import opennpu
    from opennpu.quant.executor import run_quantized
    from opennpu.runtime.devices import open_device
    from opennpu.runtime.program import load_program, program_to_bytes
    from opennpu.targets.rk3588.compiler import compile_lowered
    from opennpu.zoo.inputs import example_inputs

    sample = (lambda i: example_inputs(name, index=i)) if name == "mnist-cnn" or name.endswith("-rec") else (
        lambda i: example_inputs(name, photo=("coffee", "chelsea")[i]))
    g = opennpu.load_model(name)
    q = opennpu.quantize(g, [sample(0)], weight_rounding="nearest", min_channel_scale_ratio=2.0 ** -12,
                         progress=False)
    c = compile_lowered(q)
    dev = open_device(load_program(program_to_bytes(c.program)))
    feeds = sample(1)
    out = {"model": name, "npu_mac_fraction": c.npu_mac_fraction, "tasks": c.n_tasks}
    out["emulator_s"] = _median_seconds(lambda: dev.run(feeds), runs)
    out["int_ref_s"] = _median_seconds(lambda: run_quantized(c.qgraph, feeds), runs)
    out["float_rt_s"] = _median_seconds(_float_runtime(name, feeds), runs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", default=list(ZOO_CNNS))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = []
    print("| model | NPU MACs | tasks | emulator (s) | int-ref (s) | float-rt (s) | emu/int-ref | emu/float-rt |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        r = measure(name, args.runs)
        rows.append(r)
        emu = r["emulator_s"]
        print(f"| {name} | {r['npu_mac_fraction']:.1%} | {r['tasks']} | {emu:.3f} | {r['int_ref_s']:.3f} | "
              f"{r['float_rt_s']:.4f} | {emu / r['int_ref_s']:.2f} | {emu / r['float_rt_s']:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
