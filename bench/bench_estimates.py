"""Are the time estimates worth trusting? Predicted against actual for five varied standard comparisons.

Each case runs ``python -m pvf_core compare`` (a new process, as a job does) on the first rows of a real data
set; the comparison estimates itself once its model is loaded (token counts of every prompt and training batch
times the speed measured at that moment) and records the time each stage really took. Printed per case: the
comparison's total and its fine-tuning stage (the training estimate), predicted, actual and actual / predicted;
then every stage's ratio, and the latency rows (each arm's first 30 test rows answered one query at a time,
inside the prompting and scoring stages) per arm and in all. Goal: within ±30 % (ratios 0.7-1.3).

    nice -n 5 .venv/bin/python bench/bench_estimates.py [--cases 1,2,3,4,5] [--model bundled]
    .venv/bin/python bench/bench_estimates.py --quick     # one tiny case: checks the script runs, not the goal

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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_comparisons import first_rows  # noqa: E402  (this folder is on sys.path when run as a script)

# name, data set, training rows, test rows, shots, epochs
CASES = [
    ("sst2-small", "sst2", 96, 48, "0,2", 1.0),
    ("ag_news-4shot", "ag_news", 100, 32, "0,4", 1.0),
    ("trec-similar-2ep", "trec", 160, 60, "0,2", 2.0),
    ("sms_spam-2ep", "sms_spam", 64, 80, "0,1", 2.0),
    ("sst2-200rows", "sst2", 200, 30, "4", 1.0),
]
QUICK_CASE = ("sst2-quick", "sst2", 24, 12, "0,1", 1.0)  # --quick: a smoke run (seconds of work, not a measurement)


def run_case(name: str, data: str, train_rows: int, test_rows: int, shots: str, epochs: float, model: str,
             work: Path) -> dict:
    folder = work / name
    train, train_csv, test_csv = first_rows(data, train_rows, test_rows, folder)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pvf_core", "compare", "--train", str(train_csv),
                           "--test", str(test_csv), "--shots", shots, "--epochs", str(epochs),
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
            "latency_predicted": result.get("predicted_latency", {}),
            "latency_actual": result.get("actual_latency", {}),
            "ms_per_token": result["estimate"]["ms_per_token"], "basis": result["estimate"]["basis"],
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="1,2,3,4,5", help="which cases to run (1-5, comma-separated)")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every figure to this file")
    parser.add_argument("--quick", action="store_true", help="run one tiny case only (checks the script works)")
    args = parser.parse_args()
    chosen = [QUICK_CASE] if args.quick else [CASES[int(i) - 1] for i in args.cases.split(",")]
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
    print("\nper stage, actual / predicted (predicted s → actual s); latency rows sit inside prompting and scoring")
    for r in rows:
        print(f"{r['case']}:")
        for line in stage_lines(r):
            print(f"  {line}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2))


def ratio(predicted: float | None, actual: float | None) -> str:
    if not predicted or actual is None:
        return "n/a"
    return f"{actual / predicted:.2f} ({predicted:.1f} s → {actual:.1f} s)"


def stage_lines(r: dict) -> list[str]:
    """Each stage's ratio, then the latency rows per arm and in all."""
    predicted, actual = r["parts_predicted"], r["parts_actual"]
    lines = [f"{name:<32} {ratio(predicted.get(name), actual.get(name))}"
             for name in dict.fromkeys([*predicted, *actual])]
    latency, timed = r["latency_predicted"], r["latency_actual"]
    lines += [f"{'latency rows, ' + arm:<32} {ratio(latency.get(arm), timed.get(arm))}"
              for arm in dict.fromkeys([*latency, *timed])]
    if latency and timed:
        lines.append(f"{'latency rows, all arms':<32} {ratio(sum(latency.values()), sum(timed.values()))}")
    return lines


if __name__ == "__main__":
    main()
