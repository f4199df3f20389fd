"""The IR: graph, tensors, op definitions and passes. Imports no other stage."""

from .graph import Graph, Node, QuantInfo, Tensor

__all__ = ["Graph", "Node", "QuantInfo", "Tensor"]
