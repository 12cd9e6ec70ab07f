"""Small image archives built in code for the image tests (no files checked in)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np


def png(seed: int, size: tuple[int, int] = (12, 12), colour: tuple[int, int, int] | None = None,
        mode: str = "RGB") -> bytes:
    """A small PNG: random pixels around ``colour`` (each seed a different image)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.array(colour if colour is not None else rng.integers(0, 255, 3), dtype=np.int16)
    pixels = np.clip(base + rng.integers(-40, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format="PNG")
    return out.getvalue()


def make_zip(path: Path, files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220), "green": (40, 200, 60)}


def labelled_files(per_label: int = 8, labels: tuple[str, ...] = ("red", "blue"), start: int = 0,
                   prefix: str = "") -> dict[str, bytes]:
    """``{label}/{i}.png`` images whose colour gives away the label (so a head can learn it)."""
    return {f"{prefix}{label}/{i}.png": png(start + 1000 * j + i, colour=COLOURS[label])
            for j, label in enumerate(labels) for i in range(per_label)}
