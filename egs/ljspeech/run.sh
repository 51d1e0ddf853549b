#!/usr/bin/env bash
# LJSpeech (13,100 clips, 24 h, one speaker, 22.05 kHz): teacher -> CD, and iCT, on one or more GPUs.
# Get the corpus from https://keithito.com/LJ-Speech-Dataset/ (LJSpeech-1.1.tar.bz2, 2.6 GB) and unpack it.
# Usage: bash egs/ljspeech/run.sh --data /path/to/LJSpeech-1.1 [--stage N] [--stop-stage N] [--dry-run] [--exp DIR]
#   NGPU=8 runs training under torchrun with 8 processes (train.batch_size is the global batch).
# Stages: 0 check corpus, 1 teacher, 2 CD, 3 CT, 4 export, 5 evaluate, 6 vocode examples
set -euo pipefail
cd "$(dirname "$0")/../.."
source egs/stages.sh
name=ljspeech; fmt=ljspeech; data=data/LJSpeech-1.1; exp=exp/$name
parse_stage_args "$@"
source egs/corpus_stages.sh
