"""Shows a finished fine-tuning run: test scores, what they mean, per-answer view, the adapter zip, merging."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pvf_core.errors import PvfError
from pvf_core.export import export_finetune_run, hub_id, zip_export
from pvf_core.finetune import CARD_FILE, FinetuneRun, merge_run, result_warnings
from pvf_core.report import confusion_figure, per_class_frame
from pvf_core.store import Run
from ui import label_views
from ui.job_view import duration
from ui.prompt_results import PER_CLASS_HELP  # one vocabulary for per-answer scores



def show(run: Run, *, key: str, allow_merge: bool = True) -> None:
    metrics, folder = run.metrics, Path(run.folder)
    try:
        trained = FinetuneRun.load(folder)
    except PvfError as error:
        st.error(str(error))
        return
    n_test = trained.evaluation.get("n_test")
    cols = st.columns(4)
    if "accuracy" in metrics:
        cols[0].metric("Accuracy", f"{metrics['accuracy']:.1%}", help="Share of the test rows it answered right.")
        cols[1].metric("Macro F1", f"{metrics['macro_f1']:.1%}",
                       help="The F1 score averaged over the answers, so a rare answer counts as much as a common "
                            "one: low when the model ignores some answers.")
    else:
        cols[0].metric("chrF", f"{metrics.get('chrf', 0):.1f}",
                       help="How much of the expected text it wrote (character overlap, 0-100).")
        cols[1].metric("Exact matches", f"{metrics.get('exact_match', 0):.1%}",
                       help="Share of the test rows whose answer was exactly the expected text.")
    cols[2].metric("Test rows", f"{n_test:,}" if n_test else "?")
    cols[3].metric("Training time", duration(trained.training.get("train_seconds")))
    _predicted_against_actual(run.timings)
    findings = result_warnings(metrics)
    for finding in findings:
        st.warning(finding.message)
    shares = metrics.get("true_shares") or {}
    if shares and not findings:
        common = max(shares, key=shares.get)
        st.caption(f"For scale: always answering the most common answer ('{common}') would get {shares[common]:.0%}.")
    if metrics.get("per_class") and label_views.many_labels(metrics):
        st.subheader("Per answer")
        label_views.show(metrics, f"{key}_labels_{run.id}")
    elif metrics.get("per_class"):
        st.subheader("Per answer")
        left, right = st.columns(2)
        left.dataframe(per_class_frame(metrics), hide_index=True, column_config=PER_CLASS_HELP)
        left.caption("Point at a column's name for what it means.")
        right.plotly_chart(confusion_figure(metrics["confusion"], metrics["labels"], "Which answer it gave"),
                           key=f"{key}_confusion_{run.id}")
    _take_away(run, trained, folder, key, allow_merge)


def _take_away(run: Run, trained: FinetuneRun, folder: Path, key: str, allow_merge: bool) -> None:
    st.subheader("Take it with you")
    left, right = st.columns(2)
    with left:
        st.download_button("Download the adapter (.zip)", lambda: zip_export(export_finetune_run(folder)),
                           f"pvf-adapter-run{run.id}.zip", "application/zip", key=f"{key}_download", type="primary",
                           on_click="ignore", icon=":material/download:")
        st.caption(f"The LoRA adapter ({trained.training.get('adapter_mb', '?')} MB) for the base model "
                   f"`{hub_id(trained.model)}`, the prompt it was trained with (prompt.txt, prompt.json), its "
                   "calibration, the model card and predict.py: it runs with plain torch, transformers and peft "
                   "(`python predict.py INPUT.csv OUTPUT.csv`).")
    with right:
        merged = folder / "merged"
        if st.button("Merge into a standalone model", key=f"{key}_merge", disabled=not allow_merge,
                     icon=":material/merge:"):
            with st.spinner("Folding the adapter into a copy of the base model…"):
                try:
                    merge_run(folder)
                except PvfError as error:
                    st.error(str(error))
        st.caption("Optional: a full model folder that any Hugging Face tool loads without PvF Studio or peft "
                   "(as large as the base model)." + ("" if allow_merge else " Not in the public demo."))
        if (merged / "config.json").is_file():
            st.success(f"Standalone model saved in `{merged}`.")
    with st.expander("Model card (README.md, in the zip)"):
        card = (folder / CARD_FILE).read_text(encoding="utf-8") if (folder / CARD_FILE).is_file() else ""
        st.markdown(card.split("---", 2)[-1] if card.startswith("---") else card)


def _predicted_against_actual(timings: dict) -> None:
    """The estimate made before the run beside what the run took (kept in the run's timings)."""
    if not timings.get("predicted_seconds") or not timings.get("seconds"):
        return
    kind = "rough guess" if timings.get("predicted_rough") else "measured estimate"
    def took(seconds: float) -> str:
        return f"{seconds:,.0f} s" if seconds < 600 else duration(seconds)

    training = ""
    if timings.get("predicted_train_seconds") and timings.get("train_seconds"):
        training = (f" (training {took(timings['predicted_train_seconds'])} against "
                    f"{took(timings['train_seconds'])})")
    st.caption(f"Predicted ({kind}) against actual: {took(timings['predicted_seconds'])} against "
               f"{took(timings['seconds'])}{training}; peak memory {timings.get('predicted_peak_mb', 0) / 1024:.1f} "
               f"GB against {timings.get('peak_rss_mb', 0) / 1024:.1f} GB.")
