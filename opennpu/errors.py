"""Typed errors. Every failure the user can cause (bad files, bad shapes, unsupported ops) is one of these.

The CLI prints ``error: <message>`` for any OpenNPUError and exits non-zero without a traceback.
"""


class OpenNPUError(Exception):
    """Base of every error opennpu raises on purpose."""


class ModelFormatError(OpenNPUError):
    """A model file is truncated, corrupt or not in the format it claims."""


class GraphError(OpenNPUError):
    """The graph is malformed: cycles, dangling tensors, missing initializers, duplicate names."""


class ShapeError(OpenNPUError):
    """Shapes are negative, inconsistent or cannot be inferred."""


class TensorTooLargeError(ShapeError):
    """A tensor exceeds the configured size limit (protects against absurd or malicious shapes)."""


class UnsupportedOpError(OpenNPUError):
    """An operator (or an attribute value of it) that opennpu cannot execute."""


class UnsupportedOpsetError(OpenNPUError):
    """A model declares an opset version outside the supported range."""


class ZooError(OpenNPUError):
    """A zoo model or data set cannot be found, fetched or converted."""


class CheckpointError(OpenNPUError):
    """A checkpoint (.pth / .safetensors) is corrupt or asks for something the safe reader refuses."""


class ProgramFormatError(OpenNPUError):
    """A compiled program file (.npu) or an embedded serialized graph is truncated, corrupt or too new."""


class CompileError(OpenNPUError):
    """A model or operator cannot be compiled for a target (a value does not fit a register field, a limit)."""


class DeviceError(OpenNPUError):
    """The (emulated) device cannot execute a program: bad DMA address, looping chain, unsupported registers."""
