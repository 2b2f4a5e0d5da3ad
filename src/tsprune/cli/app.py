"""The ``tsprune`` application: the typer app, the consoles, and what every command shares (one-line errors,
help texts, metric tables)."""


from __future__ import annotations

import functools
import re
from typing import Any, Callable

import typer
from rich.console import Console
from rich.table import Table

from tsprune.errors import TsPruneError
from tsprune.prune import methods

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Prune Transformer time-series forecasters and measure what you really save.")
console = Console()
err_console = Console(stderr=True)

DATA, MODEL, TRAIN = "Data", "Model hyper-parameters (default: the model's own)", "Training"


def method_help(option: str, text: str) -> str:
    """Help text of a pruning option, prefixed with the methods that read it."""
    return f"{', '.join(methods.using(option))}: {text}"


def cli_message(exc: TsPruneError) -> str:
    """The error's message with the API names it lists (``exc.options``) written as this CLI's flags:
    ``batch_size`` -> ``--batch-size``. Only whole words are replaced, so ``threads`` in ``gpu_threads`` stays."""
    message = str(exc)
    for option in exc.options:
        flag = "--" + option.replace("_", "-")
        message = re.sub(rf"(?<![\w-]){re.escape(option)}(?![\w-])", flag, message)
    return message


def user_errors(command: Callable) -> Callable:
    """Turn a TsPruneError into one red line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TsPruneError as exc:
            err_console.print(f"[red]error:[/red] {cli_message(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper



def print_metrics(metrics: dict[str, Any], title: str, stored: dict[str, Any] | None = None) -> None:
    table = Table("metric", "value", *(["stored"] if stored else []), title=title)
    for key in ("mse", "mae", "mse_raw", "mae_raw", "params", "epochs_run", "best_epoch", "train_seconds"):
        if key in metrics:
            value = metrics[key]
            cells = [key, f"{value:.6g}" if isinstance(value, float) else str(value)]
            if stored:
                old = stored.get(key)
                cells.append("" if old is None else (f"{old:.6g}" if isinstance(old, float) else str(old)))
            table.add_row(*cells)
    console.print(table)


def show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings on the command line: one line on stderr, without the source location."""
    err_console.print(f"[yellow]note:[/yellow] {message}", highlight=False, soft_wrap=True)


