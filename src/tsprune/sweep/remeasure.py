"""The measuring pass: time a sweep's finished prune runs again, on a machine doing nothing else.

A long sweep trains with one worker while the machine does other work, so the latencies it records beside each run
are honest ratios (dense and pruned alternate) taken under an unknown load. This pass loads every prune run whose
weights the sweep kept (``keep_pruned``), times it in alternation with its dense run (and, for a sparse-engine run,
with its masked twin) at the run's own batch sizes, threads and repeat count, and writes the timings into its
record. ``metrics.latency_pass`` says when, how and under what load average it was measured; runs without weights
(a sweep directory moved to a new machine keeps records only) keep their in-sweep timings and are listed. A sweep
run with ``defer_timing`` took no timings of its own (``latency_deferred``): this pass gives them their first, and
compiles its sparse-engine runs, which that sweep left uncompiled (``compile_deferred``), as ``recompile`` does.

With ``reprune`` a run whose weights are gone (a new machine, with the dense run rebuilt: ``sweep run
--rebuild-dense``) is timed on its pruned model made again from the dense run (:func:`tsprune.prune.pipeline.
prune_again`: the methods are deterministic for a seed), and a sparse-engine run on that model compiled again. A
fine-tuned run is timed on the same pruning before fine-tuning: fine-tuning with masks kept changes the values, not
the structure or the mask, and latency depends on those alone. The new model's parameters, nonzeros, FLOPs and
effective FLOPs must equal the record's, or the run is not timed (``mismatched``). ``latency_pass.weights`` says
``repruned`` for these (``kept`` otherwise), and the table's ``latency_measured`` says ``pass-repruned``.

With ``recompile`` a sparse-engine run is compiled again from its masked twin before it is timed: each layer's
kernel is chosen anew by timing on this machine, with this code (a sweep that ran on an older tsprune, or under
load, chose among other or noisier candidates). The run directory is replaced atomically by the new compilation
and the record's plan counts follow it; ``metrics.recompiled`` says when.

Otherwise it never trains, prunes or evaluates, leaves every other field of a record as it was, and rewrites each
record atomically, so it may run while the sweep itself is running (it takes its own lock, not the sweep's). Pause the
sweep's worker (``kill -STOP``) for the duration when the pass should have the machine to itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tsprune.config import pruning_settings
from tsprune.errors import TsPruneError
from tsprune.runtime import atomic_dir
from tsprune.sweep.store import SweepStore, run_dir_complete
from tsprune.sweep.results import write_results
from tsprune.sweep.tasks import now_utc

# What a sweep run with ``defer_timing`` left to this pass; gone from a record once the pass has done it.
DEFERRED = ("latency_deferred", "compile_deferred")
# The timing fields of a prune record that this pass replaces.
TIMING_FIELDS = ("latency", "latency_dense", "latency_ms", "latency_dense_ms", "speedup", "speedup_by_batch_size",
                 "latency_masked", "latency_masked_ms", "speedup_masked", "speedup_over_masked")


@dataclass
class MeasureOutcome:
    measured: list[str] = field(default_factory=list)  # run ids timed now
    current: list[str] = field(default_factory=list)  # timed by an earlier pass with the same settings
    no_weights: list[str] = field(default_factory=list)  # the run (or its dense run, or twin) has no weights here
    repruned: list[str] = field(default_factory=list)  # timed on the pruning made again (``reprune``)
    mismatched: list[str] = field(default_factory=list)  # made again, but not what the record counted: not timed
    results: Path | None = None


def pass_settings(record: dict[str, Any], threads: int | None, repeats: int | None) -> dict[str, Any]:
    """The batch sizes, threads and repeats a record is timed with: the run's own, unless overridden."""
    from tsprune.runtime import available_cores

    prune = (record.get("config") or {}).get("prune") or {}
    return {"batch_sizes": [int(size) for size in prune.get("batch_sizes") or (1, 32)],
            "threads": int(threads or prune.get("threads") or available_cores()),
            "repeats": int(repeats or prune.get("latency_repeats") or 20)}


@contextlib.contextmanager
def _pass_lock(root: Path) -> Iterator[None]:
    with open(root / ".measure.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TsPruneError(f"a measuring pass is already running in {root}: wait for it") from None
        yield


def remeasure(sweep_dir: str | Path, threads: int | None = None, repeats: int | None = None, redo: bool = False,
              models: list[str] | None = None, say: Callable[[str], None] = lambda _: None,
              recompile: bool = False, reprune: bool = False) -> MeasureOutcome:
    """Re-time the finished prune runs of ``sweep_dir`` (only ``models`` when given); see the module doc.
    ``recompile`` compiles sparse-engine runs again first (and implies ``redo`` for them); ``reprune`` times runs
    whose weights are gone on their pruning made again from the dense run."""
    store = SweepStore(sweep_dir)
    if not store.records_dir.is_dir():
        raise TsPruneError(f"{sweep_dir} is not a sweep directory (no records/ folder): run `tsprune sweep run`")
    outcome = MeasureOutcome()
    with _pass_lock(store.root):
        records = store.records()
        by_parent: dict[str, list[dict[str, Any]]] = {}
        for record in records.values():
            if record.get("kind") == "prune" and record.get("status") == "done":
                if models is None or (record.get("labels") or {}).get("model") in models:
                    by_parent.setdefault(str(record["parent_id"]), []).append(record)
        for parent_id, children in sorted(by_parent.items()):
            _measure_family(store, parent_id, children, records, threads, repeats, redo, outcome, say, recompile,
                            reprune)
        outcome.results = write_results(store.root)
    return outcome


def _measure_family(store: SweepStore, parent_id: str, children: list[dict[str, Any]],
                    records: dict[str, dict[str, Any]], threads: int | None, repeats: int | None, redo: bool,
                    outcome: MeasureOutcome, say: Callable[[str], None], recompile: bool = False,
                    reprune: bool = False) -> None:
    """Time the prune runs of one dense run, loading the dense model once and each pruned model once: twins are
    timed one after the other, so the masked model a sparse-engine run is timed against is still loaded."""
    from tsprune.run import load_run

    def kept(run_id: str) -> bool:
        return run_dir_complete(store.run_dir(run_id))

    todo = []
    for record in children:
        settings = pass_settings(record, threads, repeats)
        done_before = (record.get("metrics") or {}).get("latency_pass") or {}
        again = redo or (_engine(record) == "sparse" and (recompile or bool(record["metrics"].get("compile_deferred"))))
        if not again and all(done_before.get(key) == value for key, value in settings.items()):
            outcome.current.append(record["run_id"])
        elif not kept(parent_id) or not (reprune or kept(record["run_id"])):
            outcome.no_weights.append(record["run_id"])
        else:
            todo.append((record, settings))
    if not todo:
        return
    dense = load_run(store.run_dir(parent_id))
    data = dense.data()

    @functools.lru_cache(maxsize=2)  # a run and its twin
    def model_of(run_id: str) -> Any:
        """The run's kept model, else (``reprune``) its pruning made again: a masked model for a sparse run."""
        if kept(run_id):
            return load_run(store.run_dir(run_id)).model
        return pruned_again(dense, records[run_id], data)

    for record, settings in timing_order(todo):
        run_id = str(record["run_id"])
        twin = _masked_twin(record, records) if _engine(record) == "sparse" else None
        if twin is not None and not (reprune or kept(twin)):
            outcome.no_weights.append(run_id)
            continue
        # A sparse run is compiled here from its masked model (its twin's, else its own) when its weights are gone
        # (not written: the masked model may be a pruning made again) or its sweep deferred the compilation (its
        # directory holds the masked model); otherwise each model is the run's own, kept or made again.
        sparse = _engine(record) == "sparse"
        deferred = sparse and bool(record["metrics"].get("compile_deferred"))
        compile_here = sparse and not kept(run_id)
        masked_from = twin or (run_id if compile_here or deferred else None)  # not a compiled model
        compile_kept = not compile_here and masked_from is not None and (deferred or recompile)
        try:
            masked = model_of(masked_from) if masked_from is not None else None
            pruned = masked if compile_here or compile_kept else model_of(run_id)
        except PruningNotReproduced as exc:
            outcome.mismatched.append(run_id)
            say(f"{run_id}: not timed: {exc}")
            continue
        own_model = not (compile_here or compile_kept)  # the run's model timed as it is, not compiled here
        repruned = (masked_from is not None and not kept(masked_from)) or (own_model and not kept(run_id))
        models = {"dense": dense.model, "pruned": pruned}
        if compile_here:
            models["pruned"], _, plan_facts = compile_for_timing(masked, data, settings)
            record["metrics"] = {**record["metrics"], **plan_facts}
        elif compile_kept:
            models["pruned"], plan_facts = _recompile(store, run_id, masked, data, settings)
            model_of.cache_clear()
            record["metrics"] = {**record["metrics"], **plan_facts}
            record["weights_sha256"] = store.weights_digest(run_id)  # its directory was replaced
        if masked is not None:
            models["masked"] = masked
        timing = time_models(models, data, settings)
        timing["latency_pass"]["weights"] = "repruned" if repruned else "kept"
        if repruned:
            timing["latency_pass"]["finetuning_left_out"] = bool((record.get("labels") or {}).get("finetune_epochs"))
            outcome.repruned.append(run_id)
        record["metrics"] = {**{k: v for k, v in record["metrics"].items() if k not in DEFERRED}, **timing}
        store.write_record(record)
        outcome.measured.append(run_id)
        labels = record.get("labels") or {}
        say(f"{labels.get('model')} {labels.get('method')} {labels.get('target_density', 0):.3g} "
            f"[{_engine(record)}]{' (repruned)' if repruned else ''}: speedup {timing['speedup']:.2f}x at batch "
            f"{timing['speedup_batch_size']}")


class PruningNotReproduced(TsPruneError):
    """A pruning made again does not have the recorded run's parameters, nonzeros or FLOPs."""


# What a pruning made again must match in its record: structure (params, FLOPs) and mask (nonzeros, and effective
# FLOPs, which weigh each layer's nonzeros by how often it runs, so a mask moved between layers shows).
REPRUNE_CHECKS = ("params", "nonzero_params", "flops", "flops_effective")


def pruned_again(dense: Any, record: dict[str, Any], data: Any) -> Any:
    """``record``'s pruning made again from ``dense`` (:func:`tsprune.prune.pipeline.prune_again`), checked against
    the record's counts."""
    from tsprune.config import PruneConfig, from_dict
    from tsprune.prune.pipeline import prune_again

    raw = dict((record.get("config") or {}).get("prune") or {})
    raw["batch_sizes"] = tuple(raw.get("batch_sizes") or (1, 32))
    model, cost = prune_again(dense, from_dict(PruneConfig, raw), data)
    metrics = record.get("metrics") or {}
    wrong = [f"{key} {cost.get(key)} vs {metrics.get(key)} recorded" for key in REPRUNE_CHECKS
             if metrics.get(key) is not None and int(cost.get(key, -1)) != int(metrics[key])]
    if wrong:
        raise PruningNotReproduced("its pruning made again differs from the record: " + ", ".join(wrong))
    return model


def compile_for_timing(masked: Any, data: Any, settings: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """A copy of ``masked`` compiled for the sparse engine at the largest batch size of ``settings`` (each layer's
    kernel chosen by timing here), its plan, and the plan facts for its record."""
    import copy

    from tsprune.measure import example_inputs
    from tsprune.sparse.engine import compile_sparse, plan_summary

    largest = max(settings["batch_sizes"])
    compiled, plan = compile_sparse(copy.deepcopy(masked), example_inputs(data, largest), largest,
                                    threads=settings["threads"], attention=False)  # as the sweep's pipeline
    return compiled, plan, {**plan_summary(plan), "compiled_batch_size": largest, "recompiled": now_utc()}


def _recompile(store: SweepStore, run_id: str, masked: Any, data: Any,
               settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Compile ``masked`` (the run's masked twin) for the sparse engine (:func:`compile_for_timing`), replace the
    run's directory with the result (staging folder, then a rename), and return the compiled model and the plan
    facts for its record."""
    from tsprune.run import load_run, save_run

    run = load_run(store.run_dir(run_id))
    compiled, plan, facts = compile_for_timing(masked, data, settings)
    metrics = {key: value for key, value in run.metrics.items() if key not in DEFERRED}
    run.model, run.sparse_plan, run.metrics = cast(Any, compiled), plan, {**metrics, **facts}  # same class
    with atomic_dir(store.run_dir(run_id)) as staging:
        save_run(run, staging)
    return compiled, facts


def timing_order(todo: list[tuple[dict[str, Any], Any]]) -> list[tuple[dict[str, Any], Any]]:
    """The order a family's runs are timed in: fine-tuned runs first (their weights cost the most to make again, should
    a pass be cut short on a machine that loses its disk), then by pruning settings, with engine twins side by side
    (a dense-engine run just before its sparse twin, whose masked model it is)."""
    return sorted(todo, key=lambda item: (-int((item[0].get("labels") or {}).get("finetune_epochs") or 0),
                                          _pruning_key(item[0].get("config") or {}), _engine(item[0])))


def _engine(record: dict[str, Any]) -> str:
    return str((record.get("labels") or {}).get("engine") or "dense")


def _pruning_key(config: dict[str, Any]) -> str:
    """The pruning settings engine twins share (:func:`tsprune.config.pruning_settings`), as a comparable string."""
    return json.dumps(pruning_settings(config.get("prune") or {}), sort_keys=True, default=str)


def _masked_twin(record: dict[str, Any], records: dict[str, dict[str, Any]]) -> str | None:
    """The dense-engine run with the same parent and pruning settings as sparse-engine ``record``."""
    mine = _pruning_key(record.get("config") or {})
    for other in records.values():
        config = other.get("config") or {}
        if (other.get("parent_id") == record.get("parent_id") and config.get("engine") == "dense"
                and _pruning_key(config) == mine and other.get("status") == "done"):
            return str(other["run_id"])
    return None


def time_models(models: dict[str, Any], data: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Alternating timings of ``models`` (``dense``, ``pruned``, optionally ``masked``) at each batch size, as the
    record's timing fields plus ``latency_pass``."""
    from tsprune.measure import compare_latency, cpu_name, example_inputs
    from tsprune.prune.pipeline import timing_metrics

    load = os.getloadavg()[0]
    paired = {str(size): compare_latency(models, example_inputs(data, size), settings["repeats"],
                                         threads=settings["threads"]) for size in settings["batch_sizes"]}
    largest = str(max(settings["batch_sizes"]))
    out = {**timing_metrics(paired, largest), "speedup_batch_size": int(largest)}
    out["latency_pass"] = {**settings, "at": now_utc(), "load_average_before": round(load, 2),
                           "load_average_after": round(os.getloadavg()[0], 2), "cpu": cpu_name(),
                           "host": platform.node()}
    return out
