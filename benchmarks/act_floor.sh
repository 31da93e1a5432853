#!/usr/bin/env bash
# Where the W8A8 PTQ loss comes from: W8A8 with the input activations of one group of layers
# (g_a, g_s, h_a or h_s; or one layer, GROUPS_=g_s.0) left in float, everything else as in
# run_ptq.sh's w8a8 (same calibration, all 24 Kodak images through real bitstreams). Compare
# with ptq-<arch>-w8a8.json (all activations at 8 bit) and ptq-<arch>-w8-wonly.json (none).
#   bash benchmarks/act_floor.sh [ARCH ...]   (default: mbt2018-mean)
#   GROUPS_="g_s.0" bash benchmarks/act_floor.sh   (only g_s's first layer, whose input is ŷ)
#   -> benchmarks/results/ptq-<arch>-w8a8-float-<group>.json
#   A_BITS=10 GROUPS_=g_s bash benchmarks/act_floor.sh   (that group's activations at 10 bit
#     instead of float) -> ptq-<arch>-w8a8-a10-<group>.json
set -euo pipefail
cd "$(dirname "$0")/.."
LICQ=${LICQ:-.venv/bin/licq}
SHARED=${SHARED:-../shared}
GROUPS_=${GROUPS_:-g_a g_s h_a h_s}
A_BITS=${A_BITS:-}  # empty: float
tag=$([[ -n $A_BITS ]] && echo "a$A_BITS" || echo float)
# shellcheck source=benchmarks/baselines.sh
source benchmarks/baselines.sh
archs=("$@")
[[ ${#archs[@]} -gt 0 ]] || archs=(mbt2018-mean)
mkdir -p runs/act-floor
for arch in "${archs[@]}"; do
  baseline_ckpts "$arch" "$SHARED"
  for g in $GROUPS_; do
    out=benchmarks/results/ptq-$arch-w8a8-$tag-$g.json
    if [[ -f $out ]]; then echo "skip $out (done)"; continue; fi
    cfg=runs/act-floor/w8a8-$tag-$g.json  # W8A8 default; this group's inputs at A_BITS or float
    printf '{"version": 1, "default": {"w_bits": 8, "a_bits": 8}, "layers": {"re:^%s(\\\\.|$)": {"w_bits": 8, "a_bits": %s}}}\n' \
      "${g//./\\\\.}" "${A_BITS:-null}" > "$cfg"
    "$LICQ" ptq -a "$arch" -q 1 2 3 4 -m "${CKPTS[@]}" --bit-config "$cfg" -d "$SHARED/data/kodak" \
      --calib-dir "$SHARED/data/train" --calib-crops 32 --threads 1 \
      --name "$arch-ptq-w8a8-$tag-$g" -o "$out" --no-progress
  done
done
