"""Label scoring against the number of labels: the label trie against scoring every label in full.

    .venv/bin/python bench/bench_labels.py                     # 10, 50, 150, 500 labels, 16 rows each
    .venv/bin/python bench/bench_labels.py --sizes 10,150 --rows 8

Synthetic intent-routing label sets (``card_arrival``, ``transfer_pending``, ...: 25 topics × 20 actions,
drawn in a seeded order, so larger sets share first words as real intent names do) and short customer
messages. Each label set is scored on the same rows twice through ``pvf_core.scoring.score_labels``, model
loaded, prompts rendered by the harness's ``Renderer`` (the instruction lists at most
``prompting.LABEL_LIST_MAX_LABELS`` labels):
once with the answers fed as a trie (continuations that share first tokens fed once), once with every
label's tokens fed on its own. Both must give the same prediction on every row; the table prints ms per
row side by side and the time of each size against 10 labels (goal: 150 labels ≤ 4×). A third column
scores with pruning (``prune_bias``: only labels that can still win are scored in full; same argmax).
Every ratio is against the smallest size's trie, which is what the harness runs there (too few labels to
prune); the "harness" line takes the path the harness would take at each size (pruned from
``evaluate.PRUNE_FROM_LABELS`` labels, unless pruning computes more than ``PRUNE_PAYS_BELOW`` of the scores).

Throughput is also given as a share of the machine's matmul peak in the dtype the harness scores in (float32 on a CPU), measured in the same run (2048²
matmuls, median of 7): FLOPs counted as 2 × parameters × tokens run (each row's own tokens and the fed
answer tokens; the shared prefix once). Results are saved as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench_prompt import scoring_peak  # noqa: E402  (this folder is on sys.path when run as a script)

TOPICS = ["card", "transfer", "cash", "account", "loan", "pin", "fee", "refund", "top_up", "exchange_rate",
          "payment", "balance", "statement", "address", "phone", "password", "deposit", "wallet", "atm",
          "subscription", "insurance", "mortgage", "savings", "crypto", "beneficiary"]
ACTIONS = ["arrival", "lost", "declined", "pending", "limit", "charge", "cancel", "verify", "change", "request",
           "failed", "reversed", "delay", "blocked", "info", "status", "not_working", "wrong_amount", "duplicate",
           "activation"]
OPENERS = ["Hi, I have a problem:", "Hello,", "Quick question:", "Please help,", "Urgent:", "Good morning,"]
DETAILS = ["since yesterday", "for the second time", "and I don't know why", "after the app update",
           "while travelling abroad", "and nobody answers the phone"]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,50,150,500", help="label set sizes, comma-separated (at most 500)")
    p.add_argument("--rows", type=int, default=16, help="rows scored per label set")
    p.add_argument("--rounds", type=int, default=2,
                   help="repeat each measurement; the fastest is kept (a busy machine only slows runs down)")
    p.add_argument("--model", default="bundled")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: the harness's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=str(ROOT / "bench" / "results"), help="where the JSON result goes")
    return p.parse_args()


def label_set(n: int, seed: int) -> list[str]:
    """n intent names drawn in a seeded order from topics × actions."""
    import numpy as np

    every = [f"{t}_{a}" for t in TOPICS for a in ACTIONS]
    if n > len(every):
        raise SystemExit(f"at most {len(every)} labels")
    order = np.random.default_rng(seed).permutation(len(every))
    return [every[i] for i in order[:n]]


def messages(labels: list[str], rows: int, seed: int) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    texts = []
    for i in range(rows):
        topic, action = labels[int(rng.integers(len(labels)))].replace("_", " ").rsplit(" ", 1)
        texts.append(f"{OPENERS[i % len(OPENERS)]} my {topic} {action} {DETAILS[(i * 7) % len(DETAILS)]}.")
    return texts


def measure(loaded, labels: list[str], texts: list[str], rounds: int) -> dict:
    """Both scorings of one label set: ms per row, tokens run per row, predictions agree."""
    import numpy as np

    from pvf_core.prompting import PromptSpec, Renderer
    from pvf_core.scoring import _common_prefix_length, answer_trie, score_labels

    spec = PromptSpec(labels=labels, instruction="Route the customer's message to the team that handles it.")
    renderer = Renderer(spec, loaded.tokenizer)
    prompts = [renderer.prompt_ids(t) for t in texts]
    answers = [renderer.answer_ids(label) for label in labels]
    shared = _common_prefix_length(prompts)
    row_tokens = float(np.mean([len(p) - shared for p in prompts]))
    out: dict = {"labels": len(labels), "listed": spec.lists_labels(), "prefix_tokens": shared,
                 "row_tokens": round(row_tokens, 1)}
    scores = {}
    score_labels(loaded, prompts[:1], answers[:2])  # warm-up: first calls of a shape are slower
    for name, share in (("trie", True), ("full", False)):
        fed = answer_trie(answers, share=share).fed
        seconds = []
        for _ in range(rounds):
            started = time.perf_counter()
            scores[name] = score_labels(loaded, prompts, answers, share_prefixes=share)
            seconds.append(time.perf_counter() - started)
        ms = min(seconds) * 1000 / len(texts)
        out[name] = {"ms_per_row": round(ms, 1), "fed_tokens_per_row": fed,
                     "tokens_per_row": round(row_tokens + fed + shared / len(texts), 1)}
    bias = np.zeros(len(labels))  # raw scores; a calibration's log-bias prunes the same way
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        pruned = score_labels(loaded, prompts, answers, prune_bias=bias)
        seconds.append(time.perf_counter() - started)
    out["pruned"] = {"ms_per_row": round(min(seconds) * 1000 / len(texts), 1),
                     "labels_scored_share": round(float(np.isfinite(pruned).mean()), 3),
                     "same_predictions": bool((pruned.argmax(1) == scores["full"].argmax(1)).all())}
    pruned_differ = pruned.argmax(1) != scores["full"].argmax(1)
    difference = np.abs(scores["trie"] - scores["full"])
    agree = scores["trie"].argmax(1) == scores["full"].argmax(1)
    top2 = np.sort(scores["full"], axis=1)[:, -2:]
    # in bf16 the two layouts round differently: a row may only flip where its top two labels are that close
    out["same_predictions"] = bool(agree.all())  # trie vs full
    out["rows_differing"] = int((~agree).sum())
    out["rows_differing_beyond_rounding"] = int((~agree & (top2[:, 1] - top2[:, 0] > 2 * difference.max(1))).sum())
    out["max_score_difference"] = float(difference.max())
    out["pruned"]["rows_differing"] = int(pruned_differ.sum())
    out["pruned"]["rows_differing_beyond_rounding"] = int(
        (pruned_differ & (top2[:, 1] - top2[:, 0] > 2 * difference.max(1))).sum())
    return out


def main() -> None:
    args = parse()
    import torch

    from pvf_core.models import load_model

    sizes = [int(s) for s in args.sizes.split(",")]
    loaded = load_model(args.model, dtype=getattr(torch, args.dtype) if args.dtype else None)
    params = sum(p.numel() for p in loaded.model.parameters())
    dtype = str(loaded.dtype).replace("torch.", "")
    print(f"model {loaded.name} ({params / 1e6:.1f}M parameters, {dtype}), {args.rows} rows per label set, "
          f"{torch.get_num_threads()} threads", flush=True)
    dtype_name, first_peak = scoring_peak()
    peaks = [first_peak]
    results = []
    for n in sizes:
        labels = label_set(n, args.seed)
        results.append(measure(loaded, labels, messages(labels, args.rows, args.seed), args.rounds))
        print(f"  {n} labels done: trie {results[-1]['trie']['ms_per_row']} ms/row, full "
              f"{results[-1]['full']['ms_per_row']} ms/row, pruned {results[-1]['pruned']['ms_per_row']} ms/row",
              flush=True)
    peaks.append(scoring_peak()[1])
    peak = statistics.mean(peaks)
    base = results[0]["trie"]["ms_per_row"]
    for r in results:
        for side in ("trie", "full"):
            flops = 2 * params * r[side]["tokens_per_row"] / (r[side]["ms_per_row"] / 1000)
            r[side]["share_of_peak"] = flops / peak
        r["full_over_trie"] = round(r["full"]["ms_per_row"] / r["trie"]["ms_per_row"], 2)
        r["trie_vs_smallest"] = round(r["trie"]["ms_per_row"] / base, 2)
        r["harness"] = harness_path(r)
        # against what the harness runs at the smallest size (the trie: too few labels to prune), never the
        # smallest size's own pruned time, which pruning only slows down there
        r["pruned_vs_smallest"] = round(r["pruned"]["ms_per_row"] / base, 2)
        r["harness_vs_smallest"] = round(r[r["harness"]]["ms_per_row"] / base, 2)
    print_table(results, sizes[0], peak, dtype_name)
    result = {"model": loaded.name, "dtype": dtype, "threads": torch.get_num_threads(), "rows": args.rows,
              "rounds": args.rounds, "matmul_peak_dtype": dtype_name, "matmul_peak_gflops": round(peak / 1e9, 1), "sizes": results}
    folder = Path(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / time.strftime("bench_labels-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(result, indent=2))
    print(f"saved {path}")


def harness_path(r: dict) -> str:
    """"pruned" or "trie": what the harness runs for this many labels (``evaluate.PRUNE_FROM_LABELS``), and for
    rows this unsure (``evaluate.PRUNE_PAYS_BELOW``, judged here on the rows themselves)."""
    from pvf_core.evaluate import PRUNE_FROM_LABELS, PRUNE_PAYS_BELOW

    prunes = r["labels"] >= PRUNE_FROM_LABELS and r["pruned"]["labels_scored_share"] <= PRUNE_PAYS_BELOW
    return "pruned" if prunes else "trie"


def len_rows(r: dict) -> str:
    """'all' when every row's prediction agrees, else how many differ (and how many beyond rounding)."""
    if r["same_predictions"]:
        return "all"
    return f"{r['rows_differing']} differ ({r['rows_differing_beyond_rounding']} beyond rounding)"


def print_table(results: list[dict], smallest: int, peak: float, dtype_name: str) -> None:
    print()
    print(f"{'labels':>7} {'listed':>7} {'fed trie':>9} {'fed full':>9} {'trie ms/row':>12} {'full ms/row':>12} "
          f"{'full/trie':>10} {'trie vs ' + str(smallest):>11} {'same preds':>11} {'trie % peak':>12} "
          f"{'pruned ms/row':>14} {'scored':>7} {'pruned vs ' + str(smallest):>13} {'same':>5}")
    for r in results:
        print(f"{r['labels']:>7} {'yes' if r['listed'] else 'no':>7} {r['trie']['fed_tokens_per_row']:>9} "
              f"{r['full']['fed_tokens_per_row']:>9} {r['trie']['ms_per_row']:>12.1f} {r['full']['ms_per_row']:>12.1f} "
              f"{r['full_over_trie']:>9.2f}x {r['trie_vs_smallest']:>10.2f}x {len_rows(r):>11} "
              f"{r['trie']['share_of_peak']:>11.1%} {r['pruned']['ms_per_row']:>14.1f} "
              f"{r['pruned']['labels_scored_share']:>6.0%} {r['pruned_vs_smallest']:>12.2f}x "
              f"{len_rows(r['pruned']):>5}")
    print(f"{dtype_name} matmul peak (the dtype the harness scores in) measured in this run: {peak / 1e9:.0f} GFLOP/s")
    print(f"Ratios are against the {smallest}-label trie, which is what the harness runs there.")
    for r in results[1:]:
        for side in ("trie", "pruned", "harness"):
            ratio = r[f"{side}_vs_smallest"]
            goal = " (goal <= 4x: " + ("meets it)" if ratio <= 4 else "misses it)") if r["labels"] == 150 else ""
            how = f" ({r['harness']})" if side == "harness" else ""
            print(f"{side}{how}: {r['labels']} labels take {ratio:.2f}x the time per row of {smallest} labels{goal}")


if __name__ == "__main__":
    main()
