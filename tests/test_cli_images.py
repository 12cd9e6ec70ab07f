"""`python -m pvf_core inspect|prompt|finetune|compare --images ZIP --test-images ZIP`: the contract's keys."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from images_support import labelled_files, make_zip
from pvf_core.cli import cli

LABELS = ("red", "blue", "green")


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    from pvf_core.images.models import make_tiny_backbone

    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny-backbone"), image_size=32))


@pytest.fixture
def zips(tmp_path):
    train = make_zip(tmp_path / "train.zip", labelled_files(10, LABELS))
    test = make_zip(tmp_path / "test.zip", labelled_files(4, LABELS, start=700))
    return str(train), str(test)


def run(args, code=0):
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 else result


def test_inspect_images(zips):
    train, test = zips
    out = run(["inspect", "--images", train, "--test-images", test])
    assert {"rows", "columns", "task", "text_column", "label_column", "labels", "warnings"} <= set(out)
    assert out["rows"] == 42 and out["task"] == "classification" and out["labels"]["red"] == 14
    assert out["split"] == {"train": 27, "validation": 3, "test": 12}
    assert all({"code", "message"} <= set(w) for w in out["warnings"])


def test_inspect_needs_a_csv_or_images():
    result = CliRunner().invoke(cli, ["inspect"])
    assert result.exit_code == 2 and "--images" in result.output


def test_unusable_zip_is_one_line_and_exit_2(tmp_path, zips):
    bad = tmp_path / "bad.zip"
    bad.write_text("not a zip")
    result = CliRunner().invoke(cli, ["inspect", "--images", str(bad)])
    assert result.exit_code == 2 and "not a zip archive" in result.stderr and len(result.stderr.splitlines()) == 1
    result = CliRunner().invoke(cli, ["prompt", "--images", str(tmp_path / "missing.zip")])
    assert result.exit_code == 2 and "was not found" in result.stderr


def test_without_test_images_a_fifth_is_held_out(zips, tiny_backbone):
    out = run(["prompt", "--images", zips[0], "--model", tiny_backbone])
    assert out["n_test"] == 6  # 20% of 30 images, stratified


def test_prompt_images_label_prompting(zips, tiny_backbone, tmp_path):
    train, test = zips
    out = run(["prompt", "--images", train, "--test-images", test, "--model", tiny_backbone,
               "--describe", "red=fire engine; blue=jean; green=qwertyuiop", "--predictions", str(tmp_path / "p.csv")])
    assert {"arm", "task", "n_test", "metrics", "seconds", "ms_per_example", "peak_rss_mb"} <= set(out)
    assert out["n_test"] == 12 and out["arm"] == "label prompting (ImageNet)"
    mapping = {row["label"]: row["imagenet_classes"] for row in out["mapping"]}
    assert mapping["red"] == "fire engine" and mapping["blue"] == "jean" and "never" in mapping["green"]
    rows = pd.read_csv(tmp_path / "p.csv")
    assert list(rows.columns) == ["text", "label", "prediction"] and rows["text"][0] == "red/0.png"
    assert (rows["label"] == rows["prediction"]).mean() == pytest.approx(out["metrics"]["accuracy"])


def test_finetune_images(zips, tiny_backbone, tmp_path):
    from pvf_core.store import Store

    train, test = zips
    out = run(["finetune", "--images", train, "--test-images", test, "--model", tiny_backbone, "--preset", "quick",
               "--epochs", "20", "--output", str(tmp_path / "run"), "--predictions", str(tmp_path / "p.csv")])
    assert {"arm", "n_test", "metrics", "train_seconds", "train_examples_per_second", "adapter_dir",
            "adapter_mb", "ms_per_example", "peak_rss_mb"} <= set(out)
    assert out["status"] == "done" and (tmp_path / "run" / "classifier" / "predict.py").is_file()
    assert out["adapter_mb"] > 1
    assert Store().get_run(out["run_id"]).status == "done"
    from pvf_core.jobs import read_progress

    progress = read_progress(out["run_id"])  # live loss, as the app's job view reads it
    assert any(p.get("val_loss") is not None for p in progress)


def test_compare_images(zips, tiny_backbone, tmp_path):
    train, test = zips
    out = run(["compare", "--images", train, "--test-images", test, "--model", tiny_backbone, "--epochs", "20",
               "--output", str(tmp_path / "cmp"), "--predictions", str(tmp_path / "p.csv")])
    assert [a["arm"] for a in out["arms"]] == ["label prompting (ImageNet)", "linear head (fine-tuned)"]
    for arm in out["arms"]:
        assert {"arm", "task", "n_test", "metrics", "seconds", "ms_per_example", "peak_rss_mb"} <= set(arm)
        assert arm["n_test"] == 12
    assert len(out["significance"]) == 1 and "p_value" in out["significance"][0]
    assert out["recommendation"]["arm"] in {a["arm"] for a in out["arms"]} and out["recommendation"]["reasons"]
    assert (tmp_path / "cmp" / "report.html").is_file()
    rows = pd.read_csv(tmp_path / "p.csv")
    assert rows["text"].tolist()[:2] == ["red/0.png", "red/1.png"]
    for arm in out["arms"]:
        assert (rows[f"prediction_{arm['arm']}"] == rows["label"]).mean() == pytest.approx(arm["metrics"]["accuracy"])


def test_finetune_images_in_the_background(zips, tiny_backbone):
    from pvf_core import jobs

    train, test = zips
    out = run(["finetune", "--images", train, "--test-images", test, "--model", tiny_backbone, "--preset", "quick",
               "--epochs", "10", "--background"])
    assert out["status"] in ("queued", "running") and "--images" in out["command"]
    status = jobs.wait(out["run_id"], timeout=300)
    assert status.status == "done", status.error
    assert any(e.get("val_loss") is not None for e in jobs.read_progress(out["run_id"]))
