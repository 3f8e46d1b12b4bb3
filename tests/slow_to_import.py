"""An `open_state` whose module a spawned worker takes a minute to import, as a model library
takes seconds (torch, transformers): a worker can be killed while it is still starting."""

from __future__ import annotations

import sys
import time

if "--multiprocessing-fork" in sys.orig_argv:  # a spawned worker, wherever it imports this
    time.sleep(60)


def state() -> None:
    """Nothing to open: the wait is in the import."""
