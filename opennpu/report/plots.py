"""Matplotlib figures of a report dict, as base64 PNG strings (Agg backend, no display)."""

from __future__ import annotations

import base64
import io
from typing import Any

COLOURS = {"npu": "#1f77b4", "cpu": "#d62728"}  # the screenshot test looks for these


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _costed(rep: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in rep["ops"] if o["latency_us"] > 0 or o["placement"] == "cpu"]


def latency_plot(rep: dict[str, Any]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = _costed(rep)
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.bar(range(len(ops)), [o["latency_us"] for o in ops], color=[COLOURS[o["placement"]] for o in ops], width=1.0)
    ax.set_xlabel("op (execution order)")
    ax.set_ylabel("latency (us)")
    ax.set_title("per-op latency: blue NPU, red CPU")
    return _png(fig)


def accuracy_plot(rep: dict[str, Any]) -> str | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [o for o in rep["ops"] if o["cosine"] is not None]
    if not ops:
        return None
    fig, ax = plt.subplots(figsize=(12, 3))
    ax.plot(range(len(ops)), [o["cosine"] for o in ops], color="#2ca02c", marker=".")
    ax.set_ylabel("cosine (float vs int8)")
    ax.set_title("per-layer accuracy")
    return _png(fig)


def memory_plot(rep: dict[str, Any]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = rep["memory"]
    parts = {"weights": m["weights_bytes"], "activations": m["activations_bytes"], "regcmd": m["regcmd_bytes"],
             "io": m.get("io_bytes", 0)}
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.barh(list(parts), [v / 1024 for v in parts.values()], color=["#9467bd", "#ff7f0e", "#8c564b", "#7f7f7f"])
    ax.set_xlabel("KiB")
    ax.set_title(f"memory (peak resident {m['peak_bytes'] / 1024:.0f} KiB)")
    return _png(fig)
