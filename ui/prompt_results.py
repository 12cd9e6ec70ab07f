"""The prompt builder's result views: one scored version in detail, a quick look, the noise over draws."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from pvf_core.compare import unchanged_input_metrics
from pvf_core.report import confusion_figure, per_class_frame, shares_figure
from ui import label_views

WRONG = "background-color: #FDE2E1"
MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~$:])")


def plain(text: str) -> str:
    """User text on one line, safe inside markdown (no formatting, links or line breaks)."""
    return MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(str(text).split()))


CALIBRATION_HELP = ("Calibration corrects a model that leans towards some answers whatever the text says: each "
                    "answer's probability is divided by how much the model favours it on average, then the likeliest "
                    "answer wins.")
CALIBRATION_WORDS = {
    "batch": "its lean measured over the rows being scored",
    "fitted": "its lean measured on held-out rows (validation, else training rows)",
    "auto": "chosen on the validation rows",
    "content-free": "its lean measured on an empty text ('N/A')",
    "none": "none: the raw scores",
}
PER_CLASS_HELP = {  # one vocabulary for per-answer scores on every page (the wizard's words)
    "found %": st.column_config.NumberColumn(help="Of the test rows with this answer, the share it got right "
                                             "(recall)."),
    "right when said %": st.column_config.NumberColumn(help="Of the test rows it gave this answer, the share "
                                                       "that were right (precision)."),
    "F1 %": st.column_config.NumberColumn(help="Both of the above in one number (their harmonic mean)."),
}


def calibration_words(method: str | dict | None) -> str:
    """What a calibration setting did, in words ('batch' → 'its lean measured over the rows being scored')."""
    name = method.get("method", "none") if isinstance(method, dict) else (method or "none")
    return CALIBRATION_WORDS.get(name, name)


def majority_baseline(metrics: dict) -> tuple[str, float] | None:
    """(answer, accuracy) of always giving the most common true answer on these test rows."""
    shares = metrics.get("true_shares") or {}
    if not shares:
        return None
    common = max(shares, key=shares.get)
    return common, float(shares[common])


def scores(metrics: dict, timings: dict, task: str) -> None:
    """The headline numbers of a run: quality against the always-the-same-answer baseline, calibration's
    effect, tokens and time per row."""
    cols = st.columns(5)
    if task == "classification":
        raw = metrics.get("raw", {})
        calibrated = raw and metrics.get("calibration", "none") != "none"
        delta = (metrics["accuracy"] - raw["accuracy"]) * 100 if calibrated else None
        cols[0].metric("Accuracy", f"{metrics['accuracy']:.1%}",
                       None if delta is None else f"{delta:+.1f} points by calibration",
                       help="Share of the test rows answered right; the arrow shows how many points calibration "
                            "added (or cost). " + CALIBRATION_HELP)
        cols[1].metric("Macro-F1", f"{metrics['macro_f1']:.1%}",
                       help="The F1 score of each answer, averaged so that rare answers count as much as common ones.")
        if calibrated:
            cols[2].metric("Uncalibrated", f"{raw['accuracy']:.1%}",
                           help=f"Accuracy of the raw scores, before calibration ({calibration_words(metrics['calibration'])}). "
                                + CALIBRATION_HELP)
        else:
            cols[2].metric("Calibration", "none", help="Raw scores were used (see More settings). " + CALIBRATION_HELP)
    else:
        cols[0].metric("chrF", f"{metrics['chrf']:.1f}", help="Character overlap with the expected output (0–100).")
        cols[1].metric("Exact match", f"{metrics['exact_match']:.1%}",
                       help="Share of answers equal to the expected one.")
    cols[3].metric("Tokens per row", f"{timings.get('prompt_tokens_per_row', 0):,.0f}",
                   help="What an API would bill for every query: instruction, examples and the row.")
    cols[4].metric("ms per row", f"{timings.get('ms_per_example', 0):,.1f}", help="Time per test row on this machine.")
    if task == "classification":
        baseline(metrics)


def baseline(metrics: dict) -> None:
    """The score to beat: always giving the most common answer. Said plainly when the prompt does not beat it."""
    found = majority_baseline(metrics)
    if found is None:
        return
    common, share = found
    if metrics["accuracy"] <= share:
        st.warning(f"**No better than always answering '{common}'**, which gets {share:.1%} of these test rows "
                   f"right; this prompt gets {metrics['accuracy']:.1%}. The model has not picked up the task from "
                   "this prompt: say what each answer means, or fine-tune.")
    else:
        st.caption(f"For scale: always answering the most common answer ('{common}') gets {share:.1%}; this prompt "
                   f"gets {(metrics['accuracy'] - share) * 100:.1f} points more.")


def collapse_advice(spec) -> str:
    """What to try against a collapse, leaving out what the prompt already does."""
    tries = []
    if spec is None or spec.labels and not all(spec.word(label).lower() in spec.system_message().lower()
                                               for label in spec.labels):
        tries.append("name every answer in the instruction")
    if spec is None or not spec.context.strip():
        tries.append("describe the answers in the background")
    if spec is not None and spec.n_examples and spec.selection not in ("balanced", "similar"):
        tries.append("use balanced examples")
    if spec is None or spec.calibration == "none":
        tries.append("turn calibration on")
    if spec is not None and not spec.n_examples:
        tries.append("show a few solved examples")
    if not tries:
        return "The prompt already does what usually helps; a fine-tuned model may do better."
    return "Try to " + ", ".join(tries[:-1]) + (" or " if len(tries) > 1 else "") + tries[-1] + "."


def collapse_warning(metrics: dict, spec=None) -> None:
    collapse, raw = metrics.get("collapse") or {}, (metrics.get("raw") or {}).get("collapse") or {}
    if collapse.get("collapsed"):
        st.warning(f"The model answers **{collapse['label']}** for {collapse['share']:.0%} of the rows, but only "
                   f"{collapse['true_share']:.0%} of the rows are {collapse['label']}: it has collapsed onto one "
                   f"answer. {collapse_advice(spec)}")
    elif raw.get("collapsed") and metrics.get("calibration", "none") != "none":
        st.info(f"Before calibration the model answered **{raw['label']}** for {raw['share']:.0%} of the rows; "
                "calibration corrected that lean.")


def answers(result, key: str) -> None:
    """Which answers the model gives, the confusion matrix and per-answer scores (classification)."""
    metrics = result.metrics
    if result.task != "classification":
        st.markdown(f"chrF **{metrics['chrf']:.1f}**, exact match **{metrics['exact_match']:.1%}**: see the rows for "
                    "the answers themselves.")
        unchanged = unchanged_input_metrics(result)
        st.caption(f"For scale: answering every row with its input unchanged scores chrF {unchanged['chrf']:.1f} and "
                   f"exact match {unchanged['exact_match']:.1%}. For corrections that is the score to beat.")
    elif not label_views.show(metrics, key):  # many labels: pairs and a per-label table instead of a matrix
        left, right = st.columns(2)
        raw = metrics.get("raw", {}).get("prediction_shares") if metrics.get("calibration", "none") != "none" else None
        left.plotly_chart(shares_figure(metrics["true_shares"], metrics["prediction_shares"], raw), key=f"{key}_shares")
        right.plotly_chart(confusion_figure(metrics["confusion"], metrics["labels"], "Right and wrong answers"),
                           key=f"{key}_confusion")
        st.dataframe(per_class_frame(metrics), hide_index=True, key=f"{key}_per_class", column_config=PER_CLASS_HELP)
        st.caption("Point at a column's name for what it means.")
    for warning in result.warnings:
        st.warning(warning["message"])


def rows(frame: pd.DataFrame, task: str, key: str) -> None:
    """Every row with its expected and given answer; wrong rows highlighted, optionally alone."""
    expected, answer = ("label", "prediction") if task == "classification" else ("output", "prediction")
    frame = frame.rename(columns={expected: "expected", answer: "model's answer"})
    wrong = frame["expected"].astype(str).str.strip() != frame["model's answer"].astype(str).str.strip()
    frame.insert(0, "right", ["✗" if w else "✓" for w in wrong])
    frame = frame[["right", "expected", "model's answer", *[c for c in frame if c not in ("right", "expected",
                                                                                        "model's answer")]]]
    only_wrong = st.toggle(f"Only the {int(wrong.sum())} wrong rows", key=f"{key}_only_wrong")
    shown = frame[wrong] if only_wrong else frame
    styled = shown.style.apply(lambda r: [WRONG if r["right"] == "✗" else ""] * len(r), axis=1)
    st.dataframe(styled, hide_index=True, height=min(38 + 35 * len(shown), 420), key=f"{key}_rows",
                 column_config={"right": st.column_config.TextColumn("", width=40)})


def quick_look(quick: dict) -> None:
    """The 'Try on 5 rows' answers (``quick`` is plain data kept in session state)."""
    st.markdown(f"**Quick look: {quick['right']} of {len(quick['rows'])} right**, {quick['ms_per_row']:.0f} ms per "
                "row. Five rows say little about the score: run on the test set for that.")
    rows(pd.DataFrame(quick["rows"]), quick["task"], "pb_quick")


def noise(variance: dict, task: str) -> None:
    """The spread of the score over several example draws."""
    scale = 100 if variance["metric"] == "accuracy" else 1
    name = "accuracy" if task == "classification" else "chrF"
    per_seed = ", ".join(f"{s[variance['metric']] * scale:.1f}" for s in variance["per_seed"])
    st.markdown(f"Over **{len(variance['per_seed'])}** example draws: {name} **{variance['mean'] * scale:.1f} "
                f"± {variance['std'] * scale:.1f}** (each draw: {per_seed}). A change to the prompt that moves "
                f"the score by less than about {2 * variance['std'] * scale:.1f} points may just be which examples "
                "were drawn.")
