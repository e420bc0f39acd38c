#!/usr/bin/env bash
# Issue #8's GPU measurements as one prepared command, for a session that is lent a GPU (the device machine
# starts bare and its time is short, so nothing here is interactive):
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine, from the repository root
#   DEVICE=cpu QUICK=1 BUDGET=6 bash benchmarks/gpu_check.sh   # dry run of the same steps on a CPU
#
# Steps, each bounded by its own budget (estimated 8–9 minutes in all at BUDGET=25 on one GPU, not yet
# measured; the CPU dry run above took 6 minutes on the 2-core development machine and its files, tagged
# "cpucheck", are not results to keep):
#   1. time_to_quality.py, fp32 eager            → results/time_to_quality_gpu{.csv,.png,_summary.csv}
#   2. time_to_quality.py, bf16 + torch.compile  → results/time_to_quality_gpu_bf16*
#   3. bench_accel.py (precision / compile side by side, no torchrun part) → results/bench_accel_gpu.csv
#   4. a 1-rank torchrun recon smoke on the device (needs mrcfile: carry a wheel in wheels/ if it is missing)
# Everything written goes to benchmarks/results and is copied to $OUT (the device tool brings $OUT back).
# Then record the tables in benchmarks/README.md and re-decide the fp32/eager defaults from them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-25}
QUICK_ARGS=()
if [[ -n ${QUICK:-} ]]; then QUICK_ARGS=(--quick); fi
TAG=${TAG:-$([[ $DEVICE == cpu ]] && echo cpucheck || echo gpu)}
RESULTS=benchmarks/results
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

python3 - "$DEVICE" <<'EOF'
import sys
import torch
dev = sys.argv[1]
if dev.startswith("cuda"):
    assert torch.cuda.is_available(), "no CUDA device visible; run this on the GPU machine (or DEVICE=cpu)"
    print("torch", torch.__version__, "on", torch.cuda.get_device_name(), flush=True)
else:
    print("torch", torch.__version__, "on the CPU (dry run)", flush=True)
EOF
if ! python3 -c "import mrcfile" 2>/dev/null; then
    if compgen -G "wheels/mrcfile-*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --find-links wheels mrcfile
    else
        echo "note: mrcfile is missing and wheels/ holds no wheel of it; step 4 will be skipped"
    fi
fi

echo "== 1. time to quality, fp32 eager (budget ${BUDGET} s per run)"
python3 benchmarks/time_to_quality.py --device "$DEVICE" --budget "$BUDGET" --tag "$TAG" ${QUICK_ARGS[@]+"${QUICK_ARGS[@]}"}
echo "== 2. time to quality, bf16 + torch.compile"
python3 benchmarks/time_to_quality.py --device "$DEVICE" --budget "$BUDGET" --precision bf16 --compile \
    --tag "${TAG}_bf16" ${QUICK_ARGS[@]+"${QUICK_ARGS[@]}"}
echo "== 3. precision and compile side by side"
python3 benchmarks/bench_accel.py --device "$DEVICE" --ranks 0 --tag "$TAG" ${QUICK_ARGS[@]+"${QUICK_ARGS[@]}"}
if python3 -c "import mrcfile" 2>/dev/null; then
    echo "== 4. torchrun (1 rank) recon smoke on $DEVICE"
    python3 -m stemtomo simulate -o "$SCRATCH/sim" --size 32 --tilts -60:60:6 --dose 200 --device "$DEVICE" -q
    python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m stemtomo recon "$SCRATCH/sim/noisy.mrc" \
        -o "$SCRATCH/ddp" --method ours --iterations 200 --val-interval 100 --device "$DEVICE" -q
    python3 -m stemtomo eval "$SCRATCH/ddp" --reference "$SCRATCH/sim/phantom.mrc" --projections 0 | tee "$SCRATCH/ddp_eval.txt"
    cp "$SCRATCH/ddp/train.csv" "$RESULTS/gpu_check_torchrun_train_${TAG}.csv"
    cp "$SCRATCH/ddp_eval.txt" "$RESULTS/gpu_check_torchrun_eval_${TAG}.txt"
fi
if [[ -n ${OUT:-} ]]; then
    mkdir -p "$OUT"
    cp "$RESULTS"/*"${TAG}"* "$OUT"/
    echo "copied to $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
fi
