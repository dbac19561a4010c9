"""Secret inputs: the one place that masks their values in what fanflow reports.

An input declared `"secret": true` reaches the nodes unchanged. Everything fanflow writes or
prints about the run sees `***` instead of its value: the events every listener gets (so progress,
trace, timeline, summary and the run store), the stored inputs, and the RunResult's outputs,
errors and warnings (the CLI's JSON and text output). A node record whose outputs had to be masked
is stored without them, so a resume runs that node again rather than replaying `***`.

With no secret input given a value nothing here runs: `Secrets.of` returns None and the engine
wires nothing in (the event path is hot). See docs/observability.md, "Secret inputs".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from fanflow.events import Event, Listener

if TYPE_CHECKING:
    from fanflow.api import RunResult
    from fanflow.load.model import Workflow

MASK = "***"
# What a run store record says instead of outputs that held a secret (resume re-runs the node).
NOT_STORED = "not stored: it holds a secret input's value"


def mask_text(text: str, values: Sequence[str]) -> str:
    """`text` with every occurrence of each of `values` (longest first) replaced by ***. The
    same string object when none occurs."""
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def _forms(value: Any) -> set[str]:
    """The texts a secret value shows up as: itself, escaped inside JSON text, percent-encoded
    in a URL, or (not a string) its JSON text."""
    if isinstance(value, str):
        forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
                 quote(value, safe=""), quote_plus(value, safe="")}  # fmt: skip
    else:
        try:
            forms = {json.dumps(value), json.dumps(value, separators=(",", ":"))}
        except (TypeError, ValueError):
            forms = {str(value)}
    return {f for f in forms if f}


class Secrets:
    """The secret values of one run, and how to mask them anywhere."""

    __slots__ = ("_values", "names")

    def __init__(self, texts: Iterable[str], names: Iterable[str] = ()):
        self._values = tuple(sorted({t for t in texts if t}, key=len, reverse=True))
        self.names = frozenset(names)  # the inputs declared secret

    @classmethod
    def from_values(cls, values: Iterable[Any], names: Iterable[str] = ()) -> Secrets:
        return cls((form for value in values for form in _forms(value)), names)

    @classmethod
    def of(cls, workflow: Workflow, inputs: Mapping[str, Any]) -> Secrets | None:
        """The secrets of a run of `workflow` with these (resolved) inputs; None when no input
        declared secret has a value."""
        names = [name for name, spec in workflow.inputs.items() if spec.secret]
        given = [inputs[n] for n in names if inputs.get(n) not in (None, "")]
        return cls.from_values(given, names) if given else None

    def text(self, text: str) -> str:
        return mask_text(text, self._values)

    def value(self, value: Any) -> Any:
        """`value` with every string in it (dict keys too) masked; the very same object when
        there is nothing to mask, so callers can tell with `is`."""
        if isinstance(value, str):
            return mask_text(value, self._values)
        if isinstance(value, dict):
            pairs = [(self.value(k), self.value(v)) for k, v in value.items()]
            same = all(
                mk is k and mv is v for (mk, mv), (k, v) in zip(pairs, value.items(), strict=True)
            )
            return value if same else dict(pairs)
        if isinstance(value, list | tuple):
            masked = [self.value(v) for v in value]
            if all(m is v for m, v in zip(masked, value, strict=True)):
                return value
            return masked if isinstance(value, list) else tuple(masked)
        return value

    def inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Inputs as the run store keeps them: a secret input, or any input whose value holds a
        secret, becomes *** as a whole (a resume then asks for it again)."""
        return {
            k: MASK if v is not None and (k in self.names or self.value(v) is not v) else v
            for k, v in inputs.items()
        }

    def event(self, event: Event) -> Event:
        """The event with its data masked (the same event when nothing needed masking). A node
        or item whose outputs were masked is flagged `redacted`: the run store keeps no copy."""
        data = event.data
        out: dict[str, Any] | None = None
        for k, v in data.items():
            m = self.value(v)
            if m is not v:
                if out is None:
                    out = dict(data)
                out[k] = m
                if k in ("outputs", "result"):
                    out["redacted"] = True
        if out is None:
            return event
        return Event(event.kind, event.t, event.node, event.item, out)

    def listener(self, listeners: Sequence[Listener]) -> Listener:
        """One listener that hands every event, masked, to `listeners`."""
        return _MaskingListener(self, list(listeners))

    def result(self, result: RunResult) -> None:
        """Mask what a RunResult reports: outputs, errors (the run's and each node's) and
        warnings. `result.store`, the nodes' raw shared store, is left as the nodes made it."""
        result.outputs = self.value(result.outputs)
        if result.error:
            result.error = self.text(result.error)
        result.warnings = [self.text(w) for w in result.warnings]
        for record in result.nodes.values():
            if record.error:
                record.error = self.text(record.error)


def stored_inputs(workflow: Workflow, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """`inputs` as a run store records them (see `Secrets.inputs`)."""
    secrets = Secrets.of(workflow, inputs)
    return dict(inputs) if secrets is None else secrets.inputs(inputs)


class _MaskingListener:
    def __init__(self, secrets: Secrets, listeners: list[Listener]):
        self.secrets = secrets
        self.listeners = listeners

    def on_event(self, event: Event) -> None:
        event = self.secrets.event(event)
        for listener in self.listeners:
            listener.on_event(event)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
