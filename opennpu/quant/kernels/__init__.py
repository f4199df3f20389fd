"""Integer reference kernels reproducing LiteRT's int8 kernels bit for bit (pure numpy functions).

`kernel="optimized"` follows LiteRT's builtin op resolver (what runs without XNNPACK),
`kernel="reference"` its BUILTIN_REF resolver, where the two differ.
"""

from opennpu.quant.kernels.activations import logistic, logistic_table, softmax
from opennpu.quant.kernels.concat import concatenation, requantize_8bit
from opennpu.quant.kernels.conv import conv2d, depthwise_conv2d
from opennpu.quant.kernels.elementwise import add, mul
from opennpu.quant.kernels.fully_connected import fully_connected
from opennpu.quant.kernels.pool import average_pool2d, max_pool2d
from opennpu.quant.kernels.quantize import dequantize, quantize

__all__ = [
    "add", "average_pool2d", "concatenation", "conv2d", "depthwise_conv2d", "dequantize", "fully_connected",
    "logistic", "logistic_table", "max_pool2d", "mul", "quantize", "requantize_8bit", "softmax",
]
