#!/bin/bash
# How the committed study-etth1 results were run: one model family at a time, on a 2-core machine whose disk does
# not outlive a working session (so a family's dense run, its 58 prune runs and its measuring pass happen together).
#
#   benchmarks/study/family.sh MODEL CODE_DIR STUDY_DIR [ONESHOT_DIR ONESHOT_CODE_DIR]
#
# CODE_DIR is a frozen copy of tsprune (`git archive REV | tar -x -C CODE_DIR`), so a sweep that runs for hours is
# not changed under it; every record names that commit. Phases:
#   1. the family's dense run, one worker at 2 threads (a phase-1 sweep already training it is left to finish); on
#      a new machine with the records only, the dense run is trained again (--rebuild-dense: deterministic);
#   2. its prune runs, one worker, --defer-timing (their timings would be taken under load). The preset's
#      measure.threads (2) sets each prune run's threads, fine-tuning included, so two workers would put 4 threads on
#      2 cores (session 12: a 1-epoch Informer fine-tuning took 37 min beside another worker; its dense run took 42 min
#      for 4 epochs alone at 2 threads);
#   3. the measuring pass, alone on the machine: every kept run timed at batch 1 and 32, 2 threads, sparse twins
#      compiled again (--recompile); a run whose weights were lost with a machine is timed on its pruning made again
#      from the dense run (--reprune, checked against its record);
#   4. optionally the one-shot comparison (oneshot-etth1) on the same dense model (--reuse-dense). A family whose
#      prune runs were all timed by a pass on an earlier machine needs no dense run in STUDY_DIR, so phases 1-3 have
#      nothing to do; the one-shot sweep then trains the dense run itself (2 threads).
# MODEL size-data is the Autoformer size x data grid (make_spec.py): 11 dense runs, each followed by its two prune
# runs, timed in the run (one worker, the machine otherwise quiet), so each finished dense run leaves its family
# complete should the machine go.
# REBUILD=1 is for a family whose records came from older code and no measuring pass has timed (the study's first
# Crossformer runs, code 949e75b/29f3588): phase 1 trains its dense run again, phase 2 runs all its prune runs again
# (--rebuild; each new record keeps what the old one measured in metrics.rebuilt). Move that family's one-shot records
# aside before phase 4: they were pruned from the old dense model.
set -u
M=$1; CODE=$(realpath "$2"); S=$(realpath "$3"); O=${4:-}; OCODE=${5:-$CODE}
HERE=$(dirname "$(realpath "$0")")
PY=${PYTHON:-python}
run() { PYTHONPATH=$1/src $PY "${@:2}"; }
mkdir -p "$S"
run "$CODE" "$HERE/make_spec.py" study-etth1 "$M" > "$S/$M.yaml"
PAT="tsprune.cli sweep run $S/$M.yaml"
sweep() { run "$CODE" -m tsprune.cli sweep run "$S/$M.yaml" --dir "$S/sweep" --no-progress "$@"; }
dense_done() { run "$CODE" "$HERE/family_done.py" "$S/$M.yaml" "$S/sweep"; }
echo "$(date -Is) $M: start ($CODE)"
if [ "$M" = size-data ]; then
  sweep --workers 1 --threads 2
  run "$CODE" "$HERE/family_done.py" "$S/$M.yaml" "$S/sweep" --all || { echo "$(date -Is) $M: incomplete"; exit 1; }
  echo "$(date -Is) $M: done"; exit 0
fi
NO_DENSE=
if ! dense_done; then
  pgrep -f "$PAT" >/dev/null || { sweep --workers 1 --threads 2 --rebuild-dense & }
  until dense_done; do
    sleep 60
    if ! pgrep -f "$PAT" >/dev/null && ! dense_done; then NO_DENSE=1; break; fi
  done
  if [ -n "$NO_DENSE" ]; then
    echo "$(date -Is) $M: the dense sweep ended with no dense run here (none needed when every prune run was timed by a pass; else see its log above)"
  else
    echo "$(date -Is) $M: dense done"
  fi
fi
if [ -z "$NO_DENSE" ]; then
  pkill -INT -f "$PAT"; while pgrep -f "$PAT" >/dev/null; do sleep 5; done
  sweep --workers 1 --defer-timing ${REBUILD:+--rebuild}
  run "$CODE" "$HERE/family_done.py" "$S/$M.yaml" "$S/sweep" --all || { echo "$(date -Is) $M: incomplete"; exit 1; }
  echo "$(date -Is) $M: prune runs done"
  run "$CODE" -m tsprune.cli sweep measure --dir "$S/sweep" --models "$M" --recompile --reprune
  echo "$(date -Is) $M: measured"
fi
if [ -n "$O" ]; then
  mkdir -p "$O"
  run "$OCODE" "$HERE/make_spec.py" oneshot-etth1 "$M" > "$O/$M.yaml"
  run "$OCODE" -m tsprune.cli sweep run "$O/$M.yaml" --dir "$O/sweep" --reuse-dense "$S/sweep" --workers 1 \
    --no-progress
  echo "$(date -Is) $M: one-shot comparison done"
fi
