"""Use it: try a text on saved arms (prompt versions, fine-tuning runs, comparison arms), label a new CSV with the
chosen one, download it to run anywhere."""

import io

import pandas as pd
import streamlit as st

from pvf_core import demo
from pvf_core.data import plural, read_csv
from pvf_core.errors import PvfError
from pvf_core.export import (ArmPackage, comparison_arms, export_saved, hub_id, label_frame, predict_texts,
                             saved_arms, text_column_of, zip_export)
from pvf_core.store import Store
from ui import resources, state
from ui.dataset import require_dataset
from ui.progress import ProgressBar

st.title("Use it")
st.markdown("Try a text on the prompts and fine-tuned models you saved and on the arms of your comparisons, "
            "label a new file with the one you chose, and download it to run without PvF Studio.")
dataset = require_dataset()
store = Store()
arms = saved_arms(store, dataset.id) + comparison_arms(store, dataset.id)
if not arms:
    st.info("Nothing to use yet: score a prompt on the Prompt builder (each scored prompt is saved as a version), "
            "fine-tune a model in the wizard or run the standard comparison.")
    left, right = st.columns(2)
    left.page_link("pages/prompt_builder.py", label="Build a prompt", icon=":material/edit_note:")
    right.page_link("pages/finetune_wizard.py", label="Fine-tune the model", icon=":material/tune:")
    st.stop()


def package_of(arm) -> ArmPackage:
    return ArmPackage.load(export_saved(arm, store=store))


def base_for(package: ArmPackage):
    """(model, loaded): the shared, already loaded model when the arm runs on it, else the arm's own base."""
    base = state.selected_model()
    if package.prompt.get("base_model") == hub_id(base):
        return base, resources.model(base)
    return None, None


def test_score(arm) -> str:
    metrics = arm.metrics or {}
    if "accuracy" in metrics:
        return f"{metrics['accuracy']:.1%} accuracy"
    if "chrf" in metrics:
        return f"chrF {metrics['chrf']:.1f}"
    return ""


st.header("1. Try a text")
by_label = {arm.label: arm for arm in arms}
newest = next((a.id for a in arms if a.kind == "comparison"), None)  # the newest comparison's arms by default
picked = st.multiselect("Arms to answer with", list(by_label), key="use_try_arms",
                        default=[a.label for a in arms if a.kind != "comparison" or a.id == newest],
                        help="Saved prompt versions, fine-tuning runs and the arms of standard comparisons. Each "
                             "fine-tuned arm loads its own copy of the model, so many take a while.")
text = st.text_area("A text, as the model would read it", key="use_text",
                    placeholder=str(dataset.splits.test["text"].iloc[0])[:200])
if st.button("Answer with every chosen arm", type="primary", key="use_try", disabled=not text.strip() or not picked):
    rows = []
    with st.spinner(f"Answering with {plural(len(picked), 'arm')}…"):
        for arm in (by_label[label] for label in picked):
            try:
                package = package_of(arm)
                model, loaded = base_for(package)
                found = predict_texts(package, [text], model=model, loaded=loaded)
            except PvfError as error:
                rows.append({"Arm": arm.label, "Answer": "", "How sure": None, "Test score": test_score(arm),
                             "Note": error.message})
                continue
            sure = found.confidence()[0]
            rows.append({"Arm": arm.label, "Answer": found.predictions[0],
                         "How sure": None if sure is None else round(100 * sure, 1),
                         "Test score": test_score(arm), "Note": ""})
    st.session_state["use_answers"] = {"text": text, "rows": rows, "arms": picked}
tried = st.session_state.get("use_answers")
if tried and tried["text"] == text and tried.get("arms") == picked:
    st.dataframe(pd.DataFrame(tried["rows"]), hide_index=True, column_config={
        "How sure": st.column_config.ProgressColumn(
            "How sure (%)", min_value=0, max_value=100, format="%.1f",
            help="The arm's probability for its answer, after calibration: 50% between two labels is a coin toss.")})

st.header("2. Label a new file")
labels = {arm.label: arm for arm in arms}
chosen = labels[st.selectbox("Answer with", list(labels), key="use_arm")]
upload = st.file_uploader("CSV with the texts to answer (no answers needed)", type=["csv", "tsv", "txt"],
                          key="use_upload", max_upload_size=demo.uploader_mb())
if upload is not None:
    try:
        table = read_csv(upload.getvalue(), name=upload.name, limits=demo.upload_limits(), min_columns=1)
    except PvfError as error:
        st.error(f"**This file cannot be used.** {error.message}" + (f"  \n{error.hint}" if error.hint else ""))
        table = None
    if table is not None:
        guess = text_column_of(table, recorded=dataset.mapping.text_column)
        column = st.selectbox("Column with the texts", table.columns, index=table.columns.index(guess),
                              key=f"use_column_{table.content_hash}")
        st.caption(f"{upload.name}: {plural(len(table), 'row')}.")
        if st.button(f"Answer {plural(len(table), 'row')}", type="primary", key="use_run"):
            bar = ProgressBar("Loading the model…")
            try:
                package = package_of(chosen)
                model, loaded = base_for(package)
                labelled, found = label_frame(package, table.frame, column, model=model, loaded=loaded,
                                              on_progress=bar)
            except PvfError as error:
                bar.done()
                st.error(f"**These rows cannot be answered.** {error.message}"
                         + (f"  \n{error.hint}" if error.hint else ""))
            else:
                bar.done()
                st.session_state["use_labelled"] = {"name": upload.name, "arm": chosen.label,
                                                    "csv": labelled.to_csv(index=False).encode("utf-8"),
                                                    "seconds": found.seconds, "rows": len(labelled),
                                                    "counts": labelled["prediction"].value_counts().to_dict()}
labelled = st.session_state.get("use_labelled")
if labelled and upload is not None and labelled["name"] == upload.name:
    st.success(f"{plural(labelled['rows'], 'row')} answered by {labelled['arm']} in {labelled['seconds']:.1f} s.")
    st.dataframe(pd.read_csv(io.BytesIO(labelled["csv"]), dtype=str, keep_default_na=False).head(20),
                 hide_index=True)
    stem = labelled["name"].rsplit(".", 1)[0]
    st.download_button("Download the CSV with a prediction column", labelled["csv"], f"{stem}-predictions.csv",
                       "text/csv", key="use_download_csv")

st.header("3. Take it with you")
st.markdown(f"**{chosen.label}** as a folder that runs with plain `torch`, `transformers` and `peft`: the "
            "adapter (if any), the prompt as text and as JSON, the calibration, the measured scores and "
            "`predict.py` (`python predict.py INPUT.csv OUTPUT.csv`).")
try:
    folder = export_saved(chosen, store=store)
except PvfError as error:
    st.error(str(error))
else:
    stem = f"pvf-{chosen.kind}-{chosen.id}" + (f"-{folder.name}" if chosen.kind == "comparison" else "")
    st.download_button("Download the portable export (.zip)", zip_export(folder),
                       f"{stem}.zip", "application/zip", key="use_download_export")
    with st.expander("The prompt, as plain text"):
        st.code((folder / "prompt.txt").read_text(encoding="utf-8"), language=None)
