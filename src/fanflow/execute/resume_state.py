"""What a resumed run starts from: the completed work of an earlier run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CompletedNode:
    outputs: dict[str, Any]
    action: str = "default"


@dataclass
class ResumeState:
    """Completed nodes are not re-run: their outputs and action are replayed as if they had just
    finished. For a batch node that did not complete, `items[node_id][index]` holds the stored
    result of each completed item; only the other items run."""

    run_id: str
    nodes: dict[str, CompletedNode] = field(default_factory=dict)
    items: dict[str, dict[int, Any]] = field(default_factory=dict)
