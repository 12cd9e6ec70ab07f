"""Prompt search (``pvf_core.search``): chosen on rows that are never test rows, halving keeps the best,
budget and cancel are honoured, label words come from training rows only, and the CLI's contract."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import toy_reviews
from pvf_core import search as search_module
from pvf_core.cli import cli
from pvf_core.prompting import PromptSpec
from pvf_core.search import (SearchSettings, SearchStopped, rungs, search_prompt, search_space, selection_rows,
                             spelled_out, word_variants)

LABELS = ["negative", "positive"]


def start_spec(**changes) -> PromptSpec:
    return PromptSpec(task="classification", labels=LABELS, **changes)


def test_rungs_grow_threefold_and_end_at_all_rows():
    assert rungs(16, 150, 1 / 3) == [16, 48, 144, 150]
    assert rungs(16, 10, 1 / 3) == [10]


def test_selection_rows_take_validation_first_and_never_more_than_asked():
    train, validation = toy_reviews(100, seed=1), toy_reviews(30, seed=2)
    rows, counts = selection_rows(train, validation, max_rows=50, seed=0)
    assert counts == {"validation": 30, "train": 20} and len(rows) == 50
    assert set(validation["text"]) <= set(rows["text"])
    again, _ = selection_rows(train, validation, max_rows=50, seed=0)
    assert rows.equals(again)  # one seeded order


def test_space_starts_with_the_users_prompt_then_the_default_four_shot():
    start = start_spec(instruction="Is the review positive or negative?")
    space = search_space(start, pool_rows=100, settings=SearchSettings())
    assert space[0].spec.instruction == start.instruction and space[0].spec.shots == 0
    assert space[1].spec.shots == 4 and space[1].spec.selection == "balanced"
    assert {c.spec.shots for c in space} == {0, 1, 2, 4, 8}
    assert {c.instruction for c in space} >= {"yours", "generic", "choose", "annotator", "question"}
    assert len({(c.spec.instruction, c.spec.shots, c.spec.selection if c.spec.shots else "",
                 c.spec.example_style if c.spec.shots else "", tuple(sorted(c.spec.verbalizers.items())))
                for c in space}) == len(space)  # no candidate twice
    small = search_space(start, pool_rows=3, settings=SearchSettings())
    assert max(c.spec.shots for c in small) == 2  # never more examples than training rows


def test_the_nearest_examples_come_right_after_the_starting_and_default_prompts():
    space = search_space(start_spec(), pool_rows=100, settings=SearchSettings())
    assert [(c.spec.shots, c.spec.selection) for c in space[2:4]] == [(8, "similar"), (4, "similar")]
    assert all(c.instruction == "generic" and c.words == "as given" and c.spec.example_style == "conversation"
               for c in space[2:4])
    assert [c.first for c in space[:5]] == [True, True, True, True, False]
    # six labels: the default 4-shot prompt already takes the nearest rows; the 8-shot one comes next
    six = search_space(PromptSpec(task="classification", labels=list("abcdef")), pool_rows=100,
                       settings=SearchSettings())
    assert (six[1].spec.shots, six[1].spec.selection, six[1].role) == (4, "similar", "default")
    assert (six[2].spec.shots, six[2].spec.selection) == (8, "similar") and six[2].first and not six[3].first
    # the user's own prompt is already the 8-shot 'similar' one: it is not tried twice
    mine = search_space(start_spec(shots=8, selection="similar"), pool_rows=100, settings=SearchSettings())
    assert [(c.spec.shots, c.spec.selection) for c in mine if c.first] == [(8, "similar"), (4, "balanced"),
                                                                           (4, "similar")]


def test_the_nearest_examples_are_planned_however_small_the_budget(monkeypatch):
    # 10 ms a row, and examples priced so dear that the estimate alone plans only the starting and default
    # prompts (measured: 2 candidates without the rule); all four really take about 3 s
    plant(monkeypatch, sleep=0.01)
    monkeypatch.setattr(search_module, "_tokens_per_row", lambda c, *a: 30.0 + 30_000 * c.spec.shots)
    settings = SearchSettings(first_rows=16, max_rows=64, budget_seconds=60)
    result = search_prompt(_Loaded(), start_spec(), train=toy_reviews(300, seed=1), settings=settings)
    assert result.candidates == 4 and result.evaluated == 4
    tried = {row["candidate"] for row in result.leaderboard}
    assert {"instruction: generic; answers: as given; 8 examples, similar, conversation",
            "instruction: generic; answers: as given; 4 examples, similar, conversation"} <= tried


def test_word_variants_keep_labels_distinct():
    start = PromptSpec(task="classification", labels=["Sci/Tech", "World", "pos"])
    variants = word_variants(start, {"Sci/Tech": "science", "World": "world", "pos": "good"})
    assert variants["spelled out"] == {"Sci/Tech": "science technology", "World": "world", "pos": "positive"}
    assert variants["model's words"]["Sci/Tech"] == "science"
    assert spelled_out("card_arrival") == "card arrival"
    clash = PromptSpec(task="classification", labels=["ham", "Normal"])
    assert "spelled out" not in word_variants(clash)  # ham -> normal would say two labels the same way


# -- a planted easy case: a fake model whose scores are right for one instruction only ---------------------

PLANTED = "annotator"


def plant(monkeypatch, *, sleep: float = 0.0, calls: list | None = None):
    """Replace scoring: the planted instruction gets the right label, any other candidate a coin flip."""

    def fake_run(self, number, candidate, rows):
        if calls is not None:
            calls.append(len(rows))
        time.sleep(sleep * len(rows))
        right = candidate.instruction == PLANTED and candidate.spec.shots == 0
        rng = np.random.default_rng(number)
        out = []
        for i in rows:
            truth = candidate.spec.labels.index(self.references[i])
            row = rng.normal(size=len(candidate.spec.labels))
            if right:
                row[truth] += 10.0
            out.append(row)
        self._content_free[number] = np.zeros(len(candidate.spec.labels))
        return out

    monkeypatch.setattr(search_module._Judge, "_run", fake_run)
    monkeypatch.setattr(search_module, "model_label_words", lambda *a, **k: {})
    monkeypatch.setattr(search_module, "_tokens_per_row", lambda c, *a: 30.0 + 40 * c.spec.shots)


class _Loaded:
    context_length = 2048
    tokenizer = None


def test_halving_keeps_the_planted_best(monkeypatch):
    plant(monkeypatch)
    train = toy_reviews(300, seed=1)
    settings = SearchSettings(max_candidates=200, first_rows=8, max_rows=72, budget_seconds=36000)
    result = search_prompt(_Loaded(), start_spec(), train=train, validation=toy_reviews(40, seed=2),
                           settings=settings)
    assert result.spec.instruction == search_module.TEMPLATES["classification"][PLANTED]
    assert result.spec.shots == 0 and result.validation_score == 1.0 and result.rows == 72
    assert result.stopped is None and result.evaluated == result.candidates
    top = result.leaderboard[0]
    assert top["instruction"] == PLANTED and top["rows"] == 72 and top["score"] == 1.0
    # halving: only a third carries on to each next rung
    by_rows = pd.Series([row["rows"] for row in result.leaderboard]).value_counts().to_dict()
    assert by_rows[8] > by_rows.get(24, 0) > 0
    assert any("Instruction (annotator)" in line for line in result.explanation)


def test_search_is_deterministic_for_a_seed(monkeypatch):
    plant(monkeypatch)
    train = toy_reviews(200, seed=1)
    settings = SearchSettings(max_candidates=30, first_rows=8, max_rows=40, seed=3, budget_seconds=36000)
    a = search_prompt(_Loaded(), start_spec(), train=train, settings=settings)
    b = search_prompt(_Loaded(), start_spec(), train=train, settings=settings)
    def ranking(result):
        return [{k: v for k, v in row.items() if k != "ms_per_row"} for row in result.leaderboard]

    assert a.spec == b.spec and ranking(a) == ranking(b)


def test_budget_is_honoured(monkeypatch):
    plant(monkeypatch, sleep=0.01)  # 10 ms per row
    settings = SearchSettings(max_candidates=200, first_rows=16, max_rows=64, budget_seconds=1.0)
    started = time.perf_counter()
    result = search_prompt(_Loaded(), start_spec(), train=toy_reviews(300, seed=1), settings=settings)
    assert time.perf_counter() - started < 1.0 + 5.0  # it stops at the budget, not after all 200 candidates
    assert result.stopped == "budget" and 0 < result.evaluated < result.candidates


def test_the_budget_plans_how_many_candidates(monkeypatch):
    plant(monkeypatch, sleep=0.002)
    settings = SearchSettings(first_rows=16, max_rows=64, budget_seconds=2.0)
    result = search_prompt(_Loaded(), start_spec(), train=toy_reviews(300, seed=1), settings=settings)
    space = search_space(start_spec(), pool_rows=300, settings=settings)
    assert 2 <= result.candidates < len(space)


def test_cancel_is_honoured(monkeypatch):
    calls: list = []
    plant(monkeypatch, calls=calls)
    settings = SearchSettings(max_candidates=50, first_rows=8, max_rows=40, budget_seconds=36000)
    result = search_prompt(_Loaded(), start_spec(), train=toy_reviews(200, seed=1), settings=settings,
                           should_stop=lambda: len(calls) >= 3)
    assert result.stopped == "cancelled" and result.evaluated == 3
    with pytest.raises(SearchStopped):
        search_prompt(_Loaded(), start_spec(), train=toy_reviews(200, seed=1), settings=settings,
                      should_stop=lambda: True)


def test_label_words_are_read_from_training_rows_that_are_not_selection_rows(monkeypatch):
    seen: list[pd.DataFrame] = []

    def spy(loaded, start, rows, **kwargs):
        seen.append(rows)
        return {}

    plant(monkeypatch)
    monkeypatch.setattr(search_module, "model_label_words", spy)
    train, validation = toy_reviews(200, seed=1), toy_reviews(30, seed=2)
    settings = SearchSettings(max_candidates=3, first_rows=8, max_rows=60, budget_seconds=36000)
    search_prompt(_Loaded(), start_spec(), train=train, validation=validation, settings=settings)
    chosen, _ = selection_rows(train, validation, max_rows=60, seed=0)
    words_from = set(seen[0]["text"])
    assert words_from <= set(train["text"])
    assert not words_from & set(validation["text"]) and not words_from & set(chosen["text"])


# -- the real thing on the tiny model ----------------------------------------------------------------------

def test_search_on_the_tiny_model_returns_a_scored_prompt(tiny_model):
    train, validation = toy_reviews(80, seed=1), toy_reviews(20, seed=2)
    settings = SearchSettings(max_candidates=6, first_rows=8, max_rows=30, budget_seconds=36000)
    result = search_prompt(tiny_model, start_spec(), train=train, validation=validation, settings=settings)
    data = result.to_dict()
    assert {"candidates", "evaluated", "budget_seconds", "selected_on", "validation_score", "spec"} <= set(data)
    assert data["selected_on"] == "validation" and data["candidates"] == 6 and data["evaluated"] == 6
    assert 0.0 <= data["validation_score"] <= 1.0
    kept = bool(result.guard and result.guard["kept"])  # a kept prompt comes back as it was ("auto" here)
    assert PromptSpec.from_dict(data["spec"]).calibration in (("auto",) if kept else ("none", "content-free", "fitted"))
    assert [row["chosen"] for row in data["leaderboard"]].count(True) == 1
    assert search_module.SearchResult.from_dict(json.loads(json.dumps(data))).spec == result.spec


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_search_never_reads_a_test_label(tmp_path, tiny_model_dir):
    toy_reviews(80, seed=1).to_csv(tmp_path / "train.csv", index=False)
    test = toy_reviews(24, seed=2)
    test.to_csv(tmp_path / "test.csv", index=False)
    shuffled = test.assign(label=test["label"].sample(frac=1.0, random_state=5).to_numpy()[::-1])
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    outputs = []
    for name in ("test.csv", "shuffled.csv"):
        predictions = tmp_path / f"pred-{name}"
        result = invoke("prompt", "--train", tmp_path / "train.csv", "--test", tmp_path / name, "--search",
                        "--max-candidates", 4, "--budget-seconds", 600, "--model", tiny_model_dir, "--json",
                        "--predictions", predictions)
        assert result.exit_code == 0, result.output
        outputs.append((json.loads(result.stdout), pd.read_csv(predictions, keep_default_na=False)))
    (a, pred_a), (b, pred_b) = outputs
    assert a["search"]["selected_on"] == "validation" and a["search"]["candidates"] == 4
    assert {"candidates", "evaluated", "budget_seconds", "validation_score", "spec"} <= set(a["search"])
    assert a["search"]["spec"] == b["search"]["spec"]  # the chosen prompt ignores the test labels
    assert pred_a["prediction"].tolist() == pred_b["prediction"].tolist()  # so does every prediction


def test_compare_search_adds_the_best_prompt_found_arm(tmp_path, tiny_model_dir):
    from pvf_core.compare import Comparison

    toy_reviews(90, seed=1).to_csv(tmp_path / "train.csv", index=False)
    toy_reviews(20, seed=2).to_csv(tmp_path / "test.csv", index=False)
    result = invoke("compare", "--train", tmp_path / "train.csv", "--test", tmp_path / "test.csv", "--shots", "4",
                    "--search", "--max-candidates", 3, "--epochs", 1, "--model", tiny_model_dir,
                    "--output", tmp_path / "cmp", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    names = [a["arm"] for a in data["arms"]]
    assert names == ["4-shot balanced", "best prompt found", "LoRA r=8"]
    searched = data["arms"][1]
    assert searched["search"]["selected_on"] == "validation" and searched["search"]["candidates"] == 3
    assert {"candidates", "evaluated", "budget_seconds", "validation_score", "spec"} <= set(searched["search"])
    assert searched["n_test"] == data["arms"][0]["n_test"] == 20  # the same test rows as every arm
    assert data["arms"][0].get("search") is None
    reopened = Comparison.load(tmp_path / "cmp")
    assert reopened.arms[1].search["spec"] == searched["search"]["spec"]
    assert len(data["significance"]) == 3  # the searched arm is tested against the others like any arm
    report = (tmp_path / "cmp" / "report.html").read_text()
    assert "How \u201cbest prompt found\u201d was found" in report and "never on the test rows" in report


def test_planned_cost_grows_with_examples_and_most_for_similar_ones(tiny_model):
    from pvf_core.search import Candidate, _Judge, _tokens_per_row

    train = toy_reviews(60, seed=1)
    judge = _Judge(tiny_model, toy_reviews(8, seed=2), train, "classification", lambda: False)

    def tokens(**changes):
        return _tokens_per_row(Candidate(start_spec(**changes), "generic", "as given"), judge, judge.texts[:4], 16)

    zero, four, similar = tokens(), tokens(shots=4), tokens(shots=4, selection="similar")
    assert zero < four < similar  # the shared examples are paid once per call; similar ones on every row
    assert similar > 3 * zero


def test_text_to_text_search_judges_by_chrf(tiny_model):
    pairs = pd.DataFrame([(f"he go to school number {i} .", f"He goes to school number {i} .") for i in range(40)],
                         columns=["text", "label"])
    start = PromptSpec(task="text-to-text", instruction="Correct the grammar.", max_answer_tokens=16)
    settings = SearchSettings(max_candidates=3, first_rows=4, max_rows=12, budget_seconds=36000)
    result = search_prompt(tiny_model, start, train=pairs.head(30), validation=pairs.tail(10), settings=settings)
    assert result.metric == "chrf" and 0.0 <= result.validation_score <= 100.0
    assert result.spec.task == "text-to-text" and result.spec.calibration == "none"
    assert {row["instruction"] for row in result.leaderboard} <= {"yours", "generic", "examples", "minimal"}
    assert result.leaderboard[0]["rows"] == result.rows


# -- the final guard: the best candidate replaces the starting/default prompt only if clearly better -------------

def rig(monkeypatch, *, clear: bool):
    """Scoring where the starting prompt is right on every second row and every other prompt wrong, except the
    'annotator' zero-shot one: right on every row if ``clear``, else right on 5 rows the start gets wrong and
    wrong on 3 it gets right (of 60: a lead of 2 rows, less than one standard error, about 2.8 rows)."""

    def fake_run(self, number, candidate, rows):
        out = []
        for i in rows:
            truth = candidate.spec.labels.index(self.references[i])
            if candidate.role == "start":
                right = i % 2 == 0
            elif candidate.instruction == PLANTED and candidate.spec.shots == 0:
                right = clear or (i % 2 == 0 and i % 20 != 0) or i in (1, 3, 5, 7, 9)
            else:
                right = False
            row = np.zeros(len(candidate.spec.labels))
            row[truth if right else 1 - truth] = 10.0
            out.append(row)
        self._content_free[number] = np.zeros(len(candidate.spec.labels))
        return out

    monkeypatch.setattr(search_module._Judge, "_run", fake_run)
    monkeypatch.setattr(search_module, "model_label_words", lambda *a, **k: {})


GUARD_SETTINGS = dict(max_candidates=40, first_rows=20, max_rows=60, budget_seconds=36000)


def test_the_guard_keeps_the_starting_prompt_when_the_best_leads_within_noise(monkeypatch):
    rig(monkeypatch, clear=False)
    result = search_prompt(_Loaded(), start_spec(), train=toy_reviews(200, seed=1), validation=toy_reviews(30, seed=2),
                           settings=SearchSettings(**GUARD_SETTINGS))
    guard = result.guard
    assert guard["kept"] and guard["reference"] == "start" and guard["rows"] == 60
    assert 0 < guard["difference"] < guard["standard_error"] and guard["p_value"] > 0.3
    assert "annotator" in guard["candidate"] and guard["test"] in ("exact McNemar", "paired bootstrap")
    assert result.spec == start_spec()  # the starting prompt exactly as it was, its calibration ("auto") too
    assert result.explanation[-1].startswith("Calibration: as it was (auto)")
    assert result.validation_score == guard["reference_score"] == pytest.approx(0.5, abs=0.05)
    assert result.explanation[0].startswith("Kept your prompt: no prompt tried was clearly better.")
    assert not any(w["code"] == "lead_within_noise" for w in result.warnings)  # the explanation says why instead
    top, chosen = result.leaderboard[0], [row for row in result.leaderboard if row["chosen"]]
    assert top["instruction"] == PLANTED and not top["chosen"]  # the best score is shown, but not returned
    assert len(chosen) == 1 and chosen[0]["score"] == result.validation_score and chosen[0]["rows"] == 60
    assert result.winner == chosen[0]["candidate"]
    lines = search_module.found_lines(result.to_dict(), test_score=None)
    assert lines[1].startswith("The prompt kept") and any(line.startswith("Kept your prompt") for line in lines)


def test_the_guard_lets_a_clearly_better_prompt_win(monkeypatch):
    rig(monkeypatch, clear=True)  # the planted prompt is right on every row, the start on half
    result = search_prompt(_Loaded(), start_spec(), train=toy_reviews(200, seed=1), validation=toy_reviews(30, seed=2),
                           settings=SearchSettings(**GUARD_SETTINGS))
    guard = result.guard
    assert not guard["kept"] and guard["reference"] == "start" and guard["difference"] > 3 * guard["standard_error"]
    assert result.spec.instruction == search_module.TEMPLATES["classification"][PLANTED]
    assert result.validation_score == 1.0 == guard["candidate_score"]
    assert result.leaderboard[0]["chosen"] and result.leaderboard[0]["instruction"] == PLANTED
    assert any("a lead of 50.0 points, more than one standard error" in line and "for your prompt" in line
               for line in result.explanation)


def test_a_margin_of_zero_returns_the_best_whenever_it_leads(monkeypatch):
    rig(monkeypatch, clear=False)
    result = search_prompt(_Loaded(), start_spec(), train=toy_reviews(200, seed=1), validation=toy_reviews(30, seed=2),
                           settings=SearchSettings(**GUARD_SETTINGS, keep_margin=0.0))
    assert not result.guard["kept"] and result.spec.instruction == search_module.TEMPLATES["classification"][PLANTED]


def test_the_starting_and_default_prompts_are_judged_on_every_rung(monkeypatch):
    rig(monkeypatch, clear=True)
    result = search_prompt(_Loaded(), start_spec(), train=toy_reviews(200, seed=1), validation=toy_reviews(30, seed=2),
                           settings=SearchSettings(**GUARD_SETTINGS))
    rows = {row["candidate"]: row["rows"] for row in result.leaderboard}
    assert rows["instruction: generic; answers: as given; no examples"] == 60  # the start, right on half the rows
    # the default 4-shot prompt is always wrong, and still judged on all the rows
    assert rows["instruction: generic; answers: as given; 4 examples, balanced, conversation"] == 60
    assert sum(r == 60 for r in rows.values()) == 2 + 13  # and the best third of the 38 others


def test_the_guard_compares_with_the_better_of_the_starting_and_default_prompts():
    from pvf_core.search import Candidate, keep_or_replace

    class FakeJudge:
        task, metric = "classification", "accuracy"
        references = ["positive", "negative"] * 30

        def predictions(self, number, candidate, upto):
            right = {0: range(10), 1: range(40), 2: range(4, 46)}[number]  # rows right: start, default, best other
            return [r if i in right else ("negative" if r == "positive" else "positive")
                    for i, r in enumerate(self.references[:upto])]

    planned = [Candidate(start_spec(), "generic", "as given", role="start"),
               Candidate(start_spec(shots=4), "generic", "as given", role="default"),
               Candidate(start_spec(shots=2), "generic", "as given")]
    for candidate, right in zip(planned, (10, 40, 42)):
        candidate.scores[60] = right / 60
    chosen, guard = keep_or_replace(FakeJudge(), planned, [2, 1, 0], 60)
    assert chosen == 1 and guard["kept"] and guard["reference"] == "default"  # 6 v 4 rows only one got right
    assert guard["reference_called"] == "the default 4-shot prompt"
    chosen, guard = keep_or_replace(FakeJudge(), planned, [1, 0], 60)
    assert chosen == 1 and guard is None  # the best is itself a prompt the user would try first
