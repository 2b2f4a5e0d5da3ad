"""Per-layer latency of ``y = x Wᵀ + b`` with a pruned W: dense ``F.linear`` vs torch CSR vs tsprune's C++ kernel.

    python benchmarks/sparse_kernels.py [--threads 2] [--repeats 10] [--batches 1,32] [--densities 0.25,0.107,0.05]
        [--shapes 2048x512,512x2048,512x512] [--run RUN_DIR] [--panel N] [--tile N]

Inputs are ``[batch, 96, in]`` (96 tokens per sample, so batch 1 and 32 are 96 and 3072 tokens). Layers: random
unstructured masks at each density for each ``out x in`` shape, or with ``--run`` every ``nn.Linear`` of a pruned
run directory that has zeros (its real masks and biases). Candidates:

* ``dense``: ``F.linear(x, W, b)`` with the zeros in W (MKL GEMM);
* ``csr``: the existing engine's product, ``SparseLinear`` (``torch.sparse.mm(W_csr, x2d.T).T + b``);
* ``ours``: ``tsprune.sparse.kernel.linear(x, pack(W), b)``.

They are timed in alternation (one sample of each per round, each sample several calls lasting >= 2 ms; median
over ``--repeats`` rounds), so a load change on a shared machine hits all of them alike: the ratios ``x_csr`` and
``x_ours`` (dense ms / candidate ms, > 1 is faster than dense) are the numbers to read. Measures only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsprune.sparse import kernel
from tsprune.sparse.layers import SparseLinear

TOKENS_PER_SAMPLE = 96
MIN_SAMPLE_S = 2e-3

Layer = tuple[str, Tensor, Tensor | None]  # (name, weight [out, in] with zeros, bias [out] or None)


def random_layers(shapes: list[tuple[int, int]], densities: list[float], seed: int = 0) -> list[Layer]:
    """One layer per (shape, density): Gaussian weights, a uniform random mask keeping ``density`` of them."""
    gen = torch.Generator().manual_seed(seed)
    layers: list[Layer] = []
    for out, inp in shapes:
        for density in densities:
            weight = torch.randn(out, inp, generator=gen) / inp**0.5
            keep = torch.rand(out, inp, generator=gen) < density
            layers.append((f"random {out}x{inp}", weight * keep, torch.randn(out, generator=gen)))
    return layers


def run_layers(path: Path) -> list[Layer]:
    """Every ``Linear`` (dense or already sparse-compiled) with zeros in the pruned run at ``path``."""
    from tsprune.run import load_run

    model = load_run(path).model
    layers: list[Layer] = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, SparseLinear)):
            weight = module.weight.detach().float().reshape(module.out_features, module.in_features)
            if bool((weight == 0).any()):
                bias = None if module.bias is None else module.bias.detach().float()
                layers.append((name, weight.contiguous(), bias))
    return layers


def candidates(weight: Tensor, bias: Tensor | None) -> dict[str, Callable[[Tensor], Tensor]]:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    csr = SparseLinear(linear, "csr").eval()
    packed = kernel.pack(weight)
    return {"dense": lambda x: F.linear(x, weight, bias), "csr": csr,
            "ours": lambda x: kernel.linear(x, packed, bias)}


def tuned(weight: Tensor, bias: Tensor | None, panel: int | None, tile: int) -> Callable[[Tensor], Tensor]:
    """``ours`` with a panel width or tile cap of one's own (for tuning)."""
    packed = kernel.pack(weight, panel)
    return lambda x: kernel.linear(x, packed, bias, tile=tile)


def time_round_robin(fns: dict[str, Callable[[Tensor], Tensor]], x: Tensor, repeats: int) -> dict[str, float]:
    """Median ms per call of each function, sampled in alternation."""
    def sample(fn: Callable[[Tensor], Tensor], number: int) -> float:
        start = time.perf_counter()
        for _ in range(number):
            fn(x)
        return (time.perf_counter() - start) / number

    numbers = {}
    for name, fn in fns.items():  # warm-up, and the calls per sample that make it last MIN_SAMPLE_S
        sample(fn, 1)
        numbers[name] = max(1, min(200, round(MIN_SAMPLE_S / max(sample(fn, 1), 1e-7))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(sample(fn, numbers[name]))
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batches", default="1,32", help="samples of 96 tokens each")
    parser.add_argument("--densities", default="0.25,0.107,0.05")
    parser.add_argument("--shapes", default="2048x512,512x2048,512x512", help="out x in")
    parser.add_argument("--run", type=Path, help="a pruned run directory: its real masks instead of random ones")
    parser.add_argument("--panel", type=int, help="columns per panel (default: kernel.panel_width)")
    parser.add_argument("--tile", type=int, default=0, help="max tokens per tile (default: the kernel's)")
    parser.add_argument("--no-csr", action="store_true", help="skip torch CSR (faster tuning runs)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    build_s = kernel.build()
    print(f"kernel: {kernel.isa()}, ready in {build_s:.1f} s; torch {torch.__version__}, {args.threads} threads")
    if args.run is not None:
        layers = run_layers(args.run)
    else:
        shapes = [(int(o), int(i)) for o, i in (s.split("x") for s in args.shapes.split(","))]
        layers = random_layers(shapes, [float(d) for d in args.densities.split(",")])
    header = f"{'layer':<34} {'out x in':>10} {'density':>7} {'tokens':>6} {'dense ms':>9} {'csr ms':>8} " \
             f"{'ours ms':>8} {'x_csr':>6} {'x_ours':>6}"
    print(header)
    print("-" * len(header))
    with torch.inference_mode():
        for batch in (int(b) for b in args.batches.split(",")):
            gen = torch.Generator().manual_seed(batch)
            for name, weight, bias in layers:
                x = torch.randn(batch, TOKENS_PER_SAMPLE, weight.shape[1], generator=gen)
                fns = candidates(weight, bias)
                if args.panel or args.tile:
                    fns["ours"] = tuned(weight, bias, args.panel, args.tile)
                if args.no_csr:
                    del fns["csr"]
                ms = time_round_robin(fns, x, args.repeats)
                density = float((weight != 0).float().mean())
                csr = ms.get("csr", float("nan"))
                short = name if len(name) <= 34 else "…" + name[-33:]
                print(f"{short:<34} {weight.shape[0]:>5}x{weight.shape[1]:<4} {density:>7.3f} "
                      f"{batch * TOKENS_PER_SAMPLE:>6} {ms['dense']:>9.3f} {csr:>8.3f} {ms['ours']:>8.3f} "
                      f"{ms['dense'] / csr:>6.2f} {ms['dense'] / ms['ours']:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
