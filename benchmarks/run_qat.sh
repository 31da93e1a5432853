#!/usr/bin/env bash
# QAT results on the ScaleHyperprior baselines (issue 6), Kodak-24, real bitstreams; ARCH=<zoo name>
# (e.g. ARCH=mbt2018-mean bash benchmarks/run_qat.sh main, after `run_fmpq.py --arch mbt2018-mean`
# wrote its allocations) runs the same settings on that committed baseline.
#   bash benchmarks/run_qat.sh main        # W8A8 and the FMPQ DP allocations at 4x / 6x / 8x
#     (or some, in the order given: main w8a8 6x)
#   ALLOC=dp-monotone bash benchmarks/run_qat.sh main 4x  # the dp-monotone allocation
#     (run_fmpq.py --methods dp-monotone) -> qat-<arch>-fmpq-4x-dp-monotone.json; also in long
#     mode: ALLOC=dp-monotone COSINE_LR=1e-4 STEPS=1200 ... long 6x
#     -> qat-<arch>-fmpq-6x-dp-monotone-s1200-cosine1e-4.json
#   bash benchmarks/run_qat.sh a10-gs      # W8A8 with g_s's activations at 10 bit
#   bash benchmarks/run_qat.sh ablations [dpa dgm ...]  # one switch at a time against fmpq-6x
#   bash benchmarks/run_qat.sh dq          # DynaQuant dynamic bits {4,6,8} and {6,8,10} (issue 7)
#     (or some steps: dq 4-6-8 static:4-6-8)
#   bash benchmarks/run_qat.sh dq-gamma    # {4,6,8} with γ = 0.05 instead of 0.01
#     (dq-gamma dynamic / dq-gamma static: one of its two steps)
#     (STEPS=1200 bash benchmarks/run_qat.sh dq-gamma: both runs at 1200 steps, names -s1200;
#      GAMMA=0.02 bash benchmarks/run_qat.sh dq-gamma: that γ, names -gamma0.02)
#     -> benchmarks/results/dq-<arch>-<candidates>.json, then the static DPA+DGM configuration
#        at the nearest uniform bit-width to the measured mean bits (dq-<arch>-static-w<B>.json)
#   STEPS=1200 bash benchmarks/run_qat.sh long [6x 8x 4x]  # FMPQ settings, a longer budget
#     -> qat-<arch>-fmpq-<r>x-s<STEPS>.json (the main rows keep the 300-step budget of the
#        ablations; two copies of the script run two settings side by side; FROM=N continues
#        the s<N> run's checkpoints)
#   COSINE_LR=1e-4 STEPS=2400 bash benchmarks/run_qat.sh long 8x  # cosine lr from 1e-4
#     -> qat-<arch>-fmpq-8x-s2400-cosine1e-4.json
#   FROM=4800 STEPS=6000 bash benchmarks/run_qat.sh decay 8x  # continue s<FROM> with a cosine
#     lr decay to step STEPS -> qat-<arch>-fmpq-8x-s6000-decay4800.json
#   A_GS=10 COSINE_LR=1e-4 STEPS=4800 bash benchmarks/run_qat.sh long 8x  # the same, with g_s's
#     input activations at 10 bit (--layer-a-bits; the weights and size are the allocation's)
#     -> qat-<arch>-fmpq-8x-a10-g_s-s4800-cosine1e-4.json
#   EQ=auto COSINE_LR=1e-4 STEPS=4800 bash benchmarks/run_qat.sh long 8x  # --equalize auto first
#     -> qat-<arch>-fmpq-8x-eq-auto-s4800-cosine1e-4.json (also main: EQ=auto ... main w8a8)
#   LATENT=mixed ...: --latent-rounding mixed (the synthesis fed the rounded latent while
#     training) -> …-latent-mixed (e.g. LATENT=mixed ARCH=mbt2018-mean ... main w8a8
#     -> qat-mbt2018-mean-w8a8-latent-mixed.json)
#   QPARAMS=dpa ...: DynaQuant's DPA (per-channel learnable scale and zero point, weights and
#     activations) instead of the preset's LSQ scales -> …-dpa (e.g. QPARAMS=dpa LATENT=mixed
#     ARCH=mbt2018-mean ... main 6x -> qat-mbt2018-mean-fmpq-6x-dpa-latent-mixed.json); with
#     SCALE_LR=0.001 the scales' lr (default 1e-4) -> …-dpa-slr0.001
#   SEED=1 ...: training seed 1 instead of 0 -> …-seed1 (e.g. SEED=1 NAME_SFX=-ar-latent-fix
#     ALLOC=dp-monotone ARCH=cheng2020-anchor ... main 4x -> fmpq-4x-dp-monotone-seed1-ar-latent-fix)
#   NAME_SFX=-ar-latent-fix ...: that suffix on every results and run name (a re-run after a
#     fix, beside the earlier results)
#   CKPT_EVERY=N: a training checkpoint every N steps (default 100; the last step always saves one)
#   QUALITIES="1 2" ...: train only those qualities (no evaluation, no results file), so two
#     copies can share the four over two cores; then the same command without QUALITIES loads
#     the finished qualities and evaluates all four
# Every setting: `licq qat --preset fmpq` (RD loss, leaky clip 0.01, STE, LSQ log-scales) unless
# the ablation changes one switch; STEPS steps per quality (batch 8, 128 px crops of
# ../shared/data/train, weight lr 1e-5, scale lr 1e-4), 1 thread. Resumable: a finished results
# file is skipped, a finished quality is reloaded, an interrupted one resumes from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
LICQ=${LICQ:-.venv/bin/licq}
SHARED=${SHARED:-../shared}
STEPS=${STEPS:-300}
QUALITIES=${QUALITIES:-1 2 3 4}
read -ra QS <<< "$QUALITIES"
partial() { [[ ${#QS[@]} -lt 4 ]]; }  # a share of the qualities: train only
ARCH=${ARCH:-bmshj2018-hyperprior}  # ARCH=mbt2018-mean: the committed benchmarks/models/ baselines
# shellcheck source=benchmarks/baselines.sh
source benchmarks/baselines.sh
baseline_ckpts "$ARCH" "$SHARED"
for c in "${CKPTS[@]}"; do [[ -f $c ]] || { echo "$c: no such baseline" >&2; exit 2; }; done

NSFX=${NAME_SFX:-}  # appended to every run name: what run() writes and what the others read
run() {  # run NAME ARGS...   (PREFIX=dq to write dq-*.json)
  local name=$1$NSFX; shift
  local out=benchmarks/results/${PREFIX:-qat}-$ARCH-$name.json
  if [[ -f $out ]]; then echo "skip $name (done)"; return; fi
  local lock=runs/qat/$ARCH-$name.lock  # lets two copies of this script share the work
  local part=() ms=() q
  if partial; then part=(--no-eval) lock=runs/qat/$ARCH-$name-q$(printf %s "${QS[@]}").lock; fi
  for q in "${QS[@]}"; do ms+=("${CKPTS[q - 1]}"); done
  if [[ -f $lock ]] && kill -0 "$(cat "$lock")" 2>/dev/null; then echo "skip $name (running)"; return; fi
  mkdir -p runs/qat && echo $$ > "$lock"
  echo "$(date -Is) start $name (q ${QS[*]})"
  "$LICQ" qat -a $ARCH -m "${ms[@]}" -q "${QS[@]}" --train-dir "$SHARED/data/train" \
    -d "$SHARED/data/kodak" --threads 1 --no-progress --steps "$STEPS" \
    --run-dir "runs/qat/$ARCH-$name" --setting "$name" -o "$out" \
    --checkpoint-every "${CKPT_EVERY:-100}" "${part[@]}" "$@"
  rm -f "$lock"
}
ALLOC=${ALLOC:-dp}  # the allocation method whose run_fmpq.py results the fmpq settings train from
case $ALLOC in dp) MSFX= ;; dp-monotone) MSFX=-dp-monotone ;; *) echo "ALLOC=$ALLOC?" >&2; exit 2 ;; esac
fmpq() { echo "benchmarks/results/fmpq-$ARCH-$ALLOC-$1.json"; }
stop_if_partial() {  # with QUALITIES: no results file to read yet, so stop after training
  partial || return 0
  echo "$(date -Is) trained q ${QS[*]}; run again without QUALITIES to evaluate"; exit 0
}
need_dq() {  # need_dq NAME HOW: a dynamic run's results file, before its static comparator
  [[ ! -f benchmarks/results/dq-$ARCH-$1$NSFX.json ]] || return 0
  stop_if_partial  # a share: nothing to evaluate yet
  echo "dq-$ARCH-$1$NSFX.json does not exist (run $2 first)" >&2; exit 2
}
mean_bits() {  # mean_bits SETTING: a dynamic run's mean bits, rounded (its static comparator's B)
  .venv/bin/python -c "import json,sys; print(round(json.load(open(sys.argv[1]))['licq']['mean_bits']))" \
    "benchmarks/results/dq-$ARCH-$1$NSFX.json"
}
# COSINE_LR=1e-4 (long, dq-gamma): a cosine lr schedule from that lr; names get -cosine<lr>
SCHED=() CSFX=
[[ -z ${COSINE_LR:-} ]] || { SCHED=(--lr "$COSINE_LR" --lr-schedule cosine); CSFX=-cosine$COSINE_LR; }
# A_GS=10 (long): g_s's input activations at that precision; names get -a<A_GS>-g_s
ABITS=() ASFX=
[[ -z ${A_GS:-} ]] || { ABITS=(--layer-a-bits "re:^g_s(\.|$)=$A_GS"); ASFX=-a$A_GS-g_s; }
# EQ=auto (main, long; or an α): --equalize (licq.ptq.equalize) before quantizing; names get
# -eq-<EQ> after the allocation's name
EQA=() ESFX=
[[ -z ${EQ:-} ]] || { EQA=(--equalize "$EQ"); ESFX=-eq-$EQ; }
# LATENT=mixed (main, long; or ste): --latent-rounding (licq.qat.loop.LATENT_ROUNDINGS: mixed
# feeds the synthesis the rounded latent, the rate the noisy one); names get -latent-<LATENT>
# after -eq-<EQ>
LATA=() LSFX=
[[ -z ${LATENT:-} ]] || { LATA=(--latent-rounding "$LATENT"); LSFX=-latent-$LATENT; }
# QPARAMS=dpa (main, long; or fixed): --qparams instead of the preset's lsq (DPA: learnable
# per-channel scale and zero point, activations too); names get -<QPARAMS> after -eq-<EQ>
# SCALE_LR=0.001 (main, long): the scales' Adam lr instead of 1e-4; names get -slr<SCALE_LR> after it
QPA=() QSFX=
[[ -z ${QPARAMS:-} ]] || { QPA=(--qparams "$QPARAMS"); QSFX=-$QPARAMS; }
[[ -z ${SCALE_LR:-} ]] || { QPA+=(--scale-lr "$SCALE_LR"); QSFX+=-slr$SCALE_LR; }
# INIT=rdo-ptq (main): start from the RD-optimised reconstruction (licq ptq --method rdo) instead
# of the calibrated model; names get -init-rdo-ptq before -seed<N>
INITA=() ISFX=
[[ -z ${INIT:-} ]] || { INITA=(--init "$INIT"); ISFX=-init-$INIT; }
# SEED=N (main, long): another training seed (crops, noise; the calibration stays the same);
# names get -seed<N> at the end (before NAME_SFX)
SEEDA=() SSFX=
[[ -z ${SEED:-} ]] || { SEEDA=(--seed "$SEED"); SSFX=-seed$SEED; }
seed_from() {  # seed_from SRC DST: DST's runs start from SRC's final training checkpoints
  local src=runs/qat/$ARCH-$1$NSFX dst=runs/qat/$ARCH-$2$NSFX
  [[ ! -d $dst ]] || return 0  # seeded before (it resumes from its own checkpoints)
  [[ -f benchmarks/results/qat-$ARCH-$1$NSFX.json ]] || { echo "$1$NSFX is not finished" >&2; exit 2; }
  for q in 1 2 3 4; do
    mkdir -p "$dst/q$q" && cp "$src/q$q/checkpoint.pth.tar" "$dst/q$q/"
  done
}

mode=${1:-main}
[[ $ALLOC == dp || $mode == main || $mode == long ]] || {
  echo "ALLOC=$ALLOC: main and long modes only" >&2; exit 2; }
case $mode in
  main)  # all four in this order, or some: bash benchmarks/run_qat.sh main w8a8 6x
    shift $(($# > 0))  # (main is also the default mode, given with no argument)
    items=("$@")
    [[ ${#items[@]} -gt 0 ]] || items=(w8a8 6x 4x 8x)
    for it in "${items[@]}"; do
      case $it in
        w8a8) run "w8a8$ESFX$QSFX$LSFX$ISFX$SSFX" --preset fmpq --w-bits 8 --a-bits 8 "${EQA[@]}" \
          "${QPA[@]}" "${LATA[@]}" "${INITA[@]}" "${SEEDA[@]}" ;;
        4x|6x|8x)
          [[ -f $(fmpq "$it") ]] || {
            echo "$(fmpq "$it"): no allocation (run_fmpq.py --arch $ARCH --methods $ALLOC)" >&2; exit 2; }
          run "fmpq-$it$MSFX$ESFX$QSFX$LSFX$ISFX$SSFX" --preset fmpq --bit-config "$(fmpq "$it")" \
            "${EQA[@]}" "${QPA[@]}" "${LATA[@]}" "${INITA[@]}" "${SEEDA[@]}" ;;
        *) echo "unknown main step $it" >&2; exit 2 ;;
      esac
    done
    ;;
  a10-gs)  # W8A8 with g_s's input activations at 10 bit (benchmarks/configs/w8a8-a10-g_s.json: a
    # committed copy of the config act_floor.sh A_BITS=10 GROUPS_=g_s writes under runs/), the fix
    # the PTQ floor analysis points to
    run w8a8-a10-g_s --preset fmpq --bit-config benchmarks/configs/w8a8-a10-g_s.json
    ;;
  long)  # all three, or: STEPS=2400 bash benchmarks/run_qat.sh long 8x 4x
    # FROM=2400 STEPS=4800 ... long 8x: continue fmpq-8x-s2400's final checkpoints (the same as
    # training 4800 steps at once: resume is exact and the lr constant)
    # COSINE_LR=1e-4 ... long 8x: cosine lr schedule from 1e-4 -> fmpq-8x-s<STEPS>-cosine1e-4
    shift
    ratios=("$@")
    [[ ${#ratios[@]} -gt 0 ]] || ratios=(6x 8x 4x)
    for r in "${ratios[@]}"; do
      [[ -z ${FROM:-} ]] || seed_from "fmpq-$r$MSFX-s$FROM" "fmpq-$r$MSFX-s$STEPS"
      run "fmpq-$r$MSFX$ASFX$ESFX$QSFX$LSFX-s$STEPS$CSFX$SSFX" --preset fmpq \
        --bit-config "$(fmpq "$r")" "${SCHED[@]}" "${ABITS[@]}" "${EQA[@]}" "${QPA[@]}" "${LATA[@]}" \
        "${SEEDA[@]}"
    done
    ;;
  decay)  # FROM=4800 STEPS=6000 bash benchmarks/run_qat.sh decay 8x: continue fmpq-8x-s4800's
    # final checkpoints with a cosine lr decay from step FROM to STEPS -> fmpq-8x-s6000-decay4800
    shift
    for r in "$@"; do
      seed_from "fmpq-$r-s$FROM" "fmpq-$r-s$STEPS-decay$FROM"
      run "fmpq-$r-s$STEPS-decay$FROM" --preset fmpq --bit-config "$(fmpq "$r")" \
        --lr-schedule cosine --lr-decay-start "$FROM"
    done
    ;;
  ablations)  # all five, or: bash benchmarks/run_qat.sh ablations dpa dgm
    shift
    names=("$@")
    [[ ${#names[@]} -gt 0 ]] || names=(distortion-loss hard-clip dgm fixed dpa)
    for a in "${names[@]}"; do
      case $a in
        distortion-loss) run 6x-distortion-loss --preset fmpq --bit-config "$(fmpq 6x)" --loss distortion ;;
        hard-clip) run 6x-hard-clip --preset fmpq --bit-config "$(fmpq 6x)" --clip hard ;;
        dgm) run 6x-dgm --preset fmpq --bit-config "$(fmpq 6x)" --rounding dgm ;;
        fixed) run 6x-fixed --preset fmpq --bit-config "$(fmpq 6x)" --qparams fixed ;;
        dpa) run 6x-dpa --preset fmpq --bit-config "$(fmpq 6x)" --qparams dpa ;;
        *) echo "unknown ablation $a" >&2; exit 2 ;;
      esac
    done
    ;;
  dq)  # all four steps in this order, or some: bash benchmarks/run_qat.sh dq 4-6-8 static:4-6-8
    # (static:C trains the static comparator of C's measured mean bits, so C's results file
    # must exist; with QUALITIES each step trains its share only)
    shift
    items=("$@")
    [[ ${#items[@]} -gt 0 ]] || items=(4-6-8 6-8-10 static:4-6-8 static:6-8-10)
    for it in "${items[@]}"; do
      case $it in
        4-6-8|6-8-10) PREFIX=dq run "$it" --preset dynaquant --candidates ${it//-/ } ;;
        static:4-6-8|static:6-8-10)
          c=${it#static:}
          need_dq "$c" "dq $c"
          b=$(mean_bits "$c")
          PREFIX=dq run "static-w$b" --preset dynaquant-q --w-bits "$b" --a-bits "$b" ;;
        *) echo "unknown dq step $it" >&2; exit 2 ;;
      esac
    done
    ;;
  dq-gamma)  # a stronger bits penalty (γ of L_bits, GAMMA, default 0.05) than the preset's 0.01;
    # STEPS=1200: -s1200 names; COSINE_LR=1e-4: both runs with a cosine lr schedule from 1e-4
    # (-cosine1e-4 names)
    # (dq-gamma dynamic: the dynamic run only; dq-gamma static: the comparator only)
    case ${2:-} in ''|dynamic|static) ;; *) echo "unknown dq-gamma step $2" >&2; exit 2 ;; esac
    g=${GAMMA:-0.05}
    sfx=$([[ $STEPS == 300 ]] || echo "-s$STEPS")$CSFX
    [[ ${2:-} == static ]] || PREFIX=dq run "4-6-8-gamma$g$sfx" --preset dynaquant \
      --candidates 4 6 8 --bits-weight "$g" "${SCHED[@]}"
    [[ ${2:-} != dynamic ]] || exit 0
    # with QUALITIES: once the dynamic run is evaluated, the same command trains the static
    # comparator's share
    need_dq "4-6-8-gamma$g$sfx" "dq-gamma dynamic"
    b=$(mean_bits "4-6-8-gamma$g$sfx")
    PREFIX=dq run "static-w$b$sfx" --preset dynaquant-q --w-bits "$b" --a-bits "$b" "${SCHED[@]}"
    ;;
  *) echo "usage: $0 main|a10-gs|long|decay|ablations|dq|dq-gamma" >&2; exit 2 ;;
esac
echo "$(date -Is) done $mode"
