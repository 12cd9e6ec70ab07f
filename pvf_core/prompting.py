"""Prompt specifications: what the model is told, which examples it sees, and how that becomes tokens.

A ``PromptSpec`` is plain data (instruction, context, output format, labels and how each is said to the
model, number of examples and how they are picked, seed). ``Renderer`` turns it into token ids through
the model's own chat template; the evaluation harness scores exactly these ids, and fine-tuning trains on
exactly these ids, so both sides of the comparison see the same text:

    system:    instruction · context · output format ("Answer with exactly one of: a, b, c.")
    user:      example 1 text          ┐ shots × (user, assistant) turns ("conversation" style),
    assistant: example 1 answer        ┘ or all examples listed in the user message ("list" style)
    user:      the row's text
    assistant: <answer tokens> <end of turn>    ← scored (classification) or generated (text-to-text)

The instruction sits in the system message on purpose: without one, SmolLM2's template injects its own
"You are a helpful AI assistant named SmolLM" system prompt, which cost ~12 points on SST-2.

For fine-tuning (zero-shot prompt, the adapter learns the task)::

    prompt_ids, answer_ids = render_for_training(spec, text, label, tokenizer)
    # input = prompt_ids + answer_ids; put the loss on answer_ids only. answer_ids = the label's
    # verbalizer tokens + the end-of-turn token; the harness ranks labels by the mean log-probability
    # of exactly these tokens after prompt_ids.

Other entry points: ``select_examples`` (random, balanced, similar by TF-IDF, manual), ``prompt_budget``
(tokens per part, how many examples still fit the context), ``lint`` (plain-language tips) and
``diff_specs`` (what changed between two prompt versions).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import SettingsError
from .settings import check_ranges, field_label, known_fields, setting

TASKS = ("classification", "text-to-text")
SELECTIONS = ("random", "balanced", "similar", "manual")
EXAMPLE_STYLES = ("conversation", "list")
CALIBRATIONS = ("auto", "fitted", "content-free", "none")
ROW_PLACEHOLDER = "PVF_ROW_TEXT_7f3a"  # stands for the row's text while the chat template is rendered
CONTENT_FREE_TEXT = "N/A"
# The automatic answer format lists the labels while there are at most LABEL_LIST_MAX_LABELS of them and the
# list stays under LABEL_LIST_MAX_CHARS (about 800 tokens, a tenth of SmolLM2's 8,192-token context). Beyond
# that the model relies on the answer words alone: they are scored, so a listed label is never needed for it
# to be picked. Measured on the bundled model, 150 generated intent labels, zero-shot, 40 rows: listing them
# (726 tokens every row attends to) gave 0.65 accuracy (content-free calibration) at 926 ms per row; not
# listing them 0.95 at 672 ms. The fine-tuned arm's prompt lists no more than this many labels either.
LABEL_LIST_MAX_LABELS = 20
LABEL_LIST_MAX_CHARS = 3000

DEFAULT_INSTRUCTION = {
    "classification": "Classify the text in the user's message.",
    "text-to-text": "Rewrite the text in the user's message as the task requires.",
}

Example = tuple[str, str]  # (text, label)


@dataclass
class PromptSpec:
    """How a language model is prompted for a task: instruction, labels, examples, calibration."""

    task: str = setting("classification", "Classification picks one label per row; text-to-text writes an "
                        "answer (translation, summary, correction).", choices=TASKS)
    instruction: str = setting("", "What the model should do, in one or two plain sentences: what it reads and "
                               "what it must answer. Empty uses a generic sentence, which usually scores lower.",
                               label="Instruction")
    context: str = setting("", "Background the model needs: who wrote the texts, what each label means, edge "
                           "cases. Optional; every extra word is paid on every query.")
    output_format: str | None = setting(None, "How the answer must look. Empty keeps the automatic sentence "
                                        "('Answer with exactly one of: ...'); write your own to change it.")
    labels: list = setting([], "The answers the model chooses from, spelled as in the data. Filled from the "
                           "data when left empty.")
    verbalizers: dict = setting({}, "How each label is said to the model, e.g. 'pos' -> 'positive'. Plain, "
                                "distinct everyday words work best; labels not listed are said as they are.")
    shots: int = setting(0, "How many solved examples the prompt shows before the row (0 = zero-shot). More "
                         "examples cost tokens on every query and can make a small model worse.", min=0, max=64,
                         label="Examples (shots)")
    selection: str = setting("balanced", "How examples are picked from the training rows: random; balanced "
                             "(the same number per label); similar (the training rows closest to each test "
                             "row by TF-IDF word overlap); manual (the rows you hand-pick).", choices=SELECTIONS,
                             label="Example selection")
    example_ids: list = setting([], "Hand-picked training rows (row numbers, counted from 0) used as examples "
                                "when the selection is 'manual'.", label="Hand-picked rows")
    example_style: str = setting("conversation", "How examples are shown: 'conversation' as earlier chat turns "
                                 "(measured better here), or 'list' inside the user's message.",
                                 choices=EXAMPLE_STYLES, advanced=True)
    calibration: str = setting("auto", "Corrects a model that leans towards some labels whatever the text says, "
                               "with one fixed correction per label, fitted on rows that are never scored, so "
                               "each text is answered on its own. 'fitted': the model's average lean over the "
                               "validation rows; 'content-free': its lean for an empty text; 'none': the raw "
                               "scores; 'auto' (default) picks the one that scores best on the validation rows.",
                               choices=CALIBRATIONS)
    max_answer_tokens: int = setting(64, "Text-to-text: the longest answer the model may write, in tokens.",
                                     min=1, max=1024, advanced=True)
    stop_at_newline: bool = setting(True, "Text-to-text: stop the answer at the first line break (one-line "
                                    "answers).", advanced=True)
    seed: int = setting(0, "Random seed for drawing examples; change it to see how much the score depends on "
                        "which examples were drawn.", min=0)

    def __post_init__(self) -> None:
        if self.calibration == "batch":  # saved before calibration was fitted off the test rows
            self.calibration = "fitted"
        check_ranges(self)
        self.labels = [str(label) for label in self.labels]
        self.verbalizers = {str(k): str(v) for k, v in self.verbalizers.items()}
        self.example_ids = [int(i) for i in self.example_ids]
        if len(set(self.labels)) != len(self.labels):
            raise SettingsError("Labels must be distinct; a label is listed twice.")
        words = [self.word(label).strip().lower() for label in self.labels]
        if len(set(words)) != len(words):
            raise SettingsError("Two labels are said with the same word; give each label its own word.")
        if any(not self.word(label).strip() for label in self.labels):
            raise SettingsError("A label's word (verbalizer) is empty; give each label a word.")
        if self.selection == "manual" and self.shots and not self.example_ids:
            raise SettingsError("Example selection is 'manual' but no rows were hand-picked.",
                                "Pick example rows, or choose another selection.")

    # -- words --------------------------------------------------------------------------------------
    def word(self, label: str) -> str:
        """The verbalizer: how ``label`` is said to the model."""
        return self.verbalizers.get(label) or label

    def label_for_word(self, word: str) -> str | None:
        """The label whose verbalizer is ``word`` (case and surrounding space ignored)."""
        wanted = word.strip().lower()
        return next((label for label in self.labels if self.word(label).strip().lower() == wanted), None)

    @property
    def n_examples(self) -> int:
        return len(self.example_ids) if self.selection == "manual" and self.shots else self.shots

    def resolved_instruction(self) -> str:
        return self.instruction.strip() or DEFAULT_INSTRUCTION[self.task]

    def resolved_output_format(self) -> str:
        if self.output_format is not None:
            return self.output_format.strip()
        if self.task == "classification" and self.labels:
            if not self.lists_labels():
                return f"Answer with exactly one label (there are {len(self.labels)}), nothing else."
            return "Answer with exactly one of: " + ", ".join(self.word(label) for label in self.labels) + "."
        return "Answer with the result only, without explanations."

    def lists_labels(self) -> bool:
        """Whether the automatic answer format lists the labels: while there are at most
        ``LABEL_LIST_MAX_LABELS`` and the list stays under ``LABEL_LIST_MAX_CHARS``."""
        listed = ", ".join(self.word(label) for label in self.labels)
        return len(self.labels) <= LABEL_LIST_MAX_LABELS and len(listed) <= LABEL_LIST_MAX_CHARS

    def system_message(self) -> str:
        parts = [self.resolved_instruction(), self.context.strip(), self.resolved_output_format()]
        return "\n\n".join(p for p in parts if p)

    def with_(self, **changes: Any) -> "PromptSpec":
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def name(self) -> str:
        """A short arm name: 'zero-shot', '4-shot balanced'."""
        if not self.n_examples:
            return "zero-shot"
        return f"{self.n_examples}-shot {self.selection}"

    # -- save / load --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PromptSpec":
        return cls(**known_fields(cls, data))


# -- rendering ------------------------------------------------------------------------------------------

def build_messages(spec: PromptSpec, text: str, examples: Sequence[Example] = ()) -> list[dict[str, str]]:
    """The chat messages for one row: system, the examples, then the row as the last user turn."""
    messages = [{"role": "system", "content": spec.system_message()}]
    if spec.example_style == "conversation":
        for ex_text, ex_label in examples:
            messages += [{"role": "user", "content": ex_text},
                         {"role": "assistant", "content": spec.word(ex_label)}]
        messages.append({"role": "user", "content": text})
    else:
        blocks = [f"Text: {t}\nAnswer: {spec.word(label)}" for t, label in examples]
        content = ("Examples:\n\n" + "\n\n".join(blocks) + "\n\nText: " + text) if blocks else text
        messages.append({"role": "user", "content": content})
    return messages


class Renderer:
    """Token ids of prompts and answers for one spec and tokenizer.

    The prompt is rendered once per example set with a placeholder for the row's text and split there;
    a row's ids are ``head + tokens(text) + tail``, so rows that share examples share ``head`` exactly
    (the harness computes that shared prefix once and reuses its key/value cache).
    """

    def __init__(self, spec: PromptSpec, tokenizer: Any) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self._frames: dict[tuple, tuple[list[int], list[int]]] = {}
        self.end_of_turn = self._end_of_turn_ids()

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _template(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def frame(self, examples: Sequence[Example] = ()) -> tuple[list[int], list[int]]:
        """(head, tail) ids around the row's text for this example set."""
        key = tuple(examples)
        if key not in self._frames:
            rendered = self._template(build_messages(self.spec, ROW_PLACEHOLDER, examples), True)
            if rendered.count(ROW_PLACEHOLDER) != 1:
                raise SettingsError("The model's chat template changes the message text, so prompts cannot be "
                                    "rendered reliably.", "Choose another model.")
            head, tail = rendered.split(ROW_PLACEHOLDER)
            self._frames[key] = (self.encode(head), self.encode(tail))
        return self._frames[key]

    def prompt_ids(self, text: str, examples: Sequence[Example] = (), max_tokens: int | None = None) -> list[int]:
        """The ids of the whole prompt for one row, up to where the answer starts.

        With ``max_tokens`` the row's text is cut (its end dropped) so the prompt fits.
        """
        head, tail = self.frame(examples)
        body = self.encode(text)
        if max_tokens is not None and len(head) + len(body) + len(tail) > max_tokens:
            body = body[:max(0, max_tokens - len(head) - len(tail))]
        return head + body + tail

    def word_ids(self, label: str) -> list[int]:
        """The tokens of the label's verbalizer, as the assistant would write them."""
        return self.encode(self.spec.word(label))

    def answer_ids(self, label: str) -> list[int]:
        """Verbalizer tokens followed by the end-of-turn token: what is scored and what is trained."""
        return self.word_ids(label) + self.end_of_turn

    def _end_of_turn_ids(self) -> list[int]:
        """The first token the template writes after an assistant message (``<|im_end|>`` for ChatML)."""
        messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                    {"role": "assistant", "content": ROW_PLACEHOLDER}]
        after = self._template(messages, False).split(ROW_PLACEHOLDER)[-1]
        ids = self.encode(after)
        if ids:
            return ids[:1]
        eos = self.tokenizer.eos_token_id
        return [eos] if eos is not None else []

    def stop_ids(self) -> set[int]:
        """Tokens that end a generated answer."""
        stops = set(self.end_of_turn)
        if self.tokenizer.eos_token_id is not None:
            stops.add(int(self.tokenizer.eos_token_id))
        return stops


def render_for_training(spec: PromptSpec, text: str, label: str, tokenizer: Any) -> tuple[list[int], list[int]]:
    """(prompt_ids, answer_ids) of one training row, zero-shot: the exact format the harness scores."""
    renderer = Renderer(spec.with_(shots=0, example_ids=[]), tokenizer)
    return renderer.prompt_ids(text), renderer.answer_ids(label)


def render_text(spec: PromptSpec, tokenizer: Any, text: str, examples: Sequence[Example] = ()) -> str:
    """The prompt as the model reads it (for display)."""
    return tokenizer.apply_chat_template(build_messages(spec, text, examples), tokenize=False,
                                         add_generation_prompt=True)


# -- example selection ----------------------------------------------------------------------------------

def _normalise(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", str(text).lower()).strip()


def select_examples(spec: PromptSpec, pool: pd.DataFrame | None, test_texts: Sequence[str] = ()) -> list[list[int]]:
    """For each test row, the row numbers of ``pool`` (columns text, label) to show as examples.

    A row's examples depend on that row and the pool alone, never on the other test rows, so its answer
    is the same however many rows are scored. random / balanced / manual give every row the same
    examples (so their prefix is computed once), except that a pool row with the same text as the test
    row is never shown to it (it would leak the answer): it is swapped for the next row of one seeded
    spare order (same label where possible). similar gives each row its own nearest pool rows.
    Hand-picked rows are used as given and ``lint`` flags leaks.
    """
    texts = list(test_texts) or [""]
    k = spec.n_examples
    if k == 0:
        return [[] for _ in texts]
    if pool is None or len(pool) == 0:
        raise SettingsError(f"{k} examples were asked for, but there are no training rows to take them from.",
                            "Use 0 examples (zero-shot) or give training data.")
    if spec.selection == "manual":
        bad = [i for i in spec.example_ids if not 0 <= i < len(pool)]
        if bad:
            raise SettingsError(f"Hand-picked row {bad[0]} does not exist; the training data has rows 0 to "
                                f"{len(pool) - 1}.")
        return [list(spec.example_ids)] * len(texts)
    if len(pool) < k:
        raise SettingsError(f"{k} examples were asked for, but only {len(pool)} training rows can be used.",
                            "Use fewer examples.")
    keys = [_normalise(t) for t in pool["text"]]
    if spec.selection == "similar":
        return _similar(pool, keys, k, texts)
    rng = np.random.default_rng(spec.seed)
    everyone = np.arange(len(pool))
    base = ([int(i) for i in rng.choice(everyone, size=k, replace=False)] if spec.selection == "random"
            else _balanced(pool, everyone, k, rng, spec.task))
    spare = [int(i) for i in rng.permutation(everyone) if int(i) not in set(base)]
    labels = pool["label"].astype(str).tolist()
    return [_without_own_text(base, spare, keys, labels, _normalise(text)) for text in texts]


def _without_own_text(base: list[int], spare: list[int], keys: list[str], labels: list[str], own: str) -> list[int]:
    """``base`` with each example whose text is the row's own swapped for a spare row (same label first)."""
    if all(keys[i] != own for i in base):
        return base
    taken, chosen = set(base), []
    for i in base:
        if keys[i] != own:
            chosen.append(i)
            continue
        fits = [j for j in spare if j not in taken and keys[j] != own]
        swap = next((j for j in fits if labels[j] == labels[i]), fits[0] if fits else None)
        if swap is not None:
            chosen.append(swap)
            taken.add(swap)
    return chosen


def default_selection(shots: int, n_labels: int) -> tuple[str, str]:
    """The example selection to start from, and why in plain words.

    With fewer examples than labels, a balanced draw cannot show every label anyway and shows labels
    unrelated to the row; the training rows most similar to each row show the labels it is likely to have.
    """
    if shots and n_labels > shots:
        return "similar", (f"There are {n_labels} labels but only {shots} examples, so most labels cannot be "
                           "shown; each row gets the training rows most similar to it, whose labels are the "
                           "likeliest answers.")
    return "balanced", "Examples are spread evenly over the labels."


def _balanced(pool: pd.DataFrame, allowed: np.ndarray, k: int, rng: np.random.Generator, task: str) -> list[int]:
    """k rows spread as evenly as possible over the labels, in a shuffled order."""
    if task != "classification":
        return [int(i) for i in rng.choice(allowed, size=k, replace=False)]
    labels = pool["label"].to_numpy()[allowed]
    by_label = {label: list(rng.permutation(allowed[labels == label])) for label in sorted(set(labels))}
    order = list(rng.permutation(sorted(by_label)))
    chosen: list[int] = []
    while len(chosen) < k:
        progressed = False
        for label in order:
            if by_label[label] and len(chosen) < k:
                chosen.append(int(by_label[label].pop()))
                progressed = True
        if not progressed:
            break
    return [int(i) for i in rng.permutation(chosen)]


def _similar(pool: pd.DataFrame, keys: list[str], k: int, test_texts: list[str]) -> list[list[int]]:
    """The k pool rows most similar to each test row (never one with the row's own text), most similar last.

    TF-IDF over words and word pairs rather than embeddings: it needs no extra model, runs in
    milliseconds on a CPU, is deterministic, and a 135M chat model makes weak sentence embeddings. The
    vocabulary is fitted on the pool alone, so a row's examples do not depend on the other test rows.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    pool_vectors = vectorizer.fit_transform([str(t) for t in pool["text"]])
    similarity = (vectorizer.transform(test_texts) @ pool_vectors.T).toarray()
    chosen = []
    for text, row in zip(test_texts, similarity):
        own = _normalise(text)
        top = [int(i) for i in np.argsort(-row, kind="stable") if keys[int(i)] != own][:k]
        chosen.append(top[::-1])
    return chosen


def examples_for(pool: pd.DataFrame | None, indices: Sequence[int]) -> list[Example]:
    """(text, label) pairs of the given pool rows."""
    if pool is None:
        return []
    return [(str(pool["text"].iloc[i]), str(pool["label"].iloc[i])) for i in indices]


# -- context budget -------------------------------------------------------------------------------------

@dataclass
class PromptBudget:
    """Where the tokens of one query go, and how many examples still fit the model's context."""

    context_length: int
    system: int                      # instruction + context + output format, with the template's markup
    examples: list[int]              # each example's tokens (text, answer and markup)
    row_markup: int                  # the user turn and assistant start around the row's text
    row_mean: float                  # the row's text, mean over the rows given
    row_max: int
    answer: int                      # the longest answer (label tokens + end of turn, or the generation limit)
    example_estimate: float          # tokens of one more example, on average
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def shared(self) -> int:
        """Tokens computed once and reused for every row (system + examples)."""
        return self.system + sum(self.examples)

    @property
    def per_query(self) -> float:
        """Prompt tokens paid per query on average (an API bills all of them every time)."""
        return self.shared + self.row_markup + self.row_mean

    @property
    def worst_case(self) -> int:
        return self.shared + self.row_markup + self.row_max + self.answer

    @property
    def fits(self) -> bool:
        return self.worst_case <= self.context_length

    @property
    def examples_that_fit(self) -> int:
        """How many examples in total fit next to the longest row and answer."""
        room = self.context_length - self.system - self.row_markup - self.row_max - self.answer
        return max(0, int(room // max(self.example_estimate, 1.0)))

    def to_dict(self) -> dict:
        return {"context_length": self.context_length, "system": self.system, "examples": self.examples,
                "row_markup": self.row_markup, "row_mean": round(self.row_mean, 1), "row_max": self.row_max,
                "answer": self.answer, "shared": self.shared, "per_query": round(self.per_query, 1),
                "worst_case": self.worst_case, "fits": self.fits, "examples_that_fit": self.examples_that_fit,
                "example_estimate": round(self.example_estimate, 1)}


def prompt_budget(spec: PromptSpec, tokenizer: Any, context_length: int, *, examples: Sequence[Example] = (),
                  row_texts: Sequence[str] = (), pool: pd.DataFrame | None = None) -> PromptBudget:
    """Token count per part of the prompt and the context arithmetic.

    ``examples`` is one example set (for 'similar', the first row's); ``pool`` (a sample of training rows)
    estimates what one more example costs when none is shown yet.
    """
    renderer = Renderer(spec, tokenizer)
    cumulative = [len(renderer.prompt_ids("", examples[:i])) for i in range(len(examples) + 1)]
    system = len(renderer.encode(renderer._template([{"role": "system", "content": spec.system_message()}],
                                                    False)))
    row_lengths = [len(renderer.encode(t)) for t in row_texts] or [0]
    if spec.task == "classification":
        answer = max((len(renderer.answer_ids(label)) for label in spec.labels), default=1)
    else:
        answer = spec.max_answer_tokens
    example_costs = [b - a for a, b in zip(cumulative, cumulative[1:])]
    return PromptBudget(context_length=context_length, system=system, examples=example_costs,
                        row_markup=cumulative[0] - system, row_mean=float(np.mean(row_lengths)),
                        row_max=int(max(row_lengths)), answer=answer,
                        example_estimate=_example_estimate(renderer, example_costs, pool))


def _example_estimate(renderer: Renderer, costs: list[int], pool: pd.DataFrame | None) -> float:
    if costs:
        return float(np.mean(costs))
    if pool is None or len(pool) == 0:
        return 1.0
    sample = pool.sample(n=min(len(pool), 20), random_state=0)
    pairs = examples_for(sample, range(len(sample)))
    markup = len(renderer.prompt_ids("", [("", "")])) - len(renderer.prompt_ids("", []))
    texts = np.mean([len(renderer.encode(t)) + len(renderer.encode(renderer.spec.word(label)))
                     for t, label in pairs])
    return float(markup + texts)


# -- linter ---------------------------------------------------------------------------------------------

@dataclass
class LintTip:
    """One finding about a prompt: what is wrong, why it matters, what to do."""

    code: str
    message: str
    why: str
    level: str = "warning"  # info | warning | error
    numbers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MIN_INSTRUCTION_WORDS = 6
VAGUE_WORDS = ("something", "stuff", "things", "etc", "whatever", "do it", "this text")
FORMAT_HINTS = ("answer", "reply", "respond", "output", "return", "write", "one word", "only")


def lint(spec: PromptSpec, *, examples: Sequence[Example] = (), test_texts: Sequence[str] = (),
         budget: PromptBudget | None = None) -> list[LintTip]:
    """Plain-language tips about a prompt, worst first."""
    tips: list[LintTip] = []
    for rule in (_lint_format, _lint_labels_named, _lint_instruction):
        tips += rule(spec)
    if spec.task == "classification" and examples:
        tips += _lint_contradictions(spec, examples) + _lint_balance(spec, examples)
    if examples and test_texts:
        tips += _lint_leaks(examples, test_texts)
    if budget is not None:
        tips += _lint_budget(budget)
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(tips, key=lambda t: order[t.level])


def _lint_format(spec: PromptSpec) -> list[LintTip]:
    if spec.resolved_output_format():
        return []
    instruction = spec.resolved_instruction().lower()
    if any(hint in instruction for hint in FORMAT_HINTS):
        return []
    return [LintTip("no_output_format", "The prompt does not say how the answer should look.",
                    "Without it the model may answer with a sentence or an explanation instead of the answer "
                    "itself, which costs tokens and, when answers are generated, makes them hard to read back.")]


def _lint_labels_named(spec: PromptSpec) -> list[LintTip]:
    if spec.task != "classification" or not spec.labels:
        return []
    if spec.output_format is None and not spec.lists_labels():
        return [LintTip("labels_not_listed", f"The prompt does not list the {len(spec.labels)} labels: it lists "
                        f"at most {LABEL_LIST_MAX_LABELS} (and at most {LABEL_LIST_MAX_CHARS:,} characters).",
                        "A long list crowds the model's context and slows every row down, and a small model "
                        "answered 150 intents better without it (0.95 against 0.65 accuracy, zero-shot). The "
                        "model picks among the labels by how likely each label's words are as the answer, so "
                        "clear label words matter more than usual. To list them anyway, write your own output "
                        "format.", "info", {"labels": len(spec.labels), "max_labels": LABEL_LIST_MAX_LABELS,
                                            "max_chars": LABEL_LIST_MAX_CHARS})]
    said = spec.system_message().lower()
    missing = [spec.word(label) for label in spec.labels if spec.word(label).lower() not in said]
    if not missing:
        return []
    named = ", ".join(missing[:8]) + (f", … ({len(missing)} in all)" if len(missing) > 8 else "")
    return [LintTip("labels_not_named", f"The instruction does not name the label(s) {named}.",
                    "The model only knows which answers are allowed if the prompt lists them; unnamed labels "
                    "are picked far less often.", numbers={"missing": missing})]


def _lint_instruction(spec: PromptSpec) -> list[LintTip]:
    text = spec.instruction.strip()
    if not text:
        return [LintTip("vague_instruction", "There is no instruction; a generic one is used.",
                        "A sentence saying what the texts are and what decides the answer (e.g. 'Decide whether "
                        "the movie review is positive or negative') usually raises the score more than examples.")]
    words = re.findall(r"\w+", text)
    vague = [w for w in VAGUE_WORDS if re.search(rf"\b{re.escape(w)}\b", text.lower())]
    if len(words) < MIN_INSTRUCTION_WORDS or vague:
        short = len(words) < MIN_INSTRUCTION_WORDS
        reason = f"only {len(words)} words" if short else f"vague words ({', '.join(vague)})"
        return [LintTip("vague_instruction", f"The instruction is very short or vague ({reason}).",
                        "Say what the texts are, what the answer means and what to do in unclear cases; a small "
                        "model depends on that more than a large one.", numbers={"words": len(words)})]
    return []


def _lint_contradictions(spec: PromptSpec, examples: Sequence[Example]) -> list[LintTip]:
    answers: dict[str, set[str]] = {}
    for text, label in examples:
        answers.setdefault(_normalise(text), set()).add(label)
    clashes = [t for t, labels in answers.items() if len(labels) > 1]
    if not clashes:
        return []
    return [LintTip("contradictory_examples", f"{len(clashes)} example text(s) appear with different answers.",
                    "The model is shown two answers for the same text and learns nothing from either; keep one.",
                    "error", {"texts": len(clashes)})]


def _lint_balance(spec: PromptSpec, examples: Sequence[Example]) -> list[LintTip]:
    counts = Counter(label for _, label in examples)
    shown = {label: counts.get(label, 0) for label in spec.labels} or dict(counts)
    if len(examples) < 2 or max(shown.values()) - min(shown.values()) <= 1:
        return []
    top = max(shown, key=shown.get)
    return [LintTip("unbalanced_examples", f"The examples are unbalanced: '{top}' is shown {shown[top]} times out "
                    f"of {len(examples)}" + (f", and {sum(v == 0 for v in shown.values())} label(s) never."
                                             if 0 in shown.values() else "."),
                    "Small models copy the answer they saw most often in the examples; use balanced selection"
                    + (" or calibration." if spec.calibration == "none" else
                       " (calibration, already on, only partly corrects it)."), numbers={"counts": shown})]


def _lint_leaks(examples: Sequence[Example], test_texts: Sequence[str]) -> list[LintTip]:
    tests = {_normalise(t) for t in test_texts}
    leaked = sum(_normalise(text) in tests for text, _ in examples)
    if not leaked:
        return []
    return [LintTip("examples_leak_test_rows", f"{leaked} example(s) are also test rows.",
                    "The model is shown the answer to a row it is then tested on, so the score is too high; "
                    "pick other examples.", "error", {"examples": leaked})]


def _lint_budget(budget: PromptBudget) -> list[LintTip]:
    if not budget.fits:
        return [LintTip("over_context_budget", f"The longest prompt needs {budget.worst_case} tokens but the model "
                        f"reads at most {budget.context_length}.",
                        f"Long rows will be cut. At most {budget.examples_that_fit} examples fit next to the "
                        "longest row; use fewer or shorter examples.", "error", budget.to_dict())]
    if budget.worst_case > 0.8 * budget.context_length:
        return [LintTip("near_context_budget", f"The longest prompt uses {budget.worst_case} of "
                        f"{budget.context_length} tokens.",
                        "There is little room left for more examples or longer rows.", "info", budget.to_dict())]
    return []


# -- comparing versions ---------------------------------------------------------------------------------

def diff_specs(a: PromptSpec | dict, b: PromptSpec | dict) -> list[str]:
    """What changed from ``a`` to ``b``, one plain sentence per changed setting."""
    old = a.to_dict() if isinstance(a, PromptSpec) else dict(a)
    new = b.to_dict() if isinstance(b, PromptSpec) else dict(b)
    changes = []
    for f in dataclasses.fields(PromptSpec):
        before, after = old.get(f.name), new.get(f.name)
        if before != after:
            changes.append(f"{field_label(f)}: {_show(before)} → {_show(after)}")
    return changes


def _show(value: Any) -> str:
    if value is None or value == "":
        return "(automatic)" if value is None else "(empty)"
    text = str(value)
    return f"'{text[:57]}...'" if len(text) > 60 else (f"'{text}'" if isinstance(value, str) else text)


def spec_fields_help() -> dict[str, str]:
    """Field name → help text (for tooltips and --help)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(PromptSpec)}


# -- checking a draft (a prompt editor's live view, tokenizer only) -------------------------------------

@dataclass
class PromptCheck:
    """What an editor shows beside a draft prompt: its examples, its context budget and the linter's tips."""

    example_ids: list[list[int]]  # the training rows shown as examples, per test row (one shared set unless 'similar')
    budget: PromptBudget
    tips: list[LintTip]


def check_prompt(spec: PromptSpec, tokenizer: Any, context_length: int, *, train: pd.DataFrame | None = None,
                 test_texts: Sequence[str] = ()) -> PromptCheck:
    """Examples, budget and tips of a spec, as ``evaluate`` would see them, without running the model."""
    texts = [str(t) for t in test_texts]
    example_ids = select_examples(spec, train, texts or [""])
    first = examples_for(train, example_ids[0])
    budget = prompt_budget(spec, tokenizer, context_length, examples=first, row_texts=texts, pool=train)
    return PromptCheck(example_ids=example_ids, budget=budget,
                       tips=lint(spec, examples=first, test_texts=texts, budget=budget))
