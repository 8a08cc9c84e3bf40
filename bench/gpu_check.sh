#!/usr/bin/env bash
# GPU check (issue 14): on a machine with a CUDA device, run the edit contract and the quick-compare
# recipe in bfloat16 on the GPU, and once more with device_map="auto", then print a short table.
#   bench/gpu_check.sh            (needs ./dev setup to have run: .venv with repedit and the packaged model)
# Results: bench/gpu_check.md (+ logs and the runs under runs/gpu-check-*). Never part of ./dev test.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run ./dev setup first"; exit 2; }
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" || {
  echo "no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__)')): a CUDA build of torch is needed"; exit 3; }
"$PY" -m repedit.cli models --prepare smollm2-135m >/dev/null

declare -A RESULT SECONDS_TAKEN
step() {   # step NAME COMMAND...
  local name=$1; shift
  local t0=$(date +%s)
  if "$@" > "bench/gpu_check.$name.log" 2>&1; then RESULT[$name]=pass; else RESULT[$name]="FAIL (bench/gpu_check.$name.log)"; fi
  SECONDS_TAKEN[$name]=$(( $(date +%s) - t0 ))
}
recipe() {  # recipe DTYPE DEVICE_MAP -> a quick-compare variant on the GPU
  local out=runs/gpu-check-$1-$2.toml; mkdir -p runs
  sed -e "s/^id = \"smollm2-135m\"/id = \"smollm2-135m\"\ndtype = \"$1\"\ndevice_map = \"$2\"/" \
      -e "s/^name = \"quick-compare\"/name = \"gpu-check-$1-$2\"/" recipes/quick-compare.toml > "$out"
  echo "$out"
}

# the contract (every registered method and the ablations) on the GPU, bf16 cases and float32 for reference
step contract-bf16-cuda env REPEDIT_TEST_DEVICE=cuda "$PY" -m pytest -q -x tests/test_edit_contract.py -k bfloat16 -p no:cacheprovider
step contract-fp32-cuda env REPEDIT_TEST_DEVICE=cuda "$PY" -m pytest -q -x tests/test_edit_contract.py -k float32 -p no:cacheprovider
step dtypes-cuda env REPEDIT_TEST_DEVICE=cuda "$PY" -m pytest -q -x tests/test_dtypes.py -p no:cacheprovider
# the quick-compare recipe in bf16 on one GPU (device_map "cuda" via balanced placement) and with device_map auto
step quick-compare-bf16-auto "$PY" -m repedit.cli run "$(recipe bfloat16 auto)" --force
step quick-compare-bf16-balanced "$PY" -m repedit.cli run "$(recipe bfloat16 balanced)" --force

{
  echo "| check | result | seconds |"; echo "|---|---|---|"
  for k in contract-bf16-cuda contract-fp32-cuda dtypes-cuda quick-compare-bf16-auto quick-compare-bf16-balanced; do
    echo "| $k | ${RESULT[$k]} | ${SECONDS_TAKEN[$k]} |"; done
  "$PY" - <<'PY'
import json, pathlib
rows = []
for run in sorted(pathlib.Path("runs").glob("gpu-check-*/report.json")):
    rep = json.loads(run.read_text())
    for row in rep["comparison"]:
        rows.append(f"| {run.parent.name} | {row['edit']} | {row['forget_before']:.3f} | {row['forget_after']:.3f} "
                    f"| {row['neighbours_after']:.3f} | {row['perplexity_after']:.2f} | {row['seconds']:.1f} |")
if rows:
    print("\n| run | edit | forget before | after | neighbours | ppl | edit s |\n|---|---|---|---|---|---|---|")
    print("\n".join(rows))
PY
  "$PY" -c "import torch; print(f'\ndevice: {torch.cuda.get_device_name(0)}, torch {torch.__version__}')"
} | tee bench/gpu_check.md
