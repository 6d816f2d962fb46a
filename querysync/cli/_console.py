"""Where the command line's log records and status lines go: one console, never garbled."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

from querysync._exceptions import SourceError

__all__ = ["FinalErrorFilter", "setup_logging"]

_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class FinalErrorFilter(logging.Filter):
    """Drops the library's records of an error that ends a source.

    Such an error (refused credentials, a final close code) also ends the command,
    which prints it as its last line: logged by the source and by ``sync`` too, it
    was printed three times.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(arg, SourceError) for arg in args)


def setup_logging(verbose: int, console: Console) -> logging.Handler:
    """Log to ``console`` (WARNING, ``-v`` INFO, ``-vv`` DEBUG); the handler installed.

    On a terminal the records go through rich's handler on the console that draws the
    live view, which prints them above the view instead of through it; elsewhere they
    are plain lines on stderr.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(FinalErrorFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
