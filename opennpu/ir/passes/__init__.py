"""Named graph passes, run in sequence (ethos-u-vela style) by ``canonicalize``."""

from __future__ import annotations

from collections.abc import Callable

from ..graph import Graph
from .fusion import (
    fold_batchnorm,
    fold_pad_into_conv,
    fuse_activations,
    fuse_gated_activations,
    remove_identities,
)
from .layout import cancel_transposes
from .shapes import Limits, infer_shapes, parse_input_shapes, pin_input_shapes


def canonicalize(graph: Graph, input_shapes: dict[str, tuple[int, ...]] | None = None,
                 limits: Limits | None = None, fuse: bool = True) -> Graph:
    """Pin input shapes, infer shapes, fold constants, then simplify. Mutates and returns ``graph``."""
    limits = limits or Limits()
    pin_input_shapes(graph, input_shapes, limits)
    infer_shapes(graph, limits)
    steps: list[tuple[str, Callable[[Graph], int]]] = [("remove_identities", remove_identities)]
    if fuse:
        steps += [("fold_batchnorm", fold_batchnorm), ("fold_pad_into_conv", fold_pad_into_conv),
                  ("fuse_activations", fuse_activations),
                  # NHWC importers wrap spatial ops in transposes; cancelling them exposes more Pad->Conv
                  # and op->Relu pairs, so those two folds run once more.
                  ("cancel_transposes", cancel_transposes), ("fold_pad_into_conv", fold_pad_into_conv),
                  ("fuse_activations", fuse_activations), ("fuse_gated_activations", fuse_gated_activations)]
    log = graph.metadata.setdefault("passes", [])
    for name, fn in steps:
        log.append((name, fn(graph)))
    infer_shapes(graph, limits)
    return graph


__all__ = ["Limits", "canonicalize", "infer_shapes", "parse_input_shapes", "pin_input_shapes"]
