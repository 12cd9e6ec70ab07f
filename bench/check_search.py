"""Does the prompt search beat the default 4-shot prompt on the test rows? Issue 14's "done when", via the CLI.

For each data set (first 500 training rows, of which the CLI carves 10 % as validation rows; first 200 test
rows, written to temporary files so every command sees the same rows) this runs

- ``prompt --shots 4``: the default 4-shot prompt (the comparison's default arm), and
- ``prompt --search --budget-seconds B``: the search (chosen on validation + training rows), its winner
  scored once on the test rows,

and prints both test scores (accuracy and macro-F1), the winner, its validation score, the search time and
how many candidates were tried. The deciding metric is the comparison's: macro-F1 when the labels are
unbalanced (SMS spam), else accuracy.

    .venv/bin/python bench/check_search.py [--sets sst2,ag_news,trec,sms_spam] [--budget-seconds 120]
                                           [--max-candidates N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_comparisons import cli, first_rows  # noqa: E402  (this folder is on sys.path when run as a script)


def check(name: str, work: Path, budget: float, model: str, train_rows: int, test_rows: int,
          max_candidates: int | None) -> dict:
    from pvf_core.metrics import unbalanced

    train, train_csv, test_csv = first_rows(name, train_rows, test_rows, work / name)
    files = ("--train", train_csv, "--test", test_csv, "--model", model)
    default = cli("prompt", *files, "--shots", 4)
    started = time.perf_counter()
    fixed = ("--max-candidates", max_candidates) if max_candidates else ()
    searched = cli("prompt", *files, "--search", "--budget-seconds", budget, *fixed)
    seconds = time.perf_counter() - started
    metric = "macro_f1" if unbalanced(train["label"].astype(str).tolist()) else "accuracy"
    search = searched["search"]
    return {"set": name, "metric": metric,
            "default_4shot": {k: round(default["metrics"][k], 3) for k in ("accuracy", "macro_f1")},
            "default_arm": default["arm"],
            "searched": {k: round(searched["metrics"][k], 3) for k in ("accuracy", "macro_f1")},
            "searched_arm": searched["arm"], "beats_default": searched["metrics"][metric] > default["metrics"][metric],
            "validation_score": search["validation_score"], "validation_rows": search["rows"],
            "winner": search.get("winner") or (search["leaderboard"][0]["candidate"] if search["leaderboard"] else ""),
            "guard": search.get("guard"),
            "winner_spec": {k: search["spec"][k] for k in ("instruction", "verbalizers", "shots", "selection",
                                                          "example_style", "calibration")},
            "search_seconds": search["seconds"], "command_seconds": round(seconds, 1),
            "candidates": search["candidates"], "evaluated": search["evaluated"], "stopped": search["stopped"],
            "explanation": search["explanation"], "warnings": [w["code"] for w in search["warnings"]],
            "leaderboard": [{k: row[k] for k in ("candidate", "calibration", "score", "rows", "chosen")}
                            for row in search["leaderboard"]]}


def _guard_words(guard: dict | None) -> str:
    """The final paired test in a few words: what the best candidate led by, and whether it replaced the prompt."""
    if not guard:
        return ""
    verdict = f"kept {guard['reference']}" if guard["kept"] else f"replaced {guard['reference']}"
    return (f" ({verdict}: best other {guard['candidate_score']:.3f} v {guard['reference_score']:.3f}, "
            f"p = {guard['p_value']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="sst2,ag_news,trec,sms_spam")
    parser.add_argument("--budget-seconds", type=float, default=120.0)
    parser.add_argument("--max-candidates", type=int, default=None,
                        help="Fix how many prompts are tried (the same search whatever the machine's load).")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--train-rows", type=int, default=500)
    parser.add_argument("--test-rows", type=int, default=200)
    parser.add_argument("--json", dest="json_path", default=None, help="Also write the results to this file.")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.sets.split(","):
            result = check(name, Path(work), args.budget_seconds, args.model, args.train_rows, args.test_rows,
                           args.max_candidates)
            results.append(result)
            print(json.dumps(result), flush=True)
    print("\n| data | metric | default 4-shot (acc / macro-F1) | searched (acc / macro-F1) | beats default | "
          "validation score (rows) | winner | search s | candidates tried / planned |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        d, s = r["default_4shot"], r["searched"]
        print(f"| {r['set']} | {r['metric']} | {d['accuracy']:.3f} / {d['macro_f1']:.3f} | "
              f"{s['accuracy']:.3f} / {s['macro_f1']:.3f} | {r['beats_default']} | "
              f"{r['validation_score']:.3f} ({r['validation_rows']}) | {r['winner']}; calibration "
              f"{r['winner_spec']['calibration']}{_guard_words(r['guard'])} | {r['search_seconds']:.0f} | "
              f"{r['evaluated']} / {r['candidates']} |")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
