"""Security: no remote code, safetensors only, file names never become paths, escaped exports, no secrets in logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from pvf_core import models
from pvf_core.data import read_csv, register_dataset, suggest_mapping
from pvf_core.errors import ModelLoadError
from pvf_core.store import Store, workspace

SOURCES = sorted((ROOT / "pvf_core").glob("*.py")) + sorted((ROOT / "ui").glob("*.py")) + \
    sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]
FAKE_TOKEN = "hf_" + "SecretTokenForTests" * 2


# -- models: remote code and pickles ----------------------------------------------------------------------

def test_no_code_trusts_remote_code():
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for value in re.findall(r"trust_remote_code\s*=\s*([^,)\s]+)", text):
            assert value == "False", (path, value)


def test_a_model_that_asks_for_remote_code_is_refused_without_running_it(tmp_path, tiny_model_dir):
    folder = tmp_path / "remote-code-model"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_model_dir / name).read_bytes())
    marker = tmp_path / "remote-code-ran"
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config.update(model_type="evil_llama", architectures=["EvilForCausalLM"],
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ModelLoadError, match="could not be loaded .*custom code"):
        models.load_model(str(folder), fresh=True)
    assert not marker.exists()
    # A known architecture with an auto_map: the built-in class is used and the folder's code ignored.
    config["model_type"] = json.loads((tiny_model_dir / "config.json").read_text())["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    assert type(models.load_model(str(folder), fresh=True).model).__name__ == "LlamaForCausalLM"
    assert not marker.exists()


def test_pickle_weights_are_refused_before_anything_is_unpickled(tmp_path, monkeypatch):
    import torch

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not a real pickle")
    with pytest.raises(ModelLoadError) as caught:
        models.load_model(str(folder), fresh=True)
    assert "pickle files (pytorch_model.bin)" in caught.value.message and "can run code" in caught.value.message
    assert caught.value.hint == "Convert the model to safetensors first."


def test_pickled_adapters_are_refused(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelLoadError, match=r"pickle files \(adapter_model\.bin\), which PvF Studio does not load"):
        models.check_adapter_folder(adapter)
    (adapter / "adapter_model.bin").unlink()
    with pytest.raises(ModelLoadError, match="has no adapter_model.safetensors"):
        models.check_adapter_folder(adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    assert models.check_adapter_folder(adapter) == adapter


def test_evaluating_or_merging_a_pickled_adapter_is_refused_before_loading(tmp_path):
    from pvf_core.evaluate import Arm, load_arm_model
    from pvf_core.finetune import merge_run

    adapter = tmp_path / "run"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelLoadError, match="pickle files"):
        load_arm_model(Arm("lora", None, adapter=str(adapter), model="no-such-model"))
    with pytest.raises(ModelLoadError, match="pickle files"):
        merge_run(adapter)


# -- uploads: a file name is only ever a label ------------------------------------------------------------

HOSTILE_NAMES = ["../../../../tmp/pvf-escape.csv", "/etc/passwd", "..\\..\\windows\\system32\\x.csv",
                 "<img src=x onerror=alert(1)>.csv", "name\x00with-nul.csv", "~/.bashrc", "CON.csv",
                 "a" * 500 + ".csv"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_uploaded_file_names_never_become_paths(name, tmp_path):
    raw = b"text,label\n" + b"".join(b"row %d is fine,%s\n" % (i, b"ab"[i % 2:i % 2 + 1]) for i in range(30))
    table = read_csv(raw, name=name)
    dataset = register_dataset(table, suggest_mapping(table))
    record = Store().get_dataset(dataset.id)
    assert record.name == name  # kept as text, shown as text
    stored = Path(record.path)
    assert stored.parent == workspace() / "datasets" and re.fullmatch(r"[0-9a-f]{16}\.csv", stored.name)
    assert not Path("/tmp/pvf-escape.csv").exists()
    files = [p for p in workspace().rglob("*") if p.is_file()]
    assert all(workspace() in p.parents for p in files)
    assert not any("escape" in p.name or "passwd" in p.name or "bashrc" in p.name for p in files)


# -- exports: escaped HTML, neutralised spreadsheet formulas ----------------------------------------------

def hostile_comparison():
    from pvf_core.compare import ArmInfo, build_comparison
    from pvf_core.evaluate import EvalResult
    from pvf_core.metrics import classification_metrics

    label_a, label_b = "</script><script>alert('label')</script>", "=HYPERLINK(\"http://evil\",\"x\")"
    texts = ["<script>alert('text')</script>", "=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)",
             "<img src=x onerror=alert(1)>", "\tindented", "plain"] * 5
    refs = [label_a, label_b] * 20

    def result(arm, predictions):
        return EvalResult(arm=arm, task="classification", n_test=len(refs),
                          metrics=classification_metrics(refs, predictions, sorted({label_a, label_b})),
                          texts=texts, references=refs, predictions=predictions, label_scores=None,
                          ms_per_example=10.0, latencies_ms=[10.0] * len(refs), prompt_tokens_per_row=5.0,
                          peak_rss_mb=1.0, seconds=1.0, calibration="none")

    arms = ["<b onmouseover=alert('arm')>zero</b>", "=LoRA"]
    return build_comparison([result(arms[0], [label_a] * 40), result(arms[1], refs[:36] + [label_a] * 4)],
                            [ArmInfo(arms[0], "prompt"), ArmInfo(arms[1], "finetune", train_seconds=60)],
                            task="classification", labels=sorted({label_a, label_b}),
                            dataset="<script>alert('dataset')</script>")


def test_the_html_report_escapes_user_text(tmp_path):
    from pvf_core.report import write_report

    page = Path(write_report(hostile_comparison(), tmp_path)["html"]).read_text(encoding="utf-8")
    for raw in ("<script>alert(", "<img src=x", "<b onmouseover", "</script><script>"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(&#x27;dataset&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_exported_csv_cells_cannot_run_as_formulas(tmp_path):
    from pvf_core.report import write_report

    frame = pd.read_csv(write_report(hostile_comparison(), tmp_path)["csv"], keep_default_na=False)
    for column in frame.columns:
        for cell in frame[column].astype(str):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    assert "'=1+1" in set(frame["text"]) and "'@SUM(A1:A2)" in set(frame["text"])
    assert all(not c.startswith(("=", "+", "-", "@")) for c in frame.columns)


# -- no secrets in logs -----------------------------------------------------------------------------------

def test_a_token_in_the_environment_never_reaches_output_or_job_files(tmp_path, workspace):
    from pvf_core import jobs

    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "HUGGING_FACE_HUB_TOKEN": FAKE_TOKEN, "HF_HUB_OFFLINE": "1",
           "PVF_HOME": str(workspace)}
    env.pop("PVF_RAISE_ERRORS", None)
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(30)))
    cli = subprocess.run([sys.executable, "-m", "pvf_core", "inspect", str(data), "--model", "no-such-org/model",
                          "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert FAKE_TOKEN not in cli.stdout + cli.stderr
    assert "Traceback" not in cli.stderr
    os.environ["HF_TOKEN"] = FAKE_TOKEN  # the job inherits the app's environment (it may need the token)
    try:
        run_id = jobs.submit(["inspect", str(data), "--model", "no-such-org/model"], kind="inspect")
        status = jobs.wait(run_id, timeout=180)
    finally:
        del os.environ["HF_TOKEN"]
    assert status.finished
    folder = jobs.run_folder(run_id)
    for path in folder.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN not in path.read_text(encoding="utf-8", errors="replace"), path
    assert FAKE_TOKEN not in jobs.command_line(run_id) + status.error + status.message
