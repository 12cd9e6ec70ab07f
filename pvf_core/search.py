"""Prompt search: give prompting its best shot, chosen on rows that are never scored as test rows.

The search space is built from the user's task (``search_space``): instructions (the user's own, the
generic one and a few templates filled with the labels), how each answer is said to the model (the labels
as given, in lower case, with common abbreviations spelled out, and the words the model itself prefers for
each label's training rows, as in LM-BFF), the number of examples, their selection and style. Calibration
is chosen for each candidate from the same scores (none, content-free or fitted, the fitted one judged by
cross-fitting), so it multiplies no work.

``search_prompt`` spends a time budget by successive halving: every candidate on a few selection rows,
the best third (at least two) on three times as many, and so on until the rows run out. A candidate's
scores on earlier rows are kept, so a rung only scores the rows it adds. The selection rows are the
validation rows, topped up with training rows (a training row is never shown to itself as an example),
and never a test row: the winner is scored on the test rows once, afterwards, by the harness.

Candidates are tried in this order: the starting prompt, the default few-shot one, the default prompt with
each row's nearest training rows as examples (8 shots, then 4: the family that beat a fixed 4-shot draw on
AG News, always planned whatever the budget), the prompts one change away from the first two, then a seeded
order. The starting prompt and the default few-shot one (the prompts a user would try first) go on to every rung.
The best candidate replaces the better of them only if its lead on the same selection rows is more than one
standard error of the paired difference (``keep_or_replace``); otherwise that prompt is kept. Picking the
best of many prompts on a few hundred rows favours the luckiest one: on TREC the best of 16 led the default
4-shot prompt by 0.3 points of macro-F1 on 300 rows and then lost to it by 2 points on the test rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from . import calibration as calib
from .errors import PvfError, SettingsError
from .prompting import (
    CONTENT_FREE_TEXT,
    DEFAULT_INSTRUCTION,
    PromptSpec,
    Renderer,
    default_selection,
    examples_for,
    select_examples,
)
from .compare.stats import compare_pair, metric_name, p_text
from .evaluate import _choice_metric, _Prompter, answer_limits
from .scoring import Stopped

Progress = Callable[[int, int, str], None]

SHOT_CHOICES = (0, 1, 2, 4, 8)
SELECTION_CHOICES = ("balanced", "similar", "random")
STYLE_CHOICES = ("conversation", "list")
MIN_RELIABLE_ROWS = 50  # fewer selection rows than this cannot tell candidates a few points apart
KEEP_MARGIN = 1.0  # the best replaces the starting/default prompt only if it leads by more standard errors than this
MAX_WORD_LABELS = 12  # label-word variants are tried up to this many labels (single words for 50 intents mislead)
WORD_ROWS_PER_LABEL = 8  # training rows per label the model's own words are read from

ABBREVIATIONS = {
    "pos": "positive", "neg": "negative", "neu": "neutral", "sci": "science", "tech": "technology",
    "biz": "business", "econ": "economy", "pol": "politics", "ent": "entertainment", "misc": "other",
    "oos": "out of scope", "ham": "normal", "abbr": "abbreviation", "desc": "description", "enty": "entity",
    "hum": "human", "loc": "location", "num": "number", "q": "question", "ans": "answer", "qty": "quantity",
}

TEMPLATES = {
    "classification": {
        "choose": "Read the text in the user's message and choose the label that describes it best.",
        "annotator": "You are a careful annotator. Label the user's message with the one category that fits it "
                     "best.",
        "question": "Is the text in the user's message {choices}? Answer with one word.",
    },
    "text-to-text": {
        "examples": "Answer the user's message exactly as the examples are answered, with the answer only.",
        "minimal": "Rewrite the user's message as the task requires. Change only what must change and keep "
                   "everything else as it is.",
    },
}


class SearchStopped(PvfError):
    """The search was cancelled before any candidate finished its first rows."""


@dataclass
class SearchSettings:
    """How much the search may try and how it spends its time."""

    budget_seconds: float = 120.0
    max_candidates: int | None = None  # fixes how many are tried, whatever the machine's speed
    shots: tuple = SHOT_CHOICES
    selections: tuple = SELECTION_CHOICES
    styles: tuple = STYLE_CHOICES
    first_rows: int = 16  # rows every candidate is scored on first
    keep_fraction: float = 1 / 3  # share of candidates kept at each rung
    max_rows: int = 300  # selection rows at most (validation first, topped up with training rows)
    seed: int = 0
    keep_margin: float = KEEP_MARGIN  # standard errors the best must lead the starting/default prompt by (0: any lead)

    def __post_init__(self) -> None:
        if self.budget_seconds <= 0:
            raise SettingsError(f"The search budget must be positive; got {self.budget_seconds} seconds.")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise SettingsError("The search must try at least one candidate.")
        self.shots, self.selections, self.styles = tuple(self.shots), tuple(self.selections), tuple(self.styles)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Candidate:
    """One prompt the search tries, with plain names for what it varies."""

    spec: PromptSpec
    instruction: str  # "yours", "generic" or a template's name
    words: str  # "as given", "lower case", "spelled out", "model's words"
    scores: dict = field(default_factory=dict)  # rows judged -> score
    calibration: dict = field(default_factory=dict)  # rows judged -> chosen method
    seconds: float = 0.0
    rows_scored: int = 0
    role: str = ""  # "start" (the user's prompt) or "default" (the default few-shot one): judged on every rung
    first: bool = False  # always planned (the anchors and the nearest-examples family), whatever the budget

    def describe(self) -> str:
        spec = self.spec
        parts = [f"instruction: {self.instruction}", f"answers: {self.words}"]
        if spec.shots:
            parts.append(f"{spec.shots} example{'s' if spec.shots > 1 else ''}, {spec.selection}, {spec.example_style}")
        else:
            parts.append("no examples")
        return "; ".join(parts)

    def best(self) -> tuple[int, float]:
        rows = max(self.scores)
        return rows, self.scores[rows]

    def called(self) -> str:
        """How the explanation names this candidate: 'your prompt', 'the default 4-shot prompt' or its parts."""
        if self.role == "start":
            return "your prompt"
        if self.role == "default":
            return f"the default {self.spec.shots}-shot prompt" if self.spec.shots else "the default prompt"
        return f"the best other prompt ({self.describe()})"


@dataclass
class SearchResult:
    """The winning prompt and how it was found."""

    spec: PromptSpec  # the winner, its calibration method fixed to the one chosen on the selection rows (a kept
    #                   prompt is returned as it was, calibration included)
    metric: str
    validation_score: float
    rows: int  # selection rows the winner was judged on
    selection_rows: dict  # {"validation": n, "train": n}
    candidates: int  # candidates in the plan
    evaluated: int  # candidates scored on at least the first rows
    budget_seconds: float
    seconds: float
    stopped: str | None  # None, "budget" or "cancelled"
    start_score: float | None  # the starting prompt on the winner's rows
    leaderboard: list[dict]
    explanation: list[str]
    warnings: list[dict]
    words: dict = field(default_factory=dict)  # the model's own answer words per label, when computed
    winner: str = ""  # the chosen prompt, described
    guard: dict | None = None  # the paired test of the best candidate against the prompt it would replace

    def to_dict(self) -> dict:
        """The contract's ``search`` object (plus the details the pages show)."""
        return {"candidates": self.candidates, "evaluated": self.evaluated, "budget_seconds": self.budget_seconds,
                "selected_on": "validation", "validation_score": self.validation_score, "spec": self.spec.to_dict(),
                "metric": self.metric, "rows": self.rows, "selection_rows": self.selection_rows,
                "seconds": round(self.seconds, 2), "stopped": self.stopped, "start_score": self.start_score,
                "leaderboard": self.leaderboard, "explanation": self.explanation, "warnings": self.warnings,
                "words": self.words, "winner": self.winner, "guard": self.guard}

    @classmethod
    def from_dict(cls, data: dict) -> "SearchResult":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["spec"] = PromptSpec.from_dict(data["spec"])
        return cls(**values)


# -- the rows the search chooses on ------------------------------------------------------------------------

def selection_rows(train: pd.DataFrame | None, validation: pd.DataFrame | None, *, max_rows: int,
                   seed: int) -> tuple[pd.DataFrame, dict]:
    """Validation rows first, then training rows, up to ``max_rows``, in one seeded order.

    Successive halving scores a growing head of this table, so its order is shuffled once here (labels mix
    from the first rows on) and then kept.
    """
    parts, counts = [], {"validation": 0, "train": 0}
    room = max_rows
    for name, rows in (("validation", validation), ("train", train)):
        if rows is None or not len(rows) or room <= 0:
            continue
        taken = rows.sample(frac=1.0, random_state=seed).head(room)
        parts.append(taken[["text", "label"]])
        counts[name] = len(taken)
        room -= len(taken)
    if not parts:
        raise SettingsError("The prompt search needs labelled training or validation rows to choose on.",
                            "Upload training data with answers.")
    table = pd.concat(parts, ignore_index=True)
    order = np.random.default_rng(seed).permutation(len(table))
    return table.iloc[order].reset_index(drop=True), counts


# -- the search space ------------------------------------------------------------------------------------

def spelled_out(label: str) -> str:
    """A label with common abbreviations written as words: 'Sci/Tech' -> 'science technology'."""
    words = [w for w in re.split(r"[\s/_\-.:]+", label) if w]
    return " ".join(ABBREVIATIONS.get(w.lower(), w.lower()) for w in words) or label


def word_variants(start: PromptSpec, model_words: dict[str, str] | None = None) -> dict[str, dict]:
    """Ways of saying the labels to the model, by name: each a verbalizer map (distinct words only)."""
    labels = list(start.labels)
    variants = {"as given": dict(start.verbalizers)}
    if len(labels) > MAX_WORD_LABELS:
        return variants
    proposals = {"lower case": {label: start.word(label).lower() for label in labels},
                 "spelled out": {label: spelled_out(start.word(label)) for label in labels}}
    if model_words:
        proposals["model's words"] = {label: model_words.get(label, start.word(label)) for label in labels}
    seen = [tuple(start.word(label) for label in labels)]
    for name, mapping in proposals.items():
        said = tuple(mapping[label] for label in labels)
        if said in seen or len({w.strip().lower() for w in said}) < len(said) or not all(w.strip() for w in said):
            continue
        seen.append(said)
        variants[name] = mapping
    return variants


def instruction_variants(start: PromptSpec) -> dict[str, str]:
    """Instructions to try, by name: the user's own, the generic one and the task's templates."""
    variants = {}
    if start.instruction.strip():
        variants["yours"] = start.instruction.strip()
    variants["generic"] = ""
    for name, template in TEMPLATES.get(start.task, {}).items():
        if "{choices}" in template:
            if not 2 <= len(start.labels) <= 6:
                continue
            continue_words = [start.word(label) for label in start.labels]
            template = template.format(choices=", ".join(continue_words[:-1]) + " or " + continue_words[-1])
        variants[name] = template
    return variants


def search_space(start: PromptSpec, *, pool_rows: int, settings: SearchSettings,
                 model_words: dict[str, str] | None = None) -> list[Candidate]:
    """Every candidate, the starting prompt first, then the default few-shot one, then a seeded order."""
    instructions = instruction_variants(start)
    words = word_variants(start, model_words) if start.task == "classification" else {"as given": start.verbalizers}
    shots = [k for k in settings.shots if k <= pool_rows]
    layouts = [(0, start.selection, start.example_style)]
    layouts += [(k, sel, style) for k in shots if k for sel in settings.selections for style in settings.styles]
    everything = []
    for (i_name, instruction), (w_name, verbalizers), (k, selection, style) in itertools.product(
            instructions.items(), words.items(), layouts):
        if not k:
            selection, style = start.selection if start.selection != "manual" else "balanced", start.example_style
        spec = start.with_(instruction=instruction, verbalizers=verbalizers, shots=k, selection=selection,
                           example_style=style, example_ids=[], calibration="auto")
        everything.append(Candidate(spec, i_name, w_name))
    first_instruction = "yours" if "yours" in instructions else "generic"
    default_k = 4 if 4 <= pool_rows else 0
    default = start.with_(shots=default_k, selection=default_selection(default_k, len(start.labels))[0],
                          example_ids=[], calibration="auto") if start.selection != "manual" else start
    head = [Candidate(start.with_(calibration="auto") if start.calibration != "auto" else start,
                      first_instruction, "as given", role="start", first=True),
            Candidate(default, first_instruction, "as given", role="default", first=True)]
    rest = [everything[i] for i in np.random.default_rng(settings.seed).permutation(len(everything))]
    return _distinct(head + _nearest_examples(head, everything) + _one_change_away(head, everything, first_instruction)
                     + rest)


def _nearest_examples(head: list[Candidate], everything: list[Candidate]) -> list[Candidate]:
    """The default prompt with each row's nearest training rows as examples, the most shots first: tried
    right after the starting and default prompts, so no candidate cap or budget leaves them out.

    Examples chosen per row by similarity (KATE: Liu et al. 2022, "What makes good in-context examples for
    GPT-3?") with as many shots as the space allows are the family measured clearly better than a fixed
    4-shot draw for the bundled 135M model (README, "Prompt search"); they cost the most per row (no shared
    prefix), which is why a plan that ordered candidates by one change at a time reached them last.
    """
    default = head[-1]
    similar = [c for c in everything if c.spec.shots >= default.spec.shots and c.spec.selection == "similar"
               and c.instruction == default.instruction and c.words == default.words
               and c.spec.example_style == default.spec.example_style]
    return [dataclasses.replace(c, first=True) for c in sorted(similar, key=lambda c: -c.spec.shots)]


def _one_change_away(head: list[Candidate], everything: list[Candidate], instruction: str) -> list[Candidate]:
    """Candidates that differ from the starting or the default prompt in one way, tried before the rest.

    With a budget of minutes only some candidates are judged; changing one thing at a time from the two
    prompts a user would try first covers every dimension once before any random combination.
    """
    def like(candidate: Candidate, anchor: Candidate, **same: Any) -> bool:
        spec, base = candidate.spec, anchor.spec
        checks = {"instruction": candidate.instruction == anchor.instruction,
                  "words": candidate.words == anchor.words, "shots": spec.shots == base.shots,
                  "layout": (spec.selection, spec.example_style) == (base.selection, base.example_style)}
        return sum(not checks[k] for k in checks if k not in same) == 0 and sum(not checks[k] for k in same) == 1

    near = []
    for anchor in head:
        for dimension in ("instruction", "words", "shots", "layout"):
            near += [c for c in everything if like(c, anchor, **{dimension: True})
                     and (c.spec.shots or dimension != "layout")]
    return near


def _distinct(candidates: list[Candidate]) -> list[Candidate]:
    seen, kept = set(), []
    for candidate in candidates:
        spec = candidate.spec
        key = (spec.instruction, tuple(sorted(spec.verbalizers.items())), spec.shots,
               spec.selection if spec.shots else "",
               spec.example_style if spec.shots else "", tuple(spec.example_ids))
        if key not in seen:
            seen.add(key)
            kept.append(candidate)
    return kept


# -- the model's own words for each label (LM-BFF) ---------------------------------------------------------

def model_label_words(loaded: Any, start: PromptSpec, rows: pd.DataFrame, *, per_label: int = WORD_ROWS_PER_LABEL,
                      top: int = 10, seed: int = 0) -> dict[str, str]:
    """For each label, the single word the model most prefers to answer its rows with, against the others'.

    The model reads up to ``per_label`` training rows of each label zero-shot, with the starting prompt
    (which lists the labels), and gives its next-token distribution where the answer starts. Among the
    ``top`` word tokens most likely for a label's rows (the label's own spellings, its case variants and
    the words the model associates with it), the one most above its mean over all rows is that label's
    word; each word is used once. ``rows`` must be training rows: never validation or test rows.
    """
    from .scoring import next_token_logprobs

    labels = list(start.labels)
    if not 2 <= len(labels) <= MAX_WORD_LABELS or not len(rows):
        return {}
    rows = rows[rows["label"].astype(str).isin(labels)]
    picked = pd.concat([g.sample(min(len(g), per_label), random_state=seed) for _, g in rows.groupby("label")])
    probe = start.with_(shots=0, calibration="none")
    renderer = Renderer(probe, loaded.tokenizer)
    prompts = [renderer.prompt_ids(str(t), (), max_tokens=loaded.context_length - 1) for t in picked["text"]]
    logprobs = next_token_logprobs(loaded, prompts)
    word_ids = _word_token_ids(loaded.tokenizer, logprobs.shape[1])
    overall = logprobs[:, word_ids].mean(axis=0)
    which = picked["label"].astype(str).to_numpy()
    chosen: dict[str, str] = {}
    taken: set[str] = set()
    for label in labels:
        mine = logprobs[which == label][:, word_ids].mean(axis=0)
        likely = np.argsort(-mine)[:top]
        for j in sorted(likely, key=lambda j: -(mine[j] - overall[j])):
            word = loaded.tokenizer.decode([int(word_ids[j])]).strip()
            if word.lower() not in taken:
                chosen[label] = word
                taken.add(word.lower())
                break
    return chosen if len(chosen) == len(labels) else {}


_WORD_IDS: dict[tuple[int, int], np.ndarray] = {}


def _word_token_ids(tokenizer: Any, vocab: int) -> np.ndarray:
    """Tokens that are a whole word of 3+ letters with no leading space (how an answer starts)."""
    key = (id(tokenizer), vocab)
    if key not in _WORD_IDS:
        texts = tokenizer.convert_ids_to_tokens(list(range(min(vocab, len(tokenizer)))))
        _WORD_IDS[key] = np.array([i for i, t in enumerate(texts) if len(t) >= 3 and t.isalpha() and t.isascii()],
                                  dtype=np.int64)
    return _WORD_IDS[key]


# -- scoring a candidate on some rows ----------------------------------------------------------------------

class _Judge:
    """Scores candidates on a growing head of the selection rows, keeping what was already scored."""

    def __init__(self, loaded: Any, rows: pd.DataFrame, pool: pd.DataFrame | None, task: str,
                 should_stop: Callable[[], bool]) -> None:
        self.loaded, self.rows, self.pool, self.task, self.should_stop = loaded, rows, pool, task, should_stop
        self.texts = [str(t) for t in rows["text"]]
        self.references = [str(x) for x in rows["label"]]
        self._raw: dict[int, list] = {}  # candidate id -> per-row scores (or answers)
        self._content_free: dict[int, np.ndarray] = {}
        self.metric = "chrf"
        if task == "classification":
            labels = sorted(set(self.references))
            self.metric, _ = _choice_metric(self.references, labels)

    def score(self, number: int, candidate: Candidate, upto: int) -> float:
        """The candidate's score on the first ``upto`` rows, its calibration chosen on those rows."""
        started = time.perf_counter()
        done = self._raw.setdefault(number, [])
        if len(done) < upto:
            done.extend(self._run(number, candidate, range(len(done), upto)))
            candidate.rows_scored = upto
        candidate.seconds += time.perf_counter() - started
        refs = self.references[:upto]
        if self.task != "classification":
            from .metrics import text_metrics

            score = float(text_metrics(refs, done[:upto])["chrf"])
            candidate.calibration[upto] = "none"
        else:
            score, method = self._calibrated(candidate.spec, np.array(done[:upto]), refs,
                                             self._content_free.get(number))
            candidate.calibration[upto] = method
        candidate.scores[upto] = score
        return score

    def predictions(self, number: int, candidate: Candidate, upto: int) -> list[str]:
        """The candidate's answers on the first ``upto`` rows, as its score there counts them: under the
        calibration chosen on those rows ("fitted" cross-fitted, as it was judged)."""
        done = self._raw[number][:upto]
        if self.task != "classification":
            return [str(answer) for answer in done]
        labels = list(candidate.spec.labels)
        scores = np.asarray(done, dtype=np.float64)
        method = candidate.calibration[upto]
        if method == "fitted":
            return calib._cross_fitted_predictions(labels, scores, self.references[:upto])
        chosen = (calib.content_free(labels, self._content_free[number]) if method == "content-free"
                  else calib.uncalibrated(labels))
        return [labels[i] for i in chosen.apply(scores).argmax(axis=1)]

    def _run(self, number: int, candidate: Candidate, rows: range) -> list:
        from .scoring import generate_answers, score_labels

        spec = candidate.spec
        renderer = Renderer(spec, self.loaded.tokenizer)
        texts = [self.texts[i] for i in rows]
        if self.task == "classification":
            answers = [renderer.answer_ids(label) for label in spec.labels]
            room = self.loaded.context_length - max(len(a) for a in answers)
            if number not in self._content_free:
                free = self._prompts(spec, renderer, [CONTENT_FREE_TEXT], room)
                self._content_free[number] = score_labels(self.loaded, free, answers)[0]
            scores: list = [None] * len(texts)
            for group, prompts in self._groups(spec, renderer, texts, room):
                for i, row in zip(group, score_labels(self.loaded, prompts, answers, should_stop=self.should_stop)):
                    scores[i] = row
            return scores
        limits = answer_limits(spec, renderer, texts)
        prompts = self._prompts(spec, renderer, texts, self.loaded.context_length - spec.max_answer_tokens)
        return generate_answers(self.loaded, prompts, max_new_tokens=limits, stop_ids=renderer.stop_ids(),
                                stop_at_newline=spec.stop_at_newline, should_stop=self.should_stop)

    def _prompts(self, spec: PromptSpec, renderer: Renderer, texts: list[str], room: int) -> list[list[int]]:
        return _Prompter(spec, renderer, self.pool, room).prompts(texts)[0]

    def _groups(self, spec: PromptSpec, renderer: Renderer, texts: list[str],
                room: int) -> list[tuple[list[int], list[list[int]]]]:
        """Rows grouped by their example set, each group with its prompts.

        A training row among the selection rows is never shown itself as an example, so it gets its own
        example set; scored apart, the rows that share a set keep one shared prefix computed once.
        """
        example_ids = select_examples(spec, self.pool, texts)
        groups: dict[tuple, list[int]] = {}
        for i, ids in enumerate(example_ids):
            groups.setdefault(tuple(ids) if spec.selection != "similar" else (), []).append(i)
        out = []
        for key, members in groups.items():
            prompts = [renderer.prompt_ids(texts[i], examples_for(self.pool, example_ids[i]), max_tokens=room)
                       for i in members]
            out.append((members, prompts))
        return out

    def _calibrated(self, spec: PromptSpec, scores: np.ndarray, refs: list[str],
                    content_free: np.ndarray | None) -> tuple[float, str]:
        from .metrics import classification_metrics

        labels = list(spec.labels)

        def metric(references: Sequence[str], predictions: Sequence[str]) -> float:
            return classification_metrics(references, predictions, labels)[self.metric]

        chosen = calib.choose(labels, scores, refs, fitted_on="validation", metric=metric, metric_name=self.metric,
                              content_free_scores=content_free)
        return float(chosen.chosen_by["scores"][chosen.method]), chosen.method


# -- successive halving --------------------------------------------------------------------------------------

def rungs(first_rows: int, total_rows: int, keep_fraction: float) -> list[int]:
    """The row counts of the rungs: ``first_rows``, then ×(1/keep_fraction) each time, ending at all rows."""
    grow = 1 / keep_fraction
    sizes, rows = [], min(first_rows, total_rows)
    while True:
        sizes.append(rows)
        if rows >= total_rows:
            return sizes
        rows = min(total_rows, int(math.ceil(rows * grow)))


def search_prompt(loaded: Any, start: PromptSpec, *, train: pd.DataFrame | None,
                  validation: pd.DataFrame | None = None, settings: SearchSettings | None = None,
                  on_progress: Progress | None = None, on_leaderboard: Callable[[list[dict]], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> SearchResult:
    """Search prompts for ``start``'s task within the budget and return the best on the selection rows.

    ``train`` is the example pool (and tops up the selection rows); ``validation`` the rows chosen on first.
    Test rows are never passed here. ``on_leaderboard`` gets the current ranking after each candidate.
    """
    settings = settings or SearchSettings(seed=start.seed)
    started = time.perf_counter()
    deadline = started + settings.budget_seconds
    stopped: list[str] = []

    def out_of_time() -> bool:
        if should_stop and should_stop():
            stopped.append("cancelled")
            return True
        if time.perf_counter() > deadline:
            stopped.append("budget")
            return True
        return False

    rows, counts = selection_rows(train, validation, max_rows=settings.max_rows, seed=settings.seed)
    words_from = _rows_not_in(train, rows)
    model_words = (model_label_words(loaded, start, words_from, seed=settings.seed)
                   if start.task == "classification" and words_from is not None else {})
    pool_rows = len(train) if train is not None else 0
    space = search_space(start, pool_rows=pool_rows, settings=settings, model_words=model_words)
    judge = _Judge(loaded, rows, train, start.task, out_of_time)
    sizes = rungs(settings.first_rows, len(rows), settings.keep_fraction)
    planned = _plan(space, sizes, settings, judge, started)
    alive = list(range(len(planned)))
    evaluated: set[int] = set()
    finished_rung = -1
    for level, upto in enumerate(sizes):
        done_here = []
        for number in alive:
            if out_of_time():
                break
            try:
                judge.score(number, planned[number], upto)
            except Stopped:  # the budget ran out or the user cancelled, in the middle of a candidate
                break
            except SettingsError:  # a candidate that cannot run here (e.g. its examples do not fit): skip it
                if out_of_time():
                    break
                continue
            done_here.append(number)
            evaluated.add(number)
            _report(on_progress, on_leaderboard, planned, sizes, level, len(done_here), len(alive), started,
                    settings.budget_seconds)
        if stopped:
            if done_here and (finished_rung < 0 or len(done_here) == len(alive)):
                alive, finished_rung = done_here, level
            break
        alive, finished_rung = done_here, level
        if len(alive) <= 1 or level == len(sizes) - 1:
            break
        # the best third of the others goes on, but at least two: the last choice is made between two on all
        # the rows; the starting and default prompts go on too (first), so the winner is tested against them
        anchors = [n for n in alive if planned[n].role]
        others = [n for n in _ranked(planned, alive, upto) if n not in anchors]
        keep = max(2, int(math.ceil(len(others) * settings.keep_fraction)))
        alive = anchors + others[:keep]
    if finished_rung < 0 or not alive:
        raise SearchStopped("The search stopped before any prompt was scored.",
                            "Give it a larger time budget." if "budget" in stopped else "Start it again.")
    upto = sizes[finished_rung]
    ranking = _ranked(planned, alive, upto)
    chosen, guard = keep_or_replace(judge, planned, ranking, upto, settings.keep_margin)
    winner = planned[chosen]
    start_score = planned[0].scores.get(upto)
    method = winner.calibration[upto]
    result_spec = winner.spec.with_(calibration=method)
    if guard and guard["kept"]:  # the kept prompt exactly as it was, its calibration too (the harness resolves it)
        result_spec = start if winner.role == "start" else winner.spec
    return SearchResult(
        spec=result_spec, metric=judge.metric, validation_score=round(winner.scores[upto], 4), rows=upto,
        selection_rows=counts, candidates=len(planned), evaluated=len(evaluated),
        budget_seconds=settings.budget_seconds, seconds=time.perf_counter() - started,
        stopped=stopped[0] if stopped else None, start_score=None if start_score is None else round(start_score, 4),
        leaderboard=leaderboard(planned, sizes, chosen=winner),
        explanation=explain(start, planned[0], winner, upto, judge.metric, counts, guard=guard),
        warnings=_warnings(judge, planned, ranking, upto, counts, chosen=chosen), words=model_words,
        winner=winner.describe(), guard=guard)


def keep_or_replace(judge: _Judge, planned: list[Candidate], ranking: list[int], upto: int,
                    margin: float = KEEP_MARGIN) -> tuple[int, dict | None]:
    """The candidate to return: the best on the selection rows, or the prompt it would replace.

    The prompt it would replace is the better of the starting and the default few-shot prompt on the same
    ``upto`` rows. The best candidate replaces it only if its lead is more than ``margin`` standard errors of
    the paired difference on those rows (``compare.stats.compare_pair``: exact McNemar for accuracy, a
    paired bootstrap for macro-F1 and chrF; its p-value is kept for the explanation). This is the
    one-standard-error rule of model selection (Breiman et al. 1984; Hastie et al., *The Elements of
    Statistical Learning*, 7.10): the best of many candidates on a few hundred rows is partly the luckiest,
    and a lead within noise often does not carry over to new rows. A 5 % significance level instead kept a
    zero-shot prompt on SST-2 against a 3.7-point lead (p = 0.26) that held on the test rows. Returns the
    chosen number and the test (None when the best is itself one of those prompts, or neither was judged on
    these rows). ``margin`` 0 returns the best whenever it leads at all.
    """
    best = ranking[0]
    reference = next((n for n in ranking if planned[n].role), None)
    if reference is None or reference == best:
        return best, None
    labels = list(planned[best].spec.labels) if judge.task == "classification" else None
    refs = judge.references[:upto]

    def arm(number: int) -> Any:  # what compare_pair reads of an evaluated arm
        return SimpleNamespace(arm=planned[number].describe(), references=refs,
                               predictions=judge.predictions(number, planned[number], upto))

    test = compare_pair(arm(reference), arm(best), judge.task, metric=judge.metric, labels=labels)
    scale = 100.0 if judge.metric == "chrf" else 1.0  # compare_pair's differences are 0..1, chrF too
    error = float(test.details.get("standard_error") or 0.0) * scale
    replaced = test.difference > 0 and test.difference * scale > margin * error
    guard = {"reference": planned[reference].role, "reference_called": planned[reference].called(),
             "reference_prompt": planned[reference].describe(),
             "candidate": planned[best].describe(), "rows": upto, "metric": judge.metric,
             "reference_score": round(planned[reference].scores[upto], 4),
             "candidate_score": round(planned[best].scores[upto], 4),
             "difference": round(planned[best].scores[upto] - planned[reference].scores[upto], 4),
             "standard_error": round(error, 4), "margin": margin, "p_value": round(test.p_value, 4),
             "test": test.test, "resamples": test.resamples, "kept": not replaced}
    return (best, guard) if replaced else (reference, guard)


def _rows_not_in(train: pd.DataFrame | None, chosen: pd.DataFrame) -> pd.DataFrame | None:
    """Training rows that are not selection rows: where label words may be learned without a leak."""
    if train is None or not len(train):
        return None
    taken = set(chosen["text"].astype(str))
    rest = train[~train["text"].astype(str).isin(taken)]
    return rest if len(rest) else None


def _plan(space: list[Candidate], sizes: list[int], settings: SearchSettings, judge: _Judge,
          started: float) -> list[Candidate]:
    """The candidates to try: ``max_candidates`` if given, else as many as the budget is expected to allow.

    The starting prompt is timed on the first rows (that work is kept), which gives the model's time per
    computed token here; each candidate's tokens per row come from rendering it (examples make a prompt
    dearer, "similar" examples most, as no row shares them). Halving then costs, per rung, the survivors
    (the starting and default prompts and the best third of the others) times the rows that rung adds, at
    the planned candidates' mean cost. The candidates marked ``first`` (the starting and default prompts and
    the nearest-examples family, at the head of the space) are planned whatever the estimate.
    """
    if settings.max_candidates is not None:
        return space[:settings.max_candidates]
    judge.score(0, space[0], sizes[0])
    sample = judge.texts[:4]
    tokens = [_tokens_per_row(c, judge, sample, sizes[0]) for c in space[:PLAN_MAX]]
    per_token = max(space[0].seconds / max(sizes[0] * tokens[0], 1.0), 1e-7)
    left = settings.budget_seconds - (time.perf_counter() - started)
    count, first_rung = 1, sizes[0] * tokens[0]
    while count < len(tokens):
        first_rung += sizes[0] * tokens[count]
        mean = first_rung / sizes[0] / (count + 1)
        anchors = sum(1 for c in space[:count + 1] if c.role)  # judged on every rung
        others = count + 1 - anchors
        later = sum((anchors + min(others, max(2, math.ceil(others * settings.keep_fraction ** k))))
                    * (sizes[k] - sizes[k - 1]) for k in range(1, len(sizes)))
        if PLAN_MARGIN * per_token * (first_rung + mean * later) > left:
            break
        count += 1
    return space[:max(2, count, sum(c.first for c in space))]


PLAN_MAX = 300  # candidates whose cost is estimated (more never fit a budget of minutes on a CPU)
PLAN_MARGIN = 1.15  # planned work is this much below the budget: timings wobble


def _tokens_per_row(candidate: Candidate, judge: _Judge, texts: list[str], rows_per_call: int) -> float:
    """Tokens computed per row when the candidate scores ``rows_per_call`` rows in one call (prefix once)."""
    from .scoring import _common_prefix_length

    spec = candidate.spec
    renderer = Renderer(spec, judge.loaded.tokenizer)
    similar = spec.selection == "similar" and spec.shots
    try:  # similar examples are about as long as balanced ones, and finding them costs a TF-IDF pass
        example_sets = select_examples(spec.with_(selection="balanced") if similar else spec, judge.pool, texts)
    except SettingsError:
        return float("inf")
    prompts = [renderer.prompt_ids(t, examples_for(judge.pool, ids)) for t, ids in zip(texts, example_sets)]
    shared = 0 if similar else _common_prefix_length(prompts)
    full = float(np.mean([len(p) for p in prompts]))
    return full - shared + (shared + full) / rows_per_call  # the prefix, and the content-free row, once per call


def _ranked(planned: list[Candidate], numbers: list[int], upto: int) -> list[int]:
    """Best first; ties go to fewer examples (cheaper), then to the earlier candidate."""
    return sorted(numbers, key=lambda n: (-round(planned[n].scores.get(upto, -1.0), 9), planned[n].spec.shots, n))


def _report(on_progress: Progress | None, on_leaderboard: Callable | None, planned: list[Candidate],
            sizes: list[int], level: int, done: int, alive: int, started: float, budget: float) -> None:
    if on_progress:
        elapsed = time.perf_counter() - started
        left = max(0.0, budget - elapsed)
        on_progress(int(min(elapsed, budget)), int(budget),
                    f"Rung {level + 1} of {len(sizes)} ({sizes[level]} rows): {done}/{alive} candidates; "
                    f"at most {left:.0f} s left")
    if on_leaderboard:
        on_leaderboard(leaderboard(planned, sizes))


def leaderboard(planned: list[Candidate], sizes: list[int], chosen: Candidate | None = None) -> list[dict]:
    """Every scored candidate, those judged on the most rows first, best first among them; ``chosen`` (the
    prompt the search returns, marked ``chosen``) is not always the first: see ``keep_or_replace``."""
    scored = [c for c in planned if c.scores]
    scored.sort(key=lambda c: (-c.best()[0], -c.best()[1], c.spec.shots))
    table = []
    for rank, candidate in enumerate(scored, 1):
        rows, score = candidate.best()
        table.append({"rank": rank, "candidate": candidate.describe(), "instruction": candidate.instruction,
                      "answers": candidate.words, "shots": candidate.spec.shots,
                      "selection": candidate.spec.selection if candidate.spec.shots else "",
                      "style": candidate.spec.example_style if candidate.spec.shots else "",
                      "calibration": candidate.calibration.get(rows, ""), "score": round(score, 4), "rows": rows,
                      "ms_per_row": round(1000 * candidate.seconds / max(candidate.rows_scored, 1), 1),
                      "chosen": candidate is chosen})
    return table


# -- explaining the result ----------------------------------------------------------------------------------

def explain(start: PromptSpec, first: Candidate, winner: Candidate, rows: int, metric: str,
            counts: dict, guard: dict | None = None) -> list[str]:
    """What changed from the starting prompt to the winner, and what it did on the selection rows.

    ``guard`` is ``keep_or_replace``'s test: when it kept a prompt, the first line says so and why.
    """
    name = metric_name(metric)
    spec = winner.spec
    lines = []
    if guard and guard["kept"]:
        lines.append(f"Kept {winner.called()}: no prompt tried was clearly better. The best of the others "
                     f"({guard['candidate']}) scored {_shown(guard['candidate_score'], metric)} {name} against "
                     f"{_shown(guard['reference_score'], metric)} on the same {rows_phrase(rows, counts)}, a lead "
                     f"of {_points(guard['difference'], metric)}, within one standard error of the difference on those "
                     f"rows ({_points(guard['standard_error'], metric)}; {p_text(guard['p_value'], guard.get('resamples'))}, "
                     f"{guard['test']}). The best of many prompts on a few hundred rows is partly the luckiest; "
                     "such a lead often does not carry over to new rows.")
    elif winner is first:
        lines.append("Your prompt was already the best of those tried; nothing was changed.")
    if spec.instruction != start.instruction:
        shown = spec.instruction or DEFAULT_INSTRUCTION[spec.task]
        lines.append(f"Instruction ({winner.instruction}): \u201c{shown}\u201d.")
    if spec.verbalizers != start.verbalizers:
        said = ", ".join(f"{label} \u2192 {spec.word(label)}" for label in spec.labels if spec.word(label) != label)
        lines.append(f"Answers said as {winner.words}: {said}. The model scores words it knows well more reliably.")
    if spec.shots != start.shots or (spec.shots and spec.selection != start.selection):
        if spec.shots:
            lines.append(f"{spec.shots} solved example{'s' if spec.shots > 1 else ''} ({spec.selection} selection, "
                         f"shown as {'earlier chat turns' if spec.example_style == 'conversation' else 'a list'}).")
        else:
            lines.append("No examples (zero-shot): examples did not help this model on these rows, and they cost "
                         "tokens on every query.")
    method = winner.calibration.get(rows, "none")
    if guard and guard["kept"]:
        calibration = start.calibration if winner.role == "start" else winner.spec.calibration
        lines.append(f"Calibration: as it was ({calibration}); on these rows {method} scored best.")
        return lines
    lines.append({"none": "Calibration: none (the raw scores were best).",
                  "content-free": "Calibration: content-free (the model's lean on an empty text is taken out).",
                  "fitted": "Calibration: fitted (the model's average lean over rows that are never scored is "
                            "taken out)."}.get(method, f"Calibration: {method}."))
    before = first.scores.get(rows)
    if guard and not guard["kept"]:
        lines.append(f"On the same {rows_phrase(rows, counts)} it scored {_shown(guard['candidate_score'], metric)} "
                     f"{name} against {_shown(guard['reference_score'], metric)} for {guard['reference_called']}, "
                     f"a lead of {_points(guard['difference'], metric)}, more than one standard error of the difference "
                     f"on those rows ({_points(guard['standard_error'], metric)}; "
                     f"{p_text(guard['p_value'], guard.get('resamples'))}, {guard['test']}).")
    elif before is not None and winner is not first:
        lines.append(f"On the same {rows_phrase(rows, counts)} it scored {_shown(winner.scores[rows], metric)} {name} "
                     f"against {_shown(before, metric)} for your prompt.")
    elif winner is not first:
        dropped_at, dropped_score = first.best() if first.scores else (0, 0.0)
        lines.append(f"It scored {_shown(winner.scores[rows], metric)} {name} on {rows_phrase(rows, counts)}; your "
                     f"prompt was dropped after the first {dropped_at} rows, where it scored "
                     f"{_shown(dropped_score, metric)}.")
    return lines


def rows_phrase(rows: int, counts: dict) -> str:
    """What the selection rows are, in words: they are validation rows topped up with training rows."""
    if not counts.get("train"):
        return f"{rows} validation rows"
    return f"{rows} rows (drawn from {counts.get('validation', 0)} validation rows and {counts['train']} training rows)"


def _shown(score: float, metric: str) -> str:
    return f"{score:.1f}" if metric == "chrf" else f"{score:.1%}"


def _points(difference: float, metric: str) -> str:
    """A difference of two scores in points: of percent (accuracy, macro-F1) or of chrF."""
    return f"{difference if metric == 'chrf' else difference * 100:.1f} points"


def _warnings(judge: _Judge, planned: list[Candidate], ranking: list[int], rows: int, counts: dict,
              chosen: int | None = None) -> list[dict]:
    """Too few selection rows; a winner whose lead on the runner-up is within noise (not when a prompt was kept:
    the explanation says why it was kept)."""
    warnings = []
    if rows < MIN_RELIABLE_ROWS:
        warnings.append({"code": "few_selection_rows", "message": f"The winner was chosen on {rows} rows; under "
                         f"{MIN_RELIABLE_ROWS}, a few points between prompts can be luck. Give more validation or "
                         "training rows, or a larger budget.", "numbers": {"rows": rows, **counts}})
    if len(ranking) > 1 and chosen in (None, ranking[0]):
        a, b = planned[ranking[0]], planned[ranking[1]]
        scale = 100.0 if judge.metric == "chrf" else 1.0
        lead = (a.scores[rows] - b.scores[rows]) / scale
        noise = 1.0 / math.sqrt(rows)  # about two standard errors of a difference near 50 % (chrF: in points/100)
        if lead < noise:
            warnings.append({"code": "lead_within_noise", "message": f"The winner leads the runner-up by "
                             f"{lead:.1%} on {rows} rows, within noise (about \u00b1{noise:.0%}): either prompt "
                             "may do as well on new rows.", "numbers": {"lead": round(lead, 4), "rows": rows,
                                                                       "noise": round(noise, 4)}})
    return warnings


def found_lines(search: dict, test_score: float | None) -> list[str]:
    """How a searched arm was found, in plain lines (the Compare page and the report say the same)."""
    scale, unit = (1.0, "") if search.get("metric") == "chrf" else (100.0, "%")
    name = metric_name(search.get("metric", "accuracy"))
    spec = PromptSpec.from_dict(search["spec"])
    lines = [f"{search['evaluated']} of {search['candidates']} planned prompts were tried in {search['seconds']:.0f} s "
             f"(budget {search['budget_seconds']:.0f} s), chosen on validation rows, never on the test rows.",
             f"{'The prompt kept' if (search.get('guard') or {}).get('kept') else 'The winner'} ({spec.name()}, "
             f"calibration {spec.calibration}) scored {name} "
             f"{search['validation_score'] * scale:.1f}{unit} on {rows_phrase(search['rows'], search.get('selection_rows', {}))}"
             + (f" and {test_score * scale:.1f}{unit} on the test rows." if test_score is not None else ".")]
    lines += [line for line in search.get("explanation", []) if not line.startswith("On the same")]
    lines += [w["message"] for w in search.get("warnings", [])]
    return lines
