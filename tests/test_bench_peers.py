"""bench/_peers.py: the guards that keep a CUDA-sized torch out of peer venvs, the Requires-Dist filter, the
install-state markers and the whole-process runner. Nothing here installs anything or reaches a registry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _peers  # noqa: E402


def _report(*pkgs: tuple[str, str]) -> dict:
    return {"install": [{"metadata": {"name": n, "version": v}} for n, v in pkgs]}


def test_forbidden_installs_flags_cuda_stack_and_other_torch():
    rep = _report(("numpy", "1.26.4"), ("torch", "2.4.0"), ("nvidia-cudnn-cu12", "9.1.0.70"), ("triton", "3.0.0"))
    assert _peers.forbidden_installs(rep) == ["torch==2.4.0", "nvidia-cudnn-cu12==9.1.0.70", "triton==3.0.0"]


def test_forbidden_installs_accepts_local_torch_and_plain_packages():
    rep = _report(("torch", "2.13.0+cpu"), ("onnx", "1.18.0"), ("opencv-python", "4.11.0.86"))
    assert _peers.forbidden_installs(rep) == []
    assert _peers.forbidden_installs({}) == []


def test_requirements_without_drops_named_projects_and_extras():
    reqs = ["protobuf <=4.25.4,>=4.21.6", "torch <=2.4.0,>=1.10.1", "ruamel.yaml >=0.17.21",
            "Torch_Vision>=0.1; extra == 'vision'", "numpy <=1.26.4", "onnx<=1.18.0 ; python_version >= '3.8'"]
    out = _peers.requirements_without(reqs, ("torch",))
    assert out == ["protobuf <=4.25.4,>=4.21.6", "ruamel.yaml >=0.17.21", "numpy <=1.26.4", "onnx<=1.18.0"]
    assert _peers.requirements_without(["ruamel_yaml>=1"], ("ruamel.yaml",)) == []


def test_rknn_spec_never_lets_pip_resolve_torch():
    spec = _peers.PEERS["rknn-toolkit2"]
    pips = [s for s in spec.steps if isinstance(s, _peers.Pip)]
    assert pips[0].requirements == (_peers.LOCAL_TORCH,)
    rknn = next(s for s in pips if any(r.startswith("rknn-toolkit2") for r in s.requirements))
    assert rknn.no_deps
    assert any(isinstance(s, _peers.RequiresOf) and "torch" in s.drop for s in spec.steps)


def test_ensure_peer_reports_a_recorded_failure_without_reinstalling(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENNPU_CACHE", str(tmp_path))
    venv = tmp_path / "peers" / "ethos-u-vela"
    venv.mkdir(parents=True)
    spec = _peers.PEERS["ethos-u-vela"]
    (venv / "opennpu-peer-failed.json").write_text(json.dumps({"fingerprint": spec.fingerprint(),
                                                               "reason": "no wheel for this Python"}))
    monkeypatch.setattr(_peers, "_run", lambda *a, **k: pytest.fail("must not run pip"))
    peer = _peers.ensure_peer("ethos-u-vela")
    assert not peer.ok and peer.reason == "no wheel for this Python"
    assert peer.venv == venv


def test_ensure_peer_turns_an_install_error_into_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENNPU_CACHE", str(tmp_path))

    def failing_run(cmd, log, timeout=1800):
        raise _peers.InstallError("ERROR: No matching distribution found for ethos-u-vela==5.2.0")

    monkeypatch.setattr(_peers, "_run", failing_run)
    peer = _peers.ensure_peer("ethos-u-vela")
    assert not peer.ok and "No matching distribution" in peer.reason
    marker = json.loads((tmp_path / "peers" / "ethos-u-vela" / "opennpu-peer-failed.json").read_text())
    assert marker["reason"] == peer.reason


def test_run_timed_reports_exit_code_and_keeps_output(tmp_path):
    log = tmp_path / "log.txt"
    run = _peers.run_timed([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], log)
    assert run.returncode == 3
    assert "hello" in log.read_text()
    assert run.wall_s >= 0 and run.cpu_s >= 0


def test_install_error_names_pips_error_line(tmp_path):
    log = tmp_path / "install.log"
    script = "print('Collecting x'); print('ERROR: No matching distribution found for x==9'); raise SystemExit(1)"
    with pytest.raises(_peers.InstallError, match=r"^ERROR: No matching distribution found for x==9 \(log: "):
        _peers._run([sys.executable, "-c", script], log)
    with pytest.raises(_peers.InstallError, match=r"^last words \(log: "):
        _peers._run([sys.executable, "-c", "print('last words'); raise SystemExit(2)"], log)
    assert "Collecting x" in log.read_text()


def _timed(wall: float, cpu: float) -> dict:
    return {"wall_median_s": wall, "wall_min_s": wall, "cpu_median_s": cpu}


def test_compile_speed_ratios_are_ours_over_peer_and_missing_peers_are_named():
    from bench import compile_speed as cs

    stages = {"quantize": _timed(6.0, 9.0), "backend": _timed(0.5, 0.5), "total": _timed(8.0, 11.0)}
    res = {"whole_process": {"ours_onnx": _timed(30.0, 30.0), "rknn": _timed(7.5, 5.0),
                             "ours_tflite": _timed(1.0, 1.0)},
           "ours_in_process": {"stages": stages, "runs": "warm", "quantize_nearest": _timed(2.0, 2.5),
                               "tflite_compile": _timed(0.3, 0.3)},
           "peers": {"rknn-toolkit2": {"status": "ok", "in_process": _timed(2.5, 2.0)},
                     "ethos-u-vela": {"status": "not installable"}}}
    rows = {r["what"]: r for r in cs.comparisons(res)}
    assert rows["float ONNX -> program, whole process"]["ratio"] == {"wall": 4.0, "cpu": 6.0}
    assert rows["  quantize + backend only"]["ours_time"]["wall_median_s"] == 6.5
    assert rows["  quantize + backend only"]["ratio"] == {"wall": 6.5 / 2.5, "cpu": 9.5 / 2.0}
    assert rows["  quantize (round-to-nearest weights) + backend"]["ratio"]["wall"] == 2.5 / 2.5
    vela = rows["int8 TFLite -> program, whole process"]
    assert vela["ratio"] is None and vela["peer_time"] == {"error": "not installable"}
    assert cs._fmt(vela["peer_time"]) == "not installable"
