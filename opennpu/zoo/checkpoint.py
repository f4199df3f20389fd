"""Torch-free, safe readers for PyTorch checkpoints (.pth/.pt) and safetensors files.

PyTorch checkpoints are pickles. Unpickling runs whatever callables the pickle names, so we never use a
plain ``pickle.load``: ``_RestrictedUnpickler.find_class`` resolves only the handful of globals a
state_dict needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``, the typed storage
classes, ...) to numpy-building stand-ins and refuses every other global with a CheckpointError before
anything runs. Tensor data is read from the storage records and every (offset, size, stride) is checked
against the storage length before the view is taken.

Two container layouts exist:
- zip (torch >= 1.6): ``<root>/data.pkl`` + ``<root>/data/<key>`` raw storages + ``<root>/byteorder``;
- legacy (torch < 1.6, used by the EfficientNet-Lite and MobileNetV2 files of the zoo): five pickles in a
  row (magic number, protocol version, sys_info, the object, the storage keys) followed by each storage
  as an int64 element count and the raw bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError

MAX_CHECKPOINT_BYTES = 4 << 30  # refuse files (and uncompressed zip members) over 4 GiB
MAX_PICKLE_BYTES = 256 << 20  # data.pkl holds only structure; real ones are kilobytes
MAX_TENSOR_BYTES = 2 << 30  # a strided view (stride 0) could otherwise expand into a huge copy
MAX_NESTING = 64
MAX_NODES = 1 << 20  # containers + tensors one checkpoint may hold

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage class name -> numpy dtype of its elements. BFloat16 has no numpy dtype: it is read as uint16
# and widened to float32 (exact).
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "UntypedStorage": "uint8",
}


class _Guarded:
    """Base of every object the unpickler can hand to a pickle: refuses BUILD (``__setstate__``), so a
    pickle cannot rewrite the shared stand-ins (e.g. a storage type's dtype) or forge a tensor's fields."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError(f"checkpoint tries to set the state of a {type(self).__name__.strip('_')}")


class _StorageType(_Guarded):
    """Stand-in for ``torch.FloatStorage`` & co: only carries the element dtype (immutable)."""

    __slots__ = ("name", "dtype", "itemsize")

    def __init__(self, name: str, dtype: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "itemsize", 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)

    def __setattr__(self, key: str, value: Any) -> None:
        raise CheckpointError("storage types are read-only")

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _Function(_Guarded):
    """Stand-in for an allowed torch function (immutable, unlike a plain Python function's __dict__)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        object.__setattr__(self, "fn", fn)

    def __setattr__(self, key: str, value: Any) -> None:
        raise CheckpointError("allowed functions are read-only")

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


class _Storage(_Guarded):
    """A storage referenced by the pickle; ``data`` (flat 1-D array) is attached once its bytes are read."""

    __slots__ = ("key", "stype", "data")

    def __init__(self, key: str, stype: _StorageType) -> None:
        self.key, self.stype = key, stype
        self.data: np.ndarray | None = None


class _StorageView(_Storage):
    """Legacy storage view: a window of a root storage (resolved after the storages are read)."""

    __slots__ = ("root", "view_offset", "count")

    def __init__(self, root: _Storage, offset: int, count: int) -> None:
        super().__init__(root.key, root.stype)
        self.root, self.view_offset, self.count = root, offset, count


class _TensorRef(_Guarded):
    """What ``_rebuild_tensor_v2`` returns: a strided view to materialise once storages are loaded."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...],
                 stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _as_int_tuple(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in v):
        raise CheckpointError(f"tensor {what} is not a tuple of ints: {v!r:.80}")
    return tuple(v)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise CheckpointError("tensor rebuild without a storage")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool):
        raise CheckpointError(f"tensor storage offset is not an int: {storage_offset!r:.80}")
    return _TensorRef(storage, storage_offset, _as_int_tuple(size, "size"), _as_int_tuple(stride, "stride"))


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                                  state: Any = None) -> Any:
    return data


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    return _as_int_tuple(dims, "torch.Size")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,  # a class: BUILD on it fails (mappingproxy)
    ("torch._utils", "_rebuild_tensor_v2"): _Function(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Function(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Function(_rebuild_parameter_with_state),
    ("torch", "Size"): _Function(_torch_size),
}
for _name, _dt in _STORAGE_DTYPES.items():
    _ALLOWED[("torch", _name)] = _StorageType(_name, _dt)
_ALLOWED[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage", "uint8")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build state_dict material; ``storages`` collects the storages it meets."""

    def __init__(self, file: io.BytesIO, legacy: bool) -> None:
        super().__init__(file, encoding="latin1")
        self.legacy = legacy
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(f"checkpoint references the global {module}.{name}, which a state_dict "
                                  "does not need; refusing to load it") from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"unexpected persistent id {pid!r:.80}")
        if pid[0] == "module":
            raise CheckpointError("checkpoint stores a whole module with its source code, not a state_dict")
        if pid[0] != "storage" or len(pid) < 5:
            raise CheckpointError(f"unexpected persistent id {pid!r:.80}")
        stype, key = pid[1], pid[2]
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"storage of unknown type {stype!r:.80}")
        key = str(key)
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = _Storage(key, stype)
        elif st.stype != stype:
            raise CheckpointError(f"storage {key!r} is referenced with two element types")
        if self.legacy and len(pid) > 5 and pid[5] is not None:
            # legacy storage view: (view_key, element offset, element count) into the root storage
            view = pid[5]
            if (not isinstance(view, tuple) or len(view) != 3
                    or not all(isinstance(v, int) for v in view[1:])):
                raise CheckpointError(f"bad legacy storage view {view!r:.80}")
            return _StorageView(st, view[1], view[2])
        return st


def _safe_unpickle(data: bytes, legacy: bool, what: str) -> tuple[Any, dict[str, _Storage]]:
    up = _RestrictedUnpickler(io.BytesIO(data), legacy)
    return _run_unpickler(up, what), up.storages


def _run_unpickler(up: _RestrictedUnpickler, what: str) -> Any:
    try:
        return up.load()
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{what} is nested too deeply") from None
    except MemoryError:
        raise CheckpointError(f"{what} needs more memory than available") from None
    except Exception as e:  # pickle raises many types on corrupt input (UnpicklingError, EOFError, ...)
        raise CheckpointError(f"{what} is not a valid pickle ({type(e).__name__}: {str(e)[:100]})") from None


def _storage_array(raw: bytes | memoryview, stype: _StorageType, big_endian: bool, key: str) -> np.ndarray:
    if len(raw) % stype.itemsize:
        raise CheckpointError(f"storage {key!r} has {len(raw)} bytes, not a multiple of {stype.itemsize}")
    if stype.dtype == "bfloat16":
        u16 = np.frombuffer(raw, dtype=">u2" if big_endian else "<u2").astype(np.uint32)
        return (u16 << 16).view(np.float32)
    dt = np.dtype(stype.dtype)
    if dt.itemsize > 1:
        dt = dt.newbyteorder(">" if big_endian else "<")
    return np.frombuffer(raw, dtype=dt)


def _materialise(ref: _TensorRef) -> np.ndarray:
    st = ref.storage
    flat, base = st.data, 0
    if isinstance(st, _StorageView):
        flat, base = st.root.data, st.view_offset
        if flat is not None and not (0 <= base and 0 <= st.count and base + st.count <= flat.size):
            raise CheckpointError(f"legacy storage view of {st.key!r} exceeds its storage")
        if flat is not None:
            flat = flat[base:base + st.count]
    if flat is None:
        raise CheckpointError(f"storage {st.key!r} is referenced but its data is missing")
    size, stride, offset = ref.size, ref.stride, ref.offset
    if len(size) != len(stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} have different ranks")
    if any(d < 0 for d in size) or any(s < 0 for s in stride) or offset < 0:
        raise CheckpointError(f"tensor has a negative size, stride or offset ({size}, {stride}, {offset})")
    count = int(np.prod(size, dtype=object))
    if count * flat.itemsize > MAX_TENSOR_BYTES:
        raise CheckpointError(f"tensor of shape {size} is over the {MAX_TENSOR_BYTES >> 30} GiB limit")
    if count == 0:
        return np.zeros(size, dtype=flat.dtype.newbyteorder("="))
    last = offset + sum((d - 1) * s for d, s in zip(size, stride, strict=True))
    if last >= flat.size:
        raise CheckpointError(f"tensor (offset {offset}, size {size}, stride {stride}) reads past the end "
                              f"of storage {st.key!r} ({flat.size} elements)")
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                           strides=tuple(s * flat.itemsize for s in stride), writeable=False)
    # copy: detach from the file buffer, make it contiguous and native-endian
    return np.array(view, dtype=flat.dtype.newbyteorder("="), order="C")  # (ascontiguousarray makes 0-d 1-d)


class _Walker:
    """Turns the unpickled object into plain containers with ndarrays, visiting each object once.

    Pickles can share and nest objects (memo references), so a naive recursive walk could loop or blow up
    exponentially; shared containers are resolved once and the total work is bounded."""

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}
        self.budget = MAX_NODES

    def resolve(self, obj: Any, depth: int = 0) -> Any:
        if depth > MAX_NESTING:
            raise CheckpointError(f"checkpoint nests containers more than {MAX_NESTING} deep")
        if not isinstance(obj, (_TensorRef, dict, list, tuple)):
            return obj
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        self.budget -= 1
        if self.budget < 0:
            raise CheckpointError(f"checkpoint holds more than {MAX_NODES} objects")
        if isinstance(obj, _TensorRef):
            out: Any = _materialise(obj)
        elif isinstance(obj, dict):
            out = {k: self.resolve(v, depth + 1) for k, v in obj.items()}
        else:
            out = [self.resolve(v, depth + 1) for v in obj]
        self.memo[key] = out
        return out


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")


def _flatten(obj: dict, prefix: str, out: dict[str, np.ndarray], depth: int = 0,
             seen: set[int] | None = None) -> None:
    # Shared sub-dicts (a DAG in the pickle) are walked once: otherwise 60 levels of {"a": d, "b": d} take 2^60 steps.
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if len(seen) > MAX_NODES:
        raise CheckpointError(f"checkpoint holds more than {MAX_NODES} containers")
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, np.ndarray):
            out[name] = v
            if len(out) > MAX_NODES:
                raise CheckpointError(f"checkpoint holds more than {MAX_NODES} tensors")
        elif isinstance(v, dict) and depth < MAX_NESTING:
            _flatten(v, name + ".", out, depth + 1, seen)
        # other leaves (epoch counters, hyper-parameters, strings) are not weights


def _contains_tensor(obj: Any, depth: int = 0) -> bool:
    if isinstance(obj, np.ndarray):
        return True
    return isinstance(obj, dict) and depth < 4 and any(_contains_tensor(v, depth + 1) for v in obj.values())


def to_state_dict(obj: Any, what: str = "checkpoint") -> dict[str, np.ndarray]:
    """A loaded checkpoint object -> flat {name: array}.

    Training checkpoints often wrap the weights (``{"state_dict": ..., "epoch": 3}``): a well-known wrapper
    key holding tensors is unwrapped; otherwise nested dicts are flattened with dotted names and non-tensor
    leaves are dropped."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} holds a {type(obj).__name__}, not a dict of tensors")
    for _ in range(4):  # unwrap {"state_dict": {...}}, also {"model": {"state_dict": {...}}}
        if any(isinstance(v, np.ndarray) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)
                      and _contains_tensor(obj[k])), None)
        if inner is None:
            break
        obj = inner
    out: dict[str, np.ndarray] = {}
    _flatten(obj, "", out)
    if not out:
        raise CheckpointError(f"{what} contains no tensors")
    return out


def _read_zip(path: Path, data: bytes) -> Any:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in infos if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pkl) != 1:
            raise CheckpointError(f"{path.name} is a zip but not a PyTorch checkpoint (no single data.pkl)")
        root = pkl[0][: -len("data.pkl")]

        def read(name: str, limit: int) -> bytes:
            info = infos.get(name)
            if info is None:
                raise CheckpointError(f"{path.name} lacks the record {name!r}")
            if info.file_size > limit:
                raise CheckpointError(f"record {name!r} of {path.name} is {info.file_size} bytes, "
                                      "over the limit")
            return zf.read(info)

        big = False
        if root + "byteorder" in infos:
            order = read(root + "byteorder", 16).strip()
            if order not in (b"little", b"big"):
                raise CheckpointError(f"{path.name} has an unknown byte order {order[:16]!r}")
            big = order == b"big"
        obj, storages = _safe_unpickle(read(pkl[0], MAX_PICKLE_BYTES), False, f"{path.name}/data.pkl")
        # torch stores records uncompressed; a record inflating far beyond the archive is a zip bomb.
        record_limit = min(MAX_CHECKPOINT_BYTES, 8 * len(data))
        for key, st in storages.items():
            raw = read(f"{root}data/{key}", record_limit)
            st.data = _storage_array(raw, st.stype, big, key)
        return obj
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, NotImplementedError,
            ValueError) as e:
        raise CheckpointError(f"{path.name} is a corrupt or truncated zip ({str(e)[:100]})") from None
    except MemoryError:
        raise CheckpointError(f"{path.name}: a record is too large to read") from None


def _read_legacy(path: Path, data: bytes) -> Any:
    f = io.BytesIO(data)

    def load(what: str) -> tuple[Any, dict[str, _Storage]]:
        up = _RestrictedUnpickler(f, legacy=True)
        return _run_unpickler(up, f"{path.name} ({what})"), up.storages

    magic, _ = load("magic number")
    if magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint (no zip, no legacy magic number)")
    proto, _ = load("protocol")
    if proto != _LEGACY_PROTOCOL:
        raise CheckpointError(f"{path.name} uses legacy protocol {proto!r:.20}, expected {_LEGACY_PROTOCOL}")
    sys_info, _ = load("sys_info")
    if not isinstance(sys_info, dict):
        raise CheckpointError(f"{path.name} has a malformed sys_info record")
    big = not sys_info.get("little_endian", True)
    # sys_info["type_sizes"] may say long=4 (files written on Windows); storages use fixed-width
    # element types regardless, as torch's own legacy reader assumes.
    obj, storages = load("object")
    keys, _ = load("storage keys")
    if not isinstance(keys, list):
        raise CheckpointError(f"{path.name} has a malformed storage key list")
    for key in keys:
        key = str(key)
        st = storages.get(key)
        if st is None:
            raise CheckpointError(f"{path.name} lists storage {key!r} that no tensor references")
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path.name} is truncated (storage {key!r} header)")
        (numel,) = struct.unpack(">q" if big else "<q", head)
        nbytes = numel * st.stype.itemsize
        if numel < 0 or nbytes > len(data) - f.tell():
            raise CheckpointError(f"{path.name} is truncated (storage {key!r} needs {nbytes} bytes)")
        raw = memoryview(data)[f.tell():f.tell() + nbytes]
        f.seek(nbytes, io.SEEK_CUR)
        st.data = _storage_array(raw, st.stype, big, key)
    return obj


def load_torch_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PyTorch .pth/.pt state_dict without torch and without running pickled code.

    Returns {name: ndarray} (C-contiguous copies, native byte order; bfloat16 widened to float32)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    size = p.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"checkpoint {p.name} is {size} bytes, over the limit")
    data = p.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {p.name} is truncated ({len(data)} bytes)")
    if data[:4] == b"PK\x03\x04":
        obj = _read_zip(p, data)
    elif data[:1] == b"\x80":  # pickle protocol opcode: the legacy format starts with a pickled magic
        obj = _read_legacy(p, data)
    elif len(data) > 262 and data[257:262] == b"ustar":
        raise CheckpointError(f"{p.name} uses the pre-0.4 tar checkpoint format, which is unsupported")
    else:
        raise CheckpointError(f"{p.name} is not a PyTorch checkpoint (unknown header {data[:4]!r})")
    try:
        return to_state_dict(_Walker().resolve(obj), p.name)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{p.name} nests objects too deeply") from None
    except Exception as e:  # an object graph no real checkpoint has (attributes forged with BUILD, ...)
        raise CheckpointError(f"{p.name} has a malformed object graph ({type(e).__name__}: "
                              f"{str(e)[:100]})") from None


def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a .safetensors file into {name: ndarray} (no pickle involved)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if p.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"checkpoint {p.name} is over the size limit")
    from safetensors.numpy import load

    try:
        tensors = load(p.read_bytes())
    except Exception as e:  # SafetensorError, and others on bad headers (dtypes numpy lacks, ...)
        raise CheckpointError(f"{p.name} is not a valid safetensors file ({str(e)[:100]})") from None
    return {k: np.array(v, order="C") for k, v in tensors.items()}


def load_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Dispatch on the suffix: .safetensors -> load_safetensors, else load_torch_checkpoint."""
    p = Path(path)
    return load_safetensors(p) if p.suffix == ".safetensors" else load_torch_checkpoint(p)


__all__ = ["load_checkpoint", "load_safetensors", "load_torch_checkpoint", "to_state_dict"]
