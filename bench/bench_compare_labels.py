"""The standard comparison with many labels against few: `python -m pvf_core compare`, wall time per phase.

    .venv/bin/python bench/bench_compare_labels.py                      # 4 vs 150 labels, 500 train / 200 test
    .venv/bin/python bench/bench_compare_labels.py --train-rows 300 --test-rows 100 --epochs 1

Generated intent-routing data (``bench_labels.py``'s label sets and messages): the same number of training
rows (the validation rows are carved from them, as the CLI does) and test rows for each label count. Each
comparison is the CLI command a user runs (zero-shot and k-shot prompt arms, LoRA fine-tuning, the adapter
scored; process start and model load included), in its own subprocess, with timers wrapped around the
harness's steps so the wall time splits into phases: calibration (scoring the fitting rows), test scoring
(batched), latency rows (one query at a time), prompt rendering and example selection, training, and the
rest. Goal of issue 13: the 150-label comparison takes at most 2× the wall time of the 4-label one. The
CLI process's CPU time is printed too: on a shared machine it moves less than wall time. ``--code DIR`` times
another checkout's ``pvf_core`` (e.g. the version before a change) on the same data.

Results (JSON) go under bench/results/; the matmul peak in the harness's scoring dtype is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = os.environ.get("PVF_BENCH_CODE") or str(ROOT)  # the pvf_core to time (--code: another checkout's)
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, CODE)

PHASES = ["load adapter model", "calibration", "test scoring", "latency rows", "prompts", "ms/token probe",
          "budget+tips", "training", "other (evaluate)"]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", default="4,150", help="label counts, comma-separated; the first is the baseline")
    p.add_argument("--train-rows", type=int, default=500, help="training rows (validation carved from them)")
    p.add_argument("--test-rows", type=int, default=200)
    p.add_argument("--shots", default="0,4")
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--model", default="bundled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--code", default=None,
                   help="a folder holding another version's pvf_core to time instead of this one (before/after)")
    p.add_argument("--results-dir", default=str(ROOT / "bench" / "results"), help="where the JSON result goes")
    return p.parse_args()


def write_data(folder: Path, n_labels: int, train_rows: int, test_rows: int, seed: int) -> tuple[Path, Path]:
    """Train and test CSVs for ``n_labels`` intents, every label in both where the rows allow (round robin)."""
    import numpy as np
    import pandas as pd

    from bench_labels import DETAILS, OPENERS, label_set

    labels = label_set(n_labels, seed)
    rng = np.random.default_rng(seed + n_labels)

    def rows(count: int, offset: int) -> pd.DataFrame:
        out = []
        for i in range(count):
            label = labels[(i + offset) % n_labels] if i < 2 * n_labels else labels[int(rng.integers(n_labels))]
            topic, action = label.replace("_", " ").rsplit(" ", 1)
            out.append((f"{OPENERS[int(rng.integers(len(OPENERS)))]} my {topic} {action} "
                        f"{DETAILS[int(rng.integers(len(DETAILS)))]}.", label))
        return pd.DataFrame(out, columns=["text", "label"]).sample(frac=1, random_state=seed)

    train, test = folder / f"train-{n_labels}.csv", folder / f"test-{n_labels}.csv"
    rows(train_rows, 0).to_csv(train, index=False)
    rows(test_rows, 7).to_csv(test, index=False)
    return train, test


# -- the child: the CLI in-process, with timers around the harness's steps ----------------------------------

class Timers:
    """Exclusive wall time per arm and phase: a wrapped call's time minus the wrapped calls inside it.

    A call wrapped with ``inherit`` (scoring) counts towards the phase of the call it is made from
    (calibration, the ms/token probe), unless that is the arm's evaluation itself.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []  # [phase, started, time of children]
        self.arm = "-"

    def wrap(self, owner, name: str, phase: str, inherit: bool = False, names_arm: bool = False) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if names_arm and args:
                self.arm = getattr(args[0], "name", self.arm)
            own = phase
            if inherit and self.stack and self.stack[-1][0] != "other (evaluate)":
                own = self.stack[-1][0]
            self.stack.append([own, time.perf_counter(), 0.0])
            try:
                return original(*args, **kwargs)
            finally:
                ph, started, children = self.stack.pop()
                elapsed = time.perf_counter() - started
                key = "training" if ph == "training" else f"{self.arm}|{ph}"
                self.seconds[key] += elapsed - children
                if self.stack:
                    self.stack[-1][2] += elapsed

        setattr(owner, name, timed)


def child(phase_file: str, cli_args: list[str]) -> None:
    import pvf_core.evaluate as ev
    import pvf_core.finetune as ft
    from pvf_core.cli import cli

    timers = Timers()
    timers.wrap(ev, "evaluate", "other (evaluate)", names_arm=True)
    timers.wrap(ev, "load_arm_model", "load adapter model")
    timers.wrap(ev, "_fit_calibration", "calibration")
    timers.wrap(ev, "score_labels", "test scoring", inherit=True)
    timers.wrap(ev, "_one_at_a_time", "latency rows")
    timers.wrap(ev._Prompter, "prompts", "prompts")
    timers.wrap(ev, "ms_per_token", "ms/token probe")
    timers.wrap(ev, "prompt_budget", "budget+tips")
    timers.wrap(ev, "lint", "budget+tips")
    timers.wrap(ft, "train_lora", "training")
    started = time.perf_counter()
    try:
        cli.main(cli_args, standalone_mode=False)
    finally:
        seconds = dict(timers.seconds)
        # score_labels inside _fit_calibration: its time belongs to calibration, not to test scoring
        Path(phase_file).write_text(json.dumps({"phases": seconds, "in_process": time.perf_counter() - started}))


def run_one(args: argparse.Namespace, folder: Path, n_labels: int) -> dict:
    train, test = write_data(folder, n_labels, args.train_rows, args.test_rows, args.seed)
    phase_file = folder / f"phases-{n_labels}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(phase_file), "compare",
               "--train", str(train), "--test", str(test), "--shots", args.shots, "--epochs", str(args.epochs),
               "--model", args.model, "--seed", str(args.seed), "--output", str(folder / f"out-{n_labels}"), "--json"]
    code = str(Path(args.code).resolve()) if args.code else str(ROOT)
    env = {**os.environ, "PYTHONPATH": code, "PVF_BENCH_CODE": code, "TOKENIZERS_PARALLELISM": "false"}
    import resource

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{n_labels} labels: compare failed\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    timed = json.loads(phase_file.read_text())
    if out["task"] != "classification":
        raise SystemExit(f"{n_labels} labels were read as {out['task']}: give more training rows per label")
    return {"labels": n_labels, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "phases": timed["phases"], "code": code,
            "arms": [{"arm": a["arm"], "accuracy": a["metrics"].get("accuracy"),
                      "macro_f1": a["metrics"].get("macro_f1"), "calibration": a.get("calibration"),
                      "seconds": a.get("seconds"), "ms_per_example": a.get("ms_per_example")}
                     for a in out["arms"]]}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3:])
    args = parse()
    import torch

    from bench_prompt import scoring_peak

    counts = [int(n) for n in args.labels.split(",")]
    print(f"compare on generated data: {args.train_rows} train rows (validation carved from them), "
          f"{args.test_rows} test rows, shots {args.shots}, {args.epochs:g} epoch(s), {torch.get_num_threads()} "
          "threads", flush=True)
    dtype_name, first_peak = scoring_peak()
    peaks = [first_peak]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            results.append(run_one(args, Path(tmp), n))
            print(f"  {n} labels: {results[-1]['wall_seconds']} s wall, {results[-1]['cpu_seconds']} s CPU", flush=True)
    peaks.append(scoring_peak()[1])
    peak = statistics.mean(peaks)
    print_table(results, peak, dtype_name)
    folder = Path(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / time.strftime("bench_compare_labels-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps({"args": vars(args), "matmul_peak_dtype": dtype_name, "matmul_peak_gflops": round(peak / 1e9, 1),
                                "results": results}, indent=2))
    print(f"saved {path}")


def by_phase(r: dict, phase: str) -> float:
    return sum(v for k, v in r["phases"].items() if k.split("|")[-1] == phase)


def by_arm(r: dict, arm: str) -> float:
    return sum(v for k, v in r["phases"].items() if k.split("|")[0] == arm)


def print_table(results: list[dict], peak: float, dtype_name: str) -> None:
    base = results[0]
    rows: list[tuple[str, list[float]]] = []
    for phase in PHASES:
        rows.append((phase, [by_phase(r, phase) for r in results]))
    rows.append(("outside the harness", [r["wall_seconds"] - sum(r["phases"].values()) for r in results]))
    arms = [a["arm"] for a in base["arms"]]
    for k, arm in enumerate(arms):  # arms by position: the k-shot arm's name differs (balanced vs similar)
        rows.append((f"arm: {arm}", [by_arm(r, r["arms"][k]["arm"]) for r in results]))
    rows.append(("wall (CLI process)", [r["wall_seconds"] for r in results]))
    rows.append(("CPU s (CLI process)", [r["cpu_seconds"] for r in results]))
    print()
    print(f"{'phase':<26}" + "".join(f"{str(r['labels']) + ' labels s':>16}" for r in results) +
          "".join(f"{'ratio ' + str(r['labels']):>12}" for r in results[1:]))
    for name, values in rows:
        ratios = "".join(f"{(v / values[0] if values[0] > 0.05 else float('nan')):>11.2f}x" for v in values[1:])
        print(f"{name:<26}" + "".join(f"{v:>16.1f}" for v in values) + ratios)
    for r in results:
        arms = ", ".join(f"{a['arm']} {a['accuracy']:.3f} ({(a['calibration'] or {}).get('method')})"
                         for a in r["arms"])
        note = next((a["calibration"]["note"] for a in r["arms"] if (a["calibration"] or {}).get("note")), None)
        arms += f"; {note}" if note else ""
        print(f"{r['labels']} labels, accuracy (calibration): {arms}")
    print(f"{dtype_name} matmul peak (the dtype the harness scores in) measured in this run: {peak / 1e9:.0f} GFLOP/s")
    for r in results[1:]:
        ratio = r["wall_seconds"] / base["wall_seconds"]
        print(f"{r['labels']} labels take {ratio:.2f}x the wall time of {base['labels']} labels "
              f"(goal <= 2x: {'meets it' if ratio <= 2 else 'misses it'}); CPU time "
              f"{r['cpu_seconds'] / base['cpu_seconds']:.2f}x (less sensitive to a busy machine)")


if __name__ == "__main__":
    main()
