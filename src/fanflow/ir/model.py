"""The workflow IR as pydantic v2 models: the single source of truth for its shape.

pflow's keys keep pflow's meaning; fanflow's extensions are additive. `Workflow.model_json_schema()`
is published for editors and agents (`fanflow schema`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

NODE_ID = r"^[A-Za-z_][A-Za-z0-9_-]*$"
InputType = Literal["string", "number", "integer", "boolean", "array", "object", "any"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputSpec(_Strict):
    type: InputType = "string"
    required: bool = True
    default: Any = None
    description: str = ""


class OutputSpec(_Strict):
    source: str
    description: str = ""
    type: str | None = None


class BatchSpec(_Strict):
    """Run the node once per item. `max_retries` is PocketFlow's: total attempts per item."""

    items: str | list[Any]
    as_: str = Field("item", alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    parallel: bool = False
    max_concurrent: int = Field(10, ge=1, le=100_000)
    error_handling: Literal["fail_fast", "continue"] = "fail_fast"
    max_retries: int = Field(1, ge=1, le=100)
    retry_wait: float = Field(0.0, ge=0, le=3600)


class BatchConfig(_Strict):
    """The seed's Phase-1 form: {"enabled": true, "items_field": "node.key"}."""

    enabled: bool = True
    items_field: str
    parallel: bool = False
    max_concurrent: int = Field(10, ge=1, le=100_000)


class RetrySpec(_Strict):
    """Engine retries of a (non-batch) node: total attempts, backoff with jitter."""

    max_attempts: int = Field(3, ge=1, le=100)
    wait: float = Field(1.0, ge=0, le=3600)
    backoff: Literal["fixed", "exponential"] = "exponential"
    max_wait: float = Field(30.0, ge=0, le=3600)


class NodeSpec(_Strict):
    id: str = Field(pattern=NODE_ID)
    type: str
    params: dict[str, Any] = {}
    purpose: str | None = None
    batch: BatchSpec | None = None
    batch_config: BatchConfig | None = None
    retry: RetrySpec | None = None

    @model_validator(mode="after")
    def _seed_batch_form(self) -> NodeSpec:
        if self.batch_config is not None:
            if self.batch is not None:
                raise ValueError("give either 'batch' or the older 'batch_config', not both")
            if self.batch_config.enabled:
                self.batch = BatchSpec(
                    items="${" + self.batch_config.items_field + "}",
                    parallel=self.batch_config.parallel,
                    max_concurrent=self.batch_config.max_concurrent,
                )
            self.batch_config = None
        return self


class EdgeSpec(_Strict):
    from_: str = Field(alias="from")
    to: str
    action: str = "default"
    # Seed syntax: fan-out already runs in parallel, so this only documents intent.
    parallel_group: str | int | None = None


class LimitSpec(_Strict):
    concurrency: int | None = Field(None, ge=1)
    rpm: int | None = Field(None, ge=1)


class Workflow(_Strict):
    ir_version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    name: str | None = None
    description: str | None = None
    inputs: dict[str, InputSpec] = {}
    outputs: dict[str, OutputSpec] = {}
    nodes: list[NodeSpec] = Field(min_length=1)
    edges: list[EdgeSpec] = []
    start_node: str | None = None
    limits: dict[str, LimitSpec] = {}
    max_concurrent: int | None = Field(None, ge=1)
    on_error: Literal["fail_fast", "continue"] = "fail_fast"
    max_visits: int = Field(100, ge=1)

    # Set by the loader, not part of the document: where it came from, for error messages.
    _source: str | None = PrivateAttr(None)
    _graph: Any = PrivateAttr(None)  # built once by validation, reused by plan and run
    _warnings: list[str] = PrivateAttr(default_factory=list)
    # Set when the document used the `pipeline` form: its edges are explicit even when there are
    # none (a lone parallel block), and problems map back to the pipeline path the author wrote.
    _pipeline_paths: dict[str, str] | None = PrivateAttr(None)

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def graph(self) -> Any:
        """The validated graph (fanflow.graph.Graph); built by `validate_workflow`."""
        if self._graph is None:
            from fanflow.graph import build_graph

            self._graph = build_graph(self)
        return self._graph

    @property
    def warnings(self) -> list[str]:
        return self._warnings
