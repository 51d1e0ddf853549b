#!/usr/bin/env bash
# GPU run of the mini recipes (issue 10), in one go within ~8 minutes on one H100:
#   versions and CUDA check; `cmaudio bench --device cuda` (bf16, batch 1 and 16, with peers);
#   mini_teacher, mini_cd and mini_ct at larger budgets with bf16 and batch 64; export; evaluation
#   on the embedded held-out clips (1 and 2 steps, and the teacher at 6 and 50 steps).
# Everything lands under OUT_DIR: log.txt, bench_cuda.json, summary.md, results.tgz (reports,
# wavs of the 3 held-out utterances, spectrograms), model_cd.tgz and model_ct.tgz (exported models).
# Every phase has a timeout, so the whole run stays under ~8 minutes even when one phase stalls.
# Usage: bash egs/gpu/run.sh OUT_DIR [--tiny]     (--tiny: a CPU rehearsal with tiny sizes)
# Missing Python packages can be brought as wheels in .whl/ (see egs/gpu/README.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: egs/gpu/run.sh OUT_DIR [--tiny]}
TINY=${2:-}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
t_start=$(date +%s)
stamp() { echo "[gpu-run +$(( $(date +%s) - t_start ))s] $*"; }

if [ "$TINY" != "--tiny" ] && compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
cm() { python3 -m cmaudio "$@"; }

stamp "versions"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 - <<'PY'
import platform, torch, torchaudio
print("python", platform.python_version(), "torch", torch.__version__, "torchaudio", torchaudio.__version__)
print("cuda available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
for m in ("librosa", "soundfile", "auraloss", "pesq", "pystoi", "diffwave", "vocos", "tensorboard", "matplotlib"):
    try:
        mod = __import__(m); print(m, getattr(mod, "__version__", "ok"))
    except Exception as e:  # noqa: BLE001
        print(m, "MISSING", e)
PY

if [ "$TINY" = "--tiny" ]; then
  DEV=cpu; DTYPE=fp32; BATCH=2; SIZE=(--set model.size=tiny --set data.segment_length=2048)
  TEACHER_SIZE=(--set model.size=tiny); T_MIN=0.2; PROBE=3; BENCH_ARGS=(--seconds 0.1 --repeats 1 --no-peers)
  TSTEPS=6
else
  DEV=cuda; DTYPE=bf16; BATCH=64; SIZE=(); TEACHER_SIZE=(--set model.size=base --set data.segment_length=8192); T_MIN=1.0; PROBE=40
  BENCH_ARGS=(--seconds 1 --repeats 5); TSTEPS=6,50
fi
common=(--set train.device=$DEV --set train.batch_size=$BATCH --set train.val_every=100000 --set train.ckpt_every=500
        --set train.log_every=50 --set train.warmup_steps=200)
[ "$DEV" = cuda ] && common+=(--set train.amp=bf16)

stamp "bench"
timeout 90 python3 -m cmaudio bench --device $DEV --dtype $DTYPE --batch 1,16 "${BENCH_ARGS[@]}" --json "$OUT/bench_cuda.json" --overwrite \
  || stamp "bench failed or timed out"

stamp "teacher"
timeout 85 python3 -m cmaudio train recipes/mini_teacher.yaml "${common[@]}" "${TEACHER_SIZE[@]}" --set train.max_steps=100000 \
  --set train.max_minutes=$T_MIN --set train.lr=0.0002 --run-dir exp/gpu/teacher --quiet || stamp "teacher failed"

stamp "cd"
timeout 85 python3 -m cmaudio train recipes/mini_cd.yaml "${common[@]}" "${SIZE[@]}" --set objective.teacher=exp/gpu/teacher \
  --set train.max_steps=100000 --set train.max_minutes=$T_MIN --set train.lr=0.0002 --run-dir exp/gpu/cd --quiet || stamp "cd failed"

stamp "ct: probe the step rate so the iCT curriculum fits the time budget"
probe=$(timeout 45 python3 -m cmaudio train recipes/mini_ct.yaml "${common[@]}" "${SIZE[@]}" --set train.max_steps=$PROBE \
  --run-dir exp/gpu/ct_probe --quiet 2>&1 | tee /dev/stderr | sed -n 's/.*(\([0-9.]*\) steps\/s.*/\1/p' | tail -1)
steps=$(python3 -c "import sys; r=float(sys.argv[1] or 1); print(max(int(r*60*float(sys.argv[2])*0.9), 20))" "${probe:-1}" "$T_MIN")
stamp "ct: $steps steps at ${probe:-?} steps/s"
timeout 85 python3 -m cmaudio train recipes/mini_ct.yaml "${common[@]}" "${SIZE[@]}" --set train.max_steps=$steps \
  --set train.max_minutes=$T_MIN --set train.lr=0.0002 --run-dir exp/gpu/ct --quiet || stamp "ct failed"

stamp "export"
for m in teacher cd ct; do cm export exp/gpu/$m -o exp/gpu/models/$m || stamp "export $m failed"; done

stamp "evaluate"
# the metrics whose packages the GPU image has (the eval extra's ViSQOL/DNSMOS/CREPE may be absent there)
EVAL_METRICS=${EVAL_METRICS:-pesq,stoi,mrstft,logmel_l1,mcd,f0_rmse_cents,vuv_error}
timeout 100 python3 -m cmaudio evaluate egs/mini/data/ljspeech_mini -m exp/gpu/models/cd --steps 1,2 --metrics $EVAL_METRICS \
  --teacher exp/gpu/models/teacher --teacher-steps $TSTEPS --device $DEV -o exp/gpu/report_cd --overwrite || stamp "evaluate cd failed"
timeout 70 python3 -m cmaudio evaluate egs/mini/data/ljspeech_mini -m exp/gpu/models/ct --steps 1,2 --device $DEV --metrics $EVAL_METRICS \
  -o exp/gpu/report_ct --overwrite || stamp "evaluate ct failed"

stamp "collect"
{
  echo "# GPU run summary"; echo; echo "training (final lines):"
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
  for r in cd ct; do echo; echo "## report_$r"; cat exp/gpu/report_$r/report.md 2>/dev/null || echo "(missing)"; done
} > "$OUT/summary.md"
grep -h "done:" "$OUT/log.txt" >> "$OUT/summary.md" || true
tar czf "$OUT/results.tgz" exp/gpu/report_cd exp/gpu/report_ct $(ls -d exp/gpu/*/samples 2>/dev/null) exp/gpu/*/config.yaml 2>/dev/null
for m in cd ct; do tar czf "$OUT/model_$m.tgz" exp/gpu/models/$m 2>/dev/null; done
ls -la "$OUT"
stamp "finished"
