"""RK3588 NPU memory layouts: feature maps (NC1HWC2), first-layer modes, conv/depthwise weights, biases, strides.

Sources (commits in docs/rk3588-hardware.md):

* Constants -- Mesa ``rkt_ml.h``: CBUF 12 banks x 32 KiB, 256 entries/bank, FEATURE_ATOMIC_SIZE 16,
  WEIGHT_ATOMIC_SIZE 32, ATOMIC_K_SIZE 16.
* Feature maps -- Mesa ``rkt_ml.c`` (input packing in ``rkt_ml_subgraph_invoke``, output unpacking in
  ``rkt_ml_subgraph_read_outputs``); rockchip-linux/rknpu2 ``doc/RK3588_NPU_SRAM_usage.md`` names the layout
  NC1HWC2 with C2=16 for int8, e.g. (1,32,112,112) -> (1,2,112,112,16). Memory order is
  ``[C/C2][H][W][C2]`` with W the contiguous row. Mesa labels TFLite ``dims[1]`` "width", so in its own
  naming the input looks "x-major" and the output "y-major" (widgetii ``qemu/SPEC.md``); both loops walk the
  TFLite tensor in the same [row][column] order, i.e. the two are one layout, and iav/rk3568-npu
  (``README-rk3568.md`` §2: "width = dims[2] (the contiguous memory row)") reports that Mesa's labelling is
  only self-consistent for square maps. This module therefore has a single canonical layout.
* C2 = 8 for fp16 is [I]: 16-byte atomics hold 8 fp16 values, consistent with the RKNN matmul API's fp16
  A layout (K/8, M, 8) in ``rknn_matmul_api.h``.
* Single-channel first layer -- Mesa ``rkt_ml.c``: raw bytes ``[H][max(W, 16)]`` (padded with the input zero
  point) with no 0x80 shift; the CNA input convert (CVT_CON0..4: truncate 14, scale 16384, offset 65408 =
  -128) subtracts 128 in hardware (``rkt_regcmd.c``).
* int8 convention -- Mesa treats data as uint8 and stores ``x - 0x80`` for inputs and weights (comment
  "TODO: Why is the blob converting to signed?"); outputs are read back ``+ 0x80``. For an int8 (signed)
  model the stored byte is simply the int8 value (uint8 zp = int8 zp + 128; iav: "XORs the data with
  0x80"). Functions here take data already in this *NPU domain* (int8); see :func:`to_npu_int8`.
* Weights -- Mesa ``rkt_coefs.c`` ``rkt_fill_weights``: ``[oc/32][ic/G][kh][kw][oc%32][ic%G]`` with G = 32
  (64 for depthwise), kernels aligned to 2, input channels to at least 16, partial last channel group;
  bias correction and truncation in ``rkt_fill_biases``.
"""

from __future__ import annotations

import numpy as np

from opennpu.errors import CompileError, ShapeError

CBUF_BANKS = 12
CBUF_BANK_SIZE = 32768
CBUF_ENTRIES_PER_BANK = 256
CBUF_ENTRY_SIZE = CBUF_BANK_SIZE // CBUF_ENTRIES_PER_BANK  # 128 bytes
FEATURE_ATOMIC_SIZE = 16  # bytes per (pixel, channel group) atom
WEIGHT_ATOMIC_SIZE = 32  # output-channel group of the weight layout
ATOMIC_K_SIZE = 16

_C2 = {"int8": 16, "uint8": 16, "float16": 8}


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------------------------------------- int8 domain
def to_npu_int8(q: np.ndarray) -> np.ndarray:
    """Quantized data as the NPU stores it: uint8 ``q - 128`` (== ``q ^ 0x80`` as bytes); int8 unchanged."""
    q = np.asarray(q)
    if q.dtype == np.uint8:
        return (q.astype(np.int16) - 128).astype(np.int8)
    if q.dtype == np.int8:
        return q.copy()
    raise CompileError(f"NPU int8 data must be uint8 or int8, got {q.dtype}")


def from_npu_int8(x: np.ndarray, dtype: str) -> np.ndarray:
    """Inverse of :func:`to_npu_int8` for a model tensor of ``dtype`` ('uint8' or 'int8')."""
    x = np.asarray(x).astype(np.int8, copy=False)
    if dtype == "uint8":
        return (x.astype(np.int16) + 128).astype(np.uint8)
    if dtype == "int8":
        return x.copy()
    raise CompileError(f"NPU int8 data maps to uint8 or int8, not {dtype}")


def npu_zero_point(zero_point: int, dtype: str) -> int:
    """A zero point in the NPU domain: ``zp - 128`` for uint8 tensors, unchanged for int8."""
    if dtype == "uint8":
        return int(zero_point) - 128
    if dtype == "int8":
        return int(zero_point)
    raise CompileError(f"zero points are defined for uint8/int8 tensors, not {dtype}")


# ---------------------------------------------------------------------------------------------- feature maps
def c2_for(dtype: str | np.dtype) -> int:
    """Channels per atom (C2): 16 for int8/uint8, 8 for float16."""
    name = np.dtype(dtype).name
    if name not in _C2:
        raise CompileError(f"no NPU feature layout for dtype {name}")
    return _C2[name]


def feature_shape(c: int, h: int, w: int, c2: int) -> tuple[int, int, int, int]:
    """(C1, H, W, C2) of a C x H x W map."""
    if min(c, h, w, c2) < 1:
        raise ShapeError(f"feature map {c}x{h}x{w} (C2={c2}) must have positive dimensions")
    return _ceil_div(c, c2), h, w, c2


def feature_bytes(c: int, h: int, w: int, dtype: str = "int8", c2: int | None = None) -> int:
    """Bytes of a packed NC1HWC2 map (no extra allocation)."""
    c1, h, w, c2 = feature_shape(c, h, w, c2 or c2_for(dtype))
    return c1 * h * w * c2 * np.dtype(dtype).itemsize


def mesa_feature_alloc_bytes(c: int, h: int, w: int) -> int:
    """Mesa's allocation for int8 tensors: ``W * H * ceil(C/16) * 2 * 16`` (twice the groups; rkt_ml.c)."""
    return w * h * _ceil_div(c, FEATURE_ATOMIC_SIZE) * 2 * FEATURE_ATOMIC_SIZE


def feature_offset(ch: int, y: int, x: int, h: int, w: int, c2: int = 16, itemsize: int = 1) -> int:
    """Byte offset of element (ch, y, x) in an NC1HWC2 map of height h, width w."""
    return (((ch // c2) * h + y) * w + x) * c2 * itemsize + (ch % c2) * itemsize


def _chw(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ShapeError(f"NPU feature maps have batch 1, got shape {x.shape}")
        x = x[0]
    if x.ndim != 3:
        raise ShapeError(f"expected a CHW or 1CHW feature map, got shape {x.shape}")
    return x


def pack_feature(x: np.ndarray, c2: int | None = None, pad_value: int | float = 0) -> np.ndarray:
    """NCHW/CHW -> NC1HWC2 array ``(C1, H, W, C2)`` of the same dtype; missing channels get ``pad_value``.

    ``arr.tobytes()`` is the buffer the NPU reads. Mesa pads the last group with the input zero point
    (``zero_point - 0x80`` in the NPU domain).
    """
    x = _chw(x)
    c, h, w = x.shape
    c1, _, _, c2 = feature_shape(c, h, w, c2 or c2_for(x.dtype))
    out = np.full((c1 * c2, h, w), pad_value, dtype=x.dtype)
    out[:c] = x
    return np.ascontiguousarray(out.reshape(c1, c2, h, w).transpose(0, 2, 3, 1))


def unpack_feature(buf: bytes | np.ndarray, c: int, h: int, w: int, dtype: str = "int8",
                   c2: int | None = None) -> np.ndarray:
    """NC1HWC2 buffer (bytes or array) -> ``(C, H, W)`` array of ``dtype``."""
    c1, h, w, c2 = feature_shape(c, h, w, c2 or c2_for(dtype))
    raw = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, bytes | bytearray | memoryview) else \
        np.ascontiguousarray(buf).reshape(-1).view(np.uint8)
    need = c1 * h * w * c2 * np.dtype(dtype).itemsize
    if raw.size < need:
        raise ShapeError(f"feature buffer has {raw.size} bytes, {c}x{h}x{w} C2={c2} needs {need}")
    arr = raw[:need].view(dtype).reshape(c1, h, w, c2).transpose(0, 3, 1, 2).reshape(c1 * c2, h, w)
    return np.ascontiguousarray(arr[:c])


def pack_single_channel(x: np.ndarray, pad_value: int) -> np.ndarray:
    """Mesa's 1-channel first-layer layout: raw uint8 rows ``[H][max(W, 16)]``, padded with ``pad_value`` (the
    input zero point). No 0x80 shift: the CNA input convert subtracts 128."""
    x = np.asarray(x)
    if x.ndim == 4:
        x = _chw(x)
    if x.ndim == 3:
        if x.shape[0] != 1:
            raise ShapeError(f"single-channel layout needs C=1, got shape {x.shape}")
        x = x[0]
    if x.ndim != 2 or x.dtype != np.uint8:
        raise ShapeError(f"single-channel layout takes an HxW uint8 map, got {x.dtype} {x.shape}")
    h, w = x.shape
    out = np.full((h, max(w, FEATURE_ATOMIC_SIZE)), pad_value, dtype=np.uint8)
    out[:, :w] = x
    return out


def unpack_single_channel(buf: bytes | np.ndarray, h: int, w: int) -> np.ndarray:
    raw = np.frombuffer(bytes(buf), dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf.reshape(-1)
    row = max(w, FEATURE_ATOMIC_SIZE)
    if raw.size < h * row:
        raise ShapeError(f"single-channel buffer has {raw.size} bytes, {h}x{w} needs {h * row}")
    return raw[: h * row].reshape(h, row)[:, :w].astype(np.uint8)


# ---------------------------------------------------------------------------------------------- strides
def line_stride_bytes(w: int) -> int:
    """Bytes between two rows of one channel group: W atoms of 16 bytes (Mesa calc_line_stride: W*16)."""
    return w * FEATURE_ATOMIC_SIZE


def surface_stride_bytes(h: int, w: int) -> int:
    """Bytes between two channel groups (surfaces): H * W atoms."""
    return h * w * FEATURE_ATOMIC_SIZE


def cna_line_stride(w: int) -> int:
    """CNA_DMA_CON1.LINE_STRIDE as Mesa programs a multi-channel input: ``W * 16 / 4`` (rkt_task.c fill_task).
    The unit is not documented; see docs/rk3588-hardware.md (open questions)."""
    return w * FEATURE_ATOMIC_SIZE // 4


def cna_surface_stride(h: int, w: int) -> int:
    """CNA_DMA_CON2.SURF_STRIDE as Mesa programs it: ``line_stride * (H / 4 - 1)`` in float, truncated."""
    return int(cna_line_stride(w) * (h / 4 - 1))


def cna_single_channel_strides(h: int, w: int) -> tuple[int, int]:
    """(LINE_STRIDE, SURF_STRIDE) Mesa programs for a 1-channel input: ``max(W, 16)`` and ``line * (H - 1)``."""
    line = max(w, FEATURE_ATOMIC_SIZE)
    return line, line * (h - 1)


def dpu_dst_surf_stride(h: int, w: int) -> int:
    """DPU_DST_SURF_STRIDE field value: ``W * H`` (the field starts at bit 4, so the byte stride is W*H*16;
    Mesa: ``line_stride * H / 16``)."""
    return w * h


# ---------------------------------------------------------------------------------------------- weights
def _weight_index(cout: int, cin: int, kh: int, kw: int, depthwise: bool):
    """Index arrays (oc, ic, y, x, keep) of every slot of Mesa's weight layout, in memory order."""
    ic_total = max(cin, FEATURE_ATOMIC_SIZE)
    group = WEIGHT_ATOMIC_SIZE * (2 if depthwise else 1)
    ic1n, ic2n = _ceil_div(ic_total, group), min(ic_total, group)
    oc_total = 1 if depthwise else _align(cout, 2)
    oc1n, oc2n = _ceil_div(oc_total, WEIGHT_ATOMIC_SIZE), min(oc_total, WEIGHT_ATOMIC_SIZE)
    g = np.indices((oc1n, ic1n, kh, kw, oc2n, ic2n)).reshape(6, -1)
    oc = g[0] * WEIGHT_ATOMIC_SIZE + g[4]
    ic = g[1] * group + g[5]
    ic2 = g[5]
    # rkt_coefs.c: kernels past align2(Cout) are not stored (when Cout > 2); padded input channels are stored
    # only in the first 16 of a group unless the real count leaves more than 16 in its last 32-group.
    keep = ~((cout > 2) & (oc >= _align(cout, 2)))
    keep &= ~((ic >= cin) & ~((ic2 < 16) | (cin % 32 > 16)))
    return oc[keep], ic[keep], g[2][keep], g[3][keep]


def _check_weights(w: np.ndarray, depthwise: bool) -> tuple[int, int, int, int]:
    if w.ndim != 4 or w.dtype != np.int8:
        raise CompileError(f"weights must be an OIHW int8 array in the NPU domain, got {w.dtype} {w.shape}")
    o, i, kh, kw = w.shape
    if depthwise and i != 1:
        raise CompileError(f"depthwise weights must be (C, 1, KH, KW), got {w.shape}")
    if min(o, i, kh, kw) < 1:
        raise CompileError(f"weights shape {w.shape} has an empty dimension")
    return o, (o if depthwise else i), kh, kw


def pack_conv_weights(w: np.ndarray, pad_value: int, depthwise: bool = False) -> np.ndarray:
    """Pack OIHW int8 weights (NPU domain; depthwise: (C, 1, KH, KW)) into Mesa's layout (1-D int8).

    Padded input channels hold ``pad_value`` (Mesa: ``weight_zero_point - 0x80``, i.e. the weight zero point
    in the NPU domain) so they contribute nothing after the BS_OW_OP offset; padded kernels hold 0.
    """
    cout, cin, kh, kw = _check_weights(w, depthwise)
    oc, ic, y, x = _weight_index(cout, cin, kh, kw, depthwise)
    out = np.zeros(oc.size, dtype=np.int8)
    real = (oc < cout) & (ic < cin)
    pad_in = (oc < cout) & (ic >= cin)
    out[pad_in] = np.int8(pad_value)
    if depthwise:
        out[real] = w[ic[real], 0, y[real], x[real]]
    else:
        out[real] = w[oc[real], ic[real], y[real], x[real]]
    return out


def unpack_conv_weights(packed: np.ndarray | bytes, cout: int, cin: int, kh: int, kw: int,
                        depthwise: bool = False) -> np.ndarray:
    """Inverse of :func:`pack_conv_weights` (``cin`` ignored for depthwise): OIHW int8."""
    ch_in = cout if depthwise else cin
    oc, ic, y, x = _weight_index(cout, ch_in, kh, kw, depthwise)
    raw = np.frombuffer(bytes(packed), dtype=np.int8) if not isinstance(packed, np.ndarray) else packed
    if raw.size < oc.size:
        raise ShapeError(f"weight buffer has {raw.size} bytes, layout needs {oc.size}")
    real = (oc < cout) & (ic < ch_in)
    out = np.zeros((cout, 1 if depthwise else cin, kh, kw), dtype=np.int8)
    if depthwise:
        out[ic[real], 0, y[real], x[real]] = raw[: oc.size][real]
    else:
        out[oc[real], ic[real], y[real], x[real]] = raw[: oc.size][real]
    return out


def weight_bytes(cout: int, cin: int, kh: int, kw: int, depthwise: bool = False) -> int:
    """Bytes actually written by :func:`pack_conv_weights`."""
    return int(_weight_index(cout, cout if depthwise else cin, kh, kw, depthwise)[0].size)


def mesa_weight_alloc_bytes(cout: int, cin: int, kh: int, kw: int, depthwise: bool = False) -> int:
    """Mesa's weight buffer size: ``KW * KH * kernels * align32(max(Cin, 16)) * 2`` (kernels = align2(Cout),
    1 for depthwise)."""
    kernels = 1 if depthwise else _align(cout, 2)
    return kw * kh * kernels * _align(max(cin, FEATURE_ATOMIC_SIZE), WEIGHT_ATOMIC_SIZE) * 2


# ---------------------------------------------------------------------------------------------- biases
def bias_correction(w: np.ndarray, weight_zero_point: int, input_zero_point: int,
                    depthwise: bool = False) -> np.ndarray:
    """Per output channel ``sum((w - wzp) * izp)`` with all values in the NPU domain (rkt_coefs.c
    ``calculate_bias_correction``: ``(w - wzp) * (izp - 0x80)`` on uint8 values)."""
    w = np.asarray(w).astype(np.int64)
    return (w - weight_zero_point).sum(axis=(1, 2, 3)) * int(input_zero_point)


def pack_bias(bias: np.ndarray, correction: np.ndarray, truncate_bits: int = 0) -> np.ndarray:
    """int32 biases the BS stage adds: ``(bias - correction) / 2**truncate_bits`` truncated toward zero (C
    integer division in rkt_fill_biases). Raises CompileError when a result does not fit int32."""
    if not 0 <= truncate_bits <= 31:
        raise CompileError(f"truncate_bits {truncate_bits} outside 0..31 (CORE_CLIP_TRUNCATE is 5 bits)")
    v = np.asarray(bias).astype(np.int64) - np.asarray(correction).astype(np.int64)
    q = np.sign(v) * (np.abs(v) >> truncate_bits)
    if q.size and (q.min() < -(2**31) or q.max() > 2**31 - 1):
        raise CompileError("corrected bias does not fit int32")
    return q.astype("<i4")
