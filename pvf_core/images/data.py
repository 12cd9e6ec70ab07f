"""Read a zip of labelled images, check it, and cut it into the same splits the text side uses.

    read_image_zip(path_or_bytes)        -> ImageSet   (one folder per label, or a CSV naming file and label)
    image_splits(train, test=None, ...)  -> Splits     (frames with text = path inside the zip, label, hash, source)
    image_health_check(splits)           -> [HealthWarning]
    thumbnail(splits_or_set, path)       -> PNG bytes

Two layouts are read. The "imagefolder" layout (``datasets``' name for it): ``cat/001.jpg``, ``dog/002.png``;
one folder around all of them (``pets/cat/001.jpg``) is ignored, and images in sub-folders of a label folder
(``cat/indoor/003.jpg``) count for that label. Or a CSV (inside the zip, or given beside it) with a column
naming each image's path inside the zip and a label column.

Nothing is extracted to disk: images are read from the archive in memory. The archive is refused as a whole
when it is not a zip, too big, holds too many files, or expands far more than images do (a "zip bomb");
single files that are not images, or images that cannot be decoded, are left out and named in a note.
Duplicates and train/test leaks are found by a hash of the decoded pixels, so a re-saved copy counts too.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..data import HealthWarning, SplitSettings, Splits, make_splits, plural, worst_first
from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
JUNK_PARTS = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")
MIN_IMAGES = 10        # fewer and there is nothing to hold out for testing
MIN_PER_LABEL = 2      # a label needs one image to learn from and one to test on
FEW_PER_LABEL = 8      # below this: a warning (as for text rows)
SMALL_SIDE = 32        # images smaller than this on a side carry little detail for a 224-pixel model


@dataclass(frozen=True)
class ImageLimits:
    """What an uploaded image archive may be; the demo mode may lower these."""

    max_bytes: int = 200 * 1024 * 1024          # the zip itself
    max_files: int = 10_000                      # entries in the zip (folders not counted)
    max_uncompressed: int = 1024 * 1024 * 1024   # all files expanded
    max_ratio: float = 100.0                     # expanded / compressed size of one file (images barely compress)
    max_pixels: int = 50_000_000                 # one image, decoded (Pillow's decompression-bomb guard)


@dataclass
class ImageSet:
    """The readable, labelled images of one archive, and notes about what was left out."""

    name: str
    source: str  # the zip's path (or "" when read from bytes)
    frame: pd.DataFrame  # text (path inside the zip), label, hash, width, height, mode
    notes: list[HealthWarning] = field(default_factory=list)
    layout: str = "folders"  # "folders" or "csv"
    data: bytes | None = None  # the archive itself when it did not come from a file

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.frame["label"].value_counts().sort_index().items()}

    def archive(self) -> zipfile.ZipFile:
        return zipfile.ZipFile(io.BytesIO(self.data) if self.data is not None else self.source)


# -- reading ------------------------------------------------------------------------------------------------

def read_image_zip(source: str | Path | bytes, *, name: str | None = None, labels_csv: str | Path | bytes | None = None,
                   limits: ImageLimits = ImageLimits()) -> ImageSet:
    """Read and check an image archive (see the module's docstring for the layouts and the rules)."""
    data = source if isinstance(source, (bytes, bytearray)) else None
    name = name or (Path(source).name if data is None else "the upload")
    size = len(data) if data is not None else _file_size(source, name)
    if size > limits.max_bytes:
        raise DataError(f"{name} is {_mb(size)}; the limit is {_mb(limits.max_bytes)}.",
                        "Upload fewer or smaller images (resize photos to about 500 pixels a side).")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if data is not None else source)
    except zipfile.BadZipFile:
        raise DataError(f"{name} is not a zip archive.", "Put one folder per label in a .zip file and upload "
                        "that (on most systems: right-click the folder, 'Compress').") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        _check_archive(infos, name, limits)
        notes: list[HealthWarning] = []
        infos = _drop_junk(infos)
        csv_infos = [i for i in infos if i.filename.lower().endswith(".csv")]
        images = [i for i in infos if i.filename.lower().endswith(IMAGE_SUFFIXES)]
        others = [i.filename for i in infos if i not in images and i not in csv_infos]
        if labels_csv is None and len(csv_infos) == 1:
            labels_csv = archive.read(csv_infos[0])
        if others:
            notes.append(HealthWarning("not_images", f"{plural(len(others), 'file is', 'files are')} not an image "
                                       f"and {'was' if len(others) == 1 else 'were'} left out: {_names(others)}.",
                                       "warning", {"files": len(others), "names": others[:20]}))
        if not images:
            raise DataError(f"{name} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}).",
                            "Put the image files in one folder per label, then zip those folders.")
        if labels_csv is not None:
            labelled, layout = _labels_from_csv(labels_csv, images, name, notes), "csv"
        else:
            labelled, layout = _labels_from_folders(images, name, notes), "folders"
        rows, unreadable = [], []
        for info, label in labelled:
            try:
                rows.append({"text": info.filename, "label": label, **_decode(archive.read(info), limits)})
            except (_Unreadable, zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError) as why:
                unreadable.append(f"{info.filename} ({why})")
    if unreadable:
        notes.append(HealthWarning("unreadable_images", f"{plural(len(unreadable), 'image', 'images')} could not "
                                   f"be read and {'was' if len(unreadable) == 1 else 'were'} left out: "
                                   f"{_names(unreadable)}.", "warning",
                                   {"files": len(unreadable), "names": unreadable[:20]}))
    frame = pd.DataFrame(rows, columns=["text", "label", "hash", "width", "height", "mode"])
    _check_labels(frame, name)
    return ImageSet(name=name, source="" if data is not None else str(source), frame=frame, notes=notes,
                    layout=layout, data=bytes(data) if data is not None else None)


class _Unreadable(Exception):
    """An image file that cannot be decoded; the message says why in plain words."""


def _file_size(source: str | Path, name: str) -> int:
    try:
        return Path(source).stat().st_size
    except OSError:
        raise DataError(f"{name} was not found.", "Check the path.") from None


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def _names(items: Sequence[str], shown: int = 5) -> str:
    listed = ", ".join(f"'{x}'" if "(" not in x else x for x in items[:shown])
    return listed + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _check_archive(infos: list[zipfile.ZipInfo], name: str, limits: ImageLimits) -> None:
    """Refuse archives too many files, or that expand like a zip bomb, before reading any file."""
    if len(infos) > limits.max_files:
        raise DataError(f"{name} holds {len(infos):,} files; the limit is {limits.max_files:,}.",
                        "Upload a sample of your images (a few hundred per label is plenty to compare).")
    total = sum(i.file_size for i in infos)
    if total > limits.max_uncompressed:
        raise DataError(f"{name} expands to {_mb(total)}; the limit is {_mb(limits.max_uncompressed)}.",
                        "Upload fewer or smaller images.")
    for info in infos:
        if info.file_size > 1024 * 1024 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise DataError(f"{name} was refused: '{info.filename}' expands {info.file_size / max(info.compress_size, 1):,.0f}"
                            f" times ({_mb(info.compress_size)} to {_mb(info.file_size)}), which images never do; "
                            "the archive looks like a zip bomb.", "Zip the image files themselves.")
        if info.flag_bits & 0x1:
            raise DataError(f"{name} is password-protected ('{info.filename}' is encrypted).",
                            "Zip the images again without a password.")


def _drop_junk(infos: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """Leave out what operating systems add to archives (``__MACOSX/``, ``.DS_Store``, ``._name``)."""
    def junk(path: str) -> bool:
        parts = path.split("/")
        return any(p in JUNK_PARTS or p.startswith("._") for p in parts)
    return [i for i in infos if not junk(i.filename)]


def _labels_from_folders(images: list[zipfile.ZipInfo], name: str,
                         notes: list[HealthWarning]) -> list[tuple[zipfile.ZipInfo, str]]:
    """Each image's label is its top folder, below any one folder that holds everything."""
    parts = [i.filename.split("/") for i in images]
    depth = 0
    while all(len(p) > depth + 2 for p in parts) and len({p[depth] for p in parts}) == 1:
        depth += 1  # one folder around everything (e.g. 'pets/cat/1.jpg'): not a label
    loose = [i.filename for i, p in zip(images, parts) if len(p) <= depth + 1]
    if loose:
        raise DataError(f"{plural(len(loose), 'image is', 'images are')} not inside a label folder "
                        f"({_names(loose)}).", "Put each image in a folder named after its label (cat/1.jpg, "
                        "dog/2.jpg), or add a CSV with columns image and label.")
    nested = [i.filename for i, p in zip(images, parts) if len(p) > depth + 2]
    if nested:
        notes.append(HealthWarning("nested_folders", f"{plural(len(nested), 'image sits', 'images sit')} in a "
                                   f"sub-folder of a label folder (e.g. '{nested[0]}'); each counts for its top "
                                   "folder's label.", "info", {"files": len(nested)}))
    return [(i, p[depth]) for i, p in zip(images, parts)]


def _labels_from_csv(csv_source: str | Path | bytes, images: list[zipfile.ZipInfo], name: str,
                     notes: list[HealthWarning]) -> list[tuple[zipfile.ZipInfo, str]]:
    """Pair the CSV's rows with the archive's images: the column whose values name the files, and the label column."""
    from ..data import read_csv

    table = read_csv(csv_source, name="the labels CSV")
    by_path = {i.filename: i for i in images}
    by_base: dict[str, list[zipfile.ZipInfo]] = {}
    for info in images:
        by_base.setdefault(posixpath.basename(info.filename), []).append(info)

    def find(value: str) -> zipfile.ZipInfo | None:
        value = str(value).strip().replace("\\", "/").lstrip("./")
        if value in by_path:
            return by_path[value]
        found = by_base.get(posixpath.basename(value), [])
        return found[0] if len(found) == 1 else None

    frame = table.frame
    matches = {c: frame[c].map(find).notna().mean() for c in frame.columns}
    path_column = max(matches, key=matches.get) if matches else None
    if path_column is None or matches[path_column] == 0:
        raise DataError("No column of the labels CSV names the images in the archive.",
                        "Give one column the images' file names (as in the zip) and one the labels.")
    rest = [c for c in frame.columns if c != path_column]
    hinted = [c for c in rest if c.strip().lower() in ("label", "labels", "class", "category", "target", "y")]
    if not rest:
        raise DataError("The labels CSV has no label column.", "Add a column with each image's label.")
    label_column = (hinted or rest)[0]
    pairs, missing = [], []
    for value, label in zip(frame[path_column], frame[label_column]):
        info = find(value)
        if info is None:
            missing.append(str(value))
        elif str(label).strip():
            pairs.append((info, str(label).strip()))
    if missing:
        notes.append(HealthWarning("missing_images", f"{plural(len(missing), 'row', 'rows')} of the labels CSV "
                                   f"{'names' if len(missing) == 1 else 'name'} no image in the archive: "
                                   f"{_names(missing)}.", "warning", {"rows": len(missing), "names": missing[:20]}))
    unlisted = len(images) - len({id(i) for i, _ in pairs})
    if unlisted > 0:
        notes.append(HealthWarning("unlisted_images", f"{plural(unlisted, 'image is', 'images are')} not in the "
                                   "labels CSV and left out.", "info", {"files": unlisted}))
    return pairs


def _decode(raw: bytes, limits: ImageLimits) -> dict[str, Any]:
    """Decode one image fully (a truncated file fails here, not later) and hash its pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as image:
                if image.width * image.height > limits.max_pixels:
                    raise _Unreadable(f"{image.width}×{image.height} pixels, more than the "
                                      f"{limits.max_pixels:,} allowed")
                image.load()
                mode = image.mode
                rgb = image.convert("RGB")
    except UnidentifiedImageError:
        raise _Unreadable("not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _Unreadable("too many pixels") from None
    except (OSError, SyntaxError, ValueError) as error:
        text = str(error).lower()
        why = "the file is cut short" if "truncat" in text or "broken" in text else f"damaged: {error}"
        raise _Unreadable(why) from None
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}".encode() + rgb.tobytes()).hexdigest()[:16]
    return {"hash": digest, "width": rgb.width, "height": rgb.height, "mode": mode}


def _check_labels(frame: pd.DataFrame, name: str) -> None:
    """Refuse sets with no images, one label, too few images, or a label with a single image."""
    if frame.empty:
        raise DataError(f"None of the images in {name} could be read.", "Check that the files are real images.")
    counts = frame["label"].value_counts()
    if len(counts) == 1:
        raise DataError(f"All {plural(len(frame), 'image')} in {name} have the same label ('{counts.index[0]}'): "
                        "there is nothing to tell apart.", "Add a folder of images for at least one other label.")
    if len(frame) < MIN_IMAGES:
        raise DataError(f"{name} has only {plural(len(frame), 'readable image')}; at least {MIN_IMAGES} are needed "
                        "to learn from some and test on others.", "Add more images (a few dozen per label).")
    single = [str(k) for k, v in counts.items() if v < MIN_PER_LABEL]
    if single:
        raise DataError(f"{plural(len(single), 'label has', 'labels have')} only one image in {name} "
                        f"({_names(single)}): one image cannot be both learned from and tested on.",
                        "Add images for these labels, or remove their folders.")


# -- splits -------------------------------------------------------------------------------------------------

def image_splits(train: ImageSet, test: ImageSet | None = None, *, seed: int = 0, test_fraction: float = 0.2,
                 validation_fraction: float = 0.1, max_train: int | None = None) -> Splits:
    """Stratified train / validation / test splits; identical images (same pixel hash) stay on one side.

    With a separate ``test`` archive only the validation images are carved from ``train``; ``max_train``
    keeps the first N training images as the archive lists them. Each frame has ``text`` (the path inside
    its archive), ``label``, ``hash`` and ``source`` (the archive), so every row can be opened later.
    """
    def tagged(images: ImageSet) -> pd.DataFrame:
        frame = images.frame.copy()
        frame["source"] = images.source
        frame["path"] = frame["text"]
        frame["text"] = frame["hash"]  # make_splits groups rows by "text": group identical images instead
        return frame

    frame = tagged(train)
    if max_train is not None:
        frame = frame.head(max(int(max_train), 1)).reset_index(drop=True)
    settings = SplitSettings(test_fraction=0.0 if test is not None else test_fraction,
                             validation_fraction=validation_fraction, seed=seed)
    splits = make_splits(frame, "classification", settings, tagged(test) if test is not None else None)
    for part in ("train", "validation", "test"):
        table = getattr(splits, part)
        table["text"] = table["path"]
        setattr(splits, part, table.drop(columns=["path"]).reset_index(drop=True))
    return splits


# -- health check -------------------------------------------------------------------------------------------

def image_health_check(splits: Splits, notes: Sequence[HealthWarning] = ()) -> list[HealthWarning]:
    """Findings about the images, worst first: size, balance, duplicates, leaks, tiny or mixed images."""
    everything = pd.concat([splits.train, splits.validation, splits.test], ignore_index=True)
    found = list(notes)
    counts = everything["label"].value_counts()
    if len(everything) < 50:
        found.append(HealthWarning("too_few_images", f"Only {plural(len(everything), 'image')}. Scores on so few "
                                   "test images are very noisy; aim for a few dozen per label.", "warning",
                                   {"images": len(everything)}))
    rare = counts[counts < FEW_PER_LABEL]
    if len(rare):
        found.append(HealthWarning("too_few_per_label", f"{plural(len(rare), 'label has', 'labels have')} fewer than "
                                   f"{FEW_PER_LABEL} images ({', '.join(f'{k}: {v}' for k, v in rare.head(5).items())})."
                                   " Fine-tuning can hardly learn them.", "warning",
                                   {"labels": {str(k): int(v) for k, v in rare.items()}}))
    ratio = counts.iloc[0] / max(counts.iloc[-1], 1)
    if ratio >= 3:
        found.append(HealthWarning("class_imbalance", f"'{counts.index[0]}' has {ratio:.0f}× as many images as "
                                   f"'{counts.index[-1]}'; look at macro-F1, not only accuracy.", "warning",
                                   {"ratio": round(float(ratio), 2)}))
    repeats = int(everything.duplicated(["hash"]).sum())
    if repeats:
        found.append(HealthWarning("duplicate_images", f"{plural(repeats, 'image is a pixel-for-pixel copy', 'images are pixel-for-pixel copies')}"
                                   " of another image.", "info", {"images": repeats}))
    conflicting = int((everything.groupby("hash")["label"].nunique() > 1).sum())
    if conflicting:
        found.append(HealthWarning("conflicting_labels", f"{plural(conflicting, 'image appears', 'images appear')} "
                                   "with different labels; no model can get all of them right.", "warning",
                                   {"images": conflicting}))
    seen = set(splits.train["hash"]) | set(splits.validation["hash"])
    leaked = splits.test[splits.test["hash"].isin(seen)]
    if len(leaked):
        found.append(HealthWarning("leakage", f"{plural(len(leaked), 'test image also appears', 'test images also appear')}"
                                   f" among the training images (e.g. '{leaked['text'].iloc[0]}'). Scores on them "
                                   "flatter the model, fine-tuning most of all.", "warning",
                                   {"images": len(leaked), "test_images": len(splits.test)}))
    small = int(((everything["width"] < SMALL_SIDE) | (everything["height"] < SMALL_SIDE)).sum())
    if small:
        found.append(HealthWarning("small_images", f"{plural(small, 'image is', 'images are')} smaller than "
                                   f"{SMALL_SIDE} pixels on a side; they are enlarged to 224, so fine detail is lost.",
                                   "info", {"images": small}))
    grey = int(everything["mode"].isin(["L", "1", "I;16", "LA"]).sum())
    if grey:
        found.append(HealthWarning("greyscale", f"{plural(grey, 'image is', 'images are')} greyscale; the ImageNet "
                                   "model was trained on colour photos.", "info", {"images": grey}))
    found.append(HealthWarning("images", f"{plural(len(everything), 'image')} in {plural(len(counts), 'label')}; "
                               f"median size {int(everything['width'].median())}×{int(everything['height'].median())}.",
                               "info", {"images": len(everything), "labels": len(counts)}))
    return worst_first(found)


# -- opening images again ------------------------------------------------------------------------------------

class ImageReader:
    """Opens rows' images from their archives (each archive opened once)."""

    def __init__(self, archives: dict[str, bytes] | None = None) -> None:
        self._open: dict[str, zipfile.ZipFile] = {}
        self._bytes = archives or {}

    def open(self, source: str, path: str) -> Any:
        from PIL import Image

        if source not in self._open:
            self._open[source] = zipfile.ZipFile(io.BytesIO(self._bytes[source]) if source in self._bytes else source)
        image = Image.open(io.BytesIO(self._open[source].read(path)))
        image.load()
        return image

    def rows(self, frame: pd.DataFrame) -> list[Any]:
        return [self.open(s, p) for s, p in zip(frame["source"], frame["text"])]

    def close(self) -> None:
        for archive in self._open.values():
            archive.close()
        self._open.clear()


def thumbnail(source: str, path: str, size: int = 96) -> bytes:
    """A PNG thumbnail (at most ``size`` pixels a side) of one image in an archive."""
    image = ImageReader().open(source, path).convert("RGB")
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def save_upload(data: bytes, name: str = "images.zip") -> Path:
    """Keep an uploaded archive in the workspace (``uploads/images/<hash>.zip``) so a background job can read it."""
    from ..store import workspace_dir

    digest = hashlib.sha256(data).hexdigest()[:16]
    path = workspace_dir("uploads", "images") / f"{digest}-{Path(name).stem[:40]}.zip"
    if not path.is_file():
        path.write_bytes(data)
    return path


def load_image_splits(train_zip: str | Path, test_zip: str | Path | None = None, *, seed: int = 0,
                      max_train: int | None = None) -> tuple[Splits, list[HealthWarning]]:
    """What the CLI reads: splits from a training archive (and a test archive), and the reading notes."""
    train = read_image_zip(train_zip)
    test = read_image_zip(test_zip) if test_zip else None
    splits = image_splits(train, test, seed=seed, max_train=max_train)
    return splits, train.notes + (test.notes if test else [])
