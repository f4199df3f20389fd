"""CBUF tiling of convolutions (conv, depthwise, FC as a 1x1 conv) into RK3588 NPU tasks.

``plan_conv_tiles(geometry)`` returns a :class:`TilePlan`: plain dataclasses that codegen turns into register
writes (CNA_CBUF_CON0/1, DATA_SIZE*, PAD_CON0, FEATURE_DATA_ADDR, DST_BASE_ADDR, WEIGHT_REUSE...).

Facts (Mesa ``src/gallium/drivers/rocket/rkt_task.c`` and ``rkt_ml.h``, bminor/mesa-mesa @5b829658, "Function
mostly taken from NVDLA"; shared/reference/rk3588-npu.md §1.4; docs/rk3588-hardware.md "CBUF model"):

* CBUF: 12 banks x 256 entries x 128 B per core; input rows and weights share the banks, split by
  CNA_CBUF_CON0.DATA_BANK / WEIGHT_BANK.
* Mesa sizes weights as ``ceil(ceil(kw*kh*Cin*Cout/128)/256) + 1`` banks ("Why do we need an extra bank? The calc
  above might be wrong on this HW"); keeps all weights resident when ``weight_banks + 1 < 12`` (then tasks after
  the first set WEIGHT_REUSE and the op is one job on one core); otherwise uses a fixed 7 input / 5 weight bank
  split and relies on the hardware to stream the rest (no reuse).
* Inputs that do not fit are cut into horizontal row slices overlapping by ``kh - stride`` rows; the first slice
  gets the top pad and the last the bottom pad; ``input_offset = W*16 * top_row``,
  ``output_offset = OW*16 * output_rows_done`` (line stride = width * 16-byte atoms).
* CNA_CBUF_CON1.DATA_ENTRIES is programmed as ``ceil(W*2*ceil(C/16)/8)`` while the bank sizing uses the NVDLA
  per-row count (8 atoms per entry, a special case for 3 atoms); iav (RK3568) counts entries from the channel
  count aligned to 32. The three disagree.
* CNA_CONV_CON2.FEATURE_GRAINS: Mesa ``50 + stride + 1`` ("Magic: Seems to pass the most tests"); iav (RK3568)
  ``stride + kh + stride*((Wout<28) + (Wout<14))``.
* Output channels: the DPU writes ``align(max(C, 32), 32)`` channels (depthwise: doubled when <= 32, then aligned
  to 64) -- WDMA_SIZE_0.CHANNEL_WDMA = task output_channels - 1 in rkt_regcmd.c.

What opennpu decides ([I], each a named parameter of :class:`CbufParams` so hardware tests can change it):

* The Mesa constants (guard bank, 2 minimum data banks for residency, 7/5 split, grains 50+s+1) are kept as
  *documented defaults*, not as hardware truth.
* Bank sizing uses the largest of the three per-row entry counts (``row_entry_rule="max"``), so a slice fits
  whichever rule the hardware follows; weights are sized by the bytes the packed layout really holds
  (layout.pack_conv_weights: kernels aligned to 2, input channels to 16/32 groups) plus the guard bank.
* No reliance on weight streaming: every task's weights fit its weight banks. When all weights do not fit, the
  output channels are split into groups (multiples of 32 kernels, so no group's aligned WDMA write clobbers the
  next group's surfaces; depthwise: channel groups of 64), each group a separate weight load whose tasks then
  reuse it. Weights are packed per group (identical to one whole pack when group sizes are multiples of 32).
* Maps wider than a CBUF band or than 2047 (CNA_DATA_SIZE0 11-bit fields) are cut into column windows with one
  output row per task: the DPU has no output line-stride register, so a one-row tile can be written straight
  into the full NC1HWC2 output (DST_BASE_ADDR + DST_SURF_STRIDE), while the CNA reads the window with the full
  map's LINE_STRIDE. Maps taller than 2047 are row-sliced like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from opennpu.errors import CompileError

from .capabilities import LIMITS

# ---------------------------------------------------------------------------------------------- parameters

_DTYPES = {"int8": 1, "uint8": 1, "float16": 2}  # itemsize; C2 = atom_bytes // itemsize


@dataclass(frozen=True)
class CbufParams:
    """CBUF geometry and the tiling policy. Defaults: Mesa rkt_ml.h / rkt_task.c, with the [I] choices above."""

    banks: int = 12  # rkt_ml.h CBUF_BANKS [R]
    entries_per_bank: int = 256  # rkt_ml.h CBUF_ENTRIES_PER_BANK [R]
    entry_bytes: int = 128  # CBUF_BANK_SIZE 32768 / 256 [R]
    atom_bytes: int = 16  # FEATURE_ATOMIC_SIZE: one pixel of one 16-channel int8 group [R]
    # Mesa adds one bank to the weight requirement ("Why do we need an extra bank? The calc above might be wrong
    # on this HW"). Kept as a guard on top of the *exact* packed size until hardware tests show it unneeded.
    weight_guard_banks: int = 1
    # Mesa keeps weights resident iff weight_banks + 1 < 12, i.e. at least 2 banks remain for input rows.
    resident_min_data_banks: int = 2
    # Mesa's fixed "partial weights" split: 7 input banks, 12 - 7 = 5 weight banks. Tried first; other splits are
    # only searched when 7/5 cannot hold one band of rows or one 32-kernel group.
    partial_data_banks: int = 7
    # Per-row CBUF entries used for sizing: "nvdla" (rkt_task.c calc_entries_per_slice), "register" (the
    # CBUF_CON1.DATA_ENTRIES value Mesa programs), "aligned32" (iav: channels aligned to 32), "max" (all three).
    row_entry_rule: str = "max"
    # FEATURE_GRAINS: "mesa" = grains_base + stride_y + grains_extra (50 + s + 1, "Magic: Seems to pass the most
    # tests"), "iav" = stride + kh + stride*((Wout<28) + (Wout<14)) (RK3568).
    feature_grains_rule: str = "mesa"
    grains_base: int = 50
    grains_extra: int = 1
    oc_group_align: int = 32  # output-channel group granularity (WDMA writes align(max(C,32),32) channels)
    dw_group_align: int = 64  # depthwise channel groups (weight layout groups of 64; outputs aligned to 64)
    # Cost model used only to choose between feasible splits: a task costs about 20 us of IRQ + resubmit
    # (widgetii ftrace, reference §1.6), i.e. ~512 KiB at 25.6 GB/s LPDDR4X (reference §3).
    task_overhead_bytes: int = 512 * 1024
    # Task order with several weight groups: "auto" (cheaper by the cost model), "oc_outer" (a group's tasks back
    # to back, reusing its weights), "spatial_outer" (each input tile for every group; weights reloaded per task).
    order: str = "auto"

    @property
    def bank_bytes(self) -> int:
        return self.entries_per_bank * self.entry_bytes


DEFAULT_PARAMS = CbufParams()

MAX_SPATIAL = LIMITS["spatial"].max_value  # 2047: CNA_DATA_SIZE0 width/height, DATA_SIZE2 output width, 11 bits
MAX_PAD = LIMITS["conv.pad"].max_value  # 15: CNA_PAD_CON0 4-bit fields
MAX_KERNEL = LIMITS["conv.kernel"].max_value  # 31: WEIGHT_SIZE2 5-bit fields
MAX_STRIDE = LIMITS["conv.stride"].max_value  # 7: CONV_CON3 3-bit fields
MAX_IN_CHANNELS = LIMITS["conv.in_channels"].max_value  # 16384: DATAIN_CHANNEL_REAL 14 bits (C-1)
MAX_OUT_CHANNELS = LIMITS["conv.out_channels"].max_value  # 8192 per task: DPU DATA_CUBE_CHANNEL 13 bits
MAX_DATA_ENTRIES = (1 << 14) - 1  # CNA_CBUF_CON1.DATA_ENTRIES[13:0]
MAX_GRAINS = (1 << 10) - 1  # CNA_CONV_CON2.FEATURE_GRAINS[13:4]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _align(a: int, b: int) -> int:
    return _ceil(a, b) * b


def _itemsize(dtype: str) -> int:
    if dtype not in _DTYPES:
        raise CompileError(f"no CBUF tiling for dtype {dtype} (int8, uint8, float16)")
    return _DTYPES[dtype]


# ---------------------------------------------------------------------------------------------- sizes

def nvdla_row_entries(width: int, channels: int, itemsize: int = 1, p: CbufParams = DEFAULT_PARAMS) -> int:
    """rkt_task.c calc_entries_per_slice: whole entries of 8 atoms per pixel, and a partial entry per pixel group
    (a remainder of exactly 3 atoms takes a full entry per pixel, as in NVDLA)."""
    per_entry = p.entry_bytes // p.atom_bytes
    atoms = _ceil(channels * itemsize, p.atom_bytes)
    rem = atoms % per_entry
    frac = width if rem == 3 else _ceil(rem * width, per_entry)
    return (atoms // per_entry) * width + frac


def register_data_entries(width: int, channels: int, itemsize: int = 1, p: CbufParams = DEFAULT_PARAMS) -> int:
    """The CNA_CBUF_CON1.DATA_ENTRIES value Mesa programs: ``ceil(W * 2 * ceil(C/16) / 8)`` (rkt_task.c fill_task;
    its special cases for 1-channel input and W == C == 40 are not reproduced)."""
    return _ceil(width * 2 * _ceil(channels * itemsize, p.atom_bytes), p.entry_bytes // p.atom_bytes)


def aligned32_row_entries(width: int, channels: int, itemsize: int = 1, p: CbufParams = DEFAULT_PARAMS) -> int:
    """iav (RK3568): entries counted from the declared channel bytes aligned to 32."""
    return _ceil(width * _align(channels * itemsize, 32), p.entry_bytes)


def row_entries(width: int, channels: int, itemsize: int = 1, p: CbufParams = DEFAULT_PARAMS) -> int:
    """CBUF entries one input row occupies, under ``p.row_entry_rule``."""
    rules = {"nvdla": nvdla_row_entries, "register": register_data_entries, "aligned32": aligned32_row_entries}
    if p.row_entry_rule == "max":
        return max(f(width, channels, itemsize, p) for f in rules.values())
    if p.row_entry_rule not in rules:
        raise CompileError(f"unknown CBUF row entry rule {p.row_entry_rule!r}")
    return rules[p.row_entry_rule](width, channels, itemsize, p)


def _stored_inputs(cin: int, depthwise: bool) -> int:
    """Input-channel slots per kernel position in layout.pack_conv_weights (groups of 32, 64 for depthwise; a
    partial last group stores only 16 slots unless more than 16 of its channels are real)."""
    total = max(cin, 16)
    group = 64 if depthwise else 32
    ic1, ic2 = np.meshgrid(np.arange(_ceil(total, group)), np.arange(min(total, group)), indexing="ij")
    ic = ic1 * group + ic2
    keep = (ic < cin) | (ic2 < 16) | (cin % 32 > 16)
    return int(keep.sum())


def packed_weight_bytes(cout: int, cin: int, kh: int, kw: int, depthwise: bool = False, itemsize: int = 1) -> int:
    """Bytes of the packed weights of ``cout`` kernels (closed form of layout.weight_bytes; kernels aligned to 2,
    one kernel for depthwise, whose channel count is ``cout``)."""
    if depthwise:
        return kh * kw * _stored_inputs(cout, True) * itemsize
    return _align(cout, 2) * kh * kw * _stored_inputs(cin, False) * itemsize


def aligned_out_channels(n: int, depthwise: bool) -> int:
    """Channels the DPU writes for ``n`` output channels (rkt_task.c fill_task: align(max(n, 32), 32); depthwise
    doubled when <= 32, then aligned to 64)."""
    c = _align(max(n, 32), 32)
    if depthwise:
        if n <= 32:
            c *= 2
        c = _align(c, 64)
    return c


# ---------------------------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class ConvGeometry:
    """One convolution as the NPU sees it (batch 1, NCHW semantics; pads are top, left, bottom, right)."""

    in_channels: int
    in_h: int
    in_w: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    depthwise: bool = False

    def __post_init__(self) -> None:
        vals = (self.in_channels, self.in_h, self.in_w, self.out_channels, *self.kernel, *self.strides,
                *self.dilation)
        if len(self.kernel) != 2 or len(self.strides) != 2 or len(self.dilation) != 2 or len(self.pads) != 4:
            raise CompileError("conv geometry needs 2-D kernel/strides/dilation and 4 pads")
        if any(int(v) != v or v < 1 for v in vals) or any(int(v) != v or v < 0 for v in self.pads):
            raise CompileError(f"conv geometry has non-positive sizes or negative pads: {self}")
        if self.depthwise and self.out_channels != self.in_channels:
            raise CompileError(f"depthwise conv needs out_channels == in_channels, got {self.out_channels} vs "
                               f"{self.in_channels} (channel multipliers are lowered as dense convs)")
        if max(self.keff) > MAX_KERNEL:
            raise CompileError(f"conv kernel {self.keff[0]}x{self.keff[1]} > {MAX_KERNEL} "
                               "(CNA_WEIGHT_SIZE2.WEIGHT_WIDTH/HEIGHT are 5 bits)")
        if max(self.strides) > MAX_STRIDE:
            raise CompileError(f"conv stride {max(self.strides)} > {MAX_STRIDE} (CNA_CONV_CON3 strides are 3 bits)")
        if max(self.pads) > MAX_PAD:
            raise CompileError(f"conv pad {max(self.pads)} > {MAX_PAD} (CNA_PAD_CON0 pads are 4 bits)")
        if self.in_channels > MAX_IN_CHANNELS:
            raise CompileError(f"conv input channels {self.in_channels} > {MAX_IN_CHANNELS} "
                               "(CNA_DATA_SIZE1.DATAIN_CHANNEL_REAL is 14 bits)")
        if self.out_h < 1 or self.out_w < 1:
            raise CompileError(f"conv output would be {self.out_h}x{self.out_w}")

    @property
    def keff(self) -> tuple[int, int]:
        """Effective kernel extent; dilated kernels are lowered zero-inserted (capabilities.py), so weights and
        windows both use it."""
        return ((self.kernel[0] - 1) * self.dilation[0] + 1, (self.kernel[1] - 1) * self.dilation[1] + 1)

    @property
    def out_h(self) -> int:
        return (self.in_h + self.pads[0] + self.pads[2] - self.keff[0]) // self.strides[0] + 1

    @property
    def out_w(self) -> int:
        return (self.in_w + self.pads[1] + self.pads[3] - self.keff[1]) // self.strides[1] + 1

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, 1 if self.depthwise else self.in_channels, *self.kernel)

    @classmethod
    def fc(cls, in_features: int, out_features: int, rows: int = 1) -> ConvGeometry:
        """Fully connected / MatMul as a 1x1 conv over a map H = rows, W = 1, C = K with N kernels."""
        return cls(in_features, rows, 1, out_features)

    @classmethod
    def from_conv(cls, x_shape: tuple[int, ...], w_shape: tuple[int, ...], attrs: dict) -> ConvGeometry:
        """From an IR Conv node's (NCHW) input and (OIHW) weight shapes and attrs (explicit pads)."""
        from opennpu.ir.ops.conv import conv_geometry

        if len(x_shape) != 4 or x_shape[0] != 1:
            raise CompileError(f"NPU convs take one NCHW image, got input shape {tuple(x_shape)}")
        kernel, strides, dil, pads, _ = conv_geometry(tuple(x_shape), tuple(w_shape), attrs)
        group = int(attrs.get("group", 1))
        dw = group > 1
        if dw and not (group == x_shape[1] == w_shape[0] and w_shape[1] == 1):
            raise CompileError(f"grouped conv (group {group}) is not a plain depthwise conv")
        return cls(int(x_shape[1]), int(x_shape[2]), int(x_shape[3]), int(w_shape[0]), tuple(kernel),
                   tuple(strides), (pads[0], pads[1], pads[2], pads[3]), tuple(dil), dw)


# ---------------------------------------------------------------------------------------------- plan types

@dataclass(frozen=True)
class TileTask:
    """One NPU task. Ranges are half-open ``(start, stop)``; offsets are bytes from the tensor's base address."""

    index: int
    group: int  # weight group (output-channel group) index
    in_rows: tuple[int, int]
    in_cols: tuple[int, int]
    out_rows: tuple[int, int]
    out_cols: tuple[int, int]
    pads: tuple[int, int, int, int]  # this task's top, left, bottom, right padding
    ic_range: tuple[int, int]  # input channels read (all, or the depthwise group)
    oc_range: tuple[int, int]  # output channels computed
    in_offset: int  # FEATURE_DATA_ADDR - input base
    out_offset: int  # DST_BASE_ADDR - output base
    in_line_stride: int  # bytes between input rows (the full map's, also for column windows)
    in_surface_stride: int  # bytes between input channel groups
    out_line_stride: int
    out_surface_stride: int
    weight_offset: int  # bytes from the op's (per-group packed) weight base
    weight_bytes: int  # bytes of this task's weight group
    data_banks: int
    weight_banks: int
    data_entries: int  # CNA_CBUF_CON1.DATA_ENTRIES (Mesa's per-row formula for this task's width)
    cbuf_entries: int  # entries the task's input rows occupy under the sizing rule
    out_channels_written: int  # channels the DPU writes (aligned)
    feature_grains: int
    weight_reuse: bool  # CNA_CBUF_CON0.WEIGHT_REUSE: weights already in CBUF from the previous task

    @property
    def n_in_rows(self) -> int:
        return self.in_rows[1] - self.in_rows[0]

    @property
    def n_in_cols(self) -> int:
        return self.in_cols[1] - self.in_cols[0]

    @property
    def n_out_rows(self) -> int:
        return self.out_rows[1] - self.out_rows[0]

    @property
    def n_out_cols(self) -> int:
        return self.out_cols[1] - self.out_cols[0]


@dataclass
class TilePlan:
    geometry: ConvGeometry
    dtype: str
    mode: str  # "weights_resident" (one weight load, reused) | "partial_weights" (output-channel groups)
    order: str  # "oc_outer" (a group's tasks consecutive, reusing its weights) | "spatial_outer"
    column_split: bool  # tasks are column windows with one output row each
    groups: list[tuple[int, int]]  # output-channel range of each weight group
    group_weight_offsets: list[int]
    tasks: list[TileTask]
    params: CbufParams
    weight_bytes: int  # all groups, packed
    weight_loads: int  # tasks that load weights
    weight_reloads: int  # loads beyond one per group
    input_bytes_read: int
    weight_bytes_read: int
    output_bytes_written: int
    output_alloc_bytes: int  # bytes the output buffer needs (aligned channel writes past the last surface)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_read(self) -> int:
        return self.input_bytes_read + self.weight_bytes_read

    @property
    def weights_resident(self) -> bool:
        return self.mode == "weights_resident"

    def check(self) -> None:
        """Raise CompileError if a task breaks a CBUF or register-field limit (a self-check of the planner)."""
        p = self.params
        for t in self.tasks:
            where = f"task {t.index}"
            if t.data_banks + t.weight_banks > p.banks or t.data_banks < 1 or t.weight_banks < 1:
                raise CompileError(f"{where}: {t.data_banks}+{t.weight_banks} banks do not fit {p.banks}")
            if t.cbuf_entries > t.data_banks * p.entries_per_bank:
                raise CompileError(f"{where}: {t.cbuf_entries} input entries > {t.data_banks} banks")
            if t.weight_bytes > (t.weight_banks - p.weight_guard_banks) * p.bank_bytes:
                raise CompileError(f"{where}: {t.weight_bytes} weight bytes > {t.weight_banks} banks")
            if max(t.n_in_rows, t.n_in_cols, t.n_out_rows, t.n_out_cols) > MAX_SPATIAL:
                raise CompileError(f"{where}: a side exceeds {MAX_SPATIAL} (11-bit CNA size fields)")
            if min(t.n_in_rows, t.n_in_cols, t.n_out_rows, t.n_out_cols) < 1:
                raise CompileError(f"{where}: empty window")
            if max(t.pads) > MAX_PAD:
                raise CompileError(f"{where}: pad {max(t.pads)} > {MAX_PAD} (CNA_PAD_CON0 is 4 bits)")
            if t.data_entries > MAX_DATA_ENTRIES:
                raise CompileError(f"{where}: DATA_ENTRIES {t.data_entries} > {MAX_DATA_ENTRIES} (14 bits)")
            if t.oc_range[1] - t.oc_range[0] > MAX_OUT_CHANNELS:
                raise CompileError(f"{where}: more than {MAX_OUT_CHANNELS} output channels")


# ---------------------------------------------------------------------------------------------- planning

def _ranges(n_in: int, n_out: int, k: int, s: int, pad: int, max_in: int, max_out: int
            ) -> list[tuple[int, int, int, int, int, int]] | None:
    """Cut ``n_out`` outputs of a 1-D strided window into chunks whose input windows hold <= max_in elements.
    Returns (o0, o1, i0, i1, pad_before, pad_after) per chunk, or None when one window does not fit."""
    out = []
    o0 = 0
    while o0 < n_out:
        a = max(0, o0 * s - pad)
        if a + max_in >= n_in:  # the window may run to the end of the input (the rest is end padding)
            o1 = min(n_out, o0 + max_out)
        else:
            o1 = min(n_out, (a + max_in - k + pad) // s + 1, o0 + max_out)
        if o1 <= o0:
            return None
        last = (o1 - 1) * s - pad + k - 1  # last input index the chunk touches (may lie in the end padding)
        i1 = min(n_in, last + 1)
        if i1 <= a:
            raise CompileError(f"a task would read no input (padding {pad} >= kernel {k}); not lowered")
        out.append((o0, o1, a, i1, max(0, pad - o0 * s), max(0, last - (n_in - 1))))
        o0 = o1
    return out


def _spatial_tiles(g: ConvGeometry, cin: int, cap: int, itemsize: int, p: CbufParams):
    """(row chunks, col chunks, column_split) for input channels ``cin`` and ``cap`` data entries, or None."""
    (kh, kw), (sh, sw) = g.keff, g.strides
    pt, pl, pb, pr = g.pads
    full = row_entries(g.in_w, cin, itemsize, p)
    if g.in_w <= MAX_SPATIAL and g.out_w <= MAX_SPATIAL and min(kh, g.in_h) * full <= cap:
        max_rows = min(cap // full, MAX_SPATIAL)
        rows = _ranges(g.in_h, g.out_h, kh, sh, pt, max_rows, MAX_SPATIAL)
        cols = [(0, g.out_w, 0, g.in_w, pl, max(0, (g.out_w - 1) * sw - pl + kw - g.in_w))]
        return (rows, cols, False) if rows else None
    # Column windows, one output row per task (no output line stride on the DPU).
    band = min(kh, g.in_h)
    lo, hi = 0, min(g.in_w, MAX_SPATIAL)
    while lo < hi:  # largest window width whose band fits
        mid = (lo + hi + 1) // 2
        if band * row_entries(mid, cin, itemsize, p) <= cap:
            lo = mid
        else:
            hi = mid - 1
    if lo < 1:
        return None
    cols = _ranges(g.in_w, g.out_w, kw, sw, pl, lo, MAX_SPATIAL)
    rows = _ranges(g.in_h, g.out_h, kh, sh, pt, kh, 1)
    return (rows, cols, True) if rows and cols else None


@dataclass
class _Config:
    data_banks: int
    weight_banks: int
    groups: list[tuple[int, int]]
    group_bytes: list[int]
    rows: list
    cols: list
    column_split: bool
    order: str
    cost: int
    reason: str = ""


def _weight_groups(g: ConvGeometry, cap_bytes: int, itemsize: int, p: CbufParams, dw_group: int | None
                   ) -> tuple[list[tuple[int, int]], str] | None:
    kh, kw = g.keff
    n = g.out_channels
    if g.depthwise:
        size = dw_group or n
        groups = [(c, min(n, c + size)) for c in range(0, n, size)]
    else:
        per_kernel = packed_weight_bytes(2, g.in_channels, kh, kw, False, itemsize) // 2
        if packed_weight_bytes(n, g.in_channels, kh, kw, False, itemsize) <= cap_bytes and n <= MAX_OUT_CHANNELS:
            return [(0, n)], ""
        size = min(cap_bytes // per_kernel // p.oc_group_align * p.oc_group_align, MAX_OUT_CHANNELS)
        if size < 1:
            return None
        groups = [(c, min(n, c + size)) for c in range(0, n, size)]
    for a, b in groups:
        if packed_weight_bytes(b - a, g.in_channels, kh, kw, g.depthwise, itemsize) > cap_bytes:
            return None
    return groups, ""


def _try_config(g: ConvGeometry, data_banks: int, itemsize: int, p: CbufParams) -> _Config | None:
    weight_banks = p.banks - data_banks
    cap_bytes = (weight_banks - p.weight_guard_banks) * p.bank_bytes
    cap_entries = data_banks * p.entries_per_bank
    if weight_banks < 1 or data_banks < 1 or cap_bytes <= 0:
        return None
    kh, kw = g.keff
    if g.depthwise:
        # Largest channel group (all, or a multiple of 64) whose weights fit and whose full-width band fits.
        n = g.out_channels
        sizes = [n] + [s for s in range(_align(n, p.dw_group_align) - p.dw_group_align, 0, -p.dw_group_align)]
        choice = None
        for s in sizes:
            if packed_weight_bytes(min(s, n), n, kh, kw, True, itemsize) > cap_bytes:
                continue
            tiles = _spatial_tiles(g, min(s, n), cap_entries, itemsize, p)
            if tiles is not None and (not tiles[2] or choice is None):
                choice = (s, tiles)
                if not tiles[2]:
                    break
        if choice is None:
            return None
        wg = _weight_groups(g, cap_bytes, itemsize, p, choice[0])
        tiles = choice[1]
    else:
        wg = _weight_groups(g, cap_bytes, itemsize, p, None)
        tiles = _spatial_tiles(g, g.in_channels, cap_entries, itemsize, p)
    if wg is None or tiles is None:
        return None
    groups = wg[0]
    rows, cols, colsplit = tiles
    gbytes = [packed_weight_bytes(b - a, g.in_channels, kh, kw, g.depthwise, itemsize) for a, b in groups]
    n_sp = len(rows) * len(cols)
    cin_tile = (groups[0][1] - groups[0][0]) if g.depthwise else g.in_channels
    in_bytes = sum((r[3] - r[2]) * (c[3] - c[2]) for r in rows for c in cols) * _ceil(cin_tile * itemsize,
                                                                                       p.atom_bytes) * p.atom_bytes
    n_tasks = n_sp * len(groups)
    # oc_outer: each group loaded once, input re-read per group (depthwise groups read disjoint channels).
    reads_in = in_bytes if g.depthwise else in_bytes * len(groups)
    cost_oc = reads_in + sum(gbytes)
    # spatial_outer: every task loads its group's weights (only differs with several groups).
    cost_sp = reads_in + sum(gbytes) * n_sp
    if p.order not in ("auto", "oc_outer", "spatial_outer"):
        raise CompileError(f"unknown task order {p.order!r}")
    order = "oc_outer"
    cost = cost_oc
    if len(groups) > 1 and not g.depthwise and (p.order == "spatial_outer" or (p.order == "auto" and
                                                                               cost_sp < cost_oc)):
        order, cost = "spatial_outer", cost_sp
    return _Config(data_banks, weight_banks, groups, gbytes, rows, cols, colsplit, order,
                   cost + n_tasks * p.task_overhead_bytes)


def plan_conv_tiles(geometry: ConvGeometry, dtype: str = "int8", params: CbufParams = DEFAULT_PARAMS,
                    allow_split: bool = True) -> TilePlan:
    """Split one convolution into CBUF-sized tasks (see the module docstring for the rules).

    ``allow_split=False`` refuses maps over the 11-bit size fields instead of column/row-splitting them.
    """
    g, p = geometry, params
    itemsize = _itemsize(dtype)
    c2 = p.atom_bytes // itemsize
    kh, kw = g.keff
    if not allow_split:
        for what, v in (("input width", g.in_w), ("input height", g.in_h), ("output width", g.out_w),
                        ("output height", g.out_h)):
            if v > MAX_SPATIAL:
                raise CompileError(f"conv {what} {v} > {MAX_SPATIAL} (CNA_DATA_SIZE0/2 fields are 11 bits) "
                                   "and splitting is disabled")
    total_w = packed_weight_bytes(g.out_channels, g.in_channels, kh, kw, g.depthwise, itemsize)
    need_banks = _ceil(total_w, p.bank_bytes) + p.weight_guard_banks
    notes: list[str] = []

    chosen: _Config | None = None
    # 1. Mesa: weights resident when weight_banks + 1 < 12 (at least resident_min_data_banks left for input).
    if need_banks <= p.banks - p.resident_min_data_banks:
        cfg = _try_config(g, p.banks - need_banks, itemsize, p)
        if cfg is not None and len(cfg.groups) == 1 and (not cfg.column_split or _forced_columns(g)):
            chosen = cfg
    # 2. Mesa's fixed partial split (7 input / 5 weight banks).
    if chosen is None:
        cfg = _try_config(g, p.partial_data_banks, itemsize, p)
        if cfg is not None and (not cfg.column_split or _forced_columns(g)):
            chosen = cfg
            notes.append(f"partial weights: {p.partial_data_banks} input / {p.banks - p.partial_data_banks} "
                         "weight banks (Mesa's fixed split)")
    # 3. Otherwise the cheapest feasible split.
    if chosen is None:
        cands = [c for d in range(1, p.banks) if (c := _try_config(g, d, itemsize, p)) is not None]
        if not cands:
            raise CompileError(_infeasible_reason(g, itemsize, p))
        chosen = min(cands, key=lambda c: (c.cost, -c.data_banks))
        notes.append(f"searched bank split: {chosen.data_banks} input / {chosen.weight_banks} weight banks")
    if chosen.column_split:
        why = "a side exceeds 2047" if _forced_columns(g) else "one band of kernel rows exceeds the data banks"
        notes.append(f"column windows with one output row per task ({why})")
    return _build(g, dtype, itemsize, c2, chosen, p, notes)


def _forced_columns(g: ConvGeometry) -> bool:
    return g.in_w > MAX_SPATIAL or g.out_w > MAX_SPATIAL


def _infeasible_reason(g: ConvGeometry, itemsize: int, p: CbufParams) -> str:
    kh, kw = g.keff
    cap = (p.banks - 1 - p.weight_guard_banks) * p.bank_bytes
    unit = 1 if g.depthwise else min(g.out_channels, p.oc_group_align)
    wb = packed_weight_bytes(unit, g.in_channels, kh, kw, g.depthwise, itemsize)
    if wb > cap:
        return (f"conv weights of one {unit}-kernel group ({kh}x{kw}x{g.in_channels}) need {wb} bytes > {cap} bytes "
                f"of CBUF weight banks ({p.banks} banks, 1 kept for input, {p.weight_guard_banks} guard); "
                "input-channel splitting is not supported")
    return (f"one {kh}-row band of a {g.in_channels}-channel input does not fit the CBUF next to the weights of "
            f"the smallest weight group ({wb} bytes)")


def _build(g: ConvGeometry, dtype: str, itemsize: int, c2: int, cfg: _Config, p: CbufParams,
           notes: list[str]) -> TilePlan:
    atom = p.atom_bytes
    in_line, out_line = g.in_w * atom, g.out_w * atom
    in_surf, out_surf = g.in_h * in_line, g.out_h * out_line
    offsets = [0]
    for b in cfg.group_bytes[:-1]:
        offsets.append(offsets[-1] + b)
    spatial = [(r, c) for r in cfg.rows for c in cfg.cols]
    if cfg.order == "oc_outer":
        order = [(gi, r, c) for gi in range(len(cfg.groups)) for r, c in spatial]
    else:
        order = [(gi, r, c) for r, c in spatial for gi in range(len(cfg.groups))]
    single = len(order) == 1
    tasks: list[TileTask] = []
    prev_group = None
    in_read = w_read = out_written = alloc = 0
    for idx, (gi, r, c) in enumerate(order):
        oc0, oc1 = cfg.groups[gi]
        ic0, ic1 = (oc0, oc1) if g.depthwise else (0, g.in_channels)
        cin_t = ic1 - ic0
        n_in_rows, n_in_cols = r[3] - r[2], c[3] - c[2]
        entries = row_entries(n_in_cols, cin_t, itemsize, p) * n_in_rows
        data_banks = _ceil(entries, p.entries_per_bank) if single else cfg.data_banks
        weight_banks = p.banks - data_banks
        reuse = prev_group == gi and cfg.order == "oc_outer"
        prev_group = gi
        written = aligned_out_channels(oc1 - oc0, g.depthwise)
        n_out_rows, n_out_cols = r[1] - r[0], c[1] - c[0]
        out_off = (oc0 // c2) * out_surf + r[0] * out_line + c[0] * atom
        surfaces = _ceil(written * itemsize, atom)
        alloc = max(alloc, out_off + (surfaces - 1) * out_surf + (n_out_rows - 1) * out_line + n_out_cols * atom)
        in_read += n_in_rows * n_in_cols * _ceil(cin_t * itemsize, atom) * atom
        out_written += n_out_rows * n_out_cols * _ceil((oc1 - oc0) * itemsize, atom) * atom
        if not reuse:
            w_read += cfg.group_bytes[gi]
        tasks.append(TileTask(
            index=idx, group=gi, in_rows=(r[2], r[3]), in_cols=(c[2], c[3]), out_rows=(r[0], r[1]),
            out_cols=(c[0], c[1]), pads=(r[4], c[4], r[5], c[5]), ic_range=(ic0, ic1), oc_range=(oc0, oc1),
            in_offset=(ic0 // c2) * in_surf + r[2] * in_line + c[2] * atom, out_offset=out_off,
            in_line_stride=in_line, in_surface_stride=in_surf, out_line_stride=out_line, out_surface_stride=out_surf,
            weight_offset=offsets[gi], weight_bytes=cfg.group_bytes[gi], data_banks=data_banks,
            weight_banks=weight_banks, data_entries=register_data_entries(n_in_cols, cin_t, itemsize, p),
            cbuf_entries=entries, out_channels_written=written,
            feature_grains=_grains(g, n_out_cols, p), weight_reuse=reuse))
    loads = sum(1 for t in tasks if not t.weight_reuse)
    alloc = max(alloc, _ceil(g.out_channels * itemsize, atom) * out_surf)
    if g.depthwise and len(cfg.groups) > 1:
        notes.append(f"depthwise channel groups of {cfg.groups[0][1] - cfg.groups[0][0]}")
    plan = TilePlan(
        geometry=g, dtype=dtype, mode="weights_resident" if len(cfg.groups) == 1 else "partial_weights",
        order=cfg.order, column_split=cfg.column_split, groups=list(cfg.groups), group_weight_offsets=offsets,
        tasks=tasks, params=p, weight_bytes=sum(cfg.group_bytes), weight_loads=loads,
        weight_reloads=loads - len(cfg.groups), input_bytes_read=in_read, weight_bytes_read=w_read,
        output_bytes_written=out_written, output_alloc_bytes=alloc, notes=notes)
    plan.check()
    return plan


def _grains(g: ConvGeometry, out_w: int, p: CbufParams) -> int:
    s = g.strides[0]
    if p.feature_grains_rule == "mesa":
        v = p.grains_base + s + p.grains_extra
    elif p.feature_grains_rule == "iav":
        v = s + g.keff[0] + s * (int(out_w < 28) + int(out_w < 14))
    else:
        raise CompileError(f"unknown FEATURE_GRAINS rule {p.feature_grains_rule!r}")
    return min(v, MAX_GRAINS)


# ---------------------------------------------------------------------------------------------- checking

ConvFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None, dict], np.ndarray]


def pack_group_weights(w: np.ndarray, plan: TilePlan, pad_value: int = 0) -> np.ndarray:
    """Weights packed per group and concatenated (the blob whose offsets TileTask.weight_offset gives)."""
    from .layout import pack_conv_weights

    parts = [pack_conv_weights(w[a:b], pad_value, plan.geometry.depthwise) for a, b in plan.groups]
    return np.concatenate(parts)


def simulate_tiled_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, plan: TilePlan,
                        conv_fn: ConvFn) -> np.ndarray:
    """Run ``conv_fn(x_tile, w_tile, b_tile, attrs)`` (conv2d_float's signature, NCHW/OIHW) per task on the sliced
    input and reassemble. Raises CompileError unless the tasks cover every output element exactly once."""
    g = plan.geometry
    batched = x.ndim == 4
    x4 = x if batched else x[None]
    if x4.shape[1:] != (g.in_channels, g.in_h, g.in_w):
        raise CompileError(f"input shape {x.shape} does not match the plan's {g.in_channels}x{g.in_h}x{g.in_w}")
    out = None
    count = np.zeros((g.out_channels, g.out_h, g.out_w), dtype=np.int32)
    for t in plan.tasks:
        xt = x4[:, t.ic_range[0]:t.ic_range[1], t.in_rows[0]:t.in_rows[1], t.in_cols[0]:t.in_cols[1]]
        wt = w[t.oc_range[0]:t.oc_range[1]]
        bt = None if b is None else b[t.oc_range[0]:t.oc_range[1]]
        attrs = {"kernel_shape": list(g.kernel), "strides": list(g.strides), "dilations": list(g.dilation),
                 "pads": [t.pads[0], t.pads[1], t.pads[2], t.pads[3]],
                 "group": t.ic_range[1] - t.ic_range[0] if g.depthwise else 1}
        yt = conv_fn(xt, wt, bt, attrs)
        want = (x4.shape[0], t.oc_range[1] - t.oc_range[0], t.n_out_rows, t.n_out_cols)
        if yt.shape != want:
            raise CompileError(f"task {t.index} produced {yt.shape}, expected {want}")
        if out is None:
            out = np.zeros((x4.shape[0], g.out_channels, g.out_h, g.out_w), dtype=yt.dtype)
        out[:, t.oc_range[0]:t.oc_range[1], t.out_rows[0]:t.out_rows[1], t.out_cols[0]:t.out_cols[1]] = yt
        count[t.oc_range[0]:t.oc_range[1], t.out_rows[0]:t.out_rows[1], t.out_cols[0]:t.out_cols[1]] += 1
    if out is None or count.min() != 1 or count.max() != 1:
        raise CompileError("tasks do not cover the output exactly once")
    return out if batched else out[0]
