#!/usr/bin/env bash
# One check of medboost on a GPU, in under 10 minutes: the tests of the CUDA paths, `medboost bench` at the
# paper's 2D shape (ViT-S/16 at 224 + a LLaMA-7B-shaped random layer, batch 128) with MFU against the card's
# measured bf16 matmul rate, and a short BreastMNIST run with the paper's 2D recipe (random weights: no hub here).
# Its figures are written as records in benchmarks/records.yaml's layout, named by the card.
#
#   benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]      (OUT_DIR: $OUT, else benchmarks/gpu-check-out)
#
# --dry-run (or MEDBOOST_GPU_CHECK_DRY_RUN=1) runs every step at a tiny size on the CPU in well under a minute:
# the test selection is collected (the suite runs those tests itself), bench measures a 1-block ViT, and the run
# trains one epoch of the CPU preset. Settings: PYTHON (default .venv/bin/python where it exists, else python3), MEDBOOST_DATA (a folder with
# breastmnist.npz; without it a stand-in of BreastMNIST's shape is written, and the AUC means nothing),
# GPU_CHECK_EPOCHS (default 5). Exit status: 0 when every step passed; the records hold what did.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=${MEDBOOST_GPU_CHECK_DRY_RUN:-0}
if [[ "${1:-}" == "--dry-run" ]]; then dry=1; shift; fi
out=${1:-${OUT:-benchmarks/gpu-check-out}}
py=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
mkdir -p "$out"
results="$out/results"
rm -rf "$results"
failed=()
step() {  # step NAME SECONDS COMMAND...: run it with a time limit, its output to $out/NAME.log and the terminal
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  local code=${PIPESTATUS[0]}
  [[ $code == 0 ]] || { echo "== $name failed (exit $code)"; failed+=("$name"); }
}

data=${MEDBOOST_DATA:-}
sets=()
if [[ -z "$data" || ! -f "$data/breastmnist.npz" ]]; then
  data="$out/data"
  if [[ $dry == 1 ]]; then n=(48 16 24); else n=(546 78 156); fi
  "$py" benchmarks/gpu_records.py fake-data "$data" --n "${n[@]}" >/dev/null
  sets+=(--set data.verify=false)
fi

if [[ $dry == 1 ]]; then
  tiny=(--preset cpu --set data.verify=false --set backbone.dim=32 --set backbone.depth=1 --set backbone.heads=2
        --set train.batch_size=16 --set train.eval_batch_size=64 --set train.warmup_epochs=0)
  tests=("$py" -m pytest -m gpu --collect-only -q -p no:cacheprovider tests/test_gpu.py)
  bench=("$py" -m medboost_cli bench breast "${tiny[@]}" --booster rllm --warmup 0 --steps 1)
  run=("$py" -m medboost_cli train breast "${tiny[@]}" --set train.epochs=1)
else
  tests=("$py" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py)
  bench=("$py" -m medboost_cli bench --shape 2d-224 --batch 128 --booster none --booster rllm --warmup 3 --steps 10)
  run=("$py" -m medboost_cli train breast --set backbone.pretrained=false --set booster.llm=random:llama-7b
       --set "train.epochs=${GPU_CHECK_EPOCHS:-5}" --set train.warmup_epochs=1 "${sets[@]}")
fi

step tests 240 "${tests[@]}"
step bench 240 "${bench[@]}" --results-dir "$results"
step run 300 "${run[@]}" --data-dir "$data" --results-dir "$results" --quiet
step records 60 "$py" benchmarks/gpu_records.py records "$results" "$out/gpu_records.yaml" --tests "$out/tests.log" \
  --bench-command "medboost ${bench[*]:3}" --run-command "medboost ${run[*]:3}"

if (( ${#failed[@]} )); then
  echo "gpu_check: failed: ${failed[*]} (logs in $out)"
  exit 1
fi
echo "gpu_check: all steps passed; records in $out/gpu_records.yaml"
