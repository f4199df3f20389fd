"""Quantization: calibration, quantized parameters and integer reference kernels."""
