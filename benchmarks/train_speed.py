"""Training-step and inference speed of the five forecasters at their default ETTh1/96 configuration.

    python benchmarks/train_speed.py [--models Transformer,Autoformer] [--steps 10] [--threads 2] [--json out.json]

Prints parameters, median seconds per training step (batch 32, forward + backward + Adam) and median milliseconds
per inference batch of 32. Measures only; asserts nothing about time.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from tsprune import api
from tsprune.data.dataset import prepare_data
from tsprune.models.registry import build_model, model_names
from tsprune.train import configure_threads, resolve_device

cli = typer.Typer(add_completion=False)


def median_seconds(fn, steps: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@cli.command()
def main(
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = ",".join(model_names()),
    steps: Annotated[int, typer.Option(help="Timed steps per measurement.")] = 10,
    warmup: Annotated[int, typer.Option()] = 2,
    batch_size: Annotated[int, typer.Option()] = 32,
    threads: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "auto",
    json_out: Annotated[Optional[Path], typer.Option("--json")] = None,
) -> None:
    configure_threads(threads)
    dev = resolve_device(device)
    console = Console()
    table = Table("model", "params", "train step (s)", "inference (ms/batch)",
                  title=f"ETTh1/96 defaults, batch {batch_size}, {torch.get_num_threads()} threads, {dev}")
    records = []
    for name in models.split(","):
        config = api.make_config(name.strip(), data={"dataset": "ETTh1", "pred_len": 96})
        data = prepare_data(config.data)
        config = api.bind_to_data(config, data)
        torch.manual_seed(0)
        model = build_model(config.model).to(dev)
        batch = data.batch("train", torch.arange(batch_size) * 7, dev)
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

        step_s = median_seconds(train_step, steps, warmup, dev)
        infer_ms = 1000 * median_seconds(infer, steps, warmup, dev)
        params = sum(p.numel() for p in model.parameters())
        table.add_row(config.model.name, f"{params:,}", f"{step_s:.3f}", f"{infer_ms:.1f}")
        records.append({"model": config.model.name, "params": params, "train_step_s": step_s,
                        "inference_ms": infer_ms, "batch_size": batch_size, "threads": torch.get_num_threads(),
                        "device": str(dev), "torch": torch.__version__})
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    cli()
