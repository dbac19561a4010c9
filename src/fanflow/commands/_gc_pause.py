"""Pause the cyclic garbage collector around a static command's work (validate, plan).

Loading, checking and compiling a 10,000-node workflow allocates about a million container
objects that all stay alive until the command exits; the collector would walk them again and
again (a quarter of `fanflow plan`'s time at 10,000 nodes) and free next to nothing. Only the
commands pause it, for their own work: the library API (fanflow.run, compile_workflow) leaves
the host's collector alone.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
