"""Errors that `mlplatform local` reports as one clear line (plus a log tail where one helps)."""


class LocalError(Exception):
    """A failure the user can act on; the CLI prints its message, never a traceback."""

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details
