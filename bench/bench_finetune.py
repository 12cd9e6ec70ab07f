"""Fine-tuning speed, memory and accuracy: PvF Studio's loop against a plain Trainer + peft script.

    .venv/bin/python bench/bench_finetune.py                      # 500 SST-2 train rows, 200 test rows
    .venv/bin/python bench/bench_finetune.py --train-rows 128 --test-rows 64 --epochs 1   # a quick look

Both sides train the same LoRA (same model, rank, target modules, epochs, max length, batch size, learning
rate, seed) on the same rows rendered in the same prompt format, each in its own subprocess so that its peak
memory (ru_maxrss) is its own. The reference is what a newcomer would write: ``Trainer`` with default
settings, float32, every row padded to the max length. Both adapters are then scored by the same harness
(``pvf_core.evaluate``) on the same test rows. The machine's matmul peak is measured in the same run, just
before each side (the machine is shared, so the numbers move; the ratios are what to read).

Training FLOP/s is counted as 6 × parameters × tokens / s over the example tokens trained on (nanoGPT's
estimate_mfu), as a fraction of the matmul peak of the dtype training computes in (bf16 where the CPU has it natively, else fp32), measured here; the tokens actually computed are fewer
(the shared prompt prefix runs once per batch), which the "computed" line shows.

Threads: by default the reference uses torch's default (all cores) and ours picks its own count by timing
steps (see finetune.ThreadChooser). On a busy machine that choice alone is worth several times; to compare
the loops alone, run with ``--threads 1`` (or 2): both sides then use exactly that many.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATASETS = ROOT.parent / "shared" / "datasets"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", default=str(DATASETS / "sst2_train.csv"))
    p.add_argument("--test", default=str(DATASETS / "sst2_test.csv"))
    p.add_argument("--train-rows", type=int, default=500, help="first N rows of the train file (10%% validation)")
    p.add_argument("--test-rows", type=int, default=200)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0 = torch's default)")
    p.add_argument("--sides", default="reference,ours")
    p.add_argument("--concurrent", action="store_true",
                   help="train both sides at the same time (both see the same load on a shared machine)")
    p.add_argument("--model", default="bundled")
    p.add_argument("--instruction", default="")
    p.add_argument("--packed-max-tokens", type=int, default=None,
                   help="ours: pack batches up to this many tokens into one sequence (0 = never; default: "
                        "pvf_core.finetune.PACKED_MAX_TOKENS)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the results here")
    p.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: run one side in this process
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


# -- shared by both sides ---------------------------------------------------------------------------------

def load_rows(args: argparse.Namespace):
    from pvf_core.data import load_splits

    splits, _ = load_splits(args.train, args.test, max_train=args.train_rows, seed=0)
    splits.test = splits.test.head(args.test_rows).reset_index(drop=True)
    return splits


def prompt_for(splits, args):
    from pvf_core.finetune import default_prompt

    return default_prompt(splits, args.instruction)


def set_threads(args: argparse.Namespace) -> None:
    """--threads N: both sides use exactly N threads (ours then does not choose its own count)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["PVF_THREADS"] = str(args.threads)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak(threads: int) -> dict:
    """FLOP/s of a 2048² matmul in fp32 and bf16, best of 5, on the best thread count (1 or all: on a busy
    machine one thread can beat two), or on exactly ``threads``."""
    import torch

    from pvf_core.models import best_dtype

    counts = [threads] if threads else sorted({1, torch.get_num_threads()})
    out = {"fp32": 0.0, "bf16": 0.0}
    # a CPU without native bf16 takes minutes per bf16 matmul, and trains in fp32: its peak is the fp32 one
    native = best_dtype() == torch.bfloat16
    for count in counts:
        torch.set_num_threads(count)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))[:2 if native else 1]:
            a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
            a @ b
            for _ in range(5):
                t = time.perf_counter()
                a @ b
                out[name] = max(out[name], 2 * 2048 ** 3 / (time.perf_counter() - t))
    out["train"] = out["bf16" if native else "fp32"]  # the peak of the dtype training computes in
    out["train_dtype"] = "bf16" if native else "fp32"
    return out


# -- the reference: Trainer + peft, fp32, pad to max length, default settings ------------------------------

def side_reference(args: argparse.Namespace, out_dir: Path) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    from pvf_core.models import resolve
    from pvf_core.prompting import Renderer

    set_threads(args)
    splits = load_rows(args)
    spec = prompt_for(splits, args)
    path = resolve(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                             task_type="CAUSAL_LM"))
    renderer = Renderer(spec, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for text, label in zip(splits.train["text"], splits.train["label"]):
        answer = renderer.answer_ids(label)
        prompt = renderer.prompt_ids(text, max_tokens=args.max_length - len(answer))
        ids = prompt + answer
        n = args.max_length - len(ids)
        rows.append({"input_ids": ids + [pad] * n, "attention_mask": [1] * len(ids) + [0] * n,
                     "labels": [-100] * len(prompt) + answer + [-100] * n})
    training_args = TrainingArguments(output_dir=str(out_dir / "trainer"), per_device_train_batch_size=args.batch_size,
                                      num_train_epochs=args.epochs, learning_rate=args.learning_rate, seed=0,
                                      report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                                      disable_tqdm=True)
    trainer = Trainer(model=model, args=training_args, train_dataset=rows, data_collator=default_data_collator)
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    adapter = out_dir / "reference-adapter"
    model.save_pretrained(str(adapter))
    examples = trainer.state.global_step * args.batch_size
    examples = min(examples, round(len(rows) * args.epochs))
    tokens = sum(sum(r["attention_mask"]) for r in rows) * args.epochs
    return {"side": "reference", "train_seconds": seconds, "cpu_seconds": cpu_seconds, "examples": examples,
            "examples_per_second": examples / seconds, "data_tokens": tokens,
            "computed_tokens": len(rows) * args.max_length * args.epochs,
            "n_params": sum(p.numel() for p in model.parameters()), "adapter": str(adapter),
            "peak_rss_mb": peak_rss_mb(), "dtype": "float32", "threads": torch.get_num_threads()}


# -- ours: pvf_core.finetune.train_lora ---------------------------------------------------------------------

def side_ours(args: argparse.Namespace, out_dir: Path) -> dict:
    import torch

    from pvf_core import finetune
    from pvf_core.finetune import LoraSettings, train_lora

    set_threads(args)
    if args.packed_max_tokens is not None:
        finetune.PACKED_MAX_TOKENS = args.packed_max_tokens
    splits = load_rows(args)
    settings = LoraSettings(epochs=args.epochs, rank=args.rank, alpha=2 * args.rank, learning_rate=args.learning_rate,
                            max_length=args.max_length, batch_size=args.batch_size, seed=0)
    adapter = out_dir / "ours-adapter"
    cpu_started = time.process_time()
    result = train_lora(settings, splits, args.model, adapter, prompt=prompt_for(splits, args))
    cpu_seconds = time.process_time() - cpu_started  # includes loading the model (the reference's does not)
    return {"side": "ours", "train_seconds": result.train_seconds, "cpu_seconds": cpu_seconds,
            "validation_seconds": result.validation_seconds, "examples": result.train_examples,
            "examples_per_second": result.examples_per_second, "data_tokens": result.data_tokens,
            "computed_tokens": result.computed_tokens, "n_params": result.n_params, "adapter": str(adapter),
            "peak_rss_mb": peak_rss_mb(), "dtype": result.dtype, "threads": result.threads or torch.get_num_threads(),
            "non_embedding_params": result.n_params - _embedding_params(args),
            "steps": result.steps, "best_step": result.best_step, "stopped_early": result.stopped_early,
            "best_val_loss": result.best_val_loss, "best_val_accuracy": result.best_val_accuracy}


def _embedding_params(args: argparse.Namespace) -> int:
    """Parameters of the token embedding (the output layer shares it and runs only at answer tokens)."""
    from pvf_core.models import resolve

    config = json.loads((Path(str(resolve(args.model))) / "config.json").read_text())
    return int(config["vocab_size"]) * int(config["hidden_size"])


def side_estimate(args: argparse.Namespace, out_dir: Path) -> dict:
    """What estimate() predicts for our side, to print next to what was measured."""
    from pvf_core.finetune import LoraSettings, estimate

    set_threads(args)
    splits = load_rows(args)
    settings = LoraSettings(epochs=args.epochs, rank=args.rank, alpha=2 * args.rank, learning_rate=args.learning_rate,
                            max_length=args.max_length, batch_size=args.batch_size, seed=0)
    return estimate(settings, splits, args.model, prompt=prompt_for(splits, args)).to_dict()


def side_score(args: argparse.Namespace, out_dir: Path) -> dict:
    """Score the untrained model and both adapters with the harness, in one process (same conditions)."""
    from pvf_core.evaluate import Arm, evaluate

    set_threads(args)
    splits = load_rows(args)
    spec = prompt_for(splits, args)
    scored = {}
    for name in ["untrained", *args.sides.split(",")]:
        adapter = None if name == "untrained" else str(out_dir / f"{name}-adapter")
        if adapter and not Path(adapter).is_dir():
            continue
        result = evaluate(Arm(name, spec, model=args.model, adapter=adapter), splits.test, task=splits.task,
                          labels=splits.labels)
        scored[name] = {"accuracy": result.metrics["accuracy"], "macro_f1": result.metrics["macro_f1"],
                        "raw_accuracy": result.metrics["raw"]["accuracy"], "ms_per_example": result.ms_per_example,
                        "calibration": result.calibration}
    return scored


# -- the driver ---------------------------------------------------------------------------------------------

def start_side(name: str, args: argparse.Namespace, out_dir: Path) -> subprocess.Popen:
    """One side in a fresh subprocess, so its ru_maxrss is its own."""
    command = [sys.executable, __file__, "--side", name, "--out", str(out_dir / f"{name}.json"), *sys.argv[1:]]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, env=env, cwd=str(ROOT))


def finish_side(name: str, process: subprocess.Popen, out_dir: Path) -> dict:
    if process.wait() != 0:
        raise SystemExit(f"the {name} side failed (exit code {process.returncode})")
    return json.loads((out_dir / f"{name}.json").read_text())


def run_side(name: str, args: argparse.Namespace, out_dir: Path) -> dict:
    return finish_side(name, start_side(name, args, out_dir), out_dir)


def main() -> None:
    args = parse()
    if args.side:
        out_dir = Path(args.out).parent
        work = {"reference": side_reference, "ours": side_ours, "score": side_score, "estimate": side_estimate,
                "peak": None}[args.side]
        data = matmul_peak(args.threads) if work is None else work(args, out_dir)
        Path(args.out).write_text(json.dumps(data))
        return
    out_dir = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    print(f"SST-2: first {args.train_rows} train rows (10% validation), {args.test_rows} test rows; "
          f"r={args.rank}, {args.epochs} epochs, max length {args.max_length}, batch {args.batch_size}, "
          f"lr {args.learning_rate}; work in {out_dir}", flush=True)
    sides, peaks = {}, {}
    predicted = run_side("estimate", args, out_dir) if "ours" in args.sides else None
    names = args.sides.split(",")
    if args.concurrent:
        peaks = {name: run_side("peak", args, out_dir) for name in names[:1]}
        peaks.update({name: peaks[names[0]] for name in names})
        print(f"machine now: {peaks[names[0]]['train_dtype']} {peaks[names[0]]['train'] / 1e9:.0f} GFLOP/s; training both "
              "sides at once...", flush=True)
        running = {name: start_side(name, args, out_dir) for name in names}
        sides = {name: finish_side(name, process, out_dir) for name, process in running.items()}
    for name in names if not args.concurrent else []:
        peaks[name] = run_side("peak", args, out_dir)
        bf16 = f"{peaks[name]['bf16'] / 1e9:.0f} GFLOP/s" if peaks[name]["bf16"] else "not native (not measured)"
        print(f"[{name}] machine now: fp32 {peaks[name]['fp32'] / 1e9:.0f} GFLOP/s, bf16 {bf16}; training...",
              flush=True)
        sides[name] = run_side(name, args, out_dir)
    for name in names:
        print(f"[{name}] {sides[name]['examples_per_second']:.2f} examples/s, peak {sides[name]['peak_rss_mb']:.0f} MB",
              flush=True)
    print("scoring both adapters with the harness...", flush=True)
    scores = run_side("score", args, out_dir)
    report(args, sides, peaks, scores, predicted)


def report(args: argparse.Namespace, sides: dict, peaks: dict, scores: dict, predicted: dict | None) -> None:
    lines = ["", f"{'':<11}{'examples/s':>11}{'train s':>9}{'peak MB':>9}{'accuracy':>10}{'raw acc':>9}"
                 f"{'FLOP/s % of peak':>18}"]
    results = {"config": vars(args), "sides": sides, "peaks": peaks, "scores": scores}
    for name, side in sides.items():
        peak = peaks[name]["bf16" if "bf16" in side["dtype"] else "fp32"]
        flops = 6 * side["n_params"] * side["data_tokens"] / side["train_seconds"]
        side["flops"], side["flops_fraction"] = flops, flops / peak
        side["computed_flops_fraction"] = 6 * side["n_params"] * side["computed_tokens"] / side["train_seconds"] / peak
        score = scores.get(name, {})
        lines.append(f"{name:<11}{side['examples_per_second']:>11.2f}{side['train_seconds']:>9.1f}"
                     f"{side['peak_rss_mb']:>9.0f}{score.get('accuracy', float('nan')):>10.3f}"
                     f"{score.get('raw_accuracy', float('nan')):>9.3f}{100 * side['flops_fraction']:>17.1f}%")
    if "untrained" in scores:
        lines.append(f"{'untrained':<11}{'':>38}{scores['untrained']['accuracy']:>10.3f}"
                     f"{scores['untrained']['raw_accuracy']:>9.3f}")
    if {"reference", "ours"} <= set(sides):
        ref, ours = sides["reference"], sides["ours"]
        speed = ours["examples_per_second"] / ref["examples_per_second"]
        memory = ours["peak_rss_mb"] / ref["peak_rss_mb"]
        delta = scores.get("ours", {}).get("accuracy", 0) - scores.get("reference", {}).get("accuracy", 0)
        results["ratios"] = {"speed": speed, "memory": memory, "accuracy_delta": delta}
        per_cpu = (ours["examples"] / ours["cpu_seconds"]) / (ref["examples"] / ref["cpu_seconds"])
        results["ratios"]["per_cpu_second"] = per_cpu
        lines += ["", f"speed ours/reference:  {speed:.2f}x   (goal >= 4x); examples per CPU-second: {per_cpu:.2f}x "
                      f"(less sensitive to a busy machine; ours includes loading the model); ours spent "
                      f"{ours.get('validation_seconds', 0):.0f} s of its {ours['train_seconds']:.0f} s on validation checks",
                  f"peak memory ours/reference: {memory:.2f}   (goal <= 1)",
                  f"accuracy ours - reference: {100 * delta:+.1f} points   (goal >= -1)",
                  f"ours, training FLOP/s (6·N·example tokens/s): {ours['flops'] / 1e9:.0f} GFLOP/s = "
                  f"{100 * ours['flops_fraction']:.0f}% of the {peaks['ours']['train_dtype']} matmul peak measured now "
                  f"({peaks['ours']['train'] / 1e9:.0f} GFLOP/s; goal >= 35%); counting only the tokens computed "
                  f"(prefix once per batch): {100 * ours['computed_flops_fraction']:.0f}%"]
        if ours.get("non_embedding_params"):
            executed = 4 * ours["non_embedding_params"] * ours["computed_tokens"] / ours["train_seconds"]
            results["executed_flops_fraction"] = executed / peaks["ours"]["train"]
            lines.append(f"ours, FLOP/s actually executed (≈ 4 × non-embedding parameters × computed tokens / s: "
                         f"frozen weights get no weight gradients, the output layer runs only at answer tokens): "
                         f"{executed / 1e9:.0f} GFLOP/s = {100 * executed / peaks['ours']['train']:.0f}% of that peak; "
                         f"threads used: {ours['threads']}")
    if predicted and "ours" in sides:
        results["estimate"] = predicted
        lines.append(f"estimate() before training said: {predicted['train_seconds']:.0f} s of training, peak "
                     f"{predicted['peak_mb']:.0f} MB; measured {sides['ours']['train_seconds']:.0f} s, "
                     f"{sides['ours']['peak_rss_mb']:.0f} MB")
    print("\n".join(lines))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
