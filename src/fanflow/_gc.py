"""`gc_paused()`: the cyclic garbage collector paused around work that allocates many objects
which all stay alive (or are freed by reference counting), so its collections would walk the
heap again and again and free next to nothing.

Used where fanflow owns the process or the moment: the static commands (validate, plan:
loading, checking and compiling a 10,000-node workflow allocates about a million containers, a
quarter of `fanflow plan`'s time went to collections) and the pairing and formatting of a trace
or summary after a run. The collector's state is put back as it was found, so the library API
leaves the host's collector alone.
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
