"""opennpu: an open toolchain that compiles neural networks for SoC NPUs (first: Rockchip RK3588)."""

from .errors import OpenNPUError
from .frontends import load_model
from .runtime.cpu import run_graph

__version__ = "0.1.0"
__all__ = ["OpenNPUError", "load_model", "run_graph", "__version__"]
