"""The image arms: prompting without training, and fine-tuning.

Prompting (no training):

* **label prompting** (offline): the bundled ImageNet classifier already knows 1000 everyday things. Each
  of your labels is described in words and mapped to the ImageNet classes whose names match those words
  (``suggest_label_mapping``; shown and editable); an image's score for a label is the summed probability
  of its classes. It works for everyday objects (shoes, bags, dogs) and cannot work for labels ImageNet
  has no name for (a defect on a weld, a tumour type, "shirt" as opposed to "T-shirt").
* **CLIP** (where the hub is reachable): zero-shot from text prompts per label (templates such as
  "a photo of a {label}."), or few-shot from a handful of labelled images per label (class prototypes:
  the mean image embedding of each label's examples).

Fine-tuning:

* **linear head** on the frozen backbone: the backbone's 1280 features of each image are computed once
  and cached, then a linear layer learns the labels in seconds (the default on a CPU);
* **LoRA** on the backbone's 1×1 convolutions plus a new head (peft): more capacity, but every step runs
  the whole backbone forward and backward, so it is for GPUs or small sets.

Both fine-tuning arms stop early on validation loss and keep the best checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import SettingsError
from ..settings import check_ranges, setting
from .data import ImageReader
from .models import MEAN, STD, VisionBackbone, preprocess

Progress = Callable[[int, int, str], None]
STOP_WORDS = {"a", "an", "the", "of", "and", "or", "with", "for", "in", "on", "top", "other", "misc", "item",
              "thing", "object", "type", "class", "kind", "photo", "image", "picture"}


# -- features and logits of the frozen backbone -------------------------------------------------------------

def inference_copy(backbone: VisionBackbone) -> Any:
    """A copy of the backbone for scoring only: batch norms folded into their convolutions, channels-last
    memory (1.6× faster on a CPU than the training form; same outputs to float rounding)."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    cached = getattr(backbone, "_inference", None)
    if cached is not None:
        return cached
    m = copy.deepcopy(backbone.model).eval()
    m._conv_stem, m._bn0 = fuse_conv_bn_eval(m._conv_stem, m._bn0), torch.nn.Identity()
    m._conv_head, m._bn1 = fuse_conv_bn_eval(m._conv_head, m._bn1), torch.nn.Identity()
    for block in m._blocks:
        if hasattr(block, "_expand_conv"):
            block._expand_conv, block._bn0 = fuse_conv_bn_eval(block._expand_conv, block._bn0), torch.nn.Identity()
        block._depthwise_conv, block._bn1 = fuse_conv_bn_eval(block._depthwise_conv, block._bn1), torch.nn.Identity()
        block._project_conv, block._bn2 = fuse_conv_bn_eval(block._project_conv, block._bn2), torch.nn.Identity()
    m = m.to(memory_format=torch.channels_last)
    backbone._inference = m  # type: ignore[attr-defined]
    return m


def run_features(model: Any, pixels: Any) -> Any:
    """Pooled features of preprocessed images through an (inference) EfficientNet."""
    import torch

    with torch.inference_mode():
        x = model.extract_features(pixels.contiguous(memory_format=torch.channels_last))
        return torch.flatten(model._avg_pooling(x), 1)


@dataclass
class Features:
    """The backbone's features of some images, and what computing them cost."""

    values: np.ndarray  # [images, 1280]
    seconds: float      # computing them (0 when all came from the cache)
    computed: int       # images actually run through the backbone

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / max(self.computed, 1)


def image_features(backbone: VisionBackbone, frame: pd.DataFrame, *, reader: ImageReader | None = None,
                   batch_size: int = 32, cache: bool = False, on_progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None) -> Features:
    """Features of every row's image; with ``cache`` also kept on disk by pixel hash (a second run reads them back)."""
    from ..evaluate import Stopped

    reader = reader or ImageReader()
    folder = _feature_cache_dir(backbone) if cache else None
    found: dict[str, np.ndarray] = {}
    if folder is not None and (folder / "features.npz").is_file():
        with np.load(folder / "features.npz") as stored:
            wanted = set(frame["hash"])
            found = {h: stored[h] for h in stored.files if h in wanted}
    todo = frame[~frame["hash"].isin(list(found))].drop_duplicates("hash")
    model = inference_copy(backbone)
    started = time.perf_counter()
    for i in range(0, len(todo), batch_size):
        if should_stop and should_stop():
            raise Stopped("Stopped.")
        part = todo.iloc[i:i + batch_size]
        pixels = preprocess(reader.rows(part), backbone.image_size)
        values = run_features(model, pixels).float().numpy()
        found.update(zip(part["hash"], values))
        if on_progress:
            on_progress(min(i + batch_size, len(todo)), len(todo), f"features of {len(todo)} images")
    seconds = time.perf_counter() - started
    if folder is not None and len(todo):
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "features.npz", **found)
    return Features(np.stack([found[h] for h in frame["hash"]]) if len(frame) else np.zeros((0, backbone.feature_dim),
                    dtype=np.float32), seconds, len(todo))


def _feature_cache_dir(backbone: VisionBackbone) -> Path | None:
    from ..store import workspace_dir

    key = hashlib.sha256(f"{backbone.name}|{backbone.path}|{backbone.image_size}".encode()).hexdigest()[:12]
    return workspace_dir("cache", "image-features", key)


def latency_ms(backbone: VisionBackbone, frame: pd.DataFrame, head: Callable[[Any], Any] | None = None,
               reader: ImageReader | None = None, rows: int = 8) -> list[float]:
    """Milliseconds to answer single images one at a time (decode, preprocess, backbone, head)."""
    reader = reader or ImageReader()
    model = inference_copy(backbone)
    out = []
    for _, row in frame.head(rows).iterrows():
        started = time.perf_counter()
        features = run_features(model, preprocess([reader.open(row["source"], row["text"])], backbone.image_size))
        if head is not None:
            head(features)
        out.append(1000 * (time.perf_counter() - started))
    return out


# -- label prompting with the ImageNet classifier -------------------------------------------------------------

def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def _stem(word: str) -> str:
    for suffix in ("es", "s"):
        if len(word) > 4 and word.endswith(suffix) and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def label_words(label: str) -> str:
    """A label as words: 'ankle_boot' -> 'ankle boot'."""
    return " ".join(_words(label))


def suggest_label_mapping(labels: Sequence[str], class_names: Sequence[str],
                          descriptions: dict[str, str] | None = None) -> dict[str, list[int]]:
    """Each label's ImageNet classes, by name match (editable: this is only a first guess).

    A label is described by its own words (the whole name, and each part of 't-shirt_top' or 'cat/dog') or
    by ``descriptions[label]`` ("jeans, trousers; slacks": phrases separated by commas or semicolons). A
    class matches when one of its names equals a phrase (strongest), contains the phrase, or shares a word
    with it (weakest; words of three letters or more that are not generic like 'top'). A class goes to the
    label it matches most strongly (ties: the first label), and a label keeps only its strongest kind
    of match.
    """
    descriptions = descriptions or {}
    best: dict[int, tuple[int, int]] = {}  # class -> (strength, label index)
    for li, label in enumerate(labels):
        phrases = [label_words(p) for p in re.split(r"[,;]", descriptions.get(label) or label)]
        if not descriptions.get(label):  # 't-shirt_top': the whole label, and each part ('t-shirt', 'top')
            phrases += [label_words(p) for p in re.split(r"[_/]", label)] if re.search(r"[_/]", label) else []
        phrases = [p for p in dict.fromkeys(phrases) if p and not set(p.split()) <= STOP_WORDS]
        for ci, names in enumerate(class_names):
            synonyms = [label_words(n) for n in names.split(",")]
            strength = 0
            for phrase in phrases:
                stems = {_stem(w) for w in phrase.split() if len(w) >= 3 and w not in STOP_WORDS}
                for synonym in synonyms:
                    if not synonym:
                        continue
                    syn_stems = [_stem(w) for w in synonym.split()]
                    if _stem(synonym) == _stem(phrase) or " ".join(syn_stems) == " ".join(_stem(w) for w in phrase.split()):
                        strength = max(strength, 3)
                    elif f" {' '.join(_stem(w) for w in phrase.split())} " in f" {' '.join(syn_stems)} ":
                        strength = max(strength, 2)
                    elif stems & set(syn_stems):
                        strength = max(strength, 1)
            if strength and (ci not in best or strength > best[ci][0]):
                best[ci] = (strength, li)
    mapping: dict[str, list[int]] = {label: [] for label in labels}
    strongest = {li: max(st for st, lj in best.values() if lj == li) for _, li in best.values()}
    for ci, (strength, li) in sorted(best.items()):
        if strength == strongest[li]:  # 'fire engine' named exactly: not also every class with 'fire' in it
            mapping[labels[li]].append(ci)
    return mapping


def parse_descriptions(text: str | None) -> dict[str, str]:
    """``"trouser=jeans, slacks; bag=purse, handbag"`` -> {label: description} (CLI and settings files)."""
    out: dict[str, str] = {}
    for part in re.split(r";(?=[^;=]*=)", text or ""):
        if "=" in part:
            label, words = part.split("=", 1)
            out[label.strip()] = words.strip()
    return out


def mapping_table(mapping: dict[str, list[int]], class_names: Sequence[str]) -> pd.DataFrame:
    """The mapping as people read it: one row per label with its ImageNet classes' names."""
    return pd.DataFrame([{"label": label, "classes": len(ids),
                          "imagenet_classes": "; ".join(class_names[i].split(",")[0] for i in ids) or
                          "(none: this label can never be predicted; describe it in other words)"}
                         for label, ids in mapping.items()])


def label_prompting_scores(logits: np.ndarray, mapping: dict[str, list[int]]) -> np.ndarray:
    """[images, labels]: each label's summed ImageNet probability, normalised over the labels (row by row)."""
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    mass = np.stack([probs[:, ids].sum(axis=1) if ids else np.zeros(len(probs)) for ids in mapping.values()], axis=1)
    total = mass.sum(axis=1, keepdims=True)
    return np.where(total > 0, mass / np.maximum(total, 1e-30), 1.0 / mass.shape[1])


def imagenet_logits(backbone: VisionBackbone, features: np.ndarray) -> np.ndarray:
    """The ImageNet head applied to cached features."""
    import torch

    with torch.inference_mode():
        return backbone.model._fc(torch.from_numpy(features)).float().numpy()


# -- CLIP zero-shot and few-shot -----------------------------------------------------------------------------

DEFAULT_TEMPLATES = ("a photo of a {label}.",)


def clip_text_prototypes(clip: Any, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                         descriptions: dict[str, str] | None = None) -> np.ndarray:
    """[labels, dim]: each label's mean normalised text embedding over the templates."""
    import torch

    descriptions = descriptions or {}
    rows = []
    for label in labels:
        words = descriptions.get(label) or label_words(label)
        texts = [t.replace("{label}", words) for t in templates]
        rows.append(torch.nn.functional.normalize(clip.embed_texts(texts).mean(0), dim=-1))
    return torch.stack(rows).numpy()


def clip_image_prototypes(image_embeddings: np.ndarray, labels_of_rows: Sequence[str],
                          labels: Sequence[str]) -> np.ndarray:
    """[labels, dim]: each label's mean normalised image embedding (few-shot class prototypes)."""
    rows = []
    for label in labels:
        chosen = image_embeddings[np.asarray(labels_of_rows) == label]
        mean = chosen.mean(axis=0) if len(chosen) else np.zeros(image_embeddings.shape[1])
        rows.append(mean / max(np.linalg.norm(mean), 1e-12))
    return np.stack(rows)


def prototype_scores(image_embeddings: np.ndarray, prototypes: np.ndarray, scale: float = 100.0) -> np.ndarray:
    """[images, labels] probabilities: softmax of scaled cosine similarity to each label's prototype."""
    z = scale * image_embeddings @ prototypes.T
    z -= z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def few_shot_rows(train: pd.DataFrame, shots: int, seed: int = 0) -> pd.DataFrame:
    """``shots`` training images per label (seeded), the few-shot arm's examples."""
    parts = [group.sample(min(shots, len(group)), random_state=seed) for _, group in train.groupby("label")]
    return pd.concat(parts).reset_index(drop=True)


# -- fine-tuning: settings ---------------------------------------------------------------------------------------

@dataclass
class ImageTrainSettings:
    """How an image model is fine-tuned."""

    method: str = setting("head", "What is trained: 'head' (a linear layer on the frozen backbone's cached "
                          "features; seconds on a CPU) or 'lora' (LoRA on the backbone's 1×1 convolutions plus "
                          "the head; slower, more capacity, for GPUs or small sets).")
    epochs: int = setting(200, "Passes over the training images. Early stopping usually ends sooner.", min=1, max=2000)
    learning_rate: float = setting(3e-3, "Step size. Lower it if the validation loss jumps around.",
                                   min=1e-6, max=1.0)
    weight_decay: float = setting(1e-3, "Pulls weights towards zero; more of it helps with few images.",
                                  min=0.0, max=1.0)
    batch_size: int = setting(64, "Images per training step; fewer if memory runs out (LoRA).", min=1, max=1024)
    patience: int = setting(20, "Stop after this many epochs without a better validation loss (0: never).",
                            min=0, max=1000)
    rank: int = setting(8, "LoRA rank (method 'lora' only): capacity of each adapted convolution.", min=1, max=256)
    seed: int = setting(0, "Random seed for the head's start and the batches.", min=0, max=2**31 - 1)

    def __post_init__(self) -> None:
        if self.method not in ("head", "lora"):
            raise SettingsError(f"method must be 'head' or 'lora'; got '{self.method}'.")
        check_ranges(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ImageTrainSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


IMAGE_PRESETS: dict[str, dict] = {
    # 200 epochs of 900 cached features ≈ 180k head steps of a 1280×10 matrix: seconds on one core.
    "quick": {"method": "head", "epochs": 50, "patience": 10},
    "balanced": {"method": "head", "epochs": 200, "patience": 20},
    # LoRA runs the backbone forward and backward for every image and epoch: ≈20× the scoring cost per epoch.
    "thorough": {"method": "lora", "epochs": 5, "learning_rate": 1e-3, "batch_size": 16, "patience": 2},
}


def image_preset(name: str, **changes: Any) -> ImageTrainSettings:
    if name not in IMAGE_PRESETS:
        raise SettingsError(f"Unknown preset '{name}'; use one of {', '.join(IMAGE_PRESETS)}.")
    data = {**IMAGE_PRESETS[name], **{k: v for k, v in changes.items() if v is not None}}
    return ImageTrainSettings(**data)


# -- fine-tuning: the linear head on cached features -------------------------------------------------------------

@dataclass
class TrainedHead:
    """A trained image classifier: the head (and, for LoRA, the adapted backbone) and its record."""

    labels: list[str]
    weight: np.ndarray  # [labels, features], the standardisation of the features folded in
    bias: np.ndarray    # [labels]
    settings: ImageTrainSettings
    train_seconds: float
    examples_per_second: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    cancelled: bool = False
    backbone_state: dict | None = None  # LoRA: the merged backbone's weights

    def scores(self, features: np.ndarray) -> np.ndarray:
        z = features @ self.weight.T + self.bias
        z -= z.max(axis=1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def train_head(train_x: np.ndarray, train_y: Sequence[str], val_x: np.ndarray, val_y: Sequence[str],
               labels: Sequence[str], settings: ImageTrainSettings, *,
               on_progress: Callable[[dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> TrainedHead:
    """A linear layer on frozen features: AdamW, mini-batches, early stopping on validation loss, best kept."""
    import torch

    # -- setup: seed once, standardise the features with the training rows' statistics
    torch.manual_seed(settings.seed)
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    xt = torch.from_numpy((train_x - mean) / std).float()
    yt = torch.tensor([index[y] for y in train_y])
    has_val = len(val_x) > 0
    xv = torch.from_numpy((val_x - mean) / std).float() if has_val else xt
    yv = torch.tensor([index[y] for y in val_y]) if has_val else yt
    head = torch.nn.Linear(xt.shape[1], len(labels))
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    best = (float("inf"), 0, copy.deepcopy(head.state_dict()))
    history, waited, cancelled = [], 0, False
    started = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        # -- one epoch of shuffled mini-batches
        head.train()
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(xt), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            loss = torch.nn.functional.cross_entropy(head(xt[batch]), yt[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        # -- validation loss and accuracy; keep the best head
        head.eval()
        with torch.no_grad():
            logits = head(xv)
            val_loss = float(torch.nn.functional.cross_entropy(logits, yv))
            val_acc = float((logits.argmax(1) == yv).float().mean())
        record = {"event": "progress", "epoch": epoch, "step": epoch, "total_steps": settings.epochs,
                  "percent": round(100 * epoch / settings.epochs, 1), "train_loss": round(total / len(xt), 4),
                  "val_loss": round(val_loss, 4), "val_accuracy": round(val_acc, 4),
                  "examples_per_second": round(epoch * len(xt) / max(time.perf_counter() - started, 1e-9), 1)}
        history.append(record)
        if on_progress:
            on_progress(record)
        if val_loss < best[0] - 1e-4:
            best, waited = (val_loss, epoch, copy.deepcopy(head.state_dict())), 0
        else:
            waited += 1
        if settings.patience and waited >= settings.patience:
            break
        if should_stop and should_stop():
            cancelled = True
            break
    seconds = time.perf_counter() - started
    # -- fold the standardisation into the best head: scores(features) needs no statistics
    weight = best[2]["weight"].numpy() / std
    bias = best[2]["bias"].numpy() - (weight * mean).sum(axis=1)
    return TrainedHead(labels=labels, weight=weight.astype(np.float32), bias=bias.astype(np.float32),
                       settings=settings, train_seconds=seconds,
                       examples_per_second=len(history) * len(xt) / max(seconds, 1e-9), best_epoch=best[1],
                       history=history, cancelled=cancelled)


# -- fine-tuning: LoRA on the backbone's 1x1 convolutions -------------------------------------------------------

LORA_TARGETS = r".*(_expand_conv|_project_conv|_conv_head)$"


def train_lora_backbone(backbone: VisionBackbone, train: pd.DataFrame, validation: pd.DataFrame,
                        labels: Sequence[str], settings: ImageTrainSettings, *, reader: ImageReader | None = None,
                        on_progress: Callable[[dict], None] | None = None,
                        should_stop: Callable[[], bool] | None = None) -> TrainedHead:
    """LoRA (peft) on every 1×1 convolution of a private backbone copy, plus a new linear head.

    Batch norms stay frozen in eval mode (their statistics are ImageNet's); each epoch runs every training
    image through the backbone forward and backward; the best epoch by validation loss is kept, merged.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    # -- setup: a private copy, adapters on the 1x1 convolutions, a new head
    torch.manual_seed(settings.seed)
    reader = reader or ImageReader()
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    model = _plain_pointwise_convs(copy.deepcopy(backbone.model))
    model._fc = torch.nn.Linear(model._fc.in_features, len(labels))
    config = LoraConfig(r=settings.rank, lora_alpha=2 * settings.rank, target_modules=LORA_TARGETS,
                        lora_dropout=0.0, modules_to_save=["_fc"])
    peft_model = get_peft_model(model, config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    pixels_train = preprocess(reader.rows(train), backbone.image_size)
    pixels_val = preprocess(reader.rows(validation), backbone.image_size) if len(validation) else pixels_train
    y_train = torch.tensor([index[y] for y in train["label"]])
    y_val = torch.tensor([index[y] for y in (validation if len(validation) else train)["label"]])
    generator = torch.Generator().manual_seed(settings.seed)

    def adapter_state() -> dict:
        return {k: v.detach().clone() for k, v in peft_model.state_dict().items() if "lora_" in k or "_fc" in k}

    best = (float("inf"), 0, adapter_state())
    history, waited, cancelled = [], 0, False
    started = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        # -- one epoch: backbone forward and backward on every batch (batch norms frozen)
        peft_model.eval()
        order = torch.randperm(len(y_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            loss = torch.nn.functional.cross_entropy(peft_model(pixels_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            if should_stop and should_stop():
                cancelled = True
                break
        # -- validation
        with torch.no_grad():
            logits = torch.cat([peft_model(pixels_val[i:i + 64]) for i in range(0, len(pixels_val), 64)])
            val_loss = float(torch.nn.functional.cross_entropy(logits, y_val))
            val_acc = float((logits.argmax(1) == y_val).float().mean())
        record = {"event": "progress", "epoch": epoch, "step": epoch, "total_steps": settings.epochs,
                  "percent": round(100 * epoch / settings.epochs, 1), "train_loss": round(total / len(order), 4),
                  "val_loss": round(val_loss, 4), "val_accuracy": round(val_acc, 4),
                  "examples_per_second": round(epoch * len(order) / max(time.perf_counter() - started, 1e-9), 1)}
        history.append(record)
        if on_progress:
            on_progress(record)
        if val_loss < best[0] - 1e-4:
            best, waited = (val_loss, epoch, adapter_state()), 0
        else:
            waited += 1
        if cancelled or (settings.patience and waited >= settings.patience):
            break
    seconds = time.perf_counter() - started
    # -- the best epoch's adapters, merged into plain weights
    peft_model.load_state_dict(best[2], strict=False)
    merged = peft_model.merge_and_unload()
    head = merged._fc
    state = {k: v.detach().clone() for k, v in merged.state_dict().items() if not k.startswith("_fc.")}
    return TrainedHead(labels=labels, weight=head.weight.detach().numpy().copy(),
                       bias=head.bias.detach().numpy().copy(), settings=settings, train_seconds=seconds,
                       examples_per_second=len(history) * len(order) / max(seconds, 1e-9), best_epoch=best[1],
                       history=history, cancelled=cancelled, backbone_state=state)


def _plain_pointwise_convs(model: Any) -> Any:
    """Swap the 1×1 'same'-padded convolutions for plain ``nn.Conv2d`` (a 1×1 stride-1 convolution pads nothing):
    peft builds its LoRA convolutions from the adapted layer's class, which these need an image size for."""
    import torch

    for name, module in list(model.named_modules()):
        if re.fullmatch(LORA_TARGETS, name) and tuple(module.kernel_size) == (1, 1) and tuple(module.stride) == (1, 1):
            plain = torch.nn.Conv2d(module.in_channels, module.out_channels, 1, bias=module.bias is not None)
            plain.load_state_dict(module.state_dict())
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], plain)
    return model


def backbone_with(backbone: VisionBackbone, state: dict | None) -> VisionBackbone:
    """The backbone itself, or a private copy with fine-tuned weights (LoRA merged)."""
    if state is None:
        return backbone
    model = copy.deepcopy(backbone.model)
    model.load_state_dict(state, strict=False)
    model.eval()
    return VisionBackbone(name=backbone.name + " + LoRA", model=model, image_size=backbone.image_size,
                          class_names=backbone.class_names, path=backbone.path)


# -- saving a trained classifier: safetensors + a predict.py with plain torch --------------------------------

def save_classifier(trained: TrainedHead, backbone: VisionBackbone, folder: str | Path) -> Path:
    """Write ``model.safetensors`` (backbone + head), ``config.json``, ``run.json`` and ``predict.py``."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = dict(trained.backbone_state or backbone.model.state_dict())
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    state["_fc.weight"] = torch.from_numpy(np.ascontiguousarray(trained.weight))
    state["_fc.bias"] = torch.from_numpy(np.ascontiguousarray(trained.bias))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    config = {"architecture": "efficientnet-lite0", "image_size": backbone.image_size, "labels": trained.labels,
              "mean": MEAN, "std": STD, "method": trained.settings.method}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "run.json").write_text(json.dumps({"settings": trained.settings.to_dict(),
                                                 "train_seconds": trained.train_seconds,
                                                 "best_epoch": trained.best_epoch,
                                                 "history": trained.history}, indent=1), encoding="utf-8")
    (folder / "predict.py").write_text(PREDICT_SCRIPT, encoding="utf-8")
    return folder


def load_classifier(folder: str | Path) -> tuple[VisionBackbone, list[str]]:
    """A saved classifier (``save_classifier``) as a backbone whose head outputs the labels."""
    from safetensors.torch import load_file

    from .models import build_efficientnet

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model = build_efficientnet(int(config["image_size"]), len(config["labels"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    model.eval()
    return VisionBackbone(name=folder.name, model=model, image_size=int(config["image_size"]),
                          class_names=list(config["labels"]), path=folder), list(config["labels"])


def classifier_mb(folder: str | Path) -> float:
    return round(sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file()) / 2**20, 2)


PREDICT_SCRIPT = '''"""Classify images with the fine-tuned EfficientNet-Lite0 saved beside this file.

    pip install torch pillow safetensors efficientnet-lite-pytorch==0.1.0   (the architecture needs only torch)
    python predict.py IMAGE_OR_FOLDER_OR_ZIP [OUTPUT.csv]

Writes one row per image: path,prediction,probability. Weights are read from model.safetensors only.
"""
import csv
import io
import json
import sys
import zipfile
from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def load():
    config = json.loads((HERE / "config.json").read_text())
    model = EfficientNet.from_name("efficientnet-lite0", image_size=config["image_size"],
                                   num_classes=len(config["labels"]))
    model.load_state_dict(load_file(str(HERE / "model.safetensors")))
    return model.eval(), config


def pixels(image, size, mean, std):
    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    w2, h2 = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((w2, h2), Image.BILINEAR)
    left, top = (w2 - size) // 2, (h2 - size) // 2
    image = image.crop((left, top, left + size, top + size))
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3)
    x = x.permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def images(source):
    source = Path(source)
    if source.suffix.lower() == ".zip":
        with zipfile.ZipFile(source) as archive:
            for name in archive.namelist():
                if name.lower().endswith(SUFFIXES) and "__MACOSX" not in name:
                    yield name, Image.open(io.BytesIO(archive.read(name)))
    elif source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.suffix.lower() in SUFFIXES:
                yield str(path), Image.open(path)
    else:
        yield str(source), Image.open(source)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    model, config = load()
    out = open(sys.argv[2], "w", newline="") if len(sys.argv) > 2 else sys.stdout
    writer = csv.writer(out)
    writer.writerow(["path", "prediction", "probability"])
    with torch.no_grad():
        for name, image in images(sys.argv[1]):
            probs = model(pixels(image, config["image_size"], config["mean"], config["std"])[None]).softmax(-1)[0]
            best = int(probs.argmax())
            writer.writerow([name, config["labels"][best], round(float(probs[best]), 4)])


if __name__ == "__main__":
    main()
'''
