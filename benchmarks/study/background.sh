#!/bin/bash
# Issue 32's long runs, started (or resumed) at the beginning of a working session: the small models (small-etth1),
# then the study's extra seeds (seeds-etth1), one after the other on the machine's 2 cores, from frozen code.
#
#   benchmarks/study/background.sh SMALL_REV SEEDS_REV [RUNS_DIR]      # e.g. c934e7c 6b42312 /work/runs
#
# Each REV is the commit whose code runs that preset (every record names it; keep the one a preset started with, so
# its runs stay one experiment). A machine's disk does not outlive a session: the records committed under
# benchmarks/results/<preset>/records are copied into RUNS_DIR/<preset>/sweep/records first, so finished runs are
# skipped; a dense run whose children are not all recorded is trained again (deterministic at 2 threads).
# Commit the finished records before the session ends (see docs/results/in-progress.md).
set -u
# OpenMP threads wait passively: another job shares the cores (why, with the numbers: seeds.sh).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
SMALL_REV=$1; SEEDS_REV=$2; RUNS=$(realpath -m "${3:-runs}")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
freeze() { local dir=$RUNS/frozen/$1; [ -d "$dir" ] || { mkdir -p "$dir" && git -C "$REPO" archive "$1" | tar -x -C "$dir"; }; echo "$dir"; }
restore() {  # committed records -> the sweep directory (a record already there is newer or the same)
  local from=$REPO/benchmarks/results/$1/records to=$RUNS/$1/sweep/records
  mkdir -p "$to"
  [ -d "$from" ] && cp -n "$from"/*.json "$to"/ 2>/dev/null
  return 0
}
SMALL=$(freeze "$SMALL_REV"); SEEDS=$(freeze "$SEEDS_REV")
restore small-etth1; restore seeds-etth1
echo "$(date -Is) small-etth1: start ($SMALL)"
PYTHONPATH=$SMALL/src $PY -m tsprune.cli sweep run small-etth1 --dir "$RUNS/small-etth1/sweep" --workers 1 \
  --threads 2 --no-progress
echo "$(date -Is) small-etth1: ended ($?)"
PYTHON=$PY "$REPO/benchmarks/study/seeds.sh" "$SEEDS" "$RUNS/seeds-etth1" Crossformer:2022 Crossformer:2023 \
  Autoformer:2022 Autoformer:2023 Informer:2022 Informer:2023 FEDformer:2022 FEDformer:2023 Transformer:2022 \
  Transformer:2023
