"""Is the dense baseline at its peak? Achieved GFLOP/s of dense ``F.linear`` (torch's CPU GEMM) on the study's layer
shapes, against the CPU's nominal peak.

    python benchmarks/gemm_peak.py [--threads 2] [--repeats 20] [--ghz 2.45] [--flops-per-cycle 32] [--json OUT]

Shapes: the default-size models' Linear layers (d_model 512, d_ff 2048) at batch 1 and 32 (96 encoder tokens and
144 decoder tokens per window). Each shape runs ``F.linear`` (what the models call) and a plain ``torch.mm`` on the
same transposed-weight layout, timed in alternation (median of ``repeats``). Peak = threads x GHz x FLOPs per cycle
per core: 32 single-precision FLOPs for a core with two 256-bit FMA pipes (Zen 3; Zen 4 runs AVX-512 on the same
two 256-bit pipes, so also 32). ``--ghz`` defaults to the clock ``/proc/cpuinfo`` reports (the base clock on these
virtual machines; boost clocks make the real peak higher). Measures only, asserts nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import torch.nn.functional as F
import typer

cli = typer.Typer(add_completion=False)

# (tokens, in_features, out_features, what) at batch 1 and 32: encoder FFN, attention projection, decoder FFN.
SHAPES = [(tokens * batch, fan_in, fan_out, f"{what} b{batch}")
          for batch in (1, 32)
          for tokens, fan_in, fan_out, what in ((96, 512, 2048, "enc ffn up"), (96, 2048, 512, "enc ffn down"),
                                                (96, 512, 512, "enc attn proj"), (144, 512, 2048, "dec ffn up"))]


def cpuinfo_ghz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1e3
    except (OSError, ValueError):
        pass
    return None


def median_ms(calls: dict[str, Any], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(3):
        for call in calls.values():
            call()
    for repeat in range(repeats):
        order = list(calls.items()) if repeat % 2 == 0 else list(calls.items())[::-1]
        for name, call in order:
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(values)[len(values) // 2] * 1e3 for name, values in times.items()}


@cli.command()
def main(threads: Annotated[int, typer.Option()] = 2, repeats: Annotated[int, typer.Option()] = 20,
         ghz: Annotated[Optional[float], typer.Option(help="Core clock for the peak (default: /proc/cpuinfo).")]
         = None,
         flops_per_cycle: Annotated[int, typer.Option(help="FP32 FLOPs per cycle per core.")] = 32,
         json_out: Annotated[Optional[Path], typer.Option("--json")] = None) -> None:
    torch.set_num_threads(threads)
    clock = ghz or cpuinfo_ghz()
    if clock is None:
        typer.echo("error: no clock in /proc/cpuinfo: give --ghz", err=True)
        raise typer.Exit(2)
    peak = threads * clock * flops_per_cycle
    rows = []
    torch.manual_seed(0)
    with torch.inference_mode():
        for tokens, fan_in, fan_out, what in SHAPES:
            x, weight = torch.randn(tokens, fan_in), torch.randn(fan_out, fan_in)
            weight_t = weight.t().contiguous()
            ms = median_ms({"linear": lambda: F.linear(x, weight), "mm": lambda: torch.mm(x, weight_t)}, repeats)
            gflop = 2 * tokens * fan_in * fan_out / 1e9
            rows.append({"shape": what, "tokens": tokens, "in": fan_in, "out": fan_out,
                         **{f"{k}_ms": v for k, v in ms.items()},
                         **{f"{k}_gflops": gflop / (v / 1e3) for k, v in ms.items()}})
    typer.echo(f"peak {peak:.0f} GFLOP/s = {threads} threads x {clock:.2f} GHz x {flops_per_cycle} FLOP/cycle; "
               f"torch {torch.__version__}\n")
    typer.echo("| shape | tokens x in x out | F.linear ms | GFLOP/s | % of peak | torch.mm GFLOP/s |")
    typer.echo("|---|---|---|---|---|---|")
    for row in rows:
        typer.echo(f"| {row['shape']} | {row['tokens']} x {row['in']} x {row['out']} | {row['linear_ms']:.2f} | "
                   f"{row['linear_gflops']:.0f} | {100 * row['linear_gflops'] / peak:.0f}% | "
                   f"{row['mm_gflops']:.0f} |")
    if json_out is not None:
        json_out.write_text(json.dumps({"peak_gflops": peak, "ghz": clock, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    cli()
