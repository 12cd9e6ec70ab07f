"""PvF Studio's library: should you prompt a language model or fine-tune it? Measure both.

The public API, one module per concept (importing ``pvf_core`` itself is cheap; torch loads on first use)::

    from pvf_core.data import read_csv, suggest_mapping, labeled_frame, make_splits, health_check
    from pvf_core.models import load_model                      # "bundled", a folder, or a hub id
    from pvf_core.prompting import PromptSpec, lint, prompt_budget
    from pvf_core.evaluate import Arm, evaluate                 # the one harness for every arm
    from pvf_core.finetune import LoraSettings, train_lora      # LoRA fine-tuning
    from pvf_core.jobs import start_job, job_status             # background jobs
    from pvf_core.compare import run_comparison                 # both arms, significance, costs, advice
    from pvf_core.report import write_report                    # HTML / CSV / JSON exports

The same jobs run headless with ``python -m pvf_core --help``.
"""

__version__ = "0.1.0"
