"""Bad input yields only typed opennpu errors: no other exception, no crash, no hang, no memory blow-up.

The corpus (tests/malformed_corpus.py) is generated in code: truncated, bit-flipped and crafted ONNX
models, TFLite flatbuffers and PyTorch checkpoints (including pickles that try to run code). Each kind runs
in its own child process with RLIMIT_AS = 3 GiB and a 30 s alarm per case; a watchdog here kills a child
that stops reporting and restarts it after the offending case, so one crash cannot hide the others.
The CLI is checked separately: one ``error: ...`` line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from malformed_corpus import (
    CASE_TIMEOUT_S,
    MAX_RSS_GROWTH_MB,
    Case,
    Sources,
    SourceUnavailable,
    all_cases,
    case_ids,
)

REPO = Path(__file__).resolve().parents[1]
CORPUS_PY = Path(__file__).with_name("malformed_corpus.py")
WATCHDOG_S = CASE_TIMEOUT_S + 10  # the child's own alarm should fire first
CASE_IDS = case_ids()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"  # two runners share two cores
    return env


def _read_events(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash
            break
    return events


def run_batch(specs: list[dict], workdir: Path, kind: str) -> dict[str, dict]:
    """Run the specs in child processes; restart after a crashed or hung case."""
    outcomes: dict[str, dict] = {}
    remaining = list(specs)
    attempt = 0
    while remaining:
        attempt += 1
        manifest = workdir / f"{kind}-{attempt}.json"
        results = workdir / f"{kind}-{attempt}.jsonl"
        errlog = workdir / f"{kind}-{attempt}.stderr"
        manifest.write_text(json.dumps(remaining))
        with errlog.open("w") as err:
            proc = subprocess.Popen([sys.executable, str(CORPUS_PY), str(manifest), str(results)], cwd=workdir,
                                    env=_env(), stdout=subprocess.DEVNULL, stderr=err)
            current, since, killed = None, time.monotonic(), False
            while proc.poll() is None:
                time.sleep(0.05)
                events = _read_events(results)
                last = events[-1] if events else None
                started = last["id"] if last and last["event"] == "start" else None
                if started != current:
                    current, since = started, time.monotonic()
                if current is not None and time.monotonic() - since > WATCHDOG_S:
                    proc.kill()  # our own child, by handle
                    proc.wait()
                    killed = True
        events = _read_events(results)
        for ev in events:
            if ev["event"] == "end":
                outcomes[ev["id"]] = ev
        done = {ev["id"] for ev in events if ev["event"] == "end"}
        started = [ev["id"] for ev in events if ev["event"] == "start" and ev["id"] not in done]
        if not started and proc.returncode == 0:
            break
        tail = errlog.read_text()[-1500:]
        if started:
            bad = started[-1]
            outcomes[bad] = {"id": bad, "status": "timeout" if killed else "crash", "type": "",
                             "message": f"child exit code {proc.returncode}; stderr: {tail}"}
            idx = next(i for i, s in enumerate(remaining) if s["id"] == bad)
            remaining = remaining[idx + 1:]
        else:  # died outside any case (import error, crash at exit, ...)
            for s in remaining:
                outcomes.setdefault(s["id"], {"id": s["id"], "status": "crash", "type": "",
                                              "message": f"runner died outside a case (exit {proc.returncode}): "
                                                         f"{tail}"})
            break
        remaining = [s for s in remaining if s["id"] not in outcomes]
    return outcomes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    work = tmp_path_factory.mktemp("malformed")
    markers = work / "markers"
    markers.mkdir()
    sources = Sources()
    cases = {c.id: c for c in all_cases(markers)}
    outcomes: dict[str, dict] = {}
    batches: dict[str, list[dict]] = {}
    for case in cases.values():
        try:
            data = case.build(sources)
        except SourceUnavailable as e:
            outcomes[case.id] = {"id": case.id, "status": "skipped", "message": str(e)}
            continue
        path = work / "files" / f"{case.id}{case.suffix}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        batches.setdefault(case.kind, []).append({"id": case.id, "kind": case.kind, "path": str(path),
                                                   "via": case.via, "input_shapes": case.input_shapes})
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(run_batch, specs, work, kind) for kind, specs in batches.items()]
        for f in futures:
            outcomes.update(f.result())
    yield {"cases": cases, "outcomes": outcomes, "markers": markers, "seconds": time.monotonic() - t0}
    shutil.rmtree(work / "files", ignore_errors=True)  # truncated copies of the zoo models add up


def _explain(case: Case, out: dict) -> str:
    where = out.get("opennpu_frame") or out.get("raised_at") or ""
    return (f"{case.id}: {out['status']} {out.get('type', '')}: {out.get('message', '')!s:.400}"
            + (f"\n  raised at {out.get('raised_at')}\n  last opennpu frame {where}" if where else ""))


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_input_gives_typed_error(case_id, corpus):
    case: Case = corpus["cases"][case_id]
    out = corpus["outcomes"].get(case_id)
    assert out is not None, f"{case_id}: no outcome recorded"
    if out["status"] == "skipped":
        pytest.skip(f"source model unavailable: {out['message']}")
    if out["status"] in ("ok", "error"):
        assert out["rss_growth_mb"] < MAX_RSS_GROWTH_MB, \
            f"{case_id}: memory grew by {out['rss_growth_mb']} MB while loading ({out['status']})"
    if out["status"] == "ok":
        assert case.allow_success, f"{case_id}: loaded without error, expected {case.expect or 'an OpenNPUError'}"
        return
    assert out["status"] == "error", _explain(case, out)
    if case.expect is not None:
        assert set(case.expect) & set(out["mro"]), f"expected {'/'.join(case.expect)}; got " + _explain(case, out)
    assert out["lines"] <= 1, f"{case_id}: error message spans {out['lines']} lines: {out['message']!r}"


def test_harness_survives_a_crashing_case(tmp_path):
    specs = []
    for cid, action in (("first", b"ok"), ("boom", b"abort"), ("after", b"ok")):
        (tmp_path / cid).write_bytes(action)
        specs.append({"id": cid, "kind": "selftest", "path": str(tmp_path / cid), "via": "path",
                      "input_shapes": {}})
    out = run_batch(specs, tmp_path, "selftest")
    assert [out[c]["status"] for c in ("first", "boom", "after")] == ["ok", "crash", "ok"], out


def test_malicious_pickles_never_execute(corpus):
    ran = sorted(p.name for p in corpus["markers"].iterdir())
    assert not ran, f"pickled code ran while loading checkpoints: {ran}"


def test_corpus_is_large_and_fast(corpus):
    assert len(CASE_IDS) >= 40
    statuses = Counter(o["status"] for o in corpus["outcomes"].values())
    types = Counter(o.get("type") for o in corpus["outcomes"].values() if o["status"] == "error")
    print(f"\n{len(CASE_IDS)} cases in {corpus['seconds']:.1f} s: {dict(statuses)}; errors: {dict(types)}")
    assert corpus["seconds"] < 120


# ---- CLI ------------------------------------------------------------------------------------------------------

CLI_CASES = ["onnx-garbage-seed0", "onnx-empty-file", "onnx-cycle", "onnx-input-absurd-dims",
             "onnx-unknown-op", "tflite-trunc-50pct", "ckpt-pickle-os-system", "missing-file", "directory"]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("malformed_cli")
    sources = Sources()
    cases = {c.id: c for c in all_cases(work)}
    paths: dict[str, Path] = {"missing-file": work / "does-not-exist.onnx", "directory": work}
    skipped: dict[str, str] = {}
    for cid in CLI_CASES[:-2]:
        case = cases[cid]
        try:
            data = case.build(sources)
        except SourceUnavailable as e:
            skipped[cid] = str(e)
            continue
        paths[cid] = work / f"{cid}{case.suffix}"
        paths[cid].write_bytes(data)
    procs = {cid: subprocess.Popen([sys.executable, "-m", "opennpu", "inspect", str(p)], cwd=REPO, env=_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cid, p in paths.items()}
    runs: dict = {"skipped": skipped}
    lock = threading.Lock()
    for cid, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        with lock:
            runs[cid] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return runs


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_cli_reports_one_error_line(case_id, cli_runs):
    if case_id in cli_runs["skipped"]:
        pytest.skip(cli_runs["skipped"][case_id])
    run = cli_runs[case_id]
    lines = run.stderr.strip().splitlines()
    assert "Traceback" not in run.stderr + run.stdout, run.stderr[-2000:]
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-2000:]
