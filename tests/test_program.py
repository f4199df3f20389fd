"""opennpu.runtime.program: the .npu program file — round trips, the documented layout, malformed files.

The layout is re-parsed here from its documentation (header struct "<8sHHIQQ32s", JSON manifest, 64-byte
aligned blobs relative to data_start), independently of the module's constants, and every malformed file is
crafted from that description with correct checksums where the case needs them, so each case reaches the check
it targets. Every malformed file must raise ProgramFormatError (never another exception) with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from opennpu.errors import GraphError, ProgramFormatError
from opennpu.frontends import load_model
from opennpu.ir.graph import Graph, QuantInfo, Tensor
from opennpu.ir.serialize import ALLOWED_DTYPES
from opennpu.runtime.cpu import run_graph
from opennpu.runtime.program import (
    Manifest,
    Program,
    TensorSpec,
    load_program,
    program_to_bytes,
    save_program,
)

HDR = struct.Struct("<8sHHIQQ32s")  # documented: magic, major, minor, flags, manifest_len, file_size, sha256
MAGIC = b"\x89NPU\r\n\x1a\n"


def align(n: int) -> int:
    return (n + 63) // 64 * 64


def parse(data: bytes) -> tuple[tuple, dict, bytes]:
    """(header fields, manifest, blob region) following the documented layout."""
    h = HDR.unpack(data[:64])
    mlen = h[4]
    manifest = json.loads(data[64:64 + mlen])
    return h, manifest, data[align(64 + mlen):]


def build(manifest: dict | bytes, region: bytes, *, magic: bytes = MAGIC, major: int = 1, minor: int = 0,
          flags: int = 0, fsize: int | None = None, sha: bytes | None = None, mlen: int | None = None) -> bytes:
    """A file with a (possibly edited) manifest and blob region, header fields recomputed unless given."""
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    body = raw + b"\0" * (align(64 + len(raw)) - 64 - len(raw)) + region
    size = 64 + len(body)
    hdr = HDR.pack(magic, major, minor, flags, len(raw) if mlen is None else mlen, size if fsize is None else fsize,
                   hashlib.sha256(raw).digest() if sha is None else sha)
    return hdr + body


def small_graph() -> Graph:
    g = Graph("cpu_tail")
    g.add_tensor(Tensor("feat", (1, 4), "float32"))
    w = g.add_const("w", np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3))
    g.add_node("MatMul", ["feat", w], ["mm"], attrs={"clip": (0.0, math.inf)})
    g.add_node("Softmax", ["mm"], ["prob"], attrs={"axis": -1})
    g.inputs, g.outputs = ["feat"], ["prob"]
    return g


def base_program() -> Program:
    m = Manifest(
        target="rk3588", model_name="unit",
        inputs=[TensorSpec("x", (1, 3, 8, 8), "int8", QuantInfo(np.array([0.05], np.float32), np.array([-3]), None))],
        outputs=[TensorSpec("y", (1, 4), "float32"),
                 TensorSpec("q", (4, 2), "int8", QuantInfo(np.array([0.5, 0.25, 0.125, 1.0], np.float32),
                                                            np.array([0, 1, -1, 0], np.int64), 0, 4))],
        memory_plan={"regions": [{"name": "weights", "addr": 0x1000, "size": 4096}], "total": 8192},
        tasks=[{"core": 0, "regcmd": "regcmd0", "words": 12}, {"core": 1, "deps": [0]}],
        jobs=[[0, 1]], target_payload={"cbuf_banks": 12, "note": "ünïcødé", "flags": [True, None, 1.5]},
    )
    blobs = {
        "regcmd0": (np.arange(12, dtype=np.uint64) << np.uint64(48)) | np.uint64(0x1004),
        "weights": np.random.default_rng(0).integers(-128, 128, (7, 3, 3, 3)).astype(np.int8),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 16), np.int32),
    }
    for dt in sorted(ALLOWED_DTYPES):
        blobs[f"dtype/{dt}"] = (np.arange(5) * 7 - 10).astype(dt)
    p = Program(m, blobs)
    p.add_graph("tail", small_graph())
    return p


@pytest.fixture(scope="module")
def base_bytes() -> bytes:
    return program_to_bytes(base_program())


# ---- round trips ------------------------------------------------------------------------------------------

def test_roundtrip_and_layout(base_bytes, tmp_path):
    p = base_program()
    path = save_program(p, tmp_path / "unit.npu")
    assert path.read_bytes() == base_bytes  # deterministic
    assert not (tmp_path / "unit.npu.tmp").exists()
    q = load_program(path)
    assert q.manifest == Manifest(**{**p.manifest.__dict__, "inputs": q.manifest.inputs,
                                     "outputs": q.manifest.outputs})
    for a, b in zip(p.manifest.inputs + p.manifest.outputs, q.manifest.inputs + q.manifest.outputs, strict=True):
        assert (a.name, a.shape, a.dtype) == (b.name, b.shape, b.dtype)
        assert (a.quant is None) == (b.quant is None)
        if a.quant is not None:
            assert (a.quant.axis, a.quant.bits) == (b.quant.axis, b.quant.bits)
            for x, y in ((a.quant.scale, b.quant.scale), (a.quant.zero_point, b.quant.zero_point)):
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    assert list(q.blobs) == list(p.blobs)
    for k, a in p.blobs.items():
        b = q.blobs[k]
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), k
        assert b.flags.writeable
    assert list(q.graphs) == ["tail"]
    x = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    ra, rb = run_graph(p.graph("tail"), {"feat": x}), run_graph(q.graph("tail"), {"feat": x})
    assert np.array_equal(ra["prob"], rb["prob"])

    # the documented layout
    (magic, major, minor, flags, mlen, fsize, msha), man, region = parse(base_bytes)
    assert (magic, major, minor, flags, fsize) == (MAGIC, 1, 0, 0, len(base_bytes))
    assert msha == hashlib.sha256(base_bytes[64:64 + mlen]).digest()
    assert fsize % 64 == 0 and man["format_version"] == [1, 0] and man["target"] == "rk3588"
    for b in man["blobs"]:
        assert b["offset"] % 64 == 0
        chunk = region[b["offset"]:b["offset"] + b["size"]]
        assert hashlib.sha256(chunk).hexdigest() == b["sha256"]
        if b["name"] in p.blobs:
            assert chunk == p.blobs[b["name"]].astype(p.blobs[b["name"]].dtype.newbyteorder("<")).tobytes()
    assert {b["name"] for b in man["blobs"]} >= {"graph/tail/a0"}


def test_mobilenetv2_as_cpu_fallback_graph(tmp_path):
    g = load_model("mobilenetv2")
    p = Program(Manifest("rk3588", g.name, [TensorSpec.from_tensor(g.tensor(n)) for n in g.inputs],
                         [TensorSpec.from_tensor(g.tensor(n)) for n in g.outputs]))
    p.add_graph("cpu0", g)
    q = load_program(save_program(p, tmp_path / "m.npu"))
    g2 = q.graph("cpu0")
    assert q.blobs == {} and q.manifest.inputs[0].shape == (1, 3, 224, 224)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    a, b = run_graph(g, {g.inputs[0]: x}), run_graph(g2, {g.inputs[0]: x})
    assert all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_free_form_sections_are_normalized():
    p = Program(Manifest("rk3588", "n", memory_plan={"t": (1, 2), "n": np.int64(5), "f": np.float32(0.5),
                                                       "b": np.bool_(True)}, tasks=[(1, (2, 3))]))
    q = load_program(program_to_bytes(p))
    assert q.manifest.memory_plan == {"t": [1, 2], "n": 5, "f": 0.5, "b": True}
    assert type(q.manifest.memory_plan["n"]) is int and q.manifest.tasks == [[1, [2, 3]]]
    assert q.manifest.created_by.startswith("opennpu ")


def test_newer_minor_version_with_extra_keys_loads(base_bytes):
    _, man, region = parse(base_bytes)
    man["format_version"] = [1, 7]
    man["new_feature"] = {"x": 1}
    q = load_program(build(man, region, minor=7))
    assert q.manifest.format_version == (1, 7) and "tail" in q.graphs


@pytest.mark.parametrize("make", [
    lambda p: p.blobs.update({"graph/x/a0": np.zeros(1)}),        # reserved prefix
    lambda p: p.blobs.update({"": np.zeros(1)}),
    lambda p: p.blobs.update({"obj": np.array([object()])}),
    lambda p: p.blobs.update({"c": np.zeros(2, np.complex64)}),
    lambda p: p.blobs.update({"l": [1, 2]}),
    lambda p: p.manifest.target_payload.update({"a": np.zeros(3)}),
    lambda p: p.manifest.target_payload.update({"a": math.nan}),
    lambda p: p.manifest.target_payload.update({1: 2}),
    lambda p: p.manifest.memory_plan.update({"s": {1, 2}}),
    lambda p: setattr(p.manifest, "tasks", {"not": "a list"}),
    lambda p: p.manifest.outputs.append(TensorSpec("d", (-1, 3), "float32")),
    lambda p: p.manifest.outputs.append(TensorSpec("d", (1,), "complex64")),
    lambda p: p.graphs.update({"a/b": small_graph()}),
    lambda p: setattr(p.manifest, "target", ""),
    lambda p: setattr(p.manifest, "model_name", None),
    lambda p: p.manifest.inputs.append(TensorSpec("", (1,), "float32")),
])
def test_unsavable_programs_are_refused(make):
    p = base_program()
    make(p)
    with pytest.raises(ProgramFormatError):
        program_to_bytes(p)


def test_unsavable_graph_attr_is_graph_error():
    p = base_program()
    p.graph("tail").nodes[0].attrs["bad"] = object()
    with pytest.raises(GraphError):
        program_to_bytes(p)


def test_missing_graph_key_is_typed():
    with pytest.raises(ProgramFormatError, match="no embedded graph"):
        base_program().graph("nope")


# ---- malformed files --------------------------------------------------------------------------------------

def _edit(fn):
    """A case that edits the manifest (dict) and/or region (bytearray), rebuilt with correct checksums."""
    def make(data: bytes) -> bytes:
        _, man, region = parse(data)
        region = bytearray(region)
        out = fn(man, region)
        return out if isinstance(out, bytes) else build(man, bytes(region))
    return make


def _blob(man: dict, name: str) -> dict:
    return next(b for b in man["blobs"] if b["name"] == name)


def _set_blob(which: str, **kv):
    return _edit(lambda m, r: _blob(m, which).update(kv))


def _nested_payload(depth: int):
    def fn(m, r):
        v: Any = 1
        for _ in range(depth):
            v = [v]
        m["target_payload"]["deep"] = v
    return _edit(fn)


def _with_header(**kv):
    def make(data: bytes) -> bytes:
        _, man, region = parse(data)
        return build(man, region, **kv)
    return make


def _raw_manifest(raw: bytes):
    def make(data: bytes) -> bytes:
        return build(raw, parse(data)[2])
    return make


def _overlap(m, r):
    w, e = _blob(m, "weights"), _blob(m, "regcmd0")
    w["offset"] = e["offset"] + 64  # inside regcmd0's 96 bytes, still 64-aligned


def _orphan_graph_blob(m, r):
    b = dict(_blob(m, "empty"))
    b["name"] = "graph/ghost/a0"
    m["blobs"].append(b)


def _dup_blob(m, r):
    m["blobs"].append(dict(_blob(m, "empty")))


def _flip_data(m, r):
    off = _blob(m, "weights")["offset"]
    r[off + 3] ^= 0xFF


def _graph_dangling(m, r):
    m["graphs"]["tail"]["nodes"][1]["inputs"] = ["ghost"]


def _graph_missing_blob(m, r):
    m["blobs"] = [b for b in m["blobs"] if not b["name"].startswith("graph/tail/")]
    m["graphs"]["tail"]["tensors"].append({"name": "c", "shape": [1], "dtype": "float32", "data": "a5",
                                           "quant": None, "dim_names": None})


MALFORMED = {
    # size and header
    "empty file": lambda d: b"",
    "truncated in header": lambda d: d[:30],
    "truncated after header": lambda d: d[:64],
    "truncated in manifest": lambda d: d[:200],
    "truncated in blobs": lambda d: d[:len(d) // 2 + 3],
    "truncated by one byte": lambda d: d[:-1],
    "appended junk": lambda d: d + b"MZ" * 40,
    "bad magic": lambda d: b"\x7fELF\x02\x01\x01\x00" + d[8:],
    "text-mode mangled magic": lambda d: d[:4] + b"\n\x1a\n" + d[8:],
    "pickle instead": lambda d: b"\x80\x04\x95" + b"\0" * 100,
    "future major version": _with_header(major=2),
    "major version zero": _with_header(major=0),
    "unknown header flags": _with_header(flags=1),
    "file_size field lies": _with_header(fsize=1 << 40),
    "manifest length beyond file": _with_header(mlen=1 << 20),
    "manifest length absurd": _with_header(mlen=(1 << 64) - 1),
    "manifest checksum mismatch": _with_header(sha=b"\0" * 32),
    "junk in manifest padding": lambda d: d[:64 + HDR.unpack(d[:64])[4]] + b"\x01" + d[65 + HDR.unpack(d[:64])[4]:],
    "junk in final padding": lambda d: d[:-1] + b"\x01",
    # manifest content
    "manifest not JSON": _raw_manifest(b"\x80\x04\x95this is not json"),
    "manifest not UTF-8": _raw_manifest(b'{"format": "\xff\xfe"}'),
    "manifest empty": _raw_manifest(b""),
    "manifest is a list": _raw_manifest(b"[1, 2, 3]"),
    "manifest NaN literal": _raw_manifest(b'{"format": NaN}'),
    "manifest duplicate keys": _raw_manifest(b'{"format": "opennpu.program", "format": "x"}'),
    "manifest deeply nested JSON": _raw_manifest(b"[" * 100_000 + b"]" * 100_000),
    "manifest nested object bomb": _raw_manifest(b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    "manifest with 1.1M empty arrays": _raw_manifest(b"[" + b"[]," * (1_100_000) + b"[]]"),
    "manifest 5000-digit integer": _raw_manifest(b'{"format": ' + b"9" * 5000 + b"}"),
    "payload nested 70 deep": _nested_payload(70),
    "missing key blobs": _edit(lambda m, r: m.pop("blobs")),
    "missing key target": _edit(lambda m, r: m.pop("target")),
    "unknown top-level key": _edit(lambda m, r: m.update({"exec": "rm -rf /"})),
    "wrong format name": _edit(lambda m, r: m.update({"format": "onnx"})),
    "format_version disagrees with header": _edit(lambda m, r: m.update({"format_version": [1, 1]})),
    "target not a string": _edit(lambda m, r: m.update({"target": 3588})),
    "target huge string": _edit(lambda m, r: m.update({"target": "x" * 100_000})),
    "tasks not a list": _edit(lambda m, r: m.update({"tasks": {"a": 1}})),
    "blobs not a list": _edit(lambda m, r: m.update({"blobs": {}})),
    "input spec missing dtype": _edit(lambda m, r: m["inputs"][0].pop("dtype")),
    "input spec negative dim": _edit(lambda m, r: m["inputs"][0].update({"shape": [1, -3, 8, 8]})),
    "input spec dtype object": _edit(lambda m, r: m["inputs"][0].update({"dtype": "object"})),
    "quant values count wrong": _edit(lambda m, r: m["outputs"][1]["quant"]["scale"].update({"values": [1.0]})),
    "quant zero point out of int range": _edit(
        lambda m, r: m["outputs"][1]["quant"]["zero_point"].update({"dtype": "int8", "values": [0, 1, 999, 0]})),
    "quant huge inline shape": _edit(
        lambda m, r: m["outputs"][1]["quant"]["scale"].update({"shape": [1 << 40, 1 << 40]})),
    "quant zero-size absurd shape": _edit(
        lambda m, r: m["outputs"][1]["quant"]["scale"].update({"shape": [0, 1 << 62, 1 << 62], "values": []})),
    "quant values strings": _edit(
        lambda m, r: m["outputs"][1]["quant"]["scale"].update({"values": ["a", "b", "c", "d"]})),
    # blob table
    "blob offset beyond EOF": _set_blob("weights", offset=1 << 30),
    "blob end beyond EOF": _set_blob("empty", offset=0, size=1 << 20, shape=[1 << 18]),
    "blob offset unaligned": _edit(lambda m, r: _blob(m, "weights").update(offset=_blob(m, "weights")["offset"] + 8)),
    "blob negative offset": _set_blob("weights", offset=-64),
    "blob negative size": _set_blob("weights", size=-189),
    "blob size is a string": _set_blob("weights", size="189"),
    "blob offset is a bool": _set_blob("weights", offset=True),
    "blob offset is a float": _set_blob("weights", offset=64.0),
    "overlapping blobs": _edit(_overlap),
    "blob listed twice": _edit(_dup_blob),
    "blob sha mismatch": _edit(_flip_data),
    "blob sha malformed": _set_blob("weights", sha256="XYZ"),
    "blob dtype not allowed": _set_blob("weights", dtype="object"),
    "blob dtype complex": _set_blob("weights", dtype="complex64"),
    "blob dtype byte-order string": _set_blob("weights", dtype=">f4"),
    "blob shape/size mismatch": _set_blob("weights", shape=[7, 3, 3, 4]),
    "blob huge declared shape": _set_blob("weights", shape=[1 << 62, 1 << 62, 1 << 62]),
    "blob huge shape times zero": _set_blob("empty", shape=[0, 1 << 62, 1 << 62, 1 << 62]),
    "blob negative dim": _set_blob("weights", shape=[-7, -3, 3, 3]),
    "blob rank 40": _set_blob("weights", shape=[1] * 40),
    "blob missing sha256": _edit(lambda m, r: _blob(m, "weights").pop("sha256")),
    "blob unknown key": _set_blob("weights", pickle="x"),
    "blob empty name": _set_blob("weights", name=""),
    # embedded graphs
    "graph dangling tensor": _edit(_graph_dangling),
    "graph missing blob": _edit(_graph_missing_blob),
    "graph blob without graph": _edit(_orphan_graph_blob),
    "graph key with slash": _edit(lambda m, r: m["graphs"].update({"a/b": m["graphs"].pop("tail")})),
    "graph unknown tag": _edit(lambda m, r: m["graphs"]["tail"]["nodes"][0]["attrs"].update({"clip": {"py": 1}})),
    "graph not an object": _edit(lambda m, r: m["graphs"].update({"tail": "graph"})),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_program_raises_program_format_error(case, base_bytes):
    bad = MALFORMED[case](base_bytes)
    with pytest.raises(ProgramFormatError) as e:
        load_program(bad)
    assert type(e.value) is ProgramFormatError
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    assert "malformed program (" not in msg, f"only the safety net caught it: {msg}"


def test_malformed_cases_cover_the_brief():
    assert len(MALFORMED) >= 25


def test_limits_and_paths(base_bytes, tmp_path):
    with pytest.raises(ProgramFormatError, match="over the 1000-byte limit"):
        load_program(base_bytes, max_bytes=1000)
    with pytest.raises(ProgramFormatError, match="manifest is .* over the 100-byte limit"):
        load_program(base_bytes, max_manifest_bytes=100)
    p = tmp_path / "x.npu"
    p.write_bytes(base_bytes)
    with pytest.raises(ProgramFormatError, match="over the 1000-byte limit"):
        load_program(p, max_bytes=1000)
    with pytest.raises(ProgramFormatError, match="cannot read"):
        load_program(tmp_path / "missing.npu")
    with pytest.raises(ProgramFormatError):
        load_program(tmp_path)  # a directory
    bad = tmp_path / "bad.npu"
    bad.write_bytes(base_bytes[:100])
    with pytest.raises(ProgramFormatError, match=str(Path(bad).name)):
        load_program(bad)


def test_every_single_byte_truncation_is_typed(base_bytes):
    """Every prefix of the header+manifest, and a spread of prefixes through the blobs."""
    _, man, _ = parse(base_bytes)
    end_of_manifest = align(64 + HDR.unpack(base_bytes[:64])[4])
    cuts = list(range(0, 80)) + list(range(80, end_of_manifest, 97)) + list(range(end_of_manifest,
                                                                                    len(base_bytes), 61))
    for n in cuts:
        with pytest.raises(ProgramFormatError):
            load_program(base_bytes[:n])


def test_every_byte_flip_is_detected(base_bytes):
    """Header fields, manifest, padding and blobs are all covered: no single corrupted byte goes unnoticed."""
    for i in range(len(base_bytes)):
        bad = bytearray(base_bytes)
        bad[i] ^= 0x10
        with pytest.raises(ProgramFormatError):
            load_program(bytes(bad))


_FUZZ_VALUES = [-1, 0, 63, 64, 2**70, "", "x", "float32", "object", None, [], {}, 1.5, True, {"tuple": 1},
                {"array": "a0"}, {"float": "inf"}, {"scalar": ["int8", 1]}, [1, -1], [2**62, 2**62], {"dict": []}]


def _json_paths(v: Any, p: tuple = ()) -> list[tuple]:
    out = [p]
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, x in items:
        out += _json_paths(x, p + (k,))
    return out


def test_structural_fuzz_of_the_manifest(base_bytes):
    """Random values (and deletions) anywhere in a checksum-correct manifest: load or ProgramFormatError."""
    import copy
    import random

    _, man, region = parse(base_bytes)
    paths = [p for p in _json_paths(man) if p]
    rng = random.Random(1234)
    rejected = 0
    for _ in range(400):
        m = copy.deepcopy(man)
        for _ in range(rng.randint(1, 3)):
            p = rng.choice(paths)
            obj = m
            try:
                for k in p[:-1]:
                    obj = obj[k]
                if isinstance(obj, dict) and rng.random() < 0.15:
                    del obj[p[-1]]
                else:
                    obj[p[-1]] = copy.deepcopy(rng.choice(_FUZZ_VALUES))
            except (KeyError, IndexError, TypeError):
                pass  # an earlier edit removed the path
        try:
            load_program(build(m, region))
        except ProgramFormatError as e:
            rejected += 1
            assert "malformed program (" not in str(e), str(e)
    assert rejected > 300
