"""Compile time of mobilenetv2: opennpu vs rknn-toolkit2's build and ethos-u-vela, side by side.

    python bench/compile_speed.py                      # 1 warm-up round + 3 timed rounds
    python bench/compile_speed.py --quick --json out.json

What is compared (same model, same calibration data for everyone: ``--n-calib`` views of the real photos from
``opennpu.data.augment.imagenet_calibration_set``, NCHW float32 preprocessed for the zoo's mobilenetv2, written
as .npy files and a dataset.txt):

1. float ONNX -> deployable RK3588 program, quantization included:
   - opennpu: ``opennpu compile mobilenetv2 --target rk3588 --calibration <the .npy files>`` (load, quantize with
     GPTQ weight rounding, partition + lower + codegen, write the .npu);
   - rknn-toolkit2 (Rockchip's converter, in its own venv): ``RKNN.config(target_platform="rk3588")``,
     ``load_onnx`` (the zoo's ONNX file), ``build(do_quantization=True, dataset=dataset.txt)``, ``export_rknn``.
2. int8 TFLite -> compiled program, no quantization: both tools read the same file, our quantized mobilenetv2
   exported by ``opennpu.export.export_tflite(qgraph, nhwc_io=True)`` (int8 everywhere but the float
   QUANTIZE / DEQUANTIZE at the boundaries):
   - opennpu: ``opennpu compile m_int8.tflite --target rk3588`` (partition + lower + codegen for the RK3588);
   - ethos-u-vela (Arm's compiler for Ethos-U, in its own venv): ``vela m_int8.tflite --accelerator-config
     ethos-u55-256``. Different hardware: the row compares two compilers' speed on the same int8 graph, not
     their output.

Each is timed two ways. Whole process: the command as a user runs it, Python start-up and imports included,
the rounds interleaved (A B C D, A B C D, ...) so the machine's drift hits every tool alike; wall seconds and
CPU seconds (user + sys of that process tree, from the kernel's accounting, so other load on a shared machine
does not count). In process: after imports, and after a warm-up build in the same process (our
``compile_lowered`` timings; the peers' workers in bench/peer_workers time their own API calls the same way).
Ratios are ours / peer: above 1 means opennpu is slower. The load average is printed with the table: quote
medians and ratios from a quiet machine.

Peers live in venvs under the user cache (bench/_peers.py); a peer that cannot be installed is reported as
"<name>: not installable here: <reason>" and its rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._peers import PEERS, Peer, ensure_peer, run_timed, worker  # noqa: E402

SCHEME = {"mobilenetv2": "torchvision", "efficientnet-lite0": "tf-lite"}


@dataclass
class Samples:
    """Repeated measurements of one thing: wall and CPU seconds per run."""
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    failed: str = ""

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    @property
    def ok(self) -> bool:
        return bool(self.wall) and not self.failed

    def median(self, cpu: bool = False) -> float:
        return statistics.median(self.cpu if cpu else self.wall)

    def minimum(self, cpu: bool = False) -> float:
        return min(self.cpu if cpu else self.wall)

    def as_dict(self) -> dict:
        if not self.ok:
            return {"error": self.failed or "no runs"}
        return {"wall_s": self.wall, "cpu_s": self.cpu, "wall_median_s": self.median(), "wall_min_s": self.minimum(),
                "cpu_median_s": self.median(True), "cpu_min_s": self.minimum(True)}


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


# ---- inputs ------------------------------------------------------------------------------------------------

@dataclass
class Inputs:
    workdir: Path
    onnx: Path
    calib_dir: Path  # only the calibration .npy files (the opennpu CLI reads the whole folder)
    dataset_txt: Path  # rknn-toolkit2's list of the same files
    feeds: list[dict[str, np.ndarray]]
    input_shape: tuple[int, ...]


def prepare_inputs(model: str, n_calib: int, workdir: Path) -> Inputs:
    from opennpu.data.augment import imagenet_calibration_set
    from opennpu.zoo import fetch, get

    shape = tuple(get(model).input_shapes["input"])
    calib = imagenet_calibration_set(n_calib, shape[2], SCHEME.get(model, "torchvision"))
    calib_dir = workdir / "calib"
    calib_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, x in enumerate(calib):
        p = calib_dir / f"calib{i:03d}.npy"
        np.save(p, np.ascontiguousarray(x, dtype=np.float32))
        paths.append(p)
    dataset = workdir / "dataset.txt"
    dataset.write_text("".join(f"{p}\n" for p in paths))
    return Inputs(workdir, Path(fetch(model)), calib_dir, dataset, [{"input": x} for x in calib], shape)


# ---- ours, in process ------------------------------------------------------------------------------------

def ours_in_process(model: str, inp: Inputs, warm: int, tick: Callable[[str], None]) -> tuple[dict, Path]:
    """Per-stage in-process timings of opennpu (median over ``warm`` runs after a cold one, or the cold one when
    warm == 0), plus the int8 TFLite export of the quantized graph the peers' second row compiles."""
    import opennpu
    from opennpu.export import export_tflite
    from opennpu.runtime.program import save_program
    from opennpu.targets.rk3588.compiler import compile_lowered

    stages: dict[str, Samples] = {k: Samples() for k in ("load", "quantize", "backend", "save", "total")}
    out: dict = {}
    compiled = None
    for i in range(1 + warm):
        tick(f"opennpu in process: compile {i + 1}/{1 + warm}" + (" (cold)" if i == 0 and warm else ""))
        with Stopwatch() as t_load:
            g = opennpu.load_model(model, {"input": inp.input_shape})
        with Stopwatch() as t_comp:
            compiled = compile_lowered(g, calibration=inp.feeds)
        with Stopwatch() as t_save:
            save_program(compiled.program, inp.workdir / "ours-inproc.npu")
        if i == 0:
            out["cold"] = {"load_s": t_load.wall, "compile_s": t_comp.wall, "timings": dict(compiled.timings)}
            if warm:
                continue
        tm = compiled.timings
        cpu_share = t_comp.cpu / max(tm["total"], 1e-9)  # split compile CPU time by the stages' wall shares
        backend = tm["lower"] + tm["codegen"] + tm["program"]
        stages["load"].add(t_load.wall, t_load.cpu)
        stages["quantize"].add(tm["quantize"], tm["quantize"] * cpu_share)
        stages["backend"].add(backend, backend * cpu_share)
        stages["save"].add(t_save.wall, t_save.cpu)
        stages["total"].add(t_load.wall + t_comp.wall + t_save.wall, t_load.cpu + t_comp.cpu + t_save.cpu)
    out["stages"] = {k: v.as_dict() for k, v in stages.items()}
    out["runs"] = "warm" if warm else "cold"

    # The same quantization with round-to-nearest weights (no GPTQ): the cheapest setting, like rknn's default
    # quantized_algorithm='normal' as opposed to its 'mmse' / 'kl_divergence' searches.
    rtn = Samples()
    for i in range(1 + warm):
        tick(f"opennpu in process: quantize with round-to-nearest weights {i + 1}/{1 + warm}")
        g = opennpu.load_model(model, {"input": inp.input_shape})
        with Stopwatch() as t_rtn:
            opennpu.quantize(g, inp.feeds, dtype="int8", method="minmax", progress=False,
                             weight_rounding="nearest", min_channel_scale_ratio=2.0 ** -12)
        if i > 0 or not warm:
            rtn.add(t_rtn.wall, t_rtn.cpu)
    out["quantize_nearest"] = rtn.as_dict()

    tick("opennpu: export the quantized graph as int8 TFLite")
    tflite = inp.workdir / f"{model}_int8.tflite"
    with Stopwatch() as t_exp:
        tflite.write_bytes(export_tflite(compiled.qgraph, nhwc_io=True))
    out["export_tflite_s"] = t_exp.wall

    # int8 TFLite -> program, in process (the vela row's counterpart): load + compile + save
    tflite_runs = Samples()
    for i in range(1 + warm):
        tick(f"opennpu in process: compile the int8 TFLite {i + 1}/{1 + warm}")
        with Stopwatch() as t:
            ct = compile_lowered(opennpu.load_model(tflite))
            save_program(ct.program, inp.workdir / "ours-tflite-inproc.npu")
        if i > 0 or not warm:
            tflite_runs.add(t.wall, t.cpu)
    out["tflite_compile"] = tflite_runs.as_dict()
    return out, tflite


# ---- whole processes -------------------------------------------------------------------------------------

@dataclass
class Command:
    key: str
    label: str
    argv: list
    env: dict[str, str] = field(default_factory=dict)
    result_json: Callable[[int], Path] | None = None  # per-run result file the command writes (peer workers)
    samples: Samples = field(default_factory=Samples)
    results: list[dict] = field(default_factory=list)


def whole_process_commands(model: str, inp: Inputs, tflite: Path, peers: dict[str, Peer], accel: str
                           ) -> list[Command]:
    wd = inp.workdir
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmds = [Command("ours_onnx", f"opennpu compile {model} --calibration calib/",
                    [sys.executable, "-m", "opennpu", "compile", model, "--target", "rk3588", "-o",
                     wd / "ours.npu", "--calibration", inp.calib_dir], env)]
    rk = peers.get("rknn-toolkit2")
    if rk is not None and rk.ok:
        job = wd / "rknn-job.json"
        job.write_text(json.dumps(rknn_job(inp, export=wd / f"{model}.rknn", repeat=1)))
        cmds.append(Command("rknn", "rknn-toolkit2 load_onnx + build(quantize) + export_rknn",
                            [rk.python, worker("rknn_worker"), job, "{result}"],
                            result_json=lambda i: wd / f"rknn-result-{i}.json"))
    cmds.append(Command("ours_tflite", f"opennpu compile {tflite.name}",
                        [sys.executable, "-m", "opennpu", "compile", tflite, "--target", "rk3588", "-o",
                         wd / "ours-tflite.npu"], env))
    vela = peers.get("ethos-u-vela")
    if vela is not None and vela.ok:
        cmds.append(Command("vela", f"vela {tflite.name} --accelerator-config {accel}",
                            [vela.bin("vela"), tflite, "--accelerator-config", accel, "--output-dir", wd / "vela"]))
    return cmds


def rknn_job(inp: Inputs, export: Path | None, repeat: int, eval_npy: Path | None = None,
             outputs: Path | None = None) -> dict:
    return {"onnx": str(inp.onnx), "inputs": ["input"], "input_size_list": [list(inp.input_shape)],
            "dataset": str(inp.dataset_txt), "target": "rk3588", "export": str(export) if export else None,
            "repeat": repeat, "eval": str(eval_npy) if eval_npy else None,
            "outputs": str(outputs) if outputs else None}


def run_rounds(cmds: list[Command], rounds: int, warmup: int, log: Path, tick: Callable[[str], None]) -> None:
    for r in range(warmup + rounds):
        for c in cmds:
            if c.samples.failed:
                continue
            counted = r >= warmup
            tick(f"whole process, {'round ' + str(r - warmup + 1) if counted else 'warm-up'}: {c.label}")
            res = c.result_json(r) if c.result_json else None
            argv = [str(res) if a == "{result}" else a for a in c.argv]
            run = run_timed(argv, log, cwd=log.parent, env=c.env)
            if run.returncode != 0:
                c.samples.failed = f"exit code {run.returncode} (see {log})"
                continue
            if counted:
                c.samples.add(run.wall_s, run.cpu_s)
                if res is not None and res.exists():
                    c.results.append(json.loads(res.read_text()))


# ---- peers, in process -----------------------------------------------------------------------------------

def rknn_in_process(peer: Peer, inp: Inputs, warm: int, log: Path) -> dict:
    """load_onnx + build + export_rknn timed inside the worker, after the import and (warm > 0) a cold build."""
    job, res = inp.workdir / "rknn-inproc-job.json", inp.workdir / "rknn-inproc-result.json"
    job.write_text(json.dumps(rknn_job(inp, export=inp.workdir / "rknn-inproc.rknn", repeat=1 + warm)))
    run = run_timed([peer.python, worker("rknn_worker"), job, res], log)
    if run.returncode != 0:
        return {"error": f"exit code {run.returncode} (see {log})"}
    r = json.loads(res.read_text())
    builds = r["builds"][1:] if warm else r["builds"]
    s = Samples()
    for b in builds:
        s.add(sum(p["wall_s"] for p in b.values()), sum(p["cpu_s"] for p in b.values()))
    phases = {k: statistics.median(b[k]["wall_s"] for b in builds) for k in builds[0]}
    return {"version": r.get("version"), "import": r["import"], "phases_median_wall_s": phases,
            "runs": "warm" if warm else "cold", **s.as_dict()}


def vela_in_process(peer: Peer, tflite: Path, accel: str, warm: int, workdir: Path, log: Path) -> dict:
    res = workdir / "vela-inproc-result.json"
    run = run_timed([peer.python, worker("vela_worker"), res, str(1 + warm), "--", tflite,
                     "--accelerator-config", accel, "--output-dir", workdir / "vela-inproc"], log)
    if run.returncode != 0:
        return {"error": f"exit code {run.returncode} (see {log})"}
    r = json.loads(res.read_text())
    s = Samples()
    for x in (r["runs"][1:] if warm else r["runs"]):
        s.add(x["wall_s"], x["cpu_s"])
    return {"version": r.get("version"), "import": r["import"], "runs": "warm" if warm else "cold", **s.as_dict()}


# ---- table -----------------------------------------------------------------------------------------------

def _fmt(d: dict | None) -> str:
    if not d or "error" in d:
        return (d or {}).get("error", "-")
    return f"{d['wall_median_s']:.2f} s (min {d['wall_min_s']:.2f})\ncpu {d['cpu_median_s']:.2f} s"


def _ratio(a: dict | None, b: dict | None) -> dict | None:
    if not a or not b or "error" in a or "error" in b:
        return None
    return {"wall": a["wall_median_s"] / b["wall_median_s"], "cpu": a["cpu_median_s"] / b["cpu_median_s"]}


def comparisons(res: dict) -> list[dict]:
    wp, ours, peers = res["whole_process"], res["ours_in_process"], res["peers"]
    rk, ve = peers.get("rknn-toolkit2", {}), peers.get("ethos-u-vela", {})
    st = ours["stages"]
    def plus(a: dict, b: dict) -> dict:  # medians and minima of two stages measured in the same runs, summed
        return {k: a[k] + b[k] for k in ("wall_median_s", "wall_min_s", "cpu_median_s")}

    qb, qb_rtn = plus(st["quantize"], st["backend"]), plus(ours["quantize_nearest"], st["backend"])
    rows = [
        ("float ONNX -> program, whole process", "opennpu compile (load+quantize+backend+save)", wp.get("ours_onnx"),
         "rknn-toolkit2", "import+load_onnx+build(quantize)+export", wp.get("rknn")),
        (f"float ONNX -> program, in process ({ours['runs']})", "load+quantize+backend+save", st["total"],
         "rknn-toolkit2", "load_onnx+build(quantize)+export", rk.get("in_process")),
        ("  quantize + backend only", "compile_lowered", qb, "rknn-toolkit2", "load_onnx+build(quantize)+export",
         rk.get("in_process")),
        ("  quantize (round-to-nearest weights) + backend", "quantize(weight_rounding='nearest') + backend",
         qb_rtn, "rknn-toolkit2", "load_onnx+build(quantize)+export", rk.get("in_process")),
        ("  quantize only (calibration + GPTQ)", "opennpu.quantize", st["quantize"], "", "", None),
        ("  backend only (partition+lower+codegen)", "compile_lowered - quantize", st["backend"], "", "", None),
        ("int8 TFLite -> program, whole process", "opennpu compile m_int8.tflite", wp.get("ours_tflite"),
         "ethos-u-vela", "vela (Ethos-U55-256)", wp.get("vela")),
        (f"int8 TFLite -> program, in process ({ours['runs']})", "load+compile+save", ours["tflite_compile"],
         "ethos-u-vela", "vela main()", ve.get("in_process")),
    ]
    out = []
    for what, ours_does, o, peer, peer_does, p in rows:
        if peer and p is None:
            p = {"error": "not run" if peer not in peers else f"{peers[peer]['status']}"}
        out.append({"what": what, "ours": ours_does, "ours_time": o, "peer": peer, "peer_does": peer_does,
                    "peer_time": p, "ratio": _ratio(o, p)})
    return out


def print_table(res: dict, console) -> None:
    from rich.table import Table

    t = Table(title=f"compile time, {res['model']}, {res['n_calibration']} calibration images "
                    f"(median of {res['rounds']}; ours/peer > 1: opennpu slower)")
    for col in ("what", "opennpu", "", "peer", "", "ours/peer"):
        t.add_column(col, overflow="fold")
    for c in res["comparisons"]:
        r = c["ratio"]
        t.add_row(c["what"], c["ours"], _fmt(c["ours_time"]), c["peer"] and f"{c['peer']}\n{c['peer_does']}",
                  _fmt(c["peer_time"]) if c["peer"] else "",
                  f"{r['wall']:.2f}x wall\n{r['cpu']:.2f}x cpu" if r else "")
    console.print(t)
    console.print(f"cold first compile in process (opennpu): {res['ours_in_process']['cold']['compile_s']:.2f} s")
    for name, p in res["peers"].items():
        if p["status"] != "ok":
            console.print(f"{name}: not installable here: {p['reason']}")
        else:
            console.print(f"{name} {p['version']}: {PEERS[name].does}")
    console.print(f"load average {res['loadavg_before'][0]:.2f} before, {res['loadavg_after'][0]:.2f} after "
                  f"({os.cpu_count()} cpus)")


# ---- main ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenetv2", choices=sorted(SCHEME))
    ap.add_argument("--n-calib", type=int, default=8, help="calibration images, the same for every tool")
    ap.add_argument("--rounds", type=int, default=3, help="timed whole-process rounds (and warm in-process runs)")
    ap.add_argument("--quick", action="store_true", help="1 round, no warm-up: a smoke run, numbers are noisy")
    ap.add_argument("--peers", default="rknn-toolkit2,ethos-u-vela", help="comma-separated, '' for none")
    ap.add_argument("--reinstall-peers", action="store_true", help="rebuild the peer venvs")
    ap.add_argument("--accelerator-config", default="ethos-u55-256", help="vela's --accelerator-config")
    ap.add_argument("--workdir", default="", help="keep inputs, outputs and logs here (default: a temp dir)")
    ap.add_argument("--json", default="", help="write every measurement here")
    args = ap.parse_args(argv)
    rounds, warm = (1, 0) if args.quick else (args.rounds, 1)
    warm_runs = 0 if args.quick else rounds  # in-process runs after the cold one (quick: the cold one only)
    peer_names = [p for p in args.peers.split(",") if p]
    for p in peer_names:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r} (known: {', '.join(PEERS)})")

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="opennpu-compile-speed-")
    workdir = Path(args.workdir or tmp.name).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "commands.log"
    n_steps = 2 + len(peer_names) + (1 + warm_runs) * 3 + 1 + (warm + rounds) * (2 + len(peer_names)) + len(peer_names)
    res: dict = {"model": args.model, "n_calibration": args.n_calib, "rounds": rounds, "warmup": warm,
                 "in_process_warm_runs": warm_runs,
                 "quick": args.quick, "loadavg_before": list(os.getloadavg()), "cpus": os.cpu_count(),
                 "python": platform.python_version(), "machine": platform.machine(), "peers": {}}
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("preparing", total=n_steps)

            def tick(msg: str) -> None:
                progress.update(task, description=msg, advance=1)

            tick(f"calibration set: {args.n_calib} images, fetching {args.model}")
            inp = prepare_inputs(args.model, args.n_calib, workdir)
            res["ours_in_process"], tflite = ours_in_process(args.model, inp, warm_runs, tick)

            peers: dict[str, Peer] = {}
            for name in peer_names:
                tick(f"{name}: venv under the user cache (first use installs it)")
                peers[name] = ensure_peer(name, reinstall=args.reinstall_peers,
                                          status=lambda s: progress.update(task, description=s))
                p = peers[name]
                res["peers"][name] = {"status": "ok" if p.ok else "not installable", "reason": p.reason,
                                      "venv": str(p.venv), "version": p.versions.get(name, ""),
                                      "does": PEERS[name].does, "notes": PEERS[name].notes}
                if not p.ok:
                    progress.console.print(f"{name}: not installable here: {p.reason}")

            cmds = whole_process_commands(args.model, inp, tflite, peers, args.accelerator_config)
            run_rounds(cmds, rounds, warm, log, tick)
            res["whole_process"] = {c.key: c.samples.as_dict() for c in cmds}
            res["commands"] = {c.key: " ".join(str(a) for a in c.argv) for c in cmds}
            rk_runs = next((c.results for c in cmds if c.key == "rknn"), [])
            if rk_runs:
                res["peers"]["rknn-toolkit2"]["whole_process_phases"] = rk_runs
            rk = peers.get("rknn-toolkit2")
            if rk is not None and rk.ok:
                tick("rknn-toolkit2 in process")
                res["peers"]["rknn-toolkit2"]["in_process"] = rknn_in_process(rk, inp, warm_runs, log)
            if peers.get("ethos-u-vela") and peers["ethos-u-vela"].ok:
                tick("ethos-u-vela in process")
                res["peers"]["ethos-u-vela"]["in_process"] = vela_in_process(
                    peers["ethos-u-vela"], tflite, args.accelerator_config, warm_runs, workdir, log)
            progress.update(task, description="done", completed=n_steps)
        res["loadavg_after"] = list(os.getloadavg())
        res["comparisons"] = comparisons(res)
        print_table(res, console)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1, default=str))
            console.print(f"wrote {args.json}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp.name, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
