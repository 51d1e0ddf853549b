#!/usr/bin/env bash
# VCTK 0.92 (110 speakers, 44 h, 48 kHz flac; resampled to 22.05 kHz on load), multi-speaker.
# Get the corpus from https://datashare.ed.ac.uk/handle/10283/3443 (VCTK-Corpus-0.92.zip, 11 GB).
# Usage: bash egs/vctk/run.sh --data /path/to/VCTK-Corpus-0.92 [--stage N] [--stop-stage N] [--dry-run] [--exp DIR]
# Stages: 0 check corpus, 1 teacher, 2 CD, 3 CT, 4 export, 5 evaluate, 6 vocode examples
set -euo pipefail
cd "$(dirname "$0")/../.."
source egs/stages.sh
name=vctk; fmt=vctk; data=data/VCTK-Corpus-0.92; exp=exp/$name
parse_stage_args "$@"
source egs/corpus_stages.sh
