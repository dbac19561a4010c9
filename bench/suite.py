"""fanflow's side-by-side benchmark suite: fanflow vs LangGraph, PocketFlow and pflow (and plain
asyncio as the no-engine floor), one table, one run, one machine.

    python bench/suite.py            # full run (`make bench`): minutes on 2 cores -> bench/results.md
    python bench/suite.py --smoke    # fanflow only, tiny sizes, seconds, no installs (a test runs it)

Each peer lives in its own venv under bench/.peers/<name>/ (created with `python -m venv` and
`pip install` on first use, reused afterwards). Every (system, scenario) pair runs in a fresh
subprocess — `bench/peers/<system>_scenarios.py` under that system's python — which does warm-up
runs then timed repeats and prints one JSON line. Whole-process rows (CLI startup, a shell batch
through the CLI) are timed from here, with peak RSS from `/usr/bin/time -v` (or getrusage).
See docs/benchmarks.md for what each scenario measures and how each system expresses it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PEERS_SRC = BENCH / "peers"
PEERS_DIR = BENCH / ".peers"
OUT_DIR = BENCH / ".out"
TIME_BIN = "/usr/bin/time"
TIE = 1.02  # medians within 2% of each other are reported as a tie


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- systems


@dataclass
class System:
    name: str  # also the worker file prefix: bench/peers/<name>_scenarios.py
    label: str
    requirements: list[str]  # pip requirements of its own venv (empty: uses fanflow's venv)
    probe: str  # python code that must import cleanly
    versions: list[str]  # distributions whose versions the table reports
    python: Path | None = None
    status: str = "pending"  # ready | "not installed: ..." | "skipped: ..."
    version_info: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def worker(self) -> Path:
        return PEERS_SRC / f"{self.name}_scenarios.py"

    @property
    def is_peer(self) -> bool:
        """Another engine (plain asyncio is the no-engine floor, not a peer)."""
        return self.name not in ("fanflow", "asyncio")


def make_systems() -> list[System]:
    return [
        System("fanflow", "fanflow", [], "import fanflow; fanflow.run", ["fanflow"]),
        # its own venv: the llm scenario's floor uses the openai SDK, which fanflow no longer has
        System("asyncio", "asyncio (no engine)", ["openai"], "import asyncio", ["openai"]),
        System(
            "langgraph",
            "LangGraph",
            ["langgraph", "openai"],
            "import langgraph.graph, openai",
            ["langgraph", "langchain-core", "openai"],
        ),
        System(
            "pocketflow",
            "PocketFlow",
            ["pocketflow==0.0.3", "openai"],
            "import pocketflow, openai",
            ["pocketflow", "openai"],
        ),
        System(
            "pflow",
            "pflow",
            ["pflow-cli==0.16.0"],
            "import http.client; from pflow.execution.runner import WorkflowRunner",
            ["pflow-cli", "litellm"],
        ),
    ]


def fanflow_python() -> Path:
    venv = ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def fanflow_env() -> dict[str, str]:
    # src/ first on the path: the worker measures the working tree even before `pip install -e .`
    pp = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(ROOT / "src") + (os.pathsep + pp if pp else "")}


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "ANTHROPIC_", "VIRTUAL_ENV", "PYTHONPATH", "LANGCHAIN_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


def _run_quiet(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        raise RuntimeError(" / ".join(tail) or f"exit {proc.returncode}")
    return proc.stdout


def _versions(python: Path, dists: list[str], env: dict[str, str]) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for d in {dists!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except Exception: out[d] = '?'\n"
        "print(json.dumps(out))"
    )
    try:
        return json.loads(_run_quiet([str(python), "-c", code], env=base_env(env), timeout=60))
    except Exception as exc:
        return {"error": str(exc)[:200]}


def prepare_system(system: System, install: bool) -> None:
    """Point `system` at its python; create and fill a peer venv when it is missing."""
    if not system.requirements:
        system.python = fanflow_python()
        system.env = fanflow_env()
    else:
        venv = PEERS_DIR / system.name
        system.python = venv / "bin" / "python"
        if system.name == "pflow":
            # pflow keeps a registry, traces and a cache under ~/.pflow: give it its own HOME.
            home = PEERS_DIR / "pflow-home"
            home.mkdir(parents=True, exist_ok=True)
            system.env = {"HOME": str(home)}
        probe = [str(system.python), "-c", system.probe]
        usable = system.python.exists()
        if usable:
            try:
                _run_quiet(probe, env=base_env(system.env), timeout=120)
            except Exception:
                usable = False
        if not usable:
            if not install:
                system.status = "skipped: not installed and --no-install given"
                return
            log(f"installing {system.label} into {venv} ({' '.join(system.requirements)}) ...")
            t0 = time.perf_counter()
            try:
                if venv.exists():
                    shutil.rmtree(venv)
                _run_quiet([sys.executable, "-m", "venv", str(venv)], timeout=300)
                pip = [
                    str(system.python),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                ]
                _run_quiet([*pip, *system.requirements], timeout=1800)
                _run_quiet(probe, env=base_env(system.env), timeout=120)
            except Exception as exc:
                system.status = f"not installed: {str(exc)[:300]}"
                log(f"  {system.label}: {system.status}")
                return
            log(f"  installed in {time.perf_counter() - t0:.0f} s")
    try:
        _run_quiet([str(system.python), "-c", system.probe], env=base_env(system.env), timeout=120)
    except Exception as exc:
        system.status = f"not importable: {str(exc)[:300]}"
        return
    system.version_info = _versions(system.python, system.versions, system.env)
    system.status = "ready"


# ----------------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    key: str
    group: str  # "1. Fan-out/fan-in" ...
    label: str
    kind: str  # "worker" (timed inside a worker) | "process" (whole process timed from here)
    worker: str = ""  # worker scenario name
    params: dict[str, Any] = field(default_factory=dict)
    ideal: float | None = None  # seconds
    per: int | None = None  # report median / per as µs per unit
    unit: str = ""
    warmup: int = 1
    repeats: int = 5
    timeout: float = 300
    # per-system (warmup, repeats) overrides, or a string: "n/a: why" / "not run: why"
    overrides: dict[str, tuple[int, int] | str] = field(default_factory=dict)
    needs_mock: bool = False

    def plan(self, system: str) -> tuple[int, int] | str:
        return self.overrides.get(system, (self.warmup, self.repeats))


def make_scenarios(smoke: bool) -> list[Scenario]:
    S = 0.05 if smoke else 0.2  # fan-out wait
    k_values = [4, 32] if smoke else [4, 32, 256]
    diamond = {"b": 0.03, "c": 0.01, "d": 0.03} if smoke else {"b": 0.3, "c": 0.1, "d": 0.3}
    mp = (
        {"n": 100, "seconds": 0.01, "cap": 10}
        if smoke
        else {"n": 1000, "seconds": 0.05, "cap": 100}
    )
    chains = [100, 1000] if smoke else [1000, 10_000]
    noop_items = 1000 if smoke else 10_000
    shell = {"n": 10, "seconds": 0.05, "cap": 5} if smoke else {"n": 200, "seconds": 0.1, "cap": 50}
    llm = {"n": 10, "cap": 10, "delay": 0.05} if smoke else {"n": 100, "cap": 100, "delay": 0.5}
    # (warm-up runs, timed runs); smoke keeps one warm-up so lazy imports stay out of the times
    reps = (1, 2) if smoke else (1, 7)
    mid = (1, 2) if smoke else (1, 5)
    big = (1, 2) if smoke else (1, 3)

    out: list[Scenario] = []
    for k in k_values:
        out.append(
            Scenario(
                f"fanout-{k}",
                "1. Fan-out/fan-in",
                f"start → {k} branches × {S} s → join",
                "worker",
                "fanout",
                {"k": k, "seconds": S},
                ideal=S,
                warmup=reps[0],
                repeats=reps[1],
            )
        )
    crit = diamond["c"] + diamond["d"]
    out.append(
        Scenario(
            "diamond",
            "2. Uneven diamond",
            f"A → (B {diamond['b']} ‖ C {diamond['c']} → D {diamond['d']}) → E",
            "worker",
            "diamond",
            diamond,
            ideal=max(diamond["b"], crit),
            warmup=reps[0],
            repeats=reps[1],
        )
    )
    out.append(
        Scenario(
            "map",
            "3. Map",
            f"{mp['n']} items × {mp['seconds']} s, cap {mp['cap']}",
            "worker",
            "map",
            mp,
            ideal=mp["n"] / mp["cap"] * mp["seconds"],
            warmup=mid[0],
            repeats=mid[1],
        )
    )
    for n in chains:
        slow: dict[str, tuple[int, int] | str] = {}
        if not smoke and n >= 10_000:
            slow = {"langgraph": (0, 2), "pflow": (0, 1)}  # ~10-45 s per run
        elif not smoke:
            slow = {"pflow": (0, 2)}  # ~5 s per run
        out.append(
            Scenario(
                f"chain-{n}",
                "4. Engine overhead",
                f"chain of {n:,} no-op nodes",
                "worker",
                "chain",
                {"n": n},
                per=n,
                unit="node",
                warmup=big[0] if n >= 10_000 else mid[0],
                repeats=big[1] if n >= 10_000 else mid[1],
                timeout=900,
                overrides=slow,
            )
        )
    out.append(
        Scenario(
            "map-noop",
            "4. Engine overhead",
            f"map of {noop_items:,} no-op items, cap 100",
            "worker",
            "map_noop",
            {"n": noop_items, "cap": 100},
            per=noop_items,
            unit="item",
            warmup=big[0],
            repeats=big[1],
            timeout=900,
            overrides={} if smoke else {"langgraph": (0, 2), "pflow": (0, 2)},
        )
    )
    out.append(
        Scenario(
            "startup",
            "5. Whole process",
            "CLI startup: `--version`",
            "process",
            "startup",
            warmup=reps[0],
            repeats=reps[1],
            overrides={
                "langgraph": "n/a: a library, no CLI (see the import row)",
                "pocketflow": "n/a: a library, no CLI (see the import row)",
            },
        )
    )
    out.append(
        Scenario(
            "import",
            "5. Whole process",
            "`python -c 'import …'` (the engine's API)",
            "process",
            "import",
            warmup=reps[0],
            repeats=reps[1],
        )
    )
    out.append(
        Scenario(
            "shell",
            "5. Whole process",
            f"{shell['n']} shell items `sleep {shell['seconds']}`, cap {shell['cap']}, "
            "whole process",
            "process",
            "shell",
            shell,
            ideal=shell["n"] / shell["cap"] * shell["seconds"],
            warmup=mid[0],
            repeats=mid[1],
        )
    )
    out.append(
        Scenario(
            "llm",
            "6. LLM",
            f"{llm['n']} concurrent calls, mock latency {llm['delay']} s",
            "worker",
            "llm",
            {"n": llm["n"], "cap": llm["cap"]},
            ideal=llm["delay"],
            warmup=mid[0],
            repeats=mid[1],
            needs_mock=True,
            timeout=600,
        )
    )
    return out


# ----------------------------------------------------------------------------------- mock LLM


class Mock:
    """`python -m fanflow.testing.mockllm` as a subprocess (fanflow's venv), on 127.0.0.1."""

    def __init__(self, delay: float):
        self.delay = delay
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.error = ""

    def __enter__(self) -> Mock:
        cmd = [str(fanflow_python()), "-m", "fanflow.testing.mockllm", "--port", "0"]
        cmd += ["--delay", str(self.delay)]
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=base_env(fanflow_env()),
            )
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().strip()
            if not line.startswith("http://127.0.0.1:"):
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"mock printed {line!r}: {err.strip()[-300:]}")
            self.url = line
        except Exception as exc:
            self.error = str(exc)
            self.close()
        return self

    def _call(self, path: str, method: str = "GET") -> dict[str, Any]:
        data = b"{}" if method == "POST" else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        with contextlib.suppress(Exception):
            self._call("/reset", "POST")

    def stats(self) -> dict[str, Any]:
        try:
            s = self._call("/stats")
        except Exception as exc:
            return {"error": str(exc)}
        reqs = s.get("requests", [])
        return {
            "max_in_flight": s.get("max_in_flight"),
            "total": s.get("total"),
            "non_200": sum(1 for r in reqs if r.get("status") != 200),
        }

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------- measuring


@dataclass
class Cell:
    status: str  # ok | na | error | skipped
    times: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    message: str = ""


def last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return json.loads(line)
    return None


def run_worker(
    system: System, sc: Scenario, warmup: int, repeats: int, params: dict[str, Any], cwd: Path
) -> Cell:
    cmd = [str(system.python), str(system.worker), sc.worker, "--params", json.dumps(params)]
    cmd += ["--warmup", str(warmup), "--repeats", str(repeats)]
    env = base_env(system.env)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=sc.timeout
        )
    except subprocess.TimeoutExpired:
        return Cell("error", message=f"timeout (> {sc.timeout:.0f} s)")
    res = last_json(proc.stdout)
    if res is None:
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return Cell("error", message=f"exit {proc.returncode}, no result: {tail[:300]}")
    if "na" in res:
        return Cell("na", message=res["na"])
    if "error" in res:
        return Cell("error", message=res["error"], extra={"traceback": res.get("traceback", "")})
    extra = dict(res.get("extra") or {})
    extra["setup_s"] = res.get("setup_s")
    extra["warmup_times"] = res.get("warmup_times")
    return Cell("ok", times=list(res["times"]), extra=extra)


def timed_process(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[float, float | None, subprocess.CompletedProcess[str]]:
    """Wall seconds, peak RSS (MB) and the completed process of one whole-process run."""
    if Path(TIME_BIN).exists():
        full = [TIME_BIN, "-v", *cmd]
    else:  # getrusage of a fresh wrapper's only child
        wrap = (
            "import resource, subprocess, sys, json\n"
            "rc = subprocess.call(json.loads(sys.argv[1]))\n"
            "kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "print(f'Maximum resident set size (kbytes): {kb}', file=sys.stderr)\n"
            "sys.exit(rc)"
        )
        full = [sys.executable, "-c", wrap, json.dumps(cmd)]
    t0 = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr or "")
    return wall, (int(m.group(1)) / 1024 if m else None), proc


def fanflow_cli() -> list[str]:
    script = ROOT / ".venv" / "bin" / "fanflow"
    if script.exists():
        return [str(script)]
    return [
        str(fanflow_python()),
        "-c",
        "import sys; from fanflow.cli import main; sys.exit(main())",
    ]


IMPORTS = {
    "fanflow": "import fanflow; fanflow.run",
    "asyncio": "import asyncio",
    "langgraph": "import langgraph.graph",
    "pocketflow": "import pocketflow",
    "pflow": "import http.client; from pflow.execution.runner import WorkflowRunner",
}

PFLOW_SHELL_MD = """# Shell batch

Runs `sleep {seconds}` once per item, {cap} at a time.

## Steps

### work

Sleep once per item.

- type: shell

```yaml batch
items: {items}
parallel: true
max_concurrent: {cap}
```

```shell command
sleep {seconds}
```
"""


def process_command(system: System, sc: Scenario, cwd: Path) -> list[str] | str:
    """The command line for a whole-process row, or "n/a: why"."""
    py = str(system.python)
    if sc.worker == "import":
        return [py, "-c", IMPORTS[system.name]]
    if sc.worker == "startup":
        if system.name == "fanflow":
            return [*fanflow_cli(), "--version"]
        if system.name == "pflow":
            return [str(Path(py).parent / "pflow"), "--version"]
        if system.name == "asyncio":
            return [py, "-c", "pass"]
        return "n/a: no CLI"
    # shell batch through the system's CLI (or, for libraries, a script run as a process)
    p = sc.params
    if system.name == "fanflow":
        wf = {
            "ir_version": "0.1.0",
            "nodes": [
                {
                    "id": "work",
                    "type": "shell",
                    "params": {"command": f"sleep {p['seconds']}"},
                    "batch": {
                        "items": list(range(p["n"])),
                        "parallel": True,
                        "max_concurrent": p["cap"],
                    },
                }
            ],
            "edges": [],
        }
        path = cwd / "shell_batch.json"
        path.write_text(json.dumps(wf))
        return [
            *fanflow_cli(),
            "run",
            str(path),
            "--max-concurrent",
            str(p["cap"]),
            "--output-format",
            "json",
        ]
    if system.name == "pflow":
        path = cwd / "shell_batch.pflow.md"
        path.write_text(
            PFLOW_SHELL_MD.format(seconds=p["seconds"], cap=p["cap"], items=list(range(p["n"])))
        )
        return [str(Path(py).parent / "pflow"), "--output-format", "json", "-p", str(path)]
    return [py, str(system.worker), "shell", "--params", json.dumps(p), "--once"]


def engine_seconds(system: System, stdout: str) -> float | None:
    """The engine's own view of the run time, where its output reports one."""
    data = last_json(stdout) if system.name not in ("fanflow", "pflow") else None
    if data is None:
        with contextlib.suppress(ValueError):
            data = json.loads(stdout)
    if not isinstance(data, dict):
        return None
    if "duration_ms" in data and isinstance(data["duration_ms"], int | float):
        return data["duration_ms"] / 1000
    extra = data.get("extra") or {}
    return extra.get("engine_s")


def run_process_row(system: System, sc: Scenario, warmup: int, repeats: int, cwd: Path) -> Cell:
    cmd = process_command(system, sc, cwd)
    if isinstance(cmd, str):
        return Cell("na", message=cmd)
    env = base_env(system.env)
    cell = Cell("ok")
    engine: list[float] = []
    for i in range(warmup + repeats):
        try:
            wall, rss, proc = timed_process(cmd, env, cwd, timeout=sc.timeout)
        except subprocess.TimeoutExpired:
            return Cell("error", message=f"timeout (> {sc.timeout:.0f} s)")
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or "").splitlines() if not ln.startswith("\t")]
            return Cell("error", message=f"exit {proc.returncode}: {' / '.join(lines[-3:])[:300]}")
        if i < warmup:
            continue
        cell.times.append(wall)
        if rss is not None:
            cell.rss_mb.append(rss)
        if sc.worker == "shell":
            eng = engine_seconds(system, proc.stdout)
            if eng is not None:
                engine.append(eng)
    if engine:
        cell.extra["engine_s"] = statistics.median(engine)
    return cell


# ----------------------------------------------------------------------------------- the table


def fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_us(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def summarize(cell: Cell, sc: Scenario) -> dict[str, Any]:
    if cell.status != "ok" or not cell.times:
        return {"status": cell.status, "message": cell.message}
    med, lo, hi = statistics.median(cell.times), min(cell.times), max(cell.times)
    out: dict[str, Any] = {"status": "ok", "median_s": med, "min_s": lo, "max_s": hi}
    out["runs"] = len(cell.times)
    if sc.ideal:
        out["ratio"] = med / sc.ideal
    if sc.per:
        out["us_per_unit"] = med / sc.per * 1e6
        out["us_min"], out["us_max"] = lo / sc.per * 1e6, hi / sc.per * 1e6
    if cell.rss_mb:
        out["peak_rss_mb"] = max(cell.rss_mb)
    out["extra"] = cell.extra
    return out


def render_cell(s: dict[str, Any], sc: Scenario) -> str:
    if s["status"] == "na":
        return s["message"].replace("|", "\\|")
    if s["status"] == "skipped" and "not installed" in s["message"]:
        return "not installed (see the header)"
    if s["status"] != "ok":
        return f"{s['status']}: {s['message']}".replace("|", "\\|").replace("\n", " ")[:160]
    if sc.per:
        text = f"**{fmt_us(s['us_per_unit'])} µs**/{sc.unit} [{fmt_us(s['us_min'])}–"
        text += f"{fmt_us(s['us_max'])}] · {fmt_s(s['median_s'])} s/run"
    else:
        text = f"{fmt_s(s['median_s'])} s [{fmt_s(s['min_s'])}–{fmt_s(s['max_s'])}]"
        if "ratio" in s:
            text += f" **×{s['ratio']:.2f}**"
    extra = s.get("extra") or {}
    if "e_runs" in extra:
        text += f" · E ran {extra['e_runs']}×"
    if "peak_rss_mb" in s:
        text += f" · {s['peak_rss_mb']:.0f} MB"
    if s.get("runs") == 1:
        text += " (1 run)"
    return text


def machine_info() -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "os": platform.platform(),
        "loadavg_start": os.getloadavg(),
    }


def git_head() -> str:
    try:
        head = _run_quiet(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], timeout=10)
        return head.strip()
    except Exception:
        return "?"


def render(
    systems: list[System],
    scenarios: list[Scenario],
    results: dict[str, dict[str, dict[str, Any]]],
    meta: dict[str, Any],
    smoke: bool,
) -> str:
    cols = [s for s in systems if s.status != "omitted"]
    lines: list[str] = []
    title = "fanflow benchmark suite" + (
        " — SMOKE run (tiny sizes, not a measurement)" if smoke else ""
    )
    lines += [f"# {title}", ""]
    m = meta["machine"]
    loads = [c["load1"] for row in results.values() for c in row.values() if "load1" in c]
    load_range = f"{min(loads):.2f}–{max(loads):.2f}" if loads else "?"
    lines += [
        f"- Date: {meta['date']} · total wall {meta['total_s']:.0f} s · fanflow commit "
        f"`{meta['git']}` (working tree)",
        f"- Machine: {m['cores']} cores, {m['cpu']}, {m['os']}; load average "
        f"{m['loadavg_start'][0]:.2f} at start, {meta['loadavg_end'][0]:.2f} at end, "
        f"{load_range} across cells (the box is shared; per-cell load in the JSON)",
        f"- Harness Python {m['python']}; `python bench/suite.py"
        + (" --smoke" if smoke else "")
        + "`; see docs/benchmarks.md",
    ]
    for s in cols:
        if s.ready:
            vi = ", ".join(f"{k} {v}" for k, v in s.version_info.items())
            lines.append(f"- {s.label}: {vi}")
        else:
            lines.append(f"- {s.label}: **{s.status}**")
    lines += [
        "",
        "Cells: median [min–max] of the timed runs (after warm-up), **×ratio** = median ÷ ideal; "
        "overhead rows give µs per node/item (median run ÷ size). Each (system, scenario) runs "
        "in a fresh process.",
        "",
    ]
    header = ["#", "scenario", "ideal"] + [s.label for s in cols]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for sc in scenarios:
        row = [sc.group.split(".")[0], sc.label, f"{sc.ideal:.3f} s" if sc.ideal else "–"]
        for s in cols:
            row.append(render_cell(results[sc.key][s.name], sc))
        lines.append("| " + " | ".join(row) + " |")
        if (
            sc.key.startswith("chain-")
            and sc.per
            and sc.per >= 10 * min(x.per or 0 for x in scenarios if x.key.startswith("chain-"))
        ):
            small = min((x for x in scenarios if x.key.startswith("chain-")), key=lambda x: x.per)
            growth = ["4", f"per-node growth {small.per:,} → {sc.per:,} (flat ≈ ×1)", "–"]
            for s in cols:
                a, b = results[small.key][s.name], results[sc.key][s.name]
                if a.get("status") == "ok" and b.get("status") == "ok":
                    r = b["us_per_unit"] / a["us_per_unit"]
                    growth.append(f"×{r:.2f} ({'flat' if r <= 1.5 else 'grows'})")
                else:
                    growth.append("–")
            lines.append("| " + " | ".join(growth) + " |")
    lines += ["", "## Notes", ""]
    lines += notes(cols, scenarios, results)
    return "\n".join(lines) + "\n"


def notes(
    cols: list[System], scenarios: list[Scenario], results: dict[str, dict[str, dict[str, Any]]]
) -> list[str]:
    out: list[str] = []
    # fanflow against each peer on the engine scenarios (1-4); medians within 2% are a tie.
    if "fanflow" in {s.name for s in cols} and any(s.is_peer and s.ready for s in cols):
        ahead, tied, behind = [], [], []
        for sc in scenarios:
            if sc.group[0] not in "1234":
                continue
            mine = results[sc.key].get("fanflow", {})
            if mine.get("status") != "ok":
                behind.append(f"{sc.label}: fanflow {mine.get('status')}")
                continue
            for s in cols:
                theirs = results[sc.key][s.name]
                if not s.is_peer or theirs.get("status") != "ok":
                    continue
                a, b = mine["median_s"], theirs["median_s"]
                pair = f"{sc.label} vs {s.label} ({fmt_s(a)} s vs {fmt_s(b)} s)"
                if a > b * TIE:
                    behind.append(pair)
                elif b > a * TIE:
                    ahead.append(pair)
                else:
                    tied.append(pair)
        out.append(
            f"- fanflow vs peers on scenarios 1–4 (medians within {TIE - 1:.0%} count as a tie): "
            f"ahead on {len(ahead)}, tied on {len(tied)}, behind on {len(behind)} "
            "(scenario, peer) pairs."
        )
        if tied:
            out.append("  - tied: " + "; ".join(tied))
        if behind:
            out.append("  - **behind**: " + "; ".join(behind))
    for sc in scenarios:
        for s in cols:
            r = results[sc.key][s.name]
            ex = r.get("extra") or {}
            bits = []
            if "timeline" in ex:
                tl = ex["timeline"]
                bits.append(
                    "timeline (s) " + ", ".join(f"{k} {v[0]}–{v[1]}" for k, v in sorted(tl.items()))
                )
            if "join_runs" in ex and ex["join_runs"] != 1:
                bits.append(f"join ran {ex['join_runs']}×")
            if "form" in ex:
                bits.append(f"expressed as {ex['form']}")
            if "mock" in ex:
                mk = ex["mock"]
                bits.append(
                    f"server saw max {mk.get('max_in_flight')} in flight, {mk.get('total')} "
                    f"requests, {mk.get('non_200')} non-200"
                )
            warm = ex.get("warmup_times") or []
            if sc.needs_mock and warm:
                bits.append(f"first (warm-up) run {fmt_s(warm[0])} s")
            if "engine_s" in ex:
                bits.append(f"engine's own time {fmt_s(ex['engine_s'])} s")
            setup = ex.get("setup_s")
            if setup and setup > 0.05:
                bits.append(f"build/compile {fmt_s(setup)} s (untimed)")
            if r.get("status") == "error":
                bits.append(f"error: {r.get('message', '')[:300]}")
            if bits:
                out.append(f"- {sc.label} · {s.label}: " + "; ".join(bits))
    return out


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="fanflow only, tiny sizes, seconds")
    ap.add_argument("--systems", help="comma-separated subset (fanflow,asyncio,langgraph,...)")
    ap.add_argument("--scenarios", help="comma-separated scenario keys (fanout-4,diamond,...)")
    ap.add_argument("--no-install", action="store_true", help="never create peer venvs")
    ap.add_argument("--out", type=Path, help="markdown output (default bench/results.md)")
    ap.add_argument("--json", type=Path, help="raw results as JSON (default bench/.out/...)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    systems = make_systems()
    wanted = set(args.systems.split(",")) if args.systems else None
    if args.smoke:
        wanted = {"fanflow"} if wanted is None else wanted & {"fanflow"}
    for s in systems:
        if wanted is not None and s.name not in wanted:
            s.status = "omitted"
    scenarios = make_scenarios(args.smoke)
    if args.scenarios:
        keys = set(args.scenarios.split(","))
        scenarios = [sc for sc in scenarios if sc.key in keys]
    out_md = args.out or (OUT_DIR / "smoke-results.md" if args.smoke else BENCH / "results.md")
    out_json = args.json or OUT_DIR / ("smoke-results.json" if args.smoke else "results.json")

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    for s in systems:
        if s.status == "pending":
            prepare_system(s, install=not args.no_install and not args.smoke)
            log(f"{s.label}: {s.status} {s.version_info if s.ready else ''}")
    active = [s for s in systems if s.status != "omitted"]

    results: dict[str, dict[str, dict[str, Any]]] = {}
    total = len(scenarios) * len(active)
    i = 0
    with (
        tempfile.TemporaryDirectory(prefix="bench-", dir=OUT_DIR) as tmp,
        _mock_for(scenarios) as mock,
    ):
        cwd = Path(tmp)
        for sc in scenarios:
            results[sc.key] = {}
            for s in active:
                i += 1
                load1 = os.getloadavg()[0]  # the box is shared: keep the load next to each cell
                cell = measure(s, sc, cwd, mock)
                summary = summarize(cell, sc)
                summary["load1"] = load1
                results[sc.key][s.name] = summary
                shown = render_cell(summary, sc)
                log(f"[{i:>2}/{total}] {sc.key:<12} {s.name:<10} {shown}")

    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine,
        "loadavg_end": os.getloadavg(),
        "git": git_head(),
        "total_s": time.perf_counter() - t_start,
    }
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(render(systems, scenarios, results, meta, args.smoke))
    raw = {
        "meta": meta,
        "smoke": args.smoke,
        "systems": {
            s.name: {"label": s.label, "status": s.status, "versions": s.version_info}
            for s in active
        },
        "scenarios": {
            sc.key: {"group": sc.group, "label": sc.label, "ideal": sc.ideal, "per": sc.per}
            for sc in scenarios
        },
        "results": results,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(raw, indent=1, default=str))
    log(f"wrote {out_md} and {out_json} in {meta['total_s']:.0f} s")
    return 0


@contextlib.contextmanager
def _mock_for(scenarios: list[Scenario]) -> Iterator[Mock | None]:
    needed = [sc for sc in scenarios if sc.needs_mock]
    if not needed:
        yield None
        return
    # the ideal of the LLM row is the mock's latency (all calls fit in one wave)
    with Mock(needed[0].ideal or 0.5) as mock:
        if mock.error:
            log(f"mock LLM server unavailable: {mock.error}")
        yield mock


def measure(system: System, sc: Scenario, cwd: Path, mock: Mock | None) -> Cell:
    if not system.ready:
        return Cell("skipped", message=system.status)
    plan = sc.plan(system.name)
    if isinstance(plan, str):
        return Cell("na" if plan.startswith("n/a") else "skipped", message=plan)
    warmup, repeats = plan
    if sc.kind == "process":
        return run_process_row(system, sc, warmup, repeats, cwd)
    params = dict(sc.params)
    if sc.needs_mock:
        if mock is None or mock.error:
            return Cell("skipped", message=f"mock server unavailable: {mock.error if mock else ''}")
        params["url"] = mock.url
        mock.reset()
    cell = run_worker(system, sc, warmup, repeats, params, cwd)
    if sc.needs_mock and mock is not None:
        cell.extra["mock"] = mock.stats()
    return cell


if __name__ == "__main__":
    sys.exit(main())
