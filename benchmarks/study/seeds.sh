#!/bin/bash
# How the seeds-etth1 results (issue 32: seeds 2022 and 2023 of the study's deciding runs) are run: one model and one
# seed at a time, each dense run followed at once by its 36 prune runs, so that a machine lost with its disk costs at
# most one (model, seed) in progress. The committed records are the progress: on a new machine copy them into the
# sweep directory and run this again; a finished (model, seed) is skipped, a half-done one retrains its dense run
# (--rebuild-dense: deterministic at 2 threads) and goes on.
#
#   benchmarks/study/seeds.sh CODE_DIR SWEEP_DIR MODEL:SEED [MODEL:SEED ...]
#   PRESET=recipes-etth1 REUSE=runs/seeds-etth1/sweep benchmarks/study/seeds.sh CODE_DIR SWEEP_DIR MODEL:SEED ...
#
# PRESET (default seeds-etth1) names the preset whose (model, seed) families run; REUSE, a sweep directory whose
# dense runs of the same configuration are copied instead of trained (issue 33's confirmation takes seeds 2022
# and 2023 from seeds-etth1's).
#
# CODE_DIR is a frozen copy of tsprune (`git archive REV | tar -x -C CODE_DIR`); every record names that commit.
# One worker at 2 threads (the preset's measure.threads, so pruning and fine-tuning run at 2 threads as in
# study-etth1); no timings (the preset's measure.timed is false): the speed claims are seed 2021's.
set -u
# Background training shares the 2 cores with a second job (the recipes chain beside the seeds). OpenMP's default
# spins at every barrier, burning the core the other job needs: two concurrent 2-thread Transformer training steps
# (batch 32, default size) took 7.4 s each that way and 4.1-4.4 s with passive waiting (AMD EPYC Zen 3; one alone:
# 2.5 s). Passive waiting changes no number, only who gets the core; these runs time nothing that is reported.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
CODE=$(realpath "$1"); S=$(realpath -m "$2"); shift 2
HERE=$(dirname "$(realpath "$0")")
PY=${PYTHON:-python}
run() { PYTHONPATH=$CODE/src $PY "$@"; }
mkdir -p "$S/specs"
for PAIR in "$@"; do
  M=${PAIR%%:*}; SEED=${PAIR##*:}
  SPEC="$S/specs/$M-$SEED.yaml"
  run "$HERE/make_spec.py" "${PRESET:-seeds-etth1}" "$M" "$SEED" > "$SPEC"
  if run "$HERE/family_done.py" "$SPEC" "$S/sweep" --recorded 2>/dev/null; then
    echo "$(date -Is) $M seed $SEED: already done"; continue
  fi
  echo "$(date -Is) $M seed $SEED: start ($CODE)"
  run -m tsprune.cli sweep run "$SPEC" --dir "$S/sweep" --workers 1 --threads 2 --rebuild-dense \
    ${REUSE:+--reuse-dense "$REUSE"} --no-progress
  if run "$HERE/family_done.py" "$SPEC" "$S/sweep" --recorded; then
    echo "$(date -Is) $M seed $SEED: done"
  else
    echo "$(date -Is) $M seed $SEED: incomplete"
  fi
done
