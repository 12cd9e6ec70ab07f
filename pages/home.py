"""Home: what prompting and fine-tuning are, then pick or upload a dataset, map its columns, check it."""

import streamlit as st

from pvf_core import demo, model_choice
from pvf_core.data import (DELIMITER_NAMES, ColumnMapping, Limits, SplitSettings, health_check, labeled_frame,
                           make_splits, mapping_notes, plural, read_csv, register_dataset, suggest_mapping, task_reason,
                           worst_first)
from pvf_core.errors import PvfError
from pvf_core.hub_data import load_hub_table
from pvf_core.report import label_distribution_figure
from pvf_core.samples import SAMPLE_NAME, sample_csv_bytes
from pvf_core.store import Store
from ui import model_picker, resources, state

SOURCES = ["Sample: support tickets", "Upload a CSV", "A dataset you used before", "A Hugging Face hub dataset"]
LEVEL_BOX = {"error": st.error, "warning": st.warning, "info": st.info}

st.title("Prompt or fine-tune? Measure it on your data.")
st.markdown(
    "A pre-trained language model can learn your task in two ways. **Prompting** tells it what to do in "
    "words, maybe with a few examples; nothing is trained. **Fine-tuning** trains a small add-on (a LoRA "
    "adapter) on your labelled rows. PvF Studio runs both on the same held-out rows of *your* data and tells "
    "you which one to use, and what each costs.")
st.table({
    "": ["What you give", "Up-front cost", "Cost per answer", "Tends to win when"],
    "Prompting": ["An instruction, maybe a few examples", "Minutes of your time, no training",
                     "Longer input: the instruction and examples are read again for every answer",
                     "You have few labelled rows, the task is common sense, or it changes often"],
    "Fine-tuning": ["A few hundred labelled rows", "Minutes to hours of training",
                       "Short input: the model already knows the task",
                       "You have hundreds of rows, a specialised task, or many answers to produce"],
})

model_picker.show()

st.header("1. Your data")
source = st.radio("Where is your data?", SOURCES, horizontal=True, key="home_source")


@st.cache_data(max_entries=4, show_spinner="Reading the file…")
def parse(raw: bytes, name: str, limits: Limits = Limits()):
    return read_csv(raw, name=name, limits=limits)


def previous_dataset() -> None:
    records = Store().list_datasets()
    if not records:
        st.info("No dataset has been used in this workspace yet: pick the sample or upload a CSV.")
        st.stop()
    chosen = st.selectbox("Dataset", records, key="home_previous",
                          format_func=lambda r: f"#{r.id} {r.name}: {plural(r.n_rows, 'row')}, {r.task}")
    if st.button("Use this dataset", type="primary", key="home_use_previous"):
        state.select_dataset(chosen.id)
        st.rerun()
    show_next_steps()
    st.stop()


@st.cache_data(max_entries=4, show_spinner="Loading the dataset…")
def hub_table(source: str, split: str, config: str, limits: Limits = Limits()):
    return load_hub_table(source, split, config or None, limits=limits)


def hub_dataset():
    """A dataset by hub id and split, read into the same table as a CSV (where the hub is reachable)."""
    reachable, reason = model_choice.hub_status()
    if not reachable:
        st.info(reason.replace("Hub models", "Hub datasets"))
        show_next_steps()
        st.stop()
    left, middle, right = st.columns([3, 2, 2])
    source = left.text_input("Dataset id", key="home_hub_id", placeholder="stanfordnlp/sst2",
                             help="The id on huggingface.co/datasets (or a folder saved with datasets' save_to_disk).")
    config = middle.text_input("Configuration (if it has several)", key="home_hub_config")
    split = right.text_input("Split", "train", key="home_hub_split",
                             help="A split name, or a slice of it such as train[:2000] to stay under the row limit.")
    if not source.strip():
        st.info("Type a dataset id, for example stanfordnlp/sst2 (sentiment) or fancyzhx/ag_news (topics).")
        show_next_steps()
        st.stop()
    return hub_table(source.strip(), split.strip() or "train", config.strip(), demo.upload_limits())


def show_next_steps() -> None:
    selected = resources.current_dataset(state.selected_dataset_id())
    if selected is None:
        return
    sizes = selected.splits.sizes()
    st.success(f"Selected: **{selected.name}** ({selected.task}; {sizes['train']} train / "
               f"{sizes['validation']} validation / {sizes['test']} test rows).")
    left, right, third = st.columns(3)
    left.page_link("pages/prompt_builder.py", label="Build a prompt", icon=":material/edit_note:")
    right.page_link("pages/finetune_wizard.py", label="Fine-tune the model", icon=":material/tune:")
    third.page_link("pages/compare.py", label="Compare both", icon=":material/balance:")


def stop_with(error: PvfError, headline: str) -> None:
    """A plain error with its hint; whatever was selected before stays selected and shown."""
    st.error(f"**{headline}** {error.message}" + (f"  \n{error.hint}" if error.hint else ""))
    show_next_steps()
    st.stop()


if source == SOURCES[2]:
    previous_dataset()

test_table = None
try:
    if source == SOURCES[0]:
        table = parse(sample_csv_bytes(), SAMPLE_NAME)
        st.caption("480 customer-support messages, each sent to one of four teams. PvF Studio generates this "
                   "sample itself, so it is free to use and share.")
    elif source == SOURCES[3]:
        table = hub_dataset()
    else:
        upload = st.file_uploader("CSV file (comma, semicolon, tab or pipe separated; any common encoding)",
                                  type=["csv", "tsv", "txt"], key="home_upload",
                                  max_upload_size=demo.uploader_mb())  # None (the server's limit) off demo mode
        with st.expander("I have a separate test file"):
            test_upload = st.file_uploader("Test CSV with the same columns", type=["csv", "tsv", "txt"],
                                           key="home_test_upload", max_upload_size=demo.uploader_mb())
        if upload is None:
            st.info("Upload a CSV with one column of text and one column of answers (a label, or the text you "
                    "expect back).")
            show_next_steps()
            st.stop()
        table = parse(upload.getvalue(), upload.name, demo.upload_limits())
        if test_upload is not None:
            test_table = parse(test_upload.getvalue(), test_upload.name, demo.upload_limits())
except PvfError as error:
    stop_with(error, "This file cannot be used.")

st.header("2. Columns")
st.caption(f"{table.name}: {plural(len(table), 'row')}, read as {table.encoding}, separated by "
           f"{DELIMITER_NAMES[table.delimiter]}s.")
st.dataframe(table.frame.head(5), hide_index=True)
try:
    guess = suggest_mapping(table)
except PvfError as error:
    stop_with(error, "These columns cannot be used.")
tasks = ["classification", "text-to-text"]
left, middle, right = st.columns(3)
text_column = left.selectbox("Text the model reads", table.columns, index=table.columns.index(guess.text_column),
                             key=f"home_text_{table.content_hash}")
label_column = middle.selectbox("Answer it should give", table.columns,
                                index=table.columns.index(guess.label_column), key=f"home_label_{table.content_hash}")
task = right.radio("Task", tasks, index=tasks.index(guess.task), key=f"home_task_{table.content_hash}",
                   help="Classification: pick one answer from a fixed set (sentiment, topic, team). "
                        "Text-to-text: write an output text (correct, translate, summarise).")
st.caption(f"Task: {task_reason(table, ColumnMapping(task, text_column, label_column))}")
with st.expander("How the rows are split"):
    test_fraction = st.slider("Share of rows held out for testing", 0.1, 0.5, 0.2, 0.05, key="home_test_fraction",
                              disabled=test_table is not None)
    seed = st.number_input("Seed (the same seed gives the same split)", 0, 10_000, 0, key="home_seed")
split = SplitSettings(test_fraction=0.0 if test_table is not None else test_fraction, seed=int(seed))

st.header("3. Health check")
try:
    mapping = ColumnMapping(task=task, text_column=text_column, label_column=label_column)
    frame = labeled_frame(table, mapping)
    test_frame = labeled_frame(test_table, mapping) if test_table is not None else None
    splits = make_splits(frame, task, split, test_frame)
except PvfError as error:
    stop_with(error, "This data cannot be used yet.")
try:
    count_tokens, context = resources.token_counter(state.selected_model())
except PvfError as error:
    st.warning(f"Token lengths not checked: {error}")
    count_tokens, context = None, None
findings = worst_first(table.notes + mapping_notes(table, mapping)
                       + health_check(splits, count_tokens=count_tokens, context_length=context))
sizes = splits.sizes()
cols = st.columns(4)
cols[0].metric("Rows", f"{len(frame):,}")
for col, (name, size) in zip(cols[1:], sizes.items()):
    col.metric(name.capitalize(), f"{size:,}")
if task == "classification":
    st.plotly_chart(label_distribution_figure({"train": splits.train, "validation": splits.validation,
                                               "test": splits.test}))
if not any(f.level in ("error", "warning") for f in findings):
    st.success("No problems found.")
for finding in findings:
    LEVEL_BOX[finding.level](finding.message)

st.header("4. Use it")
blocked = any(f.level == "error" for f in findings)
if st.button("Use this dataset", type="primary", disabled=blocked, key="home_use"):
    try:
        dataset = register_dataset(table, mapping, split, test_table=test_table)
    except PvfError as error:
        st.error(str(error))
    else:
        state.select_dataset(dataset.id)
show_next_steps()
