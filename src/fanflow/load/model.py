"""The workflow IR: plain dataclasses, the single source of truth for its shape.

pflow's keys keep pflow's meaning; fanflow's extensions are additive. Each field's annotation is
its type and its `metadata` holds its JSON key (`alias`) and constraints (`ge`, `le`, `pattern`,
`min_length`); `Model.from_dict` validates a JSON document against them (reporting every problem
with its path, see `SchemaInvalid`) and `json_schema()` publishes them as JSON Schema for editors
and agents (`fanflow schema`). Why not pydantic: docs/engine.md, "IR validation".
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, ClassVar, Literal, TypeVar

NODE_ID = r"^[A-Za-z_][A-Za-z0-9_-]*$"
InputType = Literal["string", "number", "integer", "boolean", "array", "object", "any"]


def _meta(
    *,
    alias: str | None = None,
    ge: float | None = None,
    le: float | None = None,
    pattern: str | None = None,
    min_length: int | None = None,
) -> dict[str, Any]:
    """A field's JSON key and constraints, kept in `dataclasses.field(metadata=...)`."""
    given = {"alias": alias, "ge": ge, "le": le, "pattern": pattern, "min_length": min_length}
    return {k: v for k, v in given.items() if v is not None}


_M = TypeVar("_M", bound="Model")


class Model:
    """Base of the IR classes: validation from a JSON document, and the way back to one."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def from_dict(cls: type[_M], data: Any) -> _M:
        """Validate `data` (a parsed JSON document) into this class. Raises SchemaInvalid
        listing every problem, each with its path."""
        errors: list[SchemaError] = []
        result = _validator(cls)(data, (), None, errors)
        if errors:
            raise SchemaInvalid(errors)
        return typing.cast(_M, result)

    def to_dict(
        self,
        *,
        exclude: Iterable[str] = (),
        exclude_defaults: bool = False,
        exclude_none: bool = False,
    ) -> dict[str, Any]:
        """The JSON form (keys by alias, nested models as dicts). `exclude` names top-level
        fields; `exclude_defaults` and `exclude_none` apply at every level."""
        skip = set(exclude)
        out: dict[str, Any] = {}
        for f in _document_fields(type(self)):
            if f.name in skip:
                continue
            value = getattr(self, f.name)
            if exclude_none and value is None:
                continue
            if exclude_defaults and _is_default(f, value):
                continue
            out[f.metadata.get("alias", f.name)] = _dump(value, exclude_defaults, exclude_none)
        return out

    def _post_validate(self) -> None:
        """Checks across fields, run once every field is valid; raise ValueError."""


class SchemaError(typing.NamedTuple):
    """One way a document does not fit the model."""

    loc: tuple[str | int, ...]  # path into the document: ("nodes", 2, "params")
    kind: str  # "type", "missing", "unknown_field", "pattern", "range", "choice", "length", "value"
    message: str
    value: Any = None


class SchemaInvalid(ValueError):
    """The document does not fit the model; `errors` holds every problem found."""

    def __init__(self, errors: list[SchemaError]):
        self.errors = errors
        super().__init__("; ".join(f"{field_path(e.loc) or '<root>'}: {e.message}" for e in errors))


def field_path(loc: tuple[str | int, ...]) -> str:
    """("nodes", 2, "params") -> "nodes[2].params"."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


# ---------------------------------------------------------------------------------------------
# The IR


EXECUTOR = r"^(thread|process|dask(=\S+)?)$"  # fanflow.execute.executors parses it


@dataclass(kw_only=True)
class InputSpec(Model):
    """A workflow input. `secret`: its value is masked (***) in everything fanflow stores or
    prints (run store, trace, timeline, progress, output); it may also come from the environment
    variable FANFLOW_SECRET_<NAME>, and a resume needs it again (see docs/observability.md)."""

    type: InputType = "string"
    required: bool = True
    default: Any = None
    description: str = ""
    secret: bool = False


@dataclass(kw_only=True)
class OutputSpec(Model):
    source: str
    description: str = ""
    type: str | None = None
    # The CLI's text output prints this output alone, as it is (pflow's `stdout: true`), so the
    # workflow's result can be piped; at most one output says so.
    stdout: bool = False


@dataclass(kw_only=True)
class BatchSpec(Model):
    """Run the node once per item. `max_retries` is PocketFlow's: total attempts per item."""

    items: str | list[Any]
    as_: str = field(
        default="item", metadata=_meta(alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    )
    parallel: bool = False
    max_concurrent: int = field(default=10, metadata=_meta(ge=1, le=100_000))
    error_handling: Literal["fail_fast", "continue"] = "fail_fast"
    max_retries: int = field(default=1, metadata=_meta(ge=1, le=100))
    retry_wait: float = field(default=0.0, metadata=_meta(ge=0, le=3600))
    # Not part of the document: the fields the author gave (by attribute name), set by
    # `from_dict`. The engine honours `max_retries` only when it was given.
    fields_set: frozenset[str] = field(
        default=frozenset(), repr=False, compare=False, metadata={"internal": True}
    )


@dataclass(kw_only=True)
class BatchConfig(Model):
    """The seed's Phase-1 form: {"enabled": true, "items_field": "node.key"}."""

    enabled: bool = True
    items_field: str
    parallel: bool = False
    max_concurrent: int = field(default=10, metadata=_meta(ge=1, le=100_000))


@dataclass(kw_only=True)
class RetrySpec(Model):
    """Engine retries of a (non-batch) node: total attempts, backoff with jitter."""

    max_attempts: int = field(default=3, metadata=_meta(ge=1, le=100))
    wait: float = field(default=1.0, metadata=_meta(ge=0, le=3600))
    backoff: Literal["fixed", "exponential"] = "exponential"
    max_wait: float = field(default=30.0, metadata=_meta(ge=0, le=3600))


@dataclass(kw_only=True)
class LoopSpec(Model):
    """Run the node again while (or until) a value of its own output holds (pflow's `loop:`).
    `carry` gives the next pass's `inputs.<name>` from this pass's outputs."""

    while_: str | None = field(default=None, metadata=_meta(alias="while"))
    until: str | None = None
    carry: dict[str, str] = field(default_factory=dict)
    max_iterations: int = field(default=100, metadata=_meta(ge=1, le=100_000))


@dataclass(kw_only=True)
class NodeSpec(Model):
    id: str = field(metadata=_meta(pattern=NODE_ID))
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    purpose: str | None = None
    batch: BatchSpec | None = None
    batch_config: BatchConfig | None = None  # the older form; converted into `batch`
    retry: RetrySpec | None = None
    loop: LoopSpec | None = None
    # Where this node's sync `exec` runs: thread | process | dask[=ADDRESS] (docs/executors.md).
    # Wins over the run's --executor and the workflow's `executor`.
    executor: str | None = field(default=None, metadata=_meta(pattern=EXECUTOR))

    def __post_init__(self) -> None:
        self._post_validate()

    def _post_validate(self) -> None:
        if self.batch_config is not None:
            if self.batch is not None:
                raise ValueError("give either 'batch' or the older 'batch_config', not both")
            if self.batch_config.enabled:
                self.batch = BatchSpec(
                    items="${" + self.batch_config.items_field + "}",
                    parallel=self.batch_config.parallel,
                    max_concurrent=self.batch_config.max_concurrent,
                    fields_set=frozenset({"items", "parallel", "max_concurrent"}),
                )
            self.batch_config = None


@dataclass(kw_only=True)
class EdgeSpec(Model):
    from_: str = field(metadata=_meta(alias="from"))
    to: str
    action: str = "default"
    # Seed syntax: fan-out already runs in parallel, so this only documents intent.
    parallel_group: str | int | None = None


@dataclass(kw_only=True)
class LimitSpec(Model):
    concurrency: int | None = field(default=None, metadata=_meta(ge=1))
    rpm: int | None = field(default=None, metadata=_meta(ge=1))


@dataclass(kw_only=True)
class McpServerSpec(Model):
    """An MCP server, in the shape MCP hosts use: `command` (+ `args`, `env`, `cwd`) starts a
    stdio server; `url` (+ `headers`) reaches a streamable HTTP one (docs/mcp.md)."""

    type: Literal["stdio", "http", "streamable-http"] | None = None
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def _post_validate(self) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                "an MCP server needs either 'command' (a stdio server) or 'url' (streamable "
                "HTTP), not both or neither"
            )


@dataclass(kw_only=True)
class ProviderSpec(Model):
    """An LLM provider that models name as `<name>/<model>` (docs/llm.md, "Providers"):
    the API it speaks, where, the environment variable holding its key (never the key)."""

    kind: Literal["openai", "anthropic"] | None = None  # None: openai, or a built-in's own
    base_url: str | None = None
    api_key_env: str | None = None
    default_model: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class Workflow(Model):
    ir_version: str = field(metadata=_meta(pattern=r"^\d+\.\d+\.\d+$"))
    name: str | None = None
    description: str | None = None
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    outputs: dict[str, OutputSpec] = field(default_factory=dict)
    nodes: list[NodeSpec] = field(metadata=_meta(min_length=1))
    edges: list[EdgeSpec] = field(default_factory=list)
    start_node: str | None = None
    limits: dict[str, LimitSpec] = field(default_factory=dict)
    mcp_servers: dict[str, McpServerSpec] = field(default_factory=dict)
    providers: dict[str, ProviderSpec] = field(default_factory=dict)  # LLM providers
    max_concurrent: int | None = field(default=None, metadata=_meta(ge=1))
    on_error: Literal["fail_fast", "continue"] = "fail_fast"
    max_visits: int = field(default=100, metadata=_meta(ge=1))
    # The default executor of the workflow's sync nodes (the run's --executor overrides it).
    executor: str | None = field(default=None, metadata=_meta(pattern=EXECUTOR))

    # Set by the loader, not part of the document: where it came from, for error messages.
    _source: str | None = field(default=None, init=False, repr=False, compare=False)
    # Set when the document used the `pipeline` form: its edges are explicit even when there are
    # none (a lone parallel block), and problems map back to the pipeline path the author wrote.
    _pipeline_paths: dict[str, str] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    # Set by the loader: what it accepted but has no effect (pflow keys), said as run warnings.
    _notes: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    @property
    def source(self) -> str | None:
        return self._source

    def to_json(self) -> str:
        """The document as compact JSON, defaults left out."""
        import json

        return json.dumps(
            self.to_dict(exclude_defaults=True), separators=(",", ":"), ensure_ascii=False
        )


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a workflow document, generated from the classes above."""
    defs: dict[str, Any] = {}
    root = _model_schema(Workflow, defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **root,
        "$defs": {k: defs[k] for k in sorted(defs)},
    }


# ---------------------------------------------------------------------------------------------
# Validation: each class compiles once (on first use) into a closure per field.

# A check takes (value, location of its container, its key there, errors) and returns the
# validated value, or _BAD after appending to errors. Locations are built only on error or when
# descending into a container, so that a valid document costs no path bookkeeping.
_Loc = tuple[str | int, ...]
_Key = str | int | None
_Errors = list[SchemaError]
_Check = Callable[[Any, _Loc, _Key, _Errors], Any]
_BAD: Any = object()
_INF = float("inf")
_VALIDATORS: dict[type, _Check] = {}
_FIELDS: dict[type, list[dataclasses.Field[Any]]] = {}


def _at(loc: _Loc, key: _Key) -> _Loc:
    return loc if key is None else (*loc, key)


def _fail(errors: _Errors, loc: _Loc, key: _Key, kind: str, message: str, value: Any = None) -> Any:
    errors.append(SchemaError(_at(loc, key), kind, message, value))
    return _BAD


def _document_fields(cls: type[Model]) -> list[dataclasses.Field[Any]]:
    """The fields that are keys of the document (not the loader's or validator's own)."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = [
            f
            for f in dataclasses.fields(cls)
            if f.init and not f.name.startswith("_") and not f.metadata.get("internal")
        ]
    return found


def _is_default(f: dataclasses.Field[Any], value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        return bool(value == f.default)
    if f.default_factory is not dataclasses.MISSING:
        return bool(value == f.default_factory())
    return False


def _dump(value: Any, exclude_defaults: bool, exclude_none: bool) -> Any:
    if isinstance(value, Model):
        return value.to_dict(exclude_defaults=exclude_defaults, exclude_none=exclude_none)
    if isinstance(value, dict):
        return {k: _dump(v, exclude_defaults, exclude_none) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_dump(v, exclude_defaults, exclude_none) for v in value]
    return value


def _validator(cls: type[Model]) -> _Check:
    check = _VALIDATORS.get(cls)
    if check is None:
        check = _compile_model(cls)
    return check


def _compile_model(cls: type[Model]) -> _Check:
    # Registered before the fields compile, so that a recursive model can refer to itself.
    def lazy(value: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
        return real(value, loc, key, errors)

    _VALIDATORS[cls] = lazy
    hints = typing.get_type_hints(cls)
    missing = dataclasses.MISSING
    by_key: dict[str, tuple[str, _Check, bool]] = {}  # JSON key -> name, check, required
    required: list[str] = []  # JSON keys
    base: dict[str, Any] = {}  # plain defaults, copied into every instance
    factories: list[tuple[str, Callable[[], Any]]] = []  # built per instance when not given
    document = _document_fields(cls)
    for f in dataclasses.fields(cls):
        if f.default is not missing:
            base[f.name] = f.default
        elif f.default_factory is not missing:
            factories.append((f.name, f.default_factory))
        if f in document:
            key = f.metadata.get("alias", f.name)
            is_required = f.default is missing and f.default_factory is missing
            by_key[key] = (f.name, _compile(hints[f.name], f.metadata), is_required)
            if is_required:
                required.append(key)
    n_required = len(required)
    track_given = "fields_set" in {f.name for f in dataclasses.fields(cls)}
    post = cls._post_validate if "_post_validate" in cls.__dict__ else None
    new = object.__new__

    def real(value: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
        if not isinstance(value, dict):
            return _fail(errors, loc, key, "type", "Input should be a valid dictionary")
        here = loc if key is None else (*loc, key)
        before = len(errors)
        attrs = base.copy()
        found = 0
        # In document order (as the author reads the file); missing fields after.
        for k, v in value.items():
            entry = by_key.get(k)
            if entry is None:
                errors.append(SchemaError((*here, k), "unknown_field", "unknown field", v))
                continue
            name, check, is_required = entry
            attrs[name] = check(v, here, k, errors)
            found += is_required
        if found != n_required:
            for k in required:
                if k not in value:
                    errors.append(SchemaError((*here, k), "missing", "required field is missing"))
        if len(errors) != before:
            return _BAD
        for name, factory in factories:
            if name not in attrs:
                attrs[name] = factory()
        if track_given:
            attrs["fields_set"] = frozenset(by_key[k][0] for k in value)
        obj = new(cls)
        obj.__dict__ = attrs
        if post is not None:
            try:
                post(obj)
            except ValueError as exc:
                return _fail(errors, here, None, "value", str(exc), value)
        return obj

    _VALIDATORS[cls] = real
    return real


def _compile(tp: Any, meta: typing.Mapping[str, Any]) -> _Check:
    """The check for one annotation; constraints in `meta` apply to its non-None member."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (UnionType, typing.Union):
        members = [a for a in args if a is not type(None)]
        inner = _compile(members[0], meta) if len(members) == 1 else _union(members, meta)
        if len(members) == len(args):
            return inner

        def optional(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
            return None if v is None else inner(v, loc, key, errors)

        return optional
    if tp is Any:
        return _any
    if origin is Literal:
        return _choice(args)
    if origin is list:
        return _list(_compile(args[0], {}), meta.get("min_length"))
    if origin is dict:
        return _dict(_compile(args[1], {}))
    if isinstance(tp, type) and issubclass(tp, Model):
        return _validator(tp)
    if tp is str:
        return _str(meta["pattern"]) if "pattern" in meta else _plain_str
    if tp is bool:
        return _bool
    if tp is int:
        return _int(meta.get("ge"), meta.get("le"))
    if tp is float:
        return _float(meta.get("ge"), meta.get("le"))
    raise TypeError(f"no validator for the annotation {tp!r}")


def _any(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
    return v


def _plain_str(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
    if isinstance(v, str):
        return v
    return _fail(errors, loc, key, "type", "Input should be a valid string")


def _str(pattern: str) -> _Check:
    # `$` in the published pattern means the end of the string (as in JSON Schema), not "before
    # a final newline" as in Python's re.
    rx = re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)
    message = f"String should match pattern '{pattern}'"

    def check(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
        if not isinstance(v, str):
            return _fail(errors, loc, key, "type", "Input should be a valid string")
        if rx.match(v) is None:
            return _fail(errors, loc, key, "pattern", message, v)
        return v

    return check


def _bool(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
    if v is True or v is False:
        return v
    return _fail(errors, loc, key, "type", "Input should be a valid boolean")


def _out_of_range(v: Any, ge: float | None, le: float | None) -> str:
    if ge is not None and not v >= ge:
        return f"Input should be greater than or equal to {ge}"
    return f"Input should be less than or equal to {le}"


def _int(ge: float | None, le: float | None) -> _Check:
    lo = -_INF if ge is None else ge
    hi = _INF if le is None else le

    def check(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
        if type(v) is not int:
            if isinstance(v, bool):
                return _fail(
                    errors, loc, key, "type", "Input should be a valid integer, got a boolean"
                )
            if isinstance(v, float) and v.is_integer():
                v = int(v)  # 10.0 is 10: JSON has a single number type
            elif isinstance(v, float) and math.isfinite(v):
                return _fail(errors, loc, key, "type",
                             "Input should be a valid integer, got a number with a fractional part")  # fmt: skip
            elif not isinstance(v, int):
                return _fail(errors, loc, key, "type", "Input should be a valid integer")
        if lo <= v <= hi:
            return v
        return _fail(errors, loc, key, "range", _out_of_range(v, ge, le), v)

    return check


def _float(ge: float | None, le: float | None) -> _Check:
    lo = -_INF if ge is None else ge
    hi = _INF if le is None else le

    def check(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
        if type(v) is not float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                return _fail(errors, loc, key, "type", "Input should be a valid number")
            v = float(v)
        if lo <= v <= hi:
            return v
        if v != v:
            return _fail(errors, loc, key, "type", "Input should be a finite number, not NaN")
        return _fail(errors, loc, key, "range", _out_of_range(v, ge, le), v)

    return check


def _choice(choices: tuple[Any, ...]) -> _Check:
    allowed = frozenset(choices)
    quoted = [repr(c) for c in choices]
    message = "Input should be " + (
        quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    )

    def check(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
        if isinstance(v, str) and v in allowed:
            return v
        return _fail(errors, loc, key, "choice", message, v)

    return check


def _list(item: _Check, min_length: int | None) -> _Check:
    least = min_length or 0
    too_short = f"List should have at least {least} item{'' if least == 1 else 's'}"

    def check(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
        if not isinstance(v, list):
            return _fail(errors, loc, key, "type", "Input should be a valid list")
        if len(v) < least:
            return _fail(errors, loc, key, "length", f"{too_short}, not {len(v)}")
        if item is _any:
            return list(v)
        here = _at(loc, key)
        before = len(errors)
        out = [item(x, here, i, errors) for i, x in enumerate(v)]
        return _BAD if len(errors) != before else out

    return check


def _dict(value_check: _Check) -> _Check:
    def check(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
        if not isinstance(v, dict):
            return _fail(errors, loc, key, "type", "Input should be a valid dictionary")
        bad_keys = [k for k in v if not isinstance(k, str)]
        if bad_keys:
            here = _at(loc, key)
            for k in bad_keys:
                errors.append(SchemaError((*here, str(k)), "type", "keys should be strings", k))
            return _BAD
        if value_check is _any:
            return dict(v)
        here = _at(loc, key)
        before = len(errors)
        out = {k: value_check(x, here, k, errors) for k, x in v.items()}
        return _BAD if len(errors) != before else out

    return check


_TYPE_NAMES = {str: "a valid string", int: "a valid integer", float: "a valid number",
               bool: "a valid boolean", list: "a valid list", dict: "a valid dictionary"}  # fmt: skip


def _union(members: list[Any], meta: typing.Mapping[str, Any]) -> _Check:
    checks = [_compile(m, meta) for m in members]
    kinds = [typing.get_origin(m) or m for m in members]
    message = "Input should be " + " or ".join(
        _TYPE_NAMES.get(k, f"a valid {getattr(k, '__name__', k)}") for k in kinds
    )

    def check(v: Any, loc: _Loc, key: _Key, errors: _Errors) -> Any:
        where = _at(loc, key)
        for one in checks:
            scratch: _Errors = []
            out = one(v, loc, key, scratch)
            if out is not _BAD:
                return out
            # The value had this member's type but broke one of its constraints: report that.
            if not any(e.kind == "type" and e.loc == where for e in scratch):
                errors.extend(scratch)
                return _BAD
        return _fail(errors, loc, key, "type", message, v)

    return check


# ---------------------------------------------------------------------------------------------
# JSON Schema


def _model_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in _document_fields(cls):
        key = f.metadata.get("alias", f.name)
        prop = _type_schema(hints[f.name], f.metadata, defs)
        if f.default is not dataclasses.MISSING:
            prop["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            prop["default"] = f.default_factory()
        else:
            required.append(key)
        props[key] = prop
    schema: dict[str, Any] = {"title": cls.__name__, "type": "object"}
    doc = cls.__doc__ or ""
    if doc and not doc.startswith(cls.__name__ + "("):  # not dataclass's generated signature
        schema["description"] = doc.strip()
    schema["properties"] = props
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def _type_schema(tp: Any, meta: typing.Mapping[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (UnionType, typing.Union):
        members = [_type_schema(a, meta, defs) for a in args if a is not type(None)]
        if type(None) in args:
            members.append({"type": "null"})
        return {"anyOf": members}
    if tp is Any:
        return {}
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if origin is list:
        out: dict[str, Any] = {"type": "array", "items": _type_schema(args[0], {}, defs)}
        if "min_length" in meta:
            out["minItems"] = meta["min_length"]
        return out
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1], {}, defs)}
    if isinstance(tp, type) and issubclass(tp, Model):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # placeholder: a recursive model refers to itself
            defs[tp.__name__] = _model_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    out = {"type": simple[tp]}
    if "pattern" in meta:
        out["pattern"] = meta["pattern"]
    if "ge" in meta:
        out["minimum"] = meta["ge"]
    if "le" in meta:
        out["maximum"] = meta["le"]
    return out
