"""ethos-u-vela worker, run with the python of its own venv (see bench/_peers.py): times vela's own entry point
in-process, after its import, ``repeat`` times (first cold, the rest warm).

    <peers>/ethos-u-vela/bin/python bench/peer_workers/vela_worker.py result.json REPEAT -- VELA ARGS...

result.json: {"version", "import": {wall_s, cpu_s}, "runs": [{wall_s, cpu_s}, ...]}.
"""

from __future__ import annotations

import json
import sys
import time


def main(result_path: str, repeat: int, vela_args: list[str]) -> int:
    w, c = time.perf_counter(), time.process_time()
    from ethosu.vela.vela import main as vela_main

    result: dict = {"import": {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c}, "runs": []}
    from importlib.metadata import version

    result["version"] = version("ethos-u-vela")
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        ret = vela_main(list(vela_args))
        if ret not in (0, None):
            raise SystemExit(f"vela returned {ret}")
        result["runs"].append({"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c})
    with open(result_path, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sep = sys.argv.index("--")
    raise SystemExit(main(sys.argv[1], int(sys.argv[2]), sys.argv[sep + 1:]))
