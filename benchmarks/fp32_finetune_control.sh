#!/usr/bin/env bash
# Control for the QAT results: the same loop, steps and learning rate as run_qat.sh, but on the
# FP32 ScaleHyperprior baselines with no quantization. If this already moves the Kodak curve, the
# fine-tuning recipe (not quantization) is what QAT's numbers measure. Resumable.
#   bash benchmarks/fp32_finetune_control.sh   -> benchmarks/results/finetune-fp32-control.json
#   COSINE_LR=1e-4 STEPS=1200 bash benchmarks/fp32_finetune_control.sh  (the control of the
#     -s1200-cosine1e-4 QAT rows) -> benchmarks/results/finetune-fp32-control-s1200-cosine1e-4.json
#   STEPS=2400 bash benchmarks/fp32_finetune_control.sh  (the -s2400 rows, constant lr)
#     -> benchmarks/results/finetune-fp32-control-s2400.json
#   ARCH=cheng2020-anchor bash benchmarks/fp32_finetune_control.sh  (another architecture's
#     committed baselines, benchmarks/models/) -> finetune-fp32-control-cheng2020-anchor.json
#   LATENT=mixed ...: --latent-rounding mixed -> finetune-fp32-control[-<arch>][-s…]-latent-mixed.json
#   QUALITIES="1 2" ...: train only those (no evaluation), so two copies share the four
set -euo pipefail
cd "$(dirname "$0")/.."
LICQ=${LICQ:-.venv/bin/licq}
SHARED=${SHARED:-../shared}
STEPS=${STEPS:-300}
QUALITIES=${QUALITIES:-1 2 3 4}
read -ra QS <<< "$QUALITIES"  # fewer than four: a share, trained only (run_qat.sh's rule)
ARCH=${ARCH:-bmshj2018-hyperprior}
# shellcheck source=benchmarks/baselines.sh
source benchmarks/baselines.sh
baseline_ckpts "$ARCH" "$SHARED"
# the model sizes from the baseline's file name (…-N64M96-q1…, …-N64-q1…)
[[ ${CKPTS[0]} =~ -N([0-9]+)(M([0-9]+))?-q ]] || { echo "no sizes in ${CKPTS[0]}" >&2; exit 2; }
size=(-N "${BASH_REMATCH[1]}")
[[ -z ${BASH_REMATCH[3]} ]] || size+=(-M "${BASH_REMATCH[3]}")
afx=$([[ $ARCH == bmshj2018-hyperprior ]] || echo "-$ARCH")  # the anchor keeps its names
lr=(--lr 1e-5) tag= name="fp32-finetune-${STEPS}steps-lr1e-5"
# a constant-lr control of another budget gets its own name and runs (-s<STEPS>, as the QAT rows)
[[ $STEPS == 300 ]] || tag=-s$STEPS
if [[ -n ${COSINE_LR:-} ]]; then
  lr=(--lr "$COSINE_LR" --lr-schedule cosine) tag=-s$STEPS-cosine$COSINE_LR
  name="fp32-finetune-${STEPS}steps-cosine$COSINE_LR"
fi
# LATENT=mixed: --latent-rounding (the control of run_qat.sh's LATENT rows) -> …-latent-<LATENT>
lat=()
[[ -z ${LATENT:-} ]] || { lat=(--latent-rounding "$LATENT"); tag=$tag-latent-$LATENT; name=$name-latent-$LATENT; }
ckpts=()
for q in $QUALITIES; do
  out=runs/finetune-fp32$afx$tag/q$q
  resume=()  # an interrupted quality continues from its checkpoint
  [[ ! -f $out/checkpoint.pth.tar ]] || resume=(--resume auto)
  [[ -f $out/model.pth.tar ]] || "$LICQ" train -a "$ARCH" "${size[@]}" -q "$q" \
    -d "$SHARED/data/train" -o "$out" --steps "$STEPS" "${lr[@]}" --threads 1 --no-progress \
    --checkpoint-every 100 --init "${CKPTS[q - 1]}" "${lat[@]}" "${resume[@]}"
  ckpts+=("$out/model.pth.tar")
done
[[ ${#QS[@]} -ge 4 ]] || { echo "trained q $QUALITIES; run again without QUALITIES"; exit 0; }
# shellcheck disable=SC2086
"$LICQ" eval -a "$ARCH" -q $QUALITIES -m "${ckpts[@]}" -d "$SHARED/data/kodak" \
  --threads 1 --no-progress --name "$name" \
  -o "benchmarks/results/finetune-fp32-control$afx$tag.json"
