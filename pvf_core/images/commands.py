"""What ``python -m pvf_core inspect|prompt|finetune|compare --images ZIP`` runs (``cli.py`` routes here early).

Same JSON keys as the CSV commands; ``--predictions`` rows carry each image's path inside its zip in the
``text`` column. The page calls the same functions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import Splits
from .arms import (ImageTrainSettings, TrainedHead, backbone_with, classifier_mb, image_features, image_preset,
                   imagenet_logits, label_prompting_scores, latency_ms, mapping_table, parse_descriptions,
                   save_classifier, suggest_label_mapping, train_head, train_lora_backbone)
from .data import ImageReader, image_health_check, load_image_splits
from .evaluate import peak_rss_mb, result_from_scores, unpredictable_warning
from .models import BUNDLED, VisionBackbone, load_backbone

LABEL_PROMPTING = "label prompting (ImageNet)"
Progress = Callable[[int, int, str], None]


def _say(message: str) -> None:
    import click

    click.echo(message, err=True)


def _need_test(test_images: str | None) -> None:
    """Without a test archive, 20% of the training archive is held out (stratified) for testing."""
    if not test_images:
        _say("No --test-images: 20% of the images are held out for testing.")


def start_image_comparison(images: str, test_images: str | None = None, *, describe: str = "", model: str = BUNDLED,
                           preset: str = "balanced", seed: int = 0) -> int:
    """Queue ``compare --images ...`` as a background job (the page's button); returns the run id."""
    from ..jobs import submit

    args = ["compare", "--images", str(images), "--model", model, "--seed", str(seed)]
    args += ["--test-images", str(test_images)] if test_images else []
    args += ["--describe", describe] if describe else []
    settings = {"images": str(images), "test_images": str(test_images or ""), "describe": describe,
                "preset": preset, "model": model, "kind": "images"}
    return submit(args, kind="compare", name="images: label prompting vs fine-tuning", settings=settings)


# -- inspect ------------------------------------------------------------------------------------------------

def inspect_images(images: str, test_images: str | None = None, *, seed: int = 0) -> dict[str, Any]:
    """Counts, labels, splits and the health check of an image archive (and its test archive)."""
    started = time.perf_counter()
    splits, notes = load_image_splits(images, test_images, seed=seed)
    warnings = image_health_check(splits, notes)
    everything = [splits.train, splits.validation, splits.test]
    labels: dict[str, int] = {}
    for frame in everything:
        for label, count in frame["label"].value_counts().items():
            labels[str(label)] = labels.get(str(label), 0) + int(count)
    return {"file": images, "test_file": test_images, "rows": sum(len(f) for f in everything),
            "columns": ["image", "label"], "task": "classification", "text_column": "image", "label_column": "label",
            "kind": "images", "split": splits.sizes(), "labels": dict(sorted(labels.items())),
            "warnings": [w.to_dict() for w in warnings], "seconds": round(time.perf_counter() - started, 3)}


# -- the arms, as the CLI and the page run them -------------------------------------------------------------------

def label_prompting_arm(backbone: VisionBackbone, splits: Splits, test_features: Any, *,
                        descriptions: dict[str, str] | None = None, mapping: dict[str, list[int]] | None = None,
                        latencies: list[float], seconds: float) -> Any:
    """The ImageNet classifier with the labels mapped to its classes, as an ``EvalResult``."""
    labels = splits.labels
    mapping = mapping or suggest_label_mapping(labels, backbone.class_names, descriptions)
    started = time.perf_counter()
    probs = label_prompting_scores(imagenet_logits(backbone, test_features.values), mapping)
    head_ms = 1000 * (time.perf_counter() - started) / max(len(splits.test), 1)
    table = mapping_table(mapping, backbone.class_names)
    spec = {"kind": "label-prompting", "descriptions": descriptions or {},
            "mapping": {label: [backbone.class_names[i].split(",")[0] for i in ids] for label, ids in mapping.items()},
            "mapping_ids": mapping}
    return result_from_scores(LABEL_PROMPTING, splits.test, labels, probs,
                              ms_per_example=test_features.ms_per_image + head_ms, latencies_ms=latencies,
                              seconds=seconds + test_features.seconds, model=backbone.name, spec=spec,
                              warnings=unpredictable_warning(mapping, splits.test)), table


def finetuned_arm(backbone: VisionBackbone, splits: Splits, settings: ImageTrainSettings, *, reader: ImageReader,
                  test_features: Any | None = None, on_progress: Callable[[dict], None] | None = None,
                  should_stop: Callable[[], bool] | None = None,
                  feature_progress: Progress | None = None) -> tuple[Any, TrainedHead, float]:
    """Train a head (or LoRA) on the training images and score it: (EvalResult, trained, feature seconds)."""
    labels = splits.labels
    started = time.perf_counter()
    if settings.method == "head":
        train_x = image_features(backbone, splits.train, reader=reader, on_progress=feature_progress,
                                 should_stop=should_stop)
        val_x = image_features(backbone, splits.validation, reader=reader, should_stop=should_stop)
        feature_seconds = train_x.seconds + val_x.seconds
        trained = train_head(train_x.values, list(splits.train["label"]), val_x.values,
                             list(splits.validation["label"]), labels, settings, on_progress=on_progress,
                             should_stop=should_stop)
        trained.train_seconds += feature_seconds
        scorer = backbone
    else:
        feature_seconds = 0.0
        trained = train_lora_backbone(backbone, splits.train, splits.validation, labels, settings, reader=reader,
                                      on_progress=on_progress, should_stop=should_stop)
        scorer = backbone_with(backbone, trained.backbone_state)
        test_features = None  # the adapted backbone gives other features
    if test_features is None:
        test_features = image_features(scorer, splits.test, reader=reader, cache=False)
    scored = time.perf_counter()
    probs = trained.scores(test_features.values)
    head_ms = 1000 * (time.perf_counter() - scored) / max(len(splits.test), 1)
    latencies = latency_ms(scorer, splits.test, reader=reader)
    name = "linear head (fine-tuned)" if settings.method == "head" else f"LoRA r={settings.rank} (fine-tuned)"
    result = result_from_scores(name, splits.test, labels, probs, ms_per_example=test_features.ms_per_image + head_ms,
                                latencies_ms=latencies, seconds=time.perf_counter() - started, model=scorer.name,
                                spec={"kind": "finetune", "settings": settings.to_dict(),
                                      "best_epoch": trained.best_epoch})
    return result, trained, feature_seconds


# -- prompt ------------------------------------------------------------------------------------------------------

def prompt_images(images: str, test_images: str | None, *, limit: int | None, seed: int, model: str,
                  predictions: str | None, describe: str | None = None, clip: str | None = None,
                  templates: str | None = None, shots: int = 0) -> dict[str, Any]:
    """Label prompting (offline), or CLIP zero-/few-shot with ``clip`` (a hub model): no training."""
    started = time.perf_counter()
    _need_test(test_images)
    splits, _ = load_image_splits(images, test_images, seed=seed)
    if limit:
        splits.test = splits.test.head(limit).reset_index(drop=True)
    descriptions = parse_descriptions(describe)
    reader = ImageReader()
    extra: dict[str, Any] = {}
    if clip:
        result = clip_arm(clip, splits, reader=reader, shots=shots, seed=seed, descriptions=descriptions,
                          templates=templates)
    else:
        backbone = load_backbone(model)
        _say(f"Computing features of {len(splits.test)} test images...")
        test_x = image_features(backbone, splits.test, reader=reader, cache=False)
        result, table = label_prompting_arm(backbone, splits, test_x, descriptions=descriptions,
                                            latencies=latency_ms(backbone, splits.test, reader=reader), seconds=0.0)
        extra["mapping"] = table.to_dict("records")
    if predictions:
        result.predictions_frame(scores=False).to_csv(predictions, index=False)
    return {**result.summary(), "seconds": round(time.perf_counter() - started, 3), "peak_rss_mb": peak_rss_mb(),
            "model": result.model, "seed": seed, "predictions": predictions, **extra,
            "can_and_cannot": CAN_AND_CANNOT}


CAN_AND_CANNOT = ("Label prompting only knows ImageNet's 1000 everyday things: it works when each label is "
                  "something a general photo collection names (shoes, bags, dogs, cars), and cannot work for "
                  "specialised labels (defects, medical findings) or for labels that differ in ways ImageNet "
                  "does not name (a shirt against a T-shirt).")


def clip_arm(name: str, splits: Splits, *, reader: ImageReader, shots: int = 0, seed: int = 0,
             descriptions: dict[str, str] | None = None, templates: str | None = None, clip_model: Any = None) -> Any:
    """CLIP zero-shot (``shots`` = 0: text prompts per label) or few-shot (class prototypes from ``shots``
    training images per label) on the test images."""
    from .arms import (DEFAULT_TEMPLATES, clip_image_prototypes, clip_text_prototypes, few_shot_rows,
                       prototype_scores)
    from .models import load_clip

    started = time.perf_counter()
    clip = clip_model or load_clip(name)
    labels = splits.labels
    template_list = [t.strip() for t in (templates or "").split("|") if t.strip()] or list(DEFAULT_TEMPLATES)
    if shots > 0:
        examples = few_shot_rows(splits.train, shots, seed)
        prototypes = clip_image_prototypes(clip.embed_images(reader.rows(examples)).numpy(),
                                           list(examples["label"]), labels)
        arm, spec = f"CLIP {shots}-shot", {"kind": "clip", "shots": shots, "examples": list(examples["text"])}
    else:
        prototypes = clip_text_prototypes(clip, labels, template_list, descriptions)
        arm, spec = "CLIP zero-shot", {"kind": "clip", "shots": 0, "templates": template_list}
    scoring = time.perf_counter()
    embeddings = np.concatenate([clip.embed_images(reader.rows(splits.test.iloc[i:i + 32])).numpy()
                                 for i in range(0, len(splits.test), 32)]) if len(splits.test) else np.zeros((0, 1))
    probs = prototype_scores(embeddings, prototypes, clip.logit_scale)
    seconds = time.perf_counter() - scoring
    latencies = []
    for i in range(min(8, len(splits.test))):
        one = time.perf_counter()
        prototype_scores(clip.embed_images(reader.rows(splits.test.iloc[i:i + 1])).numpy(), prototypes, clip.logit_scale)
        latencies.append(1000 * (time.perf_counter() - one))
    return result_from_scores(arm, splits.test, labels, probs, ms_per_example=1000 * seconds / max(len(splits.test), 1),
                              latencies_ms=latencies, seconds=time.perf_counter() - started, model=clip.name,
                              spec=spec | {"model": clip.name})


# -- finetune ----------------------------------------------------------------------------------------------------

def finetune_images(images: str, test_images: str | None, *, limit: int | None, max_train: int | None, seed: int,
                    model: str, preset: str, epochs: int | None, learning_rate: float | None, rank: int | None,
                    method: str | None, output: str | None, predictions: str | None, run_id: int | None,
                    background: bool = False, deliver: Callable[[dict], None] = lambda result: None) -> dict[str, Any]:
    """Train a linear head (default) or LoRA on the training images, score it, export it; a job in the store.

    ``deliver(result)`` (the CLI prints it) runs before the job's final status is set (``cli._as_job``)."""
    from ..cli import _as_job

    started = time.perf_counter()
    _need_test(test_images)
    settings = image_preset(preset, epochs=epochs, learning_rate=learning_rate, rank=rank, method=method, seed=seed)
    if background:
        from ..jobs import command_line, job_status, run_folder, submit

        args = ["finetune", "--images", str(Path(images).resolve()), "--test-images", str(Path(test_images).resolve()),
                "--preset", preset, "--seed", str(seed), "--model", model]
        for flag, value in (("--epochs", epochs), ("--learning-rate", learning_rate), ("--rank", rank),
                            ("--method", method), ("--limit", limit), ("--max-train", max_train)):
            if value is not None:
                args += [flag, str(value)]
        job = submit(args, kind="finetune", name=f"images: {settings.method}", settings=settings.to_dict())
        status = job_status(job)
        started_job = {"run_id": job, "status": status.status, "folder": str(run_folder(job)),
                       "progress_log": str(run_folder(job) / "progress.jsonl"), "command": command_line(job)}
        deliver(started_job)
        return started_job
    splits, _ = load_image_splits(images, test_images, seed=seed, max_train=max_train)
    if limit:
        splits.test = splits.test.head(limit).reset_index(drop=True)

    def body(log: Any, folder: str) -> dict[str, Any]:
        backbone = load_backbone(model)
        reader = ImageReader()

        def on_progress(record: dict) -> None:
            log.write(record)
            if record["epoch"] % 10 == 0 or settings.method == "lora":
                _say(f"epoch {record['epoch']}: loss {record['train_loss']:.3f}, val loss {record['val_loss']:.3f}, "
                     f"val acc {record['val_accuracy']:.3f}")

        result, trained, _ = finetuned_arm(backbone, splits, settings, reader=reader, on_progress=on_progress,
                                           should_stop=log.should_stop,
                                           feature_progress=_feature_progress(log))
        if trained.cancelled:
            return {"status": "cancelled", "train_seconds": trained.train_seconds}
        adapter_dir = save_classifier(trained, backbone, Path(folder) / "classifier")
        if predictions:
            result.predictions_frame(scores=False).to_csv(predictions, index=False)
        return {"arm": result.arm, "task": result.task, "n_test": result.n_test, "metrics": result.metrics,
                "seconds": round(time.perf_counter() - started, 3), "ms_per_example": round(result.ms_per_example, 3),
                "latency_ms_p50": round(float(np.percentile(result.latencies_ms or [0], 50)), 2),
                "peak_rss_mb": peak_rss_mb(), "train_seconds": round(trained.train_seconds, 3),
                "train_examples_per_second": round(trained.examples_per_second, 1), "adapter_dir": str(adapter_dir),
                "adapter_mb": classifier_mb(adapter_dir), "status": "done", "best_epoch": trained.best_epoch,
                "epochs_run": len(trained.history), "settings": settings.to_dict(), "warnings": [],
                "calibration": "none", "model": result.model}

    return _as_job("finetune", f"images: {settings.method}", settings.to_dict(), run_id, output, body,
                   timing_keys=("seconds", "train_seconds", "train_examples_per_second", "ms_per_example",
                                "peak_rss_mb"), deliver=deliver)


def _feature_progress(log: Any) -> Progress:
    last = {"percent": -10}

    def report(done: int, total: int, message: str) -> None:
        percent = int(100 * done / max(total, 1))
        if percent >= last["percent"] + 10:
            last["percent"] = percent
            _say(f"  {message}: {percent}%")
            log.write({"event": "status", "status": "running", "message": f"Computing {message}: {percent}%"})
    return report


# -- compare ------------------------------------------------------------------------------------------------------

def compare_images(images: str, test_images: str | None, *, limit: int | None, max_train: int | None, seed: int,
                   model: str, preset: str, epochs: int | None, learning_rate: float | None, rank: int | None,
                   method: str | None, output: str | None, predictions: str | None, run_id: int | None,
                   describe: str | None = None, clip: str | None = None, shots: str = "0",
                   dataset_name: str | None = None, deliver: Callable[[dict], None] = lambda result: None) -> dict[str, Any]:
    """Label prompting (and CLIP arms with ``clip``) against a fine-tuned head on the same test images.

    ``deliver(result)`` (the CLI prints it) runs before the job's final status is set (``cli._as_job``)."""
    from ..cli import _as_job
    from ..compare import ArmInfo, build_comparison
    from ..report import write_report, write_safe_csv

    started = time.perf_counter()
    _need_test(test_images)
    settings = image_preset(preset, epochs=epochs, learning_rate=learning_rate, rank=rank, method=method, seed=seed)
    splits, _ = load_image_splits(images, test_images, seed=seed, max_train=max_train)
    if limit:
        splits.test = splits.test.head(limit).reset_index(drop=True)
    descriptions = parse_descriptions(describe)

    def body(log: Any, folder: str) -> dict[str, Any]:
        backbone = load_backbone(model)
        reader = ImageReader()
        _say(f"Computing features of {len(splits.test)} test images...")
        test_x = image_features(backbone, splits.test, reader=reader, cache=False, should_stop=log.should_stop,
                                on_progress=_feature_progress(log))
        latencies = latency_ms(backbone, splits.test, reader=reader)
        prompted, table = label_prompting_arm(backbone, splits, test_x, descriptions=descriptions,
                                              latencies=latencies, seconds=0.0)
        results, infos = [prompted], [ArmInfo(prompted.arm, "prompt")]
        if clip:
            for k in [int(x) for x in shots.split(",") if x.strip()]:
                results.append(clip_arm(clip, splits, reader=reader, shots=k, seed=seed, descriptions=descriptions))
                infos.append(ArmInfo(results[-1].arm, "prompt", train_rows=k * len(splits.labels)))
        _say(f"Fine-tuning ({settings.method}) on {len(splits.train)} training images...")

        def on_progress(record: dict) -> None:
            log.write(record)
            if record["epoch"] % 25 == 0:
                _say(f"  epoch {record['epoch']}: val loss {record['val_loss']:.3f}, "
                     f"val acc {record['val_accuracy']:.3f}")

        tuned, trained, _ = finetuned_arm(backbone, splits, settings, reader=reader,
                                          test_features=test_x if settings.method == "head" else None,
                                          on_progress=on_progress, should_stop=log.should_stop,
                                          feature_progress=_feature_progress(log))
        if trained.cancelled:
            return {"status": "cancelled"}
        adapter_dir = save_classifier(trained, backbone, Path(folder) / "classifier")
        results.append(tuned)
        infos.append(ArmInfo(tuned.arm, "finetune", train_seconds=trained.train_seconds, train_rows=len(splits.train),
                             train_peak_rss_mb=peak_rss_mb(), adapter_mb=classifier_mb(adapter_dir),
                             adapter_dir=str(adapter_dir)))
        comparison = build_comparison(results, infos, task="classification", labels=splits.labels,
                                      dataset=dataset_name or os.path.basename(images),
                                      seconds=time.perf_counter() - started)
        paths = write_report(comparison, folder)
        if predictions:
            write_safe_csv(comparison.predictions_frame(), predictions)
        data = comparison.to_dict()
        return {"task": "classification", "kind": "images", "n_test": len(splits.test), "arms": data["arms"],
                "significance": data["significance"],
                "recommendation": {"arm": comparison.recommendation.arm,
                                   "reasons": comparison.recommendation.reasons,
                                   "what_would_change": comparison.recommendation.what_would_change},
                "break_even_queries": comparison.break_even, "mapping": table.to_dict("records"),
                "can_and_cannot": CAN_AND_CANNOT, "report": paths["html"], "predictions_csv": paths["csv"],
                "comparison_json": paths["json"], "output_dir": folder, "predictions": predictions,
                "seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": peak_rss_mb(),
                "metrics": {r.arm: r.metrics["accuracy"] for r in results}}

    def without_metrics(result: dict[str, Any]) -> None:  # the store keeps them; the JSON has them per arm
        result.pop("metrics", None)
        deliver(result)

    return _as_job("compare", "images: label prompting vs fine-tuning", settings.to_dict(), run_id, output, body,
                   timing_keys=("seconds", "peak_rss_mb"), deliver=without_metrics)
