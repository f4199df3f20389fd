"""One hardware conv task of the RK3588 NPU: everything ``codegen.emit_conv`` needs, plus the byte images of
its operands (input, weights, BS stream, EW operand) in the layouts the emulator and the hardware read.

A task is one CNA/CORE/DPU pass: the whole input band and (for now) all weights resident in the CBUF, one
output cube. Splitting a layer into several tasks (row bands, output-channel groups) is tiling.py's job; a
``ConvTask`` only checks that it fits one pass.

Conventions (docs/rk3588-arithmetic.md, docs/rk3588-hardware.md):

* Feature maps are NC1HWC2 int8 (C2 = 16) in the NPU domain; line stride ``W * 16`` bytes; surface strides
  are free (multiples of 16). The CNA surface stride must be at least 4 lines when the input has more than
  one channel group, because of how CNA_DMA_CON2 encodes it (``SURF_STRIDE = surf/16 - LINE_STRIDE``, our
  reading of Mesa's ``line * (H/4 - 1)``): maps shorter than 4 rows with > 16 channels need padded surfaces
  (:func:`min_input_surface_stride`).
* Weights: Mesa's layout (layout.pack_conv_weights) after zero-padding the input channels (depthwise: the
  channels) to DATAIN_CHANNEL = align16(max(C, 16)), so every kernel has ``KH * KW * DATAIN_CHANNEL`` bytes.
* BS stream: per output channel an int32 bias (per-tensor requant), or an 8-byte record
  ``[bias i32][ow i16][mul i16]`` when the BS MUL carries per-channel scales (iav [3P]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opennpu.errors import CompileError

from . import layout as L
from .arith import ConvGeometry, NpuRequant, hw_bias

CBUF_BANKS = L.CBUF_BANKS
CBUF_ENTRIES_PER_BANK = L.CBUF_ENTRIES_PER_BANK
CBUF_ENTRY_SIZE = L.CBUF_ENTRY_SIZE
ATOM = L.FEATURE_ATOMIC_SIZE
MAX_ADDR = 0xFFFFFFFF
BS_RECORD_BYTES = 8


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def datain_channels(c: int) -> int:
    """CNA_DATA_SIZE1.DATAIN_CHANNEL: channels rounded up to the 16-channel atom (at least 16; Mesa)."""
    return _align(max(c, ATOM), ATOM)


def mesa_out_channels(cout: int, depthwise: bool) -> int:
    """Aligned output channels Mesa programs in CORE/DPU (rkt_task.c fill_task): align32(max(C, 32)); depthwise
    doubled when <= 32 real channels, then align64."""
    c = _align(max(cout, 32), 32)
    if depthwise:
        if cout <= 32:
            c *= 2
        c = _align(c, 64)
    return c


def min_input_surface_stride(c: int, h: int, w: int) -> int:
    """Smallest CNA input surface stride (bytes) the CNA_DMA_CON2 encoding allows: H lines, and at least 4
    lines when there is more than one channel group."""
    line = w * ATOM
    return line * (max(h, 4) if datain_channels(c) > ATOM else h)


def mesa_entries_per_slice(c: int, w: int) -> int:
    """CBUF entries of one input row (Mesa rkt_task.c calc_entries_per_slice, "mostly taken from NVDLA")."""
    atomics_per_entry = CBUF_ENTRY_SIZE // ATOM
    total = _cdiv(c, ATOM)
    last = total % atomics_per_entry
    frac = w if last == 3 else _cdiv(last * w, atomics_per_entry)
    return (total // atomics_per_entry) * w + frac


@dataclass(frozen=True)
class ConvTask:
    """One conv task. Addresses are 32-bit NPU addresses; strides are in bytes."""

    geometry: ConvGeometry
    requant: NpuRequant
    input_addr: int
    weight_addr: int
    bias_addr: int
    output_addr: int
    input_surf_stride: int
    output_surf_stride: int
    data_banks: int
    weight_banks: int
    data_entries: int
    ew_addr: int | None = None
    ew_surf_stride: int = 0
    precision: str = "int8"
    weight_reuse: bool = False
    name: str = ""
    in_line_stride: int = 0  # bytes between input rows; 0: the task's own width. A column window of a wider map
    # reads its rows at the full map's stride (CNA_DMA_CON1.LINE_STRIDE is free, in 4-byte units)

    def __post_init__(self) -> None:
        g = self.geometry
        if self.in_line_stride and (self.in_line_stride % ATOM or self.in_line_stride < g.in_w * ATOM):
            raise CompileError(f"task {self.name!r}: input line stride {self.in_line_stride} must be a multiple of 16 "
                               f"bytes and at least one row of the task ({g.in_w * ATOM} bytes)")
        if self.precision != "int8":
            raise CompileError(f"task {self.name!r}: precision {self.precision} is not supported (int8 only)")
        for what in ("input_addr", "weight_addr", "bias_addr", "output_addr"):
            a = getattr(self, what)
            if not 0 <= a <= MAX_ADDR:
                raise CompileError(f"task {self.name!r}: {what} 0x{a:x} is outside the 32-bit NPU address space")
        if (self.requant.ew is None) != (self.ew_addr is None):
            raise CompileError(f"task {self.name!r}: a fused add needs both EW requant params and an ew_addr")
        if self.input_surf_stride % ATOM or self.output_surf_stride % ATOM or self.ew_surf_stride % ATOM:
            raise CompileError(f"task {self.name!r}: surface strides must be multiples of 16 bytes")
        if self.input_surf_stride < min_input_surface_stride(g.in_c, g.in_h, g.in_w):
            raise CompileError(f"task {self.name!r}: input surface stride {self.input_surf_stride} is below "
                               f"{min_input_surface_stride(g.in_c, g.in_h, g.in_w)} bytes")
        if self.output_surf_stride < g.out_h * g.out_w * ATOM:
            raise CompileError(f"task {self.name!r}: output surface stride {self.output_surf_stride} is below "
                               f"one surface ({g.out_h * g.out_w * ATOM} bytes)")
        if self.ew_addr is not None and self.ew_surf_stride < self.ew_surface_bytes:
            raise CompileError(f"task {self.name!r}: EW surface stride {self.ew_surf_stride} below one surface")
        if self.data_banks + self.weight_banks > CBUF_BANKS or min(self.data_banks, self.weight_banks) < 1:
            raise CompileError(f"task {self.name!r}: CBUF split {self.data_banks}+{self.weight_banks} banks is "
                               f"not within {CBUF_BANKS}")
        row_entries = _cdiv(g.in_w * self.in_channels_aligned, CBUF_ENTRY_SIZE)
        if row_entries * g.in_h > self.data_banks * CBUF_ENTRIES_PER_BANK:
            raise CompileError(f"task {self.name!r}: input needs {row_entries * g.in_h} CBUF entries, "
                               f"{self.data_banks} banks hold {self.data_banks * CBUF_ENTRIES_PER_BANK} (tile it)")
        if _cdiv(self.weight_bytes, CBUF_ENTRY_SIZE) > self.weight_banks * CBUF_ENTRIES_PER_BANK:
            raise CompileError(f"task {self.name!r}: {self.weight_bytes} weight bytes exceed {self.weight_banks} "
                               "CBUF banks (tile it)")

    # ------------------------------------------------------------------ derived quantities
    @property
    def in_channels_aligned(self) -> int:
        return datain_channels(self.geometry.in_c)

    @property
    def input_line_stride(self) -> int:
        return self.in_line_stride or self.geometry.in_w * ATOM

    @property
    def out_channels_aligned(self) -> int:
        return mesa_out_channels(self.geometry.out_c, self.geometry.depthwise)

    @property
    def weight_kernels(self) -> int:
        return 1 if self.geometry.depthwise else _align(self.geometry.out_c, 2)

    @property
    def weight_bytes_per_kernel(self) -> int:
        g = self.geometry
        return g.kh * g.kw * self.in_channels_aligned

    @property
    def weight_bytes(self) -> int:
        return self.weight_kernels * self.weight_bytes_per_kernel

    @property
    def bs_record_bytes(self) -> int:
        return BS_RECORD_BYTES if self.requant.per_channel else 4

    @property
    def bias_bytes(self) -> int:
        return self.geometry.out_c * self.bs_record_bytes

    @property
    def input_bytes(self) -> int:
        g = self.geometry
        return (_cdiv(self.in_channels_aligned, ATOM) - 1) * self.input_surf_stride + g.in_h * self.input_line_stride

    @property
    def output_bytes(self) -> int:
        g = self.geometry
        return (_cdiv(g.out_c, ATOM) - 1) * self.output_surf_stride + g.out_h * g.out_w * ATOM

    @property
    def ew_bytes(self) -> int:
        g = self.geometry
        if self.ew_addr is None:
            return 0
        return (_cdiv(g.out_c, ATOM) - 1) * self.ew_surf_stride + self.ew_surface_bytes

    @property
    def ew_surface_bytes(self) -> int:
        """Bytes of one EW operand surface: a map like the output, or one atom per channel group (per channel)."""
        g, ew = self.geometry, self.requant.ew
        return ATOM if ew is not None and ew.per_channel else g.out_h * g.out_w * ATOM

    # ------------------------------------------------------------------ operand images
    def pack_input(self, x_q: np.ndarray) -> bytes:
        """(1,)C,H,W int8 (NPU domain) -> the input image at ``input_addr`` (padded lanes = input zero point)."""
        return _pack_map(x_q, (self.geometry.in_c, self.geometry.in_h, self.geometry.in_w),
                         self.input_surf_stride, self.requant.input_zero_point)

    def pack_ew(self, e_q: np.ndarray) -> bytes:
        g, ew = self.geometry, self.requant.ew
        hw = (1, 1) if ew is not None and ew.per_channel else (g.out_h, g.out_w)
        return _pack_map(e_q, (g.out_c, *hw), self.ew_surf_stride, 0)

    def pack_weights(self, w_q: np.ndarray) -> bytes:
        """OIHW int8 weights (depthwise (C, 1, KH, KW)), symmetric -> Mesa's packed layout with the input
        channels zero-padded to DATAIN_CHANNEL."""
        g = self.geometry
        w = np.asarray(w_q)
        if w.dtype != np.int8 or w.shape != g.weight_shape:
            raise CompileError(f"task {self.name!r}: weights must be int8 {g.weight_shape}, got {w.dtype} {w.shape}")
        ca = self.in_channels_aligned
        axis = 0 if g.depthwise else 1
        pad = [(0, 0)] * 4
        pad[axis] = (0, ca - w.shape[axis])
        packed = L.pack_conv_weights(np.pad(w, pad), pad_value=0, depthwise=g.depthwise)
        if packed.size != self.weight_bytes:
            raise CompileError(f"task {self.name!r}: packed weights have {packed.size} bytes, expected "
                               f"{self.weight_bytes}")
        return packed.tobytes()

    def pack_bias(self, bias_q: np.ndarray | None, w_q: np.ndarray) -> bytes:
        """The BS stream: corrected int32 biases, or ``[bias i32][ow i16 = 0][mul i16]`` records per channel."""
        b = hw_bias(bias_q, np.asarray(w_q), self.requant, self.geometry.depthwise)
        if not self.requant.per_channel:
            return b.astype("<i4").tobytes()
        rec = np.zeros(b.size, dtype=[("bias", "<i4"), ("ow", "<i2"), ("mul", "<i2")])
        rec["bias"] = b
        rec["mul"] = np.asarray(self.requant.channel_mul, dtype=np.int64)
        return rec.tobytes()

    def unpack_output(self, raw: bytes | np.ndarray) -> np.ndarray:
        """The output image read back from ``output_addr`` -> (1, Cout, OH, OW) int8."""
        g = self.geometry
        a = np.frombuffer(bytes(raw), dtype=np.int8)
        if a.size < self.output_bytes:
            raise CompileError(f"output image has {a.size} bytes, expected {self.output_bytes}")
        c1 = _cdiv(g.out_c, ATOM)
        surf = g.out_h * g.out_w * ATOM
        groups = [a[i * self.output_surf_stride:i * self.output_surf_stride + surf] for i in range(c1)]
        arr = np.stack(groups).reshape(c1, g.out_h, g.out_w, ATOM).transpose(0, 3, 1, 2)
        return arr.reshape(c1 * ATOM, g.out_h, g.out_w)[: g.out_c][None].copy()


def _pack_map(x: np.ndarray, chw: tuple[int, int, int], surf_stride: int, pad_value: int) -> bytes:
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dtype != np.int8 or x.shape != chw:
        raise CompileError(f"feature map must be int8 {chw}, got {x.dtype} {x.shape}")
    c, h, w = chw
    packed = L.pack_feature(x, pad_value=pad_value)  # (C1, H, W, 16)
    c1 = packed.shape[0]
    out = np.zeros((c1 - 1) * surf_stride + h * w * ATOM, dtype=np.int8)
    for i in range(c1):
        out[i * surf_stride:i * surf_stride + h * w * ATOM] = packed[i].reshape(-1)
    return out.tobytes()


def make_conv_task(geometry: ConvGeometry, requant: NpuRequant, *, input_addr: int, weight_addr: int,
                   bias_addr: int, output_addr: int, ew_addr: int | None = None,
                   input_surf_stride: int | None = None, output_surf_stride: int | None = None,
                   ew_surf_stride: int | None = None, name: str = "") -> ConvTask:
    """A single-task conv with Mesa's CBUF policy (rkt_task.c): input banks from the entries of all rows, the
    remaining banks for weights; CompileError when input plus weights (+1 spare bank, Mesa) do not fit."""
    g = geometry
    c1 = _cdiv(datain_channels(g.in_c), ATOM)
    data_entries = _cdiv(g.in_w * 2 * c1, 8)  # Mesa fill_task: DIV_ROUND_UP(W * 2 * ceil(C/16), 8)
    row_entries = max(mesa_entries_per_slice(g.in_c, g.in_w), _cdiv(g.in_w * c1 * ATOM, CBUF_ENTRY_SIZE))
    data_banks = _cdiv(row_entries * g.in_h, CBUF_ENTRIES_PER_BANK)
    kernels = 1 if g.depthwise else _align(g.out_c, 2)
    wbytes = kernels * g.kh * g.kw * datain_channels(g.in_c)
    weight_banks_needed = _cdiv(_cdiv(wbytes, CBUF_ENTRY_SIZE), CBUF_ENTRIES_PER_BANK) + 1  # Mesa's spare bank
    if data_banks + weight_banks_needed > CBUF_BANKS:
        raise CompileError(f"conv {name!r} needs {data_banks} input + {weight_banks_needed} weight CBUF banks, "
                           f"more than {CBUF_BANKS}: it must be tiled into several tasks")
    surf_out = g.out_h * g.out_w * ATOM
    return ConvTask(
        geometry=g, requant=requant, input_addr=input_addr, weight_addr=weight_addr, bias_addr=bias_addr,
        output_addr=output_addr,
        input_surf_stride=min_input_surface_stride(g.in_c, g.in_h, g.in_w) if input_surf_stride is None
        else input_surf_stride,
        output_surf_stride=surf_out if output_surf_stride is None else output_surf_stride,
        data_banks=data_banks, weight_banks=CBUF_BANKS - data_banks, data_entries=data_entries,
        ew_addr=ew_addr, ew_surf_stride=(surf_out if ew_surf_stride is None else ew_surf_stride) if ew_addr is not None
        else 0, name=name)
