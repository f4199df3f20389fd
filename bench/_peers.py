"""Peer toolchains for the benchmarks, each in its OWN venv under the user cache, never imported here.

    from bench._peers import ensure_peer, run_timed
    peer = ensure_peer("ethos-u-vela")            # creates <cache>/peers/ethos-u-vela on first use
    if peer.ok: run_timed([peer.bin("vela"), "m.tflite"], log=...)
    else: print(f"{peer.name}: not installable here: {peer.reason}")

Where: ``$OPENNPU_CACHE/peers/<name>/`` (else ``~/.cache/opennpu/peers/<name>/``), a venv made with
``python -m venv`` and filled with pip from PyPI. A finished install leaves ``opennpu-peer.json`` (the spec it
was built from and the versions it got); a failed one leaves ``opennpu-peer-failed.json`` with the reason, so
later runs report it at once (``reinstall=True`` tries again).

Torch guard. rknn-toolkit2 2.5.0 declares ``torch>=1.10.1,<=2.4.0``: on this machine any torch but the local CPU
build 2.13.0 is a multi-GB CUDA download. So every pip call in a peer venv runs with a constraints file pinning
``torch==2.13.0`` and is preceded by ``pip install --dry-run --report``, which must not list torch at another
version, triton or any nvidia-* package; rknn-toolkit2 itself goes in with ``--no-deps`` and then its own
Requires-Dist (read from the installed metadata) minus torch. The venv's pip check then names the one pin left
unmet (torch 2.13.0 vs <=2.4.0); rknn-toolkit2 imports and builds with it (its ONNX path does not use torch).

Workers (``bench/peer_workers/*.py``) run inside a peer venv with only the standard library and the peer's own
packages; they exchange .npy and .json files with the bench, never pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

LOCAL_TORCH = "torch==2.13.0"  # the CPU wheel that lies on this machine's disk; any other torch is CUDA-sized
FORBIDDEN_PREFIXES = ("nvidia-", "triton")
WORKERS = Path(__file__).resolve().parent / "peer_workers"


@dataclass(frozen=True)
class Pip:
    """One ``pip install`` in the peer venv."""
    requirements: tuple[str, ...]
    no_deps: bool = False


@dataclass(frozen=True)
class RequiresOf:
    """Install the Requires-Dist of an installed distribution, less the named projects."""
    dist: str
    drop: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeerSpec:
    name: str
    version: str
    steps: tuple[Pip | RequiresOf, ...]
    check: tuple[str, ...]  # python arguments that must exit 0 once installed
    does: str  # what the peer computes in the benchmarks, for the tables
    notes: str = ""

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


PEERS: dict[str, PeerSpec] = {
    "rknn-toolkit2": PeerSpec(
        name="rknn-toolkit2", version="2.5.0",
        steps=(Pip((LOCAL_TORCH,)), Pip(("rknn-toolkit2==2.5.0",), no_deps=True),
               RequiresOf("rknn-toolkit2", drop=("torch",)),
               Pip(("setuptools<81",))),  # rknn_base imports pkg_resources, gone from setuptools 81
        check=("-c", "from rknn.api import RKNN"),
        does="convert ONNX + quantize (calibration) + build for rk3588 + export .rknn",
        notes="installed with --no-deps beside the local CPU torch 2.13.0 (it pins torch<=2.4.0, a CUDA build "
              "here); its other pins kept (numpy<=1.26.4, onnx<=1.18.0, protobuf<=4.25.4); setuptools<81"),
    "ethos-u-vela": PeerSpec(
        name="ethos-u-vela", version="5.2.0",
        steps=(Pip(("ethos-u-vela==5.2.0",)),),
        check=("-c", "from ethosu.vela.vela import main; raise SystemExit(main(['--version']))"),
        does="compile an already-quantized int8 TFLite for Ethos-U (no quantization)"),
}


@dataclass
class Peer:
    name: str
    venv: Path
    ok: bool
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def bin(self, tool: str) -> Path:
        return self.venv / "bin" / tool

    @property
    def spec(self) -> PeerSpec:
        return PEERS[self.name]


def peers_root() -> Path:
    env = os.environ.get("OPENNPU_CACHE")
    root = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opennpu"
    return root / "peers"


# ---- install -----------------------------------------------------------------------------------------------

class InstallError(RuntimeError):
    pass


def forbidden_installs(report: dict) -> list[str]:
    """Packages a ``pip install --dry-run --report`` would install that must never reach a peer venv here: torch
    other than the local CPU build, triton, nvidia-* (CUDA runtime wheels)."""
    bad = []
    local_name, local_version = LOCAL_TORCH.split("==")
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        name, version = str(meta.get("name", "")).lower(), str(meta.get("version", ""))
        if name.startswith(FORBIDDEN_PREFIXES) or (name == local_name and version.split("+")[0] != local_version):
            bad.append(f"{name}=={version}")
    return bad


def requirements_without(requires: list[str], drop: tuple[str, ...]) -> list[str]:
    """Requires-Dist entries less extras-only ones and the dropped projects (names compared PEP 503-normalized)."""
    def norm(s: str) -> str:
        return s.lower().replace("_", "-").replace(".", "-")

    out = []
    for req in requires:
        spec, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        name = spec.strip()
        for sep in "<>=!~[ (":
            name = name.split(sep)[0]
        if norm(name) not in {norm(d) for d in drop}:
            out.append(spec.strip())
    return out


def _run(cmd: list[str], log: Path, timeout: float = 1800) -> str:
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                              env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        f.write(proc.stdout)
    if proc.returncode != 0:
        errors = [ln.strip() for ln in proc.stdout.splitlines() if ln.startswith("ERROR")]
        first = errors or proc.stdout.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise InstallError(f"{first[0]} (log: {log})")
    return proc.stdout


def _pip_install(py: Path, reqs: list[str], no_deps: bool, constraints: Path, log: Path) -> None:
    args = [str(py), "-m", "pip", "install", "-c", str(constraints), *(["--no-deps"] if no_deps else []), *reqs]
    report = log.parent / f"{log.stem}.dry-run.json"
    _run(args[:4] + ["--dry-run", "--quiet", "--report", str(report)] + args[4:], log)
    bad = forbidden_installs(json.loads(report.read_text()))
    if bad:
        raise InstallError(f"pip would install {', '.join(bad)} (a CUDA-sized torch stack); refused")
    _run(args, log)


def _installed_versions(py: Path, log: Path) -> dict[str, str]:
    out = _run([str(py), "-m", "pip", "list", "--format", "json"], log)
    return {p["name"].lower(): p["version"] for p in json.loads(out[out.index("["):])}


def ensure_peer(name: str, reinstall: bool = False, status: Callable[[str], None] = lambda s: None) -> Peer:
    """The peer's venv, created and filled on first use; ``Peer.ok`` False with the reason when it cannot be."""
    spec = PEERS[name]
    venv = peers_root() / name
    done, failed = venv / "opennpu-peer.json", venv / "opennpu-peer-failed.json"
    if not reinstall:
        for marker, ok in ((done, True), (failed, False)):
            if marker.exists():
                info = json.loads(marker.read_text())
                if info.get("fingerprint") == spec.fingerprint():
                    return Peer(name, venv, ok, info.get("reason", ""), info.get("versions", {}))
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{name}.install.log"
    log.write_text(f"installing {name} {spec.version} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
    py = venv / "bin" / "python"
    try:
        status(f"{name}: python -m venv {venv}")
        _run([sys.executable, "-m", "venv", str(venv)], log)
        constraints = venv / "opennpu-constraints.txt"
        constraints.write_text(LOCAL_TORCH + "\n")
        for i, step in enumerate(spec.steps, 1):
            if isinstance(step, RequiresOf):
                out = _run([str(py), "-c", "import importlib.metadata as m, json; "
                            f"print(json.dumps(m.requires({step.dist!r}) or []))"], log)
                reqs, no_deps = requirements_without(json.loads(out.strip().splitlines()[-1]), step.drop), False
            else:
                reqs, no_deps = list(step.requirements), step.no_deps
            status(f"{name}: step {i}/{len(spec.steps)}: pip install {' '.join(reqs)}")
            _pip_install(py, reqs, no_deps, constraints, log)
        status(f"{name}: checking it imports")
        _run([str(py), *spec.check], log)
        versions = _installed_versions(py, log)
    except (InstallError, OSError, subprocess.TimeoutExpired) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        venv.mkdir(parents=True, exist_ok=True)
        failed.write_text(json.dumps({"fingerprint": spec.fingerprint(), "reason": reason}))
        return Peer(name, venv, False, reason)
    done.write_text(json.dumps({"fingerprint": spec.fingerprint(), "spec": asdict(spec), "versions": versions},
                               indent=1))
    return Peer(name, venv, True, "", versions)


# ---- timing ------------------------------------------------------------------------------------------------

@dataclass
class Run:
    """One whole process: wall seconds, CPU seconds (user + sys of it and its reaped children), exit code."""
    wall_s: float
    cpu_s: float
    returncode: int


def run_timed(cmd: list[str | Path], log: Path, cwd: Path | None = None, timeout: float = 900,
              env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` as a whole process, its output appended to ``log``; wall time from fork to reap, CPU time from
    the kernel's accounting of that child (``wait4``), so other processes on a shared machine do not count."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})})
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(wall, usage.ru_utime + usage.ru_stime, proc.returncode)


def worker(name: str) -> Path:
    return WORKERS / f"{name}.py"
