"""The scoring engine: label log-likelihoods and greedy answers after a shared prompt prefix, batched.

    score_labels(loaded, prompts, answers)     -> [rows, answers] log-likelihood of each answer after each prompt
    generate_answers(loaded, prompts, ...)     -> greedy answers with a stop rule

Speed: the prompts of all rows usually start with the same tokens (system message + examples). That
shared prefix runs once; its key/value cache is expanded over each batch of rows, whose own tokens are
packed into lanes, with positions continuing after the prefix. Every answer is scored in that same pass:
the row's last prompt token predicts each answer's first token, and the answers' remaining tokens are fed
after the row as a **trie** (a tree of continuations): answers that start with the same tokens share
those tokens' positions, so ``card_arrival`` and ``card_linking`` feed ``card`` once. Each fed token
attends to the prefix, the row and its own ancestors in the trie only (a tree-shaped attention mask), so
its log-probabilities are exactly those of the answer run alone after the row. Logits are computed only
at the fed positions. With 150 intent-like labels the trie feeds roughly half the tokens that feeding each
label in full would (``bench/bench_labels.py``), and every label gets its exact score.

Optionally (``prune_bias``, e.g. a fitted calibration's log-bias) only the labels that can still win after
the bias are scored in full; the others get ``-inf``. The argmax is that of full scoring (``_score_pruned``
says why); probabilities computed from such scores give skipped labels 0. The harness prunes with many
labels (``evaluate.PRUNE_FROM_LABELS``), with the arm's calibration and zeros as biases, so both the
calibrated and the raw prediction are exact.

Text-to-text rows reuse the same prefix cache and are then decoded greedily, batched.

Every tensor the engine makes lives on the model's device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import PvfError, SettingsError
from .models import attention_mask_for

__all__ = ["Stopped", "score_labels", "generate_answers", "AnswerTrie", "answer_trie"]

BATCH_TOKENS = 2048      # tokens per forward pass; larger passes gained nothing on 2 cores
LANE_TOKENS = 256        # rows are packed one after another into lanes of this many tokens
MAX_BATCH_ROWS = 64
KV_BUDGET_TOKENS = 32768  # rows × (shared prefix + row) tokens held in the key/value cache at once
GENERATION_BATCH_ROWS = 32


class Stopped(PvfError):
    """The caller asked the evaluation to stop (``should_stop`` returned true)."""


def _torch():
    import torch

    return torch


def _common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving at least one token of each prompt to run per row."""
    limit = max(min(len(p) for p in prompts) - 1, 0)
    first = np.asarray(prompts[0][:limit])
    for prompt in prompts[1:]:
        if limit <= 0:
            break
        same = np.asarray(prompt[:limit]) == first[:limit]
        limit = int(np.argmin(same)) if not same.all() else limit
    return max(limit, 0)


def _batches(lengths: Sequence[int], batch_tokens: int, max_rows: int, prefix: int = 0) -> list[list[int]]:
    """Row indices grouped longest first, so each batch pads little and stays under the token budgets.

    Each row also holds its own copy of the shared prefix's keys and values during the pass, so rows ×
    (prefix + width) stays under ``KV_BUDGET_TOKENS`` too (≈0.75 GB of cache for SmolLM2-135M in bf16).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        rows = len(current) + 1
        if current and (rows * width > batch_tokens or rows * (prefix + width) > KV_BUDGET_TOKENS
                        or rows > max_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class _Runner:
    """Runs row suffixes after a shared prefix whose key/value cache is computed once."""

    def __init__(self, loaded: Any, prompts: Sequence[Sequence[int]], use_prefix_cache: bool = True) -> None:
        torch = _torch()
        self.model = loaded.model
        self.device = self.model.device
        self.pad_id = int(loaded.tokenizer.pad_token_id or 0)
        self.prefix_length = _common_prefix_length(prompts) if use_prefix_cache else 0
        self.suffixes = [list(p[self.prefix_length:]) for p in prompts]
        self.prefix_kv: list[tuple[Any, Any]] = []
        if self.prefix_length:
            ids = torch.tensor([list(prompts[0][:self.prefix_length])], device=self.device)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self.prefix_kv = [(layer[0], layer[1]) for layer in out.cache]

    def cache(self, rows: int) -> Any:
        """A fresh cache holding the shared prefix once per row (an empty one without a prefix)."""
        from transformers import DynamicCache

        if not self.prefix_kv:
            return DynamicCache(config=self.model.config)
        data = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self.prefix_kv]
        return DynamicCache(ddp_cache_data=data, config=self.model.config)

    def run(self, rows: list[int]) -> tuple[Any, Any, Any, Any]:
        """Forward the suffixes of ``rows`` (right-padded) for generation.

        Returns the log-probs at each row's last token, the cache, the 2-D attention mask and the lengths.
        """
        torch = _torch()
        device = self.device
        lengths = torch.tensor([len(self.suffixes[i]) for i in rows], device=device)
        width, count, start = int(lengths.max()), len(rows), self.prefix_length
        ids = torch.full((count, width), self.pad_id, dtype=torch.long, device=device)
        for b, i in enumerate(rows):
            ids[b, :len(self.suffixes[i])] = torch.tensor(self.suffixes[i], device=device)
        mask = torch.ones((count, start + width), dtype=torch.long, device=device)
        mask[:, start:] = torch.arange(width, device=device)[None, :] < lengths[:, None]
        keep = torch.zeros((count, width), dtype=torch.bool, device=device)
        keep[torch.arange(count, device=device), lengths - 1] = True
        positions = (start + torch.arange(width, device=device))[None, :].expand(count, -1)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=self.cache(count),
                         use_cache=True, logits_to_keep=keep)
        logits = out.logits.reshape(count, -1)
        return torch.log_softmax(logits.float(), dim=-1), out.cache, mask, lengths


# -- the answers as a trie --------------------------------------------------------------------------------

@dataclass
class AnswerTrie:
    """What is fed after each row to score every answer, and which log-probs add up to each score.

    ``tokens[k]`` is fed at depth ``depths[k]`` after the row (0 = right after its last prompt token) and
    sees its ancestors ``ancestors[k]`` (itself included). Slot 0 is the row's last prompt token, slot
    k + 1 is fed token k; ``picks`` are (slot, token, answer): the log-prob of ``token`` at ``slot`` is part
    of ``answer``'s score.
    """

    tokens: list[int]
    depths: list[int]
    ancestors: list[list[int]]
    picks: list[tuple[int, int, int]]

    @property
    def fed(self) -> int:
        return len(self.tokens)


def answer_trie(answers: Sequence[Sequence[int]], share: bool = True) -> AnswerTrie:
    """The answers' continuations to feed: each distinct proper prefix once (``share``), or every answer's
    own chain of tokens (``share=False``: scoring every label in full, the reference the trie must match).

    An answer of n tokens needs its first n - 1 tokens fed after the row; the node of its first t tokens
    predicts token t + 1. Nodes come in depth-first order, so ancestors always precede their children.
    """
    nodes: dict[tuple, int] = {}
    tokens: list[int] = []
    depths: list[int] = []
    ancestors: list[list[int]] = []
    picks = [(0, int(answer[0]), j) for j, answer in enumerate(answers)]
    for j, answer in enumerate(answers):
        parent: list[int] = []
        for t in range(len(answer) - 1):
            key = tuple(answer[:t + 1]) if share else (j, t)
            if key not in nodes:
                nodes[key] = len(tokens)
                tokens.append(int(answer[t]))
                depths.append(t)
                ancestors.append(parent + [len(tokens) - 1])
            node = nodes[key]
            parent = ancestors[node]
            picks.append((node + 1, int(answer[t + 1]), j))
    return AnswerTrie(tokens=tokens, depths=depths, ancestors=ancestors, picks=picks)


def _lanes(widths: Sequence[int], lane_tokens: int) -> list[list[int]]:
    """Rows packed one after another into lanes of about ``lane_tokens`` (first fit, longest first).

    Packing several rows into one lane means the shared prefix is copied once per lane, not once per row,
    and almost no padding is computed; a row longer than a lane gets a lane of its own.
    """
    lanes: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(widths)), key=lambda i: -widths[i]):
        fit = next((j for j, free in enumerate(room) if free >= widths[i]), None)
        if fit is None:
            lanes.append([])
            room.append(max(lane_tokens, widths[i]))
            fit = len(lanes) - 1
        lanes[fit].append(i)
        room[fit] -= widths[i]
    return lanes


def _packed_inputs(runner: _Runner, lanes: list[list[int]], tries: dict[int, AnswerTrie]) -> dict[str, Any]:
    """Inputs for one forward pass that scores the answers of every row in ``lanes``.

    In a lane each row holds its prompt suffix (n tokens), then its trie's fed tokens (``tries[row]``;
    usually the same trie for every row). A row's tokens attend to the shared prefix and to the row's own
    earlier tokens; a trie token to the prefix, the row's suffix and its ancestors in the trie. Positions
    restart after the prefix for every row.
    """
    torch = _torch()
    device = runner.device
    start = runner.prefix_length
    width = max(sum(len(runner.suffixes[i]) + tries[i].fed for i in lane) for lane in lanes)
    count = len(lanes)
    ids, positions, allowed, keep = _blank_inputs(runner, count, width, start)
    longest = max(len(runner.suffixes[i]) for lane in lanes for i in lane)
    causal = torch.ones((longest, longest), dtype=torch.bool, device=device).tril()
    made: dict[int, tuple[Any, Any, Any]] = {}  # one set of tensors per distinct trie
    for b, lane in enumerate(lanes):
        offset = 0
        for i in lane:
            n, trie = len(runner.suffixes[i]), tries[i]
            ids[b, offset:offset + n] = torch.tensor(runner.suffixes[i], device=device)
            positions[b, offset:offset + n] = start + torch.arange(n, device=device)
            allowed[b, offset:offset + n, start + offset:start + offset + n] = causal[:n, :n]
            keep[b, offset + n - 1] = True
            tail, extra = offset + n, trie.fed
            if extra:
                tokens, depths, tree = _trie_tensors(trie, device, made)
                span = slice(tail, tail + extra)
                ids[b, span] = tokens
                positions[b, span] = start + n + depths
                allowed[b, span, start + offset:start + offset + n] = True
                allowed[b, span, start + tail:start + tail + extra] = tree
                keep[b, span] = True
            offset = tail + extra
    return {"input_ids": ids, "position_ids": positions,
            "attention_mask": attention_mask_for(runner.model, allowed[:, None]), "logits_to_keep": keep}


def _score_rows(runner: _Runner, rows: Sequence[int], tries: dict[int, AnswerTrie], n_answers: int, *,
                batch_tokens: int, lane_tokens: int, max_lanes: int,
                on_batch: Callable[[list[int], float], None] | None,
                should_stop: Callable[[], bool] | None,
                tally: dict[int, int] | None = None) -> dict[int, np.ndarray]:
    """Sum of the picked log-probs per answer for each row, each row with its own trie: {row: [answers]}.

    An answer a row's trie does not pick gets 0 (callers only read the answers they asked for). ``tally``
    (row → tokens) adds the tokens each row ran in this call (its own and its trie's)."""
    torch = _torch()
    device = runner.device
    picks: dict[int, tuple[Any, Any, Any]] = {}
    for trie in {id(t): t for t in tries.values()}.values():
        picks[id(trie)] = tuple(torch.tensor([p[k] for p in trie.picks], dtype=torch.long, device=device)
                                for k in range(3))
    rows = list(rows)
    widths = [len(runner.suffixes[i]) + tries[i].fed for i in rows]
    if tally is not None:
        for i, width in zip(rows, widths):
            tally[i] = tally.get(i, 0) + width
    lanes = [[rows[k] for k in lane] for lane in _lanes(widths, lane_tokens)]
    lane_widths = [sum(len(runner.suffixes[i]) + tries[i].fed for i in lane) for lane in lanes]
    found: dict[int, np.ndarray] = {}
    for group in _batches(lane_widths, batch_tokens, max_lanes, runner.prefix_length):
        if should_stop and should_stop():
            raise Stopped("The evaluation was stopped.")
        started = time.perf_counter()
        chosen = [lanes[g] for g in group]
        order = [i for lane in chosen for i in lane]  # the order the kept logits come out in
        out = runner.model(**_packed_inputs(runner, chosen, tries), cache=runner.cache(len(chosen)),
                           use_cache=True)
        logits = out.logits.float().reshape(-1, out.logits.shape[-1])  # [kept positions, vocabulary]
        norm = torch.logsumexp(logits, dim=-1)  # log-softmax without its full copy
        at = 0
        for i in order:
            slots, tokens, owners = picks[id(tries[i])]
            picked = (logits[at + slots, tokens] - norm[at + slots]).double()
            total = torch.zeros(n_answers, dtype=torch.float64, device=device).index_add_(0, owners, picked)
            found[i] = total.cpu().numpy()
            at += 1 + tries[i].fed
        if on_batch:
            on_batch(order, time.perf_counter() - started)
    return found


def score_labels(loaded: Any, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], *,
                 normalise: bool = True, use_prefix_cache: bool = True, share_prefixes: bool = True,
                 prune_bias: Sequence[float] | None = None, batch_tokens: int = BATCH_TOKENS,
                 lane_tokens: int = LANE_TOKENS, max_lanes: int = MAX_BATCH_ROWS,
                 on_batch: Callable[[list[int], float], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, stats: dict | None = None) -> np.ndarray:
    """Log-likelihood of each answer after each prompt, as an array [prompts, answers].

    ``normalise`` divides by the answer's token count (mean log-prob per token). ``share_prefixes`` feeds
    the answers as a trie (the default); off, every answer's tokens are fed on their own (the same scores,
    more work: the reference for tests and the benchmark). Rows are packed into lanes of ``lane_tokens``
    and lanes into passes of ``batch_tokens``. ``on_batch(rows, seconds)`` is called after each pass.

    ``prune_bias`` (one number per answer, e.g. a calibration's ``log_bias``; zeros for the raw scores)
    scores only what can still win ``argmax(score - prune_bias)``: see ``_score_pruned``. Answers that
    cannot win get ``-inf``; the winner and every answer that was scored are exact. Several biases stacked
    ([biases, answers]) keep the argmax under each of them exact.

    ``stats`` (a dict) receives ``answer_tokens_per_row`` (tokens run per row beyond its own, all passes
    together) and ``labels_scored`` (the share of scores computed).
    """
    torch = _torch()
    answers = [list(a) for a in answers]
    if any(not a for a in answers):
        raise SettingsError("A label has no tokens to score; give every label a word.")
    scores = np.zeros((len(prompts), len(answers)), dtype=np.float64)
    if not prompts:
        return scores
    lengths = np.array([len(a) for a in answers], dtype=np.float64)
    divisor = lengths if normalise else np.ones_like(lengths)
    tally: dict[int, int] = {}
    budgets = {"batch_tokens": batch_tokens, "lane_tokens": lane_tokens, "max_lanes": max_lanes,
               "on_batch": on_batch, "should_stop": should_stop, "tally": tally}
    with torch.inference_mode():
        runner = _Runner(loaded, prompts, use_prefix_cache)
        if prune_bias is not None:
            scores = _score_pruned(runner, answers, divisor, np.asarray(prune_bias, dtype=np.float64),
                                   share_prefixes, budgets)
        else:
            trie = answer_trie(answers, share=share_prefixes)
            rows = range(len(prompts))
            found = _score_rows(runner, rows, {i: trie for i in rows}, len(answers), **budgets)
            for i, total in found.items():
                scores[i] = total / divisor
    if stats is not None:
        stats["answer_tokens_per_row"] = float(np.mean([tally[i] - len(runner.suffixes[i]) for i in tally]))
        stats["labels_scored"] = float(np.isfinite(scores).mean())
    return scores


_BUDGETS = {"batch_tokens": BATCH_TOKENS, "lane_tokens": LANE_TOKENS, "max_lanes": MAX_BATCH_ROWS,
            "on_batch": None, "should_stop": None}
PRUNE_FIRST_CANDIDATES = 4  # answers scored in full first, by their bound; their best is what others must beat
# A bound and a full score come from different passes, whose bf16 rounding differs by up to a few hundredths
# of a log-prob: an answer is skipped only when its bound is below the best full score by more than this.
PRUNE_MARGIN = 0.1
# A row with more than this share of all answers still to score gets the whole trie instead (one trie shared
# by such rows is built once; a sub-trie per row costs its own mask): its every answer is then scored exactly.
PRUNE_FULL_SHARE = 0.5


def _score_pruned(runner: _Runner, answers: list[list[int]], divisor: np.ndarray, bias: np.ndarray,
                  share: bool, budgets: dict, rows: Sequence[int] | None = None) -> np.ndarray:
    """Scores of the answers that can still win ``argmax(score - bias)``, ``-inf`` for the others.

    ``bias`` is one vector per answer, or several stacked ([biases, answers]): then whatever can win under
    any of them is scored (e.g. a calibration's log-bias and zeros, so the calibrated and the raw argmax are
    both exact). ``rows`` limits the work to some rows (the others stay ``-inf``).

    A score only falls as an answer's tokens are added (each adds a log-prob ≤ 0), so once an answer's
    first token is scored, ``first / divisor - bias`` bounds its final, biased score from above. Each group
    of rows runs once on its own (``_KeptRows``: every answer's first token comes from the row's last
    position) and keeps its key/value cache. Then, per row, the answers with the highest bounds are scored
    in full on top of that cache (only their trie's tokens run, never the row again); any answer whose bound
    is still at or above the best full biased score is scored next, until none is left. The argmax is
    therefore that of scoring everything; answers skipped were below the winner by their bound. A row with
    more than ``PRUNE_FULL_SHARE`` of the answers still to score gets every answer scored, as the whole trie.
    """
    n_rows = len(runner.suffixes)
    rows = list(range(n_rows)) if rows is None else list(rows)
    scores = np.full((n_rows, len(answers)), -np.inf)
    prune = _Pruning(answers, divisor, np.atleast_2d(np.asarray(bias, dtype=np.float64)), share)
    lanes = [[rows[k] for k in lane]
             for lane in _lanes([len(runner.suffixes[i]) for i in rows], budgets["lane_tokens"])]
    lane_widths = [sum(len(runner.suffixes[i]) for i in lane) for lane in lanes]
    tally = budgets.get("tally")
    for group in _batches(lane_widths, budgets["batch_tokens"], budgets["max_lanes"], runner.prefix_length):
        if budgets["should_stop"] and budgets["should_stop"]():
            raise Stopped("The evaluation was stopped.")
        started = time.perf_counter()
        kept = _KeptRows(runner, [lanes[g] for g in group])
        firsts = {i: kept.first_tokens(i, prune.first_ids) for i in kept.order}
        wanted = {i: prune.start(i, scores[i], firsts[i]) for i in kept.order}
        while True:
            tries = {i: prune.trie_for(scores[i], wanted[i]) for i in kept.order}
            tries = {i: trie for i, trie in tries.items() if trie is not None}
            if not tries:
                break
            found = kept.score(tries, len(answers), budgets["batch_tokens"])
            for i, trie in tries.items():
                wanted[i] = prune.finish(i, scores[i], found[i], trie)
                if tally is not None:
                    tally[i] = tally.get(i, 0) + trie.fed
        if tally is not None:
            for i in kept.order:
                tally[i] = tally.get(i, 0) + len(runner.suffixes[i])
        if budgets["on_batch"]:
            budgets["on_batch"](kept.order, time.perf_counter() - started)
    return scores


class _Pruning:
    """Which answers a row must still score, from their first-token bounds and the best full score so far."""

    def __init__(self, answers: list[list[int]], divisor: np.ndarray, biases: np.ndarray, share: bool) -> None:
        self.answers, self.divisor, self.biases, self.share = answers, divisor, biases, share
        self.first_ids = np.array([a[0] for a in answers])
        self.single = np.array([len(a) == 1 for a in answers])
        self.whole = answer_trie(answers, share=share)
        self.sub_tries: dict[tuple, AnswerTrie] = {}
        self.bounds: dict[int, np.ndarray] = {}  # row -> [biases, answers]

    def start(self, row: int, scores: np.ndarray, first: np.ndarray) -> set[int]:
        """Fill in the row's one-token answers (complete already) in ``scores`` (that row's); the answers to
        score first: the best by each bias."""
        bounds = first / self.divisor - self.biases
        self.bounds[row] = bounds
        scores[self.single] = first[self.single] / self.divisor[self.single]
        return {int(j) for b in bounds for j in np.argsort(-b, kind="stable")[:PRUNE_FIRST_CANDIDATES]}

    def trie_for(self, scores: np.ndarray, wanted: set[int]) -> AnswerTrie | None:
        """The trie of the wanted answers not yet scored (the whole trie past ``PRUNE_FULL_SHARE``), or None."""
        todo = sorted(j for j in wanted if not np.isfinite(scores[j]))
        if not todo:
            return None
        if len(todo) > PRUNE_FULL_SHARE * len(self.answers):
            return self.whole
        key = tuple(todo)
        if key not in self.sub_tries:
            sub = answer_trie([self.answers[j] for j in todo], share=self.share)
            sub.picks = [(slot, token, todo[k]) for slot, token, k in sub.picks]  # back to the full list's numbers
            self.sub_tries[key] = sub
        return self.sub_tries[key]

    def finish(self, row: int, scores: np.ndarray, found: np.ndarray, trie: AnswerTrie) -> set[int]:
        """Record a trie's full scores in ``scores`` (the row's); the answers whose bound still reaches the
        best biased score."""
        done = sorted({answer for _, _, answer in trie.picks})
        scores[done] = found[done] / self.divisor[done]
        bounds = self.bounds[row]
        exact = np.isfinite(scores)
        best = np.max(np.where(exact, scores - self.biases, -np.inf), axis=1, keepdims=True)
        return set(np.nonzero(~exact & (bounds >= best - PRUNE_MARGIN).any(axis=0))[0].tolist())


class _KeptRows:
    """Rows run once, packed into lanes as for scoring, with their key/value cache kept: answers are then
    scored on top of it (``score``) without running the rows again."""

    def __init__(self, runner: _Runner, lanes: list[list[int]]) -> None:
        torch = _torch()
        self.runner, self.lanes = runner, lanes
        self.order = [i for lane in lanes for i in lane]
        nothing = AnswerTrie(tokens=[], depths=[], ancestors=[], picks=[])
        out = runner.model(**_packed_inputs(runner, lanes, {i: nothing for i in self.order}),
                           cache=runner.cache(len(lanes)), use_cache=True)
        logits = out.logits.float().reshape(-1, out.logits.shape[-1])  # one kept position per row, lane order
        self.last = dict(zip(self.order, torch.log_softmax(logits, dim=-1)))  # each row's next-token log-probs
        self.layers = [(layer[0], layer[1]) for layer in out.cache]
        self.length = self.layers[0][0].shape[-2]  # prefix + the widest lane
        self.place: dict[int, tuple[int, int]] = {}  # row -> (lane, offset of its first token in the lane)
        for b, lane in enumerate(lanes):
            offset = 0
            for i in lane:
                self.place[i] = (b, offset)
                offset += len(runner.suffixes[i])

    def first_tokens(self, row: int, first_ids: np.ndarray) -> np.ndarray:
        """Each answer's first-token log-prob after ``row``."""
        return self.last[row][first_ids].double().cpu().numpy()

    def score(self, tries: dict[int, AnswerTrie], n_answers: int, batch_tokens: int) -> dict[int, np.ndarray]:
        """Each row's answers summed over its trie's picks ({row: [answers]}, 0 where not picked): the trie's
        tokens run after the kept cache, each seeing the prefix, its own row and its ancestors in the trie.

        Each row's trie gets a lane of its own (over a copy of its row's lane in the cache): packing several
        rows' tries into one lane would make each of their tokens attend across all of them."""
        rows = [i for i in self.order if i in tries]
        found: dict[int, np.ndarray] = {}
        for chunk in _batches([tries[i].fed for i in rows], batch_tokens, len(rows), self.length):
            found.update(self._score_tries([rows[k] for k in chunk], tries, n_answers))
        return found

    def _score_tries(self, rows: list[int], tries: dict[int, AnswerTrie], n_answers: int) -> dict[int, np.ndarray]:
        from transformers import DynamicCache

        torch = _torch()
        runner, device, start, length = self.runner, self.runner.device, self.runner.prefix_length, self.length
        width, count = max(tries[i].fed for i in rows), len(rows)
        ids, positions, allowed, keep = _blank_inputs(runner, count, width, length)
        made: dict[int, tuple[Any, Any, Any]] = {}
        for c, i in enumerate(rows):
            trie, (_, offset), n = tries[i], self.place[i], len(runner.suffixes[i])
            tokens, depths, tree = _trie_tensors(trie, device, made)
            ids[c, :trie.fed] = tokens
            positions[c, :trie.fed] = start + n + depths
            allowed[c, :trie.fed, start + offset:start + offset + n] = True
            allowed[c, :trie.fed, length:length + trie.fed] = tree
            keep[c, :trie.fed] = True
        index = torch.tensor([self.place[i][0] for i in rows], device=device)
        cache = DynamicCache(ddp_cache_data=[(k.index_select(0, index), v.index_select(0, index))
                                             for k, v in self.layers], config=runner.model.config)
        out = runner.model(input_ids=ids, position_ids=positions, cache=cache, use_cache=True,
                           attention_mask=attention_mask_for(runner.model, allowed[:, None]), logits_to_keep=keep)
        logits = out.logits.float().reshape(-1, out.logits.shape[-1])  # [fed tokens, vocabulary], row order
        norm = torch.logsumexp(logits, dim=-1)
        found, at = {}, 0
        for i in rows:
            trie = tries[i]
            slots, tokens, owners = (torch.tensor([p[k] for p in trie.picks], dtype=torch.long, device=device)
                                     for k in range(3))
            after = (logits[at + slots - 1, tokens] - norm[at + slots - 1]).double()  # slot k: fed token k - 1
            picked = torch.where(slots == 0, self.last[i][tokens].double(), after)
            found[i] = torch.zeros(n_answers, dtype=torch.float64, device=device).index_add_(0, owners, picked).cpu().numpy()
            at += trie.fed
        return found


def _blank_inputs(runner: _Runner, count: int, width: int, cached: int) -> tuple[Any, Any, Any, Any]:
    """Inputs of a pass of ``count`` lanes × ``width`` new tokens after ``cached`` tokens in the cache, all
    padding for now: (ids, positions, allowed [lanes, new, cached + new], keep). Every new token may attend
    to the shared prefix and to itself (so a padding token has a row to attend to)."""
    torch = _torch()
    device, start = runner.device, runner.prefix_length
    ids = torch.full((count, width), runner.pad_id, dtype=torch.long, device=device)
    positions = torch.full((count, width), start, dtype=torch.long, device=device)
    allowed = torch.zeros((count, width, cached + width), dtype=torch.bool, device=device)
    allowed[:, :, :start] = True
    span = torch.arange(width, device=device)
    allowed[:, span, cached + span] = True
    keep = torch.zeros((count, width), dtype=torch.bool, device=device)
    return ids, positions, allowed, keep


def _trie_tensors(trie: AnswerTrie, device: Any, made: dict[int, tuple[Any, Any, Any]]) -> tuple[Any, Any, Any]:
    """A trie's tokens, depths and ancestor mask as tensors, made once per trie (``made``: id -> tensors)."""
    torch = _torch()
    if id(trie) not in made:
        tree = torch.zeros((trie.fed, trie.fed), dtype=torch.bool, device=device)
        for k, chain in enumerate(trie.ancestors):
            tree[k, chain] = True
        made[id(trie)] = (torch.tensor(trie.tokens, dtype=torch.long, device=device),
                          torch.tensor(trie.depths, dtype=torch.long, device=device), tree)
    return made[id(trie)]


# -- one query at a time ----------------------------------------------------------------------------------

def one_query_at_a_time(loaded: Any, prompts: Sequence[Sequence[int]], rows: Sequence[int], *,
                        answers: Sequence[Sequence[int]] | None = None, normalise: bool = True,
                        max_new_tokens: Sequence[int] = (), stop_ids: set[int] = frozenset(),
                        stop_at_newline: bool = True, prune_bias: Sequence[float] | None = None,
                        should_stop: Callable[[], bool] | None = None) -> tuple[list[Any], list[float]]:
    """Answer ``rows`` one query at a time, as a deployed arm does, and time each: (answers, milliseconds).

    The prompts' shared prefix is computed once beforehand and not timed (a server keeps its cache); each
    query then runs its own tokens and its answers alone, with no other row to share a batch with. With
    ``answers`` each query's answer is its label scores (as ``score_labels`` gives them); without, the
    greedy text (as ``generate_answers``, with ``max_new_tokens`` per row). ``prune_bias`` prunes each
    query's labels as ``score_labels`` does (the batch was scored so, and a deployed arm would be too).
    """
    torch = _torch()
    found, timings = [], []
    with torch.inference_mode():
        runner = _Runner(loaded, prompts)
        if answers is not None:
            answers = [list(a) for a in answers]
            trie = answer_trie(answers)
            divisor = np.array([len(a) for a in answers], dtype=np.float64) if normalise else 1.0
        for i in rows:
            if should_stop and should_stop():
                raise Stopped("The evaluation was stopped.")
            started = time.perf_counter()
            if answers is not None and prune_bias is not None:
                found.append(_score_pruned(runner, answers, np.broadcast_to(divisor, (len(answers),)),
                                           np.asarray(prune_bias, dtype=np.float64), True, dict(_BUDGETS),
                                           rows=[i])[i])
            elif answers is not None:
                total = _score_rows(runner, [i], {i: trie}, len(answers), batch_tokens=BATCH_TOKENS,
                                    lane_tokens=LANE_TOKENS, max_lanes=MAX_BATCH_ROWS, on_batch=None,
                                    should_stop=None)[i]
                found.append(total / divisor)
            else:
                found.append(_generate_batch(runner, loaded.tokenizer, [i], [max_new_tokens[i]], stop_ids,
                                             stop_at_newline)[0])
            timings.append((time.perf_counter() - started) * 1000)
    return found, timings


# -- generation -------------------------------------------------------------------------------------------

def generate_answers(loaded: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int | Sequence[int],
                     stop_ids: set[int], stop_at_newline: bool = True, use_prefix_cache: bool = True,
                     batch_rows: int = GENERATION_BATCH_ROWS,
                     on_batch: Callable[[list[int], float], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> list[str]:
    """Greedy answers for each prompt, batched, sharing the prompts' common prefix.

    A row stops at a token in ``stop_ids``, at its ``max_new_tokens``, or (``stop_at_newline``) at a
    line break after some text.
    """
    torch = _torch()
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    answers = [""] * len(prompts)
    with torch.inference_mode():
        runner = _Runner(loaded, prompts, use_prefix_cache)
        widest = max(limits, default=0)
        for rows in _batches([len(s) + widest for s in runner.suffixes], 10**9, batch_rows, runner.prefix_length):
            if should_stop and should_stop():
                raise Stopped("The evaluation was stopped.")
            started = time.perf_counter()
            for i, text in zip(rows, _generate_batch(runner, loaded.tokenizer, rows, [limits[i] for i in rows],
                                                     stop_ids, stop_at_newline)):
                answers[i] = text
            if on_batch:
                on_batch(rows, time.perf_counter() - started)
    return answers


def _generate_batch(runner: _Runner, tokenizer: Any, rows: list[int], limits: list[int], stop_ids: set[int],
                    stop_at_newline: bool) -> list[str]:
    torch = _torch()
    device = runner.device
    logprobs, cache, mask, lengths = runner.run(rows)
    count = len(rows)
    done = [False] * count
    generated: list[list[int]] = [[] for _ in range(count)]
    next_tokens = logprobs.argmax(-1)
    positions = runner.prefix_length + lengths
    pad = torch.tensor(runner.pad_id, device=device)
    for step in range(max(limits)):
        chosen = next_tokens.tolist()
        for b in range(count):
            token = int(chosen[b])
            if done[b]:
                continue
            if token in stop_ids or step >= limits[b]:
                done[b] = True
                continue
            generated[b].append(token)
            if stop_at_newline and "\n" in tokenizer.decode(generated[b]).lstrip():
                done[b] = True
        if all(done):
            break
        feed = torch.where(torch.tensor(done, device=device), pad, next_tokens)[:, None]
        mask = torch.cat([mask, torch.ones((count, 1), dtype=mask.dtype, device=device)], dim=1)
        out = runner.model(input_ids=feed, attention_mask=mask, position_ids=(positions + step)[:, None],
                           cache=cache, use_cache=True)
        cache = out.cache
        next_tokens = out.logits[:, -1].argmax(-1)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]
    return [(t.strip().split("\n")[0] if stop_at_newline else t).strip() for t in texts]


def next_token_logprobs(loaded: Any, prompts: Sequence[Sequence[int]], *, batch_rows: int = 32) -> np.ndarray:
    """The model's log-probabilities of every vocabulary token right after each prompt, [prompts, vocab].

    Used to read which words the model itself would answer with (the prompt search's label words).
    """
    torch = _torch()
    out = []
    with torch.inference_mode():
        runner = _Runner(loaded, prompts)
        for start in range(0, len(prompts), batch_rows):
            logprobs, *_ = runner.run(list(range(start, min(len(prompts), start + batch_rows))))
            out.append(logprobs.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))
