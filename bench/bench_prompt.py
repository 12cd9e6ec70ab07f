"""Prompt scoring speed and accuracy: PvF Studio's harness against a naive generate-and-parse loop.

    .venv/bin/python bench/bench_prompt.py                       # 200 SST-2 test rows, 4 examples
    .venv/bin/python bench/bench_prompt.py --baseline-rows 50    # a quicker look (baseline on 50 rows)

Both sides use the same model (bf16 where the CPU supports it, else float32), the same 4 examples from
sst2_train.csv and the same chat messages. The baseline is what a newcomer would write: a transformers
``pipeline("text-generation")`` called row by row, generating the answer greedily and parsing the first
label word out of it (an answer without one counts as wrong). Ours is ``pvf_core.evaluate``: labels scored
by log-likelihood, the shared prefix computed once, rows batched, batch calibration.

Scoring FLOP/s is counted as 2 × parameters × tokens / s over the tokens actually run (each row's own tokens
plus the answer tokens; the shared prefix once), as a fraction of the machine's matmul peak in the same dtype,
measured in the same run (2048² matmuls, before and after). The machine is shared: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATASETS = ROOT.parent / "shared" / "datasets"
INSTRUCTION = "Decide whether the sentiment of the movie review is positive or negative."


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", default=str(DATASETS / "sst2_train.csv"))
    p.add_argument("--test", default=str(DATASETS / "sst2_test.csv"))
    p.add_argument("--rows", type=int, default=200, help="first N test rows")
    p.add_argument("--baseline-rows", type=int, default=200, help="first N of those for the (slow) baseline")
    p.add_argument("--shots", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=5, help="baseline: tokens generated per row")
    p.add_argument("--model", default="bundled")
    return p.parse_args()


def matmul_peak(dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a square matmul in ``dtype``: the best of a few runs."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def parse_label(answer: str, labels: list[str]) -> str | None:
    """The label word that appears first in a generated answer, if any."""
    lowered = answer.lower()
    found = [(lowered.find(label.lower()), label) for label in labels if label.lower() in lowered]
    return min(found)[1] if found else None


def run_baseline(loaded, spec, texts: list[str], examples, max_new_tokens: int) -> dict:
    from transformers import pipeline

    from pvf_core.prompting import build_messages

    generator = pipeline("text-generation", model=loaded.model, tokenizer=loaded.tokenizer)
    predictions, started = [], time.perf_counter()
    for text in texts:
        out = generator(build_messages(spec, text, examples), max_new_tokens=max_new_tokens, do_sample=False)
        predictions.append(parse_label(out[0]["generated_text"][-1]["content"], spec.labels))
    return {"seconds": time.perf_counter() - started, "predictions": predictions}


def main() -> None:
    import pandas as pd
    import torch

    from pvf_core.evaluate import Arm, evaluate
    from pvf_core.models import load_model
    from pvf_core.prompting import PromptSpec, examples_for, select_examples

    args = parse()
    train = pd.read_csv(args.train, keep_default_na=False)
    test = pd.read_csv(args.test, keep_default_na=False).head(args.rows)
    loaded = load_model(args.model)
    dtype = loaded.dtype
    labels = sorted(set(train["label"]))
    spec = PromptSpec(labels=labels, instruction=INSTRUCTION, shots=args.shots, selection="balanced")
    examples = examples_for(train, select_examples(spec, train, list(test["text"]))[0])
    print(f"model {loaded.name}, {loaded.n_params / 1e6:.1f}M parameters, {str(dtype).replace('torch.', '')}, "
          f"{torch.get_num_threads()} threads; {len(test)} test rows, {args.shots} examples", flush=True)

    peak_before = matmul_peak(dtype)
    ours = evaluate(Arm(spec.name(), spec), test, task="classification", train=train, loaded=loaded)
    peak_after = matmul_peak(dtype)
    peak = (peak_before + peak_after) / 2

    # Tokens actually run: each row's own tokens + the answer tokens fed after it, and the prefix once.
    tokens = ours.n_test * ours.computed_tokens_per_row
    scoring_seconds = sum(ours.latencies_ms) / 1000
    flops = 2 * loaded.n_params * tokens / scoring_seconds

    base_texts = list(test["text"])[:args.baseline_rows]
    print(f"baseline: pipeline('text-generation') row by row on {len(base_texts)} rows ...", flush=True)
    baseline = run_baseline(loaded, spec, base_texts, examples, args.max_new_tokens)
    truth = list(test["label"])[:len(base_texts)]
    base_accuracy = sum(p == t for p, t in zip(baseline["predictions"], truth)) / len(truth)
    unparsed = sum(p is None for p in baseline["predictions"]) / len(truth)
    ours_same_rows = sum(p == t for p, t in zip(ours.predictions, truth)) / len(truth)
    ours_rate = ours.n_test / (ours.ms_per_example * ours.n_test / 1000)
    base_rate = len(base_texts) / baseline["seconds"]

    result = {
        "model": loaded.name, "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
        "rows": ours.n_test, "baseline_rows": len(base_texts), "shots": args.shots,
        "ours": {"accuracy": ours.metrics["accuracy"], "accuracy_uncalibrated": ours.metrics["raw"]["accuracy"],
                 "accuracy_on_baseline_rows": ours_same_rows, "ms_per_row": ours.ms_per_example,
                 "rows_per_second": ours_rate, "prompt_tokens_per_row": ours.prompt_tokens_per_row,
                 "computed_tokens_per_row": ours.computed_tokens_per_row,
                 "scoring_flops_per_second": flops, "peak_rss_mb": ours.peak_rss_mb},
        "baseline": {"accuracy": base_accuracy, "unparsed_share": unparsed,
                     "ms_per_row": 1000 / base_rate, "rows_per_second": base_rate},
        "matmul_peak_flops_per_second": {"before": peak_before, "after": peak_after, "mean": peak},
        "ratios": {"throughput": ours_rate / base_rate, "accuracy_difference": ours_same_rows - base_accuracy,
                   "flops_fraction_of_peak": flops / peak},
    }
    print_table(result)
    folder = ROOT / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / time.strftime("bench_prompt-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(result, indent=2))
    print(f"saved {path.relative_to(ROOT)}")


def print_table(r: dict) -> None:
    o, b, q = r["ours"], r["baseline"], r["ratios"]
    print(f"\n{'':28}{'ours':>12}{'baseline':>12}")
    print(f"{'accuracy (same rows)':28}{o['accuracy_on_baseline_rows']:>12.3f}{b['accuracy']:>12.3f}")
    print(f"{'ms per row':28}{o['ms_per_row']:>12.1f}{b['ms_per_row']:>12.1f}")
    print(f"{'rows per second':28}{o['rows_per_second']:>12.2f}{b['rows_per_second']:>12.2f}")
    print(f"ours on all {r['rows']} rows: accuracy {o['accuracy']:.3f} calibrated, {o['accuracy_uncalibrated']:.3f} "
          f"uncalibrated; baseline answers without a label: {b['unparsed_share']:.0%}")
    print(f"throughput ratio: {q['throughput']:.1f}x   accuracy difference: {q['accuracy_difference']:+.3f}")
    peak = r["matmul_peak_flops_per_second"]["mean"]
    print(f"scoring: {o['scoring_flops_per_second'] / 1e9:.0f} GFLOP/s = {q['flops_fraction_of_peak']:.0%} of the "
          f"{r['dtype']} matmul peak measured now ({peak / 1e9:.0f} GFLOP/s); "
          f"{o['computed_tokens_per_row']:.1f} tokens run per row of {o['prompt_tokens_per_row']:.0f} in the prompt")


if __name__ == "__main__":
    main()
