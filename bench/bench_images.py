"""Image fine-tuning and scoring speed: ours against a plain PyTorch loop, images per second side by side.

    .venv/bin/python bench/bench_images.py --images ../shared/datasets/fashion_mnist_train.zip
    .venv/bin/python bench/bench_images.py --images train.zip --model TINY_FOLDER --rows 24   # the smoke test

Training a linear head (same head, same epochs, same optimiser) two ways:

* ours: the frozen backbone's features computed once (batch norms folded, channels-last), then every epoch
  reads the cached features;
* baseline: the plain PyTorch loop that runs the frozen backbone (as loaded) on every batch of every epoch.

Scoring: images per second through the backbone and head at batch 1 (one query at a time, as a service answers)
and batched (32), ours (the scoring copy) against the backbone as loaded. Prints each pair and its ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="a zip with one folder per label")
    p.add_argument("--model", default="bundled", help="'bundled' or a backbone folder (make_tiny_backbone)")
    p.add_argument("--rows", type=int, default=200, help="training images to use (stratified draw)")
    p.add_argument("--epochs", type=int, default=3, help="head epochs for both loops")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--score-rows", type=int, default=32, help="images scored at batch 1 and batched")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    return p.parse_args()


def main() -> None:
    import torch

    from pvf_core.images.arms import image_features, inference_copy, run_features
    from pvf_core.images.data import ImageReader, image_splits, read_image_zip
    from pvf_core.images.models import load_backbone, preprocess

    args = parse()
    torch.manual_seed(0)
    splits = image_splits(read_image_zip(args.images), seed=0, test_fraction=0.2, validation_fraction=0.0)
    train = splits.train.head(args.rows)
    labels = sorted(set(train["label"]))
    y = torch.tensor([labels.index(x) for x in train["label"]])
    backbone = load_backbone(args.model)
    reader = ImageReader()
    images = reader.rows(train)  # decoded once for both loops: the comparison is about the model's work
    print(f"{len(train)} training images, {len(labels)} labels, {args.epochs} epochs, backbone {backbone.name}")

    def fit(features_of_batch) -> float:
        """The same head, optimiser and batches for both loops; returns images per second over all epochs."""
        torch.manual_seed(0)
        head = torch.nn.Linear(backbone.feature_dim, len(labels))
        optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
        started = time.perf_counter()
        for _ in range(args.epochs):
            for i in range(0, len(train), args.batch_size):
                x = features_of_batch(i)
                loss = torch.nn.functional.cross_entropy(head(x), y[i:i + args.batch_size])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return args.epochs * len(train) / (time.perf_counter() - started)

    # -- baseline: the backbone (as loaded, frozen) runs on every batch of every epoch
    def backbone_every_time(i: int):
        with torch.no_grad():
            return backbone.features(preprocess(images[i:i + args.batch_size], backbone.image_size))

    baseline = fit(backbone_every_time)
    # -- ours: features once (timed as part of the training), then cached
    started = time.perf_counter()
    cached = torch.from_numpy(image_features(backbone, train, reader=reader, cache=False).values)
    feature_seconds = time.perf_counter() - started
    head_ips = fit(lambda i: cached[i:i + args.batch_size])
    ours = args.epochs * len(train) / (feature_seconds + args.epochs * len(train) / head_ips)

    # -- scoring: batch 1 and batched, the scoring copy against the backbone as loaded
    score = reader.rows(splits.test.head(args.score_rows)) or images[: args.score_rows]
    fast = inference_copy(backbone)

    def rate(run, batch: int) -> float:
        with torch.inference_mode():
            run(preprocess(score[:1], backbone.image_size))  # warm-up
        started = time.perf_counter()
        for i in range(0, len(score), batch):
            with torch.inference_mode():
                run(preprocess(score[i:i + batch], backbone.image_size))
        return len(score) / (time.perf_counter() - started)

    as_loaded = lambda x: backbone.model._fc(backbone.features(x))  # noqa: E731
    ours_scoring = lambda x: backbone.model._fc(run_features(fast, x))  # noqa: E731
    numbers = {
        "train_images": len(train), "epochs": args.epochs, "threads": torch.get_num_threads(),
        "finetune_images_per_second": {"ours_cached_features": round(ours, 2), "baseline_backbone_every_epoch":
                                       round(baseline, 2), "ratio": round(ours / baseline, 2)},
        "feature_seconds": round(feature_seconds, 2),
        "scoring_images_per_second": {},
    }
    for batch in (1, 32):
        mine, theirs = rate(ours_scoring, batch), rate(as_loaded, batch)
        numbers["scoring_images_per_second"][f"batch_{batch}"] = {"ours": round(mine, 2), "as_loaded": round(theirs, 2),
                                                                   "ratio": round(mine / theirs, 2)}
    f = numbers["finetune_images_per_second"]
    print(f"fine-tuning a linear head, images/s over {args.epochs} epochs: ours (cached features) {f['ours_cached_features']}"
          f" vs baseline (backbone every epoch) {f['baseline_backbone_every_epoch']}: ratio ours/baseline {f['ratio']}")
    for batch, s in numbers["scoring_images_per_second"].items():
        print(f"scoring images/s at {batch.replace('_', ' ')}: ours {s['ours']} vs as loaded {s['as_loaded']}: "
              f"ratio ours/as-loaded {s['ratio']}")
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
