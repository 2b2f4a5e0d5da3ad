"""One exception type for every error a user can fix; the CLI prints it as one line and exits 2."""


class TsPruneError(ValueError):
    """A problem with the user's input (data, config, checkpoint) with a message saying what to do."""
