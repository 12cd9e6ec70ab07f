"""CSV to complete comparison: `python -m pvf_core compare` against the naive baselines, in one run.

    .venv/bin/python bench/bench_compare.py            # SST-2: 500 training rows, 200 test rows

Ours: the whole `compare` command as a user runs it (process start, model load, zero-shot and 4-shot prompt
arms, LoRA fine-tuning on 500 rows, scoring the adapter, significance, report), wall time.
Baseline: the sum of the two naive baselines of bench_prompt.py and bench_finetune.py, run here too:
a `pipeline("text-generation", model=<folder>)` (its default dtype, as a newcomer gets it) called row by row
on the 200 test rows with the 4-shot prompt (generate and parse; one prompt arm only), plus the `Trainer` + peft reference (fp32, padded to 128) training on the same 500 rows.
Each side runs in its own subprocess; the target is ours ≤ 0.2 × baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
PY = sys.executable


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", default=str(DATASETS / "sst2_train.csv"))
    p.add_argument("--test", default=str(DATASETS / "sst2_test.csv"))
    p.add_argument("--train-rows", type=int, default=500)
    p.add_argument("--test-rows", type=int, default=200)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--model", default="bundled")
    p.add_argument("--results-dir", default=str(ROOT / "bench" / "results"), help="where the JSON result goes")
    return p.parse_args()


def timed(command: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, done.stdout


PROMPT_BASELINE = """
import sys, time, pandas as pd
sys.path.insert(0, {root!r})
from bench.bench_prompt import INSTRUCTION, make_baselines, run_baseline
from pvf_core.models import load_model
from pvf_core.prompting import PromptSpec, examples_for, select_examples
train = pd.read_csv({train!r}, keep_default_na=False)
test = pd.read_csv({test!r}, keep_default_na=False).head({rows})
loaded = load_model({model!r})
spec = PromptSpec(labels=sorted(set(train["label"])), instruction=INSTRUCTION, shots=4, selection="balanced")
examples = examples_for(train, select_examples(spec, train, list(test["text"]))[0])
generator = make_baselines(["default"], loaded)["default"][0]
print(run_baseline(generator, spec, list(test["text"]), examples, 5)["seconds"])
"""


def main() -> None:
    args = parse()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        print(f"ours: python -m pvf_core compare on {args.train_rows} train / {args.test_rows} test rows ...", flush=True)
        ours_seconds, stdout = timed([PY, "-m", "pvf_core", "compare", "--train", args.train, "--test", args.test,
                                      "--max-train", str(args.train_rows), "--limit", str(args.test_rows),
                                      "--shots", "0,4", "--epochs", str(args.epochs), "--output", str(out / "ours"),
                                      "--model", args.model, "--json"])
        ours = json.loads(stdout)
        print("baseline 1: pipeline('text-generation') row by row, 4-shot ...", flush=True)
        prompt_seconds, stdout = timed([PY, "-c", PROMPT_BASELINE.format(root=str(ROOT), train=args.train,
                                                                          test=args.test, rows=args.test_rows,
                                                                          model=args.model)])
        generation_seconds = float(stdout.strip().splitlines()[-1])
        print("baseline 2: Trainer + peft reference, fp32, padded ...", flush=True)
        side = out / "reference.json"
        trainer_seconds, _ = timed([PY, str(ROOT / "bench" / "bench_finetune.py"), "--side", "reference",
                                    "--out", str(side), "--train", args.train, "--test", args.test,
                                    "--train-rows", str(args.train_rows), "--test-rows", str(args.test_rows),
                                    "--epochs", str(args.epochs), "--model", args.model])
        reference = json.loads(side.read_text())
    baseline_seconds = prompt_seconds + trainer_seconds
    result = {
        "ours_seconds": ours_seconds, "ours_arms": {a["arm"]: a["metrics"]["accuracy"] for a in ours["arms"]},
        "recommendation": ours["recommendation"]["arm"],
        "baseline_seconds": baseline_seconds, "baseline_generation_seconds": generation_seconds,
        "baseline_prompt_process_seconds": prompt_seconds, "baseline_trainer_process_seconds": trainer_seconds,
        "baseline_trainer_train_seconds": reference["train_seconds"],
        "ratio": ours_seconds / baseline_seconds,
    }
    print(f"\nours (whole comparison, wall): {ours_seconds:8.1f} s   arms: "
          + ", ".join(f"{k} {v:.3f}" for k, v in result["ours_arms"].items()))
    print(f"baseline (generation loop + Trainer):  {baseline_seconds:8.1f} s "
          f"(generation {prompt_seconds:.0f} s, Trainer {trainer_seconds:.0f} s)")
    print(f"ratio ours / baseline: {result['ratio']:.3f}  (target ≤ 0.2)")
    folder = Path(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / time.strftime("bench_compare-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(result, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
