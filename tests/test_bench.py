"""The benchmark scripts still run end to end (tiny model, a handful of rows): they print their ratios."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, dataset_path


def bench(script: str, *args: str, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def files() -> list[str]:
    return ["--train", str(dataset_path("sst2_train.csv")), "--test", str(dataset_path("sst2_test.csv"))]


def test_bench_prompt_compares_both_baselines(tiny_model_dir, tmp_path):
    out = bench("bench_prompt.py", *files(), "--model", str(tiny_model_dir), "--rows", "8", "--baseline-rows", "4",
                "--rounds", "2", "--shots", "1", "--max-new-tokens", "2", "--results-dir", str(tmp_path))
    assert "vs the default baseline: throughput" in out and "vs the same-dtype baseline: throughput" in out
    [saved] = tmp_path.glob("bench_prompt-*.json")
    result = json.loads(saved.read_text())
    assert result["rows"] == 8 and result["baseline_rows"] == 4
    assert set(result["baselines"]) == {"default", "same-dtype"}
    assert result["ratios"]["throughput_vs_default"] > 0 and 0 < result["ratios"]["flops_fraction_of_peak"]


def test_bench_finetune_prints_the_ratios(tiny_model_dir, tmp_path):
    out = bench("bench_finetune.py", *files(), "--model", str(tiny_model_dir), "--train-rows", "24", "--test-rows",
                "8", "--epochs", "1", "--max-length", "384", "--json", str(tmp_path / "finetune.json"))
    assert "speed ours/reference:" in out and "peak memory ours/reference:" in out
    result = json.loads((tmp_path / "finetune.json").read_text())
    assert {"speed", "memory", "accuracy_delta"} <= set(result["ratios"])
    assert result["sides"]["ours"]["examples"] > 0 and result["sides"]["reference"]["examples"] > 0


def test_bench_compare_prints_the_ratio(tiny_model_dir, tmp_path):
    out = bench("bench_compare.py", *files(), "--model", str(tiny_model_dir), "--train-rows", "24", "--test-rows",
                "8", "--epochs", "1", "--results-dir", str(tmp_path))
    assert "ratio ours / baseline:" in out
    [saved] = tmp_path.glob("bench_compare-*.json")
    result = json.loads(saved.read_text())
    assert result["ours_seconds"] > 0 and result["baseline_seconds"] > 0 and result["recommendation"]


def test_bench_images_prints_the_ratios(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from images_support import labelled_files, make_zip
    from pvf_core.images.models import make_tiny_backbone

    images = make_zip(tmp_path / "images.zip", labelled_files(10, ("red", "blue", "green")))
    backbone = make_tiny_backbone(tmp_path / "backbone", image_size=32)
    out = bench("bench_images.py", "--images", str(images), "--model", str(backbone), "--rows", "12",
                "--epochs", "2", "--score-rows", "4", "--json", str(tmp_path / "images.json"))
    assert "ratio ours/baseline" in out and "at batch 1" in out and "at batch 32" in out
    result = json.loads((tmp_path / "images.json").read_text())
    assert result["train_images"] == 12 and result["finetune_images_per_second"]["ratio"] > 0
    assert set(result["scoring_images_per_second"]) == {"batch_1", "batch_32"}


def test_bench_labels_prints_trie_and_full_side_by_side(tiny_model_dir, tmp_path):
    out = bench("bench_labels.py", "--model", str(tiny_model_dir), "--sizes", "10,40", "--rows", "2", "--rounds", "1", "--dtype", "float32",
                "--results-dir", str(tmp_path))
    assert "trie ms/row" in out and "full ms/row" in out and "matmul peak" in out
    assert "trie: 40 labels take" in out and "pruned: 40 labels take" in out and "harness (" in out
    [saved] = tmp_path.glob("bench_labels-*.json")
    result = json.loads(saved.read_text())
    assert [r["labels"] for r in result["sizes"]] == [10, 40]
    for r in result["sizes"]:
        assert r["same_predictions"] and r["max_score_difference"] < 1e-3
        assert r["trie"]["fed_tokens_per_row"] <= r["full"]["fed_tokens_per_row"]
        assert r["trie"]["share_of_peak"] > 0 and r["pruned"]["same_predictions"]
    assert result["matmul_peak_gflops"] > 0
    smallest, larger = result["sizes"]
    # every ratio is against what the harness runs at 10 labels (the trie), never against 10 labels pruned
    assert larger["pruned_vs_smallest"] == round(larger["pruned"]["ms_per_row"] / smallest["trie"]["ms_per_row"], 2)
    assert smallest["harness"] == "trie" and larger["harness"] in ("trie", "pruned")


def test_bench_gguf_tokenizer_compares_ours_with_the_libraries():
    out = bench("bench_gguf_tokenizer.py", "--rounds", "1")
    assert "| transformers |" in out and "| gguf |" in out and "the same" in out
    assert "DIFFERENT" not in out
