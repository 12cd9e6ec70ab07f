"""Are the time estimates worth trusting? Predicted against actual for five varied standard comparisons.

Each case runs ``python -m pvf_core compare`` (a new process, as a job does) on the first rows of a real data
set; the comparison estimates itself once its model is loaded (token counts of every prompt and training batch
times the speed measured at that moment) and records the time each stage really took. Printed per case: the
comparison's total and its fine-tuning stage (the training estimate), predicted, actual and actual / predicted.
Goal: within ±30 % (ratios 0.7-1.3).

    nice -n 5 .venv/bin/python bench/bench_estimates.py [--cases 1,2,3,4,5] [--model bundled]

The cases vary row counts, text lengths (SST-2 sentences, AG News articles, TREC questions, SMS), example
counts, epochs and label counts, and stay small (about a minute each on a quiet 2-core machine). Wall times on
a shared machine are noisy: the speed is measured once at the start, and other work starting later slows the
run without the estimate knowing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"

# name, data set, training rows, test rows, shots, epochs
CASES = [
    ("sst2-small", "sst2", 96, 48, "0,2", 1.0),
    ("ag_news-4shot", "ag_news", 100, 32, "0,4", 1.0),
    ("trec-similar-2ep", "trec", 160, 60, "0,2", 2.0),
    ("sms_spam-2ep", "sms_spam", 64, 80, "0,1", 2.0),
    ("sst2-200rows", "sst2", 200, 30, "4", 1.0),
]


def run_case(name: str, data: str, train_rows: int, test_rows: int, shots: str, epochs: float, model: str,
             work: Path) -> dict:
    train = pd.read_csv(DATASETS / f"{data}_train.csv", keep_default_na=False).head(train_rows)
    test = pd.read_csv(DATASETS / f"{data}_test.csv", keep_default_na=False).head(test_rows)
    folder = work / name
    folder.mkdir(parents=True)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pvf_core", "compare", "--train", str(folder / "train.csv"),
                           "--test", str(folder / "test.csv"), "--shots", shots, "--epochs", str(epochs),
                           "--model", model, "--output", str(folder / "out"), "--json"],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: compare failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    labels = train.iloc[:, 1].astype(str).nunique() if train.shape[1] > 1 else 0
    return {"case": name, "train_rows": train_rows, "test_rows": test_rows, "shots": shots, "epochs": epochs,
            "labels": int(labels), "text_chars": round(float(train.iloc[:, 0].astype(str).str.len().mean())),
            "predicted_s": result["predicted_seconds"], "actual_s": result["seconds"],
            "train_predicted_s": result["predicted_parts"]["fine-tuning"],
            "train_actual_s": result["actual_parts"].get("fine-tuning"),
            "parts_predicted": result["predicted_parts"], "parts_actual": result["actual_parts"],
            "ms_per_token": result["estimate"]["ms_per_token"], "basis": result["estimate"]["basis"],
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="1,2,3,4,5", help="which cases to run (1-5, comma-separated)")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every figure to this file")
    args = parser.parse_args()
    chosen = [CASES[int(i) - 1] for i in args.cases.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pvf-bench-estimates-") as work:
        for case in chosen:
            print(f"running {case[0]}...", file=sys.stderr, flush=True)
            row = run_case(*case, model=args.model, work=Path(work))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print("| case | train rows × epochs | test rows | shots | labels | mean text chars | ms/token at start | "
          "comparison predicted / actual (ratio) | fine-tuning predicted / actual (ratio) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["actual_s"] / r["predicted_s"]
        train_ratio = (r["train_actual_s"] or 0) / r["train_predicted_s"]
        print(f"| {r['case']} | {r['train_rows']} × {r['epochs']:g} | {r['test_rows']} | {r['shots']} | {r['labels']} "
              f"| {r['text_chars']} | {r['ms_per_token']:.2f} | {r['predicted_s']:.0f} s / {r['actual_s']:.0f} s "
              f"(**{ratio:.2f}**) | {r['train_predicted_s']:.0f} s / {r['train_actual_s']:.0f} s "
              f"(**{train_ratio:.2f}**) |")
    within = [0.7 <= r["actual_s"] / r["predicted_s"] <= 1.3 for r in rows]
    within_train = [0.7 <= (r["train_actual_s"] or 0) / r["train_predicted_s"] <= 1.3 for r in rows]
    print(f"\nwithin ±30 %: comparison {sum(within)}/{len(rows)}, fine-tuning {sum(within_train)}/{len(rows)}")
    for r in rows:
        print(f"{r['case']}: predicted {r['parts_predicted']}\n{' ' * len(r['case'])}  actual    {r['parts_actual']}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
