"""Commands that take a run out of tsprune: export to ONNX or to a PyTorch 2 package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tsprune.cli.app import app, console, user_errors


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory: dense, magnitude- or DepGraph-pruned, or (pt2 "
                                                 "only) compiled for the sparse engine.")],
    out: Annotated[Path, typer.Option(help="The file to write: .onnx or .pt2 (a JSON sidecar goes beside it).")],
    format: Annotated[Optional[str], typer.Option(
        "--format", help="onnx (ONNX Runtime) or pt2 (torch.export + AOTInductor package; a sparse-compiled run keeps "
                         "its sparse kernels, whose op library is written beside it). Default: from --out's suffix.")]
    = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Fix the batch size (default: any batch size).")] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Any batch size (the default; not with "
                                                                  "--batch-size).")] = False,
) -> None:
    """Export a run to ONNX or a PyTorch 2 package, checked against PyTorch on real test windows."""
    from tsprune import api
    from tsprune.errors import TsPruneError

    if dynamic_batch and batch_size is not None:
        raise TsPruneError("give --batch-size or --dynamic-batch, not both")
    chosen = format or ("pt2" if out.suffix == ".pt2" else "onnx")
    exported = api.export(run_dir, out, batch_size=batch_size, format=chosen)
    runtime = "ONNX Runtime" if chosen == "onnx" else "the AOTInductor package"
    console.print(f"wrote {exported.path} and {exported.sidecar.name}: {runtime} matches PyTorch within "
                  f"{exported.max_rel_diff:.1e} (relative) on {exported.windows} test windows; "
                  f"{exported.seconds:.0f}s", highlight=False, soft_wrap=True)
