#!/usr/bin/env bash
# From a raw STEM tilt series straight off the microscope to a tomogram:
#   info → align (hot pixels, per-tilt intensities, tilt axis + shifts) → wbp --estimate-thickness (+ half sets)
#   → recon (implicit, noise-aware) on the aligned stack → export → eval --fsc on the WBP half sets.
#
# Usage:
#   examples/real_data.sh                      # no argument: simulate a misaligned, noisy series and use it
#   examples/real_data.sh RAW.mrc              # angles from RAW's sidecar, a .rawtlt/.tlt/.mdoc beside it, or its header
#   examples/real_data.sh RAW.mrc RAW.mdoc     # or give the angle file (.rawtlt/.tlt) / SerialEM .mdoc explicitly
#
# Settings (environment variables):
#   OUT=real_data_out   output folder (refused if it already holds outputs; OVERWRITE=1 replaces them)
#   CONTRAST=           bf or df (HAADF); default: the sidecar's, else guessed from the images (intensity vs tilt)
#   NORMALIZE=none      per-tilt intensity normalization: none, bf-vacuum (vacuum in every image), bf-slab,
#                       df-cos (extended slab), df-total (object in view). Simulated cubes need none.
#   TILT_AXIS=          known in-plane tilt-axis angle (degrees CCW from +y, IMOD RotationAngle); default: searched
#   AXIS_RANGE=         refine TILT_AXIS (or the sidecar's/.mdoc's axis) within ± this many degrees instead of
#                       using it as is (e.g. 3 for a recorded RotationAngle)
#   BIN=1               binning for wbp and recon (use 2–4 for 1k–4k images)
#   ITERS=300           recon optimizer steps (about 1.5 min for 48² × 41 tilts on a laptop CPU)
#   DEVICE=auto         auto, cpu, cuda or cuda:N
#
# Runs in a few minutes on a laptop CPU with the simulated 48³ series (recon dominates).
set -euo pipefail

OUT=${OUT:-real_data_out}
NORMALIZE=${NORMALIZE:-none}
BIN=${BIN:-1}
ITERS=${ITERS:-300}
DEVICE=${DEVICE:-auto}
COMMON=(--device "$DEVICE")
if [[ -n ${OVERWRITE:-} ]]; then COMMON+=(--overwrite); fi
CONTRAST_ARGS=()
if [[ -n ${CONTRAST:-} ]]; then CONTRAST_ARGS=(--contrast "$CONTRAST"); fi
mkdir -p "$OUT"

# ---- the input: the user's raw series, or a simulated misaligned one --------------------------------------
ANGLE_ARGS=()
REFERENCE=
if [[ $# -ge 1 ]]; then
    RAW=$1
    if [[ $# -ge 2 ]]; then
        ANGLE_ARGS=(--angles "$2")
        stemtomo info "$2"
    fi
else
    echo "== no input given: simulating a 48³ cell phantom, tilt axis along x (90°), random shifts σ = 3 px, 200 e⁻/px"
    stemtomo simulate -o "$OUT/sim" --size 48 --tilts -60:60:3 --tilt-axis-angle 90 --shift-sigma-px 3 \
        --dose 200 --seed 1 "${COMMON[@]}"
    RAW=$OUT/sim/noisy.mrc
    REFERENCE=$OUT/sim/phantom.mrc
fi

echo "== 1. what is in the file (shape, pixel size, angles and their source, tilt axis)"
stemtomo info "$RAW"

echo "== 2. align: replace hot/dead pixels, normalize per-tilt intensities ($NORMALIZE), find the tilt axis and"
echo "      shifts; writes the aligned stack (tilt axis along y), an IMOD .xf, a shift plot and the slab thickness"
AXIS_ARGS=()
if [[ -n ${TILT_AXIS:-} ]]; then AXIS_ARGS=(--tilt-axis-angle "$TILT_AXIS"); fi
if [[ -n ${AXIS_RANGE:-} ]]; then AXIS_ARGS+=(--axis-search-range "$AXIS_RANGE"); fi
stemtomo align "$RAW" -o "$OUT/aligned.mrc" ${ANGLE_ARGS[@]+"${ANGLE_ARGS[@]}"} ${AXIS_ARGS[@]+"${AXIS_ARGS[@]}"} \
    ${CONTRAST_ARGS[@]+"${CONTRAST_ARGS[@]}"} --remove-defects --normalize-tilts "$NORMALIZE" \
    --estimate-thickness "${COMMON[@]}"
# (an alignment from IMOD/AreTomo instead: stemtomo align RAW -o ALIGNED --apply --xf RAW.xf --remove-defects)

echo "== 3. WBP of the aligned stack, slab re-estimated from a full-depth WBP, with even/odd half sets for FSC"
stemtomo wbp "$OUT/aligned.mrc" -o "$OUT/wbp.mrc" --estimate-thickness --half-sets --bin "$BIN" \
    ${CONTRAST_ARGS[@]+"${CONTRAST_ARGS[@]}"} "${COMMON[@]}"

echo "== 4. implicit reconstruction (noise-aware, rays clipped to the slab thickness_px that align wrote)"
stemtomo recon "$OUT/aligned.mrc" -o "$OUT/recon" --iterations "$ITERS" --bin "$BIN" \
    ${CONTRAST_ARGS[@]+"${CONTRAST_ARGS[@]}"} "${COMMON[@]}"

echo "== 5. export the tomogram (MRC, IMOD trimvol -rx orientation) and a PNG of its central slices"
stemtomo export "$OUT/recon" -o "$OUT/tomogram.mrc" --slices "$OUT/tomogram.png" "${COMMON[@]}"

echo "== 6. resolution without ground truth: FSC of the WBP half sets"
stemtomo eval --fsc "$OUT/wbp_even.mrc" "$OUT/wbp_odd.mrc" -o "$OUT/fsc.yaml" "${COMMON[@]}"

if [[ -n $REFERENCE ]]; then
    echo "== 7. simulated input: compare both tomograms with the phantom (best flip/shift; the coarse alignment"
    echo "      references the 0° tilt, so the volume may be shifted by a few voxels)"
    stemtomo eval "$OUT/wbp.mrc" -r "$REFERENCE" --align --projections 0 -o "$OUT/eval_wbp.yaml" "${COMMON[@]}"
    stemtomo eval "$OUT/tomogram.mrc" -r "$REFERENCE" --align --projections 0 -o "$OUT/eval_recon.yaml" "${COMMON[@]}"
fi
echo "== done: $OUT/tomogram.mrc ($OUT/tomogram.png), WBP $OUT/wbp.mrc, alignment $OUT/aligned.xf ($OUT/aligned_shifts.png)"
