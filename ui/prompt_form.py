"""The prompt builder's guided form: four steps of widgets that make one ``PromptSpec``.

Each widget has a ``pb_*`` key and its tooltip comes from the ``PromptSpec`` field's metadata. Streamlit
forgets a widget's value when the widget is not drawn (a hidden step, another page). So the form keeps its
values in one plain dict, ``st.session_state["pb_form"]`` = ``{"dataset": id, "values": {key: value}}``:
``restore`` (top of each run) writes every value back into session state, ``remember`` (end of the form)
saves them. A new dataset starts from a fresh spec. ``apply`` (a preset, a saved version) overwrites every
value; call it from a button's ``on_click``.
"""

from __future__ import annotations

import streamlit as st

from pvf_core.data import Dataset
from pvf_core.prompting import CALIBRATIONS, DEFAULT_INSTRUCTION, PromptSpec, default_selection
from ui.settings_help import tip

FORM_KEY = "pb_form"
EXAMPLE_CHOICES = {"none": "None (zero-shot)", "one": "One", "few": "A few"}
PICKS = {"auto": "Pick them for me", "manual": "I'll pick them"}
AUTO_SELECTIONS = {"balanced": "Balanced: the same number for each answer", "random": "Random",
                   "similar": "Similar: the training rows most like each test row"}
MAX_PICKED = 16


def word_key(label: str) -> str:
    return f"pb_word::{label}"


def values_for(spec: PromptSpec, dataset: Dataset) -> dict:
    """The widget values that show ``spec``."""
    n = spec.n_examples
    values = {
        "pb_instruction": spec.instruction, "pb_context": spec.context,
        "pb_own_format": spec.output_format is not None,
        "pb_output_format": spec.output_format if spec.output_format is not None
        else spec.with_(labels=dataset.labels).resolved_output_format(),
        "pb_examples": "none" if n == 0 else "one" if n == 1 else "few",
        "pb_shots": min(spec.shots, MAX_PICKED) if spec.shots >= 2 else 4,
        "pb_pick": "manual" if spec.selection == "manual" else "auto",
        "pb_selection": spec.selection if spec.selection in AUTO_SELECTIONS else "balanced",
        "pb_rows": [i for i in spec.example_ids if 0 <= i < len(dataset.splits.train)],
        "pb_style": spec.example_style, "pb_calibration": spec.calibration, "pb_seed": spec.seed,
        "pb_max_answer": spec.max_answer_tokens, "pb_newline": spec.stop_at_newline,
    }
    values.update({word_key(label): spec.word(label) for label in dataset.labels})
    return values


def apply(spec: PromptSpec, dataset: Dataset) -> None:
    """Show ``spec`` in the form (overwrites every field)."""
    values = values_for(spec, dataset)
    st.session_state.update(values)
    st.session_state[FORM_KEY] = {"dataset": dataset.id, "values": values}


def restore(dataset: Dataset, default: PromptSpec) -> None:
    """Put back the values of widgets not drawn in the last run; a new dataset starts from ``default``."""
    form = st.session_state.get(FORM_KEY)
    if not form or form["dataset"] != dataset.id:
        apply(default, dataset)
        return
    drawn = form.get("drawn", set())
    for key, value in form["values"].items():
        if key not in drawn or key not in st.session_state:  # a hidden widget's state may be gone or stale
            st.session_state[key] = value
    form["drawn"] = set()


def remember() -> None:
    """Save the values of the widgets drawn in this run (call after ``show``)."""
    form = st.session_state[FORM_KEY]
    form["values"].update({key: st.session_state[key] for key in form["drawn"] if key in st.session_state})


def _drawn(key: str) -> str:
    """Note that the widget with ``key`` is drawn in this run; returns the key."""
    st.session_state[FORM_KEY].setdefault("drawn", set()).add(key)
    return key


def spec_from_form(dataset: Dataset) -> PromptSpec:
    """The spec the widgets describe (``SettingsError`` when they contradict each other)."""
    s = st.session_state
    choice, manual = s["pb_examples"], s["pb_pick"] == "manual"
    rows = list(s["pb_rows"])[:1] if choice == "one" else list(s["pb_rows"])
    shots = {"none": 0, "one": 1, "few": max(len(rows), 1) if manual else int(s["pb_shots"])}[choice]
    words = {label: s[word_key(label)].strip() for label in dataset.labels}
    return PromptSpec(
        task=dataset.task, instruction=s["pb_instruction"], context=s["pb_context"],
        output_format=s["pb_output_format"] if s["pb_own_format"] else None, labels=dataset.labels,
        verbalizers={label: word for label, word in words.items() if word and word != label},
        shots=shots, selection="manual" if manual and shots else s["pb_selection"],
        example_ids=rows if manual and shots else [], example_style=s["pb_style"],
        calibration=s["pb_calibration"] if dataset.task == "classification" else "none",
        max_answer_tokens=int(s["pb_max_answer"]), stop_at_newline=bool(s["pb_newline"]), seed=int(s["pb_seed"]))


def show(dataset: Dataset) -> None:
    """Draw the four steps (values come from session state; read them with ``spec_from_form``)."""
    task = dataset.task
    st.subheader("1. What is the task?")
    st.text_area("What should the model do?", key=_drawn("pb_instruction"), height=90,
                 help=tip(PromptSpec, "instruction"),
                 placeholder=f"Empty uses: “{DEFAULT_INSTRUCTION[task]}”")
    st.text_area("Background it needs (optional)", key=_drawn("pb_context"), height=90, help=tip(PromptSpec, "context"),
                 placeholder="What each answer means, who wrote the texts, how to treat unclear cases…")

    st.subheader("2. What are the answers?")
    if task == "classification":
        labels = dataset.labels
        st.markdown(f"The model picks one of **{len(labels)}** answers: " + ", ".join(f"`{x}`" for x in labels[:30])
                    + (" …" if len(labels) > 30 else ""))
        with st.expander("How each answer is said to the model", expanded=False):
            columns = st.columns(min(len(labels), 4))
            for i, label in enumerate(labels):
                columns[i % len(columns)].text_input(label, key=_drawn(word_key(label)),
                                                     help=tip(PromptSpec, "verbalizers"))
    else:
        st.markdown("The model writes an answer; it is scored against the expected output (chrF, exact match).")
        left, right = st.columns(2)
        left.number_input("Longest answer (tokens)", 1, 1024, key=_drawn("pb_max_answer"),
                          help=tip(PromptSpec, "max_answer_tokens"))
        right.checkbox("One-line answers", key=_drawn("pb_newline"), help=tip(PromptSpec, "stop_at_newline"))

    st.subheader("3. What format?")
    own = st.toggle("Write the answer format myself", key=_drawn("pb_own_format"),
                    help=tip(PromptSpec, "output_format"))
    if own:
        st.text_input("Answer format", key=_drawn("pb_output_format"), help=tip(PromptSpec, "output_format"))
    else:
        automatic = PromptSpec(task=task, labels=dataset.labels).resolved_output_format()
        st.caption(f"Automatic: “{automatic}”")

    st.subheader("4. Which examples?")
    choice = st.radio("Solved examples shown before each row", list(EXAMPLE_CHOICES), key=_drawn("pb_examples"),
                      format_func=EXAMPLE_CHOICES.get, horizontal=True, help=tip(PromptSpec, "shots"))
    if choice != "none":
        pick = st.radio("Which ones?", list(PICKS), key=_drawn("pb_pick"), format_func=PICKS.get, horizontal=True,
                        help=tip(PromptSpec, "selection"))
        if pick == "auto":
            if choice == "few":
                st.slider("How many", 2, MAX_PICKED, key=_drawn("pb_shots"), help=tip(PromptSpec, "shots"))
            st.selectbox("How they are picked", list(AUTO_SELECTIONS), key=_drawn("pb_selection"),
                         format_func=AUTO_SELECTIONS.get, help=tip(PromptSpec, "selection"))
            shown = 1 if choice == "one" else int(st.session_state.get("pb_shots", 4))
            suggested, why = default_selection(shown, len(dataset.labels)) if task == "classification" else ("", "")
            if suggested == "similar":
                st.caption(f"Similar is the default here: {why}")
        else:
            _row_picker(dataset, one=choice == "one")

    with st.expander("More settings"):
        if task == "classification":
            st.radio("Calibration", list(CALIBRATIONS), key=_drawn("pb_calibration"), horizontal=True,
                     help=tip(PromptSpec, "calibration"))
        st.radio("How examples are shown", ["conversation", "list"], key=_drawn("pb_style"), horizontal=True,
                 help=tip(PromptSpec, "example_style"))
        st.number_input("Seed for drawing examples", 0, 1_000_000, key=_drawn("pb_seed"), help=tip(PromptSpec, "seed"))


def _row_picker(dataset: Dataset, one: bool) -> None:
    train = dataset.splits.train
    texts, labels = train["text"].astype(str).tolist(), train["label"].astype(str).tolist()

    def describe(i: int) -> str:
        text = texts[i] if len(texts[i]) <= 90 else texts[i][:87] + "…"
        return f"#{i} · {labels[i]} · {text}"

    st.multiselect("Training rows to show as examples (type to search)", list(range(len(train))), key=_drawn("pb_rows"),
                   format_func=describe, max_selections=1 if one else MAX_PICKED,
                   help=tip(PromptSpec, "example_ids"), placeholder="Type a word or an answer to find rows")
