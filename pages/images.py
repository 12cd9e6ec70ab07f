"""Images: upload labelled images, check them, describe the labels for label prompting, then fine-tune and compare.

The archives' paths (saved in the workspace) are kept in ``img_train_path`` / ``img_test_path``; the comparison
on show is a background job whose id is in ``?images_run=`` (``ui.state.opened_run``), so a reload reopens it.
"""

from pathlib import Path

import streamlit as st

from pvf_core import jobs
from pvf_core.compare import Comparison, disagreements
from pvf_core.data import plural
from pvf_core.errors import PvfError
from pvf_core.images.arms import mapping_table, suggest_label_mapping
from pvf_core.images.commands import CAN_AND_CANNOT, start_image_comparison
from pvf_core.images.data import image_health_check, image_splits, read_image_zip, save_upload, thumbnail
from pvf_core.images.models import default_image_model, imagenet_class_names
from pvf_core.store import Store
from ui import comparison_view, job_view, state

LEVEL_BOX = {"error": st.error, "warning": st.warning, "info": st.info}
TRAIN, TEST = "img_train_path", "img_test_path"
RUN_KEY, RUN_PARAM = "images_run_id", "images_run"


@st.cache_data(show_spinner="Reading and checking the images…", max_entries=4)
def read(path: str):
    """Decode every image once per archive (the page reruns on each click)."""
    return read_image_zip(path, name=Path(path).name)


@st.cache_data(max_entries=2000)
def thumb(source: str, path: str) -> bytes:
    return thumbnail(source, path)


st.title("Images: prompt or fine-tune?")
st.markdown("The same question for pictures: can a pre-trained image model recognise your labels when you only "
            "**name** them, or does it need to **learn** from your labelled images?")

# -- 1. upload ---------------------------------------------------------------------------------------------
st.header("1. Your images")
st.caption("A zip with one folder per label (`cat/001.jpg`, `dog/002.png`), or with a CSV naming each image and "
           "its label. A second zip of test images is optional: without it, a fifth of the images is held out.")
left, right = st.columns(2)
for column, key, label in ((left, TRAIN, "Labelled images (zip)"), (right, TEST, "Test images (zip, optional)")):
    upload = column.file_uploader(label, type=["zip"], key=f"{key}_upload")
    if upload is not None:
        st.session_state[key] = str(save_upload(upload.getvalue(), upload.name))
train_path, test_path = st.session_state.get(TRAIN), st.session_state.get(TEST)
if not train_path:
    st.info("Upload a zip of labelled images to start.")
    st.stop()

try:
    train_set = read(train_path)
    test_set = read(test_path) if test_path else None
    splits = image_splits(train_set, test_set)
except PvfError as error:
    st.error(str(error))
    st.stop()

# -- 2. health check ---------------------------------------------------------------------------------------
st.header("2. Health check")
sizes = splits.sizes()
st.markdown(f"**{plural(sum(sizes.values()), 'image')}** in **{plural(len(splits.labels), 'label')}**: "
            f"{sizes['train']} to learn from, {sizes['validation']} to stop training at the right time, "
            f"{sizes['test']} to score every arm on.")
for warning in image_health_check(splits, train_set.notes + (test_set.notes if test_set else [])):
    LEVEL_BOX[warning.level](warning.message)
with st.expander("A few images per label", expanded=True):
    for label in splits.labels:
        rows = splits.train[splits.train["label"] == label].head(6)
        st.image([thumb(s, p) for s, p in zip(rows["source"], rows["text"])], width=72, caption=list(rows["text"]))

# -- 3. label prompting ------------------------------------------------------------------------------------
st.header("3. Label prompting: name what to look for")
st.markdown("The bundled model knows ImageNet's 1000 everyday things. Each label is matched to those things by "
            "name; describe a label in other words (comma-separated) when the match is missing or wrong.")
st.warning(CAN_AND_CANNOT, icon=":material/info:")
names = imagenet_class_names()
descriptions = {}
columns = st.columns(3)
for i, label in enumerate(splits.labels):
    text = columns[i % 3].text_input(f"'{label}' looks like", key=f"img_desc_{label}", placeholder=label)
    if text.strip():
        descriptions[label] = text.strip()
mapping = suggest_label_mapping(splits.labels, names, descriptions)
st.dataframe(mapping_table(mapping, names), hide_index=True)
describe = "; ".join(f"{label}={words}" for label, words in descriptions.items())

# -- 4. fine-tune and compare ------------------------------------------------------------------------------
st.header("4. Fine-tune and compare")
st.markdown("Trains a linear head on the model's features of your training images (seconds once the features are "
            "computed), then scores label prompting and the fine-tuned model on the same test images and "
            "recommends one. Computing the features takes about a minute per 500 images on a laptop.")
if st.button("Fine-tune and compare", key="img_run", type="primary", icon=":material/play_arrow:"):
    try:
        state.open_run(start_image_comparison(train_path, test_path, describe=describe, model=default_image_model()),
                       RUN_KEY, RUN_PARAM)
    except PvfError as error:
        st.error(str(error))

run_id = state.opened_run(RUN_KEY, RUN_PARAM)
if run_id is None:
    st.stop()
status = job_view.follow(run_id, key="img", loss_chart=True, cancel_label="Cancel",
                         done_text="Finished: both arms scored on the test images.")
if status.status != "done":
    st.stop()
folder = jobs.run_folder(run_id)
comparison = Comparison.load(folder)
comparison_view.show(comparison, folder)

st.subheader("Images the arms disagree on")
run = Store().get_run(run_id)
source = (run.settings.get("test_images") or run.settings.get("images")) if run else None
table = disagreements(comparison.results).head(24)
if source and len(table):
    arms = [r.arm for r in comparison.results]
    captions = [f"{row['expected']} · " + " · ".join(f"{a.split(' (')[0]}: {row[a]}" for a in arms)
                for _, row in table.iterrows()]
    st.image([thumb(source, path) for path in table["text"]], width=96, caption=captions)
elif not len(table):
    st.success("The arms agree on every test image.")
