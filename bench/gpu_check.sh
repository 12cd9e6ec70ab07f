#!/usr/bin/env bash
# The one prepared GPU check (issue 16): run it on a machine with an NVIDIA GPU and a CUDA build of torch.
#
#   bash bench/gpu_check.sh                   # datasets from ../shared/datasets (or PVF_DATASETS=DIR)
#   PYTHON=/path/to/python bash bench/gpu_check.sh
#
# 1. bench/gpu_check.py: the bundled model on CUDA through the CLI: prompt, finetune (500 rows), compare on
#    SST-2; accuracy, ms per row, examples/s and peak GPU memory.
# 2. bench/bench_prompt.py and bench/bench_finetune.py against their baselines, on the GPU.
# Results go to bench/results/ (or OUT=DIR). About 5-10 minutes on one modern GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-bench/results}
DATA=${PVF_DATASETS:-}
for candidate in "$DATA" ../shared/datasets shared/datasets; do
    if [ -n "$candidate" ] && [ -f "$candidate/sst2_train.csv" ]; then DATA=$candidate; break; fi
done
[ -f "$DATA/sst2_train.csv" ] || { echo "no sst2_train.csv: set PVF_DATASETS=DIR" >&2; exit 2; }
export PVF_HOME=${PVF_HOME:-$(mktemp -d /tmp/pvf-gpu-check.XXXX)}
export TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" bench/gpu_check.py --data "$DATA" --out "$OUT"
"$PY" bench/bench_prompt.py --train "$DATA/sst2_train.csv" --test "$DATA/sst2_test.csv" --rows 200 \
    --baseline-rows 50 --rounds 2 --results-dir "$OUT"
"$PY" bench/bench_finetune.py --train "$DATA/sst2_train.csv" --test "$DATA/sst2_test.csv" --train-rows 500 \
    --test-rows 200 --json "$OUT/bench_finetune_gpu.json"
