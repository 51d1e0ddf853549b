#!/usr/bin/env bash
# The README's main job: on the embedded LJSpeech clips (egs/mini/data/ljspeech_mini), train a
# DiffWave teacher, distil a one-step U-Net vocoder from it (CD), train another from data alone
# (iCT), export all three, evaluate them on the held-out clips (1 and 2 steps, and the teacher),
# vocode examples, and train a mel-domain decoder whose output the vocoder turns into speech.
# About 10 minutes on 2 CPU cores. Usage: bash egs/mini/run.sh [--stage N] [--stop-stage N] [--dry-run] [--exp DIR]
#
# Stages: 0 check data, 1 teacher, 2 CD, 3 CT, 4 export, 5 evaluate, 6 vocode, 7 mel decoder
set -euo pipefail
cd "$(dirname "$0")/../.."
source egs/stages.sh
data=egs/mini/data/ljspeech_mini
exp=exp/mini
parse_stage_args "$@"
# CPU budget per model: at most MINI_STEPS steps and MINI_MINUTES minutes (the demo stays near 10 minutes
# on 2 cores whatever the machine's speed); raise both for better audio
budget=(--set train.max_steps="${MINI_STEPS:-400}" --set train.max_minutes="${MINI_MINUTES:-2.5}")
read -r -a extra <<< "${MINI_EXTRA:-}"               # more --set overrides for every training (tests use tiny nets)
budget+=("${extra[@]}")
eval_seconds=${MINI_EVAL_SECONDS:-4}
# Every metric but CREPE periodicity (about 2 CPU-seconds per audio second per row), to keep the demo's budget;
# `cmaudio evaluate` without --metrics computes them all.
eval_metrics=${MINI_EVAL_METRICS:-nmos,pesq,stoi,visqol,mrstft,logmel_l1,mcd,f0_rmse_cents,vuv_error,dnsmos_ovrl,dnsmos_sig}

if in_stage 0 "check the embedded corpus"; then
  run cmaudio data check "$data" --format ljspeech --sample-rate 22050
fi
if in_stage 1 "teacher (DiffWave, EDM denoising score matching)"; then
  run cmaudio train recipes/mini_teacher.yaml "${budget[@]}" --set data.root="$data" --run-dir "$exp/teacher" --resume --quiet
fi
if in_stage 2 "consistency distillation from the teacher"; then
  run cmaudio train recipes/mini_cd.yaml "${budget[@]}" --set data.root="$data" --set objective.teacher="$exp/teacher" \
    --run-dir "$exp/cd" --resume --quiet
fi
if in_stage 3 "consistency training (iCT) from data alone"; then
  run cmaudio train recipes/mini_ct.yaml "${budget[@]}" --set data.root="$data" --run-dir "$exp/ct" --resume --quiet
fi
if in_stage 4 "export model directories"; then
  for m in teacher cd ct; do
    run cmaudio export "$exp/$m" -o "$exp/models/$m" --overwrite
  done
fi
if in_stage 5 "evaluate on the held-out clips"; then
  for m in cd ct; do
    run cmaudio evaluate "$data" -m "$exp/models/$m" --steps 1,2 --teacher "$exp/models/teacher" --teacher-steps 6 \
      --baseline griffinlim --with-default --metrics "$eval_metrics" --max-seconds "$eval_seconds" -o "$exp/report_$m" --overwrite
  done
fi
if in_stage 6 "vocode mels of the held-out clips"; then
  run cmaudio mel "$data/wavs/LJ001-0011.wav" "$data/wavs/LJ001-0017.wav" "$data/wavs/LJ001-0027.wav" -o "$exp/mels" --preset hifigan --overwrite
  for m in cd ct; do
    run cmaudio vocode "$exp/mels" -m "$exp/models/$m" -o "$exp/wavs_$m" --steps 1 --overwrite
  done
fi
if in_stage 7 "mel decoder (TTS-side): train, decode a stand-in prior, vocode"; then
  run cmaudio train recipes/mini_mel_ct.yaml --set train.max_steps="${MINI_MEL_STEPS:-300}" "${extra[@]}" --set data.root="$data" --run-dir "$exp/mel_ct" --resume --quiet
  run cmaudio export "$exp/mel_ct" -o "$exp/models/mel_ct" --overwrite
  # .wav inputs: the decoder is fed the stand-in prior (an over-smoothed mel) computed from each clip
  run cmaudio mel-decode "$data/wavs/LJ001-0011.wav" "$data/wavs/LJ001-0017.wav" -m "$exp/models/mel_ct" -o "$exp/mel_decoded" --overwrite
  run cmaudio vocode "$exp/mel_decoded" -m "$exp/models/ct" -o "$exp/wavs_mel_decoder" --overwrite
fi
if [ "$dry_run" = 0 ]; then
  cat <<MSG
Done. Outputs in $exp:
  reports (open in a browser): $exp/report_cd/report.html  $exp/report_ct/report.html
  metrics tables:              $exp/report_cd/report.md    $exp/report_ct/report.md
  vocoded wavs:                $exp/wavs_cd/  $exp/wavs_ct/  $exp/wavs_mel_decoder/
  training plots and samples:  $exp/{teacher,cd,ct,mel_ct}/samples/ (tensorboard --logdir $exp)
  models:                      $exp/models/
MSG
fi
