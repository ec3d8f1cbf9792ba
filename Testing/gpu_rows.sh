#!/usr/bin/env bash
# The GPU rows of README "Performance" and "Fine-tuning", measured in one short run on a machine
# with a CUDA GPU (CI has none): device detection, the per-patch benchmark with CUDA's allocator
# peak per DF, end to end against plain TotalSegmentator on its 'gpu', the fine-tuning goal
# recipe on CUDA, and nnU-Net's multi-GPU path where only one GPU is visible.
#
#   Testing/gpu_rows.sh OUTDIR CT [SECONDS]
#
# Each step has its own time limit and writes to OUTDIR/gpu-rows.log, so a step that fails or runs
# out of time leaves the others' results. SECONDS (default 290) bounds the whole run: steps that
# would start after it are skipped and say so.
set -u
out=${1:?usage: gpu_rows.sh OUTDIR CT [SECONDS]}
ct=${2:?usage: gpu_rows.sh OUTDIR CT [SECONDS]}
budget=${3:-290}
mkdir -p "$out"
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here/TuckerSegment${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HOME="$(mktemp -d)"
export TUCKERSEGMENT_CACHE="$HOME/cache"
py=${PYTHON:-python3}
log="$out/gpu-rows.log"
began=$(date +%s)

step() {  # step NAME SECONDS COMMAND…: run it with a limit, its output and exit status in the log
    local name=$1 limit=$2 left
    shift 2
    left=$((budget - ($(date +%s) - began)))
    if ((left < 20)); then
        echo "== $name: skipped (the run's ${budget} s are spent)" | tee -a "$log"
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit} s): $*" | tee -a "$log"
    local start=$(date +%s)
    timeout "$limit" "$@" >>"$log" 2>&1
    echo "== $name: exit $? after $(($(date +%s) - start)) s" | tee -a "$log"
}

step nvidia-smi 10 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step info 60 "$py" -m TuckerSegmentLib info --json
grid=(--df 0.9 0.7 0.5 0.3 0.1 --repeats 10 --json)
step benchmark-3mm-auto 75 "$py" -m TuckerSegmentLib benchmark --model 3mm --device cuda "${grid[@]}"
step benchmark-1.5mm-auto 75 "$py" -m TuckerSegmentLib benchmark --model 1.5mm --device cuda "${grid[@]}"
step benchmark-3mm-fp32 60 "$py" -m TuckerSegmentLib benchmark --model 3mm --device cuda \
    --precision fp32 "${grid[@]}"
step e2e-fast 90 "$py" "$here/Testing/e2e_speed.py" --device cuda --ct "$ct" --repeats 1
step finetune-3mm 150 "$py" "$here/Testing/finetune_curve.py" --device cuda --df 0.3 --epochs 30 \
    --labels original --augmentation none --lr 3e-3 --workers 4 -o "$out/finetune-gpu"
dataset="$HOME/two-phantoms"
step dataset 30 "$py" -c "import sys; from pathlib import Path; sys.path.insert(0, '$here/Testing');
from finetune_curve import write_dataset; write_dataset(Path('$dataset'), '3mm', 2)"
step finetune-gpus-2 30 "$py" -m TuckerSegmentLib finetune --model 3mm --dataset "$dataset" \
    -o "$HOME/two-gpus" --device cuda --gpus 2 --epochs 1 \
    --weights-dir "$here/TuckerSegment/TuckerSegmentLib/demo/models"
step e2e-full 200 "$py" "$here/Testing/e2e_speed.py" --device cuda --ct "$ct" --full --repeats 1
echo "== done after $(($(date +%s) - began)) s" | tee -a "$log"
