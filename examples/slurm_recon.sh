#!/usr/bin/env bash
# Data-parallel `stemtomo recon` on a SLURM cluster: N nodes × G GPUs, one torchrun agent per node.
#
#   sbatch examples/slurm_recon.sh ali.mrc ours_out         # edit the #SBATCH lines for your cluster first
#
# Every rank holds the whole tilt series and an identical copy of the field; each step all ranks draw the same
# --rays-per-batch rays (the TOTAL batch) and each renders its share, gradients are summed (NCCL), and rank 0
# writes ours_out/ (model, checkpoint, preview, train.csv). Resume after a time-out with the same script and
# RESUME=1. On one machine, no SLURM needed:
#   torchrun --standalone --nproc-per-node 4 -m stemtomo recon ali.mrc -o ours_out --device cuda
#
#SBATCH --job-name=stemtomo-recon
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=04:00:00
#SBATCH --output=%x-%j.log
set -euo pipefail

INPUT=${1:?usage: sbatch examples/slurm_recon.sh TILTSERIES OUTDIR}
OUTDIR=${2:?usage: sbatch examples/slurm_recon.sh TILTSERIES OUTDIR}
GPUS=${SLURM_GPUS_ON_NODE:-4}
METHOD=${METHOD:-ours}
ITERS=${ITERS:-20000}
RAYS=${RAYS:-$((4096 * GPUS * ${SLURM_NNODES:-1}))}  # total rays per step: keep ~4k per GPU

# the first node hosts the rendezvous (any free port)
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${PORT:-29500}

ARGS=(recon "$INPUT" -o "$OUTDIR" --method "$METHOD" --iterations "$ITERS" --rays-per-batch "$RAYS"
      --device cuda --precision "${PRECISION:-fp32}")
if [[ -n ${RESUME:-} ]]; then ARGS+=(--resume "$OUTDIR"); fi

# one torchrun per node; it starts one process per GPU (rank r uses cuda:LOCAL_RANK)
srun torchrun \
    --nnodes "$SLURM_NNODES" --nproc-per-node "$GPUS" \
    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$HEAD:$PORT" \
    -m stemtomo "${ARGS[@]}"
