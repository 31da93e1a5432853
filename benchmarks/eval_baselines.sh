#!/usr/bin/env bash
# Kodak-24 RD evaluation of every FP32 baseline through real bitstreams (1 thread), then the README
# tables and rd-baselines.png. Writes benchmarks/results/baselines-<arch>.json.
#   bash benchmarks/eval_baselines.sh [ARCH ...]     (default: every baseline that exists)
set -euo pipefail
cd "$(dirname "$0")/.."
LICQ=${LICQ:-.venv/bin/licq}
KODAK=${KODAK:-../shared/data/kodak}
OUT=benchmarks/results
# shellcheck source=benchmarks/baselines.sh
source benchmarks/baselines.sh
archs=("$@")
[[ ${#archs[@]} -gt 0 ]] || archs=(bmshj2018-hyperprior mbt2018-mean cheng2020-anchor)

for arch in "${archs[@]}"; do
  baseline_ckpts "$arch"
  for c in "${CKPTS[@]}"; do [[ -f $c ]] || { echo "skip $arch: $c missing"; continue 2; }; done
  "$LICQ" eval -a "$arch" -q 1 2 3 4 -m "${CKPTS[@]}" -d "$KODAK" --threads 1 --estimate \
    --name "$arch-licq-baseline" -o "$OUT/baselines-$arch.json" --no-progress
done
.venv/bin/python benchmarks/report.py
