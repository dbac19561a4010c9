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
    _children: dict[str, ResumeState] | None = field(default=None, repr=False, compare=False)

    def child(self, prefix: str) -> ResumeState | None:
        """The completed work of the sub-workflow run whose nodes were recorded under `prefix`
        (`each[3]/`), by the child's own node ids; None when it has none. Every child's share
        is split out in one pass, on the first call."""
        if self._children is None:
            self._children = {}
            for attr in ("nodes", "items"):
                for key, value in getattr(self, attr).items():
                    cut = key.find("/") + 1
                    if cut:
                        head = key[:cut]
                        share = self._children.get(head)
                        if share is None:
                            share = self._children[head] = ResumeState(self.run_id)
                        getattr(share, attr)[key[cut:]] = value
        return self._children.get(prefix)
