"""Prompt builder: write a prompt in four steps, see exactly what the model reads, score it, keep versions.

Session state (besides the ``pb_*`` widget keys):
    pb_form   the form's values and their dataset, kept across page switches (see ui/prompt_form.py)
    pb_quick  the last "Try on 5 rows" answers as plain data, shown while the prompt is unchanged
Scored versions live in the store (a 'prompt' run with its kept per-row result, and a prompt version).
"""

import json

import streamlit as st

from pvf_core import demo, manage, models
from pvf_core.compare import (compare_versions, keep_prompt_version, keep_variance, load_eval_result, prompt_history,
                              wilson_interval)
from pvf_core.errors import PvfError
from pvf_core.evaluate import Arm, evaluate, evaluate_seeds
from pvf_core.prompting import PromptSpec, check_prompt, default_selection, examples_for, render_text
from pvf_core.report import budget_figure, version_history_figure
from pvf_core.samples import SAMPLE_PROMPTS, is_sample_task
from pvf_core.store import Store
from ui import prompt_form, prompt_results, prompt_search, resources, state
from ui.dataset import require_dataset
from ui.rename_delete import rename_delete
from ui.progress import ProgressBar
from ui.settings_help import tip

QUICK_KEY = "pb_quick"
QUICK_ROWS = 5
DRAWS = 3  # example draws for the noise check
FIRST_BATCH = "Scoring the first batch of rows; the time left shows once it is done…"
LEVEL_BOX = {"error": st.error, "warning": st.warning, "info": st.info}
COLUMNS = {"accuracy": "accuracy (%)", "macro_f1": "macro-F1 (%)", "chrf": "chrF", "exact_match": "exact match (%)",
           "spread": "± over draws", "prompt_tokens": "prompt tokens per row", "ms_per_row": "ms per row"}

st.title("Prompt builder")
dataset = require_dataset()
store = Store()
model_name = state.selected_model()
limits = demo.limits()
train, task = dataset.splits.train, dataset.task
test = dataset.splits.test.head(limits.test_rows(len(dataset.splits.test)))  # the public demo scores fewer
metric, second = ("accuracy", "macro_f1") if task == "classification" else ("chrf", "exact_match")
presets = SAMPLE_PROMPTS if is_sample_task(dataset.labels) else {}
prompt_form.restore(dataset, PromptSpec(task=task, labels=dataset.labels,
                                        selection=default_selection(4, len(dataset.labels))[0]))
prompt_search.apply_pending(dataset, prompt_form.apply)


@st.cache_data(max_entries=64, show_spinner=False)
def check(spec_json: str, model: str, data_key: str, _train, _test):
    """Examples, budget and tips of a draft (tokenizer only), once per spec and data (``data_key``)."""
    tokenizer, (_, context) = resources.tokenizer(model), resources.token_counter(model)
    return check_prompt(PromptSpec.from_dict(json.loads(spec_json)), tokenizer, context, train=_train,
                        test_texts=_test["text"].tolist())


@st.cache_data(max_entries=16, show_spinner=False)
def kept_result(folder: str):
    return load_eval_result(folder)


def score_text(scores: dict) -> str:
    return f"accuracy {scores['accuracy']:.1%}" if metric == "accuracy" else f"chrF {scores['chrf']:.1f}"


def run_arm(spec: PromptSpec, rows, **kwargs):
    return evaluate(Arm(spec.name(), spec, model=model_name), rows, task=task, labels=dataset.labels or None,
                    train=train, calibration_rows=dataset.splits.validation, loaded=resources.model(model_name),
                    **kwargs)


if presets:
    st.markdown("**Start from an example** (fills in the form; change anything after)")
    for column, (name, preset) in zip(st.columns(len(presets)), presets.items()):
        column.button(name, key=f"pb_preset_{name}", on_click=prompt_form.apply, args=(preset, dataset),
                      use_container_width=True)

form_column, view_column = st.columns(2, gap="large")
with form_column:
    prompt_form.show(dataset)
try:  # a spec the form's values make, and what the page shows beside it
    spec, problem = prompt_form.spec_from_form(dataset), None
    data_key = f"{dataset.content_hash} {dataset.mapping} {dataset.split} {len(test)}"  # the rows, in any workspace
    checked = check(json.dumps(spec.to_dict()), model_name, data_key, train, test)
except PvfError as error:  # e.g. more examples than training rows
    spec, problem = None, error
prompt_form.remember()

with view_column:
    st.subheader("What the model reads")
    if spec is None:
        st.warning(f"{problem.message} {problem.hint}")
    else:
        row = st.number_input(f"Preview with test row (1 to {len(test)})", 1, len(test), 1, key="pb_preview_row") - 1
        examples = examples_for(train, checked.example_ids[min(row, len(checked.example_ids) - 1)])
        st.code(render_text(spec, resources.tokenizer(model_name), str(test["text"].iloc[row]), examples),
                language=None, wrap_lines=True, height=340)
        expected = str(test["label"].iloc[row])
        st.caption("The model's answer starts right after the last line. Expected for this row: "
                   f"“{prompt_results.plain(expected if len(expected) <= 120 else expected[:117] + '…')}”.")
        budget = checked.budget
        st.plotly_chart(budget_figure(budget.to_dict()), key="pb_budget", config={"displayModeBar": False})
        st.caption(f"The longest query uses {budget.worst_case:,} of the model's {budget.context_length:,} tokens; "
                   f"on average a query has {budget.per_query:,.0f} prompt tokens, {budget.shared:,} of them the same "
                   f"for every row. About {budget.examples_that_fit} examples would fit.")
        st.subheader("Tips")
        for finding in checked.tips:
            LEVEL_BOX[finding.level](f"**{finding.message}** {finding.why}")
        if not checked.tips:
            st.success("No tips: the prompt names its answers, says how to answer and fits the model's context.")

    st.subheader("Try it")
    history = prompt_history(store, dataset.id, task)
    last_ms = history["ms_per_row"].dropna()
    speed = (f" At the last run's speed that takes about {last_ms.iloc[-1] * len(test) / 1000:,.0f} s."
             if len(last_ms) else "")
    model_label = models.BUNDLED_LABEL if model_name == models.BUNDLED else model_name
    demo_note = (f" The public demo scores the first {len(test):,} of {len(dataset.splits.test):,} test rows."
                 if len(test) < len(dataset.splits.test) else "")
    st.caption(f"Model: {model_label}. A quick look answers the first {QUICK_ROWS} test rows; a run scores all "
               f"{len(test)} test rows and saves the prompt as a new version.{speed}{demo_note}")
    left, right = st.columns(2)
    quick = left.button(f"Try on {QUICK_ROWS} rows", key="pb_try", disabled=spec is None, use_container_width=True)
    full = right.button("Run on the test set", key="pb_run", type="primary", disabled=spec is None,
                        use_container_width=True)
    try:
        if quick:
            with st.spinner(f"Answering {QUICK_ROWS} rows…"):
                result = run_arm(spec, test.head(QUICK_ROWS))
            st.session_state[QUICK_KEY] = {
                "spec": spec.to_dict(), "task": task, "ms_per_row": result.ms_per_example,
                "right": sum(p.strip() == r.strip() for p, r in zip(result.predictions, result.references)),
                "rows": result.predictions_frame(scores=False).to_dict("records")}
        if full:
            bar = ProgressBar(FIRST_BATCH)
            result = run_arm(spec, test, on_progress=bar)
            bar.done()
            version = keep_prompt_version(store, dataset.id, spec, result)
            st.session_state["pb_show_version"] = version.id
            st.success(f"Saved as **{version.name}**: {score_text(result.metrics)}. Its results are below.")
            history = prompt_history(store, dataset.id, task)
    except PvfError as error:  # a model that does not load, a prompt that does not fit: say so here
        st.error(error.message + (f"  \n{error.hint}" if error.hint else ""))
    latest_quick = st.session_state.get(QUICK_KEY)
    if spec is not None and latest_quick and latest_quick["spec"] == spec.to_dict():
        prompt_results.quick_look(latest_quick)

prompt_search.show(dataset, spec, loaded=lambda: resources.model(model_name),
                   run_winner=lambda winner, progress: run_arm(winner, test, on_progress=progress),
                   keep=lambda winner, result: keep_prompt_version(
                       store, dataset.id, winner, result,
                       name=f"v{len(store.list_prompt_versions(dataset.id)) + 1} (best prompt found: {winner.name()})"))

st.header("Results")
if history.empty:
    st.info("No prompt has been scored on this dataset yet: build one above and press “Run on the test set”.")
    st.stop()
versions = {v.id: v for v in store.list_prompt_versions(dataset.id)}
newest_first = list(versions)[::-1]


def describe(version_id: int) -> str:
    v = versions[version_id]
    return f"{v.name} · {score_text(v.metrics)}" if metric in v.metrics else v.name


shown = st.selectbox("Version", newest_first, key="pb_show_version", format_func=describe)
version = versions[shown]
run = store.get_run(version.run_id)
version_spec = PromptSpec.from_dict(version.spec)
prompt_results.scores(version.metrics, run.timings, task)
prompt_results.collapse_warning(version.metrics, version_spec)
left, right = st.columns([3, 1])
left.caption(f"{version_spec.name()} · calibration: {prompt_results.calibration_words(version.metrics.get('calibration'))}"
             f" · {run.timings.get('n_test', len(test))} test rows", help=prompt_results.CALIBRATION_HELP)
right.button("Edit this version", key="pb_edit", on_click=prompt_form.apply, args=(version_spec, dataset),
             use_container_width=True, help="Loads this version into the form above.")
with st.expander("Rename or delete this version"):
    def delete_version(version_id: int = version.id) -> None:
        manage.delete_version(store, version_id)
        st.session_state.pop("pb_show_version", None)

    rename_delete("pb", version.id, version.name, label="Name",
                  rename=lambda name, version_id=version.id: manage.rename_version(store, version_id, name),
                  delete=delete_version,
                  delete_help="Deletes this version, its kept answers and its export. It cannot be undone.")
result = kept_result(run.folder) if run.folder else None

answers_tab, rows_tab, sure_tab, history_tab, compare_tab = st.tabs(
    ["Answers", "Rows", "How sure is it?", f"All versions ({len(versions)})", "Compare two versions"])
with answers_tab:
    if result is None:
        st.info("The per-row answers of this version were not kept (it was saved without them).")
    else:
        prompt_results.answers(result, key=f"pb_v{version.id}")
with rows_tab:
    if result is not None:
        prompt_results.rows(result.predictions_frame(scores=False), task, key=f"pb_v{version.id}")

with sure_tab:
    n_rows = int(run.timings.get("n_test", len(test)))
    if task == "classification":
        low, high = wilson_interval(round(version.metrics["accuracy"] * n_rows), n_rows)
        st.markdown(f"**Which rows were tested.** On {n_rows} test rows the accuracy is known to within "
                    f"**{low:.0%} to {high:.0%}** (95% interval); more test rows narrow it.")
    variance = version.metrics.get("variance")
    if variance:
        prompt_results.noise(variance, task)
    if version_spec.n_examples and version_spec.selection in ("random", "balanced"):
        if not variance:
            st.markdown("**Which examples were drawn.** This version draws its examples at random: rerun it with other "
                        "draws to see how much the score depends on them.")
        if st.button(f"Rerun with {DRAWS} example draws ({DRAWS * len(test)} rows)", key="pb_noise",
                     help="Scores the same prompt with other randomly drawn examples. " + tip(PromptSpec, "seed")):
            bar = ProgressBar(FIRST_BATCH)
            try:
                spread = evaluate_seeds(Arm(version_spec.name(), version_spec, model=model_name), test, task=task,
                                        labels=dataset.labels or None, train=train, loaded=resources.model(model_name),
                                        calibration_rows=dataset.splits.validation,
                                        seeds=[version_spec.seed + i for i in range(DRAWS)], on_progress=bar)
            except PvfError as error:
                st.error(error.message + (f"  \n{error.hint}" if error.hint else ""))
            else:
                keep_variance(store, run.id, spread)
                st.rerun()
            finally:
                bar.done()
    elif not variance:
        st.markdown("**Which examples were drawn.** None are drawn at random here (zero-shot, hand-picked or "
                    "'similar'), so a redraw would give the same score.")

with history_tab:
    st.plotly_chart(version_history_figure(history, metric, second), key="pb_history")
    measured = history["spread"].notna().any()
    table = history.drop(columns=["run", "kept", "draws"] + ([] if measured else ["spread"]))
    for column in (metric, second, "ms_per_row"):
        table[column] = table[column].round(1)  # one rounding rule: what the metrics above show
    if measured:
        table["spread"] = [f"± {v:.1f}" if v == v else "" for v in table["spread"]]  # blank where not measured
        st.caption("± over draws: how much the score moved when the examples were drawn again (“Rerun with other "
                   "example draws” in “How sure is it?”); blank where that was not measured.")
    table = table.rename(columns=COLUMNS)
    st.dataframe(table, hide_index=True, key="pb_history_table", column_config={
        "version": st.column_config.NumberColumn("#", width="small"),
        "name": st.column_config.TextColumn(width="medium"),
        "created": st.column_config.DatetimeColumn(format="D MMM HH:mm"),
        **{label: st.column_config.NumberColumn(format="%.1f") for key, label in COLUMNS.items()
           if key in history and key != "spread"}})

with compare_tab:
    if len(versions) < 2:
        st.info("Score a second version to compare the two.")
    else:
        left, right = st.columns(2)
        a = left.selectbox("Before", newest_first, index=1, key="pb_cmp_a", format_func=describe)
        b = right.selectbox("After", newest_first, index=0, key="pb_cmp_b", format_func=describe)
        outcome = compare_versions(store, versions[a], versions[b], task)
        side = history.set_index("version").loc[[a, b], [metric, second, "prompt_tokens", "ms_per_row"]].T
        side.columns = ["before", "after"]
        side["change"] = side["after"] - side["before"]
        side.index = [COLUMNS[k] for k in side.index]
        st.dataframe(side, column_config={"before": st.column_config.NumberColumn(format="%.1f"),
                                          "after": st.column_config.NumberColumn(format="%.1f"),
                                          "change": st.column_config.NumberColumn(format="%+.1f")})
        changes = [prompt_results.plain(c) for c in outcome["changes"]]
        st.markdown("**What changed**\n" + ("\n".join(f"- {c}" for c in changes) if changes
                                            else "\nNothing: the same prompt."))
        try:
            diff = manage.prompt_text_diff(store, versions[a], versions[b])
        except PvfError as error:
            st.caption(f"The prompt texts could not be compared: {error.message}")
        else:
            st.markdown("**What the model reads**: lines starting with − were removed, + added.")
            st.code("\n".join(diff[2:]) if diff else "The same text.", language="diff")
        st.markdown("**Did it help?**\n" + "\n".join(f"- {sentence}" for sentence in outcome["sentences"]))
st.page_link("pages/compare.py", label="Compare your best prompt with fine-tuning", icon=":material/balance:")
