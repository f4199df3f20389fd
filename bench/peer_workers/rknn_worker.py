"""rknn-toolkit2 worker, run with the python of its own venv (see bench/_peers.py): never imports opennpu.

    <peers>/rknn-toolkit2/bin/python bench/peer_workers/rknn_worker.py job.json result.json

job.json: {"onnx": path, "inputs": ["input"], "input_size_list": [[1, 3, 224, 224]], "dataset": dataset.txt
(one .npy path per line, NCHW float32 arrays as the ONNX model takes them), "target": "rk3588",
"export": path.rknn or null, "repeat": builds in this process (first cold, the rest warm),
"eval": path.npy (N, C, H, W) or null, "outputs": path.npy for the simulator's outputs (N, ...),
"algorithm": the toolkit's quantized_algorithm, "normal" (default), "mmse" or "kl_divergence"}.

Per build: ``RKNN.config(target_platform, quantized_dtype="w8a8", quantized_algorithm="normal",
quantized_method="channel")`` (the toolkit's defaults, spelled out: int8 weights and activations, per-channel weights),
``load_onnx``, ``build(do_quantization=True, dataset)``, ``export_rknn``; with "eval", ``init_runtime()``
(no target: the toolkit's simulator) and ``inference`` one input at a time. result.json holds the wall and
CPU seconds of the import and of each phase, and the toolkit's version.
"""

from __future__ import annotations

import json
import sys
import time


class Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> dict[str, float]:
        w, c = time.perf_counter(), time.process_time()
        out = {"wall_s": w - self.wall, "cpu_s": c - self.cpu}
        self.wall, self.cpu = w, c
        return out


def _check(ret: int, what: str) -> None:
    if ret != 0:
        raise SystemExit(f"rknn-toolkit2 {what} returned {ret}")


def main(job_path: str, result_path: str) -> int:
    job = json.loads(open(job_path).read())
    clock = Clock()
    import numpy as np
    from rknn.api import RKNN

    result: dict = {"import": clock.lap(), "builds": []}
    try:
        from importlib.metadata import version

        result["version"] = version("rknn-toolkit2")
    except Exception:  # version lookup is informational only
        result["version"] = "?"
    for i in range(int(job.get("repeat", 1))):
        phases: dict[str, dict[str, float]] = {}
        clock.lap()
        rk = RKNN(verbose=False)
        rk.config(target_platform=job["target"], quantized_dtype="w8a8",
                  quantized_algorithm=job.get("algorithm", "normal"),
                  quantized_method="channel")
        _check(rk.load_onnx(job["onnx"], inputs=job["inputs"], input_size_list=job["input_size_list"]), "load_onnx")
        phases["load"] = clock.lap()
        _check(rk.build(do_quantization=True, dataset=job["dataset"]), "build")
        phases["build"] = clock.lap()
        if job.get("export"):
            _check(rk.export_rknn(job["export"]), "export_rknn")
            phases["export"] = clock.lap()
        if job.get("eval") and i == 0:
            x = np.load(job["eval"])
            _check(rk.init_runtime(), "init_runtime")
            outs = []
            for k in range(len(x)):
                out = rk.inference(inputs=[np.ascontiguousarray(x[k:k + 1])], data_format="nchw")
                outs.append(np.asarray(out[0], dtype=np.float32).reshape(1, -1))
            np.save(job["outputs"], np.concatenate(outs))
            phases["simulate"] = clock.lap()
        rk.release()
        result["builds"].append(phases)
    with open(result_path, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
