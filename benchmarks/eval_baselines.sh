#!/usr/bin/env bash
# Kodak-24 RD evaluation of every FP32 baseline through real bitstreams (1 thread), then the README
# tables and rd-baselines.png. Writes benchmarks/results/baselines-<arch>.json.
#   bash benchmarks/eval_baselines.sh [ARCH ...]     (default: every baseline that exists)
set -euo pipefail
cd "$(dirname "$0")/.."
LICQ=${LICQ:-.venv/bin/licq}
KODAK=${KODAK:-../shared/data/kodak}
OUT=benchmarks/results
archs=("$@")
[[ ${#archs[@]} -gt 0 ]] || archs=(bmshj2018-hyperprior mbt2018-mean cheng2020-anchor)

for arch in "${archs[@]}"; do
  if [[ $arch == bmshj2018-hyperprior ]]; then
    ckpts=(../shared/baselines/bmshj2018-hyperprior-N64M96-q{1,2,3,4}.pth.tar)
  else
    ckpts=(benchmarks/models/"$arch"-*-q{1,2,3,4}.safetensors)
  fi
  for c in "${ckpts[@]}"; do [[ -f $c ]] || { echo "skip $arch: $c missing"; continue 2; }; done
  "$LICQ" eval -a "$arch" -q 1 2 3 4 -m "${ckpts[@]}" -d "$KODAK" --threads 1 --estimate \
    --name "$arch-licq-baseline" -o "$OUT/baselines-$arch.json" --no-progress
done
.venv/bin/python benchmarks/report.py
