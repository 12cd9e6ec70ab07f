"""Is the comparison's answer trustworthy? Issue 12's checks on real data sets, through the CLI.

For each data set (first 500 training rows, first 200 test rows, written to temporary files so every
command sees the same rows) this runs ``python -m pvf_core compare`` and then checks:

- row by row reproducibility: ``prompt --shots K --limit 50`` and ``prompt --adapter ... --limit 50`` give
  the comparison's own predictions for those 50 rows (a row's answer never depends on the other rows);
- costs from compute: arms that compute the same tokens per query cost the same per query;
- stability: rebuilding the comparison without the zero-shot arm recommends the same arm (unless zero-shot
  was the recommended one);
- calibration before and after: each arm's score now (calibration fitted on validation rows), with the raw
  scores, and with the old batch calibration (divided by the mean over the scored test rows), recomputed
  from the same per-row scores.

    .venv/bin/python bench/check_comparisons.py [--sets sst2,ag_news,trec,sms_spam,jfleg] [--model bundled]
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

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
# the shared data sets sit beside the checkout; PVF_DATASETS points elsewhere (a git worktree of the project)
DATASETS = Path(os.environ.get("PVF_DATASETS", ROOT.parent / "shared" / "datasets"))
sys.path.insert(0, str(ROOT))

SETS = {"sst2": "sst2", "ag_news": "ag_news", "trec": "trec", "sms_spam": "sms_spam", "jfleg": "jfleg"}


def cli(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "pvf_core", *map(str, args), "--json"], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pvf_core {args[0]} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def first_rows(stem: str, train_rows: int, test_rows: int, folder: Path) -> tuple[pd.DataFrame, Path, Path]:
    """The first rows of a shared data set's train and test files, written to ``folder`` (so every command
    sees the same rows): the training rows and the two files' paths."""
    train = pd.read_csv(DATASETS / f"{stem}_train.csv", keep_default_na=False).head(train_rows)
    test = pd.read_csv(DATASETS / f"{stem}_test.csv", keep_default_na=False).head(test_rows)
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    return train, folder / "train.csv", folder / "test.csv"


def batch_calibrated(raw: list[dict], labels: list[str], shares: np.ndarray | None) -> list[str]:
    """The old default: divide by the mean over the scored rows (times the training shares, if given)."""
    probs = np.array([[row[label] for label in labels] for row in raw])
    leaning = probs.mean(axis=0) / (shares if shares is not None else 1.0)
    adjusted = probs / np.maximum(leaning, 1e-12)
    return [labels[i] for i in adjusted.argmax(axis=1)]


def check(name: str, model: str, train_rows: int, test_rows: int, work: Path, shots: str) -> dict:
    from pvf_core.compare import Comparison, build_comparison

    folder = work / name
    _, train_csv, test_csv = first_rows(SETS[name], train_rows, test_rows, folder)
    started = time.perf_counter()
    result = cli("compare", "--train", train_csv, "--test", test_csv, "--shots", shots,
                 "--model", model, "--output", folder / "run")
    seconds = time.perf_counter() - started
    comparison = Comparison.load(folder / "run")
    classification = comparison.task == "classification"
    out = {"set": name, "task": comparison.task, "seconds": round(seconds, 1),
           "recommended": comparison.recommendation.arm, "arms": []}
    labels = comparison.labels
    shares = None
    if classification:
        from pvf_core.calibration import label_shares

        shares = label_shares(train["label"].astype(str).tolist(), labels)
    for r, info in zip(comparison.results, comparison.arms):
        arm = {"arm": r.arm, "kind": info.kind, "calibration": r.calibration_summary.get("method"),
               "computed_tokens": round(r.computed_tokens_per_row, 1),
               "cost_per_1000": next(c.cost_per_1000 for c in comparison.costs if c.arm == r.arm)}
        if classification:
            refs = r.references
            old = batch_calibrated(r.raw_label_scores, labels, shares if info.kind == "prompt" else None)
            arm |= {"accuracy": r.metrics["accuracy"], "macro_f1": r.metrics["macro_f1"],
                    "raw_accuracy": r.metrics["raw"]["accuracy"],
                    "old_batch_accuracy": float(np.mean([a == b for a, b in zip(old, refs)]))}
        else:
            arm |= {"chrf": r.metrics["chrf"]}
        out["arms"].append(arm)
    out["same_tokens_same_cost"] = _same_tokens_same_cost(out["arms"])
    out["reproduced_rows"] = _reproduce(comparison, folder, model, rows=50)
    kept = [i for i, r in enumerate(comparison.results) if r.spec.get("shots") != 0 or comparison.arms[i].kind != "prompt"]
    if len(kept) >= 2 and comparison.recommendation.arm in [comparison.results[i].arm for i in kept]:
        without = build_comparison([comparison.results[i] for i in kept], [comparison.arms[i] for i in kept],
                                   task=comparison.task, labels=labels, dataset=comparison.dataset)
        out["recommended_without_zero_shot"] = without.recommendation.arm
        out["stable"] = without.recommendation.arm == comparison.recommendation.arm
    return out


def _same_tokens_same_cost(arms: list[dict]) -> bool:
    by_tokens: dict[float, set] = {}
    for arm in arms:
        by_tokens.setdefault(arm["computed_tokens"], set()).add(round(arm["cost_per_1000"], 12))
    return all(len(costs) == 1 for costs in by_tokens.values())


def _reproduce(comparison, folder: Path, model: str, rows: int) -> dict:
    """The first ``rows`` test rows scored again one command per arm: how many answers match the comparison's."""
    matched = {}
    for r, info in zip(comparison.results, comparison.arms):
        args = ["--train", folder / "train.csv", "--test", folder / "test.csv", "--limit", rows,
                "--predictions", folder / f"again-{len(matched)}.csv"]
        if info.kind == "finetune":
            args += ["--adapter", info.adapter_dir]
        else:
            args += ["--shots", r.spec.get("shots", 0), "--model", model]
        cli("prompt", *args)
        again = pd.read_csv(folder / f"again-{len(matched)}.csv", keep_default_na=False)["prediction"].astype(str)
        matched[r.arm] = int((again.to_numpy() == np.array(r.predictions[:rows], dtype=object)).sum())
    return matched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--train-rows", type=int, default=500)
    parser.add_argument("--test-rows", type=int, default=200)
    parser.add_argument("--shots", default="0,4")
    parser.add_argument("--work", default=None, help="Folder for the runs (default: a temporary one).")
    parser.add_argument("--json", dest="json_path", default=None, help="Also write the results here.")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="pvf-check-"))
    results = []
    for name in args.sets.split(","):
        found = check(name, args.model, args.train_rows, args.test_rows, work, args.shots)
        results.append(found)
        print(json.dumps(found), flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))
    print()
    print("| set | arm | calibration | now | raw | old batch calibration | tokens/query | reproduced |")
    print("|---|---|---|---|---|---|---|---|")
    for found in results:
        for arm in found["arms"]:
            now = arm.get("accuracy", arm.get("chrf"))
            print(f"| {found['set']} | {arm['arm']} | {arm['calibration']} | {now:.3f} | {arm.get('raw_accuracy', float('nan')):.3f} "
                  f"| {arm.get('old_batch_accuracy', float('nan')):.3f} | {arm['computed_tokens']} "
                  f"| {found['reproduced_rows'].get(arm['arm'])}/50 |")
        print(f"| {found['set']} | recommended: {found['recommended']} (without zero-shot: "
              f"{found.get('recommended_without_zero_shot', 'n/a')}); same tokens, same cost: "
              f"{found['same_tokens_same_cost']}; {found['seconds']} s | | | | | | |")


if __name__ == "__main__":
    main()
