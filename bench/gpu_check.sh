#!/usr/bin/env bash
# The CUDA paths in one short run, for a session lent a GPU machine (the device
# tool): training on the GPU in float32, bf16 and fp16 (gradient scaler), DDP under
# torchrun (nccl, one process per GPU), an exact resume after SIGKILL, evaluation,
# and run_classifier on the GPU, alone and under torchrun; each result checked. On
# a small generated demo project (the CPU steps of make demo make it).
#
#   on the device:  bash bench/gpu_check.sh       (a few minutes on one H200)
#   here, to check the script itself on CPU (2 gloo processes):
#                   DEVICE=cpu PYTHON=.venv/bin/python bash bench/gpu_check.sh
#
# One "ok: ..." line per check, "GPU CHECK PASSED" at the end; every command's
# output goes to $OUT/gpu_check.log (the device tool's folder) or $GPU_CHECK_DIR.
set -euo pipefail
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
W=${GPU_CHECK_DIR:-/tmp/gpu_check}
LOG=${OUT:-$W}/gpu_check.log
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
rm -rf "$W"; mkdir -p "$W" "$(dirname "$LOG")"; : > "$LOG"
ok() { echo "ok: $*"; }
run() { echo "+ $*" >> "$LOG"; "$@" >> "$LOG" 2>&1 || { echo "FAILED: $*"; tail -40 "$LOG"; exit 1; }; }
if [ "$DEVICE" = cuda ]; then
  nvidia-smi -L
  $PY -c 'import torch; assert torch.cuda.is_available(), "no CUDA"
print("torch", torch.__version__, torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())'
  NPROC=$($PY -c 'import torch; print(torch.cuda.device_count())')
  ENVS=()
else
  NPROC=2; ENVS=(CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=1)
fi

run env DEMO_DIR="$W/demo" DEMO_LOCATIONS=8 DEMO_SEQUENCES=8 DEMO_NEW_IMAGES=12 \
    DEMO_WIDTH=800 DEMO_HEIGHT=600 DEMO_EPOCHS=2 DEMO_IMAGE_SIZE=64 PYTHON="$PY" \
    "${ENVS[@]}" bash demo/run_demo.sh
ok "the demo's steps at small size (training, evaluation, run_classifier on $DEVICE)"
B=$W/demo/base_logdir; C=$W/demo/crops; N=$W/demo/new_photos
TRAIN=(classification.train_classifier "$B" "$C" --model-name resnet18 --image-size 64
       --epochs 2 --batch-size 32 --lr 1e-3 --num-workers 0 --seed 0 --label-weighted)
one_run() { dirname "$(ls "$1"/*/params.json | head -1)"; }
check_run() {  # a finished run: a TorchScript export and finite metrics
  local r; r=$(one_run "$1")
  ls "$r"/ckpt_*_compiled.pt > /dev/null
  $PY -c 'import sys, math, pandas as pd
m = pd.read_csv(sys.argv[1] + "/overall_metrics.csv")
assert m["acc_top1"].map(math.isfinite).all(), m
print(m.to_string())' "$r" >> "$LOG"
}

AMPS=(bf16 fp16); [ "$DEVICE" = cuda ] || AMPS=(bf16)      # fp16 needs CUDA
for amp in "${AMPS[@]}"; do
  run env "${ENVS[@]}" $PY -m "${TRAIN[@]}" --logdir "$W/amp_$amp" --amp "$amp"
  check_run "$W/amp_$amp"
  ok "training with --amp $amp"
done

run env "${ENVS[@]}" $PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" \
    -m "${TRAIN[@]}" --logdir "$W/ddp"
check_run "$W/ddp"
$PY -c 'import json, sys; p = json.load(open(sys.argv[1] + "/params.json"))
assert p["world_size"] == int(sys.argv[2]), p["world_size"]' "$(one_run "$W/ddp")" "$NPROC"
ok "DDP training under torchrun, $NPROC process(es) ($( [ "$DEVICE" = cuda ] && echo nccl || echo gloo))"

# exact resume: killed with SIGKILL in epoch 1 at batch 3, resumed, equal to uninterrupted
run env "${ENVS[@]}" CUBLAS_WORKSPACE_CONFIG=:4096:8 $PY -m "${TRAIN[@]}" --logdir "$W/whole" \
    --checkpoint-every 2
echo "+ killed run" >> "$LOG"
env "${ENVS[@]}" CUBLAS_WORKSPACE_CONFIG=:4096:8 CT_TRAIN_KILL_AT=1:3 $PY -m "${TRAIN[@]}" \
    --logdir "$W/killed" --checkpoint-every 2 >> "$LOG" 2>&1 && { echo "FAILED: not killed"; exit 1; }
run env "${ENVS[@]}" CUBLAS_WORKSPACE_CONFIG=:4096:8 $PY -m classification.train_classifier \
    "$B" "$C" --logdir "$W/unused" --resume "$(one_run "$W/killed")" --num-workers 0
$PY - "$(one_run "$W/whole")" "$(one_run "$W/killed")" "$DEVICE" >> "$LOG" 2>&1 <<'PYEOF' || { echo "FAILED: resume differs"; tail -5 "$LOG"; exit 1; }
import sys, torch
a, b = (torch.load(f'{r}/ckpt_last.pt', weights_only=True, map_location='cpu')
        for r in sys.argv[1:3])
worst = max(float((v.float() - b['model'][k].float()).abs().max()) for k, v in a['model'].items())
print('largest weight difference, resumed vs uninterrupted:', worst)
# exact on CPU (as the tests check); on CUDA, cuDNN's nondeterministic kernels may differ
assert worst == 0.0 if sys.argv[3] == 'cpu' else worst < 1e-2, worst
PYEOF
ok "resume after SIGKILL gives the uninterrupted model ($(tail -1 "$LOG" | awk '{print $NF}'))"

R=$(one_run "$W/amp_bf16")
BEST=$(ls "$R"/ckpt_*_compiled.pt | head -1)
run env "${ENVS[@]}" $PY -m classification.evaluate_model "$R/params.json" "${BEST%_compiled.pt}.pt" \
    --output-dir "$W/eval" --splits test
ok "evaluate_model"
run env "${ENVS[@]}" $PY -m classification.run_classifier "$BEST" "$N/crops" "$W/one.csv.gz" \
    --batch-size 32 --num-workers 2
run env "${ENVS[@]}" $PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" \
    -m classification.run_classifier "$BEST" "$N/crops" "$W/multi.csv.gz" --batch-size 32 \
    --num-workers 2
$PY - "$W/one.csv.gz" "$W/multi.csv.gz" >> "$LOG" 2>&1 <<'PYEOF' || { echo "FAILED: run_classifier outputs differ"; exit 1; }
import sys, pandas as pd
a, b = (pd.read_csv(p).sort_values('path').reset_index(drop=True) for p in sys.argv[1:])
assert list(a['path']) == list(b['path']) and len(a) > 0
diff = (a.drop(columns='path') - b.drop(columns='path')).abs().to_numpy().max()
print('run_classifier, torchrun vs one process: largest difference', diff)
assert diff < 1e-3, diff
PYEOF
ok "run_classifier alone and under torchrun agree"
echo "GPU CHECK PASSED"
