"""Exporters: IR graph -> other formats (TFLite flatbuffers for LiteRT and TFLite-based NPU delegates)."""

from .tflite import export_tflite

__all__ = ["export_tflite"]
