#!/usr/bin/env bash
# FMPQ with sensitivities re-measured after reconstruction (issue 29): ζ_n(b) from
# `licq sensitivity --ptq rdo` (each trial layer learns its rounding and input step before its RD
# loss is measured; 16 training crops, as run_fmpq.py's range-only ζ), the DP allocation at each
# target weight ratio from those ζ, then `licq ptq --method rdo` on that allocation, Kodak-24.
#   bash benchmarks/run_rdo_zeta.sh [ARCH]          (default: bmshj2018-hyperprior)
#   QUALITIES="3 4" bash benchmarks/run_rdo_zeta.sh  # only those ζ tables (e.g. two 1-thread
#     processes side by side); the allocation and PTQ steps run once all four tables exist
#   RATIOS="4 6 8" ...                               # targets (default: 6)
# Resumable: a ζ table already written is not measured again (one took 15-27 min per quality for the
# ScaleHyperprior at 1 thread). Writes benchmarks/results/sensitivity-<arch>-rdo-q<q>.json,
# benchmarks/configs/<arch>-dp-<R>x-rdo-zeta-q<q>.json and
# benchmarks/results/ptq-<arch>-fmpq-<R>x-rdo-zeta.json (range-only PTQ of that allocation) and
# ptq-<arch>-fmpq-<R>x-rdo-zeta-rdo.json (with --method rdo; shown beside the other rdo rows).
set -euo pipefail
cd "$(dirname "$0")/.."
LICQ=${LICQ:-.venv/bin/licq}
KODAK=${KODAK:-../shared/data/kodak}
CALIB=${CALIB:-../shared/data/train}
THREADS=${THREADS:-1}
OUT=benchmarks/results
CONF=benchmarks/configs
arch=${1:-bmshj2018-hyperprior}
# shellcheck source=benchmarks/baselines.sh
source benchmarks/baselines.sh
baseline_ckpts "$arch"
for q in ${QUALITIES:-1 2 3 4}; do
  f=$OUT/sensitivity-$arch-rdo-q$q.json
  [[ -f $f ]] || "$LICQ" sensitivity -a "$arch" -q "$q" -m "${CKPTS[q - 1]}" --ptq rdo \
    --calib-dir "$CALIB" --calib-crops 16 --batch-size 8 --threads "$THREADS" -o "$f" --no-progress
done
for q in 1 2 3 4; do
  [[ -f $OUT/sensitivity-$arch-rdo-q$q.json ]] || { echo "ζ of q$q not measured yet"; exit 0; }
done
for r in ${RATIOS:-6}; do
  configs=()
  for q in 1 2 3 4; do
    c=$CONF/$arch-dp-${r}x-rdo-zeta-q$q.json
    "$LICQ" search -a "$arch" -q "$q" -m "${CKPTS[q - 1]}" --sensitivity \
      "$OUT/sensitivity-$arch-rdo-q$q.json" --target-ratio "$r" --method dp --basis weights -o "$c"
    configs+=("$c")
  done
  # the same allocation with range-only PTQ, then with --method rdo (each skipped when written)
  for m in range: rdo:-rdo; do  # method:name suffix
    method=${m%%:*}; name=fmpq-${r}x-rdo-zeta${m#*:}
    [[ ! -f $OUT/ptq-$arch-$name.json ]] || continue
    "$LICQ" ptq -a "$arch" -q 1 2 3 4 -m "${CKPTS[@]}" --bit-config "${configs[@]}" --method "$method" \
      -d "$KODAK" --calib-dir "$CALIB" --calib-crops 32 --threads "$THREADS" \
      --name "$arch-ptq-$name" -o "$OUT/ptq-$arch-$name.json" --no-progress
  done
done
