"""Compare: prompt versions and fine-tuned models on the same test rows, and which one to use."""

import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import streamlit as st

from pvf_core import demo, jobs
from pvf_core.compare import (Comparison, comparable_runs, comparison_from_runs, dataset_label_counts,
                              start_comparison)
from pvf_core.errors import PvfError
from pvf_core.store import Store
from ui import comparison_view, estimates, job_view, state
from ui.dataset import require_dataset

st.title("Compare prompting and fine-tuning")
shared = demo.shared_comparison(st.query_params.get("shared"))
if shared is not None:  # a link someone shared: a read-only copy, never their workspace (nor this visitor's)
    st.info("A comparison someone shared with you: a read-only copy. Changing the priorities below only changes "
            "what you see; downloads work as usual.", icon=":material/visibility:")
    comparison_view.show(Comparison.load(shared), Path(tempfile.mkdtemp(prefix="pvf-shared-")))
    st.stop()
dataset = require_dataset()
store = Store()
limits = demo.limits()


def open_comparison(run_id: int) -> None:
    st.query_params["comparison"] = str(run_id)  # a permalink: reloading or sharing the URL reopens it
    st.session_state["comparison_id"] = run_id


running = [r for r in jobs.active_jobs() if r.kind == "compare" and r.dataset_id == dataset.id]
finished = store.list_runs(kind="compare", dataset_id=dataset.id, status="done")
chosen = st.session_state.get("comparison_id") or (int(st.query_params["comparison"])
                                                   if st.query_params.get("comparison", "").isdigit() else None)
if chosen is None and finished:  # the newest finished comparison of this dataset
    chosen = finished[0].id
    open_comparison(chosen)

SEARCH_SECONDS = 120
with st.expander("Run the standard comparison", expanded=chosen is None and not running):
    st.markdown("Scores a zero-shot prompt, a few-shot prompt and a LoRA fine-tuned model on the same test rows, "
                "then recommends one.")
    left, middle, right = st.columns(3)
    shots = left.multiselect("Prompt arms (examples shown)", [0, 1, 2, 4, 8], default=[0, 4], key="cmp_shots")
    n_train = limits.training_rows(len(dataset.splits.train))
    max_train = middle.number_input("Training rows to use", 8, max(8, n_train), min(n_train, 500), key="cmp_max_train",
                                    help="Fine-tuning and the prompt examples use the first rows of the training split.")
    n_test = limits.test_rows(len(dataset.splits.test))
    limit = right.number_input("Test rows to score", 10, max(10, n_test), min(n_test, 200), key="cmp_limit",
                               help="More rows give a surer answer; scores on 200 rows move by about ±3 points.")
    if limits.enabled:
        st.caption(f"The public demo trains on at most {limits.max_train_rows:,} rows and scores at most "
                   f"{limits.max_test_rows:,}.")
    curve = st.checkbox("Also draw a learning curve (trains on 16, 64, 256... rows; several times slower)",
                        key="cmp_curve")
    search = st.checkbox(f"Also find the best prompt ({SEARCH_SECONDS // 60} minutes more): searched on the validation "
                         "rows and scored on the same test rows, so fine-tuning is compared with prompting at its best",
                         key="cmp_search")
    if shots and not running:
        estimates.comparison_estimate(dataset.id, state.selected_model(), shots, max_train, limit, curve,
                                      demo.capped_epochs("balanced"))
        if search:
            st.caption(f"Add about {SEARCH_SECONDS // 60} minutes for the prompt search (its time budget).")
    if st.button("Run the standard comparison", type="primary", disabled=bool(running) or not shots, key="cmp_run"):
        try:
            demo.check_can_start_job()
            run_id = start_comparison(dataset, model=state.selected_model(), shots=sorted(shots), max_train=int(max_train),
                                      limit=int(limit), learning_curve=curve, epochs=demo.capped_epochs("balanced"),
                                      search_seconds=SEARCH_SECONDS if search else None)
        except PvfError as error:
            st.error(str(error))
        else:
            st.rerun()

for run in running:
    st.subheader(f"Running: {run.name}")
    job_view.follow(run.id, key="cmp", loss_chart=False, cancel_label="Cancel the comparison",
                    done_text="Finished: every arm is scored.")

with st.expander("Compare runs you already made"):
    runs = comparable_runs(store, dataset.id)
    if len(runs) < 2:
        st.info("Score a prompt in the Prompt builder and fine-tune in the wizard (on the full test split): "
                "their runs show up here.")
    else:
        picked = st.multiselect("Runs", runs, format_func=lambda r: f"#{r.id} {r.kind}: {r.name}", key="cmp_runs")
        if st.button("Compare these", disabled=len(picked) < 2, key="cmp_from_runs"):
            try:
                comparison = comparison_from_runs(picked, task=dataset.task, labels=dataset.labels,
                                                  dataset=dataset.name,
                                                  label_counts=dataset_label_counts(dataset.splits))
            except PvfError as error:
                st.error(str(error))
            else:
                run_id = store.add_run("compare", dataset_id=dataset.id, name="comparison of stored runs",
                                       status="done", folder=str(jobs.run_folder(0).parent))
                folder = jobs.run_folder(run_id)
                store.update_run(run_id, folder=str(folder))
                comparison.save(folder)
                open_comparison(run_id)
                st.rerun()

if chosen is not None:
    run = store.get_run(chosen)
    if run is None or not (Path(run.folder) / "comparison.json").is_file():
        st.warning("That comparison is not in this workspace (any more).")
    else:
        comparison_view.show(Comparison.load(run.folder), Path(run.folder))
        estimates.predicted_against_actual(run.timings)
        if demo.enabled():
            if st.button("Share a read-only copy", key="cmp_share", icon=":material/share:",
                         help="Makes a copy of this comparison with a link of its own. Whoever opens the link "
                              "sees this comparison only, never your workspace."):
                st.session_state["cmp_shared"] = (chosen, demo.share_comparison(run.folder))
            made = st.session_state.get("cmp_shared")
            if made and made[0] == chosen:
                parts = urlsplit(st.context.url or "")
                link = urlunsplit((parts.scheme, parts.netloc, "/compare", f"shared={made[1]}", ""))
                st.success("Anyone with this link sees a read-only copy of this comparison:")
                st.code(link, language=None)
