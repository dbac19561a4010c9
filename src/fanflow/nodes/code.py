"""code: inline Python. `inputs` are bound as variables; `result` is the output; `next` is the action.

The code runs in-process on a worker thread (docs/code-node.md). Everything it can do to end
itself belongs to the node, never to fanflow: `exit(0)` / `sys.exit()` end it normally, a non-zero
or message exit, an exception, `KeyboardInterrupt` fail it. What it prints is its `stdout` /
`stderr` output; stdin is empty. It is interruptible: its `timeout` and the run's cancellation
stop a pure-Python loop at its next bytecode (fanflow.execute.threads).
"""

from __future__ import annotations

import builtins
import json
from types import CodeType, TracebackType
from typing import Any, NoReturn

from fanflow import templates
from fanflow.errors import NodeError
from fanflow.execute import threads
from fanflow.nodes import capture
from fanflow.nodes.base import Node, Param, ParamProblem

DEFAULT_TIMEOUT = 30.0  # seconds, as pflow's code node
_FILENAME = "<code>"
_CACHE_SIZE = 4096  # compiled sources kept (a long-lived host must not grow without bound)
# source → (its code, {input name: the type its top-level annotation names})
_compiled: dict[str, tuple[CodeType, dict[str, str]]] = {}


class CodeNode(Node):
    type_name = "code"
    description = "Run inline Python; assign `result` (and optionally `next` to pick the action)."
    params_spec = {
        "code": Param("string", True, description="Python source; inputs are bound as variables"),
        "inputs": Param("object", default={}, description="{name: value or ${template}}"),
        "timeout": Param("number", default=DEFAULT_TIMEOUT, gt=0,
                         description="seconds before the code is stopped (default 30)"),
    }  # fmt: skip
    outputs_spec = {
        "result": "the value the code assigned to `result`",
        "stdout": "what the code printed, one trailing newline stripped",
        "stderr": "what the code wrote to sys.stderr",
    }
    actions = None  # any: the code's `next`
    remote_exec = True  # pure: params in, outputs out (the process and dask executors)

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> list[str | ParamProblem]:
        """A syntax error is a validation error. Code holding a `${…}` template is source
        known only at run time: it is compiled then."""
        source = params.get("code")
        if not isinstance(source, str):
            return []  # the generic type check reports it
        try:
            parsed = templates.parse(source)
        except templates.TemplateSyntaxError:
            return []  # reported by the template checks
        if not isinstance(parsed, str):
            return []
        try:
            _compile(parsed)
        except SyntaxError as exc:
            return [ParamProblem(_syntax_message(exc), "code", _syntax_hint(parsed, exc))]
        return []

    def exec(self, prep_res: Any) -> tuple[dict[str, Any], str | None]:
        p = self.params
        source = p["code"]
        if not isinstance(source, str):
            raise NodeError(f"`code` must be a string, not {type(source).__name__}")
        try:
            code, typed = _compile(source)
        except SyntaxError as exc:  # only code rendered from a template gets here
            raise NodeError(_syntax_message(exc)) from None
        namespace: dict[str, Any] = typed_inputs(typed, dict(p.get("inputs") or {}))
        namespace[_GIVEN] = frozenset(namespace)
        namespace["__builtins__"] = _builtins()
        timeout = p.get("timeout")
        timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        capture.begin()
        try:
            stopped = _run(code, namespace, timeout)
        finally:
            stdout, stderr = capture.end()
        outputs = {"result": namespace.get("result"), "stdout": stdout.removesuffix("\n"),
                   "stderr": stderr}  # fmt: skip
        failure = _failure(stopped)
        if failure is not None:
            raise NodeError(failure, outputs=outputs, retryable=isinstance(stopped, NodeError))
        action = namespace.get("next")
        if action is not None and not isinstance(action, str):
            raise NodeError(
                f"`next` must be a string naming an action, not {type(action).__name__}",
                outputs=outputs,
            )
        return outputs, action

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str | None:
        outputs, action = exec_res
        shared.update(outputs)
        return action


def _run(code: CodeType, namespace: dict[str, Any], timeout: float) -> BaseException | None:
    """Run the code; whatever ended it early, or None. Only the user's code is interruptible."""
    try:
        threads.run_interruptible(exec, code, namespace, timeout=timeout)
    except threads.JobCancelled:
        raise  # the run stopped waiting for this node: nothing to report
    except BaseException as exc:  # SystemExit, KeyboardInterrupt and the rest are the node's
        return exc
    return None


def _failure(exc: BaseException | None) -> str | None:
    """The node's failure message for what ended the code, None when it ended normally."""
    if exc is None:
        return None
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None or code == 0 or code is False:
            return None
        if isinstance(code, int):
            return f"exit code {code}"
        return str(code) or "exit code 1"
    if isinstance(exc, NodeError):  # the timeout
        return str(exc)
    text = threads.describe(exc)
    line = _user_line(exc.__traceback__)
    return f"{text} (line {line})" if line is not None else text


def _user_line(tb: TracebackType | None) -> int | None:
    """The line of the node's code where an exception was raised (the innermost such frame)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _compile(source: str) -> tuple[CodeType, dict[str, str]]:
    """The source's code, and the types its top-level annotations give inputs (cached)."""
    entry = _compiled.get(source)
    if entry is None:
        tree, typed = _given_inputs_win(source)
        entry = compile(tree, _FILENAME, "exec"), typed
        if len(_compiled) >= _CACHE_SIZE:
            _compiled.clear()
        _compiled[source] = entry
    return entry


_DECODES = {"dict": dict, "list": list, "int": int, "float": float, "bool": bool}


def typed_inputs(typed: dict[str, str], inputs: dict[str, Any]) -> dict[str, Any]:
    """pflow's typed inputs: an input given as text whose top-level annotation in the code
    (`typed`, from `_compile`) is `dict`, `list`, `int`, `float` or `bool` is decoded from JSON
    (a shell's stdout holding an object reaches `data: dict` as the object). Text that is not
    that type is an error naming the input, as pflow's is."""
    if not typed:
        return inputs
    out = dict(inputs)
    for name, kind in typed.items():
        value = out.get(name)
        if not isinstance(value, str) or kind not in _DECODES:
            continue
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        want = _DECODES[kind]
        if kind == "float" and isinstance(decoded, int) and not isinstance(decoded, bool):
            decoded = float(decoded)
        if not isinstance(decoded, want) or (want is int and isinstance(decoded, bool)):
            shown = value if len(value) <= 60 else value[:60] + "…"
            raise NodeError(
                f"input '{name}' expects {kind} but received text {shown!r}", retryable=False
            )
        out[name] = decoded
    return out


_GIVEN = "__fanflow_inputs__"  # the names of the inputs given, in the code's namespace


def _given_inputs_win(source: str) -> tuple[Any, dict[str, str]]:
    """pflow's typed inputs. A top-level `name: type = default` declares an input with a
    default, so a value given in `inputs` (or carried round a loop) wins over the default: the
    statement becomes `if "name" not in <given>: name: type = default`. Also returns each
    top-level annotated name's type (for `typed_inputs`). Code without a top-level default
    compiles as written (the source itself, for exact line numbers in errors)."""
    import ast

    if ":" not in source:
        return source, {}
    tree = ast.parse(source, _FILENAME)
    changed = False
    typed: dict[str, str] = {}
    for i, stmt in enumerate(tree.body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if isinstance(stmt.annotation, ast.Name) and stmt.target.id not in ("result", "next"):
            typed[stmt.target.id] = stmt.annotation.id
        if stmt.value is not None:
            test = ast.Compare(
                ast.Constant(stmt.target.id), [ast.NotIn()], [ast.Name(_GIVEN, ast.Load())]
            )
            tree.body[i] = ast.copy_location(ast.If(test, [stmt], []), stmt)
            changed = True
    if not changed:
        return source, typed
    return ast.fix_missing_locations(tree), typed


def _syntax_message(exc: SyntaxError) -> str:
    return f"syntax error in code, line {exc.lineno}: {exc.msg}"


def _syntax_hint(source: str, exc: SyntaxError) -> str | None:
    lines = source.splitlines()
    if exc.lineno is None or not 0 < exc.lineno <= len(lines):
        return None
    return f"line {exc.lineno} is: {lines[exc.lineno - 1].strip()[:120]}"


# --- the builtins a code node sees ---------------------------------------------------------


def _exit(code: object = None) -> NoReturn:
    """exit() / quit() in a code node: end the node. (site's versions close sys.stdin first.)"""
    raise SystemExit(code)


def _input(prompt: object = "") -> NoReturn:
    raise EOFError("input(): a code node has no stdin; pass values through its `inputs`")


_own_builtins: dict[str, Any] = {}


def _builtins() -> dict[str, Any]:
    """The builtins with exit, quit and input replaced; rebuilt if something added builtins."""
    global _own_builtins
    real = builtins.__dict__
    if len(_own_builtins) != len(real) + (0 if "exit" in real else 2):
        _own_builtins = {**real, "exit": _exit, "quit": _exit, "input": _input}
    return _own_builtins
