#!/usr/bin/env bash
# Continue committed baselines (benchmarks/models/<arch>-<sizes>-q<q>.safetensors) for CONT_S more
# seconds of `licq train` each, at the quality's own λ, lr 1e-4, fresh Adam (the optimizer state of
# the earlier stage did not survive its session). Writes runs/baselines/<arch>-q<q>-cont/; export
# with `python benchmarks/export_trained_baselines.py <arch> --continued`.
#   nohup bash benchmarks/continue_baselines.sh mbt2018-mean "-N 64 -M 96" N64M96 > runs/cont.out 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=$1; SIZE_ARGS=$2; SIZES=$3
LICQ=${LICQ:-.venv/bin/licq}
DATA=${DATA:-../shared/data/train}
RUNS=${RUNS:-runs/baselines}
THREADS=${THREADS:-1}
CONT_S=${CONT_S:-1200}
QUALITIES=${QUALITIES:-1 2 3 4}
for q in $QUALITIES; do
  out=$RUNS/$ARCH-q$q-cont
  if [[ -f $out/model.pth.tar ]]; then echo "skip $out (done)"; continue; fi
  resume=(); [[ -f $out/checkpoint.pth.tar ]] && resume=(--resume)
  echo "$(date -Is) start $out ${resume[*]}"
  # shellcheck disable=SC2086
  "$LICQ" train -d "$DATA" -o "$out" --threads "$THREADS" --no-progress -a "$ARCH" $SIZE_ARGS \
    -q "$q" --lr 1e-4 --max-seconds "$CONT_S" --seed $((10 + q)) \
    --init "benchmarks/models/$ARCH-$SIZES-q$q.safetensors" "${resume[@]}"
done
echo "$(date -Is) all done"
