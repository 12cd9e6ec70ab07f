"""Image archives: layouts, the cases that are refused or left out with a reason, splits, health check."""

from __future__ import annotations

import io
import zipfile

import pytest

from images_support import labelled_files, make_zip, png
from pvf_core.errors import DataError
from pvf_core.images.data import (ImageLimits, image_health_check, image_splits, load_image_splits, read_image_zip,
                                  thumbnail)


def codes(warnings):
    return {w.code for w in warnings}


def test_imagefolder_layout(tmp_path):
    images = read_image_zip(make_zip(tmp_path / "a.zip", labelled_files(6)))
    assert images.layout == "folders" and images.labels == {"blue": 6, "red": 6}
    assert set(images.frame.columns) >= {"text", "label", "hash", "width", "height", "mode"}
    assert images.frame["text"].iloc[0] == "red/0.png" and not images.notes


def test_one_folder_around_everything_and_nested_folders(tmp_path):
    files = labelled_files(6, prefix="pets/")
    files["pets/red/extra/99.png"] = png(99, colour=(220, 40, 40))
    images = read_image_zip(make_zip(tmp_path / "a.zip", files))
    assert images.labels == {"blue": 6, "red": 7}  # 'pets' is not a label; the nested image counts for 'red'
    assert "nested_folders" in codes(images.notes)


def test_non_images_are_left_out_and_named(tmp_path):
    files = labelled_files(6) | {"red/notes.txt": b"hello", "__MACOSX/red/._0.png": b"junk", "red/.DS_Store": b"x"}
    images = read_image_zip(make_zip(tmp_path / "a.zip", files))
    note = next(w for w in images.notes if w.code == "not_images")
    assert "'red/notes.txt'" in note.message and note.numbers["files"] == 1  # system junk is dropped silently
    assert len(images) == 12


def test_corrupt_png_is_left_out_and_named(tmp_path):
    good = png(5)
    files = labelled_files(6) | {"blue/cut.png": good[: len(good) // 2], "blue/fake.png": b"not an image at all"}
    images = read_image_zip(make_zip(tmp_path / "a.zip", files))
    note = next(w for w in images.notes if w.code == "unreadable_images")
    assert "blue/cut.png" in note.message and "blue/fake.png" in note.message
    assert "not an image" in note.message
    assert len(images) == 12


@pytest.mark.parametrize("files, words", [
    ({f"red/{i}.png": png(i) for i in range(12)}, "same label"),
    (labelled_files(3), "at least 10"),
    (labelled_files(6) | {"green/0.png": png(7)}, "only one image"),
    ({f"{i}.png": png(i) for i in range(12)}, "not inside a label folder"),
    ({"red/a.txt": b"x", "blue/b.txt": b"y"}, "holds no images"),
])
def test_unusable_sets_are_refused_with_a_reason(tmp_path, files, words):
    with pytest.raises(DataError, match=words):
        read_image_zip(make_zip(tmp_path / "a.zip", files))


def test_not_a_zip(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(b"PK? no, just text")
    with pytest.raises(DataError, match="not a zip archive"):
        read_image_zip(path)


def test_more_than_ten_thousand_files(tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(10_001):
            archive.writestr(f"a/{i}.png", b"")
    with pytest.raises(DataError, match="10,001 files; the limit is 10,000"):
        read_image_zip(path)


def test_zip_bomb_ratio(tmp_path):
    files = labelled_files(6) | {"red/bomb.png": b"\0" * (20 * 1024 * 1024)}
    with pytest.raises(DataError, match="zip bomb"):
        read_image_zip(make_zip(tmp_path / "bomb.zip", files))


def test_size_limit(tmp_path):
    path = make_zip(tmp_path / "a.zip", labelled_files(6))
    with pytest.raises(DataError, match="the limit is"):
        read_image_zip(path, limits=ImageLimits(max_bytes=100))


def test_too_many_pixels_is_unreadable(tmp_path):
    files = labelled_files(6) | {"red/huge.png": png(3, size=(300, 300))}
    images = read_image_zip(make_zip(tmp_path / "a.zip", files), limits=ImageLimits(max_pixels=200 * 200))
    assert "red/huge.png" in next(w for w in images.notes if w.code == "unreadable_images").message


def test_csv_layout_inside_the_zip(tmp_path):
    files = {f"img/{i}.png": png(i) for i in range(12)}
    files["labels.csv"] = ("file,label\n" + "".join(f"img/{i}.png,{'cat' if i % 2 else 'dog'}\n" for i in range(12))
                           + "img/missing.png,cat\n").encode()
    images = read_image_zip(make_zip(tmp_path / "a.zip", files))
    assert images.layout == "csv" and images.labels == {"cat": 6, "dog": 6}
    assert "missing_images" in codes(images.notes)


def test_csv_beside_the_zip_matches_file_names(tmp_path):
    path = make_zip(tmp_path / "a.zip", {f"x/{i}.png": png(i) for i in range(12)})
    csv = "".join(f"{i}.png;{'a' if i < 6 else 'b'}\n" for i in range(12))
    images = read_image_zip(path, labels_csv=("image;class\n" + csv).encode())
    assert images.labels == {"a": 6, "b": 6}


def test_from_bytes(tmp_path):
    data = make_zip(tmp_path / "a.zip", labelled_files(6)).read_bytes()
    images = read_image_zip(data, name="upload.zip")
    assert images.name == "upload.zip" and len(images) == 12
    assert images.archive().namelist()


def test_duplicates_and_leaks_found_by_pixel_hash(tmp_path):
    from PIL import Image

    train_files = labelled_files(10)
    train_files["red/copy.png"] = train_files["red/0.png"]
    # the same pixels saved again as an RGBA PNG under another name in the test set: still a leak
    again = io.BytesIO()
    Image.open(io.BytesIO(train_files["blue/3.png"])).convert("RGBA").save(again, format="PNG")
    test_files = labelled_files(5, start=500) | {"blue/resaved.png": again.getvalue()}
    splits, notes = load_image_splits(make_zip(tmp_path / "train.zip", train_files),
                                      make_zip(tmp_path / "test.zip", test_files))
    found = image_health_check(splits, notes)
    leak = next(w for w in found if w.code == "leakage")
    assert leak.numbers["images"] == 1 and "blue/resaved.png" in leak.message
    assert "duplicate_images" in codes(found)


def test_stratified_splits_keep_identical_images_together(tmp_path):
    files = labelled_files(20)
    for i in range(5):
        files[f"red/dup{i}.png"] = files["red/0.png"]
    images = read_image_zip(make_zip(tmp_path / "a.zip", files))
    splits = image_splits(images, seed=1)
    assert set(splits.test["label"]) == {"red", "blue"} and set(splits.validation["label"]) == {"red", "blue"}
    copies = images.frame.loc[images.frame["text"] == "red/0.png", "hash"].iloc[0]
    sides = [part for part in ("train", "validation", "test") if (getattr(splits, part)["hash"] == copies).any()]
    assert len(sides) == 1  # all six copies on one side of every cut
    assert set(splits.test.columns) >= {"text", "label", "hash", "source"}
    assert not set(splits.test["text"]) & set(splits.train["text"])


def test_health_check_notes_small_and_greyscale(tmp_path):
    files = {f"{label}/{i}.png": png(i + 50 * j, size=(20, 20), mode="L")
             for j, label in enumerate(("a", "b")) for i in range(6)}
    splits, notes = load_image_splits(make_zip(tmp_path / "a.zip", files), None)
    found = codes(image_health_check(splits, notes))
    assert {"small_images", "greyscale", "too_few_images", "too_few_per_label"} <= found


def test_thumbnail(tmp_path):
    from PIL import Image

    path = make_zip(tmp_path / "a.zip", labelled_files(6) | {"red/big.png": png(1, size=(300, 200))})
    data = thumbnail(str(path), "red/big.png", size=96)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and max(image.size) == 96


def test_the_shared_fashion_mnist_zips():
    from conftest import dataset_path

    splits, notes = load_image_splits(dataset_path("fashion_mnist_train.zip"), dataset_path("fashion_mnist_test.zip"))
    assert splits.sizes() == {"train": 900, "validation": 100, "test": 500}
    assert len(splits.labels) == 10 and splits.test["label"].value_counts().tolist() == [50] * 10
    assert splits.validation["label"].value_counts().tolist() == [10] * 10  # stratified
    found = {w.code for w in image_health_check(splits, notes)}
    assert "leakage" not in found and {"small_images", "greyscale"} <= found
