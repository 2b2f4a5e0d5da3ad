"""What pruning saves in time at full size: dense, masked, sparse-engine and DepGraph models timed in alternation.

The demo's speed part (``tsprune demo``). Accuracy does not enter: the models are built at their default sizes
(d_model 512; Crossformer its own defaults) with their initial weights, which decide nothing here but where the
zeros fall, and are never trained or evaluated. Per model:

* ``magnitude`` at ``density`` (global, the study's method), masked: the zeros stay in dense kernels;
* the same masked model compiled for tsprune's sparse engine at the largest batch size (``prune.sparse``);
* the study's structured method (DepGraph) at ``structured_density``: channels removed, a smaller dense model.

All four run in one alternating loop (``measure.compare_latency``) at each batch size, so every ratio is a
same-conditions ratio. The rows have the columns of a sweep's results table (``sweep.results.COLUMNS``) that the
report's speed figure reads, with ``mse`` left blank.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch

from tsprune.errors import TsPruneError


def speed_comparison(models: Sequence[str], dataset: str = "ETTh1", pred_len: int = 96, density: float = 0.8**10,
                     structured_density: float = 0.25, batch_sizes: Sequence[int] = (1, 32), threads: int = 2,
                     repeats: int = 10, seed: int = 2021, hyper: dict[str, Any] | None = None,
                     layouts: Sequence[str] = ("pcsr", "csr"), warmup: int = 1,
                     say: Callable[[str], None] = lambda _: None) -> pd.DataFrame:
    """One row per model and pruned variant (see the module doc); ``hyper`` overrides the default sizes.

    ``layouts`` are the sparse layouts the engine may choose from: tsprune's own kernel (where it builds) and
    torch's CSR by default, not BSR, which multiplies the zeros inside every kept tile and lost to CSR on every CPU
    layer of a magnitude-pruned model we measured (``sparse.layers``); timing it would only cost time. ``warmup``
    untimed passes precede each model's timed ones.
    """
    from tsprune import configure
    from tsprune.data.dataset import prepare_data
    from tsprune.measure import compare_latency, count_flops, count_params, example_inputs
    from tsprune.models.registry import build_model
    from tsprune.prune import structured, unstructured
    from tsprune.prune.methods import DEPGRAPH, MAGNITUDE
    from tsprune.sparse.engine import compile_sparse, plan_summary
    from tsprune.runtime import configure_threads

    configure_threads(threads)
    rows: list[dict[str, Any]] = []
    for name in models:
        config = configure.make_config(name, data={"dataset": dataset, "pred_len": pred_len}, **(hyper or {}))
        data = prepare_data(config.data)
        config = configure.bind_to_data(config, data)
        torch.manual_seed(seed)
        dense = build_model(config.model).eval()
        inputs = {size: example_inputs(data, size) for size in batch_sizes}
        masked = copy.deepcopy(dense)
        unstructured.prune_magnitude(masked, density)
        sparse, plan = compile_sparse(copy.deepcopy(masked), inputs, max(batch_sizes), threads=threads,
                                      repeats=repeats, layouts=layouts, attention=False)  # sparsity's speedup alone
        shrunk, result = structured.prune_to_density(dense, inputs[1], structured_density)
        if not result.reached:
            raise TsPruneError(f"{name}: DepGraph could not reach density {structured_density}: {result.reason}")
        variants = {"dense": dense, "masked": masked, "sparse": sparse, "structured": shrunk}
        timings = {str(size): compare_latency(variants, inputs[size], repeats, warmup, threads=threads)
                   for size in batch_sizes}
        flops = {key: count_flops(model, inputs[1]) for key, model in variants.items() if key != "sparse"}
        params = {key: count_params(model) for key, model in variants.items() if key != "sparse"}
        base = {"kind": "prune", "status": "done", "model": name, "dataset": dataset, "pred_len": pred_len,
                "seed": seed, "size": "default", "train_fraction": 1.0, "finetune_epochs": 0, "threads": threads,
                "params_dense": params["dense"]["params"], "flops_dense": flops["dense"]["flops"]}
        largest = str(max(batch_sizes))
        for key, method, engine, target, facts in (
                ("masked", MAGNITUDE, "dense", density, "masked"), ("sparse", MAGNITUDE, "sparse", density, "masked"),
                ("structured", DEPGRAPH, "dense", structured_density, "structured")):
            count, flop = params[facts], flops[facts]
            row = {**base, "run_id": f"speed-{name}-{key}", "method": method, "engine": engine,
                   "target_density": target, "params": count["params"], "nonzero_params": count["nonzero_params"],
                   "density_total": count["nonzero_params"] / params["dense"]["params"],
                   "flops": flop["flops"], "flops_ratio": flop["flops"] / flops["dense"]["flops"],
                   "flops_effective": flop["flops_effective"],
                   "flops_effective_ratio": flop["flops_effective"] / flops["dense"]["flops"],
                   "latency_ms": timings[largest][key]["median_ms"],
                   "latency_dense_ms": timings[largest]["dense"]["median_ms"]}
            row["speedup"] = row["latency_dense_ms"] / row["latency_ms"]
            for size, timing in timings.items():
                row[f"speedup_b{size}"] = timing["dense"]["median_ms"] / timing[key]["median_ms"]
                row[f"latency_b{size}_ms"] = timing[key]["median_ms"]
                row[f"latency_dense_b{size}_ms"] = timing["dense"]["median_ms"]
            if key == "sparse":
                row.update({f"sparse_{k}": v for k, v in plan_summary(plan).items()})
            rows.append(row)
        say(f"{name}: " + ", ".join(f"{r['method']}{'/sparse' if r['engine'] == 'sparse' else ''} "
                                    f"{r['speedup']:.2f}x" for r in rows[-3:]) + f" at batch {largest}")
    return pd.DataFrame(rows)
