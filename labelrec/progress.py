"""Progress bars on stderr (tqdm): live on a terminal or in a notebook, rare in a log file."""

from __future__ import annotations

import sys
from typing import Any

LOG_INTERVAL_S = 30.0  # the least time between two redraws when stderr is a file or a pipe


def progress_bar(*args: Any, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(*args, **kwargs)``; when stderr is not a terminal (a log file, a CI
    job, ``kubectl logs``) the bar is redrawn at most every ``LOG_INTERVAL_S`` seconds, so a
    long run leaves a few lines of progress there, not one every tenth of a second."""
    from tqdm import autonotebook, std
    from tqdm.auto import tqdm

    stream = kwargs.get("file") or sys.stderr
    in_console = autonotebook.tqdm is std.tqdm  # not a notebook's widget
    if in_console and not _is_terminal(stream):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S)  # tqdm's monitor redraws after this
    return tqdm(*args, **kwargs)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
