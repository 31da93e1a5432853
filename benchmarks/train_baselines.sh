#!/usr/bin/env bash
# Train licq's small FP32 baselines of mbt2018-mean and cheng2020-anchor with `licq train`.
# Idempotent and resumable: a finished stage (model.pth.tar present) is skipped, an interrupted one
# continues from its checkpoint. Runs under `nohup` in the background:
#   nohup bash benchmarks/train_baselines.sh > runs/train_baselines.out 2>&1 &
# Recipe (as ../shared/baselines/README.md, with the warm start stated below):
#   crops 128 px, batch 8, Adam, grad clip 1.0, aux Adam 1e-3, every photo under ../shared/data/train
#   mbt2018-mean (N=64, M=96): base at λ=0.0067 initialised from the ScaleHyperprior q3 baseline's
#     tensors of identical name and shape (g_a, g_s, h_a, entropy bottleneck; h_s is new because the
#     mean-scale h_s has a different shape), then each quality from the base at its own λ.
#   cheng2020-anchor (N=64): from scratch, base λ=0.0067 at lr 3e-4, then each quality at lr 1e-4.
set -euo pipefail
cd "$(dirname "$0")/.."
LICQ=${LICQ:-.venv/bin/licq}
DATA=${DATA:-../shared/data/train}
RUNS=${RUNS:-runs/baselines}
THREADS=${THREADS:-1}
MBT_BASE_S=${MBT_BASE_S:-1500}
MBT_Q_S=${MBT_Q_S:-1500}  # the committed models: 600 s, then continued exactly (--resume) to 1500 s
CHENG_BASE_S=${CHENG_BASE_S:-10800}
CHENG_Q_S=${CHENG_Q_S:-1800}

stage() {  # stage OUT_DIR ARGS... : train unless finished, resume if interrupted
  local out=$1; shift
  if [[ -f $out/model.pth.tar ]]; then echo "skip $out (done)"; return; fi
  local resume=()
  [[ -f $out/checkpoint.pth.tar ]] && resume=(--resume)
  echo "$(date -Is) start $out ${resume[*]}"
  "$LICQ" train -d "$DATA" -o "$out" --threads "$THREADS" --no-progress "$@" "${resume[@]}"
}

stage "$RUNS/mbt2018-mean-base" -a mbt2018-mean -N 64 -M 96 --lambda 0.0067 --lr 1e-4 \
  --max-seconds "$MBT_BASE_S" --init ../shared/baselines/bmshj2018-hyperprior-N64M96-q3.pth.tar
for q in 1 2 3 4; do
  stage "$RUNS/mbt2018-mean-q$q" -a mbt2018-mean -N 64 -M 96 -q $q --lr 1e-4 \
    --max-seconds "$MBT_Q_S" --init "$RUNS/mbt2018-mean-base/model.pth.tar" --seed $q
done

stage "$RUNS/cheng2020-anchor-base" -a cheng2020-anchor -N 64 --lambda 0.0067 --lr 3e-4 \
  --max-seconds "$CHENG_BASE_S"
for q in 1 2 3 4; do
  stage "$RUNS/cheng2020-anchor-q$q" -a cheng2020-anchor -N 64 -q $q --lr 1e-4 \
    --max-seconds "$CHENG_Q_S" --init "$RUNS/cheng2020-anchor-base/model.pth.tar" --seed $q
done
echo "$(date -Is) all stages done"
