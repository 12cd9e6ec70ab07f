"""How long the standard comparison will take, before it starts: computed tokens times the speed measured now.

    estimate_comparison(splits, shots=(0, 4), max_train=500, limit=200, loaded=model)  -> ComparisonEstimate

Every part is work the comparison will do, counted in tokens, times a time per token measured on this
machine at the moment of the estimate (so a busy machine gives a longer estimate):

    start-up             a new job process: imports and loading the model (the last one measured in this
                         workspace, else START_SECONDS)
    each prompt arm      the prompts rendered exactly as the harness renders them: the shared prefix once, each
                         row's own tokens and its answer tokens, for the calibration rows and the test rows; once,
                         the harness's own measurement of the per-token cost; and the latency rows (below)
    latency rows         the first LATENCY_ROWS test rows answered one query at a time (no batching, no lanes):
                         each costs a forward pass's fixed part (with its answers) plus its own tokens. The fixed
                         part is measured now on the arm's real prompts (LATENCY_SAMPLE single queries of its first
                         rows, after a warm-up one), the per-token part from single probe queries of two lengths
    fine-tuning          ``finetune.estimate`` (token counts of every training batch, validation checks, loading),
                         with a time per training token from a calibration measured on this machine when there
                         is a recent one, else the scoring time per token times ``train_token_factor()`` (1 where
                         training runs in bf16 and scoring in float32, 2 where both use one dtype)
    scoring the adapter  a fresh copy of the base model with the adapter merged, then the zero-shot prompt's work
    report               building the comparison (significance, bootstrap intervals) and writing the report

Early stopping can end training sooner than the estimate, which counts every planned step. With many labels
(``PRUNE_FROM_LABELS``) the harness scores only the labels that can still win; the estimate counts every label's
tokens in the batched scoring (an upper bound) and times the latency rows' queries as the harness runs them.

A running comparison's time left (``time_left``, ``StageClock.time_left``) is the remaining stages' predicted time,
rescaled by how the work done so far compared with its prediction.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..evaluate import LATENCY_ROWS, PRUNE_FROM_LABELS  # the harness's own (the module loads no torch)
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
# Training in the dtype answers are scored in (a CPU without native bf16 trains in float32; a GPU scores and
# trains in bf16) loses that 2x: the same rule gives 2. With 1.0 on an AVX2 CPU without bf16 (2026-12-01),
# bench/bench_estimates.py predicted every fine-tuning stage 1.6-2.0x too short.
SAME_DTYPE_TRAIN_TOKEN_FACTOR = 2.0
# One generated token of text-to-text answers costs a forward pass of its batch; per token it costs this many
# scored tokens (small batches use the cores less well).
GENERATED_TOKEN_FACTOR = 4.0
LATENCY_SAMPLE = 5  # real single queries timed per arm (after one warm-up) for a latency row's fixed part (the median)
SPEED_FILE = "speed.json"  # in the workspace: the last speed measured per model (for the fine-tuning wizard)


@dataclass
class Speed:
    """This machine's speed for a model, measured now."""

    ms_per_token: float   # scoring, batched, after a cached shared prefix
    ms_per_query: float   # one query of PROBE_ROW_TOKENS tokens on its own (as a latency row runs)
    query_ms_per_token: float = 0.0  # one query on its own: each further token of its own (0: ms_per_token)
    train_factor: float = TRAIN_TOKEN_FACTOR  # a training token's time against a scored one (train_token_factor)

    @property
    def train_seconds_per_token(self) -> float:
        """Seconds per computed training token, as the estimate counts them without a calibration."""
        return self.train_factor * self.ms_per_token / 1000

    @property
    def query_slope(self) -> float:
        """Milliseconds per own token of a query run alone."""
        return self.query_ms_per_token or self.ms_per_token

    @property
    def query_fixed_ms(self) -> float:
        """A probe query's time beyond its own tokens: the forward pass's fixed part (setup, 2 one-token answers)."""
        return max(0.0, self.ms_per_query - PROBE_ROW_TOKENS * self.query_slope)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "query_fixed_ms": round(self.query_fixed_ms, 3)}


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
    latency: dict[str, float] = field(default_factory=dict)   # each arm's single queries timed for latency (s)
    query_fixed_ms: dict[str, float] = field(default_factory=dict)  # per arm: a single query's fixed part (ms)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> dict:
        """What the CLI's JSON and the run's timings keep: total seconds, the parts, the latency rows per arm
        (inside the parts) and the training basis."""
        return {"seconds": self.seconds, "parts": self.parts, "latency": self.latency, "basis": self.basis,
                "ms_per_token": round(self.speed["ms_per_token"], 4)}


PROBE_ROWS, PROBE_ROW_TOKENS, PROBE_PREFIX = 8, 32, 128
PROBE_LONG_ROW_TOKENS = 160  # the second single-query length: the slope per own token between the two


def measure_speed(loaded: Any, ms_per_token: float | None = None, repeats: int = 3, single: bool = True) -> Speed:
    """This machine's speed for ``loaded`` now: the harness's probe workload (as ``evaluate.ms_per_token``: warmed
    up, the fastest of ``repeats``) and single queries of it alone at two row lengths (the median of ``repeats``
    each, as latency rows run): a query's fixed part and its time per own token. ``single=False`` skips them.

    ``ms_per_token``: the batched figure when already measured (a job passes the harness's own, which the
    harness then reuses). Unlike ``evaluate.ms_per_token`` (once per process, so arms share one cost figure),
    this measures every time it is called: an estimate should see how busy the machine is now.
    """
    from ..scoring import one_query_at_a_time, score_labels

    factor = train_token_factor()
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
    if not single:
        return Speed(ms_per_token=ms_per_token, ms_per_query=0.0, train_factor=factor)
    longer = [prefix + rng.integers(100, vocab, PROBE_LONG_ROW_TOKENS).tolist() for _ in range(repeats + 1)]
    rows = list(range(repeats + 1))
    short = float(np.median(one_query_at_a_time(loaded, prompts, rows, answers=answers)[1][1:]))  # first: warm-up
    long = float(np.median(one_query_at_a_time(loaded, longer, rows, answers=answers)[1][1:]))
    return Speed(ms_per_token=ms_per_token, ms_per_query=short,
                 query_ms_per_token=query_slope(short, long, ms_per_token), train_factor=factor)


def train_token_factor() -> float:
    """A training token's time against a scored one here: TRAIN_TOKEN_FACTOR where training computes in a
    narrower dtype than scoring (bf16 against float32 on a CPU with native bf16), else
    SAME_DTYPE_TRAIN_TOKEN_FACTOR."""
    from ..models import best_dtype, scoring_dtype

    return TRAIN_TOKEN_FACTOR if best_dtype() != scoring_dtype() else SAME_DTYPE_TRAIN_TOKEN_FACTOR


def query_slope(short_ms: float, long_ms: float, ms_per_token: float) -> float:
    """A single query's milliseconds per own token, from probe queries of PROBE_ROW_TOKENS and
    PROBE_LONG_ROW_TOKENS tokens; at least the batched cost per token (no query is cheaper per token than a full
    batch) and at most the long query's mean (its fixed part is not negative), so timing noise stays bounded."""
    slope = (long_ms - short_ms) / (PROBE_LONG_ROW_TOKENS - PROBE_ROW_TOKENS)
    return float(min(max(slope, ms_per_token), long_ms / PROBE_LONG_ROW_TOKENS))


def sample_queries(loaded: Any, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]] | None,
                   labels: int, rows: int = LATENCY_SAMPLE) -> list[tuple[int, float]]:
    """(own tokens, milliseconds) of the first ``rows`` latency rows answered one query at a time as the harness
    answers them (``prompts``: every test row's, so the shared prefix is the harness's), after a warm-up query.

    With ``PRUNE_FROM_LABELS`` labels or more the queries are pruned as the harness prunes them (with zeros as
    the bias: its raw prediction), so their time holds the pruning's passes.
    """
    from ..scoring import _common_prefix_length, one_query_at_a_time

    n = min(rows + 1, len(prompts))
    if n < 2 or answers is None:
        return []
    prune = np.zeros((1, labels)) if labels >= PRUNE_FROM_LABELS else None
    _, ms = one_query_at_a_time(loaded, prompts, list(range(n)), answers=answers, prune_bias=prune)
    shared = _common_prefix_length(prompts)
    return [(len(prompts[i]) - shared, ms[i]) for i in range(1, n)]


def fixed_query_ms(samples: Sequence[tuple[int, float]], speed: Speed) -> float | None:
    """A single query's fixed part for an arm (everything but its own tokens: the forward pass's overhead, the
    shared prefix's attention, its answers), from sampled real queries: the median of time - own tokens x the
    per-token slope, at least 0; None without samples."""
    if not samples:
        return None
    return float(max(0.0, np.median([ms - own * speed.query_slope for own, ms in samples])))


def remember_speed(model: str, speed: Speed) -> None:
    """Keep the speed measured now in the workspace, with when (the fine-tuning wizard's estimate reuses it)."""
    from ..store import workspace_dir

    path = workspace_dir() / SPEED_FILE
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known[str(model)] = {**speed.to_dict(), "measured": time.time()}
    path.write_text(json.dumps(known), encoding="utf-8")


def remembered_speed(model: str, max_age_s: float) -> Speed | None:
    """The speed last measured here for ``model``, if it is younger than ``max_age_s``."""
    from ..store import workspace_dir

    try:
        found = json.loads((workspace_dir() / SPEED_FILE).read_text(encoding="utf-8"))[str(model)]
        if time.time() - float(found["measured"]) > max_age_s:
            return None
        return Speed(ms_per_token=float(found["ms_per_token"]), ms_per_query=float(found.get("ms_per_query", 0.0)),
                     query_ms_per_token=float(found.get("query_ms_per_token", 0.0)),
                     train_factor=float(found.get("train_factor", TRAIN_TOKEN_FACTOR)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


SPEED_MAX_AGE_S = 3600  # the wizard measures again when the speed kept is older (the machine's load changes)


def training_token_seconds(model: str, load: Any = None, max_age_s: float = SPEED_MAX_AGE_S) -> float | None:
    """Seconds per training token as the comparison estimate counts them (``train_token_factor()`` x the scoring
    time per token): from the speed kept in the workspace when recent, else measured now on the model ``load()``
    returns (the batched probe only, a second or two once loaded), else None."""
    speed = remembered_speed(model, max_age_s)
    if speed is None and load is not None:
        speed = measure_speed(load(), single=False)
        remember_speed(model, speed)
    return speed.train_seconds_per_token if speed else None


def render(spec: Any, tokenizer: Any, context_length: int, texts: Sequence[str],
           pool: Any = None) -> tuple[list[list[int]], list[list[int]] | None]:
    """Each row's prompt token ids and the labels' answer ids (None for text-to-text), as the harness renders
    them (the same examples per row, the same cut to fit the context)."""
    from ..prompting import Renderer, examples_for, select_examples

    renderer = Renderer(spec, tokenizer)
    classification = spec.task == "classification"
    answers = [renderer.answer_ids(label) for label in spec.labels] if classification else None
    room = context_length - (max(len(a) for a in answers) if classification else spec.max_answer_tokens)
    texts = [str(t) for t in texts]
    prompts = [renderer.prompt_ids(text, examples_for(pool, ids), max_tokens=room)
               for text, ids in zip(texts, select_examples(spec, pool, texts))]
    return prompts, answers


def scoring_tokens(spec: Any, tokenizer: Any, context_length: int, texts: Sequence[str], pool: Any = None,
                   answer_tokens: float | None = None, rendered: tuple | None = None) -> dict:
    """Tokens the harness computes to score ``texts`` with ``spec``: the shared prefix, the rows' own tokens.

    Rendered as the harness renders them (``render``; ``rendered``: its result, when already made).
    ``answer_tokens``: per row, the answer tokens fed (classification: the label trie; default computed here).
    ``own_first``: the own tokens of the first LATENCY_ROWS rows (the ones timed one query at a time).
    """
    from ..prompting import Renderer
    from ..scoring import _common_prefix_length, answer_trie

    renderer = Renderer(spec, tokenizer)
    classification = spec.task == "classification"
    texts = [str(t) for t in texts]
    if not texts:
        return {"rows": 0, "prefix": 0, "own": 0, "answer": 0.0, "generated": 0.0, "own_first": []}
    prompts, answers = rendered or render(spec, tokenizer, context_length, texts, pool)
    shared = _common_prefix_length(prompts)
    if answer_tokens is None:
        answer_tokens = float(answer_trie(answers).fed) if classification else 0.0
    generated = 0.0
    if not classification:  # generate_answers' limit per row; answers run about as long as the text
        generated = float(sum(min(spec.max_answer_tokens, len(renderer.encode(t)) + 2) for t in texts))
    return {"rows": len(texts), "prefix": shared, "own": int(sum(len(p) - shared for p in prompts)),
            "answer": answer_tokens * len(texts), "generated": generated,
            "own_per_row": float(np.mean([len(p) - shared for p in prompts])),
            "own_first": [len(p) - shared for p in prompts[:LATENCY_ROWS]]}


def arm_seconds(counted: dict, speed: Speed) -> tuple[float, int]:
    """(seconds, computed tokens) to score a set of rows batched, from ``scoring_tokens``."""
    tokens = counted["prefix"] + counted["own"] + counted["answer"]
    seconds = (tokens + GENERATED_TOKEN_FACTOR * counted["generated"]) * speed.ms_per_token / 1000
    return seconds, int(round(tokens))


def latency_seconds(counted: dict, speed: Speed, rows: int = LATENCY_ROWS, fixed_ms: float | None = None) -> float:
    """The single queries timed for latency (the first ``rows`` rows, each alone): per query a fixed part plus
    its own tokens at a single query's time per token.

    ``fixed_ms``: the arm's fixed part measured on its real prompts (``fixed_query_ms``); without it, the probe
    query's fixed part plus the answer tokens fed at the same time per token. A text-to-text query then
    generates its answer token by token: each token one more forward pass (a fixed part and one token).
    """
    n = min(rows, counted["rows"])
    if not n:
        return 0.0
    own = list(counted.get("own_first") or [])[:n] or [counted.get("own_per_row", 0.0)] * n
    if fixed_ms is None:
        fixed_ms = speed.query_fixed_ms + counted["answer"] / counted["rows"] * speed.query_slope
    ms = n * fixed_ms + speed.query_slope * float(sum(own))
    if counted["generated"]:
        ms += n * counted["generated"] / counted["rows"] * (speed.query_fixed_ms + speed.query_slope)
    return ms / 1000


def estimate_comparison(splits: Any, *, model: str = "bundled", shots: Sequence[int] = (0, 4),
                        max_train: int | None = None, limit: int | None = None, seed: int = 0, lora: Any = None,
                        instruction: str = "", learning_curve: bool = False, loaded: Any = None,
                        speed: Speed | None = None, start_seconds: float | None = None,
                        search_seconds: float = 0.0, sample: int = LATENCY_SAMPLE) -> ComparisonEstimate:
    """How long ``run_comparison`` with these arguments will take here, part by part (see the module doc).

    ``loaded``: the base model (loaded when not given); ``speed``: measured now when not given;
    ``start_seconds``: the start-up already spent (a job estimating itself), else the last measured one.
    ``search_seconds``: the prompt search's time budget, when the comparison searches a prompt (plus scoring the
    prompt it finds, counted as a zero-shot arm). ``sample``: real single queries timed per arm for the latency
    rows' fixed part (0: from the speed probe alone).
    """
    from ..calibration import FIT_ROWS_MAX
    from ..finetune import LoraSettings, estimate
    from ..jobs import remembered_duration
    from ..models import load_model
    from ..prompting import PromptSpec, default_selection
    from .curve import learning_curve_sizes
    from .run import CURVE_SEEDS, SEARCHED_ARM

    loaded = loaded if loaded is not None else load_model(model)
    if speed is None:
        speed = measure_speed(loaded)
        remember_speed(model, speed)
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

    latency: dict[str, float] = {}
    fixed: dict[str, float] = {}
    done: dict[str, tuple] = {}

    def arm(spec: Any, name: str) -> tuple[float, int]:
        key = json.dumps(spec.to_dict(), sort_keys=True, default=str)
        if key not in done:  # the fine-tuned arm's prompt is the zero-shot one: rendered and sampled once
            rendered = render(spec, loaded.tokenizer, loaded.context_length, list(test["text"]), pool=train)
            scored = scoring_tokens(spec, loaded.tokenizer, loaded.context_length, list(test["text"]), pool=train,
                                    rendered=rendered)
            fitted = scoring_tokens(spec, loaded.tokenizer, loaded.context_length,
                                    ["N/A", *map(str, fitting["text"])], pool=train)
            test_s, test_tokens = arm_seconds(scored, speed)
            fit_s, fit_tokens = arm_seconds(fitted, speed)
            measured = fixed_query_ms(sample_queries(loaded, rendered[0], rendered[1], len(labels), sample), speed) \
                if sample else None
            single = latency_seconds(scored, speed, fixed_ms=measured)
            one_prefix = scored["prefix"] * speed.ms_per_token / 1000  # the latency rows' own prefix cache
            fixed_ms = measured if measured is not None else \
                speed.query_fixed_ms + scored["answer"] / max(scored["rows"], 1) * speed.query_slope
            done[key] = (test_s + fit_s + single + one_prefix, test_tokens + fit_tokens, single, fixed_ms)
        seconds, counted, latency[name], fixed[name] = done[key]
        return seconds, counted

    parts: dict[str, float] = {}
    arms: dict[str, float] = {}
    tokens: dict[str, int] = {}
    if start_seconds is None:
        start_seconds = remembered_duration(START_KEY) or START_SECONDS
    parts["start-up"] = float(start_seconds)
    for k in shots:
        spec = base_spec.with_(shots=int(k), selection=default_selection(int(k), len(labels))[0])
        arms[spec.name()], tokens[spec.name()] = arm(spec, spec.name())
    parts["prompting"] = sum(arms.values())
    if search_seconds:
        parts["prompt search"] = search_seconds + arm(base_spec, SEARCHED_ARM)[0]
    tuned_splits = type(splits)(train=train, validation=splits.validation, test=test, task=splits.task)
    trained = estimate(lora, tuned_splits, model, calibrate=False,  # train_lora's own default prompt
                       token_seconds=speed.train_seconds_per_token)  # used without a calibration
    parts["fine-tuning"] = trained.load_seconds + trained.train_seconds
    tuned = f"LoRA r={lora.rank}"
    seconds, tokens[tuned] = arm(base_spec, tuned)
    arms[tuned] = parts["scoring the fine-tuned model"] = trained.load_seconds + seconds
    if learning_curve:
        parts["learning curve"] = _curve_seconds(learning_curve_sizes(len(train)), len(train), parts,
                                                 max(arms[n] for n in arms if n != tuned), CURVE_SEEDS)
    parts["report"] = REPORT_SECONDS
    parts = {k: round(v, 1) for k, v in parts.items()}
    total = round(sum(parts.values()), 1)
    basis = ("a calibration measured on this machine" if trained.calibrated else
             f"the scoring speed measured now ({speed.ms_per_token:.2f} ms per token) × {speed.train_factor:g}")
    source = "measured now on the first rows of each arm" if sample else "from the speed probe"
    messages = [_parts_sentence(total, parts),
                f"Measured now: {speed.ms_per_token:.2f} ms per scored token; training speed from {basis}.",
                f"Latency rows ({LATENCY_ROWS} per arm, each query alone): about {_duration(sum(latency.values()))} "
                f"in all; a query's fixed part ({source}): "
                + ", ".join(f"{name} {ms:.0f} ms" for name, ms in fixed.items())
                + f", plus {speed.query_slope:.2f} ms per own token."]
    if splits.task == "classification" and len(labels) >= PRUNE_FROM_LABELS:
        messages.append(f"With {len(labels)} labels the comparison scores only the labels that can still win; the "
                        "estimate counts every label's tokens (an upper bound).")
    if getattr(lora, "patience", 0):
        messages.append("Early stopping may end the training sooner: the estimate counts every planned step.")
    return ComparisonEstimate(seconds=total, parts=parts, arms={k: round(v, 1) for k, v in arms.items()},
                              tokens=tokens, speed=speed.to_dict(),
                              training=trained.to_dict(), basis=basis, messages=messages,
                              latency={k: round(v, 2) for k, v in latency.items()},
                              query_fixed_ms={k: round(v, 2) for k, v in fixed.items()})


def _curve_seconds(sizes: Sequence[int], full: int, parts: dict, prompt: float, seeds: int) -> float:
    """The learning curve: at each smaller size, ``seeds`` runs of the largest-shot prompt and of fine-tuning,
    scaled from the full-size parts (training in proportion to the rows, scoring as at full size)."""
    return sum(seeds * (prompt + parts["fine-tuning"] * n / max(full, 1) + parts["scoring the fine-tuned model"])
               for n in sizes[:-1])


UNTIMED_PARTS = ("start-up", "report")  # parts outside run_comparison's progress: no share of its progress bar
PACE_EVIDENCE_S = 5.0  # predicted seconds of work done before the pace so far rescales the rest
PACE_LIMITS = (0.25, 4.0)  # the pace is kept within these (a stall or a burst says little about the rest)


def stage_weights(parts: dict[str, float]) -> dict[str, float]:
    """The estimate's parts that ``run_comparison`` reports progress for, as its stage weights (seconds, at least
    0.1 each): its progress bar then moves with the predicted time."""
    return {name: max(float(seconds), 0.1) for name, seconds in parts.items() if name not in UNTIMED_PARTS}


def time_left(predicted: dict[str, float], finished: dict[str, float], current: str | None, share: float,
              elapsed: float) -> tuple[float, float]:
    """(seconds left, pace) of a running comparison, from its estimate.

    ``predicted``: the estimate's parts (seconds); ``finished``: the seconds the stages already over really took;
    ``current``: the stage running now, ``share`` of its work done (0-1) in ``elapsed`` seconds. The pace is the
    time the work so far took over its predicted time (the finished stages, and the current one's done share;
    start-up, measured rather than predicted, is left out), 1 until PACE_EVIDENCE_S of predicted work is done,
    within PACE_LIMITS. Time left = (the current stage's undone share + every stage not started) x the pace.
    """
    share = min(max(share, 0.0), 1.0)
    counted = [name for name in finished if name in predicted and name != "start-up"]
    done_predicted = sum(predicted[name] for name in counted)
    done_actual = sum(finished[name] for name in counted)
    if current in predicted:
        done_predicted += share * predicted[current]
        done_actual += elapsed
    pace = done_actual / done_predicted if done_predicted >= PACE_EVIDENCE_S else 1.0
    pace = min(max(pace, PACE_LIMITS[0]), PACE_LIMITS[1])
    later = sum(seconds for name, seconds in predicted.items()
                if name not in finished and name != current and name != "start-up")
    now = (1 - share) * predicted.get(current, 0.0) if current else 0.0
    return (now + later) * pace, pace


class StageClock:
    """Wraps ``run_comparison``'s ``on_progress``: when each stage (the text before ':' in its messages) last
    reported, so a finished run's seconds per stage sit beside the estimate's ``parts``; given the estimate's
    ``predicted`` parts (and ``run_comparison`` given ``stage_weights`` of them), also the time left."""

    def __init__(self, on_progress: Any = None, started: float | None = None,
                 predicted: dict[str, float] | None = None) -> None:
        self.on_progress = on_progress
        self.ready = started if started is not None else time.perf_counter()
        self.last: dict[str, float] = {}
        self.predicted = dict(predicted or {})
        self.weights = stage_weights(self.predicted)
        self.fraction = 0.0  # of run_comparison's overall progress

    def __call__(self, done: int, total: int, message: str) -> None:
        self.last[message.split(":", 1)[0]] = time.perf_counter()
        self.fraction = done / total if total else 1.0
        if self.on_progress:
            self.on_progress(done, total, message)

    def time_left(self) -> tuple[float, float] | None:
        """(seconds left, pace) from the estimate (``time_left``), or None without one."""
        if not self.predicted or not self.last:
            return None
        now = time.perf_counter()
        stages = [name for name, _ in sorted(self.last.items(), key=lambda item: item[1])]
        current = stages[-1]
        if current not in self.weights:
            return None
        finished, before = {}, self.ready
        for name in stages[:-1]:
            finished[name], before = self.last[name] - before, self.last[name]
        # the overall fraction maps back onto the current stage: the stages before it fill their weights
        position = self.fraction * sum(self.weights.values()) - sum(self.weights.get(n, 0.0) for n in stages[:-1])
        share = position / self.weights[current]
        return time_left(self.predicted, finished, current, share, now - before)

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
    """A comparison job's estimate of itself, made once its model is loaded: the start-up (imports, loading, and
    this estimate's own measuring) is measured and remembered for the next estimate made before a job starts;
    the rest as ``estimate_comparison``."""
    from ..jobs import remember_duration
    from ..models import load_model

    from ..evaluate import ms_per_token

    loaded = load_model(arguments.get("model", "bundled"))
    speed = measure_speed(loaded, ms_per_token(loaded))  # the harness's own measurement, which its arms reuse
    remember_speed(arguments.get("model", "bundled"), speed)
    planned = estimate_comparison(splits, loaded=loaded, speed=speed, start_seconds=0.0, **arguments)
    start = round(time.perf_counter() - started, 1)  # what the job's stage clock counts as its start-up
    remember_duration(START_KEY, start)
    planned.parts["start-up"] = start
    planned.seconds = round(sum(planned.parts.values()), 1)
    planned.messages[0] = _parts_sentence(planned.seconds, planned.parts)
    return planned


def _parts_sentence(total: float, parts: dict[str, float]) -> str:
    return f"About {_duration(total)}: " + ", ".join(f"{k} {_duration(v)}" for k, v in parts.items()) + "."
