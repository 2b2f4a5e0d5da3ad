"""Does a fine-tuned run time like its pruning made again before fine-tuning (same mask, other values)?

    PYTHONPATH=src python benchmarks/study/values_vs_latency.py SWEEP_DIR RUN_ID [RUN_ID ...]

For each run: its kept (fine-tuned) model and its pruning made again (`pruned_again`, checked against the record
as the measuring pass checks), timed in alternation with the dense model at batch 1 and 32, 2 threads, 20 repeats,
three rounds; prints the median latencies and kept/repruned ratios.
"""
import json
import sys
from pathlib import Path

from tsprune.measure import compare_latency, example_inputs
from tsprune.run import load_run
from tsprune.sweep.remeasure import pruned_again

sweep = Path(sys.argv[1])
for run_id in sys.argv[2:]:
    record = json.loads((sweep / "records" / f"{run_id}.json").read_text())
    dense = load_run(sweep / "runs" / record["parent_id"])
    data = dense.data()
    again = pruned_again(dense, record, data)  # raises unless its counts equal the record's, as the pass does
    kept = load_run(sweep / "runs" / run_id).model
    labels = record["labels"]
    print(f"{run_id} {labels['method']} {labels['target_density']:.3g} ft{labels['finetune_epochs']}: counts match "
          f"record: True", flush=True)
    for size in (1, 32):
        for round_ in range(3):
            timing = compare_latency({"dense": dense.model, "kept": kept, "repruned": again},
                                     example_inputs(data, size), 20, threads=2)
            ms = {name: t["median_ms"] for name, t in timing.items()}
            print(f"  batch {size} round {round_}: dense {ms['dense']:.2f} ms, kept {ms['kept']:.2f} ms, repruned "
                  f"{ms['repruned']:.2f} ms, kept/repruned {ms['kept'] / ms['repruned']:.3f}", flush=True)
