"""How long the standard comparison will take, before it starts: computed tokens times the speed measured now.

    estimate_comparison(splits, shots=(0, 4), max_train=500, limit=200, loaded=model)  -> ComparisonEstimate

Every part is work the comparison will do, counted in tokens, times a time per token measured on this
machine at the moment of the estimate (so a busy machine gives a longer estimate):

    start-up             a new job process: imports and loading the model (the last one measured in this
                         workspace, else START_SECONDS)
    each prompt arm      the prompts rendered exactly as the harness renders them: the shared prefix once, each
                         row's own tokens and its answer tokens, for the calibration rows, the test rows and the
                         single queries timed for latency (each at the measured time of one query); once, the
                         harness's own measurement of the per-token cost
    fine-tuning          ``finetune.estimate`` (token counts of every training batch, validation checks, loading),
                         with a time per training token from a calibration measured on this machine when there
                         is a recent one, else the scoring time per token times TRAIN_TOKEN_FACTOR
    scoring the adapter  a fresh copy of the base model with the adapter merged, then the zero-shot prompt's work
    report               building the comparison (significance, bootstrap intervals) and writing the report

Early stopping can end training sooner than the estimate, which counts every planned step.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..finetune.estimates import _duration

START_KEY = "comparison start-up"  # jobs.remember_duration key: a comparison job's imports and model load
START_SECONDS = 12.0  # before one was measured here: imports (torch, transformers, peft) and loading the model
REPORT_SECONDS = 3.0  # the HTML report and the predictions CSV, for a few hundred test rows
# Training (bf16, forward + backward + optimizer, LoRA) per computed token against scoring (fp32 forward, prefix
# cached, ``evaluate.ms_per_token``) per computed token: about 1 (bf16 runs about twice as fast as fp32, and
# backward costs about twice the forward pass). Measured once on the busy 2-core machine (SST-2, 120 rows, 28
# steps: 168 s, which this rule gives at 1.0); bench/bench_estimates.py ran with 2.0 (fitted on two runs whose
# speed probe was not warmed up) and overestimated training 1.5-2.7x; at 1.0 the same runs give 0.72-1.29.
TRAIN_TOKEN_FACTOR = 1.0
# One generated token of text-to-text answers costs a forward pass of its batch; per token it costs this many
# scored tokens (small batches use the cores less well).
GENERATED_TOKEN_FACTOR = 4.0
LATENCY_ROWS = 30  # evaluate.LATENCY_ROWS (not imported: that module imports torch)


@dataclass
class Speed:
    """This machine's speed for a model, measured now."""

    ms_per_token: float   # scoring, batched, after a cached shared prefix
    ms_per_query: float   # one query of PROBE_ROW_TOKENS tokens on its own (as a latency row runs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ComparisonEstimate:
    """The standard comparison's duration before it starts, part by part (seconds)."""

    seconds: float
    parts: dict[str, float]            # the comparison's stages (the names its progress messages start with)
    arms: dict[str, float]             # scoring each arm (prompt arms: their share of "prompting")
    tokens: dict[str, int]             # computed tokens to score each arm
    speed: dict                        # Speed.to_dict()
    training: dict                     # finetune.Estimate.to_dict() of the fine-tuning arm
    basis: str                         # where the training speed comes from
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> dict:
        """What the CLI's JSON and the run's timings keep: total seconds, the parts and the training basis."""
        return {"seconds": self.seconds, "parts": self.parts, "basis": self.basis,
                "ms_per_token": round(self.speed["ms_per_token"], 4)}


PROBE_ROWS, PROBE_ROW_TOKENS, PROBE_PREFIX = 8, 32, 128


def measure_speed(loaded: Any, ms_per_token: float | None = None, repeats: int = 3) -> Speed:
    """This machine's speed for ``loaded`` now: the harness's probe workload (as ``evaluate.ms_per_token``: warmed
    up, the fastest of ``repeats``) and one query of it alone (the median of ``repeats``, as latency rows run).

    ``ms_per_token``: the batched figure when already measured (a job passes the harness's own, which the
    harness then reuses). Unlike ``evaluate.ms_per_token`` (once per process, so arms share one cost figure),
    this measures every time it is called: an estimate should see how busy the machine is now.
    """
    from ..scoring import one_query_at_a_time, score_labels

    vocab = int(loaded.model.config.vocab_size)
    rng = np.random.default_rng(0)
    prefix = rng.integers(100, vocab, PROBE_PREFIX).tolist()
    prompts = [prefix + rng.integers(100, vocab, PROBE_ROW_TOKENS).tolist() for _ in range(PROBE_ROWS)]
    answers = [[int(rng.integers(100, vocab))] for _ in range(2)]
    if ms_per_token is None:
        score_labels(loaded, prompts, answers)  # warm up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            score_labels(loaded, prompts, answers)
            best = min(best, time.perf_counter() - started)
        ms_per_token = best * 1000 / (PROBE_PREFIX + PROBE_ROWS * PROBE_ROW_TOKENS)
    alone = one_query_at_a_time(loaded, prompts, list(range(repeats + 1)), answers=answers)[1][1:]  # first: warm-up
    return Speed(ms_per_token=ms_per_token, ms_per_query=float(np.median(alone)))


def scoring_tokens(spec: Any, tokenizer: Any, context_length: int, texts: Sequence[str], pool: Any = None,
                   answer_tokens: float | None = None) -> dict:
    """Tokens the harness computes to score ``texts`` with ``spec``: the shared prefix, the rows' own tokens.

    Rendered as the harness renders them (the same examples per row, the same cut to fit the context).
    ``answer_tokens``: per row, the answer tokens fed (classification: the label trie; default computed here).
    """
    from ..prompting import Renderer, examples_for, select_examples
    from ..scoring import _common_prefix_length, answer_trie

    renderer = Renderer(spec, tokenizer)
    classification = spec.task == "classification"
    answers = [renderer.answer_ids(label) for label in spec.labels] if classification else []
    room = context_length - (max(len(a) for a in answers) if classification else spec.max_answer_tokens)
    texts = [str(t) for t in texts]
    if not texts:
        return {"rows": 0, "prefix": 0, "own": 0, "answer": 0.0, "generated": 0.0}
    prompts = [renderer.prompt_ids(text, examples_for(pool, ids), max_tokens=room)
               for text, ids in zip(texts, select_examples(spec, pool, texts))]
    shared = _common_prefix_length(prompts)
    if answer_tokens is None:
        answer_tokens = float(answer_trie(answers).fed) if classification else 0.0
    generated = 0.0
    if not classification:  # generate_answers' limit per row; answers run about as long as the text
        generated = float(sum(min(spec.max_answer_tokens, len(renderer.encode(t)) + 2) for t in texts))
    return {"rows": len(texts), "prefix": shared, "own": int(sum(len(p) - shared for p in prompts)),
            "answer": answer_tokens * len(texts), "generated": generated,
            "own_per_row": float(np.mean([len(p) - shared for p in prompts]))}


def arm_seconds(counted: dict, speed: Speed) -> tuple[float, int]:
    """(seconds, computed tokens) to score a set of rows batched, from ``scoring_tokens``."""
    tokens = counted["prefix"] + counted["own"] + counted["answer"]
    seconds = (tokens + GENERATED_TOKEN_FACTOR * counted["generated"]) * speed.ms_per_token / 1000
    return seconds, int(round(tokens))


def latency_seconds(counted: dict, speed: Speed, rows: int = LATENCY_ROWS) -> float:
    """The single queries timed for latency: each at least one measured query, longer rows in proportion."""
    n = min(rows, counted["rows"])
    if not n:
        return 0.0
    per_row = counted.get("own_per_row", 0.0) + counted["answer"] / max(counted["rows"], 1)
    one = speed.ms_per_query * max(1.0, per_row / PROBE_ROW_TOKENS)
    if counted["generated"]:
        one += counted["generated"] / counted["rows"] * speed.ms_per_query
    return n * one / 1000


def estimate_comparison(splits: Any, *, model: str = "bundled", shots: Sequence[int] = (0, 4),
                        max_train: int | None = None, limit: int | None = None, seed: int = 0, lora: Any = None,
                        instruction: str = "", learning_curve: bool = False, loaded: Any = None,
                        speed: Speed | None = None, start_seconds: float | None = None,
                        search_seconds: float = 0.0) -> ComparisonEstimate:
    """How long ``run_comparison`` with these arguments will take here, part by part (see the module doc).

    ``loaded``: the base model (loaded when not given); ``speed``: measured now when not given;
    ``start_seconds``: the start-up already spent (a job estimating itself), else the last measured one.
    ``search_seconds``: the prompt search's time budget, when the comparison searches a prompt (plus scoring the
    prompt it finds, counted as a zero-shot arm).
    """
    from ..calibration import FIT_ROWS_MAX
    from ..finetune import LoraSettings, estimate
    from ..jobs import remembered_duration
    from ..models import load_model
    from ..prompting import PromptSpec, default_selection
    from .curve import learning_curve_sizes
    from .run import CURVE_SEEDS

    loaded = loaded if loaded is not None else load_model(model)
    speed = speed or measure_speed(loaded)
    test = splits.test.head(limit) if limit else splits.test
    train = splits.train.head(max_train) if max_train else splits.train
    lora = lora or LoraSettings(seed=seed)
    labels = list(splits.labels)
    base_spec = PromptSpec(task=splits.task, instruction=instruction, labels=labels, seed=seed)
    fitting = splits.validation if splits.validation is not None and len(splits.validation) else train
    if splits.task == "classification":
        fitting = fitting[fitting["label"].astype(str).isin(set(labels))]
        fitting = fitting.sample(FIT_ROWS_MAX, random_state=seed) if len(fitting) > FIT_ROWS_MAX else fitting
    else:
        fitting = fitting.head(0)  # text-to-text arms are not calibrated

    def arm(spec: Any) -> tuple[float, int]:
        scored = scoring_tokens(spec, loaded.tokenizer, loaded.context_length, list(test["text"]), pool=train)
        fitted = scoring_tokens(spec, loaded.tokenizer, loaded.context_length,
                                ["N/A", *map(str, fitting["text"])], pool=train)
        test_s, test_tokens = arm_seconds(scored, speed)
        fit_s, fit_tokens = arm_seconds(fitted, speed)
        return test_s + fit_s + latency_seconds(scored, speed), test_tokens + fit_tokens

    parts: dict[str, float] = {}
    arms: dict[str, float] = {}
    tokens: dict[str, int] = {}
    if start_seconds is None:
        start_seconds = remembered_duration(START_KEY) or START_SECONDS
    parts["start-up"] = float(start_seconds)
    for k in shots:
        spec = base_spec.with_(shots=int(k), selection=default_selection(int(k), len(labels))[0])
        arms[spec.name()], tokens[spec.name()] = arm(spec)
    parts["prompting"] = sum(arms.values())
    if search_seconds:
        parts["prompt search"] = search_seconds + arm(base_spec)[0]
    tuned_splits = type(splits)(train=train, validation=splits.validation, test=test, task=splits.task)
    trained = estimate(lora, tuned_splits, model, calibrate=False,  # train_lora's own default prompt
                       token_seconds=TRAIN_TOKEN_FACTOR * speed.ms_per_token / 1000)  # used without a calibration
    parts["fine-tuning"] = trained.load_seconds + trained.train_seconds
    tuned = f"LoRA r={lora.rank}"
    seconds, tokens[tuned] = arm(base_spec)
    arms[tuned] = parts["scoring the fine-tuned model"] = trained.load_seconds + seconds
    if learning_curve:
        parts["learning curve"] = _curve_seconds(learning_curve_sizes(len(train)), len(train), parts,
                                                 max(arms[n] for n in arms if n != tuned), CURVE_SEEDS)
    parts["report"] = REPORT_SECONDS
    parts = {k: round(v, 1) for k, v in parts.items()}
    total = round(sum(parts.values()), 1)
    basis = ("a calibration measured on this machine" if trained.calibrated else
             f"the scoring speed measured now ({speed.ms_per_token:.2f} ms per token) × {TRAIN_TOKEN_FACTOR:g}")
    messages = [f"About {_duration(total)}: " + ", ".join(f"{k} {_duration(v)}" for k, v in parts.items()) + ".",
                f"Measured now: {speed.ms_per_token:.2f} ms per scored token; training speed from {basis}."]
    if getattr(lora, "patience", 0):
        messages.append("Early stopping may end the training sooner: the estimate counts every planned step.")
    return ComparisonEstimate(seconds=total, parts=parts, arms={k: round(v, 1) for k, v in arms.items()},
                              tokens=tokens, speed=speed.to_dict(),
                              training=trained.to_dict(), basis=basis, messages=messages)


def _curve_seconds(sizes: Sequence[int], full: int, parts: dict, prompt: float, seeds: int) -> float:
    """The learning curve: at each smaller size, ``seeds`` runs of the largest-shot prompt and of fine-tuning,
    scaled from the full-size parts (training in proportion to the rows, scoring as at full size)."""
    return sum(seeds * (prompt + parts["fine-tuning"] * n / max(full, 1) + parts["scoring the fine-tuned model"])
               for n in sizes[:-1])


class StageClock:
    """Wraps ``run_comparison``'s ``on_progress``: when each stage (the text before ':' in its messages) last
    reported, so a finished run's seconds per stage sit beside the estimate's ``parts``."""

    def __init__(self, on_progress: Any = None, started: float | None = None) -> None:
        self.on_progress = on_progress
        self.ready = started if started is not None else time.perf_counter()
        self.last: dict[str, float] = {}

    def __call__(self, done: int, total: int, message: str) -> None:
        self.last[message.split(":", 1)[0]] = time.perf_counter()
        if self.on_progress:
            self.on_progress(done, total, message)

    def stop(self) -> None:
        """Mark the end of the last stage (``run_comparison`` returned): its latency rows, which run after its
        last progress report, and building the comparison count in it."""
        self.stopped = time.perf_counter()

    def parts(self, started: float, finished: float | None = None) -> dict[str, float]:
        """Seconds per stage: start-up (``started`` to this clock's start), each stage from the previous one's last
        report to its own last (the last stage to ``stop``), and the rest (writing the report) as 'report'."""
        finished = finished if finished is not None else time.perf_counter()
        out, before = {"start-up": round(self.ready - started, 1)}, self.ready
        stages = sorted(self.last.items(), key=lambda item: item[1])
        for i, (stage, at) in enumerate(stages):
            if i == len(stages) - 1 and getattr(self, "stopped", None):
                at = self.stopped
            out[stage], before = round(at - before, 1), at
        out["report"] = round(finished - before, 1)
        return out


def estimate_own_run(splits: Any, *, started: float, **arguments: Any) -> ComparisonEstimate:
    """A comparison job's estimate of itself, made once its model is loaded: the start-up so far is measured
    (and remembered for the next estimate made before a job starts); the rest as ``estimate_comparison``."""
    from ..jobs import remember_duration
    from ..models import load_model

    from ..evaluate import ms_per_token

    loaded = load_model(arguments.get("model", "bundled"))
    speed = measure_speed(loaded, ms_per_token(loaded))  # the harness's own measurement, which its arms reuse
    start = time.perf_counter() - started
    remember_duration(START_KEY, start)
    return estimate_comparison(splits, loaded=loaded, speed=speed, start_seconds=start, **arguments)
