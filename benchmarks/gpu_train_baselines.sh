#!/usr/bin/env bash
# Train the mbt2018-mean (N=64, M=96) and cheng2020-anchor (N=64) FP32 baselines on one GPU with
# `licq train --device cuda`, ONE PROCESS AT A TIME: on the lent H100 two training processes
# sharing the card ran 10x slower in total than one alone (benchmarks/README.md, "GPU notes").
#   phase 1: both base models at λ=0.0067 (mbt2018-mean warm-started from the ScaleHyperprior q3
#            baseline's tensors of equal name and shape, lr 1e-4; cheng2020-anchor from scratch,
#            lr 3e-4), BASE_S seconds of training each;
#   phase 2: the 8 quality stages (q1..q4 of each) from their base at CompressAI's λ, lr 1e-4,
#            Q_S seconds each.
# Recipe otherwise as ../shared/baselines/README.md: 128 px crops, batch 8, grad clip 1.0, aux Adam.
# Data: DATA (default .devdata/train: the training photos as lossless WebP, see
# benchmarks/models/*-manifest.json for which of them fitted through the device tool's 64 MiB limit).
# Writes runs/gpu/<stage>/{model.safetensors,train.json,train.log}.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DATA=${DATA:-.devdata/train}
RUNS=${RUNS:-runs/gpu}
BASE_S=${BASE_S:-220}
Q_S=${Q_S:-220}
DEVICE=${DEVICE:-cuda}
SH_Q3=${SH_Q3:-src/licq/assets/models/bmshj2018-hyperprior-N64M96-q3.safetensors}
mkdir -p "$RUNS"
train() {  # train STAGE ARGS...
  local out=$RUNS/$1; shift
  "$PY" -m licq.cli train -d "$DATA" -o "$out" --device "$DEVICE" --no-progress --log-every 500 \
    --checkpoint-every 2000 "$@" > "$RUNS/$(basename "$out").out" 2>&1
  echo "$(date -Is) $(basename "$out") rc=$? $(tail -1 "$RUNS/$(basename "$out").out")"
}
echo "$(date -Is) phase 1"
train mbt2018-mean-base -a mbt2018-mean -N 64 -M 96 --lambda 0.0067 --lr 1e-4 \
  --max-seconds "$BASE_S" --init "$SH_Q3"
train cheng2020-anchor-base -a cheng2020-anchor -N 64 --lambda 0.0067 --lr 3e-4 \
  --max-seconds "$BASE_S"
echo "$(date -Is) phase 2"
for q in 1 2 3 4; do
  train mbt2018-mean-q$q -a mbt2018-mean -N 64 -M 96 -q $q --lr 1e-4 --seed $q \
    --max-seconds "$Q_S" --init "$RUNS/mbt2018-mean-base/model.safetensors"
  train cheng2020-anchor-q$q -a cheng2020-anchor -N 64 -q $q --lr 1e-4 --seed $q \
    --max-seconds "$Q_S" --init "$RUNS/cheng2020-anchor-base/model.safetensors"
done
echo "$(date -Is) done"
