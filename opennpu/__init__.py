"""opennpu: an open toolchain that compiles neural networks for SoC NPUs (first: Rockchip RK3588)."""

from .errors import OpenNPUError
from .frontends import load_model
from .runtime.cpu import run_graph


def quantize(graph, calibration, **kwargs):
    """Post-training quantization (see opennpu.quant.quantizer.quantize for the arguments)."""
    from .quant.quantizer import quantize as _quantize

    return _quantize(graph, calibration, **kwargs)


__version__ = "0.1.0"
__all__ = ["OpenNPUError", "load_model", "quantize", "run_graph", "__version__"]
