"""PyTorch frontend: an ``nn.Module`` plus example inputs, exported with torch's ONNX exporter.

torch is an optional extra (``pip install opennpu[torch]``); nothing else in opennpu imports it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from ..errors import ModelFormatError, OpenNPUError, UnsupportedOpError
from ..ir.graph import Graph
from ..ir.passes import Limits, canonicalize

TORCH_OPSET = 17


def export_onnx_bytes(module, example_inputs: Sequence, input_names: Sequence[str] | None = None,
                      output_names: Sequence[str] | None = None, opset: int = TORCH_OPSET) -> bytes:
    try:
        import torch
    except ImportError:
        raise UnsupportedOpError("the PyTorch frontend needs torch: pip install 'opennpu[torch]'") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelFormatError(f"expected a torch.nn.Module, got {type(module).__name__}")
    args = tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
    names = list(input_names or [f"input_{i}" if len(args) > 1 else "input" for i in range(len(args))])
    buf = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(module, args, buf, input_names=names, output_names=list(output_names or []) or None,
                              opset_version=opset, dynamo=False, do_constant_folding=True)
    except Exception as e:  # the exporter raises many types; name the cause in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedOpError(f"torch ONNX export failed: {first}") from None
    finally:
        module.train(was_training)
    return buf.getvalue()


def import_torch(module, example_inputs: Sequence, input_names: Sequence[str] | None = None,
                 limits: Limits | None = None, name: str | None = None) -> Graph:
    """Export ``module`` at the example inputs' shapes and return the canonical IR graph."""
    from .onnx import import_onnx

    data = export_onnx_bytes(module, example_inputs, input_names)
    try:
        graph = import_onnx(data, name or type(module).__name__)
    except OpenNPUError:
        raise
    graph.metadata["format"] = "torch"
    return canonicalize(graph, None, limits)
