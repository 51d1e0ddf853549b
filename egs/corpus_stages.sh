# The stages shared by the full-corpus recipes (egs/{ljspeech,vctk,libritts}/run.sh). Sourced after
# stages.sh with name, fmt, data and exp set; calls only the public `cmaudio` command line.
if [ -n "${NGPU:-}" ] && [ "${NGPU}" -gt 1 ]; then
  train_cmd=(torchrun --nproc_per_node "$NGPU" -m cmaudio train)
else
  train_cmd=(cmaudio train)
fi
if in_stage 0 "check the corpus at $data"; then
  if [ "$dry_run" = 0 ] && [ ! -d "$data" ]; then
    echo "corpus not found at $data: pass --data /path/to/it (see the header of $0 for where to get it)" >&2
    exit 2
  fi
  run cmaudio data check "$data" --format "$fmt"
fi
if in_stage 1 "teacher (DiffWave, EDM denoising score matching)"; then
  run "${train_cmd[@]}" "recipes/${name}_teacher.yaml" --set data.root="$data" --run-dir "$exp/teacher" --resume
fi
if in_stage 2 "consistency distillation from the teacher"; then
  run "${train_cmd[@]}" "recipes/${name}_cd.yaml" --set data.root="$data" --set objective.teacher="$exp/teacher" \
    --run-dir "$exp/cd" --resume
fi
if in_stage 3 "consistency training (iCT), no teacher"; then
  run "${train_cmd[@]}" "recipes/${name}_ct.yaml" --set data.root="$data" --run-dir "$exp/ct" --resume
fi
if in_stage 4 "export model directories"; then
  for m in teacher cd ct; do run cmaudio export "$exp/$m" -o "$exp/models/$m" --onnx --overwrite; done
fi
if in_stage 5 "evaluate on held-out utterances"; then
  for m in cd ct; do
    run cmaudio evaluate "$data" --format "$fmt" -m "$exp/models/$m" --steps 1,2,4 --teacher "$exp/models/teacher" \
      --teacher-steps 6,50 --limit 100 --device cuda -o "$exp/report_$m" --overwrite
  done
fi
if in_stage 6 "vocode examples"; then
  run cmaudio evaluate "$data" --format "$fmt" -m "$exp/models/ct" --steps 1 --limit 5 -o "$exp/examples" --overwrite
fi
