#!/usr/bin/env bash
# One study end to end on a 2-core CPU: the tuning sweep and the final sweep, each as two 1-thread
# processes side by side (split by seed), the per-arm lr chosen on validation in between, then the report.
#   experiments/run_study.sh digits_blocks [axial2_complex]      # study name, report baseline
# Rerunning resumes (finished jobs are skipped by their checkpoints). Needs the venv and PYTHONPATH=$PWD.
set -euo pipefail
study=${1:?usage: experiments/run_study.sh <study> [baseline]}
baseline=${2:-}
export WANDB_MODE=${WANDB_MODE:-disabled}
# Each process gets its own sweep directory below multirun/<study>: a job directory is named after the
# values that vary inside its sweep, so two processes that split the seeds must not share one (their
# jobs would collide; the checkpoint fingerprint refuses the second seed). tune and report read every
# job below multirun/<study>.
two() { # sweep dir, preset, seeds of process 1, seeds of process 2
  python train.py -m "experiment=study/$2" "hydra.sweep.dir=multirun/$1/part1" "seed=$3" > "multirun/$1.a.log" 2>&1 &
  local first=$!
  python train.py -m "experiment=study/$2" "hydra.sweep.dir=multirun/$1/part2" "seed=$4" > "multirun/$1.b.log" 2>&1
  wait "$first"
}
mkdir -p multirun
time two "${study}_tune" "${study}_tune" 100 101
python -m rope_ext.tune "multirun/${study}_tune" --study "$study"
time two "$study" "$study" 0,2,4,6 1,3,5,7
# the final jobs' names carry their seed: gather them into one sweep so the report pools all 8 seeds per arm
mkdir -p "multirun/$study/seeds_0-7" && mv "multirun/$study"/part[12]/+* "multirun/$study/seeds_0-7/"
rm -r "multirun/$study/part1" "multirun/$study/part2"
python -m rope_ext.report "multirun/$study" ${baseline:+--baseline "$baseline"} --out "experiments/results/$study"
