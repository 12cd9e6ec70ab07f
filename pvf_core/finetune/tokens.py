"""Rows as the exact token ids the harness scores: a shared prefix, each row's prompt tail and answer;
length-grouped batches; a hash of the rows learned from."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

from ..data import Splits
from ..errors import SettingsError
from ..prompting import LABEL_LIST_MAX_LABELS


@dataclass
class Encoded:
    """Rows as token ids: a prefix every row shares, then each row's own prompt tokens and answer tokens."""

    prefix: list[int]
    suffixes: list[list[int]]
    answers: list[list[int]]

    def __len__(self) -> int:
        return len(self.suffixes)

    def lengths(self) -> list[int]:
        """Tokens of each whole example (prefix + prompt + answer)."""
        return [len(self.prefix) + len(s) + len(a) for s, a in zip(self.suffixes, self.answers)]


TRAINING_LISTED_LABELS = LABEL_LIST_MAX_LABELS  # more labels than this are not listed in the fine-tuned arm's prompt


def default_prompt(splits: Splits, instruction: str = "") -> Any:
    """The zero-shot prompt a fine-tuned arm is trained and scored with.

    With many labels the prompt does not list them: the adapter learns them from the answers, and a list of
    50 labels (~270 tokens) would already overflow the default max length; per row, training then costs
    the same whatever the number of labels.
    """
    from ..prompting import PromptSpec

    spec = PromptSpec(task=splits.task, instruction=instruction, labels=list(splits.labels))
    if len(spec.labels) > TRAINING_LISTED_LABELS:
        spec = spec.with_(output_format="Answer with exactly one label, nothing else.")
    return spec


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving at least one token of each prompt to run per row."""
    if not prompts:
        return 0
    limit = max(min(len(p) for p in prompts) - 1, 0)
    first = prompts[0]
    for prompt in prompts[1:]:
        n = 0
        while n < limit and prompt[n] == first[n]:
            n += 1
        limit = n
    return limit


def encode(frame: pd.DataFrame, spec: Any, tokenizer: Any, max_length: int) -> tuple[Encoded, list[int]]:
    """Token ids of each row exactly as the harness renders it; also each row's uncut length.

    The row's text is cut so prompt + answer fit ``max_length``; an answer longer than half of it is cut too.
    """
    from ..prompting import Renderer

    renderer = Renderer(spec.with_(shots=0, example_ids=[]), tokenizer)
    frame_tokens = len(renderer.prompt_ids(""))
    prompts, answers, full = [], [], []
    for text, label in zip(frame["text"].astype(str), frame["label"].astype(str)):
        answer = renderer.answer_ids(label)[:max_length // 2]
        if frame_tokens + len(answer) >= max_length:
            raise SettingsError(f"Max length {max_length} is too small: the prompt around each text and the "
                                f"answer alone take {frame_tokens + len(answer)} tokens.",
                                f"Use a max length of at least {frame_tokens + len(answer) + 32}.")
        prompt = renderer.prompt_ids(text)
        full.append(len(prompt) + len(answer))
        prompts.append(renderer.prompt_ids(text, max_tokens=max_length - len(answer)))
        answers.append(answer)
    shared = common_prefix_length(prompts)
    prefix = prompts[0][:shared] if prompts else []
    return Encoded(prefix=prefix, suffixes=[p[shared:] for p in prompts], answers=answers), full


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffle, sort by length within chunks of 50 batches, cut into batches, shuffle the batches.

    Rows in a batch have similar lengths, so little padding is computed, yet every epoch sees a new order.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def frame_hash(*frames: pd.DataFrame) -> str:
    """A short content hash of the rows (text, label) the adapter learned from."""
    digest = hashlib.sha256()
    for frame in frames:
        for text, label in zip(frame["text"].astype(str), frame["label"].astype(str)):
            digest.update(f"{text}\t{label}\n".encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]

