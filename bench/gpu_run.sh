#!/usr/bin/env bash
# One device call of bench/gpu.py (see its docstring for the wheels in
# .whl): the device tool's command `bash bench/gpu_run.sh [BUDGET_S] [ARGS]`
# with carry [".whl"] and timeout_s 600. Installs the carried wheels
# offline, runs the bench with a time budget (no job starts after
# BUDGET_S seconds, default 420) and writes the log and the JSON rows to
# $OUT (they come back even if the call is stopped at its limit).
set -o pipefail
budget=${1:-420}
shift || true
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
  2>&1 | tee "$out/gpu.log"
python3 bench/gpu.py --budget "$budget" --json "$out/gpu.json" "$@" 2>&1 \
  | grep -v -e "UserWarning" -e "warnings.warn" | tee -a "$out/gpu.log"
