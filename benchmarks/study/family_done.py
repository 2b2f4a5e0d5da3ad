"""Exit 0 when the dense runs of SPEC are done in SWEEP_DIR with their weights there; with --all, when every run of
SPEC is also recorded (done or failed); with --recorded, when every run of SPEC is recorded, weights or not (a
finished family on a machine that no longer has its dense weights). Used by ``family.sh`` to move from one phase to
the next, and by ``seeds.sh``.

    python benchmarks/study/family_done.py informer.yaml runs/study-etth1 [--all | --recorded]
"""

from __future__ import annotations

import sys

from tsprune.sweep.plan import plan_sweep
from tsprune.sweep import load_spec
from tsprune.sweep.store import SweepStore


def main(spec: str, sweep_dir: str, every_run: bool, recorded: bool = False) -> bool:
    plan, store = plan_sweep(load_spec(spec)), SweepStore(sweep_dir)
    records = store.records()
    if recorded:
        missing = [run.run_id for run in plan.runs() if run.run_id not in records]
        print(f"{len(plan) - len(missing)}/{len(plan)} runs recorded", file=sys.stderr)
        return not missing
    done = all((records.get(run.run_id) or {}).get("status") == "done" and store.dense_complete(run.run_id)
               for run in plan.dense)
    if every_run:
        children = [run for runs in plan.children().values() for run in runs]
        missing = [run.run_id for run in children if run.run_id not in records]
        print(f"{len(children) - len(missing)}/{len(children)} prune runs recorded", file=sys.stderr)
        done = done and not missing
    return done


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1], sys.argv[2], "--all" in sys.argv[3:], "--recorded" in sys.argv[3:]) else 1)
