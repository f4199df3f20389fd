"""The compiled program file (``.npu``): one versioned file that runs without the source model.

Layout (all integers little-endian, every offset a multiple of 64)::

    offset 0    header, 64 bytes:
                  magic           8 bytes  b"\\x89NPU\\r\\n\\x1a\\n"  (PNG-style: catches text-mode mangling)
                  major, minor    u16 u16  format version, now 1.0
                  flags           u32      0 (no flags are defined in 1.x)
                  manifest_len    u64      bytes of the manifest
                  file_size       u64      total bytes of the file (truncation and appended junk are detected)
                  manifest_sha256 32 bytes sha256 of the manifest bytes
    offset 64   manifest: UTF-8 JSON (strict: no NaN/Infinity, no duplicate keys), manifest_len bytes
    data_start  = align64(64 + manifest_len); zero padding up to it
    data_start + blob.offset: the blobs, raw little-endian C-order array bytes, each starting 64-aligned,
                in ascending offset order; every byte between them is zero padding;
                file_size = data_start + align64(end of the last blob): nothing follows but padding.

Manifest (every key required; unknown keys are errors, except top-level keys in a file whose minor version is
newer than the reader's: minor versions only add keys)::

    {"format": "opennpu.program", "format_version": [1, 0],
     "target": "rk3588", "model_name": str, "created_by": "opennpu 0.1.0",
     "inputs":  [{"name": str, "shape": [int >= 0], "dtype": str, "quant": null | Q}],
     "outputs": [... same ...],
     "memory_plan": {...}, "tasks": [...], "jobs": [...],  # free-form JSON, owned by the target compiler
     "target_payload": {...},                              # free-form JSON, owned by the target compiler
     "graphs": {key: <opennpu.ir.serialize graph description>},  # CPU-fallback subgraphs
     "blobs": [{"name": str, "offset": int, "size": int, "dtype": str, "shape": [int], "sha256": hex}]}
    Q = {"scale": A, "zero_point": A, "axis": int | null, "bits": int | null}
    A = {"dtype": str, "shape": [int], "values": [number]}   # small inline array (<= 65536 values)

Blob offsets are relative to data_start, so the manifest does not depend on its own length. The arrays of an
embedded graph ``key`` are the blobs named ``graph/<key>/<array key>``; other blob names must not start with
``graph/``. Dtypes (blobs, specs, graph tensors) come from ``opennpu.ir.serialize.ALLOWED_DTYPES``.

``load_program`` trusts nothing: it checks the file size against ``max_bytes`` before reading, reads the header,
then the manifest only once its declared length is within ``max_manifest_bytes`` and the file; it validates the
whole manifest (types, required keys, name rules, nesting depth <= 64, blob bounds inside the file, 64-byte
alignment, no overlaps, dtype allow-list, prod(shape) * itemsize == size) before reading any blob, and reads each
blob into a buffer of its validated size, checking its sha256 and that all other bytes are zero padding. The
manifest is bounded before parsing (<= 8 MiB by default, <= 2**20 JSON arrays/objects) since parsed JSON takes
~20x its text. Every failure is a one-line ProgramFormatError. No pickle, no code execution.

API: ``Program(Manifest(target, model_name, inputs=[TensorSpec...], outputs=[...], memory_plan={...},
tasks=[...], jobs=[...], target_payload={...}), blobs={name: ndarray})``; ``program.add_graph(key, graph)`` /
``program.graph(key)`` embed and fetch CPU-fallback graphs; ``save_program(program, path)``,
``program_to_bytes(program)``, ``load_program(path_or_bytes, max_bytes=..., max_manifest_bytes=...)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import GraphError, ProgramFormatError
from ..ir.graph import Graph, QuantInfo, Tensor
from ..ir.serialize import ALLOWED_DTYPES, MAX_RANK, check_dtype, graph_from_dict, graph_to_dict, storable_array

MAGIC = b"\x89NPU\r\n\x1a\n"
FORMAT_NAME = "opennpu.program"
FORMAT_VERSION = (1, 0)
ALIGN = 64
HEADER = struct.Struct("<8sHHIQQ32s")
HEADER_SIZE = HEADER.size  # 64
DEFAULT_MAX_BYTES = 4 << 30  # the NPU address space is 32-bit: no program can usefully be larger
DEFAULT_MAX_MANIFEST_BYTES = 8 << 20  # parsed JSON takes up to ~20x its text: bounded
MAX_JSON_DEPTH = 64
MAX_JSON_CONTAINERS = 1 << 20  # bounds the memory and time json.loads may spend on the manifest
MAX_NAME_LEN = 256
MAX_INLINE_VALUES = 1 << 16
GRAPH_BLOB_PREFIX = "graph/"

_MANIFEST_KEYS = frozenset({"format", "format_version", "target", "model_name", "created_by", "inputs", "outputs",
                            "memory_plan", "tasks", "jobs", "target_payload", "graphs", "blobs"})
_SPEC_KEYS = frozenset({"name", "shape", "dtype", "quant"})
_QUANT_KEYS = frozenset({"scale", "zero_point", "axis", "bits"})
_INLINE_KEYS = frozenset({"dtype", "shape", "values"})
_BLOB_KEYS = frozenset({"name", "offset", "size", "dtype", "shape", "sha256"})
_HEX = frozenset("0123456789abcdef")

assert HEADER_SIZE == ALIGN


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _created_by() -> str:
    from .. import __version__

    return f"opennpu {__version__}"


# ---- data model -------------------------------------------------------------------------------------------

@dataclass
class TensorSpec:
    """A program input or output as the caller sees it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    quant: QuantInfo | None = None

    @classmethod
    def from_tensor(cls, t: Tensor) -> TensorSpec:
        if t.shape is None:
            raise GraphError(f"tensor {t.name!r} has no known shape")
        return cls(t.name, tuple(int(d) for d in t.shape), t.dtype, t.quant)


@dataclass
class Manifest:
    """Everything about a program except its binary blobs. ``memory_plan``, ``tasks``, ``jobs`` and
    ``target_payload`` are free-form JSON (dicts with str keys, lists, str, int, finite float, bool, None;
    tuples and numpy scalars are accepted on save and come back as lists and Python numbers)."""

    target: str
    model_name: str
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    memory_plan: dict[str, Any] = field(default_factory=dict)
    tasks: list[Any] = field(default_factory=list)
    jobs: list[Any] = field(default_factory=list)
    target_payload: dict[str, Any] = field(default_factory=dict)
    created_by: str = field(default_factory=_created_by)
    format_version: tuple[int, int] = FORMAT_VERSION  # as read from the file; writing always uses FORMAT_VERSION


@dataclass
class Program:
    """A compiled program: manifest, named arrays (weights, register command streams, LUTs...) and the
    CPU-fallback subgraphs, which are stored through ``opennpu.ir.serialize``."""

    manifest: Manifest
    blobs: dict[str, np.ndarray] = field(default_factory=dict)
    graphs: dict[str, Graph] = field(default_factory=dict)

    def add_graph(self, key: str, graph: Graph) -> str:
        """Embed a (CPU-fallback) graph under ``key``; returns the key."""
        _check_graph_key(key, ProgramFormatError)
        self.graphs[key] = graph
        return key

    def graph(self, key: str) -> Graph:
        try:
            return self.graphs[key]
        except KeyError:
            raise ProgramFormatError(f"program has no embedded graph {key!r} (it has {sorted(self.graphs)})") from None

    @property
    def blob_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.blobs.values())


def _check_graph_key(key: Any, err: type[Exception]) -> None:
    if not isinstance(key, str) or not key or len(key) > 128 or "/" in key:
        raise err(f"graph key {str(key)[:60]!r} must be a non-empty string of at most 128 characters without '/'")


# ---- writing ----------------------------------------------------------------------------------------------

def _plain(v: Any, where: str, depth: int = 0) -> Any:
    """Free-form manifest content as strict JSON values (ProgramFormatError for anything else)."""
    if depth > MAX_JSON_DEPTH - 8:  # leave room for the manifest's own nesting
        raise ProgramFormatError(f"{where} is nested too deeply")
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            raise ProgramFormatError(f"{where} holds a non-finite float, which strict JSON cannot store")
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x, where, depth + 1) for x in v]
    if isinstance(v, Mapping):
        if not all(isinstance(k, str) for k in v):
            raise ProgramFormatError(f"{where} has a dict with non-string keys")
        return {k: _plain(x, f"{where}.{k}", depth + 1) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        raise ProgramFormatError(f"{where} holds an ndarray: store it as a blob (or pass .tolist())")
    raise ProgramFormatError(f"{where} holds a {type(v).__name__}, which is not JSON")


def _check_str(v: Any, what: str, limit: int, empty: bool = True) -> str:
    if not isinstance(v, str) or len(v) > limit or (not empty and not v):
        raise ProgramFormatError(f"{what} must be a{'' if empty else ' non-empty'} string of at most {limit} "
                                 "characters")
    return v


def _inline_array(v: Any, where: str) -> dict[str, Any]:
    arr = np.asarray(v)
    if arr.dtype.name not in ALLOWED_DTYPES or arr.size > MAX_INLINE_VALUES:
        raise ProgramFormatError(f"{where}: {arr.dtype.name} array of {arr.size} values cannot be stored inline")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ProgramFormatError(f"{where} holds non-finite values")
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "values": arr.reshape(-1).tolist()}


def _spec_json(s: TensorSpec, where: str) -> dict[str, Any]:
    if not isinstance(s, TensorSpec):
        raise ProgramFormatError(f"{where} is a {type(s).__name__}, not a TensorSpec")
    if s.dtype not in ALLOWED_DTYPES:
        raise ProgramFormatError(f"{where}: dtype {s.dtype!r} is not allowed")
    quant = None
    if s.quant is not None:
        q = s.quant
        quant = {"scale": _inline_array(q.scale, f"{where} quant scale"),
                 "zero_point": _inline_array(q.zero_point, f"{where} quant zero_point"),
                 "axis": None if q.axis is None else int(q.axis), "bits": None if q.bits is None else int(q.bits)}
    _check_str(s.name, f"{where} name", MAX_NAME_LEN, empty=False)
    shape = [int(d) for d in s.shape]
    if any(d < 0 for d in shape):
        raise ProgramFormatError(f"{where}: shape {shape} has negative dims; a program has static shapes")
    return {"name": str(s.name), "shape": shape, "dtype": s.dtype, "quant": quant}


def _layout(program: Program) -> tuple[bytes, list[np.ndarray], int]:
    """Manifest bytes, the blob arrays in file order, and the total file size."""
    m = program.manifest
    if not isinstance(m, Manifest):
        raise ProgramFormatError(f"program manifest is a {type(m).__name__}, not a Manifest")
    arrays: list[tuple[str, np.ndarray]] = []
    for name, arr in program.blobs.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LEN or name.startswith(GRAPH_BLOB_PREFIX):
            raise ProgramFormatError(f"blob name {str(name)[:60]!r} must be a non-empty string of at most "
                                     f"{MAX_NAME_LEN} characters not starting with {GRAPH_BLOB_PREFIX!r}")
        try:
            arrays.append((name, storable_array(arr, f"blob {name!r}")))
        except GraphError as e:
            raise ProgramFormatError(str(e)) from None
    graphs = {}
    for key, g in program.graphs.items():
        _check_graph_key(key, ProgramFormatError)
        meta, garrays = graph_to_dict(g)
        graphs[key] = meta
        arrays += [(f"{GRAPH_BLOB_PREFIX}{key}/{k}", a) for k, a in garrays.items()]

    entries, offset = [], 0
    for name, arr in arrays:
        entries.append({"name": name, "offset": offset, "size": int(arr.nbytes), "dtype": arr.dtype.name,
                        "shape": list(arr.shape), "sha256": hashlib.sha256(arr.data).hexdigest()})
        offset = _align(offset + arr.nbytes)
    manifest = {
        "format": FORMAT_NAME, "format_version": list(FORMAT_VERSION),
        "target": _check_str(m.target, "target", 64, empty=False),
        "model_name": _check_str(m.model_name, "model_name", MAX_NAME_LEN),
        "created_by": _check_str(m.created_by, "created_by", MAX_NAME_LEN),
        "inputs": [_spec_json(s, f"input spec #{i}") for i, s in enumerate(m.inputs)],
        "outputs": [_spec_json(s, f"output spec #{i}") for i, s in enumerate(m.outputs)],
        "memory_plan": _plain(m.memory_plan, "memory_plan"), "tasks": _plain(m.tasks, "tasks"),
        "jobs": _plain(m.jobs, "jobs"), "target_payload": _plain(m.target_payload, "target_payload"),
        "graphs": graphs, "blobs": entries,
    }
    for key in ("memory_plan", "target_payload"):
        if not isinstance(manifest[key], dict):
            raise ProgramFormatError(f"{key} must be a dict")
    for key in ("tasks", "jobs"):
        if not isinstance(manifest[key], list):
            raise ProgramFormatError(f"{key} must be a list")
    data = json.dumps(manifest, allow_nan=False, separators=(",", ":")).encode("utf-8")
    if len(data) > DEFAULT_MAX_MANIFEST_BYTES:
        raise ProgramFormatError(f"manifest is {len(data)} bytes, over the {DEFAULT_MAX_MANIFEST_BYTES}-byte limit "
                                 "load_program applies by default: move bulky data into blobs")
    _check_depth(manifest, "manifest")
    return data, [a for _, a in arrays], _align(HEADER_SIZE + len(data)) + offset


def write_program(program: Program, f: BinaryIO) -> int:
    """Write ``program`` to a binary stream; returns the number of bytes written."""
    manifest, arrays, file_size = _layout(program)
    f.write(HEADER.pack(MAGIC, FORMAT_VERSION[0], FORMAT_VERSION[1], 0, len(manifest), file_size,
                        hashlib.sha256(manifest).digest()))
    f.write(manifest)
    pos = HEADER_SIZE + len(manifest)
    for arr in arrays:
        f.write(b"\0" * (_align(pos) - pos))
        pos = _align(pos)
        f.write(arr.data)
        pos += arr.nbytes
    f.write(b"\0" * (file_size - pos))
    return file_size


def program_to_bytes(program: Program) -> bytes:
    buf = io.BytesIO()
    write_program(program, buf)
    return buf.getvalue()


def save_program(program: Program, path: str | Path) -> Path:
    """Write ``program`` to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write_program(program, f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---- reading ----------------------------------------------------------------------------------------------

def _no_constants(name: str) -> Any:
    raise ProgramFormatError(f"manifest holds the non-JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ProgramFormatError(f"manifest has the key {k[:60]!r} twice in one object")
        d[k] = v
    return d


def _check_depth(root: Any, where: str) -> None:
    level = [root] if isinstance(root, (dict, list)) else []
    depth = 0
    while level:  # breadth first, one list comprehension per level: fast on millions of small containers
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise ProgramFormatError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels")
        level = [x for v in level for x in (v.values() if isinstance(v, dict) else v) if isinstance(x, (dict, list))]


def _bounded_prod(shape: tuple[int, ...], limit: int) -> int:
    """Product of the dims counting 0 as 1 (numpy refuses absurd shapes even when empty), capped past limit."""
    n = 1
    for d in shape:
        n *= max(d, 1)
        if n > limit:
            return limit + 1
    return n


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Reader:
    def __init__(self, f: BinaryIO, size: int, where: str, max_manifest_bytes: int) -> None:
        self.f, self.size, self.where, self.max_manifest = f, size, where, max_manifest_bytes

    def fail(self, msg: str) -> ProgramFormatError:
        return ProgramFormatError(f"{self.where}: {msg}")

    def read_exact(self, offset: int, n: int, what: str) -> bytearray:
        buf = bytearray(n)
        self.f.seek(offset)
        got = self.f.readinto(buf) if n else 0
        if got != n:
            raise self.fail(f"{what} is truncated (wanted {n} bytes at offset {offset}, got {got})")
        return buf

    def check_padding(self, start: int, end: int) -> None:
        while start < end:
            n = min(end - start, 1 << 20)
            if self.read_exact(start, n, "padding").count(0) != n:
                raise self.fail(f"non-zero bytes in the padding at offset {start}..{start + n}")
            start += n

    # -- manifest pieces --
    def obj(self, v: Any, keys: frozenset[str], what: str, allow_extra: bool = False) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(f"{what} is a {type(v).__name__}, not an object")
        missing = sorted(keys - set(v))
        if missing:
            raise self.fail(f"{what} is missing the keys {missing}")
        extra = sorted(set(v) - keys)
        if extra and not allow_extra:
            raise self.fail(f"{what} has unknown keys {[k[:40] for k in extra[:5]]}")
        return v

    def string(self, v: Any, what: str, limit: int = 4096, empty: bool = True) -> str:
        if not isinstance(v, str) or len(v) > limit or (not empty and not v):
            raise self.fail(f"{what} must be a{'' if empty else ' non-empty'} string of at most {limit} characters")
        return v

    def shape(self, v: Any, what: str) -> tuple[int, ...]:
        if not isinstance(v, list) or len(v) > MAX_RANK or not all(_is_int(d) and d >= 0 for d in v):
            raise self.fail(f"{what} must be a list of at most {MAX_RANK} non-negative integers")
        return tuple(v)

    def dtype(self, v: Any, what: str) -> np.dtype:
        if not isinstance(v, str) or v not in ALLOWED_DTYPES:
            raise self.fail(f"{what}: dtype {str(v)[:40]!r} is not allowed")
        return check_dtype(v, what)

    def inline(self, v: Any, what: str) -> np.ndarray:
        v = self.obj(v, _INLINE_KEYS, what)
        dt = self.dtype(v["dtype"], what)
        shape = self.shape(v["shape"], f"{what} shape")
        if _bounded_prod(shape, MAX_INLINE_VALUES) > MAX_INLINE_VALUES:
            raise self.fail(f"{what}: shape {list(shape)[:8]} is too large for an inline array")
        n = math.prod(shape)
        vals = v["values"]
        if not isinstance(vals, list) or len(vals) != n:
            raise self.fail(f"{what}: 'values' must be a list of {n} numbers")
        if dt.kind == "b":
            ok = all(isinstance(x, bool) for x in vals)
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            ok = all(_is_int(x) and info.min <= x <= info.max for x in vals)
        else:
            ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals)
        if not ok:
            raise self.fail(f"{what}: values do not fit dtype {v['dtype']}")
        with np.errstate(over="ignore"):
            return np.array(vals, dtype=dt).reshape(shape)

    def spec(self, v: Any, what: str) -> TensorSpec:
        v = self.obj(v, _SPEC_KEYS, what)
        name = self.string(v["name"], f"{what} name", MAX_NAME_LEN, empty=False)
        shape = self.shape(v["shape"], f"{what} shape")
        self.dtype(v["dtype"], what)
        quant = None
        if v["quant"] is not None:
            q = self.obj(v["quant"], _QUANT_KEYS, f"{what} quant")
            for k in ("axis", "bits"):
                if q[k] is not None and not (_is_int(q[k]) and -64 <= q[k] <= 64):
                    raise self.fail(f"{what} quant {k} must be null or a small integer")
            quant = QuantInfo(self.inline(q["scale"], f"{what} quant scale"),
                              self.inline(q["zero_point"], f"{what} quant zero_point"), q["axis"], q["bits"])
        return TensorSpec(name, shape, v["dtype"], quant)

    # -- the file --
    def load(self) -> Program:
        if self.size < HEADER_SIZE:
            raise self.fail(f"file is truncated: {self.size} bytes, shorter than the {HEADER_SIZE}-byte header")
        magic, major, minor, flags, mlen, fsize, msha = HEADER.unpack(self.read_exact(0, HEADER_SIZE, "header"))
        if magic != MAGIC:
            raise self.fail(f"not an opennpu program (magic bytes {magic[:8]!r}, expected {MAGIC!r})")
        if major > FORMAT_VERSION[0]:
            raise self.fail(f"format version {major}.{minor} is newer than this opennpu reads "
                            f"({FORMAT_VERSION[0]}.x): upgrade opennpu")
        if major != FORMAT_VERSION[0]:
            raise self.fail(f"unknown format version {major}.{minor}")
        if flags != 0:
            raise self.fail(f"header flags 0x{flags:x} are not defined in format {major}.x")
        if fsize != self.size:
            if self.size < fsize:
                raise self.fail(f"file is truncated: the header declares {fsize} bytes, the file has {self.size}")
            raise self.fail(f"file has {self.size - fsize} unexpected bytes after its declared end ({fsize})")
        if mlen > self.max_manifest:
            raise self.fail(f"manifest is {mlen} bytes, over the {self.max_manifest}-byte limit")
        data_start = _align(HEADER_SIZE + mlen)
        if data_start > self.size:
            raise self.fail(f"manifest ({mlen} bytes) extends beyond the end of the file ({self.size} bytes)")
        raw = bytes(self.read_exact(HEADER_SIZE, mlen, "manifest"))
        if hashlib.sha256(raw).digest() != msha:
            raise self.fail("manifest checksum mismatch (the manifest is corrupt)")
        containers = raw.count(b"[") + raw.count(b"{")  # an upper bound (brackets in strings count too)
        if containers > MAX_JSON_CONTAINERS:
            raise self.fail(f"manifest has over {MAX_JSON_CONTAINERS} JSON arrays/objects")
        try:
            m = json.loads(raw.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
        except ProgramFormatError as e:
            raise self.fail(str(e)) from None
        except RecursionError:
            raise self.fail(f"manifest is nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, too many int digits
            raise self.fail(f"manifest is not valid UTF-8 JSON ({str(e).splitlines()[0][:120]})") from None
        try:
            _check_depth(m, "manifest")
        except ProgramFormatError as e:
            raise self.fail(str(e)) from None

        m = self.obj(m, _MANIFEST_KEYS, "manifest", allow_extra=minor > FORMAT_VERSION[1])
        if m["format"] != FORMAT_NAME:
            raise self.fail(f"manifest format is {str(m['format'])[:40]!r}, expected {FORMAT_NAME!r}")
        fv = m["format_version"]
        if not (isinstance(fv, list) and len(fv) == 2 and all(_is_int(x) for x in fv)) or tuple(fv) != (major, minor):
            raise self.fail(f"manifest format_version {str(fv)[:40]} does not match the header ({major}.{minor})")
        for key, typ in (("memory_plan", dict), ("tasks", list), ("jobs", list), ("target_payload", dict),
                         ("graphs", dict), ("blobs", list), ("inputs", list), ("outputs", list)):
            if not isinstance(m[key], typ):
                raise self.fail(f"manifest {key!r} is a {type(m[key]).__name__}, not a {typ.__name__}")
        manifest = Manifest(
            target=self.string(m["target"], "target", 64, empty=False),
            model_name=self.string(m["model_name"], "model_name", MAX_NAME_LEN),
            created_by=self.string(m["created_by"], "created_by", MAX_NAME_LEN),
            inputs=[self.spec(s, f"input spec #{i}") for i, s in enumerate(m["inputs"])],
            outputs=[self.spec(s, f"output spec #{i}") for i, s in enumerate(m["outputs"])],
            memory_plan=m["memory_plan"], tasks=m["tasks"], jobs=m["jobs"], target_payload=m["target_payload"],
            format_version=(major, minor),
        )

        # blob table: everything checked before any blob byte is read
        blobs = []
        names: set[str] = set()
        for i, b in enumerate(m["blobs"]):
            b = self.obj(b, _BLOB_KEYS, f"blob #{i}")
            name = self.string(b["name"], f"blob #{i} name", MAX_NAME_LEN, empty=False)
            what = f"blob {name!r}"
            if name in names:
                raise self.fail(f"{what} is listed twice")
            names.add(name)
            off, size = b["offset"], b["size"]
            if not (_is_int(off) and off >= 0 and off % ALIGN == 0):
                raise self.fail(f"{what}: offset {str(off)[:30]} is not a non-negative multiple of {ALIGN}")
            if not (_is_int(size) and size >= 0):
                raise self.fail(f"{what}: size {str(size)[:30]} is not a non-negative integer")
            if data_start + off + size > self.size:
                raise self.fail(f"{what} (offset {off}, {size} bytes) extends beyond the end of the file")
            dt = self.dtype(b["dtype"], what)
            shape = self.shape(b["shape"], f"{what} shape")
            if _bounded_prod(shape, self.size) * dt.itemsize > max(self.size, 1):
                raise self.fail(f"{what}: shape {list(shape)[:8]} is larger than the whole file")
            n = math.prod(shape) * dt.itemsize
            if n != size:
                raise self.fail(f"{what}: shape {list(shape)[:8]} of {b['dtype']} does not make {size} bytes")
            sha = b["sha256"]
            if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _HEX):
                raise self.fail(f"{what}: sha256 must be 64 lowercase hex digits")
            blobs.append((off, size, name, dt, shape, sha))
        blobs.sort(key=lambda x: x[0])
        end = 0
        for off, size, name, *_ in blobs:
            if size and off < end:
                raise self.fail(f"blob {name!r} (offset {off}) overlaps the previous blob (ending at {end})")
            end = max(end, off + size)
        if data_start + _align(end) != self.size:
            raise self.fail(f"file has {self.size - data_start - _align(end)} bytes no blob accounts for")

        graph_metas = m["graphs"]
        for key in graph_metas:
            _check_graph_key(key, self.fail)
        for name in names:
            if name.startswith(GRAPH_BLOB_PREFIX) and name[len(GRAPH_BLOB_PREFIX):].split("/")[0] not in graph_metas:
                raise self.fail(f"blob {name!r} belongs to no embedded graph")

        arrays: dict[str, np.ndarray] = {}
        pos = HEADER_SIZE + mlen  # everything between the manifest, the blobs and the end must be zero padding
        for off, size, name, dt, shape, sha in blobs:
            self.check_padding(pos, data_start + off)
            pos = max(pos, data_start + off + size)
            buf = self.read_exact(data_start + off, size, f"blob {name!r}")
            if hashlib.sha256(buf).hexdigest() != sha:
                raise self.fail(f"blob {name!r} checksum mismatch (the data is corrupt)")
            arrays[name] = np.frombuffer(buf, dtype=dt).reshape(shape)

        self.check_padding(pos, self.size)

        graphs: dict[str, Graph] = {}
        for key, meta in graph_metas.items():
            prefix = f"{GRAPH_BLOB_PREFIX}{key}/"
            garrays = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
            try:
                graphs[key] = graph_from_dict(meta, garrays)
            except GraphError as e:
                raise self.fail(f"embedded graph {key!r}: {e}") from None
        blobs_out = {k: a for k, a in arrays.items() if not k.startswith(GRAPH_BLOB_PREFIX)}
        return Program(manifest, blobs_out, graphs)


def load_program(source: str | Path | bytes, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES) -> Program:
    """Read and validate a program file (a path, or the file's bytes). ProgramFormatError on any problem."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise ProgramFormatError(f"<bytes>: program is {len(data)} bytes, over the {max_bytes}-byte limit")
        return _load(io.BytesIO(data), len(data), "<bytes>", max_manifest_bytes)
    path = Path(source)
    where = str(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not os.path.isfile(path):
                raise ProgramFormatError(f"{where}: not a regular file")
            if st.st_size > max_bytes:
                raise ProgramFormatError(f"{where}: program is {st.st_size} bytes, over the {max_bytes}-byte limit")
            return _load(f, st.st_size, where, max_manifest_bytes)
    except OSError as e:
        raise ProgramFormatError(f"{where}: cannot read program file ({e.strerror or e})") from None


def _load(f: BinaryIO, size: int, where: str, max_manifest_bytes: int) -> Program:
    try:
        return _Reader(f, size, where, max_manifest_bytes).load()
    except ProgramFormatError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error, RecursionError) as e:
        # safety net: every check above should have fired first; never let a bad file escape as another type
        raise ProgramFormatError(f"{where}: malformed program ({type(e).__name__}: {str(e)[:120]})") from None


__all__ = ["ALIGN", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_MANIFEST_BYTES", "FORMAT_VERSION", "MAGIC", "Manifest",
           "Program", "TensorSpec", "load_program", "program_to_bytes", "save_program", "write_program"]
