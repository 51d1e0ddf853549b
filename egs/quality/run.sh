#!/usr/bin/env bash
# The quality ladder: every contender trained on the embedded mini set's train clips for the same
# wall-clock budget on this machine, then evaluated on the held-out clips (LJ001-0011, -0017, -0027,
# the hash split of recipes/_mini.yaml) at 1, 2 and 4 steps, beside Griffin-Lim and the ground truth.
# Writes $exp/ladder.md (the table), $exp/ladder.png (held-out log-mel L1 / MR-STFT against training
# minutes, from each run's validations) and $exp/ladder.json.
#
# Usage: bash egs/quality/run.sh [--exp DIR] [--only "NAME ..."] [--jobs N] [--threads N] [--more DIR] [--dry-run]
#   NAME (default: all, in this order: ict30 vocos30 gl cd30 extras30 ict10 cd10 vocos10 extras10 before10):
#     gl          Griffin-Lim (32 and 64 iterations), no training, on the clips of a trained contender's split
#     ict10 cd10 vocos10 extras10             10-minute budgets
#     ict30 cd30 vocos30 extras30             30-minute budgets
#     before10    the mini iCT recipe before the ladder's changes (wave U-Net small, batch 4,
#                 pseudo-Huber + MR-STFT consistency distance, no reconstruction term)
#   cdNN: the teacher (recipes/mini_teacher.yaml) gets a third of the budget, CD the rest, both counted.
#   extrasNN: the same network and reconstruction terms as ictNN with the consistency term off (the
#   ablation: what the consistency term adds, above all at 2 and 4 steps).
#   vocosNN: the Vocos GAN peer (egs/quality/vocos_peer.py: the vocos package's generator, MPD/MRD and losses).
# --more DIR also scores each trained contender (and Griffin-Lim) on every clip of the ljspeech-format corpus
#   DIR, first 4 s, at 1 and 2 steps, into $exp/NAME/report_more (table: $exp/ladder_more.md), with the seven
#   cheaper metrics (Distill-MOS first; no ViSQOL, no CREPE). Three held-out clips give each mean a wide
#   interval; more clips give power to paired comparisons (egs/quality/paired.py). DIR must hold none of the embedded clips (the
#   script refuses it), e.g. the rest of LJSpeech. Not for the Vocos peer (its own evaluation path).
# --jobs N runs N contenders side by side (each with --threads torch threads, default 2 / N): on a
# 2-core machine use --jobs 2 --threads 1 and compare only rows measured the same way.
# A contender whose report exists is skipped; a cut training resumes (--resume), so the script can run
# in the background and be started again. Calls only the public CLI (and the peer script).
set -euo pipefail
cd "$(dirname "$0")/../.."
source egs/stages.sh
data=egs/mini/data/ljspeech_mini
exp=exp/quality
only=""
more=""
jobs=1
threads=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --more) more="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
parse_stage_args "${args[@]+"${args[@]}"}"
[ -n "$threads" ] || threads=$(( $(nproc) / jobs > 0 ? $(nproc) / jobs : 1 ))
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
all="ict30 vocos30 gl cd30 extras30 ict10 cd10 vocos10 extras10 before10"
[ -n "$only" ] || only="$all"
evalargs=(--steps 1,2,4 --split heldout --max-seconds 4)  # issue 14's protocol: the first 4 s of each clip
moremetrics=nmos,pesq,stoi,logmel_l1,mrstft,mcd,dnsmos_ovrl
moreargs=(--steps 1,2 --split all --max-seconds 4 --metrics "$moremetrics")
if [ -n "$more" ]; then
  [ -f "$more/metadata.csv" ] && [ -d "$more/wavs" ] || { echo "--more $more: not an ljspeech-format corpus (metadata.csv, wavs/)" >&2; exit 2; }
  for w in "$data"/wavs/*.wav; do
    if [ -e "$more/wavs/$(basename "$w")" ]; then
      echo "--more $more: it holds $(basename "$w" .wav), a clip of the embedded set the contenders train or are evaluated on" >&2
      exit 2
    fi
  done
fi

# Steps per budget: what the mini recipes reach in that many minutes at 1 thread each on the 2-core dev
# box (measured; the curricula's K follow them). train.max_minutes is the cap.
ict_steps() { echo $(( $1 * 80 )); }
teacher_steps() { echo $(( $1 * 120 )); }
cd_steps() { echo $(( $1 * 60 )); }

evaluate() {  # evaluate NAME MODEL_DIR
  run cmaudio evaluate "$data" -m "$2" "${evalargs[@]}" -o "$exp/$1/report" --overwrite
}

more_eval() {  # more_eval NAME: the --more clips, when asked, for a contender with a model directory
  [ -n "$more" ] || return 0
  [ -f "$exp/$1/report_more/report.json" ] && return 0
  case "$1" in
    gl) run cmaudio evaluate "$more" -m "$(gl_model)" --steps 1 --baseline griffinlim --split all --max-seconds 4 --seed 0 \
          --metrics "$moremetrics" -o "$exp/$1/report_more" --overwrite ;;
    vocos*) echo "$1: --more is not measured for the Vocos peer" >&2 ;;
    *) run cmaudio evaluate "$more" -m "$exp/$1/model" "${moreargs[@]}" -o "$exp/$1/report_more" --overwrite ;;
  esac
}

gl_model() {  # a trained contender's model, so the held-out split is the mini recipes' (val_fraction 0.15)
  local m
  m=$(ls -d "$exp"/ict30/model "$exp"/ict10/model 2>/dev/null | head -n 1 || true)
  echo "${m:-$exp/ict30/model}"
}

budget() {  # budget NAME TEXT: what the contender was given (read by table.py)
  [ "$dry_run" = 1 ] || { mkdir -p "$exp/$1"; echo "$2" > "$exp/$1/budget.txt"; }
}

contender() {
  local name=$1 min
  min=${name//[!0-9]/}
  if [ -f "$exp/$name/report/report.json" ]; then
    echo "$name: measured already ($exp/$name/report)" >&2
    more_eval "$name"
    return 0
  fi
  case "$name" in
    gl)
      budget "$name" "no training"
      run cmaudio evaluate "$data" -m "$(gl_model)" --steps 1 --baseline griffinlim --split heldout --max-seconds 4 --seed 0 \
        -o "$exp/$name/report" --overwrite ;;
    ict*)
      budget "$name" "$min min"
      run cmaudio train recipes/mini_ct.yaml --set data.root="$data" --set train.max_steps="$(ict_steps "$min")" \
        --set train.max_minutes="$min" --run-dir "$exp/$name/run" --resume --quiet
      [ -d "$exp/$name/model" ] || run cmaudio export "$exp/$name/run" -o "$exp/$name/model"
      evaluate "$name" "$exp/$name/model" ;;
    before*)
      budget "$name" "$min min"
      run cmaudio train recipes/mini_ct.yaml --set data.root="$data" --set train.max_steps=$(( min * 150 )) \
        --set train.max_minutes="$min" --set model.net=unet1d --set model.frame_prior_iters=0 --set train.batch_size=4 --set objective.p_mean=-2.85 \
        --set 'objective.distance={pseudo_huber: 1.0, mrstft: 1.0}' --set 'objective.recon={}' \
        --run-dir "$exp/$name/run" --resume --quiet
      [ -d "$exp/$name/model" ] || run cmaudio export "$exp/$name/run" -o "$exp/$name/model"
      evaluate "$name" "$exp/$name/model" ;;
    extras*)
      budget "$name" "$min min"
      run cmaudio train recipes/mini_ct.yaml --set data.root="$data" --set train.max_steps="$(ict_steps "$min")" \
        --set train.max_minutes="$min" --set objective.consistency_weight=0 --run-dir "$exp/$name/run" --resume --quiet
      [ -d "$exp/$name/model" ] || run cmaudio export "$exp/$name/run" -o "$exp/$name/model"
      evaluate "$name" "$exp/$name/model" ;;
    cd*)
      local tmin=$(( min / 3 )) cmin=$(( min - min / 3 ))
      budget "$name" "$min min (teacher $tmin + CD $cmin)"
      run cmaudio train recipes/mini_teacher.yaml --set data.root="$data" --set train.max_steps="$(teacher_steps "$tmin")" \
        --set train.max_minutes="$tmin" --run-dir "$exp/$name/run0_teacher" --resume --quiet
      run cmaudio train recipes/mini_cd.yaml --set data.root="$data" --set objective.teacher="$exp/$name/run0_teacher" \
        --set train.max_steps="$(cd_steps "$cmin")" --set train.max_minutes="$cmin" --run-dir "$exp/$name/run1_cd" --resume --quiet
      [ -d "$exp/$name/model" ] || run cmaudio export "$exp/$name/run1_cd" -o "$exp/$name/model"
      evaluate "$name" "$exp/$name/model" ;;
    vocos*)
      budget "$name" "$min min"
      run python egs/quality/vocos_peer.py "$exp/$name/run" --recipe recipes/mini_ct.yaml --minutes "$min" --resume
      run python egs/quality/vocos_peer.py "$exp/$name/run" --recipe recipes/mini_ct.yaml --evaluate "$exp/$name/report" --max-seconds 4 ;;
    *) echo "unknown contender $name (see --help)" >&2; return 2 ;;
  esac
  more_eval "$name"
}

[ "$dry_run" = 1 ] || mkdir -p "$exp"
running=0
for name in $only; do
  if [ "$jobs" -gt 1 ] && [ "$dry_run" = 0 ]; then
    contender "$name" > "$exp.$name.log" 2>&1 &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
  else
    contender "$name"
  fi
done
wait
[ "$dry_run" = 1 ] || python egs/quality/table.py "$exp"
