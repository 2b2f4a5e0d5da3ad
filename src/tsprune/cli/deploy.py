"""Commands that take a run out of tsprune: export to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tsprune.cli.app import app, console, user_errors


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory: dense, magnitude- or DepGraph-pruned.")],
    out: Annotated[Path, typer.Option(help="The ONNX file to write (a JSON sidecar goes beside it).")],
    batch_size: Annotated[Optional[int], typer.Option(help="Fix the batch size (default: any batch size).")] = None,
    dynamic_batch: Annotated[bool, typer.Option(help="Any batch size (the default; not with --batch-size).")]
    = False,
) -> None:
    """Export a run to ONNX, checked in ONNX Runtime against PyTorch on real test windows."""
    from tsprune import api
    from tsprune.errors import TsPruneError

    if dynamic_batch and batch_size is not None:
        raise TsPruneError("give --batch-size or --dynamic-batch, not both")
    exported = api.export(run_dir, out, batch_size=batch_size)
    console.print(f"wrote {exported.path} and {exported.sidecar.name}: ONNX Runtime matches PyTorch within "
                  f"{exported.max_rel_diff:.1e} (relative) on {exported.windows} test windows; "
                  f"{exported.seconds:.0f}s", highlight=False, soft_wrap=True)
