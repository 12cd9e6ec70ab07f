"""The fine-tuning wizard's estimate before "Measure" comes from this machine's measured speed (the one the
comparison estimate measures), and "Measure" is labelled with what the calibration takes (AppTest, tiny model)."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from apptest_support import run, texts
from conftest import ROOT
from pvf_core.compare import estimate as est
from pvf_core.finetune import estimates as fte
from pvf_core.store import workspace_dir

WIZARD = "pages/finetune_wizard.py"


@pytest.fixture(autouse=True)
def tiny_app(workspace, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("PVF_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("PVF_THREADS", "1")
    monkeypatch.chdir(ROOT)
    from ui import estimates

    estimates._training_speed.clear()
    yield tiny_model_dir


def wizard() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    run(at)
    run(at.button(key="home_use").click())
    at.switch_page(WIZARD)
    return run(at)


def time_metric(at: AppTest) -> str:
    return next(m.value for m in at.metric if m.label == "Time, about")


def measure_label(at: AppTest) -> str:
    return at.button(key="ftw_calibrate").label


def test_without_a_kept_speed_the_wizard_measures_it_and_keeps_it(tiny_app):
    at = wizard()
    kept = est.remembered_speed(str(tiny_app), est.SPEED_MAX_AGE_S)
    assert kept is not None and kept.ms_per_token > 0  # measured on the page, kept for the next estimate
    assert any(c.startswith("From this machine's scoring speed measured now") for c in texts(at.caption))
    assert measure_label(at).startswith("Measure (about ")


def test_the_estimate_follows_the_kept_speed_and_measure_its_measured_start_up(tiny_app):
    model = str(tiny_app)
    est.remember_speed(model, est.Speed(ms_per_token=0.01, ms_per_query=0.0))
    fast = wizard()
    fast_time, fast_label = time_metric(fast), measure_label(fast)

    from ui import estimates

    estimates._training_speed.clear()
    est.remember_speed(model, est.Speed(ms_per_token=500.0, ms_per_query=0.0))  # 50,000x slower
    slow = wizard()
    assert time_metric(slow) != fast_time
    assert "h" in time_metric(slow) or "min" in time_metric(slow)
    assert measure_label(slow) != fast_label  # its steps at the measured speed

    # a calibration measured here before: its start-up and load replace the rules in the label
    estimates._training_speed.clear()
    est.remember_speed(model, est.Speed(ms_per_token=0.01, ms_per_query=0.0))
    (workspace_dir("calibration") / fte.STARTUP_FILE).write_text(
        json.dumps({model: {"start_seconds": 300.0, "load_seconds": 10.0}}))
    measured = wizard()
    assert measure_label(measured) == "Measure (about 5 min)"  # 300 + 10 + steps of a tiny model
    assert fast_label != measure_label(measured)
