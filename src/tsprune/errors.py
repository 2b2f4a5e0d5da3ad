"""One exception type for every error a user can fix; the CLI prints it as one line and exits 2."""

from __future__ import annotations


class TsPruneError(ValueError):
    """A problem with the user's input (data, config, checkpoint) with a message saying what to do.

    The message names what to change the way the Python API spells it (``batch_size``, ``data_path``); ``options``
    lists those names, so a front end can say them its own way (the CLI writes ``--batch-size``).
    """

    def __init__(self, message: str, *, options: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.options = options
