"""PromptSpec, rendering through the chat template, context budget, example selection, linter, diffs."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from pvf_core.errors import SettingsError
from pvf_core.prompting import (PromptBudget, PromptSpec, Renderer, build_messages, diff_specs, examples_for,
                                lint, prompt_budget, render_for_training, render_text, select_examples)

LABELS = ["negative", "positive"]
POOL = pd.DataFrame({
    "text": [f"review number {i} was {'great' if i % 3 else 'boring'}" for i in range(30)],
    "label": ["positive" if i % 3 else "negative" for i in range(30)],
})
GOOD_INSTRUCTION = "Decide whether the movie review in the user's message is positive or negative."


def spec(**changes) -> PromptSpec:
    return PromptSpec(**{"labels": LABELS, "instruction": GOOD_INSTRUCTION, **changes})


# -- the spec ---------------------------------------------------------------------------------------------

def test_every_field_has_help():
    for f in dataclasses.fields(PromptSpec):
        assert len(f.metadata.get("help", "")) > 20, f.name


@pytest.mark.parametrize("changes, phrase", [
    ({"shots": -1}, "at least 0"),
    ({"shots": 65}, "at most 64"),
    ({"selection": "nearest"}, "must be one of"),
    ({"calibration": "magic"}, "must be one of"),
    ({"labels": ["a", "a"]}, "distinct"),
    ({"labels": ["a", "b"], "verbalizers": {"a": "yes", "b": "Yes"}}, "same word"),
    ({"selection": "manual", "shots": 2}, "hand-picked"),
])
def test_bad_settings_name_the_problem(changes, phrase):
    with pytest.raises(SettingsError, match=phrase):
        PromptSpec(**{"labels": LABELS, **changes})


def test_round_trip_and_unknown_keys_warn():
    original = spec(shots=4, verbalizers={"negative": "bad"}, seed=3)
    assert PromptSpec.from_dict(original.to_dict()) == original
    with pytest.warns(UserWarning, match="unknown"):
        assert PromptSpec.from_dict({**original.to_dict(), "future_setting": 1}) == original


def test_system_message_holds_instruction_context_and_labels():
    s = spec(context="Reviews come from a film site.", verbalizers={"negative": "bad"})
    message = s.system_message()
    assert GOOD_INSTRUCTION in message and "film site" in message
    assert "Answer with exactly one of: bad, positive." in message
    assert s.label_for_word(" Bad ") == "negative"
    assert PromptSpec(labels=LABELS).resolved_instruction()  # a generic default when empty
    assert "Answer" not in spec(output_format="").system_message()


# -- rendering --------------------------------------------------------------------------------------------

def test_instruction_goes_to_the_system_message_and_examples_to_turns():
    examples = [("fun film", "positive"), ("dull film", "negative")]
    messages = build_messages(spec(shots=2), "the row", examples)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"] == "positive" and messages[-1]["content"] == "the row"
    listed = build_messages(spec(shots=2, example_style="list"), "the row", examples)
    assert [m["role"] for m in listed] == ["system", "user"]
    assert "Text: fun film\nAnswer: positive" in listed[1]["content"] and listed[1]["content"].endswith("the row")


def test_prompt_ids_are_the_chat_template_tokens(tiny_model):
    tokenizer = tiny_model.tokenizer
    examples = [("fun film", "positive"), ("dull film", "negative")]
    renderer = Renderer(spec(shots=2), tokenizer)
    ids = renderer.prompt_ids("This movie was great", examples)
    text = render_text(spec(shots=2), tokenizer, "This movie was great", examples)
    assert tokenizer.decode(ids) == text
    assert text.endswith("<|im_start|>assistant\n")
    # rows with the same examples share everything up to the row's text
    head, _ = renderer.frame(examples)
    assert renderer.prompt_ids("another row", examples)[:len(head)] == ids[:len(head)]


def test_answer_ids_are_the_verbalizer_and_end_of_turn(tiny_model):
    tokenizer = tiny_model.tokenizer
    renderer = Renderer(spec(verbalizers={"negative": "bad"}), tokenizer)
    assert tokenizer.decode(renderer.answer_ids("negative")) == "bad<|im_end|>"
    assert renderer.end_of_turn == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_render_for_training_matches_a_chat_with_the_answer(tiny_model):
    tokenizer = tiny_model.tokenizer
    s = spec(shots=4, selection="random")  # training is always zero-shot
    prompt_ids, answer_ids = render_for_training(s, "I loved it", "positive", tokenizer)
    messages = build_messages(s.with_(shots=0), "I loved it") + [{"role": "assistant", "content": "positive"}]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert full.startswith(tokenizer.decode(prompt_ids + answer_ids))
    assert tokenizer.decode(answer_ids) == "positive<|im_end|>"


def test_long_rows_are_cut_to_fit(tiny_model):
    renderer = Renderer(spec(), tiny_model.tokenizer)
    full = renderer.prompt_ids("word " * 200)
    cut = renderer.prompt_ids("word " * 200, max_tokens=len(full) - 50)
    assert len(cut) == len(full) - 50 and cut[-3:] == full[-3:]  # the end of the turn is kept


# -- budget -----------------------------------------------------------------------------------------------

def test_budget_parts_add_up_to_the_real_prompt(tiny_model):
    tokenizer = tiny_model.tokenizer
    s = spec(shots=3)
    examples = examples_for(POOL, [0, 1, 2])
    rows = ["short row", "a somewhat longer row of text here"]
    budget = prompt_budget(s, tokenizer, 1024, examples=examples, row_texts=rows)
    renderer = Renderer(s, tokenizer)
    for row in rows:
        assert budget.shared + budget.row_markup + len(renderer.encode(row)) == len(renderer.prompt_ids(row, examples))
    assert budget.row_max == len(renderer.encode(rows[1]))
    assert budget.answer == max(len(renderer.answer_ids(label)) for label in LABELS)
    assert budget.per_query == pytest.approx(budget.shared + budget.row_markup + budget.row_mean)
    assert len(budget.examples) == 3 and budget.fits


def test_examples_that_fit_arithmetic():
    budget = PromptBudget(context_length=1000, system=100, examples=[50, 70], row_markup=10, row_mean=20.0,
                          row_max=40, answer=2, example_estimate=60.0)
    assert budget.shared == 220
    assert budget.worst_case == 220 + 10 + 40 + 2
    assert budget.examples_that_fit == (1000 - 100 - 10 - 40 - 2) // 60  # 14 examples in all
    tight = dataclasses.replace(budget, context_length=250)
    assert not tight.fits and tight.examples_that_fit == 1


def test_zero_shot_budget_estimates_an_example_from_the_pool(tiny_model):
    budget = prompt_budget(spec(), tiny_model.tokenizer, 1024, row_texts=["a row"], pool=POOL)
    assert budget.examples == [] and budget.example_estimate > 5 and budget.examples_that_fit > 0


# -- example selection ------------------------------------------------------------------------------------

@pytest.mark.parametrize("selection", ["random", "balanced", "similar"])
def test_selection_returns_the_asked_count(selection):
    chosen = select_examples(spec(shots=4, selection=selection), POOL, ["review number 5 was great", "other"])
    assert len(chosen) == 2
    for ids in chosen:
        assert len(ids) == 4 and len(set(ids)) == 4 and all(0 <= i < len(POOL) for i in ids)


def test_balanced_selection_covers_every_class_evenly():
    for k in (2, 4, 6):
        ids = select_examples(spec(shots=k, selection="balanced"), POOL, ["x"])[0]
        counts = POOL["label"].iloc[ids].value_counts()
        assert set(counts.index) == set(LABELS) and counts.max() - counts.min() <= 1
    one = select_examples(spec(shots=1, selection="balanced"), POOL, ["x"])[0]
    assert len(one) == 1


def test_selection_is_seeded():
    draw = lambda seed: select_examples(spec(shots=4, selection="random", seed=seed), POOL, ["x"])[0]  # noqa: E731
    assert draw(0) == draw(0)
    assert any(draw(0) != draw(s) for s in range(1, 5))


def test_similar_picks_the_nearest_rows_last_and_never_the_rows_own_text():
    pool = pd.DataFrame({"text": ["the cat sat on the mat", "stock markets fell sharply", "a cat on a mat",
                                  "football match tonight", "markets rally on stocks"],
                         "label": ["a", "b", "a", "c", "b"]})
    s = PromptSpec(labels=["a", "b", "c"], shots=2, selection="similar")
    assert select_examples(s, pool, ["stock markets today"])[0][-1] in (1, 4)
    both = select_examples(s, pool, ["the cat sat on the mat", "cat mat"])
    assert 0 not in both[0]  # its own text would give the answer away
    assert 0 in both[1]  # another row may see it: its examples depend on itself alone


def test_manual_selection_uses_the_hand_picked_rows():
    s = spec(shots=2, selection="manual", example_ids=[3, 7])
    assert select_examples(s, POOL, ["a", "b"]) == [[3, 7], [3, 7]]
    with pytest.raises(SettingsError, match="does not exist"):
        select_examples(s.with_(example_ids=[3, 99]), POOL, ["a"])


def test_zero_shot_needs_no_pool_but_examples_do():
    assert select_examples(spec(), None, ["a", "b"]) == [[], []]
    with pytest.raises(SettingsError, match="no training rows"):
        select_examples(spec(shots=2), None, ["a"])
    with pytest.raises(SettingsError, match="only"):
        select_examples(spec(shots=31, selection="random"), POOL, ["a"])


# -- linter -----------------------------------------------------------------------------------------------

def codes(tips) -> set[str]:
    return {t.code for t in tips}


def test_a_good_prompt_has_no_tips():
    examples = [("fun film", "positive"), ("dull film", "negative")]
    assert lint(spec(shots=2), examples=examples, test_texts=["other film"]) == []


def test_each_tip_explains_itself():
    tips = lint(PromptSpec(labels=LABELS, output_format=""))
    assert {"no_output_format", "labels_not_named", "vague_instruction"} <= codes(tips)
    assert all(t.message and len(t.why) > 30 for t in tips)


def test_short_or_vague_instruction():
    assert "vague_instruction" in codes(lint(spec(instruction="Classify it.")))
    assert "vague_instruction" in codes(lint(spec(instruction="Look at this text and do stuff with it please.")))
    assert "vague_instruction" not in codes(lint(spec()))


def test_labels_not_named_in_own_output_format():
    s = spec(instruction="Decide what the movie review in the user's message says.", output_format="One word.")
    tip = next(t for t in lint(s) if t.code == "labels_not_named")
    assert tip.numbers["missing"] == ["negative", "positive"]


def test_contradictory_unbalanced_and_leaking_examples():
    examples = [("Great film!", "positive"), ("great film", "negative"), ("nice", "positive"), ("fine", "positive")]
    tips = lint(spec(shots=4), examples=examples, test_texts=["FINE"])
    assert {"contradictory_examples", "unbalanced_examples", "examples_leak_test_rows"} <= codes(tips)
    assert tips[0].level == "error"  # worst first


def test_over_and_near_the_context_budget():
    budget = PromptBudget(context_length=300, system=100, examples=[100, 100], row_markup=10, row_mean=20.0,
                          row_max=40, answer=2, example_estimate=100.0)
    assert "over_context_budget" in codes(lint(spec(), budget=budget))
    roomy = dataclasses.replace(budget, context_length=400)
    assert "near_context_budget" in codes(lint(spec(), budget=roomy))


# -- versions ---------------------------------------------------------------------------------------------

def test_diff_specs_in_plain_words():
    a, b = spec(), spec(shots=4, instruction="Say if the review is positive or negative.")
    changes = diff_specs(a, b)
    assert len(changes) == 2
    assert any(c.startswith("Examples (shots): 0 → 4") for c in changes)
    assert any(c.startswith("Instruction: ") for c in changes)
    assert diff_specs(a, a.to_dict()) == []
