"""Importers: ONNX, TFLite, PyTorch -> IR. ``load_model`` picks the importer and canonicalizes the graph."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelFormatError
from ..ir.graph import Graph
from ..ir.passes import Limits, canonicalize

MAX_MODEL_FILE_BYTES = 2 << 30  # protobuf's own hard limit; larger files are refused up front


def sniff_format(data: bytes, hint: str = "") -> str:
    """'tflite' or 'onnx' from the file's magic bytes (TFLite has 'TFL3' at offset 4) and its suffix."""
    if len(data) >= 8 and data[4:8] == b"TFL3":
        return "tflite"
    if hint.endswith(".tflite"):
        return "tflite"
    if data[:2] == b"PK" or hint.endswith((".pth", ".pt")):
        raise ModelFormatError("PyTorch checkpoints hold weights, not graphs: use the PyTorch frontend "
                               "(opennpu.frontends.torch.import_torch) or a zoo entry")
    return "onnx"


def read_model_bytes(path: str | Path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"model file {str(p)!r} does not exist")
    size = p.stat().st_size
    if size == 0:
        raise ModelFormatError(f"model file {str(p)!r} is empty")
    if size > MAX_MODEL_FILE_BYTES:
        raise ModelFormatError(f"model file {str(p)!r} is {size} bytes, over the 2 GiB limit")
    return p.read_bytes()


def import_model(source: str | Path | bytes, name: str | None = None) -> Graph:
    """Import without canonicalizing (raw graph as the file describes it)."""
    if isinstance(source, (bytes, bytearray)):
        data, hint = bytes(source), ""
    else:
        data, hint = read_model_bytes(source), str(source).lower()
        name = name or Path(source).stem
    fmt = sniff_format(data, hint)
    if fmt == "tflite":
        from .tflite import import_tflite

        return import_tflite(data, name or "model")
    from .onnx import import_onnx

    return import_onnx(data, name or "model")


def _quantized_form(graph: Graph) -> Graph:
    """ONNX QDQ graphs become quantized-tensor graphs (as TFLite int8 imports are) before canonicalize."""
    from ..quant.qdq import fold_if_qdq

    return fold_if_qdq(graph)


def load_model(source: str | Path | bytes, input_shapes: dict[str, tuple[int, ...]] | None = None,
               limits: Limits | None = None, fuse: bool = True) -> Graph:
    """Load a model file, a zoo name or raw bytes into a canonical IR graph (shapes pinned and inferred,
    constants folded, BatchNorm and Pad folded into Conv, clamps fused into their producers)."""
    shapes = dict(input_shapes or {})
    if isinstance(source, str) and not Path(source).exists():
        from ..zoo import find_entry

        entry = find_entry(source)
        if entry is not None:
            from ..zoo import fetch

            path = fetch(entry.name)
            graph = import_model(path, entry.name)
            shapes = {**entry.input_shapes, **shapes}
            graph.metadata["zoo"] = entry.name
            return canonicalize(_quantized_form(graph), shapes, limits, fuse)
    graph = import_model(source, name=None)
    return canonicalize(_quantized_form(graph), shapes, limits, fuse)
