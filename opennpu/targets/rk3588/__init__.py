"""Rockchip RK3588 NPU target (3 cores, each PC/CNA/CORE/DPU/DPU_RDMA/PPU/PPU_RDMA).

Register-level groundwork: ``registers`` (register/bit-field table and pack/unpack), ``regcmd`` (64-bit
register command words, tasks and their PC chaining) and ``layout`` (NC1HWC2 feature maps, weight and bias
packing). Facts and their sources: docs/rk3588-hardware.md.
"""
