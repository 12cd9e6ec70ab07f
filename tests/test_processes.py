"""Training over several processes through accelerate: the same global batch gives the same adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, toy_reviews
from pvf_core.data import load_splits
from pvf_core.finetune import GlobalBatches, LoraSettings, train_lora

SCRIPT = """
import json, sys
from pvf_core.data import load_splits
from pvf_core.finetune import LoraSettings, train_lora
train, model, out, batch = sys.argv[1:5]
splits, _ = load_splits(train, train, seed=0)
settings = LoraSettings(**{**json.loads(sys.argv[5]), "batch_size": int(batch)})
result = train_lora(settings, splits, model_name=model, output_dir=out)
if result.adapter_dir:
    print(json.dumps(result.training_summary()))
"""
SETTINGS = {"learning_rate": 0.01, "epochs": 1, "eval_every": 1000, "patience": 0, "dropout": 0.0,
            "validation_rows": 8}


def _torchrun() -> str:
    return os.path.join(os.path.dirname(sys.executable), "torchrun")


def test_global_batches_give_each_process_its_piece():
    lengths = [5, 9, 3, 7, 2, 8, 6, 4, 1, 10, 11]
    one = GlobalBatches(lengths, rows_per_process=4, world=1, seed=3)
    two = GlobalBatches(lengths, rows_per_process=2, world=2, seed=3)
    batches = one.global_batches()
    assert batches == two.global_batches()
    pieces = list(two)
    assert len(two) == len(pieces) == 2 * len(batches)
    for b, batch in enumerate(batches):  # piece i of every global batch, rows i::2
        assert sorted(pieces[2 * b] + pieces[2 * b + 1]) == sorted(batch)
        assert pieces[2 * b] == batch[0::2]
    two.set_epoch(1)
    assert two.global_batches() != batches  # a new order every epoch


@pytest.mark.skipif(not os.path.exists(_torchrun()), reason="torchrun is not installed")
def test_two_processes_learn_the_adapter_one_process_learns_on_the_same_global_batch(
        tiny_learner_dir, tmp_path, workspace, monkeypatch):
    train = tmp_path / "train.csv"
    toy_reviews(56, seed=4).to_csv(train, index=False)
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PVF_HOME": str(workspace), "OMP_NUM_THREADS": "1", "PVF_DTYPE": "float32",
           "PVF_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([_torchrun(), "--standalone", "--nproc_per_node", "2", str(script), str(train),
                           str(tiny_learner_dir), str(tmp_path / "two"), "4", json.dumps(SETTINGS)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(done.stdout.strip().splitlines()[-1])
    assert two["world_size"] == 2 and two["device"] == "cpu"

    monkeypatch.setenv("PVF_DTYPE", "float32")
    monkeypatch.setenv("PVF_THREADS", "1")
    splits, _ = load_splits(str(train), str(train), seed=0)
    one = train_lora(LoraSettings(**SETTINGS, batch_size=8), splits, model_name=str(tiny_learner_dir),
                     output_dir=tmp_path / "one")
    assert one.world_size == 1
    assert one.steps == two["steps"] > 1 and one.train_examples == two["train_examples"] == len(splits.train)
    assert one.best_step == two["best_step"] == one.steps  # both kept their trained weights

    a = load_file(tmp_path / "one" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    biggest = max(float(t.abs().max()) for t in a.values())
    difference = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float(t.abs().max()) for k, t in a.items() if "lora_B" in k)  # B starts at zero
    print(f"2-process vs 1-process adapter: max abs difference {difference:.2e} (largest weight {biggest:.3f})")
    assert moved > 1e-3
    assert difference < 1e-4 * max(biggest, 1.0)
