#!/usr/bin/env bash
# LibriTTS train-clean-100 + train-clean-360 (about 1,100 speakers, 245 h, 24 kHz), Vocos mel convention.
# Get the corpus from https://www.openslr.org/60/ (train-clean-100.tar.gz, train-clean-360.tar.gz, dev-clean.tar.gz).
# Usage: bash egs/libritts/run.sh --data /path/to/LibriTTS [--stage N] [--stop-stage N] [--dry-run] [--exp DIR]
# Stages: 0 check corpus, 1 teacher, 2 CD, 3 CT, 4 export, 5 evaluate, 6 vocode examples
set -euo pipefail
cd "$(dirname "$0")/../.."
source egs/stages.sh
name=libritts; fmt=libritts; data=data/LibriTTS; exp=exp/$name
parse_stage_args "$@"
source egs/corpus_stages.sh
