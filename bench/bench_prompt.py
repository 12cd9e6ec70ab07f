"""Prompt scoring speed and accuracy: PvF Studio's harness against a naive generate-and-parse loop.

    .venv/bin/python bench/bench_prompt.py                       # 200 SST-2 test rows, 4 examples
    .venv/bin/python bench/bench_prompt.py --baseline-rows 50    # a quicker look (baseline on 50 rows)

Both sides use the same model, the same 4 examples from sst2_train.csv and the same chat messages. The
baseline is what a newcomer would write: a transformers ``pipeline("text-generation", model=<folder>)`` called
row by row, generating the answer greedily and parsing the first label word out of it (an answer without one
counts as wrong). It loads the model in its default dtype (the folder's config: float32 for the bundled
model). A second, stricter baseline runs the same pipeline on our bfloat16 copy of the model, so the ratio
that comes from the dtype alone can be told apart from the one that comes from scoring instead of
generating. Ours is ``pvf_core.evaluate``: labels scored by log-likelihood, the shared prefix computed
once, rows batched, batch calibration, bf16 where the CPU supports it (else float32).

Scoring FLOP/s is counted as 2 × parameters × tokens / s over the tokens actually run (each row's own tokens
plus the answer tokens; the shared prefix once), as a fraction of the machine's matmul peak in the same dtype,
measured in the same run (2048² matmuls, median of 7, before and after each run of ours).

The machine is shared and its load moves, so the two sides alternate in rounds (ours on all rows, then the
baseline on every 4th row, ...) and the ratios are medians over the rounds. Results are also saved as JSON
under bench/results/.
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
    p.add_argument("--baseline-rows", type=int, default=200, help="first N of those for the (slow) baselines")
    p.add_argument("--baselines", default="default,same-dtype",
                   help="'default' (the pipeline in the model's own dtype) and/or 'same-dtype' (ours)")
    p.add_argument("--shots", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=5, help="baseline: tokens generated per row")
    p.add_argument("--rounds", type=int, default=4, help="alternate ours and the baseline this many times")
    p.add_argument("--model", default="bundled")
    p.add_argument("--results-dir", default=str(ROOT / "bench" / "results"), help="where the JSON result goes")
    return p.parse_args()


def matmul_peak(dtype, size: int = 2048, repeats: int = 7) -> float:
    """FLOP/s of a square matmul in ``dtype``: the median of a few runs (the machine is shared)."""
    import statistics

    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times)


def scoring_peak() -> tuple[str, float]:
    """(dtype name, FLOP/s): the matmul peak in the dtype the harness scores in (float32 on a CPU). A CPU
    without native bf16 runs bf16 matmuls hundreds of times slower, so a bf16 peak would mean nothing there."""
    from pvf_core.models import scoring_dtype

    dtype = scoring_dtype()
    return str(dtype).replace("torch.", ""), matmul_peak(dtype)


def parse_label(answer: str, labels: list[str]) -> str | None:
    """The label word that appears first in a generated answer, if any."""
    lowered = answer.lower()
    found = [(lowered.find(label.lower()), label) for label in labels if label.lower() in lowered]
    return min(found)[1] if found else None


def run_baseline(generator, spec, texts: list[str], examples, max_new_tokens: int) -> dict:
    from pvf_core.prompting import build_messages

    predictions, started = [], time.perf_counter()
    for text in texts:
        out = generator(build_messages(spec, text, examples), max_new_tokens=max_new_tokens, do_sample=False)
        predictions.append(parse_label(out[0]["generated_text"][-1]["content"], spec.labels))
    return {"seconds": time.perf_counter() - started, "predictions": predictions}


def run_ours(loaded, spec, test, train) -> dict:
    """One harness run between two peak measurements: rows/s and scoring FLOP/s as a fraction of peak."""
    from pvf_core.evaluate import Arm, evaluate

    peak_before = matmul_peak(loaded.dtype)
    result = evaluate(Arm(spec.name(), spec), test, task="classification", train=train, loaded=loaded)
    peak = (peak_before + matmul_peak(loaded.dtype)) / 2
    # Tokens actually run: each row's own tokens + the answer tokens fed after it, and the prefix once.
    tokens = result.n_test * result.computed_tokens_per_row
    flops = 2 * loaded.n_params * tokens / (sum(result.latencies_ms) / 1000)
    return {"result": result, "rate": 1000 / result.ms_per_example, "flops": flops, "peak": peak}


def make_baselines(names: list[str], loaded) -> dict:
    """name -> (pipeline, dtype name)."""
    from transformers import pipeline

    made = {}
    for name in names:
        if name == "default":
            generator = pipeline("text-generation", model=str(loaded.path))  # what a newcomer writes
        elif name == "same-dtype":
            generator = pipeline("text-generation", model=loaded.model, tokenizer=loaded.tokenizer)
        else:
            raise SystemExit(f"unknown baseline '{name}'")
        made[name] = (generator, str(generator.model.dtype).replace("torch.", ""))
    return made


def main() -> None:
    import statistics

    import pandas as pd
    import torch

    from pvf_core.models import load_model
    from pvf_core.prompting import PromptSpec, examples_for, select_examples

    args = parse()
    train = pd.read_csv(args.train, keep_default_na=False)
    test = pd.read_csv(args.test, keep_default_na=False).head(args.rows)
    loaded = load_model(args.model)
    labels = sorted(set(train["label"]))
    spec = PromptSpec(labels=labels, instruction=INSTRUCTION, shots=args.shots, selection="balanced")
    examples = examples_for(train, select_examples(spec, train, list(test["text"]))[0])
    baselines = make_baselines(args.baselines.split(","), loaded)
    print(f"model {loaded.name}, {loaded.n_params / 1e6:.1f}M parameters, ours in "
          f"{str(loaded.dtype).replace('torch.', '')}, baselines in "
          f"{', '.join(f'{n}: {d}' for n, (_, d) in baselines.items())}; {torch.get_num_threads()} threads; "
          f"{len(test)} test rows, {args.shots} examples", flush=True)

    # The machine is shared and its load changes: alternate the sides in rounds and compare each round's
    # rates, so all see the same conditions.
    base_texts = list(test["text"])[:args.baseline_rows]
    chunks = [base_texts[i::args.rounds] for i in range(args.rounds)]
    rounds, base_predictions = [], {name: {} for name in baselines}
    for k, chunk in enumerate(chunks):
        ours = run_ours(loaded, spec, test, train)
        record = {"ours_rows_per_second": ours["rate"], "flops_fraction": ours["flops"] / ours["peak"],
                  "scoring_flops_per_second": ours["flops"], "peak_flops_per_second": ours["peak"],
                  "result": ours["result"]}
        line = f"round {k + 1}/{args.rounds}: ours {ours['rate']:.2f} rows/s at {record['flops_fraction']:.0%} of peak"
        for name, (generator, dtype) in baselines.items():
            baseline = run_baseline(generator, spec, chunk, examples, args.max_new_tokens)
            base_predictions[name].update(zip(range(k, len(base_texts), args.rounds), baseline["predictions"]))
            rate = len(chunk) / baseline["seconds"]
            record[f"{name}_rows_per_second"] = rate
            line += f"; {name} baseline ({dtype}) {rate:.3f} rows/s, ratio {ours['rate'] / rate:.1f}x"
        rounds.append(record)
        print(line + f" ({len(chunk)} rows)", flush=True)

    ours = rounds[0]["result"]
    truth = list(test["label"])[:len(base_texts)]
    median = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
    ours_on_baseline_rows = _accuracy(ours.predictions[:len(truth)], truth)
    result = {
        "model": loaded.name, "dtype": str(loaded.dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
        "rows": ours.n_test, "baseline_rows": len(base_texts), "shots": args.shots, "rounds": args.rounds,
        "ours": {"accuracy": ours.metrics["accuracy"], "accuracy_uncalibrated": ours.metrics["raw"]["accuracy"],
                 "accuracy_on_baseline_rows": ours_on_baseline_rows,
                 "ms_per_row": 1000 / median("ours_rows_per_second"),
                 "rows_per_second": median("ours_rows_per_second"),
                 "prompt_tokens_per_row": ours.prompt_tokens_per_row,
                 "computed_tokens_per_row": ours.computed_tokens_per_row,
                 "scoring_flops_per_second": median("scoring_flops_per_second"), "peak_rss_mb": ours.peak_rss_mb},
        "baselines": {}, "ratios": {"flops_fraction_of_peak": median("flops_fraction")},
        "matmul_peak_flops_per_second": median("peak_flops_per_second"),
        "per_round": [{k: v for k, v in r.items() if k != "result"} for r in rounds],
    }
    for name, (_, dtype) in baselines.items():
        predicted = [base_predictions[name][i] for i in range(len(base_texts))]
        result["baselines"][name] = {
            "dtype": dtype, "accuracy": _accuracy(predicted, truth),
            "unparsed_share": sum(p is None for p in predicted) / len(truth),
            "ms_per_row": 1000 / median(f"{name}_rows_per_second"), "rows_per_second": median(f"{name}_rows_per_second")}
        result["ratios"][f"throughput_vs_{name}"] = statistics.median(
            r["ours_rows_per_second"] / r[f"{name}_rows_per_second"] for r in rounds)
        result["ratios"][f"accuracy_difference_vs_{name}"] = ours_on_baseline_rows - _accuracy(predicted, truth)
    print_table(result)
    folder = Path(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / time.strftime("bench_prompt-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(result, indent=2))
    print(f"saved {path}")


def _accuracy(predictions: list, truth: list) -> float:
    return sum(p == t for p, t in zip(predictions, truth)) / len(truth)


def print_table(r: dict) -> None:
    o, q = r["ours"], r["ratios"]
    names = list(r["baselines"])
    print(f"\n{'':28}{'ours':>12}" + "".join(f"{n + ' baseline':>22}" for n in names))
    print(f"{'dtype':28}{r['dtype']:>12}" + "".join(f"{r['baselines'][n]['dtype']:>22}" for n in names))
    for label, key, form in (("accuracy (same rows)", "accuracy", ".3f"), ("ms per row", "ms_per_row", ".1f"),
                             ("rows per second", "rows_per_second", ".2f")):
        mine = o["accuracy_on_baseline_rows"] if key == "accuracy" else o[key]
        print(f"{label:28}{mine:>12{form}}" + "".join(f"{r['baselines'][n][key]:>22{form}}" for n in names))
    print(f"ours on all {r['rows']} rows: accuracy {o['accuracy']:.3f} calibrated, {o['accuracy_uncalibrated']:.3f} "
          f"uncalibrated")
    for n in names:
        print(f"vs the {n} baseline: throughput {q[f'throughput_vs_{n}']:.1f}x (median of {r['rounds']} rounds; "
              f"goal >= 20x), accuracy {q[f'accuracy_difference_vs_{n}']:+.3f}; its answers without a label: "
              f"{r['baselines'][n]['unparsed_share']:.0%}")
    peak = r["matmul_peak_flops_per_second"]
    print(f"scoring: {o['scoring_flops_per_second'] / 1e9:.0f} GFLOP/s = {q['flops_fraction_of_peak']:.0%} of the "
          f"{r['dtype']} matmul peak measured now ({peak / 1e9:.0f} GFLOP/s; goal >= 50%); "
          f"{o['computed_tokens_per_row']:.1f} tokens run per row of {o['prompt_tokens_per_row']:.0f} in the prompt")


if __name__ == "__main__":
    main()
