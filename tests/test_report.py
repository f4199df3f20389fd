"""opennpu report: schema of the JSON contract for every zoo model, consistency checks, HTML screenshot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from opennpu import zoo
from opennpu.report import build_report, report_from_graph, validate
from opennpu.report.html import write_html


def _consistent(rep: dict) -> None:
    assert validate(rep) == [], validate(rep)
    ops, p, c = rep["ops"], rep["perf"], rep["coverage"]
    assert c["npu_ops"] + c["cpu_ops"] == len(ops)
    assert all(o["placement"] in ("npu", "cpu") for o in ops)
    assert all(o["reason"] for o in ops if o["placement"] == "cpu"), "a CPU op without its reason"
    npu = sum(o["latency_us"] for o in ops if o["placement"] == "npu") / 1000
    cpu = sum(o["latency_us"] for o in ops if o["placement"] == "cpu") / 1000
    # totals = per-op sums + the boundary conversions / driver submits reported separately
    assert p["npu_ms"] == pytest.approx(npu + p.get("driver_ms", 0.0), rel=1e-6, abs=1e-9)
    assert p["cpu_ms"] == pytest.approx(cpu + p.get("conversions_ms", 0.0), rel=1e-6, abs=1e-9)
    assert p["latency_ms"] == pytest.approx(p["npu_ms"] + p["cpu_ms"], rel=1e-9)
    assert 0.0 <= c["npu_mac_fraction"] <= 1.0
    json.loads(json.dumps(rep))  # serializable


def test_validator_catches_problems():
    rep = {"model": "m", "target": "rk3588", "dtype": "int8", "ops": [{"name": 1}]}
    probs = validate(rep)
    assert any("coverage: missing" in p for p in probs) and any("ops[0].name" in p for p in probs)


@pytest.mark.parametrize("name", [e.name for e in zoo.entries()])
def test_graph_level_report_every_zoo_model(name):
    from opennpu.frontends import load_model

    rep = report_from_graph(load_model(name), name)
    _consistent(rep)
    assert any("graph-level" in n for n in rep["notes"])
    assert len(rep["perf_variants"]) == 8


@pytest.fixture(scope="module")
def mnist_report():
    return build_report("mnist-cnn")


def test_compiled_report_mnist(mnist_report):
    rep = mnist_report
    _consistent(rep)
    assert rep["source"] == "compiled" and rep["memory"]["fits"]
    assert rep["accuracy"]["cosine"] > 0.99 and rep["accuracy"]["top1_agreement"] is not None
    assert any(o["cosine"] is not None for o in rep["ops"])
    m = rep["memory"]
    assert m["peak_bytes"] >= m["weights_bytes"] + m["activations_bytes"] + m["regcmd_bytes"]
    assert m["cbuf_peak_task_bytes"] <= m["cbuf_bytes_per_core"]


def test_program_report(tmp_path, mnist_report):
    from opennpu.runtime.program import save_program
    from opennpu.targets.rk3588.compiler import compile_lowered

    c = compile_lowered("mnist-cnn", calibration="zoo")
    path = save_program(c.program, tmp_path / "m.npu")
    rep = build_report(str(path))
    assert validate(rep) == []
    assert rep["accuracy"]["cosine"] is None
    assert [o["placement"] for o in rep["ops"]] == [o["placement"] for o in mnist_report["ops"]]


def test_html_screenshot(tmp_path, mnist_report):
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("OPENNPU_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is not installed (apt-get install -y chromium) and OPENNPU_REQUIRE_CHROMIUM=1")
        pytest.skip("chromium not installed (Debian package 'chromium'); set OPENNPU_REQUIRE_CHROMIUM=1 to require")
    html = write_html(mnist_report, tmp_path / "r.html")
    png = tmp_path / "r.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1280,2000",
                    html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in img[:: 7]}
    assert len(colours) > 50, "screenshot looks blank"
    near = lambda rgb: (np.abs(img.astype(int) - rgb).sum(1) < 30).sum()  # noqa: E731
    assert near((0x1F, 0x77, 0xB4)) > 100, "NPU bar colour missing from the rendered plot"
