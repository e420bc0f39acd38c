#!/usr/bin/env bash
# stemtomo quickstart: the whole pipeline on a small synthetic tilt series, a few minutes on a laptop CPU.
#
#   simulate → noise fit → noise sample → wbp / denoise → recon (l2 and ours) → export → eval
#
# Usage: bash examples/quickstart.sh [OUTDIR]      (default: demo/; re-running replaces its contents)
set -euo pipefail
OUT=${1:-demo}
mkdir -p "$OUT"
DEV=${STEMTOMO_DEVICE:-auto}
st() { echo "+ stemtomo $*" >&2; stemtomo "$@"; }

# 1. Ground truth: a 64³ cell phantom in a 32-voxel slab, the paper's 67 tilts (-50:50:1.5), bright field,
#    and a noisy series with STEM shot noise (40 e⁻/px) and read noise (noisy.mrc).
st simulate -o "$OUT/sim" --size 64 --thickness-px 32 --dose 40 --read-noise 0.01 --seed 1 --device "$DEV" --overwrite

# 2. Noise model: fit a normalizing flow to the (clean, noisy) pair — on a microscope these are a long and a
#    short exposure of the same area — and draw a new noisy series from it.
st noise fit "$OUT/sim/clean.mrc" "$OUT/sim/noisy.mrc" -o "$OUT/flow.safetensors" --model flow \
   --iterations 400 --device "$DEV" --overwrite
st noise sample "$OUT/sim/clean.mrc" --model "$OUT/flow.safetensors" -o "$OUT/flow_noisy.mrc" --seed 2 --overwrite

# 3. Classic baselines: weighted back-projection of the noisy series, and a denoised series.
st wbp "$OUT/sim/noisy.mrc" -o "$OUT/wbp.mrc" --nz 64 --device "$DEV" --overwrite
st denoise "$OUT/sim/noisy.mrc" -o "$OUT/denoised.mrc" --method bm3d --jobs 2 --overwrite

# 4. Implicit reconstructions: plain L2 on the noisy data, and "Ours" (field + flow noise model trained jointly).
st recon "$OUT/sim/noisy.mrc" -o "$OUT/l2" --method l2 --iterations 600 --device "$DEV" --overwrite \
   --reference "$OUT/sim/phantom.mrc"
st recon "$OUT/sim/noisy.mrc" -o "$OUT/ours" --method ours --iterations 600 --device "$DEV" --overwrite \
   --reference "$OUT/sim/phantom.mrc"

# 5. Export the trained model as a full-depth uint16 tomogram with an orthoslice montage.
st export "$OUT/ours" -o "$OUT/ours_tomogram.mrc" --shape 64 --dtype uint16 --slices "$OUT/ours_slices.png" --overwrite

# 6. Evaluate against the phantom (3D PSNR/SSIM and the paper's 2D test-projection protocol).
for name in wbp l2 ours; do
  src="$OUT/$name"; [ -d "$src" ] || src="$OUT/$name.mrc"
  st eval "$src" --reference "$OUT/sim/phantom.mrc" --projections 8 -o "$OUT/eval_$name.yaml" --overwrite -q
done
python3 - "$OUT" <<'PY'
import sys, yaml
out = sys.argv[1]
print(f"\n{'method':8s} {'3D PSNR':>8s} {'3D SSIM':>8s} {'2D PSNR':>8s}")
for name in ("wbp", "l2", "ours"):
    r = yaml.safe_load(open(f"{out}/eval_{name}.yaml"))
    m = r.get("metrics", r)
    print(f"{name:8s} {m['psnr_3d']:8.2f} {m['ssim_3d']:8.3f} {m['psnr_2d']:8.2f}")
print(f"\nOutputs in {out}/ (open {out}/ours_slices.png; volumes open in 3dmod / napari).")
PY
