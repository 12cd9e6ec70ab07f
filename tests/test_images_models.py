"""The image models and arms: the converted backbone, label prompting's mapping, CLIP on a tiny random config,
the linear head and LoRA on a tiny random backbone, the portable export."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from images_support import labelled_files, make_zip
from pvf_core.images import arms
from pvf_core.images.data import ImageReader, load_image_splits
from pvf_core.images.models import (build_efficientnet, convert_backbone, imagenet_class_names, load_backbone,
                                    make_tiny_backbone, preprocess, weights_pth_path)


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory):
    return make_tiny_backbone(tmp_path_factory.mktemp("tiny-backbone"), image_size=32)


@pytest.fixture
def colour_splits(tmp_path):
    train = make_zip(tmp_path / "train.zip", labelled_files(12, ("red", "blue", "green")))
    test = make_zip(tmp_path / "test.zip", labelled_files(4, ("red", "blue", "green"), start=700))
    splits, _ = load_image_splits(train, test, seed=0)
    return splits, train, test


# -- the bundled backbone ---------------------------------------------------------------------------------------

def sample_photos():
    from PIL import Image
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(a) for a in load_sample_images().images]  # china.jpg, flower.jpg


def test_converted_backbone_gives_the_original_logits(tmp_path):
    import torch

    folder = convert_backbone(tmp_path / "converted")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    original = build_efficientnet()
    original.load_state_dict(torch.load(weights_pth_path(), map_location="cpu", weights_only=True))
    original.eval()
    converted = load_backbone(str(folder))
    x = preprocess(sample_photos())
    with torch.no_grad():
        assert torch.equal(original(x), converted.logits(x))
        # the scoring copy (batch norms folded, channels-last) agrees to float rounding
        fast = arms.run_features(arms.inference_copy(converted), x)
        assert torch.allclose(fast, converted.features(x), atol=1e-3, rtol=1e-3)


def test_everyday_photos_get_sensible_imagenet_classes():
    import torch

    backbone = load_backbone("bundled")
    with torch.no_grad():
        probs = backbone.logits(preprocess(sample_photos())).softmax(-1)
    top = [[backbone.class_names[i].split(",")[0] for i in row.topk(5).indices] for row in probs]
    assert {"palace", "bell cote", "monastery", "boathouse"} & set(top[0][:3]), top[0]
    assert "daisy" in top[1][:2], top[1]


def test_normalisation_is_mean_std_one_half():
    from PIL import Image

    white, black = Image.new("RGB", (10, 10), "white"), Image.new("RGB", (10, 10), "black")
    x = preprocess([white, black], 16)
    assert x.shape == (2, 3, 16, 16)
    assert float(x[0].min()) == 1.0 and float(x[1].max()) == -1.0


# -- label prompting ----------------------------------------------------------------------------------------------

def test_label_mapping_by_name():
    names = imagenet_class_names()
    labels = ["sandal", "ankle_boot", "t-shirt_top", "shirt", "bag", "trouser"]
    mapping = arms.suggest_label_mapping(labels, names)
    first = {label: [names[i].split(",")[0] for i in ids] for label, ids in mapping.items()}
    assert "sandal" in first["sandal"]
    assert "cowboy boot" in first["ankle_boot"]
    assert "jersey" in first["t-shirt_top"] and "jersey" not in first["shirt"]  # 'T-shirt' matches as a phrase
    assert "plastic bag" in first["bag"]
    assert first["trouser"] == []  # ImageNet has no trousers: shown as "(none...)" in the table
    table = arms.mapping_table(mapping, names)
    assert "never be predicted" in table.set_index("label").loc["trouser", "imagenet_classes"]
    # the mapping is editable through descriptions
    edited = arms.suggest_label_mapping(labels, names, arms.parse_descriptions("trouser=jean, trousers; bag=purse"))
    assert [names[i].split(",")[0] for i in edited["trouser"]] == ["jean"]
    assert [names[i].split(",")[0] for i in edited["bag"]] == ["purse"]
    # no class belongs to two labels
    assigned = [i for ids in mapping.values() for i in ids]
    assert len(assigned) == len(set(assigned))


def test_label_prompting_sums_probabilities_row_by_row():
    logits = np.log(np.array([[0.5, 0.3, 0.2, 0.0 + 1e-12], [0.1, 0.1, 0.1, 0.7]]))
    scores = arms.label_prompting_scores(logits, {"a": [0, 1], "b": [2], "c": []})
    assert scores[0] == pytest.approx([0.8, 0.2, 0.0], abs=1e-6)
    assert scores[1] == pytest.approx([2 / 3, 1 / 3, 0.0], abs=1e-6)  # the unmapped class 3's mass drops out
    assert arms.label_prompting_scores(logits[:1], {"a": [0, 1], "b": [2], "c": []}) == pytest.approx(scores[:1])


# -- CLIP on a tiny random config ----------------------------------------------------------------------------

def tiny_clip():
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    words = ["[PAD]", "[UNK]", "a", "photo", "of", "red", "blue", "green", "."]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")
    config = CLIPConfig(text_config={"vocab_size": len(words), "hidden_size": 16, "intermediate_size": 32,
                                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
                                     "eos_token_id": 8, "pad_token_id": 0, "projection_dim": 8},
                        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                                       "projection_dim": 8},
                        projection_dim=8)
    model = CLIPModel(config).eval()
    processor = SimpleNamespace(tokenizer=tokenizer,
                                image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                   crop_size={"height": 32, "width": 32}))
    from pvf_core.images.models import ClipModel

    return ClipModel(name="tiny-clip", model=model, processor=processor)


def test_clip_zero_and_few_shot_on_a_tiny_random_model(colour_splits):
    from pvf_core.images.commands import clip_arm

    splits, _, _ = colour_splits
    clip = tiny_clip()
    reader = ImageReader()
    zero = clip_arm("tiny-clip", splits, reader=reader, clip_model=clip, templates="a photo of a {label} .")
    few = clip_arm("tiny-clip", splits, reader=reader, clip_model=clip, shots=3)
    assert zero.arm == "CLIP zero-shot" and few.arm == "CLIP 3-shot"
    for result in (zero, few):
        assert result.n_test == 12 and set(result.predictions) <= {"red", "blue", "green"}
        assert all(abs(sum(s.values()) - 1) < 1e-5 for s in result.label_scores)
    assert zero.spec["templates"] == ["a photo of a {label} ."]
    assert len(few.spec["examples"]) == 9
    # prototypes of perfectly separated embeddings classify perfectly
    emb = np.eye(3)[[0, 0, 1, 1, 2, 2]]
    protos = arms.clip_image_prototypes(emb, ["r", "r", "b", "b", "g", "g"], ["r", "b", "g"])
    assert arms.prototype_scores(emb, protos).argmax(1).tolist() == [0, 0, 1, 1, 2, 2]


def test_clip_without_the_hub_says_so():
    from pvf_core.errors import ModelLoadError
    from pvf_core.images.models import load_clip

    with pytest.raises(ModelLoadError, match="hub"):
        load_clip("nobody/no-such-clip-model")


# -- fine-tuning on a tiny random backbone --------------------------------------------------------------------

def test_linear_head_learns_and_keeps_the_best_epoch():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 3
    y = np.repeat(["a", "b", "c"], 30)
    x = centres[np.repeat([0, 1, 2], 30)] + rng.normal(size=(90, 20))
    records = []
    trained = arms.train_head(x[::2], y[::2], x[1::2], y[1::2], ["a", "b", "c"],
                              arms.ImageTrainSettings(epochs=60, patience=5, learning_rate=0.05),
                              on_progress=records.append)
    assert (np.array(["a", "b", "c"])[trained.scores(x[1::2]).argmax(1)] == y[1::2]).mean() > 0.95
    losses = [r["val_loss"] for r in records]
    assert losses[trained.best_epoch - 1] <= min(losses) + 2e-4 and len(records) <= 60  # improvements > 1e-4 count
    assert records[0]["event"] == "progress" and {"train_loss", "val_loss", "val_accuracy"} <= set(records[0])


def test_head_arm_on_a_tiny_backbone(colour_splits, tiny_backbone_dir):
    from pvf_core.images.commands import finetuned_arm

    splits, _, _ = colour_splits
    backbone = load_backbone(str(tiny_backbone_dir))
    result, trained, _ = finetuned_arm(backbone, splits, arms.image_preset("quick", epochs=30),
                                       reader=ImageReader())
    assert result.n_test == 12 and result.texts[0].endswith(".png")
    assert result.metrics["accuracy"] >= 0.5  # colours are easy even for random features
    assert result.ms_per_example > 0 and len(result.latencies_ms) == 8


def test_lora_on_the_one_by_one_convolutions(colour_splits, tiny_backbone_dir):
    import torch

    splits, _, _ = colour_splits
    backbone = load_backbone(str(tiny_backbone_dir))
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    trained = arms.train_lora_backbone(backbone, splits.train, splits.validation, splits.labels,
                                       arms.ImageTrainSettings(method="lora", epochs=2, batch_size=8, rank=2,
                                                               learning_rate=1e-2))
    state = trained.backbone_state
    assert trained.weight.shape == (3, 1280) and len(trained.history) == 2
    changed = [k for k in state if not torch.equal(state[k], before[k])]
    assert changed and all(("_expand_conv" in k or "_project_conv" in k or "_conv_head" in k) for k in changed)
    assert all(torch.equal(backbone.model.state_dict()[k], before[k]) for k in before)  # the shared copy is untouched


def test_export_and_predict_script(colour_splits, tiny_backbone_dir, tmp_path):
    splits, _, test_zip = colour_splits
    backbone = load_backbone(str(tiny_backbone_dir))
    reader = ImageReader()
    train_x = arms.image_features(backbone, splits.train, reader=reader, cache=False)
    trained = arms.train_head(train_x.values, splits.train["label"], train_x.values[:0], [], splits.labels,
                              arms.ImageTrainSettings(epochs=5))
    folder = arms.save_classifier(trained, backbone, tmp_path / "export")
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json", "run.json", "predict.py"}
    out = tmp_path / "out.csv"
    subprocess.run([sys.executable, str(folder / "predict.py"), str(test_zip), str(out)], check=True)
    rows = pd.read_csv(out)
    assert len(rows) == 12 and set(rows["prediction"]) <= set(splits.labels)
    expected = [splits.labels[i] for i in trained.scores(
        arms.image_features(backbone, splits.test.sort_values("text"), reader=reader, cache=False).values).argmax(1)]
    by_path = dict(zip(rows["path"], rows["prediction"]))
    agree = np.mean([by_path[p] == e for p, e in zip(splits.test.sort_values("text")["text"], expected)])
    assert agree >= 0.9  # same model, same preprocessing (unfolded batch norms: rounding only)


def test_settings_have_help_and_ranges():
    import dataclasses

    from pvf_core.errors import SettingsError

    for field in dataclasses.fields(arms.ImageTrainSettings):
        assert len(field.metadata.get("help", "")) > 20, field.name
    with pytest.raises(SettingsError, match="Epochs must be at least 1"):
        arms.ImageTrainSettings(epochs=0)
    with pytest.raises(SettingsError):
        arms.image_preset("unknown")
