"""The scoring engine with many labels: the label trie gives exactly the scores of full scoring."""

from __future__ import annotations

import numpy as np
import pytest

from pvf_core.scoring import answer_trie, generate_answers, one_query_at_a_time, score_labels


def test_the_trie_feeds_shared_first_tokens_once():
    answers = [[5, 6, 7, 1], [5, 6, 8, 1], [5, 9, 1], [4, 1], [3]]
    trie = answer_trie(answers)
    full = answer_trie(answers, share=False)
    # 5 -> 6 -> 7 | 8 and 5 -> 9, 4: distinct proper prefixes (5) (5,6) (5,6,7) (5,6,8) (5,9) (4)
    assert trie.fed == 6 and full.fed == 3 + 3 + 2 + 1
    assert sorted(zip(trie.depths, trie.tokens)) == [(0, 4), (0, 5), (1, 6), (1, 9), (2, 7), (2, 8)]
    for chain in trie.ancestors:  # ancestors precede their node and end with it
        assert chain == sorted(chain) and len(chain) == trie.depths[chain[-1]] + 1
    # every answer's every token is picked once, from the slot that predicts it
    assert sorted(p[2] for p in trie.picks) == sorted(j for j, a in enumerate(answers) for _ in a)


def random_labels(rng: np.random.Generator, n: int, vocab: int) -> list[list[int]]:
    """n distinct answers sharing first tokens: a few stems, then random tails, ending in one end token."""
    stems = [list(rng.integers(3, vocab, size=rng.integers(1, 3))) for _ in range(max(2, n // 4))]
    found: set[tuple] = set()
    while len(found) < n:
        stem = stems[rng.integers(len(stems))]
        tail = list(rng.integers(3, vocab, size=rng.integers(0, 3)))
        found.add(tuple(int(t) for t in stem + tail) + (2,))
    return [list(a) for a in sorted(found)]


@pytest.mark.parametrize("seed, n_labels", [(0, 7), (1, 30), (2, 80)])
def test_trie_scores_equal_full_scores(tiny32, seed, n_labels):
    rng = np.random.default_rng(seed)
    vocab = min(tiny32.model.config.vocab_size, 200)
    answers = random_labels(rng, n_labels, vocab)
    assert answer_trie(answers).fed < answer_trie(answers, share=False).fed  # there is something to share
    head = [int(t) for t in rng.integers(3, vocab, size=12)]
    prompts = [head + [int(t) for t in rng.integers(3, vocab, size=rng.integers(1, 9))] for _ in range(9)]
    trie = score_labels(tiny32, prompts, answers)
    full = score_labels(tiny32, prompts, answers, share_prefixes=False)
    alone = np.stack([score_labels(tiny32, [p], answers, share_prefixes=False, use_prefix_cache=False)[0]
                      for p in prompts])
    np.testing.assert_allclose(trie, full, atol=1e-5)
    np.testing.assert_allclose(trie, alone, atol=1e-5)
    assert (trie.argmax(axis=1) == full.argmax(axis=1)).all()
    small = score_labels(tiny32, prompts, answers, lane_tokens=1, batch_tokens=1)  # one row per pass
    np.testing.assert_allclose(small, full, atol=1e-5)


def test_every_tensor_lives_on_the_model_device(tiny32, monkeypatch):
    """The buffers the engine fills name the model's device (issue 16 runs the whole engine on a GPU)."""
    import torch

    created = []
    real_full = torch.full

    def spy(*args, **kwargs):
        created.append(kwargs.get("device"))
        return real_full(*args, **kwargs)

    monkeypatch.setattr(torch, "full", spy)
    prompts = [[5, 6, 7, 8], [5, 6, 9]]
    score_labels(tiny32, prompts, [[3, 4, 2], [3, 5, 2]])
    assert created and all(d == tiny32.model.device for d in created)


def test_labels_are_listed_only_while_they_fit():
    from pvf_core.finetune.tokens import TRAINING_LISTED_LABELS
    from pvf_core.prompting import LABEL_LIST_MAX_CHARS, LABEL_LIST_MAX_LABELS, PromptSpec, default_selection, lint

    few = PromptSpec(labels=[f"intent_{i}" for i in range(LABEL_LIST_MAX_LABELS)])
    assert few.lists_labels() and f"intent_{LABEL_LIST_MAX_LABELS - 1}" in few.system_message()
    many = PromptSpec(labels=[f"intent_{i}" for i in range(150)])  # a short list, but too many labels
    assert len(", ".join(many.labels)) < LABEL_LIST_MAX_CHARS
    assert not many.lists_labels() and "intent_149" not in many.system_message()
    assert "one label (there are 150)" in many.system_message()
    long = PromptSpec(labels=[f"{'x' * 700} {i}" for i in range(5)])  # few labels, but a list too long
    assert not long.lists_labels()
    tips = {t.code: t for t in lint(many)}
    assert "labels_not_listed" in tips and "labels_not_named" not in tips
    assert TRAINING_LISTED_LABELS == LABEL_LIST_MAX_LABELS  # both arms list the same labels
    selection, why = default_selection(4, 150)
    assert selection == "similar" and "150 labels but only 4 examples" in why
    assert default_selection(4, 2)[0] == "balanced" and default_selection(0, 150)[0] == "balanced"


@pytest.mark.parametrize("seed, n_labels, normalise", [(3, 40, True), (4, 25, False)])
def test_pruned_scoring_keeps_the_argmax_of_full_scoring_after_any_bias(tiny32, seed, n_labels, normalise):
    rng = np.random.default_rng(seed)
    vocab = min(tiny32.model.config.vocab_size, 200)
    answers = random_labels(rng, n_labels, vocab) + [[7]]  # a one-token answer too
    head = [int(t) for t in rng.integers(3, vocab, size=10)]
    prompts = [head + [int(t) for t in rng.integers(3, vocab, size=rng.integers(1, 7))] for _ in range(8)]
    full = score_labels(tiny32, prompts, answers, normalise=normalise, share_prefixes=False)
    leaning = rng.normal(0, 0.5, len(answers))
    leaning[::2] += 30  # a calibration that pushes half the labels far down: they can never win
    for bias in (np.zeros(len(answers)), leaning):  # raw, and a calibration's log-bias
        pruned = score_labels(tiny32, prompts, answers, normalise=normalise, prune_bias=bias)
        assert ((pruned - bias).argmax(axis=1) == (full - bias).argmax(axis=1)).all()
        scored = np.isfinite(pruned)
        np.testing.assert_allclose(pruned[scored], full[scored], atol=1e-5)  # what is scored is exact
        skipped_best = np.where(scored, -np.inf, full - bias).max(axis=1)
        assert (skipped_best <= (pruned - bias).max(axis=1) + 1e-9).all()  # nothing skipped could have won
    assert not np.isfinite(pruned[:, ::2][:, :-1]).all()  # pushed-down labels were skipped (the rest may be flat)


def test_one_query_at_a_time_gives_the_batched_answers_and_a_time_each(tiny32):
    rng = np.random.default_rng(7)
    vocab = min(tiny32.model.config.vocab_size, 200)
    answers = random_labels(rng, 6, vocab)
    head = [int(t) for t in rng.integers(3, vocab, size=10)]
    prompts = [head + [int(t) for t in rng.integers(3, vocab, size=rng.integers(1, 7))] for _ in range(7)]
    scores, timings = one_query_at_a_time(tiny32, prompts, [0, 3, 6], answers=answers)
    np.testing.assert_allclose(np.stack(scores), score_labels(tiny32, prompts, answers)[[0, 3, 6]], atol=1e-5)
    assert len(timings) == 3 and min(timings) > 0
    stop = {int(tiny32.tokenizer.eos_token_id or 0)}
    texts, timings = one_query_at_a_time(tiny32, prompts, [1, 2], max_new_tokens=[4] * 7, stop_ids=stop)
    assert texts == [generate_answers(tiny32, prompts, max_new_tokens=4, stop_ids=stop)[i] for i in (1, 2)]
