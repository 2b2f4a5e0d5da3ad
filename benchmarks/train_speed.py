"""Training-step and inference speed of the five forecasters at their default ETTh1/96 configuration.

    python benchmarks/train_speed.py [--models Transformer,Autoformer] [--steps 10] [--threads 2]
        [--layouts ours,reference] [--d-model N [--d-ff N]] [--json out.json]

Prints parameters, median seconds per training step (batch 32, forward + backward + Adam) and median milliseconds
per inference batch of 32, for our layers and (``--layouts ours,reference``) for the straightforward reference
layout of the same model (``tsprune.models.reference``: same weights, same function). The layouts are timed in
alternation, step by step, so their ratio is measured under the same machine load. ``--gemm`` also profiles
two steps per layout and reports the seconds per step spent in matrix products and convolutions (forward and
backward kernels): the floor no layout change can go below, and ``reference / GEMM`` the most any such change
could gain. Measures only; asserts nothing.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Annotated, Callable, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from tsprune import api
from tsprune import configure
from tsprune.data.dataset import prepare_data
from tsprune.models.reference import reference_layout
from tsprune.models.registry import build_model, model_names
from tsprune.runtime import configure_threads, resolve_device

cli = typer.Typer(add_completion=False)


def alternating_medians(fns: dict[str, Callable[[], None]], steps: int, warmup: int,
                        device: torch.device) -> dict[str, float]:
    """Median seconds of each function, timed one call of each in turn (same conditions for all)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + steps):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# Matrix products and the convolutions that are GEMMs in disguise (the reference layout's kernel-size-1 FFN convs,
# the token embedding), forward and backward kernels.
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
            "aten::convolution_backward")


def gemm_seconds(step: Callable[[], None], steps: int = 2) -> float:
    """Seconds per call of ``step`` spent in matrix-product and convolution kernels (CPU profiler, self time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    total_us = sum(event.self_cpu_time_total for event in prof.key_averages() if event.key in GEMM_OPS)
    return total_us / 1e6 / steps


def step_functions(model: torch.nn.Module, batch) -> tuple[Callable[[], None], Callable[[], None]]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(*batch.inputs()), batch.y).backward()
        optimizer.step()

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            model(*batch.inputs())

    return train_step, infer


@cli.command()
def main(
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = ",".join(model_names()),
    steps: Annotated[int, typer.Option(help="Timed steps per measurement.")] = 10,
    warmup: Annotated[int, typer.Option()] = 2,
    batch_size: Annotated[int, typer.Option()] = 32,
    threads: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "auto",
    layouts: Annotated[str, typer.Option(help="ours, reference or ours,reference.")] = "ours",
    gemm: Annotated[bool, typer.Option(help="Also profile the seconds per step spent in matrix products.")] = False,
    d_model: Annotated[Optional[int], typer.Option(help="Width instead of the default (d_ff 4x unless given).")]
    = None,
    d_ff: Annotated[Optional[int], typer.Option()] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json")] = None,
) -> None:
    configure_threads(threads)
    dev = resolve_device(device)
    console = Console()
    chosen = [layout.strip() for layout in layouts.split(",")]
    columns = ["model", "params", "layout", "train step (s)", "inference (ms/batch)", "train speedup vs reference"]
    if gemm:
        columns += ["GEMM s/step", "reference / GEMM"]
    size = f"d_model {d_model}" if d_model else "defaults"
    table = Table(*columns, title=f"ETTh1/96 {size}, batch {batch_size}, {torch.get_num_threads()} threads, {dev}")
    records = []
    for name in models.split(","):
        sizes = {**({"d_model": d_model, "d_ff": d_ff or 4 * d_model} if d_model else {}),
                 **({"d_ff": d_ff} if d_ff else {})}
        config = api.make_config(name.strip(), data={"dataset": "ETTh1", "pred_len": 96}, **sizes)
        data = prepare_data(config.data)
        config = configure.bind_to_data(config, data)
        torch.manual_seed(0)
        ours = build_model(config.model).to(dev)
        candidates = {"ours": ours, "reference": reference_layout(ours)}
        batch = data.batch("train", torch.arange(batch_size) * 7, dev)
        fns = {layout: step_functions(candidates[layout], batch) for layout in chosen}
        train_s = alternating_medians({k: v[0] for k, v in fns.items()}, steps, warmup, dev)
        infer_s = alternating_medians({k: v[1] for k, v in fns.items()}, steps, warmup, dev)
        gemm_s = {layout: gemm_seconds(fns[layout][0]) for layout in chosen} if gemm else {}
        params = sum(p.numel() for p in ours.parameters())
        for layout in chosen:
            ratio = train_s["reference"] / train_s[layout] if "reference" in train_s else None
            row = [config.model.name, f"{params:,}", layout, f"{train_s[layout]:.3f}", f"{1000 * infer_s[layout]:.1f}",
                   f"{ratio:.2f}x" if ratio else "-"]
            record = {"model": config.model.name, "layout": layout, "params": params,
                      "train_step_s": train_s[layout], "inference_ms": 1000 * infer_s[layout],
                      "train_speedup_vs_reference": ratio, "batch_size": batch_size,
                      "threads": torch.get_num_threads(), "device": str(dev), "torch": torch.__version__}
            if gemm:
                bound = train_s["reference"] / gemm_s[layout] if "reference" in train_s else None
                row += [f"{gemm_s[layout]:.3f}", f"{bound:.2f}x" if bound else "-"]
                record.update(gemm_s_per_step=gemm_s[layout], reference_over_gemm=bound)
            table.add_row(*row)
            records.append(record)
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    cli()
