"""The GPU check of issue 16: the bundled model on CUDA through the CLI, with peak GPU memory.

    .venv/bin/python bench/gpu_check.py [--data DIR] [--out DIR]      (bench/gpu_check.sh runs this and the benches)

Runs ``prompt`` (zero-shot, 200 SST-2 test rows), ``finetune`` (500 training rows, 200 test rows) and
``compare`` (0 and 4 shots and LoRA on 500 rows, 200 test rows) as the CLI runs them, each in its own process,
while ``nvidia-smi`` is sampled every 0.2 s for the GPU memory in use; prints accuracy, ms per row, training
examples/s and peak GPU memory, and writes them as JSON (``gpu_check.json`` in ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def datasets_dir(given: str | None) -> Path:
    for candidate in (given, os.environ.get("PVF_DATASETS"), ROOT.parent / "shared" / "datasets",
                      ROOT / "shared" / "datasets"):
        if candidate and (Path(candidate) / "sst2_train.csv").is_file():
            return Path(candidate)
    sys.exit("sst2_train.csv not found: pass --data DIR (the folder with sst2_train.csv and sst2_test.csv)")


class GpuMemory:
    """The most GPU memory in use (MB, all GPUs summed) while it runs, sampled with nvidia-smi."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.peak, self._stop = every, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _used(self) -> float:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
            return sum(float(x) for x in out.split())
        except (OSError, ValueError, subprocess.SubprocessError):
            return 0.0  # no nvidia-smi (a CPU dry run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used())
            time.sleep(self.every)

    def __enter__(self) -> "GpuMemory":
        self.baseline = self._used()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_cli(name: str, args: list[str], out: Path) -> dict:
    command = [sys.executable, "-m", "pvf_core", *args, "--json"]
    print(f"\n$ {' '.join(command)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with GpuMemory() as gpu:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    (out / f"gpu_check_{name}.stderr").write_text(done.stderr)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return {"name": name, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"name": name, "wall_s": round(time.perf_counter() - started, 1), "peak_gpu_mb": gpu.peak,
            "gpu_mb_before": gpu.baseline, "result": result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--model", default="bundled")
    p.add_argument("--train-rows", type=int, default=500)
    p.add_argument("--test-rows", type=int, default=200)
    p.add_argument("--allow-cpu", action="store_true", help="a dry run of this script without a GPU")
    a = p.parse_args()
    data, out = datasets_dir(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from pvf_core.models import placement

    where, dtype = placement()
    header = {"cuda": torch.cuda.is_available(), "device": where, "dtype": str(dtype),
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "torch": torch.__version__}
    print(json.dumps(header), flush=True)
    if not header["cuda"] and not a.allow_cpu:
        sys.exit("No CUDA device: this check is for a GPU machine (install a CUDA build of torch).")
    common = ["--train", str(data / "sst2_train.csv"), "--test", str(data / "sst2_test.csv"), "--model", a.model,
              "--limit", str(a.test_rows)]
    runs = [run_cli("prompt", ["prompt", *common, "--shots", "0"], out),
            run_cli("finetune", ["finetune", *common, "--max-train", str(a.train_rows)], out),
            run_cli("compare", ["compare", *common, "--max-train", str(a.train_rows), "--shots", "0,4"], out)]
    print(f"\n{'command':10} {'accuracy':>9} {'ms/row':>8} {'train ex/s':>11} {'peak GPU MB':>12} {'wall s':>7}")
    for r in runs:
        if "error" in r:
            print(f"{r['name']:10} failed: {r['error']}")
            continue
        res = r["result"]
        arms = res.get("arms") or [res]
        for arm in arms:
            label = r["name"] if len(arms) == 1 else f"  {arm.get('arm')}"
            ex_s = arm.get("train_examples_per_second") or res.get("train_examples_per_second")
            print(f"{label:10} {arm['metrics'].get('accuracy', float('nan')):9.3f} "
                  f"{arm.get('ms_per_example', float('nan')):8.1f} {ex_s or 0:11.1f} {r['peak_gpu_mb']:12.0f} "
                  f"{r['wall_s']:7.1f}")
        print(f"{'':10} device {res.get('device')}, world_size {res.get('world_size')}")
    (out / "gpu_check.json").write_text(json.dumps({"header": header, "runs": runs}, indent=2, default=str))


if __name__ == "__main__":
    main()
