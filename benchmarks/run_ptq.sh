#!/usr/bin/env bash
# Uniform PTQ on the FP32 baselines, all 24 Kodak images through real bitstreams, calibrated on
# training crops (../shared/data/train, never Kodak). Writes benchmarks/results/ptq-<arch>-<setting>.json
#   bash benchmarks/run_ptq.sh [ARCH ...]      (default: bmshj2018-hyperprior)
#   ONLY="w8-wonly w4a8" bash benchmarks/run_ptq.sh mbt2018-mean   # only those settings
#   ONLY=fmpq-8x-a10-g_s bash benchmarks/run_ptq.sh   # FMPQ's 8x allocation (run_fmpq.py) with
#     g_s's input activations at 10 bit: the PTQ counterpart of run_qat.sh's A_GS=10 rows
#   ONLY="fmpq-8x fmpq-4x-dp-monotone" ...  # an allocation as run_fmpq.py wrote it (dp, or
#     dp-monotone), PTQ'd as run_fmpq.py does (same calibration): re-runs its PTQ evaluation
#   SUFFIX=-ar-latent-fix ONLY=w8a8 bash benchmarks/run_ptq.sh cheng2020-anchor   # names get
#     SUFFIX (ptq-cheng2020-anchor-w8a8-ar-latent-fix.json): a re-run after a fix, beside the
#     earlier file
set -euo pipefail
cd "$(dirname "$0")/.."
LICQ=${LICQ:-.venv/bin/licq}
KODAK=${KODAK:-../shared/data/kodak}
CALIB=${CALIB:-../shared/data/train}
OUT=benchmarks/results
EXTRA=${EXTRA:-}
SUFFIX=${SUFFIX:-}
# shellcheck source=benchmarks/baselines.sh
source benchmarks/baselines.sh
archs=("$@")
[[ ${#archs[@]} -gt 0 ]] || archs=(bmshj2018-hyperprior)
settings=("--w-bits 8 --a-bits 8:w8a8" "--w-bits 6 --a-bits 8:w6a8" "--w-bits 4 --a-bits 8:w4a8"
          "--w-bits 8 --weight-only:w8-wonly" "--w-bits 6 --weight-only:w6-wonly"
          "--w-bits 4 --weight-only:w4-wonly")
for arch in "${archs[@]}"; do
  baseline_ckpts "$arch"
  extra=()
  for r in 4x 6x 8x; do  # where run_fmpq.py wrote the allocation
    f=$OUT/fmpq-$arch-dp-$r.json
    [[ ! -f $f ]] || extra+=("--bit-config $f --layer-a-bits re:^g_s(\.|$)=10:fmpq-$r-a10-g_s"
                             "--bit-config $f:fmpq-$r")
    f=$OUT/fmpq-$arch-dp-monotone-$r.json
    [[ ! -f $f ]] || extra+=("--bit-config $f:fmpq-$r-dp-monotone")
  done
  for s in "${settings[@]}" "${extra[@]}"; do
    [[ -n ${ONLY:-} || $s != *fmpq-* ]] || continue  # only when asked for by name
    flags=${s%:*}; name=${s##*:}  # the name follows the last ":"
    [[ -z ${ONLY:-} || " $ONLY " == *" $name "* ]] || continue
    name+=$SUFFIX
    # shellcheck disable=SC2086
    "$LICQ" ptq -a "$arch" -q 1 2 3 4 -m "${CKPTS[@]}" $flags $EXTRA -d "$KODAK" --calib-dir "$CALIB" \
      --calib-crops 32 --threads 1 --name "$arch-ptq-$name" -o "$OUT/ptq-$arch-$name.json" --no-progress
  done
done
