"""Fine-tuning wizard: check the data, pick a preset, see the estimate, train in the background, read the result.

A run is a background job (``pvf_core.jobs``): it survives reloads and closed tabs. The run on show is kept in
``?run=`` (``ui.state.opened_run``); a running or waiting run of this dataset is opened automatically.
"""

import time

import streamlit as st

from pvf_core import demo, jobs, manage
from pvf_core.data import plural
from pvf_core.errors import PvfError
from pvf_core.finetune import (DEFAULT_PRESET, PRESETS, LoraSettings, cap_rows, estimate, finetune_warnings,
                               preset_settings)
from pvf_core.store import Store
from ui import estimates, finetune_result, job_view, resources, settings_form, state
from ui.dataset import require_dataset
from ui.rename_delete import rename_delete

LEVEL_BOX = {"error": st.error, "warning": st.warning, "info": st.info}
STATUS_WORDS = {"done": "finished", "running": "training", "queued": "waiting", "failed": "failed",
                "cancelled": "cancelled", "created": "being set up"}
PRESET_KEY = "ftw_preset"  # the preset card last picked (its settings are pushed into the widgets)
KEY = "ftw"                # prefix of this page's widget keys

st.title("Fine-tuning wizard")
dataset = require_dataset()
store = Store()
limits = demo.limits()
model = state.selected_model()


def pick_preset(name: str) -> None:
    st.session_state[PRESET_KEY] = name
    settings_form.push_values(LoraSettings, preset_settings(name), KEY)


def describe(settings: LoraSettings) -> str:
    layers = {"all-linear": "adapter on every layer", "attention": "adapter on the attention layers"}.get(
        settings.target_modules, f"adapter on {settings.target_modules}")
    return (f"{plural(settings.epochs, 'pass', 'passes')} · rank {settings.rank} · "
            f"learning rate {settings.learning_rate:g} · {layers}")


def headline(metrics: dict) -> str:
    if "accuracy" in metrics:
        return f"accuracy {metrics['accuracy']:.1%}"
    if "chrf" in metrics:
        return f"chrF {metrics['chrf']:.1f}"
    return ""


# -- which run is on show: ?run=, else the one training now ------------------------------------------------
active = [r for r in jobs.active_jobs() if r.kind == "finetune" and r.dataset_id == dataset.id]
runs = store.list_runs(kind="finetune", dataset_id=dataset.id)
opened = state.opened_run()
if opened is not None and not any(r.id == opened for r in runs):
    if store.get_run(opened) is None:
        st.warning(f"There is no run #{opened} in this workspace (any more).")
    state.open_run(None)  # a stale link, or a run of another dataset
    opened = None
if opened is None and active:  # re-attach: the one training now (or the next to start)
    opened = active[0].id
    state.open_run(opened)

if runs:
    with st.expander(f"Your fine-tuning runs on this dataset ({len(runs)})", expanded=opened is None):
        numbers = {r.id: store.run_number(r) for r in runs}  # 1 for the first run on this dataset
        st.dataframe([{"run": f"#{numbers[r.id]}", "what": r.name, "status": STATUS_WORDS.get(r.status, r.status),
                       "test score": headline(r.metrics), "started": job_view.ago(r.created)} for r in runs],
                     hide_index=True)
        left, right = st.columns([4, 1], vertical_alignment="bottom")
        pick = left.selectbox("Run to show", runs, key="ftw_pick",
                              format_func=lambda r: f"#{numbers[r.id]} {r.name} ({STATUS_WORDS.get(r.status, r.status)})")
        if right.button("Open", key="ftw_open", use_container_width=True):
            state.open_run(pick.id)
            st.rerun()
        def delete_run(run_id: int = pick.id) -> None:
            manage.delete_run(store, run_id)
            if opened == run_id:
                state.open_run(None)

        rename_delete("ftw", pick.id, pick.name, label="Name of this run",
                      rename=lambda name, run_id=pick.id: manage.rename_run(store, run_id, name), delete=delete_run,
                      can_delete=pick.status not in ("running", "queued"),
                      delete_help="Deletes the run with its adapter and logs. It cannot be undone; cancel a running "
                                  "one first.")

setup = st.container() if opened is None else st.expander("Start another run: data, settings and estimate")
with setup:
    # -- 1. data ------------------------------------------------------------------------------------------
    st.header("1. Data")
    sizes = dataset.splits.sizes()
    most_train, most_test = limits.training_rows(sizes["train"]), limits.test_rows(sizes["test"])
    left, right = st.columns(2)
    train_rows = left.number_input(
        "Training rows to use", min_value=min(8, most_train), max_value=most_train, value=most_train,
        key="ftw_train_rows", help="The model learns from these rows (the first ones of the shuffled training "
        "split). Fewer rows train faster, for a first try; more rows usually give a better model.")
    test_rows = right.number_input(
        "Test rows to score", min_value=min(10, most_test), max_value=most_test, value=most_test,
        key="ftw_test_rows", help="The trained model is scored on these held-out rows. More rows give a surer "
        "score; use all of them to compare with your prompts on the Compare page.")
    if limits.enabled:
        st.caption(f"The public demo trains on at most {limits.max_train_rows:,} rows and scores at most "
                   f"{limits.max_test_rows:,}.")
    splits = cap_rows(dataset.splits, int(train_rows), int(test_rows))
    findings = finetune_warnings(splits)
    if not any(f.level in ("error", "warning") for f in findings):
        st.success(f"{plural(len(splits.train), 'training row')} and {plural(len(splits.validation), 'validation row')}"
                   f" to watch the training: enough to fine-tune.")
    for finding in findings:
        LEVEL_BOX[finding.level](finding.message)

    # -- 2. settings --------------------------------------------------------------------------------------
    st.header("2. Settings")
    st.caption("Start from a preset. Change single settings only if you know why: each one explains itself "
               "when you point at the ? next to it.")
    if PRESET_KEY not in st.session_state:
        st.session_state[PRESET_KEY] = DEFAULT_PRESET
    chosen = st.session_state[PRESET_KEY]
    bounds = {"epochs": (0.05, limits.max_epochs)} if limits.enabled else None
    for column, (name, preset) in zip(st.columns(len(PRESETS)), PRESETS.items()):
        with column.container(border=True):
            st.markdown(f"**{preset.name}**")
            st.write(preset.summary)
            st.caption(describe(preset_settings(name)))
            st.button("✓ Chosen" if name == chosen else f"Use {preset.name}", key=f"ftw_preset_{name}",
                      type="primary" if name == chosen else "secondary", on_click=pick_preset, args=(name,),
                      use_container_width=True)
    values = settings_form.settings_widgets(LoraSettings, preset_settings(chosen), KEY, advanced=False, columns=4,
                                            bounds=bounds)
    with st.expander("Advanced settings"):
        values |= settings_form.settings_widgets(LoraSettings, preset_settings(chosen), KEY, advanced=True,
                                                 columns=3, bounds=bounds)
    changed: dict = {}
    try:
        settings = LoraSettings(**values)
    except PvfError as error:
        st.error(str(error))
        settings = None
    if settings is not None:
        base = preset_settings(chosen).to_dict()
        changed = {k: v for k, v in settings.to_dict().items() if v != base[k]}
        if changed:
            left, right = st.columns([4, 1], vertical_alignment="center")
            left.caption(f"Changed from {PRESETS[chosen].name}: " + ", ".join(
                f"{k.replace('_', ' ')} {v} (preset: {base[k]})" for k, v in changed.items()))
            right.button(f"Back to {PRESETS[chosen].name}", key="ftw_reset", on_click=pick_preset, args=(chosen,))

    # -- 3. estimate and start ----------------------------------------------------------------------------
    st.header("3. Estimate")
    found = None
    if settings is None:
        st.info("Fix the setting above to see how long the run takes.")
    else:
        try:
            resources.tokenizer(model)  # loaded once per process, by one thread (transformers' first import)
            speed = estimates.training_speed(model)  # this machine's measured speed, not the model-size rule
            found = estimate(settings, splits, model, calibrate=False, token_seconds=speed)
        except PvfError as error:
            st.error(str(error))
    if found is not None:
        cols = st.columns(3)
        cols[0].metric("Time, about", job_view.duration(found.total_seconds),
                       help="Loading the model, training, the validation checks and scoring the test rows.")
        cols[1].metric("Peak memory, about", f"{found.peak_mb / 1024:.1f} GB",
                       help=f"{found.available_mb / 1024:.1f} GB are free on this machine now.")
        cols[2].metric("Training steps", f"{found.steps:,}",
                       help=f"{found.checks} validation checks on {found.validation_rows} rows along the way.")
        st.markdown(found.messages[0])
        if not found.fits:
            st.error(next(m for m in found.messages if "would not fit" in m))
        if not found.calibrated:
            left, right = st.columns([3, 1], vertical_alignment="center")
            left.caption("From this machine's scoring speed measured now and the number of tokens; training "
                         "steps of these settings were not timed yet. Measuring times them." if speed else
                         "A rough guess from the model's size and the number of tokens: this machine's speed "
                         "was not measured yet for this model.")
            took = jobs.remembered_duration(f"measure:{model}")  # what it really took here last time
            label = f"Measure (about {job_view.duration(found.calibration_seconds)})"
            if right.button(label, key="ftw_calibrate", use_container_width=True,
                            help="Loads the model for training in a new process and times a few training steps, "
                                 "the largest batch included, on this machine: its start-up and load as measured "
                                 "the last time, the steps at the speed measured now."
                                 + (f" It took {job_view.duration(took)} last time." if took else "")):
                with st.spinner("Loading the model and timing a few training steps on this machine…"):
                    began = time.monotonic()
                    try:
                        estimate(settings, splits, model, calibrate=True)
                    except PvfError as error:
                        st.error(str(error))
                    else:
                        jobs.remember_duration(f"measure:{model}", time.monotonic() - began)
                        st.rerun()

    force = False
    if found is not None and not found.fits:
        force = st.checkbox("Start anyway (it will probably run out of memory and fail)", key="ftw_force")
    blocked = (settings is None or found is None or any(f.level == "error" for f in findings)
               or (not found.fits and not force))
    if st.button("Start training", type="primary", key="ftw_start", disabled=blocked, icon=":material/play_arrow:"):
        name = (f"{PRESETS[chosen].name}{' (changed)' if changed else ''}, "
                f"{plural(len(splits.train), 'training row')}")
        try:
            demo.check_can_start_job()
            run_id = jobs.start_finetune(splits, settings, model=model, name=name, dataset_id=dataset.id)
        except PvfError as error:
            st.error(str(error))
        else:
            state.open_run(run_id)
            st.rerun()
    st.caption("Training runs in the background: you may leave this page or close the browser, and come back "
               "to see it.")


# -- 4. train and 5. result of the run on show ------------------------------------------------------------
if opened is not None:
    run = store.get_run(opened)
    st.header("4. Train")
    st.markdown(f"**Run #{store.run_number(run)}**: {run.name} · " + describe(LoraSettings.from_dict(run.settings)))
    status = job_view.follow(run.id, key=KEY, started=run.created)
    if status.status == "done":
        st.header("5. Result")
        finetune_result.show(store.get_run(opened), key=KEY, allow_merge=not limits.enabled)
        st.page_link("pages/compare.py", label="Compare it with your prompts", icon=":material/balance:")
