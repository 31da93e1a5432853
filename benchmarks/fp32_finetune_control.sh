#!/usr/bin/env bash
# Control for the QAT results: the same loop, steps and learning rate as run_qat.sh, but on the
# FP32 ScaleHyperprior baselines with no quantization. If this already moves the Kodak curve, the
# fine-tuning recipe (not quantization) is what QAT's numbers measure. Resumable.
#   bash benchmarks/fp32_finetune_control.sh   -> benchmarks/results/finetune-fp32-control.json
#   COSINE_LR=1e-4 STEPS=1200 bash benchmarks/fp32_finetune_control.sh  (the control of the
#     -s1200-cosine1e-4 QAT rows) -> benchmarks/results/finetune-fp32-control-s1200-cosine1e-4.json
#   STEPS=2400 bash benchmarks/fp32_finetune_control.sh  (the -s2400 rows, constant lr)
#     -> benchmarks/results/finetune-fp32-control-s2400.json
set -euo pipefail
cd "$(dirname "$0")/.."
LICQ=${LICQ:-.venv/bin/licq}
SHARED=${SHARED:-../shared}
STEPS=${STEPS:-300}
QUALITIES=${QUALITIES:-1 2 3 4}
lr=(--lr 1e-5) tag= name="fp32-finetune-${STEPS}steps-lr1e-5"
# a constant-lr control of another budget gets its own name and runs (-s<STEPS>, as the QAT rows)
[[ $STEPS == 300 ]] || tag=-s$STEPS
if [[ -n ${COSINE_LR:-} ]]; then
  lr=(--lr "$COSINE_LR" --lr-schedule cosine) tag=-s$STEPS-cosine$COSINE_LR
  name="fp32-finetune-${STEPS}steps-cosine$COSINE_LR"
fi
ckpts=()
for q in $QUALITIES; do
  out=runs/finetune-fp32$tag/q$q
  resume=()  # an interrupted quality continues from its checkpoint
  [[ ! -f $out/checkpoint.pth.tar ]] || resume=(--resume auto)
  [[ -f $out/model.pth.tar ]] || "$LICQ" train -a bmshj2018-hyperprior -N 64 -M 96 -q "$q" \
    -d "$SHARED/data/train" -o "$out" --steps "$STEPS" "${lr[@]}" --threads 1 --no-progress \
    --init "$SHARED/baselines/bmshj2018-hyperprior-N64M96-q$q.pth.tar" "${resume[@]}"
  ckpts+=("$out/model.pth.tar")
done
# shellcheck disable=SC2086
"$LICQ" eval -a bmshj2018-hyperprior -q $QUALITIES -m "${ckpts[@]}" -d "$SHARED/data/kodak" \
  --threads 1 --no-progress --name "$name" \
  -o "benchmarks/results/finetune-fp32-control$tag.json"
