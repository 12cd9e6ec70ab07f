"""Prompt search speed: candidates judged per minute by successive halving with the shared-prefix cache,
against scoring the same candidates one by one on all selection rows without halving or cache reuse.

Both judge the same candidates (the first N of the search space, in the search's seeded order) on the same
selection rows (validation rows topped up with training rows; never test rows) with the same calibrated
metric; both winners are then scored on the same test rows. Printed: seconds, candidates per minute, the
ratio, each winner and its validation and test accuracy, and the machine's fp32 matmul peak measured in
the same run (the scoring runs in float32 on the CPU).

    .venv/bin/python bench/bench_search.py [--set sst2] [--candidates 8] [--rows 96] [--test-rows 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_prompt import matmul_peak  # noqa: E402  (this folder is on sys.path when run as a script)


def one_by_one(loaded, planned, rows, pool, task) -> tuple[int, float]:
    """The naive search: every candidate on every row, each row's prompt computed in full (no prefix cache)."""
    from pvf_core.prompting import Renderer
    from pvf_core.scoring import score_labels
    from pvf_core.search import _Judge

    judge = _Judge(loaded, rows, pool, task, lambda: False)
    best, best_score = 0, -1.0
    for number, candidate in enumerate(planned):
        spec = candidate.spec
        renderer = Renderer(spec, loaded.tokenizer)
        answers = [renderer.answer_ids(label) for label in spec.labels]
        room = loaded.context_length - max(len(a) for a in answers)
        prompts = judge._prompts(spec, renderer, judge.texts, room)
        scores = score_labels(loaded, prompts, answers, use_prefix_cache=False)
        free = score_labels(loaded, judge._prompts(spec, renderer, ["N/A"], room), answers, use_prefix_cache=False)[0]
        score, _ = judge._calibrated(spec, np.array(scores), judge.references, free)
        if score > best_score:
            best, best_score = number, score
    return best, best_score


def test_accuracy(loaded, spec, train, validation, test, task) -> float:
    from pvf_core.evaluate import Arm, evaluate

    result = evaluate(Arm("winner", spec, model="bundled"), test, task=task, labels=spec.labels, train=train,
                      calibration_rows=validation, loaded=loaded)
    return float(result.metrics["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="sst2")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--rows", type=int, default=96, help="Selection rows (validation first, then training).")
    parser.add_argument("--test-rows", type=int, default=100)
    args = parser.parse_args()

    import torch

    from pvf_core.models import load_model
    from pvf_core.prompting import PromptSpec
    from pvf_core.search import SearchSettings, search_prompt, search_space, selection_rows

    data = pd.read_csv(DATASETS / f"{args.set}_train.csv", keep_default_na=False).head(500)
    validation, train = data.tail(50).reset_index(drop=True), data.head(450).reset_index(drop=True)
    test = pd.read_csv(DATASETS / f"{args.set}_test.csv", keep_default_na=False).head(args.test_rows)
    labels = sorted(data["label"].astype(str).unique())
    start = PromptSpec(task="classification", labels=labels)
    loaded = load_model("bundled")
    peak = matmul_peak(torch.float32)
    # keep_margin 0: halving returns its best outright, as the one-by-one search does (the same rule on both sides;
    # the keep-unless-clearly-better guard is measured by check_search.py)
    settings = SearchSettings(max_candidates=args.candidates, max_rows=args.rows, budget_seconds=36000, keep_margin=0.0)

    began = time.perf_counter()
    found = search_prompt(loaded, start, train=train, validation=validation, settings=settings)
    ours_seconds = time.perf_counter() - began

    rows, _ = selection_rows(train, validation, max_rows=args.rows, seed=0)
    planned = search_space(start, pool_rows=len(train), settings=settings, model_words=found.words)[:args.candidates]
    began = time.perf_counter()
    best, best_score = one_by_one(loaded, planned, rows, train, "classification")
    naive_seconds = time.perf_counter() - began
    naive_spec = planned[best].spec

    ours_test = test_accuracy(loaded, found.spec, train, validation, test, "classification")
    naive_test = test_accuracy(loaded, naive_spec.with_(calibration="auto"), train, validation, test, "classification")
    per_minute = {"halving": args.candidates / ours_seconds * 60, "one_by_one": args.candidates / naive_seconds * 60}
    out = {"set": args.set, "candidates": args.candidates, "selection_rows": len(rows), "test_rows": len(test),
           "fp32_matmul_peak_gflops": round(peak / 1e9, 1),
           "halving": {"seconds": round(ours_seconds, 1), "per_minute": round(per_minute["halving"], 2),
                       "winner": found.winner, "validation": found.validation_score,
                       "validation_rows": found.rows, "test_accuracy": ours_test},
           "one_by_one": {"seconds": round(naive_seconds, 1), "per_minute": round(per_minute["one_by_one"], 2),
                          "winner": planned[best].describe(), "validation": round(best_score, 4),
                          "validation_rows": len(rows), "test_accuracy": naive_test},
           "speedup": round(per_minute["halving"] / per_minute["one_by_one"], 2)}
    print(json.dumps(out, indent=1))
    print(f"\n| method | seconds | candidates per minute | winner | validation (rows) | test accuracy |")
    print("|---|---|---|---|---|---|")
    for key in ("halving", "one_by_one"):
        r = out[key]
        print(f"| {key.replace('_', ' ')} | {r['seconds']:.0f} | {r['per_minute']:.2f} | {r['winner']} | "
              f"{r['validation']:.3f} ({r['validation_rows']}) | {r['test_accuracy']:.3f} |")
    print(f"\nhalving is {out['speedup']:.1f}x the candidates per minute; fp32 matmul peak {out['fp32_matmul_peak_gflops']}"
          " GFLOP/s in this run")


if __name__ == "__main__":
    main()
