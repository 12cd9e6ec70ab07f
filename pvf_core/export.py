"""Portable export: an arm as a folder that runs without PvF Studio (torch, transformers and peft only).

    export_arm(folder, arm, result, train=...)   -> the folder, holding:

    adapter_config.json, adapter_model.safetensors   the LoRA adapter (fine-tuned arms only), whose
                                                     ``base_model_name_or_path`` is the base model's hub id
    README.md          the model card: base model (hub id), prompt, scores, how to run it, limits
    prompt.txt         the prompt as plain text
    prompt.json        everything needed to render it: system message, examples (or the pool "similar"
                       examples are picked from), chat template, labels, their words and answer token ids
    calibration.json   {method, fitted_on, rows, labels, log_bias}: applied row by row as
                       softmax(log_softmax(scores) - log_bias)
    scores.json        the scores PvF Studio measured on the test rows
    predict.py         ``python predict.py [--base-model DIR] INPUT.csv OUTPUT.csv``

``predict.py`` reproduces the predictions PvF Studio reported for the arm: the same prompt ids, the same
label scores (mean log-probability per answer token), the same calibration applied to each row on its
own, the same data type. ``ArmPackage`` reads such a folder back; ``predict_texts`` answers new rows with
PvF Studio's own (faster, batched) engine and the same calibration.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .errors import ModelLoadError, SettingsError

BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PREDICT_SCRIPT = Path(__file__).resolve().parent / "assets" / "predict.py"
PROMPT_FILE, CALIBRATION_FILE, SCORES_FILE, CARD_FILE = "prompt.json", "calibration.json", "scores.json", "README.md"
EXPORT_FORMAT = 1
SPARE_ROWS = 200  # spare example rows kept for swapping out an example that is the row's own text
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Progress = Callable[[int, int, str], None]


# -- the base model's name ----------------------------------------------------------------------------------

def hub_id(model: str | None) -> str:
    """The name another machine loads the base model by: a hub id where one is known.

    'bundled' (and its converted folder) → SmolLM2-135M-Instruct's hub id; a hub id stays; a local folder →
    the hub id its config or tokenizer config records (``_name_or_path``), else the folder itself.
    """
    from .models import BUNDLED, CONVERTED_NAME, model_cache_dir

    if model in (None, "", BUNDLED):
        return BUNDLED_HUB_ID
    path = Path(str(model)).expanduser()
    if not path.exists():
        return str(model)
    if path.resolve() == (model_cache_dir() / CONVERTED_NAME).resolve():
        return BUNDLED_HUB_ID
    for name in ("config.json", "tokenizer_config.json"):
        try:
            values = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key in ("_name_or_path", "name_or_path"):
            found = str(values.get(key) or "")
            if _HUB_ID.match(found) and not Path(found).exists():
                return found
    return str(path.resolve())


# -- calibration --------------------------------------------------------------------------------------------

def calibration_of(result: Any, spec: Any, *, train: pd.DataFrame | None = None, loaded: Any = None,
                   examples: Sequence[tuple[str, str]] = ()) -> dict:
    """The calibration the arm's reported predictions used, as a fixed per-label ``log_bias``.

    The harness's ``calibration_fit`` when it has one; otherwise derived from how the result was
    calibrated: 'batch' divided each row's probabilities by a leaning measured over the scored rows, which
    is the same as subtracting log(leaning) from every row's log-probabilities; 'content-free' by the
    probabilities for an empty text (scored again here with ``loaded``); 'none' by nothing.
    ``train`` must be the pool the evaluation was given (its label shares enter 'batch').
    """
    from .calibration import softmax

    fit = getattr(result, "calibration_fit", None)
    if fit:
        return dict(fit)
    labels = list(spec.labels)
    none = {"method": "none", "fitted_on": None, "rows": 0, "labels": labels, "log_bias": [0.0] * len(labels)}
    method = spec.calibration if spec.task == "classification" else "none"
    if method in ("batch", "fitted") and result is not None and result.raw_label_scores:
        probs = np.array([[row[label] for label in labels] for row in result.raw_label_scores], dtype=np.float64)
        leaning = probs.mean(axis=0)
        shares = _label_shares(train, labels)
        if shares is not None:
            leaning = leaning / np.maximum(shares, 1e-12)
        return {"method": "batch", "fitted_on": "test", "rows": int(len(probs)), "labels": labels,
                "log_bias": [float(x) for x in np.log(np.maximum(leaning, 1e-12))]}
    if method == "content-free":
        from .evaluate import score_labels
        from .prompting import CONTENT_FREE_TEXT, Renderer

        if loaded is None:
            raise SettingsError("Content-free calibration is exported with the arm's model loaded.")
        renderer = Renderer(spec, loaded.tokenizer)
        answers = [renderer.answer_ids(label) for label in labels]
        free = score_labels(loaded, [renderer.prompt_ids(CONTENT_FREE_TEXT, list(examples))], answers)[0]
        leaning = softmax(np.asarray(free, dtype=np.float64))
        return {"method": "content-free", "fitted_on": None, "rows": 1, "labels": labels,
                "log_bias": [float(x) for x in np.log(np.maximum(leaning, 1e-12))]}
    return none


def _label_shares(train: pd.DataFrame | None, labels: Sequence[str]) -> np.ndarray | None:
    """How common each label is among the training rows (add-one smoothed): what results saved before
    fixed calibrations divided by."""
    if train is None or len(train) == 0:
        return None
    counts = train["label"].astype(str).value_counts().reindex(list(labels), fill_value=0).to_numpy(float) + 1
    return counts / counts.sum()


# -- what the prompt needs ----------------------------------------------------------------------------------

def prompt_data(spec: Any, tokenizer: Any, *, context_length: int, train: pd.DataFrame | None = None,
                base_model: str, dtype: str) -> dict:
    """``prompt.json``: everything ``predict.py`` needs to render and score the prompt as the harness did.

    Examples: for random, balanced and hand-picked selections the examples every row is shown, with the
    first spare rows that replace one whose text is the row's own; for 'similar' the whole pool, each row
    then gets its nearest rows (never its own text). A row's examples depend on that row and the pool alone.
    """
    from .prompting import ROW_PLACEHOLDER, Renderer, _balanced, examples_for, select_examples

    renderer = Renderer(spec, tokenizer)
    pool = [[str(t), str(label)] for t, label in zip(train["text"], train["label"])] if train is not None else []
    if spec.n_examples and spec.selection == "similar":
        examples: dict = {"selection": "similar", "k": spec.n_examples, "pool": pool}
    elif spec.n_examples:
        # The same examples for every row, except that one with the row's own text is swapped for the next
        # spare row (same label first), as the harness does; the first spare rows are kept for that.
        base = select_examples(spec, train, [""])[0]
        spare: list = []
        if spec.selection in ("random", "balanced"):
            rng = np.random.default_rng(spec.seed)
            everyone = np.arange(len(train))
            drawn = ([int(i) for i in rng.choice(everyone, size=spec.n_examples, replace=False)]
                     if spec.selection == "random" else None)
            drawn = drawn if drawn is not None else _balanced(train, everyone, spec.n_examples, rng, spec.task)
            spare = [pool[int(i)] for i in rng.permutation(everyone) if int(i) not in set(drawn)][:SPARE_ROWS]
        examples = {"selection": spec.selection, "items": [list(e) for e in examples_for(train, base)],
                    "spare": spare}
    else:
        examples = {"selection": "none", "items": [], "spare": []}
    classification = spec.task == "classification"
    answers = [renderer.answer_ids(label) for label in spec.labels] if classification else []
    room = context_length - (max(len(a) for a in answers) if classification else spec.max_answer_tokens)
    return {
        "format": EXPORT_FORMAT, "task": spec.task, "base_model": base_model, "dtype": dtype,
        "system": spec.system_message(), "example_style": spec.example_style, "examples": examples,
        "labels": list(spec.labels), "words": {label: spec.word(label) for label in spec.labels},
        "answer_ids": answers, "row_placeholder": ROW_PLACEHOLDER, "max_prompt_tokens": int(room),
        "chat_template": tokenizer.chat_template,
        "generation": {"max_answer_tokens": spec.max_answer_tokens, "stop_at_newline": spec.stop_at_newline,
                       "stop_ids": sorted(renderer.stop_ids())},
        "spec": spec.to_dict(),
    }


def prompt_text(data: dict) -> str:
    """The prompt as plain text: the system message, the examples, where the row goes."""
    lines = ["SYSTEM", data["system"], ""]
    examples = data["examples"]
    if examples["selection"] == "similar":
        lines += [f"EXAMPLES: the {examples['k']} training rows most similar to each text (TF-IDF word overlap), "
                  f"picked from {len(examples['pool'])} rows kept in prompt.json.", ""]
    for text, label in examples.get("items", []):
        lines += ["USER", text, "", "ASSISTANT", data["words"].get(label) or label, ""]
    lines += ["USER", "{text}", "", "ASSISTANT"]
    if data["task"] == "classification":
        lines.append("(one of: " + ", ".join(data["words"][label] for label in data["labels"]) + ")")
    return "\n".join(lines) + "\n"


# -- writing the folder -------------------------------------------------------------------------------------

def export_arm(folder: str | Path, arm: Any, result: Any, *, train: pd.DataFrame | None = None,
               loaded: Any = None, dtype: str | None = None, calibration: dict | None = None,
               text_column: str | None = None) -> Path:
    """Write the portable export of ``arm`` (scored as ``result``) into ``folder``; returns it.

    ``train``: the pool the evaluation drew examples from (None for fine-tuned arms, which are scored
    zero-shot); ``loaded``: the base model as evaluated (for its tokenizer and data type; loaded when not
    given). ``folder`` may be the adapter's own folder: the adapter then stays where it is and only its
    config's base model name changes.
    """
    from .models import context_length_of, load_tokenizer, scoring_dtype
    from .prompting import PromptSpec

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = PromptSpec.from_dict(result.spec) if result is not None and result.spec else arm.prompt
    if loaded is not None:
        tokenizer, context = loaded.tokenizer, loaded.context_length
        dtype = dtype or str(loaded.dtype).replace("torch.", "")
    else:
        tokenizer, context = _tokenizer(arm.model, load_tokenizer), context_length_of(arm.model)
        dtype = dtype or str(scoring_dtype()).replace("torch.", "")  # what the harness answered in
    base = hub_id(arm.model)
    data = prompt_data(spec, tokenizer, context_length=context, train=train, base_model=base, dtype=dtype)
    if text_column:
        data["text_column"] = text_column
    if calibration is None:
        examples = [tuple(e) for e in data["examples"].get("items", [])]
        scorer = None
        if spec.task == "classification" and spec.calibration == "content-free" and not getattr(
                result, "calibration_fit", None):
            from .evaluate import load_arm_model

            scorer = load_arm_model(arm, loaded)  # the content-free text is scored by the arm itself
        calibration = calibration_of(result, spec, train=train, loaded=scorer, examples=examples)
    if arm.adapter:
        _copy_adapter(Path(arm.adapter), folder, base)
    scores = scores_of(arm, result)
    _write_json(folder / PROMPT_FILE, data)
    (folder / "prompt.txt").write_text(prompt_text(data), encoding="utf-8")
    _write_json(folder / CALIBRATION_FILE, calibration)
    _write_json(folder / SCORES_FILE, scores)
    (folder / CARD_FILE).write_text(model_card(arm, data, calibration, scores), encoding="utf-8")
    shutil.copyfile(PREDICT_SCRIPT, folder / "predict.py")
    return folder


def _tokenizer(model: str, load_tokenizer: Callable[[str], Any]) -> Any:
    """The tokenizer as ``models.load_model`` sets it up (ChatML template where the model has none)."""
    import copy

    from .models import CHATML_TEMPLATE

    tokenizer = copy.copy(load_tokenizer(model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _copy_adapter(source: Path, folder: Path, base: str) -> None:
    from .models import check_adapter_folder

    check_adapter_folder(source)
    if source.resolve() != folder.resolve():
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copyfile(source / name, folder / name)
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    _write_json(config_path, config)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def scores_of(arm: Any, result: Any) -> dict:
    """The measured scores kept with an export (what the test rows said about this arm)."""
    if result is None:
        return {"arm": arm.name, "measured": False}
    keep = ("accuracy", "macro_f1", "chrf", "exact_match", "per_label", "raw")
    return {"arm": arm.name, "measured": True, "n_test": result.n_test, "task": result.task,
            "metrics": {k: v for k, v in result.metrics.items() if k in keep},
            "ms_per_example": round(result.ms_per_example, 2),
            "prompt_tokens_per_row": round(result.prompt_tokens_per_row, 1), "model": result.model}


def model_card(arm: Any, data: dict, calibration: dict, scores: dict) -> str:
    """The README of an export: what it is, how to run it, what it scored, its limits."""
    base = data["base_model"]
    adapter = bool(arm.adapter)
    kind = "a LoRA adapter for" if adapter else "a prompt (no adapter) for"
    labels = ", ".join(data["labels"]) or "(free text)"
    metrics = scores.get("metrics", {})
    shown = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in metrics.items() if isinstance(v, (int, float)))
    header = f"---\nlibrary_name: peft\nbase_model: {base}\ntags: [lora, pvf-studio]\n---\n" if adapter else ""
    probabilities = " and each label's probability (`p_<label>`)" if data["labels"] else ""
    examples = data["examples"]
    how_examples = ("none (zero-shot)" if examples["selection"] == "none" else
                    f"the {examples['k']} most similar training rows per text" if examples["selection"] == "similar"
                    else f"{len(examples['items'])} fixed examples ({examples['selection']})")
    return f"""{header}# {arm.name}: {kind} `{base}`

Exported by PvF Studio. Task: {data['task']} ({labels}). Base model: [`{base}`](https://huggingface.co/{base})
in {data['dtype']}.

## Run it
Needs only `torch`, `transformers` and `peft`:

```bash
pip install torch transformers peft
python predict.py INPUT.csv OUTPUT.csv                         # loads {base} from the hub
python predict.py --base-model /path/to/model INPUT.csv OUTPUT.csv   # or a local copy of it
```

OUTPUT.csv holds INPUT's rows with a `prediction` column{probabilities}.

## Prompt
Examples: {how_examples}. The prompt is in `prompt.txt` (plain text) and `prompt.json` (what `predict.py`
renders with the model's chat template). Calibration: {calibration.get('method')}{
    f" (fitted on {calibration.get('fitted_on')} rows)" if calibration.get('fitted_on') else ''}; `calibration.json`
holds the per-label correction applied to each row.

## Scores measured by PvF Studio
{f"{shown} on {scores.get('n_test')} test rows." if shown else "Not measured."} Details in `scores.json`.

## Intended use and limits
For the task and kind of text it was measured on. Expect it to be wrong on texts unlike the training rows,
on labels that were rare in them, and on any other task; check its predictions on new data before relying
on them. It inherits the base model's biases.
"""


# -- reading an export back, and answering with it ------------------------------------------------------------

@dataclass
class ArmPackage:
    """An export folder read back: enough to answer new rows exactly as the arm was scored."""

    folder: Path
    prompt: dict
    calibration: dict
    scores: dict

    @classmethod
    def load(cls, folder: str | Path) -> "ArmPackage":
        folder = Path(folder).expanduser()
        if not (folder / PROMPT_FILE).is_file():
            raise ModelLoadError(f"{folder} is not an exported arm (it has no {PROMPT_FILE}).",
                                 "Pick a folder PvF Studio exported, or a fine-tuning run's output folder.")
        read = lambda name: json.loads((folder / name).read_text(encoding="utf-8")) if (folder / name).is_file() else {}
        return cls(folder=folder, prompt=read(PROMPT_FILE), calibration=read(CALIBRATION_FILE),
                   scores=read(SCORES_FILE))

    @property
    def adapter(self) -> str | None:
        return str(self.folder) if (self.folder / "adapter_model.safetensors").is_file() else None

    def spec(self) -> Any:
        from .prompting import PromptSpec

        return PromptSpec.from_dict(self.prompt.get("spec", {}))


def package_examples(prompt: dict, texts: Sequence[str]) -> list[list[tuple[str, str]]]:
    """Each text's examples, as the export's ``predict.py`` picks them (and the harness did)."""
    from .prompting import _normalise, _similar, _without_own_text

    examples = prompt["examples"]
    if examples["selection"] == "similar":
        pool = pd.DataFrame(examples["pool"], columns=["text", "label"])
        keys = [_normalise(t) for t in pool["text"]]
        picked = _similar(pool, keys, int(examples["k"]), [str(t) for t in texts])
        return [[tuple(examples["pool"][i]) for i in ids] for ids in picked]
    items = [tuple(e) for e in examples.get("items", [])]
    if examples["selection"] not in ("random", "balanced"):
        return [items] * len(texts)
    rows = items + [tuple(e) for e in examples.get("spare", [])]
    keys, labels = [_normalise(t) for t, _ in rows], [label for _, label in rows]
    base, spare = list(range(len(items))), list(range(len(items), len(rows)))
    return [[rows[i] for i in _without_own_text(base, spare, keys, labels, _normalise(t))] for t in texts]


@dataclass
class Answers:
    """New rows answered by one arm: a prediction per row and, for labels, how sure it is."""

    predictions: list[str]
    probabilities: list[dict[str, float]] | None
    seconds: float

    def confidence(self) -> list[float | None]:
        if not self.probabilities:
            return [None] * len(self.predictions)
        return [max(p.values()) for p in self.probabilities]


def predict_texts(package: ArmPackage, texts: Sequence[str], *, loaded: Any = None, model: str | None = None,
                  on_progress: Progress | None = None) -> Answers:
    """Answer ``texts`` with an exported arm, each row on its own (calibration applied row by row).

    ``model``: where to load the base model from ('bundled', a folder, a hub id; default: the export's hub
    id, or 'bundled' for the bundled model's id); ``loaded``: that model already loaded (no adapter).
    """
    import time

    from .evaluate import Arm, generate_answers, load_arm_model, score_labels
    from .prompting import Renderer

    started = time.perf_counter()
    texts = [str(t).strip() for t in texts]
    if not texts:
        raise SettingsError("There are no rows to answer.")
    spec = package.spec()
    base = model or ("bundled" if package.prompt.get("base_model") == BUNDLED_HUB_ID else package.prompt["base_model"])
    runnable = load_arm_model(Arm("export", spec, model=base, adapter=package.adapter), loaded)
    renderer = Renderer(spec, runnable.tokenizer)
    room = int(package.prompt["max_prompt_tokens"])
    example_sets = package_examples(package.prompt, texts)
    prompts = [renderer.prompt_ids(t, ex, max_tokens=room) for t, ex in zip(texts, example_sets)]
    done = {"rows": 0}

    def on_batch(rows: list[int], seconds: float) -> None:
        done["rows"] += len(rows)
        if on_progress:
            on_progress(done["rows"], len(texts), f"Answered {done['rows']}/{len(texts)} rows")

    if spec.task == "classification":
        answers = [list(a) for a in package.prompt["answer_ids"]]
        scores = score_labels(runnable, prompts, answers, on_batch=on_batch)
        probs = apply_calibration(scores, package.calibration.get("log_bias"))
        labels = list(package.prompt["labels"])
        return Answers(predictions=[labels[i] for i in probs.argmax(axis=1)],
                       probabilities=[{label: float(p) for label, p in zip(labels, row)} for row in probs],
                       seconds=time.perf_counter() - started)
    generation = package.prompt["generation"]
    limits = [min(generation["max_answer_tokens"], 2 * len(renderer.encode(t)) + 16) for t in texts]
    predictions = generate_answers(runnable, prompts, max_new_tokens=limits, stop_ids=set(generation["stop_ids"]),
                                   stop_at_newline=generation["stop_at_newline"], on_batch=on_batch)
    return Answers(predictions=predictions, probabilities=None, seconds=time.perf_counter() - started)


def apply_calibration(scores: np.ndarray, log_bias: Sequence[float] | None) -> np.ndarray:
    """Probabilities [rows, labels], each row on its own: softmax(log_softmax(scores) - log_bias)."""
    scores = np.asarray(scores, dtype=np.float64)
    bias = np.zeros(scores.shape[-1]) if not log_bias else np.asarray(log_bias, dtype=np.float64)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    adjusted = log_probs - bias
    adjusted = np.exp(adjusted - adjusted.max(axis=-1, keepdims=True))
    return adjusted / adjusted.sum(axis=-1, keepdims=True)


# -- saved arms: prompt versions and fine-tuning runs -----------------------------------------------------------

EXPORT_DIR = "export"  # an arm's export, inside its run folder


@dataclass
class SavedArm:
    """A prompt version, a finished fine-tuning run or an arm of a standard comparison that can answer new rows."""

    kind: str           # "prompt" | "finetune" | "comparison"
    id: int             # the version id (prompt) or run id (finetune, comparison)
    name: str
    run_id: int | None
    metrics: dict
    arm: str = ""       # comparison: the arm's name in it
    source: str = ""    # comparison: the arm's kind there ("prompt" | "finetune")

    @property
    def label(self) -> str:
        if self.kind == "comparison":
            return f"Comparison #{self.id}: {self.arm}"
        return f"{'Prompt' if self.kind == 'prompt' else 'Fine-tuned'}: {self.name}"


def saved_arms(store: Any, dataset_id: int | None) -> list[SavedArm]:
    """A dataset's prompt versions and finished fine-tuning runs, newest first."""
    arms = [SavedArm("prompt", v.id, v.name, v.run_id, v.metrics) for v in store.list_prompt_versions(dataset_id)]
    arms.reverse()
    for run in store.list_runs(kind="finetune", dataset_id=dataset_id, status="done"):
        if run.folder and (Path(run.folder) / "adapter_model.safetensors").is_file():
            arms.append(SavedArm("finetune", run.id, run.name or f"run {run.id}", run.id, run.metrics))
    return arms


def comparison_arms(store: Any, dataset_id: int | None) -> list[SavedArm]:
    """The arms of a dataset's finished standard comparisons (newest comparison first, arms in their order).

    Comparisons of runs already in the store are left out: their arms are those runs and versions. A fine-tuned
    arm whose adapter is gone is left out too.
    """
    arms = []
    for run in store.list_runs(kind="compare", dataset_id=dataset_id, status="done"):
        data = _comparison_data(run)
        if data is None or run.settings.get("shots") is None:
            continue
        for info, result in zip(data.get("arm_infos", []), data.get("results", [])):
            if info.get("kind") == "finetune":
                adapter = info.get("adapter_dir")
                if not adapter or not (Path(adapter) / "adapter_model.safetensors").is_file():
                    continue
            elif info.get("kind") != "prompt" or not result.get("spec"):
                continue
            arms.append(SavedArm("comparison", run.id, info["name"], run.id, result.get("metrics") or {},
                                 arm=info["name"], source=info["kind"]))
    return arms


def _comparison_data(run: Any) -> dict | None:
    path = Path(run.folder) / "comparison.json" if run and run.folder else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def export_comparison_arm(run_id: int, arm_name: str, *, store: Any = None, loaded: Any = None) -> Path:
    """The export of one arm of a standard comparison (written once inside the comparison's folder).

    A fine-tuned arm's adapter folder becomes its export (it holds the run, its calibration and scores); a
    prompt arm is exported with the comparison's training rows as its example pool, so it answers as scored.
    """
    from .compare.comparison import _eval_result
    from .data import load_dataset
    from .evaluate import Arm
    from .prompting import PromptSpec
    from .store import Store

    store = store or Store()
    run = store.get_run(run_id)
    data = _comparison_data(run)
    found = next(((i, r) for i, r in zip(data.get("arm_infos", []), data.get("results", []))
                  if i.get("name") == arm_name), None) if data else None
    if found is None:
        raise SettingsError(f"There is no arm '{arm_name}' in comparison {run_id} (any more).",
                            "Pick another arm, or run the comparison again.")
    info, saved = found
    if info.get("kind") == "finetune":
        return export_finetune_run(info["adapter_dir"], loaded=loaded)
    target = Path(run.folder) / EXPORT_DIR / re.sub(r"[^\w.-]+", "-", arm_name).strip("-")
    if (target / PROMPT_FILE).is_file():
        return target
    result = _eval_result(saved)
    dataset = load_dataset(run.dataset_id, store=store) if run.dataset_id is not None else None
    pool = None
    if dataset is not None:
        max_train = run.settings.get("max_train")
        pool = dataset.splits.train.head(int(max_train)) if max_train else dataset.splits.train
    model = model_id_of(result.base_model or run.settings.get("model"))
    arm = Arm(arm_name, PromptSpec.from_dict(result.spec), model=model)
    return export_arm(target, arm, result, train=pool, loaded=loaded,
                      text_column=dataset.mapping.text_column if dataset else None)


def model_id_of(recorded: str | None) -> str:
    """The model a prompt version ran on, as ``load_model`` takes it (versions record its display name)."""
    from .models import BUNDLED, BUNDLED_LABEL

    if not recorded or recorded == BUNDLED_LABEL:
        return BUNDLED
    return recorded


def export_prompt_version(version_id: int, *, store: Any = None, loaded: Any = None) -> Path:
    """The export of a saved prompt version (written once into its run folder, then reused)."""
    from .compare import load_eval_result
    from .data import load_dataset
    from .evaluate import Arm
    from .jobs import run_folder
    from .prompting import PromptSpec
    from .store import Store

    store = store or Store()
    version = next((v for v in store.list_prompt_versions() if v.id == version_id), None)
    if version is None:
        raise SettingsError(f"There is no prompt version {version_id} in this workspace.",
                            "See the saved versions on the Prompt builder page.")
    run = store.get_run(version.run_id) if version.run_id is not None else None
    folder = Path(run.folder) if run and run.folder else run_folder(version.run_id or 0)
    target = folder / EXPORT_DIR
    if (target / PROMPT_FILE).is_file():
        return target
    result = load_eval_result(folder) if run and run.folder else None
    dataset = load_dataset(version.dataset_id, store=store) if version.dataset_id is not None else None
    spec = PromptSpec.from_dict(version.spec)
    model = model_id_of(run.settings.get("model") if run else None)
    if result is None and spec.task == "classification" and not spec.labels and dataset is not None:
        spec = spec.with_(labels=list(dataset.splits.labels))
    arm = Arm(version.name, spec, model=model)
    return export_arm(target, arm, result, train=dataset.splits.train if dataset else None, loaded=loaded,
                      text_column=dataset.mapping.text_column if dataset else None)


def export_finetune_run(folder: str | Path, *, loaded: Any = None) -> Path:
    """The export of a fine-tuning run folder: the folder itself once it holds one, else written into it."""
    from .compare import load_eval_result
    from .finetune import FinetuneRun

    folder = Path(folder)
    if (folder / PROMPT_FILE).is_file():
        return folder
    run = FinetuneRun.load(folder)
    return export_arm(folder, run.arm(), load_eval_result(folder), loaded=loaded)


def export_saved(arm: SavedArm, *, store: Any = None) -> Path:
    from .store import Store

    store = store or Store()
    if arm.kind == "prompt":
        return export_prompt_version(arm.id, store=store)
    if arm.kind == "comparison":
        return export_comparison_arm(arm.id, arm.arm, store=store)
    run = store.get_run(arm.id)
    if run is None or not run.folder:
        raise SettingsError(f"Run {arm.id} has no folder to export.")
    return export_finetune_run(run.folder)


def package_from_prompt_file(path: str | Path, *, model: str = "bundled") -> ArmPackage:
    """An exported ``prompt.json`` (its folder is the package), or a prompt specification JSON (zero-shot)."""
    from .errors import DataError
    from .evaluate import Arm
    from .prompting import PromptSpec

    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"The prompt file {path} could not be read as JSON ({error}).") from None
    if not isinstance(data, dict):
        raise DataError(f"The prompt file {path} holds no prompt (a JSON object is expected).")
    if "format" in data and "spec" in data:
        return ArmPackage.load(path.parent)
    spec = PromptSpec.from_dict(data)
    if spec.n_examples:
        raise SettingsError("A prompt with examples needs the training rows they come from.",
                            "Use --prompt-version, or the prompt.json of an export.")
    if spec.task == "classification" and not spec.labels:
        raise SettingsError("The prompt lists no labels to choose from.", "Add \"labels\": [...] to the file.")
    import tempfile

    target = Path(tempfile.mkdtemp(prefix="pvf-prompt-"))
    return ArmPackage.load(export_arm(target, Arm(spec.name(), spec, model=model), None))


def text_column_of(table: Any, wanted: str | None = None, recorded: str | None = None) -> str:
    """The column of an unlabelled CSV that holds the texts to answer."""
    from .errors import DataError

    columns = list(table.columns)
    if wanted:
        if wanted not in columns:
            raise DataError(f"The file has no column '{wanted}'; its columns are {', '.join(columns)}.")
        return wanted
    for name in (recorded, "text", "input"):
        if name and name in columns:
            return name
    if len(columns) == 1:
        return columns[0]
    lengths = {c: table.frame[c].astype(str).str.len().mean() for c in columns}
    return max(columns, key=lambda c: lengths[c])  # the column with the longest texts


def label_frame(package: ArmPackage, frame: pd.DataFrame, column: str, *, model: str | None = None,
                loaded: Any = None, on_progress: Progress | None = None) -> tuple[pd.DataFrame, Answers]:
    """``frame`` with a ``prediction`` column (and ``p_<label>`` columns), answered row by row."""
    from .errors import DataError

    texts = [str(t) for t in frame[column]]
    if not any(t.strip() for t in texts):
        raise DataError(f"The column '{column}' is empty: there is nothing to answer.")
    answers = predict_texts(package, texts, model=model, loaded=loaded, on_progress=on_progress)
    out = frame.copy()
    out["prediction"] = answers.predictions
    if answers.probabilities:
        for label in package.prompt["labels"]:
            out[f"p_{label}"] = [round(p[label], 4) for p in answers.probabilities]
    return out, answers


def zip_export(folder: str | Path) -> bytes:
    """An export folder as zip bytes (for a download button): the adapter, prompt files, predict.py, card."""
    import io
    import zipfile

    folder = Path(folder)
    names = ["adapter_model.safetensors", "adapter_config.json", "README.md", "prompt.txt", PROMPT_FILE,
             CALIBRATION_FILE, SCORES_FILE, "predict.py"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            if (folder / name).is_file():
                archive.write(folder / name, arcname=name)
    return buffer.getvalue()
